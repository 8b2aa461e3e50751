"""Pooling: gradient checks, fast vs naive loops, PyTorch agreement, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import check_vs_torch, grad_check, torch_or_skip
from volnet.errors import ShapeError, VolnetError
from volnet.ops.pool import (
    global_avg_pool_backward,
    global_avg_pool_forward,
    pool_backward,
    pool_backward_naive,
    pool_forward,
    pool_naive,
)


def in_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """The same values in C order, batch-last memory (what most CONVs return) or channel-major memory
    (what F(2x2) Winograd returns): each has its own compiled max-pool backward."""
    if layout == "batch-last":
        return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    if layout == "channel-major":
        return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    return x


LAYOUTS = ["C", "batch-last", "channel-major"]


@pytest.fixture(autouse=True, params=["numba", "numpy"])
def kernel_path(request):
    """Every test of this module runs on both kernel paths (numba must import: no skip)."""
    from volnet import kernels

    with kernels.selected(request.param):
        yield request.param


def distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float64 values with distinct magnitudes >= 0.5 spaced by 0.01, random signs.

    No ties within the finite-difference step for max pool, and no values near 0 (where sqrt in L2
    pooling is badly conditioned for central differences).
    """
    n = int(np.prod(shape))
    mag = rng.permutation(n).astype(np.float64) * 0.01 + 0.5
    return (mag * rng.choice([-1.0, 1.0], size=n)).reshape(shape)


# (mode, size, stride, pad, fit, count_include_pad, H, W)
GRAD_CASES = [
    ("max", 2, None, 0, "strict", True, 4, 6),
    ("max", 3, 2, 0, "strict", True, 7, 7),  # overlapping F3 S2
    ("max", 3, 2, 1, "strict", True, 7, 5),  # ResNet's padded 3x3/2
    ("max", 3, 3, 0, "floor", True, 7, 8),
    ("max", 3, 3, 1, "ceil", True, 7, 8),
    ("max", (2, 3), (1, 2), (1, 0), "floor", True, 5, 7),  # non-square window and stride
    ("avg", 2, None, 0, "strict", True, 4, 6),
    ("avg", 3, 2, 0, "strict", True, 7, 7),
    ("avg", 3, 2, 1, "strict", True, 7, 5),
    ("avg", 3, 2, 1, "strict", False, 7, 5),
    ("avg", 3, 3, 0, "floor", True, 7, 8),
    ("avg", 3, 2, 1, "ceil", True, 6, 8),
    ("avg", 3, 2, 1, "ceil", False, 6, 8),
    ("avg", (3, 2), (2, 1), (1, 1), "ceil", True, 6, 5),
    ("l2", 2, None, 0, "strict", True, 4, 6),
    ("l2", 3, 2, 0, "strict", True, 7, 7),
    ("l2", 3, 2, 1, "ceil", True, 6, 8),
    ("l2", (1, 3), (1, 2), 0, "floor", True, 3, 8),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode,size,stride,pad,fit,cip,H,W", GRAD_CASES)
def test_pool_gradient(mode, size, stride, pad, fit, cip, H, W, layout):
    rng = np.random.default_rng(1)
    x = in_layout(distinct(rng, (2, 2, H, W)), layout)
    out, cache = pool_forward(x, size, stride, mode, pad, fit, cip)
    assert out.dtype == np.float64
    dout = rng.standard_normal(out.shape)
    dx = pool_backward(dout, cache)
    assert dx.shape == x.shape and dx.dtype == np.float64
    # L2 gradients x/out sum over overlapping windows with cancelling signs; the central differences'
    # round-off (~1e-9 absolute) then reaches ~1e-6 relative on the smallest entries (the analytic
    # gradient agrees with torch's float64 autograd to 1e-13).
    tol = 1e-5 if mode == "l2" else 1e-6
    args = (size, stride, mode, pad, fit, cip)
    grad_check(lambda: pool_forward(x, *args)[0], dout, {"x": x}, {"x": dx}, tol=tol)


def test_global_avg_pool_gradient_and_values():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5))
    out, cache = global_avg_pool_forward(x)
    assert out.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(out[:, :, 0, 0], x.mean(axis=(2, 3)))
    dout = rng.standard_normal(out.shape)
    dx = global_avg_pool_backward(dout, cache)
    grad_check(lambda: global_avg_pool_forward(x)[0], dout, {"x": x}, {"x": dx})


def random_config(rng: np.random.Generator, mode: str) -> dict:
    Fh, Fw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    if rng.random() < 0.5:
        Fw = Fh
    Sh, Sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    if rng.random() < 0.3:
        Sh, Sw = Fh, Fw
    pad = (int(rng.integers(0, Fh // 2 + 1)), int(rng.integers(0, Fw // 2 + 1)))
    return dict(
        size=(Fh, Fw), stride=(Sh, Sw), pad=pad, mode=mode,
        fit=["floor", "ceil"][int(rng.integers(2))], count_include_pad=bool(rng.integers(2)),
        H=int(rng.integers(max(Fh, 2), 12)), W=int(rng.integers(max(Fw, 2), 12)),
        N=int(rng.integers(1, 4)), C=int(rng.integers(1, 5)),
    )


def torch_pool(torch, xt, c: dict):
    F = torch.nn.functional
    ceil = c["fit"] == "ceil"
    if c["mode"] == "max":
        return F.max_pool2d(xt, c["size"], c["stride"], c["pad"], ceil_mode=ceil)
    if c["mode"] == "avg":
        return F.avg_pool2d(xt, c["size"], c["stride"], c["pad"], ceil_mode=ceil,
                            count_include_pad=c["count_include_pad"])
    if c["pad"] == (0, 0) and not ceil:
        return F.lp_pool2d(xt, 2, c["size"], c["stride"])
    # lp_pool2d has no padding and rescales ceil windows: the plain sum of squares via divisor_override.
    k = c["size"][0] * c["size"][1]
    sq = F.avg_pool2d(xt * xt, c["size"], c["stride"], c["pad"], ceil_mode=ceil, divisor_override=k)
    return (sq * k).sqrt()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", ["max", "avg", "l2"])
def test_pool_matches_torch(mode, layout):
    """Forward and autograd gradients against PyTorch on 60 random float32 configurations per mode."""
    torch = torch_or_skip()
    rng = np.random.default_rng({"max": 10, "avg": 11, "l2": 12}[mode])
    worst, worst_cfg = 0.0, None
    n_lp = 0
    for _ in range(60):
        c = random_config(rng, mode)
        if mode == "l2" and rng.random() < 0.5:  # half the l2 cases hit lp_pool2d itself
            c["pad"], c["fit"] = (0, 0), "floor"
        n_lp += mode == "l2" and c["pad"] == (0, 0) and c["fit"] == "floor"
        x = in_layout(rng.standard_normal((c["N"], c["C"], c["H"], c["W"])).astype(np.float32), layout)
        args = (c["size"], c["stride"], mode, c["pad"], c["fit"], c["count_include_pad"])
        err = check_vs_torch(lambda: pool_forward(x, *args), lambda d, cache: {"x": pool_backward(d, cache)},
                             lambda t, _, c=c: torch_pool(torch, t["x"], c), {"x": x}, rng)
        if err > worst:
            worst, worst_cfg = err, c
    print(f"pool {mode}: largest relative error vs torch {worst:.2e} at {worst_cfg}")
    assert worst < 1e-4, f"pool {mode}: relative error {worst:.2e} vs torch for {worst_cfg}"
    assert mode != "l2" or n_lp >= 10


@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_pool_ties_go_to_first_max_like_torch(layout):
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    for size, stride, pad in [(2, 2, 0), (3, 2, 1), (3, 1, 0), ((2, 3), (1, 2), (1, 1))]:
        x = in_layout(rng.integers(0, 3, size=(2, 3, 7, 8)).astype(np.float32), layout)  # many ties
        out, cache = pool_forward(x, size, stride, "max", pad, "floor")
        dout = rng.standard_normal(out.shape).astype(np.float32)
        dx = pool_backward(dout, cache)
        xt = torch.tensor(x, requires_grad=True)
        torch.nn.functional.max_pool2d(xt, size, stride, pad).backward(torch.tensor(dout))
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-6)
        naive = pool_backward_naive(dout, x, size, stride, "max", pad, "floor")
        np.testing.assert_allclose(dx, naive, atol=1e-6)


def test_fast_matches_naive():
    rng = np.random.default_rng(4)
    for t in range(45):
        mode = ("max", "avg", "l2")[t % 3]
        c = random_config(rng, mode)
        c["N"], c["C"] = 2, 2
        x = distinct(rng, (c["N"], c["C"], c["H"], c["W"]))
        args = (c["size"], c["stride"], mode, c["pad"], c["fit"], c["count_include_pad"])
        out, cache = pool_forward(x, *args)
        np.testing.assert_allclose(out, pool_naive(x, *args), rtol=1e-12, atol=1e-12, err_msg=str(c))
        dout = rng.standard_normal(out.shape)
        naive = pool_backward_naive(dout, x, *args)
        np.testing.assert_allclose(pool_backward(dout, cache), naive, rtol=1e-12, atol=1e-12, err_msg=str(c))


def test_notes_example_2x2_max_pool():
    """The notes' picture: 4x4 depth slice, 2x2 filters, stride 2 -> 2x2, max of each quadrant."""
    x = np.array([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], dtype=np.float32)[None, None]
    out, _ = pool_forward(x, 2, 2)
    np.testing.assert_array_equal(out[0, 0], [[6, 8], [3, 4]])
    assert out.dtype == np.float32


@pytest.mark.parametrize("mode", ["max", "avg", "l2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_kept(mode, dtype):
    x = np.random.default_rng(5).standard_normal((2, 3, 7, 7)).astype(dtype)
    out, cache = pool_forward(x, 3, 2, mode, 1 if mode != "l2" else 0, "ceil")
    assert out.dtype == dtype and pool_backward(np.ones_like(out), cache).dtype == dtype
    out, cache = global_avg_pool_forward(x)
    assert out.dtype == dtype and global_avg_pool_backward(np.ones_like(out), cache).dtype == dtype


def test_strict_fit_errors_and_floor_ceil_sizes():
    x = np.zeros((1, 2, 7, 7), dtype=np.float32)
    with pytest.raises(ShapeError, match=r"2\.333"):
        pool_forward(x, 3, 3)
    assert pool_forward(x, 3, 3, fit="floor")[0].shape == (1, 2, 2, 2)
    assert pool_forward(x, 3, 3, fit="ceil")[0].shape == (1, 2, 3, 3)
    assert pool_forward(x, 3, 2)[0].shape == (1, 2, 3, 3)  # overlapping pool fits 7x7 exactly
    resnet = np.zeros((1, 1, 112, 112), np.float32)
    assert pool_forward(resnet, 3, 2, pad=1, fit="floor")[0].shape == (1, 1, 56, 56)


def test_bad_inputs_raise():
    with pytest.raises(ShapeError, match="4-D"):
        pool_forward(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ShapeError, match="4-D"):
        global_avg_pool_forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ShapeError, match="padding"):
        pool_forward(np.zeros((1, 1, 8, 8), np.float32), 2, 2, pad=2)
    with pytest.raises(ShapeError, match="filter larger"):
        pool_forward(np.zeros((1, 1, 2, 2), np.float32), 3, 1)
    with pytest.raises(VolnetError, match="mode"):
        pool_forward(np.zeros((1, 1, 4, 4), np.float32), mode="min")
    out, cache = pool_forward(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ShapeError, match="dout"):
        pool_backward(np.zeros((1, 1, 3, 3), np.float32), cache)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_pool_propagates_nan_like_torch(layout):
    torch = torch_or_skip()
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    x[0, 1, 2, 3] = np.nan
    x = in_layout(x, layout)
    out, _ = pool_forward(x, 2, 2, "max")
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(np.ascontiguousarray(x)), 2, 2).numpy()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(np.nan_to_num(out), np.nan_to_num(ref))


@pytest.mark.parametrize("layout,order", [("batch-last", (1, 2, 3, 0)), ("channel-major", (1, 0, 2, 3)),
                                          ("C", (0, 1, 2, 3))])
def test_output_keeps_the_layout_and_max_keeps_no_copy(layout, order):
    """Pools keep their input's memory layout; max pool's cache holds x itself, not a copy (memory)."""
    from volnet.ops.layout import memory_order

    x = in_layout(np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32), layout)
    for mode in ("max", "avg", "l2"):
        out, cache = pool_forward(x, 2, 2, mode)
        assert memory_order(out) == order
        assert memory_order(pool_backward(np.ones_like(out), cache)) == order
        if mode == "max":
            assert np.shares_memory(cache[2], x)
