"""Activation functions: ReLU (the notes' default nonlinearity) and softmax.

ReLU: out = max(0, x), elementwise, any shape. Softmax over the class axis (axis 1 of (N, C) scores or
of (N, C, H, W) maps): p_j = exp(s_j - max s) / sum_k exp(s_k - max s) (shifting by the max keeps exp
from overflowing and does not change p).
"""

from __future__ import annotations

import numpy as np

from volnet import kernels
from volnet.ops.layout import memory_order


def _k_relu_backward(d, o, dx):  # pragma: no cover - compiled
    z = d.dtype.type(0)
    for i in range(d.size):
        dx[i] = d[i] if o[i] > 0 else z


_relu_bwd = kernels.jit(_k_relu_backward)


def relu_forward(x: np.ndarray, inplace: bool = False) -> tuple[np.ndarray, tuple]:
    """out = max(0, x), same shape and dtype as x; ``inplace=True`` overwrites x (saves an allocation).

    See: ``torch.nn.functional.relu(x, inplace=inplace)``.
    """
    out = np.maximum(x, x.dtype.type(0), out=x if inplace else None)
    return out, (out,)


def relu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dx = dout where out > 0, else 0 (gradient 0 at x = 0, as PyTorch)."""
    (out,) = cache
    if (_relu_bwd is not None and kernels.using("numba") and dout.shape == out.shape
            and dout.dtype == out.dtype and memory_order(dout) == memory_order(out)):
        order = memory_order(out)
        d, o = dout.transpose(order), out.transpose(order)
        if d.flags.c_contiguous and o.flags.c_contiguous:  # one compiled pass, no boolean temporary
            dx = np.empty_like(d)
            _relu_bwd(d.reshape(-1), o.reshape(-1), dx.reshape(-1))
            return dx.transpose(np.argsort(order))
    return np.multiply(dout, out > 0)


def softmax(scores: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax along ``axis``: exp(s - max s) / sum exp(s - max s).

    scores: (N, C) (or (N, C, H, W) with axis=1); returns probabilities of the same shape and dtype.

    See: ``torch.softmax(scores, dim=axis)``.
    """
    e = scores - scores.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def softmax_forward(scores: np.ndarray, axis: int = 1) -> tuple[np.ndarray, tuple]:
    """p = softmax(scores, axis) and the cache for :func:`softmax_backward`."""
    p = softmax(scores, axis)
    return p, (p, axis)


def softmax_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Jacobian-vector product of softmax: ds_j = p_j (dout_j - sum_k dout_k p_k)."""
    p, axis = cache
    return p * (dout - (dout * p).sum(axis=axis, keepdims=True))
