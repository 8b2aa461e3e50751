"""Batch normalization (Ioffe & Szegedy 2015; ResNet uses it after every CONV).

Per channel d (spatial BN over N, H, W for x (N, D, H, W); per feature over N for x (N, D)),
with M = number of values per channel (N*H*W or N):

    train:  mu = (1/M) sum x,   var = (1/M) sum (x - mu)^2   (batch statistics, biased)
            running_mean <- (1 - momentum) running_mean + momentum mu
            running_var  <- (1 - momentum) running_var  + momentum var * M/(M - 1)   (unbiased)
    eval:   mu = running_mean, var = running_var
    out = gamma * (x - mu) / sqrt(var + eps) + beta

Running statistics are updated IN PLACE, exactly as ``torch.nn.BatchNorm2d``/``BatchNorm1d``.
gamma, beta, running_mean, running_var: (D,).
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError
from volnet.ops.layout import in_order, memory_order


def _rows(x: np.ndarray, order: tuple[int, ...] | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """The (D, M) channel rows of x and the axis order they follow (M's order does not matter to the
    statistics). Free for 2-D input and for 4-D memory with the channel axis outermost (batch-last or
    channel-major, what CONV returns); one copy otherwise. ``order`` forces the order of another array
    (the backward pass reads dout in the order of the cached xhat)."""
    if x.ndim == 2:
        return x.T, (1, 0)
    if order is None:
        order = memory_order(x)
        if order[0] != 1:
            order = (1, 0, 2, 3)
    return in_order(x, order).reshape(x.shape[1], -1), order


def _unrows(r: np.ndarray, shape: tuple[int, ...], order: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_rows`: (D, M) -> x's shape, in the memory order the rows came in."""
    if len(shape) == 2:
        return r.T
    return r.reshape(tuple(shape[a] for a in order)).transpose(np.argsort(order))


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row dot products sum_m a[d, m] b[d, m] without an (D, M) temporary (D small GEMVs)."""
    return np.matmul(a[:, None, :], b[:, :, None])[:, 0, 0]


def _check(x: np.ndarray) -> None:
    if x.ndim not in (2, 4):
        raise ShapeError(
            f"batchnorm: expected a 4-D (N, D, H, W) or 2-D (N, D) input, got shape {tuple(x.shape)} "
            f"({x.ndim}-D)"
        )


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    train: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, tuple]:
    """out = gamma * (x - mu) / sqrt(var + eps) + beta per channel (see module docstring).

    x: (N, D, H, W) or (N, D); gamma, beta, running_mean, running_var: (D,). In train mode mu/var are the
    batch statistics and running_mean/running_var are updated in place; in eval mode the running stats
    are used and nothing is updated. Computed on the (D, M) channel rows of x (contiguous reductions);
    a 4-D output is returned in channel-major memory, like CONV's.

    See: ``torch.nn.functional.batch_norm(x, running_mean, running_var, gamma, beta, training=train,
    momentum=momentum, eps=eps)``.
    """
    _check(x)
    D = x.shape[1]
    arrays = {"gamma": gamma, "beta": beta, "running_mean": running_mean, "running_var": running_var}
    for name, a in arrays.items():
        if a.shape != (D,):
            raise ShapeError(
                f"batchnorm: {name} must have shape ({D},) for input {tuple(x.shape)}, got {tuple(a.shape)}"
            )
    t = x.dtype.type
    x2, order = _rows(x)
    M = x2.shape[1]
    if train:
        if M < 2:
            raise ShapeError(
                f"batchnorm: training needs more than 1 value per channel, got input {tuple(x.shape)}; "
                f"use a larger batch or eval mode"
            )
        mu = x2.mean(axis=1)
        xhat = x2 - mu[:, None]
        var = _row_dot(xhat, xhat) / t(M)
        m = running_mean.dtype.type(momentum)
        running_mean *= 1 - m
        running_mean += m * mu.astype(running_mean.dtype, copy=False)
        mv = running_var.dtype.type(momentum)
        running_var *= 1 - mv
        running_var += (mv * var * t(M / (M - 1))).astype(running_var.dtype, copy=False)
    else:
        mu = running_mean.astype(x.dtype, copy=False)
        var = running_var.astype(x.dtype, copy=False)
        xhat = x2 - mu[:, None]
    inv_std = (1 / np.sqrt(var + t(eps))).astype(x.dtype, copy=False)
    xhat *= inv_std[:, None]
    out = xhat * gamma.astype(x.dtype, copy=False)[:, None]
    out += beta.astype(x.dtype, copy=False)[:, None]
    return _unrows(out, x.shape, order), (xhat, inv_std, gamma, train, x.shape, order)


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dgamma, dbeta) of :func:`batchnorm_forward`; dx like x, dgamma/dbeta (D,).

    dbeta = sum dout, dgamma = sum dout * xhat (sums over N, H, W). With s = gamma * inv_std per channel,
    sum(g) = s * dbeta and sum(g * xhat) = s * dgamma for g = dout * s, so
    train: dx = s * (dout - dbeta/M - xhat * dgamma/M) (mu and var depend on x);
    eval:  dx = s * dout (running stats are constants).
    """
    xhat, inv_std, gamma, train, shape, order = cache
    if dout.shape != shape:
        raise ShapeError(f"batchnorm backward: dout has shape {tuple(dout.shape)}, expected {tuple(shape)}")
    d2, _ = _rows(dout, order)
    dbeta = d2.sum(axis=1)
    dgamma = _row_dot(d2, xhat)
    s = (gamma.astype(dout.dtype, copy=False) * inv_std)[:, None]
    if not train:
        return _unrows(d2 * s, shape, order), dgamma, dbeta
    t = dout.dtype.type
    M = xhat.shape[1]
    dx = xhat * (dgamma / t(M))[:, None]
    np.subtract(d2, dx, out=dx)
    dx -= (dbeta / t(M))[:, None]
    dx *= s
    return _unrows(dx, shape, order), dgamma, dbeta
