//! Throughput of the device ranking (`scores::gpu::rank`): pass 2 over
//! device-resident scores and labels (uploaded once), counters flushed to
//! the host at the end of every iteration, on the criterion bench's data
//! shapes (4 M pixels, 1 % / 10 % positives, continuous and 256 tied
//! values). Mpixel/s = `thrpt` in Melem/s.
//!
//!     cargo bench --bench gpu_rank
//!
//! Without a GPU adapter it prints a notice and measures nothing. On
//! lavapipe (Mesa's software Vulkan) the shader runs on the CPU cores: those
//! numbers say nothing about a real GPU.

mod common;
use common::data;
use bench::metrics::engine::PositiveCollector;
use bench::scores::gpu::GpuContext;
use bench::scores::gpu::rank::{RankPass, upload};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::time::Duration;


fn gpu_rank(c: &mut Criterion) {
    let ctx = match GpuContext::new(true) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gpu_rank: no GPU adapter ({e:#}); nothing measured");
            return;
        }
    };
    eprintln!("gpu_rank on {}", ctx.describe());
    let pass = RankPass::new(&ctx).unwrap();
    let mut g = c.benchmark_group("gpu_rank");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let n = 1usize << 22;
    for pos in [0.01, 0.10] {
        for tied in [false, true] {
            let (scores, labels) = data(n, pos, tied);
            let mut pc = PositiveCollector::new();
            pc.add(&scores, &labels, None);
            let ranker = pc.finish();
            let (sb, lb) = upload(&ctx, &scores, &labels);
            let param = format!("4M/{}pct/{}", (pos * 100.0) as u32, if tied { "tied256" } else { "continuous" });
            g.throughput(Throughput::Elements(n as u64));
            let mut gr = pass.ranker(&ctx, ranker.table()).unwrap();
            g.bench_function(BenchmarkId::new("device_rank+flush", &param), |b| {
                b.iter(|| {
                    gr.add_buffers(&ctx, &sb, 0, &lb, 0, n as u64).unwrap();
                    gr.flush(&ctx).unwrap();
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, gpu_rank);
criterion_main!(benches);
