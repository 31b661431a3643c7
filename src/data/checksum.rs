//! SHA-256 of the inputs a run read, for `manifest.json` and the shard
//! state files.
//!
//! Why in `data`: the checksum is a fact about an input file, recorded
//! where files are read; the report and the shard merge only copy it.

use anyhow::{Context, Result};

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of every input file read, for manifest.json (each file hashed
/// once, on the reader thread, from the page cache).
#[derive(Default)]
pub struct Checksums(std::sync::Mutex<std::collections::BTreeMap<String, String>>);

impl Checksums {
    pub fn add(&self, p: &std::path::Path) -> Result<()> {
        let k = p.display().to_string();
        if self.0.lock().unwrap().contains_key(&k) {
            return Ok(());
        }
        let bytes = std::fs::read(p).with_context(|| format!("{k}: cannot read"))?;
        let h = sha256_hex(&bytes);
        self.0.lock().unwrap().insert(k, h);
        Ok(())
    }
    /// Path → SHA-256 of every file added so far.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, String> {
        self.0.lock().unwrap().clone()
    }
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.0.lock().unwrap()).unwrap_or_default()
    }
}

