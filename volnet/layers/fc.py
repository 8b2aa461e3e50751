"""Fully-connected layer of the notes (``FC``) and ``FLATTEN``.

Every neuron of an FC layer sees every activation of the previous volume: out = x_flat w^T + b with the
input flattened in (D, H, W) = (C, H, W) order (as ``torch.flatten(x, 1)``). An FC layer on a
W x H x D volume with N outputs equals a CONV layer with F = W (= H), K = N, P = 0, S = 1 and weights
w.reshape(N, D, H, W) (the notes' "Converting FC layers to CONV layers").
The math is :mod:`volnet.ops.fc`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volnet.errors import ShapeError
from volnet.layers._common import ParamLayer, check_int, shape_str
from volnet.layers.base import Layer, Shape
from volnet.ops.fc import fc_backward, fc_forward


def _features(input_shape: Shape) -> int:
    return int(np.prod(input_shape, dtype=np.int64)) if len(input_shape) else 1


class FC(ParamLayer):
    """FC layer: ``FC(N, in_features=None)``; input (C, H, W) or (features,), output (N,).

    - w: (N, in) ~ N(0, 2/in) (He), b: (N,) zeros, in = C*H*W. Params in*N + N; macs in*N per sample.
    - in_features is inferred at the first forward unless given.

    >>> FC(10).output_shape((16, 4, 4))
    (10,)

    See: ``torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in, N))``.
    """

    fresh_output = True
    kind = "FC"

    def __init__(self, N: int, in_features: int | None = None) -> None:
        super().__init__()
        self.N = check_int(N, "N (number of outputs)", 1)
        self.in_features = check_int(in_features, "in_features", 1, allow_none=True)

    def _in(self, input_shape: Shape) -> int:
        n = _features(input_shape)
        want = self.in_features
        if want is None and "w" in self.params:
            want = int(self.params["w"].shape[1])
        if want is not None and n != want:
            raise ShapeError(
                f"{self.token()}: input {shape_str(input_shape)} has {n} features but the layer expects "
                f"in_features={want}; fix the layers before it or build a new FC"
            )
        return n

    def output_shape(self, input_shape: Shape) -> Shape:
        self._in(input_shape)
        return (self.N,)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {"w": (self.N, self._in(input_shape)), "b": (self.N,)}

    def fan_in(self, input_shape: Shape) -> int:
        return _features(input_shape)

    def macs(self, input_shape: Shape) -> int:
        return self._in(input_shape) * self.N

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.prepare(x)
        out, cache = fc_forward(x, self.params["w"], self.params["b"])
        self.cache = cache if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dw, db = fc_backward(dout, self.forward_cache())
        self.grads = {"w": dw, "b": db}
        return dx

    def config(self) -> dict[str, Any]:
        return {"N": self.N, "in_features": self.in_features}

    def token(self) -> str:
        return f"FC-{self.N}"


class Flatten(Layer):
    """FLATTEN: (C, H, W) -> (C*H*W,) in C, H, W order; no params, macs 0.

    See: ``torch.nn.Flatten()``.
    """

    kind = "FLATTEN"

    def output_shape(self, input_shape: Shape) -> Shape:
        return (_features(input_shape),)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.cache = x.shape if train else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout.reshape(self.forward_cache())
