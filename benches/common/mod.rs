//! Data shared by the benches (not every bench uses every generator).
#![allow(dead_code)]

/// Deterministic synthetic score map: positives shifted up by 1.5 σ;
/// `tied` quantizes the scores to 256 distinct values.
pub fn data(n: usize, pos_rate: f64, tied: bool) -> (Vec<f32>, Vec<u8>) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (n as u64) ^ ((pos_rate * 1e6) as u64) << 20;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let unit = |v: u64| (v >> 11) as f64 / (1u64 << 53) as f64;
    let mut scores = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let pos = unit(next()) < pos_rate;
        // Irwin–Hall(4) ≈ normal, σ = sqrt(4/12)
        let g = (0..4).map(|_| unit(next())).sum::<f64>() - 2.0;
        let s = g / (1.0f64 / 3.0).sqrt() + if pos { 1.5 } else { 0.0 };
        let s = if tied { ((s + 4.0) * 32.0).floor().clamp(0.0, 255.0) / 32.0 - 4.0 } else { s };
        scores.push(s as f32);
        labels.push(if pos { 1 } else { 0 });
    }
    (scores, labels)
}

/// Segmentation-like logits `[C, N]` (class-major): a winning class plus noise.
pub fn logit_values(c: usize, n: usize, seed: u64) -> Vec<f32> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut v = vec![0f32; c * n];
    for p in 0..n {
        let win = ((next() * c as f64) as usize).min(c - 1);
        let off = next() * 4.0 - 2.0;
        for k in 0..c {
            let noise = (0..3).map(|_| next()).sum::<f64>() - 1.5;
            v[k * n + p] = (off + 2.0 * noise + if k == win { 6.0 } else { 0.0 } + k as f64 * 0.1) as f32;
        }
    }
    v
}
