#!/usr/bin/env python3
"""Reference values for the honest-evaluation extras, computed with numpy +
scikit-learn straight from a synthetic dataset's files (no bench code):

    bench synth --out /tmp/hfx --anomaly-types 2
    python3 scripts/gen_honest_fixtures.py /tmp/hfx > tests/fixtures/honest.json

For the max_logit score (-max_c z_c, exact in float32) of every model on the
test split: image-level AUROC / AUPR (image score = max over non-void pixels,
anomalous = any anomaly pixel), normal-pixel mean and np.percentile 50/95/99,
per-anomaly-type AUROC / AUPR / FPR95 against all normal pixels, and the
val-F1-optimal threshold with the test F1 / FAR / FRR it achieves.
tests/honest.rs regenerates the dataset (its bytes are pinned by a digest in
tests/data_inputs.rs) and compares bench's results.json to 1e-6.
"""
import json
import sys
from pathlib import Path

import numpy as np
import sklearn
from PIL import Image
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve


def load(root, split, model):
    out = []
    for lp in sorted((root / split / "labels").glob("*.png")):
        m = np.array(Image.open(lp)).astype(np.int64)
        z = np.load(root / split / "logits" / model / (lp.stem + ".npy")).astype(np.float64)
        s = (-z.max(axis=0)).astype(np.float32).astype(np.float64)  # bench's f32 scores
        out.append((s.ravel(), m.ravel()))
    return out


def fpr95(y, s):
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, 0.95, side="left")])


def best_f1_threshold(y, s):
    p, r, t = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r == 0, 0.0, 2 * p * r / (p + r))
    return float(t[int(np.argmax(f1[:-1]))])


def main(root):
    root = Path(root)
    models = sorted(p.name for p in (root / "test" / "logits").iterdir())
    cases = []
    for model in models:
        test = load(root, "test", model)
        val = load(root, "val", model)
        s = np.concatenate([x[0] for x in test])
        m = np.concatenate([x[1] for x in test])
        keep = m != 255
        s, m = s[keep], m[keep]
        normal = s[m == 0]
        # image level
        img_s, img_y = [], []
        for sc, mk in test:
            v = mk != 255
            if v.any():
                img_s.append(sc[v].max())
                img_y.append(int(((mk == 1) | (mk == 2)).any()))
        per_type = {}
        for t in (1, 2):
            sel = (m == 0) | (m == t)
            y = (m[sel] == t).astype(int)
            per_type[str(t)] = {
                "auroc": roc_auc_score(y, s[sel]),
                "aupr": average_precision_score(y, s[sel]),
                "fpr95": fpr95(y, s[sel]),
            }
        # threshold chosen on val, applied to test
        vs = np.concatenate([x[0] for x in val])
        vm = np.concatenate([x[1] for x in val])
        vk = vm != 255
        vt = best_f1_threshold(((vm[vk] == 1) | (vm[vk] == 2)).astype(int), vs[vk])
        y = ((m == 1) | (m == 2)).astype(int)
        pred = s >= vt
        tp = int((pred & (y == 1)).sum())
        fp = int((pred & (y == 0)).sum())
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / int(y.sum())
        cases.append({
            "model": model,
            "method": "max_logit",
            "image_auroc": roc_auc_score(img_y, img_s),
            "image_aupr": average_precision_score(img_y, img_s),
            "normal_mean": float(normal.mean()),
            "normal_p50": float(np.percentile(normal, 50)),
            "normal_p95": float(np.percentile(normal, 95)),
            "normal_p99": float(np.percentile(normal, 99)),
            "per_type": per_type,
            "val_f1_threshold": vt,
            "test_f1_at_val_threshold": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            # a pixel is rejected when score >= t: FRR = good rejected,
            # FAR = defects accepted (seed 000's words)
            "test_frr_at_val_threshold": fp / int((y == 0).sum()),
            "test_far_at_val_threshold": 1 - rec,
        })
    json.dump({"numpy": np.__version__, "sklearn": sklearn.__version__, "cases": cases}, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
