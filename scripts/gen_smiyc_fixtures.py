#!/usr/bin/env python3
"""Golden numbers for `bench eval --binning smiyc` (tests/smiyc_binned.rs).

Reimplements SegmentMeIfYouCan's binned pixel metric (`PixBinaryClass`,
768 percentile bins) in numpy, following the official code line by line:

  SegmentMeIfYouCan/road-anomaly-benchmark @ 1c7804e0749686452eb02bbcfb81234e38795f8a
  * road_anomaly_benchmark/evaluation.py:65                 scores saved as float16
  * road_anomaly_benchmark/metrics/pixel_classification.py
      16-111  binary_confusion_matrix (bin_strategy='percentiles')
      133-137 PixBinaryClass: num_bins = 768
      174-184 process_frame: roi = label < 255, gt = label.astype(bool)
      221-250 aggregate_dynamic_bins
  * road_anomaly_benchmark/metrics/pixel_classification_curves.py
      52-183  curves_from_cmats (AP l.161, AUROC l.173, FPR95 l.124-131,
              best_f1 / best_f1_threshold l.122, 136, 151-152)
  * road_anomaly_benchmark/metrics/instance_segmentation.py
      20-32   default_instancer: components of `anomaly_p > thresh_p`
      362-374 get_thresh_p_from_curve: thresh_p = the curve's best_f1_threshold

Only the numpy parts are kept (no EasyDict, plotting, files). `np.trapz` is
`np.trapezoid` on numpy >= 2 (same formula). For every case the script also
records the result with `np.argsort(kind="stable")` in aggregate_dynamic_bins
(`stable`) and whether the default (unstable) sort gave the same numbers; bench
follows the stable order, which differs from the default only when several
frames share the highest threshold (see src/metrics/binned.rs).

Writes tests/fixtures/smiyc_binned.json: per case the frames (float32 scores
before the float16 cast, uint8 labels 0 / 1 / 255, shape) and the metrics,
including SMIYC's component threshold (best_f1_threshold).
Run: python3 scripts/gen_smiyc_fixtures.py
"""

import json
import os

import numpy as np

trapz = getattr(np, "trapezoid", None) or np.trapz


# --- pixel_classification.py:16-111 (percentiles branch) -------------------
def binary_confusion_matrix(prob, gt_label_bool, num_bins=768):
    area = gt_label_bool.__len__()
    gt_area_true = np.count_nonzero(gt_label_bool)
    gt_area_false = area - gt_area_true
    prob_at_true = prob[gt_label_bool]
    prob_at_false = prob[~gt_label_bool]

    vmin = np.min(prob)
    vmax = np.max(prob)
    vrange = vmax - vmin
    eps = np.maximum(vrange * 1e-2, 1e-2)
    bins = [[vmin - eps, vmax + eps]]
    if prob_at_true.size:
        bins += [np.quantile(prob_at_true, np.linspace(0, 1, min(num_bins // 2, prob_at_true.size)))]
    if prob_at_false.size:
        bins += [np.quantile(prob_at_false, np.linspace(0, 1, min(num_bins // 2, prob_at_false.size)))]
    bins = np.concatenate(bins)
    bins = np.unique(bins)
    histogram_range = None

    tp_rel, _ = np.histogram(prob_at_true, bins=bins, range=histogram_range)
    tp_rel = tp_rel[::-1]
    fp_rel, bin_edges = np.histogram(prob_at_false, bins=bins, range=histogram_range)
    bin_edges = bin_edges[::-1]
    fp_rel = fp_rel[::-1]
    return dict(bin_edges=bin_edges, tp_rel=tp_rel, fp_rel=fp_rel, num_pos=gt_area_true, num_neg=gt_area_false)


# --- pixel_classification.py:174-184 process_frame ---------------------------
def process_frame(label_pixel_gt, anomaly_p):
    mask_roi = label_pixel_gt < 255
    labels_in_roi = label_pixel_gt[mask_roi]
    predictions_in_roi = anomaly_p[mask_roi]
    return binary_confusion_matrix(predictions_in_roi, labels_in_roi.astype(bool), 768)


# --- pixel_classification.py:221-250 aggregate_dynamic_bins ------------------
def aggregate_dynamic_bins(frame_results, kind=None):
    thresholds = np.concatenate([r["bin_edges"][1:] for r in frame_results])
    tp_relative = np.concatenate([r["tp_rel"] for r in frame_results], axis=0)
    fp_relative = np.concatenate([r["fp_rel"] for r in frame_results], axis=0)
    num_positives = sum(r["num_pos"] for r in frame_results)
    num_negatives = sum(r["num_neg"] for r in frame_results)
    order = np.argsort(thresholds) if kind is None else np.argsort(thresholds, kind=kind)
    threshold_order = order[::-1]
    tp_cumu = np.cumsum(tp_relative[threshold_order].astype(np.float64))
    fp_cumu = np.cumsum(fp_relative[threshold_order].astype(np.float64))
    cmats = np.array([
        [tp_cumu, fp_cumu],
        [num_positives - tp_cumu, num_negatives - fp_cumu],
    ]).transpose([2, 0, 1])
    return cmats, thresholds[threshold_order]


# --- pixel_classification_curves.py:52-183 curves_from_cmats -----------------
def curves_from_cmats(cmats, thresholds):
    thr_unique_indices = np.concatenate([
        [0],
        np.nonzero(thresholds[:-1] != thresholds[1:])[0],
        [cmats.__len__() - 1],
    ])
    cmats = cmats[thr_unique_indices]
    thresholds = thresholds[thr_unique_indices]
    tp = cmats[:, 0, 0]
    fp = cmats[:, 0, 1]
    fn = cmats[:, 1, 0]
    tn = cmats[:, 1, 1]
    num_pos = tp[0] + fn[0]
    num_neg = fp[0] + tn[0]
    if tp[0] != 0 or fp[0] != 0:
        tp = np.concatenate([[0], tp])
        fp = np.concatenate([[0], fp])
        fn = np.concatenate([[num_pos], fn])
        tn = np.concatenate([[num_neg], tn])
        thresholds = np.concatenate([[float(np.max(thresholds)) + 1], thresholds])
    if tp[-1] != num_pos or fp[-1] != num_neg:
        tp = np.concatenate([tp, [num_pos]])
        fp = np.concatenate([fp, [num_neg]])
        fn = np.concatenate([fn, [0]])
        tn = np.concatenate([tn, [0]])
        thresholds = np.concatenate([thresholds, [float(np.max(thresholds)) - 1]])
    num_steps = tp.shape[0]
    tp_rates = tp / (tp + fn)
    fp_rates = fp / (fp + tn)
    n_preds = tp + fp
    precisions = np.ones(num_steps, np.float64)
    precisions[n_preds > 0] = tp[n_preds > 0] / n_preds[n_preds > 0]
    recalls = tp / (tp + fn)
    tpr95_index = np.searchsorted(tp_rates, 0.95)
    if tpr95_index < tp_rates.shape[0]:
        fpr_tpr95 = fp_rates[tpr95_index]
    else:
        fpr_tpr95 = 1.0
    ap = np.sum(np.diff(recalls) * precisions[1:])
    # l.122, 136, 151-152: the component threshold (instance_segmentation.py:362-366
    # reads best_f1_threshold back; default_instancer l.25 binarises `anomaly_p > thresh_p`)
    f1_scores = (2 * tp) / (2 * tp + fp + fn)
    ix = np.nanargmax(f1_scores)
    best_f1_threshold = float(thresholds[ix])
    best_f1 = float(f1_scores[ix])
    return dict(auroc=float(trapz(tp_rates, fp_rates)), aupr=float(ap), fpr95=float(fpr_tpr95), curve_points=int(num_steps),
                best_f1=best_f1, best_f1_threshold=best_f1_threshold)


CURVE_KEYS = ("auroc", "aupr", "fpr95", "curve_points")


def smiyc(frames, kind=None):
    # evaluation.py:65: anomaly_p.astype(np.float16)
    res = [process_frame(lab, sc.astype(np.float16)) for sc, lab in frames]
    return curves_from_cmats(*aggregate_dynamic_bins(res, kind))


def top_tied(frames):
    tops = []
    for sc, lab in frames:
        r = process_frame(lab, sc.astype(np.float16))
        tops.append(r["bin_edges"][1])
    return sum(t == max(tops) for t in tops) > 1


def cases():
    rng = np.random.default_rng(18)
    out = {}

    def frame(h, w, p_anom, sep, grid=None, void=0.05):
        lab = (rng.random((h, w)) < p_anom).astype(np.uint8)
        lab[rng.random((h, w)) < void] = 255
        sc = rng.normal(0.0, 1.0, (h, w)) + sep * (lab == 1)
        sc = 1.0 / (1.0 + np.exp(-sc))
        if grid:
            sc = np.round(sc * grid) / grid
        return sc.astype(np.float32), lab

    # continuous scores, > 384 pixels per class, one frame without anomalies
    f = [frame(30, 40, 0.3, 1.5) for _ in range(3)]
    f.append(frame(20, 30, 0.0, 0.0))
    f.append(frame(25, 25, 0.5, 2.0))
    out["continuous"] = f
    # ties: a coarse grid (many equal float16 values, quantiles on ties)
    out["ties"] = [frame(24, 24, 0.2, 1.0, grid=20) for _ in range(4)] + [frame(16, 16, 0.0, 0.0, grid=20)]
    # small frames (fewer than 384 pixels per class: every value a quantile),
    # float16 collisions near 1, an only-anomaly frame, a single pixel class
    g = [frame(9, 11, 0.4, 3.0) for _ in range(3)]
    s, l = frame(6, 7, 1.0, 0.5, void=0.2)
    g.append((s, l))
    s, l = frame(8, 8, 0.0, 0.0)
    l[3, 4] = 1
    g.append((s, l))
    s = (0.999 + 0.001 * rng.random((10, 10))).astype(np.float32)
    l = (rng.random((10, 10)) < 0.5).astype(np.uint8)
    g.append((s, l))
    out["small"] = g
    # scores outside [0, 1] (logits), wide range
    out["logits"] = [(rng.normal(0, 20, (20, 20)).astype(np.float32) + 30 * (l == 1), l)
                     for l in [(rng.random((20, 20)) < 0.25).astype(np.uint8) for _ in range(3)]]
    # saturated scores: several frames share the highest threshold (1.0), the
    # one case where the order of np.argsort among equal thresholds matters
    out["saturated"] = [(np.minimum(sc * 1.6, 1.0).astype(np.float32), lab)
                        for sc, lab in [frame(20, 24, 0.3, 2.0) for _ in range(4)]]
    return out


def main():
    res = {"source": "SegmentMeIfYouCan/road-anomaly-benchmark@1c7804e0749686452eb02bbcfb81234e38795f8a",
           "numpy": np.__version__, "cases": {}}
    for name, frames in cases().items():
        off = smiyc(frames)
        st = smiyc(frames, "stable")
        res["cases"][name] = {
            "frames": [{"h": int(sc.shape[0]), "w": int(sc.shape[1]),
                        "scores": [float(x) for x in sc.ravel()], "labels": [int(x) for x in lab.ravel()]}
                       for sc, lab in frames],
            "official": off,
            "stable": st,
            "top_tied": bool(top_tied(frames)),
            # the pixel metrics only (as before the component threshold was added)
            "default_sort_equals_stable": all(off[k] == st[k] for k in CURVE_KEYS),
            "default_sort_threshold_equals_stable": off["best_f1_threshold"] == st["best_f1_threshold"],
        }
        print(name, "official", off, "stable == official:", off == st, "top tied:", top_tied(frames))
    p = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "smiyc_binned.json")
    with open(p, "w") as fh:
        json.dump(res, fh)
        fh.write("\n")


if __name__ == "__main__":
    main()
