//! CPU time of the two metric passes, per pixel (core-ns), on the criterion
//! bench's data (`benches/metrics.rs`): a measure that a busy shared machine
//! disturbs less than wall time. One rayon thread, process CPU time
//! (getrusage), median of 5 (and pass 2's minimum: on a shared machine
//! the least disturbed run).
//!
//! The `sweep` rows are the real sweep's shape: the ranker is built from
//! 60 images' worth of positives (60 × 512², so m ≈ 10^5 distinct keys and
//! the slot array is beyond L2), then pass 2 is fed one 262,144-pixel image
//! per `add` call, which takes `Ranker::add`'s many-slots branch exactly as
//! the sweep does (the whole-slice rows above mostly take the histogram
//! branch: all their pixels in one call, at least 8 per slot; only the
//! 10 % continuous ones do not).
//!
//!     cargo bench --bench rank_cpu_time [-- FILTER]
//!
//! FILTER (optional) keeps the rows whose size name (`1M`, `16M`,
//! `sweep`) contains it.

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

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Both passes over `scores`/`labels`, `add`ed `chunk` pixels at a time,
/// 5 times: one printed row (medians, and pass 2's minimum: a shared
/// machine's load moves the medians).
fn row(name: &str, scores: &[f32], labels: &[u8], chunk: usize) {
    let n = scores.len();
    let (mut p1, mut p2, mut m) = (vec![], vec![], 0);
    for _ in 0..5 {
        let t0 = cpu_ns();
        let mut pc = PositiveCollector::new();
        for (s, l) in scores.chunks(chunk).zip(labels.chunks(chunk)) {
            pc.add(s, l, None);
        }
        let mut r = pc.finish();
        m = r.keys().len();
        let t1 = cpu_ns();
        for (s, l) in scores.chunks(chunk).zip(labels.chunks(chunk)) {
            r.add(s, l);
        }
        let c = r.finish().unwrap();
        let t2 = cpu_ns();
        std::hint::black_box(c);
        p1.push((t1 - t0) / n as f64);
        p2.push((t2 - t1) / n as f64);
    }
    println!(
        "{name:<32}  pass1 {:6.2} core-ns/px  pass2 {:6.2} core-ns/px  both {:6.2}  (min pass2 {:6.2}, m {m})",
        median(p1.clone()),
        median(p2.clone()),
        median(p1.iter().zip(&p2).map(|(a, b)| a + b).collect()),
        min(&p2)
    );
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let keep = |name: &str| filter.as_ref().is_none_or(|f| name.contains(f.as_str()));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let kind = |tied: bool| if tied { "tied256" } else { "continuous" };
    pool.install(|| {
        // whole slices: one `add` per pass
        for (n, size) in [(1usize << 20, "1M"), (1usize << 24, "16M")] {
            if !keep(size) {
                continue;
            }
            for pos in [0.01, 0.10] {
                for tied in [false, true] {
                    let (scores, labels) = data(n, pos, tied);
                    row(&format!("{size}/{}pct/{}", (pos * 100.0) as u32, kind(tied)), &scores, &labels, n);
                }
            }
        }
        // the sweep's shape: 60 images of 512², one `add` per image (the
        // many-slots branch the real sweep takes)
        let (n, img) = (60usize << 18, 1usize << 18);
        let rates: &[f64] = if keep("sweep") { &[0.01, 0.02] } else { &[] };
        for &pos in rates {
            for tied in [false, true] {
                let (scores, labels) = data(n, pos, tied);
                row(&format!("sweep60x256K/{}pct/{}", (pos * 100.0) as u32, kind(tied)), &scores, &labels, img);
            }
        }
    });
}
