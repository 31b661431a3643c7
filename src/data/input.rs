//! Reading one image: its mask and logits (and HEAT's per-pixel features),
//! checked to describe the same pixels, with a reader thread decoding the
//! next image while the current one is scored.
//!
//! Why in `data`: every pass of a sweep (calibration, val, test, both
//! metric passes) reads images the same way; the wiring above only says
//! which images and what to do with them.

use super::checksum::Checksums;
use super::npy::{PendingDigest, read_logits_hashed, read_logits_into};
use super::resize::{Resize, resize_logits};
use super::{LabelMap, Logits, Split, read_logits, read_mask};
use anyhow::{Context, Result, bail};
use std::ops::Range;

/// How input files are read: label convention, resizing, layout, the
/// `.npz` array, and the checksums of everything read.
pub struct Reader {
    pub labels: LabelMap,
    pub resize: Resize,
    /// Logits stored `[H, W, C]`.
    pub hwc: bool,
    /// Array of each logits `.npz` to read (`None`: the only one).
    pub npz_key: Option<String>,
    pub sums: Checksums,
    /// Whether any built-in method needs the logits. A sweep of external
    /// score maps only (`methods = []`) never opens a logits file.
    pub logits: bool,
    /// Logit buffers between images and between passes (at most
    /// [`SPARE`]): a fresh 160 MB buffer per pass costs its page faults
    /// again (a tenth of a Cityscapes-sized sweep), a reused one does not.
    pub spare: std::sync::Mutex<Vec<Logits>>,
}

/// Logit buffers [`Reader::spare`] keeps: one being decoded, one being
/// scored.
const SPARE: usize = 2;

impl Reader {
    fn take_spare(&self) -> Option<Logits> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give_spare(&self, lg: Logits) {
        let mut s = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() < SPARE {
            s.push(lg);
        }
    }
}

/// One image as read: its logits, its label codes, and, when the logits
/// file is new to the run and its SHA-256 is still to be taken from these
/// logits, the file and its [`PendingDigest`].
pub(crate) type Loaded = (Logits, Vec<u8>, Option<(std::path::PathBuf, PendingDigest)>);

/// Read one image's mask and logits (into `buf`'s allocation when given) and
/// check they describe the same pixels; the logits file's SHA-256 is left to
/// the caller (see [`Loaded`]) when it can be taken from the logits returned.
fn load(split: &Split, model: &str, i: usize, inp: &Reader, buf: Option<Logits>) -> Result<Loaded> {
    let (lm, sums, rs) = (&inp.labels, &inp.sums, inp.resize);
    let mask = read_mask(&split.labels[i])?;
    lm.check(&mask, &split.labels[i])?;
    if !inp.logits {
        // external maps only: an empty stand-in of the mask's size
        sums.add(&split.labels[i])?;
        let none = Logits { c: 0, h: mask.h, w: mask.w, data: super::LogitData::F32(vec![]) };
        return Ok((none, lm.apply(&mask), None));
    }
    let lp = split.logits_path(model, &split.stems[i])?;
    sums.add(&split.labels[i])?;
    let mut lg = buf.unwrap_or_default();
    let mut pending = None;
    if !sums.contains(&lp) {
        // hashed from the bytes just read when it can be (the common
        // case): one read of the file, not two
        match read_logits_hashed(&lp, inp.npz_key.as_deref(), &mut lg)? {
            Some(d) => pending = Some(d),
            None => sums.add(&lp)?,
        }
    } else {
        read_logits_into(&lp, inp.npz_key.as_deref(), &mut lg)?;
    }
    // the digest reads the logits as stored: taken now if they are
    // rearranged or resampled below
    if (inp.hwc || (lg.h, lg.w) != (mask.h, mask.w)) && let Some(d) = pending.take() {
        sums.insert(&lp, d.finish(&lg));
    }
    let pending = pending.map(|d| (lp.clone(), d));
    let lg = if inp.hwc { lg.from_hwc() } else { lg };
    if (lg.h, lg.w) != (mask.h, mask.w) && rs != Resize::None {
        let up = resize_logits(&lg, mask.h, mask.w, rs).with_context(|| lp.display().to_string())?;
        return Ok((up, lm.apply(&mask), None));
    }
    if (lg.h, lg.w) != (mask.h, mask.w) {
        bail!(
            "{}: logits are {}×{} but the mask {} is {}×{} (set `resize = \"nearest\"` or `\"bilinear\"` to upsample)",
            lp.display(),
            lg.h,
            lg.w,
            split.labels[i].display(),
            mask.h,
            mask.w
        );
    }
    Ok((lg, lm.apply(&mask), pending))
}

/// Visit every image of a split in order, decoding the next one on a reader
/// thread while `f` works on the current one. Logit buffers travel back to
/// the reader for reuse (fresh allocations cost more than the decoding),
/// through [`Reader::spare`], which keeps them for the next pass too.
pub(crate) fn for_each_image(
    split: &Split,
    model: &str,
    inp: &Reader,
    images: Range<usize>,
    mut f: impl FnMut(usize, &Logits, Vec<u8>) -> Result<()>,
) -> Result<()> {
    find_image(split, model, inp, images, |i, lg, lab| f(i, lg, lab).map(|()| None::<()>)).map(|_| ())
}

/// [`for_each_image`] that stops at the first image for which `f` returns
/// `Some`, and returns that value (the reader stops decoding too).
pub(crate) fn find_image<T>(
    split: &Split,
    model: &str,
    inp: &Reader,
    images: Range<usize>,
    mut f: impl FnMut(usize, &Logits, Vec<u8>) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let first = images.start;
    // The reader decodes on a rayon pool of its own. Work it started on the
    // global pool (the parallel read of a large file) queued behind the
    // scoring and ranking of the image before, so the next image was ready
    // only when that work ended and the two stages ran one after the other:
    // on 2 cores a 512² image took 12.7 ms to load, as long as scoring it.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(|_| "bench-reader".into()).build().ok();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        s.spawn(move || {
            for i in images {
                let one = || load(split, model, i, inp, inp.take_spare());
                let r = match &pool {
                    Some(p) => p.install(one),
                    None => one(),
                };
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    break;
                }
            }
        });
        for (i, item) in rx.into_iter().enumerate() {
            let (lg, lab, pending) = item?;
            // the new file's SHA-256 beside the work on its logits, not on
            // the reader thread: there it took as long as the read and the
            // mask together, and a cheap sweep (one method) waited for it
            let out = match pending {
                Some((p, d)) => rayon::in_place_scope(|s| {
                    let lg = &lg;
                    s.spawn(move |_| inp.sums.insert(&p, d.finish(lg)));
                    f(first + i, lg, lab)
                }),
                None => f(first + i, &lg, lab),
            }?;
            inp.give_spare(lg);
            if let Some(v) = out {
                return Ok(Some(v));
            }
        }
        Ok(None)
    })
}

/// `<split>/features/<model>/`: per-pixel features for HEAT (SPEC §4.1).
pub(crate) fn features_dir(split: &Split, model: &str) -> std::path::PathBuf {
    split.dir.join("features").join(model)
}

/// The features `[D, H, W]` (f32/f16) of image `i`, same H×W as the mask
/// (= the logits after any resize); errors name the file.
pub(crate) fn load_features(split: &Split, model: &str, i: usize, lg: &Logits, inp: &Reader) -> Result<Logits> {
    let stem = &split.stems[i];
    let p = features_dir(split, model).join(format!("{stem}.npy"));
    if !p.is_file() {
        bail!("{}: missing features file for image `{stem}` of model `{model}`", p.display());
    }
    inp.sums.add(&p)?;
    let f = read_logits(&p)?;
    if (f.h, f.w) != (lg.h, lg.w) {
        bail!("{}: features are {}×{} but the mask is {}×{} (features are not resized)", p.display(), f.h, f.w, lg.h, lg.w);
    }
    Ok(f)
}

/// Class count of `model`'s logits (from the first test image), to check a
/// reused calibration against before scoring.
pub(crate) fn classes_of(test: &Split, model: &str, inp: &Reader) -> Result<usize> {
    let Some(stem) = test.stems.first() else { bail!("the test split has no images") };
    let lg = read_logits(&test.logits_path(model, stem)?)?;
    Ok(if inp.hwc { lg.w } else { lg.c })
}
