//! Anomaly scores from logits.
//!
//! Why this room exists: every method in the sweep is a pure per-pixel
//! function of the C logits (plus statistics fitted once on a calibration
//! split). Keeping the definitions here, once, lets the WGSL pass
//! (`gpu.rs`, `shaders/scores.wgsl`) and its CPU twin (`cpu.rs`) be tested
//! against each other, and lets the metrics room stay ignorant of how a
//! score was made.
//!
//! Adding a method = one WGSL function, one CPU function in `cpu.rs`, one arm
//! in [`Method`], one line in README.

pub mod calib;
pub mod cpu;
pub mod gpu;

use anyhow::{Result, bail};
use serde::Serialize;

pub use crate::data::{LogitData, Logits};
pub use calib::{Calibration, HeatParams, SmlStats};

/// A built-in anomaly score. Higher = more anomalous, always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    MaxLogit,
    Msp,
    Energy,
    Sml,
    Heat,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::MaxLogit,
        Method::Msp,
        Method::Sml,
        Method::Energy,
        Method::Heat,
    ];

    /// The id used in configs, results.json and folder names.
    pub fn id(self) -> &'static str {
        match self {
            Method::MaxLogit => "max_logit",
            Method::Msp => "msp",
            Method::Energy => "energy",
            Method::Sml => "sml",
            Method::Heat => "heat",
        }
    }

    /// Column header in the tables (the seed table's wording).
    pub fn display(self) -> &'static str {
        match self {
            Method::MaxLogit => "Simple Max Logits",
            Method::Msp => "Maximum Softmax Probability",
            Method::Energy => "Energy Score",
            Method::Sml => "Standardized Max Logits",
            Method::Heat => "HEAT",
        }
    }

    /// Index of the method in the GPU output layout (fixed, see scores.wgsl).
    pub fn slot(self) -> usize {
        match self {
            Method::MaxLogit => 0,
            Method::Msp => 1,
            Method::Energy => 2,
            Method::Sml => 3,
            Method::Heat => 4,
        }
    }

    /// Whether the method needs statistics fitted on a calibration split.
    pub fn needs_calibration(self) -> bool {
        matches!(self, Method::Sml | Method::Heat)
    }

    pub fn parse(id: &str) -> Result<Method> {
        for m in Method::ALL {
            if m.id() == id {
                return Ok(m);
            }
        }
        bail!(
            "unknown method '{id}' (known: {})",
            Method::ALL.map(|m| m.id()).join(", ")
        )
    }
}

/// Everything a scorer needs besides the logits: which methods, their
/// parameters, and the fitted calibration.
#[derive(Debug, Clone)]
pub struct ScorePlan {
    /// Methods to compute, in output order.
    pub methods: Vec<Method>,
    pub msp_temperature: f64,
    pub energy_temperature: f64,
    /// Present when SML or HEAT is requested.
    pub calibration: Option<Calibration>,
}

impl ScorePlan {
    pub fn sml(&self) -> Option<&SmlStats> {
        self.calibration.as_ref().map(|c| &c.sml)
    }
    pub fn heat(&self) -> Option<&HeatParams> {
        self.calibration.as_ref().map(|c| &c.heat)
    }
}

/// Score maps of one image: `maps[i]` belongs to `plan.methods[i]`, row-major
/// `[H, W]`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ScoreMaps {
    pub h: usize,
    pub w: usize,
    pub maps: Vec<Vec<f32>>,
}

/// Something that turns logits into score maps: the CPU reference or the
/// WGSL pass. Both must agree to float tolerance.
pub trait Scorer {
    /// Human-readable device description ("cpu (8 threads)", adapter name).
    fn device(&self) -> String;
    fn score(&mut self, logits: &Logits, plan: &ScorePlan) -> Result<ScoreMaps>;
}
