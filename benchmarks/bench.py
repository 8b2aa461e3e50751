"""volnet vs PyTorch on the same work, each framework in its OWN process (``make bench``).

For every round, one worker process per framework (``worker.py``) times every case; the order of the
two frameworks alternates between rounds; the result of a case is the median over rounds of the
per-round medians. Ratio = volnet ms / PyTorch ms (below 1: volnet is faster). Why own processes:
after each BLAS call OpenBLAS's threads spin for ~0.1 s, and in a shared process they take a core
from PyTorch's (measured: PyTorch conv 4.0 ms alone, 30.3 ms beside NumPy).

``python benchmarks/bench.py [--rounds 5] [--repeat 10] [--threads 2] [--only SUBSTRING]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cases import BATCH, all_cases  # noqa: E402
from common import machine, table  # noqa: E402


def run_worker(framework: str, names: list[str], repeat: int, threads: int) -> dict[str, dict]:
    cmd = [sys.executable, str(HERE / "worker.py"), framework, *names, "--repeat", str(repeat),
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        raise SystemExit(f"{framework} worker failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["case"]: r for r in rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    args = ap.parse_args()
    cases = all_cases()
    names = [n for n in cases if args.only in n]
    load_before = os.getloadavg()[0]
    res: dict[str, dict[str, list[float]]] = {n: {"volnet": [], "torch": []} for n in names}
    first: dict[str, float] = {}
    for r in range(args.rounds):
        order = ["volnet", "torch"] if r % 2 == 0 else ["torch", "volnet"]
        for fw in order:
            got = run_worker(fw, names, args.repeat, args.threads)
            for n in names:
                res[n][fw].append(got[n]["ms"])
                if fw == "volnet" and r == 0:
                    first[n] = got[n]["first_s"]
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"Machine: {machine(args.threads)}\n")
    print(f"Own-process timing, {args.rounds} alternated rounds, median of round medians; "
          f"{args.threads} threads each; ratio = volnet / PyTorch. Load average (1 min) before the run "
          f"{load_before:.2f}, after {os.getloadavg()[0]:.2f} (the run itself adds about {args.threads}).\n")
    for kind, title in (("conv", "Convolution (float32)"), ("pool", "Pooling (float32, forward + backward)"),
                        ("train", f"Training step (batch {BATCH}, float32)")):
        rows = []
        for n in names:
            if cases[n][0] != kind:
                continue
            v, t = statistics.median(res[n]["volnet"]), statistics.median(res[n]["torch"])
            row = [n, f"{v:.2f}", f"{t:.2f}", f"{v / t:.2f}"]
            if kind == "train":
                row += [f"{BATCH / v * 1e3:.0f}", f"{BATCH / t * 1e3:.0f}"]
            rows.append(row)
        if rows:
            head = ["case", "volnet ms", "PyTorch ms", "ratio"] + (["volnet img/s", "PyTorch img/s"]
                                                                  if kind == "train" else [])
            print(f"### {title}\n")
            print(table(head, rows) + "\n")
    worst = max(first.values()) if first else 0.0
    print(f"volnet's first call of a case (kernel cache load, buffers): at most {worst:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
