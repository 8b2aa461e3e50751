"""FC layer, ReLU and softmax: gradient checks, PyTorch agreement, errors, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import check_vs_torch, grad_check, max_rel, torch_or_skip
from volnet.errors import ShapeError
from volnet.ops.activations import relu_backward, relu_forward, softmax, softmax_backward, softmax_forward
from volnet.ops.fc import fc_backward, fc_forward


@pytest.fixture(autouse=True, params=["numba", "numpy"])
def kernel_path(request):
    """Every test of this module runs on both kernel paths (numba must import: no skip)."""
    from volnet import kernels

    with kernels.selected(request.param):
        yield request.param


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4, 4)])
def test_fc_gradient(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    D = int(np.prod(shape[1:]))
    w = rng.standard_normal((6, D)) * 0.1
    b = rng.standard_normal(6)
    out, cache = fc_forward(x, w, b)
    assert out.shape == (shape[0], 6)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = fc_backward(dout, cache)
    assert dx.shape == x.shape
    grad_check(lambda: fc_forward(x, w, b)[0], dout, {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db})


def test_fc_flattens_in_chw_order():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    w = np.zeros((1, 12), dtype=np.float32)
    w[0, 4] = 1.0  # (C=1, H=0, W=0) in C, H, W order
    out, _ = fc_forward(x, w, np.zeros(1, np.float32))
    np.testing.assert_array_equal(out[:, 0], x[:, 1, 0, 0])


def test_fc_matches_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    worst, worst_cfg = 0.0, None
    for _ in range(60):
        N, out_f = int(rng.integers(1, 9)), int(rng.integers(1, 20))
        chw = rng.integers(1, 6, size=3).tolist()
        shape = (N, int(rng.integers(1, 40))) if rng.random() < 0.5 else (N, *chw)
        x = rng.standard_normal(shape).astype(np.float32)
        D = int(np.prod(shape[1:]))
        w = (rng.standard_normal((out_f, D)) / np.sqrt(D)).astype(np.float32)
        b = rng.standard_normal(out_f).astype(np.float32)
        err = check_vs_torch(lambda: fc_forward(x, w, b),
                             lambda d, cache: dict(zip("xwb", fc_backward(d, cache))),
                             lambda t, _: torch.nn.functional.linear(t["x"].flatten(1), t["w"], t["b"]),
                             {"x": x, "w": w, "b": b}, rng)
        if err > worst:
            worst, worst_cfg = err, (shape, out_f)
    print(f"fc: largest relative error vs torch {worst:.2e} at {worst_cfg}")
    assert worst < 1e-4, f"fc: {worst:.2e} vs torch for {worst_cfg}"


def test_fc_shape_errors():
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ShapeError, match="48 features"):
        fc_forward(x, np.zeros((5, 47), np.float32), np.zeros(5, np.float32))
    with pytest.raises(ShapeError, match="bias"):
        fc_forward(x, np.zeros((5, 48), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ShapeError, match="2-D"):
        fc_forward(x, np.zeros((5, 48, 1), np.float32), np.zeros(5, np.float32))


def test_relu_gradient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 4))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    out, cache = relu_forward(x)
    dout = rng.standard_normal(out.shape)
    grad_check(lambda: relu_forward(x)[0], dout, {"x": x}, {"x": relu_backward(dout, cache)})


def test_relu_inplace_and_dtype():
    x = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
    out, cache = relu_forward(x, inplace=True)
    assert out is x and out.dtype == np.float32
    np.testing.assert_array_equal(x, [0, 0, 2])
    np.testing.assert_array_equal(relu_backward(np.ones(3, np.float32), cache), [0, 0, 1])
    y = np.array([-1.0, 3.0], dtype=np.float32)
    out, _ = relu_forward(y)
    assert out is not y and y[0] == -1.0 and out.dtype == np.float32


def test_relu_matches_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    worst = 0.0
    for _ in range(60):
        shape = tuple(rng.integers(1, 6, size=int(rng.integers(1, 5))).tolist())
        x = rng.standard_normal(shape).astype(np.float32)
        x.flat[0] = 0.0  # the kink: gradient 0, as torch
        worst = max(worst, check_vs_torch(lambda: relu_forward(x.copy()),
                                          lambda d, cache: {"x": relu_backward(d, cache)},
                                          lambda t, _: torch.relu(t["x"]), {"x": x}, rng))
    print(f"relu: largest relative error vs torch {worst:.2e}")
    assert worst < 1e-4


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 2, 2)])
def test_softmax_gradient(shape):
    rng = np.random.default_rng(4)
    s = rng.standard_normal(shape)
    p, cache = softmax_forward(s)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    dout = rng.standard_normal(shape)
    grad_check(lambda: softmax_forward(s)[0], dout, {"s": s}, {"s": softmax_backward(dout, cache)})


def test_softmax_stable_and_matches_torch():
    torch = torch_or_skip()
    big = np.array([[1000.0, 1001.0, 1002.0]], dtype=np.float32)
    p = softmax(big)
    assert np.all(np.isfinite(p)) and p.dtype == np.float32
    rng = np.random.default_rng(5)
    worst = 0.0
    for _ in range(60):
        shape = (int(rng.integers(1, 8)), int(rng.integers(2, 12)))
        # Logit scale <= 5: with near one-hot rows the float32 gradient is ill-conditioned (torch's own
        # float32 result is then ~1e-3 off its float64 one); that regime is checked in float64 below.
        s = (rng.standard_normal(shape) * rng.uniform(0.1, 5)).astype(np.float32)
        worst = max(worst, check_vs_torch(lambda: softmax_forward(s),
                                          lambda d, cache: {"s": softmax_backward(d, cache)},
                                          lambda t, _: torch.softmax(t["s"], dim=1), {"s": s}, rng))
    print(f"softmax: largest relative error vs torch {worst:.2e}")
    assert worst < 1e-4
    for _ in range(10):  # extreme logits, float64
        s = rng.standard_normal((4, 10)) * 30
        dout = rng.standard_normal(s.shape)
        p, cache = softmax_forward(s)
        st = torch.tensor(s, requires_grad=True)
        torch.softmax(st, dim=1).backward(torch.tensor(dout))
        assert max_rel(softmax_backward(dout, cache), st.grad.numpy()) < 1e-9


def test_fc_reads_a_batch_last_volume_without_changing_results() -> None:
    """CONV/POOL outputs lie batch-last in memory; FC reads them as x_flat^T and returns dx batch-last,
    with the same numbers as for a C-ordered input."""
    from volnet.ops.layout import BATCH_LAST, batch_last, memory_order

    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 3, 4, 5))
    w, b = rng.standard_normal((7, 60)), rng.standard_normal(7)
    xb = batch_last(x.copy()).transpose(3, 0, 1, 2)
    assert memory_order(xb) == BATCH_LAST and not xb.flags.c_contiguous
    out, cache = fc_forward(x, w, b)
    outb, cacheb = fc_forward(xb, w, b)
    np.testing.assert_allclose(outb, out, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for got, want in zip(fc_backward(dout, cacheb), fc_backward(dout, cache)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert memory_order(fc_backward(dout, cacheb)[0]) == BATCH_LAST
