//! SegmentMeIfYouCan-style HDF5 score maps: one `[H, W]` dataset named
//! `value` (float16 in the official submissions, float32 accepted).
//!
//! Why behind a cargo feature: the `hdf5` crates link the HDF5 C library,
//! which neither CI nor most users have. Without the feature an `.h5` input
//! is a clear error saying how to get support, never a silent skip.

use anyhow::{Result, bail};
use std::path::Path;

#[cfg(not(feature = "hdf5"))]
pub fn read_score_map_h5(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    bail!(
        "{}: bench was built without HDF5 support (cargo build --features hdf5); or convert the score maps to .npy",
        path.display()
    )
}
