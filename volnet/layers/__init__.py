"""Layer classes of the notes, one module per family (thin state around :mod:`volnet.ops`).

``LAYER_TYPES`` maps each class name to its class; model loading (:mod:`volnet.io`) only instantiates
classes found there (plus the containers of :mod:`volnet.net`), so a model file never runs code.
"""

from volnet.layers.activations import ReLU, Softmax
from volnet.layers.base import Layer, Shape
from volnet.layers.conv import Conv
from volnet.layers.dropout import Dropout
from volnet.layers.fc import FC, Flatten
from volnet.layers.local import Local
from volnet.layers.norm import LRN, BatchNorm
from volnet.layers.pool import GlobalAvgPool, Pool

LAYER_TYPES: dict[str, type[Layer]] = {
    "Conv": Conv,
    "Local": Local,
    "Pool": Pool,
    "GlobalAvgPool": GlobalAvgPool,
    "ReLU": ReLU,
    "Softmax": Softmax,
    "FC": FC,
    "Flatten": Flatten,
    "LRN": LRN,
    "BatchNorm": BatchNorm,
    "Dropout": Dropout,
}

__all__ = [
    "FC",
    "LAYER_TYPES",
    "LRN",
    "BatchNorm",
    "Conv",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "Local",
    "Pool",
    "ReLU",
    "Shape",
    "Softmax",
]
