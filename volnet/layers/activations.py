"""Elementwise and class-axis activations: ``RELU`` and ``SOFTMAX`` (no params, 0 MACs).

ReLU: out = max(0, x) (the notes' default nonlinearity), any shape. Softmax over the class/channel axis:
p_j = exp(s_j - max s) / sum_k exp(s_k - max s). The math is :mod:`volnet.ops.activations`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volnet.layers.base import Layer
from volnet.ops.activations import relu_backward, relu_forward, softmax_backward, softmax_forward


class ReLU(Layer):
    """RELU: out = max(0, x), same shape; dx = dout * (out > 0). No params; macs 0 (max is no MAC).

    ``inplace=True`` overwrites the input array (saves one activation-sized allocation); use it only when
    nothing else needs that input: not on the caller's own array, not after a layer whose cache keeps its
    output (e.g. a non-overlapping max POOL), and not on a Graph node with several consumers (``Graph``
    refuses that).

    See: ``torch.nn.ReLU(inplace)``.
    """

    kind = "RELU"

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)
        # set by a Sequential when the layer before returns a fresh array (CONV, LOCAL, FC, BN:
        # ``fresh_output``) that is safe to overwrite; not part of the config
        self.auto_inplace = False

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        out, cache = relu_forward(x, inplace=self.inplace or self.auto_inplace)
        self.cache = cache if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return relu_backward(dout, self.forward_cache())

    def config(self) -> dict[str, Any]:
        return {"inplace": self.inplace}


class Softmax(Layer):
    """SOFTMAX: class probabilities along axis 1 of (N, C) (or (N, C, H, W) maps). No params; macs 0.

    The trainer computes the loss on the logits (the input of this layer), which is numerically safer.

    See: ``torch.nn.Softmax(dim=1)``.
    """

    kind = "SOFTMAX"

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        out, cache = softmax_forward(x, axis=1)
        self.cache = cache if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return softmax_backward(dout, self.forward_cache())
