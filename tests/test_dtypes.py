"""float32 stays float32 through a whole training step: activations, gradients, parameters, optimizer state.

An accidental float64 (``np.zeros`` without dtype, a float64 scalar times a float32 array) doubles memory
traffic and silently changes results; these tests record the dtype of every array that flows through
every layer in forward and backward.
"""

from __future__ import annotations

import numpy as np
import pytest

from volnet.layers import FC, BatchNorm, Conv, Pool, ReLU
from volnet.net import Add, Graph, Sequential
from volnet.ops.losses import softmax_loss
from volnet.optim import SGD, Adam


def _small_net() -> Sequential:
    # conv1: im2col (C=3); conv2: Winograd (3x3/1, C = K = 64, forced below); conv3: stride 2 im2col
    return Sequential([
        Conv(64, 3, pad=1), ReLU(), Conv(64, 3, pad=1), BatchNorm(), ReLU(), Pool(2),
        Conv(16, 3, stride=2, pad=1, fit="floor"), ReLU(), Pool(2, mode="avg"), FC(20), ReLU(), FC(10),
    ])


def _small_graph() -> Graph:
    g = Graph()
    g.add("conv1", Conv(8, 3, pad=1), "input")
    g.add("relu1", ReLU())
    g.add("conv2", Conv(8, 3, pad=1))
    g.add("add", Add(), ["conv2", "relu1"])
    g.add("pool", Pool(2))
    g.add("fc", FC(10))
    return g


def _record(net) -> list[tuple[str, str, np.dtype]]:
    """Wrap every leaf layer's forward/backward to record the dtypes of what goes in and out."""
    seen: list[tuple[str, str, np.dtype]] = []

    def dtypes(v):
        if isinstance(v, np.ndarray):
            return [v.dtype]
        if isinstance(v, (list, tuple)):
            return [d for a in v for d in dtypes(a)]
        return []

    for name, layer in net.named_layers():
        f, b = layer.forward, layer.backward

        def fwd(x, train=True, f=f, name=name):
            out = f(x, train)
            seen.extend((name, "forward", d) for d in dtypes(x) + dtypes(out))
            return out

        def bwd(d, b=b, name=name):
            dx = b(d)
            seen.extend((name, "backward", t) for t in dtypes(d) + dtypes(dx))
            return dx

        layer.forward, layer.backward = fwd, bwd
    return seen


@pytest.mark.parametrize("make", [_small_net, _small_graph], ids=["sequential", "graph"])
@pytest.mark.parametrize("opt_cls", [SGD, Adam], ids=["sgd", "adam"])
def test_training_step_stays_float32(make, opt_cls, monkeypatch):
    import volnet.ops.conv as conv

    monkeypatch.setattr(conv, "WINOGRAD_MIN_GEMM", 0)  # small shapes take the Winograd path too
    net = make()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 4)
    net.build((3, 8, 8), 0)
    assert all(p.dtype == np.float32 for p in net.params.values())
    seen = _record(net)
    if make is _small_net:
        net.forward(x, train=True)
        assert net["conv2"].cache.algo == "winograd"
    opt = opt_cls(net.params, lr=1e-2)
    for _ in range(2):
        scores = net.forward(x, train=True)
        assert scores.dtype == np.float32
        loss, dscores = softmax_loss(scores, y)
        assert dscores.dtype == np.float32 and np.isfinite(loss)
        dx = net.backward(dscores)
        assert dx.dtype == np.float32
        grads = net.grads
        assert set(grads) == set(net.params)
        bad = {k: g.dtype for k, g in grads.items() if g.dtype != np.float32}
        assert not bad, f"float64 gradients: {bad}"
        opt.step(grads)
    bad = {k: p.dtype for k, p in net.params.items() if p.dtype != np.float32}
    assert not bad, f"parameters changed dtype: {bad}"
    for k, st in opt.state.items():
        for slot, arr in st.items():
            assert arr.dtype == np.float32, f"optimizer state {k}.{slot} is {arr.dtype}"
    wrong = sorted({(n, where, str(d)) for n, where, d in seen if d != np.float32})
    assert not wrong, f"non-float32 arrays flowed through layers: {wrong}"
    buffers = getattr(net, "buffers", {})
    assert all(b.dtype == np.float32 for b in buffers.values())
    out = net.forward(x, train=False)  # inference keeps float32 too
    assert out.dtype == np.float32


def test_ops_keep_float32_with_python_scalars():
    """The fast kernels used by a step never upcast (NEP 50 pitfalls: float64 scalars, default dtypes)."""
    from volnet.ops.conv import conv_backward, conv_forward
    from volnet.ops.pool import pool_backward, pool_forward

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 6, 6), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    b = rng.standard_normal(64, dtype=np.float32)
    for algo in ("im2col", "winograd"):
        out, c = conv_forward(x, w, b, pad=1, algo=algo)
        grads = conv_backward(np.ones_like(out), c)
        assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    for mode in ("max", "avg", "l2"):
        out, c = pool_forward(x, 3, 2, mode=mode, fit="floor")
        assert out.dtype == np.float32 and pool_backward(np.ones_like(out), c).dtype == np.float32
