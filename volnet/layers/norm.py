"""Normalization layers: ``LRN`` (AlexNet's local response normalization) and ``BN`` (batch norm).

LRN: b_c = a_c / (k + alpha/n * sum_{c' near c} a_{c'}^2)^beta over n = ``size`` neighbouring channels
(PyTorch semantics, :mod:`volnet.ops.lrn`). The notes: "their contribution has been shown to be minimal".

BatchNorm: per channel, out = gamma * (x - mu) / sqrt(var + eps) + beta with the batch statistics in
training (running_mean/var updated with ``momentum``: r = (1 - m) r + m * stat, var unbiased as PyTorch)
and the running statistics in inference (:mod:`volnet.ops.batchnorm`). Params ``w`` = gamma (1),
``b`` = beta (0), buffers ``running_mean`` (0), ``running_var`` (1); 2*D params.
Neither counts MACs (elementwise work only; BN folds into the previous CONV at inference).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volnet.errors import ShapeError
from volnet.layers._common import ParamLayer, check_int
from volnet.layers.base import Layer, Shape
from volnet.ops.batchnorm import batchnorm_backward, batchnorm_forward
from volnet.ops.lrn import lrn_backward, lrn_forward


class LRN(Layer):
    """LRN layer: ``LRN(size=5, alpha=1e-4, beta=0.75, k=1.0)``; same shape out, no params, macs 0.

    Token ``LRN`` (size 5) or ``LRN{size}``; alpha, beta and k are not part of the token.

    See: ``torch.nn.LocalResponseNorm(size, alpha, beta, k)``.
    """

    kind = "LRN"

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        self.size = check_int(size, "size", 1)
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 2:
            raise ShapeError(
                f"{self.token()}: needs a volume (C, H, W) = [WxHxD] per sample, got shape "
                f"{tuple(input_shape)}"
            )
        return tuple(input_shape)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        out, cache = lrn_forward(x, self.size, self.alpha, self.beta, self.k)
        self.cache = cache if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return lrn_backward(dout, self.forward_cache())

    def config(self) -> dict[str, Any]:
        return {"size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}

    def token(self) -> str:
        return "LRN" if self.size == 5 else f"LRN{self.size}"


class BatchNorm(ParamLayer):
    """BN layer: ``BatchNorm(momentum=0.1, eps=1e-5)`` over the channels D of (D, H, W) or (D,) inputs.

    - params ``w`` (gamma, (D,), ones), ``b`` (beta, (D,), zeros): 2*D; buffers ``running_mean`` (D,)
      zeros, ``running_var`` (D,) ones. D is inferred at the first forward.
    - ``forward(x, train=True)`` uses batch statistics and updates the running ones in place;
      ``train=False`` uses the running statistics (and keeps no cache).

    See: ``torch.nn.BatchNorm2d(D, eps, momentum)`` / ``BatchNorm1d``.
    """

    fresh_output = True
    kind = "BN"

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if not float(eps) > 0.0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)
        #: synchronised statistics over the ranks of a data-parallel job (set by the trainer for
        #: ``--sync-bn``; see :mod:`volnet.ops.batchnorm`); None: this process's batch alone
        self.sync: Any = None

    def _depth(self, input_shape: Shape) -> int:
        if len(input_shape) not in (1, 3):
            raise ShapeError(
                f"{self.token()}: expects (D, H, W) or (D,) per sample, got shape {tuple(input_shape)}"
            )
        D = int(input_shape[0])
        if "w" in self.params and self.params["w"].shape[0] != D:
            raise ShapeError(
                f"{self.token()}: input depth {D} but the layer is built for "
                f"{self.params['w'].shape[0]} channels"
            )
        return D

    def output_shape(self, input_shape: Shape) -> Shape:
        self._depth(input_shape)
        return tuple(input_shape)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        D = self._depth(input_shape)
        return {"w": (D,), "b": (D,)}

    def init_param(self, name: str, shape: Shape, input_shape: Shape, rng: np.random.Generator) -> np.ndarray:
        return (np.ones if name == "w" else np.zeros)(shape, dtype=self.dtype)

    def init_buffers(self, input_shape: Shape) -> dict[str, np.ndarray]:
        D = self._depth(input_shape)
        return {"running_mean": np.zeros(D, dtype=self.dtype), "running_var": np.ones(D, dtype=self.dtype)}

    def prepare(self, x: np.ndarray) -> None:
        # BN works for any spatial size: only the depth must match the built parameters.
        if not self.params:
            self.build(tuple(x.shape[1:]))
        else:
            self._depth(tuple(x.shape[1:]))

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.prepare(x)
        out, cache = batchnorm_forward(
            x, self.params["w"], self.params["b"], self.buffers["running_mean"], self.buffers["running_var"],
            train=train, momentum=self.momentum, eps=self.eps, sync=self.sync,
        )
        self.cache = cache if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dgamma, dbeta = batchnorm_backward(dout, self.forward_cache())
        self.grads = {"w": dgamma, "b": dbeta}
        return dx

    def config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "eps": self.eps}
