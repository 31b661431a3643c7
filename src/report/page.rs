//! `report.md` and `report.html`: the honest evaluation of seed 000 as one
//! page, in the seed's order — detection with bootstrap CIs on the
//! held-out test split, FRR @ the customer's FAR on the same split,
//! failure modes, drift sensitivity.
//!
//! Why one shape and two renderings (the `markup.rs` idea): the page is
//! built once from `results.json` alone ([`page`]: blocks of headings,
//! paragraphs, lists and tables); [`Markdown`] and [`Html`] only supply the
//! syntax and escaping. So `bench report` re-renders both files from
//! `results.json` byte for byte, and the two can never disagree on a
//! number. What results.json does not hold is said in words ("not
//! implemented", "no CI: bootstrap off"), never estimated.

use super::markup::Align;
use super::results::{Cell, HonestCell, Point, Results};
use crate::metrics::PointRule;
use crate::metrics::operating::Level;

/// The split the page reports on.
pub const EVAL_SPLIT: &str = super::tables::EVAL_SPLIT;

/// A piece of running text.
#[derive(Debug, Clone, PartialEq)]
pub enum Span {
    Text(String),
    Code(String),
    Strong(String),
}

/// A block of the page.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Level 1 (page title), 2 (section) or 3.
    Heading(u8, String),
    Para(Vec<Span>),
    List(Vec<Vec<Span>>),
    /// Header, alignment, rows (plain text cells).
    Table(Vec<String>, Vec<Align>, Vec<Vec<String>>),
    /// Images side by side: (path relative to the page, caption).
    Figures(Vec<(String, String)>),
}

/// The page: a title and its blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub title: String,
    pub blocks: Vec<Block>,
}

fn t(s: impl Into<String>) -> Span {
    Span::Text(s.into())
}
fn c(s: impl Into<String>) -> Span {
    Span::Code(s.into())
}
fn b(s: impl Into<String>) -> Span {
    Span::Strong(s.into())
}

/// Percent, 2 decimals (`n/a` when undefined).
fn pct(v: Option<f64>) -> String {
    pct_d(v, 2)
}
fn pct_d(v: Option<f64>, d: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{:.*}", d, 100.0 * x))
}
/// A 95 % interval in percent.
fn ci(v: Option<[f64; 2]>) -> Option<String> {
    v.map(|[lo, hi]| format!("[{:.2}, {:.2}]", 100.0 * lo, 100.0 * hi))
}
fn num4(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.4}"))
}
/// Signed value, 4 decimals or scientific below 1e-3 (as tables.md).
fn sig(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| if x != 0.0 && x.abs() < 1e-3 { format!("{x:.2e}") } else { format!("{x:.4}") })
}
/// A budget as a human wrote it: 0.001 → `0.1`.
pub(crate) fn budget_pct(x: f64) -> String {
    let r = format!("{:.6}", 100.0 * x);
    r.trim_end_matches('0').trim_end_matches('.').to_string()
}
/// Percentage points, signed, 2 decimals.
fn pp(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{:+.2}", 100.0 * x))
}

const LEAK: &str = "†";

fn model_name<'a>(r: &'a Results, id: &'a str) -> &'a str {
    r.models.iter().find(|m| m.id == id).map_or(id, |m| m.name.as_str())
}
fn method_name<'a>(r: &'a Results, id: &'a str) -> &'a str {
    r.methods.iter().find(|m| m.id == id).map_or(id, |m| m.name.as_str())
}

/// (model, method) pairs in config order.
fn pairs(r: &Results) -> Vec<(&str, &str)> {
    r.models.iter().flat_map(|m| r.methods.iter().map(move |me| (m.id.as_str(), me.id.as_str()))).collect()
}

/// Why a cell has no interval.
fn no_ci(r: &Results, cell: &Cell) -> String {
    if cell.bootstrap.is_some() {
        return "no CI: undefined in the resamples".into();
    }
    if r.cells.iter().any(|c| c.bootstrap.is_some()) || r.warnings.iter().any(|w| w.contains("bootstrap skipped")) {
        "no CI: bootstrap skipped (see warnings)".into()
    } else {
        "no CI: bootstrap off".into()
    }
}

/// The page of one results.json.
pub fn page(r: &Results) -> Page {
    let mut bl = vec![];
    bl.push(Block::Para(vec![
        t("Dataset "),
        c(&r.dataset),
        t(format!(" · device {} · {} models × {} methods · results format ", r.device, r.models.len(), r.methods.len())),
        c(&r.format),
        t(". Every figure on this page is read from "),
        c("results.json"),
        t(" alone ("),
        c("bench report <folder>"),
        t(" re-renders this page from it). A pixel or image is "),
        b("rejected"),
        t(" when its score ≥ t; FAR = defects accepted (anomalous ones with score < t), FRR = good rejected (normal ones with score ≥ t). Rates in %."),
    ]));
    if !r.warnings.is_empty() {
        bl.push(Block::Para(vec![b("Warnings of this run:")]));
        bl.push(Block::List(r.warnings.iter().map(|w| vec![t(w)]).collect()));
    }
    detection(r, &mut bl);
    operating(r, &mut bl);
    failure(r, &mut bl);
    drift(r, &mut bl);
    not_implemented(r, &mut bl);
    Page { title: format!("Honest evaluation: {}", r.name), blocks: bl }
}

/// 1. Image AUROC, pixel AUROC, PRO on the test split, with CIs.
fn detection(r: &Results, bl: &mut Vec<Block>) {
    bl.push(Block::Heading(2, format!("1. Detection on the held-out `{EVAL_SPLIT}` split")));
    let regions = r.cells.iter().any(|c| c.split == EVAL_SPLIT && c.aupro.is_some());
    let boot = r.cells.iter().find_map(|c| c.bootstrap.as_ref());
    let mut p = vec![t("Image AUROC (image score = "), t(&r.conventions.image_score), t("), pixel AUROC (every non-void pixel pooled, exact)")];
    if regions {
        p.push(t(" and PRO as AUPRO (FPR ≤ 30 %, normalised)"));
    }
    p.push(t(format!(", in %, on the `{EVAL_SPLIT}` split, which sets no threshold and fits no statistic. ")));
    match boot {
        Some(bs) => {
            p.push(t(format!(
                "CI = 95 % percentile-bootstrap interval over {} resamplings of the test images (seed {}, paired across methods: every method sees the same draws). Image AUROC is resampled exactly; pixel AUROC{} from per-image score histograms, their interval ends within results.json's ",
                bs.samples,
                bs.seed,
                if regions { " and AUPRO (with each anomaly pixel's region weight)" } else { "" }
            )));
            p.push(c("error_bound"));
            p.push(t(" of the exact bootstrap's."));
        }
        None => {
            let why = r.cells.iter().find(|c| c.split == EVAL_SPLIT).map_or("no CI: bootstrap off".into(), |c| no_ci(r, c));
            p.push(b(why));
            p.push(t(": results.json holds no bootstrap interval, so none is shown ("));
            p.push(c("[metrics] bootstrap = B"));
            p.push(t(" computes them)."));
        }
    }
    if r.conventions.average.is_some() {
        p.push(t(" Pixel AUROC (and its CI) is the mean of per-image AUROCs over images with both classes (`average = images`), not pooled pixels."));
    }
    bl.push(Block::Para(p));
    if !regions {
        bl.push(Block::Para(vec![t("PRO / AUPRO: not computed for this run ("), c("[metrics] regions = true"), t(" computes it).")]));
    }
    let mut header: Vec<String> = ["Model", "Method", "image AUROC", "image AUROC CI", "pixel AUROC", "pixel AUROC CI"].map(String::from).to_vec();
    if regions {
        header.extend(["PRO (AUPRO)", "AUPRO CI"].map(String::from));
    }
    let mut align = vec![Align::Left, Align::Left];
    align.extend(std::iter::repeat_n(Align::Right, header.len() - 2));
    let mut rows = vec![];
    let mut leak = false;
    for (m, me) in pairs(r) {
        let Some(cell) = r.cell(m, me, EVAL_SPLIT) else { continue };
        let mk = |s: String| if cell.leakage { format!("{s} {LEAK}") } else { s };
        leak |= cell.leakage;
        let none = "no CI (not bootstrapped)".to_string();
        let img_ci = match cell.bootstrap.as_ref() {
            Some(b) => ci(b.image_auroc).unwrap_or_else(|| if b.method.is_some() { no_ci(r, cell) } else { none.clone() }),
            None => no_ci(r, cell),
        };
        let px_ci = ci(cell.bootstrap.as_ref().and_then(|b| b.auroc)).unwrap_or_else(|| no_ci(r, cell));
        let mut row = vec![model_name(r, m).to_string(), method_name(r, me).to_string(), mk(pct(cell.image_auroc)), img_ci, mk(pct(cell.auroc)), px_ci];
        if regions {
            row.push(mk(pct(cell.aupro)));
            row.push(match cell.bootstrap.as_ref() {
                Some(b) => ci(b.aupro).unwrap_or_else(|| match b.method.as_deref() {
                    // defined replicates but no AUPRO bound: a file from before AUPRO intervals
                    Some("histogram") if b.defined > 0 && b.error_bound.is_some_and(|e| e.aupro.is_none()) => "no CI (results.json predates AUPRO intervals)".into(),
                    Some("histogram") => no_ci(r, cell),
                    // per-image means, or a file of the exact bootstrap
                    Some("image_means") => "no CI (not implemented with `average = images`)".into(),
                    _ => none.clone(),
                }),
                None => no_ci(r, cell),
            });
        }
        rows.push(row);
    }
    bl.push(Block::Table(header, align, rows));
    if leak {
        bl.push(Block::Para(vec![b(format!("{LEAK} leakage")), t(": calibration statistics (SML/HEAT) were fitted on the evaluated split itself.")]));
    }
}

fn point(h: &HonestCell, level: Level, rule: PointRule, budget: f64) -> Option<&Point> {
    h.point(level, rule, Some(budget))
}

/// 2. FRR @ FAR (and FAR @ FRR) at both levels, thresholds from val; review bands.
fn operating(r: &Results, bl: &mut Vec<Block>) {
    bl.push(Block::Heading(2, format!("2. FRR at the customer's FAR budget (`{EVAL_SPLIT}` split)")));
    let Some(h0) = r.honest.first() else {
        bl.push(Block::Para(vec![t("No operating points in results.json (no honest evaluation was run).")]));
        return;
    };
    let src = &h0.threshold_split;
    if src == &h0.eval_split {
        bl.push(Block::Para(vec![b(format!(
            "Leakage: there is no `val` split, so the thresholds were chosen on `{src}` itself — the figures below are optimistic (marked {LEAK})."
        ))]));
    } else {
        bl.push(Block::Para(vec![
            t("Thresholds are chosen on "),
            c(src),
            t(" and applied unchanged to "),
            c(&h0.eval_split),
            t(" (never picked on the test set). FRR @ FAR ≤ b: t = the highest val score with at most b of val's defects accepted; the figure of merit is the test FRR, with the test FAR actually achieved beside it. FAR @ FRR ≤ b: t = the lowest val score with at most b of val's good ones rejected."),
        ]));
    }
    if r.honest.iter().any(|h| h.points.iter().any(|p| p.far_ci.is_some() || p.frr_ci.is_some())) {
        bl.push(Block::Para(vec![t(
            "[lo, hi] beside a figure of merit: its 95 % bootstrap interval over resampled test images at the same fixed threshold (exact counts per resample).",
        )]));
    }
    if r.honest.iter().any(|h| h.leakage) && src != &h0.eval_split {
        bl.push(Block::Para(vec![b(format!("{LEAK} leakage")), t(": results.json flags these cells: thresholds or calibration came from the evaluated split.")]));
    }
    for level in [Level::Pixel, Level::Image] {
        operating_level(r, h0, level, bl);
    }
}

/// One level's operating-point table (test FRR/FAR at every budget, with
/// the reasons of undefined points) and its review band.
fn operating_level(r: &Results, h0: &HonestCell, level: Level, bl: &mut Vec<Block>) {
    let budgets: Vec<(PointRule, f64)> =
        h0.points.iter().filter(|p| p.level == level && p.rule != PointRule::F1Optimal).filter_map(|p| p.budget.map(|b| (p.rule, b))).collect();
    let u = level.units();
    let cap = match level {
        Level::Pixel => "Pixel level",
        Level::Image => "Image level",
    };
    bl.push(Block::Heading(3, format!("{cap} (per {})", &u[..u.len() - 1])));
    if level == Level::Image {
        bl.push(Block::Para(vec![t(format!(
            "Image score = {}; an image is anomalous when it has any anomaly pixel. Each image-level rate rests on the image counts of the last column: with few images, one image moves a rate by a large step.",
            r.conventions.image_score
        ))]));
    }
    if budgets.is_empty() {
        bl.push(Block::Para(vec![t("No FAR or FRR budget in the config ("), c("[metrics] far = [...]"), t(", "), c("frr = [...]"), t(").")]));
        return;
    }
    let mut header = vec!["Model".to_string(), "Method".to_string()];
    for (rule, bu) in &budgets {
        if *rule == PointRule::FrrAtFar {
            header.push(format!("FRR @ FAR ≤ {} %", budget_pct(*bu)));
            header.push("achieved FAR".into());
        } else {
            header.push(format!("FAR @ FRR ≤ {} %", budget_pct(*bu)));
            header.push("achieved FRR".into());
        }
    }
    header.push(format!("test {u} (normal / anomalous)"));
    let mut align = vec![Align::Left, Align::Left];
    align.extend(std::iter::repeat_n(Align::Right, header.len() - 2));
    let mut rows = vec![];
    let mut reasons = vec![];
    for (m, me) in pairs(r) {
        let Some(h) = r.honest_cell(m, me) else { continue };
        let mk = |s: String| if h.leakage { format!("{s} {LEAK}") } else { s };
        let mut row = vec![model_name(r, m).to_string(), method_name(r, me).to_string()];
        for (rule, bu) in &budgets {
            match point(h, level, *rule, *bu) {
                Some(p) if p.threshold.is_some() => {
                    let (merit, other, merit_ci) = if *rule == PointRule::FrrAtFar { (p.frr, p.far, p.frr_ci) } else { (p.far, p.frr, p.far_ci) };
                    row.push(mk(ci(merit_ci).map_or(pct(merit), |i| format!("{} {i}", pct(merit)))));
                    row.push(pct_d(other, 3));
                }
                Some(p) => {
                    reasons.extend(p.reason.clone());
                    row.push("n/a".into());
                    row.push("n/a".into());
                }
                None => {
                    row.push("—".into());
                    row.push("—".into());
                }
            }
        }
        let counts = r.cell(m, me, &h.eval_split).map_or("—".into(), |c| match level {
            Level::Pixel => format!("{} / {}", c.negatives, c.positives),
            Level::Image => format!("{} / {}", c.normal_images, c.anomalous_images),
        });
        row.push(counts);
        rows.push(row);
    }
    bl.push(Block::Table(header, align, rows));
    reasons.sort();
    reasons.dedup();
    if !reasons.is_empty() {
        bl.push(Block::List(reasons.into_iter().map(|s| vec![t(format!("n/a: {s}."))]).collect()));
    }
    band(r, level, bl);
}

/// The hard/soft review band of one level.
fn band(r: &Results, level: Level, bl: &mut Vec<Block>) {
    if !r.honest.iter().any(|h| h.band(level).is_some()) {
        bl.push(Block::Para(vec![t("Review band: needs both a FAR and an FRR budget; not computed for this run.")]));
        return;
    }
    let h0 = &r.honest[0];
    let first = |rule: PointRule| h0.points.iter().find(|p| p.level == level && p.rule == rule).and_then(|p| p.budget);
    let u = level.units();
    bl.push(Block::Para(vec![
        b("Hard / soft thresholds"),
        t(format!(
            " (as a line runs them): hard = FAR @ FRR ≤ {} % (score ≥ hard: auto-rejected, no review), soft = FRR @ FAR ≤ {} % (score < soft: auto-accepted); [soft, hard) goes to operator review. Shares of all test {u}; defects auto-accepted in % of anomalous {u}, good auto-rejected in % of normal {u}.",
            first(PointRule::FarAtFrr).map_or("n/a".into(), budget_pct),
            first(PointRule::FrrAtFar).map_or("n/a".into(), budget_pct)
        )),
    ]));
    let header: Vec<String> = ["Model", "Method", "soft t", "hard t", "auto-rejected", "review", "auto-accepted", "defects auto-accepted", "good auto-rejected"].map(String::from).to_vec();
    let mut align = vec![Align::Left, Align::Left];
    align.extend(std::iter::repeat_n(Align::Right, header.len() - 2));
    let mut rows = vec![];
    let mut reasons = vec![];
    for (m, me) in pairs(r) {
        let Some(h) = r.honest_cell(m, me) else { continue };
        let mut row = vec![model_name(r, m).to_string(), method_name(r, me).to_string()];
        match h.band(level) {
            Some(bd) => {
                row.push(num4(bd.soft_threshold));
                row.push(num4(bd.hard_threshold));
                match &bd.reason {
                    Some(why) => {
                        let short = if why.starts_with("incompatible budgets") { "incompatible budgets" } else { "n/a" };
                        reasons.push(why.clone());
                        row.extend([short.to_string(), "—".into(), "—".into(), "—".into(), "—".into()]);
                    }
                    None => row.extend([pct(bd.auto_rejected), pct(bd.review), pct(bd.auto_accepted), pct_d(bd.defects_auto_accepted, 3), pct_d(bd.good_auto_rejected, 3)]),
                }
            }
            None => row.extend(std::iter::repeat_n("—".to_string(), 7)),
        }
        rows.push(row);
    }
    bl.push(Block::Table(header, align, rows));
    reasons.sort();
    reasons.dedup();
    if !reasons.is_empty() {
        bl.push(Block::List(reasons.into_iter().map(|s| vec![t(s)]).collect()));
    }
}

/// 3. Per-anomaly-type breakdown at the deployed threshold, and the
/// example panels of the worst images.
fn failure(r: &Results, bl: &mut Vec<Block>) {
    bl.push(Block::Heading(2, "3. Failure modes".into()));
    if r.failure_modes.is_empty() {
        bl.push(Block::Para(vec![b("failure-mode breakdown: not computed"), t(" (results.json holds no per-type rows).")]));
        return;
    }
    bl.push(Block::Para(vec![t(
        "Per anomaly type (mask value): that type's test pixels against all normal test pixels, in %. Recall = share of the type's pixels caught (score ≥ t) at the deployed soft threshold (FRR @ FAR at the first FAR budget, chosen on val) and, for comparison, at the val-F1-optimal threshold. Images missed = the type's images (any pixel of the type) whose image score is below the image-level soft threshold: the whole part auto-accepted.",
    )]));
    let header: Vec<String> =
        ["Model", "Method", "anomaly type", "pixels", "AUROC", "AUPR", "FPR95", "recall @ soft t", "recall @ val-F1 t", "images", "images missed"].map(String::from).to_vec();
    let mut align = vec![Align::Left, Align::Left, Align::Left];
    align.extend(std::iter::repeat_n(Align::Right, header.len() - 3));
    let mut rows = vec![];
    for f in failure_rows(r) {
        let missed = match (f.images_missed, f.image_miss_share) {
            (Some(k), Some(sh)) => format!("{k} ({})", pct(Some(sh))),
            _ => "n/a".into(),
        };
        rows.push(vec![
            model_name(r, &f.model).to_string(),
            method_name(r, &f.method).to_string(),
            format!("label {}", f.anomaly_value),
            f.positives.to_string(),
            pct(f.auroc),
            pct(f.aupr),
            pct(f.fpr95),
            pct(f.recall_at_soft_threshold),
            pct(f.recall_at_val_threshold),
            f.images.to_string(),
            missed,
        ]);
    }
    bl.push(Block::Table(header, align, rows));
    let mut reasons: Vec<String> = r.failure_modes.iter().filter_map(|f| f.reason.clone()).collect();
    reasons.sort();
    reasons.dedup();
    if !reasons.is_empty() {
        bl.push(Block::List(reasons.into_iter().map(|s| vec![t(format!("n/a: {s}."))]).collect()));
    }
    examples(r, bl);
}

/// The failure rows in page order: models, methods, then anomaly values.
fn failure_rows(r: &Results) -> Vec<&super::results::FailureRow> {
    let mut values: Vec<u16> = r.failure_modes.iter().map(|f| f.anomaly_value).collect();
    values.sort_unstable();
    values.dedup();
    pairs(r)
        .into_iter()
        .flat_map(|(m, me)| values.iter().filter_map(move |&v| r.failure_modes.iter().find(|f| f.model == m && f.method == me && f.anomaly_value == v)))
        .collect()
}

/// The example panels: per model and anomaly type, the worst test images.
fn examples(r: &Results, bl: &mut Vec<Block>) {
    let with: Vec<_> = failure_rows(r).into_iter().filter(|f| !f.examples.is_empty()).collect();
    if with.is_empty() {
        bl.push(Block::Para(vec![
            b("Example images: none in results.json"),
            t(" ("),
            c("[report] failure_examples = K"),
            t(" draws the K worst test images per type; they need a val-chosen soft threshold)."),
        ]));
        return;
    }
    bl.push(Block::Para(vec![t(
        "The worst test images of each type for one method (worst = lowest recall of the type's pixels at the soft threshold, ties by image id). Tiles: the input photo when the dataset has one, the mask (type white, other types blue, void grey), the score heat map (inferno; the normal median is black, the soft threshold the middle orange, the highest anomaly score pale yellow), and the decision at the soft threshold: caught green, missed (defect accepted) magenta, false reject amber, accepted normal dark grey.",
    )]));
    for f in with {
        bl.push(Block::Heading(3, format!("{} · {} · label {}", model_name(r, &f.model), method_name(r, &f.method), f.anomaly_value)));
        let figs = f
            .examples
            .iter()
            .map(|e| (e.png.clone(), format!("#{} {}: {} of {} pixels caught ({} %)", e.rank, e.image, e.caught, e.pixels, pct(Some(e.recall)))))
            .collect();
        bl.push(Block::Figures(figs));
    }
}

/// 4. Drift sensitivity: the drifted copies of test, then the natural
/// val → test shift of normal scores.
fn drift(r: &Results, bl: &mut Vec<Block>) {
    bl.push(Block::Heading(2, "4. Drift sensitivity".into()));
    simulated_drift(r, bl);
    bl.push(Block::Heading(3, "Normal-score shift from the threshold split to test".into()));
    if r.drift.is_empty() {
        bl.push(Block::Para(vec![t("No drift rows in results.json (a run without a `val` split has no reference).")]));
        return;
    }
    let d0 = &r.drift[0];
    bl.push(Block::Para(vec![t(format!(
        "Normal pixels only, `{}` → `{}`: Δmean and Δp95 in raw score units, KL({} ‖ {}) on the 16-bit score-key histogram (+0.5 smoothing), MMD² (Gaussian kernel, σ = pooled std). Reject-rate shift = test FRR − val FRR at the deployed hard threshold (good rejected, percentage points), pixel and image level. The per-split histograms are in ",
        d0.reference, d0.split, d0.split, d0.reference
    )), c("drift.json"), t("; "), c("bench drift <run1> <run2> ..."), t(" tracks runs over time with the 2σ rule (σ from the first run's image resamples, kept in its drift.json).")]));
    let header: Vec<String> = ["Model", "Method", "Δmean", "Δp95", "KL", "MMD²", "reject-rate shift (pixel)", "reject-rate shift (image)"].map(String::from).to_vec();
    let mut align = vec![Align::Left, Align::Left];
    align.extend(std::iter::repeat_n(Align::Right, 6));
    let mut rows = vec![];
    for (m, me) in pairs(r) {
        for d in r.drift.iter().filter(|d| d.model == m && d.method == me) {
            let shift = |level: Level| {
                let h = r.honest_cell(m, me)?;
                h.band(level)?.hard_threshold?;
                // hard = FAR @ FRR at the first FRR budget
                let p = h.points.iter().find(|p| p.level == level && p.rule == PointRule::FarAtFrr)?;
                Some(p.frr? - p.threshold_split_frr?)
            };
            rows.push(vec![
                model_name(r, m).to_string(),
                method_name(r, me).to_string(),
                sig(d.mean_shift),
                sig(d.p95_shift),
                sig(d.kl),
                sig(d.mmd2),
                pp(shift(Level::Pixel)),
                pp(shift(Level::Image)),
            ]);
        }
    }
    bl.push(Block::Table(header, align, rows));
}

/// The `test@<name>` splits: accuracy change, threshold drift, dashboard
/// (the tables of `sensitivity`), or why there are none.
fn simulated_drift(r: &Results, bl: &mut Vec<Block>) {
    let tables = super::sensitivity::tables(r);
    if tables.is_empty() {
        bl.push(Block::Para(vec![
            b("No simulated-drift split in this dataset"),
            t(": a drifted copy of the test split ("),
            c("<dataset>/test@<name>/"),
            t(", e.g. two weeks of simulated lighting drift: the same image ids, logits of the same models) is evaluated like test with the val thresholds; without one this page cannot say how much accuracy degrades under drift."),
        ]));
        return;
    }
    let names: std::collections::BTreeSet<&str> = r.drift_splits.iter().map(|d| d.split.as_str()).collect();
    bl.push(Block::Para(vec![t(format!(
        "Drifted copies of the test split ({}): the same images under drift, scored by the same models, evaluated with the thresholds deployed from `{}`. First how much accuracy moves, then what the deployed thresholds do when nobody recalibrates, then the seed's dashboard rule (flag any statistic of good pixels/images that moves more than 2σ from clean test).",
        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
        r.drift_splits[0].threshold_split
    ))]));
    for tb in tables {
        bl.push(Block::Heading(3, tb.title.clone()));
        bl.push(Block::Para(tb.notes.iter().map(|n| t(format!("{} ", n.replace("**", "")))).collect()));
        bl.push(Block::Table(tb.header, tb.align, tb.rows));
    }
}

/// What this run's results.json cannot hold, said once (nothing when
/// every interval the page shows exists).
fn not_implemented(r: &Results, bl: &mut Vec<Block>) {
    if r.conventions.average.is_none() {
        return;
    }
    bl.push(Block::Heading(2, "Not in this report".into()));
    bl.push(Block::List(vec![vec![t(
        "With `average = images` the bootstrap resamples per-image means of AUROC, AUPR, FPR95 and F1: CIs of AUPRO (cells, method differences, drift changes) are not implemented there (said per cell and row).",
    )]]));
}

/// A rendering of a [`Page`].
pub trait PageDialect {
    fn text(&self, s: &str) -> String;
    fn span(&self, s: &Span) -> String;
    fn heading(&self, level: u8, text: &str) -> String;
    fn para(&self, spans: &[Span]) -> String;
    fn list(&self, items: &[Vec<Span>]) -> String;
    fn table(&self, header: &[String], align: &[Align], rows: &[Vec<String>]) -> String;
    fn figures(&self, figs: &[(String, String)]) -> String;
    fn document(&self, title: &str, body: &str) -> String;

    /// Text with `backticks` is code: split it out first.
    fn spans(&self, s: &[Span]) -> String {
        s.iter()
            .flat_map(|x| match x {
                Span::Text(t) if t.contains('`') => heading_spans(t),
                _ => vec![x.clone()],
            })
            .map(|x| self.span(&x))
            .collect()
    }
    fn render(&self, p: &Page) -> String {
        let mut body = self.heading(1, &p.title);
        for bk in &p.blocks {
            body += &match bk {
                Block::Heading(l, s) => self.heading(*l, s),
                Block::Para(s) => self.para(s),
                Block::List(items) => self.list(items),
                Block::Table(h, a, r) => self.table(h, a, r),
                Block::Figures(f) => self.figures(f),
            };
        }
        self.document(&p.title, &body)
    }
}

pub struct Markdown;
pub struct Html;

/// A relative path as a URL: every byte outside `[A-Za-z0-9._~/-]`
/// percent-encoded (image ids may hold spaces or brackets).
fn url(p: &str) -> String {
    p.bytes().map(|b| if b.is_ascii_alphanumeric() || b"._~/-".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Headings carry `code` spans written with backticks; split them out.
fn heading_spans(s: &str) -> Vec<Span> {
    s.split('`').enumerate().filter(|(_, p)| !p.is_empty()).map(|(i, p)| if i % 2 == 1 { c(p) } else { t(p) }).collect()
}

impl PageDialect for Markdown {
    /// CommonMark backslash escapes for what would turn into markup.
    fn text(&self, s: &str) -> String {
        let mut o = String::with_capacity(s.len());
        for ch in s.chars() {
            if matches!(ch, '\\' | '`' | '*' | '_' | '[' | '<' | '>' | '|' | '&') {
                o.push('\\');
            }
            o.push(ch);
        }
        o
    }
    fn span(&self, s: &Span) -> String {
        match s {
            Span::Text(x) => self.text(x),
            Span::Code(x) => {
                let x = x.replace('`', "'");
                format!("`{x}`")
            }
            Span::Strong(x) => format!("**{}**", self.text(x)),
        }
    }
    fn heading(&self, level: u8, text: &str) -> String {
        format!("{} {}\n\n", "#".repeat(level as usize), self.spans(&heading_spans(text)))
    }
    fn para(&self, spans: &[Span]) -> String {
        format!("{}\n\n", self.spans(spans))
    }
    fn list(&self, items: &[Vec<Span>]) -> String {
        let mut s: String = items.iter().map(|i| format!("- {}\n", self.spans(i))).collect();
        s.push('\n');
        s
    }
    fn table(&self, header: &[String], align: &[Align], rows: &[Vec<String>]) -> String {
        let esc = |r: &[String]| r.iter().map(|x| self.text(x)).collect::<Vec<_>>();
        let h = esc(header);
        let rs: Vec<Vec<String>> = rows.iter().map(|r| esc(r)).collect();
        let mut w: Vec<usize> = h.iter().map(|x| x.chars().count()).collect();
        for r in &rs {
            for (i, x) in r.iter().enumerate() {
                w[i] = w[i].max(x.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let inner: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let n = w[i].saturating_sub(x.chars().count());
                    if align[i] == Align::Right { format!("{}{x}", " ".repeat(n)) } else { format!("{x}{}", " ".repeat(n)) }
                })
                .collect();
            format!("| {} |\n", inner.join(" | "))
        };
        let mut s = line(&h);
        let div: Vec<String> =
            w.iter().zip(align).map(|(&n, a)| if *a == Align::Right { format!("{}:", "-".repeat(n + 1)) } else { format!(":{}", "-".repeat(n + 1)) }).collect();
        s += &format!("|{}|\n", div.join("|"));
        for r in &rs {
            s += &line(r);
        }
        s.push('\n');
        s
    }
    fn figures(&self, figs: &[(String, String)]) -> String {
        figs.iter().map(|(src, cap)| format!("![{}]({})  \n{}\n\n", self.text(cap), url(src), self.text(cap))).collect()
    }
    fn document(&self, _title: &str, body: &str) -> String {
        body.to_string()
    }
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#1d232a;max-width:1200px;margin:1.2em auto;padding:0 1.2em;line-height:1.45}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.3em;margin:1.6em 0 .4em;border-bottom:1px solid #d8dde3;padding-bottom:.2em}h3{font-size:1.1em;margin:1.2em 0 .3em}
p{margin:.4em 0 .7em}code{font-size:.92em;background:#f1f3f5;padding:0 .25em;border-radius:3px}ul{margin:.3em 0 .8em;padding-left:1.4em}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.4em 0 1em;font-variant-numeric:tabular-nums;font-size:.86em}
th,td{border-bottom:1px solid #e3e7eb;padding:3px 7px;white-space:nowrap;text-align:left;vertical-align:top}th{background:#f1f3f5;font-weight:600;white-space:normal;vertical-align:bottom}td.r,th.r{text-align:right}
td.k{white-space:normal;min-width:9em;max-width:14em;font-weight:600}tr.grp td{border-top:2px solid #c9d0d7}
.figs{display:flex;flex-wrap:wrap;gap:.8em}figure{margin:0}figure img{display:block;image-rendering:pixelated;height:192px}figcaption{font-size:.82em;color:#4a545e}
";

impl PageDialect for Html {
    fn text(&self, s: &str) -> String {
        s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
    }
    fn span(&self, s: &Span) -> String {
        match s {
            Span::Text(x) => self.text(x),
            Span::Code(x) => format!("<code>{}</code>", self.text(x)),
            Span::Strong(x) => format!("<strong>{}</strong>", self.text(x)),
        }
    }
    fn heading(&self, level: u8, text: &str) -> String {
        format!("<h{level}>{}</h{level}>\n", self.spans(&heading_spans(text)))
    }
    fn para(&self, spans: &[Span]) -> String {
        format!("<p>{}</p>\n", self.spans(spans))
    }
    fn list(&self, items: &[Vec<Span>]) -> String {
        let mut s = "<ul>\n".to_string();
        for i in items {
            s += &format!("<li>{}</li>\n", self.spans(i));
        }
        s + "</ul>\n"
    }
    fn table(&self, header: &[String], align: &[Align], rows: &[Vec<String>]) -> String {
        let cls = |a: &Align| if *a == Align::Right { " class=\"r\"" } else { "" };
        let mut s = "<div class=\"scroll\"><table>\n<tr>".to_string();
        for (h, a) in header.iter().zip(align) {
            s += &format!("<th{}>{}</th>", cls(a), self.text(h));
        }
        s += "</tr>\n";
        for (i, r) in rows.iter().enumerate() {
            // equal consecutive model names: one cell spanning their rows
            let first = i == 0 || rows[i - 1].first() != r.first();
            s += if first && i > 0 { "<tr class=\"grp\">" } else { "<tr>" };
            for (j, (x, a)) in r.iter().zip(align).enumerate() {
                if j == 0 {
                    if !first {
                        continue;
                    }
                    let n = rows[i..].iter().take_while(|q| q.first() == r.first()).count();
                    let span = if n > 1 { format!(" rowspan=\"{n}\"") } else { String::new() };
                    s += &format!("<td class=\"k\"{span}>{}</td>", self.text(x));
                    continue;
                }
                s += &format!("<td{}>{}</td>", cls(a), self.text(x));
            }
            s += "</tr>\n";
        }
        s + "</table></div>\n"
    }
    fn figures(&self, figs: &[(String, String)]) -> String {
        let mut s = "<div class=\"figs\">\n".to_string();
        for (src, cap) in figs {
            let cap = self.text(cap);
            s += &format!("<figure><img src=\"{}\" alt=\"{cap}\"><figcaption>{cap}</figcaption></figure>\n", self.text(&url(src)));
        }
        s + "</div>\n"
    }
    fn document(&self, title: &str, body: &str) -> String {
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>\n{CSS}</style></head><body>\n{body}</body></html>\n",
            self.text(title)
        )
    }
}

/// `report.md` of one results.json.
pub fn markdown(r: &Results) -> String {
    Markdown.render(&page(r))
}

/// `report.html` of one results.json (inline CSS, no scripts; its only
/// links are the failure panels' `<img src="failures/...">`, relative).
pub fn html(r: &Results) -> String {
    Html.render(&page(r))
}

/// The two report files of one results folder.
pub fn files(r: &Results) -> Vec<(String, Vec<u8>)> {
    let p = page(r);
    vec![("report.md".into(), Markdown.render(&p).into_bytes()), ("report.html".into(), Html.render(&p).into_bytes())]
}
