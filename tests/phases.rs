//! Issue 16 item 5: where a run's time goes is recorded per model and
//! phase in manifest.json, and `bench run -v` prints it.

mod common;
use common::*;

#[test]
fn manifest_records_phase_timings_and_verbose_prints_them() {
    let ws = Small::new();
    ws.config(r#"methods = ["max_logit", "msp", "sml"]"#.trim());
    // the small config already lists methods: replace the line instead
    let cfg = std::fs::read_to_string(ws.p("c.toml")).unwrap();
    let cfg: String = cfg.lines().filter(|l| *l != r#"methods = ["max_logit", "msp"]"#).collect::<Vec<_>>().join("\n");
    std::fs::write(ws.p("c.toml"), cfg).unwrap();
    let o = ws.run(&["-v"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let line = err.lines().find(|l| l.starts_with("[deeplab_r50] calibrate ")).unwrap_or_else(|| panic!("no phase line in:\n{err}"));
    for p in ["read", "score", "rank", "bootstrap", "conventions"] {
        assert!(line.contains(&format!(" {p} ")), "{p} missing in {line:?}");
    }
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ws.p("results/small/manifest.json")).unwrap()).unwrap();
    let t = &m["timings_s"];
    let ph = &t["phases"]["deeplab_r50"];
    let mut sum = 0.0;
    for p in ["calibrate", "read", "score", "rank", "bootstrap", "conventions"] {
        let v = ph[p].as_f64().unwrap_or_else(|| panic!("phase {p} missing in {ph}"));
        assert!(v >= 0.0, "{p} = {v}");
        sum += v;
    }
    // SML needs a fit and the small dataset has a calibration split
    assert!(ph["calibrate"].as_f64().unwrap() > 0.0, "{ph}");
    assert!(ph["score"].as_f64().unwrap() > 0.0, "{ph}");
    // the phases are parts of the model's time, never more
    let model = t["per_model"]["deeplab_r50"].as_f64().unwrap();
    assert!(sum <= model + 1e-3, "phases {sum} s exceed the model's {model} s");
    assert!(t["report"].as_f64().unwrap() >= 0.0);
    // without -v the line is not printed
    let o = ws.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("· rank "), "{}", stderr(&o));
}

/// Issue 16 item 4: with a GPU scorer, pass 2's exact ranking runs on the
/// device (its seconds are recorded as `rank_device`, part of `rank`); on
/// the CPU it is 0. The metrics are the same either way (`tests/cli.rs`
/// `gpu_sweep_matches_cpu_sweep`).
#[test]
fn gpu_runs_rank_on_the_device() {
    let ws = Small::new();
    let phases = |args: &[&str]| -> Option<serde_json::Value> {
        let o = ws.run(args);
        if !o.status.success() {
            let e = stderr(&o);
            assert!(!gpu_required() && e.contains("no GPU adapter found"), "the run failed: {e}");
            eprintln!("SKIP: no GPU adapter ({})", e.trim());
            return None;
        }
        assert!(!stderr(&o).contains("ranking on the CPU"), "{}", stderr(&o));
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ws.p("results/small/manifest.json")).unwrap()).unwrap();
        Some(m["timings_s"]["phases"]["deeplab_r50"].clone())
    };
    let cpu = phases(&["--device", "cpu"]).unwrap();
    assert_eq!(cpu["rank_device"].as_f64(), Some(0.0), "{cpu}");
    let Some(gpu) = phases(&["--device", "gpu"]) else { return };
    let (dev, rank) = (gpu["rank_device"].as_f64().unwrap(), gpu["rank"].as_f64().unwrap());
    assert!(dev > 0.0 && dev <= rank + 1e-9, "rank_device {dev} s of rank {rank} s: {gpu}");
}
