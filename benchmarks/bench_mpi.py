"""Data-parallel training over MPI: images/s for 1 and 2 ranks (1 BLAS thread each) against one process
with 2 threads, the time of the gradient allreduce per step, and the ring-allreduce model for clusters.

Run: ``python benchmarks/bench_mpi.py`` (needs the ``mpi`` extra). It starts its own workers: one process
with 2 threads, one with 1 thread, and ``mpirun -np 2`` with 1 thread each, alternated over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cases import DEFAULT_NET  # noqa: E402
from common import machine, table  # noqa: E402

BATCH = 64


def worker(steps: int) -> None:
    """Time ``steps`` data-parallel train steps of the default net (global batch 64) in this rank."""
    import numpy as np

    from volnet import build
    from volnet.ops.losses import softmax_loss
    from volnet.optim import SGD
    from volnet.train.distributed import from_environment

    dist = from_environment()
    net = build(DEFAULT_NET, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    net.forward(x[:2], train=True)
    if dist is not None:
        dist.broadcast({**net.params, **net.buffers})
        part = dist.shard(BATCH)
        x, y = x[part], y[part]
    opt = SGD(net.params, lr=0.01)
    times, reduce_times = [], []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        scores = net.forward(x, train=True)
        _, d = softmax_loss(scores, y)
        net.backward(d, need_dx=False)
        t1 = time.perf_counter()
        if dist is not None:
            dist.allreduce_grads(net.grads, len(y) / BATCH)
        t2 = time.perf_counter()
        opt.step(net.grads)
        if i >= 3:
            times.append(time.perf_counter() - t0)
            reduce_times.append(t2 - t1)
    if dist is None or dist.is_root:
        grad_bytes = sum(g.nbytes for g in net.grads.values())
        print(json.dumps({"ms": 1e3 * statistics.median(times), "grad_bytes": grad_bytes,
                          "allreduce_ms": 1e3 * statistics.median(reduce_times)}), flush=True)


def run(kind: str, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    me = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(steps)]
    if kind == "mpi2":
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        mpirun = Path(sys.executable).parent / "mpirun"
        cmd = [str(mpirun) if mpirun.exists() else "mpirun", "-np", "2", "--oversubscribe"]
        cmd += (["--allow-run-as-root"] if os.geteuid() == 0 else []) + me
    else:
        env.update(OPENBLAS_NUM_THREADS=kind[-1], OMP_NUM_THREADS=kind[-1])
        cmd = me
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr[-2000:]}")
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def ring_model(params: int, compute_ms_per_image: float) -> list[list[str]]:
    """Step time and scaling efficiency of data-parallel SGD with a ring allreduce, global batch 64 per
    rank (weak scaling, as Horovod reports): t = compute(64) + 2(N-1)/N * bytes / bandwidth."""
    rows = []
    grad = params * 4
    for gbit in (1, 10):
        bw = gbit * 1e9 / 8
        for n in (2, 4, 8, 16, 64):
            comm_ms = 1e3 * 2 * (n - 1) / n * grad / bw
            comp_ms = compute_ms_per_image * BATCH
            eff = comp_ms / (comp_ms + comm_ms)
            rows.append([f"{gbit} Gbit/s", str(n), f"{grad / 2**20:.1f}", f"{comm_ms:.1f}", f"{comp_ms:.0f}",
                         f"{100 * eff:.0f}%"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.worker:
        worker(args.steps)
        return 0
    kinds = ["1proc-2", "1proc-1", "mpi2"]
    res: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for k in (kinds if r % 2 == 0 else kinds[::-1]):
            res[k].append(run(k, args.steps))
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"Machine: {machine(2)}\n")
    print(f"Default net (468,458 parameters), global batch {BATCH}, SGD; median of {args.rounds} alternated "
          f"rounds of {args.steps} steps.\n")
    base = statistics.median(r["ms"] for r in res["1proc-2"])
    rows = []
    names = {"1proc-2": "1 process, 2 BLAS threads", "1proc-1": "1 process, 1 BLAS thread",
             "mpi2": "mpirun -np 2, 1 BLAS thread each"}
    for k in kinds:
        ms = statistics.median(r["ms"] for r in res[k])
        red = statistics.median(r["allreduce_ms"] for r in res[k])
        rows.append([names[k], f"{ms:.1f}", f"{BATCH / ms * 1e3:.0f}", f"{red:.2f}" if k == "mpi2" else "-",
                     f"{base / ms:.2f}"])
    print(table(["configuration", "ms / step", "images/s", "allreduce ms / step", "speed vs 1 proc 2 thr"],
                rows) + "\n")
    one = statistics.median(r["ms"] for r in res["1proc-1"]) / BATCH
    print("Ring-allreduce model (weak scaling: 64 images per rank, per-image compute measured above at 1 "
          f"thread = {one:.2f} ms):\n")
    head = ["link", "ranks", "gradient MiB", "allreduce ms", "compute ms", "efficiency"]
    print("Default net:\n\n" + table(head, ring_model(468_458, one)) + "\n")
    print("ResNet-18 (11.7M parameters; compute per image scaled by its 1.82 GFLOP / 18.7 MFLOP of the "
          "default net):\n\n" + table(head, ring_model(11_689_512, one * 1820 / 18.7)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
