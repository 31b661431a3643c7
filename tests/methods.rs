//! margin, gen, rba against their reference implementations
//! (tests/fixtures/methods.json from scripts/gen_method_fixtures.py): the
//! f64 functions, and the CPU scorer (f32 out) through a plan.

use bench::scores::{LogitData, Logits, Method, ScorePlan, Scorer, cpu, cpu::CpuScorer};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/methods.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn new_methods_match_their_references() {
    let mut n = 0;
    for case in cases() {
        let (c, np) = (case["c"].as_u64().unwrap() as usize, case["n"].as_u64().unwrap() as usize);
        let z = f64s(&case["logits"]);
        let lg = Logits { c, h: 1, w: np, data: LogitData::F32(z.iter().map(|&x| x as f32).collect()) };
        let plan = ScorePlan {
            methods: vec![Method::Margin, Method::Gen, Method::Rba],
            msp_temperature: 1.0,
            energy_temperature: 1.0,
            calibration: None,
            sml_post: Default::default(),
            heat_post: Default::default(), params: Default::default(),
        };
        let maps = CpuScorer.score(&lg, &plan).unwrap();
        let mut px = vec![0f64; c];
        for (k, (key, f)) in [("margin", cpu::margin as fn(&[f64]) -> f64), ("gen", cpu::gen_entropy), ("rba", cpu::rba)].into_iter().enumerate() {
            let want = f64s(&case[key]);
            for p in 0..np {
                lg.pixel(p, &mut px);
                let got = f(&px);
                let w = want[p];
                assert!((got - w).abs() <= 1e-9 * w.abs().max(1.0), "{} {key} pixel {p}: {got} vs reference {w}", case["name"]);
                let g32 = maps.maps[k][p] as f64;
                assert!((g32 - w).abs() <= 1e-6 * w.abs().max(1.0), "{} {key} (CpuScorer, f32) pixel {p}: {g32} vs {w}", case["name"]);
                n += 1;
            }
        }
    }
    assert!(n > 400);
}

/// Non-default `[method.gen]` (γ, M) and `[method.margin] on = "probs"`
/// against the same references: the f64 functions and the fast CPU scorer.
#[test]
fn parameters_match_their_references() {
    use bench::scores::params::{GenParams, MarginOn, MarginParams, MethodParams};
    let mut n = 0;
    for case in cases() {
        let (c, np) = (case["c"].as_u64().unwrap() as usize, case["n"].as_u64().unwrap() as usize);
        let z = f64s(&case["logits"]);
        let lg = Logits { c, h: 1, w: np, data: LogitData::F32(z.iter().map(|&x| x as f32).collect()) };
        let mut variants: Vec<(MethodParams, Method, Vec<f64>)> = vec![];
        let probs = MarginParams { on: MarginOn::Probs };
        variants.push((MethodParams { margin: probs, ..Default::default() }, Method::Margin, f64s(&case["margin_probs"])));
        for g in case["gen_params"].as_array().unwrap() {
            let gp = GenParams { gamma: g["gamma"].as_f64().unwrap(), top_m: g["top_m"].as_u64().map(|m| m as usize) };
            variants.push((MethodParams { gen_entropy: gp, ..Default::default() }, Method::Gen, f64s(&g["scores"])));
        }
        for (params, m, want) in variants {
            let plan = ScorePlan { methods: vec![m], msp_temperature: 1.0, energy_temperature: 1.0, calibration: None, sml_post: Default::default(), heat_post: Default::default(), params };
            let maps = CpuScorer.score(&lg, &plan).unwrap();
            let mut px = vec![0f64; c];
            for p in 0..np {
                lg.pixel(p, &mut px);
                let got = match m {
                    Method::Margin => cpu::margin_with(&px, params.margin.on),
                    _ => cpu::gen_entropy_with(&px, &params.gen_entropy),
                };
                let w = want[p];
                assert!((got - w).abs() <= 1e-9 * w.abs().max(1.0), "{} {m:?} {params:?} pixel {p}: {got} vs reference {w}", case["name"]);
                let g32 = maps.maps[0][p] as f64;
                assert!((g32 - w).abs() <= 1e-6 * w.abs().max(1.0), "{} {m:?} {params:?} (CpuScorer) pixel {p}: {g32} vs {w}", case["name"]);
                n += 1;
            }
        }
    }
    assert!(n > 700);
}

#[test]
fn known_values() {
    // tied maximum: margin 0; one class: margin 0, gen 0
    assert_eq!(cpu::margin(&[1.0, 3.0, 3.0]), 0.0);
    assert_eq!(cpu::margin(&[2.0]), 0.0);
    assert_eq!(cpu::gen_entropy(&[2.0]), 0.0);
    assert_eq!(cpu::margin(&[1.0, 4.0, 2.5]), -1.5);
    // uniform over C: C · (1/C)^γ (1 − 1/C)^γ
    let g = cpu::gen_entropy(&[0.0; 4]);
    assert!((g - 4.0 * (0.25f64 * 0.75).powf(0.1)).abs() < 1e-12, "{g}");
    // a very confident pixel keeps its (tiny but nonzero) predicted-class term
    let g = cpu::gen_entropy(&[0.0, -60.0]);
    assert!(g > 2.0 * (-6.0f64).exp() * 0.99, "{g}");
    assert_eq!(cpu::rba(&[0.0, 0.0]), 0.0);
    assert!((cpu::rba(&[1.0, -2.0]) - (-(1f64.tanh() + (-2f64).tanh()))).abs() < 1e-15);
    assert_eq!(Method::parse("kl_matching").unwrap(), Method::KlMatching);
    for m in [Method::Margin, Method::Gen, Method::Rba] {
        assert_eq!(Method::parse(m.id()).unwrap(), m);
        assert!(!m.needs_calibration());
    }
}
