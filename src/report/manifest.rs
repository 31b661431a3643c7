//! `manifest.json`: how a results folder was made — tool, config and input
//! checksums, device, threads, timings, warnings.
//!
//! Why a typed struct: it is the one volatile file of a results folder
//! (timings, adapter), so it is git-ignored; everything a reader may want
//! to check about provenance is still here, written by one struct (fields in
//! name order, as the file lists them).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// `"fitted"`, the reused `calibration.json`, or null (no SML/HEAT).
    pub calibration: Option<String>,
    pub config_sha256: String,
    pub dataset: String,
    /// The adapter, or how many shards were merged.
    pub device: String,
    pub git_revision: Option<String>,
    /// Path → SHA-256 of every input read.
    pub inputs_sha256: BTreeMap<String, String>,
    pub shards: Option<usize>,
    pub threads: usize,
    pub timings_s: Timings,
    pub tool: String,
    pub version: String,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timings {
    /// Seconds per model.
    pub per_model: BTreeMap<String, f64>,
    pub total: f64,
}

impl Manifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serialises") + "\n"
    }
}
