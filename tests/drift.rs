//! Drift sensitivity (issue 17): a drifted copy of test (`test@<name>`)
//! against the numpy oracle of `scripts/gen_drift_fixtures.py`
//! (`tests/fixtures/drift/`), the paired changes of an identical copy, a
//! dataset without drifted splits, bad drifted splits, and `bench drift`
//! over three runs (table, flags, plot, determinism, errors).

mod common;
#[allow(unused_imports)]
use common::*;

use serde_json::Value;
use std::path::{Path, PathBuf};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/drift");

/// A temp folder holding a copy of the fixture dataset and its config.
struct Ws {
    _t: tempfile::TempDir,
    root: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = to.join(e.file_name());
        if e.path().is_dir() { copy_dir(&e.path(), &p) } else { std::fs::copy(e.path(), &p).map(|_| ()).unwrap() }
    }
}

impl Ws {
    fn new() -> Ws {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        copy_dir(&Path::new(FIX).join("dataset"), &root.join("ds"));
        let ws = Ws { _t: t, root };
        ws.config("run.toml", "ds", "r");
        ws
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn config(&self, file: &str, dataset: &str, name: &str) {
        let text = format!(
            "name = \"{name}\"\ndataset = \"{dataset}\"\ndevice = \"cpu\"\nmethods = [\"max_logit\"]\n\n[[models]]\nid = \"m\"\nname = \"M\"\n\n[metrics]\nfar = [0.05]\nfrr = [0.1]\nbootstrap = 60\n"
        );
        std::fs::write(self.p(file), text).unwrap();
    }

    fn run(&self, cfg: &str) -> Output {
        bench(&["run", cfg], &self.root)
    }

    fn json(&self, rel: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.p(rel)).unwrap()).unwrap()
    }
}

use std::process::Output;

fn close(a: &Value, b: &Value, what: &str) {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => assert!((x - y).abs() <= 1e-6, "{what}: bench {x} vs numpy {y}"),
        _ => assert_eq!(a, b, "{what}"),
    }
}

fn find<'a>(rows: &'a Value, f: impl Fn(&Value) -> bool) -> &'a Value {
    rows.as_array().unwrap().iter().find(|r| f(r)).unwrap_or_else(|| panic!("no such row in {rows}"))
}

#[test]
fn drifted_split_matches_the_numpy_oracle() {
    let ws = Ws::new();
    let o = ws.run("run.toml");
    assert!(o.status.success(), "{}", stderr(&o));
    let exp: Value = serde_json::from_str(&std::fs::read_to_string(Path::new(FIX).join("expected.json")).unwrap()).unwrap();
    let r = ws.json("results/r/results.json");
    let rows = r["drift_splits"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "one drifted split × one model × one method");
    let d = &rows[0];
    assert_eq!((d["split"].as_str(), d["baseline"].as_str(), d["threshold_split"].as_str()), (Some("test@shift"), Some("test"), Some("val")));
    for e in exp["metrics"].as_array().unwrap() {
        let g = find(&d["metrics"], |x| x["metric"] == e["metric"] && x["level"] == e["level"]);
        for k in ["baseline", "drifted", "delta"] {
            close(&g[k], &e[k], &format!("{} {} {k}", e["level"], e["metric"]));
        }
    }
    // the test cell agrees with its own metrics row (same numbers, one source)
    let cell = find(&r["cells"], |c| c["split"] == "test");
    close(&find(&d["metrics"], |x| x["metric"] == "auroc" && x["level"] == "pixel")["baseline"], &cell["auroc"], "test auroc");
    let th = d["thresholds"].as_array().unwrap();
    assert_eq!(th.len(), exp["thresholds"].as_array().unwrap().len());
    for (g, e) in th.iter().zip(exp["thresholds"].as_array().unwrap()) {
        assert_eq!((&g["level"], &g["rule"]), (&e["level"], &e["rule"]));
        for k in ["threshold", "baseline_far", "baseline_frr", "drifted_far", "drifted_frr"] {
            close(&g[k], &e[k], &format!("{} {} {k}", e["level"], e["rule"]));
        }
        let shift = g["frr_shift"].as_f64().unwrap();
        close(&g["frr_shift"], &Value::from(e["drifted_frr"].as_f64().unwrap() - e["baseline_frr"].as_f64().unwrap()), "frr shift");
        let [lo, hi] = [0, 1].map(|i| g["frr_shift_interval"][i].as_f64().unwrap());
        assert!(lo <= hi && (lo - 1e-12..=hi + 1e-12).contains(&shift) || lo == hi, "{g}");
    }
    for e in exp["dashboard"].as_array().unwrap() {
        let g = find(&d["dashboard"], |x| x["statistic"] == e["statistic"] && x["level"] == e["level"]);
        for k in ["baseline", "value"] {
            close(&g[k], &e[k], &format!("dashboard {} {} {k}", e["level"], e["statistic"]));
        }
    }
    // a shift this size moves the normal-pixel mean beyond 2σ
    assert_eq!(find(&d["dashboard"], |x| x["statistic"] == "mean" && x["level"] == "pixel")["flagged"], true);
    // the plan counts the drifted split's two passes; every page shows the section
    assert_eq!(stdout(&bench(&["run", "run.toml", "--rounds"], &ws.root)).trim(), "6");
    let md = std::fs::read_to_string(ws.p("results/r/tables.md")).unwrap();
    assert!(md.contains("Drift sensitivity: accuracy under drift") && md.contains("Drift dashboard (2σ rule)"), "{md}");
    let page = std::fs::read_to_string(ws.p("results/r/report.md")).unwrap();
    assert!(page.contains("test@shift") && !page.contains("No simulated-drift split"), "{page}");
    assert!(bench(&["report", "results/r", "--check"], &ws.root).status.success());
}

#[test]
fn identical_copy_changes_nothing_and_no_copy_changes_nothing_else() {
    let ws = Ws::new();
    assert!(ws.run("run.toml").status.success());
    let with = ws.json("results/r/results.json");
    // the drifted copy replaced by an exact copy of test: every paired change is exactly 0
    std::fs::remove_dir_all(ws.p("ds/test@shift")).unwrap();
    copy_dir(&ws.p("ds/test"), &ws.p("ds/test@same"));
    ws.config("same.toml", "ds", "same");
    let o = ws.run("same.toml");
    assert!(o.status.success(), "{}", stderr(&o));
    let d = &ws.json("results/same/results.json")["drift_splits"][0];
    for m in d["metrics"].as_array().unwrap() {
        assert!(m["delta"] == 0.0 || m["baseline"].is_null(), "{m}");
        if !m["interval"].is_null() {
            assert_eq!(m["interval"], serde_json::json!([0.0, 0.0]), "paired: {m}");
        }
    }
    for t in d["thresholds"].as_array().unwrap() {
        assert!(t["far_shift"] == 0.0 && t["frr_shift"] == 0.0, "{t}");
    }
    assert!(d["dashboard"].as_array().unwrap().iter().all(|s| s["flagged"] != true), "{d}");
    // without any drifted split: no section, and everything else as with one
    std::fs::remove_dir_all(ws.p("ds/test@same")).unwrap();
    ws.config("none.toml", "ds", "none");
    assert!(ws.run("none.toml").status.success());
    let text = std::fs::read_to_string(ws.p("results/none/results.json")).unwrap();
    assert!(!text.contains("drift_splits"), "the key is absent without drifted splits");
    let mut without: Value = serde_json::from_str(&text).unwrap();
    let mut with = with;
    with.as_object_mut().unwrap().remove("drift_splits");
    for v in [&mut with, &mut without] {
        v["name"] = "x".into();
    }
    assert_eq!(with, without, "a drifted split adds its section and changes nothing else");
    assert_eq!(stdout(&bench(&["run", "none.toml", "--rounds"], &ws.root)).trim(), "4");
    assert!(!std::fs::read_to_string(ws.p("results/none/tables.md")).unwrap().contains("Drift sensitivity"));
    assert!(std::fs::read_to_string(ws.p("results/none/report.md")).unwrap().contains("No simulated-drift split"));
}

#[test]
fn bad_drifted_splits_are_one_clear_error() {
    let ws = Ws::new();
    std::fs::remove_file(ws.p("ds/test@shift/labels/img_03.npy")).unwrap();
    std::fs::remove_file(ws.p("ds/test@shift/logits/m/img_03.npy")).unwrap();
    let o = ws.run("run.toml");
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("test@shift/labels") && e.contains("img_03") && e.contains("paired by id"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(!ws.p("results/r").exists(), "nothing written");
    std::fs::rename(ws.p("ds/test@shift"), ws.p("ds/test@")).unwrap();
    let e = stderr(&ws.run("run.toml"));
    assert!(e.contains("test@") && e.contains("test@<name>"), "{e}");
}

#[test]
fn bench_drift_over_three_runs() {
    let ws = Ws::new();
    std::fs::remove_dir_all(ws.p("ds/test@shift")).unwrap_or(());
    assert!(ws.run("run.toml").status.success());
    copy_dir(&ws.p("results/r"), &ws.p("results/r2"));
    // "week 3": the test split re-captured under the drift
    copy_dir(&Path::new(FIX).join("dataset"), &ws.p("ds3"));
    std::fs::remove_dir_all(ws.p("ds3/test")).unwrap();
    std::fs::rename(ws.p("ds3/test@shift"), ws.p("ds3/test")).unwrap();
    ws.config("w3.toml", "ds3", "r3");
    assert!(ws.run("w3.toml").status.success());
    let args = ["drift", "results/r", "results/r2", "results/r3", "--plot", "trend.svg"];
    let o = bench(&args, &ws.root);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    let rows: Vec<&str> = t.lines().filter(|l| l.starts_with("| ") && l.contains("m/max_logit")).collect();
    assert_eq!(rows.len(), 3, "one row per run: {t}");
    assert!(!rows[0].contains('⚠') && !rows[1].contains('⚠'), "runs 1 and 2 are the baseline's data: {t}");
    assert!(rows[2].contains('⚠'), "run 3 drifted: {t}");
    assert!(!t.contains("Normal-pixel score drift (a → b)"), "the pairwise table is for two runs");
    let svg = std::fs::read(ws.p("trend.svg")).unwrap();
    assert!(String::from_utf8_lossy(&svg).contains("<svg") && String::from_utf8_lossy(&svg).contains("2σ"));
    // deterministic: the same table and the same plot bytes again
    let o2 = bench(&args, &ws.root);
    assert_eq!(stdout(&o2), t);
    assert_eq!(std::fs::read(ws.p("trend.svg")).unwrap(), svg);
    // two runs: the pairwise table as before, then the dashboard
    let t2 = stdout(&bench(&["drift", "results/r", "results/r3"], &ws.root));
    assert!(t2.contains("Normal-pixel score drift (a → b)") && t2.contains("Drift dashboard over runs"), "{t2}");
    // a missing or invalid folder: one error naming it, exit 2
    let o = bench(&["drift", "results/r", "results/nope", "results/r3"], &ws.root);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("results/nope") && !stderr(&o).contains("panicked"), "{}", stderr(&o));
    std::fs::write(ws.p("results/r2/drift.json"), "{").unwrap();
    let o = bench(&["drift", "results/r", "results/r2"], &ws.root);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("results/r2/drift.json"), "{}", stderr(&o));
    let o = bench(&["drift", "results/r"], &ws.root);
    assert_eq!(o.status.code(), Some(2), "one run is not a trend");
}
