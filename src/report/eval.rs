//! What `bench eval` prints: the `--json` object, built in one place for the
//! CLI and the Python package's `metrics()` (which must match it byte for
//! byte), its text lines, and the `--all-conventions` table.

use crate::metrics::conventions::{EvalOut, MetricConv, Preset};
use std::fmt::Write;
use serde_json::{Map, Value, json};

/// The object of an evaluation of `images` images (keys in serde_json's
/// sorted order when printed): the headline figures and counts, with
/// `conventions` when a preset is named or any switch differs from the
/// default, `aupr_in`/`fpr95_in` under `positive = "normal"`, and the
/// averaged/skipped image counts under `average = "images"`. Callers add
/// their own extra keys (missing maps, regions).
pub fn eval_object(o: &EvalOut, images: u64, conv: &MetricConv, name: Option<&str>) -> Map<String, Value> {
    let [auroc, aupr, fpr95, f1] = o.main;
    let mut obj = json!({
        "auroc": auroc, "aupr": aupr, "fpr95": fpr95, "f1": f1, "threshold": o.threshold,
        "positives": o.positives, "negatives": o.negatives, "void": o.void,
        "images": images, "fpr95_rule": conv.fpr95,
    });
    let m = obj.as_object_mut().expect("object");
    if name.is_some() || *conv != MetricConv::default() {
        m.insert("conventions".into(), conv_json(conv, name));
    }
    if let Some([ai, fi]) = o.normal {
        m.insert("aupr_in".into(), json!(ai));
        m.insert("fpr95_in".into(), json!(fi));
    }
    if let Some((n, skipped)) = o.per_image {
        m.insert("images_averaged".into(), n.into());
        m.insert("images_skipped".into(), skipped.into());
    }
    std::mem::take(m)
}

/// The switches of a convention as `bench eval --json` names them.
pub fn conv_json(conv: &MetricConv, name: Option<&str>) -> Value {
    json!({
        "convention": name,
        "fpr95": conv.fpr95, "aupr": conv.aupr, "average": conv.average,
        "positive": conv.positive, "score_precision": conv.score_precision,
    })
}

/// The text lines `bench eval` prints (without `--json`).
pub fn eval_text(o: &EvalOut, reg: Option<&Value>, conv: &MetricConv, name: Option<&str>) -> String {
    let [auroc, aupr, fpr95, f1] = o.main;
    let p = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{:.4}", 100.0 * x));
    let mut s = String::new();
    let _ = writeln!(
        s,
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
        let _ = writeln!(s, "positive = normal: AUPR-In {} | FPR95-In {} (%)", p(ai), p(fi));
    }
    if let Some((n, skipped)) = o.per_image {
        let _ = writeln!(s, "average = images: mean over {n} images with both classes ({skipped} skipped)");
    }
    if let Some(r) = reg {
        let c = &r["components"];
        let _ = writeln!(
            s,
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
        let _ = writeln!(s, "conventions: {}{}", name.map_or(String::new(), |n| format!("`{n}`: ")), conv.describe());
    }
    s
}

/// One `--all-conventions` row: the preset, its AUROC/AUPR/FPR95/F1, the
/// normal-positive pair, per-image counts, and a note.
pub type Row<'a> = (&'a Preset, [Option<f64>; 4], Option<[Option<f64>; 2]>, Option<(u64, u64)>, String);

/// The side-by-side table of `--all-conventions`.
pub fn conventions_md(rows: &[Row]) -> String {
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
