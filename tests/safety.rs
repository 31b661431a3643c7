//! Issue 14, items 1–10: a user's folders survive any config, signals never
//! leave a results folder missing, hostile sizes are errors (not aborts),
//! easy label/layout mistakes are named, and problems are found before any
//! scoring.

mod common;
use common::*;
use std::path::Path;

fn tree(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir).into_iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect();
    v.sort();
    v
}
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn item1_output_never_replaces_a_foreign_or_dataset_folder() {
    let s = Small::new();
    // name = "thesis", output = "victim": a user's folder with a chapter in it
    std::fs::create_dir_all(s.p("victim/thesis")).unwrap();
    std::fs::write(s.p("victim/thesis/chapter1.tex"), "my thesis").unwrap();
    s.config("output = \"victim\"");
    std::fs::write(s.p("c.toml"), std::fs::read_to_string(s.p("c.toml")).unwrap().replace("name = \"small\"", "name = \"thesis\"")).unwrap();
    let o = s.run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = error_lines(&o);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("`output`/`name`") && e[0].contains("chapter1.tex"), "{e:?}");
    assert_eq!(std::fs::read_to_string(s.p("victim/thesis/chapter1.tex")).unwrap(), "my thesis");

    // name = "labels", output = "ds/test": the dataset's own labels
    let labels_before = tree(&s.p("ds/test/labels"));
    std::fs::write(s.p("c.toml"), SMALL_CONFIG.replace("name = \"small\"", "name = \"labels\"\noutput = \"ds/test\"")).unwrap();
    let o = s.run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(error_lines(&o)[0].contains("inside the folder `dataset` reads"), "{}", stderr(&o));
    assert_eq!(tree(&s.p("ds/test/labels")), labels_before);

    // an output that would hold the dataset (output = ".", name = "ds")
    std::fs::write(s.p("c.toml"), SMALL_CONFIG.replace("name = \"small\"", "name = \"ds\"\noutput = \".\"")).unwrap();
    let o = s.run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(s.p("ds/test/labels").is_dir());

    // bench's own folder is replaced, but not once a user's file is added to it
    s.config("");
    assert!(s.run(&[]).status.success());
    assert!(s.run(&[]).status.success(), "a rerun replaces bench's own folder");
    std::fs::write(s.p("results/small/notes.txt"), "mine").unwrap();
    let o = s.run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_lines(&o)[0].contains("notes.txt"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(s.p("results/small/notes.txt")).unwrap(), "mine");
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || n.contains(".old-"))
        .collect()
}

#[cfg(unix)]
fn signal_mid_write(s: &Small, sig: i32) -> (Option<i32>, String) {
    use std::process::Stdio;
    let child = cmd(&["run", "c.toml"], &s.root).env("BENCH_TEST_WRITE_DELAY_MS", "300").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while leftovers(&s.p("results")).is_empty() {
        assert!(t0.elapsed().as_secs() < 60, "never started writing");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let o = child.wait_with_output().unwrap();
    (o.status.code(), stderr(&o))
}

#[cfg(unix)]
#[test]
fn item2_sigterm_and_sighup_mid_write_leave_previous_results_and_no_leftovers() {
    let s = Small::new();
    assert!(s.run(&[]).status.success());
    let marker = s.p("results/small/results.json");
    let before = std::fs::read_to_string(&marker).unwrap().replacen("\"name\": \"small\"", "\"name\": \"previous\"", 1);
    std::fs::write(&marker, &before).unwrap();
    for (sig, code, name) in [(libc::SIGTERM, 143, "SIGTERM"), (libc::SIGHUP, 129, "SIGHUP")] {
        let (c, e) = signal_mid_write(&s, sig);
        assert_eq!(c, Some(code), "{e}");
        let errs: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(errs.len() == 1 && errs[0].contains(name), "{e}");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), before, "previous results changed");
        assert_eq!(leftovers(&s.p("results")), Vec::<String>::new(), "leftovers after {name}");
    }
}

#[test]
fn item2_a_run_restores_results_stranded_by_a_kill_and_removes_stale_temp_folders() {
    let s = Small::new();
    assert!(s.run(&[]).status.success());
    let good = std::fs::read(s.p("results/small/results.json")).unwrap();
    // what SIGKILL between "old results aside" and "new results in" left
    // (pid 2^22 + 1 is above Linux's largest pid, so never alive)
    std::fs::rename(s.p("results/small"), s.p("results/.small.old-4194305")).unwrap();
    std::fs::create_dir_all(s.p("results/.small.tmp-4194305-abc/curves")).unwrap();
    let o = s.run(&["--check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("restored"), "{}", stderr(&o));
    assert_eq!(std::fs::read(s.p("results/small/results.json")).unwrap(), good);
    assert_eq!(leftovers(&s.p("results")), Vec::<String>::new());
}

/// An `.npz` of a few hundred bytes whose member claims ~4 GB.
fn lying_npz(path: &Path) {
    let mut npy = vec![];
    let t = tempfile::tempdir().unwrap();
    bench::data::npy::write_npy_f32(&t.path().join("a.npy"), &[4, 4], &[0.5; 16]).unwrap();
    npy.extend(std::fs::read(t.path().join("a.npy")).unwrap());
    bench::data::npz::write_npz(path, &[("arr_0", npy)], false).unwrap();
    let mut b = std::fs::read(path).unwrap();
    let claim = 0xF000_0000u32.to_le_bytes();
    let local = b.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
    b[local + 22..local + 26].copy_from_slice(&claim);
    let central = b.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    b[central + 24..central + 28].copy_from_slice(&claim);
    std::fs::write(path, &b).unwrap();
}

#[cfg(unix)]
#[test]
fn item3_an_npz_claiming_gigabytes_is_an_error_under_an_address_space_limit() {
    let t = tempfile::tempdir().unwrap();
    lying_npz(&t.path().join("x.npz"));
    assert!(std::fs::metadata(t.path().join("x.npz")).unwrap().len() < 1000);
    bench::data::npy::write_npy_u8(&t.path().join("x_mask.npy"), &[4, 4], &[0; 16]).unwrap();
    std::fs::rename(t.path().join("x_mask.npy"), t.path().join("m.npy")).unwrap();
    let exe = env!("CARGO_BIN_EXE_bench");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v 2000000; exec {exe} eval --scores x.npz --labels m.npy"))
        .current_dir(t.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = error_lines(&o);
    assert!(e.len() == 1 && e[0].contains("x.npz[arr_0]") && e[0].contains("corrupt"), "{e:?}");
}

#[test]
fn item4_5_numeric_settings_out_of_range_are_config_errors() {
    let s = Small::new();
    for (extra, key) in [
        ("[metrics]\nbootstrap = 4294967295", "metrics.bootstrap"),
        ("[metrics]\nimage_topk = 4294967295", "metrics.image_topk"),
        ("[method.msp]\ntemperature = 1e300", "method.msp.temperature"),
        ("[method.energy]\ntemperature = 1e-300", "method.energy.temperature"),
    ] {
        std::fs::write(s.p("c.toml"), format!("{SMALL_CONFIG}\n{extra}\n")).unwrap();
        let o = s.run(&[]);
        assert_eq!(o.status.code(), Some(2), "{extra}: {}", stderr(&o));
        let e = error_lines(&o);
        assert!(e.len() == 1 && e[0].contains(key) && e[0].len() < 200, "{extra}: {e:?}");
        assert!(!s.p("results/small").exists());
    }
    // ODIN's temperature is fine
    std::fs::write(s.p("c.toml"), format!("{SMALL_CONFIG}\n[method.msp]\ntemperature = 1000.0\n")).unwrap();
    assert!(s.run(&[]).status.success());
}

#[test]
fn item6_a_duplicated_cell_is_refused_by_diff_table_and_check() {
    let s = Small::new();
    assert!(s.run(&[]).status.success());
    let p = s.p("results/small/results.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let mut dup = v["cells"][0].clone();
    dup["auroc"] = serde_json::json!(0.1);
    v["cells"].as_array_mut().unwrap().push(dup);
    std::fs::create_dir_all(s.p("b")).unwrap();
    std::fs::write(s.p("b/results.json"), serde_json::to_string_pretty(&v).unwrap()).unwrap();
    for args in [vec!["diff", "results/small", "b"], vec!["diff", "b", "results/small"], vec!["table", "b"]] {
        let o = bench(&args, &s.root);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stdout(&o));
        assert!(error_lines(&o)[0].contains("appears twice"), "{}", stderr(&o));
    }
    std::fs::copy(s.p("b/results.json"), &p).unwrap();
    let o = s.run(&["--check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(error_lines(&o)[0].contains("appears twice"), "{}", stderr(&o));
}

/// Rewrite every mask of `ds` as StreetHazards does: classes 0–12 and the
/// anomaly as 13 (no void).
fn streethazards_masks(s: &Small) {
    for split in ["calibration", "val", "test"] {
        for e in std::fs::read_dir(s.p(&format!("ds/{split}/labels"))).unwrap() {
            let p = e.unwrap().path();
            let m = bench::data::read_mask(&p).unwrap();
            let v: Vec<u8> = m.values.iter().enumerate().map(|(i, &x)| if x == 1 { 13 } else { (i % 13) as u8 }).collect();
            std::fs::remove_file(&p).unwrap();
            bench::data::npy::write_npy_u8(&p.with_extension("npy"), &[m.h as u64, m.w as u64], &v).unwrap();
        }
    }
}

#[test]
fn item7_a_forgotten_preset_is_warned_about_and_the_fitting_preset_named() {
    let s = Small::new();
    streethazards_masks(&s);
    let o = s.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.p("results/small/results.json")).unwrap()).unwrap();
    let w: Vec<&str> = r["warnings"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert!(w.iter().any(|x| x.contains("[13]") && x.contains("preset = \"streethazards\"")), "{w:?}");
    assert!(stderr(&o).contains("preset = \"streethazards\""), "{}", stderr(&o));
    s.config("preset = \"streethazards\"");
    let o = s.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning: split"), "{}", stderr(&o));
}

fn to_channel_last(s: &Small) {
    for split in ["calibration", "val", "test"] {
        for e in std::fs::read_dir(s.p(&format!("ds/{split}/logits/deeplab_r50"))).unwrap() {
            let p = e.unwrap().path();
            let lg = bench::data::read_logits(&p).unwrap();
            let mut hwc = vec![0f32; lg.c * lg.h * lg.w];
            for c in 0..lg.c {
                for px in 0..lg.h * lg.w {
                    hwc[px * lg.c + c] = lg.get(c, px) as f32;
                }
            }
            bench::data::npy::write_npy_f32(&p, &[lg.h as u64, lg.w as u64, lg.c as u64], &hwc).unwrap();
        }
    }
}

#[test]
fn item8_channel_last_logits_are_named_as_such() {
    let s = Small::new();
    to_channel_last(&s);
    let o = s.run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("layout = \"hwc\""), "{}", stderr(&o));
    assert!(!stderr(&o).contains("set `resize"), "the hint must not send the user to resize: {}", stderr(&o));
    s.config("resize = \"nearest\"");
    let o = s.run(&[]);
    assert!(stderr(&o).contains("warning:") && stderr(&o).contains("implausible") && stderr(&o).contains("layout = \"hwc\""), "{}", stderr(&o));
    s.config("layout = \"hwc\"");
    assert!(s.run(&[]).status.success());
}

#[test]
fn item9_every_input_problem_is_reported_at_once_before_any_scoring() {
    let s = Small::new();
    let dir = s.p("ds/test/logits/deeplab_r50");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    // float64 as the last image, truncated first, missing one in val
    let last = files.last().unwrap();
    let lg = bench::data::read_logits(last).unwrap();
    let body: Vec<u8> = (0..lg.c * lg.h * lg.w).flat_map(|_| 0.5f64.to_le_bytes()).collect();
    let head = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, {}, {}), }}", lg.c, lg.h, lg.w);
    let mut f = b"\x93NUMPY\x01\x00".to_vec();
    let pad = 64 - (10 + head.len() + 1) % 64;
    let hl = head.len() + pad + 1;
    f.extend((hl as u16).to_le_bytes());
    f.extend(head.bytes());
    f.extend(std::iter::repeat_n(b' ', pad));
    f.push(b'\n');
    f.extend(body);
    std::fs::write(last, f).unwrap();
    let b = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &b[..b.len() - 7]).unwrap();
    let v: Vec<_> = std::fs::read_dir(s.p("ds/val/logits/deeplab_r50")).unwrap().map(|e| e.unwrap().path()).collect();
    std::fs::remove_file(v.iter().min().unwrap()).unwrap();
    let t0 = std::time::Instant::now();
    let o = s.run(&[]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(error_lines(&o).len(), 1, "{e}");
    assert!(e.contains("of 3 input problems"), "{e}");
    assert!(e.contains("float64") && e.contains("truncated") && e.contains("missing logits"), "{e}");
    assert!(!s.p("results/small").exists());
    // nothing was scored: far below the time of a sweep (generous bound, not a benchmark)
    assert!(t0.elapsed().as_secs() < 20);
}

#[test]
fn item10_a_missing_dataset_path_names_the_key_and_where_it_was_looked_for() {
    let s = Small::new();
    std::fs::create_dir_all(s.p("configs")).unwrap();
    // a config in a subfolder written relative to its own folder
    std::fs::write(s.p("configs/c.toml"), SMALL_CONFIG.replace("dataset = \"ds\"", "dataset = \"data\"")).unwrap();
    std::fs::rename(s.p("ds"), s.p("configs/data")).unwrap();
    let o = bench(&["run", "configs/c.toml"], &s.root);
    assert_eq!(o.status.code(), Some(2));
    let e = error_lines(&o);
    let abs = s.root.canonicalize().unwrap();
    assert!(e.len() == 1 && e[0].contains("`dataset`") && e[0].contains(&abs.join("data").display().to_string()), "{e:?}");
    assert!(e[0].contains("current directory") && e[0].contains("relative to the config's folder"), "{e:?}");
}
