"""Batch normalization: gradient checks (train/eval, 4-D/2-D), PyTorch agreement incl. running stats."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import check_vs_torch, grad_check, max_rel, torch_or_skip
from volnet.errors import ShapeError
from volnet.ops.batchnorm import batchnorm_backward, batchnorm_forward


@pytest.fixture(autouse=True, params=["numba", "numpy"])
def kernel_path(request):
    """Every test of this module runs on both kernel paths (numba must import: no skip)."""
    from volnet import kernels

    with kernels.selected(request.param):
        yield request.param


@pytest.mark.parametrize("shape", [(3, 4, 3, 2), (5, 6)])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_gradient(shape, train):
    rng = np.random.default_rng(0)
    D = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    rm, rv = rng.standard_normal(D), rng.uniform(0.5, 2, D)

    def f():
        return batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), train=train)[0]

    out, cache = batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), train=train)
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)
    grad_check(f, dout, {"x": x, "gamma": gamma, "beta": beta}, {"x": dx, "gamma": dgamma, "beta": dbeta})


def test_batchnorm_train_normalises():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3, 5, 5)) * 4 + 2
    out, _ = batchnorm_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, atol=1e-5)


def test_batchnorm_matches_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(2)
    worst, worst_cfg = 0.0, None
    for t in range(60):
        train = t % 2 == 0
        # M = values per channel >= 4: with M = 2, xhat = +-1 whatever x is, dx is ~0 (eps terms only)
        # and float32 results (torch's too) are ~1e-3 off float64.
        N, D = int(rng.integers(2, 6)), int(rng.integers(1, 7))
        shape = (N, D, *rng.integers(1, 5, size=2).tolist()) if rng.random() < 0.6 else (N + 2, D)
        while np.prod(shape) // D < 4:
            shape = (shape[0] + 1, *shape[1:])
        kw = dict(momentum=float(rng.uniform(0.01, 0.9)), eps=float(10 ** rng.uniform(-5, -2)))
        x = (rng.standard_normal(shape) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)).astype(np.float32)
        gamma = rng.standard_normal(D).astype(np.float32)
        beta = rng.standard_normal(D).astype(np.float32)
        rm = rng.standard_normal(D).astype(np.float32)
        rv = rng.uniform(0.5, 2, D).astype(np.float32)
        rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
        err = check_vs_torch(
            lambda: batchnorm_forward(x, gamma, beta, rm, rv, train=train, **kw),
            lambda d, cache: dict(zip(("x", "gamma", "beta"), batchnorm_backward(d, cache))),
            lambda t, _: torch.nn.functional.batch_norm(t["x"], rm_t, rv_t, t["gamma"], t["beta"],
                                                        training=train, **kw),
            {"x": x, "gamma": gamma, "beta": beta}, rng)
        assert rm.dtype == rv.dtype == np.float32
        err = max(err, max_rel(rm, rm_t.numpy()), max_rel(rv, rv_t.numpy()))  # running statistics too
        if err > worst:
            worst, worst_cfg = err, (shape, train, kw)
    print(f"batchnorm: largest relative error vs torch {worst:.2e} at {worst_cfg}")
    assert worst < 1e-4, f"batchnorm: {worst:.2e} vs torch for {worst_cfg}"


def test_running_stats_in_place_and_eval_untouched():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    ids = id(rm), id(rv)
    batchnorm_forward(x, np.ones(2, np.float32), np.zeros(2, np.float32), rm, rv, momentum=0.5)
    assert (id(rm), id(rv)) == ids
    np.testing.assert_allclose(rm, 0.5 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(rv, 0.5 + 0.5 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    before = rm.copy(), rv.copy()
    batchnorm_forward(x, np.ones(2, np.float32), np.zeros(2, np.float32), rm, rv, train=False)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])


def test_batchnorm_errors():
    one = np.ones(3, np.float32)
    with pytest.raises(ShapeError, match="4-D"):
        batchnorm_forward(np.zeros((2, 3, 4), np.float32), one, one, one, one)
    with pytest.raises(ShapeError, match="gamma"):
        batchnorm_forward(np.zeros((2, 4, 2, 2), np.float32), one, one, one, one)
    with pytest.raises(ShapeError, match="more than 1 value"):
        batchnorm_forward(np.zeros((1, 3), np.float32), one, one, one, one)
