"""``volnet export MODEL OUT.onnx``: write a zoo model, a spec or a saved model as a standard ONNX file.

MODEL is, in this order: a training run (its ``best/``), a checkpoint or saved model directory
(:func:`volnet.train.load_trained`), a file holding a spec, a zoo name (``resnet18``; ``--num-classes`` and
``--input`` choose the variant) or a spec in the notes' notation. Zoo models and specs get He-initialised
weights (``--seed``): the file carries the architecture for other tools (Netron, ONNX Runtime); a trained
model carries its weights, its input normalisation (``Sub``/``Div`` nodes after the input, so the file
takes [0, 1] pixels in any runtime) and its class names (``metadata_props``), see :mod:`volnet.onnx_io`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from volnet.errors import SpecError, VolnetError

HELP = "write a net (zoo name, spec or saved model directory) as an ONNX file"

EXAMPLES = """examples:
  volnet export resnet18 resnet18.onnx                               # torchvision layout, 224x224x3
  volnet export resnet18 cifar.onnx --num-classes 10 --input 32x32x3  # CIFAR stem
  volnet export "INPUT [32x32x3] -> [CONV3-16 -> RELU -> POOL2]*2 -> FC-10" small.onnx
  volnet export runs/fmnist fmnist.onnx --opset 17          # a run: best/, its normaliser and classes

needs the optional packages onnx (and onnxruntime to run the file): pip install 'volnet[onnx]'
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a zoo name (resnet18, vgg16, ...), a spec, a file with a spec or a model directory")
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write (replaced atomically)")
    p.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="classes of a zoo model (default: the model's own, 1000 for ImageNet models)")
    p.add_argument("--input", metavar="WxHxD", default=None,
                   help="input volume (width x height x depth) of a zoo model or spec")
    p.add_argument("--opset", type=int, default=13, metavar="V", help="ONNX opset version (default 13)")
    p.add_argument("--seed", type=int, default=0, help="seed of the He initialisation (zoo models, specs)")


def resolve(arg: str, num_classes: int | None, input_shape: str | None, seed: int = 0) -> Any:
    """The net for MODEL (see the module docstring for the order)."""
    from volnet import zoo
    from volnet.cli.model_arg import not_a_zoo_name, resolve_model_arg
    from volnet.spec import build, parse_shape

    shape = None if input_shape is None else parse_shape(input_shape)
    m = resolve_model_arg(arg)
    if m.kind == "dir":
        from volnet.train import load_trained

        if num_classes is not None or shape is not None:
            raise VolnetError("--num-classes and --input apply to zoo models and specs, not to a saved model")
        return load_trained(arg).net  # a run (best/), a checkpoint or a model directory
    if m.kind == "zoo":
        return zoo.get(m.text, num_classes=num_classes, input_shape=shape, seed=seed)
    if num_classes is not None:
        raise VolnetError("--num-classes applies to zoo models; write the classes in the spec (FC-N)")
    try:
        return build(m.text, seed=seed, input_shape=shape)
    except SpecError:
        hint = not_a_zoo_name(arg)  # a bare word: most likely a mistyped zoo name
        if hint is not None:
            raise VolnetError(f"{hint} (and {arg!r} is not a spec, spec file or model directory)") from None
        raise


def run(args: argparse.Namespace) -> int:
    from volnet.cli.model_arg import exists
    from volnet.layers.base import format_shape
    from volnet.onnx_io import export_onnx

    out = Path(args.out)
    if out.is_dir() or (os.path.lexists(out) and out.suffix.lower() != ".onnx"):
        raise VolnetError(f"{out} exists and is not an .onnx file; refusing to overwrite it: choose another "
                          "path")
    norm = classes = None
    is_dir = exists(args.model, os.path.isdir)
    if is_dir:  # a run, checkpoint or model directory: with its preprocessing
        from volnet.train import load_trained

        if args.num_classes is not None or args.input is not None:
            raise VolnetError("--num-classes and --input apply to zoo models and specs, not to a saved model")
        trained = load_trained(args.model)
        net, norm, classes = trained.net, trained.normalizer, trained.classes
    else:
        net = resolve(args.model, args.num_classes, args.input, args.seed)
    export_onnx(net, args.out, opset=args.opset, seed=args.seed, normalizer=norm, classes=classes)
    shape = tuple(net.input_shape)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {net.num_params():,} parameters, input {format_shape(shape)} "
          f"(N x {shape[0]} x {shape[1]} x {shape[2]} as 'input'), opset {args.opset}, "
          f"{size / 1024**2:.1f} MB")
    if norm is not None:
        fmt = ", ".join
        print(f"  input normalisation in the graph (Sub/Div nodes): mean "
              f"[{fmt(f'{v:.4g}' for v in norm.mean)}], std [{fmt(f'{v:.4g}' for v in norm.std)}]; "
              f"feed [0, 1] pixels")
    elif is_dir:
        print("  no normaliser stored with this model: the file takes inputs as the net does")
    if classes:
        print(f"  {len(classes)} class names in metadata_props['volnet.classes']")
    return 0
