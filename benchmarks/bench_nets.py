"""Full training steps: volnet vs the same net in torch.nn (weights copied), one process, medians.

A training step is forward + softmax loss + backward + SGD update (lr 0.01, no momentum), batch 64,
float32, the same threads on both sides. Nets: the notes' three-layer net, LeNet-5, a small VGG-style
net (the issue's reference numbers), and a small CIFAR ResNet (two basic blocks, a ``Graph`` with ``Add``).
Also: inference peak memory of VGG-16 at batch 1, 224x224 (tracemalloc) against weights + the two
largest adjacent activations (the least any layer-by-layer forward can hold).

Run: ``make bench`` or ``python benchmarks/bench_nets.py [--repeat 15] [--skip-memory]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_ms, setup_torch, table  # noqa: E402

from volnet import spec as vspec  # noqa: E402
from volnet.layers import FC, BatchNorm, Conv, Flatten, GlobalAvgPool, Pool, ReLU  # noqa: E402
from volnet.net import Add, Graph, Sequential  # noqa: E402
from volnet.ops.losses import softmax_loss  # noqa: E402
from volnet.optim import SGD  # noqa: E402

BATCH = 64
LR = 0.01

# (name, spec or builder, input shape (C, H, W), PyTorch reference ms from the issue or None)
THREE_LAYER = "INPUT [32x32x3] -> CONV7-32 -> RELU -> POOL2 -> FC-100 -> RELU -> FC-10"
LENET5 = "INPUT [28x28x1] -> CONV5-6 -> RELU -> POOL2 -> CONV5-16p0 -> RELU -> POOL2 -> FC-120 -> RELU " \
         "-> FC-84 -> RELU -> FC-10"
VGG_SMALL = "INPUT [32x32x3] -> [[CONV3-C -> RELU]*2 -> POOL2]*3 (C=32,64,128) -> FC-256 -> RELU -> FC-10"
VGG16 = "INPUT [224x224x3] -> [[CONV3-64 -> RELU]*2 -> POOL2] -> [[CONV3-128 -> RELU]*2 -> POOL2] -> " \
        "[[CONV3-256 -> RELU]*3 -> POOL2] -> [[CONV3-512 -> RELU]*3 -> POOL2]*2 -> FC-4096 -> RELU -> " \
        "FC-4096 -> RELU -> FC-1000"


def vgg_small_spec() -> str:
    """The issue's ``[[CONV3-C -> RELU]*2 -> POOL2]*3 (C=32,64,128)`` written out (works with any parser)."""
    body = " -> ".join(f"CONV3-{c} -> RELU -> CONV3-{c} -> RELU -> POOL2" for c in (32, 64, 128))
    return f"INPUT [32x32x3] -> {body} -> FC-256 -> RELU -> FC-10"


def build_spec(text: str):
    try:
        return vspec.build(text)
    except Exception:  # noqa: BLE001  fall back to the expanded form if the parser lacks (C=...) lists
        if text == VGG_SMALL:
            return vspec.build(vgg_small_spec())
        raise


def small_resnet() -> Graph:
    """CIFAR-style ResNet: CONV3-32 BN RELU, basic blocks (32) and (64, /2, 1x1 projection), GAP, FC-10."""
    g = Graph()
    g.add("conv1", Conv(32, 3, pad=1, bias=False), "input")
    g.add("bn1", BatchNorm())
    g.add("relu1", ReLU())

    def block(name: str, inp: str, K: int, stride: int) -> str:
        g.add(f"{name}_conv1", Conv(K, 3, stride=stride, pad=1, bias=False, fit="floor"), inp)
        g.add(f"{name}_bn1", BatchNorm())
        g.add(f"{name}_relu1", ReLU())
        g.add(f"{name}_conv2", Conv(K, 3, pad=1, bias=False))
        g.add(f"{name}_bn2", BatchNorm())
        short = inp
        if stride != 1:
            g.add(f"{name}_proj", Conv(K, 1, stride=stride, bias=False, fit="floor"), inp)
            g.add(f"{name}_projbn", BatchNorm())
            short = f"{name}_projbn"
        g.add(f"{name}_add", Add(), [f"{name}_bn2", short])
        g.add(f"{name}_relu2", ReLU())
        return f"{name}_relu2"

    out = block("block1", "relu1", 32, 1)
    out = block("block2", out, 64, 2)
    g.add("gap", GlobalAvgPool(), out)
    g.add("flatten", Flatten())
    g.add("fc", FC(10))
    g.build((3, 32, 32), seed=0)
    return g


# ----------------------------------------------------------------------------- torch mirror
def torch_mirror(torch, net):
    """The same net in torch.nn with volnet's weights copied (Sequential or Graph of known layers)."""
    nn = torch.nn

    def one(layer):
        if isinstance(layer, Conv):
            w = layer.params["w"]
            m = nn.Conv2d(w.shape[1], w.shape[0], tuple(layer.F), stride=tuple(layer.stride),
                          padding=tuple(layer.pad), dilation=tuple(layer.dilation), bias=layer.bias)
            m.weight.data = torch.from_numpy(w.copy())
            if layer.bias:
                m.bias.data = torch.from_numpy(layer.params["b"].copy())
            return m
        if isinstance(layer, ReLU):
            return nn.ReLU()
        if isinstance(layer, Pool):
            if layer.mode == "max":
                return nn.MaxPool2d(tuple(layer.F), tuple(layer.stride), tuple(layer.pad))
            return nn.AvgPool2d(tuple(layer.F), tuple(layer.stride), tuple(layer.pad))
        if isinstance(layer, FC):
            w = layer.params["w"]
            m = nn.Linear(w.shape[1], w.shape[0])
            m.weight.data = torch.from_numpy(w.copy())
            m.bias.data = torch.from_numpy(layer.params["b"].copy())
            return nn.Sequential(nn.Flatten(), m)
        if isinstance(layer, Flatten):
            return nn.Flatten()
        if isinstance(layer, GlobalAvgPool):
            return nn.AdaptiveAvgPool2d(1)
        if isinstance(layer, BatchNorm):
            m = nn.BatchNorm2d(layer.params["w"].shape[0], eps=layer.eps, momentum=layer.momentum)
            m.weight.data = torch.from_numpy(layer.params["w"].copy())
            m.bias.data = torch.from_numpy(layer.params["b"].copy())
            return m
        raise TypeError(f"no torch mirror for {type(layer).__name__}")

    if isinstance(net, Sequential):
        return nn.Sequential(*[one(layer) for _, layer in net.children()])

    class GraphModule(nn.Module):
        def __init__(self, g: Graph) -> None:
            super().__init__()
            self.order = []
            self.mods = nn.ModuleDict()
            for name, layer in g.children():
                self.order.append((name, g.inputs_of(name), isinstance(layer, Add)))
                if not isinstance(layer, Add):
                    self.mods[name] = one(layer)
            self.out = g.output

        def forward(self, x):
            vals = {"input": x}
            for name, inputs, is_add in self.order:
                if is_add:
                    v = vals[inputs[0]]
                    for i in inputs[1:]:
                        v = v + vals[i]
                    vals[name] = v
                else:
                    vals[name] = self.mods[name](vals[inputs[0]])
            return vals[self.out]

    return GraphModule(net)


# ----------------------------------------------------------------------------- training steps
def bench_train(torch, repeat: int) -> list[list[str]]:
    nets = [
        ("three-layer CONV7-32 (32x32x3)", lambda: build_spec(THREE_LAYER), (3, 32, 32), 23.0),
        ("LeNet-5 (28x28x1)", lambda: build_spec(LENET5), (1, 28, 28), 2.6),
        ("small VGG C=32,64,128 (32x32x3)", lambda: build_spec(VGG_SMALL), (3, 32, 32), 56.0),
        ("small ResNet, 2 basic blocks (32x32x3)", small_resnet, (3, 32, 32), None),
    ]
    rng = np.random.default_rng(0)
    return [_train_row(torch, rng, *n, repeat) for n in nets]


def _train_row(torch, rng, label, make, shape, ref, repeat: int) -> list[str]:
    net = make()
    x = rng.standard_normal((BATCH, *shape), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    net.forward(x[:2])  # build
    opt = SGD(net.params, lr=LR)

    def v_step():
        scores = net.forward(x, train=True)
        _, d = softmax_loss(scores, y)
        net.backward(d, need_dx=False)  # as the trainer: no gradient for the images
        opt.step(net.grads)

    tnet = torch_mirror(torch, net)
    tnet.train()
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    topt = torch.optim.SGD(tnet.parameters(), lr=LR)
    lossf = torch.nn.functional.cross_entropy

    def t_step():
        topt.zero_grad(set_to_none=True)
        loss = lossf(tnet(xt), yt)
        loss.backward()
        topt.step()

    # interleave the two sides so that machine load hits both alike; medians of medians
    vs, ts = [], []
    for _ in range(3):
        vs.append(median_ms(v_step, max(3, repeat // 3), warmup=1))
        ts.append(median_ms(t_step, max(3, repeat // 3), warmup=1))
    v, t = float(np.median(vs)), float(np.median(ts))
    print(f"  {label}: {v:.2f} ms vs {t:.2f} ms", file=sys.stderr)
    return [label, f"{v:.2f}", f"{t:.2f}", "" if ref is None else f"{ref:g}", f"{v / t:.2f}",
            f"{BATCH / v * 1e3:.0f}", f"{BATCH / t * 1e3:.0f}"]


# ----------------------------------------------------------------------------- memory
def bench_memory() -> list[str]:
    """Peak traced memory of a VGG-16 inference forward at batch 1, 224x224, float32."""
    net = build_spec(VGG16)
    net.build((3, 224, 224), seed=0)
    weights = sum(p.nbytes for p in net.params.values())
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    # activation sizes along the chain (input -> each layer output); the least a forward must hold at
    # once is the weights plus the largest (input, output) pair of one layer
    sizes = [x.nbytes]
    for row in net.layer_shapes((3, 224, 224)):
        sizes.append(int(np.prod(row[3])) * 4)
    pair = max(a + b for a, b in zip(sizes[:-1], sizes[1:]))
    from volnet.ops import conv as vconv
    from volnet.ops import winograd as vwino

    vconv.clear_workspace()  # scratch buffers from earlier benchmarks would hide the forward's own
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
    # the persistent params are allocated before tracing started: add them back
    total = peak + weights
    ideal = weights + pair
    del out
    return [
        f"{weights / 2**20:.1f}", f"{pair / 2**20:.1f}", f"{ideal / 2**20:.1f}", f"{total / 2**20:.1f}",
        f"{total / ideal:.2f}", f"{peak / 2**20:.1f}", "none" if not caches else ", ".join(caches),
        f"{dt * 1e3:.0f}",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    torch = setup_torch()
    if torch is None:
        print("PyTorch is not installed: pip install -e '.[test]'", file=sys.stderr)
        return 2
    print(f"Machine: {machine()}\n")
    print(f"Training step, batch {BATCH}, float32 (ms, median; ratio = volnet / PyTorch)\n")
    print(table(["net", "volnet ms", "torch ms", "issue's torch ms", "ratio", "volnet img/s", "torch img/s"],
                bench_train(torch, args.repeat)))
    if not args.skip_memory:
        print("\nVGG-16 inference, batch 1, 224x224, float32 (MiB; tracemalloc peak of net.forward(x, "
              "train=False) + weights)\n")
        print(table(["weights", "largest in+out pair", "weights + pair", "peak incl. weights", "ratio",
                     "peak during forward", "caches kept", "forward ms"], [bench_memory()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
