"""Shared test helpers: numerical gradients in float64, relative error, PyTorch oracle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def check_vs_torch(
    forward: Callable[[], tuple[np.ndarray, Any]],
    backward: Callable[[np.ndarray, Any], dict[str, np.ndarray | None]],
    torch_fn: Callable[[dict[str, Any], Any], Any],
    inputs: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> float:
    """The PyTorch oracle of every op family: forward and every gradient against autograd.

    ``forward()`` runs our op (``(out, cache)``); a random upstream gradient ``dout`` (standard normal, in
    ``out``'s dtype, drawn from ``rng``) goes through ``backward(dout, cache)`` (``{input name: gradient}``;
    None for an input that is absent, e.g. no bias) and through ``torch_fn(tensors, cache)`` (the same
    inputs as tensors requiring grad; ``cache`` lends geometry). Asserts the dtype is kept (out and every
    gradient in the inputs' float dtype), the shapes agree, and no gradient is missing or extra. Returns
    the largest relative error (max |a - b| / max |b|) of the output and the gradients; the caller takes
    the worst over its configurations and asserts it against its tolerance.
    """
    torch = torch_or_skip()
    out, cache = forward()
    dtype = next(v.dtype for v in inputs.values() if np.issubdtype(v.dtype, np.floating))
    assert out.dtype == dtype, f"output dtype {out.dtype}, inputs {dtype}"
    dout = rng.standard_normal(out.shape).astype(out.dtype)
    grads = backward(dout, cache)
    tensors = {k: torch.tensor(v, requires_grad=bool(np.issubdtype(v.dtype, np.floating)))
               for k, v in inputs.items()}
    ot = torch_fn(tensors, cache)
    ot.backward(torch.tensor(dout))
    assert out.shape == tuple(ot.shape), f"shape {out.shape} vs torch {tuple(ot.shape)}"
    errs = [max_rel(out, ot.detach().numpy())]
    for k, g in grads.items():
        if k not in inputs:
            assert g is None, f"gradient for the absent input {k!r}"
            continue
        assert g is not None and g.dtype == dtype, f"gradient of {k}: {None if g is None else g.dtype}"
        errs.append(max_rel(g, tensors[k].grad.numpy()))
    missing = [k for k, t in tensors.items() if k not in grads and t.requires_grad]
    assert not missing, f"no gradient for {missing}"
    return max(errs)
