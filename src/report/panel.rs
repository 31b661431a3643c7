//! Failure-mode example panels: one PNG per example image, tiles side by
//! side (4 px white gaps), each the image's size:
//!
//! 1. the RGB input, when the dataset has `<split>/images/<id>.png`;
//! 2. the mask: normal black, the panel's anomaly type white, other anomaly
//!    types blue `(0,160,255)`, void grey `(128,128,128)`;
//! 3. the score heat map: a 5-anchor piecewise-linear approximation of
//!    matplotlib's *inferno* (anchors at 0, ¼, ½, ¾, 1), normalised by the
//!    threshold: the test split's median normal score maps to 0, the soft
//!    threshold to ½ and the test split's highest anomaly score to 1
//!    (linear in between, clamped), so "brighter than the middle orange"
//!    means rejected, and two panels of a method share one scale; void grey;
//! 4. the soft threshold's decision (rejected when `score ≥ t`): caught
//!    defects green `(0,170,0)`, **misses** (defects accepted) magenta
//!    `(255,0,255)`, false rejects (good pixels rejected) amber
//!    `(255,191,0)`, accepted good pixels dark grey `(40,40,40)`, void grey.
//!
//! Why fixed colours and a threshold-anchored scale: panels are committed
//! and compared byte for byte, and a reader must be able to tell a miss
//! from a false reject without a legend that depends on the data.

use crate::data::label;

/// Gap between tiles, in pixels (white).
pub const GAP: usize = 4;
pub const VOID: [u8; 3] = [128, 128, 128];
pub const NORMAL_MASK: [u8; 3] = [0, 0, 0];
pub const TYPE_MASK: [u8; 3] = [255, 255, 255];
pub const OTHER_TYPE_MASK: [u8; 3] = [0, 160, 255];
pub const CAUGHT: [u8; 3] = [0, 170, 0];
pub const MISSED: [u8; 3] = [255, 0, 255];
pub const FALSE_REJECT: [u8; 3] = [255, 191, 0];
pub const ACCEPTED: [u8; 3] = [40, 40, 40];
/// Inferno at 0, ¼, ½, ¾, 1 (matplotlib's `inferno` colour map, rounded).
pub const INFERNO: [[u8; 3]; 5] = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];

/// The heat map's scale: `lo` ↦ 0, `t` ↦ ½, `hi` ↦ 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub lo: f64,
    pub t: f64,
    pub hi: f64,
}

impl Scale {
    /// Position in [0, 1] of score `s` (piecewise linear, clamped; an empty
    /// side of the threshold collapses to its end).
    pub fn unit(&self, s: f32) -> f64 {
        let s = s as f64;
        let v = if s < self.t {
            if self.t > self.lo { 0.5 * (s - self.lo) / (self.t - self.lo) } else { 0.0 }
        } else if self.hi > self.t {
            0.5 + 0.5 * (s - self.t) / (self.hi - self.t)
        } else {
            1.0
        };
        if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }
    }
}

/// The colour map at `v` ∈ [0, 1].
pub fn inferno(v: f64) -> [u8; 3] {
    let x = v.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let (a, b) = (INFERNO[i], INFERNO[i + 1]);
    std::array::from_fn(|k| (a[k] as f64 + f * (b[k] as f64 - a[k] as f64)).round() as u8)
}

/// One example image: labels (type `t` = label `t + 1`), one method's
/// scores, optional RGB (h × w × 3), and what the panel shows.
pub struct Example<'a> {
    pub h: usize,
    pub w: usize,
    pub labels: &'a [u8],
    pub scores: &'a [f32],
    pub rgb: Option<&'a [u8]>,
    /// The panel's anomaly type (0-based).
    pub kind: usize,
    pub scale: Scale,
}

fn mask_colour(l: u8, kind: usize) -> [u8; 3] {
    match l {
        label::VOID => VOID,
        label::NORMAL => NORMAL_MASK,
        l if l as usize == kind + 1 => TYPE_MASK,
        _ => OTHER_TYPE_MASK,
    }
}

fn heat_colour(l: u8, s: f32, sc: &Scale) -> [u8; 3] {
    if l == label::VOID { VOID } else { inferno(sc.unit(s)) }
}

fn decision_colour(l: u8, s: f32, t: f64) -> [u8; 3] {
    let rejected = s as f64 >= t;
    match l {
        label::VOID => VOID,
        label::NORMAL if rejected => FALSE_REJECT,
        label::NORMAL => ACCEPTED,
        _ if rejected => CAUGHT,
        _ => MISSED,
    }
}

/// The panel's tiles as per-pixel colours, left to right.
fn tiles(e: &Example) -> Vec<Vec<[u8; 3]>> {
    let mut v = vec![];
    if let Some(rgb) = e.rgb {
        v.push(rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect());
    }
    let px = || e.labels.iter().zip(e.scores);
    v.push(e.labels.iter().map(|&l| mask_colour(l, e.kind)).collect());
    v.push(px().map(|(&l, &s)| heat_colour(l, s, &e.scale)).collect());
    v.push(px().map(|(&l, &s)| decision_colour(l, s, e.scale.t)).collect());
    v
}

/// Width of a panel of `n` tiles of width `w`.
pub fn panel_width(n: usize, w: usize) -> usize {
    n * w + (n - 1) * GAP
}

/// The panel as PNG bytes (8-bit RGB, fixed encoder settings).
pub fn panel_png(e: &Example) -> Vec<u8> {
    let ts = tiles(e);
    let pw = panel_width(ts.len(), e.w);
    let mut buf = vec![255u8; pw * e.h * 3];
    for (k, tile) in ts.iter().enumerate() {
        let x0 = k * (e.w + GAP);
        for y in 0..e.h {
            for x in 0..e.w {
                let o = (y * pw + x0 + x) * 3;
                buf[o..o + 3].copy_from_slice(&tile[y * e.w + x]);
            }
        }
    }
    rgb_png(pw as u32, e.h as u32, &buf)
}

/// 8-bit RGB pixels as PNG bytes (fixed encoder settings: the bytes depend
/// only on the pixels).
pub fn rgb_png(w: u32, h: u32, buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = ::png::Encoder::new(&mut out, w, h);
    enc.set_color(::png::ColorType::Rgb);
    enc.set_depth(::png::BitDepth::Eight);
    // Fast: the panels are previews; Balanced spent 5 % of a 60-image
    // sweep's CPU in deflate for ~20 % smaller files
    enc.set_compression(::png::Compression::Fast);
    // writing into a Vec cannot fail; an error leaves an empty file
    let _ = enc.write_header().and_then(|mut wr| wr.write_image_data(buf).and_then(|_| wr.finish()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_anchors_and_colour_map_ends() {
        let sc = Scale { lo: 0.0, t: 1.0, hi: 3.0 };
        assert_eq!((sc.unit(-1.0), sc.unit(0.5), sc.unit(1.0), sc.unit(2.0), sc.unit(9.0)), (0.0, 0.25, 0.5, 0.75, 1.0));
        // degenerate sides collapse
        assert_eq!(Scale { lo: 2.0, t: 1.0, hi: 1.0 }.unit(0.0), 0.0);
        assert_eq!(Scale { lo: 2.0, t: 1.0, hi: 1.0 }.unit(1.5), 1.0);
        assert_eq!((inferno(0.0), inferno(0.5), inferno(1.0)), (INFERNO[0], INFERNO[2], INFERNO[4]));
        assert_eq!(inferno(0.125), [44, 8, 57]);
    }
}
