//! The WGSL pass (`GpuScorer`) against the CPU reference (`CpuScorer`).
//!
//! Runs on whatever adapter wgpu finds, software ones included (CI: Mesa
//! lavapipe). With no adapter the tests print a skip notice and pass, unless
//! `BENCH_REQUIRE_GPU=1`, where they fail.
//!
//! Tolerance: |gpu − cpu| ≤ TOL · max(1, |cpu|), per method (see [`tol`]).

mod common;
#[allow(unused_imports)]
use common::*;

use anyhow::Result;
use bench::data::{LogitData, Logits};
use bench::scores::cpu::CpuScorer;
use bench::scores::gpu::{GpuScorer, list_adapters};
use bench::scores::{Calibration, Method, ScoreMaps, ScorePlan, Scorer};
use half::f16;

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------



#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// segmentation-like: a winning class, correlated noise, a per-pixel offset
    Realistic,
    /// ±1e4 and moderate values mixed
    Extreme,
    /// every class equal at each pixel (argmax ties)
    AllEqual,
}

/// Class-major `[C, H, W]` values.
fn make_values(c: usize, h: usize, w: usize, seed: u64, kind: Kind) -> Vec<f32> {
    let n = h * w;
    let mut r = Rng::new(seed);
    let mut v = vec![0f32; c * n];
    // class-specific bias so the Gaussians differ
    let bias: Vec<f64> = (0..c).map(|_| r.normal() * 1.5).collect();
    for p in 0..n {
        match kind {
            Kind::Realistic => {
                let win = r.below(c);
                let off = r.normal() * 2.0;
                let conf = 2.0 + r.unif() * 8.0;
                for k in 0..c {
                    let mut x = bias[k] + off + r.normal() * 1.3;
                    if k == win {
                        x += conf;
                    }
                    v[k * n + p] = x as f32;
                }
            }
            Kind::Extreme => {
                for k in 0..c {
                    v[k * n + p] = match r.below(4) {
                        0 => 1e4,
                        1 => -1e4,
                        2 => (r.normal() * 5e3) as f32,
                        _ => (r.normal() * 3.0) as f32,
                    };
                }
            }
            Kind::AllEqual => {
                let x = (r.normal() * 4.0) as f32;
                for k in 0..c {
                    v[k * n + p] = x;
                }
            }
        }
    }
    v
}


/// Calibration fitted on random segmentation-like logits with some
/// anomaly / void pixels (which the fit must skip).
fn calibration(c: usize, seed: u64) -> Calibration {
    let imgs: Vec<(Logits, Vec<u8>)> = (0..3)
        .map(|i| {
            let (h, w) = (40, 50 + 7 * i);
            let vals = make_values(c, h, w, seed ^ (0xC0FFEE + i as u64), Kind::Realistic);
            let mut r = Rng::new(seed + 17 * i as u64);
            let lab = r.sparse_labels(h * w);
            (logits(c, h, w, &vals, false), lab)
        })
        .collect();
    let mut visit = |f: &mut dyn FnMut(&Logits, Option<&Logits>, &[u8]) -> Result<()>| -> Result<()> {
        for (l, lab) in &imgs {
            f(l, None, lab)?;
        }
        Ok(())
    };
    Calibration::fit("calibration", false, true, &mut visit).expect("calibration fit")
}

fn plan(methods: &[Method], cal: &Calibration, t_msp: f64, t_en: f64) -> ScorePlan {
    ScorePlan {
        methods: methods.to_vec(),
        msp_temperature: t_msp,
        energy_temperature: t_en,
        calibration: Some(cal.clone()),
        sml_post: Default::default(),
        heat_post: Default::default(), params: Default::default(),
    }
}

const ALL: [Method; 9] = [Method::MaxLogit, Method::Msp, Method::Energy, Method::Sml, Method::Heat, Method::Entropy, Method::Margin, Method::Gen, Method::Rba];

/// Relative tolerance per method, |gpu − cpu| ≤ tol · max(1, |cpu|): the
/// brief's 1e-5 for every method, 0 (bit-exact) for max_logit.
///
/// The CPU computes in f64 and rounds once; the shader computes in f32 with
/// WGSL's (Vulkan's) exp/log accuracy: exp within 3 + 2|x| ULP, log within
/// 3 ULP, or 2⁻²¹ absolute on [0.5, 2]. Worst errors seen on lavapipe over
/// these tests (Mesa 22.3, llvmpipe):
/// - max_logit 0: a negated input value.
/// - msp 1.8e-6 (absolute, since |msp| ≤ 1): Σ exp((z − max)/T) with T ≠ 1;
///   exp's 3 + 2|x| ULP at |x| ≈ 15 is ~30 ULP of the terms it rescales.
/// - energy 8.2e-7: one Σ exp, one log (2⁻²¹ absolute near 1).
/// - sml 1.9e-7: `max − μ` uses μ split into hi + lo f32 parts, so only the
///   final division rounds.
/// - heat 1.2e-6: ‖W z − c_k‖² is a C-term sum of f32 products; its
///   rounding is scaled by |E_gmm| / gmm_std when standardised. Data whose
///   calibrated gmm_std is tiny relative to |E_gmm| (nearly collinear
///   logits) can need more than 1e-5: that is f32, not a bug.
/// - entropy: `log S − xs/S` with `xs = Σ (z − max)·exp(z − max)` rescaled
///   online like S; absolute error (H ≤ log C).
fn tol(m: Method) -> f64 {
    match m {
        Method::Entropy => 1e-5,
        Method::MaxLogit => 0.0,
        Method::Msp => 1e-5,
        Method::Energy => 1e-5,
        Method::Sml => 1e-5,
        Method::Heat => 1e-5,
        // a difference of two f32 inputs, one rounding
        Method::Margin => 1e-6,
        // C terms of exp / pow in log space (absolute on values ≤ C)
        Method::Gen => 1e-5,
        // C f32 tanh terms summed
        Method::Rba => 1e-5,
        // C f32 terms p·(log p − log d) (tests/kl_matching.rs holds it to this)
        Method::KlMatching => 1e-5,
    }
}

/// Worst relative error per plan entry.
fn errors(g: &ScoreMaps, c: &ScoreMaps) -> Vec<(f64, usize)> {
    assert_eq!((g.h, g.w, g.maps.len()), (c.h, c.w, c.maps.len()));
    g.maps
        .iter()
        .zip(&c.maps)
        .map(|(gm, cm)| {
            assert_eq!(gm.len(), cm.len());
            let mut worst = (0.0f64, 0usize);
            for (p, (&a, &b)) in gm.iter().zip(cm).enumerate() {
                let e = if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() {
                    if a.to_bits() == b.to_bits() { 0.0 } else { f64::INFINITY }
                } else {
                    (a as f64 - b as f64).abs() / (b as f64).abs().max(1.0)
                };
                if e > worst.0 || (e.is_nan() && !worst.0.is_nan()) {
                    worst = (e, p);
                }
            }
            worst
        })
        .collect()
}

/// Compare and return the worst error per method (for the summary line).
fn check(g: &mut GpuScorer, lg: &Logits, p: &ScorePlan, what: &str) -> Vec<f64> {
    let gm = g.score(lg, p).unwrap_or_else(|e| panic!("{what}: GPU failed: {e:#}"));
    let cm = CpuScorer.score(lg, p).expect("cpu");
    let errs = errors(&gm, &cm);
    for ((m, (e, px)), (gmap, cmap)) in p.methods.iter().zip(&errs).zip(gm.maps.iter().zip(&cm.maps)) {
        assert!(
            *e <= tol(*m),
            "{what}: {} differs at pixel {px}: gpu {} cpu {} (rel err {e:.3e} > {:.0e})",
            m.id(),
            gmap[*px],
            cmap[*px],
            tol(*m)
        );
    }
    errs.iter().map(|e| e.0).collect()
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

#[test]
fn adapters_are_listed() {
    let list = list_adapters();
    for a in &list {
        eprintln!("adapter: {a}");
    }
    if std::env::var("BENCH_REQUIRE_GPU").as_deref() == Ok("1") {
        assert!(!list.is_empty(), "BENCH_REQUIRE_GPU=1 but wgpu lists no adapter");
    }
}

#[test]
fn parity_all_methods_all_shapes() {
    let Some(mut g) = gpu() else { return };
    eprintln!("device: {}", g.device());
    let sizes = [(1, 1), (7, 13), (33, 65), (257, 3)];
    let mut worst = [0f64; ALL.len()];
    // 40 and 100 also cover the 64- and 128-class HEAT array sizes (150 is
    // the 256 one, and too large for the uniform-buffer path).
    for (ci, &c) in [2usize, 3, 13, 19, 150, 40, 100].iter().enumerate() {
        let cal = calibration(c, 1000 + c as u64);
        for (si, &(h, w)) in sizes.iter().enumerate() {
            if (c == 40 || c == 100) && si != 1 {
                continue;
            }
            let vals = make_values(c, h, w, (ci * 100 + si) as u64, Kind::Realistic);
            for half in [false, true] {
                for (t_msp, t_en) in [(1.0, 1.0), (0.7, 2.5)] {
                    let lg = logits(c, h, w, &vals, half);
                    let p = plan(&ALL, &cal, t_msp, t_en);
                    let what = format!("C={c} {h}x{w} {} T=({t_msp},{t_en})", lg.dtype());
                    for (k, e) in check(&mut g, &lg, &p, &what).into_iter().enumerate() {
                        worst[k] = worst[k].max(e);
                    }
                }
            }
        }
    }
    for (m, e) in ALL.iter().zip(worst) {
        eprintln!("worst relative error {:>9}: {e:.3e}", m.id());
    }
}

#[test]
fn parity_extreme_and_tied_logits() {
    let Some(mut g) = gpu() else { return };
    let mut worst = [0f64; ALL.len()];
    for &c in &[2usize, 3, 19, 150] {
        let cal = calibration(c, 7 + c as u64);
        for kind in [Kind::Extreme, Kind::AllEqual] {
            for &(h, w) in &[(1, 1), (7, 13), (11, 9)] {
                let vals = make_values(c, h, w, 99 + c as u64, kind);
                for half in [false, true] {
                    let lg = logits(c, h, w, &vals, half);
                    for (t_msp, t_en) in [(1.0, 1.0), (0.5, 3.0)] {
                        let p = plan(&ALL, &cal, t_msp, t_en);
                        let what = format!("{kind:?} C={c} {h}x{w} {} T=({t_msp},{t_en})", lg.dtype());
                        for (k, e) in check(&mut g, &lg, &p, &what).into_iter().enumerate() {
                            worst[k] = worst[k].max(e);
                        }
                    }
                }
            }
        }
    }
    for (m, e) in ALL.iter().zip(worst) {
        eprintln!("extreme/tied worst relative error {:>9}: {e:.3e}", m.id());
    }
    // All-equal logits: argmax is the first class, MSP is exactly −1/C.
    let c = 13;
    let cal = calibration(c, 5);
    let vals = make_values(c, 3, 5, 1, Kind::AllEqual);
    let lg = logits(c, 3, 5, &vals, false);
    let out = g
        .score(&lg, &plan(&[Method::Msp, Method::Sml], &cal, 1.0, 1.0))
        .unwrap();
    for (p, &v) in out.maps[0].iter().enumerate() {
        assert!((v as f64 + 1.0 / c as f64).abs() < 1e-7, "msp at {p}: {v}");
        let m = vals[p] as f64;
        let want = -(m - cal.sml.mean[0]) / cal.sml.std[0];
        assert!(
            (out.maps[1][p] as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
            "sml must use class 0 on ties"
        );
    }
}

/// `[method.gen]` (γ, M) and `[method.margin] on = "probs"` reach the
/// shader (through `Params`) and agree with the CPU reference.
#[test]
fn method_parameters_parity() {
    use bench::scores::params::{GenParams, MarginOn, MarginParams, MethodParams};
    let Some(mut g) = gpu() else { return };
    for &c in &[2usize, 19, 150] {
        let cal = calibration(c, 3 + c as u64);
        for kind in [Kind::Realistic, Kind::Extreme, Kind::AllEqual] {
            let vals = make_values(c, 7, 13, 5 + c as u64, kind);
            for half in [false, true] {
                let lg = logits(c, 7, 13, &vals, half);
                for (gamma, top_m) in [(0.5, Some(3)), (1.0, None), (0.02, Some(1))] {
                    let mut p = plan(&[Method::Gen, Method::Margin, Method::Msp], &cal, 1.0, 1.0);
                    p.params = MethodParams { gen_entropy: GenParams { gamma, top_m }, margin: MarginParams { on: MarginOn::Probs } };
                    check(&mut g, &lg, &p, &format!("{kind:?} C={c} {} {:?}", lg.dtype(), p.params));
                }
            }
        }
    }
}

#[test]
fn method_subsets_order_and_duplicates() {
    let Some(mut g) = gpu() else { return };
    let c = 19;
    let cal = calibration(c, 3);
    let vals = make_values(c, 17, 23, 42, Kind::Realistic);
    for half in [false, true] {
        let lg = logits(c, 17, 23, &vals, half);
        let plans: [&[Method]; 9] = [
            &[Method::MaxLogit],
            &[Method::Sml],
            &[Method::Energy],
            &[Method::Heat],
            &[Method::Entropy],
            &[Method::Msp, Method::Energy, Method::Entropy],
            &[Method::Entropy, Method::Heat],
            &[Method::Heat, Method::MaxLogit, Method::Msp, Method::Msp],
            &[Method::Sml, Method::Energy, Method::Heat, Method::Msp, Method::MaxLogit],
        ];
        for methods in plans {
            let p = plan(methods, &cal, 1.3, 0.9);
            check(&mut g, &lg, &p, &format!("{methods:?} {}", lg.dtype()));
        }
        // no methods: no maps (GPU only: CpuScorer panics on an empty plan)
        let out = g.score(&lg, &plan(&[], &cal, 1.0, 1.0)).unwrap();
        assert!(out.maps.is_empty());
        // no calibration needed for these
        let p = ScorePlan {
            methods: vec![Method::Msp, Method::MaxLogit],
            msp_temperature: 1.0,
            energy_temperature: 1.0,
            calibration: None,
            sml_post: Default::default(),
            heat_post: Default::default(), params: Default::default(),
        };
        check(&mut g, &lg, &p, "no calibration");
    }
}

#[test]
fn tiling_gives_identical_output() {
    let Some(g) = gpu() else { return };
    let mut g = g;
    let mut tiny = match GpuScorer::new(true) {
        Ok(t) => t.with_max_binding(4096),
        Err(e) => panic!("second adapter open failed: {e:#}"),
    };
    assert_eq!(tiny.max_binding(), 4096);
    let mut small_tiles = GpuScorer::new(true).unwrap().with_tile_bytes(1000);
    for &(c, h, w) in &[(19usize, 33usize, 65usize), (3, 257, 3), (13, 31, 31)] {
        let cal = calibration(c, 11);
        let vals = make_values(c, h, w, 5, Kind::Realistic);
        for half in [false, true] {
            let lg = logits(c, h, w, &vals, half);
            let p = plan(&ALL, &cal, 0.8, 1.7);
            let whole = g.score(&lg, &p).unwrap();
            // 4096-byte bindings: C=19 f32 → 53-pixel tiles, f16 → 107 (odd
            // tile lengths put class rows at odd f16 offsets).
            for t in [&mut tiny, &mut small_tiles] {
                let tiled = t.score(&lg, &p).unwrap();
                for (m, (a, b)) in p.methods.iter().zip(whole.maps.iter().zip(&tiled.maps)) {
                    let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{} C={c} {h}x{w} {}: tiled output differs", m.id(), lg.dtype());
                }
            }
            check(&mut tiny, &lg, &p, "tiled");
        }
    }
    // buffers are reused across images of different sizes, both directions
    let cal = calibration(19, 11);
    for &(h, w) in &[(64, 64), (3, 5), (128, 33), (1, 1)] {
        let vals = make_values(19, h, w, h as u64, Kind::Realistic);
        let lg = logits(19, h, w, &vals, true);
        check(&mut g, &lg, &plan(&ALL, &cal, 1.0, 1.0), "reuse");
        check(&mut tiny, &lg, &plan(&ALL, &cal, 1.0, 1.0), "reuse tiled");
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let Some(mut g) = gpu() else { return };
    let cal = calibration(3, 1);
    let vals = make_values(3, 4, 4, 1, Kind::Realistic);
    // class count disagrees with the calibration
    let lg4 = Logits {
        c: 4,
        h: 3,
        w: 4,
        data: LogitData::F32(vals.clone()),
    };
    let e = g.score(&lg4, &plan(&ALL, &cal, 1.0, 1.0)).unwrap_err();
    assert!(format!("{e:#}").contains("classes"), "{e:#}");
    // data length disagrees with the shape
    let bad = Logits {
        c: 3,
        h: 5,
        w: 4,
        data: LogitData::F32(vals.clone()),
    };
    assert!(g.score(&bad, &plan(&[Method::MaxLogit], &cal, 1.0, 1.0)).is_err());
    // SML without calibration
    let lg = logits(3, 4, 4, &vals, false);
    let p = ScorePlan {
        methods: vec![Method::Sml],
        msp_temperature: 1.0,
        energy_temperature: 1.0,
        calibration: None,
        sml_post: Default::default(),
        heat_post: Default::default(), params: Default::default(),
    };
    assert!(g.score(&lg, &p).is_err());
    // HEAT from a calibration fitted without HEAT
    let mut no_heat = cal.clone();
    no_heat.heat.k = 0;
    no_heat.heat.whiten.clear();
    no_heat.heat.centers.clear();
    assert!(g.score(&lg, &plan(&[Method::Heat], &no_heat, 1.0, 1.0)).is_err());
    // bad temperatures
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300] {
        assert!(g.score(&lg, &plan(&[Method::Msp], &cal, t, 1.0)).is_err(), "T={t}");
        assert!(g.score(&lg, &plan(&[Method::Energy], &cal, 1.0, t)).is_err(), "T={t}");
    }
    // HEAT above the shader's class capacity: a clear error; the other
    // methods still work at that C.
    let c = 300;
    let mut big = cal.clone();
    big.sml.mean = vec![1.0; c];
    big.sml.std = vec![1.0; c];
    big.heat.c = c;
    big.heat.k = 1;
    big.heat.whiten = vec![0.0; c * c];
    big.heat.centers = vec![0.0; c];
    let vals = make_values(c, 2, 3, 2, Kind::Realistic);
    let lg = logits(c, 2, 3, &vals, false);
    let e = g.score(&lg, &plan(&[Method::Heat], &big, 1.0, 1.0)).unwrap_err();
    assert!(format!("{e:#}").contains("at most"), "{e:#}");
    check(
        &mut g,
        &lg,
        &plan(
            &[Method::MaxLogit, Method::Msp, Method::Energy, Method::Sml],
            &big,
            1.0,
            1.0,
        ),
        "C=300",
    );
    // and the scorer is still usable afterwards
    check(
        &mut g,
        &logits(3, 4, 4, &make_values(3, 4, 4, 1, Kind::Realistic), true),
        &plan(&ALL, &cal, 1.0, 1.0),
        "after errors",
    );
    // empty image
    let empty = Logits {
        c: 3,
        h: 0,
        w: 5,
        data: LogitData::F32(vec![]),
    };
    let out = g.score(&empty, &plan(&ALL, &cal, 1.0, 1.0)).unwrap();
    assert!(out.maps.iter().all(|m| m.is_empty()) && out.maps.len() == ALL.len());
}

#[test]
fn f16_subnormal_logits_are_decoded_exactly() {
    let Some(mut g) = gpu() else { return };
    // binary16 subnormals (|x| < 2^-14) and the smallest normals: a driver
    // that flushed them would be off by up to 6e-5 in max_logit.
    let (c, h, w) = (3usize, 5usize, 7usize);
    let n = h * w;
    let mut r = Rng::new(77);
    let mut vals = vec![0f32; c * n];
    for v in vals.iter_mut() {
        let bits = (1 + r.below(0x03ff) as u16) | if r.below(2) == 1 { 0x8000 } else { 0 };
        *v = f16::from_bits(bits).to_f32();
    }
    let cal = calibration(c, 9);
    let lg = logits(c, h, w, &vals, true);
    let p = plan(&[Method::MaxLogit, Method::Msp, Method::Energy], &cal, 1.0, 1.0);
    check(&mut g, &lg, &p, "f16 subnormals");
    let out = g.score(&lg, &plan(&[Method::MaxLogit], &cal, 1.0, 1.0)).unwrap();
    let cpu = CpuScorer
        .score(&lg, &plan(&[Method::MaxLogit], &cal, 1.0, 1.0))
        .unwrap();
    assert_eq!(out.maps[0], cpu.maps[0], "max_logit of f16 subnormals must be exact");
}

/// Entropy on the GPU: its `xs` sum is accumulated at T = 1 whichever slot
/// of `s` holds T = 1 (alone, after MSP/energy temperatures, or shared with
/// them), and its values are those of softmax entropy: 0 for a one-hot
/// softmax, log C for all-equal logits.
#[test]
fn entropy_parity_and_known_values() {
    let Some(mut g) = gpu() else { return };
    let mut worst = 0f64;
    for &c in &[2usize, 5, 19, 150] {
        let cal = calibration(c, 31 + c as u64);
        for kind in [Kind::Realistic, Kind::Extreme, Kind::AllEqual] {
            let vals = make_values(c, 9, 31, 7 + c as u64, kind);
            for half in [false, true] {
                let lg = logits(c, 9, 31, &vals, half);
                for (methods, t_msp, t_en) in [
                    (&[Method::Entropy][..], 0.5, 2.0),
                    (&[Method::Msp, Method::Energy, Method::Entropy][..], 0.5, 2.0),
                    (&[Method::Entropy, Method::Msp][..], 1.0, 3.0),
                    (&[Method::Energy, Method::Entropy][..], 1.0, 1.0),
                ] {
                    let p = plan(methods, &cal, t_msp, t_en);
                    let what = format!("{kind:?} C={c} {} {methods:?} T=({t_msp},{t_en})", lg.dtype());
                    let e = check(&mut g, &lg, &p, &what);
                    worst = worst.max(*e.last().unwrap());
                }
            }
        }
    }
    eprintln!("entropy worst relative error: {worst:.3e}");
    // known values
    let c = 7;
    let cal = calibration(c, 3);
    let mut vals = vec![0f32; c * 2];
    vals[0] = 1e4; // pixel 0: one-hot softmax (class 0)
    for k in 0..c {
        vals[k * 2 + 1] = 2.5; // pixel 1: uniform softmax
    }
    let out = g.score(&logits(c, 1, 2, &vals, false), &plan(&[Method::Entropy], &cal, 1.0, 1.0)).unwrap();
    assert_eq!(out.maps[0][0], 0.0);
    assert!((out.maps[0][1] as f64 - (c as f64).ln()).abs() < 1e-6, "{}", out.maps[0][1]);
}
