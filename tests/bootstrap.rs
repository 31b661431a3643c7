//! The histogram bootstrap against the exact one (held score maps, the
//! same draws): every interval end within the recorded error bound, the
//! operating points and image AUROC identical to a brute-force resample,
//! a method paired with itself differing by exactly 0; and through the
//! binary, intervals that no longer depend on the score-map budget.

mod common;
#[allow(unused_imports)]
use common::*;

use bench::metrics::bootgrid::{Grid, HistCollector, HistSet};
use bench::metrics::bootstrap::{HistBoot, HistIntervals, Threshold, bootstrap, draws, hist_bootstrap};
use bench::metrics::operating::{ImageScores, Level};
use bench::metrics::split::image_score;
use bench::metrics::{AuprRule, Fpr95Rule, counts_of, key, np_percentile};
use bench::scores::ScoreMaps;

const RULE: (Fpr95Rule, AuprRule) = (Fpr95Rule::First, AuprRule::Ap);

/// xorshift: the test data (no dependence on rand's versions).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 1_000_000) as f32 / 1_000_000.0
    }
}

/// `n` images of `px` pixels, three methods: continuous scores, the same
/// scores on 40 levels (ties), and a copy of the first (for the self-pair).
/// Some images have no anomaly, some void pixels; anomalies score higher
/// on average.
fn data(n: usize, px: usize, seed: u64) -> Vec<(ScoreMaps, Vec<u8>)> {
    let mut r = Rng(seed);
    (0..n)
        .map(|i| {
            let share = if i % 4 == 0 { 0.0 } else { 0.05 + 0.3 * r.unit() };
            let lab: Vec<u8> = (0..px).map(|_| if r.unit() < 0.03 { 255 } else { (r.unit() < share) as u8 }).collect();
            let s0: Vec<f32> = lab.iter().map(|&l| r.unit() * 3.0 + if l == 1 { 1.2 * r.unit() } else { 0.0 } - 1.5).collect();
            let s1: Vec<f32> = s0.iter().map(|&x| (x * 8.0).round() / 8.0).collect();
            (ScoreMaps { h: 1, w: px, maps: vec![s0.clone(), s1, s0] }, lab)
        })
        .collect()
}

/// Pass 1's view of one method: distinct anomaly keys with counts, the
/// normal keys' coarse histogram.
fn pass1(d: &[(ScoreMaps, Vec<u8>)], m: usize) -> (Vec<u32>, Vec<u64>, Vec<u64>) {
    let mut pos: Vec<u32> = vec![];
    let mut coarse = vec![0u64; 1 << 16];
    for (maps, lab) in d {
        for (&s, &l) in maps.maps[m].iter().zip(lab) {
            match l {
                0 => coarse[(key(s) >> 16) as usize] += 1,
                255 => {}
                _ => pos.push(key(s)),
            }
        }
    }
    pos.sort_unstable();
    let (mut keys, mut counts) = (vec![], vec![]);
    for k in pos {
        if keys.last() == Some(&k) {
            *counts.last_mut().unwrap() += 1;
        } else {
            keys.push(k);
            counts.push(1u64);
        }
    }
    (keys, counts, coarse)
}

struct Case {
    grids: Vec<Grid>,
    hists: HistSet,
    image_scores: Vec<Vec<f32>>,
    image_labels: Vec<u8>,
    points: Vec<Vec<Option<Threshold>>>,
}

/// Grids with `per_class` bins per class and the thresholds `thr` as
/// edges, the per-image histograms, image scores and labels.
fn case(d: &[(ScoreMaps, Vec<u8>)], per_class: usize, thr: &[f32]) -> Case {
    let nm = d[0].0.maps.len();
    let grids: Vec<Grid> = (0..nm)
        .map(|m| {
            let (k, c, coarse) = pass1(d, m);
            Grid::build(&k, &c, &coarse, thr, per_class).unwrap()
        })
        .collect();
    let mut col = HistCollector::new(grids.clone());
    for (maps, lab) in d {
        col.add(maps, lab);
    }
    let valid: Vec<&(ScoreMaps, Vec<u8>)> = d.iter().filter(|(_, l)| l.iter().any(|&x| x != 255)).collect();
    let image_scores = (0..nm).map(|m| valid.iter().map(|(s, l)| image_score(&s.maps[m], l, 0)).collect()).collect();
    let image_labels = valid.iter().map(|(_, l)| l.iter().any(|&x| x == 1) as u8).collect();
    let mut pts: Vec<Option<Threshold>> = thr.iter().map(|&t| Some(Threshold { level: Level::Pixel, t })).collect();
    pts.push(None);
    pts.push(Some(Threshold { level: Level::Image, t: 0.9 }));
    Case { grids, hists: col.set, image_scores, image_labels, points: vec![pts; nm] }
}

fn run(c: &Case, samples: u32, seed: u64) -> HistIntervals {
    let b = HistBoot { hists: &c.hists, grids: &c.grids, image_scores: &c.image_scores, image_labels: &c.image_labels, points: &c.points, rule: RULE };
    hist_bootstrap(&b, samples, seed, [Some(0), Some(c.points[0].len() - 1)]).unwrap()
}

fn pctl(mut v: Vec<f64>) -> Option<[f64; 2]> {
    v.sort_by(|a, b| a.total_cmp(b));
    Some([np_percentile(&v, 0.025)?, np_percentile(&v, 0.975)?])
}

/// Largest |hist − exact| over interval ends, per metric, and whether each
/// is within the bound recorded in the hist intervals.
fn compare(d: &[(ScoreMaps, Vec<u8>)], per_class: usize, samples: u32) -> [f64; 3] {
    let c = case(d, per_class, &[0.25, 1.0]);
    let h = run(&c, samples, 7);
    let ex = bootstrap(d, c.grids.len(), samples, 7, RULE);
    let mut worst = [0.0f64; 3];
    for (m, (hb, eb)) in h.cells.iter().zip(&ex).enumerate() {
        assert_eq!(hb.defined, eb.defined, "method {m}: the same replicates are defined");
        let eb_ = hb.error_bound.unwrap();
        let bounds = [eb_.auroc.unwrap(), eb_.aupr.unwrap(), eb_.fpr95.unwrap()];
        for (f, (x, y)) in [(hb.auroc, eb.auroc), (hb.aupr, eb.aupr), (hb.fpr95, eb.fpr95)].into_iter().enumerate() {
            let (x, y) = (x.unwrap(), y.unwrap());
            for e in 0..2 {
                let err = (x[e] - y[e]).abs();
                assert!(err <= bounds[f] + 1e-12, "per_class {per_class} method {m} metric {f} end {e}: |{} − {}| = {err} > bound {}", x[e], y[e], bounds[f]);
                worst[f] = worst[f].max(err);
            }
        }
    }
    worst
}

#[test]
fn histogram_intervals_lie_within_the_bound_of_the_exact_bootstrap() {
    let d = data(14, 3000, 11);
    // coarse grids: the bound is loose but not zero, and still holds
    let c = case(&d, 8, &[]);
    let h = run(&c, 100, 7);
    let b = h.cells[0].error_bound.unwrap();
    assert!(b.auroc.unwrap() > 1e-4 && b.aupr.unwrap() > 1e-4 && b.fpr95.unwrap() > 1e-4, "{b:?}");
    for per_class in [8, 64, 512, 2048] {
        let w = compare(&d, per_class, 100);
        let c = case(&d, per_class, &[0.25, 1.0]);
        let b = run(&c, 100, 7).cells[0].error_bound.unwrap();
        let bytes: usize = c.hists.images.iter().flatten().map(|h| h.bytes()).sum();
        eprintln!("per_class {per_class}: {} B per image × method ({} px)", bytes / (d.len() * 3), d[0].1.len());
        eprintln!("per_class {per_class}: bins {}, measured |hist − exact| auroc {:.2e} aupr {:.2e} fpr95 {:.2e}; bound (method 0) {:.2e} {:.2e} {:.2e}", c.grids[0].bins(), w[0], w[1], w[2], b.auroc.unwrap(), b.aupr.unwrap(), b.fpr95.unwrap());
    }
}

#[test]
fn operating_points_and_image_auroc_are_exact_resamples() {
    let d = data(10, 1500, 5);
    let thr = [0.25f32, 1.0];
    let c = case(&d, 64, &thr);
    let (samples, seed) = (80, 3);
    let h = run(&c, samples, seed);
    let n = d.len();
    for m in 0..3 {
        for (k, &t) in thr.iter().enumerate() {
            let (mut far, mut frr) = (vec![], vec![]);
            for r in 0..samples {
                let (mut tp, mut fp, mut p, mut nn) = (0u64, 0u64, 0u64, 0u64);
                for &i in &draws(seed, r, n) {
                    for (&s, &l) in d[i].0.maps[m].iter().zip(&d[i].1) {
                        match l {
                            0 => (nn, fp) = (nn + 1, fp + (s >= t) as u64),
                            1 => (p, tp) = (p + 1, tp + (s >= t) as u64),
                            _ => {}
                        }
                    }
                }
                if p > 0 {
                    far.push((p - tp) as f64 / p as f64);
                }
                if nn > 0 {
                    frr.push(fp as f64 / nn as f64);
                }
            }
            let ci = h.points[m][k].unwrap();
            assert_eq!((ci.far, ci.frr), (pctl(far), pctl(frr)), "method {m} threshold {t}");
        }
        assert_eq!(h.points[m][2], None, "a point without a threshold has no interval");
        // image level: the drawn image scores as they are
        let rows: Vec<Option<usize>> = {
            let mut k = 0;
            d.iter().map(|(_, l)| l.iter().any(|&x| x != 255).then(|| (k, k += 1).0)).collect()
        };
        let (mut auc, mut frr) = (vec![], vec![]);
        for r in 0..samples {
            let idx: Vec<usize> = draws(seed, r, n).into_iter().filter_map(|i| rows[i]).collect();
            let s: Vec<f32> = idx.iter().map(|&j| c.image_scores[m][j]).collect();
            let l: Vec<u8> = idx.iter().map(|&j| c.image_labels[j]).collect();
            auc.extend(counts_of(&s, &l).auroc());
            frr.extend(ImageScores { scores: &s, labels: &l }.at(0.9).frr());
        }
        assert_eq!(h.cells[m].image_auroc, pctl(auc), "method {m} image AUROC");
        assert_eq!(h.points[m][3].unwrap().frr, pctl(frr), "method {m} image FRR");
    }
}

#[test]
fn a_threshold_off_the_grid_gets_no_interval() {
    let d = data(6, 800, 9);
    let c = case(&d, 8, &[]);
    // the middle of a wide bin holding anomalies is no edge
    let g = &c.grids[0];
    let t = (1..g.bins() - 1).map(|b| (g.lower(b) + g.lower(b + 1)) / 2.0).find(|&t| t.is_finite() && g.bin_at(t).is_none()).unwrap();
    let c = Case { points: vec![vec![Some(Threshold { level: Level::Pixel, t })]; 3], ..c };
    let b = HistBoot { hists: &c.hists, grids: &c.grids, image_scores: &c.image_scores, image_labels: &c.image_labels, points: &c.points, rule: RULE };
    let h = hist_bootstrap(&b, 20, 0, [None, None]).unwrap();
    assert_eq!(h.points[0][0].unwrap().far, None, "never a binned guess at an off-grid threshold");
}

#[test]
fn paired_differences_are_zero_for_a_method_and_itself_and_deterministic() {
    let d = data(12, 1000, 21);
    let c = case(&d, 32, &[0.25, 1.0]);
    let h = run(&c, 150, 1);
    // pairs in column order: (0,1), (0,2), (1,2); method 2 is a copy of 0
    let same = h.diffs.iter().find(|x| (x.a, x.b) == (0, 2)).unwrap();
    for v in [same.auroc, same.aupr, same.fpr95, same.image_auroc, same.pixel_frr, same.image_frr] {
        assert_eq!(v, Some([0.0, 0.0]));
    }
    let other = h.diffs.iter().find(|x| (x.a, x.b) == (0, 1)).unwrap();
    assert_ne!(other.auroc, Some([0.0, 0.0]), "a different method differs");
    assert_eq!(h.cells[0].auroc, h.cells[2].auroc);
    // the same seed gives the same intervals, bit for bit; another seed others
    let again = run(&c, 150, 1);
    assert_eq!((&again.cells, &again.diffs, &again.points), (&h.cells, &h.diffs, &h.points));
    assert_ne!(run(&c, 150, 2).cells[0].auroc, h.cells[0].auroc);
}

#[test]
fn shard_halves_absorbed_in_order_equal_one_collector() {
    let d = data(7, 500, 4);
    let one = case(&d, 64, &[0.25]);
    let (a, b) = d.split_at(3);
    let mut x = HistCollector::new(one.grids.clone());
    for (m, l) in a {
        x.add(m, l);
    }
    let mut y = HistCollector::new(one.grids.clone());
    for (m, l) in b {
        y.add(m, l);
    }
    let mut merged = HistCollector::new(one.grids.clone());
    merged.absorb(&x.tally()).unwrap();
    merged.absorb(&serde_json::from_str(&serde_json::to_string(&y.tally()).unwrap()).unwrap()).unwrap();
    assert_eq!(merged.set, one.hists);
}

/// Through the binary: a score-map budget of 0 MiB (every split scored
/// twice, no maps held) or of 1 MiB (a prefix of each split held) gives the
/// same results.json, intervals included.
#[test]
fn intervals_do_not_depend_on_the_score_map_budget() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    assert!(bench(&["synth", "--out", "datasets/demo"], root).status.success());
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/sweep.toml")).unwrap();
    let cfg = |name: &str, extra: &str| {
        let text = shipped.replacen("name = \"demo\"", &format!("name = \"{name}\"\ndevice = \"cpu\""), 1).replacen("[metrics]", &format!("[metrics]\n{extra}"), 1);
        std::fs::write(root.join(format!("{name}.toml")), text).unwrap();
        let o = bench(&["run", &format!("{name}.toml")], root);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!stderr(&o).contains("bootstrap skipped"), "{}", stderr(&o));
        std::fs::read_to_string(root.join(format!("results/{name}/results.json"))).unwrap()
    };
    let held = cfg("held", "");
    let streamed = cfg("streamed", "score_cache_mib = 0");
    assert_eq!(held.replace("\"held\"", "\"x\""), streamed.replace("\"streamed\"", "\"x\""));
    // 1 MiB holds the first few demo images' maps (~0.26 MB each): pass 2
    // takes those from the cache and scores the rest again
    let partial = cfg("partial", "score_cache_mib = 1");
    assert_eq!(held.replace("\"held\"", "\"x\""), partial.replace("\"partial\"", "\"x\""));
    let r: serde_json::Value = serde_json::from_str(&streamed).unwrap();
    let test_cells: Vec<&serde_json::Value> = r["cells"].as_array().unwrap().iter().filter(|c| c["split"] == "test").collect();
    assert!(test_cells.iter().all(|c| c["bootstrap"]["auroc"].is_array() && c["bootstrap"]["method"] == "histogram"));
    assert_eq!(r["bootstrap_diff"].as_array().unwrap().len(), 2 * 10, "every pair of the five methods, per model");
}
