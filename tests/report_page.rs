//! `report.md` / `report.html` (the honest evaluation page, `src/report/page.rs`):
//! written by every run, re-rendered byte for byte by `bench report` from
//! results.json alone, numbers as in results.json, HTML self-contained and
//! escaped, and nothing invented where results.json has nothing.

mod common;
use common::*;

use bench::report::Results;
use std::path::Path;

fn ok(o: std::process::Output) -> std::process::Output {
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// The small workspace with a `<&>` model name and extra `[metrics]` lines.
fn small(metrics: &str) -> Small {
    let s = Small::new();
    let cfg = SMALL_CONFIG.replace("name = \"D\"", "name = \"D <&> x\"");
    std::fs::write(s.p("c.toml"), format!("{cfg}\n[metrics]\n{metrics}\n")).unwrap();
    ok(s.run(&[]));
    s
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Cells of the Markdown table rows whose first two cells are `model`, `method`.
fn md_row(md: &str, header_start: &str, model: &str, method: &str) -> Vec<String> {
    let at = md.find(header_start).unwrap_or_else(|| panic!("no table starting {header_start:?}"));
    md[at..]
        .lines()
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect::<Vec<_>>())
        .find(|c| c[0] == model && c[1] == method)
        .unwrap_or_else(|| panic!("no row {model}/{method} under {header_start:?}"))
}

fn close(cell: &str, v: Option<f64>) {
    if v.is_none() {
        assert_eq!(cell.trim_end_matches(" †"), "n/a");
        return;
    }
    let x: f64 = cell.trim_end_matches(" †").parse().unwrap_or_else(|_| panic!("not a number: {cell:?}"));
    let v = 100.0 * v.expect("defined in results.json");
    assert!((x - v).abs() <= 0.005 + 1e-9, "{cell} vs {v}");
}

#[test]
fn report_is_rerendered_from_results_json_alone() {
    let s = small("bootstrap = 20\nregions = true");
    let dir = s.p("results/small");
    let (md, html) = (std::fs::read(dir.join("report.md")).unwrap(), std::fs::read(dir.join("report.html")).unwrap());
    // results.json alone, in an empty folder
    let lone = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("results.json"), lone.path().join("results.json")).unwrap();
    ok(bench(&["report", lone.path().to_str().unwrap()], &s.root));
    assert_eq!(std::fs::read(lone.path().join("report.md")).unwrap(), md, "report.md differs from the re-render");
    assert_eq!(std::fs::read(lone.path().join("report.html")).unwrap(), html, "report.html differs from the re-render");
    // --check: 0 as written, 1 after an edit
    ok(bench(&["report", "--check", "results/small"], &s.root));
    std::fs::write(dir.join("report.md"), b"edited\n").unwrap();
    let o = bench(&["report", "--check", "results/small"], &s.root);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("report.md differs"), "{}", stdout(&o));
}

#[test]
fn numbers_match_results_json_and_html_is_self_contained() {
    let s = small("bootstrap = 20\nregions = true");
    let dir = s.p("results/small");
    let r = Results::load(&dir).unwrap();
    let md = read(&dir.join("report.md"));
    let html = read(&dir.join("report.html"));
    // the seed's order
    let order = ["## 1. Detection", "## 2. FRR at the customer", "## 3. Failure modes", "## 4. Drift sensitivity"];
    let pos: Vec<usize> = order.iter().map(|h| md.find(h).unwrap_or_else(|| panic!("no {h:?}"))).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    let model = r"D \<\&\> x";
    for me in &r.methods {
        let c = r.cell("deeplab_r50", &me.id, "test").unwrap();
        let row = md_row(&md, "| Model", model, &me.name);
        close(&row[2], c.image_auroc);
        close(&row[4], c.auroc);
        close(&row[6], c.aupro);
        match c.bootstrap.as_ref().and_then(|b| b.auroc) {
            Some([lo, hi]) => assert_eq!(row[5], format!("\\[{:.2}, {:.2}]", 100.0 * lo, 100.0 * hi)),
            None => assert!(row[5].starts_with("no CI"), "{row:?}"),
        }
        match c.bootstrap.as_ref().and_then(|b| b.image_auroc) {
            Some([lo, hi]) => assert_eq!(row[3], format!("\\[{:.2}, {:.2}]", 100.0 * lo, 100.0 * hi)),
            None => assert!(row[3].starts_with("no CI"), "{row:?}"),
        }
        // AUPRO's interval (histogram bootstrap with region weights), as results.json has it
        let [lo, hi] = c.bootstrap.as_ref().and_then(|b| b.aupro).expect("bootstrap = 20, regions = true: an AUPRO interval");
        assert_eq!(row[7], format!("\\[{:.2}, {:.2}]", 100.0 * lo, 100.0 * hi), "{row:?}");
        // pixel FRR @ FAR ≤ 0.1 % (the default first FAR budget), achieved FAR
        let h = r.honest_cell("deeplab_r50", &me.id).unwrap();
        let p = h.point(bench::metrics::operating::Level::Pixel, bench::metrics::PointRule::FrrAtFar, Some(0.001)).unwrap();
        let at = md.find("### Pixel level").unwrap();
        let row = md_row(&md[at..], "| Model", model, &me.name);
        if p.threshold.is_some() {
            // the figure of merit, then its bootstrap interval at the same threshold
            let cell = row[2].trim_end_matches(" †");
            let (v, ci) = cell.split_once(' ').unwrap_or((cell, ""));
            close(v, p.frr);
            let [lo, hi] = p.frr_ci.expect("bootstrap = 20: an interval at the val threshold");
            assert_eq!(ci, format!("\\[{:.2}, {:.2}]", 100.0 * lo, 100.0 * hi), "{row:?}");
            let far: f64 = row[3].parse().unwrap();
            assert!((far - 100.0 * p.far.unwrap()).abs() <= 0.0005 + 1e-9, "{row:?}");
        } else {
            assert_eq!(row[2], "n/a");
        }
    }
    assert!(md.contains("Thresholds are chosen on `val` and applied unchanged to `test`"));
    // failure modes: one anomaly type, a row per method with results.json's figures
    let at = md.find("## 3. Failure modes").unwrap();
    for f in &r.failure_modes {
        let me = r.methods.iter().find(|m| m.id == f.method).unwrap();
        let row = md_row(&md[at..], "| Model", model, &me.name);
        assert_eq!(row[3], f.positives.to_string());
        close(&row[7], f.recall_at_soft_threshold);
        close(&row[8], f.recall_at_val_threshold);
        assert_eq!(row[9], f.images.to_string());
        assert_eq!(row[10], format!("{} ({:.2})", f.images_missed.unwrap(), 100.0 * f.image_miss_share.unwrap()));
    }
    assert!(!md.contains("failure-mode breakdown: not computed"), "one anomaly type has its row");
    assert!(md.contains("No simulated-drift split in this dataset"), "the small dataset has no test@<name> split");
    // HTML: one file, no script, no URL, the name escaped; its only links
    // are the failure panels, relative, each a file of the folder
    assert!(!html.to_lowercase().contains("<script"), "a script in report.html");
    assert!(!html.contains("http"), "a URL in report.html");
    assert!(!html.contains(" href="), "report.html links something");
    let srcs: Vec<&str> = html.split(" src=\"").skip(1).map(|x| &x[..x.find('"').unwrap()]).collect();
    assert!(!srcs.is_empty(), "no failure panel embedded");
    for src in &srcs {
        assert!(src.starts_with("failures/") && dir.join(src).is_file(), "{src}");
        assert!(md.contains(&format!("]({src})")), "{src} not in report.md");
    }
    assert!(html.contains("D &lt;&amp;&gt; x"), "model name not escaped");
    assert!(!html.contains("D <&> x"));
    assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>\n"));
}

#[test]
fn without_bootstrap_the_page_says_no_ci() {
    let s = small("");
    let md = read(&s.p("results/small/report.md"));
    let html = read(&s.p("results/small/report.html"));
    assert!(md.contains("no CI: bootstrap off"), "{md}");
    assert!(html.contains("no CI: bootstrap off"));
    assert!(!md.contains("percentile-bootstrap interval over"), "an interval claimed without a bootstrap");
    assert!(md.contains("PRO / AUPRO: not computed"), "regions off");
}

/// A results.json from before AUPRO intervals (no `aupro` keys in the
/// bootstrap): the page says so instead of showing or inventing one.
#[test]
fn an_older_results_json_without_aupro_intervals_says_so() {
    let s = small("bootstrap = 20\nregions = true");
    let dir = s.p("results/small");
    let mut v: serde_json::Value = serde_json::from_str(&read(&dir.join("results.json"))).unwrap();
    for c in v["cells"].as_array_mut().unwrap() {
        if let Some(b) = c["bootstrap"].as_object_mut() {
            b.remove("aupro");
            b["error_bound"].as_object_mut().unwrap().remove("aupro");
        }
    }
    let lone = tempfile::tempdir().unwrap();
    std::fs::write(lone.path().join("results.json"), serde_json::to_string_pretty(&v).unwrap()).unwrap();
    ok(bench(&["report", lone.path().to_str().unwrap()], &s.root));
    let md = read(&lone.path().join("report.md"));
    let r = Results::load(lone.path()).unwrap();
    let me = &r.methods[0];
    let row = md_row(&md, "| Model", r"D \<\&\> x", &me.name);
    assert_eq!(row[7], "no CI (results.json predates AUPRO intervals)", "{row:?}");
    assert!(row[5].starts_with("\\["), "the pixel AUROC interval is still shown: {row:?}");
}

#[test]
fn incompatible_budgets_and_leakage_are_said() {
    let s = small("");
    let dir = s.p("results/small");
    let mut v: serde_json::Value = serde_json::from_str(&read(&dir.join("results.json"))).unwrap();
    for h in v["honest"].as_array_mut().unwrap() {
        h["leakage"] = true.into();
        for b in h["bands"].as_array_mut().unwrap() {
            for k in ["auto_rejected", "review", "auto_accepted", "defects_auto_accepted", "good_auto_rejected"] {
                b[k] = serde_json::Value::Null;
            }
            b["reason"] = "incompatible budgets: soft 2 > hard 1".into();
        }
    }
    let lone = tempfile::tempdir().unwrap();
    std::fs::write(lone.path().join("results.json"), serde_json::to_string_pretty(&v).unwrap()).unwrap();
    ok(bench(&["report", lone.path().to_str().unwrap()], &s.root));
    let md = read(&lone.path().join("report.md"));
    assert!(md.contains(r"incompatible budgets: soft 2 \> hard 1"), "{md}");
    assert!(md.contains("| incompatible budgets |"), "{md}");
    assert!(md.contains("**† leakage**"), "{md}");
}

#[test]
fn datasets_sweep_has_a_report_per_dataset() {
    let s = Small::new();
    ok(bench(&["synth", "--out", "ds2", "--images", "3", "--height", "32", "--width", "48", "--anomaly-types", "2"], &s.root));
    let cfg = SMALL_CONFIG.replace("dataset = \"ds\"\n", "");
    std::fs::write(
        s.p("c.toml"),
        format!("{cfg}\n[[datasets]]\nname = \"alpha\"\npath = \"ds\"\n\n[[datasets]]\nname = \"beta\"\npath = \"ds2\"\nanomaly = [1, 2]\n"),
    )
    .unwrap();
    ok(s.run(&[]));
    for d in ["alpha", "beta"] {
        assert!(s.p(&format!("results/small/{d}/report.md")).is_file());
        assert!(s.p(&format!("results/small/{d}/report.html")).is_file());
    }
    let beta = read(&s.p("results/small/beta/report.md"));
    let r = Results::load(&s.p("results/small/beta")).unwrap();
    assert!(!r.failure_modes.is_empty());
    let f = r.failure_modes.iter().find(|f| f.anomaly_value == 2).unwrap();
    let me = r.methods.iter().find(|m| m.id == f.method).unwrap();
    let at = beta.find("## 3. Failure modes").unwrap();
    let row = beta[at..]
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect::<Vec<_>>())
        .find(|c| c.len() > 3 && c[1] == me.name && c[2] == "label 2")
        .expect("a label-2 row");
    assert_eq!(row[3], f.positives.to_string());
    close(&row[4], f.auroc);
    assert!(!beta.contains("failure-mode breakdown: not computed"));
    ok(bench(&["report", "--check", "results/small"], &s.root));
}

#[test]
fn run_check_compares_the_report_page_too() {
    let s = small("");
    ok(s.run(&["--check"]));
    let p = s.p("results/small/report.md");
    let mut md = read(&p);
    md.push_str("edited\n");
    std::fs::write(&p, md).unwrap();
    let o = s.run(&["--check"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("report.md differs"), "{}", stdout(&o));
}
