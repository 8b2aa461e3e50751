"""Model zoo: exact parameter counts (shape inference only), the papers' volumes, PyTorch agreement of every
model's forward pass (eval-mode BN, and train-mode BN for ResNet), fine-tuning helpers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import max_rel, torch_or_skip
from volnet import zoo
from volnet.errors import VolnetError
from volnet.layers import FC, BatchNorm, Conv, Pool
from volnet.safetensors_io import to_torch_state_dict
from volnet.spec import unbuilt

# ------------------------------------------------------------------------------------------ counts

COUNTS = {
    "alexnet": 61_100_840,
    "zfnet": 62_357_608,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
}


@pytest.mark.parametrize("name", list(COUNTS))
def test_imagenet_parameter_counts(name: str) -> None:
    net = zoo.get(name, num_classes=1000, input_shape=(3, 224, 224), build=False)
    assert net.num_params() == COUNTS[name]
    assert net.params == {}, "counting must not allocate weights"
    assert net.output_shape((3, 224, 224)) == (1000,)


def test_names_and_lookup() -> None:
    assert zoo.names() == ["lenet5", "alexnet", "zfnet", "vgg11", "vgg16", "vgg19", "googlenet", "resnet18",
                           "resnet34", "resnet50"]
    assert zoo.lookup("ResNet-18") == "resnet18"
    with pytest.raises(VolnetError, match="did you mean 'vgg19'"):
        zoo.get("vgg17")
    with pytest.raises(VolnetError, match="num_classes"):
        zoo.get("resnet18", num_classes=0, build=False)


def test_lenet5_counts_against_the_paper() -> None:
    """LeNet-5: 61,706 here; the paper's 60,840 differs by its sparse C3 (1,516 instead of 2,416), its
    trainable subsampling (2 per map: 12 + 32) and its RBF output (840, no bias)."""
    for shape in [(1, 32, 32), (1, 28, 28)]:
        net = zoo.get("lenet5", input_shape=shape, build=False)
        per_layer = [sum(int(np.prod(s)) for s in layer.param_shapes(s_in).values())
                     for _, layer, s_in, _ in net.layer_shapes() if layer.param_shapes(s_in)]
        assert per_layer == [156, 2_416, 48_120, 10_164, 850]
        assert net.num_params() == 61_706
        assert [out for name, _, _, out in net.layer_shapes() if "pool" in name] == [(6, 14, 14),
                                                                                               (16, 5, 5)]
    paper = 156 + 12 + 1_516 + 32 + 48_120 + 10_164 + 840
    assert paper == 60_840 == 61_706 - (2_416 - 1_516) + (12 + 32) - 10
    assert zoo.spec("lenet5") == ("INPUT [32x32x1] -> CONV5-6p0 -> RELU -> AVGPOOL2 -> CONV5-16p0 -> RELU -> "
                                  "AVGPOOL2 -> CONV5-120p0 -> RELU -> FC-84 -> RELU -> FC-10")


def test_zfnet_volumes_match_the_paper() -> None:
    net = zoo.get("zfnet", build=False)
    vols = {name: out for name, _, _, out in net.layer_shapes()}
    assert vols["conv1"] == (96, 110, 110) and vols["pool1"] == (96, 55, 55)
    assert vols["conv2"] == (256, 26, 26) and vols["pool2"] == (256, 13, 13)
    assert vols["conv3"] == (384, 13, 13) and vols["conv5"] == (256, 13, 13) and vols["pool3"] == (256, 6, 6)
    layers = [7 * 7 * 3 * 96 + 96, 5 * 5 * 96 * 256 + 256, 3 * 3 * 256 * 384 + 384, 3 * 3 * 384 * 384 + 384,
              3 * 3 * 384 * 256 + 256, 6 * 6 * 256 * 4096 + 4096, 4096 * 4096 + 4096, 4096 * 1000 + 1000]
    assert net.num_params() == sum(layers) == 62_357_608


def test_alexnet_feature_map_is_6x6_at_224() -> None:
    """torchvision's AdaptiveAvgPool2d((6, 6)) is the identity at 224: volnet leaves it out."""
    net = zoo.get("alexnet", build=False)
    rows = net.layer_shapes()
    last_pool = [out for name, _, _, out in rows if name.startswith("pool")][-1]
    assert last_pool == (256, 6, 6)
    assert [out for name, _, _, out in rows if name == "conv1"] == [(64, 55, 55)]  # floor of 55.25


def test_small_input_variants() -> None:
    r = zoo.get("resnet18", input_shape=(3, 32, 32), num_classes=10, build=False)
    assert r.num_params() == 11_173_962  # CIFAR stem: CONV3-64, no max pool
    assert [n for n, _ in r.children()][:4] == ["conv1", "bn1", "relu", "layer1"]
    assert {name: out for name, _, _, out in r.layer_shapes()}["layer4.1.relu"] == (512, 4, 4)
    v = zoo.get("vgg11", input_shape="32x32x3", num_classes=10, build=False)
    fcs = [(s_in, layer.N) for _, layer, s_in, _ in v.layer_shapes() if isinstance(layer, FC)]
    assert fcs == [((512, 1, 1), 512), ((512,), 512), ((512,), 10)]
    imagenet_stem = zoo.get("resnet18", input_shape=(3, 32, 32), stem="imagenet", build=False)
    assert "maxpool" in dict(imagenet_stem.children())
    with pytest.raises(VolnetError, match="stem"):
        zoo.get("resnet18", stem="tiny", build=False)


def test_flat_models_are_one_spec() -> None:
    for name in ["lenet5", "alexnet", "zfnet", "vgg11", "vgg16", "vgg19"]:
        text = zoo.spec(name, num_classes=10, input_shape=(3, 64, 64) if name != "lenet5" else None)
        assert isinstance(text, str)
        net, shape = unbuilt(text)
        assert net.spec(shape) == zoo.get(name, num_classes=10, input_shape=shape, build=False).spec()
    assert zoo.spec("resnet18") is None and zoo.spec("googlenet") is None
    assert "POOL2 floor" in zoo.spec("vgg16", input_shape="100x100x3")


def test_torchvision_conventions() -> None:
    r = zoo.get("resnet50", build=False)
    convs = [layer for _, layer in r.named_layers() if isinstance(layer, Conv)]
    assert convs and not any(c.bias for c in convs), "a CONV followed by BN has no bias"
    assert dict(r.named_layers())["layer2.0.conv2"].stride == (2, 2)  # v1.5: stride on the 3x3 conv
    g = zoo.get("googlenet", build=False)
    assert {layer.eps for _, layer in g.named_layers() if isinstance(layer, BatchNorm)} == {1e-3}
    pools = {n: layer for n, layer in g.named_layers() if isinstance(layer, Pool)}
    assert pools["maxpool1"].fit == "ceil" and pools["inception3a.branch4.0"].stride == (1, 1)


# ------------------------------------------------------------------------------------------ PyTorch

CASES = [
    ("lenet5", (1, 32, 32), {}),
    ("lenet5", (1, 28, 28), {}),
    ("alexnet", (3, 224, 224), {"hidden": 64}),  # full size: checks the adaptive pool is the identity
    ("zfnet", (3, 112, 112), {}),  # ceil pools where ceil != floor
    ("vgg11", (3, 32, 32), {}),
    ("vgg16", (3, 32, 32), {}),
    ("vgg19", (3, 32, 32), {}),
    ("googlenet", (3, 64, 64), {}),
    ("resnet18", (3, 64, 64), {}),
    ("resnet18", (3, 32, 32), {}),
    ("resnet34", (3, 32, 32), {"stem": "imagenet"}),
    ("resnet50", (3, 64, 64), {}),
]


def randomize_bn(net, seed: int = 0) -> None:
    """Non-trivial BN parameters and running statistics, so eval mode is not the identity."""
    rng = np.random.default_rng(seed)
    for _, layer in net.named_layers():
        if isinstance(layer, BatchNorm):
            D = layer.params["w"].shape[0]
            layer.params["w"][:] = rng.uniform(0.5, 1.5, D)
            layer.params["b"][:] = rng.normal(0.0, 0.1, D)
            layer.buffers["running_mean"][:] = rng.normal(0.0, 0.1, D)
            layer.buffers["running_var"][:] = rng.uniform(0.5, 2.0, D)


def twins(name: str, shape: tuple[int, int, int], opts: dict, num_classes: int = 10):
    """The volnet model and its plain-PyTorch twin holding the same weights (via the state_dict names)."""
    torch_or_skip()
    from tests import torch_mirror

    net = zoo.get(name, num_classes=num_classes, input_shape=shape, seed=1, **opts)
    randomize_bn(net)
    model = torch_mirror.build(name, num_classes, shape, **opts)
    torch_mirror.load_numpy_state(model, to_torch_state_dict(net))
    return net, model


@pytest.mark.parametrize("name,shape,opts", CASES, ids=[f"{c[0]}-{c[1][1]}" for c in CASES])
def test_forward_matches_pytorch(name: str, shape: tuple[int, int, int], opts: dict) -> None:
    torch = torch_or_skip()
    net, model = twins(name, shape, opts)
    x = np.random.default_rng(2).standard_normal((1, *shape)).astype(np.float32)
    net.eval()
    model.eval()
    y = net.forward(x)
    with torch.no_grad():
        yt = model(torch.from_numpy(x)).numpy()
    assert y.shape == yt.shape == (1, 10) and y.dtype == np.float32
    assert max_rel(y, yt) < 1e-4


def test_batchnorm_train_mode_matches_pytorch() -> None:
    """Training mode: batch statistics in the forward pass and the same running-statistics update."""
    torch = torch_or_skip()
    net, model = twins("resnet18", (3, 16, 16), {})
    x = np.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(np.float32)
    net.train()
    model.train()
    y = net.forward(x)
    yt = model(torch.from_numpy(x)).detach().numpy()
    assert max_rel(y, yt) < 1e-4
    state = model.state_dict()
    for k, key in (("layer3.0.bn1.running_mean", "layer3.0.bn1.running_mean"),
                   ("layer4.1.bn2.running_var", "layer4.1.bn2.running_var")):
        assert max_rel(net.buffers[k], state[key].numpy()) < 1e-4
    net.eval()
    model.eval()
    with torch.no_grad():
        assert max_rel(net.forward(x), model(torch.from_numpy(x)).numpy()) < 1e-4


# ------------------------------------------------------------------------------------------ fine-tuning


def test_freeze_until_block() -> None:
    net = zoo.get("resnet18", input_shape=(3, 32, 32), num_classes=10, build=False)
    frozen = zoo.freeze(net, until="layer3")
    assert {"conv1.w", "bn1.w", "layer1.0.conv1.w", "layer3.1.bn2.b", "layer3.0.downsample.0.w"} <= frozen
    assert not any(k.startswith(("layer4", "fc")) for k in frozen)
    assert frozen == set(zoo.freeze(net, "until:layer3"))
    assert all(k in net.param_shapes(net.input_shape) for k in frozen)
    assert zoo.freeze(net, "layer3.0") < frozen
    assert zoo.freeze(zoo.get("vgg11", input_shape=(3, 32, 32), build=False), "conv2") == {
        "conv1.w", "conv1.b", "conv2.w", "conv2.b"}
    with pytest.raises(VolnetError, match="layer9"):
        zoo.freeze(net, "layer9")


def test_replace_head_keeps_the_body() -> None:
    net = zoo.get("resnet18", input_shape=(3, 16, 16), num_classes=1000, seed=0)
    before = {k: v for k, v in net.params.items() if not k.startswith("fc.")}
    assert zoo.head_name(net) == "fc"
    zoo.replace_head(net, 10, seed=3)
    assert net.params["fc.w"].shape == (10, 512) and net.params["fc.b"].shape == (10,)
    assert all(net.params[k] is v for k, v in before.items())
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert net.predict(x).shape == (2, 10)
    out = net.forward(x, train=True)
    net.backward(np.ones_like(out))
    assert net.grads["fc.w"].shape == (10, 512)
    g = zoo.get("googlenet", input_shape=(3, 32, 32), num_classes=5, build=False)
    zoo.replace_head(g, 7)
    assert g.output_shape((3, 32, 32)) == (7,)


def test_zoo_model_saves_and_loads(tmp_path) -> None:
    from volnet.io import load

    net = zoo.get("googlenet", input_shape=(3, 32, 32), num_classes=4, seed=5)
    randomize_bn(net)
    net.save(str(tmp_path / "g"))
    back = load(str(tmp_path / "g"))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
