//! Data shared by the metric benches.

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
