"""The worked numbers of the cs231n ConvNet notes, checked against volnet's conv and local layers."""

from __future__ import annotations

import numpy as np
import pytest

from volnet.errors import ShapeError
from volnet.ops.conv import conv_backward, conv_forward, im2col
from volnet.ops.local import local_weight_shape
from volnet.ops.sizes import effective_size, output_size


def _out_hw(H: int, W: int, F: int, **opts) -> tuple[int, int]:
    out, _ = conv_forward(np.zeros((1, 1, H, W), dtype=np.float32), np.zeros((1, 1, F, F), np.float32), None,
                          **opts)
    return out.shape[2], out.shape[3]


def test_7x7_input_3x3_filter_stride_1_and_2() -> None:
    assert _out_hw(7, 7, 3, stride=1) == (5, 5)
    assert _out_hw(7, 7, 3, stride=2) == (3, 3)


def test_7x7_input_3x3_filter_stride_3_does_not_fit() -> None:
    with pytest.raises(ShapeError) as e:
        _out_hw(7, 7, 3, stride=3)
    msg = str(e.value)
    parts = ("W=7", "F=3", "S=3", "P=0", "2.333", "nearest settings that fit", "fit='floor'", "fit='ceil'")
    for part in parts:
        assert part in msg, msg
    # the suggested fits do fit
    assert _out_hw(7, 7, 3, stride=3, pad=1) == (3, 3)
    assert _out_hw(7, 7, 3, stride=3, fit="floor") == (2, 2)
    assert _out_hw(7, 7, 3, stride=3, fit="ceil") == (3, 3)


def test_10x10_F3_S2_P0_does_not_fit() -> None:
    with pytest.raises(ShapeError, match=r"4\.5") as e:
        _out_hw(10, 10, 3, stride=2)
    assert "W=10" in str(e.value) and "S=2" in str(e.value)


def test_numpy_example_11x11x4_F5_S2() -> None:
    """The notes' X of shape (11, 11, 4) indexed X[x, y, d]; V[x, y, d] for the first two depth slices."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((11, 11, 4))  # notes' layout: width, height, depth
    W0, W1 = rng.standard_normal((5, 5, 4)), rng.standard_normal((5, 5, 4))
    b0, b1 = 0.5, -1.0
    x = X.transpose(2, 1, 0)[None]  # -> (N, C, H, W)
    w = np.stack([W0.transpose(2, 1, 0), W1.transpose(2, 1, 0)])
    V, _ = conv_forward(x, w, np.array([b0, b1]), stride=2)
    assert V.shape == (1, 2, 4, 4)  # (11 - 5)/2 + 1 = 4
    V = V[0].transpose(2, 1, 0)  # back to V[x, y, d]
    assert np.isclose(V[0, 0, 0], np.sum(X[:5, :5, :] * W0) + b0)
    assert np.isclose(V[1, 0, 0], np.sum(X[2:7, :5, :] * W0) + b0)
    assert np.isclose(V[2, 0, 0], np.sum(X[4:9, :5, :] * W0) + b0)
    assert np.isclose(V[3, 0, 0], np.sum(X[6:11, :5, :] * W0) + b0)
    assert np.isclose(V[0, 0, 1], np.sum(X[:5, :5, :] * W1) + b1)
    assert np.isclose(V[3, 2, 1], np.sum(X[6:11, 4:9, :] * W1) + b1)


def test_32x32x3_F5_P2_keeps_size_75_weights_per_filter() -> None:
    K = 12
    w = np.zeros((K, 3, 5, 5), dtype=np.float32)
    out, _ = conv_forward(np.zeros((1, 3, 32, 32), np.float32), w, np.zeros(K, np.float32), pad=2)
    assert out.shape == (1, K, 32, 32)  # [32x32x12]
    assert w[0].size == 5 * 5 * 3 == 75  # +1 bias per filter
    assert w.size + K == K * (75 + 1)


def test_16x16x20_F3_has_180_connections_per_neuron() -> None:
    cols = im2col(np.zeros((1, 20, 16, 16)), 3, 3, pad=1)
    assert cols.shape == (3 * 3 * 20, 16 * 16) == (180, 256)


def test_alexnet_conv1_as_matrix_multiplication() -> None:
    """227x227x3, 96 filters 11x11x3 at stride 4: X_col 363 x 3025, W_row 96 x 363, out 55x55x96."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 227, 227)).astype(np.float32)
    w = rng.standard_normal((96, 3, 11, 11)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    out, _ = conv_forward(x, w, b, stride=4)
    assert out.shape == (1, 96, 55, 55)
    X_col = im2col(x, 11, 11, stride=4)
    W_row = w.reshape(96, -1)
    assert X_col.shape == (363, 3025) and W_row.shape == (96, 363)
    res = np.dot(W_row, X_col)  # 96 x 3025
    assert res.shape == (96, 3025)
    np.testing.assert_allclose((res + b[:, None]).reshape(96, 55, 55), out[0], rtol=1e-4, atol=1e-4)
    # parameters: shared 96*(11*11*3) + 96; locally connected: one set per output position
    assert w.size + b.size == 34_944
    ws = local_weight_shape((3, 227, 227), 96, 11, stride=4)
    assert ws == (55, 55, 96, 3, 11, 11)
    assert int(np.prod(ws)) + int(np.prod(ws[:3])) == 105_705_600


@pytest.mark.parametrize("F,P", [(3, 1), (5, 2), (7, 3)])
def test_size_preserving_padding(F: int, P: int) -> None:
    assert P == (F - 1) // 2
    assert _out_hw(9, 12, F, pad=P) == (9, 12)


def test_three_3x3_layers_versus_one_7x7() -> None:
    """Same 7x7 receptive field; 49 C^2 weights for one 7x7 layer, 27 C^2 for three 3x3 layers."""
    C = 4
    one = C * (7 * 7 * C)
    three = 3 * (C * (3 * 3 * C))
    assert (one, three) == (49 * C**2, 27 * C**2)
    # receptive field: the gradient of one output neuron after three 3x3 convs covers 7x7 input pixels
    rng = np.random.default_rng(2)
    ws = [np.abs(rng.standard_normal((C, C, 3, 3))) + 0.1 for _ in range(3)]
    h = np.ones((1, C, 9, 9))
    caches = []
    for w in ws:
        h, c = conv_forward(h, w, None)
        caches.append(c)
    assert h.shape == (1, C, 3, 3)
    d = np.zeros(h.shape)
    d[0, 0, 1, 1] = 1.0
    for c in reversed(caches):
        d, _, _ = conv_backward(d, c)
    rows, cols = np.nonzero(np.abs(d[0]).sum(axis=0))
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (7, 7)
    w7 = np.zeros((C, C, 7, 7))
    assert w7.size == one and sum(w.size for w in ws) == three


def test_dilation_notes_0_and_1() -> None:
    """Notes' dilation 0 is dilation=1; notes' dilation 1 (one gap) is dilation=2: a 3-filter spans 5."""
    assert effective_size(3, 1) == 3 and effective_size(3, 2) == 5
    assert output_size(7, 3, dilation=2) == 3
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 7, 7))
    w = rng.standard_normal((3, 2, 3, 3))
    w_gaps = np.zeros((3, 2, 5, 5))
    w_gaps[:, :, ::2, ::2] = w
    np.testing.assert_allclose(conv_forward(x, w, None, dilation=2)[0], conv_forward(x, w_gaps, None)[0],
                               atol=1e-12)


def test_1x1_conv_is_a_depth_dot_product() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 4, 3))
    w = rng.standard_normal((6, 5, 1, 1))
    out, _ = conv_forward(x, w, None)
    np.testing.assert_allclose(out, np.einsum("nchw,kc->nkhw", x, w[:, :, 0, 0]), atol=1e-12)
