//! Failure modes (results.json `failure_modes`, `failures/*.png`): the
//! per-type figures at the soft threshold and the worst images against the
//! numpy oracle of `scripts/gen_failure_fixtures.py` (two anomaly types,
//! ties, void pixels, an all-void image), the panels decoded pixel by pixel,
//! deterministic, sharded = local, and the edge cases: no `images/`, a
//! JPEG photo (decoded; truncated, CMYK, wrong-sized: one error), a photo
//! of the wrong size, K = 0.

mod common;
use common::*;

use bench::report::Results;
use serde_json::Value;
use std::path::{Path, PathBuf};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/failure");

const CONFIG: &str = r#"name = "f"
dataset = "ds"
methods = []
external = ["ext"]
anomaly = [1, 2]
ignore = [255]
device = "cpu"
[[models]]
id = "m"
name = "M"
[metrics]
far = [0.25]
frr = [0.1]
"#;

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIX}/expected.json")).unwrap()).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let q = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &q) } else { std::fs::copy(&p, &q).map(|_| ()).unwrap() }
    }
}

/// A temp workspace holding the fixture dataset as `ds/` and `c.toml`
/// (the config above plus `report`, the `[report]` lines).
struct Ws {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Ws {
    fn new(report: &str) -> Ws {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        copy_dir(&Path::new(FIX).join("ds"), &root.join("ds"));
        std::fs::write(root.join("c.toml"), format!("{CONFIG}[report]\n{report}\n")).unwrap();
        Ws { _t: t, root }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn run(&self) -> Results {
        let o = bench(&["run", "c.toml"], &self.root);
        assert!(o.status.success(), "{}", stderr(&o));
        Results::load(&self.p("results/f")).unwrap()
    }
}

fn close(a: Option<f64>, b: &Value, what: &str) {
    let (a, b) = (a.unwrap_or_else(|| panic!("{what}: null")), b.as_f64().unwrap());
    assert!((a - b).abs() <= 1e-6, "{what}: {a} vs numpy {b}");
}

/// Decoded 8-bit RGB PNG: (width, height, pixels).
fn decode(path: &Path) -> (usize, usize, Vec<[u8; 3]>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0u8; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
    (info.width as usize, info.height as usize, buf.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect())
}

/// Every tile of a panel equals numpy's (`tiles`: one list of [r, g, b]
/// per tile, row-major); the 4 px gaps between tiles are white.
fn check_panel(path: &Path, tiles: &[Value], h: usize, w: usize) {
    let (pw, ph, px) = decode(path);
    let n = tiles.len();
    assert_eq!((pw, ph), (n * w + (n - 1) * 4, h), "{}", path.display());
    for (k, tile) in tiles.iter().enumerate() {
        let tile = tile.as_array().unwrap();
        for y in 0..h {
            for x in 0..w {
                let want: Vec<u8> = tile[y * w + x].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as u8).collect();
                assert_eq!(px[y * pw + k * (w + 4) + x].to_vec(), want, "{} tile {k} pixel ({y}, {x})", path.display());
            }
            if k + 1 < n {
                for g in 0..4 {
                    assert_eq!(px[y * pw + k * (w + 4) + w + g], [255, 255, 255], "gap after tile {k}");
                }
            }
        }
    }
}

/// Every file under `dir/failures`, relative to `dir`, → bytes.
fn panels(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    tree(&dir.join("failures")).into_iter().map(|(p, b)| (Path::new("failures").join(p), b)).collect()
}

#[test]
fn per_type_figures_and_worst_images_match_numpy() {
    let e = expected();
    let ws = Ws::new("failure_examples = 3");
    let r = ws.run();
    assert_eq!(r.failure_modes.len(), 2, "one row per anomaly type");
    for (f, x) in r.failure_modes.iter().zip(e["types"].as_array().unwrap()) {
        let v = x["anomaly_value"].as_u64().unwrap();
        assert_eq!((f.model.as_str(), f.method.as_str(), f.anomaly_value as u64), ("m", "ext", v));
        assert_eq!(f.positives, x["positives"].as_u64().unwrap(), "type {v}");
        close(f.auroc, &x["auroc"], "auroc");
        close(f.aupr, &x["aupr"], "aupr");
        close(f.soft_threshold, &e["soft_threshold"], "pixel soft threshold");
        close(f.image_soft_threshold, &e["image_soft_threshold"], "image soft threshold");
        close(f.recall_at_soft_threshold, &x["recall_at_soft_threshold"], "recall at soft");
        assert_eq!(f.images, x["images"].as_u64().unwrap(), "images of type {v}");
        assert_eq!(f.images_missed, x["images_missed"].as_u64(), "images missed, type {v}");
        assert_eq!(f.image_miss_share, Some(x["images_missed"].as_f64().unwrap() / x["images"].as_f64().unwrap()));
        assert!(f.reason.is_none(), "{:?}", f.reason);
        let want = x["examples"].as_array().unwrap();
        assert_eq!(f.examples.len(), want.len());
        for (a, b) in f.examples.iter().zip(want) {
            assert_eq!(a.image, b["image"].as_str().unwrap(), "type {v} rank {}", a.rank);
            assert_eq!((a.rank as u64, a.pixels, a.caught), (b["rank"].as_u64().unwrap(), b["pixels"].as_u64().unwrap(), b["caught"].as_u64().unwrap()));
            assert_eq!(a.recall, a.caught as f64 / a.pixels as f64);
            assert_eq!(a.png, b["png"].as_str().unwrap());
            assert!(a.rgb, "the fixture has images/");
            check_panel(&ws.p("results/f").join(&a.png), b["tiles"].as_array().unwrap(), 6, 8);
        }
    }
    // the page embeds every panel
    let md = std::fs::read_to_string(ws.p("results/f/report.md")).unwrap();
    for f in &r.failure_modes {
        for x in &f.examples {
            assert!(md.contains(&format!("]({})", x.png)), "{} not in report.md", x.png);
        }
    }
    // two runs: byte-identical panels
    let first = panels(&ws.p("results/f"));
    assert_eq!(first.len(), 6);
    ws.run();
    assert_eq!(panels(&ws.p("results/f")), first, "a second run wrote different panels");
    // --check compares them too
    let o = bench(&["run", "c.toml", "--check"], &ws.root);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let p = ws.p("results/f").join(&first[0].0);
    std::fs::write(&p, b"not a png").unwrap();
    let o = bench(&["run", "c.toml", "--check"], &ws.root);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&format!("{} differs from the re-drawn failure panel", first[0].0.display())), "{}", stdout(&o));
}

#[test]
fn without_images_the_panel_has_three_tiles() {
    let e = expected();
    let ws = Ws::new("");
    std::fs::remove_dir_all(ws.p("ds/test/images")).unwrap();
    let r = ws.run();
    let f = &r.failure_modes[0];
    assert_eq!(f.examples.len(), 3, "failure_examples defaults to 4; type 1 has 3 images");
    for (a, b) in f.examples.iter().zip(e["types"][0]["examples"].as_array().unwrap()) {
        assert!(!a.rgb);
        let tiles = &b["tiles"].as_array().unwrap()[1..]; // numpy's without the photo
        check_panel(&ws.p("results/f").join(&a.png), tiles, 6, 8);
    }
}

#[test]
fn zero_examples_write_no_panels_but_keep_the_figures() {
    let ws = Ws::new("failure_examples = 0");
    let r = ws.run();
    assert!(!ws.p("results/f/failures").exists(), "K = 0 wrote panels");
    assert!(r.failure_modes.iter().all(|f| f.examples.is_empty() && f.recall_at_soft_threshold.is_some()));
    let md = std::fs::read_to_string(ws.p("results/f/report.md")).unwrap();
    assert!(md.contains("Example images: none in results.json"), "{md}");
    // a hand-edited share outside [0, 1] is refused by every reader
    let p = ws.p("results/f/results.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["failure_modes"][1]["image_miss_share"] = 2.0.into();
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let o = bench(&["report", "results/f"], &ws.root);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(error_lines(&o).iter().any(|l| l.contains("failure row m/ext/2") && l.contains("image_miss_share")), "{}", stderr(&o));
}

#[test]
fn sharded_run_writes_the_same_panels() {
    let ws = Ws::new("failure_examples = 2");
    let local = ws.run();
    let want = panels(&ws.p("results/f"));
    assert_eq!(want.len(), 4);
    let text = std::fs::read_to_string(ws.p("c.toml")).unwrap().replacen("name = \"f\"", "name = \"f\"\noutput = \"sh\"", 1);
    std::fs::write(ws.p("s.toml"), text).unwrap();
    let o = bench(&["run", "s.toml", "--rounds"], &ws.root);
    let rounds: usize = stdout(&o).trim().parse().unwrap();
    for _ in 0..rounds {
        for i in 0..3 {
            let o = bench(&["run", "s.toml", "--shard", &format!("{i}/3")], &ws.root);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = bench(&["merge", "sh/f"], &ws.root);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(panels(&ws.p("sh/f")), want, "the merge drew different panels");
    assert_eq!(Results::load(&ws.p("sh/f")).unwrap().failure_modes, local.failure_modes);
    assert_eq!(std::fs::read(ws.p("sh/f/report.html")).unwrap(), std::fs::read(ws.p("results/f/report.html")).unwrap());
}

/// `px` (h × w × channels of `ct`) as a JPEG at quality 95, by the
/// pure-Rust `jpeg-encoder` (no binary fixture committed).
fn jpeg(px: &[u8], w: usize, h: usize, ct: jpeg_encoder::ColorType) -> Vec<u8> {
    let mut out = vec![];
    jpeg_encoder::Encoder::new(&mut out, 95).encode(px, w as u16, h as u16, ct).unwrap();
    out
}

/// A smooth RGB image (gradients; JPEG's best case).
fn smooth(w: usize, h: usize) -> Vec<u8> {
    (0..h).flat_map(|y| (0..w).flat_map(move |x| [(40 + 3 * x) as u8, (60 + 2 * y) as u8, (200 - x - y) as u8])).collect()
}

fn mean_abs(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / a.len() as f64
}

#[test]
fn jpeg_photos_decode_within_jpeg_tolerance_and_bad_ones_are_one_error() {
    use bench::data::rgb::read_rgb;
    use jpeg_encoder::ColorType;
    let d = tempfile::tempdir().unwrap();
    let (w, h) = (40, 24);
    let rgb = smooth(w, h);
    let p = d.path().join("a.jpg");
    std::fs::write(&p, jpeg(&rgb, w, h, ColorType::Rgb)).unwrap();
    let got = read_rgb(&p, h, w).unwrap();
    let err = mean_abs(&got, &rgb);
    assert!(err < 8.0, "mean abs error {err}");
    assert!(got != vec![128u8; w * h * 3], "a gray fill is not a decode");
    // grayscale: replicated into R, G, B
    let gray: Vec<u8> = rgb.chunks_exact(3).map(|c| c[1]).collect();
    let pg = d.path().join("g.JPEG");
    std::fs::write(&pg, jpeg(&gray, w, h, ColorType::Luma)).unwrap();
    let got = read_rgb(&pg, h, w).unwrap();
    assert!(got.chunks_exact(3).all(|c| c[0] == c[1] && c[1] == c[2]), "gray not replicated");
    let err = mean_abs(&got.iter().step_by(3).copied().collect::<Vec<_>>(), &gray);
    assert!(err < 8.0, "gray mean abs error {err}");
    // the wrong size: names the file and both sizes
    let e = format!("{:#}", read_rgb(&p, h, w + 1).unwrap_err());
    assert!(e.contains("a.jpg") && e.contains(&format!("{h}×{w}")) && e.contains(&format!("{h}×{}", w + 1)), "{e}");
    // CMYK: refused, naming the file and the colour type
    let pc = d.path().join("c.jpg");
    std::fs::write(&pc, jpeg(&vec![30u8; w * h * 4], w, h, ColorType::Cmyk)).unwrap();
    let e = format!("{:#}", read_rgb(&pc, h, w).unwrap_err());
    assert!(e.contains("c.jpg") && e.contains("CMYK"), "{e}");
    // truncated in the headers or the scan data, and garbage: an error, no
    // panic (zune-jpeg's lenient mode would gray-fill the rest; bench runs
    // it strict). Only the final EOI marker may be missing: the pixels are
    // all there.
    let full = std::fs::read(&p).unwrap();
    for cut in [2, 20, full.len() / 2, full.len() - 40, full.len() - 10] {
        let pt = d.path().join("t.jpg");
        std::fs::write(&pt, &full[..cut]).unwrap();
        let e = format!("{:#}", read_rgb(&pt, h, w).expect_err(&format!("cut at {cut} decoded")));
        assert!(e.contains("t.jpg"), "{e}");
    }
    std::fs::write(d.path().join("x.jpeg"), b"not a jpeg").unwrap();
    assert!(format!("{:#}", read_rgb(&d.path().join("x.jpeg"), h, w).unwrap_err()).contains("x.jpeg"));
}

#[test]
fn a_jpeg_photo_is_the_first_tile_and_a_wrong_size_photo_an_error() {
    let e = expected();
    let ws = Ws::new("failure_examples = 1");
    let ex = &e["types"][0]["examples"][0];
    let worst = ex["image"].as_str().unwrap().to_string();
    let png = ws.p(&format!("ds/test/images/{worst}.png"));
    let (pw, ph, orig) = decode(&png);
    assert_eq!((pw, ph), (8, 6));
    let orig: Vec<u8> = orig.concat();
    let jpg = png.with_extension("jpg");
    std::fs::write(&jpg, jpeg(&orig, 8, 6, jpeg_encoder::ColorType::Rgb)).unwrap();
    std::fs::remove_file(&png).unwrap();
    let r = ws.run();
    let f = &r.failure_modes[0];
    assert!(f.examples[0].rgb, "the JPEG photo was not drawn");
    assert!(!r.warnings.iter().any(|w| w.contains("JPEG")), "{:?}", r.warnings);
    // tile 0 is the decoded JPEG (the panel is exact; the decode is within
    // JPEG tolerance of the PNG it was made from); tiles 1.. are numpy's
    let photo = bench::data::rgb::read_rgb(&jpg, 6, 8).unwrap();
    assert!(mean_abs(&photo, &orig) < 8.0, "{}", mean_abs(&photo, &orig));
    let (w, h, px) = decode(&ws.p("results/f").join(&f.examples[0].png));
    assert_eq!((w, h), (4 * 8 + 3 * 4, 6));
    for (y, x) in [(0, 0), (0, 7), (3, 4), (5, 0), (5, 7)] {
        let i = (y * 8 + x) * 3;
        assert_eq!(px[y * w + x], [photo[i], photo[i + 1], photo[i + 2]], "tile 0 pixel ({y}, {x})");
    }
    let tiles = ex["tiles"].as_array().unwrap();
    let mut want: Vec<Value> = vec![Value::Array(photo.chunks_exact(3).map(|c| Value::from(c.to_vec())).collect())];
    want.extend(tiles[1..].iter().cloned());
    check_panel(&ws.p("results/f").join(&f.examples[0].png), &want, 6, 8);
    // a 2×2 photo for a 6×8 mask (PNG, then JPEG): one error naming the file, old results kept
    let before = std::fs::read(ws.p("results/f/results.json")).unwrap();
    for (path, bytes) in [(&png, bench::report::panel::rgb_png(2, 2, &[0u8; 12])), (&jpg, jpeg(&[0u8; 12], 2, 2, jpeg_encoder::ColorType::Rgb))] {
        let _ = std::fs::remove_file(&png);
        let _ = std::fs::remove_file(&jpg);
        std::fs::write(path, bytes).unwrap();
        let o = bench(&["run", "c.toml"], &ws.root);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let errs = error_lines(&o);
        assert_eq!(errs.len(), 1, "{errs:?}");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(errs[0].contains(name) && errs[0].contains("2×2") && errs[0].contains("6×8"), "{errs:?}");
        assert!(!stderr(&o).contains("panicked"));
        assert_eq!(std::fs::read(ws.p("results/f/results.json")).unwrap(), before, "a failed run touched the results");
    }
    // a truncated JPEG: the same one error, no panic
    std::fs::write(&jpg, &jpeg(&orig, 8, 6, jpeg_encoder::ColorType::Rgb)[..200]).unwrap();
    let o = bench(&["run", "c.toml"], &ws.root);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let errs = error_lines(&o);
    assert!(errs.len() == 1 && errs[0].contains(&format!("{worst}.jpg")), "{errs:?}");
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn report_keys_are_checked() {
    for (cfg, needle) in [("failure_examples = 1000", "report.failure_examples"), ("failure_method = \"nope\"", "report.failure_method"), ("typo = 1", "typo")] {
        let ws = Ws::new(cfg);
        let o = bench(&["run", "c.toml"], &ws.root);
        assert_eq!(o.status.code(), Some(2), "{cfg}: {}", stderr(&o));
        let errs = error_lines(&o);
        assert!(errs.len() == 1 && errs[0].contains(needle), "{cfg}: {errs:?}");
    }
}
