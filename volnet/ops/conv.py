"""Convolutional layer as in the notes: im2col + one matrix multiply (BLAS).

The notes' summary of the CONV layer, in the letters used throughout this module:

- accepts a volume W1 x H1 x D1 (here an array ``x`` of shape (N, C, H, W), C = D1);
- K filters of spatial extent F (Fh x Fw), stride S, zero padding P (and dilation, see below);
- produces W2 x H2 x D2 with ``W2 = (W1 - F + 2P)/S + 1``, ``H2 = (H1 - F + 2P)/S + 1``, ``D2 = K``
  (array of shape (N, K, Ho, Wo)), see :func:`volnet.ops.sizes.output_size`;
- with parameter sharing: F*F*D1 weights per filter, ``K*F*F*D1`` weights and ``K`` biases in total.

Implementation as matrix multiplication (notes, "Implementation as Matrix Multiplication"):

1. :func:`im2col` stretches every receptive field into a column. For one 227x227x3 image and 11x11x3
   filters at stride 4 the column matrix ``X_col`` is 363 x 3025 (363 = 11*11*3 rows, 3025 = 55*55
   columns). Rows are ordered (C, Fh, Fw), exactly like ``w.reshape(K, -1)``, so 96 filters become the
   96 x 363 matrix ``W_row``.
2. ``np.dot(W_row, X_col)`` is 96 x 3025, reshaped to 55x55x96 (here (N, 96, 55, 55)).

For a batch, the conv orders the columns of ``X_col`` (Ho, Wo, N): the matrix is (C*Fh*Fw, Ho*Wo*N) and
the whole batch is ONE GEMM. This "batch-last" order (the buffer is laid out as (C, Fh, Fw, Ho, Wo, N))
makes each of the Fh*Fw kernel offsets one strided slice copy of the padded (C, Hp, Wp, N) input with N
contiguous images innermost, and the GEMM result (K, Ho*Wo*N) already is the output in (K, Ho, Wo, N)
memory order. :func:`conv_forward` returns that memory as an (N, K, Ho, Wo) array *view* (not
C-contiguous; every NumPy operation handles it, see :mod:`volnet.ops.layout`). A following conv then
finds its input batch-last already and skips the transpose copy, and Winograd's tile transforms
vectorise over the batch; likewise :func:`conv_backward` returns dx as a batch-last view. Code must not
assume C-contiguous activations (use ``reshape``, not ``.view``/``.data``). The public :func:`im2col`
reorders its columns to (N, Ho, Wo) for readers.

The notes' remark that "the backward pass for a convolution is also a convolution" is checked in the
tests: for stride 1, dx is the convolution of dout with the spatially flipped, channel-transposed
filters, padded by F - 1 - P.

Memory: X_col is C*Fh*Fw times the input's size (the notes: "it can use a lot of memory"). It is built in
a per-thread workspace that is reused across calls (fresh large arrays cost page faults: measured as
half the time of an im2col copy), and the cache keeps x rather than X_col: :func:`conv_backward` rebuilds
X_col (one extra copy) and then reuses the same workspace for dX_col. :func:`clear_workspace` frees it.

Dilation follows PyTorch: ``dilation=1`` is an ordinary filter (the notes' "dilation 0"),
``dilation=2`` leaves one gap between filter cells (the notes' "dilation 1"); a dilated filter covers
``F_eff = dilation*(F - 1) + 1`` input pixels, and F_eff replaces F in the size formula.

``fit`` chooses what happens when (W - F + 2P)/S + 1 is not an integer: ``"strict"`` raises
:class:`volnet.ShapeError`, ``"floor"`` crops (PyTorch's default), ``"ceil"`` pads the rest with zeros on
the bottom/right (see :mod:`volnet.ops.sizes`).

Adding an algorithm (e.g. Winograd for 3x3 stride 1): write ``_conv_<name>(x, w, b, g) -> (out, extra)``
and ``_conv_<name>_backward(dout, cache) -> (dx, dw, db)``, add both to ``_ALGOS`` and pick it in
:func:`_choose_algo`. ``cache.algo`` routes the backward pass.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from volnet import kernels
from volnet.errors import ShapeError
from volnet.ops.layout import batch_last
from volnet.ops.sizes import effective_size, padding_for, pair
from volnet.ops.winograd import (
    winograd4_backward,
    winograd4_forward,
    winograd_backward,
    winograd_forward,
    winograd_memory,
    winograd_supported,
)

IntOrPair = int | tuple[int, int]

__all__ = [
    "ConvCache", "Geometry", "clear_workspace", "col2im", "col2im_add", "col2im_batch_last", "conv_backward",
    "conv_forward", "conv_memory", "conv_naive", "geometry", "im2col", "im2col_into", "pad_batch_last",
]


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """Sizes of one conv/local/pool application: input (N, C, H, W), filter Fh x Fw, output Ho x Wo.

    ``pt, pb, pl, pr``: zero padding top/bottom/left/right actually applied (bottom/right exceed P only
    with ``fit="ceil"``); ``Hp, Wp``: padded input size.
    """

    N: int
    C: int
    H: int
    W: int
    Fh: int
    Fw: int
    Sh: int
    Sw: int
    Dh: int
    Dw: int
    Ho: int
    Wo: int
    pt: int
    pb: int
    pl: int
    pr: int

    @property
    def Hp(self) -> int:
        return self.H + self.pt + self.pb

    @property
    def Wp(self) -> int:
        return self.W + self.pl + self.pr

    @property
    def padded(self) -> bool:
        return bool(self.pt or self.pb or self.pl or self.pr)


def geometry(
    x_shape: tuple[int, ...], F: IntOrPair, stride: IntOrPair = 1, pad: IntOrPair = 0,
    dilation: IntOrPair = 1, fit: str = "strict", what: str = "conv",
) -> Geometry:
    """Output size and padding for an (N, C, H, W) input and an F (int or (Fh, Fw)) filter.

    Raises :class:`volnet.ShapeError` (from :func:`volnet.ops.sizes.output_size`) when the filter does not
    fit and ``fit="strict"``.
    """
    if len(x_shape) != 4:
        raise ShapeError(f"{what}: input must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    N, C, H, W = (int(v) for v in x_shape)
    Fh, Fw = pair(F, "F")
    Sh, Sw = pair(stride, "stride")
    Ph, Pw = pair(pad, "pad")
    Dh, Dw = pair(dilation, "dilation")
    Ho, pt, pb = padding_for(H, Fh, Sh, Ph, Dh, fit, what)
    Wo, pl, pr = padding_for(W, Fw, Sw, Pw, Dw, fit, what)
    # with fit="floor" the last rows/cols may be unreachable: pad only as far as windows reach
    pb = max(0, min(pb, (Ho - 1) * Sh + effective_size(Fh, Dh) - H - pt))
    pr = max(0, min(pr, (Wo - 1) * Sw + effective_size(Fw, Dw) - W - pl))
    return Geometry(N, C, H, W, Fh, Fw, Sh, Sw, Dh, Dw, Ho, Wo, pt, pb, pl, pr)


def _float_dtype(x: np.ndarray) -> np.dtype:
    """The dtype arithmetic runs in: x's own float dtype (never upcast); float32 for non-float input."""
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)


# ---------------------------------------------------------------------------------------------
# im2col / col2im on the batch-last layout
# ---------------------------------------------------------------------------------------------
def pad_batch_last(x: np.ndarray, g: Geometry) -> np.ndarray:
    """x (N, C, H, W) -> zero-padded (C, Hp, Wp, N); a view when x is batch-last and unpadded."""
    if not g.padded:
        return batch_last(x)
    xp = np.empty((g.C, g.Hp, g.Wp, g.N), dtype=x.dtype)
    xp[:, :g.pt] = 0
    xp[:, g.pt + g.H:] = 0
    xp[:, g.pt:g.pt + g.H, :g.pl] = 0
    xp[:, g.pt:g.pt + g.H, g.pl + g.W:] = 0
    batch_last(x, out=xp[:, g.pt:g.pt + g.H, g.pl:g.pl + g.W])
    return xp


def _k_im2col(xbl, Fh, Fw, Sh, Sw, Dh, Dw, ho0, out6):  # pragma: no cover - compiled
    C, _, _, rows, Wo, N = out6.shape
    for c in range(C):
        for i in range(Fh):
            for j in range(Fw):
                for r in range(rows):
                    h = (ho0 + r) * Sh + i * Dh
                    for wo in range(Wo):
                        w = wo * Sw + j * Dw
                        for n in range(N):
                            out6[c, i, j, r, wo, n] = xbl[c, h, w, n]


def _k_col2im_add(cols6, Fh, Fw, Sh, Sw, Dh, Dw, ho0, dxp):  # pragma: no cover - compiled
    C, _, _, rows, Wo, N = cols6.shape
    for c in range(C):
        for i in range(Fh):
            for j in range(Fw):
                for r in range(rows):
                    h = (ho0 + r) * Sh + i * Dh
                    for wo in range(Wo):
                        w = wo * Sw + j * Dw
                        for n in range(N):
                            dxp[c, h, w, n] += cols6[c, i, j, r, wo, n]


_IM2COL = kernels.jit(_k_im2col)
_COL2IM = kernels.jit(_k_col2im_add)


def im2col_into(xbl: np.ndarray, g: Geometry, out6: np.ndarray, ho0: int = 0, ho1: int | None = None) -> None:
    """Fill out6 (C, Fh, Fw, ho1 - ho0, Wo, N) (any strides) from the padded batch-last (C, Hp, Wp, N)
    input, for output rows ho0..ho1 (all rows by default).

    NumPy: one strided slice copy per kernel offset (i, j), Fh*Fw copies in all, each over N contiguous
    images. With numba, one compiled pass writes the same numbers (measured faster for every N: 9.0 vs
    9.8 ms for the notes' CONV7-32 on N64 32x32x3, 21 vs 30 ms for AlexNet's first layer at N8, where runs
    of N floats are too short for NumPy's copy loops).
    """
    ho1 = g.Ho if ho1 is None else ho1
    if _IM2COL is not None and kernels.using("numba") and xbl.dtype == out6.dtype:
        _IM2COL(xbl, g.Fh, g.Fw, g.Sh, g.Sw, g.Dh, g.Dw, ho0, out6[:, :, :, :ho1 - ho0])
        return
    hspan = (ho1 - ho0 - 1) * g.Sh + 1
    wspan = (g.Wo - 1) * g.Sw + 1
    for i in range(g.Fh):
        h0 = ho0 * g.Sh + i * g.Dh
        for j in range(g.Fw):
            w0 = j * g.Dw
            out6[:, i, j] = xbl[:, h0:h0 + hspan:g.Sh, w0:w0 + wspan:g.Sw]


def col2im_add(cols6: np.ndarray, g: Geometry, dxp: np.ndarray, ho0: int = 0, ho1: int | None = None) -> None:
    """Adjoint of :func:`im2col_into`: add cols6 (C, Fh, Fw, ho1 - ho0, Wo, N) into the padded
    batch-last dxp (C, Hp, Wp, N). Overlapping contributions are summed: one strided slice add per offset
    (compiled, in the same order, as :func:`im2col_into`).
    """
    ho1 = g.Ho if ho1 is None else ho1
    if _COL2IM is not None and kernels.using("numba") and cols6.dtype == dxp.dtype:
        _COL2IM(cols6[:, :, :, :ho1 - ho0], g.Fh, g.Fw, g.Sh, g.Sw, g.Dh, g.Dw, ho0, dxp)
        return
    hspan = (ho1 - ho0 - 1) * g.Sh + 1
    wspan = (g.Wo - 1) * g.Sw + 1
    for i in range(g.Fh):
        h0 = ho0 * g.Sh + i * g.Dh
        for j in range(g.Fw):
            w0 = j * g.Dw
            dxp[:, h0:h0 + hspan:g.Sh, w0:w0 + wspan:g.Sw] += cols6[:, i, j]


def col2im_batch_last(cols6: np.ndarray, g: Geometry) -> np.ndarray:
    """Adjoint of :func:`im2col_into`: cols6 (C, Fh, Fw, Ho, Wo, N) -> (C, H, W, N) (a view)."""
    dxp = np.zeros((g.C, g.Hp, g.Wp, g.N), dtype=cols6.dtype)
    col2im_add(cols6, g, dxp)
    return dxp[:, g.pt:g.pt + g.H, g.pl:g.pl + g.W]


_tls = threading.local()


def _workspace(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread scratch array of this shape, carved from one buffer that only grows.

    Fresh large arrays cost page faults on first touch (measured: half of an im2col copy), so the
    column matrix lives here. Only temporaries that die inside one call may use it.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = getattr(_tls, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        _tls.buf = buf = None  # free the old buffer (both references) before allocating the larger one
        buf = _tls.buf = np.empty(nbytes, dtype=np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def clear_workspace() -> None:
    """Free this thread's conv scratch buffer (it holds the largest column matrix used so far)."""
    _tls.buf = None


def _im2col(x: np.ndarray, g: Geometry, scratch: bool = False) -> np.ndarray:
    """x (N, C, H, W) -> X_col (C*Fh*Fw, Ho*Wo*N), rows (C, Fh, Fw), columns (Ho, Wo, N).

    With ``scratch=True`` the result lives in the thread's workspace (valid until the next use).
    """
    xbl = pad_batch_last(x, g)
    rows = g.C * g.Fh * g.Fw
    if g.Fh == g.Fw == g.Sh == g.Sw == 1 and not g.padded:  # 1x1 conv: the columns are x itself
        return xbl.reshape(rows, g.Ho * g.Wo * g.N)  # a view when x is batch-last already
    shape = (rows, g.Ho * g.Wo * g.N)
    cols = _workspace(shape, x.dtype) if scratch else np.empty(shape, dtype=x.dtype)
    im2col_into(xbl, g, cols.reshape(g.C, g.Fh, g.Fw, g.Ho, g.Wo, g.N))
    return cols


def im2col(
    x: np.ndarray, Fh: int, Fw: int, stride: IntOrPair = 1, pad: IntOrPair = 0,
    dilation: IntOrPair = 1, fit: str = "strict",
) -> np.ndarray:
    """Stretch every receptive field of x into a column (the notes' ``X_col``).

    x: input of shape (N, C, H, W) (the notes' D1 = C). Returns ``cols`` of shape
    (C*Fh*Fw, N*Ho*Wo) with Ho = (H - Fh + 2P)/S + 1, Wo = (W - Fw + 2P)/S + 1. Rows are ordered
    (C, Fh, Fw) like ``w.reshape(K, -1)``; columns are ordered (N, Ho, Wo) (image-major). (The conv
    itself orders its columns (Ho, Wo, N), batch-last; this function reorders them for readers.)

    >>> im2col(np.zeros((1, 3, 227, 227)), 11, 11, stride=4).shape
    (363, 3025)
    """
    x = np.asarray(x)
    g = geometry(x.shape, (Fh, Fw), stride, pad, dilation, fit, "im2col")
    cols = _im2col(x, g)
    R = cols.shape[0]
    return np.ascontiguousarray(cols.reshape(R, g.Ho, g.Wo, g.N).transpose(0, 3, 1, 2)).reshape(R, -1)


def col2im(
    cols: np.ndarray, x_shape: tuple[int, int, int, int], Fh: int, Fw: int, stride: IntOrPair = 1,
    pad: IntOrPair = 0, dilation: IntOrPair = 1, fit: str = "strict",
) -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add columns (C*Fh*Fw, N*Ho*Wo) back to an (N, C, H, W) array.

    Overlapping receptive fields sum their contributions; padding is cropped. The result is an
    (N, C, H, W) array in batch-last memory (a transposed view of a (C, H, W, N) buffer).
    ``<col2im(c), x> == <c, im2col(x)>`` for all c and x.
    """
    g = geometry(tuple(x_shape), (Fh, Fw), stride, pad, dilation, fit, "col2im")
    cols = np.asarray(cols)
    want = (g.C * g.Fh * g.Fw, g.N * g.Ho * g.Wo)
    if cols.shape != want:
        raise ShapeError(
            f"col2im: cols must have shape {want} for x shape {tuple(x_shape)}, got {cols.shape}"
        )
    c6 = cols.reshape(g.C, g.Fh, g.Fw, g.N, g.Ho, g.Wo).transpose(0, 1, 2, 4, 5, 3)
    return col2im_batch_last(c6, g).transpose(3, 0, 1, 2)


# ---------------------------------------------------------------------------------------------
# conv forward / backward
# ---------------------------------------------------------------------------------------------
@dataclass
class ConvCache:
    """What :func:`conv_backward` needs: the algorithm used, sizes, input and weights.

    ``x`` and ``w`` are in the compute dtype (x's float dtype); ``extra`` is algorithm-specific
    (None for im2col, which rebuilds X_col in the backward pass rather than keeping a copy nine times
    the input's size); ``w_dtype``/``b_dtype`` are the caller's dtypes, given back to dw/db.
    """

    algo: str
    geom: Geometry
    x: np.ndarray
    w: np.ndarray
    has_bias: bool
    w_dtype: np.dtype
    b_dtype: np.dtype | None
    extra: Any = None


def _check_conv_args(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim != 4:
        raise ShapeError(f"{what}: input x must be 4-D (N, C, H, W), got shape {x.shape}; "
                         f"add a batch axis with x[None] for one image")
    if w.ndim != 4:
        raise ShapeError(f"{what}: filters w must be 4-D (K, C, Fh, Fw), got shape {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise ShapeError(
            f"{what}: input depth D={x.shape[1]} but filters have depth {w.shape[1]} (w shape {w.shape}); "
            f"filters must span the whole input depth: use w of shape ({w.shape[0]}, {x.shape[1]}, "
            f"{w.shape[2]}, {w.shape[3]})"
        )
    dt = _float_dtype(x)
    x = x.astype(dt, copy=False)
    w = w.astype(dt, copy=False)
    if b is not None:
        b = np.asarray(b)
        if b.shape != (w.shape[0],):
            raise ShapeError(f"{what}: bias must have shape (K,) = ({w.shape[0]},), got {b.shape}")
    return x, w, b


#: Winograd is chosen automatically when C and K reach this and each of its 16 GEMMs is large
#: (C*K*tiles >= WINOGRAD_MIN_GEMM); None switches the automatic choice off.
WINOGRAD_MIN_CHANNELS: int | None = 64
WINOGRAD_MIN_GEMM = 32 * 2**20
#: F(4x4, 3x3) is chosen for C, K >= this (None: never automatically) and batches of at least
#: WINOGRAD4_MIN_IMAGES images
WINOGRAD4_MIN_CHANNELS: int | None = 16
WINOGRAD4_MIN_IMAGES = 8


def _choose_algo(g: Geometry, K: int) -> str:
    """Which algorithm computes this convolution: "winograd4", "winograd" or "im2col".

    - Winograd F(4x4, 3x3) (:mod:`volnet.ops.winograd`, compiled transforms) for 3x3 stride-1 convs
      when the numba kernels are active and C, K >= ``WINOGRAD4_MIN_CHANNELS`` and there are at least
      ``WINOGRAD4_MIN_IMAGES`` images (its transforms vectorise over the batch): 4x fewer multiplies
      than im2col, the one route to less arithmetic than PyTorch (BENCHMARKS.md).
    - Winograd F(2x2, 3x3) (pure NumPy) for the large 3x3 layers whose 16 GEMMs are each large
      (C, K >= 64 and C*K*tiles >= 32M: VGG-16 at 224x224 up to the 28x28 block): a memory choice, its
      blocked scratch is far smaller than im2col's 9x column matrix.
    - im2col otherwise (first layers with few channels, other filter sizes, strides).
    """
    if not winograd_supported(g):
        return "im2col"
    if (
        WINOGRAD4_MIN_CHANNELS is not None and kernels.using("numba")
        and min(g.C, K) >= WINOGRAD4_MIN_CHANNELS and g.N >= WINOGRAD4_MIN_IMAGES
    ):
        return "winograd4"
    if (
        WINOGRAD_MIN_CHANNELS is not None and min(g.C, K) >= WINOGRAD_MIN_CHANNELS
        and g.C * K * g.N * ((g.Ho + 1) // 2) * ((g.Wo + 1) // 2) >= WINOGRAD_MIN_GEMM
    ):
        return "winograd"
    return "im2col"


#: bytes of X_col built at once: the column matrix is made and consumed in blocks of output rows that
#: stay in cache (the GEMM reads it right after the copy) instead of one matrix F*F times the input
IM2COL_BLOCK_BYTES = 4 * 2**20


def _row_blocks(g: Geometry, itemsize: int) -> list[tuple[int, int]]:
    """Output-row ranges (ho0, ho1) whose X_col block (C*Fh*Fw x rows*Wo*N) fits IM2COL_BLOCK_BYTES."""
    per_row = g.C * g.Fh * g.Fw * g.Wo * g.N * itemsize
    rb = max(1, min(g.Ho, IM2COL_BLOCK_BYTES // max(per_row, 1)))
    return [(h, min(g.Ho, h + rb)) for h in range(0, g.Ho, rb)]


def _is_pointwise(g: Geometry) -> bool:
    return g.Fh == g.Fw == g.Sh == g.Sw == 1 and not g.padded


def _cols_block(xbl: np.ndarray, g: Geometry, ho0: int, ho1: int) -> np.ndarray:
    """X_col for output rows ho0..ho1: (C*Fh*Fw, (ho1-ho0)*Wo*N) in the thread's workspace."""
    n = (ho1 - ho0) * g.Wo * g.N
    cols = _workspace((g.C * g.Fh * g.Fw, n), xbl.dtype)
    im2col_into(xbl, g, cols.reshape(g.C, g.Fh, g.Fw, ho1 - ho0, g.Wo, g.N), ho0, ho1)
    return cols


def _conv_im2col(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: Geometry) -> tuple[np.ndarray, Any]:
    """out = W_row @ X_col (+ b): GEMMs (K, C*Fh*Fw) x (C*Fh*Fw, rows*Wo*N), one per block of output rows
    (one in all for small layers; a 1x1 conv multiplies x itself). Returns (out, None)."""
    K = w.shape[0]
    w_row = w.reshape(K, -1)
    xbl = pad_batch_last(x, g)
    if _is_pointwise(g):
        out = w_row @ xbl.reshape(g.C, -1)
    else:
        out = np.empty((K, g.Ho * g.Wo * g.N), dtype=x.dtype)
        step = g.Wo * g.N
        for ho0, ho1 in _row_blocks(g, x.dtype.itemsize):
            np.matmul(w_row, _cols_block(xbl, g, ho0, ho1), out=out[:, ho0 * step:ho1 * step])
    if b is not None:
        out += b.astype(out.dtype, copy=False)[:, None]
    return out.reshape(K, g.Ho, g.Wo, g.N).transpose(3, 0, 1, 2), None


def _conv_im2col_backward(
    dout: np.ndarray, cache: ConvCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """dw = dout_row @ X_col^T, dX_col = W_row^T @ dout_row, dx = col2im(dX_col); X_col rebuilt block by
    block (blocks of output rows, as in the forward pass)."""
    g, w = cache.geom, cache.w
    K = w.shape[0]
    d2 = batch_last(dout).reshape(K, -1)  # (K, Ho*Wo*N): free when dout is batch-last
    db = d2.sum(axis=1) if cache.has_bias else None
    xbl = pad_batch_last(cache.x, g)
    w_row_t = w.reshape(K, -1).T
    if _is_pointwise(g):
        x2 = xbl.reshape(g.C, -1)
        dw = np.ascontiguousarray((x2 @ d2.T).T).reshape(w.shape)
        if not need_dx:
            return None, dw, db
        return (w_row_t @ d2).reshape(g.C, g.H, g.W, g.N).transpose(3, 0, 1, 2), dw, db
    blocks = _row_blocks(g, xbl.dtype.itemsize)
    step = g.Wo * g.N
    dw_t = np.zeros((g.C * g.Fh * g.Fw, K), dtype=xbl.dtype)
    for ho0, ho1 in blocks:  # measured faster as cols @ d2^T than d2 @ cols^T
        dw_t += _cols_block(xbl, g, ho0, ho1) @ d2[:, ho0 * step:ho1 * step].T
    dw = np.ascontiguousarray(dw_t.T).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    if _dx_is_a_conv(g, K):
        return _dx_as_conv(dout, w, g), dw, db
    dxp = np.zeros((g.C, g.Hp, g.Wp, g.N), dtype=xbl.dtype)
    for ho0, ho1 in blocks:
        n = (ho1 - ho0) * step
        dcols = _workspace((g.C * g.Fh * g.Fw, n), xbl.dtype)
        np.matmul(w_row_t, d2[:, ho0 * step:ho1 * step], out=dcols)
        col2im_add(dcols.reshape(g.C, g.Fh, g.Fw, ho1 - ho0, g.Wo, g.N), g, dxp, ho0, ho1)
    dx = dxp[:, g.pt:g.pt + g.H, g.pl:g.pl + g.W]
    return dx.transpose(3, 0, 1, 2), dw, db


def _dx_is_a_conv(g: Geometry, K: int) -> bool:
    """Stride 1, symmetric padding P <= F_eff - 1, filter larger than 1x1: dx is a plain convolution.

    Taken only when K <= C: the im2col of dout has K*Fh*Fw rows against C*Fh*Fw for col2im's columns
    (a first layer, C=3 K=32 F7, would build a 10x larger matrix).
    """
    return (
        K <= g.C and g.Sh == g.Sw == 1 and (g.Fh > 1 or g.Fw > 1) and g.pt == g.pb and g.pl == g.pr
        and g.pt <= g.Dh * (g.Fh - 1) and g.pl <= g.Dw * (g.Fw - 1)
    )


def _dx_as_conv(dout: np.ndarray, w: np.ndarray, g: Geometry) -> np.ndarray:
    """The notes' "backward pass for a convolution is also a convolution": for stride 1,

    dx = conv(dout, w_flipped, pad = F_eff - 1 - P), w_flipped[c, k, i, j] = w[k, c, Fh-1-i, Fw-1-j]

    (spatially flipped, channel-transposed filters). One im2col of dout and one GEMM; measured faster
    than W_row^T @ dout_row followed by col2im's Fh*Fw strided adds (N64 C32 28x28 K32: 12 vs 20 ms).
    """
    w_flip = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    gd = geometry(dout.shape, (g.Fh, g.Fw), 1, (g.Dh * (g.Fh - 1) - g.pt, g.Dw * (g.Fw - 1) - g.pl),
                  (g.Dh, g.Dw), "strict", "conv backward")
    dx, _ = _conv_im2col(dout, w_flip, None, gd)
    return dx


_ALGOS = {
    "im2col": (_conv_im2col, _conv_im2col_backward),
    "winograd": (winograd_forward, winograd_backward),
    "winograd4": (winograd4_forward, winograd4_backward),
}


def conv_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: IntOrPair = 1, pad: IntOrPair = 0,
    dilation: IntOrPair = 1, fit: str = "strict", algo: str | None = None,
) -> tuple[np.ndarray, ConvCache]:
    """Convolve K filters over a batch of volumes: im2col + one matrix multiply (or Winograd).

    Args:
        x: input of shape (N, C, H, W), the notes' W1 x H1 x D1 volume with D1 = C.
        w: filters of shape (K, C, Fh, Fw) (PyTorch/ONNX order); K*Fh*Fw*C weights.
        b: biases of shape (K,), or None for no bias; K biases.
        stride, pad, dilation: S, P and dilation, each an int or an (h, w) pair. dilation=1 is an
            ordinary filter (the notes' "dilation 0"); dilation=2 is the notes' "dilation 1".
        fit: "strict" | "floor" | "ceil" when (W - F + 2P)/S + 1 is not an integer.
        algo: None (choose per shape, see ``_choose_algo``), "im2col" or "winograd" (3x3, stride 1,
            dilation 1, P <= 2 only; for tests and benchmarks).

    Returns:
        out of shape (N, K, Ho, Wo): ``W2 = (W1 - F + 2P)/S + 1``, ``H2 = (H1 - F + 2P)/S + 1``,
        ``D2 = K``; in x's float dtype (float32 stays float32, float64 stays float64). Its memory is
        batch-last (K, Ho, Wo, N); see the module docstring. And the cache for
        :func:`conv_backward`.

    Parameter count with sharing: ``K*F*F*D1 + K`` (e.g. 96 filters 11x11x3: 34,944).

    Raises:
        ShapeError: x or w not 4-D, depth mismatch (w.shape[1] != C), bias not (K,), or a filter that
            does not fit (the message gives W, F, S, P and the fractional output size).

    See: torch.nn.functional.conv2d (same weights, same result with fit="floor").
    """
    w_dtype = np.asarray(w).dtype
    x, w, b = _check_conv_args(x, w, b, "conv")
    K = w.shape[0]
    g = geometry(x.shape, (w.shape[2], w.shape[3]), stride, pad, dilation, fit, "conv")
    if algo is None:
        algo = _choose_algo(g, K)
    elif algo not in _ALGOS:
        raise ValueError(f"conv: algo must be one of {', '.join(_ALGOS)} or None, got {algo!r}")
    elif algo.startswith("winograd") and not winograd_supported(g):
        raise ValueError(
            f"conv: algo='winograd' needs a 3x3 filter, stride 1, dilation 1 and padding <= 2, got "
            f"F={g.Fh}x{g.Fw}, S={g.Sh}x{g.Sw}, dilation={g.Dh}x{g.Dw}, pad=({g.pt}, {g.pb}, {g.pl}, {g.pr})"
        )
    if algo == "winograd4":  # its kernels read x as (C, H, W, N): make it lie so (a view when it does)
        x = batch_last(x).transpose(3, 0, 1, 2)
    out, extra = _ALGOS[algo][0](x, w, b, g)
    b_dtype = None if b is None else b.dtype
    return out, ConvCache(algo, g, x, w, b is not None, w_dtype, b_dtype, extra)


def conv_backward(
    dout: np.ndarray, cache: ConvCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of a convolution via col2im (or the Winograd adjoint, per ``cache.algo``).

    Args:
        dout: upstream gradient of shape (N, K, Ho, Wo).
        cache: from :func:`conv_forward`.
        need_dx: False skips dx (returned as None): the first layer of a net needs no input gradient,
            and dx is about half of its backward cost (PyTorch skips it too for an input that does not
            require grad).

    Returns:
        dx (N, C, H, W) (batch-last memory) or None, dw (K, C, Fh, Fw), db (K,) or None when b was
        None. dw = dout_row @ X_col^T, dX_col = W_row^T @ dout_row, dx = col2im(dX_col).
    """
    g = cache.geom
    want = (g.N, cache.w.shape[0], g.Ho, g.Wo)
    dout = np.asarray(dout)
    if dout.shape != want:
        raise ShapeError(f"conv backward: dout must have shape {want} (N, K, Ho, Wo), got {dout.shape}")
    dout = dout.astype(cache.w.dtype, copy=False)
    if cache.algo == "winograd4":
        dout = batch_last(dout).transpose(3, 0, 1, 2)
    dx, dw, db = _ALGOS[cache.algo][1](dout, cache, need_dx)
    dw = dw.astype(cache.w_dtype, copy=False)
    if db is not None and cache.b_dtype is not None and np.issubdtype(cache.b_dtype, np.floating):
        db = db.astype(cache.b_dtype, copy=False)
    return dx, dw, db


# ---------------------------------------------------------------------------------------------
# naive oracle
# ---------------------------------------------------------------------------------------------
def conv_naive(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: IntOrPair = 1, pad: IntOrPair = 0,
    dilation: IntOrPair = 1, fit: str = "strict",
) -> np.ndarray:
    """Reference convolution by plain loops over images, filters and output positions (slow; oracle).

    out[n, k, i, j] = sum over (c, p, q) of xpad[n, c, i*Sh + p*Dh, j*Sw + q*Dw] * w[k, c, p, q] + b[k].
    Same arguments and output shape as :func:`conv_forward`.
    """
    x, w, b = _check_conv_args(x, w, b, "conv")
    K = w.shape[0]
    g = geometry(x.shape, (w.shape[2], w.shape[3]), stride, pad, dilation, fit, "conv")
    xp = np.zeros((g.N, g.C, g.Hp, g.Wp), dtype=x.dtype)
    xp[:, :, g.pt:g.pt + g.H, g.pl:g.pl + g.W] = x
    he = (g.Fh - 1) * g.Dh + 1
    we = (g.Fw - 1) * g.Dw + 1
    out = np.zeros((g.N, K, g.Ho, g.Wo), dtype=x.dtype)
    for n in range(g.N):
        for k in range(K):
            for i in range(g.Ho):
                for j in range(g.Wo):
                    h0, w0 = i * g.Sh, j * g.Sw
                    window = xp[n, :, h0:h0 + he:g.Dh, w0:w0 + we:g.Dw]
                    out[n, k, i, j] = np.sum(window * w[k]) + (0 if b is None else b[k])
    return out


def _im2col_forward_memory(g: Geometry, K: int, b: int, x_batch_last: bool) -> tuple[int, int]:
    """(workspace bytes, transient bytes) of :func:`_conv_im2col` beyond its output."""
    copy = g.C * g.Hp * g.Wp * g.N * b if (g.padded or not x_batch_last) else 0
    if _is_pointwise(g):
        return 0, copy
    rows = max(h1 - h0 for h0, h1 in _row_blocks(g, b))
    return g.C * g.Fh * g.Fw * rows * g.Wo * g.N * b, copy


def conv_memory(x_shape: tuple[int, ...], K: int, F: IntOrPair, stride: IntOrPair = 1,
                pad: IntOrPair = 0, dilation: IntOrPair = 1, fit: str = "strict", itemsize: int = 4,
                x_batch_last: bool = True, need_dx: bool = True) -> dict[str, Any]:
    """What :func:`conv_forward` and :func:`conv_backward` allocate for an (N, C, H, W) input and K
    filters, from the same algorithm choice (``_choose_algo``) and block sizes (``_row_blocks``, the
    Winograd blocks): ``{"algo", "scratch": {name: bytes}, "scratch_forward": {name: bytes}, "forward":
    bytes, "backward": bytes, "keeps": bytes}``. ``scratch``: the reusable per-thread buffers (the im2col
    workspace "conv", shared by all layers; Winograd's named buffers), each kept at its largest use;
    ``forward``/``backward``: the transient arrays of the pass besides out and dx (padded copies, dx's
    padding); ``keeps``: what the cache holds besides x itself (a batch-last copy of x for F(4x4)). For
    the memory ledger (:mod:`volnet.memory`).

    >>> m = conv_memory((8, 16, 32, 32), 16, 3, pad=1)
    >>> m["algo"] in ("im2col", "winograd", "winograd4"), m["forward"] >= 0
    (True, True)
    """
    g = geometry(tuple(x_shape), F, stride, pad, dilation, fit, "conv")
    b = int(itemsize)
    algo = _choose_algo(g, K)
    xsize = g.C * g.H * g.W * g.N * b
    if algo.startswith("winograd"):
        m = winograd_memory(g, K, b, algo, need_dx)
        keeps = xsize if algo == "winograd4" and not x_batch_last else 0
        return {"algo": algo, "scratch": {f"winograd:{k}": v for k, v in m["scratch"].items()},
                "scratch_forward": {f"winograd:{k}": v for k, v in m["scratch_forward"].items()},
                "forward": m["forward"] + keeps, "backward": m["backward"], "keeps": keeps}
    ws, fcopy = _im2col_forward_memory(g, K, b, x_batch_last)
    fws = ws
    bwd = fcopy + g.C * g.Fh * g.Fw * K * b  # x padded again, dw_t
    if need_dx and not _is_pointwise(g):
        if _dx_is_a_conv(g, K):
            gd = geometry((g.N, K, g.Ho, g.Wo), (g.Fh, g.Fw), 1,
                          (g.Dh * (g.Fh - 1) - g.pt, g.Dw * (g.Fw - 1) - g.pl), (g.Dh, g.Dw), "strict",
                          "conv")
            ws2, copy2 = _im2col_forward_memory(gd, g.C, b, True)
            ws, bwd = max(ws, ws2), bwd + copy2
        else:
            bwd += g.C * (g.Hp * g.Wp - g.H * g.W) * g.N * b  # dx is a view of the padded dxp
    return {"algo": algo, "scratch": {"conv": ws} if ws else {},
            "scratch_forward": {"conv": fws} if fws else {}, "forward": fcopy, "backward": bwd, "keeps": 0}
