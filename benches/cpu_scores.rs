//! CPU scorer throughput per method: the fast f32 block scorer
//! (`CpuScorer`) against the f64 reference (`ReferenceScorer`), 1 M pixels
//! (1024×1024), C = 13 and 19, f16 and f32 logits, one method per plan plus
//! `five` (max_logit msp energy sml heat, the default sweep). SML and HEAT
//! use a calibration fitted on the same kind of logits.
//!
//!     cargo bench --bench cpu_scores                 # everything
//!     cargo bench --bench cpu_scores -- fast/        # the fast scorer only
//!     cargo bench --bench cpu_scores -- 'fast/heat'  # one method
//!
//! `BENCH_CPU_SIMD=0|1|2` forces the portable / AVX2 / AVX-512 kernels.

mod common;
use anyhow::Result;
use bench::data::{LogitData, Logits, label};
use bench::scores::cpu::{CpuScorer, ReferenceScorer};
use bench::scores::{Calibration, Method, ScorePlan, Scorer};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use half::f16;
use std::hint::black_box;
use std::time::Duration;

const H: usize = 1024;
const W: usize = 1024;


fn logits(c: usize, h: usize, w: usize, half: bool, seed: u64) -> Logits {
    let v = common::logit_values(c, h * w, seed);
    let data = if half { LogitData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()) } else { LogitData::F32(v) };
    Logits { c, h, w, data }
}

fn calibration(c: usize) -> Calibration {
    let lg = logits(c, 128, 128, false, 7);
    let lab = vec![label::NORMAL; 128 * 128];
    let mut visit = |f: &mut dyn FnMut(&Logits, Option<&Logits>, &[u8]) -> Result<()>| -> Result<()> { f(&lg, None, &lab) };
    let mut cal = Calibration::fit("calibration", false, true, &mut visit).expect("fit");
    // kl_matching's templates too (every method in `Method::ALL` is benched)
    cal.kl = Some(bench::scores::kl::fit_visit("calibration", &mut visit, &mut cal.warnings).expect("kl fit"));
    cal
}

fn bench(cr: &mut Criterion) {
    let five = vec![Method::MaxLogit, Method::Msp, Method::Energy, Method::Sml, Method::Heat];
    for c in [13, 19] {
        let cal = calibration(c);
        for half in [true, false] {
            let lg = logits(c, H, W, half, c as u64);
            let tag = format!("c{c}/{}", lg.dtype());
            let mut plans: Vec<(String, Vec<Method>)> = Method::ALL.iter().map(|m| (m.id().to_string(), vec![*m])).collect();
            plans.push(("five".into(), five.clone()));
            for (name, methods) in &plans {
                let plan = ScorePlan {
                    methods: methods.clone(),
                    msp_temperature: 1.0,
                    energy_temperature: 1.0,
                    calibration: Some(cal.clone()),
                    sml_post: Default::default(),
                    heat_post: Default::default(), params: Default::default(),
                };
                for (dev, scorer) in [("fast", &mut CpuScorer as &mut dyn Scorer), ("reference", &mut ReferenceScorer as &mut dyn Scorer)] {
                    let mut g = cr.benchmark_group(format!("{dev}/{name}"));
                    g.throughput(Throughput::Elements((H * W) as u64));
                    g.sampling_mode(SamplingMode::Flat);
                    g.sample_size(10);
                    g.warm_up_time(Duration::from_millis(300));
                    g.measurement_time(Duration::from_secs(if dev == "fast" { 2 } else { 3 }));
                    g.bench_function(BenchmarkId::from_parameter(&tag), |b| b.iter(|| black_box(scorer.score(black_box(&lg), &plan).expect("score"))));
                    g.finish();
                }
            }
        }
    }
}

criterion_group! {
    name = benches;
    // no plots: plotters needs system fonts some machines lack
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
