//! Sharded sweeps through the `bench` binary: N shard processes per round
//! plus `bench merge` give byte-for-byte the outputs of one `bench run`
//! (N = 1, 2, 3, 7 on the demo data with the shipped config: bootstrap,
//! regions, components, calibration, HEAT), and every broken shard state is
//! one clear error.

mod common;
#[allow(unused_imports)]
use common::*;

use std::path::{Path, PathBuf};
use std::process::Output;

/// A temp workspace with the demo dataset and the shipped config.
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
        let ws = Ws { _t: t, root };
        ws.config("sweep.toml", "results", "");
        ws
    }

    /// The shipped config, writing under `output`, plus `extra` lines.
    fn config(&self, file: &str, output: &str, extra: &str) {
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/sweep.toml")).unwrap();
        let text = shipped.replacen("name = \"demo\"", &format!("name = \"demo\"\noutput = \"{output}\"\ndevice = \"cpu\"\n{extra}"), 1);
        assert_ne!(text, shipped);
        std::fs::write(self.root.join(file), text).unwrap();
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// One round: `n` shard processes at once, then a merge.
    fn round(&self, cfg: &str, n: usize, results: &str) -> Output {
        let kids: Vec<_> = (0..n)
            .map(|i| cmd(&["run", cfg, "--shard", &format!("{i}/{n}")], &self.root).stderr(std::process::Stdio::piped()).spawn().unwrap())
            .collect();
        for k in kids {
            let o = k.wait_with_output().unwrap();
            assert!(o.status.success(), "shard failed: {}", stderr(&o));
        }
        bench(&["merge", results], &self.root)
    }
}

/// Every file under `dir` except manifest.json (timings, shard count).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != "manifest.json" {
                v.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn sharded_runs_merge_to_the_single_run_byte_for_byte() {
    let ws = Ws::new();
    let o = bench(&["run", "sweep.toml"], &ws.root);
    assert!(o.status.success(), "{}", stderr(&o));
    let single = files(&ws.p("results/demo"));
    assert!(single.iter().any(|f| f.0 == Path::new("results.json")));
    assert!(single.len() > 10, "curves and plots are compared too");
    assert!(single.iter().any(|f| f.0.starts_with("failures")), "the failure-mode panels are compared too");

    let o = bench(&["run", "sweep.toml", "--rounds"], &ws.root);
    let rounds: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(rounds, 8, "calibration 2 (HEAT) + val 2 + test 2 + the drifted copy test@lighting 2");
    let single_json = String::from_utf8_lossy(&single.iter().find(|f| f.0 == Path::new("results.json")).unwrap().1).to_string();
    assert!(single_json.contains("\"drift_splits\"") && single_json.contains("test@lighting"), "the sharded runs cover a drifted split");

    for n in [1, 2, 3, 7] {
        let (cfg, out) = (format!("s{n}.toml"), format!("out{n}"));
        ws.config(&cfg, &out, "");
        let results = format!("{out}/demo");
        for r in 1..=rounds {
            let o = ws.round(&cfg, n, &results);
            assert!(o.status.success(), "N={n} round {r}: {}", stderr(&o));
            let done = ws.p(&results).join("results.json").exists();
            assert_eq!(done, r == rounds, "N={n}: results appear after the last round only (round {r})");
        }
        let merged = files(&ws.p(&results));
        assert_eq!(merged.len(), single.len(), "N={n}: same files");
        for (a, b) in single.iter().zip(&merged) {
            assert_eq!(a.0, b.0);
            assert!(a.1 == b.1, "N={n}: {} differs from the single-process run", a.0.display());
        }
        assert!(!ws.p(&results).join("shards").exists(), "the final merge replaces the folder, shard states included");
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.p(&results).join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["shards"], n);
    }
}

/// Run round 1 of a 3-shard run with only some shards; return the shards dir.
fn partial(ws: &Ws, shards: &[usize]) -> PathBuf {
    for i in shards {
        let o = bench(&["run", "sweep.toml", "--shard", &format!("{i}/3")], &ws.root);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    ws.p("results/demo/shards")
}

fn assert_error(o: &Output, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    let e = stderr(o);
    let line = e.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line in {e}"));
    for n in needles {
        assert!(line.contains(n), "{n:?} not in {line:?}");
    }
}

#[test]
fn merge_refuses_missing_mismatched_and_corrupt_shards() {
    let ws = Ws::new();
    // no sharded run
    assert_error(&bench(&["merge", "results/demo"], &ws.root), &["results/demo/shards", "no sharded run"]);

    // missing shard 1 of 3
    let dir = partial(&ws, &[0, 2]);
    assert_error(&bench(&["merge", "results/demo"], &ws.root), &["missing shard(s) 1 of 3"]);

    // another N into the same folder
    let o = bench(&["run", "sweep.toml", "--shard", "1/4"], &ws.root);
    assert_error(&o, &["meta.json", "another sharded run", "3 shards"]);

    // another config into the same folder
    ws.config("other.toml", "results", "");
    let text = std::fs::read_to_string(ws.p("other.toml")).unwrap();
    assert!(text.contains("bootstrap = 200"));
    std::fs::write(ws.p("other.toml"), text.replace("bootstrap = 200", "bootstrap = 100")).unwrap();
    let o = bench(&["run", "other.toml", "--shard", "1/3"], &ws.root);
    assert_error(&o, &["meta.json", "another sharded run"]);

    // complete the round, then damage the part files one way at a time
    partial(&ws, &[1]);
    let part = |i: usize| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(&format!(".part-{i}-of-3.bin")))
            .collect();
        v.sort();
        v.remove(0)
    };
    let p1 = part(1);
    let good = std::fs::read(&p1).unwrap();
    let name = p1.file_name().unwrap().to_string_lossy().to_string();

    std::fs::write(&p1, &good[..good.len() - 7]).unwrap();
    assert_error(&bench(&["merge", "results/demo"], &ws.root), &[&name, "truncated"]);

    let mut flipped = good.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    std::fs::write(&p1, &flipped).unwrap();
    assert_error(&bench(&["merge", "results/demo"], &ws.root), &[&name, "checksum mismatch"]);

    std::fs::write(&p1, b"garbage").unwrap();
    assert_error(&bench(&["merge", "results/demo"], &ws.root), &[&name, "not a bench shard state"]);

    // shard 0's state filed as shard 1 (a duplicate)
    std::fs::copy(part(0), &p1).unwrap();
    assert_error(&bench(&["merge", "results/demo"], &ws.root), &[&name, "not what its name says"]);

    // repaired: the merge of round 1 goes through and nothing is written yet
    std::fs::write(&p1, &good).unwrap();
    let o = bench(&["merge", "results/demo"], &ws.root);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("another round"), "{}", stderr(&o));
    assert!(!ws.p("results/demo/results.json").exists());

    // a hand-edited meta.json (multi-byte text where the hash goes): an error, not a panic
    let meta = std::fs::read_to_string(dir.join("meta.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&meta).unwrap();
    let sha = v["config_sha256"].as_str().unwrap().to_string();
    std::fs::write(dir.join("meta.json"), meta.replace(&sha, "xéééééééééééééé")).unwrap();
    assert_error(&bench(&["run", "sweep.toml", "--shard", "0/3"], &ws.root), &["meta.json", "another sharded run"]);
    assert_error(&bench(&["merge", "results/demo"], &ws.root), &["config.toml", "does not match"]);
}

#[test]
fn slurm_array_variables_select_the_shard() {
    let ws = Ws::new();
    let o = cmd(&["run", "sweep.toml"], &ws.root)
        .env("SLURM_ARRAY_TASK_ID", "11")
        .env("SLURM_ARRAY_TASK_MIN", "10")
        .env("SLURM_ARRAY_TASK_COUNT", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("running shard 1/2"), "{}", stderr(&o));
    let names: Vec<String> =
        std::fs::read_dir(ws.p("results/demo/shards")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert!(names.iter().any(|n| n.ends_with(".part-1-of-2.bin")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("part-0")), "{names:?}");

    let o = cmd(&["run", "sweep.toml", "--shard", "2/2"], &ws.root).output().unwrap();
    assert_error(&o, &["--shard 2/2"]);
}

/// With a GPU scorer, pass 2 ranks on the device (issue 16 item 4): a
/// 2-shard run on the device, ranking there too, still merges to the
/// single device run byte for byte (the device's counts are absorbed into
/// the host rankers before a shard ships its tally).
#[test]
fn gpu_sharded_run_merges_to_the_single_gpu_run() {
    let ws = Ws::new();
    let to_gpu = |file: &str| {
        let p = ws.p(file);
        let t = std::fs::read_to_string(&p).unwrap().replacen("device = \"cpu\"", "device = \"gpu\"", 1);
        std::fs::write(p, t).unwrap();
    };
    to_gpu("sweep.toml");
    let o = bench(&["run", "sweep.toml"], &ws.root);
    if !o.status.success() {
        let e = stderr(&o);
        assert!(!gpu_required() && e.contains("no GPU adapter found"), "the GPU run failed: {e}");
        eprintln!("SKIP: no GPU adapter ({})", e.trim());
        return;
    }
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.p("results/demo/manifest.json")).unwrap()).unwrap();
    for (model, ph) in m["timings_s"]["phases"].as_object().unwrap() {
        assert!(ph["rank_device"].as_f64().unwrap() > 0.0, "{model} did not rank on the device: {ph}");
    }
    let single = files(&ws.p("results/demo"));
    ws.config("s2.toml", "out2", "");
    to_gpu("s2.toml");
    let o = bench(&["run", "s2.toml", "--rounds"], &ws.root);
    let rounds: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(rounds, 8, "calibration 2 (HEAT) + val 2 + test 2 + test@lighting 2");
    for r in 1..=rounds {
        let o = ws.round("s2.toml", 2, "out2/demo");
        assert!(o.status.success(), "round {r}: {}", stderr(&o));
    }
    let merged = files(&ws.p("out2/demo"));
    assert_eq!(merged.len(), single.len());
    for (a, b) in single.iter().zip(&merged) {
        assert_eq!(a.0, b.0);
        assert!(a.1 == b.1, "{} differs from the single GPU run", a.0.display());
    }
}
