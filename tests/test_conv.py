"""Convolution: gradient checks, im2col/col2im adjointness, naive and PyTorch oracles, dtypes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import check_vs_torch, grad_check, max_rel, rel_error, torch_or_skip
from volnet.errors import ShapeError
from volnet.ops import conv as C
from volnet.ops.conv import col2im, conv_backward, conv_forward, conv_naive, geometry, im2col
from volnet.ops.sizes import effective_size

# (x shape, w shape, keyword options): every option of conv_forward, small enough for float64 grad checks
CONFIGS = {
    "basic": ((2, 3, 5, 5), (4, 3, 3, 3), {}),
    "stride2_pad1": ((2, 2, 7, 7), (3, 2, 3, 3), {"stride": 2, "pad": 1}),
    "pad2_F5": ((1, 2, 5, 5), (2, 2, 5, 5), {"pad": 2}),
    "dilation2": ((1, 2, 7, 7), (2, 2, 3, 3), {"dilation": 2, "pad": 2}),
    "nonsquare_3x5_on_7x9": ((2, 2, 7, 9), (3, 2, 3, 5), {"pad": (1, 2)}),
    "1x1": ((2, 4, 4, 5), (3, 4, 1, 1), {}),
    "1x1_stride2": ((1, 3, 5, 5), (2, 3, 1, 1), {"stride": 2}),
    "pairs": ((1, 2, 7, 8), (2, 2, 3, 2), {"stride": (2, 1), "pad": (1, 0), "dilation": (1, 2)}),
    "floor": ((1, 2, 8, 8), (2, 2, 3, 3), {"stride": 2, "fit": "floor"}),
    "ceil": ((1, 2, 8, 8), (2, 2, 3, 3), {"stride": 2, "fit": "ceil"}),
    "ceil_pad_stride3": ((1, 2, 8, 7), (2, 2, 2, 3), {"stride": 3, "pad": 1, "fit": "ceil"}),
    "no_bias": ((2, 2, 5, 5), (3, 2, 3, 3), {"pad": 1, "bias": False}),
}


def _make(cfg: str, dtype=np.float64, seed: int = 0):
    xs, ws, opts = CONFIGS[cfg]
    opts = dict(opts)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if opts.pop("bias", True) else None
    return x, w, b, opts


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_conv_gradients(cfg: str) -> None:
    x, w, b, opts = _make(cfg)
    out, cache = conv_forward(x, w, b, **opts)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    dx, dw, db = conv_backward(dout, cache)
    inputs = {"x": x, "w": w}
    analytic = {"x": dx, "w": dw}
    if b is None:
        assert db is None
    else:
        inputs["b"] = b
        analytic["b"] = db
    grad_check(lambda: conv_forward(x, w, b, **opts)[0], dout, inputs, analytic)


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_conv_matches_naive(cfg: str) -> None:
    x, w, b, opts = _make(cfg, seed=3)
    out, _ = conv_forward(x, w, b, **opts)
    ref = conv_naive(x, w, b, **opts)
    assert out.shape == ref.shape
    assert rel_error(out, ref) < 1e-10


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_im2col_col2im_adjoint(cfg: str) -> None:
    """<col2im(c), x> == <c, im2col(x)> for random c and x."""
    xs, ws, opts = CONFIGS[cfg]
    opts = {k: v for k, v in opts.items() if k != "bias"}
    rng = np.random.default_rng(5)
    x = rng.standard_normal(xs)
    cols = im2col(x, ws[2], ws[3], **opts)
    c = rng.standard_normal(cols.shape)
    lhs = float(np.sum(col2im(c, xs, ws[2], ws[3], **opts) * x))
    rhs = float(np.sum(c * cols))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(rhs))


def test_im2col_orientation_matches_weight_rows() -> None:
    """Rows are (C, Fh, Fw) like w.reshape(K, -1); columns are (N, Ho, Wo)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 8))
    w = rng.standard_normal((4, 3, 3, 2))
    cols = im2col(x, 3, 2, stride=(1, 2), pad=1)
    g = geometry(x.shape, (3, 2), (1, 2), 1)
    assert cols.shape == (3 * 3 * 2, 2 * g.Ho * g.Wo)
    out = (w.reshape(4, -1) @ cols).reshape(4, 2, g.Ho, g.Wo).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(out, conv_naive(x, w, None, stride=(1, 2), pad=1), atol=1e-12)
    # column n*Ho*Wo + i*Wo + j is the receptive field of image n at output (i, j)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, i, j = 1, 2, 3
    np.testing.assert_array_equal(cols[:, n * g.Ho * g.Wo + i * g.Wo + j],
                                  xp[n, :, i:i + 3, 2 * j:2 * j + 2].ravel())


@pytest.mark.parametrize("F,P", [(3, 1), (3, 0), (5, 2), (5, 1), ((3, 5), (0, 2)), (1, 0)])
def test_backward_of_conv_is_a_conv(F, P) -> None:
    """Stride 1: dx = full convolution of dout with flipped, channel-transposed filters, pad F-1-P."""
    Fh, Fw = (F, F) if isinstance(F, int) else F
    Ph, Pw = (P, P) if isinstance(P, int) else P
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 7, 8))
    w = rng.standard_normal((4, 3, Fh, Fw))
    b = rng.standard_normal(4)
    out, cache = conv_forward(x, w, b, pad=(Ph, Pw))
    dout = rng.standard_normal(out.shape)
    dx, _, _ = conv_backward(dout, cache)
    w_flip = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    dx_conv, _ = conv_forward(dout, w_flip, None, pad=(Fh - 1 - Ph, Fw - 1 - Pw))
    assert rel_error(dx, dx_conv) < 1e-10


def _random_config(rng: np.random.Generator) -> dict:
    """Random N, C, H, W, K, F, S, P, D that fit (strict when the division is exact)."""
    def axis():
        F = int(rng.integers(1, 6))
        D = int(rng.choice([1, 1, 1, 2, 3])) if F > 1 else 1
        S = int(rng.choice([1, 1, 2, 3]))
        P = int(rng.integers(0, (effective_size(F, D) + 1) // 2 + 1))
        lo = max(1, effective_size(F, D) - 2 * P)
        H = int(rng.integers(lo, lo + 12))
        return F, D, S, P, H

    Fh, Dh, Sh, Ph, H = axis()
    if rng.random() < 0.6:  # square filters, the common case
        Fw, Dw, Sw, Pw = Fh, Dh, Sh, Ph
        lo = max(1, effective_size(Fw, Dw) - 2 * Pw)
        W = int(rng.integers(lo, lo + 12))
    else:
        Fw, Dw, Sw, Pw, W = axis()
    fit = str(rng.choice(["floor", "ceil", "strict"]))
    cfg = {"N": int(rng.integers(1, 4)), "C": int(rng.integers(1, 6)), "K": int(rng.integers(1, 7)),
           "H": H, "W": W, "F": (Fh, Fw), "stride": (Sh, Sw), "pad": (Ph, Pw), "dilation": (Dh, Dw),
           "fit": fit, "bias": bool(rng.random() < 0.8)}
    if fit == "strict":
        try:
            geometry((1, 1, H, W), (Fh, Fw), (Sh, Sw), (Ph, Pw), (Dh, Dw), "strict")
        except ShapeError:
            cfg["fit"] = "floor"
    return cfg


def _torch_conv(torch, x, w, b, cfg, g):
    """PyTorch reference: conv2d with its own padding, or with explicit bottom/right zeros for ceil."""
    F = torch.nn.functional
    if cfg["fit"] == "ceil":
        x = F.pad(x, (g.pl, g.pr, g.pt, g.pb))
        return F.conv2d(x, w, b, stride=cfg["stride"], padding=0, dilation=cfg["dilation"])
    return F.conv2d(x, w, b, stride=cfg["stride"], padding=cfg["pad"], dilation=cfg["dilation"])


TORCH_SEEDS = range(60)


@pytest.mark.parametrize("seed", TORCH_SEEDS)
def test_conv_matches_pytorch(seed: int) -> None:
    torch = torch_or_skip()
    rng = np.random.default_rng(1000 + seed)
    cfg = _random_config(rng)
    N, C, K, (Fh, Fw) = cfg["N"], cfg["C"], cfg["K"], cfg["F"]
    x = rng.standard_normal((N, C, cfg["H"], cfg["W"])).astype(np.float32)
    w = rng.standard_normal((K, C, Fh, Fw)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if cfg["bias"] else None
    opts = {k: cfg[k] for k in ("stride", "pad", "dilation", "fit")}
    inputs = {"x": x, "w": w} if b is None else {"x": x, "w": w, "b": b}
    err = check_vs_torch(lambda: conv_forward(x, w, b, **opts),
                         lambda d, cache: dict(zip("xwb", conv_backward(d, cache))),
                         lambda t, cache: _torch_conv(torch, t["x"], t["w"], t.get("b"), cfg, cache.geom),
                         inputs, rng)
    assert err < 1e-4, (err, cfg)


def test_random_configs_cover_every_option() -> None:
    cfgs = [_random_config(np.random.default_rng(1000 + s)) for s in TORCH_SEEDS]
    assert {c["fit"] for c in cfgs} == {"floor", "ceil", "strict"}
    assert any(c["stride"] != (1, 1) for c in cfgs) and any(c["dilation"] != (1, 1) for c in cfgs)
    assert any(c["pad"] != (0, 0) for c in cfgs) and any(c["F"][0] != c["F"][1] for c in cfgs)
    assert any(not c["bias"] for c in cfgs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(dtype) -> None:
    x, w, b, opts = _make("stride2_pad1", dtype=dtype)
    out, cache = conv_forward(x, w, b, **opts)
    dx, dw, db = conv_backward(np.ones_like(out), cache)
    assert out.dtype == dx.dtype == dw.dtype == db.dtype == dtype


def test_mixed_dtypes_never_upcast() -> None:
    """float32 input with float64 weights computes in float32; dw/db come back in the weights' dtype."""
    x, w, b, opts = _make("basic", dtype=np.float32)
    out, cache = conv_forward(x, w.astype(np.float64), b.astype(np.float64), **opts)
    assert out.dtype == np.float32
    dx, dw, db = conv_backward(np.ones(out.shape, dtype=np.float64), cache)
    assert dx.dtype == np.float32 and dw.dtype == np.float64 and db.dtype == np.float64


def test_chained_and_interleaved_calls() -> None:
    """Outputs are channel-major views and the column workspace is shared: chains and interleaving work."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 9, 9))
    w1, w2 = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((5, 4, 1, 1))
    h, c1 = conv_forward(x, w1, None, pad=1)
    y, c2 = conv_forward(h, w2, None)  # 1x1 on a channel-major input: X_col is a view of h
    big, c3 = conv_forward(rng.standard_normal((3, 3, 20, 20)), w1, None)  # grows the workspace
    np.testing.assert_allclose(y, conv_naive(conv_naive(x, w1, None, pad=1), w2, None), atol=1e-12)
    dy = rng.standard_normal(y.shape)
    h_before = h.copy()
    dh, dw2, _ = conv_backward(dy, c2)
    np.testing.assert_array_equal(h, h_before)  # the 1x1 backward must not overwrite its input
    dx, dw1, _ = conv_backward(dh, c1)
    conv_backward(np.ones(big.shape), c3)

    def loss():
        return float(np.sum(conv_forward(conv_forward(x, w1, None, pad=1)[0], w2, None)[0] * dy))

    from tests.helpers import num_grad
    assert max_rel(dw1, num_grad(loss, w1)) < 1e-7
    assert max_rel(dx, num_grad(loss, x)) < 1e-7


def test_depth_mismatch_raises() -> None:
    x = np.zeros((2, 3, 8, 8), dtype=np.float32)
    w = np.zeros((8, 4, 3, 3), dtype=np.float32)
    msg = r"conv: input depth D=3 but filters have depth 4 \(w shape \(8, 4, 3, 3\)\)"
    with pytest.raises(ShapeError, match=msg):
        conv_forward(x, w, None, pad=1)


@pytest.mark.parametrize(
    "xs,ws", [((3, 8, 8), (2, 3, 3, 3)), ((1, 3, 8, 8), (3, 3, 3)), ((1, 3, 8, 8, 1), (2, 3, 3, 3))]
)
def test_wrong_ndim_raises(xs, ws) -> None:
    with pytest.raises(ShapeError, match="4-D"):
        conv_forward(np.zeros(xs), np.zeros(ws), None)


def test_bias_and_dout_shapes_checked() -> None:
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))
    with pytest.raises(ShapeError, match="bias"):
        conv_forward(x, w, np.zeros(4))
    out, cache = conv_forward(x, w, np.zeros(3))
    with pytest.raises(ShapeError, match="dout"):
        conv_backward(np.zeros((1, 3, 4, 4)), cache)


def test_non_fitting_size_raises_with_formula() -> None:
    x, w = np.zeros((1, 3, 10, 10)), np.zeros((2, 3, 3, 3))
    with pytest.raises(ShapeError) as e:
        conv_forward(x, w, None, stride=2)
    msg = str(e.value)
    for part in ("W=10", "F=3", "S=2", "P=0", "4.5", "fit="):
        assert part in msg, msg
    assert "\n" not in msg
    with pytest.raises(ShapeError, match="filter larger than padded input"):
        conv_forward(np.zeros((1, 3, 2, 2)), w, None)


@pytest.mark.parametrize("seed", range(8))
def test_stride1_dx_path_equals_col2im_path(seed):
    """conv_backward computes stride-1 dx as a conv with flipped filters; it must equal col2im(W^T dout)."""

    rng = np.random.default_rng(100 + seed)
    Fh, Fw = int(rng.integers(2, 5)), int(rng.integers(1, 4))
    D = int(rng.integers(1, 3))
    P = (int(rng.integers(0, D * (Fh - 1) + 1)), int(rng.integers(0, D * (Fw - 1) + 1)))
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((3, 3, Fh, Fw))
    out, cache = conv_forward(x, w, None, pad=P, dilation=D)
    dout = rng.standard_normal(out.shape)
    assert C._dx_is_a_conv(cache.geom, 3)
    dx, _, _ = conv_backward(dout, cache)
    g = cache.geom
    dcols = w.reshape(3, -1).T @ dout.transpose(1, 0, 2, 3).reshape(3, -1)
    c6 = dcols.reshape(g.C, g.Fh, g.Fw, g.N, g.Ho, g.Wo).transpose(0, 1, 2, 4, 5, 3)
    ref = C.col2im_batch_last(c6, g).transpose(3, 0, 1, 2)
    np.testing.assert_allclose(dx, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride,pad,dilation,F", [(1, 1, 1, 3), (2, 1, 1, 3), (3, 2, 2, 3), (1, 0, 1, 1),
                                                   (2, 0, 1, 1), (1, 3, 1, 7)])
def test_blocks_of_output_rows_give_the_same_result(monkeypatch, stride, pad, dilation, F) -> None:
    """X_col built one output row at a time (block borders in forward, dw and col2im) equals one block."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 4, 11, 9))
    w = rng.standard_normal((5, 4, F, F))
    b = rng.standard_normal(5)
    opts = dict(stride=stride, pad=pad, dilation=dilation, fit="floor")
    out_ref, cache_ref = conv_forward(x, w, b, algo="im2col", **opts)
    dout = rng.standard_normal(out_ref.shape)
    ref = conv_backward(dout, cache_ref)
    monkeypatch.setattr(C, "IM2COL_BLOCK_BYTES", 1)
    out, cache = conv_forward(x, w, b, algo="im2col", **opts)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, conv_naive(x, w, b, **opts), rtol=1e-10, atol=1e-10)
    for got, want in zip(conv_backward(dout, cache), ref):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride,pad,dilation,F", [(1, 1, 1, 3), (2, 1, 1, 3), (3, 2, 2, 3), (4, 0, 1, 5),
                                                   (1, 3, 1, 7)])
def test_compiled_im2col_and_col2im_equal_the_numpy_slices(monkeypatch, stride, pad, dilation, F) -> None:
    """The compiled im2col/col2im (block borders included) write the NumPy slices' numbers."""
    from volnet import kernels

    if not kernels.available():
        pytest.skip("numba is not installed: only the NumPy path exists")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 2, 13, 11))
    w = rng.standard_normal((4, 2, F, F))
    opts = dict(stride=stride, pad=pad, dilation=dilation, fit="floor", algo="im2col")
    monkeypatch.setattr(C, "IM2COL_BLOCK_BYTES", 1)  # one output row per block
    res = {}
    for kind in ("numpy", "numba"):
        with kernels.selected(kind):
            out, cache = conv_forward(x, w, None, **opts)
            res[kind] = (out, *conv_backward(np.ones_like(out) * out, cache)[:2])
    for got, want in zip(res["numba"], res["numpy"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res["numba"][0], conv_naive(x, w, None, **{k: v for k, v in opts.items()
                                                                          if k != "algo"}), rtol=1e-10)
