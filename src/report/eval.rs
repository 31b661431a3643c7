//! The object `bench eval --json` prints, built in one place for the CLI and
//! the Python package's `metrics()` (which must match it byte for byte).

use crate::metrics::conventions::MetricConv;
use serde_json::{Map, Value, json};

/// The headline figures and pixel counts of an evaluation.
pub struct EvalFigures {
    pub auroc: Option<f64>,
    pub aupr: Option<f64>,
    pub fpr95: Option<f64>,
    pub f1: Option<f64>,
    pub threshold: Option<f64>,
    pub positives: u64,
    pub negatives: u64,
    pub void: u64,
    pub images: u64,
}

/// The base object (keys in serde_json's sorted order when printed), with
/// `conventions` when a preset is named or any switch differs from the
/// default; callers add their extra keys (`aupr_in`, regions, ...).
pub fn eval_object(f: &EvalFigures, conv: &MetricConv, name: Option<&str>) -> Map<String, Value> {
    let mut obj = json!({
        "auroc": f.auroc, "aupr": f.aupr, "fpr95": f.fpr95, "f1": f.f1, "threshold": f.threshold,
        "positives": f.positives, "negatives": f.negatives, "void": f.void,
        "images": f.images, "fpr95_rule": conv.fpr95,
    });
    let m = obj.as_object_mut().expect("object");
    if name.is_some() || *conv != MetricConv::default() {
        m.insert("conventions".into(), conv_json(conv, name));
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
