#!/usr/bin/env python3
"""Benchmark: anoseg_bench.metrics vs scikit-learn (4 calls) vs torchmetrics
(exact and binned) on 16.8 M pixels, in one process: wall time and peak
memory above the inputs (RSS sampled every 2 ms). Then Evaluator.update
throughput in Mpx/s for score batches (float32, float16) and for logits
(C = 19, the CPU scorer unless a hardware GPU adapter exists).

    python3 python/benchmarks/bench_metrics.py [--pixels 16777216] [--no-sklearn]

Prints a Markdown table (the README's "Python" section quotes it).
"""

import argparse
import gc
import os
import platform
import threading
import time

import numpy as np

import anoseg_bench as ab


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Peak:
    """Peak RSS above the level at entry, sampled in a thread."""

    def __enter__(self):
        gc.collect()
        self.base = rss()
        self.peak = self.base
        self.run = True
        self.t = threading.Thread(target=self._poll, daemon=True)
        self.t.start()
        self.t0 = time.perf_counter()
        return self

    def _poll(self):
        while self.run:
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __exit__(self, *a):
        self.secs = time.perf_counter() - self.t0
        self.run = False
        self.t.join()
        self.peak = max(self.peak, rss())
        self.mib = (self.peak - self.base) / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pixels", type=int, default=16 * 1024 * 1024)
    ap.add_argument("--no-sklearn", action="store_true")
    args = ap.parse_args()
    n = args.pixels
    h = w = 1024
    imgs = max(1, n // (h * w))
    rng = np.random.default_rng(0)
    lab = (rng.random((imgs, h, w), dtype=np.float32) < 0.02).astype(np.uint8)
    lab[:, :8] = 255
    s = (rng.standard_normal((imgs, h, w), dtype=np.float32) + 1.5 * lab).astype(np.float32)
    npx = s.size
    print(f"# {npx / 1e6:.1f} M pixels ({imgs} x {h}x{w}), {int((lab == 1).sum())} anomaly, {int((lab == 255).sum())} void")
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}")
    rows = []

    ab.metrics(s[:1], lab[:1])  # warm up (thread pool)
    with Peak() as p:
        got = ab.metrics(s, lab)
    rows.append(("anoseg_bench.metrics (exact)", p.secs, p.mib, got["auroc"]))

    cli = os.environ.get("BENCH_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "bench"))
    if os.path.isfile(cli):
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            os.makedirs(f"{d}/s")
            os.makedirs(f"{d}/l")
            for i in range(imgs):
                np.save(f"{d}/s/{i:03}.npy", s[i])
                np.save(f"{d}/l/{i:03}.npy", lab[i])
            cmd = [cli, "eval", "--scores", f"{d}/s", "--labels", f"{d}/l", "--json"]
            subprocess.run(cmd, check=True, capture_output=True)  # page cache
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            rows.append(("`bench eval --json` on the same data as .npy files (separate process)", time.perf_counter() - t0, float("nan"), got["auroc"]))

    if not args.no_sklearn:
        from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

        with Peak() as p:
            keep = lab != 255
            y = lab[keep] == 1
            x = s[keep]
            auroc = roc_auc_score(y, x)
            average_precision_score(y, x)
            roc_curve(y, x, drop_intermediate=False)
            precision_recall_curve(y, x)
            del keep, y, x
        rows.append(("sklearn.metrics, 4 calls (exact)", p.secs, p.mib, auroc))

    try:
        import torch
        from torchmetrics.classification import BinaryAUROC
    except ImportError:
        rows.append(("torchmetrics (exact / binned)", None, None, "not installed"))
    else:
        st, lt = torch.from_numpy(s), torch.from_numpy(lab.astype(np.int64))
        for name, thr in (("torchmetrics BinaryAUROC (exact)", None), ("torchmetrics BinaryAUROC (binned, 1000)", 1000)):
            m = BinaryAUROC(thresholds=thr, ignore_index=255)
            with Peak() as p:
                m.update(st, lt)
                v = float(m.compute())
            rows.append((name, p.secs, p.mib, v))
            del m
            gc.collect()

    print("\n| metrics on %.1f M px | time (s) | peak memory above inputs (MiB) | AUROC |" % (npx / 1e6))
    print("|:--|--:|--:|--:|")
    for name, t, mib, v in rows:
        if t is None:
            print(f"| {name} | – | – | {v} |")
        else:
            m = "–" if mib != mib else f"{mib:.0f}"
            print(f"| {name} | {t:.2f} | {m} | {v:.9f} |")

    # ---- Evaluator.update throughput
    print("\n| Evaluator.update | Mpx/s | compute() (s) |")
    print("|:--|--:|--:|")
    for dt in (np.float32, np.float16):
        ev = ab.Evaluator()
        x = s.astype(dt)
        t0 = time.perf_counter()
        for b in range(0, imgs, 2):
            ev.update(x[b : b + 2], lab[b : b + 2])
        t = time.perf_counter() - t0
        t0 = time.perf_counter()
        ev.compute()
        tc = time.perf_counter() - t0
        ram, disk = ev.footprint
        print(f"| scores {np.dtype(dt).name}, batches of 2x{h}x{w} | {npx / t / 1e6:.0f} | {tc:.2f} (RAM {ram / 2**20:.0f} MiB, spilled {disk / 2**20:.0f} MiB) |")
    c, bh, bw, nb = 19, 512, 512, 4
    z = rng.standard_normal((nb, c, bh, bw), dtype=np.float32) * 3
    zl = (rng.random((nb, bh, bw)) < 0.02).astype(np.uint8)
    for methods in (["max_logit"], list(ab.DEFAULT_LOGIT_METHODS)):
        for dt in (np.float32, np.float16):
            ev = ab.Evaluator(methods)
            zz = z.astype(dt)
            ev.update(zz[:1], zl[:1])  # warm up / adapter probe
            ev.reset()
            t0 = time.perf_counter()
            for _ in range(2):
                ev.update(zz, zl)
            t = time.perf_counter() - t0
            print(f"| logits C={c} {np.dtype(dt).name} [{nb},{c},{bh},{bw}], {len(methods)} method(s), {ev.device} | {2 * nb * bh * bw / t / 1e6:.1f} | |")


if __name__ == "__main__":
    main()
