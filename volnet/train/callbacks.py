"""Keras-style callbacks: everything :meth:`Trainer.fit <volnet.train.Trainer.fit>` does besides the
notes' loop attaches here (checkpoints, ``metrics.jsonl``, the progress bar, the NaN guard, frozen BN
statistics, the best model, the final test).

Hooks, in the order ``fit`` calls them::

    on_train_begin(trainer)
    on_epoch_begin(trainer)                  before the first step of an epoch (also a resumed one)
    on_step_end(trainer, log: StepLog)       after every parameter update: step, epoch, batch, loss, lr,
                                             images, correct, seconds (a live view, an MPI all-reduce of
                                             the statistics, a memory ledger plug in here)
    on_epoch_end(trainer, record: dict)      after the validation pass; ``record`` is the metrics.jsonl line
    on_train_end(trainer, status: str)       "done" (all epochs), "stopped" (request_stop),
                                             "interrupted" (Ctrl-C; TrainingInterrupted follows) or
                                             "failed" (an error propagates: clean up only)

A callback may call ``trainer.request_stop()`` or raise ``KeyboardInterrupt`` (the run then stops with a
checkpoint at that position). The built-in callbacks run first, in the order of :func:`standard`, then
the user's. A plain function ``f(trainer, event)`` is accepted too (:class:`FunctionCallback`: event
``"step"`` after every step, ``"epoch"`` after every epoch).

>>> class Losses(Callback):
...     def __init__(self) -> None:
...         self.seen: list[float] = []
...     def on_step_end(self, trainer, log):
...         self.seen.append(log.loss)
>>> [h for h in HOOKS]
['on_train_begin', 'on_epoch_begin', 'on_step_end', 'on_epoch_end', 'on_train_end']
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from volnet.errors import TrainingError, VolnetError
from volnet.train.checkpoint import (
    CURVES,
    METRICS,
    RESULTS,
    STEPS,
    append_jsonl,
    clean_stale,
    read_steps,
    read_trainer_json,
    replace_run,
    run_kind,
    write_json,
    write_jsonl,
    write_marker,
)
from volnet.train.plots import curves_title, plot_curves

if TYPE_CHECKING:
    from volnet.train.loop import Trainer

HOOKS = ("on_train_begin", "on_epoch_begin", "on_step_end", "on_epoch_end", "on_train_end")


@dataclass(frozen=True)
class StepLog:
    """What one training step did: ``step`` (steps done, this one included), ``epoch`` (0-based),
    ``batch`` (batches done in the epoch), the mini-batch ``loss`` (mean softmax loss), the learning rate
    ``lr`` it used, ``images`` in the batch, ``correct`` predictions, ``seconds`` of computation."""

    step: int
    epoch: int
    batch: int
    loss: float
    lr: float
    images: int
    correct: int
    seconds: float


class Callback:
    """Base class: override the hooks you need (each does nothing here)."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Before the first step of :meth:`Trainer.fit` (after a resume: at the resumed position)."""

    def on_epoch_begin(self, trainer: Trainer) -> None:
        """Before the first step of epoch ``trainer.epoch`` (from batch ``trainer.batch``)."""

    def on_step_end(self, trainer: Trainer, log: StepLog) -> None:
        """After a parameter update (``trainer.step``, ``.batch`` already count it)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After an epoch and its validation pass; ``trainer.epoch`` already counts it."""

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        """End of ``fit``: ``status`` is ``"done"``, ``"stopped"``, ``"interrupted"`` or ``"failed"``."""


class FunctionCallback(Callback):
    """A function ``f(trainer, event)`` as a callback (events ``"step"`` and ``"epoch"``)."""

    def __init__(self, fn: Callable[[Trainer, str], None]) -> None:
        self.fn = fn

    def on_step_end(self, trainer: Trainer, log: StepLog) -> None:
        self.fn(trainer, "step")

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.fn(trainer, "epoch")


def as_callback(cb: Callback | Callable[[Trainer, str], None]) -> Callback:
    """``cb`` itself, or a plain function wrapped in :class:`FunctionCallback`."""
    return cb if isinstance(cb, Callback) else FunctionCallback(cb)


class CallbackList(Callback):
    """Calls every hook on each callback in order."""

    def __init__(self, callbacks: Iterable[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_train_begin(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(trainer)

    def on_epoch_begin(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(trainer)

    def on_step_end(self, trainer: Trainer, log: StepLog) -> None:
        for cb in self.callbacks:
            cb.on_step_end(trainer, log)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(trainer, record)

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        for cb in self.callbacks:
            cb.on_train_end(trainer, status)


# ------------------------------------------------------------------------------------------ built-ins

class RunMarker(Callback):
    """Claims ``trainer.out_dir`` for the run: refuses a folder that is neither empty nor a volnet run
    (volnet never replaces files it did not write) and writes the run marker listing what it owns."""

    def on_train_begin(self, trainer: Trainer) -> None:
        out = trainer.out_dir
        if out is None:
            return
        if run_kind(out) == "foreign":
            raise VolnetError(f"out_dir {out} is not empty and not a volnet run; volnet never replaces files "
                              "it did not write: choose a new or empty folder")
        out.mkdir(parents=True, exist_ok=True)
        clean_stale(out)  # half-written temporaries of a run killed while writing (kill -9, power cut)
        write_marker(out)


class ReplaceRun(Callback):
    """Replace the run in ``out`` only once the new one has its first checkpoint: the trainer writes into
    a staging folder (its ``out_dir``, inside ``out``) until ``last/`` exists there; then the old run's own
    files are swapped for the new ones (:func:`~volnet.train.checkpoint.replace_run`) and ``out_dir``
    becomes ``out``. A run that fails before leaves the old one as it was (the staging folder removed)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.done = False

    def _swap_if_ready(self, trainer: Trainer, force: bool = False) -> None:
        stage = trainer.out_dir
        if self.done or stage is None or not (force or (stage / "last").is_dir()):
            return
        replace_run(stage, self.out)
        trainer.out_dir = self.out
        self.done = True

    def on_step_end(self, trainer: Trainer, log: StepLog) -> None:
        self._swap_if_ready(trainer)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._swap_if_ready(trainer)

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        if status == "failed":
            if not self.done and trainer.out_dir is not None:
                import shutil

                shutil.rmtree(trainer.out_dir, ignore_errors=True)
                trainer.out_dir = self.out
            return
        self._swap_if_ready(trainer, force=status == "done")


class FrozenBN(Callback):
    """BN layers whose ``w``/``b`` are frozen keep their running statistics: the values at the start are
    put back after every step (the training forward still normalises with the batch statistics, as
    PyTorch in train mode does). Off with ``update_frozen_bn=True`` (PyTorch's default)."""

    def __init__(self) -> None:
        self.kept: dict[str, np.ndarray] = {}

    def on_train_begin(self, trainer: Trainer) -> None:
        frozen = set(trainer.config.frozen)
        self.kept = {}
        if not frozen or trainer.config.update_frozen_bn:
            return
        params = set(trainer.net.params)
        for k, v in trainer.net.buffers.items():
            layer = k.rsplit(".", 1)[0]
            own = [p for p in params if p.rsplit(".", 1)[0] == layer]
            if own and all(p in frozen for p in own):
                self.kept[k] = v.copy()

    def on_step_end(self, trainer: Trainer, log: StepLog) -> None:
        if self.kept:
            bufs = trainer.net.buffers
            for k, v in self.kept.items():
                bufs[k][...] = v


class NaNGuard(Callback):
    """Stop with a one-line TrainingError when the loss is NaN/inf (the last good checkpoint is kept:
    this runs before :class:`ModelCheckpoint`)."""

    def on_step_end(self, trainer: Trainer, log: StepLog) -> None:
        if math.isfinite(log.loss):
            return
        keep = ""
        last = trainer.out_dir / "last" if trainer.out_dir is not None else None
        if last is not None and (last / "trainer.json").is_file():
            pos = read_trainer_json(last).get("position", {})
            keep = (f"; the last good checkpoint {last} (epoch {pos.get('epoch', 0) + 1}, batch "
                    f"{pos.get('batch', 0)}) is kept")
        raise TrainingError(
            f"loss is {log.loss} at epoch {log.epoch + 1}, batch {log.batch}/{trainer.steps_per_epoch} "
            f"(step {log.step}, lr {log.lr:.3g}): training diverged{keep}; lower the learning rate (--lr) "
            "or clip gradients (--clip 5)")


class BestModel(Callback):
    """Keeps the weights of the best epoch (validation accuracy; the training accuracy without a
    validation set): ``acc``, ``epoch`` (1-based), ``weights`` (params + buffers), ``improved`` (by the
    last epoch)."""

    def __init__(self) -> None:
        self.acc: float | None = None
        self.epoch: int | None = None
        self.weights: dict[str, np.ndarray] | None = None
        self.improved = False

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        score = record["val_acc"] if record["val_acc"] is not None else record["train_acc"]
        self.improved = self.acc is None or score > self.acc
        if self.improved:
            self.acc, self.epoch = score, record["epoch"]
            self.weights = {k: v.copy() for k, v in {**trainer.net.params, **trainer.net.buffers}.items()}

    def swapped_in(self, trainer: Trainer) -> _Swap:
        """``with best.swapped_in(trainer):`` the net holds the best weights (the current ones after)."""
        return _Swap(trainer.net, self.weights)


class _Swap:
    def __init__(self, net: Any, weights: dict[str, np.ndarray] | None) -> None:
        self.net, self.weights, self.saved = net, weights, None

    def __enter__(self) -> None:
        if self.weights is not None:
            arrays = {**self.net.params, **self.net.buffers}
            self.saved = {k: v.copy() for k, v in arrays.items()}
            for k, v in arrays.items():
                v[...] = self.weights[k]

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            for k, v in {**self.net.params, **self.net.buffers}.items():
                v[...] = self.saved[k]


class ModelCheckpoint(Callback):
    """Writes ``last/`` after every epoch, every ``save_every`` steps and when the run stops or is
    interrupted; ``best/`` when the epoch improved on the best (needs ``trainer.out_dir``)."""

    def on_step_end(self, trainer: Trainer, log: StepLog) -> None:
        every = trainer.config.save_every
        if every and trainer.out_dir is not None and log.step % every == 0 and log.batch < \
                trainer.steps_per_epoch:
            trainer.save_checkpoint("last")

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.out_dir is not None:
            trainer.save_checkpoint("last")
            if trainer.best.improved:
                trainer.save_checkpoint("best")

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        if status in ("stopped", "interrupted") and trainer.out_dir is not None:
            trainer.save_checkpoint("last")


class StepsLog(Callback):
    """Records the training loss per step in ``steps.jsonl``: one line every ``every`` steps (default:
    about 100 lines per epoch) with the mean mini-batch loss and accuracy of those steps, the learning
    rate, the epoch as a fraction (``epoch + batch / steps_per_epoch``) and the seconds so far. The file is
    written whole (atomically) the first time and whenever the run moves (a staging folder swapped in,
    a resumed run that keeps the lines up to its step), and appended to otherwise: a record costs one
    line, not the file again (a 30-epoch run rewrote 0.67 GB). ``records`` is what the curves, the report
    and the live view plot."""

    def __init__(self, every: int | None = None) -> None:
        self.every = every
        self.records: list[dict[str, Any]] = []
        self._path: Path | None = None  # the file holding records[:_written]
        self._written = 0
        self._loss = self._correct = self._images = self._seconds = 0.0
        self._n = 0

    def on_train_begin(self, trainer: Trainer) -> None:
        if trainer.out_dir is not None:
            self.records = [r for r in read_steps(Path(trainer.out_dir) / STEPS)
                            if isinstance(r.get("step"), int) and r["step"] <= trainer.step]
        self._seconds = float(self.records[-1].get("seconds", 0.0)) if self.records else 0.0

    def on_step_end(self, trainer: Trainer, log: StepLog) -> None:
        every = self.every or max(1, trainer.steps_per_epoch // 100)
        self._loss += log.loss
        self._correct += log.correct
        self._images += log.images
        self._seconds += log.seconds
        self._n += 1
        if log.step % every and log.batch < trainer.steps_per_epoch:
            return
        frac = log.epoch + log.batch / trainer.steps_per_epoch
        self.records.append({"step": log.step, "epoch": round(frac, 4), "loss": _finite(self._loss / self._n),
                             "acc": self._correct / max(1.0, self._images), "lr": log.lr,
                             "seconds": round(self._seconds, 3)})
        self._loss = self._correct = self._images = 0.0
        self._n = 0
        if trainer.out_dir is not None:
            self._save(Path(trainer.out_dir) / STEPS)

    def _save(self, path: Path) -> None:
        if path == self._path and path.is_file():
            append_jsonl(path, self.records[self._written:])
        else:
            write_jsonl(path, self.records)
            self._path = path
        self._written = len(self.records)


class MetricsLog(Callback):
    """Rewrites ``metrics.jsonl`` (one line per epoch) and ``curves.png`` (with the per-step loss of
    ``steps`` behind the epoch points) after every epoch."""

    def __init__(self, steps: StepsLog | None = None) -> None:
        self.warned = False
        self.steps = steps

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.out_dir is None:
            return
        write_jsonl(Path(trainer.out_dir) / METRICS, trainer.history)
        self._draw(trainer, None)

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        """After the final test (which runs before this callback): the title gives the test accuracy."""
        res = getattr(trainer, "test_result", None)
        if trainer.out_dir is not None and isinstance(res, dict) and trainer.history:
            self._draw(trainer, res["test_acc"])

    def _draw(self, trainer: Trainer, test_acc: float | None) -> None:
        out = Path(trainer.out_dir)
        steps = self.steps.records if self.steps is not None else None
        title = curves_title(trainer.info, trainer.history, test_acc)
        if not plot_curves(trainer.history, out / CURVES, steps=steps, title=title) and not self.warned:
            self.warned = True
            print("note: matplotlib is not installed; curves.png skipped (pip install 'volnet[plots]')",
                  file=sys.stderr)


class Progress(Callback):
    """Progress on stderr (:func:`volnet.progress.progress`): during an epoch a tqdm bar with elapsed time
    and ETA fitted to the terminal (a line every ``interval`` seconds or ``every`` steps when stderr is a
    log or a pipe, a widget bar in Jupyter), the validation and test passes likewise (see
    :meth:`Trainer.evaluate`), then one line per epoch; the first new best validation accuracy says
    what its ``*`` means. ``mode``: ``auto``, ``bar``, ``lines``, ``notebook``."""

    def __init__(self, stream: TextIO | None = None, mode: str = "auto", interval: float = 30.0,
                 every: int | None = None) -> None:
        self.stream, self.mode, self.interval, self.every = stream, mode, interval, every
        self.bar: Any = None
        self.explained = False

    def on_epoch_begin(self, trainer: Trainer) -> None:
        from volnet.progress import progress

        self.bar = progress(trainer.steps_per_epoch, f"epoch {trainer.epoch + 1}/{trainer.epochs}",
                            stream=self.stream, mode=self.mode, interval=self.interval, every=self.every)

    def on_step_end(self, trainer: Trainer, log: StepLog) -> None:
        st = trainer.epoch_stats
        if self.bar is not None:
            self.bar.update(log.batch, loss=st["loss_sum"] / st["seen"],
                            acc=f"{100.0 * st['correct'] / st['seen']:.1f}%",
                            **{"img/s": f"{st['seen'] / max(st['seconds'], 1e-9):.0f}"})

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._close()
        r = record
        v = "" if r["val_loss"] is None else f"  val loss {r['val_loss']:.4f} acc {100 * r['val_acc']:.2f}%"
        star = ""
        if trainer.best.improved and r["val_loss"] is not None:
            saved = " (saved as best/)" if trainer.out_dir is not None else ""
            star = "  *" if self.explained else f"  * = best val acc so far{saved}"
            self.explained = True
        self._print(f"epoch {r['epoch']}/{trainer.epochs}  train loss {r['train_loss']:.4f} acc "
                    f"{100 * r['train_acc']:.2f}%{v}  lr {r['lr']:.3g}  {r['seconds']:.1f}s  "
                    f"{r['images_per_s']:.0f} img/s{star}")

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        self._close()
        res = trainer.test_result
        if status == "done" and res is not None:
            self._print(f"test loss {res['test_loss']:.4f} acc {100 * res['test_acc']:.2f}% ({res['n']} "
                        f"images, best epoch {res['best_epoch']})")

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _print(self, line: str) -> None:
        print(line, file=self.stream if self.stream is not None else sys.stderr, flush=True)


class FinalTest(Callback):
    """After the last epoch: the test set with the best weights (``trainer.test_result``,
    ``results.json``)."""

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        if status != "done" or trainer.test_set is None:
            return
        with trainer.best.swapped_in(trainer):
            ev = trainer.evaluate(trainer.test_set, progress="auto" if trainer.progress else "off",
                                  desc="test")
        trainer.test_result = {"test_loss": ev.loss, "test_acc": ev.acc, "n": ev.n,
                               "best_epoch": trainer.best.epoch, "best_val_acc": trainer.best.acc,
                               "epochs": trainer.epoch,
                               "seconds": round(sum(h["seconds"] for h in trainer.history), 3)}
        if trainer.out_dir is not None:
            write_json(Path(trainer.out_dir) / RESULTS, trainer.test_result)


def standard(best: BestModel, progress: bool) -> list[Callback]:
    """The built-in callbacks in the order they run: the run marker, frozen BN statistics back, the NaN
    guard, the best model (``best``), the per-step log (before the checkpoints: a Ctrl-C between them
    must not checkpoint a step the log has not recorded), checkpoints, the final test, the metrics and
    curves (after the final test: its accuracy in the curves' title), then the progress output (when
    ``progress``)."""
    steps = StepsLog()
    cbs: list[Callback] = [RunMarker(), FrozenBN(), NaNGuard(), best, steps, ModelCheckpoint(), FinalTest(),
                           MetricsLog(steps)]
    return cbs + ([Progress()] if progress else [])


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
