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
