"""FC -> CONV conversion: one forward pass over a larger image equals the original net on every crop."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import max_rel
from volnet.convert import convert_fc_to_conv
from volnet.errors import VolnetError
from volnet.spec import build

# valid (p0) convolutions: the front end looks at each crop exactly as the original net does
SMALL = (
    "INPUT [32x32x3] -> CONV5-8p0 -> RELU -> POOL2 -> CONV3-8p0 -> RELU -> POOL2 -> FC-16 -> RELU -> FC-10"
)


def crops_equal(net, conv, x, stride: int, size: int, positions, tol: float) -> None:
    scores = conv.forward(x, train=False)
    for i, j in positions:
        crop = x[:, :, stride * i : stride * i + size, stride * j : stride * j + size]
        ref = net.forward(crop, train=False)
        assert max_rel(scores[:, :, i, j], ref) < tol, (i, j)


def test_small_net_structure_and_weights():
    net = build(SMALL, seed=1)
    conv = convert_fc_to_conv(net)
    assert conv.spec() == (
        "INPUT [32x32x3] -> CONV5-8p0 -> RELU -> POOL2 -> CONV3-8p0 -> RELU -> POOL2 -> "
        "CONV6-16p0 -> RELU -> CONV1-10"
    )
    # 32 -> 28 -> 14 -> 12 -> 6: the first FC sees a 6x6x8 volume and becomes F=6, K=16, P=0
    assert conv.params["fc1.w"].shape == (16, 8, 6, 6)
    assert np.array_equal(conv.params["fc1.w"].reshape(16, -1), net.params["fc1.w"])
    assert conv.params["fc2.w"].shape == (10, 16, 1, 1)
    assert np.array_equal(conv.params["fc2.b"], net.params["fc2.b"])
    assert conv.num_params() == net.num_params()
    # the original net is untouched and the copies do not share arrays
    assert net.params["conv1.w"] is not conv.params["conv1.w"]
    assert [layer.kind for layer in net.layers][-1] == "FC"


def test_same_size_input_gives_1x1_map_equal_to_original():
    net = build(SMALL, seed=2)
    conv = convert_fc_to_conv(net)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    out = conv.forward(x, train=False)
    assert out.shape == (3, 10, 1, 1)
    assert max_rel(out[:, :, 0, 0], net.forward(x, train=False)) < 1e-5


def test_64x64_score_map_equals_every_32x32_crop():
    """Total downsampling 2*2 = 4: on 64x64 the map is (64 - 32)/4 + 1 = 9 wide, entry (i, j) = the original
    net on the crop at (4i, 4j)."""
    net = build(SMALL, seed=3)
    conv = convert_fc_to_conv(net)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    assert conv.forward(x, train=False).shape == (2, 10, 9, 9)
    crops_equal(net, conv, x, 4, 32, [(i, j) for i in range(9) for j in range(9)], 1e-5)


def test_crops_float64_exact():
    net = build(SMALL, seed=4).astype(np.float64)
    conv = convert_fc_to_conv(net)
    assert conv.params["fc1.w"].dtype == np.float64
    x = np.random.default_rng(2).standard_normal((1, 3, 40, 48))  # not square, not a multiple
    assert conv.forward(x, train=False).shape == (1, 10, 3, 5)  # (40-32)/4+1, (48-32)/4+1
    crops_equal(net, conv, x, 4, 32, [(0, 0), (1, 3), (2, 4)], 1e-12)


def test_notes_example_224_to_7x7_runs_on_384_as_6x6():
    """The notes: 224x224 -> 7x7xD (five 2x2 pools) -> FC ... ; on 384x384 the converted net gives a 6x6 map
    of class scores, equal to the original net on the 224x224 crops at strides of 32 pixels."""
    net = build("INPUT [224x224x3] -> CONV1-4 -> RELU -> [POOL2]*5 -> FC-16 -> RELU -> FC-8", seed=5)
    assert net.layer_shapes()[-3][2] == (4, 7, 7)
    conv = convert_fc_to_conv(net)
    assert "CONV7-16p0 -> RELU -> CONV1-8" in conv.spec()
    x = np.random.default_rng(3).standard_normal((1, 3, 384, 384)).astype(np.float32)
    out = conv.forward(x, train=False)
    assert out.shape == (1, 8, 6, 6)  # 384/32 = 12, (12 - 7)/1 + 1 = 6
    crops_equal(net, conv, x, 32, 224, [(0, 0), (0, 5), (3, 2), (5, 5)], 1e-5)


def test_flatten_before_fc_is_dropped_and_dropout_kept():
    net = build("INPUT [16x16x3] -> CONV3-4p0 -> POOL2 -> FLATTEN -> DROPOUT0.5 -> FC-6 -> SOFTMAX", seed=6)
    conv = convert_fc_to_conv(net)
    assert conv.spec() == "INPUT [16x16x3] -> CONV3-4p0 -> POOL2 -> DROPOUT0.5 -> CONV7-6p0 -> SOFTMAX"
    x = np.random.default_rng(4).standard_normal((2, 3, 20, 22)).astype(np.float32)
    out = conv.forward(x, train=False)
    assert out.shape == (2, 6, 3, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)  # softmax over the class (depth) axis
    crops_equal(net, conv, x, 2, 16, [(0, 0), (2, 3), (1, 1)], 1e-5)


def test_padding_makes_interior_crops_differ():
    """Zero padding is why exact equality needs p0 layers: a crop is zero-padded, the big image is not."""
    net = build("INPUT [8x8x1] -> CONV3-2 -> FC-3", seed=7).astype(np.float64)
    conv = convert_fc_to_conv(net)
    x = np.random.default_rng(5).standard_normal((1, 1, 12, 12))
    scores = conv.forward(x, train=False)
    assert scores.shape == (1, 3, 5, 5)
    ref = net.forward(x[:, :, 2:10, 2:10], train=False)
    assert max_rel(scores[:, :, 2, 2], ref) > 1e-6


def test_bad_inputs():
    from volnet.layers import FC
    from volnet.net import Graph, Sequential

    with pytest.raises(VolnetError, match="build"):
        convert_fc_to_conv(Sequential([FC(3)]))
    with pytest.raises(VolnetError, match="Sequential"):
        convert_fc_to_conv(Graph())
    net = build("INPUT [4x4x2] -> FLATTEN -> BN -> FC-3", seed=0)
    with pytest.raises(VolnetError, match="FLATTEN"):
        convert_fc_to_conv(net)
