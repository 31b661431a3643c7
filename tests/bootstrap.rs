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
        col.add(maps, lab).unwrap();
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
        x.add(m, l).unwrap();
    }
    let mut y = HistCollector::new(one.grids.clone());
    for (m, l) in b {
        y.add(m, l).unwrap();
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
    // regions = true in the shipped config: AUPRO intervals in the cells, and
    // the drifted split's F1 and AUPRO changes have paired intervals
    assert!(test_cells.iter().all(|c| c["bootstrap"]["aupro"].is_array() && c["bootstrap"]["error_bound"]["aupro"].is_number()));
    let drift = r["drift_splits"].as_array().unwrap();
    assert!(!drift.is_empty());
    for d in drift {
        for m in ["f1", "aupro"] {
            let row = d["metrics"].as_array().unwrap().iter().find(|x| x["metric"] == m && x["level"] == "pixel").unwrap();
            assert!(row["interval"].is_array(), "{row}");
        }
    }
}

// ---------------------------------------------------------------------------
// AUPRO and best F1 (region weights in the histograms), and drift changes

use bench::metrics::bootstrap::{PX, bootstrap_exact, exact_replicate};
use bench::metrics::dashboard::delta_interval;
use bench::metrics::region::region_weights;

/// `n` images of `h`×`w` pixels with 1–4 rectangular anomaly regions each
/// (every fourth image none; rectangles may touch and merge), 3 % void
/// pixels (which also cut regions), three methods as in [`data`]:
/// continuous, 40-level ties, a copy of the first. Each region has its own
/// score offset, so PRO differs from pixel TPR. `shift` adds a drift to the
/// normal pixels' scores (the labels stay the same: images paired by index).
fn region_data(n: usize, h: usize, w: usize, seed: u64, shift: f32) -> Vec<(ScoreMaps, Vec<u8>)> {
    let mut r = Rng(seed);
    (0..n)
        .map(|i| {
            let mut lab = vec![0u8; h * w];
            let mut boost = vec![0.0f32; h * w];
            let k = if i % 4 == 0 { 0 } else { 1 + r.next() as usize % 4 };
            for _ in 0..k {
                let (rh, rw) = (4 + r.next() as usize % 16, 4 + r.next() as usize % 20);
                let (y0, x0) = (r.next() as usize % (h - rh), r.next() as usize % (w - rw));
                let b = 1.6 * r.unit();
                for y in y0..y0 + rh {
                    for x in x0..x0 + rw {
                        lab[y * w + x] = 1;
                        boost[y * w + x] = b;
                    }
                }
            }
            for l in lab.iter_mut() {
                if r.unit() < 0.03 {
                    *l = 255;
                }
            }
            let s0: Vec<f32> = (0..h * w).map(|p| r.unit() * 3.0 - 1.5 + if lab[p] == 1 { boost[p] * r.unit() } else { shift * r.unit() }).collect();
            let s1: Vec<f32> = s0.iter().map(|&x| (x * 8.0).round() / 8.0).collect();
            (ScoreMaps { h, w, maps: vec![s0.clone(), s1, s0] }, lab)
        })
        .collect()
}

/// [`case`] with the region weights (AUPRO) collected too.
fn region_case(d: &[(ScoreMaps, Vec<u8>)], per_class: usize) -> Case {
    let c = case(d, per_class, &[0.25, 1.0]);
    let mut col = HistCollector::with_regions(c.grids.clone());
    for (maps, lab) in d {
        col.add(maps, lab).unwrap();
    }
    Case { hists: col.set, ..c }
}

fn boot_of(c: &Case) -> HistBoot<'_> {
    HistBoot { hists: &c.hists, grids: &c.grids, image_scores: &c.image_scores, image_labels: &c.image_labels, points: &c.points, rule: RULE }
}

/// |hist − exact| of an interval end ≤ bound (+ float summation slack),
/// returning the larger of `worst` and the error.
fn within(x: Option<[f64; 2]>, y: Option<[f64; 2]>, bound: Option<f64>, what: &str, worst: f64) -> f64 {
    let (x, y, b) = (x.unwrap_or_else(|| panic!("{what}: no histogram interval")), y.unwrap_or_else(|| panic!("{what}: no exact interval")), bound.unwrap_or_else(|| panic!("{what}: no bound")));
    let mut w = worst;
    for e in 0..2 {
        let err = (x[e] - y[e]).abs();
        assert!(err <= b + 1e-12, "{what} end {e}: |{} − {}| = {err} > bound {b}", x[e], y[e]);
        w = w.max(err);
    }
    w
}

#[test]
fn aupro_and_f1_intervals_lie_within_the_bound_of_the_exact_bootstrap() {
    // 14 images of 60×80: ~4,000 anomaly pixels, so even the default grid has wide anomaly bins
    let d = region_data(14, 60, 80, 31, 0.0);
    let regions: usize = d.iter().map(|(s, l)| region_weights(l, s.h, s.w).unwrap().regions).sum();
    assert!(regions >= 15, "several regions per image: {regions}");
    let samples = 100;
    let ex = bootstrap_exact(&d, 3, samples, 7, RULE, true).unwrap();
    let mut coarse_err = 0.0f64;
    for per_class in [8, 64, 512, 2048] {
        let c = region_case(&d, per_class);
        let h = hist_bootstrap(&boot_of(&c), samples, 7, [None, None]).unwrap();
        let (mut wf, mut wa) = (0.0f64, 0.0f64);
        let (mut bf, mut ba) = (0.0f64, 0.0f64);
        for (m, (hb, eb)) in h.cells.iter().zip(&ex).enumerate() {
            assert_eq!(hb.defined, eb.defined, "method {m}: the same replicates are defined");
            let e = hb.error_bound.unwrap();
            wf = within(hb.f1, eb.f1, e.f1, &format!("per_class {per_class} method {m} F1"), wf);
            wa = within(hb.aupro, eb.aupro, e.aupro, &format!("per_class {per_class} method {m} AUPRO"), wa);
            bf = bf.max(e.f1.unwrap());
            ba = ba.max(e.aupro.unwrap());
        }
        if per_class == 8 {
            // a coarse grid: the bound is not trivially 0, and neither is the error it bounds
            assert!(bf > 1e-3 && ba > 1e-3, "bounds F1 {bf} AUPRO {ba}");
            coarse_err = wa.max(wf);
        }
        let bytes: usize = c.hists.images.iter().flatten().map(|h| h.bytes()).sum();
        eprintln!(
            "per_class {per_class}: bins {}, {} B per image × method with region weights ({} px), measured |hist − exact| F1 {wf:.2e} AUPRO {wa:.2e}; bound F1 {bf:.2e} AUPRO {ba:.2e}",
            c.grids[0].bins(),
            bytes / (d.len() * 3),
            d[0].1.len()
        );
    }
    assert!(coarse_err > 0.0, "the coarse grid's intervals differ from the exact ones (else the comparison tests nothing)");
    // the method with ties: a grid with a bin per key is exact
    let c = region_case(&d, 2048);
    let h = hist_bootstrap(&boot_of(&c), samples, 7, [None, None]).unwrap();
    assert_eq!(h.cells[1].error_bound.unwrap().aupro, Some(0.0), "score levels 1/8 apart: every anomaly bin holds one key");
    assert_eq!(h.cells[1].error_bound.unwrap().f1, Some(0.0));
    assert!((h.cells[1].aupro.unwrap()[0] - ex[1].aupro.unwrap()[0]).abs() < 1e-12);
}

#[test]
fn region_weights_leave_the_other_figures_alone_and_runs_without_regions_get_no_aupro() {
    let d = region_data(9, 30, 40, 5, 0.0);
    let plain = case(&d, 64, &[0.25, 1.0]);
    let with = region_case(&d, 64);
    assert!(plain.hists.regions.is_empty() && plain.hists.images.iter().flatten().all(|h| h.pro.is_empty()));
    assert_eq!(with.hists.regions.len(), d.len());
    // per image the weights of the anomaly cells sum to its region count
    for (i, row) in with.hists.images.iter().enumerate() {
        for h in row {
            let s: f64 = h.pro.iter().sum();
            assert!((s - with.hists.regions[i] as f64).abs() < 1e-9, "image {i}: {s}");
        }
    }
    let (a, b) = (run(&plain, 60, 2), run(&with, 60, 2));
    for (x, y) in a.cells.iter().zip(&b.cells) {
        assert_eq!((x.auroc, x.aupr, x.fpr95, x.f1, x.image_auroc), (y.auroc, y.aupr, y.fpr95, y.f1, y.image_auroc));
        assert!(x.aupro.is_none() && x.error_bound.unwrap().aupro.is_none());
        assert!(y.aupro.is_some() && y.f1.is_some());
    }
    // absorbing a shard without weights into a collector with them is an error
    let mut m = HistCollector::with_regions(with.grids.clone());
    let e = m.absorb(&plain.hists).unwrap_err().to_string();
    assert!(e.contains("AUPRO region weights"), "{e}");
    // ... and shards with weights merge to one collector's bytes
    let mut parts = HistCollector::with_regions(with.grids.clone());
    for chunk in [&d[..4], &d[4..]] {
        let mut x = HistCollector::with_regions(with.grids.clone());
        for (s, l) in chunk {
            x.add(s, l).unwrap();
        }
        parts.absorb(&serde_json::from_str(&serde_json::to_string(&x.tally()).unwrap()).unwrap()).unwrap();
    }
    assert_eq!(parts.set, with.hists);
    // shard states travel as postcard (not self-describing): images without
    // anomalies (no weights) and runs without regions decode to what was sent
    assert!(with.hists.images.iter().flatten().any(|h| h.pro.is_empty()), "an image without anomalies");
    for set in [&with.hists, &plain.hists] {
        let back: HistSet = postcard::from_bytes(&postcard::to_stdvec(set).unwrap()).unwrap();
        assert_eq!(&back, set);
    }
    // a label map of the wrong shape is an error, not a panic
    let bad = ScoreMaps { h: 2, w: 3, maps: vec![vec![0.0; 6]; 3] };
    assert!(m.add(&bad, &[0u8; 5]).is_err());
}

#[test]
fn aupro_and_f1_differences_of_a_method_with_itself_are_exactly_zero() {
    let d = region_data(10, 30, 40, 13, 0.0);
    let c = region_case(&d, 32);
    let h = hist_bootstrap(&boot_of(&c), 120, 4, [None, None]).unwrap();
    let same = h.diffs.iter().find(|x| (x.a, x.b) == (0, 2)).unwrap();
    assert_eq!((same.f1, same.aupro), (Some([0.0, 0.0]), Some([0.0, 0.0])));
    let other = h.diffs.iter().find(|x| (x.a, x.b) == (0, 1)).unwrap();
    assert!(other.aupro.is_some() && other.aupro != Some([0.0, 0.0]));
    // the difference's bound is the sum of both methods' per replicate
    assert!(other.error_bound.aupro.unwrap() <= h.cells[0].error_bound.unwrap().aupro.unwrap() + h.cells[1].error_bound.unwrap().aupro.unwrap() + 1e-15);
    assert_eq!(h.cells[0].aupro, h.cells[2].aupro);
}

#[test]
fn drift_f1_and_aupro_change_intervals_lie_within_the_bound_of_the_exact_paired_bootstrap() {
    let (n, samples, seed) = (12, 80, 9);
    let clean = region_data(n, 30, 50, 17, 0.0);
    let drifted = region_data(n, 30, 50, 17, 0.8);
    assert_eq!(clean.iter().map(|x| &x.1).collect::<Vec<_>>(), drifted.iter().map(|x| &x.1).collect::<Vec<_>>(), "paired: the same labels");
    let rw = |d: &[(ScoreMaps, Vec<u8>)]| d.iter().map(|(s, l)| region_weights(l, s.h, s.w).unwrap()).collect::<Vec<_>>();
    let (rwa, rwb) = (rw(&clean), rw(&drifted));
    for per_class in [16, 2048] {
        let (a, b) = (region_case(&clean, per_class), region_case(&drifted, per_class));
        let ivs = delta_interval(&boot_of(&a), &boot_of(&b), samples, seed).unwrap();
        for m in 0..3 {
            // exact: the change per replicate on the same draw of both splits
            let mut ch: Vec<Vec<f64>> = vec![vec![]; PX];
            for r in 0..samples {
                let draw = draws(seed, r, n);
                let (Some(x), Some(y)) = (exact_replicate(&clean, &draw, m, RULE, Some(&rwa)), exact_replicate(&drifted, &draw, m, RULE, Some(&rwb))) else { continue };
                for k in 0..PX {
                    if let (Some(p), Some(q)) = (x[k], y[k]) {
                        ch[k].push(q - p);
                    }
                }
            }
            let iv = &ivs[m];
            for (k, name) in [(3, "F1"), (4, "AUPRO"), (0, "AUROC")] {
                within(iv.interval[k], pctl(ch[k].clone()), iv.bound[k], &format!("per_class {per_class} method {m} Δ{name}"), 0.0);
            }
            eprintln!("per_class {per_class} method {m}: Δ F1 {:?} bound {:.2e}; Δ AUPRO {:?} bound {:.2e}", iv.interval[3], iv.bound[3].unwrap(), iv.interval[4], iv.bound[4].unwrap());
            // the drift lowers both: the intervals say so
            assert!(iv.interval[4].unwrap()[1] < 0.0 && iv.interval[3].unwrap()[1] < 0.0, "{iv:?}");
        }
        assert_eq!(ivs[0], ivs[2], "a copy of a method: the same change");
    }
}

/// Through the binary with regions on: two shards merge to the single
/// run's results.json byte for byte, AUPRO and F1 intervals included.
#[test]
fn two_shards_with_regions_equal_one_run() {
    let s = Small::new();
    s.config("");
    let cfg = std::fs::read_to_string(s.p("c.toml")).unwrap();
    std::fs::write(s.p("c.toml"), format!("{cfg}\n[metrics]\nbootstrap = 30\nregions = true\n")).unwrap();
    let o = s.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let single = std::fs::read(s.p("results/small/results.json")).unwrap();
    let r: serde_json::Value = serde_json::from_slice(&single).unwrap();
    let test: Vec<&serde_json::Value> = r["cells"].as_array().unwrap().iter().filter(|c| c["split"] == "test").collect();
    assert!(test.iter().all(|c| c["bootstrap"]["aupro"].is_array() && c["bootstrap"]["f1"].is_array() && c["bootstrap"]["error_bound"]["aupro"].is_number()), "{test:?}");
    assert!(r["bootstrap_diff"].as_array().unwrap().iter().all(|d| d["aupro"].is_array()));
    std::fs::rename(s.p("results/small"), s.p("single")).unwrap();
    let o = bench(&["run", "c.toml", "--rounds"], &s.root);
    let rounds: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    for _ in 0..rounds {
        for i in 0..2 {
            let o = s.run(&["--shard", &format!("{i}/2")]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = bench(&["merge", "results/small"], &s.root);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(std::fs::read(s.p("results/small/results.json")).unwrap() == single, "2 shards differ from the single run");
}
