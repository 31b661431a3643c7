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
    use rand::{RngExt, SeedableRng};
    use rayon::prelude::*;
    let n = cache.len();
    let reps: Vec<Vec<Option<(f64, f64, f64)>>> = (0..samples)
        .into_par_iter()
        .map(|r| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(r as u64));
            let draw: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            (0..nm)
                .map(|m| {
                    let mut pc = PositiveCollector::new();
                    for &i in &draw {
                        pc.add(&cache[i].0.maps[m], &cache[i].1, None);
                    }
                    let mut rk = pc.finish();
                    for &i in &draw {
                        rk.add(&cache[i].0.maps[m], &cache[i].1);
                    }
                    let c = rk.finish().ok()?;
                    let s = c.summary_with(rule.0, rule.1);
                    Some((s.auroc?, s.aupr?, s.fpr95?))
                })
                .collect()
        })
        .collect();
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
