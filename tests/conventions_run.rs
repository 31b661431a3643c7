//! `[metrics]` convention keys in `bench run`, and sweeps of external score
//! maps only (no logits anywhere).

mod common;
#[allow(unused_imports)]
use common::*;

use std::path::PathBuf;
use std::process::Output;



const CONFIG: &str = r#"
name = "demo"
dataset = "datasets/demo"
methods = ["max_logit", "msp"]
device = "cpu"

[[models]]
id = "deeplab_r50"
name = "DeepLabV3+ R50"
"#;

struct Ws {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Ws {
    fn new() -> Ws {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let o = bench(&["synth", "--out", "datasets/demo", "--images", "6", "--models", "deeplab_r50:f32:0.6", "--drifted", "none"], &root);
        assert!(o.status.success(), "{}", stderr(&o));
        Ws { _t: t, root }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn run(&self, cfg: &str) -> Output {
        std::fs::write(self.p("sweep.toml"), cfg).unwrap();
        bench(&["run", "sweep.toml"], &self.root)
    }
    fn results(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.p("results/demo/results.json")).unwrap()).unwrap()
    }
}

fn with_metrics(extra: &str) -> String {
    format!("{CONFIG}\n[metrics]\n{extra}\n")
}

#[test]
fn metric_switches_reach_the_cells_and_are_recorded() {
    let ws = Ws::new();
    let o = ws.run(CONFIG);
    assert!(o.status.success(), "{}", stderr(&o));
    let base = ws.results();
    assert!(base["conventions"].get("aupr").is_none() && base["conventions"].get("convention").is_none(), "defaults add no keys");

    let o = ws.run(&with_metrics("aupr = \"trapezoid\"\nfpr95 = \"nearest\""));
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ws.results();
    assert_eq!(r["conventions"]["aupr"], "trapezoid");
    assert_eq!(r["conventions"]["fpr95"], "nearest");
    let (a, b) = (&base["cells"][0], &r["cells"][0]);
    assert_eq!(a["auroc"], b["auroc"]);
    assert_ne!(a["aupr"], b["aupr"], "trapezoid differs from the step sum");
    let tables = std::fs::read_to_string(ws.p("results/demo/tables.md")).unwrap();
    assert!(tables.contains("FPR95 rule `nearest`, AUPR `trapezoid`"), "{tables}");

    // a preset, with an explicit key over it
    let o = ws.run(&with_metrics("convention = \"smiyc\"\nfpr95 = \"interp\""));
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ws.results();
    assert_eq!(r["conventions"]["convention"], "smiyc");
    assert_eq!(r["conventions"]["score_precision"], "f16");
    assert_eq!(r["conventions"]["fpr95"], "interp");
    let tables = std::fs::read_to_string(ws.p("results/demo/tables.md")).unwrap();
    assert!(tables.contains("scores rounded to `f16`") && tables.contains("(convention `smiyc`)"), "{tables}");
}

#[test]
fn switches_bench_run_cannot_compute_are_errors_naming_the_key() {
    let ws = Ws::new();
    for (m, needle) in [
        ("positive = \"both\"", "both"),
        ("binning = \"uniform\"", "unknown binning"),
        ("convention = \"nope\"", "nope"),
        ("fpr95 = \"median\"", "median"),
    ] {
        let o = ws.run(&with_metrics(m));
        assert_eq!(o.status.code(), Some(2), "{m}");
        let e = stderr(&o);
        assert!(e.contains(needle) && e.lines().count() == 1, "{m}: {e}");
    }
    for (m, needle) in [
        ("[method.gen]\ngamma = 0.0", "method.gen.gamma"),
        ("[method.gen]\ngamma = 2.5", "method.gen.gamma"),
        ("[method.gen]\ntop_m = 0", "method.gen.top_m"),
        ("[method.gen]\ntopm = 3", "topm"),
        ("[method.margin]\non = \"prob\"", "method.margin.on"),
    ] {
        let o = ws.run(&format!("{CONFIG}\n{m}\n"));
        assert_eq!(o.status.code(), Some(2), "{m}");
        let e = stderr(&o);
        assert!(e.contains(needle) && e.lines().count() == 1, "{m}: {e}");
    }
    // u16 on scores outside [0, 1] (max_logit is not a probability)
    let o = ws.run(&with_metrics("score_precision = \"u16\""));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("score_precision") && stderr(&o).contains("[0, 1]"), "{}", stderr(&o));
}

/// `[method.gen]` / `[method.margin]` change the scores and are recorded in
/// results.json's conventions (only for methods in the sweep).
#[test]
fn method_parameters_are_used_and_recorded() {
    let ws = Ws::new();
    let cfg = CONFIG.replace(r#"["max_logit", "msp"]"#, r#"["gen", "margin"]"#);
    let o = ws.run(&cfg);
    assert!(o.status.success(), "{}", stderr(&o));
    let base = ws.results();
    assert_eq!(base["conventions"]["gen_variant"], "γ = 0.1, all classes");
    assert_eq!(base["conventions"]["margin_variant"], "top-1 − top-2 logit, negated");
    let o = ws.run(&format!("{cfg}\n[method.gen]\ngamma = 0.5\ntop_m = 3\n\n[method.margin]\non = \"probs\"\n"));
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ws.results();
    assert_eq!(r["conventions"]["gen_variant"], "γ = 0.5, the top 3 classes (M)");
    assert_eq!(r["conventions"]["margin_variant"], "top-1 − top-2 softmax probability (T = 1), negated");
    for i in 0..2 {
        assert_eq!(base["cells"][i]["method"], r["cells"][i]["method"]);
        assert_ne!(base["cells"][i]["aupr"], r["cells"][i]["aupr"], "{}", r["cells"][i]["method"]);
    }
    let o = ws.run(CONFIG);
    assert!(o.status.success());
    assert!(ws.results()["conventions"].get("gen_variant").is_none(), "recorded only when gen is in the sweep");
}

#[test]
fn external_maps_only_need_no_logits() {
    use bench::scores::{Method, ScorePlan, Scorer, cpu::CpuScorer};
    let ws = Ws::new();
    let o = ws.run(CONFIG);
    assert!(o.status.success(), "{}", stderr(&o));
    let with_logits = ws.results();
    let plan = ScorePlan { methods: vec![Method::MaxLogit], msp_temperature: 1.0, energy_temperature: 1.0, calibration: None, sml_post: Default::default(), heat_post: Default::default(), params: Default::default() };
    for split in ["calibration", "val", "test"] {
        let ldir = ws.p(&format!("datasets/demo/{split}/logits/deeplab_r50"));
        if !ldir.is_dir() {
            continue;
        }
        let out = ws.p(&format!("datasets/demo/{split}/scores/ext_ml"));
        std::fs::create_dir_all(&out).unwrap();
        for e in std::fs::read_dir(&ldir).unwrap() {
            let p = e.unwrap().path();
            let maps = CpuScorer.score(&bench::data::read_logits(&p).unwrap(), &plan).unwrap();
            bench::data::npy::write_npy_f32(&out.join(p.file_name().unwrap()), &[maps.h as u64, maps.w as u64], &maps.maps[0]).unwrap();
        }
        std::fs::remove_dir_all(ws.p(&format!("datasets/demo/{split}/logits"))).unwrap();
    }
    let cfg = CONFIG.replace("methods = [\"max_logit\", \"msp\"]", "methods = []\nexternal = [\"ext_ml\"]");
    let o = ws.run(&cfg);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ws.results();
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("method");
        v
    };
    let ml: Vec<_> = with_logits["cells"].as_array().unwrap().iter().filter(|c| c["method"] == "max_logit").map(strip).collect();
    let ext: Vec<_> = r["cells"].as_array().unwrap().iter().map(strip).collect();
    assert!(!ml.is_empty());
    assert_eq!(ml, ext, "external max-logit maps without logits give the built-in cells");
    assert_eq!(r["models"][0]["dtype"], "none");
}

/// Write `<split>/scores/<dir>/<stem>.npy` = the CPU max-logit maps.
fn dump_max_logit(ws: &Ws, split: &str, dir: &str) -> PathBuf {
    use bench::scores::{Method, ScorePlan, Scorer, cpu::CpuScorer};
    let plan = ScorePlan { methods: vec![Method::MaxLogit], msp_temperature: 1.0, energy_temperature: 1.0, calibration: None, sml_post: Default::default(), heat_post: Default::default(), params: Default::default() };
    let out = ws.p(&format!("datasets/demo/{split}/scores/{dir}"));
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(ws.p(&format!("datasets/demo/{split}/logits/deeplab_r50"))).unwrap() {
        let p = e.unwrap().path();
        let maps = CpuScorer.score(&bench::data::read_logits(&p).unwrap(), &plan).unwrap();
        bench::data::npy::write_npy_f32(&out.join(p.file_name().unwrap()), &[maps.h as u64, maps.w as u64], &maps.maps[0]).unwrap();
    }
    out
}

#[test]
fn per_image_average_in_run_equals_eval() {
    let ws = Ws::new();
    let o = ws.run(&with_metrics("convention = \"streethazards\""));
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ws.results();
    assert_eq!(r["conventions"]["average"], "images");
    assert_eq!(r["conventions"]["fpr95"], "nearest");
    let cell = r["cells"].as_array().unwrap().iter().find(|c| c["method"] == "max_logit" && c["split"] == "test").unwrap().clone();
    assert!(cell["threshold"].is_null(), "no single threshold attains a mean F1");
    let scores = dump_max_logit(&ws, "test", "ml_dump");
    let o = bench(
        &["eval", "--convention", "streethazards", "--json", "--scores", scores.to_str().unwrap(), "--labels", ws.p("datasets/demo/test/labels").to_str().unwrap()],
        &ws.root,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["auroc", "aupr", "fpr95", "f1"] {
        assert_eq!(cell[k], e[k], "{k}: bench run and bench eval disagree");
    }
    assert_eq!(cell["per_image"]["averaged"], e["images_averaged"]);
    assert_eq!(cell["per_image"]["skipped"], e["images_skipped"]);
    let pooled = {
        let o = ws.run(CONFIG);
        assert!(o.status.success());
        ws.results()["cells"].as_array().unwrap().iter().find(|c| c["method"] == "max_logit" && c["split"] == "test").unwrap().clone()
    };
    assert_ne!(pooled["aupr"], cell["aupr"], "per-image means differ from pooled pixels");
    let tables = std::fs::read_to_string(ws.p("results/demo/tables.md")).unwrap();
    assert!(!tables.contains("per-image"), "default footer unchanged");
}

/// `metrics.binning = "smiyc"` in bench run: the test cells carry SMIYC's
/// binned metric equal to `bench eval --binning smiyc` on the same score
/// maps, labelled approximate; the exact cells are unchanged; a 2-shard run
/// gives the same results.json.
#[test]
fn smiyc_binning_in_run_equals_eval() {
    let ws = Ws::new();
    let o = ws.run(CONFIG);
    assert!(o.status.success(), "{}", stderr(&o));
    let plain = ws.results();
    let cfg = with_metrics("binning = \"smiyc\"");
    let o = ws.run(&cfg);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ws.results();
    let local = std::fs::read(ws.p("results/demo/results.json")).unwrap();
    let test_ml = |v: &serde_json::Value| v["cells"].as_array().unwrap().iter().find(|c| c["method"] == "max_logit" && c["split"] == "test").unwrap().clone();
    let mut cell = test_ml(&r);
    let b = cell.as_object_mut().unwrap().remove("binned").expect("test cell has `binned`");
    assert_eq!(cell, test_ml(&plain), "the exact figures do not move");
    assert_eq!((b["binning"].as_str(), b["approximate"].as_bool(), b["bins_per_frame"].as_u64()), (Some("smiyc"), Some(true), Some(768)));
    assert!(r["cells"].as_array().unwrap().iter().filter(|c| c["split"] == "val").all(|c| c.get("binned").is_none()), "val cells have none");
    let scores = dump_max_logit(&ws, "test", "ml_dump");
    let o = bench(&["eval", "--binning", "smiyc", "--json", "--scores", scores.to_str().unwrap(), "--labels", ws.p("datasets/demo/test/labels").to_str().unwrap()], &ws.root);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["auroc", "aupr", "fpr95", "best_f1", "best_f1_threshold", "curve_points"] {
        assert!(b[k].is_number(), "{k}: {b}");
        assert_eq!(b[k], e[k], "{k}: bench run and bench eval --binning smiyc disagree");
    }
    assert_ne!(b["aupr"], cell["aupr"], "binned differs from the exact AUPR");
    let tables = std::fs::read_to_string(ws.p("results/demo/tables.md")).unwrap();
    assert!(tables.contains("SMIYC binned pixel metric (approximate)") && tables.contains("**Approximate by design**"), "{tables}");
    // sharded: the curves travel in the pass states and absorb in order
    std::fs::write(ws.p("sweep.toml"), cfg.replace("name = \"demo\"", "name = \"demo\"\noutput = \"sharded\"")).unwrap();
    let o = bench(&["run", "sweep.toml", "--rounds"], &ws.root);
    let rounds: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    for _ in 0..rounds {
        for i in 0..2 {
            let o = bench(&["run", "sweep.toml", "--shard", &format!("{i}/2")], &ws.root);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = bench(&["merge", "sharded/demo"], &ws.root);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(ws.p("sharded/demo/results.json")).unwrap(), local, "sharded results.json differs");
}

#[test]
fn all_conventions_writes_a_stable_conventions_md_equal_to_eval() {
    let ws = Ws::new();
    let o = ws.run(CONFIG);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!ws.p("results/demo/conventions.md").exists(), "off by default");
    let cfg = with_metrics("all_conventions = true");
    std::fs::write(ws.p("sweep.toml"), &cfg).unwrap();
    let run = |threads: &str| {
        let o = cmd(&["run", "sweep.toml"], &ws.root).env("RAYON_NUM_THREADS", threads).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read_to_string(ws.p("results/demo/conventions.md")).unwrap()
    };
    let (a, b) = (run("1"), run("2"));
    assert_eq!(a, b, "conventions.md is byte-stable");
    let r = ws.results();
    let cell = r["cells"].as_array().unwrap().iter().find(|c| c["method"] == "max_logit" && c["split"] == "test").unwrap().clone();
    let sec = a.split("\n## ").find(|s| s.starts_with("DeepLabV3+ R50 — Simple Max Logits")).unwrap_or_else(|| panic!("{a}"));
    let row = |name: &str| sec.lines().find(|l| l.starts_with(&format!("| {name} |"))).unwrap_or_else(|| panic!("{name}: {sec}")).to_string();
    let cols = |l: &str| l.split('|').map(|x| x.trim().to_string()).collect::<Vec<_>>();
    let sk = cols(&row("sklearn"));
    assert_eq!(sk[2], format!("{:.4}", 100.0 * cell["auroc"].as_f64().unwrap()));
    assert_eq!(sk[3], format!("{:.4}", 100.0 * cell["aupr"].as_f64().unwrap()));
    assert!(row("bravo").contains("[0, 1]"), "max_logit is no probability: {}", row("bravo"));
    // the same rows as bench eval --all-conventions on the dumped maps
    let scores = dump_max_logit(&ws, "test", "ml_dump");
    let o = bench(
        &["eval", "--all-conventions", "--json", "--scores", scores.to_str().unwrap(), "--labels", ws.p("datasets/demo/test/labels").to_str().unwrap()],
        &ws.root,
    );
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", stderr(&o)));
    let mut compared = 0;
    for x in e.as_array().unwrap() {
        let name = x["convention"].as_str().unwrap();
        if name == "bravo" {
            continue;
        }
        let c = cols(&row(name));
        for (k, key) in ["auroc", "aupr", "fpr95", "f1"].iter().enumerate() {
            assert_eq!(c[2 + k], format!("{:.4}", 100.0 * x[key].as_f64().unwrap()), "{name} {key}");
            compared += 1;
        }
    }
    assert_eq!(compared, 36);
}

#[test]
fn eval_regions_equal_the_run_cells() {
    let ws = Ws::new();
    let o = ws.run(&with_metrics("regions = true\ncomponent_track = \"obstacle\""));
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ws.results();
    let cell = r["cells"].as_array().unwrap().iter().find(|c| c["method"] == "max_logit" && c["split"] == "test").unwrap().clone();
    assert!(cell["aupro"].is_number(), "{cell}");
    let scores = dump_max_logit(&ws, "test", "ml_dump");
    let labels = ws.p("datasets/demo/test/labels");
    let eval = |extra: &[&str]| {
        let mut a = vec!["eval", "--json", "--regions", "--component-track", "obstacle", "--scores", scores.to_str().unwrap(), "--labels", labels.to_str().unwrap()];
        a.extend_from_slice(extra);
        let o = bench(&a, &ws.root);
        assert!(o.status.success(), "{}", stderr(&o));
        (serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap(), stderr(&o))
    };
    // the val threshold of bench run, given explicitly: no leakage
    let t = cell["components"]["threshold"].as_f64().unwrap();
    let (e, err) = eval(&["--component-threshold", &format!("{}", t as f32)]);
    assert_eq!(e["aupro"], cell["aupro"]);
    assert_eq!(e["regions"], cell["regions"]);
    for k in ["siou", "ppv", "mean_f1"] {
        assert_eq!(e["components"][k], cell["components"][k], "{k}");
    }
    assert_eq!(e["components"]["leakage"], false);
    assert!(!err.contains("leakage"), "{err}");
    // default threshold: the split's own best F1, flagged
    let (e, err) = eval(&[]);
    assert_eq!(e["components"]["leakage"], true);
    assert_eq!(e["components"]["threshold"].as_f64(), e["threshold"].as_f64());
    assert!(err.contains("leakage"), "{err}");
    let (e, _) = eval(&["--aupro-fpr", "1.0"]);
    assert_ne!(e["aupro"], cell["aupro"], "the FPR limit is a parameter");
}

#[test]
fn normal_positive_presets_in_run_equal_eval() {
    let ws = Ws::new();
    let scores = dump_max_logit(&ws, "test", "ml_dump");
    for preset in ["ood-metrics", "openood", "pytorch-ood-seg"] {
        let o = ws.run(&with_metrics(&format!("convention = \"{preset}\"")));
        assert!(o.status.success(), "{preset}: {}", stderr(&o));
        let r = ws.results();
        assert_eq!(r["conventions"]["positive"], "normal");
        let cell = r["cells"].as_array().unwrap().iter().find(|c| c["method"] == "max_logit" && c["split"] == "test").unwrap().clone();
        let o = bench(
            &["eval", "--convention", preset, "--json", "--scores", scores.to_str().unwrap(), "--labels", ws.p("datasets/demo/test/labels").to_str().unwrap()],
            &ws.root,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for k in ["auroc", "aupr", "fpr95", "f1", "aupr_in", "fpr95_in"] {
            assert!(cell[k].is_number(), "{preset} {k}: {cell}");
            assert_eq!(cell[k], e[k], "{preset} {k}: bench run and bench eval disagree");
        }
    }
}

#[test]
fn sharded_convention_runs_equal_the_single_run() {
    // per-image means and the normal-positive statistic merge exactly
    let ws = Ws::new();
    // with the per-image bootstrap, whose draws shards must not change
    let cfg = with_metrics("convention = \"pytorch-ood-seg\"\nbootstrap = 40");
    let o = ws.run(&cfg);
    assert!(o.status.success(), "{}", stderr(&o));
    let single = std::fs::read(ws.p("results/demo/results.json")).unwrap();
    let tables = std::fs::read(ws.p("results/demo/tables.md")).unwrap();
    let sharded = cfg.replacen("name = \"demo\"", "name = \"demo\"\noutput = \"out2\"", 1);
    std::fs::write(ws.p("s2.toml"), &sharded).unwrap();
    let o = bench(&["run", "s2.toml", "--rounds"], &ws.root);
    let rounds: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    for _ in 0..rounds {
        for i in 0..2 {
            let o = bench(&["run", "s2.toml", "--shard", &format!("{i}/2")], &ws.root);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = bench(&["merge", "out2/demo"], &ws.root);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(ws.p("out2/demo/results.json")).unwrap(), single);
    let r: serde_json::Value = serde_json::from_slice(&single).unwrap();
    let test: Vec<&serde_json::Value> = r["cells"].as_array().unwrap().iter().filter(|c| c["split"] == "test").collect();
    assert!(!test.is_empty());
    for c in test {
        let b = &c["bootstrap"];
        assert_eq!(b["samples"], 40, "{c}");
        let [lo, hi] = [b["auroc"][0].as_f64().unwrap(), b["auroc"][1].as_f64().unwrap()];
        let point = c["auroc"].as_f64().unwrap();
        assert!(lo <= hi && (0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi), "{b}");
        // the per-image mean of the full sample is inside its own 95 % interval here
        assert!(lo - 1e-12 <= point && point <= hi + 1e-12, "auroc {point} outside [{lo}, {hi}]");
    }
    assert_eq!(std::fs::read(ws.p("out2/demo/tables.md")).unwrap(), tables);
    // all_conventions sharded (two more rounds) gives the single run's files
    let single_cfg = with_metrics("all_conventions = true").replacen("name = \"demo\"", "name = \"demo\"\noutput = \"out4\"", 1);
    std::fs::write(ws.p("s4.toml"), &single_cfg).unwrap();
    let o = bench(&["run", "s4.toml"], &ws.root);
    assert!(o.status.success(), "{}", stderr(&o));
    let s3 = with_metrics("all_conventions = true").replacen("name = \"demo\"", "name = \"demo\"\noutput = \"out3\"", 1);
    std::fs::write(ws.p("s3.toml"), s3).unwrap();
    let o = bench(&["run", "s3.toml", "--rounds"], &ws.root);
    let rounds3: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(rounds3, rounds + 2, "all_conventions adds its two passes to the plan");
    for _ in 0..rounds3 {
        for i in 0..2 {
            let o = bench(&["run", "s3.toml", "--shard", &format!("{i}/2")], &ws.root);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = bench(&["merge", "out3/demo"], &ws.root);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for f in ["results.json", "tables.md", "conventions.md"] {
        let a = std::fs::read(ws.p("out4/demo").join(f)).unwrap();
        assert_eq!(std::fs::read(ws.p("out3/demo").join(f)).unwrap(), a, "{f}: sharded all_conventions differs from the single run");
    }
}

/// numpy's `percentile(v, 100 q)` (linear) of unsorted `v`, written out
/// here (not the crate's `np_percentile`) so the oracle is independent.
fn percentile_linear(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let h = (v.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// Per image of `split` (sorted ids) per method (max_logit, msp): its
/// exact (AUROC, AUPR, FPR95, best F1), None without both classes.
fn per_image_oracle(ws: &Ws, split: &str) -> Vec<[Option<[f64; 4]>; 2]> {
    use bench::metrics::{AuprRule, Fpr95Rule, counts_of};
    use bench::scores::{Method, ScorePlan, Scorer, cpu::CpuScorer};
    let plan = ScorePlan { methods: vec![Method::MaxLogit, Method::Msp], msp_temperature: 1.0, energy_temperature: 1.0, calibration: None, sml_post: Default::default(), heat_post: Default::default(), params: Default::default() };
    let lm = bench::data::LabelMap::new(vec![1], vec![255]).unwrap();
    let mut stems: Vec<String> = std::fs::read_dir(ws.p(&format!("datasets/demo/{split}/labels"))).unwrap().map(|e| e.unwrap().path().file_stem().unwrap().to_str().unwrap().to_string()).collect();
    stems.sort();
    stems
        .iter()
        .map(|s| {
            let lab = lm.apply(&bench::data::mask::read_mask(&ws.p(&format!("datasets/demo/{split}/labels/{s}.png"))).unwrap());
            let maps = CpuScorer.score(&bench::data::read_logits(&ws.p(&format!("datasets/demo/{split}/logits/deeplab_r50/{s}.npy"))).unwrap(), &plan).unwrap();
            [0, 1].map(|m| {
                let c = counts_of(&maps.maps[m], &lab);
                c.defined().then(|| [c.auroc().unwrap(), c.aupr(AuprRule::Ap).unwrap(), c.fpr_at_tpr(0.95, Fpr95Rule::First).unwrap(), c.best_f1().unwrap().0])
            })
        })
        .collect()
}

/// Replicate r's mean of each figure over the drawn images with both classes
/// (an image drawn twice counts twice), per method; None when none drawn.
fn oracle_means(v: &[[Option<[f64; 4]>; 2]], draw: &[usize]) -> [Option<[f64; 4]>; 2] {
    [0, 1].map(|m| {
        let got: Vec<[f64; 4]> = draw.iter().filter_map(|&i| v[i][m]).collect();
        (!got.is_empty()).then(|| [0, 1, 2, 3].map(|k| got.iter().map(|x| x[k]).sum::<f64>() / got.len() as f64))
    })
}

fn close_ci(got: &serde_json::Value, want: [f64; 2], what: &str) {
    let g = [got[0].as_f64().unwrap_or_else(|| panic!("{what}: {got}")), got[1].as_f64().unwrap()];
    assert!((g[0] - want[0]).abs() <= 1e-12 && (g[1] - want[1]).abs() <= 1e-12, "{what}: {g:?} vs oracle {want:?}");
}

/// `average = "images"`: the paired method differences (`bootstrap_diff`)
/// and the drift changes of the per-image means match an oracle that
/// recomputes every image's metrics from the maps, resamples them with
/// the same draws and takes numpy's percentiles; one test image without
/// anomaly pixels is skipped (on test only: the drifted copy keeps it).
#[test]
fn per_image_average_differences_and_drift_changes_match_an_oracle() {
    let t = tempfile::tempdir().unwrap();
    let ws = Ws { root: t.path().to_path_buf(), _t: t };
    let o = bench(&["synth", "--out", "datasets/demo", "--images", "8", "--models", "deeplab_r50:f32:0.6", "--drifted", "lighting=0.85", "--no-photos"], &ws.root);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(ws.p("datasets/demo/test/labels").is_dir() && !ws.p("datasets/demo/test/images").exists(), "--no-photos wrote photos");
    // test image 0 without anomaly pixels (anomaly → normal): undefined there
    let labels = ws.p("datasets/demo/test/labels");
    let mut first: Vec<_> = std::fs::read_dir(&labels).unwrap().map(|e| e.unwrap().path()).collect();
    first.sort();
    let m = bench::data::mask::read_mask(&first[0]).unwrap();
    let px: Vec<u8> = m.values.iter().map(|&v| if v == 1 { 0 } else { v as u8 }).collect();
    let mut enc = png::Encoder::new(std::fs::File::create(&first[0]).unwrap(), m.w as u32, m.h as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.write_header().unwrap().write_image_data(&px).unwrap();
    let (samples, seed) = (60u32, 7u64);
    let cfg = format!("anomaly = [1]\nignore = [255]\n{CONFIG}\n[metrics]\naverage = \"images\"\nbootstrap = {samples}\nbootstrap_seed = {seed}\n");
    let o = ws.run(&cfg);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ws.results();
    let (clean, drifted) = (per_image_oracle(&ws, "test"), per_image_oracle(&ws, "test@lighting"));
    assert!(clean[0][0].is_none() && drifted[0][0].is_some(), "the edit made test image 0 undefined");
    let n = clean.len();
    let reps: Vec<_> = (0..samples).map(|i| bench::metrics::bootstrap::draws(seed, i, n)).map(|d| (oracle_means(&clean, &d), oracle_means(&drifted, &d))).collect();
    let ci = |v: Vec<f64>| [percentile_linear(v.clone(), 0.025), percentile_linear(v, 0.975)];
    // max_logit − msp on test
    let d = r["bootstrap_diff"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0]["a"].as_str(), d[0]["b"].as_str()), (Some("max_logit"), Some("msp")));
    let both: Vec<([f64; 4], [f64; 4])> = reps.iter().filter_map(|(c, _)| Some((c[0]?, c[1]?))).collect();
    assert_eq!(d[0]["defined"].as_u64(), Some(both.len() as u64));
    for (k, name) in ["auroc", "aupr", "fpr95", "f1"].iter().enumerate() {
        close_ci(&d[0][name], ci(both.iter().map(|(a, b)| a[k] - b[k]).collect()), &format!("Δ {name}"));
        assert_eq!(d[0]["error_bound"][name].as_f64(), Some(0.0), "exact: bound 0");
        // the cells' own intervals, on the same replicates
        let cell = r["cells"].as_array().unwrap().iter().find(|c| c["method"] == "max_logit" && c["split"] == "test").unwrap();
        close_ci(&cell["bootstrap"][name], ci(reps.iter().filter_map(|(c, _)| Some(c[0]?[k])).collect()), &format!("cell {name}"));
    }
    assert!(d[0]["auroc"][0].as_f64() != d[0]["auroc"][1].as_f64(), "a degenerate interval tests nothing");
    // drift: drifted − clean of each method's per-image means, same draws
    for (m, method) in ["max_logit", "msp"].iter().enumerate() {
        let row = r["drift_splits"].as_array().unwrap().iter().find(|x| x["method"] == *method && x["split"] == "test@lighting").unwrap();
        for (k, name) in ["auroc", "aupr", "fpr95", "f1"].iter().enumerate() {
            let md = row["metrics"].as_array().unwrap().iter().find(|x| x["metric"] == *name && x["level"] == "pixel").unwrap();
            let mean = |v: &[[Option<[f64; 4]>; 2]]| v.iter().filter_map(|x| x[m]).map(|x| x[k]).sum::<f64>() / v.iter().filter(|x| x[m].is_some()).count() as f64;
            let (b, dr) = (md["baseline"].as_f64().unwrap(), md["drifted"].as_f64().unwrap());
            assert!((b - mean(&clean)).abs() < 1e-12 && (dr - mean(&drifted)).abs() < 1e-12, "{method} {name}: {b} {dr} vs image means {} {}", mean(&clean), mean(&drifted));
            assert!(md["note"].is_null(), "{md}");
            close_ci(&md["interval"], ci(reps.iter().filter_map(|(c, dd)| Some(dd[m]?[k] - c[m]?[k])).collect()), &format!("{method} Δ{name} drift"));
        }
    }
    let tables = std::fs::read_to_string(ws.p("results/demo/tables.md")).unwrap();
    assert!(tables.contains("Paired bootstrap differences") && tables.contains("Δ F1"), "{tables}");
    // per-image means have no image-AUROC or FRR differences: no n/a columns
    assert!(!tables.contains("Δ pixel FRR") && !tables.contains("Δ image AUROC") && !tables.contains("own val threshold"), "{tables}");
    assert!(!tables.contains("not implemented there") && !std::fs::read_to_string(ws.p("results/demo/results.json")).unwrap().contains("not implemented there"));
}
