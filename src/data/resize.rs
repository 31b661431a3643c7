//! Upsampling logits to the mask's resolution (`resize = "nearest" |
//! "bilinear"`).
//!
//! Why logits and not scores: the public evaluation codes (SML, Fishyscapes,
//! SegmentMeIfYouCan baselines) call `F.interpolate(logits, size=mask)` and
//! score the result, and calibration statistics must be fitted at the
//! resolution the test split is scored at. Both modes reproduce PyTorch's
//! `torch.nn.functional.interpolate` with `align_corners=False`:
//! `nearest` takes source index `floor(dst · in/out)`; `bilinear` samples at
//! `(dst + 0.5) · in/out − 0.5`, clamped at 0. Output is float32 (an f16
//! logit interpolated is generally not an f16 value).

use super::{LogitData, Logits};
use anyhow::{Result, bail};
use rayon::prelude::*;

/// `resize` in the config: logits whose H×W differ from the mask are an
/// error (`none`) or upsampled to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    #[default]
    None,
    Nearest,
    Bilinear,
}

impl Resize {
    /// The config spelling (`none`, `nearest`, `bilinear`).
    pub fn name(self) -> &'static str {
        match self {
            Resize::None => "none",
            Resize::Nearest => "nearest",
            Resize::Bilinear => "bilinear",
        }
    }
}

/// Source taps along one axis: (i0, i1, weight of i1) per output index.
fn taps(inp: usize, out: usize, mode: Resize) -> Vec<(usize, usize, f64)> {
    let scale = inp as f64 / out as f64;
    (0..out)
        .map(|d| match mode {
            Resize::Nearest | Resize::None => {
                let i = ((d as f64 * scale).floor() as usize).min(inp - 1);
                (i, i, 0.0)
            }
            Resize::Bilinear => {
                let src = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(inp - 1);
                let i1 = if i0 + 1 < inp { i0 + 1 } else { i0 };
                (i0, i1, src - i0 as f64)
            }
        })
        .collect()
}

/// Logits resized to `h × w` (f32). Identity sizes return a copy.
pub fn resize_logits(lg: &Logits, h: usize, w: usize, mode: Resize) -> Result<Logits> {
    if h == 0 || w == 0 || lg.h == 0 || lg.w == 0 {
        bail!("cannot resize {}×{} logits to {h}×{w}", lg.h, lg.w);
    }
    let (ty, tx) = (taps(lg.h, h, mode), taps(lg.w, w, mode));
    let n = h * w;
    let mut out = vec![0f32; lg.c * n];
    out.par_chunks_mut(n).enumerate().for_each(|(c, plane)| {
        let at = |y: usize, x: usize| lg.get(c, y * lg.w + x);
        for (y, &(y0, y1, ly)) in ty.iter().enumerate() {
            for (x, &(x0, x1, lx)) in tx.iter().enumerate() {
                let top = at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx;
                let bot = at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx;
                plane[y * w + x] = (top * (1.0 - ly) + bot * ly) as f32;
            }
        }
    });
    Ok(Logits { c: lg.c, h, w, data: LogitData::F32(out) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lg(h: usize, w: usize, v: Vec<f32>) -> Logits {
        Logits { c: 1, h, w, data: LogitData::F32(v) }
    }

    fn vals(l: &Logits) -> Vec<f32> {
        match &l.data {
            LogitData::F32(v) => v.clone(),
            LogitData::F16(_) => unreachable!(),
        }
    }

    #[test]
    fn matches_torch_interpolate() {
        // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]),
        //     size=(4, 4), mode='bilinear', align_corners=False)
        let b = resize_logits(&lg(2, 2, vec![1.0, 2.0, 3.0, 4.0]), 4, 4, Resize::Bilinear).unwrap();
        let want = [
            1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
        ];
        assert_eq!(vals(&b), want);
        // mode='nearest', size=(3, 5) from 2×2
        let n = resize_logits(&lg(2, 2, vec![1.0, 2.0, 3.0, 4.0]), 3, 5, Resize::Nearest).unwrap();
        assert_eq!(vals(&n), [1.0, 1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0]);
    }

    #[test]
    fn identity_size_is_a_copy() {
        let v: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        for m in [Resize::Nearest, Resize::Bilinear] {
            assert_eq!(vals(&resize_logits(&lg(3, 4, v.clone()), 3, 4, m).unwrap()), v);
        }
    }
}
