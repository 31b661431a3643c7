//! Everything a sweep leaves behind: `results.json`, `tables.md`,
//! `manifest.json`, and the comparison of two results folders.
//!
//! Why this room exists: CI and reviewers never look at the metrics engine,
//! only at these files. They are written atomically (`atomic.rs`: a temp folder swapped
//! into place, only over bench's own folders) so a failed or killed run never
//! leaves a half-written or mixed folder,
//! and the two files meant for diffing are byte-deterministic.

pub mod atomic;
pub mod curves;
pub mod diff;
pub mod drift;
pub mod sensitivity;
pub mod eval;
pub mod manifest;
pub mod markup;
pub mod page;
pub mod panel;
pub mod results;
pub mod tables;

pub use results::Results;

pub use atomic::{check_replaceable, exit_interrupted, install_signal_handler, interrupted, recover, write_dir_atomic, write_guard};
