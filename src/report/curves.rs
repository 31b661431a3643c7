//! ROC / PR curves as CSV and SVG plots, and the static HTML report.
//!
//! Why: a reviewer wants to *see* where two methods differ (low-FPR region,
//! precision at high recall) without rerunning anything. Curves come from
//! the same exact statistic as the tables; CSVs are downsampled to at most
//! [`MAX_POINTS`] rows but always keep both end points and every operating
//! point of the honest evaluation. Plots are drawn with `plotters`, each as
//! SVG (for the page) and PNG (papers, slides), with an embedded font: no
//! system fonts needed, byte-deterministic output.

use super::markup::{Dialect, Html};
use super::results::Results;
use super::tables;
use crate::metrics::{Counts, PackedCounts};
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

/// A curve as the run keeps it until the files are written: the packed
/// statistic ([`PackedCounts`]), unpacked one model at a time by [`files`].
pub struct Kept<'a> {
    pub model: &'a str,
    pub method: &'a str,
    pub method_name: &'a str,
    pub counts: &'a PackedCounts,
    /// Thresholds to keep exactly (operating points).
    pub keep: &'a [f64],
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
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut rows: Vec<[String; 7]> = vec![["threshold", "tp", "fp", "tpr", "fpr", "precision", "recall"].map(String::from)];
    if k.defined() {
        let (p, n) = (k.positives as f64, k.negatives as f64);
        for i in sample(k.thresholds.len(), &must) {
            let tpr = k.tp[i] as f64 / p;
            let prec = k.tp[i] as f64 / (k.tp[i] + k.fp[i]) as f64;
            rows.push([
                k.thresholds[i].to_string(),
                k.tp[i].to_string(),
                k.fp[i].to_string(),
                tpr.to_string(),
                (k.fp[i] as f64 / n).to_string(),
                prec.to_string(),
                tpr.to_string(),
            ]);
        }
    }
    for r in &rows {
        w.write_record(r).expect("writing to memory");
    }
    String::from_utf8(w.into_inner().expect("writing to memory")).expect("UTF-8 in, UTF-8 out")
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

/// The font every plot uses (SVG layout and PNG glyphs), embedded so that
/// PNGs need no system fonts and are byte-identical on every machine.
/// DejaVu Sans, Bitstream Vera licence: assets/fonts/LICENSE-DejaVu.txt.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // the embedded font is a valid TrueType file; if plotters ever
        // rejected it, text would be missing, not the plot
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// One plot, independent of the backend (SVG or PNG).
struct Plot {
    title: String,
    x_desc: String,
    y_desc: String,
    x: (f64, f64),
    y: (f64, f64),
    series: Vec<(String, Vec<(f64, f64)>)>,
    /// Points above `y.1` exist (clipped; said under the legend).
    clipped: Option<String>,
    /// Pixel size (SVG view box, PNG).
    size: (u32, u32),
}

/// Pixel size of every plot: the plotting area on the left, the legend in
/// its own column on the right (never over a curve).
const SIZE: (u32, u32) = (800, 480);
/// The score-distribution plots (two curves, a short legend).
const DIST_SIZE: (u32, u32) = (640, 420);

/// Pieces of a polyline inside `y ≤ ymax` (segments crossing the top edge
/// end on it).
fn clip_top(pts: &[(f64, f64)], ymax: f64) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![];
    let mut cur: Vec<(f64, f64)> = vec![];
    let cross = |a: (f64, f64), b: (f64, f64)| {
        let t = (ymax - a.1) / (b.1 - a.1);
        (a.0 + t * (b.0 - a.0), ymax)
    };
    for (i, &p) in pts.iter().enumerate() {
        let inside = p.1 <= ymax;
        if i > 0 {
            let q = pts[i - 1];
            let was = q.1 <= ymax;
            if was && !inside {
                cur.push(cross(q, p));
                out.push(std::mem::take(&mut cur));
            } else if !was && inside {
                cur.push(cross(q, p));
            }
        }
        if inside {
            cur.push(p);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.retain(|v| !v.is_empty());
    out
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, p: &Plot) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let font = (FAMILY, 15).into_font();
    let widest = p.series.iter().map(|s| root.estimate_text_size(&s.0, &TextStyle::from(font.clone())).map_or(120, |w| w.0)).max().unwrap_or(0);
    let legend_w = (widest + 60).clamp(120, p.size.0 / 2);
    let (plot_area, legend) = root.split_horizontally(p.size.0 - legend_w);
    let mut ch = ChartBuilder::on(&plot_area)
        .caption(&p.title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(p.x.0..p.x.1, p.y.0..p.y.1)?;
    ch.configure_mesh()
        .x_desc(p.x_desc.as_str())
        .y_desc(p.y_desc.as_str())
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    for (i, (_, pts)) in p.series.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        for piece in clip_top(pts, p.y.1) {
            ch.draw_series(LineSeries::new(piece, col.stroke_width(2)))?;
        }
    }
    let mut y = 48;
    for (i, (name, _)) in p.series.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        legend.draw(&PathElement::new(vec![(8, y), (34, y)], col.stroke_width(3)))?;
        legend.draw(&Text::new(name.clone(), (42, y - 8), font.clone()))?;
        y += 24;
    }
    if let Some(note) = &p.clipped {
        let small = (FAMILY, 12).into_font().color(&RGBColor(90, 90, 90));
        for line in note.lines() {
            y += 4;
            legend.draw(&Text::new(line.to_string(), (8, y), small.clone()))?;
            y += 14;
        }
    }
    root.present()?;
    Ok(())
}

fn svg(p: &Plot) -> String {
    register_font();
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, p.size).into_drawing_area();
        // drawing into a String cannot fail for I/O reasons; an error here
        // would be a plotters bug — leave an empty plot rather than abort.
        let _ = draw(root, p);
    }
    s
}

/// A line plot of named series as SVG, in the style of every other plot
/// (`bench drift --plot`: statistics over runs). Deterministic bytes.
pub fn line_svg(title: &str, axes: (&str, &str), x: (f64, f64), y: (f64, f64), series: Vec<(String, Vec<(f64, f64)>)>) -> String {
    svg(&Plot { title: title.into(), x_desc: axes.0.into(), y_desc: axes.1.into(), x, y, series, clipped: None, size: SIZE })
}

/// The same plot as an 8-bit RGB PNG (fixed encoder settings: the bytes
/// depend only on the plot).
fn png(p: &Plot) -> Vec<u8> {
    register_font();
    let (w, h) = p.size;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, p.size).into_drawing_area();
        let _ = draw(root, p);
    }
    super::panel::rgb_png(w, h, &buf)
}

/// A round upper bound a little above `v` (axis end), at most 1.
fn nice_ceil(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let step = 10f64.powf((v.log10()).floor()) / 2.0;
    ((v / step).floor() + 1.0).min(1.0 / step) * step
}

/// ROC (FPR, TPR) of every method of one model.
fn roc_plot(model_name: &str, curves: &[&Curve]) -> Plot {
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
    Plot {
        title: format!("ROC — {model_name}"),
        x_desc: "false positive rate (FPR)".into(),
        y_desc: "true positive rate (TPR)".into(),
        x: (0.0, 1.0),
        y: (0.0, 1.0),
        series,
        clipped: None,
        size: SIZE,
    }
}

/// Recall below which precision rests on a handful of pixels and may run
/// off the top of the PR plot (the y-axis follows the rest of the curve).
pub const PR_HEAD_RECALL: f64 = 0.01;

/// Precision–recall of every method of one model; the y-axis ends just
/// above the highest precision at recall ≥ [`PR_HEAD_RECALL`].
fn pr_plot(model_name: &str, curves: &[&Curve]) -> Plot {
    let series: Vec<(String, Vec<(f64, f64)>)> = curves
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
    let pts = || series.iter().flat_map(|s| s.1.iter());
    let body = pts().filter(|q| q.0 >= PR_HEAD_RECALL).map(|q| q.1).fold(0.0, f64::max);
    let top = nice_ceil(if body > 0.0 { body } else { pts().map(|q| q.1).fold(0.0, f64::max) });
    let clipped = pts().any(|q| q.1 > top).then(|| format!("precision at recall < {} %\nruns above {top}", 100.0 * PR_HEAD_RECALL));
    Plot {
        title: format!("Precision–recall — {model_name}"),
        x_desc: "recall".into(),
        y_desc: "precision".into(),
        x: (0.0, 1.0),
        y: (0.0, top),
        series,
        clipped,
        size: SIZE,
    }
}

/// The y-axis range of the precision–recall plot of these curves.
pub fn pr_y_range(curves: &[&Curve]) -> (f64, f64) {
    pr_plot("", curves).y
}

/// The x-axis range of a score-distribution plot (score units).
pub fn dist_x_range(c: &Curve) -> (f64, f64) {
    dist_plot("", c).x
}

/// ROC plot as PNG.
pub fn roc_png(model_name: &str, curves: &[&Curve]) -> Vec<u8> {
    png(&roc_plot(model_name, curves))
}

/// Precision–recall plot as PNG.
pub fn pr_png(model_name: &str, curves: &[&Curve]) -> Vec<u8> {
    png(&pr_plot(model_name, curves))
}

/// Cumulative score distributions of normal and anomaly pixels (the share
/// of each class scoring at or above a threshold), in the method's own
/// score units over the anomalies' score range — exact at every plotted
/// point.
fn dist_plot(model_name: &str, c: &Curve) -> Plot {
    let k = c.counts;
    let mut p = Plot {
        title: format!("{} — {model_name}", c.method_name),
        x_desc: format!("{} score (threshold x)", c.method_name),
        y_desc: "share of pixels with score ≥ x".into(),
        x: (0.0, 1.0),
        y: (0.0, 1.0),
        series: vec![],
        clipped: None,
        size: DIST_SIZE,
    };
    if !k.defined() {
        return p;
    }
    let (lo, hi) = (*k.thresholds.last().unwrap() as f64, k.thresholds[0] as f64);
    p.x = if hi > lo { (lo, hi) } else { (lo - 0.5, lo + 0.5) };
    let idx = sample(k.thresholds.len(), &[]);
    let (np, nn) = (k.positives as f64, k.negatives as f64);
    let x = |i: usize| k.thresholds[i] as f64;
    p.series = vec![
        ("anomaly".into(), idx.iter().map(|&i| (x(i), k.tp[i] as f64 / np)).collect()),
        ("normal".into(), idx.iter().map(|&i| (x(i), k.fp[i] as f64 / nn)).collect()),
    ];
    p
}

/// ROC plot as SVG.
pub fn roc_svg(model_name: &str, curves: &[&Curve]) -> String {
    svg(&roc_plot(model_name, curves))
}

/// Precision–recall plot as SVG.
pub fn pr_svg(model_name: &str, curves: &[&Curve]) -> String {
    svg(&pr_plot(model_name, curves))
}

/// Score-distribution plot as SVG.
pub fn dist_svg(model_name: &str, c: &Curve) -> String {
    svg(&dist_plot(model_name, c))
}

fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// All curve files (`curves/*.csv`, `plots/*.svg` and `.png`) and `index.html`.
pub fn files(r: &Results, curves: &[Kept]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut sections = String::new();
    let main = tables::tables_marked(r).into_iter().next().map(|t| super::markup::long(&t));
    for (mi, m) in r.models.iter().enumerate() {
        // one model's statistics unpacked at a time
        let kept: Vec<&Kept> = curves.iter().filter(|c| c.model == m.id).collect();
        let counts: Vec<Counts> = kept.iter().map(|k| k.counts.unpack()).collect();
        let owned: Vec<Curve> = kept
            .iter()
            .zip(&counts)
            .map(|(k, counts)| Curve { model: k.model, method: k.method, method_name: k.method_name, counts, keep: k.keep.to_vec() })
            .collect();
        let mine: Vec<&Curve> = owned.iter().collect();
        let mut dists = String::new();
        for c in &mine {
            let stem = format!("plots/{}__{}_dist", slug(c.model), slug(c.method));
            out.push((format!("curves/{}__{}.csv", slug(c.model), slug(c.method)), curve_csv(c).into_bytes()));
            let p = dist_plot(&m.name, c);
            out.push((format!("{stem}.svg"), svg(&p).into_bytes()));
            out.push((format!("{stem}.png"), png(&p)));
            dists += &format!("<figure><img src=\"{stem}.svg\" alt=\"{} score distribution\"></figure>\n", html_escape(c.method_name));
        }
        let mut plots = String::new();
        for (kind, p) in [("roc", roc_plot(&m.name, &mine)), ("pr", pr_plot(&m.name, &mine))] {
            let stem = format!("plots/{}_{kind}", slug(&m.id));
            out.push((format!("{stem}.svg"), svg(&p).into_bytes()));
            out.push((format!("{stem}.png"), png(&p)));
            plots += &format!("<figure><img src=\"{stem}.svg\" alt=\"{}\"></figure>\n", if kind == "roc" { "ROC" } else { "precision–recall" });
        }
        // this model's rows of the main table, one row per method
        let summary = main.as_ref().map_or(String::new(), |t| {
            let per = r.methods.len().max(1);
            let mut t = t.clone();
            t.rows = t.rows.into_iter().skip(mi * per).take(per).map(|mut row| row.split_off(1)).collect();
            t.header.remove(0);
            t.align.remove(0);
            html_table(&t)
        });
        sections += &format!(
            "<section class=\"model\" id=\"model-{}\">\n<h3>{}</h3>\n<div class=\"summary\">{summary}<p class=\"note\">Test split, in %; bold = best method of this model.</p></div>\n<div class=\"plots\">\n{plots}</div>\n<div class=\"dists\">\n{dists}</div>\n</section>\n",
            slug(&m.id),
            html_escape(&m.name)
        );
    }
    let title = format!("{}: model × method comparison", r.name);
    let mut html = format!("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>\n{CSS}</style></head><body>\n", html_escape(&title));
    html += &format!("<header><h1>{}</h1>\n<p class=\"meta\">dataset <code>{}</code> · device <code>{}</code> · {} models × {} methods · tables on the <code>{}</code> split</p></header>\n", html_escape(&title), html_escape(&r.dataset), r.device, r.models.len(), r.methods.len(), tables::EVAL_SPLIT);
    if !r.warnings.is_empty() {
        html += "<section class=\"box warn\"><h2>Warnings</h2>\n<ul>\n";
        for w in &r.warnings {
            html += &format!("<li>{}</li>\n", html_escape(w));
        }
        html += "</ul></section>\n";
    }
    html += "<section class=\"box conv\"><h2>Conventions</h2>\n<dl>\n";
    if let Ok(serde_json::Value::Object(c)) = serde_json::to_value(&r.conventions) {
        for (k, v) in c {
            let v = match v {
                serde_json::Value::String(s) => s,
                v => v.to_string(),
            };
            html += &format!("<div><dt>{}</dt><dd>{}</dd></div>\n", html_escape(&k), html_escape(&v));
        }
    }
    html += "</dl></section>\n";
    let ts: Vec<super::markup::Table> = tables::tables_marked(r).into_iter().filter(|t| t.title != "Warnings").collect();
    html += "<nav><b>Contents</b>: ";
    html += &ts.iter().map(|t| format!("<a href=\"#{}\">{}</a>", anchor(&t.title), html_escape(&t.title))).chain(std::iter::once("<a href=\"#curves\">Curves</a>".to_string())).collect::<Vec<_>>().join(" · ");
    html += "</nav>\n<main>\n";
    for t in &ts {
        html += &Html.table(t);
    }
    html += "<h2 id=\"curves\">Curves (test split)</h2>\n<p class=\"note\">ROC and precision–recall of every method, then each method's score distributions (share of anomaly and normal pixels scoring at or above a threshold, in the method's own score units). Every plot also exists as PNG next to its SVG.</p>\n";
    html += &sections;
    html += "</main>\n</body></html>\n";
    out.push(("index.html".into(), html.into_bytes()));
    out
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#1d232a;max-width:1360px;margin:1.5em auto;padding:0 1.5em;line-height:1.45}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin:1.6em 0 .4em;border-bottom:1px solid #d8dde3;padding-bottom:.2em}h3{font-size:1.1em;margin:1.4em 0 .4em}
.meta{color:#56606b;margin:.2em 0 1em}code{font-size:.92em;background:#f1f3f5;padding:0 .25em;border-radius:3px}
.box{border:1px solid #d8dde3;border-radius:6px;padding:.4em 1em .6em;margin:.8em 0;background:#fafbfc}.box h2{border:0;margin:.3em 0;font-size:1.05em}
.warn{border-color:#e0b252;background:#fff8e6}.warn ul{margin:.2em 0;padding-left:1.2em}
dl{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:.1em 1.5em;margin:.3em 0}dl div{display:flex;gap:.5em}dt{font-weight:600;white-space:nowrap}dd{margin:0;color:#333}
nav{margin:1em 0;font-size:.95em}nav a{color:#0b5cad;text-decoration:none}
.note{color:#56606b;font-size:.9em;margin:.3em 0}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5em 0 1em;font-variant-numeric:tabular-nums;font-size:.92em}
th,td{border-bottom:1px solid #e3e7eb;padding:4px 10px;white-space:nowrap;text-align:left}th{background:#f1f3f5;font-weight:600}td.r,th.r{text-align:right}tr:nth-child(even) td{background:#fafbfc}
td b{color:#000}tr.grp td{border-top:2px solid #c9d0d7}
.summary table{margin-top:0}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:.6em}.dists{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:.6em;margin-top:.6em}
figure{margin:0}.plots img,.dists img{width:100%;height:auto;border:1px solid #e3e7eb}
";

fn anchor(title: &str) -> String {
    let s: String = title.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.split('-').filter(|x| !x.is_empty()).collect::<Vec<_>>().join("-")
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A note's inline Markdown (`**bold**`, `code`) as HTML.
fn html_note(s: &str) -> String {
    let e = html_escape(s);
    let mut o = String::new();
    for (i, p) in e.split("**").enumerate() {
        let p: String = p
            .split('`')
            .enumerate()
            .map(|(j, q)| {
                if j % 2 == 1 {
                    format!("<code>{q}</code>")
                } else {
                    q.split('*').enumerate().map(|(k, x)| if k % 2 == 1 { format!("<em>{x}</em>") } else { x.to_string() }).collect()
                }
            })
            .collect();
        if i % 2 == 1 {
            o += &format!("<strong>{p}</strong>");
        } else {
            o += &p;
        }
    }
    o
}

/// A table without its title and notes.
fn html_table(t: &super::markup::Table) -> String {
    html_table_grouped(t, usize::MAX)
}

/// [`html_table`] with a rule above every `per`-th row (model blocks).
fn html_table_grouped(t: &super::markup::Table, per: usize) -> String {
    use super::markup::{Align, bold_as};
    let cls = |a: &Align| if *a == Align::Right { " class=\"r\"" } else { "" };
    let mut s = "<div class=\"scroll\"><table>\n<tr>".to_string();
    for (h, a) in t.header.iter().zip(&t.align) {
        s += &format!("<th{}>{}</th>", cls(a), html_escape(h));
    }
    s += "</tr>\n";
    for (i, r) in t.rows.iter().enumerate() {
        s += if i > 0 && i % per == 0 { "<tr class=\"grp\">" } else { "<tr>" };
        for (c, a) in r.iter().zip(&t.align) {
            s += &format!("<td{}>{}</td>", cls(a), bold_as(&html_escape(c), "<b>", "</b>"));
        }
        s += "</tr>\n";
    }
    s += "</table></div>\n";
    s
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
        let mut s = format!("<h2 id=\"{}\">{}</h2>\n", anchor(&t.title), html_escape(&t.title));
        for n in &t.notes {
            s += &format!("<p class=\"note\">{}</p>\n", html_note(n));
        }
        // three or more values per cell: one row per (model, method)
        if t.parts.len() >= 3 && t.key_cols > 0 {
            let per = t.header.len().saturating_sub(t.key_cols).max(1);
            s += &html_table_grouped(&super::markup::long(t), per);
        } else {
            s += &html_table(t);
        }
        s
    }
}
