//! Label masks: single-channel PNG (8/16-bit gray, 1/2/4-bit gray, palette
//! index) or `.npy` integer arrays. Values are returned raw; the
//! [`LabelMap`](super::LabelMap) decides what they mean.
//!
//! Palette PNGs return the palette *index* without expanding the palette:
//! that is how Cityscapes-style label PNGs store class ids.

use super::Mask;
use anyhow::{Result, anyhow, bail};
use std::path::Path;

fn ferr(path: &Path, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}: {}", path.display(), msg)
}


/// Read a mask from .png (8/16-bit gray or palette index) or .npy.
pub fn read_mask(path: &Path) -> Result<Mask> {
    match super::dataset::ext_lower(path).as_str() {
        "png" => read_mask_png(path),
        "npy" => super::npy::read_mask_npy(path),
        _ => bail!("{}: unsupported mask file type (expected .png or .npy)", path.display()),
    }
}

/// `(H, W)` of a mask from its header alone (PNG IHDR, `.npy` header), with
/// the checks that need no pixel data: the pre-flight check runs it on
/// every mask in milliseconds.
pub fn mask_size(path: &Path) -> Result<(usize, usize)> {
    match super::dataset::ext_lower(path).as_str() {
        "png" => {
            let f = std::fs::File::open(path).map_err(|e| ferr(path, format!("cannot read: {e}")))?;
            let dec = png::Decoder::new(std::io::BufReader::new(f));
            let reader = dec.read_info().map_err(|e| ferr(path, format!("invalid PNG: {e}")))?;
            let (color, depth) = reader.output_color_type();
            if !matches!(color, png::ColorType::Grayscale | png::ColorType::Indexed) {
                bail!(
                    "{}: expected a single-channel label mask (8/16-bit grayscale or palette PNG), got {color:?} {}-bit",
                    path.display(),
                    depth as u8
                );
            }
            let info = reader.info();
            Ok((info.height as usize, info.width as usize))
        }
        "npy" => super::npy::mask_header_npy(path),
        _ => bail!("{}: unsupported mask file type (expected .png or .npy)", path.display()),
    }
}

fn read_mask_png(path: &Path) -> Result<Mask> {
    use png::{BitDepth, ColorType};
    let bytes = std::fs::read(path).map_err(|e| ferr(path, format!("cannot read: {e}")))?;
    if bytes.is_empty() {
        bail!("{}: empty file (not a PNG)", path.display());
    }
    let limits = png::Limits { bytes: 1 << 30 };
    let dec = png::Decoder::new_with_limits(std::io::Cursor::new(&bytes[..]), limits);
    // Default transformations are IDENTITY: raw samples, no palette expansion.
    let mut reader = dec.read_info().map_err(|e| ferr(path, format!("invalid PNG: {e}")))?;
    let (color, depth) = reader.output_color_type();
    let (w, h) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    match color {
        ColorType::Grayscale | ColorType::Indexed => {}
        other => bail!(
            "{}: expected a single-channel label mask (8/16-bit grayscale or palette PNG), got {other:?} {}-bit",
            path.display(),
            depth as u8
        ),
    }
    if w == 0 || h == 0 {
        bail!("{}: zero-sized PNG ({w}x{h})", path.display());
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ferr(path, format!("PNG too large ({w}x{h})")))?;
    let line = reader
        .output_line_size(w as u32)
        .ok_or_else(|| ferr(path, format!("PNG too large ({w}x{h})")))?;
    // The header's size is the file's word: zlib expands at most 1032:1,
    // so a header that claims more than the file could hold is refused
    // before anything is allocated.
    if size as u64 > (bytes.len() as u64).saturating_mul(1032) + (1 << 16) {
        bail!("{}: PNG header claims {w}x{h} pixels, more than its {} bytes can hold (corrupt file)", path.display(), bytes.len());
    }
    let mut buf = vec![0u8; size];
    reader
        .next_frame(&mut buf)
        .map_err(|e| ferr(path, format!("invalid PNG data: {e}")))?;
    let n = w
        .checked_mul(h)
        .ok_or_else(|| ferr(path, format!("PNG too large ({w}x{h})")))?;
    let mut values: Vec<u16> = Vec::with_capacity(n);
    match depth {
        BitDepth::Eight => {
            for y in 0..h {
                values.extend(buf[y * line..y * line + w].iter().map(|&b| b as u16));
            }
        }
        BitDepth::Sixteen => {
            for y in 0..h {
                let row = &buf[y * line..y * line + 2 * w];
                values.extend(row.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]])));
            }
        }
        BitDepth::One | BitDepth::Two | BitDepth::Four => {
            let bd = depth as usize;
            let mask = (1u16 << bd) - 1;
            let per_byte = 8 / bd;
            for y in 0..h {
                let row = &buf[y * line..(y + 1) * line];
                values.extend((0..w).map(|x| {
                    let byte = row[x / per_byte] as u16;
                    let shift = 8 - bd * (x % per_byte + 1);
                    (byte >> shift) & mask
                }));
            }
        }
    }
    Ok(Mask { h, w, values })
}

/// Write an 8-bit grayscale PNG mask (`values` row-major, length h*w).
pub fn write_mask_png(path: &Path, h: usize, w: usize, values: &[u8]) -> Result<()> {
    if Some(values.len()) != h.checked_mul(w) {
        bail!(
            "{}: cannot write mask: {} values for {h}x{w}",
            path.display(),
            values.len()
        );
    }
    let (Ok(w32), Ok(h32)) = (u32::try_from(w), u32::try_from(h)) else {
        bail!("{}: cannot write mask: {h}x{w} too large for PNG", path.display());
    };
    let write = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let file = std::fs::File::create(path)?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w32, h32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(values)?;
        writer.finish()?;
        Ok(())
    };
    write().map_err(|e| ferr(path, format!("cannot write PNG: {e}")))
}
