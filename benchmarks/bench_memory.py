"""Memory: VGG-16 inference peak at batch 1, 224x224 (tracemalloc) against weights + the two largest
adjacent activations (the least any layer-by-layer forward can hold); the memory ledger's predictions
(:func:`volnet.memory.ledger`) against tracemalloc for bigger nets (VGG-16 and ResNet-18 at 224x224);
the notes' three CONV3-64 layers on 224x224x3; and volnet's against PyTorch's peak per training step
(peak RSS growth over three SGD steps, each framework in its own process, the nets of
``benchmarks/cases.py`` and the issue's 224x224 net at batch 4).

Run: ``make bench`` or ``python benchmarks/bench_memory.py [--quick]`` (``--quick``: no VGG-16 training
step at batch 8). ``python benchmarks/bench_memory.py --rss volnet|torch CASE`` is the per-process worker.
"""

from __future__ import annotations

import os
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


RESNET18 = "resnet18"
NOTES_THREE = "INPUT [224x224x3] -> [CONV3-64]*3"
ISSUE_224 = ("INPUT [224x224x3] -> [CONV3-64 -> RELU]*2 -> POOL2 -> [CONV3-128 -> RELU]*2 -> POOL2 -> GAP "
             "-> FC-10")


def _zoo_resnet18():
    from volnet.zoo import resnet18

    return resnet18(num_classes=1000, input_shape=(3, 224, 224))


def _vgg16():
    return build(VGG16, seed=0)


#: (label, net maker, batch, train step?): predicted vs measured
LEDGER_CASES = [
    ("VGG-16 224x224 inference", _vgg16, 1, False),
    ("VGG-16 224x224 inference", _vgg16, 8, False),
    ("VGG-16 224x224 train step (sgd)", _vgg16, 1, True),
    ("VGG-16 224x224 train step (sgd)", _vgg16, 8, True),
    ("ResNet-18 224x224 inference", _zoo_resnet18, 8, False),
    ("ResNet-18 224x224 train step (sgd)", _zoo_resnet18, 8, True),
]


def bench_ledger(quick: bool = False) -> list[list[str]]:
    """Predicted (ledger) vs measured (tracemalloc) peak bytes of big nets."""
    from volnet.memory import ledger, measure_inference, measure_train_step

    rows = []
    for label, make, batch, train in LEDGER_CASES:
        if quick and train and batch > 1:
            continue
        net = make()
        led = ledger(net, tuple(net.input_shape), batch, optimizer="sgd")
        pred = led["train_peak_bytes" if train else "inference_peak_bytes"]
        del net
        t0 = time.perf_counter()
        meas = measure_train_step(make, batch, "sgd", classes=1000) if train else \
            measure_inference(make, batch)
        dt = time.perf_counter() - t0
        rows.append([label, str(batch), f"{pred / 2**20:,.0f}", f"{meas / 2**20:,.0f}",
                     f"{(pred - meas) / meas:+.1%}", f"{dt:.0f}"])
        print("  " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def bench_notes_example() -> list[list[str]]:
    """The notes' three CONV3-64 layers on 224x224x3: ~10M activations, ~72MB per image (activations +
    gradients, float32) by the notes' arithmetic, against what volnet's ledger and tracemalloc say."""
    from volnet.memory import ledger, measure_train_step
    from volnet.summary import summary

    m = summary(NOTES_THREE, batch=1).to_dict()["memory"]
    net = build(NOTES_THREE, seed=0)
    led = ledger(net, (3, 224, 224), 1, optimizer="sgd")
    meas = measure_train_step(NOTES_THREE, 1, "sgd", classes=10)
    acts = 3 * 64 * 224 * 224
    return [[f"{acts / 1e6:.1f}M", f"{2 * acts * 4 / 2**20:.1f}", f"{m['total_bytes'] / 2**20:.1f}",
             f"{led['kept_bytes'] / 2**20:.1f}", f"{led['train_peak_bytes'] / 2**20:.1f}",
             f"{meas / 2**20:.1f}"]]


#: the training-step cases of the volnet/PyTorch RSS comparison: label -> (spec, input shape, batch)
def rss_cases() -> dict[str, tuple[str, tuple[int, int, int], int]]:
    from cases import NETS, VGG_SMALL, vgg_small_expanded

    out = {label.removeprefix("train: "): (vgg_small_expanded() if spec == VGG_SMALL else spec, shape, 64)
           for label, spec, shape in NETS}
    out["issue's 224x224 net (2x64, 2x128, GAP)"] = (ISSUE_224, (3, 224, 224), 4)
    return out


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_worker(framework: str, case: str, steps: int = 3) -> int:
    """Peak RSS growth (bytes) of ``steps`` SGD training steps, after the net, data and optimizer exist;
    the first step is counted (nothing is warmed up: both frameworks allocate their buffers then)."""
    from cases import build_net, torch_mirror

    spec, shape, batch = rss_cases()[case]
    net = build_net(spec, shape)
    x = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 10, batch)
    if framework == "volnet":
        from volnet.ops.losses import softmax_loss
        from volnet.optim import SGD

        opt = SGD(net.params, lr=0.01)

        def step() -> None:
            scores = net.forward(x, train=True)
            _, d = softmax_loss(scores.reshape(batch, -1), y)
            net.backward(d.reshape(scores.shape), need_dx=False)
            opt.step(net.grads)
            net.clear_cache()  # as volnet.train.Trainer does after each step
    else:
        import torch

        torch.set_num_threads(2)
        tnet = torch_mirror(torch, net)
        tnet.train()
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        topt = torch.optim.SGD(tnet.parameters(), lr=0.01)
        del net

        def step() -> None:
            topt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(tnet(xt), yt).backward()
            topt.step()
    import gc

    gc.collect()
    base = _rss_now()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak RSS (VmHWM) to the current RSS: building the net is not counted
    for _ in range(steps):
        step()
    peak = _vm_hwm()
    return peak - base


def _vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def bench_rss() -> list[list[str]]:
    """volnet's vs PyTorch's peak RSS growth per training step, each in its own process."""
    import subprocess

    rows = []
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    for case, (_, _, batch) in rss_cases().items():
        got = {}
        for fw in ("volnet", "torch"):
            r = subprocess.run([sys.executable, __file__, "--rss", fw, case], capture_output=True, text=True,
                               env=env, check=True)
            got[fw] = int(r.stdout.strip().splitlines()[-1])
        rows.append([case, str(batch), f"{got['volnet'] / 2**20:.1f}", f"{got['torch'] / 2**20:.1f}",
                     f"{got['volnet'] / got['torch']:.2f}"])
        print("  " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--rss":
        print(rss_worker(sys.argv[2], sys.argv[3]))
        return 0
    quick = "--quick" in sys.argv
    print(f"Machine: {machine()}\n")
    print("VGG-16 inference, batch 1, 224x224, float32 (MiB; tracemalloc peak of net.forward(x, "
          "train=False) + weights)\n")
    print(table(["weights", "largest in+out pair", "weights + pair", "peak incl. weights", "ratio",
                 "peak during forward", "caches kept", "forward ms"], [bench_memory()]))
    print("\nThe notes' example: INPUT [224x224x3] -> [CONV3-64]*3, batch 1, float32, one SGD step (MiB)\n")
    print(table(["activations", "notes: acts + grads", "summary total (notes)", "ledger: kept outputs",
                 "ledger: step peak", "measured step peak"], bench_notes_example()))
    print("\nThe memory ledger against tracemalloc (MiB; training: peak of the second SGD step, incl. "
          "weights)\n")
    print(table(["net", "batch", "predicted", "measured", "error", "s"], bench_ledger(quick)))
    print("\nPeak RSS growth of three SGD training steps (MiB), volnet vs PyTorch, each in its own "
          "process (2 threads)\n")
    print(table(["net", "batch", "volnet", "PyTorch", "volnet / PyTorch"], bench_rss()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
