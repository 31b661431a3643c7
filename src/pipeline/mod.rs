//! `bench run`: wires the rooms together for one sweep.
//!
//! Why it is separate from the rooms: the order of work (calibration, then
//! val, then test with the val thresholds) is policy, not mechanism. Each
//! split is visited in two streaming passes (positives, then ranks of the
//! negatives; see `metrics::engine` and `metrics::split`); small splits keep
//! their score maps between the passes, large ones are re-scored, so memory
//! never grows with the pixel count. `data::input` reads the images, a
//! reader thread decoding the next one while the current one is scored.
//!
//! Files: `mod.rs` the sweep (`run_exec`: resolve, check, every model, the
//! results) and `rounds()`; `check.rs` the pre-flight check; `model.rs` one
//! model's stages; `calibrate.rs` the SML/HEAT fit passes; `passes.rs` one
//! split's two metric passes as collectives (local, shard or merge: see
//! `shard`); `rows.rs` the result rows built from the accumulated statistics.

mod calibrate;
mod check;
mod conventions;
mod failures;
mod drifted;
mod model;
pub mod eval;
pub mod output;
mod passes;
mod rows;

use crate::config::{Config, Device};
use crate::data::checksum::{Checksums, sha256_hex};
use crate::data::input::{Reader, classes_of, features_dir, find_image, for_each_image, load_features};
use crate::data::resize::Resize;
use crate::data::{Dataset, LabelMap, Logits, Split};
use crate::external::{External, MethodRef};
use crate::metrics::drift::{DriftStats, kl, mmd2};
use crate::metrics::region::{ComponentConfig, ComponentStats, aupro};
use crate::metrics::split::{Pass1, Pass2, SplitOpts};
use crate::metrics::{Counts, OperatingPoint, PointRule, ThresholdCounter, counts_of};
use crate::progress::{Mode, Progress};
use crate::report::drift::{DashCell, DriftCell, DriftFile};
use crate::report::manifest::{Manifest, Phases, Timings};
use crate::report::results::*;
use crate::scores::calib::{CalibrationFile, ModelCalibration};
use crate::scores::{Calibration, Method, ScoreMaps, ScorePlan, Scorer};
use crate::shard::{Exec, is_pending};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::ops::Range;
use std::time::Instant;
#[allow(unused_imports)]
use {calibrate::*, check::*, conventions::*, drifted::*, failures::*, model::*, passes::*, rows::*};

/// What every pass reads: the image reader, plus the outside methods'
/// precomputed maps.
pub struct Inputs {
    pub reader: Reader,
    /// Outside methods' precomputed maps, appended after the computed ones.
    pub external: Vec<External>,
    /// Array of each external score-map `.npz` to read.
    pub npz_score_key: Option<String>,
    /// Rounding of every score map before the metrics (`metrics.score_precision`).
    pub precision: crate::metrics::conventions::ScorePrecision,
}

impl std::ops::Deref for Inputs {
    type Target = Reader;
    fn deref(&self) -> &Reader {
        &self.reader
    }
}

pub struct RunOptions {
    /// Overrides the config's `device`.
    pub device: Option<Device>,
    pub progress: bool,
    /// Print each model's phase timings (`bench run -v`).
    pub verbose: bool,
}

/// Test-split statistic of one (model, method) with the thresholds of the
/// honest evaluation: what the curves and plots are drawn from.
pub type Curve = (String, MethodRef, crate::metrics::PackedCounts, Vec<f64>);

pub struct RunOutput {
    pub results: Results,
    pub manifest: Manifest,
    /// Test-split statistic per (model, method), with the thresholds of the
    /// honest evaluation, for curves and plots.
    pub curves: Vec<Curve>,
    /// `drift.json`: per (model, method, split) normal-score histograms, the
    /// input of `bench drift a b`.
    pub drift: DriftFile,
    /// `calibration.json` (when SML or HEAT ran): the full fitted statistics
    /// per model, reusable with the `calibration` config key.
    pub calibration: Option<String>,
    /// `conventions.md` (`metrics.all_conventions`).
    pub conventions_md: Option<String>,
    /// `failures/<model>/<method>/*.png`: the failure-mode example panels.
    pub failure_pngs: Vec<(String, Vec<u8>)>,
}

/// The scorer for a device choice, and `cpu` / `gpu`.
pub fn make_scorer(device: Device) -> Result<(Box<dyn Scorer>, DeviceKind)> {
    use crate::scores::cpu::CpuScorer;
    use crate::scores::gpu::GpuScorer;
    match device {
        Device::Cpu => Ok((Box::new(CpuScorer), DeviceKind::Cpu)),
        Device::Gpu => {
            let g = GpuScorer::new(true).context("--device gpu")?;
            eprintln!("device: {}", g.device());
            Ok((Box::new(g), DeviceKind::Gpu))
        }
        Device::Auto => match GpuScorer::new(false) {
            Ok(g) => {
                eprintln!("device: {}", g.device());
                Ok((Box::new(g), DeviceKind::Gpu))
            }
            Err(e) => {
                eprintln!("notice: no hardware GPU adapter ({e:#}); scoring on the CPU (use --device gpu to accept a software adapter)");
                Ok((Box::new(CpuScorer), DeviceKind::Cpu))
            }
        },
    }
}

/// What `run_exec` produced: the results, or (shards, merges before the
/// last round) the models still waiting for another round.
pub enum RunStatus {
    Done(Box<RunOutput>),
    Waiting { models: Vec<String> },
}

/// The splits and methods of a sweep, resolved once.
pub(crate) struct Sweep<'a> {
    pub(crate) test: &'a Split,
    pub(crate) val: Option<&'a Split>,
    pub(crate) calib: Option<&'a Split>,
    pub(crate) methods: Vec<Method>,
    /// Table columns: the built-in methods, then the outside ones.
    pub(crate) cols: Vec<MethodRef>,
    pub(crate) need_cal: bool,
    pub(crate) need_heat: bool,
    /// `calibration = "..."`: saved statistics reused instead of fitting.
    pub(crate) reuse: Option<(std::path::PathBuf, CalibrationFile)>,
    /// `metrics.all_conventions`: two more passes over test.
    pub(crate) all_conventions: bool,
    /// Drifted copies of test (`test@<name>`), each evaluated like test
    /// with val's thresholds, in name order.
    pub(crate) drifted: Vec<&'a Split>,
}

/// One streaming pass over a split, as a sharded run schedules it: each
/// is one round (shards visit their images, then a merge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    /// Calibration fit: per-image sums, then (HEAT) the energy moments.
    Calibrate(u8),
    /// A metric pass (1: positives, 2: ranks of the negatives) over val.
    Val(u8),
    /// The same over test.
    Test(u8),
    /// `metrics.all_conventions`: test's metrics under every preset (1:
    /// positives and per-image means, 2: ranks).
    Conventions(u8),
    /// The metric passes over drifted copy `i` of test (`test@<name>`).
    Drifted(u16, u8),
}

impl Sweep<'_> {
    /// Every model's passes, in the order `run_model` runs them: the plan
    /// that `--rounds`, the local run and the sharded run all follow.
    pub(crate) fn passes(&self) -> Vec<PassKind> {
        let fit = self.need_cal && self.reuse.is_none();
        let mut p = vec![];
        if fit {
            p.push(PassKind::Calibrate(1));
            if self.need_heat {
                p.push(PassKind::Calibrate(2));
            }
        }
        if self.val.is_some() {
            p.extend([PassKind::Val(1), PassKind::Val(2)]);
        }
        p.extend([PassKind::Test(1), PassKind::Test(2)]);
        if self.all_conventions {
            p.extend([PassKind::Conventions(1), PassKind::Conventions(2)]);
        }
        for i in 0..self.drifted.len() as u16 {
            p.extend([PassKind::Drifted(i, 1), PassKind::Drifted(i, 2)]);
        }
        p
    }
}

/// Number of rounds a sharded run of `cfg` takes: the longest pass plan of
/// its datasets (see [`Sweep::passes`]).
pub fn rounds(cfg: &Config) -> Result<usize> {
    let mut r = 0;
    for c in cfg.expand()? {
        ensure_synthetic(&c)?;
        let ds = Dataset::open(&c.dataset)?;
        let (_, sw) = resolve(&c, &ds)?;
        r = r.max(sw.passes().len());
    }
    Ok(r)
}

/// Generate the synthetic dataset of a `synthetic = "demo"` config when its
/// folder is missing.
pub(crate) fn ensure_synthetic(cfg: &Config) -> Result<()> {
    if let Some(kind) = &cfg.synthetic
        && !cfg.dataset.exists()
    {
        eprintln!(
            "notice: {} does not exist; generating the deterministic synthetic '{}' dataset there",
            cfg.dataset.display(),
            kind.name()
        );
        crate::synth::generate(&cfg.dataset, &crate::synth::SynthSpec::demo())?;
    }
    Ok(())
}

pub fn run(cfg: &Config, cfg_bytes: &[u8], opts: &RunOptions) -> Result<RunOutput> {
    match run_exec(cfg, cfg_bytes, opts, &Exec::Local)? {
        RunStatus::Done(out) => Ok(*out),
        RunStatus::Waiting { .. } => bail!("internal error: a local run waited for shards"),
    }
}

/// [`run`] as a normal run, one shard's round, or a merge (see `shard`).
pub fn run_exec(cfg: &Config, cfg_bytes: &[u8], opts: &RunOptions, exec: &Exec) -> Result<RunStatus> {
    let t0 = Instant::now();
    ensure_synthetic(cfg)?;
    let ds = Dataset::open(&cfg.dataset)?;
    let (inp, sw) = resolve(cfg, &ds)?;
    let fit_cal = sw.need_cal && sw.reuse.is_none();

    // Fail fast: every input's header, before any long work.
    let mut read: Vec<&Split> = [Some(sw.test), sw.val, if fit_cal { sw.calib } else { None }].into_iter().flatten().collect();
    read.extend(&sw.drifted);
    let run_warnings = preflight(cfg, &inp, &sw, &read)?;

    let (mut scorer, device_kind): (Box<dyn Scorer>, DeviceKind) = match exec {
        // a merge scores nothing
        Exec::Merge(_) => (Box::new(crate::scores::cpu::CpuScorer), DeviceKind::Cpu),
        _ => make_scorer(opts.device.or(cfg.device).unwrap_or_default())?,
    };
    // merges score nothing; shards show progress like a local run
    let progress = Progress::new(if matches!(exec, Exec::Merge(_)) { Mode::Off } else { Mode::detect(opts.progress) });
    let tag = cfg.tag.as_ref().map(|t| format!("{t}.")).unwrap_or_default();
    let cx = Ctx { inp: &inp, exec, progress: &progress, device: device_kind, tag, plan: sw.passes(), next: Default::default(), phases: Default::default(), drifted: sw.drifted.iter().map(|s| s.name.clone()).collect() };

    let mut outs: Vec<ModelOut> = Vec::new();
    let mut waiting = Vec::new();
    let mut per_model = std::collections::BTreeMap::new();
    let mut phases = std::collections::BTreeMap::new();
    for mc in &cfg.models {
        let tm = Instant::now();
        match run_model(&cx, cfg, &sw, scorer.as_mut(), mc) {
            Ok(o) => outs.push(o),
            Err(e) if is_pending(&e) => waiting.push(mc.id.clone()),
            Err(e) => return Err(e),
        }
        per_model.insert(mc.id.clone(), tm.elapsed().as_secs_f64());
        phases.insert(mc.id.clone(), cx.phases());
        if opts.verbose {
            progress.println(&format!("[{}] {}", cx.who(&mc.id), cx.phases().describe()));
        }
    }
    progress.clear();
    if !waiting.is_empty() {
        return Ok(RunStatus::Waiting { models: waiting });
    }
    let t_report = Instant::now();
    let device = exec.device_kind(device_kind);
    let conv_rows: Vec<(String, String, Vec<ConvRow>)> = outs.iter_mut().flat_map(|m| std::mem::take(&mut m.conv_rows)).collect();
    let failure_pngs: Vec<(String, Vec<u8>)> = outs.iter_mut().flat_map(|m| std::mem::take(&mut m.failure_pngs)).collect();
    let (results, curves, drift, cal_file) = assemble(cfg, &inp, &sw, device, run_warnings, outs)?;
    let (adapter, inputs, shards) = match exec {
        Exec::Merge(sh) => (format!("merged from {} shards ({device})", sh.count), sh.inputs.lock().unwrap().clone(), Some(sh.count)),
        _ => (scorer.device(), inp.sums.snapshot(), None),
    };
    let manifest = Manifest {
        calibration: match &sw.reuse {
            Some((p, _)) => Some(p.display().to_string()),
            None if sw.need_cal => Some("fitted".into()),
            None => None,
        },
        config_sha256: sha256_hex(cfg_bytes),
        dataset: cfg.dataset.display().to_string(),
        device: adapter,
        git_revision: option_env!("BENCH_GIT_REVISION").map(String::from),
        inputs_sha256: inputs,
        shards,
        threads: rayon::current_num_threads(),
        timings_s: Timings { per_model, phases, report: t_report.elapsed().as_secs_f64(), total: t0.elapsed().as_secs_f64() },
        tool: "bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        warnings: results.warnings.clone(),
    };
    let calibration = if sw.need_cal { Some(CalibrationFile::new(cal_file).to_json()?) } else { None };
    let conventions_md = cfg.metrics.all_conventions.then(|| conventions_markdown(cfg, &conv_rows));
    Ok(RunStatus::Done(Box::new(RunOutput { results, manifest, curves, drift, calibration, conventions_md, failure_pngs })))
}

/// The input reader and the sweep's splits and columns, resolved once.
fn resolve<'a>(cfg: &Config, ds: &'a Dataset) -> Result<(Inputs, Sweep<'a>)> {
    let test = ds.split("test").with_context(|| format!("{}: no `test` split", cfg.dataset.display()))?;
    let methods = cfg.parsed_methods()?;
    let model_ids: Vec<String> = cfg.models.iter().map(|m| m.id.clone()).collect();
    let mut read_splits: Vec<&Split> = [Some(test), ds.split("val")].into_iter().flatten().collect();
    read_splits.extend(ds.drifted());
    let inp = Inputs {
        reader: Reader {
            labels: LabelMap::new(cfg.anomaly.clone(), cfg.ignore.clone())?,
            resize: cfg.resize.unwrap_or_default(),
            hwc: cfg.layout == Some(crate::config::Layout::Hwc),
            npz_key: cfg.npz_key.clone(),
            sums: Checksums::default(),
            spare: Default::default(),
            logits: !cfg.methods.is_empty(),
        },
        external: crate::external::resolve(&cfg.external, &read_splits, &model_ids)?,
        npz_score_key: cfg.npz_score_key.clone(),
        precision: cfg.metrics.conv.score_precision,
    };
    let need_cal = methods.iter().any(|m| m.needs_calibration());
    let sw = Sweep {
        test,
        val: ds.split("val"),
        calib: ds.split("calibration"),
        need_cal,
        need_heat: methods.contains(&Method::Heat),
        cols: methods.iter().map(|&m| MethodRef::Builtin(m)).chain(inp.external.iter().map(|e| e.column())).collect(),
        reuse: match (&cfg.calibration, need_cal) {
            (Some(p), true) => Some((p.clone(), CalibrationFile::load(p).context("`calibration`")?)),
            _ => None,
        },
        methods,
        all_conventions: cfg.metrics.all_conventions,
        drifted: ds.drifted(),
    };
    Ok((inp, sw))
}

/// Every model's rows into one results.json, the curves, drift.json's
/// cells and calibration.json's entries (models in config order).
#[allow(clippy::type_complexity)]
fn assemble(cfg: &Config, inp: &Inputs, sw: &Sweep, device: DeviceKind, run_warnings: Vec<String>, outs: Vec<ModelOut>) -> Result<(Results, Vec<Curve>, DriftFile, Vec<ModelCalibration>)> {
    let mut warnings = run_warnings;
    let (mut cells, mut honest_cells, mut cal_rows, mut model_rows) = (vec![], vec![], vec![], vec![]);
    let (mut drift_rows, mut drift_hists, mut failure_rows, mut curves) = (vec![], vec![], vec![], vec![]);
    let (mut cal_file, mut feat_models, mut boot_diffs, mut drift_splits, mut dash_base) = (vec![], vec![], vec![], vec![], vec![]);
    for m in outs {
        boot_diffs.extend(m.boot_diffs);
        cal_file.extend(m.cal_file);
        if m.features {
            feat_models.extend(m.model.as_ref().map(|r| r.id.clone()));
        }
        warnings.extend(m.warnings);
        cells.extend(m.cells);
        honest_cells.extend(m.honest);
        cal_rows.extend(m.calibration);
        model_rows.extend(m.model);
        drift_rows.extend(m.drift_rows);
        drift_hists.extend(m.drift_hists);
        failure_rows.extend(m.failure_rows);
        curves.extend(m.curves);
        drift_splits.extend(m.drift_splits);
        dash_base.extend(m.dash_base);
    }
    let results = Results {
        format: FORMAT.into(),
        name: cfg.name.clone(),
        dataset: cfg.dataset.display().to_string(),
        device,
        conventions: conventions(cfg, &feat_models)?,
        models: model_rows,
        methods: sw
            .cols
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
        drift_splits,
        failure_modes: failure_rows,
        bootstrap_diff: boot_diffs,
        warnings,
    };
    Ok((results, curves, DriftFile::new(drift_hists, dash_base), cal_file))
}
