//! KL matching (Hendrycks et al. 2022, "Scaling Out-of-Distribution
//! Detection for Real-World Settings"): the fit and the f64 score.
//!
//! Fit: `d_c` = mean softmax (T = 1) of the calibration split's
//! in-distribution pixels whose first argmax is `c`. Score:
//! `KL(p ‖ d_ĉ) = Σ_j p_j (log p_j − log d_ĉj)`, `ĉ` = the pixel's first
//! argmax; higher = more anomalous (`0 · log 0 = 0`).
//!
//! Why a file of its own: its statistic (a C×C matrix of summed softmax
//! vectors) shares nothing with SML's moments or HEAT's Gaussians but the
//! calibration pass that visits the pixels, so it has its own accumulator,
//! folded in image order like [`super::calib::Sums`] (a sharded fit is
//! bit-identical to a local one), and its own entry in `calibration.json`.
//!
//! A class no calibration pixel was predicted as has no `d_c`: pytorch-ood's
//! `KLMatching` raises `ValueError("Label … not fitted")` when a test pixel
//! is predicted as it, and OpenOOD's `KLMatchingPostprocessor` uses the
//! one-hot `e_c` (an infinite KL for every non-one-hot `p`, harmless there
//! only because it takes the minimum KL over all templates). bench uses the
//! uniform `1/C` for such a class, with a warning naming it, so every score
//! stays finite and a run does not fail on the first rare prediction.
//! `d_cj` is floored at the smallest normal f64 so `log d` stays finite.

use super::Calibration;
use super::cpu::{Pixel, max_argmax};
use crate::data::{Logits, label};
use anyhow::{Result, bail, ensure};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

const CHUNK: usize = 8192;

/// One image's (or one image range's) sums: per predicted class the pixel
/// count and `Σ softmax(z)` (row-major C×C).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KlSums {
    c: usize,
    n: Vec<u64>,
    sp: Vec<f64>,
}

impl KlSums {
    fn new(c: usize) -> KlSums {
        KlSums { c, n: vec![0; c], sp: vec![0.0; c * c] }
    }
    fn merge(&mut self, o: &KlSums) {
        for (a, b) in self.n.iter_mut().zip(&o.n) {
            *a += b;
        }
        for (a, b) in self.sp.iter_mut().zip(&o.sp) {
            *a += b;
        }
    }
}

/// The sums over one image's in-distribution pixels (fixed chunks, reduced
/// in order: independent of the thread count).
pub fn image_sums(lg: &Logits, lab: &[u8]) -> KlSums {
    let c = lg.c;
    let parts: Vec<KlSums> = (0..lg.pixels().div_ceil(CHUNK))
        .into_par_iter()
        .map(|ci| {
            let mut s = KlSums::new(c);
            let mut z = vec![0f64; c];
            for p in ci * CHUNK..((ci + 1) * CHUNK).min(lg.pixels()) {
                if lab[p] != label::NORMAL {
                    continue;
                }
                lg.pixel(p, &mut z);
                let (m, k) = max_argmax(&z);
                let sum: f64 = z.iter().map(|&v| (v - m).exp()).sum();
                s.n[k] += 1;
                for (acc, &v) in s.sp[k * c..(k + 1) * c].iter_mut().zip(&z) {
                    *acc += (v - m).exp() / sum;
                }
            }
            s
        })
        .collect();
    let mut t = KlSums::new(c);
    for p in &parts {
        t.merge(p);
    }
    t
}

/// The fitted templates (`calibration.json`'s `kl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlDists {
    pub c: usize,
    /// `d_c` row by row (C×C): the mean softmax of the pixels predicted `c`.
    pub dists: Vec<f64>,
    /// Calibration pixels per predicted class.
    pub count: Vec<u64>,
    /// Classes never predicted: their row is uniform (module docs).
    pub unfitted: Vec<usize>,
    #[serde(skip)]
    log: OnceLock<Vec<f64>>,
}

impl KlDists {
    /// `log max(d_cj, MIN_POSITIVE)`, row-major C×C (computed once).
    pub fn log_dists(&self) -> &[f64] {
        self.log.get_or_init(|| self.dists.iter().map(|&d| d.max(f64::MIN_POSITIVE).ln()).collect())
    }

    /// Shapes and values a scorer can use (`calibration.json` checks).
    pub fn check(&self, c: usize) -> Result<()> {
        ensure!(self.c == c && self.dists.len() == c * c && self.count.len() == c, "KL-matching templates do not have {c} classes");
        ensure!(self.dists.iter().all(|d| d.is_finite() && *d >= 0.0), "KL-matching templates must be finite and non-negative");
        Ok(())
    }
}

/// The templates from the per-image sums, folded in image order; the
/// classes never predicted get the uniform row, with a warning.
pub fn fit(images: &[KlSums], split: &str, warnings: &mut Vec<String>) -> Result<KlDists> {
    let Some(first) = images.first() else { bail!("calibration split '{split}' has no images") };
    let c = first.c;
    let mut t = KlSums::new(c);
    for im in images {
        ensure!(im.c == c, "calibration images disagree on the class count ({c} vs {})", im.c);
        t.merge(im);
    }
    let mut dists = vec![1.0 / c as f64; c * c];
    let mut unfitted = vec![];
    for k in 0..c {
        if t.n[k] == 0 {
            unfitted.push(k);
            continue;
        }
        for (d, s) in dists[k * c..(k + 1) * c].iter_mut().zip(&t.sp[k * c..(k + 1) * c]) {
            *d = s / t.n[k] as f64;
        }
    }
    if !unfitted.is_empty() {
        warnings.push(format!("KL matching: classes {unfitted:?} were never predicted on calibration split '{split}' and use the uniform template"));
    }
    Ok(KlDists { c, dists, count: t.n, unfitted, log: OnceLock::new() })
}

/// The templates over every image a calibration visitor yields (the
/// in-process fit, e.g. the Python package's `calibrate`; `bench run` runs
/// [`image_sums`] inside its own calibration pass instead).
pub fn fit_visit(split: &str, visit: &mut super::calib::Visitor, warnings: &mut Vec<String>) -> Result<KlDists> {
    let mut images = vec![];
    visit(&mut |lg: &Logits, _: Option<&Logits>, lab: &[u8]| {
        images.push(image_sums(lg, lab));
        Ok(())
    })?;
    fit(&images, split, warnings)
}

/// kl_matching's [`super::Fit::check`]: templates for exactly `c` classes.
pub fn check_kl(cal: &Calibration, c: usize) -> Result<()> {
    let Some(kl) = &cal.kl else {
        bail!("kl_matching requested but the calibration has no KL-matching templates (a reused calibration.json written without kl_matching); refit or drop kl_matching");
    };
    kl.check(c)
}

/// `KL(p ‖ d_ĉ)` at one pixel in f64 (`S = Σ exp(z − max)`, `log p_j =
/// (z_j − max) − log S`).
pub fn kl_score(z: &[f64], max: f64, arg: usize, s: f64, kl: &KlDists) -> f64 {
    let c = z.len();
    let ld = &kl.log_dists()[arg * c..(arg + 1) * c];
    let ls = s.ln();
    z.iter().zip(ld).map(|(&v, &l)| {
        let e = (v - max).exp();
        if e == 0.0 { 0.0 } else { e / s * ((v - max) - ls - l) }
    }).sum()
}

/// `kl_matching`'s CPU reference (the method table's `cpu`).
pub fn kl_px(px: &mut Pixel, plan: &super::ScorePlan) -> f64 {
    let kl = plan.calibration.as_ref().and_then(|c| c.kl.as_ref()).expect("kl_matching needs calibration");
    let s = px.sum(1.0);
    kl_score(px.z, px.max, px.arg, s, kl)
}
