//! Deterministic synthetic StreetHazards-like dataset (`bench synth`, the
//! demo sweep, scale benchmarks).
//!
//! Every image gets a random street layout (sky / building / road with a
//! perspective trapezoid and sidewalks, plus rectangles of other classes),
//! 1–3 elliptical anomaly blobs in `val`/`test` (none in `calibration`, none
//! in every 4th image), a
//! 2-px void border and sometimes a void region. Each model's logits put a
//! high mean on the true class with Gaussian-like noise on every class,
//! lose confidence near region boundaries and in a few "hard" patches, and
//! are flatter (lower max, higher entropy) on anomalies, so anomaly scores
//! overlap with normal ones (max-logit AUROC ≈ 0.85–0.97) and models of
//! different `quality` differ clearly.
//!
//! With [`SynthSpec::photos`] each image also gets an RGB "photo"
//! (`<split>/images/<id>.png`, the first tile of the failure-mode panels):
//! the layout in fixed class colours, the anomaly objects in colours no
//! class uses, a vertical shading and per-pixel noise; a drifted copy's
//! photo is test's, darkened by the same per-image factor as its logits
//! ([`Layout::photo`]). Why: a reader of a panel sees the scene and the
//! object that was missed, not only masks.
//!
//! Determinism: every image (and every model of an image) has its own
//! `ChaCha8Rng` seeded from `(seed, split, index, model)`, and all
//! arithmetic is IEEE basic operations (+ − × ÷ √) only — no libm
//! transcendental functions, whose last bits may differ between platforms.
//! Normal deviates are therefore not Box–Muller but a smoothed binomial:
//! `(popcount(24 random bits) − 12 + U(−½, ½)) / √(6 + 1/12)`, which has
//! mean 0, variance 1 and excess kurtosis ≈ −0.08 (tails end at ≈ ±5.1σ).
//! Output bytes are identical on every run, thread count and machine.

use crate::data::mask::write_mask_png;
use crate::data::npy::{write_npy_f16, write_npy_f32};
use anyhow::{Result, anyhow, bail};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    pub seed: u64,
    pub classes: usize,
    pub height: usize,
    pub width: usize,
    /// `(split name, number of images)`; images are `img_0000`, `img_0001`, …
    pub splits: Vec<(String, usize)>,
    pub models: Vec<SynthModel>,
    /// Anomaly blobs get mask values `1..=anomaly_types`.
    pub anomaly_types: u8,
    /// Drifted copies of `test`: `(name, logit scale)` writes split
    /// `test@<name>` with test's masks and each image's logits multiplied
    /// by the scale times a per-image factor in [0.9, 1.1] (< 1: a model
    /// less sure of itself, as under a lighting change it was not trained
    /// on), so normal scores rise and the deployed thresholds reject more.
    pub drifted: Vec<(String, f32)>,
    /// Write `<split>/images/<id>.png` (an RGB photo of the scene) too.
    pub photos: bool,
}

/// One synthetic segmentation model.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthModel {
    /// Folder name under `logits/`.
    pub id: String,
    /// Store logits as float16 (else float32).
    pub f16: bool,
    /// 1.0 = a good model; lower = less confident and more confused by
    /// anomalies. Must be > 0.
    pub quality: f64,
}

impl SynthSpec {
    /// The demo dataset: seed 7, 13 classes, 96×128, calibration 4 / val 6 /
    /// test 10 images, `deeplab_r50` (f32, better) and `segformer_b5` (f16,
    /// weaker), one anomaly type.
    pub fn demo() -> SynthSpec {
        SynthSpec {
            seed: 7,
            classes: 13,
            height: 96,
            width: 128,
            splits: vec![("calibration".into(), 4), ("val".into(), 6), ("test".into(), 10)],
            models: vec![
                SynthModel {
                    id: "deeplab_r50".into(),
                    f16: false,
                    quality: 1.0,
                },
                SynthModel {
                    id: "segformer_b5".into(),
                    f16: true,
                    quality: 0.6,
                },
            ],
            anomaly_types: 1,
            drifted: vec![("lighting".into(), 0.85)],
            photos: true,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(2..=250).contains(&self.classes) {
            bail!("synth: classes must be in 2..=250, got {}", self.classes);
        }
        if self.height < 8 || self.width < 8 {
            bail!(
                "synth: image size must be at least 8x8, got {}x{}",
                self.height,
                self.width
            );
        }
        if self.height > 1 << 15 || self.width > 1 << 15 {
            bail!(
                "synth: image size at most 32768x32768, got {}x{}",
                self.height,
                self.width
            );
        }
        if self.anomaly_types == 0 || self.anomaly_types == 255 {
            bail!("synth: anomaly_types must be in 1..=254, got {}", self.anomaly_types);
        }
        let valid_name =
            |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\']) && !s.starts_with('.');
        let mut names: Vec<&str> = Vec::new();
        for (s, _) in &self.splits {
            if !valid_name(s) || names.contains(&s.as_str()) {
                bail!("synth: invalid or duplicate split name {s:?}");
            }
            names.push(s);
        }
        match self.splits.iter().find(|(s, _)| s == "test") {
            Some((_, n)) if *n > 0 => {}
            _ => bail!("synth: a non-empty `test` split is required"),
        }
        if let Some((s, _)) = self.splits.iter().find(|(_, n)| *n == 0) {
            bail!("synth: split `{s}` has no images");
        }
        if self.splits.iter().any(|(_, n)| *n > 1_000_000) {
            bail!("synth: at most 1000000 images per split");
        }
        for (d, scale) in &self.drifted {
            if crate::data::dataset::drift_name(&format!("test@{d}")).is_none() || !(scale.is_finite() && *scale > 0.0) {
                bail!("synth: invalid drifted split {d:?} (scale {scale})");
            }
        }
        if self.models.is_empty() {
            bail!("synth: at least one model is required");
        }
        let mut ids: Vec<&str> = Vec::new();
        for m in &self.models {
            if !valid_name(&m.id) || ids.contains(&m.id.as_str()) {
                bail!("synth: invalid or duplicate model id {:?}", m.id);
            }
            if !(m.quality.is_finite() && m.quality > 0.0 && m.quality <= 10.0) {
                bail!("synth: model `{}`: quality must be in (0, 10], got {}", m.id, m.quality);
            }
            ids.push(&m.id);
        }
        Ok(())
    }
}

/// Generate the dataset into `root` (which must not exist): everything is
/// written into the sibling `<root>.tmp-<pid>` and renamed into place at the
/// end, so `root` either appears complete or not at all.
pub fn generate(root: &Path, spec: &SynthSpec) -> Result<()> {
    spec.validate()?;
    if root.exists() {
        bail!("{}: already exists; refusing to overwrite it", root.display());
    }
    let name = root
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{}: not a usable dataset folder name", root.display()))?;
    let tmp = root.with_file_name(format!("{name}.tmp-{}", std::process::id()));
    if let Some(parent) = root.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| anyhow!("{}: cannot create directory: {e}", parent.display()))?;
    }
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| anyhow!("{}: cannot remove stale temp dir: {e}", tmp.display()))?;
    }
    let res = generate_into(&tmp, spec).and_then(|()| {
        std::fs::rename(&tmp, root)
            .map_err(|e| anyhow!("{}: cannot move {} into place: {e}", root.display(), tmp.display()))
    });
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    res
}

fn generate_into(dir: &Path, spec: &SynthSpec) -> Result<()> {
    let mkdir =
        |p: &PathBuf| std::fs::create_dir_all(p).map_err(|e| anyhow!("{}: cannot create directory: {e}", p.display()));
    // (folder, split whose images it holds, logit scale)
    let test_n = spec.splits.iter().find(|s| s.0 == "test").map_or(0, |s| s.1);
    let mut folders: Vec<(String, &str, usize, Option<f32>)> = spec.splits.iter().map(|(s, n)| (s.clone(), s.as_str(), *n, None)).collect();
    folders.extend(spec.drifted.iter().map(|(d, scale)| (format!("test@{d}"), "test", test_n, Some(*scale))));
    let mut jobs: Vec<(usize, usize)> = Vec::new();
    for (si, (folder, _, n, _)) in folders.iter().enumerate() {
        let sdir = dir.join(folder);
        mkdir(&sdir.join("labels"))?;
        if spec.photos {
            mkdir(&sdir.join("images"))?;
        }
        for m in &spec.models {
            mkdir(&sdir.join("logits").join(&m.id))?;
        }
        jobs.extend((0..*n).map(|i| (si, i)));
    }
    jobs.par_iter().try_for_each(|&(si, i)| {
        let (folder, split, _, scale) = &folders[si];
        let sdir = dir.join(folder);
        let stem = format!("img_{i:04}");
        let layout = Layout::new(spec, split, i);
        write_mask_png(
            &sdir.join("labels").join(format!("{stem}.png")),
            spec.height,
            spec.width,
            &layout.mask,
        )?;
        if spec.photos {
            let k = scale.map(|k| drift_scale(spec.seed, folder, i, k));
            let path = sdir.join("images").join(format!("{stem}.png"));
            let png = crate::report::panel::rgb_png(spec.width as u32, spec.height as u32, &layout.photo(spec, split, i, k));
            std::fs::write(&path, png).map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))?;
        }
        let mut buf = Vec::new();
        let mut h16: Vec<f16> = Vec::new();
        for m in &spec.models {
            layout.logits(spec, split, i, m, &mut buf);
            if let Some(k) = scale {
                let k = drift_scale(spec.seed, folder, i, *k);
                buf.iter_mut().for_each(|x| *x *= k);
            }
            let path = sdir.join("logits").join(&m.id).join(format!("{stem}.npy"));
            let shape = [spec.classes as u64, spec.height as u64, spec.width as u64];
            if m.f16 {
                h16.resize(buf.len(), f16::ZERO);
                h16.convert_from_f32_slice(&buf);
                write_npy_f16(&path, &shape, &h16)?;
            } else {
                write_npy_f32(&path, &shape, &buf)?;
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Randomness

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a of a string.
fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Logit scale of image `index` of a drifted copy: `scale` × U(0.9, 1.1),
/// so the drift differs between images (as lighting does) and moves the
/// pooled ranking too, not only the thresholds. An f32 product only.
fn drift_scale(seed: u64, folder: &str, index: usize, scale: f32) -> f32 {
    let mut rng = rng_for(seed, folder, index, "drift");
    scale * range(&mut rng, 0.9, 1.1) as f32
}

/// An RNG for `(seed, split, index, stream)`.
fn rng_for(seed: u64, split: &str, index: usize, stream: &str) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    let mut h = mix(seed ^ mix(hash_str(split)) ^ mix(mix(index as u64) ^ hash_str(stream)));
    for chunk in s.chunks_exact_mut(8) {
        h = mix(h);
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    ChaCha8Rng::from_seed(s)
}

/// Uniform in [0, 1).
fn unif(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform in [a, b).
fn range(rng: &mut ChaCha8Rng, a: f64, b: f64) -> f64 {
    a + (b - a) * unif(rng)
}

/// Uniform integer in [a, b] (inclusive); slight modulo bias is irrelevant here.
fn int(rng: &mut ChaCha8Rng, a: usize, b: usize) -> usize {
    a + (rng.next_u64() % (b - a + 1) as u64) as usize
}

/// Fill `bits` from the stream, the same words on every endianness.
fn fill_u32(rng: &mut ChaCha8Rng, bits: &mut [u32]) {
    rng.fill_bytes(bytemuck::cast_slice_mut(bits));
    if cfg!(target_endian = "big") {
        for b in bits.iter_mut() {
            *b = u32::from_le(*b);
        }
    }
}

/// 1/√(6 + 1/12): standard deviation of the smoothed binomial.
const GAUSS_SCALE: f32 = 0.405_442_3;

/// Standard normal deviate (approximate; see module docs) from 32 random bits.
#[inline(always)]
fn gauss(bits: u32) -> f32 {
    let pc = (bits & 0x00ff_ffff).count_ones() as f32 - 12.0;
    let frac = (bits >> 24) as f32 * (1.0 / 256.0) + (0.5 / 256.0 - 0.5);
    (pc + frac) * GAUSS_SCALE
}

// ---------------------------------------------------------------------------
// Layout

const VOID: u8 = 255;

/// Photo colours of the classes (`class % 16`): Cityscapes' palette order,
/// so sky / building / road / sidewalk (classes 0–3) look like them.
const PALETTE: [[u8; 3]; 16] = [
    [70, 130, 180],
    [70, 70, 70],
    [128, 64, 128],
    [244, 35, 232],
    [107, 142, 35],
    [0, 0, 142],
    [153, 153, 153],
    [220, 220, 0],
    [220, 20, 60],
    [152, 251, 152],
    [102, 102, 156],
    [190, 153, 153],
    [0, 0, 70],
    [0, 60, 100],
    [250, 170, 30],
    [119, 11, 32],
];

/// Photo colours of the anomaly objects (`(type − 1) % 4`), none a class's.
const ANOMALY: [[u8; 3]; 4] = [[255, 128, 0], [0, 255, 255], [255, 255, 255], [128, 255, 0]];

/// One image's ground truth, shared by all models.
struct Layout {
    h: usize,
    w: usize,
    /// Semantic class per pixel (what a model "sees").
    cls: Vec<u8>,
    /// 0 = none, else 1 + anomaly blob index.
    blob: Vec<u8>,
    /// Class each blob is confused with.
    blob_class: Vec<u8>,
    /// Anomaly type (mask value) of each blob.
    types: Vec<u8>,
    /// Chessboard distance to the nearest region boundary, capped.
    dist: Vec<u8>,
    /// Written mask: 0 normal, 1..=types anomaly, 255 void.
    mask: Vec<u8>,
}

/// Point-in-ellipse test with a rotated frame (`(ux, uy)` unit vector).
struct Ellipse {
    cx: f64,
    cy: f64,
    a: f64,
    b: f64,
    ux: f64,
    uy: f64,
}

impl Ellipse {
    fn contains(&self, x: f64, y: f64) -> bool {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let u = (dx * self.ux + dy * self.uy) / self.a;
        let v = (-dx * self.uy + dy * self.ux) / self.b;
        u * u + v * v <= 1.0
    }
    fn bbox(&self, h: usize, w: usize) -> (usize, usize, usize, usize) {
        let r = self.a.max(self.b) + 1.0;
        let clamp = |v: f64, hi: usize| v.max(0.0).min(hi as f64) as usize;
        (
            clamp(self.cy - r, h),
            clamp(self.cy + r + 1.0, h),
            clamp(self.cx - r, w),
            clamp(self.cx + r + 1.0, w),
        )
    }
}

/// Piecewise-linear random curve over x in [0, w): y = f(x), control points
/// every quarter of the width.
fn wavy(rng: &mut ChaCha8Rng, w: usize, base: f64, amp: f64) -> Vec<f64> {
    let pts: Vec<f64> = (0..5).map(|_| base + range(rng, -amp, amp)).collect();
    (0..w)
        .map(|x| {
            let t = x as f64 / w as f64 * 4.0;
            let k = (t as usize).min(3);
            let f = t - k as f64;
            pts[k] * (1.0 - f) + pts[k + 1] * f
        })
        .collect()
}

impl Layout {
    fn new(spec: &SynthSpec, split: &str, index: usize) -> Layout {
        let (h, w) = (spec.height, spec.width);
        // one RNG stream, drawn in this order: scene, anomalies, void
        let mut rng = rng_for(spec.seed, split, index, "layout");
        let cls = Self::scene(spec, &mut rng);
        let (blob, blob_class, types) = Self::anomalies(spec, split, index, &cls, &mut rng);
        let mask = Self::mask(spec, &blob, &types, &mut rng);
        let dist = boundary_distance(h, w, &cls, &blob);
        Layout { h, w, cls, blob, blob_class, types, dist, mask }
    }

    /// The class map: sky / building / road / sidewalk bands, then
    /// rectangles of the remaining classes.
    fn scene(spec: &SynthSpec, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let (h, w, nc) = (spec.height, spec.width, spec.classes);
        let (hf, wf) = (h as f64, w as f64);
        let class = |k: usize| (k % nc) as u8;
        let mut cls = vec![0u8; h * w];

        // Bands: sky (0) / building (1) / road (2) with sidewalks (3).
        let sky_base = hf * range(rng, 0.22, 0.34);
        let sky_end = wavy(rng, w, sky_base, hf * 0.06);
        let horizon = hf * range(rng, 0.42, 0.52);
        let road_end = wavy(rng, w, horizon, hf * 0.03);
        let cx = wf * range(rng, 0.35, 0.65);
        let top_half = wf * range(rng, 0.04, 0.10);
        let bottom_half = wf * range(rng, 0.35, 0.55);
        for y in 0..h {
            let yf = y as f64 + 0.5;
            let t = ((yf - horizon) / (hf - horizon)).clamp(0.0, 1.0);
            let half = top_half + (bottom_half - top_half) * t;
            for x in 0..w {
                let xf = x as f64 + 0.5;
                let k = if yf < sky_end[x] {
                    0
                } else if yf < road_end[x] {
                    1
                } else if (xf - cx).abs() <= half {
                    2
                } else {
                    3
                };
                cls[y * w + x] = class(k);
            }
        }
        // Objects: rectangles of the remaining classes.
        let n_obj = int(rng, 2, 6);
        for _ in 0..n_obj {
            let k = if nc > 4 {
                int(rng, 4, nc - 1)
            } else {
                int(rng, 0, nc - 1)
            };
            let rh = (hf * range(rng, 0.06, 0.25)).max(2.0) as usize;
            let rw = (wf * range(rng, 0.04, 0.20)).max(2.0) as usize;
            let y0 = int(rng, (h / 4).min(h - rh), h - rh);
            let x0 = int(rng, 0, w - rw);
            for y in y0..y0 + rh {
                cls[y * w + x0..y * w + x0 + rw].fill(class(k));
            }
        }
        cls
    }

    /// Anomalies (not in calibration, and not in every 4th image, so
    /// image-level metrics have normal images): 1–3 ellipses, 1–3 % of the
    /// pixels, as (blob id map, class the model mistakes each for, type).
    fn anomalies(spec: &SynthSpec, split: &str, index: usize, cls: &[u8], rng: &mut ChaCha8Rng) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (h, w) = (spec.height, spec.width);
        let (hf, wf) = (h as f64, w as f64);
        let mut blob = vec![0u8; h * w];
        let mut blob_class = Vec::new();
        let mut types = Vec::new();
        if split != "calibration" && index % 4 != 3 {
            let n = int(rng, 1, 3);
            let frac = range(rng, 0.01, 0.03);
            for b in 0..n {
                let area = frac * hf * wf / n as f64 * range(rng, 0.7, 1.3);
                let ratio = range(rng, 0.5, 2.0);
                let a = (area * ratio / std::f64::consts::PI).sqrt().max(1.0);
                let bb = (area / ratio / std::f64::consts::PI).sqrt().max(1.0);
                let (ux, uy) = loop {
                    let (u, v) = (range(rng, -1.0, 1.0), range(rng, -1.0, 1.0));
                    let r2 = u * u + v * v;
                    if r2 > 0.01 && r2 <= 1.0 {
                        let r = r2.sqrt();
                        break (u / r, v / r);
                    }
                };
                let e = Ellipse {
                    cx: range(rng, 0.1, 0.9) * wf,
                    cy: range(rng, 0.35, 0.9) * hf,
                    a,
                    b: bb,
                    ux,
                    uy,
                };
                let (y0, y1, x0, x1) = e.bbox(h, w);
                for y in y0..y1 {
                    for x in x0..x1 {
                        if e.contains(x as f64 + 0.5, y as f64 + 0.5) {
                            blob[y * w + x] = b as u8 + 1;
                        }
                    }
                }
                // The model mistakes the object for the scene around it.
                let (cyi, cxi) = ((e.cy as usize).min(h - 1), (e.cx as usize).min(w - 1));
                blob_class.push(cls[cyi * w + cxi]);
                types.push(int(rng, 1, spec.anomaly_types as usize) as u8);
            }
        }
        (blob, blob_class, types)
    }

    /// The mask: anomaly types, a void border (2 px) and sometimes a void region.
    fn mask(spec: &SynthSpec, blob: &[u8], types: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
        let (h, w) = (spec.height, spec.width);
        let (hf, wf) = (h as f64, w as f64);
        let mut mask: Vec<u8> = blob
            .iter()
            .map(|&b| if b == 0 { 0 } else { types[b as usize - 1] })
            .collect();
        for y in 0..h {
            for x in 0..w {
                if y < 2 || x < 2 || y + 2 >= h || x + 2 >= w {
                    mask[y * w + x] = VOID;
                }
            }
        }
        if unif(rng) < 0.3 {
            // Ego-vehicle hood at the bottom, or an unlabelled patch.
            let (y0, y1, x0, x1) = if unif(rng) < 0.5 {
                let hh = (hf * range(rng, 0.04, 0.10)) as usize;
                let ww = (wf * range(rng, 0.3, 0.7)) as usize;
                let x0 = int(rng, 0, w - ww);
                (h - hh, h, x0, x0 + ww)
            } else {
                let hh = (hf * range(rng, 0.05, 0.15)).max(1.0) as usize;
                let ww = (wf * range(rng, 0.05, 0.15)).max(1.0) as usize;
                let y0 = int(rng, 0, h - hh);
                let x0 = int(rng, 0, w - ww);
                (y0, y0 + hh, x0, x0 + ww)
            };
            for y in y0..y1 {
                mask[y * w + x0..y * w + x1].fill(VOID);
            }
        }
        mask
    }

    /// The RGB photo (h × w × 3, row-major) of image `index` of `split`:
    /// each pixel its class's colour (`PALETTE`), or its blob's anomaly
    /// type's (`ANOMALY`), times a vertical shading (brighter at the top)
    /// and a per-image exposure in [0.9, 1.1], plus N(0, 6²) noise per
    /// channel from the image's own "photo" stream. `drift` (a drifted
    /// copy: its per-image logit factor k) maps each channel x ∈ [0, 1] to
    /// k·x·(k + (1 − k)·x): darker overall and, for k < 1, a gamma-like
    /// drop of the mid-tones. Basic IEEE operations only (deterministic).
    fn photo(&self, spec: &SynthSpec, split: &str, index: usize, drift: Option<f32>) -> Vec<u8> {
        let (h, w) = (self.h, self.w);
        let mut rng = rng_for(spec.seed, split, index, "photo");
        let exposure = range(&mut rng, 0.9, 1.1);
        let mut bits = vec![0u32; 3 * w];
        let mut out = Vec::with_capacity(h * w * 3);
        for y in 0..h {
            fill_u32(&mut rng, &mut bits);
            let shade = exposure * (1.15 - 0.3 * (y as f64 + 0.5) / h as f64);
            for x in 0..w {
                let p = y * w + x;
                let rgb = match self.blob[p] {
                    0 => PALETTE[self.cls[p] as usize % PALETTE.len()],
                    b => ANOMALY[(self.types[b as usize - 1] as usize - 1) % ANOMALY.len()],
                };
                for (c, &v) in rgb.iter().enumerate() {
                    let mut x01 = (v as f64 * shade + 6.0 * gauss(bits[3 * x + c]) as f64) / 255.0;
                    if let Some(k) = drift {
                        let k = k as f64;
                        x01 = k * x01 * (k + (1.0 - k) * x01.clamp(0.0, 1.0));
                    }
                    out.push((x01.clamp(0.0, 1.0) * 255.0 + 0.5) as u8);
                }
            }
        }
        out
    }

    /// Class-major `[C, H, W]` f32 logits of model `m` into `out`.
    fn logits(&self, spec: &SynthSpec, split: &str, index: usize, m: &SynthModel, out: &mut Vec<f32>) {
        let (h, w, nc) = (self.h, self.w, spec.classes);
        let hw = h * w;
        out.clear();
        out.resize(nc * hw, 0.0);
        let mut rng = rng_for(spec.seed, split, index, &format!("model/{}", m.id));
        let q = m.quality.min(2.0);
        let weak = (1.0 - q).max(0.0); // 0 for a good model, 0.4 for quality 0.6

        // Per-image difficulty and "hard" normal patches (shadows, glare):
        // confidence drops there, giving false positives.
        let img = 1.0 + range(&mut rng, -0.12, 0.12) * (1.0 + weak);
        let mut hard = Vec::new();
        for _ in 0..2 {
            if unif(&mut rng) < 0.15 + 0.3 * weak {
                let hh = (h as f64 * range(&mut rng, 0.05, 0.18)).max(1.0) as usize;
                let ww = (w as f64 * range(&mut rng, 0.05, 0.18)).max(1.0) as usize;
                let y0 = int(&mut rng, 0, h - hh);
                let x0 = int(&mut rng, 0, w - ww);
                hard.push((y0, y0 + hh, x0, x0 + ww, range(&mut rng, 0.35, 0.6) as f32));
            }
        }

        // Normal pixels: true class ~ N(mu_n * conf, s_n), others ~ N(0, 1).
        let mu_n = ((3.0 + 4.0 * q) * img) as f32;
        // Per-class confidence of this model: frequent "stuff" classes
        // (0..4) are predicted more confidently than small "things". This is
        // what SML's per-class standardisation corrects.
        let gain: Vec<f32> = {
            let mut crng = rng_for(spec.seed, "classes", 0, &m.id);
            (0..nc)
                .map(|k| if k < 4 { range(&mut crng, 0.95, 1.15) } else { range(&mut crng, 0.6, 0.95) } as f32)
                .collect()
        };
        let s_n = (1.0 + 0.8 * weak) as f32;
        // Anomalies: flatter; the confused class is only mildly elevated.
        let mu_a = (mu_n as f64 * (0.30 + 0.15 * weak)) as f32;
        let s_a = (1.1 + 0.5 * weak) as f32;
        let s_other_a = 1.15f32;
        // Confidence by distance to a boundary (0 = on it).
        let conf = [0.45f32, 0.70, 0.85, 0.95, 1.0];

        let mut bits = vec![0u32; nc * w];
        let (mut top, mut mu, mut s_top, mut s_oth) = (vec![0u8; w], vec![0f32; w], vec![0f32; w], vec![0f32; w]);
        for y in 0..h {
            fill_u32(&mut rng, &mut bits);
            // Per-pixel parameters of this row.
            for x in 0..w {
                let p = y * w + x;
                let g = conf[(self.dist[p] as usize).min(4)];
                if self.blob[p] != 0 {
                    // Edges of a blob look half like the surrounding scene.
                    top[x] = self.blob_class[self.blob[p] as usize - 1];
                    mu[x] = mu_a + (0.5 * mu_n - mu_a) * (1.0 - g);
                    s_top[x] = s_a;
                    s_oth[x] = s_other_a;
                } else {
                    let hardness = hard
                        .iter()
                        .filter(|r| y >= r.0 && y < r.1 && x >= r.2 && x < r.3)
                        .fold(1.0f32, |a, r| a * r.4);
                    top[x] = self.cls[p];
                    mu[x] = mu_n * gain[self.cls[p] as usize] * g * hardness;
                    s_top[x] = s_n;
                    s_oth[x] = 1.0;
                }
            }
            // Every class: noise; then the top class: mean + its noise.
            let row = y * w;
            for c in 0..nc {
                let dst = &mut out[c * hw + row..c * hw + row + w];
                let src = &bits[c * w..c * w + w];
                for ((d, &b), &s) in dst.iter_mut().zip(src).zip(&s_oth) {
                    *d = s * gauss(b);
                }
            }
            for x in 0..w {
                let c = top[x] as usize;
                out[c * hw + row + x] = mu[x] + s_top[x] * gauss(bits[c * w + x]);
            }
        }
    }
}

/// Chessboard distance of every pixel to the nearest pixel whose region
/// (class, or anomaly blob) differs from a 4-neighbour's, capped at 250.
fn boundary_distance(h: usize, w: usize, cls: &[u8], blob: &[u8]) -> Vec<u8> {
    let region = |p: usize| {
        if blob[p] != 0 {
            1000 + blob[p] as u32
        } else {
            cls[p] as u32
        }
    };
    let mut d = vec![250u8; h * w];
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            let r = region(p);
            let edge = (x > 0 && region(p - 1) != r)
                || (x + 1 < w && region(p + 1) != r)
                || (y > 0 && region(p - w) != r)
                || (y + 1 < h && region(p + w) != r);
            if edge {
                d[p] = 0;
            }
        }
    }
    // Two-pass chamfer (all 8 neighbours cost 1).
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            let mut v = d[p];
            if x > 0 {
                v = v.min(d[p - 1].saturating_add(1));
            }
            if y > 0 {
                v = v.min(d[p - w].saturating_add(1));
                if x > 0 {
                    v = v.min(d[p - w - 1].saturating_add(1));
                }
                if x + 1 < w {
                    v = v.min(d[p - w + 1].saturating_add(1));
                }
            }
            d[p] = v;
        }
    }
    for y in (0..h).rev() {
        for x in (0..w).rev() {
            let p = y * w + x;
            let mut v = d[p];
            if x + 1 < w {
                v = v.min(d[p + 1].saturating_add(1));
            }
            if y + 1 < h {
                v = v.min(d[p + w].saturating_add(1));
                if x + 1 < w {
                    v = v.min(d[p + w + 1].saturating_add(1));
                }
                if x > 0 {
                    v = v.min(d[p + w - 1].saturating_add(1));
                }
            }
            d[p] = v;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthSpec {
        SynthSpec { height: 24, width: 32, splits: vec![("val".into(), 2), ("test".into(), 4)], models: vec![SynthModel { id: "m".into(), f16: false, quality: 1.0 }], ..SynthSpec::demo() }
    }

    /// Every file under `dir`, relative path → bytes, sorted.
    fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = vec![];
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() { stack.push(p) } else { out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap())) }
            }
        }
        out.sort();
        out
    }

    fn photo(dir: &Path, split: &str, i: usize, spec: &SynthSpec) -> Vec<u8> {
        crate::data::rgb::read_rgb(&dir.join(split).join("images").join(format!("img_{i:04}.png")), spec.height, spec.width).unwrap()
    }

    #[test]
    fn photos_are_deterministic_follow_the_scene_and_darken_under_drift() {
        let t = tempfile::tempdir().unwrap();
        let spec = small();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        generate(&a, &spec).unwrap();
        generate(&b, &spec).unwrap();
        let fa = files(&a);
        assert_eq!(fa, files(&b), "two runs wrote different bytes");
        for split in ["val", "test", "test@lighting"] {
            assert_eq!(fa.iter().filter(|(p, _)| p.starts_with(format!("{split}/images"))).count(), if split == "val" { 2 } else { 4 }, "{split}");
        }
        let (mut anomaly, mut sum_test, mut sum_drift) = (0usize, 0u64, 0u64);
        for i in 0..4 {
            let lay = Layout::new(&spec, "test", i);
            let (p, d) = (photo(&a, "test", i, &spec), photo(&a, "test@lighting", i, &spec));
            for (q, px) in p.chunks_exact(3).enumerate() {
                // an anomaly pixel is near its type's colour (shading ±15 %, noise 6 per channel)
                if lay.blob[q] != 0 {
                    anomaly += 1;
                    let want = ANOMALY[lay.types[lay.blob[q] as usize - 1] as usize - 1];
                    assert!(px.iter().zip(want).all(|(&g, w)| (g as f64 - w as f64).abs() <= 0.2 * w as f64 + 40.0), "pixel {q}: {px:?} vs {want:?}");
                }
            }
            sum_test += p.iter().map(|&v| v as u64).sum::<u64>();
            sum_drift += d.iter().map(|&v| v as u64).sum::<u64>();
        }
        assert!(anomaly > 0, "the test images hold anomalies");
        assert!((sum_drift as f64) < 0.85 * sum_test as f64, "the drifted photos are darker: {sum_drift} vs {sum_test}");
        // off: no images folder anywhere, the other files unchanged
        let c = t.path().join("c");
        generate(&c, &SynthSpec { photos: false, ..spec }).unwrap();
        let fc = files(&c);
        assert!(fc.iter().all(|(p, _)| !p.components().any(|x| x.as_os_str() == "images")));
        assert_eq!(fc, fa.into_iter().filter(|(p, _)| !p.components().any(|x| x.as_os_str() == "images")).collect::<Vec<_>>());
    }
}
