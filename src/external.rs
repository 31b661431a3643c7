//! Precomputed score maps of outside methods (SPEC §3: `scores/<method>/`),
//! and the column type that lets them sit next to the built-in methods.
//!
//! Why they join the sweep instead of living in `bench eval`: a score the
//! harness cannot compute (a trained model's output, a method published
//! with its maps) deserves exactly the same treatment as the built-in ones —
//! val thresholds applied to test, honest tables, image-level metrics,
//! drift, bootstrap, regions. The pipeline therefore appends these maps to
//! each image's computed maps and everything downstream is unchanged.
//!
//! Layout, decided per method and checked before any work:
//! - per-model: `scores/<method>/<model>/<id>.npy` when `scores/<method>/`
//!   has sub-folders (every configured model then needs its own);
//! - shared: `scores/<method>/<id>.npy` otherwise, the same maps for every
//!   model row (the method does not depend on the row's logits).
//!
//! `.npz` and (with the `hdf5` feature) `.h5`/`.hdf5` files are accepted
//! like `.npy`.

use crate::data::dataset::{SCORE_EXTS, find_input};
use crate::data::resize::{Resize, resize_logits};
use crate::data::{LogitData, Logits, Split, read_score_map_key};
use crate::scores::Method;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// One column of the sweep: a built-in score computed from the logits, or
/// an outside method's precomputed maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodRef {
    Builtin(Method),
    External { id: String, name: String },
}

impl MethodRef {
    /// The id in configs, results.json and file names.
    pub fn id(&self) -> &str {
        match self {
            MethodRef::Builtin(m) => m.id(),
            MethodRef::External { id, .. } => id,
        }
    }

    /// Column header in the tables.
    pub fn display(&self) -> &str {
        match self {
            MethodRef::Builtin(m) => m.display(),
            MethodRef::External { name, .. } => name,
        }
    }

    /// Only built-in SML / HEAT fit statistics (and so can leak).
    pub fn needs_calibration(&self) -> bool {
        matches!(self, MethodRef::Builtin(m) if m.needs_calibration())
    }
}

/// Where an external method's maps live in every split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    PerModel,
    Shared,
}

impl Layout {
    /// As recorded in results.json (`methods[].external`).
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::PerModel => "per_model",
            Layout::Shared => "shared",
        }
    }
}

/// An outside method of the sweep, its layout resolved.
#[derive(Debug, Clone)]
pub struct External {
    pub id: String,
    pub layout: Layout,
}

impl External {
    pub fn column(&self) -> MethodRef {
        MethodRef::External { id: self.id.clone(), name: format!("{} (precomputed)", self.id) }
    }

    fn dir(&self, split: &Split, model: &str) -> PathBuf {
        let d = split.dir.join("scores").join(&self.id);
        match self.layout {
            Layout::PerModel => d.join(model),
            Layout::Shared => d,
        }
    }

    /// The score-map file of image `i` of `split` for `model`.
    pub fn path(&self, split: &Split, model: &str, i: usize) -> Result<PathBuf> {
        let dir = self.dir(split, model);
        let stem = &split.stems[i];
        find_input(&dir, stem, SCORE_EXTS).with_context(|| {
            format!("{}: missing score map for image `{stem}` of external method `{}`", dir.join(format!("{stem}.npy")).display(), self.id)
        })
    }

    /// Read image `i`'s map at the mask's `h × w`: a map of another size is
    /// an error unless `resize` is set (then it is upsampled like logits).
    pub fn read(&self, split: &Split, model: &str, i: usize, key: Option<&str>, resize: Resize, h: usize, w: usize) -> Result<(PathBuf, Vec<f32>)> {
        let p = self.path(split, model, i)?;
        let (sh, sw, v) = read_score_map_key(&p, key)?;
        if (sh, sw) == (h, w) {
            return Ok((p, v));
        }
        if resize == Resize::None {
            bail!(
                "{}: score map is {sh}×{sw} but the mask {} is {h}×{w} (set `resize = \"nearest\"` or `\"bilinear\"` to upsample)",
                p.display(),
                split.labels[i].display()
            );
        }
        let one = Logits { c: 1, h: sh, w: sw, data: LogitData::F32(v) };
        let up = resize_logits(&one, h, w, resize).with_context(|| p.display().to_string())?;
        match up.data {
            LogitData::F32(v) => Ok((p, v)),
            LogitData::F16(v) => Ok((p, v.iter().map(|x| x.to_f32()).collect())),
        }
    }
}

/// Resolve and check the outside methods `ids` on every split the sweep
/// reads: the folder exists, its layout is the same in every split, every
/// image has exactly one map and every map has an image. Errors name the
/// folder or file.
pub fn resolve(ids: &[String], splits: &[&Split], models: &[String]) -> Result<Vec<External>> {
    let mut out = Vec::new();
    for id in ids {
        let mut layout: Option<(Layout, &Split)> = None;
        for split in splits {
            let dir = split.dir.join("scores").join(id);
            if !dir.is_dir() {
                let have: Vec<String> = std::fs::read_dir(split.dir.join("scores"))
                    .map(|rd| {
                        let mut v: Vec<String> = rd.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                        v.sort();
                        v
                    })
                    .unwrap_or_default();
                bail!(
                    "{}: score folder of external method `{id}` missing in split `{}` (found: [{}])",
                    dir.display(),
                    split.name,
                    have.join(", ")
                );
            }
            let per_model = std::fs::read_dir(&dir)
                .with_context(|| format!("{}: cannot list", dir.display()))?
                .filter_map(|e| e.ok())
                .any(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'));
            let here = if per_model { Layout::PerModel } else { Layout::Shared };
            if let Some((l, first)) = layout
                && l != here
            {
                bail!(
                    "{}: external method `{id}` has {} score maps here but {} ones in split `{}`; use one layout",
                    dir.display(),
                    here.as_str().replace('_', "-"),
                    l.as_str().replace('_', "-"),
                    first.name
                );
            }
            layout = Some((here, split));
            let ext = External { id: id.clone(), layout: here };
            match here {
                Layout::Shared => split.check_inputs(&dir, SCORE_EXTS, "score map", &format!("of external method `{id}`"))?,
                Layout::PerModel => {
                    for m in models {
                        let md = ext.dir(split, m);
                        if !md.is_dir() {
                            bail!(
                                "{}: score folder of model `{m}` missing for external method `{id}` (its maps are per model because {} has sub-folders)",
                                md.display(),
                                dir.display()
                            );
                        }
                        split.check_inputs(&md, SCORE_EXTS, "score map", &format!("of external method `{id}`, model `{m}`"))?;
                    }
                }
            }
        }
        out.push(External { id: id.clone(), layout: layout.map_or(Layout::Shared, |l| l.0) });
    }
    Ok(out)
}
