"""Model zoo: the case studies of the notes (LeNet, AlexNet, ZFNet, VGGNet, GoogLeNet, ResNet) as volnet nets.

Everything the notation can express is written in it: LeNet-5, AlexNet, ZFNet and VGG are one spec
string each (:func:`spec` returns it); ResNet and GoogLeNet have their stem, their blocks' branches and
their head written as specs, wired into :class:`volnet.net.Graph` blocks (residual ``Add``, Inception
``Concat``). Two rules turn the notation into the PyTorch/torchvision layout:

- a CONV directly followed by BN has no bias (BN's beta replaces it), as torchvision's ResNet/GoogLeNet;
- GoogLeNet's BN uses eps = 0.001 (torchvision's ``BasicConv2d``), the notation's BN has 1e-5.

Layer names follow torchvision wherever the net has a hierarchy (``layer1.0.conv1``,
``layer2.0.downsample.0``, ``inception3a.branch2.1.conv``, ``fc``), so :mod:`volnet.safetensors_io` maps
PyTorch ``state_dict`` keys by renaming ``w``/``b`` to ``weight``/``bias``; the flat nets (LeNet, AlexNet,
ZFNet, VGG) use the notation's default names (``conv1``, ``relu1``, ``fc1``) and map to ``features.N`` /
``classifier.N``.

Parameter counts at 1000 classes on 224x224x3 (torchvision's numbers):

==========  ============  ==================================================================================
model       parameters    layout
==========  ============  ==================================================================================
AlexNet     61,100,840    torchvision: CONV11-64/4p2, 192, 384, 256, 256 filters; FC 9216-4096-4096-1000
ZFNet       62,357,608    paper Fig. 3: CONV7-96/2, POOL3/2, CONV5-256/2, POOL3/2, 384, 384, 256, FC-4096 x2
VGG-11      132,863,336   configuration A
VGG-16      138,357,544   configuration D (the notes' table)
VGG-19      143,667,240   configuration E
GoogLeNet   6,624,904     torchvision (BN conv blocks, no auxiliary heads, ceil-mode pools)
ResNet-18   11,689,512    basic blocks [2, 2, 2, 2]
ResNet-34   21,797,672    basic blocks [3, 4, 6, 3]
ResNet-50   25,557,032    bottleneck blocks [3, 4, 6, 3] (torchvision v1.5: stride on the 3x3 conv)
LeNet-5     61,706        32x32x1, 10 classes (the paper's 60,840: see :func:`lenet5`)
==========  ============  ==================================================================================

Input size options: every builder takes ``input_shape`` ((C, H, W) or ``"WxHxD"``). PyTorch floors every
strided layer, so those carry the notation's ``floor`` word (GoogLeNet's and ZFNet's pools ``ceil``).
torchvision's AlexNet/VGG put an ``AdaptiveAvgPool2d`` (6x6 / 7x7) before the classifier: at 224x224 the
feature map already has that size, so the pool is the identity and volnet leaves it out; at other sizes the
first FC is sized for the actual feature map (H' x W' x D) instead. Inputs smaller than 224 get a narrower
classifier (``hidden=512`` units instead of 4096, e.g. VGG-11 on 32x32: FC 512-512-512-10 on the 1x1x512
map) unless ``hidden`` is given. ResNets on inputs below 64x64 get the CIFAR stem (CONV3-64, no max pool)
unless ``stem`` is given.

>>> net = get("vgg16", build=False)
>>> net.num_params()
138357544
>>> spec("vgg11", num_classes=10, input_shape="32x32x3")[:60]
'INPUT [32x32x3] -> CONV3-64 -> RELU -> POOL2 -> CONV3-128 ->'

Fine-tuning helpers: :func:`replace_head` (a fresh classifier for another number of classes) and
:func:`freeze` (the parameter names up to a named block, for the trainer to leave out of the optimizer).

See: ``torchvision.models`` (``alexnet``, ``vgg16``, ``googlenet``, ``resnet18``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from volnet.errors import VolnetError
from volnet.layers import FC, BatchNorm, Conv, Layer, ReLU
from volnet.net import Add, Concat, Container, Graph, Sequential
from volnet.spec import items_of, parse_shape, to_layers, unbuilt

Shape = tuple[int, ...]
ShapeArg = tuple[int, int, int] | list[int] | str | None

IMAGENET_SHAPE: Shape = (3, 224, 224)

# --------------------------------------------------------------------------- helpers


def _shape(input_shape: ShapeArg, default: Shape) -> Shape:
    shape = default if input_shape is None else parse_shape(input_shape)  # type: ignore[arg-type]
    if len(shape) != 3:
        raise VolnetError(f"zoo models take an image volume (C, H, W) = WxHxD, got {shape}")
    return tuple(int(v) for v in shape)


def _classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise VolnetError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return int(num_classes)


def _hidden(hidden: int | None, shape: Shape) -> int:
    """Width of the FC classifier: 4096 (the papers) from 224x224 up, 512 on smaller inputs."""
    if hidden is None:
        return 4096 if min(shape[1:]) >= 224 else 512
    if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden < 1:
        raise VolnetError(f"hidden (FC width) must be an integer >= 1, got {hidden!r}")
    return int(hidden)


def _torch_rules(layers: list[Layer], bn_eps: float | None = None) -> list[Layer]:
    """torchvision's conventions the notation does not spell: no CONV bias before BN; BN eps."""
    for i, layer in enumerate(layers):
        if isinstance(layer, Conv) and i + 1 < len(layers) and isinstance(layers[i + 1], BatchNorm):
            layer.bias = False
        if isinstance(layer, BatchNorm) and bn_eps is not None:
            layer.eps = float(bn_eps)
    return layers


def layers_of(body: str, bn_eps: float | None = None) -> list[Layer]:
    """Unbuilt layers of a notation body without ``INPUT`` (``"CONV3-64 -> BN -> RELU"``), with the
    torchvision rules applied (no CONV bias before BN; ``bn_eps`` for every BN when given)."""
    return _torch_rules(to_layers(items_of(body)), bn_eps)


def _finish(net: Container, shape: Shape, build: bool, seed: int) -> Container:
    """Check every volume for ``shape``; build (He init from ``seed``) or leave it lazy with its shape set."""
    net.output_shape(shape)  # ShapeError naming the layer that does not fit
    if build:
        net.build(shape, seed)
    else:
        net.input_shape = shape
        net.seed = int(seed)
    return net


def _from_spec(text: str, shape: Shape, build: bool, seed: int) -> Sequential:
    net, _ = unbuilt(text, shape)
    _torch_rules(net.layers)
    return _finish(net, shape, build, seed)  # type: ignore[return-value]


def _named(layers: list[Layer], names: list[str]) -> list[tuple[str, Layer]]:
    assert len(layers) == len(names), (len(layers), names)
    return list(zip(names, layers))


# --------------------------------------------------------------------------- LeNet-5


def lenet5_spec(num_classes: int = 10, input_shape: ShapeArg = None) -> str:
    """LeNet-5 in the notation. 32x32x1: the paper's C1 (no padding); 28x28x1 (MNIST): C1 padded by 2."""
    C, H, W = _shape(input_shape, (1, 32, 32))
    p = max(0, (32 - min(H, W)) // 2)
    return (f"INPUT [{W}x{H}x{C}] -> CONV5-6p{p} -> RELU -> AVGPOOL2 -> CONV5-16p0 -> RELU -> AVGPOOL2 -> "
            f"CONV5-120p0 -> RELU -> FC-84 -> RELU -> FC-{_classes(num_classes)}")


def lenet5(num_classes: int = 10, input_shape: ShapeArg = None, build: bool = True,
           seed: int = 0) -> Sequential:
    """LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition", Fig. 2).

    32x32x1 -> C1 CONV5-6 [28x28x6] -> S2 AVGPOOL2 [14x14x6] -> C3 CONV5-16 [10x10x16] -> S4 AVGPOOL2
    [5x5x16] -> C5 CONV5-120 [1x1x120] -> F6 FC-84 -> output FC-10. On 28x28x1 (MNIST as stored) C1 pads
    by 2, which gives the same volumes from C1 on.

    Parameters: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706. The paper has 60,840: its C3 connects each
    of the 16 maps to only 3-6 of the 6 S2 maps (1,516 instead of 2,416 parameters), its subsampling layers
    have a trainable coefficient and bias per map (12 + 32) where volnet averages, and its output is 10
    RBF units on 84 inputs (840, no bias). Activations are ReLU (the paper: scaled tanh).
    """
    shape = _shape(input_shape, (1, 32, 32))
    return _from_spec(lenet5_spec(num_classes, shape), shape, build, seed)


# --------------------------------------------------------------------------- AlexNet, ZFNet


def alexnet_spec(num_classes: int = 1000, input_shape: ShapeArg = None, hidden: int | None = None) -> str:
    """torchvision's AlexNet in the notation (see :func:`alexnet`)."""
    C, H, W = shape = _shape(input_shape, IMAGENET_SHAPE)
    h = _hidden(hidden, shape)
    return (f"INPUT [{W}x{H}x{C}] -> CONV11-64/4p2 floor -> RELU -> POOL3/2 floor -> CONV5-192 -> RELU -> "
            f"POOL3/2 floor -> CONV3-384 -> RELU -> CONV3-256 -> RELU -> CONV3-256 -> RELU -> "
            f"POOL3/2 floor -> DROPOUT0.5 -> FC-{h} -> RELU -> DROPOUT0.5 -> FC-{h} -> RELU -> "
            f"FC-{_classes(num_classes)}")


def alexnet(num_classes: int = 1000, input_shape: ShapeArg = None, hidden: int | None = None,
            build: bool = True, seed: int = 0) -> Sequential:
    """AlexNet as torchvision lays it out (one GPU, 64-192-384-256-256 filters, no LRN), 61,100,840 params.

    224x224x3 -> CONV11-64/4p2 [55x55x64] (floor: (224 - 11 + 4)/4 + 1 = 55.25) -> POOL3/2 [27x27x64] ->
    CONV5-192 [27x27x192] -> POOL3/2 [13x13x192] -> CONV3-384 -> CONV3-256 -> CONV3-256 [13x13x256] ->
    POOL3/2 [6x6x256] -> FC-4096 -> FC-4096 -> FC-1000 (dropout 0.5 before the first two FC).
    torchvision's ``AdaptiveAvgPool2d((6, 6))`` is the identity at 224 (the map is 6x6 already) and is left
    out; on other sizes the first FC takes the actual map. The paper's two-GPU version (96 filters, LRN,
    227x227) has 60,965,224 parameters.
    """
    shape = _shape(input_shape, IMAGENET_SHAPE)
    return _from_spec(alexnet_spec(num_classes, shape, hidden), shape, build, seed)


def zfnet_spec(num_classes: int = 1000, input_shape: ShapeArg = None, hidden: int | None = None) -> str:
    """ZFNet in the notation (see :func:`zfnet`)."""
    C, H, W = shape = _shape(input_shape, IMAGENET_SHAPE)
    h = _hidden(hidden, shape)
    return (f"INPUT [{W}x{H}x{C}] -> CONV7-96/2p1 floor -> RELU -> POOL3/2 ceil -> LRN -> CONV5-256/2p0 -> "
            f"RELU -> POOL3/2 ceil -> LRN -> CONV3-384 -> RELU -> CONV3-384 -> RELU -> CONV3-256 -> RELU -> "
            f"POOL3/2 ceil -> DROPOUT0.5 -> FC-{h} -> RELU -> DROPOUT0.5 -> FC-{h} -> RELU -> "
            f"FC-{_classes(num_classes)}")


def zfnet(num_classes: int = 1000, input_shape: ShapeArg = None, hidden: int | None = None,
          build: bool = True, seed: int = 0) -> Sequential:
    """ZFNet (Zeiler & Fergus 2013, "Visualizing and Understanding Convolutional Networks", Fig. 3).

    224x224x3 -> 96 filters 7x7 stride 2 [110x110x96] (P=1, floor) -> 3x3/2 max pool [55x55x96] (ceil) ->
    contrast normalisation (LRN) -> 256 filters 5x5 stride 2 [26x26x256] -> 3x3/2 pool [13x13x256] -> LRN ->
    CONV3-384 -> CONV3-384 -> CONV3-256 [13x13x256] -> 3x3/2 pool [6x6x256] -> FC-4096 -> FC-4096 -> C-way
    softmax (dropout 0.5 in the FC layers, as AlexNet). The paper's volumes need P=1 and a floor on the
    first CONV and ceil pools (Caffe's rounding). Parameters: 14,208 + 614,656 + 885,120 + 1,327,488 +
    884,992 + 37,752,832 + 16,781,312 + 4,097,000 = 62,357,608.
    """
    shape = _shape(input_shape, IMAGENET_SHAPE)
    return _from_spec(zfnet_spec(num_classes, shape, hidden), shape, build, seed)


# --------------------------------------------------------------------------- VGG

VGG_CONFIGS: dict[int, list[tuple[int, int]]] = {
    # (convs per stage, filters): configurations A, D and E of Simonyan & Zisserman, Table 1
    11: [(1, 64), (1, 128), (2, 256), (2, 512), (2, 512)],
    16: [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)],
    19: [(2, 64), (2, 128), (4, 256), (4, 512), (4, 512)],
}


def vgg_spec(depth: int, num_classes: int = 1000, input_shape: ShapeArg = None,
             hidden: int | None = None) -> str:
    """VGG-11/16/19 in the notation: ``[[CONV3-64 -> RELU]*2 -> POOL2] -> ...``, torchvision's head order
    FC -> RELU -> DROPOUT. Pools carry ``floor`` when the input side is not a multiple of 32."""
    if depth not in VGG_CONFIGS:
        raise VolnetError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {depth!r}")
    C, H, W = shape = _shape(input_shape, IMAGENET_SHAPE)
    h = _hidden(hidden, shape)
    pool = "POOL2" if H % 32 == 0 and W % 32 == 0 else "POOL2 floor"
    stages = []
    for n, k in VGG_CONFIGS[depth]:
        convs = f"CONV3-{k} -> RELU" if n == 1 else f"[CONV3-{k} -> RELU]*{n}"
        stages.append(f"{convs} -> {pool}")
    return (f"INPUT [{W}x{H}x{C}] -> " + " -> ".join(stages)
            + f" -> FC-{h} -> RELU -> DROPOUT0.5 -> FC-{h} -> RELU -> DROPOUT0.5 -> "
            f"FC-{_classes(num_classes)}")


def vgg(depth: int, num_classes: int = 1000, input_shape: ShapeArg = None, hidden: int | None = None,
        build: bool = True, seed: int = 0) -> Sequential:
    """VGGNet (Simonyan & Zisserman 2014): 3x3 convs with P=1 and 2x2 max pools only, then 3 FC layers.

    torchvision's ``AdaptiveAvgPool2d((7, 7))`` is the identity at 224x224 (the map is 7x7x512) and is left
    out; on 32x32 the map is 1x1x512 and the classifier is FC-512 -> FC-512 -> FC-N (``hidden=512``).
    """
    shape = _shape(input_shape, IMAGENET_SHAPE)
    return _from_spec(vgg_spec(depth, num_classes, shape, hidden), shape, build, seed)


def vgg11(num_classes: int = 1000, input_shape: ShapeArg = None, hidden: int | None = None,
          build: bool = True, seed: int = 0) -> Sequential:
    """VGG-11 (configuration A): 132,863,336 parameters at 224x224, 1000 classes. See :func:`vgg`."""
    return vgg(11, num_classes, input_shape, hidden, build, seed)


def vgg16(num_classes: int = 1000, input_shape: ShapeArg = None, hidden: int | None = None,
          build: bool = True, seed: int = 0) -> Sequential:
    """VGG-16 (configuration D, the notes' table): 138,357,544 parameters. See :func:`vgg`."""
    return vgg(16, num_classes, input_shape, hidden, build, seed)


def vgg19(num_classes: int = 1000, input_shape: ShapeArg = None, hidden: int | None = None,
          build: bool = True, seed: int = 0) -> Sequential:
    """VGG-19 (configuration E): 143,667,240 parameters. See :func:`vgg`."""
    return vgg(19, num_classes, input_shape, hidden, build, seed)


# --------------------------------------------------------------------------- ResNet


def _residual_block(inplanes: int, planes: int, stride: int, bottleneck: bool) -> tuple[Graph, int]:
    """One residual block as a Graph: the branch (a spec) -> ADD(branch, shortcut) -> RELU.

    Basic: CONV3-p(/2) -> BN -> RELU -> CONV3-p -> BN. Bottleneck: CONV1-p -> BN -> RELU -> CONV3-p(/2) ->
    BN -> RELU -> CONV1-4p -> BN. The shortcut is the identity, or ``downsample`` = CONV1-out/2 -> BN (the
    projection) when the stride or the depth changes. Node names are torchvision's.
    """
    s = f"/{stride} floor" if stride != 1 else ""
    if bottleneck:
        out = planes * 4
        body = f"CONV1-{planes} -> BN -> RELU -> CONV3-{planes}{s} -> BN -> RELU -> CONV1-{out} -> BN"
        names = ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3"]
    else:
        out = planes
        body = f"CONV3-{planes}{s} -> BN -> RELU -> CONV3-{planes} -> BN"
        names = ["conv1", "bn1", "relu1", "conv2", "bn2"]
    g = Graph()
    for name, layer in _named(layers_of(body), names):
        g.add(name, layer)
    shortcut = "input"
    if stride != 1 or inplanes != out:
        g.add("downsample", Sequential(_named(layers_of(f"CONV1-{out}{s} -> BN"), ["0", "1"])), ["input"])
        shortcut = "downsample"
    g.add("add", Add(), [names[-1], shortcut])
    g.add("relu", ReLU())
    return g, out


def resnet(depth: int, num_classes: int = 1000, input_shape: ShapeArg = None, stem: str | None = None,
           build: bool = True, seed: int = 0) -> Sequential:
    """ResNet-18/34/50 (He et al. 2015), torchvision layout.

    Stem ``CONV7-64/2p3 floor -> BN -> RELU -> POOL3/2p1 floor`` (224 -> 112 -> 56; ``stem="imagenet"``)
    or ``CONV3-64 -> BN -> RELU`` (``stem="cifar"``, the default below 64x64: 32x32 stays 32x32); then
    layer1..layer4 of basic (18, 34) or bottleneck (50) blocks with 64, 128, 256, 512 planes, the first
    block of layer2..4 striding by 2 (with a 1x1/2 projection shortcut), then ``GAP -> FC-N``.
    """
    cfg = {18: ([2, 2, 2, 2], False), 34: ([3, 4, 6, 3], False), 50: ([3, 4, 6, 3], True)}
    if depth not in cfg:
        raise VolnetError(f"ResNet depth must be one of {sorted(cfg)}, got {depth!r}")
    blocks, bottleneck = cfg[depth]
    shape = _shape(input_shape, IMAGENET_SHAPE)
    if stem is None:
        stem = "cifar" if min(shape[1:]) < 64 else "imagenet"
    if stem == "imagenet":
        items = _named(layers_of("CONV7-64/2p3 floor -> BN -> RELU -> POOL3/2p1 floor"),
                       ["conv1", "bn1", "relu", "maxpool"])
    elif stem == "cifar":
        items = _named(layers_of("CONV3-64 -> BN -> RELU"), ["conv1", "bn1", "relu"])
    else:
        raise VolnetError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
    inplanes = 64
    for i, (n, planes) in enumerate(zip(blocks, [64, 128, 256, 512])):
        stage = []
        for j in range(n):
            block, inplanes = _residual_block(inplanes, planes, 2 if (i > 0 and j == 0) else 1, bottleneck)
            stage.append((str(j), block))
        items.append((f"layer{i + 1}", Sequential(stage)))
    items += _named(layers_of(f"GAP -> FC-{_classes(num_classes)}"), ["avgpool", "fc"])
    return _finish(Sequential(items), shape, build, seed)  # type: ignore[return-value]


def resnet18(num_classes: int = 1000, input_shape: ShapeArg = None, stem: str | None = None,
             build: bool = True, seed: int = 0) -> Sequential:
    """ResNet-18: 11,689,512 parameters at 1000 classes (CIFAR stem, 10 classes: 11,173,962)."""
    return resnet(18, num_classes, input_shape, stem, build, seed)


def resnet34(num_classes: int = 1000, input_shape: ShapeArg = None, stem: str | None = None,
             build: bool = True, seed: int = 0) -> Sequential:
    """ResNet-34: 21,797,672 parameters at 1000 classes."""
    return resnet(34, num_classes, input_shape, stem, build, seed)


def resnet50(num_classes: int = 1000, input_shape: ShapeArg = None, stem: str | None = None,
             build: bool = True, seed: int = 0) -> Sequential:
    """ResNet-50 (bottleneck blocks, expansion 4): 25,557,032 parameters at 1000 classes."""
    return resnet(50, num_classes, input_shape, stem, build, seed)


# --------------------------------------------------------------------------- GoogLeNet

#: torchvision's Inception modules: (in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
INCEPTION = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}
GOOGLENET_BN_EPS = 1e-3


def _basic(body: str) -> Sequential:
    """torchvision's ``BasicConv2d``: CONV (no bias) -> BN (eps 0.001) -> RELU, children conv/bn/relu."""
    return Sequential(_named(layers_of(f"{body} -> BN -> RELU", GOOGLENET_BN_EPS), ["conv", "bn", "relu"]))


def inception(c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int) -> Graph:
    """An Inception module: four branches on the same input, concatenated along the depth.

    branch1 CONV1-c1; branch2 CONV1-c3r -> CONV3-c3; branch3 CONV1-c5r -> CONV3-c5 (torchvision uses 3x3
    here, not the paper's 5x5: its pretrained weights have that shape); branch4 POOL3/1p1 -> CONV1-pool_proj.
    Every CONV is a BN conv block (CONV -> BN -> RELU); all branches keep W x H, so CONCAT fits.
    """
    g = Graph()
    g.add("branch1", _basic(f"CONV1-{c1}"), ["input"])
    g.add("branch2", Sequential([("0", _basic(f"CONV1-{c3r}")), ("1", _basic(f"CONV3-{c3}"))]), ["input"])
    g.add("branch3", Sequential([("0", _basic(f"CONV1-{c5r}")), ("1", _basic(f"CONV3-{c5}"))]), ["input"])
    g.add("branch4", Sequential([("0", layers_of("POOL3/1p1")[0]), ("1", _basic(f"CONV1-{pool_proj}"))]),
          ["input"])
    g.add("concat", Concat(), ["branch1", "branch2", "branch3", "branch4"])
    return g


def googlenet(num_classes: int = 1000, input_shape: ShapeArg = None, build: bool = True,
              seed: int = 0) -> Sequential:
    """GoogLeNet / Inception v1 (Szegedy et al. 2014), torchvision layout: 6,624,904 parameters.

    Stem ``CONV7-64/2p3 floor -> BN -> RELU -> POOL3/2 ceil -> CONV1-64 -> BN -> RELU -> CONV3-192 -> BN ->
    RELU -> POOL3/2 ceil`` (224 -> 112 -> 56 -> 28), inception 3a, 3b, ``POOL3/2 ceil`` (14), 4a-4e,
    ``POOL2 ceil`` (7), 5a, 5b, then ``GAP -> DROPOUT0.2 -> FC-N``. No auxiliary classifiers (torchvision's
    ``aux_logits=False``), no input transform.
    """
    shape = _shape(input_shape, IMAGENET_SHAPE)
    stem = layers_of("POOL3/2 ceil -> POOL3/2 ceil -> POOL3/2 ceil -> POOL2 ceil")
    items: list[tuple[str, Layer]] = [
        ("conv1", _basic("CONV7-64/2p3 floor")),
        ("maxpool1", stem[0]),
        ("conv2", _basic("CONV1-64")),
        ("conv3", _basic("CONV3-192")),
        ("maxpool2", stem[1]),
    ]
    for name, (_, *chans) in INCEPTION.items():
        items.append((name, inception(*chans)))
        if name == "inception3b":
            items.append(("maxpool3", stem[2]))
        elif name == "inception4e":
            items.append(("maxpool4", stem[3]))
    head = layers_of(f"GAP -> DROPOUT0.2 -> FC-{_classes(num_classes)}")
    items += _named(head, ["avgpool", "dropout", "fc"])
    return _finish(Sequential(items), shape, build, seed)  # type: ignore[return-value]


# --------------------------------------------------------------------------- registry

MODELS: dict[str, Callable[..., Container]] = {
    "lenet5": lenet5,
    "alexnet": alexnet,
    "zfnet": zfnet,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "googlenet": googlenet,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
}

_SPECS: dict[str, Callable[..., str]] = {
    "lenet5": lenet5_spec,
    "alexnet": alexnet_spec,
    "zfnet": zfnet_spec,
    "vgg11": lambda *a, **k: vgg_spec(11, *a, **k),
    "vgg16": lambda *a, **k: vgg_spec(16, *a, **k),
    "vgg19": lambda *a, **k: vgg_spec(19, *a, **k),
}

_DEFAULT_CLASSES = {"lenet5": 10}

#: The paper of each zoo model (``volnet zoo`` lists them).
PAPERS = {
    "lenet5": "LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition",
    "alexnet": "Krizhevsky et al. 2012, ImageNet Classification with Deep Convolutional Neural Networks",
    "zfnet": "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks",
    **dict.fromkeys(("vgg11", "vgg16", "vgg19"), "Simonyan & Zisserman 2014, Very Deep Convolutional "
                                                 "Networks for Large-Scale Image Recognition"),
    "googlenet": "Szegedy et al. 2014, Going Deeper with Convolutions",
    **dict.fromkeys(("resnet18", "resnet34", "resnet50"), "He et al. 2015, Deep Residual Learning for Image "
                                                          "Recognition"),
}


def names() -> list[str]:
    """The zoo's model names, in the order of the notes' case studies."""
    return list(MODELS)


def lookup(name: str) -> str:
    """The canonical zoo name for ``name`` (case, ``-`` and ``_`` ignored: ``ResNet-18`` -> ``resnet18``);
    VolnetError with a did-you-mean for unknown names."""
    return _lookup(name)


def _lookup(name: str) -> str:
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key not in MODELS:
        import difflib

        close = difflib.get_close_matches(key, MODELS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise VolnetError(f"unknown zoo model {name!r}; {hint}known: {', '.join(MODELS)}")
    return key


def get(name: str, num_classes: int | None = None, input_shape: ShapeArg = None, *, build: bool = True,
        seed: int = 0, **options: Any) -> Container:
    """The zoo model ``name`` (:func:`names`) for ``num_classes`` and ``input_shape`` ((C, H, W) or "WxHxD").

    ``num_classes=None`` is the model's own default (10 for LeNet-5, 1000 for the ImageNet models).
    ``build=False`` returns the net unbuilt (nothing allocated; ``num_params()``, ``summary`` and
    shape inference work instantly; the first forward builds it). ``options`` go to the builder
    (``hidden=`` for AlexNet/ZFNet/VGG, ``stem=`` for ResNets).

    >>> get("resnet18", input_shape=(3, 32, 32), num_classes=10, build=False).num_params()
    11173962
    """
    key = _lookup(name)
    n = _DEFAULT_CLASSES.get(key, 1000) if num_classes is None else num_classes
    try:
        return MODELS[key](num_classes=n, input_shape=input_shape, build=build, seed=seed, **options)
    except TypeError as e:
        raise VolnetError(f"zoo model {key!r}: {e}") from None


def spec(name: str, num_classes: int | None = None, input_shape: ShapeArg = None,
         **options: Any) -> str | None:
    """The notation string of a zoo model that is one spec (LeNet-5, AlexNet, ZFNet, VGG), else None
    (ResNet, GoogLeNet are Graphs: use :func:`get`)."""
    key = _lookup(name)
    fn = _SPECS.get(key)
    if fn is None:
        return None
    n = _DEFAULT_CLASSES.get(key, 1000) if num_classes is None else num_classes
    try:
        return fn(n, input_shape, **options)
    except TypeError as e:
        raise VolnetError(f"zoo model {key!r}: {e}") from None


# --------------------------------------------------------------------------- fine-tuning


def _parent_and_name(net: Container, dotted: str) -> tuple[Container, str]:
    parent: Container = net
    *path, last = dotted.split(".")
    for part in path:
        child = dict(parent.children())[part]
        assert isinstance(child, Container)
        parent = child
    return parent, last


def head_name(net: Container) -> str:
    """Dotted name of the classifier: the last FC layer of the net."""
    fcs = [n for n, layer in net.named_layers() if isinstance(layer, FC)]
    if not fcs:
        raise VolnetError("the net has no FC layer to act as its classifier head")
    return fcs[-1]


def replace_head(net: Container, num_classes: int, seed: int = 0) -> Container:
    """Replace the last FC layer by a fresh ``FC(num_classes)`` (He init from ``seed``) on the same input.

    For fine-tuning: load pretrained weights for the original classes, then ``replace_head(net, 10)``.
    Returns ``net`` (changed in place); every other parameter array is kept (optimizers over the old
    ``net.params`` must be rebuilt, the head's arrays are new).
    """
    n = _classes(num_classes)
    name = head_name(net)
    shapes = {row[0]: row[2] for row in net.layer_shapes(net.input_shape)}
    new = FC(n)
    new.build(tuple(shapes[name]), np.random.default_rng(seed), net.dtype)  # type: ignore[arg-type]
    parent, last = _parent_and_name(net, name)
    parent.replace(last, new)
    return net


def freeze(net: Container, until: str) -> set[str]:
    """Names of the parameters to freeze: every parameter of the layers that come before and including
    the block ``until`` (a child name such as ``"layer3"``, ``"inception4e"``, ``"conv5"`` or a dotted
    path such as ``"layer3.1"``), in execution order.

    Nothing is changed in the net: the trainer leaves these out of the optimizer
    (``{k: v for k, v in net.params.items() if k not in frozen}``); their BN layers still update their
    running statistics in training mode unless put in eval mode.

    >>> frozen = freeze(get("resnet18", build=False), "layer3")
    >>> "layer3.1.bn2.w" in frozen, "layer4.0.conv1.w" in frozen, "fc.w" in frozen
    (True, False, False)
    """
    if not isinstance(until, str) or not until:
        raise VolnetError(f"freeze: until must be a layer or block name such as 'layer3', got {until!r}")
    until = until.removeprefix("until:")
    leaves = list(net.named_layers())
    hits = [i for i, (n, _) in enumerate(leaves) if n == until or n.startswith(until + ".")]
    if not hits:
        known = [n for n, _ in net.children()]
        raise VolnetError(f"freeze: no layer or block {until!r} in the net; top-level names: "
                          f"{', '.join(known)}")
    frozen: set[str] = set()
    if not net.params and net.input_shape is not None:
        shapes = net.param_shapes(net.input_shape)
    else:
        shapes = {k: tuple(v.shape) for k, v in net.params.items()}
    for name, _ in leaves[: hits[-1] + 1]:
        frozen.update(k for k in shapes if k.rsplit(".", 1)[0] == name)
    return frozen


__all__ = [
    "INCEPTION",
    "MODELS",
    "VGG_CONFIGS",
    "alexnet",
    "alexnet_spec",
    "freeze",
    "get",
    "googlenet",
    "head_name",
    "inception",
    "layers_of",
    "lenet5",
    "lenet5_spec",
    "lookup",
    "names",
    "replace_head",
    "resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "spec",
    "vgg",
    "vgg11",
    "vgg16",
    "vgg19",
    "vgg_spec",
    "zfnet",
    "zfnet_spec",
]
