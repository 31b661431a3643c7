//! What the fused pass uploads besides the logits: its uniform block
//! ([`Params`], the ABI of `shaders/scores.wgsl`) and the `aux` buffer of
//! fitted statistics, filled by each method's own packer.
//!
//! Why a file of its own: the fused pass must not name a method. A method
//! with fitted statistics points at its packer from its row of the method
//! table (`MethodSpec::fit`); [`super::fused`] only calls the packers of
//! the methods a plan asks for, in slot order, and uploads the result.

use crate::scores::{Calibration, ScorePlan};
use anyhow::{Context, Result, ensure};

/// Method slots the `Params` tables hold (`array<vec4<u32>, 2>`).
pub const MAX_SLOTS: usize = 12;
/// Most classes (or feature dims) a method that keeps the pixel's vector in
/// the shader's private array supports on the GPU.
pub const MAX_LOGIT_ARRAY: usize = 256;

/// Uniform block of `scores.wgsl` (`struct Params`, 240 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n: u32,
    pub c: u32,
    pub k: u32,
    pub mask: u32,
    pub row_x: u32,
    pub off_w: u32,
    pub off_ctr: u32,
    pub t1i: u32,
    /// output row per method slot
    pub rows: [u32; MAX_SLOTS],
    /// entry of the shader's `s` per method slot
    pub ti: [u32; MAX_SLOTS],
    /// temperature per method slot
    pub t: [f32; MAX_SLOTS],
    pub inv_t: [f32; 4],
    pub el_mean_hi: f32,
    pub el_mean_lo: f32,
    pub el_std: f32,
    pub gmm_mean_hi: f32,
    pub gmm_mean_lo: f32,
    pub gmm_std: f32,
    /// output row of the predicted class, `u32::MAX` = none
    pub pred_row: u32,
    /// HEAT on features: their dimension D (rows C..C+D of the tile), 0 = logits
    pub feat_dim: u32,
    /// `gen`: γ and M (M = C: every class)
    pub gen_gamma: f32,
    pub gen_m: u32,
    /// `margin`: 1 = on the probabilities, 0 = on the logits
    pub margin_probs: u32,
    /// `kl_matching`: offset of the C×C class-mean distributions in `aux`
    pub off_kl: u32,
}

const _: () = assert!(std::mem::size_of::<Params>() == 240);

/// What the packers of one plan fill in.
#[derive(Debug, Default)]
pub struct Pack {
    pub params: Params,
    pub aux: Vec<f32>,
    /// Length of the per-pixel vector the shader's private array must hold
    /// (0 = no method keeps one).
    pub private_len: usize,
}

/// A method's packer: its fitted statistics for `c` classes into `pack`.
pub type PackFn = fn(&Calibration, usize, &mut Pack) -> Result<()>;

/// The parameters of the methods that have them but no fitted statistics
/// (`[method.gen]`, `[method.margin]`), for `c` classes.
pub fn pack_params(plan: &ScorePlan, c: usize, p: &mut Params) {
    let g = &plan.params.gen_entropy;
    p.gen_gamma = g.gamma as f32;
    p.gen_m = g.m(c) as u32;
    p.margin_probs = (plan.params.margin.on == crate::scores::params::MarginOn::Probs) as u32;
}

/// An f64 as an (hi, lo) pair of f32 whose sum carries ~48 bits.
pub fn split(x: f64) -> (f32, f32) {
    let hi = x as f32;
    (hi, (x - hi as f64) as f32)
}

/// SML: per class (mean hi, mean lo, std, 0) at the start of `aux`.
pub fn pack_sml(cal: &Calibration, c: usize, pack: &mut Pack) -> Result<()> {
    let s = &cal.sml;
    for k in 0..c {
        let (hi, lo) = split(s.mean[k]);
        let sd = s.std[k] as f32;
        ensure!(
            hi.is_finite() && sd.is_finite() && sd > 0.0,
            "SML statistics of class {k} are not usable in f32 (mean {}, std {})",
            s.mean[k],
            s.std[k]
        );
        pack.aux.extend([hi, lo, sd, 0.0]);
    }
    Ok(())
}

/// HEAT: the lower triangle of the whitening matrix packed row by row, the
/// centres, and the z-scoring moments in the uniform block.
pub fn pack_heat(cal: &Calibration, c: usize, pack: &mut Pack) -> Result<()> {
    let h = &cal.heat;
    let d = h.dim();
    let p = &mut pack.params;
    if h.features() {
        ensure!(
            d <= MAX_LOGIT_ARRAY,
            "HEAT on the GPU supports features of at most {MAX_LOGIT_ARRAY} dims (got {d}); use --device cpu"
        );
        p.feat_dim = d as u32;
        pack.private_len = pack.private_len.max(c.max(d));
    }
    p.k = h.k as u32;
    p.off_w = pack.aux.len() as u32;
    for i in 0..d {
        pack.aux.extend(h.whiten[i * d..=i * d + i].iter().map(|&v| v as f32));
    }
    p.off_ctr = pack.aux.len() as u32;
    pack.aux.extend(h.centers.iter().map(|&v| v as f32));
    (p.el_mean_hi, p.el_mean_lo) = split(h.el_mean);
    (p.gmm_mean_hi, p.gmm_mean_lo) = split(h.gmm_mean);
    p.el_std = h.el_std as f32;
    p.gmm_std = h.gmm_std as f32;
    ensure!(
        pack.aux.iter().all(|v| v.is_finite())
            && [p.el_mean_hi, p.el_std, p.gmm_mean_hi, p.gmm_std].iter().all(|v| v.is_finite())
            && p.el_std > 0.0
            && p.gmm_std > 0.0,
        "HEAT parameters are not finite in f32"
    );
    Ok(())
}

/// KL matching: `log d_cj` row by row (C×C f32) at `off_kl`.
pub fn pack_kl(cal: &Calibration, c: usize, pack: &mut Pack) -> Result<()> {
    let kl = cal.kl.as_ref().context("kl_matching requested without KL-matching templates")?;
    pack.params.off_kl = pack.aux.len() as u32;
    pack.aux.extend(kl.log_dists()[..c * c].iter().map(|&v| v as f32));
    ensure!(pack.aux.iter().all(|v| v.is_finite()), "KL-matching templates are not finite in f32");
    Ok(())
}
