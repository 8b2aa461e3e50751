"""Shared timing helpers for the benchmarks: same process, same threads, medians of repeats."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np


def threads() -> int:
    return int(os.environ.get("VOLNET_BENCH_THREADS", os.cpu_count() or 1))


_limits = None


def limit_blas() -> None:
    """Run NumPy's BLAS with :func:`threads` threads (``VOLNET_BENCH_THREADS``, default all cores)."""
    global _limits
    if _limits is None:
        try:
            from threadpoolctl import threadpool_limits

            _limits = threadpool_limits(limits=threads(), user_api="blas")
        except ImportError:
            _limits = False


def setup_torch():
    """Import torch with the same thread count as BLAS; None when torch is not installed."""
    limit_blas()
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads())
    return torch


def median_ms(fn: Callable[[], object], repeat: int = 7, warmup: int = 2, min_time: float = 0.0) -> float:
    """Median wall time of fn() in milliseconds over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < repeat or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def sgemm_peak_gflops(n: int = 2048, repeat: int = 5) -> float:
    """Measured float32 matrix-multiply rate of NumPy's BLAS (GFLOP/s, 2*n^3 flops per product)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    ms = median_ms(lambda: np.matmul(a, b, out=out), repeat=repeat)
    return 2 * n**3 / (ms * 1e-3) / 1e9


def machine() -> str:
    """One line describing the machine and library versions."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = "unknown BLAS"
    try:
        from threadpoolctl import threadpool_info

        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if info:
            blas = f"{info[0].get('internal_api')} {info[0].get('version')} ({info[0].get('architecture')})"
    except ImportError:
        pass
    torch = setup_torch()
    tv = torch.__version__ if torch is not None else "absent"
    return (
        f"{cpu}, {os.cpu_count()} cores, {threads()} threads; NumPy {np.__version__} with {blas}; "
        f"PyTorch {tv}; Python {platform.python_version()}"
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])
