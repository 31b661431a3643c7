//! The CPU reference of every score, in f64.
//!
//! Why: this is the definition the WGSL pass and the fast f32 block scorer
//! (`fast.rs`, the default [`super::CpuScorer`]) are tested against. Each
//! method is one small function of a pixel's logits so the formulas can be
//! read next to SPEC §4.

use crate::scores::params::{GenParams, MarginOn};
use crate::scores::{HeatParams, Logits, Method, ScoreMaps, ScorePlan, Scorer};
use anyhow::Result;
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

/// Class-conditional Gaussian energy with tied covariance:
/// `-logsumexp_k(-½ ‖W x - W μ_k‖²)` where `W = L⁻¹`, `Σ = L Lᵀ`.
/// `z` is the vector of the Gaussians' space (logits, or features: length
/// [`HeatParams::dim`]); `u` is scratch of at least that length.
#[inline]
pub fn gmm_energy(z: &[f64], h: &HeatParams, u: &mut [f64]) -> f64 {
    let c = h.dim();
    let u = &mut u[..c];
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

/// The shared per-pixel quantities every method reads, computed once per
/// pixel: the logits, max, first argmax and (lazily, per temperature) the
/// softmax sum `Σ exp(z_c/T − max/T)`. The CPU twin of WGSL's `Px`.
pub struct Pixel<'a> {
    pub z: &'a [f64],
    pub max: f64,
    pub arg: usize,
    /// (T, Σ exp) for the temperatures asked so far (at most 3 per plan).
    sums: [(f64, f64); 4],
    nsums: usize,
    /// Scratch of length max(C, D) (HEAT's whitened vector).
    pub scratch: &'a mut [f64],
    /// The pixel's feature vector, when HEAT's Gaussians live in a
    /// feature space (`features/<model>/`).
    pub feat: Option<&'a [f64]>,
}

impl<'a> Pixel<'a> {
    pub fn new(z: &'a [f64], scratch: &'a mut [f64]) -> Pixel<'a> {
        let (max, arg) = max_argmax(z);
        Pixel { z, max, arg, sums: [(0.0, 0.0); 4], nsums: 0, scratch, feat: None }
    }

    /// `Σ_c exp(z_c/T − max/T)`, computed once per temperature and shared
    /// by every method that asks (MSP, Energy, HEAT, entropy).
    pub fn sum(&mut self, t: f64) -> f64 {
        if let Some(&(_, s)) = self.sums[..self.nsums].iter().find(|x| x.0 == t) {
            return s;
        }
        let mt = self.max / t;
        let s: f64 = self.z.iter().map(|&v| (v / t - mt).exp()).sum();
        if self.nsums < self.sums.len() {
            self.sums[self.nsums] = (t, s);
            self.nsums += 1;
        }
        s
    }
}

/// The CPU reference of one method at one pixel (the `cpu` field of
/// [`crate::scores::MethodSpec`]). Callers guarantee the plan carries what the
/// method needs (calibration), as [`CpuScorer::score`] checks up front.
pub type CpuFn = fn(&mut Pixel, &ScorePlan) -> f64;

/// Margin: `−(top-1 − top-2 logit)`, the second largest counted with
/// multiplicity (a tied maximum gives 0); one class gives 0.
pub fn margin(z: &[f64]) -> f64 {
    margin_with(z, MarginOn::Logits)
}

/// The largest value, its first index and the runner-up counted with
/// multiplicity (`None` for one class).
fn top2(z: &[f64]) -> (f64, usize, Option<f64>) {
    let (m, a) = max_argmax(z);
    let second = z.iter().enumerate().filter(|&(c, _)| c != a).map(|(_, &v)| v).fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))));
    (m, a, second)
}

/// Margin on the logits, or on `p = softmax(z)` (T = 1):
/// `−(p₁ − p₂) = expm1(z₂ − z₁) / Σ exp(z − max)` (no cancellation when
/// the two are close).
pub fn margin_with(z: &[f64], on: MarginOn) -> f64 {
    let (m, _, second) = top2(z);
    let Some(m2) = second else { return 0.0 };
    match on {
        MarginOn::Logits => -(m - m2),
        MarginOn::Probs => (m2 - m).exp_m1() / z.iter().map(|&v| (v - m).exp()).sum::<f64>(),
    }
}

/// `margin`: see [`margin_with`].
pub fn margin_px(px: &mut Pixel, plan: &ScorePlan) -> f64 {
    margin_with(px.z, plan.params.margin.on)
}

/// Generalized entropy (Liu et al., CVPR 2023) with the paper's defaults,
/// γ = 0.1 over all classes; see [`gen_entropy_with`].
pub fn gen_entropy(z: &[f64]) -> f64 {
    gen_entropy_with(z, &GenParams::default())
}

/// Whether class `c` is among the `m` largest of `z` (ties broken by
/// index: equal values give equal terms, so the sum does not depend on it;
/// the first argmax always is).
#[inline]
pub fn in_top(z: &[f64], c: usize, m: usize) -> bool {
    let v = z[c];
    z.iter().enumerate().filter(|&(j, &w)| w > v || (w == v && j < c)).count() < m
}

/// Generalized entropy: `Σ p_c^γ (1 − p_c)^γ` over the M largest
/// `p = softmax(z)`. The official code (`XixiLiu95/GEN` `benchmark.py`
/// `generalized_entropy`) returns its negation as a confidence; bench's
/// sign is higher = more anomalous. Computed in log space (as the shader):
/// `p^γ = exp(γ(z − max − log S))`, and the predicted class's
/// `1 − p = rest / S` with `log rest` from the runner-up, so that nothing
/// rounds to 0 before the power.
pub fn gen_entropy_with(z: &[f64], g: &GenParams) -> f64 {
    if z.len() < 2 {
        return 0.0;
    }
    let (gamma, top) = (g.gamma, g.m(z.len()));
    let (m, a) = max_argmax(z);
    let others = || z.iter().enumerate().filter(move |&(c, _)| c != a);
    let m2 = others().fold(f64::NEG_INFINITY, |b, (_, &v)| b.max(v));
    let r2: f64 = others().map(|(_, &v)| (v - m2).exp()).sum();
    let log_rest = (m2 - m) + r2.ln();
    let log_s = (1.0 + log_rest.exp()).ln();
    let mut acc = (gamma * (log_rest - 2.0 * log_s)).exp();
    for (c, &v) in others() {
        if top < z.len() && !in_top(z, c, top) {
            continue;
        }
        let lp = v - m - log_s;
        acc += (gamma * lp).exp() * (1.0 - lp.exp()).max(0.0).powf(gamma);
    }
    acc
}

/// `gen`: see [`gen_entropy_with`].
pub fn gen_px(px: &mut Pixel, plan: &ScorePlan) -> f64 {
    gen_entropy_with(px.z, &plan.params.gen_entropy)
}

/// Rejected by All (Nayal et al., ICCV 2023): `−Σ_k tanh(l_k)` (RbA
/// `evaluate_ood.py` `get_RbA`: `-logits.tanh().sum(dim=0)`).
pub fn rba(z: &[f64]) -> f64 {
    -z.iter().map(|&v| v.tanh()).sum::<f64>()
}

/// `rba`: see [`rba`].
pub fn rba_px(px: &mut Pixel, _: &ScorePlan) -> f64 {
    rba(px.z)
}

/// `max_logit`: `−max z`.
pub fn max_logit_px(px: &mut Pixel, _: &ScorePlan) -> f64 {
    -px.max
}

/// `msp`: `−1 / Σ exp((z − max)/T)`.
pub fn msp_px(px: &mut Pixel, plan: &ScorePlan) -> f64 {
    -1.0 / px.sum(plan.msp_temperature)
}

/// `energy`: `−T·(max/T + log Σ exp(z/T − max/T))`.
pub fn energy_px(px: &mut Pixel, plan: &ScorePlan) -> f64 {
    let t = plan.energy_temperature;
    -t * (px.max / t + px.sum(t).ln())
}

/// `sml` (plain): `−(max − μ_ĉ)/σ_ĉ`.
pub fn sml_px(px: &mut Pixel, plan: &ScorePlan) -> f64 {
    let st = plan.sml().expect("SML needs calibration");
    -(px.max - st.mean[px.arg]) / st.std[px.arg]
}

/// The energy of the logits at T = 1, `−logsumexp(z)` (HEAT's `E_el`; the
/// calibration's moments are fitted on exactly this).
pub fn logit_energy(px: &mut Pixel) -> f64 {
    -(px.max + px.sum(1.0).ln())
}

/// `heat` (SPEC §4.1): soft-min of the z-scored logit energy and the
/// z-scored class-Gaussian energy, `−log(exp(−Ẽ_el) + exp(−Ẽ_gmm))`; the
/// Gaussian energy reads the pixel's features when the fit was on features.
pub fn heat_px(px: &mut Pixel, plan: &ScorePlan) -> f64 {
    let h = plan.heat().expect("HEAT needs calibration");
    let el = (logit_energy(px) - h.el_mean) / h.el_std;
    let x = px.feat.unwrap_or(px.z);
    let gm = (gmm_energy(x, h, px.scratch) - h.gmm_mean) / h.gmm_std;
    // -logsumexp(-el, -gm), stable
    let (a, b) = (-el, -gm);
    let mx = a.max(b);
    -(mx + ((a - mx).exp() + (b - mx).exp()).ln())
}

/// `entropy`: Shannon entropy of `p = softmax(z)` at T = 1 (independent of
/// the MSP temperature), `−Σ p_c log p_c`. With `S = Σ exp(z_c − max)`,
/// `log p_c = (z_c − max) − log S`, so `H = log S − Σ (z_c − max)·exp(z_c − max) / S`
/// (terms with `p_c = 0` contribute 0, the `0·log 0 = 0` convention).
/// Higher = more uncertain = more anomalous; in `[0, log C]`.
pub fn entropy_px(px: &mut Pixel, _: &ScorePlan) -> f64 {
    let s = px.sum(1.0);
    let m = px.max;
    let xs: f64 = px.z.iter().map(|&v| (v - m) * (v - m).exp()).sum();
    s.ln() - xs / s
}

/// One method at one pixel in f64, no f32 rounding (what the golden tests
/// compare with numpy). `u` is scratch of length ≥ C.
#[inline]
pub fn score_one(method: Method, z: &[f64], plan: &ScorePlan, u: &mut [f64]) -> f64 {
    (method.spec().cpu)(&mut Pixel::new(z, u), plan)
}

/// All requested methods at one pixel (given its feature vector when HEAT
/// lives in a feature space), sharing the work the definitions have in
/// common: max, argmax and each temperature's softmax sum are computed
/// once, in [`Pixel`]. Bit-identical to [`score_one`] per method.
#[inline]
pub fn score_pixel_features(z: &[f64], feat: Option<&[f64]>, plan: &ScorePlan, u: &mut [f64], out: &mut [f32]) {
    let mut px = Pixel::new(z, u);
    px.feat = feat;
    for (o, &method) in out.iter_mut().zip(&plan.methods) {
        *o = (method.spec().cpu)(&mut px, plan) as f32;
    }
}

/// First argmax of every pixel (the predicted class map).
pub fn predictions(logits: &Logits) -> Vec<u32> {
    let mut pred = vec![0u32; logits.pixels()];
    pred.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, out)| {
        let mut z = vec![0f64; logits.c];
        for (j, o) in out.iter_mut().enumerate() {
            logits.pixel(ci * CHUNK + j, &mut z);
            *o = max_argmax(&z).1 as u32;
        }
    });
    pred
}

/// The f64 reference scorer: rayon over fixed pixel chunks, one pixel at a
/// time through the `cpu` functions of the method table, f64 inside, f32
/// out. Slow (f64 `exp`/`log` per class); what the fast
/// [`super::CpuScorer`] is tested against.
#[derive(Debug, Default)]
pub struct ReferenceScorer;

impl Scorer for ReferenceScorer {
    fn device(&self) -> String {
        format!("cpu reference ({} threads)", rayon::current_num_threads())
    }

    fn score_features(&mut self, logits: &Logits, features: Option<&Logits>, plan: &ScorePlan) -> Result<ScoreMaps> {
        let features = crate::scores::heat_features(logits, features, plan)?;
        plan.check_fits(logits.c)?;
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
                let d = features.map_or(0, |f| f.c);
                let mut z = vec![0f64; logits.c];
                let mut x = vec![0f64; d];
                let mut u = vec![0f64; logits.c.max(d)];
                let p0 = ci * CHUNK;
                for (j, o) in out.chunks_mut(nm).enumerate() {
                    logits.pixel(p0 + j, &mut z);
                    let feat = features.map(|f| {
                        f.pixel(p0 + j, &mut x);
                        &x[..]
                    });
                    score_pixel_features(&z, feat, plan, &mut u, o);
                }
            });
        let mut maps = vec![Vec::with_capacity(n); nm];
        for px in inter.chunks(nm) {
            for (map, &v) in maps.iter_mut().zip(px) {
                map.push(v);
            }
        }
        super::finish(maps, logits, plan, predictions)
    }
}
