//! One model's sweep: calibration, val, then test with val's thresholds,
//! and every row the model contributes.

use super::*;

/// One model's sweep: calibration, val, then test with val's thresholds.
pub(crate) fn run_model(cx: &Ctx, cfg: &Config, sw: &Sweep, scorer: &mut dyn Scorer, mc: &crate::config::ModelCfg) -> Result<ModelOut> {
    let mut o = ModelOut::default();
    cx.next.set(0);
    cx.phases.set(Phases::default());
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
    drift_rows(cfg, sw, mc, &ev, &mut o)?;
    if ev.val.is_none() {
        let w = format!("{}: no `val` split: honest-evaluation thresholds were chosen on `test` (leakage)", mc.id);
        warn(cx, &mut o.warnings, w);
    }
    anyhow::ensure!(cx.next.get() == cx.plan.len(), "internal error: model {} ran {} of the {} planned passes", mc.id, cx.next.get(), cx.plan.len());
    Ok(o)
}

/// The model's SML/HEAT statistics: fitted on the calibration split (else
/// on test: leakage), or reused from `calibration = "..."`; recorded in `o`.
fn fit_or_reuse(cx: &Ctx, sw: &Sweep, mc: &crate::config::ModelCfg, o: &mut ModelOut) -> Result<Calibration> {
    let (split, leakage) = match sw.calib {
        Some(c) => (c, false),
        None => (sw.test, true),
    };
    let cal = match &sw.reuse {
        Some((path, file)) => file.model(path, &mc.id, classes_of(sw.test, &mc.id, cx.inp)?, sw.need_heat)?,
        None => {
            let feat = sw.need_heat && features_dir(split, &mc.id).is_dir();
            cx.timed(|p| &mut p.calibrate, || calibrate(cx, split, leakage, sw.need_heat, feat, &mc.id))?
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
    boots: Option<Vec<Bootstrap>>,
    /// The drifted copies of test (`test@<name>`), in `Sweep::drifted` order.
    drifted: Vec<SplitEval>,
}

/// Val first (its thresholds are probes on test), then test, then the
/// bootstrap over test's cached maps.
fn evaluate(cx: &Ctx, cfg: &Config, sw: &Sweep, scorer: &mut dyn Scorer, mc: &crate::config::ModelCfg, plan: &ScorePlan, o: &mut ModelOut) -> Result<Evaluated> {
    let (cols, test, val) = (&sw.cols, sw.test, sw.val);
    let track = |t: f32| ComponentConfig::track(cfg.metrics.component_track, t);
    let mut sopts = SplitOpts {
        regions: cfg.metrics.regions,
        components: vec![None; cols.len()],
        types: cfg.anomaly.len(),
        topk: cfg.metrics.image_topk as usize,
        ship_maps: false,
        per_image: (cfg.metrics.conv.average == crate::metrics::conventions::Average::Images).then_some(cfg.metrics.conv),
        normal_positive: cfg.metrics.conv.positive == crate::metrics::conventions::Positive::Normal,
        // the split that chooses thresholds: val, else test itself
        frr_budgets: cfg.metrics.frr.clone(),
        dashboard: None,
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
    sopts.ship_maps = cfg.metrics.bootstrap > 0;
    sopts.dashboard = Some(true);
    let te = eval_split(cx, test, &mc.id, scorer, plan, probes.clone(), &sopts)?;
    if cfg.metrics.all_conventions {
        let rows = cx.timed(|p| &mut p.conventions, || convention_rows(cx, test, &mc.id, scorer, plan, cols.len()))?;
        for (m, r) in cols.iter().zip(rows) {
            o.conv_rows.push((mc.name.clone(), m.display().to_string(), r));
        }
    }
    let per_image_avg = cfg.metrics.conv.average == crate::metrics::conventions::Average::Images;
    let boots = match (&te.cache, cfg.metrics.bootstrap) {
        (_, 0) => None,
        (_, b) if per_image_avg => Some(cx.timed(|p| &mut p.bootstrap, || {
            crate::metrics::bootstrap::bootstrap_images(&te.per_image.0, &te.per_image.1, b, cfg.metrics.bootstrap_seed)
        })?),
        (Some(c), b) => Some(cx.timed(|p| &mut p.bootstrap, || bootstrap(c, cols.len(), b, cfg.metrics.bootstrap_seed, (cfg.metrics.conv.fpr95, cfg.metrics.conv.aupr)))),
        (None, _) => {
            let w = format!(
                "{}: bootstrap skipped: the test split's score maps exceed the {} MiB in-memory budget",
                mc.id,
                SCORE_CACHE_BYTES >> 20
            );
            warn(cx, &mut o.warnings, w);
            None
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
    let dopts = SplitOpts { dashboard: Some(false), frr_budgets: vec![], ..sopts.clone() };
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
    c.bootstrap = boots.as_ref().map(|b| b[mi].clone());
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
    for (t, tc) in te.type_counts[mi].iter().enumerate() {
        let s = cfg.metrics.conv.summary(tc);
        let vt = f1_threshold(&chosen[mi]);
        o.failure_rows.push(FailureRow {
            model: mc.id.clone(),
            method: m.id().into(),
            split: "test".into(),
            anomaly_value: cfg.anomaly[t],
            positives: tc.positives,
            auroc: s.auroc,
            aupr: s.aupr,
            fpr95: s.fpr95,
            recall_at_val_threshold: vt.and_then(|t| {
                let i = tc.thresholds.iter().rposition(|&x| x >= t)?;
                Some(tc.tp[i] as f64 / tc.positives as f64)
            }),
        });
    }
    let own;
    let (src, ch): (&str, &[Chosen]) = match &val_eval {
        Some(_) => ("val", &chosen[mi]),
        // No val split: thresholds come from test itself (leakage).
        None => {
            own = choose_thresholds(te, mi, cfg);
            ("test", &own)
        }
    };
    let h = honest(&mc.id, m, src, val_eval.is_none() || leak(m, "test"), ch, te, mi, cfg);
    let keep = h.points.iter().filter(|p| p.level == crate::metrics::operating::Level::Pixel).filter_map(|p| p.threshold).collect();
    o.honest.push(h);
    o.curves.push((mc.id.clone(), m.clone(), te.counts[mi].clone(), keep));
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
    /// `metrics.all_conventions`: (model, method display name, rows).
    pub(crate) conv_rows: Vec<(String, String, Vec<ConvRow>)>,
}
