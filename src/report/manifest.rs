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
    /// Seconds per model and phase (see [`Phases`]).
    pub phases: BTreeMap<String, Phases>,
    /// Seconds building the results (rows, tables, curves) after the last model.
    pub report: f64,
    pub total: f64,
}

/// Where one model's time went, in wall seconds per phase. A reader thread
/// decodes the next image meanwhile, so `read` is only the time spent
/// waiting for it; in the metric passes image `i + 1` is scored while image
/// `i` is accumulated, so `score` and `rank` overlap and may sum to more
/// than the passes took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// The calibration passes (reading, scoring and fitting together).
    pub calibrate: f64,
    /// Metric passes: waiting for the next image's logits and mask.
    pub read: f64,
    /// Metric passes: the scorer (fused pass or CPU scorer, post-processing, outside maps).
    pub score: f64,
    /// Metric passes: the metric accumulators (positives, ranks, image
    /// scores, region labelling).
    pub rank: f64,
    /// Of `rank`: pass 2's exact ranking on the GPU (uploading the maps,
    /// dispatching, waiting for the counters); 0 when it ran on the CPU.
    #[serde(default)]
    pub rank_device: f64,
    /// Bootstrap replicates over the cached test maps.
    pub bootstrap: f64,
    /// `all_conventions`: the extra passes over test.
    pub conventions: f64,
}

impl Phases {
    /// One line for `bench run -v`.
    pub fn describe(&self) -> String {
        format!(
            "calibrate {:.3} s · read {:.3} s · score {:.3} s · rank {:.3} s (on the GPU {:.3} s) · bootstrap {:.3} s · conventions {:.3} s",
            self.calibrate, self.read, self.score, self.rank, self.rank_device, self.bootstrap, self.conventions
        )
    }
}

impl Manifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serialises") + "\n"
    }
}
