// The fused anomaly-score pass (SPEC §4): one invocation = one pixel.
//
// This file is the skeleton; the host (src/scores/gpu.rs, `shader_source`)
// appends shaders/methods.wgsl (one function per method) and replaces the
// dispatch marker line at the end of `main` with one block per built-in method,
// generated from the `Method` table (src/scores/mod.rs):
//
//   if (PER_METHOD_GATE && (P.mask & (1u << SLOT)) != 0u) {
//       let v = FN(with_method(px, SLOT), &z);
//       if (live) { scores[row(SLOT) * n + i] = v; }
//   }
//
// The gate reads only the uniform `P.mask` (plus the LOGITS override for
// methods that need the private logit array), so no divergent control flow
// wraps a method's loads; invocations past the tile's end compute and
// skip the store.
//
// Every invocation reads its C logits exactly once (class-major tile
// `[C, n]`), keeps a running max / first argmax and, per temperature, an
// online (rescaled) Σ exp((z_c − max)/T) — plus, when a method needs it
// (XS), Σ (z_c − max)·exp(z_c − max) at T = 1 — and hands them to every
// method function as a `Px`. The formulas are those of src/scores/cpu.rs
// (the reference, f64); the shader computes them in f32.
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
//   LOGITS (keep the pixel's logits in the private array `z`; such
//   pipelines are only used for plans that request a method needing it),
//   XS (accumulate `xs`), NT (distinct temperatures needing a Σ exp: 0..3),
//   NCLS (C baked in, 0 = read it from P) and AUX_UBO.

const WG: u32 = 256u;

// Capacity of the per-invocation logit array `z` (WGSL private
// arrays are fixed-size and zero-initialised). The host rewrites this exact
// line to the smallest of 32 / 64 / 128 / 256 that holds C (4 when no
// requested method needs it), and refuses such methods above 256 classes
// with a clear error.
const MAX_C: u32 = 256u;

// Size, in vec4s, of the uniform view `auxu` (the host rewrites this exact
// line to the device's max_uniform_buffer_binding_size, at most 64 KiB).
const AUXU_VEC4: u32 = 4096u;

override F16: bool = false;
override LOGITS: bool = false;
override XS: bool = false;
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
    t1i: u32,      // entry of `s` holding T = 1 (for XS)
    rows: array<vec4<u32>, 3>,  // output row per method slot
    ti: array<vec4<u32>, 3>,    // entry of `s` per method slot
    t: array<vec4<f32>, 3>,     // temperature per method slot
    inv_t: vec4<f32>,           // 1/T of the distinct temperatures (3 used)
    el_mean_hi: f32,
    el_mean_lo: f32,
    el_std: f32,
    gmm_mean_hi: f32,
    gmm_mean_lo: f32,
    gmm_std: f32,
    pred_row: u32, // output row of the predicted class (as f32), or 0xffffffff
    feat_dim: u32, // HEAT on features: D (tile rows C..C+D hold them), 0 = on logits
    gen_gamma: f32,   // gen: γ
    gen_m: u32,       // gen: M (the M largest probabilities; M = C: all)
    margin_probs: u32, // margin: 1 = on softmax probabilities, 0 = on logits
    off_kl: u32,      // kl_matching: offset of the C×C class-mean distributions in `aux`
}

// What every method function receives: the shared per-pixel quantities,
// plus the temperature entries of the method being evaluated.
struct Px {
    i: u32,         // pixel index in the tile
    m: f32,         // max_c z_c
    arg: u32,       // first argmax
    s: vec3<f32>,   // Σ exp((z − max)/T_j) for the distinct temperatures
    xs: f32,        // Σ (z − max)·exp(z − max) at T = 1 (XS only)
    ti: u32,        // this method's entry of `s`
    t: f32,         // this method's temperature
}

fn with_method(px: Px, slot: u32) -> Px {
    var q = px;
    q.ti = P.ti[slot >> 2u][slot & 3u];
    q.t = P.t[slot >> 2u][slot & 3u];
    return q;
}

fn out_row(slot: u32) -> u32 {
    return P.rows[slot >> 2u][slot & 3u];
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> aux: array<f32>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(0) @binding(4) var<uniform> auxu: array<vec4<f32>, AUXU_VEC4>;

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
    let inv_t = P.inv_t.xyz;

    // LOGITS: the pixel's logits (HEAT overwrites them with W z).
    var z: array<f32, MAX_C>;

    // Single pass over the logits: running max, first argmax (strict `>`),
    // and Σ exp((z − max)/T) rescaled whenever the max moves. One exp per
    // class per temperature: exp(−|v − m|/T) is the new term when v ≤ m and
    // the rescale factor of the old sum when v > m.
    var m = load(i);
    var arg = 0u;
    var s = vec3<f32>(1.0);
    var xs = 0.0;
    if (LOGITS) {
        z[0] = m;
    }
    for (var c = 1u; c < nc; c++) {
        let v = load(c * n + i);
        if (LOGITS) {
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
            if (XS) {
                // Σ (z − max)·exp(z − max) at T = 1, rescaled like s:
                // v ≤ m adds (v − m)·e; v > m moves the max by d = m − v < 0,
                // so every old term becomes e^d·(term + d·exp(z − m)).
                let e1 = e[P.t1i];
                xs = select(xs + (v - m) * e1, e1 * (xs + (m - v) * s[P.t1i]), gt);
            }
            s = select(s + e, s * e + vec3<f32>(1.0), gt);
        }
        m = select(m, v, gt);
        arg = select(arg, c, gt);
    }

    let px = Px(i, m, arg, s, xs, 0u, 0.0);
    //@DISPATCH@
    // The predicted class, for whole-image post-processing (SML boundary
    // suppression, shaders/sml_post.wgsl); exact as f32 below 2^24 classes.
    if (P.pred_row != 0xffffffffu && live) {
        scores[P.pred_row * n + i] = f32(arg);
    }
}
