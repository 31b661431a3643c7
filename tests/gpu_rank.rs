//! The device ranking (`scores::gpu::rank`, `shaders/rank.wgsl`) against the
//! CPU engine's pass 2: fed the same scores, the same counts, slot for slot.
//! On lavapipe in CI (`BENCH_REQUIRE_GPU=1`); skipped without an adapter.

mod common;

use bench::data::label;
use bench::metrics::engine::{PositiveCollector, RankTable, Ranker, Tally};
use bench::scores::gpu::GpuContext;
use bench::scores::gpu::rank::{RankPass, RankSet, upload};
use common::Rng;

fn ctx() -> Option<GpuContext> {
    match GpuContext::new(true) {
        Ok(c) => Some(c),
        Err(e) => {
            if common::gpu_required() {
                panic!("BENCH_REQUIRE_GPU=1 but no GPU adapter could be opened: {e:#}");
            }
            eprintln!("SKIP: no GPU adapter ({e:#}); set BENCH_REQUIRE_GPU=1 to make this a failure");
            None
        }
    }
}

fn labels(r: &mut Rng, n: usize, pos: f64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let u = r.unif();
            if u < pos {
                1 + r.below(3) as u8
            } else if u < pos + 0.03 {
                label::VOID
            } else {
                label::NORMAL
            }
        })
        .collect()
}

/// Pass 1 on the CPU, then pass 2 both ways.
fn both(c: &GpuContext, pass: &RankPass, scores: &[f32], labels: &[u8], flush: u64, budget: Option<usize>) -> (Tally, Tally, bool) {
    let mut pc = PositiveCollector::new();
    pc.add(scores, labels, None);
    let r0: Ranker = pc.finish();
    let mut cpu = r0.clone();
    cpu.add(scores, labels);
    let table = match budget {
        Some(b) => RankTable::with_budget(r0.keys(), b),
        None => r0.table().clone(),
    };
    let mut g = pass.ranker(c, &table).unwrap().with_flush_limit(flush);
    g.add(c, scores, labels).unwrap();
    let local = g.uses_local_histogram();
    let t = g.tally(c).unwrap();
    // the counts finish into the same statistic
    let mut via = r0.clone();
    via.absorb(&t).unwrap();
    assert_eq!(via.finish().unwrap(), cpu.clone().finish().unwrap());
    (t, cpu.tally(), local)
}

fn check(c: &GpuContext, pass: &RankPass, scores: &[f32], labels: &[u8], what: &str) {
    for (flush, budget) in [(u32::MAX as u64, None), (1000, None), (u32::MAX as u64, Some(0))] {
        let (g, cpu, _) = both(c, pass, scores, labels, flush, budget);
        assert_eq!(g, cpu, "{what} (flush {flush}, budget {budget:?})");
    }
}

#[test]
fn gpu_rank_equals_cpu_random_and_tied() {
    let Some(c) = ctx() else { return };
    let pass = RankPass::new(&c).unwrap();
    let mut r = Rng::new(16);
    let n = 300_000;
    // continuous: thousands of positives (global counters)
    let s: Vec<f32> = (0..n).map(|_| r.normal() as f32).collect();
    let l = labels(&mut r, n, 0.02);
    let (g, cpu, local) = both(&c, &pass, &s, &l, u32::MAX as u64, None);
    assert!(!local);
    assert_eq!(g, cpu, "continuous");
    check(&c, &pass, &s, &l, "continuous");
    // heavily tied: 256 values, every negative equal to some positive key
    let s: Vec<f32> = (0..n).map(|_| (r.below(256) as f32) / 32.0 - 4.0).collect();
    let l = labels(&mut r, n, 0.05);
    let (g, cpu, local) = both(&c, &pass, &s, &l, u32::MAX as u64, None);
    assert!(local, "few slots: the workgroup histogram");
    assert_eq!(g, cpu, "tied256");
    check(&c, &pass, &s, &l, "tied256");
    // all tied
    let s = vec![0.5f32; 50_000];
    let l = labels(&mut r, 50_000, 0.1);
    check(&c, &pass, &s, &l, "all tied");
    // dense: many distinct positives in a few first-level buckets (second
    // level tables; with budget 0 the binary-search fallback)
    let s: Vec<f32> = (0..n).map(|_| 1.0 + r.unif() as f32 * 0.01).collect();
    let l = labels(&mut r, n, 0.1);
    check(&c, &pass, &s, &l, "dense");
}

#[test]
fn gpu_rank_equals_cpu_edges() {
    let Some(c) = ctx() else { return };
    let pass = RankPass::new(&c).unwrap();
    let mut r = Rng::new(17);
    // one positive; negatives equal to it, below all, above all
    let n = 20_000;
    let mut s: Vec<f32> = (0..n).map(|_| (r.unif() * 4.0 - 2.0) as f32).collect();
    let mut l = vec![label::NORMAL; n];
    l[7] = 1;
    s[7] = 0.25;
    for i in (100..n).step_by(97) {
        s[i] = 0.25;
    }
    check(&c, &pass, &s, &l, "single positive");
    // no positive at all: every negative in the one slot
    check(&c, &pass, &s, &vec![label::NORMAL; n], "no positive");
    // all negatives below / above all positives
    let s: Vec<f32> = (0..n).map(|i| if i % 10 == 0 { 5.0 + (i % 7) as f32 } else { -(i as f32) }).collect();
    let l: Vec<u8> = (0..n).map(|i| (i % 10 == 0) as u8).collect();
    check(&c, &pass, &s, &l, "negatives below all");
    let s: Vec<f32> = s.iter().map(|x| -x).collect();
    check(&c, &pass, &s, &l, "negatives above all");
    // NaN-free extremes, subnormals, signed zeros, neighbours of keys
    let ext = [
        f32::MIN,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -f32::MIN_POSITIVE,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        0.0,
        -0.0,
        1.0,
        f32::from_bits(1.0f32.to_bits() + 1),
        f32::from_bits(1.0f32.to_bits() - 1),
        -1.0,
    ];
    let s: Vec<f32> = (0..n).map(|_| ext[r.below(ext.len())]).collect();
    let l = labels(&mut r, n, 0.1);
    check(&c, &pass, &s, &l, "extremes");
    // -0.0 positives against +0.0 negatives: one key
    let s: Vec<f32> = (0..1000).map(|i| if i % 2 == 0 { -0.0 } else { 0.0 }).collect();
    let l: Vec<u8> = (0..1000).map(|i| (i % 4 == 0) as u8).collect();
    check(&c, &pass, &s, &l, "signed zeros");
}

/// Device-resident ranges at unaligned offsets, in pieces, with a flush
/// limit of a few hundred pixels (many flushes): the same counts.
#[test]
fn gpu_rank_device_ranges_and_flushes() {
    let Some(c) = ctx() else { return };
    let pass = RankPass::new(&c).unwrap();
    let mut r = Rng::new(18);
    let n = 100_003;
    let s: Vec<f32> = (0..n).map(|_| (r.normal() * 2.0) as f32).collect();
    let l = labels(&mut r, n, 0.03);
    let mut pc = PositiveCollector::new();
    pc.add(&s, &l, None);
    let r0 = pc.finish();
    let mut cpu = r0.clone();
    cpu.add(&s, &l);
    let (sb, lb) = upload(&c, &s, &l);
    for flush in [1u64, 257, 4096, u32::MAX as u64] {
        let mut g = pass.ranker(&c, r0.table()).unwrap().with_flush_limit(flush);
        // odd cuts: offsets 0, 37, 12_345, ...; a flush of 1 only on a small range
        let cuts: Vec<usize> = if flush == 1 { vec![0, 37, 333] } else { vec![0, 37, 12_345, 50_000, 50_001, n] };
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            g.add_buffers(&c, &sb, 4 * a as u64, &lb, a as u64, (b - a) as u64).unwrap();
        }
        let t = g.tally(&c).unwrap();
        if flush == 1 {
            let mut part = r0.clone();
            part.add(&s[..333], &l[..333]);
            assert_eq!(t, part.tally(), "flush {flush}");
        } else {
            assert_eq!(t, cpu.tally(), "flush {flush}");
            // tally again: nothing new, the same
            assert_eq!(g.tally(&c).unwrap(), t);
        }
    }
    // out-of-range requests are errors, not device faults
    let mut g = pass.ranker(&c, r0.table()).unwrap();
    assert!(g.add_buffers(&c, &sb, 4 * n as u64, &lb, 0, 1).is_err());
    assert!(g.add_buffers(&c, &sb, 2, &lb, 0, 1).is_err());
}

/// Pass 2 as the sweep runs it on the device: several score maps per image
/// (methods), several rankers per map (the split's positives and each
/// anomaly type's), images of different sizes uploaded into reused
/// buffers, one tally at the end: slot for slot the CPU rankers' counts.
#[test]
fn rank_set_over_images_and_maps_equals_cpu_rankers() {
    let Some(c) = ctx() else { return };
    let pass = RankPass::new(&c).unwrap();
    let mut r = Rng::new(19);
    // image sizes shrink and grow (buffers are reused, then regrown); one
    // has a length that is not a multiple of 4 (label padding), one is empty
    let sizes = [40_000usize, 9_999, 0, 61_003, 5];
    let images: Vec<(Vec<Vec<f32>>, Vec<u8>)> = sizes
        .iter()
        .map(|&n| {
            let cont: Vec<f32> = (0..n).map(|_| r.normal() as f32).collect();
            let tied: Vec<f32> = (0..n).map(|_| r.below(64) as f32 / 8.0).collect();
            (vec![cont, tied], labels(&mut r, n, 0.04))
        })
        .collect();
    // per map: all positives, then positives of type 1 and of type 2
    let mut cpu: Vec<Ranker> = Vec::new();
    let mut which = Vec::new();
    for m in 0..2 {
        for sel in [None, Some(1u8), Some(2u8)] {
            let mut pc = PositiveCollector::new();
            for (maps, lab) in &images {
                pc.add(&maps[m], lab, sel);
            }
            cpu.push(pc.finish());
            which.push(m);
        }
    }
    let tables: Vec<(usize, &RankTable)> = which.iter().zip(&cpu).map(|(&m, r)| (m, r.table())).collect();
    for flush in [u32::MAX as u64, 777] {
        let mut set = RankSet::new(&c, &pass, &tables).unwrap().with_flush_limit(flush);
        for (maps, lab) in &images {
            set.add_image(&c, maps, lab).unwrap();
        }
        let got = set.tallies(&c).unwrap();
        assert_eq!(got.len(), cpu.len());
        for (k, (g, r0)) in got.iter().zip(&cpu).enumerate() {
            let mut want = r0.clone();
            for (maps, lab) in &images {
                want.add(&maps[which[k]], lab);
            }
            assert_eq!(g, &want.tally(), "ranker {k} (map {}), flush {flush}", which[k]);
            assert!(g.negatives > 0, "ranker {k} saw no negatives: the test would prove nothing");
        }
    }
    // a map whose length is not the mask's is an error, not a device fault
    let mut set = RankSet::new(&c, &pass, &tables).unwrap();
    let (maps, lab) = &images[0];
    assert!(set.add_image(&c, &[maps[0].clone(), maps[1][..10].to_vec()], lab).is_err());
    assert!(set.add_image(&c, &maps[..1], lab).is_err(), "fewer maps than the rankers read");
}
