#!/usr/bin/env python3
"""numpy oracle of the honest evaluation's operating points (issue 17).

Writes tests/fixtures/operating.json: random val/test splits (score maps
and masks, every score an exact float32) and, straight from the
definitions, the figures bench must report:

- a pixel/image is rejected when score >= t;
- FAR(t) = share of anomalous pixels/images with score < t (defects
  accepted); FRR(t) = share of normal ones with score >= t (good rejected);
- frr_at_far(b) = the highest t with FAR_val(t) <= b (t over the distinct
  anomaly scores: FAR only moves there);
- far_at_frr(b) = the lowest t among the distinct val scores with
  FRR_val(t) <= b;
- test FAR, FRR, precision, recall, F1 at those thresholds;
- hard = far_at_frr at the first FRR budget, soft = frr_at_far at the
  first FAR budget; shares of test auto-rejected (>= hard), in review
  [soft, hard), auto-accepted (< soft), defects auto-accepted, good
  auto-rejected; soft > hard: incompatible budgets.

Image score = max (topk <= 1) or mean of the top-k non-void pixel scores
(summed in f64 in ascending order, as bench does); an image is anomalous
when it has any anomaly pixel; images without a non-void pixel are left
out. Brute force on purpose (every candidate threshold evaluated): the
Rust side is a different, streaming algorithm.

    python3 scripts/gen_operating_fixtures.py > tests/fixtures/operating.json
"""
import json
import sys

import numpy as np

VOID = 255


def image_scores(maps, masks, topk):
    s, y = [], []
    for m, l in zip(maps, masks):
        v = m[l != VOID]
        if v.size == 0:
            continue
        if topk <= 1:
            s.append(np.float32(v.max()))
        else:
            top = np.sort(v)[-min(topk, v.size):]
            acc = 0.0
            for x in top:
                acc += float(x)
            s.append(np.float32(acc / top.size))
        y.append(int((l[l != VOID] == 1).any()))
    return np.array(s, dtype=np.float32), np.array(y, dtype=np.int64)


def pixels(maps, masks):
    s = np.concatenate([m[l != VOID] for m, l in zip(maps, masks)])
    y = np.concatenate([(l[l != VOID] == 1).astype(np.int64) for l in masks])
    return s, y


def frr_at_far(s, y, b):
    pos = s[y == 1]
    if pos.size == 0:
        return None
    best = None
    for t in np.unique(pos):
        if (pos < t).sum() / pos.size <= b:
            best = t
    return best


def far_at_frr(s, y, b):
    neg = s[y == 0]
    if neg.size == 0:
        return None
    for t in np.unique(s):  # ascending
        if (neg >= t).sum() / neg.size <= b:
            return t
    return None


def rates(s, y, t):
    pos, neg = s[y == 1], s[y == 0]
    tp, fp = int((pos >= t).sum()), int((neg >= t).sum())
    P, N = pos.size, neg.size
    far = (P - tp) / P if P else None
    frr = fp / N if N else None
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / P if P else None
    f1 = None if prec is None or rec is None else (0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
    return {"far": far, "frr": frr, "precision": prec, "recall": rec, "f1": f1}


def level(val, test, far, frr):
    pts = []
    for rule, budgets, pick in (("frr_at_far", far, frr_at_far), ("far_at_frr", frr, far_at_frr)):
        for b in budgets:
            t = pick(val[0], val[1], b)
            p = {"rule": rule, "budget": b, "threshold": None if t is None else float(t)}
            if t is not None:
                p.update(rates(test[0], test[1], t))
                v = rates(val[0], val[1], t)
                p["threshold_split_far"], p["threshold_split_frr"] = v["far"], v["frr"]
            pts.append(p)
    hard = far_at_frr(val[0], val[1], frr[0])
    soft = frr_at_far(val[0], val[1], far[0])
    if hard is None or soft is None:
        band = {"status": "undefined"}
    elif soft > hard:
        band = {"status": "incompatible"}
    else:
        s, y = test
        total = s.size
        rej, acc = int((s >= hard).sum()), int((s < soft).sum())
        pos, neg = s[y == 1], s[y == 0]
        band = {
            "status": "ok",
            "hard_threshold": float(hard),
            "soft_threshold": float(soft),
            "auto_rejected": rej / total,
            "review": (total - rej - acc) / total,
            "auto_accepted": acc / total,
            "defects_auto_accepted": (pos < soft).sum() / pos.size if pos.size else None,
            "good_auto_rejected": (neg >= hard).sum() / neg.size if neg.size else None,
        }
    return pts, band


def split(rng, n, h, w, kind, anomalies=True):
    maps, masks = [], []
    for i in range(n):
        l = np.zeros((h, w), dtype=np.uint8)
        if anomalies and i % 2 == 0:
            r, c = rng.integers(0, h - 2), rng.integers(0, w - 3)
            l[r:r + 2, c:c + rng.integers(1, 4)] = 1
        l[rng.random((h, w)) < 0.05] = VOID
        base = rng.normal(0.0, 1.0, (h, w)) + 1.5 * (l == 1)
        if kind == "ties":
            m = np.round(base * 2) / 2  # few distinct values, many ties
        elif kind == "bucket":
            m = 1.0 + np.round(base * 20) * 2.0 ** -20  # all in one 16-bit key bucket
        else:
            m = base
        maps.append(m.astype(np.float32))
        masks.append(l)
    return maps, masks


CASES = [
    # name, kind, topk, far, frr, val anomalies
    ("continuous", "normal", 0, [0.001, 0.05, 0.2], [0.02, 0.1, 0.5], True),
    ("ties_topk3", "ties", 3, [0.0, 0.1, 0.3], [0.0, 0.05, 0.25, 1.0], True),
    ("one_key_bucket", "bucket", 0, [0.01, 0.25], [0.02, 0.3], True),
    ("crossing", "normal", 2, [0.9], [0.9], True),
    ("val_without_anomalies", "normal", 0, [0.01], [0.05, 0.2], False),
]


def main():
    rng = np.random.default_rng(17)
    out = []
    h, w = 6, 8
    for name, kind, topk, far, frr, val_anom in CASES:
        sv = split(rng, 12, h, w, kind, val_anom)
        st = split(rng, 10, h, w, kind)
        pix_p, pix_b = level(pixels(*sv), pixels(*st), far, frr)
        img_p, img_b = level(image_scores(*sv, topk), image_scores(*st, topk), far, frr)
        enc = lambda sp: [
            {"scores": [float(x) for x in m.ravel()], "labels": [int(x) for x in l.ravel()]} for m, l in zip(*sp)
        ]
        out.append({
            "name": name,
            "height": h,
            "width": w,
            "image_topk": topk,
            "far": far,
            "frr": frr,
            "val": enc(sv),
            "test": enc(st),
            "expected": {"pixel": {"points": pix_p, "band": pix_b}, "image": {"points": img_p, "band": img_b}},
        })
    json.dump({"numpy": np.__version__, "cases": out}, sys.stdout, indent=None, sort_keys=True, default=float)
    print()


if __name__ == "__main__":
    main()
