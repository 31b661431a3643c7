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
use serde::Serialize;

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

/// Pass-1 sums over in-distribution pixels.
#[derive(Clone)]
struct Sums {
    c: usize,
    n: Vec<u64>,
    // max logit per predicted class: sum, sum of squares around shift
    sm: Vec<f64>,
    sm2: Vec<f64>,
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
            sm: vec![0.0; c],
            sm2: vec![0.0; c],
            sx: if full { vec![0.0; c * c] } else { vec![] },
            sxx: if full { vec![0.0; c * c] } else { vec![] },
            full,
        }
    }
    fn merge(&mut self, o: &Sums) {
        for i in 0..self.c {
            self.n[i] += o.n[i];
            self.sm[i] += o.sm[i];
            self.sm2[i] += o.sm2[i];
        }
        for (a, b) in self.sx.iter_mut().zip(&o.sx) {
            *a += b;
        }
        for (a, b) in self.sxx.iter_mut().zip(&o.sxx) {
            *a += b;
        }
    }
}

/// Visits every image of the calibration split: calls `f(logits, labels)`.
/// Called twice when HEAT needs its standardisation pass.
pub type Visitor<'a> = dyn FnMut(&mut dyn FnMut(&Logits, &[u8]) -> Result<()>) -> Result<()> + 'a;

impl Calibration {
    /// Fit SML statistics and (when `heat`) the HEAT Gaussian and the
    /// standardisation of both energies, over the in-distribution pixels the
    /// visitor yields. Deterministic: fixed chunks, reduced in order.
    pub fn fit(split: &str, leakage: bool, heat: bool, visit: &mut Visitor) -> Result<Calibration> {
        let mut total: Option<Sums> = None;
        visit(&mut |lg: &Logits, lab: &[u8]| {
            let c = lg.c;
            let t = total.get_or_insert_with(|| Sums::new(c, heat));
            if t.c != c {
                bail!("calibration images disagree on the class count ({} vs {c})", t.c);
            }
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
                        s.sm[k] += m;
                        s.sm2[k] += m * m;
                        if s.full {
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
            for p in &parts {
                t.merge(p);
            }
            Ok(())
        })?;
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
        let pooled_mean = s.sm.iter().sum::<f64>() / npix as f64;
        let pooled_var = (s.sm2.iter().sum::<f64>() / npix as f64 - pooled_mean * pooled_mean).max(0.0);
        let pooled_std = pooled_var.sqrt();
        if pooled_std == 0.0 {
            bail!("calibration split '{split}': the max logit has zero spread, SML is undefined");
        }
        let mut mean = vec![pooled_mean; c];
        let mut std = vec![pooled_std; c];
        let mut fallback = Vec::new();
        for k in 0..c {
            let n = s.n[k] as f64;
            if s.n[k] >= 2 {
                let mu = s.sm[k] / n;
                let var = (s.sm2[k] / n - mu * mu).max(0.0);
                if var > 0.0 {
                    mean[k] = mu;
                    std[k] = var.sqrt();
                    continue;
                }
            }
            fallback.push(k);
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

            // pass 2: mean / std of both energies on the same pixels
            let mut acc = [0f64; 4];
            let hpr = &hp;
            visit(&mut |lg: &Logits, lab: &[u8]| {
                let parts: Vec<[f64; 4]> = (0..lg.pixels().div_ceil(CHUNK))
                    .into_par_iter()
                    .map(|ci| {
                        let mut a = [0f64; 4];
                        let mut z = vec![0f64; c];
                        let mut u = vec![0f64; c];
                        let end = ((ci + 1) * CHUNK).min(lg.pixels());
                        for p in ci * CHUNK..end {
                            if lab[p] != label::NORMAL {
                                continue;
                            }
                            lg.pixel(p, &mut z);
                            let el = -logsumexp(&z, 1.0);
                            let gm = gmm_energy(&z, hpr, &mut u);
                            a[0] += el;
                            a[1] += el * el;
                            a[2] += gm;
                            a[3] += gm * gm;
                        }
                        a
                    })
                    .collect();
                for p in parts {
                    for i in 0..4 {
                        acc[i] += p[i];
                    }
                }
                Ok(())
            })?;
            let n = npix as f64;
            let (em, gm) = (acc[0] / n, acc[2] / n);
            let es = (acc[1] / n - em * em).max(0.0).sqrt();
            let gs = (acc[3] / n - gm * gm).max(0.0).sqrt();
            hp.el_mean = em;
            hp.gmm_mean = gm;
            hp.el_std = if es > 0.0 { es } else { 1.0 };
            hp.gmm_std = if gs > 0.0 { gs } else { 1.0 };
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
