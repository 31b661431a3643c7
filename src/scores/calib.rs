//! Calibration statistics for SML and HEAT, fitted on in-distribution pixels.
//!
//! Why: SML and HEAT are only as honest as the split their statistics come
//! from. Fitting happens here, on the CPU, sums in f64 in a fixed reduction
//! order, so the fitted numbers are identical whichever device later scores
//! the test split, and so a fit on the test split is flagged as leakage.
//!
//! The per-pixel work runs on the fast scorer's blocks ([`Kernels::Fast`],
//! the default): pass 1 (max, argmax, the HEAT sums) is bit-identical to
//! the f64 reference, since it only widens the logits exactly; pass 2 (the
//! two HEAT energies) uses the fast scorer's own energies, each within
//! 2.4e-7 absolute of the reference's, so the standardisation moments move
//! by at most that much (`tests/calib_fast.rs`). [`Kernels::Reference`]
//! keeps the f64 reference path for the tests that compare the two.

use super::cpu::fast::{BLOCK, Block, heat_energies};
use super::cpu::{Pixel, gmm_energy, logit_energy, max_argmax};
use crate::data::{Logits, label};
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::Path;

/// Per-predicted-class mean and population std (ddof 0) of the max logit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeatParams {
    pub c: usize,
    /// Number of fitted Gaussians (classes predicted at least once).
    pub k: usize,
    /// Class ids of the fitted Gaussians.
    pub classes: Vec<usize>,
    /// `W = L⁻¹`, row-major C×C (lower triangular).
    pub whiten: Vec<f64>,
    /// Whitened class means `W μ_k`, row-major K×C.
    pub centers: Vec<f64>,
    /// Ridge added to the covariance diagonal (relative to its mean variance).
    pub ridge: f64,
    /// Dimension D of the per-pixel feature vectors the Gaussians live in
    /// (`features/<model>/<id>.npy`, `[D, H, W]`), or 0: the logit vector
    /// (D = C). See [`HeatParams::dim`].
    #[serde(default)]
    pub feat_dim: usize,
    pub el_mean: f64,
    pub el_std: f64,
    pub gmm_mean: f64,
    pub gmm_std: f64,
}

/// SML's [`super::Fit::check`]: per-class moments for exactly `c` classes.
pub fn check_sml(cal: &Calibration, c: usize) -> Result<()> {
    anyhow::ensure!(
        cal.sml.mean.len() == c && cal.sml.std.len() == c,
        "calibration has {} classes but logits have {c}",
        cal.sml.mean.len()
    );
    Ok(())
}

/// HEAT's [`super::Fit::check`]: the class moments and fitted Gaussians for `c` classes.
pub fn check_heat(cal: &Calibration, c: usize) -> Result<()> {
    check_sml(cal, c)?;
    let h = &cal.heat;
    anyhow::ensure!(h.c == c, "HEAT parameters have {} classes but logits have {c}", h.c);
    let d = h.dim();
    anyhow::ensure!(
        h.k >= 1 && h.whiten.len() == d * d && h.centers.len() == h.k * d,
        "HEAT requested but the calibration has no fitted Gaussians (was it fitted with heat = false?)"
    );
    Ok(())
}

impl HeatParams {
    /// No Gaussians (HEAT not requested): the class count, the ridge, and
    /// the energy standardisation at (0, 1).
    pub fn unfitted(c: usize) -> HeatParams {
        HeatParams {
            c,
            k: 0,
            classes: vec![],
            whiten: vec![],
            centers: vec![],
            ridge: RIDGE,
            feat_dim: 0,
            el_mean: 0.0,
            el_std: 1.0,
            gmm_mean: 0.0,
            gmm_std: 1.0,
        }
    }
    /// Dimension of the Gaussians' space: the features' D, else C.
    pub fn dim(&self) -> usize {
        if self.feat_dim > 0 { self.feat_dim } else { self.c }
    }
    /// Whether the Gaussians live in a per-pixel feature space.
    pub fn features(&self) -> bool {
        self.feat_dim > 0
    }
}

/// Everything fitted on one model's calibration pixels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Split the statistics came from.
    pub split: String,
    /// True when fitted on the split being evaluated (no calibration split).
    pub leakage: bool,
    pub pixels: u64,
    pub sml: SmlStats,
    pub heat: HeatParams,
    /// KL matching's templates (`scores/kl.rs`), when kl_matching was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<super::kl::KlDists>,
    pub warnings: Vec<String>,
}

/// Relative ridge: `Σ += RIDGE · mean(diag Σ) · I`. Keeps near-collinear logits
/// (common: logits of a softmax classifier are nearly rank C-1) invertible.
pub const RIDGE: f64 = 1e-6;

/// Pixels per parallel work item of the calibration passes (a multiple of
/// the fast scorer's [`BLOCK`]); fixed, so the reduction order never
/// depends on the schedule.
const CHUNK: usize = 8192;

/// Which per-pixel kernels the calibration passes run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The fast CPU scorer's blocks (bulk f16 → f32, f32 `exp` in the
    /// energies, sums in f64): what `bench run` uses.
    #[default]
    Fast,
    /// The f64 reference scorer, one pixel at a time: what the tests
    /// compare the fast fit with.
    Reference,
}

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
    /// Dimension of the Gaussians' vectors (features' D, else C).
    d: usize,
    /// Whether the vectors are per-pixel features (else the logits).
    feat: bool,
    n: Vec<u64>,
    /// Max logit per predicted class.
    sm: Vec<Moments>,
    // vectors per predicted class: sum (C×D), global outer products (D×D)
    sx: Vec<f64>,
    sxx: Vec<f64>,
    full: bool,
}

impl Sums {
    fn new(c: usize, d: usize, feat: bool, full: bool) -> Self {
        Sums {
            c,
            d,
            feat,
            n: vec![0; c],
            sm: vec![Moments::default(); c],
            sx: if full { vec![0.0; c * d] } else { vec![] },
            sxx: if full { vec![0.0; d * d] } else { vec![] },
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

/// The first in-distribution pixel's vector of an image, if any — of the
/// features when given (HEAT on features), else of the logits: the shift of
/// the HEAT sums (the first such pixel of the split, in image order), so a
/// large common offset does not cancel in Σxxᵀ − nμμᵀ.
pub fn first_normal(lg: &Logits, feat: Option<&Logits>, lab: &[u8]) -> Option<Vec<f64>> {
    let x = feat.unwrap_or(lg);
    let p = lab.iter().position(|&l| l == label::NORMAL)?;
    let mut z = vec![0.0; x.c];
    x.pixel(p, &mut z);
    Some(z)
}

/// Pass 1 over one image: SML moments per predicted class and, when `heat`,
/// the sums around `shift` (fixed chunks, reduced in order) — over the
/// per-pixel features when `feat` is given (same H×W, checked by the
/// caller), else over the logits; classes always come from the logits' argmax.
/// On the fast scorer's blocks; bit-identical to [`image_sums_with`] on the
/// reference kernels.
pub fn image_sums(lg: &Logits, feat: Option<&Logits>, lab: &[u8], heat: bool, shift: &[f64]) -> Sums {
    image_sums_with(Kernels::Fast, lg, feat, lab, heat, shift)
}

/// [`image_sums`] on the chosen kernels.
pub fn image_sums_with(kernels: Kernels, lg: &Logits, feat: Option<&Logits>, lab: &[u8], heat: bool, shift: &[f64]) -> Sums {
    let c = lg.c;
    let on_feat = heat && feat.is_some();
    let d = match feat {
        Some(f) if heat => f.c,
        _ => c,
    };
    let feat = feat.filter(|_| on_feat);
    let parts: Vec<Sums> = (0..lg.pixels().div_ceil(CHUNK))
        .into_par_iter()
        .map(|ci| {
            let mut s = Sums::new(c, d, on_feat, heat);
            let px = ci * CHUNK..((ci + 1) * CHUNK).min(lg.pixels());
            match kernels {
                Kernels::Fast => s.add_blocks(lg, feat, lab, px, shift),
                Kernels::Reference => s.add_pixels(lg, feat, lab, px, shift),
            }
            s
        })
        .collect();
    let mut t = Sums::new(c, d, on_feat, heat);
    for p in &parts {
        t.merge(p);
    }
    t
}

impl Sums {
    /// One in-distribution pixel of predicted class `k` with max logit `m`
    /// and (HEAT) vector `x` (shifted in place).
    #[inline]
    fn push(&mut self, k: usize, m: f64, x: &mut [f64], shift: &[f64]) {
        self.n[k] += 1;
        self.sm[k].push(m);
        if !self.full {
            return;
        }
        for (xi, sh) in x.iter_mut().zip(shift) {
            *xi -= sh;
        }
        let d = self.d;
        for (s, xi) in self.sx[k * d..(k + 1) * d].iter_mut().zip(&*x) {
            *s += xi;
        }
        // row i of the lower triangle, as slices (no bounds checks in the
        // inner loop; the same products and sums, in the same order)
        for (i, &xi) in x.iter().enumerate() {
            for (s, xj) in self.sxx[i * d..i * d + i + 1].iter_mut().zip(&x[..=i]) {
                *s += xi * xj;
            }
        }
    }

    /// Pixels `px` through the f64 reference's per-pixel reads.
    fn add_pixels(&mut self, lg: &Logits, feat: Option<&Logits>, lab: &[u8], px: Range<usize>, shift: &[f64]) {
        let mut z = vec![0f64; lg.c];
        let mut x = vec![0f64; self.d];
        for p in px {
            if lab[p] != label::NORMAL {
                continue;
            }
            lg.pixel(p, &mut z);
            let (m, k) = max_argmax(&z);
            if self.full {
                match feat {
                    Some(f) => f.pixel(p, &mut x),
                    None => x.copy_from_slice(&z),
                }
            }
            self.push(k, m, &mut x, shift);
        }
    }

    /// Pixels `px` through the fast scorer's blocks (bulk f16 → f32 rows,
    /// the block max/argmax), pixel by pixel in the same order and with the
    /// same f64 arithmetic as [`Sums::add_pixels`]: bit-identical.
    fn add_blocks(&mut self, lg: &Logits, feat: Option<&Logits>, lab: &[u8], px: Range<usize>, shift: &[f64]) {
        let mut blk = Block::new(lg.c, feat.map_or(0, |f| f.c));
        let mut x = vec![0f64; self.d];
        for b0 in px.clone().step_by(BLOCK) {
            let n = BLOCK.min(px.end - b0);
            let lb = &lab[b0..b0 + n];
            if !lb.contains(&label::NORMAL) {
                continue;
            }
            blk.load(lg, feat, b0, n, &[], false);
            for (l, _) in lb.iter().enumerate().filter(|p| *p.1 == label::NORMAL) {
                if self.full {
                    let src = if feat.is_some() { &blk.feat } else { &blk.z };
                    for (i, xi) in x.iter_mut().enumerate() {
                        *xi = src[i * BLOCK + l] as f64;
                    }
                }
                self.push(blk.arg[l] as usize, blk.max[l] as f64, &mut x, shift);
            }
        }
    }
}

/// Pass 2 of HEAT over one image: moments of the two energies.
pub type EnergyMoments = [Moments; 2];

/// HEAT's energies at pixels `px` through the f64 reference functions.
fn energy_pixels(hp: &HeatParams, lg: &Logits, feat: Option<&Logits>, lab: &[u8], px: Range<usize>) -> EnergyMoments {
    let (c, d) = (lg.c, hp.dim());
    let mut a = [Moments::default(); 2];
    let mut z = vec![0f64; c];
    let mut x = vec![0f64; d];
    let mut u = vec![0f64; c.max(d)];
    for p in px {
        if lab[p] != label::NORMAL {
            continue;
        }
        lg.pixel(p, &mut z);
        a[0].push(logit_energy(&mut Pixel::new(&z, &mut [])));
        match feat {
            Some(f) => {
                f.pixel(p, &mut x);
                a[1].push(gmm_energy(&x, hp, &mut u));
            }
            None => a[1].push(gmm_energy(&z, hp, &mut u)),
        }
    }
    a
}

/// HEAT's energies at pixels `px` through the fast scorer's blocks (the
/// energies HEAT's scores are computed from), pushed in pixel order.
fn energy_blocks(hp: &HeatParams, lg: &Logits, feat: Option<&Logits>, lab: &[u8], px: Range<usize>) -> EnergyMoments {
    let mut a = [Moments::default(); 2];
    let mut blk = Block::new(lg.c, feat.map_or(0, |f| f.c));
    let (mut el, mut gm) = ([0f64; BLOCK], [0f64; BLOCK]);
    for b0 in px.clone().step_by(BLOCK) {
        let n = BLOCK.min(px.end - b0);
        let lb = &lab[b0..b0 + n];
        if !lb.contains(&label::NORMAL) {
            continue;
        }
        blk.load(lg, feat, b0, n, &[1.0], false);
        heat_energies(&mut blk, hp, &mut el, &mut gm);
        for (l, _) in lb.iter().enumerate().filter(|p| *p.1 == label::NORMAL) {
            a[0].push(el[l]);
            a[1].push(gm[l]);
        }
    }
    a
}

/// Visits every image of the calibration split: calls `f(logits, features,
/// labels)`, with the image's per-pixel features (`[D, H, W]`, same H×W)
/// when HEAT lives in a feature space, else `None`. Called twice when HEAT
/// needs its standardisation pass.
pub type Visitor<'a> = dyn FnMut(&mut dyn FnMut(&Logits, Option<&Logits>, &[u8]) -> Result<()>) -> Result<()> + 'a;

/// Features must cover the logits' pixels.
pub fn check_features(lg: &Logits, feat: Option<&Logits>) -> Result<()> {
    if let Some(f) = feat
        && (f.h, f.w) != (lg.h, lg.w)
    {
        bail!("features are {}×{} but the logits {}×{}", f.h, f.w, lg.h, lg.w);
    }
    Ok(())
}

impl Calibration {
    /// Fit SML statistics and (when `heat`) the HEAT Gaussian and the
    /// standardisation of both energies, over the in-distribution pixels the
    /// visitor yields (the Gaussians in the space of the per-pixel features
    /// when it yields them — all images or none —, classes from the logits'
    /// argmax, `E_el` from the logits). Deterministic: fixed chunks, reduced
    /// in order. The pipeline runs the same steps ([`image_sums`], [`from_sums`],
    /// [`energy_moments`], [`standardise`]) as separate, shardable passes.
    ///
    /// [`from_sums`]: Self::from_sums
    /// [`energy_moments`]: Self::energy_moments
    /// [`standardise`]: Self::standardise
    pub fn fit(split: &str, leakage: bool, heat: bool, visit: &mut Visitor) -> Result<Calibration> {
        Calibration::fit_with(Kernels::Fast, split, leakage, heat, visit)
    }

    /// [`fit`](Self::fit) on the chosen kernels.
    pub fn fit_with(kernels: Kernels, split: &str, leakage: bool, heat: bool, visit: &mut Visitor) -> Result<Calibration> {
        let mut shift: Option<Vec<f64>> = None;
        let mut images = Vec::new();
        visit(&mut |lg: &Logits, feat: Option<&Logits>, lab: &[u8]| {
            check_features(lg, feat)?;
            if shift.is_none() {
                shift = first_normal(lg, feat.filter(|_| heat), lab);
            }
            images.push(image_sums_with(kernels, lg, feat, lab, heat, shift.as_deref().unwrap_or(&[])));
            Ok(())
        })?;
        let mut cal = Calibration::from_sums(split, leakage, heat, &images, shift.as_deref().unwrap_or(&[]))?;
        if heat {
            let mut parts = Vec::new();
            visit(&mut |lg: &Logits, feat: Option<&Logits>, lab: &[u8]| {
                parts.push(cal.energy_moments_with(kernels, lg, feat, lab));
                Ok(())
            })?;
            cal.standardise(&parts);
        }
        Ok(cal)
    }

    /// Pass 2 of HEAT over one image, with the Gaussian fitted by
    /// [`from_sums`](Self::from_sums) (reading the image's features when it
    /// was fitted on features), on the fast scorer's energies.
    pub fn energy_moments(&self, lg: &Logits, feat: Option<&Logits>, lab: &[u8]) -> EnergyMoments {
        self.energy_moments_with(Kernels::Fast, lg, feat, lab)
    }

    /// [`energy_moments`](Self::energy_moments) on the chosen kernels.
    pub fn energy_moments_with(&self, kernels: Kernels, lg: &Logits, feat: Option<&Logits>, lab: &[u8]) -> EnergyMoments {
        let feat = feat.filter(|_| self.heat.features());
        let parts: Vec<EnergyMoments> = (0..lg.pixels().div_ceil(CHUNK))
            .into_par_iter()
            .map(|ci| {
                let px = ci * CHUNK..((ci + 1) * CHUNK).min(lg.pixels());
                match kernels {
                    Kernels::Fast => energy_blocks(&self.heat, lg, feat, lab, px),
                    Kernels::Reference => energy_pixels(&self.heat, lg, feat, lab, px),
                }
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
        let s = Sums::fold(split, images, heat)?;
        let npix: u64 = s.n.iter().sum();
        if npix < 2 {
            bail!("calibration split '{split}' has fewer than 2 in-distribution pixels");
        }
        let mut warnings = Vec::new();
        let sml = fit_sml(&s, split, &mut warnings)?;
        let hp = if heat { fit_heat(&s, shift, npix, split)? } else { HeatParams::unfitted(s.c) };
        if leakage {
            warnings.push(format!(
                "no calibration split: SML/HEAT/KL-matching statistics were fitted on the evaluated split '{split}' (leakage)"
            ));
        }
        Ok(Calibration { split: split.to_string(), leakage, pixels: npix, sml, heat: hp, kl: None, warnings })
    }
}

/// `format` of `calibration.json`.
pub const CALIBRATION_FORMAT: &str = "bench-calibration/1";

impl Sums {
    /// The per-image sums of pass 1 folded in image order (the fixed
    /// reduction order that makes the fit device- and shard-independent).
    fn fold(split: &str, images: &[Sums], heat: bool) -> Result<Sums> {
        let mut total: Option<Sums> = None;
        for im in images {
            let t = total.get_or_insert_with(|| Sums::new(im.c, im.d, im.feat, heat));
            if t.c != im.c {
                bail!("calibration images disagree on the class count ({} vs {})", t.c, im.c);
            }
            if (t.d, t.feat) != (im.d, im.feat) {
                bail!("calibration images disagree on the per-pixel features (dimension {} vs {}, or present in only some images)", t.d, im.d);
            }
            t.merge(im);
        }
        total.with_context(|| format!("calibration split '{split}' has no images"))
    }
}

/// SML: per-class mean / population std of the max logit; classes with
/// fewer than 2 pixels (or zero spread) use the pooled moments, with a warning.
fn fit_sml(s: &Sums, split: &str, warnings: &mut Vec<String>) -> Result<SmlStats> {
    let c = s.c;
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
    Ok(SmlStats { mean, std, count: s.n.clone(), pooled_fallback: fallback })
}

/// HEAT: tied-covariance Gaussians of the classes seen, from the shifted
/// first and second moments: `μ_k`, the within-class covariance (+ ridge),
/// its Cholesky factor's inverse `W` and the whitened centres `W μ_k`.
/// The energy standardisation stays at (0, 1) until pass 2.
fn fit_heat(s: &Sums, shift: &[f64], npix: u64, split: &str) -> Result<HeatParams> {
    use ndarray::{Array2, ArrayView2};
    let (c, d, on_feat) = (s.c, s.d, s.feat);
    let classes: Vec<usize> = (0..c).filter(|&k| s.n[k] > 0).collect();
    let sx = ArrayView2::from_shape((c, d), s.sx.get(..c * d).unwrap_or(&[])).context("HEAT sums: Σx has the wrong size")?;
    let sxx = ArrayView2::from_shape((d, d), s.sxx.get(..d * d).unwrap_or(&[])).context("HEAT sums: Σxxᵀ has the wrong size")?;
    let mut mu = Array2::<f64>::zeros((classes.len(), d));
    for (ki, &k) in classes.iter().enumerate() {
        for i in 0..d {
            mu[[ki, i]] = sx[[k, i]] / s.n[k] as f64;
        }
    }
    // within-class scatter = Σ x xᵀ − Σ_k n_k μ_k μ_kᵀ
    let mut cov = Array2::<f64>::zeros((d, d));
    for i in 0..d {
        for j in 0..=i {
            let mut v = sxx[[i, j]];
            for (ki, &k) in classes.iter().enumerate() {
                v -= s.n[k] as f64 * mu[[ki, i]] * mu[[ki, j]];
            }
            v /= npix as f64;
            cov[[i, j]] = v;
            cov[[j, i]] = v;
        }
    }
    // back from the shifted frame (the covariance is shift-invariant)
    for mut row in mu.rows_mut() {
        for (i, m) in row.iter_mut().enumerate() {
            *m += shift.get(i).copied().unwrap_or(0.0);
        }
    }
    let mean_var = cov.diag().iter().sum::<f64>() / d as f64;
    let eps = RIDGE * mean_var.max(f64::MIN_POSITIVE);
    cov.diag_mut().mapv_inplace(|v| v + eps);
    let what = if on_feat { "feature" } else { "logit" };
    let cov = cov.as_standard_layout();
    let l = cholesky(cov.as_slice().expect("standard layout"), d)
        .ok_or_else(|| anyhow::anyhow!("calibration split '{split}': the {what} covariance is not positive definite, HEAT is undefined"))?;
    let w = invert_lower(&l, d);
    let wv = ArrayView2::from_shape((d, d), &w[..]).expect("d × d");
    let mut centers = Array2::<f64>::zeros((classes.len(), d));
    for ki in 0..classes.len() {
        for i in 0..d {
            centers[[ki, i]] = (0..=i).map(|j| wv[[i, j]] * mu[[ki, j]]).sum();
        }
    }
    Ok(HeatParams {
        k: classes.len(),
        classes,
        whiten: w,
        centers: centers.into_raw_vec_and_offset().0,
        feat_dim: if on_feat { d } else { 0 },
        ..HeatParams::unfitted(c)
    })
}

/// `calibration.json`: the statistics every model of a run was scored with,
/// so a reviewer sees them in full and a later run can reuse them
/// (`calibration = "results/x/calibration.json"`) instead of fitting.
/// Floats are written shortest-round-trip and parsed exactly (serde_json's
/// `float_roundtrip`), so a reused fit is bit-identical to the original.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationFile {
    pub format: String,
    pub models: Vec<ModelCalibration>,
}

/// One model's entry of `calibration.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCalibration {
    /// Model id (folder under `logits/`).
    pub model: String,
    /// Class count C of the logits the statistics were fitted on.
    pub classes: usize,
    pub calibration: Calibration,
}

impl CalibrationFile {
    pub fn new(models: Vec<ModelCalibration>) -> CalibrationFile {
        CalibrationFile { format: CALIBRATION_FORMAT.into(), models }
    }

    /// Pretty JSON with a trailing newline (deterministic).
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }

    /// Read and check a `calibration.json`; errors name the file.
    pub fn load(path: &Path) -> Result<CalibrationFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read calibration file: {e}", path.display()))?;
        let f: CalibrationFile = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a bench calibration file: {e}", path.display()))?;
        if f.format != CALIBRATION_FORMAT {
            bail!("{}: format is {:?}, expected {CALIBRATION_FORMAT:?}", path.display(), f.format);
        }
        for m in &f.models {
            m.check().map_err(|e| anyhow::anyhow!("{}: model {}: {e}", path.display(), m.model))?;
        }
        Ok(f)
    }

    /// The statistics of `model`, checked against the logits' class count
    /// `c` and against whether HEAT is needed.
    pub fn model(&self, path: &Path, model: &str, c: usize, heat: bool) -> Result<Calibration> {
        let Some(m) = self.models.iter().find(|m| m.model == model) else {
            bail!(
                "{}: no calibration for model {model} (it has: {})",
                path.display(),
                self.models.iter().map(|m| m.model.as_str()).collect::<Vec<_>>().join(", ")
            );
        };
        if m.classes != c {
            bail!(
                "{}: model {model} was calibrated on {} classes but its logits have {c}",
                path.display(),
                m.classes
            );
        }
        if heat && m.calibration.heat.k == 0 {
            bail!(
                "{}: model {model} has no HEAT fit (the run that wrote it did not request heat); refit or drop heat",
                path.display()
            );
        }
        Ok(m.calibration.clone())
    }
}

impl ModelCalibration {
    /// Shapes and values a scorer can use.
    fn check(&self) -> Result<()> {
        let (c, cal) = (self.classes, &self.calibration);
        let s = &cal.sml;
        if c == 0 || s.mean.len() != c || s.std.len() != c || s.count.len() != c {
            bail!("SML statistics do not have {c} classes");
        }
        if s.mean.iter().any(|v| !v.is_finite()) || s.std.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            bail!("SML statistics must be finite with std > 0");
        }
        let h = &cal.heat;
        if h.k > 0 {
            let d = h.dim();
            if h.c != c || h.classes.len() != h.k || h.whiten.len() != d * d || h.centers.len() != h.k * d {
                bail!("HEAT fit does not have the shapes of {c} classes, dimension {d} and {} Gaussians", h.k);
            }
            let finite = h.whiten.iter().chain(&h.centers).chain(&[h.el_mean, h.el_std, h.gmm_mean, h.gmm_std]).all(|v| v.is_finite());
            if !finite || h.el_std <= 0.0 || h.gmm_std <= 0.0 {
                bail!("HEAT fit must be finite with positive stds");
            }
        }
        if let Some(kl) = &cal.kl {
            kl.check(c)?;
        }
        Ok(())
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
