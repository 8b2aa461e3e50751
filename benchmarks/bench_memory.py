"""Memory: VGG-16 inference peak at batch 1, 224x224 (tracemalloc) against weights + the two largest
adjacent activations (the least any layer-by-layer forward can hold).

Run: ``make bench`` or ``python benchmarks/bench_memory.py``.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

from volnet import build  # noqa: E402
from volnet.ops import conv as vconv  # noqa: E402
from volnet.ops import winograd as vwino  # noqa: E402

VGG16 = "INPUT [224x224x3] -> [[CONV3-64 -> RELU]*2 -> POOL2] -> [[CONV3-128 -> RELU]*2 -> POOL2] -> " \
        "[[CONV3-256 -> RELU]*3 -> POOL2] -> [[CONV3-512 -> RELU]*3 -> POOL2]*2 -> FC-4096 -> RELU -> " \
        "FC-4096 -> RELU -> FC-1000"


def bench_memory() -> list[str]:
    """Peak traced memory of a VGG-16 inference forward at batch 1, 224x224, float32."""
    net = build(VGG16, seed=0)
    weights = sum(p.nbytes for p in net.params.values())
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    sizes = [x.nbytes]
    for row in net.layer_shapes((3, 224, 224)):
        sizes.append(int(np.prod(row[3])) * 4)
    pair = max(a + b for a, b in zip(sizes[:-1], sizes[1:]))
    vconv.clear_workspace()  # scratch buffers from earlier work would hide the forward's own
    vwino.clear_workspace()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = net.forward(x, train=False)
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    caches = [name for name, layer in net.named_layers() if getattr(layer, "cache", None) is not None]
    total = peak + weights  # the parameters were allocated before tracing started
    ideal = weights + pair
    del out
    return [
        f"{weights / 2**20:.1f}", f"{pair / 2**20:.1f}", f"{ideal / 2**20:.1f}", f"{total / 2**20:.1f}",
        f"{total / ideal:.2f}", f"{peak / 2**20:.1f}", "none" if not caches else ", ".join(caches),
        f"{dt * 1e3:.0f}",
    ]


def main() -> int:
    print(f"Machine: {machine()}\n")
    print("VGG-16 inference, batch 1, 224x224, float32 (MiB; tracemalloc peak of net.forward(x, "
          "train=False) + weights)\n")
    print(table(["weights", "largest in+out pair", "weights + pair", "peak incl. weights", "ratio",
                 "peak during forward", "caches kept", "forward ms"], [bench_memory()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
