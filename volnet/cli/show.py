"""``volnet show filters|activations|occlusion|saliency MODEL_OR_RUN [IMAGE] -o out.png``: pictures of what
a trained net learned (needs matplotlib and Pillow: ``pip install 'volnet[viz]'``).

- ``filters``: a conv layer's filters (default the first) as tiles, each scaled to its own range: colour
  for 3-channel input, grey for 1; a deeper layer as a grid of filters x input channels.
- ``activations``: the activation maps of one image at each chosen layer, labelled ``name [WxHxD]``.
- ``occlusion``: the probability of the class as a grey patch slides over the image (Zeiler & Fergus).
- ``saliency``: |d class score / d pixel| (max over channels) overlaid on the image.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from volnet.errors import DataError, VolnetError

HELP = "pictures of a trained net: filters, activation maps, occlusion and saliency maps"

EXAMPLES = """examples:
  volnet show filters runs/default -o filters.png
  volnet show filters runs/default --layer conv2 -o conv2.png
  volnet show activations runs/default shirt.png --layers conv1 relu1 pool1 -o acts.png
  volnet show occlusion runs/default shirt.png -o occ.png          # --class NAME, --patch 7
  volnet show saliency runs/default shirt.png -o sal.png
"""

WHAT = ("filters", "activations", "occlusion", "saliency")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=WHAT, help="which picture")
    p.add_argument("model", metavar="MODEL_OR_RUN", help="a training run (uses best/), a checkpoint or a "
                   "model directory")
    p.add_argument("image", metavar="IMAGE", nargs="?", help="an image file (activations, occlusion, "
                   "saliency)")
    p.add_argument("-o", "--out", metavar="PNG", required=True, help="where to write the picture")
    p.add_argument("--layer", metavar="NAME", help="filters: the conv layer (default the first)")
    p.add_argument("--layers", metavar="NAME", nargs="+", help="activations: the layers (default all)")
    p.add_argument("--class", dest="cls", metavar="NAME_OR_INDEX",
                   help="occlusion/saliency: the class (default the predicted one)")
    p.add_argument("--patch", type=int, metavar="PIXELS", help="occlusion: patch size (default 1/4 image)")
    p.add_argument("--invert", action="store_true", help="use 1 - pixel (light object on black data)")


def need_viz(prog: str = "volnet show") -> None:
    """A one-line DataError when matplotlib or Pillow is missing."""
    missing = [m for m in ("matplotlib", "PIL") if not _importable(m)]
    if missing:
        names = " and ".join("Pillow" if m == "PIL" else m for m in missing)
        raise DataError(f"{prog} needs {names}: pip install 'volnet[viz]' (make installs it)")


def _importable(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def _class_index(cls: str | None, probs: np.ndarray, names: list[str]) -> int:
    if cls is None:
        return int(np.argmax(probs))
    if cls in names:
        return names.index(cls)
    if cls.isdigit() and int(cls) < len(names):
        return int(cls)
    raise DataError(f"--class {cls!r} is not a class of this model; its classes: {', '.join(names)}")


def run(args: argparse.Namespace) -> int:
    from volnet import viz
    from volnet.cli.predict import read_images
    from volnet.train import load_trained, plots
    from volnet.train.evaluate import prepare

    need_viz()
    if args.what != "filters" and not args.image:
        raise DataError(f"volnet show {args.what} needs an IMAGE after the model")
    if args.what == "filters" and args.image:
        raise DataError("volnet show filters takes no IMAGE (it shows the weights)")
    model = load_trained(args.model)
    net = model.net
    if args.what == "filters":
        name, w = viz.filters(net, args.layer)
        png = plots.filters_png(w, f"{name} [{w.shape[3]}x{w.shape[2]}x{w.shape[1]}] x {w.shape[0]}:")
        return _done(args, png, f"{name}: {w.shape[0]} filters")
    if args.what == "activations" and args.layers:
        net.check_keep(args.layers)  # before reading the image
    x = read_images([args.image], model.input_shape, args.invert, f"volnet show {args.what}")
    xn = prepare(x, model.normalizer, np.float32)
    if args.what == "activations":
        acts = viz.activations(net, xn[0], args.layers)
        return _done(args, plots.activations_png(acts), f"{len(acts)} layers")
    probs = model.probabilities(x)[0]
    names = model.class_names(len(probs))
    k = _class_index(args.cls, probs, names)
    if args.what == "occlusion":
        heat = viz.occlusion(model.probabilities, x[0], k, patch=args.patch)
        title = f"P({names[k]}) with a grey patch here\n(unoccluded: {100 * probs[k]:.1f}%)"
        png = plots.overlay_png(x[0], heat, title, f"P({names[k]})")
    else:
        heat = viz.saliency(net, xn[0], k)
        png = plots.overlay_png(x[0], heat, f"saliency of {names[k]} ({100 * probs[k]:.1f}%)",
                                "|d score / d pixel|")
    return _done(args, png, f"class {names[k]}")


def _done(args: argparse.Namespace, png: bytes | None, what: str) -> int:
    from volnet.atomic import atomic_write_bytes

    if png is None:
        raise VolnetError("matplotlib could not draw the picture")
    atomic_write_bytes(args.out, png)
    print(f"wrote {args.out} ({args.what}, {what})", file=sys.stderr)
    return 0
