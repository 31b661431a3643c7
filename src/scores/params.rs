//! Parameters of the logit-only methods that have any: `[method.gen]`
//! (Generalized Entropy's γ and M) and `[method.margin]` (margin on logits
//! or on probabilities).
//!
//! Why a file of its own: the three scorers (WGSL, f64 reference, fast f32)
//! and the config read the same values, and results.json records them in
//! words; keeping the defaults, the validation and the wording in one place
//! keeps those four in step.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// `[method.gen]`: Liu et al. (CVPR 2023) `Σ_{top-M classes} p^γ (1 − p)^γ`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenParams {
    /// γ (the paper's default 0.1); in (0, 1].
    pub gamma: f64,
    /// M: only the M largest probabilities enter the sum (the official
    /// `np.sort(probs)[:, -M:]`, so M ≥ C means every class); absent = all.
    pub top_m: Option<usize>,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams { gamma: 0.1, top_m: None }
    }
}

/// What `margin` takes the top-1 − top-2 difference of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarginOn {
    /// The logits (default).
    #[default]
    Logits,
    /// The softmax probabilities at T = 1.
    Probs,
}

/// `[method.margin]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarginParams {
    pub on: MarginOn,
}

/// Both, as the scorers read them (a field of [`super::ScorePlan`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MethodParams {
    pub gen_entropy: GenParams,
    pub margin: MarginParams,
}

impl GenParams {
    /// Errors name the key (`method.gen.…`).
    pub fn validate(&self) -> Result<()> {
        // γ ≤ 0 makes every term ≥ 1 regardless of p (no ordering left);
        // the paper defines γ ∈ (0, 1).
        if !(self.gamma.is_finite() && self.gamma > 0.0 && self.gamma <= 1.0) {
            bail!("`method.gen.gamma` must be in (0, 1] (Liu et al. use 0.1), got {}", self.gamma);
        }
        if self.top_m == Some(0) {
            bail!("`method.gen.top_m` must be at least 1 (the number of largest probabilities summed; omit it for all classes)");
        }
        Ok(())
    }

    /// M for `c` classes: `top_m` clamped to `c` (as the official slice).
    pub fn m(&self, c: usize) -> usize {
        self.top_m.map_or(c, |m| m.min(c))
    }

    /// results.json's wording.
    pub fn variant(&self) -> String {
        match self.top_m {
            None => format!("γ = {}, all classes", self.gamma),
            Some(m) => format!("γ = {}, the top {m} classes (M)", self.gamma),
        }
    }
}

impl MarginParams {
    /// results.json's wording.
    pub fn variant(&self) -> String {
        match self.on {
            MarginOn::Logits => "top-1 − top-2 logit, negated".into(),
            MarginOn::Probs => "top-1 − top-2 softmax probability (T = 1), negated".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_key() {
        for (g, ok) in [(0.1, true), (1.0, true), (0.0, false), (-0.5, false), (1.5, false), (f64::NAN, false)] {
            let r = GenParams { gamma: g, top_m: None }.validate();
            assert_eq!(r.is_ok(), ok, "{g}");
            if let Err(e) = r {
                assert!(e.to_string().contains("method.gen.gamma"), "{e}");
            }
        }
        let e = GenParams { gamma: 0.1, top_m: Some(0) }.validate().unwrap_err().to_string();
        assert!(e.contains("method.gen.top_m"), "{e}");
        assert_eq!(GenParams { gamma: 0.1, top_m: Some(50) }.m(19), 19);
        assert_eq!(GenParams { gamma: 0.1, top_m: Some(5) }.m(19), 5);
        assert_eq!(GenParams::default().m(19), 19);
    }
}
