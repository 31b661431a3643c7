"""Shared helpers: the repository root, the `bench` CLI binary, and the
scikit-learn reference (the same conventions as scripts/gen_fixtures.py)."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench_bin():
    """The `bench` CLI built by `cargo build --release` / `cargo test --release`."""
    cands = [os.environ.get("BENCH_BIN")]
    if os.environ.get("CARGO_TARGET_DIR"):
        cands.append(str(Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "bench"))
    cands += [str(ROOT / "target" / "release" / "bench"), shutil.which("bench")]
    for c in cands:
        if c and Path(c).is_file():
            return c
    pytest.skip("the bench CLI is not built (cargo build --release), or set BENCH_BIN")


@pytest.fixture
def bench():
    b = bench_bin()

    def call(*args, cwd=None):
        r = subprocess.run([b, *map(str, args)], capture_output=True, text=True, cwd=cwd)
        assert r.returncode == 0, r.stderr
        return r.stdout

    return call


def sklearn_reference(scores, labels):
    """scikit-learn in float64 on the float32 scores over the non-void pixels
    (255 void, 0 normal, anything else anomaly)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    s = np.asarray(scores, dtype=np.float32).ravel().astype(np.float64)
    l = np.asarray(labels).ravel()
    keep = l != 255
    s, y = s[keep], (l[keep] != 0).astype(np.int64)
    out = {"positives": int(y.sum()), "negatives": int((1 - y).sum())}
    if out["positives"] == 0 or out["negatives"] == 0:
        return {**out, "auroc": None, "aupr": None, "fpr95_first": None, "fpr95_interp": None, "f1": None, "threshold": None}
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    fpr_i, tpr_i, _ = roc_curve(y, s)
    p, r, t = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r == 0, 0, 2 * p * r / (p + r))
    i = int(np.argmax(f1[:-1]))
    return {
        **out,
        "auroc": float(roc_auc_score(y, s)),
        "aupr": float(average_precision_score(y, s)),
        "fpr95_first": float(fpr[np.argmax(tpr >= 0.95)]),
        "fpr95_interp": float(np.interp(0.95, tpr_i, fpr_i)),
        "f1": float(f1[i]),
        "threshold": float(t[i]),
    }
