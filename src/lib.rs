//! `bench`: exact, reproducible pixel-level anomaly-segmentation benchmarking.
//!
//! Four rooms with one-way arrows: [`data`] → [`scores`] → [`metrics`] →
//! [`report`]. [`config`] and [`pipeline`] sit on top and only wire rooms
//! together; `main.rs` is the CLI.

pub mod config;
pub mod data;
pub mod external;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod scores;
pub mod shard;
pub mod simd;
pub mod synth;
