//! The pre-flight check of a sweep: every input header and the label
//! warnings, before any scoring (see `data::preflight`).

use super::*;

/// The pre-flight check of every split `read` reads (see
/// `data::preflight`): missing files, every logits / outside map header
/// against its mask's size, all problems in one error; then the label
/// values of each split for the label-convention warnings (shown now,
/// recorded in results.json).
pub(crate) fn preflight(cfg: &Config, inp: &Inputs, sw: &Sweep, read: &[&Split]) -> Result<Vec<String>> {
    use crate::data::preflight::{LogitsExpect, Preflight, label_values, label_warnings};
    let mut pf = Preflight::default();
    let ex = LogitsExpect { npz_key: inp.npz_key.as_deref(), hwc: inp.hwc, resize: inp.resize != Resize::None };
    let mut classes: Option<usize> = None;
    for s in read {
        let masks = pf.masks(s);
        for mc in &cfg.models {
            if !sw.methods.is_empty() {
                if let Err(e) = s.check_model(&mc.id) {
                    pf.problem(e);
                    continue;
                }
                for (i, stem) in s.stems.iter().enumerate() {
                    match s.logits_path(&mc.id, stem) {
                        Ok(p) => {
                            let c = pf.logits(&p, masks[i], &s.labels[i], &ex);
                            classes = classes.max(c);
                        }
                        Err(e) => pf.problem(e),
                    }
                }
            }
            if s.name == "calibration" {
                continue; // outside maps are read in val and test only
            }
            for e in &inp.external {
                for i in 0..s.stems.len() {
                    match e.path(s, &mc.id, i) {
                        Ok(p) if matches!(crate::data::dataset::ext_lower(&p).as_str(), "npy" | "npz") => {
                            pf.score_map(&p, inp.npz_score_key.as_deref(), masks[i], &s.labels[i], ex.resize)
                        }
                        Ok(_) => {}
                        Err(e) => pf.problem(e),
                    }
                }
            }
        }
    }
    let mut warnings = pf.finish()?;
    let presets: Vec<(&str, &[u16], &[u16])> = crate::config::PRESETS.iter().map(|p| (p.0.name(), p.1, p.2)).collect();
    for s in read {
        let hist = label_values(s, &inp.labels)?;
        let mut w = label_warnings(&s.name, &hist, &inp.labels, classes, &presets);
        if s.name == "calibration" {
            // in-distribution by design: only unexpected values matter
            w.retain(|x| !x.contains("anomaly value"));
        }
        warnings.extend(w);
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok(warnings)
}
