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

Two kernel paths compute the same thing (:mod:`volnet.kernels`): with numba, one compiled pass per channel
row computes the statistics (float64 sums), one writes ``out = x * s + (beta - mu * s)`` with
``s = gamma / sqrt(var + eps)``, and the cache keeps x itself (already alive as the previous layer's
output) instead of a normalised copy; backward is one pass for the two sums and one for dx. The NumPy path
keeps ``xhat`` and uses NumPy row operations (about six passes each way).

Synchronised BN (data-parallel training, :mod:`volnet.train.distributed`): with ``sync`` (an object with
``sum(vector) -> vector`` over the ranks and ``weight`` = n_rank / B, this rank's share of the global
batch) the statistics are those of the global batch: per channel the ranks sum S1 = sum x,
S2 = sum x^2 and M, so mu = S1/M, var = S2/M - mu^2 (in float64); backward sums w_r * dbeta_r and
w_r * dgamma_r the same way and gives dx_r = s * (dout_r - (dbeta/M + xhat * dgamma/M) / w_r), the
gradient of the global mean loss divided by w_r (the trainer's gradient sum weighs every rank by w_r).
dgamma and dbeta stay this rank's own sums, which that weighted sum adds up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volnet import kernels
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


def _k_stats(x2, mu, var):  # pragma: no cover - compiled
    D, M = x2.shape
    for d in range(D):
        acc = 0.0
        for m in range(M):
            acc += x2[d, m]
        mean = acc / M
        acc2 = 0.0
        for m in range(M):
            t = x2[d, m] - mean
            acc2 += t * t
        mu[d] = mean
        var[d] = acc2 / M


def _k_affine(x2, scale, shift, out):  # pragma: no cover - compiled
    D, M = x2.shape
    for d in range(D):
        s = scale[d]
        t = shift[d]
        for m in range(M):
            out[d, m] = x2[d, m] * s + t


def _k_backward_sums(d2, x2, mu, dbeta, dxmu):  # pragma: no cover - compiled
    D, M = d2.shape
    for d in range(D):
        a = 0.0
        b = 0.0
        m0 = mu[d]
        for m in range(M):
            g = d2[d, m]
            a += g
            b += g * (x2[d, m] - m0)
        dbeta[d] = a
        dxmu[d] = b


def _k_backward_dx(d2, x2, mu, s, c1, c2, dx):  # pragma: no cover - compiled
    D, M = d2.shape
    for d in range(D):
        sd, a, b, m0 = s[d], c1[d], c2[d], mu[d]
        for m in range(M):
            dx[d, m] = sd * d2[d, m] - a - (x2[d, m] - m0) * b


_K = {name: kernels.jit(fn, reassoc=name in ("stats", "sums"))
      for name, fn in (("stats", _k_stats), ("affine", _k_affine), ("sums", _k_backward_sums),
                       ("dx", _k_backward_dx))}


def _compiled() -> bool:
    return _K["stats"] is not None and kernels.using("numba")


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
    sync: Any = None,
) -> tuple[np.ndarray, tuple]:
    """out = gamma * (x - mu) / sqrt(var + eps) + beta per channel (see module docstring).

    x: (N, D, H, W) or (N, D); gamma, beta, running_mean, running_var: (D,). In train mode mu/var are the
    batch statistics and running_mean/running_var are updated in place; in eval mode the running stats
    are used and nothing is updated. Computed on the (D, M) channel rows of x (contiguous reductions);
    a 4-D output is returned in channel-major memory, like CONV's. ``sync``: statistics over all ranks
    of a data-parallel job (module docstring).

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
    if train and sync is None and M < 2:  # (synchronised: the global M, checked in _global_stats)
        raise ShapeError(
            f"batchnorm: training needs more than 1 value per channel, got input {tuple(x.shape)}; "
            f"use a larger batch or eval mode"
        )
    sync = sync if train else None
    if _compiled() and np.issubdtype(x.dtype, np.floating):
        return _forward_compiled(x, x2, order, gamma, beta, running_mean, running_var, train, momentum, eps,
                                 sync)
    if train:
        mu = x2.mean(axis=1)
        xhat = x2 - mu[:, None]
        var = _row_dot(xhat, xhat) / t(M)
        if sync is not None:
            mu64, var64, M = _global_stats(sync, mu.astype(np.float64), var.astype(np.float64), M)
            mu, var = mu64.astype(x.dtype), var64.astype(x.dtype)
            xhat = x2 - mu[:, None]
        _update_running(running_mean, running_var, mu, var, momentum, M)
    else:
        mu = running_mean.astype(x.dtype, copy=False)
        var = running_var.astype(x.dtype, copy=False)
        xhat = x2 - mu[:, None]
    inv_std = (1 / np.sqrt(var + t(eps))).astype(x.dtype, copy=False)
    xhat *= inv_std[:, None]
    out = xhat * gamma.astype(x.dtype, copy=False)[:, None]
    out += beta.astype(x.dtype, copy=False)[:, None]
    return _unrows(out, x.shape, order), ("numpy", xhat, inv_std, gamma, train, sync, M, x.shape, order)


def _global_stats(sync: Any, mu: np.ndarray, var: np.ndarray, M: int) -> tuple[np.ndarray, np.ndarray, int]:
    """This rank's (mu, var) over M values per channel -> the global batch's, and the global M."""
    D = mu.shape[0]
    tot = sync.sum(np.concatenate([M * mu, M * (var + mu * mu), [float(M)]]))
    Mg = int(round(tot[-1]))
    if Mg < 2:
        raise ShapeError(f"batchnorm: training needs more than 1 value per channel, got {Mg} over all ranks")
    mu_g = tot[:D] / Mg
    return mu_g, np.maximum(tot[D:2 * D] / Mg - mu_g * mu_g, 0.0), Mg


def _global_sums(sync: Any, dbeta: np.ndarray, dgamma: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """sum over ranks of w_r * (dbeta_r, dgamma_r), and this rank's w_r."""
    w = float(sync.weight)
    tot = sync.sum(np.concatenate([w * dbeta, w * dgamma]))
    return tot[:dbeta.shape[0]], tot[dbeta.shape[0]:], w


def _update_running(running_mean, running_var, mu, var, momentum: float, M: int) -> None:
    m = running_mean.dtype.type(momentum)
    running_mean *= 1 - m
    running_mean += m * mu.astype(running_mean.dtype, copy=False)
    mv = running_var.dtype.type(momentum)
    running_var *= 1 - mv
    running_var += (mv * var * (M / (M - 1))).astype(running_var.dtype, copy=False)


def _forward_compiled(x, x2, order, gamma, beta, running_mean, running_var, train, momentum, eps, sync):
    """The numba path of :func:`batchnorm_forward`: statistics in float64, one affine pass."""
    M = x2.shape[1]
    D = x2.shape[0]
    if train:
        mu64, var64 = np.empty(D), np.empty(D)
        _K["stats"](x2, mu64, var64)
        if sync is not None:
            mu64, var64, M = _global_stats(sync, mu64, var64, M)
        _update_running(running_mean, running_var, mu64, var64, momentum, M)
    else:
        mu64, var64 = running_mean.astype(np.float64), running_var.astype(np.float64)
    inv64 = 1 / np.sqrt(var64 + eps)
    scale64 = gamma.astype(np.float64) * inv64
    scale = scale64.astype(x.dtype)
    shift = (beta.astype(np.float64) - mu64 * scale64).astype(x.dtype)
    out2 = np.empty_like(x2)
    _K["affine"](x2, scale, shift, out2)
    cache = ("compiled", x2, mu64.astype(x.dtype), inv64.astype(x.dtype), gamma, train, sync, M, x.shape,
             order)
    return _unrows(out2, x.shape, order), cache


def _backward_compiled(dout, cache):
    _, x2, mu, inv_std, gamma, train, sync, M, shape, order = cache
    d2, _ = _rows(dout, order)
    d2 = d2.astype(x2.dtype, copy=False)
    D = x2.shape[0]
    dbeta64, dxmu64 = np.empty(D), np.empty(D)
    _K["sums"](d2, x2, mu, dbeta64, dxmu64)
    inv64 = inv_std.astype(np.float64)
    dgamma64 = dxmu64 * inv64  # sum dout * xhat
    s64 = gamma.astype(np.float64) * inv64
    dt = dout.dtype
    if train:
        sb, sg, w = (dbeta64, dgamma64, 1.0) if sync is None else _global_sums(sync, dbeta64, dgamma64)
        c1, c2 = s64 * sb / (M * w), s64 * inv64 * sg / (M * w)
    else:
        c1, c2 = np.zeros(D), np.zeros(D)
    dx2 = np.empty_like(d2)
    _K["dx"](d2, x2, mu, s64.astype(x2.dtype), c1.astype(x2.dtype), c2.astype(x2.dtype), dx2)
    return _unrows(dx2, shape, order), dgamma64.astype(dt), dbeta64.astype(dt)


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dgamma, dbeta) of :func:`batchnorm_forward`; dx like x, dgamma/dbeta (D,).

    dbeta = sum dout, dgamma = sum dout * xhat (sums over N, H, W). With s = gamma * inv_std per channel,
    sum(g) = s * dbeta and sum(g * xhat) = s * dgamma for g = dout * s, so
    train: dx = s * (dout - dbeta/M - xhat * dgamma/M) (mu and var depend on x);
    eval:  dx = s * dout (running stats are constants).
    """
    shape = cache[-2]
    if dout.shape != shape:
        raise ShapeError(f"batchnorm backward: dout has shape {tuple(dout.shape)}, expected {tuple(shape)}")
    if cache[0] == "compiled":
        return _backward_compiled(dout, cache)
    _, xhat, inv_std, gamma, train, sync, M, shape, order = cache
    d2, _ = _rows(dout, order)
    dbeta = d2.sum(axis=1)
    dgamma = _row_dot(d2, xhat)
    s = (gamma.astype(dout.dtype, copy=False) * inv_std)[:, None]
    if not train:
        return _unrows(d2 * s, shape, order), dgamma, dbeta
    sb, sg, w = (dbeta, dgamma, 1.0) if sync is None else _global_sums(sync, dbeta.astype(np.float64),
                                                                        dgamma.astype(np.float64))
    dx = xhat * (sg / (M * w)).astype(dout.dtype)[:, None]
    np.subtract(d2, dx, out=dx)
    dx -= (sb / (M * w)).astype(dout.dtype)[:, None]
    dx *= s
    return _unrows(dx, shape, order), dgamma, dbeta
