//! `results.json`: the source of truth of a sweep.
//!
//! Why a fixed schema: CI re-renders tables from this file alone and
//! reviewers diff two of them, so field order is the struct order, floats
//! are written by one rule (serde_json's shortest round-trip form, via ryu),
//! undefined numbers are `null`, and nothing in it depends on time, thread
//! count or file-system order.

use serde::{Deserialize, Serialize};

/// `/2`: the honest evaluation in the seed's words (FAR = defects accepted,
/// FRR = good rejected), operating points per level, review bands.
pub const FORMAT: &str = "bench-results/2";

/// What scored a run's maps, as results.json records it (the adapter's
/// name is in manifest.json): `cpu`, `gpu`, or `mixed` for a sharded run
/// whose shards scored on different kinds; `merged` only labels a merge's
/// own shard-state files, which score nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Gpu,
    Mixed,
    Merged,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
            DeviceKind::Mixed => "mixed",
            DeviceKind::Merged => "merged",
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Results {
    pub format: String,
    pub name: String,
    pub dataset: String,
    /// What scored the maps (the adapter is in manifest.json).
    pub device: DeviceKind,
    pub conventions: Conventions,
    pub models: Vec<ModelRow>,
    pub methods: Vec<MethodRow>,
    /// One per (model, method, split).
    pub cells: Vec<Cell>,
    /// Thresholds chosen on one split, reported on the test split.
    pub honest: Vec<HonestCell>,
    pub calibration: Vec<CalibrationRow>,
    /// Normal-pixel score drift from `reference` to `split`.
    pub drift: Vec<DriftRow>,
    /// Drift sensitivity: one row per drifted copy of test (`test@<name>`)
    /// × model × method; absent when the dataset has none (so results of
    /// such datasets read and write unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift_splits: Vec<DriftSplit>,
    /// Per anomaly type, when the config lists several anomaly values.
    pub failure_modes: Vec<FailureRow>,
    /// Paired bootstrap intervals of method differences on `test`: per
    /// model, every pair (a before b in column order). Absent without
    /// `metrics.bootstrap`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap_diff: Vec<BootDiff>,
    pub warnings: Vec<String>,
}

/// The 95 % interval of `a − b` per bootstrap replicate (the same image
/// draws for both methods), on the test split: is `a` really better than
/// `b`? An interval excluding 0 says the sign holds on resamples of this
/// test set. Rates as fractions (a difference of rates, in [−1, 1]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BootDiff {
    pub model: String,
    pub a: String,
    pub b: String,
    pub samples: u32,
    pub seed: u64,
    /// Replicates with both classes drawn (the pixel differences').
    pub defined: u32,
    pub auroc: Option<[f64; 2]>,
    pub aupr: Option<[f64; 2]>,
    pub fpr95: Option<[f64; 2]>,
    /// Best F1 (absent in files before F1 intervals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<[f64; 2]>,
    /// AUPRO (runs with `metrics.regions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aupro: Option<[f64; 2]>,
    /// Exact (image scores resampled as they are).
    pub image_auroc: Option<[f64; 2]>,
    /// Test FRR at each method's soft threshold (`frr_at_far`, first FAR
    /// budget `far_budget`, chosen on val), pixel and image level: exact.
    pub far_budget: Option<f64>,
    pub pixel_frr_at_far: Option<[f64; 2]>,
    pub image_frr_at_far: Option<[f64; 2]>,
    /// Bound on the distance of the pixel intervals' ends from the exact
    /// bootstrap's (see `cells[].bootstrap.error_bound`).
    pub error_bound: crate::metrics::bootstrap::ErrorBound,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DriftRow {
    pub model: String,
    pub method: String,
    pub reference: String,
    pub split: String,
    pub mean_shift: Option<f64>,
    pub p95_shift: Option<f64>,
    /// KL(split ‖ reference) on the 16-bit score-key histogram, +0.5 smoothing.
    pub kl: Option<f64>,
    /// Squared MMD, Gaussian kernel, σ = pooled std.
    pub mmd2: Option<f64>,
}

/// One drifted copy of test for one (model, method): how much accuracy
/// moves under the drift, how the deployed thresholds behave when nobody
/// recalibrates, and the seed's 2σ dashboard on normal scores. Changes are
/// `split − baseline` (baseline = clean `test`), paired by image id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DriftSplit {
    pub model: String,
    pub method: String,
    /// `test@<name>`.
    pub split: String,
    /// Always `test`.
    pub baseline: String,
    /// Where the deployed thresholds were chosen (`val`; `test` = leakage).
    pub threshold_split: String,
    pub images: u64,
    /// Image resamples behind every interval and σ (`metrics.bootstrap`;
    /// 0 = off: intervals and σ are null, flags too), and their seed.
    pub samples: u32,
    pub seed: u64,
    /// AUROC, AUPR, FPR95, F1 (pixel), AUPRO, image AUROC and AUPR.
    pub metrics: Vec<MetricDelta>,
    /// Every honest operating point's val threshold applied unchanged.
    pub thresholds: Vec<ThresholdDrift>,
    /// Mean, p95, reject rate (pixel and image), KL and MMD² (pixel).
    pub dashboard: Vec<DashStat>,
}

/// A test metric on the clean and the drifted split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricDelta {
    /// `auroc`, `aupr`, `fpr95`, `f1`, `aupro` (level pixel) or `auroc`,
    /// `aupr` (level image).
    pub metric: String,
    pub level: crate::metrics::operating::Level,
    pub baseline: Option<f64>,
    pub drifted: Option<f64>,
    pub delta: Option<f64>,
    /// 95 % paired percentile-bootstrap interval of `delta`.
    pub interval: Option<[f64; 2]>,
    /// Why `interval` is null; beside an interval, its error bound (how far
    /// its ends may lie from the exact paired bootstrap's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One deployed (val-chosen) threshold on the clean and the drifted split:
/// FAR = defects accepted, FRR = good rejected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThresholdDrift {
    pub level: crate::metrics::operating::Level,
    pub rule: crate::metrics::PointRule,
    pub budget: Option<f64>,
    /// Null (with the honest point's reason) when none was chosen.
    pub threshold: Option<f64>,
    pub baseline_far: Option<f64>,
    pub baseline_frr: Option<f64>,
    pub drifted_far: Option<f64>,
    pub drifted_frr: Option<f64>,
    pub far_shift: Option<f64>,
    pub frr_shift: Option<f64>,
    /// 95 % paired bootstrap intervals of the shifts (per-image counts).
    pub far_shift_interval: Option<[f64; 2]>,
    pub frr_shift_interval: Option<[f64; 2]>,
}

/// A dashboard statistic of normal pixels/images (seed 000: "when any of
/// those drift more than 2σ from baseline, you've drifted").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DashStat {
    pub level: crate::metrics::operating::Level,
    /// `mean`, `p95`, `reject_rate` (at the deployed hard threshold), `kl`,
    /// `mmd2` (to the baseline's normal pixels).
    pub statistic: String,
    /// The baseline value; for `kl` / `mmd2` the mean divergence of the
    /// baseline's own image resamples to it (what chance alone gives).
    pub baseline: Option<f64>,
    /// σ of the statistic over the baseline's image resamples.
    pub sigma: Option<f64>,
    pub value: Option<f64>,
    pub delta: Option<f64>,
    /// |delta| > 2σ (a divergence: delta > 2σ); null when σ or the value
    /// is undefined.
    pub flagged: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Conventions {
    /// `first`, `strict`, `interp`, `nearest` or `thinned`.
    pub fpr95: String,
    /// The `metrics.convention` preset, when one was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convention: Option<String>,
    /// `trapezoid` or `trapezoid_reorder`; absent = `ap` (step sum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aupr: Option<String>,
    /// `f16` or `u16` (scores rounded before every metric); absent = `f32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_precision: Option<String>,
    /// `images` (per-image metrics averaged); absent = pooled pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average: Option<String>,
    /// `normal`: cells carry `aupr_in` / `fpr95_in`; absent = anomaly only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive: Option<String>,
    /// Always `score >= threshold`.
    pub positive_when: String,
    /// Pixels pooled over the whole split; void excluded; no subsampling.
    pub pooling: String,
    pub anomaly_values: Vec<u16>,
    pub ignore_values: Vec<u16>,
    pub msp_temperature: f64,
    pub energy_temperature: f64,
    pub sml_variant: String,
    pub heat_variant: String,
    /// `[method.gen]` in words (γ, M), when `gen` is in the sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_variant: Option<String>,
    /// `[method.margin]` in words (logits or probabilities), when `margin` is in the sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_variant: Option<String>,
    pub image_score: String,
    /// `none`, `nearest` or `bilinear` (logits upsampled to the mask).
    pub resize: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelRow {
    pub id: String,
    pub name: String,
    pub dtype: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodRow {
    pub id: String,
    pub name: String,
    /// Precomputed maps of an outside method (`scores/<id>/`): `"per_model"`
    /// or `"shared"` (one set of maps for every model row). Absent for the
    /// built-in methods, so older results.json files read unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    pub model: String,
    pub method: String,
    pub split: String,
    pub auroc: Option<f64>,
    pub aupr: Option<f64>,
    pub fpr95: Option<f64>,
    pub f1: Option<f64>,
    /// Score attaining `f1` on this split (an oracle threshold on test).
    pub threshold: Option<f64>,
    pub positives: u64,
    pub negatives: u64,
    pub void: u64,
    pub images: u64,
    pub distinct_positive_scores: u64,
    /// Calibration statistics were fitted on this very split.
    pub leakage: bool,
    pub image_auroc: Option<f64>,
    pub image_aupr: Option<f64>,
    pub anomalous_images: u64,
    pub normal_images: u64,
    /// Normal-pixel score statistics (exact; numpy's linear percentiles).
    pub normal_mean: Option<f64>,
    pub normal_p50: Option<f64>,
    pub normal_p95: Option<f64>,
    pub normal_p99: Option<f64>,
    /// Area under the per-region-overlap curve up to FPR 0.3, normalised
    /// (MVTec AD), when `metrics.regions`.
    pub aupro: Option<f64>,
    /// Ground-truth regions (8-connected anomaly components).
    pub regions: u64,
    /// SegmentMeIfYouCan component metrics at the val-F1-optimal threshold.
    pub components: Option<Components>,
    /// 95 % percentile-bootstrap intervals (resampling images), when enabled.
    pub bootstrap: Option<Bootstrap>,
    /// `metrics.average = "images"`: auroc / aupr / fpr95 / f1 above are
    /// means over `averaged` images; absent when pixels are pooled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_image: Option<ImageAverage>,
    /// `metrics.positive = "normal"`: AUPR and FPR95 with in-distribution
    /// pixels positive (negated score); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aupr_in: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fpr95_in: Option<f64>,
    /// `metrics.binning = "smiyc"` (test cells): SMIYC's binned pixel
    /// metric, an approximation; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binned: Option<BinnedCell>,
    pub warnings: Vec<String>,
}

/// SMIYC's binned (approximate) pixel metric of one cell: the official
/// `road-anomaly-benchmark` algorithm (float16 scores, 768 quantile bins
/// per frame, merged; see `metrics::binned`), as `bench eval --binning
/// smiyc` computes it from saved score maps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BinnedCell {
    /// Always `"smiyc"`.
    pub binning: String,
    /// Always true: binned, not the exact curve.
    pub approximate: bool,
    pub bins_per_frame: u32,
    pub auroc: Option<f64>,
    pub aupr: Option<f64>,
    pub fpr95: Option<f64>,
    pub best_f1: Option<f64>,
    pub best_f1_threshold: Option<f64>,
    pub curve_points: Option<u64>,
    /// Frames sharing the highest threshold (above 1 the official result
    /// depends on numpy's unstable argsort; bench follows the stable one).
    pub top_threshold_frames: u64,
    /// Frames without a non-void pixel (skipped; the official code fails).
    pub empty_frames: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageAverage {
    /// Images with both classes, averaged.
    pub averaged: u64,
    /// Images without both classes, left out.
    pub skipped: u64,
}

/// 95 % bootstrap intervals of a cell (defined where they are computed).
pub use crate::metrics::bootstrap::Bootstrap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Components {
    /// Binarisation threshold (`score ≥ t`), chosen on `threshold_split`.
    pub threshold: f64,
    pub threshold_split: String,
    /// `anomaly` or `obstacle` size filters.
    pub track: crate::metrics::region::Track,
    pub siou: Option<f64>,
    pub ppv: Option<f64>,
    pub mean_f1: Option<f64>,
    pub gt_components: u64,
    pub pred_components: u64,
}

/// Metrics of one anomaly type (mask value) against all normal pixels.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FailureRow {
    pub model: String,
    pub method: String,
    pub split: String,
    pub anomaly_value: u16,
    pub positives: u64,
    pub auroc: Option<f64>,
    pub aupr: Option<f64>,
    pub fpr95: Option<f64>,
    /// Share of this type's pixels caught at the val-F1-optimal threshold.
    pub recall_at_val_threshold: Option<f64>,
    /// The deployed (soft) pixel threshold: `frr_at_far` at the first
    /// `metrics.far` budget, chosen on val; null with `reason`.
    #[serde(default)]
    pub soft_threshold: Option<f64>,
    /// Share of this type's test pixels with score ≥ `soft_threshold`.
    #[serde(default)]
    pub recall_at_soft_threshold: Option<f64>,
    /// Test images with at least one pixel of this type.
    #[serde(default)]
    pub images: u64,
    /// The image-level soft threshold (image `frr_at_far`, first budget).
    #[serde(default)]
    pub image_soft_threshold: Option<f64>,
    /// Of `images`, those whose image score is below `image_soft_threshold`
    /// (the whole image accepted: every defect of it missed).
    #[serde(default)]
    pub images_missed: Option<u64>,
    /// `images_missed / images`.
    #[serde(default)]
    pub image_miss_share: Option<f64>,
    /// Why the soft-threshold figures (or the examples) are missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The worst test images of this type at the soft threshold, worst
    /// first (only the rows of `report.failure_method`).
    #[serde(default)]
    pub examples: Vec<FailureExample>,
}

/// One failure-mode example: an image of the type, its recall there and
/// its panel (path relative to the results folder).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FailureExample {
    /// 1 = worst.
    pub rank: u32,
    /// Image id (file stem).
    pub image: String,
    /// The type's pixels in this image, and those at or above the soft threshold.
    pub pixels: u64,
    pub caught: u64,
    pub recall: f64,
    /// Whether the panel's first tile is the RGB input (`images/<id>.png`).
    pub rgb: bool,
    /// `failures/<model>/<method>/<value>_<rank>_<id>.png`.
    pub png: String,
}

/// One operating point of the honest evaluation. A pixel or image is
/// rejected when `score ≥ threshold`. FAR = share of anomalous
/// pixels/images accepted (score < threshold: defects accepted); FRR =
/// share of normal pixels/images rejected (good rejected).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// `pixel` or `image` (image score: `conventions.image_score`; an image
    /// is anomalous when it has any anomaly pixel).
    pub level: crate::metrics::operating::Level,
    /// `f1_optimal`, `frr_at_far` (highest threshold with FAR ≤ budget on
    /// `threshold_split`) or `far_at_frr` (lowest threshold among the
    /// split's scores with FRR ≤ budget).
    pub rule: crate::metrics::PointRule,
    /// The FAR budget (`frr_at_far`) or FRR budget (`far_at_frr`).
    pub budget: Option<f64>,
    /// Chosen on `threshold_split`; null with `reason` when undefined.
    pub threshold: Option<f64>,
    /// Achieved on `eval_split`.
    pub far: Option<f64>,
    pub frr: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    /// FAR and FRR on `threshold_split` (the budget is kept there).
    pub threshold_split_far: Option<f64>,
    pub threshold_split_frr: Option<f64>,
    /// 95 % bootstrap intervals of `far` and `frr` over resampled test
    /// images at this fixed threshold (exact counts; `metrics.bootstrap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub far_ci: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frr_ci: Option<[f64; 2]>,
    /// Why `threshold` is null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Hard and soft thresholds of one level, as a line runs them: auto-reject
/// at `score ≥ hard` (hard = `far_at_frr` at the first FRR budget), operator
/// review in `[soft, hard)`, auto-accept below soft (soft = `frr_at_far` at
/// the first FAR budget). Shares of `eval_split`'s pixels/images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub level: crate::metrics::operating::Level,
    pub hard_threshold: Option<f64>,
    pub soft_threshold: Option<f64>,
    pub auto_rejected: Option<f64>,
    pub review: Option<f64>,
    pub auto_accepted: Option<f64>,
    /// Anomalous pixels/images below soft, over all anomalous ones.
    pub defects_auto_accepted: Option<f64>,
    /// Normal pixels/images at or above hard, over all normal ones.
    pub good_auto_rejected: Option<f64>,
    /// Why there is no band: "incompatible budgets: ..." when soft > hard,
    /// or a missing threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HonestCell {
    pub model: String,
    pub method: String,
    pub threshold_split: String,
    pub eval_split: String,
    /// Thresholds (or calibration) came from the evaluated split.
    pub leakage: bool,
    /// Pixel `f1_optimal`, then per level (pixel, image) `frr_at_far` per
    /// `metrics.far` budget and `far_at_frr` per `metrics.frr` budget.
    pub points: Vec<Point>,
    /// Test-optimal F1: what a test-set threshold would claim (oracle).
    pub oracle_f1: Option<f64>,
    /// Per level (pixel, image); empty without both a FAR and an FRR budget.
    pub bands: Vec<Band>,
}

impl HonestCell {
    pub fn point(&self, level: crate::metrics::operating::Level, rule: crate::metrics::PointRule, budget: Option<f64>) -> Option<&Point> {
        self.points.iter().find(|p| p.level == level && p.rule == rule && p.budget == budget)
    }
    pub fn band(&self, level: crate::metrics::operating::Level) -> Option<&Band> {
        self.bands.iter().find(|b| b.level == level)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRow {
    pub model: String,
    pub split: String,
    pub leakage: bool,
    pub pixels: u64,
    pub sml_mean: Vec<f64>,
    pub sml_std: Vec<f64>,
    pub sml_count: Vec<u64>,
    pub heat_classes: Vec<usize>,
    pub heat_ridge: f64,
    pub heat_el_mean: f64,
    pub heat_el_std: f64,
    pub heat_gmm_mean: f64,
    pub heat_gmm_std: f64,
}

impl Results {
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("results serialise");
        s.push('\n');
        s
    }

    pub fn from_json(text: &str) -> anyhow::Result<Results> {
        let r: Results = serde_json::from_str(text)?;
        anyhow::ensure!(r.format == FORMAT, "unsupported results format {:?} (expected {FORMAT:?})", r.format);
        r.validate()?;
        Ok(r)
    }

    /// What `table`, `diff`, `--check` and `drift` rely on: every cell names
    /// a listed model and method, no (model, method, split) or honest
    /// (model, method) appears twice — a second cell would silently win or
    /// lose a comparison — and every rate lies in [0, 1].
    fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.cells {
            let at = format!("cell {}/{}/{}", c.model, c.method, c.split);
            if !self.models.iter().any(|m| m.id == c.model) {
                bail!("{at}: model '{}' is not in `models`", c.model);
            }
            if !self.methods.iter().any(|m| m.id == c.method) {
                bail!("{at}: method '{}' is not in `methods`", c.method);
            }
            if !seen.insert((&c.model, &c.method, &c.split)) {
                bail!("{at} appears twice (a corrupt or hand-edited results.json)");
            }
            for (k, v) in [("auroc", c.auroc), ("aupr", c.aupr), ("fpr95", c.fpr95), ("f1", c.f1), ("image_auroc", c.image_auroc), ("image_aupr", c.image_aupr), ("aupro", c.aupro)] {
                if let Some(v) = v
                    && !(0.0..=1.0).contains(&v)
                {
                    bail!("{at}: `{k}` = {v} is not a rate in [0, 1]");
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &self.honest {
            if !seen.insert((&h.model, &h.method)) {
                bail!("honest cell {}/{} appears twice (a corrupt or hand-edited results.json)", h.model, h.method);
            }
            let rates = h.points.iter().flat_map(|p| {
                [("far", p.far), ("frr", p.frr), ("precision", p.precision), ("recall", p.recall), ("f1", p.f1), ("threshold_split_far", p.threshold_split_far), ("threshold_split_frr", p.threshold_split_frr)]
            });
            let shares = h.bands.iter().flat_map(|b| {
                [("auto_rejected", b.auto_rejected), ("review", b.review), ("auto_accepted", b.auto_accepted), ("defects_auto_accepted", b.defects_auto_accepted), ("good_auto_rejected", b.good_auto_rejected)]
            });
            for (k, v) in rates.chain(shares) {
                if let Some(v) = v
                    && !(0.0..=1.0).contains(&v)
                {
                    bail!("honest cell {}/{}: `{k}` = {v} is not a rate in [0, 1]", h.model, h.method);
                }
            }
        }
        self.validate_failures()
    }

    /// Failure rows: rates in [0, 1], missed images at most the type's images.
    fn validate_failures(&self) -> anyhow::Result<()> {
        for f in &self.failure_modes {
            let at = format!("failure row {}/{}/{}", f.model, f.method, f.anomaly_value);
            let rates = [("auroc", f.auroc), ("aupr", f.aupr), ("fpr95", f.fpr95), ("recall_at_val_threshold", f.recall_at_val_threshold), ("recall_at_soft_threshold", f.recall_at_soft_threshold), ("image_miss_share", f.image_miss_share)];
            for (k, v) in rates {
                if let Some(v) = v
                    && !(0.0..=1.0).contains(&v)
                {
                    anyhow::bail!("{at}: `{k}` = {v} is not a rate in [0, 1]");
                }
            }
            if f.images_missed.is_some_and(|m| m > f.images) {
                anyhow::bail!("{at}: `images_missed` exceeds `images`");
            }
        }
        Ok(())
    }

    pub fn load(dir: &std::path::Path) -> anyhow::Result<Results> {
        use anyhow::Context;
        let p = dir.join("results.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        Results::from_json(&text).with_context(|| format!("{}", p.display()))
    }

    /// The results of a folder: its own `results.json`, or (a `[[datasets]]`
    /// sweep) one per dataset subfolder, named, in name order.
    pub fn load_sets(dir: &std::path::Path) -> anyhow::Result<Vec<(Option<String>, Results)>> {
        if dir.join("results.json").exists() || !dir.is_dir() {
            return Ok(vec![(None, Results::load(dir)?)]);
        }
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("results.json").is_file())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        if names.is_empty() {
            return Ok(vec![(None, Results::load(dir)?)]);
        }
        names.into_iter().map(|n| Ok((Some(n.clone()), Results::load(&dir.join(&n))?))).collect()
    }

    pub fn cell(&self, model: &str, method: &str, split: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.model == model && c.method == method && c.split == split)
    }

    pub fn honest_cell(&self, model: &str, method: &str) -> Option<&HonestCell> {
        self.honest.iter().find(|c| c.model == model && c.method == method)
    }
}
