//! The honest evaluation's operating points through `bench run`, against
//! the numpy oracle of scripts/gen_operating_fixtures.py
//! (tests/fixtures/operating.json): `frr_at_far` and `far_at_frr` at pixel
//! and image level (max and top-k image scores, ties, scores inside one
//! 16-bit key bucket, a val split without anomalies), test FAR / FRR /
//! precision / recall / F1 at the val thresholds, the review bands and the
//! "incompatible budgets" message when the budgets cross; sharded runs
//! byte-identical to single ones, with and without a val split.

mod common;

use common::{bench, cmd, stderr};
use serde_json::Value;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-9;

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/operating.json")).unwrap()).unwrap()
}

/// Write the case's splits as a dataset of precomputed maps (external
/// method `s`, no logits) and its config; return the config's file name.
fn write_case(root: &Path, case: &Value, splits: &[&str], name: &str) -> String {
    let (h, w) = (case["height"].as_u64().unwrap(), case["width"].as_u64().unwrap());
    for split in splits {
        let d = root.join(format!("{name}_ds/{split}"));
        std::fs::create_dir_all(d.join("labels")).unwrap();
        std::fs::create_dir_all(d.join("scores/s")).unwrap();
        for (i, im) in case[*split].as_array().unwrap().iter().enumerate() {
            let s: Vec<f32> = im["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            let l: Vec<u8> = im["labels"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect();
            let stem = format!("img{i:02}");
            bench::data::npy::write_npy_u8(&d.join(format!("labels/{stem}.npy")), &[h, w], &l).unwrap();
            bench::data::npy::write_npy_f32(&d.join(format!("scores/s/{stem}.npy")), &[h, w], &s).unwrap();
        }
    }
    let list = |k: &str| case[k].as_array().unwrap().iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
    let cfg = format!(
        "name = \"{name}\"\ndataset = \"{name}_ds\"\nmethods = []\nexternal = [\"s\"]\ndevice = \"cpu\"\n[[models]]\nid = \"m\"\nname = \"M\"\n[metrics]\nfar = [{}]\nfrr = [{}]\nimage_topk = {}\n",
        list("far"),
        list("frr"),
        case["image_topk"]
    );
    let file = format!("{name}.toml");
    std::fs::write(root.join(&file), cfg).unwrap();
    file
}

fn results(root: &Path, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root.join(format!("results/{name}/results.json"))).unwrap()).unwrap()
}

fn close(errs: &mut Vec<String>, what: &str, got: &Value, want: &Value) {
    match (got.as_f64(), want.as_f64()) {
        (None, None) => {}
        (Some(g), Some(w)) if (g - w).abs() <= TOL => {}
        _ => errs.push(format!("{what}: bench {got} vs numpy {want}")),
    }
}

#[test]
fn operating_points_match_the_numpy_oracle() {
    let fx = fixture();
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let mut errs = vec![];
    let mut incompatible = 0;
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let cfg = write_case(root, case, &["val", "test"], name);
        let o = bench(&["run", &cfg], root);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let r = results(root, name);
        let h = &r["honest"][0];
        assert_eq!(h["threshold_split"], "val", "{name}");
        let pts = h["points"].as_array().unwrap();
        for level in ["pixel", "image"] {
            let e = &case["expected"][level];
            for want in e["points"].as_array().unwrap() {
                let at = format!("{name} {level} {} {}", want["rule"], want["budget"]);
                let Some(got) = pts.iter().find(|p| p["level"] == level && p["rule"] == want["rule"] && p["budget"] == want["budget"]) else {
                    errs.push(format!("{at}: missing"));
                    continue;
                };
                if want["threshold"].is_null() {
                    if !got["threshold"].is_null() || !got["reason"].is_string() {
                        errs.push(format!("{at}: expected null threshold with a reason, got {got}"));
                    }
                    for k in ["far", "frr", "precision", "recall", "f1"] {
                        if !got[k].is_null() {
                            errs.push(format!("{at}: {k} must be null without a threshold, got {}", got[k]));
                        }
                    }
                    continue;
                }
                // thresholds: the same float32
                if got["threshold"].as_f64().map(|x| x as f32) != want["threshold"].as_f64().map(|x| x as f32) {
                    errs.push(format!("{at}: threshold bench {} vs numpy {}", got["threshold"], want["threshold"]));
                }
                for k in ["far", "frr", "precision", "recall", "f1", "threshold_split_far", "threshold_split_frr"] {
                    close(&mut errs, &format!("{at} {k}"), &got[k], &want[k]);
                }
            }
            let band = h["bands"].as_array().unwrap().iter().find(|b| b["level"] == level).unwrap();
            match e["band"]["status"].as_str().unwrap() {
                "ok" => {
                    for k in ["hard_threshold", "soft_threshold", "auto_rejected", "review", "auto_accepted", "defects_auto_accepted", "good_auto_rejected"] {
                        close(&mut errs, &format!("{name} {level} band {k}"), &band[k], &e["band"][k]);
                    }
                }
                "incompatible" => {
                    incompatible += 1;
                    let reason = band["reason"].as_str().unwrap_or_default();
                    if !reason.starts_with("incompatible budgets") || !band["review"].is_null() {
                        errs.push(format!("{name} {level}: expected the incompatible-budgets message, got {band}"));
                    }
                }
                _ => {
                    if !band["reason"].is_string() || !band["review"].is_null() {
                        errs.push(format!("{name} {level}: expected an undefined band with a reason, got {band}"));
                    }
                }
            }
        }
        if case["expected"]["pixel"]["band"]["status"] == "incompatible" {
            let md = std::fs::read_to_string(root.join(format!("results/{name}/tables.md"))).unwrap();
            assert!(md.contains("| incompatible budgets |") && md.contains("**incompatible budgets**"), "{name}: tables.md says so:\n{md}");
        }
    }
    assert!(incompatible >= 2, "the crossing case is incompatible at both levels");
    assert!(errs.is_empty(), "{} mismatches:\n{}", errs.len(), errs.join("\n"));
}

/// `cfg` run in `n` shard processes per round, merged after each.
fn sharded(root: &Path, cfg: &str, out: &str, n: usize) {
    let o = bench(&["run", cfg, "--rounds"], root);
    assert!(o.status.success(), "{}", stderr(&o));
    let rounds: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    for _ in 0..rounds {
        let kids: Vec<_> = (0..n)
            .map(|i| cmd(&["run", cfg, "--shard", &format!("{i}/{n}")], root).stderr(std::process::Stdio::piped()).spawn().unwrap())
            .collect();
        for k in kids {
            let o = k.wait_with_output().unwrap();
            assert!(o.status.success(), "shard failed: {}", stderr(&o));
        }
        let o = bench(&["merge", out], root);
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

#[test]
fn sharded_operating_points_equal_the_single_run() {
    let fx = fixture();
    let case = &fx["cases"][1]; // ties, top-k image scores
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    // with val (thresholds from val) and without (chosen on test: leakage)
    for (name, splits) in [("withval", &["val", "test"][..]), ("noval", &["test"][..])] {
        let cfg = write_case(root, case, splits, name);
        let o = bench(&["run", &cfg], root);
        assert!(o.status.success(), "{}", stderr(&o));
        let single = std::fs::read(root.join(format!("results/{name}/results.json"))).unwrap();
        let single_md = std::fs::read(root.join(format!("results/{name}/tables.md"))).unwrap();
        let text = std::fs::read_to_string(root.join(&cfg)).unwrap();
        let scfg = format!("{name}_sh.toml");
        std::fs::write(root.join(&scfg), text.replace(&format!("name = \"{name}\""), &format!("name = \"{name}\"\noutput = \"sh\""))).unwrap();
        sharded(root, &scfg, &format!("sh/{name}"), 3);
        let merged: PathBuf = root.join(format!("sh/{name}"));
        assert!(std::fs::read(merged.join("results.json")).unwrap() == single, "{name}: sharded results.json differs");
        assert!(std::fs::read(merged.join("tables.md")).unwrap() == single_md, "{name}: sharded tables.md differs");
        let r: Value = serde_json::from_slice(&single).unwrap();
        let h = &r["honest"][0];
        assert_eq!(h["threshold_split"], if splits.len() == 1 { "test" } else { "val" });
        assert!(h["points"].as_array().unwrap().iter().any(|p| p["level"] == "image" && p["rule"] == "far_at_frr" && p["threshold"].is_number()));
    }
}

#[test]
fn far_budget_of_one_is_refused() {
    let fx = fixture();
    let t = tempfile::tempdir().unwrap();
    let cfg = write_case(t.path(), &fx["cases"][0], &["test"], "c");
    let text = std::fs::read_to_string(t.path().join(&cfg)).unwrap();
    let text = text.lines().map(|l| if l.starts_with("far = ") { "far = [1.0]".to_string() } else { l.to_string() }).collect::<Vec<_>>().join("\n");
    std::fs::write(t.path().join(&cfg), text).unwrap();
    let o = bench(&["run", &cfg], t.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("metrics.far") && stderr(&o).contains("below 1"), "{}", stderr(&o));
}
