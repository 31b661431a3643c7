//! Drift sensitivity rows: each drifted copy of test (`test@<name>`)
//! against clean test, and the clean test's dashboard baseline.
//!
//! Why here and not in the metric room: which thresholds are "deployed"
//! (val's honest points; hard = the first FRR budget's), which split is
//! the baseline (clean test) and how σ is obtained (test's image
//! resamples, `metrics::dashboard`) are policy of the honest evaluation.

use super::*;
use crate::metrics::dashboard::*;
use crate::metrics::bootstrap::image_mean_deltas;
use crate::metrics::conventions::Average;
use crate::metrics::drift::DriftStats;
use crate::metrics::operating::Level;
use crate::report::results::{DashStat, DriftSplit, MetricDelta, ThresholdDrift};

/// The bootstrap settings shared by every row: draws over test's images.
pub(crate) struct Resampling {
    pub(crate) samples: u32,
    pub(crate) seed: u64,
    pub(crate) draws: Vec<Vec<usize>>,
}

impl Resampling {
    pub(crate) fn new(cfg: &Config, images: usize) -> Resampling {
        let (samples, seed) = (cfg.metrics.bootstrap, cfg.metrics.bootstrap_seed);
        Resampling { samples, seed, draws: replicate_draws(seed, samples, images) }
    }
}

/// Where the deployed hard threshold of a level sits: its value and, at
/// pixel level, its index among the split's probe thresholds.
#[derive(Clone, Copy, Default)]
pub(crate) struct Hard {
    pixel: Option<usize>,
    image: Option<f32>,
}

/// The hard thresholds (first `far_at_frr` point per level) of `ch`.
pub(crate) fn hard(ch: &[Chosen]) -> Hard {
    let pix: Vec<&Chosen> = ch.iter().filter(|c| c.level == Level::Pixel && c.threshold().is_some()).collect();
    let first = |l: Level| ch.iter().find(|c| c.level == l && c.rule == PointRule::FarAtFrr);
    Hard {
        pixel: first(Level::Pixel).filter(|c| c.threshold().is_some()).and_then(|h| pix.iter().position(|c| std::ptr::eq(*c, h))),
        image: first(Level::Image).and_then(|c| c.threshold()).map(|t| t as f32),
    }
}

/// One dashboard statistic: the value on the evaluated split, the
/// baseline's value (or, for a divergence, its resamples' mean) and σ.
fn stat(level: Level, name: &str, baseline: Option<f64>, reps: &[Option<f64>], value: Option<f64>) -> DashStat {
    let sigma = sigma(reps);
    let delta = value.zip(baseline).map(|(v, b)| v - b);
    DashStat { level, statistic: name.into(), baseline, sigma, value, delta, flagged: flagged(name, delta, sigma) }
}

/// The split's values of the non-divergence statistics over the images
/// `draw` (or the whole split): pixel mean, pixel reject rate, image mean,
/// image p95, image reject rate.
fn values(recs: &[ImageRec], draw: &[usize], h: Hard) -> [Option<f64>; 5] {
    let normal_images = normal_image_scores(recs, draw);
    [
        ratio(recs, draw, |r| pixel_mean(r, 0)),
        h.pixel.and_then(|k| ratio(recs, draw, |r| pixel_frr(r, k))),
        (!normal_images.is_empty()).then(|| normal_images.iter().sum::<f64>() / normal_images.len() as f64),
        crate::metrics::np_percentile(&normal_images, 0.95),
        h.image.and_then(|t| ratio(recs, draw, |r| image_rate(r, t, true))),
    ]
}

/// Column `mi`'s dashboard on split `e` against the baseline `base`
/// (clean test; `e` = `base` for the baseline's own row), σ from the
/// baseline's image resamples.
pub(crate) fn dashboard(base: &SplitEval, e: &SplitEval, mi: usize, h: Hard, rs: &Resampling) -> Vec<DashStat> {
    dashboard_of((&base.dash[mi].images, &base.drift[mi]), (&e.dash[mi].images, &e.drift[mi]), h, rs)
}

/// [`dashboard`] from the per-image records and normal-score statistics
/// of the baseline and the evaluated split.
fn dashboard_of((brec, bd): (&[ImageRec], &DriftStats), (rec, d): (&[ImageRec], &DriftStats), h: Hard, rs: &Resampling) -> Vec<DashStat> {
    let all: Vec<usize> = (0..rec.len()).collect();
    let (b, v) = (values(brec, &all, h), values(rec, &all, h));
    let reps: Vec<[Option<f64>; 5]> = rs.draws.iter().map(|d| values(brec, d, h)).collect();
    let hreps = hist_replicates(brec, &rs.draws, bd);
    let col = |k: usize| reps.iter().map(|r| r[k]).collect::<Vec<_>>();
    let hcol = |k: usize| hreps.iter().map(|r| r[k]).collect::<Vec<_>>();
    vec![
        stat(Level::Pixel, "mean", bd.mean, &col(0), d.mean),
        stat(Level::Pixel, "p95", bd.quantile(0.95), &hcol(0), d.quantile(0.95)),
        stat(Level::Pixel, "reject_rate", b[1], &col(1), v[1]),
        stat(Level::Pixel, "kl", mean(&hcol(1)), &hcol(1), kl(d, bd)),
        stat(Level::Pixel, "mmd2", mean(&hcol(2)), &hcol(2), mmd2(d, bd)),
        stat(Level::Image, "mean", b[2], &col(2), v[2]),
        stat(Level::Image, "p95", b[3], &col(3), v[3]),
        stat(Level::Image, "reject_rate", b[4], &col(4), v[4]),
    ]
}

/// Per column: the histogram bootstrap's intervals of the AUROC, AUPR,
/// FPR95, best F1 and AUPRO changes with their error bounds, or why there
/// are none.
pub(crate) fn metric_intervals(cfg: &Config, base: &SplitEval, e: &SplitEval, nm: usize) -> Result<std::result::Result<Vec<DeltaCi>, String>> {
    let no_points = vec![vec![]; nm];
    let seed = cfg.metrics.bootstrap_seed;
    Ok(match (cfg.metrics.bootstrap, base.hist_boot(&no_points, cfg), e.hist_boot(&no_points, cfg)) {
        (0, ..) => Err("no interval: bootstrap off".into()),
        (n, Some(a), Some(b)) => Ok(delta_interval(&a, &b, n, seed)?),
        // average = "images": the change of the per-image means, same draws
        (n, ..) if cfg.metrics.conv.average == Average::Images => Ok(image_mean_deltas(base.per_image_values(), e.per_image_values(), n, seed)?),
        _ => Err("internal error: a split was evaluated without bootstrap histograms".into()),
    })
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

/// The metric rows of column `mi`: pixel AUROC / AUPR / FPR95 / F1 /
/// AUPRO (paired histogram-bootstrap intervals, each end within its noted
/// bound of the exact paired bootstrap's; under `average = "images"` the
/// per-image means' AUROC / AUPR / FPR95 / F1), image AUROC / AUPR
/// (intervals from the per-image records).
fn metric_rows(cfg: &Config, base: &SplitEval, e: &SplitEval, mi: usize, ivs: &std::result::Result<Vec<DeltaCi>, String>, rs: &Resampling) -> Vec<MetricDelta> {
    // the cells' headline figures (image means under average = "images")
    let (sa, sb) = (base.headline(mi, &cfg.metrics.conv), e.headline(mi, &cfg.metrics.conv));
    let row = |metric: &str, level: Level, a: Option<f64>, b: Option<f64>, iv: std::result::Result<Option<[f64; 2]>, String>| {
        let (interval, note) = match iv {
            Ok(i) => (i, None),
            Err(n) => (None, Some(n)),
        };
        MetricDelta { metric: metric.into(), level, baseline: a, drifted: b, delta: delta(a, b), interval, note }
    };
    let exact = |k: usize| ivs.as_ref().map(|v| v[mi].interval[k]).map_err(|e| e.clone());
    let (ra, rb) = (&base.dash[mi].images, &e.dash[mi].images);
    let image = |k: usize| match rs.samples {
        0 => Err("no interval: bootstrap off".to_string()),
        _ => Ok(paired(&rs.draws, |d| (image_metrics(ra, d)[k], image_metrics(rb, d)[k]))),
    };
    let (ia, ib) = (image_metrics(ra, &(0..ra.len()).collect::<Vec<_>>()), image_metrics(rb, &(0..rb.len()).collect::<Vec<_>>()));
    // `bootstrap::PX` order
    let mut px = vec![
        row("auroc", Level::Pixel, sa.auroc, sb.auroc, exact(0)),
        row("aupr", Level::Pixel, sa.aupr, sb.aupr, exact(1)),
        row("fpr95", Level::Pixel, sa.fpr95, sb.fpr95, exact(2)),
        row("f1", Level::Pixel, sa.f1, sb.f1, exact(3)),
        row("aupro", Level::Pixel, base.aupro[mi], e.aupro[mi], exact(4)),
    ];
    // binned intervals say how far they can be from the exact bootstrap's
    if let Ok(v) = ivs {
        for (k, r) in px.iter_mut().enumerate() {
            if let Some(b) = v[mi].bound[k].filter(|&b| b > 0.0) {
                r.note = Some(format!("histogram bootstrap: each end within ±{b:.1e} of the exact bootstrap's"));
            }
        }
    }
    if cfg.metrics.conv.average == Average::Images {
        for r in px[4..].iter_mut().filter(|r| r.interval.is_none() && r.note.is_none()) {
            r.note = Some("no interval: AUPRO is pooled over regions, and `average = \"images\"` bootstraps per-image means (of AUROC, AUPR, FPR95, F1)".into());
        }
    }
    px.into_iter().chain([
        row("auroc", Level::Image, ia[0], ib[0], image(0)),
        row("aupr", Level::Image, ia[1], ib[1], image(1)),
    ])
    .collect()
}

/// Every honest point's threshold on clean test and on the drifted split
/// (`hb`, `hd`: the honest cells of both), with paired intervals of the
/// FAR and FRR shifts.
fn threshold_rows(ch: &[Chosen], hb: &HonestCell, hd: &HonestCell, base: &SplitEval, e: &SplitEval, mi: usize, rs: &Resampling) -> Vec<ThresholdDrift> {
    let (ra, rb) = (&base.dash[mi].images, &e.dash[mi].images);
    let mut k = 0;
    ch.iter()
        .zip(hb.points.iter().zip(&hd.points))
        .map(|(c, (pa, pb))| {
            let t = c.threshold();
            let (far_iv, frr_iv) = match (t, c.level, rs.samples) {
                (None, _, _) | (_, _, 0) => (None, None),
                (Some(_), Level::Pixel, _) => {
                    k += 1;
                    let kk = k - 1;
                    let iv = |f: RatioFn| paired(&rs.draws, |d| (ratio(ra, d, |r| f(r, kk)), ratio(rb, d, |r| f(r, kk))));
                    (iv(pixel_far), iv(pixel_frr))
                }
                (Some(t), Level::Image, _) => {
                    let iv = |frr: bool| paired(&rs.draws, |d| (ratio(ra, d, |r| image_rate(r, t as f32, frr)), ratio(rb, d, |r| image_rate(r, t as f32, frr))));
                    (iv(false), iv(true))
                }
            };
            ThresholdDrift {
                level: c.level,
                rule: c.rule,
                budget: c.budget,
                threshold: t,
                baseline_far: pa.far,
                baseline_frr: pa.frr,
                drifted_far: pb.far,
                drifted_frr: pb.frr,
                far_shift: delta(pa.far, pb.far),
                frr_shift: delta(pa.frr, pb.frr),
                far_shift_interval: far_iv,
                frr_shift_interval: frr_iv,
            }
        })
        .collect()
}

/// What one drifted split's rows need besides the split itself.
pub(crate) struct DriftInputs<'a> {
    pub(crate) base: &'a SplitEval,
    /// Per column: the deployed thresholds, where they were chosen, and
    /// the clean test's honest cell.
    pub(crate) chosen: &'a [Vec<Chosen>],
    pub(crate) src: &'a str,
    pub(crate) honest: &'a [HonestCell],
    pub(crate) rs: &'a Resampling,
}

/// The rows of drifted split `e` (named `split`) for every column.
pub(crate) fn drift_split_rows(cfg: &Config, model: &str, cols: &[MethodRef], split: &str, e: &SplitEval, d: &DriftInputs) -> Result<Vec<DriftSplit>> {
    let ivs = metric_intervals(cfg, d.base, e, cols.len())?;
    Ok(cols
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            let ch = &d.chosen[mi];
            // "applied": pixel points read from the drifted split's probes
            let hd = honest(model, m, "applied", false, ch, e, mi, cfg);
            DriftSplit {
                model: model.into(),
                method: m.id().into(),
                split: split.into(),
                baseline: "test".into(),
                threshold_split: d.src.into(),
                images: e.images,
                samples: d.rs.samples,
                seed: d.rs.seed,
                metrics: metric_rows(cfg, d.base, e, mi, &ivs, d.rs),
                thresholds: threshold_rows(ch, &d.honest[mi], &hd, d.base, e, mi, d.rs),
                dashboard: dashboard(d.base, e, mi, hard(ch), d.rs),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::drift::drift_of;

    /// 20 images of normal pixels (and an anomaly each) scored `f(image, pixel)`.
    fn split(f: impl Fn(usize, usize) -> f32) -> (Vec<ImageRec>, DriftStats) {
        let mut st = ImageStats::new(vec![5.0], true);
        let (mut all, mut labs) = (vec![], vec![]);
        for i in 0..20 {
            let s: Vec<f32> = (0..50).map(|p| f(i, p)).chain([9.0]).collect();
            let l: Vec<u8> = (0..50).map(|_| 0).chain([1]).collect();
            st.add(&s, &l, Some(9.0));
            all.extend(&s);
            labs.extend(&l);
        }
        (st.images, drift_of(&all, &labs))
    }

    #[test]
    fn two_sigma_flags_the_moved_statistic_only() {
        // baseline: per image 2..=6 pixels above the threshold 5, the rest at a level 0..2.2 below it
        let above = |i: usize, p: usize| p < 2 + i % 5;
        let base = move |i: usize, p: usize| if above(i, p) { 6.0 + (i % 3) as f32 } else { (i % 4) as f32 * 0.5 + (p % 7) as f32 * 0.1 };
        // drifted: the scores below the threshold rise by 1 (still below it); the rejected pixels are unchanged
        let moved = move |i: usize, p: usize| if above(i, p) { base(i, p) } else { base(i, p) + 1.0 };
        let (b, e) = (split(base), split(moved));
        let rs = Resampling { samples: 100, seed: 3, draws: replicate_draws(3, 100, 20) };
        let h = Hard { pixel: Some(0), image: None };
        let st = dashboard_of((&b.0, &b.1), (&e.0, &e.1), h, &rs);
        let get = |s: &str| st.iter().find(|x| x.level == Level::Pixel && x.statistic == s).unwrap();
        let mean = get("mean");
        assert!(mean.sigma.unwrap() > 0.0 && mean.delta.unwrap() > 2.0 * mean.sigma.unwrap(), "{mean:?}");
        assert_eq!(mean.flagged, Some(true));
        let rej = get("reject_rate");
        assert_eq!((rej.baseline, rej.value, rej.delta), (Some(0.08), Some(0.08), Some(0.0)));
        assert!(rej.sigma.unwrap() > 0.001 && rej.flagged == Some(false), "{rej:?}");
        // the baseline against itself: nothing flagged
        let same = dashboard_of((&b.0, &b.1), (&b.0, &b.1), h, &rs);
        assert!(same.iter().all(|x| x.flagged != Some(true)), "{same:?}");
        // no resamples: no σ, so no flag either way
        let none = Resampling { samples: 0, seed: 0, draws: vec![] };
        assert!(dashboard_of((&b.0, &b.1), (&e.0, &e.1), h, &none).iter().all(|x| x.sigma.is_none() && x.flagged.is_none()));
    }
}
