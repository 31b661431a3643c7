//! kl_matching (Hendrycks et al. 2022) against pytorch-ood's KLMatching
//! (tests/fixtures/kl_matching.json from scripts/gen_kl_fixtures.py): the
//! fit, the f64 score, the fast CPU scorer (fast-scorer contract), the WGSL
//! pass (parity), and bench's documented rule for a class never predicted
//! on the calibration split; plus `bench run` with calibration.json reuse.

mod common;
use common::*;

use anyhow::Result;
use bench::scores::cpu::{CpuScorer, ReferenceScorer};
use bench::scores::{Calibration, Logits, Method, ScorePlan, Scorer, kl};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kl_matching.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn opt(v: &Value) -> Vec<Option<f64>> {
    v.as_array().unwrap().iter().map(|x| x.as_f64()).collect()
}

/// SML statistics plus KL matching's templates, fitted on `lg` / `lab`
/// through the same per-image sums `bench run` uses.
fn fit(lg: &Logits, lab: &[u8]) -> Calibration {
    let mut visit = |f: &mut dyn FnMut(&Logits, Option<&Logits>, &[u8]) -> Result<()>| -> Result<()> { f(lg, None, lab) };
    let mut cal = Calibration::fit("calibration", false, false, &mut visit).unwrap();
    cal.kl = Some(kl::fit(&[kl::image_sums(lg, lab)], "calibration", &mut cal.warnings).unwrap());
    cal
}

fn plan(methods: &[Method], cal: &Calibration) -> ScorePlan {
    ScorePlan {
        methods: methods.to_vec(),
        msp_temperature: 1.0,
        energy_temperature: 1.0,
        calibration: Some(cal.clone()),
        sml_post: Default::default(),
        heat_post: Default::default(),
        params: Default::default(),
    }
}

struct Case {
    name: String,
    c: usize,
    cal: Calibration,
    test: Logits,
    want: Vec<Option<f64>>,
    unfitted: Vec<Option<f64>>,
    dists: Value,
}

fn load(v: &Value) -> Case {
    let c = v["c"].as_u64().unwrap() as usize;
    let (nc, nt) = (v["n_cal"].as_u64().unwrap() as usize, v["n_test"].as_u64().unwrap() as usize);
    let lab: Vec<u8> = v["cal_labels"].as_array().unwrap().iter().map(|x| match x.as_u64().unwrap() {
        0 => bench::data::label::NORMAL,
        1 => 1,
        _ => bench::data::label::VOID,
    }).collect();
    let cal = fit(&logits(c, 1, nc, &f32s(&v["cal_logits"]), false), &lab);
    Case {
        name: v["name"].as_str().unwrap().into(),
        c,
        cal,
        test: logits(c, 1, nt, &f32s(&v["test_logits"]), false),
        want: opt(&v["kl_predicted"]),
        unfitted: opt(&v["kl_bench_unfitted"]),
        dists: v["dists"].clone(),
    }
}

#[test]
fn fit_matches_pytorch_ood() {
    for v in cases() {
        let k = load(&v);
        let d = k.cal.kl.as_ref().unwrap();
        let fitted: Vec<usize> = v["fitted"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let unf: Vec<usize> = (0..k.c).filter(|c| !fitted.contains(c)).collect();
        assert_eq!(d.unfitted, unf, "{}", k.name);
        for &cl in &fitted {
            let want: Vec<f64> = k.dists[cl.to_string()].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            for (j, w) in want.iter().enumerate() {
                let got = d.dists[cl * k.c + j];
                assert!((got - w).abs() <= 1e-12 * w.abs().max(1e-3), "{} d_{cl}[{j}]: {got} vs {w}", k.name);
            }
        }
        for &cl in &unf {
            assert!(d.dists[cl * k.c..(cl + 1) * k.c].iter().all(|&x| x == 1.0 / k.c as f64), "uniform template");
            assert!(k.cal.warnings.iter().any(|w| w.contains("KL matching") && w.contains(&format!("[{cl}]"))), "{:?}", k.cal.warnings);
        }
    }
}

#[test]
fn scores_match_pytorch_ood_and_the_fast_scorer_meets_its_contract() {
    let mut n = 0;
    for v in cases() {
        let k = load(&v);
        let p = plan(&[Method::KlMatching], &k.cal);
        let reference = ReferenceScorer.score(&k.test, &p).unwrap();
        let fast = CpuScorer.score(&k.test, &p).unwrap();
        let d = k.cal.kl.as_ref().unwrap();
        let mut z = vec![0f64; k.c];
        for i in 0..k.test.pixels() {
            k.test.pixel(i, &mut z);
            let (m, a) = bench::scores::cpu::max_argmax(&z);
            let s: f64 = z.iter().map(|&x| (x - m).exp()).sum();
            let got = kl::kl_score(&z, m, a, s, d);
            // pytorch-ood where the class was fitted, else bench's uniform rule
            let w = k.want[i].or(k.unfitted[i]).expect("one of the two");
            assert!((got - w).abs() <= 1e-9 * w.abs().max(1e-3), "{} pixel {i}: {got} vs reference {w}", k.name);
            let r = reference.maps[0][i] as f64;
            assert!((r - w).abs() <= 1e-6 * w.abs().max(1.0), "{} reference scorer pixel {i}: {r} vs {w}", k.name);
            let f = fast.maps[0][i] as f64;
            assert!((f - r).abs() <= (2e-6 * r.abs()).max(1e-6), "{} fast pixel {i}: {f} vs reference {r}", k.name);
            n += 1;
        }
    }
    assert!(n > 250);
}

/// Realistic, huge, tied and f16 logits: the fast scorer within 2e-6
/// relative / 1e-6 absolute of the reference, and the GPU within 1e-5.
#[test]
fn fast_and_gpu_agree_with_the_reference_on_hard_logits() {
    let mut r = Rng::new(5);
    let mut g = gpu();
    for &c in &[2usize, 19, 150] {
        let (h, w) = (9, 37);
        let vals = |r: &mut Rng, scale: f64, win: f64| -> Vec<f32> {
            let n = h * w;
            let wins: Vec<usize> = (0..n).map(|_| r.below(c)).collect();
            (0..c * n).map(|e| (r.normal() * scale + if wins[e % n] == e / n { win } else { 0.0 }) as f32).collect()
        };
        let cal_lg = logits(c, h, w, &vals(&mut r, 1.5, 5.0), false);
        let lab = vec![bench::data::label::NORMAL; h * w];
        let cal = fit(&cal_lg, &lab);
        for (scale, win) in [(1.5, 5.0), (300.0, 0.0), (0.0, 0.0), (0.001, 0.0)] {
            let v = vals(&mut r, scale, win);
            for half in [false, true] {
                let lg = logits(c, h, w, &v, half);
                let p = plan(&[Method::KlMatching, Method::Sml, Method::Msp], &cal);
                let rf = ReferenceScorer.score(&lg, &p).unwrap();
                let f = CpuScorer.score(&lg, &p).unwrap();
                for (i, (&a, &b)) in f.maps[0].iter().zip(&rf.maps[0]).enumerate() {
                    let (a, b) = (a as f64, b as f64);
                    assert!(a.is_finite() && (a - b).abs() <= (2e-6 * b.abs()).max(1e-6), "C={c} scale {scale} half={half} px {i}: fast {a} vs {b}");
                }
                if let Some(g) = g.as_mut() {
                    let gm = g.score(&lg, &p).unwrap();
                    for (i, (&a, &b)) in gm.maps[0].iter().zip(&f.maps[0]).enumerate() {
                        let (a, b) = (a as f64, b as f64);
                        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "C={c} scale {scale} half={half} px {i}: gpu {a} vs cpu {b}");
                    }
                }
            }
        }
    }
}

#[test]
fn known_values() {
    // p equal to its class template: KL = 0; uniform template: log C − H(p)
    let v = cases();
    let k = load(&v[0]);
    let d = k.cal.kl.as_ref().unwrap();
    let c = k.c;
    let row = &d.dists[0..c];
    let z: Vec<f64> = row.iter().map(|x| x.ln()).collect();
    let (m, a) = bench::scores::cpu::max_argmax(&z);
    if a == 0 {
        let s: f64 = z.iter().map(|&x| (x - m).exp()).sum();
        assert!(kl::kl_score(&z, m, a, s, d).abs() < 1e-12);
    }
    assert!(Method::parse("kl_matching").unwrap().needs_calibration());
    // no templates in the calibration: one clear error before any pixel
    let mut cal = k.cal.clone();
    cal.kl = None;
    let e = CpuScorer.score(&k.test, &plan(&[Method::KlMatching], &cal)).unwrap_err().to_string();
    assert!(e.contains("kl_matching") && e.contains("templates"), "{e}");
}

const RUN: &str = "dataset = \"ds\"\ndevice = \"cpu\"\n[[models]]\nid = \"deeplab_r50\"\nname = \"D\"\n";

/// `bench run`: fitted on the calibration split (written to
/// calibration.json), reused exactly, refused from a file without templates,
/// and flagged as leakage when there is no calibration split.
#[test]
fn bench_run_fits_saves_and_reuses_the_templates() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let o = bench(&["synth", "--out", "ds", "--images", "4", "--height", "24", "--width", "40", "--drifted", "none"], root);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = |name: &str, methods: &str, extra: &str| {
        std::fs::write(root.join("c.toml"), format!("name = \"{name}\"\nmethods = {methods}\n{extra}\n{RUN}")).unwrap();
        bench(&["run", "c.toml"], root)
    };
    let o = run("fit", r#"["kl_matching", "msp"]"#, "");
    assert!(o.status.success(), "{}", stderr(&o));
    let cal: Value = serde_json::from_str(&std::fs::read_to_string(root.join("results/fit/calibration.json")).unwrap()).unwrap();
    let klj = &cal["models"][0]["calibration"]["kl"];
    let c = cal["models"][0]["classes"].as_u64().unwrap() as usize;
    assert_eq!(klj["dists"].as_array().unwrap().len(), c * c);
    let res: Value = serde_json::from_str(&std::fs::read_to_string(root.join("results/fit/results.json")).unwrap()).unwrap();
    let cell = res["cells"].as_array().unwrap().iter().find(|x| x["method"] == "kl_matching" && x["split"] == "test").unwrap().clone();
    assert_eq!(cell["leakage"], false);
    assert!(cell["auroc"].as_f64().unwrap() > 0.0);
    let o = run("reuse", r#"["kl_matching", "msp"]"#, "calibration = \"results/fit/calibration.json\"");
    assert!(o.status.success(), "{}", stderr(&o));
    let a = std::fs::read_to_string(root.join("results/fit/results.json")).unwrap().replace("\"fit\"", "\"N\"");
    let b = std::fs::read_to_string(root.join("results/reuse/results.json")).unwrap().replace("\"reuse\"", "\"N\"");
    assert!(a == b, "reusing the templates must reproduce the fitted run");
    // a calibration.json written without kl_matching
    let o = run("sml", r#"["sml"]"#, "");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run("bad", r#"["kl_matching"]"#, "calibration = \"results/sml/calibration.json\"");
    assert!(!o.status.success());
    let e = stderr(&o);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(lines.len() == 1 && lines[0].contains("KL-matching templates") && !e.contains("panicked"), "{e}");
}

/// Sharded == local: the per-image `KlSums` travel in the shard states and
/// fold in image order, so a 3-shard run's calibration.json and
/// results.json are byte-identical to the single process's.
#[test]
fn sharded_fit_equals_the_local_fit() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let o = bench(&["synth", "--out", "ds", "--images", "5", "--height", "24", "--width", "40", "--drifted", "none"], root);
    assert!(o.status.success(), "{}", stderr(&o));
    let write = |out: &str| {
        std::fs::write(root.join(format!("{out}.toml")), format!("name = \"k\"\noutput = \"{out}\"\nmethods = [\"kl_matching\"]\n{RUN}")).unwrap();
    };
    write("local");
    let o = bench(&["run", "local.toml"], root);
    assert!(o.status.success(), "{}", stderr(&o));
    write("sharded");
    let o = bench(&["run", "sharded.toml", "--rounds"], root);
    let rounds: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(rounds, 5, "calibration 1 + val 2 + test 2");
    for _ in 0..rounds {
        for i in 0..3 {
            let o = bench(&["run", "sharded.toml", "--shard", &format!("{i}/3")], root);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = bench(&["merge", "sharded/k"], root);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for f in ["calibration.json", "results.json"] {
        let a = std::fs::read(root.join("local/k").join(f)).unwrap();
        let b = std::fs::read(root.join("sharded/k").join(f)).unwrap();
        assert!(a == b, "{f} differs between the sharded and the local run");
    }
}
