"""One benchmark process: times the named cases for ONE framework and prints JSON lines.

``python benchmarks/worker.py volnet|torch CASE... --repeat R --threads T``. Thread counts are set here,
before any work: NumPy's BLAS through threadpoolctl, ``torch.set_num_threads``. The driver
(``bench.py``) starts one worker per framework and round, alternating, so neither library's spinning
worker threads ever share a process (or a time slice) with the other's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("framework", choices=["volnet", "torch"])
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds of timed runs per case at least")
    args = ap.parse_args()
    # before NumPy loads: every BLAS copy in the process (NumPy's, and SciPy's that numba imports) and
    # any OpenMP runtime start with this many threads
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.framework == "torch":
        import torch

        torch.set_num_threads(args.threads)
    from cases import all_cases

    cases = all_cases()
    for name in args.cases:
        step = cases[name][1](args.framework)
        t0 = time.perf_counter()
        step()  # first call: numba kernels load from the cache (or compile), buffers grow
        first = time.perf_counter() - t0
        for _ in range(2):
            step()
        times = []
        end = time.perf_counter() + args.min_time
        while len(times) < args.repeat or time.perf_counter() < end:
            t = time.perf_counter()
            step()
            times.append((time.perf_counter() - t) * 1e3)
        print(json.dumps({"case": name, "ms": statistics.median(times), "first_s": first, "n": len(times)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
