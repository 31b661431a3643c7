//! Exact pixel metrics from one sufficient statistic.
//!
//! Why this room exists: public evaluation codes disagree on FPR95, subsample
//! pixels, or bin scores because sorting every pixel does not fit in memory.
//! Here every figure (AUROC, AP, FPR95, F1, operating points, curves) is a
//! few lines on top of one statistic, [`Counts`]: for every distinct score
//! attained by a positive (descending), the cumulative number of positives
//! at or above it and the number of negatives at or above / strictly above
//! it. Negative-only thresholds never change the true-positive count, so
//! they add nothing to any of these metrics (they only sit on horizontal
//! segments of the ROC, which we keep as corners): the statistic is exact
//! and its size is proportional to the positives, not the pixels.
//!
//! It is built in two streaming passes by [`engine`]: pass 1 collects the
//! positives' scores, pass 2 ranks every negative among them (parallel,
//! radix-indexed binary search, u64 counts).

pub mod binned;
pub mod bootgrid;
pub mod bootstrap;
pub mod conventions;
pub mod dashboard;
pub mod drift;
pub mod engine;
pub mod failure;
pub mod keyhist;
pub mod operating;
pub mod packed;
pub mod region;
pub mod split;

pub use engine::{PositiveCollector, Ranker, ThresholdCounter, counts_of};
pub use packed::PackedCounts;
use serde::Serialize;

/// Order-preserving bijection f32 → u32 (`a < b ⇔ key(a) < key(b)`), with
/// -0.0 and +0.0 mapped to the same key (they tie, as in numpy).
#[inline]
pub fn key(x: f32) -> u32 {
    let x = if x == 0.0 { 0.0f32 } else { x };
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
}

/// Tests' deterministic pseudo-random stream: xorshift64 (13, 7, 17) from
/// `seed` (non-zero), one value per call.
#[cfg(test)]
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Lane width of [`for_lanes`].
pub(crate) const LANES: usize = 16;

/// `f` over the pixels in fixed chunks of [`LANES`] (scores, labels), so a
/// caller's per-lane accumulators vectorise; the last partial chunk is
/// padded with void pixels (score 0), which every pixel accumulator
/// ignores, so no caller needs a scalar tail. Walks the shorter length.
#[inline(always)]
pub(crate) fn for_lanes(scores: &[f32], labels: &[u8], mut f: impl FnMut(&[f32; LANES], &[u8; LANES])) {
    let n = scores.len().min(labels.len());
    let (cs, rs) = scores[..n].as_chunks::<LANES>();
    let (cl, rl) = labels[..n].as_chunks::<LANES>();
    for (s, l) in cs.iter().zip(cl) {
        f(s, l);
    }
    if !rs.is_empty() {
        let (mut s, mut l) = ([0f32; LANES], [crate::data::label::VOID; LANES]);
        s[..rs.len()].copy_from_slice(rs);
        l[..rl.len()].copy_from_slice(rl);
        f(&s, &l);
    }
}

/// Inverse of [`key`].
#[inline]
pub fn unkey(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 { k & 0x7fff_ffff } else { !k })
}

/// The sufficient statistic. Index `i` is the i-th largest distinct score
/// attained by a positive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub positives: u64,
    pub negatives: u64,
    /// Distinct positive scores, descending.
    pub thresholds: Vec<f32>,
    /// Positives with score ≥ thresholds[i].
    pub tp: Vec<u64>,
    /// Negatives with score ≥ thresholds[i].
    pub fp: Vec<u64>,
    /// Negatives with score > thresholds[i].
    pub fp_gt: Vec<u64>,
}

/// How FPR at 95 % TPR is read off the ROC (see `conventions` for which
/// code uses which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Fpr95Rule {
    /// FPR at the first threshold (descending) where TPR ≥ 0.95
    /// (SegmentMeIfYouCan, Fishyscapes, BRAVO, pytorch-ood).
    #[default]
    First,
    /// First point with TPR > 0.95 on scikit-learn's default
    /// (`drop_intermediate=True`) ROC, as RbA's `support.py`.
    Strict,
    /// `np.interp(0.95, tpr, fpr)` over sklearn's ROC (SML paper, ood-metrics).
    Interp,
    /// The ROC point whose TPR is nearest 0.95 (`np.argmin(|recall − 0.95|)`,
    /// lowest threshold on ties), as `hendrycks/anomaly-seg` `anom_utils.py`.
    Nearest,
    /// First TPR ≥ 0.95 on scikit-learn's default (`drop_intermediate=True`)
    /// ROC, as OpenOOD's `metrics.py`.
    Thinned,
}

impl Fpr95Rule {
    pub fn name(self) -> &'static str {
        match self {
            Fpr95Rule::First => "first",
            Fpr95Rule::Strict => "strict",
            Fpr95Rule::Interp => "interp",
            Fpr95Rule::Nearest => "nearest",
            Fpr95Rule::Thinned => "thinned",
        }
    }
}

/// How the area under the precision-recall curve is summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AuprRule {
    /// Average precision, the step sum `Σ (R_n − R_{n−1}) P_n`
    /// (`sklearn.metrics.average_precision_score`).
    #[default]
    Ap,
    /// `sklearn.metrics.auc(recall, precision)` over
    /// `precision_recall_curve` (OpenOOD, ood-metrics, pytorch-ood).
    Trapezoid,
    /// torchmetrics `auc(recall, precision, reorder=True)` (anomalib): the
    /// stable sort by recall reverses the order of equal-recall points, so
    /// each trapezoid meets a recall level at its other end.
    #[value(name = "trapezoid_reorder")]
    TrapezoidReorder,
}

impl AuprRule {
    pub fn name(self) -> &'static str {
        match self {
            AuprRule::Ap => "ap",
            AuprRule::Trapezoid => "trapezoid",
            AuprRule::TrapezoidReorder => "trapezoid_reorder",
        }
    }
}

/// The headline figures of one cell. `None` = undefined (no positive or
/// no negative pixel), never a made-up number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Summary {
    pub auroc: Option<f64>,
    pub aupr: Option<f64>,
    pub fpr95: Option<f64>,
    pub f1: Option<f64>,
    pub threshold: Option<f64>,
}

/// How an operating point's threshold was chosen (on one split, to be
/// applied to another). See [`operating`] for the definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointRule {
    /// The F1-optimal threshold.
    F1Optimal,
    /// The highest threshold whose FAR (defects accepted) is within the
    /// budget; the FRR (good rejected) there is the figure of merit.
    FrrAtFar,
    /// The lowest threshold whose FRR (good rejected) is within the budget;
    /// the FAR (defects accepted) there is the figure of merit.
    FarAtFrr,
}

impl PointRule {
    pub fn name(self) -> &'static str {
        match self {
            PointRule::F1Optimal => "f1_optimal",
            PointRule::FrrAtFar => "frr_at_far",
            PointRule::FarAtFrr => "far_at_frr",
        }
    }
}

/// Confusion counts at one threshold `score ≥ t` (rejected).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    pub threshold: f64,
    pub tp: u64,
    pub fp: u64,
    pub positives: u64,
    pub negatives: u64,
}

impl OperatingPoint {
    /// False accept rate: share of anomalies with score < t (defects
    /// accepted, 1 − recall).
    pub fn far(&self) -> Option<f64> {
        ratio(self.positives - self.tp, self.positives)
    }
    /// False reject rate: share of normals with score ≥ t (good rejected,
    /// the FPR).
    pub fn frr(&self) -> Option<f64> {
        ratio(self.fp, self.negatives)
    }
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.positives)
    }
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }
    pub fn f1(&self) -> Option<f64> {
        let (p, r) = (self.precision()?, self.recall()?);
        Some(f1_score(p, r))
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// `2PR/(P+R)`, 0 when both are 0 — the same float operations as the
/// sklearn reference, so exact ties break identically.
#[inline]
pub(crate) fn f1_score(p: f64, r: f64) -> f64 {
    if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
}

impl Counts {
    /// Both classes present: every metric is defined.
    pub fn defined(&self) -> bool {
        self.positives > 0 && self.negatives > 0
    }

    /// ROC polyline in counts: (0,0), then per threshold the corner
    /// (fp_gt[i], tp[i-1]) and the point (fp[i], tp[i]), then (N, P).
    /// Duplicate consecutive points removed.
    pub fn roc_points(&self) -> Vec<(u64, u64)> {
        let mut pts = Vec::with_capacity(2 * self.tp.len() + 2);
        let mut push = |p: (u64, u64)| {
            if pts.last() != Some(&p) {
                pts.push(p);
            }
        };
        push((0, 0));
        let mut prev_tp = 0;
        for i in 0..self.tp.len() {
            push((self.fp_gt[i], prev_tp));
            push((self.fp[i], self.tp[i]));
            prev_tp = self.tp[i];
        }
        push((self.negatives, self.positives));
        pts
    }

    /// Area under the ROC (trapezoids; ties count ½). Exact integer sum,
    /// one division.
    pub fn auroc(&self) -> Option<f64> {
        if !self.defined() {
            return None;
        }
        let pts = self.roc_points();
        let twice: u128 = pts
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) as u128 * (w[0].1 + w[1].1) as u128)
            .sum();
        Some(twice as f64 / (2.0 * self.positives as f64 * self.negatives as f64))
    }

    /// Average precision `Σ (R_n − R_{n−1}) P_n` (sklearn's step sum).
    pub fn average_precision(&self) -> Option<f64> {
        if !self.defined() {
            return None;
        }
        let p = self.positives as f64;
        let mut prev = 0u64;
        let mut ap = 0.0;
        for i in 0..self.tp.len() {
            let prec = self.tp[i] as f64 / (self.tp[i] + self.fp[i]) as f64;
            ap += (self.tp[i] - prev) as f64 / p * prec;
            prev = self.tp[i];
        }
        Some(ap)
    }

    /// Area under the PR curve under `rule`.
    pub fn aupr(&self, rule: AuprRule) -> Option<f64> {
        match rule {
            AuprRule::Ap => self.average_precision(),
            AuprRule::Trapezoid => self.pr_trapezoid(false),
            AuprRule::TrapezoidReorder => self.pr_trapezoid(true),
        }
    }

    /// Trapezoidal area under the PR curve of all distinct thresholds.
    /// Negative-only thresholds share the recall of the positive threshold
    /// above them, so each recall level is a vertical run whose two ends are
    /// known: the positive threshold itself (precision `tp/(tp+fp)`) and the
    /// lowest negative-only threshold before the next positive one
    /// (`tp/(tp+fp_gt[next])`). scikit-learn's curve (descending
    /// thresholds, cut at full recall, `(R=0, P=1)` appended) meets each run
    /// at the positive-threshold end from below and leaves it at the lowest
    /// end; torchmetrics' `reorder=True` (stable sort of the reversed curve)
    /// enters at the lowest end and leaves at the positive threshold, and
    /// keeps the points past full recall.
    fn pr_trapezoid(&self, reorder: bool) -> Option<f64> {
        if !self.defined() {
            return None;
        }
        let (p, n, m) = (self.positives as f64, self.negatives, self.tp.len());
        let prec = |tp: u64, fp: u64| tp as f64 / (tp + fp) as f64;
        // (recall, precision entering the level, precision leaving it)
        let mut levels: Vec<(f64, f64, f64)> = Vec::with_capacity(m + 1);
        // recall 0: the appended (0, 1), plus precision-0 points when
        // negatives score above every positive
        let top0 = if self.fp_gt[0] > 0 { 0.0 } else { 1.0 };
        levels.push(if reorder { (0.0, 0.0, 1.0) } else { (0.0, 1.0, top0) });
        for i in 0..m {
            let at = prec(self.tp[i], self.fp[i]);
            let below = if i + 1 < m { self.fp_gt[i + 1] } else { n };
            let low = prec(self.tp[i], below);
            let r = self.tp[i] as f64 / p;
            levels.push(if reorder {
                (r, low, at)
            } else if i + 1 == m {
                (r, at, at) // sklearn stops at full recall
            } else {
                (r, at, low)
            });
        }
        let mut area = 0.0;
        for w in levels.windows(2) {
            area += (w[1].0 - w[0].0) * (w[1].1 + w[0].2) / 2.0;
        }
        Some(area)
    }

    /// Whether scikit-learn's `roc_curve(drop_intermediate=True)` keeps the
    /// point of positive threshold `i`. It drops a point when both second
    /// differences of (fps, tps) vanish there. The neighbours on the full
    /// curve are known from the statistic: before it, the lowest
    /// negative-only threshold above (fps = `fp_gt[i]`, tps = `tp[i-1]`) or
    /// threshold `i-1` itself (same counts); after it, a negative-only
    /// threshold (same tps: the point is a corner, kept) or threshold `i+1`.
    fn thinned_keeps(&self, i: usize) -> bool {
        let m = self.tp.len();
        if i == 0 && self.fp_gt[0] == 0 {
            return true; // first point of the curve
        }
        let (pf, pt) = if i == 0 { (self.fp_gt[0], 0) } else { (self.fp_gt[i], self.tp[i - 1]) };
        if i + 1 == m || self.fp_gt[i + 1] > self.fp[i] {
            return true; // last point, or followed by a negative-only threshold
        }
        let (nf, nt) = (self.fp[i + 1], self.tp[i + 1]);
        let d2 = |a: u64, b: u64, c: u64| a as i128 - 2 * b as i128 + c as i128;
        d2(pf, self.fp[i], nf) != 0 || d2(pt, self.tp[i], nt) != 0
    }

    /// FPR at 95 % TPR under `rule`.
    pub fn fpr_at_tpr(&self, target: f64, rule: Fpr95Rule) -> Option<f64> {
        if !self.defined() {
            return None;
        }
        let (p, n) = (self.positives as f64, self.negatives as f64);
        let m = self.tp.len();
        match rule {
            Fpr95Rule::First => {
                let i = self.tp.iter().position(|&t| t as f64 / p >= target)?;
                Some(self.fp[i] as f64 / n)
            }
            Fpr95Rule::Thinned | Fpr95Rule::Strict => {
                let hit = |t: u64| if rule == Fpr95Rule::Strict { t as f64 / p > target } else { t as f64 / p >= target };
                let mut i = self.tp.iter().position(|&t| hit(t))?;
                // a dropped point is followed by threshold i+1 (see thinned_keeps)
                while !self.thinned_keeps(i) {
                    i += 1;
                }
                Some(self.fp[i] as f64 / n)
            }
            Fpr95Rule::Nearest => {
                // anom_utils walks the curve from full recall up to the top
                // threshold and takes the first minimum of |recall − 0.95|;
                // the first point of each recall level is its lowest
                // threshold: fps = fp_gt of the next positive threshold.
                let mut best: Option<(f64, u64)> = None;
                for i in (0..m).rev() {
                    let fps = if i + 1 == m { self.fp[i] } else { self.fp_gt[i + 1] };
                    let d = (self.tp[i] as f64 / p - target).abs();
                    if best.is_none_or(|(b, _)| d < b) {
                        best = Some((d, fps));
                    }
                }
                best.map(|(_, f)| f as f64 / n)
            }
            Fpr95Rule::Interp => {
                let pts = self.roc_points();
                let xp: Vec<f64> = pts.iter().map(|q| q.1 as f64 / p).collect();
                let fp: Vec<f64> = pts.iter().map(|q| q.0 as f64 / n).collect();
                Some(np_interp(target, &xp, &fp))
            }
        }
    }

    /// Max F1 over distinct thresholds and the threshold attaining it (on an
    /// exact tie the lowest score, as `argmax` over sklearn's ascending
    /// `precision_recall_curve` gives).
    pub fn best_f1(&self) -> Option<(f64, f32)> {
        if !self.defined() {
            return None;
        }
        let p = self.positives as f64;
        let mut best: Option<(f64, f32)> = None;
        for i in 0..self.tp.len() {
            let prec = self.tp[i] as f64 / (self.tp[i] + self.fp[i]) as f64;
            let rec = self.tp[i] as f64 / p;
            let f = f1_score(prec, rec);
            if best.is_none_or(|(b, _)| f >= b) {
                best = Some((f, self.thresholds[i]));
            }
        }
        best
    }

    pub fn summary(&self, rule: Fpr95Rule) -> Summary {
        self.summary_with(rule, AuprRule::Ap)
    }

    /// The headline figures under an FPR95 rule and an AUPR rule.
    pub fn summary_with(&self, rule: Fpr95Rule, aupr: AuprRule) -> Summary {
        let f1 = self.best_f1();
        Summary {
            auroc: self.auroc(),
            aupr: self.aupr(aupr),
            fpr95: self.fpr_at_tpr(0.95, rule),
            f1: f1.map(|x| x.0),
            threshold: f1.map(|x| x.1 as f64),
        }
    }

    /// Confusion counts at an arbitrary threshold `score ≥ t` (e.g. one
    /// chosen on another split). Exact for thresholds that are positive
    /// scores of this split; for other values the negatives are counted at
    /// the nearest enclosing statistic, so callers pass thresholds of this
    /// split or use [`Ranker`] on the split directly.
    pub fn at_index(&self, i: usize) -> OperatingPoint {
        OperatingPoint {
            threshold: self.thresholds[i] as f64,
            tp: self.tp[i],
            fp: self.fp[i],
            positives: self.positives,
            negatives: self.negatives,
        }
    }
}

/// `numpy.percentile(x, 100·q)` (default `linear` method) of ascending
/// `sorted` values, including numpy's `_lerp` rounding rule.
pub fn np_percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = (sorted.len() - 1) as f64 * q;
    Some(np_lerp(sorted[pos.floor() as usize], sorted[pos.ceil() as usize], pos - pos.floor()))
}

/// numpy's `_lerp(a, b, t)`.
pub fn np_lerp(a: f64, b: f64, t: f64) -> f64 {
    let d = b - a;
    if t >= 0.5 { b - d * (1.0 - t) } else { a + d * t }
}

/// `numpy.interp(x, xp, fp)` for non-decreasing `xp`, reproducing numpy's
/// handling of repeated `xp` values (the last of equal abscissae wins).
pub fn np_interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let n = xp.len();
    if x < xp[0] {
        return fp[0];
    }
    if x > xp[n - 1] {
        return fp[n - 1];
    }
    // largest j with xp[j] <= x
    let j = xp.partition_point(|&v| v <= x) - 1;
    if j == n - 1 || xp[j] == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    slope * (x - xp[j]) + fp[j]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_orders_like_floats() {
        let v = [f32::NEG_INFINITY, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, f32::MAX];
        for w in v.windows(2) {
            assert!(key(w[0]) <= key(w[1]), "{w:?}");
            assert_eq!(key(w[0]) == key(w[1]), w[0] == w[1], "{w:?}");
        }
        for &x in &v {
            assert_eq!(unkey(key(x)), if x == 0.0 { 0.0 } else { x });
        }
    }

    #[test]
    fn np_interp_matches_numpy_on_repeats() {
        // np.interp(0.5, [0, .5, .5, 1], [0, .1, .3, 1]) == 0.3
        assert_eq!(np_interp(0.5, &[0.0, 0.5, 0.5, 1.0], &[0.0, 0.1, 0.3, 1.0]), 0.3);
        // np.interp(0.75, ...) == 0.3 + 0.5*0.7 = 0.65
        assert!((np_interp(0.75, &[0.0, 0.5, 0.5, 1.0], &[0.0, 0.1, 0.3, 1.0]) - 0.65).abs() < 1e-15);
    }
}
