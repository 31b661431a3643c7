//! `bench drift a b`: normal-pixel score drift between two runs.
//!
//! Why: a threshold shipped from run `a` is only valid while normal pixels
//! score as they did in `a`. Both runs' `drift.json` share the 16-bit
//! score-key histogram grid, so no common binning has to be agreed on.

use super::markup::{Align, Table};
use crate::metrics::drift::{DriftStats, kl, mmd2};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Format tag of `drift.json`.
pub const DRIFT_FORMAT: &str = "bench-drift/1";

/// `drift.json`: every (model, method, split)'s normal-pixel score
/// statistics, written by `bench run` and read by `bench drift` (fields in
/// name order, as the file lists them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftFile {
    pub cells: Vec<DriftCell>,
    /// Per (model, method): the clean test split's dashboard statistics
    /// with σ from its image resamples, the baseline of `bench drift` over
    /// runs (absent in files of older versions).
    #[serde(default)]
    pub dashboard: Vec<DashCell>,
    pub format: String,
}

/// One (model, method)'s dashboard baseline: each statistic's value on
/// `split` (`value` = `baseline`) and σ over `samples` image resamples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashCell {
    pub method: String,
    pub model: String,
    pub samples: u32,
    pub seed: u64,
    pub split: String,
    pub stats: Vec<crate::report::results::DashStat>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftCell {
    pub method: String,
    pub model: String,
    pub split: String,
    pub stats: DriftStats,
}

impl DriftFile {
    pub fn new(cells: Vec<DriftCell>, dashboard: Vec<DashCell>) -> DriftFile {
        DriftFile { cells, dashboard, format: DRIFT_FORMAT.into() }
    }
}

fn load(dir: &Path) -> Result<DriftFile> {
    let p = dir.join("drift.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
    let f: DriftFile = serde_json::from_str(&text).with_context(|| format!("{}", p.display()))?;
    anyhow::ensure!(f.format == DRIFT_FORMAT, "{}: unsupported format {:?}", p.display(), f.format);
    let mut seen = std::collections::BTreeSet::new();
    for c in &f.cells {
        anyhow::ensure!(
            seen.insert((&c.model, &c.method, &c.split)),
            "{}: cell {}/{}/{} appears twice (a corrupt or hand-edited drift.json)",
            p.display(),
            c.model,
            c.method,
            c.split
        );
    }
    Ok(f)
}

/// One row per (model, method, split) present in both runs.
pub fn compare(a: &Path, b: &Path) -> Result<Table> {
    let (fa, fb) = (load(a)?, load(b)?);
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.6}"));
    let mut rows = Vec::new();
    for ca in &fa.cells {
        let Some(cb) = fb.cells.iter().find(|c| c.model == ca.model && c.method == ca.method && c.split == ca.split) else {
            continue;
        };
        let (x, y) = (&ca.stats, &cb.stats);
        rows.push(vec![
            format!("{}/{}/{}", ca.model, ca.method, ca.split),
            f(x.mean),
            f(y.mean),
            f(x.quantile(0.95)),
            f(y.quantile(0.95)),
            f(kl(y, x)),
            f(mmd2(y, x)),
        ]);
    }
    anyhow::ensure!(!rows.is_empty(), "{} and {} share no (model, method, split)", a.display(), b.display());
    Ok(Table {
        title: "Normal-pixel score drift (a → b)".into(),
        notes: vec!["KL(b ‖ a) on the 16-bit score-key histogram (+0.5 smoothing); MMD² with a Gaussian kernel, σ = pooled std.".into()],
        header: ["cell", "mean a", "mean b", "p95 a", "p95 b", "KL", "MMD²"].map(String::from).to_vec(),
        align: vec![Align::Left, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right],
        rows,
        ..Default::default()
    })
}

/// One run of `bench drift` over time: its folder and its drift.json.
struct Run {
    dir: std::path::PathBuf,
    file: DriftFile,
}

fn load_run(dir: &Path) -> Result<Run> {
    let file = load(dir)?;
    anyhow::ensure!(
        !file.dashboard.is_empty(),
        "{}: no dashboard baseline (`dashboard` is empty: written by an older bench; re-run `bench run` to get σ)",
        dir.join("drift.json").display()
    );
    Ok(Run { dir: dir.to_path_buf(), file })
}

/// Run `r`'s dashboard statistics of (model, method) against the first
/// run `base`: its values, the first run's baseline and σ, and the 2σ flag.
/// KL / MMD² are those of its test split to the first run's.
fn run_stats(base: &Run, r: &Run, b: &DashCell) -> Option<Vec<crate::report::results::DashStat>> {
    let mine = r.file.dashboard.iter().find(|c| c.model == b.model && c.method == b.method)?;
    let hist = |f: &DriftFile| f.cells.iter().find(|c| c.model == b.model && c.method == b.method && c.split == b.split).map(|c| c.stats.clone());
    let (h0, h) = (hist(&base.file), hist(&r.file));
    Some(
        b.stats
            .iter()
            .map(|s0| {
                let value = match s0.statistic.as_str() {
                    "kl" => h.as_ref().zip(h0.as_ref()).and_then(|(x, y)| kl(x, y)),
                    "mmd2" => h.as_ref().zip(h0.as_ref()).and_then(|(x, y)| mmd2(x, y)),
                    _ => mine.stats.iter().find(|s| s.level == s0.level && s.statistic == s0.statistic).and_then(|s| s.value),
                };
                let delta = value.zip(s0.baseline).map(|(v, x)| v - x);
                crate::report::results::DashStat { value, delta, flagged: crate::metrics::dashboard::flagged(&s0.statistic, delta, s0.sigma), ..s0.clone() }
            })
            .collect(),
    )
}

/// `bench drift run1 run2 ...` (time order): per run and (model, method)
/// the dashboard statistics with their distance from the first run in
/// units of its σ, and the 2σ flags; the first run's rows are the
/// baseline itself.
pub fn dashboard_over_runs(dirs: &[std::path::PathBuf]) -> Result<(Table, Vec<RunSeries>)> {
    let runs: Vec<Run> = dirs.iter().map(|d| load_run(d)).collect::<Result<_>>()?;
    let base = &runs[0];
    let (mut rows, mut series) = (vec![], vec![]);
    for b in &base.file.dashboard {
        let mut s = RunSeries { cell: format!("{}/{}", b.model, b.method), z: vec![] };
        for (k, r) in runs.iter().enumerate() {
            let Some(stats) = run_stats(base, r, b) else { continue };
            let mut row = vec![format!("{} {}", k + 1, r.dir.display()), s.cell.clone()];
            row.extend(super::sensitivity::dash_row(&stats));
            rows.push(row);
            s.z.push((k, stats));
        }
        series.push(s);
    }
    let mut header = vec!["run".to_string(), "cell".to_string()];
    header.extend(super::sensitivity::DASH_COLS.iter().map(|c| c.2.to_string()));
    let mut align = vec![Align::Left, Align::Left];
    align.extend(std::iter::repeat_n(Align::Right, header.len() - 2));
    let table = Table {
        title: "Drift dashboard over runs (2σ rule, baseline = run 1)".into(),
        notes: vec![format!(
            "Per run the statistic of its test split's normal pixels/images (distance from run 1 in units of run 1's σ over {} image resamples); {} = moved more than 2σ. Reject % at each run's own deployed hard threshold; KL(run ‖ run 1) and MMD² on the 16-bit score-key histograms, their baseline the mean divergence of run 1's own resamples.",
            base.file.dashboard[0].samples,
            super::sensitivity::FLAG
        )],
        header,
        align,
        rows,
        ..Default::default()
    };
    Ok((table, series))
}

/// One (model, method)'s statistics per run (run index, statistics).
pub struct RunSeries {
    pub cell: String,
    pub z: Vec<(usize, Vec<crate::report::results::DashStat>)>,
}

/// The trend plot of one cell: each statistic's distance from run 1 in σ
/// per run, with the ±2σ alarm lines. Statistics without σ (or σ = 0)
/// are left out and named in the title.
pub fn trend_svg(s: &RunSeries, runs: usize) -> String {
    let mut series = vec![];
    let mut missing = vec![];
    for &(level, stat, header) in &super::sensitivity::DASH_COLS {
        let pts: Vec<(f64, f64)> = s
            .z
            .iter()
            .filter_map(|(run, st)| {
                let x = st.iter().find(|x| x.level == level && x.statistic == stat)?;
                let sg = x.sigma.filter(|&g| g > 0.0)?;
                Some(((run + 1) as f64, x.delta? / sg))
            })
            .collect();
        if pts.is_empty() { missing.push(header) } else { series.push((header.to_string(), pts)) }
    }
    let top = series.iter().flat_map(|s| s.1.iter().map(|p| p.1.abs())).fold(3.0f64, f64::max).ceil();
    let xr = (1.0, runs.max(2) as f64);
    series.push(("+2σ".into(), vec![(xr.0, 2.0), (xr.1, 2.0)]));
    series.push(("−2σ".into(), vec![(xr.0, -2.0), (xr.1, -2.0)]));
    let title = if missing.is_empty() { format!("Drift — {}", s.cell) } else { format!("Drift — {} (no σ: {})", s.cell, missing.join(", ")) };
    super::curves::line_svg(&title, ("run (time order)", "distance from run 1 (σ)"), xr, (-top, top), series)
}
