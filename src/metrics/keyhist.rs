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

impl KeyHist {
    /// Count one image's normal pixels; returns their f64 sum (in pixel order).
    pub fn add_normals(&mut self, scores: &[f32], labels: &[u8]) -> f64 {
        let mut sum = 0.0;
        for (&s, &l) in scores.iter().zip(labels) {
            if l == label::NORMAL {
                self.coarse[(key(s) >> 16) as usize] += 1;
                sum += s as f64;
                self.n += 1;
            }
        }
        sum
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
