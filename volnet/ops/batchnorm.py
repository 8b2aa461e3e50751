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


def _axes_and_shape(x: np.ndarray, D: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if x.ndim == 4:
        return (0, 2, 3), (1, D, 1, 1)
    if x.ndim == 2:
        return (0,), (1, D)
    raise ShapeError(
        f"batchnorm: expected a 4-D (N, D, H, W) or 2-D (N, D) input, got shape {tuple(x.shape)} ({x.ndim}-D)"
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
    are used and nothing is updated.

    See: ``torch.nn.functional.batch_norm(x, running_mean, running_var, gamma, beta, training=train,
    momentum=momentum, eps=eps)``.
    """
    D = x.shape[1] if x.ndim >= 2 else 0
    axes, bshape = _axes_and_shape(x, D)
    arrays = {"gamma": gamma, "beta": beta, "running_mean": running_mean, "running_var": running_var}
    for name, a in arrays.items():
        if a.shape != (D,):
            raise ShapeError(
                f"batchnorm: {name} must have shape ({D},) for input {tuple(x.shape)}, got {tuple(a.shape)}"
            )
    t = x.dtype.type
    if train:
        M = x.size // D
        if M < 2:
            raise ShapeError(
                f"batchnorm: training needs more than 1 value per channel, got input {tuple(x.shape)}; "
                f"use a larger batch or eval mode"
            )
        mu = x.mean(axis=axes)
        xc = x - mu.reshape(bshape)
        var = np.mean(xc * xc, axis=axes)
        m = running_mean.dtype.type(momentum)
        running_mean *= 1 - m
        running_mean += m * mu.astype(running_mean.dtype, copy=False)
        mv = running_var.dtype.type(momentum)
        running_var *= 1 - mv
        running_var += (mv * var * t(M / (M - 1))).astype(running_var.dtype, copy=False)
    else:
        mu = running_mean.astype(x.dtype, copy=False)
        var = running_var.astype(x.dtype, copy=False)
        xc = x - mu.reshape(bshape)
    inv_std = (1 / np.sqrt(var + t(eps))).astype(x.dtype, copy=False)
    xhat = xc * inv_std.reshape(bshape)
    out = xhat * gamma.astype(x.dtype, copy=False).reshape(bshape)
    out += beta.astype(x.dtype, copy=False).reshape(bshape)
    return out, (xhat, inv_std, gamma, train, axes, bshape)


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dgamma, dbeta) of :func:`batchnorm_forward`; dx like x, dgamma/dbeta (D,).

    dbeta = sum dout, dgamma = sum dout * xhat (sums over N, H, W). With g = dout * gamma:
    train: dx = inv_std / M * (M g - sum g - xhat sum(g xhat)) (mu and var depend on x);
    eval:  dx = g * inv_std (running stats are constants).
    """
    xhat, inv_std, gamma, train, axes, bshape = cache
    if dout.shape != xhat.shape:
        raise ShapeError(
            f"batchnorm backward: dout has shape {tuple(dout.shape)}, expected {tuple(xhat.shape)}"
        )
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    g = dout * (gamma.astype(dout.dtype, copy=False) * inv_std).reshape(bshape)
    if not train:
        return g, dgamma, dbeta
    M = dout.size // dout.shape[1]
    t = dout.dtype.type
    mean_g = (g.sum(axis=axes) / t(M)).reshape(bshape)
    mean_gx = ((g * xhat).sum(axis=axes) / t(M)).reshape(bshape)
    dx = g - mean_g - xhat * mean_gx
    return dx, dgamma, dbeta
