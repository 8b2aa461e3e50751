"""``volnet summary SPEC_OR_MODEL``: the layer table and the notes' memory accounting.

SPEC_OR_MODEL is, in this order: a training run (its ``best/``), a checkpoint or saved model directory
(:func:`volnet.train.load_trained`), a file holding a spec, a model zoo name (``vgg16``), or a spec in the
notes' notation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

from volnet.errors import SpecError

HELP = "layer table (volumes, parameters, multiply-adds) and memory use of a net, as in the notes"

EXAMPLES = """examples (from the notes):
  volnet summary "INPUT [32x32x3] -> CONV3-12 -> RELU -> POOL2 -> FC-10"
  volnet summary "INPUT [224x224x3] -> [CONV3-64]*3"          # about 10M activations, ~72MB per image
  volnet summary "INPUT [32x32x3] -> [[CONV3-64 -> RELU]*2 -> POOL2]*3 -> FC-512 -> RELU -> FC-10"
  volnet summary "INPUT [227x227x3] -> CONV11-96/4p0 -> RELU -> POOL3/2 -> FC-10"   # AlexNet's first layer
  volnet summary vgg16.txt --batch 32 --memory 4GB --optimizer momentum
  volnet summary runs/fmnist/best --input 32x32x1 --json
  volnet summary vgg16 --memory 12GB --dtype float64
  volnet summary resnet18 --depth 1                          # blocks folded: layer1 .. layer4 one row each
  volnet summary runs/fmnist                                 # a run: its best/ model, frozen layers counted

memory = activations + their gradients (x batch) + parameters x3 (params, grads, one optimizer cache;
x2 sgd, x4 adam) + the input batch; values x4 bytes (x8 float64), divided by 1024 for KB/MB/GB.
--memory prints the largest batch that fits (activations and input scale with the batch, params don't).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="SPEC_OR_MODEL",
                   help="a spec (\"INPUT [32x32x3] -> CONV3-12 -> ...\"), a file with one, a saved model "
                        "directory or a zoo name")
    p.add_argument("--input", metavar="WxHxD", default=None,
                   help="input volume (width x height x depth); overrides the spec's INPUT")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="images per batch (default 1)")
    p.add_argument("--memory", default=None, metavar="SIZE",
                   help="memory budget such as 4GB or 512MB: print the largest batch that fits")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="4 or 8 bytes per value (default float32)")
    p.add_argument("--optimizer", default=None, metavar="NAME",
                   help="sgd, momentum, nesterov, adagrad, rmsprop, adam: parameter memory factor "
                        "2/3/3/3/3/4 (default 3, as the notes)")
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="fold the rows into blocks N name parts deep (resnet18: 1 = layer1..layer4, "
                        "2 = their blocks), as torchinfo's depth; totals stay over every layer")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def resolve(arg: str, input_shape: str | None = None) -> Any:
    """A net or a spec string for SPEC_OR_MODEL (:func:`volnet.cli.model_arg.resolve_model_arg`)."""
    from volnet.cli.model_arg import resolve_model_arg

    m = resolve_model_arg(arg)
    if m.kind == "dir":
        from volnet.train import load_trained

        return load_trained(arg).net  # a run (best/), a checkpoint or a model directory
    if m.kind == "zoo":
        from volnet import zoo

        # unbuilt: shape inference only, nothing allocated; the input picks the stem (CIFAR below 64)
        return zoo.get(m.text, input_shape=input_shape, build=False)
    return m.text  # a spec (given or from a file), whose errors say what is wrong


def run(args: argparse.Namespace) -> int:
    from volnet.cli.model_arg import exists
    from volnet.summary import summary

    frozen = None
    if exists(args.model, os.path.isdir):
        from volnet.train import load_trained

        trained = load_trained(args.model)  # a run (best/), a checkpoint or a model directory
        target: Any = trained.net
        frozen = trained.info.get("config", {}).get("frozen")
    else:
        target = resolve(args.model, args.input)
    try:
        s = summary(target, input_shape=args.input, batch=args.batch, memory=args.memory,
                    optimizer=args.optimizer, dtype=args.dtype, depth=args.depth, frozen=frozen)
    except SpecError as e:
        if isinstance(target, str) and re.fullmatch(r"[A-Za-z][\w.-]*", target.strip()):
            import difflib

            from volnet import zoo

            close = difflib.get_close_matches(target.strip().lower(), zoo.names(), n=1)
            first = str(e).partition("\n")[0]
            if close:  # a mistyped zoo name: say so first
                raise SpecError(f"{target.strip()!r} is not a zoo model: did you mean {close[0]!r}? (nor a "
                                f"file, model directory or spec: {first})") from e
            raise SpecError(f"{first} (not a file, model directory or zoo name either; zoo: "
                            f"{', '.join(zoo.names())})") from e
        raise
    if args.json:
        print(json.dumps(s.to_dict(), indent=2))
    else:
        print(s)
    return 0
