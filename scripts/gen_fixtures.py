#!/usr/bin/env python3
"""Regenerate the golden fixtures of tests/golden.rs.

    python3 scripts/gen_fixtures.py          # writes tests/fixtures/{metrics,scores}.json

Everything is deterministic (fixed numpy seeds); re-running with the same
numpy / scikit-learn versions reproduces the files byte for byte. The versions
used are recorded in each file under "generator".

metrics.json -- the reference is scikit-learn in float64, on the float32 scores
    cast to float64, over the non-void pixels (label 255 dropped, 0 normal,
    1 anomaly):
      auroc        roc_auc_score
      aupr         average_precision_score
      fpr95_first  fpr at the first index where tpr >= 0.95 of
                   roc_curve(drop_intermediate=False)  (SMIYC / Fishyscapes)
      fpr95_interp np.interp(0.95, tpr, fpr) over roc_curve() with the
                   default drop_intermediate=True   (the SML paper's code)
      f1, threshold  p, r, t = precision_recall_curve(y, s);
                   f1 = where(p + r == 0, 0, 2pr / (p + r)); i = argmax(f1[:-1])
      points       exact tp / fp counts (score >= t) at a few thresholds
    A case with no positive or no negative pixel expects null everywhere.

scores.json -- an independent numpy float64 implementation of SPEC section 4
    with the conventions of src/scores/calib.rs:
      SML   per predicted class (argmax, first index on ties) mean and
            population std of the max logit over the calibration pixels with
            label 0; a class with < 2 such pixels or zero variance (np.var == 0)
            uses the pooled mean / std of all of them.
      HEAT  class means of the logit vector per predicted class (classes never
            predicted are left out), tied within-class covariance divided by
            the total N, plus 1e-6 * mean(diag) * I; squared Mahalanobis d_k;
            E_gmm = -logsumexp_k(-d_k / 2), E_el = -logsumexp(z); both z-scored
            by their mean / population std over the calibration pixels (std 0
            -> 1); heat = -logaddexp(-E_el~, -E_gmm~).
      msp = -max softmax(z / T), energy = -T logsumexp(z / T), T in {1, 2}.
      entropy = -sum xlogy(p, p), p = scipy.special.softmax(z) (T = 1).
    Logits are float32 values (stored as the exact float64 of each float32).

All floats are written with Python's repr of the float64 that equals the
float32 value, so Rust's `s.parse::<f64>() as f32` recovers the exact bits.
"""

import json
import os
import platform
import sys
import warnings

import numpy as np
import scipy
import scipy.linalg
import scipy.special
import sklearn
from scipy.special import logsumexp
from sklearn.metrics import (average_precision_score, precision_recall_curve,
                             roc_auc_score, roc_curve)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures")

GENERATOR = {
    "script": "scripts/gen_fixtures.py",
    "python": platform.python_version(),
    "numpy": np.__version__,
    "scikit-learn": sklearn.__version__,
    "scipy": scipy.__version__,
}


def f32list(a):
    """float32 array -> list of Python floats equal to each float32 value."""
    a = np.asarray(a, dtype=np.float32).ravel()
    out = [float(x) for x in a]
    back = np.array(out, dtype=np.float64).astype(np.float32)
    assert np.array_equal(back.view(np.uint32), a.view(np.uint32)), "f32 round trip"
    return out


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------

def reference_metrics(scores32, labels):
    keep = labels != 255
    s = scores32[keep].astype(np.float64)
    y = (labels[keep] == 1).astype(np.int64)
    assert set(np.unique(labels[keep]).tolist()) <= {0, 1}
    P, N = int(y.sum()), int((1 - y).sum())
    exp = {"positives": P, "negatives": N}
    if P == 0 or N == 0:
        exp.update(auroc=None, aupr=None, fpr95_first=None, fpr95_interp=None,
                   f1=None, threshold=None)
        return exp
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent warning in a defined case
        exp["auroc"] = float(roc_auc_score(y, s))
        exp["aupr"] = float(average_precision_score(y, s))
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        exp["fpr95_first"] = float(fpr[np.argmax(tpr >= 0.95)])
        assert (tpr >= 0.95).any()
        fpr_d, tpr_d, _ = roc_curve(y, s)  # drop_intermediate=True
        exp["fpr95_interp"] = float(np.interp(0.95, tpr_d, fpr_d))
        p, r, t = precision_recall_curve(y, s)
    # 0/0 where p + r == 0 is evaluated by np.where and discarded: silence it
    # here, then check nothing non-finite survived.
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(p + r == 0, 0, 2 * p * r / (p + r))
    assert np.all(np.isfinite(f1)), "non-finite F1"
    idx = int(np.argmax(f1[:-1]))
    exp["f1"] = float(f1[idx])
    thr = np.float32(t[idx])
    assert float(thr) == t[idx], "threshold must be one of the float32 scores"
    exp["threshold"] = float(thr)

    # operating points: a few thresholds that are positive scores, one that
    # is a negative-only score (if any), one above all and one below all.
    pos = np.unique(s[y == 1])[::-1]
    picks = sorted({0, len(pos) // 4, len(pos) // 2, (3 * len(pos)) // 4, len(pos) - 1})
    ths = [float(pos[i]) for i in picks]
    neg_only = np.setdiff1d(np.unique(s[y == 0]), pos)
    if len(neg_only):
        ths.append(float(neg_only[len(neg_only) // 2]))
    ths.append(float(np.float32(s.max()) * np.float32(2) + np.float32(1)) if s.max() > 0
               else float(np.float32(1)))
    ths.append(float(np.float32(s.min()) - np.float32(abs(s.min())) - np.float32(1)))
    points = []
    for th in ths:
        th32 = np.float32(th)
        th = float(th32)
        points.append({
            "threshold": th,
            "is_positive_score": bool(np.any(s[y == 1] == th)),
            "tp": int(np.sum((s >= th) & (y == 1))),
            "fp": int(np.sum((s >= th) & (y == 0))),
        })
    exp["points"] = points
    return exp


def metric_cases():
    rng = np.random.default_rng(20240601)
    cases = []

    def add(name, scores, labels, note=""):
        scores = np.asarray(scores, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.uint8)
        assert scores.shape == labels.shape
        cases.append({"name": name, "note": note, "scores": scores, "labels": labels})

    def labels_with(n, rate):
        lab = np.zeros(n, np.uint8)
        npos = max(1, int(round(n * rate)))
        lab[rng.choice(n, npos, replace=False)] = 1
        return lab

    # continuous, overlapping classes
    for n, rate in [(5000, 0.01), (3000, 0.10)]:
        lab = labels_with(n, rate)
        s = rng.normal(0, 1, n) + 1.5 * lab
        add(f"continuous_{int(rate * 100)}pct", s, lab, "normal scores, positives shifted by 1.5")

    # heavy ties: 20 distinct values
    n = 3000
    lab = labels_with(n, 0.08)
    s = np.floor(np.clip(rng.normal(0, 1, n) + 1.2 * lab, -2.5, 2.49) * 4) / 4
    add("ties_20_values", s, lab, "scores quantized to 20 levels")

    # void mixed in (void scores are extreme: they must not matter)
    n = 3000
    lab = labels_with(n, 0.05)
    s = rng.normal(0, 1, n) + 1.0 * lab
    void = rng.random(n) < 0.15
    lab = lab.copy()
    lab[void] = 255
    s[void] = np.where(rng.random(void.sum()) < 0.5, 50.0, -50.0)
    add("void_mixed", s, lab, "15% void pixels with extreme scores")

    # single positive
    n = 2000
    lab = np.zeros(n, np.uint8)
    lab[777] = 1
    s = rng.normal(0, 1, n)
    s[777] = 1.3
    add("single_positive", s, lab)

    # all scores tied
    lab = labels_with(500, 0.2)
    add("all_tied", np.full(500, 0.25, np.float32), lab)

    # negative scores only
    n = 3000
    lab = labels_with(n, 0.05)
    s = -np.exp(rng.normal(0, 1, n) - 0.8 * lab) - 10.0
    add("negative_scores", s, lab, "all scores < -10")

    # float16-rounded scores (many ties, like fp16 score maps)
    n = 4000
    lab = labels_with(n, 0.05)
    s = (rng.normal(0, 1, n) + 1.0 * lab).astype(np.float16).astype(np.float32)
    add("float16_rounded", s, lab)

    # perfect and worst separation
    n = 1000
    lab = labels_with(n, 0.1)
    s = np.where(lab == 1, 1.0 + rng.random(n), rng.random(n))
    add("perfect", s, lab, "every positive above every negative")
    add("worst", -s, lab, "every positive below every negative")

    # undefined cases
    add("no_positives", rng.normal(0, 1, 300), np.zeros(300, np.uint8))
    lab = np.ones(300, np.uint8)
    lab[:20] = 255
    add("no_negatives", rng.normal(0, 1, 300), lab, "only anomaly and void pixels")
    lab = np.full(50, 255, np.uint8)
    add("all_void", rng.normal(0, 1, 50), lab)

    # TPR lands exactly on 0.95: 40 positives with distinct scores (38/40 == 0.95)
    n = 2000
    lab = np.zeros(n, np.uint8)
    idx = rng.choice(n, 40, replace=False)
    lab[idx] = 1
    s = rng.normal(0, 1, n)
    s[idx] = np.linspace(3.0, -1.0, 40) + 0.001
    add("tpr_exactly_095", s, lab, "n_pos = 40, 38/40 = 0.95 at a distinct threshold")

    # same, with horizontal run at tpr == 0.95 (negatives between the 38th and 39th positive)
    n = 400
    lab = np.zeros(n, np.uint8)
    lab[:20] = 1
    s = np.zeros(n, np.float32)
    s[:20] = np.arange(20, 0, -1, dtype=np.float32)  # 20..1
    s[20:] = rng.uniform(-5, 0.5, n - 20).astype(np.float32)
    s[20:60] = 1.5  # 40 negatives tied between positive #19 (2.0) and #20 (1.0)
    add("tpr_095_on_horizontal", s, lab, "19/20 = 0.95 followed by a horizontal ROC run")

    # signed zeros
    n = 600
    lab = labels_with(n, 0.1)
    s = rng.choice(np.array([-1.0, -0.0, 0.0, 1.0], np.float32), n, p=[0.3, 0.25, 0.25, 0.2])
    s = np.where(lab == 1, rng.choice(np.array([-0.0, 0.0, 1.0, 2.0], np.float32), n), s)
    add("signed_zeros", s, lab, "-0.0 and +0.0 are the same score")

    # tied positives and negatives at the top (F1 threshold tie-breaking)
    n = 200
    lab = np.zeros(n, np.uint8)
    lab[:10] = 1
    s = rng.uniform(0, 1, n).astype(np.float32)
    s[:10] = 5.0
    s[10:20] = 5.0
    s[20:25] = 4.0
    add("f1_tie_breaking", s, lab, "positives tied with negatives at the top")

    # large-magnitude floats
    n = 2000
    lab = labels_with(n, 0.1)
    s = (rng.normal(0, 1, n) + lab) * 1e30
    add("huge_scores", s, lab)

    # mixed anomaly ids are not part of this fixture; 1 is the only anomaly code.
    return cases


def write_metrics():
    out = []
    for c in metric_cases():
        s32 = c["scores"]
        lab = c["labels"]
        exp = reference_metrics(s32, lab)
        out.append({
            "name": c["name"],
            "note": c["note"],
            "scores": f32list(s32),
            "labels": [int(x) for x in lab],
            "expected": exp,
        })
    doc = {"generator": GENERATOR, "cases": out}
    path = os.path.join(OUT, "metrics.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"{path}: {len(out)} cases")


# --------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------

def ref_calibration(z, lab):
    """z: [C, N] float64, lab: [N] uint8 -> dict of fitted statistics."""
    C = z.shape[0]
    x = z[:, lab == 0].T  # [n, C]
    n = x.shape[0]
    pred = np.argmax(x, axis=1)
    m = x.max(axis=1)
    pooled_mean, pooled_std = m.mean(), m.std()
    mean = np.full(C, pooled_mean)
    std = np.full(C, pooled_std)
    fallback = []
    for k in range(C):
        mk = m[pred == k]
        if len(mk) >= 2 and np.var(mk) > 0:
            mean[k], std[k] = mk.mean(), mk.std()
        else:
            fallback.append(k)
    classes = [k for k in range(C) if np.any(pred == k)]
    mu = np.stack([x[pred == k].mean(axis=0) for k in classes])  # [K, C]
    resid = x - mu[np.searchsorted(classes, pred)]
    cov = resid.T @ resid / n
    cov = cov + 1e-6 * np.mean(np.diag(cov)) * np.eye(C)
    cal = {"classes": classes, "mu": mu, "chol": scipy.linalg.cho_factor(cov, lower=True),
           "sml_mean": mean, "sml_std": std, "fallback": fallback}
    e_el = -logsumexp(x, axis=1)
    e_gm = gmm_energy(x, cal)
    cal["el_mean"], cal["el_std"] = e_el.mean(), e_el.std() or 1.0
    cal["gmm_mean"], cal["gmm_std"] = e_gm.mean(), e_gm.std() or 1.0
    cal["pixels"] = n
    return cal


def gmm_energy(x, cal):
    diff = x[:, None, :] - cal["mu"][None, :, :]  # [n, K, C]
    # d = diff^T Sigma^-1 diff, by a Cholesky solve (no explicit inverse)
    n, K, C = diff.shape
    flat = diff.reshape(n * K, C).T  # [C, nK]
    sol = scipy.linalg.cho_solve(cal["chol"], flat)
    d = np.sum(flat * sol, axis=0).reshape(n, K)
    return -logsumexp(-0.5 * d, axis=1)


def ref_scores(z, cal):
    """z: [C, N] float64 -> dict of score arrays."""
    x = z.T
    m = x.max(axis=1)
    pred = np.argmax(x, axis=1)
    out = {"max_logit": -m}
    for T in (1.0, 2.0):
        lse = logsumexp(x / T, axis=1)
        out[f"msp_t{int(T)}"] = -np.exp(m / T - lse)  # max softmax = exp(max/T - lse)
        out[f"energy_t{int(T)}"] = -T * lse
    out["sml"] = -(m - cal["sml_mean"][pred]) / cal["sml_std"][pred]
    e_el = (-logsumexp(x, axis=1) - cal["el_mean"]) / cal["el_std"]
    e_gm = (gmm_energy(x, cal) - cal["gmm_mean"]) / cal["gmm_std"]
    out["heat"] = -np.logaddexp(-e_el, -e_gm)
    # entropy of softmax(z) at T = 1, -sum p log p with 0 log 0 = 0
    p = scipy.special.softmax(x, axis=1)
    out["entropy"] = -np.sum(scipy.special.xlogy(p, p), axis=1)
    out["e_el"] = -logsumexp(x, axis=1)
    out["e_gmm"] = gmm_energy(x, cal)
    return out


def score_case(name, C, ncal, ntest, seed, offset=0.0, zero_var_class=None, zero_var_n=3):
    rng = np.random.default_rng(seed)

    def classifier_like(n):
        # a logit cloud: each pixel's class gets a boost over N(offset, 1)
        cls = rng.choice(C - 2, n)
        z = rng.normal(0, 1.0, (C, n)) + offset
        z[cls, np.arange(n)] += rng.uniform(2.0, 5.0, n)
        z[C - 1] -= 10.0  # class C-1 is never predicted
        z[C - 2] -= 10.0
        if zero_var_class is not None:
            z[zero_var_class] -= 20.0
        return z

    # calibration: class C-1 is never predicted, class C-2 exactly once
    z = classifier_like(ncal)
    once = 3
    z[C - 2, once] = z[:, once].max() + 1.0  # predicted once
    reserved = 20
    if zero_var_class is not None:
        # class zero_var_class is predicted by exactly zero_var_n pixels, all
        # with the same (non-dyadic) max logit: zero spread -> pooled fallback
        k = zero_var_class
        for p in range(20, 20 + zero_var_n):
            z[:, p] = rng.normal(0, 1.0, C) + offset
            z[C - 1, p] = z[C - 2, p] = offset - 10.0
            z[k, p] = offset + 7.3
        reserved = 20 + zero_var_n
    lab = np.zeros(ncal, np.uint8)
    lab[rng.choice(np.arange(reserved, ncal), ncal // 20, replace=False)] = 1
    lab[rng.choice(np.arange(reserved, ncal), ncal // 20, replace=False)] = 255
    # anomaly / void pixels get wild logits: they must not enter the fit
    wild = lab != 0
    z[:, wild] = rng.normal(0, 30.0, (C, wild.sum()))
    z32 = z.astype(np.float32)
    cal = ref_calibration(z32.astype(np.float64), lab)

    # test logits: half like the calibration pixels (both energies matter),
    # half from a broader cloud, then hand-made extremes and ties
    t_in = classifier_like(ntest // 2)
    t = rng.normal(0, 2.0, (C, ntest - ntest // 2)) + offset
    tc = rng.choice(C, t.shape[1])
    t[tc, np.arange(t.shape[1])] += rng.uniform(0, 4.0, t.shape[1])
    t = np.concatenate([t_in, t], axis=1)
    specials = []
    e = np.zeros(C)
    v = e.copy(); v[0] = 1e4; specials.append(v)
    v = e.copy(); v[C - 1] = 1e4; specials.append(v)
    specials.append(np.full(C, 1e4))
    specials.append(np.full(C, -1e4))
    v = np.full(C, -1e4); v[2] = 1e4; specials.append(v)
    v = np.linspace(-1e4, 1e4, C); specials.append(v)
    v = rng.normal(0, 1, C); v[1] = v[4] = v.max() + 0.5; specials.append(v)  # tie in max
    v = rng.normal(0, 1, C); v[:] = 3.0; specials.append(v)  # all equal
    v = rng.normal(0, 1, C); v[C - 2] = v[0] = 9.0; specials.append(v)  # tie: class 0 wins
    v = rng.normal(0, 1, C); v[C - 2] = 9.0; specials.append(v)  # predicted-once class
    v = rng.normal(0, 1, C); v[C - 1] = 9.0; specials.append(v)  # never-predicted class
    if zero_var_class is not None:
        v = rng.normal(0, 1, C); v[zero_var_class] = 7.3 + offset + 0.5; specials.append(v)
    v = np.zeros(C); specials.append(v)
    t = np.concatenate([t, np.stack(specials, axis=1)], axis=1)
    t32 = t.astype(np.float32)
    exp = ref_scores(t32.astype(np.float64), cal)
    return {
        "name": name,
        "c": C,
        "calibration": {
            "n": ncal,
            "logits": f32list(z32),  # class-major [C, N]
            "labels": [int(x) for x in lab],
        },
        "test": {"n": t32.shape[1], "logits": f32list(t32)},
        "expected_calibration": {
            "pixels": cal["pixels"],
            "sml_mean": cal["sml_mean"].tolist(),
            "sml_std": cal["sml_std"].tolist(),
            "pooled_fallback": cal["fallback"],
            "heat_classes": cal["classes"],
            "el_mean": float(cal["el_mean"]),
            "el_std": float(cal["el_std"]),
            "gmm_mean": float(cal["gmm_mean"]),
            "gmm_std": float(cal["gmm_std"]),
        },
        "expected": {k: [float(a) for a in v] for k, v in exp.items()},
    }


def write_scores():
    cases = [
        score_case("c5", 5, 300, 200, 11),
        score_case("c13", 13, 600, 300, 12),
        score_case("c13_offset_zero_var", 13, 400, 200, 13, offset=20.0, zero_var_class=5),
        score_case("c5_constant_class_2000", 5, 3000, 100, 14, zero_var_class=1, zero_var_n=2000),
    ]
    doc = {
        "generator": GENERATOR,
        "tolerance": "|rust - ref| <= 1e-6 * max(1, |ref|) (f32 outputs: f32 rounding is 6e-8 relative)",
        "cases": cases,
    }
    path = os.path.join(OUT, "scores.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"{path}: {len(cases)} cases")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    np.seterr(all="raise", under="ignore")  # underflow to 0 in exp is expected
    write_metrics()
    write_scores()
    sys.exit(0)
