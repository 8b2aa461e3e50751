"""Locally connected layer (``LOCAL``): a CONV layer without parameter sharing.

Sizes as CONV: W2 = (W1 - F + 2P)/S + 1, H2 = (H1 - F + 2P)/S + 1, D2 = K, but every output position
(i, j) has its own K filters of size F x F x D1: W2*H2*K*F*F*D1 weights and W2*H2*K biases (AlexNet's
first layer: 105,705,600 instead of 34,944). The notes use it when sharing makes no sense (centred
faces). Weights (H2, W2, K, D1, Fh, Fw), biases (H2, W2, K); the math is :mod:`volnet.ops.local`.
"""

from __future__ import annotations

from volnet.layers.base import Shape
from volnet.layers.conv import FilterBank, spatial_output
from volnet.ops.local import local_backward, local_forward


class Local(FilterBank):
    """LOCAL layer: ``Local(K, F, stride=1, pad=0, dilation=1, fit="strict", bias=True, in_depth=None)``.

    - w: (H2, W2, K, D1, Fh, Fw) ~ N(0, 2/(D1*Fh*Fw)) (He), b: (H2, W2, K) zeros;
      params H2*W2*K*(F*F*D1 + 1); macs H2*W2*K*D1*Fh*Fw per sample.
    - the parameters depend on the input's W x H, so the spatial size is fixed once built.

    >>> Local(8, 3).param_shapes((3, 5, 5))["w"]
    (3, 3, 8, 3, 3, 3)

    See: ``torch.nn.Unfold`` + per-position matmul (PyTorch has no LocallyConnected2d).
    """

    kind = "LOCAL"
    forward_op = staticmethod(local_forward)
    backward_op = staticmethod(local_backward)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        C, _, _, H2, W2 = spatial_output(self, input_shape)
        shapes: dict[str, Shape] = {"w": (H2, W2, self.K, C, *self.F)}
        if self.bias:
            shapes["b"] = (H2, W2, self.K)
        return shapes
