// One function per built-in method, all with the same signature:
//
//   fn score_<id>(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32
//
// `px` carries the shared per-pixel quantities (see `Px` in scores.wgsl),
// `z` the pixel's logits when the method's `needs.logits` is set (else an
// unused array). The host generates the calls and stores from the `Method`
// table (src/scores/mod.rs); each function mirrors its f64 reference in
// src/scores/cpu.rs. Higher = more anomalous.

fn score_max_logit(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32 {
    return -px.m;
}

// −1 / Σ exp((z − max)/T_msp)
fn score_msp(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32 {
    return -1.0 / px.s[px.ti];
}

// −(max + T_en · log Σ exp((z − max)/T_en))   (= −T·logsumexp(z/T))
fn score_energy(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32 {
    return -(px.m + px.t * log(px.s[px.ti]));
}

// −((max − μ_ĉ) / σ_ĉ),  ĉ = first argmax; μ split hi + lo (see aux).
fn score_sml(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32 {
    let b = 4u * px.arg;
    return -(((px.m - aux[b]) - aux[b + 1u]) / aux[b + 2u]);
}

// −log(exp(−Ẽ_el) + exp(−Ẽ_gmm)) with
//   Ẽ_el  = (−logsumexp(z) − el_mean) / el_std
//   Ẽ_gmm = (E_gmm − gmm_mean) / gmm_std,  E_gmm = −logsumexp_k(−½‖W x − centers_k‖²)
//   x = the pixel's logits, or its features when P.feat_dim > 0
fn score_heat(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32 {
    let nc = select(P.c, NCLS, NCLS > 0u);
    // Dimension of the Gaussians' space: the features' D (loaded into z
    // from tile rows C..C+D), else the C logits already in z.
    let nd = select(nc, P.feat_dim, P.feat_dim > 0u);
    if (P.feat_dim > 0u) {
        for (var j = 0u; j < nd; j++) {
            (*z)[j] = load((nc + j) * P.n + px.i);
        }
    }
    let el = -(px.m + log(px.s[px.ti]));
    let el_t = ((el - P.el_mean_hi) - P.el_mean_lo) / P.el_std;

    // u = W z in place, bottom row first: row r reads z[0..=r], which
    // rows below r have not overwritten yet. Same summation order as
    // cpu::gmm_energy.
    for (var r = nd; r > 0u; r--) {
        let ri = r - 1u;
        let wb = P.off_w + ri * (ri + 1u) / 2u;
        var acc = 0.0;
        for (var j = 0u; j <= ri; j++) {
            acc += hp(wb + j) * (*z)[j];
        }
        (*z)[ri] = acc;
    }
    // Online logsumexp over the K Gaussians of −½‖u − center_k‖²
    // (the recurrence of cpu::gmm_energy, one exp per Gaussian).
    var best = 0.0;
    var sum = 0.0;
    for (var k = 0u; k < P.k; k++) {
        let cb = P.off_ctr + k * nd;
        var d = 0.0;
        for (var j = 0u; j < nd; j++) {
            let t = (*z)[j] - hp(cb + j);
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
    return -(mx + log(exp(a - mx) + exp(b - mx)));
}

// Softmax entropy at T = 1: log S − xs / S with S = Σ exp(z − max),
// xs = Σ (z − max)·exp(z − max)  (= −Σ p log p).
fn score_entropy(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32 {
    let s1 = px.s[px.ti];
    return log(s1) - px.xs / s1;
}

// Margin: −(top-1 − top-2 logit), the second largest counted with
// multiplicity (a tied maximum gives 0); one class gives 0. On the
// probabilities (P.margin_probs): −(p₁ − p₂) = (e^d − 1)/S, d = z₂ − z₁,
// S = Σ exp(z − max), e^d − 1 by its series near 0 (no cancellation).
fn score_margin(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32 {
    let nc = select(P.c, NCLS, NCLS > 0u);
    var second = px.m;
    var found = false;
    for (var c = 0u; c < nc; c++) {
        let v = (*z)[c];
        if (c != px.arg) {
            second = select(max(second, v), v, !found);
            found = true;
        }
    }
    let d = second - px.m;
    if (P.margin_probs == 0u) {
        return d;
    }
    var s = 0.0;
    for (var c = 0u; c < nc; c++) {
        s += exp((*z)[c] - px.m);
    }
    let em1 = select(exp(d) - 1.0, d * (1.0 + d * (0.5 + d / 6.0)), d > -0.01);
    return em1 / s;
}

// Whether class c is among the M largest logits (ties by index, as
// cpu::in_top; the first argmax always is).
fn gen_in_top(c: u32, nc: u32, z: ptr<function, array<f32, MAX_C>>) -> bool {
    let v = (*z)[c];
    var rank = 0u;
    for (var j = 0u; j < nc; j++) {
        let w = (*z)[j];
        rank += select(0u, 1u, w > v || (w == v && j < c));
    }
    return rank < P.gen_m;
}

// Generalized entropy (Liu et al. 2023): Σ over the M largest p of
// p^γ (1 − p)^γ with p = softmax(z) (T = 1), γ = P.gen_gamma, M = P.gen_m.
// Higher = more anomalous. In log space, so that neither a vanishing p
// nor the predicted class's 1 − p (= rest / S, rest = Σ of the other
// classes' exp(z − max)) rounds to 0 before the power:
// p^γ = exp(γ(z − max − log S)),
// log rest = (m2 − max) + log Σ_{c≠ĉ} exp(z_c − m2), m2 = the runner-up.
fn score_gen(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32 {
    let nc = select(P.c, NCLS, NCLS > 0u);
    if (nc < 2u) {
        return 0.0;
    }
    var m2 = px.m;
    var found = false;
    for (var c = 0u; c < nc; c++) {
        if (c != px.arg) {
            m2 = select(max(m2, (*z)[c]), (*z)[c], !found);
            found = true;
        }
    }
    var r2 = 0.0;
    for (var c = 0u; c < nc; c++) {
        if (c != px.arg) {
            r2 += exp((*z)[c] - m2);
        }
    }
    let log_rest = (m2 - px.m) + log(r2);
    let log_s = log(1.0 + exp(log_rest));
    let g = P.gen_gamma;
    let all = P.gen_m >= nc;
    var acc = exp(g * (log_rest - 2.0 * log_s));
    for (var c = 0u; c < nc; c++) {
        if (c != px.arg && (all || gen_in_top(c, nc, z))) {
            let lp = (*z)[c] - px.m - log_s;
            acc += exp(g * lp) * pow(max(1.0 - exp(lp), 0.0), g);
        }
    }
    return acc;
}

// Rejected by All (Nayal et al. 2023): −Σ_k tanh(z_k).
fn score_rba(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32 {
    let nc = select(P.c, NCLS, NCLS > 0u);
    var acc = 0.0;
    for (var c = 0u; c < nc; c++) {
        acc += tanh((*z)[c]);
    }
    return -acc;
}

// KL matching (Hendrycks et al. 2022): KL(p ‖ d_ĉ) = Σ_j p_j (log p_j − log d_ĉj)
// with p = softmax(z) (S = Σ exp(z − max) at T = 1, px.s[px.ti]); log d at
// P.off_kl, row ĉ; a p_j that underflows to 0 contributes 0.
fn score_kl_matching(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32 {
    let nc = select(P.c, NCLS, NCLS > 0u);
    let s = px.s[px.ti];
    let ls = log(s);
    let row = P.off_kl + px.arg * nc;
    var acc = 0.0;
    for (var j = 0u; j < nc; j++) {
        let d = (*z)[j] - px.m;
        let e = exp(d);
        if (e > 0.0) {
            acc += e * ((d - ls) - aux[row + j]);
        }
    }
    return acc / s;
}
