"""Inverted dropout: fixed-mask gradient check and equality, statistics, test-time identity."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import grad_check, torch_or_skip
from volnet.errors import ShapeError, VolnetError
from volnet.ops.dropout import dropout_backward, dropout_forward


def test_dropout_gradient_fixed_mask():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 2, 2))
    mask = rng.random(x.shape) > 0.3
    out, cache = dropout_forward(x, p=0.3, mask=mask)
    dout = rng.standard_normal(x.shape)
    dx = dropout_backward(dout, cache)
    grad_check(lambda: dropout_forward(x, p=0.3, mask=mask)[0], dout, {"x": x}, {"x": dx})


@pytest.mark.parametrize("mask_dtype", [bool, np.int64, np.float32])
def test_fixed_mask_equality(mask_dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    mask = (rng.random(x.shape) > 0.5).astype(mask_dtype)
    out, cache = dropout_forward(x, p=0.5, mask=mask)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.where(mask.astype(bool), x * np.float32(2), 0))
    dout = np.ones_like(x)
    np.testing.assert_array_equal(dropout_backward(dout, cache), np.where(mask.astype(bool), 2, 0))


def test_matches_torch_with_torch_mask():
    """Given torch's own mask (read off its output), volnet gives torch's output and gradient."""
    torch = torch_or_skip()
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    for p in (0.1, 0.25, 0.5, 0.8):
        x = (rng.standard_normal((8, 3, 4, 4)) + 5).astype(np.float32)  # no zeros in x
        xt = torch.tensor(x, requires_grad=True)
        ot = torch.nn.functional.dropout(xt, p=p, training=True)
        dout = rng.standard_normal(x.shape).astype(np.float32)
        ot.backward(torch.tensor(dout))
        mask = ot.detach().numpy() != 0
        out, cache = dropout_forward(x, p=p, mask=mask)
        np.testing.assert_allclose(out, ot.detach().numpy(), rtol=1e-6)
        np.testing.assert_allclose(dropout_backward(dout, cache), xt.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_statistics(p):
    rng = np.random.default_rng(3)
    x = np.ones((200, 500), dtype=np.float32)
    out, _ = dropout_forward(x, p=p, rng=rng)
    n = x.size
    kept = np.count_nonzero(out) / n
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)  # 5 standard deviations
    np.testing.assert_allclose(out[out != 0], 1 / (1 - p), rtol=1e-6)
    assert abs(out.mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)  # inverted dropout keeps E[out] = x
    # independent across positions: the two halves' keep rates agree
    assert abs(np.count_nonzero(out[:100]) - np.count_nonzero(out[100:])) / (n / 2) < 0.02
    assert out.dtype == np.float32


def test_seeded_rng_reproducible_and_identity_cases():
    x = np.random.default_rng(4).standard_normal((6, 7))
    a, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(7))
    b, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    for kw in (dict(train=False), dict(p=0.0)):
        out, cache = dropout_forward(x, **kw)
        np.testing.assert_array_equal(out, x)
        dout = np.ones_like(x)
        np.testing.assert_array_equal(dropout_backward(dout, cache), dout)
    out, cache = dropout_forward(x, p=1.0)
    assert not out.any() and not dropout_backward(np.ones_like(x), cache).any()


def test_dropout_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(VolnetError, match=r"\[0, 1\]"):
        dropout_forward(x, p=1.5)
    with pytest.raises(ShapeError, match="mask"):
        dropout_forward(x, mask=np.ones((3, 2), bool))
