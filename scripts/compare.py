#!/usr/bin/env python3
"""Time `bench eval` against scikit-learn and a single-argsort numpy version.

    python3 scripts/compare.py [--size 4096] [--pos 0.01] [--check]
                               [--bench target/release/bench] [--seed 0] [--repeat 1]

Writes a deterministic float32 score map [size, size] (.npy) and an 8-bit PNG
mask (0 normal, 1 anomaly, 255 void: the top 1 % of rows) with about `pos`
anomaly pixels (rectangular blobs) to a temporary directory, then times

  bench    the whole process, wall clock (subprocess):
           `bench eval --scores s.npy --labels m.png --json`  (includes reading
           the files and starting the process)
  sklearn  roc_auc_score + average_precision_score + roc_curve +
           precision_recall_curve (+ FPR95 / F1 read off the curves), in one
           process, timed in-process after loading the inputs
  numpy    one argsort, cumsum, AUROC / AP / FPR95 / F1 from the cumulative
           counts, timed in-process after loading

and prints a table with the times and ratios. With --check, bench's JSON
auroc / aupr / fpr95 / f1 must equal scikit-learn's to 1e-6 (and the F1
threshold and pixel counts exactly); exit 1 otherwise. The numpy version is
checked against scikit-learn too.

Conventions (SPEC section 5): fpr95 = FPR at the first threshold (descending)
where TPR >= 0.95; F1 = max over thresholds of 2PR/(P+R), threshold = the
lowest score attaining it (argmax over sklearn's ascending curve).

Requires numpy, scikit-learn and Pillow (`pip install numpy scikit-learn
pillow`) for writing the PNG mask.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.metrics import (average_precision_score, precision_recall_curve,
                             roc_auc_score, roc_curve)


def make_inputs(size, pos, seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    target = int(round(pos * size * size))
    # anomaly blobs: rectangles until the target is (about) reached
    area = 0
    while area < target:
        h = int(rng.integers(max(2, size // 64), max(3, size // 8)))
        w = int(rng.integers(max(2, size // 64), max(3, size // 8)))
        y = int(rng.integers(0, size - h + 1))
        x = int(rng.integers(0, size - w + 1))
        mask[y:y + h, x:x + w] = 1
        area = int((mask == 1).sum())
        if area > target:  # trim the last blob's rows to land close to target
            extra = area - target
            rows = min(h - 1, extra // max(w, 1))
            if rows > 0:
                mask[y + h - rows:y + h, x:x + w] = 0
            area = int((mask == 1).sum())
    void_rows = max(1, size // 100)
    mask[:void_rows] = 255
    s = rng.standard_normal((size, size), dtype=np.float32)
    s += np.float32(1.5) * (mask == 1)
    return s.astype(np.float32), mask


def write_png(path, mask):
    from PIL import Image  # pip install pillow
    Image.fromarray(mask, mode="L").save(path)


def read_png(path):
    from PIL import Image
    return np.asarray(Image.open(path))


def sklearn_metrics(y, s):
    auroc = roc_auc_score(y, s)
    aupr = average_precision_score(y, s)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    fpr95 = fpr[np.argmax(tpr >= 0.95)]
    p, r, t = precision_recall_curve(y, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(p + r == 0, 0, 2 * p * r / (p + r))
    i = int(np.argmax(f1[:-1]))
    return {"auroc": float(auroc), "aupr": float(aupr), "fpr95": float(fpr95),
            "f1": float(f1[i]), "threshold": float(t[i])}


def numpy_metrics(y, s):
    """One argsort; every metric from the cumulative counts."""
    order = np.argsort(s, kind="stable")[::-1]
    ss = s[order]
    yy = y[order]
    last = np.r_[np.nonzero(np.diff(ss))[0], ss.size - 1]  # last index of each distinct score
    tps = np.cumsum(yy, dtype=np.int64)[last]
    fps = (last + 1) - tps
    P, N = int(tps[-1]), int(fps[-1])
    tpr = np.r_[0, tps] / P
    fpr = np.r_[0, fps] / N
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)
    prec = tps / (tps + fps)
    rec = tps / P
    aupr = float(np.sum(np.diff(np.r_[0, rec]) * prec))
    fpr95 = float(fps[np.argmax(tps / P >= 0.95)] / N)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(prec + rec == 0, 0, 2 * prec * rec / (prec + rec))
    # lowest threshold attaining the max: last maximum in descending order
    i = len(f1) - 1 - int(np.argmax(f1[::-1]))
    return {"auroc": auroc, "aupr": aupr, "fpr95": fpr95, "f1": float(f1[i]),
            "threshold": float(ss[last[i]])}


KEYS = ("auroc", "aupr", "fpr95", "f1")


def diffs(a, b, tol=1e-6):
    bad = [f"{k}: {a[k]!r} vs {b[k]!r}" for k in KEYS
           if a[k] is None or b[k] is None or abs(a[k] - b[k]) > tol]
    if np.float32(a["threshold"]) != np.float32(b["threshold"]):
        bad.append(f"threshold: {a['threshold']!r} vs {b['threshold']!r}")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--pos", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bench", default="target/release/bench")
    ap.add_argument("--repeat", type=int, default=1, help="runs per implementation (best time kept)")
    a = ap.parse_args()

    if not os.path.exists(a.bench):
        sys.exit(f"{a.bench}: not found (cargo build --release)")
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        sp, mp = os.path.join(tmp, "s.npy"), os.path.join(tmp, "s.png")
        scores, mask = make_inputs(a.size, a.pos, a.seed)
        np.save(sp, scores)
        write_png(mp, mask)
        del scores, mask

        # bench: the whole process
        t_bench = float("inf")
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            out = subprocess.run([a.bench, "eval", "--scores", sp, "--labels", mp, "--json"],
                                 capture_output=True, text=True)
            t_bench = min(t_bench, time.perf_counter() - t0)
            if out.returncode != 0:
                sys.exit(f"bench eval failed ({out.returncode}):\n{out.stderr}")
        got = json.loads(out.stdout)

        # load once, outside the timings
        s = np.load(sp).ravel()
        m = read_png(mp).ravel()
        keep = m != 255
        y = (m[keep] == 1).astype(np.int64)
        s64 = s[keep].astype(np.float64)

        t_sk = float("inf")
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            ref = sklearn_metrics(y, s64)
            t_sk = min(t_sk, time.perf_counter() - t0)
        t_np = float("inf")
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            mine = numpy_metrics(y, s64)
            t_np = min(t_np, time.perf_counter() - t0)

    P, N = int(y.sum()), int(y.size - y.sum())
    print(f"{a.size}x{a.size} = {a.size * a.size:,} pixels, {P:,} anomaly ({P / (P + N):.2%}), "
          f"{N:,} normal, {a.size * a.size - P - N:,} void")
    print(f"{'implementation':<34}{'seconds':>10}{'x bench':>10}")
    rows = [("bench eval (whole process)", t_bench),
            ("scikit-learn (4 calls, in-proc)", t_sk),
            ("numpy single argsort (in-proc)", t_np)]
    for name, t in rows:
        print(f"{name:<34}{t:>10.3f}{t / t_bench:>10.2f}")
    print(f"{'':<34}{'auroc':>12}{'aupr':>12}{'fpr95':>12}{'f1':>12}  threshold")
    for name, r in (("bench", got), ("scikit-learn", ref), ("numpy", mine)):
        print(f"{name:<34}" + "".join(f"{r[k]:>12.8f}" if r[k] is not None else f"{'null':>12}"
                                      for k in KEYS) + f"  {r['threshold']!r}")

    if a.check:
        bad = diffs(got, ref)
        if (got.get("positives"), got.get("negatives")) != (P, N):
            bad.append(f"pixel counts: bench P={got.get('positives')} N={got.get('negatives')}, "
                       f"reference P={P} N={N}")
        bad_np = diffs(mine, ref)
        if bad_np:
            print("numpy reference disagrees with scikit-learn: " + "; ".join(bad_np), file=sys.stderr)
        if bad:
            print("CHECK FAILED (bench vs scikit-learn): " + "; ".join(bad), file=sys.stderr)
            return 1
        print("check: bench == scikit-learn (|d| <= 1e-6, same threshold, same pixel counts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
