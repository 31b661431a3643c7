"""Evaluator: batches equal one metrics() call on the concatenation (byte for
byte in JSON), with and without spilling; logits equal `bench run`."""

import json
import os

import numpy as np
import pytest

import anoseg_bench as ab


def batches(seed, n=5, shape=(2, 40, 56), dtype=np.float32, ties=False):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = rng.normal(size=shape)
        if ties:
            s = np.round(s * 4) / 4
        l = rng.choice(np.array([0, 0, 0, 0, 0, 1, 255], dtype=np.uint8), shape)
        out.append((s.astype(dtype), l))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("buffer_bytes", [64 << 20, 4096])  # 4096: spills to disk after every batch
@pytest.mark.parametrize("rule", ["first", "interp"])
def test_batches_equal_concatenation_byte_for_byte(dtype, buffer_bytes, rule, tmp_path):
    bs = batches(1, dtype=dtype, ties=True)
    ev = ab.Evaluator(fpr95=rule, buffer_bytes=buffer_bytes, spill_dir=tmp_path)
    for s, l in bs:
        ev.update(s, l)
    S = np.concatenate([b[0] for b in bs])
    L = np.concatenate([b[1] for b in bs])
    one = ab.metrics_json(S, L, fpr95=rule)
    got = json.loads(ev.compute_json())
    assert list(got) == ["score"]
    assert json.dumps(got["score"], separators=(",", ":")) == one
    assert ev.compute_json() == '{"score":' + one + "}"
    ram, disk = ev.footprint
    if dtype == np.float32 and buffer_bytes == 4096:
        assert disk == 4 * json.loads(one)["negatives"]
    else:
        assert disk == 0


def test_compute_is_not_destructive_and_updates_continue():
    bs = batches(2, n=4)
    ev = ab.Evaluator(buffer_bytes=4096)
    for i, (s, l) in enumerate(bs):
        ev.update(s, l)
        S = np.concatenate([b[0] for b in bs[: i + 1]])
        L = np.concatenate([b[1] for b in bs[: i + 1]])
        assert ev.compute()["score"] == ab.metrics(S, L)
    ev.reset()
    ev.update(*bs[0])
    assert ev.compute()["score"] == ab.metrics(*bs[0])


def test_mixed_float16_and_float32_batches_and_named_methods():
    a = batches(3, n=2, dtype=np.float16)
    b = batches(4, n=2, dtype=np.float32)
    ev = ab.Evaluator()
    for s, l in a + b:
        ev.update(s, l, method="mine")
        ev.update(-s, l, method="negated")
    S = np.concatenate([x[0].astype(np.float32) for x in a + b])
    L = np.concatenate([x[1] for x in a + b])
    got = ev.compute()
    assert list(got) == ["mine", "negated"]
    assert got["mine"] == ab.metrics(S, L)
    assert got["negated"] == ab.metrics(-S, L)


def test_to_frame():
    ev = ab.Evaluator()
    ev.update(*batches(5, n=1)[0])
    f = ev.to_frame()
    try:
        import pandas  # noqa: F401
    except ImportError:
        assert f[0]["method"] == "score"
    else:
        assert list(f.index) == ["score"] and f.loc["score", "auroc"] == ev.compute()["score"]["auroc"]


def write_dataset(root, seed=21, c=19, h=24, w=40, f16_test=False, calibration=False):
    """A SPEC §3 dataset from numpy: val/ and test/ (and calibration/) with .npy labels and logits."""
    rng = np.random.default_rng(seed)
    data = {}
    splits = (("calibration", 2),) if calibration else ()
    for split, n in splits + (("val", 2), ("test", 3)):
        (root / split / "labels").mkdir(parents=True)
        (root / split / "logits" / "m").mkdir(parents=True)
        L, Z = [], []
        for i in range(n):
            lab = rng.choice(np.array([0, 0, 0, 0, 0, 0, 0, 1, 255], dtype=np.uint8), (h, w))
            z = (rng.normal(size=(c, h, w)) * 3).astype(np.float32)
            z[0] += 2 * (lab == 0)  # a model that is more confident on normal pixels
            if f16_test and split == "test":
                z = z.astype(np.float16)
            np.save(root / split / "labels" / f"img{i}.npy", lab)
            np.save(root / split / "logits" / "m" / f"img{i}.npy", z)
            L.append(lab)
            Z.append(z)
        data[split] = (np.stack(Z), np.stack(L))
    return data


METHODS = ["max_logit", "msp", "energy", "entropy"]


@pytest.mark.parametrize("f16", [False, True])
def test_logits_equal_bench_run(tmp_path, bench, f16, monkeypatch):
    data = write_dataset(tmp_path / "d", f16_test=f16)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'name = "t"\ndataset = "d"\noutput = "out"\n'
        f"methods = {json.dumps(METHODS)}\n"
        '[method.msp]\ntemperature = 1.5\n[method.energy]\ntemperature = 2.0\n'
        '[[models]]\nid = "m"\nname = "M"\n'
    )
    bench("run", cfg, "--device", "cpu", cwd=tmp_path)
    res = ab.load(tmp_path / "out" / "t")
    for split, (Z, L) in data.items():
        ev = ab.Evaluator(METHODS, device="cpu", msp_temperature=1.5, energy_temperature=2.0, buffer_bytes=4096)
        ev.update(Z[:2], L[:2])  # two batches
        ev.update(Z[2:], L[2:])
        got = ev.compute()
        assert list(got) == METHODS
        for m in METHODS:
            cell = res.cell("m", m, split)
            for k in ("auroc", "aupr", "fpr95", "f1", "threshold", "positives", "negatives", "void", "images"):
                assert got[m][k] == cell[k], (split, m, k, got[m][k], cell[k])
    # the in-process sweep gives the same results.json text (relative paths
    # resolve against the working directory, as in the CLI)
    monkeypatch.chdir(tmp_path)
    assert ab.run(cfg, device="cpu", write=False).json == res.json


def test_single_image_logits_and_scores_mix():
    data = write_dataset_mem()
    z, l = data
    ev = ab.Evaluator(["max_logit"], device="cpu")
    ev.update(z[0], l[0])  # [C, H, W] with [H, W]
    ev.update(z[1:], l[1:])
    want = ab.metrics(-z.max(axis=1), l)  # max_logit = -max_c z_c
    assert ev.compute()["max_logit"] == want
    assert ev.device.startswith("cpu")


def write_dataset_mem(seed=4, c=5, h=9, w=13, b=3):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(b, c, h, w)).astype(np.float32)
    l = rng.choice(np.array([0, 0, 1, 255], dtype=np.uint8), (b, h, w))
    return z, l


def has_adapter():
    if ab.adapters():
        return True
    if os.environ.get("BENCH_REQUIRE_GPU") == "1":
        pytest.fail("BENCH_REQUIRE_GPU=1 but wgpu sees no adapter")
    return False


def test_logits_on_the_gpu_equal_bench_run_gpu(tmp_path, bench):
    if not has_adapter():
        pytest.skip("no wgpu adapter (install mesa-vulkan-drivers for lavapipe)")
    data = write_dataset(tmp_path / "d", c=19, h=20, w=36, seed=33)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'name = "t"\ndataset = "d"\noutput = "out"\n'
        f"methods = {json.dumps(METHODS)}\n"
        '[[models]]\nid = "m"\nname = "M"\n'
    )
    bench("run", cfg, "--device", "gpu", cwd=tmp_path)
    res = ab.load(tmp_path / "out" / "t")
    assert res.data["device"] == "gpu"
    Z, L = data["test"]
    ev = ab.Evaluator(METHODS, device="gpu")
    ev.update(Z, L)
    assert not ev.device.startswith("cpu")
    got = ev.compute()
    cpu = ab.Evaluator(METHODS, device="cpu")
    cpu.update(Z, L)
    cpu = cpu.compute()
    for m in METHODS:
        cell = res.cell("m", m, "test")
        for k in ("auroc", "aupr", "fpr95", "f1", "threshold", "positives", "negatives", "void", "images"):
            assert got[m][k] == cell[k], (m, k, got[m][k], cell[k])
        # the WGSL pass agrees with the CPU reference to float tolerance
        assert abs(got[m]["auroc"] - cpu[m]["auroc"]) < 1e-3


def test_calibrate_then_sml_heat_equal_bench_run(tmp_path, bench):
    data = write_dataset(tmp_path / "d", c=6, h=20, w=30, seed=8, calibration=True)
    methods = ["sml", "heat", "max_logit", "kl_matching"]
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'name = "t"\ndataset = "d"\noutput = "out"\n'
        f"methods = {json.dumps(methods)}\n"
        '[[models]]\nid = "m"\nname = "M"\n'
    )
    bench("run", cfg, "--device", "cpu", cwd=tmp_path)
    res = ab.load(tmp_path / "out" / "t")
    Zc, Lc = data["calibration"]
    fitted = ab.Evaluator(methods, device="cpu")
    fitted.calibrate([Zc[:1], Zc[1:]], [Lc[:1], Lc[1:]])
    reused = ab.Evaluator(methods, device="cpu", calibration=tmp_path / "out" / "t" / "calibration.json", model="m")
    for ev in (fitted, reused):
        Z, L = data["test"]
        ev.update(Z, L)
        got = ev.compute()
        for m in methods:
            cell = res.cell("m", m, "test")
            for k in ("auroc", "aupr", "fpr95", "f1", "threshold", "positives", "negatives"):
                assert got[m][k] == cell[k], (m, k, got[m][k], cell[k])
    with pytest.raises(ValueError, match="calibrate\\(\\) must come before the first update"):
        fitted.calibrate(Zc, Lc)
