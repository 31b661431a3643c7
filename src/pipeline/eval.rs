//! `bench eval`: metrics of precomputed score maps against masks, matched
//! by file stem.
//!
//! Why it is here and not in the CLI: it is a second driver of the metric
//! rooms (two streaming passes over file pairs, optional region metrics,
//! every convention preset side by side), wired the same way as `bench run`;
//! the CLI only resolves flags into [`EvalInputs`], [`MetricConv`] and
//! [`RegionArgs`] and prints what this returns.

use crate::data::{LabelMap, read_mask, read_score_map_key};
use crate::metrics::PositiveCollector;
use crate::metrics::conventions::{EvalOut, MetricConv, PRESETS, ScorePrecision};
use crate::metrics::region::Track;
use crate::report;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// `--ignore`: mask values, or `none` (also an empty string) for no void value.
pub fn parse_ignore(v: &[String]) -> Result<Vec<u16>> {
    if v.iter().all(|x| x.trim().is_empty() || x.trim().eq_ignore_ascii_case("none")) {
        return Ok(vec![]);
    }
    v.iter()
        .map(|x| x.trim().parse::<u16>().map_err(|_| anyhow::anyhow!("--ignore: {x:?} is not a mask value (0..=65535) or `none`")))
        .collect()
}

/// The (score map, mask) pairs of `bench eval` and how to read them.
pub struct EvalInputs<'a> {
    pairs: Vec<(PathBuf, PathBuf)>,
    npz_key: Option<&'a str>,
    lm: LabelMap,
    /// Masks without a score map, skipped under `--allow-missing`.
    missing: usize,
}

impl<'a> EvalInputs<'a> {
    pub fn new(scores: &Path, npz_key: Option<&'a str>, labels: &Path, lm: LabelMap, allow_missing: bool) -> Result<Self> {
        let s = crate::data::dataset::files_by_stem(scores, crate::data::dataset::SCORE_EXTS)?;
        let (pairs, missing) = if scores.is_file() && labels.is_file() {
            (vec![(s[0].1.clone(), labels.to_path_buf())], 0)
        } else {
            let l = crate::data::dataset::files_by_stem(labels, &["png", "npy"])?;
            let mut pairs = Vec::new();
            for (stem, sp) in &s {
                let lp = l
                    .iter()
                    .find(|x| &x.0 == stem)
                    .with_context(|| format!("{}: no mask with stem '{stem}' in {}", sp.display(), labels.display()))?;
                pairs.push((sp.clone(), lp.1.clone()));
            }
            let unscored: Vec<&(String, PathBuf)> = l.iter().filter(|(stem, _)| !s.iter().any(|x| &x.0 == stem)).collect();
            if let Some((_, first)) = unscored.first() {
                if !allow_missing {
                    bail!(
                        "{}: no score map in {} for {} of {} masks (first: {}); pass --allow-missing to evaluate without them",
                        labels.display(),
                        scores.display(),
                        unscored.len(),
                        l.len(),
                        first.display()
                    );
                }
                eprintln!(
                    "warning: --allow-missing: {} of {} masks have no score map in {} and are not evaluated (first: {})",
                    unscored.len(),
                    l.len(),
                    scores.display(),
                    first.display()
                );
            }
            (pairs, unscored.len())
        };
        Ok(EvalInputs { pairs, npz_key, lm, missing })
    }

    fn load(&self, pair: &(PathBuf, PathBuf), precision: ScorePrecision) -> Result<(Vec<f32>, Vec<u8>)> {
        self.load_hw(pair, precision).map(|x| (x.2, x.3))
    }

    fn load_hw(&self, (sp, lp): &(PathBuf, PathBuf), precision: ScorePrecision) -> Result<(usize, usize, Vec<f32>, Vec<u8>)> {
        let (s, m) = rayon::join(|| read_score_map_key(sp, self.npz_key), || read_mask(lp));
        let ((h, w, mut sc), m) = (s?, m?);
        if (h, w) != (m.h, m.w) {
            bail!("{}: score map is {h}×{w} but the mask {} is {}×{}", sp.display(), lp.display(), m.h, m.w);
        }
        self.lm.check(&m, lp)?;
        precision.apply(&mut sc).with_context(|| format!("{}", sp.display()))?;
        Ok((h, w, sc, self.lm.apply(&m)))
    }
}

/// `bench eval --regions`.
pub struct RegionArgs {
    /// AUPRO's FPR limit.
    pub fpr: f64,
    /// Component threshold (`score ≥ t`); `None` = the split's best-F1 (leakage).
    pub threshold: Option<f32>,
    /// `--component-threshold smiyc` (with `threshold = None`): SMIYC's own
    /// rule, its binned best-F1 threshold on the evaluated split (leakage),
    /// float16 scores, `score > t` ([`crate::metrics::binned`]).
    pub smiyc_threshold: bool,
    pub track: Track,
}

/// AUPRO (exact, the weighted two-pass engine) and SMIYC component metrics
/// at a given threshold or at the split's own best-F1 threshold (leakage).
fn eval_regions(ev: &EvalInputs, conv: &MetricConv, ra: &RegionArgs, best_f1_threshold: Option<f64>) -> Result<serde_json::Value> {
    use crate::metrics::region::{ComponentConfig, ComponentStats, aupro, component_metrics, region_weights};
    let prec = conv.score_precision;
    let mut pc = PositiveCollector::new();
    let mut regions = 0u64;
    for p in &ev.pairs {
        let (h, w, sc, lab) = ev.load_hw(p, prec)?;
        let rw = region_weights(&lab, h, w).with_context(|| format!("{}", p.1.display()))?;
        regions += rw.regions as u64;
        pc.add_weighted(&sc, &lab, &rw.weights);
    }
    let mut r = pc.finish();
    for p in &ev.pairs {
        let (sc, lab) = ev.load(p, prec)?;
        r.add(&sc, &lab);
    }
    let wc = r.finish_weighted()?;
    let au = aupro(&wc.counts, &wc.tp_weight, regions, ra.fpr);
    if ra.smiyc_threshold {
        let comps = smiyc_components(ev, ra)?;
        return Ok(serde_json::json!({ "aupro": au, "aupro_fpr_limit": ra.fpr, "regions": regions, "components": comps }));
    }
    let (t, source) = match (ra.threshold, best_f1_threshold) {
        (Some(t), _) => (Some(t), "given"),
        (None, Some(t)) => (Some(t as f32), "best_f1_on_evaluated_split"),
        (None, None) => (None, "none"),
    };
    let comps = match t {
        Some(t) => {
            let cfg = ComponentConfig::track(ra.track, t);
            let mut acc = ComponentStats::new(&cfg.deltas);
            for p in &ev.pairs {
                let (h, w, sc, lab) = ev.load_hw(p, prec)?;
                component_metrics(&sc, &lab, h, w, &cfg, &mut acc).with_context(|| format!("{}", p.0.display()))?;
            }
            let s = acc.summary();
            serde_json::json!({
                "threshold": t, "threshold_source": source, "leakage": ra.threshold.is_none(),
                "track": ra.track, "positive_when": "score >= threshold",
                "siou": s.siou_gt, "ppv": s.ppv, "mean_f1": s.mean_f1,
                "gt_components": s.gt_components, "pred_components": s.pred_components,
            })
        }
        None => serde_json::Value::Null,
    };
    Ok(serde_json::json!({ "aupro": au, "aupro_fpr_limit": ra.fpr, "regions": regions, "components": comps }))
}

/// `--component-threshold smiyc`: SMIYC's component metrics as its code
/// computes them (see [`crate::metrics::binned`]'s doc): the threshold is
/// the best-F1 point of its binned pixel curve on these very frames
/// (leakage), the scores are the float16 maps SMIYC saves, and a pixel is
/// anomalous when `score > t` (compared in float64, numpy 2.x). Scores are
/// read as they are (no `score_precision`), as `--binning smiyc` does.
fn smiyc_components(ev: &EvalInputs, ra: &RegionArgs) -> Result<serde_json::Value> {
    use crate::metrics::binned::BinnedCurve;
    use crate::metrics::region::{ComponentConfig, ComponentStats, component_metrics};
    let mut c = BinnedCurve::new();
    for p in &ev.pairs {
        let (sc, lab) = ev.load(p, ScorePrecision::F32)?;
        c.add_frame(&sc, &lab).with_context(|| format!("{}", p.0.display()))?;
    }
    if c.top_frames > 1 {
        eprintln!(
            "warning: --component-threshold smiyc: {} frames share the highest threshold; there SMIYC's binned curve depends on numpy's unstable argsort order; bench follows argsort(kind=\"stable\")",
            c.top_frames
        );
    }
    let Some(m) = c.finish() else {
        eprintln!("warning: --component-threshold smiyc: no anomaly or no in-distribution pixels: SMIYC's binned curve (and its threshold) is undefined");
        return Ok(serde_json::Value::Null);
    };
    let t = m.best_f1_threshold;
    // float16 scores (exactly f32) `> t` ⟺ `> t32`, t32 = t rounded toward -∞ to f32
    let mut t32 = t as f32;
    if t32 as f64 > t {
        t32 = t32.next_down();
    }
    let mut cfg = ComponentConfig::track(ra.track, t32);
    cfg.strict = true;
    let mut acc = ComponentStats::new(&cfg.deltas);
    for p in &ev.pairs {
        let (h, w, mut sc, lab) = ev.load_hw(p, ScorePrecision::F32)?;
        for x in sc.iter_mut() {
            *x = half::f16::from_f32(*x).to_f32();
        }
        component_metrics(&sc, &lab, h, w, &cfg, &mut acc).with_context(|| format!("{}", p.0.display()))?;
    }
    let s = acc.summary();
    Ok(serde_json::json!({
        "threshold": t, "threshold_source": "smiyc_binned_best_f1", "leakage": true,
        "binned_best_f1": m.best_f1, "scores": "float16",
        "track": ra.track, "positive_when": "score > threshold",
        "siou": s.siou_gt, "ppv": s.ppv, "mean_f1": s.mean_f1,
        "gt_components": s.gt_components, "pred_components": s.pred_components,
    }))
}



/// Metrics of the pairs under `conv`. Pooled: two streaming passes (one
/// image kept in memory between them when there is only one). Per image:
/// one pass, one image's statistic at a time.
/// Both passes of `bench eval` over the file pairs (one image kept in
/// memory between them, several streamed twice), under `conv`.
fn evaluate(ev: &EvalInputs, conv: &MetricConv) -> Result<EvalOut> {
    let prec = conv.score_precision;
    let single = if ev.pairs.len() == 1 { Some(ev.load(&ev.pairs[0], prec)?) } else { None };
    let mut each = |f: &mut dyn FnMut(&[f32], &[u8])| -> Result<()> {
        match &single {
            Some((sc, lab)) => f(sc, lab),
            None => {
                for p in &ev.pairs {
                    let (sc, lab) = ev.load(p, prec)?;
                    f(&sc, &lab);
                }
            }
        }
        Ok(())
    };
    crate::metrics::conventions::evaluate(&mut each, conv)
}

/// `bench eval` under one convention: the JSON object (`json`) or the
/// text lines, to print on stdout; warnings go to stderr here.
pub fn eval(ev: &EvalInputs, conv: &MetricConv, name: Option<&str>, regions: Option<&RegionArgs>, json: bool) -> Result<String> {
    let o = evaluate(ev, conv)?;
    let reg = match regions {
        Some(ra) => Some(eval_regions(ev, conv, ra, o.threshold)?),
        None => None,
    };
    if o.positives == 0 || o.negatives == 0 {
        eprintln!("warning: no anomaly or no in-distribution pixels: metrics are undefined (null)");
    }
    if let Some((n, skipped)) = o.per_image
        && skipped > 0
    {
        eprintln!("warning: average = images: {skipped} image(s) without both classes skipped, {n} averaged");
    }
    let mut obj = serde_json::Value::Object(report::eval::eval_object(&o, ev.pairs.len() as u64, conv, name));
    let m = obj.as_object_mut().expect("object");
    if ev.missing > 0 {
        m.insert("missing_score_maps".into(), ev.missing.into());
    }
    if let Some(r) = &reg {
        for (k, v) in r.as_object().expect("object") {
            m.insert(k.clone(), v.clone());
        }
        if r["components"]["threshold_source"] == "smiyc_binned_best_f1" {
            eprintln!("warning: --regions: components binarised at SMIYC's binned best-F1 threshold of the evaluated split itself (leakage, as SMIYC's own code does); pass --component-threshold from another split for an honest number");
        } else if r["components"]["leakage"] == true {
            eprintln!("warning: --regions: components binarised at the evaluated split's own best-F1 threshold (leakage); pass --component-threshold from another split");
        }
    }
    Ok(if json { format!("{obj}\n") } else { report::eval::eval_text(&o, reg.as_ref(), conv, name) })
}

/// `--all-conventions`: one row per preset, in preset order. Fixed decimal
/// formatting and preset order make the output byte-stable.
pub fn eval_all(ev: &EvalInputs, json: bool) -> Result<String> {
    let mut rows = vec![];
    for p in PRESETS {
        // a u16 row on scores outside [0, 1] is left empty, with the reason
        let (o, note) = match evaluate(ev, &p.conv) {
            Ok(o) => (o, String::new()),
            Err(e) if p.conv.score_precision == ScorePrecision::U16 && format!("{e:#}").contains("needs scores in [0, 1]") => {
                let o = EvalOut { main: [None; 4], threshold: None, normal: None, positives: 0, negatives: 0, void: 0, per_image: None };
                (o, format!("{e:#}"))
            }
            Err(e) => return Err(e.context(format!("convention `{}`", p.name))),
        };
        rows.push((p, o, note));
    }
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(p, o, note)| {
                serde_json::json!({
                    "note": note,
                    "convention": p.name, "auroc": o.main[0], "aupr": o.main[1], "fpr95": o.main[2], "f1": o.main[3],
                    "aupr_in": o.normal.map(|n| n[0]), "fpr95_in": o.normal.map(|n| n[1]),
                    "images_skipped": o.per_image.map(|x| x.1), "switches": report::eval::conv_json(&p.conv, Some(p.name)),
                })
            })
            .collect();
        return Ok(format!("{}\n", serde_json::Value::Array(v)));
    }
    Ok(report::eval::conventions_md(&rows.iter().map(|(p, o, n)| (*p, o.main, o.normal, o.per_image, n.clone())).collect::<Vec<_>>()))
}


/// `bench eval --binning smiyc`: SMIYC's binned (approximate) pixel metric,
/// [`crate::metrics::binned`], one frame in memory at a time; the JSON
/// object (`json`) or one text line.
pub fn eval_binned(ev: &EvalInputs, json: bool) -> Result<String> {
    use crate::metrics::binned::{BinnedCurve, NUM_BINS};
    let mut c = BinnedCurve::new();
    for p in &ev.pairs {
        let (sc, lab) = ev.load(p, ScorePrecision::F32)?;
        c.add_frame(&sc, &lab).with_context(|| format!("{}", p.0.display()))?;
    }
    if c.empty_frames > 0 {
        eprintln!("warning: binning = \"smiyc\": {} frame(s) without a non-void pixel skipped (SMIYC's code fails on them)", c.empty_frames);
    }
    let m = c.finish();
    if c.top_frames > 1 {
        eprintln!(
            "warning: binning = \"smiyc\": {} frames share the highest threshold; there SMIYC's result depends on numpy's unstable argsort order (hardware dependent); bench follows argsort(kind=\"stable\"), the last such frame first",
            c.top_frames
        );
    }
    if m.is_none() {
        eprintln!("warning: no anomaly or no in-distribution pixels: metrics are undefined (null)");
    }
    let mut obj = serde_json::json!({
        "binning": "smiyc",
        "approximate": true,
        "bins_per_frame": NUM_BINS,
        "auroc": m.map(|x| x.auroc),
        "aupr": m.map(|x| x.ap),
        "fpr95": m.map(|x| x.fpr95),
        "curve_points": m.map(|x| x.points),
        "best_f1": m.map(|x| x.best_f1),
        "best_f1_threshold": m.map(|x| x.best_f1_threshold),
        "images": ev.pairs.len(),
        "positives": c.positives,
        "negatives": c.negatives,
        "void": c.void,
        "top_threshold_frames": c.top_frames,
    });
    if ev.missing > 0 {
        obj.as_object_mut().expect("object").insert("missing_score_maps".into(), ev.missing.into());
    }
    if json {
        return Ok(format!("{obj}\n"));
    }
    let f = |x: Option<f64>| x.map_or("null".to_string(), |v| format!("{:.5}", 100.0 * v));
    Ok(format!(
        "SMIYC binned (approximate, {NUM_BINS} bins per frame): AUROC {}  AP {}  FPR95 {}  ({} images, {} anomaly / {} normal pixels)\n",
        f(m.map(|x| x.auroc)),
        f(m.map(|x| x.ap)),
        f(m.map(|x| x.fpr95)),
        ev.pairs.len(),
        c.positives,
        c.negatives
    ))
}
