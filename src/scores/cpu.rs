//! The CPU reference of every score, in f64.
//!
//! Why: this is the definition the WGSL pass is tested against and the path
//! that runs when no adapter exists. Each method is one small function of a
//! pixel's logits so the formulas can be read next to SPEC §4.

use super::{HeatParams, Logits, Method, ScoreMaps, ScorePlan, Scorer, SmlStats};
use anyhow::{Context, Result};
use rayon::prelude::*;

/// Pixels per parallel work item; fixed so results never depend on scheduling.
const CHUNK: usize = 4096;

/// `max_c z_c` and the first index attaining it (numpy `argmax` semantics).
#[inline]
pub fn max_argmax(z: &[f64]) -> (f64, usize) {
    let mut best = z[0];
    let mut arg = 0;
    for (i, &v) in z.iter().enumerate().skip(1) {
        if v > best {
            best = v;
            arg = i;
        }
    }
    (best, arg)
}

/// Stable `log Σ exp(z_c / t)`.
#[inline]
pub fn logsumexp(z: &[f64], t: f64) -> f64 {
    let m = max_argmax(z).0 / t;
    let s: f64 = z.iter().map(|&v| (v / t - m).exp()).sum();
    m + s.ln()
}

/// Max Logit (Hendrycks et al. 2022): `-max_c z_c`.
#[inline]
pub fn max_logit(z: &[f64]) -> f64 {
    -max_argmax(z).0
}

/// MSP (Hendrycks & Gimpel 2017): `-max_c softmax(z/T)_c = -1 / Σ exp(z_c/T - max/T)`.
#[inline]
pub fn msp(z: &[f64], t: f64) -> f64 {
    let m = max_argmax(z).0 / t;
    let s: f64 = z.iter().map(|&v| (v / t - m).exp()).sum();
    -1.0 / s
}

/// Energy (Liu et al. 2020): `-T · logsumexp(z/T)`.
#[inline]
pub fn energy(z: &[f64], t: f64) -> f64 {
    -t * logsumexp(z, t)
}

/// Standardized Max Logit (Jung et al. 2021), plain variant:
/// `-(max z - μ_ĉ) / σ_ĉ` with ĉ the predicted class.
#[inline]
pub fn sml(z: &[f64], s: &SmlStats) -> f64 {
    let (m, c) = max_argmax(z);
    -(m - s.mean[c]) / s.std[c]
}

/// Class-conditional Gaussian energy with tied covariance:
/// `-logsumexp_k(-½ ‖W x - W μ_k‖²)` where `W = L⁻¹`, `Σ = L Lᵀ`.
/// `u` is scratch of length C.
#[inline]
pub fn gmm_energy(z: &[f64], h: &HeatParams, u: &mut [f64]) -> f64 {
    let c = h.c;
    for (i, ui) in u.iter_mut().enumerate() {
        let row = &h.whiten[i * c..i * c + i + 1];
        *ui = row.iter().zip(z).map(|(a, b)| a * b).sum();
    }
    // -½ d_k for every fitted class, then a stable logsumexp.
    let mut best = f64::NEG_INFINITY;
    let mut acc = 0.0;
    for k in 0..h.k {
        let v = &h.centers[k * c..(k + 1) * c];
        let d: f64 = u.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum();
        let x = -0.5 * d;
        // online logsumexp
        if x > best {
            acc = acc * (best - x).exp() + 1.0;
            best = x;
        } else {
            acc += (x - best).exp();
        }
    }
    -(best + acc.ln())
}

/// HEAT from logits (SPEC §4.1): soft-min of the z-scored logit energy and
/// the z-scored class-Gaussian energy: `-log(exp(-Ẽ_el) + exp(-Ẽ_gmm))`.
#[inline]
pub fn heat(z: &[f64], h: &HeatParams, u: &mut [f64]) -> f64 {
    let el = (-logsumexp(z, 1.0) - h.el_mean) / h.el_std;
    let gm = (gmm_energy(z, h, u) - h.gmm_mean) / h.gmm_std;
    // -logsumexp(-el, -gm), stable
    let a = -el;
    let b = -gm;
    let m = a.max(b);
    -(m + ((a - m).exp() + (b - m).exp()).ln())
}

/// One method at one pixel.
#[inline]
pub fn score_one(method: Method, z: &[f64], plan: &ScorePlan, u: &mut [f64]) -> f64 {
    match method {
        Method::MaxLogit => max_logit(z),
        Method::Msp => msp(z, plan.msp_temperature),
        Method::Energy => energy(z, plan.energy_temperature),
        Method::Sml => sml(z, plan.sml().expect("SML needs calibration")),
        Method::Heat => heat(z, plan.heat().expect("HEAT needs calibration"), u),
    }
}

/// All requested methods at one pixel, sharing the work the definitions
/// have in common (max, argmax and the T = 1 softmax sum are computed once).
/// Bit-identical to calling [`score_one`] per method: the shared values are
/// the same floating-point operations.
#[inline]
pub fn score_pixel(z: &[f64], plan: &ScorePlan, u: &mut [f64], out: &mut [f32]) {
    let (m, arg) = max_argmax(z);
    let mut s1: Option<f64> = None; // Σ exp(z_c − max), i.e. T = 1
    let mut sum1 = |z: &[f64]| *s1.get_or_insert_with(|| z.iter().map(|&v| (v / 1.0 - m).exp()).sum());
    for (o, &method) in out.iter_mut().zip(&plan.methods) {
        let v = match method {
            Method::MaxLogit => -m,
            Method::Msp if plan.msp_temperature == 1.0 => -1.0 / sum1(z),
            Method::Energy if plan.energy_temperature == 1.0 => -(m + sum1(z).ln()),
            Method::Sml => {
                let st = plan.sml().expect("SML needs calibration");
                -(m - st.mean[arg]) / st.std[arg]
            }
            Method::Heat => {
                let h = plan.heat().expect("HEAT needs calibration");
                let el = (-(m + sum1(z).ln()) - h.el_mean) / h.el_std;
                let gm = (gmm_energy(z, h, u) - h.gmm_mean) / h.gmm_std;
                let (a, b) = (-el, -gm);
                let mx = a.max(b);
                -(mx + ((a - mx).exp() + (b - mx).exp()).ln())
            }
            other => score_one(other, z, plan, u),
        };
        *o = v as f32;
    }
}

/// The CPU scorer: rayon over fixed pixel chunks, f64 inside, f32 out.
#[derive(Debug, Default)]
pub struct CpuScorer;

impl Scorer for CpuScorer {
    fn device(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn score(&mut self, logits: &Logits, plan: &ScorePlan) -> Result<ScoreMaps> {
        if plan.methods.iter().any(|m| m.needs_calibration()) {
            let cal = plan
                .calibration
                .as_ref()
                .context("SML/HEAT requested without calibration statistics")?;
            anyhow::ensure!(
                cal.sml.mean.len() == logits.c,
                "calibration has {} classes but logits have {}",
                cal.sml.mean.len(),
                logits.c
            );
            if plan.methods.contains(&Method::Heat) {
                let h = &cal.heat;
                anyhow::ensure!(
                    h.c == logits.c && h.k >= 1 && h.whiten.len() == h.c * h.c && h.centers.len() == h.k * h.c,
                    "HEAT requested but the calibration has no fitted Gaussian for {} classes",
                    logits.c
                );
            }
        }
        let n = logits.pixels();
        let nm = plan.methods.len();
        if nm == 0 {
            return Ok(ScoreMaps { h: logits.h, w: logits.w, maps: vec![] });
        }
        // pixel-major interleaved buffer, then split per method
        let mut inter = vec![0f32; n * nm];
        inter
            .par_chunks_mut(CHUNK * nm)
            .enumerate()
            .for_each(|(ci, out)| {
                let mut z = vec![0f64; logits.c];
                let mut u = vec![0f64; logits.c];
                let p0 = ci * CHUNK;
                for (j, o) in out.chunks_mut(nm).enumerate() {
                    logits.pixel(p0 + j, &mut z);
                    score_pixel(&z, plan, &mut u, o);
                }
            });
        let mut maps = vec![Vec::with_capacity(n); nm];
        for px in inter.chunks(nm) {
            for (map, &v) in maps.iter_mut().zip(px) {
                map.push(v);
            }
        }
        Ok(ScoreMaps {
            h: logits.h,
            w: logits.w,
            maps,
        })
    }
}
