//! The exact statistic, packed for keeping.
//!
//! Why this exists: a split's [`Counts`] (28 bytes per distinct positive
//! score: an f32 threshold and three u64 counts) is kept from the moment
//! the split is ranked until the report is written — val's for choosing
//! thresholds, test's while its drifted copies are evaluated, every model's
//! test curves until the plots. Those were the largest thing in the run that
//! grows with the data (158 MB of a 547 MB heap peak at 300
//! StreetHazards-sized test images). Consecutive entries of the statistic
//! differ by little (one positive more, a few negatives more, the next
//! lower score), so the differences, LEB128-coded, take about 4–6 bytes per
//! entry, and [`PackedCounts::unpack`] gives back the same `Counts`, bit for
//! bit (the tests round-trip random, tied, empty and extreme statistics).
//!
//! Layout: per entry `i`, four unsigned LEB128 numbers, each the wrapping
//! difference from the previous entry (so any `Counts` round-trips, even
//! one that breaks the usual order; the usual one gives small numbers):
//! the threshold's order-preserving bits below the last one's, `tp[i] −
//! tp[i−1]`, `fp_gt[i] − fp[i−1]` (negatives strictly between the two
//! thresholds) and `fp[i] − fp_gt[i]` (negatives tied with the threshold).

use super::Counts;

/// A [`Counts`], delta-coded; see the module doc.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackedCounts {
    positives: u64,
    negatives: u64,
    len: usize,
    bytes: Vec<u8>,
}

/// Order-preserving bits of an f32 (a bijection: −0.0 and +0.0 stay apart,
/// unlike [`super::key`]).
fn ord(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
}

fn unord(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 { k & 0x7fff_ffff } else { !k })
}

impl PackedCounts {
    pub fn pack(c: &Counts) -> PackedCounts {
        let n = c.thresholds.len();
        debug_assert!(c.tp.len() == n && c.fp.len() == n && c.fp_gt.len() == n);
        let mut bytes = Vec::with_capacity(n * 5);
        let put = |bytes: &mut Vec<u8>, v: u64| {
            leb128::write::unsigned(bytes, v).expect("writing to memory");
        };
        let (mut key, mut tp, mut fp) = (u32::MAX, 0u64, 0u64);
        for i in 0..n {
            let k = ord(c.thresholds[i]);
            put(&mut bytes, key.wrapping_sub(k) as u64);
            put(&mut bytes, c.tp[i].wrapping_sub(tp));
            put(&mut bytes, c.fp_gt[i].wrapping_sub(fp));
            put(&mut bytes, c.fp[i].wrapping_sub(c.fp_gt[i]));
            (key, tp, fp) = (k, c.tp[i], c.fp[i]);
        }
        bytes.shrink_to_fit();
        PackedCounts { positives: c.positives, negatives: c.negatives, len: n, bytes }
    }

    /// The statistic back, exactly as packed.
    pub fn unpack(&self) -> Counts {
        let n = self.len;
        let mut c = Counts {
            positives: self.positives,
            negatives: self.negatives,
            thresholds: Vec::with_capacity(n),
            tp: Vec::with_capacity(n),
            fp: Vec::with_capacity(n),
            fp_gt: Vec::with_capacity(n),
        };
        let mut r: &[u8] = &self.bytes;
        // the bytes were written by `pack` and never change
        let mut get = || leb128::read::unsigned(&mut r).expect("PackedCounts holds what pack wrote");
        let (mut key, mut tp, mut fp) = (u32::MAX, 0u64, 0u64);
        for _ in 0..n {
            key = key.wrapping_sub(get() as u32);
            tp = tp.wrapping_add(get());
            let gt = fp.wrapping_add(get());
            fp = gt.wrapping_add(get());
            c.thresholds.push(unord(key));
            c.tp.push(tp);
            c.fp.push(fp);
            c.fp_gt.push(gt);
        }
        c
    }

    /// Positive pixels, as [`Counts::positives`] (no unpacking).
    pub fn positives(&self) -> u64 {
        self.positives
    }

    /// Negative pixels, as [`Counts::negatives`] (no unpacking).
    pub fn negatives(&self) -> u64 {
        self.negatives
    }

    /// Distinct positive scores (entries of the statistic).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held (what the report keeps per curve).
    pub fn packed_bytes(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{counts_of, xorshift};

    fn same(a: &Counts, b: &Counts) {
        assert_eq!((a.positives, a.negatives), (b.positives, b.negatives));
        assert_eq!(a.thresholds.iter().map(|t| t.to_bits()).collect::<Vec<_>>(), b.thresholds.iter().map(|t| t.to_bits()).collect::<Vec<_>>());
        assert_eq!((&a.tp, &a.fp, &a.fp_gt), (&b.tp, &b.fp, &b.fp_gt));
    }

    #[test]
    fn round_trips_real_statistics() {
        let mut next = xorshift(7);
        for (n, levels) in [(0usize, 1u64), (1, 1), (50, 3), (5_000, 1 << 30), (20_000, 97), (3_000, 1)] {
            let scores: Vec<f32> = (0..n).map(|_| ((next() % levels) as f32 - levels as f32 / 2.0) * 0.37).collect();
            let labels: Vec<u8> = (0..n).map(|_| [0u8, 0, 0, 1, crate::data::label::VOID][(next() % 5) as usize]).collect();
            let c = counts_of(&scores, &labels);
            let p = PackedCounts::pack(&c);
            assert_eq!(p.len(), c.thresholds.len());
            same(&p.unpack(), &c);
            if c.thresholds.len() > 1000 {
                // small differences: a few bytes per entry, not 28
                assert!(p.packed_bytes() < 8 * c.thresholds.len(), "{} bytes for {} entries", p.packed_bytes(), c.thresholds.len());
            }
        }
    }

    #[test]
    fn round_trips_anything() {
        // extreme and out-of-order values, signed zeros, infinities and a
        // NaN: the wrapping differences keep every bit
        let c = Counts {
            positives: u64::MAX,
            negatives: 0,
            thresholds: vec![f32::INFINITY, f32::MAX, 1.0, 0.0, -0.0, -1.0, f32::NEG_INFINITY, f32::NAN, 5.0, f32::MIN_POSITIVE],
            tp: vec![u64::MAX, 0, 1, 2, 3, u64::MAX - 1, 7, 7, 0, 1 << 63],
            fp: vec![0, u64::MAX, 5, 5, 4, 9, 9, 0, u64::MAX, 3],
            fp_gt: vec![0, 1, u64::MAX, 5, 4, 8, 9, 0, 2, 3],
        };
        same(&PackedCounts::pack(&c).unpack(), &c);
        let e = Counts::default();
        let p = PackedCounts::pack(&e);
        assert!(p.is_empty());
        same(&p.unpack(), &e);
    }
}
