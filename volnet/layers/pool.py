"""Pooling layers of the notes (``POOL``, ``AVGPOOL``, ``L2POOL``, ``GAP``): no parameters.

A pool accepts W1 x H1 x D1 and produces W2 x H2 x D1 with

    W2 = (W1 - F + 2P)/S + 1,   H2 = (H1 - F + 2P)/S + 1   (depth unchanged)

F=2, S=2 (the common setting) discards 75% of the activations; F=3, S=2 is overlapping pooling.
Pools have no parameters and 0 MACs (comparisons/additions are not multiply-adds).
The math is :mod:`volnet.ops.pool`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volnet.errors import ShapeError
from volnet.layers._common import IntPair, as_pair, cfg_pair, check_fit, expect_volume, pair_str
from volnet.layers.base import Layer, Shape
from volnet.ops.pool import (
    global_avg_pool_backward,
    global_avg_pool_forward,
    pool_backward,
    pool_forward,
)
from volnet.ops.sizes import output_size

_KINDS = {"max": "POOL", "avg": "AVGPOOL", "l2": "L2POOL"}


class Pool(Layer):
    """POOL layer: ``Pool(F=2, stride=None, mode="max"|"avg"|"l2", pad=0, fit="strict")``.

    - stride None means S = F (non-overlapping windows); pad P <= F//2 (PyTorch's rule).
    - output (D1, H2, W2), W2 = (W1 - F + 2P)/S + 1; no params; macs 0.
    - token ``POOL{F}[/{S}][p{P}][ floor|ceil]`` (``AVGPOOL``/``L2POOL`` for the other modes); ``/S`` only
      when S != F.

    >>> Pool().output_shape((64, 32, 32))
    (64, 16, 16)

    See: ``torch.nn.MaxPool2d(F, S, P, ceil_mode=fit == "ceil")``, ``AvgPool2d``, ``LPPool2d(2, F, S)``.
    """

    kind = "POOL"

    def __init__(
        self,
        F: IntPair = 2,
        stride: IntPair | None = None,
        mode: str = "max",
        pad: IntPair = 0,
        fit: str = "strict",
    ) -> None:
        super().__init__()
        if mode not in _KINDS:
            raise ValueError(f"pool mode must be one of {', '.join(_KINDS)}, got {mode!r}")
        self.mode = mode
        self.kind = _KINDS[mode]
        self.F = as_pair(F, "F", 1)
        self.stride = self.F if stride is None else as_pair(stride, "stride", 1)
        self.pad = as_pair(pad, "pad", 0)
        self.fit = check_fit(fit)
        for F_, P_ in zip(self.F, self.pad):
            if P_ > F_ // 2:
                raise ValueError(
                    f"pool padding P={P_} is more than half the window F={F_}; use P <= {F_ // 2}"
                )

    def output_shape(self, input_shape: Shape) -> Shape:
        what = self.token()
        C, H, W = expect_volume(input_shape, what)
        (Fh, Fw), (Sh, Sw), (Ph, Pw) = self.F, self.stride, self.pad
        H2 = output_size(H, Fh, Sh, Ph, 1, self.fit, what=f"{what} (height H1={H})")
        W2 = output_size(W, Fw, Sw, Pw, 1, self.fit, what=f"{what} (width W1={W})")
        return (C, H2, W2)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        out, cache = pool_forward(
            x, size=self.F, stride=self.stride, mode=self.mode, pad=self.pad, fit=self.fit
        )
        self.cache = cache if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return pool_backward(dout, self.forward_cache())

    def config(self) -> dict[str, Any]:
        return {
            "F": cfg_pair(self.F), "stride": cfg_pair(self.stride), "mode": self.mode,
            "pad": cfg_pair(self.pad), "fit": self.fit,
        }

    def token(self) -> str:
        t = f"{self.kind}{pair_str(self.F)}"
        if self.stride != self.F:
            t += f"/{pair_str(self.stride)}"
        if self.pad != (0, 0):
            t += f"p{pair_str(self.pad)}"
        if self.fit != "strict":
            t += f" {self.fit}"
        return t


class GlobalAvgPool(Layer):
    """GAP: average every depth slice to one number, (D, H, W) -> (D, 1, 1); no params, macs 0.

    out[d] = (1/(H*W)) * sum_{h,w} x[d, h, w] (GoogLeNet/ResNet use it instead of large FC layers).

    See: ``torch.nn.AdaptiveAvgPool2d(1)``.
    """

    kind = "GAP"

    def output_shape(self, input_shape: Shape) -> Shape:
        C, H, W = expect_volume(input_shape, self.token())
        if H < 1 or W < 1:
            raise ShapeError(f"{self.token()}: empty input {tuple(input_shape)}")
        return (C, 1, 1)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        out, cache = global_avg_pool_forward(x)
        self.cache = cache if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return global_avg_pool_backward(dout, self.forward_cache())
