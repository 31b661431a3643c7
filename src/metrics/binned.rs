//! SMIYC's binned pixel metric (`binning = "smiyc"`): an **approximation**
//! of the pixel curve, reimplemented from SegmentMeIfYouCan's
//! `road-anomaly-benchmark` (`PixBinaryClass`, 768 percentile bins) so that
//! its published AP / AUROC / FPR95 can be reproduced. bench's own metrics
//! stay exact; this path is labelled approximate wherever it is printed.
//!
//! Source (SegmentMeIfYouCan/road-anomaly-benchmark @ 1c7804e):
//! * `evaluation.py:65` — score maps are saved (and so evaluated) as float16;
//! * `metrics/pixel_classification.py:16-111` `binary_confusion_matrix`,
//!   `bin_strategy = 'percentiles'`, `num_bins = 768` (l. 133-137): per frame,
//!   over the non-void pixels (label < 255), the bin edges are
//!   `unique([vmin - eps, vmax + eps] ++ quantile(pos, linspace(0, 1, min(384, #pos)))
//!   ++ quantile(neg, linspace(0, 1, min(384, #neg))))`, with
//!   `eps = max((vmax - vmin) * 1e-2, 1e-2)`; `np.histogram` of each class
//!   over these edges gives per-bin counts whose threshold is the bin's
//!   lower edge;
//! * `pixel_classification.py:221-250` `aggregate_dynamic_bins`: the
//!   (threshold, tp, fp) entries of all frames are concatenated, ordered by
//!   `np.argsort(thresholds)[::-1]` and cumulated;
//! * `metrics/pixel_classification_curves.py:52-183` `curves_from_cmats`:
//!   keeps index 0, the last index of every run of equal thresholds and the
//!   last index; prepends (0, 0) / appends (P, N) when missing; precision = 1
//!   where nothing is predicted; AP = Σ Δrecall · precision[1:] (l. 161),
//!   AUROC = `np.trapz(tpr, fpr)` (l. 173), FPR95 = fpr at
//!   `searchsorted(tpr, 0.95)` (left), 1.0 when never reached (l. 124-131).
//!
//! * component threshold (`bench eval --regions --component-threshold smiyc`):
//!   `curves_from_cmats` picks `ix = np.nanargmax(2tp / (2tp + fp + fn))`
//!   over the thinned curve (with its end points) and returns
//!   `best_f1_threshold = float(thresholds[ix])` (l. 122, 136, 151), where
//!   the thresholds are thinned like the cmats (the fix of 1c7804e) and the
//!   prepended / appended end points get `max + 1` / `max - 1` (l. 88, 95);
//!   `MetricSegment.get_thresh_p_from_curve` (`metrics/instance_segmentation.py:362-374`)
//!   reads it back from the evaluated dataset's own saved `PixBinaryClass`
//!   curve (same method, same dataset: chosen on the evaluated split) and
//!   `default_instancer` (l. 20-32) binarises the float16 score map with
//!   `anomaly_p > thresh_p`, void pixels off. The threshold is an h5py
//!   attribute, a `numpy.float64` scalar: under numpy 2.x (NEP 50) the float16
//!   scores are compared in float64, which bench follows; numpy 1.x's
//!   value-based casting would compare in float16 instead.
//!
//! numpy behaviour followed (numpy 2.x, NEP 50 promotion; checked against
//! numpy 2.4.6 by `scripts/gen_smiyc_fixtures.py`):
//! * `vmin`, `vmax`, `eps`, `vmin - eps`, `vmax + eps` are float16 scalars:
//!   each operation is done in float32 and rounded to float16 (numpy's half
//!   loops), the Python `1e-2` being float16(0.01) (weak scalar);
//! * `np.quantile(float16 array, float64 q)` with the default `linear`
//!   method returns **float64**: `v = (n-1)·q`, neighbours `a`, `b` from
//!   the sorted float16 values, `d = b - a` rounded to **float16**, then in
//!   float64 `a + d·g` for `g < 0.5` and `b - d·(1-g)` otherwise
//!   (`_lerp`); `linspace(0, 1, k)` is `j·(1/(k-1))` with the last point 1.0;
//! * the edges are float64 (the float16 pair promoted), histogram bins are
//!   `[e_i, e_{i+1})`, the last one closed.
//!
//! One thing numpy does not pin down: `np.argsort`'s default sort is not
//! stable, and `curves_from_cmats` keeps index 0 even when it is inside a
//! run of equal thresholds. That happens only when several frames share the
//! highest threshold; then the first curve point holds one of those frames'
//! counts, whichever numpy's sort (hardware dependent) puts first. bench
//! follows `argsort(kind="stable")[::-1]`: the **last** such frame in eval
//! order, and reports the number of such frames (`top_frames`; `bench eval`
//! warns). On the saturated fixture the two orders differ by 0.004 AP and
//! 0.003 AUROC. Everything else is independent of the tie order.
//!
//! Memory: each frame gives at most 769 entries; entries with equal
//! thresholds are merged (their order does not matter, see above), so the
//! merged curve holds one entry per distinct threshold.

use anyhow::{Result, bail};
use half::f16;

/// `PixBinaryClass`'s `num_bins`.
pub const NUM_BINS: usize = 768;

#[inline]
fn h(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// `np.quantile(sorted, np.linspace(0, 1, k))` for float16 values (given as
/// f32), appended to `out` (float64, numpy 2.x; see the module doc).
fn quantiles(sorted: &[f32], k: usize, out: &mut Vec<f64>) {
    let n = sorted.len();
    let step = if k > 1 { 1.0 / (k - 1) as f64 } else { f64::NAN };
    for j in 0..k {
        let q = if k == 1 {
            0.0
        } else if j == k - 1 {
            1.0
        } else {
            j as f64 * step + 0.0
        };
        let v = (n - 1) as f64 * q;
        let (prev, next, g) = if v >= (n - 1) as f64 {
            // _get_indexes sets both to -1; gamma = v - (-1) ≥ 0.5
            (n - 1, n - 1, v + 1.0)
        } else {
            let p = v.floor();
            (p as usize, p as usize + 1, v - p)
        };
        let (a, b) = (sorted[prev], sorted[next]);
        let d = h(b - a) as f64;
        let r = if g >= 0.5 { b as f64 - d * (1.0 - g) } else { a as f64 + d * g };
        out.push(r);
    }
}

/// Per-bin counts of sorted values over sorted `edges`, as `np.histogram`.
fn histogram(sorted: &[f32], edges: &[f64], counts: &mut Vec<u64>) {
    let m = edges.len();
    let cum = |i: usize| -> usize {
        if i + 1 < m {
            sorted.partition_point(|&x| (x as f64) < edges[i])
        } else {
            sorted.partition_point(|&x| (x as f64) <= edges[i])
        }
    };
    counts.clear();
    let mut last = cum(0);
    for i in 1..m {
        let c = cum(i);
        counts.push((c - last) as u64);
        last = c;
    }
}

/// SMIYC's binned curve, one frame at a time. Serializable so that a
/// sharded `bench run` ships it (frames of a shard, in image order) and the
/// merge [`absorb`](Self::absorb)s the shards in order.
#[derive(Default, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BinnedCurve {
    /// (threshold, tp, fp); merged by threshold when it grows.
    entries: Vec<(f64, u64, u64)>,
    merged_len: usize,
    /// The first entry in the official descending order (see module doc).
    top: Option<(f64, u64, u64)>,
    pub positives: u64,
    pub negatives: u64,
    pub void: u64,
    /// Frames whose highest threshold is the overall highest: above 1, the
    /// official result depends on numpy's unstable argsort (module doc).
    pub top_frames: u64,
    /// Frames without a non-void pixel (the official code fails on them).
    pub empty_frames: u64,
    pub frames: u64,
}

/// AP, AUROC and FPR95 of the merged binned curve.
#[derive(Clone, Copy, Debug)]
pub struct BinnedMetrics {
    pub ap: f64,
    pub auroc: f64,
    pub fpr95: f64,
    /// Points on the curve (after `curves_from_cmats`).
    pub points: usize,
    /// `curves_from_cmats`' `best_f1` and `best_f1_threshold`
    /// (`pixel_classification_curves.py:122,136,151-152`): F1 =
    /// 2tp / (2tp + fp + fn) at every curve point (after the thinning and the
    /// end points), `np.nanargmax` (the first maximum, i.e. the highest
    /// threshold among ties), and that point's threshold: the lower edge of a
    /// bin (its counts are `score ≥ edge`), or the sentinels `max + 1` /
    /// `max - 1` of the prepended / appended end points. SMIYC binarises its
    /// component metrics at `score > best_f1_threshold` (module doc).
    pub best_f1: f64,
    pub best_f1_threshold: f64,
}

impl BinnedCurve {
    pub fn new() -> Self {
        Self::default()
    }

    /// One frame: `scores` (rounded here to float16, as SMIYC saves them) and
    /// `labels` (bench's: `VOID` ignored, `NORMAL` negative, else positive).
    pub fn add_frame(&mut self, scores: &[f32], labels: &[u8]) -> Result<()> {
        use crate::data::label::{NORMAL, VOID};
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for (&s, &l) in scores.iter().zip(labels) {
            if l == VOID {
                self.void += 1;
                continue;
            }
            let x = h(s);
            if !x.is_finite() {
                bail!("binning = \"smiyc\": score {s} is not finite as float16 (SMIYC stores float16 score maps)");
            }
            if l == NORMAL { neg.push(x) } else { pos.push(x) }
        }
        self.frames += 1;
        self.positives += pos.len() as u64;
        self.negatives += neg.len() as u64;
        if pos.is_empty() && neg.is_empty() {
            self.empty_frames += 1;
            return Ok(());
        }
        pos.sort_unstable_by(f32::total_cmp);
        neg.sort_unstable_by(f32::total_cmp);
        let first = |v: &[f32]| v.first().copied();
        let last = |v: &[f32]| v.last().copied();
        let vmin = [first(&pos), first(&neg)].into_iter().flatten().fold(f32::INFINITY, f32::min);
        let vmax = [last(&pos), last(&neg)].into_iter().flatten().fold(f32::NEG_INFINITY, f32::max);
        let vrange = h(vmax - vmin);
        let c = h(0.01);
        let eps = h(vrange * c).max(c);
        let mut edges = vec![h(vmin - eps) as f64, h(vmax + eps) as f64];
        if !pos.is_empty() {
            quantiles(&pos, (NUM_BINS / 2).min(pos.len()), &mut edges);
        }
        if !neg.is_empty() {
            quantiles(&neg, (NUM_BINS / 2).min(neg.len()), &mut edges);
        }
        edges.sort_by(f64::total_cmp);
        edges.dedup_by(|a, b| a == b);
        for e in edges.iter_mut() {
            if *e == 0.0 {
                *e = 0.0; // -0.0 and 0.0 are one threshold
            }
        }
        let (mut tp, mut fp) = (Vec::new(), Vec::new());
        histogram(&pos, &edges, &mut tp);
        histogram(&neg, &edges, &mut fp);
        let nb = tp.len();
        // highest threshold of this frame: the lower edge of its top bin;
        // `>=`: a later frame comes first among equals (stable argsort reversed)
        let t = (edges[nb - 1], tp[nb - 1], fp[nb - 1]);
        match self.top {
            Some(x) if t.0 < x.0 => {}
            Some(x) if t.0 == x.0 => {
                self.top = Some(t);
                self.top_frames += 1;
            }
            _ => {
                self.top = Some(t);
                self.top_frames = 1;
            }
        }
        for i in 0..nb {
            self.entries.push((edges[i], tp[i], fp[i]));
        }
        if self.entries.len() > 2 * self.merged_len.max(1 << 16) {
            self.merge();
        }
        Ok(())
    }

    /// Append the frames of `o`, which all come after this curve's: the
    /// same state as adding them here one by one (entries are summed per
    /// threshold; among equal highest thresholds the later frame is first).
    pub fn absorb(&mut self, o: BinnedCurve) {
        self.entries.extend(o.entries);
        self.positives += o.positives;
        self.negatives += o.negatives;
        self.void += o.void;
        self.empty_frames += o.empty_frames;
        self.frames += o.frames;
        match (self.top, o.top) {
            (Some(a), Some(b)) if b.0 < a.0 => {}
            (Some(a), Some(b)) if b.0 == a.0 => {
                self.top = Some(b);
                self.top_frames += o.top_frames;
            }
            (_, Some(b)) => {
                self.top = Some(b);
                self.top_frames = o.top_frames;
            }
            (_, None) => {}
        }
        self.merge();
    }

    fn merge(&mut self) {
        let e = &mut self.entries;
        e.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut w = 0;
        for r in 0..e.len() {
            if w > 0 && e[w - 1].0 == e[r].0 {
                e[w - 1].1 += e[r].1;
                e[w - 1].2 += e[r].2;
            } else {
                e[w] = e[r];
                w += 1;
            }
        }
        e.truncate(w);
        self.merged_len = w;
    }

    /// `curves_from_cmats` on the merged curve; `None` without positives or
    /// negatives (the official code divides by zero there).
    pub fn finish(&mut self) -> Option<BinnedMetrics> {
        self.merge();
        let (p, n) = (self.positives as f64, self.negatives as f64);
        if self.positives == 0 || self.negatives == 0 {
            return None;
        }
        let top = self.top?;
        // kept cmats: index 0 (first entry alone), then every run end
        let mut tp = vec![top.1 as f64];
        let mut fp = vec![top.2 as f64];
        let mut thr = vec![top.0];
        let (mut ct, mut cf) = (0f64, 0f64);
        for &(t, a, b) in &self.entries {
            ct += a as f64;
            cf += b as f64;
            tp.push(ct);
            fp.push(cf);
            thr.push(t);
        }
        // `float(np.max(thresholds)) ± 1` (l. 88, 95)
        let tmax = |thr: &[f64]| thr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if tp[0] != 0.0 || fp[0] != 0.0 {
            tp.insert(0, 0.0);
            fp.insert(0, 0.0);
            thr.insert(0, tmax(&thr) + 1.0);
        }
        if *tp.last().unwrap() != p || *fp.last().unwrap() != n {
            tp.push(p);
            fp.push(n);
            thr.push(tmax(&thr) - 1.0);
        }
        let k = tp.len();
        let tpr: Vec<f64> = tp.iter().map(|&t| t / (t + (p - t))).collect();
        let fpr: Vec<f64> = fp.iter().map(|&f| f / (f + (n - f))).collect();
        let prec: Vec<f64> = (0..k).map(|i| if tp[i] + fp[i] > 0.0 { tp[i] / (tp[i] + fp[i]) } else { 1.0 }).collect();
        let mut ap = 0.0;
        let mut auroc = 0.0;
        for i in 1..k {
            ap += (tpr[i] - tpr[i - 1]) * prec[i];
            auroc += (fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2.0;
        }
        let fpr95 = match tpr.iter().position(|&t| t >= 0.95) {
            Some(i) => fpr[i],
            None => 1.0,
        };
        // l. 122: f1 = (2 tp) / (2 tp + fp + fn); l. 136: np.nanargmax (first max)
        let (mut best_f1, mut ix) = (f64::NAN, 0);
        for i in 0..k {
            let f1 = (2.0 * tp[i]) / (2.0 * tp[i] + fp[i] + (p - tp[i]));
            if !f1.is_nan() && (best_f1.is_nan() || f1 > best_f1) {
                best_f1 = f1;
                ix = i;
            }
        }
        Some(BinnedMetrics { ap, auroc, fpr95, points: k, best_f1, best_f1_threshold: thr[ix] })
    }
}
