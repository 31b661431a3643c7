//! `metrics.all_conventions`: the test split's metrics under every metric
//! convention preset, side by side (`conventions.md`).

use super::*;
use crate::metrics::PositiveCollector;
use crate::metrics::engine::Ranker;

/// One row of `conventions.md`: AUROC, AUPR, FPR95, F1 and a note.
pub(crate) type ConvRow = ([Option<f64>; 4], String);

/// `metrics.all_conventions`: per method, the split's metrics under every
/// preset of [`crate::metrics::conventions::PRESETS`], from the raw scores
/// (two extra passes; the pooled statistic once per score precision, the
/// per-image presets one image at a time). Anomaly-positive numbers only.
pub(crate) fn convention_rows(cx: &Ctx, split: &Split, model: &str, scorer: &mut dyn Scorer, plan: &ScorePlan, nm: usize) -> Result<Vec<Vec<ConvRow>>> {
    use crate::metrics::conventions::{Average, ImageMean, PRESETS, ScorePrecision};
    if !matches!(cx.exec, Exec::Local) {
        bail!("`metrics.all_conventions` is not implemented for sharded runs yet (run without --shard, or use `bench eval --all-conventions` on saved score maps)");
    }
    let precs = [ScorePrecision::F32, ScorePrecision::F16, ScorePrecision::U16];
    let pi = |p: ScorePrecision| precs.iter().position(|&q| q == p).unwrap_or(0);
    let inp = cx.inp;
    let ctx = |i: usize| format!("{}/{} [{}] (all_conventions)", split.name, split.stems[i], model);
    let mut pcs: Vec<Vec<PositiveCollector>> = (0..3).map(|_| (0..nm).map(|_| PositiveCollector::new()).collect()).collect();
    // u16 needs scores in [0, 1]: a method outside it gets no bravo row
    let mut bad: Vec<Vec<Option<String>>> = vec![vec![None; nm]; 3];
    let mut means: Vec<Vec<ImageMean>> = PRESETS.iter().map(|_| (0..nm).map(|_| ImageMean::default()).collect()).collect();
    let round = |p: ScorePrecision, s: &[f32]| -> Result<Vec<f32>> {
        let mut v = s.to_vec();
        p.apply(&mut v)?;
        Ok(v)
    };
    for_each_image(split, model, inp, 0..split.stems.len(), |i, lg, lab| {
        let maps = score_image_raw(scorer, lg, plan, inp, split, model, i).with_context(|| ctx(i))?;
        for (m, s) in maps.maps.iter().enumerate() {
            for (k, &p) in precs.iter().enumerate() {
                if bad[k][m].is_some() {
                    continue;
                }
                match round(p, s) {
                    Ok(v) => pcs[k][m].add(&v, &lab, None),
                    Err(e) => bad[k][m] = Some(e.to_string()),
                }
            }
            for (j, pr) in PRESETS.iter().enumerate() {
                if pr.conv.average == Average::Images && bad[pi(pr.conv.score_precision)][m].is_none() {
                    let v = round(pr.conv.score_precision, s)?;
                    means[j][m].add(&counts_of(&v, &lab), &pr.conv);
                }
            }
        }
        Ok(())
    })?;
    let mut rankers: Vec<Vec<Ranker>> = pcs.into_iter().map(|v| v.into_iter().map(|p| p.finish()).collect()).collect();
    for_each_image(split, model, inp, 0..split.stems.len(), |i, lg, lab| {
        let maps = score_image_raw(scorer, lg, plan, inp, split, model, i).with_context(|| ctx(i))?;
        for (m, s) in maps.maps.iter().enumerate() {
            for (k, &p) in precs.iter().enumerate() {
                if bad[k][m].is_none() {
                    rankers[k][m].add(&round(p, s)?, &lab);
                }
            }
        }
        Ok(())
    })?;
    let mut counts: Vec<Vec<Counts>> = vec![];
    for v in rankers {
        counts.push(v.into_iter().map(|r| r.finish()).collect::<Result<Vec<_>>>()?);
    }
    let mut out = vec![vec![]; nm];
    for (m, rows) in out.iter_mut().enumerate() {
        for (j, pr) in PRESETS.iter().enumerate() {
            let k = pi(pr.conv.score_precision);
            rows.push(if let Some(e) = &bad[k][m] {
                ([None; 4], e.clone())
            } else if pr.conv.average == Average::Images {
                let im = &means[j][m];
                (im.mean(), format!("mean over {} images ({} skipped)", im.images(), im.skipped))
            } else {
                let s = pr.conv.summary(&counts[k][m]);
                ([s.auroc, s.aupr, s.fpr95, s.f1], String::new())
            });
        }
    }
    Ok(out)
}

/// `conventions.md`: per (model, method), one row per preset.
pub(crate) fn conventions_markdown(cfg: &Config, rows: &[(String, String, Vec<ConvRow>)]) -> String {
    use crate::metrics::conventions::PRESETS;
    let p = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{:.4}", 100.0 * x));
    let mut s = format!(
        "# Metric conventions: `{}`, split `test`\n\nThe same scores and pixels under each code's metric convention (README, Metric conventions): AUROC / AUPR / FPR95 / F1 in %, anomaly positive (AUPR-In / FPR95-In: `bench eval --positive normal`). Exact curves; SMIYC's 768-bin approximation is not reproduced.\n",
        cfg.name
    );
    for (model, method, r) in rows {
        s += &format!("\n## {model} — {method}\n\n| convention | AUROC | AUPR | FPR95 | F1 | fpr95 | aupr | precision | note |\n|---|---|---|---|---|---|---|---|---|\n");
        for (pr, (v, note)) in PRESETS.iter().zip(r) {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                pr.name,
                p(v[0]),
                p(v[1]),
                p(v[2]),
                p(v[3]),
                pr.conv.fpr95.name(),
                pr.conv.aupr.name(),
                pr.conv.score_precision.name(),
                note
            );
        }
    }
    s
}
