//! Input throughput: decoding a Cityscapes-sized logits file (19×1024×2048
//! float32, ≈159 MiB) with a fresh and a reused buffer against
//! `std::fs::read` of the same bytes, and `bench synth` generating
//! StreetHazards-like images (512×512, 13 classes, float16).
//!
//!     cargo bench --bench io
//!
//! (Were `#[ignore]` timing tests in tests/data_inputs.rs.)

use bench::data::npy::{read_logits, read_logits_into, write_npy_f32};
use bench::synth::{SynthModel, SynthSpec, generate};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

fn decode(c: &mut Criterion) {
    let d = tempfile::tempdir().unwrap();
    let (k, h, w) = (19usize, 1024usize, 2048usize);
    let v: Vec<f32> = (0..k * h * w).map(|i| (i % 1000) as f32 * 0.01).collect();
    let p = d.path().join("big.npy");
    write_npy_f32(&p, &[k as u64, h as u64, w as u64], &v).unwrap();
    let mut g = c.benchmark_group("decode_19x1024x2048_f32");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes((k * h * w * 4) as u64));
    g.bench_function("read_logits", |b| b.iter(|| black_box(read_logits(&p).unwrap())));
    let mut buf = read_logits(&p).unwrap();
    g.bench_function("read_logits_into (reused buffer)", |b| b.iter(|| read_logits_into(&p, None, &mut buf).unwrap()));
    g.bench_function("std::fs::read (baseline)", |b| b.iter(|| black_box(std::fs::read(&p).unwrap())));
    g.finish();
}

fn synth(c: &mut Criterion) {
    let n = 8;
    let spec = SynthSpec {
        seed: 1,
        classes: 13,
        height: 512,
        width: 512,
        splits: vec![("test".into(), n)],
        models: vec![SynthModel { id: "m".into(), f16: true, quality: 0.8 }],
        anomaly_types: 3,
        drifted: vec![],
        // the logit/mask write speed, as measured before photos existed
        photos: false,
    };
    let mut g = c.benchmark_group("synth_512x512x13_f16");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("8 images", |b| {
        b.iter(|| {
            let d = tempfile::tempdir().unwrap();
            generate(&d.path().join("s"), &spec).unwrap();
        })
    });
    g.bench_function("demo", |b| {
        b.iter(|| {
            let d = tempfile::tempdir().unwrap();
            generate(&d.path().join("demo"), &SynthSpec::demo()).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, decode, synth);
criterion_main!(benches);
