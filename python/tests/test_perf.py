"""A 17 M-pixel metrics() call stays within 2x of `bench eval` on the same
data (and gives the same JSON)."""

import subprocess
import time

import numpy as np

import anoseg_bench as ab
from conftest import bench_bin


def test_17m_pixels_within_2x_of_bench_eval(tmp_path):
    rng = np.random.default_rng(0)
    n, h, w = 16, 1024, 1024  # 16.8 M pixels
    (tmp_path / "s").mkdir()
    (tmp_path / "l").mkdir()
    S, L = [], []
    for i in range(n):
        l = (rng.random((h, w), dtype=np.float32) < 0.02).astype(np.uint8)
        l[:8] = 255
        s = (rng.standard_normal((h, w), dtype=np.float32) + 1.5 * l).astype(np.float32)
        np.save(tmp_path / "s" / f"{i:02}.npy", s)
        np.save(tmp_path / "l" / f"{i:02}.npy", l)
        S.append(s)
        L.append(l)
    cmd = [bench_bin(), "eval", "--scores", str(tmp_path / "s"), "--labels", str(tmp_path / "l"), "--json"]
    subprocess.run(cmd, capture_output=True, check=True)  # warm the page cache
    t_cli = []
    for _ in range(2):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        t_cli.append(time.perf_counter() - t0)
    t_py = []
    for _ in range(2):
        t0 = time.perf_counter()
        got = ab.metrics_json(S, L)
        t_py.append(time.perf_counter() - t0)
    assert got + "\n" == out
    assert min(t_py) <= 2 * min(t_cli), (t_py, t_cli)
