//! Progress of the streaming passes.
//!
//! Why: a sweep over real datasets runs for minutes to hours. On a terminal
//! an indicatif bar names the phase (`[model] calibrate (calibration) pass
//! 1/2`, `[model] test pass 2/2`) and counts the images of that pass; in a
//! batch log (Slurm, nohup: stderr is not a terminal) one line per finished
//! pass says what ran, on how many images, in how long. CI (`CI` set) and
//! `--check` stay quiet. Warnings go through [`Progress::println`] so they
//! never leave a stale bar line behind.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An indicatif bar (stderr is a terminal).
    Bar,
    /// One line per pass on stderr (batch logs).
    Lines,
    /// Nothing (CI, `--check`, merges).
    Off,
}

impl Mode {
    /// The mode for a run that wants progress (`wanted`): a bar on a
    /// terminal, lines elsewhere, nothing in CI (`CI` set and not
    /// `false`/`0`).
    pub fn detect(wanted: bool) -> Mode {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        match (wanted, std::io::stderr().is_terminal()) {
            (false, _) => Mode::Off,
            (true, true) => Mode::Bar,
            (true, false) if ci => Mode::Off,
            (true, false) => Mode::Lines,
        }
    }
}

pub struct Progress {
    mode: Mode,
    bar: ProgressBar,
    /// The current pass: label, images, start.
    phase: Mutex<Option<(String, u64, Instant)>>,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let bar = if mode == Mode::Bar {
            // drawn from the first pass on (no empty 0/0 bar before it)
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
            // a fixed template: cannot fail to parse
            if let Ok(st) = ProgressStyle::with_template("{spinner} {msg} [{wide_bar}] {pos}/{len} images ({elapsed}, eta {eta})") {
                b.set_style(st.progress_chars("=> "));
            }
            b
        } else {
            ProgressBar::hidden()
        };
        Progress { mode, bar, phase: Mutex::new(None) }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A pass over `images` images starts.
    pub fn start(&self, label: String, images: usize) {
        self.bar.set_message(label.clone());
        self.bar.reset();
        self.bar.set_length(images as u64);
        if self.mode == Mode::Bar && self.bar.is_hidden() {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = Some((label, images as u64, Instant::now()));
    }

    /// One image of the current pass is done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// The current pass is done: in line mode, its line.
    pub fn finish(&self) {
        let p = self.phase.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Mode::Lines, Some((label, n, t))) = (self.mode, p) {
            eprintln!("{}", line(&label, n, t.elapsed().as_secs_f64()));
        }
    }

    /// Print a line on stderr without breaking the bar.
    pub fn println(&self, s: &str) {
        self.bar.suspend(|| eprintln!("{s}"));
    }

    /// Remove the bar (end of the run).
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// `[model] test pass 1/2: 20 images, 1.2 s`
pub fn line(label: &str, images: u64, secs: f64) -> String {
    format!("{label}: {images} image{}, {secs:.1} s", if images == 1 { "" } else { "s" })
}
