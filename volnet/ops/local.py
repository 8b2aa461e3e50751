"""Locally connected layer: a convolution without parameter sharing.

In a CONV layer all neurons of one depth slice share their weights, which assumes that a feature
useful at one position is useful at every other. When it is not (e.g. centred faces), the layer is
*locally connected*: every output position (i, j) has its own K filters of size F x F x D1. Sizes
follow the conv formula ``W2 = (W1 - F + 2P)/S + 1``, ``H2 = (H1 - F + 2P)/S + 1``, ``D2 = K``; the
parameter count is ``W2*H2*K*(F*F*D1 + 1)`` instead of ``K*(F*F*D1 + 1)``
(AlexNet's first layer: 105,705,600 vs 34,944).

Weight layout: ``w`` has shape (Ho, Wo, K, C, Fh, Fw): w[i, j] is the conv weight array (K, C, Fh, Fw)
of output position (i, j), so ``w[i, j] = w_conv`` for every (i, j) reproduces the convolution, and
w.reshape(Ho*Wo, K, C*Fh*Fw) is a stack of per-position ``W_row`` matrices without a copy. Biases ``b``
have shape (Ho, Wo, K). See :func:`local_weight_shape`.

Computation: :mod:`volnet.ops.conv`'s im2col writes the columns directly in position-major layout
(Ho*Wo, C*Fh*Fw, N), then ONE stacked ``np.matmul`` computes (Ho*Wo, K, C*Fh*Fw) x (Ho*Wo, C*Fh*Fw, N)
(BLAS per position; matmul rather than einsum, see docs' performance guide).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volnet.errors import ShapeError
from volnet.ops.conv import (
    Geometry,
    IntOrPair,
    _float_dtype,
    col2im_batch_last,
    geometry,
    im2col_into,
    pad_batch_last,
)
from volnet.ops.sizes import pair

__all__ = ["LocalCache", "local_backward", "local_forward", "local_naive", "local_weight_shape"]


def local_weight_shape(
    in_shape: tuple[int, int, int], K: int, F: IntOrPair, stride: IntOrPair = 1, pad: IntOrPair = 0,
    dilation: IntOrPair = 1, fit: str = "strict",
) -> tuple[int, int, int, int, int, int]:
    """Weight shape (Ho, Wo, K, C, Fh, Fw) of a locally connected layer on a (C, H, W) input.

    The bias shape is the first three entries, (Ho, Wo, K). Parameter count:
    ``Ho*Wo*K*(C*Fh*Fw + 1)``.

    >>> local_weight_shape((3, 227, 227), 96, 11, stride=4)
    (55, 55, 96, 3, 11, 11)
    """
    if len(in_shape) != 3:
        raise ShapeError(f"local: in_shape must be (C, H, W), got {tuple(in_shape)}")
    C = int(in_shape[0])
    g = geometry((1, *in_shape), F, stride, pad, dilation, fit, "local")
    return g.Ho, g.Wo, int(K), C, g.Fh, g.Fw


@dataclass
class LocalCache:
    """What :func:`local_backward` needs: sizes, weights (compute dtype), the columns and dtypes."""

    geom: Geometry
    w: np.ndarray
    cols: np.ndarray  # (Ho*Wo, C*Fh*Fw, N)
    has_bias: bool
    w_dtype: np.dtype
    b_dtype: np.dtype | None


def _check_local_args(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: IntOrPair, pad: IntOrPair,
    dilation: IntOrPair, fit: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Geometry]:
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim != 4:
        raise ShapeError(f"local: input x must be 4-D (N, C, H, W), got shape {x.shape}; "
                         f"add a batch axis with x[None] for one image")
    if w.ndim != 6:
        raise ShapeError(f"local: weights w must be 6-D (Ho, Wo, K, C, Fh, Fw), got shape {w.shape}")
    Ho_w, Wo_w, K, Cw, Fh, Fw = w.shape
    if x.shape[1] != Cw:
        raise ShapeError(
            f"local: input depth D={x.shape[1]} but filters have depth {Cw} (w shape {w.shape}); "
            f"filters must span the whole input depth"
        )
    g = geometry(x.shape, (Fh, Fw), stride, pad, dilation, fit, "local")
    if (g.Ho, g.Wo) != (Ho_w, Wo_w):
        want = local_weight_shape(x.shape[1:], K, (Fh, Fw), stride, pad, dilation, fit)
        raise ShapeError(
            f"local: weights are for a {Ho_w}x{Wo_w} output but this input gives {g.Ho}x{g.Wo} "
            f"(H={g.H}, W={g.W}, F=({Fh}, {Fw}), S={pair(stride)}, P={pair(pad)}); use w of shape {want}"
        )
    if b is not None:
        b = np.asarray(b)
        if b.shape != (g.Ho, g.Wo, K):
            raise ShapeError(f"local: bias must have shape (Ho, Wo, K) = {(g.Ho, g.Wo, K)}, got {b.shape}")
    dt = _float_dtype(x)
    return x.astype(dt, copy=False), w.astype(dt, copy=False), b, g


def local_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: IntOrPair = 1, pad: IntOrPair = 0,
    dilation: IntOrPair = 1, fit: str = "strict",
) -> tuple[np.ndarray, LocalCache]:
    """Locally connected layer: every output position has its own filters.

    Args:
        x: input of shape (N, C, H, W) (the notes' W1 x H1 x D1 volume, D1 = C).
        w: weights of shape (Ho, Wo, K, C, Fh, Fw) (see :func:`local_weight_shape`).
        b: biases of shape (Ho, Wo, K), or None.
        stride, pad, dilation, fit: as :func:`volnet.ops.conv.conv_forward` (int or (h, w) pair;
            dilation=1 is the notes' "dilation 0").

    Returns:
        out of shape (N, K, Ho, Wo) in x's float dtype,
        out[n, k, i, j] = sum over (c, p, q) of xpad[n, c, i*S + p*D, j*S + q*D] * w[i, j, k, c, p, q]
        + b[i, j, k]; and the cache for :func:`local_backward`.
    """
    w_dtype = np.asarray(w).dtype
    x, w, b, g = _check_local_args(x, w, b, stride, pad, dilation, fit)
    P, K, R = g.Ho * g.Wo, w.shape[2], g.C * g.Fh * g.Fw
    buf = np.empty((g.Ho, g.Wo, g.C, g.Fh, g.Fw, g.N), dtype=x.dtype)
    im2col_into(pad_batch_last(x, g), g, buf.transpose(2, 3, 4, 0, 1, 5))
    cols = buf.reshape(P, R, g.N)
    out = np.matmul(w.reshape(P, K, R), cols)  # (P, K, N)
    if b is not None:
        out += b.reshape(P, K, 1).astype(out.dtype, copy=False)
    out = np.ascontiguousarray(out.reshape(g.Ho, g.Wo, K, g.N).transpose(3, 2, 0, 1))
    b_dtype = None if b is None else b.dtype
    return out, LocalCache(g, w, cols, b is not None, w_dtype, b_dtype)


def local_backward(
    dout: np.ndarray, cache: LocalCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of the locally connected layer.

    Args:
        dout: upstream gradient of shape (N, K, Ho, Wo).
        cache: from :func:`local_forward`.
        need_dx: False skips dx (returned as None), as for the first layer of a net.

    Returns:
        dx (N, C, H, W) or None, dw (Ho, Wo, K, C, Fh, Fw), db (Ho, Wo, K) or None when b was None.
        Per position p: dw[p] = dout[p] @ X_col[p]^T, dX_col[p] = w[p]^T @ dout[p], dx = col2im(dX_col).
    """
    g, w = cache.geom, cache.w
    K = w.shape[2]
    P, R = g.Ho * g.Wo, g.C * g.Fh * g.Fw
    want = (g.N, K, g.Ho, g.Wo)
    dout = np.asarray(dout)
    if dout.shape != want:
        raise ShapeError(f"local backward: dout must have shape {want} (N, K, Ho, Wo), got {dout.shape}")
    dp = np.ascontiguousarray(dout.astype(w.dtype, copy=False).transpose(2, 3, 1, 0)).reshape(P, K, g.N)
    dw = np.matmul(dp, cache.cols.transpose(0, 2, 1)).reshape(w.shape).astype(cache.w_dtype, copy=False)
    db = None
    if cache.has_bias:
        db = dp.sum(axis=2).reshape(g.Ho, g.Wo, K)
        if cache.b_dtype is not None and np.issubdtype(cache.b_dtype, np.floating):
            db = db.astype(cache.b_dtype, copy=False)
    if not need_dx:
        return None, dw, db
    dcols = np.matmul(w.reshape(P, K, R).transpose(0, 2, 1), dp)  # (P, R, N)
    cols6 = dcols.reshape(g.Ho, g.Wo, g.C, g.Fh, g.Fw, g.N).transpose(2, 3, 4, 0, 1, 5)
    dx = np.ascontiguousarray(col2im_batch_last(cols6, g).transpose(3, 0, 1, 2))
    return dx, dw, db


def local_naive(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: IntOrPair = 1, pad: IntOrPair = 0,
    dilation: IntOrPair = 1, fit: str = "strict",
) -> np.ndarray:
    """Reference locally connected layer by plain loops over images, filters and positions (oracle)."""
    x, w, b, g = _check_local_args(x, w, b, stride, pad, dilation, fit)
    K = w.shape[2]
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
                    out[n, k, i, j] = np.sum(window * w[i, j, k]) + (0 if b is None else b[i, j, k])
    return out
