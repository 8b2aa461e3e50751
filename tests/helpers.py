"""Shared test helpers: numerical gradients in float64, relative error, PyTorch oracle."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


def num_grad(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar f() with respect to x (modified in place, restored)."""
    assert x.dtype == np.float64, "numerical gradients need float64"
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
        it.iternext()
    return g


def grad_check(
    forward: Callable[[], np.ndarray], dout: np.ndarray, inputs: dict[str, np.ndarray],
    analytic: dict[str, np.ndarray], tol: float = 1e-6,
) -> None:
    """Check analytic gradients of sum(forward() * dout) against central differences for each input."""
    for name, x in inputs.items():
        num = num_grad(lambda: float(np.sum(forward() * dout)), x)
        err = rel_error(analytic[name], num)
        assert err < tol, f"gradient of {name}: relative error {err:.2e} >= {tol:.0e}"


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a| + |b|) over all entries (0 when both are 0); shapes must agree."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    denom = np.maximum(np.abs(a) + np.abs(b), 1e-8)
    return float(np.max(np.abs(a - b) / denom)) if a.size else 0.0


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|: a scale-aware relative error for comparing with an oracle."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12)) if a.size else 0.0


def torch_or_skip():
    """Import torch (the test oracle) or skip the test when it is not installed."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


def assert_filter_grads_match_torch(out, dx, dw, db, ot, xt, wt, bt, context, tol: float = 1e-4) -> None:
    """Shared assertions of the CONV and LOCAL PyTorch-agreement tests: float32 kept, forward and every
    gradient within ``tol`` (max |a - b| / max |b|); db is None exactly when there is no bias."""
    assert out.dtype == dx.dtype == dw.dtype == np.float32
    assert out.shape == tuple(ot.shape), context
    assert max_rel(out, ot.detach().numpy()) < tol, context
    assert max_rel(dx, xt.grad.numpy()) < tol, context
    assert max_rel(dw, wt.grad.numpy()) < tol, context
    if bt is None:
        assert db is None
    else:
        assert db.dtype == np.float32
        assert max_rel(db, bt.grad.numpy()) < tol, context
