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

/// Read the `value` dataset of `path`: `[H, W]` float16 or float32, widened
/// to f32 (the caller checks finiteness, as for `.npy`).
#[cfg(feature = "hdf5")]
pub fn read_score_map_h5(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    use hdf5::types::{FloatSize, TypeDescriptor};
    let e = |m: String| anyhow::anyhow!("{}: {m}", path.display());
    // The HDF5 library prints its own error stack to stderr; keep our one line.
    hdf5::silence_errors(true);
    let file = hdf5::File::open(path).map_err(|x| e(format!("not a readable HDF5 file: {x}")))?;
    let names = file.member_names().unwrap_or_default();
    let ds = file.dataset("value").map_err(|_| {
        e(format!(
            "no `value` dataset (SegmentMeIfYouCan layout); datasets found: [{}]",
            names.join(", ")
        ))
    })?;
    let shape = ds.shape();
    let [h, w] = shape[..] else {
        bail!("{}: `value` must be a 2-D [H, W] score map, got shape {shape:?}", path.display());
    };
    if h == 0 || w == 0 {
        bail!("{}: zero-sized `value` dataset {shape:?}", path.display());
    }
    let desc = ds.dtype().and_then(|t| t.to_descriptor()).map_err(|x| e(format!("unreadable dtype of `value`: {x}")))?;
    let v: Vec<f32> = match desc {
        TypeDescriptor::Float(FloatSize::U2) => ds
            .read_raw::<half::f16>()
            .map_err(|x| e(format!("cannot read `value`: {x}")))?
            .into_iter()
            .map(f32::from)
            .collect(),
        TypeDescriptor::Float(FloatSize::U4) => ds.read_raw::<f32>().map_err(|x| e(format!("cannot read `value`: {x}")))?,
        other => bail!("{}: `value` has dtype {other}; score maps must be float16 or float32", path.display()),
    };
    if v.len() != h * w {
        bail!("{}: `value` holds {} values for shape {shape:?}", path.display(), v.len());
    }
    Ok((h, w, v))
}

/// Write `v` as an `[H, W]` float16 `value` dataset (tests, fixtures).
#[cfg(feature = "hdf5")]
pub fn write_score_map_h5(path: &Path, h: usize, w: usize, v: &[half::f16]) -> Result<()> {
    let view = ndarray::ArrayView2::from_shape((h, w), v).map_err(|x| anyhow::anyhow!("{}: {x}", path.display()))?;
    let run = || -> hdf5::Result<()> {
        let file = hdf5::File::create(path)?;
        file.new_dataset_builder().with_data(view).create("value")?;
        Ok(())
    };
    run().map_err(|x| anyhow::anyhow!("{}: cannot write HDF5: {x}", path.display()))
}
