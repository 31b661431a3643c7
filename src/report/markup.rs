//! Table dialects: the shape of a table is built once ([`Table`]); each
//! output format supplies only its row, divider and escaping syntax (the
//! hyperfine `export/markup.rs` pattern).

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Which value of a row is the best one (bold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Not a score (thresholds, shares, achieved rates): never bold.
    Neither,
}

/// A titled table with optional explanatory lines above it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub title: String,
    pub notes: Vec<String>,
    pub header: Vec<String>,
    pub align: Vec<Align>,
    pub rows: Vec<Vec<String>>,
    /// Leading label columns of every row (model, anomaly type); the other
    /// columns are methods.
    pub key_cols: usize,
    /// The values of a method cell, joined by `" / "` (e.g. FPR95, AUROC,
    /// AUPR, F1): name and direction of each. Empty: a plain table (no
    /// best-value marks, no long LaTeX layout).
    pub parts: Vec<(String, Better)>,
}

/// Start and end of a best-value mark inside a cell: each dialect turns
/// them into its own bold (`**`, `\textbf{}`, `<b>`) or drops them.
pub const BOLD_ON: char = '\u{1}';
pub const BOLD_OFF: char = '\u{2}';

/// The leading number of a cell part as printed (`12.34±0.50 †` → 12.34).
fn lead_number(s: &str) -> Option<f64> {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e')).unwrap_or(s.len());
    s[..end].parse().ok().filter(|x: &f64| x.is_finite())
}

/// Mark the best value of every part in every row, among the method
/// columns: lowest for [`Better::Lower`], highest for [`Better::Higher`],
/// compared as printed, so equal printed values (ties) are all marked. A
/// row with fewer than two defined values has no best.
pub fn mark_best(t: &mut Table) {
    let k = t.key_cols;
    for row in &mut t.rows {
        let mut cells: Vec<Vec<String>> = row[k.min(row.len())..].iter().map(|c| c.split(" / ").map(String::from).collect()).collect();
        for (p, (_, better)) in t.parts.iter().enumerate() {
            let vals: Vec<Option<f64>> =
                cells.iter().map(|c| if c.len() == t.parts.len() { lead_number(&c[p]) } else { None }).collect();
            let defined: Vec<f64> = vals.iter().flatten().copied().collect();
            if defined.len() < 2 {
                continue;
            }
            let best = match better {
                Better::Higher => defined.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Better::Lower => defined.iter().copied().fold(f64::INFINITY, f64::min),
                Better::Neither => continue,
            };
            for (c, v) in cells.iter_mut().zip(&vals) {
                if *v == Some(best) {
                    let part = &c[p];
                    let end = part.find(|ch: char| !(ch.is_ascii_digit() || ch == '.' || ch == '-' || ch == '+' || ch == 'e')).unwrap_or(part.len());
                    c[p] = format!("{BOLD_ON}{}{BOLD_OFF}{}", &part[..end], &part[end..]);
                }
            }
        }
        let k = k.min(row.len());
        for (dst, c) in row[k..].iter_mut().zip(cells) {
            *dst = c.join(" / ");
        }
    }
}

/// Replace the best-value marks with `on` / `off`.
pub fn bold_as(s: &str, on: &str, off: &str) -> String {
    s.replace(BOLD_ON, on).replace(BOLD_OFF, off)
}

/// An output format for tables.
pub trait Dialect {
    /// Text before the first table.
    fn preamble(&self, _title: &str) -> String {
        String::new()
    }
    fn table(&self, t: &Table) -> String;
    /// A heading above one dataset's tables (`bench table` of a
    /// `[[datasets]]` folder).
    fn section(&self, text: &str) -> String {
        format!("# {text}\n\n")
    }
}

pub struct Markdown;
pub struct Csv;
pub struct Latex;
/// HTML tables for `index.html` (implemented in `curves.rs`).
pub struct Html;

fn widths(header: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    w
}

fn pad(s: &str, w: usize, a: Align) -> String {
    let n = w.saturating_sub(s.chars().count());
    match a {
        Align::Left => format!("{s}{}", " ".repeat(n)),
        Align::Right => format!("{}{s}", " ".repeat(n)),
    }
}

impl Dialect for Markdown {
    fn preamble(&self, title: &str) -> String {
        format!("# {title}\n\n")
    }

    fn table(&self, t: &Table) -> String {
        let esc = |r: &[String]| r.iter().map(|c| bold_as(&c.replace('|', "\\|"), "**", "**")).collect::<Vec<_>>();
        let header = esc(&t.header);
        let rows: Vec<Vec<String>> = t.rows.iter().map(|r| esc(r)).collect();
        let w = widths(&header, &rows);
        let row = |cells: &[String]| {
            let inner: Vec<String> = cells.iter().enumerate().map(|(i, c)| pad(c, w[i], t.align[i])).collect();
            format!("| {} |\n", inner.join(" | "))
        };
        let mut s = format!("## {}\n\n", t.title);
        for n in &t.notes {
            s += &format!("{n}\n\n");
        }
        s += &row(&header);
        let div: Vec<String> = w
            .iter()
            .zip(&t.align)
            .map(|(&n, a)| match a {
                Align::Left => format!(":{}", "-".repeat(n + 1)),
                Align::Right => format!("{}:", "-".repeat(n + 1)),
            })
            .collect();
        s += &format!("|{}|\n", div.join("|"));
        for r in &rows {
            s += &row(r);
        }
        s.push('\n');
        s
    }
}

impl Dialect for Csv {
    fn table(&self, t: &Table) -> String {
        // the csv crate quotes what needs quoting (commas, quotes, newlines)
        let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
        for r in std::iter::once(&t.header).chain(&t.rows) {
            w.write_record(r.iter().map(|c| bold_as(c, "", ""))).expect("writing to memory");
        }
        let body = String::from_utf8(w.into_inner().expect("writing to memory")).expect("UTF-8 in, UTF-8 out");
        format!("# {}\n{body}\n", t.title)
    }
}

fn latex_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '%' | '&' | '#' | '_' | '$' | '{' | '}' => {
                o.push('\\');
                o.push(ch);
            }
            '~' => o.push_str("\\textasciitilde{}"),
            '^' => o.push_str("\\textasciicircum{}"),
            '\\' => o.push_str("\\textbackslash{}"),
            '†' => o.push_str("\\textsuperscript{\\dag}"),
            '≤' => o.push_str("$\\leq$"),
            '≥' => o.push_str("$\\geq$"),
            '±' => o.push_str("$\\pm$"),
            '×' => o.push_str("$\\times$"),
            '→' => o.push_str("$\\to$"),
            'Δ' => o.push_str("$\\Delta$"),
            'σ' => o.push_str("$\\sigma$"),
            '²' => o.push_str("\\textsuperscript{2}"),
            '‖' => o.push_str("$\\|$"),
            BOLD_ON => o.push_str("\\textbf{"),
            BOLD_OFF => o.push('}'),
            _ => o.push(ch),
        }
    }
    o
}

/// A note as caption text: `**` dropped, `*x*` emphasised, `code` in
/// typewriter; a sentence end added where the note has none.
fn latex_note(s: &str) -> String {
    let mut s = s.replace("**", "");
    if !s.ends_with(['.', ')']) || s.ends_with("%)") {
        s.push('.');
    }
    s.split('`')
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 1 {
                format!("\\texttt{{{}}}", latex_escape(p))
            } else {
                p.split('*').enumerate().map(|(j, q)| if j % 2 == 1 { format!("\\emph{{{}}}", latex_escape(q)) } else { latex_escape(q) }).collect()
            }
        })
        .collect()
}

fn latex_label(title: &str) -> String {
    let s: String = title.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.split('-').filter(|x| !x.is_empty()).collect::<Vec<_>>().join("-")
}

/// The long layout of a table of method cells: one row per (model,
/// method), one column per value — a page wide at most, whatever the
/// number of methods (LaTeX, and the per-model tables of `index.html`).
pub fn long(t: &Table) -> Table {
    let k = t.key_cols;
    let mut header: Vec<String> = t.header[..k].to_vec();
    header.push("Method".into());
    header.extend(t.parts.iter().map(|(n, b)| match b {
        Better::Higher => format!("{n} \u{2191}"),
        Better::Lower => format!("{n} \u{2193}"),
        Better::Neither => n.clone(),
    }));
    let mut align = vec![Align::Left; k + 1];
    align.extend(t.parts.iter().map(|_| Align::Right));
    let mut rows = vec![];
    for r in &t.rows {
        for (j, cell) in r.iter().enumerate().skip(k) {
            let mut row: Vec<String> = if j == k { r[..k].to_vec() } else { vec![String::new(); k] };
            row.push(t.header[j].clone());
            let vals: Vec<String> = cell.split(" / ").map(String::from).collect();
            if vals.len() == t.parts.len() {
                row.extend(vals);
            } else {
                row.extend(std::iter::repeat_n(cell.clone(), t.parts.len()));
            }
            rows.push(row);
        }
    }
    Table { title: t.title.clone(), notes: t.notes.clone(), header, align, rows, key_cols: k, parts: vec![] }
}

impl Dialect for Latex {
    fn section(&self, text: &str) -> String {
        format!("% {text}\n\n")
    }

    fn preamble(&self, title: &str) -> String {
        format!("% {title}\n% requires \\usepackage{{booktabs}}; arrows: \u{2193} lower is better, \u{2191} higher is better\n\n")
    }

    fn table(&self, t: &Table) -> String {
        let long = !t.parts.is_empty() && t.key_cols > 0;
        let lt = if long { self::long(t) } else { t.clone() };
        let spec: String = lt.align.iter().map(|a| if *a == Align::Left { 'l' } else { 'r' }).collect();
        let caption = std::iter::once(latex_escape(&t.title) + ".").chain(t.notes.iter().map(|n| latex_note(n))).collect::<Vec<_>>().join(" ");
        let mut s = format!("% {}\n\\begin{{table}}[t]\n\\centering\n\\small\n\\caption{{{caption}}}\n\\label{{tab:{}}}\n", t.title, latex_label(&t.title));
        s += &format!("\\begin{{tabular}}{{{spec}}}\n\\toprule\n");
        let row = |r: &[String]| {
            let cells: Vec<String> = r.iter().map(|c| latex_escape(c).replace('\u{2191}', "$\\uparrow$").replace('\u{2193}', "$\\downarrow$")).collect();
            format!("{} \\\\\n", cells.join(" & "))
        };
        s += &row(&lt.header);
        s += "\\midrule\n";
        let per = if long { t.header.len().saturating_sub(t.key_cols).max(1) } else { usize::MAX };
        for (i, r) in lt.rows.iter().enumerate() {
            if long && i > 0 && i % per == 0 {
                s += "\\midrule\n";
            }
            s += &row(r);
        }
        s += "\\bottomrule\n\\end{tabular}\n\\end{table}\n\n";
        s
    }
}

/// Pick a dialect by name (`md`, `csv`, `latex`).
pub fn dialect(name: &str) -> anyhow::Result<Box<dyn Dialect>> {
    Ok(match name {
        "md" | "markdown" => Box::new(Markdown),
        "csv" => Box::new(Csv),
        "latex" | "tex" => Box::new(Latex),
        "html" => Box::new(Html),
        _ => anyhow::bail!("unknown table format {name:?} (md, csv, latex, html)"),
    })
}
