"""Winograd F(2x2, 3x3) and F(4x4, 3x3): transforms, forward and gradients vs im2col, naive loops and
PyTorch, on both kernel paths (numba and NumPy); dispatch."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import check_vs_torch, grad_check, max_rel, torch_or_skip
from volnet import kernels
from volnet.ops.conv import _choose_algo, conv_backward, conv_forward, conv_naive, geometry
from volnet.ops.winograd import (
    AT,
    AT4,
    BT,
    BT4,
    G4,
    G,
    filter_transform,
    filter_transform4,
    winograd_supported,
)

#: (algo, kernel path): F(2x2, 3x3) is NumPy only; F(4x4, 3x3) has compiled and NumPy transforms
PATHS = [("winograd", "numpy"), ("winograd4", "numba"), ("winograd4", "numpy")]


@pytest.fixture(params=PATHS, ids=[f"{a}-{k}" for a, k in PATHS])
def algo(request):
    """The algorithm name, with its kernel path selected for the test (numba must import: no skip)."""
    name, path = request.param
    with kernels.selected(path):
        yield name

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
def test_float64_matches_im2col_and_naive_tightly(xs, K, pad, bias, algo):
    rng, x, w, b = _data(xs, K, np.float64, bias=bias)
    o_ref, c_ref = conv_forward(x, w, b, pad=pad, algo="im2col")
    o, c = conv_forward(x, w, b, pad=pad, algo=algo)
    assert c.algo == algo and o.dtype == np.float64 and o.shape == o_ref.shape
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
def test_float64_numerical_gradients(xs, K, pad, algo):
    rng, x, w, b = _data(xs, K, np.float64, seed=1)
    out, cache = conv_forward(x, w, b, pad=pad, algo=algo)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv_backward(dout, cache)
    grad_check(lambda: conv_forward(x, w, b, pad=pad, algo=algo)[0], dout,
               {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db})


@pytest.mark.parametrize("seed", range(6))
def test_float32_matches_pytorch(seed, algo):
    torch = torch_or_skip()
    rng = np.random.default_rng(100 + seed)
    N, C, K = int(rng.integers(1, 12)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
    H, W = int(rng.integers(3, 19)), int(rng.integers(3, 19))
    pad = int(rng.integers(0, 3))
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = rng.standard_normal((K, C, 3, 3), dtype=np.float32)
    b = rng.standard_normal(K, dtype=np.float32)
    err = check_vs_torch(lambda: conv_forward(x, w, b, pad=pad, algo=algo),
                         lambda d, cache: dict(zip("xwb", conv_backward(d, cache))),
                         lambda t, _: torch.nn.functional.conv2d(t["x"], t["w"], t["b"], padding=pad),
                         {"x": x, "w": w, "b": b}, rng)
    assert err < 1e-4


def test_float32_close_to_im2col_on_a_benchmark_shape(algo):
    """Documented float32 error (BENCHMARKS.md): F(2x2) ~1e-6, F(4x4) ~1e-5 of the largest value."""
    rng, x, w, b = _data((8, 64, 16, 16), 64, np.float32)
    w *= np.float32(0.1)
    o_ref, c_ref = conv_forward(x, w, b, pad=1, algo="im2col")
    o, c = conv_forward(x, w, b, pad=1, algo=algo)
    tol = 1e-5 if algo == "winograd" else 3e-5
    assert max_rel(o, o_ref) < tol
    d = rng.standard_normal(o.shape, dtype=np.float32)
    for got, want in zip(conv_backward(d, c), conv_backward(d, c_ref)):
        assert got.dtype == np.float32 and max_rel(got, want) < tol


@pytest.mark.parametrize("order", [(1, 0, 2, 3), (1, 2, 3, 0), (0, 1, 2, 3)])
def test_any_memory_layout_and_need_dx(algo, order):
    """Input in channel-major, batch-last (what a previous conv returns) or C order; need_dx=False."""
    rng, x, w, b = _data((2, 5, 6, 6), 4, np.float64)
    xcm = np.ascontiguousarray(x.transpose(order)).transpose(np.argsort(order))
    o, c = conv_forward(xcm, w, b, pad=1, algo=algo)
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
    """F(4x4) for 3x3/1 layers with C, K >= 16 on batches (numba kernels); F(2x2) for large layers of a
    single image (memory); im2col for first layers, strides, other filter sizes and the NumPy path."""
    with kernels.selected("numba"):
        assert _choose_algo(geometry((64, 64, 16, 16), 3, 1, 1), 64) == "winograd4"
        assert _choose_algo(geometry((64, 32, 32, 32), 3, 1, 1), 32) == "winograd4"
        assert _choose_algo(geometry((64, 32, 28, 28), 3, 1, 1), 32) == "winograd4"
        assert _choose_algo(geometry((1, 64, 224, 224), 3, 1, 1), 64) == "winograd"  # one image
        assert _choose_algo(geometry((64, 3, 32, 32), 3, 1, 1), 32) == "im2col"  # first layer
        assert _choose_algo(geometry((64, 64, 33, 33), 3, 2, 1), 64) == "im2col"
    with kernels.selected("numpy"):
        assert _choose_algo(geometry((1, 64, 224, 224), 3, 1, 1), 64) == "winograd"
        assert _choose_algo(geometry((1, 256, 56, 56), 3, 1, 1), 256) == "winograd"
        assert _choose_algo(geometry((64, 64, 16, 16), 3, 1, 1), 64) == "im2col"
        assert _choose_algo(geometry((64, 128, 8, 8), 3, 1, 1), 128) == "im2col"
        assert _choose_algo(geometry((64, 32, 32, 32), 3, 1, 1), 32) == "im2col"
        assert _choose_algo(geometry((1, 3, 224, 224), 3, 1, 1), 64) == "im2col"
        assert _choose_algo(geometry((1, 64, 225, 225), 3, 2, 1), 64) == "im2col"


def test_automatic_choice_dispatches_backward(monkeypatch):
    import volnet.ops.conv as conv

    monkeypatch.setattr(conv, "WINOGRAD_MIN_GEMM", 0)
    monkeypatch.setattr(conv, "WINOGRAD4_MIN_CHANNELS", None)
    x = np.ones((2, 64, 4, 4), np.float32)
    out, cache = conv_forward(x, np.ones((64, 64, 3, 3), np.float32), pad=1)
    assert cache.algo == "winograd"
    dx, dw, _ = conv_backward(np.ones_like(out), cache)
    assert dx.shape == x.shape and dw.shape == (64, 64, 3, 3)
    monkeypatch.setattr(conv, "WINOGRAD_MIN_CHANNELS", None)
    assert conv_forward(x, np.ones((64, 64, 3, 3), np.float32), pad=1)[1].algo == "im2col"


def test_f4_one_tile_matches_the_formula():
    """Y = A4^T [(G4 g G4^T) * (B4^T d B4)] A4 is the valid 3x3 correlation of one 6x6 tile."""
    rng = np.random.default_rng(0)
    d = rng.standard_normal((6, 6))
    g = rng.standard_normal((3, 3))
    Y = AT4 @ ((G4 @ g @ G4.T) * (BT4 @ d @ BT4.T)) @ AT4.T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(Y, direct, rtol=1e-12, atol=1e-12)
    U = filter_transform4(g[None, None])
    np.testing.assert_allclose(U[:, 0, 0].reshape(6, 6), G4 @ g @ G4.T, rtol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_f4_compiled_kernels_equal_numpy_twins(seed):
    """Each numba kernel of F(4x4) gives the NumPy twin's result (float32, blocks of tile rows, odd sizes)."""
    import volnet.ops.winograd as W

    rng = np.random.default_rng(seed)
    N, C = int(rng.integers(1, 20)), int(rng.integers(1, 9))
    H, Wd = int(rng.integers(1, 19)), int(rng.integers(1, 15))
    pt, pl = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    g = geometry((N, C, H, Wd), 3, 1, (pt, pl))
    th, tw = W._tiles4(g)
    xT = rng.standard_normal((C, H, Wd, N), dtype=np.float32)
    i0 = int(rng.integers(0, th))
    ni = int(rng.integers(1, th - i0 + 1))
    M = rng.standard_normal((36, 3, ni * tw * N), dtype=np.float32)
    dx0 = rng.standard_normal((C, H, Wd, N), dtype=np.float32)  # the adjoint adds to rows shared with i0-1
    outs = {}
    for path in ("numba", "numpy"):
        with kernels.selected(path):
            V = W._input4(xT, pt, pl, tw, i0, ni).copy()
            out = np.zeros((3, g.Ho, g.Wo, N), np.float32)
            W._output4(M, np.arange(3, dtype=np.float32), out, tw, i0, ni)
            dM = W._output4_adjoint(out, tw, i0, ni).copy()
            dx = dx0.copy()
            W._input4_adjoint(V, dx, pt, pl, tw, i0, ni)
            outs[path] = (V, out, dM, dx)
    for got, want in zip(outs["numba"], outs["numpy"]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("block", [1, 2**30])
def test_f4_blocks_of_tile_rows_give_the_same_result(monkeypatch, block):
    """Blocks of one tile row (overlap-add across block borders in dx) equal one block for everything."""
    import volnet.ops.winograd as W

    monkeypatch.setattr(W, "BLOCK_BYTES4", block)
    rng, x, w, b = _data((3, 4, 13, 10), 5, np.float64)
    o, c = conv_forward(x, w, b, pad=1, algo="winograd4")
    assert max_rel(o, conv_naive(x, w, b, pad=1)) < 1e-13
    d = rng.standard_normal(o.shape)
    ref = conv_backward(d, conv_forward(x, w, b, pad=1, algo="im2col")[1])
    for got, want in zip(conv_backward(d, c), ref):
        assert max_rel(got, want) < 1e-13


def test_numpy_path_is_forced_by_the_environment():
    """VOLNET_KERNELS=numpy selects the NumPy path in a fresh process (and numba is the default)."""
    import os
    import subprocess
    import sys

    code = "from volnet import kernels; print(kernels.KERNELS)"
    env = dict(os.environ, VOLNET_KERNELS="numpy")
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "numpy"
    env.pop("VOLNET_KERNELS")
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "numba"


def test_filter_transforms_in_column_blocks_equal_one_block(monkeypatch) -> None:
    """The kron(G, G) GEMMs of the filter transforms and of dw run over blocks of K*C columns (bounded
    float64 temporaries); blocks of 5 columns give the numbers of one block (to float32's last bit: BLAS
    may order a 9-term sum differently for another width)."""
    from volnet.ops import winograd as Wm

    rng = np.random.default_rng(4)
    w = rng.standard_normal((7, 3, 3, 3)).astype(np.float32)
    dU = rng.standard_normal((36, 7 * 3))
    kron_t = np.kron(Wm.G4, Wm.G4).T

    def all_three():
        return Wm.filter_transform4(w), Wm.filter_transform(w), Wm._kron_gemm(kron_t, dU, np.float64)

    whole = all_three()
    monkeypatch.setattr(Wm, "KRON_COLUMNS", 5)
    blocks = all_three()
    for a, b in zip(whole, blocks):
        np.testing.assert_allclose(a, b, rtol=2e-7, atol=1e-7)
    U = np.einsum("ai,bj,kcij->abkc", Wm.G4, Wm.G4, w.astype(np.float64)).reshape(36, 7, 3)
    np.testing.assert_allclose(blocks[0], U, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("xs,K,pad", SHAPES)
def test_f2_blocks_of_tile_rows_give_the_same_result(monkeypatch, xs, K, pad):
    """F(2x2) in blocks of one tile row (padding rows cut at block borders, dx's two shared rows added
    across them, odd sizes padded per block) equals im2col, forward and backward."""
    import volnet.ops.winograd as W

    monkeypatch.setattr(W, "BLOCK_BYTES", 1)
    monkeypatch.setattr(W, "BLOCK_MIN_TILES", 1)
    rng, x, w, b = _data(xs, K, np.float64)
    o, c = conv_forward(x, w, b, pad=pad, algo="winograd")
    o_ref, c_ref = conv_forward(x, w, b, pad=pad, algo="im2col")
    assert max_rel(o, o_ref) < 1e-13
    d = rng.standard_normal(o.shape)
    for got, want in zip(conv_backward(d, c), conv_backward(d, c_ref)):
        assert max_rel(got, want) < 1e-13
