//! The fast f32 block scorer (`CpuScorer`) against the f64 reference
//! (`ReferenceScorer`): every score within 2e-6 relative or 1e-6 absolute
//! (|fast − ref| ≤ max(2e-6·|ref|, 1e-6)), every method, SML and HEAT with
//! a real fitted calibration (logit and feature space), f16 and f32,
//! random and adversarial logits; identical bytes whatever the rayon
//! thread count and the SIMD level.

mod common;
use common::{Rng, logits};

use anyhow::Result;
use bench::scores::cpu::{CpuScorer, ReferenceScorer, fast};
use bench::scores::{Calibration, HeatPost, Logits, Method, ScoreMaps, ScorePlan, Scorer, SmlPost};

const ALL: [Method; 9] = [Method::MaxLogit, Method::Msp, Method::Energy, Method::Sml, Method::Heat, Method::Entropy, Method::Margin, Method::Gen, Method::Rba];

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A winning class plus noise (segmentation-like).
    Realistic,
    /// Uniform in ±1e4.
    Huge,
    /// All classes equal per pixel (random level).
    Equal,
    /// f16 extremes: ±65504, ±subnormals, ±0, mixed with ordinary values.
    Extremes,
    /// Ties between the top two, near-ties, small spreads.
    Ties,
}

fn values(kind: Kind, c: usize, n: usize, r: &mut Rng) -> Vec<f32> {
    let mut v = vec![0f32; c * n];
    for p in 0..n {
        let win = r.below(c);
        let off = r.normal() * 3.0;
        let lvl = (r.unif() * 40.0 - 20.0) as f32;
        for k in 0..c {
            v[k * n + p] = match kind {
                Kind::Realistic => (off + 1.5 * r.normal() + if k == win { 5.0 } else { 0.0 }) as f32,
                Kind::Huge => (r.unif() * 2e4 - 1e4) as f32,
                Kind::Equal => lvl,
                Kind::Extremes => match r.below(7) {
                    0 => 65504.0,
                    1 => -65504.0,
                    2 => 6e-8,
                    3 => -6e-8,
                    4 => 0.0,
                    5 => (r.normal() * 1e3) as f32,
                    _ => r.normal() as f32,
                },
                Kind::Ties => {
                    if k == win || k == (win + 1) % c {
                        lvl
                    } else {
                        lvl - (r.below(4) as f32) * 1e-3 - (r.unif() as f32) * 1e-6
                    }
                }
            };
        }
    }
    v
}


/// A calibration fitted on realistic logits (optionally with features).
fn calibration(c: usize, d: usize, seed: u64) -> Calibration {
    let mut r = Rng::new(seed);
    let (h, w) = (30, 41);
    let imgs: Vec<(Logits, Option<Logits>, Vec<u8>)> = (0..3)
        .map(|_| {
            let v = values(Kind::Realistic, c, h * w, &mut r);
            let f = (d > 0).then(|| logits(d, h, w, &values(Kind::Realistic, d, h * w, &mut r), false));
            let lab = r.sparse_labels(h * w);
            (logits(c, h, w, &v, false), f, lab)
        })
        .collect();
    let mut visit = |f: &mut dyn FnMut(&Logits, Option<&Logits>, &[u8]) -> Result<()>| -> Result<()> {
        for (l, ft, lab) in &imgs {
            f(l, ft.as_ref(), lab)?;
        }
        Ok(())
    };
    Calibration::fit("calibration", false, true, &mut visit).expect("calibration fit")
}

fn plan(methods: &[Method], cal: Option<&Calibration>, t_msp: f64, t_en: f64) -> ScorePlan {
    ScorePlan {
        methods: methods.to_vec(),
        msp_temperature: t_msp,
        energy_temperature: t_en,
        calibration: cal.cloned(),
        sml_post: Default::default(),
        heat_post: Default::default(), params: Default::default(),
    }
}

/// Worst `|a − b| / max(2e-6·|b|, 1e-6)` per method (≤ 1 passes).
fn check(tag: &str, fast: &ScoreMaps, refm: &ScoreMaps, p: &ScorePlan, worst: &mut [f64; 9]) {
    assert_eq!(fast.maps.len(), refm.maps.len());
    for ((a, b), m) in fast.maps.iter().zip(&refm.maps).zip(&p.methods) {
        assert_eq!(a.len(), b.len());
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            let (x, y) = (x as f64, y as f64);
            assert!(x.is_finite() == y.is_finite(), "{tag} {m:?} px {i}: {x} vs {y}");
            if !y.is_finite() {
                assert_eq!(x, y);
                continue;
            }
            let e = (x - y).abs() / (2e-6 * y.abs()).max(1e-6);
            let slot = m.slot();
            worst[slot] = worst[slot].max((x - y).abs() / y.abs().max(1.0));
            assert!(e <= 1.0, "{tag} {m:?} px {i}: fast {x} vs reference {y} (|Δ| {:.3e})", (x - y).abs());
        }
    }
}

#[test]
fn fast_matches_reference() {
    let mut worst = [0f64; 9];
    let mut r = Rng::new(42);
    for &c in &[2usize, 13, 19, 150] {
        let cal = calibration(c, 0, c as u64);
        // odd sizes: partial blocks and chunks
        for &(h, w) in &[(37, 53), (1, 1), (3, 129)] {
            for kind in [Kind::Realistic, Kind::Huge, Kind::Equal, Kind::Extremes, Kind::Ties] {
                let v = values(kind, c, h * w, &mut r);
                for half in [false, true] {
                    let lg = logits(c, h, w, &v, half);
                    for (tm, te) in [(1.0, 1.0), (2.0, 0.5), (0.7, 1.0)] {
                        let p = plan(&ALL, Some(&cal), tm, te);
                        let f = CpuScorer.score(&lg, &p).unwrap();
                        let rf = ReferenceScorer.score(&lg, &p).unwrap();
                        check(&format!("C={c} {h}x{w} {kind:?} half={half} T=({tm},{te})"), &f, &rf, &p, &mut worst);
                    }
                }
            }
        }
    }
    for (m, e) in ALL.iter().zip(worst) {
        eprintln!("max |fast − reference| / max(1, |reference|): {:>10} {e:.3e}", m.id());
    }
}

/// Non-default `[method.gen]` (γ, M < C, M ≥ C) and `[method.margin] on =
/// "probs"`, every kind of logits, f16 and f32.
#[test]
fn method_parameters_match_reference() {
    use bench::scores::params::{GenParams, MarginOn, MarginParams, MethodParams};
    let mut r = Rng::new(77);
    let mut worst = [0f64; 9];
    let gens = [(0.5, Some(3)), (1.0, None), (0.02, Some(1)), (0.3, Some(200))];
    for &c in &[2usize, 19, 150] {
        for kind in [Kind::Realistic, Kind::Huge, Kind::Equal, Kind::Extremes, Kind::Ties] {
            let v = values(kind, c, 3 * 129, &mut r);
            for half in [false, true] {
                let lg = logits(c, 3, 129, &v, half);
                for &(gamma, top_m) in &gens {
                    let mut p = plan(&[Method::Gen, Method::Margin], None, 1.0, 1.0);
                    p.params = MethodParams { gen_entropy: GenParams { gamma, top_m }, margin: MarginParams { on: MarginOn::Probs } };
                    let f = CpuScorer.score(&lg, &p).unwrap();
                    let rf = ReferenceScorer.score(&lg, &p).unwrap();
                    check(&format!("C={c} {kind:?} half={half} {:?}", p.params), &f, &rf, &p, &mut worst);
                }
            }
        }
    }
    eprintln!("gen (γ, M) {:.3e}, margin on probs {:.3e}", worst[Method::Gen.slot()], worst[Method::Margin.slot()]);
}

#[test]
fn features_and_post_match_reference() {
    let (c, d) = (7, 12);
    let cal = calibration(c, d, 5);
    assert_eq!(cal.heat.dim(), d);
    let mut r = Rng::new(9);
    let (h, w) = (45, 61);
    let mut worst = [0f64; 9];
    for half in [false, true] {
        let lg = logits(c, h, w, &values(Kind::Realistic, c, h * w, &mut r), half);
        let ft = logits(d, h, w, &values(Kind::Realistic, d, h * w, &mut r), half);
        let p = plan(&[Method::Heat, Method::Sml, Method::Energy], Some(&cal), 1.0, 1.0);
        let f = CpuScorer.score_features(&lg, Some(&ft), &p).unwrap();
        let rf = ReferenceScorer.score_features(&lg, Some(&ft), &p).unwrap();
        check("features", &f, &rf, &p, &mut worst);
        assert!(CpuScorer.score(&lg, &p).is_err(), "HEAT on features without features");
        // post-processing (the same super::post functions on both)
        let cal13 = calibration(c, 0, 6);
        let mut p = plan(&[Method::Sml, Method::Heat], Some(&cal13), 1.0, 1.0);
        p.sml_post = SmlPost { boundary_suppression: true, dilated_smoothing: true, ..Default::default() };
        p.heat_post = HeatPost { spatial_window: 5, spatial_weight: 0.5 };
        let f = CpuScorer.score(&lg, &p).unwrap();
        let rf = ReferenceScorer.score(&lg, &p).unwrap();
        check("post", &f, &rf, &p, &mut worst);
        assert_eq!(fast::predictions(&lg), bench::scores::cpu::reference::predictions(&lg));
    }
}

fn bytes(m: &ScoreMaps) -> Vec<u32> {
    m.maps.iter().flatten().map(|x| x.to_bits()).collect()
}

#[test]
fn same_bytes_any_thread_count_and_simd_level() {
    let c = 19;
    let cal = calibration(c, 0, 3);
    let mut r = Rng::new(11);
    let (h, w) = (300, 217); // several chunks, a partial last block
    let lg = logits(c, h, w, &values(Kind::Realistic, c, h * w, &mut r), true);
    let p = plan(&ALL, Some(&cal), 1.3, 0.9);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| bytes(&CpuScorer.score(&lg, &p).unwrap()))
    };
    let one = run(1);
    assert_eq!(one, run(4), "1 vs 4 threads");
    let top = fast::simd_level();
    for level in 0..=top {
        fast::force_simd_level(level);
        assert_eq!(one, run(2), "SIMD level {level} vs {top}");
    }
    fast::force_simd_level(top);
}

#[test]
fn exp_and_ln_error_bounds() {
    // exp_f32 on [-87.3, 0]: ≤ 2 ulp (documented bound)
    let n = 1 << 22;
    let mut worst = 0f64;
    for i in 0..=n {
        let x = -87.3f32 * (i as f32 / n as f32);
        let got = fast::exp_f32(x) as f64;
        let want = (x as f64).exp();
        let ulp = (f32::EPSILON as f64) * want; // ulp of a value in [2^k, 2^k+1) ≤ eps·value
        worst = worst.max((got - want).abs() / ulp);
    }
    eprintln!("exp_f32 max error {worst:.3} ulp");
    assert!(worst <= 2.0, "exp_f32 error {worst} ulp");
    assert_eq!(fast::exp_f32(-90.0), 0.0);
    assert_eq!(fast::exp_f32(0.0), 1.0);
    // exp_f64 / ln_f64: far below f32 resolution
    let mut we = 0f64;
    let mut wl = 0f64;
    for i in 0..=200_000 {
        let x = -700.0 + 705.0 * i as f64 / 200_000.0;
        we = we.max((fast::exp_f64(x) - x.exp()).abs() / x.exp());
        let y = 1e-300f64.max((i as f64 / 1000.0).powi(3) + 1e-9);
        wl = wl.max((fast::ln_f64(y) - y.ln()).abs() / y.ln().abs().max(1.0));
    }
    eprintln!("exp_f64 max rel error {we:.3e}, ln_f64 max error {wl:.3e}");
    assert!(we < 1e-14 && wl < 1e-14, "{we} {wl}");
    assert_eq!(fast::ln_f64(1.0), 0.0);
}

/// HEAT's raw f64 energies (`fast::heat_energies`, what both the scores and
/// the calibration's standardisation read) against the reference's
/// `gmm_energy` and `−(max + ln S)` per pixel, every kind of logits: the
/// f32 exp terms of the two log-sum-exps bound each at 2.4e-7 absolute (2
/// ulp); the centred expansion of the Gaussian distances adds rounding of
/// the order of D·2⁻⁵³·(‖u'‖ + max‖v'‖)², far below that for realistic
/// logits and relative 1e-12 of the energy for extreme ones.
#[test]
fn heat_energies_match_reference() {
    use bench::scores::cpu::{BLOCK, Block, gmm_energy};
    let mut r = Rng::new(123);
    let (mut worst_abs, mut worst_rel) = (0f64, 0f64);
    for &c in &[2usize, 13, 19, 150] {
        let cal = calibration(c, 0, 40 + c as u64);
        let h = &cal.heat;
        let (hh, w) = (3, 129);
        for kind in [Kind::Realistic, Kind::Huge, Kind::Equal, Kind::Extremes, Kind::Ties] {
            let v = values(kind, c, hh * w, &mut r);
            for half in [false, true] {
                let lg = logits(c, hh, w, &v, half);
                let mut blk = Block::new(c, 0);
                let mut u = vec![0f64; c];
                let (mut el, mut gm) = ([0f64; BLOCK], [0f64; BLOCK]);
                for p0 in (0..hh * w).step_by(BLOCK) {
                    let n = BLOCK.min(hh * w - p0);
                    blk.load(&lg, None, p0, n, &[1.0], false);
                    fast::heat_energies(&mut blk, h, &mut el, &mut gm);
                    for l in 0..n {
                        let z: Vec<f64> = (0..c).map(|k| blk.z[k * BLOCK + l] as f64).collect();
                        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let want_el = -(m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln());
                        let want_gm = gmm_energy(&z, h, &mut u);
                        for (got, want) in [(el[l], want_el), (gm[l], want_gm)] {
                            let e = (got - want).abs();
                            let tol = 2.4e-7 + 1e-12 * want.abs();
                            assert!(e <= tol, "C={c} {kind:?} half={half} px {}: {got} vs {want} (|Δ| {e:.3e})", p0 + l);
                            if want.abs() <= 1e3 {
                                worst_abs = worst_abs.max(e);
                            } else {
                                worst_rel = worst_rel.max(e / want.abs());
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("HEAT energies: max |Δ| {worst_abs:.3e} (|E| ≤ 1e3), max |Δ|/|E| {worst_rel:.3e} (|E| > 1e3)");
}
