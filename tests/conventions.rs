//! Metric conventions of other codes, against numbers produced by those
//! codes' own formulas (tests/fixtures/conventions/, written by
//! scripts/gen_convention_fixtures.py, which records each anchor's commit).
//! Cases: ties on a coarse grid with void and an image without anomalies,
//! TPR exactly 0.95, float16 collisions, continuous scores.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOL: f64 = 1e-9;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conventions")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn eval(case: &str, extra: &[&str], threads: &str) -> Output {
    let d = fixtures().join(case);
    Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("eval")
        .arg("--scores")
        .arg(d.join("scores"))
        .arg("--labels")
        .arg(d.join("masks"))
        .args(extra)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap()
}

fn eval_json(case: &str, extra: &[&str]) -> Value {
    let mut a = extra.to_vec();
    a.push("--json");
    let o = eval(case, &a, "2");
    assert!(o.status.success(), "{case} {extra:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every expected key matches (bench's `images_skipped` included).
fn check(what: &str, got: &Value, want: &Value) {
    let want = want.as_object().unwrap();
    assert!(!want.is_empty());
    for (k, w) in want {
        let w = w.as_f64().unwrap();
        let g = got.get(k).and_then(Value::as_f64).unwrap_or_else(|| panic!("{what}: no `{k}` in {got}"));
        assert!((g - w).abs() <= TOL, "{what}: {k} = {g}, anchor gives {w} (Δ {:e})", g - w);
    }
}

#[test]
fn every_switch_matches_the_code_that_defines_it() {
    let e = expected();
    let mut n = 0;
    for (case, v) in e["cases"].as_object().unwrap() {
        for sw in v["switches"].as_array().unwrap() {
            let flags: Vec<&str> = sw["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
            let got = eval_json(case, &flags);
            check(&format!("{case} {}", sw["name"]), &got, &sw["expect"]);
            n += 1;
        }
    }
    assert!(n >= 4 * 17, "{n}");
}

#[test]
fn every_preset_matches_its_anchor() {
    let e = expected();
    for (case, v) in e["cases"].as_object().unwrap() {
        let presets = v["presets"].as_object().unwrap();
        assert_eq!(presets.len(), bench::metrics::conventions::PRESETS.len());
        for (name, want) in presets {
            let got = eval_json(case, &["--convention", name]);
            check(&format!("{case} --convention {name}"), &got, want);
            assert_eq!(got["conventions"]["convention"], Value::String(name.clone()), "{case} {name}: recorded");
        }
    }
}

#[test]
fn the_switches_move_the_numbers() {
    // The fixtures are only worth something if the conventions disagree on them.
    let e = expected();
    let p = &e["cases"]["tpr95"]["presets"];
    assert_ne!(p["sklearn"]["aupr"], p["openood"]["aupr"]);
    assert_ne!(p["sklearn"]["fpr95"], p["streethazards"]["fpr95"]);
    let f = &e["cases"]["f16"]["presets"];
    assert_ne!(f["sklearn"]["aupr"], f["smiyc"]["aupr"]);
    let t = &e["cases"]["ties"]["presets"];
    assert_ne!(t["openood"]["aupr"], t["anomalib"]["aupr"]);
    assert_ne!(t["ood-metrics"]["fpr95"], t["sklearn"]["fpr95"]);
}

#[test]
fn explicit_flags_override_a_preset() {
    let e = expected();
    let sw = e["cases"]["ties"]["switches"].as_array().unwrap();
    let want = &sw.iter().find(|s| s["name"] == "average=images").unwrap()["expect"];
    // streethazards = per image + nearest; --fpr95 first overrides the rule
    let got = eval_json("ties", &["--convention", "streethazards", "--fpr95", "first"]);
    check("streethazards + --fpr95 first", &got, want);
    assert_eq!(got["conventions"]["fpr95"], "first");
    assert_eq!(got["images_skipped"], 1);
}

#[test]
fn all_conventions_is_byte_stable_and_equals_the_presets() {
    let a = eval("ties", &["--all-conventions"], "1");
    let b = eval("ties", &["--all-conventions"], "4");
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8(a.stdout).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| convention")).count(), 10, "{text}");
    let o = eval("ties", &["--all-conventions", "--json"], "3");
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = expected();
    for r in rows.as_array().unwrap() {
        let name = r["convention"].as_str().unwrap();
        check(&format!("--all-conventions {name}"), r, &e["cases"]["ties"]["presets"][name]);
        // and the markdown row prints the same numbers (5 decimals, in %)
        let line = text.lines().find(|l| l.starts_with(&format!("| {name} |"))).unwrap();
        assert!(line.contains(&format!("{:.5}", 100.0 * r["auroc"].as_f64().unwrap())), "{line}");
    }
}

#[test]
fn unimplemented_and_bad_switches_are_one_line_errors() {
    for (args, needle) in [
        (vec!["--binning", "uniform"], "unknown binning"),
        (vec!["--component-threshold", "0.5"], "needs --regions"),
        (vec!["--regions", "--aupro-fpr", "0"], "--aupro-fpr"),
        (vec!["--convention", "sklaern"], "sklaern"),
        (vec!["--fpr95", "median"], "median"),
        (vec!["--all-conventions", "--fpr95", "first"], "cannot be used with"),
    ] {
        let o = eval("ties", &args, "1");
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // u16 needs scores in [0, 1]: the file is named
    let tmp = tempfile::tempdir().unwrap();
    let (s, m) = (tmp.path().join("s"), tmp.path().join("m"));
    std::fs::create_dir_all(&s).unwrap();
    std::fs::create_dir_all(&m).unwrap();
    let mut v = vec![0.25f32; 80];
    v[7] = 1.5;
    npy(&s.join("a.npy"), &v, 8, 10);
    std::fs::copy(fixtures().join("ties/masks/img0.npy"), m.join("a.npy")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["eval", "--score-precision", "u16", "--scores"])
        .arg(&s)
        .arg("--labels")
        .arg(&m)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("a.npy") && err.contains("[0, 1]") && err.lines().count() == 1, "{err}");
}

fn npy(p: &Path, v: &[f32], h: usize, w: usize) {
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({h}, {w}), }}");
    let mut hd = header.into_bytes();
    while (10 + hd.len() + 1) % 64 != 0 {
        hd.push(b' ');
    }
    hd.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(hd.len() as u16).to_le_bytes());
    out.extend_from_slice(&hd);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(p, out).unwrap();
}

#[test]
fn masks_without_score_maps_fail_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, m) = (tmp.path().join("s"), tmp.path().join("m"));
    std::fs::create_dir_all(&s).unwrap();
    std::fs::create_dir_all(&m).unwrap();
    let src = fixtures().join("ties");
    for k in 0..5 {
        std::fs::copy(src.join(format!("masks/img{k}.npy")), m.join(format!("img{k}.npy"))).unwrap();
        if k != 3 {
            std::fs::copy(src.join(format!("scores/img{k}.npy")), s.join(format!("img{k}.npy"))).unwrap();
        }
    }
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bench")).arg("eval").arg("--scores").arg(&s).arg("--labels").arg(&m).args(extra).output().unwrap()
    };
    let o = run(&["--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("1 of 5 masks") && err.contains("img3") && err.contains("--allow-missing"), "{err}");
    let o = run(&["--json", "--allow-missing"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning") && err.contains("1 of 5"), "{err}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["images"].as_u64(), v["missing_score_maps"].as_u64()), (Some(4), Some(1)));
}

#[test]
fn ignore_none_means_no_void_value() {
    // with `--ignore none`, 255 is an ordinary (in-distribution) value
    let with_void = eval_json("ties", &[]);
    let none = eval_json("ties", &["--ignore", "none"]);
    assert!(with_void["void"].as_u64().unwrap() > 0);
    assert_eq!(none["void"], 0);
    assert_eq!(
        none["negatives"].as_u64().unwrap(),
        with_void["negatives"].as_u64().unwrap() + with_void["void"].as_u64().unwrap()
    );
    let o = eval("ties", &["--ignore", "x"], "1");
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--ignore"));
}
