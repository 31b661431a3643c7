//! CPU time of the two metric passes, per pixel (core-ns), on the criterion
//! bench's data (`benches/metrics.rs`): a measure that a busy shared machine
//! disturbs less than wall time. One rayon thread, process CPU time
//! (getrusage), median of 5.
//!
//!     cargo bench --bench rank_cpu_time

use bench::metrics::engine::PositiveCollector;

mod common;
use common::data;

fn cpu_ns() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 * 1e9 + v.tv_usec as f64 * 1e3;
    t(u.ru_utime) + t(u.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        for (n, size) in [(1usize << 20, "1M"), (1usize << 24, "16M")] {
            for pos in [0.01, 0.10] {
                for tied in [false, true] {
                    let (scores, labels) = data(n, pos, tied);
                    let (mut p1, mut p2) = (vec![], vec![]);
                    for _ in 0..5 {
                        let t0 = cpu_ns();
                        let mut pc = PositiveCollector::new();
                        pc.add(&scores, &labels, None);
                        let mut r = pc.finish();
                        let t1 = cpu_ns();
                        r.add(&scores, &labels);
                        let c = r.finish().unwrap();
                        let t2 = cpu_ns();
                        std::hint::black_box(c);
                        p1.push((t1 - t0) / n as f64);
                        p2.push((t2 - t1) / n as f64);
                    }
                    println!(
                        "{size}/{}pct/{:<10}  pass1 {:6.2} core-ns/px  pass2 {:6.2} core-ns/px  both {:6.2}",
                        (pos * 100.0) as u32,
                        if tied { "tied256" } else { "continuous" },
                        median(p1.clone()),
                        median(p2.clone()),
                        median(p1.iter().zip(&p2).map(|(a, b)| a + b).collect())
                    );
                }
            }
        }
    });
}
