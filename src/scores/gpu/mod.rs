//! The WGSL path, tested against [`super::cpu`].
//!
//! Why separate files with one-way arrows:
//! - `context.rs` chooses and opens the adapter: device, queue, limits and
//!   the error sink every pass shares. It knows no pass.
//! - `fused.rs` is the fused scoring pass (`shaders/scores.wgsl`): every
//!   requested score of a pixel tile in one dispatch, and [`GpuScorer`], the
//!   [`super::Scorer`] that runs it and then the post-processing passes.
//! - `pack.rs` is the fused pass's uniform block (`Params`) and the packers
//!   of fitted statistics the method table points at (SML, HEAT).
//! - `post.rs` holds the whole-image passes that need neighbours across
//!   tile borders (SML boundary suppression and smoothing, HEAT's spatial
//!   term), each owning its own pipelines.
//! - `rank.rs` is the exact ranking of negatives on the device
//!   (`shaders/rank.wgsl`): the CPU engine's own lookup table uploaded once
//!   per split and method, u32 counters flushed into the engine's u64 tally.
//!   Pass 2 of a sweep with a GPU scorer ranks there (`RankSet`); tested
//!   against the CPU ranker.
//!
//! `fused` → `pack`, `fused` → `post` → `context`, `fused` → `context`,
//! `rank` → `context` (and the metrics engine's table):
//! nothing points back, and `fused` names no method (the table in
//! `scores/mod.rs` points at each method's packer and post-processing).

pub mod context;
pub mod fused;
pub mod pack;
pub mod post;
pub mod rank;

pub use context::{AdapterSummary, GpuContext, list_adapters};
pub use fused::{DEFAULT_TILE_BYTES, GpuScorer, shader_source};
pub use pack::MAX_LOGIT_ARRAY;
