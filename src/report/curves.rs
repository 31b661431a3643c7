//! ROC / PR curves as CSV and SVG plots, and the static HTML report.
//!
//! Why: a reviewer wants to *see* where two methods differ (low-FPR region,
//! precision at high recall) without rerunning anything. Curves come from
//! the same exact statistic as the tables; CSVs are downsampled to at most
//! [`MAX_POINTS`] rows but always keep both end points and every operating
//! point of the honest evaluation. Plots are drawn with `plotters` (SVG
//! backend only: no system fonts needed, byte-deterministic output).

use super::markup::{Dialect, Html};
use super::results::Results;
use super::tables;
use crate::metrics::Counts;
use plotters::prelude::*;

pub const MAX_POINTS: usize = 2000;

/// The curve data of one (model, method) on the test split.
pub struct Curve<'a> {
    pub model: &'a str,
    pub method: &'a str,
    pub method_name: &'a str,
    pub counts: &'a Counts,
    /// Thresholds to keep exactly (operating points).
    pub keep: Vec<f64>,
}

/// Row indices to keep: evenly spaced, plus both ends and `keep`.
fn sample(n: usize, must: &[usize]) -> Vec<usize> {
    if n == 0 {
        return vec![];
    }
    let step = n.div_ceil(MAX_POINTS).max(1);
    let mut v: Vec<usize> = (0..n).step_by(step).collect();
    v.push(n - 1);
    v.extend(must.iter().copied().filter(|&i| i < n));
    v.sort_unstable();
    v.dedup();
    v
}

/// `threshold,tp,fp,tpr,fpr,precision,recall` at distinct positive scores,
/// descending (rates as in the tables; see metrics::Counts).
pub fn curve_csv(c: &Curve) -> String {
    let k = c.counts;
    let must: Vec<usize> = c.keep.iter().filter_map(|&t| k.thresholds.iter().position(|&x| x as f64 == t)).collect();
    let mut s = String::from("threshold,tp,fp,tpr,fpr,precision,recall\n");
    if !k.defined() {
        return s;
    }
    let (p, n) = (k.positives as f64, k.negatives as f64);
    for i in sample(k.thresholds.len(), &must) {
        let tpr = k.tp[i] as f64 / p;
        s += &format!(
            "{},{},{},{},{},{},{}\n",
            k.thresholds[i],
            k.tp[i],
            k.fp[i],
            tpr,
            k.fp[i] as f64 / n,
            k.tp[i] as f64 / (k.tp[i] + k.fp[i]) as f64,
            tpr
        );
    }
    s
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn plot(title: &str, xd: &str, yd: &str, series: Vec<(String, Vec<(f64, f64)>)>) -> String {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (560, 440)).into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut ch = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(44)
                .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
            ch.configure_mesh().x_desc(xd).y_desc(yd).draw()?;
            for (i, (name, pts)) in series.into_iter().enumerate() {
                let col = COLORS[i % COLORS.len()];
                ch.draw_series(LineSeries::new(pts, col.stroke_width(2)))?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
            }
            ch.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
            root.present()?;
            Ok(())
        };
        // drawing into a String cannot fail for I/O reasons; an error here
        // would be a plotters bug — leave an empty plot rather than abort.
        let _ = draw();
    }
    s
}

/// ROC (FPR, TPR) of every method of one model.
pub fn roc_svg(model_name: &str, curves: &[&Curve]) -> String {
    let series = curves
        .iter()
        .filter(|c| c.counts.defined())
        .map(|c| {
            let k = c.counts;
            let pts = k.roc_points();
            let idx = sample(pts.len(), &[]);
            let (p, n) = (k.positives as f64, k.negatives as f64);
            (c.method_name.to_string(), idx.into_iter().map(|i| (pts[i].0 as f64 / n, pts[i].1 as f64 / p)).collect())
        })
        .collect();
    plot(&format!("ROC — {model_name}"), "FPR", "TPR", series)
}

/// Precision–recall of every method of one model.
pub fn pr_svg(model_name: &str, curves: &[&Curve]) -> String {
    let series = curves
        .iter()
        .filter(|c| c.counts.defined())
        .map(|c| {
            let k = c.counts;
            let p = k.positives as f64;
            let idx = sample(k.thresholds.len(), &[]);
            (
                c.method_name.to_string(),
                idx.into_iter().map(|i| (k.tp[i] as f64 / p, k.tp[i] as f64 / (k.tp[i] + k.fp[i]) as f64)).collect(),
            )
        })
        .collect();
    plot(&format!("Precision–recall — {model_name}"), "Recall", "Precision", series)
}

/// Cumulative score distributions of normal and anomaly pixels (the share
/// of each class scoring at or above a threshold), over the positives'
/// score range — exact at every plotted point.
pub fn dist_svg(model_name: &str, c: &Curve) -> String {
    let k = c.counts;
    if !k.defined() {
        return plot(&format!("{} — {model_name}", c.method_name), "score (normalised)", "share ≥ threshold", vec![]);
    }
    let (lo, hi) = (*k.thresholds.last().unwrap() as f64, k.thresholds[0] as f64);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let idx = sample(k.thresholds.len(), &[]);
    let (p, n) = (k.positives as f64, k.negatives as f64);
    let x = |i: usize| (k.thresholds[i] as f64 - lo) / span;
    plot(
        &format!("{} — {model_name} (score {lo:.3} … {hi:.3})", c.method_name),
        "score, rescaled to the anomalies' range",
        "share of pixels with score ≥ x",
        vec![
            ("anomaly".into(), idx.iter().map(|&i| (x(i), k.tp[i] as f64 / p)).collect()),
            ("normal".into(), idx.iter().map(|&i| (x(i), k.fp[i] as f64 / n)).collect()),
        ],
    )
}

fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// All curve files (`curves/*.csv`, `plots/*.svg`) and `index.html`.
pub fn files(r: &Results, curves: &[Curve]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut html_imgs = String::new();
    for m in &r.models {
        let mine: Vec<&Curve> = curves.iter().filter(|c| c.model == m.id).collect();
        for c in &mine {
            out.push((format!("curves/{}__{}.csv", slug(c.model), slug(c.method)), curve_csv(c).into_bytes()));
            out.push((format!("plots/{}__{}_dist.svg", slug(c.model), slug(c.method)), dist_svg(&m.name, c).into_bytes()));
        }
        let roc = format!("plots/{}_roc.svg", slug(&m.id));
        let pr = format!("plots/{}_pr.svg", slug(&m.id));
        out.push((roc.clone(), roc_svg(&m.name, &mine).into_bytes()));
        out.push((pr.clone(), pr_svg(&m.name, &mine).into_bytes()));
        html_imgs += &format!(
            "<h3>{}</h3>\n<p><img src=\"{roc}\" alt=\"ROC\"> <img src=\"{pr}\" alt=\"PR\"></p>\n<p>{}</p>\n",
            html_escape(&m.name),
            mine.iter()
                .map(|c| format!("<img src=\"plots/{}__{}_dist.svg\" alt=\"{}\" width=\"280\">", slug(c.model), slug(c.method), html_escape(c.method_name)))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px}}td.r{{text-align:right}}</style></head><body>\n",
        html_escape(&r.name)
    );
    html += &tables::render(r, &Html);
    html += "<h2>Curves (test split)</h2>\n";
    html += &html_imgs;
    html += "</body></html>\n";
    out.push(("index.html".into(), html.into_bytes()));
    out
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Markdown links to the plots, appended to tables.md so GitHub shows them.
pub fn markdown_plots(r: &Results) -> String {
    let mut s = String::from("## Curves (test split)\n\n");
    for m in &r.models {
        s += &format!("**{}**\n\n![ROC](plots/{id}_roc.svg) ![PR](plots/{id}_pr.svg)\n\n", m.name, id = slug(&m.id));
    }
    s
}

impl Dialect for Html {
    fn preamble(&self, title: &str) -> String {
        format!("<h1>{}</h1>\n", html_escape(title))
    }

    fn table(&self, t: &super::markup::Table) -> String {
        let mut s = format!("<h2>{}</h2>\n", html_escape(&t.title));
        for n in &t.notes {
            s += &format!("<p>{}</p>\n", html_escape(&n.replace("**", "")));
        }
        s += "<table>\n<tr>";
        for h in &t.header {
            s += &format!("<th>{}</th>", html_escape(h));
        }
        s += "</tr>\n";
        for r in &t.rows {
            s += "<tr>";
            for (c, a) in r.iter().zip(&t.align) {
                let cls = if *a == super::markup::Align::Right { " class=\"r\"" } else { "" };
                s += &format!("<td{cls}>{}</td>", html_escape(c));
            }
            s += "</tr>\n";
        }
        s += "</table>\n";
        s
    }
}
