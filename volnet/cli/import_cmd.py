"""``volnet import MODEL.onnx OUT_DIR``: read an ONNX file into a volnet model directory.

Supported operators: Conv, MaxPool, AveragePool, LpPool (p=2), GlobalAveragePool, ReduceMean (over H, W),
Gemm, MatMul, Relu, LRN, BatchNormalization, Add/Sum, Sub/Mul/Div by per-channel constants, Concat,
Flatten, Reshape/Squeeze to (N, -1), Dropout, Softmax, Identity, Cast, and any constant expression (shape
arithmetic), which is evaluated (see :mod:`volnet.onnx_io`): files from ``torch.onnx.export`` with either
exporter read. Any other operator stops the import with one line naming the op type, the node and the
nearest supported rewrite.

The input normalisation the file applies (volnet's own ``Sub``/``Div`` nodes, or any per-channel
``Sub``/``Div``/``Mul`` right after the input) and the class names of ``metadata_props["volnet.classes"]``
are stored with the model (``model.json`` ``meta``), so ``volnet predict`` and ``evaluate`` use them.
"""

from __future__ import annotations

import argparse
from typing import Any

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
    from volnet.io import save
    from volnet.layers.base import format_shape
    from volnet.onnx_io import read_onnx
    from volnet.spec import parse_shape

    shape = None if args.input is None else parse_shape(args.input)
    m = read_onnx(args.onnx_file, input_shape=shape)
    net = m.net
    meta: dict[str, Any] = {}
    if m.normalizer is not None:
        meta["normalizer"] = m.normalizer.to_dict()
    if m.classes is not None:
        meta["classes"] = m.classes
    save(net, args.out, meta=meta)
    s = tuple(net.input_shape)
    kind = type(net).__name__
    n = len(list(net.named_layers()))
    print(f"saved {args.out}: {kind} of {n} layers, {net.num_params():,} parameters, "
          f"input {format_shape(s)}")
    if m.normalizer is not None:
        fmt = ", ".join
        print(f"  input normaliser restored: mean [{fmt(f'{v:.4g}' for v in m.normalizer.mean)}], "
              f"std [{fmt(f'{v:.4g}' for v in m.normalizer.std)}]")
    else:
        print("  no input normalisation in the file: predict feeds [0, 1] pixels as they are")
    if m.classes is not None:
        print(f"  {len(m.classes)} class names restored ({', '.join(m.classes[:3])}"
              f"{', ...' if len(m.classes) > 3 else ''})")
    return 0
