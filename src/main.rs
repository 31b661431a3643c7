//! The `bench` command line. Only wiring: every decision lives in a room.

use anyhow::{Context, Result, bail, ensure};
use bench::config::{Config, Device};
use bench::data::{LabelMap, read_mask, read_score_map_key};
use bench::data::checksum::sha256_hex;
use bench::metrics::conventions::{Average, ConvOverrides, EvalOut, MetricConv, Positive, ScorePrecision};
use bench::metrics::{AuprRule, Fpr95Rule, PositiveCollector};
use bench::pipeline::{RunOptions, RunOutput, RunStatus, run, run_exec};
use bench::shard;
use bench::report::{self, Results, diff, markup, tables};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "bench", version, about = "Exact, reproducible pixel-level anomaly segmentation benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a sweep: every model × method, written to results/<name>/.
    Run {
        config: PathBuf,
        /// auto (a hardware GPU if any, else CPU), gpu (any adapter, incl. software), cpu.
        #[arg(long, value_enum)]
        device: Option<Device>,
        /// Recompute and compare with the committed results; write nothing.
        #[arg(long)]
        check: bool,
        /// Tolerance of --check.
        #[arg(long, default_value_t = 1e-6)]
        tol: f64,
        /// Run shard I of N (0-based) of the next pending pass; its state goes
        /// to results/<name>/shards/. Default in a Slurm array job:
        /// SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Ignore SLURM_ARRAY_* variables: run the whole sweep here.
        #[arg(long, conflicts_with = "shard")]
        no_shard: bool,
        /// Print how many shard rounds (shards, then a merge) the config needs.
        #[arg(long)]
        rounds: bool,
    },
    /// Merge the shards' states of a sharded run; writes the results after the last round.
    Merge {
        /// The results folder (results/<name>) holding shards/.
        results: PathBuf,
    },
    /// Metrics of precomputed score maps ([H,W] .npy, .npz, or HDF5 with the `hdf5` feature) against masks, matched by file stem.
    Eval {
        #[arg(long)]
        scores: PathBuf,
        /// Array to read from each score-map .npz (default: its only array).
        #[arg(long)]
        npz_key: Option<String>,
        #[arg(long)]
        labels: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "1")]
        anomaly: Vec<u16>,
        /// Void mask values, comma-separated; `none` = no void value.
        #[arg(long, value_delimiter = ',', default_value = "255")]
        ignore: Vec<String>,
        /// A named metric convention (sklearn, smiyc, fishyscapes, streethazards, openood, pytorch-ood, pytorch-ood-seg, ood-metrics, anomalib, bravo); the flags below override it.
        #[arg(long)]
        convention: Option<String>,
        /// How FPR at 95 % TPR is read off the ROC (default: first).
        #[arg(long, value_enum)]
        fpr95: Option<Fpr95Rule>,
        /// AUPR as the step sum (ap, default) or trapezoids.
        #[arg(long, value_enum)]
        aupr: Option<AuprRule>,
        /// Pool pixels (default) or average per-image metrics over images with both classes.
        #[arg(long, value_enum)]
        average: Option<Average>,
        /// `normal` adds AUPR-In and FPR95-In (in-distribution positive) as extra keys.
        #[arg(long, value_enum)]
        positive: Option<Positive>,
        /// Round scores before the metrics: f32 (none), f16, u16 (scores in [0, 1]).
        #[arg(long, value_enum)]
        score_precision: Option<ScorePrecision>,
        /// The same scores under every convention preset, one row each.
        #[arg(long, conflicts_with_all = ["convention", "fpr95", "aupr", "average", "positive", "score_precision"])]
        all_conventions: bool,
        /// Evaluate without masks that have no score map (a warning counts them) instead of failing.
        #[arg(long)]
        allow_missing: bool,
        /// SMIYC's binned pixel metric (`smiyc`): not implemented yet.
        #[arg(long)]
        binning: Option<String>,
        /// Also AUPRO and SegmentMeIfYouCan component metrics (sIoU, PPV, mean F1).
        #[arg(long)]
        regions: bool,
        /// AUPRO's FPR limit (with --regions).
        #[arg(long, default_value_t = 0.3)]
        aupro_fpr: f64,
        /// Component binarisation threshold `score ≥ t` (e.g. chosen on val). Default: the evaluated split's own best-F1 threshold, flagged as leakage. `smiyc` (its binned best-F1, `>`) is not implemented.
        #[arg(long, allow_hyphen_values = true)]
        component_threshold: Option<String>,
        /// SMIYC size filters: anomaly (500 / 100 px) or obstacle (50 / 10 px).
        #[arg(long, value_enum, default_value = "anomaly")]
        component_track: bench::metrics::region::Track,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Re-render the tables of a results folder from results.json alone.
    Table {
        results: PathBuf,
        /// md (exactly the folder's tables.md), csv, latex (booktabs), html.
        #[arg(long, default_value = "md")]
        format: String,
        /// Do not mark the best value of each row in bold.
        #[arg(long)]
        no_bold: bool,
    },
    /// Per-cell deltas between two results folders; exit 1 beyond tolerance.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long, default_value_t = 1e-6)]
        tol: f64,
        /// Restrict to these metrics (auroc, aupr, fpr95, f1, threshold, image_auroc, image_aupr).
        #[arg(long, value_delimiter = ',')]
        metric: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Normal-pixel score drift between two results folders (mean, p95, KL, MMD²).
    Drift { a: PathBuf, b: PathBuf },
    /// Generate the deterministic synthetic demo dataset.
    Synth {
        #[arg(long, default_value = "datasets/demo")]
        out: PathBuf,
        /// Images per split for val/test (calibration gets a third); default = demo sizes.
        #[arg(long)]
        images: Option<usize>,
        /// Explicit split sizes, e.g. `calibration=50,val=100,test=1500` (overrides --images).
        #[arg(long, value_delimiter = ',')]
        splits: Vec<String>,
        /// Models as `id:f16|f32:quality`, e.g. `segformer_b5:f16:0.6` (default: the demo's two).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        #[arg(long)]
        height: Option<usize>,
        #[arg(long)]
        width: Option<usize>,
        #[arg(long)]
        classes: Option<usize>,
        /// Number of anomaly types (mask values 1..=N), for failure-mode breakdowns.
        #[arg(long)]
        anomaly_types: Option<u8>,
    },
    /// List the adapters wgpu sees.
    Devices,
}

fn main() {
    // Mesa's implicit Vulkan "device select" layer probes Wayland/X11 to pick
    // a default GPU and prints "error: XDG_RUNTIME_DIR is invalid" on
    // headless machines. bench ranks adapters itself, so turn the layer off
    // unless the user configured it.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: first statement of main, before any thread exists.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    let cli = Cli::parse();
    // Ctrl-C, Slurm's SIGTERM and a lost terminal's SIGHUP must never leave
    // a half-written results folder or a hidden temp folder: the handler
    // waits for an in-progress write to finish or roll back.
    if let Err(e) = report::install_signal_handler() {
        eprintln!("warning: {e:#}");
    }
    match real_main(cli) {
        Ok(code) => std::process::exit(code),
        Err(_) if report::interrupted() => report::exit_interrupted(),
        Err(e) => {
            // one line: the context chain joined
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Run { config, device, check, tol, shard, no_shard, rounds } => {
            if rounds {
                println!("{}", bench::pipeline::rounds(&Config::load(&config)?)?);
                return Ok(0);
            }
            let shard = match (shard, no_shard || check) {
                (Some(s), _) => Some(shard::parse_shard(&s)?),
                (None, false) => shard::from_slurm()?.inspect(|(i, n)| {
                    eprintln!("notice: Slurm array task: running shard {i}/{n} (--no-shard to run everything here)")
                }),
                (None, true) => None,
            };
            if check && shard.is_some() {
                bail!("--check cannot be combined with --shard");
            }
            cmd_run(&config, device, check, tol, shard)
        }
        Cmd::Merge { results } => cmd_merge(&results),
        Cmd::Eval {
            scores,
            npz_key,
            labels,
            anomaly,
            ignore,
            convention,
            fpr95,
            aupr,
            average,
            positive,
            score_precision,
            all_conventions,
            allow_missing,
            binning,
            regions,
            aupro_fpr,
            component_threshold,
            component_track,
            json,
        } => {
            if let Some(b) = binning {
                bail!("--binning {b:?}: SMIYC's binned pixel metric is not implemented yet (bench computes the exact curve only)");
            }
            let regions = if regions {
                ensure!(aupro_fpr > 0.0 && aupro_fpr <= 1.0, "--aupro-fpr must be in (0, 1], got {aupro_fpr}");
                let t = match component_threshold.as_deref() {
                    None => None,
                    Some("smiyc") => bail!("--component-threshold smiyc: SMIYC's binned best-F1 threshold is not implemented (SMIYC binning is not); pass a number"),
                    Some(x) => Some(x.parse::<f32>().ok().filter(|t| t.is_finite()).with_context(|| format!("--component-threshold: {x:?} is not a finite number"))?),
                };
                Some(RegionArgs { fpr: aupro_fpr, threshold: t, track: component_track })
            } else {
                ensure!(component_threshold.is_none(), "--component-threshold needs --regions");
                None
            };
            let ignore = parse_ignore(&ignore)?;
            let ov = ConvOverrides { convention, fpr95, aupr, average, positive, score_precision };
            let conv = ov.resolve().context("--convention")?;
            let lm = LabelMap::new(anomaly, ignore)?;
            let ev = EvalInputs::new(&scores, npz_key.as_deref(), &labels, lm, allow_missing)?;
            if all_conventions {
                ensure!(regions.is_none(), "--regions cannot be combined with --all-conventions");
                cmd_eval_all(&ev, json)
            } else {
                ensure!(regions.is_none() || conv.average == Average::Pixels, "--regions with average = images is not implemented");
                cmd_eval(&ev, &conv, ov.convention.as_deref(), regions.as_ref(), json)
            }
        }
        Cmd::Table { results, format, no_bold } => {
            print!("{}", tables::render_sets(&Results::load_sets(&results)?, &format, !no_bold)?);
            Ok(0)
        }
        Cmd::Diff { a, b, tol, metric, json } => {
            let (sa, sb) = (Results::load_sets(&a)?, Results::load_sets(&b)?);
            let names = |s: &[(Option<String>, Results)]| s.iter().map(|x| x.0.clone().unwrap_or_default()).collect::<Vec<_>>();
            ensure!(
                names(&sa) == names(&sb),
                "{} and {} hold different datasets ({:?} vs {:?})",
                a.display(),
                b.display(),
                names(&sa),
                names(&sb)
            );
            let mut ok = true;
            let mut all = vec![];
            for ((name, ra), (_, rb)) in sa.iter().zip(&sb) {
                let d = diff::diff(ra, rb, tol, &metric)?;
                ok &= d.within_tolerance();
                if json {
                    all.push(serde_json::json!({ "dataset": name, "diff": d }));
                } else {
                    if let Some(n) = name {
                        println!("## Dataset `{n}`");
                    }
                    print!("{}", diff::render(&d));
                }
            }
            if json {
                // one dataset: the diff object itself (unchanged format)
                let v = if all.len() == 1 && sa[0].0.is_none() { all.remove(0)["diff"].take() } else { serde_json::Value::Array(all) };
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(if ok { 0 } else { 1 })
        }
        Cmd::Drift { a, b } => {
            // a `[[datasets]]` folder: one comparison per dataset present in both
            let names: Vec<Option<String>> = Results::load_sets(&a)?.into_iter().map(|x| x.0).collect();
            for n in names {
                let (da, db) = match &n {
                    Some(n) => {
                        println!("## Dataset `{n}`\n");
                        (a.join(n), b.join(n))
                    }
                    None => (a.clone(), b.clone()),
                };
                let t = report::drift::compare(&da, &db)?;
                print!("{}", <markup::Markdown as markup::Dialect>::table(&markup::Markdown, &t));
            }
            Ok(0)
        }
        Cmd::Synth { out, images, splits, models, height, width, classes, anomaly_types } => {
            let mut spec = bench::synth::SynthSpec::demo();
            if let Some(n) = images {
                spec.splits = vec![("calibration".into(), n.div_ceil(3).max(1)), ("val".into(), n), ("test".into(), n)];
            }
            if !splits.is_empty() {
                spec.splits = splits
                    .iter()
                    .map(|s| {
                        let (name, n) = s.split_once('=').with_context(|| format!("--splits: expected name=count, got {s:?}"))?;
                        Ok((name.to_string(), n.parse().with_context(|| format!("--splits: bad count in {s:?}"))?))
                    })
                    .collect::<Result<Vec<(String, usize)>>>()?
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .collect();
            }
            if !models.is_empty() {
                spec.models = models
                    .iter()
                    .map(|m| {
                        let parts: Vec<&str> = m.split(':').collect();
                        let [id, dt, q] = parts[..] else { bail!("--models: expected id:f16|f32:quality, got {m:?}") };
                        let f16 = match dt {
                            "f16" => true,
                            "f32" => false,
                            _ => bail!("--models: dtype must be f16 or f32 in {m:?}"),
                        };
                        Ok(bench::synth::SynthModel { id: id.into(), f16, quality: q.parse().with_context(|| format!("--models: bad quality in {m:?}"))? })
                    })
                    .collect::<Result<_>>()?;
            }
            spec.height = height.unwrap_or(spec.height);
            spec.width = width.unwrap_or(spec.width);
            spec.classes = classes.unwrap_or(spec.classes);
            spec.anomaly_types = anomaly_types.unwrap_or(spec.anomaly_types);
            bench::synth::generate(&out, &spec)?;
            eprintln!("wrote {}", out.display());
            Ok(0)
        }
        Cmd::Devices => {
            let a = bench::scores::gpu::list_adapters();
            if a.is_empty() {
                println!("no wgpu adapter found (bench will score on the CPU)");
            }
            for x in a {
                println!("{x}");
            }
            Ok(0)
        }
    }
}

fn cmd_run(config: &Path, device: Option<Device>, check: bool, tol: f64, shard: Option<(usize, usize)>) -> Result<i32> {
    let bytes = std::fs::read(config).with_context(|| format!("{}: cannot read config", config.display()))?;
    let cfg = Config::load(config)?;
    guard_output(&cfg, check)?;
    let opts = RunOptions { device, progress: !check };
    let Some((i, n)) = shard else {
        let outs = cfg.expand()?.into_iter().map(|c| Ok((run(&c, &bytes, &opts)?, c))).collect::<Result<Vec<_>>>()?;
        return write_results(&cfg, outs, check, tol);
    };
    let dir = cfg.output_dir().join("shards");
    let shards = shard::Shards::create(dir.clone(), n, &bytes, &sha256_hex(&bytes))?;
    let exec = shard::Exec::Shard(shards, i);
    let mut waiting = vec![];
    for c in cfg.expand()? {
        if let RunStatus::Waiting { models } = run_exec(&c, &bytes, &opts, &exec)? {
            waiting.extend(labelled(&c, models));
        }
    }
    let res = cfg.output_dir();
    if waiting.is_empty() {
        eprintln!("shard {i}/{n}: every pass is merged already; run `bench merge {}`", res.display());
    } else {
        eprintln!(
            "shard {i}/{n}: wrote its part of the next pass of {} into {}; when all {n} shards are done, run `bench merge {}`",
            waiting.join(", "),
            dir.display(),
            res.display()
        );
    }
    Ok(0)
}

/// Before any work: repair what a killed run left beside the results
/// folder, and (unless only checking) refuse an output path that would
/// replace a folder bench did not write or that holds or lies in the inputs.
fn guard_output(cfg: &Config, check: bool) -> Result<()> {
    let dir = cfg.output_dir();
    for n in report::recover(&dir)? {
        eprintln!("{n}");
    }
    if !check {
        cfg.check_output_location()?;
        report::check_replaceable(&dir, &cfg.dataset_names(), "`output`/`name`")?;
    }
    Ok(())
}

/// Model ids as messages name them: `<dataset>/<model>` in a `[[datasets]]` sweep.
fn labelled(c: &Config, models: Vec<String>) -> impl Iterator<Item = String> + '_ {
    models.into_iter().map(|m| c.tag.as_ref().map_or(m.clone(), |t| format!("{t}/{m}")))
}

/// `bench merge results/<name>`: fold the shards' states of the current
/// round; after the last round, write the results exactly as `bench run`.
fn cmd_merge(results: &Path) -> Result<i32> {
    let (shards, bytes) = shard::Shards::open(results.join("shards"))?;
    let cfg = Config::load(&results.join("shards").join("config.toml"))?;
    ensure!(
        cfg.output_dir() == results || cfg.output_dir().canonicalize().ok() == results.canonicalize().ok(),
        "{}: the sharded config writes to {}, not here",
        results.display(),
        cfg.output_dir().display()
    );
    guard_output(&cfg, false)?;
    let n = shards.count;
    let exec = shard::Exec::Merge(shards);
    let (mut outs, mut waiting) = (vec![], vec![]);
    for c in cfg.expand()? {
        match run_exec(&c, &bytes, &RunOptions { device: None, progress: false }, &exec)? {
            RunStatus::Waiting { models } => waiting.extend(labelled(&c, models)),
            RunStatus::Done(out) => outs.push((*out, c)),
        }
    }
    if !waiting.is_empty() {
        eprintln!("merged this round; {} need(s) another round: run the {n} shards again, then `bench merge` again", waiting.join(", "));
        return Ok(0);
    }
    write_results(&cfg, outs, false, 0.0)
}

fn markdown(r: &Results) -> String {
    tables::markdown(r, true)
}

/// Write (or `--check`) the outputs of a finished run: one results folder,
/// or with `[[datasets]]` one subfolder per dataset plus a `tables.md` that
/// holds every dataset's tables under its name.
fn write_results(cfg: &Config, outs: Vec<(RunOutput, Config)>, check: bool, tol: f64) -> Result<i32> {
    let dir = cfg.output_dir();
    if check {
        let mut code = 0;
        for (out, c) in &outs {
            let d = c.dataset_dir();
            let committed = Results::load(&d).context("--check needs committed results")?;
            let dd = diff::diff(&committed, &out.results, tol, &[])?;
            if let Some(t) = &c.tag {
                println!("## {t}");
            }
            print!("{}", diff::render(&dd));
            // Numbers are judged with the tolerance above; the rendered tables
            // must match byte for byte when the device kind is the same (across
            // devices a last printed digit may legitimately round differently).
            let tables_same = committed.device != out.results.device
                || std::fs::read_to_string(d.join("tables.md")).ok().as_deref() == Some(markdown(&out.results).as_str());
            if !tables_same {
                println!("tables.md differs from the re-rendered tables");
            }
            if !(dd.within_tolerance() && tables_same) {
                code = 1;
            }
        }
        return Ok(code);
    }
    bench::pipeline::output::write(cfg, &outs)?;
    for (out, c) in &outs {
        // print the main table
        if let Some(t) = &c.tag {
            println!("# {t}");
        }
        let main = tables::tables(&out.results).into_iter().next().expect("main table");
        print!("{}", <markup::Markdown as markup::Dialect>::table(&markup::Markdown, &main));
    }
    eprintln!("wrote {}", dir.display());
    Ok(0)
}


/// `--ignore`: mask values, or `none` (also an empty string) for no void value.
fn parse_ignore(v: &[String]) -> Result<Vec<u16>> {
    if v.iter().all(|x| x.trim().is_empty() || x.trim().eq_ignore_ascii_case("none")) {
        return Ok(vec![]);
    }
    v.iter()
        .map(|x| x.trim().parse::<u16>().map_err(|_| anyhow::anyhow!("--ignore: {x:?} is not a mask value (0..=65535) or `none`")))
        .collect()
}

/// The (score map, mask) pairs of `bench eval` and how to read them.
struct EvalInputs<'a> {
    pairs: Vec<(PathBuf, PathBuf)>,
    npz_key: Option<&'a str>,
    lm: LabelMap,
    /// Masks without a score map, skipped under `--allow-missing`.
    missing: usize,
}

impl<'a> EvalInputs<'a> {
    fn new(scores: &Path, npz_key: Option<&'a str>, labels: &Path, lm: LabelMap, allow_missing: bool) -> Result<Self> {
        let s = bench::data::dataset::files_by_stem(scores, bench::data::dataset::SCORE_EXTS)?;
        let (pairs, missing) = if scores.is_file() && labels.is_file() {
            (vec![(s[0].1.clone(), labels.to_path_buf())], 0)
        } else {
            let l = bench::data::dataset::files_by_stem(labels, &["png", "npy"])?;
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
struct RegionArgs {
    fpr: f64,
    threshold: Option<f32>,
    track: bench::metrics::region::Track,
}

/// AUPRO (exact, the weighted two-pass engine) and SMIYC component metrics
/// at a given threshold or at the split's own best-F1 threshold (leakage).
fn eval_regions(ev: &EvalInputs, conv: &MetricConv, ra: &RegionArgs, best_f1_threshold: Option<f64>) -> Result<serde_json::Value> {
    use bench::metrics::region::{ComponentConfig, ComponentStats, aupro, component_metrics, region_weights};
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
    bench::metrics::conventions::evaluate(&mut each, conv)
}

fn cmd_eval(ev: &EvalInputs, conv: &MetricConv, name: Option<&str>, regions: Option<&RegionArgs>, json: bool) -> Result<i32> {
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
    let [auroc, aupr, fpr95, f1] = o.main;
    let mut obj = serde_json::Value::Object(report::eval::eval_object(&o, ev.pairs.len() as u64, conv, name));
    let m = obj.as_object_mut().expect("object");
    if ev.missing > 0 {
        m.insert("missing_score_maps".into(), ev.missing.into());
    }
    if let Some(r) = &reg {
        for (k, v) in r.as_object().expect("object") {
            m.insert(k.clone(), v.clone());
        }
        if r["components"]["leakage"] == true {
            eprintln!("warning: --regions: components binarised at the evaluated split's own best-F1 threshold (leakage); pass --component-threshold from another split");
        }
    }
    if json {
        println!("{obj}");
    } else {
        let p = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{:.4}", 100.0 * x));
        println!(
            "FPR95 {} | AUROC {} | AUPR {} | F1 {} (%) | threshold {} | {} anomaly / {} normal pixels, {} void",
            p(fpr95),
            p(auroc),
            p(aupr),
            p(f1),
            o.threshold.map_or("n/a".into(), |t| format!("{t}")),
            o.positives,
            o.negatives,
            o.void
        );
        if let Some([ai, fi]) = o.normal {
            println!("positive = normal: AUPR-In {} | FPR95-In {} (%)", p(ai), p(fi));
        }
        if let Some((n, skipped)) = o.per_image {
            println!("average = images: mean over {n} images with both classes ({skipped} skipped)");
        }
        if let Some(r) = &reg {
            let c = &r["components"];
            println!(
                "AUPRO (FPR ≤ {}) {} | {} regions | sIoU {} | PPV {} | mean F1 {} (%) at threshold {} ({}{})",
                r["aupro_fpr_limit"],
                p(r["aupro"].as_f64()),
                r["regions"],
                p(c["siou"].as_f64()),
                p(c["ppv"].as_f64()),
                p(c["mean_f1"].as_f64()),
                c["threshold"],
                c["threshold_source"].as_str().unwrap_or("none"),
                if c["leakage"] == true { ", leakage" } else { "" }
            );
        }
        if *conv != MetricConv::default() || name.is_some() {
            println!("conventions: {}{}", name.map_or(String::new(), |n| format!("`{n}`: ")), conv.describe());
        }
    }
    Ok(0)
}

/// `--all-conventions`: one row per preset, in preset order. Fixed decimal
/// formatting and preset order make the output byte-stable.
fn cmd_eval_all(ev: &EvalInputs, json: bool) -> Result<i32> {
    use bench::metrics::conventions::PRESETS;
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
        println!("{}", serde_json::Value::Array(v));
        return Ok(0);
    }
    print!("{}", conventions_md(&rows.iter().map(|(p, o, n)| (*p, o.main, o.normal, o.per_image, n.clone())).collect::<Vec<_>>()));
    Ok(0)
}

type Row<'a> = (&'a bench::metrics::conventions::Preset, [Option<f64>; 4], Option<[Option<f64>; 2]>, Option<(u64, u64)>, String);

/// The side-by-side table of `--all-conventions`.
fn conventions_md(rows: &[Row]) -> String {
    let p = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{:.5}", 100.0 * x));
    let mut s = String::from(
        "| convention | AUROC | AUPR | FPR95 | F1 | AUPR-In | FPR95-In | fpr95 | aupr | average | score_precision | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (pr, m, n, pi, note) in rows {
        let c = &pr.conv;
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            pr.name,
            p(m[0]),
            p(m[1]),
            p(m[2]),
            p(m[3]),
            n.map_or("".into(), |n| p(n[0])),
            n.map_or("".into(), |n| p(n[1])),
            c.fpr95.name(),
            c.aupr.name(),
            match pi {
                Some((k, sk)) => format!("images ({k} averaged, {sk} skipped)"),
                None => "pixels".into(),
            },
            c.score_precision.name(),
            note
        );
    }
    s += "\nAll numbers in %. Same scores, same pixels; only the metric convention of each code differs (see README, Metric conventions). ";
    s += "Exact curves everywhere: SMIYC's 768-bin approximation is not reproduced.\n";
    s
}
