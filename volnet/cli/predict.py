"""``volnet predict MODEL_OR_RUN_DIR IMAGE...``: the top-5 classes of image files.

Each image is read with Pillow, converted to the model's depth (grey ``L`` for 1 channel, ``RGB`` for 3),
resized to the model's W x H (bilinear, said on stderr), scaled to [0, 1] and normalised with the statistics
stored at training time (or with the model: ``volnet import`` of a volnet export); class names come from
the run. A model without a stored normaliser gets a warning (its inputs are used as they are), and a light
background on a grey image a note suggesting ``--invert``.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from volnet.errors import DataError

HELP = "top-5 classes with probabilities for image files, with a trained model"

EXAMPLES = """examples:
  volnet predict runs/default shirt.png boot.jpg
  volnet predict runs/default/best photo.png --invert     # dark object on a light background
  volnet predict runs/cifar cat.jpg --top 3 --json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR",
                   help="a training run (uses best/), a checkpoint or a model directory")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many classes to show (default 5)")
    p.add_argument("--invert", action="store_true",
                   help="use 1 - pixel (Fashion-MNIST/MNIST are light objects on black)")
    p.add_argument("--json", action="store_true", help="print JSON")


def read_images(paths: list[str], shape: tuple[int, ...], invert: bool, prog: str) -> np.ndarray:
    """Image files as a float32 batch (N, C, H, W) in [0, 1] for a model taking ``shape`` (C, H, W): grey
    ``L`` for 1 channel, ``RGB`` for 3, resized to W x H (bilinear, with a note on stderr), ``1 - x`` when
    ``invert``; a light background on a grey image gets a note suggesting ``--invert``."""
    from volnet.data import read_image

    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"the model takes inputs of shape {shape}; {prog.split()[-1]} needs a model of 1- or "
                        "3-channel images")
    c, h, w = shape
    mode = "L" if c == 1 else "RGB"
    images = []
    for p in paths:
        raw = read_image(p, mode=mode)
        bands = _bands(p)
        if bands is not None and bands != c and not (bands == 4 and c == 3):
            print(f"{prog}: note: {p}: {bands}-channel image converted to {mode} ({c} channel"
                  f"{'s' if c > 1 else ''}, the model's input)", file=sys.stderr)
        if raw.shape[1:] != (h, w):
            print(f"{prog}: note: {p}: resized {raw.shape[2]}x{raw.shape[1]} -> {w}x{h} (the "
                  f"model's input)", file=sys.stderr)
            images.append(read_image(p, size=(h, w), mode=mode))
        else:
            images.append(raw)
        edge = np.concatenate([raw[:, 0], raw[:, -1], raw[:, :, 0], raw[:, :, -1]], axis=None)
        if c == 1 and not invert and float(edge.mean()) > 0.5:
            print(f"{prog}: note: {p} has a light background; models trained on Fashion-MNIST/MNIST "
                  f"expect a light object on black: try --invert", file=sys.stderr)
    x = np.stack(images).astype(np.float32)
    return np.float32(1.0) - x if invert else x


def _bands(path: str) -> int | None:
    """How many channels an image file has (None when Pillow cannot tell; read_image already read it)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return len(im.getbands())
    except Exception:
        return None


def run(args: argparse.Namespace) -> int:
    from volnet.train import load_trained

    if args.top < 1:
        raise DataError(f"--top must be >= 1, got {args.top}")
    model = load_trained(args.model)
    shape = model.input_shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"{model.path} takes inputs of shape {shape}; predict needs 1- or 3-channel images")
    if model.normalizer is None:
        print(f"volnet predict: warning: {model.path} stores no input normaliser (mean/std): the images "
              f"go in as [0, 1] pixels; if the net was trained on normalised inputs the answers are wrong "
              f"(export the run directory, whose ONNX file carries it)", file=sys.stderr)
    x = read_images(args.images, shape, args.invert, "volnet predict")
    probs = model.probabilities(x.astype(np.float32))
    names = model.class_names(probs.shape[1])
    k = min(args.top, probs.shape[1])
    results = []
    for path, p in zip(args.images, probs):
        order = np.argsort(-p, kind="stable")[:k]
        top = [{"class": names[i], "index": int(i), "probability": float(p[i])} for i in order]
        results.append({"image": path, "top": top})
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    width = max(len(n) for n in names)
    for r in results:
        print(f"{r['image']}:")
        for rank, t in enumerate(r["top"], 1):
            print(f"  {rank}. {t['class']:<{width}}  {100 * t['probability']:6.2f}%")
    return 0
