"""Layer classes: thin wrappers of the ops (same numbers), gradients, init, shapes, tokens, configs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import grad_check, rel_error
from volnet.errors import ShapeError
from volnet.layers import (
    FC,
    LAYER_TYPES,
    LRN,
    BatchNorm,
    Conv,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    Local,
    Pool,
    ReLU,
    Softmax,
)
from volnet.ops.activations import relu_backward, relu_forward, softmax_backward, softmax_forward
from volnet.ops.batchnorm import batchnorm_backward, batchnorm_forward
from volnet.ops.conv import conv_backward, conv_forward
from volnet.ops.dropout import dropout_backward, dropout_forward
from volnet.ops.fc import fc_backward, fc_forward
from volnet.ops.local import local_backward, local_forward
from volnet.ops.lrn import lrn_backward, lrn_forward
from volnet.ops.pool import global_avg_pool_backward, global_avg_pool_forward, pool_backward, pool_forward


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- layer == op


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def test_conv_layer_equals_op() -> None:
    x = _rng(1).standard_normal((2, 3, 7, 7)).astype(np.float32)
    layer = Conv(4, 3, stride=2, pad=1, dilation=1)
    out = layer.forward(x)
    ref, cache = conv_forward(x, layer.params["w"], layer.params["b"], stride=2, pad=1)
    _same(out, ref)
    dout = _rng(2).standard_normal(out.shape).astype(np.float32)
    dx = layer.backward(dout)
    rdx, rdw, rdb = conv_backward(dout, cache)
    _same(dx, rdx)
    _same(layer.grads["w"], rdw)
    _same(layer.grads["b"], rdb)


def test_conv_without_bias_has_no_b() -> None:
    x = _rng(1).standard_normal((2, 3, 5, 5)).astype(np.float32)
    layer = Conv(4, 3, bias=False)
    out = layer.forward(x)
    assert set(layer.params) == {"w"}
    _same(out, conv_forward(x, layer.params["w"], None)[0])
    layer.backward(np.ones_like(out))
    assert set(layer.grads) == {"w"}
    assert layer.num_params() == 4 * 3 * 9


def test_local_layer_equals_op() -> None:
    x = _rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    layer = Local(4, 3, stride=1, pad=1)
    out = layer.forward(x)
    assert layer.params["w"].shape == (6, 6, 4, 3, 3, 3) and layer.params["b"].shape == (6, 6, 4)
    ref, cache = local_forward(x, layer.params["w"], layer.params["b"], stride=1, pad=1)
    _same(out, ref)
    dout = np.ones_like(out)
    dx = layer.backward(dout)
    rdx, rdw, rdb = local_backward(dout, cache)
    _same(dx, rdx)
    _same(layer.grads["w"], rdw)
    _same(layer.grads["b"], rdb)


@pytest.mark.parametrize("mode", ["max", "avg", "l2"])
def test_pool_layer_equals_op(mode: str) -> None:
    x = _rng(1).standard_normal((2, 3, 7, 7)).astype(np.float32)
    layer = Pool(3, stride=2, mode=mode, pad=1)
    out = layer.forward(x)
    ref, cache = pool_forward(x, size=3, stride=2, mode=mode, pad=1)
    _same(out, ref)
    dout = _rng(2).standard_normal(out.shape).astype(np.float32)
    _same(layer.backward(dout), pool_backward(dout, cache))


def test_simple_layers_equal_ops() -> None:
    x = _rng(1).standard_normal((2, 6, 4, 4)).astype(np.float32)
    dout = _rng(2).standard_normal(x.shape).astype(np.float32)
    # GAP
    layer: Layer = GlobalAvgPool()
    out = layer.forward(x)
    ref, cache = global_avg_pool_forward(x)
    _same(out, ref)
    d1 = np.ones_like(out)
    _same(layer.backward(d1), global_avg_pool_backward(d1, cache))
    # ReLU
    layer = ReLU()
    out = layer.forward(x)
    ref, cache = relu_forward(x)
    _same(out, ref)
    _same(layer.backward(dout), relu_backward(dout, cache))
    # Softmax
    layer = Softmax()
    out = layer.forward(x)
    ref, cache = softmax_forward(x, axis=1)
    _same(out, ref)
    _same(layer.backward(dout), softmax_backward(dout, cache))
    # LRN
    layer = LRN(3, alpha=1e-2, beta=0.75, k=2.0)
    out = layer.forward(x)
    ref, cache = lrn_forward(x, 3, 1e-2, 0.75, 2.0)
    _same(out, ref)
    _same(layer.backward(dout), lrn_backward(dout, cache))
    # Flatten
    layer = Flatten()
    out = layer.forward(x)
    _same(out, x.reshape(2, -1))
    _same(layer.backward(out), x)


def test_fc_layer_equals_op() -> None:
    x = _rng(1).standard_normal((3, 2, 3, 3)).astype(np.float32)
    layer = FC(5)
    out = layer.forward(x)
    assert layer.params["w"].shape == (5, 18)
    ref, cache = fc_forward(x, layer.params["w"], layer.params["b"])
    _same(out, ref)
    dout = np.ones_like(out)
    dx = layer.backward(dout)
    rdx, rdw, rdb = fc_backward(dout, cache)
    _same(dx, rdx)
    _same(layer.grads["w"], rdw)
    _same(layer.grads["b"], rdb)


def test_fc_accepts_1d_input() -> None:
    layer = FC(4)
    assert layer.output_shape((7,)) == (4,)
    out = layer.forward(np.ones((2, 7), np.float32))
    assert out.shape == (2, 4)


def test_batchnorm_layer_equals_op_and_updates_buffers() -> None:
    x = _rng(1).standard_normal((4, 3, 2, 2)).astype(np.float32) * 2 + 1
    layer = BatchNorm(momentum=0.2)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    out = layer.forward(x)
    ref, cache = batchnorm_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32), rm, rv, True, 0.2)
    _same(out, ref)
    _same(layer.buffers["running_mean"], rm)
    _same(layer.buffers["running_var"], rv)
    dout = _rng(2).standard_normal(x.shape).astype(np.float32)
    dx = layer.backward(dout)
    rdx, rdg, rdb = batchnorm_backward(dout, cache)
    _same(dx, rdx)
    _same(layer.grads["w"], rdg)
    _same(layer.grads["b"], rdb)
    # inference uses the running statistics and does not change them
    before = layer.buffers["running_mean"].copy()
    out_eval = layer.forward(x, train=False)
    _same(layer.buffers["running_mean"], before)
    _same(out_eval, batchnorm_forward(x, layer.params["w"], layer.params["b"], rm, rv, False)[0])


def test_batchnorm_on_features() -> None:
    layer = BatchNorm()
    out = layer.forward(_rng(0).standard_normal((8, 5)))
    assert out.shape == (8, 5) and layer.params["w"].shape == (5,)
    assert layer.output_shape((5,)) == (5,)


def test_dropout_layer_equals_op_and_state_restores() -> None:
    x = np.ones((4, 3, 5, 5), np.float32)
    layer = Dropout(0.4, seed=7)
    state = layer.rng_state()
    json.dumps(state)  # JSON-able
    out = layer.forward(x)
    ref, cache = dropout_forward(x, 0.4, True, np.random.default_rng(7))
    _same(out, ref)
    _same(layer.backward(x), dropout_backward(x, cache))
    after = layer.forward(x)
    layer.set_rng_state(json.loads(json.dumps(state)))
    _same(layer.forward(x), out)  # bit-identical after restore
    _same(layer.forward(x), after)
    _same(layer.forward(x, train=False), x)


def test_dropout_seed_from_build_is_reproducible() -> None:
    a, b = Dropout(0.5), Dropout(0.5)
    a.build((3,), np.random.default_rng(1))
    b.build((3,), np.random.default_rng(1))
    x = np.ones((10, 3), np.float32)
    _same(a.forward(x), b.forward(x))


# --------------------------------------------------------------------------- numerical gradients


def _check_layer(layer: Layer, x: np.ndarray, tol: float = 1e-6, before=None) -> None:
    """Whole-layer float64 gradient check of sum(forward(x) * dout) w.r.t. x and every param."""
    layer.astype(np.float64)
    x = x.astype(np.float64)

    def fwd() -> np.ndarray:
        if before is not None:
            before()
        return layer.forward(x, train=True)

    out = fwd()
    dout = _rng(99).standard_normal(out.shape)
    if before is not None:
        before()
    layer.forward(x, train=True)
    dx = layer.backward(dout)
    assert dx.shape == x.shape and dx.dtype == np.float64
    assert set(layer.grads) == set(layer.params)
    analytic = {"x": dx, **{k: layer.grads[k] for k in layer.params}}
    grad_check(fwd, dout, {"x": x, **layer.params}, analytic, tol=tol)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (Conv(3, 3, pad=1), (2, 2, 5, 5)),
        (Conv(2, (3, 2), stride=(2, 1), pad=(1, 0), dilation=(1, 2)), (2, 2, 5, 6)),
        (Conv(2, 3, stride=2, fit="ceil", bias=False), (1, 2, 6, 6)),
        (Local(2, 3, stride=2, pad=1), (2, 2, 5, 5)),
        (Pool(2, mode="max"), (2, 2, 4, 4)),
        (Pool(3, stride=2, mode="avg", pad=1), (2, 2, 5, 5)),
        (Pool(2, mode="l2", fit="floor"), (2, 2, 5, 5)),
        (GlobalAvgPool(), (2, 3, 3, 3)),
        (ReLU(), (2, 3, 3, 3)),
        (Softmax(), (3, 5)),
        (FC(4), (2, 2, 3, 3)),
        (FC(3), (2, 5)),
        (Flatten(), (2, 2, 2, 3)),
        (LRN(3, alpha=0.1, beta=0.75, k=1.0), (2, 5, 2, 2)),
        (BatchNorm(), (4, 3, 2, 2)),
        (BatchNorm(), (5, 4)),
    ],
    ids=lambda v: v.token() if isinstance(v, Layer) else str(v),
)
def test_numerical_gradients(layer: Layer, shape: tuple[int, ...]) -> None:
    x = _rng(3).standard_normal(shape)
    _check_layer(layer, x)


def test_numerical_gradient_dropout() -> None:
    layer = Dropout(0.3, seed=5)
    state = layer.rng_state()
    _check_layer(layer, _rng(3).standard_normal((3, 4)), before=lambda: layer.set_rng_state(state))


# --------------------------------------------------------------------------- parameters


def test_he_init_statistics() -> None:
    for layer, shape, fan_in in [
        (Conv(64, 3), (16, 8, 8), 16 * 9),
        (FC(200), (3, 8, 8), 192),
        (Local(8, 3), (4, 6, 6), 36),
    ]:
        layer.build(shape, np.random.default_rng(0))
        w, b = layer.params["w"], layer.params["b"]
        assert w.dtype == np.float32 and b.dtype == np.float32
        assert abs(w.std() / np.sqrt(2.0 / fan_in) - 1) < 0.05, layer.token()
        assert abs(w.mean()) < 0.05 * w.std()
        assert not b.any()
    bn = BatchNorm()
    bn.build((5, 2, 2))
    assert (bn.params["w"] == 1).all() and (bn.params["b"] == 0).all()
    assert (bn.buffers["running_mean"] == 0).all() and (bn.buffers["running_var"] == 1).all()


def test_init_is_seeded_and_dtype_independent() -> None:
    a, b, c = Conv(4, 3), Conv(4, 3), Conv(4, 3)
    a.build((3, 5, 5), np.random.default_rng(1))
    b.build((3, 5, 5), np.random.default_rng(1), np.float64)
    c.build((3, 5, 5), np.random.default_rng(2))
    assert b.params["w"].dtype == np.float64
    np.testing.assert_array_equal(a.params["w"], b.params["w"].astype(np.float32))
    assert not np.array_equal(a.params["w"], c.params["w"])


def test_lazy_depth_inference() -> None:
    conv = Conv(4, 3, pad=1)
    assert conv.params == {}
    out = conv.forward(np.ones((1, 5, 6, 6), np.float32))
    assert conv.params["w"].shape == (4, 5, 3, 3) and out.shape == (1, 4, 6, 6)
    conv.forward(np.ones((1, 5, 9, 9), np.float32))  # other spatial sizes are fine
    with pytest.raises(ShapeError, match="depth"):
        conv.forward(np.ones((1, 3, 6, 6), np.float32))
    with pytest.raises(ShapeError, match="in_depth|depth"):
        Conv(4, 3, in_depth=3).output_shape((5, 6, 6))
    fc = FC(3)
    fc.forward(np.ones((2, 4, 2, 2), np.float32))
    assert fc.params["w"].shape == (3, 16)
    with pytest.raises(ShapeError, match="FC-3"):
        fc.forward(np.ones((2, 5), np.float32))
    assert FC(3, in_features=16).param_shapes((4, 2, 2)) == {"w": (3, 16), "b": (3,)}


def test_astype_and_dtype_kept() -> None:
    conv = Conv(2, 3)
    conv.build((1, 4, 4))
    assert conv.forward(np.ones((1, 1, 4, 4), np.float32)).dtype == np.float32
    conv.astype(np.float64)
    assert conv.params["w"].dtype == np.float64
    assert conv.forward(np.ones((1, 1, 4, 4))).dtype == np.float64


def test_num_params_and_macs() -> None:
    conv = Conv(96, 11, stride=4)  # AlexNet's first layer, the notes' numbers
    assert conv.output_shape((3, 227, 227)) == (96, 55, 55)
    assert conv.num_params((3, 227, 227)) == 34944
    assert conv.macs((3, 227, 227)) == 96 * 3 * 11 * 11 * 55 * 55
    assert Local(96, 11, stride=4).num_params((3, 227, 227)) == 55 * 55 * 96 * (11 * 11 * 3 + 1) == 105705600
    assert FC(10).macs((512, 7, 7)) == 512 * 49 * 10
    assert FC(4096).num_params((512, 7, 7)) == 25088 * 4096 + 4096
    assert Pool().macs((64, 8, 8)) == 0 and ReLU().macs((64, 8, 8)) == 0
    assert BatchNorm().num_params((64, 8, 8)) == 128


# --------------------------------------------------------------------------- shapes, tokens, configs


def test_output_shapes() -> None:
    assert Conv(64, 3, pad=1).output_shape((3, 32, 32)) == (64, 32, 32)
    assert Conv(8, 3, dilation=2).output_shape((1, 7, 7)) == (8, 3, 3)
    assert Conv(8, 3, stride=2, fit="floor").output_shape((1, 8, 8)) == (8, 3, 3)
    assert Pool().output_shape((12, 32, 32)) == (12, 16, 16)
    assert Pool(3, stride=2, fit="ceil").output_shape((1, 8, 8)) == (1, 4, 4)
    assert GlobalAvgPool().output_shape((7, 5, 5)) == (7, 1, 1)
    assert Flatten().output_shape((7, 5, 5)) == (175,)
    assert FC(10).output_shape((7, 5, 5)) == (10,)
    assert ReLU().output_shape((3, 4, 4)) == (3, 4, 4)


def test_output_shape_errors_name_the_layer() -> None:
    with pytest.raises(ShapeError, match=r"CONV3-8/2p0 \(height H1=8\).*not an integer"):
        Conv(8, 3, stride=2).output_shape((3, 8, 8))
    with pytest.raises(ShapeError, match=r"^POOL2 \(height"):
        Pool(2).output_shape((3, 7, 8))
    with pytest.raises(ShapeError, match="LOCAL5-4p0"):
        Local(4, 5).output_shape((3, 3, 3))
    with pytest.raises(ShapeError, match="CONV3-64"):
        Conv(64, 3, pad=1).output_shape((10,))
    with pytest.raises(ShapeError, match="GAP"):
        GlobalAvgPool().output_shape((10,))


@pytest.mark.parametrize(
    "layer, token",
    [
        (Conv(64, 3, pad=1), "CONV3-64"),
        (Conv(64, 3), "CONV3-64p0"),
        (Conv(96, 11, stride=4), "CONV11-96/4p0"),
        (Conv(64, 7, stride=2, pad=3, fit="floor"), "CONV7-64/2 floor"),
        (Conv(16, 1), "CONV1-16"),
        (Conv(16, 3, pad=2, dilation=2), "CONV3-16d2"),
        (Conv(16, (1, 3), pad=(0, 1)), "CONV1x3-16"),
        (Local(8, 5, pad=2), "LOCAL5-8"),
        (Local(8, 3, stride=2, fit="ceil"), "LOCAL3-8/2p0 ceil"),
        (Pool(), "POOL2"),
        (Pool(3, stride=2), "POOL3/2"),
        (Pool(3, stride=2, pad=1, fit="ceil"), "POOL3/2p1 ceil"),
        (Pool(2, mode="avg"), "AVGPOOL2"),
        (Pool(2, mode="l2"), "L2POOL2"),
        (GlobalAvgPool(), "GAP"),
        (ReLU(), "RELU"),
        (ReLU(inplace=True), "RELU"),
        (Softmax(), "SOFTMAX"),
        (FC(10), "FC-10"),
        (Flatten(), "FLATTEN"),
        (LRN(), "LRN"),
        (LRN(3), "LRN3"),
        (BatchNorm(), "BN"),
        (Dropout(), "DROPOUT0.5"),
        (Dropout(0.25, seed=3), "DROPOUT0.25"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_tokens_and_config_round_trip(layer: Layer, token: str) -> None:
    assert layer.token() == token
    cfg = json.loads(json.dumps(layer.config()))  # JSON-able
    again = type(layer)(**cfg)
    assert again.token() == token
    assert again.config() == layer.config()
    assert type(layer).from_config(cfg).token() == token
    assert LAYER_TYPES[type(layer).__name__] is type(layer)


def test_registry_is_explicit() -> None:
    assert set(LAYER_TYPES) == {
        "Conv", "Local", "Pool", "GlobalAvgPool", "ReLU", "Softmax", "FC", "Flatten", "LRN", "BatchNorm",
        "Dropout",
    }


def test_constructor_validation() -> None:
    for bad in (lambda: Conv(0, 3), lambda: Conv(4, 0), lambda: Conv(4, 3, stride=0),
                lambda: Conv(4, 3, pad=-1), lambda: Conv(4, 3, fit="round"), lambda: Pool(2, mode="min"),
                lambda: Pool(2, pad=2), lambda: Dropout(1.5), lambda: FC(0), lambda: BatchNorm(eps=0)):
        with pytest.raises(ValueError):
            bad()


# --------------------------------------------------------------------------- inference keeps nothing


@pytest.mark.parametrize(
    "layer, shape",
    [
        (Conv(2, 3, pad=1), (2, 2, 4, 4)), (Local(2, 3, pad=1), (2, 2, 4, 4)), (Pool(), (2, 2, 4, 4)),
        (GlobalAvgPool(), (2, 2, 4, 4)), (ReLU(), (2, 2, 4, 4)), (Softmax(), (2, 5)), (FC(3), (2, 2, 4, 4)),
        (Flatten(), (2, 2, 4, 4)), (LRN(), (2, 2, 4, 4)), (BatchNorm(), (2, 2, 4, 4)),
        (Dropout(), (2, 2, 4, 4)),
    ],
    ids=lambda v: v.token() if isinstance(v, Layer) else str(v),
)
def test_inference_keeps_no_cache(layer: Layer, shape: tuple[int, ...]) -> None:
    x = _rng(0).standard_normal(shape).astype(np.float32)
    layer.forward(x, train=True)
    assert layer.cache is not None
    layer.forward(x, train=False)
    assert layer.cache is None
    with pytest.raises(RuntimeError, match="backward needs"):
        layer.backward(np.ones(layer.output_shape(shape[1:]), np.float32)[None])


def test_relu_inplace_overwrites_input() -> None:
    x = np.array([[-1.0, 2.0]], np.float32)
    out = ReLU(inplace=True).forward(x)
    assert out is x and x[0, 0] == 0
    y = np.array([[-1.0, 2.0]], np.float32)
    ReLU().forward(y)
    assert y[0, 0] == -1


def test_rel_error_helper_sanity() -> None:
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
