"""Locally connected layer: gradient checks, tied weights == conv, naive and PyTorch (unfold) oracles."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import check_vs_torch, grad_check, rel_error, torch_or_skip
from tests.test_conv import _random_config
from volnet.errors import ShapeError
from volnet.ops.conv import conv_backward, conv_forward
from volnet.ops.local import local_backward, local_forward, local_naive, local_weight_shape

# (x shape, K, F, keyword options)
CONFIGS = {
    "basic": ((2, 2, 5, 5), 3, 3, {}),
    "stride2_pad1": ((2, 2, 7, 7), 2, 3, {"stride": 2, "pad": 1}),
    "nonsquare": ((1, 2, 6, 8), 3, (3, 2), {"stride": (1, 2), "pad": (1, 0)}),
    "dilation2": ((1, 2, 6, 6), 2, 2, {"dilation": 2, "pad": 1}),
    "ceil": ((1, 2, 6, 6), 2, 3, {"stride": 2, "fit": "ceil"}),
    "no_bias": ((2, 2, 4, 4), 2, 3, {"pad": 1, "bias": False}),
}


def _make(cfg: str, dtype=np.float64, seed: int = 0):
    xs, K, F, opts = CONFIGS[cfg]
    opts = dict(opts)
    bias = opts.pop("bias", True)
    rng = np.random.default_rng(seed)
    ws = local_weight_shape(xs[1:], K, F, **opts)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[:3]).astype(dtype) if bias else None
    return x, w, b, opts


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_local_gradients(cfg: str) -> None:
    x, w, b, opts = _make(cfg)
    out, cache = local_forward(x, w, b, **opts)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    dx, dw, db = local_backward(dout, cache)
    inputs, analytic = {"x": x, "w": w}, {"x": dx, "w": dw}
    if b is None:
        assert db is None
    else:
        inputs["b"], analytic["b"] = b, db
    # entries of dw are single products (no sums), some tiny: elementwise error needs a looser bound
    grad_check(lambda: local_forward(x, w, b, **opts)[0], dout, inputs, analytic, tol=1e-5)


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_local_matches_naive(cfg: str) -> None:
    x, w, b, opts = _make(cfg, seed=2)
    out, _ = local_forward(x, w, b, **opts)
    assert rel_error(out, local_naive(x, w, b, **opts)) < 1e-10


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_tied_weights_equal_conv(cfg: str) -> None:
    """The same filters at every position is a convolution; dw of conv is the sum over positions."""
    xs, K, F, _ = CONFIGS[cfg]
    x, w, b, opts = _make(cfg, seed=4)
    w_conv = w[0, 0]
    b_conv = None if b is None else b[0, 0]
    w_tied = np.ascontiguousarray(np.broadcast_to(w_conv, w.shape))
    b_tied = None if b is None else np.ascontiguousarray(np.broadcast_to(b_conv, b.shape))
    out_l, cache_l = local_forward(x, w_tied, b_tied, **opts)
    out_c, cache_c = conv_forward(x, w_conv, b_conv, **opts)
    assert rel_error(out_l, out_c) < 1e-10
    dout = np.random.default_rng(5).standard_normal(out_c.shape)
    dx_l, dw_l, db_l = local_backward(dout, cache_l)
    dx_c, dw_c, db_c = conv_backward(dout, cache_c)
    assert rel_error(dx_l, dx_c) < 1e-10
    assert rel_error(dw_l.sum(axis=(0, 1)), dw_c) < 1e-10
    if b is not None:
        assert rel_error(db_l.sum(axis=(0, 1)), db_c) < 1e-10


def _torch_local(torch, x, w, b, opts, g):
    """Locally connected layer in PyTorch: unfold (im2col) + einsum over positions; autograd for grads."""
    F = torch.nn.functional
    Ho, Wo, K, C, Fh, Fw = w.shape
    if opts["fit"] == "ceil":
        x = F.pad(x, (g.pl, g.pr, g.pt, g.pb))
        pad = 0
    else:
        pad = opts["pad"]
    cols = F.unfold(x, (Fh, Fw), dilation=opts["dilation"], padding=pad, stride=opts["stride"])  # (N, CFF, L)
    out = torch.einsum("ncl,lkc->nkl", cols, w.reshape(Ho * Wo, K, C * Fh * Fw))
    if b is not None:
        out = out + b.reshape(Ho * Wo, K).T[None]
    return out.reshape(x.shape[0], K, Ho, Wo)


TORCH_SEEDS = range(55)


@pytest.mark.parametrize("seed", TORCH_SEEDS)
def test_local_matches_pytorch_unfold(seed: int) -> None:
    torch = torch_or_skip()
    rng = np.random.default_rng(2000 + seed)
    cfg = _random_config(rng)
    opts = {k: cfg[k] for k in ("stride", "pad", "dilation", "fit")}
    ws = local_weight_shape((cfg["C"], cfg["H"], cfg["W"]), cfg["K"], cfg["F"], **opts)
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[:3]).astype(np.float32) if cfg["bias"] else None
    inputs = {"x": x, "w": w} if b is None else {"x": x, "w": w, "b": b}
    err = check_vs_torch(lambda: local_forward(x, w, b, **opts),
                         lambda d, cache: dict(zip("xwb", local_backward(d, cache))),
                         lambda t, cache: _torch_local(torch, t["x"], t["w"], t.get("b"), opts, cache.geom),
                         inputs, rng)
    assert err < 1e-4, (err, cfg)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_local_dtype_preserved(dtype) -> None:
    x, w, b, opts = _make("stride2_pad1", dtype=dtype)
    out, cache = local_forward(x, w, b, **opts)
    dx, dw, db = local_backward(np.ones_like(out), cache)
    assert out.dtype == dx.dtype == dw.dtype == db.dtype == dtype


def test_local_weight_shape() -> None:
    assert local_weight_shape((3, 227, 227), 96, 11, stride=4) == (55, 55, 96, 3, 11, 11)
    assert local_weight_shape((2, 7, 9), 4, (3, 5), pad=(1, 2)) == (7, 9, 4, 2, 3, 5)
    with pytest.raises(ShapeError, match="4.5"):
        local_weight_shape((3, 10, 10), 4, 3, stride=2)


def test_local_shape_errors() -> None:
    x = np.zeros((1, 2, 5, 5))
    with pytest.raises(ShapeError, match="input depth D=2 but filters have depth 3"):
        local_forward(x, np.zeros((3, 3, 4, 3, 3, 3)), None)
    with pytest.raises(ShapeError, match=r"use w of shape \(3, 3, 4, 2, 3, 3\)"):
        local_forward(x, np.zeros((5, 5, 4, 2, 3, 3)), None)
    with pytest.raises(ShapeError, match="6-D"):
        local_forward(x, np.zeros((4, 2, 3, 3)), None)
    with pytest.raises(ShapeError, match="bias"):
        local_forward(x, np.zeros((3, 3, 4, 2, 3, 3)), np.zeros(4))
