//! Failure modes: per anomaly type the figures at the deployed (soft)
//! threshold, and the example panels of the worst test images.
//!
//! Why the examples are re-scored here: the test passes keep no score maps
//! (a split's maps do not fit in memory in general), but they count, per
//! image and type, the pixels at the soft threshold (`metrics::failure`),
//! which is enough to pick the K worst images. Only those (at most types ×
//! K) are read and scored again, on the CPU scorer (`CpuScorer`) in every
//! run — a local run on any device and a sharded run's merge alike — so
//! the panels are byte-identical whichever way the run went. (On a GPU run
//! a pixel within float tolerance of the threshold may be drawn on the
//! other side of it than pass 1 counted; the recall figures are pass 1's.)

use super::*;
use crate::data::rgb::read_photo;
use crate::metrics::failure::TypeHits;
use crate::metrics::operating::Level;
use crate::report::panel::{Example, Scale, panel_png};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// The soft threshold of one level among the thresholds chosen on val:
/// `frr_at_far` at the first FAR budget, or why there is none.
fn soft_threshold(ch: Option<&[Chosen]>, level: Level) -> Result<f64, String> {
    let Some(ch) = ch else {
        return Err("no `val` split: the soft threshold is chosen on val, so the per-type figures at it are not computed".into());
    };
    let c = ch.iter().find(|c| c.level == level && c.rule == PointRule::FrrAtFar).ok_or("no `metrics.far` budget, so no soft threshold")?;
    c.pick.as_ref().map(|o| o.threshold).map_err(|e| format!("no {} soft threshold: {e}", level.name()))
}

/// Per column, the pixel soft threshold the test split's pass 1 counts
/// each image's type pixels at (all None without val: pixels are still
/// counted per image and type).
pub(crate) fn soft_probes(chosen: &[Vec<Chosen>], cols: usize) -> Vec<Option<f32>> {
    (0..cols).map(|mi| chosen.get(mi).and_then(|ch| soft_threshold(Some(ch), Level::Pixel).ok()).map(|t| t as f32)).collect()
}

fn share(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// Column `mi`'s rows, one per anomaly type: pixel AUROC / AUPR / FPR95,
/// recall at the val-F1 and at the soft threshold, and the share of the
/// type's images missed at the image-level soft threshold. `ch`: the
/// thresholds chosen on val (None without a val split).
pub(crate) fn failure_rows(cfg: &Config, model: &str, m: &MethodRef, mi: usize, te: &SplitEval, ch: Option<&[Chosen]>) -> Vec<FailureRow> {
    let (px, img) = (soft_threshold(ch, Level::Pixel), soft_threshold(ch, Level::Image));
    let reason = px.as_ref().err().or(img.as_ref().err()).cloned();
    te.type_counts(mi)
        .iter()
        .enumerate()
        .map(|(t, tc)| {
            let s = cfg.metrics.conv.summary(tc);
            let recall_at = |th: f32| share(tc.tp_at(th), tc.positives);
            let (images, missed) = match &te.type_hits {
                Some(h) => h.images_missed(t, &te.image_scores[mi], img.as_ref().ok().map(|&x| x as f32)),
                None => (0, None),
            };
            FailureRow {
                model: model.into(),
                method: m.id().into(),
                split: "test".into(),
                anomaly_value: cfg.anomaly[t],
                positives: tc.positives,
                auroc: s.auroc,
                aupr: s.aupr,
                fpr95: s.fpr95,
                recall_at_val_threshold: ch.and_then(f1_threshold).and_then(recall_at),
                soft_threshold: px.as_ref().ok().copied(),
                recall_at_soft_threshold: px.as_ref().ok().and_then(|&x| recall_at(x as f32)),
                images,
                image_soft_threshold: img.as_ref().ok().copied(),
                images_missed: missed,
                image_miss_share: missed.and_then(|k| share(k, images)),
                reason: reason.clone(),
                examples: vec![],
            }
        })
        .collect()
}

/// One example image as re-scored: labels, the failure method's scores,
/// size, and the photo (h × w × 3 RGB bytes) when the images folder has one.
struct Scored {
    h: usize,
    w: usize,
    labels: Vec<u8>,
    scores: Vec<f32>,
    photo: Option<Vec<u8>>,
}

/// Read and score test image `i` on the CPU; keep column `fm`'s map. A
/// built-in method is scored alone (each method's map is computed from the
/// logits independently of the others, so it is the same map), an outside
/// method's map is read with the rest.
fn rescore(cx: &Ctx, plan: &ScorePlan, split: &Split, model: &str, fm: usize, i: usize) -> Result<Scored> {
    let mut cpu = crate::scores::cpu::CpuScorer;
    let mut out = None;
    let alone = (fm < plan.methods.len() && cx.inp.external.is_empty()).then(|| ScorePlan { methods: vec![plan.methods[fm]], ..plan.clone() });
    let (plan, fm) = match &alone {
        Some(p) => (p, 0),
        None => (plan, fm),
    };
    for_each_image(split, model, cx.inp, i..i + 1, |i, lg, lab| {
        let mut maps = score_image(&mut cpu, lg, plan, cx.inp, split, model, i)?;
        let photo = read_photo(split, &split.stems[i], maps.h, maps.w)?;
        out = Some(Scored { h: maps.h, w: maps.w, labels: lab, scores: std::mem::take(&mut maps.maps[fm]), photo });
        Ok(())
    })
    .with_context(|| format!("failure examples: {}/{} [{model}]", split.name, split.stems[i]))?;
    out.ok_or_else(|| anyhow::anyhow!("internal error: failure example image {i} was not read"))
}

/// The K worst test images per anomaly type of the failure method
/// (`report.failure_method`), each as a PNG panel: their paths go into the
/// method's failure rows of this model, the bytes are returned.
pub(crate) fn example_panels(cx: &Ctx, cfg: &Config, sw: &Sweep, plan: &ScorePlan, model: &str, te: &SplitEval, o: &mut ModelOut) -> Result<Vec<(String, Vec<u8>)>> {
    let k = cfg.report.failure_examples as usize;
    let fm = sw.cols.iter().position(|c| Some(c.id()) == cfg.failure_method());
    let (Some(fm), Some(hits)) = (fm, &te.type_hits) else { return Ok(vec![]) };
    let Some(t) = hits.thresholds.get(fm).copied().flatten().filter(|_| k > 0) else { return Ok(vec![]) };
    let method = sw.cols[fm].id().to_string();
    let picks: Vec<Vec<usize>> = (0..cfg.anomaly.len()).map(|ty| hits.worst(fm, ty, &sw.test.stems, k)).collect();
    // the examples read and scored in parallel (each its own reader; a
    // failure reported for the first such image in order)
    let unique: Vec<usize> = picks.iter().flatten().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let done: Vec<Result<Scored>> = unique.par_iter().map(|&i| rescore(cx, plan, sw.test, model, fm, i)).collect();
    let mut scored = BTreeMap::new();
    for (i, s) in unique.into_iter().zip(done) {
        scored.insert(i, s?);
    }
    let scale = Scale { lo: te.drift[fm].quantile(0.5).unwrap_or(t as f64), t: t as f64, hi: te.counts(fm).thresholds.first().map_or(t as f64, |&x| x as f64) };
    let mut files = vec![];
    for (ty, pick) in picks.iter().enumerate() {
        let value = cfg.anomaly[ty];
        // the panels in parallel (each its own bytes; collected in order)
        let panels: Vec<(String, Vec<u8>)> = pick
            .par_iter()
            .enumerate()
            .map(|(r, &i)| {
                let s = &scored[&i];
                let png = format!("failures/{model}/{method}/{value}_{}_{}.png", r + 1, sw.test.stems[i]);
                (png, panel_png(&Example { h: s.h, w: s.w, labels: &s.labels, scores: &s.scores, rgb: s.photo.as_deref(), kind: ty, scale }))
            })
            .collect();
        let examples = pick.iter().zip(&panels).enumerate().map(|(r, (&i, (png, _)))| example_row(hits, fm, ty, i, r, &sw.test.stems[i], scored[&i].photo.is_some(), png.clone()));
        let examples: Vec<FailureExample> = examples.collect();
        files.extend(panels);
        if let Some(row) = o.failure_rows.iter_mut().find(|f| f.model == model && f.method == method && f.anomaly_value == value) {
            row.examples = examples;
        }
    }
    Ok(files)
}

#[allow(clippy::too_many_arguments)]
fn example_row(hits: &TypeHits, fm: usize, ty: usize, i: usize, r: usize, id: &str, rgb: bool, png: String) -> FailureExample {
    let (pixels, caught) = (hits.pixels[i][ty], hits.hits[fm][i][ty]);
    FailureExample { rank: r as u32 + 1, image: id.into(), pixels, caught, recall: caught as f64 / pixels as f64, rgb, png }
}
