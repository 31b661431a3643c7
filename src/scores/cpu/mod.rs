//! The CPU scorers.
//!
//! Why two: `reference.rs` is the f64 definition of every score, one pixel
//! at a time ([`ReferenceScorer`], the `cpu` functions of the method table);
//! `fast.rs` is the scorer that runs ([`CpuScorer`], `bench run --device cpu`
//! and the fallback when no adapter exists): f32 blocks of pixels with
//! vectorised `exp`, f64 where f32 cannot meet the accuracy contract (every
//! score within 2e-6 relative or 1e-6 absolute of the reference,
//! `tests/fast_scorer.rs`). Both check the plan with
//! `ScorePlan::check_fits` and share the post-processing hooks.

pub mod fast;
pub mod reference;

pub use fast::{BLOCK, Block, BlockFn, CpuScorer, predictions};
pub use reference::*;

use crate::scores::{Logits, ScoreMaps, ScorePlan};
use anyhow::Result;

/// The whole-image post-processing of both CPU scorers: every active
/// post-processing hook of the plan (see [`crate::scores::Post`]) on the
/// assembled maps; `predictions` gives the predicted class map.
pub(crate) fn finish(mut maps: Vec<Vec<f32>>, logits: &Logits, plan: &ScorePlan, predictions: fn(&Logits) -> Vec<u32>) -> Result<ScoreMaps> {
    if plan.posts().next().is_some() {
        let pred = if plan.needs_pred() { predictions(logits) } else { vec![0; logits.pixels()] };
        for (i, post) in plan.posts() {
            maps[i] = (post.cpu)(&maps[i], &pred, logits.h, logits.w, plan)?;
        }
    }
    Ok(ScoreMaps { h: logits.h, w: logits.w, maps })
}
