//! Dataset discovery (SPEC §3).
//!
//! ```text
//! <root>/<split>/labels/<id>.png|.npy
//! <root>/<split>/logits/<model>/<id>.npy
//! <root>/<split>/scores/<method>/<id>.npy
//! <root>/<split>/images/<id>.png      optional photo (failure panels only: `data::rgb`)
//! ```
//!
//! A split is any subdirectory of the root that has a `labels/` folder.
//! Images are matched by file stem; stems are sorted in byte order so every
//! traversal is deterministic.
//!
//! Drifted copies of the test split are splits named `test@<name>` (e.g.
//! `test@lighting_2w`): the same image ids as `test`, re-rendered or
//! re-captured under drift, with logits from the same models, in the same
//! layout. Why a naming rule and not a config key: a drifted copy belongs
//! to the dataset (whoever made it knows what drifted), and every config
//! over that dataset should evaluate it. They must hold exactly test's
//! image ids, because their changes from test are paired by image id.

use anyhow::{Result, anyhow, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn ferr(path: &Path, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}: {}", path.display(), msg)
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    /// Sorted by name.
    pub splits: Vec<Split>,
}

#[derive(Debug, Clone)]
pub struct Split {
    pub name: String,
    /// `<root>/<name>`.
    pub dir: PathBuf,
    /// Image ids (label file stems), sorted in byte order.
    pub stems: Vec<String>,
    /// Label file of each stem (same order as `stems`).
    pub labels: Vec<PathBuf>,
}

/// Entries of a directory as (name, path, is_dir), sorted by name; names
/// that are not UTF-8 are an error naming the entry.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| ferr(dir, format!("cannot list directory: {e}")))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| ferr(dir, format!("cannot list directory: {e}")))?;
        let path = ent.path();
        let name = match ent.file_name().into_string() {
            Ok(n) => n,
            Err(_) => bail!("{}: file name is not valid UTF-8", path.display()),
        };
        // Follow symlinks (datasets are often assembled from links).
        let is_dir = path.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Extensions of logits files, in lookup order.
pub const LOGIT_EXTS: &[&str] = &["npy", "npz"];
/// Extensions of score-map files (HDF5 needs the `hdf5` feature), in
/// lookup order.
pub const SCORE_EXTS: &[&str] = &["npy", "npz", "h5", "hdf5"];

/// `<dir>/<stem>.<ext>` for the first of `exts` that exists.
pub fn find_input(dir: &Path, stem: &str, exts: &[&str]) -> Option<PathBuf> {
    exts.iter().map(|e| dir.join(format!("{stem}.{e}"))).find(|p| p.is_file())
}

/// Lower-cased extension of a path ("" when it has none).
pub fn ext_lower(p: &Path) -> String {
    p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// `(stem, path)` of the files in a folder with one of `exts` (exact
/// suffixes; hidden files skipped), sorted by stem — or of `p` itself when
/// it is a file. Two files with one stem, or none at all, are errors naming
/// the folder. (`bench eval`'s inputs: a folder of maps or masks.)
pub fn files_by_stem(p: &Path, exts: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let stem = |q: &Path| q.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    if p.is_file() {
        return Ok(vec![(stem(p), p.to_path_buf())]);
    }
    let mut v: Vec<(String, PathBuf)> = list_dir(p)?
        .into_iter()
        .filter(|(name, _, is_dir)| !is_dir && !name.starts_with('.'))
        .filter_map(|(name, path, _)| {
            let (s, ext) = name.rsplit_once('.')?;
            (!s.is_empty() && exts.contains(&ext)).then(|| (s.to_string(), path))
        })
        .collect();
    v.sort();
    for w in v.windows(2) {
        if w[0].0 == w[1].0 {
            bail!("{} and {}: two files with the same stem", w[0].1.display(), w[1].1.display());
        }
    }
    if v.is_empty() {
        bail!("{}: no {} files", p.display(), exts.join("/"));
    }
    Ok(v)
}

/// `<name>` of a drifted split `test@<name>` (non-empty; letters, digits,
/// `_`, `-`, `.`), else `None`.
pub fn drift_name(split: &str) -> Option<&str> {
    let n = split.strip_prefix("test@")?;
    (!n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))).then_some(n)
}

/// (stem, lower-cased extension) of a file name, if it has an extension.
fn stem_ext(name: &str) -> Option<(&str, String)> {
    let (stem, ext) = name.rsplit_once('.')?;
    if stem.is_empty() {
        return None;
    }
    Some((stem, ext.to_ascii_lowercase()))
}

impl Dataset {
    /// Discover the splits under `root`. Errors: root missing, no `test`
    /// split, an empty split, duplicate stems, unsupported label files.
    pub fn open(root: &Path) -> Result<Dataset> {
        if !root.exists() {
            bail!("{}: dataset folder does not exist", root.display());
        }
        if !root.is_dir() {
            bail!("{}: dataset path is not a directory", root.display());
        }
        let mut splits = Vec::new();
        for (name, path, is_dir) in list_dir(root)? {
            if !is_dir || name.starts_with('.') || !path.join("labels").is_dir() {
                continue;
            }
            splits.push(Split::open(&name, &path)?);
        }
        if !splits.iter().any(|s| s.name == "test") {
            let found: Vec<&str> = splits.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "{}: no `test` split (expected {}/test/labels/); splits found: [{}]",
                root.display(),
                root.display(),
                found.join(", ")
            );
        }
        let ds = Dataset {
            root: root.to_path_buf(),
            splits,
        };
        ds.check_drifted()?;
        Ok(ds)
    }

    pub fn split(&self, name: &str) -> Option<&Split> {
        self.splits.iter().find(|s| s.name == name)
    }

    /// The drifted copies of `test` (`test@<name>` splits), in name order.
    pub fn drifted(&self) -> Vec<&Split> {
        self.splits.iter().filter(|s| drift_name(&s.name).is_some()).collect()
    }

    /// Every `test@<name>` split has a usable name and exactly test's
    /// image ids (its changes are paired by image id).
    fn check_drifted(&self) -> Result<()> {
        let test = self.split("test").expect("checked: a test split");
        for s in self.splits.iter().filter(|s| s.name.starts_with("test@")) {
            let Some(n) = drift_name(&s.name) else {
                bail!("{}: a drifted split is named `test@<name>` with <name> of letters, digits, `_`, `-` or `.`", s.dir.display());
            };
            if s.stems != test.stems {
                let missing = test.stems.iter().find(|x| s.stems.binary_search(x).is_err());
                let extra = s.stems.iter().find(|x| test.stems.binary_search(x).is_err());
                let what = match (missing, extra) {
                    (Some(m), _) => format!("image `{m}` of test is missing"),
                    (None, Some(e)) => format!("image `{e}` is not in test"),
                    _ => "image ids differ".into(),
                };
                bail!("{}: drifted split `{n}` must hold exactly the test split's image ids (paired by id): {what}", s.dir.join("labels").display());
            }
        }
        Ok(())
    }
}

impl Split {
    fn open(name: &str, dir: &Path) -> Result<Split> {
        let labels_dir = dir.join("labels");
        let mut by_stem: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (fname, path, is_dir) in list_dir(&labels_dir)? {
            if is_dir || fname.starts_with('.') {
                continue;
            }
            let Some((stem, ext)) = stem_ext(&fname) else {
                bail!(
                    "{}: unsupported label file (expected <id>.png or <id>.npy)",
                    path.display()
                );
            };
            if ext != "png" && ext != "npy" {
                bail!(
                    "{}: unsupported label file type .{ext} (expected .png or .npy)",
                    path.display()
                );
            }
            if let Some(prev) = by_stem.get(stem) {
                bail!(
                    "{}: two label files for image `{stem}`: {} and {}",
                    labels_dir.display(),
                    prev.display(),
                    path.display()
                );
            }
            by_stem.insert(stem.to_string(), path);
        }
        if by_stem.is_empty() {
            bail!(
                "{}: empty split `{name}`: no .png or .npy label files",
                labels_dir.display()
            );
        }
        let (stems, labels) = by_stem.into_iter().unzip();
        Ok(Split {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            stems,
            labels,
        })
    }

    /// `<dir>/logits/<model>/<stem>.npy` (or `.npz`); error naming the
    /// path if missing.
    pub fn logits_path(&self, model: &str, stem: &str) -> Result<PathBuf> {
        let dir = self.dir.join("logits").join(model);
        find_input(&dir, stem, LOGIT_EXTS)
            .ok_or_else(|| anyhow!("{}: missing logits file for image `{stem}` of model `{model}`", dir.join(format!("{stem}.npy")).display()))
    }

    /// `<dir>/scores/<method>/<stem>.npy` (or `.npz`, `.h5`, `.hdf5`);
    /// error naming the path if missing.
    pub fn score_path(&self, method: &str, stem: &str) -> Result<PathBuf> {
        let dir = self.dir.join("scores").join(method);
        find_input(&dir, stem, SCORE_EXTS)
            .ok_or_else(|| anyhow!("{}: missing score map for image `{stem}` of method `{method}`", dir.join(format!("{stem}.npy")).display()))
    }

    /// The model's folder exists, every stem has exactly one logits file
    /// (`.npy` or `.npz`), and the folder has no logits file whose stem has
    /// no label file.
    pub fn check_model(&self, model: &str) -> Result<()> {
        let mdir = self.dir.join("logits").join(model);
        if !mdir.is_dir() {
            let have = self.models();
            bail!(
                "{}: model folder missing in split `{}` (models found: [{}])",
                mdir.display(),
                self.name,
                have.join(", ")
            );
        }
        self.check_inputs(&mdir, LOGIT_EXTS, "logits file", &format!("of model `{model}`"))
    }

    /// Every stem has exactly one file in `dir` with one of `exts`, and no
    /// such file lacks a label file. `what` / `owner` word the errors
    /// ("logits file", "of model `x`").
    pub fn check_inputs(&self, dir: &Path, exts: &[&str], what: &str, owner: &str) -> Result<()> {
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (fname, path, is_dir) in list_dir(dir)? {
            if is_dir || fname.starts_with('.') {
                continue;
            }
            // Exact (lower-case) suffixes: `find_input` builds `<stem>.<ext>`.
            let Some((stem, ext)) = fname.rsplit_once('.') else { continue };
            if stem.is_empty() || !exts.contains(&ext) {
                continue;
            }
            if let Some(prev) = found.get(stem) {
                bail!("{}: two {what}s for image `{stem}`: {} and {}", dir.display(), prev.display(), path.display());
            }
            found.insert(stem.to_string(), path);
        }
        for stem in &self.stems {
            if !found.contains_key(stem) {
                let p = dir.join(format!("{stem}.{}", exts[0]));
                bail!("{}: missing {what} for image `{stem}` {owner}", p.display());
            }
        }
        for (stem, p) in &found {
            if self.stems.binary_search(stem).is_err() {
                bail!(
                    "{}: {what} has no label file (expected {}/labels/{stem}.png or .npy)",
                    p.display(),
                    self.dir.display()
                );
            }
        }
        Ok(())
    }

    /// Sorted folder names under `<dir>/logits/` (empty if none).
    pub fn models(&self) -> Vec<String> {
        let Ok(entries) = list_dir(&self.dir.join("logits")) else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter(|(n, _, d)| *d && !n.starts_with('.'))
            .map(|(n, _, _)| n)
            .collect()
    }
}
