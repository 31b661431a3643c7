//! Score throughput: the fused WGSL pass (`GpuScorer`, end to end: pack +
//! upload + dispatch + read-back) against the fast CPU scorer (`CpuScorer`;
//! per-method CPU figures and the f64 reference: `benches/cpu_scores.rs`),
//! C = 19 (Cityscapes), f16 and f32 logits, 256×512 and 1024×2048 images,
//! all five methods and the four calibration-free-or-cheap ones (no HEAT).
//! `copy/` is a plain device-memory copy (`copy_buffer_to_buffer`) of the
//! same byte size as the logits: the adapter's bandwidth floor.
//!
//!     cargo bench --bench scores                  # everything
//!     cargo bench --bench scores -- gpu/          # one group
//!
//! Runs on whatever adapter wgpu finds (lavapipe on a machine without a
//! GPU); the GPU groups are skipped with a notice when there is none.

mod common;
use anyhow::Result;
use bench::data::{LogitData, Logits, label};
use bench::scores::cpu::CpuScorer;
use bench::scores::gpu::GpuScorer;
use bench::scores::{Calibration, Method, ScorePlan, Scorer};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use half::f16;
use std::hint::black_box;
use std::time::Duration;

const C: usize = 19;
const SIZES: [(usize, usize); 2] = [(256, 512), (1024, 2048)];


fn logits(h: usize, w: usize, half: bool) -> Logits {
    let v = common::logit_values(C, h * w, (h * w) as u64);
    let data = if half {
        LogitData::F16(v.iter().map(|&x| f16::from_f32(x)).collect())
    } else {
        LogitData::F32(v)
    };
    Logits { c: C, h, w, data }
}

fn calibration() -> Calibration {
    let (h, w) = (128, 128);
    let lg = Logits {
        c: C,
        h,
        w,
        data: LogitData::F32(common::logit_values(C, h * w, 7)),
    };
    let lab = vec![label::NORMAL; h * w];
    let mut visit = |f: &mut dyn FnMut(&Logits, Option<&Logits>, &[u8]) -> Result<()>| -> Result<()> { f(&lg, None, &lab) };
    Calibration::fit("calibration", false, true, &mut visit).expect("fit")
}

fn plans() -> Vec<(&'static str, ScorePlan)> {
    let cal = calibration();
    let p = |methods: &[Method]| ScorePlan {
        methods: methods.to_vec(),
        msp_temperature: 1.0,
        energy_temperature: 1.0,
        calibration: Some(cal.clone()),
        sml_post: Default::default(),
        heat_post: Default::default(), params: Default::default(),
    };
    vec![
        (
            "all5",
            p(&[Method::MaxLogit, Method::Msp, Method::Sml, Method::Energy, Method::Heat]),
        ),
        (
            "no_heat",
            p(&[Method::MaxLogit, Method::Msp, Method::Sml, Method::Energy]),
        ),
    ]
}

fn bench_scores(cr: &mut Criterion) {
    let plans = plans();
    let mut gpu = match GpuScorer::new(true) {
        Ok(g) => {
            eprintln!("GPU adapter: {}", g.device());
            Some(g)
        }
        Err(e) => {
            eprintln!("no GPU adapter ({e:#}): GPU benches skipped");
            None
        }
    };
    let mut cpu = CpuScorer;
    for &(h, w) in &SIZES {
        let big = h * w > 1 << 20;
        for half in [true, false] {
            let lg = logits(h, w, half);
            let tag = format!("{}x{}/{}", h, w, lg.dtype());
            for (name, plan) in &plans {
                for (dev, scorer) in [
                    ("gpu", gpu.as_mut().map(|g| g as &mut dyn Scorer)),
                    ("cpu", Some(&mut cpu as &mut dyn Scorer)),
                ] {
                    let Some(scorer) = scorer else { continue };
                    let mut g = cr.benchmark_group(format!("{dev}/{name}"));
                    g.throughput(Throughput::Elements((h * w) as u64));
                    g.sampling_mode(SamplingMode::Flat);
                    g.sample_size(10);
                    g.warm_up_time(Duration::from_secs(1));
                    g.measurement_time(Duration::from_secs(if big { 10 } else { 3 }));
                    g.bench_function(BenchmarkId::from_parameter(&tag), |b| {
                        b.iter(|| black_box(scorer.score(black_box(&lg), plan).expect("score")))
                    });
                    g.finish();
                }
            }
        }
    }

    // Device bandwidth floor: copy the logits' byte size device → device.
    if let Some(g) = &gpu {
        let ctx = g.context();
        let (dev, queue) = (ctx.device(), ctx.queue());
        let mut grp = cr.benchmark_group("copy");
        grp.sample_size(10);
        grp.sampling_mode(SamplingMode::Flat);
        for &(h, w) in &SIZES {
            for (dtype, eb) in [("float16", 2u64), ("float32", 4)] {
                let bytes = (C * h * w) as u64 * eb;
                let mk = |usage| {
                    dev.create_buffer(&wgpu::BufferDescriptor {
                        label: None,
                        size: bytes,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                let src = mk(wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST);
                let dst = mk(wgpu::BufferUsages::COPY_DST);
                queue.write_buffer(&src, 0, &vec![1u8; bytes as usize]);
                grp.throughput(Throughput::Bytes(bytes));
                grp.bench_function(BenchmarkId::from_parameter(format!("{h}x{w}/{dtype}")), |b| {
                    b.iter(|| {
                        let mut enc = dev.create_command_encoder(&Default::default());
                        enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
                        let idx = queue.submit([enc.finish()]);
                        dev.poll(wgpu::PollType::Wait {
                            submission_index: Some(idx),
                            timeout: None,
                        })
                        .expect("poll");
                    })
                });
            }
        }
        grp.finish();
    }
}

criterion_group!(benches, bench_scores);
criterion_main!(benches);
