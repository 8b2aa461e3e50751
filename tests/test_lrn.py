"""Local response normalization: gradient checks, PyTorch agreement, AlexNet's paper constants."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import check_vs_torch, grad_check, torch_or_skip
from volnet.errors import ShapeError
from volnet.ops.lrn import lrn_backward, lrn_forward


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 8])
def test_lrn_gradient(size):
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, 6, 3, 3))
    kw = dict(size=size, alpha=0.5 * size, beta=0.75, k=1.5)  # large alpha: the sum term matters
    out, cache = lrn_forward(x, **kw)
    dout = rng.standard_normal(out.shape)
    # tol 1e-5: a few entries of dx are ~1e-5 of the largest, where central differences' round-off shows
    # (the analytic gradient agrees with torch's float64 autograd to ~1e-13).
    grad_check(lambda: lrn_forward(x, **kw)[0], dout, {"x": x}, {"x": lrn_backward(dout, cache)}, tol=1e-5)


def test_lrn_matches_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(10)
    worst, worst_cfg = 0.0, None
    for _ in range(60):
        ndim = int(rng.choice([3, 4, 4, 4]))
        spatial = rng.integers(1, 6, size=ndim - 2).tolist()
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 12)), *spatial)
        kw = dict(size=int(rng.integers(1, 8)), alpha=float(10 ** rng.uniform(-4, 0)),
                  beta=float(rng.uniform(0.2, 1.5)), k=float(rng.uniform(0.5, 2.5)))
        x = (rng.standard_normal(shape) * rng.uniform(0.5, 3)).astype(np.float32)
        err = check_vs_torch(lambda: lrn_forward(x, **kw), lambda d, cache: {"x": lrn_backward(d, cache)},
                             lambda t, _: torch.nn.functional.local_response_norm(t["x"], **kw),
                             {"x": x}, rng)
        if err > worst:
            worst, worst_cfg = err, (shape, kw)
    print(f"lrn: largest relative error vs torch {worst:.2e} at {worst_cfg}")
    assert worst < 1e-4, f"lrn: {worst:.2e} vs torch for {worst_cfg}"


def test_lrn_alexnet_paper_constants():
    """The paper's b = a / (k + alpha * sum a^2)^beta (no 1/n) with k=2, n=5, alpha=1e-4 = alpha 5e-4 here."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 7, 2, 2)) * 30
    out, _ = lrn_forward(x, size=5, alpha=5e-4, beta=0.75, k=2.0)
    C = x.shape[1]
    ref = np.empty_like(x)
    for c in range(C):
        lo, hi = max(0, c - 2), min(C - 1, c + 2)
        ref[:, c] = x[:, c] / (2.0 + 1e-4 * np.sum(x[:, lo : hi + 1] ** 2, axis=1)) ** 0.75
    np.testing.assert_allclose(out, ref, rtol=1e-12)


def test_lrn_errors_and_dtype():
    with pytest.raises(ShapeError, match="3-D"):
        lrn_forward(np.zeros((2, 5), np.float32))
    x = np.ones((1, 3, 2, 2), np.float64)
    out, cache = lrn_forward(x)
    assert out.dtype == np.float64 and lrn_backward(out, cache).dtype == np.float64
