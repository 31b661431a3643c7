//! Masks (TODO: data helper).
use super::Mask;
use anyhow::Result;
use std::path::Path;

/// Read a mask from .png (8/16-bit gray or palette index) or .npy.
pub fn read_mask(path: &Path) -> Result<Mask> {
    let _ = path;
    anyhow::bail!("not implemented")
}
