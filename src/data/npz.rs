//! `.npz` archives: what `np.savez` / `np.savez_compressed` write — a zip
//! file with one `.npy` member per array (`arr_0.npy`, or `<key>.npy` for
//! keyword arrays).
//!
//! Why members are extracted to memory: one image's array is small next to
//! the machine, and the `.npy` validation in `npy.rs` then runs unchanged on
//! the bytes, so an npz member gets exactly the checks a `.npy` file gets.

use anyhow::{Result, bail};
use std::io::Read;
use std::path::Path;

/// Upper bound of one member's uncompressed size (a corrupt or hostile
/// archive may claim anything; no real per-image array is near this).
const MAX_MEMBER_BYTES: u64 = 16 << 30;

/// The array names of an archive (`.npy` suffix removed), in archive order.
fn names(archive: &zip::ZipArchive<std::fs::File>) -> Vec<String> {
    (0..archive.len())
        .filter_map(|i| archive.name_for_index(i).and_then(|r| r.ok()).map(|n| n.into_owned()))
        .filter(|n| !n.ends_with('/'))
        .map(|n| n.strip_suffix(".npy").map(str::to_string).unwrap_or(n))
        .collect()
}

/// The `.npy` bytes of one array of `path` and its name: the array `key`
/// (member `key.npy` or `key`), or the only array when `key` is `None`.
/// Errors name the file and list the arrays it has.
pub fn member(path: &Path, key: Option<&str>) -> Result<(String, Vec<u8>)> {
    read_member(path, key, None).map(|(n, b, _)| (n, b))
}

/// The first `n` bytes of the array's `.npy` bytes (its header), its name
/// and the member's claimed size: what a header check needs, without
/// inflating the array.
pub fn member_prefix(path: &Path, key: Option<&str>, n: u64) -> Result<(String, Vec<u8>, u64)> {
    read_member(path, key, Some(n))
}

fn read_member(path: &Path, key: Option<&str>, prefix: Option<u64>) -> Result<(String, Vec<u8>, u64)> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: cannot open: {e}", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        bail!("{}: is a directory, expected an .npz file", path.display());
    }
    let mut archive = match zip::ZipArchive::new(file) {
        Ok(a) => a,
        Err(e) => bail!("{}: not a valid .npz (zip) archive: {e}", path.display()),
    };
    let have = names(&archive);
    let list = || have.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
    let name = match key {
        Some(k) => {
            if !have.iter().any(|n| n == k) {
                bail!("{}: no array '{k}' in the .npz (arrays: [{}]); check `npz_key`", path.display(), list());
            }
            k.to_string()
        }
        None => match have.len() {
            1 => have[0].clone(),
            0 => bail!("{}: the .npz holds no arrays", path.display()),
            _ => bail!(
                "{}: the .npz holds {} arrays ([{}]); name the one to read with `npz_key`",
                path.display(),
                have.len(),
                list()
            ),
        },
    };
    let idx = archive
        .index_for_name(&format!("{name}.npy"))
        .or_else(|| archive.index_for_name(&name))
        .ok_or_else(|| anyhow::anyhow!("{}: no array '{name}' in the .npz", path.display()))?;
    let mut f = match archive.by_index(idx) {
        Ok(f) => f,
        Err(e) => bail!("{}[{name}]: cannot read the .npz member: {e}", path.display()),
    };
    let size = f.size();
    if size > MAX_MEMBER_BYTES {
        bail!("{}[{name}]: member claims {size} bytes uncompressed, more than the {} GiB limit", path.display(), MAX_MEMBER_BYTES >> 30);
    }
    // The claimed size is the archive's word, not a fact: reserve no more
    // than the member's stored bytes could expand to (deflate's ratio is at
    // most 1032:1) and let the buffer grow with the bytes that really come.
    let plausible = f.compressed_size().saturating_mul(1032).saturating_add(1 << 16);
    let want = prefix.map_or(size, |n| n.min(size));
    let mut bytes = Vec::with_capacity(want.min(plausible).min(64 << 20) as usize);
    let take = if prefix.is_some() { want } else { size + 1 };
    if let Err(e) = (&mut f).take(take).read_to_end(&mut bytes) {
        bail!("{}[{name}]: corrupt .npz member: {e}", path.display());
    }
    if bytes.len() as u64 != want {
        bail!("{}[{name}]: corrupt .npz member: {} bytes, the archive says {size}", path.display(), bytes.len());
    }
    Ok((name, bytes, size))
}

/// Write `arrays` (name, `.npy` bytes) as an uncompressed `.npz`, like
/// `np.savez` (for tests and `bench synth`-style fixtures).
pub fn write_npz(path: &Path, arrays: &[(&str, Vec<u8>)], compressed: bool) -> Result<()> {
    use std::io::Write;
    let run = || -> Result<()> {
        let mut z = zip::ZipWriter::new(std::fs::File::create(path)?);
        let method = if compressed { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, bytes) in arrays {
            z.start_file(format!("{name}.npy"), opts)?;
            z.write_all(bytes)?;
        }
        z.finish()?;
        Ok(())
    };
    run().map_err(|e| anyhow::anyhow!("{}: cannot write .npz: {e:#}", path.display()))
}
