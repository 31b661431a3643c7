//! The rows of results.json built from the accumulated statistics: cells,
//! honest operating points, calibration rows, conventions.

use super::*;

/// A threshold chosen on one split: its rule, the budget (`far`/`frr`) and
/// the operating point there (None where undefined).
pub(crate) type Chosen = (PointRule, Option<f64>, Option<OperatingPoint>);

pub(crate) fn point(rule: PointRule, target: Option<f64>, op: Option<OperatingPoint>) -> Point {
    Point {
        rule,
        target,
        threshold: op.map(|o| o.threshold),
        far: op.and_then(|o| o.far()),
        frr: op.and_then(|o| o.frr()),
        precision: op.and_then(|o| o.precision()),
        recall: op.and_then(|o| o.recall()),
        f1: op.and_then(|o| o.f1()),
    }
}

/// Thresholds chosen on `c` for the honest evaluation, in the order
/// f1_optimal, far budgets, frr budgets (None where undefined).
pub(crate) fn choose_thresholds(c: &Counts, cfg: &Config) -> Vec<Chosen> {
    let mut v = vec![(
        PointRule::F1Optimal,
        None,
        c.best_f1().and_then(|(_, t)| c.thresholds.iter().position(|&x| x == t)).map(|i| c.at_index(i)),
    )];
    for &t in &cfg.metrics.far {
        v.push((PointRule::Far, Some(t), c.threshold_at_far(t)));
    }
    for &t in &cfg.metrics.frr {
        v.push((PointRule::Frr, Some(t), c.threshold_at_frr(t)));
    }
    v
}

pub(crate) fn cell(model: &str, m: &MethodRef, split: &str, e: &SplitEval, mi: usize, cfg: &Config, leakage: bool) -> Cell {
    let c = &e.counts[mi];
    let s = cfg.metrics.conv.summary(c);
    let mut warnings = vec![];
    if c.positives == 0 {
        warnings.push(format!("split '{split}' has no anomaly pixels: pixel metrics are undefined"));
    }
    if c.negatives == 0 {
        warnings.push(format!("split '{split}' has no in-distribution pixels: pixel metrics are undefined"));
    }
    let img = counts_of(&e.image_scores[mi], &e.image_labels);
    let mut s = s;
    let mut per_image = None;
    let (mut aupr_in, mut fpr95_in) = match &e.counts_in[mi] {
        Some(ci) => (ci.aupr(cfg.metrics.conv.aupr), ci.fpr_at_tpr(0.95, cfg.metrics.conv.fpr95)),
        None => (None, None),
    };
    if let Some(([auroc, aupr, fpr95, f1, ai, fi], n, skipped)) = e.image_means[mi] {
        if e.counts_in[mi].is_some() {
            (aupr_in, fpr95_in) = (ai, fi);
        }
        // average = "images": the headline numbers are image means; no
        // single threshold attains a mean F1
        s = crate::metrics::Summary { auroc, aupr, fpr95, f1, threshold: None };
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
        positives: c.positives,
        negatives: c.negatives,
        void: e.void,
        images: e.images,
        distinct_positive_scores: c.thresholds.len() as u64,
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
        warnings,
    }
}

pub(crate) fn honest(model: &str, m: &MethodRef, src: &str, leakage: bool, pts: Vec<Point>, test: &Counts) -> HonestCell {
    let hard = pts.iter().find(|p| p.rule == PointRule::Far).and_then(|p| p.threshold);
    let soft = pts.iter().find(|p| p.rule == PointRule::Frr).and_then(|p| p.threshold);
    HonestCell {
        model: model.into(),
        method: m.id().into(),
        threshold_split: src.into(),
        eval_split: "test".into(),
        leakage,
        oracle_f1: test.best_f1().map(|x| x.0),
        hard_threshold: hard,
        soft_threshold: soft,
        block_fraction: None,
        review_fraction: None,
        points: pts,
    }
}

/// Fraction of the split's non-void pixels at or above `t` (exact when `t`
/// is one of the probe thresholds, which it always is here).
pub(crate) fn frac_at(op: &OperatingPoint) -> f64 {
    (op.tp + op.fp) as f64 / (op.positives + op.negatives).max(1) as f64
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
