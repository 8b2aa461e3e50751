"""The zoo's architectures written independently in plain PyTorch, with torchvision's module names.

These are transcriptions of ``torchvision.models`` (alexnet, vgg, resnet, googlenet) and of the LeNet-5 /
ZFNet papers, not translations of the volnet nets: the tests copy volnet's weights in through
``load_state_dict(strict=True)`` (which checks the name mapping of :mod:`volnet.safetensors_io`) and
compare outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------- flat nets


class FeaturesClassifier(nn.Module):
    """torchvision's AlexNet/VGG shape: ``features`` -> ``avgpool`` -> flatten -> ``classifier``."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, avgpool: nn.Module | None = None):
        super().__init__()
        self.features = features
        self.avgpool = avgpool if avgpool is not None else nn.Identity()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _flat_size(features: nn.Module, input_shape: tuple[int, int, int],
               avgpool: nn.Module | None = None) -> int:
    with torch.no_grad():
        y = features(torch.zeros(1, *input_shape))
        if avgpool is not None:
            y = avgpool(y)
    return int(y[0].numel())


def lenet5(num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 32, 32)) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with ReLU and average pooling; C1 padded by 2 on 28x28."""
    p = max(0, (32 - min(input_shape[1:])) // 2)
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 6, 5, padding=p), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5), nn.ReLU(),
    )
    n = _flat_size(features, input_shape)
    classifier = nn.Sequential(nn.Linear(n, 84), nn.ReLU(), nn.Linear(84, num_classes))
    return FeaturesClassifier(features, classifier)


def alexnet(num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224), hidden: int = 4096,
            adaptive: bool = True) -> nn.Module:
    """torchvision.models.AlexNet; ``adaptive``: keep ``AdaptiveAvgPool2d((6, 6))`` (torchvision at 224)."""
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    avgpool = nn.AdaptiveAvgPool2d((6, 6)) if adaptive else None
    n = _flat_size(features, input_shape, avgpool)
    classifier = nn.Sequential(
        nn.Dropout(p=0.5), nn.Linear(n, hidden), nn.ReLU(inplace=True),
        nn.Dropout(p=0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )
    return FeaturesClassifier(features, classifier, avgpool)


def zfnet(num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224), hidden: int = 4096
          ) -> nn.Module:
    """ZFNet (Zeiler & Fergus 2013, Fig. 3): 7x7/2 96, ceil 3x3/2 pools, LRN, 5x5/2 256, 384, 384, 256."""
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 96, 7, stride=2, padding=1), nn.ReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(5),
        nn.Conv2d(96, 256, 5, stride=2, padding=0), nn.ReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(5),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True),
    )
    n = _flat_size(features, input_shape)
    classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(n, hidden), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
    return FeaturesClassifier(features, classifier)


VGG_CFGS: dict[int, list[Any]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


def vgg(depth: int, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224),
        hidden: int = 4096, adaptive: bool = True) -> nn.Module:
    """torchvision.models.VGG (``make_layers(cfgs[...], batch_norm=False)``)."""
    layers: list[nn.Module] = []
    c = input_shape[0]
    for v in VGG_CFGS[depth]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = v
    features = nn.Sequential(*layers)
    avgpool = nn.AdaptiveAvgPool2d((7, 7)) if adaptive else None
    n = _flat_size(features, input_shape, avgpool)
    classifier = nn.Sequential(
        nn.Linear(n, hidden), nn.ReLU(True), nn.Dropout(p=0.5),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(p=0.5),
        nn.Linear(hidden, num_classes),
    )
    return FeaturesClassifier(features, classifier, avgpool)


# --------------------------------------------------------------------------- ResNet (torchvision)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision.models.ResNet; ``stem="cifar"``: 3x3 conv, no max pool."""

    def __init__(self, block: type, layers: list[int], num_classes: int = 1000, in_ch: int = 3,
                 stem: str = "imagenet"):
        super().__init__()
        self.inplanes = 64
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_ch, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_ch, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(depth: int, num_classes: int = 1000, in_ch: int = 3, stem: str = "imagenet") -> nn.Module:
    cfg = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3])}
    block, layers = cfg[depth]
    return ResNet(block, layers, num_classes, in_ch, stem)


# --------------------------------------------------------------------------- GoogLeNet (torchvision)


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision.models.GoogLeNet with ``aux_logits=False, transform_input=False``."""

    def __init__(self, num_classes: int = 1000, in_ch: int = 3):
        super().__init__()
        self.conv1 = BasicConv2d(in_ch, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for m in (self.inception4a, self.inception4b, self.inception4c, self.inception4d, self.inception4e):
            x = m(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


# --------------------------------------------------------------------------- helpers


def build(name: str, num_classes: int, input_shape: tuple[int, int, int], **opts: Any) -> nn.Module:
    """The torch twin of ``volnet.zoo.get(name, num_classes, input_shape, **opts)``."""
    c = input_shape[0]
    big = min(input_shape[1:]) >= 224
    hidden = opts.get("hidden") or (4096 if big else 512)
    if name == "lenet5":
        return lenet5(num_classes, input_shape)
    if name == "alexnet":
        return alexnet(num_classes, input_shape, hidden, adaptive=big)
    if name == "zfnet":
        return zfnet(num_classes, input_shape, hidden)
    if name.startswith("vgg"):
        return vgg(int(name[3:]), num_classes, input_shape, hidden, adaptive=big)
    if name.startswith("resnet"):
        stem = opts.get("stem") or ("cifar" if min(input_shape[1:]) < 64 else "imagenet")
        return resnet(int(name[6:]), num_classes, c, stem)
    if name == "googlenet":
        return GoogLeNet(num_classes, c)
    raise KeyError(name)


def load_numpy_state(model: nn.Module, state: dict[str, np.ndarray]) -> None:
    """``model.load_state_dict`` from NumPy arrays, strict (every name must match)."""
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
