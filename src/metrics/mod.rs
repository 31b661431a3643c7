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

pub mod bootstrap;
pub mod drift;
pub mod engine;
pub mod region;
pub mod split;

pub use engine::{PositiveCollector, Ranker, ThresholdCounter, counts_of};
use serde::Serialize;

/// Order-preserving bijection f32 → u32 (`a < b ⇔ key(a) < key(b)`), with
/// -0.0 and +0.0 mapped to the same key (they tie, as in numpy).
#[inline]
pub fn key(x: f32) -> u32 {
    let x = if x == 0.0 { 0.0f32 } else { x };
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
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

/// How FPR at 95 % TPR is read off the ROC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fpr95Rule {
    /// FPR at the first threshold (descending) where TPR ≥ 0.95
    /// (SegmentMeIfYouCan / Fishyscapes).
    #[default]
    First,
    /// `np.interp(0.95, tpr, fpr)` over sklearn's ROC (SML paper).
    Interp,
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
/// applied to another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointRule {
    /// The F1-optimal threshold.
    F1Optimal,
    /// The threshold meeting a false-accept-rate budget.
    Far,
    /// The threshold meeting a false-reject-rate budget.
    Frr,
}

/// Confusion counts at one threshold `score ≥ t`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    pub threshold: f64,
    pub tp: u64,
    pub fp: u64,
    pub positives: u64,
    pub negatives: u64,
}

impl OperatingPoint {
    /// False accept rate = FPR (normal pixels flagged).
    pub fn far(&self) -> Option<f64> {
        ratio(self.fp, self.negatives)
    }
    /// False reject rate = 1 − TPR (anomalies missed).
    pub fn frr(&self) -> Option<f64> {
        ratio(self.positives - self.tp, self.positives)
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
fn f1_score(p: f64, r: f64) -> f64 {
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

    /// FPR at 95 % TPR under `rule`.
    pub fn fpr_at_tpr(&self, target: f64, rule: Fpr95Rule) -> Option<f64> {
        if !self.defined() {
            return None;
        }
        let (p, n) = (self.positives as f64, self.negatives as f64);
        match rule {
            Fpr95Rule::First => {
                let i = self.tp.iter().position(|&t| t as f64 / p >= target)?;
                Some(self.fp[i] as f64 / n)
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
        let f1 = self.best_f1();
        Summary {
            auroc: self.auroc(),
            aupr: self.average_precision(),
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

    /// Lowest positive threshold whose FAR (FPR) is ≤ `far` — the most
    /// anomalies caught while respecting the false-accept budget.
    pub fn threshold_at_far(&self, far: f64) -> Option<OperatingPoint> {
        if !self.defined() {
            return None;
        }
        let n = self.negatives as f64;
        let i = self.fp.iter().rposition(|&f| f as f64 / n <= far)?;
        Some(self.at_index(i))
    }

    /// Highest positive threshold whose FRR (1 − TPR) is ≤ `frr` — the fewest
    /// false alarms while missing at most that share of anomalies.
    pub fn threshold_at_frr(&self, frr: f64) -> Option<OperatingPoint> {
        if !self.defined() {
            return None;
        }
        let p = self.positives as f64;
        let i = self.tp.iter().position(|&t| 1.0 - t as f64 / p <= frr)?;
        Some(self.at_index(i))
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
