"""The default net of ``volnet train`` and the rewriting of a spec for a dataset's images and classes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from volnet.errors import ShapeError, VolnetError
from volnet.spec import format_shape

#: The default net (``--model default``): a small VGG-like ConvNet in the notes' notation, two stages of
#: two 3x3 CONV-BN-RELU layers and a 2x2 max pool, then FC-BN-RELU and the class scores. ``INPUT`` and
#: the last ``FC`` are rewritten for the dataset by :func:`adapt_spec` (28x28x1 and 10 classes here for
#: Fashion-MNIST; digits 8x8x1, CIFAR-10 32x32x3). About 0.47M parameters and 19M multiply-adds per
#: 28x28 image.
DEFAULT_MODEL = (
    "INPUT [28x28x1] -> [CONV3-32 -> BN -> RELU]*2 -> POOL2 -> [CONV3-64 -> BN -> RELU]*2 -> POOL2"
    " -> FC-128 -> BN -> RELU -> FC-10"
)

# ------------------------------------------------------------------------------------------ the model

def adapt_spec(spec: str, input_shape: Sequence[int], num_classes: int) -> str:
    """Rewrite a spec for a dataset: ``INPUT [..]`` becomes ``input_shape`` (C, H, W) and the last
    ``FC-N`` becomes ``FC-num_classes``.

    >>> adapt_spec("INPUT [28x28x1] -> CONV3-8 -> POOL2 -> FC-10", (3, 32, 32), 100)
    'INPUT [32x32x3] -> CONV3-8 -> POOL2 -> FC-100'
    """
    if len(input_shape) != 3:
        raise ShapeError(f"adapt_spec: input_shape must be (C, H, W), got {tuple(input_shape)}")
    token = f"INPUT {format_shape(input_shape)}"
    out, n = re.subn(r"(?i)\bINPUT\s*\[[^\]]*\]", token, spec, count=1)
    if n == 0:
        out = f"{token} -> {spec}"
    fcs = list(re.finditer(r"(?i)\bFC-(\d+)", out))
    if not fcs:
        raise VolnetError(f"adapt_spec: the spec has no FC-N layer to give {num_classes} class scores; "
                          f"end it with FC-{num_classes}")
    last = fcs[-1]
    return f"{out[:last.start(1)]}{int(num_classes)}{out[last.end(1):]}"


def default_model(input_shape: Sequence[int], num_classes: int, seed: int = 0) -> Any:
    """:data:`DEFAULT_MODEL` built for ``input_shape`` (C, H, W) and ``num_classes`` (He init from ``seed``).

    Inputs smaller than 4x4 cannot take the two 2x2 pools; the error says so.
    """
    from volnet.spec import build

    return build(adapt_spec(DEFAULT_MODEL, input_shape, num_classes), seed=seed)
