//! The fast CPU scorer: fixed blocks of [`BLOCK`] pixels, f32 lanes.
//!
//! Why: the f64 reference (`reference.rs`) spends its time in scalar f64
//! `exp`/`log` and HEAT's Gaussian energy; this is the scorer `bench run
//! --device cpu` and the no-adapter fallback use. Design:
//!
//! * Logits are class-major `[C, H, W]`, so each class row of a block of
//!   [`BLOCK`] consecutive pixels is contiguous: it is converted f16 → f32
//!   in bulk (`vcvtph2ps`, 16 or 8 at a time) into `z[c][lane]`, and every kernel is a
//!   loop over lanes that the compiler vectorises (SSE2 baseline, AVX2 and
//!   AVX-512 versions picked at run time, see [`simd_level`]). No fused
//!   multiply-add is used anywhere, so every SIMD level gives bit-identical
//!   results, and every pixel is computed independently of its block's
//!   position and of the rayon schedule: results never depend on the thread
//!   count or the machine's vector width.
//! * One pass over the block shared by all methods ([`Block::load`]):
//!   max and first argmax per lane; then, per distinct temperature of the
//!   plan, `S_T = Σ_c exp((z_c − max)/T)` with the f32 [`exp_f32`]
//!   accumulated in **f64** (f32 accumulation over 150 classes can drift by
//!   ~C·2⁻²⁴ relative, over the 2e-6 budget); with entropy, the T = 1 pass
//!   also accumulates `xs = Σ (z_c − max)·exp(z_c − max)` in f64. msp,
//!   energy, entropy and HEAT all read these sums: one Σ exp per pixel and
//!   temperature, whatever the methods. The exps run in loops over f32 only
//!   (`exp_row`, 16 lanes under AVX-512), widened and summed in a
//!   separate f64 loop (a loop mixing the two vectorises 8 wide).
//! * Each method's finalizer (the `block` field of its
//!   [`crate::scores::MethodSpec`]) turns these into scores over the block,
//!   written straight into the output maps (no staging buffer).
//!   Per-pixel finalisation is done in f64 ([`ln_f64`], [`exp_f64`]),
//!   where f32 cannot meet the contract: SML's `(max − μ)/σ` (bit-identical
//!   to the reference), HEAT, GEN and RbA per class (cheap methods, not in
//!   the default sweep).
//! * HEAT (`gmm_lanes`, `energies_lanes`, `heat_lanes`): the
//!   triangular whitening `u = W x` as a dense f64 kernel over the block's
//!   lanes, register tiled, in the reference's summation order (`u` is
//!   bit-identical to the reference's); then, instead of the K squared
//!   distances `‖u − v_k‖²` (subtract, multiply, add per term), the
//!   expansion around the centres' mean `ū` (`HeatPrep`, cached per
//!   calibration): `−½‖u − v_k‖² = g_k − ½‖u'‖²`, `u' = u − ū`,
//!   `g_k = u'·v'_k − ½‖v'_k‖²`, a K×D small matmul at one multiply and one
//!   add per term, so `E_gmm = (½‖u'‖² − g_max) − ln Σ_k exp(g_k − g_max)`.
//!   Why f64 and not f32 for it: the distances reach 10²–10⁴ (10¹⁰ for f16
//!   extremes) while the energies must stay within 2.4e-7 absolute of the
//!   reference (`tests/calib_fast.rs`); f32 rounding alone would be
//!   ~D·2⁻²⁴·d ≈ 1e-4. In f64 the expansion's rounding is
//!   `≲ D·2⁻⁵³·(‖u'‖ + max‖v'_k‖)²` (centring keeps this at the scale of
//!   the distances, not of the logits' offset): measured ≤ 4.6e-8 absolute
//!   (|E| ≤ 10³, dominated by the exp terms) and ≤ 1.9e-12 relative
//!   (|E| > 10³) in `heat_energies_match_reference`. Only the terms
//!   `exp(g_k − g_max) ≤ 1` of the log-sum-exps use [`exp_f32`], summed in
//!   f64: ≤ 2.4e-7 absolute in each energy; the z-scoring multiplies by
//!   the reciprocal std (≤ 1 f64 ulp off the reference's division).
//!
//! Accuracy (tested in `tests/fast_scorer.rs`): every score within 2e-6
//! relative (1e-6 absolute near zero) of [`super::ReferenceScorer`].

// Lane loops index several arrays by the lane on purpose (the vectoriser's
// shape); the f64 ln 2 split is written to the digits fdlibm uses.
#![allow(clippy::needless_range_loop, clippy::excessive_precision)]

use crate::data::LogitData;
use crate::scores::params::MarginOn;
use crate::scores::{HeatParams, Logits, ScoreMaps, ScorePlan, Scorer};
use anyhow::Result;
use rayon::prelude::*;

/// Pixels per block (the SIMD lanes of one kernel call). Fixed, so a pixel's
/// result never depends on how the image was cut.
pub const BLOCK: usize = 128;
/// Pixels per rayon work item.
const CHUNK: usize = 32 * BLOCK;

/// The per-method block finalizer (the `block` field of
/// [`crate::scores::MethodSpec`]): scores lanes `0..BLOCK` of a loaded
/// block into `out` (lanes `≥ blk.n` are padding, ignored).
pub type BlockFn = fn(&mut Block, &ScorePlan, &mut [f32; BLOCK]);

// ---------------------------------------------------------------- SIMD level

pub use crate::simd::{force_simd_level, simd_level};
use crate::simd::multiversion;

// ------------------------------------------------------------- exp and log

/// `e^x` for `x ≤ 0` in f32, branch-free (vectorises). Cody–Waite range
/// reduction `x = n·ln2 + r`, `|r| ≤ ln2/2`, degree-7 Taylor polynomial
/// (truncation < 8e-9 relative), Horner without FMA. Error bound: **≤ 2
/// ulp** (relative ≤ 2.4e-7); measured max 0.85 ulp over 2²² points of
/// [−87.3, 0] (`exp_and_ln_error_bounds` test). `x < −87.336` (true value below the
/// smallest normal f32, 1.2e-38) returns 0.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 355/512: n·LN2_HI exact for |n| ≤ 2^15
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: round to nearest integer
    const LO: f32 = -87.336_55;
    let xc = if x > LO { x } else { LO };
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let i = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let scale = f32::from_bits(((i + 127) << 23) as u32);
    if x > LO { p * scale } else { 0.0 }
}

/// `e^x` in f64 for `x ∈ [−708, 709]`, branch-free: Cody–Waite reduction,
/// degree-12 Taylor (truncation < 2e-16). Relative error ≤ 4e-16 (a few
/// ulp); `x < −708.39` returns 0, `x > 709.78` saturates at e^709.78.
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238_2e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5·2^52
    const LO: f64 = -708.39;
    const HI: f64 = 709.78;
    let xc = if x > LO { x } else { LO };
    let xc = if xc < HI { xc } else { HI };
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let i = (t.to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64);
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 479_001_600.0;
    for k in [39_916_800.0, 3_628_800.0, 362_880.0, 40_320.0, 5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = p * r + 1.0 / k;
    }
    // 2^n as two factors so n = 1024 (x near 709.78) stays finite
    let h = i >> 1;
    let s1 = f64::from_bits(((h + 1023) << 52) as u64);
    let s2 = f64::from_bits(((i - h + 1023) << 52) as u64);
    if x > LO { p * s1 * s2 } else { 0.0 }
}

/// Natural log in f64 for normal `x > 0`, branch-free: `x = 2^e·m`,
/// `m ∈ [√½, √2)`, `ln m = 2·atanh(s)`, `s = (m−1)/(m+1)`, series to s¹⁷
/// (truncation < 2e-15 relative). Measured error < 1e-14 of max(1, |ln x|)
/// (`exp_and_ln_error_bounds` test); exact 0 at 1.
#[inline(always)]
pub fn ln_f64(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238_2e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const SQRT2: f64 = std::f64::consts::SQRT_2;
    let b = x.to_bits();
    let m = f64::from_bits((b & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    // the exponent as f64 without an int→float conversion
    let e = f64::from_bits(0x4330_0000_0000_0000 | (b >> 52)) - (4_503_599_627_370_496.0 + 1023.0);
    let big = m > SQRT2;
    let m = if big { m * 0.5 } else { m };
    let e = if big { e + 1.0 } else { e };
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut p = 1.0 / 17.0;
    for k in [15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0] {
        p = p * s2 + 1.0 / k;
    }
    let lm = 2.0 * s * p;
    e * LN2_HI + (e * LN2_LO + lm)
}

// ------------------------------------------------------------------- blocks

/// One block of pixels, loaded: the class rows as f32 and what every
/// method shares (max, first argmax, the softmax sums per temperature), plus
/// scratch for the methods' own kernels.
pub struct Block {
    /// Classes.
    pub c: usize,
    /// Lanes in use (the last block of an image may be partial; padding
    /// lanes hold zeros).
    pub n: usize,
    /// `z[c·BLOCK + lane]`: the logits, class-major.
    pub z: Vec<f32>,
    /// Per-lane max logit and its first index.
    pub max: Box<[f32; BLOCK]>,
    pub arg: Box<[u32; BLOCK]>,
    /// Temperatures whose Σ exp was computed, and the sums (`[t][lane]`, f64).
    temps: Vec<f64>,
    sums: Vec<f64>,
    /// `ln S_T` per temperature, computed on first use ([`Block::ln_sum`])
    /// and shared by energy, entropy and HEAT.
    ln_sums: Vec<f64>,
    ln_done: Vec<bool>,
    /// `Σ (z − max)·exp(z − max)` at T = 1 (entropy), when the plan needs it.
    pub xs: Box<[f64; BLOCK]>,
    /// HEAT's features `feat[d·BLOCK + lane]` (f32), when fitted on features.
    pub feat: Vec<f32>,
    /// Feature dimension (0 = none).
    pub d: usize,
    /// f64 scratch for HEAT: the Gaussians' input, the centred `W x`, its
    /// squared norm and the K inner products `g_k` ([`gmm_lanes`]).
    x64: Vec<f64>,
    u64: Vec<f64>,
    nrm: Box<[f64; BLOCK]>,
    g: Vec<f64>,
    prep: HeatPrep,
}

fn lanes<T>(v: &[T], i: usize) -> &[T; BLOCK] {
    v[i * BLOCK..(i + 1) * BLOCK].try_into().unwrap()
}
fn lanes_mut<T>(v: &mut [T], i: usize) -> &mut [T; BLOCK] {
    (&mut v[i * BLOCK..(i + 1) * BLOCK]).try_into().unwrap()
}

/// Copy `n` values of `src` starting at `off` into `dst` as f32 (bulk
/// f16 → f32), zero-padding to `BLOCK`.
fn load_row(src: &LogitData, off: usize, n: usize, dst: &mut [f32; BLOCK]) {
    match src {
        LogitData::F32(v) => dst[..n].copy_from_slice(&v[off..off + n]),
        LogitData::F16(v) => f16_to_f32(&v[off..off + n], &mut dst[..n]),
    }
    dst[n..].fill(0.0);
}

/// Bulk f16 → f32: `vcvtph2ps` 16 at a time at the AVX-512 level, 8 at a
/// time where the CPU has F16C (every AVX2 level), else `half`'s own slice
/// conversion. Exact either way.
fn f16_to_f32(src: &[half::f16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let level = simd_level();
        if level >= 2 {
            // SAFETY: level 2 implies AVX-512 F (see `detect`).
            unsafe { f16_to_f32_avx512(src, dst) };
            return;
        }
        if level >= 1 {
            // SAFETY: level ≥ 1 implies AVX2 and F16C (see `detect`).
            unsafe { f16_to_f32_f16c(src, dst) };
            return;
        }
    }
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst)
}

/// [`f16_to_f32`] 16 at a time (`vcvtph2ps` zmm), the tail 8 at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,f16c")]
unsafe fn f16_to_f32_avx512(src: &[half::f16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm512_cvtph_ps, _mm512_storeu_ps};
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n ≤ both lengths; unaligned loads/stores.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
        }
        i += 16;
    }
    // SAFETY: the same CPU features (AVX2, F16C) as this function's.
    unsafe { f16_to_f32_f16c(&src[i..n], &mut dst[i..n]) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_to_f32_f16c(src: &[half::f16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n ≤ both lengths; unaligned loads/stores.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for j in i..n {
        dst[j] = src[j].to_f32();
    }
}

multiversion! {
    /// Per-lane max and first argmax over the class rows (numpy `argmax`).
    fn max_argmax_block(z: &[f32], c: usize, max: &mut [f32; BLOCK], arg: &mut [u32; BLOCK]) {
        *max = *lanes(z, 0);
        arg.fill(0);
        for k in 1..c {
            let row = lanes(z, k);
            for l in 0..BLOCK {
                let v = row[l];
                let gt = v > max[l];
                max[l] = if gt { v } else { max[l] };
                arg[l] = if gt { k as u32 } else { arg[l] };
            }
        }
    }
}

/// `e[l] = exp_f32(x[l])` written as a loop over f32 only: a lane loop
/// that also touches f64 is vectorised at the f64 width (8 lanes under
/// AVX-512, the f32 exp then runs in half registers); this one runs 16 wide.
/// Callers widen and accumulate `e` in a separate f64 loop.
#[inline(always)]
fn exp_row(x: impl Fn(usize) -> f32, e: &mut [f32; BLOCK]) {
    for l in 0..BLOCK {
        e[l] = exp_f32(x(l));
    }
}

/// `s[l] += e[l]` in f64 (exact widening).
#[inline(always)]
fn add_wide(e: &[f32; BLOCK], s: &mut [f64; BLOCK]) {
    for l in 0..BLOCK {
        s[l] += e[l] as f64;
    }
}

multiversion! {
    /// `s += Σ_c exp((z_c − max)·inv_t)`, f32 exp (16 wide, [`exp_row`]),
    /// f64 accumulation in class order.
    fn sum_exp_block(z: &[f32], c: usize, max: &[f32; BLOCK], inv_t: f32, s: &mut [f64; BLOCK]) {
        s.fill(0.0);
        let mut e = [0f32; BLOCK];
        for k in 0..c {
            let row = lanes(z, k);
            exp_row(|l| (row[l] - max[l]) * inv_t, &mut e);
            add_wide(&e, s);
        }
    }
}

multiversion! {
    /// The T = 1 sum and entropy's `xs = Σ (z − max)·exp(z − max)` (both f64).
    fn sum_exp_xlogx_block(z: &[f32], c: usize, max: &[f32; BLOCK], s: &mut [f64; BLOCK], xs: &mut [f64; BLOCK]) {
        s.fill(0.0);
        xs.fill(0.0);
        let mut e = [0f32; BLOCK];
        for k in 0..c {
            let row = lanes(z, k);
            exp_row(|l| row[l] - max[l], &mut e);
            for l in 0..BLOCK {
                let d = row[l] - max[l];
                s[l] += e[l] as f64;
                xs[l] += d as f64 * e[l] as f64;
            }
        }
    }
}

impl Block {
    pub fn new(c: usize, d: usize) -> Block {
        Block {
            c,
            n: 0,
            z: vec![0.0; c * BLOCK],
            max: Box::new([0.0; BLOCK]),
            arg: Box::new([0; BLOCK]),
            temps: vec![],
            sums: vec![],
            ln_sums: vec![],
            ln_done: vec![],
            xs: Box::new([0.0; BLOCK]),
            feat: vec![0.0; d * BLOCK],
            d,
            x64: vec![],
            u64: vec![],
            nrm: Box::new([0.0; BLOCK]),
            g: vec![],
            prep: HeatPrep::default(),
        }
    }

    /// Load pixels `p0..p0+n` (`n ≤ BLOCK`) of `logits` (and `features`)
    /// and compute max/argmax and, for each of `temps`, the softmax sum
    /// (with `xs` at T = 1 when `xlogx`).
    pub fn load(&mut self, logits: &Logits, features: Option<&Logits>, p0: usize, n: usize, temps: &[f64], xlogx: bool) {
        debug_assert!(n <= BLOCK && logits.c == self.c);
        self.n = n;
        let np = logits.pixels();
        for k in 0..self.c {
            load_row(&logits.data, k * np + p0, n, lanes_mut(&mut self.z, k));
        }
        if let Some(f) = features {
            for k in 0..self.d {
                load_row(&f.data, k * np + p0, n, lanes_mut(&mut self.feat, k));
            }
        }
        max_argmax_block(&self.z, self.c, &mut self.max, &mut self.arg);
        self.temps.clear();
        self.temps.extend_from_slice(temps);
        self.sums.resize(temps.len() * BLOCK, 0.0);
        self.ln_sums.resize(temps.len() * BLOCK, 0.0);
        self.ln_done.clear();
        self.ln_done.resize(temps.len(), false);
        for (i, &t) in temps.iter().enumerate() {
            let s = lanes_mut(&mut self.sums, i);
            if t == 1.0 && xlogx {
                sum_exp_xlogx_block(&self.z, self.c, &self.max, s, &mut self.xs);
            } else {
                sum_exp_block(&self.z, self.c, &self.max, (1.0 / t) as f32, s);
            }
        }
    }

    /// Load only max/argmax (the predicted classes).
    fn load_argmax(&mut self, logits: &Logits, p0: usize, n: usize) {
        self.load(logits, None, p0, n, &[], false);
    }

    /// `Σ_c exp((z_c − max)/T)` per lane (f64); `t` must be one of the
    /// temperatures the block was loaded with.
    pub fn sum(&self, t: f64) -> &[f64; BLOCK] {
        let i = self.temps.iter().position(|&x| x == t).expect("temperature not loaded");
        lanes(&self.sums, i)
    }

    /// `ln S_T` per lane ([`ln_f64`] of [`Block::sum`]), computed once per
    /// block and temperature whatever the methods that read it.
    pub fn ln_sum(&mut self, t: f64) -> &[f64; BLOCK] {
        let i = self.temps.iter().position(|&x| x == t).expect("temperature not loaded");
        if !self.ln_done[i] {
            ln_lanes(lanes(&self.sums, i), lanes_mut(&mut self.ln_sums, i));
            self.ln_done[i] = true;
        }
        lanes(&self.ln_sums, i)
    }
}

/// The distinct temperatures a plan's methods need, and whether entropy's
/// `xs` is needed (from the method table's `temperature` / `needs`).
fn plan_sums(plan: &ScorePlan) -> (Vec<f64>, bool) {
    let mut temps: Vec<f64> = vec![];
    let mut xlogx = false;
    for &m in &plan.methods {
        if m.spec().needs.xlogx {
            xlogx = true;
            if !temps.contains(&1.0) {
                temps.push(1.0);
            }
        }
        if let Some(t) = m.temperature(plan)
            && !temps.contains(&t)
        {
            temps.push(t);
        }
    }
    (temps, xlogx)
}

// --------------------------------------------------------------- finalizers

/// `max_logit`: `−max` (bit-identical to the reference).
pub fn max_logit_blk(b: &mut Block, _: &ScorePlan, out: &mut [f32; BLOCK]) {
    for l in 0..BLOCK {
        out[l] = -b.max[l];
    }
}

multiversion! {
    fn msp_lanes(s: &[f64; BLOCK], out: &mut [f32; BLOCK]) {
        for l in 0..BLOCK {
            out[l] = (-1.0 / s[l]) as f32;
        }
    }
}

/// `msp`: `−1/S_T` (f64).
pub fn msp_blk(b: &mut Block, plan: &ScorePlan, out: &mut [f32; BLOCK]) {
    msp_lanes(b.sum(plan.msp_temperature), out)
}

multiversion! {
    fn ln_lanes(s: &[f64; BLOCK], out: &mut [f64; BLOCK]) {
        for l in 0..BLOCK {
            out[l] = ln_f64(s[l]);
        }
    }
}

multiversion! {
    fn energy_lanes(max: &[f32; BLOCK], ls: &[f64; BLOCK], t: f64, out: &mut [f32; BLOCK]) {
        for l in 0..BLOCK {
            out[l] = (-t * (max[l] as f64 / t + ls[l])) as f32;
        }
    }
}

/// `energy`: `−T·(max/T + ln S_T)` (f64).
pub fn energy_blk(b: &mut Block, plan: &ScorePlan, out: &mut [f32; BLOCK]) {
    let t = plan.energy_temperature;
    let ls = *b.ln_sum(t);
    energy_lanes(&b.max, &ls, t, out)
}

/// `sml` (plain): `−(max − μ_ĉ)/σ_ĉ` in f64, the reference's own
/// arithmetic (bit-identical).
pub fn sml_blk(b: &mut Block, plan: &ScorePlan, out: &mut [f32; BLOCK]) {
    let st = plan.sml().expect("SML needs calibration");
    for l in 0..BLOCK {
        let a = b.arg[l] as usize;
        out[l] = (-(b.max[l] as f64 - st.mean[a]) / st.std[a]) as f32;
    }
}

multiversion! {
    fn entropy_lanes(s: &[f64; BLOCK], ls: &[f64; BLOCK], xs: &[f64; BLOCK], out: &mut [f32; BLOCK]) {
        for l in 0..BLOCK {
            out[l] = (ls[l] - xs[l] / s[l]) as f32;
        }
    }
}

/// `entropy`: `ln S − xs/S` at T = 1 (f64; both terms ≥ 0, no cancellation).
pub fn entropy_blk(b: &mut Block, _: &ScorePlan, out: &mut [f32; BLOCK]) {
    let ls = *b.ln_sum(1.0);
    entropy_lanes(b.sum(1.0), &ls, &b.xs, out)
}

multiversion! {
    /// Per lane: top-1 and the runner-up with multiplicity (a tie with the
    /// max lands in `m2`).
    fn top2_lanes(z: &[f32], c: usize, m1: &mut [f32; BLOCK], m2: &mut [f32; BLOCK]) {
        *m1 = *lanes(z, 0);
        m2.fill(f32::NEG_INFINITY);
        for k in 1..c {
            let row = lanes(z, k);
            for l in 0..BLOCK {
                let v = row[l];
                let lo = if v < m1[l] { v } else { m1[l] };
                m2[l] = if lo > m2[l] { lo } else { m2[l] };
                m1[l] = if v > m1[l] { v } else { m1[l] };
            }
        }
    }
}

multiversion! {
    fn margin_logit_lanes(m1: &[f32; BLOCK], m2: &[f32; BLOCK], out: &mut [f32; BLOCK]) {
        for l in 0..BLOCK {
            out[l] = (-(m1[l] as f64 - m2[l] as f64)) as f32;
        }
    }
}

multiversion! {
    /// `−(p₁ − p₂) = (e^{z₂ − z₁} − 1) / Σ exp(z − max)`: the difference
    /// exact in f64, [`exp_f64`] (its absolute error ≤ 4e-16 stays far
    /// below the 1e-6 absolute budget when the two are close), the sum with
    /// [`exp_f32`] in f64 as the shared softmax sums.
    fn margin_prob_lanes(z: &[f32], c: usize, m1: &[f32; BLOCK], m2: &[f32; BLOCK], out: &mut [f32; BLOCK]) {
        let mut s = [0f64; BLOCK];
        for k in 0..c {
            let row = lanes(z, k);
            for l in 0..BLOCK {
                s[l] += exp_f32(row[l] - m1[l]) as f64;
            }
        }
        for l in 0..BLOCK {
            out[l] = ((exp_f64(m2[l] as f64 - m1[l] as f64) - 1.0) / s[l]) as f32;
        }
    }
}

/// `margin`: `−(top-1 − top-2)` of the logits (exact in f64 from the f32
/// logits) or of the probabilities; one class gives 0.
pub fn margin_blk(b: &mut Block, plan: &ScorePlan, out: &mut [f32; BLOCK]) {
    if b.c < 2 {
        out.fill(0.0);
        return;
    }
    let (mut m1, mut m2) = ([0f32; BLOCK], [0f32; BLOCK]);
    top2_lanes(&b.z, b.c, &mut m1, &mut m2);
    match plan.params.margin.on {
        MarginOn::Logits => margin_logit_lanes(&m1, &m2, out),
        MarginOn::Probs => margin_prob_lanes(&b.z, b.c, &m1, &m2, out),
    }
}

multiversion! {
    fn rba_lanes(z: &[f32], c: usize, out: &mut [f32; BLOCK]) {
        let mut acc = [0f64; BLOCK];
        for k in 0..c {
            let row = lanes(z, k);
            for l in 0..BLOCK {
                let x = row[l] as f64;
                let t = x.abs();
                let e = exp_f64(-2.0 * t);
                let big = (1.0 - e) / (1.0 + e);
                let small = t - t * t * t * (1.0 / 3.0);
                let th = if t < 1e-4 { small } else { big };
                acc[l] += if x < 0.0 { -th } else { th };
            }
        }
        for l in 0..BLOCK {
            out[l] = (-acc[l]) as f32;
        }
    }
}

/// `rba`: `−Σ tanh(z)`, tanh in f64 from [`exp_f64`] (relative error
/// < 1e-11 per term), summed in the reference's order.
pub fn rba_blk(b: &mut Block, _: &ScorePlan, out: &mut [f32; BLOCK]) {
    rba_lanes(&b.z, b.c, out)
}

multiversion! {
    /// `keep[k·BLOCK + l]`: whether class k is among lane l's `m` largest
    /// logits (ties by index, as [`super::reference::in_top`]).
    fn top_m_lanes(z: &[f32], c: usize, m: usize, keep: &mut [bool]) {
        for k in 0..c {
            let row = lanes(z, k);
            let mut rank = [0u32; BLOCK];
            for j in 0..c {
                let other = lanes(z, j);
                for l in 0..BLOCK {
                    let above = other[l] > row[l] || (other[l] == row[l] && j < k);
                    rank[l] += above as u32;
                }
            }
            for l in 0..BLOCK {
                keep[k * BLOCK + l] = (rank[l] as usize) < m;
            }
        }
    }
}

multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn gen_lanes(z: &[f32], c: usize, max: &[f32; BLOCK], arg: &[u32; BLOCK], g: f64, keep: &[bool], out: &mut [f32; BLOCK]) {
        let mut m2 = [f64::NEG_INFINITY; BLOCK];
        for k in 0..c {
            let row = lanes(z, k);
            for l in 0..BLOCK {
                let v = if arg[l] == k as u32 { f64::NEG_INFINITY } else { row[l] as f64 };
                m2[l] = if v > m2[l] { v } else { m2[l] };
            }
        }
        let mut r2 = [0f64; BLOCK];
        for k in 0..c {
            let row = lanes(z, k);
            for l in 0..BLOCK {
                let v = if arg[l] == k as u32 { f64::NEG_INFINITY } else { row[l] as f64 };
                r2[l] += exp_f64(v - m2[l]);
            }
        }
        let mut log_s = [0f64; BLOCK];
        let mut acc = [0f64; BLOCK];
        for l in 0..BLOCK {
            let log_rest = (m2[l] - max[l] as f64) + ln_f64(r2[l]);
            log_s[l] = ln_f64(1.0 + exp_f64(log_rest));
            acc[l] = exp_f64(g * (log_rest - 2.0 * log_s[l]));
        }
        for k in 0..c {
            let row = lanes(z, k);
            for l in 0..BLOCK {
                let lp = row[l] as f64 - max[l] as f64 - log_s[l];
                let q = 1.0 - exp_f64(lp);
                let q = if q > 0.0 { q } else { 0.0 };
                let pw = exp_f64(g * ln_f64(if q > 0.0 { q } else { 1.0 }));
                let pw = if q > 0.0 { pw } else { 0.0 };
                let term = exp_f64(g * lp) * pw;
                let skip = arg[l] == k as u32 || (!keep.is_empty() && !keep[k * BLOCK + l]);
                acc[l] += if skip { 0.0 } else { term };
            }
        }
        for l in 0..BLOCK {
            out[l] = acc[l] as f32;
        }
    }
}

/// `gen`: the reference's log-space formula per class, in f64 with
/// [`exp_f64`] / [`ln_f64`], over the top-M classes when M < C; fewer than
/// two classes give 0.
pub fn gen_blk(b: &mut Block, plan: &ScorePlan, out: &mut [f32; BLOCK]) {
    if b.c < 2 {
        out.fill(0.0);
        return;
    }
    let g = plan.params.gen_entropy;
    let m = g.m(b.c);
    let mut keep = vec![];
    if m < b.c {
        keep.resize(b.c * BLOCK, false);
        top_m_lanes(&b.z, b.c, m, &mut keep);
    }
    gen_lanes(&b.z, b.c, &b.max, &b.arg, g.gamma, &keep, out)
}

multiversion! {
    /// `KL(p ‖ d_ĉ)` per lane in f64: `p_j = e_j / S` with [`exp_f64`], the
    /// reference's terms and order (`log d` gathered from row ĉ).
    fn kl_lanes(z: &[f32], c: usize, max: &[f32; BLOCK], arg: &[u32; BLOCK], ld: &[f64], out: &mut [f32; BLOCK]) {
        let mut s = [0f64; BLOCK];
        for k in 0..c {
            let row = lanes(z, k);
            for l in 0..BLOCK {
                s[l] += exp_f64(row[l] as f64 - max[l] as f64);
            }
        }
        let mut ls = [0f64; BLOCK];
        for l in 0..BLOCK {
            ls[l] = ln_f64(s[l]);
        }
        let mut acc = [0f64; BLOCK];
        for k in 0..c {
            let row = lanes(z, k);
            for l in 0..BLOCK {
                let d = row[l] as f64 - max[l] as f64;
                let e = exp_f64(d);
                let t = e / s[l] * ((d - ls[l]) - ld[arg[l] as usize * c + k]);
                acc[l] += if e == 0.0 { 0.0 } else { t };
            }
        }
        for l in 0..BLOCK {
            out[l] = acc[l] as f32;
        }
    }
}

/// `kl_matching`: see [`crate::scores::kl`]; f64 throughout.
pub fn kl_blk(b: &mut Block, plan: &ScorePlan, out: &mut [f32; BLOCK]) {
    let kl = plan.calibration.as_ref().and_then(|c| c.kl.as_ref()).expect("kl_matching needs calibration");
    kl_lanes(&b.z, b.c, &b.max, &b.arg, kl.log_dists(), out)
}

/// Lane tile of the HEAT kernels ([`gmm_lanes`]): 16 f64 = two AVX-512
/// registers per row.
const TL: usize = 16;
/// Centres per register tile of [`gmm_lanes`] (K = 13 → 4 + 4 + 4 + 1).
const KB: usize = 4;

/// `g[b][tile t] = c_b + Σ_i u'_i·v'_{b,i}` for one group of `N ≤ KB`
/// centres (`vg`: `[i][b]`, D×N), lane tile `t`: N·2 accumulators in
/// registers, the loop over i a zip (no bounds checks).
#[inline(always)]
fn g_group<const N: usize>(u: &[[f64; BLOCK]], vg: &[f64], cb: &[f64], t: usize, g: &mut [[f64; BLOCK]]) {
    let mut acc = [[0f64; TL]; N];
    let (vg, _) = vg.as_chunks::<N>();
    for (urow, vb) in u.iter().zip(vg) {
        let ut: &[f64; TL] = urow[t * TL..t * TL + TL].try_into().unwrap();
        for b in 0..N {
            let v = vb[b];
            for l in 0..TL {
                acc[b][l] += ut[l] * v;
            }
        }
    }
    for ((grow, a), &c) in g.iter_mut().zip(&acc).zip(cb) {
        let gt: &mut [f64; TL] = (&mut grow[t * TL..t * TL + TL]).try_into().unwrap();
        for l in 0..TL {
            gt[l] = a[l] + c;
        }
    }
}

multiversion! {
    /// HEAT's Gaussian kernel over the block's lanes, f64, no FMA:
    /// `u = W x` (lower-triangular `W`, D×D, summed in the reference's
    /// order, so `u` is bit-identical to the reference's), centred
    /// `u' = u − ū`, its squared norm `nrm = ‖u'‖²`, and per centre
    /// `g_k = u'·v'_k + c_k` with `v'_k = v_k − ū`, `c_k = −½‖v'_k‖²`
    /// ([`HeatPrep`]), so that `−½‖u − v_k‖² = g_k − ½ nrm`: the K
    /// distances cost one multiply and one add per (k, i) instead of a
    /// subtract, a multiply and an add. Register tiled: lane tiles of
    /// [`TL`], whitening two rows at a time, [`KB`] centres at a time
    /// ([`g_group`]); the loops over D are zips (no bounds checks).
    fn gmm_lanes(x: &[f64], whiten: &[f64], p: &HeatPrep, u: &mut [f64], nrm: &mut [f64; BLOCK], g: &mut [f64]) {
        let (dim, k) = (p.ubar.len(), p.cb.len());
        let (xr, _) = x[..dim * BLOCK].as_chunks::<BLOCK>();
        let (ur, _) = u[..dim * BLOCK].as_chunks_mut::<BLOCK>();
        let (gr, _) = g[..k * BLOCK].as_chunks_mut::<BLOCK>();
        let ubar = &p.ubar[..dim];
        nrm.fill(0.0);
        let mut i = 0;
        while i < dim {
            let two = i + 1 < dim;
            // rows i and i+1 of W over j ≤ i (row i+1's last term below);
            // a lone last row runs twice, the copy discarded
            let w0 = &whiten[i * dim..i * dim + i + 1];
            let i1 = if two { i + 1 } else { i };
            let w1 = &whiten[i1 * dim..i1 * dim + i + 1];
            let w11 = whiten[i1 * dim + i1];
            let (ub0, ub1) = (ubar[i], ubar[i1]);
            let xlast = &xr[i1];
            for t in 0..BLOCK / TL {
                let mut a0 = [0f64; TL];
                let mut a1 = [0f64; TL];
                for ((xrow, &c0), &c1) in xr[..=i].iter().zip(w0).zip(w1) {
                    let xt: &[f64; TL] = xrow[t * TL..t * TL + TL].try_into().unwrap();
                    for l in 0..TL {
                        a0[l] += c0 * xt[l];
                        a1[l] += c1 * xt[l];
                    }
                }
                let nt: &mut [f64; TL] = (&mut nrm[t * TL..t * TL + TL]).try_into().unwrap();
                for l in 0..TL {
                    a0[l] -= ub0;
                    nt[l] += a0[l] * a0[l];
                }
                ur[i][t * TL..t * TL + TL].copy_from_slice(&a0);
                if two {
                    let xt: &[f64; TL] = xlast[t * TL..t * TL + TL].try_into().unwrap();
                    for l in 0..TL {
                        a1[l] += w11 * xt[l];
                        a1[l] -= ub1;
                        nt[l] += a1[l] * a1[l];
                    }
                    ur[i1][t * TL..t * TL + TL].copy_from_slice(&a1);
                }
            }
            i += 2;
        }
        // g: KB centres at a time, then the remainder as one group
        let ur: &[[f64; BLOCK]] = ur;
        let full = k / KB;
        for t in 0..BLOCK / TL {
            for q in 0..full {
                let o = q * KB;
                g_group::<KB>(ur, &p.vg[o * dim..(o + KB) * dim], &p.cb[o..o + KB], t, &mut gr[o..o + KB]);
            }
            let o = full * KB;
            let (vg, cb, gq) = (&p.vg[o * dim..k * dim], &p.cb[o..k], &mut gr[o..k]);
            match k - o {
                1 => g_group::<1>(ur, vg, cb, t, gq),
                2 => g_group::<2>(ur, vg, cb, t, gq),
                3 => g_group::<3>(ur, vg, cb, t, gq),
                _ => {}
            }
        }
    }
}

multiversion! {
    /// HEAT's two energies per lane before z-scoring, from [`gmm_lanes`]'
    /// `g_k` and `nrm`, `ln S_1` ([`Block::ln_sum`]) and max: `E_el = −(max + ln S_1)` and
    /// `E_gmm = −logsumexp_k(−½ d_k) = (½ nrm − g_max) − ln Σ_k exp(g_k − g_max)`;
    /// the terms `exp(g_k − g_max) ≤ 1` (one of them exactly 1) with the
    /// f32 [`exp_f32`], 16 wide ([`exp_row`]), summed in f64.
    fn energies_lanes(g: &[f64], k: usize, nrm: &[f64; BLOCK], ls1: &[f64; BLOCK], max: &[f32; BLOCK], el: &mut [f64; BLOCK], gm: &mut [f64; BLOCK]) {
        let mut best = [f64::NEG_INFINITY; BLOCK];
        for kk in 0..k {
            let r = lanes(g, kk);
            for l in 0..BLOCK {
                best[l] = if r[l] > best[l] { r[l] } else { best[l] };
            }
        }
        let mut acc = [0f64; BLOCK];
        let mut t = [0f32; BLOCK];
        let mut e = [0f32; BLOCK];
        for kk in 0..k {
            let r = lanes(g, kk);
            for l in 0..BLOCK {
                t[l] = (r[l] - best[l]) as f32;
            }
            exp_row(|l| t[l], &mut e);
            add_wide(&e, &mut acc);
        }
        for l in 0..BLOCK {
            gm[l] = (0.5 * nrm[l] - best[l]) - ln_f64(acc[l]);
            el[l] = -(max[l] as f64 + ls1[l]);
        }
    }
}

multiversion! {
    /// HEAT's composition per lane: the soft-min of the z-scored energies.
    fn heat_lanes(el: &[f64; BLOCK], gm: &[f64; BLOCK], p: &[f64; 4], out: &mut [f32; BLOCK]) {
        // the z-scoring by multiplication with the reciprocal std: ≤ 1 ulp
        // (f64) off the reference's division
        let [el_mean, el_std, gmm_mean, gmm_std] = *p;
        let (el_inv, gmm_inv) = (1.0 / el_std, 1.0 / gmm_std);
        for l in 0..BLOCK {
            let a = -((el[l] - el_mean) * el_inv);
            let b = -((gm[l] - gmm_mean) * gmm_inv);
            let mx = if a > b { a } else { b };
            // one of the two terms is exp(0) = 1; the other ≤ 1 in f32
            let lo = if a > b { b } else { a };
            out[l] = (-(mx + ln_f64(1.0 + exp_f32((lo - mx) as f32) as f64))) as f32;
        }
    }
}

multiversion! {
    fn widen(src: &[f32], dst: &mut [f64]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s as f64;
        }
    }
}

/// HEAT's per-calibration constants of [`gmm_lanes`]: the centres' mean
/// `ū = (1/K) Σ_k v_k`, the centred centres `v'_k = v_k − ū` (K×D) and
/// `c_k = −½‖v'_k‖²`. Cached in the [`Block`], keyed on the centres' bits.
///
/// Why centred: the expansion `‖u − v‖² = ‖u‖² − 2u·v + ‖v‖²` cancels when
/// `‖u‖ ≫ ‖u − v‖`; centring on `ū` keeps its rounding at
/// `≲ D·2⁻⁵³·(‖u'‖ + max‖v'_k‖)²`, the scale of the distances themselves
/// rather than of the logits' offset (e.g. logits ≈ 1000: ‖u‖² ≈ 10⁷).
#[derive(Default)]
struct HeatPrep {
    key: Vec<u64>,
    ubar: Vec<f64>,
    /// `v'` in groups of [`KB`] centres (the last group shorter), each
    /// group `[i][b]`, the order [`g_group`] reads.
    vg: Vec<f64>,
    cb: Vec<f64>,
}

impl HeatPrep {
    fn update(&mut self, h: &HeatParams) {
        let (dim, k) = (h.dim(), h.k);
        let centers = &h.centers[..k * dim];
        if self.key.len() == centers.len() && self.key.iter().zip(centers).all(|(a, b)| *a == b.to_bits()) {
            return;
        }
        self.key = centers.iter().map(|v| v.to_bits()).collect();
        self.ubar = (0..dim).map(|i| (0..k).map(|kk| centers[kk * dim + i]).sum::<f64>() / k as f64).collect();
        let vc: Vec<f64> = (0..k * dim).map(|j| centers[j] - self.ubar[j % dim]).collect();
        self.cb = (0..k).map(|kk| -0.5 * vc[kk * dim..(kk + 1) * dim].iter().map(|v| v * v).sum::<f64>()).collect();
        self.vg.clear();
        for o in (0..k).step_by(KB) {
            let n = KB.min(k - o);
            for i in 0..dim {
                self.vg.extend((o..o + n).map(|kk| vc[kk * dim + i]));
            }
        }
    }
}

/// HEAT's raw energies `E_el` and `E_gmm` over a block loaded with the T = 1
/// sum (features too when `h` was fitted on features), in f64: the
/// Gaussians' input widened exactly, then `gmm_lanes` (the triangular
/// whitening and the K centred inner products as dense kernels over the
/// block) and `energies_lanes`. Shared by [`heat_blk`] and the
/// calibration's standardisation pass ([`crate::scores::calib`]), so both
/// see the same energies.
pub fn heat_energies(b: &mut Block, h: &HeatParams, el: &mut [f64; BLOCK], gm: &mut [f64; BLOCK]) {
    let dim = h.dim();
    b.x64.resize(dim * BLOCK, 0.0);
    b.u64.resize(dim * BLOCK, 0.0);
    b.g.resize(h.k * BLOCK, 0.0);
    b.prep.update(h);
    let src = if h.features() { &b.feat } else { &b.z };
    widen(&src[..dim * BLOCK], &mut b.x64);
    gmm_lanes(&b.x64, &h.whiten, &b.prep, &mut b.u64, &mut b.nrm, &mut b.g);
    let ls1 = *b.ln_sum(1.0);
    energies_lanes(&b.g, h.k, &b.nrm, &ls1, &b.max, el, gm)
}

/// `heat` (SPEC §4.1): [`heat_energies`], z-scored with the calibration's
/// moments and composed per lane.
pub fn heat_blk(b: &mut Block, plan: &ScorePlan, out: &mut [f32; BLOCK]) {
    let h = plan.heat().expect("HEAT needs calibration");
    let (mut el, mut gm) = ([0f64; BLOCK], [0f64; BLOCK]);
    heat_energies(b, h, &mut el, &mut gm);
    heat_lanes(&el, &gm, &[h.el_mean, h.el_std, h.gmm_mean, h.gmm_std], out)
}

// ------------------------------------------------------------------ scorer

/// First argmax of every pixel (the predicted class map), blockwise;
/// identical to the reference's.
pub fn predictions(logits: &Logits) -> Vec<u32> {
    let mut pred = vec![0u32; logits.pixels()];
    pred.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, out)| {
        let mut blk = Block::new(logits.c, 0);
        for (bi, o) in out.chunks_mut(BLOCK).enumerate() {
            blk.load_argmax(logits, ci * CHUNK + bi * BLOCK, o.len());
            o.copy_from_slice(&blk.arg[..o.len()]);
        }
    });
    pred
}

/// The default CPU scorer: rayon over fixed chunks of fixed blocks, f32
/// SIMD kernels, f64 where the contract needs it (module docs).
#[derive(Debug, Default)]
pub struct CpuScorer;

impl Scorer for CpuScorer {
    fn device(&self) -> String {
        let simd = ["portable", "avx2", "avx512"][simd_level() as usize];
        format!("cpu ({} threads, {simd})", rayon::current_num_threads())
    }

    fn score_features(&mut self, logits: &Logits, features: Option<&Logits>, plan: &ScorePlan) -> Result<ScoreMaps> {
        let features = crate::scores::heat_features(logits, features, plan)?;
        plan.check_fits(logits.c)?;
        let n = logits.pixels();
        let nm = plan.methods.len();
        if nm == 0 {
            return Ok(ScoreMaps { h: logits.h, w: logits.w, maps: vec![] });
        }
        let (temps, xlogx) = plan_sums(plan);
        let fns: Vec<BlockFn> = plan.methods.iter().map(|m| m.spec().block).collect();
        let d = features.map_or(0, |f| f.c);
        // every map written in place: per rayon chunk, one slice of each
        // (no method-major staging buffer to copy out of, and no second
        // n·methods allocation to fault in)
        let mut maps: Vec<Vec<f32>> = (0..nm).map(|_| crate::scores::pool::zeroed(n)).collect();
        let mut chunks: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(CHUNK)).map(|_| Vec::with_capacity(nm)).collect();
        for m in maps.iter_mut() {
            for (ci, c) in m.chunks_mut(CHUNK).enumerate() {
                chunks[ci].push(c);
            }
        }
        chunks.into_par_iter().enumerate().for_each_init(
            || (Block::new(logits.c, d), Box::new([0f32; BLOCK])),
            |(blk, o), (ci, mut outs)| {
                let len = outs[0].len();
                let p0 = ci * CHUNK;
                for b0 in (0..len).step_by(BLOCK) {
                    let nb = BLOCK.min(len - b0);
                    blk.load(logits, features, p0 + b0, nb, &temps, xlogx);
                    for (f, out) in fns.iter().zip(outs.iter_mut()) {
                        f(blk, plan, o);
                        out[b0..b0 + nb].copy_from_slice(&o[..nb]);
                    }
                }
            },
        );
        super::finish(maps, logits, plan, predictions)
    }
}
