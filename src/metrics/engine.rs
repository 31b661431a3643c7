//! Building [`Counts`] in two streaming passes with memory proportional to
//! the positives.
//!
//! Pass 1 ([`PositiveCollector`]) keeps the order-preserving u32 key of every
//! positive pixel's score (positives are ~1 % of pixels) and counts the
//! negatives. Pass 2 ([`Ranker`]) visits the same pixels again and files every
//! negative into one of 2m+1 slots: strictly between two consecutive
//! distinct positive scores, or equal to one. A fixed-size two-level table
//! ([`RankTable`]) on the key's bits resolves most negatives with no search
//! (a bucket without positive keys names the slot directly) and leaves a
//! scan of one or two keys for the rest; pixels are processed in fixed
//! blocks in parallel (rayon), and the slot counts are u64 and
//! order-independent, so the result is exact and deterministic.
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

/// Largest pixels per parallel work item of the histogram path (at least 16
/// pixels per slot, so zeroing and summing the chunk's histogram stays
/// small; the split depends on the sizes only, never on threads, and integer
/// sums are exact in any split anyway).
const CHUNK: usize = 1 << 20;
/// Distinct positive keys above which [`Ranker::rank_block`] partitions a
/// block by score range before the lookups (below, everything the lookups
/// touch stays in L2).
const PARTITION_ABOVE: usize = 1 << 15;

/// The keys of a block's negatives (label [`label::NORMAL`]), in pixel
/// order, into `out` (cleared first). Branch-free compaction.
#[inline]
fn negative_keys(s: &[f32], l: &[u8], out: &mut Vec<u32>) {
    out.clear();
    out.resize(s.len(), 0);
    let mut j = 0usize;
    for (&x, &l) in s.iter().zip(l) {
        out[j] = key(x);
        j += (l == label::NORMAL) as usize;
    }
    out.truncate(j);
}

/// First-level buckets: the key's top `L1_BITS` bits.
const L1_BITS: u32 = 16;
/// Second-level entries, all buckets together, beyond one per bucket: the
/// table's fixed bound (with the first level, at most (2^16 + 2^16 + 2^20)
/// × 4 bytes = 4.5 MiB per ranker, whatever the number of positives).
const L2_BUDGET: usize = 1 << 20;
/// Keys a lookup compares branch-free at its end: a (sub-)bucket holding
/// more takes a binary search (rare: only when the budget is exhausted or
/// the keys crowd one sub-bucket).
pub const WINDOW: usize = 4;

/// The slot lookup of pass 2, exact: for a negative's key `x`, the index
/// `i` of the first distinct positive key `≥ x` and whether it equals `x`
/// (slot `2i + 1`) or not (slot `2i`).
///
/// Level 1 is the key's top 16 bits, `b`; `desc[b] = off << 5 | s` gives
/// bucket `b` a run of `2^s` sub-buckets on the key's next `s` bits (`s = 0`
/// for a bucket with at most [`WINDOW`] positive keys, else one to two
/// sub-buckets per key, `s ≤ 16`). `bounds[off + j]` is the index of the
/// first positive key at or above sub-bucket `j`; the runs are laid end to
/// end, so `bounds[off + j + 1]` closes every sub-bucket, the last one's
/// included. A lookup is three dependent loads (`desc`, `bounds`, `keys`)
/// and a branch-free count of the keys `< x` among the sub-bucket's (at
/// most [`WINDOW`]) keys; a (sub-)bucket with no positive key (the common
/// case away from the positives) is the same code, counting none. The
/// second level holds at most [`L2_BUDGET`] entries beyond one per bucket:
/// when the wanted runs do not fit, every `s` is lowered alike until they
/// do (more sub-buckets overflow the window into a binary search; the
/// answer stays exact).
///
/// The GPU ranker (`scores::gpu::rank`) uploads these same three arrays and
/// runs the same lookup in WGSL.
#[derive(Debug, Clone)]
pub struct RankTable {
    desc: Vec<u32>,
    bounds: Vec<u32>,
    /// The positive keys, followed by [`WINDOW`] `u32::MAX` pads so the
    /// window never reads past the end.
    keys: Vec<u32>,
}

impl RankTable {
    /// The table over `keys`: distinct, ascending (as [`Ranker::keys`]).
    pub fn new(keys: &[u32]) -> RankTable {
        debug_assert!(keys.windows(2).all(|w| w[0] < w[1]), "rank keys must be distinct and ascending");
        Self::with_budget(keys, L2_BUDGET)
    }

    /// [`new`](Self::new) with another second-level bound (tests: a small
    /// budget forces the binary-search fallback).
    pub fn with_budget(keys: &[u32], budget: usize) -> RankTable {
        let nb = 1usize << L1_BITS;
        let mut start = vec![0u32; nb + 1];
        let mut i = 0usize;
        for (b, slot) in start.iter_mut().enumerate() {
            while i < keys.len() && ((keys[i] >> (32 - L1_BITS)) as usize) < b {
                i += 1;
            }
            *slot = i as u32;
        }
        // wanted second-level bits per bucket: 2^s ≥ keys in it (about one key per sub-bucket)
        let want = |cnt: u32| -> u32 {
            if cnt as usize <= WINDOW { 0 } else { (u32::BITS - (cnt - 1).leading_zeros()).min(32 - L1_BITS) }
        };
        let wanted: Vec<u32> = (0..nb).map(|b| want(start[b + 1] - start[b])).collect();
        let extra = |d: u32| -> usize { wanted.iter().map(|&s| if s > d { (1usize << (s - d)) - 1 } else { 0 }).sum() };
        let mut d = 0;
        while extra(d) > budget {
            d += 1;
        }
        let mut desc = vec![0u32; nb];
        let mut bounds = Vec::with_capacity(nb + 1 + extra(d));
        for b in 0..nb {
            let (lo, hi) = (start[b] as usize, start[b + 1] as usize);
            let s = wanted[b].saturating_sub(d);
            desc[b] = ((bounds.len() as u32) << 5) | s;
            let shift = 32 - L1_BITS - s;
            let low = (1u32 << (32 - L1_BITS)) - 1;
            let mut i = lo;
            for j in 0..(1usize << s) {
                while i < hi && (((keys[i] & low) >> shift) as usize) < j {
                    i += 1;
                }
                bounds.push(i as u32);
            }
        }
        bounds.push(keys.len() as u32);
        let mut padded = Vec::with_capacity(keys.len() + WINDOW);
        padded.extend_from_slice(keys);
        padded.resize(keys.len() + WINDOW, u32::MAX);
        RankTable { desc, bounds, keys: padded }
    }

    /// Level 1: 2^16 descriptors, `offset into bounds << 5 | s`.
    pub fn desc(&self) -> &[u32] {
        &self.desc
    }
    /// Level 2: first key index per sub-bucket, runs end to end, plus the
    /// closing `m`.
    pub fn bounds(&self) -> &[u32] {
        &self.bounds
    }
    /// The keys followed by [`WINDOW`] `u32::MAX` pads.
    pub fn padded_keys(&self) -> &[u32] {
        &self.keys
    }

    /// The slot (0..=2m) of a negative with key `x`.
    #[inline(always)]
    pub fn slot(&self, x: u32) -> u32 {
        let d = self.desc[(x >> (32 - L1_BITS)) as usize];
        let s = d & 31;
        let j = (d >> 5) as usize + (((x << L1_BITS) as u64) >> (32 - s)) as usize;
        let (lo, hi) = (self.bounds[j] as usize, self.bounds[j + 1] as usize);
        let m = self.keys.len() - WINDOW;
        let i = if hi - lo <= WINDOW {
            // Sorted keys: the first key ≥ x follows every key < x. Keys past
            // the sub-bucket are > x (later sub-buckets) or pads, so the
            // window counts only the sub-bucket's own.
            let w = &self.keys[lo..lo + WINDOW];
            lo + w.iter().map(|&k| (k < x) as usize).sum::<usize>()
        } else {
            lo + self.keys[lo..hi].partition_point(|&k| k < x)
        };
        2 * i as u32 + (i < m && self.keys[i] == x) as u32
    }
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
        let one = |s: &[f32], l: &[u8], keys: &mut Vec<u32>| {
            let mut negatives = 0u64;
            for (&s, &l) in s.iter().zip(l) {
                if l == label::NORMAL {
                    negatives += 1;
                } else if l != label::VOID && select.is_none_or(|t| t == l) {
                    keys.push(key(s));
                }
            }
            negatives
        };
        if scores.len() <= BLOCK {
            self.negatives += one(scores, labels, &mut self.keys);
        } else {
            // blocks in parallel, their positives appended in pixel order
            let parts: Vec<(Vec<u32>, u64)> = scores
                .par_chunks(BLOCK)
                .zip(labels.par_chunks(BLOCK))
                .map(|(s, l)| {
                    let mut keys = Vec::new();
                    let n = one(s, l, &mut keys);
                    (keys, n)
                })
                .collect();
            for (k, n) in parts {
                self.keys.extend_from_slice(&k);
                self.negatives += n;
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

    /// Bytes this collector holds (what the score cache shares its budget
    /// with: `split::Pass1`).
    pub fn heap_bytes(&self) -> u64 {
        (self.keys.capacity() * 4 + self.weights.capacity() * 8) as u64
    }

    pub fn positives(&self) -> u64 {
        self.keys.len() as u64
    }

    /// An upper bound on what [`finish`](Self::finish) allocates beside
    /// this collector while it builds the ranker (the sorted runs, the
    /// ranker itself and the table's fixed ≈ 5 MB), so a budget can
    /// make room before the build rather than after it. Per positive at
    /// most one distinct key: keys, runs, two slots, the table's padded
    /// keys (24 bytes), plus with weights the (key, weight) pairs and the
    /// weight sums (24 more).
    pub fn finish_bytes_bound(&self) -> u64 {
        let n = self.keys.len() as u64;
        let per = if self.weights.is_empty() { 24 } else { 48 };
        // the table's part that does not grow with the keys, in u32 words:
        // `desc`, the build's `start` and `wanted`, `bounds` (one per
        // bucket plus the second-level budget), the window pads; then
        // `part`, a byte per bucket
        let nb = 1u64 << L1_BITS;
        let fixed = 4 * (nb + (nb + 1) + nb + (nb + 1 + L2_BUDGET as u64) + WINDOW as u64) + nb;
        n * per + fixed
    }

    /// Sort and deduplicate the positives, ready for pass 2.
    pub fn finish(mut self) -> Ranker {
        let (mut keys, mut pos, mut wsum);
        if self.weights.is_empty() {
            self.keys.par_sort_unstable();
            // sized once (no doubling slack: this lives through pass 2)
            let distinct = self.keys.chunk_by(|a, b| a == b).count();
            (keys, pos, wsum) = (Vec::with_capacity(distinct), Runs::with_capacity(distinct), Vec::new());
            for run in self.keys.chunk_by(|a, b| a == b) {
                keys.push(run[0]);
                pos.push(run.len() as u64);
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
            let distinct = pairs.chunk_by(|a, b| a.0 == b.0).count();
            (keys, pos, wsum) = (Vec::with_capacity(distinct), Runs::with_capacity(distinct), Vec::with_capacity(distinct));
            for run in pairs.chunk_by(|a, b| a.0 == b.0) {
                keys.push(run[0].0);
                pos.push(run.len() as u64);
                // in (key, weight bits) order, whatever the image order
                wsum.push(run[1..].iter().fold(f64::from_bits(run[0].1), |acc, &(_, w)| acc + f64::from_bits(w)));
            }
        }
        let slots = Slots::new(2 * keys.len() + 1);
        let m = keys.len();
        let table = RankTable::new(&keys);
        drop(keys);
        // a bucket's first key index is the first bound of its run
        let part = table.desc.iter().map(|&d| (table.bounds[(d >> 5) as usize] as usize * PARTS / (m + 1)) as u8).collect();
        Ranker {
            pos,
            wsum,
            table,
            part,
            slots,
            expected_negatives: self.negatives,
            negatives: 0,
        }
    }
}

/// Positives per distinct key, 4 bytes each: a run of 2^32 − 1 or more
/// equal positive keys keeps its count in `big` (no real split gets there,
/// but the count stays exact if one does).
#[derive(Debug, Clone, Default)]
struct Runs {
    n: Vec<u32>,
    /// (index, count) of the runs marked `u32::MAX` in `n`, ascending.
    big: Vec<(usize, u64)>,
}

impl Runs {
    fn with_capacity(c: usize) -> Runs {
        Runs { n: Vec::with_capacity(c), big: vec![] }
    }

    fn push(&mut self, c: u64) {
        match u32::try_from(c) {
            Ok(v) if v < u32::MAX => self.n.push(v),
            _ => {
                self.big.push((self.n.len(), c));
                self.n.push(u32::MAX);
            }
        }
    }

    #[inline]
    fn get(&self, i: usize) -> u64 {
        match self.n[i] {
            u32::MAX => self.big[self.big.partition_point(|b| b.0 < i)].1,
            v => v as u64,
        }
    }

    fn total(&self) -> u64 {
        self.n.iter().filter(|&&v| v != u32::MAX).map(|&v| v as u64).sum::<u64>() + self.big.iter().map(|b| b.1).sum::<u64>()
    }
}

/// A ranker's slot counts, 4 bytes per slot while they fit (two slots per
/// distinct positive, so this is the largest part of a ranker): every
/// negative adds one to one slot, so no u32 count can wrap while fewer than
/// 2^32 negatives have been added since the last [`flush`](Self::flush) into
/// the u64 `wide` counts, which are allocated only then (a split of more
/// than 4.29 G negative pixels).
#[derive(Debug, Clone)]
struct Slots {
    narrow: Vec<u32>,
    /// Empty until the first flush.
    wide: Vec<u64>,
    /// Upper bound on every `narrow` count.
    bound: u64,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots { narrow: vec![0; n], wide: vec![], bound: 0 }
    }

    fn len(&self) -> usize {
        self.narrow.len()
    }

    /// Make room for `n` more increments, flushing into `wide` if the u32
    /// counts could wrap.
    fn room(&mut self, n: u64) {
        if self.bound + n > u32::MAX as u64 {
            self.flush();
        }
        self.bound += n;
    }

    fn flush(&mut self) {
        let Slots { narrow, wide, bound } = self;
        if wide.is_empty() {
            *wide = vec![0; narrow.len()];
        }
        for (w, n) in wide.iter_mut().zip(narrow.iter_mut()) {
            *w += std::mem::take(n) as u64;
        }
        *bound = 0;
    }

    #[inline]
    fn get(&self, i: usize) -> u64 {
        self.narrow[i] as u64 + self.wide.get(i).copied().unwrap_or(0)
    }

    fn to_vec(&self) -> Vec<u64> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// Add u64 counts (a shard's or the device's tally).
    fn add(&mut self, t: &[u64]) {
        let most = t.iter().copied().max().unwrap_or(0);
        if self.bound + most > u32::MAX as u64 {
            // too large for the u32 counts: flush them, add in u64
            self.flush();
            for (a, &b) in self.wide.iter_mut().zip(t) {
                *a += b;
            }
            return;
        }
        for (a, &b) in self.narrow.iter_mut().zip(t) {
            *a += b as u32;
        }
        self.bound += most;
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
    /// Positives per distinct key.
    pos: Runs,
    /// Summed positive weight per distinct key (empty when unweighted).
    wsum: Vec<f64>,
    /// The slot lookup table over `keys`.
    table: RankTable,
    /// Score-range part (0..PARTS) of each top-16-bit key bucket.
    part: Vec<u8>,
    /// slots[2i] = negatives strictly between keys[i-1] and keys[i];
    /// slots[2i+1] = negatives equal to keys[i]; slots[2m] = above all.
    slots: Slots,
    expected_negatives: u64,
    negatives: u64,
}

impl Ranker {
    /// Slot of a negative with key `x`: the table's answer.
    #[inline(always)]
    fn slot(&self, x: u32) -> u32 {
        self.table.slot(x)
    }

    /// Slot of a negative with key `x` by a plain binary search over all
    /// distinct positive keys: the definition [`slot`](Self::slot) is
    /// tested against.
    pub fn slot_reference(&self, x: u32) -> u32 {
        let keys = self.keys();
        let i = keys.partition_point(|&k| k < x);
        (2 * i + (i < keys.len() && keys[i] == x) as usize) as u32
    }

    /// Bytes this ranker holds through pass 2 (what the score cache shares
    /// its budget with: `pipeline::passes::eval_split`).
    pub fn heap_bytes(&self) -> u64 {
        let t = &self.table;
        let table = (t.desc.capacity() + t.bounds.capacity() + t.keys.capacity()) * 4;
        let pos = self.pos.n.capacity() * 4 + self.pos.big.capacity() * 16;
        let slots = self.slots.narrow.capacity() * 4 + self.slots.wide.capacity() * 8;
        (table + pos + slots + self.wsum.capacity() * 8 + self.part.capacity()) as u64
    }

    /// The slot lookup table (what a GPU ranker uploads).
    pub fn table(&self) -> &RankTable {
        &self.table
    }

    /// Positives per distinct key of [`keys`](Self::keys) (the bootstrap
    /// grid's anomaly mass).
    pub fn positive_counts(&self) -> Vec<u64> {
        (0..self.pos.n.len()).map(|i| self.pos.get(i)).collect()
    }

    /// The distinct positive keys, ascending.
    pub fn keys(&self) -> &[u32] {
        &self.table.keys[..self.table.keys.len() - WINDOW]
    }

    /// Add one image's negatives (same pixels as pass 1, any image order).
    pub fn add(&mut self, scores: &[f32], labels: &[u8]) {
        debug_assert_eq!(scores.len(), labels.len());
        // u32 slot counts: at most 2^31 pixels between two checks
        for (s, l) in scores.chunks(1 << 31).zip(labels.chunks(1 << 31)) {
            self.slots.room(s.len() as u64);
            self.add_narrow(s, l);
        }
    }

    fn add_narrow(&mut self, scores: &[f32], labels: &[u8]) {
        let this = &*self;
        let nslots = self.slots.len();
        if nslots <= scores.len() / 8 {
            // Few slots, many pixels: dense per-chunk histograms, summed.
            // Chunks are fixed in size (integer sums: any split is exact).
            let chunk = (nslots * 16).next_power_of_two().clamp(BLOCK, CHUNK);
            let hists: Vec<(Vec<u32>, u64)> = scores
                .par_chunks(chunk)
                .zip(labels.par_chunks(chunk))
                .map(|(s, l)| {
                    let mut h = vec![0u32; nslots];
                    let mut ks = Vec::new();
                    let mut buf = Vec::new();
                    let mut n = 0u64;
                    for (s, l) in s.chunks(BLOCK).zip(l.chunks(BLOCK)) {
                        negative_keys(s, l, &mut ks);
                        n += ks.len() as u64;
                        this.rank_block(&mut ks, &mut buf, &mut h);
                    }
                    (h, n)
                })
                .collect();
            for (h, n) in hists {
                self.negatives += n;
                for (a, b) in self.slots.narrow.iter_mut().zip(h) {
                    *a += b;
                }
            }
            return;
        }
        let filed: Vec<Vec<u32>> = scores
            .par_chunks(BLOCK)
            .zip(labels.par_chunks(BLOCK))
            .map(|(s, l)| {
                let (mut ks, mut buf) = (Vec::new(), Vec::new());
                negative_keys(s, l, &mut ks);
                // in score-range order, so the increments below walk the
                // slots part by part
                this.order_block(&mut ks, &mut buf);
                for k in ks.iter_mut() {
                    *k = this.slot(*k);
                }
                ks
            })
            .collect();
        for block in filed {
            self.negatives += block.len() as u64;
            for s in block {
                self.slots.narrow[s as usize] += 1;
            }
        }
    }

    /// Put a block of negative keys in score-range order (radix partition
    /// into [`PARTS`] ranges holding ≈ equal numbers of positive keys) when
    /// the positives' table, keys and slots outgrow the cache, so the
    /// lookups and slot increments of one range stay within a cache-sized
    /// slice of them. `buf` is scratch; the block ends up in `ks`.
    fn order_block(&self, ks: &mut Vec<u32>, buf: &mut Vec<u32>) {
        if self.keys().len() < PARTITION_ABOVE {
            return;
        }
        let mut off = [0usize; PARTS + 1];
        for &k in ks.iter() {
            off[self.part[(k >> 16) as usize] as usize + 1] += 1;
        }
        for i in 0..PARTS {
            off[i + 1] += off[i];
        }
        buf.clear();
        buf.resize(ks.len(), 0);
        for &k in ks.iter() {
            let p = &mut off[self.part[(k >> 16) as usize] as usize];
            buf[*p] = k;
            *p += 1;
        }
        std::mem::swap(ks, buf);
    }

    /// File a block of negative keys into the histogram `h` (one u32 per
    /// slot).
    fn rank_block(&self, ks: &mut Vec<u32>, buf: &mut Vec<u32>, h: &mut [u32]) {
        self.order_block(ks, buf);
        for &k in ks.iter() {
            h[self.slot(k) as usize] += 1;
        }
    }

    /// [`add`](Self::add) the old way: every negative by
    /// [`slot_reference`](Self::slot_reference), serially. The reference
    /// the fast path is tested against (and benchmarked).
    pub fn add_reference(&mut self, scores: &[f32], labels: &[u8]) {
        for (&s, &l) in scores.iter().zip(labels) {
            if l == label::NORMAL {
                self.negatives += 1;
                let i = self.slot_reference(key(s)) as usize;
                self.slots.room(1);
                self.slots.narrow[i] += 1;
            }
        }
    }

    /// The pass-2 counts so far (what a shard ships).
    pub fn tally(&self) -> Tally {
        Tally { slots: self.slots.to_vec(), negatives: self.negatives }
    }

    /// Add a [`tally`](Self::tally) made by a ranker over the same
    /// positives (shard merge). Integer sums: exact in any order.
    pub fn absorb(&mut self, t: &Tally) -> anyhow::Result<()> {
        anyhow::ensure!(t.slots.len() == self.slots.len(), "merging rank counts made over different positives");
        self.slots.add(&t.slots);
        self.negatives += t.negatives;
        Ok(())
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
        let m = self.keys().len();
        let mut c = Counts {
            positives: self.pos.total(),
            negatives: self.negatives,
            thresholds: Vec::with_capacity(m),
            tp: Vec::with_capacity(m),
            fp: Vec::with_capacity(m),
            fp_gt: Vec::with_capacity(m),
        };
        let (mut tp, mut fp) = (0u64, self.slots.get(2 * m));
        for i in (0..m).rev() {
            let fp_gt = fp;
            fp += self.slots.get(2 * i + 1);
            tp += self.pos.get(i);
            c.thresholds.push(unkey(self.keys()[i]));
            c.tp.push(tp);
            c.fp.push(fp);
            c.fp_gt.push(fp_gt);
            fp += self.slots.get(2 * i);
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

    /// Add one image's counts made elsewhere at the same thresholds (`tp`:
    /// anomalies ≥ t, `fp`: normals ≥ t, void excluded), as
    /// [`add`](Self::add) would have counted its pixels: why, the
    /// per-image drift record (`dashboard::pixel_counts`) walks the same
    /// pixels at the same thresholds. Returns false, counting nothing,
    /// when `thresholds` are not this counter's (bit for bit) or the
    /// lengths differ; the caller then counts the pixels with `add`.
    pub fn add_counts(&mut self, thresholds: &[f32], tp: &[u64], fp: &[u64], positives: u64, negatives: u64) -> bool {
        let same = thresholds.len() == self.thresholds.len() && thresholds.iter().zip(&self.thresholds).all(|(a, b)| a.to_bits() == b.to_bits());
        if !same || tp.len() != self.tp.len() || fp.len() != self.fp.len() {
            return false;
        }
        if self.thresholds.is_empty() {
            return true; // `add` counts nothing without thresholds
        }
        for i in 0..self.tp.len() {
            self.tp[i] += tp[i];
            self.fp[i] += fp[i];
        }
        self.positives += positives;
        self.negatives += negatives;
        true
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
    if scores.len() <= SMALL {
        return counts_sorted(scores, labels);
    }
    counts_ranked(scores, labels)
}

/// Up to this many pixels [`counts_of`] sorts instead of ranking: building
/// the 2^16-bucket [`RankTable`] costs more than sorting a few thousand
/// keys, and the bootstrap calls `counts_of` per replicate on image-level
/// scores (tens to thousands of values).
const SMALL: usize = 1 << 14;

/// [`counts_of`] through the two streaming passes (any size).
fn counts_ranked(scores: &[f32], labels: &[u8]) -> Counts {
    let mut pc = PositiveCollector::new();
    pc.add(scores, labels, None);
    let mut r = pc.finish();
    r.add(scores, labels);
    r.finish().expect("same data in both passes")
}

/// [`counts_of`] by sorting both classes' keys: the same integers as the
/// ranking passes (same keys, same `≥` / `>` rules, void skipped).
fn counts_sorted(scores: &[f32], labels: &[u8]) -> Counts {
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for (&s, &l) in scores.iter().zip(labels) {
        if l == label::NORMAL {
            neg.push(key(s));
        } else if l != label::VOID {
            pos.push(key(s));
        }
    }
    pos.sort_unstable();
    neg.sort_unstable();
    let mut c = Counts { positives: pos.len() as u64, negatives: neg.len() as u64, ..Counts::default() };
    let (mut i, mut tp) = (pos.len(), 0u64);
    while i > 0 {
        let k = pos[i - 1];
        while i > 0 && pos[i - 1] == k {
            i -= 1;
            tp += 1;
        }
        c.thresholds.push(unkey(k));
        c.tp.push(tp);
        c.fp.push((neg.len() - neg.partition_point(|&x| x < k)) as u64);
        c.fp_gt.push((neg.len() - neg.partition_point(|&x| x <= k)) as u64);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The u32 slot counts flush into u64 before they could wrap, and u64
    /// tallies too large for them go straight to the wide counts: the counts
    /// read back are the exact sums either way.
    #[test]
    fn slot_counts_stay_exact_past_u32() {
        let max = u32::MAX as u64;
        let mut s = Slots::new(3);
        s.room(max - 2);
        s.narrow[1] = (max - 2) as u32;
        assert!(s.wide.is_empty());
        s.room(2);
        s.narrow[1] += 2;
        assert!(s.wide.is_empty(), "exactly u32::MAX fits");
        s.room(1);
        assert_eq!(s.wide, vec![0, max, 0], "the next increment flushes first");
        s.narrow[1] += 1;
        s.add(&[5, 7, max + 10]);
        assert_eq!(s.to_vec(), vec![5, max + 8, max + 10]);
        let mut t = Slots::new(2);
        t.add(&[1, 2]);
        assert!(t.wide.is_empty());
        assert_eq!((t.to_vec(), t.bound), (vec![1, 2], 2));
    }

    /// Run lengths of 2^32 − 1 and more keep their exact counts.
    #[test]
    fn positive_runs_stay_exact_past_u32() {
        let max = u32::MAX as u64;
        let mut r = Runs::default();
        for c in [1, max + 5, 3, max, max - 1, 1 << 40] {
            r.push(c);
        }
        let got: Vec<u64> = (0..6).map(|i| r.get(i)).collect();
        assert_eq!(got, vec![1, max + 5, 3, max, max - 1, 1 << 40]);
        assert_eq!(r.total(), got.iter().sum::<u64>());
    }

    /// A ranker whose counts pass 2^32 (here absorbed as a device or shard
    /// tally) finishes to the exact statistic.
    #[test]
    fn ranker_counts_past_u32() {
        let big = u32::MAX as u64 * 3;
        let mut c = PositiveCollector::new();
        c.add(&[2.0, 1.0, 1.0], &[1, 1, 0], None);
        // pass 1 saw the absorbed tally's negatives too
        c.extend(&[], 2 * big + 9);
        let mut r = c.finish();
        // slots: below 1.0, at 1.0, between, at 2.0, above
        r.absorb(&Tally { slots: vec![big, 1, 7, 0, big + 1], negatives: 2 * big + 9 }).unwrap();
        // a negative at 1.0 on top of the absorbed tally
        r.add(&[1.0], &[0]);
        let k = r.finish().unwrap();
        assert_eq!(k.fp, vec![big + 1, big + 1 + 7 + 2]);
        assert_eq!(k.fp_gt, vec![big + 1, big + 1 + 7]);
        assert_eq!(k.tp, vec![1, 2]);
    }

    /// The sorting path of `counts_of` (small inputs) gives the ranking
    /// passes' integers exactly: ties across classes, void, ±0, no
    /// positives, no negatives, all tied.
    #[test]
    fn counts_sorted_equals_counts_ranked() {
        let mut next = crate::metrics::xorshift(7);
        for n in [0usize, 1, 2, 5, 40, 300, 3000] {
            for levels in [1u64, 3, 50, 1 << 20] {
                let scores: Vec<f32> = (0..n)
                    .map(|_| {
                        let x = ((next() % levels) as f32 - levels as f32 / 2.0) * 0.25;
                        if x == 0.0 && next() % 2 == 0 { -0.0 } else { x }
                    })
                    .collect();
                for mix in [0u64, 1, 3, 10] {
                    let labels: Vec<u8> = (0..n)
                        .map(|_| match next() % 10 {
                            0 => label::VOID,
                            r if r < 1 + mix => 1u8,
                            _ => label::NORMAL,
                        })
                        .collect();
                    let (a, b) = (counts_sorted(&scores, &labels), counts_ranked(&scores, &labels));
                    assert_eq!((a.positives, a.negatives, &a.tp, &a.fp, &a.fp_gt), (b.positives, b.negatives, &b.tp, &b.fp, &b.fp_gt), "n {n} levels {levels} mix {mix}");
                    assert_eq!(a.thresholds.iter().map(|t| t.to_bits()).collect::<Vec<_>>(), b.thresholds.iter().map(|t| t.to_bits()).collect::<Vec<_>>());
                }
            }
        }
    }

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
        let mut next = crate::metrics::xorshift(12345);
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
        let mut next = crate::metrics::xorshift(777);
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

    /// The room a budget makes before a ranker is built covers the ranker
    /// it gets: all-distinct and heavily tied positives, with and without
    /// weights, few and many (past the table's second-level budget).
    #[test]
    fn finish_bytes_bound_covers_the_ranker() {
        let mut next = crate::metrics::xorshift(4242);
        for (n, distinct, weighted) in [(0usize, 1u64, false), (10, 1, false), (5000, 1 << 30, false), (5000, 7, true), (3_000_000, 1 << 31, false), (400_000, 1 << 31, true)] {
            let scores: Vec<f32> = (0..n).map(|_| (next() % distinct) as f32 * 1e-3 - 3.0).collect();
            let labels = vec![1u8; n];
            let mut pc = PositiveCollector::new();
            if weighted {
                pc.add_weighted(&scores, &labels, &vec![0.5; n]);
            } else {
                pc.add(&scores, &labels, None);
            }
            let bound = pc.finish_bytes_bound();
            let r = pc.finish();
            assert!(r.heap_bytes() <= bound, "n {n} distinct {distinct} weighted {weighted}: ranker {} > bound {bound}", r.heap_bytes());
        }
    }

    #[test]
    fn signed_zero_ties() {
        let c = counts_of(&[-0.0, 0.0, 1.0], &[1, 0, 0]);
        assert_eq!(c.thresholds, vec![0.0]);
        assert_eq!((c.tp[0], c.fp[0], c.fp_gt[0]), (1, 2, 1));
    }
}

#[cfg(test)]
mod fast_rank_tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(seed)
    }

    /// Both ways of pass 2 over the same pixels: the fast path (whole
    /// slices, and image-sized pieces, which take the other branch of
    /// `add`) and the reference binary search, slot for slot.
    fn check(scores: &[f32], labels: &[u8], what: &str) {
        let mut pc = PositiveCollector::new();
        pc.add(scores, labels, None);
        let r0 = pc.finish();
        let mut reference = r0.clone();
        reference.add_reference(scores, labels);
        let mut fast = r0.clone();
        fast.add(scores, labels);
        assert_eq!(fast.tally(), reference.tally(), "{what}: whole slice");
        let mut pieces = r0.clone();
        for (s, l) in scores.chunks(777).zip(labels.chunks(777)) {
            pieces.add(s, l);
        }
        assert_eq!(pieces.tally(), reference.tally(), "{what}: pieces");
        // every key the scores produce, and its neighbours, slot for slot
        for &x in scores {
            let k = key(x);
            for q in [k.wrapping_sub(1), k, k.wrapping_add(1)] {
                assert_eq!(r0.slot(q), r0.slot_reference(q), "{what}: key {q:#x}");
            }
        }
    }

    fn labels_at(r: &mut rand_chacha::ChaCha8Rng, n: usize, pos: f64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let u: f64 = r.random();
                if u < pos { 1 + (u * 100.0) as u8 % 3 } else if u < pos + 0.02 { label::VOID } else { 0 }
            })
            .collect()
    }

    #[test]
    fn fast_rank_equals_reference_random() {
        let mut r = rng(1);
        for (n, pos) in [(1usize, 0.5), (100, 0.3), (5000, 0.01), (200_000, 0.01), (300_000, 0.2)] {
            let scores: Vec<f32> = (0..n).map(|_| (r.random::<f64>() * 8.0 - 3.0) as f32).collect();
            let labels = labels_at(&mut r, n, pos);
            check(&scores, &labels, &format!("random n={n} pos={pos}"));
        }
        // wide exponent range: scores from 1e-30 to 1e30, both signs
        let n = 100_000;
        let scores: Vec<f32> = (0..n)
            .map(|_| {
                let e: f64 = r.random::<f64>() * 60.0 - 30.0;
                let s = if r.random::<bool>() { 1.0 } else { -1.0 };
                (s * 10f64.powf(e)) as f32
            })
            .collect();
        let labels = labels_at(&mut r, n, 0.05);
        check(&scores, &labels, "wide exponents");
    }

    #[test]
    fn fast_rank_equals_reference_ties_and_extremes() {
        let mut r = rng(2);
        let n = 150_000;
        // heavily tied: 256 values
        let scores: Vec<f32> = (0..n).map(|_| (r.random_range(0..256u32) as f32) / 32.0 - 4.0).collect();
        check(&scores, &labels_at(&mut r, n, 0.01), "tied256");
        // all tied
        let scores = vec![0.25f32; n];
        check(&scores, &labels_at(&mut r, n, 0.01), "all tied");
        // a single positive among continuous negatives, at, below, above
        let mut scores: Vec<f32> = (0..n).map(|_| r.random::<f32>() * 2.0 - 1.0).collect();
        let mut labels = vec![0u8; n];
        labels[n / 2] = 1;
        scores[n / 3] = scores[n / 2];
        check(&scores, &labels, "single positive");
        // no positive at all
        check(&scores, &vec![0u8; n], "no positive");
        // extremes (±inf-free), subnormals, signed zeros, neighbours of positives
        let ext = [
            f32::MIN,
            f32::MAX,
            -f32::MIN_POSITIVE,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            0.0,
            -0.0,
            1.0,
            f32::from_bits(1.0f32.to_bits() + 1),
            f32::from_bits(1.0f32.to_bits() - 1),
            -1.0,
            f32::MAX / 2.0,
            f32::MIN / 2.0,
        ];
        let scores: Vec<f32> = (0..n).map(|_| ext[r.random_range(0..ext.len())]).collect();
        check(&scores, &labels_at(&mut r, n, 0.1), "extremes");
        // -0.0 positives, +0.0 negatives (and the reverse): one key
        let scores: Vec<f32> = (0..1000).map(|i| if i % 2 == 0 { -0.0 } else { 0.0 }).collect();
        let labels: Vec<u8> = (0..1000).map(|i| (i % 4 == 0) as u8).collect();
        check(&scores, &labels, "signed zeros");
        let c = counts_of(&scores, &labels);
        assert_eq!((c.thresholds.len(), c.fp[0]), (1, 750));
    }

    #[test]
    fn fast_rank_partitioned_and_dense_buckets() {
        // enough distinct positives to partition (> PARTITION_ABOVE), packed
        // into a few first-level buckets (second-level tables)
        let mut r = rng(3);
        let n = 1 << 20;
        let scores: Vec<f32> = (0..n).map(|_| 1.0 + r.random::<f32>() * 0.05).collect();
        let labels = labels_at(&mut r, n, 0.1);
        check(&scores, &labels, "dense, partitioned");
    }

    #[test]
    fn table_exact_under_any_budget() {
        let mut r = rng(4);
        let mut keys: Vec<u32> = (0..20_000)
            .map(|i| match i % 3 {
                0 => key(1.0 + r.random::<f32>() * 1e-3),
                1 => key(r.random::<f32>() * 10.0 - 5.0),
                _ => r.random::<u32>(),
            })
            .collect();
        keys.extend([0, 1, u32::MAX, u32::MAX - 1, 0x8000_0000, 0x7fff_ffff]);
        keys.sort_unstable();
        keys.dedup();
        let reference = |x: u32| {
            let i = keys.partition_point(|&k| k < x);
            (2 * i + (i < keys.len() && keys[i] == x) as usize) as u32
        };
        for budget in [0usize, 100, 5000, L2_BUDGET] {
            let t = RankTable::with_budget(&keys, budget);
            assert!(t.bounds.len() <= budget + (1 << 16) + 1, "budget {budget}: {}", t.bounds.len());
            for &k in &keys {
                for q in [k.wrapping_sub(1), k, k.wrapping_add(1)] {
                    assert_eq!(t.slot(q), reference(q), "budget {budget} key {q:#x}");
                }
            }
            for _ in 0..50_000 {
                let q = r.random::<u32>();
                assert_eq!(t.slot(q), reference(q), "budget {budget} key {q:#x}");
            }
        }
        // no keys at all: every negative in slot 0
        let t = RankTable::new(&[]);
        assert_eq!((t.slot(12345), t.slot(0), t.slot(u32::MAX)), (0, 0, 0));
    }

    #[test]
    fn fast_rank_same_counts_on_any_thread_count() {
        let mut r = rng(5);
        let n = 3 << 20;
        let scores: Vec<f32> = (0..n).map(|_| (r.random::<f64>() * 6.0 - 3.0) as f32).collect();
        let labels = labels_at(&mut r, n, 0.01);
        let mut pc = PositiveCollector::new();
        pc.add(&scores, &labels, None);
        let r0 = pc.finish();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut a = r0.clone();
                a.add(&scores, &labels);
                a.tally()
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(5));
        let mut reference = r0.clone();
        reference.add_reference(&scores, &labels);
        assert_eq!(one, reference.tally());
    }
}
