//! SML post-processing (Jung et al. 2021, ICCV, "Standardized Max Logits"):
//! iterative boundary suppression and dilated Gaussian smoothing of the
//! whole-image score map — the f64 CPU reference; the WGSL twin is
//! `shaders/sml_post.wgsl` (run by `gpu/fused.rs` after the fused pass, via `gpu/post.rs`).
//!
//! Why whole-image and after the fused pass: both steps are spatial (3×3
//! neighbourhoods, boundary distances up to `boundary_width`, a Gaussian
//! spanning `dilation·(kernel_size−1)` pixels), so they cannot run inside
//! the per-pixel, per-tile fused pass.
//!
//! The definition is a port of `BoundarySuppressionWithSmoothing` in the
//! official code (github shjung13/Standardized-max-logits,
//! network/deepv3.py), with its defaults; `scripts/gen_sml_post_fixtures.py`
//! documents the step-by-step correspondence and generates the numpy/scipy
//! fixture the tests compare against. Every step is linear in the map with
//! masks that depend only on the predicted classes, so applying it to
//! bench's score `−SML` equals `−post(SML)` (the paper post-processes SML
//! and negates): the sign convention (higher = more anomalous) is kept.
//!
//! HEAT's optional spatial-consistency term lives here too ([`HeatPost`],
//! [`apply_heat_cpu`]; WGSL twin `shaders/heat_post.wgsl`): a clipped local
//! mean of the whole-image HEAT map, whole-image for the same reason.

use anyhow::{Result, ensure};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Options of the SML post-processing (`[method.sml]`); defaults are the
/// official code's (`eval.py` / `BoundarySuppressionWithSmoothing`), with
/// both steps off (plain SML).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmlPost {
    pub boundary_suppression: bool,
    /// Initial width of the suppressed boundary band (official default 4).
    pub boundary_width: u32,
    /// Number of suppression iterations (official default 4); must divide
    /// `boundary_width`.
    pub boundary_iteration: u32,
    pub dilated_smoothing: bool,
    /// Side of the Gaussian kernel (official: 7, hard-coded there).
    pub kernel_size: u32,
    /// Gaussian σ in kernel taps (official: 1.0, hard-coded there).
    pub sigma: f64,
    /// Dilation of the Gaussian kernel (official default 6).
    pub dilation: u32,
}

impl Default for SmlPost {
    fn default() -> Self {
        SmlPost {
            boundary_suppression: false,
            boundary_width: 4,
            boundary_iteration: 4,
            dilated_smoothing: false,
            kernel_size: 7,
            sigma: 1.0,
            dilation: 6,
        }
    }
}

/// Largest boundary width accepted (the official code supports 10).
pub const MAX_BOUNDARY_WIDTH: u32 = 32;
/// Largest Gaussian side accepted.
pub const MAX_KERNEL: u32 = 31;
/// Largest kernel dilation accepted.
pub const MAX_DILATION: u32 = 64;

impl SmlPost {
    /// Whether any post-processing runs.
    pub fn active(&self) -> bool {
        self.boundary_suppression || self.dilated_smoothing
    }

    /// Check the options; errors name the config key.
    pub fn validate(&self) -> Result<()> {
        if self.boundary_suppression {
            ensure!(
                self.boundary_width <= MAX_BOUNDARY_WIDTH,
                "`method.sml.boundary_width` must be at most {MAX_BOUNDARY_WIDTH}, got {}",
                self.boundary_width
            );
            ensure!(
                self.boundary_iteration == 0 || self.boundary_width % self.boundary_iteration == 0,
                "`method.sml.boundary_width` ({}) must be a multiple of `method.sml.boundary_iteration` ({}), as in the official code",
                self.boundary_width,
                self.boundary_iteration
            );
            ensure!(
                self.boundary_iteration <= 64,
                "`method.sml.boundary_iteration` must be at most 64, got {}",
                self.boundary_iteration
            );
        }
        if self.dilated_smoothing {
            ensure!(
                self.kernel_size % 2 == 1 && self.kernel_size <= MAX_KERNEL,
                "`method.sml.kernel_size` must be odd and at most {MAX_KERNEL}, got {}",
                self.kernel_size
            );
            ensure!(
                self.sigma.is_finite() && self.sigma > 0.0,
                "`method.sml.sigma` must be finite and > 0, got {}",
                self.sigma
            );
            ensure!(
                (1..=MAX_DILATION).contains(&self.dilation),
                "`method.sml.dilation` must be in 1..={MAX_DILATION}, got {}",
                self.dilation
            );
        }
        Ok(())
    }

    /// The variant string recorded in `conventions.sml_variant`.
    pub fn variant(&self) -> String {
        let bs = format!(
            "boundary suppression (width {}, {} iterations)",
            self.boundary_width, self.boundary_iteration
        );
        let ds = format!(
            "dilated smoothing ({k}x{k} Gaussian, sigma {}, dilation {})",
            self.sigma,
            self.dilation,
            k = self.kernel_size
        );
        match (self.boundary_suppression, self.dilated_smoothing) {
            (false, false) => "plain (no boundary suppression, no dilated smoothing)".into(),
            (true, false) => format!("{bs}; no dilated smoothing (Jung et al. 2021 official post-processing)"),
            (false, true) => format!("no boundary suppression; {ds} (Jung et al. 2021 official post-processing)"),
            (true, true) => format!("{bs} + {ds} (Jung et al. 2021 official post-processing)"),
        }
    }

    /// Expansion radius of the boundary band at each iteration: the
    /// official schedule (`width − (width/iters)·it − 1`, 0 on the last
    /// iteration or when the width is 0).
    pub fn radii(&self) -> Vec<u32> {
        let it = self.boundary_iteration;
        let diff = if it == 0 { 0 } else { self.boundary_width / it };
        (0..it)
            .map(|i| {
                if self.boundary_width == 0 || i == it - 1 {
                    0
                } else {
                    self.boundary_width - diff * i - 1
                }
            })
            .collect()
    }

    /// Normalised `kernel_size²` Gaussian weights, row-major.
    pub fn gaussian(&self) -> Vec<f64> {
        let k = self.kernel_size as usize;
        let c = (k as f64 - 1.0) / 2.0;
        let s2 = 2.0 * self.sigma * self.sigma;
        let mut g: Vec<f64> = (0..k * k)
            .map(|i| {
                let (x, y) = ((i / k) as f64 - c, (i % k) as f64 - c);
                (-(x * x + y * y) / s2).exp()
            })
            .collect();
        let sum: f64 = g.iter().sum();
        for v in &mut g {
            *v /= sum;
        }
        g
    }
}

#[inline]
fn clampi(v: isize, n: usize) -> usize {
    v.clamp(0, n as isize - 1) as usize
}

/// Boundary map of a class map: 1 where the max over the 4-neighbourhood
/// (cross) differs from the min over the 3×3 neighbourhood, with the
/// image border replicated (= kornia's geodesic border for these shapes).
pub fn boundaries(pred: &[u32], h: usize, w: usize) -> Vec<bool> {
    let mut out = vec![false; h * w];
    out.par_chunks_mut(w.max(1)).enumerate().for_each(|(i, row)| {
        for (j, o) in row.iter_mut().enumerate() {
            let at = |di: isize, dj: isize| pred[clampi(i as isize + di, h) * w + clampi(j as isize + dj, w)];
            let dmax = [at(0, 0), at(-1, 0), at(1, 0), at(0, -1), at(0, 1)].into_iter().max().unwrap();
            let mut emin = u32::MAX;
            for di in -1..=1 {
                for dj in -1..=1 {
                    emin = emin.min(at(di, dj));
                }
            }
            *o = dmax != emin;
        }
    });
    out
}

/// `true` where no boundary pixel lies within L1 distance `r` (the
/// official `expand_boundaries` with the diamond kernel `d_ks[r]`, inverted).
fn non_boundary(bnd: &[bool], h: usize, w: usize, r: u32) -> Vec<bool> {
    let r = r as isize;
    let mut out = vec![true; h * w];
    out.par_chunks_mut(w.max(1)).enumerate().for_each(|(i, row)| {
        for (j, o) in row.iter_mut().enumerate() {
            'scan: for di in -r..=r {
                let ii = i as isize + di;
                if ii < 0 || ii >= h as isize {
                    continue;
                }
                let rr = r - di.abs();
                for dj in -rr..=rr {
                    let jj = j as isize + dj;
                    if jj >= 0 && jj < w as isize && bnd[ii as usize * w + jj as usize] {
                        *o = false;
                        break 'scan;
                    }
                }
            }
        }
    });
    out
}

/// Apply the post-processing to a score map `x` (row-major `[h, w]`) given
/// the predicted class of every pixel. f64 inside, f32 out.
pub fn apply_cpu(x: &[f32], pred: &[u32], h: usize, w: usize, opt: &SmlPost) -> Vec<f32> {
    assert_eq!(x.len(), h * w);
    assert_eq!(pred.len(), h * w);
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    if h * w == 0 {
        return vec![];
    }
    if opt.boundary_suppression {
        let bnd = boundaries(pred, h, w);
        for r in opt.radii() {
            let nb = non_boundary(&bnd, h, w, r);
            let prev = out;
            let mut next = vec![0f64; h * w];
            next.par_chunks_mut(w).enumerate().for_each(|(i, row)| {
                for (j, o) in row.iter_mut().enumerate() {
                    let p = i * w + j;
                    if nb[p] {
                        *o = prev[p];
                        continue;
                    }
                    let (mut y, mut cnt) = (0.0f64, 0u32);
                    for di in -1..=1isize {
                        for dj in -1..=1isize {
                            let q = clampi(i as isize + di, h) * w + clampi(j as isize + dj, w);
                            if nb[q] {
                                y += prev[q];
                                cnt += 1;
                            }
                        }
                    }
                    *o = if cnt == 0 { prev[p] } else { y / cnt as f64 };
                }
            });
            out = next;
        }
    }
    if opt.dilated_smoothing {
        let g = opt.gaussian();
        let k = opt.kernel_size as isize;
        let half = (k - 1) / 2;
        let d = opt.dilation as isize;
        let src = out;
        let mut next = vec![0f64; h * w];
        next.par_chunks_mut(w).enumerate().for_each(|(i, row)| {
            for (j, o) in row.iter_mut().enumerate() {
                let mut acc = 0.0;
                for a in 0..k {
                    let ii = clampi(i as isize + (a - half) * d, h);
                    for b in 0..k {
                        let jj = clampi(j as isize + (b - half) * d, w);
                        acc += g[(a * k + b) as usize] * src[ii * w + jj];
                    }
                }
                *o = acc;
            }
        });
        out = next;
    }
    out.into_iter().map(|v| v as f32).collect()
}

/// Options of HEAT's spatial-consistency term (`[method.heat]`): this
/// harness's definition of the "local mean of the score" term of SPEC §4.1
/// (the seed origin's "Hybrid Energy-Adaptive Thresholding"; there is no
/// public reference code). With `w = spatial_window`, `λ = spatial_weight`,
/// each whole-image HEAT map `s` becomes `(1 − λ)·s + λ·m`, `m(p)` the mean
/// of `s` over the `w×w` window centred on `p` clipped to the image (the sum
/// over the in-image window pixels divided by their count; void pixels
/// included). Off (`spatial_window = 0`) by default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeatPost {
    /// Side of the local-mean window: 0 = off, else odd in 3..=63.
    pub spatial_window: u32,
    /// Weight λ of the local mean, in [0, 1] (default 0.5).
    pub spatial_weight: f64,
}

impl Default for HeatPost {
    fn default() -> Self {
        HeatPost { spatial_window: 0, spatial_weight: 0.5 }
    }
}

/// Largest spatial-consistency window accepted.
pub const MAX_SPATIAL_WINDOW: u32 = 63;

impl HeatPost {
    /// Whether the spatial-consistency term runs.
    pub fn active(&self) -> bool {
        self.spatial_window != 0
    }

    /// Check the options; errors name the config key.
    pub fn validate(&self) -> Result<()> {
        let w = self.spatial_window;
        ensure!(
            w == 0 || (w % 2 == 1 && (3..=MAX_SPATIAL_WINDOW).contains(&w)),
            "`method.heat.spatial_window` must be 0 (off) or odd in 3..={MAX_SPATIAL_WINDOW}, got {w}"
        );
        ensure!(
            (0.0..=1.0).contains(&self.spatial_weight),
            "`method.heat.spatial_weight` must be in [0, 1], got {}",
            self.spatial_weight
        );
        Ok(())
    }

    /// What is appended to `conventions.heat_variant` ("" when off).
    pub fn variant(&self) -> String {
        if !self.active() {
            return String::new();
        }
        format!(
            ", spatial consistency: (1−λ)·s + λ·mean over w×w (w={}, λ={})",
            self.spatial_window, self.spatial_weight
        )
    }
}

/// Apply HEAT's spatial-consistency term to a score map `x` (row-major
/// `[h, w]`); f64 inside (separable clipped box sums), f32 out. Identity
/// when the term is off.
pub fn apply_heat_cpu(x: &[f32], h: usize, w: usize, opt: &HeatPost) -> Vec<f32> {
    assert_eq!(x.len(), h * w);
    if !opt.active() || h * w == 0 {
        return x.to_vec();
    }
    let r = (opt.spatial_window / 2) as usize;
    let lam = opt.spatial_weight;
    // row sums over the clipped horizontal window
    let mut rows = vec![0f64; h * w];
    rows.par_chunks_mut(w).enumerate().for_each(|(i, row)| {
        let src = &x[i * w..(i + 1) * w];
        for (j, o) in row.iter_mut().enumerate() {
            *o = src[j.saturating_sub(r)..=(j + r).min(w - 1)].iter().map(|&v| v as f64).sum();
        }
    });
    let mut out = vec![0f32; h * w];
    out.par_chunks_mut(w).enumerate().for_each(|(i, row)| {
        let (i0, i1) = (i.saturating_sub(r), (i + r).min(h - 1));
        for (j, o) in row.iter_mut().enumerate() {
            let (j0, j1) = (j.saturating_sub(r), (j + r).min(w - 1));
            let sum: f64 = (i0..=i1).map(|ii| rows[ii * w + j]).sum();
            let m = sum / ((i1 - i0 + 1) * (j1 - j0 + 1)) as f64;
            let s = x[i * w + j] as f64;
            *o = ((1.0 - lam) * s + lam * m) as f32;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_radius_schedule() {
        let p = SmlPost { boundary_suppression: true, ..Default::default() };
        assert_eq!(p.radii(), vec![3, 2, 1, 0]);
        let p = SmlPost { boundary_suppression: true, boundary_width: 6, boundary_iteration: 2, ..Default::default() };
        assert_eq!(p.radii(), vec![5, 0]);
        let p = SmlPost { boundary_suppression: true, boundary_width: 0, boundary_iteration: 3, ..Default::default() };
        assert_eq!(p.radii(), vec![0, 0, 0]);
        let bad = SmlPost { boundary_suppression: true, boundary_width: 5, boundary_iteration: 2, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("boundary_width"));
        let bad = SmlPost { dilated_smoothing: true, kernel_size: 4, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("kernel_size"));
        let g = SmlPost::default().gaussian();
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-15 && g[24] == g.iter().cloned().fold(0.0, f64::max));
    }

    #[test]
    fn heat_spatial_window_mean() {
        // 3×4 map, w = 3, λ = 1: the clipped 3×3 mean
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let p = HeatPost { spatial_window: 3, spatial_weight: 1.0 };
        let y = apply_heat_cpu(&x, 3, 4, &p);
        assert_eq!(y[0], (0.0 + 1.0 + 4.0 + 5.0) / 4.0);
        assert_eq!(y[5], (0..3).flat_map(|i| (0..3).map(move |j| (i * 4 + j) as f32)).sum::<f32>() / 9.0);
        let p = HeatPost { spatial_window: 3, spatial_weight: 0.0 };
        assert_eq!(apply_heat_cpu(&x, 3, 4, &p), x);
        assert_eq!(apply_heat_cpu(&x, 3, 4, &HeatPost::default()), x);
        for (w, l) in [(2, 0.5), (1, 0.5), (65, 0.5), (3, -0.1), (3, 1.5), (3, f64::NAN)] {
            assert!(HeatPost { spatial_window: w, spatial_weight: l }.validate().is_err(), "{w} {l}");
        }
        assert!(HeatPost { spatial_window: 0, spatial_weight: 2.0 }.validate().is_err());
        assert!(HeatPost { spatial_window: 63, spatial_weight: 1.0 }.validate().is_ok());
    }

    #[test]
    fn constant_maps_are_fixed_points() {
        let (h, w) = (9, 13);
        let pred: Vec<u32> = (0..h * w).map(|p| ((p % w) / 4) as u32).collect();
        let x = vec![-1.25f32; h * w];
        let p = SmlPost { boundary_suppression: true, dilated_smoothing: true, ..Default::default() };
        let y = apply_cpu(&x, &pred, h, w, &p);
        assert!(y.iter().all(|&v| (v + 1.25).abs() < 1e-6));
    }
}

/// A method's CPU post-processing (`scores::Post::cpu`): the map, the
/// predicted class of every pixel (zeros when the hook does not read it),
/// the image size, the plan.
pub type CpuPostFn = fn(&[f32], &[u32], usize, usize, &super::ScorePlan) -> Result<Vec<f32>>;

/// SML's post-processing hook: boundary suppression and/or dilated smoothing.
pub fn sml_cpu(map: &[f32], pred: &[u32], h: usize, w: usize, plan: &super::ScorePlan) -> Result<Vec<f32>> {
    plan.sml_post.validate()?;
    Ok(apply_cpu(map, pred, h, w, &plan.sml_post))
}

/// HEAT's post-processing hook: the spatial-consistency term.
pub fn heat_cpu(map: &[f32], _pred: &[u32], h: usize, w: usize, plan: &super::ScorePlan) -> Result<Vec<f32>> {
    plan.heat_post.validate()?;
    Ok(apply_heat_cpu(map, h, w, &plan.heat_post))
}
