//! Normal pixels' score keys on a 2^16-bucket grid (the top 16 bits of the
//! order-preserving key), the pass-1 half of an exact order statistic.
//!
//! Why one type: drift's percentiles and the pixel-level `far_at_frr`
//! threshold both find the k-th normal score in two streaming passes
//! (coarse buckets here, then full resolution inside the few buckets that
//! hold the ranks they need), and both merge over image ranges exactly.

use super::key;
use crate::data::label;
use serde::{Deserialize, Serialize};

/// Buckets of the coarse grid.
pub const COARSE: usize = 1 << 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyHist {
    pub(crate) coarse: Vec<u64>,
    pub(crate) n: u64,
}

impl Default for KeyHist {
    fn default() -> Self {
        KeyHist { coarse: vec![0; COARSE], n: 0 }
    }
}

use crate::simd::multiversion;

/// Scatter one image's normal pixels' coarse buckets through `bump`
/// (a bucket index `< COARSE`) and return their number. Why one walk:
/// `NormalStats`, `ImageStats`' per-image histogram and `RankHist` count
/// the same pixels on the same grid; one key computation and one scatter
/// feed all of them. The pixel-order sum is not walked here (its add chain
/// was the walk's cost): see [`append_exactly`].
#[inline(always)]
pub(crate) fn scatter_normals(scores: &[f32], labels: &[u8], mut bump: impl FnMut(usize)) -> u64 {
    let mut n = 0u64;
    for (&s, &l) in scores.iter().zip(labels) {
        if l == label::NORMAL {
            bump((key(s) >> 16) as usize);
            n += 1;
        }
    }
    n
}

/// A dense table as the fixed-size array the scatter indexes without
/// bounds checks (`key >> 16 < COARSE`).
#[inline(always)]
pub(crate) fn table<T>(v: &mut [T]) -> &mut [T; COARSE] {
    v.try_into().expect("a coarse table has COARSE buckets")
}

/// Whether adding a block of f32 values to the running f64 sum `p` one by
/// one, in pixel order, rounds nowhere — then that sequential result is
/// `p + (the block's sum in any order)`, bit for bit, and a lane-split sum
/// can stand in for the add chain (the drift mean's bytes depend on the
/// pixel-order sum).
///
/// `min_exp`: the least biased exponent (subnormals as 1) of the block's
/// non-zero values (`u32::MAX` when there are none), so each is an integer
/// multiple of `2^(min_exp − 150)`; `abs`: Σ|x| as summed in f64 (any
/// order, relative error < 2^-40 for blocks under 2^12 values). With `2^e`
/// the coarser-or-equal common quantum of `p` (its lowest set mantissa
/// bit) and the values, every partial sum is a multiple of `2^e` of
/// magnitude ≤ |p| + Σ|x|; when that is below `2^(e+53)` (checked with a
/// 2^-30 margin) each is representable, so no step rounds, and the block's
/// own lane sums (multiples of the values' quantum, below the same bound)
/// are exact too. A zero result is +0.0 either way (a sum started at +0.0
/// never yields −0.0). Inf or NaN anywhere fails the test.
#[inline]
pub(crate) fn append_exactly(p: f64, min_exp: u32, abs: f64) -> bool {
    if min_exp == u32::MAX {
        return abs == 0.0 && p.is_finite(); // only ±0.0: p + 0 = p
    }
    if !(1..255).contains(&min_exp) || !p.is_finite() || !abs.is_finite() {
        return false;
    }
    let mut e = min_exp as i32 - 150;
    if p != 0.0 {
        let b = p.to_bits();
        let be = ((b >> 52) & 0x7ff) as i32;
        let m = (b & ((1u64 << 52) - 1)) | if be > 0 { 1u64 << 52 } else { 0 };
        e = e.min(be.max(1) - 1075 + m.trailing_zeros() as i32);
    }
    let bound = 2f64.powi(e + 53) * (1.0 - 1.0 / (1u64 << 30) as f64);
    p.abs() + abs * (1.0 + 1.0 / (1u64 << 30) as f64) < bound
}

multiversion! {
    /// Pass 2 of the two-pass order statistics: for the normal pixels whose
    /// key falls in one of the refined coarse `buckets` (ascending,
    /// distinct, a handful), count the low 16 key bits into that bucket's
    /// `fine` table; with `above` (one per bucket), also keep the least
    /// normal key strictly above each bucket (`RankRefiner`).
    ///
    /// Why lanes: a per-pixel membership test and search was a branch per
    /// pixel; here 16 keys are computed and compared against every bucket
    /// branch-free, and only the (few) hits leave the vector code.
    pub(crate) fn refine_lanes(scores: &[f32], labels: &[u8], buckets: &[u32], fine: &mut [Vec<u64>], above: Option<&mut [Option<u32>]>) {
        const L: usize = super::LANES;
        let nb = buckets.len();
        // per bucket: lane minima of the normal keys above it, and whether any
        let mut amin = vec![[u32::MAX; L]; nb];
        let mut seen = vec![[false; L]; nb];
        // the chunk walk of `for_lanes`, written out: its closure was not
        // inlined here (so not compiled for the wide units)
        let n = scores.len().min(labels.len());
        let (cs, rs) = scores[..n].as_chunks::<L>();
        let (cl, rl) = labels[..n].as_chunks::<L>();
        let track = above.is_some();
        let tail = |f: &mut dyn FnMut(&[f32; L], &[u8; L])| {
            if !rs.is_empty() {
                let (mut s, mut l) = ([0f32; L], [label::VOID; L]);
                s[..rs.len()].copy_from_slice(rs);
                l[..rl.len()].copy_from_slice(rl);
                f(&s, &l);
            }
        };
        if track {
            for (s, l) in cs.iter().zip(cl) {
                refine_chunk::<true>(s, l, buckets, fine, &mut amin, &mut seen);
            }
            tail(&mut |s, l| refine_chunk::<true>(s, l, buckets, fine, &mut amin, &mut seen));
        } else {
            for (s, l) in cs.iter().zip(cl) {
                refine_chunk::<false>(s, l, buckets, fine, &mut amin, &mut seen);
            }
            tail(&mut |s, l| refine_chunk::<false>(s, l, buckets, fine, &mut amin, &mut seen));
        }
        if let Some(above) = above {
            for (i, a) in above.iter_mut().enumerate() {
                for j in 0..L {
                    if seen[i][j] && a.is_none_or(|x| amin[i][j] < x) {
                        *a = Some(amin[i][j]);
                    }
                }
            }
        }
    }
}

/// One 16-pixel chunk of [`refine_lanes`] (`TRACK`: also the minima
/// above each bucket).
#[inline(always)]
fn refine_chunk<const TRACK: bool>(
    s: &[f32; super::LANES],
    l: &[u8; super::LANES],
    buckets: &[u32],
    fine: &mut [Vec<u64>],
    amin: &mut [[u32; super::LANES]],
    seen: &mut [[bool; super::LANES]],
) {
    const L: usize = super::LANES;
    let (mut k, mut h, mut sel) = ([0u32; L], [0u32; L], [0u32; L]);
    for j in 0..L {
        k[j] = key(s[j]);
        // non-normal pixels get a bucket no key has (2^16)
        h[j] = if l[j] == label::NORMAL { k[j] >> 16 } else { COARSE as u32 };
    }
    for (i, &b) in buckets.iter().enumerate() {
        for j in 0..L {
            sel[j] |= (h[j] == b) as u32 * (i as u32 + 1);
        }
    }
    if TRACK {
        for ((&b, m), a) in buckets.iter().zip(amin.iter_mut()).zip(seen.iter_mut()) {
            for j in 0..L {
                let c = (h[j] > b) & (h[j] < COARSE as u32);
                m[j] = m[j].min(if c { k[j] } else { u32::MAX });
                a[j] |= c;
            }
        }
    }
    if sel.iter().fold(0, |a, &x| a | x) == 0 {
        return;
    }
    for j in 0..L {
        if sel[j] != 0 {
            fine[sel[j] as usize - 1][(k[j] & 0xffff) as usize] += 1;
        }
    }
}

impl KeyHist {
    /// Count one image's normal pixels; returns their f64 sum (in pixel
    /// order, bit for bit: [`normal_sum`](super::dashboard::normal_sum)).
    pub fn add_normals(&mut self, scores: &[f32], labels: &[u8]) -> f64 {
        self.add_normals_unsummed(scores, labels);
        super::dashboard::normal_sum(scores, labels)
    }

    /// [`add_normals`](Self::add_normals) without the sum.
    pub(crate) fn add_normals_unsummed(&mut self, scores: &[f32], labels: &[u8]) {
        let coarse = table(&mut self.coarse);
        self.n += scatter_normals(scores, labels, |b| coarse[b] += 1);
    }

    /// [`add_normals`](Self::add_normals) into this histogram and `also`
    /// at once (one key computation and walk for two histograms of the
    /// same pixels: a split's drift statistics and its `far_at_frr` ranks).
    pub fn add_normals_both(&mut self, also: &mut KeyHist, scores: &[f32], labels: &[u8]) -> f64 {
        let (a, b) = (table(&mut self.coarse), table(&mut also.coarse));
        let n = scatter_normals(scores, labels, |k| {
            a[k] += 1;
            b[k] += 1;
        });
        self.n += n;
        also.n += n;
        super::dashboard::normal_sum(scores, labels)
    }

    /// Add one image's sparse histogram (bucket, count), as
    /// [`add_normals`](Self::add_normals) would have counted its pixels.
    pub fn add_sparse(&mut self, hist: &[(u16, u32)]) {
        for &(b, c) in hist {
            self.coarse[b as usize] += c as u64;
            self.n += c as u64;
        }
    }

    /// Add the counts of another histogram (shard merge).
    pub fn absorb(&mut self, o: &KeyHist) {
        for (a, b) in self.coarse.iter_mut().zip(&o.coarse) {
            *a += b;
        }
        self.n += o.n;
    }

    /// Normal pixels counted.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Bucket and rank-within-bucket of the ascending order statistic `k`.
    pub fn locate(&self, k: u64) -> (usize, u64) {
        let mut acc = 0u64;
        for (b, &c) in self.coarse.iter().enumerate() {
            if acc + c > k {
                return (b, k - acc);
            }
            acc += c;
        }
        unreachable!("rank {k} beyond {} pixels", self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixel-order sequential sum of the normal scores (the oracle).
    fn seq(s: &[f32], l: &[u8]) -> f64 {
        let mut p = 0.0;
        for (&x, &l) in s.iter().zip(l) {
            if l == label::NORMAL {
                p += x as f64;
            }
        }
        p
    }

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        crate::metrics::xorshift(seed | 1)
    }

    /// The block-exact sum equals the add chain bit for bit on data where
    /// the lane shortcut holds (moderate scores), where it fails (tiny
    /// values beside large ones, a big offset, subnormals), with ±0.0,
    /// void, and lengths around the lane and block widths.
    #[test]
    fn normal_sum_is_the_pixel_order_sum() {
        let mut r = rng(42);
        let kinds: [&dyn Fn(u64) -> f32; 7] = [
            &|u| (u % 20_001) as f32 / 1000.0 - 5.0,
            &|u| (u % 1_000_003) as f32 / 1_000_003.0,
            &|u| if u % 97 == 0 { 1e-9 * (u % 7) as f32 } else { (u % 3001) as f32 / 100.0 },
            &|u| 1.0e6 + (u % 1001) as f32 / 7.0,
            &|u| f32::from_bits((u % 0x7f_ffff) as u32) * if u % 2 == 0 { -1.0 } else { 1.0 },
            &|u| [0.0f32, -0.0, 1.5, -1.5][(u % 4) as usize],
            &|u| f32::from_bits((u as u32) & 0x7f7f_ffff) * if u % 3 == 0 { -1.0 } else { 1.0 },
        ];
        for (ki, f) in kinds.iter().enumerate() {
            for n in [0usize, 1, 15, 16, 17, 4095, 4096, 4097, 9000, 40_000] {
                let s: Vec<f32> = (0..n).map(|_| f(r())).collect();
                let l: Vec<u8> = (0..n).map(|_| [0u8, 0, 0, 0, 1, 255][(r() % 6) as usize]).collect();
                let want = seq(&s, &l);
                let got = crate::metrics::dashboard::normal_sum(&s, &l);
                assert_eq!(got.to_bits(), want.to_bits(), "kind {ki} n {n}: {got} vs {want}");
                let c = crate::metrics::dashboard::pixel_counts(&s, &l, &[0.5]);
                assert_eq!(c.seq_sum.to_bits(), want.to_bits(), "kind {ki} n {n}");
            }
        }
        // all void, all zero
        assert_eq!(crate::metrics::dashboard::normal_sum(&[1.0; 40], &[255; 40]).to_bits(), 0.0f64.to_bits());
        assert_eq!(crate::metrics::dashboard::normal_sum(&[-0.0; 40], &[0; 40]).to_bits(), 0.0f64.to_bits());
    }

    /// Whenever the test passes, the add chain from `p` over the block
    /// equals `p +` the block's exact sum (random blocks and start sums,
    /// many near the bound).
    #[test]
    fn append_exactly_is_sound() {
        let mut r = rng(7);
        let mut passed = 0;
        for _ in 0..20_000 {
            let scale = 2f32.powi((r() % 40) as i32 - 20);
            let n = 1 + (r() % 64) as usize;
            let xs: Vec<f32> = (0..n).map(|_| ((r() % 2_000_001) as f32 - 1e6) * scale).collect();
            let p = ((r() % 2_000_001) as f64 - 1e6) * 2f64.powi((r() % 60) as i32 - 20);
            let (mut abs, mut me, mut lanes) = (0.0f64, u32::MAX, 0.0f64);
            for &x in &xs {
                abs += x.abs() as f64;
                lanes += x as f64;
                if x != 0.0 {
                    me = me.min(((x.to_bits() >> 23) & 0xff).max(1));
                }
            }
            if append_exactly(p, me, abs) {
                passed += 1;
                let mut chain = p;
                for &x in &xs {
                    chain += x as f64;
                }
                assert_eq!(chain.to_bits(), (p + lanes).to_bits(), "p {p} xs {xs:?}");
            }
        }
        assert!(passed > 1000, "the test should pass often: {passed}");
        assert!(!append_exactly(f64::NAN, 127, 1.0) && !append_exactly(0.0, 255, 1.0) && !append_exactly(1.0, 127, f64::INFINITY));
    }

    /// Old per-pixel loops of the two refiners (oracles of `refine_lanes`).
    fn refine_plain(s: &[f32], l: &[u8], buckets: &[u32]) -> (Vec<Vec<u64>>, Vec<Option<u32>>) {
        let mut fine = vec![vec![0u64; COARSE]; buckets.len()];
        let mut above = vec![None; buckets.len()];
        for (&x, &l) in s.iter().zip(l) {
            if l != label::NORMAL {
                continue;
            }
            let k = key(x);
            let b = k >> 16;
            let upto = buckets.partition_point(|&x| x < b);
            for a in &mut above[..upto] {
                if a.is_none_or(|x| k < x) {
                    *a = Some(k);
                }
            }
            if buckets.get(upto) == Some(&b) {
                fine[upto][(k & 0xffff) as usize] += 1;
            }
        }
        (fine, above)
    }

    #[test]
    fn refine_lanes_equals_the_plain_loop() {
        let mut r = rng(3);
        for n in [0usize, 1, 15, 16, 17, 33, 1000, 5003] {
            // ties, ±0.0, and scores that hit the refined buckets often
            let s: Vec<f32> = (0..n).map(|_| [0.0f32, -0.0, 1.0, 1.0001, -2.5, 3.0e-3, 7.25][(r() % 7) as usize] * if r().is_multiple_of(5) { 1.001 } else { 1.0 }).collect();
            let l: Vec<u8> = (0..n).map(|_| [0u8, 0, 0, 1, 255][(r() % 5) as usize]).collect();
            let mut all: Vec<u32> = s.iter().map(|&x| key(x) >> 16).collect();
            all.sort_unstable();
            all.dedup();
            for buckets in [vec![], all.iter().copied().step_by(2).collect::<Vec<_>>(), all.clone(), vec![0, 0xffff]] {
                let (fine0, above0) = refine_plain(&s, &l, &buckets);
                let mut fine = vec![vec![0u64; COARSE]; buckets.len()];
                let mut above = vec![None; buckets.len()];
                refine_lanes(&s, &l, &buckets, &mut fine, Some(&mut above));
                assert!(fine == fine0 && above == above0, "n {n} buckets {buckets:?}");
                let mut fine = vec![vec![0u64; COARSE]; buckets.len()];
                refine_lanes(&s, &l, &buckets, &mut fine, None);
                assert!(fine == fine0, "n {n}");
            }
        }
    }
}
