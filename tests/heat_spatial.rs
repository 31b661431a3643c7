//! HEAT's optional spatial-consistency term (`[method.heat] spatial_window`,
//! `spatial_weight`): `(1 − λ)·s + λ·m`, `m` the clipped `w×w` window mean
//! of the whole-image HEAT map. The CPU reference against numpy (summed-area
//! table, cross-checked with scipy.ndimage.uniform_filter in
//! `scripts/gen_sml_post_fixtures.py` → `tests/fixtures/heat_spatial.json`),
//! the WGSL passes against the CPU reference (lavapipe in CI), both scorers
//! end to end (only the HEAT maps change; λ = 0 is plain HEAT exactly), the
//! options and their errors, and `conventions.heat_variant`.
//!
//! Tolerance: |got − ref| ≤ 1e-6 · max(1, |ref|) for the f64 CPU path (f32
//! out), 1e-5 for the f32 GPU passes (two sequential f32 sums of ≤ 63 terms).

mod common;
#[allow(unused_imports)]
use common::*;

use bench::config::Config;
use bench::data::{LogitData, Logits};
use bench::scores::cpu::CpuScorer;
use bench::scores::gpu::post::HeatPostGpu;
use bench::scores::post::apply_heat_cpu;
use bench::scores::{Calibration, HeatPost, Method, ScorePlan, Scorer, SmlPost};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    h: usize,
    w: usize,
    params: HeatPost,
    scores: Vec<f64>,
    expected: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/heat_spatial.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e} (run scripts/gen_sml_post_fixtures.py)", p.display()));
    let f: Fixture = serde_json::from_str(&text).expect("heat_spatial.json");
    assert!(f.cases.len() >= 8);
    f.cases
}

fn worst(got: &[f32], exp: &[f64]) -> (f64, usize) {
    assert_eq!(got.len(), exp.len());
    let mut w = (0.0, 0);
    for (i, (&g, &e)) in got.iter().zip(exp).enumerate() {
        let d = (g as f64 - e).abs() / e.abs().max(1.0);
        if d > w.0 || d.is_nan() {
            w = (d, i);
        }
    }
    w
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn cpu_matches_numpy_reference() {
    let mut worst_all = 0f64;
    for c in cases() {
        c.params.validate().unwrap();
        assert!(c.params.active(), "{}", c.name);
        let x: Vec<f32> = c.scores.iter().map(|&v| v as f32).collect();
        let y = apply_heat_cpu(&x, c.h, c.w, &c.params);
        let (e, at) = worst(&y, &c.expected);
        assert!(e <= 1e-6, "{}: pixel {at}: got {} want {} (rel {e:.2e})", c.name, y[at], c.expected[at]);
        worst_all = worst_all.max(e);
        if c.params.spatial_weight == 0.0 {
            assert_eq!(y, x, "{}: λ = 0 must be the identity", c.name);
        } else if c.h * c.w > 1 {
            assert_ne!(y, x, "{}: output equals input", c.name);
        }
    }
    eprintln!("HEAT spatial consistency: worst CPU relative error vs numpy {worst_all:.3e}");
}



#[test]
fn gpu_passes_match_numpy_and_cpu() {
    let Some(g) = gpu() else { return };
    let ctx = g.context();
    let post = HeatPostGpu::new(ctx).expect("heat_post pipelines");
    let (mut worst_np, mut worst_cpu) = (0f64, 0f64);
    for c in cases() {
        let x: Vec<f32> = c.scores.iter().map(|&v| v as f32).collect();
        let mut y = x.clone();
        post.run(ctx, &mut y, c.h, c.w, &c.params, g.max_binding()).expect("gpu heat post");
        let (e, at) = worst(&y, &c.expected);
        assert!(e <= 1e-5, "{}: pixel {at}: gpu {} want {} (rel {e:.2e})", c.name, y[at], c.expected[at]);
        let (e2, _) = worst(&y, &f64s(&apply_heat_cpu(&x, c.h, c.w, &c.params)));
        assert!(e2 <= 1e-5, "{}: gpu vs cpu {e2:.2e}", c.name);
        if c.params.spatial_weight == 0.0 {
            assert_eq!(y, x, "{}: λ = 0 must be the identity on the GPU", c.name);
        }
        worst_np = worst_np.max(e);
        worst_cpu = worst_cpu.max(e2);
    }
    // random maps at odd sizes (several workgroups, partial ones at the edges)
    let mut r = Rng::new(7);
    for &(h, w) in &[(97, 131), (33, 257), (255, 17), (1, 301), (129, 1), (2, 3)] {
        let x: Vec<f32> = (0..h * w).map(|p| ((r.unif() - 0.3) * 12.0 + (p % w) as f64 * 0.01) as f32).collect();
        for (win, lam) in [(3, 0.5), (5, 0.1), (11, 1.0), (31, 0.75), (63, 0.5), (9, 0.0)] {
            let o = HeatPost { spatial_window: win, spatial_weight: lam };
            let mut y = x.clone();
            post.run(ctx, &mut y, h, w, &o, g.max_binding()).expect("gpu heat post");
            let cpu = apply_heat_cpu(&x, h, w, &o);
            let (e, at) = worst(&y, &f64s(&cpu));
            assert!(e <= 1e-5, "{h}x{w} {o:?}: pixel {at}: gpu {} cpu {} (rel {e:.2e})", y[at], cpu[at]);
            if lam == 0.0 {
                assert_eq!(y, x);
            }
            worst_cpu = worst_cpu.max(e);
        }
    }
    eprintln!("HEAT spatial consistency: worst GPU relative error vs numpy {worst_np:.3e}, vs CPU {worst_cpu:.3e}");
}

/// Logits whose argmax forms vertical bands of classes, plus noise and a
/// square of flat (uncertain) logits.
fn band_logits(c: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let n = h * w;
    let mut v = vec![0f32; c * n];
    for i in 0..h {
        for j in 0..w {
            let win = (j * c / w + i / 7) % c;
            let flat = (h / 3..h / 3 + 6).contains(&i) && (w / 2..w / 2 + 6).contains(&j);
            for k in 0..c {
                let mut x = (r.unif() - 0.5) * 2.0;
                if k == win && !flat {
                    x += 3.0 + r.unif() * 3.0;
                }
                v[k * n + i * w + j] = x as f32;
            }
        }
    }
    v
}

fn calibration(c: usize) -> Calibration {
    let (h, w) = (20, 30);
    let lg = Logits { c, h, w, data: LogitData::F32(band_logits(c, h, w, 99)) };
    let lab = vec![0u8; h * w];
    let mut visit = |f: &mut dyn FnMut(&Logits, Option<&Logits>, &[u8]) -> anyhow::Result<()>| f(&lg, None, &lab);
    Calibration::fit("calibration", false, true, &mut visit).unwrap()
}

const METHODS: [Method; 6] = [Method::MaxLogit, Method::Heat, Method::Sml, Method::Energy, Method::Heat, Method::Entropy];

fn plan(heat: HeatPost, sml: SmlPost, cal: &Calibration) -> ScorePlan {
    ScorePlan {
        methods: METHODS.to_vec(),
        msp_temperature: 1.0,
        energy_temperature: 1.0,
        calibration: Some(cal.clone()),
        sml_post: sml,
        heat_post: heat, params: Default::default(),
    }
}

#[test]
fn scorers_apply_it_to_the_heat_maps_only() {
    let c = 5;
    let cal = calibration(c);
    let mut g = gpu();
    let sml_on = SmlPost { boundary_suppression: true, dilated_smoothing: true, ..Default::default() };
    let opts = [
        HeatPost { spatial_window: 3, spatial_weight: 0.5 },
        HeatPost { spatial_window: 9, spatial_weight: 1.0 },
        HeatPost { spatial_window: 63, spatial_weight: 0.3 },
    ];
    let mut worst_all = 0f64;
    for &(h, w) in &[(37, 53), (1, 9), (70, 3)] {
        let vals = band_logits(c, h, w, (h * w) as u64);
        for half in [false, true] {
            let lg = Logits {
                c,
                h,
                w,
                data: if half {
                    LogitData::F16(vals.iter().map(|&x| half::f16::from_f32(x)).collect())
                } else {
                    LogitData::F32(vals.clone())
                },
            };
            for sml in [SmlPost::default(), sml_on] {
                let plain = CpuScorer.score(&lg, &plan(HeatPost::default(), sml, &cal)).unwrap();
                for o in opts {
                    let cpu = CpuScorer.score(&lg, &plan(o, sml, &cal)).unwrap();
                    // other methods (SML with or without its own post-processing) untouched
                    for k in [0, 2, 3, 5] {
                        assert_eq!(cpu.maps[k], plain.maps[k], "{o:?} {h}x{w}: map {k} ({:?}) changed", METHODS[k]);
                    }
                    // both HEAT entries = apply_heat_cpu on the plain HEAT map
                    assert_eq!(cpu.maps[1], cpu.maps[4]);
                    assert_eq!(cpu.maps[1], apply_heat_cpu(&plain.maps[1], h, w, &o));
                    assert_ne!(cpu.maps[1], plain.maps[1], "{o:?} {h}x{w}: HEAT unchanged");
                    if let Some(g) = g.as_mut() {
                        let gm = g.score(&lg, &plan(o, sml, &cal)).unwrap();
                        assert_eq!(gm.maps.len(), METHODS.len());
                        for (k, (a, b)) in gm.maps.iter().zip(&cpu.maps).enumerate() {
                            let (e, at) = worst(a, &f64s(b));
                            assert!(e <= 1e-5, "{o:?} {h}x{w} half={half} map {k}: pixel {at} gpu {} cpu {}", a[at], b[at]);
                            if METHODS[k] == Method::Heat {
                                worst_all = worst_all.max(e);
                            }
                        }
                    }
                }
            }
        }
    }
    if g.is_some() {
        eprintln!("HEAT spatial consistency end to end: worst GPU vs CPU relative error on HEAT maps {worst_all:.3e}");
    }
}

#[test]
fn zero_weight_is_plain_heat_exactly() {
    let c = 4;
    let cal = calibration(c);
    let mut g = gpu();
    let (h, w) = (41, 29);
    let lg = Logits { c, h, w, data: LogitData::F32(band_logits(c, h, w, 5)) };
    let zero = HeatPost { spatial_window: 7, spatial_weight: 0.0 };
    assert!(zero.active());
    let plain = CpuScorer.score(&lg, &plan(HeatPost::default(), SmlPost::default(), &cal)).unwrap();
    let cpu = CpuScorer.score(&lg, &plan(zero, SmlPost::default(), &cal)).unwrap();
    assert_eq!(cpu.maps, plain.maps);
    if let Some(g) = g.as_mut() {
        let gplain = g.score(&lg, &plan(HeatPost::default(), SmlPost::default(), &cal)).unwrap();
        let gzero = g.score(&lg, &plan(zero, SmlPost::default(), &cal)).unwrap();
        assert_eq!(gzero.maps, gplain.maps);
    }
}

#[test]
fn config_keys_and_variant() {
    const MIN: &str = "name = \"x\"\ndataset = \"d\"\nmethods = [\"heat\"]\n[[models]]\nid = \"m\"\nname = \"M\"\n";
    let d = Config::parse(MIN).unwrap().method.heat;
    assert_eq!(d, HeatPost { spatial_window: 0, spatial_weight: 0.5 });
    assert!(!d.active() && d.variant().is_empty());
    let cfg = Config::parse(&format!("{MIN}[method.heat]\nspatial_window = 5\n")).unwrap();
    assert_eq!(cfg.method.heat, HeatPost { spatial_window: 5, spatial_weight: 0.5 });
    assert_eq!(cfg.method.heat.variant(), ", spatial consistency: (1−λ)·s + λ·mean over w×w (w=5, λ=0.5)");
    let cfg = Config::parse(&format!("{MIN}[method.heat]\nspatial_window = 63\nspatial_weight = 1\n")).unwrap();
    assert_eq!(cfg.method.heat, HeatPost { spatial_window: 63, spatial_weight: 1.0 });
    let cfg = Config::parse(&format!("{MIN}[method.heat]\nspatial_window = 3\nspatial_weight = 0.0\n")).unwrap();
    assert_eq!(cfg.method.heat.spatial_weight, 0.0);
    for (extra, key) in [
        ("spatial_window = 4\n", "method.heat.spatial_window"),
        ("spatial_window = 1\n", "method.heat.spatial_window"),
        ("spatial_window = 65\n", "method.heat.spatial_window"),
        ("spatial_window = 3\nspatial_weight = 1.5\n", "method.heat.spatial_weight"),
        ("spatial_window = 3\nspatial_weight = -0.25\n", "method.heat.spatial_weight"),
        ("spatial_window = 3\nspatial_weight = nan\n", "method.heat.spatial_weight"),
        ("spatial_weight = 2.0\n", "method.heat.spatial_weight"),
        ("spatial_windw = 3\n", "spatial_windw"),
    ] {
        let e = format!("{:#}", Config::parse(&format!("{MIN}[method.heat]\n{extra}")).unwrap_err());
        assert!(e.contains(key), "{extra}: {e}");
        assert!(!e.contains("not implemented"), "{e}");
    }
}



fn config(name: &str, heat: &str) -> String {
    format!(
        "name = \"{name}\"\ndataset = \"datasets/demo\"\nmethods = [\"max_logit\", \"heat\", \"sml\"]\ndevice = \"cpu\"\n\
         [[models]]\nid = \"deeplab_r50\"\nname = \"R50\"\n[method.heat]\n{heat}"
    )
}

/// Through the binary: each bad value is one `error:` line naming the key;
/// a valid term changes the HEAT cells only and is recorded in
/// `conventions.heat_variant`.
#[test]
fn cli_errors_and_recorded_variant() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let o = bench(&["synth", "--out", "datasets/demo", "--images", "6", "--height", "48", "--width", "64"], root);
    assert!(o.status.success(), "{}", stderr(&o));
    for (heat, key) in [
        ("spatial_window = 2\n", "method.heat.spatial_window"),
        ("spatial_window = 1\n", "method.heat.spatial_window"),
        ("spatial_window = 99\n", "method.heat.spatial_window"),
        ("spatial_window = 5\nspatial_weight = 1.01\n", "method.heat.spatial_weight"),
        ("spatial_window = 5\nspatial_weight = -1\n", "method.heat.spatial_weight"),
    ] {
        std::fs::write(root.join("bad.toml"), config("bad", heat)).unwrap();
        let o = bench(&["run", "bad.toml"], root);
        assert_eq!(o.status.code(), Some(2), "{heat}: {}", stderr(&o));
        let e = stderr(&o);
        let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{heat}: {e}");
        assert!(lines[0].contains(key), "{heat}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    assert!(!root.join("results/bad").exists());

    std::fs::write(root.join("plain.toml"), config("plain", "")).unwrap();
    std::fs::write(root.join("spatial.toml"), config("spatial", "spatial_window = 7\nspatial_weight = 0.6\n")).unwrap();
    for f in ["plain.toml", "spatial.toml"] {
        let o = bench(&["run", f], root);
        assert!(o.status.success(), "{f}: {}", stderr(&o));
    }
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join(format!("results/{name}/results.json"))).unwrap()).unwrap()
    };
    let (a, b) = (read("plain"), read("spatial"));
    let va = a["conventions"]["heat_variant"].as_str().unwrap();
    let vb = b["conventions"]["heat_variant"].as_str().unwrap();
    assert!(!va.contains("spatial"), "{va}");
    assert_eq!(vb, format!("{va}, spatial consistency: (1−λ)·s + λ·mean over w×w (w=7, λ=0.6)"));
    let (ca, cb) = (a["cells"].as_array().unwrap(), b["cells"].as_array().unwrap());
    assert_eq!(ca.len(), cb.len());
    let mut heat_changed = false;
    for (x, y) in ca.iter().zip(cb) {
        assert_eq!(x["method"], y["method"]);
        if x["method"] == "heat" {
            heat_changed |= x["auroc"] != y["auroc"];
        } else {
            assert_eq!(x, y, "a non-HEAT cell changed");
        }
    }
    assert!(heat_changed, "HEAT cells unchanged by the spatial term");
}
