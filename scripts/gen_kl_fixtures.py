#!/usr/bin/env python3
"""Regenerate tests/fixtures/kl_matching.json for tests/kl_matching.rs.

    python3 scripts/gen_kl_fixtures.py

Reference: pytorch-ood's KLMatching (kkirchheim/pytorch-ood), ported line by
line to numpy float64 (torch is not needed):

  fit      pytorch-ood 0.4.0 src/pytorch_ood/detector/klmatching.py
           fit_logits: samples with labels < 0 ignored (is_known), then
           probabilities = softmax(logits); predictions = argmax;
           d_k = probabilities[predictions == k].mean(0) for every predicted k
           (0.1.0's docstring says the same; its fit_features groups by the
           labels it was given instead, and computes y_hat unused).
  predict  pytorch-ood 0.1.0 (PyPI wheel pytorch_ood-0.1.0-py3-none-any.whl)
           pytorch_ood/detector/klmatching.py predict: p = softmax(logits),
           predictions = p.argmax(1), d_kl = (p * (p / d_pred).log()).sum(1);
           "Label k not fitted" raised for a class never predicted on the fit
           data. `kl_predicted` holds these scores (NaN where it would raise).
  min      pytorch-ood 0.4.0 _score_probabilities: min over the fitted k of
           sum p log p - p @ log d_k (0 log 0 = 0): `kl_nearest`, recorded for
           reference (bench implements kl_predicted).

Pixels are [C, N] float32 logits (stored as the exact float64 of each
float32); labels 0 = in-distribution, 1 = anomaly, 255 = void (only label-0
pixels enter the fit, as is_known keeps labels >= 0 and bench treats
anomaly and void as unknown). bench's own rule for a class never predicted
on the fit data (the uniform template 1/C) is in `kl_bench_unfitted`.
"""
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "kl_matching.json")


def softmax(x):  # rows of x: pixels; float64 like torch's softmax on doubles
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fit_logits(logits, known):
    logits = logits[known]
    probabilities = softmax(logits)
    predictions = probabilities.argmax(axis=1)
    dists = {}
    for k in np.unique(predictions):
        dists[int(k)] = probabilities[predictions == k].mean(axis=0)
    return dists


def predict_predicted(logits, dists):  # 0.1.0 predict
    p = softmax(logits)
    predictions = p.argmax(axis=1)
    scores = np.full(p.shape[0], np.nan)
    for label in np.unique(predictions):
        if int(label) not in dists:
            continue  # pytorch-ood raises ValueError("Label ... not fitted.")
        class_p = p[predictions == label]
        class_d = np.repeat(dists[int(label)][None, :], class_p.shape[0], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores[predictions == label] = (class_p * np.log(class_p / class_d)).sum(axis=1)
    return scores


def predict_nearest(logits, dists):  # 0.4.0 _score_probabilities
    p = softmax(logits)
    d = np.stack([dists[k] for k in dists])
    with np.errstate(divide="ignore"):
        log_d = np.nan_to_num(np.log(d), neginf=np.finfo(d.dtype).min)
        p_log_p = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    kl = p_log_p.sum(axis=1, keepdims=True) - p @ log_d.T
    return kl.min(axis=1)


def bench_unfitted(logits, dists, c):
    p = softmax(logits)
    pred = p.argmax(axis=1)
    u = np.full(c, 1.0 / c)
    out = np.full(p.shape[0], np.nan)
    for i in range(p.shape[0]):
        if int(pred[i]) not in dists:
            pi = p[i]
            out[i] = np.sum(np.where(pi > 0, pi * np.log(np.where(pi > 0, pi, 1.0) / u), 0.0))
    return out


def f(a):
    return [None if np.isnan(x) else float(x) for x in np.asarray(a, dtype=np.float64).ravel()]


def case(name, rng, c, n_cal, n_test, never=()):
    win = rng.integers(0, c, n_cal)
    for k in never:
        win[win == k] = (k + 1) % c
    zc = rng.normal(0, 1.5, (n_cal, c)) + 4.0 * np.eye(c)[win]
    zc = zc.astype(np.float32)
    for k in never:  # make sure class k is never the argmax
        others = np.delete(zc, k, axis=1).max(axis=1)
        zc[:, k] = np.minimum(zc[:, k], others - 0.5)
    lab = rng.choice([0, 0, 0, 0, 0, 0, 1, 255], n_cal).astype(np.uint8)
    zt = (rng.normal(0, 2.0, (n_test, c)) + 3.0 * np.eye(c)[rng.integers(0, c, n_test)]).astype(np.float32)
    zt[: n_test // 8] = np.round(zt[: n_test // 8])  # ties
    dists = fit_logits(zc.astype(np.float64), lab == 0)
    ztd = zt.astype(np.float64)
    return {
        "name": name, "c": c,
        "cal_logits": f(zc.T), "cal_labels": [int(x) for x in lab], "n_cal": n_cal,
        "test_logits": f(zt.T), "n_test": n_test,
        "fitted": sorted(dists), "dists": {str(k): f(v) for k, v in dists.items()},
        "kl_predicted": f(predict_predicted(ztd, dists)),
        "kl_nearest": f(predict_nearest(ztd, dists)),
        "kl_bench_unfitted": f(bench_unfitted(ztd, dists, c)),
    }


def main():
    rng = np.random.default_rng(18)
    cases = [case("c19", rng, 19, 300, 120), case("c5_unfitted", rng, 5, 300, 120, never=(3,)), case("c2", rng, 2, 100, 50)]
    with open(OUT, "w") as fh:
        json.dump({"generator": {"script": "scripts/gen_kl_fixtures.py", "numpy": np.__version__,
                                 "reference": "pytorch-ood 0.1.0 predict / 0.4.0 fit_logits, klmatching.py, ported to numpy"},
                   "cases": cases}, fh)
        fh.write("\n")


if __name__ == "__main__":
    main()
