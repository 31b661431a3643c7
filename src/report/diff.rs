//! `bench diff a b`: what changed between two results folders.
//!
//! Why: reviewers and `bench run --check` need one readable answer to "did a
//! number move?", with the tolerance explicit and the exit code meaningful.

use super::markup::{Align, Dialect, Markdown, Table};
use super::results::{Cell, Results};
use serde::Serialize;

/// Metrics compared, with "higher is better" for the arrows.
pub const METRICS: [(&str, bool); 7] = [
    ("auroc", true),
    ("aupr", true),
    ("fpr95", false),
    ("f1", true),
    ("threshold", true),
    ("image_auroc", true),
    ("image_aupr", true),
];

fn get(c: &Cell, m: &str) -> Option<f64> {
    match m {
        "auroc" => c.auroc,
        "aupr" => c.aupr,
        "fpr95" => c.fpr95,
        "f1" => c.f1,
        "threshold" => c.threshold,
        "image_auroc" => c.image_auroc,
        "image_aupr" => c.image_aupr,
        _ => None,
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Change {
    pub model: String,
    pub method: String,
    pub split: String,
    pub metric: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub delta: Option<f64>,
    /// `better`, `worse` or `changed` (threshold, null ↔ number).
    pub verdict: String,
}

#[derive(Debug, Serialize, PartialEq, Default)]
pub struct Diff {
    pub tolerance: f64,
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    pub changed: Vec<Change>,
    pub conventions: Vec<String>,
    /// Differences that do not fail the comparison (the device: GPU and CPU
    /// scores agree to float tolerance, which `tolerance` judges).
    pub notes: Vec<String>,
    pub compared_cells: usize,
}

impl Diff {
    pub fn within_tolerance(&self) -> bool {
        self.only_in_a.is_empty() && self.only_in_b.is_empty() && self.changed.is_empty() && self.conventions.is_empty()
    }
}

fn key(c: &Cell) -> String {
    format!("{}/{}/{}", c.model, c.method, c.split)
}

/// Compare `b` against `a`. `metrics` restricts the compared metrics
/// (empty = all).
pub fn diff(a: &Results, b: &Results, tol: f64, metrics: &[String]) -> anyhow::Result<Diff> {
    for m in metrics {
        anyhow::ensure!(METRICS.iter().any(|x| x.0 == m), "unknown metric {m:?} (known: {})", METRICS.map(|x| x.0).join(", "));
    }
    let mut d = Diff { tolerance: tol, ..Default::default() };
    let ca = serde_json::to_value(&a.conventions)?;
    let cb = serde_json::to_value(&b.conventions)?;
    if let (Some(oa), Some(ob)) = (ca.as_object(), cb.as_object()) {
        for (k, va) in oa {
            if ob.get(k) != Some(va) {
                d.conventions.push(format!("{k}: {va} → {}", ob.get(k).cloned().unwrap_or_default()));
            }
        }
    }
    if a.device != b.device {
        d.notes.push(format!("device: {} → {}", a.device, b.device));
    }
    for c in &a.cells {
        let Some(cb) = b.cells.iter().find(|x| key(x) == key(c)) else {
            d.only_in_a.push(key(c));
            continue;
        };
        d.compared_cells += 1;
        if c.leakage != cb.leakage {
            d.conventions.push(format!("{}: leakage {} → {}", key(c), c.leakage, cb.leakage));
        }
        for (m, higher_better) in METRICS {
            if !metrics.is_empty() && !metrics.iter().any(|x| x == m) {
                continue;
            }
            let (va, vb) = (get(c, m), get(cb, m));
            let (delta, verdict) = match (va, vb) {
                (Some(x), Some(y)) => {
                    if (y - x).abs() <= tol {
                        continue;
                    }
                    let v = if m == "threshold" {
                        "changed"
                    } else if (y > x) == higher_better {
                        "better"
                    } else {
                        "worse"
                    };
                    (Some(y - x), v)
                }
                (None, None) => continue,
                _ => (None, "changed"),
            };
            d.changed.push(Change {
                model: c.model.clone(),
                method: c.method.clone(),
                split: c.split.clone(),
                metric: m.into(),
                a: va,
                b: vb,
                delta,
                verdict: verdict.into(),
            });
        }
    }
    for c in &b.cells {
        if !a.cells.iter().any(|x| key(x) == key(c)) {
            d.only_in_b.push(key(c));
        }
    }
    Ok(d)
}

/// A value as the tables print it: rates in percent with the unit (and
/// the fraction results.json holds), thresholds in raw score units.
fn f(metric: &str, v: Option<f64>) -> String {
    match v {
        None => "null".into(),
        Some(x) if metric == "threshold" => format!("{x:.6}"),
        Some(x) => format!("{:.4} % ({x:.6})", 100.0 * x),
    }
}

/// A change: percentage points for rates, raw units for thresholds.
fn delta(metric: &str, v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if metric == "threshold" => format!("{x:+.6}"),
        Some(x) => format!("{:+.4} pp", 100.0 * x),
    }
}

/// Human-readable Markdown.
pub fn render(d: &Diff) -> String {
    let mut s = String::new();
    for n in &d.notes {
        s += &format!("- note: {n}\n");
    }
    if d.within_tolerance() {
        s += &format!("No differences beyond tolerance {:e} ({} cells compared).\n", d.tolerance, d.compared_cells);
        return s;
    }
    for c in &d.conventions {
        s += &format!("- conventions differ: {c}\n");
    }
    for k in &d.only_in_a {
        s += &format!("- only in a: {k}\n");
    }
    for k in &d.only_in_b {
        s += &format!("- only in b: {k}\n");
    }
    if !d.changed.is_empty() {
        s.push('\n');
        let t = Table {
            title: format!("Changed beyond tolerance {:e}", d.tolerance),
            notes: vec!["Rates in % (the fraction of results.json in brackets; the tolerance applies to the fraction); Δ in percentage points (pp). Thresholds in raw score units.".into()],
            header: ["cell", "metric", "a", "b", "Δ", ""].map(String::from).to_vec(),
            align: vec![Align::Left, Align::Left, Align::Right, Align::Right, Align::Right, Align::Left],
            rows: d
                .changed
                .iter()
                .map(|c| {
                    let arrow = match c.verdict.as_str() {
                        "better" => "▲ better",
                        "worse" => "▼ worse",
                        _ => "• changed",
                    };
                    vec![
                        format!("{}/{}/{}", c.model, c.method, c.split),
                        c.metric.clone(),
                        f(&c.metric, c.a),
                        f(&c.metric, c.b),
                        delta(&c.metric, c.delta),
                        arrow.into(),
                    ]
                })
                .collect(),
            ..Default::default()
        };
        s += &Markdown.table(&t);
    }
    s
}
