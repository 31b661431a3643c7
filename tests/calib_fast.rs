//! The calibration fit on the fast scorer's blocks (`Kernels::Fast`, what
//! `bench run` uses) against the f64 reference kernels: pass 1's sums (SML
//! moments, HEAT's Σx and Σxxᵀ) bit-identical; HEAT's standardisation
//! moments within 3e-7 absolute (each fast energy is within 2.4e-7 of the
//! reference's, see `scores::cpu::fast`; a mean or a population std of
//! values each off by at most ε moves by at most ε; 0.6e-7 of slack for
//! the f64 rounding of the moments themselves). f16 and f32, logit and
//! feature space, partial blocks and several chunks, adversarial logits.

mod common;
use common::{Rng, logits};

use anyhow::Result;
use bench::data::label;
use bench::scores::Logits;
use bench::scores::calib::{Calibration, Kernels, image_sums_with};

/// Bound on |fast − reference| of each standardisation moment (module docs).
const MOMENT_TOL: f64 = 3e-7;

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A winning class plus noise (segmentation-like).
    Realistic,
    /// Uniform in ±1e4.
    Huge,
    /// A large common offset (the shift of the HEAT sums matters).
    Offset,
}

fn values(kind: Kind, c: usize, n: usize, r: &mut Rng) -> Vec<f32> {
    let mut v = vec![0f32; c * n];
    for p in 0..n {
        let win = r.below(c);
        for k in 0..c {
            let bump = if k == win { 5.0 } else { 0.0 };
            v[k * n + p] = match kind {
                Kind::Realistic => (1.5 * r.normal() + bump) as f32,
                Kind::Huge => (r.unif() * 2e4 - 1e4) as f32,
                Kind::Offset => (1000.0 + r.normal() + bump) as f32,
            };
        }
    }
    v
}

/// Mostly normal pixels, some anomalies and void, and an all-anomaly run of
/// 300 pixels (whole blocks without a normal pixel are skipped).
fn labels(n: usize, r: &mut Rng) -> Vec<u8> {
    (0..n)
        .map(|p| {
            if (1000..1300).contains(&p) {
                return 1;
            }
            match r.below(12) {
                0 => 1,
                1 => label::VOID,
                _ => label::NORMAL,
            }
        })
        .collect()
}

type Image = (Logits, Option<Logits>, Vec<u8>);

fn images(kind: Kind, c: usize, d: usize, half: bool, seed: u64) -> Vec<Image> {
    let mut r = Rng::new(seed);
    // 97×181 = 17,557 pixels: three chunks of 8,192, the last partial, and a
    // partial last block
    let (h, w) = (97, 181);
    (0..2)
        .map(|_| {
            let lg = logits(c, h, w, &values(kind, c, h * w, &mut r), half);
            let f = (d > 0).then(|| logits(d, h, w, &values(Kind::Realistic, d, h * w, &mut r), half));
            (lg, f, labels(h * w, &mut r))
        })
        .collect()
}

fn fit(kernels: Kernels, imgs: &[Image]) -> Calibration {
    let mut visit = |f: &mut dyn FnMut(&Logits, Option<&Logits>, &[u8]) -> Result<()>| -> Result<()> {
        for (l, ft, lab) in imgs {
            f(l, ft.as_ref(), lab)?;
        }
        Ok(())
    };
    Calibration::fit_with(kernels, "calibration", false, true, &mut visit).expect("calibration fit")
}

fn cases() -> Vec<(String, Vec<Image>)> {
    let mut out = vec![];
    for (c, d) in [(2, 0), (13, 0), (19, 0), (13, 7)] {
        for kind in [Kind::Realistic, Kind::Huge, Kind::Offset] {
            for half in [false, true] {
                let seed = (c * 100 + d * 10) as u64 + half as u64;
                out.push((format!("C={c} D={d} {kind:?} half={half}"), images(kind, c, d, half, seed)));
            }
        }
    }
    out
}

#[test]
fn pass1_sums_are_bit_identical() {
    for (tag, imgs) in cases() {
        let shift: Vec<f64> = vec![0.25; imgs[0].1.as_ref().map_or(imgs[0].0.c, |f| f.c)];
        for (lg, f, lab) in &imgs {
            for heat in [false, true] {
                let fast = image_sums_with(Kernels::Fast, lg, f.as_ref(), lab, heat, &shift);
                let refr = image_sums_with(Kernels::Reference, lg, f.as_ref(), lab, heat, &shift);
                // serde_json writes shortest round-trip floats: equal text ⇔ equal bits
                assert_eq!(serde_json::to_string(&fast).unwrap(), serde_json::to_string(&refr).unwrap(), "{tag} heat={heat}");
            }
        }
    }
}

#[test]
fn fit_agrees_with_reference() {
    let mut worst = 0f64;
    for (tag, imgs) in cases() {
        let fast = fit(Kernels::Fast, &imgs);
        let refr = fit(Kernels::Reference, &imgs);
        // pass 1 is bit-identical: SML and the Gaussians
        assert_eq!(serde_json::to_string(&fast.sml).unwrap(), serde_json::to_string(&refr.sml).unwrap(), "{tag}: SML");
        assert_eq!(fast.heat.whiten, refr.heat.whiten, "{tag}: whitening");
        assert_eq!(fast.heat.centers, refr.heat.centers, "{tag}: centres");
        // pass 2: the energies' moments within the stated bound
        let (h, g) = (&fast.heat, &refr.heat);
        for (what, a, b) in [("el_mean", h.el_mean, g.el_mean), ("el_std", h.el_std, g.el_std), ("gmm_mean", h.gmm_mean, g.gmm_mean), ("gmm_std", h.gmm_std, g.gmm_std)] {
            let e = (a - b).abs();
            worst = worst.max(e);
            assert!(e <= MOMENT_TOL, "{tag}: {what}: fast {a} vs reference {b} (|Δ| {e:.3e} > {MOMENT_TOL:e})");
        }
    }
    eprintln!("worst |Δ| of a standardisation moment: {worst:.3e}");
}

#[test]
fn fit_default_is_the_fast_one() {
    let (_, imgs) = cases().swap_remove(7);
    let mut visit = |f: &mut dyn FnMut(&Logits, Option<&Logits>, &[u8]) -> Result<()>| -> Result<()> {
        for (l, ft, lab) in &imgs {
            f(l, ft.as_ref(), lab)?;
        }
        Ok(())
    };
    let default = Calibration::fit("calibration", false, true, &mut visit).unwrap();
    let fast = fit(Kernels::Fast, &imgs);
    assert_eq!(serde_json::to_string(&default).unwrap(), serde_json::to_string(&fast).unwrap());
}
