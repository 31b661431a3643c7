//! The table family of the seed (main, F1, thresholds) plus the honest
//! evaluation, built from `results.json` alone so `bench table` and CI can
//! re-render them without the dataset.

use crate::metrics::PointRule;
use crate::metrics::operating::Level;
use super::markup::{Align, Better, Dialect, Table};
use super::results::{Cell, HonestCell, Results};

/// Percent with `d` decimals, `n/a` for undefined.
fn pct(v: Option<f64>, d: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{:.*}", d, 100.0 * x))
}

fn num(v: Option<f64>, d: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{:.*}", d, x))
}

/// A rate in % with `d` decimals and, when there is an interval, `±` its
/// half-width (in %, two decimals).
fn pm(v: Option<f64>, ci: Option<[f64; 2]>, d: usize) -> String {
    match ci {
        Some([lo, hi]) if v.is_some() => format!("{}±{:.2}", pct(v, d), 50.0 * (hi - lo)),
        _ => pct(v, d),
    }
}

const LEAK: &str = "†";

fn mark(s: String, leak: bool) -> String {
    if leak { format!("{s} {LEAK}") } else { s }
}

/// Split the main tables report on.
pub const EVAL_SPLIT: &str = "test";

/// The model × method shape every table shares: one row per model (config
/// order), one column per method, cell text from `f(model id, method id)`.
fn model_grid(r: &Results, title: &str, notes: Vec<String>, align: Align, parts: &[(&str, Better)], f: impl Fn(&str, &str) -> String) -> Table {
    let mut header = vec!["Model".to_string()];
    header.extend(r.methods.iter().map(|m| m.name.clone()));
    let mut aligns = vec![Align::Left];
    aligns.extend(r.methods.iter().map(|_| align));
    let rows = r
        .models
        .iter()
        .map(|m| {
            let mut row = vec![m.name.clone()];
            row.extend(r.methods.iter().map(|me| f(&m.id, &me.id)));
            row
        })
        .collect();
    Table { title: title.into(), notes, header, align: aligns, rows, key_cols: 1, parts: parts.iter().map(|(n, b)| (n.to_string(), *b)).collect() }
}

/// Test-split cells.
fn grid(r: &Results, title: &str, notes: Vec<String>, align: Align, parts: &[(&str, Better)], f: impl Fn(&Cell) -> String) -> Table {
    model_grid(r, title, notes, align, parts, |m, me| r.cell(m, me, EVAL_SPLIT).map_or("—".into(), &f))
}

/// Honest-evaluation cells, with the leakage mark.
fn honest_grid(r: &Results, title: &str, notes: Vec<String>, parts: &[(&str, Better)], f: impl Fn(&HonestCell) -> String) -> Table {
    model_grid(r, title, notes, Align::Right, parts, |m, me| r.honest_cell(m, me).map_or("—".into(), |h| mark(f(h), h.leakage)))
}

/// The non-default metric switches of results.json, for the footer
/// (empty under the defaults, so default tables do not change).
fn switches_note(c: &super::results::Conventions) -> String {
    let mut s = String::new();
    if let Some(a) = &c.aupr {
        s += &format!(", AUPR `{a}`");
    }
    if let Some(p) = &c.score_precision {
        s += &format!(", scores rounded to `{p}` before the metrics");
    }
    if c.average.is_some() {
        s += ", mean of per-image metrics over images with both classes";
    }
    if let Some(n) = &c.convention {
        s += &format!(" (convention `{n}`)");
    }
    s
}

/// All tables, in document order.
pub fn tables(r: &Results) -> Vec<Table> {
    let mut out = seed_tables(r);
    if !r.honest.is_empty() {
        out.extend(honest_tables(r));
    }
    out.push(image_table(r));
    out.extend(drift_table(r));
    out.extend(super::sensitivity::tables(r));
    out.extend(region_table(r));
    out.extend(binned_table(r));
    if let Some(b) = r.cells.iter().find_map(|c| c.bootstrap.as_ref()) {
        out[0].notes.push(format!(
            "± = half-width of the 95 % percentile-bootstrap interval over {} resamplings of the test images (seed {}){}.",
            b.samples,
            b.seed,
            bound_note(r)
        ));
    }
    out.extend(failure_table(r));
    out.extend(diff_table(r));
    if !r.warnings.is_empty() {
        out.push(Table {
            title: "Warnings".into(),
            notes: vec![],
            header: vec!["Warning".into()],
            align: vec![Align::Left],
            rows: r.warnings.iter().map(|w| vec![w.clone()]).collect(),
            ..Default::default()
        });
    }
    // footnote wherever a cell carries the leakage mark
    for t in &mut out {
        if t.rows.iter().flatten().any(|c| c.ends_with(LEAK)) {
            t.notes.push(format!(
                "{LEAK} leakage: statistics (SML/HEAT calibration) or thresholds were fitted on the evaluated split itself."
            ));
        }
    }
    out
}

/// How far the histogram bootstrap's interval ends may lie from the exact
/// bootstrap's: the largest recorded `error_bound` of the test cells.
fn bound_note(r: &Results) -> String {
    let boots: Vec<_> = r.cells.iter().filter(|c| c.split == EVAL_SPLIT).filter_map(|c| c.bootstrap.as_ref()).filter(|b| b.method.as_deref() == Some("histogram")).collect();
    if boots.is_empty() {
        return String::new();
    }
    // the bound of every interval shown (F1 / AUPRO where they have one)
    let all: Option<Vec<f64>> = boots
        .iter()
        .flat_map(|b| {
            let shown = [true, true, true, b.f1.is_some(), b.aupro.is_some()];
            b.error_bound.unwrap_or_default().all().into_iter().zip(shown).filter(|p| p.1).map(|p| p.0)
        })
        .collect();
    match all {
        Some(v) => {
            let m = v.iter().fold(0.0f64, |a, &b| a.max(b));
            let within = if m == 0.0 { "equal to the exact bootstrap's (error bound 0)".to_string() } else { format!("within {} pp of the exact bootstrap's (results.json `error_bound`)", sig(Some(100.0 * m))) };
            format!("; from per-image score histograms, interval ends {within}; operating points and image AUROC are exact resamples")
        }
        None => "; from per-image score histograms (no error bound for this FPR95/AUPR rule; AUROC's is in results.json `error_bound`)".into(),
    }
}

/// The seed's three tables: main, F1, optimal thresholds.
fn seed_tables(r: &Results) -> Vec<Table> {
    let main = grid(
        r,
        "Main Results",
        vec![
            "**Format**: FPR95 / AUROC / AUPR / F1 (all in %)".into(),
            format!(
                "**Lower FPR95 is better**, **Higher AUROC/AUPR/F1 is better**. Split `{EVAL_SPLIT}`, every non-void pixel (exact, no subsampling); FPR95 rule `{}`{}.",
                r.conventions.fpr95,
                switches_note(&r.conventions)
            ),
        ],
        Align::Left,
        &[("FPR95", Better::Lower), ("AUROC", Better::Higher), ("AUPR", Better::Higher), ("F1", Better::Higher)],
        |c| {
            let pm = |v, ci| pm(v, ci, 2);
            let b = c.bootstrap.as_ref();
            mark(
                format!(
                    "{} / {} / {} / {}",
                    pm(c.fpr95, b.and_then(|b| b.fpr95)),
                    pm(c.auroc, b.and_then(|b| b.auroc)),
                    pm(c.aupr, b.and_then(|b| b.aupr)),
                    pm(c.f1, b.and_then(|b| b.f1))
                ),
                c.leakage,
            )
        },
    );
    let f1 = grid(
        r,
        "F1 Scores (%) - For Threshold Selection",
        vec![
            "**Higher is better**. Max F1 over all thresholds of the test split: an *oracle* figure, since the threshold is chosen on the data it is scored on. The honest figures are in the tables below.".into(),
        ],
        Align::Right,
        &[("F1", Better::Higher)],
        |c| mark(pct(c.f1, 2), c.leakage),
    );
    let thresholds = grid(
        r,
        "Optimal Thresholds",
        vec!["The score thresholds that maximize F1 on the test split (oracle; `score ≥ t` is anomalous).".into()],
        Align::Right,
        &[("threshold", Better::Neither)],
        |c| mark(num(c.threshold, 4), c.leakage),
    );
    vec![main, f1, thresholds]
}

/// Where the honest thresholds came from, for every honest table.
fn threshold_source(r: &Results) -> String {
    let src = &r.honest[0].threshold_split;
    if src == EVAL_SPLIT {
        format!("**No `val` split: thresholds were chosen on `{EVAL_SPLIT}` itself (leakage, marked {LEAK}).**")
    } else {
        format!("Thresholds chosen on `{src}`, applied unchanged to `{EVAL_SPLIT}`.")
    }
}

/// The honest evaluation: F1 at the val threshold, then per level the
/// operating points of every budget and the review band.
fn honest_tables(r: &Results) -> Vec<Table> {
    let from = threshold_source(r);
    let mut out = vec![honest_grid(
        r,
        "Honest F1: threshold from validation",
        vec![from.clone(), "**Format**: test F1 at the val-F1-optimal threshold (test-optimal oracle F1), in %".into()],
        &[("F1 (oracle F1)", Better::Higher)],
        |h| {
            let p = h.point(Level::Pixel, PointRule::F1Optimal, None);
            format!("{} ({})", pct(p.and_then(|p| p.f1), 2), pct(h.oracle_f1, 2))
        },
    )];
    for level in [Level::Pixel, Level::Image] {
        let budgets: Vec<(PointRule, f64)> = r.honest[0]
            .points
            .iter()
            .filter(|p| p.level == level && p.rule != PointRule::F1Optimal)
            .filter_map(|p| p.budget.map(|b| (p.rule, b)))
            .collect();
        for (rule, b) in budgets {
            out.push(point_table(r, &from, level, rule, b));
        }
        if r.honest[0].band(level).is_some() {
            out.push(band_table(r, &from, level));
        }
    }
    out
}

/// `Pixel` / `Image`.
fn cap(level: Level) -> &'static str {
    match level {
        Level::Pixel => "Pixel",
        Level::Image => "Image",
    }
}

/// `A pixel` / `An image`.
fn article(level: Level) -> &'static str {
    match level {
        Level::Pixel => "A pixel",
        Level::Image => "An image",
    }
}

/// Distinct reasons of the undefined cells, as notes.
fn reasons<'a>(it: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = it.map(|s| format!("n/a: {s}.")).collect();
    v.sort();
    v.dedup();
    v
}

/// One budget at one level: FRR @ FAR (`frr_at_far`) or FAR @ FRR.
fn point_table(r: &Results, from: &str, level: Level, rule: PointRule, b: f64) -> Table {
    let u = level.units();
    let (title, fmt, parts): (String, String, &[(&str, Better)]) = if rule == PointRule::FrrAtFar {
        (
            format!("{} FRR @ FAR ≤ {}% (good rejected when ≤ {}% of defects are accepted)", cap(level), fmt_pct(b), fmt_pct(b)),
            format!(
                "**Format**: good rejected (FRR) / defects accepted (FAR) on test, in % of normal / anomalous {u}. {} is rejected when its score ≥ t; t = the highest score with at most {}% of val's anomalous {u} accepted (score < t).",
                article(level),
                fmt_pct(b)
            ),
            &[("FRR", Better::Lower), ("FAR", Better::Neither)],
        )
    } else {
        (
            format!("{} FAR @ FRR ≤ {}% (defects accepted when ≤ {}% of good {u} are rejected)", cap(level), fmt_pct(b), fmt_pct(b)),
            format!(
                "**Format**: defects accepted (FAR) / good rejected (FRR) on test, in % of anomalous / normal {u}. {} is rejected when its score ≥ t; t = the lowest val score with at most {}% of val's normal {u} rejected (score ≥ t).",
                article(level),
                fmt_pct(b)
            ),
            &[("FAR", Better::Lower), ("FRR", Better::Neither)],
        )
    };
    let pt = |h: &HonestCell| h.point(level, rule, Some(b)).cloned();
    let mut notes = vec![from.to_string(), fmt];
    notes.extend(reasons(r.honest.iter().filter_map(|h| pt(h)?.reason).collect::<Vec<_>>().iter().map(|s| s.as_str())));
    honest_grid(r, &title, notes, parts, |h| match pt(h) {
        Some(p) if p.threshold.is_some() && rule == PointRule::FrrAtFar => format!("{} / {}", pm(p.frr, p.frr_ci, 2), pct(p.far, 3)),
        Some(p) if p.threshold.is_some() => format!("{} / {}", pm(p.far, p.far_ci, 2), pct(p.frr, 3)),
        _ => "n/a".into(),
    })
}

/// The review band of one level.
fn band_table(r: &Results, from: &str, level: Level) -> Table {
    let h0 = &r.honest[0];
    let first = |rule: PointRule| h0.points.iter().find(|p| p.level == level && p.rule == rule).and_then(|p| p.budget);
    let (frr_b, far_b) = (first(PointRule::FarAtFrr).unwrap_or(f64::NAN), first(PointRule::FrrAtFar).unwrap_or(f64::NAN));
    let u = level.units();
    let mut notes = vec![
        from.to_string(),
        format!(
            "**Format**: auto-rejected / sent to review / auto-accepted, in % of test {u}, then defects auto-accepted (% of anomalous {u} below soft). Hard threshold = FAR @ FRR ≤ {}% (score ≥ hard: rejected without review, few good {u} rejected); soft threshold = FRR @ FAR ≤ {}% (score < soft: accepted without review, few defects slip through); review band = [soft, hard).",
            fmt_pct(frr_b),
            fmt_pct(far_b)
        ),
    ];
    let bands: Vec<_> = r.honest.iter().filter_map(|h| h.band(level)).collect();
    if bands.iter().any(|b| b.reason.as_deref().is_some_and(|s| s.starts_with("incompatible budgets"))) {
        notes.push("**incompatible budgets**: the FAR budget's soft threshold lies above the FRR budget's hard threshold, so no review band exists and no single threshold keeps both budgets; relax one of them (thresholds in results.json `bands`).".into());
    }
    notes.extend(reasons(bands.iter().filter_map(|b| b.reason.as_deref()).filter(|s| !s.starts_with("incompatible budgets"))));
    honest_grid(
        r,
        &format!("{} hard and soft thresholds (review band)", cap(level)),
        notes,
        &[("auto-rejected", Better::Neither), ("review", Better::Neither), ("auto-accepted", Better::Neither), ("defects auto-accepted", Better::Neither)],
        |h| match h.band(level) {
            Some(b) if b.reason.as_deref().is_some_and(|s| s.starts_with("incompatible budgets")) => "incompatible budgets".into(),
            Some(b) if b.reason.is_none() => {
                format!("{} / {} / {} / {}", pct(b.auto_rejected, 2), pct(b.review, 2), pct(b.auto_accepted, 2), pct(b.defects_auto_accepted, 3))
            }
            _ => "n/a".into(),
        },
    )
}

fn image_table(r: &Results) -> Table {
    grid(
        r,
        "Image-level detection",
        vec![format!(
            "**Format**: image AUROC / image AUPR in %. Image score = {}; an image is anomalous when it has any anomaly pixel.",
            r.conventions.image_score
        )],
        Align::Left,
        &[("image AUROC", Better::Higher), ("image AUPR", Better::Higher)],
        |c| mark(format!("{} / {}", pm(c.image_auroc, c.bootstrap.as_ref().and_then(|b| b.image_auroc), 2), pct(c.image_aupr, 2)), c.leakage),
    )
}

fn drift_table(r: &Results) -> Option<Table> {
    let d0 = r.drift.first()?;
    Some(model_grid(
        r,
        "Drift of normal-pixel scores",
        vec![format!(
            "**Format**: Δmean / Δp95 (raw score units) / KL / MMD², `{}` → `{}`, normal pixels only. KL on the 16-bit score-key histogram (+0.5 smoothing); MMD² with a Gaussian kernel, σ = pooled std. Test-split normal scores: see `normal_mean`, `normal_p95` in results.json.",
            d0.reference, d0.split
        )],
        Align::Right,
        &[("Δmean", Better::Neither), ("Δp95", Better::Neither), ("KL", Better::Neither), ("MMD²", Better::Neither)],
        |m, me| {
            r.drift.iter().find(|d| d.model == m && d.method == me).map_or("—".into(), |d| {
                format!("{} / {} / {} / {}", sig(d.mean_shift), sig(d.p95_shift), sig(d.kl), sig(d.mmd2))
            })
        },
    ))
}

fn region_table(r: &Results) -> Option<Table> {
    if !r.cells.iter().any(|c| c.split == EVAL_SPLIT && (c.aupro.is_some() || c.components.is_some())) {
        return None;
    }
    let track = r.cells.iter().find_map(|c| c.components.as_ref()).map_or("anomaly".to_string(), |c| c.track.name().to_string());
    Some(grid(
        r,
        "Region metrics",
        vec![format!(
            "**Format**: AUPRO (FPR ≤ 30 %, normalised; MVTec AD; ± its bootstrap half-width where results.json has one) / sIoU / PPV / mean F1 (SegmentMeIfYouCan, `{track}` size filters, 8-connected components, score map binarised at the val-F1-optimal threshold), in %."
        )],
        Align::Right,
        &[("AUPRO", Better::Higher), ("sIoU", Better::Higher), ("PPV", Better::Higher), ("mean F1", Better::Higher)],
        |c| {
            let k = c.components.as_ref();
            mark(
                format!("{} / {} / {} / {}", pm(c.aupro, c.bootstrap.as_ref().and_then(|b| b.aupro), 2), pct(k.and_then(|k| k.siou), 2), pct(k.and_then(|k| k.ppv), 2), pct(k.and_then(|k| k.mean_f1), 2)),
                c.leakage,
            )
        },
    ))
}

/// `metrics.binning = "smiyc"`: SMIYC's binned pixel metric beside the
/// exact one, labelled approximate.
fn binned_table(r: &Results) -> Option<Table> {
    if !r.cells.iter().any(|c| c.split == EVAL_SPLIT && c.binned.is_some()) {
        return None;
    }
    Some(grid(
        r,
        "SMIYC binned pixel metric (approximate)",
        vec!["**Format**: FPR95 / AUROC / AUPR in %, computed as SegmentMeIfYouCan's `road-anomaly-benchmark` does: scores cast to float16, 768 quantile bins per image, merged. **Approximate by design** (for comparison with SMIYC's published numbers); the exact values are in the tables above.".into()],
        Align::Right,
        &[("FPR95", Better::Lower), ("AUROC", Better::Higher), ("AUPR", Better::Higher)],
        |c| {
            let b = c.binned.as_ref();
            mark(format!("{} / {} / {}", pct(b.and_then(|b| b.fpr95), 2), pct(b.and_then(|b| b.auroc), 2), pct(b.and_then(|b| b.aupr), 2)), c.leakage)
        },
    ))
}

/// `[lo, hi]` of a difference in percentage points, `*` when it excludes 0.
fn pp_ci(v: Option<[f64; 2]>) -> String {
    v.map_or("n/a".into(), |[lo, hi]| {
        let star = if lo > 0.0 || hi < 0.0 { " *" } else { "" };
        format!("[{:+.2}, {:+.2}]{star}", 100.0 * lo, 100.0 * hi)
    })
}

/// Paired bootstrap differences A − B of the test figures, one row per
/// model and pair of methods (a plain table: nothing is "best").
fn diff_table(r: &Results) -> Option<Table> {
    let d0 = r.bootstrap_diff.first()?;
    let name = |id: &str| r.methods.iter().find(|m| m.id == id).map_or(id.to_string(), |m| m.name.clone());
    let model = |id: &str| r.models.iter().find(|m| m.id == id).map_or(id.to_string(), |m| m.name.clone());
    let far = d0.far_budget.map_or("—".into(), |b| format!("{}", 100.0 * b));
    // F1 / AUPRO columns where results.json has those differences
    let ds = &r.bootstrap_diff;
    let (f1, aupro) = (ds.iter().any(|d| d.f1.is_some()), ds.iter().any(|d| d.aupro.is_some()));
    // none with `average = "images"` (its bootstrap resamples per-image means)
    let (image, frr) = (ds.iter().any(|d| d.image_auroc.is_some()), ds.iter().any(|d| d.pixel_frr_at_far.is_some()));
    let rows = r
        .bootstrap_diff
        .iter()
        .map(|d| {
            let mut row = vec![model(&d.model), format!("{} − {}", name(&d.a), name(&d.b)), pp_ci(d.auroc), pp_ci(d.aupr), pp_ci(d.fpr95)];
            row.extend(f1.then(|| pp_ci(d.f1)));
            row.extend(aupro.then(|| pp_ci(d.aupro)));
            row.extend(image.then(|| pp_ci(d.image_auroc)));
            row.extend(frr.then(|| pp_ci(d.pixel_frr_at_far)));
            row
        })
        .collect();
    let mut header: Vec<String> = ["Model", "A − B", "Δ AUROC", "Δ AUPR", "Δ FPR95"].map(String::from).to_vec();
    header.extend(f1.then(|| "Δ F1".to_string()));
    header.extend(aupro.then(|| "Δ AUPRO".to_string()));
    header.extend(image.then(|| "Δ image AUROC".to_string()));
    header.extend(frr.then(|| format!("Δ pixel FRR @ FAR {far} %")));
    let mut align = vec![Align::Left, Align::Left];
    align.extend(std::iter::repeat_n(Align::Right, header.len() - 2));
    Some(Table {
        title: "Paired bootstrap differences".into(),
        notes: vec![format!(
            "**Format**: 95 % interval of A − B in percentage points over {} resamplings of the `{EVAL_SPLIT}` images (seed {}), both methods on the same draws; `*` = the interval excludes 0 (the sign holds on resampled test sets).{} Higher AUROC/AUPR/F1/AUPRO and lower FPR95/FRR are better.",
            d0.samples,
            d0.seed,
            if frr { format!(" Pixel FRR at each method's own val threshold for FAR {far} % (defects accepted).") } else { String::new() }
        )],
        header,
        align,
        rows,
        key_cols: 0,
        parts: vec![],
    })
}

fn failure_table(r: &Results) -> Option<Table> {
    if r.failure_modes.is_empty() {
        return None;
    }
    let mut values: Vec<u16> = r.failure_modes.iter().map(|f| f.anomaly_value).collect();
    values.sort_unstable();
    values.dedup();
    let mut header = vec!["Model".to_string(), "Anomaly type".to_string()];
    header.extend(r.methods.iter().map(|m| m.name.clone()));
    let mut rows = Vec::new();
    for m in &r.models {
        for &v in &values {
            let mut row = vec![m.name.clone(), format!("label {v}")];
            for me in &r.methods {
                row.push(
                    r.failure_modes
                        .iter()
                        .find(|f| f.model == m.id && f.method == me.id && f.anomaly_value == v)
                        .map_or("—".into(), |f| format!("{} / {} / {} / {}", pct(f.auroc, 2), pct(f.fpr95, 2), pct(f.recall_at_soft_threshold, 2), pct(f.recall_at_val_threshold, 2))),
                );
            }
            rows.push(row);
        }
    }
    let mut align = vec![Align::Left, Align::Left];
    align.extend(r.methods.iter().map(|_| Align::Right));
    Some(Table {
        title: "Failure modes by anomaly type".into(),
        notes: vec!["**Format**: AUROC / FPR95 / recall at the deployed soft threshold (FRR @ FAR at the first FAR budget, chosen on val) / recall at the val-F1-optimal threshold, in %; each type's pixels against all normal pixels of the test split.".into()],
        header,
        align,
        rows,
        key_cols: 2,
        parts: vec![("AUROC".into(), Better::Higher), ("FPR95".into(), Better::Lower), ("soft recall".into(), Better::Higher), ("val-F1 recall".into(), Better::Higher)],
    })
}

/// Signed value with 4 significant decimals, or n/a.
fn sig(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| if x != 0.0 && x.abs() < 1e-3 { format!("{x:.2e}") } else { format!("{x:.4}") })
}

fn fmt_pct(x: f64) -> String {
    let s = format!("{}", 100.0 * x);
    // 0.1 * 100 = 10.000000000000002 — print the shortest decimal that a
    // human wrote.
    let r = format!("{:.6}", 100.0 * x);
    let r = r.trim_end_matches('0').trim_end_matches('.').to_string();
    if r.len() < s.len() { r } else { s }
}

/// What a best-value mark means, under the first table.
pub const BOLD_NOTE: &str = "Bold: for each model and metric, the best method — lowest FPR95/FRR/FAR, highest AUROC/AUPR/F1/AUPRO/sIoU/PPV — compared as printed, so ties are all bold.";

/// All tables with the best value of every row marked (see
/// [`markup::mark_best`](super::markup::mark_best)).
pub fn tables_marked(r: &Results) -> Vec<Table> {
    let mut ts = tables(r);
    for t in &mut ts {
        super::markup::mark_best(t);
    }
    if let Some(t) = ts.first_mut() {
        t.notes.push(BOLD_NOTE.into());
    }
    ts
}

/// The whole document in one dialect, best values in bold.
pub fn render(r: &Results, d: &dyn Dialect) -> String {
    render_with(r, d, true)
}

/// The whole document in one dialect; `bold: false` is `--no-bold`.
pub fn render_with(r: &Results, d: &dyn Dialect, bold: bool) -> String {
    let mut s = d.preamble(&format!("{}: model × method comparison", r.name));
    for t in if bold { tables_marked(r) } else { tables(r) } {
        s += &d.table(&t);
    }
    s
}

/// `tables.md` of one dataset: the tables, then links to its plots.
pub fn markdown(r: &Results, bold: bool) -> String {
    render_with(r, &super::markup::Markdown, bold) + &super::curves::markdown_plots(r)
}

/// `bench table --format F` of a results folder's sets: Markdown exactly as
/// the `tables.md` that `bench run` writes, other formats section by section.
/// (One code path for the CLI and the Python package.)
pub fn render_sets(sets: &[(Option<String>, Results)], format: &str, bold: bool) -> anyhow::Result<String> {
    let d = super::markup::dialect(format)?;
    if matches!(format, "md" | "markdown") {
        return Ok(markdown_sets(sets, bold));
    }
    let mut s = String::new();
    for (name, r) in sets {
        if let Some(n) = name {
            s += &d.section(&format!("Dataset `{n}`"));
        }
        s += &render_with(r, d.as_ref(), bold);
    }
    Ok(s)
}

/// `tables.md` of a results folder, as `bench run` writes it and `bench
/// table` prints it: one dataset's [`markdown`], or for a `[[datasets]]`
/// sweep every dataset's under its name (name order), plot links pointing
/// into the dataset folders.
pub fn markdown_sets(sets: &[(Option<String>, Results)], bold: bool) -> String {
    let mut s = String::new();
    for (tag, r) in sets {
        match tag {
            None => s += &markdown(r, bold),
            Some(t) => {
                let md = markdown(r, bold).replace("](plots/", &format!("]({t}/plots/"));
                s += &format!("# Dataset `{t}` ({})\n\n{md}\n", r.dataset);
            }
        }
    }
    s
}
