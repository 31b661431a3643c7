//! Everything a sweep leaves behind: `results.json`, `tables.md`,
//! `manifest.json`, and the comparison of two results folders.
//!
//! Why this room exists: CI and reviewers never look at the metrics engine,
//! only at these files. They are written atomically (a temp folder renamed
//! into place) so a failed run never leaves a half-written or mixed folder,
//! and the two files meant for diffing are byte-deterministic.

pub mod curves;
pub mod diff;
pub mod drift;
pub mod markup;
pub mod results;
pub mod tables;

pub use results::Results;

use anyhow::{Context, Result};
use std::path::Path;

/// Write `files` into `dir` atomically: everything goes to a sibling temp
/// folder first, which then replaces `dir`. On error `dir` is untouched.
pub fn write_dir_atomic(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dir.file_name().context("results path has no folder name")?.to_string_lossy().to_string();
    if parent.exists() && !parent.is_dir() {
        anyhow::bail!("{}: output parent is not a folder", parent.display());
    }
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("{}: output path exists and is not a folder", dir.display());
    }
    std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(parent)
        .with_context(|| format!("{}: cannot create a temp folder", parent.display()))?;
    for (f, bytes) in files {
        let p = tmp.path().join(f);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&p, bytes).with_context(|| format!("{}: cannot write", p.display()))?;
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(dir, &old).with_context(|| format!("{}: cannot move aside", dir.display()))?;
    }
    let tmp_path = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp_path, dir) {
        // put the previous results back
        let _ = std::fs::rename(&old, dir);
        let _ = std::fs::remove_dir_all(&tmp_path);
        return Err(e).with_context(|| format!("{}: cannot move results into place", dir.display()));
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("{}: cannot remove", old.display()))?;
    }
    Ok(())
}
