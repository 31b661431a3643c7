//! The optional RGB input images, `<split>/images/<id>.png` or `.jpg`/`.jpeg`:
//! the first tile of a failure-mode example panel (nothing else reads them).
//!
//! Why optional: logits and masks are what bench evaluates; the photo only
//! helps a reader see what was missed. PNG (8/16-bit gray, gray + alpha,
//! RGB, RGBA, palette) is decoded by the `png` crate bench already uses;
//! JPEG (baseline and progressive; YCbCr, RGB or grayscale) by `zune-jpeg`,
//! the decoder the `image` crate uses, in strict mode: a truncated or
//! corrupt JPEG is an error naming the file, never a silently gray-filled
//! tile. Both decode to 8-bit RGB; a photo whose size is not the mask's is
//! an error naming the file (it would be drawn over the wrong pixels).

use super::Split;
use anyhow::{Result, anyhow, bail};
use std::path::{Path, PathBuf};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// `<split>/images/`.
pub fn images_dir(split: &Split) -> PathBuf {
    split.dir.join("images")
}

/// The file extensions looked for, in order: a PNG wins over a JPEG of the
/// same id (the lossless one is the better picture of the scene).
const EXTS: [&str; 5] = ["png", "jpg", "jpeg", "JPG", "JPEG"];

/// The RGB photo of image `stem` (h × w × 3 bytes, row-major), checked to
/// be `h × w` (the mask's size); None when the images folder has none.
pub fn read_photo(split: &Split, stem: &str, h: usize, w: usize) -> Result<Option<Vec<u8>>> {
    let dir = images_dir(split);
    let Some(path) = EXTS.iter().map(|e| dir.join(format!("{stem}.{e}"))).find(|p| p.is_file()) else { return Ok(None) };
    read_rgb(&path, h, w).map(Some)
}

/// Decode a PNG or (by its extension) a JPEG to 8-bit RGB.
pub fn read_rgb(path: &Path, h: usize, w: usize) -> Result<Vec<u8>> {
    match super::dataset::ext_lower(path).as_str() {
        "jpg" | "jpeg" => read_rgb_jpeg(path, h, w),
        _ => read_rgb_png(path, h, w),
    }
}

/// The one size check both decoders make, before any pixel is decoded.
fn check_size(path: &Path, ph: usize, pw: usize, h: usize, w: usize) -> Result<()> {
    if (ph, pw) != (h, w) {
        bail!("{}: the input image is {ph}×{pw} but its mask is {h}×{w}", path.display());
    }
    Ok(())
}

/// Decode a JPEG to 8-bit RGB (grayscale replicated). CMYK / YCCK (and any
/// other colour type) is an error: converting it needs the file's ink
/// profile, and a wrong guess would be a wrongly coloured photo.
pub fn read_rgb_jpeg(path: &Path, h: usize, w: usize) -> Result<Vec<u8>> {
    let ferr = |m: String| anyhow!("{}: {m}", path.display());
    let bytes = std::fs::read(path).map_err(|e| ferr(format!("cannot read: {e}")))?;
    // RGB out: zune-jpeg replicates a grayscale JPEG's luma into R, G, B.
    let opts = DecoderOptions::default().set_strict_mode(true).set_max_width(1 << 16).set_max_height(1 << 16).jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(&bytes[..]), opts);
    dec.decode_headers().map_err(|e| ferr(format!("invalid JPEG: {e:?}")))?;
    let (pw, ph) = dec.dimensions().ok_or_else(|| ferr("invalid JPEG: no frame header".into()))?;
    check_size(path, ph, pw, h, w)?;
    match dec.input_colorspace() {
        Some(ColorSpace::Luma | ColorSpace::YCbCr | ColorSpace::RGB) => {}
        c => bail!("{}: JPEG colour type {c:?} is not supported (only YCbCr, RGB or grayscale): convert the photo to RGB", path.display()),
    }
    let px = dec.decode().map_err(|e| ferr(format!("invalid JPEG data: {e:?}")))?;
    if px.len() != h * w * 3 {
        bail!("{}: the JPEG decoder returned {} bytes, not {h}×{w}×3", path.display(), px.len());
    }
    Ok(px)
}

/// Decode a PNG to 8-bit RGB (alpha dropped, gray replicated).
pub fn read_rgb_png(path: &Path, h: usize, w: usize) -> Result<Vec<u8>> {
    let ferr = |m: String| anyhow!("{}: {m}", path.display());
    let bytes = std::fs::read(path).map_err(|e| ferr(format!("cannot read: {e}")))?;
    let mut dec = png::Decoder::new_with_limits(std::io::Cursor::new(&bytes[..]), png::Limits { bytes: 1 << 30 });
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(|e| ferr(format!("invalid PNG: {e}")))?;
    let (pw, ph) = (reader.info().width as usize, reader.info().height as usize);
    check_size(path, ph, pw, h, w)?;
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
