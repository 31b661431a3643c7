//! One model's sweep: calibration, val, then test with val's thresholds,
//! and every row the model contributes.

use super::*;
use crate::metrics::bootstrap::{HistIntervals, Threshold, hist_bootstrap};
use crate::metrics::operating::Level;

/// One model's sweep: calibration, val, then test with val's thresholds.
pub(crate) fn run_model(cx: &Ctx, cfg: &Config, sw: &Sweep, scorer: &mut dyn Scorer, mc: &crate::config::ModelCfg) -> Result<ModelOut> {
    let mut o = ModelOut::default();
    cx.next.store(0, std::sync::atomic::Ordering::Relaxed);
    *cx.phases.lock().unwrap_or_else(|e| e.into_inner()) = Phases::default();
    let calibration = if sw.need_cal { Some(fit_or_reuse(cx, sw, mc, &mut o)?) } else { None };
    let cal_split = calibration.as_ref().map(|c| c.split.clone());
    // HEAT on features: every evaluated split must have them.
    let use_feat = sw.need_heat && calibration.as_ref().is_some_and(|c| c.heat.features());
    check_features(cx, sw, mc, use_feat, &mut o)?;
    let plan = ScorePlan {
        methods: sw.methods.clone(),
        msp_temperature: cfg.method.msp.temperature,
        energy_temperature: cfg.method.energy.temperature,
        calibration,
        sml_post: cfg.method.sml,
        heat_post: cfg.method.heat,
        params: cfg.method.params(),
    };
    let leak = |m: &MethodRef, split: &str| m.needs_calibration() && cal_split.as_deref() == Some(split);
    let ev = evaluate(cx, cfg, sw, scorer, mc, &plan, &mut o)?;
    o.model = Some(ModelRow { id: mc.id.clone(), name: mc.name.clone(), dtype: ev.test.dtype.clone() });
    if let Some(ve) = &ev.val {
        val_rows(cfg, &sw.cols, mc, ve, &ev.test, &leak, &mut o);
    }
    for (mi, m) in sw.cols.iter().enumerate() {
        o.drift_hists.push(DriftCell { method: m.id().into(), model: mc.id.clone(), split: "test".into(), stats: ev.test.drift[mi].clone() });
    }
    for (mi, m) in sw.cols.iter().enumerate() {
        test_rows(cfg, mc, m, mi, &ev, &leak, &mut o);
    }
    if let Some(b) = &ev.boots {
        o.boot_diffs = diff_rows(cfg, &sw.cols, &mc.id, b);
    }
    o.failure_pngs = example_panels(cx, cfg, sw, &plan, &mc.id, &ev.test, &mut o)?;
    drift_rows(cfg, sw, mc, &ev, &mut o)?;
    if ev.val.is_none() {
        let w = format!("{}: no `val` split: honest-evaluation thresholds were chosen on `test` (leakage)", mc.id);
        warn(cx, &mut o.warnings, w);
    }
    anyhow::ensure!(cx.next.load(std::sync::atomic::Ordering::Relaxed) == cx.plan.len(), "internal error: model {} ran {} of the {} planned passes", mc.id, cx.next.load(std::sync::atomic::Ordering::Relaxed), cx.plan.len());
    Ok(o)
}

/// The model's SML/HEAT statistics: fitted on the calibration split (else
/// on test: leakage), or reused from `calibration = "..."`; recorded in `o`.
fn fit_or_reuse(cx: &Ctx, sw: &Sweep, mc: &crate::config::ModelCfg, o: &mut ModelOut) -> Result<Calibration> {
    let (split, leakage) = match sw.calib {
        Some(c) => (c, false),
        None => (sw.test, true),
    };
    let need_kl = sw.methods.contains(&Method::KlMatching);
    let cal = match &sw.reuse {
        Some((path, file)) => {
            let cal = file.model(path, &mc.id, classes_of(sw.test, &mc.id, cx.inp)?, sw.need_heat)?;
            anyhow::ensure!(
                !need_kl || cal.kl.is_some(),
                "{}: model {} has no KL-matching templates (the run that wrote it did not request kl_matching); refit or drop kl_matching",
                path.display(),
                mc.id
            );
            cal
        }
        None => {
            let feat = sw.need_heat && features_dir(split, &mc.id).is_dir();
            cx.timed(|p| &mut p.calibrate, || calibrate(cx, split, leakage, sw.need_heat, need_kl, feat, &mc.id))?
        }
    };
    o.cal_file = Some(ModelCalibration { model: mc.id.clone(), classes: cal.sml.mean.len(), calibration: cal.clone() });
    for w in &cal.warnings {
        warn(cx, &mut o.warnings, format!("{}: {w}", mc.id));
    }
    o.calibration = Some(calibration_row(&mc.id, &cal, sw.need_heat));
    Ok(cal)
}

/// HEAT fitted on features needs them in every evaluated split; features
/// beside a logits-only fit are ignored, with a warning.
fn check_features(cx: &Ctx, sw: &Sweep, mc: &crate::config::ModelCfg, use_feat: bool, o: &mut ModelOut) -> Result<()> {
    for s in [Some(sw.test), sw.val].into_iter().flatten().chain(sw.drifted.iter().copied()) {
        let dir = features_dir(s, &mc.id);
        if use_feat && !dir.is_dir() {
            bail!("{}: missing: HEAT of model {} was fitted on per-pixel features, so every split needs them", dir.display(), mc.id);
        }
        if sw.need_heat && !use_feat && dir.is_dir() {
            warn(cx, &mut o.warnings, format!("{}: features ignored: HEAT of model {} was fitted on logits (no features in its calibration)", dir.display(), mc.id));
        }
    }
    o.features = use_feat;
    Ok(())
}

/// What the two evaluated splits yield for one model.
pub(crate) struct Evaluated {
    val: Option<SplitEval>,
    test: SplitEval,
    /// Per column: the thresholds chosen on val (f1_optimal, far, frr).
    chosen: Vec<Vec<Chosen>>,
    sopts: SplitOpts,
    boots: Option<HistIntervals>,
    /// The drifted copies of test (`test@<name>`), in `Sweep::drifted` order.
    drifted: Vec<SplitEval>,
}

/// The histogram bootstrap of test for every column: thresholds `ch`
/// (per column, in honest-point order) counted exactly per replicate.
fn hist_boot(te: &SplitEval, ch: &[Vec<Chosen>], cfg: &Config, samples: u32) -> Result<HistIntervals> {
    let points: Vec<Vec<Option<Threshold>>> = ch.iter().map(|v| v.iter().map(|c| c.threshold().map(|t| Threshold { level: c.level, t: t as f32 })).collect()).collect();
    let soft = |level: Level| ch.first()?.iter().position(|c| c.level == level && c.rule == PointRule::FrrAtFar);
    let b = te.hist_boot(&points, cfg).context("internal error: the test split was evaluated without bootstrap histograms")?;
    hist_bootstrap(&b, samples, cfg.metrics.bootstrap_seed, [soft(Level::Pixel), soft(Level::Image)])
}

/// results.json's `bootstrap_diff` rows of one model.
fn diff_rows(cfg: &Config, cols: &[MethodRef], model: &str, boots: &HistIntervals) -> Vec<BootDiff> {
    boots
        .diffs
        .iter()
        .map(|d| BootDiff {
            model: model.into(),
            a: cols[d.a].id().into(),
            b: cols[d.b].id().into(),
            samples: cfg.metrics.bootstrap,
            seed: cfg.metrics.bootstrap_seed,
            defined: d.defined,
            auroc: d.auroc,
            aupr: d.aupr,
            fpr95: d.fpr95,
            f1: d.f1,
            aupro: d.aupro,
            image_auroc: d.image_auroc,
            far_budget: cfg.metrics.far.first().copied(),
            pixel_frr_at_far: d.pixel_frr,
            image_frr_at_far: d.image_frr,
            error_bound: d.error_bound,
        })
        .collect()
}

/// Val first (its thresholds are probes on test), then test, then the
/// bootstrap over test's per-image histograms.
fn evaluate(cx: &Ctx, cfg: &Config, sw: &Sweep, scorer: &mut dyn Scorer, mc: &crate::config::ModelCfg, plan: &ScorePlan, o: &mut ModelOut) -> Result<Evaluated> {
    let (cols, test, val) = (&sw.cols, sw.test, sw.val);
    let track = |t: f32| ComponentConfig::track(cfg.metrics.component_track, t);
    let mut sopts = SplitOpts {
        regions: cfg.metrics.regions,
        components: vec![None; cols.len()],
        types: cfg.anomaly.len(),
        topk: cfg.metrics.image_topk as usize,
        ship_maps: false,
        boot: false,
        cache_bytes: cfg.metrics.score_cache_mib.saturating_mul(1 << 20),
        per_image: (cfg.metrics.conv.average == crate::metrics::conventions::Average::Images).then_some(cfg.metrics.conv),
        normal_positive: cfg.metrics.conv.positive == crate::metrics::conventions::Positive::Normal,
        // the split that chooses thresholds: val, else test itself
        frr_budgets: cfg.metrics.frr.clone(),
        soft: vec![],
        dashboard: None,
        binned: false,
    };
    let val_eval = match val {
        Some(v) => Some(eval_split(cx, v, &mc.id, scorer, &plan, vec![vec![]; cols.len()], &sopts)?),
        None => None,
    };
    let chosen: Vec<_> = match &val_eval {
        Some(ve) => (0..cols.len()).map(|mi| choose_thresholds(ve, mi, cfg)).collect(),
        None => (0..cols.len()).map(|_| vec![]).collect(),
    };
    let probes: Vec<Vec<f32>> = chosen.iter().map(|ch| probe_thresholds(ch)).collect();
    if cfg.metrics.regions {
        // components at the val-F1-optimal threshold (never a test-chosen one)
        sopts.components = chosen.iter().map(|ch| f1_threshold(ch).map(track)).collect();
    }
    if val_eval.is_some() {
        sopts.frr_budgets = vec![]; // test only applies val's thresholds
    }
    let per_image_avg = cfg.metrics.conv.average == crate::metrics::conventions::Average::Images;
    // average = "images" bootstraps the per-image values instead
    sopts.boot = cfg.metrics.bootstrap > 0 && !per_image_avg;
    sopts.soft = soft_probes(&chosen, cols.len());
    sopts.dashboard = Some(true);
    sopts.binned = cfg.metrics.smiyc_binning;
    let te = eval_split(cx, test, &mc.id, scorer, plan, probes.clone(), &sopts)?;
    if cfg.metrics.all_conventions {
        let rows = cx.timed(|p| &mut p.conventions, || convention_rows(cx, test, &mc.id, scorer, plan, cols.len()))?;
        for (m, r) in cols.iter().zip(rows) {
            o.conv_rows.push((mc.name.clone(), m.display().to_string(), r));
        }
    }
    let boots = match cfg.metrics.bootstrap {
        0 => None,
        b if per_image_avg => Some(cx.timed(|p| &mut p.bootstrap, || crate::metrics::bootstrap::bootstrap_images(te.per_image_values(), b, cfg.metrics.bootstrap_seed))?),
        b => {
            let thresholds: Vec<Vec<Chosen>> = match &val_eval {
                Some(_) => vec![],
                None => (0..cols.len()).map(|mi| choose_thresholds(&te, mi, cfg)).collect(),
            };
            let ch = if val_eval.is_some() { &chosen } else { &thresholds };
            Some(cx.timed(|p| &mut p.bootstrap, || hist_boot(&te, ch, cfg, b))?)
        }
    };
    let drifted = eval_drifted(cx, cfg, sw, scorer, mc, plan, &sopts, &te, if val_eval.is_some() { Some(probes) } else { None })?;
    Ok(Evaluated { val: val_eval, test: te, chosen, sopts, boots, drifted })
}

/// Every drifted copy of test with the deployed pixel thresholds as probes
/// (`probes`: val's; `None`: no val, so test's own, leakage).
#[allow(clippy::too_many_arguments)]
fn eval_drifted(cx: &Ctx, cfg: &Config, sw: &Sweep, scorer: &mut dyn Scorer, mc: &crate::config::ModelCfg, plan: &ScorePlan, sopts: &SplitOpts, te: &SplitEval, probes: Option<Vec<Vec<f32>>>) -> Result<Vec<SplitEval>> {
    if sw.drifted.is_empty() {
        return Ok(vec![]);
    }
    let probes = probes.unwrap_or_else(|| (0..sw.cols.len()).map(|mi| probe_thresholds(&choose_thresholds(te, mi, cfg))).collect());
    let dopts = SplitOpts { dashboard: Some(false), frr_budgets: vec![], soft: vec![], binned: false, ..sopts.clone() };
    sw.drifted.iter().map(|d| eval_split(cx, d, &mc.id, scorer, plan, probes.clone(), &dopts)).collect()
}

/// The drift-sensitivity rows of every drifted split, and the clean test's
/// dashboard baseline (drift.json, for `bench drift` over runs).
fn drift_rows(cfg: &Config, sw: &Sweep, mc: &crate::config::ModelCfg, ev: &Evaluated, o: &mut ModelOut) -> Result<()> {
    let rs = Resampling::new(cfg, ev.test.images as usize);
    let chosen: Vec<Vec<Chosen>> = match &ev.val {
        Some(_) => vec![],
        None => (0..sw.cols.len()).map(|mi| choose_thresholds(&ev.test, mi, cfg)).collect(),
    };
    let chosen = if ev.val.is_some() { &ev.chosen } else { &chosen };
    for (mi, m) in sw.cols.iter().enumerate() {
        let stats = dashboard(&ev.test, &ev.test, mi, hard(&chosen[mi]), &rs);
        o.dash_base.push(DashCell { model: mc.id.clone(), method: m.id().into(), split: "test".into(), samples: rs.samples, seed: rs.seed, stats });
    }
    let first = o.honest.len() - sw.cols.len();
    let d = DriftInputs { base: &ev.test, chosen, src: if ev.val.is_some() { "val" } else { "test" }, honest: &o.honest[first..], rs: &rs };
    let mut rows = vec![];
    for (split, e) in sw.drifted.iter().zip(&ev.drifted) {
        rows.extend(drift_split_rows(cfg, &mc.id, &sw.cols, &split.name, e, &d)?);
    }
    o.drift_splits.extend(rows);
    Ok(())
}

/// The val cells and the val → test drift rows.
fn val_rows(cfg: &Config, cols: &[MethodRef], mc: &crate::config::ModelCfg, ve: &SplitEval, te: &SplitEval, leak: &dyn Fn(&MethodRef, &str) -> bool, o: &mut ModelOut) {
        for (mi, m) in cols.iter().enumerate() {
            o.cells.push(cell(&mc.id, m, "val", ve, mi, cfg, leak(m, "val")));
            let (a, b) = (&ve.drift[mi], &te.drift[mi]);
            let shift = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
            o.drift_rows.push(DriftRow {
                model: mc.id.clone(),
                method: m.id().into(),
                reference: "val".into(),
                split: "test".into(),
                mean_shift: shift(a.mean, b.mean),
                p95_shift: shift(a.quantile(0.95), b.quantile(0.95)),
                kl: kl(b, a),
                mmd2: mmd2(b, a),
            });
            o.drift_hists.push(DriftCell { method: m.id().into(), model: mc.id.clone(), split: "val".into(), stats: a.clone() });
        }
}

/// Column `mi`'s test cell (with bootstrap and components), its failure
/// rows, its honest operating points and its curve.
fn test_rows(cfg: &Config, mc: &crate::config::ModelCfg, m: &MethodRef, mi: usize, ev: &Evaluated, leak: &dyn Fn(&MethodRef, &str) -> bool, o: &mut ModelOut) {
    let (te, chosen, sopts, boots, val_eval) = (&ev.test, &ev.chosen, &ev.sopts, &ev.boots, &ev.val);
    let mut c = cell(&mc.id, m, "test", &te, mi, cfg, leak(m, "test"));
    c.bootstrap = boots.as_ref().map(|b| b.cells[mi].clone());
    if let (Some(acc), Some(cc)) = (&te.components[mi], &sopts.components[mi]) {
        let s = acc.summary();
        c.components = Some(Components {
            threshold: cc.threshold as f64,
            threshold_split: "val".into(),
            track: cfg.metrics.component_track,
            siou: s.siou_gt,
            ppv: s.ppv,
            mean_f1: s.mean_f1,
            gt_components: s.gt_components,
            pred_components: s.pred_components,
        });
    }
    o.cells.push(c);
    o.failure_rows.extend(failure_rows(cfg, &mc.id, m, mi, te, val_eval.as_ref().map(|_| chosen[mi].as_slice())));
    let own;
    let (src, ch): (&str, &[Chosen]) = match &val_eval {
        Some(_) => ("val", &chosen[mi]),
        // No val split: thresholds come from test itself (leakage).
        None => {
            own = choose_thresholds(te, mi, cfg);
            ("test", &own)
        }
    };
    let mut h = honest(&mc.id, m, src, val_eval.is_none() || leak(m, "test"), ch, te, mi, cfg);
    if let Some(b) = boots.as_ref().and_then(|b| b.points.get(mi)) {
        for (p, ci) in h.points.iter_mut().zip(b) {
            (p.far_ci, p.frr_ci) = ci.map_or((None, None), |ci| (ci.far, ci.frr));
        }
    }
    let keep = h.points.iter().filter(|p| p.level == crate::metrics::operating::Level::Pixel).filter_map(|p| p.threshold).collect();
    o.honest.push(h);
    o.curves.push((mc.id.clone(), m.clone(), te.packed[mi].clone(), keep));
}

/// Everything one model contributes to the results.
#[derive(Default)]
pub(crate) struct ModelOut {
    pub(crate) cells: Vec<Cell>,
    pub(crate) honest: Vec<HonestCell>,
    pub(crate) calibration: Option<CalibrationRow>,
    pub(crate) model: Option<ModelRow>,
    pub(crate) drift_rows: Vec<DriftRow>,
    pub(crate) drift_hists: Vec<DriftCell>,
    /// Drift sensitivity of the drifted copies of test.
    pub(crate) drift_splits: Vec<crate::report::results::DriftSplit>,
    /// The clean test's dashboard baseline per column (drift.json).
    pub(crate) dash_base: Vec<DashCell>,
    pub(crate) failure_rows: Vec<FailureRow>,
    pub(crate) curves: Vec<Curve>,
    pub(crate) warnings: Vec<String>,
    /// This model's entry of calibration.json.
    pub(crate) cal_file: Option<ModelCalibration>,
    /// HEAT read per-pixel features.
    pub(crate) features: bool,
    /// Failure-mode example panels: (path in the results folder, PNG bytes).
    pub(crate) failure_pngs: Vec<(String, Vec<u8>)>,
    /// `metrics.all_conventions`: (model, method display name, rows).
    pub(crate) conv_rows: Vec<(String, String, Vec<ConvRow>)>,
    /// Paired bootstrap differences of this model's methods.
    pub(crate) boot_diffs: Vec<BootDiff>,
}
