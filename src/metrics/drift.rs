//! Normal-pixel score statistics and distribution divergences (drift).
//!
//! Why: the honest report tracks how scores on *good* pixels move between
//! splits and between runs (seed 000: "mean and 95th percentile anomaly
//! score on good parts", "KL or MMD between this week and the reference").
//!
//! Exact in bounded memory, in the same two passes as the metrics: pass 1
//! builds a histogram over the top 16 bits of the order-preserving score key
//! (65 536 buckets, each a ~0.8 % relative score range) and the f64 sum;
//! pass 2 refines only the buckets that hold the requested order statistics
//! to full 32-bit resolution, so percentiles are exact (numpy's default
//! `linear` rule). The coarse histogram is kept (sparse) as the run's
//! fingerprint: two runs or splits share its bucket grid, so KL and MMD need
//! no common binning decided in advance.

use super::keyhist::{COARSE, KeyHist};
use super::{np_lerp as lerp, unkey};
use serde::{Deserialize, Serialize};


/// Quantiles reported for normal pixels.
pub const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// Pass 1 over normal pixels.
///
/// The f64 sum is kept per [`add`](Self::add) call (per image) and folded
/// in order at the end, so accumulators of consecutive image ranges merge
/// ([`absorb`](Self::absorb)) to exactly the single-pass value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NormalStats {
    hist: KeyHist,
    sums: Vec<f64>,
}

/// Summary of one split's normal-pixel scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftStats {
    // Fields in name order: drift.json lists them so.
    /// Sparse coarse histogram: (bucket = top 16 key bits, count).
    pub hist: Vec<(u16, u64)>,
    pub mean: Option<f64>,
    pub n: u64,
    /// (q, value) for [`QUANTILES`].
    pub quantiles: Vec<(f64, f64)>,
}

impl DriftStats {
    /// The reported value of quantile `q` (one of [`QUANTILES`]).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantiles.iter().find(|x| x.0 == q).map(|x| x.1)
    }
}

impl NormalStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, scores: &[f32], labels: &[u8]) {
        let sum = self.hist.add_normals(scores, labels);
        self.sums.push(sum);
    }

    /// [`add`](Self::add) that also counts the same pixels into `ranks`
    /// (the `far_at_frr` histogram of the split: the same grid), in one walk.
    pub fn add_with(&mut self, ranks: &mut KeyHist, scores: &[f32], labels: &[u8]) {
        let sum = self.hist.add_normals_both(ranks, scores, labels);
        self.sums.push(sum);
    }

    /// [`add`](Self::add) with the image's pixel-order sum already known
    /// (`PixelCounts::seq_sum`): the walk only scatters.
    pub fn add_summed(&mut self, scores: &[f32], labels: &[u8], sum: f64) {
        self.hist.add_normals_unsummed(scores, labels);
        self.sums.push(sum);
    }

    /// One image already counted elsewhere (`ImageStats`' per-image
    /// histogram and `PixelCounts::seq_sum`):
    /// the same state as [`add`](Self::add) on its pixels.
    pub fn add_counted(&mut self, hist: &[(u16, u32)], sum: f64) {
        self.hist.add_sparse(hist);
        self.sums.push(sum);
    }

    /// The normal keys' coarse histogram (top 16 key bits), for the
    /// bootstrap grid.
    pub fn coarse(&self) -> &[u64] {
        &self.hist.coarse
    }

    /// Add the pixels another accumulator saw after this one's (shard merge).
    pub fn absorb(&mut self, o: NormalStats) {
        self.hist.absorb(&o.hist);
        self.sums.extend(o.sums);
    }

    fn sum(&self) -> f64 {
        self.sums.iter().fold(0.0, |a, b| a + b)
    }

    /// Start pass 2: refine the buckets holding the needed order statistics.
    pub fn refine(self) -> Refiner {
        let mut ranks = Vec::new();
        if self.hist.n > 0 {
            for q in QUANTILES {
                let pos = (self.hist.n - 1) as f64 * q;
                ranks.push(pos.floor() as u64);
                ranks.push(pos.ceil() as u64);
            }
        }
        let mut buckets: Vec<u32> = ranks.iter().map(|&k| self.hist.locate(k).0 as u32).collect();
        buckets.sort_unstable();
        buckets.dedup();
        let fine = buckets.iter().map(|_| vec![0u64; COARSE]).collect();
        Refiner { stats: self, buckets, fine }
    }
}

/// Pass 2: full-resolution counts inside the few buckets that matter.
#[derive(Debug, Clone)]
pub struct Refiner {
    stats: NormalStats,
    /// The refined coarse buckets, ascending (u32: the lanes of
    /// `keyhist::refine_lanes` compare them).
    buckets: Vec<u32>,
    fine: Vec<Vec<u64>>,
}

impl Refiner {
    /// The pass-2 counts, to be [`absorb`](Self::absorb)ed by a refiner
    /// built from the same pass-1 statistics (shard merge).
    pub fn tally(&self) -> Vec<Vec<u64>> {
        self.fine.clone()
    }

    pub fn absorb(&mut self, fine: &[Vec<u64>]) -> anyhow::Result<()> {
        anyhow::ensure!(fine.len() == self.fine.len(), "merging drift refinements of different buckets");
        for (a, b) in self.fine.iter_mut().zip(fine) {
            anyhow::ensure!(a.len() == b.len(), "merging drift refinements of different buckets");
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        Ok(())
    }

    pub fn add(&mut self, scores: &[f32], labels: &[u8]) {
        if self.buckets.is_empty() {
            return;
        }
        let n = scores.len().min(labels.len());
        super::keyhist::refine_lanes(&scores[..n], &labels[..n], &self.buckets, &mut self.fine, None);
    }

    /// The per-pixel loop [`add`](Self::add) replaces (its test oracle).
    #[cfg(test)]
    fn add_scalar(&mut self, scores: &[f32], labels: &[u8]) {
        for (&s, &l) in scores.iter().zip(labels) {
            if l == crate::data::label::NORMAL {
                let k = super::key(s);
                if let Ok(i) = self.buckets.binary_search(&(k >> 16)) {
                    self.fine[i][(k & 0xffff) as usize] += 1;
                }
            }
        }
    }

    fn order_stat(&self, k: u64) -> f64 {
        let (b, mut r) = self.stats.hist.locate(k);
        let i = self.buckets.binary_search(&(b as u32)).expect("bucket refined in pass 2");
        for (lo, &c) in self.fine[i].iter().enumerate() {
            if r < c {
                return unkey(((b as u32) << 16) | lo as u32) as f64;
            }
            r -= c;
        }
        unreachable!("pass 2 saw fewer pixels than pass 1")
    }

    pub fn finish(self) -> DriftStats {
        let s = &self.stats;
        let quantiles = if s.hist.n == 0 {
            vec![]
        } else {
            QUANTILES
                .iter()
                .map(|&q| {
                    let pos = (s.hist.n - 1) as f64 * q;
                    let (lo, hi) = (pos.floor() as u64, pos.ceil() as u64);
                    (q, lerp(self.order_stat(lo), self.order_stat(hi), pos - pos.floor()))
                })
                .collect()
        };
        DriftStats {
            n: s.hist.n,
            mean: (s.hist.n > 0).then(|| s.sum() / s.hist.n as f64),
            quantiles,
            hist: s.hist.coarse.iter().enumerate().filter(|p| *p.1 > 0).map(|(b, &c)| (b as u16, c)).collect(),
        }
    }
}


/// Value at the middle of a coarse bucket.
fn center(b: u16) -> f64 {
    unkey(((b as u32) << 16) | 0x8000) as f64
}

/// KL(p ‖ q) over the union of non-empty buckets, each count smoothed by
/// +0.5 (Jeffreys) so empty buckets do not make it infinite. Natural log.
pub fn kl(p: &DriftStats, q: &DriftStats) -> Option<f64> {
    if p.n == 0 || q.n == 0 {
        return None;
    }
    let mut buckets: Vec<u16> = p.hist.iter().chain(&q.hist).map(|x| x.0).collect();
    buckets.sort_unstable();
    buckets.dedup();
    let get = |h: &[(u16, u64)], b: u16| h.binary_search_by_key(&b, |x| x.0).map_or(0, |i| h[i].1) as f64;
    let nb = buckets.len() as f64;
    let (np_, nq) = (p.n as f64 + 0.5 * nb, q.n as f64 + 0.5 * nb);
    Some(
        buckets
            .iter()
            .map(|&b| {
                let pi = (get(&p.hist, b) + 0.5) / np_;
                let qi = (get(&q.hist, b) + 0.5) / nq;
                pi * (pi / qi).ln()
            })
            .sum(),
    )
}

/// Squared MMD (biased V-statistic) between the two binned distributions
/// with a Gaussian kernel `exp(-(x-y)²/(2σ²))`, σ = the pooled standard
/// deviation of both (bucket centres weighted by counts). Distributions are
/// first merged into at most 512 groups of adjacent buckets (weighted centres) to
/// bound the O(B²) cost.
pub fn mmd2(p: &DriftStats, q: &DriftStats) -> Option<f64> {
    if p.n == 0 || q.n == 0 {
        return None;
    }
    let pts = |h: &DriftStats| -> Vec<(f64, f64)> { h.hist.iter().map(|&(b, c)| (center(b), c as f64 / h.n as f64)).collect() };
    let (a, b) = (pts(p), pts(q));
    let all: Vec<&(f64, f64)> = a.iter().chain(&b).collect();
    let mean = all.iter().map(|x| x.0 * x.1).sum::<f64>() / 2.0;
    let var = all.iter().map(|x| (x.0 - mean).powi(2) * x.1).sum::<f64>() / 2.0;
    let s2 = if var > 0.0 { 2.0 * var } else { 1.0 };
    let shrink = |v: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        if v.len() <= 512 {
            return v;
        }
        let g = v.len().div_ceil(512);
        v.chunks(g)
            .map(|c| {
                let w: f64 = c.iter().map(|x| x.1).sum();
                (c.iter().map(|x| x.0 * x.1).sum::<f64>() / w, w)
            })
            .collect()
    };
    let (a, b) = (shrink(a), shrink(b));
    let k = |u: &[(f64, f64)], v: &[(f64, f64)]| -> f64 {
        u.iter().map(|x| v.iter().map(|y| x.1 * y.1 * (-(x.0 - y.0).powi(2) / s2).exp()).sum::<f64>()).sum()
    };
    Some((k(&a, &a) + k(&b, &b) - 2.0 * k(&a, &b)).max(0.0))
}

/// Both passes over in-memory data.
pub fn drift_of(scores: &[f32], labels: &[u8]) -> DriftStats {
    let mut s = NormalStats::new();
    s.add(scores, labels);
    let mut r = s.refine();
    r.add(scores, labels);
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy.percentile(x, 100q) with the default linear method.
    fn np_percentile(mut x: Vec<f64>, q: f64) -> f64 {
        x.sort_by(|a, b| a.partial_cmp(b).unwrap());
        crate::metrics::np_percentile(&x, q).unwrap()
    }

    #[test]
    fn exact_percentiles_and_mean() {
        let mut next = crate::metrics::xorshift(7);
        let scores: Vec<f32> = (0..20_001).map(|_| ((next() % 100_000) as f32 / 777.0) - 30.0).collect();
        let labels: Vec<u8> = (0..scores.len()).map(|i| if i % 13 == 0 { 1 } else if i % 17 == 0 { 255 } else { 0 }).collect();
        let d = drift_of(&scores, &labels);
        let normals: Vec<f64> = scores.iter().zip(&labels).filter(|p| *p.1 == 0).map(|p| *p.0 as f64).collect();
        assert_eq!(d.n, normals.len() as u64);
        for (q, v) in &d.quantiles {
            assert_eq!(*v, np_percentile(normals.clone(), *q), "q={q}");
        }
        let mean = normals.iter().sum::<f64>() / normals.len() as f64;
        assert!((d.mean.unwrap() - mean).abs() < 1e-9);
        assert_eq!(d.hist.iter().map(|x| x.1).sum::<u64>(), d.n);
    }

    /// The lane refiner counts what the per-pixel loop counts, and the
    /// drift statistics of a split counted through `ImageStats::add_with`
    /// (one walk, per-image histogram kept or not) equal `NormalStats::add`.
    #[test]
    fn fused_walks_equal_the_plain_ones() {
        let mut next = crate::metrics::xorshift(11);
        let images: Vec<(Vec<f32>, Vec<u8>)> = [0usize, 7, 16, 4097, 9001]
            .iter()
            .map(|&n| {
                let s = (0..n).map(|_| if next().is_multiple_of(50) { 1e-7 } else { (next() % 3000) as f32 / 300.0 - 2.0 }).collect();
                let l = (0..n).map(|_| [0u8, 0, 0, 2, 255][(next() % 5) as usize]).collect();
                (s, l)
            })
            .collect();
        let mut plain = NormalStats::new();
        for (s, l) in &images {
            plain.add(s, l);
        }
        for keep in [false, true] {
            let mut fused = NormalStats::new();
            let mut d = crate::metrics::dashboard::ImageStats::new(vec![0.5, 3.0], keep);
            for (s, l) in &images {
                d.add_with(s, l, None, Some(&mut fused));
            }
            assert_eq!(fused.coarse(), plain.coarse());
            assert_eq!(fused.sums.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), plain.sums.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
        let (mut a, mut b) = (plain.clone().refine(), plain.refine());
        for (s, l) in &images {
            a.add(s, l);
            b.add_scalar(s, l);
        }
        assert_eq!(a.tally(), b.tally());
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn divergences_are_zero_on_equal_and_grow_with_shift() {
        let a: Vec<f32> = (0..5000).map(|i| (i % 100) as f32 / 10.0).collect();
        let b: Vec<f32> = a.iter().map(|x| x + 1.0).collect();
        let c: Vec<f32> = a.iter().map(|x| x + 3.0).collect();
        let l = vec![0u8; a.len()];
        let (da, db, dc) = (drift_of(&a, &l), drift_of(&b, &l), drift_of(&c, &l));
        assert!(kl(&da, &da).unwrap().abs() < 1e-12);
        assert!(mmd2(&da, &da).unwrap().abs() < 1e-12);
        assert!(kl(&da, &db).unwrap() < kl(&da, &dc).unwrap());
        assert!(mmd2(&da, &db).unwrap() < mmd2(&da, &dc).unwrap());
        assert_eq!(kl(&da, &drift_of(&[], &[])), None);
    }
}
