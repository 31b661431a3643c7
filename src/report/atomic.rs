//! Writing a results folder without ever losing one.
//!
//! Why this file exists: a results folder is the product of minutes or hours
//! of work, and the path it goes to comes from a config a user typed. Three
//! things must hold whatever happens (a typo in `output`, Ctrl-C, Slurm's
//! SIGTERM at the time limit, a lost SSH session's SIGHUP, even SIGKILL):
//!
//! 1. **Only bench's own folders are replaced.** [`check_replaceable`]
//!    refuses a folder that does not look like bench wrote it (a
//!    `results.json` of bench's format or a sharded run's `shards/`,
//!    and nothing at its top level that bench does not write).
//! 2. **The swap is atomic.** Files go to a sibling temp folder
//!    `.<name>.tmp-<pid>-<random>`, which then trades places with the old
//!    folder in one `renameat2(RENAME_EXCHANGE)` (Linux); where the file
//!    system lacks it, the old folder is moved aside to `.<name>.old-<pid>`
//!    and the new one renamed in, with the signal handler held off between
//!    the two renames.
//! 3. **Whatever a killed process left is repaired by the next run.**
//!    [`recover`] puts a stranded `.<name>.old-<pid>` back when the folder
//!    itself is missing, and removes temp and set-aside folders whose
//!    process is gone.
//!
//! SIGINT, SIGTERM and SIGHUP are handled alike: the handler waits until no
//! write is half done, then the process exits with 128 + the signal number
//! and one line.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The signal received (0: none); checked between files and before anything
/// is moved into place.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Held for the whole of [`write_dir_atomic`] (and shard-state writes): the
/// handler waits on it, so the process never exits with a write half done.
static WRITING: Mutex<()> = Mutex::new(());
/// Whether a results folder was moved into place by this process.
static COMMITTED: AtomicBool = AtomicBool::new(false);
/// Only the first of the handler and the main thread prints and exits.
static EXITING: Mutex<()> = Mutex::new(());

/// Top-level entries bench writes into a results folder. Anything else in a
/// folder means somebody else put it there, and the folder is not replaced.
pub const OWN_ENTRIES: &[&str] = &[
    "results.json",
    "tables.md",
    "manifest.json",
    "drift.json",
    "calibration.json",
    "conventions.md",
    "index.html",
    "report.md",
    "report.html",
    "curves",
    "plots",
    "examples",
    "failures",
    "shards",
];

/// Install the handler of SIGINT, SIGTERM and SIGHUP (a thread that waits
/// for a half-done write to finish or roll back, then exits).
pub fn install_signal_handler() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot install the signal handler")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                SIGNAL.store(sig, Ordering::SeqCst);
                drop(WRITING.lock().unwrap_or_else(|e| e.into_inner()));
                exit_interrupted()
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Whether SIGINT, SIGTERM or SIGHUP has been received.
pub fn interrupted() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        2 => "SIGINT",
        15 => "SIGTERM",
        1 => "SIGHUP",
        _ => "a signal",
    }
}

/// Hold while writing any other file that must not be left half written
/// (shard states): the signal handler waits for the guard to drop.
pub fn write_guard() -> std::sync::MutexGuard<'static, ()> {
    WRITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Print the interruption line once and exit 128 + the signal number.
pub fn exit_interrupted() -> ! {
    let _only_one = EXITING.lock().unwrap_or_else(|e| e.into_inner());
    let sig = SIGNAL.load(Ordering::SeqCst);
    let name = signal_name(sig);
    if COMMITTED.load(Ordering::SeqCst) {
        eprintln!("error: interrupted ({name}) after the results were written");
    } else {
        eprintln!("error: interrupted ({name}); no results written, the previous results folder is untouched");
    }
    std::process::exit(128 + if sig == 0 { 2 } else { sig })
}

/// `(parent, name)` of a results folder path.
fn split_path(dir: &Path) -> Result<(PathBuf, String)> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let name = dir.file_name().context("results path has no folder name")?.to_string_lossy().to_string();
    Ok((parent, name))
}

/// Whether process `pid` still runs (a leftover of a live process is not
/// touched: it may be a concurrent run of the same config).
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        // SAFETY: kill(2) with signal 0 only checks for existence.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Leftovers of earlier runs beside `<parent>/<name>`: `(path, kind, pid)`
/// for `.<name>.tmp-<pid>-*` and `.<name>.old-<pid>`.
fn leftovers(parent: &Path, name: &str) -> Vec<(PathBuf, &'static str, Option<u32>)> {
    let Ok(rd) = std::fs::read_dir(parent) else { return vec![] };
    let mut out: Vec<(PathBuf, &'static str, Option<u32>)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().to_string();
            let rest = f.strip_prefix(&format!(".{name}."))?.to_string();
            let (kind, tail) = if let Some(t) = rest.strip_prefix("tmp-") {
                ("tmp", t.to_string())
            } else if let Some(t) = rest.strip_prefix("old-") {
                ("old", t.to_string())
            } else {
                return None;
            };
            let pid = tail.split('-').next().and_then(|p| p.parse().ok());
            Some((e.path(), kind, pid))
        })
        .collect();
    out.sort();
    out
}

/// Repair what a killed run left beside `dir`: put a stranded set-aside
/// folder back when `dir` is missing, and remove temp and set-aside folders
/// of processes that are gone. Returns one notice per repair.
pub fn recover(dir: &Path) -> Result<Vec<String>> {
    let (parent, name) = split_path(dir)?;
    let mut notes = vec![];
    for (p, kind, pid) in leftovers(&parent, &name) {
        if pid.is_some_and(alive) {
            continue;
        }
        // A temp folder without a pid is from an older bench; it is stale
        // once it has not changed for ten minutes.
        if pid.is_none() {
            let old = p.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if !old.is_some_and(|d| d.as_secs() > 600) {
                continue;
            }
        }
        if kind == "old" && !dir.exists() && p.join("results.json").is_file() {
            std::fs::rename(&p, dir).with_context(|| format!("{}: cannot restore the previous results", p.display()))?;
            notes.push(format!("notice: restored {} from {} (left by an interrupted run)", dir.display(), p.display()));
        } else {
            std::fs::remove_dir_all(&p).with_context(|| format!("{}: cannot remove a leftover of an interrupted run", p.display()))?;
            notes.push(format!("notice: removed {} (left by an interrupted run)", p.display()));
        }
    }
    Ok(notes)
}

/// Whether `dir` holds a results folder bench wrote: `results.json` of
/// bench's format, or a sharded run's `shards/` folder.
fn has_marker(dir: &Path) -> bool {
    let results = std::fs::read_to_string(dir.join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("format").and_then(|f| f.as_str()).is_some_and(|f| f.starts_with("bench-results/")));
    // `shards/` alone counts: concurrent shard processes may see the folder
    // before the first of them has written `meta.json` into it.
    results || dir.join("shards").is_dir()
}

/// Refuse to replace `dir` unless bench wrote it. `subfolders` are the
/// dataset folders a `[[datasets]]` sweep writes inside it (each must be a
/// bench results folder itself). `key` names the config keys that chose
/// the path. A missing or empty folder is fine.
pub fn check_replaceable(dir: &Path, subfolders: &[String], key: &str) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        bail!("{key}: {} exists and is not a folder; bench will not replace it", dir.display());
    }
    let entries: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let own = |e: &String| OWN_ENTRIES.contains(&e.as_str()) || subfolders.contains(e);
    let marked = has_marker(dir) || subfolders.iter().any(|s| has_marker(&dir.join(s)));
    let mut foreign: Vec<&String> = entries.iter().filter(|e| !own(e)).collect();
    foreign.sort();
    if !marked || !foreign.is_empty() {
        let what = match foreign.first() {
            Some(f) => format!("it holds '{f}', which bench did not write"),
            None => "it is not a bench results folder (no results.json of bench's format)".to_string(),
        };
        bail!(
            "{key}: {} already exists and {what}; bench replaces only its own results folders — choose another `output`/`name`, or move that folder away",
            dir.display()
        );
    }
    for s in subfolders {
        let d = dir.join(s);
        if d.exists() {
            check_replaceable(&d, &[], key)?;
        }
    }
    Ok(())
}

/// Trade the places of two existing paths in one step (Linux
/// `renameat2(RENAME_EXCHANGE)`); `Ok(false)` where the system or file
/// system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: two NUL-terminated paths relative to the current directory.
    let r = unsafe { libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(e),
    }
}
#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// Write `files` into `dir` atomically: everything goes to a sibling temp
/// folder first, which then replaces `dir` (see the module doc). On error
/// or a signal `dir` is untouched and the temp folder is removed. The
/// caller has checked with [`check_replaceable`] that `dir` may be replaced.
pub fn write_dir_atomic(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    // Declared first, dropped last: the temp folder is gone before a waiting
    // signal handler may exit.
    let _writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let stop = || anyhow::bail!("interrupted while writing {}; previous results untouched", dir.display());
    if interrupted() {
        return stop();
    }
    // Test hook: a pause after each file, so a test can interrupt mid-write.
    let delay = std::env::var("BENCH_TEST_WRITE_DELAY_MS").ok().and_then(|v| v.parse().ok()).map(std::time::Duration::from_millis);
    let (parent, name) = split_path(dir)?;
    if parent.exists() && !parent.is_dir() {
        bail!("{}: output parent is not a folder", parent.display());
    }
    if dir.exists() && !dir.is_dir() {
        bail!("{}: output path exists and is not a folder", dir.display());
    }
    std::fs::create_dir_all(&parent).with_context(|| format!("{}: cannot create", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-{}-", std::process::id()))
        .tempdir_in(&parent)
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
    if dir.exists() {
        if exchange(tmp.path(), dir).with_context(|| format!("{}: cannot move results into place", dir.display()))? {
            // `tmp` now holds the previous results; dropping it removes them.
            COMMITTED.store(true, Ordering::SeqCst);
            return tmp.close().with_context(|| format!("{}: cannot remove the previous results", dir.display()));
        }
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).with_context(|| format!("{}: cannot move aside", dir.display()))?;
        let tmp_path = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp_path, dir) {
            // put the previous results back
            let _ = std::fs::rename(&old, dir);
            let _ = std::fs::remove_dir_all(&tmp_path);
            return Err(e).with_context(|| format!("{}: cannot move results into place", dir.display()));
        }
        COMMITTED.store(true, Ordering::SeqCst);
        return std::fs::remove_dir_all(&old).with_context(|| format!("{}: cannot remove", old.display()));
    }
    let tmp_path = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp_path, dir) {
        let _ = std::fs::remove_dir_all(&tmp_path);
        return Err(e).with_context(|| format!("{}: cannot move results into place", dir.display()));
    }
    COMMITTED.store(true, Ordering::SeqCst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results_json(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("results.json"), "{\"format\": \"bench-results/1\"}").unwrap();
    }

    #[test]
    fn only_bench_folders_are_replaceable() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("thesis");
        assert!(check_replaceable(&d, &[], "`output`").is_ok(), "missing is fine");
        std::fs::create_dir_all(&d).unwrap();
        assert!(check_replaceable(&d, &[], "`output`").is_ok(), "empty is fine");
        std::fs::write(d.join("chapter1.tex"), "x").unwrap();
        let e = check_replaceable(&d, &[], "`output`").unwrap_err().to_string();
        assert!(e.contains("chapter1.tex") && e.contains("`output`"), "{e}");
        // a bench folder with a user's file in it is not replaced either
        results_json(&d);
        assert!(check_replaceable(&d, &[], "`output`").unwrap_err().to_string().contains("chapter1.tex"));
        std::fs::remove_file(d.join("chapter1.tex")).unwrap();
        assert!(check_replaceable(&d, &[], "`output`").is_ok());
        // a foreign results.json
        std::fs::write(d.join("results.json"), "{\"format\": \"other\"}").unwrap();
        assert!(check_replaceable(&d, &[], "`output`").unwrap_err().to_string().contains("not a bench results folder"));
        // [[datasets]]: subfolders must be bench folders
        let top = t.path().join("multi");
        results_json(&top.join("a"));
        std::fs::write(top.join("tables.md"), "").unwrap();
        assert!(check_replaceable(&top, &["a".into(), "b".into()], "`name`").is_ok());
        std::fs::write(top.join("a").join("notes.txt"), "").unwrap();
        assert!(check_replaceable(&top, &["a".into()], "`name`").unwrap_err().to_string().contains("notes.txt"));
    }

    #[test]
    fn swap_replaces_and_recover_restores_a_stranded_folder() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("h");
        write_dir_atomic(&d, &[("results.json".into(), b"1".to_vec())]).unwrap();
        write_dir_atomic(&d, &[("results.json".into(), b"2".to_vec())]).unwrap();
        assert_eq!(std::fs::read(d.join("results.json")).unwrap(), b"2");
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("h")], "no leftovers");
        // a run killed between "old aside" and "new in" (pid 2^22+1 is never alive on Linux's default pid_max)
        let dead = 4_194_305;
        std::fs::rename(&d, t.path().join(format!(".h.old-{dead}"))).unwrap();
        std::fs::create_dir_all(t.path().join(format!(".h.tmp-{dead}-abc"))).unwrap();
        let notes = recover(&d).unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(std::fs::read(d.join("results.json")).unwrap(), b"2");
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("h")]);
        // a live process's temp folder is left alone
        let mine = t.path().join(format!(".h.tmp-{}-x", std::process::id()));
        std::fs::create_dir_all(&mine).unwrap();
        assert!(recover(&d).unwrap().is_empty());
        assert!(mine.exists());
    }
}
