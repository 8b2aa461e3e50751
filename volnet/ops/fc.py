"""Fully-connected layer of the notes: every neuron sees every activation of the previous volume.

out = x_flat w^T + b, with x_flat the input volume flattened in (D, H, W) = PyTorch's (C, H, W) order.
Shapes: x (N, D, H, W) or any (N, ...) with D*H*W = in features; w (out, in) as ``torch.nn.Linear``;
b (out,); out (N, out). An FC layer is a CONV layer with F = W (``volnet.convert``).
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError
from volnet.ops.layout import BATCH_LAST, memory_order


def fc_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """out (N, out) = x.reshape(N, -1) @ w.T + b.

    x: (N, ...) any shape, flattened in C, H, W order to (N, in); w: (out, in); b: (out,).

    >>> fc_forward(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), np.zeros(4, np.float32))[0]
    array([[3., 3., 3., 3.],
           [3., 3., 3., 3.]], dtype=float32)

    See: ``torch.nn.functional.linear(x.flatten(1), w, b)``.
    """
    if x.ndim < 1:
        raise ShapeError(f"fc: expected an (N, ...) input, got a scalar of shape {tuple(x.shape)}")
    if w.ndim != 2:
        raise ShapeError(f"fc: weights must be 2-D (out, in), got shape {tuple(w.shape)}")
    N = x.shape[0]
    batch_last = x.ndim == 4 and N > 1 and memory_order(x) == BATCH_LAST
    # a batch-last volume (what CONV/POOL return) is read as x_flat^T (in, N) without a copy
    xf = x.transpose(1, 2, 3, 0).reshape(-1, N).T if batch_last else x.reshape(N, -1)
    if xf.shape[1] != w.shape[1]:
        raise ShapeError(
            f"fc: input {tuple(x.shape)} flattens to {xf.shape[1]} features per sample but w has shape "
            f"{tuple(w.shape)} (out, in) expecting {w.shape[1]}; build the weights for in={xf.shape[1]}"
        )
    if b.shape != (w.shape[0],):
        raise ShapeError(
            f"fc: bias must have shape ({w.shape[0]},) to match w {tuple(w.shape)}, got {tuple(b.shape)}"
        )
    out = np.ascontiguousarray((w @ xf.T).T) if batch_last else xf @ w.T
    out += b
    return out, (x.shape, xf, w)


def fc_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`fc_forward`: dx = dout w (in x's shape), dw = dout^T x_flat, db = sum_N dout.

    dout: (N, out); returns dx (N, ...) as x, dw (out, in), db (out,).
    """
    x_shape, xf, w = cache
    if dout.shape != (xf.shape[0], w.shape[0]):
        expected = (xf.shape[0], w.shape[0])
        raise ShapeError(f"fc backward: dout has shape {tuple(dout.shape)}, expected {expected}")
    if len(x_shape) == 4 and xf.flags.f_contiguous and not xf.flags.c_contiguous:  # batch-last x
        N, C, H, W = x_shape
        dx = (w.T @ dout.T).reshape(C, H, W, N).transpose(3, 0, 1, 2)  # batch-last dx, no copy
    else:
        dx = (dout @ w).reshape(x_shape)
    dw = dout.T @ xf
    db = dout.sum(axis=0)
    return dx, dw, db
