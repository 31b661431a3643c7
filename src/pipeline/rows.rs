//! The rows of results.json built from the accumulated statistics: cells,
//! honest operating points, calibration rows, conventions.

use super::*;

use crate::metrics::operating::{ImageScores, Level, Pick, band};

/// A threshold chosen on one split: its level, rule, budget and the
/// operating point there (or why there is none).
pub(crate) struct Chosen {
    pub(crate) level: Level,
    pub(crate) rule: PointRule,
    pub(crate) budget: Option<f64>,
    pub(crate) pick: Pick,
}

impl Chosen {
    pub(crate) fn threshold(&self) -> Option<f64> {
        self.pick.as_ref().ok().map(|o| o.threshold)
    }
}

fn images(e: &SplitEval, mi: usize) -> ImageScores<'_> {
    ImageScores { scores: &e.image_scores[mi], labels: &e.image_labels }
}

/// Thresholds chosen on split `e` for column `mi`: pixel `f1_optimal`,
/// then per level `frr_at_far` per FAR budget and `far_at_frr` per FRR
/// budget. `e` must have been evaluated with `SplitOpts::frr_budgets` =
/// `metrics.frr`.
pub(crate) fn choose_thresholds(e: &SplitEval, mi: usize, cfg: &Config) -> Vec<Chosen> {
    let c = e.counts(mi);
    let f1 = c
        .best_f1()
        .and_then(|(_, t)| c.thresholds.iter().position(|&x| x == t))
        .map(|i| c.at_index(i))
        .ok_or_else(|| "the threshold split lacks anomaly or normal pixels: F1 is undefined".to_string());
    let mut v = vec![Chosen { level: Level::Pixel, rule: PointRule::F1Optimal, budget: None, pick: f1 }];
    let img = images(e, mi);
    for level in [Level::Pixel, Level::Image] {
        for &b in &cfg.metrics.far {
            let pick = match level {
                Level::Pixel => c.frr_at_far(b, level),
                Level::Image => img.frr_at_far(b),
            };
            v.push(Chosen { level, rule: PointRule::FrrAtFar, budget: Some(b), pick });
        }
        for (j, &b) in cfg.metrics.frr.iter().enumerate() {
            let pick = match level {
                Level::Pixel => match e.rank_picks.get(mi).and_then(|r| r.get(j)) {
                    Some(r) => c.far_at_frr(r, b),
                    None => Err("internal: the threshold split was evaluated without the FRR budgets' order statistics".into()),
                },
                Level::Image => img.far_at_frr(b),
            };
            v.push(Chosen { level, rule: PointRule::FarAtFrr, budget: Some(b), pick });
        }
    }
    v
}

/// The pixel thresholds the test split counts at (pass-1 probes), in the
/// order [`honest`] reads them back.
pub(crate) fn probe_thresholds(ch: &[Chosen]) -> Vec<f32> {
    ch.iter().filter(|c| c.level == Level::Pixel).filter_map(|c| c.threshold().map(|t| t as f32)).collect()
}

/// The val-chosen F1-optimal pixel threshold (components, failure modes).
pub(crate) fn f1_threshold(ch: &[Chosen]) -> Option<f32> {
    ch.first().and_then(|c| c.threshold()).map(|t| t as f32)
}

fn point(ch: &Chosen, test: Option<&OperatingPoint>) -> Point {
    let reason = ch.pick.as_ref().err().cloned();
    let on = ch.pick.as_ref().ok();
    Point {
        level: ch.level,
        rule: ch.rule,
        budget: ch.budget,
        threshold: ch.threshold(),
        far: test.and_then(|o| o.far()),
        frr: test.and_then(|o| o.frr()),
        precision: test.and_then(|o| o.precision()),
        recall: test.and_then(|o| o.recall()),
        f1: test.and_then(|o| o.f1()),
        threshold_split_far: on.and_then(|o| o.far()),
        threshold_split_frr: on.and_then(|o| o.frr()),
        far_ci: None,
        frr_ci: None,
        reason,
    }
}

/// The honest cell of column `mi`: thresholds `ch` chosen on `src`
/// (`"val"`, or `"test"` itself: leakage) applied to test `te`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn honest(model: &str, m: &MethodRef, src: &str, leakage: bool, ch: &[Chosen], te: &SplitEval, mi: usize, cfg: &Config) -> HonestCell {
    let mut k = 0;
    let img = images(te, mi);
    let ops: Vec<Option<OperatingPoint>> = ch
        .iter()
        .map(|c| {
            let o = c.pick.as_ref().ok()?;
            Some(match c.level {
                // thresholds chosen on test itself are exact there
                Level::Pixel if src == "test" => *o,
                Level::Pixel => {
                    k += 1;
                    te.probes[mi].point(k - 1)
                }
                Level::Image => img.at(o.threshold),
            })
        })
        .collect();
    let points = ch.iter().zip(&ops).map(|(c, o)| point(c, o.as_ref())).collect();
    let bands = if cfg.metrics.far.is_empty() || cfg.metrics.frr.is_empty() {
        vec![]
    } else {
        [Level::Pixel, Level::Image].into_iter().map(|l| level_band(l, ch, &ops)).collect()
    };
    HonestCell {
        model: model.into(),
        method: m.id().into(),
        threshold_split: src.into(),
        eval_split: "test".into(),
        leakage,
        oracle_f1: te.counts(mi).best_f1().map(|x| x.0),
        points,
        bands,
    }
}

/// Hard = the level's first `far_at_frr` point, soft = its first
/// `frr_at_far` point; the shares of test between and around them.
fn level_band(level: Level, ch: &[Chosen], ops: &[Option<OperatingPoint>]) -> Band {
    let first = |r: PointRule| ch.iter().zip(ops).find(|(c, _)| c.level == level && c.rule == r);
    let (h, s) = (first(PointRule::FarAtFrr).expect("an FRR budget"), first(PointRule::FrrAtFar).expect("a FAR budget"));
    let mut b = Band {
        level,
        hard_threshold: h.0.threshold(),
        soft_threshold: s.0.threshold(),
        auto_rejected: None,
        review: None,
        auto_accepted: None,
        defects_auto_accepted: None,
        good_auto_rejected: None,
        reason: None,
    };
    let result = match (&h.0.pick, &s.0.pick, h.1, s.1) {
        (Err(e), _, _, _) => Err(format!("no hard threshold: {e}")),
        (_, Err(e), _, _) => Err(format!("no soft threshold: {e}")),
        (Ok(_), Ok(_), Some(ho), Some(so)) => band(ho, so),
        _ => Err("the evaluated split has no counts at the thresholds".into()),
    };
    match result {
        Ok(x) => {
            b.auto_rejected = Some(x.auto_rejected);
            b.review = Some(x.review);
            b.auto_accepted = Some(x.auto_accepted);
            b.defects_auto_accepted = x.defects_auto_accepted;
            b.good_auto_rejected = x.good_auto_rejected;
        }
        Err(e) => b.reason = Some(e),
    }
    b
}

pub(crate) fn cell(model: &str, m: &MethodRef, split: &str, e: &SplitEval, mi: usize, cfg: &Config, leakage: bool) -> Cell {
    let c = &e.packed[mi];
    // average = "images": the headline numbers are image means
    let s = e.headline(mi, &cfg.metrics.conv);
    let mut warnings = vec![];
    if c.positives() == 0 {
        warnings.push(format!("split '{split}' has no anomaly pixels: pixel metrics are undefined"));
    }
    if c.negatives() == 0 {
        warnings.push(format!("split '{split}' has no in-distribution pixels: pixel metrics are undefined"));
    }
    let img = counts_of(&e.image_scores[mi], &e.image_labels);
    let mut per_image = None;
    let (mut aupr_in, mut fpr95_in) = match &e.counts_in[mi] {
        Some(ci) => (ci.aupr(cfg.metrics.conv.aupr), ci.fpr_at_tpr(0.95, cfg.metrics.conv.fpr95)),
        None => (None, None),
    };
    if let Some(([.., ai, fi], n, skipped)) = e.image_means[mi] {
        if e.counts_in[mi].is_some() {
            (aupr_in, fpr95_in) = (ai, fi);
        }
        per_image = Some(crate::report::results::ImageAverage { averaged: n, skipped });
        if skipped > 0 {
            warnings.push(format!("average = images: {skipped} image(s) of split '{split}' without both classes skipped, {n} averaged"));
        }
    }
    Cell {
        model: model.into(),
        method: m.id().into(),
        split: split.into(),
        auroc: s.auroc,
        aupr: s.aupr,
        fpr95: s.fpr95,
        f1: s.f1,
        threshold: s.threshold,
        positives: c.positives(),
        negatives: c.negatives(),
        void: e.void,
        images: e.images,
        distinct_positive_scores: c.len() as u64,
        leakage,
        image_auroc: img.auroc(),
        image_aupr: img.average_precision(),
        anomalous_images: img.positives,
        normal_images: img.negatives,
        normal_mean: e.drift[mi].mean,
        normal_p50: e.drift[mi].quantile(0.5),
        normal_p95: e.drift[mi].quantile(0.95),
        normal_p99: e.drift[mi].quantile(0.99),
        aupro: e.aupro[mi],
        regions: e.regions,
        components: None,
        bootstrap: None,
        per_image,
        aupr_in,
        fpr95_in,
        binned: e.binned.get(mi).map(binned_cell),
        warnings,
    }
}

/// results.json's view of a finished SMIYC binned curve.
fn binned_cell(c: &crate::metrics::binned::BinnedCurve) -> BinnedCell {
    let mut c = c.clone();
    let m = c.finish();
    BinnedCell {
        binning: "smiyc".into(),
        approximate: true,
        bins_per_frame: crate::metrics::binned::NUM_BINS as u32,
        auroc: m.map(|x| x.auroc),
        aupr: m.map(|x| x.ap),
        fpr95: m.map(|x| x.fpr95),
        best_f1: m.map(|x| x.best_f1),
        best_f1_threshold: m.map(|x| x.best_f1_threshold),
        curve_points: m.map(|x| x.points as u64),
        top_threshold_frames: c.top_frames,
        empty_frames: c.empty_frames,
    }
}

/// The fitted statistics as reported in results.json.
pub(crate) fn calibration_row(model: &str, cal: &Calibration, heat: bool) -> CalibrationRow {
    CalibrationRow {
        model: model.into(),
        split: cal.split.clone(),
        leakage: cal.leakage,
        pixels: cal.pixels,
        sml_mean: cal.sml.mean.clone(),
        sml_std: cal.sml.std.clone(),
        sml_count: cal.sml.count.clone(),
        heat_classes: if heat { cal.heat.classes.clone() } else { vec![] },
        heat_ridge: cal.heat.ridge,
        heat_el_mean: cal.heat.el_mean,
        heat_el_std: cal.heat.el_std,
        heat_gmm_mean: cal.heat.gmm_mean,
        heat_gmm_std: cal.heat.gmm_std,
    }
}

/// The conventions block of results.json.
pub(crate) fn conventions(cfg: &Config, feat_models: &[String]) -> Result<Conventions> {
    Ok(Conventions {
        fpr95: serde_json::to_value(cfg.metrics.fpr95)?.as_str().unwrap_or_default().to_string(),
        convention: cfg.metrics.convention.clone(),
        aupr: (cfg.metrics.conv.aupr != crate::metrics::AuprRule::Ap).then(|| cfg.metrics.conv.aupr.name().to_string()),
        score_precision: (cfg.metrics.conv.score_precision != crate::metrics::conventions::ScorePrecision::F32)
            .then(|| cfg.metrics.conv.score_precision.name().to_string()),
        average: (cfg.metrics.conv.average == crate::metrics::conventions::Average::Images).then(|| "images".to_string()),
        positive: (cfg.metrics.conv.positive == crate::metrics::conventions::Positive::Normal).then(|| "normal".to_string()),
        positive_when: "score >= threshold".into(),
        pooling: "all non-void pixels of the split pooled; exact (no subsampling, no binning)".into(),
        anomaly_values: cfg.anomaly.clone(),
        ignore_values: cfg.ignore.clone(),
        msp_temperature: cfg.method.msp.temperature,
        energy_temperature: cfg.method.energy.temperature,
        sml_variant: cfg.method.sml.variant(),
        gen_variant: cfg.methods.iter().any(|m| m == "gen").then(|| cfg.method.gen_opt.variant()),
        margin_variant: cfg.methods.iter().any(|m| m == "margin").then(|| cfg.method.margin.variant()),
        heat_variant: (if feat_models.is_empty() {
            format!(
                "logits-only soft-min of z-scored logit energy and tied-covariance class-Gaussian energy (ridge {})",
                crate::scores::calib::RIDGE
            )
        } else {
            format!(
                "soft-min of z-scored logit energy and tied-covariance class-Gaussian energy (ridge {}) on per-pixel features for models [{}], on logits for the others",
                crate::scores::calib::RIDGE,
                feat_models.join(", ")
            )
        }) + &cfg.method.heat.variant(),
        resize: cfg.resize.unwrap_or_default().name().into(),
        image_score: if cfg.metrics.image_topk > 1 {
            format!("mean of the top {} non-void pixel scores", cfg.metrics.image_topk)
        } else {
            "max over non-void pixels".into()
        },
    })
}
