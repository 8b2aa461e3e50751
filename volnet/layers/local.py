"""Locally connected layer (``LOCAL``): a CONV layer without parameter sharing.

Sizes as CONV: W2 = (W1 - F + 2P)/S + 1, H2 = (H1 - F + 2P)/S + 1, D2 = K, but every output position
(i, j) has its own K filters of size F x F x D1: W2*H2*K*F*F*D1 weights and W2*H2*K biases (AlexNet's
first layer: 105,705,600 instead of 34,944). The notes use it when sharing makes no sense (centred
faces). Weights (H2, W2, K, D1, Fh, Fw), biases (H2, W2, K); the math is :mod:`volnet.ops.local`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volnet.layers._common import (
    IntPair,
    ParamLayer,
    as_pair,
    cfg_pair,
    check_fit,
    check_int,
    expect_volume,
)
from volnet.layers.base import Shape
from volnet.layers.conv import spatial_output, spatial_token
from volnet.ops.local import local_backward, local_forward


class Local(ParamLayer):
    """LOCAL layer: ``Local(K, F, stride=1, pad=0, dilation=1, fit="strict", in_depth=None)``.

    - w: (H2, W2, K, D1, Fh, Fw) ~ N(0, 2/(D1*Fh*Fw)) (He), b: (H2, W2, K) zeros;
      params H2*W2*K*(F*F*D1 + 1); macs H2*W2*K*D1*Fh*Fw per sample.
    - the parameters depend on the input's W x H, so the spatial size is fixed once built.

    >>> Local(8, 3).param_shapes((3, 5, 5))["w"]
    (3, 3, 8, 3, 3, 3)

    See: ``torch.nn.Unfold`` + per-position matmul (PyTorch has no LocallyConnected2d).
    """

    kind = "LOCAL"

    def __init__(
        self,
        K: int,
        F: IntPair,
        stride: IntPair = 1,
        pad: IntPair = 0,
        dilation: IntPair = 1,
        fit: str = "strict",
        in_depth: int | None = None,
    ) -> None:
        super().__init__()
        self.K = check_int(K, "K (number of filters)", 1)
        self.F = as_pair(F, "F", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.pad = as_pair(pad, "pad", 0)
        self.dilation = as_pair(dilation, "dilation", 1)
        self.fit = check_fit(fit)
        self.in_depth = check_int(in_depth, "in_depth", 1, allow_none=True)

    def output_shape(self, input_shape: Shape) -> Shape:
        _, _, _, H2, W2 = spatial_output(self, input_shape)
        return (self.K, H2, W2)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        C, _, _, H2, W2 = spatial_output(self, input_shape)
        return {"w": (H2, W2, self.K, C, *self.F), "b": (H2, W2, self.K)}

    def fan_in(self, input_shape: Shape) -> int:
        return expect_volume(input_shape, self.token())[0] * self.F[0] * self.F[1]

    def macs(self, input_shape: Shape) -> int:
        C, _, _, H2, W2 = spatial_output(self, input_shape)
        return H2 * W2 * self.K * C * self.F[0] * self.F[1]

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.prepare(x)
        out, cache = local_forward(
            x, self.params["w"], self.params["b"], stride=self.stride, pad=self.pad, dilation=self.dilation,
            fit=self.fit,
        )
        self.cache = cache if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self.cache is None:
            raise RuntimeError(f"{self.token()}: backward needs a forward(x, train=True) first")
        dx, dw, db = local_backward(dout, self.cache)
        self.grads = {"w": dw, "b": db}
        return dx

    def config(self) -> dict[str, Any]:
        return {
            "K": self.K, "F": cfg_pair(self.F), "stride": cfg_pair(self.stride), "pad": cfg_pair(self.pad),
            "dilation": cfg_pair(self.dilation), "fit": self.fit, "in_depth": self.in_depth,
        }

    def token(self) -> str:
        return spatial_token("LOCAL", self.F, self.K, self.stride, self.pad, self.dilation, self.fit)
