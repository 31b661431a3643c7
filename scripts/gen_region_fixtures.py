#!/usr/bin/env python3
"""Reference values for src/metrics/region.rs -> tests/fixtures/region.json.

Independent implementations, in numpy + scipy only:

* connected components: scipy.ndimage.label(mask, structure=np.ones((3, 3)))
  (8-connectivity, components numbered in raster order of first pixel);
* PRO / AUPRO: the MVTec AD reference procedure (Bergmann et al.): every
  non-void pixel of the split sorted by score (descending), cumulative FPR
  (normal pixels / #normal) and cumulative PRO (each anomaly pixel of region
  k adds 1 / (|R_k| K)), one point per distinct score (last of a tie group),
  (0, 0) prepended and (1, 1) appended, clipped to [0, 1]; trapezoid up to
  max_fpr with linear interpolation at max_fpr when it is not a curve
  abscissa; divided by max_fpr;
* SegmentMeIfYouCan component metrics: the definition of the official
  road-anomaly-benchmark evaluation (default_instancer + segment_metrics +
  aggregate), written out with explicit pixel sets: binarise (> t official,
  or >= t), void-free predicted components < min_pred_size dropped, GT
  components < min_gt_size voided, everything restricted to the remaining
  non-void pixels; sIoU(k) = |k ∩ P| / |(k ∪ P) \\ A| with P the predicted
  components meeting k and A the pixels of P in other GT components;
  PPV(p) = |p ∩ GT| / |p|; TP/FN: sIoU >= / < δ, FP: PPV < δ, δ in
  np.linspace(0.25, 0.75, 11); F1 = 2TP / (2TP + FN + FP), averaged over δ.

Deterministic (fixed seeds). Run from the repository root:
    python3 scripts/gen_region_fixtures.py
"""
import json
import os

import numpy as np
from scipy.ndimage import gaussian_filter, label

S8 = np.ones((3, 3), dtype=int)
VOID = 255
DELTAS = np.linspace(0.25, 0.75, 11, endpoint=True)


# ---------------------------------------------------------------- images

def f32list(a):
    # exact f32 values as f64 decimals (round-trip exactly through f64)
    return [float(x) for x in np.asarray(a, dtype=np.float32).ravel()]


def image(scores, labels):
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.uint8)
    assert scores.shape == labels.shape and scores.ndim == 2
    comps, n = label((labels != 0) & (labels != VOID), S8)
    return dict(h=int(labels.shape[0]), w=int(labels.shape[1]), scores=f32list(scores),
                labels=[int(x) for x in labels.ravel()],
                components=[int(x) for x in comps.ravel()], regions=int(n)), scores, labels


def handmade():
    """Several regions of different sizes (a diagonal pair that is one
    region only under 8-connectivity, a single pixel, a big blob), a region
    missed entirely, void pixels (touching and splitting regions), ties, a
    predicted bar joining two GT regions through a tiny one, and an image
    with no anomaly."""
    imgs = []
    # image 0: 10x12
    L = np.zeros((10, 12), np.uint8)
    L[1:5, 1:6] = 1              # 20 px blob
    L[6, 8] = 2; L[7, 9] = 2     # diagonal pair (type 2), one region
    L[8, 2] = 1                  # single pixel
    L[0, 10:12] = VOID; L[1, 11] = VOID
    L[3, 6] = VOID               # void touching the blob
    rng = np.random.default_rng(1)
    s = np.round(rng.normal(0.0, 1.0, L.shape) * 4) / 8  # ties: multiples of 1/8
    s[1:5, 1:6] += 1.0
    s[2, 2] = 3.0
    s[6, 8] = 1.5; s[7, 9] = 0.25
    s[8, 2] = 0.5
    imgs.append((s, L))
    # image 1: 9x11, region fully missed, region split by a void column
    L = np.zeros((9, 11), np.uint8)
    L[2:4, 2:4] = 1              # 4 px, missed (lowest scores)
    L[5:8, 4:10] = 1
    L[5:8, 7] = VOID             # splits into two regions of 9 px
    L[0, :] = VOID
    s = np.round(rng.normal(0.0, 1.0, L.shape) * 4) / 8
    s[2:4, 2:4] = -3.0
    s[5:8, 4:7] += 2.0
    s[5:8, 8:10] += 0.5
    imgs.append((s, L))
    # image 2: no anomaly at all, some void, ties with other images' levels
    L = np.zeros((8, 10), np.uint8)
    L[7, :] = VOID
    s = np.round(rng.normal(0.0, 1.0, L.shape) * 4) / 8
    s[3, 3] = 3.0
    imgs.append((s, L))
    # image 3: a predicted bar across two GT blocks and a 1-px GT region
    L = np.zeros((6, 12), np.uint8)
    L[1:4, 1:4] = 1
    L[1:4, 8:11] = 1
    L[2, 6] = 1                  # tiny region (voided when min_gt_size > 1)
    s = np.full(L.shape, -1.0)
    s[2, 0:12] = 2.0             # the bar
    s[1, 1] = 2.0; s[3, 10] = 1.0
    s[5, 5:7] = 1.0              # 2-px false positive
    imgs.append((s, L))
    return imgs


def blobs(seed, n, h, w, void_frac=0.05, levels=None):
    """Random smooth blobs as anomalies, scores correlated with them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        field = gaussian_filter(rng.normal(size=(h, w)), 1.6)
        thr = np.quantile(field, 0.88 if i % 3 else 0.97)
        L = (field > thr).astype(np.uint8) * (1 + (rng.random((h, w)) < 0.3))
        if i % 4 == 3:
            L[:] = 0             # an image with no anomaly
        void = rng.random((h, w)) < void_frac
        void[:, : w // 8] |= rng.random() < 0.5
        L[void] = VOID
        s = 0.8 * field / field.std() + rng.normal(0.0, 0.7, (h, w))
        if levels:
            s = np.round(s * levels) / levels
        out.append((s, L))
    return out


# ---------------------------------------------------------------- AUPRO

def mvtec_aupro(imgs, max_fpr):
    scores, fp_changes, pro_changes = [], [], []
    regions, normals = 0, 0
    for s, L in imgs:
        valid = L != VOID
        comps, n = label((L != 0) & valid, S8)
        regions += n
        pro = np.zeros(L.shape, np.float64)
        for k in range(1, n + 1):
            m = comps == k
            pro[m] = 1.0 / m.sum()
        ok = valid & (L == 0)
        normals += int(ok.sum())
        scores.append(s[valid].astype(np.float32))
        fp_changes.append(ok[valid].astype(np.float64))
        pro_changes.append(pro[valid])
    if regions == 0 or normals == 0:
        return None, regions
    scores = np.concatenate(scores)
    order = np.argsort(scores, kind="stable")[::-1]
    scores = scores[order]
    fprs = np.cumsum(np.concatenate(fp_changes)[order]) / normals
    pros = np.cumsum(np.concatenate(pro_changes)[order]) / regions
    keep = np.append(np.diff(scores) != 0, True)
    x = np.clip(np.concatenate(([0.0], fprs[keep], [1.0])), 0, 1)
    y = np.clip(np.concatenate(([0.0], pros[keep], [1.0])), 0, 1)
    correction = 0.0
    if max_fpr not in x:
        ins = int(np.searchsorted(x, max_fpr, side="right"))
        assert 0 < ins < len(x)
        yi = y[ins - 1] + (y[ins] - y[ins - 1]) * (max_fpr - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (yi + y[ins - 1]) * (max_fpr - x[ins - 1])
    m = x <= max_fpr
    x, y = x[m], y[m]
    area = np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction
    return float(area / max_fpr), regions


# ---------------------------------------------------------------- SMIYC

def smiyc_image(s, L, thr, strict, min_pred, min_gt):
    thr = np.float32(thr)
    s = s.astype(np.float32)
    gt, ng = label((L != 0) & (L != VOID), S8)
    pred_mask = ((s > thr) if strict else (s >= thr)) & (L != VOID)
    pr, npr = label(pred_mask, S8)
    for c in range(1, npr + 1):
        if (pr == c).sum() < min_pred:
            pr[pr == c] = 0
    roi = L != VOID
    gt_sizes = np.bincount(gt.ravel(), minlength=ng + 1)
    assert (gt == 0).sum() >= min_gt  # the official background quirk never fires here
    for c in range(1, ng + 1):
        if gt_sizes[c] < min_gt:
            roi &= gt != c
    siou_gt = []
    for k in range(1, ng + 1):
        gk = (gt == k) & roi
        if not gk.any():
            continue
        P = np.zeros(L.shape, bool)
        for p in np.unique(pr[gk]):
            if p:
                P |= pr == p
        P &= roi
        A = P & (gt != 0) & (gt != k)
        inter = (gk & P).sum()
        union = ((gk | P) & ~A).sum()
        siou_gt.append(inter / union)
    ppv, siou_pred = [], []
    for p in range(1, npr + 1):
        pk = (pr == p) & roi
        if not pk.any():
            continue
        G = np.zeros(L.shape, bool)
        for g in np.unique(gt[pk]):
            if g:
                G |= gt == g
        G &= roi
        A = G & (pr != 0) & (pr != p)
        inter = (pk & G).sum()
        ppv.append(inter / pk.sum())
        siou_pred.append(inter / ((pk | G) & ~A).sum())
    return [float(v) for v in siou_gt], [float(v) for v in ppv], [float(v) for v in siou_pred]


def smiyc(imgs, thr, strict, min_pred, min_gt):
    per = [smiyc_image(s, L, thr, strict, min_pred, min_gt) for s, L in imgs]
    tp, fn, fp, f1 = [], [], [], []
    for d in DELTAS:
        a = sum(int(np.count_nonzero(np.array(g) >= d)) for g, _, _ in per)
        b = sum(int(np.count_nonzero(np.array(g) < d)) for g, _, _ in per)
        c = sum(int(np.count_nonzero(np.array(p) < d)) for _, p, _ in per)
        tp.append(a); fn.append(b); fp.append(c)
        f1.append(2 * a / (2 * a + b + c) if 2 * a + b + c else None)
    ng = sum(len(g) for g, _, _ in per)
    npr = sum(len(p) for _, p, _ in per)
    mean = lambda k, n: (sum(sum(x[k]) for x in per) / n) if n else None
    return dict(
        threshold=float(np.float32(thr)), strict=strict, min_pred_size=min_pred, min_gt_size=min_gt,
        per_image=[dict(siou_gt=g, ppv=p, siou_pred=q) for g, p, q in per],
        tp=tp, fn=fn, fp=fp, f1=f1,
        mean_f1=(sum(f1) / len(f1)) if all(v is not None for v in f1) else None,
        siou_gt=mean(0, ng), ppv=mean(1, npr), siou_pred=mean(2, npr),
        gt_components=ng, pred_components=npr,
    )


# ---------------------------------------------------------------- main

def exact_hit():
    """10 normal pixels with distinct scores: FPR = 0.3 is a curve point."""
    L = np.zeros((3, 5), np.uint8)
    L[0, 0:2] = 1; L[2, 4] = 1; L[2, 0] = 1; L[1, 2] = VOID
    s = np.arange(15, dtype=np.float32).reshape(3, 5) / 4
    s[0, 0] = 10.0; s[2, 4] = 1.25
    return [(s, L)]


def main():
    sets = {
        "handmade": handmade(),
        "exact_hit": exact_hit(),
        "blobs_ties": blobs(7, 6, 24, 32, levels=4),
        "blobs_continuous": blobs(11, 5, 30, 40),
        "no_region": [(np.zeros((3, 3)), np.zeros((3, 3), np.uint8))],
    }
    out = dict(deltas=[float(d) for d in DELTAS], sets=[], aupro=[], components=[])
    for name, imgs in sets.items():
        out["sets"].append(dict(name=name, images=[image(s, L)[0] for s, L in imgs]))
        imgs = [(s.astype(np.float32), L) for s, L in imgs]
        for mf in (0.3, 0.05, 1.0, 0.123):
            v, k = mvtec_aupro(imgs, mf)
            out["aupro"].append(dict(set=name, max_fpr=mf, regions=k, value=v))
    comp_cfgs = {
        "handmade": [(1.0, True, 0, 0), (1.0, False, 0, 0), (1.0, False, 3, 2), (0.5, True, 2, 4),
                     (1.5, False, 1, 2), (2.0, False, 3, 2)],
        "exact_hit": [(1.25, False, 0, 0), (1.25, True, 1, 1)],
        "blobs_ties": [(0.75, False, 0, 0), (0.75, True, 4, 3), (1.0, False, 10, 8)],
        "blobs_continuous": [(0.9, False, 3, 3), (1.3, True, 6, 5)],
        "no_region": [(0.0, False, 0, 0), (0.5, False, 0, 0)],
    }
    for name, cfgs in comp_cfgs.items():
        imgs = [(s.astype(np.float32), L) for s, L in sets[name]]
        for thr, strict, mp, mg in cfgs:
            r = smiyc(imgs, thr, strict, mp, mg)
            r["set"] = name
            out["components"].append(r)
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "region.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    for a in out["aupro"]:
        print("aupro", a["set"], a["max_fpr"], a["regions"], a["value"])
    for c in out["components"]:
        print("smiyc", c["set"], c["threshold"], c["strict"], c["min_pred_size"], c["min_gt_size"],
              c["gt_components"], c["pred_components"], c["siou_gt"], c["ppv"], c["mean_f1"])


if __name__ == "__main__":
    main()
