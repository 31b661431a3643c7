//! The drift-sensitivity tables (results.json `drift_splits`): accuracy
//! change under each drifted copy of test, the deployed thresholds applied
//! unchanged, and the seed's 2σ dashboard.
//!
//! Why one builder for tables.md and the report page: both show the same
//! three tables, so they are built once from results.json ([`tables`]) and
//! the page only wraps them in its own prose.

use super::markup::{Align, Table};
use super::results::{DashStat, DriftSplit, Results, ThresholdDrift};
use crate::metrics::PointRule;
use crate::metrics::operating::Level;

/// The flag of a statistic that moved more than 2σ.
pub const FLAG: &str = "⚠";

fn pp(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{:+.2}", 100.0 * x))
}
fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{:.2}", 100.0 * x))
}
/// A paired interval of a change, in percentage points.
fn pp_ci(v: Option<[f64; 2]>) -> String {
    v.map_or(String::new(), |[a, b]| format!(" [{:+.2}, {:+.2}]", 100.0 * a, 100.0 * b))
}
/// A raw score: 4 decimals, or scientific below 1e-3.
pub fn raw(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| if x != 0.0 && x.abs() < 1e-3 { format!("{x:.2e}") } else { format!("{x:.4}") })
}

fn name<'a>(r: &'a Results, id: &'a str, model: bool) -> &'a str {
    if model {
        r.models.iter().find(|m| m.id == id).map_or(id, |m| m.name.as_str())
    } else {
        r.methods.iter().find(|m| m.id == id).map_or(id, |m| m.name.as_str())
    }
}

/// Split, model and method columns of a row.
fn keys(r: &Results, d: &DriftSplit) -> Vec<String> {
    vec![d.split.clone(), name(r, &d.model, true).into(), name(r, &d.method, false).into()]
}

fn table(title: &str, notes: Vec<String>, header: &[&str], rows: Vec<Vec<String>>) -> Table {
    let mut align = vec![Align::Left; 3];
    align.extend(std::iter::repeat_n(Align::Right, header.len() - 3));
    Table { title: title.into(), notes, header: header.iter().map(|s| s.to_string()).collect(), align, rows, key_cols: 3, parts: vec![] }
}

/// The three tables, or none when results.json has no drifted split.
pub fn tables(r: &Results) -> Vec<Table> {
    let Some(d0) = r.drift_splits.first() else { return vec![] };
    let boot = if d0.samples > 0 {
        format!("{} paired resamples of the test images (seed {}; the same image ids drawn from both splits)", d0.samples, d0.seed)
    } else {
        "no resamples (`[metrics] bootstrap = 0`): intervals and σ are n/a".into()
    };
    vec![accuracy(r, &boot), thresholds(r, d0, &boot), dashboard(r, &boot)]
}

fn accuracy(r: &Results, boot: &str) -> Table {
    let order = [("auroc", Level::Pixel), ("aupr", Level::Pixel), ("fpr95", Level::Pixel), ("f1", Level::Pixel), ("aupro", Level::Pixel), ("auroc", Level::Image), ("aupr", Level::Image)];
    let rows = r
        .drift_splits
        .iter()
        .map(|d| {
            let mut row = keys(r, d);
            row.extend(order.iter().map(|&(m, l)| {
                d.metrics.iter().find(|x| x.metric == m && x.level == l).map_or("—".into(), |x| format!("{} ({}{})", pct(x.drifted), pp(x.delta), pp_ci(x.interval)))
            }));
            row
        })
        .collect();
    let mut notes = vec![format!(
        "**Format**: value on the drifted split in % (change from clean `test` in percentage points [95 % interval of the change]). Intervals: {boot}."
    )];
    // a note on a row with an interval is its error bound, else why it has none
    let why: std::collections::BTreeSet<(bool, String)> =
        r.drift_splits.iter().flat_map(|d| d.metrics.iter().filter_map(|x| x.note.as_ref().map(|n| (x.interval.is_some(), format!("{} ({}): {n}", x.metric, x.level.name()))))).collect();
    notes.extend(why.into_iter().map(|(has, w)| if has { format!("Interval of {w}.") } else { format!("Without an interval: {w}.") }));
    table("Drift sensitivity: accuracy under drift", notes, &["Split", "Model", "Method", "pixel AUROC", "pixel AUPR", "FPR95", "F1", "AUPRO", "image AUROC", "image AUPR"], rows)
}

/// The hard (first `far_at_frr`) and soft (first `frr_at_far`) point of
/// a level.
fn hard_soft(d: &DriftSplit, level: Level) -> [(&'static str, Option<&ThresholdDrift>); 2] {
    let first = |rule: PointRule| d.thresholds.iter().find(|t| t.level == level && t.rule == rule);
    [("hard", first(PointRule::FarAtFrr)), ("soft", first(PointRule::FrrAtFar))]
}

fn thresholds(r: &Results, d0: &DriftSplit, boot: &str) -> Table {
    let mut rows = vec![];
    for d in &r.drift_splits {
        for level in [Level::Pixel, Level::Image] {
            for (which, t) in hard_soft(d, level) {
                let Some(t) = t else { continue };
                let mut row = keys(r, d);
                let budget = t.budget.map_or(String::new(), |b| format!(" {}", super::page::budget_pct(b)));
                row.push(format!("{} {which} ({}{budget} %)", level.name(), if t.rule == PointRule::FarAtFrr { "FRR" } else { "FAR" }));
                row.push(raw(t.threshold));
                row.push(format!("{} → {} ({}{})", pct(t.baseline_far), pct(t.drifted_far), pp(t.far_shift), pp_ci(t.far_shift_interval)));
                row.push(format!("{} → {} ({}{})", pct(t.baseline_frr), pct(t.drifted_frr), pp(t.frr_shift), pp_ci(t.frr_shift_interval)));
                rows.push(row);
            }
        }
    }
    let notes = vec![format!(
        "**Format**: the deployed thresholds chosen on `{}` (hard = FAR @ FRR at the first FRR budget, soft = FRR @ FAR at the first FAR budget), applied unchanged to clean `test` → the drifted split: FAR (defects accepted) and FRR (good rejected) in %, shift in percentage points [95 % interval]. Every operating point is in results.json (`drift_splits[].thresholds`). Intervals: {boot}.",
        d0.threshold_split
    )];
    table("Drift sensitivity: threshold drift (nobody recalibrates)", notes, &["Split", "Model", "Method", "Threshold", "t", "FAR test → drifted", "FRR test → drifted"], rows)
}

/// One dashboard cell: the value, its distance from the baseline in σ,
/// and the flag.
pub fn dash_cell(s: &DashStat) -> String {
    let v = if s.statistic == "reject_rate" { pct(s.value) } else { raw(s.value) };
    let z = match (s.delta, s.sigma) {
        (Some(d), Some(sg)) if sg > 0.0 => format!("{:+.1}σ", d / sg),
        (Some(d), Some(_)) if d == 0.0 => "+0.0σ".into(),
        (Some(_), Some(_)) => "σ = 0".into(),
        _ => "σ n/a".into(),
    };
    let flag = if s.flagged == Some(true) { format!(" {FLAG}") } else { String::new() };
    format!("{v} ({z}){flag}")
}

/// Dashboard columns: (level, statistic, header).
pub const DASH_COLS: [(Level, &str, &str); 8] = [
    (Level::Pixel, "mean", "pixel mean"),
    (Level::Pixel, "p95", "pixel p95"),
    (Level::Pixel, "reject_rate", "pixel reject %"),
    (Level::Pixel, "kl", "KL"),
    (Level::Pixel, "mmd2", "MMD²"),
    (Level::Image, "mean", "image mean"),
    (Level::Image, "p95", "image p95"),
    (Level::Image, "reject_rate", "image reject %"),
];

/// The dashboard cells of `stats` in [`DASH_COLS`] order.
pub fn dash_row(stats: &[DashStat]) -> Vec<String> {
    DASH_COLS.iter().map(|&(l, s, _)| stats.iter().find(|x| x.level == l && x.statistic == s).map_or("—".into(), dash_cell)).collect()
}

fn dashboard(r: &Results, boot: &str) -> Table {
    let rows = r
        .drift_splits
        .iter()
        .map(|d| {
            let mut row = keys(r, d);
            row.extend(dash_row(&d.dashboard));
            row
        })
        .collect();
    let mut header = vec!["Split", "Model", "Method"];
    header.extend(DASH_COLS.iter().map(|c| c.2));
    let notes = vec![
        format!("**Format**: the statistic on the drifted split (its distance from clean `test` in σ); {FLAG} = moved more than 2σ (seed 000's dashboard rule; KL and MMD² only upwards). Normal pixels: mean and p95 of their scores (raw units), reject % = good pixels at or above the deployed hard threshold, KL(drifted ‖ test) on the 16-bit score-key histogram (+0.5 smoothing) and MMD² (Gaussian kernel, σ = pooled std). Normal images: mean and p95 of their image scores, reject % at the image-level hard threshold."),
        format!("σ = standard deviation over {boot} of clean test: mean and reject rates from each image's sums, p95 from each image's normal-score histogram (16-bit score-key buckets, bucket centres), image statistics from the image scores. For KL and MMD² the baseline is the mean divergence of test's own resamples to test (the first {} resamples), σ their spread.", crate::metrics::dashboard::DIVERGENCE_RESAMPLES),
    ];
    table("Drift dashboard (2σ rule)", notes, &header, rows)
}
