//! End to end through the `bench` binary: the demo sweep, determinism,
//! `--check`, leakage flags, `eval`, and every bad input (one error line
//! naming the file or key, exit 2, previous results untouched).

mod common;
#[allow(unused_imports)]
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};



/// A temp workspace with the demo dataset and a config pointing at it.
struct Ws {
    _t: tempfile::TempDir,
    root: PathBuf,
}

const CONFIG: &str = r#"
name = "demo"
dataset = "datasets/demo"
anomaly = [1]
ignore = [255]
methods = ["max_logit", "msp", "sml", "energy", "heat"]
device = "cpu"

[[models]]
id = "deeplab_r50"
name = "DeepLabV3+ R50"

[[models]]
id = "segformer_b5"
name = "SegFormer-B5"
"#;

impl Ws {
    fn new() -> Ws {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let o = bench(&["synth", "--out", "datasets/demo"], &root);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(root.join("sweep.toml"), CONFIG).unwrap();
        Ws { _t: t, root }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn run(&self, extra: &[&str]) -> Output {
        let mut a = vec!["run", "sweep.toml"];
        a.extend_from_slice(extra);
        bench(&a, &self.root)
    }
    fn results(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.p("results/demo/results.json")).unwrap()).unwrap()
    }
}

#[test]
fn demo_sweep_writes_the_table_family_deterministically() {
    let ws = Ws::new();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("FPR95 / AUROC / AUPR / F1"), "prints the main table");
    let md = std::fs::read_to_string(ws.p("results/demo/tables.md")).unwrap();
    for h in ["## Main Results", "## F1 Scores (%) - For Threshold Selection", "## Optimal Thresholds", "## Honest F1", "## Pixel FRR @ FAR", "## Pixel FAR @ FRR", "## Pixel hard and soft thresholds", "## Image FRR @ FAR", "## Image FAR @ FRR", "## Image hard and soft thresholds", "## Image-level detection", "## Drift"] {
        assert!(md.contains(h), "missing {h} in tables.md");
    }
    assert!(!md.contains('†'), "calibration and val splits exist: no leakage");
    let r = ws.results();
    let cells = r["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2 * 5 * 2, "models × methods × (val, test)");
    for c in cells {
        for k in ["auroc", "aupr", "fpr95", "f1"] {
            let v = c[k].as_f64().unwrap_or_else(|| panic!("{k} null in {c}"));
            assert!((0.0..=1.0).contains(&v), "{k}={v}");
        }
        assert_eq!(c["leakage"], false);
    }
    // HEAT is not Energy
    let get = |m: &str| cells.iter().find(|c| c["model"] == "deeplab_r50" && c["method"] == m && c["split"] == "test").unwrap()["auroc"].as_f64().unwrap();
    assert_ne!(get("heat"), get("energy"));
    assert_eq!(r["models"][1]["dtype"], "float16");
    for f in ["manifest.json", "drift.json", "index.html", "curves/deeplab_r50__heat.csv", "plots/deeplab_r50_roc.svg"] {
        assert!(ws.p("results/demo").join(f).exists(), "missing {f}");
    }
    // synth writes photos: every failure panel's first tile is the example's photo
    let ex: Vec<&serde_json::Value> = r["failure_modes"].as_array().unwrap().iter().flat_map(|f| f["examples"].as_array().unwrap()).collect();
    assert!(!ex.is_empty() && ex.iter().all(|e| e["rgb"] == true), "{ex:?}");
    let rgb = |p: &Path| {
        let mut rd = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap())).read_info().unwrap();
        let mut buf = vec![0u8; rd.output_buffer_size().unwrap()];
        let info = rd.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb, "{}", p.display());
        (info.width as usize, buf)
    };
    let (pw, panel) = rgb(&ws.p("results/demo").join(ex[0]["png"].as_str().unwrap()));
    let (w, photo) = rgb(&ws.p(&format!("datasets/demo/test/images/{}.png", ex[0]["image"].as_str().unwrap())));
    for (y, row) in photo.chunks_exact(3 * w).enumerate() {
        assert_eq!(&panel[y * 3 * pw..y * 3 * pw + 3 * w], row, "panel row {y}: tile 0 is not the photo");
    }

    // byte-identical on a second run, whatever the thread count
    let a = std::fs::read(ws.p("results/demo/results.json")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bench")).args(["run", "sweep.toml"]).current_dir(&ws.root).env("RAYON_NUM_THREADS", "1").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(a, std::fs::read(ws.p("results/demo/results.json")).unwrap(), "results.json differs between runs");
    assert_eq!(md, std::fs::read_to_string(ws.p("results/demo/tables.md")).unwrap(), "tables.md differs between runs");

    // --check passes on the same data, fails when a committed number moves
    let o = ws.run(&["--check"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let text = std::fs::read_to_string(ws.p("results/demo/results.json")).unwrap();
    let auroc = cells[0]["auroc"].as_f64().unwrap();
    let edited = text.replacen(&format!("\"auroc\": {auroc}"), &format!("\"auroc\": {}", auroc - 0.01), 1);
    assert_ne!(edited, text);
    std::fs::write(ws.p("results/demo/results.json"), edited).unwrap();
    let o = ws.run(&["--check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("auroc"), "{}", stdout(&o));

    // table re-rendering from results.json alone, other dialects
    let o = bench(&["table", "results/demo", "--format", "latex"], &ws.root);
    assert!(o.status.success() && stdout(&o).contains("\\toprule"));
    // diff of a folder with itself
    let o = bench(&["diff", "results/demo", "results/demo"], &ws.root);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = bench(&["drift", "results/demo", "results/demo"], &ws.root);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn missing_calibration_and_val_splits_are_flagged_as_leakage() {
    let ws = Ws::new();
    std::fs::remove_dir_all(ws.p("datasets/demo/calibration")).unwrap();
    std::fs::remove_dir_all(ws.p("datasets/demo/val")).unwrap();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("leakage"), "{}", stderr(&o));
    let r = ws.results();
    for c in r["cells"].as_array().unwrap() {
        let needs_cal = c["method"] == "sml" || c["method"] == "heat";
        assert_eq!(c["leakage"].as_bool().unwrap(), needs_cal, "{c}");
    }
    for h in r["honest"].as_array().unwrap() {
        assert_eq!(h["threshold_split"], "test");
        assert_eq!(h["leakage"], true);
    }
    let md = std::fs::read_to_string(ws.p("results/demo/tables.md")).unwrap();
    assert!(md.contains("† leakage") && md.contains("No `val` split"), "{md}");
}

/// Break the dataset with `f`, run, expect one error line naming `needle`,
/// exit 2, and the previous results untouched.
fn expect_error(ws: &Ws, f: impl FnOnce(&Ws), needle: &str) {
    let before = std::fs::read(ws.p("results/demo/results.json")).unwrap();
    f(ws);
    let o = ws.run(&[]);
    assert_eq!(o.status.code(), Some(2), "expected failure for {needle}: {}", stderr(&o));
    let e = stderr(&o);
    let err_lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(err_lines.len(), 1, "{e}");
    assert!(err_lines[0].contains(needle), "error should name {needle}: {e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(before, std::fs::read(ws.p("results/demo/results.json")).unwrap(), "previous results changed");
}

#[test]
fn bad_inputs_fail_cleanly_and_leave_results_untouched() {
    use bench::data::npy::write_npy_f32;
    let ws = Ws::new();
    assert!(ws.run(&[]).status.success());
    let logits = |split: &str, stem: &str| ws.p(&format!("datasets/demo/{split}/logits/deeplab_r50/{stem}.npy"));
    let keep = |p: &Path| std::fs::read(p).unwrap();

    // truncated .npy
    let p = logits("test", "img_0003");
    let orig = keep(&p);
    expect_error(&ws, |_| std::fs::write(&p, &orig[..orig.len() - 100]).unwrap(), "img_0003.npy");
    // wrong dtype (int32 data under a valid header is made with numpy's format by hand)
    expect_error(
        &ws,
        |_| {
            let hdr = "{'descr': '<i4', 'fortran_order': False, 'shape': (13, 96, 128), }";
            let mut h = hdr.to_string();
            while (10 + h.len() + 1) % 64 != 0 {
                h.push(' ');
            }
            h.push('\n');
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            b.extend(std::iter::repeat_n(0u8, 13 * 96 * 128 * 4));
            std::fs::write(&p, b).unwrap();
        },
        "img_0003.npy",
    );
    // NaN logit
    expect_error(
        &ws,
        |_| {
            let mut v = vec![0.5f32; 13 * 96 * 128];
            v[777] = f32::NAN;
            write_npy_f32(&p, &[13, 96, 128], &v).unwrap();
        },
        "img_0003.npy",
    );
    // shape mismatch with the mask
    expect_error(&ws, |_| write_npy_f32(&p, &[13, 95, 128], &vec![0.5f32; 13 * 95 * 128]).unwrap(), "img_0003.npy");
    // missing file
    expect_error(&ws, |_| std::fs::remove_file(&p).unwrap(), "img_0003.npy");
    std::fs::write(&p, &orig).unwrap();
    assert!(ws.run(&[]).status.success(), "restored dataset runs again");

    // empty split
    let val_labels = ws.p("datasets/demo/val/labels");
    let saved = ws.p("val_labels_saved");
    std::fs::rename(&val_labels, &saved).unwrap();
    std::fs::create_dir(&val_labels).unwrap();
    expect_error(&ws, |_| {}, "val");
    std::fs::remove_dir(&val_labels).unwrap();
    std::fs::rename(&saved, &val_labels).unwrap();

    // config errors name the key
    let cfg = ws.p("sweep.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    expect_error(&ws, |_| std::fs::write(&cfg, good.replace("device = \"cpu\"", "device = \"cpu\"\nthreshold_on_test = true")).unwrap(), "threshold_on_test");
    expect_error(&ws, |_| std::fs::write(&cfg, good.replace("\"heat\"", "\"hot\"")).unwrap(), "hot");
    expect_error(&ws, |_| std::fs::write(&cfg, good.replace("id = \"segformer_b5\"", "id = \"nope\"")).unwrap(), "nope");
    std::fs::write(&cfg, &good).unwrap();

    // output path that is a file
    let cfg2 = good.replace("device = \"cpu\"", "device = \"cpu\"\noutput = \"afile\"");
    std::fs::write(ws.p("afile"), b"x").unwrap();
    std::fs::write(&cfg, cfg2).unwrap();
    let o = ws.run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("afile"), "{}", stderr(&o));
    assert_eq!(std::fs::read(ws.p("afile")).unwrap(), b"x");
}

#[test]
fn eval_on_precomputed_score_maps() {
    use bench::data::npy::write_npy_f32;
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::create_dir_all(d.join("s")).unwrap();
    std::fs::create_dir_all(d.join("l")).unwrap();
    // 2 images, scores = label + noise-free ramp; one void pixel
    let s1 = [0.1f32, 0.4, 0.35, 0.8];
    let l1 = [0u8, 0, 1, 1];
    let s2 = [0.2f32, 0.9, 0.5, 0.05];
    let l2 = [0u8, 1, 255, 0];
    write_npy_f32(&d.join("s/a.npy"), &[2, 2], &s1).unwrap();
    write_npy_f32(&d.join("s/b.npy"), &[2, 2], &s2).unwrap();
    bench::data::mask::write_mask_png(&d.join("l/a.png"), 2, 2, &l1).unwrap();
    bench::data::mask::write_mask_png(&d.join("l/b.png"), 2, 2, &l2).unwrap();
    let o = bench(&["eval", "--scores", "s", "--labels", "l", "--json"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["positives"], 3);
    assert_eq!(j["negatives"], 4);
    assert_eq!(j["void"], 1);
    // sklearn: roc_auc_score([0,0,1,1,0,1,0], [.1,.4,.35,.8,.2,.9,.05]) = 11/12
    assert!((j["auroc"].as_f64().unwrap() - 11.0 / 12.0).abs() < 1e-12, "{j}");
    // single file mode
    let o = bench(&["eval", "--scores", "s/a.npy", "--labels", "l/a.png", "--json"], d);
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["auroc"], 0.75);
    // no positives → null, not a crash
    let o = bench(&["eval", "--scores", "s/a.npy", "--labels", "l/a.png", "--anomaly", "7", "--json"], d);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(j["auroc"].is_null() && j["fpr95"].is_null(), "{j}");
    // a 16-bit mask value above 255 that the mapping does not list is an error
    // naming the mask; listing it (here as void) accepts it
    let mut enc_out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut enc_out, 2, 2);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Sixteen);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&[0, 0, 0, 0, 0, 1, 0xff, 0xff]).unwrap();
        wr.finish().unwrap();
    }
    std::fs::write(d.join("l16.png"), &enc_out).unwrap();
    let o = bench(&["eval", "--scores", "s/a.npy", "--labels", "l16.png"], d);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("l16.png") && stderr(&o).contains("65535"), "{}", stderr(&o));
    let o = bench(&["eval", "--scores", "s/a.npy", "--labels", "l16.png", "--ignore", "255,65535", "--json"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((j["positives"].as_u64(), j["void"].as_u64()), (Some(1), Some(1)), "{j}");
    // a missing mask names the file
    std::fs::remove_file(d.join("l/b.png")).unwrap();
    let o = bench(&["eval", "--scores", "s", "--labels", "l"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("b.npy"), "{}", stderr(&o));
}

#[test]
fn shipped_config_matches_committed_results() {
    // CI's guard: a change that moves a committed number cannot land silently.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = bench(&["run", "configs/sweep.toml", "--check", "--device", "cpu"], root);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
}

#[test]
fn gpu_sweep_matches_cpu_sweep() {
    // Same inputs, WGSL path vs CPU reference: every cell within 1e-6.
    let ws = Ws::new();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::rename(ws.p("results/demo"), ws.p("results/cpu")).unwrap();
    let o = ws.run(&["--device", "gpu"]);
    if !o.status.success() {
        // Only a missing adapter is a reason to skip; any other failure of
        // the GPU path (a shader error, a device loss) fails the test.
        let e = stderr(&o);
        assert!(!gpu_required(), "BENCH_REQUIRE_GPU=1 but the GPU sweep failed: {e}");
        assert!(e.contains("no GPU adapter found"), "the GPU sweep failed for a reason other than a missing adapter: {e}");
        eprintln!("skipping: no wgpu adapter ({})", e.trim());
        return;
    }
    assert_eq!(ws.results()["device"], "gpu");
    let o = bench(&["diff", "results/cpu", "results/demo", "--tol", "1e-6"], &ws.root);
    assert_eq!(o.status.code(), Some(0), "GPU and CPU sweeps differ:\n{}", stdout(&o));
    assert!(stdout(&o).contains("note: device: cpu → gpu"), "{}", stdout(&o));
}

#[test]
fn honest_extras_bootstrap_failure_modes_regions_are_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let o = bench(&["synth", "--out", "datasets/demo", "--anomaly-types", "2"], root);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = CONFIG.replace("anomaly = [1]", "anomaly = [1, 2]")
        + "\n[metrics]\nbootstrap = 20\nbootstrap_seed = 7\nregions = true\ncomponent_track = \"obstacle\"\nimage_topk = 50\n";
    std::fs::write(root.join("sweep.toml"), cfg).unwrap();
    let o = bench(&["run", "sweep.toml"], root);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = std::fs::read(root.join("results/demo/results.json")).unwrap();
    let r: serde_json::Value = serde_json::from_slice(&first).unwrap();
    let test_cells: Vec<&serde_json::Value> = r["cells"].as_array().unwrap().iter().filter(|c| c["split"] == "test").collect();
    for c in &test_cells {
        let b = &c["bootstrap"];
        assert_eq!(b["samples"], 20, "{c}");
        let (lo, hi, v) = (b["auroc"][0].as_f64().unwrap(), b["auroc"][1].as_f64().unwrap(), c["auroc"].as_f64().unwrap());
        assert!(lo <= hi && lo <= v + 0.05 && v - 0.05 <= hi, "CI [{lo}, {hi}] far from {v}");
        let a = c["aupro"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a));
        assert!(c["regions"].as_u64().unwrap() > 0);
        assert!(c["components"]["threshold_split"] == "val", "{c}");
    }
    // two anomaly types → per-type rows for every model × method
    let fm = r["failure_modes"].as_array().unwrap();
    assert_eq!(fm.len(), 2 * 5 * 2, "{fm:?}");
    let types: std::collections::BTreeSet<u64> = fm.iter().map(|f| f["anomaly_value"].as_u64().unwrap()).collect();
    assert_eq!(types.into_iter().collect::<Vec<_>>(), vec![1, 2]);
    assert!(r["conventions"]["image_score"].as_str().unwrap().contains("top 50"));
    let md = std::fs::read_to_string(root.join("results/demo/tables.md")).unwrap();
    for h in ["## Failure modes by anomaly type", "## Region metrics", "percentile-bootstrap", "±"] {
        assert!(md.contains(h), "missing {h}");
    }
    // the bootstrap and everything else reproduce byte for byte
    let o = bench(&["run", "sweep.toml"], root);
    assert!(o.status.success());
    assert_eq!(first, std::fs::read(root.join("results/demo/results.json")).unwrap());
}

#[test]
fn low_resolution_logits_need_resize_and_then_run() {
    use bench::data::npy::write_npy_f32;
    let ws = Ws::new();
    // replace one model's test logits by a 2× downsampled copy
    let dir = ws.p("datasets/demo/test/logits/deeplab_r50");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let lg = bench::data::read_logits(&p).unwrap();
        let (h, w) = (lg.h / 2, lg.w / 2);
        let mut v = Vec::with_capacity(lg.c * h * w);
        for c in 0..lg.c {
            for y in 0..h {
                for x in 0..w {
                    v.push(lg.get(c, 2 * y * lg.w + 2 * x) as f32);
                }
            }
        }
        write_npy_f32(&p, &[lg.c as u64, h as u64, w as u64], &v).unwrap();
    }
    let o = ws.run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("resize"), "{}", stderr(&o));
    let cfg = ws.p("sweep.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("device = \"cpu\"", "device = \"cpu\"\nresize = \"bilinear\"");
    std::fs::write(&cfg, text).unwrap();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ws.results();
    assert_eq!(r["conventions"]["resize"], "bilinear");
    let c = r["cells"].as_array().unwrap().iter().find(|c| c["model"] == "deeplab_r50" && c["split"] == "test" && c["method"] == "max_logit").unwrap();
    assert!(c["auroc"].as_f64().unwrap() > 0.7, "{c}");
}

#[test]
fn channel_last_logits_with_layout_hwc_give_the_same_cells() {
    use bench::data::npy::write_npy_f32;
    let ws = Ws::new();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = ws.results();
    // rewrite every f32 model's logits channel-last
    for split in ["calibration", "val", "test", "test@lighting"] {
        let dir = ws.p(&format!("datasets/demo/{split}/logits/deeplab_r50"));
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let lg = bench::data::read_logits(&p).unwrap();
            let n = lg.h * lg.w;
            let mut v = vec![0f32; lg.c * n];
            for c in 0..lg.c {
                for q in 0..n {
                    v[q * lg.c + c] = lg.get(c, q) as f32;
                }
            }
            write_npy_f32(&p, &[lg.h as u64, lg.w as u64, lg.c as u64], &v).unwrap();
        }
    }
    let cfg = ws.p("sweep.toml");
    let text = std::fs::read_to_string(&cfg).unwrap()
        .replace("device = \"cpu\"", "device = \"cpu\"\nlayout = \"hwc\"")
        .replace("[[models]]\nid = \"segformer_b5\"\nname = \"SegFormer-B5\"\n", "");
    std::fs::write(&cfg, text).unwrap();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = ws.results();
    let pick = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        r["cells"].as_array().unwrap().iter().filter(|c| c["model"] == "deeplab_r50").cloned().collect()
    };
    assert_eq!(pick(&before), pick(&after));
    // channel-last logits are rearranged after the read: their digests are
    // still the files' own
    assert_inputs_hashed(&ws.root, "results/demo", &["deeplab_r50"]);
}

/// Every input `manifest.json` lists carries its file's own SHA-256, and
/// every logits file of `models` in the demo dataset is listed. The
/// logits' digests are taken from the bytes each read returned, beside the
/// scoring (`data::npy::PendingDigest`), not by reading the file again.
fn assert_inputs_hashed(root: &Path, out: &str, models: &[&str]) {
    use bench::data::checksum::sha256_file;
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join(out).join("manifest.json")).unwrap()).unwrap();
    let sums = m["inputs_sha256"].as_object().unwrap();
    let abs = |k: &str| if Path::new(k).is_absolute() { PathBuf::from(k) } else { root.join(k) };
    for (k, v) in sums {
        assert_eq!(v.as_str().unwrap(), sha256_file(&abs(k)).unwrap(), "{k}");
    }
    let listed: std::collections::BTreeSet<PathBuf> = sums.keys().map(|k| abs(k).canonicalize().unwrap()).collect();
    let mut logits = 0;
    for split in std::fs::read_dir(root.join("datasets/demo")).unwrap() {
        let dir = split.unwrap().path().join("logits");
        for model in models {
            for f in std::fs::read_dir(dir.join(model)).into_iter().flatten() {
                let p = f.unwrap().path().canonicalize().unwrap();
                assert!(listed.contains(&p), "{} missing from inputs_sha256", p.display());
                logits += 1;
            }
        }
    }
    assert!(logits >= 4 * models.len(), "{logits} logits files");
}

#[test]
fn manifest_lists_each_inputs_own_sha256() {
    let ws = Ws::new();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_inputs_hashed(&ws.root, "results/demo", &["deeplab_r50", "segformer_b5"]);
}

#[test]
fn npz_logits_with_npz_key_give_the_same_cells() {
    use bench::data::npz::write_npz;
    let ws = Ws::new();
    let cfg = ws.p("sweep.toml");
    let one_model = std::fs::read_to_string(&cfg).unwrap().replace("[[models]]\nid = \"segformer_b5\"\nname = \"SegFormer-B5\"\n", "");
    std::fs::write(&cfg, &one_model).unwrap();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = ws.results();
    // np.savez_compressed(f"{id}.npz", logits=..., feats=...) for every image
    for split in ["calibration", "val", "test", "test@lighting"] {
        let dir = ws.p(&format!("datasets/demo/{split}/logits/deeplab_r50"));
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let npy = std::fs::read(&p).unwrap();
            write_npz(&p.with_extension("npz"), &[("feats", b"not even an array".to_vec()), ("logits", npy)], true).unwrap();
            std::fs::remove_file(&p).unwrap();
        }
    }
    // two arrays and no key: one error line naming the file and the option
    let o = ws.run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.lines().filter(|l| l.starts_with("error:")).count() == 1 && e.contains(".npz") && e.contains("npz_key"), "{e}");
    std::fs::write(&cfg, one_model.replace("device = \"cpu\"", "device = \"cpu\"\nnpz_key = \"logits\"")).unwrap();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(before["cells"], ws.results()["cells"]);
}

/// Write `scores/<dir>/<stem>.npy` = the CPU max-logit map of `model`'s
/// logits, for every image of `split` (what an outside tool would dump).
fn dump_max_logit(ws: &Ws, split: &str, model: &str, dir: &str) {
    use bench::scores::{Method, ScorePlan, Scorer, cpu::CpuScorer};
    let plan = ScorePlan { methods: vec![Method::MaxLogit], msp_temperature: 1.0, energy_temperature: 1.0, calibration: None, sml_post: Default::default(), heat_post: Default::default(), params: Default::default() };
    let out = ws.p(&format!("datasets/demo/{split}/scores/{dir}"));
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(ws.p(&format!("datasets/demo/{split}/logits/{model}"))).unwrap() {
        let p = e.unwrap().path();
        let maps = CpuScorer.score(&bench::data::read_logits(&p).unwrap(), &plan).unwrap();
        bench::data::npy::write_npy_f32(&out.join(p.file_name().unwrap()), &[maps.h as u64, maps.w as u64], &maps.maps[0]).unwrap();
    }
}

#[test]
fn external_score_maps_equal_to_a_builtin_give_identical_cells() {
    let ws = Ws::new();
    for split in ["val", "test", "test@lighting"] {
        for m in ["deeplab_r50", "segformer_b5"] {
            dump_max_logit(&ws, split, m, &format!("copy_ml/{m}"));
        }
        dump_max_logit(&ws, split, "deeplab_r50", "shared_ml");
    }
    let cfg = ws.p("sweep.toml");
    let good = std::fs::read_to_string(&cfg).unwrap().replace("device = \"cpu\"", "device = \"cpu\"\nexternal = [\"copy_ml\", \"shared_ml\"]");
    std::fs::write(&cfg, &good).unwrap();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ws.results();
    let ids: Vec<&str> = r["methods"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["max_logit", "msp", "sml", "energy", "heat", "copy_ml", "shared_ml"], "external columns come after the built-in ones");
    assert!(r["methods"][0].get("external").is_none(), "built-in rows carry no `external` key");
    assert_eq!(r["methods"][5]["external"], "per_model");
    assert_eq!(r["methods"][6]["external"], "shared");
    // Everything but the method id must match: pixel, image-level, drift,
    // honest (val thresholds on test) and failure-mode rows.
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("method");
        v
    };
    let rows = |section: &str, model: &str, method: &str| -> Vec<serde_json::Value> {
        r[section].as_array().unwrap().iter().filter(|c| c["model"] == model && c["method"] == method).map(strip).collect()
    };
    for section in ["cells", "honest", "drift"] {
        for m in ["deeplab_r50", "segformer_b5"] {
            let a = rows(section, m, "max_logit");
            assert!(!a.is_empty(), "{section} {m}");
            assert_eq!(a, rows(section, m, "copy_ml"), "{section} {m}: per-model external map differs from the built-in score");
        }
        // shared maps: the deeplab maps in every row
        let a = rows(section, "deeplab_r50", "max_logit");
        let mut b = rows(section, "segformer_b5", "shared_ml");
        for x in b.iter_mut() {
            x["model"] = "deeplab_r50".into();
        }
        assert_eq!(a, b, "{section}: shared external maps differ from deeplab's max_logit");
    }
    let md = std::fs::read_to_string(ws.p("results/demo/tables.md")).unwrap();
    assert!(md.contains("copy_ml (precomputed)"), "{md}");
    // table re-rendered from results.json alone is the same
    let o = bench(&["table", "results/demo"], &ws.root);
    assert!(md.starts_with(&stdout(&o)), "bench table differs from tables.md");

    // hostile inputs: one error line naming the folder or file, results untouched
    let test_scores = |rel: &str| ws.p(&format!("datasets/demo/test/scores/{rel}"));
    std::fs::write(&cfg, good.replace("\"shared_ml\"]", "\"shared_ml\", \"nope\"]")).unwrap();
    expect_error(&ws, |_| {}, "scores/nope");
    std::fs::write(&cfg, &good).unwrap();
    let p = test_scores("copy_ml/segformer_b5/img_0003.npy");
    let orig = std::fs::read(&p).unwrap();
    expect_error(&ws, |_| std::fs::remove_file(&p).unwrap(), "img_0003.npy");
    expect_error(
        &ws,
        |_| {
            let mut v = vec![0.5f32; 96 * 128];
            v[200] = f32::INFINITY;
            bench::data::npy::write_npy_f32(&p, &[96, 128], &v).unwrap();
        },
        "img_0003.npy",
    );
    expect_error(&ws, |_| bench::data::npy::write_npy_f32(&p, &[48, 64], &vec![0.5f32; 48 * 64]).unwrap(), "img_0003.npy");
    let e = stderr(&ws.run(&[]));
    assert!(e.contains("48×64") && e.contains("resize"), "{e}");
    std::fs::write(&p, &orig).unwrap();
    let seg = test_scores("copy_ml/segformer_b5");
    std::fs::rename(&seg, ws.p("moved")).unwrap();
    expect_error(&ws, |_| {}, "copy_ml/segformer_b5");
    std::fs::rename(ws.p("moved"), &seg).unwrap();
    // a per-model folder in one split and shared maps in another
    std::fs::create_dir_all(test_scores("shared_ml/deeplab_r50")).unwrap();
    expect_error(&ws, |_| {}, "shared_ml");
    std::fs::remove_dir(test_scores("shared_ml/deeplab_r50")).unwrap();
    assert!(ws.run(&[]).status.success(), "restored dataset runs again");
}

/// Entries of `results/` whose names mark a temp or set-aside folder.
fn leftovers(ws: &Ws) -> Vec<String> {
    std::fs::read_dir(ws.p("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || n.contains(".old-"))
        .collect()
}

/// Spawn `bench run`, wait until `ready` (≤ 60 s), send SIGINT, and return
/// the exit code and stderr; None if the run ended before the signal.
#[cfg(unix)]
fn interrupt_run(ws: &Ws, env: &[(&str, &str)], ready: impl Fn() -> bool) -> Option<(Option<i32>, String)> {
    use std::process::Stdio;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench"));
    cmd.args(["run", "sweep.toml"]).current_dir(&ws.root).env("CI", "true").stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !ready() {
        assert!(t0.elapsed().as_secs() < 60, "run never reached the point to interrupt");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if child.try_wait().unwrap().is_some() {
        return None;
    }
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    Some((o.status.code(), stderr(&o)))
}

#[cfg(unix)]
#[test]
fn sigint_leaves_previous_results_and_no_temp_folder() {
    let ws = Ws::new();
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Make the previous results recognisable (a rerun would write the same bytes).
    let marker = ws.p("results/demo/results.json");
    let before = std::fs::read_to_string(&marker).unwrap().replacen("\"name\": \"demo\"", "\"name\": \"previous\"", 1);
    std::fs::write(&marker, &before).unwrap();

    // 1. while the results are being written (a test hook pauses after each file)
    let (code, e) = interrupt_run(&ws, &[("BENCH_TEST_WRITE_DELAY_MS", "300")], || !leftovers(&ws).is_empty()).expect("interrupted mid-write");
    assert_eq!(code, Some(130), "{e}");
    let errs: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errs.len(), 1, "{e}");
    assert!(errs[0].contains("interrupted"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), before, "previous results changed");
    assert_eq!(leftovers(&ws), Vec::<String>::new(), "temp folder left behind");

    // 2. while scoring (long before anything is written)
    let t0 = std::time::Instant::now();
    if let Some((code, e)) = interrupt_run(&ws, &[], || t0.elapsed().as_millis() > 150) {
        assert_eq!(code, Some(130), "{e}");
        assert_eq!(e.lines().filter(|l| l.starts_with("error:")).count(), 1, "{e}");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), before, "previous results changed");
        assert_eq!(leftovers(&ws), Vec::<String>::new());
    }
}

/// Item 11: with stderr not a terminal (a batch log) and not in CI, one
/// line per pass names the model, split and pass, with the real number of
/// images of that split (not images × passes); in CI nothing.
#[test]
fn progress_lines_in_batch_logs_count_real_images() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let o = bench(&["synth", "--out", "datasets/demo", "--splits", "calibration=3,val=5,test=7", "--height", "32", "--width", "40", "--drifted", "none"], root);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(root.join("sweep.toml"), CONFIG).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bench")).args(["run", "sweep.toml"]).current_dir(root).env_remove("CI").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with('[')).collect();
    for m in ["deeplab_r50", "segformer_b5"] {
        for (phase, n) in [("calibrate (calibration) pass 1/2", 3), ("calibrate (calibration) pass 2/2", 3), ("val pass 1/2", 5), ("val pass 2/2", 5), ("test pass 1/2", 7), ("test pass 2/2", 7)] {
            let want = format!("[{m}] {phase}: {n} images, ");
            assert!(lines.iter().any(|l| l.starts_with(&want) && l.ends_with(" s")), "missing {want:?} in\n{e}");
        }
    }
    assert_eq!(lines.len(), 12, "one line per pass:\n{e}");
    // CI: quiet
    let o = bench(&["run", "sweep.toml"], root);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains(" pass 1/2"), "{}", stderr(&o));
}

/// Item 16: the quick start leaves a clean git tree — every committed file
/// of results/demo is what `bench run configs/sweep.toml` writes (plots
/// included), and the one volatile file, manifest.json, is git-ignored.
#[test]
fn committed_demo_results_are_reproduced_byte_for_byte() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ignore = std::fs::read_to_string(repo.join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "/results/**/manifest.json"), "manifest.json must be git-ignored");
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("configs")).unwrap();
    std::fs::copy(repo.join("configs/sweep.toml"), t.path().join("configs/sweep.toml")).unwrap();
    // the committed results were made on the CPU (a machine without a hardware GPU)
    let o = bench(&["run", "configs/sweep.toml", "--device", "cpu"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let committed = repo.join("results/demo");
    let mut stack = vec![committed.clone()];
    let mut n = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(&committed).unwrap();
            if rel == Path::new("manifest.json") {
                continue;
            }
            let fresh = std::fs::read(t.path().join("results/demo").join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
            assert!(fresh == std::fs::read(&p).unwrap(), "{} differs from a fresh run (regenerate results/demo)", rel.display());
            n += 1;
        }
    }
    assert!(n > 30, "{n} files compared");
}
