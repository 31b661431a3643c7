//! Bootstrap confidence intervals by resampling images.
//!
//! Why its own file: the resampling policy (paired draws, seeding, the
//! percentile interval) is one decision, independent of how a split is
//! accumulated.

use crate::metrics::{Fpr95Rule, PositiveCollector};
use crate::scores::ScoreMaps;
use serde::{Deserialize, Serialize};

/// The intervals of one (model, method) cell, as results.json records them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    pub samples: u32,
    pub seed: u64,
    /// Replicates in which the metric was defined (both classes drawn).
    pub defined: u32,
    pub auroc: Option<[f64; 2]>,
    pub aupr: Option<[f64; 2]>,
    pub fpr95: Option<[f64; 2]>,
}


/// 95 % percentile-bootstrap intervals over resampled images, per method:
/// replicate r draws n images with replacement from a ChaCha8 stream seeded
/// by (seed, r); all methods see the same draws (paired).
pub fn bootstrap(cache: &[(ScoreMaps, Vec<u8>)], nm: usize, samples: u32, seed: u64, rule: (Fpr95Rule, crate::metrics::AuprRule)) -> Vec<Bootstrap> {
    use rayon::prelude::*;
    let n = cache.len();
    let reps: Vec<Vec<Option<(f64, f64, f64)>>> = (0..samples)
        .into_par_iter()
        .map(|r| {
            let draw = draws(seed, r, n);
            (0..nm).map(|m| replicate(cache, &draw, m, rule)).collect()
        })
        .collect();
    intervals(&reps, nm, samples, seed)
}

/// Method `m`'s (AUROC, AUPR, FPR95) on the images `draw` (exact, both
/// streaming passes over the cached maps); `None` when undefined.
pub(crate) fn replicate(cache: &[(ScoreMaps, Vec<u8>)], draw: &[usize], m: usize, rule: (Fpr95Rule, crate::metrics::AuprRule)) -> Option<(f64, f64, f64)> {
    let mut pc = PositiveCollector::new();
    for &i in draw {
        pc.add(&cache[i].0.maps[m], &cache[i].1, None);
    }
    let mut rk = pc.finish();
    for &i in draw {
        rk.add(&cache[i].0.maps[m], &cache[i].1);
    }
    let c = rk.finish().ok()?;
    let s = c.summary_with(rule.0, rule.1);
    Some((s.auroc?, s.aupr?, s.fpr95?))
}

/// Replicate `r`'s draw: `n` image indices with replacement from a ChaCha8
/// stream seeded by (seed, r), shared by every method (paired).
pub(crate) fn draws(seed: u64, r: u32, n: usize) -> Vec<usize> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(r as u64));
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

/// `average = "images"`: the same paired image draws, each replicate's
/// figure the mean of the drawn images' per-image AUROC / AUPR / FPR95
/// (an image drawn twice counts twice; images without both classes are
/// skipped, as in the point estimate). Needs only the per-image values, so
/// it works at any split size and sharded. `per_image[m]` holds method m's
/// values of the defined images in image order; `defined[i]` says whether
/// image i has both classes.
pub fn bootstrap_images(per_image: &[Vec<[Option<f64>; 6]>], defined: &[bool], samples: u32, seed: u64) -> anyhow::Result<Vec<Bootstrap>> {
    use rayon::prelude::*;
    let n = defined.len();
    // image index → its row among the defined images
    let mut row = vec![None; n];
    let mut k = 0;
    for (i, &d) in defined.iter().enumerate() {
        if d {
            row[i] = Some(k);
            k += 1;
        }
    }
    let nm = per_image.len();
    for (m, v) in per_image.iter().enumerate() {
        anyhow::ensure!(v.len() == k, "internal error: method {m} has {} per-image values for {k} images with both classes", v.len());
    }
    let reps: Vec<Vec<Option<(f64, f64, f64)>>> = (0..samples)
        .into_par_iter()
        .map(|r| {
            let draw = draws(seed, r, n);
            (0..nm)
                .map(|m| {
                    let vals: Vec<&[Option<f64>; 6]> = draw.iter().filter_map(|&i| row[i]).filter_map(|j| per_image[m].get(j)).collect();
                    if vals.is_empty() {
                        return None;
                    }
                    let col = |c: usize| -> Option<f64> {
                        let v: Option<Vec<f64>> = vals.iter().map(|x| x[c]).collect();
                        v.map(|v| crate::metrics::conventions::np_mean(&v))
                    };
                    Some((col(0)?, col(1)?, col(2)?))
                })
                .collect()
        })
        .collect();
    Ok(intervals(&reps, nm, samples, seed))
}

/// 2.5 % and 97.5 % percentiles (numpy's linear rule) of each method's
/// defined replicates.
fn intervals(reps: &[Vec<Option<(f64, f64, f64)>>], nm: usize, samples: u32, seed: u64) -> Vec<Bootstrap> {
    (0..nm)
        .map(|m| {
            let vals: Vec<(f64, f64, f64)> = reps.iter().filter_map(|r| r[m]).collect();
            let ci = |f: fn(&(f64, f64, f64)) -> f64| {
                let mut v: Vec<f64> = vals.iter().map(f).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                Some([crate::metrics::np_percentile(&v, 0.025)?, crate::metrics::np_percentile(&v, 0.975)?])
            };
            Bootstrap { samples, seed, defined: vals.len() as u32, auroc: ci(|x| x.0), aupr: ci(|x| x.1), fpr95: ci(|x| x.2) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::bootstrap_images;

    fn row(v: f64) -> [Option<f64>; 6] {
        [Some(v), Some(v), Some(v), Some(v), None, None]
    }

    #[test]
    fn per_image_bootstrap_means_the_drawn_images() {
        // all images alike: every replicate is that value
        let b = bootstrap_images(&[vec![row(0.7); 5]], &[true; 5], 100, 3).unwrap();
        assert_eq!((b[0].defined, b[0].auroc), (100, Some([0.7, 0.7])));
        // two images: a replicate's mean is 0.2, 0.5 or 0.8, and both extremes occur in 400 draws
        let b = bootstrap_images(&[vec![row(0.2), row(0.8)]], &[true, true], 400, 0).unwrap();
        let [lo, hi] = b[0].auroc.unwrap();
        assert!([0.2, 0.5, 0.8].iter().any(|&v| (lo - v).abs() < 1e-12) && (lo - 0.2).abs() < 1e-12 && (hi - 0.8).abs() < 1e-12, "{lo} {hi}");
        // an image without both classes never counts; replicates drawing only it are undefined
        let b = bootstrap_images(&[vec![row(0.3)]], &[false, true], 200, 1).unwrap();
        assert!(b[0].defined < 200 && b[0].defined > 100, "{}", b[0].defined);
        assert_eq!(b[0].auroc, Some([0.3, 0.3]));
        // paired: two methods see the same draws, so a method compared with a copy of itself agrees exactly
        let m = vec![row(0.1), row(0.9), row(0.4)];
        let b = bootstrap_images(&[m.clone(), m], &[true; 3], 50, 9).unwrap();
        assert_eq!(b[0], b[1]);
        // per-image rows that do not match the defined images are an error, not a number
        assert!(bootstrap_images(&[vec![row(0.3)]], &[true, true], 10, 0).is_err());
    }
}
