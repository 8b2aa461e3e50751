"""Conv and pool layers: volnet vs torch.nn.functional in one process, same threads, medians.

Run: ``make bench`` or ``python benchmarks/bench_layers.py [--repeat 7]``.
Ratio = volnet time / PyTorch time (below 1 means volnet is faster). GFLOP/s uses the direct-conv
count 2*N*K*C*F*F*Ho*Wo per forward, twice that for backward (dx and dw) (Winograd does fewer real
flops, so its "GFLOP/s" is an effective rate). 3x3 stride-1 shapes get one row per algorithm; ``*``
marks the one ``_choose_algo`` picks. ``VOLNET_BENCH_THREADS=1`` runs both sides single-threaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_ms, setup_torch, sgemm_peak_gflops, table  # noqa: E402

from volnet.ops.conv import _choose_algo, conv_backward, conv_forward, geometry  # noqa: E402
from volnet.ops.pool import pool_backward, pool_forward  # noqa: E402
from volnet.ops.winograd import winograd_supported  # noqa: E402

# (label, N, C, H, K, F, S, P)
CONV_SHAPES = [
    ("N64 C3 32x32 K32 F7 P3", 64, 3, 32, 32, 7, 1, 3),
    ("N64 C32 32x32 K32 F3 P1", 64, 32, 32, 32, 3, 1, 1),
    ("N64 C64 16x16 K64 F3 P1", 64, 64, 16, 64, 3, 1, 1),
    ("N64 C128 8x8 K128 F3 P1", 64, 128, 8, 128, 3, 1, 1),
    ("N8 C3 227x227 K96 F11 S4 (AlexNet)", 8, 3, 227, 96, 11, 4, 0),
    ("N64 C64 16x16 K128 F1 (1x1)", 64, 64, 16, 128, 1, 1, 0),
]
# (label, N, C, H, F, S)
POOL_SHAPES = [
    ("max F2S2 N64 C32 32x32", "max", 64, 32, 32, 2, 2),
    ("max F3S2 N64 C32 33x33", "max", 64, 32, 33, 3, 2),
    ("avg F2S2 N64 C32 32x32", "avg", 64, 32, 32, 2, 2),
    ("avg F3S2 N64 C32 33x33", "avg", 64, 32, 33, 3, 2),
]


def bench_conv(torch, repeat: int, peak: float) -> list[list[str]]:
    rows: list[list[str]] = []
    rng = np.random.default_rng(0)
    for shape in CONV_SHAPES:
        rows.extend(_conv_rows(torch, rng, shape, repeat, peak))
    return rows


def _interleaved(fns, repeat: int) -> list[float]:
    """Median ms of each fn, timed in 3 interleaved rounds (load changes hit all alike); median of medians."""
    runs: list[list[float]] = [[] for _ in fns]
    for _ in range(3):
        for r, fn in zip(runs, fns):
            r.append(median_ms(fn, repeat, warmup=1))
    return [float(np.median(r)) for r in runs]


def _conv_rows(torch, rng, shape, repeat: int, peak: float) -> list[list[str]]:
    F_ = torch.nn.functional
    rows = []
    label, N, C, H, K, F, S, P = shape
    x = rng.standard_normal((N, C, H, H), dtype=np.float32)
    w = rng.standard_normal((K, C, F, F), dtype=np.float32) * np.float32(0.1)
    b = rng.standard_normal(K, dtype=np.float32)
    g = geometry(x.shape, F, S, P)
    auto = _choose_algo(g, K)
    algos = ["im2col", "winograd"] if winograd_supported(g) else [auto]
    out, _ = conv_forward(x, w, b, stride=S, pad=P)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    Ho = out.shape[2]
    flops_f = 2.0 * N * K * C * F * F * Ho * Ho

    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    dt = torch.from_numpy(dout)

    def t_fwd():
        with torch.no_grad():
            F_.conv2d(xt, wt, bt, stride=S, padding=P)

    def t_fb():
        o = F_.conv2d(xt, wt, bt, stride=S, padding=P)
        xt.grad = wt.grad = bt.grad = None
        o.backward(dt)

    for algo in algos:
        def v_fwd(algo=algo):
            conv_forward(x, w, b, stride=S, pad=P, algo=algo)

        def v_fb(algo=algo):
            _, c = conv_forward(x, w, b, stride=S, pad=P, algo=algo)
            conv_backward(dout, c)

        vf, tf, vfb, tfb = _interleaved([v_fwd, t_fwd, v_fb, t_fb], repeat)
        vb, tb = max(vfb - vf, 1e-9), max(tfb - tf, 1e-9)
        gf = flops_f / (vf * 1e-3) / 1e9
        gfb = 3 * flops_f / (vfb * 1e-3) / 1e9
        mark = "*" if algo == auto else ""
        rows.append([
            label, algo + mark, f"{vf:.2f}", f"{tf:.2f}", f"{vf / tf:.2f}", f"{vb:.2f}", f"{tb:.2f}",
            f"{vb / tb:.2f}", f"{vfb:.2f}", f"{tfb:.2f}", f"{vfb / tfb:.2f}", f"{gf:.0f} / {gfb:.0f}",
            f"{100 * gfb / peak:.0f}%",
        ])
        print(f"  {label} [{algo}]: fwd+bwd {vfb:.2f} ms vs {tfb:.2f} ms", file=sys.stderr)
    return rows


def bench_pool(torch, repeat: int) -> list[list[str]]:
    rng = np.random.default_rng(0)
    return [_pool_row(torch, rng, shape, repeat) for shape in POOL_SHAPES]


def _pool_row(torch, rng, shape, repeat: int) -> list[str]:
    F_ = torch.nn.functional
    label, mode, N, C, H, F, S = shape
    x = rng.standard_normal((N, C, H, H), dtype=np.float32)
    out, cache = pool_forward(x, size=F, stride=S, mode=mode)
    dout = rng.standard_normal(out.shape, dtype=np.float32)

    def v_fb():
        _, c = pool_forward(x, size=F, stride=S, mode=mode)
        pool_backward(dout, c)

    xt = torch.from_numpy(x).requires_grad_(True)
    dt = torch.from_numpy(dout)
    tfn = F_.max_pool2d if mode == "max" else F_.avg_pool2d

    def t_fb():
        o = tfn(xt, F, S)
        xt.grad = None
        o.backward(dt)

    def t_f():
        with torch.no_grad():
            tfn(xt, F, S)

    def v_f():
        pool_forward(x, size=F, stride=S, mode=mode)

    vf, tf, vfb, tfb = _interleaved([v_f, t_f, v_fb, t_fb], repeat)
    return [label, f"{vf:.2f}", f"{tf:.2f}", f"{vf / tf:.2f}", f"{vfb:.2f}", f"{tfb:.2f}",
            f"{vfb / tfb:.2f}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch = setup_torch()
    if torch is None:
        print("PyTorch is not installed: pip install -e '.[test]'", file=sys.stderr)
        return 2
    print(f"Machine: {machine()}")
    peak = sgemm_peak_gflops()
    print(f"NumPy sgemm peak (2048^3): {peak:.0f} GFLOP/s\n")
    print("Convolution (ms, median; ratio = volnet / PyTorch)\n")
    print(table(
        ["layer", "algo", "fwd volnet", "fwd torch", "ratio", "bwd volnet", "bwd torch", "ratio",
         "f+b volnet", "f+b torch", "ratio", "GFLOP/s f / f+b", "f+b % peak"],
        bench_conv(torch, args.repeat, peak),
    ))
    print("\nPooling (ms, median)\n")
    print(table(["layer", "fwd volnet", "fwd torch", "ratio", "f+b volnet", "f+b torch", "ratio"],
                bench_pool(torch, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
