//! `.npy` reading and writing.
//!
//! The header (a Python dict literal) is parsed by `npyz`; the data bytes are
//! read straight into the typed output buffer in parallel chunks
//! (positioned reads), byte-swapped in place when the file is big-endian and
//! checked for NaN/±inf in the same pass while the chunk is still in cache.
//! Fortran-order files are transposed to C order. Every error is one line
//! that starts with the file path.

use super::{LogitData, Logits, Mask};
use anyhow::{Result, anyhow, bail};
use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::vec::{HalfBitsVecExt, HalfFloatVecExt};
use npyz::{DType, Order, TypeChar, TypeStr};
use rayon::prelude::*;
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// One-line error that names the file.
fn ferr(path: &Path, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}: {}", path.display(), msg)
}

/// Element types of the float path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Float {
    F32,
    F16,
}

/// What the header says, validated enough to size the data.
struct Header {
    shape: Vec<usize>,
    fortran: bool,
    ty: TypeStr,
    /// Offset of the first data byte.
    data_offset: u64,
    /// Number of elements (product of `shape`).
    len: usize,
}

/// Numpy-style name of a plain dtype, for messages (`int32`, `float16`, ...).
fn dtype_name(ty: &TypeStr) -> String {
    let bits = ty.size_field() * 8;
    let endian = match ty.endianness() {
        npyz::Endianness::Big => " big-endian",
        _ => "",
    };
    let base = match ty.type_char() {
        TypeChar::Float => format!("float{bits}"),
        TypeChar::Int => format!("int{bits}"),
        TypeChar::Uint => format!("uint{bits}"),
        TypeChar::Bool => "bool".to_string(),
        TypeChar::Complex => format!("complex{bits}"),
        TypeChar::Object => "object (pickled)".to_string(),
        TypeChar::ByteStr | TypeChar::UnicodeStr => "string".to_string(),
        TypeChar::DateTime | TypeChar::TimeDelta => "datetime".to_string(),
        _ => "raw bytes".to_string(),
    };
    format!("'{ty}' ({base}{endian})")
}

fn describe_dtype(d: &DType) -> String {
    match d {
        DType::Plain(ty) => dtype_name(ty),
        DType::Record(_) => format!("{} (structured array)", d.descr()),
        DType::Array(..) => "a sub-array dtype".to_string(),
    }
}

fn shape_str(shape: &[u64]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    if parts.len() == 1 {
        format!("({},)", parts[0])
    } else {
        format!("({})", parts.join(", "))
    }
}

/// Read and validate the header: magic, header length within the file, dict
/// (parsed by npyz), ndim, no zero-sized dimension, and that the file holds
/// exactly the number of data bytes the header implies.
fn read_header(path: &Path, src: Src, file_len: u64, ndim: usize, what: &str) -> Result<Header> {
    let (prelen, data_offset) = preamble(path, src, file_len)?;
    let header = parse_dict(path, src, prelen, data_offset)?;
    let dtype = header.dtype();
    let ty = match &dtype {
        DType::Plain(ty) => ty.clone(),
        other => bail!("{}: unsupported dtype {}", path.display(), describe_dtype(other)),
    };
    let shape64 = header.shape().to_vec();
    let (shape, len) = check_shape(path, &shape64, ndim, what)?;
    check_data_len(path, &shape64, len, ty.size_field(), file_len - data_offset)?;
    Ok(Header {
        shape,
        fortran: header.order() == Order::Fortran,
        ty,
        data_offset,
        len,
    })
}

/// Magic, version and header length: `(preamble length, data offset)`,
/// the header length bounded by the file size before anything is allocated.
fn preamble(path: &Path, src: Src, file_len: u64) -> Result<(u64, u64)> {
    // Preamble: magic (6) + version (2) + header length (u16 for v1, u32 for
    // v2/v3). Only read here to bound the header read by the file size; the
    // header itself is parsed by npyz.
    let mut pre = [0u8; 12];
    let n_pre = file_len.min(12) as usize;
    src.read_at(&mut pre[..n_pre], 0).map_err(|e| ferr(path, format!("cannot read: {e}")))?;
    if file_len == 0 {
        bail!("{}: empty file (not a .npy file)", path.display());
    }
    if n_pre < 10 || &pre[..6] != b"\x93NUMPY" {
        bail!(
            "{}: not a .npy file (magic string \\x93NUMPY not found)",
            path.display()
        );
    }
    let (prelen, hlen) = match pre[6] {
        1 => (10u64, u16::from_le_bytes([pre[8], pre[9]]) as u64),
        2 | 3 if n_pre >= 12 => (12u64, u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as u64),
        2 | 3 => bail!("{}: truncated header ({n_pre} bytes)", path.display()),
        v => bail!("{}: unsupported .npy format version {v}.{}", path.display(), pre[7]),
    };
    let data_offset = prelen + hlen;
    if data_offset > file_len {
        bail!(
            "{}: truncated header: header says {hlen} bytes of header text, file has {}",
            path.display(),
            file_len - prelen.min(file_len)
        );
    }
    Ok((prelen, data_offset))
}

/// The header dict, parsed by npyz (its panics and multi-line errors kept
/// to one line naming the file).
fn parse_dict(path: &Path, src: Src, prelen: u64, data_offset: u64) -> Result<npyz::NpyHeader> {
    let mut head = vec![0u8; data_offset as usize];
    src.read_at(&mut head, 0).map_err(|e| ferr(path, format!("cannot read header: {e}")))?;
    let parsed = std::panic::catch_unwind(|| npyz::NpyHeader::from_reader(&head[..]));
    Ok(match parsed {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            // npyz's syntax errors are multi-line (pest); keep the first
            // line and show the start of the header text instead.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("").trim_end_matches([':', ' ']);
            let text = String::from_utf8_lossy(&head[prelen as usize..]);
            let snippet: String = text.trim_end().chars().take(80).collect();
            bail!(
                "{}: invalid .npy header: {first} (header text: {snippet:?})",
                path.display()
            )
        }
        Err(_) => bail!("{}: invalid .npy header (unparsable)", path.display()),
    })
}

/// `ndim` dimensions, none zero, and an element count that fits `usize`.
fn check_shape(path: &Path, shape64: &[u64], ndim: usize, what: &str) -> Result<(Vec<usize>, usize)> {
    if shape64.len() != ndim {
        bail!(
            "{}: expected a {ndim}-D array {what}, got shape {} ({}-D)",
            path.display(),
            shape_str(shape64),
            shape64.len()
        );
    }
    if shape64.contains(&0) {
        bail!(
            "{}: zero-sized dimension in shape {} {what}",
            path.display(),
            shape_str(shape64)
        );
    }
    let mut len: usize = 1;
    let mut shape = Vec::with_capacity(ndim);
    for &d in shape64 {
        let du = usize::try_from(d).ok();
        len = match du.and_then(|du| len.checked_mul(du)) {
            Some(l) => l,
            None => bail!("{}: shape {} is too large", path.display(), shape_str(shape64)),
        };
        shape.push(d as usize);
    }
    Ok((shape, len))
}

/// The file holds exactly the data bytes the header implies.
fn check_data_len(path: &Path, shape64: &[u64], len: usize, item: u64, have: u64) -> Result<()> {
    let want = (len as u64).checked_mul(item);
    match want {
        Some(want) if want == have => {}
        Some(want) if want > have => bail!(
            "{}: truncated: header says {want} bytes of data (shape {}, {} bytes per item), file has {have}",
            path.display(),
            shape_str(shape64),
            item
        ),
        Some(want) => bail!(
            "{}: {} trailing bytes after the data: header says {want} bytes of data (shape {}), file has {have}",
            path.display(),
            have - want,
            shape_str(shape64)
        ),
        None => bail!("{}: shape {} is too large", path.display(), shape_str(shape64)),
    }
    Ok(())
}

#[cfg(unix)]
fn read_at_exact(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(windows)]
fn read_at_exact(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where the bytes of one .npy come from: a file on disk (positioned reads,
/// so chunks can be read in parallel) or memory (a member of an `.npz`
/// archive, already extracted).
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    File(&'a File),
    Mem(&'a [u8]),
}

impl Src<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            Src::File(f) => read_at_exact(f, buf, offset),
            Src::Mem(m) => {
                let start = usize::try_from(offset).ok().filter(|&o| o <= m.len());
                match start.and_then(|o| m.get(o..o + buf.len())) {
                    Some(s) => {
                        buf.copy_from_slice(s);
                        Ok(())
                    }
                    None => Err(std::io::ErrorKind::UnexpectedEof.into()),
                }
            }
        }
    }
}

/// Bytes per parallel read chunk.
const CHUNK_BYTES: usize = 4 << 20;

/// Read `dst.len()` bytes from `offset` in parallel chunks; after each chunk
/// is read, `post(chunk)` runs on it (byte swap + finite check) while it is
/// hot in cache. Returns true if any `post` returned true.
fn read_parallel(
    src: Src,
    dst: &mut [u8],
    offset: u64,
    post: impl Fn(&mut [u8]) -> bool + Sync,
) -> std::io::Result<bool> {
    if dst.len() <= CHUNK_BYTES {
        src.read_at(dst, offset)?;
        return Ok(post(dst));
    }
    dst.par_chunks_mut(CHUNK_BYTES)
        .enumerate()
        .map(|(i, chunk)| {
            src.read_at(chunk, offset + (i * CHUNK_BYTES) as u64)?;
            Ok(post(chunk))
        })
        .try_reduce(|| false, |a, b| Ok(a | b))
}

/// A float element as stored on disk (little- or big-endian bits).
trait FloatBits: bytemuck::Pod + Send + Sync {
    fn swap_all(v: &mut [u8]);
    /// True if any element of the (native-endian) bytes is NaN or ±inf.
    fn any_nonfinite(v: &[u8]) -> bool;
}

/// f32 as its bit pattern.
impl FloatBits for u32 {
    fn swap_all(v: &mut [u8]) {
        for w in bytemuck::cast_slice_mut::<u8, u32>(v) {
            *w = w.swap_bytes();
        }
    }
    fn any_nonfinite(v: &[u8]) -> bool {
        bytemuck::cast_slice::<u8, u32>(v)
            .iter()
            .fold(0u32, |a, &b| a | ((!b & 0x7f80_0000) == 0) as u32)
            != 0
    }
}

/// f16 as its bit pattern.
impl FloatBits for u16 {
    fn swap_all(v: &mut [u8]) {
        for w in bytemuck::cast_slice_mut::<u8, u16>(v) {
            *w = w.swap_bytes();
        }
    }
    fn any_nonfinite(v: &[u8]) -> bool {
        bytemuck::cast_slice::<u8, u16>(v)
            .iter()
            .fold(0u16, |a, &b| a | ((!b & 0x7c00) == 0) as u16)
            != 0
    }
}

/// Read the data of a float file as native-endian bit patterns in C order.
/// Returns the bits and whether any value is non-finite.
///
/// With `digest`, also the file's bytes before the data (its header, read
/// again: a few hundred bytes) when the file's SHA-256 can be taken from the
/// bytes just read (stored in native byte order and C order: the buffer then
/// holds the data exactly as on disk; see [`PendingDigest`]), else `None`
/// and the caller hashes the file.
fn read_float_bits<T: FloatBits>(path: &Path, src: Src, h: &Header, mut v: Vec<T>, digest: Option<&mut Option<Vec<u8>>>) -> Result<(Vec<T>, bool)> {
    // Reusing a buffer whose pages are already mapped avoids the page-fault
    // cost of fresh memory, which dominates on many machines.
    // Old contents are overwritten by the read, so only new elements need
    // initialising.
    v.truncate(h.len);
    v.resize(h.len, T::zeroed());
    let swap = match h.ty.endianness() {
        npyz::Endianness::Little => cfg!(target_endian = "big"),
        npyz::Endianness::Big => cfg!(target_endian = "little"),
        npyz::Endianness::Irrelevant => false,
    };
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
    let bad = read_parallel(src, bytes, h.data_offset, |chunk| {
        if swap {
            T::swap_all(chunk);
        }
        T::any_nonfinite(chunk)
    })
    .map_err(|e| ferr(path, format!("cannot read data: {e}")))?;
    if let Some(d) = digest {
        *d = None;
        if !swap && !h.fortran {
            let mut head = vec![0u8; h.data_offset as usize];
            src.read_at(&mut head, 0).map_err(|e| ferr(path, format!("cannot read header: {e}")))?;
            *d = Some(head);
        }
    }
    if h.fortran {
        v = fortran_to_c(&v, &h.shape);
    }
    Ok((v, bad))
}

/// Transpose a Fortran-order array (first index fastest) to C order.
fn fortran_to_c<T: Copy + Send + Sync>(src: &[T], shape: &[usize]) -> Vec<T> {
    match shape {
        [_] | [] => src.to_vec(),
        [h, w] => {
            let (h, w) = (*h, *w);
            // src[y + h*x] -> dst[y*w + x]
            let mut dst = Vec::with_capacity(src.len());
            for y in 0..h {
                dst.extend((0..w).map(|x| src[y + h * x]));
            }
            dst
        }
        [c, h, w] => {
            let (c, h, w) = (*c, *h, *w);
            // src[ci + c*(y + h*x)] -> dst[(ci*h + y)*w + x]
            let mut dst = Vec::with_capacity(src.len());
            for ci in 0..c {
                for y in 0..h {
                    dst.extend((0..w).map(|x| src[ci + c * (y + h * x)]));
                }
            }
            dst
        }
        _ => unreachable!("only 1-3 D arrays are read"),
    }
}

/// Open the file and return it with its length.
fn open(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|e| ferr(path, format!("cannot open: {e}")))?;
    let meta = file.metadata().map_err(|e| ferr(path, format!("cannot stat: {e}")))?;
    if meta.is_dir() {
        bail!("{}: is a directory, expected a .npy file", path.display());
    }
    Ok((file, meta.len()))
}

fn float_kind(path: &Path, ty: &TypeStr, what: &str) -> Result<Float> {
    match (ty.type_char(), ty.size_field()) {
        (TypeChar::Float, 4) => Ok(Float::F32),
        (TypeChar::Float, 2) => Ok(Float::F16),
        _ => bail!(
            "{}: unsupported dtype {}; {what} must be float32 or float16",
            path.display(),
            dtype_name(ty)
        ),
    }
}

/// Index and kind of the first non-finite value (C order).
fn first_nonfinite_f32(v: &[f32]) -> Option<(usize, &'static str)> {
    v.iter().position(|x| !x.is_finite()).map(|i| (i, kind_of(v[i] as f64)))
}

fn first_nonfinite_f16(v: &[f16]) -> Option<(usize, &'static str)> {
    v.iter()
        .position(|x| !x.is_finite())
        .map(|i| (i, kind_of(v[i].to_f64())))
}

/// How a non-finite value is named in errors: `NaN`, `+inf` or `-inf`.
pub fn kind_of(x: f64) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x > 0.0 {
        "+inf"
    } else {
        "-inf"
    }
}


/// Run `f` on the .npy bytes behind `path`: the file itself, or for an
/// `.npz` the member selected by `key` (the only array when `key` is
/// `None`). Errors about an npz member name it as `file.npz[member]`, so
/// the user knows which array of which file is wrong.
fn with_npy<R>(path: &Path, key: Option<&str>, f: impl FnOnce(&Path, Src, u64) -> Result<R>) -> Result<R> {
    if super::dataset::ext_lower(path) == "npz" {
        let (name, bytes) = super::npz::member(path, key)?;
        let label = std::path::PathBuf::from(format!("{}[{name}]", path.display()));
        f(&label, Src::Mem(&bytes), bytes.len() as u64)
    } else {
        let (file, len) = open(path)?;
        f(path, Src::File(&file), len)
    }
}

/// What a header check learns of an array without reading its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayInfo {
    /// Shape as stored (`[C,H,W]`, `[H,W,C]` or `[H,W]`).
    pub shape: Vec<usize>,
    /// `float32` or `float16`.
    pub dtype: &'static str,
}

/// The header of a float array (`.npy`, or the array `key` of an `.npz`):
/// every check the full read makes except NaN/±inf — dtype, rank, zero
/// dimensions, and that the file holds exactly the data the header implies.
/// Milliseconds per file: the pre-flight check runs it on every input.
pub fn float_header(path: &Path, key: Option<&str>, ndim: usize, what: &str) -> Result<ArrayInfo> {
    let info = |label: &Path, src: Src, len: u64| -> Result<ArrayInfo> {
        let h = read_header(label, src, len, ndim, what)?;
        let kind = float_kind(label, &h.ty, if ndim == 3 { "logits" } else { "score maps" })?;
        Ok(ArrayInfo { shape: h.shape, dtype: if kind == Float::F32 { "float32" } else { "float16" } })
    };
    if super::dataset::ext_lower(path) == "npz" {
        // a v1/v2 header is at most 12 + 2^16 bytes in practice
        let (name, bytes, size) = super::npz::member_prefix(path, key, 12 + (1 << 16))?;
        let label = std::path::PathBuf::from(format!("{}[{name}]", path.display()));
        return info(&label, Src::Mem(&bytes), size);
    }
    let (file, len) = open(path)?;
    info(path, Src::File(&file), len)
}

/// `(H, W)` of a `.npy` mask from its header (dtype checked as the full read
/// does).
pub fn mask_header_npy(path: &Path) -> Result<(usize, usize)> {
    let (file, file_len) = open(path)?;
    let h = read_header(path, Src::File(&file), file_len, 2, "[H, W] of mask labels")?;
    match (h.ty.type_char(), h.ty.size_field()) {
        (TypeChar::Uint | TypeChar::Int, 1 | 2 | 4 | 8) | (TypeChar::Bool, 1) => Ok((h.shape[0], h.shape[1])),
        _ => bail!(
            "{}: unsupported dtype {}; masks must be an integer type (uint8, uint16, int32, int64)",
            path.display(),
            dtype_name(&h.ty)
        ),
    }
}

/// Read `[C,H,W]` float32/float16 logits from `.npy` (or from the only
/// array of an `.npz`); rejects NaN/±inf naming the file and the first bad
/// element (class, y, x).
pub fn read_logits(path: &Path) -> Result<Logits> {
    with_npy(path, None, |label, src, len| logits_from(label, src, len, None, None))
}

/// [`read_logits`] with the array `key` of an `.npz` (ignored for `.npy`).
pub fn read_logits_key(path: &Path, key: Option<&str>) -> Result<Logits> {
    with_npy(path, key, |label, src, len| logits_from(label, src, len, None, None))
}

/// [`read_logits_key`] into `out`, reusing its allocation when the dtype matches (saves the
/// page faults of a fresh buffer when looping over many images). On error
/// `out` is left empty (`c = h = w = 0`).
pub fn read_logits_into(path: &Path, key: Option<&str>, out: &mut Logits) -> Result<()> {
    read_into(path, key, out, false).map(|_| ())
}

/// [`read_logits_into`] that also returns the file's SHA-256 when it comes
/// free with the read (a plain `.npy` in native byte order and C order: the
/// common case), so the caller need not read the file a second time to
/// hash it; `None` otherwise (an `.npz`, a byte-swapped or Fortran-order
/// array): hash the file itself.
pub fn read_logits_hashed(path: &Path, key: Option<&str>, out: &mut Logits) -> Result<Option<PendingDigest>> {
    Ok(read_into(path, key, out, true)?.map(|head| PendingDigest { head }))
}

/// The SHA-256 of a logits file just read by [`read_logits_hashed`], still
/// to be taken: the file is its header followed by exactly the bytes of the
/// logits read from it, so the digest needs no second read. Kept apart from
/// the read so that the hashing (a third of the reader's time) can run
/// beside the work on those logits instead of delaying the next file.
#[derive(Debug)]
pub struct PendingDigest {
    head: Vec<u8>,
}

impl PendingDigest {
    /// The file's SHA-256 (lower-case hex), from `lg`: the logits that
    /// [`read_logits_hashed`] returned with this, unchanged.
    pub fn finish(self, lg: &Logits) -> String {
        use sha2::Digest;
        let mut sha = sha2::Sha256::new();
        sha.update(&self.head);
        match &lg.data {
            super::LogitData::F32(v) => sha.update(bytemuck::cast_slice::<f32, u8>(v)),
            super::LogitData::F16(v) => sha.update(bytemuck::cast_slice::<u16, u8>(v.reinterpret_cast())),
        }
        super::checksum::hex(&sha.finalize())
    }
}

/// [`read_logits_into`], with the file's digest when `hash` asks and the
/// source is the file itself (an `.npz` member's bytes are not the file's).
fn read_into(path: &Path, key: Option<&str>, out: &mut Logits, hash: bool) -> Result<Option<Vec<u8>>> {
    let prev = std::mem::take(out);
    let mut digest = None;
    *out = with_npy(path, key, |label, src, len| {
        let want = (hash && matches!(src, Src::File(_))).then_some(&mut digest);
        logits_from(label, src, len, Some(prev.data), want)
    })?;
    Ok(digest)
}

fn logits_from(path: &Path, src: Src, file_len: u64, reuse: Option<LogitData>, digest: Option<&mut Option<Vec<u8>>>) -> Result<Logits> {
    let h = read_header(path, src, file_len, 3, "[C, H, W] of logits")?;
    let kind = float_kind(path, &h.ty, "logits")?;
    let (c, hh, w) = (h.shape[0], h.shape[1], h.shape[2]);
    let locate = |i: usize, k: &str| -> anyhow::Error {
        let hw = hh * w;
        ferr(
            path,
            format!(
                "non-finite logit ({k}) at class {}, y {}, x {} (flat index {i}); logits must be finite",
                i / hw,
                (i % hw) / w,
                i % w
            ),
        )
    };
    let data = match kind {
        Float::F32 => {
            let buf: Vec<u32> = match reuse {
                Some(LogitData::F32(v)) => bytemuck::allocation::cast_vec(v),
                _ => Vec::new(),
            };
            let (bits, bad) = read_float_bits::<u32>(path, src, &h, buf, digest)?;
            let v: Vec<f32> = bytemuck::allocation::cast_vec(bits);
            if bad && let Some((i, k)) = first_nonfinite_f32(&v) {
                return Err(locate(i, k));
            }
            LogitData::F32(v)
        }
        Float::F16 => {
            let buf: Vec<u16> = match reuse {
                Some(LogitData::F16(v)) => v.reinterpret_into(),
                _ => Vec::new(),
            };
            let (bits, bad) = read_float_bits::<u16>(path, src, &h, buf, digest)?;
            let v: Vec<f16> = bits.reinterpret_into();
            if bad && let Some((i, k)) = first_nonfinite_f16(&v) {
                return Err(locate(i, k));
            }
            LogitData::F16(v)
        }
    };
    Ok(Logits { c, h: hh, w, data })
}

/// Read a `[H,W]` float32/float16 score map as f32 from `.npy`, `.npz`
/// (the only array) or SegmentMeIfYouCan-style HDF5; rejects NaN/±inf.
pub fn read_score_map(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    read_score_map_key(path, None)
}

/// [`read_score_map`] with the array `key` of an `.npz` (ignored for other
/// formats).
pub fn read_score_map_key(path: &Path, key: Option<&str>) -> Result<(usize, usize, Vec<f32>)> {
    if matches!(super::dataset::ext_lower(path).as_str(), "h5" | "hdf5") {
        let (h, w, v) = super::h5::read_score_map_h5(path)?;
        check_scores_finite(path, w, &v)?;
        return Ok((h, w, v));
    }
    with_npy(path, key, score_map_from)
}

fn check_scores_finite(path: &Path, w: usize, v: &[f32]) -> Result<()> {
    if let Some((i, k)) = first_nonfinite_f32(v) {
        bail!(
            "{}: non-finite score ({k}) at y {}, x {} (flat index {i}); scores must be finite",
            path.display(),
            i / w,
            i % w
        );
    }
    Ok(())
}

fn score_map_from(path: &Path, src: Src, file_len: u64) -> Result<(usize, usize, Vec<f32>)> {
    let h = read_header(path, src, file_len, 2, "[H, W] of scores")?;
    let kind = float_kind(path, &h.ty, "score maps")?;
    let (hh, w) = (h.shape[0], h.shape[1]);
    let (v, bad): (Vec<f32>, bool) = match kind {
        Float::F32 => {
            let (bits, bad) = read_float_bits::<u32>(path, src, &h, Vec::new(), None)?;
            (bytemuck::allocation::cast_vec(bits), bad)
        }
        Float::F16 => {
            let (bits, bad) = read_float_bits::<u16>(path, src, &h, Vec::new(), None)?;
            let halves: &[f16] = bits.reinterpret_cast();
            let mut out = vec![0f32; halves.len()];
            out.par_chunks_mut(1 << 16)
                .zip(halves.par_chunks(1 << 16))
                .for_each(|(d, s)| s.convert_to_f32_slice(d));
            (out, bad)
        }
    };
    if bad {
        check_scores_finite(path, w, &v)?;
    }
    Ok((hh, w, v))
}

/// Read a `[H,W]` integer mask (.npy uint8, uint16, int32 or int64; any
/// integer width and bool are accepted); values must lie in 0..=65535.
pub fn read_mask_npy(path: &Path) -> Result<Mask> {
    let (file, file_len) = open(path)?;
    let src = Src::File(&file);
    let h = read_header(path, src, file_len, 2, "[H, W] of mask labels")?;
    let ty = &h.ty;
    let size = ty.size_field() as usize;
    let signed = match (ty.type_char(), size) {
        (TypeChar::Uint, 1 | 2 | 4 | 8) => false,
        (TypeChar::Int, 1 | 2 | 4 | 8) => true,
        (TypeChar::Bool, 1) => false,
        _ => bail!(
            "{}: unsupported dtype {}; masks must be an integer type (uint8, uint16, int32, int64)",
            path.display(),
            dtype_name(ty)
        ),
    };
    let big = ty.endianness() == npyz::Endianness::Big;
    let mut raw = vec![0u8; h.len * size];
    src.read_at(&mut raw, h.data_offset).map_err(|e| ferr(path, format!("cannot read data: {e}")))?;
    let mut values: Vec<u16> = Vec::with_capacity(h.len);
    for (i, b) in raw.chunks_exact(size).enumerate() {
        let mut buf = [0u8; 8];
        // Assemble as little-endian u64 (sign-extended below).
        if big {
            for (k, &x) in b.iter().rev().enumerate() {
                buf[k] = x;
            }
        } else {
            buf[..size].copy_from_slice(b);
        }
        let u = u64::from_le_bytes(buf);
        let v: i128 = if signed {
            let shift = 64 - 8 * size as u32;
            (((u << shift) as i64) >> shift) as i128
        } else {
            u as i128
        };
        if !(0..=65535).contains(&v) {
            let (y, x) = if h.fortran {
                (i % h.shape[0], i / h.shape[0])
            } else {
                (i / h.shape[1], i % h.shape[1])
            };
            bail!(
                "{}: mask value {v} at y {y}, x {x} is outside 0..=65535",
                path.display()
            );
        }
        values.push(v as u16);
    }
    let h_ = h.shape[0];
    let w_ = h.shape[1];
    if h.fortran {
        values = fortran_to_c(&values, &h.shape);
    }
    Ok(Mask { h: h_, w: w_, values })
}

/// Write a C-order little-endian .npy with the given type string.
fn write_npy(path: &Path, shape: &[u64], n: usize, descr: &str, data: &[u8]) -> Result<()> {
    let expect = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    if expect != Some(n as u64) {
        bail!(
            "{}: cannot write: shape {} does not match {n} elements",
            path.display(),
            shape_str(shape)
        );
    }
    use npyz::WriterBuilder;
    let ty: TypeStr = descr
        .parse()
        .map_err(|e| ferr(path, format!("bad dtype {descr}: {e}")))?;
    let mut head: Vec<u8> = Vec::with_capacity(128);
    npyz::WriteOptions::new_header_only()
        .dtype(DType::Plain(ty))
        .shape(shape)
        .writer(&mut head)
        .write_header_only()
        .map_err(|e| ferr(path, format!("cannot build header: {e}")))?;
    let write = || -> std::io::Result<()> {
        let mut f = File::create(path)?;
        f.write_all(&head)?;
        f.write_all(data)?;
        Ok(())
    };
    write().map_err(|e| ferr(path, format!("cannot write: {e}")))
}

/// Write `data` (C order) as little-endian float32 with `shape`.
pub fn write_npy_f32(path: &Path, shape: &[u64], data: &[f32]) -> Result<()> {
    if cfg!(target_endian = "little") {
        write_npy(path, shape, data.len(), "<f4", bytemuck::cast_slice(data))
    } else {
        let le: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        write_npy(path, shape, data.len(), "<f4", &le)
    }
}

/// Write `data` (C order) as little-endian float16 with `shape`.
pub fn write_npy_f16(path: &Path, shape: &[u64], data: &[f16]) -> Result<()> {
    let bits: &[u16] = data.reinterpret_cast();
    if cfg!(target_endian = "little") {
        write_npy(path, shape, data.len(), "<f2", bytemuck::cast_slice(bits))
    } else {
        let le: Vec<u8> = bits.iter().flat_map(|x| x.to_le_bytes()).collect();
        write_npy(path, shape, data.len(), "<f2", &le)
    }
}

/// Write `data` (C order) as uint8 with `shape`.
pub fn write_npy_u8(path: &Path, shape: &[u64], data: &[u8]) -> Result<()> {
    write_npy(path, shape, data.len(), "|u1", data)
}
