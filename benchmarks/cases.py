"""The benchmark cases: the same work for volnet and for PyTorch, built in whichever process times it.

Each case is ``make(framework, threads) -> step`` where ``step()`` runs one unit of work (a conv forward,
a conv forward + backward, a pool forward + backward, or a full training step). Only the framework being
timed does work in its process (see ``benchmarks/bench.py``): the other one is never called there, so
neither library's idle threads take a core from the other.

Training step: forward + softmax/cross-entropy loss + backward + SGD update (lr 0.01), batch 64, float32;
neither side computes the gradient of the input images (volnet ``need_dx=False``, PyTorch's input does
not require grad). Nets: the notes' three-layer net, a LeNet-like net, a small VGG, the default net of
``volnet train`` (VGG + BN, 28x28x1), and a small CIFAR ResNet (a ``Graph`` with ``Add``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BATCH = 64
LR = 0.01

THREE_LAYER = "INPUT [32x32x3] -> CONV7-32 -> RELU -> POOL2 -> FC-100 -> RELU -> FC-10"
LENET = ("INPUT [28x28x1] -> CONV5-6 -> RELU -> POOL2 -> CONV5-16p0 -> RELU -> POOL2 -> FC-120 -> RELU "
         "-> FC-84 -> RELU -> FC-10")
VGG_SMALL = "INPUT [32x32x3] -> [[CONV3-C -> RELU]*2 -> POOL2]*3 (C=32,64,128) -> FC-256 -> RELU -> FC-10"
DEFAULT_NET = ("INPUT [28x28x1] -> [CONV3-32 -> BN -> RELU]*2 -> POOL2 -> [CONV3-64 -> BN -> RELU]*2 -> POOL2"
               " -> FC-128 -> BN -> RELU -> FC-10")

# (label, N, C, H, K, F, S, P)
CONV_SHAPES = [
    ("conv N64 C3 32x32 K32 F7", 64, 3, 32, 32, 7, 1, 3),
    ("conv N64 C32 32x32 K32 F3", 64, 32, 32, 32, 3, 1, 1),
    ("conv N64 C64 16x16 K64 F3", 64, 64, 16, 64, 3, 1, 1),
    ("conv N64 C128 8x8 K128 F3", 64, 128, 8, 128, 3, 1, 1),
    ("conv N8 C3 227x227 K96 F11 S4", 8, 3, 227, 96, 11, 4, 0),
    ("conv N64 C64 16x16 K128 F1", 64, 64, 16, 128, 1, 1, 0),
]
# (label, mode, N, C, H, F, S)
POOL_SHAPES = [
    ("pool max F2S2 N64 C32 32x32", "max", 64, 32, 32, 2, 2),
    ("pool max F3S2 N64 C32 33x33", "max", 64, 32, 33, 3, 2),
    ("pool avg F2S2 N64 C32 32x32", "avg", 64, 32, 32, 2, 2),
]
NETS = [
    ("train: notes' three-layer net", THREE_LAYER, (3, 32, 32)),
    ("train: LeNet-like", LENET, (1, 28, 28)),
    ("train: small VGG (32-64-128)", VGG_SMALL, (3, 32, 32)),
    ("train: default net (VGG + BN, 28x28x1)", DEFAULT_NET, (1, 28, 28)),
    ("train: small ResNet (2 basic blocks)", "resnet", (3, 32, 32)),
]


def _data(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


# ----------------------------------------------------------------------------- conv and pool
def conv_case(N: int, C: int, H: int, K: int, F: int, S: int, P: int, backward: bool):
    def make(framework: str) -> Callable[[], object]:
        x = _data((N, C, H, H))
        w = _data((K, C, F, F), 1) * np.float32(0.1)
        b = _data((K,), 2)
        if framework == "volnet":
            from volnet.ops.conv import conv_backward, conv_forward

            out, _ = conv_forward(x, w, b, stride=S, pad=P)
            dout = _data(out.shape, 3)
            if not backward:
                return lambda: conv_forward(x, w, b, stride=S, pad=P)

            def v_fb():
                _, c = conv_forward(x, w, b, stride=S, pad=P)
                return conv_backward(dout, c)
            return v_fb
        import torch

        F_ = torch.nn.functional
        xt, wt, bt = (torch.from_numpy(a).requires_grad_(backward) for a in (x, w, b))
        with torch.no_grad():
            dt = torch.from_numpy(_data(tuple(F_.conv2d(xt, wt, bt, stride=S, padding=P).shape), 3))
        if not backward:
            def t_f():
                with torch.no_grad():
                    return F_.conv2d(xt, wt, bt, stride=S, padding=P)
            return t_f

        def t_fb():
            xt.grad = wt.grad = bt.grad = None
            F_.conv2d(xt, wt, bt, stride=S, padding=P).backward(dt)
        return t_fb
    return make


def pool_case(mode: str, N: int, C: int, H: int, F: int, S: int):
    def make(framework: str) -> Callable[[], object]:
        x = _data((N, C, H, H))
        if framework == "volnet":
            from volnet.ops.pool import pool_backward, pool_forward

            out, _ = pool_forward(x, size=F, stride=S, mode=mode, fit="floor")
            dout = _data(out.shape, 3)

            def v_fb():
                _, c = pool_forward(x, size=F, stride=S, mode=mode, fit="floor")
                return pool_backward(dout, c)
            return v_fb
        import torch

        fn = torch.nn.functional.max_pool2d if mode == "max" else torch.nn.functional.avg_pool2d
        xt = torch.from_numpy(x).requires_grad_(True)
        with torch.no_grad():
            dt = torch.from_numpy(_data(tuple(fn(xt, F, S).shape), 3))

        def t_fb():
            xt.grad = None
            fn(xt, F, S).backward(dt)
        return t_fb
    return make


# ----------------------------------------------------------------------------- nets
def small_resnet():
    """CIFAR-style ResNet: CONV3-32 BN RELU, basic blocks (32) and (64, /2, 1x1 projection), GAP, FC-10."""
    from volnet.layers import FC, BatchNorm, Conv, Flatten, GlobalAvgPool, ReLU
    from volnet.net import Add, Graph

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
    g.build((3, 32, 32), 0)
    return g


def build_net(spec: str, shape: tuple[int, int, int]):
    from volnet import build

    net = small_resnet() if spec == "resnet" else build(spec, seed=0)
    net.forward(np.zeros((2, *shape), np.float32))  # build
    return net


def torch_mirror(torch, net):
    """The same net in torch.nn with volnet's weights copied (Sequential or Graph of known layers)."""
    from volnet.layers import FC, BatchNorm, Conv, Flatten, GlobalAvgPool, Pool, ReLU
    from volnet.net import Add, Sequential

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
            n = layer.params["w"].shape[0]
            m = nn.BatchNorm2d(n, eps=layer.eps, momentum=layer.momentum)
            m.weight.data = torch.from_numpy(layer.params["w"].copy())
            m.bias.data = torch.from_numpy(layer.params["b"].copy())
            return BN1or2(m)
        raise TypeError(f"no torch mirror for {type(layer).__name__}")

    class BN1or2(nn.Module):
        """BatchNorm2d that also takes (N, D) input (volnet's BN follows the FC layers too)."""

        def __init__(self, m) -> None:
            super().__init__()
            self.m = m

        def forward(self, x):
            if x.dim() == 2:
                return nn.functional.batch_norm(x, self.m.running_mean, self.m.running_var, self.m.weight,
                                                self.m.bias, True, self.m.momentum, self.m.eps)
            return self.m(x)

    if isinstance(net, Sequential):
        return nn.Sequential(*[one(layer) for _, layer in net.children()])

    class GraphModule(nn.Module):
        def __init__(self, g) -> None:
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


def train_case(spec: str, shape: tuple[int, int, int]):
    def make(framework: str) -> Callable[[], object]:
        net = build_net(spec, shape)
        x = _data((BATCH, *shape))
        y = np.random.default_rng(1).integers(0, 10, BATCH)
        if framework == "volnet":
            from volnet.ops.losses import softmax_loss
            from volnet.optim import SGD

            opt = SGD(net.params, lr=LR)

            def v_step():
                scores = net.forward(x, train=True)
                _, d = softmax_loss(scores, y)
                net.backward(d, need_dx=False)
                opt.step(net.grads)
            return v_step
        import torch

        tnet = torch_mirror(torch, net)
        tnet.train()
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        topt = torch.optim.SGD(tnet.parameters(), lr=LR)

        def t_step():
            topt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(tnet(xt), yt).backward()
            topt.step()
        return t_step
    return make


def vgg_small_expanded() -> str:
    body = " -> ".join(f"CONV3-{c} -> RELU -> CONV3-{c} -> RELU -> POOL2" for c in (32, 64, 128))
    return f"INPUT [32x32x3] -> {body} -> FC-256 -> RELU -> FC-10"


def all_cases() -> dict[str, tuple[str, Callable[[str], Callable[[], object]]]]:
    """case name -> (table, maker)."""
    cases: dict[str, tuple[str, Callable[[str], Callable[[], object]]]] = {}
    for label, N, C, H, K, F, S, P in CONV_SHAPES:
        cases[label + " fwd"] = ("conv", conv_case(N, C, H, K, F, S, P, backward=False))
        cases[label + " f+b"] = ("conv", conv_case(N, C, H, K, F, S, P, backward=True))
    for label, mode, N, C, H, F, S in POOL_SHAPES:
        cases[label + " f+b"] = ("pool", pool_case(mode, N, C, H, F, S))
    for label, spec, shape in NETS:
        cases[label] = ("train", train_case(vgg_small_expanded() if spec == VGG_SMALL else spec, shape))
    return cases
