//! PRO / AUPRO and SegmentMeIfYouCan component metrics against the numpy /
//! scipy references of scripts/gen_region_fixtures.py
//! (tests/fixtures/region.json).

use bench::metrics::PositiveCollector;
use bench::metrics::region::*;
use serde_json::Value;

const TOL: f64 = 1e-6;

struct Img {
    h: usize,
    w: usize,
    scores: Vec<f32>,
    labels: Vec<u8>,
    components: Vec<u32>,
    regions: usize,
}

fn fixture() -> Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/region.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("read region.json")).expect("parse region.json")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

fn sets(fx: &Value) -> Vec<(String, Vec<Img>)> {
    fx["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let imgs = s["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|im| Img {
                    h: im["h"].as_u64().unwrap() as usize,
                    w: im["w"].as_u64().unwrap() as usize,
                    scores: f64s(&im["scores"]).into_iter().map(|x| x as f32).collect(),
                    labels: u64s(&im["labels"]).into_iter().map(|x| x as u8).collect(),
                    components: u64s(&im["components"]).into_iter().map(|x| x as u32).collect(),
                    regions: im["regions"].as_u64().unwrap() as usize,
                })
                .collect();
            (s["name"].as_str().unwrap().to_string(), imgs)
        })
        .collect()
}

fn set<'a>(all: &'a [(String, Vec<Img>)], name: &str) -> &'a [Img] {
    &all.iter().find(|s| s.0 == name).unwrap().1
}

fn close(a: Option<f64>, b: Option<f64>, what: &str) {
    match (a, b) {
        (None, None) => {}
        (Some(a), Some(b)) => assert!((a - b).abs() <= TOL, "{what}: {a} vs reference {b}"),
        _ => panic!("{what}: {a:?} vs reference {b:?}"),
    }
}

fn closev(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs reference {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= TOL, "{what}: {a:?} vs reference {b:?}");
    }
}

#[test]
fn labelling_matches_scipy_and_region_sizes() {
    let fx = fixture();
    for (name, imgs) in sets(&fx) {
        for (i, im) in imgs.iter().enumerate() {
            let mask: Vec<bool> = im.labels.iter().map(|&l| l != 0 && l != 255).collect();
            let (lab, n) = label_components(&mask, im.h, im.w).unwrap();
            assert_eq!(n, im.regions, "{name}[{i}] count");
            assert_eq!(lab, im.components, "{name}[{i}] ids (raster order)");
            let rw = region_weights(&im.labels, im.h, im.w).unwrap();
            assert_eq!(rw.regions, im.regions);
            assert_eq!(rw.sizes.iter().sum::<u64>(), mask.iter().filter(|&&m| m).count() as u64);
            for (p, &c) in lab.iter().enumerate() {
                let want = if c == 0 { 0.0 } else { 1.0 / rw.sizes[c as usize - 1] as f64 };
                assert_eq!(rw.weights[p], want);
            }
        }
    }
}

#[test]
fn aupro_matches_mvtec_reference() {
    let fx = fixture();
    let all = sets(&fx);
    let mut checked = 0;
    for case in fx["aupro"].as_array().unwrap() {
        let name = case["set"].as_str().unwrap();
        let mf = case["max_fpr"].as_f64().unwrap();
        let imgs = set(&all, name);
        let view: Vec<(&[f32], &[u8], usize, usize)> =
            imgs.iter().map(|im| (&im.scores[..], &im.labels[..], im.h, im.w)).collect();
        let (wc, k) = pro_counts_of(&view).unwrap();
        assert_eq!(k, case["regions"].as_u64().unwrap(), "{name} K");
        close(aupro_weighted(&wc, k, mf), case["value"].as_f64(), &format!("AUPRO {name} @{mf}"));
        checked += 1;
    }
    assert!(checked >= 16);
}

/// The pipeline's way: per image, any image order, images never held
/// together; the result must not depend on the order.
#[test]
fn aupro_streaming_is_order_independent() {
    let fx = fixture();
    let all = sets(&fx);
    let imgs = set(&all, "blobs_continuous");
    let run = |order: &[usize]| {
        let mut pc = PositiveCollector::new();
        let mut k = 0u64;
        for &i in order {
            let im = &imgs[i];
            let rw = region_weights(&im.labels, im.h, im.w).unwrap();
            k += rw.regions as u64;
            pc.add_weighted(&im.scores, &im.labels, &rw.weights);
        }
        let mut r = pc.finish();
        for &i in order.iter().rev() {
            r.add(&imgs[i].scores, &imgs[i].labels);
        }
        let wc = r.finish_weighted().unwrap();
        (wc.clone(), aupro_weighted(&wc, k, 0.3).unwrap())
    };
    let n = imgs.len();
    let fwd: Vec<usize> = (0..n).collect();
    let rev: Vec<usize> = (0..n).rev().collect();
    let (a, x) = run(&fwd);
    let (b, y) = run(&rev);
    assert_eq!(a, b);
    assert_eq!(x.to_bits(), y.to_bits());
    // the unweighted statistic is untouched by the weights
    let mut pc = PositiveCollector::new();
    for im in imgs {
        pc.add(&im.scores, &im.labels, None);
    }
    let mut r = pc.finish();
    for im in imgs {
        r.add(&im.scores, &im.labels);
    }
    assert_eq!(r.finish().unwrap(), a.counts);
}

#[test]
fn pro_curve_shape() {
    let fx = fixture();
    let all = sets(&fx);
    let imgs = set(&all, "handmade");
    let view: Vec<(&[f32], &[u8], usize, usize)> =
        imgs.iter().map(|im| (&im.scores[..], &im.labels[..], im.h, im.w)).collect();
    let (wc, k) = pro_counts_of(&view).unwrap();
    let pts = pro_curve(&wc.counts, &wc.tp_weight, k).unwrap();
    assert_eq!(pts[0], (0.0, 0.0));
    assert_eq!(pts.last().unwrap().0, 1.0);
    assert!((pts.last().unwrap().1 - 1.0).abs() < 1e-12);
    for s in pts.windows(2) {
        assert!(s[0].0 <= s[1].0 && s[0].1 <= s[1].1, "{s:?}");
    }
}

#[test]
fn component_metrics_match_official_definition() {
    let fx = fixture();
    let all = sets(&fx);
    let deltas = f64s(&fx["deltas"]);
    assert_eq!(
        deltas.iter().map(|d| d.to_bits()).collect::<Vec<_>>(),
        smiyc_deltas().iter().map(|d| d.to_bits()).collect::<Vec<_>>()
    );
    let mut checked = 0;
    for case in fx["components"].as_array().unwrap() {
        let name = case["set"].as_str().unwrap();
        let cfg = ComponentConfig {
            threshold: case["threshold"].as_f64().unwrap() as f32,
            strict: case["strict"].as_bool().unwrap(),
            min_pred_size: case["min_pred_size"].as_u64().unwrap(),
            min_gt_size: case["min_gt_size"].as_u64().unwrap(),
            deltas: smiyc_deltas(),
        };
        let what = format!("{name} {cfg:?}");
        let imgs = set(&all, name);
        let mut acc = ComponentStats::new(&cfg.deltas);
        for (i, im) in imgs.iter().enumerate() {
            let got = image_components(&im.scores, &im.labels, im.h, im.w, &cfg).unwrap();
            let want = &case["per_image"][i];
            closev(&got.siou_gt, &f64s(&want["siou_gt"]), &format!("{what} img {i} sIoU"));
            closev(&got.ppv, &f64s(&want["ppv"]), &format!("{what} img {i} PPV"));
            closev(&got.siou_pred, &f64s(&want["siou_pred"]), &format!("{what} img {i} sIoU pred"));
            component_metrics(&im.scores, &im.labels, im.h, im.w, &cfg, &mut acc).unwrap();
        }
        assert_eq!(acc.tp, u64s(&case["tp"]), "{what} TP");
        assert_eq!(acc.fn_, u64s(&case["fn"]), "{what} FN");
        assert_eq!(acc.fp, u64s(&case["fp"]), "{what} FP");
        let s = acc.summary();
        assert_eq!(s.gt_components, case["gt_components"].as_u64().unwrap());
        assert_eq!(s.pred_components, case["pred_components"].as_u64().unwrap());
        let f1: Vec<Option<f64>> = case["f1"].as_array().unwrap().iter().map(|v| v.as_f64()).collect();
        for (j, (a, b)) in s.f1.iter().zip(&f1).enumerate() {
            close(*a, *b, &format!("{what} F1[{j}]"));
        }
        close(s.mean_f1, case["mean_f1"].as_f64(), &format!("{what} mean F1"));
        close(s.siou_gt, case["siou_gt"].as_f64(), &format!("{what} mean sIoU"));
        close(s.ppv, case["ppv"].as_f64(), &format!("{what} mean PPV"));
        close(s.siou_pred, case["siou_pred"].as_f64(), &format!("{what} mean sIoU pred"));
        // per-image accumulators merged = the split accumulator
        let mut merged = ComponentStats::new(&cfg.deltas);
        for im in imgs {
            let mut one = ComponentStats::new(&cfg.deltas);
            component_metrics(&im.scores, &im.labels, im.h, im.w, &cfg, &mut one).unwrap();
            merged.merge(&one).unwrap();
        }
        assert_eq!(merged.tp, acc.tp);
        assert_eq!(merged.fp, acc.fp);
        close(merged.summary().siou_gt, s.siou_gt, &what);
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn component_edge_cases() {
    let cfg = ComponentConfig::obstacle_track(0.5);
    // empty image
    let img = image_components(&[], &[], 0, 0, &cfg).unwrap();
    assert_eq!(img, ImageComponents::default());
    // all void
    let img = image_components(&[1.0; 4], &[255; 4], 2, 2, &cfg).unwrap();
    assert_eq!(img, ImageComponents::default());
    // NaN scores are never anomalous
    let cfg0 = ComponentConfig { min_pred_size: 0, min_gt_size: 0, ..ComponentConfig::obstacle_track(0.5) };
    let img = image_components(&[f32::NAN, 1.0, 0.0, 0.0], &[1, 0, 0, 0], 2, 2, &cfg0).unwrap();
    assert_eq!(img.siou_gt, vec![0.0]); // the NaN anomaly pixel is missed
    assert_eq!(img.ppv, vec![0.0]);
    // mismatched accumulator
    let mut acc = ComponentStats::new(&[0.5]);
    assert!(component_metrics(&[0.0], &[0], 1, 1, &cfg, &mut acc).is_err());
    assert!(acc.merge(&ComponentStats::new(&smiyc_deltas())).is_err());
    // nothing at all: undefined, not zero
    let s = ComponentStats::new(&smiyc_deltas()).summary();
    assert_eq!((s.siou_gt, s.ppv, s.mean_f1), (None, None, None));
}
