//! `metrics.all_conventions`: the test split's metrics under every metric
//! convention preset, side by side (`conventions.md`).

use super::*;
use crate::metrics::PositiveCollector;
use crate::metrics::conventions::{Average, ImageMean, PRESETS, ScorePrecision};
use crate::metrics::engine::Ranker;

/// One row of `conventions.md`: AUROC, AUPR, FPR95, F1 and a note.
pub(crate) type ConvRow = ([Option<f64>; 4], String);

/// Score precisions the presets use, in the order of [`ConvPass1::pcs`].
const PRECS: [ScorePrecision; 3] = [ScorePrecision::F32, ScorePrecision::F16, ScorePrecision::U16];

fn prec_index(p: ScorePrecision) -> usize {
    PRECS.iter().position(|&q| q == p).unwrap_or(0)
}

/// Pass 1 of `all_conventions`: per score precision and method the
/// positives, per preset and method the per-image means, and the reason a
/// precision cannot be applied to a method (u16 needs scores in [0, 1]).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct ConvPass1 {
    pcs: Vec<Vec<PositiveCollector>>,
    bad: Vec<Vec<Option<String>>>,
    means: Vec<Vec<ImageMean>>,
}

impl ConvPass1 {
    fn new(nm: usize) -> ConvPass1 {
        ConvPass1 {
            pcs: (0..PRECS.len()).map(|_| (0..nm).map(|_| PositiveCollector::new()).collect()).collect(),
            bad: vec![vec![None; nm]; PRECS.len()],
            means: PRESETS.iter().map(|_| (0..nm).map(|_| ImageMean::default()).collect()).collect(),
        }
    }

    fn add(&mut self, maps: &ScoreMaps, lab: &[u8]) -> Result<()> {
        for (m, s) in maps.maps.iter().enumerate() {
            for (k, &p) in PRECS.iter().enumerate() {
                if self.bad[k][m].is_some() {
                    continue;
                }
                match round(p, s) {
                    Ok(v) => self.pcs[k][m].add(&v, lab, None),
                    Err(e) => self.bad[k][m] = Some(e.to_string()),
                }
            }
            for (j, pr) in PRESETS.iter().enumerate() {
                if pr.conv.average == Average::Images && self.bad[prec_index(pr.conv.score_precision)][m].is_none() {
                    let v = round(pr.conv.score_precision, s)?;
                    self.means[j][m].add(&counts_of(&v, lab), &pr.conv);
                }
            }
        }
        Ok(())
    }

    /// Fold the state of the images after this one's (shard merge in shard order).
    fn absorb(&mut self, o: ConvPass1) -> Result<()> {
        for (a, b) in self.pcs.iter_mut().flatten().zip(o.pcs.into_iter().flatten()) {
            a.absorb(b)?;
        }
        for (a, b) in self.bad.iter_mut().flatten().zip(o.bad.into_iter().flatten()) {
            if a.is_none() {
                *a = b;
            }
        }
        for (a, b) in self.means.iter_mut().flatten().zip(o.means.into_iter().flatten()) {
            a.absorb(b);
        }
        Ok(())
    }
}

fn round(p: ScorePrecision, s: &[f32]) -> Result<Vec<f32>> {
    let mut v = s.to_vec();
    p.apply(&mut v)?;
    Ok(v)
}

/// `metrics.all_conventions`: per method, the split's metrics under every
/// preset of [`PRESETS`], from the raw scores: two extra passes (the pooled
/// statistic once per score precision, the per-image presets one image at a
/// time), each a collective like the metric passes, so a sharded run gives
/// the same rows. Anomaly-positive numbers only.
pub(crate) fn convention_rows(cx: &Ctx, split: &Split, model: &str, scorer: &mut dyn Scorer, plan: &ScorePlan, nm: usize) -> Result<Vec<Vec<ConvRow>>> {
    let inp = cx.inp;
    let ctx = |i: usize| format!("{}/{} [{}] (all_conventions)", split.name, split.stems[i], model);
    let label = |step: u8| format!("[{}] {} all_conventions pass {step}/2", cx.who(model), split.name);
    let id = |step: u8| format!("{}{model}.{}.conv{step}", cx.tag, split.name);
    let n = split.stems.len();
    let mut p1 = ConvPass1::new(nm);
    cx.collective(
        PassKind::Conventions(1),
        label(1),
        &id(1),
        n,
        &mut p1,
        |st, images| {
            for_each_image(split, model, inp, images, |i, lg, lab| {
                let maps = score_image_raw(scorer, lg, plan, inp, split, model, i).with_context(|| ctx(i))?;
                st.add(&maps, &lab).with_context(|| ctx(i))?;
                cx.progress.inc();
                Ok(())
            })
        },
        |st| st.clone(),
        |st, d| st.absorb(d),
    )?;
    let mut rankers: Vec<Vec<Ranker>> = std::mem::take(&mut p1.pcs).into_iter().map(|v| v.into_iter().map(|p| p.finish()).collect()).collect();
    let bad = &p1.bad;
    cx.collective(
        PassKind::Conventions(2),
        label(2),
        &id(2),
        n,
        &mut rankers,
        |st, images| {
            for_each_image(split, model, inp, images, |i, lg, lab| {
                let maps = score_image_raw(scorer, lg, plan, inp, split, model, i).with_context(|| ctx(i))?;
                for (m, s) in maps.maps.iter().enumerate() {
                    for (k, &p) in PRECS.iter().enumerate() {
                        if bad[k][m].is_none() {
                            st[k][m].add(&round(p, s)?, &lab);
                        }
                    }
                }
                cx.progress.inc();
                Ok(())
            })
        },
        |st| st.iter().map(|v| v.iter().map(|r| r.tally()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        |st, t: Vec<Vec<crate::metrics::engine::Tally>>| {
            for (a, b) in st.iter_mut().flatten().zip(t.iter().flatten()) {
                a.absorb(b)?;
            }
            Ok(())
        },
    )?;
    let mut counts: Vec<Vec<Counts>> = vec![];
    for v in rankers {
        counts.push(v.into_iter().map(|r| r.finish()).collect::<Result<Vec<_>>>()?);
    }
    let mut out = vec![vec![]; nm];
    for (m, rows) in out.iter_mut().enumerate() {
        for (j, pr) in PRESETS.iter().enumerate() {
            let k = prec_index(pr.conv.score_precision);
            rows.push(if let Some(e) = &p1.bad[k][m] {
                ([None; 4], e.clone())
            } else if pr.conv.average == Average::Images {
                let im = &p1.means[j][m];
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
