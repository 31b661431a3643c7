#!/usr/bin/env python3
"""Reference fixtures for SML boundary suppression + dilated smoothing, and
for HEAT's spatial-consistency term.

    python3 scripts/gen_sml_post_fixtures.py   # writes tests/fixtures/sml_post.json
                                               # and tests/fixtures/heat_spatial.json

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

HEAT spatial consistency (bench's own definition, README "HEAT"; no public
reference code): s' = (1 - lam)*s + lam*m, m = mean of s over the w x w
window centred on each pixel clipped to the image (in-image sum / in-image
count, no padding values). Reference here: a summed-area table (2-D
cumulative sums with a zero row/column in front) gives the clipped window
sums and the counts are (i1-i0+1)*(j1-j0+1); cross-checked against the
padded-count formulation with scipy.ndimage.uniform_filter
(mode='constant', cval=0: filter(s) / filter(ones), both zero-padded).
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


def spatial_mean(x, win):
    """Clipped w x w window mean via a summed-area table."""
    h, w = x.shape
    r = win // 2
    sat = np.zeros((h + 1, w + 1))
    sat[1:, 1:] = np.cumsum(np.cumsum(x, axis=0), axis=1)
    i = np.arange(h)
    j = np.arange(w)
    i0, i1 = np.maximum(i - r, 0)[:, None], np.minimum(i + r, h - 1)[:, None] + 1
    j0, j1 = np.maximum(j - r, 0)[None, :], np.minimum(j + r, w - 1)[None, :] + 1
    s = sat[i1, j1] - sat[i0, j1] - sat[i1, j0] + sat[i0, j0]
    cnt = (i1 - i0) * (j1 - j0)
    m = s / cnt
    # independent check: padded-count formulation with scipy.ndimage
    ref = ndi.uniform_filter(x, win, mode="constant", cval=0.0) / ndi.uniform_filter(np.ones_like(x), win, mode="constant", cval=0.0)
    assert np.allclose(m, ref, rtol=1e-10, atol=1e-10), np.abs(m - ref).max()
    return m


def heat_case(name, seed, h, w, win, lam):
    rng = np.random.default_rng(seed)
    # HEAT-like scores: a smooth field, a few bright blobs and pixel noise
    yy, xx = np.mgrid[0:h, 0:w]
    x = np.sin(yy / 5.0) + np.cos(xx / 7.0) + rng.normal(0, 0.8, (h, w))
    for _ in range(3):
        i, j = rng.integers(h), rng.integers(w)
        x[i:i + 4, j:j + 6] += 4.0
    x = x.astype(np.float32)
    s = x.astype(np.float64)
    exp = (1 - lam) * s + lam * spatial_mean(s, win)
    return {
        "name": name, "h": h, "w": w,
        "params": {"spatial_window": win, "spatial_weight": lam},
        "scores": [float(v) for v in x.ravel()],
        "expected": [float(v) for v in exp.ravel()],
    }


def main_heat():
    out = os.path.join(ROOT, "tests", "fixtures", "heat_spatial.json")
    cases = [
        heat_case("w3_half_23x31", 11, 23, 31, 3, 0.5),
        heat_case("w5_quarter_40x27", 12, 40, 27, 5, 0.25),
        heat_case("w9_full_37x53", 13, 37, 53, 9, 1.0),
        heat_case("w7_zero_19x21", 14, 19, 21, 7, 0.0),
        heat_case("w15_0.8_33x29", 15, 33, 29, 15, 0.8),
        heat_case("w63_half_70x45", 16, 70, 45, 63, 0.5),
        heat_case("w63_larger_than_image_9x11", 17, 9, 11, 63, 0.7),
        heat_case("thin_1x40_w5", 18, 1, 40, 5, 0.5),
        heat_case("thin_40x1_w11", 19, 40, 1, 11, 0.6),
        heat_case("single_pixel_w3", 20, 1, 1, 3, 0.5),
    ]
    with open(out, "w") as f:
        json.dump({"generator": {"script": "scripts/gen_sml_post_fixtures.py", "numpy": np.__version__,
                                 "scipy": __import__("scipy").__version__},
                   "definition": "(1 - lam)*s + lam*mean of s over the w x w window clipped to the image",
                   "tolerance": "|rust - ref| <= 1e-6 * max(1, |ref|)", "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"{out}: {len(cases)} cases")


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
    main_heat()
