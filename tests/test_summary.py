"""summary(): the notes' VGGNet table row by row, "72MB", memory accounting, batch sizes for a budget."""

from __future__ import annotations

import json
import time

import pytest

from volnet.errors import ShapeError, VolnetError
from volnet.spec import build
from volnet.summary import Summary, format_bytes, optimizer_factor, parse_memory, summary

VGG16 = (
    "INPUT [224x224x3] -> [CONV3-64 -> RELU]*2 -> POOL2 -> [CONV3-128 -> RELU]*2 -> POOL2 -> "
    "[CONV3-256 -> RELU]*3 -> POOL2 -> [CONV3-512 -> RELU]*3 -> POOL2 -> [CONV3-512 -> RELU]*3 -> POOL2 -> "
    "FC-4096 -> RELU -> FC-4096 -> RELU -> FC-1000"
)

# The notes' VGGNet table (configuration D): layer, volume, memory (activations), weights.
VGG16_TABLE = [
    ("INPUT", "[224x224x3]", 224 * 224 * 3, 0),
    ("CONV3-64", "[224x224x64]", 224 * 224 * 64, (3 * 3 * 3) * 64),
    ("CONV3-64", "[224x224x64]", 224 * 224 * 64, (3 * 3 * 64) * 64),
    ("POOL2", "[112x112x64]", 112 * 112 * 64, 0),
    ("CONV3-128", "[112x112x128]", 112 * 112 * 128, (3 * 3 * 64) * 128),
    ("CONV3-128", "[112x112x128]", 112 * 112 * 128, (3 * 3 * 128) * 128),
    ("POOL2", "[56x56x128]", 56 * 56 * 128, 0),
    ("CONV3-256", "[56x56x256]", 56 * 56 * 256, (3 * 3 * 128) * 256),
    ("CONV3-256", "[56x56x256]", 56 * 56 * 256, (3 * 3 * 256) * 256),
    ("CONV3-256", "[56x56x256]", 56 * 56 * 256, (3 * 3 * 256) * 256),
    ("POOL2", "[28x28x256]", 28 * 28 * 256, 0),
    ("CONV3-512", "[28x28x512]", 28 * 28 * 512, (3 * 3 * 256) * 512),
    ("CONV3-512", "[28x28x512]", 28 * 28 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", "[28x28x512]", 28 * 28 * 512, (3 * 3 * 512) * 512),
    ("POOL2", "[14x14x512]", 14 * 14 * 512, 0),
    ("CONV3-512", "[14x14x512]", 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", "[14x14x512]", 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", "[14x14x512]", 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("POOL2", "[7x7x512]", 7 * 7 * 512, 0),
    ("FC-4096", "[1x1x4096]", 4096, 7 * 7 * 512 * 4096),
    ("FC-4096", "[1x1x4096]", 4096, 4096 * 4096),
    ("FC-1000", "[1x1x1000]", 1000, 4096 * 1000),
]


@pytest.fixture(scope="module")
def vgg() -> Summary:
    return summary(VGG16)


def test_vgg16_matches_the_notes_table_row_by_row(vgg):
    got = [(r.token, r.volume, r.activations, r.weights) for r in vgg.rows if r.token != "RELU"]
    assert got == VGG16_TABLE
    # the notes' rounded numbers: 3.2M, 1.6M, 800K, ... and weights 1,728 / 36,864 / 73,728 / ...
    assert vgg.rows[1].activations == 3_211_264 and vgg.rows[1].params_text() == "1,728+64"
    assert [r.weights for r in vgg.rows if r.token == "CONV3-64"] == [1_728, 36_864]
    assert next(r for r in vgg.rows if r.token == "CONV3-128").weights == 73_728


def test_vgg16_totals(vgg):
    t = vgg.totals
    assert t["params"] == 138_357_544  # "138M parameters"
    assert t["weights"] == 138_344_128 and t["biases"] == 13_416
    assert t["layers"] == 13 + 13 + 5 + 3 + 2 and t["input"] == 150_528
    # layer outputs without the in-place RELUs; with the input the rows add up to 15.2M per image
    assert t["activations"] == 15_087_080
    assert t["activations"] + t["input"] == 15_237_608
    assert t["macs"] == 15_470_264_320  # 15.5 G multiply-adds per image
    fc = [r for r in vgg.rows if r.token.startswith("FC")]
    assert fc[0].params == 102_764_544 and fc[1].weights == 16_777_216 and fc[2].weights == 4_096_000
    # "most of these parameters are in the first fully connected layer"
    assert fc[0].params / t["params"] > 0.74


def test_vgg16_counts_without_allocating(monkeypatch):
    from volnet.layers._common import ParamLayer

    def no_build(*a, **k):
        raise AssertionError("summary must not allocate parameters")

    monkeypatch.setattr(ParamLayer, "build", no_build)
    t0 = time.perf_counter()
    s = summary(VGG16, batch=64, memory="12GB")
    assert time.perf_counter() - t0 < 5.0
    assert s.totals["params"] == 138_357_544


def test_three_conv3_64_is_10m_activations_and_72mb():
    """The notes: three [224x224x64] volumes "amount to a total of about 10 million activations, or 72MB
    of memory (per image, for both activations and gradients)"."""
    s = summary("INPUT [224x224x3] -> [CONV3-64]*3")
    assert s.totals["activations"] == 3 * 224 * 224 * 64 == 9_633_792
    m = s.memory
    assert m["activations"] == m["gradients"] == 9_633_792
    mib = (m["activations_bytes"] + m["gradients_bytes"]) / 1024**2
    assert mib == pytest.approx(9_633_792 * 4 * 2 / 1024**2)
    assert abs(mib - 72) / 72 < 0.03  # 73.5 MiB


def test_batch_scales_activations_and_input_not_params():
    one = summary("INPUT [224x224x3] -> [CONV3-64]*3", batch=1).memory
    ten = summary("INPUT [224x224x3] -> [CONV3-64]*3", batch=10).memory
    assert ten["activations_bytes"] == 10 * one["activations_bytes"]
    assert ten["gradients_bytes"] == 10 * one["gradients_bytes"]
    assert ten["input_bytes"] == 10 * one["input_bytes"]
    assert ten["params_bytes"] == one["params_bytes"]


def test_memory_accounting_arithmetic():
    s = summary("INPUT [32x32x3] -> CONV3-12 -> RELU -> POOL2 -> FC-10", batch=4)
    acts = 32 * 32 * 12 + 16 * 16 * 12 + 10  # RELU in place
    params = (3 * 3 * 3 * 12 + 12) + (16 * 16 * 12 * 10 + 10)
    assert s.totals["activations"] == acts and s.totals["params"] == params
    m = s.memory
    assert m["total"] == 2 * 4 * acts + 3 * params + 4 * 3072
    assert m["total_bytes"] == 4 * m["total"]


def test_largest_batch_for_a_memory_budget():
    spec = "INPUT [224x224x3] -> [CONV3-64]*3 -> POOL2 -> FC-10"
    s = summary(spec, memory="4GB")
    m = s.memory
    per_image = (2 * s.totals["activations"] + s.totals["input"]) * 4
    fixed = 3 * s.totals["params"] * 4
    assert m["budget_bytes"] == 4 * 1024**3
    assert m["per_image_bytes"] == per_image and m["fixed_bytes"] == fixed
    assert m["max_batch"] == (4 * 1024**3 - fixed) // per_image
    n = m["max_batch"]
    assert summary(spec, batch=n).memory["total_bytes"] <= 4 * 1024**3
    assert summary(spec, batch=n + 1).memory["total_bytes"] > 4 * 1024**3
    assert f"largest batch that fits in 4.00 GB: {n:,}" in str(s)


def test_budget_too_small_for_the_parameters(vgg):
    s = summary(VGG16, memory="1GB")  # 138M params x3 x4 bytes = 1.55 GB
    assert s.memory["max_batch"] == 0
    assert "does not fit in 1.00 GB" in str(s)


def test_vgg16_batch_for_notes_gpus():
    s = summary(VGG16, memory="12GB", optimizer="momentum")
    m = s.memory
    assert m["max_batch"] == (12 * 1024**3 - 3 * 138_357_544 * 4) // ((2 * 15_087_080 + 150_528) * 4)


def test_float64_doubles_bytes():
    a = summary("INPUT [32x32x3] -> CONV3-8 -> FC-10", batch=2).memory
    b = summary("INPUT [32x32x3] -> CONV3-8 -> FC-10", batch=2, dtype="float64").memory
    assert b["bytes_per_value"] == 8 and a["bytes_per_value"] == 4
    for k in ("activations", "gradients", "params", "input", "total"):
        assert b[f"{k}_bytes"] == 2 * a[f"{k}_bytes"] and b[k] == a[k]
    with pytest.raises(VolnetError):
        summary("INPUT [32x32x3] -> CONV3-8", dtype="int7")


@pytest.mark.parametrize("name, factor", [(None, 3), ("sgd", 2), ("momentum", 3), ("nesterov", 3),
                                          ("adagrad", 3), ("rmsprop", 3), ("adam", 4), ("Adam", 4)])
def test_optimizer_factor_changes_parameter_memory(name, factor):
    assert optimizer_factor(name) == factor
    s = summary("INPUT [8x8x3] -> CONV3-4 -> FC-2", optimizer=name)
    assert s.memory["param_factor"] == factor
    assert s.memory["params"] == factor * s.totals["params"]
    assert f"parameters x{factor}" in str(s)


def test_unknown_optimizer():
    with pytest.raises(VolnetError, match="did you mean 'adam'"):
        summary("INPUT [8x8x3] -> CONV3-4", optimizer="adamm")


def test_parse_and_format_memory():
    assert parse_memory("4GB") == 4 * 1024**3
    assert parse_memory("512MB") == parse_memory("512 mb") == parse_memory("512M") == 512 * 1024**2
    assert parse_memory("1.5GiB") == int(1.5 * 1024**3)
    assert parse_memory(123) == 123 and parse_memory("100") == 100
    for bad in ("lots", "4XB", "-1GB", "0", True):
        with pytest.raises(VolnetError):
            parse_memory(bad)
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.50 KB"
    assert format_bytes(73.5 * 1024**2) == "73.50 MB"
    assert format_bytes(4 * 1024**3) == "4.00 GB"


def test_summary_of_a_net_equals_summary_of_its_spec():
    spec = "INPUT [32x32x3] -> [CONV3-8 -> RELU -> POOL2]*2 -> FC-10"
    net = build(spec)
    a, b = summary(net), summary(spec)
    assert a.to_dict() == b.to_dict()
    with pytest.raises(ShapeError, match="in_features=512"):  # built FC weights fix the input size
        summary(net, input_shape="64x64x3")
    conv = build("INPUT [32x32x3] -> CONV3-8 -> RELU -> GAP")
    c = summary(conv, input_shape="64x64x3")
    assert c.rows[0].volume == "[64x64x3]" and c.rows[2].volume == "[64x64x8]"


def test_input_shape_argument_overrides_spec():
    s = summary("INPUT [32x32x3] -> CONV3-8", input_shape="16x8x1")
    assert s.rows[0].volume == "[16x8x1]" and s.rows[1].volume == "[16x8x8]"
    s = summary("CONV3-8 -> POOL2", input_shape=(3, 8, 8))
    assert s.rows[-1].volume == "[4x4x8]"


def test_net_without_input_shape_needs_one():
    from volnet.layers import Conv
    from volnet.net import Sequential

    with pytest.raises(VolnetError, match="input"):
        summary(Sequential([Conv(4, 3, pad=1)]))
    assert summary(Sequential([Conv(4, 3, pad=1)]), input_shape=(3, 8, 8)).totals["params"] == 112


def test_graph_summary():
    from volnet.layers import Conv, ReLU
    from volnet.net import Add, Graph

    g = Graph()
    g.add("conv1", Conv(4, 3, pad=1), ["input"])
    g.add("relu1", ReLU())
    g.add("sum", Add(), ["relu1", "input"])
    s = summary(g, input_shape=(4, 8, 8))
    assert [r.name for r in s.rows] == ["input", "conv1", "relu1", "sum"]
    assert s.totals["params"] == 4 * 4 * 9 + 4 and s.totals["activations"] == 2 * 4 * 8 * 8
    json.dumps(s.to_dict())


def test_str_and_to_dict(vgg):
    text = str(vgg)
    assert "138,357,544" in text and "1,728+64" in text and "102,760,448+4,096" in text
    assert "[224x224x64]" in text and "15,470,264,320" in text
    assert "parameters x3" in text and "activation gradients" in text
    d = json.loads(json.dumps(vgg.to_dict()))
    assert d["totals"]["params"] == 138_357_544 and d["input"] == "[224x224x3]"
    assert d["rows"][1]["token"] == "CONV3-64" and d["rows"][1]["weights"] == 1728
    assert d["memory"]["param_factor"] == 3


def test_bad_batch():
    with pytest.raises(VolnetError):
        summary("INPUT [8x8x3] -> CONV3-4", batch=0)


def test_sizing_advice_follows_the_notes_patterns():
    """The notes' layer sizing patterns: input divisible by 2 many times, small size-preserving CONV
    layers (big filters only first), pools no larger than 3x3. VGG-16 and ResNet follow all of them."""
    from volnet.spec import unbuilt
    from volnet.summary import sizing_advice

    net, shape = unbuilt("INPUT [30x30x3] -> CONV3-8p0 -> RELU -> CONV7-8 -> POOL4")
    advice = sizing_advice(net, shape)
    assert len(advice) == 5
    assert "input width 30" in advice[0] and "input height 30" in advice[1]
    assert "conv1" in advice[2] and "30x30 -> 28x28" in advice[2]
    assert "conv2" in advice[3] and "7x7" in advice[3]
    assert "pool1" in advice[4]
    s = summary("INPUT [30x30x3] -> CONV3-8p0 -> RELU -> CONV7-8 -> POOL4")
    assert s.advice == advice and "layer sizing patterns" in str(s) and s.to_dict()["advice"] == advice
    assert summary(VGG16).advice == []
    first_big = summary("INPUT [224x224x3] -> CONV7-64/2 floor -> POOL3/2p1 floor -> CONV3-64")
    assert first_big.advice == []
