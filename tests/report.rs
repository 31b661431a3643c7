//! Report room: table dialects (golden), diff verdicts, atomic writes.

use bench::report::diff::{diff, render};
use bench::report::markup::{Csv, Latex, Markdown, dialect};
use bench::report::results::*;
use bench::report::{tables, write_dir_atomic};

fn cell(model: &str, method: &str, split: &str, auroc: Option<f64>, leakage: bool) -> Cell {
    Cell {
        model: model.into(),
        method: method.into(),
        split: split.into(),
        auroc,
        aupr: auroc.map(|a| a / 10.0),
        fpr95: auroc.map(|a| 1.0 - a),
        f1: auroc.map(|a| a / 5.0),
        threshold: auroc.map(|a| -2.0 * a),
        positives: 10,
        negatives: 990,
        void: 5,
        images: 2,
        distinct_positive_scores: 10,
        leakage,
        image_auroc: Some(0.75),
        image_aupr: Some(0.5),
        anomalous_images: 1,
        normal_images: 1,
        normal_mean: Some(-3.0),
        normal_p50: Some(-3.5),
        normal_p95: Some(-1.0),
        normal_p99: Some(-0.5),
        aupro: None,
        regions: 0,
        components: None,
        bootstrap: None,
        per_image: None,
        aupr_in: None,
        fpr95_in: None,
        binned: None,
        warnings: vec![],
    }
}

use bench::metrics::PointRule;
use bench::metrics::operating::Level;

/// A point with `[far, frr, precision, recall, f1]` on test.
fn pt(level: Level, rule: PointRule, budget: Option<f64>, threshold: Option<f64>, v: [Option<f64>; 5]) -> Point {
    Point {
        level,
        rule,
        budget,
        threshold,
        far: v[0],
        frr: v[1],
        precision: v[2],
        recall: v[3],
        f1: v[4],
        threshold_split_far: v[0],
        threshold_split_frr: v[1],
        far_ci: None,
        frr_ci: None,
        reason: None,
    }
}

fn sample() -> Results {
    Results {
        format: FORMAT.into(),
        name: "t".into(),
        dataset: "d".into(),
        device: bench::report::results::DeviceKind::Cpu,
        conventions: Conventions {
            fpr95: "first".into(),
            convention: None,
            aupr: None,
            score_precision: None,
            average: None,
            positive: None,
            positive_when: "score >= threshold".into(),
            pooling: "p".into(),
            anomaly_values: vec![1],
            ignore_values: vec![255],
            msp_temperature: 1.0,
            energy_temperature: 1.0,
            sml_variant: "plain".into(),
            gen_variant: None,
            margin_variant: None,
            heat_variant: "h".into(),
            image_score: "max over non-void pixels".into(),
            resize: "none".into(),
        },
        models: vec![
            ModelRow { id: "a".into(), name: "Model A".into(), dtype: "float32".into() },
            ModelRow { id: "b".into(), name: "Model B | pipes".into(), dtype: "float16".into() },
        ],
        methods: vec![
            MethodRow { id: "max_logit".into(), name: "Simple Max Logits".into(), external: None },
            MethodRow { id: "sml".into(), name: "Standardized Max Logits".into(), external: None },
        ],
        cells: vec![
            cell("a", "max_logit", "test", Some(0.905), false),
            cell("a", "sml", "test", Some(0.8), true),
            cell("b", "max_logit", "test", None, false),
            cell("b", "sml", "test", Some(0.7), false),
            cell("a", "max_logit", "val", Some(0.9), false),
        ],
        honest: vec![HonestCell {
            model: "a".into(),
            method: "max_logit".into(),
            threshold_split: "val".into(),
            eval_split: "test".into(),
            leakage: false,
            points: vec![
                pt(Level::Pixel, PointRule::F1Optimal, None, Some(-1.5), [Some(0.2), Some(0.1), Some(0.3), Some(0.8), Some(0.4363)]),
                pt(Level::Pixel, PointRule::FrrAtFar, Some(0.001), Some(-3.0), [Some(0.0012), Some(0.5), None, None, None]),
                pt(Level::Pixel, PointRule::FarAtFrr, Some(0.02), Some(-0.5), [Some(0.6), Some(0.019), None, None, None]),
                pt(Level::Image, PointRule::FrrAtFar, Some(0.001), Some(-0.25), [Some(0.0), Some(0.5), None, None, None]),
                Point { reason: Some("no normal images in the threshold split: FRR, and so `far_at_frr`, is undefined".into()), ..pt(Level::Image, PointRule::FarAtFrr, Some(0.02), None, [None; 5]) },
            ],
            oracle_f1: Some(0.45),
            bands: vec![
                Band {
                    level: Level::Pixel,
                    hard_threshold: Some(-0.5),
                    soft_threshold: Some(-3.0),
                    auto_rejected: Some(0.01),
                    review: Some(0.4),
                    auto_accepted: Some(0.59),
                    defects_auto_accepted: Some(0.0012),
                    good_auto_rejected: Some(0.019),
                    reason: None,
                },
                Band {
                    level: Level::Image,
                    hard_threshold: Some(-1.0),
                    soft_threshold: Some(-0.25),
                    auto_rejected: None,
                    review: None,
                    auto_accepted: None,
                    defects_auto_accepted: None,
                    good_auto_rejected: None,
                    reason: Some(bench::metrics::operating::incompatible(-1.0, -0.25)),
                },
            ],
        }],
        calibration: vec![],
        drift: vec![DriftRow {
            model: "a".into(),
            method: "max_logit".into(),
            reference: "val".into(),
            split: "test".into(),
            mean_shift: Some(0.25),
            p95_shift: Some(-0.125),
            kl: Some(0.0123),
            mmd2: Some(0.00042),
        }],
        drift_splits: vec![],
        failure_modes: vec![],
        bootstrap_diff: vec![],
        warnings: vec!["a warning".into()],
    }
}

#[test]
fn markdown_tables_have_the_seed_shape() {
    let md = tables::render(&sample(), &Markdown);
    let expected = include_str!("fixtures/tables_sample.md");
    if std::env::var("BLESS").is_ok() {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tables_sample.md"), &md).unwrap();
    }
    assert_eq!(md, expected, "re-bless with BLESS=1 if the change is intended");
    // the seed's headings and format line, exactly
    for h in ["## Main Results", "**Format**: FPR95 / AUROC / AUPR / F1 (all in %)", "## F1 Scores (%) - For Threshold Selection", "## Optimal Thresholds"] {
        assert!(md.contains(h), "missing {h}");
    }
    // best value of the row in bold (issue 14 item 13)
    assert!(md.contains("| **9.50** / **90.50** / **9.05** / **18.10** "), "{md}");
    assert!(md.contains("-1.8100"), "4-decimal thresholds");
    assert!(md.contains("n/a / n/a / n/a / n/a"), "undefined cells print n/a");
    assert!(md.contains("† leakage"), "leakage footnote");
    assert!(md.contains("Model B \\| pipes"), "pipes escaped");
}

#[test]
fn csv_and_latex_render() {
    let r = sample();
    let csv = tables::render(&r, &Csv);
    assert!(csv.contains("Model,Simple Max Logits,Standardized Max Logits\n"), "{csv}");
    assert!(csv.contains("Model A,18.10,16.00 †\n"), "{csv}");
    let tex = tables::render(&r, &Latex);
    assert!(tex.contains("\\toprule") && tex.contains("\\midrule") && tex.contains("\\bottomrule"));
    // long layout, best in bold (issue 14 items 13, 14)
    assert!(tex.contains("\\textbf{9.50} & \\textbf{90.50} & \\textbf{9.05} & \\textbf{18.10} \\\\"), "{tex}");
    assert!(tex.contains("20.00 & 80.00 & 8.00 & 16.00 \\textsuperscript{\\dag} \\\\"), "{tex}");
    assert!(dialect("html").is_ok());
    assert!(dialect("docx").is_err());
}

#[test]
fn results_json_round_trips_and_is_stable() {
    let r = sample();
    let j = r.to_json();
    let back = Results::from_json(&j).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.to_json(), j);
    assert!(Results::from_json(&j.replace("bench-results/2", "bench-results/1")).is_err());
}

#[test]
fn diff_reports_changes_and_tolerance() {
    let a = sample();
    let d = diff(&a, &a, 1e-6, &[]).unwrap();
    assert!(d.within_tolerance());
    assert!(render(&d).starts_with("No differences"));

    let mut b = sample();
    b.cells[0].auroc = Some(0.905 + 1e-7); // within tolerance
    assert!(diff(&a, &b, 1e-6, &[]).unwrap().within_tolerance());
    b.cells[0].auroc = Some(0.91);
    b.cells[0].fpr95 = Some(0.2); // worse (was 0.095)
    b.cells.pop(); // only in a
    b.device = bench::report::results::DeviceKind::Gpu;
    let d = diff(&a, &b, 1e-6, &[]).unwrap();
    assert!(!d.within_tolerance());
    assert_eq!(d.only_in_a, vec!["a/max_logit/val".to_string()]);
    let au = d.changed.iter().find(|c| c.metric == "auroc").unwrap();
    assert_eq!(au.verdict, "better");
    let fp = d.changed.iter().find(|c| c.metric == "fpr95").unwrap();
    assert_eq!(fp.verdict, "worse");
    assert!(d.notes.iter().any(|c| c.contains("device")), "device is a note, not a failure");
    let mut g = sample();
    g.device = bench::report::results::DeviceKind::Gpu;
    assert!(diff(&a, &g, 1e-6, &[]).unwrap().within_tolerance());
    let text = render(&d);
    assert!(text.contains("▲ better") && text.contains("▼ worse") && text.contains("only in a: a/max_logit/val"), "{text}");
    // restricting metrics
    let d = diff(&a, &b, 1e-6, &["aupr".into()]).unwrap();
    assert!(d.changed.is_empty());
    assert!(diff(&a, &b, 1e-6, &["nope".into()]).is_err());
}

#[test]
fn atomic_write_replaces_or_leaves_untouched() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("results").join("x");
    write_dir_atomic(&dir, &[("a.txt".into(), b"one".to_vec())]).unwrap();
    write_dir_atomic(&dir, &[("b.txt".into(), b"two".to_vec())]).unwrap();
    assert!(!dir.join("a.txt").exists(), "old folder replaced, not merged");
    assert_eq!(std::fs::read(dir.join("b.txt")).unwrap(), b"two");
    // an output path that is a file is an error and stays a file
    let f = t.path().join("file");
    std::fs::write(&f, b"keep").unwrap();
    assert!(write_dir_atomic(&f, &[("c.txt".into(), vec![])]).is_err());
    assert_eq!(std::fs::read(&f).unwrap(), b"keep");
    // no temp folders left behind
    let left: Vec<_> = std::fs::read_dir(t.path().join("results")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

/// Exact counts of one method: `pos` anomaly scores, `neg` normal scores.
fn counts(pos: &[f32], neg: &[f32]) -> bench::metrics::Counts {
    use bench::metrics::PositiveCollector;
    let scores: Vec<f32> = pos.iter().chain(neg).copied().collect();
    let labels: Vec<u8> = pos.iter().map(|_| 1u8).chain(neg.iter().map(|_| 0u8)).collect();
    let mut pc = PositiveCollector::new();
    pc.add(&scores, &labels, None);
    let mut r = pc.finish();
    r.add(&scores, &labels);
    r.finish().unwrap()
}

/// Item 12: a low-AUPR curve gets a y-axis scaled to its precision (not
/// [0, 1]); distributions are plotted in score units; every plot also
/// comes as a PNG that is byte-identical across renders.
#[test]
fn plots_scale_to_the_data_and_come_as_deterministic_pngs() {
    use bench::report::curves::{Curve, Kept, dist_x_range, files, pr_png, pr_y_range};
    // 20 anomaly pixels among 2000 normal ones, scores overlapping: precision ≈ 0.015
    let pos: Vec<f32> = (0..20).map(|i| -4.0 + 0.1 * i as f32).collect();
    let neg: Vec<f32> = (0..2000).map(|i| -5.0 + 0.0015 * i as f32).collect();
    let k = counts(&pos, &neg);
    let c = Curve { model: "a", method: "max_logit", method_name: "Simple Max Logits", counts: &k, keep: vec![] };
    let (lo, hi) = pr_y_range(&[&c]);
    assert_eq!(lo, 0.0);
    let max_p = (0..k.thresholds.len()).map(|i| k.tp[i] as f64 / (k.tp[i] + k.fp[i]) as f64).fold(0.0, f64::max);
    assert!(hi < 0.1, "PR y-axis should follow the data (max precision {max_p}), got [0, {hi}]");
    assert!(hi >= max_p, "the whole curve is inside: {hi} < {max_p}");
    let (x0, x1) = dist_x_range(&c);
    assert!((x0 - (-4.0)).abs() < 1e-5 && (x1 - (-2.1)).abs() < 1e-5, "distribution x-axis in score units: {x0} … {x1}");

    let png = pr_png("A", &[&c]);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(png, pr_png("A", &[&c]), "PNG bytes differ between renders");
    let dec = png::Decoder::new(std::io::Cursor::new(&png)).read_info().unwrap();
    assert!(dec.info().width >= 600, "readable size");

    let r = sample();
    let packed = bench::metrics::PackedCounts::pack(&k);
    let cs = vec![Kept { model: "a", method: "max_logit", method_name: "Simple Max Logits", counts: &packed, keep: &[] }];
    let (f1, f2) = (files(&r, &cs), files(&r, &cs));
    assert_eq!(f1, f2, "report files differ between renders");
    let names: Vec<&str> = f1.iter().map(|f| f.0.as_str()).collect();
    for svg in names.iter().filter(|n| n.ends_with(".svg")) {
        let png = svg.replace(".svg", ".png");
        assert!(names.contains(&png.as_str()), "{png} missing ({names:?})");
    }
    assert!(names.contains(&"plots/a__max_logit_dist.png") && names.contains(&"plots/a_pr.png"), "{names:?}");
}

/// Item 13: the best value of each row is bold in Markdown, LaTeX and HTML
/// (lowest FPR95, highest AUROC/AUPR/F1, ties all bold), never in CSV, and
/// `--no-bold` turns it off.
#[test]
fn best_values_are_bold() {
    let mut r = sample();
    let md = tables::render(&r, &Markdown);
    // Model A: max_logit 9.50 / 90.50 / 9.05 / 18.10 beats sml 20.00 / 80.00 / 8.00 / 16.00 on all four
    assert!(md.contains("| **9.50** / **90.50** / **9.05** / **18.10** "), "{md}");
    assert!(md.contains("| 20.00 / 80.00 / 8.00 / 16.00 †"), "{md}");
    assert!(md.contains("Bold: for each model and metric, the best method"), "bold is explained");
    assert!(!tables::render_with(&r, &Markdown, false).contains("**9.50**"), "--no-bold");
    assert!(!tables::render(&r, &Csv).contains('*') && !tables::render(&r, &Csv).contains('\u{1}'));
    let tex = tables::render(&r, &Latex);
    assert!(tex.contains("\\textbf{9.50}") && tex.contains("\\textbf{90.50}"), "{tex}");
    // ties: equal printed values are all bold
    let a2 = r.cells.iter().position(|c| c.model == "a" && c.method == "sml" && c.split == "test").unwrap();
    let a1 = r.cells.iter().position(|c| c.model == "a" && c.method == "max_logit" && c.split == "test").unwrap();
    r.cells[a2].auroc = r.cells[a1].auroc;
    let md = tables::render(&r, &Markdown);
    assert_eq!(md.matches("**90.50**").count(), 2, "{md}");
    let html = bench::report::curves::files(&r, &[]).into_iter().find(|f| f.0 == "index.html").unwrap().1;
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("<b>9.50</b>"), "{html}");
    // conventions and warnings come before the first table
    let first_table = html.find("<table>").unwrap();
    assert!(html.find("Conventions").unwrap() < first_table && html.find("a warning").unwrap() < first_table);
    assert!(html.contains("white-space:nowrap"), "cells do not wrap");
}

/// Item 14: LaTeX is booktabs, one row per (model, method) and one column
/// per metric (a page wide), with a caption that keeps the format legend;
/// `bench diff` says its unit.
#[test]
fn latex_tables_fit_a_page_and_keep_their_legend() {
    let r = sample();
    let tex = tables::render(&r, &Latex);
    let main = &tex[..tex.find("\\end{table}").unwrap()];
    assert!(main.contains("\\toprule") && main.contains("\\midrule") && main.contains("\\bottomrule"));
    assert!(main.contains("\\caption{Main Results. Format: FPR95 / AUROC / AUPR / F1 (all in \\%)"), "{main}");
    assert!(main.contains("\\begin{tabular}{llrrrr}"), "Model, Method, four metrics: {main}");
    assert!(main.contains("FPR95 $\\downarrow$ & AUROC $\\uparrow$ & AUPR $\\uparrow$ & F1 $\\uparrow$ \\\\"), "{main}");
    assert!(main.contains("Model A & Simple Max Logits & \\textbf{9.50} & \\textbf{90.50} & \\textbf{9.05} & \\textbf{18.10} \\\\"), "{main}");
    assert!(main.contains(" & Standardized Max Logits & 20.00 & 80.00 & 8.00 & 16.00 \\textsuperscript{\\dag} \\\\"), "{main}");
    // every table has a caption and a label
    assert_eq!(tex.matches("\\begin{table}").count(), tex.matches("\\caption{").count());
    assert_eq!(tex.matches("\\begin{table}").count(), tex.matches("\\label{tab:").count());

    let a = sample();
    let mut b = sample();
    b.cells[0].auroc = Some(0.91);
    let text = render(&diff(&a, &b, 1e-6, &[]).unwrap());
    assert!(text.contains("90.5000 % (0.905000)") && text.contains("91.0000 % (0.910000)") && text.contains("+0.5000 pp"), "{text}");
}
