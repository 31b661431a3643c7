#!/usr/bin/env python3
"""Regenerate the metric-convention fixtures of tests/conventions.rs.

    python3 scripts/gen_convention_fixtures.py   # writes tests/fixtures/conventions/

Each case is a folder `<case>/scores/*.npy` (float32 [H, W], values in [0, 1],
higher = more anomalous) and `<case>/masks/*.npy` (uint8: 0 normal,
1 anomaly, 255 void) that `bench eval` reads, and `expected.json` holds, per
case, the numbers that each anchor's own formula gives on the same pixels:

  switches  one `bench eval` flag set each (fpr95 rule, aupr rule, score
            precision, per-image average, normal positive), each computed by
            the code that defines it (see FPR95 / AUPR below);
  presets   `--convention <name>`: the anchor's evaluation function, copied
            (numpy / scikit-learn code) or ported line by line to numpy where
            it needs torch (torch is not installed here), cited below.

Anchors (the commit read; the code below follows that file):
  scikit-learn   (version in expected.json) roc_auc_score, average_precision_score,
                 roc_curve, precision_recall_curve, auc
  ood-metrics    1.1.2 (pip package, called directly) = tayden/ood-metrics
                 @4544abec0a57067c9092f21e99b601e38833ff1d ood_metrics/metrics.py
  hendrycks/anomaly-seg @4e7b1de5049500c30c07cef6925a96dd5304791b
                 anom_utils.py (copied verbatim), eval_ood.py eval_ood_measure
  Jingkang50/OpenOOD @3c35632ee91b54b09d1f085d04f94744cece7d0b
                 openood/evaluators/metrics.py auc_and_fpr_recall, fpr_recall (copied)
  NazirNayal8/RbA @cf263d54197822f6d353e10d1e197f6767c9db7f
                 support.py OODEvaluator.calculate_auroc (copied)
  hermannsblum/bdl-benchmark @03773d621374ed10122866e64943df77ff8fbf50
                 bdlb/fishyscapes/benchmark.py calculate_metrics_perpixAP (copied)
  SegmentMeIfYouCan/road-anomaly-benchmark @1c7804e0749686452eb02bbcfb81234e38795f8a
                 evaluation.py save_output (astype(np.float16));
                 metrics/pixel_classification_curves.py curves_from_cmats (copied),
                 fed with exact confusion matrices at every distinct threshold
                 (no 768-bin approximation)
  kkirchheim/pytorch-ood @d04767360a382d2ea1678d5a571cae66b73e5206
                 src/pytorch_ood/utils/metrics.py OODMetrics._compute, fpr_at_tpr,
                 ported to numpy float64 together with the torchmetrics functions
                 it calls (Lightning-AI/torchmetrics @dab033394560ab3ce05e3d14c13f32e4cde6b351:
                 functional/classification/precision_recall_curve.py _binary_clf_curve,
                 _binary_precision_recall_curve_compute; roc.py _binary_roc_compute;
                 utilities/compute.py _auc_compute). torchmetrics itself works in
                 float32 on GPU tensors; the port uses float64.
  openvinotoolkit/anomalib @161bb369547d06df29d468e4980ddefae25a0ba5
                 src/anomalib/metrics/aupr.py (auc(rec, prec, reorder=True)), auroc.py
  valeoai/bravo_challenge @d54005ddd6cd26ae72cd1593a66b9c15bc589fb9
                 bravo_toolkit/eval/metrics.py get_auroc, get_auprc, get_tp_fp_counts;
                 eval/eval_script.py get_curve_metrics (copied); the score is
                 quantised as min(floor(s * 65536), 65535) (bench's u16)

F1 where an anchor reports none: scikit-learn's best F1 over
precision_recall_curve (as tests/fixtures/metrics.json) on the same
(rounded) scores, per image and averaged for average = images.
Presets whose anchor reports no FPR95-In (OpenOOD, pytorch-ood) get the
anchor's own FPR function called with the classes swapped and the score
negated. numpy / scikit-learn versions: expected.json "generator".
"""

import json
import os
import sys

import numpy as np
import sklearn
import sklearn.metrics as sk
from sklearn import metrics

import ood_metrics

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "conventions")


# ---------------------------------------------------------------- anom_utils.py (verbatim)
recall_level_default = 0.95


def stable_cumsum(arr, rtol=1e-05, atol=1e-08):
    out = np.cumsum(arr, dtype=np.float64)
    expected = np.sum(arr, dtype=np.float64)
    if not np.allclose(out[-1], expected, rtol=rtol, atol=atol):
        raise RuntimeError('cumsum was found to be unstable: '
                           'its last element does not correspond to sum')
    return out


def fpr_and_fdr_at_recall(y_true, y_score, recall_level=recall_level_default, pos_label=None):
    classes = np.unique(y_true)
    if (pos_label is None and
            not (np.array_equal(classes, [0, 1]) or
                     np.array_equal(classes, [-1, 1]) or
                     np.array_equal(classes, [0]) or
                     np.array_equal(classes, [-1]) or
                     np.array_equal(classes, [1]))):
        raise ValueError("Data is not binary and pos_label is not specified")
    elif pos_label is None:
        pos_label = 1.
    y_true = (y_true == pos_label)
    desc_score_indices = np.argsort(y_score, kind="mergesort")[::-1]
    y_score = y_score[desc_score_indices]
    y_true = y_true[desc_score_indices]
    distinct_value_indices = np.where(np.diff(y_score))[0]
    threshold_idxs = np.r_[distinct_value_indices, y_true.size - 1]
    tps = stable_cumsum(y_true)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    thresholds = y_score[threshold_idxs]
    recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    recall, fps, tps, thresholds = np.r_[recall[sl], 1], np.r_[fps[sl], 0], np.r_[tps[sl], 0], thresholds[sl]
    cutoff = np.argmin(np.abs(recall - recall_level))
    return fps[cutoff] / (np.sum(np.logical_not(y_true)))


def get_measures(_pos, _neg, recall_level=recall_level_default):
    pos = np.array(_pos[:]).reshape((-1, 1))
    neg = np.array(_neg[:]).reshape((-1, 1))
    examples = np.squeeze(np.vstack((pos, neg)))
    labels = np.zeros(len(examples), dtype=np.int32)
    labels[:len(pos)] += 1
    auroc = sk.roc_auc_score(labels, examples)
    aupr = sk.average_precision_score(labels, examples)
    fpr = fpr_and_fdr_at_recall(labels, examples, recall_level)
    return auroc, aupr, fpr


# eval_ood.py eval_ood_measure, with `conf` = -score (bench's score is the
# anomaly score; eval_ood negates the confidence), out_label = anomaly.
def eval_ood_measure(conf, out_label):
    in_scores = - conf[np.logical_not(out_label)]
    out_scores = - conf[out_label]
    if (len(out_scores) != 0) and (len(in_scores) != 0):
        return get_measures(out_scores, in_scores)
    return None


# ---------------------------------------------------------------- OpenOOD metrics.py (verbatim)
def fpr_recall(conf, label, tpr):
    gt = np.ones_like(label)
    gt[label == -1] = 0
    fpr_list, tpr_list, threshold_list = metrics.roc_curve(gt, conf)
    fpr = fpr_list[np.argmax(tpr_list >= tpr)]
    thresh = threshold_list[np.argmax(tpr_list >= tpr)]
    return fpr, thresh


def auc_and_fpr_recall(conf, label, tpr_th):
    ood_indicator = np.zeros_like(label)
    ood_indicator[label == -1] = 1
    fpr_list, tpr_list, thresholds = metrics.roc_curve(ood_indicator, -conf)
    fpr = fpr_list[np.argmax(tpr_list >= tpr_th)]
    precision_in, recall_in, thresholds_in \
        = metrics.precision_recall_curve(1 - ood_indicator, conf)
    precision_out, recall_out, thresholds_out \
        = metrics.precision_recall_curve(ood_indicator, -conf)
    auroc = metrics.auc(fpr_list, tpr_list)
    aupr_in = metrics.auc(recall_in, precision_in)
    aupr_out = metrics.auc(recall_out, precision_out)
    return auroc, aupr_in, aupr_out, fpr


# ---------------------------------------------------------------- RbA support.py (verbatim)
def rba_calculate_auroc(conf, gt):
    fpr, tpr, threshold = metrics.roc_curve(gt, conf)
    roc_auc = metrics.auc(fpr, tpr)
    fpr_best = 0
    for i, j, k in zip(tpr, fpr, threshold):
        if i > 0.95:
            fpr_best = j
            break
    return roc_auc, fpr_best, k


# ---------------------------------------------------------------- Fishyscapes (verbatim, curve sampling dropped)
def calculate_metrics_perpixAP(labels, uncertainties):
    pos = labels == 1
    valid = np.logical_or(labels == 1, labels == 0)
    gt = pos[valid]
    uncertainty = uncertainties[valid].reshape(-1).astype(np.float32, copy=False)
    sorted_indices = np.argsort(uncertainty, kind='mergesort')[::-1]
    uncertainty, gt = uncertainty[sorted_indices], gt[sorted_indices]
    distinct_value_indices = np.where(np.diff(uncertainty))[0]
    threshold_idxs = np.r_[distinct_value_indices, gt.size - 1]
    tps = np.cumsum(gt, dtype=np.uint64)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    precision = tps / (tps + fps)
    precision[np.isnan(precision)] = 0
    recall = tps / tps[-1]
    sl = slice(tps.searchsorted(tps[-1]), None, -1)
    precision = np.r_[precision[sl], 1]
    recall = np.r_[recall[sl], 0]
    average_precision = -np.sum(np.diff(recall) * precision[:-1])
    if tps.size == 0 or fps[0] != 0 or tps[0] != 0:
        tps = np.r_[0., tps]
        fps = np.r_[0., fps]
    tpr = tps / tps[-1]
    fpr = fps / fps[-1]
    auroc = np.trapz(tpr, fpr) if hasattr(np, "trapz") else np.trapezoid(tpr, fpr)
    fpr_tpr95 = fpr[np.searchsorted(tpr, 0.95)]
    return {'auroc': auroc, 'AP': average_precision, 'FPR@95%TPR': fpr_tpr95}


def trapz(y, x):
    return np.trapezoid(y, x) if hasattr(np, "trapezoid") else np.trapz(y, x)


# ---------------------------------------------------------------- SMIYC curves_from_cmats (verbatim, printing dropped)
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
    f1_scores = (2 * tp) / (2 * tp + fp + fn)
    tpr95_index = np.searchsorted(tp_rates, 0.95)
    if tpr95_index < tp_rates.shape[0]:
        fpr_tpr95 = fp_rates[tpr95_index]
    else:
        fpr_tpr95 = 1.0
    ix = np.nanargmax(f1_scores)
    best_f1 = f1_scores[ix]
    ap = np.sum(np.diff(recalls) * precisions[1:])
    return dict(area_ROC=trapz(tp_rates, fp_rates), area_PRC=ap, tpr95_fpr=fpr_tpr95, best_f1=best_f1)


def smiyc_exact(y, s):
    """Exact confusion matrices (score >= t) at every distinct threshold,
    descending, in SMIYC's [[tp, fp], [fn, tn]] layout."""
    t = np.unique(s)[::-1]
    cm = []
    P, N = y.sum(), (~y).sum()
    for th in t:
        tp = int(((s >= th) & y).sum())
        fp = int(((s >= th) & ~y).sum())
        cm.append([[tp, fp], [P - tp, N - fp]])
    return curves_from_cmats(np.array(cm, dtype=np.int64), t.astype(np.float64))


# ---------------------------------------------------------------- torchmetrics / pytorch-ood, ported to numpy
def tm_binary_clf_curve(preds, target):
    desc = np.argsort(-preds, kind="stable")  # torch.argsort(descending=True)
    preds, target = preds[desc], target[desc]
    distinct = np.nonzero(preds[1:] - preds[:-1])[0]
    threshold_idxs = np.concatenate([distinct, [target.size - 1]])
    tps = np.cumsum(target)[threshold_idxs].astype(np.float64)
    fps = 1 + threshold_idxs - tps
    return fps, tps, preds[threshold_idxs]


def tm_precision_recall_curve(preds, target):
    fps, tps, thr = tm_binary_clf_curve(preds, target)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    precision = np.concatenate([precision[::-1], [1.0]])
    recall = np.concatenate([recall[::-1], [0.0]])
    return precision, recall


def tm_roc(preds, target):
    fps, tps, thr = tm_binary_clf_curve(preds, target)
    tps = np.concatenate([[0.0], tps])
    fps = np.concatenate([[0.0], fps])
    return fps / fps[-1], tps / tps[-1]


def tm_auc(x, y, reorder=False):
    if reorder:
        idx = np.argsort(x, kind="stable")
        x, y = x[idx], y[idx]
    dx = x[1:] - x[:-1]
    direction = 1.0
    if (dx < 0).any():
        assert (dx <= 0).all()
        direction = -1.0
    return trapz(y, x) * direction


def ptood_fpr_at_tpr(pred, target, k=0.95):
    fpr, tpr = tm_roc(pred, target)
    idx = np.searchsorted(tpr, k)  # torch.searchsorted, left
    if idx == fpr.shape[0]:
        return fpr[idx - 1]
    return fpr[idx]


def ptood_compute(labels_ood, scores):
    """OODMetrics._compute: labels already mapped OOD -> 1."""
    labels = labels_ood.astype(np.int64)
    idx = np.argsort(scores, kind="stable")
    scores, labels = scores[idx], labels[idx]
    auroc = sk.roc_auc_score(labels, scores)  # binary_auroc (exact)
    p, r = tm_precision_recall_curve(scores, labels)
    aupr_out = tm_auc(r, p)
    p, r = tm_precision_recall_curve(-scores, 1 - labels)
    aupr_in = tm_auc(r, p)
    fpr = ptood_fpr_at_tpr(scores, labels)
    fpr_in = ptood_fpr_at_tpr(-scores, 1 - labels)  # swapped, for bench's fpr95_in
    return {"AUROC": auroc, "AUPR-IN": aupr_in, "AUPR-OUT": aupr_out, "FPR95TPR": fpr, "FPR95-IN": fpr_in}


# ---------------------------------------------------------------- BRAVO (verbatim)
def get_auroc(tp_counts, fp_counts):
    tp_counts = tp_counts.ravel()
    fp_counts = fp_counts.ravel()
    tp_cumsum = np.cumsum(tp_counts[::-1])
    fp_cumsum = np.cumsum(fp_counts[::-1])
    p_total = tp_cumsum[-1]
    n_total = fp_cumsum[-1]
    tpr = tp_cumsum / p_total
    fpr = fp_cumsum / n_total
    tpr = np.concatenate(([0.], tpr))
    fpr = np.concatenate(([0.], fpr))
    auc = trapz(tpr, fpr)
    return auc, tpr, fpr


def get_auprc(tp_counts, fp_counts):
    tp_counts = tp_counts.ravel()
    fp_counts = fp_counts.ravel()
    tp_cumsum = np.cumsum(tp_counts[::-1])
    fp_cumsum = np.cumsum(fp_counts[::-1])
    p_total = tp_cumsum[-1]
    pp_cumsum = tp_cumsum + fp_cumsum
    with np.errstate(divide='ignore', invalid='ignore'):
        precision = np.where(pp_cumsum == 0, 1., tp_cumsum / pp_cumsum)
    recall = (tp_cumsum / p_total) if p_total > 0 else tp_cumsum
    precision = np.concatenate(([1.], precision))
    recall = np.concatenate(([0.], recall))
    auc = np.sum(np.diff(recall) * precision[1:])
    return auc, precision, recall


def get_tp_fp_counts(y_true, y_score, tp_counts=None, fp_counts=None, *, score_levels=128):
    y_true = y_true.ravel()
    y_score = y_score.ravel()
    sorted_indices = np.argsort(y_score)
    y_true = y_true[sorted_indices]
    y_score = y_score[sorted_indices]
    tp_counts = np.zeros(score_levels) if tp_counts is None else tp_counts
    fp_counts = np.zeros(score_levels) if fp_counts is None else fp_counts
    np.add.at(tp_counts, y_score, y_true)
    np.add.at(fp_counts, y_score, ~y_true)
    return tp_counts, fp_counts


def bravo_curve_metrics(y, q, tpr_th=0.95):
    tp_counts, fp_counts = get_tp_fp_counts(y, q.astype(np.int64), score_levels=65536)
    auroc, tprs, fprs = get_auroc(tp_counts, fp_counts)
    tpr_th_i = np.searchsorted(tprs, tpr_th, 'left')
    fpr_at_tpr_th = fprs[tpr_th_i]
    auprc_pos, _, _ = get_auprc(tp_counts, fp_counts)
    return auroc, fpr_at_tpr_th, auprc_pos


# ---------------------------------------------------------------- generic pieces
def best_f1(y, s):
    p, r, t = sk.precision_recall_curve(y, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(p + r == 0, 0.0, 2 * p * r / (p + r))
    return float(f1[:-1].max())


def fpr_rule(rule, y, s):
    if rule == "first":  # Fishyscapes' searchsorted on the full curve
        return calculate_metrics_perpixAP(y.astype(np.uint8), s)["FPR@95%TPR"]
    if rule == "strict":
        return rba_calculate_auroc(s, y.astype(np.int64))[1]
    if rule == "interp":
        return ood_metrics.fpr_at_95_tpr(s, y.astype(np.int64))
    if rule == "nearest":
        return fpr_and_fdr_at_recall(y.astype(np.int32), s)
    if rule == "thinned":  # OpenOOD: conf = -score, OOD label -1
        return auc_and_fpr_recall(-s, np.where(y, -1, 0), 0.95)[3]
    raise ValueError(rule)


def aupr_rule(rule, y, s):
    if rule == "ap":
        return sk.average_precision_score(y, s)
    if rule == "trapezoid":
        p, r, _ = sk.precision_recall_curve(y, s)
        return sk.auc(r, p)
    if rule == "trapezoid_reorder":
        p, r = tm_precision_recall_curve(s, y.astype(np.int64))
        return tm_auc(r, p, reorder=True)
    raise ValueError(rule)


def f16(s):
    return s.astype(np.float16).astype(np.float64)


def u16(s):
    return np.minimum(np.floor(s.astype(np.float32) * np.float32(65536)), 65535).astype(np.float64)


def pooled(imgs):
    s = np.concatenate([i[0][i[1] != 255] for i in imgs]).astype(np.float64)
    y = np.concatenate([i[1][i[1] != 255] == 1 for i in imgs])
    return y, s


def per_image(imgs):
    for sc, m in imgs:
        v = m != 255
        y, s = m[v] == 1, sc[v].astype(np.float64)
        yield y, s


def both(y):
    return y.any() and (~y).any()


def generic(imgs, fpr="first", aupr="ap", prec=None, average="pixels", normal=False):
    def one(y, s):
        s = prec(s) if prec else s
        d = dict(auroc=sk.roc_auc_score(y, s), aupr=aupr_rule(aupr, y, s), fpr95=fpr_rule(fpr, y, s), f1=best_f1(y, s))
        if normal:
            d["aupr_in"] = aupr_rule(aupr, ~y, -s)
            d["fpr95_in"] = fpr_rule(fpr, ~y, -s)
        return d
    if average == "pixels":
        return one(*pooled(imgs))
    vals = [one(y, s) for y, s in per_image(imgs) if both(y)]
    out = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
    out["images_skipped"] = sum(1 for y, _ in per_image(imgs) if not both(y))
    return out


def presets(imgs):
    out = {}
    y, s = pooled(imgs)
    out["sklearn"] = dict(auroc=sk.roc_auc_score(y, s), aupr=sk.average_precision_score(y, s),
                          fpr95=fpr_rule("first", y, s), f1=best_f1(y, s))
    sh = f16(s)
    r = smiyc_exact(y, sh)
    out["smiyc"] = dict(auroc=r["area_ROC"], aupr=r["area_PRC"], fpr95=r["tpr95_fpr"], f1=r["best_f1"])
    ys = [m for _, m in imgs]
    r = calculate_metrics_perpixAP(np.concatenate([m.ravel() for m in ys]),
                                   np.concatenate([sc.ravel() for sc, _ in imgs]))
    out["fishyscapes"] = dict(auroc=r["auroc"], aupr=r["AP"], fpr95=r["FPR@95%TPR"], f1=best_f1(y, s))
    # StreetHazards: eval_ood_measure per image (void removed as bench does), mean
    au, ap, fp, f1, skipped = [], [], [], [], 0
    for yi, si in per_image(imgs):
        res = eval_ood_measure(-si, yi)
        if res is None:
            skipped += 1
            continue
        au.append(res[0]); ap.append(res[1]); fp.append(res[2]); f1.append(best_f1(yi, si))
    out["streethazards"] = dict(auroc=np.mean(au), aupr=np.mean(ap), fpr95=np.mean(fp), f1=np.mean(f1), images_skipped=skipped)
    lab = np.where(y, -1, 0)
    auroc, aupr_in, aupr_out, fpr = auc_and_fpr_recall(-s, lab, 0.95)
    fpr_in = fpr_recall(-s, lab, 0.95)[0]
    out["openood"] = dict(auroc=auroc, aupr=aupr_out, fpr95=fpr, f1=best_f1(y, s), aupr_in=aupr_in, fpr95_in=fpr_in)
    r = ptood_compute(y, s)
    out["pytorch-ood"] = dict(auroc=r["AUROC"], aupr=r["AUPR-OUT"], fpr95=r["FPR95TPR"], f1=best_f1(y, s),
                              aupr_in=r["AUPR-IN"], fpr95_in=r["FPR95-IN"])
    rs, f1s, skipped = [], [], 0
    for yi, si in per_image(imgs):
        if not both(yi):
            skipped += 1  # pytorch-ood raises ValueError here; bench skips and counts
            continue
        rs.append(ptood_compute(yi, si)); f1s.append(best_f1(yi, si))
    m = lambda k: float(np.mean([x[k] for x in rs]))
    out["pytorch-ood-seg"] = dict(auroc=m("AUROC"), aupr=m("AUPR-OUT"), fpr95=m("FPR95TPR"), f1=float(np.mean(f1s)),
                                  aupr_in=m("AUPR-IN"), fpr95_in=m("FPR95-IN"), images_skipped=skipped)
    # ood-metrics: normality scores, normal = positive (label 1)
    r = ood_metrics.calc_metrics(-s, (~y).astype(np.int64))
    out["ood-metrics"] = dict(auroc=r["auroc"], aupr=r["aupr_out"], fpr95=ood_metrics.fpr_at_95_tpr(s, y.astype(np.int64)),
                              f1=best_f1(y, s), aupr_in=r["aupr_in"], fpr95_in=r["fpr_at_95_tpr"])
    p, rr = tm_precision_recall_curve(s, y.astype(np.int64))
    fpr_l, tpr_l = tm_roc(s, y.astype(np.int64))
    out["anomalib"] = dict(auroc=tm_auc(fpr_l, tpr_l, reorder=True), aupr=tm_auc(rr, p, reorder=True),
                           fpr95=fpr_rule("first", y, s), f1=best_f1(y, s))
    q = u16(s)
    auroc, fpr, auprc = bravo_curve_metrics(y, q)
    out["bravo"] = dict(auroc=auroc, aupr=auprc, fpr95=fpr, f1=best_f1(y, q))
    return out


SWITCHES = [
    ("fpr95=first", dict(fpr="first"), ["--fpr95", "first"]),
    ("fpr95=strict", dict(fpr="strict"), ["--fpr95", "strict"]),
    ("fpr95=interp", dict(fpr="interp"), ["--fpr95", "interp"]),
    ("fpr95=nearest", dict(fpr="nearest"), ["--fpr95", "nearest"]),
    ("fpr95=thinned", dict(fpr="thinned"), ["--fpr95", "thinned"]),
    ("aupr=ap", dict(aupr="ap"), ["--aupr", "ap"]),
    ("aupr=trapezoid", dict(aupr="trapezoid"), ["--aupr", "trapezoid"]),
    ("aupr=trapezoid_reorder", dict(aupr="trapezoid_reorder"), ["--aupr", "trapezoid_reorder"]),
    ("score_precision=f16", dict(prec=f16), ["--score-precision", "f16"]),
    ("score_precision=u16", dict(prec=u16), ["--score-precision", "u16"]),
    ("average=images", dict(average="images"), ["--average", "images"]),
    ("average=images,fpr95=nearest", dict(average="images", fpr="nearest"), ["--average", "images", "--fpr95", "nearest"]),
    ("positive=normal", dict(normal=True), ["--positive", "normal"]),
    ("positive=normal,fpr95=interp,aupr=trapezoid", dict(normal=True, fpr="interp", aupr="trapezoid"),
     ["--positive", "normal", "--fpr95", "interp", "--aupr", "trapezoid"]),
    ("positive=normal,fpr95=thinned", dict(normal=True, fpr="thinned"), ["--positive", "normal", "--fpr95", "thinned"]),
    ("positive=normal,fpr95=nearest,average=images", dict(normal=True, fpr="nearest", average="images"),
     ["--positive", "normal", "--fpr95", "nearest", "--average", "images"]),
    ("score_precision=f16,fpr95=strict,aupr=trapezoid", dict(prec=f16, fpr="strict", aupr="trapezoid"),
     ["--score-precision", "f16", "--fpr95", "strict", "--aupr", "trapezoid"]),
]


def make_cases():
    rng = np.random.default_rng(18)
    cases = {}
    # ties: scores on a 1/8 grid, void, one image without anomalies
    imgs = []
    for k in range(5):
        sc = (rng.integers(0, 9, size=(8, 10)) / 8.0).astype(np.float32)
        m = np.zeros((8, 10), np.uint8)
        if k != 2:
            m[rng.random((8, 10)) < 0.3] = 1
            sc[m == 1] = np.minimum(sc[m == 1] + np.float32(0.25), 1.0)
        m[rng.random((8, 10)) < 0.1] = 255
        imgs.append((sc, m))
    cases["ties"] = imgs
    # TPR exactly 0.95: 40 anomaly pixels, 2 per score level 0.5..0.975, so
    # tp = 38 (0.95 · 40) at a threshold shared with normal pixels
    imgs = []
    for k in range(2):
        sc = np.zeros((10, 10), np.float32)
        m = np.zeros((10, 10), np.uint8)
        lv = np.arange(20, 40) / 40.0
        pos = np.concatenate([lv[k::2], lv[k::2]])  # 20 per image
        sc.flat[:20] = pos
        m.flat[:20] = 1
        sc.flat[20:] = np.round(rng.random(80) * 40) / 40.0
        imgs.append((sc.astype(np.float32), m))
    cases["tpr95"] = imgs
    # f16: f32-distinct scores that collide in float16
    imgs = []
    for k in range(3):
        sc = (0.6 + rng.random((12, 12)) * 0.004).astype(np.float32)
        m = (rng.random((12, 12)) < 0.25).astype(np.uint8)
        sc[m == 1] += np.float32(0.0008)
        if k == 1:
            m[:] = 0
        m[0, :3] = 255
        imgs.append((sc, m))
    cases["f16"] = imgs
    # random: continuous scores, no ties
    imgs = []
    for k in range(4):
        m = (rng.random((16, 20)) < 0.15).astype(np.uint8)
        sc = np.clip(rng.normal(0.4, 0.15, (16, 20)) + 0.2 * m, 0, 1).astype(np.float32)
        m[:2, :] = 255
        imgs.append((sc, m))
    cases["random"] = imgs
    return cases


def main():
    cases = make_cases()
    expected = {
        "generator": {
            "script": "scripts/gen_convention_fixtures.py",
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "ood-metrics": "1.1.2 (pip) = tayden/ood-metrics@4544abec0a57067c9092f21e99b601e38833ff1d",
            "anchors": {
                "hendrycks/anomaly-seg": "4e7b1de5049500c30c07cef6925a96dd5304791b",
                "Jingkang50/OpenOOD": "3c35632ee91b54b09d1f085d04f94744cece7d0b",
                "NazirNayal8/RbA": "cf263d54197822f6d353e10d1e197f6767c9db7f",
                "hermannsblum/bdl-benchmark": "03773d621374ed10122866e64943df77ff8fbf50",
                "SegmentMeIfYouCan/road-anomaly-benchmark": "1c7804e0749686452eb02bbcfb81234e38795f8a",
                "kkirchheim/pytorch-ood": "d04767360a382d2ea1678d5a571cae66b73e5206",
                "Lightning-AI/torchmetrics": "dab033394560ab3ce05e3d14c13f32e4cde6b351",
                "openvinotoolkit/anomalib": "161bb369547d06df29d468e4980ddefae25a0ba5",
                "valeoai/bravo_challenge": "d54005ddd6cd26ae72cd1593a66b9c15bc589fb9",
            },
        },
        "cases": {},
    }
    for name, imgs in cases.items():
        d = os.path.join(OUT, name)
        os.makedirs(os.path.join(d, "scores"), exist_ok=True)
        os.makedirs(os.path.join(d, "masks"), exist_ok=True)
        for k, (sc, m) in enumerate(imgs):
            np.save(os.path.join(d, "scores", f"img{k}.npy"), sc.astype(np.float32))
            np.save(os.path.join(d, "masks", f"img{k}.npy"), m.astype(np.uint8))
        sw = []
        for key, kw, flags in SWITCHES:
            sw.append({"name": key, "flags": flags, "expect": {k: float(v) for k, v in generic(imgs, **kw).items()}})
        pr = {k: {kk: float(vv) for kk, vv in v.items()} for k, v in presets(imgs).items()}
        expected["cases"][name] = {"switches": sw, "presets": pr}
    y, s = pooled(cases["tpr95"])
    assert y.sum() == 40 and ((s[y] >= np.float32(21 / 40)).sum() / 40.0) == 0.95  # TPR exactly 0.95 is attained
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    sys.exit(main())
