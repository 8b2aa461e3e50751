"""The notation: tokenize -> parse -> expand -> infer_shapes -> to_layers -> build, errors with carets."""

from __future__ import annotations

import numpy as np
import pytest

from volnet.errors import ShapeError, SpecError, VolnetError
from volnet.spec import (
    Group,
    Item,
    build,
    caret,
    expand,
    format_shape,
    infer_shapes,
    parse,
    parse_shape,
    to_layers,
    tokenize,
)

NOTES_SPEC = "INPUT [32x32x3] -> [[CONV3-64 -> RELU]*2 -> POOL2]*3 -> FC-512 -> RELU -> FC-10"
VGG16 = (
    "INPUT [224x224x3] -> [CONV3-64 -> RELU]*2 -> POOL2 -> [CONV3-128 -> RELU]*2 -> POOL2 -> "
    "[CONV3-256 -> RELU]*3 -> POOL2 -> [CONV3-512 -> RELU]*3 -> POOL2 -> [CONV3-512 -> RELU]*3 -> POOL2 -> "
    "FC-4096 -> RELU -> FC-4096 -> RELU -> FC-1000"
)


def kinds(spec: str) -> list[str]:
    return [it.kind for it in expand(parse(tokenize(spec)))]


def items(spec: str) -> list[Item]:
    return expand(parse(tokenize(spec)))


# -- stage 1: tokens ---------------------------------------------------------------------------------


def test_tokenize_kinds_and_positions():
    toks = tokenize("INPUT [32x32x3] -> [CONV3-64 -> RELU]*2")
    assert [t.kind for t in toks] == [
        "WORD", "SHAPE", "ARROW", "LBRACK", "WORD", "ARROW", "WORD", "RBRACK", "REPEAT",
    ]
    assert toks[1].value == (3, 32, 32)  # [WxHxD] -> (C, H, W)
    assert toks[-1].value == 2
    conv = toks[4]
    assert "INPUT [32x32x3] -> [CONV3-64 -> RELU]*2"[conv.pos:conv.end] == "CONV3-64"


def test_tokenize_no_spaces_unicode_arrow_and_lone_dash():
    assert [t.text for t in tokenize("FC-10->RELU")] == ["FC-10", "->", "RELU"]
    assert [t.kind for t in tokenize("CONV3-8 → RELU - POOL2")] == ["WORD", "ARROW", "WORD", "ARROW", "WORD"]
    assert [t.text for t in tokenize("[ RELU ] * 3")][-1] == "* 3"


def test_tokenize_bad_character_has_caret():
    with pytest.raises(SpecError) as e:
        tokenize("INPUT [8x8x3] -> CONV3-8 ; RELU")
    lines = str(e.value).splitlines()
    assert "';'" in lines[0] and "column 26" in lines[0]
    assert lines[2].index("^") == lines[1].index(";")


# -- stage 2 and 3: tree and expansion -----------------------------------------------------------------


def test_parse_tree_has_groups():
    tree = parse(tokenize(NOTES_SPEC))
    assert isinstance(tree, Group) and tree.repeat == 1
    outer = tree.items[1]
    assert isinstance(outer, Group) and outer.repeat == 3
    inner = outer.items[0]
    assert isinstance(inner, Group) and inner.repeat == 2
    assert [it.kind for it in inner.items] == ["CONV", "RELU"]


def test_expand_notes_pattern():
    ks = kinds(NOTES_SPEC)
    assert ks == ["INPUT"] + (["CONV", "RELU"] * 2 + ["POOL"]) * 3 + ["FC", "RELU", "FC"]


def test_expand_remembers_source_positions():
    its = items(NOTES_SPEC)
    convs = [it for it in its if it.kind == "CONV"]
    assert len(convs) == 6
    assert all(NOTES_SPEC[c.pos:c.end] == "CONV3-64" for c in convs)
    assert its[-1].pos == NOTES_SPEC.rindex("FC-10")


def test_repeat_zero_drops_group_and_group_without_star_is_once():
    assert kinds("INPUT [8x8x3] -> [CONV3-8 -> RELU]*0 -> FC-2") == ["INPUT", "FC"]
    assert kinds("[RELU -> RELU] -> RELU") == ["RELU"] * 3


def test_layer_words():
    its = items(
        "INPUT [28x28] -> CONV7-96/2 -> CONV11-96/4p0 -> CONV3-64d2 -> DCONV3-64 d2 -> CONV3x5-16 -> "
        "LOCAL5-8/2 -> POOL2 -> POOL3/2 -> MAXPOOL3/2p1 -> AVGPOOL2 -> L2POOL2 -> GAP -> RELU -> FC-10 -> "
        "LRN -> LRN3 -> BN -> DROPOUT0.25 -> DROPOUT -> SOFTMAX -> FLATTEN"
    )
    got = [(it.kind, it.kwargs) for it in its]
    assert got == [
        ("INPUT", {"shape": (1, 28, 28)}),
        ("CONV", {"K": 96, "F": 7, "stride": 2}),
        ("CONV", {"K": 96, "F": 11, "stride": 4, "pad": 0}),
        ("CONV", {"K": 64, "F": 3, "dilation": 2}),
        ("CONV", {"K": 64, "F": 3, "dilation": 2}),
        ("CONV", {"K": 16, "F": (3, 5)}),
        ("LOCAL", {"K": 8, "F": 5, "stride": 2}),
        ("POOL", {"mode": "max", "F": 2}),
        ("POOL", {"mode": "max", "F": 3, "stride": 2}),
        ("POOL", {"mode": "max", "F": 3, "stride": 2, "pad": 1}),
        ("POOL", {"mode": "avg", "F": 2}),
        ("POOL", {"mode": "l2", "F": 2}),
        ("GAP", {}), ("RELU", {}), ("FC", {"N": 10}), ("LRN", {}), ("LRN", {"size": 3}), ("BN", {}),
        ("DROPOUT", {"p": 0.25}), ("DROPOUT", {}), ("SOFTMAX", {}), ("FLATTEN", {}),
    ]


def test_case_insensitive_and_whitespace_free():
    a = items("input [32x32x3] -> conv3-16 -> relu -> pool2 -> fc-10")
    b = items("INPUT\n  [32 x 32 x 3]\n->CONV3-16\n\t-> RELU->POOL2 ->\n FC-10")
    assert [(x.kind, x.kwargs) for x in a] == [(x.kind, x.kwargs) for x in b]


def test_fit_words_attach_to_layer():
    its = items("INPUT [224x224x3] -> CONV7-64/2p3 floor -> POOL3/2 ceil -> CONV3-8 strict")
    assert its[1].kwargs["fit"] == "floor" and its[1].text == "CONV7-64/2p3 floor"
    assert its[2].kwargs["fit"] == "ceil"
    assert its[3].kwargs["fit"] == "strict"


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("INPUT [32x32x3] -> CONVV3-64 -> RELU", "did you mean 'CONV3-64'"),
        ("INPUT [32x32x3] -> CONV3-64 -> RELUU", "did you mean 'RELU'"),
        ("INPUT [32x32x3] -> POOOL2", "did you mean 'POOL2'"),
        ("INPUT [32x32x3] -> SOFTMAKS", "did you mean 'SOFTMAX'"),
        ("INPUT [32x32x3] -> CONV3-64 -> POOL? -> FC-10", "optional pool"),
        ("INPUT [32x32x3] -> CONV -> RELU", "CONV{F}-{K}"),
        ("INPUT [32x32x3] -> CONV3 -> RELU", "CONV{F}-{K}"),
        ("INPUT [32x32x3] -> FC", "FC-{N}"),
        ("INPUT [32x32x3] -> DCONV3-8", "needs a dilation"),
        ("INPUT [32x32x3] -> RELU floor", "applies to CONV, LOCAL or POOL"),
        ("INPUT [32x32x3] -> CONV3-8 RELU", "expected '->'"),
        ("INPUT [32x32x3] -> -> RELU", "expected a layer"),
        ("INPUT [32x32x3] -> RELU ->", "ends with '->'"),
        ("INPUT [32x32x3] -> [CONV3-8 -> RELU*2", "must follow a ']'"),
        ("INPUT [32x32x3] -> [CONV3-8 -> RELU", "never closed"),
        ("INPUT [32x32x3] -> RELU]", "without a matching"),
        ("INPUT [32x32x3] -> [ ]*2", "empty group"),
        ("INPUT [32x32x3] -> FC 10", "numbers belong to the layer word"),
        ("RELU -> INPUT [32x32x3]", "INPUT must come first"),
        ("[INPUT [8x8x3] -> RELU]*2", "INPUT must come first"),
        ("INPUT [32x32x3] -> [32x32x12]", "can only follow INPUT"),
        ("INPUT [32x32x3] -> CONV7-8/2/2", "twice"),
        ("INPUT [32x32x3] -> DROPOUT1.5", "[0, 1)"),
        ("INPUT [224x224x3] -> [[CONV3-64]*2 -> POOL2] -> ...", "'...' stands for layers left out"),
        ("", "empty spec"),
    ],
)
def test_spec_errors(spec, needle):
    with pytest.raises(SpecError) as e:
        build(spec)
    msg = str(e.value)
    assert needle in msg.splitlines()[0], msg
    assert isinstance(e.value, ValueError) and isinstance(e.value, VolnetError)
    if spec:
        assert len(msg.splitlines()) == 3 and "^" in msg.splitlines()[2]


def test_unknown_token_caret_under_token():
    spec = "INPUT [32x32x3] -> CONV3-64 -> RELUU -> FC-10"
    with pytest.raises(SpecError) as e:
        tokenize(spec) and parse(tokenize(spec))
    first, src, marks = str(e.value).splitlines()
    assert "line 1, column 32" in first
    assert src.strip() == spec
    start = src.index("RELUU")
    assert marks[start:].startswith("^^^^^") and marks[:start].strip() == ""


def test_caret_multiline_and_long_lines():
    spec = "INPUT [8x8x3]\n-> CONV3-8\n-> BOGUS\n-> FC-2"
    with pytest.raises(SpecError) as e:
        build(spec)
    first, src, marks = str(e.value).splitlines()
    assert "line 3, column 4" in first and src.strip() == "-> BOGUS"
    assert marks.index("^") == src.index("BOGUS")
    long = " -> ".join(["RELU"] * 60) + " -> NOPE"
    shown = caret(long, long.index("NOPE"), long.index("NOPE") + 4).splitlines()
    assert len(shown[0]) < 140 and shown[1].index("^") == shown[0].index("NOPE")


# -- stage 4: shapes and layers ------------------------------------------------------------------------


def test_parse_and_format_shape():
    assert parse_shape("224x224x3") == (3, 224, 224)
    assert parse_shape("[28x28]") == (1, 28, 28)
    assert parse_shape("64x32x3") == (3, 32, 64)  # W=64 wide, H=32 high
    assert parse_shape((3, 8, 8)) == (3, 8, 8)
    assert format_shape((3, 32, 64)) == "[64x32x3]" and format_shape((10,)) == "[1x1x10]"
    with pytest.raises(ShapeError):
        parse_shape("32by32")


def test_infer_shapes_notes_example():
    rows = infer_shapes(items("INPUT [32x32x3] -> CONV3-12 -> RELU -> POOL2 -> FC-10"))
    assert [format_shape(r.out_shape) for r in rows] == ["[32x32x12]", "[32x32x12]", "[16x16x12]", "[1x1x10]"]
    assert rows[0].in_shape == (3, 32, 32) and rows[-1].in_shape == (12, 16, 16)


def test_infer_shapes_input_override_and_missing():
    its = items("INPUT [32x32x3] -> CONV3-4 -> POOL2")
    assert infer_shapes(its, "64x48x1")[-1].out_shape == (4, 24, 32)
    assert infer_shapes(items("CONV3-4 -> POOL2"), (3, 8, 8))[-1].out_shape == (4, 4, 4)
    with pytest.raises(SpecError, match="no input volume"):
        infer_shapes(items("CONV3-4 -> POOL2"))


def test_default_padding_is_size_preserving():
    rows = infer_shapes(items("INPUT [32x32x3] -> CONV3-8 -> CONV5-8 -> CONV7-8 -> CONV3-8d2 -> CONV3x5-8"))
    assert all(r.out_shape == (8, 32, 32) for r in rows)
    rows = infer_shapes(items("INPUT [227x227x3] -> CONV11-96/4p0 -> POOL3/2"))
    assert [r.out_shape for r in rows] == [(96, 55, 55), (96, 27, 27)]  # AlexNet


def test_shape_error_names_layer_formula_and_caret():
    spec = "INPUT [10x10x3] -> RELU -> CONV3-8/2p0 -> FC-2"
    with pytest.raises(ShapeError) as e:
        infer_shapes(items(spec))
    first, src, marks = str(e.value).splitlines()
    assert "layer 2" in first and "CONV3-8/2p0" in first and "column 28" in first
    assert "(10 - 3 + 2*0)/2 + 1 = 4.5" in first
    assert src.strip() == spec
    assert marks.index("^") == src.index("CONV3-8/2p0") and marks.count("^") == len("CONV3-8/2p0")


def test_fit_words_resolve_fractional_sizes():
    rows = infer_shapes(items("INPUT [224x224x3] -> CONV7-64/2p3 floor -> POOL3/2p1 floor"))
    assert [r.out_shape for r in rows] == [(64, 112, 112), (64, 56, 56)]  # ResNet stem
    rows = infer_shapes(items("INPUT [112x112x64] -> POOL3/2 ceil"))
    assert rows[0].out_shape == (64, 56, 56)  # GoogLeNet pools
    with pytest.raises(ShapeError):
        infer_shapes(items("INPUT [112x112x64] -> POOL3/2"))


def test_to_layers_classes_and_kwargs():
    from volnet import layers as L

    ls = to_layers(items("INPUT [8x8x3] -> CONV3-4 -> LOCAL3-2p0 -> AVGPOOL2 -> FC-3 -> DROPOUT0.5"))
    assert [type(x) for x in ls] == [L.Conv, L.Local, L.Pool, L.FC, L.Dropout]
    assert ls[0].pad == (1, 1) and ls[1].pad == (0, 0) and ls[2].mode == "avg" and ls[4].p == 0.5
    assert not ls[0].params  # unbuilt


def test_bad_value_for_layer_is_spec_error():
    with pytest.raises(SpecError) as e:
        build("INPUT [8x8x3] -> CONV3-0")
    assert "CONV3-0" in str(e.value).splitlines()[0] and "^" in str(e.value)


# -- build and round trip ------------------------------------------------------------------------------


def test_build_returns_built_sequential():
    from volnet.net import Sequential

    net = build("INPUT [32x32x3] -> CONV5-12 -> RELU -> POOL2 -> FC-10", seed=0)
    assert isinstance(net, Sequential)
    assert net.params["conv1.w"].shape == (12, 3, 5, 5) and net.params["fc1.w"].shape == (10, 16 * 16 * 12)
    out = net.forward(np.zeros((2, 3, 32, 32), dtype=np.float32), train=False)
    assert out.shape == (2, 10)


def test_build_seed_reproducible():
    a = build("INPUT [8x8x3] -> CONV3-4 -> FC-2", seed=3)
    b = build("INPUT [8x8x3] -> CONV3-4 -> FC-2", seed=3)
    c = build("INPUT [8x8x3] -> CONV3-4 -> FC-2", seed=4)
    assert np.array_equal(a.params["conv1.w"], b.params["conv1.w"])
    assert not np.array_equal(a.params["conv1.w"], c.params["conv1.w"])


ROUND_TRIP = [
    NOTES_SPEC,
    VGG16,
    "INPUT [28x28] -> CONV5-6p0 -> RELU -> AVGPOOL2 -> CONV5-16p0 -> RELU -> AVGPOOL2 -> FC-120 -> FC-10",
    "INPUT [227x227x3] -> CONV11-96/4p0 -> RELU -> LRN -> POOL3/2 -> CONV5-256 -> LRN3 -> MAXPOOL3/2 -> "
    "FC-64 -> DROPOUT0.5 -> DROPOUT0 -> DROPOUT1e-05 -> FC-10 -> SOFTMAX",
    "INPUT [224x224x3] -> CONV7-64/2p3 floor -> BN -> RELU -> POOL3/2p1 floor -> CONV3-8d2 -> "
    "DCONV3-8 d3 -> L2POOL2 -> GAP -> FLATTEN -> FC-10",
    "INPUT [20x13x3] -> CONV3x5-4 -> CONV3x1-4/2x1p0 -> LOCAL3-2 -> POOL2x1 -> AVGPOOL3/2 ceil -> FC-3",
]


@pytest.mark.parametrize("spec", ROUND_TRIP)
def test_spec_round_trip(spec):
    """build(net.spec()) has the same tokens and parameter shapes (checked unbuilt: VGG-16 is instant)."""
    from volnet.spec import unbuilt

    net, shape = unbuilt(spec)
    text = net.spec(shape)
    again, shape_b = unbuilt(text)
    assert shape_b == shape and again.spec(shape) == text
    ta = [layer.token() for _, layer in net.named_layers()]
    assert ta == [layer.token() for _, layer in again.named_layers()]
    pa = [layer.param_shapes(i) for _, layer, i, _ in net.layer_shapes(shape)]
    assert pa == [layer.param_shapes(i) for _, layer, i, _ in again.layer_shapes(shape)]


def test_built_net_spec_round_trip():
    spec = "INPUT [32x32x3] -> [[CONV3-8 -> RELU]*2 -> POOL2]*2 -> FC-16 -> RELU -> FC-10"
    net = build(spec)
    again = build(net.spec())
    assert again.spec() == net.spec()
    assert {k: v.shape for k, v in again.params.items()} == {k: v.shape for k, v in net.params.items()}


def test_vgg16_full_spec_builds_shapes_without_allocating():
    from volnet.spec import unbuilt

    net, shape = unbuilt(VGG16)
    outs = [o for _, _, _, o in net.layer_shapes(shape)]
    assert outs[-1] == (1000,)
    assert (512, 7, 7) in outs
    assert not any(layer.params for _, layer in net.named_layers())


def test_shape_error_in_the_notation_suggests_the_notation_words():
    with pytest.raises(ShapeError) as e:
        build("INPUT [7x7x3] -> CONV3-8/3p0")
    msg = str(e.value)
    assert "'CONV3-8/3p0 floor' (crop)" in msg and "'CONV3-8/3p0 ceil'" in msg and "fit=" not in msg
    assert build("INPUT [7x7x3] -> CONV3-8/3p0 floor").output_shape((3, 7, 7)) == (8, 2, 2)
    assert build("INPUT [7x7x3] -> CONV3-8/3p0 ceil").output_shape((3, 7, 7)) == (8, 3, 3)
