//! The pre-flight check: every input's header before any scoring.
//!
//! Why: a float64 file as the last of 1,500 test images used to surface
//! minutes into a sweep, and only the first of several problems was named.
//! Headers (npy dict, PNG IHDR) are a few hundred bytes, so checking all of
//! them — dtype, rank, truncation, the logits' H×W against the mask's, a
//! channel-last layout mistaken for class-major — takes milliseconds, and
//! every problem found (up to [`MAX_PROBLEMS`]) is reported at once.
//! NaN/±inf need the data and are still caught when an image is read.
//!
//! [`label_values`] decodes the masks once more (cheap next to the logits)
//! for the label-convention warnings of [`label_warnings`]: a forgotten
//! `preset` otherwise gives plausible-looking but wrong numbers.

use super::npy::{ArrayInfo, float_header};
use super::{LabelMap, Split, mask};
use anyhow::{Result, bail};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Problems listed in one error before the rest are only counted.
pub const MAX_PROBLEMS: usize = 20;

/// Collects the problems of a pre-flight check.
#[derive(Default)]
pub struct Preflight {
    problems: Vec<String>,
    /// The first logits file whose class count is implausible under
    /// `resize`, and how many such files there are (one warning for all).
    implausible: Option<(String, usize)>,
}

/// What a logits file must match.
pub struct LogitsExpect<'a> {
    pub npz_key: Option<&'a str>,
    /// Stored `[H,W,C]` (`layout = "hwc"`).
    pub hwc: bool,
    /// `resize` is set: H×W may differ from the mask.
    pub resize: bool,
}

impl Preflight {
    fn push(&mut self, e: anyhow::Error) {
        self.problems.push(format!("{e:#}"));
    }

    /// Header sizes of a split's masks, in stem order (`None`: unreadable,
    /// recorded as a problem).
    pub fn masks(&mut self, split: &Split) -> Vec<Option<(usize, usize)>> {
        let sizes: Vec<Result<(usize, usize)>> = split.labels.par_iter().map(|p| mask::mask_size(p)).collect();
        sizes.into_iter().map(|r| r.map_err(|e| self.push(e)).ok()).collect()
    }

    /// Check one logits file against its mask's size; returns the class count.
    pub fn logits(&mut self, path: &Path, mask: Option<(usize, usize)>, mask_path: &Path, ex: &LogitsExpect) -> Option<usize> {
        let info = match float_header(path, ex.npz_key, 3, "[C, H, W] of logits") {
            Ok(i) => i,
            Err(e) => {
                self.push(e);
                return None;
            }
        };
        let s = &info.shape;
        let (c, h, w) = if ex.hwc { (s[2], s[0], s[1]) } else { (s[0], s[1], s[2]) };
        let Some((mh, mw)) = mask else { return Some(c) };
        let hwc_would_match = !ex.hwc && (s[0], s[1]) == (mh, mw);
        if (h, w) != (mh, mw) && !ex.resize {
            let hint = if hwc_would_match {
                format!("the array looks channel-last [H,W,C] with {} classes: set `layout = \"hwc\"`", s[2])
            } else {
                "set `resize = \"nearest\"` or `\"bilinear\"` to upsample".to_string()
            };
            self.push(anyhow::anyhow!(
                "{}: logits are {h}×{w} but the mask {} is {mh}×{mw} ({hint})",
                path.display(),
                mask_path.display()
            ));
            return None;
        }
        if ex.resize && !ex.hwc && (c > mh.min(mw) || c > MAX_PLAUSIBLE_CLASSES || hwc_would_match) {
            let first = self.implausible.take().map_or_else(
                || (format!("{}: {c} classes of {h}×{w} logits upsampled to the mask's {mh}×{mw} — implausible as [C,H,W]; if the files are channel-last [H,W,C], set `layout = \"hwc\"`", path.display()), 0),
                |x| x,
            );
            self.implausible = Some((first.0, first.1 + 1));
        }
        Some(c)
    }

    /// Check one `[H,W]` score map (an outside method's) against its mask.
    pub fn score_map(&mut self, path: &Path, key: Option<&str>, mask: Option<(usize, usize)>, mask_path: &Path, resize: bool) {
        match float_header(path, key, 2, "[H, W] of scores") {
            Err(e) => self.push(e),
            Ok(ArrayInfo { shape, .. }) => {
                if let Some((mh, mw)) = mask
                    && (shape[0], shape[1]) != (mh, mw)
                    && !resize
                {
                    self.push(anyhow::anyhow!(
                        "{}: score map is {}×{} but the mask {} is {mh}×{mw} (set `resize = \"nearest\"` or `\"bilinear\"` to upsample)",
                        path.display(),
                        shape[0],
                        shape[1],
                        mask_path.display()
                    ));
                }
            }
        }
    }

    /// Record a problem found by the caller (a missing file).
    pub fn problem(&mut self, e: anyhow::Error) {
        self.push(e);
    }

    /// Ok when nothing was found; else one error: the only problem as is,
    /// or a count followed by one indented line per problem.
    pub fn finish(self) -> Result<Vec<String>> {
        match self.problems.len() {
            0 => Ok(self.implausible.into_iter().map(|(w, n)| if n > 1 { format!("{w} ({n} files)") } else { w }).collect()),
            1 => bail!("{}", self.problems[0]),
            n => {
                // the first line names the first problem; the others follow, indented
                let mut msg = format!("{} (and {} more of {n} input problems found before any scoring, listed below; nothing was written)", self.problems[0], n - 1);
                for p in self.problems.iter().skip(1).take(MAX_PROBLEMS - 1) {
                    msg += &format!("\n  {p}");
                }
                if n > MAX_PROBLEMS {
                    msg += &format!("\n  ... and {} more", n - MAX_PROBLEMS);
                }
                bail!("{msg}")
            }
        }
    }
}

/// More classes than any public segmentation label set (ADE20K-full has
/// 847): beyond it `[C,H,W]` is almost certainly a misread layout.
pub const MAX_PLAUSIBLE_CLASSES: usize = 1000;

/// Pixel count per raw mask value over a split (masks decoded in
/// parallel); applies the label map's checks on the way.
pub fn label_values(split: &Split, lm: &LabelMap) -> Result<BTreeMap<u16, u64>> {
    let hists: Vec<Result<BTreeMap<u16, u64>>> = split
        .labels
        .par_iter()
        .map(|p| {
            let m = mask::read_mask(p)?;
            lm.check(&m, p)?;
            let mut h = vec![0u64; 65536];
            for &v in &m.values {
                h[v as usize] += 1;
            }
            Ok(h.iter().enumerate().filter(|x| *x.1 > 0).map(|(v, &n)| (v as u16, n)).collect())
        })
        .collect();
    let mut total = BTreeMap::new();
    for h in hists {
        for (v, n) in h? {
            *total.entry(v).or_insert(0) += n;
        }
    }
    Ok(total)
}

/// Warnings about a split's label values under `lm` for a model with
/// `classes` classes: values that are neither anomaly, void nor a class
/// index (< C), and listed anomaly values that never occur. `presets`
/// (name, anomaly, ignore) are searched for one that would fit.
pub fn label_warnings(split: &str, hist: &BTreeMap<u16, u64>, lm: &LabelMap, classes: Option<usize>, presets: &[(&str, &[u16], &[u16])]) -> Vec<String> {
    let mut out = vec![];
    let fits = |anom: &[u16], ign: &[u16]| {
        anom.iter().all(|a| hist.contains_key(a)) && hist.keys().all(|v| anom.contains(v) || ign.contains(v) || classes.is_none_or(|c| (*v as usize) < c))
    };
    let suggestion = || {
        presets
            .iter()
            .find(|p| (p.1 != lm.anomaly.as_slice() || p.2 != lm.ignore.as_slice()) && fits(p.1, p.2))
            .map(|p| format!("; these masks fit `preset = \"{}\"` (anomaly {:?}, void {:?})", p.0, p.1, p.2))
            .unwrap_or_default()
    };
    if let Some(c) = classes {
        let odd: Vec<u16> = hist.keys().copied().filter(|v| !lm.anomaly.contains(v) && !lm.ignore.contains(v) && (*v as usize) >= c).collect();
        if !odd.is_empty() {
            out.push(format!(
                "split `{split}`: mask values {odd:?} are neither anomaly ({:?}), void ({:?}) nor a class index of the {c}-class model, and are counted as in-distribution; is the label convention right?{}",
                lm.anomaly,
                lm.ignore,
                suggestion()
            ));
        }
    }
    let missing: Vec<u16> = lm.anomaly.iter().copied().filter(|a| !hist.contains_key(a)).collect();
    if !missing.is_empty() && missing.len() < lm.anomaly.len() {
        out.push(format!("split `{split}`: anomaly value(s) {missing:?} never occur in its masks"));
    } else if !missing.is_empty() {
        out.push(format!("split `{split}`: no anomaly value {:?} occurs in its masks (no anomaly pixels){}", lm.anomaly, suggestion()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESETS: &[(&str, &[u16], &[u16])] = &[("streethazards", &[13], &[]), ("smiyc", &[1], &[255])];

    #[test]
    fn streethazards_masks_with_default_labels_are_flagged_and_the_preset_named() {
        let hist: BTreeMap<u16, u64> = (0..=13).map(|v| (v, 10)).collect();
        let lm = LabelMap::new(vec![1], vec![255]).unwrap();
        let w = label_warnings("test", &hist, &lm, Some(13), PRESETS);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("[13]") && w[0].contains("preset = \"streethazards\""), "{w:?}");
        let lm = LabelMap::new(vec![13], vec![]).unwrap();
        assert!(label_warnings("test", &hist, &lm, Some(13), PRESETS).is_empty());
        // a listed anomaly value that never occurs
        let lm = LabelMap::new(vec![13, 14], vec![]).unwrap();
        let w = label_warnings("val", &hist, &lm, Some(13), PRESETS);
        assert!(w.len() == 1 && w[0].contains("[14] never occur"), "{w:?}");
    }
}
