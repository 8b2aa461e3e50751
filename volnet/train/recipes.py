"""Named training recipes: ``volnet train --recipe NAME`` (data, not code paths).

A recipe is a dict of ``volnet train`` options (the keys of :data:`volnet.cli.train.DEFAULTS`, the flag
names with ``_`` for ``-``) plus ``workers``; every flag given on the command line overrides the
recipe's value (``--recipe fmnist-30min --epochs 2``). The run stores the recipe's name and the resolved
options in its checkpoints, so ``--resume`` continues it with the same settings.

``fmnist-30min`` (the best recipe: about 27 minutes on 2 cores, data, validation and checkpoints included)::

    INPUT [28x28x1] -> [CONV3-32 -> BN -> RELU]*2 -> POOL2 -> [CONV3-64 -> BN -> RELU]*2 -> POOL2
      -> FC-256 -> BN -> RELU -> FC-10
    SGD Nesterov (momentum 0.9), lr 0.1 after 2 epochs of linear warm-up from lr/10, cosine to 0,
    batch 128, weight decay 5e-4, random crop (pad 2) + flip,
    30 epochs on 55,000 images, 5,000 held out for validation, 2 data-parallel processes

Measured (BENCHMARKS.md "Training"): 94.71% test accuracy (best validation 95.32% at epoch 28).

>>> sorted(RECIPES)
['default', 'fmnist-30min']
>>> get_recipe("fmnist-30min")["optim"]
'nesterov'
>>> get_recipe("fmnist30")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
volnet.errors.VolnetError: --recipe: unknown recipe 'fmnist30'; did you mean 'fmnist-30min'? (recipes: ...)
"""

from __future__ import annotations

import difflib
from typing import Any

from volnet.errors import VolnetError

#: The recipes: name -> {"about": one line, option: value, ...}.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {
        "about": "make train: the default net, Adam, 5 epochs, flips (about 10 minutes on 2 cores)",
        "model": "default", "data": "fashion-mnist", "epochs": 5, "augment": "flip",
    },
    "fmnist-30min": {
        "about": "Fashion-MNIST >= 94.5% in under 30 minutes on 2 cores: VGG-style net with BN, SGD "
                 "Nesterov, warm-up + cosine, crop + flip, 2 processes",
        "model": "INPUT [28x28x1] -> [CONV3-32 -> BN -> RELU]*2 -> POOL2 -> [CONV3-64 -> BN -> RELU]*2 "
                 "-> POOL2 -> FC-256 -> BN -> RELU -> FC-10",
        "data": "fashion-mnist", "val": 5000,
        "epochs": 30, "batch": 128,
        "optim": "nesterov", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "schedule": "cosine", "warmup": 2.0,
        "augment": "flip+crop",
        "workers": 2,
    },
}


def recipe_names() -> list[str]:
    """The recipes' names, sorted."""
    return sorted(RECIPES)


def get_recipe(name: str) -> dict[str, Any]:
    """The options of recipe ``name`` (a copy, without ``about``); an unknown name raises VolnetError
    listing the recipes (with a did-you-mean)."""
    key = str(name).strip().lower()
    if key not in RECIPES:
        close = difflib.get_close_matches(key, RECIPES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise VolnetError(f"--recipe: unknown recipe {name!r}; {hint}(recipes: {', '.join(recipe_names())}; "
                          "volnet train --recipe help shows them)")
    return {k: v for k, v in RECIPES[key].items() if k != "about"}


def format_recipes() -> str:
    """Every recipe with its options, one block each (``volnet train --recipe help``)."""
    lines = []
    for k in recipe_names():
        r = RECIPES[k]
        lines.append(f"{k}: {r['about']}")
        lines += [f"    --{o.replace('_', '-')} " + (f'"{v}"' if " " in str(v) else str(v))
                  for o, v in r.items() if o != "about"]
    return "\n".join(lines)
