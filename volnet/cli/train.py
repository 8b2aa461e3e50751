"""``volnet train``: train a net (spec, zoo name, saved model or ``default``) on a dataset into a run dir.

The run directory gets ``metrics.jsonl``, ``curves.png``, ``best/``, ``last/`` and ``results.json`` (see
:mod:`volnet.train`). ``--resume runs/NAME`` continues a run from ``runs/NAME/last`` with the run's own
settings (only ``--epochs``, ``--save-every`` and ``--quiet`` may change), bit-identically to an
uninterrupted run. Ctrl-C writes a checkpoint and exits with status 130.

Nothing is lost: every option is checked, the data loaded and the net built before ``--out`` is touched;
a non-empty ``--out`` that is not a volnet run is refused; ``--overwrite`` replaces only what the old run
owns (its ``volnet-run.json`` lists it), and only once the new run has written its first checkpoint; a
``--resume`` reads and checks the whole checkpoint first, so a failing one changes no file.

Fine-tuning: ``--init PATH`` loads weights (a safetensors file with PyTorch/torchvision ``state_dict``
names, or a volnet model/run directory) into the net built for the data, leaving out the classifier head
when its class count differs (the head is then a fresh ``FC-K``, K the data's classes); ``--freeze
until:NAME`` trains only what comes after block NAME (:func:`volnet.zoo.freeze`; the frozen names are
stored in the checkpoint so ``--resume`` keeps them frozen).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import zlib
from pathlib import Path
from typing import Any

from volnet.errors import DataError, ShapeError, SpecError, VolnetError

HELP = "train a ConvNet on images (Fashion-MNIST, MNIST, CIFAR-10, digits, an image folder)"

EXAMPLES = """examples:
  volnet train --model default --data fashion-mnist --out runs/default        # what `make train` runs
  volnet train --recipe fmnist-30min --out runs/fmnist-30min                  # `make train-best`
  volnet train --recipe fmnist-30min --epochs 10 --workers 1                  # a recipe, two fields changed
  volnet train --model "INPUT [28x28x1] -> [CONV3-16 -> RELU -> POOL2]*2 -> FC-10" --epochs 3 --out runs/small
  volnet train --model lenet5 --data mnist --optim momentum --lr 0.05 --schedule step --step-size 2
  volnet train --model default --data cifar10 --epochs 20 --warmup 1 --weight-decay 5e-4 --out runs/cifar
  volnet train --model default --data folder:photos --val 0.1 --out runs/photos
  volnet train --resume runs/default                      # continue after Ctrl-C or a crash
  volnet train --resume runs/default --epochs 20          # extend a finished run
  volnet train --model resnet18 --data cifar10 --init resnet18.safetensors --freeze until:layer3 --out runs/ft

--model: `default` (volnet.train.DEFAULT_MODEL adapted to the data), a spec in the notes' notation, a
file holding one, a zoo name (lenet5, vgg11, resnet18, ...) or a saved model / run directory (its last
FC is replaced when the number of classes differs). --data fashion-mnist falls back to scikit-learn's
digits (with a note) when Fashion-MNIST is not installed and no --data-dir is given.

--init: a safetensors file with PyTorch/torchvision state_dict names (torchvision weights saved with
safetensors.torch.save_file, or volnet.safetensors_io.save_torch_state_dict) or a volnet model/run
directory; every weight and BN statistic is loaded into the net built for the data, except the head
(last FC) when the file's head has another number of classes. A ResNet takes the stem of the file (conv1
7x7: ImageNet stem, 3x3: CIFAR stem) whatever the image size. Frozen BN layers keep their running
statistics (--freeze-bn-stats update: they update as in PyTorch's train mode).
"""

#: Defaults of the options (argparse defaults are None so that --resume can tell what was given).
DEFAULTS: dict[str, Any] = {
    "model": "default", "data": "fashion-mnist", "data_dir": None, "epochs": 5, "batch": 64,
    "optim": "adam", "lr": None, "schedule": "cosine", "warmup": 0.2, "step_size": None, "gamma": 0.1,
    "min_lr": 0.0, "weight_decay": 0.0, "label_smoothing": 0.0, "momentum": None, "clip": None,
    "val": None, "seed": 0,
    "out": None, "save_every": None, "limit_train": None, "num_classes": None, "augment": "default",
    "download": True, "init": None, "freeze": "none", "freeze_bn_stats": "keep", "channels": None,
    "memory": None,
}
#: Options a resumed run may change.
RESUMABLE = {"epochs", "save_every"}


_AUGMENT_CHOICES = ("default", "none", "flip", "crop", "flip+crop", "erase", "flip+erase", "crop+erase",
                    "flip+crop+erase")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--recipe", metavar="NAME",
                   help="start from a named recipe (volnet.train.recipes: fmnist-30min, default); every "
                        "option given too overrides the recipe's value; 'help' lists them")
    p.add_argument("--model", metavar="SPEC_OR_ZOO_OR_DIR",
                   help=f"the net: 'default', a spec, a spec file, a zoo name or a model/run directory "
                        f"(default {d['model']})")
    p.add_argument("--data", metavar="NAME",
                   help="fashion-mnist, mnist, cifar10, cifar100, digits, synthetic or folder:PATH "
                        f"(default {d['data']})")
    p.add_argument("--data-dir", metavar="DIR", help="where the dataset files are (default: cache, system)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="folder:PATH images as 1 (grayscale) or 3 (RGB, the default) channels")
    p.add_argument("--epochs", type=int, metavar="N",
                   help=f"passes over the training set (default {d['epochs']})")
    p.add_argument("--batch", type=_batch_arg, metavar="B|auto",
                   help=f"mini-batch size, or auto: the largest that fits --memory by the memory ledger "
                        f"(default {d['batch']})")
    p.add_argument("--memory", metavar="SIZE",
                   help="memory budget of a training step (2GB, 512MB, 1.5GiB): a --batch whose "
                        "predicted peak (volnet.memory ledger: weights, gradients, optimizer state, batch, "
                        "activations, scratch) exceeds it is refused before training; the dataset itself "
                        "is not counted")
    p.add_argument("--optim", metavar="NAME",
                   help="sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw (default adam)")
    p.add_argument("--lr", type=float, help="base learning rate (default: adam 1e-3, sgd/momentum 0.01)")
    p.add_argument("--schedule", choices=["constant", "step", "cosine", "onecycle"],
                   help=f"learning-rate schedule, applied per step (default {d['schedule']}); onecycle: "
                        "torch's OneCycleLR, up from lr/25 over --warmup epochs, then down to lr/2.5e5")
    p.add_argument("--warmup", type=float, metavar="EPOCHS",
                   help=f"linear warm-up from lr/10, in epochs (default {d['warmup']}); onecycle: the rise "
                        "(0: 30%% of the run)")
    p.add_argument("--step-size", type=float, metavar="EPOCHS", help="step schedule: epochs between decays")
    p.add_argument("--gamma", type=float, help="step schedule: decay factor (default 0.1)")
    p.add_argument("--min-lr", type=float, help="cosine schedule: final learning rate (default 0)")
    p.add_argument("--weight-decay", type=float, help="L2 penalty on all parameters (default 0)")
    p.add_argument("--label-smoothing", type=float, metavar="EPS",
                   help="train on the targets (1 - EPS) onehot + EPS/K (default 0)")
    p.add_argument("--momentum", type=float, help="momentum of sgd/momentum/nesterov/rmsprop")
    p.add_argument("--clip", type=float, metavar="NORM", help="clip the global gradient norm")
    p.add_argument("--val", metavar="N_OR_FRACTION",
                   help="validation images carved from the training set: a count or a fraction; 0 = none "
                        "(default min(5000, 10%%))")
    p.add_argument("--seed", type=int,
                   help="initialisation, split, shuffling and augmentation seed (default 0)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<model>-<data>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from RUN_DIR/last")
    p.add_argument("--save-every", type=int, metavar="STEPS", help="also checkpoint every STEPS steps")
    p.add_argument("--limit-train", type=int, metavar="N",
                   help="use only the first N training images; the validation split (--val) is then sized "
                        "on N too: 10%% of N (at most 5000), or the --val fraction of N")
    p.add_argument("--num-classes", type=int, metavar="K",
                   help="number of classes (synthetic data: how many to make; else must match the data); the "
                        "net ends in FC-K (a zoo or saved model gets a new head, --init skips a head of "
                        "another size)")
    p.add_argument("--augment", choices=list(_AUGMENT_CHOICES),
                   help="on-the-fly augmentation (default: the dataset's: Fashion-MNIST/CIFAR flip+crop, "
                        "digits/MNIST crop); +erase adds random erasing (p 0.5, 2-33%% of the image)")
    p.add_argument("--no-download", dest="download", action="store_false", default=None,
                   help="never download missing MNIST/Fashion-MNIST/CIFAR files")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out: only the files it owns (listed in its volnet-run.json), "
                        "and only once the new run has its first checkpoint; a folder that is not a volnet "
                        "run is never replaced")
    p.add_argument("--init", metavar="PATH",
                   help="initial weights: a safetensors file with PyTorch/torchvision state_dict names or a "
                        "volnet model/run directory (the head is left out when its class count differs)")
    p.add_argument("--freeze", metavar="until:NAME|none",
                   help="train only the layers after block NAME (e.g. until:layer3 for a ResNet, until:conv5 "
                        "for a flat net); 'none' trains everything (default)")
    p.add_argument("--freeze-bn-stats", choices=["keep", "update"],
                   help="BN layers of frozen blocks: keep their running statistics (default) or update them "
                        "in training mode (PyTorch's default for frozen parameters)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    p.add_argument("--sync-bn", action="store_true",
                   help="data-parallel runs: BatchNorm statistics over the global batch (equal to one "
                        "process) instead of each process's shard")
    p.add_argument("--workers", type=int, metavar="N",
                   help="train data-parallel in N processes: launches mpirun -np N volnet train ... "
                        "(needs volnet[mpi]; the global batch --batch is split across them)")
    p.add_argument("--live", action="store_true",
                   help="serve a live page of the curves while training (http://127.0.0.1:PORT/)")
    p.add_argument("--port", type=int, default=8000, help="--live: the port (default 8000)")
    p.add_argument("--host", metavar="ADDRESS", default=None,
                   help="--live: listen on ADDRESS instead of 127.0.0.1 (e.g. 0.0.0.0: other machines "
                        "can see the page)")


def _batch_arg(text: str) -> int | str:
    """``--batch``: a positive count or ``auto`` (argparse turns the ValueError into a usage line)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a count or auto, got {text!r}") from None


def _note(msg: str) -> None:
    print(f"volnet train: {msg}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ data

def _val_size(text: Any, n: int) -> float | int:
    if text is None:
        return min(5000, int(round(0.1 * n)))
    s = str(text).strip()
    try:
        v = float(s)
    except ValueError:
        raise DataError(f"--val must be a count (5000) or a fraction (0.1), got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise DataError(f"--val must be a count (5000) or a fraction (0.1) >= 0, got {text!r}")
    if "." in s or "e" in s.lower():
        if not 0 <= v < 1:
            raise DataError(f"--val fraction must be in [0, 1), got {text!r}")
        return v
    return int(v)


def load_data(name: str, data_dir: str | None = None, *, val: Any = None, seed: int = 0,
              limit_train: int | None = None, num_classes: int | None = None, download: bool = True,
              quiet: bool = False, channels: int | None = None) -> tuple[Any, Any, Any, str]:
    """``(train, val_or_None, test_or_None, name_used)`` for the CLI.

    ``channels`` (1 or 3) reads a ``folder:PATH`` dataset's images as grayscale or RGB.

    Fashion-MNIST: Debian's package or the cache, else a download (checksummed, unless ``download`` is
    False); when both fail (and no ``data_dir``) digits, with a one-line note on stderr.
    Unreadable files become a one-line DataError.
    """
    from volnet.data import load_dataset, split_validation

    key = name.strip().lower()
    options: dict[str, Any] = {}
    if key == "synthetic" and num_classes is not None:
        options["num_classes"] = num_classes
    if channels is not None:
        if not key.startswith("folder:"):
            raise DataError(f"--channels applies to folder:PATH image datasets; {name} has its own depth")
        options["mode"] = "L" if channels == 1 else "RGB"
    try:
        try:
            train, test = load_dataset(name, data_dir, download=download, **options)
        except DataError as e:
            if key != "fashion-mnist" or data_dir is not None:
                raise
            how = "downloading it failed" if download else "--no-download"
            _note(f"Fashion-MNIST is not installed and {how} ({str(e).split(';')[0]}); training on "
                  "scikit-learn's 8x8 digits instead (apt-get install dataset-fashion-mnist for the real "
                  "thing)")
            name = "digits"
            train, test = load_dataset("digits")
    except VolnetError:
        raise
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise DataError(f"{name}: cannot read the data files ({type(e).__name__}: {e}); "
                        "re-download or fix --data-dir") from None
    if num_classes is not None and num_classes != train.num_classes:
        raise DataError(f"--num-classes {num_classes} but {name} has {train.num_classes} classes; "
                        "leave --num-classes out")
    # --limit-train N: the validation split is sized on the N images used, not on the whole set
    base = len(train) if limit_train is None else max(1, min(int(limit_train), len(train)))
    vsize = _val_size(val, base)
    if isinstance(vsize, float) and limit_train is not None:
        vsize = max(1, int(round(vsize * base))) if vsize else 0
    vset = None
    if vsize:
        train, vset = split_validation(train, vsize, seed=seed)
    if limit_train is not None:
        if limit_train < 1:
            raise DataError(f"--limit-train must be >= 1, got {limit_train}")
        import numpy as np

        train = train.subset(np.arange(min(limit_train, len(train))), train.name)
    return train, vset, test, name


# ------------------------------------------------------------------------------------------ model

def build_model(arg: str, shape: tuple[int, ...], num_classes: int, seed: int = 0,
                init: dict[str, Any] | None = None) -> Any:
    """The net for ``--model``: ``default``, a model/run directory, a spec file, a zoo name or a spec.

    ``init`` (:func:`read_init`) picks the stem of a zoo ResNet: the one of the weights to be loaded.
    """
    from volnet.cli.model_arg import not_a_zoo_name, resolve_model_arg
    from volnet.spec import format_shape
    from volnet.train import adapt_spec, load_trained

    m = resolve_model_arg(arg, allow_default=True)
    if m.kind == "default":
        text = adapt_spec(m.text, shape, num_classes)
    elif m.kind == "dir":
        net = load_trained(arg).net
        if tuple(net.input_shape) != tuple(shape):
            raise ShapeError(f"model {arg} takes {format_shape(net.input_shape)} images but the data are "
                             f"{format_shape(shape)}")
        k = int(__import__("numpy").prod(net.output_shape(tuple(shape))))
        if k != num_classes:
            from volnet.zoo import replace_head

            _note(f"replacing the last FC of {arg} ({k} classes) by a new FC-{num_classes}")
            replace_head(net, num_classes, seed=seed)
        net.train()
        return net
    elif m.kind == "zoo":
        from volnet import zoo

        key = m.text

        options: dict[str, Any] = {}
        if init is not None and key.startswith("resnet"):
            stem = _stem_of(init)
            if stem is not None:
                options["stem"] = stem
        try:
            return zoo.get(key, num_classes=num_classes, input_shape=shape, seed=seed, **options)
        except ShapeError as e:
            raise ShapeError(e.line) from None
    else:
        text = m.text
    from volnet.spec import build, input_shape_of, items_of

    try:
        items = items_of(text)
        try:
            given = input_shape_of(items)
        except SpecError:
            given = None
        if given is not None and tuple(given) != tuple(shape):
            raise ShapeError(f"the spec's INPUT {format_shape(given)} does not match the data's "
                             f"{format_shape(shape)}; write INPUT {format_shape(shape)} (or leave INPUT out)")
        return build(text, seed=seed, input_shape=tuple(shape))
    except SpecError as e:
        first = e.line
        z = not_a_zoo_name(arg)  # a mistyped zoo name: "unknown zoo model 'vgg17'; did you mean ..."
        if z is not None:
            raise SpecError(f"--model {arg!r} is not a spec, file or model directory; {z}") from None
        hint = "" if "->" in arg or " " in arg.strip() else \
            " (not a zoo name, file or model directory either)"
        raise SpecError(f"--model {arg!r}: {first}{hint}") from None
    except ShapeError as e:
        raise ShapeError(e.line) from None


# ------------------------------------------------------------------------------------------ fine-tuning

def read_init(path: str) -> dict[str, Any]:
    """The weights of ``--init``: ``{"kind": "torch"|"volnet", "arrays": name -> array, "path": path}``.

    A file is read as safetensors with PyTorch names; a directory as a volnet model or run directory
    (its ``best/``, else ``last/``) whose arrays keep volnet's dotted names.
    """
    from volnet.errors import ModelFileError

    p = Path(path)
    if p.is_dir():
        from volnet.train import load_trained

        src = load_trained(p).net
        return {"kind": "volnet", "arrays": {**src.params, **src.buffers}, "path": str(p)}
    if not p.exists():
        raise ModelFileError(f"--init {p}: no such file or directory (give a .safetensors file or a model "
                             "directory)")
    from volnet.safetensors_io import read_safetensors

    return {"kind": "torch", "arrays": read_safetensors(p), "path": str(p)}


def _stem_of(init: dict[str, Any]) -> str | None:
    """``"imagenet"`` (7x7 conv1) or ``"cifar"`` (3x3) for ResNet weights, None when there is no conv1."""
    a = init["arrays"].get("conv1.weight" if init["kind"] == "torch" else "conv1.w")
    if a is None or getattr(a, "ndim", 0) != 4:
        return None
    return {7: "imagenet", 3: "cifar"}.get(int(a.shape[-1]))


def load_init(net: Any, init: dict[str, Any]) -> str:
    """Load ``init`` into ``net`` in place; the head is left out when the file's head has another shape
    (or is absent). Returns a one-line note of what was done. Errors are one-line ModelFileErrors."""
    from volnet.errors import ModelFileError
    from volnet.safetensors_io import load_torch_state_dict, torch_names
    from volnet.zoo import head_name

    arrays, where = init["arrays"], init["path"]
    if not net.params:
        net.build(net.input_shape)
    names = list({**net.params, **net.buffers})
    mapping = torch_names(net) if init["kind"] == "torch" else {k: k for k in names}
    try:
        head: str | None = head_name(net)
    except VolnetError:  # no FC: everything is loaded
        head = None
    skip: list[str] = []
    hw = net.params[f"{head}.w"] if head is not None else None
    src = arrays.get(mapping[f"{head}.w"]) if head is not None else None
    if hw is not None and (src is None or tuple(src.shape) != tuple(hw.shape)):
        skip = [str(head)]
    try:
        result = load_torch_state_dict(net, arrays, mapping, skip=skip)
    except ModelFileError as e:
        msg = str(e).removeprefix("state_dict: ")
        if "missing key" in msg or "unexpected key" in msg:
            msg = msg.split(" (strict=False")[0] + "; is --model the architecture of these weights?"
        raise ModelFileError(f"--init {where}: {msg}") from None
    note = f"initialised {len(result.loaded)} arrays from {where}"
    if skip and hw is not None:
        k = "no" if src is None else (f"{src.shape[0]}" if src.ndim else "?")
        note += f"; the head {head} ({k} classes in the file) is a new FC-{hw.shape[0]} (He init)"
    return note


def parse_freeze(text: str | None, net: Any) -> set[str]:
    """Parameter names frozen by ``--freeze``: ``none`` or ``until:NAME`` (:func:`volnet.zoo.freeze`)."""
    from volnet import zoo

    t = (text or "none").strip()
    if t.lower() == "none":
        return set()
    if not t.startswith("until:") or not t[len("until:"):].strip():
        raise VolnetError(f"--freeze must be until:NAME (e.g. until:layer3) or none, got {text!r}")
    try:
        return zoo.freeze(net, "until:" + t[len("until:"):].strip())
    except VolnetError as e:
        raise VolnetError(f"--freeze {t}: {str(e).removeprefix('freeze: ')}") from None


# ------------------------------------------------------------------------------------------ run

_AUGMENT = {"none": (0, False), "flip": (0, True), "crop": (None, False), "flip+crop": (None, True)}
#: Random erasing's probability with ``+erase``.
ERASE_P = 0.5


def _augment(choice: str, ds: Any) -> Any:
    from volnet.data import Augment

    if choice == "default":
        return ds.augment
    base, erase = (choice[:-len("+erase")] or "none", ERASE_P) if choice.endswith("erase") else (choice, 0.0)
    if base == "erase":
        base, erase = "none", ERASE_P
    pad, flip = _AUGMENT[base]
    if pad is None:
        pad = ds.augment.pad or max(1, ds.shape[1] // 14)
    return Augment(pad=pad, flip=flip, erase=erase)


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a new run: those given, else the recipe's (``--recipe``), else :data:`DEFAULTS`;
    ``a["recipe"]`` is the recipe's name (None without one). The onecycle schedule's rise defaults to
    30% of the run (``--warmup 0``) unless a warm-up is given."""
    from volnet.train.recipes import get_recipe

    name = getattr(args, "recipe", None)
    recipe = get_recipe(name) if name else {}
    base = {**DEFAULTS, **recipe}
    a = {k: (getattr(args, k) if getattr(args, k, None) is not None else base[k]) for k in DEFAULTS}
    if str(a["schedule"]).lower() == "onecycle" and getattr(args, "warmup", None) is None \
            and "warmup" not in recipe:
        a["warmup"] = 0.0
    a["recipe"] = name.strip().lower() if name else None
    return a


def _workers(args: argparse.Namespace) -> int:
    """Processes to train in: ``--workers``, else the recipe's ``workers`` (a new run's ``--recipe`` or
    the resumed run's stored recipe), else 1."""
    from volnet.train.recipes import RECIPES, get_recipe

    if args.workers is not None:
        return int(args.workers)
    name = getattr(args, "recipe", None)
    if args.resume:  # the run's own recipe (its checkpoint stores the options it was started with)
        import json

        try:
            doc = json.loads((Path(args.resume) / "last" / "trainer.json").read_text())
            name = doc["info"]["args"].get("recipe")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            name = None  # the resume itself reports an unreadable checkpoint
        if name not in RECIPES:
            return 1
    return int(get_recipe(name).get("workers", 1)) if name else 1


def _default_out(model: str, data: str) -> str:
    m = model if re.fullmatch(r"[\w.-]+", model) else "spec"
    d = re.sub(r"[^\w.-]+", "_", data.split(":")[-1]).strip("_") or "data"
    name = "default" if m == "default" and data == "fashion-mnist" else f"{Path(m).name}-{d}"
    return os.path.join("runs", name)


#: The TrainConfig field of each option (ConfigError names the option, not the field).
FLAGS = {"optimizer": "--optim", "lr": "--lr", "batch_size": "--batch", "epochs": "--epochs",
         "schedule": "--schedule", "warmup": "--warmup", "step_size": "--step-size", "gamma": "--gamma",
         "min_lr": "--min-lr", "weight_decay": "--weight-decay", "label_smoothing": "--label-smoothing",
         "clip": "--clip", "seed": "--seed", "save_every": "--save-every"}


def train_config(a: dict[str, Any]) -> Any:
    """The :class:`~volnet.train.TrainConfig` of the options ``a`` (augment and frozen come later, with
    the data and the net); every value is checked here, before anything is read, built or written."""
    from volnet.errors import ConfigError
    from volnet.train import TrainConfig

    kw: dict[str, Any] = {}
    m = a["momentum"]
    if m is not None:
        if not (isinstance(m, (int, float)) and math.isfinite(m) and m >= 0):
            raise ConfigError("momentum", m, "a finite number >= 0").with_name("--momentum")
        kw["momentum"] = m
    try:
        return TrainConfig(
            optimizer=a["optim"], lr=a["lr"], batch_size=a["batch"], epochs=a["epochs"],
            schedule=a["schedule"], warmup=a["warmup"], step_size=a["step_size"], gamma=a["gamma"],
            min_lr=a["min_lr"], weight_decay=a["weight_decay"], label_smoothing=a["label_smoothing"],
            optimizer_kw=kw, clip=a["clip"],
            seed=a["seed"], save_every=a["save_every"],
            update_frozen_bn=a["freeze_bn_stats"] == "update").validate()
    except ConfigError as e:
        raise e.with_name(FLAGS.get(e.field, e.field)) from None


def _check_counts(a: dict[str, Any]) -> None:
    for key in ("limit_train", "num_classes"):
        if a[key] is not None and a[key] < 1:
            raise DataError(f"--{key.replace('_', '-')} must be >= 1, got {a[key]}")


#: Types of the arguments a run stores (``info.args`` of its checkpoints) that a resume reads.
_STORED = {"data_used": (str,), "data_dir": (str, type(None)), "val": (str, int, float, type(None)),
           "seed": (int,), "limit_train": (int, type(None)), "num_classes": (int, type(None)),
           "download": (bool,)}


def _stored_args(doc: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    info = doc.get("info", {})
    stored = info.get("args") if isinstance(info, dict) else None
    if not isinstance(stored, dict) or not stored:
        raise VolnetError(f"cannot resume {run_dir}: it was not started by volnet train (no stored "
                          "arguments); resume it from Python with Trainer.resume")
    for k, types in _STORED.items():
        v = stored.get(k)
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise VolnetError(f"cannot resume {run_dir}: its stored argument {k!r} is {v!r}, not "
                              f"{' or '.join(t.__name__ for t in types)}; the checkpoint is damaged")
    return dict(stored)


def check_memory(a: dict[str, Any], requested: Any, net: Any, shape: tuple[int, ...], input_dtype: Any,
                 world: int = 1) -> int | None:
    """The batch to train with under ``--memory`` (``a["memory"]``, bytes): ``--batch auto`` -> the
    ledger's largest training batch that fits (:func:`volnet.memory.max_batch`, for ``--optim``, the net,
    the image shape ``(C, H, W)`` and the raw images' dtype); a requested batch whose predicted peak is over
    the budget -> VolnetError naming the prediction, the budget and the batch that fits. None: no
    ``--memory``. ``world``: processes sharing the global batch (each holds its ``ceil(B / world)``)."""
    from volnet.memory import ledger, max_batch
    from volnet.summary import format_bytes

    budget = a["memory"]
    if budget is None:
        return None
    opt = str(a["optim"]).lower()
    dtype = getattr(net, "dtype", "float32")
    fits = max_batch(net, shape, budget, dtype, opt, train=True, input_dtype=input_dtype) * world
    per = f" ({world} processes)" if world > 1 else ""
    if requested == "auto":
        if fits < 1:
            one = ledger(net, shape, 1, dtype, opt, input_dtype)["train_peak_bytes"]
            raise VolnetError(f"--batch auto: not even one image fits --memory {format_bytes(budget)}: the "
                              f"memory ledger predicts {format_bytes(one)} for a {opt} step of batch 1")
        return fits
    b = int(requested)
    peak = ledger(net, shape, -(-b // world), dtype, opt, input_dtype)["train_peak_bytes"]
    if peak > budget:
        hint = f"--batch {fits} fits" if fits >= 1 else "not even batch 1 fits"
        raise VolnetError(f"--batch {b} does not fit --memory {format_bytes(budget)}: the memory ledger "
                          f"predicts a training step peak ({opt}) of {format_bytes(peak)}{per}; {hint} "
                          f"(or use --batch auto)")
    return b


def run(args: argparse.Namespace) -> int:
    live = None
    holder: dict[str, Any] = {}  # the Trainer, once built: the live server reads its run directory
    from volnet.train.distributed import mpi_rank, mpi_world_size

    if getattr(args, "recipe", None) is not None and args.recipe.strip().lower() == "help":
        from volnet.train.recipes import format_recipes

        print(format_recipes())
        return 0
    if not getattr(args, "live", False) and (getattr(args, "host", None) is not None
                                              or getattr(args, "port", 8000) != 8000):
        raise VolnetError("--port and --host go with --live")
    workers = _workers(args)
    if workers > 1 and mpi_world_size() == 1:  # this process only launches the ranks
        return launch_workers(workers, args._argv)
    if getattr(args, "live", False) and mpi_rank() == 0:  # served by the rank that writes
        from volnet.report import LiveView, open_server

        server = open_server(lambda: Path(holder["t"].out_dir), args.port, args.host or "127.0.0.1")
        live = LiveView(server)
    try:
        return _run(args, live, holder)
    finally:
        if live is not None:
            live.close()


def _run(args: argparse.Namespace, live: Any, holder: dict[str, Any]) -> int:
    from volnet.errors import ConfigError
    from volnet.train import Trainer, TrainingInterrupted, read_checkpoint
    from volnet.train.callbacks import ReplaceRun
    from volnet.train.checkpoint import check_out_dir, stage_dir
    from volnet.train.distributed import from_environment

    dist = from_environment(bool(args.sync_bn))  # under mpirun: this rank; rank 0 alone writes and prints
    root = dist is None or dist.is_root
    quiet = bool(args.quiet) or not root
    extra = [live] if live is not None else []
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "last" / "trainer.json").is_file():
            what = "does not exist" if not run_dir.exists() else \
                f"has no checkpoint {run_dir}/last/trainer.json"
            raise VolnetError(f"cannot resume: {run_dir} {what}; start it with volnet train --out {run_dir}")
        ck = read_checkpoint(run_dir)  # the whole checkpoint, checked before anything is written
        a = _stored_args(ck.doc, run_dir)
        try:
            ck.config.replace(**{k: v for k, v in (("epochs", args.epochs), ("save_every", args.save_every))
                                 if v is not None})
        except ConfigError as e:
            raise e.with_name(FLAGS.get(e.field, e.field)) from None
        ignored = [k for k in DEFAULTS if k not in RESUMABLE and getattr(args, k, None) is not None
                   and getattr(args, k) != a.get(k)]
        if ignored:
            _note("resuming with the run's own settings; ignoring " + ", ".join(f"--{k.replace('_', '-')}"
                                                                            for k in ignored))
        train, val, test, used = load_data(a["data_used"], a["data_dir"], val=a["val"], seed=a["seed"],
                                           limit_train=a["limit_train"], num_classes=a["num_classes"],
                                           download=a["download"], quiet=quiet, channels=a.get("channels"))
        t = Trainer.resume(ck, train, val, test, epochs=args.epochs, save_every=args.save_every,
                           progress=not quiet, dist=dist, callbacks=extra)
        if not root:
            t.out_dir = None
        if not quiet:
            _note(f"resuming {run_dir} at epoch {t.epoch + 1}/{t.epochs}, "
                  f"batch {t.batch}/{t.steps_per_epoch}")
        out = run_dir
    else:
        # everything is checked, read and built before the run directory is touched
        a = _resolve(args)
        if a["memory"] is not None:
            from volnet.summary import parse_memory

            a["memory_bytes"] = parse_memory(a["memory"])
        elif a["batch"] == "auto":
            raise VolnetError("--batch auto needs --memory SIZE (e.g. --memory 2GB): the budget the "
                              "batch must fit")
        requested = a["batch"]
        config = train_config({**a, "batch": 1 if requested == "auto" else requested})
        _check_counts(a)
        _val_size(a["val"], 1)
        out = Path(a["out"] or (os.path.join("runs", a["recipe"]) if a["recipe"]
                                else _default_out(a["model"], a["data"])))
        a["out"] = str(out)
        kind = check_out_dir(out, bool(args.overwrite))
        train, val, test, used = load_data(a["data"], a["data_dir"], val=a["val"], seed=a["seed"],
                                           limit_train=a["limit_train"], num_classes=a["num_classes"],
                                           download=a["download"], quiet=quiet, channels=a.get("channels"))
        a["data_used"] = used
        init = read_init(a["init"]) if a["init"] else None
        net = build_model(a["model"], train.shape, train.num_classes, seed=a["seed"], init=init)
        init_note = load_init(net, init) if init is not None else None
        frozen = parse_freeze(a["freeze"], net)
        batch = check_memory({**a, "memory": a.get("memory_bytes")}, requested, net, tuple(train.shape),
                             train.x.dtype, 1 if dist is None else dist.size)
        if batch is not None:
            if requested == "auto":
                batch = min(batch, len(train))  # more than the training set buys nothing
            a["batch"] = batch  # stored: --resume trains on with the batch chosen here
            config = config.replace(batch_size=batch)
            if requested == "auto" and not quiet:
                _note(f"--batch auto: {batch}, the largest batch whose {a['optim']} training step fits "
                      f"--memory {a['memory']} by the memory ledger (at most the training set)")
        config = config.replace(augment=_augment(a["augment"], train), frozen=sorted(frozen))
        # an old run is replaced only when the new one has its first checkpoint (ReplaceRun)
        t = Trainer(net, train, val, test, config, out_dir=out if root else None, progress=not quiet,
                    info={"args": a}, dist=dist,
                    callbacks=([ReplaceRun(out)] if kind == "run" and root else []) + extra)
        if not quiet:
            nv = len(val) if val is not None else 0
            nt = len(test) if test is not None else 0
            c, h, w = train.shape
            _note(f"{net.spec()}")
            if init_note:
                _note(init_note)
            if frozen:
                n_frozen = sum(int(net.params[k].size) for k in frozen)
                bn = "kept" if a["freeze_bn_stats"] == "keep" else "updated"
                _note(f"--freeze {a['freeze']}: {len(frozen)} arrays ({n_frozen:,} of {net.num_params():,} "
                      f"parameters) frozen; BN running statistics of frozen layers {bn}")
            _note(f"{used}: {len(train)} train / {nv} val / {nt} test images [{w}x{h}x{c}], "
                  f"{train.num_classes} classes; {net.num_params():,} parameters; {t.optimizer_name} lr "
                  f"{t.lr:g}, {a['schedule']} schedule, batch {t.batch_size}, {t.epochs} epochs, augment: "
                  f"{t.augment.describe()}; run directory {out}")
    if not args.resume and kind == "run" and root:
        t.out_dir = stage_dir(out)  # the new run trains here until its first checkpoint
    holder["t"] = t
    if live is not None:
        live.server.spec = t.net.spec()
    try:
        t.fit()
    except TrainingInterrupted as e:
        print(f"volnet train: {e}; resume with: volnet train --resume {out}", file=sys.stderr)
        if dist is not None:
            dist.abort(130)
        return 130
    except Exception as e:  # one rank failing must not leave the others waiting in an allreduce
        if dist is None:
            raise
        from volnet.cli.main import error_line

        msg, user = error_line(e)
        print(f"volnet train: rank {dist.rank}: {msg}", file=sys.stderr, flush=True)
        dist.abort(2 if user else 1)
        raise
    if not root:
        return 0
    res = getattr(t, "test_result", None)
    best = f"best val acc {100 * t.best_acc:.2f}% (epoch {t.best_epoch})" if t.best_acc is not None \
        and val is not None else f"best train acc {100 * (t.best_acc or 0):.2f}%"
    test_txt = f"; test acc {100 * res['test_acc']:.2f}% ({res['n']} images)" if res else ""
    secs = sum(h["seconds"] for h in t.history)
    print(f"{best}{test_txt}; {secs / 60:.1f} min; run in {out} (metrics.jsonl, curves.png, best/, last/)")
    return 0


def launch_workers(n: int, argv: list[str]) -> int:
    """``volnet train --workers N ...``: run the same command in N MPI processes (``mpirun -np N``, one
    BLAS thread each), say so, and return mpirun's exit status."""
    import shutil
    import subprocess

    from volnet.train.distributed import INSTALL_HINT

    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise VolnetError(f"--workers needs mpi4py and an MPI launcher: {INSTALL_HINT}") from None
    here = Path(sys.executable).parent / "mpirun"
    mpirun = str(here) if here.exists() else shutil.which("mpirun")
    if mpirun is None:
        raise VolnetError(f"--workers: no mpirun found next to {sys.executable} or on PATH; {INSTALL_HINT}")
    rest, skip = [], False
    for v in argv:  # the same arguments without --workers N
        if skip:
            skip = False
            continue
        if v == "--workers":
            skip = True
            continue
        if v.startswith("--workers="):
            continue
        rest.append(v)
    cmd = [mpirun, "-np", str(n), "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    cmd += [sys.executable, "-m", "volnet", *rest]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    _note(f"training in {n} processes (data-parallel over MPI, 1 BLAS thread each): " + " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    assert proc.stderr is not None
    flags = dict(zip(rest, rest[1:]))
    run = flags.get("--resume") or flags.get("--out") or "RUN_DIR"
    boxed, box = False, []  # Open MPI's boxed reports become one line of ours
    for line in proc.stderr:
        if line.startswith("-" * 20):
            if boxed and box:
                _note(mpi_report_line(" ".join(box), run))
            boxed, box = not boxed, []
        elif boxed:
            box.append(line.strip())
        else:
            sys.stderr.write(line)
            sys.stderr.flush()
    return proc.wait()


def mpi_report_line(text: str, run: str = "RUN_DIR") -> str:
    """One line for an Open MPI report box (``prterun noticed that process rank 1 ... exited on signal 9
    (Killed).``): which rank ended how, and what to do.

    >>> mpi_report_line("prterun noticed that process rank 1 with PID 7 on node vm exited on signal 9 "
    ...                 "(Killed).", "runs/dp")
    'rank 1 exited on signal 9 (Killed); the job stopped: resume with volnet train --resume runs/dp'
    """
    m = re.search(r"process rank (\d+).*?(exited on signal \d+(?: \([^)]*\))?|exited with status \d+|"
                  r"non-zero status)", text)
    if m:
        return f"rank {m.group(1)} {m.group(2)}; the job stopped: resume with volnet train --resume {run}"
    return "MPI: " + re.sub(r"\s+", " ", text)[:300]
