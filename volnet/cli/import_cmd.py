"""``volnet import MODEL.onnx OUT_DIR``: read an ONNX file into a volnet model directory.

Supported operators: Conv, MaxPool, AveragePool, LpPool (p=2), GlobalAveragePool, Gemm, Relu, LRN,
BatchNormalization, Add/Sum, Concat, Flatten, Dropout, Softmax, Identity (see :mod:`volnet.onnx_io`).
Any other operator stops the import with one line naming the op type and the node.
"""

from __future__ import annotations

import argparse

HELP = "read an ONNX file (exported by volnet, PyTorch, ...) into a volnet model directory"

EXAMPLES = """examples:
  volnet import resnet18.onnx models/resnet18
  volnet import model.onnx models/net --input 224x224x3   # when the file's input size is symbolic
  volnet summary models/resnet18

needs the optional package onnx: pip install 'volnet[onnx]'
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx_file", metavar="MODEL.onnx", help="the ONNX file to read")
    p.add_argument("out", metavar="OUT_DIR",
                   help="the volnet model directory to write (model.json + weights.npz)")
    p.add_argument("--input", metavar="WxHxD", default=None,
                   help="input volume, needed when the ONNX input has symbolic height/width")


def run(args: argparse.Namespace) -> int:
    from volnet.layers.base import format_shape
    from volnet.onnx_io import import_onnx
    from volnet.spec import parse_shape

    shape = None if args.input is None else parse_shape(args.input)
    net = import_onnx(args.onnx_file, input_shape=shape)
    net.save(args.out)
    s = tuple(net.input_shape)
    kind = type(net).__name__
    n = len(list(net.named_layers()))
    print(f"saved {args.out}: {kind} of {n} layers, {net.num_params():,} parameters, "
          f"input {format_shape(s)}")
    return 0
