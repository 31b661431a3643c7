//! The honest-evaluation extras against numpy + scikit-learn computed
//! straight from the dataset files (tests/fixtures/honest.json, made by
//! scripts/gen_honest_fixtures.py): image-level AUROC/AUPR, normal-pixel
//! drift statistics, per-anomaly-type metrics, and the val-chosen threshold
//! applied to test.

use std::process::Command;

fn close(what: &str, got: &serde_json::Value, want: &serde_json::Value) {
    let (g, w) = (got.as_f64().unwrap_or_else(|| panic!("{what}: {got}")), want.as_f64().unwrap());
    assert!((g - w).abs() <= 1e-6, "{what}: bench {g} vs reference {w}");
}

#[test]
fn honest_extras_match_numpy_and_sklearn() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let bench = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_bench")).args(args).current_dir(root).output().unwrap();
    let o = bench(&["synth", "--out", "ds", "--anomaly-types", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(
        root.join("c.toml"),
        r#"
name = "h"
dataset = "ds"
anomaly = [1, 2]
ignore = [255]
methods = ["max_logit"]
device = "cpu"
[[models]]
id = "deeplab_r50"
name = "A"
[[models]]
id = "segformer_b5"
name = "B"
"#,
    )
    .unwrap();
    let o = bench(&["run", "c.toml"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("results/h/results.json")).unwrap()).unwrap();
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/honest.json")).unwrap()).unwrap();
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for e in cases {
        let model = e["model"].as_str().unwrap();
        let cell = r["cells"].as_array().unwrap().iter().find(|c| c["model"] == model && c["method"] == "max_logit" && c["split"] == "test").unwrap();
        for k in ["image_auroc", "image_aupr", "normal_mean", "normal_p50", "normal_p95", "normal_p99"] {
            close(&format!("{model} {k}"), &cell[k], &e[k]);
        }
        for t in [1u64, 2] {
            let f = r["failure_modes"].as_array().unwrap().iter().find(|f| f["model"] == model && f["anomaly_value"] == t).unwrap();
            for k in ["auroc", "aupr", "fpr95"] {
                close(&format!("{model} type {t} {k}"), &f[k], &e["per_type"][t.to_string()][k]);
            }
        }
        let h = r["honest"].as_array().unwrap().iter().find(|h| h["model"] == model && h["method"] == "max_logit").unwrap();
        assert_eq!(h["threshold_split"], "val");
        let p = h["points"].as_array().unwrap().iter().find(|p| p["rule"] == "f1_optimal").unwrap();
        close(&format!("{model} val threshold"), &p["threshold"], &e["val_f1_threshold"]);
        close(&format!("{model} test F1 at val threshold"), &p["f1"], &e["test_f1_at_val_threshold"]);
        close(&format!("{model} test FAR at val threshold"), &p["far"], &e["test_far_at_val_threshold"]);
        close(&format!("{model} test FRR at val threshold"), &p["frr"], &e["test_frr_at_val_threshold"]);
    }
}
