"""Memory layouts of 4-D activations: which axis order an (N, C, H, W) array really has in memory.

Arrays are always *indexed* NCHW (as PyTorch), but the convolutions keep their results in
**batch-last** memory, (C, H, W, N): the GEMM ``W_row @ X_col`` with columns ordered (Ho, Wo, N) gives
(K, Ho, Wo, N) directly, and Winograd's tile transforms then run over N contiguous images (long vectors).
A conv returns ``out.transpose(3, 0, 1, 2)``, an (N, K, Ho, Wo) *view*; the next layer reads it in
that order for free. Elementwise NumPy passes keep a layout (``order="K"``); batch norm and pooling
allocate their results in their input's layout (:func:`empty_like_layout`). Code must not assume
C-contiguous activations: use ``reshape`` (which copies when it must), never ``.view`` on them.

>>> x = np.zeros((2, 3, 4, 5), dtype=np.float32)
>>> memory_order(x), memory_order(batch_last(x).transpose(3, 0, 1, 2))
((0, 1, 2, 3), (1, 2, 3, 0))
"""

from __future__ import annotations

import numpy as np

from volnet import kernels

__all__ = ["BATCH_LAST", "batch_last", "empty_in_order", "empty_like_layout", "in_order", "memory_order"]

#: the axis order (of N, C, H, W) of batch-last memory
BATCH_LAST = (1, 2, 3, 0)


def memory_order(x: np.ndarray) -> tuple[int, ...]:
    """Axes of x from the slowest-varying to the fastest in memory (C order: (0, 1, ..., ndim-1)).

    Axes of length 1 keep their place (their stride is irrelevant); ties keep the index order.
    """
    keyed = [(-abs(s) if n > 1 else None, i) for i, (s, n) in enumerate(zip(x.strides, x.shape))]
    movable = sorted((k, i) for k, i in keyed if k is not None)
    it = iter(i for _, i in movable)
    return tuple(next(it) if k is not None else i for k, i in keyed)


def empty_in_order(shape: tuple[int, ...], order: tuple[int, ...], dtype: np.dtype | type,
                   fill: float | None = None) -> np.ndarray:
    """A new array of ``shape`` whose axes lie in memory in ``order`` (filled with ``fill``)."""
    mem = np.empty(tuple(shape[a] for a in order), dtype=dtype)
    if fill is not None:
        mem.fill(fill)
    return mem.transpose(np.argsort(order))


def empty_like_layout(shape: tuple[int, ...], like: np.ndarray, dtype: np.dtype | type | None = None,
                      fill: float | None = None) -> np.ndarray:
    """A new array of ``shape`` laid out in memory in ``like``'s axis order (filled with ``fill``)."""
    order = memory_order(like) if like.ndim == len(shape) else tuple(range(len(shape)))
    return empty_in_order(shape, order, like.dtype if dtype is None else dtype, fill)


def in_order(x: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """``x.transpose(order)`` as a C-contiguous array: a view when x lies that way, else one fast copy."""
    t = x.transpose(order)
    if t.flags.c_contiguous:
        return t
    if tuple(order) == BATCH_LAST:
        return batch_last(x)
    return np.ascontiguousarray(t)


def _k_to_batch_last(x, out):  # pragma: no cover - compiled
    N, C, H, W = x.shape
    for c in range(C):
        for h in range(H):
            for n in range(N):
                for w in range(W):
                    out[c, h, w, n] = x[n, c, h, w]


_kernel = kernels.jit(_k_to_batch_last)


def batch_last(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x (N, C, H, W) as a C-contiguous (C, H, W, N) array: a view when x already lies that way.

    Otherwise one transposing copy (compiled; the NumPy path copies blocks of 8 images, measured 60x
    faster than one ``np.ascontiguousarray`` of the transposed view, which strides through every image
    for each element). With ``out`` (a (C, H, W, N) array, any strides) the values are written there.
    """
    t = x.transpose(1, 2, 3, 0)
    if out is None:
        if t.flags.c_contiguous:
            return t
        out = np.empty(t.shape, dtype=x.dtype)
    if memory_order(x) == BATCH_LAST:
        out[...] = t
    elif _kernel is not None and kernels.using("numba") and x.dtype == out.dtype:
        _kernel(x, out)
    else:
        for n0 in range(0, x.shape[0], 8):
            out[..., n0:n0 + 8] = t[..., n0:n0 + 8]
    return out
