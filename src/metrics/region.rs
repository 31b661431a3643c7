//! Region-level metrics: PRO / AUPRO (MVTec AD) and the SegmentMeIfYouCan
//! component metrics (sIoU, PPV, mean F1).
//!
//! Why this room exists: pixel metrics let one large anomaly outweigh many
//! small ones. Both families here score *connected components* instead.
//! Components are 8-connected ([`label_components`]), numbered in raster
//! order of their first pixel, exactly as `scipy.ndimage.label(m,
//! structure=np.ones((3, 3)))` numbers them.
//!
//! # PRO / AUPRO (Bergmann et al., MVTec AD, IJCV 2021)
//!
//! Ground-truth regions are the 8-connected components of the anomaly pixels
//! (`label::is_anomaly`, any anomaly type; void pixels are neither region
//! nor normal, so they also separate regions) of every image, all images of
//! a split pooled (`K` regions in all). At threshold `t`:
//! `PRO(t) = 1/K Σ_k |{p ∈ R_k : s_p ≥ t}| / |R_k|` and
//! `FPR(t) = |{normal p : s_p ≥ t}| / #normal`. AUPRO is the area under PRO
//! vs FPR for FPR ∈ [0, max_fpr] (trapezoids; the last segment linearly
//! interpolated at `max_fpr`), divided by `max_fpr` — the MVTec reference
//! `compute_pro` + `trapezoid(x_max=0.3)` / 0.3.
//!
//! Exactness: PRO is a *weighted* TPR in which every anomaly pixel of region
//! `k` weighs `1/|R_k|`. So it rides on the exact two-pass engine: the
//! pipeline computes [`region_weights`] per image (labels only, shared by all
//! methods) and feeds them to [`PositiveCollector::add_weighted`] in pass 1;
//! pass 2 ([`Ranker::add`]) is unchanged; [`Ranker::finish_weighted`] gives
//! the cumulative weight per distinct positive score, and [`aupro`] divides
//! it by `K` (the sum of `regions` over the images) at the end. No image is
//! held: per image,
//!
//! ```text
//! // pass 1 (per image, per method m)
//! let rw = region_weights(&labels, h, w)?;      // once per image
//! regions += rw.regions as u64;                 // once per image
//! collectors[m].add_weighted(&scores[m], &labels, &rw.weights);
//! // pass 2: rankers[m].add(&scores[m], &labels) as before
//! let wc = rankers[m].finish_weighted()?;       // wc.counts == finish()
//! let au = aupro(&wc.counts, &wc.tp_weight, regions, 0.3);
//! ```
//!
//! Negative-only thresholds lie on horizontal segments of the PRO curve, so
//! the statistic (one point per distinct *positive* score, plus its corner)
//! traces exactly the polyline of the reference's one-point-per-distinct-score
//! curve; the only differences are floating-point summation order (~1e-15).
//!
//! # SegmentMeIfYouCan component metrics (Chan et al., NeurIPS 2021 D&B)
//!
//! Followed: the official evaluation code, `road_anomaly_benchmark/metrics/
//! instance_segmentation.py` of github.com/SegmentMeIfYouCan/road-anomaly-
//! benchmark (mirror `adynathos/road-anomaly-benchmark`, newest commit
//! da3bc77: `default_instancer`, `segment_metrics`, `MetricSegment.
//! aggregate`), which matches §4 of the paper (sIoU, PPV, F1*). Per image:
//!
//! 1. Binarise: predicted anomalous where `score > thresh_p` (official,
//!    [`ComponentConfig::strict`] = true) and the pixel is not void. The
//!    official `thresh_p` is the pixel-level threshold maximising F1 on the
//!    evaluated split's pixel PR curve (`best_f1_threshold`, read off a
//!    768-bin percentile-binned curve). Here the caller passes the threshold;
//!    with this crate's exact `Counts::best_f1` threshold (a pixel counts when
//!    `score ≥ t`, SPEC §5) use `strict = false` to binarise at exactly that
//!    operating point (the default of the constructors); for the honest
//!    evaluation take it from the validation split.
//! 2. GT components: 8-connected components of the anomaly pixels (official:
//!    label value 1; here every anomaly type). Predicted components:
//!    8-connected components of the binarised, void-free map.
//! 3. Predicted components with fewer than `min_pred_size` pixels are
//!    dropped (official `thresh_segsize`: 500 anomaly track, 50 obstacle
//!    track); GT components with fewer than `min_gt_size` pixels become void
//!    (official `thresh_instsize`: 100 / 10). Everything after this is
//!    restricted to the region of interest (ROI) = non-void pixels after that
//!    step, so a predicted component loses its pixels inside a dropped GT
//!    component (and vanishes if it has none left).
//! 4. For each GT component `k`, with `K̂(k)` the predicted components that
//!    intersect it: `sIoU(k) = |k ∩ ∪K̂(k)| / |(k ∪ ∪K̂(k)) \ A(k)|`, where
//!    `A(k)` = pixels of `∪K̂(k)` that belong to *other* GT components.
//!    For each predicted component `k̂`: `PPV(k̂) = |k̂ ∩ ∪K(k̂)| / |k̂|`
//!    (its share of pixels in GT components; the official code's `prec_pred`,
//!    used for false positives since commit 76665e5). The symmetric
//!    `sIoU(k̂)` (the official `sIoU_pred`) is reported too.
//! 5. For each δ in `deltas` (official `np.linspace(0.25, 0.75, 11)`): TP =
//!    #GT components with `sIoU ≥ δ`, FN = # with `sIoU < δ`, FP = #predicted
//!    components with `PPV < δ`, summed over the images of the split;
//!    `F1(δ) = 2TP / (2TP + FN + FP)`; mean F1 = the mean over δ.
//!    Mean sIoU / PPV are means over all components of the split (pooled).
//!
//! Deliberate difference: the official size filter also loops over label 0
//! (the background), so an image whose non-anomaly pixels (normal + void)
//! number fewer than `thresh_instsize` has them all voided; that can only
//! happen on toy images and is not reproduced.

use super::Counts;
use super::engine::{PositiveCollector, WeightedCounts};
use crate::data::label;
use anyhow::{Result, ensure};
use serde::Serialize;

/// Check that a `[h, w]` image has `len` pixels and fits u32 component ids.
fn check_shape(what: &str, len: usize, h: usize, w: usize) -> Result<()> {
    let n = h.checked_mul(w);
    ensure!(n == Some(len), "{what}: {len} values for a {h}×{w} image");
    ensure!(len < u32::MAX as usize, "{what}: {h}×{w} image is too large for component labelling");
    Ok(())
}

#[inline]
fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let g = parent[parent[x as usize] as usize];
        parent[x as usize] = g;
        x = g;
    }
    x
}

/// 8-connected labelling of the pixels where `on(i)` holds (row-major
/// `[h, w]`, `h·w` checked by the caller). Returns per-pixel ids (0 = off,
/// components 1..=n in raster order of their first pixel) and `n`.
fn label8(h: usize, w: usize, on: impl Fn(usize) -> bool) -> (Vec<u32>, usize) {
    let mut lab = vec![0u32; h * w];
    // union-find over provisional labels; index 0 unused
    let mut parent: Vec<u32> = vec![0];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if !on(i) {
                continue;
            }
            let mut cur = 0u32;
            let visit = |j: usize, cur: &mut u32, parent: &mut Vec<u32>| {
                let l = lab[j];
                if l == 0 {
                    return;
                }
                if *cur == 0 {
                    *cur = l;
                } else if l != *cur {
                    let (a, b) = (find(parent, *cur), find(parent, l));
                    if a != b {
                        let (lo, hi) = (a.min(b), a.max(b));
                        parent[hi as usize] = lo;
                    }
                }
            };
            if y > 0 {
                if x > 0 {
                    visit(i - w - 1, &mut cur, &mut parent);
                }
                visit(i - w, &mut cur, &mut parent);
                if x + 1 < w {
                    visit(i - w + 1, &mut cur, &mut parent);
                }
            }
            if x > 0 {
                visit(i - 1, &mut cur, &mut parent);
            }
            if cur == 0 {
                cur = parent.len() as u32;
                parent.push(cur);
            }
            lab[i] = cur;
        }
    }
    let mut id = vec![0u32; parent.len()];
    let mut n = 0u32;
    for l in lab.iter_mut() {
        if *l != 0 {
            let r = find(&mut parent, *l) as usize;
            if id[r] == 0 {
                n += 1;
                id[r] = n;
            }
            *l = id[r];
        }
    }
    (lab, n as usize)
}

/// 8-connected component labelling of a binary row-major `[h, w]` mask:
/// per-pixel component ids (0 = background, components `1..=n` numbered in
/// raster order of their first pixel, as `scipy.ndimage.label` with a 3×3
/// structure) and `n`. Errors if `mask.len() != h·w`.
pub fn label_components(mask: &[bool], h: usize, w: usize) -> Result<(Vec<u32>, usize)> {
    check_shape("mask", mask.len(), h, w)?;
    Ok(label8(h, w, |i| mask[i]))
}

/// Per-pixel PRO weights of one image (see the module doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegionWeights {
    /// `1/|R_k|` for an anomaly pixel of region `k`, 0 for normal and void
    /// pixels. Unnormalised: the `1/K` comes at the end, in [`aupro`].
    pub weights: Vec<f64>,
    /// Number of regions `K_image` in this image.
    pub regions: usize,
    /// `|R_k|`, in region order (raster order of first pixel).
    pub sizes: Vec<u64>,
}

/// Ground-truth regions of one image (8-connected components of its
/// anomaly pixels, void excluded) and the per-pixel weights `1/|R_k|` to
/// feed [`PositiveCollector::add_weighted`]. The split's `K` is the sum of
/// `regions` over its images. Errors if `labels.len() != h·w`.
pub fn region_weights(labels: &[u8], h: usize, w: usize) -> Result<RegionWeights> {
    check_shape("labels", labels.len(), h, w)?;
    let (lab, n) = label8(h, w, |i| label::is_anomaly(labels[i]));
    let mut sizes = vec![0u64; n + 1];
    for &l in &lab {
        sizes[l as usize] += 1;
    }
    let inv: Vec<f64> = sizes.iter().map(|&s| if s == 0 { 0.0 } else { 1.0 / s as f64 }).collect();
    let weights = lab.iter().map(|&l| if l == 0 { 0.0 } else { inv[l as usize] }).collect();
    sizes.remove(0);
    Ok(RegionWeights { weights, regions: n, sizes })
}

/// The PRO curve as (FPR, PRO) points, FPR non-decreasing: `(0, 0)`, per
/// distinct positive score the corner `(fp_gt[i]/N, W[i−1]/K)` and the point
/// `(fp[i]/N, W[i]/K)`, then `(1, W_last/K)`, where `W = tp_weight` from
/// [`Ranker::finish_weighted`] over [`region_weights`] and `K = regions`.
/// PRO values are clipped to [0, 1] (as the reference does). `None` when
/// there is no normal pixel, no region, or `tp_weight` does not match `c`.
pub fn pro_curve(c: &Counts, tp_weight: &[f64], regions: u64) -> Option<Vec<(f64, f64)>> {
    if c.negatives == 0
        || regions == 0
        || tp_weight.len() != c.tp.len()
        || c.fp.len() != c.tp.len()
        || c.fp_gt.len() != c.tp.len()
    {
        return None;
    }
    let (n, k) = (c.negatives as f64, regions as f64);
    let y = |wt: f64| (wt / k).clamp(0.0, 1.0);
    let mut pts = Vec::with_capacity(2 * tp_weight.len() + 2);
    pts.push((0.0, 0.0));
    let mut prev = 0.0;
    for ((&wt, &fp), &fp_gt) in tp_weight.iter().zip(&c.fp).zip(&c.fp_gt) {
        pts.push((fp_gt as f64 / n, y(prev)));
        pts.push((fp as f64 / n, y(wt)));
        prev = wt;
    }
    pts.push((1.0, y(prev)));
    Some(pts)
}

/// MVTec's AUPRO integration range: FPR ∈ [0, 0.3].
pub const MAX_FPR: f64 = 0.3;

/// AUPRO: area under [`pro_curve`] for FPR ∈ [0, `max_fpr`] (trapezoids,
/// the segment crossing `max_fpr` linearly interpolated), divided by
/// `max_fpr` so it lies in [0, 1]. MVTec uses `max_fpr = 0.3`. `None` when
/// the curve is undefined or `max_fpr` is not in (0, 1].
///
/// The histogram bootstrap calls this too, on a binned statistic (one tied
/// score per bin, `metrics::bootstrap`): one integration rule for the point
/// estimate and every replicate.
pub fn aupro(c: &Counts, tp_weight: &[f64], regions: u64, max_fpr: f64) -> Option<f64> {
    if !(max_fpr > 0.0 && max_fpr <= 1.0) {
        return None;
    }
    Some(area_to(&pro_curve(c, tp_weight, regions)?, max_fpr) / max_fpr)
}

/// Trapezoidal area under the polyline `pts` (x non-decreasing) for
/// x ∈ [0, `max_x`], the segment crossing `max_x` linearly interpolated
/// (the MVTec reference's `trapezoid(x_max=…)`).
fn area_to(pts: &[(f64, f64)], max_x: f64) -> f64 {
    let mut area = 0.0;
    for s in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (s[0], s[1]);
        if x0 >= max_x {
            break;
        }
        if x1 <= max_x {
            area += 0.5 * (y0 + y1) * (x1 - x0);
        } else {
            let yi = y0 + (y1 - y0) * (max_x - x0) / (x1 - x0);
            area += 0.5 * (yi + y0) * (max_x - x0);
            break;
        }
    }
    area
}

/// Bound on |[`aupro`] of a binned statistic − AUPRO of the exact one| when
/// `c` / `tp_weight` are a binned statistic (entry i = one bin holding
/// anomaly pixels, all its pixels one tied score; `wide[i]`: the bin holds
/// more than one distinct score) whose bins' lower edges are thresholds of
/// the exact statistic.
///
/// Why it holds: at a bin's lower edge the counts at `score ≥ edge` are the
/// exact ones, so every corner of the binned [`pro_curve`] is a point of the
/// exact curve, and between a bin's two corners `(x0, y0)` (threshold = the
/// edge above it) and `(x1, y1)` both curves are non-decreasing in x and y,
/// so both lie in the box `[x0, x1] × [y0, y1]`. Segments between bins
/// without anomaly pixels are horizontal in both curves (identical), and a
/// one-score bin is an exact tie (identical diagonal). The binned curve is
/// the box's diagonal (area ½·Δx·Δy above y0), the exact one has area in
/// `[0, Δx·Δy]` above y0, so they differ by at most `½ Δx Δy`. The box
/// crossing `max_fpr` is only integrated up to it: with `w = max_fpr − x0`
/// both areas lie in `[0, w·Δy]` above y0, so at most `w Δy`. Boxes right of
/// `max_fpr` do not count. Divided by `max_fpr` like [`aupro`]. PRO
/// clipping to [0, 1] is monotone, so it keeps the argument (the bound uses
/// the clipped corners). `None` where [`aupro`] is.
pub fn aupro_bin_bound(c: &Counts, tp_weight: &[f64], regions: u64, wide: &[bool], max_fpr: f64) -> Option<f64> {
    if !(max_fpr > 0.0 && max_fpr <= 1.0) || wide.len() != c.tp.len() {
        return None;
    }
    let pts = pro_curve(c, tp_weight, regions)?;
    let mut err = 0.0;
    // entry i: corner pts[1 + 2i] → point pts[2 + 2i]
    for (i, &w) in wide.iter().enumerate() {
        let ((x0, y0), (x1, y1)) = (pts[1 + 2 * i], pts[2 + 2 * i]);
        if x0 >= max_fpr {
            break;
        }
        if w {
            err += if x1 <= max_fpr { 0.5 * (x1 - x0) * (y1 - y0) } else { (max_fpr - x0) * (y1 - y0) };
        }
    }
    Some(err / max_fpr)
}

/// [`aupro`] of a [`WeightedCounts`].
pub fn aupro_weighted(wc: &WeightedCounts, regions: u64, max_fpr: f64) -> Option<f64> {
    aupro(&wc.counts, &wc.tp_weight, regions, max_fpr)
}

/// Both passes over in-memory images `(scores, labels, h, w)` (tests, `bench
/// eval`): the weighted statistic and the region count `K`.
pub fn pro_counts_of(images: &[(&[f32], &[u8], usize, usize)]) -> Result<(WeightedCounts, u64)> {
    let mut pc = PositiveCollector::new();
    let mut regions = 0u64;
    for &(s, l, h, w) in images {
        check_shape("scores", s.len(), h, w)?;
        let rw = region_weights(l, h, w)?;
        regions += rw.regions as u64;
        pc.add_weighted(s, l, &rw.weights);
    }
    let mut r = pc.finish();
    for &(s, l, _, _) in images {
        r.add(s, l);
    }
    Ok((r.finish_weighted()?, regions))
}

// ---------------------------------------------------------------------------
// SegmentMeIfYouCan component metrics

/// The official sIoU / PPV thresholds, `np.linspace(0.25, 0.75, 11)` bit for
/// bit (`i·(0.5/10) + 0.25`, the last one exactly 0.75).
pub fn smiyc_deltas() -> Vec<f64> {
    (0..11).map(|i| if i == 10 { 0.75 } else { i as f64 * (0.5 / 10.0) + 0.25 }).collect()
}

/// How one image is turned into components (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentConfig {
    /// Binarisation threshold on the score map.
    pub threshold: f32,
    /// `true`: anomalous when `score > threshold` (official code);
    /// `false`: `score ≥ threshold` (this crate's convention, SPEC §5).
    pub strict: bool,
    /// Predicted components smaller than this are dropped.
    pub min_pred_size: u64,
    /// GT components smaller than this become void.
    pub min_gt_size: u64,
    /// sIoU / PPV thresholds δ.
    pub deltas: Vec<f64>,
}

/// SegmentMeIfYouCan's size filters (`component_track`, `--component-track`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    /// RoadAnomaly21: predicted components < 500 px dropped, GT < 100 px voided.
    #[default]
    Anomaly,
    /// RoadObstacle21: 50 / 10 px.
    Obstacle,
}

impl Track {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Track::Anomaly => "anomaly",
            Track::Obstacle => "obstacle",
        }
    }
}

impl ComponentConfig {
    /// The size filters of a SegmentMeIfYouCan track, at threshold `t`.
    pub fn track(track: Track, threshold: f32) -> Self {
        match track {
            Track::Anomaly => Self::anomaly_track(threshold),
            Track::Obstacle => Self::obstacle_track(threshold),
        }
    }

    /// Official RoadAnomaly21 settings (`SegEval-AnomalyTrack`): predicted
    /// components < 500 px dropped, GT components < 100 px voided; `≥ t`.
    pub fn anomaly_track(threshold: f32) -> Self {
        ComponentConfig { threshold, strict: false, min_pred_size: 500, min_gt_size: 100, deltas: smiyc_deltas() }
    }

    /// Official RoadObstacle21 settings (`SegEval-ObstacleTrack`): 50 / 10.
    pub fn obstacle_track(threshold: f32) -> Self {
        ComponentConfig { threshold, strict: false, min_pred_size: 50, min_gt_size: 10, deltas: smiyc_deltas() }
    }
}

/// Component scores of one image, components in raster order of their
/// first pixel.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImageComponents {
    /// sIoU of each (kept) GT component.
    pub siou_gt: Vec<f64>,
    /// PPV of each (kept, in-ROI) predicted component.
    pub ppv: Vec<f64>,
    /// Symmetric sIoU of each predicted component (official `sIoU_pred`).
    pub siou_pred: Vec<f64>,
}

/// sIoU / PPV of every component of one image (steps 1–4 of the module
/// doc). Exact integer pixel counts, one division per value. Errors on a
/// shape mismatch; NaN scores are never anomalous.
pub fn image_components(
    scores: &[f32],
    labels: &[u8],
    h: usize,
    w: usize,
    cfg: &ComponentConfig,
) -> Result<ImageComponents> {
    check_shape("scores", scores.len(), h, w)?;
    check_shape("labels", labels.len(), h, w)?;
    let t = cfg.threshold;
    let (gt, ng) = label8(h, w, |i| label::is_anomaly(labels[i]));
    let (pr, np_) = label8(h, w, |i| {
        labels[i] != label::VOID && if cfg.strict { scores[i] > t } else { scores[i] >= t }
    });
    let mut gt_size = vec![0u64; ng + 1];
    let mut pr_full = vec![0u64; np_ + 1];
    for (&g, &p) in gt.iter().zip(&pr) {
        gt_size[g as usize] += 1;
        pr_full[p as usize] += 1;
    }
    let keep_gt: Vec<bool> = gt_size.iter().enumerate().map(|(g, &s)| g > 0 && s >= cfg.min_gt_size).collect();
    let keep_pr: Vec<bool> = pr_full.iter().enumerate().map(|(p, &s)| p > 0 && s >= cfg.min_pred_size).collect();

    // Over the ROI: sizes, coverage and the (gt, pred) overlaps.
    let mut pr_size = vec![0u64; np_ + 1]; // in-ROI pixels of each predicted component
    let mut gt_cov = vec![0u64; ng + 1]; // pixels of g in some kept predicted component
    let mut pr_cov = vec![0u64; np_ + 1]; // pixels of p in some kept GT component
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for i in 0..h * w {
        let (g, p) = (gt[i] as usize, pr[i] as usize);
        if labels[i] == label::VOID || (g > 0 && !keep_gt[g]) || !keep_pr[p] {
            continue; // outside the ROI, or not in a kept predicted component
        }
        pr_size[p] += 1;
        if g > 0 {
            gt_cov[g] += 1;
            pr_cov[p] += 1;
            pairs.push((g as u32, p as u32));
        }
    }
    pairs.sort_unstable();
    // per GT component: Σ|p| and Σ(pixels of p in other GT) over p ∈ K̂(g);
    // per predicted component: the same over g ∈ K(p).
    let (mut g_union, mut g_adj) = (vec![0u64; ng + 1], vec![0u64; ng + 1]);
    let (mut p_union, mut p_adj) = (vec![0u64; np_ + 1], vec![0u64; np_ + 1]);
    let mut j = 0;
    while j < pairs.len() {
        let (g, p) = pairs[j];
        let mut ov = 0u64;
        while j < pairs.len() && pairs[j] == (g, p) {
            ov += 1;
            j += 1;
        }
        let (g, p) = (g as usize, p as usize);
        g_union[g] += pr_size[p];
        g_adj[g] += pr_cov[p] - ov;
        p_union[p] += gt_size[g];
        p_adj[p] += gt_cov[g] - ov;
    }
    let mut out = ImageComponents::default();
    for g in 1..=ng {
        if keep_gt[g] {
            let inter = gt_cov[g];
            let union = g_union[g] + gt_size[g] - inter - g_adj[g];
            out.siou_gt.push(inter as f64 / union as f64);
        }
    }
    for p in 1..=np_ {
        if keep_pr[p] && pr_size[p] > 0 {
            let inter = pr_cov[p];
            out.ppv.push(inter as f64 / pr_size[p] as f64);
            let union = p_union[p] + pr_size[p] - inter - p_adj[p];
            out.siou_pred.push(inter as f64 / union as f64);
        }
    }
    Ok(out)
}

/// Split-level SegmentMeIfYouCan accumulator: per-δ component counts and
/// the sums behind the mean sIoU / PPV. Mergeable (bootstrap by image:
/// keep one per image, or per worker, and [`merge`](Self::merge)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ComponentStats {
    pub deltas: Vec<f64>,
    /// Per δ: GT components with sIoU ≥ δ.
    pub tp: Vec<u64>,
    /// Per δ: GT components with sIoU < δ.
    pub fn_: Vec<u64>,
    /// Per δ: predicted components with PPV < δ.
    pub fp: Vec<u64>,
    pub gt_components: u64,
    pub pred_components: u64,
    /// Per image, in image order: summed sIoU (GT), PPV and sIoU (pred).
    /// Kept per image and folded only in [`summary`](Self::summary), so
    /// merging accumulators of consecutive image ranges (shards) gives the
    /// same floating-point sums as one pass over all images.
    pub image_sums: Vec<[f64; 3]>,
    pub images: u64,
}

/// The figures of a [`ComponentStats`]; `None` where undefined (no
/// component to average over).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ComponentSummary {
    /// Mean sIoU over GT components (SMIYC "sIoU gt").
    pub siou_gt: Option<f64>,
    /// Mean PPV over predicted components (SMIYC "PPV").
    pub ppv: Option<f64>,
    /// Mean symmetric sIoU over predicted components (official `sIoU_pred`).
    pub siou_pred: Option<f64>,
    /// F1 per δ.
    pub f1: Vec<Option<f64>>,
    /// Mean F1 over δ (SMIYC "F1*").
    pub mean_f1: Option<f64>,
    pub gt_components: u64,
    pub pred_components: u64,
}

impl ComponentStats {
    pub fn new(deltas: &[f64]) -> Self {
        let k = deltas.len();
        ComponentStats { deltas: deltas.to_vec(), tp: vec![0; k], fn_: vec![0; k], fp: vec![0; k], ..Default::default() }
    }

    /// Add one image's components.
    pub fn add(&mut self, img: &ImageComponents) {
        let k = self.deltas.len();
        for v in [&mut self.tp, &mut self.fn_, &mut self.fp] {
            v.resize(k, 0);
        }
        for (j, &d) in self.deltas.iter().enumerate() {
            self.tp[j] += img.siou_gt.iter().filter(|&&s| s >= d).count() as u64;
            self.fn_[j] += img.siou_gt.iter().filter(|&&s| s < d).count() as u64;
            self.fp[j] += img.ppv.iter().filter(|&&s| s < d).count() as u64;
        }
        self.gt_components += img.siou_gt.len() as u64;
        self.pred_components += img.ppv.len() as u64;
        self.image_sums.push([
            img.siou_gt.iter().sum::<f64>(),
            img.ppv.iter().sum::<f64>(),
            img.siou_pred.iter().sum::<f64>(),
        ]);
        self.images += 1;
    }

    /// Add another accumulator over the same δ (errors otherwise).
    pub fn merge(&mut self, o: &ComponentStats) -> Result<()> {
        ensure!(self.deltas == o.deltas, "merging component statistics over different sIoU thresholds");
        for (a, b) in self.tp.iter_mut().zip(&o.tp) {
            *a += b;
        }
        for (a, b) in self.fn_.iter_mut().zip(&o.fn_) {
            *a += b;
        }
        for (a, b) in self.fp.iter_mut().zip(&o.fp) {
            *a += b;
        }
        self.gt_components += o.gt_components;
        self.pred_components += o.pred_components;
        self.image_sums.extend_from_slice(&o.image_sums);
        self.images += o.images;
        Ok(())
    }

    /// Total of column `j` of [`image_sums`](Self::image_sums), in image order.
    fn sum(&self, j: usize) -> f64 {
        self.image_sums.iter().fold(0.0, |a, s| a + s[j])
    }

    /// `2TP / (2TP + FN + FP)` at δ index `j`; `None` with no component.
    pub fn f1(&self, j: usize) -> Option<f64> {
        let (tp, fn_, fp) = (*self.tp.get(j)?, *self.fn_.get(j)?, *self.fp.get(j)?);
        let den = 2 * tp + fn_ + fp;
        (den > 0).then(|| (2 * tp) as f64 / den as f64)
    }

    /// Mean of [`f1`](Self::f1) over δ (summed in δ order, then divided).
    pub fn mean_f1(&self) -> Option<f64> {
        if self.deltas.is_empty() {
            return None;
        }
        let mut s = 0.0;
        for j in 0..self.deltas.len() {
            s += self.f1(j)?;
        }
        Some(s / self.deltas.len() as f64)
    }

    pub fn summary(&self) -> ComponentSummary {
        let mean = |s: f64, n: u64| (n > 0).then(|| s / n as f64);
        ComponentSummary {
            siou_gt: mean(self.sum(0), self.gt_components),
            ppv: mean(self.sum(1), self.pred_components),
            siou_pred: mean(self.sum(2), self.pred_components),
            f1: (0..self.deltas.len()).map(|j| self.f1(j)).collect(),
            mean_f1: self.mean_f1(),
            gt_components: self.gt_components,
            pred_components: self.pred_components,
        }
    }
}

/// One image into the split accumulator: [`image_components`] then
/// [`ComponentStats::add`]. `acc` should be `ComponentStats::new(&cfg.deltas)`.
pub fn component_metrics(
    scores: &[f32],
    labels: &[u8],
    h: usize,
    w: usize,
    cfg: &ComponentConfig,
    acc: &mut ComponentStats,
) -> Result<()> {
    ensure!(acc.deltas == cfg.deltas, "component accumulator built for other sIoU thresholds");
    let img = image_components(scores, labels, h, w, cfg)?;
    acc.add(&img);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flood fill in raster order: the reference labelling.
    fn flood(mask: &[bool], h: usize, w: usize) -> (Vec<u32>, usize) {
        let mut lab = vec![0u32; h * w];
        let mut n = 0;
        for s in 0..h * w {
            if !mask[s] || lab[s] != 0 {
                continue;
            }
            n += 1;
            lab[s] = n;
            let mut stack = vec![s];
            while let Some(i) = stack.pop() {
                let (y, x) = ((i / w) as isize, (i % w) as isize);
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (yy, xx) = (y + dy, x + dx);
                        if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                            continue;
                        }
                        let j = yy as usize * w + xx as usize;
                        if mask[j] && lab[j] == 0 {
                            lab[j] = n;
                            stack.push(j);
                        }
                    }
                }
            }
        }
        (lab, n as usize)
    }

    #[test]
    fn union_find_equals_flood_fill() {
        let mut next = crate::metrics::xorshift(987654321);
        for &(h, w) in &[(1, 1), (1, 9), (9, 1), (7, 7), (13, 31), (40, 17)] {
            for dens in [2u64, 4, 6, 8] {
                let mask: Vec<bool> = (0..h * w).map(|_| next() % 10 < dens).collect();
                assert_eq!(label_components(&mask, h, w).unwrap(), flood(&mask, h, w), "{h}x{w} d{dens}");
            }
        }
    }

    #[test]
    fn odd_shapes_are_errors_not_panics() {
        assert!(label_components(&[true; 5], 2, 3).is_err());
        assert!(region_weights(&[1; 5], 2, 3).is_err());
        assert!(region_weights(&[1; 4], usize::MAX, 2).is_err());
        let cfg = ComponentConfig::obstacle_track(0.5);
        assert!(image_components(&[0.0; 6], &[0; 5], 2, 3, &cfg).is_err());
        assert_eq!(label_components(&[], 0, 0).unwrap(), (vec![], 0));
        let rw = region_weights(&[], 0, 7).unwrap();
        assert_eq!(rw.regions, 0);
    }

    #[test]
    fn undefined_aupro_is_none() {
        // no region
        let (wc, k) = pro_counts_of(&[(&[0.1, 0.2], &[0, 0], 1, 2)]).unwrap();
        assert_eq!(aupro_weighted(&wc, k, 0.3), None);
        // no normal pixel
        let (wc, k) = pro_counts_of(&[(&[0.1, 0.2], &[1, 255], 1, 2)]).unwrap();
        assert_eq!(k, 1);
        assert_eq!(aupro_weighted(&wc, k, 0.3), None);
        // bad max_fpr
        let (wc, k) = pro_counts_of(&[(&[0.1, 0.2], &[1, 0], 1, 2)]).unwrap();
        assert!(aupro_weighted(&wc, k, 0.3).is_some());
        for m in [0.0, -1.0, 1.5, f64::NAN] {
            assert_eq!(aupro_weighted(&wc, k, m), None);
        }
        // unweighted counts
        assert_eq!(aupro(&wc.counts, &[], k, 0.3), None);
    }

    #[test]
    fn weighted_engine_unchanged_and_weight_one_equals_tp() {
        let s = [0.5f32, 0.1, 0.5, 0.9, 0.3, -0.0, 0.0];
        let l = [1u8, 0, 2, 0, 255, 1, 0];
        let mut pc = PositiveCollector::new();
        pc.add_weighted(&s, &l, &[1.0; 7]);
        let mut r = pc.finish();
        r.add(&s, &l);
        let wc = r.finish_weighted().unwrap();
        assert_eq!(wc.counts, crate::metrics::counts_of(&s, &l));
        let tp: Vec<f64> = wc.counts.tp.iter().map(|&t| t as f64).collect();
        assert_eq!(wc.tp_weight, tp);
    }

    #[test]
    fn smiyc_deltas_match_numpy_linspace() {
        // np.linspace(0.25, 0.75, 11) in hex
        let hex = [
            0x3FD0000000000000u64, 0x3FD3333333333333, 0x3FD6666666666666, 0x3FD999999999999A,
            0x3FDCCCCCCCCCCCCD, 0x3FE0000000000000, 0x3FE199999999999A, 0x3FE3333333333334,
            0x3FE4CCCCCCCCCCCD, 0x3FE6666666666666, 0x3FE8000000000000,
        ];
        let d = smiyc_deltas();
        for (a, b) in d.iter().zip(hex) {
            assert_eq!(a.to_bits(), b);
        }
    }
}
