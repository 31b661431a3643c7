//! The table family of the seed (main, F1, thresholds) plus the honest
//! evaluation, built from `results.json` alone so `bench table` and CI can
//! re-render them without the dataset.

use crate::metrics::PointRule;
use super::markup::{Align, Better, Dialect, Table};
use super::results::{Cell, HonestCell, Results};

/// Percent with `d` decimals, `n/a` for undefined.
fn pct(v: Option<f64>, d: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{:.*}", d, 100.0 * x))
}

fn num(v: Option<f64>, d: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{:.*}", d, x))
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
    let with = |v: Vec<String>| v;
    let mut out = vec![
        grid(
            r,
            "Main Results",
            with(vec![
                "**Format**: FPR95 / AUROC / AUPR / F1 (all in %)".into(),
                format!(
                    "**Lower FPR95 is better**, **Higher AUROC/AUPR/F1 is better**. Split `{EVAL_SPLIT}`, every non-void pixel (exact, no subsampling); FPR95 rule `{}`{}.",
                    r.conventions.fpr95,
                    switches_note(&r.conventions)
                ),
            ]),
            Align::Left,
            &[("FPR95", Better::Lower), ("AUROC", Better::Higher), ("AUPR", Better::Higher), ("F1", Better::Higher)],
            |c| {
                let pm = |v: Option<f64>, ci: Option<[f64; 2]>| match ci {
                    Some([lo, hi]) if v.is_some() => format!("{}±{:.2}", pct(v, 2), 50.0 * (hi - lo)),
                    _ => pct(v, 2),
                };
                let b = c.bootstrap.as_ref();
                mark(
                    format!(
                        "{} / {} / {} / {}",
                        pm(c.fpr95, b.and_then(|b| b.fpr95)),
                        pm(c.auroc, b.and_then(|b| b.auroc)),
                        pm(c.aupr, b.and_then(|b| b.aupr)),
                        pct(c.f1, 2)
                    ),
                    c.leakage,
                )
            },
        ),
        grid(
            r,
            "F1 Scores (%) - For Threshold Selection",
            with(vec![
                "**Higher is better**. Max F1 over all thresholds of the test split: an *oracle* figure, since the threshold is chosen on the data it is scored on. The honest figures are in the tables below.".into(),
            ]),
            Align::Right,
            &[("F1", Better::Higher)],
            |c| mark(pct(c.f1, 2), c.leakage),
        ),
        grid(
            r,
            "Optimal Thresholds",
            with(vec!["The score thresholds that maximize F1 on the test split (oracle; `score ≥ t` is anomalous).".into()]),
            Align::Right,
            &[("threshold", Better::Neither)],
            |c| mark(num(c.threshold, 4), c.leakage),
        ),
    ];
    if !r.honest.is_empty() {
        let src = &r.honest[0].threshold_split;
        let from = if src == EVAL_SPLIT {
            format!("**No `val` split: thresholds were chosen on `{EVAL_SPLIT}` itself (leakage, marked {LEAK}).**")
        } else {
            format!("Thresholds chosen on `{src}`, applied unchanged to `{EVAL_SPLIT}`.")
        };
        out.push(honest_grid(
            r,
            "Honest F1: threshold from validation",
            with(vec![from.clone(), "**Format**: test F1 at the val-F1-optimal threshold (test-optimal oracle F1), in %".into()]),
            &[("F1 (oracle F1)", Better::Higher)],
            |h| {
                let p = h.points.iter().find(|p| p.rule == PointRule::F1Optimal);
                format!("{} ({})", pct(p.and_then(|p| p.f1), 2), pct(h.oracle_f1, 2))
            },
        ));
        let targets: Vec<(PointRule, f64)> = r.honest[0]
            .points
            .iter()
            .filter(|p| p.rule != PointRule::F1Optimal)
            .filter_map(|p| p.target.map(|t| (p.rule, t)))
            .collect();
        for (rule, t) in targets {
            let (title, fmt) = if rule == PointRule::Far {
                (
                    format!("FRR @ FAR ≤ {}%", fmt_pct(t)),
                    "**Format**: FRR / achieved FAR on test, in % (threshold from the FAR budget on val). n/a: no threshold that catches any anomaly meets the budget on val (FRR 100 %).",
                )
            } else {
                (format!("FAR @ FRR ≤ {}%", fmt_pct(t)), "**Format**: FAR / achieved FRR on test, in % (threshold from the FRR budget on val)")
            };
            let parts: &[(&str, Better)] =
                if rule == PointRule::Far { &[("FRR", Better::Lower), ("FAR", Better::Neither)] } else { &[("FAR", Better::Lower), ("FRR", Better::Neither)] };
            out.push(honest_grid(r, &title, with(vec![from.clone(), fmt.into()]), parts, |h| {
                let p = h.points.iter().find(|p| p.rule == rule && p.target == Some(t));
                match p {
                    Some(p) if rule == PointRule::Far => format!("{} / {}", pct(p.frr, 2), pct(p.far, 3)),
                    Some(p) => format!("{} / {}", pct(p.far, 2), pct(p.frr, 2)),
                    None => "n/a".into(),
                }
            }));
        }
        out.push(honest_grid(
            r,
            "Hard and soft thresholds",
            with(vec![
                from,
                "**Format**: block % / review % of test pixels. Hard threshold (block, no review) = the first FAR budget; soft threshold (review queue) = the first FRR budget; pixels between the two go to review.".into(),
            ]),
            &[("block", Better::Neither), ("review", Better::Neither)],
            |h| format!("{} / {}", pct(h.block_fraction, 2), pct(h.review_fraction, 2)),
        ));
    }
    let image = grid(
        r,
        "Image-level detection",
        with(vec![format!(
            "**Format**: image AUROC / image AUPR in %. Image score = {}; an image is anomalous when it has any anomaly pixel.",
            r.conventions.image_score
        )]),
        Align::Left,
        &[("image AUROC", Better::Higher), ("image AUPR", Better::Higher)],
        |c| mark(format!("{} / {}", pct(c.image_auroc, 2), pct(c.image_aupr, 2)), c.leakage),
    );
    out.push(image);
    if !r.drift.is_empty() {
        let d0 = &r.drift[0];
        out.push(model_grid(
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
        ));
    }
    if r.cells.iter().any(|c| c.split == EVAL_SPLIT && (c.aupro.is_some() || c.components.is_some())) {
        let track = r.cells.iter().find_map(|c| c.components.as_ref()).map_or("anomaly".to_string(), |c| c.track.name().to_string());
        out.push(grid(
            r,
            "Region metrics",
            vec![format!(
                "**Format**: AUPRO (FPR ≤ 30 %, normalised; MVTec AD) / sIoU / PPV / mean F1 (SegmentMeIfYouCan, `{track}` size filters, 8-connected components, score map binarised at the val-F1-optimal threshold), in %."
            )],
            Align::Right,
            &[("AUPRO", Better::Higher), ("sIoU", Better::Higher), ("PPV", Better::Higher), ("mean F1", Better::Higher)],
            |c| {
                let k = c.components.as_ref();
                mark(
                    format!(
                        "{} / {} / {} / {}",
                        pct(c.aupro, 2),
                        pct(k.and_then(|k| k.siou), 2),
                        pct(k.and_then(|k| k.ppv), 2),
                        pct(k.and_then(|k| k.mean_f1), 2)
                    ),
                    c.leakage,
                )
            },
        ));
    }
    if let Some(b) = r.cells.iter().find_map(|c| c.bootstrap.as_ref()) {
        out[0].notes.push(format!(
            "± = half-width of the 95 % percentile-bootstrap interval over {} resamplings of the test images (seed {}).",
            b.samples, b.seed
        ));
    }
    if !r.failure_modes.is_empty() {
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
                            .map_or("—".into(), |f| format!("{} / {} / {}", pct(f.auroc, 2), pct(f.fpr95, 2), pct(f.recall_at_val_threshold, 2))),
                    );
                }
                rows.push(row);
            }
        }
        let mut align = vec![Align::Left, Align::Left];
        align.extend(r.methods.iter().map(|_| Align::Right));
        out.push(Table {
            title: "Failure modes by anomaly type".into(),
            notes: vec!["**Format**: AUROC / FPR95 / recall at the val-F1-optimal threshold, in %; each type's pixels against all normal pixels of the test split.".into()],
            header,
            align,
            rows,
            key_cols: 2,
            parts: vec![("AUROC".into(), Better::Higher), ("FPR95".into(), Better::Lower), ("recall".into(), Better::Higher)],
        });
    }
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
