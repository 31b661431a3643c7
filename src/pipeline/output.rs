//! The files of a finished sweep and their atomic write: one code path for
//! `bench run`, `bench merge` and the Python package's `run()`.

use super::*;
use crate::report::{curves, page, tables};

/// The files of one dataset's results folder.
pub fn result_files(out: &RunOutput) -> Result<Vec<(String, Vec<u8>)>> {
    let cs: Vec<curves::Kept> = out
        .curves
        .iter()
        .map(|(model, m, counts, keep)| curves::Kept { model, method: m.id(), method_name: m.display(), counts, keep })
        .collect();
    let mut files = vec![
        ("results.json".to_string(), out.results.to_json().into_bytes()),
        ("tables.md".to_string(), tables::markdown(&out.results, true).into_bytes()),
        ("manifest.json".to_string(), out.manifest.to_json().into_bytes()),
        ("drift.json".to_string(), (serde_json::to_string(&out.drift)? + "\n").into_bytes()),
    ];
    files.extend(curves::files(&out.results, &cs));
    files.extend(page::files(&out.results));
    files.extend(out.failure_pngs.iter().cloned());
    if let Some(c) = &out.calibration {
        files.push(("calibration.json".to_string(), c.clone().into_bytes()));
    }
    if let Some(c) = &out.conventions_md {
        files.push(("conventions.md".to_string(), c.clone().into_bytes()));
    }
    Ok(files)
}

/// Every file of a sweep: one results folder, or with `[[datasets]]` one
/// subfolder per dataset plus a `tables.md` holding every dataset's tables
/// (in name order, as `bench table` lists the folder).
pub fn sweep_files(outs: &[(RunOutput, Config)]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = vec![];
    let mut sets = vec![];
    for (out, c) in outs {
        match &c.tag {
            None => files.extend(result_files(out)?),
            Some(t) => {
                files.extend(result_files(out)?.into_iter().map(|(f, b)| (format!("{t}/{f}"), b)));
                sets.push((Some(t.clone()), out.results.clone()));
            }
        }
    }
    if !sets.is_empty() {
        sets.sort_by(|a, b| a.0.cmp(&b.0));
        files.push(("tables.md".into(), tables::markdown_sets(&sets, true).into_bytes()));
    }
    Ok(files)
}

/// Write the sweep's results folder atomically, only over a folder bench
/// wrote (checked right before the swap: it may have changed during the run).
pub fn write(cfg: &Config, outs: &[(RunOutput, Config)]) -> Result<()> {
    let files = sweep_files(outs)?;
    let dir = cfg.output_dir();
    crate::report::check_replaceable(&dir, &cfg.dataset_names(), "`output`/`name`")?;
    crate::report::write_dir_atomic(&dir, &files)
}
