"""Shared pieces of the benchmarks: thread count, the machine line, Markdown tables."""

from __future__ import annotations

import os
import platform

import numpy as np


def threads() -> int:
    return int(os.environ.get("VOLNET_BENCH_THREADS", os.cpu_count() or 1))


def machine(nthreads: int | None = None) -> str:
    """One line describing the machine and library versions (no torch import: versions from metadata)."""
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
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    return (
        f"{cpu}, {os.cpu_count()} cores, {nthreads or threads()} threads; "
        f"NumPy {np.__version__} with {blas}; numba {version('numba')}; PyTorch {version('torch')}; "
        f"Python {platform.python_version()}"
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])
