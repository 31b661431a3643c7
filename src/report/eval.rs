//! The object `bench eval --json` prints, built in one place for the CLI and
//! the Python package's `metrics()` (which must match it byte for byte).

use crate::metrics::conventions::{EvalOut, MetricConv};
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
