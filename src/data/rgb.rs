//! The optional RGB input images, `<split>/images/<id>.png`: the first tile
//! of a failure-mode example panel (nothing else reads them).
//!
//! Why optional and PNG only: logits and masks are what bench evaluates;
//! the photo only helps a reader see what was missed. PNG (8/16-bit gray,
//! gray + alpha, RGB, RGBA, palette) is decoded by the `png` crate bench
//! already uses; a `.jpg`/`.jpeg` there is reported (no JPEG decoder among
//! the dependencies) and the panel is drawn without the photo.

use super::Split;
use anyhow::{Result, anyhow, bail};
use std::path::{Path, PathBuf};

/// `<split>/images/`.
pub fn images_dir(split: &Split) -> PathBuf {
    split.dir.join("images")
}

/// What the images folder holds for one image id.
pub enum Photo {
    /// h × w × 3 bytes, row-major.
    Rgb(Vec<u8>),
    /// Only a JPEG (not decoded): its path.
    Jpeg(PathBuf),
    None,
}

/// The RGB photo of image `stem`, checked to be `h × w` (the mask's size).
pub fn read_photo(split: &Split, stem: &str, h: usize, w: usize) -> Result<Photo> {
    let dir = images_dir(split);
    let png = dir.join(format!("{stem}.png"));
    if png.is_file() {
        return read_rgb_png(&png, h, w).map(Photo::Rgb);
    }
    Ok(["jpg", "jpeg", "JPG", "JPEG"].iter().map(|e| dir.join(format!("{stem}.{e}"))).find(|p| p.is_file()).map_or(Photo::None, Photo::Jpeg))
}

/// Decode a PNG to 8-bit RGB (alpha dropped, gray replicated).
pub fn read_rgb_png(path: &Path, h: usize, w: usize) -> Result<Vec<u8>> {
    let ferr = |m: String| anyhow!("{}: {m}", path.display());
    let bytes = std::fs::read(path).map_err(|e| ferr(format!("cannot read: {e}")))?;
    let mut dec = png::Decoder::new_with_limits(std::io::Cursor::new(&bytes[..]), png::Limits { bytes: 1 << 30 });
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(|e| ferr(format!("invalid PNG: {e}")))?;
    let (pw, ph) = (reader.info().width as usize, reader.info().height as usize);
    if (ph, pw) != (h, w) {
        bail!("{}: the input image is {ph}×{pw} but its mask is {h}×{w}", path.display());
    }
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or_else(|| ferr("PNG too large".into()))?];
    let info = reader.next_frame(&mut buf).map_err(|e| ferr(format!("invalid PNG data: {e}")))?;
    let ch = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => bail!("{}: palette PNG not expanded", path.display()),
    };
    let mut out = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        let row = &buf[y * info.line_size..y * info.line_size + w * ch];
        for p in row.chunks_exact(ch) {
            if ch < 3 {
                out.extend([p[0]; 3]);
            } else {
                out.extend(&p[..3]);
            }
        }
    }
    Ok(out)
}
