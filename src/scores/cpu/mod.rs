//! The CPU scorers.
//!
//! Why two: `reference.rs` is the f64 definition of every score, one pixel
//! at a time ([`ReferenceScorer`], the `cpu` functions of the method table);
//! `fast.rs` is the scorer that runs ([`CpuScorer`], `bench run --device cpu`
//! and the fallback when no adapter exists): f32 blocks of pixels with
//! vectorised `exp`, f64 where f32 cannot meet the accuracy contract (every
//! score within 2e-6 relative or 1e-6 absolute of the reference,
//! `tests/fast_scorer.rs`). Both share the plan checks and the
//! post-processing (`super::post`).

pub mod fast;
pub mod reference;

pub use fast::{BLOCK, Block, BlockFn, CpuScorer, predictions};
pub use reference::*;

use crate::scores::{Logits, Method, ScoreMaps, ScorePlan};
use anyhow::{Context, Result};

/// What both CPU scorers check before scoring: the calibration a plan's
/// SML/HEAT need is present and fits the logits.
pub(crate) fn validate(logits: &Logits, plan: &ScorePlan) -> Result<()> {
    if plan.methods.iter().any(|m| m.needs_calibration()) {
        let cal = plan
            .calibration
            .as_ref()
            .context("SML/HEAT requested without calibration statistics")?;
        anyhow::ensure!(
            cal.sml.mean.len() == logits.c,
            "calibration has {} classes but logits have {}",
            cal.sml.mean.len(),
            logits.c
        );
        if plan.methods.contains(&Method::Heat) {
            let h = &cal.heat;
            anyhow::ensure!(
                h.c == logits.c && h.k >= 1 && h.whiten.len() == h.dim() * h.dim() && h.centers.len() == h.k * h.dim(),
                "HEAT requested but the calibration has no fitted Gaussian for {} classes",
                logits.c
            );
        }
    }
    Ok(())
}

/// The whole-image post-processing of both CPU scorers (SML boundary
/// suppression / smoothing, HEAT's spatial term), unchanged from
/// `super::post`; `predictions` gives the predicted class map.
pub(crate) fn finish(mut maps: Vec<Vec<f32>>, logits: &Logits, plan: &ScorePlan, predictions: fn(&Logits) -> Vec<u32>) -> Result<ScoreMaps> {
    if plan.sml_post_active() {
        plan.sml_post.validate()?;
        let pred = predictions(logits);
        for (map, m) in maps.iter_mut().zip(&plan.methods) {
            if *m == Method::Sml {
                *map = super::post::apply_cpu(map, &pred, logits.h, logits.w, &plan.sml_post);
            }
        }
    }
    if plan.heat_post_active() {
        plan.heat_post.validate()?;
        for (map, m) in maps.iter_mut().zip(&plan.methods) {
            if *m == Method::Heat {
                *map = super::post::apply_heat_cpu(map, logits.h, logits.w, &plan.heat_post);
            }
        }
    }
    Ok(ScoreMaps { h: logits.h, w: logits.w, maps })
}
