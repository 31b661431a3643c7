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
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the SIGINT handler; [`write_dir_atomic`] checks it between files
/// and before moving anything into place.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Held for the whole of [`write_dir_atomic`]: the handler waits on it, so
/// it never exits while the temp folder exists or a rename is half done.
static WRITING: Mutex<()> = Mutex::new(());
/// Whether a results folder was moved into place by this process.
static COMMITTED: AtomicBool = AtomicBool::new(false);
/// Only the first of the handler and the main thread prints and exits.
static EXITING: Mutex<()> = Mutex::new(());

/// Whether SIGINT has been received.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The SIGINT handler (runs on its own thread): wait until no results
/// folder is half written — an in-progress write sees the flag, deletes its
/// temp folder and leaves the previous results in place — then exit 130
/// with one line.
pub fn on_interrupt() -> ! {
    INTERRUPTED.store(true, Ordering::SeqCst);
    drop(WRITING.lock().unwrap_or_else(|e| e.into_inner()));
    exit_interrupted()
}

/// Hold while writing any other file that must not be left half written
/// (shard states): the SIGINT handler waits for the guard to drop.
pub fn write_guard() -> std::sync::MutexGuard<'static, ()> {
    WRITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Print the interruption line once and exit 130 (128 + SIGINT).
pub fn exit_interrupted() -> ! {
    let _only_one = EXITING.lock().unwrap_or_else(|e| e.into_inner());
    if COMMITTED.load(Ordering::SeqCst) {
        eprintln!("error: interrupted (SIGINT) after the results were written");
    } else {
        eprintln!("error: interrupted (SIGINT); no results written, the previous results folder is untouched");
    }
    std::process::exit(130)
}

/// Write `files` into `dir` atomically: everything goes to a sibling temp
/// folder first, which then replaces `dir`. On error or SIGINT `dir` is
/// untouched and the temp folder is removed.
pub fn write_dir_atomic(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    // Declared first, dropped last: the temp folder is gone before a waiting
    // SIGINT handler may exit.
    let _writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let stop = || anyhow::bail!("interrupted (SIGINT) while writing {}; previous results untouched", dir.display());
    if interrupted() {
        return stop();
    }
    // Test hook: a pause after each file, so a test can interrupt mid-write.
    let delay = std::env::var("BENCH_TEST_WRITE_DELAY_MS").ok().and_then(|v| v.parse().ok()).map(std::time::Duration::from_millis);
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
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        if interrupted() {
            return stop();
        }
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
    COMMITTED.store(true, Ordering::SeqCst);
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("{}: cannot remove", old.display()))?;
    }
    Ok(())
}
