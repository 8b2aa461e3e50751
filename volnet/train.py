"""Training a ConvNet on images: ``Trainer``, checkpoints, ``metrics.jsonl``, curves (the notes' "Training").

The loop is the notes' recipe: normalise with statistics of the training split only, hold out a
validation split, shuffle every epoch, augment on the fly, minimise the softmax (cross-entropy) loss of the
scores with a parameter update (Adam, SGD + momentum, ...) whose learning rate follows a schedule (step
decay, cosine, linear warm-up), optionally clipping the gradient norm; keep the model with the best
validation accuracy.

A run directory (``out_dir``) holds::

    metrics.jsonl   one JSON object per epoch: epoch, train_loss, train_acc, val_loss, val_acc, lr,
                    seconds, images_per_s (the whole file is rewritten atomically after every epoch)
    curves.png      loss and accuracy vs epoch (needs matplotlib; skipped with a note otherwise)
    last/           checkpoint: model.json + weights.npz (a volnet.io model directory), trainer.json
                    (position, normaliser, class names, config, RNG states, history, optimizer scalars),
                    optimizer.npz (optimizer state arrays); written every epoch and every ``save_every``
                    steps, as a whole (temp directory + rename)
    best/           the same for the best validation accuracy (without optimizer state)
    results.json    test loss/accuracy of ``best/`` when a test set was given

Resuming (``Trainer.resume(run_dir, train, val)``) continues bit-identically: the sample order and the
augmentation of batch ``i`` of epoch ``e`` are pure functions of ``(seed, e, i)``
(:func:`volnet.data.batches`), the learning rate a pure function of the step, and the checkpoint restores
weights, BN running statistics, optimizer state, dropout generators and the partial-epoch statistics.

Fine-tuning (``Trainer(..., frozen=names)``, e.g. ``frozen=volnet.zoo.freeze(net, "until:layer3")``): the
optimizer is built over the other parameters only and steps with their gradients only (gradient clipping
and weight decay see only them), so frozen parameters stay bit-identical. The BN layers whose ``w``/``b``
are frozen also keep their running statistics unchanged (restored after every training forward; the
forward itself still normalises with the batch statistics, as PyTorch in train mode does);
``update_frozen_bn=True`` lets them update as PyTorch does by default. The frozen names are stored in
the checkpoint, so a resumed run keeps them frozen.

Ctrl-C is deferred to the end of the current step; the trainer then writes ``last/`` at that position and
raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``). A second Ctrl-C interrupts at once. A
NaN/inf loss raises :class:`TrainingError` and leaves the last good checkpoint untouched.

Example::

    from volnet.data import load_dataset, split_validation
    from volnet.train import Trainer, default_model

    train, test = load_dataset("fashion-mnist")
    train, val = split_validation(train, 5000, seed=0)
    net = default_model(train.shape, train.num_classes)
    history = Trainer(net, train, val, test, epochs=4, out_dir="runs/fmnist").fit()

See: cs231n ``solver.py`` (``Solver.train``), ``torch.utils.data.DataLoader`` + a PyTorch training loop.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from volnet.data import Augment, Dataset, Normalizer, batches, num_batches
from volnet.errors import ModelFileError, ShapeError, VolnetError
from volnet.optim import Optimizer, make_optimizer, make_schedule
from volnet.spec import format_shape

__all__ = [
    "DEFAULT_MODEL", "Evaluation", "ProgressBar", "Trainer", "TrainedModel", "TrainingError",
    "TrainingInterrupted", "adapt_spec", "confusion_matrix", "default_model", "format_confusion",
    "load_trained", "plot_confusion", "plot_curves", "read_metrics",
]

#: The default net (``--model default``): a small VGG-like ConvNet in the notes' notation, two stages of
#: two 3x3 CONV-BN-RELU layers and a 2x2 max pool, then FC-BN-RELU and the class scores. ``INPUT`` and
#: the last ``FC`` are rewritten for the dataset by :func:`adapt_spec` (28x28x1 and 10 classes here for
#: Fashion-MNIST; digits 8x8x1, CIFAR-10 32x32x3). About 0.47M parameters and 19M multiply-adds per
#: 28x28 image.
DEFAULT_MODEL = (
    "INPUT [28x28x1] -> [CONV3-32 -> BN -> RELU]*2 -> POOL2 -> [CONV3-64 -> BN -> RELU]*2 -> POOL2"
    " -> FC-128 -> BN -> RELU -> FC-10"
)

CHECKPOINT_FORMAT = "volnet-checkpoint"
CHECKPOINT_VERSION = 1
TRAINER_JSON = "trainer.json"
OPTIMIZER_NPZ = "optimizer.npz"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
RESULTS = "results.json"


class TrainingError(VolnetError):
    """Training cannot go on: the loss became NaN/inf, or a checkpoint does not fit the run."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or ``KeyboardInterrupt``) during :meth:`Trainer.fit`, after the checkpoint was written.

    Attributes: ``checkpoint`` (the ``last/`` directory or None without ``out_dir``), ``epoch`` (0-based
    epoch in progress), ``batch`` (batches done in it), ``step`` (steps done in all).
    """

    def __init__(self, message: str, checkpoint: Path | None, epoch: int, batch: int, step: int) -> None:
        super().__init__(message)
        self.checkpoint, self.epoch, self.batch, self.step = checkpoint, epoch, batch, step

    def __str__(self) -> str:
        return str(self.args[0])


# ------------------------------------------------------------------------------------------ the model

def adapt_spec(spec: str, input_shape: Sequence[int], num_classes: int) -> str:
    """Rewrite a spec for a dataset: ``INPUT [..]`` becomes ``input_shape`` (C, H, W) and the last
    ``FC-N`` becomes ``FC-num_classes``.

    >>> adapt_spec("INPUT [28x28x1] -> CONV3-8 -> POOL2 -> FC-10", (3, 32, 32), 100)
    'INPUT [32x32x3] -> CONV3-8 -> POOL2 -> FC-100'
    """
    if len(input_shape) != 3:
        raise ShapeError(f"adapt_spec: input_shape must be (C, H, W), got {tuple(input_shape)}")
    token = f"INPUT {format_shape(input_shape)}"
    out, n = re.subn(r"(?i)\bINPUT\s*\[[^\]]*\]", token, spec, count=1)
    if n == 0:
        out = f"{token} -> {spec}"
    fcs = list(re.finditer(r"(?i)\bFC-(\d+)", out))
    if not fcs:
        raise VolnetError(f"adapt_spec: the spec has no FC-N layer to give {num_classes} class scores; "
                          f"end it with FC-{num_classes}")
    last = fcs[-1]
    return f"{out[:last.start(1)]}{int(num_classes)}{out[last.end(1):]}"


def default_model(input_shape: Sequence[int], num_classes: int, seed: int = 0) -> Any:
    """:data:`DEFAULT_MODEL` built for ``input_shape`` (C, H, W) and ``num_classes`` (He init from ``seed``).

    Inputs smaller than 4x4 cannot take the two 2x2 pools; the error says so.
    """
    from volnet.spec import build

    return build(adapt_spec(DEFAULT_MODEL, input_shape, num_classes), seed=seed)


def _output_layer(net: Any) -> Any:
    """The layer producing the net's output (last of a Sequential, the output node of a Graph)."""
    from volnet.net import Graph, Sequential

    if isinstance(net, Sequential) and len(net):
        return net[-1]
    if isinstance(net, Graph) and len(net):
        return net[net.output]
    return None


# ------------------------------------------------------------------------------------------ progress

class ProgressBar:
    """One self-rewriting line on stderr: ``epoch 2/10 [####----] 430/860 loss 0.331 acc 88.1% img/s 1012``.

    Written here rather than depending on tqdm: volnet's only run-time dependency is NumPy, and a bar is
    nothing but ``\\r`` rewrites of one line, throttled to ``min_interval`` seconds. It is disabled when
    the stream is not a terminal (pipes, CI logs, files get only the trainer's per-epoch line) or with
    ``enabled=False`` (``--quiet``).
    """

    def __init__(self, total: int, prefix: str = "", stream: TextIO | None = None,
                 enabled: bool | None = None, width: int = 24, min_interval: float = 0.1) -> None:
        self.total, self.prefix, self.width, self.min_interval = int(total), prefix, int(width), min_interval
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self._last = 0.0
        self._shown = False

    def update(self, done: int, force: bool = False, **stats: Any) -> None:
        """Show ``done`` of ``total`` and ``stats`` (name -> value; floats printed with 4 digits)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.min_interval and done < self.total:
            return
        self._last = now
        frac = done / self.total if self.total else 1.0
        fill = int(round(frac * self.width))
        parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()]
        bar = "#" * fill + "-" * (self.width - fill)
        line = f"{self.prefix}[{bar}] {done}/{self.total} " + " ".join(parts)
        self.stream.write("\r" + line[:200] + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """End the line (a newline if anything was drawn)."""
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self._shown = False


# ------------------------------------------------------------------------------------------ evaluation

@dataclass
class Evaluation:
    """Result of :meth:`Trainer.evaluate`: mean softmax ``loss``, accuracy ``acc`` in [0, 1], ``n`` samples,
    ``y_true``/``y_pred`` (N,) int64 and ``probs`` (N, K) class probabilities."""

    loss: float
    acc: float
    n: int
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray

    def confusion(self, num_classes: int | None = None) -> np.ndarray:
        """Confusion matrix (K, K): row = true class, column = predicted class."""
        k = num_classes if num_classes is not None else self.probs.shape[1]
        return confusion_matrix(self.y_true, self.y_pred, k)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[i, j]`` of samples of true class i predicted as j, shape (K, K) int64."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def format_confusion(cm: np.ndarray, classes: Sequence[str]) -> str:
    """A text confusion matrix: rows true classes (with names and per-class accuracy), columns predicted
    classes by index."""
    k = cm.shape[0]
    names = [str(c) for c in classes]
    nw = max(len(n) for n in names) + 4
    cw = max(5, len(str(int(cm.max()))) + 1 if cm.size else 5)
    head = " " * nw + "".join(f"{j:>{cw}}" for j in range(k)) + "   recall"
    lines = ["confusion matrix (rows: true class, columns: predicted class index)", head]
    for i in range(k):
        row_total = int(cm[i].sum())
        recall = f"{100.0 * cm[i, i] / row_total:7.1f}%" if row_total else "      -"
        label = f"{i:>2} {names[i]}"
        lines.append(f"{label:<{nw}}" + "".join(f"{int(v):>{cw}}" for v in cm[i]) + " " + recall)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ plots

def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: Path) -> None:
    from volnet.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> bool:
    """Write ``path`` (PNG): loss and accuracy (train, val) vs epoch. Returns False when matplotlib is
    missing (nothing written)."""
    plt = _pyplot()
    if plt is None:
        return False
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((a1, "loss", "softmax loss"), (a2, "acc", "accuracy")):
        ax.plot(ep, [h[f"train_{key}"] for h in history], "o-", label="train")
        if any(h.get(f"val_{key}") is not None for h in history):
            ax.plot(ep, [h.get(f"val_{key}") for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        _save_figure(fig, Path(path))
    finally:
        plt.close(fig)
    return True


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike[str]) -> bool:
    """Write a confusion-matrix image (rows true, columns predicted); False when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    k = cm.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = cm.max() if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > top / 2 else "black")
    fig.tight_layout()
    try:
        _save_figure(fig, Path(path))
    finally:
        plt.close(fig)
    return True


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The epoch records of a ``metrics.jsonl`` (a run directory or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ checkpoints

def _fingerprint(ds: Dataset | None) -> dict[str, Any] | None:
    if ds is None:
        return None
    crc = zlib.crc32(np.ascontiguousarray(ds.y).tobytes())
    return {"n": len(ds), "shape": list(ds.shape), "y_crc32": crc}


@dataclass
class TrainedModel:
    """A model for inference with what preprocessing it needs (see :func:`load_trained`).

    ``net`` (built, eval mode), ``normalizer`` (None: inputs are used as they are), ``classes`` (None:
    class indices), ``path`` (the model directory), ``run_dir`` (its run, if any), ``info`` (the
    ``trainer.json`` contents or ``{}``).
    """

    net: Any
    normalizer: Normalizer | None
    classes: list[str] | None
    path: Path
    run_dir: Path | None
    info: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.net.input_shape)

    def class_names(self, k: int) -> list[str]:
        """``classes`` or ``["0", "1", ...]`` for ``k`` outputs."""
        return list(self.classes) if self.classes and len(self.classes) == k else [str(i) for i in range(k)]

    def probabilities(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, K) for raw images ``x`` (N, C, H, W) in [0, 1] (normalised here)."""
        x = x.astype(self.net.dtype, copy=False)
        if self.normalizer is not None:
            x = self.normalizer.transform(x)
        scores = self.net.predict(x, batch_size=batch_size).reshape(len(x), -1)
        if type(_output_layer(self.net)).__name__ == "Softmax":
            return scores
        from volnet.ops.activations import softmax

        return softmax(scores)


def _model_dir(path: Path) -> Path:
    if (path / "model.json").is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / "model.json").is_file():
            return path / sub
    if not path.exists():
        raise ModelFileError(f"no model at {path}: the directory does not exist")
    raise ModelFileError(f"{path} is neither a model directory (model.json + weights.npz) nor a training run "
                         "(best/ or last/ inside); pass runs/NAME or runs/NAME/best")


def _read_trainer_json(path: Path) -> dict[str, Any]:
    p = path / TRAINER_JSON
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{p}: unreadable checkpoint metadata ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{p}: not a volnet checkpoint (format {doc.get('format')!r})"
                             if isinstance(doc, dict) else f"{p}: not a JSON object")
    if int(doc.get("version", 0)) > CHECKPOINT_VERSION:
        raise ModelFileError(f"{p}: checkpoint version {doc.get('version')} is newer than this volnet; "
                             "upgrade volnet")
    return doc


def load_trained(path: str | os.PathLike[str]) -> TrainedModel:
    """Load a model for evaluation/prediction from a run directory (uses ``best/``, else ``last/``), a
    checkpoint directory or a plain model directory (:func:`volnet.io.save`).

    The normaliser and class names come from the checkpoint's ``trainer.json`` when there is one.
    Raises ModelFileError (one line) when nothing loadable is there.
    """
    from volnet.io import load

    p = Path(path)
    mdir = _model_dir(p)
    net = load(mdir)
    net.eval()
    info: dict[str, Any] = _read_trainer_json(mdir) if (mdir / TRAINER_JSON).is_file() else {}
    norm = Normalizer.from_dict(info["normalizer"]) if info.get("normalizer") else None
    classes = [str(c) for c in info["classes"]] if info.get("classes") else None
    run_dir = mdir.parent if (mdir.parent / METRICS).is_file() or info else None
    return TrainedModel(net, norm, classes, mdir, run_dir, info)


# ------------------------------------------------------------------------------------------ trainer

Callback = Callable[["Trainer", str], None]


class Trainer:
    """Mini-batch training of a volnet net on a :class:`volnet.data.Dataset`, with checkpoints.

    Args:
        net: a ``Sequential``/``Graph`` (built or not: it is built for ``train.shape``) ending in class
            scores; a trailing ``Softmax`` is skipped during training (the loss is taken on its input).
        train, val, test: Datasets; ``val`` picks ``best/`` (None: the training accuracy does), ``test`` is
            evaluated with the best weights at the end (``results.json``).
        optimizer: ``sgd``, ``momentum``, ``nesterov``, ``adagrad``, ``rmsprop``, ``adam``, ``adamw``;
            ``optimizer_kw`` its other keyword arguments (``momentum``, ``betas``, ...).
        lr: base learning rate (None: the optimizer's default). weight_decay: L2 penalty.
        batch_size: B. epochs: number of passes over ``train``.
        schedule: ``constant``, ``step`` (decay by ``gamma`` every ``step_size`` epochs) or ``cosine``
            (to ``min_lr`` at the end), evaluated per step; ``warmup`` epochs (may be fractional) of
            linear warm-up from ``0.1 * lr``; or a callable ``step -> lr``.
        clip: clip the global gradient norm to this value (None: no clipping).
        seed: shuffling and augmentation seed (batch i of epoch e depends only on (seed, e, i)).
        augment: on-the-fly augmentation (default ``train.augment``, the dataset's default).
        normalizer: a fitted :class:`~volnet.data.Normalizer` (default: fitted on ``train.x``).
        out_dir: run directory for checkpoints, ``metrics.jsonl``, ``curves.png`` (None: nothing written).
        save_every: also write ``last/`` every this many steps (mid-epoch checkpoints).
        progress: show the progress bar (on a terminal) and print one line per epoch to stderr.
        callbacks: functions ``f(trainer, event)`` called after every step (``"step"``) and epoch
            (``"epoch"``); they may call :meth:`request_stop` or raise ``KeyboardInterrupt``.
        info: extra JSON-able data stored in the checkpoints (the CLI stores its arguments).
        frozen: names of parameters (``net.params`` keys) not to train (:func:`volnet.zoo.freeze`): the
            optimizer holds only the others and steps with their gradients only; frozen arrays are never
            written. The names are stored in the checkpoint (``config["frozen"]``).
        update_frozen_bn: False (default): BN layers whose parameters are frozen keep their running
            statistics as they are (what a frozen, pretrained backbone needs at inference); True: they
            update them in training mode as any BN layer (PyTorch's behaviour for ``requires_grad=False``).
    """

    def __init__(self, net: Any, train: Dataset, val: Dataset | None = None, test: Dataset | None = None, *,
                 optimizer: str = "adam", lr: float | None = None, batch_size: int = 64, epochs: int = 10,
                 schedule: str | Callable[[int], float] = "cosine", warmup: float = 0.0,
                 step_size: float | None = None, gamma: float = 0.1, min_lr: float = 0.0,
                 weight_decay: float = 0.0, optimizer_kw: dict[str, Any] | None = None,
                 clip: float | None = None, seed: int = 0, augment: Augment | None = None,
                 normalizer: Normalizer | None = None, out_dir: str | os.PathLike[str] | None = None,
                 save_every: int | None = None, progress: bool = True, callbacks: Iterable[Callback] = (),
                 eval_batch_size: int = 256, info: dict[str, Any] | None = None,
                 frozen: Iterable[str] | None = None, update_frozen_bn: bool = False) -> None:
        if batch_size < 1 or epochs < 0:
            raise VolnetError(f"Trainer: need batch_size >= 1 and epochs >= 0, got batch_size={batch_size}, "
                              f"epochs={epochs}")
        if save_every is not None and save_every < 1:
            raise VolnetError(f"Trainer: save_every must be >= 1 steps, got {save_every}")
        if clip is not None and not clip > 0:
            raise VolnetError(f"Trainer: clip must be > 0, got {clip}")
        if len(train) == 0:
            raise VolnetError("Trainer: the training set is empty")
        self.net, self.train_set, self.val_set, self.test_set = net, train, val, test
        for ds in (val, test):
            if ds is not None and ds.shape != train.shape:
                raise ShapeError(f"Trainer: {ds.name} images are {ds.shape} but training images are "
                                 f"{train.shape}")
        self.classes = list(train.classes)
        self._build_net()
        self.batch_size, self.epochs, self.seed = int(batch_size), int(epochs), int(seed)
        self.clip, self.save_every = clip, save_every
        self.augment = train.augment if augment is None else augment
        self.normalizer = normalizer if normalizer is not None else Normalizer().fit(train.x)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress, self.callbacks = bool(progress), list(callbacks)
        self.eval_batch_size = int(eval_batch_size)
        self.info = dict(info or {})
        self.steps_per_epoch = num_batches(len(train), self.batch_size)
        self.optimizer_name = optimizer
        self.optimizer_kw = dict(optimizer_kw or {})
        self.frozen: set[str] = self._check_frozen(frozen)
        self.update_frozen_bn = bool(update_frozen_bn)
        #: the parameters the optimizer updates (all of ``net.params`` but ``frozen``)
        self.trainable: dict[str, np.ndarray] = {k: v for k, v in self.net.params.items()
                                                  if k not in self.frozen}
        self._frozen_buffers = self._frozen_bn_buffers()
        self.optimizer: Optimizer = make_optimizer(optimizer, self.trainable, lr, weight_decay=weight_decay,
                                                   **self.optimizer_kw)
        self.lr = self.optimizer.lr
        self.weight_decay = float(weight_decay)
        self.schedule_cfg = {"schedule": schedule if isinstance(schedule, str) else None, "warmup": warmup,
                             "step_size": step_size, "gamma": gamma, "min_lr": min_lr}
        self.schedule = self._make_schedule(schedule, warmup, step_size, gamma, min_lr)
        # position and statistics
        self.epoch = 0  # 0-based epoch in progress
        self.batch = 0  # batches done in it
        self.step = 0  # steps done in all
        self.history: list[dict[str, Any]] = []
        self.best_acc: float | None = None
        self.best_epoch: int | None = None
        self._best_state: dict[str, np.ndarray] | None = None
        self._stats = self._zero_stats()
        self._stop = False
        self._sigint = False
        self._warned_plot = False

    # -- setup ------------------------------------------------------------------------------------
    def _build_net(self) -> None:
        from volnet.net import Container

        shape = self.train_set.shape
        net = self.net
        if getattr(net, "input_shape", None) is not None and tuple(net.input_shape) != shape:
            raise ShapeError(f"the net takes {format_shape(net.input_shape)} inputs but "
                             f"{self.train_set.name} images are {format_shape(shape)}; build it for "
                             f"INPUT {format_shape(shape)}")
        if isinstance(net, Container):
            net.build(shape)
        out = tuple(net.output_shape(shape))
        k = int(np.prod(out))
        if k != len(self.classes):
            raise ShapeError(f"the net outputs {k} scores per image ({out}) but {self.train_set.name} has "
                             f"{len(self.classes)} classes; end the net with FC-{len(self.classes)}")
        self.dtype = np.dtype(getattr(net, "dtype", np.float32))
        last = _output_layer(net)
        self._skip_softmax = type(last).__name__ == "Softmax"

    def _check_frozen(self, frozen: Iterable[str] | None) -> set[str]:
        if frozen is None:
            return set()
        if isinstance(frozen, str):
            raise VolnetError(f"Trainer: frozen must be a set of parameter names, got the string {frozen!r}; "
                              "use volnet.zoo.freeze(net, 'until:layer3')")
        names = {str(k) for k in frozen}
        params = self.net.params
        unknown = sorted(names - set(params))
        if unknown:
            raise VolnetError(f"Trainer: frozen names {unknown[:3]} are not parameters of the net (e.g. "
                              f"{', '.join(list(params)[:3])}); use volnet.zoo.freeze(net, 'until:NAME')")
        if params and names >= set(params):
            raise VolnetError(f"Trainer: all {len(params)} parameters are frozen: nothing to train; freeze "
                              "up to a block before the head (e.g. until:layer3)")
        return names

    def _frozen_bn_buffers(self) -> dict[str, np.ndarray]:
        """The running statistics of the layers whose parameters are all frozen, with their values now
        (restored after every training forward unless ``update_frozen_bn``)."""
        if not self.frozen or self.update_frozen_bn:
            return {}
        params = set(self.net.params)
        out = {}
        for k, v in self.net.buffers.items():
            layer = k.rsplit(".", 1)[0]
            own = [p for p in params if p.rsplit(".", 1)[0] == layer]
            if own and all(p in self.frozen for p in own):
                out[k] = v.copy()
        return out

    def _keep_frozen_buffers(self) -> None:
        if self._frozen_buffers:
            bufs = self.net.buffers
            for k, v in self._frozen_buffers.items():
                bufs[k][...] = v

    def _make_schedule(self, schedule: str | Callable[[int], float], warmup: float, step_size: float | None,
                       gamma: float, min_lr: float) -> Callable[[int], float]:
        if callable(schedule):
            return schedule
        spe = self.steps_per_epoch
        return make_schedule(schedule, self.lr, total=max(1, self.epochs * spe),
                             step_size=None if step_size is None else max(1, int(round(step_size * spe))),
                             gamma=gamma, min_lr=min_lr, warmup_steps=int(round(float(warmup) * spe)))

    @staticmethod
    def _zero_stats() -> dict[str, Any]:
        return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "wall": 0.0, "lr": None}

    # -- forward / backward on the logits ---------------------------------------------------------
    @contextlib.contextmanager
    def _logits_mode(self) -> Any:
        """While active, the net's output is the input of its trailing Softmax (if it has one)."""
        from volnet.net import Graph, Sequential

        net = self.net
        if not self._skip_softmax:
            yield net
        elif isinstance(net, Sequential):
            items = net._items
            net._items = items[:-1]
            try:
                yield net
            finally:
                net._items = items
        elif isinstance(net, Graph):
            out = net.output
            saved = net._output
            net._output = net.inputs_of(out)[0]
            try:
                yield net
            finally:
                net._output = saved
        else:  # pragma: no cover - single layers never end in Softmax
            yield net

    def _scores(self, x: np.ndarray, train: bool) -> np.ndarray:
        with self._logits_mode() as net:
            out = net.forward(x, train)
        return out.reshape(out.shape[0], -1)

    def _prep(self, x: np.ndarray) -> np.ndarray:
        x = self.normalizer.transform(x)
        return x.astype(self.dtype, copy=False)

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, ds: Dataset, batch_size: int | None = None) -> Evaluation:
        """Mean softmax loss, accuracy and predictions on ``ds`` in inference mode (BN running statistics,
        no dropout), normalised with the training normaliser. Nothing in the net changes."""
        from volnet.ops.activations import softmax
        from volnet.ops.losses import softmax_loss

        if ds.shape != self.train_set.shape:
            raise ShapeError(f"evaluate: {ds.name} images are {ds.shape}, the net takes "
                             f"{self.train_set.shape}")
        bs = batch_size or self.eval_batch_size
        n = len(ds)
        loss_sum = 0.0
        probs = []
        for i in range(0, n, bs):
            s = self._scores(self._prep(ds.x[i:i + bs]), train=False)
            loss, _ = softmax_loss(s, ds.y[i:i + bs])
            loss_sum += loss * len(s)
            probs.append(softmax(s))
        self.net.clear_cache()
        p = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)), dtype=self.dtype)
        pred = p.argmax(axis=1).astype(np.int64)
        acc = float(np.mean(pred == ds.y)) if n else 0.0
        return Evaluation(loss_sum / n if n else 0.0, acc, n, ds.y.copy(), pred, p)

    # -- the loop ---------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop :meth:`fit` after the current step (writing ``last/``); ``fit`` returns normally."""
        self._stop = True

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._sigint:  # second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self._sigint = True

    @contextlib.contextmanager
    def _deferred_sigint(self) -> Any:
        """Turn Ctrl-C into a flag checked between steps (so a checkpoint is never mid-update)."""
        try:
            old = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: Ctrl-C cannot reach us here anyway
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)

    def fit(self) -> list[dict[str, Any]]:
        """Train until ``epochs`` are done (from the current position: 0 or a resumed checkpoint).

        Returns the history (one dict per epoch, as in ``metrics.jsonl``). Raises TrainingError on a
        NaN/inf loss and TrainingInterrupted on Ctrl-C (after writing ``last/``).
        """
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._stop = self._sigint = False
        with self._deferred_sigint():
            try:
                while self.epoch < self.epochs and not self._stop:
                    self._run_epoch()
            except KeyboardInterrupt:
                ckpt = self._save_last() if self.out_dir is not None else None
                where = f"epoch {self.epoch + 1}/{self.epochs}, batch {self.batch}/{self.steps_per_epoch}"
                msg = f"interrupted at {where}" + (f"; checkpoint written to {ckpt}" if ckpt else "")
                raise TrainingInterrupted(msg, ckpt, self.epoch, self.batch, self.step) from None
        if self._stop and self.epoch < self.epochs:
            if self.out_dir is not None:
                self._save_last()
            return self.history
        if self.test_set is not None:
            self._final_test()
        return self.history

    def _run_epoch(self) -> None:
        from volnet.ops.losses import softmax_loss

        spe, e = self.steps_per_epoch, self.epoch
        bar = ProgressBar(spe, prefix=f"epoch {e + 1}/{self.epochs} ",
                          enabled=None if self.progress else False)
        st = self._stats
        it = batches(self.train_set.x, self.train_set.y, self.batch_size, shuffle=True, seed=self.seed,
                     epoch=e, start=self.batch, augment=self.augment)
        try:
            t_prev = time.perf_counter()
            for xb, yb in it:
                t0 = time.perf_counter()
                snap = self._snapshot()
                try:
                    lr = float(self.schedule(self.step))
                    self.optimizer.lr = lr
                    self.net.train()
                    with self._logits_mode() as net:
                        out = net.forward(self._prep(xb), True)
                        scores = out.reshape(out.shape[0], -1)
                        loss, dscores = softmax_loss(scores, yb)
                        if not math.isfinite(loss):
                            self._restore(snap)
                            raise self._diverged(loss, lr)
                        self._keep_frozen_buffers()
                        net.backward(dscores.reshape(out.shape), need_dx=False)
                    grads = self.net.grads
                    if self.frozen:
                        grads = {k: g for k, g in grads.items() if k not in self.frozen}
                    if self.clip is not None:
                        from volnet.optim import clip_grad_norm

                        clip_grad_norm(grads, self.clip)
                    self.optimizer.step(grads)
                except KeyboardInterrupt:
                    self._restore(snap)  # BN statistics and dropout draws of the unfinished step
                    raise
                self.batch += 1
                self.step += 1
                n = len(yb)
                st["loss_sum"] += loss * n
                st["correct"] += int(np.sum(scores.argmax(axis=1) == yb))
                st["seen"] += n
                t1 = time.perf_counter()
                st["seconds"] += t1 - t0
                st["wall"] += t1 - t_prev
                t_prev = t1
                st["lr"] = lr
                bar.update(self.batch, loss=st["loss_sum"] / st["seen"],
                           acc=f"{100.0 * st['correct'] / st['seen']:.1f}%",
                           **{"img/s": f"{st['seen'] / max(st['seconds'], 1e-9):.0f}"})
                if self.save_every and self.step % self.save_every == 0 and self.out_dir is not None \
                        and self.batch < spe:
                    self._save_last()
                self._call("step")
                t_prev = time.perf_counter()
                if self._sigint:
                    raise KeyboardInterrupt
                if self._stop:
                    return
            self.net.clear_cache()
            bar.close()
            self._end_epoch()
        finally:
            bar.close()

    def _diverged(self, loss: float, lr: float) -> TrainingError:
        last = self.out_dir / "last" if self.out_dir is not None else None
        keep = ""
        if last is not None and (last / TRAINER_JSON).is_file():
            pos = _read_trainer_json(last).get("position", {})
            keep = (f"; the last good checkpoint {last} (epoch {pos.get('epoch', 0) + 1}, batch "
                    f"{pos.get('batch', 0)}) is kept")
        return TrainingError(
            f"loss is {loss} at epoch {self.epoch + 1}, batch {self.batch + 1}/{self.steps_per_epoch} "
            f"(step {self.step + 1}, lr {lr:.3g}): training diverged{keep}; lower the learning rate (--lr) "
            "or clip gradients (--clip 5)")

    def _snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({k: v.copy() for k, v in self.net.buffers.items()},
                self.net.rng_states() if hasattr(self.net, "rng_states") else {})

    def _restore(self, snap: tuple[dict[str, np.ndarray], dict[str, Any]]) -> None:
        bufs, rngs = snap
        for k, v in self.net.buffers.items():
            v[...] = bufs[k]
        if rngs:
            self.net.set_rng_states(rngs)

    def _call(self, event: str) -> None:
        for cb in self.callbacks:
            cb(self, event)

    def _end_epoch(self) -> None:
        st = self._stats
        t0 = time.perf_counter()
        val = self.evaluate(self.val_set) if self.val_set is not None and len(self.val_set) else None
        rec: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "train_loss": st["loss_sum"] / max(st["seen"], 1),
            "train_acc": st["correct"] / max(st["seen"], 1),
            "val_loss": None if val is None else val.loss,
            "val_acc": None if val is None else val.acc,
            "lr": st["lr"],
            "seconds": round(st["wall"] + time.perf_counter() - t0, 3),
            "images_per_s": round(st["seen"] / max(st["seconds"], 1e-9), 1),
            "step": self.step,
        }
        self.history.append(rec)
        score = rec["val_acc"] if val is not None else rec["train_acc"]
        improved = self.best_acc is None or score > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = score, rec["epoch"]
            self._best_state = {k: v.copy() for k, v in {**self.net.params, **self.net.buffers}.items()}
        self.epoch += 1
        self.batch = 0
        self._stats = self._zero_stats()
        if self.out_dir is not None:
            self._save_last()
            if improved:
                self._save_checkpoint(self.out_dir / "best", optimizer=False)
            self._write_metrics()
        if self.progress:
            v = "" if val is None else f"  val loss {val.loss:.4f} acc {100 * val.acc:.2f}%"
            print(f"epoch {rec['epoch']}/{self.epochs}  train loss {rec['train_loss']:.4f} acc "
                  f"{100 * rec['train_acc']:.2f}%{v}  lr {rec['lr']:.3g}  {rec['seconds']:.1f}s  "
                  f"{rec['images_per_s']:.0f} img/s" + ("  *" if improved and val is not None else ""),
                  file=sys.stderr, flush=True)
        self._call("epoch")

    def _final_test(self) -> None:
        assert self.test_set is not None
        current = None
        if self._best_state is not None:
            arrays = {**self.net.params, **self.net.buffers}
            current = {k: v.copy() for k, v in arrays.items()}
            for k, v in arrays.items():
                v[...] = self._best_state[k]
        try:
            ev = self.evaluate(self.test_set)
        finally:
            if current is not None:
                arrays = {**self.net.params, **self.net.buffers}
                for k, v in arrays.items():
                    v[...] = current[k]
        self.test_result = {"test_loss": ev.loss, "test_acc": ev.acc, "n": ev.n,
                            "best_epoch": self.best_epoch, "best_val_acc": self.best_acc,
                            "epochs": self.epoch,
                            "seconds": round(sum(h["seconds"] for h in self.history), 3)}
        if self.out_dir is not None:
            from volnet.io import atomic_write_text

            atomic_write_text(self.out_dir / RESULTS, json.dumps(self.test_result, indent=1) + "\n")
        if self.progress:
            print(f"test loss {ev.loss:.4f} acc {100 * ev.acc:.2f}% ({ev.n} images, best epoch "
                  f"{self.best_epoch})", file=sys.stderr, flush=True)

    # -- files ------------------------------------------------------------------------------------
    def _write_metrics(self) -> None:
        from volnet.io import atomic_write_text

        assert self.out_dir is not None
        text = "".join(json.dumps(h, allow_nan=False) + "\n" for h in self.history)
        atomic_write_text(self.out_dir / METRICS, text)
        if self.history and not plot_curves(self.history, self.out_dir / CURVES) and not self._warned_plot:
            self._warned_plot = True
            print("note: matplotlib is not installed; curves.png skipped (pip install 'volnet[plots]')",
                  file=sys.stderr)

    def config(self) -> dict[str, Any]:
        """The settings that rebuild this trainer (stored in every checkpoint)."""
        return {"optimizer": self.optimizer_name, "lr": self.lr, "batch_size": self.batch_size,
                "epochs": self.epochs, **self.schedule_cfg, "weight_decay": self.weight_decay,
                "optimizer_kw": self.optimizer_kw, "clip": self.clip, "seed": self.seed,
                "augment": self.augment.config(), "save_every": self.save_every,
                "eval_batch_size": self.eval_batch_size, "frozen": sorted(self.frozen),
                "update_frozen_bn": self.update_frozen_bn}

    def state(self) -> dict[str, Any]:
        """JSON-able trainer state (everything of a checkpoint except the arrays)."""
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "position": {"epoch": self.epoch, "batch": self.batch, "step": self.step,
                         "steps_per_epoch": self.steps_per_epoch, "finished": self.epoch >= self.epochs},
            "epoch_stats": dict(self._stats),
            "config": self.config(),
            "normalizer": self.normalizer.to_dict(),
            "classes": self.classes,
            "input_shape": list(self.train_set.shape),
            "data": {"train": _fingerprint(self.train_set), "val": _fingerprint(self.val_set),
                     "name": self.train_set.name},
            "rng": {"dropout": self.net.rng_states() if hasattr(self.net, "rng_states") else {}},
            "best": {"acc": self.best_acc, "epoch": self.best_epoch},
            "history": self.history,
            "info": self.info,
        }

    def _save_last(self) -> Path:
        assert self.out_dir is not None
        return self._save_checkpoint(self.out_dir / "last", optimizer=True)

    def _save_checkpoint(self, path: Path, optimizer: bool = True) -> Path:
        """Write a checkpoint directory atomically (model files, trainer.json, optimizer.npz)."""
        from volnet.io import npz_bytes, replace_dir, save, write_file

        bad = [k for k, v in self.net.params.items() if not np.all(np.isfinite(v))]
        if bad:
            raise TrainingError(f"parameter {bad[0]!r} holds NaN/inf at epoch {self.epoch + 1}, batch "
                                f"{self.batch}: not overwriting {path}; lower the learning rate (--lr)")
        doc = self.state()
        if optimizer:
            meta, arrays = self.optimizer.state_dict()
            doc["optimizer"] = meta
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            save(self.net, tmp / "ckpt")
            if optimizer:
                write_file(tmp / "ckpt" / OPTIMIZER_NPZ, npz_bytes(arrays))
            write_file(tmp / "ckpt" / TRAINER_JSON,
                        (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("utf-8"))
            replace_dir(tmp / "ckpt", path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    # -- resuming ---------------------------------------------------------------------------------
    @classmethod
    def resume(cls, run: str | os.PathLike[str], train: Dataset, val: Dataset | None = None,
               test: Dataset | None = None, *, epochs: int | None = None,
               out_dir: str | os.PathLike[str] | None = None, **overrides: Any) -> Trainer:
        """A trainer continuing the checkpoint ``run/last`` (or the checkpoint directory ``run``).

        ``train``/``val`` must be the same data as before (checked by size and a label checksum).
        ``epochs`` may extend the run (the schedule then differs from the original run); ``overrides``
        may set ``progress``, ``callbacks``, ``save_every``, ``info``. Everything else comes from the
        checkpoint.
        """
        from volnet.io import load

        p = Path(run)
        ck = p / "last" if (p / "last" / TRAINER_JSON).is_file() else p
        if not (ck / TRAINER_JSON).is_file():
            if not p.exists():
                raise ModelFileError(f"cannot resume: {p} does not exist")
            raise ModelFileError(f"cannot resume: no checkpoint in {p} (expected {p}/last/{TRAINER_JSON})")
        doc = _read_trainer_json(ck)
        if "optimizer" not in doc or not (ck / OPTIMIZER_NPZ).is_file():
            raise ModelFileError(f"cannot resume from {ck}: it has no optimizer state (a best/ copy?); "
                                 f"resume from the run's last/")
        for key, ds in (("train", train), ("val", val)):
            want = doc.get("data", {}).get(key)
            if want != _fingerprint(ds):
                raise TrainingError(f"cannot resume: the {key} data differ from the run's ({want} vs "
                                    f"{_fingerprint(ds)}); use the same --data, --val, --seed, --limit-train")
        net = load(ck)
        cfg = dict(doc["config"])
        allowed = {"progress", "callbacks", "save_every", "info", "eval_batch_size"}
        unknown = set(overrides) - allowed
        if unknown:
            raise VolnetError(f"Trainer.resume: cannot override {sorted(unknown)}; the run's settings are "
                              "fixed (only epochs, progress, callbacks, save_every, info)")
        kw: dict[str, Any] = {
            "optimizer": cfg["optimizer"], "lr": cfg["lr"], "batch_size": cfg["batch_size"],
            "epochs": cfg["epochs"] if epochs is None else epochs, "schedule": cfg["schedule"] or "constant",
            "warmup": cfg["warmup"], "step_size": cfg["step_size"], "gamma": cfg["gamma"],
            "min_lr": cfg["min_lr"], "weight_decay": cfg["weight_decay"], "optimizer_kw": cfg["optimizer_kw"],
            "clip": cfg["clip"], "seed": cfg["seed"], "augment": Augment(**cfg["augment"]),
            "save_every": cfg.get("save_every"), "eval_batch_size": cfg.get("eval_batch_size", 256),
            "normalizer": Normalizer.from_dict(doc["normalizer"]), "info": doc.get("info", {}),
            "frozen": cfg.get("frozen") or None, "update_frozen_bn": bool(cfg.get("update_frozen_bn", False)),
        }
        kw.update(overrides)
        t = cls(net, train, val, test, out_dir=out_dir if out_dir is not None else ck.parent, **kw)
        with np.load(ck / OPTIMIZER_NPZ, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        t.optimizer.load_state_dict(doc["optimizer"], arrays)
        t.optimizer.lr = float(doc["optimizer"]["lr"])
        if doc["rng"]["dropout"]:
            net.set_rng_states(doc["rng"]["dropout"])
        pos = doc["position"]
        if pos["steps_per_epoch"] != t.steps_per_epoch:
            raise TrainingError(f"cannot resume: {pos['steps_per_epoch']} steps per epoch in the run, "
                                f"{t.steps_per_epoch} now; use the same data and batch size")
        t.epoch, t.batch, t.step = int(pos["epoch"]), int(pos["batch"]), int(pos["step"])
        t._stats = dict(doc["epoch_stats"])
        t.history = list(doc["history"])
        t.best_acc, t.best_epoch = doc["best"]["acc"], doc["best"]["epoch"]
        best = ck.parent / "best"
        if t.best_acc is not None and (best / "weights.npz").is_file():
            with np.load(best / "weights.npz", allow_pickle=False) as z:
                t._best_state = {k: z[k] for k in z.files}
        return t

