//! SHA-256 of the inputs a run read, for `manifest.json` and the shard
//! state files.
//!
//! Why in `data`: the checksum is a fact about an input file, recorded
//! where files are read; the report and the shard merge only copy it.

use anyhow::{Context, Result};

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex SHA-256 of the file at `p`, read in 1 MiB pieces
/// (equal to [`sha256_hex`] of its bytes).
pub fn sha256_file(p: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut f = std::fs::File::open(p)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex(&h.finalize()))
}

/// SHA-256 of every input file read, for manifest.json (each file hashed
/// once: a logits file from the bytes its reader read, beside the scoring
/// of those logits; other files streamed from the page cache).
#[derive(Default)]
pub struct Checksums(std::sync::Mutex<std::collections::BTreeMap<String, String>>);

impl Checksums {
    pub fn add(&self, p: &std::path::Path) -> Result<()> {
        let k = p.display().to_string();
        if self.0.lock().unwrap().contains_key(&k) {
            return Ok(());
        }
        // streamed through the hasher: no second whole-file buffer (a
        // 160 MB Cityscapes-sized logits file would otherwise be read into a
        // fresh allocation just to be hashed)
        let h = sha256_file(p).with_context(|| format!("{k}: cannot read"))?;
        self.0.lock().unwrap().insert(k, h);
        Ok(())
    }
    /// Whether `p` has been hashed already.
    pub fn contains(&self, p: &std::path::Path) -> bool {
        self.0.lock().unwrap().contains_key(&p.display().to_string())
    }

    /// Record `p`'s SHA-256 computed by its reader from the bytes it read
    /// (`npy::read_logits_hashed`): the same digest [`add`](Self::add)
    /// would take, without reading the file a second time.
    pub fn insert(&self, p: &std::path::Path, sha256: String) {
        self.0.lock().unwrap().entry(p.display().to_string()).or_insert(sha256);
    }

    /// Path → SHA-256 of every file added so far.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, String> {
        self.0.lock().unwrap().clone()
    }
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.0.lock().unwrap()).unwrap_or_default()
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_hash_equals_the_hash_of_the_bytes() {
        // 2.5 MiB + 3: several 1 MiB reads and a partial last one
        let bytes: Vec<u8> = (0..(5 << 19) + 3).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let p = std::env::temp_dir().join(format!("bench-sha-{}.bin", std::process::id()));
        std::fs::write(&p, &bytes).unwrap();
        let streamed = sha256_file(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(streamed, sha256_hex(&bytes));
        // the empty input's well-known digest
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
