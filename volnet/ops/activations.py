"""Activation functions: ReLU (the notes' default nonlinearity) and softmax.

ReLU: out = max(0, x), elementwise, any shape. Softmax over the class axis (axis 1 of (N, C) scores or
of (N, C, H, W) maps): p_j = exp(s_j - max s) / sum_k exp(s_k - max s) (shifting by the max keeps exp
from overflowing and does not change p).
"""

from __future__ import annotations

import numpy as np


def relu_forward(x: np.ndarray, inplace: bool = False) -> tuple[np.ndarray, tuple]:
    """out = max(0, x), same shape and dtype as x; ``inplace=True`` overwrites x (saves an allocation).

    See: ``torch.nn.functional.relu(x, inplace=inplace)``.
    """
    out = np.maximum(x, x.dtype.type(0), out=x if inplace else None)
    return out, (out,)


def relu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dx = dout where out > 0, else 0 (gradient 0 at x = 0, as PyTorch)."""
    (out,) = cache
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
