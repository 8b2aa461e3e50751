"""Winograd F(2x2, 3x3): transforms, forward and gradients vs im2col, naive loops and PyTorch; dispatch."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import grad_check, max_rel, torch_or_skip
from volnet.ops.conv import _choose_algo, conv_backward, conv_forward, conv_naive, geometry
from volnet.ops.winograd import AT, BT, G, filter_transform, winograd_supported

# (x shape, K, pad): even and odd output sizes (odd ones round up to whole 2x2 tiles), pad 0/1/2, pairs
SHAPES = [
    ((2, 3, 6, 6), 4, 1),
    ((2, 3, 5, 7), 4, 1),
    ((1, 2, 6, 5), 3, 0),
    ((2, 4, 7, 6), 5, 2),
    ((1, 2, 1, 1), 2, 1),
    ((2, 3, 3, 4), 2, (0, 2)),
    ((2, 3, 4, 3), 2, (2, 0)),
    ((3, 8, 8, 8), 6, 1),
]


def _data(xs, K, dtype, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((K, xs[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype) if bias else None
    return rng, x, w, b


def test_one_tile_matches_the_formula():
    """Y = A^T [(G g G^T) * (B^T d B)] A is the valid 3x3 correlation of one 4x4 tile."""
    rng = np.random.default_rng(0)
    d = rng.standard_normal((4, 4))
    g = rng.standard_normal((3, 3))
    Y = AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(Y, direct, rtol=1e-12, atol=1e-12)
    U = filter_transform(g[None, None])
    np.testing.assert_allclose(U[:, 0, 0].reshape(4, 4), G @ g @ G.T, rtol=1e-12)


@pytest.mark.parametrize("xs,K,pad", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_float64_matches_im2col_and_naive_tightly(xs, K, pad, bias):
    rng, x, w, b = _data(xs, K, np.float64, bias=bias)
    o_ref, c_ref = conv_forward(x, w, b, pad=pad, algo="im2col")
    o, c = conv_forward(x, w, b, pad=pad, algo="winograd")
    assert c.algo == "winograd" and o.dtype == np.float64 and o.shape == o_ref.shape
    assert max_rel(o, o_ref) < 1e-13
    assert max_rel(o, conv_naive(x, w, b, pad=pad)) < 1e-13
    d = rng.standard_normal(o.shape)
    for got, want in zip(conv_backward(d, c), conv_backward(d, c_ref)):
        if want is None:
            assert got is None
        else:
            assert got.dtype == np.float64 and got.shape == want.shape
            assert max_rel(got, want) < 1e-13


@pytest.mark.parametrize("xs,K,pad", SHAPES[:4])
def test_float64_numerical_gradients(xs, K, pad):
    rng, x, w, b = _data(xs, K, np.float64, seed=1)
    out, cache = conv_forward(x, w, b, pad=pad, algo="winograd")
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv_backward(dout, cache)
    grad_check(lambda: conv_forward(x, w, b, pad=pad, algo="winograd")[0], dout,
               {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db})


@pytest.mark.parametrize("seed", range(6))
def test_float32_matches_pytorch(seed):
    torch = torch_or_skip()
    rng = np.random.default_rng(100 + seed)
    N, C, K = int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
    H, W = int(rng.integers(3, 14)), int(rng.integers(3, 14))
    pad = int(rng.integers(0, 3))
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = rng.standard_normal((K, C, 3, 3), dtype=np.float32)
    b = rng.standard_normal(K, dtype=np.float32)
    out, cache = conv_forward(x, w, b, pad=pad, algo="winograd")
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    dx, dw, db = conv_backward(dout, cache)
    assert out.dtype == dx.dtype == dw.dtype == db.dtype == np.float32
    xt, wt, bt = (torch.from_numpy(a).requires_grad_(True) for a in (x, w, b))
    ot = torch.nn.functional.conv2d(xt, wt, bt, padding=pad)
    ot.backward(torch.from_numpy(dout))
    assert max_rel(out, ot.detach().numpy()) < 1e-4
    assert max_rel(dx, xt.grad.numpy()) < 1e-4
    assert max_rel(dw, wt.grad.numpy()) < 1e-4
    assert max_rel(db, bt.grad.numpy()) < 1e-4


def test_float32_close_to_im2col_on_a_benchmark_shape():
    rng, x, w, b = _data((8, 64, 16, 16), 64, np.float32)
    w *= np.float32(0.1)
    o_ref, c_ref = conv_forward(x, w, b, pad=1, algo="im2col")
    o, c = conv_forward(x, w, b, pad=1, algo="winograd")
    assert max_rel(o, o_ref) < 1e-5
    d = rng.standard_normal(o.shape, dtype=np.float32)
    for got, want in zip(conv_backward(d, c), conv_backward(d, c_ref)):
        assert got.dtype == np.float32 and max_rel(got, want) < 1e-5


def test_channel_major_input_and_need_dx():
    """Input in channel-major memory (what a previous conv returns) and need_dx=False."""
    rng, x, w, b = _data((2, 5, 6, 6), 4, np.float64)
    xcm = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    o, c = conv_forward(xcm, w, b, pad=1, algo="winograd")
    assert max_rel(o, conv_naive(x, w, b, pad=1)) < 1e-13
    d = rng.standard_normal(o.shape)
    dx_none, dw, db = conv_backward(d, c, need_dx=False)
    assert dx_none is None
    _, dw_ref, db_ref = conv_backward(d, conv_forward(x, w, b, pad=1, algo="im2col")[1])
    assert max_rel(dw, dw_ref) < 1e-13 and max_rel(db, db_ref) < 1e-13


def test_supported_shapes_and_errors():
    assert winograd_supported(geometry((1, 1, 8, 8), 3, 1, 1))
    assert not winograd_supported(geometry((1, 1, 9, 9), 3, 2, 1))  # stride 2
    assert not winograd_supported(geometry((1, 1, 8, 8), 5, 1, 2))  # 5x5
    assert not winograd_supported(geometry((1, 1, 8, 8), 3, 1, 2, dilation=2))
    assert not winograd_supported(geometry((1, 1, 8, 8), 3, 1, 3))  # dx would need negative padding
    x = np.zeros((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="winograd"):
        conv_forward(x, np.zeros((2, 2, 3, 3), np.float32), pad=3, algo="winograd")
    with pytest.raises(ValueError, match="algo"):
        conv_forward(x, np.zeros((2, 2, 3, 3), np.float32), algo="fft")


def test_automatic_choice():
    """Winograd for 3x3/1 with C, K >= 64 and large per-GEMM work (big images); im2col elsewhere."""
    assert _choose_algo(geometry((1, 64, 224, 224), 3, 1, 1), 64) == "winograd"
    assert _choose_algo(geometry((1, 256, 56, 56), 3, 1, 1), 256) == "winograd"
    assert _choose_algo(geometry((64, 64, 16, 16), 3, 1, 1), 64) == "im2col"  # measured slower
    assert _choose_algo(geometry((64, 128, 8, 8), 3, 1, 1), 128) == "im2col"
    assert _choose_algo(geometry((64, 32, 32, 32), 3, 1, 1), 32) == "im2col"
    assert _choose_algo(geometry((1, 3, 224, 224), 3, 1, 1), 64) == "im2col"
    assert _choose_algo(geometry((1, 64, 225, 225), 3, 2, 1), 64) == "im2col"


def test_automatic_choice_dispatches_backward(monkeypatch):
    import volnet.ops.conv as conv

    monkeypatch.setattr(conv, "WINOGRAD_MIN_GEMM", 0)
    x = np.ones((2, 64, 4, 4), np.float32)
    out, cache = conv_forward(x, np.ones((64, 64, 3, 3), np.float32), pad=1)
    assert cache.algo == "winograd"
    dx, dw, _ = conv_backward(np.ones_like(out), cache)
    assert dx.shape == x.shape and dw.shape == (64, 64, 3, 3)
    monkeypatch.setattr(conv, "WINOGRAD_MIN_CHANNELS", None)
    assert conv_forward(x, np.ones((64, 64, 3, 3), np.float32), pad=1)[1].algo == "im2col"
