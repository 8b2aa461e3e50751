"""Inverted dropout (Srivastava et al. 2014), as in the cs231n notes.

Train: keep each unit with probability 1 - p and scale the kept ones by 1/(1 - p):
out = x * mask / (1 - p), mask ~ Bernoulli(1 - p). The expected output equals x, so test time is the
identity (no rescaling at test time). p = 0 or ``train=False``: out = x. p = 1: out = 0.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError, VolnetError


def dropout_forward(
    x: np.ndarray,
    p: float = 0.5,
    train: bool = True,
    rng: np.random.Generator | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple]:
    """out = x * mask / (1 - p) in training, x otherwise; any shape; p = probability of DROPPING a unit.

    rng: a ``numpy.random.Generator`` for the mask (default: a fresh unseeded one). mask: a bool or 0/1
    array (same shape as x or broadcastable to it) used as-is instead of a random one (for tests).

    See: ``torch.nn.functional.dropout(x, p, training=train)``.
    """
    if not 0.0 <= p <= 1.0:
        raise VolnetError(f"dropout: p is the probability of dropping a unit and must be in [0, 1], got {p}")
    if not train or (p == 0.0 and mask is None):
        return x, (None,)
    t = x.dtype.type
    if mask is None:
        if rng is None:
            rng = np.random.default_rng()
        keep = rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64) >= p
    else:
        keep = np.asarray(mask)
        try:
            np.broadcast_shapes(keep.shape, x.shape)
        except ValueError:
            raise ShapeError(
                f"dropout: mask of shape {tuple(keep.shape)} does not broadcast to the input {tuple(x.shape)}"
            ) from None
    scale = t(0.0) if p == 1.0 else t(1.0 / (1.0 - p))
    m = keep.astype(x.dtype) * scale
    return x * m, (m,)


def dropout_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dx = dout * mask / (1 - p) in training (the same scaled mask), dout otherwise."""
    (m,) = cache
    if m is None:
        return dout
    dx = dout * m
    if dx.shape != dout.shape:
        raise ShapeError(
            f"dropout backward: dout of shape {tuple(dout.shape)} does not match the mask {m.shape}"
        )
    return dx
