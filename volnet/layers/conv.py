"""Convolutional layer of the notes (``CONV``): K filters of size F x F x D1, stride S, zero padding P.

Accepts a volume W1 x H1 x D1 and produces W2 x H2 x D2 with

    W2 = (W1 - F + 2P)/S + 1,   H2 = (H1 - F + 2P)/S + 1,   D2 = K

(F replaced by F_eff = D*(F - 1) + 1 with dilation D). Parameter sharing gives F*F*D1 weights per filter,
K*F*F*D1 weights and K biases in total; the d-th depth slice of the output is the valid convolution of
the d-th filter over the input volume with stride S, plus the bias b[d].

Weights are (K, D1, Fh, Fw) as in PyTorch; the math is :func:`volnet.ops.conv.conv_forward` (im2col).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volnet.errors import ShapeError
from volnet.layers._common import (
    IntPair,
    ParamLayer,
    as_pair,
    cfg_pair,
    check_fit,
    check_int,
    expect_volume,
    pair_str,
    shape_str,
)
from volnet.layers.base import Shape
from volnet.ops.conv import conv_backward, conv_forward
from volnet.ops.sizes import effective_size, output_size


def spatial_token(kind: str, F: tuple[int, int], K: int, S: tuple[int, int], P: tuple[int, int],
                  D: tuple[int, int], fit: str) -> str:
    """``{kind}{F}-{K}[/{S}][p{P}][d{D}][ floor|ceil]`` with the notation's defaults left out.

    The default padding is size-preserving, P = (F_eff - 1)//2 per axis; ``/S`` shows when S != 1.
    """
    default_p = tuple((effective_size(f, d) - 1) // 2 for f, d in zip(F, D))
    t = f"{kind}{pair_str(F)}-{K}"
    if S != (1, 1):
        t += f"/{pair_str(S)}"
    if P != default_p:
        t += f"p{pair_str(P)}"
    if D != (1, 1):
        t += f"d{pair_str(D)}"
    if fit != "strict":
        t += f" {fit}"
    return t


def spatial_output(layer: Any, input_shape: Shape) -> tuple[int, int, int, int, int]:
    """(C, H, W, H2, W2) for a CONV/LOCAL layer, with ShapeError naming the layer and axis."""
    what = layer.token()
    C, H, W = expect_volume(input_shape, what)
    want = layer.in_depth
    if want is None and "w" in layer.params:
        want = int(layer.params["w"].shape[-3])
    if want is not None and C != want:
        raise ShapeError(
            f"{what}: input depth D1={C} (input {shape_str(input_shape)}) but the filters are built for "
            f"depth {want}; feed {want} channels or build a new layer"
        )
    (Fh, Fw), (Sh, Sw), (Ph, Pw), (Dh, Dw) = layer.F, layer.stride, layer.pad, layer.dilation
    H2 = output_size(H, Fh, Sh, Ph, Dh, layer.fit, what=f"{what} (height H1={H})")
    W2 = output_size(W, Fw, Sw, Pw, Dw, layer.fit, what=f"{what} (width W1={W})")
    return C, H, W, H2, W2


class FilterBank(ParamLayer):
    """What CONV and LOCAL share: K filters of F x F x D1 slid with stride S over a zero-padded input.

    Subclasses set ``kind`` and the op pair ``forward_op``/``backward_op``
    (``(x, w, b, stride, pad, dilation, fit) -> (out, cache)``, ``(dout, cache) -> (dx, dw, db)``).
    macs = K * D1 * Fh * Fw * H2 * W2 per sample for both (bias adds not counted).
    """

    fresh_output = True
    forward_op: Any = None
    backward_op: Any = None
    skips_dx = True  # backward(dout, need_dx=False) computes only the parameter gradients

    def __init__(
        self,
        K: int,
        F: IntPair,
        stride: IntPair = 1,
        pad: IntPair = 0,
        dilation: IntPair = 1,
        fit: str = "strict",
        bias: bool = True,
        in_depth: int | None = None,
    ) -> None:
        super().__init__()
        self.K = check_int(K, "K (number of filters)", 1)
        self.F = as_pair(F, "F", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.pad = as_pair(pad, "pad", 0)
        self.dilation = as_pair(dilation, "dilation", 1)
        self.fit = check_fit(fit)
        self.bias = bool(bias)
        self.in_depth = check_int(in_depth, "in_depth", 1, allow_none=True)

    # -- shapes ---------------------------------------------------------------------------------
    def output_shape(self, input_shape: Shape) -> Shape:
        _, _, _, H2, W2 = spatial_output(self, input_shape)
        return (self.K, H2, W2)

    def fan_in(self, input_shape: Shape) -> int:
        return expect_volume(input_shape, self.token())[0] * self.F[0] * self.F[1]

    def macs(self, input_shape: Shape) -> int:
        C, _, _, H2, W2 = spatial_output(self, input_shape)
        return self.K * C * self.F[0] * self.F[1] * H2 * W2

    # -- computation ----------------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.prepare(x)
        out, cache = type(self).forward_op(
            x, self.params["w"], self.params.get("b"),
            stride=self.stride, pad=self.pad, dilation=self.dilation, fit=self.fit,
        )
        self.cache = cache if train else None
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Fills ``grads``; returns dx, or None with ``need_dx=False`` (a net's first layer: saves the
        col2im half of the backward pass, as PyTorch does for an input that needs no gradient)."""
        dx, dw, db = type(self).backward_op(dout, self.forward_cache(), need_dx=need_dx)
        self.grads = {"w": dw, "b": db} if self.bias else {"w": dw}
        return dx

    # -- serialisation --------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "K": self.K, "F": cfg_pair(self.F), "stride": cfg_pair(self.stride), "pad": cfg_pair(self.pad),
            "dilation": cfg_pair(self.dilation), "fit": self.fit, "bias": self.bias,
            "in_depth": self.in_depth,
        }

    def token(self) -> str:
        return spatial_token(self.kind, self.F, self.K, self.stride, self.pad, self.dilation, self.fit)


class Conv(FilterBank):
    """CONV layer: ``Conv(K, F, stride=1, pad=0, dilation=1, fit="strict", bias=True, in_depth=None)``.

    - w: (K, D1, Fh, Fw) ~ N(0, 2/(D1*Fh*Fw)) (He), b: (K,) zeros. Params K*F*F*D1 + K.
    - output (K, H2, W2), W2 = (W1 - F_eff + 2P)/S + 1 (``fit`` as in :mod:`volnet.ops.sizes`).
    - macs = K * D1 * Fh * Fw * H2 * W2 per sample (bias adds not counted).
    - D1 is inferred at the first forward unless ``in_depth`` is given.

    >>> Conv(64, 3, pad=1).output_shape((3, 32, 32))
    (64, 32, 32)

    See: ``torch.nn.Conv2d(D1, K, F, stride, pad, dilation, bias=bias)``.
    """

    kind = "CONV"
    forward_op = staticmethod(conv_forward)
    backward_op = staticmethod(conv_backward)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        C = expect_volume(input_shape, self.token())[0]
        shapes: dict[str, Shape] = {"w": (self.K, C, *self.F)}
        if self.bias:
            shapes["b"] = (self.K,)
        return shapes
