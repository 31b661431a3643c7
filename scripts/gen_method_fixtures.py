#!/usr/bin/env python3
"""Regenerate tests/fixtures/methods.json for tests/methods.rs.

    python3 scripts/gen_method_fixtures.py

Logits are float32 [C, N] (stored as the exact float64 of each float32);
the expected scores are float64, from each method's reference code:

  gen     XixiLiu95/GEN @1e792b56aebf75ec1106952e9093584b8ed70313
          benchmark.py generalized_entropy (copied), on
          scipy.special.softmax(logits, axis=-1), gamma = 0.1, M = C (all
          classes); it returns -scores (a confidence): bench's gen = scores.
  rba     NazirNayal8/RbA @cf263d54197822f6d353e10d1e197f6767c9db7f
          evaluate_ood.py get_RbA: -logits.tanh().sum(dim=0), ported to numpy.
  margin  -(top-1 - top-2 logit) with np.sort (the runner-up counted with
          multiplicity: a tied maximum gives 0).

Non-default parameters (`gen_params`, `margin_probs` in every case):
  gen     the same generalized_entropy with (gamma, M) in GEN_PARAMS; M is
          the official slice np.sort(probs)[:, -M:] (M >= C: every class);
          `top_m` null = M = C.
  margin  on = "probs": -(top-1 - top-2) of scipy.special.softmax(logits).
"""
import json
import os

import numpy as np
import scipy
import scipy.special

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "methods.json")


def generalized_entropy(softmax_id_val, gamma, M):
    probs = softmax_id_val
    probs_sorted = np.sort(probs, axis=1)[:, -M:]
    scores = np.sum(probs_sorted**gamma * (1 - probs_sorted)**(gamma), axis=1)
    return -scores


GEN_PARAMS = [(0.5, 3), (1.0, None), (0.02, 1), (0.1, 100), (0.3, 2)]


def case(name, z):
    z = z.astype(np.float32)
    c, n = z.shape
    zd = z.astype(np.float64)
    pix = zd.T  # [N, C]
    gen = -generalized_entropy(scipy.special.softmax(pix, axis=-1), 0.1, c)
    rba = -np.tanh(zd).sum(axis=0)
    srt = np.sort(pix, axis=1)
    margin = -(srt[:, -1] - srt[:, -2])
    probs = scipy.special.softmax(pix, axis=-1)
    psrt = np.sort(probs, axis=1)
    margin_probs = -(psrt[:, -1] - psrt[:, -2])
    gen_params = [{"gamma": g, "top_m": m, "scores": [float(x) for x in -generalized_entropy(probs, g, c if m is None else m)]}
                  for g, m in GEN_PARAMS]
    return {"name": name, "c": c, "n": n, "logits": [float(x) for x in z.ravel()],
            "gen": [float(x) for x in gen], "rba": [float(x) for x in rba], "margin": [float(x) for x in margin],
            "margin_probs": [float(x) for x in margin_probs], "gen_params": gen_params}


def main():
    rng = np.random.default_rng(23)
    cases = []
    cases.append(case("c19_normal", rng.normal(0, 3, (19, 64))))
    z = rng.normal(0, 2, (7, 40))
    z[2, :10] = z[5, :10] = 4.0  # tied maxima
    z[:, 10:20] = np.round(z[:, 10:20])  # many ties
    cases.append(case("c7_ties", z))
    z = rng.normal(0, 1, (12, 30))
    z[3] += 9.0  # confident pixels, 1 - p ~ 1e-3
    cases.append(case("c12_confident", z))
    cases.append(case("c2", rng.normal(0, 1, (2, 16))))
    with open(OUT, "w") as f:
        json.dump({"generator": {"script": "scripts/gen_method_fixtures.py", "numpy": np.__version__, "scipy": scipy.__version__},
                   "cases": cases}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
