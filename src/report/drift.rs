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
