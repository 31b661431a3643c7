#!/usr/bin/env python3
"""Reference fixtures for SML boundary suppression + dilated smoothing.

    python3 scripts/gen_sml_post_fixtures.py   # writes tests/fixtures/sml_post.json

The reference is a float64 numpy port of `BoundarySuppressionWithSmoothing`
in the official SML code (Jung et al. 2021, github shjung13/
Standardized-max-logits, network/deepv3.py), line by line:

  official (PyTorch / kornia)                     here (numpy / scipy.ndimage)
  ---------------------------------------------   ---------------------------------------------
  find_boundaries: kornia dilation(pred, cross)   grey_dilation(pred, footprint=cross,
    != kornia erosion(pred, 3x3 ones)               mode='nearest') != grey_erosion(pred,
    (border_type='geodesic': outside ignored)       footprint=ones(3,3), mode='nearest')
  expand_boundaries(b, r): kornia dilation by     binary_dilation(b, iterate_structure(cross, r))
    d_ks[r] = centre delta dilated r times by       (the L1 diamond of radius r)
    the cross (the L1 diamond of radius r)
  iteration widths: 0 on the last iteration or    same
    width 0, else width - (width//iters)*it - 1
  ReplicationPad2d(1) + 3x3 ones conv             np.pad(mode='edge') + explicit 3x3 sums
  torch.where(count == 0, prev, y / count),       same
    then only boundary pixels updated
  ReplicationPad2d(3*dilation) + 7x7 Gaussian     np.pad(mode='edge') + explicit dilated
    conv (sigma 1, normalised), dilation 6          correlation; cross-checked against
                                                    scipy.ndimage.correlate(mode='nearest')
                                                    with the zero-inserted dilated kernel

'nearest' (edge replication) equals kornia's geodesic border for these
footprints: clamping a neighbour into the image never increases its L1
(or L-inf) distance to the centre, so it stays inside the footprint.

The official Gaussian is always 7x7 (`size = 7` is hard-coded); `bench`
uses `kernel_size` for it (default 7, the same thing). bench applies the
post-processing to its score `-SML`; every step is linear in the map with
masks that depend only on the prediction, so this equals `-(post(SML))`.
Inputs are float32 values; expected outputs float64.
"""
import json
import os

import numpy as np
from scipy import ndimage as ndi

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "sml_post.json")

CROSS = ndi.generate_binary_structure(2, 1)


def find_boundaries(pred):
    d = ndi.grey_dilation(pred, footprint=CROSS, mode="nearest")
    e = ndi.grey_erosion(pred, footprint=np.ones((3, 3), bool), mode="nearest")
    return d != e


def expand(b, r):
    if r == 0:
        return b
    return ndi.binary_dilation(b, structure=ndi.iterate_structure(CROSS, r))


def box3(a):
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    s = np.zeros_like(a, dtype=np.float64)
    for di in range(3):
        for dj in range(3):
            s += p[di:di + h, dj:dj + w]
    return s


def gaussian(k, sigma):
    c = (k - 1) / 2
    g = np.fromfunction(lambda x, y: (1 / (2 * np.pi * sigma**2)) * np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma**2)), (k, k))
    return g / g.sum()


def smooth(x, k, sigma, dil):
    g = gaussian(k, sigma)
    half = (k - 1) // 2
    pad = dil * half
    p = np.pad(x, pad, mode="edge")
    h, w = x.shape
    out = np.zeros_like(x)
    for a in range(k):
        for b in range(k):
            out += g[a, b] * p[a * dil:a * dil + h, b * dil:b * dil + w]
    # independent check with scipy.ndimage
    kd = np.zeros(((k - 1) * dil + 1,) * 2)
    kd[::dil, ::dil] = g
    ref = ndi.correlate(x, kd, mode="nearest")
    assert np.allclose(out, ref, rtol=1e-12, atol=1e-12)
    return out


def post(x, pred, bs, width, iters, ds, k, sigma, dil):
    out = x.astype(np.float64)
    bnd = find_boundaries(pred)
    if bs:
        diff = width // iters if iters else 0
        for it in range(iters):
            prev = out
            r = 0 if (width == 0 or it == iters - 1) else width - diff * it - 1
            nb = (~expand(bnd, r)).astype(np.float64)
            y = box3(prev * nb)
            cnt = box3(nb).astype(np.int64)
            avg = np.where(cnt == 0, prev, y / np.maximum(cnt, 1))
            out = np.where(nb == 0, avg, prev)
    if ds:
        out = smooth(out, k, sigma, dil)
    return out, bnd


def blobs(rng, h, w, c, n):
    """A class map made of random rectangles over a background class."""
    pred = np.full((h, w), rng.integers(c), np.int64)
    for _ in range(n):
        i, j = rng.integers(h), rng.integers(w)
        pred[i:i + rng.integers(1, h // 2 + 2), j:j + rng.integers(1, w // 2 + 2)] = rng.integers(c)
    return pred


def case(name, seed, h, w, c, bs=True, width=4, iters=4, ds=True, k=7, sigma=1.0, dil=6, nblobs=6):
    rng = np.random.default_rng(seed)
    pred = blobs(rng, h, w, c, nblobs)
    x = (rng.normal(0, 1.5, (h, w)) + 0.3 * pred).astype(np.float32)
    exp, bnd = post(x.astype(np.float64), pred, bs, width, iters, ds, k, sigma, dil)
    return {
        "name": name, "h": h, "w": w,
        "params": {"boundary_suppression": bs, "boundary_width": width, "boundary_iteration": iters,
                   "dilated_smoothing": ds, "kernel_size": k, "sigma": sigma, "dilation": dil},
        "scores": [float(v) for v in x.ravel()],
        "pred": [int(v) for v in pred.ravel()],
        "boundary": [int(v) for v in bnd.ravel()],
        "expected": [float(v) for v in exp.ravel()],
    }


def main():
    cases = [
        case("defaults_24x31", 1, 24, 31, 5),
        case("defaults_60x45", 2, 60, 45, 7, nblobs=10),
        case("suppression_only", 3, 20, 26, 4, ds=False),
        case("smoothing_only", 4, 19, 23, 4, bs=False),
        case("width2_iter1", 5, 17, 21, 3, width=2, iters=1, ds=False),
        case("width6_iter2_k5_sigma2_dil2", 6, 33, 29, 6, width=6, iters=2, k=5, sigma=2.0, dil=2),
        case("width0_iter3", 7, 15, 18, 3, width=0, iters=3, ds=False),
        case("one_class", 8, 9, 11, 1),
        case("thin_1xN", 9, 1, 40, 3, nblobs=8),
        case("single_pixel", 10, 1, 1, 2),
    ]
    with open(OUT, "w") as f:
        json.dump({"generator": {"script": "scripts/gen_sml_post_fixtures.py", "numpy": np.__version__,
                                 "scipy": __import__("scipy").__version__},
                   "tolerance": "|rust - ref| <= 1e-6 * max(1, |ref|)", "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"{OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
