"""``volnet evaluate MODEL_OR_RUN_DIR``: accuracy, loss and a confusion matrix on a dataset's test split.

The model's stored normaliser (from training) is applied; the class names are the dataset's. A run
directory is evaluated with its ``best/`` checkpoint. ``confusion.png`` goes into the run directory (or
``--plot FILE``) when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from volnet.errors import DataError, ShapeError

HELP = "test accuracy and confusion matrix of a trained model (a run directory or a model directory)"

EXAMPLES = """examples:
  volnet evaluate runs/default --data fashion-mnist
  volnet evaluate runs/default/last                        # the data the run was trained on
  volnet evaluate runs/cifar/best --data cifar10 --split val --json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR",
                   help="a training run (uses best/), a checkpoint (runs/NAME/last) or a model directory")
    p.add_argument("--data", metavar="NAME", default=None,
                   help="fashion-mnist, mnist, cifar10, digits, synthetic, folder:PATH (default: the "
                        "dataset the run was trained on)")
    p.add_argument("--data-dir", metavar="DIR", default=None, help="where the dataset files are")
    p.add_argument("--split", choices=["test", "val", "train"], default="test",
                   help="which split to evaluate (val/train: as carved by the run; default test)")
    p.add_argument("--batch", type=int, default=256, metavar="B",
                   help="images per forward pass (default 256)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N images")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="where to write the confusion matrix image (default RUN_DIR/confusion.png, or "
                        "./confusion.png for a bare model)")
    p.add_argument("--no-plot", action="store_true", help="do not write confusion.png")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    from volnet.cli.train import load_data
    from volnet.train import evaluate, format_confusion, load_trained, plot_confusion

    for opt in ("batch", "limit"):
        v = getattr(args, opt)
        if v is not None and v < (1 if opt == "batch" else 0):
            raise DataError(f"--{opt} must be {'>= 1' if opt == 'batch' else '>= 0'}, got {v}")
    model = load_trained(args.model)
    stored = (model.info.get("info") or {}).get("args") or {}  # types checked by check_trainer_json
    name = args.data or stored.get("data_used")
    if not name:
        raise DataError(f"{args.model} does not record its dataset; pass --data NAME")
    same = name == stored.get("data_used")
    data_dir = args.data_dir if args.data_dir is not None else (stored.get("data_dir") if same else None)
    train, val, test, used = load_data(
        name, data_dir, val=stored.get("val") if same else None,
        seed=int(stored.get("seed", 0)) if same else 0,
        limit_train=stored.get("limit_train") if same else None,
        num_classes=stored.get("num_classes") if same else None, download=False, quiet=True,
        channels=stored.get("channels") if same else (1 if model.input_shape[0] == 1 and
                                                      name.startswith("folder:") else None))
    ds = {"test": test, "val": val, "train": train}[args.split]
    if ds is None:
        raise DataError(f"{used} has no {args.split} split here; choose --split "
                        f"{'train' if args.split == 'test' else 'test'}")
    if args.limit is not None:
        ds = ds.subset(np.arange(min(args.limit, len(ds))))
    if tuple(ds.shape) != model.input_shape:
        raise ShapeError(f"{model.path} takes images of shape {model.input_shape} (C, H, W) but {used} "
                         f"images are {ds.shape}; evaluate on the dataset it was trained for")
    r = evaluate(model.net, ds.x, ds.y, model.normalizer, args.batch,
                 progress="off" if args.json else "auto", desc=f"evaluate {used} {args.split}")
    k = r.probs.shape[1]
    classes = list(ds.classes) if len(ds.classes) == k else model.class_names(k)
    cm = r.confusion(k)
    correct = int(np.trace(cm))
    plot_path: Path | None = None
    if not args.no_plot:
        plot_path = Path(args.plot) if args.plot else (model.run_dir or Path(".")) / "confusion.png"
        if not plot_confusion(cm, classes, plot_path):
            print("volnet evaluate: note: matplotlib is not installed; confusion.png skipped",
                  file=sys.stderr)
            plot_path = None
    if args.json:
        print(json.dumps({"model": str(model.path), "data": used, "split": args.split, "n": len(ds),
                          "accuracy": r.acc, "loss": r.loss, "classes": classes,
                          "confusion": cm.tolist(), "plot": str(plot_path) if plot_path else None}, indent=1))
        return 0
    print(f"{model.path} on {used} {args.split}: accuracy {100 * r.acc:.2f}% ({correct}/{len(ds)}), "
          f"loss {r.loss:.4f}")
    print(format_confusion(cm, classes))
    if plot_path is not None:
        print(f"wrote {plot_path}")
    return 0
