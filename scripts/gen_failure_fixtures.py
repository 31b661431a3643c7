#!/usr/bin/env python3
"""Fixtures of the failure-mode figures and panels (tests/failure_modes.rs).

Writes tests/fixtures/failure/ds/ -- a tiny dataset with two anomaly types
(mask values 1 and 2, void 255) and one outside method's precomputed score
maps (`scores/ext/<id>.npy`, shared by every model), val and test splits,
and an RGB photo per test image (`test/images/<id>.png`) -- and
tests/fixtures/failure/expected.json: what bench must report, computed here
with numpy from the definitions alone:

- soft thresholds (chosen on val, FAR budget b = the first `metrics.far`):
  pixel: the highest distinct val anomaly score t with
  #(anomaly pixels < t) / #anomaly pixels <= b; image: the same over the
  image scores (max over non-void pixels) of the anomalous val images;
- per type v on test: its pixels, AUROC against the normal pixels
  (Mann-Whitney, ties 1/2), AP (sklearn's step sum), recall at the pixel
  soft threshold, the images with a pixel of type v and how many have an
  image score below the image soft threshold;
- the K worst images of each type: lowest recall of the type's pixels at
  the soft threshold (exact fractions), ties by image id;
- the panels' expected tiles for every example: mask, inferno heat map
  (5 anchors, normal median -> 0, soft threshold -> 1/2, highest test
  anomaly score -> 1), decision colours (see src/report/panel.rs), and the
  photo first.

Run from the repository root: python3 scripts/gen_failure_fixtures.py
"""
import json
import math
import os
import shutil
import struct
import zlib
from fractions import Fraction

import numpy as np

OUT = "tests/fixtures/failure"
H, W = 6, 8
SPLITS = {"val": 5, "test": 7}
FAR = 0.25
K = 3
TYPES = [1, 2]
VOID = 255

INFERNO = [(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)]
C_VOID, C_NORMAL, C_TYPE, C_OTHER = (128, 128, 128), (0, 0, 0), (255, 255, 255), (0, 160, 255)
C_CAUGHT, C_MISSED, C_FALSE, C_ACCEPTED = (0, 170, 0), (255, 0, 255), (255, 191, 0), (40, 40, 40)


def write_png(path, rgb):
    """8-bit RGB PNG, no filter (a reader must decode any valid PNG)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(np.uint8).tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def make_split(rng, name, n):
    labels, scores = [], []
    for i in range(n):
        lab = np.zeros((H, W), np.uint8)
        kind = i % 4  # 0: type 1, 1: type 2, 2: both, 3: normal only
        if kind in (0, 2):
            y, x = rng.integers(0, H - 2), rng.integers(0, W - 3)
            lab[y : y + 2, x : x + 3] = 1
        if kind in (1, 2):
            y, x = rng.integers(0, H - 2), rng.integers(0, W - 2)
            lab[y : y + 2, x : x + 2] = 2
        lab[rng.random((H, W)) < 0.08] = VOID
        if name == "test" and i == n - 1:
            lab[:] = VOID  # an all-void image: no image score
        base = np.round(rng.random((H, W)) * 10) / 20  # ties: 11 levels in [0, .5]
        boost = np.where(lab == 1, 0.45, np.where(lab == 2, 0.2, 0.0))
        s = (base + boost * rng.random((H, W))).astype(np.float32)
        labels.append(lab)
        scores.append(s)
    return labels, scores


def image_score(s, lab):
    v = s[lab != VOID]
    return None if v.size == 0 else np.float32(v.max())


def frr_at_far(anom_scores, b):
    a = np.asarray(anom_scores, np.float32)
    for t in sorted(set(a.tolist()), reverse=True):
        t = np.float32(t)
        if (a < t).sum() / a.size <= b:
            return t
    raise AssertionError("FAR is 0 at the lowest anomaly score")


def auroc(pos, neg):
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (pos.size * neg.size))


def average_precision(pos, neg):
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    ap, prev_r = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        sel = s >= t
        tp = y[sel].sum()
        if tp == 0:
            continue
        r, p = tp / len(pos), tp / sel.sum()
        ap += (r - prev_r) * p
        prev_r = r
    return float(ap)


def inferno(v):
    x = min(max(v, 0.0), 1.0) * 4.0
    i = min(int(math.floor(x)), 3)
    f = x - i
    a, b = INFERNO[i], INFERNO[i + 1]
    return tuple(int(math.floor(a[k] + f * (b[k] - a[k]) + 0.5)) for k in range(3))


def unit(s, lo, t, hi):
    s = float(s)
    if s < t:
        v = 0.5 * (s - lo) / (t - lo) if t > lo else 0.0
    elif hi > t:
        v = 0.5 + 0.5 * (s - t) / (hi - t)
    else:
        v = 1.0
    return min(max(v, 0.0), 1.0)


def tiles(lab, s, kind, t, scale, photo):
    mask = [C_VOID if l == VOID else C_NORMAL if l == 0 else C_TYPE if l == kind else C_OTHER for l in lab.ravel()]
    heat = [C_VOID if l == VOID else inferno(unit(v, *scale)) for l, v in zip(lab.ravel(), s.ravel())]
    dec = []
    for l, v in zip(lab.ravel(), s.ravel()):
        rej = v >= t
        dec.append(C_VOID if l == VOID else (C_FALSE if rej else C_ACCEPTED) if l == 0 else (C_CAUGHT if rej else C_MISSED))
    out = [[tuple(int(c) for c in p) for p in photo.reshape(-1, 3)]] if photo is not None else []
    return out + [mask, heat, dec]


def main():
    rng = np.random.default_rng(17)
    ds = os.path.join(OUT, "ds")
    shutil.rmtree(ds, ignore_errors=True)
    data = {}
    for name, n in SPLITS.items():
        labels, scores = make_split(rng, name, n)
        ids = [f"im{i:02d}" for i in range(n)]
        for sub in ["labels", "scores/ext"] + (["images"] if name == "test" else []):
            os.makedirs(os.path.join(ds, name, sub), exist_ok=True)
        photos = []
        for i, stem in enumerate(ids):
            np.save(os.path.join(ds, name, "labels", stem + ".npy"), labels[i])
            np.save(os.path.join(ds, name, "scores/ext", stem + ".npy"), scores[i])
            photo = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
            photos.append(photo)
            if name == "test":
                write_png(os.path.join(ds, name, "images", stem + ".png"), photo)
        data[name] = (ids, labels, scores, photos)

    vids, vl, vs, _ = data["val"]
    anom = np.concatenate([s[(l != 0) & (l != VOID)] for s, l in zip(vs, vl)])
    t_px = frr_at_far(anom, FAR)
    img_anom = [image_score(s, l) for s, l in zip(vs, vl) if ((l != 0) & (l != VOID)).any()]
    t_img = frr_at_far(img_anom, FAR)

    ids, tl, ts, photos = data["test"]
    normal = np.concatenate([s[l == 0] for s, l in zip(ts, tl)])
    all_anom = np.concatenate([s[(l != 0) & (l != VOID)] for s, l in zip(ts, tl)])
    scale = (float(np.percentile(normal.astype(np.float64), 50)), float(t_px), float(all_anom.max()))
    types = []
    for ti, v in enumerate(TYPES):
        pos = np.concatenate([s[l == v] for s, l in zip(ts, tl)])
        of_type = [i for i, l in enumerate(tl) if (l == v).any()]
        missed = sum(1 for i in of_type if image_score(ts[i], tl[i]) < t_img)
        per = {i: (int((tl[i] == v).sum()), int(((tl[i] == v) & (ts[i] >= t_px)).sum())) for i in of_type}
        worst = sorted(of_type, key=lambda i: (Fraction(per[i][1], per[i][0]), ids[i]))[:K]
        examples = []
        for r, i in enumerate(worst):
            examples.append({
                "rank": r + 1,
                "image": ids[i],
                "pixels": per[i][0],
                "caught": per[i][1],
                "png": f"failures/m/ext/{v}_{r + 1}_{ids[i]}.png",
                "tiles": tiles(tl[i], ts[i], ti + 1, t_px, scale, photos[i]),
            })
        types.append({
            "anomaly_value": v,
            "positives": int(pos.size),
            "auroc": auroc(pos, normal),
            "aupr": average_precision(pos, normal),
            "recall_at_soft_threshold": float((pos >= t_px).mean()),
            "images": len(of_type),
            "images_missed": missed,
            "examples": examples,
        })
    exp = {
        "far": FAR,
        "k": K,
        "height": H,
        "width": W,
        "soft_threshold": float(t_px),
        "image_soft_threshold": float(t_img),
        "types": types,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}/expected.json and {ds}")


if __name__ == "__main__":
    main()
