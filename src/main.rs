//! The `bench` command line. Only wiring: every decision lives in a room.

use anyhow::{Context, Result, bail, ensure};
use bench::config::{Config, Device};
use bench::data::LabelMap;
use bench::data::checksum::sha256_hex;
use bench::metrics::conventions::{Average, ConvOverrides, Positive, ScorePrecision};
use bench::metrics::{AuprRule, Fpr95Rule};
use bench::pipeline::{RunOptions, RunOutput, RunStatus, run, run_exec};
use bench::shard;
use bench::report::{self, Results, diff, markup, tables};
use clap::{Args, Parser, Subcommand};
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
        /// Print each model's phase timings (calibrate, read, score, rank); manifest.json always has them.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Merge the shards' states of a sharded run; writes the results after the last round.
    Merge {
        /// The results folder (results/<name>) holding shards/.
        results: PathBuf,
    },
    /// Metrics of precomputed score maps ([H,W] .npy, .npz, or HDF5 with the `hdf5` feature) against masks, matched by file stem.
    Eval(EvalCmd),
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
    /// Normal-score drift over two or more results folders in time order: the
    /// 2σ dashboard vs the first run (with two, first the pairwise a → b table).
    Drift {
        #[arg(num_args = 2.., required = true)]
        runs: Vec<PathBuf>,
        /// Write the trend plot (SVG) of one model/method cell here.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// The plotted cell as `model/method` (default: the first run's first).
        #[arg(long)]
        cell: Option<String>,
    },
    /// Re-render report.md and report.html (the honest evaluation page) from results.json alone.
    Report {
        results: PathBuf,
        /// Compare with the files on disk instead of writing; exit 1 on a difference.
        #[arg(long)]
        check: bool,
    },
    /// Generate the deterministic synthetic demo dataset.
    Synth(SynthCmd),
    /// List the adapters wgpu sees.
    Devices,
}

/// `bench eval`'s raw flags, resolved once by [`EvalCmd::run`] into typed
/// inputs, convention and region settings.
#[derive(Args)]
struct EvalCmd {
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
    /// `smiyc`: SMIYC's binned pixel metric (768 percentile bins per frame, float16 scores; approximate). Alone, not with the convention flags.
    #[arg(long)]
    binning: Option<String>,
    /// Also AUPRO and SegmentMeIfYouCan component metrics (sIoU, PPV, mean F1).
    #[arg(long)]
    regions: bool,
    /// AUPRO's FPR limit (with --regions).
    #[arg(long, default_value_t = 0.3)]
    aupro_fpr: f64,
    /// Component binarisation threshold `score ≥ t` (e.g. chosen on val). Default: the evaluated split's own best-F1 threshold, flagged as leakage. `smiyc`: SMIYC's own rule (the best-F1 point of its binned pixel curve on the evaluated split, float16 scores, `score > t`), also leakage.
    #[arg(long, allow_hyphen_values = true)]
    component_threshold: Option<String>,
    /// SMIYC size filters: anomaly (500 / 100 px) or obstacle (50 / 10 px).
    #[arg(long, value_enum, default_value = "anomaly")]
    component_track: bench::metrics::region::Track,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// `bench synth`'s raw flags, resolved by [`SynthCmd::spec`].
#[derive(Args)]
struct SynthCmd {
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
    /// Drifted copies of test as `name=scale` (split `test@<name>`, every
    /// logit times scale), or `none`; default: the demo's `lighting=0.85`.
    #[arg(long, value_delimiter = ',')]
    drifted: Vec<String>,
    /// Do not write the RGB photos `<split>/images/<id>.png` (on by
    /// default: the failure-mode panels show them). Named "photos", not
    /// "images": `--images` is the image count.
    #[arg(long)]
    no_photos: bool,
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
        Cmd::Run { config, device, check, tol, shard, no_shard, rounds, verbose } => {
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
            cmd_run(&config, device, check, tol, shard, verbose)
        }
        Cmd::Merge { results } => cmd_merge(&results),
        Cmd::Eval(e) => e.run(),
        Cmd::Table { results, format, no_bold } => {
            print!("{}", tables::render_sets(&Results::load_sets(&results)?, &format, !no_bold)?);
            Ok(0)
        }
        Cmd::Diff { a, b, tol, metric, json } => cmd_diff(&a, &b, tol, &metric, json),
        Cmd::Drift { runs, plot, cell } => cmd_drift(&runs, plot.as_deref(), cell.as_deref()),
        Cmd::Report { results, check } => cmd_report(&results, check),
        Cmd::Synth(sy) => {
            let out = sy.out.clone();
            bench::synth::generate(&out, &sy.spec()?)?;
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

fn cmd_run(config: &Path, device: Option<Device>, check: bool, tol: f64, shard: Option<(usize, usize)>, verbose: bool) -> Result<i32> {
    let bytes = std::fs::read(config).with_context(|| format!("{}: cannot read config", config.display()))?;
    let cfg = Config::load(config)?;
    guard_output(&cfg, check)?;
    let opts = RunOptions { device, progress: !check, verbose };
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
        match run_exec(&c, &bytes, &RunOptions { device: None, progress: false, verbose: false }, &exec)? {
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
            // the report page, like the tables, when the device kind is the same
            let mut pages_same = true;
            if committed.device == out.results.device {
                for (f, bytes) in report::page::files(&out.results) {
                    if std::fs::read(d.join(&f)).ok().as_deref() != Some(bytes.as_slice()) {
                        println!("{f} differs from the re-rendered report");
                        pages_same = false;
                    }
                }
            }
            // the failure panels are drawn from CPU scores on every device
            for (f, bytes) in &out.failure_pngs {
                if std::fs::read(d.join(f)).ok().as_deref() != Some(bytes.as_slice()) {
                    println!("{f} differs from the re-drawn failure panel");
                    pages_same = false;
                }
            }
            if !(dd.within_tolerance() && tables_same && pages_same) {
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

/// `bench diff A B`: per-cell deltas, one section per dataset; exit 1 beyond `tol`.
fn cmd_diff(a: &Path, b: &Path, tol: f64, metric: &[String], json: bool) -> Result<i32> {
    let (sa, sb) = (Results::load_sets(a)?, Results::load_sets(b)?);
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
        let d = diff::diff(ra, rb, tol, metric)?;
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

/// `bench drift RUN1 RUN2 ...`: per dataset (a `[[datasets]]` folder: each
/// present in the first run) the pairwise table (two runs) and the 2σ
/// dashboard over the runs; `--plot` writes one cell's trend (the first
/// dataset's).
fn cmd_drift(runs: &[PathBuf], plot: Option<&Path>, cell: Option<&str>) -> Result<i32> {
    for r in runs {
        Results::load_sets(r).with_context(|| format!("{}: not a results folder of `bench run`", r.display()))?;
    }
    let names: Vec<Option<String>> = Results::load_sets(&runs[0])?.into_iter().map(|x| x.0).collect();
    let md = |t: &markup::Table| <markup::Markdown as markup::Dialect>::table(&markup::Markdown, t);
    let mut plotted = false;
    for n in names {
        let dirs: Vec<PathBuf> = runs.iter().map(|r| n.as_ref().map_or(r.clone(), |n| r.join(n))).collect();
        if let Some(n) = &n {
            println!("## Dataset `{n}`\n");
        }
        if let [a, b] = dirs.as_slice() {
            print!("{}", md(&report::drift::compare(a, b)?));
            println!();
        }
        let (t, series) = report::drift::dashboard_over_runs(&dirs)?;
        print!("{}", md(&t));
        if let (Some(p), false) = (plot, plotted) {
            let s = match cell {
                Some(c) => series.iter().find(|s| s.cell == c).with_context(|| format!("--cell {c}: no such model/method in {}", dirs[0].display()))?,
                None => series.first().with_context(|| format!("{}: no dashboard cells to plot", dirs[0].display()))?,
            };
            std::fs::write(p, report::drift::trend_svg(s, dirs.len())).with_context(|| format!("{}: cannot write the plot", p.display()))?;
            eprintln!("wrote {}", p.display());
            plotted = true;
        }
    }
    Ok(0)
}

/// `bench report DIR [--check]`: report.md and report.html of every
/// results.json in the folder (one per dataset of a `[[datasets]]` sweep).
fn cmd_report(dir: &Path, check: bool) -> Result<i32> {
    let mut code = 0;
    for (name, r) in Results::load_sets(dir)? {
        let d = name.as_ref().map_or(dir.to_path_buf(), |n| dir.join(n));
        for (f, bytes) in report::page::files(&r) {
            let p = d.join(&f);
            if check {
                if std::fs::read(&p).ok().as_deref() != Some(bytes.as_slice()) {
                    println!("{} differs from the re-rendered report", p.display());
                    code = 1;
                }
            } else {
                std::fs::write(&p, &bytes).with_context(|| format!("{}: cannot write", p.display()))?;
                eprintln!("wrote {}", p.display());
            }
        }
    }
    Ok(code)
}

impl EvalCmd {
    /// Resolve the flags (LowArgs → typed settings) and run `bench eval`.
    fn run(self) -> Result<i32> {
        use bench::pipeline::eval::{EvalInputs, eval, eval_all, parse_ignore};
        if let Some(b) = &self.binning {
            ensure!(b == "smiyc", "--binning {b:?}: unknown binning; the only one is `smiyc` (SMIYC's 768-bin pixel metric)");
            ensure!(
                !self.all_conventions
                    && !self.regions
                    && self.convention.is_none()
                    && self.fpr95.is_none()
                    && self.aupr.is_none()
                    && self.average.is_none()
                    && self.positive.is_none()
                    && self.score_precision.is_none(),
                "--binning smiyc is SMIYC's own fixed algorithm (float16 scores, 768 bins per frame): it cannot be combined with --convention, --fpr95, --aupr, --average, --positive, --score-precision, --all-conventions or --regions"
            );
            let lm = LabelMap::new(self.anomaly, parse_ignore(&self.ignore)?)?;
            let ev = EvalInputs::new(&self.scores, self.npz_key.as_deref(), &self.labels, lm, self.allow_missing)?;
            print!("{}", bench::pipeline::eval::eval_binned(&ev, self.json)?);
            return Ok(0);
        }
        let regions = self.regions()?;
        let ignore = parse_ignore(&self.ignore)?;
        let ov = ConvOverrides {
            convention: self.convention,
            fpr95: self.fpr95,
            aupr: self.aupr,
            average: self.average,
            positive: self.positive,
            score_precision: self.score_precision,
        };
        let conv = ov.resolve().context("--convention")?;
        let lm = LabelMap::new(self.anomaly, ignore)?;
        let ev = EvalInputs::new(&self.scores, self.npz_key.as_deref(), &self.labels, lm, self.allow_missing)?;
        let out = if self.all_conventions {
            ensure!(regions.is_none(), "--regions cannot be combined with --all-conventions");
            eval_all(&ev, self.json)?
        } else {
            ensure!(regions.is_none() || conv.average == Average::Pixels, "--regions with average = images is not implemented");
            eval(&ev, &conv, ov.convention.as_deref(), regions.as_ref(), self.json)?
        };
        print!("{out}");
        Ok(0)
    }

    fn regions(&self) -> Result<Option<bench::pipeline::eval::RegionArgs>> {
        if !self.regions {
            ensure!(self.component_threshold.is_none(), "--component-threshold needs --regions");
            return Ok(None);
        }
        let fpr = self.aupro_fpr;
        ensure!(fpr > 0.0 && fpr <= 1.0, "--aupro-fpr must be in (0, 1], got {fpr}");
        let threshold = match self.component_threshold.as_deref() {
            None => None,
            Some("smiyc") => None,
            Some(x) => Some(x.parse::<f32>().ok().filter(|t| t.is_finite()).with_context(|| format!("--component-threshold: {x:?} is not a finite number"))?),
        };
        let smiyc_threshold = self.component_threshold.as_deref() == Some("smiyc");
        Ok(Some(bench::pipeline::eval::RegionArgs { fpr, threshold, smiyc_threshold, track: self.component_track }))
    }
}

impl SynthCmd {
    /// The dataset spec: the demo's, with every given flag applied.
    fn spec(&self) -> Result<bench::synth::SynthSpec> {
        let mut spec = bench::synth::SynthSpec::demo();
        if let Some(n) = self.images {
            spec.splits = vec![("calibration".into(), n.div_ceil(3).max(1)), ("val".into(), n), ("test".into(), n)];
        }
        if !self.splits.is_empty() {
            spec.splits = self
                .splits
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
        if !self.models.is_empty() {
            spec.models = self.models.iter().map(|m| synth_model(m)).collect::<Result<_>>()?;
        }
        spec.height = self.height.unwrap_or(spec.height);
        spec.width = self.width.unwrap_or(spec.width);
        spec.classes = self.classes.unwrap_or(spec.classes);
        spec.anomaly_types = self.anomaly_types.unwrap_or(spec.anomaly_types);
        spec.photos = !self.no_photos;
        if !self.drifted.is_empty() {
            spec.drifted = self
                .drifted
                .iter()
                .filter(|d| d.as_str() != "none")
                .map(|d| {
                    let (name, k) = d.split_once('=').with_context(|| format!("--drifted: expected name=scale or none, got {d:?}"))?;
                    Ok((name.to_string(), k.parse().with_context(|| format!("--drifted: bad scale in {d:?}"))?))
                })
                .collect::<Result<_>>()?;
        }
        Ok(spec)
    }
}

/// `--models` entry `id:f16|f32:quality`.
fn synth_model(m: &str) -> Result<bench::synth::SynthModel> {
    let parts: Vec<&str> = m.split(':').collect();
    let [id, dt, q] = parts[..] else { bail!("--models: expected id:f16|f32:quality, got {m:?}") };
    let f16 = match dt {
        "f16" => true,
        "f32" => false,
        _ => bail!("--models: dtype must be f16 or f32 in {m:?}"),
    };
    Ok(bench::synth::SynthModel { id: id.into(), f16, quality: q.parse().with_context(|| format!("--models: bad quality in {m:?}"))? })
}
