//! .npy reading (TODO: data helper).
use super::{Logits, Mask};
use anyhow::Result;
use std::path::Path;

/// Read `[C,H,W]` float32/float16 logits; rejects NaN/±inf naming the file.
pub fn read_logits(path: &Path) -> Result<Logits> {
    let _ = path;
    anyhow::bail!("not implemented")
}

/// Read a `[H,W]` float32/float16 score map as f32; rejects NaN/±inf.
pub fn read_score_map(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let _ = path;
    anyhow::bail!("not implemented")
}

/// Read a `[H,W]` integer mask (.npy uint8, uint16 or int64).
pub fn read_mask_npy(path: &Path) -> Result<Mask> {
    let _ = path;
    anyhow::bail!("not implemented")
}
