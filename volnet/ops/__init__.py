"""Pure functions of the layers: ``out, cache = X_forward(x, ...)`` and ``X_backward(dout, cache)``.

Arrays are NCHW; conv weights are (K, C, F, F) as in PyTorch and ONNX. Each fast kernel has a naive
loop kernel beside it (``*_naive``), used as oracle in the tests.
"""

from volnet.ops.activations import relu_backward, relu_forward, softmax, softmax_backward, softmax_forward
from volnet.ops.batchnorm import batchnorm_backward, batchnorm_forward
from volnet.ops.conv import col2im, conv_backward, conv_forward, conv_naive, im2col
from volnet.ops.dropout import dropout_backward, dropout_forward
from volnet.ops.fc import fc_backward, fc_forward
from volnet.ops.local import local_backward, local_forward, local_naive, local_weight_shape
from volnet.ops.losses import softmax_loss, svm_loss
from volnet.ops.lrn import lrn_backward, lrn_forward
from volnet.ops.pool import (
    global_avg_pool_backward,
    global_avg_pool_forward,
    pool_backward,
    pool_forward,
    pool_naive,
)
from volnet.ops.sizes import effective_size, output_size, padding_for

__all__ = [
    "batchnorm_backward", "batchnorm_forward", "col2im", "conv_backward", "conv_forward", "conv_naive",
    "dropout_backward", "dropout_forward", "effective_size", "fc_backward", "fc_forward",
    "global_avg_pool_backward", "global_avg_pool_forward", "im2col", "local_backward", "local_forward",
    "local_naive", "local_weight_shape", "lrn_backward", "lrn_forward", "output_size", "padding_for",
    "pool_backward", "pool_forward", "pool_naive", "relu_backward", "relu_forward", "softmax",
    "softmax_backward", "softmax_forward", "softmax_loss", "svm_loss",
]
