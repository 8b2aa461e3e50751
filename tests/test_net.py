"""Containers: Sequential and Graph (residual Add, channel Concat), nesting, gradients, PyTorch agreement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import max_rel, num_grad, rel_error, torch_or_skip
from volnet.errors import ShapeError, VolnetError
from volnet.layers import FC, LRN, BatchNorm, Conv, Dropout, Flatten, GlobalAvgPool, Pool, ReLU
from volnet.net import Add, Concat, Container, Graph, Sequential, layer_from_config, layer_to_config


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _net_grad_check(net: Container, x: np.ndarray, tol: float = 1e-6) -> None:
    """float64 check of d sum(net(x) * dout) / d(x and every param) against central differences."""
    net.astype(np.float64)
    x = x.astype(np.float64)
    out = net.forward(x, train=True)
    dout = _rng(7).standard_normal(out.shape)
    dx = net.backward(dout)
    grads = net.grads
    assert set(grads) == set(net.params)

    def f() -> float:
        return float(np.sum(net.forward(x, train=True) * dout))

    assert rel_error(dx, num_grad(f, x)) < tol, "dx"
    for name, p in net.params.items():
        err = rel_error(grads[name], num_grad(f, p))
        assert err < tol, f"{name}: relative error {err:.2e}"


def _cnn() -> Sequential:
    return Sequential([Conv(3, 3, pad=1), ReLU(), Pool(2), FC(4)])


# --------------------------------------------------------------------------- Sequential


def test_sequential_names_spec_and_shapes() -> None:
    net = Sequential([Conv(4, 3, pad=1), ReLU(), Conv(4, 3, pad=1), ReLU(), Pool(2), FC(10)],
                     input_shape=(3, 8, 8))
    assert [n for n, _ in net.named_layers()] == ["conv1", "relu1", "conv2", "relu2", "pool1", "fc1"]
    assert net.spec() == "INPUT [8x8x3] -> CONV3-4 -> RELU -> CONV3-4 -> RELU -> POOL2 -> FC-10"
    assert sorted(net.params) == ["conv1.b", "conv1.w", "conv2.b", "conv2.w", "fc1.b", "fc1.w"]
    assert net.output_shape((3, 8, 8)) == (10,)
    rows = net.layer_shapes()
    assert [(r[0], r[2], r[3]) for r in rows][-2:] == [
        ("pool1", (4, 8, 8), (4, 4, 4)), ("fc1", (4, 4, 4), (10,))
    ]
    assert net.num_params() == (4 * 27 + 4) + (4 * 36 + 4) + (64 * 10 + 10)
    assert net.num_params() == net.num_params((3, 8, 8))
    assert net.macs() == 4 * 27 * 64 + 4 * 36 * 64 + 640
    assert net["conv2"] is net[2] and len(net) == 6


def test_sequential_explicit_names_and_errors() -> None:
    net = Sequential([("stem", Conv(2, 3, pad=1)), ReLU(), ("conv1", Conv(2, 1)), Conv(2, 1)])
    assert [n for n, _ in net.named_layers()] == ["stem", "relu1", "conv1", "conv2"]
    with pytest.raises(VolnetError, match="duplicate"):
        Sequential([("a", ReLU()), ("a", ReLU())])
    with pytest.raises(VolnetError, match="dots"):
        Sequential([("a.b", ReLU())])
    with pytest.raises(VolnetError, match="Graph"):
        Sequential([Add()])


def test_sequential_build_shape_error_names_layer() -> None:
    net = Sequential([Conv(4, 3, pad=1), Pool(2), Conv(4, 3, stride=2), FC(3)])
    with pytest.raises(ShapeError, match=r"^layer conv2: CONV3-4/2p0 \(height H1=4\)"):
        net.build((3, 8, 8))
    with pytest.raises(ShapeError, match=r"^layer pool1: POOL2"):
        Sequential([Pool(2)], input_shape=(3, 7, 7))


def test_sequential_gradient_check() -> None:
    net = _cnn()
    net.build((2, 4, 4), 1)
    _net_grad_check(net, _rng(1).standard_normal((2, 2, 4, 4)))


def test_params_reference_layer_arrays_and_grads_refresh() -> None:
    net = _cnn()
    x = _rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    out = net.forward(x)
    net.params["conv1.w"][...] = 0.5  # in place, as an optimizer does
    assert (net["conv1"].params["w"] == 0.5).all()
    net.backward(np.ones_like(out))
    g1 = net.grads["fc1.w"].copy()
    net.forward(2 * x)
    net.backward(np.ones_like(out))
    assert not np.array_equal(g1, net.grads["fc1.w"])


def test_lazy_build_at_first_forward_and_seed() -> None:
    a, b = _cnn(), _cnn()
    assert a.params == {}
    x = np.ones((1, 2, 4, 4), np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))  # both seed 0
    c = Sequential([Conv(3, 3, pad=1), ReLU(), Pool(2), FC(4)], seed=5)
    assert not np.array_equal(c.forward(x), a.forward(x))
    with pytest.raises(ShapeError, match="batch axis"):
        a.forward(x[0])


def test_forward_with_mismatched_input_names_layer() -> None:
    net = _cnn()
    net.build((2, 4, 4))
    with pytest.raises(ShapeError, match="fc1"):
        net.forward(np.ones((1, 2, 6, 6), np.float32))


def test_config_round_trip() -> None:
    net = Sequential([Conv(4, 3, pad=1), BatchNorm(), ReLU(), ("p", Pool(3, stride=2, fit="ceil")),
                      Dropout(0.2), FC(3)])
    cfg = json.loads(json.dumps(net.config()))
    again = Sequential(**cfg)
    assert again.spec() == net.spec()
    assert [n for n, _ in again.named_layers()] == [n for n, _ in net.named_layers()]
    again2 = layer_from_config(json.loads(json.dumps(layer_to_config(net))))
    assert isinstance(again2, Sequential) and again2.config() == net.config()
    with pytest.raises(VolnetError, match="unknown layer type 'Evil'"):
        layer_from_config({"type": "Evil", "config": {}})
    with pytest.raises(VolnetError, match="bad config for Conv"):
        layer_from_config({"type": "Conv", "config": {"K": 3}})


def test_train_eval_modes_and_predict() -> None:
    net = Sequential([Conv(3, 3, pad=1), BatchNorm(), ReLU(), Dropout(0.5, seed=1), FC(4)])
    x = _rng(0).standard_normal((7, 2, 4, 4)).astype(np.float32)
    net.forward(x)  # train: updates BN running stats, drops units
    assert all(layer.cache is not None for _, layer in net.named_layers())
    ref = net.forward(x, train=False)
    assert all(layer.cache is None for _, layer in net.named_layers())
    p = net.predict(x, batch_size=3)
    assert p.shape == (7, 4) and p.dtype == np.float32
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)
    net.forward(x[:2])  # caches of a training step...
    net.predict(x)  # ...are dropped
    assert all(layer.cache is None for _, layer in net.named_layers())
    ref = net.forward(x, train=False)
    net.eval()
    assert not net.train_mode and not net["bn1"].train_mode
    np.testing.assert_array_equal(net.forward(x), ref)  # forward() follows eval()
    assert all(layer.cache is None for _, layer in net.named_layers())
    net.train()
    assert net["dropout1"].train_mode
    assert net.predict(x[:0]).shape == (0, 4)


def test_astype_float64() -> None:
    net = _cnn()
    net.build((2, 4, 4))
    net.astype(np.float64)
    assert all(v.dtype == np.float64 for v in net.params.values())
    assert net.forward(np.ones((1, 2, 4, 4))).dtype == np.float64


def test_dropout_rng_states_restore() -> None:
    net = Sequential([FC(6), Dropout(0.5), FC(2)], input_shape=(4,))
    x = np.ones((5, 4), np.float32)
    states = json.loads(json.dumps(net.rng_states()))
    assert list(states) == ["dropout1"]
    a = net.forward(x)
    net.set_rng_states(states)
    np.testing.assert_array_equal(net.forward(x), a)


# --------------------------------------------------------------------------- Graph


def _residual_block(C: int = 2) -> Graph:
    g = Graph()
    g.add("conv1", Conv(C, 3, pad=1), ["input"])
    g.add("relu1", ReLU())
    g.add("conv2", Conv(C, 3, pad=1))
    g.add("sum", Add(), ["conv2", "input"])  # "input" feeds conv1 and sum
    g.add("relu2", ReLU())
    return g


def test_graph_residual_gradient_check() -> None:
    g = _residual_block()
    g.build((2, 4, 4), 3)
    assert g.output == "relu2" and g.output_shape((2, 4, 4)) == (2, 4, 4)
    assert sorted(g.params) == ["conv1.b", "conv1.w", "conv2.b", "conv2.w"]
    _net_grad_check(g, _rng(2).standard_normal((2, 2, 4, 4)))


def test_graph_concat_gradient_check() -> None:
    g = Graph()
    g.add("stem", Conv(3, 3, pad=1), "input")
    g.add("a", Conv(2, 1), ["stem"])
    g.add("b", Conv(2, 3, pad=1), ["stem"])
    g.add("c", Pool(3, stride=1, pad=1, mode="avg"), ["stem"])  # stem feeds three nodes
    g.add("cat", Concat(), ["a", "b", "c"])
    g.add("mix", Add(), ["cat", "cat"])  # the same node twice
    g.add("fc", FC(3))
    g.build((2, 3, 3))
    assert g.output_shape((2, 3, 3)) == (3,)
    assert [r[2] for r in g.layer_shapes() if r[0] == "cat"] == [[(2, 3, 3), (2, 3, 3), (3, 3, 3)]]
    _net_grad_check(g, _rng(4).standard_normal((2, 2, 3, 3)))


def test_graph_output_and_dead_nodes() -> None:
    g = Graph()
    g.add("fc1", FC(3), ["input"])
    g.add("fc2", FC(2), ["fc1"])
    g.add("side", FC(5), ["fc1"])
    g.output = "fc2"
    x = np.ones((2, 4), np.float32)
    out = g.forward(x)
    assert out.shape == (2, 2)
    g.backward(np.ones_like(out))
    assert not g.grads["side.w"].any() and set(g.grads) == set(g.params)
    assert "output fc2" in g.spec()


def test_graph_errors() -> None:
    g = Graph()
    with pytest.raises(VolnetError, match="earlier node"):
        g.add("x", ReLU(), ["nope"])
    g.add("conv", Conv(4, 3, pad=1))
    with pytest.raises(VolnetError, match="merge with Add or Concat"):
        g.add("bad", ReLU(), ["conv", "input"])
    with pytest.raises(VolnetError, match="duplicate"):
        g.add("conv", ReLU())
    with pytest.raises(VolnetError, match="'input'"):
        g.add("input", ReLU())
    g.add("sum", Add(), ["conv", "input"])
    with pytest.raises(ShapeError, match=r"^layer sum: ADD: input shapes differ: \[5x5x4\], \[5x5x3\]"):
        g.build((3, 5, 5))
    h = Graph([("p", Pool(2), ["input"]), ("cat", Concat(), ["p", "input"])])
    with pytest.raises(ShapeError, match="CONCAT"):
        h.build((3, 4, 4))
    r = Graph([("r", ReLU(inplace=True), ["input"]), ("s", Add(), ["r", "input"])])
    with pytest.raises(VolnetError, match="in-place"):
        r.build((3,))


def test_nested_containers() -> None:
    net = Sequential([Conv(2, 3, pad=1), ReLU(), _residual_block(2), ("block2", _residual_block(2)), Pool(2),
                      FC(3)])
    net.build((1, 4, 4))
    assert [n for n, _ in net.named_layers()][:4] == ["conv1", "relu1", "graph1.conv1", "graph1.relu1"]
    assert "block2.conv2.w" in net.params
    names = [n for n, _ in net.named_layers(leaves_only=False)]
    assert "graph1" in names and names.index("graph1") < names.index("graph1.conv1")
    assert net.spec().startswith("INPUT [4x4x1] -> CONV3-2 -> RELU -> GRAPH{conv1 = CONV3-2(input); ")
    assert len(net.layer_shapes()) == 2 + 5 + 5 + 2
    _net_grad_check(net, _rng(5).standard_normal((2, 1, 4, 4)))
    again = Sequential(**json.loads(json.dumps(net.config())))
    again.build((1, 4, 4))
    assert sorted(again.params) == sorted(net.params)
    inner = Sequential([Conv(2, 3, stride=2)])
    with pytest.raises(ShapeError, match=r"^layer seq.conv1: CONV3-2/2p0"):
        Sequential([("seq", inner)], input_shape=(1, 4, 4))


def test_sequential_branches_inside_graph() -> None:
    g = Graph()
    g.add("a", Sequential([Conv(2, 1), ReLU(), Conv(2, 3, pad=1)]), ["input"])
    g.add("b", Sequential([Pool(3, stride=1, pad=1), Conv(1, 1)]), ["input"])
    g.add("cat", Concat(), ["a", "b", "input"])
    g.build((2, 3, 3))
    assert g.output_shape((2, 3, 3)) == (5, 3, 3)
    assert "a.conv2.w" in g.params and "b.conv1.b" in g.params
    _net_grad_check(g, _rng(6).standard_normal((2, 2, 3, 3)))


def test_predict_graph_keeps_no_cache() -> None:
    net = Sequential([_residual_block(3), BatchNorm(), GlobalAvgPool(), Flatten(), FC(2)])
    x = _rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    net.forward(x)
    ref = net.forward(x, train=False)
    np.testing.assert_allclose(net.predict(x, batch_size=2), ref, rtol=1e-5, atol=1e-6)
    net.forward(x)
    net.predict(x)
    assert all(layer.cache is None for _, layer in net.named_layers())


# --------------------------------------------------------------------------- FC == CONV


def test_fc_equals_conv_with_full_filters() -> None:
    x = _rng(0).standard_normal((3, 4, 5, 5))
    fc1, fc2 = FC(6), FC(3)
    fcs = Sequential([fc1, fc2], input_shape=(4, 5, 5))
    fcs.astype(np.float64)
    conv1, conv2 = Conv(6, 5), Conv(3, 1)  # F = input size, then a 1x1 CONV after the first "FC"
    convs = Sequential([conv1, conv2, Flatten()], input_shape=(4, 5, 5)).astype(np.float64)
    conv1.params["w"][...] = fc1.params["w"].reshape(6, 4, 5, 5)
    conv1.params["b"][...] = fc1.params["b"] + 0.1
    fc1.params["b"][...] += 0.1
    conv2.params["w"][...] = fc2.params["w"].reshape(3, 6, 1, 1)
    conv2.params["b"][...] = fc2.params["b"]
    h_fc = fc1.forward(x)
    h_conv = conv1.forward(x)
    assert h_conv.shape == (3, 6, 1, 1)
    np.testing.assert_allclose(h_conv.reshape(3, 6), h_fc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(convs.forward(x), fcs.forward(x), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- PyTorch agreement


def test_pytorch_agreement_sequential() -> None:
    torch = torch_or_skip()
    nn = torch.nn
    net = Sequential([Conv(4, 3, pad=1, bias=False), BatchNorm(), ReLU(), Pool(2),
                      Conv(6, 3, stride=2, pad=1, fit="floor"), ReLU(), LRN(3, alpha=1e-2),
                      Pool(2, mode="avg"), FC(8), ReLU(), FC(5)], input_shape=(3, 8, 8))
    tnet = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.LocalResponseNorm(3, alpha=1e-2),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5),
    )
    pairs = {"conv1": tnet[0], "bn1": tnet[1], "conv2": tnet[4], "fc1": tnet[9], "fc2": tnet[11]}
    with torch.no_grad():
        for name, mod in pairs.items():
            mod.weight.copy_(torch.from_numpy(net.params[f"{name}.w"]))
            if mod.bias is not None:
                mod.bias.copy_(torch.from_numpy(net.params[f"{name}.b"] + 0.05))
                net.params[f"{name}.b"][...] += 0.05
    x = _rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    dout = _rng(1).standard_normal((4, 5)).astype(np.float32)
    out = net.forward(x)
    xt = torch.from_numpy(x).requires_grad_(True)
    tout = tnet(xt)
    assert out.dtype == np.float32
    assert max_rel(out, tout.detach().numpy()) < 1e-4
    dx = net.backward(dout)
    tout.backward(torch.from_numpy(dout))
    assert max_rel(dx, xt.grad.numpy()) < 1e-4
    grads = net.grads
    for name, mod in pairs.items():
        assert max_rel(grads[f"{name}.w"], mod.weight.grad.numpy()) < 1e-4, name
        if mod.bias is not None:
            assert max_rel(grads[f"{name}.b"], mod.bias.grad.numpy()) < 1e-4, name
    for buf in ("running_mean", "running_var"):
        ref = getattr(tnet[1], buf).numpy()
        np.testing.assert_allclose(net.buffers[f"bn1.{buf}"], ref, rtol=1e-4, atol=1e-6)
    tnet.eval()
    assert max_rel(net.predict(x), tnet(torch.from_numpy(x)).detach().numpy()) < 1e-4


def test_pytorch_agreement_residual_graph() -> None:
    torch = torch_or_skip()
    nn = torch.nn
    g = Graph()
    g.add("conv1", Conv(4, 3, pad=1), ["input"])
    g.add("relu1", ReLU())
    g.add("conv2", Conv(4, 3, pad=1))
    g.add("proj", Conv(4, 1, bias=False), ["input"])
    g.add("sum", Add(), ["conv2", "proj"])
    g.add("cat", Concat(), ["sum", "input"])
    g.build((3, 5, 5))
    c1, c2, pr = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(3, 4, 1, bias=False)
    with torch.no_grad():
        for name, mod in (("conv1", c1), ("conv2", c2), ("proj", pr)):
            mod.weight.copy_(torch.from_numpy(g.params[f"{name}.w"]))
            if mod.bias is not None:
                mod.bias.zero_()
    x = _rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    tout = torch.cat([c2(torch.relu(c1(xt))) + pr(xt), xt], dim=1)
    out = g.forward(x)
    assert max_rel(out, tout.detach().numpy()) < 1e-4
    dout = _rng(1).standard_normal(out.shape).astype(np.float32)
    dx = g.backward(dout)
    tout.backward(torch.from_numpy(dout))
    assert max_rel(dx, xt.grad.numpy()) < 1e-4
    for name, mod in (("conv1", c1), ("conv2", c2), ("proj", pr)):
        assert max_rel(g.grads[f"{name}.w"], mod.weight.grad.numpy()) < 1e-4, name


@pytest.mark.parametrize("first", ["CONV3-4", "LOCAL3-4", "RELU -> CONV3-4"])
def test_backward_without_input_gradient_gives_the_same_param_grads(first):
    """need_dx=False (the trainer's call) skips the first layer's dx but changes no parameter gradient."""
    from volnet.spec import build

    net = build(f"INPUT [6x6x2] -> {first} -> RELU -> POOL2 -> FC-3", seed=1)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    dout = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    net.forward(x, train=True)
    dx = net.backward(dout)
    full = {k: v.copy() for k, v in net.grads.items()}
    net.forward(x, train=True)
    assert net.backward(dout, need_dx=False) is None
    assert dx is not None and dx.shape == x.shape
    for k, g in net.grads.items():
        np.testing.assert_array_equal(g, full[k], err_msg=k)


def test_graph_backward_without_input_gradient():
    from volnet.layers import Conv, ReLU
    from volnet.net import Add, Graph

    g = Graph()
    g.add("conv1", Conv(3, 3, pad=1), inputs=["input"])
    g.add("relu1", ReLU(), inputs=["conv1"])
    g.add("conv2", Conv(3, 3, pad=1), inputs=["relu1"])
    g.add("add", Add(), inputs=["conv2", "input"])
    g.build((3, 5, 5), 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    g.astype(np.float64)
    dout = np.random.default_rng(1).standard_normal((2, 3, 5, 5))
    g.forward(x, train=True)
    g.backward(dout)
    full = {k: v.copy() for k, v in g.grads.items()}
    g.forward(x, train=True)
    assert g.backward(dout, need_dx=False) is None
    for k, v in g.grads.items():
        np.testing.assert_allclose(v, full[k], rtol=1e-12, err_msg=k)


def test_relu_runs_in_place_only_after_a_fresh_output():
    """Sequential overwrites a CONV/FC/BN output with the following RELU (no copy), never the caller's
    input or a POOL output (max pool's cache refers to it); gradients stay exact."""
    from volnet.spec import build

    net = build("INPUT [6x6x2] -> RELU -> CONV3-4 -> RELU -> POOL2 -> RELU -> FC-5 -> BN -> RELU -> FC-3")
    outs = {}
    for name, layer in net.named_layers():
        f = layer.forward

        def rec(x, train=True, _f=f, _n=name):
            outs[_n] = (x, _f(x, train))
            return outs[_n][1]

        layer.forward = rec
    x = np.random.default_rng(0).standard_normal((4, 2, 6, 6)).astype(np.float32)
    x0 = x.copy()
    net.forward(x)
    np.testing.assert_array_equal(x, x0)  # the first RELU did not touch the caller's array
    assert np.shares_memory(outs["relu2"][1], outs["conv1"][1])
    assert not np.shares_memory(outs["relu3"][1], outs["pool1"][1])
    assert np.shares_memory(outs["relu4"][1], outs["bn1"][1])


def test_in_place_relu_keeps_gradients_exact():
    from volnet.spec import build

    net = build("INPUT [5x5x2] -> CONV3-3 -> RELU -> FC-4 -> BN -> RELU -> FC-2", seed=3).astype(np.float64)
    x = np.random.default_rng(1).standard_normal((3, 2, 5, 5))
    dout = np.random.default_rng(2).standard_normal((3, 2))
    net.forward(x, train=True)
    net.backward(dout)
    w = net.params["conv1.w"]
    num = num_grad(lambda: float(np.sum(net.forward(x, train=True) * dout)), w)
    net.forward(x, train=True)
    net.backward(dout)
    assert rel_error(net.grads["conv1.w"], num) < 1e-6


def test_replace_swaps_a_child_and_keeps_the_rest():
    from volnet.spec import build

    net = build("INPUT [4x4x2] -> CONV3-3 -> RELU -> FC-5", seed=0)
    w = net.params["conv1.w"].copy()
    old = net.replace("fc1", FC(7))
    assert isinstance(old, FC) and old.N == 5
    out = net.forward(np.zeros((2, 2, 4, 4), dtype=np.float32))
    assert out.shape == (2, 7) and np.array_equal(net.params["conv1.w"], w)
    with pytest.raises(VolnetError, match="no layer 'fc9'"):
        net.replace("fc9", FC(2))

    g = Graph()
    g.add("a", Conv(2, 1), inputs=["input"])
    g.add("b", ReLU(), inputs=["a"])
    g.replace("a", Conv(4, 1))
    g.build((2, 3, 3))
    assert g.forward(np.ones((1, 2, 3, 3), dtype=np.float32)).shape == (1, 4, 3, 3)
    with pytest.raises(VolnetError, match="no node"):
        g.replace("zz", ReLU())
