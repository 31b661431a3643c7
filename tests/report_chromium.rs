//! The committed `results/demo/report.html` rendered in headless Chromium:
//! the screenshot exists, decodes, is not blank, and shows the failure
//! panels (their "caught" green `(0,170,0)` is drawn by the PNGs only:
//! the page's CSS and text never use it, so finding it means the
//! `<img src="failures/...">` links loaded).
//!
//! Without a Chromium/Chrome binary the test prints a SKIP line, unless
//! `BENCH_REQUIRE_CHROMIUM=1` (set by `.ci/run`, which installs Debian's
//! `chromium`): then a missing browser is a failure. `BENCH_CHROMIUM`
//! names the binary explicitly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const NAMES: &[&str] = &["chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"];

/// The browser: `$BENCH_CHROMIUM`, else the first of [`NAMES`] on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BENCH_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    NAMES.iter().flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n))).find(|p| p.is_file())
}

/// `chrome --headless --screenshot` of `page` into `out` (sRGB forced, so
/// PNG colours reach the screenshot unchanged).
fn screenshot(bin: &Path, page: &Path, out: &Path, profile: &Path) {
    let mut child = Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-color-profile=srgb", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,12000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: cannot start: {e}", bin.display()));
    // a hang guard, not a timing assertion: a browser that never exits is a failure
    for _ in 0..1200 {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).ok();
            assert!(st.success(), "{} exited with {st}: {err}", bin.display());
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("{} did not finish the screenshot within 120 s", bin.display());
}

#[test]
fn demo_report_renders_in_headless_chromium() {
    let Some(bin) = chromium() else {
        assert!(std::env::var("BENCH_REQUIRE_CHROMIUM").as_deref() != Ok("1"), "BENCH_REQUIRE_CHROMIUM=1 but no Chromium/Chrome binary ({NAMES:?}) is on PATH");
        eprintln!("SKIP: no Chromium/Chrome binary on PATH ({NAMES:?}); install `chromium` or set BENCH_CHROMIUM; BENCH_REQUIRE_CHROMIUM=1 makes this a failure");
        return;
    };
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/demo/report.html");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report.png");
    screenshot(&bin, &page, &out, &tmp.path().join("profile"));
    assert!(out.is_file(), "no screenshot written");
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0u8; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    assert!(ch >= 3, "{:?}", info.color_type);
    let px: Vec<[u8; 3]> = buf[..info.buffer_size()].chunks_exact(ch).map(|p| [p[0], p[1], p[2]]).collect();
    let ink = px.iter().filter(|&&p| p != [255, 255, 255]).count();
    assert!(ink * 100 > px.len(), "blank screenshot: {ink} of {} pixels not white", px.len());
    let mut colours: Vec<[u8; 3]> = px.clone();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 50, "only {} colours: text and tables did not render", colours.len());
    let green = px.iter().filter(|&&p| p == bench::report::panel::CAUGHT).count();
    assert!(green > 500, "the failure panels did not load: {green} pixels of their caught-green in the screenshot");
}
