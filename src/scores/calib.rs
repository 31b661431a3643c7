//! Calibration statistics for SML and HEAT, fitted on in-distribution pixels.
//!
//! Why: SML and HEAT are only as honest as the split their statistics come
//! from. Fitting happens here, in f64, on the CPU, in a fixed reduction order,
//! so the fitted numbers are identical whichever device later scores the
//! test split, and so a fit on the test split is flagged as leakage.

use super::cpu::{gmm_energy, logsumexp, max_argmax};
use crate::data::{Logits, label};
use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Per-predicted-class mean and population std (ddof 0) of the max logit.
#[derive(Debug, Clone, Serialize)]
pub struct SmlStats {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Calibration pixels per predicted class.
    pub count: Vec<u64>,
    /// Classes that fell back to the pooled statistics (fewer than 2 pixels
    /// or zero spread).
    pub pooled_fallback: Vec<usize>,
}

/// HEAT parameters (SPEC §4.1). The class-conditional Gaussians share one
/// covariance `Σ = L Lᵀ`; we store the whitening matrix `W = L⁻¹` (lower
/// triangular, row-major C×C) and the whitened class means `W μ_k`, so the
/// Mahalanobis distance is a plain squared distance — no cancellation in f32.
#[derive(Debug, Clone, Serialize)]
pub struct HeatParams {
    pub c: usize,
    /// Number of fitted Gaussians (classes predicted at least once).
    pub k: usize,
    /// Class ids of the fitted Gaussians.
    pub classes: Vec<usize>,
    #[serde(skip)]
    pub whiten: Vec<f64>,
    #[serde(skip)]
    pub centers: Vec<f64>,
    /// Ridge added to the covariance diagonal (relative to its mean variance).
    pub ridge: f64,
    pub el_mean: f64,
    pub el_std: f64,
    pub gmm_mean: f64,
    pub gmm_std: f64,
}

/// Everything fitted on one model's calibration pixels.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// Split the statistics came from.
    pub split: String,
    /// True when fitted on the split being evaluated (no calibration split).
    pub leakage: bool,
    pub pixels: u64,
    pub sml: SmlStats,
    pub heat: HeatParams,
    pub warnings: Vec<String>,
}

/// Relative ridge: `Σ += RIDGE · mean(diag Σ) · I`. Keeps near-collinear logits
/// (common: logits of a softmax classifier are nearly rank C-1) invertible.
pub const RIDGE: f64 = 1e-6;

const CHUNK: usize = 8192;

/// Running mean / sum of squared deviations (Welford), merged with Chan's
/// formula. A constant input gives exactly zero spread, which the naive
/// `E[x²] − E[x]²` does not.
#[derive(Clone, Copy, Default, Debug, Serialize, Deserialize)]
pub struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    #[inline]
    fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
    fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        self.mean += d * o.n as f64 / n as f64;
        self.m2 += o.m2 + d * d * self.n as f64 * o.n as f64 / n as f64;
        self.n = n;
    }
    /// Population standard deviation (ddof 0).
    fn std(&self) -> f64 {
        if self.n == 0 { 0.0 } else { (self.m2 / self.n as f64).max(0.0).sqrt() }
    }
}

/// Pass-1 sums over one image's in-distribution pixels ([`image_sums`]).
/// Kept per image and folded in image order by [`Calibration::from_sums`],
/// so a fit from shards (consecutive image ranges) is bit-identical to a
/// fit in one process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sums {
    c: usize,
    n: Vec<u64>,
    /// Max logit per predicted class.
    sm: Vec<Moments>,
    // logits per predicted class: sum (K×C), global outer products (C×C)
    sx: Vec<f64>,
    sxx: Vec<f64>,
    full: bool,
}

impl Sums {
    fn new(c: usize, full: bool) -> Self {
        Sums {
            c,
            n: vec![0; c],
            sm: vec![Moments::default(); c],
            sx: if full { vec![0.0; c * c] } else { vec![] },
            sxx: if full { vec![0.0; c * c] } else { vec![] },
            full,
        }
    }

    /// Number of classes (logits per pixel) these sums are over.
    pub fn classes(&self) -> usize {
        self.c
    }

    fn merge(&mut self, o: &Sums) {
        for i in 0..self.c {
            self.n[i] += o.n[i];
            self.sm[i].merge(&o.sm[i]);
        }
        for (a, b) in self.sx.iter_mut().zip(&o.sx) {
            *a += b;
        }
        for (a, b) in self.sxx.iter_mut().zip(&o.sxx) {
            *a += b;
        }
    }
}

/// The logits of the first in-distribution pixel of an image, if any: the
/// shift of the HEAT sums (the first such pixel of the split, in image
/// order), so a large common offset does not cancel in Σxxᵀ − nμμᵀ.
pub fn first_normal(lg: &Logits, lab: &[u8]) -> Option<Vec<f64>> {
    let p = lab.iter().position(|&l| l == label::NORMAL)?;
    let mut z = vec![0.0; lg.c];
    lg.pixel(p, &mut z);
    Some(z)
}

/// Pass 1 over one image: SML moments per predicted class and, when `heat`,
/// the logit sums around `shift` (fixed chunks, reduced in order).
pub fn image_sums(lg: &Logits, lab: &[u8], heat: bool, shift: &[f64]) -> Sums {
    let c = lg.c;
    let parts: Vec<Sums> = (0..lg.pixels().div_ceil(CHUNK))
        .into_par_iter()
        .map(|ci| {
            let mut s = Sums::new(c, heat);
            let mut z = vec![0f64; c];
            let end = ((ci + 1) * CHUNK).min(lg.pixels());
            for p in ci * CHUNK..end {
                if lab[p] != label::NORMAL {
                    continue;
                }
                lg.pixel(p, &mut z);
                let (m, k) = max_argmax(&z);
                s.n[k] += 1;
                s.sm[k].push(m);
                if s.full {
                    for (zi, sh) in z.iter_mut().zip(shift) {
                        *zi -= sh;
                    }
                    for i in 0..c {
                        s.sx[k * c + i] += z[i];
                        for j in 0..=i {
                            s.sxx[i * c + j] += z[i] * z[j];
                        }
                    }
                }
            }
            s
        })
        .collect();
    let mut t = Sums::new(c, heat);
    for p in &parts {
        t.merge(p);
    }
    t
}

/// Pass 2 of HEAT over one image: moments of the two energies.
pub type EnergyMoments = [Moments; 2];

/// Visits every image of the calibration split: calls `f(logits, labels)`.
/// Called twice when HEAT needs its standardisation pass.
pub type Visitor<'a> = dyn FnMut(&mut dyn FnMut(&Logits, &[u8]) -> Result<()>) -> Result<()> + 'a;

impl Calibration {
    /// Fit SML statistics and (when `heat`) the HEAT Gaussian and the
    /// standardisation of both energies, over the in-distribution pixels the
    /// visitor yields. Deterministic: fixed chunks, reduced in order. The
    /// pipeline runs the same steps ([`image_sums`], [`from_sums`],
    /// [`energy_moments`], [`standardise`]) as separate, shardable passes.
    ///
    /// [`from_sums`]: Self::from_sums
    /// [`energy_moments`]: Self::energy_moments
    /// [`standardise`]: Self::standardise
    pub fn fit(split: &str, leakage: bool, heat: bool, visit: &mut Visitor) -> Result<Calibration> {
        let mut shift: Option<Vec<f64>> = None;
        let mut images = Vec::new();
        visit(&mut |lg: &Logits, lab: &[u8]| {
            if shift.is_none() {
                shift = first_normal(lg, lab);
            }
            if let Some(f) = images.first().map(|s: &Sums| s.c)
                && f != lg.c
            {
                bail!("calibration images disagree on the class count ({f} vs {})", lg.c);
            }
            images.push(image_sums(lg, lab, heat, shift.as_deref().unwrap_or(&[])));
            Ok(())
        })?;
        let mut cal = Calibration::from_sums(split, leakage, heat, &images, shift.as_deref().unwrap_or(&[]))?;
        if heat {
            let mut parts = Vec::new();
            visit(&mut |lg: &Logits, lab: &[u8]| {
                parts.push(cal.energy_moments(lg, lab));
                Ok(())
            })?;
            cal.standardise(&parts);
        }
        Ok(cal)
    }

    /// Pass 2 of HEAT over one image, with the Gaussian fitted by
    /// [`from_sums`](Self::from_sums).
    pub fn energy_moments(&self, lg: &Logits, lab: &[u8]) -> EnergyMoments {
        let (c, hp) = (lg.c, &self.heat);
        let parts: Vec<[Moments; 2]> = (0..lg.pixels().div_ceil(CHUNK))
            .into_par_iter()
            .map(|ci| {
                let mut a = [Moments::default(); 2];
                let mut z = vec![0f64; c];
                let mut u = vec![0f64; c];
                let end = ((ci + 1) * CHUNK).min(lg.pixels());
                for p in ci * CHUNK..end {
                    if lab[p] != label::NORMAL {
                        continue;
                    }
                    lg.pixel(p, &mut z);
                    a[0].push(-logsumexp(&z, 1.0));
                    a[1].push(gmm_energy(&z, hp, &mut u));
                }
                a
            })
            .collect();
        let mut acc = [Moments::default(); 2];
        for p in parts {
            acc[0].merge(&p[0]);
            acc[1].merge(&p[1]);
        }
        acc
    }

    /// Standardise both HEAT energies with the per-image moments of pass 2,
    /// folded in image order.
    pub fn standardise(&mut self, images: &[EnergyMoments]) {
        let mut acc = [Moments::default(); 2];
        for p in images {
            acc[0].merge(&p[0]);
            acc[1].merge(&p[1]);
        }
        let hp = &mut self.heat;
        let (es, gs) = (acc[0].std(), acc[1].std());
        hp.el_mean = acc[0].mean;
        hp.gmm_mean = acc[1].mean;
        hp.el_std = if es > 0.0 { es } else { 1.0 };
        hp.gmm_std = if gs > 0.0 { gs } else { 1.0 };
    }

    /// SML statistics and (when `heat`) the HEAT Gaussian from the per-image
    /// sums of pass 1, folded in image order; `shift` is the one the sums
    /// were taken around. HEAT's energy standardisation is left at (0, 1)
    /// until [`standardise`](Self::standardise).
    pub fn from_sums(split: &str, leakage: bool, heat: bool, images: &[Sums], shift: &[f64]) -> Result<Calibration> {
        let mut total: Option<Sums> = None;
        for im in images {
            let t = total.get_or_insert_with(|| Sums::new(im.c, heat));
            if t.c != im.c {
                bail!("calibration images disagree on the class count ({} vs {})", t.c, im.c);
            }
            t.merge(im);
        }
        let Some(s) = total else {
            bail!("calibration split '{split}' has no images");
        };
        let c = s.c;
        let npix: u64 = s.n.iter().sum();
        if npix < 2 {
            bail!("calibration split '{split}' has fewer than 2 in-distribution pixels");
        }
        let mut warnings = Vec::new();

        // --- SML: per-class mean / population std of the max logit --------
        let mut pooled = Moments::default();
        for m in &s.sm {
            pooled.merge(m);
        }
        let (pooled_mean, pooled_std) = (pooled.mean, pooled.std());
        if pooled_std == 0.0 {
            bail!("calibration split '{split}': the max logit has zero spread, SML is undefined");
        }
        let mut mean = vec![pooled_mean; c];
        let mut std = vec![pooled_std; c];
        let mut fallback = Vec::new();
        for k in 0..c {
            let sd = s.sm[k].std();
            if s.n[k] >= 2 && sd > 0.0 {
                mean[k] = s.sm[k].mean;
                std[k] = sd;
            } else {
                fallback.push(k);
            }
        }
        if !fallback.is_empty() {
            warnings.push(format!(
                "SML: classes {:?} have fewer than 2 calibration pixels (or zero spread) and use the pooled statistics",
                fallback
            ));
        }
        let sml = SmlStats { mean, std, count: s.n.clone(), pooled_fallback: fallback };

        // --- HEAT: tied-covariance class Gaussians + energy standardisation -
        let mut hp = HeatParams {
            c,
            k: 0,
            classes: vec![],
            whiten: vec![],
            centers: vec![],
            ridge: RIDGE,
            el_mean: 0.0,
            el_std: 1.0,
            gmm_mean: 0.0,
            gmm_std: 1.0,
        };
        if heat {
            let classes: Vec<usize> = (0..c).filter(|&k| s.n[k] > 0).collect();
            let mut mu = vec![0.0; classes.len() * c];
            for (ki, &k) in classes.iter().enumerate() {
                for i in 0..c {
                    mu[ki * c + i] = s.sx[k * c + i] / s.n[k] as f64;
                }
            }
            // within-class scatter = Σ x xᵀ − Σ_k n_k μ_k μ_kᵀ
            let mut cov = vec![0.0; c * c];
            for i in 0..c {
                for j in 0..=i {
                    let mut v = s.sxx[i * c + j];
                    for (ki, &k) in classes.iter().enumerate() {
                        v -= s.n[k] as f64 * mu[ki * c + i] * mu[ki * c + j];
                    }
                    v /= npix as f64;
                    cov[i * c + j] = v;
                    cov[j * c + i] = v;
                }
            }
            // back from the shifted frame (the covariance is shift-invariant)
            for ki in 0..classes.len() {
                for i in 0..c {
                    mu[ki * c + i] += shift.get(i).copied().unwrap_or(0.0);
                }
            }
            let mean_var = (0..c).map(|i| cov[i * c + i]).sum::<f64>() / c as f64;
            let eps = RIDGE * mean_var.max(f64::MIN_POSITIVE);
            for i in 0..c {
                cov[i * c + i] += eps;
            }
            let l = cholesky(&cov, c).ok_or_else(|| {
                anyhow::anyhow!("calibration split '{split}': the logit covariance is not positive definite, HEAT is undefined")
            })?;
            let w = invert_lower(&l, c);
            let mut centers = vec![0.0; classes.len() * c];
            for ki in 0..classes.len() {
                for i in 0..c {
                    centers[ki * c + i] = (0..=i).map(|j| w[i * c + j] * mu[ki * c + j]).sum();
                }
            }
            hp.k = classes.len();
            hp.classes = classes;
            hp.whiten = w;
            hp.centers = centers;
        }
        if leakage {
            warnings.push(format!(
                "no calibration split: SML/HEAT statistics were fitted on the evaluated split '{split}' (leakage)"
            ));
        }
        Ok(Calibration { split: split.to_string(), leakage, pixels: npix, sml, heat: hp, warnings })
    }
}

/// Cholesky factor `L` (lower, row-major) of a symmetric positive-definite
/// matrix, or None.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Inverse of a lower-triangular matrix (forward substitution per column).
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut w = vec![0.0; n * n];
    for col in 0..n {
        for i in col..n {
            let rhs = if i == col { 1.0 } else { 0.0 };
            let s: f64 = (col..i).map(|k| l[i * n + k] * w[k * n + col]).sum();
            w[i * n + col] = (rhs - s) / l[i * n + i];
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitening_inverts_the_cholesky_factor() {
        let a = [4.0, 2.0, 0.6, 2.0, 2.0, 0.5, 0.6, 0.5, 3.0];
        let l = cholesky(&a, 3).unwrap();
        let w = invert_lower(&l, 3);
        // W Σ Wᵀ = I
        for i in 0..3 {
            for j in 0..3 {
                let mut v = 0.0;
                for p in 0..3 {
                    for q in 0..3 {
                        v += w[i * 3 + p] * a[p * 3 + q] * w[j * 3 + q];
                    }
                }
                let e = if i == j { 1.0 } else { 0.0 };
                assert!((v - e).abs() < 1e-12, "{i},{j}: {v}");
            }
        }
    }
}
