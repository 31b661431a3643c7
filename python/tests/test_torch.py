"""torch tensors (CPU) go through DLPack / __array__ without a copy;
skipped when torch is not installed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import anoseg_bench as ab  # noqa: E402


def test_tensors_equal_numpy():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 30, 40, generator=g)
    l = (torch.rand(2, 30, 40, generator=g) < 0.1).to(torch.uint8)
    assert ab.metrics(s, l) == ab.metrics(s.numpy(), l.numpy())
    assert ab.metrics(s.half(), l.long()) == ab.metrics(s.half().numpy(), l.numpy().astype(np.int64))
    # requires_grad and bool masks
    sg = s.clone().requires_grad_(True)
    assert ab.metrics(sg, l.bool()) == ab.metrics(s.numpy(), l.numpy())


def test_no_copy_for_cpu_tensors():
    s = torch.randn(8, 8)
    a = ab._as_array(s, "scores")
    assert a.__array_interface__["data"][0] == s.data_ptr()


def test_eval_loop_with_logits():
    g = torch.Generator().manual_seed(1)
    ev = ab.Evaluator(["max_logit", "msp"], device="cpu")
    all_z, all_l = [], []
    for _ in range(3):
        z = torch.randn(2, 19, 16, 24, generator=g)
        l = (torch.rand(2, 16, 24, generator=g) < 0.1).to(torch.uint8)
        ev.update(z, l)
        all_z.append(z)
        all_l.append(l)
    z, l = torch.cat(all_z), torch.cat(all_l)
    got = ev.compute()
    assert got["max_logit"] == ab.metrics(-z.amax(dim=1), l)
    assert got["msp"]["positives"] == int(l.sum())
