//! Table dialects: the shape of a table is built once ([`Table`]); each
//! output format supplies only its row, divider and escaping syntax (the
//! hyperfine `export/markup.rs` pattern).

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A titled table with optional explanatory lines above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub title: String,
    pub notes: Vec<String>,
    pub header: Vec<String>,
    pub align: Vec<Align>,
    pub rows: Vec<Vec<String>>,
}

/// An output format for tables.
pub trait Dialect {
    /// Text before the first table.
    fn preamble(&self, _title: &str) -> String {
        String::new()
    }
    fn table(&self, t: &Table) -> String;
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
        let esc = |r: &[String]| r.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>();
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

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

impl Dialect for Csv {
    fn table(&self, t: &Table) -> String {
        let mut s = format!("# {}\n", t.title);
        for r in std::iter::once(&t.header).chain(&t.rows) {
            s += &r.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",");
            s.push('\n');
        }
        s.push('\n');
        s
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
            '±' => o.push_str("$\\pm$"),
            _ => o.push(ch),
        }
    }
    o
}

impl Dialect for Latex {
    fn preamble(&self, title: &str) -> String {
        format!("% {title}\n% requires \\usepackage{{booktabs}}\n\n")
    }

    fn table(&self, t: &Table) -> String {
        let spec: String = t.align.iter().map(|a| if *a == Align::Left { 'l' } else { 'r' }).collect();
        let mut s = format!("% {}\n\\begin{{table}}[t]\n\\centering\n\\caption{{{}}}\n", t.title, latex_escape(&t.title));
        s += &format!("\\begin{{tabular}}{{{spec}}}\n\\toprule\n");
        let row = |r: &[String]| format!("{} \\\\\n", r.iter().map(|c| latex_escape(c)).collect::<Vec<_>>().join(" & "));
        s += &row(&t.header);
        s += "\\midrule\n";
        for r in &t.rows {
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
