//! Reading what researchers dump: datasets on disk, .npy logits and score
//! maps, PNG / .npy masks, and the label convention that turns mask values
//! into normal / anomaly / void.
//!
//! Why this room exists: every later room trusts its inputs. All validation
//! of user files (shapes, dtypes, truncation, NaN/inf) happens here, once,
//! and every error names the file, so nothing downstream can compute a
//! number from a silently wrong input.

pub mod checksum;
pub mod dataset;
pub mod h5;
pub mod input;
pub mod mask;
pub mod npy;
pub mod npz;
pub mod preflight;
pub mod resize;
pub mod rgb;

pub use dataset::{Dataset, Split};
pub use mask::read_mask;
pub use npy::{read_logits, read_score_map, read_score_map_key};

/// Logits of one image, class-major `[C, H, W]` as stored on disk.
/// float16 stays float16 until the scorer reads it (halves the bytes moved).
/// The default is empty (`c = h = w = 0`): a buffer for the readers to fill.
#[derive(Debug, Clone, Default)]
pub struct Logits {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: LogitData,
}

#[derive(Debug, Clone)]
pub enum LogitData {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl Default for LogitData {
    fn default() -> Self {
        LogitData::F32(Vec::new())
    }
}

impl Logits {
    pub fn pixels(&self) -> usize {
        self.h * self.w
    }

    /// Logit of class `c` at pixel `p`, widened to f64.
    #[inline]
    pub fn get(&self, c: usize, p: usize) -> f64 {
        let i = c * self.pixels() + p;
        match &self.data {
            LogitData::F32(v) => v[i] as f64,
            LogitData::F16(v) => v[i].to_f64(),
        }
    }

    /// Copy pixel `p`'s logits into `z` (length C).
    #[inline]
    pub fn pixel(&self, p: usize, z: &mut [f64]) {
        let n = self.pixels();
        match &self.data {
            LogitData::F32(v) => {
                for (c, zc) in z.iter_mut().enumerate() {
                    *zc = v[c * n + p] as f64;
                }
            }
            LogitData::F16(v) => {
                for (c, zc) in z.iter_mut().enumerate() {
                    *zc = v[c * n + p].to_f64();
                }
            }
        }
    }

    /// Reinterpret logits read as `[H, W, C]` (channel-last) — i.e. this
    /// struct's `(c, h, w)` hold `(H, W, C)` — as class-major `[C, H, W]`.
    pub fn from_hwc(self) -> Logits {
        let (hh, ww, cc) = (self.c, self.h, self.w);
        fn tr<T: Copy + Default + Send + Sync>(v: &[T], hh: usize, ww: usize, cc: usize) -> Vec<T> {
            use rayon::prelude::*;
            let n = hh * ww;
            let mut out = vec![T::default(); v.len()];
            out.par_chunks_mut(n).enumerate().for_each(|(c, plane)| {
                for (p, o) in plane.iter_mut().enumerate() {
                    *o = v[p * cc + c];
                }
            });
            out
        }
        let data = match &self.data {
            LogitData::F32(v) => LogitData::F32(tr(v, hh, ww, cc)),
            LogitData::F16(v) => LogitData::F16(tr(v, hh, ww, cc)),
        };
        Logits { c: cc, h: hh, w: ww, data }
    }

    pub fn dtype(&self) -> &'static str {
        match self.data {
            LogitData::F32(_) => "float32",
            LogitData::F16(_) => "float16",
        }
    }
}

/// A decoded mask: raw label values, row-major `[H, W]`. 16-bit PNGs keep
/// their values, hence u16.
#[derive(Debug, Clone)]
pub struct Mask {
    pub h: usize,
    pub w: usize,
    pub values: Vec<u16>,
}

/// Per-pixel evaluation label after applying the [`LabelMap`].
///
/// `NORMAL` (0) = in-distribution, `VOID` (255) = ignored, anything in
/// `1..=254` = anomaly, the number being 1 + the index of the mask value in
/// the `anomaly` list (the anomaly *type*, for the failure-mode breakdown).
pub mod label {
    pub const NORMAL: u8 = 0;
    pub const VOID: u8 = 255;
    #[inline]
    pub fn is_anomaly(l: u8) -> bool {
        l != NORMAL && l != VOID
    }
}

/// Which mask values are anomalies and which are void; every other value is
/// in-distribution (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    pub anomaly: Vec<u16>,
    pub ignore: Vec<u16>,
}

impl LabelMap {
    pub fn new(anomaly: Vec<u16>, ignore: Vec<u16>) -> anyhow::Result<Self> {
        anyhow::ensure!(!anomaly.is_empty(), "`anomaly` must list at least one label value");
        anyhow::ensure!(anomaly.len() <= 254, "at most 254 anomaly label values are supported");
        if let Some(v) = anomaly.iter().find(|v| ignore.contains(v)) {
            anyhow::bail!("label value {v} is listed both in `anomaly` and in `ignore`");
        }
        Ok(LabelMap { anomaly, ignore })
    }

    /// Reject mask values above 255 that neither list mentions. Values in
    /// 0..=255 that are not listed are in-distribution (SPEC §3), but a
    /// larger one almost always means a wrongly exported mask (a 16-bit PNG
    /// scaled ×257, so void 255 became 65535; an instance-id map), and
    /// counting it in-distribution would silently change the pixels
    /// evaluated. List such a value in `anomaly` or `ignore` to accept it.
    pub fn check(&self, mask: &Mask, path: &std::path::Path) -> anyhow::Result<()> {
        if mask.values.iter().all(|&v| v <= 255) {
            return Ok(());
        }
        let listed = |v: &u16| self.anomaly.contains(v) || self.ignore.contains(v);
        if let Some(i) = mask.values.iter().position(|v| *v > 255 && !listed(v)) {
            anyhow::bail!(
                "{}: mask value {} at y {}, x {} is above 255 and not listed in `anomaly` or `ignore` (a 16-bit export of 8-bit labels?); list it to accept it",
                path.display(),
                mask.values[i],
                i / mask.w,
                i % mask.w
            );
        }
        Ok(())
    }

    /// Map raw mask values to [`label`] codes.
    pub fn apply(&self, mask: &Mask) -> Vec<u8> {
        let mut lut = [label::NORMAL; 65536];
        for &v in &self.ignore {
            lut[v as usize] = label::VOID;
        }
        for (i, &v) in self.anomaly.iter().enumerate() {
            lut[v as usize] = (i + 1) as u8;
        }
        mask.values.iter().map(|&v| lut[v as usize]).collect()
    }
}
