// SML post-processing (Jung et al. 2021): whole-image passes over the
// score map, run by src/scores/gpu_post.rs after the fused pass. The f64
// reference, and the correspondence with the official PyTorch code, is
// src/scores/post.rs. One invocation = one pixel (x = column, y = row);
// neighbours outside the image are clamped to the border (replication).
//
//   boundary  pred (ina) -> 1 where max over the cross != min over 3x3 (outa)
//   expand    boundary (ina) -> 1 where no boundary pixel lies within L1
//             distance Q.r (outa: the non-boundary mask)
//   suppress  mask (ina), map (inf) -> map (outf): masked pixels take the
//             mean of the unmasked ones in their 3x3 neighbourhood (kept
//             when there are none); unmasked pixels are copied
//   gauss_smooth map (inf) -> Σ gw[a,b] · map[i + (a−half)·dil, j + (b−half)·dil] (outf)

struct PostParams {
    h: u32,
    w: u32,
    r: i32,      // expansion radius (expand)
    k: i32,      // Gaussian side (smooth)
    dil: i32,    // Gaussian dilation (smooth)
    half: i32,   // (k − 1) / 2
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> Q: PostParams;
@group(0) @binding(1) var<storage, read> ina: array<u32>;
@group(0) @binding(2) var<storage, read> inf: array<f32>;
@group(0) @binding(3) var<storage, read_write> outa: array<u32>;
@group(0) @binding(4) var<storage, read_write> outf: array<f32>;
@group(0) @binding(5) var<storage, read> gw: array<f32>;

fn at(i: i32, j: i32) -> u32 {
    let ii = clamp(i, 0, i32(Q.h) - 1);
    let jj = clamp(j, 0, i32(Q.w) - 1);
    return u32(ii) * Q.w + u32(jj);
}

@compute @workgroup_size(16, 16)
fn boundary(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= Q.w || g.y >= Q.h) {
        return;
    }
    let i = i32(g.y);
    let j = i32(g.x);
    let c = ina[at(i, j)];
    let dmax = max(max(c, ina[at(i - 1, j)]), max(ina[at(i + 1, j)], max(ina[at(i, j - 1)], ina[at(i, j + 1)])));
    var emin = c;
    for (var di = -1; di <= 1; di++) {
        for (var dj = -1; dj <= 1; dj++) {
            emin = min(emin, ina[at(i + di, j + dj)]);
        }
    }
    outa[g.y * Q.w + g.x] = select(0u, 1u, dmax != emin);
}

@compute @workgroup_size(16, 16)
fn expand(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= Q.w || g.y >= Q.h) {
        return;
    }
    let i = i32(g.y);
    let j = i32(g.x);
    let h = i32(Q.h);
    let w = i32(Q.w);
    var hit = false;
    for (var di = -Q.r; di <= Q.r; di++) {
        let ii = i + di;
        if (ii < 0 || ii >= h) {
            continue;
        }
        let rr = Q.r - abs(di);
        for (var dj = -rr; dj <= rr; dj++) {
            let jj = j + dj;
            if (jj >= 0 && jj < w && ina[u32(ii) * Q.w + u32(jj)] != 0u) {
                hit = true;
            }
        }
    }
    outa[g.y * Q.w + g.x] = select(1u, 0u, hit);
}

@compute @workgroup_size(16, 16)
fn suppress(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= Q.w || g.y >= Q.h) {
        return;
    }
    let i = i32(g.y);
    let j = i32(g.x);
    let p = g.y * Q.w + g.x;
    let prev = inf[p];
    if (ina[p] != 0u) {
        outf[p] = prev;
        return;
    }
    var y = 0.0;
    var cnt = 0u;
    for (var di = -1; di <= 1; di++) {
        for (var dj = -1; dj <= 1; dj++) {
            let q = at(i + di, j + dj);
            if (ina[q] != 0u) {
                y += inf[q];
                cnt += 1u;
            }
        }
    }
    outf[p] = select(y / f32(cnt), prev, cnt == 0u);
}

@compute @workgroup_size(16, 16)
fn gauss_smooth(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= Q.w || g.y >= Q.h) {
        return;
    }
    let i = i32(g.y);
    let j = i32(g.x);
    var acc = 0.0;
    for (var a = 0; a < Q.k; a++) {
        for (var b = 0; b < Q.k; b++) {
            acc += gw[u32(a * Q.k + b)] * inf[at(i + (a - Q.half) * Q.dil, j + (b - Q.half) * Q.dil)];
        }
    }
    outf[g.y * Q.w + g.x] = acc;
}
