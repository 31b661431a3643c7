//! `bench run`: wires the rooms together for one sweep.
//!
//! Why it is separate from the rooms: the order of work (calibration, then
//! val, then test with the val thresholds) is policy, not mechanism. Each
//! split is visited in two streaming passes (positives, then ranks of the
//! negatives; see `metrics::engine`); small splits keep their score maps
//! between the passes, large ones are re-scored, so memory never grows with
//! the pixel count. A reader thread decodes the next image while the current
//! one is scored.

use crate::config::{Config, Device};
use crate::data::npy::read_logits_into;
use crate::data::resize::{Resize, resize_logits};
use crate::external::{External, MethodRef};
use crate::data::{Dataset, LabelMap, Logits, Split, label, read_mask};
use crate::metrics::drift::{DriftStats, NormalStats, kl, mmd2};
use crate::metrics::region::{ComponentConfig, ComponentStats, aupro, region_weights};
use crate::metrics::{Counts, OperatingPoint, PositiveCollector, ThresholdCounter, counts_of};
use crate::report::results::*;
use crate::scores::{Calibration, Method, ScoreMaps, ScorePlan, Scorer};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// Score maps of a split are kept between the two passes when they fit in
/// this many bytes; otherwise the split is scored twice.
pub const SCORE_CACHE_BYTES: usize = 256 << 20;

pub struct RunOptions {
    /// Overrides the config's `device`.
    pub device: Option<Device>,
    pub progress: bool,
}

pub struct RunOutput {
    pub results: Results,
    pub manifest: serde_json::Value,
    /// Test-split statistic per (model, method), with the thresholds of the
    /// honest evaluation, for curves and plots.
    pub curves: Vec<(String, MethodRef, Counts, Vec<f64>)>,
    /// `drift.json`: per (model, method, split) normal-score histograms, the
    /// input of `bench drift a b`.
    pub drift: serde_json::Value,
}

/// The scorer for a device choice, and `cpu` / `gpu`.
pub fn make_scorer(device: Device) -> Result<(Box<dyn Scorer>, &'static str)> {
    use crate::scores::cpu::CpuScorer;
    use crate::scores::gpu::GpuScorer;
    match device {
        Device::Cpu => Ok((Box::new(CpuScorer), "cpu")),
        Device::Gpu => {
            let g = GpuScorer::new(true).context("--device gpu")?;
            eprintln!("device: {}", g.device());
            Ok((Box::new(g), "gpu"))
        }
        Device::Auto => match GpuScorer::new(false) {
            Ok(g) => {
                eprintln!("device: {}", g.device());
                Ok((Box::new(g), "gpu"))
            }
            Err(e) => {
                eprintln!("notice: no hardware GPU adapter ({e:#}); scoring on the CPU (use --device gpu to accept a software adapter)");
                Ok((Box::new(CpuScorer), "cpu"))
            }
        },
    }
}

/// Read one image's mask and logits (into `buf`'s allocation when given) and
/// check they describe the same pixels.
/// SHA-256 of every input file read, for manifest.json (each file hashed
/// once, on the reader thread, from the page cache).
#[derive(Default)]
pub struct Checksums(std::sync::Mutex<std::collections::BTreeMap<String, String>>);

impl Checksums {
    fn add(&self, p: &std::path::Path) -> Result<()> {
        let k = p.display().to_string();
        if self.0.lock().unwrap().contains_key(&k) {
            return Ok(());
        }
        let bytes = std::fs::read(p).with_context(|| format!("{k}: cannot read"))?;
        let h = sha256_hex(&bytes);
        self.0.lock().unwrap().insert(k, h);
        Ok(())
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.0.lock().unwrap()).unwrap_or_default()
    }
}

/// How input files are read: label convention, resizing, checksums.
pub struct Inputs {
    pub labels: LabelMap,
    pub resize: Resize,
    /// Logits stored `[H, W, C]`.
    pub hwc: bool,
    /// Array of each logits `.npz` to read (`None`: the only one).
    pub npz_key: Option<String>,
    /// Outside methods' precomputed maps, appended after the computed ones.
    pub external: Vec<External>,
    /// Array of each external score-map `.npz` to read.
    pub npz_score_key: Option<String>,
    pub sums: Checksums,
}

fn load(split: &Split, model: &str, i: usize, inp: &Inputs, buf: Option<Logits>) -> Result<(Logits, Vec<u8>)> {
    let (lm, sums, rs) = (&inp.labels, &inp.sums, inp.resize);
    let mask = read_mask(&split.labels[i])?;
    lm.check(&mask, &split.labels[i])?;
    let lp = split.logits_path(model, &split.stems[i])?;
    sums.add(&split.labels[i])?;
    sums.add(&lp)?;
    let lg = match buf {
        Some(mut b) => {
            read_logits_into(&lp, inp.npz_key.as_deref(), &mut b)?;
            b
        }
        None => crate::data::npy::read_logits_key(&lp, inp.npz_key.as_deref())?,
    };
    let lg = if inp.hwc { lg.from_hwc() } else { lg };
    if (lg.h, lg.w) != (mask.h, mask.w) && rs != Resize::None {
        let up = resize_logits(&lg, mask.h, mask.w, rs).with_context(|| lp.display().to_string())?;
        return Ok((up, lm.apply(&mask)));
    }
    if (lg.h, lg.w) != (mask.h, mask.w) {
        bail!(
            "{}: logits are {}×{} but the mask {} is {}×{} (set `resize = \"nearest\"` or `\"bilinear\"` to upsample)",
            lp.display(),
            lg.h,
            lg.w,
            split.labels[i].display(),
            mask.h,
            mask.w
        );
    }
    Ok((lg, lm.apply(&mask)))
}

/// Visit every image of a split in order, decoding the next one on a reader
/// thread while `f` works on the current one. Logit buffers travel back to
/// the reader for reuse (fresh allocations cost more than the decoding).
fn for_each_image(
    split: &Split,
    model: &str,
    inp: &Inputs,
    mut f: impl FnMut(usize, &Logits, Vec<u8>) -> Result<()>,
) -> Result<()> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Logits>();
        s.spawn(move || {
            for i in 0..split.stems.len() {
                let r = load(split, model, i, inp, free_rx.try_recv().ok());
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    break;
                }
            }
        });
        for (i, item) in rx.into_iter().enumerate() {
            let (lg, lab) = item?;
            f(i, &lg, lab)?;
            let _ = free_tx.send(lg);
        }
        Ok(())
    })
}

/// Score maps of image `i`: the built-in methods computed from its logits,
/// then the outside methods' precomputed maps read at the mask's size.
fn score_image(scorer: &mut dyn Scorer, lg: &Logits, plan: &ScorePlan, inp: &Inputs, split: &Split, model: &str, i: usize) -> Result<ScoreMaps> {
    let mut maps = if plan.methods.is_empty() { ScoreMaps { h: lg.h, w: lg.w, maps: vec![] } } else { scorer.score(lg, plan)? };
    for e in &inp.external {
        let (p, v) = e.read(split, model, i, inp.npz_score_key.as_deref(), inp.resize, maps.h, maps.w)?;
        inp.sums.add(&p)?;
        maps.maps.push(v);
    }
    Ok(maps)
}

/// What one split yields for one model: per method, the exact statistic,
/// the counts at the probe thresholds and the image-level scores.
struct SplitEval {
    counts: Vec<Counts>,
    /// Per method: AUPRO (when `regions`), and the region count.
    aupro: Vec<Option<f64>>,
    regions: u64,
    components: Vec<Option<ComponentStats>>,
    /// Per method, per anomaly type (only when there are several types).
    type_counts: Vec<Vec<Counts>>,
    /// Score maps kept in memory (small splits), for the bootstrap.
    cache: Option<Vec<(ScoreMaps, Vec<u8>)>>,
    drift: Vec<DriftStats>,
    probes: Vec<ThresholdCounter>,
    image_scores: Vec<Vec<f32>>,
    image_labels: Vec<u8>,
    void: u64,
    images: u64,
    dtype: &'static str,
}

fn eval_split(
    split: &Split,
    model: &str,
    inp: &Inputs,
    scorer: &mut dyn Scorer,
    plan: &ScorePlan,
    probes: Vec<Vec<f32>>,
    opts: &SplitOpts,
    bar: &ProgressBar,
) -> Result<SplitEval> {
    let nm = plan.methods.len() + inp.external.len();
    let nt = if opts.types > 1 { opts.types } else { 0 };
    let mut pos: Vec<PositiveCollector> = (0..nm).map(|_| PositiveCollector::new()).collect();
    let mut tpos: Vec<Vec<PositiveCollector>> = (0..nm).map(|_| (0..nt).map(|_| PositiveCollector::new()).collect()).collect();
    let mut normal: Vec<NormalStats> = (0..nm).map(|_| NormalStats::new()).collect();
    let mut regions = 0u64;
    let mut comps: Vec<Option<ComponentStats>> = opts.components.iter().map(|c| c.as_ref().map(|c| ComponentStats::new(&c.deltas))).collect();
    let mut probes: Vec<ThresholdCounter> = probes.into_iter().map(ThresholdCounter::new).collect();
    let mut image_scores = vec![Vec::new(); nm];
    let mut image_labels = Vec::new();
    let mut cache: Option<Vec<(ScoreMaps, Vec<u8>)>> = Some(Vec::new());
    let mut cached_bytes = 0usize;
    let (mut void, mut dtype) = (0u64, "float32");
    let ctx = |i: usize| format!("{}/{} [{}]", split.name, split.stems[i], model);

    // pass 1: positives, probe thresholds, image scores
    for_each_image(split, model, inp, |i, lg, lab| {
        dtype = lg.dtype();
        let maps = score_image(scorer, lg, plan, inp, split, model, i).with_context(|| ctx(i))?;
        void += lab.iter().filter(|&&l| l == label::VOID).count() as u64;
        let valid = lab.iter().any(|&l| l != label::VOID);
        let rw = if opts.regions {
            let rw = region_weights(&lab, maps.h, maps.w).with_context(|| ctx(i))?;
            regions += rw.regions as u64;
            Some(rw)
        } else {
            None
        };
        if valid {
            image_labels.push(lab.iter().any(|&l| label::is_anomaly(l)) as u8);
        }
        for m in 0..nm {
            let s = &maps.maps[m];
            match &rw {
                Some(rw) => pos[m].add_weighted(s, &lab, &rw.weights),
                None => pos[m].add(s, &lab, None),
            }
            if let (Some(cfg), Some(acc)) = (&opts.components[m], comps[m].as_mut()) {
                crate::metrics::region::component_metrics(s, &lab, maps.h, maps.w, cfg, acc).with_context(|| ctx(i))?;
            }
            for (t, c) in tpos[m].iter_mut().enumerate() {
                c.add(s, &lab, Some(t as u8 + 1));
            }
            normal[m].add(s, &lab);
            probes[m].add(s, &lab);
            if valid {
                image_scores[m].push(image_score(s, &lab, opts.topk));
            }
        }
        cached_bytes += maps.maps.iter().map(|v| v.len() * 4).sum::<usize>() + lab.len();
        if cached_bytes > SCORE_CACHE_BYTES {
            cache = None;
        }
        if let Some(c) = cache.as_mut() {
            c.push((maps, lab));
        }
        bar.inc(1);
        Ok(())
    })?;

    // pass 2: rank every negative among the positives
    let mut rankers: Vec<_> = pos.into_iter().map(|p| p.finish()).collect();
    let mut trankers: Vec<Vec<_>> = tpos.into_iter().map(|v| v.into_iter().map(|p| p.finish()).collect()).collect();
    let mut refiners: Vec<_> = normal.into_iter().map(|n| n.refine()).collect();
    let mut pass2 = |maps: &ScoreMaps, lab: &[u8]| {
        for m in 0..nm {
            rankers[m].add(&maps.maps[m], lab);
            for r in trankers[m].iter_mut() {
                r.add(&maps.maps[m], lab);
            }
            refiners[m].add(&maps.maps[m], lab);
        }
        bar.inc(1);
    };
    match &cache {
        Some(c) => c.iter().for_each(|(maps, lab)| pass2(maps, lab)),
        None => for_each_image(split, model, inp, |i, lg, lab| {
            pass2(&score_image(scorer, lg, plan, inp, split, model, i).with_context(|| ctx(i))?, &lab);
            Ok(())
        })?,
    }
    let drift = refiners.into_iter().map(|r| r.finish()).collect();
    let type_counts = trankers
        .into_iter()
        .map(|v| v.into_iter().map(|r| r.finish()).collect::<Result<Vec<_>>>())
        .collect::<Result<Vec<_>>>()?;
    let weighted = rankers
        .into_iter()
        .map(|r| r.finish_weighted().with_context(|| format!("split {} [{model}]", split.name)))
        .collect::<Result<Vec<_>>>()?;
    let aupro_v = weighted.iter().map(|w| if opts.regions { aupro(&w.counts, &w.tp_weight, regions, 0.3) } else { None }).collect();
    let counts = weighted.into_iter().map(|w| w.counts).collect();
    Ok(SplitEval { counts, aupro: aupro_v, regions, components: comps, type_counts, cache, drift, probes, image_scores, image_labels, void, images: split.stems.len() as u64, dtype })
}

/// Per-split options of the evaluation.
struct SplitOpts {
    /// AUPRO: weight positives by 1/|region|.
    regions: bool,
    /// Per method: component-metric configuration (threshold from val).
    components: Vec<Option<ComponentConfig>>,
    /// Number of anomaly types (values in the `anomaly` list).
    types: usize,
    /// Image score: mean of the top-k non-void pixel scores (k ≤ 1: max).
    topk: usize,
}

/// Image score: max (k ≤ 1) or mean of the k largest non-void pixel scores.
fn image_score(s: &[f32], lab: &[u8], k: usize) -> f32 {
    let valid = s.iter().zip(lab).filter(|p| *p.1 != label::VOID).map(|p| *p.0);
    if k <= 1 {
        return valid.fold(f32::NEG_INFINITY, f32::max);
    }
    let mut v: Vec<f32> = valid.collect();
    let k = k.min(v.len());
    let n = v.len();
    v.select_nth_unstable_by(n - k, |a, b| a.total_cmp(b));
    let mut top = v[n - k..].to_vec();
    top.sort_unstable_by(|a, b| a.total_cmp(b)); // fixed summation order
    (top.iter().map(|&x| x as f64).sum::<f64>() / k as f64) as f32
}

/// 95 % percentile-bootstrap intervals over resampled images, per method:
/// replicate r draws n images with replacement from a ChaCha8 stream seeded
/// by (seed, r); all methods see the same draws (paired).
fn bootstrap(cache: &[(ScoreMaps, Vec<u8>)], nm: usize, samples: u32, seed: u64, rule: crate::metrics::Fpr95Rule) -> Vec<Bootstrap> {
    use rand::{RngExt, SeedableRng};
    use rayon::prelude::*;
    let n = cache.len();
    let reps: Vec<Vec<Option<(f64, f64, f64)>>> = (0..samples)
        .into_par_iter()
        .map(|r| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(r as u64));
            let draw: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            (0..nm)
                .map(|m| {
                    let mut pc = PositiveCollector::new();
                    for &i in &draw {
                        pc.add(&cache[i].0.maps[m], &cache[i].1, None);
                    }
                    let mut rk = pc.finish();
                    for &i in &draw {
                        rk.add(&cache[i].0.maps[m], &cache[i].1);
                    }
                    let c = rk.finish().ok()?;
                    let s = c.summary(rule);
                    Some((s.auroc?, s.aupr?, s.fpr95?))
                })
                .collect()
        })
        .collect();
    (0..nm)
        .map(|m| {
            let vals: Vec<(f64, f64, f64)> = reps.iter().filter_map(|r| r[m]).collect();
            let ci = |f: fn(&(f64, f64, f64)) -> f64| {
                let mut v: Vec<f64> = vals.iter().map(f).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                Some([crate::metrics::np_percentile(&v, 0.025)?, crate::metrics::np_percentile(&v, 0.975)?])
            };
            Bootstrap { samples, seed, defined: vals.len() as u32, auroc: ci(|x| x.0), aupr: ci(|x| x.1), fpr95: ci(|x| x.2) }
        })
        .collect()
}

fn point(rule: &str, target: Option<f64>, op: Option<OperatingPoint>) -> Point {
    Point {
        rule: rule.into(),
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
fn choose_thresholds(c: &Counts, cfg: &Config) -> Vec<(String, Option<f64>, Option<OperatingPoint>)> {
    let mut v = vec![(
        "f1_optimal".to_string(),
        None,
        c.best_f1().and_then(|(_, t)| c.thresholds.iter().position(|&x| x == t)).map(|i| c.at_index(i)),
    )];
    for &t in &cfg.metrics.far {
        v.push(("far".into(), Some(t), c.threshold_at_far(t)));
    }
    for &t in &cfg.metrics.frr {
        v.push(("frr".into(), Some(t), c.threshold_at_frr(t)));
    }
    v
}

fn cell(model: &str, m: &MethodRef, split: &str, e: &SplitEval, mi: usize, cfg: &Config, leakage: bool) -> Cell {
    let c = &e.counts[mi];
    let s = c.summary(cfg.metrics.fpr95);
    let mut warnings = vec![];
    if c.positives == 0 {
        warnings.push(format!("split '{split}' has no anomaly pixels: pixel metrics are undefined"));
    }
    if c.negatives == 0 {
        warnings.push(format!("split '{split}' has no in-distribution pixels: pixel metrics are undefined"));
    }
    let img = counts_of(&e.image_scores[mi], &e.image_labels);
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
        warnings,
    }
}

fn honest(model: &str, m: &MethodRef, src: &str, leakage: bool, pts: Vec<Point>, test: &Counts) -> HonestCell {
    let hard = pts.iter().find(|p| p.rule == "far").and_then(|p| p.threshold);
    let soft = pts.iter().find(|p| p.rule == "frr").and_then(|p| p.threshold);
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
fn frac_at(op: &OperatingPoint) -> f64 {
    (op.tp + op.fp) as f64 / (op.positives + op.negatives).max(1) as f64
}

/// A run-level warning: shown on stderr now, recorded in results.json.
fn warn(warnings: &mut Vec<String>, w: String) {
    eprintln!("warning: {w}");
    warnings.push(w);
}

/// Fit SML / HEAT statistics for one model on `split`.
fn calibrate(split: &Split, leakage: bool, heat: bool, model: &str, inp: &Inputs, bar: &ProgressBar) -> Result<Calibration> {
    let mut visit = |f: &mut dyn FnMut(&Logits, &[u8]) -> Result<()>| {
        for_each_image(split, model, inp, |_, lg, lab| {
            bar.inc(1);
            f(lg, &lab)
        })
    };
    Calibration::fit(&split.name, leakage, heat, &mut visit).with_context(|| format!("model {model}"))
}

/// The fitted statistics as reported in results.json.
fn calibration_row(model: &str, cal: &Calibration, heat: bool) -> CalibrationRow {
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
fn conventions(cfg: &Config) -> Result<Conventions> {
    Ok(Conventions {
        fpr95: serde_json::to_value(cfg.metrics.fpr95)?.as_str().unwrap_or_default().to_string(),
        positive_when: "score >= threshold".into(),
        pooling: "all non-void pixels of the split pooled; exact (no subsampling, no binning)".into(),
        anomaly_values: cfg.anomaly.clone(),
        ignore_values: cfg.ignore.clone(),
        msp_temperature: cfg.method.msp.temperature,
        energy_temperature: cfg.method.energy.temperature,
        sml_variant: "plain (no boundary suppression, no dilated smoothing)".into(),
        heat_variant: format!(
            "logits-only soft-min of z-scored logit energy and tied-covariance class-Gaussian energy (ridge {})",
            crate::scores::calib::RIDGE
        ),
        resize: cfg.resize.clone().unwrap_or_else(|| "none".into()),
        image_score: if cfg.metrics.image_topk > 1 {
            format!("mean of the top {} non-void pixel scores", cfg.metrics.image_topk)
        } else {
            "max over non-void pixels".into()
        },
    })
}

pub fn run(cfg: &Config, cfg_bytes: &[u8], opts: &RunOptions) -> Result<RunOutput> {
    let t0 = Instant::now();
    let mut inp = Inputs {
        labels: LabelMap::new(cfg.anomaly.clone(), cfg.ignore.clone())?,
        resize: Resize::parse(cfg.resize.as_deref())?,
        hwc: cfg.layout.as_deref() == Some("hwc"),
        npz_key: cfg.npz_key.clone(),
        external: vec![],
        npz_score_key: cfg.npz_score_key.clone(),
        sums: Checksums::default(),
    };
    if let Some(kind) = &cfg.synthetic
        && !cfg.dataset.exists()
    {
        eprintln!(
            "notice: {} does not exist; generating the deterministic synthetic '{kind}' dataset there",
            cfg.dataset.display()
        );
        crate::synth::generate(&cfg.dataset, &crate::synth::SynthSpec::demo())?;
    }
    let ds = Dataset::open(&cfg.dataset)?;
    let test = ds.split("test").with_context(|| format!("{}: no `test` split", cfg.dataset.display()))?;
    let val = ds.split("val");
    let calib = ds.split("calibration");
    let methods = cfg.parsed_methods()?;
    let need_cal = methods.iter().any(|m| m.needs_calibration());
    let need_heat = methods.contains(&Method::Heat);
    let model_ids: Vec<String> = cfg.models.iter().map(|m| m.id.clone()).collect();
    let read_splits: Vec<&Split> = [Some(test), val].into_iter().flatten().collect();
    inp.external = crate::external::resolve(&cfg.external, &read_splits, &model_ids)?;
    let inp = inp;
    // Columns: the built-in methods, then the outside ones.
    let cols: Vec<MethodRef> = methods.iter().map(|&m| MethodRef::Builtin(m)).chain(inp.external.iter().map(|e| e.column())).collect();

    // Fail fast on missing files before any long work.
    for mc in &cfg.models {
        for s in [Some(test), val, if need_cal { calib } else { None }].into_iter().flatten() {
            s.check_model(&mc.id)?;
        }
    }

    let (mut scorer, device_kind) = make_scorer(opts.device.or(cfg.device).unwrap_or_default())?;
    let visits_per_model = {
        let split_visits = |s: &Split| 2 * s.stems.len() as u64;
        let cal_visits = match (need_cal, calib) {
            (false, _) => 0,
            (true, Some(c)) => (1 + need_heat as u64) * c.stems.len() as u64,
            (true, None) => (1 + need_heat as u64) * test.stems.len() as u64,
        };
        split_visits(test) + val.map_or(0, split_visits) + cal_visits
    };
    let bar = if opts.progress && std::io::stderr().is_terminal() {
        let b = ProgressBar::new(visits_per_model * cfg.models.len() as u64);
        b.set_style(ProgressStyle::with_template("{spinner} {msg:24} [{bar:40}] {pos}/{len} images ({eta})").unwrap().progress_chars("=> "));
        b
    } else {
        ProgressBar::hidden()
    };

    let mut warnings = Vec::new();
    let (mut cells, mut honest_cells, mut cal_rows, mut model_rows) = (vec![], vec![], vec![], vec![]);
    let mut timings = serde_json::Map::new();
    let mut curves = Vec::new();
    let (mut drift_rows, mut drift_hists) = (Vec::new(), Vec::new());
    let mut failure_rows = Vec::new();
    for mc in &cfg.models {
        let tm = Instant::now();
        bar.set_message(mc.id.clone());
        let calibration = if need_cal {
            let (split, leakage) = match calib {
                Some(c) => (c, false),
                None => (test, true),
            };
            let cal = calibrate(split, leakage, need_heat, &mc.id, &inp, &bar)?;
            for w in &cal.warnings {
                warn(&mut warnings, format!("{}: {w}", mc.id));
            }
            cal_rows.push(calibration_row(&mc.id, &cal, need_heat));
            Some(cal)
        } else {
            None
        };
        let cal_split = calibration.as_ref().map(|c| c.split.clone());
        let plan = ScorePlan {
            methods: methods.clone(),
            msp_temperature: cfg.method.msp.temperature,
            energy_temperature: cfg.method.energy.temperature,
            calibration,
        };
        let leak = |m: &MethodRef, split: &str| m.needs_calibration() && cal_split.as_deref() == Some(split);

        // val first: its thresholds are probes on test
        let track = |t: f32| match cfg.metrics.component_track.as_str() {
            "obstacle" => ComponentConfig::obstacle_track(t),
            _ => ComponentConfig::anomaly_track(t),
        };
        let mut sopts = SplitOpts {
            regions: cfg.metrics.regions,
            components: vec![None; cols.len()],
            types: cfg.anomaly.len(),
            topk: cfg.metrics.image_topk as usize,
        };
        let val_eval = match val {
            Some(v) => Some(eval_split(v, &mc.id, &inp, scorer.as_mut(), &plan, vec![vec![]; cols.len()], &sopts, &bar)?),
            None => None,
        };
        let chosen: Vec<_> = match &val_eval {
            Some(ve) => ve.counts.iter().map(|c| choose_thresholds(c, cfg)).collect(),
            None => vec![vec![]; cols.len()],
        };
        let probes: Vec<Vec<f32>> = chosen.iter().map(|ch| ch.iter().filter_map(|x| x.2.map(|o| o.threshold as f32)).collect()).collect();
        if cfg.metrics.regions {
            // components at the val-F1-optimal threshold (never a test-chosen one)
            sopts.components = chosen.iter().map(|ch| ch.first().and_then(|x| x.2).map(|o| track(o.threshold as f32))).collect();
        }
        let te = eval_split(test, &mc.id, &inp, scorer.as_mut(), &plan, probes, &sopts, &bar)?;
        let boots = match (&te.cache, cfg.metrics.bootstrap) {
            (_, 0) => None,
            (Some(c), b) => Some(bootstrap(c, cols.len(), b, cfg.metrics.bootstrap_seed, cfg.metrics.fpr95)),
            (None, _) => {
                let w = format!(
                    "{}: bootstrap skipped: the test split's score maps exceed the {} MiB in-memory budget",
                    mc.id,
                    SCORE_CACHE_BYTES >> 20
                );
                warn(&mut warnings, w);
                None
            }
        };
        model_rows.push(ModelRow { id: mc.id.clone(), name: mc.name.clone(), dtype: te.dtype.into() });

        if let Some(ve) = &val_eval {
            for (mi, m) in cols.iter().enumerate() {
                cells.push(cell(&mc.id, m, "val", ve, mi, cfg, leak(m, "val")));
                let (a, b) = (&ve.drift[mi], &te.drift[mi]);
                let shift = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
                drift_rows.push(DriftRow {
                    model: mc.id.clone(),
                    method: m.id().into(),
                    reference: "val".into(),
                    split: "test".into(),
                    mean_shift: shift(a.mean, b.mean),
                    p95_shift: shift(a.quantile(0.95), b.quantile(0.95)),
                    kl: kl(b, a),
                    mmd2: mmd2(b, a),
                });
                drift_hists.push(serde_json::json!({"model": mc.id, "method": m.id(), "split": "val", "stats": a}));
            }
        }
        for (mi, m) in cols.iter().enumerate() {
            drift_hists.push(serde_json::json!({"model": mc.id, "method": m.id(), "split": "test", "stats": &te.drift[mi]}));
        }
        for (mi, m) in cols.iter().enumerate() {
            let mut c = cell(&mc.id, m, "test", &te, mi, cfg, leak(m, "test"));
            c.bootstrap = boots.as_ref().map(|b| b[mi].clone());
            if let (Some(acc), Some(cc)) = (&te.components[mi], &sopts.components[mi]) {
                let s = acc.summary();
                c.components = Some(Components {
                    threshold: cc.threshold as f64,
                    threshold_split: "val".into(),
                    track: cfg.metrics.component_track.clone(),
                    siou: s.siou_gt,
                    ppv: s.ppv,
                    mean_f1: s.mean_f1,
                    gt_components: s.gt_components,
                    pred_components: s.pred_components,
                });
            }
            cells.push(c);
            for (t, tc) in te.type_counts[mi].iter().enumerate() {
                let s = tc.summary(cfg.metrics.fpr95);
                let vt = chosen[mi].first().and_then(|x| x.2).map(|o| o.threshold as f32);
                failure_rows.push(FailureRow {
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
            let tc = &te.counts[mi];
            let (src, ops): (&str, Vec<(String, Option<f64>, Option<OperatingPoint>)>) = match &val_eval {
                Some(_) => {
                    let mut k = 0;
                    let ops = chosen[mi]
                        .iter()
                        .map(|(rule, target, op)| {
                            let on_test = op.map(|_| {
                                k += 1;
                                te.probes[mi].point(k - 1)
                            });
                            (rule.clone(), *target, on_test)
                        })
                        .collect();
                    ("val", ops)
                }
                // No val split: thresholds come from test itself (leakage);
                // they are test positive scores, so test counts are exact there.
                None => ("test", choose_thresholds(tc, cfg)),
            };
            let pts: Vec<Point> = ops.iter().map(|(r, t, op)| point(r, *t, *op)).collect();
            let mut h = honest(&mc.id, m, src, val_eval.is_none() || leak(m, "test"), pts, tc);
            let hard_op = ops.iter().find(|o| o.0 == "far").and_then(|o| o.2);
            let soft_op = ops.iter().find(|o| o.0 == "frr").and_then(|o| o.2);
            if let Some(hop) = hard_op {
                h.block_fraction = Some(frac_at(&hop));
                h.review_fraction = soft_op.map(|sop| (frac_at(&sop) - frac_at(&hop)).max(0.0));
            }
            let keep = h.points.iter().filter_map(|p| p.threshold).collect();
            honest_cells.push(h);
            curves.push((mc.id.clone(), m.clone(), te.counts[mi].clone(), keep));
        }
        if val_eval.is_none() {
            let w = format!("{}: no `val` split: honest-evaluation thresholds were chosen on `test` (leakage)", mc.id);
            warn(&mut warnings, w);
        }
        timings.insert(mc.id.clone(), serde_json::json!(tm.elapsed().as_secs_f64()));
    }
    bar.finish_and_clear();

    let results = Results {
        format: FORMAT.into(),
        name: cfg.name.clone(),
        dataset: cfg.dataset.display().to_string(),
        device: device_kind.into(),
        conventions: conventions(cfg)?,
        models: model_rows,
        methods: cols
            .iter()
            .map(|m| MethodRow {
                id: m.id().into(),
                name: m.display().into(),
                external: inp.external.iter().find(|e| e.id == m.id() && matches!(m, MethodRef::External { .. })).map(|e| e.layout.as_str().into()),
            })
            .collect(),
        cells,
        honest: honest_cells,
        calibration: cal_rows,
        drift: drift_rows,
        failure_modes: failure_rows,
        warnings: warnings.clone(),
    };
    let manifest = serde_json::json!({
        "tool": "bench",
        "version": env!("CARGO_PKG_VERSION"),
        "git_revision": option_env!("BENCH_GIT_REVISION"),
        "config_sha256": sha256_hex(cfg_bytes),
        "dataset": cfg.dataset.display().to_string(),
        "device": scorer.device(),
        "threads": rayon::current_num_threads(),
        "timings_s": { "total": t0.elapsed().as_secs_f64(), "per_model": timings },
        "warnings": warnings,
        "inputs_sha256": inp.sums.to_json(),
    });
    let drift = serde_json::json!({ "format": "bench-drift/1", "cells": drift_hists });
    Ok(RunOutput { results, manifest, curves, drift })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
