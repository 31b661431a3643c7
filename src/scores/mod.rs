//! Anomaly scores from logits.
//!
//! Why this room exists: every method in the sweep is a pure per-pixel
//! function of the C logits (plus statistics fitted once on a calibration
//! split). Keeping the definitions here, once, lets the WGSL pass
//! (`gpu/`, `shaders/scores.wgsl`), the fast CPU block scorer
//! (`cpu/fast.rs`) and the f64 reference (`cpu/reference.rs`) be tested
//! against each other, and lets the metrics room stay ignorant of how a
//! score was made.
//!
//! Adding a method = one WGSL function in `shaders/methods.wgsl`, one CPU
//! reference function in `cpu/reference.rs` and its block finalizer in
//! `cpu/fast.rs`, one entry in the `methods!` list below
//! (enum arm + metadata), one line in README. The fused shader's per-method
//! dispatch and stores are generated from that list (`gpu/fused.rs`), and the CPU
//! scorer dispatches through the same list. A method with fitted statistics
//! or whole-image post-processing also points at its own hooks from its row
//! ([`Fit`]: check + GPU packer; [`Post`]: CPU and GPU passes), so neither
//! scorer names a method.

pub mod calib;
pub mod cpu;
pub mod gpu;
pub mod kl;
pub mod params;
pub mod pool;
pub mod post;

use anyhow::{Context, Result, bail};
use serde::Serialize;

pub use crate::data::{LogitData, Logits};
pub use calib::{Calibration, HeatParams, SmlStats};
pub use post::{HeatPost, SmlPost};

/// Which of the plan's temperatures a method's softmax sum uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temp {
    /// No Σ exp needed.
    None,
    /// `[method.msp] temperature`.
    Msp,
    /// `[method.energy] temperature`.
    Energy,
    /// T = 1 (HEAT's logit energy, entropy).
    One,
}

/// Per-pixel quantities beyond max / first argmax / Σ exp that a method
/// needs from the single pass over the logits (GPU pipeline variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    /// The pixel's C logits kept in a private array (`z` in WGSL; at most
    /// [`gpu::MAX_LOGIT_ARRAY`] classes on the GPU).
    pub logits: bool,
    /// The WGSL function overwrites that private array (HEAT whitens it in
    /// place), so the fused dispatch runs it after every other method.
    pub clobbers: bool,
    /// `xs = Σ (z_c − max)·exp(z_c − max)` at T = 1 (entropy), accumulated
    /// online next to the T = 1 Σ exp.
    pub xlogx: bool,
}

/// Everything the host knows about one built-in method: its names, its
/// WGSL function (in `shaders/methods.wgsl`), its CPU reference (in
/// `cpu/reference.rs`), its fast block finalizer (`cpu/fast.rs`) and what it needs. The fused shader's dispatch and the CPU
/// scorer's dispatch are both generated from this table, so a method is
/// defined exactly once per language.
#[derive(Clone, Copy)]
pub struct MethodSpec {
    pub id: &'static str,
    /// Column header in the tables (the seed table's wording).
    pub display: &'static str,
    /// Name of `fn NAME(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32`
    /// in `shaders/methods.wgsl`.
    pub wgsl: &'static str,
    /// The f64 reference at one pixel (`cpu/reference.rs`).
    pub cpu: cpu::CpuFn,
    /// The fast scorer's finalizer over one block of pixels
    /// (`cpu/fast.rs`, [`cpu::BlockFn`]), tested against `cpu`.
    pub block: cpu::BlockFn,
    pub temperature: Temp,
    pub needs: Needs,
    /// Statistics fitted on a calibration split, for methods that have them.
    pub fit: Option<Fit>,
    /// Whole-image post-processing of the method's map, for methods that have it.
    pub post: Option<Post>,
}

/// A method's fitted statistics as the scorers see them: a check that the
/// plan's [`Calibration`] can score C classes (both scorers, before any
/// pixel) and the packer that uploads them to the fused pass. The
/// statistics themselves are accumulated by [`calib`]'s one calibration pass.
#[derive(Clone, Copy)]
pub struct Fit {
    pub check: fn(&Calibration, usize) -> Result<()>,
    pub gpu_pack: gpu::pack::PackFn,
}

/// A method's whole-image post-processing (needs neighbours across tile
/// borders, so it runs on the assembled map after the fused pass): whether
/// a plan turns it on, whether it reads the predicted-class map, and its
/// CPU reference and GPU pass.
#[derive(Clone, Copy)]
pub struct Post {
    pub active: fn(&ScorePlan) -> bool,
    pub needs_pred: fn(&ScorePlan) -> bool,
    pub cpu: post::CpuPostFn,
    pub gpu: gpu::post::GpuPostFn,
}

/// Declares [`Method`] and its [`MethodSpec`] table from one list: adding a
/// method is one entry here (plus its WGSL and CPU functions and a README
/// line). The enum's declaration order is its GPU output slot.
macro_rules! methods {
    ($($(#[$doc:meta])* $v:ident => $spec:expr,)*) => {
        /// A built-in anomaly score. Higher = more anomalous, always.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Method {
            $($(#[$doc])* $v,)*
        }

        impl Method {
            /// Every built-in method, in slot order.
            pub const ALL: &'static [Method] = &[$(Method::$v,)*];

            /// The method's row of the table.
            pub fn spec(self) -> &'static MethodSpec {
                match self {
                    $(Method::$v => {
                        const S: MethodSpec = $spec;
                        &S
                    })*
                }
            }
        }
    };
}

methods! {
    /// Hendrycks et al. 2022: `−max_c z_c`.
    MaxLogit => MethodSpec {
        id: "max_logit", display: "Simple Max Logits", wgsl: "score_max_logit", cpu: cpu::max_logit_px, block: cpu::fast::max_logit_blk,
        temperature: Temp::None, needs: Needs { logits: false, clobbers: false, xlogx: false },
        fit: None, post: None,
    },
    /// Hendrycks & Gimpel 2017: `−max_c softmax(z/T)_c`.
    Msp => MethodSpec {
        id: "msp", display: "Maximum Softmax Probability", wgsl: "score_msp", cpu: cpu::msp_px, block: cpu::fast::msp_blk,
        temperature: Temp::Msp, needs: Needs { logits: false, clobbers: false, xlogx: false },
        fit: None, post: None,
    },
    /// Liu et al. 2020: `−T·logsumexp(z/T)`.
    Energy => MethodSpec {
        id: "energy", display: "Energy Score", wgsl: "score_energy", cpu: cpu::energy_px, block: cpu::fast::energy_blk,
        temperature: Temp::Energy, needs: Needs { logits: false, clobbers: false, xlogx: false },
        fit: None, post: None,
    },
    /// Jung et al. 2021: `−(max z − μ_ĉ)/σ_ĉ`.
    Sml => MethodSpec {
        id: "sml", display: "Standardized Max Logits", wgsl: "score_sml", cpu: cpu::sml_px, block: cpu::fast::sml_blk,
        temperature: Temp::None, needs: Needs { logits: false, clobbers: false, xlogx: false },
        fit: Some(Fit { check: calib::check_sml, gpu_pack: gpu::pack::pack_sml }),
        post: Some(Post { active: ScorePlan::sml_post_active, needs_pred: ScorePlan::sml_needs_pred, cpu: post::sml_cpu, gpu: gpu::post::sml_gpu }),
    },
    /// SPEC §4.1: soft-min of z-scored logit energy and class-Gaussian energy.
    Heat => MethodSpec {
        id: "heat", display: "HEAT", wgsl: "score_heat", cpu: cpu::heat_px, block: cpu::fast::heat_blk,
        temperature: Temp::One, needs: Needs { logits: true, clobbers: true, xlogx: false },
        fit: Some(Fit { check: calib::check_heat, gpu_pack: gpu::pack::pack_heat }),
        post: Some(Post { active: ScorePlan::heat_post_active, needs_pred: |_| false, cpu: post::heat_cpu, gpu: gpu::post::heat_gpu }),
    },
    /// Softmax entropy at T = 1: `−Σ_c p_c log p_c`, `p = softmax(z)`.
    Entropy => MethodSpec {
        id: "entropy", display: "Softmax Entropy", wgsl: "score_entropy", cpu: cpu::entropy_px, block: cpu::fast::entropy_blk,
        temperature: Temp::One, needs: Needs { logits: false, clobbers: false, xlogx: true },
        fit: None, post: None,
    },
    /// `−(top-1 − top-2 logit)`.
    Margin => MethodSpec {
        id: "margin", display: "Logit Margin", wgsl: "score_margin", cpu: cpu::margin_px, block: cpu::fast::margin_blk,
        temperature: Temp::None, needs: Needs { logits: true, clobbers: false, xlogx: false },
        fit: None, post: None,
    },
    /// Liu et al. 2023: `Σ_c p_c^γ (1 − p_c)^γ`, γ = 0.1, all classes.
    Gen => MethodSpec {
        id: "gen", display: "Generalized Entropy", wgsl: "score_gen", cpu: cpu::gen_px, block: cpu::fast::gen_blk,
        temperature: Temp::None, needs: Needs { logits: true, clobbers: false, xlogx: false },
        fit: None, post: None,
    },
    /// Nayal et al. 2023: `−Σ_k tanh(l_k)`.
    Rba => MethodSpec {
        id: "rba", display: "Rejected by All", wgsl: "score_rba", cpu: cpu::rba_px, block: cpu::fast::rba_blk,
        temperature: Temp::None, needs: Needs { logits: true, clobbers: false, xlogx: false },
        fit: None, post: None,
    },
    /// Hendrycks et al. 2022: `KL(p ‖ d_ĉ)`, `d_c` = the calibration
    /// pixels' mean softmax per predicted class (`kl.rs`).
    KlMatching => MethodSpec {
        id: "kl_matching", display: "KL Matching", wgsl: "score_kl_matching", cpu: kl::kl_px, block: cpu::fast::kl_blk,
        temperature: Temp::One, needs: Needs { logits: true, clobbers: false, xlogx: false },
        fit: Some(Fit { check: kl::check_kl, gpu_pack: gpu::pack::pack_kl }),
        post: None,
    },
}

impl Method {
    /// The id used in configs, results.json and folder names.
    pub fn id(self) -> &'static str {
        self.spec().id
    }

    /// Column header in the tables (the seed table's wording).
    pub fn display(self) -> &'static str {
        self.spec().display
    }

    /// Index of the method in the GPU output layout: its position in
    /// [`Method::ALL`] (the `Params` row / temperature tables).
    pub fn slot(self) -> usize {
        self as usize
    }

    /// Whether the method needs statistics fitted on a calibration split.
    pub fn needs_calibration(self) -> bool {
        self.spec().fit.is_some()
    }

    /// The temperature of this method's softmax sum under `plan`, if any.
    pub fn temperature(self, plan: &ScorePlan) -> Option<f64> {
        match self.spec().temperature {
            Temp::None => None,
            Temp::Msp => Some(plan.msp_temperature),
            Temp::Energy => Some(plan.energy_temperature),
            Temp::One => Some(1.0),
        }
    }

    pub fn parse(id: &str) -> Result<Method> {
        for &m in Method::ALL {
            if m.id() == id {
                return Ok(m);
            }
        }
        bail!(
            "unknown method '{id}' (known: {})",
            Method::ALL.iter().map(|m| m.id()).collect::<Vec<_>>().join(", ")
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
    /// SML boundary suppression / dilated smoothing (plain by default),
    /// applied to the whole-image SML map after the fused pass.
    pub sml_post: SmlPost,
    /// HEAT's spatial-consistency term (off by default), applied to the
    /// whole-image HEAT map after the fused pass.
    pub heat_post: HeatPost,
    /// `[method.gen]` / `[method.margin]` (the defaults: γ = 0.1 over all
    /// classes, the logit margin).
    pub params: params::MethodParams,
}

impl ScorePlan {
    /// Whether scoring this plan reads each image's per-pixel features
    /// (`features/<model>/<id>.npy`): HEAT is requested and was fitted on
    /// them. The pipeline asks this instead of naming a method.
    pub fn uses_features(&self) -> bool {
        self.methods.contains(&Method::Heat) && self.heat().is_some_and(|h| h.features())
    }

    /// Whether the SML maps are post-processed (needs the predicted classes).
    pub fn sml_post_active(&self) -> bool {
        self.sml_post.active() && self.methods.contains(&Method::Sml)
    }
    /// Whether the HEAT maps get the spatial-consistency term.
    pub fn heat_post_active(&self) -> bool {
        self.heat_post.active() && self.methods.contains(&Method::Heat)
    }
    /// Whether SML's post-processing reads the predicted-class map.
    pub fn sml_needs_pred(&self) -> bool {
        self.sml_post_active() && self.sml_post.boundary_suppression
    }
    /// The requested methods whose maps this plan post-processes, with
    /// their hooks (plan order; a duplicated method appears once per entry).
    pub fn posts(&self) -> impl Iterator<Item = (usize, Post)> + '_ {
        self.methods.iter().enumerate().filter_map(|(i, m)| m.spec().post.filter(|p| (p.active)(self)).map(|p| (i, p)))
    }
    /// Whether any active post-processing reads the predicted-class map.
    pub fn needs_pred(&self) -> bool {
        self.posts().any(|(_, p)| (p.needs_pred)(self))
    }
    /// Check, before any pixel, that the calibration can score every
    /// requested method with fitted statistics on `c` classes.
    pub fn check_fits(&self, c: usize) -> Result<()> {
        for m in &self.methods {
            if let Some(fit) = m.spec().fit {
                let cal = self.calibration.as_ref().context("SML/HEAT/KL matching requested without calibration statistics")?;
                (fit.check)(cal, c)?;
            }
        }
        Ok(())
    }
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

impl ScoreMaps {
    /// Free the maps for good, past [`pool`]: for maps let go in bulk (a
    /// cache giving way), which the next images would not reuse before
    /// the pool fills.
    pub fn free(mut self) {
        drop(std::mem::take(&mut self.maps));
    }
}

/// Dropped maps go back to [`pool`] for the next image.
impl Drop for ScoreMaps {
    fn drop(&mut self) {
        for m in self.maps.drain(..) {
            pool::give(m);
        }
    }
}

/// Something that turns logits into score maps: the CPU reference or the
/// WGSL pass. Both must agree to float tolerance.
pub trait Scorer: Send {
    /// Human-readable device description ("cpu (8 threads)", adapter name).
    fn device(&self) -> String;
    fn score(&mut self, logits: &Logits, plan: &ScorePlan) -> Result<ScoreMaps> {
        self.score_features(logits, None, plan)
    }
    /// [`Scorer::score`] with the image's per-pixel features `[D, H, W]`
    /// (`features/<model>/<id>.npy`), used by HEAT when its Gaussians were
    /// fitted on features (see [`heat_features`]).
    fn score_features(&mut self, logits: &Logits, features: Option<&Logits>, plan: &ScorePlan) -> Result<ScoreMaps>;
    /// The device this scorer runs on, when it is a GPU: pass 2 then ranks
    /// the negatives there too (`scores::gpu::rank::RankSet`).
    fn gpu_context(&self) -> Option<&gpu::GpuContext> {
        None
    }
}

/// The features HEAT must read for this plan: `Some` exactly when HEAT is
/// requested and was fitted on features, checked against the fit's
/// dimension and the logits' H×W; features a plan does not use are ignored.
pub fn heat_features<'a>(logits: &Logits, features: Option<&'a Logits>, plan: &ScorePlan) -> Result<Option<&'a Logits>> {
    let Some(h) = plan.heat().filter(|_| plan.uses_features()) else {
        return Ok(None);
    };
    let Some(f) = features else {
        bail!("HEAT was fitted on per-pixel features ({} dims) but this image has none", h.dim());
    };
    anyhow::ensure!(
        f.c == h.dim(),
        "features have {} dims but HEAT was fitted on {}",
        f.c,
        h.dim()
    );
    anyhow::ensure!(
        (f.h, f.w) == (logits.h, logits.w),
        "features are {}×{} but the logits (after any resize) are {}×{}",
        f.h,
        f.w,
        logits.h,
        logits.w
    );
    Ok(Some(f))
}
