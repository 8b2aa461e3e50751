"""The notes' "Converting FC layers to CONV layers": slide a whole ConvNet over a larger image in one pass.

An FC layer that looks at a W x H x D volume with N neurons computes the same numbers as a CONV layer
with F = W (= H, the whole volume), K = N, S = 1, P = 0: its weights (N, D*H*W) reshaped to
(N, D, H, W) are the K filters. A following FC layer (on N numbers, i.e. a 1x1xN volume) becomes a
CONV with F = 1. The converted net works on any input at least as large as the original one; on a
larger image it outputs a map of class scores, one per position of the original input window.

The notes' example: a ConvNet takes a 224x224x3 image to a 7x7x512 volume (five 2x2 pools: 224/32 = 7),
followed by FC-4096 -> FC-4096 -> FC-1000. Converted, those become CONV7-4096p0 -> CONV1-4096 ->
CONV1-1000. On a 384x384 image the front end gives 12x12x512 (384/32 = 12), CONV7 slides over it to
(12 - 7)/1 + 1 = 6, so the output is 6x6x1000: the scores of the 36 224x224 crops at strides of
32 pixels, computed in one forward pass that shares the front end's work:

>>> from volnet.spec import build
>>> net = build("INPUT [224x224x3] -> CONV1-4 -> [POOL2]*5 -> FC-16 -> RELU -> FC-8")
>>> conv = convert_fc_to_conv(net)
>>> conv.spec()
'INPUT [224x224x3] -> CONV1-4 -> POOL2 -> POOL2 -> POOL2 -> POOL2 -> POOL2 -> CONV7-16p0 -> RELU -> CONV1-8'
>>> import numpy as np
>>> conv.forward(np.zeros((1, 3, 384, 384), np.float32), train=False).shape
(1, 8, 6, 6)

Entry (i, j) of the map equals the original net on the crop ``x[:, :, 32*i : 32*i+224, 32*j : 32*j+224]``
(32 = the front end's total stride) exactly when the front end does not zero-pad: padding adds zeros at
the borders of every crop, while the converted net sees the neighbouring pixels there. Use ``p0`` CONV
layers (valid convolutions) for an exact match; with padding the map is still the usual approximation.

FLATTEN layers before an FC are dropped (the CONV consumes the volume directly). Layers after the FCs
(RELU, DROPOUT, SOFTMAX over the depth axis, ...) are kept as they are.

See: ``torch.nn.Conv2d`` with ``weight = linear.weight.view(N, D, H, W)``; Long et al., "Fully
Convolutional Networks" (2015); Sermanet et al., "OverFeat" (2014).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from volnet.errors import VolnetError

#: Layers that act elementwise or per channel and so work on a FLATTENed vector or a volume alike.
_ELEMENTWISE = frozenset({"RELU", "DROPOUT"})


def convert_fc_to_conv(net: Any) -> Any:
    """A new :class:`volnet.net.Sequential` with every FC replaced by the equivalent CONV (weights copied).

    The first FC after a W x H x D volume becomes ``Conv(K=N, F=(H, W), pad=0)`` with
    ``w.reshape(N, D, H, W)``; an FC on N numbers becomes ``Conv(K=N, F=1)``. Other layers are deep
    copies; ``net`` is not changed. ``net`` must be built (it needs the FC weights and its input shape).

    Returns a Sequential whose input can be any size at least the original one; its output is
    (batch, classes, H_out, W_out) with H_out = (H_in - H_orig)/stride + 1 for the front end's total stride.
    """
    from volnet.layers import Conv
    from volnet.net import Sequential

    if not isinstance(net, Sequential):
        raise VolnetError(f"convert_fc_to_conv needs a Sequential net, got {type(net).__name__}")
    shape = getattr(net, "input_shape", None)
    if shape is None:
        raise VolnetError("convert_fc_to_conv: the net has no input shape; build it: net.build((C, H, W))")
    rows = net.layer_shapes(tuple(shape))
    out: list[tuple[str, Any]] = []
    volume: tuple[int, ...] | None = None  # the (C, H, W) volume a FLATTEN has turned into a vector
    for name, layer, in_shape, _ in rows:
        kind = str(getattr(layer, "kind", "")).upper()
        if kind == "FLATTEN":
            volume = tuple(in_shape) if len(in_shape) == 3 else volume
            continue
        if kind == "FC":
            if "w" not in layer.params:
                raise VolnetError(f"convert_fc_to_conv: {name} ({layer.token()}) has no weights; build first")
            if len(in_shape) == 3:
                C, H, W = in_shape
            elif volume is not None and math.prod(volume) == in_shape[0]:
                C, H, W = volume
            else:
                C, H, W = int(in_shape[0]), 1, 1
            w, b = layer.params["w"], layer.params["b"]
            N = int(w.shape[0])
            conv = Conv(K=N, F=(int(H), int(W)), stride=1, pad=0, in_depth=int(C))
            conv.build((int(C), int(H), int(W)), dtype=w.dtype)
            conv.params["w"][...] = w.reshape(N, int(C), int(H), int(W))
            conv.params["b"][...] = b
            out.append((name, conv))
            volume = None
            continue
        if volume is not None and kind not in _ELEMENTWISE:
            raise VolnetError(
                f"convert_fc_to_conv: {name} ({layer.token()}) works on the FLATTENed vector before an FC; "
                "only RELU/DROPOUT may sit between FLATTEN and FC"
            )
        twin = copy.deepcopy(layer)
        if hasattr(twin, "clear_cache"):
            twin.clear_cache()
        out.append((name, twin))
    converted = Sequential(out)
    converted.build(tuple(shape), dtype=getattr(net, "dtype", None))
    converted.train(getattr(net, "train_mode", True))
    return converted
