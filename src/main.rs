//! The `bench` command line. Only wiring: every decision lives in a room.

use anyhow::{Context, Result, bail};
use bench::config::{Config, Device};
use bench::data::{LabelMap, label, read_mask, read_score_map_key};
use bench::metrics::{Fpr95Rule, PositiveCollector};
use bench::pipeline::{RunOptions, run};
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
        #[arg(long, value_delimiter = ',', default_value = "255")]
        ignore: Vec<u16>,
        #[arg(long, value_enum, default_value = "first")]
        fpr95: Fpr95Arg,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Re-render the tables of a results folder from results.json alone.
    Table {
        results: PathBuf,
        #[arg(long, default_value = "md")]
        format: String,
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum Fpr95Arg {
    First,
    Interp,
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
    // Ctrl-C must never leave a half-written results folder or a hidden
    // temp folder: the handler waits for an in-progress write to clean up.
    if let Err(e) = ctrlc::set_handler(|| report::on_interrupt()) {
        eprintln!("warning: cannot install the Ctrl-C handler: {e}");
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
        Cmd::Run { config, device, check, tol } => cmd_run(&config, device, check, tol),
        Cmd::Eval { scores, npz_key, labels, anomaly, ignore, fpr95, json } => {
            let rule = match fpr95 {
                Fpr95Arg::First => Fpr95Rule::First,
                Fpr95Arg::Interp => Fpr95Rule::Interp,
            };
            cmd_eval(&scores, npz_key.as_deref(), &labels, LabelMap::new(anomaly, ignore)?, rule, json)
        }
        Cmd::Table { results, format } => {
            let r = Results::load(&results)?;
            print!("{}", tables::render(&r, markup::dialect(&format)?.as_ref()));
            Ok(0)
        }
        Cmd::Diff { a, b, tol, metric, json } => {
            let d = diff::diff(&Results::load(&a)?, &Results::load(&b)?, tol, &metric)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", diff::render(&d));
            }
            Ok(if d.within_tolerance() { 0 } else { 1 })
        }
        Cmd::Drift { a, b } => {
            let t = report::drift::compare(&a, &b)?;
            print!("{}", <markup::Markdown as markup::Dialect>::table(&markup::Markdown, &t));
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

fn cmd_run(config: &Path, device: Option<Device>, check: bool, tol: f64) -> Result<i32> {
    let bytes = std::fs::read(config).with_context(|| format!("{}: cannot read config", config.display()))?;
    let cfg = Config::load(config)?;
    let out = run(&cfg, &bytes, &RunOptions { device, progress: !check })?;
    let md = tables::render(&out.results, &markup::Markdown) + &report::curves::markdown_plots(&out.results);
    let dir = cfg.output_dir();
    if check {
        let committed = Results::load(&dir).context("--check needs committed results")?;
        let d = diff::diff(&committed, &out.results, tol, &[])?;
        print!("{}", diff::render(&d));
        // Numbers are judged with the tolerance above; the rendered tables
        // must match byte for byte when the device kind is the same (across
        // devices a last printed digit may legitimately round differently).
        let tables_same = committed.device != out.results.device
            || std::fs::read_to_string(dir.join("tables.md")).ok().as_deref() == Some(md.as_str());
        if !tables_same {
            println!("tables.md differs from the re-rendered tables");
        }
        return Ok(if d.within_tolerance() && tables_same { 0 } else { 1 });
    }
    let curves: Vec<report::curves::Curve> = out
        .curves
        .iter()
        .map(|(model, m, counts, keep)| report::curves::Curve {
            model,
            method: m.id(),
            method_name: m.display(),
            counts,
            keep: keep.clone(),
        })
        .collect();
    let mut files = vec![
        ("results.json".to_string(), out.results.to_json().into_bytes()),
        ("tables.md".to_string(), md.clone().into_bytes()),
        ("manifest.json".to_string(), (serde_json::to_string_pretty(&out.manifest)? + "\n").into_bytes()),
        ("drift.json".to_string(), (serde_json::to_string(&out.drift)? + "\n").into_bytes()),
    ];
    files.extend(report::curves::files(&out.results, &curves));
    report::write_dir_atomic(&dir, &files)?;
    // print the main table
    let main = tables::tables(&out.results).into_iter().next().expect("main table");
    print!("{}", <markup::Markdown as markup::Dialect>::table(&markup::Markdown, &main));
    eprintln!("wrote {}", dir.display());
    Ok(0)
}

/// `(stem, path)` of the .npy/.png files in a folder, or of one file.
fn list(p: &Path, exts: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let stem = |q: &Path| q.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    if p.is_file() {
        return Ok(vec![(stem(p), p.to_path_buf())]);
    }
    let rd = std::fs::read_dir(p).with_context(|| format!("{}: cannot read", p.display()))?;
    let mut v = Vec::new();
    for e in rd {
        let q = e?.path();
        if q.is_file() && q.extension().is_some_and(|x| exts.iter().any(|e| x == *e)) {
            v.push((stem(&q), q));
        }
    }
    v.sort();
    for w in v.windows(2) {
        if w[0].0 == w[1].0 {
            bail!("{} and {}: two files with the same stem", w[0].1.display(), w[1].1.display());
        }
    }
    if v.is_empty() {
        bail!("{}: no {} files", p.display(), exts.join("/"));
    }
    Ok(v)
}

fn cmd_eval(scores: &Path, npz_key: Option<&str>, labels: &Path, lm: LabelMap, rule: Fpr95Rule, json: bool) -> Result<i32> {
    let s = list(scores, bench::data::dataset::SCORE_EXTS)?;
    let pairs: Vec<(PathBuf, PathBuf)> = if scores.is_file() && labels.is_file() {
        vec![(s[0].1.clone(), labels.to_path_buf())]
    } else {
        let l = list(labels, &["png", "npy"])?;
        let mut pairs = Vec::new();
        for (stem, sp) in &s {
            let lp = l
                .iter()
                .find(|x| &x.0 == stem)
                .with_context(|| format!("{}: no mask with stem '{stem}' in {}", sp.display(), labels.display()))?;
            pairs.push((sp.clone(), lp.1.clone()));
        }
        pairs
    };
    let load = |(sp, lp): &(PathBuf, PathBuf)| -> Result<(Vec<f32>, Vec<u8>)> {
        let (s, m) = rayon::join(|| read_score_map_key(sp, npz_key), || read_mask(lp));
        let ((h, w, sc), m) = (s?, m?);
        if (h, w) != (m.h, m.w) {
            bail!("{}: score map is {h}×{w} but the mask {} is {}×{}", sp.display(), lp.display(), m.h, m.w);
        }
        lm.check(&m, lp)?;
        Ok((sc, lm.apply(&m)))
    };
    // Two passes (positives, then ranks of the negatives): one image is
    // kept in memory between them, several are streamed twice.
    let single = if pairs.len() == 1 { Some(load(&pairs[0])?) } else { None };
    let each = |f: &mut dyn FnMut(&[f32], &[u8])| -> Result<()> {
        match &single {
            Some((sc, lab)) => f(sc, lab),
            None => {
                for p in &pairs {
                    let (sc, lab) = load(p)?;
                    f(&sc, &lab);
                }
            }
        }
        Ok(())
    };
    let mut pc = PositiveCollector::new();
    let mut void = 0u64;
    each(&mut |sc, lab| {
        void += lab.iter().filter(|&&l| l == label::VOID).count() as u64;
        pc.add(sc, lab, None);
    })?;
    let mut r = pc.finish();
    each(&mut |sc, lab| r.add(sc, lab))?;
    let counts = r.finish()?;
    let sm = counts.summary(rule);
    if !counts.defined() {
        eprintln!("warning: no anomaly or no in-distribution pixels: metrics are undefined (null)");
    }
    let obj = serde_json::json!({
        "auroc": sm.auroc, "aupr": sm.aupr, "fpr95": sm.fpr95, "f1": sm.f1, "threshold": sm.threshold,
        "positives": counts.positives, "negatives": counts.negatives, "void": void,
        "images": pairs.len(), "fpr95_rule": serde_json::to_value(rule)?,
    });
    if json {
        println!("{obj}");
    } else {
        let p = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{:.4}", 100.0 * x));
        println!(
            "FPR95 {} | AUROC {} | AUPR {} | F1 {} (%) | threshold {} | {} anomaly / {} normal pixels, {} void",
            p(sm.fpr95),
            p(sm.auroc),
            p(sm.aupr),
            p(sm.f1),
            sm.threshold.map_or("n/a".into(), |t| format!("{t}")),
            counts.positives,
            counts.negatives,
            void
        );
    }
    Ok(0)
}
