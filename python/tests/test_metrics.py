"""metrics() against scikit-learn (golden fixtures and random ties) and
against `bench eval --json` (byte for byte)."""

import json

import numpy as np
import pytest

import anoseg_bench as ab
from conftest import ROOT, sklearn_reference

TOL = 1e-6
GOLDEN = json.loads((ROOT / "tests" / "fixtures" / "metrics.json").read_text())["cases"]


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= TOL


def check(got, exp, rule):
    assert got["positives"] == exp["positives"] and got["negatives"] == exp["negatives"]
    for k in ("auroc", "aupr", "f1"):
        assert close(got[k], exp[k]), (k, got[k], exp[k])
    assert close(got["fpr95"], exp["fpr95_" + rule]), (got["fpr95"], exp["fpr95_" + rule])
    if exp["threshold"] is None:
        assert got["threshold"] is None
    else:  # the same float32 (±0 compare equal)
        assert np.float32(got["threshold"]) == np.float32(exp["threshold"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("case", GOLDEN, ids=[c["name"] for c in GOLDEN])
@pytest.mark.parametrize("rule", ["first", "interp"])
def test_golden_cases(case, rule):
    s = np.array(case["scores"], dtype=np.float64).astype(np.float32)
    l = np.array(case["labels"], dtype=np.uint8)
    got = ab.metrics(s, l, fpr95=rule)
    check(got, case["expected"], rule)
    assert got["fpr95_rule"] == rule and got["images"] == 1
    assert got["void"] == int((l == 255).sum())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rule", ["first", "interp"])
def test_random_ties_equal_sklearn(seed, rule):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 40_000))
    levels = int(rng.integers(2, 60))
    s = (rng.integers(0, levels, n) / 7 - 3).astype(np.float32)  # heavy ties
    l = rng.choice(np.array([0, 0, 0, 0, 1, 255], dtype=np.uint8), n)
    check(ab.metrics(s, l, fpr95=rule), sklearn_reference(s, l), rule)


def test_continuous_shapes_and_lists():
    rng = np.random.default_rng(7)
    s = rng.normal(size=(3, 50, 70)).astype(np.float32)
    l = (rng.random((3, 50, 70)) < 0.05).astype(np.uint8)
    s[l == 1] += 1.0
    ref = sklearn_reference(s, l)
    whole = ab.metrics(s, l)
    check(whole, ref, "first")
    assert whole["images"] == 3
    # any shape: a flat vector, a 4-D tensor, a list of per-image maps
    for ss, ll, images in [(s.ravel(), l.ravel(), 1), (s[:, None], l[:, None], 3), (list(s), list(l), 3)]:
        d = ab.metrics(ss, ll)
        assert {k: v for k, v in d.items() if k != "images"} == {k: v for k, v in whole.items() if k != "images"}
        assert d["images"] == images


def test_float16_scores_are_their_float32_values():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(2, 64, 64)).astype(np.float16)
    l = (rng.random((2, 64, 64)) < 0.1).astype(np.uint8)
    assert ab.metrics_json(s, l) == ab.metrics_json(s.astype(np.float32), l)
    check(ab.metrics(s, l), sklearn_reference(s.astype(np.float32), l), "first")


def test_label_dtypes_and_conventions():
    rng = np.random.default_rng(5)
    s = rng.normal(size=(40, 40)).astype(np.float32)
    raw = rng.choice(np.array([0, 1, 2, 7, 255, 300]), size=(40, 40))
    # anomaly = {2, 7}, ignore = {255, 300}; 0 and 1 are in-distribution
    y = np.where(np.isin(raw, [255, 300]), 255, np.where(np.isin(raw, [2, 7]), 1, 0))
    ref = sklearn_reference(s, y)
    outs = []
    for dt in (np.uint16, np.int32, np.int64, np.int16, np.uint32):
        d = ab.metrics(s, raw.astype(dt), anomaly=(2, 7), ignore=[255, 300])
        check(d, ref, "first")
        outs.append(d)
    assert all(o == outs[0] for o in outs)
    # uint8 (no 300) and bool masks
    raw8 = np.where(raw == 300, 255, raw).astype(np.uint8)
    check(ab.metrics(s, raw8, anomaly=[2, 7]), ref, "first")
    b = rng.random((40, 40)) < 0.2
    check(ab.metrics(s, b), sklearn_reference(s, b.astype(np.uint8)), "first")


def write_folder(tmp_path, n=3, h=60, w=80, seed=11):
    rng = np.random.default_rng(seed)
    (tmp_path / "scores").mkdir()
    (tmp_path / "labels").mkdir()
    S, L = [], []
    for i in range(n):
        s = rng.normal(size=(h, w)).astype(np.float32 if i % 2 == 0 else np.float16)
        l = rng.choice(np.array([0, 0, 0, 0, 0, 1, 255], dtype=np.uint8), (h, w))
        np.save(tmp_path / "scores" / f"im{i}.npy", s)
        np.save(tmp_path / "labels" / f"im{i}.npy", l)
        S.append(s)
        L.append(l)
    return S, L


@pytest.mark.parametrize("rule", ["first", "interp"])
def test_equals_bench_eval_json_byte_for_byte(tmp_path, bench, rule):
    S, L = write_folder(tmp_path)
    cli = bench("eval", "--scores", tmp_path / "scores", "--labels", tmp_path / "labels", "--fpr95", rule, "--json")
    assert ab.metrics_json(S, L, fpr95=rule) + "\n" == cli
    assert ab.metrics(S, L, fpr95=rule) == json.loads(cli)


SWITCHES = [
    {"fpr95": "strict"},
    {"fpr95": "nearest"},
    {"fpr95": "thinned"},
    {"aupr": "trapezoid"},
    {"aupr": "trapezoid_reorder"},
    {"average": "images"},
    {"positive": "normal"},
    {"score_precision": "f16"},
    {"convention": "smiyc"},
    {"convention": "streethazards"},
    {"convention": "openood"},
    {"convention": "pytorch-ood-seg"},
    {"convention": "ood-metrics", "fpr95": "first"},
]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_every_convention_switch_equals_bench_eval_json(tmp_path, bench, switches):
    S, L = write_folder(tmp_path)
    flags = [x for k, v in switches.items() for x in (f"--{k.replace('_', '-')}", v)]
    cli = bench("eval", "--scores", tmp_path / "scores", "--labels", tmp_path / "labels", *flags, "--json")
    assert ab.metrics_json(S, L, **switches) + "\n" == cli
    assert ab.metrics(S, L, **switches) == json.loads(cli)


def test_u16_precision_on_unit_scores_equals_bench_eval(tmp_path, bench):
    S, L = write_folder(tmp_path)
    S = [(1 / (1 + np.exp(-s.astype(np.float64)))).astype(s.dtype) for s in S]
    for i, s in enumerate(S):
        np.save(tmp_path / "scores" / f"im{i}.npy", s)
    cli = bench("eval", "--scores", tmp_path / "scores", "--labels", tmp_path / "labels", "--convention", "bravo", "--json")
    assert ab.metrics_json(S, L, convention="bravo") + "\n" == cli


def test_a_bad_switch_is_a_value_error_naming_it():
    s, l = np.zeros(4, np.float32), np.array([0, 1, 0, 1], np.uint8)
    with pytest.raises(ValueError, match="`aupr`"):
        ab.metrics(s, l, aupr="area")
    with pytest.raises(ValueError, match="unknown convention"):
        ab.metrics(s, l, convention="mine")


def test_undefined_metrics_are_none_with_a_warning():
    s = np.zeros(10, np.float32)
    with pytest.warns(RuntimeWarning, match="undefined"):
        d = ab.metrics(s, np.zeros(10, np.uint8))
    assert d["auroc"] is None and d["fpr95"] is None and d["negatives"] == 10


def test_gil_is_released_during_the_work():
    import threading

    rng = np.random.default_rng(0)
    s = rng.standard_normal(8 << 20, dtype=np.float32)
    l = (rng.random(8 << 20, dtype=np.float32) < 0.05).astype(np.uint8)
    started, done = threading.Event(), threading.Event()

    def work():
        started.set()
        for _ in range(3):
            ab.metrics_json(s, l)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    spins = 0
    while not done.is_set():
        spins += 1
    t.join()
    assert spins > 1000  # this thread ran while the other was inside the Rust call


def test_byte_order_empty_and_scalar_inputs():
    rng = np.random.default_rng(9)
    s = rng.normal(size=(30, 30)).astype(np.float32)
    l = (rng.random((30, 30)) < 0.2).astype(np.uint8)
    assert ab.metrics(s.astype(">f4"), l.astype(">i4")) == ab.metrics(s, l)
    assert ab.metrics(s.T, l.T) == ab.metrics(np.ascontiguousarray(s.T), np.ascontiguousarray(l.T))
    with pytest.warns(RuntimeWarning, match="undefined"):
        d = ab.metrics(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.uint8))
    assert d["positives"] == d["negatives"] == 0 and d["auroc"] is None
