#!/usr/bin/env python3
"""numpy oracle of drift sensitivity (issue 17): a drifted copy of test.

Writes tests/fixtures/drift/: a tiny dataset (val, test and the drifted
copy `test@shift`: the same image ids and masks, every image's logits
scaled and shifted by its own factor, plus noise) with float32 logits of
one model `m`, and expected.json with, for Max Logit (score = -max_c z,
exact in float32), straight from the definitions:

- test and drifted pixel AUROC (sklearn roc_auc_score), AUPR
  (average_precision_score), FPR95 (FPR at the first threshold, descending,
  where TPR >= 0.95), best F1, image AUROC / AUPR (image score = max of the
  non-void pixels; an image is anomalous when it has an anomaly pixel), and
  their changes drifted - test;
- the deployed thresholds chosen on val (pixel f1_optimal = the lowest
  score attaining the best F1; per level frr_at_far(b) = highest t with
  FAR_val(t) <= b, far_at_frr(b) = lowest val score with FRR_val(t) <= b;
  the functions of gen_operating_fixtures.py) and FAR / FRR on test and on
  the drifted split at each, unchanged (score >= t rejects);
- the dashboard values of normal pixels / images: mean, p95 (numpy's
  linear percentile), reject rate at the hard threshold (far_at_frr at the
  first FRR budget), per split.

    python3 scripts/gen_drift_fixtures.py    # rewrites tests/fixtures/drift/
"""
import json
import os
import shutil
import sys

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_operating_fixtures import far_at_frr, frr_at_far, image_scores, pixels  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "drift")
H, W, C = 12, 16, 3
FAR, FRR = [0.05], [0.1]
rng = np.random.default_rng(17)


def mask(i):
    m = np.zeros((H, W), np.uint8)
    if i % 3 != 2:  # every third image is normal only
        y, x = rng.integers(1, H - 5), rng.integers(1, W - 6)
        m[y:y + 4, x:x + 5] = 1
    m[0, :] = 255
    return m


def logits(m):
    cls = rng.integers(0, C, size=(H, W))
    z = rng.normal(0.0, 1.0, size=(C, H, W))
    conf = np.where(m == 1, rng.normal(1.0, 0.8, size=(H, W)), rng.normal(3.5, 1.0, size=(H, W)))
    np.put_along_axis(z, cls[None], np.take_along_axis(z, cls[None], 0) + conf[None], 0)
    return z.astype(np.float32)


def drift(z):
    k, b = rng.uniform(0.6, 0.9), rng.uniform(-0.3, 0.3)
    return (z * np.float32(k) + np.float32(b) + rng.normal(0, 0.3, size=z.shape)).astype(np.float32)


def score(z):
    return -z.max(axis=0)


def fpr95(s, y):
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    pos, neg = y.sum(), (1 - y).sum()
    for t in np.unique(ss)[::-1]:
        tp = (yy[ss >= t] == 1).sum()
        if tp / pos >= 0.95:
            return float((yy[ss >= t] == 0).sum() / neg)
    return None


def best_f1(s, y):
    p, r, t = precision_recall_curve(y, s)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)[:-1]
    i = int(np.argmax(f1))
    return float(f1[i]), float(t[i])


def rates(s, y, t):
    if t is None:
        return None, None
    t = np.float32(t)
    pos, neg = s[y == 1], s[y == 0]
    far = float((pos < t).sum() / pos.size) if pos.size else None
    frr = float((neg >= t).sum() / neg.size) if neg.size else None
    return far, frr


def metrics(maps, masks):
    s, y = pixels(maps, masks)
    si, yi = image_scores(maps, masks, 0)
    return {
        ("auroc", "pixel"): float(roc_auc_score(y, s)),
        ("aupr", "pixel"): float(average_precision_score(y, s)),
        ("fpr95", "pixel"): fpr95(s, y),
        ("f1", "pixel"): best_f1(s, y)[0],
        ("auroc", "image"): float(roc_auc_score(yi, si)),
        ("aupr", "image"): float(average_precision_score(yi, si)),
    }


def dashboard(maps, masks, hard_px, hard_img):
    s, y = pixels(maps, masks)
    si, yi = image_scores(maps, masks, 0)
    neg = s[y == 0].astype(np.float64)
    negi = si[yi == 0].astype(np.float64)
    return {
        ("mean", "pixel"): float(neg.mean()),
        ("p95", "pixel"): float(np.percentile(neg, 95)),
        ("reject_rate", "pixel"): rates(s, y, hard_px)[1],
        ("mean", "image"): float(negi.mean()),
        ("p95", "image"): float(np.percentile(negi, 95)),
        ("reject_rate", "image"): rates(si, yi, hard_img)[1],
    }


def save(split, masks, zs):
    d = os.path.join(OUT, "dataset", split)
    os.makedirs(os.path.join(d, "labels"))
    os.makedirs(os.path.join(d, "logits", "m"))
    for i, (m, z) in enumerate(zip(masks, zs)):
        np.save(os.path.join(d, "labels", f"img_{i:02d}.npy"), m)
        np.save(os.path.join(d, "logits", "m", f"img_{i:02d}.npy"), z)


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    masks = {"val": [mask(i) for i in range(9)], "test": [mask(i) for i in range(12)]}
    z = {k: [logits(m) for m in v] for k, v in masks.items()}
    z["test@shift"] = [drift(x) for x in z["test"]]
    masks["test@shift"] = masks["test"]
    for k in z:
        save(k, masks[k], z[k])
    maps = {k: [score(x) for x in v] for k, v in z.items()}

    # thresholds on val, in bench's order: pixel f1, then per level frr_at_far per FAR, far_at_frr per FRR
    vs, vy = pixels(maps["val"], masks["val"])
    vsi, vyi = image_scores(maps["val"], masks["val"], 0)
    points = [("pixel", "f1_optimal", None, best_f1(vs, vy)[1])]
    for level, (s, y) in [("pixel", (vs, vy)), ("image", (vsi, vyi))]:
        points += [(level, "frr_at_far", b, frr_at_far(s, y, b)) for b in FAR]
        points += [(level, "far_at_frr", b, far_at_frr(s, y, b)) for b in FRR]
    hard = {lv: next(p[3] for p in points if p[0] == lv and p[1] == "far_at_frr") for lv in ("pixel", "image")}

    def level_data(split, level):
        return pixels(maps[split], masks[split]) if level == "pixel" else image_scores(maps[split], masks[split], 0)

    thresholds = []
    for level, rule, b, t in points:
        (bfar, bfrr), (dfar, dfrr) = rates(*level_data("test", level), t), rates(*level_data("test@shift", level), t)
        thresholds.append({
            "level": level, "rule": rule, "budget": b, "threshold": None if t is None else float(t),
            "baseline_far": bfar, "baseline_frr": bfrr, "drifted_far": dfar, "drifted_frr": dfrr,
        })
    mt, md = metrics(maps["test"], masks["test"]), metrics(maps["test@shift"], masks["test@shift"])
    dt = dashboard(maps["test"], masks["test"], hard["pixel"], hard["image"])
    dd = dashboard(maps["test@shift"], masks["test@shift"], hard["pixel"], hard["image"])
    out = {
        "far": FAR,
        "frr": FRR,
        "metrics": [{"metric": k[0], "level": k[1], "baseline": mt[k], "drifted": md[k], "delta": md[k] - mt[k]} for k in mt],
        "thresholds": thresholds,
        "dashboard": [{"statistic": k[0], "level": k[1], "baseline": dt[k], "value": dd[k]} for k in dt],
        "numpy": np.__version__,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
