"""Pure functions of the layers: ``out, cache = X_forward(x, ...)`` and ``X_backward(dout, cache)``.

Arrays are NCHW; conv weights are (K, C, F, F) as in PyTorch and ONNX.
"""
