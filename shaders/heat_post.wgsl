// HEAT's optional spatial-consistency term (README "HEAT"; this harness's
// definition): s' = (1 − λ)·s + λ·m, m(p) = mean of s over the w×w window
// centred on p clipped to the image. Two separable whole-image passes over
// the HEAT map, run by src/scores/gpu_post.rs after the fused pass; the f64
// reference is apply_heat_cpu in src/scores/post.rs. One invocation = one
// pixel (x = column, y = row); r = (w − 1)/2.
//
//   row_sums  map (src) -> Σ src[i, j0..=j1] (dst), j0 = max(j − r, 0),
//             j1 = min(j + r, W − 1)
//   blend     map (src), row sums (rows) -> (1 − λ)·src + λ·Σ rows[i0..=i1, j]
//             / ((i1 − i0 + 1)·(j1 − j0 + 1)) (dst): the window's sum over its
//             in-image pixels divided by their count (no padding values)

struct SpatialParams {
    h: u32,
    w: u32,
    r: i32,      // window radius
    lam: f32,    // weight of the local mean
}

@group(0) @binding(0) var<uniform> Q: SpatialParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> rows: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(16, 16)
fn row_sums(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= Q.w || g.y >= Q.h) {
        return;
    }
    let j = i32(g.x);
    let j0 = max(j - Q.r, 0);
    let j1 = min(j + Q.r, i32(Q.w) - 1);
    let base = g.y * Q.w;
    var acc = 0.0;
    for (var jj = j0; jj <= j1; jj++) {
        acc += src[base + u32(jj)];
    }
    dst[base + g.x] = acc;
}

@compute @workgroup_size(16, 16)
fn blend(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= Q.w || g.y >= Q.h) {
        return;
    }
    let i = i32(g.y);
    let j = i32(g.x);
    let i0 = max(i - Q.r, 0);
    let i1 = min(i + Q.r, i32(Q.h) - 1);
    let j0 = max(j - Q.r, 0);
    let j1 = min(j + Q.r, i32(Q.w) - 1);
    var acc = 0.0;
    for (var ii = i0; ii <= i1; ii++) {
        acc += rows[u32(ii) * Q.w + g.x];
    }
    let m = acc / f32((i1 - i0 + 1) * (j1 - j0 + 1));
    let p = g.y * Q.w + g.x;
    dst[p] = (1.0 - Q.lam) * src[p] + Q.lam * m;
}
