// The fused anomaly-score pass (SPEC §4): one invocation = one pixel.
//
// Every invocation reads its C logits exactly once (class-major tile
// `[C, n]`), keeps a running max / first argmax and, per temperature, an
// online (rescaled) Σ exp((z_c − max)/T), and writes every requested score
// as f32 into the method-major output `[rows, n]`. The formulas are those of
// src/scores/cpu.rs (the reference, f64); this file computes them in f32.
//
//   max_logit  −max z
//   msp        −1 / Σ exp((z − max)/T_msp)
//   energy     −(max + T_en · log Σ exp((z − max)/T_en))   (= −T·logsumexp(z/T))
//   sml        −((max − μ_ĉ) / σ_ĉ),  ĉ = first argmax
//   heat       −log(exp(−Ẽ_el) + exp(−Ẽ_gmm))  with
//              Ẽ_el  = (−logsumexp(z) − el_mean) / el_std
//              Ẽ_gmm = (E_gmm − gmm_mean) / gmm_std,
//              E_gmm = −logsumexp_k(−½‖W z − centers_k‖²)
//
// Host-side conventions (src/scores/gpu.rs):
// - `logits` is an array of u32 words: f32 bits (F16 = false) or raw IEEE
//   binary16 bits packed two per word, little-endian (F16 = true), decoded
//   with unpack2x16float. Element (c, i) of the tile is at flat index c·n + i.
// - `aux` holds f32s: SML statistics per class (mean_hi, mean_lo, std, 0)
//   at 0; the lower triangle of W packed row by row (row i = i+1 values)
//   at `off_w`; the K whitened centers (row-major K×C) at `off_ctr`.
//   Means are split into hi + lo f32 parts so that `max − mean` keeps f64
//   accuracy when the two are close (`max − hi` is exact there, Sterbenz).
// - `auxu` is a uniform-buffer view of the start of the same buffer. HEAT
//   reads W and the centers through it when they fit (AUX_UBO): every
//   invocation reads the same element at the same time, which constant
//   caches (and lavapipe's scalar uniform loads) broadcast.
// - Pipeline-overridable constants select the variant: F16 (logit dtype),
//   HEAT (compile HEAT and its private array in; such pipelines are only
//   used for plans that request HEAT), NT (distinct temperatures needing a
//   Σ exp: 0..3), NCLS (C baked in, 0 = read it from P) and AUX_UBO.

const WG: u32 = 256u;

// Capacity of the per-invocation logit array used by HEAT (WGSL private
// arrays are fixed-size and zero-initialised). The host rewrites this exact
// line to the smallest of 32 / 64 / 128 / 256 that holds C, and refuses
// HEAT above 256 classes with a clear error.
const MAX_C: u32 = 256u;

// Size, in vec4s, of the uniform view `auxu` (the host rewrites this exact
// line to the device's max_uniform_buffer_binding_size, at most 64 KiB).
const AUXU_VEC4: u32 = 4096u;

override F16: bool = false;
override HEAT: bool = false;
override NT: u32 = 0u;
override NCLS: u32 = 0u;
override AUX_UBO: bool = false;

struct Params {
    n: u32,        // pixels in this tile (= class-row stride in `logits`)
    c: u32,        // classes
    k: u32,        // fitted Gaussians (HEAT)
    mask: u32,     // requested methods: bit = Method::slot()
    row_x: u32,    // invocations per dispatch row (2-D dispatch)
    off_w: u32,
    off_ctr: u32,
    msp_ti: u32,   // which temperature sum each method reads
    en_ti: u32,
    el_ti: u32,
    row_ml: u32,   // output row of each method
    row_msp: u32,
    row_en: u32,
    row_sml: u32,
    row_heat: u32,
    t_en: f32,
    inv_t0: f32,
    inv_t1: f32,
    inv_t2: f32,
    el_mean_hi: f32,
    el_mean_lo: f32,
    el_std: f32,
    gmm_mean_hi: f32,
    gmm_mean_lo: f32,
    gmm_std: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> aux: array<f32>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(0) @binding(4) var<uniform> auxu: array<vec4<f32>, AUXU_VEC4>;

const M_MAX_LOGIT: u32 = 1u;
const M_MSP: u32 = 2u;
const M_ENERGY: u32 = 4u;
const M_SML: u32 = 8u;

fn load(e: u32) -> f32 {
    if (F16) {
        let pair = unpack2x16float(logits[e >> 1u]);
        return select(pair.x, pair.y, (e & 1u) == 1u);
    }
    return bitcast<f32>(logits[e]);
}

// HEAT parameter e of `aux` (W, centers).
fn hp(e: u32) -> f32 {
    if (AUX_UBO) {
        return auxu[e >> 2u][e & 3u];
    }
    return aux[e];
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = P.n;
    // No early return: invocations past the tile's end redo the last pixel
    // and skip the stores, so no divergent control flow wraps the loads
    // (SIMD software implementations such as lavapipe then keep uniform
    // loads scalar); on GPUs the few extra lanes cost nothing.
    let gi = gid.y * P.row_x + gid.x;
    let live = gi < n;
    let i = min(gi, n - 1u);
    let nc = select(P.c, NCLS, NCLS > 0u);
    let inv_t = vec3<f32>(P.inv_t0, P.inv_t1, P.inv_t2);

    // HEAT: the pixel's logits, then (in place) W z.
    var z: array<f32, MAX_C>;

    // Single pass over the logits: running max, first argmax (strict `>`),
    // and Σ exp((z − max)/T) rescaled whenever the max moves. One exp per
    // class per temperature: exp(−|v − m|/T) is the new term when v ≤ m and
    // the rescale factor of the old sum when v > m.
    var m = load(i);
    var arg = 0u;
    var s = vec3<f32>(1.0);
    if (HEAT) {
        z[0] = m;
    }
    for (var c = 1u; c < nc; c++) {
        let v = load(c * n + i);
        if (HEAT) {
            z[c] = v;
        }
        let gt = v > m;
        if (NT > 0u) {
            let d = -abs(v - m);
            var e = vec3<f32>(0.0);
            e.x = exp(d * inv_t.x);
            if (NT > 1u) {
                e.y = exp(d * inv_t.y);
            }
            if (NT > 2u) {
                e.z = exp(d * inv_t.z);
            }
            s = select(s + e, s * e + vec3<f32>(1.0), gt);
        }
        m = select(m, v, gt);
        arg = select(arg, c, gt);
    }

    let mask = select(0u, P.mask, live);
    if ((mask & M_MAX_LOGIT) != 0u) {
        scores[P.row_ml * n + i] = -m;
    }
    if ((mask & M_MSP) != 0u) {
        scores[P.row_msp * n + i] = -1.0 / s[P.msp_ti];
    }
    if ((mask & M_ENERGY) != 0u) {
        scores[P.row_en * n + i] = -(m + P.t_en * log(s[P.en_ti]));
    }
    if ((mask & M_SML) != 0u) {
        let b = 4u * arg;
        scores[P.row_sml * n + i] = -(((m - aux[b]) - aux[b + 1u]) / aux[b + 2u]);
    }
    if (HEAT) {
        let el = -(m + log(s[P.el_ti]));
        let el_t = ((el - P.el_mean_hi) - P.el_mean_lo) / P.el_std;

        // u = W z in place, bottom row first: row r reads z[0..=r], which
        // rows below r have not overwritten yet. Same summation order as
        // cpu::gmm_energy.
        for (var r = nc; r > 0u; r--) {
            let ri = r - 1u;
            let wb = P.off_w + ri * (ri + 1u) / 2u;
            var acc = 0.0;
            for (var j = 0u; j <= ri; j++) {
                acc += hp(wb + j) * z[j];
            }
            z[ri] = acc;
        }
        // Online logsumexp over the K Gaussians of −½‖u − center_k‖²
        // (the recurrence of cpu::gmm_energy, one exp per Gaussian).
        var best = 0.0;
        var sum = 0.0;
        for (var k = 0u; k < P.k; k++) {
            let cb = P.off_ctr + k * nc;
            var d = 0.0;
            for (var j = 0u; j < nc; j++) {
                let t = z[j] - hp(cb + j);
                d += t * t;
            }
            let x = -0.5 * d;
            // k = 0 starts the sum at exp(0) = 1 with best = x
            let first = k == 0u;
            let e = exp(-abs(x - best));
            sum = select(select(sum + e, sum * e + 1.0, x > best), 1.0, first);
            best = select(max(best, x), x, first);
        }
        let gm = -(best + log(sum));
        let gm_t = ((gm - P.gmm_mean_hi) - P.gmm_mean_lo) / P.gmm_std;

        // soft-min of the two standardised energies, stable
        let a = -el_t;
        let b = -gm_t;
        let mx = max(a, b);
        if (live) {
            scores[P.row_heat * n + i] = -(mx + log(exp(a - mx) + exp(b - mx)));
        }
    }
}
