//! Exact-metric throughput: `counts_of` + `summary`, and the two streaming
//! passes separately (PositiveCollector = pass 1 incl. the sort of the
//! positives, Ranker = pass 2), at 1 M and 16 M pixels, 1 % and 10 %
//! positives, continuous and heavily tied (256 distinct values) scores.
//!
//!     cargo bench --bench metrics                 # everything (a few minutes on 2 cores)
//!     cargo bench --bench metrics -- 1M/          # one size
//!
//! Flat sampling with 10 samples keeps the 16 M cases to ~10 iterations each.

use bench::metrics::Fpr95Rule;
use bench::metrics::engine::{PositiveCollector, counts_of};
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

mod common;
use common::data;

fn metrics(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (n, size) in [(1usize << 20, "1M"), (1usize << 24, "16M")] {
        for pos in [0.01, 0.10] {
            for tied in [false, true] {
                let (scores, labels) = data(n, pos, tied);
                let param = format!(
                    "{size}/{}pct/{}",
                    (pos * 100.0) as u32,
                    if tied { "tied256" } else { "continuous" }
                );
                g.throughput(Throughput::Elements(n as u64));
                g.bench_function(BenchmarkId::new("counts_of+summary", &param), |b| {
                    b.iter(|| {
                        let c = counts_of(black_box(&scores), black_box(&labels));
                        black_box(c.summary(Fpr95Rule::First))
                    })
                });
                g.bench_function(BenchmarkId::new("pass1_collect", &param), |b| {
                    b.iter(|| {
                        let mut pc = PositiveCollector::new();
                        pc.add(black_box(&scores), black_box(&labels), None);
                        black_box(pc.finish())
                    })
                });
                let mut pc = PositiveCollector::new();
                pc.add(&scores, &labels, None);
                let ranker = pc.finish();
                g.bench_function(BenchmarkId::new("pass2_rank", &param), |b| {
                    b.iter_batched(
                        || ranker.clone(),
                        |mut r| {
                            r.add(black_box(&scores), black_box(&labels));
                            black_box(r.finish().unwrap())
                        },
                        BatchSize::LargeInput,
                    )
                });
                let counts = counts_of(&scores, &labels);
                g.bench_function(BenchmarkId::new("summary_only", &param), |b| {
                    b.iter(|| black_box(black_box(&counts).summary(Fpr95Rule::First)))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
