//! `[[datasets]]`: several datasets in one sweep, one results folder and
//! table set per dataset, each equal to a single-dataset run of it — also
//! when sharded — and config mistakes named.

mod common;
#[allow(unused_imports)]
use common::*;

use std::path::PathBuf;
use std::process::Output;


fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

const HEAD: &str = r#"
methods = ["max_logit", "msp", "sml", "energy", "heat"]
device = "cpu"

[[models]]
id = "deeplab_r50"
name = "DeepLab"

[[models]]
id = "segformer_b5"
name = "SegFormer"
"#;

const MULTI: &str = r#"
[[datasets]]
name = "alpha"
path = "datasets/a"

[[datasets]]
name = "beta"
path = "datasets/b"
anomaly = [1, 2]
"#;

struct Ws {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Ws {
    fn new() -> Ws {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        for (d, extra) in [("datasets/a", vec![]), ("datasets/b", vec!["--anomaly-types", "2"])] {
            let mut a = vec!["synth", "--out", d, "--images", "6", "--height", "40", "--width", "56"];
            a.extend(extra);
            ok(bench(&a, &root));
        }
        Ws { _t: t, root }
    }
    fn write(&self, f: &str, text: &str) {
        std::fs::write(self.root.join(f), text).unwrap();
    }
    fn read(&self, f: &str) -> Vec<u8> {
        std::fs::read(self.root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))
    }
}

/// `top` holds top-level keys, `tables` TOML tables (after the models).
fn config(name: &str, output: &str, top: &str, tables: &str) -> String {
    format!("name = \"{name}\"\noutput = \"{output}\"\n{top}{HEAD}{tables}")
}

#[test]
fn each_dataset_equals_its_own_single_dataset_run_also_sharded() {
    let ws = Ws::new();
    ws.write("multi.toml", &config("multi", "results", "", MULTI));
    let o = ok(bench(&["run", "multi.toml"], &ws.root));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("# alpha") && out.contains("# beta"), "{out}");

    // the same datasets, one sweep each (same name, so results.json is comparable)
    ws.write("a.toml", &config("multi", "single_a", "dataset = \"datasets/a\"\n", ""));
    ws.write("b.toml", &config("multi", "single_b", "dataset = \"datasets/b\"\nanomaly = [1, 2]\n", ""));
    ok(bench(&["run", "a.toml"], &ws.root));
    ok(bench(&["run", "b.toml"], &ws.root));
    for (t, single) in [("alpha", "single_a"), ("beta", "single_b")] {
        for f in ["results.json", "tables.md", "drift.json"] {
            assert!(ws.read(&format!("results/multi/{t}/{f}")) == ws.read(&format!("{single}/multi/{f}")), "{t}/{f}");
        }
    }
    let beta: serde_json::Value = serde_json::from_slice(&ws.read("results/multi/beta/results.json")).unwrap();
    assert_eq!(beta["conventions"]["anomaly_values"], serde_json::json!([1, 2]), "per-dataset label keys apply");

    // one tables.md with every dataset's tables under its name, plot links rebased
    let md = String::from_utf8(ws.read("results/multi/tables.md")).unwrap();
    let (ia, ib) = (md.find("# Dataset `alpha`").unwrap(), md.find("# Dataset `beta`").unwrap());
    assert!(ia < ib, "name order (as `bench table` lists the folder)");
    assert!(!md.contains("](plots/") && md.contains("](alpha/plots/"), "plot links point into the dataset folders");

    // table / diff / --check understand the folder
    let t = String::from_utf8(ok(bench(&["table", "results/multi"], &ws.root)).stdout).unwrap();
    assert!(t.contains("# Dataset `alpha`") && t.contains("# Dataset `beta`"));
    ok(bench(&["diff", "results/multi", "results/multi"], &ws.root));
    let d = String::from_utf8(ok(bench(&["drift", "results/multi", "results/multi"], &ws.root)).stdout).unwrap();
    assert!(d.contains("## Dataset `alpha`") && d.contains("## Dataset `beta`"), "{d}");
    ok(bench(&["run", "multi.toml", "--check"], &ws.root));
    let o = bench(&["diff", "results/multi", "single_a/multi"], &ws.root);
    assert_eq!(o.status.code(), Some(2), "different dataset sets are an error");

    // sharded: 2 shards per round, then a merge, equal to the single run
    ws.write("sh.toml", &config("multi", "sharded", "", MULTI));
    let rounds: usize = String::from_utf8(ok(bench(&["run", "sh.toml", "--rounds"], &ws.root)).stdout).unwrap().trim().parse().unwrap();
    for _ in 0..rounds {
        for i in 0..2 {
            ok(bench(&["run", "sh.toml", "--shard", &format!("{i}/2")], &ws.root));
        }
        ok(bench(&["merge", "sharded/multi"], &ws.root));
    }
    for f in ["tables.md", "alpha/results.json", "beta/results.json", "alpha/drift.json", "beta/tables.md"] {
        assert!(ws.read(&format!("sharded/multi/{f}")) == ws.read(&format!("results/multi/{f}")), "sharded {f}");
    }
}

#[test]
fn dataset_config_mistakes_are_named() {
    let ws = Ws::new();
    let cases = [
        (config("x", "results", "dataset = \"datasets/a\"\n", MULTI), "cannot both be given"),
        (config("x", "results", "", ""), "`dataset` is missing"),
        (config("x", "results", "", "[[datasets]]\nname = \"a\"\npath = \"datasets/a\"\n[[datasets]]\nname = \"a\"\npath = \"datasets/b\"\n"), "duplicate name 'a'"),
        (config("x", "results", "", "[[datasets]]\nname = \"shards\"\npath = \"datasets/a\"\n"), "invalid name \"shards\""),
        (config("x", "results", "", "[[datasets]]\nname = \"a\"\npath = \"datasets/a\"\nanomal = [1]\n"), "anomal"),
        (config("x", "results", "", "[[datasets]]\nname = \"a\"\npath = \"datasets/a\"\npreset = \"nope\"\n"), "[[datasets]] 'a'"),
        (config("x", "results", "", "[[datasets]]\nname = \"a\"\npath = \"datasets/missing\"\n"), "datasets/missing"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let f = format!("bad{i}.toml");
        ws.write(&f, text);
        let o = bench(&["run", &f], &ws.root);
        assert_eq!(o.status.code(), Some(2), "case {i}");
        let e = String::from_utf8_lossy(&o.stderr);
        let line = e.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("case {i}: {e}"));
        assert!(line.contains(needle), "case {i}: {needle:?} not in {line:?}");
    }
}

/// Item 15: `bench table <folder>` prints exactly the folder's tables.md —
/// one dataset, one dataset of a sweep, and a `[[datasets]]` sweep.
#[test]
fn bench_table_reproduces_tables_md_byte_for_byte() {
    let ws = Ws::new();
    ws.write("multi.toml", &config("multi", "results", "", MULTI));
    ws.write("a.toml", &config("one", "results", "dataset = \"datasets/a\"\n", ""));
    ok(bench(&["run", "multi.toml"], &ws.root));
    ok(bench(&["run", "a.toml"], &ws.root));
    for dir in ["results/one", "results/multi", "results/multi/alpha", "results/multi/beta"] {
        let t = ok(bench(&["table", dir], &ws.root)).stdout;
        let md = ws.read(&format!("{dir}/tables.md"));
        assert!(t == md, "bench table {dir} differs from its tables.md:\n{}\n---\n{}", String::from_utf8_lossy(&t), String::from_utf8_lossy(&md));
    }
    assert!(String::from_utf8(ws.read("results/one/tables.md")).unwrap().contains("## Curves (test split)"));
}
