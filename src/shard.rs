//! Sharded sweeps: one run split over processes (Slurm job arrays), merged
//! exactly.
//!
//! Why it exists: exact pixel metrics need every negative's rank among all
//! positives, so a split cannot be cut into pieces whose metrics are then
//! averaged. Instead every streaming pass of the pipeline is a *collective*
//! ([`Exec::collective`]): in a normal run it visits all images; in a shard
//! it visits one consecutive image range and writes the pass's accumulated
//! state to `results/<name>/shards/`; `bench merge` folds those states in
//! shard order. Every accumulator merges exactly — integer counts summed,
//! positives concatenated (they are sorted later), floating-point sums kept
//! per image and folded in image order — so the merged state is, bit for
//! bit, the one a single process accumulates, and so are results.json and
//! tables.md.
//!
//! A pass needs the merged result of the previous one (pass 2 ranks
//! negatives among the positives of pass 1; test needs val's thresholds), so
//! a sharded sweep runs in rounds: every shard runs its part of the next
//! pending pass of every model, then one merge. Each process replays the
//! finished passes from their merged files, so no process keeps state
//! between rounds, and a re-run shard or merge (a requeued job) is a no-op.
//!
//! State files are versioned and checksummed: a text header line with the
//! format, tool version, config hash, pass, shard index and the SHA-256 and
//! length of the postcard payload that follows.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use crate::report::results::DeviceKind;

/// Version of the state files; bumped whenever a state's layout changes.
pub const FORMAT: &str = "bench-shard/1";

/// Where the images of each pass are processed.
pub enum Exec {
    /// All images, in this process (a normal run).
    Local,
    /// This shard's image range of the next pending pass; merged state of
    /// earlier passes is read back.
    Shard(Shards, usize),
    /// No images: fold the shards' states (`bench merge`).
    Merge(Shards),
}

/// The shard folder of one sweep and what every state file in it must agree
/// on.
pub struct Shards {
    pub dir: PathBuf,
    pub count: usize,
    pub config_sha256: String,
    /// Input checksums reported by the shards' state files (merge only).
    pub inputs: Mutex<BTreeMap<String, String>>,
    /// Device kinds the shards scored on (merge only).
    pub devices: Mutex<Vec<DeviceKind>>,
}

/// "This pass waits for other shards or for a merge": unwinds one model's
/// work; the other models go on.
#[derive(Debug)]
pub struct Pending;

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("waiting for the other shards or for `bench merge`")
    }
}

impl std::error::Error for Pending {}

/// Whether `e` (or its cause) is [`Pending`].
pub fn is_pending(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Pending>())
}

/// `meta.json`: what a shard folder was made for.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Meta {
    format: String,
    tool: String,
    config_sha256: String,
    shards: usize,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    tool: String,
    config_sha256: String,
    pass: String,
    /// None for a merged state.
    shard: Option<usize>,
    shards: usize,
    device: DeviceKind,
    inputs: BTreeMap<String, String>,
    bytes: u64,
    sha256: String,
}

/// The tool that wrote a state: version and git revision (a state from
/// other code may not merge exactly, so it is refused).
fn tool() -> String {
    match option_env!("BENCH_GIT_REVISION") {
        Some(rev) => format!("bench {} ({rev})", env!("CARGO_PKG_VERSION")),
        None => format!("bench {}", env!("CARGO_PKG_VERSION")),
    }
}

/// Images `[start, end)` of shard `i` of `n` over `len` images.
pub fn range(i: usize, n: usize, len: usize) -> Range<usize> {
    (i * len / n)..((i + 1) * len / n)
}

/// `I/N` (0-based I) → (I, N).
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .with_context(|| format!("--shard {s}: expected I/N, e.g. 0/4"))?;
    let (i, n): (usize, usize) = (
        i.trim()
            .parse()
            .with_context(|| format!("--shard {s}: I is not a number"))?,
        n.trim()
            .parse()
            .with_context(|| format!("--shard {s}: N is not a number"))?,
    );
    ensure!(n >= 1 && i < n, "--shard {s}: need 0 <= I < N");
    Ok((i, n))
}

/// The shard of a Slurm array task (`SLURM_ARRAY_TASK_ID` counted from
/// `SLURM_ARRAY_TASK_MIN`, out of `SLURM_ARRAY_TASK_COUNT`), if any.
pub fn from_slurm() -> Result<Option<(usize, usize)>> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(id), Some(count)) = (var("SLURM_ARRAY_TASK_ID"), var("SLURM_ARRAY_TASK_COUNT"))
    else {
        return Ok(None);
    };
    let num = |k: &str, v: &str| {
        v.parse::<usize>()
            .with_context(|| format!("{k}={v}: not a number"))
    };
    let id = num("SLURM_ARRAY_TASK_ID", &id)?;
    let count = num("SLURM_ARRAY_TASK_COUNT", &count)?;
    let min = match var("SLURM_ARRAY_TASK_MIN") {
        Some(m) => num("SLURM_ARRAY_TASK_MIN", &m)?,
        None => 0,
    };
    ensure!(
        id >= min && id - min < count,
        "SLURM_ARRAY_TASK_ID={id} is outside the array ({count} tasks from {min})"
    );
    Ok(Some((id - min, count)))
}

impl Shards {
    /// The shard folder for a shard run: created with `meta.json` and a copy
    /// of the config, or checked against them.
    pub fn create(
        dir: PathBuf,
        count: usize,
        config_bytes: &[u8],
        config_sha256: &str,
    ) -> Result<Shards> {
        let meta = Meta {
            format: FORMAT.into(),
            tool: tool(),
            config_sha256: config_sha256.into(),
            shards: count,
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let mp = dir.join("meta.json");
        if mp.exists() {
            let have = read_meta(&mp)?;
            ensure!(
                have == meta,
                "{}: this shard folder belongs to another sharded run ({} shards, config {}, {}; this run: {} shards, config {}, {}); \
                 finish it with the same config, --shard I/{} and the same bench, or delete the folder",
                mp.display(),
                have.shards,
                short(&have.config_sha256),
                have.tool,
                meta.shards,
                short(&meta.config_sha256),
                meta.tool,
                have.shards
            );
        } else {
            write_atomic(&dir.join("config.toml"), config_bytes)?;
            write_atomic(
                &mp,
                (serde_json::to_string_pretty(&meta)? + "\n").as_bytes(),
            )?;
        }
        Ok(Shards::new(dir, count, config_sha256))
    }

    /// The shard folder of an earlier shard run (for `bench merge`), with
    /// the config it was made for.
    pub fn open(dir: PathBuf) -> Result<(Shards, Vec<u8>)> {
        let mp = dir.join("meta.json");
        ensure!(
            mp.exists(),
            "{}: no sharded run here (run `bench run <config> --shard I/N` first)",
            dir.display()
        );
        let meta = read_meta(&mp)?;
        ensure!(
            meta.format == FORMAT,
            "{}: state format {} (this bench reads {FORMAT})",
            mp.display(),
            meta.format
        );
        ensure!(
            meta.tool == tool(),
            "{}: made by {} (this is {}); rerun the shards",
            mp.display(),
            meta.tool,
            tool()
        );
        let cp = dir.join("config.toml");
        let bytes = std::fs::read(&cp).with_context(|| format!("{}: cannot read", cp.display()))?;
        let sha = crate::data::checksum::sha256_hex(&bytes);
        ensure!(
            sha == meta.config_sha256,
            "{}: does not match the config hash in {}",
            cp.display(),
            mp.display()
        );
        Ok((Shards::new(dir, meta.shards, &sha), bytes))
    }

    fn new(dir: PathBuf, count: usize, sha: &str) -> Shards {
        Shards {
            dir,
            count,
            config_sha256: sha.into(),
            inputs: Mutex::default(),
            devices: Mutex::default(),
        }
    }

    fn part(&self, pass: &str, i: usize) -> PathBuf {
        self.dir
            .join(format!("{pass}.part-{i}-of-{}.bin", self.count))
    }

    fn merged(&self, pass: &str) -> PathBuf {
        self.dir.join(format!("{pass}.merged.bin"))
    }

    fn write<D: Serialize>(
        &self,
        path: &Path,
        pass: &str,
        shard: Option<usize>,
        device: DeviceKind,
        inputs: BTreeMap<String, String>,
        d: &D,
    ) -> Result<()> {
        let payload =
            postcard::to_stdvec(d).with_context(|| format!("{pass}: cannot encode the state"))?;
        let h = Header {
            format: FORMAT.into(),
            tool: tool(),
            config_sha256: self.config_sha256.clone(),
            pass: pass.into(),
            shard,
            shards: self.count,
            device,
            inputs,
            bytes: payload.len() as u64,
            sha256: crate::data::checksum::sha256_hex(&payload),
        };
        let mut out = serde_json::to_vec(&h)?;
        out.push(b'\n');
        out.extend_from_slice(&payload);
        write_atomic(path, &out)
    }

    /// Read and verify a state file written for `pass` (and `shard`).
    fn read<D: DeserializeOwned>(
        &self,
        path: &Path,
        pass: &str,
        shard: Option<usize>,
    ) -> Result<(Header, D)> {
        let p = path.display();
        let bytes = std::fs::read(path).with_context(|| format!("{p}: cannot read"))?;
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .with_context(|| format!("{p}: not a bench shard state (no header)"))?;
        let h: Header = serde_json::from_slice(&bytes[..nl])
            .with_context(|| format!("{p}: not a bench shard state (bad header)"))?;
        ensure!(
            h.format == FORMAT,
            "{p}: state format {} (this bench reads {FORMAT})",
            h.format
        );
        ensure!(
            h.tool == tool(),
            "{p}: made by {} (this is {})",
            h.tool,
            tool()
        );
        ensure!(
            h.config_sha256 == self.config_sha256,
            "{p}: made for another config ({}, expected {})",
            short(&h.config_sha256),
            short(&self.config_sha256)
        );
        ensure!(
            h.pass == pass && h.shard == shard && h.shards == self.count,
            "{p}: holds pass {} shard {:?} of {}, not what its name says",
            h.pass,
            h.shard,
            h.shards
        );
        let payload = &bytes[nl + 1..];
        ensure!(
            payload.len() as u64 == h.bytes,
            "{p}: truncated ({} of {} payload bytes)",
            payload.len(),
            h.bytes
        );
        ensure!(
            crate::data::checksum::sha256_hex(payload) == h.sha256,
            "{p}: checksum mismatch (the file is corrupt)"
        );
        let d = postcard::from_bytes(payload)
            .with_context(|| format!("{p}: cannot decode the state"))?;
        Ok((h, d))
    }
}

impl Exec {
    /// Run one streaming pass (`pass` names it: model, split, step).
    ///
    /// `run(state, images)` visits `images` (all of them, or this shard's)
    /// and accumulates into `state`; `export` turns the accumulated part into
    /// what is shipped; `absorb` folds a shipped part into a fresh `state`.
    /// Returns `Err(Pending)` when this process cannot go past the pass yet.
    #[allow(clippy::too_many_arguments)]
    pub fn collective<S, D>(
        &self,
        pass: &str,
        images: usize,
        device: DeviceKind,
        inputs: &dyn Fn() -> BTreeMap<String, String>,
        state: &mut S,
        run: impl FnOnce(&mut S, Range<usize>) -> Result<()>,
        export: impl Fn(&S) -> D,
        mut absorb: impl FnMut(&mut S, D) -> Result<()>,
    ) -> Result<()>
    where
        D: Serialize + DeserializeOwned,
    {
        let (sh, me) = match self {
            Exec::Local => return run(state, 0..images),
            Exec::Shard(sh, i) => (sh, Some(*i)),
            Exec::Merge(sh) => (sh, None),
        };
        let merged = sh.merged(pass);
        if merged.exists() {
            let (_, d) = sh.read(&merged, pass, None)?;
            return absorb(state, d);
        }
        if let Some(i) = me {
            let part = sh.part(pass, i);
            if !part.exists() {
                run(state, range(i, sh.count, images))?;
                sh.write(&part, pass, Some(i), device, inputs(), &export(state))?;
            }
            return Err(Pending.into());
        }
        // merge: every part, in shard order
        let parts: Vec<PathBuf> = (0..sh.count).map(|i| sh.part(pass, i)).collect();
        let missing: Vec<String> = (0..sh.count)
            .filter(|&i| !parts[i].exists())
            .map(|i| i.to_string())
            .collect();
        if missing.len() == sh.count {
            return Err(Pending.into());
        }
        if !missing.is_empty() {
            bail!(
                "{}: pass {pass} is missing shard(s) {} of {} (did those array tasks fail?)",
                sh.dir.display(),
                missing.join(", "),
                sh.count
            );
        }
        for (i, p) in parts.iter().enumerate() {
            let (h, d): (Header, D) = sh.read(p, pass, Some(i))?;
            sh.inputs.lock().unwrap().extend(h.inputs);
            sh.devices.lock().unwrap().push(h.device);
            absorb(state, d)?;
        }
        let mut d = sh.devices.lock().unwrap();
        d.sort();
        d.dedup();
        drop(d);
        sh.write(
            &merged,
            pass,
            None,
            DeviceKind::Merged,
            BTreeMap::new(),
            &export(state),
        )
    }

    /// The device kind recorded in results.json for a merge: the shards'
    /// (`mixed` when they differ), or `fallback` in other modes.
    pub fn device_kind(&self, fallback: DeviceKind) -> DeviceKind {
        match self {
            Exec::Merge(sh) => {
                let d = sh.devices.lock().unwrap();
                match d.as_slice() {
                    [one] => *one,
                    [] => fallback,
                    _ => DeviceKind::Mixed,
                }
            }
            _ => fallback,
        }
    }
}

fn read_meta(p: &Path) -> Result<Meta> {
    let b = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
    serde_json::from_slice(&b)
        .with_context(|| format!("{}: not a bench shard meta.json", p.display()))
}

/// The first 12 characters of a hash (never splits a character: the value
/// comes from a file).
fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

/// Write a file via a sibling temp file and a rename, so a concurrent reader
/// (another shard, the merge) never sees half a file.
///
/// Under [`crate::report::write_guard`]: a Ctrl-C waits for it, and one
/// that came first leaves no temp file (it is removed on drop).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let _g = crate::report::write_guard();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot create a temp file", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    ensure!(!crate::report::interrupted(), "interrupted");
    tmp.persist(path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_image_once_in_order() {
        for len in [0, 1, 5, 7, 100] {
            for n in [1, 2, 3, 7, 11] {
                let v: Vec<usize> = (0..n).flat_map(|i| range(i, n, len)).collect();
                assert_eq!(v, (0..len).collect::<Vec<_>>(), "len {len} n {n}");
            }
        }
    }

    #[test]
    fn shard_argument() {
        assert_eq!(parse_shard("2/7").unwrap(), (2, 7));
        for bad in ["7/7", "1", "a/3", "0/0", "-1/3"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
