//! Failure modes per anomaly type at the deployed (soft) threshold.
//!
//! Why per image: the customer asks "which defect types slip through, and
//! show me the worst ones". The pooled per-type statistic (a `Counts` per
//! type, see `split::Pass1::tpos`) gives a type's pixel recall, AUROC and
//! AUPR; picking the *worst images* needs, per image and type, how many of
//! the type's pixels score at or above the soft threshold. The soft
//! threshold is chosen on `val` before the test passes, so pass 1 counts
//! them in one integer pair per (method, image, type): memory images ×
//! methods × types × 16 bytes, and it merges over image ranges by
//! concatenation (sharded = local).
//!
//! An image is "of type t" when it has at least one pixel of type t; its
//! recall of type t = hits / pixels of that type. The worst images of a
//! type are the lowest recall first, ties broken by image id (byte order),
//! so the choice is deterministic.

use crate::data::label;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Per image (every image of the split, in order) and anomaly type: the
/// type's pixel count, and per method the pixels at or above that
/// method's soft threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TypeHits {
    /// Per method: the pixel soft threshold (None: that method has none,
    /// its hits stay 0).
    pub thresholds: Vec<Option<f32>>,
    /// `[image][type]`: pixels of the type.
    pub pixels: Vec<Vec<u64>>,
    /// `[method][image][type]`: of those, pixels with score ≥ threshold.
    pub hits: Vec<Vec<Vec<u64>>>,
    /// Per image: whether it has a non-void pixel (has an image score).
    pub valid: Vec<bool>,
}

impl TypeHits {
    pub fn new(thresholds: Vec<Option<f32>>) -> Self {
        let hits = vec![vec![]; thresholds.len()];
        TypeHits { thresholds, pixels: vec![], hits, valid: vec![] }
    }

    /// One image: `maps[m]` is method `m`'s score map, `lab` the labels
    /// (type `t` has label `t + 1`), `types` the number of anomaly types.
    pub fn add(&mut self, maps: &[Vec<f32>], lab: &[u8], types: usize) {
        let mut px = vec![0u64; types];
        for &l in lab {
            if label::is_anomaly(l) && (l as usize) <= types {
                px[l as usize - 1] += 1;
            }
        }
        for (m, t) in self.thresholds.iter().enumerate() {
            let mut h = vec![0u64; types];
            if let (Some(t), Some(s)) = (t, maps.get(m)) {
                for (&v, &l) in s.iter().zip(lab) {
                    if label::is_anomaly(l) && (l as usize) <= types && v >= *t {
                        h[l as usize - 1] += 1;
                    }
                }
            }
            self.hits[m].push(h);
        }
        self.pixels.push(px);
        self.valid.push(lab.iter().any(|&l| l != label::VOID));
    }

    /// Fold in the images that follow this state's.
    pub fn absorb(&mut self, o: TypeHits) -> anyhow::Result<()> {
        anyhow::ensure!(o.thresholds == self.thresholds, "merging per-type hit counts at different soft thresholds");
        self.pixels.extend(o.pixels);
        for (a, b) in self.hits.iter_mut().zip(o.hits) {
            a.extend(b);
        }
        self.valid.extend(o.valid);
        Ok(())
    }

    /// Images (indices) of type `t`, worst first for method `m`: lowest
    /// recall (hits / pixels, compared exactly), ties by `ids` ascending;
    /// at most `k`.
    pub fn worst(&self, m: usize, t: usize, ids: &[String], k: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.pixels.len()).filter(|&i| self.pixels[i][t] > 0).collect();
        let key = |i: usize| (self.hits[m][i][t] as u128, self.pixels[i][t] as u128);
        v.sort_by(|&a, &b| {
            let ((ha, na), (hb, nb)) = (key(a), key(b));
            (ha * nb).cmp(&(hb * na)).then_with(|| ids[a].cmp(&ids[b]))
        });
        v.truncate(k);
        v
    }

    /// Image-level misses of type `t`: of the images of that type, how many
    /// have an image score below `soft` (`image_scores` lists the valid
    /// images only, in order, as `split::Pass1::image_scores`).
    pub fn images_missed(&self, t: usize, image_scores: &[f32], soft: Option<f32>) -> (u64, Option<u64>) {
        let mut valid_i = 0usize;
        let (mut n, mut missed) = (0u64, 0u64);
        for (i, px) in self.pixels.iter().enumerate() {
            if !self.valid[i] {
                continue;
            }
            if px[t] > 0 {
                n += 1;
                if let Some(s) = soft {
                    missed += (image_scores[valid_i].partial_cmp(&s) == Some(Ordering::Less)) as u64;
                }
            }
            valid_i += 1;
        }
        (n, soft.map(|_| missed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_worst_and_misses_on_a_hand_example() {
        // two types; image a: type 1 caught 1/2, image b: type 1 caught 0/1 and
        // type 2 caught 1/1, image c: all void, image d: normal only
        let mut h = TypeHits::new(vec![Some(0.5)]);
        h.add(&[vec![0.9, 0.1, 0.2]], &[1, 1, 0], 2);
        h.add(&[vec![0.4, 0.6, 0.0]], &[1, 2, 0], 2);
        let mut tail = TypeHits::new(vec![Some(0.5)]);
        tail.add(&[vec![0.9, 0.9]], &[255, 255], 2);
        tail.add(&[vec![0.9, 0.9]], &[0, 0], 2);
        h.absorb(tail).unwrap();
        assert_eq!(h.pixels, vec![vec![2, 0], vec![1, 1], vec![0, 0], vec![0, 0]]);
        assert_eq!(h.hits[0], vec![vec![1, 0], vec![0, 1], vec![0, 0], vec![0, 0]]);
        assert_eq!(h.valid, vec![true, true, false, true]);
        let ids: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(h.worst(0, 0, &ids, 4), vec![1, 0]);
        assert_eq!(h.worst(0, 0, &ids, 1), vec![1]);
        assert_eq!(h.worst(0, 1, &ids, 4), vec![1]);
        // image scores of the valid images a, b, d
        assert_eq!(h.images_missed(0, &[0.9, 0.6, 0.9], Some(0.7)), (2, Some(1)));
        assert_eq!(h.images_missed(1, &[0.9, 0.6, 0.9], Some(0.5)), (1, Some(0)));
        assert_eq!(h.images_missed(1, &[0.9, 0.6, 0.9], None), (1, None));
        assert!(h.clone().absorb(TypeHits::new(vec![Some(0.4)])).is_err());
    }

    /// The counts equal a plain per-pixel loop: ties at the
    /// threshold, ±0.0, NaN, void, labels beyond `types`, tails around
    /// the lane and block widths, a score map shorter than the labels.
    #[test]
    fn type_counts_equal_the_plain_loop() {
        let mut next = crate::metrics::xorshift(9);
        for n in [0usize, 1, 15, 16, 17, 4095, 4096, 4097, 9000] {
            let lab: Vec<u8> = (0..n).map(|_| [0u8, 1, 2, 3, 255, 1][(next() % 6) as usize]).collect();
            let s: Vec<f32> = (0..n.saturating_sub(n / 7)).map(|_| [0.5f32, 0.0, -0.0, 1.0, f32::NAN, 0.25][(next() % 6) as usize]).collect();
            for thr in [0.5f32, 0.0, -0.0] {
                let mut h = TypeHits::new(vec![Some(thr), None]);
                h.add(std::slice::from_ref(&s), &lab, 2);
                let mut px = vec![0u64; 2];
                let mut hit = vec![0u64; 2];
                for &l in &lab {
                    if label::is_anomaly(l) && (l as usize) <= 2 {
                        px[l as usize - 1] += 1;
                    }
                }
                for (&v, &l) in s.iter().zip(&lab) {
                    if label::is_anomaly(l) && (l as usize) <= 2 && v >= thr {
                        hit[l as usize - 1] += 1;
                    }
                }
                assert_eq!((&h.pixels[0], &h.hits[0][0], &h.hits[1][0]), (&px, &hit, &vec![0, 0]), "n {n} thr {thr}");
            }
        }
    }

    #[test]
    fn ties_in_recall_go_by_id() {
        let mut h = TypeHits::new(vec![Some(1.0)]);
        h.add(&[vec![0.0, 2.0]], &[1, 1], 1); // 1/2
        h.add(&[vec![0.0, 0.0, 2.0, 2.0]], &[1, 1, 1, 1], 1); // 2/4: tie
        h.add(&[vec![0.0]], &[1], 1); // 0/1
        let ids: Vec<String> = ["z", "m", "q"].map(String::from).to_vec();
        assert_eq!(h.worst(0, 0, &ids, 3), vec![2, 1, 0]);
    }
}
