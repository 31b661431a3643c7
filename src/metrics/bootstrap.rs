//! Bootstrap confidence intervals by resampling images.
//!
//! Why its own file: the resampling policy (paired draws, seeding, the
//! percentile interval) is one decision, independent of how a split is
//! accumulated.
//!
//! **Draws.** Replicate `r` draws n images with replacement from a ChaCha8
//! stream seeded by (seed, r) ([`draws`]); every method, and every figure,
//! of a replicate sees the same draw (paired). The interval is numpy's
//! linear 2.5 / 97.5 % percentile of the replicates where the figure is
//! defined.
//!
//! **Histogram bootstrap** ([`hist_bootstrap`], what `bench run` uses at
//! every split size): each replicate's figures come from the per-image
//! histograms of [`bootgrid`](super::bootgrid) summed with the draw's
//! multiplicities: AUROC, AP, FPR95, best F1 and (with regions) AUPRO of
//! the binned statistic (every bin one tied score); the counts at each
//! val-chosen pixel threshold (a grid edge: **exact**); image AUROC and the
//! image-level operating points from the image scores (**exact**); and per
//! pair of methods the replicate's difference A − B (a method paired with
//! itself gives exactly 0).
//!
//! **AUPRO** needs, besides the counts, each anomaly cell's region-weight
//! sum (each anomaly pixel weighs 1/|R_k|) and each image's region count
//! K_i ([`bootgrid`](super::bootgrid), only when the run computes regions).
//! Per replicate the binned PRO at a bin's lower edge is Σ_draw (weight at
//! or above it) / Σ_draw K_i and its FPR the drawn normals at or above it
//! over all drawn normals; `region::aupro` integrates that binned curve with
//! the point estimate's own trapezoid rule (the same function).
//!
//! **Error bound** (point estimates stay exact; only the intervals are
//! binned). Per replicate, with `P_b`, `N_b` the anomaly / normal pixels of
//! bin b, `P`, `N` the totals, `TP>b`, `FP>b` those above bin b, and sums
//! over bins holding more than one key (a one-key bin is exact):
//! - AUROC: pairs within a bin count ½ instead of 0, ½ or 1, so
//!   `|AUROC_bin − AUROC| ≤ ½ Σ_b P_b N_b / (P N)`;
//! - AP (`aupr = "ap"`): bin b's positives enter at precisions between
//!   `lo_b = (TP>b + 1) / (TP>b + 1 + FP>b + N_b)` and
//!   `hi_b = (TP>b + P_b) / (TP>b + P_b + FP>b)`, and the binned precision
//!   lies between them, so `|AP_bin − AP| ≤ Σ_b (P_b / P)(hi_b − lo_b)`;
//! - FPR95 (`fpr95 = "first"`): the exact threshold lies in the bin b* where
//!   the binned TPR first reaches 0.95, so `|FPR95_bin − FPR95| ≤ N_b* / N`;
//! - best F1: every binned operating point (a bin's lower edge) is an exact
//!   one, so `F1_bin ≤ F1`; an exact threshold inside a bin b holding
//!   anomalies has TP ≤ TP>b + P_b and FP ≥ FP>b, and F1 = 2TP/(TP+FP+P)
//!   grows with TP and falls with FP, so with
//!   `U_b = F1(TP>b + P_b, FP>b)`, `0 ≤ F1 − F1_bin ≤ max_b U_b − F1_bin`
//!   (0 when no bin is wider than one key);
//! - AUPRO: the binned PRO curve's corners are exact points of the exact
//!   curve, and between a bin's two corners both curves are monotone, so
//!   both stay in the box ΔFPR_b × ΔPRO_b: `|AUPRO_bin − AUPRO| ≤
//!   (Σ_b ½ ΔFPR_b ΔPRO_b + w ΔPRO_b*) / max_fpr` over the boxes left of
//!   `max_fpr`, the box b* crossing it counted at width `w = max_fpr −
//!   FPR_b*` (`region::aupro_bin_bound`, which says why).
//!
//! If every replicate's binned value is within δ_r of its exact value, each
//! order statistic, hence each numpy percentile, is within `max_r δ_r`: the
//! recorded `error_bound` bounds the distance of each interval end from the
//! exact bootstrap's (same draws). For a difference A − B it is
//! `max_r (δ_r^A + δ_r^B)`. Other FPR95 / AUPR rules get no bound (`null`).
//! Measured against the exact bootstrap (`tests/bootstrap.rs`): see the
//! README section "Bootstrap".
//!
//! **Pairing two splits** (drift: test@name vs clean test, images matched
//! by index): call [`draws`] once per replicate and [`replicate`] on each
//! split's [`HistBoot`] with the same draw; the difference of the two
//! [`Rep`]s is that replicate's change, exact in the same sense as above.
//!
//! The exact bootstrap over held score maps ([`bootstrap`]) is the oracle
//! the histogram bootstrap is tested against.

use crate::metrics::bootgrid::{Grid, HistSet};
use crate::metrics::operating::{ImageScores, Level};
use crate::metrics::{AuprRule, Counts, Fpr95Rule, PositiveCollector, counts_of};
use crate::scores::ScoreMaps;
use serde::{Deserialize, Serialize};

/// The intervals of one (model, method) cell, as results.json records them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    pub samples: u32,
    pub seed: u64,
    /// Replicates in which the metric was defined (both classes drawn).
    pub defined: u32,
    pub auroc: Option<[f64; 2]>,
    pub aupr: Option<[f64; 2]>,
    pub fpr95: Option<[f64; 2]>,
    /// Best F1 of the pixel statistic (histogram bootstrap only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<[f64; 2]>,
    /// AUPRO (histogram bootstrap of a run with `metrics.regions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aupro: Option<[f64; 2]>,
    /// `"histogram"` (per-image histograms, intervals within
    /// `error_bound` of the exact bootstrap) or `"image_means"`
    /// (`average = "images"`: exact means of per-image values); absent in
    /// files written before the histogram bootstrap (exact, held maps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Bins of the method's grid (histogram bootstrap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<u32>,
    /// Largest distance of an interval end above from the exact
    /// bootstrap's (same draws): `max_r δ_r`, see the module doc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_bound: Option<ErrorBound>,
    /// Image AUROC (exact: image scores are resampled as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_auroc: Option<[f64; 2]>,
}

/// Bounds on |binned − exact| of interval ends (`null`: no bound for the
/// configured rule).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorBound {
    pub auroc: Option<f64>,
    pub aupr: Option<f64>,
    pub fpr95: Option<f64>,
    /// Absent where the interval is (files before F1 / AUPRO intervals,
    /// runs without regions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aupro: Option<f64>,
}

impl ErrorBound {
    /// From the bounds of [`PX`]'s figures, in its order.
    pub fn of(b: [Option<f64>; PX]) -> ErrorBound {
        ErrorBound { auroc: b[0], aupr: b[1], fpr95: b[2], f1: b[3], aupro: b[4] }
    }

    /// The bounds in [`PX`] order.
    pub fn all(&self) -> [Option<f64>; PX] {
        [self.auroc, self.aupr, self.fpr95, self.f1, self.aupro]
    }
}

/// The binned pixel figures of a replicate, in this order: AUROC, AUPR,
/// FPR95, best F1, AUPRO.
pub const PX: usize = 5;

/// Intervals of an operating point's test FAR and FRR at its (fixed,
/// val-chosen) threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PointCi {
    pub far: Option<[f64; 2]>,
    pub frr: Option<[f64; 2]>,
}

/// Intervals of A − B per replicate for methods `a`, `b` (column indices).
#[derive(Debug, Clone, PartialEq)]
pub struct DiffCi {
    pub a: usize,
    pub b: usize,
    pub defined: u32,
    pub auroc: Option<[f64; 2]>,
    pub aupr: Option<[f64; 2]>,
    pub fpr95: Option<[f64; 2]>,
    pub f1: Option<[f64; 2]>,
    pub aupro: Option<[f64; 2]>,
    pub image_auroc: Option<[f64; 2]>,
    /// FRR at the soft (first FAR budget) threshold, pixel and image.
    pub pixel_frr: Option<[f64; 2]>,
    pub image_frr: Option<[f64; 2]>,
    pub error_bound: ErrorBound,
}

/// A val-chosen threshold whose test FAR / FRR is bootstrapped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub level: Level,
    pub t: f32,
}

/// What the histogram bootstrap reads for one split.
pub struct HistBoot<'a> {
    pub hists: &'a HistSet,
    pub grids: &'a [Grid],
    /// Per method, the scores of the images with a non-void pixel, in order.
    pub image_scores: &'a [Vec<f32>],
    pub image_labels: &'a [u8],
    /// Per method, per honest point (results.json order): its threshold.
    pub points: &'a [Vec<Option<Threshold>>],
    pub rule: (Fpr95Rule, AuprRule),
}

/// One method's figures in one replicate.
#[derive(Debug, Clone, PartialEq)]
pub struct Rep {
    /// The [`PX`] figures of the binned statistic (None: a class missing;
    /// AUPRO None without region weights).
    pub px: Option<[Option<f64>; PX]>,
    /// Per-replicate bounds on |binned − exact| of `px`.
    pub bound: [Option<f64>; PX],
    pub image_auroc: Option<f64>,
    /// Per honest point: (FAR, FRR) at its threshold (None: no threshold).
    pub ops: Vec<Option<(Option<f64>, Option<f64>)>>,
}

/// The histogram bootstrap's intervals: per method the cell's, per method
/// and point the operating points', and per pair of methods (i < j, column
/// order) the difference's. `soft` = indices of the pixel and image
/// `frr_at_far` points at the first FAR budget (for the differences).
pub struct HistIntervals {
    pub cells: Vec<Bootstrap>,
    pub points: Vec<Vec<Option<PointCi>>>,
    pub diffs: Vec<DiffCi>,
}

/// [`replicate`] for `samples` draws (in parallel), then every interval.
pub fn hist_bootstrap(b: &HistBoot, samples: u32, seed: u64, soft: [Option<usize>; 2]) -> anyhow::Result<HistIntervals> {
    use rayon::prelude::*;
    let n = b.hists.images.len();
    let nm = b.grids.len();
    anyhow::ensure!(b.hists.valid.len() == n && b.hists.images.iter().all(|r| r.len() == nm), "internal error: bootstrap histograms of {n} images do not match {nm} methods");
    anyhow::ensure!(b.hists.valid.iter().filter(|&&v| v).count() == b.image_labels.len(), "internal error: image scores do not match the histograms' images");
    anyhow::ensure!(!b.hists.has_regions() || b.hists.regions.len() == n, "internal error: region counts of {} of {n} images", b.hists.regions.len());
    let reps: Vec<Vec<Rep>> = (0..samples).into_par_iter().map(|r| replicate(b, &draws(seed, r, n))).collect();
    let cells = (0..nm).map(|m| cell_intervals(&reps, m, b, samples, seed)).collect();
    let points = (0..nm)
        .map(|m| (0..b.points[m].len()).map(|k| b.points[m][k].map(|_| point_ci(&reps, m, k))).collect())
        .collect();
    let mut diffs = vec![];
    for i in 0..nm {
        for j in i + 1..nm {
            diffs.push(diff_ci(&reps, i, j, soft));
        }
    }
    Ok(HistIntervals { cells, points, diffs })
}

/// Image multiplicities of a draw.
fn weights(draw: &[usize], n: usize) -> Vec<u32> {
    let mut w = vec![0u32; n];
    for &i in draw {
        w[i] += 1;
    }
    w
}

/// Every method's figures on the images of `draw` (with repeats). Public
/// so that two splits matched by image can be paired on one draw.
pub fn replicate(b: &HistBoot, draw: &[usize]) -> Vec<Rep> {
    let n = b.hists.images.len();
    let w = weights(draw, n);
    // image index → its row among the images with an image score
    let row = rows_of(&b.hists.valid);
    let img_draw: Vec<usize> = draw.iter().filter_map(|&i| row[i]).collect();
    let labels: Vec<u8> = img_draw.iter().map(|&j| b.image_labels[j]).collect();
    let regions = b.hists.has_regions();
    // drawn regions: each image's K_i times its multiplicity
    let k: u64 = if regions { w.iter().zip(&b.hists.regions).map(|(&wi, &ki)| wi as u64 * ki as u64).sum() } else { 0 };
    (0..b.grids.len())
        .map(|m| {
            let g = &b.grids[m];
            let mut agg = vec![0u64; 2 * g.bins()];
            let mut aggw = if regions { vec![0.0f64; g.bins()] } else { vec![] };
            for (i, &wi) in w.iter().enumerate().filter(|p| *p.1 > 0) {
                let h = &b.hists.images[i][m];
                for (&ix, &c) in h.idx.iter().zip(&h.cnt) {
                    agg[ix as usize] += wi as u64 * c as u64;
                }
                // anomaly cells in idx order (image order, then cell order:
                // the same sums in every run and shard)
                for (&ix, &pw) in h.idx.iter().filter(|&&ix| ix % 2 == 1).zip(&h.pro) {
                    aggw[ix as usize / 2] += wi as f64 * pw;
                }
            }
            let scores: Vec<f32> = img_draw.iter().map(|&j| b.image_scores[m][j]).collect();
            method_rep(b, m, &agg, regions.then_some((&aggw[..], k)), &scores, &labels)
        })
        .collect()
}

/// One method's [`Rep`] from its summed bins (and, with regions, each
/// bin's summed region weights and the drawn region count) and its drawn
/// image scores.
fn method_rep(b: &HistBoot, m: usize, agg: &[u64], pro: Option<(&[f64], u64)>, scores: &[f32], labels: &[u8]) -> Rep {
    use crate::metrics::region::{MAX_FPR, aupro, aupro_bin_bound};
    let g = &b.grids[m];
    let Binned { c, wide, weight, bound: [b_auroc, b_aupr, b_fpr] } = binned(g, agg, pro.map(|p| p.0), b.rule);
    let f1 = c.best_f1().map(|x| x.0);
    let (au, b_au) = match pro {
        Some((_, k)) => (aupro(&c, &weight, k, MAX_FPR), aupro_bin_bound(&c, &weight, k, &wide, MAX_FPR)),
        None => (None, None),
    };
    let bound = [b_auroc, b_aupr, b_fpr, f1.map(|f| f1_bound(&c, &wide, f)), b_au];
    let px = c.defined().then(|| [c.auroc(), c.aupr(b.rule.1), c.fpr_at_tpr(0.95, b.rule.0), f1, au]);
    let img = ImageScores { scores, labels };
    let image_auroc = counts_of(scores, labels).auroc();
    // suffix sums: (anomalies, normals) at or above each bin
    let bins = g.bins();
    let mut above = vec![(0u64, 0u64); bins + 1];
    for k in (0..bins).rev() {
        above[k] = (above[k + 1].0 + agg[2 * k + 1], above[k + 1].1 + agg[2 * k]);
    }
    let (p, nn) = above[0];
    let ops = b.points[m]
        .iter()
        .map(|t| {
            let t = (*t)?;
            let o = match t.level {
                Level::Image => img.at(t.t as f64),
                Level::Pixel => {
                    // a grid edge by construction; never a binned guess
                    let k = g.bin_at(t.t)?;
                    crate::metrics::OperatingPoint { threshold: t.t as f64, tp: above[k].0, fp: above[k].1, positives: p, negatives: nn }
                }
            };
            Some((o.far(), o.frr()))
        })
        .collect();
    Rep { px, bound: if c.defined() { bound } else { [None; PX] }, image_auroc, ops }
}

/// Best F1's per-replicate bound (module doc): the largest F1 an exact
/// threshold inside a wide bin could reach, less the binned best `best`.
fn f1_bound(c: &Counts, wide: &[bool], best: f64) -> f64 {
    let p = c.positives as f64;
    let mut hi = best;
    for (i, _) in wide.iter().enumerate().filter(|w| *w.1) {
        // all of the bin's anomalies in, none of its normals
        let (tp, fp) = (c.tp[i] as f64, c.fp_gt[i] as f64);
        hi = hi.max(crate::metrics::f1_score(tp / (tp + fp), tp / p));
    }
    hi - best
}

/// [`binned`]'s statistic: one entry per bin holding anomalies, highest
/// bin first, with whether that bin holds more than one key, the
/// cumulative region weight at each entry (with regions; else empty) and
/// the AUROC / AUPR / FPR95 bounds of the module doc.
struct Binned {
    c: Counts,
    wide: Vec<bool>,
    weight: Vec<f64>,
    bound: [Option<f64>; 3],
}

/// The binned statistic (each bin one tied score at its lower edge) and
/// the per-replicate error bounds of the module doc; `aggw`: per bin the
/// summed region weights (AUPRO's cumulative weight per entry).
fn binned(g: &Grid, agg: &[u64], aggw: Option<&[f64]>, rule: (Fpr95Rule, AuprRule)) -> Binned {
    let bins = g.bins();
    let mut c = Counts::default();
    let (mut wide_v, mut weight, mut wsum) = (vec![], vec![], 0.0f64);
    let (mut tp, mut fp) = (0u64, 0u64);
    let (mut pn, mut ap_err) = (0u128, 0.0f64);
    let total_p: u64 = (0..bins).map(|k| agg[2 * k + 1]).sum();
    let total_n: u64 = (0..bins).map(|k| agg[2 * k]).sum();
    let mut fpr_bound = None;
    for k in (0..bins).rev() {
        let (nb, pb) = (agg[2 * k], agg[2 * k + 1]);
        let wide = !g.single_key(k);
        if pb > 0 {
            if wide {
                pn += pb as u128 * nb as u128;
                let hi = (tp + pb) as f64 / (tp + pb + fp) as f64;
                let lo = (tp + 1) as f64 / (tp + 1 + fp + nb) as f64;
                ap_err += pb as f64 / total_p as f64 * (hi - lo);
            }
            if fpr_bound.is_none() && (tp + pb) as f64 / total_p as f64 >= 0.95 {
                fpr_bound = Some(if wide { nb as f64 / total_n.max(1) as f64 } else { 0.0 });
            }
            c.thresholds.push(g.lower(k));
            c.fp_gt.push(fp);
            tp += pb;
            c.tp.push(tp);
            c.fp.push(fp + nb);
            wide_v.push(wide);
            if let Some(w) = aggw {
                wsum += w[k];
                weight.push(wsum);
            }
        }
        fp += nb;
    }
    c.positives = total_p;
    c.negatives = total_n;
    let auroc = (total_p > 0 && total_n > 0).then(|| pn as f64 / (2.0 * total_p as f64 * total_n as f64));
    let aupr = (rule.1 == AuprRule::Ap).then_some(ap_err);
    let fpr = if rule.0 == Fpr95Rule::First { fpr_bound } else { None };
    Binned { c, wide: wide_v, weight, bound: [auroc, aupr, fpr] }
}

/// numpy's linear 2.5 / 97.5 % percentiles of `v` (None when empty).
fn ci(mut v: Vec<f64>) -> Option<[f64; 2]> {
    v.sort_by(|a, b| a.total_cmp(b));
    Some([crate::metrics::np_percentile(&v, 0.025)?, crate::metrics::np_percentile(&v, 0.975)?])
}

/// Largest per-replicate bound of figure `f` (None if any is unbounded).
fn max_bound(mut it: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    it.try_fold(0.0f64, |a, b| b.map(|b| a.max(b)))
}

fn cell_intervals(reps: &[Vec<Rep>], m: usize, b: &HistBoot, samples: u32, seed: u64) -> Bootstrap {
    let def: Vec<&Rep> = reps.iter().map(|r| &r[m]).filter(|r| r.px.is_some()).collect();
    let col = |f: usize| ci(def.iter().filter_map(|r| r.px.unwrap()[f]).collect());
    let bound = |f: usize| if def.is_empty() { None } else { max_bound(def.iter().map(|r| r.bound[f])) };
    Bootstrap {
        samples,
        seed,
        defined: def.len() as u32,
        auroc: col(0),
        aupr: col(1),
        fpr95: col(2),
        f1: col(3),
        aupro: col(4),
        method: Some("histogram".into()),
        bins: Some(b.grids[m].bins() as u32),
        error_bound: Some(ErrorBound::of(std::array::from_fn(bound))),
        image_auroc: ci(reps.iter().filter_map(|r| r[m].image_auroc).collect()),
    }
}

fn point_ci(reps: &[Vec<Rep>], m: usize, k: usize) -> PointCi {
    let at = |f: fn(&(Option<f64>, Option<f64>)) -> Option<f64>| ci(reps.iter().filter_map(|r| r[m].ops[k].as_ref().and_then(f)).collect());
    PointCi { far: at(|o| o.0), frr: at(|o| o.1) }
}

/// Per replicate A − B where both are defined, then the interval.
fn diff_ci(reps: &[Vec<Rep>], a: usize, b: usize, soft: [Option<usize>; 2]) -> DiffCi {
    let both: Vec<(&Rep, &Rep)> = reps.iter().map(|r| (&r[a], &r[b])).filter(|(x, y)| x.px.is_some() && y.px.is_some()).collect();
    let px = |f: usize| ci(both.iter().filter_map(|(x, y)| Some(x.px.unwrap()[f]? - y.px.unwrap()[f]?)).collect());
    let bound = |f: usize| if both.is_empty() { None } else { max_bound(both.iter().map(|(x, y)| Some(x.bound[f]? + y.bound[f]?))) };
    let frr = |k: Option<usize>| {
        let k = k?;
        ci(reps.iter().filter_map(|r| Some(r[a].ops.get(k)?.as_ref()?.1? - r[b].ops.get(k)?.as_ref()?.1?)).collect())
    };
    DiffCi {
        a,
        b,
        defined: both.len() as u32,
        auroc: px(0),
        aupr: px(1),
        fpr95: px(2),
        f1: px(3),
        aupro: px(4),
        image_auroc: ci(reps.iter().filter_map(|r| Some(r[a].image_auroc? - r[b].image_auroc?)).collect()),
        pixel_frr: frr(soft[0]),
        image_frr: frr(soft[1]),
        error_bound: ErrorBound::of(std::array::from_fn(bound)),
    }
}

/// The exact bootstrap over held score maps (the oracle of the histogram
/// bootstrap's tests): 95 % percentile intervals over resampled images,
/// per method, on the draws of [`draws`] (paired): AUROC, AUPR, FPR95 and
/// best F1.
pub fn bootstrap(cache: &[(ScoreMaps, Vec<u8>)], nm: usize, samples: u32, seed: u64, rule: (Fpr95Rule, crate::metrics::AuprRule)) -> Vec<Bootstrap> {
    bootstrap_exact(cache, nm, samples, seed, rule, false).expect("no region labelling without regions")
}

/// [`bootstrap`], with `regions` also AUPRO: each replicate pools the drawn
/// images' regions (an image drawn twice brings its regions twice) and
/// runs the exact weighted engine (`region` module). Errors on maps and
/// labels of different shapes.
pub fn bootstrap_exact(cache: &[(ScoreMaps, Vec<u8>)], nm: usize, samples: u32, seed: u64, rule: (Fpr95Rule, crate::metrics::AuprRule), regions: bool) -> anyhow::Result<Vec<Bootstrap>> {
    use rayon::prelude::*;
    let n = cache.len();
    let rw = if regions {
        Some(cache.iter().map(|(s, l)| crate::metrics::region::region_weights(l, s.h, s.w)).collect::<anyhow::Result<Vec<_>>>()?)
    } else {
        None
    };
    let reps: Vec<Vec<Option<[Option<f64>; PX]>>> = (0..samples)
        .into_par_iter()
        .map(|r| {
            let draw = draws(seed, r, n);
            (0..nm).map(|m| exact_replicate(cache, &draw, m, rule, rw.as_deref())).collect()
        })
        .collect();
    Ok(intervals(&reps, nm, samples, seed, "exact"))
}

/// The exact [`PX`] figures of method `m` on the images `draw` (both
/// streaming passes over the cached maps; AUPRO with region weights `rw`,
/// one per image of `cache`); `None` when AUROC, AUPR or FPR95 is
/// undefined. Public as the oracle of paired (drift) intervals in tests.
pub fn exact_replicate(cache: &[(ScoreMaps, Vec<u8>)], draw: &[usize], m: usize, rule: (Fpr95Rule, crate::metrics::AuprRule), rw: Option<&[crate::metrics::region::RegionWeights]>) -> Option<[Option<f64>; PX]> {
    let mut pc = PositiveCollector::new();
    let mut k = 0u64;
    for &i in draw {
        match rw {
            Some(rw) => {
                pc.add_weighted(&cache[i].0.maps[m], &cache[i].1, &rw[i].weights);
                k += rw[i].regions as u64;
            }
            None => pc.add(&cache[i].0.maps[m], &cache[i].1, None),
        }
    }
    let mut rk = pc.finish();
    for &i in draw {
        rk.add(&cache[i].0.maps[m], &cache[i].1);
    }
    let (c, au) = match rw {
        Some(_) => {
            let wc = rk.finish_weighted().ok()?;
            let au = crate::metrics::region::aupro(&wc.counts, &wc.tp_weight, k, crate::metrics::region::MAX_FPR);
            (wc.counts, au)
        }
        None => (rk.finish().ok()?, None),
    };
    let s = c.summary_with(rule.0, rule.1);
    Some([Some(s.auroc?), Some(s.aupr?), Some(s.fpr95?), s.f1, au])
}

/// Replicate `r`'s draw: `n` image indices with replacement from a ChaCha8
/// stream seeded by (seed, r), shared by every method (paired).
pub fn draws(seed: u64, r: u32, n: usize) -> Vec<usize> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(r as u64));
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

/// One split's per-image values under `average = "images"`:
/// `per_image[m]` holds method m's [AUROC, AUPR, FPR95, F1, AUPR-In,
/// FPR95-In] of the images with both classes, in image order, and
/// `defined[i]` says whether image i has both classes (`SplitEval::per_image`).
#[derive(Clone, Copy)]
pub struct PerImage<'a> {
    pub per_image: &'a [Vec<[Option<f64>; 6]>],
    pub defined: &'a [bool],
}

/// Image index → its row among the images whose flag is set (`None`
/// where unset): per-image values are stored for those images only.
fn rows_of(flags: &[bool]) -> Vec<Option<usize>> {
    let mut k = 0;
    flags
        .iter()
        .map(|&f| {
            k += f as usize;
            f.then(|| k - 1)
        })
        .collect()
}

/// [`PerImage`] with each image's row among the defined images resolved.
struct ImageRows<'a> {
    vals: &'a [Vec<[Option<f64>; 6]>],
    row: Vec<Option<usize>>,
}

impl<'a> ImageRows<'a> {
    fn new(p: PerImage<'a>) -> anyhow::Result<ImageRows<'a>> {
        let row = rows_of(p.defined);
        let k = p.defined.iter().filter(|&&d| d).count();
        for (m, v) in p.per_image.iter().enumerate() {
            anyhow::ensure!(v.len() == k, "internal error: method {m} has {} per-image values for {k} images with both classes", v.len());
        }
        Ok(ImageRows { vals: p.per_image, row })
    }

    /// Method m's mean (AUROC, AUPR, FPR95, F1) over the images of `draw`
    /// (an image drawn twice counts twice), computed as the point estimate
    /// (`SplitEval::image_means`) computes it: images without both classes
    /// skipped, `np_mean` of a column. `None` when no drawn image has both
    /// classes or any drawn image's AUROC, AUPR or FPR95 is undefined; the
    /// F1 mean alone is `None` when a drawn image's F1 is.
    fn mean(&self, m: usize, draw: &[usize]) -> Option<[Option<f64>; 4]> {
        let vals: Vec<&[Option<f64>; 6]> = draw.iter().filter_map(|&i| self.row[i]).map(|j| &self.vals[m][j]).collect();
        if vals.is_empty() {
            return None;
        }
        let col = |c: usize| -> Option<f64> {
            let v: Option<Vec<f64>> = vals.iter().map(|x| x[c]).collect();
            v.map(|v| crate::metrics::conventions::np_mean(&v))
        };
        Some([Some(col(0)?), Some(col(1)?), Some(col(2)?), col(3)])
    }
}

/// `average = "images"`: the same paired image draws, each replicate's
/// figure the mean of the drawn images' per-image AUROC / AUPR / FPR95 / F1
/// ([`ImageRows::mean`]); per method the cell's intervals and per pair of
/// methods (i < j, column order) the intervals of the replicates' A − B.
/// Needs only the per-image values, so it works at any split size and
/// sharded. Exact (nothing is binned): the differences' error bound is 0;
/// image AUROC and the FRR points are not bootstrapped in this mode.
pub fn bootstrap_images(p: PerImage, samples: u32, seed: u64) -> anyhow::Result<HistIntervals> {
    use rayon::prelude::*;
    let rows = ImageRows::new(p)?;
    let (n, nm) = (p.defined.len(), p.per_image.len());
    let reps: Vec<Vec<Option<[Option<f64>; 4]>>> = (0..samples)
        .into_par_iter()
        .map(|r| {
            let draw = draws(seed, r, n);
            (0..nm).map(|m| rows.mean(m, &draw)).collect()
        })
        .collect();
    // no AUPRO in this mode (regions need `average = "pixels"`)
    let full: Vec<Vec<Option<[Option<f64>; PX]>>> = reps.iter().map(|r| r.iter().map(|x| x.map(|[a, b, c, f]| [a, b, c, f, None])).collect()).collect();
    let cells = intervals(&full, nm, samples, seed, "image_means");
    let mut diffs = vec![];
    for a in 0..nm {
        for b in a + 1..nm {
            let both: Vec<([Option<f64>; 4], [Option<f64>; 4])> = reps.iter().filter_map(|r| Some((r[a]?, r[b]?))).collect();
            let d = |k: usize| ci(both.iter().filter_map(|(x, y)| Some(x[k]? - y[k]?)).collect());
            let exact = Some(0.0);
            diffs.push(DiffCi {
                a,
                b,
                defined: both.len() as u32,
                auroc: d(0),
                aupr: d(1),
                fpr95: d(2),
                f1: d(3),
                aupro: None,
                image_auroc: None,
                pixel_frr: None,
                image_frr: None,
                error_bound: ErrorBound::of([exact, exact, exact, exact, None]),
            });
        }
    }
    Ok(HistIntervals { cells, points: vec![], diffs })
}

/// `average = "images"` under drift: per method the intervals of the
/// change drifted − clean of the per-image means, both splits' means taken
/// on the same draw (images paired by index; each split skips its own
/// images without both classes). Exact: bound 0.
pub fn image_mean_deltas(clean: PerImage, drifted: PerImage, samples: u32, seed: u64) -> anyhow::Result<Vec<crate::metrics::dashboard::DeltaCi>> {
    use rayon::prelude::*;
    let n = clean.defined.len();
    anyhow::ensure!(n == drifted.defined.len(), "internal error: paired splits of {n} and {} images", drifted.defined.len());
    let nm = clean.per_image.len();
    anyhow::ensure!(nm == drifted.per_image.len(), "internal error: paired splits of {nm} and {} methods", drifted.per_image.len());
    let (ca, cb) = (ImageRows::new(clean)?, ImageRows::new(drifted)?);
    let reps: Vec<Vec<Option<[Option<f64>; 4]>>> = (0..samples)
        .into_par_iter()
        .map(|r| {
            let draw = draws(seed, r, n);
            (0..nm)
                .map(|m| {
                    let (x, y) = (ca.mean(m, &draw)?, cb.mean(m, &draw)?);
                    Some([0, 1, 2, 3].map(|k| Some(y[k]? - x[k]?)))
                })
                .collect()
        })
        .collect();
    Ok((0..nm)
        .map(|m| {
            let col = |k: usize| ci(reps.iter().filter_map(|r| r[m]?[k]).collect());
            // AUROC, AUPR, FPR95, F1 exact; no AUPRO in this mode
            crate::metrics::dashboard::DeltaCi { interval: std::array::from_fn(|k| if k < 4 { col(k) } else { None }), bound: std::array::from_fn(|k| (k < 4).then_some(0.0)) }
        })
        .collect())
}

/// 2.5 % and 97.5 % percentiles (numpy's linear rule) of each method's
/// defined replicates (each figure over those where it is defined).
fn intervals(reps: &[Vec<Option<[Option<f64>; PX]>>], nm: usize, samples: u32, seed: u64, method: &str) -> Vec<Bootstrap> {
    (0..nm)
        .map(|m| {
            let vals: Vec<[Option<f64>; PX]> = reps.iter().filter_map(|r| r[m]).collect();
            let col = |f: usize| ci(vals.iter().filter_map(|x| x[f]).collect());
            Bootstrap {
                samples,
                seed,
                defined: vals.len() as u32,
                auroc: col(0),
                aupr: col(1),
                fpr95: col(2),
                f1: col(3),
                aupro: col(4),
                method: Some(method.into()),
                bins: None,
                error_bound: None,
                image_auroc: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{HistIntervals, PerImage, bootstrap_images, image_mean_deltas};

    fn boot(per_image: &[Vec<[Option<f64>; 6]>], defined: &[bool], samples: u32, seed: u64) -> anyhow::Result<HistIntervals> {
        bootstrap_images(PerImage { per_image, defined }, samples, seed)
    }

    fn row(v: f64) -> [Option<f64>; 6] {
        [Some(v), Some(v), Some(v), Some(v), None, None]
    }

    #[test]
    fn per_image_bootstrap_means_the_drawn_images() {
        // all images alike: every replicate is that value
        let b = boot(&[vec![row(0.7); 5]], &[true; 5], 100, 3).unwrap().cells;
        assert_eq!((b[0].defined, b[0].auroc), (100, Some([0.7, 0.7])));
        // two images: a replicate's mean is 0.2, 0.5 or 0.8, and both extremes occur in 400 draws
        let b = boot(&[vec![row(0.2), row(0.8)]], &[true, true], 400, 0).unwrap().cells;
        let [lo, hi] = b[0].auroc.unwrap();
        assert!([0.2, 0.5, 0.8].iter().any(|&v| (lo - v).abs() < 1e-12) && (lo - 0.2).abs() < 1e-12 && (hi - 0.8).abs() < 1e-12, "{lo} {hi}");
        // an image without both classes never counts; replicates drawing only it are undefined
        let b = boot(&[vec![row(0.3)]], &[false, true], 200, 1).unwrap().cells;
        assert!(b[0].defined < 200 && b[0].defined > 100, "{}", b[0].defined);
        assert_eq!(b[0].auroc, Some([0.3, 0.3]));
        // paired: two methods see the same draws, so a method compared with a copy of itself agrees exactly
        let m = vec![row(0.1), row(0.9), row(0.4)];
        let b = boot(&[m.clone(), m], &[true; 3], 50, 9).unwrap();
        assert_eq!(b.cells[0], b.cells[1]);
        assert_eq!((b.diffs.len(), b.diffs[0].auroc, b.diffs[0].fpr95, b.diffs[0].f1, b.diffs[0].defined), (1, Some([0.0, 0.0]), Some([0.0, 0.0]), Some([0.0, 0.0]), 50));
        // an image whose F1 is undefined leaves the F1 mean of every
        // replicate that draws it undefined, and the other figures alone
        let mut f1_gap = vec![row(0.2), row(0.6)];
        f1_gap[0][3] = None;
        let b = boot(&[f1_gap], &[true, true], 200, 4).unwrap().cells;
        assert_eq!((b[0].defined, b[0].f1), (200, Some([0.6, 0.6])));
        assert!(b[0].auroc.is_some_and(|[lo, hi]| lo < hi));
        // a drifted copy equal to its clean split changes nothing, exactly
        let m = [vec![row(0.1), row(0.9), row(0.4)]];
        let p = PerImage { per_image: &m, defined: &[true, false, true, true] };
        let d = image_mean_deltas(p, p, 50, 9).unwrap();
        // (AUPRO: not computed with per-image means)
        let z = Some([0.0, 0.0]);
        assert_eq!((d[0].interval, d[0].bound), ([z, z, z, z, None], [Some(0.0), Some(0.0), Some(0.0), Some(0.0), None]));
        // ... and a shifted copy moves by the shift (x + 0.1 per image)
        let up = [m[0].iter().map(|r| r.map(|v| v.map(|x| x + 0.1))).collect::<Vec<_>>()];
        let d = image_mean_deltas(p, PerImage { per_image: &up, defined: p.defined }, 50, 9).unwrap();
        let [lo, hi] = d[0].interval[0].unwrap();
        assert!((lo - 0.1).abs() < 1e-12 && (hi - 0.1).abs() < 1e-12, "{lo} {hi}");
        // per-image rows that do not match the defined images are an error, not a number
        assert!(boot(&[vec![row(0.3)]], &[true, true], 10, 0).is_err());
    }
}
