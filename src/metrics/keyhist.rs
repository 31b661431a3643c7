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

/// Declares a pixel kernel once and compiles it three times (portable,
/// AVX2, AVX-512), dispatching on `scores::cpu::fast::simd_level` like the
/// scorer's kernels. Why: the release build targets baseline x86-64 (SSE2),
/// where a 16-lane u32 counter is four instructions; the accumulators'
/// per-pixel lane loops run several times faster on the wider units. The
/// body is plain integer / comparison / in-lane f64 code (Rust never
/// reassociates or contracts floats), so every level gives the same bits.
macro_rules! lanes_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$lt:lifetime>)? ($($a:ident : $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])* $vis fn $name $(<$lt>)? ($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn imp $(<$lt>)? ($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2")]
                unsafe fn v2 $(<$lt>)? ($($a: $t),*) $(-> $r)? { imp($($a),*) }
                #[target_feature(enable = "avx2")]
                unsafe fn v1 $(<$lt>)? ($($a: $t),*) $(-> $r)? { imp($($a),*) }
                match crate::scores::cpu::fast::simd_level() {
                    // SAFETY: the level was detected on this CPU.
                    2 => return unsafe { v2($($a),*) },
                    1 => return unsafe { v1($($a),*) },
                    _ => {}
                }
            }
            imp($($a),*)
        }
    };
}
pub(crate) use lanes_fn;

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
