"""``TrainConfig``: every setting of a training run in one dataclass (defaults, checks, JSON).

The CLI builds one from its flags, :class:`~volnet.train.Trainer` takes one (or its fields as keywords),
every checkpoint stores ``to_dict()`` and a resumed run rebuilds it with ``from_dict``. ``validate()``
checks every field (types, ranges, NaN/inf) before anything is built or written, raising
:class:`volnet.errors.ConfigError` with the field name, the value and the rule.

>>> cfg = TrainConfig(epochs=3, lr=1e-3, clip=5.0)
>>> TrainConfig.from_dict(cfg.to_dict()) == cfg
True
>>> TrainConfig(batch_size=0).validate()
Traceback (most recent call last):
...
volnet.errors.ConfigError: batch_size must be an integer >= 1, got 0
>>> TrainConfig(lr=float("nan")).validate()
Traceback (most recent call last):
...
volnet.errors.ConfigError: lr must be a finite number > 0 (or None: the optimizer's default), got nan
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from volnet.data import Augment
from volnet.errors import ConfigError, DataError
from volnet.optim import OPTIMIZERS

SCHEDULES = ("constant", "step", "cosine", "onecycle")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _is_num(v) and math.isfinite(v)


@dataclass
class TrainConfig:
    """The settings of a run (what a checkpoint stores and ``--resume`` reuses).

    optimizer: ``sgd``, ``momentum``, ``nesterov``, ``adagrad``, ``rmsprop``, ``adam``, ``adamw``, with
    ``optimizer_kw`` its other keyword arguments (``momentum``, ``betas``, ...); lr: base learning rate
    (None: the optimizer's default); weight_decay: L2 penalty. batch_size: B; epochs: passes over the
    training set. schedule: ``constant``, ``step`` (times ``gamma`` every ``step_size`` epochs) or
    ``cosine`` (to ``min_lr`` at the end), per step, after ``warmup`` epochs (may be fractional) of linear
    warm-up from ``0.1 * lr``; ``onecycle`` (torch's OneCycleLR: cosine rise from ``lr / 25`` to ``lr``
    over ``warmup`` epochs, 0: 30% of the run, then cosine fall to ``lr / 2.5e5``). label_smoothing: eps
    of the training loss's target ``(1 - eps) onehot + eps / K`` (validation and test losses are plain).
    clip: the global gradient norm's limit (None: no clipping). seed:
    shuffling and augmentation (batch i of epoch e depends only on (seed, e, i)). augment: on-the-fly
    augmentation (None: the training set's default). save_every: also checkpoint every this many steps.
    eval_batch_size: images per inference forward. frozen: parameter names not trained
    (:func:`volnet.zoo.freeze`); update_frozen_bn: let the BN layers of frozen blocks update their running
    statistics (PyTorch's default) instead of keeping them.
    """

    optimizer: str = "adam"
    lr: float | None = None
    batch_size: int = 64
    epochs: int = 10
    schedule: str = "cosine"
    warmup: float = 0.0
    step_size: float | None = None
    gamma: float = 0.1
    min_lr: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    optimizer_kw: dict[str, Any] = field(default_factory=dict)
    clip: float | None = None
    seed: int = 0
    augment: Augment | None = None
    save_every: int | None = None
    eval_batch_size: int = 256
    frozen: list[str] = field(default_factory=list)
    update_frozen_bn: bool = False

    def validate(self) -> TrainConfig:
        """Check every field; returns self. Raises ConfigError naming the first bad one."""
        def need(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ConfigError(name, getattr(self, name), expected)

        need("optimizer", isinstance(self.optimizer, str) and self.optimizer.lower() in OPTIMIZERS,
             f"one of {', '.join(OPTIMIZERS)}")
        need("lr", self.lr is None or (_finite(self.lr) and self.lr > 0),
             "a finite number > 0 (or None: the optimizer's default)")
        need("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "an integer >= 1")
        need("epochs", _is_int(self.epochs) and self.epochs >= 0, "an integer >= 0")
        need("schedule", isinstance(self.schedule, str) and self.schedule.lower() in SCHEDULES,
             f"one of {', '.join(SCHEDULES)}")
        need("warmup", _finite(self.warmup) and self.warmup >= 0, "a finite number of epochs >= 0")
        need("step_size", self.step_size is None or (_finite(self.step_size) and self.step_size > 0),
             "a finite number of epochs > 0")
        need("step_size", self.step_size is not None or self.schedule.lower() != "step",
             "given for the step schedule (epochs between decays)")
        need("gamma", _finite(self.gamma) and self.gamma > 0, "a finite number > 0")
        need("min_lr", _finite(self.min_lr) and self.min_lr >= 0, "a finite number >= 0")
        need("weight_decay", _finite(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0")
        need("label_smoothing", _finite(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             "a number in [0, 1)")
        need("warmup", self.schedule.lower() != "onecycle" or self.epochs == 0 or self.warmup < self.epochs,
             "shorter than the run for the onecycle schedule (epochs of the rise; 0: 30%)")
        need("optimizer_kw", isinstance(self.optimizer_kw, dict) and all(
            isinstance(k, str) and _json_finite(v) for k, v in self.optimizer_kw.items()),
            "a dict of finite numbers, booleans or lists of them")
        need("clip", self.clip is None or (_finite(self.clip) and self.clip > 0),
             "a finite number > 0 (or None: no clipping)")
        need("seed", _is_int(self.seed) and 0 <= self.seed < 2**63, "an integer >= 0")
        need("augment", self.augment is None or isinstance(self.augment, Augment),
             "a volnet.data.Augment (or None: the dataset's default)")
        need("save_every", self.save_every is None or (_is_int(self.save_every) and self.save_every >= 1),
             "an integer >= 1 (steps) or None")
        need("eval_batch_size", _is_int(self.eval_batch_size) and self.eval_batch_size >= 1,
             "an integer >= 1")
        need("frozen", isinstance(self.frozen, list) and all(isinstance(k, str) for k in self.frozen),
             "a list of parameter names")
        need("update_frozen_bn", isinstance(self.update_frozen_bn, bool), "True or False")
        return self

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (unknown names raise ConfigError), validated."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(unknown[0], changes[unknown[0]], f"a TrainConfig field ({', '.join(_names())})")
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (``augment`` as its config dict); ``from_dict`` reverses it."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["augment"] = None if self.augment is None else self.augment.config()
        d["optimizer_kw"] = dict(self.optimizer_kw)
        d["frozen"] = sorted(self.frozen)
        return d

    def to_json(self) -> str:
        """``to_dict`` as JSON text (NaN/inf refused: validate first)."""
        return json.dumps(self.to_dict(), allow_nan=False, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any) -> TrainConfig:
        """The config of ``to_dict`` (or a checkpoint's ``config``), validated.

        Checkpoints of earlier volnet versions stored the same keys (``schedule`` None for a callable
        schedule reads as ``constant``; ``optimizer_kw`` lists as tuples are kept as lists).
        """
        if not isinstance(d, dict):
            raise ConfigError("config", d, "a JSON object of training settings")
        unknown = sorted(set(d) - set(_names()))
        if unknown:
            raise ConfigError(unknown[0], d[unknown[0]], f"a TrainConfig field ({', '.join(_names())})")
        kw = dict(d)
        if kw.get("schedule", "cosine") is None:
            kw["schedule"] = "constant"
        aug = kw.get("augment")
        if aug is not None:
            if not isinstance(aug, dict):
                raise ConfigError("augment", aug, "an object {pad, flip, flip_p, erase}")
            try:
                kw["augment"] = Augment(**aug)
            except (TypeError, DataError) as e:
                raise ConfigError("augment", aug, f"an object {{pad, flip, flip_p, erase}} ({e})") from None
        if kw.get("frozen") is None:
            kw["frozen"] = []
        if kw.get("optimizer_kw") is None:
            kw["optimizer_kw"] = {}
        return cls(**kw).validate()


def _json_finite(v: Any) -> bool:
    if isinstance(v, bool) or _finite(v):
        return True
    return isinstance(v, (list, tuple)) and all(_json_finite(x) for x in v)


def _names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]
