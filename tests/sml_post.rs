//! SML boundary suppression + dilated smoothing (Jung et al. 2021):
//! the CPU reference against a numpy/scipy port of the official code
//! (`tests/fixtures/sml_post.json`, `scripts/gen_sml_post_fixtures.py`),
//! the WGSL passes against the CPU reference (lavapipe in CI), both scorers
//! end to end, and the `[method.sml]` options.
//!
//! Tolerance: |got − ref| ≤ 1e-6 · max(1, |ref|) for the f64 CPU path (f32
//! out), 1e-5 for the f32 GPU passes (sums of ≤ 49 f32 products).

mod common;
#[allow(unused_imports)]
use common::*;

use bench::config::Config;
use bench::data::{LogitData, Logits};
use bench::scores::cpu::CpuScorer;
use bench::scores::gpu::post::PostGpu;
use bench::scores::post::{apply_cpu, boundaries};
use bench::scores::{Calibration, Method, ScorePlan, Scorer, SmlPost};
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
    params: SmlPost,
    scores: Vec<f64>,
    pred: Vec<u32>,
    boundary: Vec<u8>,
    expected: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sml_post.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e} (run scripts/gen_sml_post_fixtures.py)", p.display()));
    let f: Fixture = serde_json::from_str(&text).expect("sml_post.json");
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

#[test]
fn cpu_matches_numpy_port_of_official_code() {
    for c in cases() {
        let x: Vec<f32> = c.scores.iter().map(|&v| v as f32).collect();
        let b = boundaries(&c.pred, c.h, c.w);
        let bexp: Vec<bool> = c.boundary.iter().map(|&v| v != 0).collect();
        assert_eq!(b, bexp, "{}: boundary map", c.name);
        let y = apply_cpu(&x, &c.pred, c.h, c.w, &c.params);
        let (e, at) = worst(&y, &c.expected);
        assert!(e <= 1e-6, "{}: pixel {at}: got {} want {} (rel {e:.2e})", c.name, y[at], c.expected[at]);
        // the post-processing did something on every case with a boundary
        if c.params.active() && b.iter().any(|&v| v) {
            assert!(y.iter().zip(&x).any(|(a, b)| a != b), "{}: output equals input", c.name);
        }
    }
}


#[test]
fn gpu_passes_match_numpy_and_cpu() {
    let Some(g) = gpu() else { return };
    let ctx = g.context();
    let post = PostGpu::new(ctx).expect("sml_post pipelines");
    let mut worst_all = 0f64;
    for c in cases() {
        let x: Vec<f32> = c.scores.iter().map(|&v| v as f32).collect();
        let mut y = x.clone();
        post.run(ctx, &mut y, &c.pred, c.h, c.w, &c.params, g.max_binding()).expect("gpu post");
        let (e, at) = worst(&y, &c.expected);
        assert!(e <= 1e-5, "{}: pixel {at}: gpu {} want {} (rel {e:.2e})", c.name, y[at], c.expected[at]);
        let cpu: Vec<f64> = apply_cpu(&x, &c.pred, c.h, c.w, &c.params).iter().map(|&v| v as f64).collect();
        let (e2, _) = worst(&y, &cpu);
        assert!(e2 <= 1e-5, "{}: gpu vs cpu {e2:.2e}", c.name);
        worst_all = worst_all.max(e).max(e2);
    }
    eprintln!("SML post-processing: worst GPU relative error {worst_all:.3e}");
}


/// Logits whose argmax forms vertical bands of classes (so boundaries
/// exist), plus noise.
fn band_logits(c: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let n = h * w;
    let mut v = vec![0f32; c * n];
    for i in 0..h {
        for j in 0..w {
            let win = (j * c / w + i / 7) % c;
            for k in 0..c {
                let mut x = (r.unif() - 0.5) * 2.0;
                if k == win {
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
    Calibration::fit("calibration", false, false, &mut visit).unwrap()
}

fn plan(post: SmlPost, cal: &Calibration) -> ScorePlan {
    ScorePlan {
        methods: vec![Method::MaxLogit, Method::Sml, Method::Msp, Method::Sml],
        msp_temperature: 1.0,
        energy_temperature: 1.0,
        calibration: Some(cal.clone()),
        sml_post: post,
        heat_post: Default::default(), params: Default::default(),
    }
}

#[test]
fn scorers_apply_it_to_the_sml_maps_only() {
    let c = 5;
    let cal = calibration(c);
    let mut g = gpu();
    let opts = [
        SmlPost { boundary_suppression: true, dilated_smoothing: true, ..Default::default() },
        SmlPost { boundary_suppression: true, ..Default::default() },
        SmlPost { dilated_smoothing: true, kernel_size: 5, sigma: 1.5, dilation: 2, ..Default::default() },
    ];
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
            let plain = CpuScorer.score(&lg, &plan(SmlPost::default(), &cal)).unwrap();
            for o in opts {
                let cpu = CpuScorer.score(&lg, &plan(o, &cal)).unwrap();
                // other methods untouched, both SML entries post-processed alike
                assert_eq!(cpu.maps[0], plain.maps[0]);
                assert_eq!(cpu.maps[2], plain.maps[2]);
                assert_eq!(cpu.maps[1], cpu.maps[3]);
                // (on the thin images every pixel is a boundary pixel with no
                // non-boundary neighbour: suppression keeps them, as officially)
                if (h, w) == (37, 53) || o.dilated_smoothing {
                    assert_ne!(cpu.maps[1], plain.maps[1], "{o:?} {h}x{w}: SML unchanged");
                }
                // = apply_cpu on the plain SML map with the argmax classes
                let pred = bench::scores::cpu::predictions(&lg);
                assert_eq!(cpu.maps[1], apply_cpu(&plain.maps[1], &pred, h, w, &o));
                if let Some(g) = g.as_mut() {
                    let gm = g.score(&lg, &plan(o, &cal)).unwrap();
                    assert_eq!(gm.maps.len(), 4);
                    for (k, (a, b)) in gm.maps.iter().zip(&cpu.maps).enumerate() {
                        let exp: Vec<f64> = b.iter().map(|&v| v as f64).collect();
                        let (e, at) = worst(a, &exp);
                        assert!(e <= 1e-5, "{o:?} {h}x{w} half={half} map {k}: pixel {at} gpu {} cpu {}", a[at], b[at]);
                    }
                }
            }
        }
    }
}

#[test]
fn config_keys_and_errors() {
    const MIN: &str = "name = \"x\"\ndataset = \"d\"\nmethods = [\"sml\"]\n[[models]]\nid = \"m\"\nname = \"M\"\n";
    let cfg = Config::parse(&format!("{MIN}[method.sml]\nboundary_suppression = true\ndilated_smoothing = true\n")).unwrap();
    assert_eq!(
        cfg.method.sml,
        SmlPost { boundary_suppression: true, dilated_smoothing: true, ..Default::default() }
    );
    assert_eq!((cfg.method.sml.boundary_width, cfg.method.sml.boundary_iteration), (4, 4));
    assert_eq!((cfg.method.sml.kernel_size, cfg.method.sml.sigma, cfg.method.sml.dilation), (7, 1.0, 6));
    assert!(cfg.method.sml.variant().contains("boundary suppression (width 4, 4 iterations) + dilated smoothing (7x7 Gaussian, sigma 1, dilation 6)"));
    assert_eq!(Config::parse(MIN).unwrap().method.sml.variant(), "plain (no boundary suppression, no dilated smoothing)");
    for (extra, key) in [
        ("boundary_suppression = true\nboundary_width = 3\nboundary_iteration = 2\n", "boundary_width"),
        ("dilated_smoothing = true\nkernel_size = 6\n", "kernel_size"),
        ("dilated_smoothing = true\nsigma = 0.0\n", "sigma"),
        ("dilated_smoothing = true\ndilation = 0\n", "dilation"),
        ("boundary_supression = true\n", "boundary_supression"),
    ] {
        let e = format!("{:#}", Config::parse(&format!("{MIN}[method.sml]\n{extra}")).unwrap_err());
        assert!(e.contains(key), "{extra}: {e}");
    }
}
