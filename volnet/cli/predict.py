"""``volnet predict MODEL_OR_RUN_DIR IMAGE...``: the top-5 classes of image files.

Each image is read with Pillow, converted to the model's depth (grey ``L`` for 1 channel, ``RGB`` for 3),
resized to the model's W x H (bilinear), scaled to [0, 1] and normalised with the statistics stored at
training time; class names come from the run.
"""

from __future__ import annotations

import argparse
import json

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


def run(args: argparse.Namespace) -> int:
    from volnet.data import read_image
    from volnet.train import load_trained

    if args.top < 1:
        raise DataError(f"--top must be >= 1, got {args.top}")
    model = load_trained(args.model)
    shape = model.input_shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"{model.path} takes inputs of shape {shape}; predict needs 1- or 3-channel images")
    c, h, w = shape
    x = np.stack([read_image(p, size=(h, w), mode="L" if c == 1 else "RGB") for p in args.images])
    if args.invert:
        x = np.float32(1.0) - x
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
