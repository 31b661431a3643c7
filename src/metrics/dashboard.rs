//! Per-image records of a split for drift sensitivity: the seed's dashboard
//! rule ("when any of those drift more than 2σ from baseline") and the
//! paired intervals of a drifted split's changes.
//!
//! Why per image: σ of a statistic of normal pixels (mean, p95, reject
//! rate, KL/MMD to the reference) must come from resampling *images*, the
//! unit that is drawn from production (pixels of one image are correlated,
//! so a pixel-level σ would be far too small). Each image's record holds
//! what its statistics need — normal-pixel count and f64 sum, the counts at
//! the deployed thresholds, its image score, and (baseline only) a sparse
//! histogram of its normal scores on the 16-bit score-key grid of
//! `metrics::drift`, delta-coded ([`SparseHist`]) — so every resample's value follows without the score
//! maps, at any split size and sharded (records concatenate in image order).
//!
//! Memory: per image and method, 8 · 2 bytes per threshold plus, where
//! histograms are kept (the clean `test` split), 2–4 bytes per distinct
//! 16-bit score bucket among its normal pixels (at most 65 536; typically a
//! few hundred to a few thousand).
//!
//! Resamples: replicate r draws n images with replacement from
//! `bootstrap::draws(seed, r, n)` — the draws of the metric bootstrap, so
//! every method and both splits of a pair see the same images (paired by
//! image id: a drifted split has exactly test's image ids, in the same
//! order). σ = the standard deviation (ddof = 1) of the defined replicates.

use super::drift::{DriftStats, NormalStats, kl, mmd2};
use crate::simd::multiversion;
use super::unkey;
use crate::data::label;
use serde::{Deserialize, Serialize};

/// One image's record for one method.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageRec {
    pub normals: u64,
    pub anomalies: u64,
    /// f64 sum of the normal pixels' scores.
    pub sum: f64,
    /// Per deployed pixel threshold t: (normal pixels with score ≥ t,
    /// anomalous pixels with score < t).
    pub at: Vec<(u64, u64)>,
    /// Image score and whether the image has an anomaly pixel; `None` when
    /// the image is entirely void.
    pub image: Option<(f32, bool)>,
    /// Sparse histogram of normal scores: (top 16 key bits, count), sorted.
    pub hist: SparseHist,
}

/// A sparse histogram on the 16-bit score-key grid, delta-coded for
/// keeping: per non-empty bucket, in ascending order, two unsigned LEB128
/// numbers — the bucket's distance from the previous one (from 0 for the
/// first) and its count. Why: one is kept per test image and method until
/// the drift intervals are resampled, and as `(u16, u32)` pairs (8 bytes
/// with padding) they were the largest per-image record of a sweep (≈ 63 KB
/// per 512² image over five methods, 19 MB at 300 images); coded they take
/// 2–4 bytes per bucket, and [`iter`](Self::iter) gives back the same pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseHist {
    bytes: Vec<u8>,
}

impl SparseHist {
    /// `hist` must be sorted by bucket, each bucket once.
    pub fn pack(hist: &[(u16, u32)]) -> SparseHist {
        debug_assert!(hist.windows(2).all(|w| w[0].0 < w[1].0), "buckets must be distinct and ascending");
        let mut bytes = Vec::with_capacity(hist.len() * 3);
        let mut prev = 0u16;
        for &(b, c) in hist {
            leb128::write::unsigned(&mut bytes, (b - prev) as u64).expect("writing to memory");
            leb128::write::unsigned(&mut bytes, c as u64).expect("writing to memory");
            prev = b;
        }
        bytes.shrink_to_fit();
        SparseHist { bytes }
    }

    /// The (bucket, count) pairs, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        let mut r: &[u8] = &self.bytes;
        let mut b = 0u16;
        std::iter::from_fn(move || {
            if r.is_empty() {
                return None;
            }
            // written by `pack` and never changed
            let d = leb128::read::unsigned(&mut r).expect("SparseHist holds what pack wrote");
            let c = leb128::read::unsigned(&mut r).expect("SparseHist holds what pack wrote");
            b += d as u16;
            Some((b, c as u32))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes held.
    pub fn packed_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}

/// Pass-1 accumulator of [`ImageRec`]s for one method.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageStats {
    pub thresholds: Vec<f32>,
    /// Keep per-image histograms (the baseline split's σ of p95, KL, MMD).
    pub keep_hist: bool,
    pub images: Vec<ImageRec>,
    /// Dense histogram scratch of [`ImageStats::add`] (all zero between calls).
    #[serde(skip)]
    scratch: Vec<u32>,
}

impl ImageStats {
    pub fn new(thresholds: Vec<f32>, keep_hist: bool) -> Self {
        ImageStats { thresholds, keep_hist, images: vec![], scratch: vec![] }
    }

    /// One image's scores, with its image score (`None`: all void).
    ///
    /// The histogram is counted in a dense 2^16-bucket scratch table
    /// (256 KiB, reused across images) and read back sparse: a per-pixel
    /// ordered-map insert cost a third of a sweep's time.
    pub fn add(&mut self, scores: &[f32], labels: &[u8], image: Option<f32>) {
        self.add_with(scores, labels, image, None);
    }

    /// [`add`](Self::add), returning the image's [`PixelCounts`] (at these
    /// thresholds) and, with `normal` and kept histograms, counting the
    /// image into the split's [`NormalStats`] from the same walk. Why: the
    /// probe `ThresholdCounter`, the drift histogram and this record count
    /// the same pixels at the same thresholds on the same grid; one
    /// scatter and one lane walk replace four walks. Without kept
    /// histograms `normal` is counted by its own walk (same state).
    pub fn add_with(&mut self, scores: &[f32], labels: &[u8], image: Option<f32>, normal: Option<&mut NormalStats>) -> PixelCounts {
        let n = scores.len().min(labels.len());
        let (scores, labels) = (&scores[..n], &labels[..n]);
        let c = pixel_counts(scores, labels, &self.thresholds);
        let mut r = ImageRec { normals: c.normals, anomalies: c.anomalies, sum: c.sum, ..Default::default() };
        r.at = c.rejected.iter().zip(&c.accepted).map(|(&a, &b)| (a, b)).collect();
        r.image = image.map(|s| (s, r.anomalies > 0));
        if self.keep_hist {
            self.scratch.resize(super::keyhist::COARSE, 0);
            let t = super::keyhist::table(&mut self.scratch);
            super::keyhist::scatter_normals(scores, labels, |b| t[b] += 1);
            let hist: Vec<(u16, u32)> = self
                .scratch
                .iter_mut()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(b, n)| (b as u16, std::mem::take(n)))
                .collect();
            if let Some(ns) = normal {
                ns.add_counted(&hist, c.seq_sum);
            }
            r.hist = SparseHist::pack(&hist);
        } else if let Some(ns) = normal {
            ns.add_summed(scores, labels, c.seq_sum);
        }
        self.images.push(r);
        c
    }

    /// Fold in the records of the images that follow (shard merge).
    pub fn absorb(&mut self, o: ImageStats) -> anyhow::Result<()> {
        anyhow::ensure!(o.thresholds == self.thresholds && o.keep_hist == self.keep_hist, "merging per-image drift records of different thresholds");
        self.images.extend(o.images);
        Ok(())
    }
}

/// One image's pixel counts at a list of thresholds (`score ≥ t` rejects;
/// void pixels count nowhere), from [`pixel_counts`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PixelCounts {
    pub normals: u64,
    /// Non-normal, non-void pixels.
    pub anomalies: u64,
    /// f64 sum of the normal scores in 16 lanes (lane j: pixels ≡ j mod 16,
    /// in order; then the lanes in order): [`ImageRec::sum`]'s bytes.
    pub sum: f64,
    /// Per threshold: normals with score ≥ t (the probe counter's fp).
    pub rejected: Vec<u64>,
    /// Per threshold: anomalies with score < t.
    pub accepted: Vec<u64>,
    /// Per threshold: anomalies with score ≥ t (the probe counter's tp).
    /// Counted, not derived as `anomalies − accepted`: a NaN score is
    /// neither, exactly as the scalar comparisons say.
    pub caught: Vec<u64>,
    /// The normal scores' f64 sum in pixel order, one add after another
    /// (`NormalStats`' bytes), bit for bit; computed per block from lane
    /// sums where `keyhist::append_exactly` proves that equal, else by
    /// the add chain over that block.
    pub seq_sum: f64,
}

/// Pixels per block of [`pixel_counts`]: a multiple of the lane width
/// (so chunks fall where one unblocked walk puts them and the lane sum
/// keeps its order), 20 KiB of scores and labels that stay in L1 while
/// every threshold walks them, and few enough pixels per lane (256) that
/// the u32 lane counters, flushed to u64 per block, can never overflow.
const BLOCK: usize = 4096;

multiversion! {
    /// [`PixelCounts`] of one image at `thresholds`: per block, one lane
    /// walk for the class counts and the sum, then one per threshold with
    /// its three counters in registers (branch-free `&`, so it vectorises).
    pub fn pixel_counts(scores: &[f32], labels: &[u8], thresholds: &[f32]) -> PixelCounts {
        const L: usize = super::LANES;
        let k = thresholds.len();
        let n = scores.len().min(labels.len());
        let mut c = PixelCounts { rejected: vec![0; k], accepted: vec![0; k], caught: vec![0; k], ..Default::default() };
        let mut sum = [0f64; L];
        let fold = |v: &[u32; L]| v.iter().map(|&x| x as u64).sum::<u64>();
        for (s, l) in scores[..n].chunks(BLOCK).zip(labels[..n].chunks(BLOCK)) {
            let (mut normals, mut anomalies) = ([0u32; L], [0u32; L]);
            let mut blk = BlockSum::default();
            super::for_lanes(s, l, |s, l| {
                for j in 0..L {
                    let normal = l[j] == label::NORMAL;
                    normals[j] += normal as u32;
                    anomalies[j] += ((l[j] != label::NORMAL) & (l[j] != label::VOID)) as u32;
                    sum[j] += if normal { s[j] } else { 0.0 } as f64;
                }
                blk.lanes(s, l);
            });
            blk.append(&mut c.seq_sum, s, l);
            c.normals += fold(&normals);
            c.anomalies += fold(&anomalies);
            for (i, &t) in thresholds.iter().enumerate() {
                let (mut rejected, mut accepted, mut caught) = ([0u32; L], [0u32; L], [0u32; L]);
                super::for_lanes(s, l, |s, l| {
                    for j in 0..L {
                        let normal = l[j] == label::NORMAL;
                        let anomaly = (l[j] != label::NORMAL) & (l[j] != label::VOID);
                        rejected[j] += (normal & (s[j] >= t)) as u32;
                        accepted[j] += (anomaly & (s[j] < t)) as u32;
                        caught[j] += (anomaly & (s[j] >= t)) as u32;
                    }
                });
                c.rejected[i] += fold(&rejected);
                c.accepted[i] += fold(&accepted);
                c.caught[i] += fold(&caught);
            }
        }
        c.sum = sum.iter().sum();
        c
    }
}

multiversion! {
    /// The normal scores' f64 sum in pixel order (one add after another),
    /// bit for bit, without walking the add chain where
    /// `keyhist::append_exactly` proves a block's lane sum equal: the
    /// drift statistics' sum (`NormalStats`), whose 4-cycle-per-pixel chain
    /// was most of their pass-1 walk.
    pub fn normal_sum(scores: &[f32], labels: &[u8]) -> f64 {
        let n = scores.len().min(labels.len());
        let mut p = 0.0;
        for (s, l) in scores[..n].chunks(BLOCK).zip(labels[..n].chunks(BLOCK)) {
            let mut blk = BlockSum::default();
            super::for_lanes(s, l, |s, l| blk.lanes(s, l));
            blk.append(&mut p, s, l);
        }
        p
    }
}

/// One block's normal scores in lanes: sum, Σ|x| and the least exponent
/// of the non-zero ones (see `keyhist::append_exactly`).
struct BlockSum {
    sum: [f64; super::LANES],
    abs: [f64; super::LANES],
    min_exp: [u32; super::LANES],
}

impl Default for BlockSum {
    fn default() -> Self {
        BlockSum { sum: [0.0; super::LANES], abs: [0.0; super::LANES], min_exp: [u32::MAX; super::LANES] }
    }
}

impl BlockSum {
    /// One 16-pixel chunk (branch-free: vectorises; void padding adds 0).
    #[inline(always)]
    fn lanes(&mut self, s: &[f32; super::LANES], l: &[u8; super::LANES]) {
        for j in 0..super::LANES {
            let normal = l[j] == label::NORMAL;
            let x = if normal { s[j] } else { 0.0 };
            self.sum[j] += x as f64;
            self.abs[j] += x.abs() as f64;
            let b = x.to_bits();
            let e = ((b >> 23) & 0xff).max(1);
            self.min_exp[j] = self.min_exp[j].min(if b & 0x7fff_ffff != 0 { e } else { u32::MAX });
        }
    }

    /// Add the block (scores `s`, labels `l`) to the pixel-order sum `p`:
    /// its lane sum when that provably equals the add chain, else the chain.
    #[inline(always)]
    fn append(&self, p: &mut f64, s: &[f32], l: &[u8]) {
        let abs = self.abs.iter().fold(0.0, |a, &b| a + b);
        let min_exp = self.min_exp.iter().copied().min().unwrap_or(u32::MAX);
        if super::keyhist::append_exactly(*p, min_exp, abs) {
            *p += self.sum.iter().fold(0.0, |a, &b| a + b);
        } else {
            for (&x, &l) in s.iter().zip(l) {
                if l == label::NORMAL {
                    *p += x as f64;
                }
            }
        }
    }
}

/// The seed's rule: a statistic has drifted when it moved more than 2σ from
/// the baseline; a divergence (`kl`, `mmd2`) only upwards, since one below
/// the chance level of the baseline's own resamples is no drift. `None`
/// when the change or σ is undefined.
pub fn flagged(statistic: &str, delta: Option<f64>, sigma: Option<f64>) -> Option<bool> {
    let (d, s) = (delta?, sigma?);
    Some(if matches!(statistic, "kl" | "mmd2") { d > 2.0 * s } else { d.abs() > 2.0 * s })
}

/// The image draws of `samples` replicates over `n` images.
pub fn replicate_draws(seed: u64, samples: u32, n: usize) -> Vec<Vec<usize>> {
    (0..samples).map(|r| super::bootstrap::draws(seed, r, n)).collect()
}

/// Sample standard deviation (ddof = 1) of the defined values; `None`
/// below two.
pub fn sigma(v: &[Option<f64>]) -> Option<f64> {
    let x: Vec<f64> = v.iter().flatten().copied().collect();
    if x.len() < 2 {
        return None;
    }
    let m = x.iter().sum::<f64>() / x.len() as f64;
    Some((x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt())
}

/// Mean of the defined values.
pub fn mean(v: &[Option<f64>]) -> Option<f64> {
    let x: Vec<f64> = v.iter().flatten().copied().collect();
    (!x.is_empty()).then(|| x.iter().sum::<f64>() / x.len() as f64)
}

/// 95 % percentile interval (numpy's linear rule) of the defined values.
pub fn interval(v: &[Option<f64>]) -> Option<[f64; 2]> {
    let mut x: Vec<f64> = v.iter().flatten().copied().collect();
    x.sort_by(|a, b| a.total_cmp(b));
    Some([super::np_percentile(&x, 0.025)?, super::np_percentile(&x, 0.975)?])
}

/// A ratio statistic Σ num / Σ den of one image draw.
pub fn ratio(recs: &[ImageRec], draw: &[usize], f: impl Fn(&ImageRec) -> (f64, f64)) -> Option<f64> {
    let (mut a, mut b) = (0.0, 0.0);
    for &i in draw {
        let (x, y) = f(&recs[i]);
        a += x;
        b += y;
    }
    (b > 0.0).then(|| a / b)
}

/// Per-image numerator / denominator of a statistic, as [`ratio`] sums.
pub type RatioFn = fn(&ImageRec, usize) -> (f64, f64);

/// Mean normal-pixel score.
pub fn pixel_mean(r: &ImageRec, _: usize) -> (f64, f64) {
    (r.sum, r.normals as f64)
}
/// Pixel FRR at threshold `k`: good pixels rejected.
pub fn pixel_frr(r: &ImageRec, k: usize) -> (f64, f64) {
    r.at.get(k).map_or((0.0, 0.0), |a| (a.0 as f64, r.normals as f64))
}
/// Pixel FAR at threshold `k`: defect pixels accepted.
pub fn pixel_far(r: &ImageRec, k: usize) -> (f64, f64) {
    r.at.get(k).map_or((0.0, 0.0), |a| (a.1 as f64, r.anomalies as f64))
}

/// Image FRR / FAR at an image threshold `t` (`score ≥ t` rejects).
pub fn image_rate(r: &ImageRec, t: f32, frr: bool) -> (f64, f64) {
    match r.image {
        Some((s, anom)) if anom != frr => ((if frr { s >= t } else { s < t }) as u8 as f64, 1.0),
        _ => (0.0, 0.0),
    }
}

/// Normal images' image scores of a draw, sorted.
pub fn normal_image_scores(recs: &[ImageRec], draw: &[usize]) -> Vec<f64> {
    let mut v: Vec<f64> = draw.iter().filter_map(|&i| recs[i].image).filter(|x| !x.1).map(|x| x.0 as f64).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// The pooled normal-score histogram of a draw, as [`DriftStats`] (mean
/// and quantiles at bucket resolution: bucket centres).
pub fn drawn_stats(recs: &[ImageRec], draw: &[usize]) -> DriftStats {
    let mut dense = vec![0u64; super::keyhist::COARSE];
    let (mut n, mut sum) = (0u64, 0.0);
    for &i in draw {
        for (b, c) in recs[i].hist.iter() {
            dense[b as usize] += c as u64;
        }
        n += recs[i].normals;
        sum += recs[i].sum;
    }
    let hist: Vec<(u16, u64)> = dense.iter().enumerate().filter(|p| *p.1 > 0).map(|(b, &c)| (b as u16, c)).collect();
    let p95 = bucket_quantile(&hist, n, 0.95);
    DriftStats { hist, mean: (n > 0).then(|| sum / n as f64), n, quantiles: p95.map(|v| vec![(0.95, v)]).unwrap_or_default() }
}

/// Quantile `q` (numpy's linear rank) at bucket resolution: the centre of
/// the bucket holding rank ⌊(n − 1) q⌉.
fn bucket_quantile(hist: &[(u16, u64)], n: u64, q: f64) -> Option<f64> {
    if n == 0 {
        return None;
    }
    let k = ((n - 1) as f64 * q).round() as u64;
    let mut acc = 0;
    for &(b, c) in hist {
        acc += c;
        if acc > k {
            return Some(unkey(((b as u32) << 16) | 0x8000) as f64);
        }
    }
    None
}

/// Resamples behind σ of KL and MMD² (the first of the draws): MMD² costs
/// ~10⁶ kernel evaluations per resample, and 50 resamples give σ to about
/// ±10 % (relative standard error 1/√(2·49)).
pub const DIVERGENCE_RESAMPLES: usize = 50;

/// σ of p95 and the resampled KL / MMD² to the whole baseline: per
/// replicate (p95, KL(draw ‖ baseline), MMD²(draw, baseline)); the
/// divergences only in the first [`DIVERGENCE_RESAMPLES`] replicates.
pub fn hist_replicates(recs: &[ImageRec], draws: &[Vec<usize>], base: &DriftStats) -> Vec<[Option<f64>; 3]> {
    use rayon::prelude::*;
    draws
        .par_iter()
        .enumerate()
        .map(|(r, d)| {
            let s = drawn_stats(recs, d);
            let div = r < DIVERGENCE_RESAMPLES;
            [s.quantile(0.95), if div { kl(&s, base) } else { None }, if div { mmd2(&s, base) } else { None }]
        })
        .collect()
}

/// Paired change (drifted − test) of each method's pixel AUROC, AUPR,
/// FPR95, best F1 and AUPRO (with regions) over image resamples: per method
/// the 95 % percentile intervals,
/// and the largest per-replicate error bound of the change (the sum of
/// the two splits' histogram bounds: see `metrics::bootstrap`).
/// Replicate r draws the same image ids from both splits (the metric
/// bootstrap's draws), so image difficulty cancels out of the change.
///
/// Why one function: both splits' per-image histograms (the histogram
/// bootstrap, any split size) are resampled on one draw
/// ([`super::bootstrap::replicate`]); callers see intervals and bounds only.
pub fn delta_interval(test: &super::bootstrap::HistBoot, drifted: &super::bootstrap::HistBoot, samples: u32, seed: u64) -> anyhow::Result<Vec<DeltaCi>> {
    use rayon::prelude::*;
    let n = test.hists.images.len();
    anyhow::ensure!(n == drifted.hists.images.len(), "internal error: paired splits of {n} and {} images", drifted.hists.images.len());
    let nm = test.grids.len();
    let draws = replicate_draws(seed, samples, n);
    use super::bootstrap::PX;
    type Pair = Option<([Option<f64>; PX], [Option<f64>; PX])>;
    let reps: Vec<Vec<Pair>> = draws
        .par_iter()
        .map(|d| {
            let (a, b) = (super::bootstrap::replicate(test, d), super::bootstrap::replicate(drifted, d));
            a.iter()
                .zip(&b)
                .map(|(x, y)| {
                    let (px, py) = (x.px?, y.px?);
                    let change = std::array::from_fn(|k| Some(py[k]? - px[k]?));
                    let bound = std::array::from_fn(|k| Some(x.bound[k]? + y.bound[k]?));
                    Some((change, bound))
                })
                .collect()
        })
        .collect();
    Ok((0..nm)
        .map(|m| {
            let col = |k: usize| interval(&reps.iter().map(|r| r[m].and_then(|x| x.0[k])).collect::<Vec<_>>());
            let bound = |k: usize| reps.iter().filter_map(|r| r[m].and_then(|x| x.1[k])).fold(None, |acc: Option<f64>, v| Some(acc.map_or(v, |a| a.max(v))));
            DeltaCi { interval: std::array::from_fn(col), bound: std::array::from_fn(bound) }
        })
        .collect())
}

/// One method's [`delta_interval`]: per pixel metric (AUROC, AUPR, FPR95,
/// best F1, AUPRO: `bootstrap::PX` order) the change's interval and its
/// error bound (None: undefined, no regions, or no bound for that
/// FPR95/AUPR rule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeltaCi {
    pub interval: [Option<[f64; 2]>; super::bootstrap::PX],
    pub bound: [Option<f64>; super::bootstrap::PX],
}

/// Image AUROC and average precision of a draw's image scores (exact).
pub fn image_metrics(recs: &[ImageRec], draw: &[usize]) -> [Option<f64>; 2] {
    let (s, l): (Vec<f32>, Vec<u8>) = draw.iter().filter_map(|&i| recs[i].image).map(|(s, a)| (s, a as u8)).unzip();
    let c = super::counts_of(&s, &l);
    [c.auroc(), c.average_precision()]
}

/// The paired interval of `f(drifted) − f(test)` over `draws`.
pub fn paired(draws: &[Vec<usize>], f: impl Fn(&[usize]) -> (Option<f64>, Option<f64>)) -> Option<[f64; 2]> {
    let v: Vec<Option<f64>> = draws
        .iter()
        .map(|d| {
            let (a, b) = f(d);
            Some(b? - a?)
        })
        .collect();
    interval(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_count_each_image_and_threshold() {
        let mut st = ImageStats::new(vec![0.5, 2.0], true);
        st.add(&[0.1, 0.6, 3.0, 0.4, 9.0], &[0, 0, 0, 1, 255], Some(3.0));
        st.add(&[1.0, 1.0], &[255, 255], None);
        let r = &st.images[0];
        assert_eq!((r.normals, r.anomalies, r.sum), (3, 1, 0.1f32 as f64 + 0.6f32 as f64 + 3.0));
        assert_eq!(r.at, vec![(2, 1), (1, 1)]);
        assert_eq!(r.image, Some((3.0, true)));
        assert_eq!(r.hist.iter().map(|x| x.1).sum::<u32>(), 3);
        assert_eq!(st.images[1].image, None);
        // a draw of image 0 twice: same ratios as once
        assert_eq!(ratio(&st.images, &[0, 0], |r| pixel_frr(r, 0)), Some(2.0 / 3.0));
        assert_eq!(ratio(&st.images, &[1], |r| pixel_frr(r, 0)), None);
    }

    /// The coded histogram gives back its pairs exactly: empty, bucket 0,
    /// the last bucket, adjacent and far-apart buckets, counts past 2^16
    /// and up to u32::MAX, the dense 2^16-bucket extreme.
    #[test]
    fn sparse_histograms_round_trip() {
        let cases: Vec<Vec<(u16, u32)>> = vec![
            vec![],
            vec![(0, 1)],
            vec![(u16::MAX, u32::MAX)],
            vec![(0, 7), (1, 70_000), (2, 1), (40_000, 3), (u16::MAX, 1 << 31)],
            (0..=u16::MAX).map(|b| (b, b as u32 * 65_537 + 1)).collect(),
        ];
        for h in cases {
            let p = SparseHist::pack(&h);
            assert_eq!(p.iter().collect::<Vec<_>>(), h);
            assert_eq!(p.is_empty(), h.is_empty());
        }
        // a typical image's few thousand small counts: 2 bytes a bucket
        // (the first distance, 20 000 from 0, takes 3)
        let h: Vec<(u16, u32)> = (0..3000u16).map(|i| (20_000 + 3 * i, 1 + (i as u32 * 37) % 120)).collect();
        assert!(SparseHist::pack(&h).packed_bytes() <= 2 * h.len() + 2, "{}", SparseHist::pack(&h).packed_bytes());
    }

    /// Full 16-pixel chunks and a void-padded tail count exactly what a
    /// plain per-pixel loop counts (the sum to rounding: its lane order).
    #[test]
    fn lane_counts_equal_a_plain_loop() {
        for n in [15usize, 16, 37, 64] {
            let s: Vec<f32> = (0..n).map(|i| ((i * 7919) % 23) as f32 / 4.0 - 2.0).collect();
            let l: Vec<u8> = (0..n).map(|i| [0u8, 0, 1, 255, 0, 2][i % 6]).collect();
            let t = [-1.0f32, 0.25, 3.0];
            let mut st = ImageStats::new(t.to_vec(), true);
            st.add(&s, &l, None);
            let r = &st.images[0];
            let px = || s.iter().zip(&l);
            assert_eq!(r.normals, px().filter(|p| *p.1 == 0).count() as u64, "n {n}");
            assert_eq!(r.anomalies, px().filter(|p| label::is_anomaly(*p.1)).count() as u64);
            let want: f64 = px().filter(|p| *p.1 == 0).map(|p| *p.0 as f64).sum();
            assert!((r.sum - want).abs() <= 1e-12 * want.abs().max(1.0), "{} vs {want}", r.sum);
            for (k, &th) in t.iter().enumerate() {
                let rejected = px().filter(|p| *p.1 == 0 && *p.0 >= th).count() as u64;
                let accepted = px().filter(|p| label::is_anomaly(*p.1) && *p.0 < th).count() as u64;
                assert_eq!(r.at[k], (rejected, accepted), "n {n} t {th}");
            }
            assert_eq!(r.hist.iter().map(|x| x.1 as u64).sum::<u64>(), r.normals);
        }
    }

    /// `pixel_counts` against plain per-pixel loops: ties (scores equal to
    /// thresholds), ±0.0 scores and thresholds, NaN scores, void, all-void
    /// images and lengths around the lane and block widths; and the probe
    /// counter fed by `add_counts` equals one fed by `add`.
    #[test]
    fn pixel_counts_equal_plain_loops() {
        let mut next = crate::metrics::xorshift(5);
        let th = vec![-0.0f32, 0.0, 0.5, 1.0, 2.0, f32::NAN];
        for n in [0usize, 1, 15, 16, 17, 4095, 4096, 4097, 10_000] {
            for void_only in [false, true] {
                let s: Vec<f32> = (0..n).map(|_| [0.0f32, -0.0, 0.5, 1.0, 2.0, 0.25, 3.0, f32::NAN, -1.0][(next() % 9) as usize]).collect();
                let l: Vec<u8> = (0..n).map(|_| if void_only { 255 } else { [0u8, 0, 1, 3, 255][(next() % 5) as usize] }).collect();
                let c = pixel_counts(&s, &l, &th);
                let px = || s.iter().zip(&l);
                assert_eq!(c.normals, px().filter(|p| *p.1 == 0).count() as u64);
                assert_eq!(c.anomalies, px().filter(|p| label::is_anomaly(*p.1)).count() as u64);
                for (k, &t) in th.iter().enumerate() {
                    assert_eq!(c.rejected[k], px().filter(|p| *p.1 == 0 && *p.0 >= t).count() as u64, "n {n} t {t}");
                    assert_eq!(c.accepted[k], px().filter(|p| label::is_anomaly(*p.1) && *p.0 < t).count() as u64);
                    assert_eq!(c.caught[k], px().filter(|p| label::is_anomaly(*p.1) && *p.0 >= t).count() as u64);
                }
                // the 16-lane sum of the per-image record (its old order)
                let mut lanes = [0f64; 16];
                for (i, p) in px().enumerate() {
                    lanes[i % 16] += if *p.1 == 0 { *p.0 } else { 0.0 } as f64;
                }
                assert_eq!(c.sum.to_bits(), lanes.iter().sum::<f64>().to_bits());
                let (mut a, mut b) = (crate::metrics::ThresholdCounter::new(th.clone()), crate::metrics::ThresholdCounter::new(th.clone()));
                a.add(&s, &l);
                assert!(b.add_counts(&th, &c.caught, &c.rejected, c.anomalies, c.normals));
                for k in 0..th.len() {
                    assert_eq!(format!("{:?}", a.point(k)), format!("{:?}", b.point(k)));
                }
                assert!(!b.add_counts(&th[..2], &c.caught[..2], &c.rejected[..2], 0, 0));
            }
        }
    }

    #[test]
    fn sigma_and_interval_follow_numpy() {
        let v = [Some(1.0), Some(2.0), None, Some(4.0)];
        // np.std([1, 2, 4], ddof=1)
        assert!((sigma(&v).unwrap() - 1.527_525_231_651_946_6).abs() < 1e-15);
        assert_eq!(sigma(&[Some(1.0)]), None);
        // np.percentile([1, 2, 4], [2.5, 97.5])
        let [lo, hi] = interval(&v).unwrap();
        assert!((lo - 1.05).abs() < 1e-12 && (hi - 3.9).abs() < 1e-12, "{lo} {hi}");
    }
}
