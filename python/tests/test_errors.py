"""Bad inputs raise the documented exceptions with one-line messages; a
rejected batch leaves the Evaluator unchanged; nothing panics."""

import numpy as np
import pytest

import anoseg_bench as ab

S = np.zeros((4, 5), np.float32)
L = np.zeros((4, 5), np.uint8)


def one_line(e):
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize(
    "scores, labels, kw, match",
    [
        (S.astype(np.float64), L, {}, r"scores: must be float32 or float16 \(got float64\)"),
        (S.astype(np.int32), L, {}, r"must be float32 or float16"),
        (S, L.astype(np.float32), {}, r"labels: must be an integer array"),
        (S, L[:3], {}, r"scores: shape \[4, 5\] but labels has shape \[3, 5\]"),
        (S, L, {"fpr95": "middle"}, r'`fpr95`: unknown variant `middle`, expected one of `first`, `strict`, `interp`'),
        (S, L, {"anomaly": (1,), "ignore": (1, 255)}, r"label value 1 is listed both in `anomaly` and in `ignore`"),
        (S, L, {"anomaly": ()}, r"`anomaly` must list at least one label value"),
        (S, L, {"anomaly": (70000,)}, r"outside 0..=65535"),
        ([S, S], [L], {}, r"2 score arrays but 1 label arrays"),
        ([S], L, {}, r"both be arrays or both be lists"),
    ],
)
def test_bad_inputs_raise_value_error(scores, labels, kw, match):
    with pytest.raises(ValueError, match=match) as e:
        ab.metrics(scores, labels, **kw)
    one_line(e)


@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (np.inf, r"\+inf"), (-np.inf, "-inf")])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_non_finite_scores(bad, kind, dtype):
    s = S.astype(dtype).copy()
    s[2, 3] = bad
    with pytest.raises(ValueError, match=rf"scores: non-finite score \({kind}\) at \(2, 3\) \(flat index 13\); scores must be finite"):
        ab.metrics(s, L)
    with pytest.raises(ValueError, match=r"scores\[1\]: non-finite"):
        ab.metrics([S, s], [L, L])


def test_unlisted_label_above_255():
    l = L.astype(np.uint16).copy()
    l[1, 2] = 65535
    with pytest.raises(ValueError, match=r"labels: mask value 65535 at \(1, 2\) is above 255 and not listed in `anomaly` or `ignore`"):
        ab.metrics(S, l)
    with pytest.warns(RuntimeWarning, match="undefined"):
        ab.metrics(S, l, ignore=(255, 65535))  # listed: fine (no anomaly here)
    l = L.astype(np.int64).copy()
    l[0, 0] = -1
    with pytest.raises(ValueError, match=r"label value -1 at \(0, 0\) is outside 0..=65535"):
        ab.metrics(S, l)


def test_evaluator_errors_leave_state_unchanged():
    ev = ab.Evaluator(device="cpu")
    ok_s = np.arange(20, dtype=np.float32).reshape(4, 5)
    ok_l = (np.arange(20) % 3 == 0).astype(np.uint8).reshape(4, 5)
    ev.update(ok_s, ok_l)
    before = ev.compute_json()
    bad = ok_s.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite score"):
        ev.update(bad, ok_l)
    with pytest.raises(ValueError, match="matches neither"):
        ev.update(ok_s, ok_l[:2])
    with pytest.raises(ValueError, match="reads as logits with one class"):
        ev.update(ok_s[None, None], ok_l[None])
    z = np.zeros((1, 3, 4, 5), np.float32)
    z[0, 2, 1, 4] = np.inf
    with pytest.raises(ValueError, match=r"logits: non-finite logit \(\+inf\) at image 0, class 2, y 1, x 4"):
        ev.update(z, ok_l[None])
    with pytest.raises(ValueError, match="logits: must be float32 or float16"):
        ev.update(z.astype(np.float64), ok_l[None])
    assert ev.compute_json() == before
    with pytest.raises(ValueError, match="non-finite score"):
        ev.update(bad, ok_l, method="other")
    assert ev.compute_json() == before


def test_evaluator_config_errors():
    with pytest.raises(ValueError, match=r"unknown method 'softmax' \(known: max_logit, msp, energy, sml, heat, entropy, margin, gen, rba, kl_matching\)"):
        ab.Evaluator(["softmax"])
    with pytest.raises(ValueError, match=r'device must be "auto", "cpu" or "gpu"'):
        ab.Evaluator(device="tpu")
    with pytest.raises(ValueError, match="msp_temperature must be a finite number > 0"):
        ab.Evaluator(msp_temperature=0)
    with pytest.raises(ValueError, match="calibration and model go together"):
        ab.Evaluator(["sml"], calibration="x.json")
    with pytest.raises(FileNotFoundError):
        ab.Evaluator(spill_dir="/nonexistent/folder")
    # SML / HEAT without statistics: an error, never a made-up number
    ev = ab.Evaluator(["max_logit", "sml"], device="cpu")
    with pytest.raises(ValueError, match="sml, heat and kl_matching need calibration statistics"):
        ev.update(np.zeros((1, 3, 4, 5), np.float32), np.zeros((1, 4, 5), np.uint8))
    ev = ab.Evaluator(["heat"], device="cpu", calibration="/nonexistent/calibration.json", model="m")
    with pytest.raises(FileNotFoundError, match="/nonexistent/calibration.json"):
        ev.update(np.zeros((1, 3, 4, 5), np.float32), np.zeros((1, 4, 5), np.uint8))


def test_missing_files():
    with pytest.raises(FileNotFoundError, match="nope.toml: cannot read config") as e:
        ab.run("nope.toml")
    one_line(e)
    with pytest.raises(FileNotFoundError, match="results.json: cannot read"):
        ab.load("/nonexistent/results/dir")


def test_unknown_table_format(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ValueError):
        ab.load(tmp_path)
