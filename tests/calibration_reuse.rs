//! `calibration.json`: written by `bench run`, reused with the
//! `calibration = "..."` config key. Reuse must reproduce a fitting run
//! exactly (results.json byte-identical but for the sweep name; the reused
//! run's own calibration.json identical to the original), and every bad
//! reuse is one `error:` line naming the file and the model.

mod common;
#[allow(unused_imports)]
use common::*;

use std::path::PathBuf;
use std::process::Output;



struct Ws {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Ws {
    fn new() -> Ws {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let o = bench(&["synth", "--out", "datasets/demo"], &root);
        assert!(o.status.success(), "{}", stderr(&o));
        Ws { _t: t, root }
    }
    /// Run a sweep named `name` with `methods`, plus extra top-level lines.
    fn run(&self, name: &str, methods: &str, extra: &str) -> Output {
        let cfg = format!(
            "name = \"{name}\"\ndataset = \"datasets/demo\"\nmethods = {methods}\ndevice = \"cpu\"\n{extra}\n\
             [[models]]\nid = \"deeplab_r50\"\nname = \"R50\"\n\n[[models]]\nid = \"segformer_b5\"\nname = \"B5\"\n\
             [method.sml]\nboundary_suppression = true\n"
        );
        let file = format!("{name}.toml");
        std::fs::write(self.root.join(&file), cfg).unwrap();
        bench(&["run", &file], &self.root)
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
}

const ALL: &str = r#"["max_logit", "sml", "heat", "entropy"]"#;

#[test]
fn reuse_reproduces_the_fitted_run_exactly() {
    let ws = Ws::new();
    let o = ws.run("fit", ALL, "");
    assert!(o.status.success(), "{}", stderr(&o));
    let cal_text = ws.read("results/fit/calibration.json");
    let cal: serde_json::Value = serde_json::from_str(&cal_text).unwrap();
    assert_eq!(cal["format"], "bench-calibration/1");
    let models = cal["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    for m in models {
        let c = m["classes"].as_u64().unwrap() as usize;
        let k = &m["calibration"];
        assert_eq!(k["sml"]["mean"].as_array().unwrap().len(), c);
        assert_eq!(k["sml"]["std"].as_array().unwrap().len(), c);
        assert_eq!(k["sml"]["count"].as_array().unwrap().len(), c);
        assert!(k["sml"]["pooled_fallback"].is_array());
        let h = &k["heat"];
        let kk = h["k"].as_u64().unwrap() as usize;
        assert!(kk >= 1);
        assert_eq!(h["classes"].as_array().unwrap().len(), kk);
        assert_eq!(h["whiten"].as_array().unwrap().len(), c * c);
        assert_eq!(h["centers"].as_array().unwrap().len(), kk * c);
        for f in ["ridge", "el_mean", "el_std", "gmm_mean", "gmm_std"] {
            assert!(h[f].is_f64(), "{f}");
        }
    }
    // reuse: no fitting, identical numbers
    let o = ws.run("reuse", ALL, "calibration = \"results/fit/calibration.json\"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ws.read("results/reuse/calibration.json"), cal_text, "round trip must be exact");
    let a = ws.read("results/fit/results.json").replace("\"fit\"", "\"NAME\"");
    let b = ws.read("results/reuse/results.json").replace("\"reuse\"", "\"NAME\"");
    assert!(a == b, "results.json differs between fitting and reusing the calibration");
    // a sharded run of the reusing config skips the calibration rounds
    let rounds = |cfg: &str| String::from_utf8_lossy(&bench(&["run", cfg, "--rounds"], &ws.root).stdout).trim().to_string();
    // (the demo's drifted copy test@lighting adds two rounds to both)
    assert_eq!((rounds("fit.toml"), rounds("reuse.toml")), ("8".to_string(), "6".to_string()));
    let man: serde_json::Value = serde_json::from_str(&ws.read("results/reuse/manifest.json")).unwrap();
    assert_eq!(man["calibration"], "results/fit/calibration.json");
    let man: serde_json::Value = serde_json::from_str(&ws.read("results/fit/manifest.json")).unwrap();
    assert_eq!(man["calibration"], "fitted");
}

fn one_error_line(o: &Output, must: &[&str]) {
    assert!(!o.status.success());
    let e = stderr(o);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{e}");
    for m in must {
        assert!(lines[0].contains(m), "missing {m:?} in {:?}", lines[0]);
    }
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn bad_reuse_is_one_clear_error() {
    let ws = Ws::new();
    // fitted without HEAT
    let o = ws.run("sml_only", r#"["sml"]"#, "");
    assert!(o.status.success(), "{}", stderr(&o));
    let path = "results/sml_only/calibration.json";
    let o = ws.run("x", ALL, &format!("calibration = \"{path}\""));
    one_error_line(&o, &[path, "deeplab_r50", "HEAT"]);
    assert!(!ws.root.join("results/x").exists(), "nothing written on error");

    let orig: serde_json::Value = serde_json::from_str(&ws.read(path)).unwrap();
    let write = |name: &str, v: &serde_json::Value| {
        let p = format!("{name}.json");
        std::fs::write(ws.root.join(&p), serde_json::to_string(v).unwrap()).unwrap();
        p
    };
    // a model missing
    let mut v = orig.clone();
    v["models"].as_array_mut().unwrap().retain(|m| m["model"] != "segformer_b5");
    let p = write("missing", &v);
    one_error_line(&ws.run("x", r#"["sml"]"#, &format!("calibration = \"{p}\"")), &[&p, "segformer_b5"]);
    // class count mismatch (a consistent file for C − 1 classes)
    let mut v = orig.clone();
    for m in v["models"].as_array_mut().unwrap() {
        let c = m["classes"].as_u64().unwrap() as usize - 1;
        m["classes"] = c.into();
        for f in ["mean", "std", "count"] {
            m["calibration"]["sml"][f].as_array_mut().unwrap().truncate(c);
        }
    }
    let p = write("fewer", &v);
    one_error_line(&ws.run("x", r#"["sml"]"#, &format!("calibration = \"{p}\"")), &[&p, "deeplab_r50", "classes"]);
    // inconsistent shapes, not JSON, missing file
    let mut v = orig.clone();
    v["models"][0]["calibration"]["sml"]["std"].as_array_mut().unwrap().pop();
    let p = write("shapes", &v);
    one_error_line(&ws.run("x", r#"["sml"]"#, &format!("calibration = \"{p}\"")), &[&p, "deeplab_r50"]);
    std::fs::write(ws.root.join("junk.json"), "{\"format\": 3").unwrap();
    one_error_line(&ws.run("x", r#"["sml"]"#, "calibration = \"junk.json\""), &["junk.json"]);
    one_error_line(&ws.run("x", r#"["sml"]"#, "calibration = \"nope.json\""), &["nope.json"]);
}
