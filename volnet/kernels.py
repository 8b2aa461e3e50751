"""Which kernels run: compiled (numba) or pure NumPy, and one thread pool at a time.

volnet's math is NumPy. A few passes that NumPy does slowly (Winograd tile transforms, the pooling
windows) also exist as numba kernels, compiled on first use and cached on disk (``cache=True``: a second
process only loads them). Every compiled kernel has a NumPy twin that computes the same thing; the
tests check that both agree with each other and with PyTorch.

- ``KERNELS`` is ``"numba"`` when numba imports and ``VOLNET_KERNELS`` is not ``"numpy"``, else
  ``"numpy"``. ``VOLNET_KERNELS=numpy`` forces the NumPy path (read at import).
- :func:`use` switches at run time (tests use it to run both paths in one process).

Threads: the compiled kernels are serial (no ``parallel=True``). BLAS (OpenBLAS) keeps its own pool for
the GEMMs; a second pool (numba's OpenMP/TBB workers) on a 2-core machine fights it: OpenBLAS workers
spin ~0.1 s after each GEMM, and a numba worker started in that window gets no core (measured 24.8 ms
vs 17.6 ms NumPy-only for im2col + GEMM). Serial kernels between BLAS calls leave one pool in charge.

>>> KERNELS in ("numba", "numpy")
True
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["KERNELS", "available", "jit", "use", "using"]

try:  # numba is a dependency of the default install; the NumPy path serves where it cannot import
    import numba as _numba
except Exception:  # noqa: BLE001  (ImportError, or a numba/llvmlite build that fails to load)
    _numba = None


def available() -> bool:
    """True when numba imported."""
    return _numba is not None


KERNELS: str = "numba" if available() and os.environ.get("VOLNET_KERNELS", "").lower() != "numpy" else "numpy"


def use(kind: str) -> None:
    """Select ``"numba"`` or ``"numpy"`` kernels for the rest of the process."""
    global KERNELS
    if kind not in ("numba", "numpy"):
        raise ValueError(f"kernels: kind must be 'numba' or 'numpy', got {kind!r}")
    if kind == "numba" and not available():
        raise ValueError("kernels: numba is not installed (pip install numba), use 'numpy'")
    KERNELS = kind


def using(kind: str) -> bool:
    """True when ``kind`` is the active kernel family."""
    return KERNELS == kind


@contextmanager
def selected(kind: str) -> Iterator[None]:
    """Run a block with ``kind`` kernels, then restore the previous choice."""
    old = KERNELS
    use(kind)
    try:
        yield
    finally:
        use(old)


def jit(fn: Callable[..., Any], reassoc: bool = False) -> Callable[..., Any] | None:
    """``numba.njit(cache=True, nogil=True)`` of fn, or None when numba is absent (callers then use NumPy).

    ``reassoc=True`` lets the compiler reorder a sum's additions so it can vectorise the reduction (the
    order is fixed by the compiled code, so results stay deterministic from run to run).
    """
    if _numba is None:
        return None
    fastmath = {"reassoc"} if reassoc else False
    return _numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=fastmath)(fn)


def inline(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A small helper compiled into its callers (``inline="always"``); fn itself without numba."""
    if _numba is None:
        return fn
    return _numba.njit(inline="always", cache=True)(fn)
