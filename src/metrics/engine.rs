//! Building [`Counts`] in two streaming passes with memory proportional to
//! the positives.
//!
//! Pass 1 ([`PositiveCollector`]) keeps the order-preserving u32 key of every
//! positive pixel's score (positives are ~1 % of pixels) and counts the
//! negatives. Pass 2 ([`Ranker`]) visits the same pixels again and files every
//! negative into one of 2m+1 slots: strictly between two consecutive
//! distinct positive scores, or equal to one. A 65 536-entry radix table on
//! the key's top 16 bits narrows each binary search to a few steps; pixels
//! are processed in fixed blocks in parallel (rayon), and the slot counts are
//! u64 and order-independent, so the result is exact and deterministic.
//!
//! Why two passes: a negative seen before the positives are known cannot be
//! ranked against them without keeping it (that is the 50 bytes/pixel other
//! tools pay). Re-reading is cheaper than remembering.

use super::{Counts, key, unkey};
use crate::data::label;
use rayon::prelude::*;

/// Pixels per parallel work item (fixed: results never depend on threads).
const BLOCK: usize = 1 << 16;
/// Score-range parts of the radix partitioning in [`Ranker::add`].
const PARTS: usize = 256;
/// Radix table width: enough buckets that a bucket holds a handful of
/// distinct positive keys, capped so the table stays in cache.
fn lut_bits(m: usize) -> u32 {
    ((usize::BITS - m.leading_zeros()) + 1).clamp(12, 22)
}

/// Pass 1: the positives' score keys, and the number of negatives.
///
/// Optionally each positive carries a weight ([`PositiveCollector::add_weighted`]),
/// e.g. `1/|R_k|` for PRO (see `metrics::region`); then `weights` runs
/// parallel to `keys`. It stays empty (no cost) while nothing is weighted.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct PositiveCollector {
    keys: Vec<u32>,
    negatives: u64,
    /// Empty (unweighted), or one weight per entry of `keys`.
    weights: Vec<f64>,
}

impl PositiveCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one image: `labels` are [`label`] codes; void pixels are skipped.
    /// `select` picks which anomaly codes count as positive (None = all).
    pub fn add(&mut self, scores: &[f32], labels: &[u8], select: Option<u8>) {
        debug_assert_eq!(scores.len(), labels.len());
        for (&s, &l) in scores.iter().zip(labels) {
            if l == label::NORMAL {
                self.negatives += 1;
            } else if l != label::VOID && select.is_none_or(|t| t == l) {
                self.keys.push(key(s));
            }
        }
        self.pad_weights();
    }

    /// Like [`add`](Self::add) with `select = None`, each positive (anomaly)
    /// pixel `i` carrying the weight `weights[i]` (weights of normal and void
    /// pixels are ignored). Weights should be finite and ≥ 0; the weighted
    /// statistic comes out of [`Ranker::finish_weighted`]. Positives added
    /// without a weight ([`add`](Self::add), [`extend`](Self::extend)) weigh 1.
    /// The three slices are walked together and stop at the shortest.
    pub fn add_weighted(&mut self, scores: &[f32], labels: &[u8], weights: &[f64]) {
        debug_assert_eq!(scores.len(), labels.len());
        if self.weights.len() < self.keys.len() {
            // first weighted image: earlier positives weigh 1
            self.weights.resize(self.keys.len(), 1.0);
        }
        for ((&s, &l), &w) in scores.iter().zip(labels).zip(weights) {
            if l == label::NORMAL {
                self.negatives += 1;
            } else if l != label::VOID {
                self.keys.push(key(s));
                self.weights.push(w);
            }
        }
    }

    /// Add already-keyed positives and a negative count (merging partial
    /// collections).
    pub fn extend(&mut self, keys: &[u32], negatives: u64) {
        self.keys.extend_from_slice(keys);
        self.negatives += negatives;
        self.pad_weights();
    }

    /// Add the positives another collector saw (shard merge). The order of
    /// `keys` does not matter: [`finish`](Self::finish) sorts them, and the
    /// (key, weight) pairs when weighted.
    pub fn absorb(&mut self, mut o: PositiveCollector) -> anyhow::Result<()> {
        anyhow::ensure!(
            o.weights.is_empty() || o.weights.len() == o.keys.len(),
            "merging positives whose weights do not match their keys"
        );
        if o.is_weighted() && !self.is_weighted() {
            self.weights.resize(self.keys.len(), 1.0);
        }
        if self.is_weighted() && !o.is_weighted() {
            o.weights.resize(o.keys.len(), 1.0);
        }
        self.keys.extend(o.keys);
        self.weights.extend(o.weights);
        self.negatives += o.negatives;
        Ok(())
    }

    /// Keep `weights` parallel to `keys` once anything is weighted.
    fn pad_weights(&mut self) {
        if !self.weights.is_empty() {
            self.weights.resize(self.keys.len(), 1.0);
        }
    }

    /// Whether any positive carries a weight.
    pub fn is_weighted(&self) -> bool {
        !self.weights.is_empty()
    }

    pub fn positives(&self) -> u64 {
        self.keys.len() as u64
    }

    /// Sort and deduplicate the positives, ready for pass 2.
    pub fn finish(mut self) -> Ranker {
        let mut keys = Vec::new();
        let mut pos = Vec::new();
        let mut wsum = Vec::new();
        if self.weights.is_empty() {
            self.keys.par_sort_unstable();
            for &k in &self.keys {
                if keys.last() == Some(&k) {
                    *pos.last_mut().unwrap() += 1;
                } else {
                    keys.push(k);
                    pos.push(1u64);
                }
            }
            drop(self.keys);
        } else {
            // (key, weight bits): sorting the pairs fixes the order in which
            // the weights of one key are summed, whatever the image order.
            let mut pairs: Vec<(u32, u64)> = self
                .keys
                .iter()
                .zip(&self.weights)
                .map(|(&k, &w)| (k, w.to_bits()))
                .collect();
            drop(self.keys);
            drop(self.weights);
            pairs.par_sort_unstable();
            for &(k, w) in &pairs {
                let w = f64::from_bits(w);
                if keys.last() == Some(&k) {
                    *pos.last_mut().unwrap() += 1;
                    *wsum.last_mut().unwrap() += w;
                } else {
                    keys.push(k);
                    pos.push(1u64);
                    wsum.push(w);
                }
            }
        }
        let bits = lut_bits(keys.len());
        // lut[b] = first index whose key's top `bits` bits are ≥ b
        let mut lut = vec![0u32; (1 << bits) + 1];
        let mut i = 0usize;
        for (b, slot) in lut.iter_mut().enumerate() {
            while i < keys.len() && ((keys[i] as u64) >> (32 - bits)) < b as u64 {
                i += 1;
            }
            *slot = i as u32;
        }
        let slots = vec![0; 2 * keys.len() + 1];
        let m = keys.len();
        let part = (0..1u64 << 16)
            .map(|b| (keys.partition_point(|&k| ((k as u64) >> 16) < b) * PARTS / (m + 1)) as u8)
            .collect();
        Ranker {
            keys,
            pos,
            wsum,
            lut,
            shift: 32 - bits,
            part,
            slots,
            expected_negatives: self.negatives,
            negatives: 0,
        }
    }
}

/// The mergeable part of a [`Ranker`]: its slot counts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub slots: Vec<u64>,
    pub negatives: u64,
}

/// Pass 2: counts of negatives between and at the distinct positive scores.
#[derive(Debug, Clone)]
pub struct Ranker {
    /// Distinct positive keys, ascending.
    keys: Vec<u32>,
    /// Positives per distinct key.
    pos: Vec<u64>,
    /// Summed positive weight per distinct key (empty when unweighted).
    wsum: Vec<f64>,
    lut: Vec<u32>,
    shift: u32,
    /// Score-range part (0..PARTS) of each top-16-bit key bucket.
    part: Vec<u8>,
    /// slots[2i] = negatives strictly between keys[i-1] and keys[i];
    /// slots[2i+1] = negatives equal to keys[i]; slots[2m] = above all.
    slots: Vec<u64>,
    expected_negatives: u64,
    negatives: u64,
}

impl Ranker {
    /// Slot of a negative with key `x`.
    #[inline]
    fn slot(&self, x: u32) -> u32 {
        let b = (x >> self.shift) as usize;
        let (lo, hi) = (self.lut[b] as usize, self.lut[b + 1] as usize);
        if lo == hi {
            // no positive shares the bucket: strictly between keys[lo-1] and keys[lo]
            return (2 * lo) as u32;
        }
        let i = lo + self.keys[lo..hi].partition_point(|&k| k < x);
        if i < self.keys.len() && self.keys[i] == x {
            (2 * i + 1) as u32
        } else {
            (2 * i) as u32
        }
    }

    /// Add one image's negatives (same pixels as pass 1, any image order).
    pub fn add(&mut self, scores: &[f32], labels: &[u8]) {
        debug_assert_eq!(scores.len(), labels.len());
        let this = &*self;
        let nslots = self.slots.len();
        if nslots <= scores.len() / 8 {
            // Few slots, many pixels: dense per-block histograms, summed.
            let hists: Vec<(Vec<u32>, u64)> = scores
                .par_chunks(BLOCK * 16)
                .zip(labels.par_chunks(BLOCK * 16))
                .map(|(s, l)| {
                    // Radix-partition the block's negatives by score range
                    // (≈ equal numbers of positive keys per part) so the
                    // slot lookups of one part stay within a cache-sized
                    // slice of the keys, table and histogram.
                    let ks: Vec<u32> = s.iter().zip(l).filter(|p| *p.1 == label::NORMAL).map(|p| key(*p.0)).collect();
                    let mut off = [0usize; PARTS + 1];
                    for &k in &ks {
                        off[this.part[(k >> 16) as usize] as usize + 1] += 1;
                    }
                    for i in 0..PARTS {
                        off[i + 1] += off[i];
                    }
                    let mut buf = vec![0u32; ks.len()];
                    for &k in &ks {
                        let p = &mut off[this.part[(k >> 16) as usize] as usize];
                        buf[*p] = k;
                        *p += 1;
                    }
                    let mut h = vec![0u32; nslots];
                    for &k in &buf {
                        h[this.slot(k) as usize] += 1;
                    }
                    (h, ks.len() as u64)
                })
                .collect();
            for (h, n) in hists {
                self.negatives += n;
                for (a, b) in self.slots.iter_mut().zip(h) {
                    *a += b as u64;
                }
            }
            return;
        }
        let filed: Vec<Vec<u32>> = scores
            .par_chunks(BLOCK)
            .zip(labels.par_chunks(BLOCK))
            .map(|(s, l)| {
                s.iter()
                    .zip(l)
                    .filter(|&(_, &l)| l == label::NORMAL)
                    .map(|(&s, _)| this.slot(key(s)))
                    .collect()
            })
            .collect();
        for block in filed {
            self.negatives += block.len() as u64;
            for s in block {
                self.slots[s as usize] += 1;
            }
        }
    }

    /// The pass-2 counts so far (what a shard ships).
    pub fn tally(&self) -> Tally {
        Tally { slots: self.slots.clone(), negatives: self.negatives }
    }

    /// Add a [`tally`](Self::tally) made by a ranker over the same
    /// positives (shard merge). Integer sums: exact in any order.
    pub fn absorb(&mut self, t: &Tally) -> anyhow::Result<()> {
        anyhow::ensure!(t.slots.len() == self.slots.len(), "merging rank counts made over different positives");
        for (a, b) in self.slots.iter_mut().zip(&t.slots) {
            *a += b;
        }
        self.negatives += t.negatives;
        Ok(())
    }

    pub fn slots(&self) -> &[u64] {
        &self.slots
    }

    /// The sufficient statistic. Errors if pass 2 saw a different number of
    /// negatives than pass 1 (the inputs changed between passes).
    pub fn finish(self) -> anyhow::Result<Counts> {
        anyhow::ensure!(
            self.negatives == self.expected_negatives,
            "inputs changed between the two metric passes ({} negatives, then {})",
            self.expected_negatives,
            self.negatives
        );
        let m = self.keys.len();
        let mut c = Counts {
            positives: self.pos.iter().sum(),
            negatives: self.negatives,
            thresholds: Vec::with_capacity(m),
            tp: Vec::with_capacity(m),
            fp: Vec::with_capacity(m),
            fp_gt: Vec::with_capacity(m),
        };
        let (mut tp, mut fp) = (0u64, self.slots[2 * m]);
        for i in (0..m).rev() {
            let fp_gt = fp;
            fp += self.slots[2 * i + 1];
            tp += self.pos[i];
            c.thresholds.push(unkey(self.keys[i]));
            c.tp.push(tp);
            c.fp.push(fp);
            c.fp_gt.push(fp_gt);
            fp += self.slots[2 * i];
        }
        Ok(c)
    }

    /// [`finish`](Self::finish) plus the cumulative positive weight per
    /// threshold (see [`WeightedCounts`]). `tp_weight` is empty when no
    /// positive was added with [`PositiveCollector::add_weighted`].
    pub fn finish_weighted(mut self) -> anyhow::Result<WeightedCounts> {
        let wsum = std::mem::take(&mut self.wsum);
        let counts = self.finish()?;
        let mut tp_weight = Vec::with_capacity(wsum.len());
        // Neumaier-compensated running sum, descending keys.
        let (mut sum, mut comp) = (0.0f64, 0.0f64);
        for &w in wsum.iter().rev() {
            let t = sum + w;
            comp += if sum.abs() >= w.abs() { (sum - t) + w } else { (w - t) + sum };
            sum = t;
            tp_weight.push(sum + comp);
        }
        Ok(WeightedCounts { counts, tp_weight })
    }
}

/// [`Counts`] plus, per threshold, the summed weight of the positives with
/// score ≥ `thresholds[i]` (cumulative, descending like `tp`). With the
/// weights `1/|R_k|` of `metrics::region::region_weights`, `tp_weight[i] / K`
/// is the PRO (mean per-region overlap) at that threshold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightedCounts {
    pub counts: Counts,
    /// Empty when nothing was weighted.
    pub tp_weight: Vec<f64>,
}


/// Exact confusion counts at a few fixed thresholds (`score ≥ t`), e.g.
/// thresholds chosen on another split. One pass, no positives needed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ThresholdCounter {
    thresholds: Vec<f32>,
    /// Per threshold: anomalies ≥ t, normals ≥ t.
    tp: Vec<u64>,
    fp: Vec<u64>,
    positives: u64,
    negatives: u64,
}

impl ThresholdCounter {
    pub fn new(thresholds: Vec<f32>) -> Self {
        let n = thresholds.len();
        ThresholdCounter { thresholds, tp: vec![0; n], fp: vec![0; n], positives: 0, negatives: 0 }
    }

    pub fn add(&mut self, scores: &[f32], labels: &[u8]) {
        if self.thresholds.is_empty() {
            return;
        }
        let k = self.thresholds.len();
        let th = &self.thresholds;
        let parts: Vec<(Vec<u64>, Vec<u64>, u64, u64)> = scores
            .par_chunks(BLOCK)
            .zip(labels.par_chunks(BLOCK))
            .map(|(s, l)| {
                let (mut tp, mut fp, mut p, mut n) = (vec![0u64; k], vec![0u64; k], 0u64, 0u64);
                for (&x, &l) in s.iter().zip(l) {
                    let tgt = if l == label::NORMAL {
                        n += 1;
                        &mut fp
                    } else if l != label::VOID {
                        p += 1;
                        &mut tp
                    } else {
                        continue;
                    };
                    for (c, &t) in tgt.iter_mut().zip(th) {
                        *c += (x >= t) as u64;
                    }
                }
                (tp, fp, p, n)
            })
            .collect();
        for (tp, fp, p, n) in parts {
            for i in 0..k {
                self.tp[i] += tp[i];
                self.fp[i] += fp[i];
            }
            self.positives += p;
            self.negatives += n;
        }
    }

    /// Add the counts of another counter over the same thresholds.
    pub fn absorb(&mut self, o: &ThresholdCounter) -> anyhow::Result<()> {
        anyhow::ensure!(
            o.thresholds == self.thresholds && o.tp.len() == self.tp.len() && o.fp.len() == self.fp.len(),
            "merging threshold counts over different thresholds"
        );
        for i in 0..self.tp.len() {
            self.tp[i] += o.tp[i];
            self.fp[i] += o.fp[i];
        }
        self.positives += o.positives;
        self.negatives += o.negatives;
        Ok(())
    }

    /// Operating point at threshold `i`.
    pub fn point(&self, i: usize) -> super::OperatingPoint {
        super::OperatingPoint {
            threshold: self.thresholds[i] as f64,
            tp: self.tp[i],
            fp: self.fp[i],
            positives: self.positives,
            negatives: self.negatives,
        }
    }
}

/// Both passes over in-memory data (tests, single score maps).
pub fn counts_of(scores: &[f32], labels: &[u8]) -> Counts {
    let mut pc = PositiveCollector::new();
    pc.add(scores, labels, None);
    let mut r = pc.finish();
    r.add(scores, labels);
    r.finish().expect("same data in both passes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: sort everything, as sklearn does.
    fn brute(scores: &[f32], labels: &[u8]) -> Counts {
        let mut v: Vec<(f32, u8)> = scores
            .iter()
            .zip(labels)
            .filter(|p| *p.1 != label::VOID)
            .map(|(&s, &l)| (if s == 0.0 { 0.0 } else { s }, l))
            .collect();
        v.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
        let mut c = Counts::default();
        c.positives = v.iter().filter(|p| p.1 != 0).count() as u64;
        c.negatives = v.len() as u64 - c.positives;
        let distinct_pos: Vec<f32> = {
            let mut d: Vec<f32> = v.iter().filter(|p| p.1 != 0).map(|p| p.0).collect();
            d.dedup();
            d
        };
        for t in distinct_pos {
            c.thresholds.push(t);
            c.tp.push(v.iter().filter(|p| p.1 != 0 && p.0 >= t).count() as u64);
            c.fp.push(v.iter().filter(|p| p.1 == 0 && p.0 >= t).count() as u64);
            c.fp_gt.push(v.iter().filter(|p| p.1 == 0 && p.0 > t).count() as u64);
        }
        c
    }

    #[test]
    fn engine_equals_brute_force_with_ties_and_void() {
        let mut x = 12345u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for n in [1usize, 2, 17, 300, 5000, 70_000] {
            let scores: Vec<f32> = (0..n).map(|_| ((next() % 41) as f32 - 20.0) / 4.0).collect();
            let labels: Vec<u8> = (0..n)
                .map(|_| match next() % 10 {
                    0 | 1 => 1,
                    2 => label::VOID,
                    _ => 0,
                })
                .collect();
            assert_eq!(counts_of(&scores, &labels), brute(&scores, &labels), "n={n}");
        }
    }

    #[test]
    fn weighted_positives_sum_per_threshold() {
        let mut x = 777u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let n = 3000;
        let scores: Vec<f32> = (0..n).map(|_| ((next() % 29) as f32 - 14.0) / 3.0).collect();
        let labels: Vec<u8> = (0..n).map(|_| [0u8, 0, 0, 1, 2, label::VOID][(next() % 6) as usize]).collect();
        let weights: Vec<f64> = (0..n).map(|_| 1.0 / (1 + next() % 50) as f64).collect();
        let half = n / 2;
        // first half unweighted (weight 1), second half weighted
        let mut pc = PositiveCollector::new();
        pc.add(&scores[..half], &labels[..half], None);
        pc.add_weighted(&scores[half..], &labels[half..], &weights[half..]);
        assert!(pc.is_weighted());
        let mut r = pc.finish();
        r.add(&scores, &labels);
        let wc = r.finish_weighted().unwrap();
        assert_eq!(wc.counts, brute(&scores, &labels));
        for (i, &t) in wc.counts.thresholds.iter().enumerate() {
            let want: f64 = (0..n)
                .filter(|&j| label::is_anomaly(labels[j]) && scores[j] >= t)
                .map(|j| if j < half { 1.0 } else { weights[j] })
                .sum();
            assert!((wc.tp_weight[i] - want).abs() < 1e-9, "{i}: {} vs {want}", wc.tp_weight[i]);
        }
        // unweighted collections carry no weights
        let mut pc = PositiveCollector::new();
        pc.add(&scores, &labels, None);
        assert!(!pc.is_weighted());
        let mut r = pc.finish();
        r.add(&scores, &labels);
        assert!(r.finish_weighted().unwrap().tp_weight.is_empty());
    }

    #[test]
    fn signed_zero_ties() {
        let c = counts_of(&[-0.0, 0.0, 1.0], &[1, 0, 0]);
        assert_eq!(c.thresholds, vec![0.0]);
        assert_eq!((c.tp[0], c.fp[0], c.fp_gt[0]), (1, 2, 1));
    }
}
