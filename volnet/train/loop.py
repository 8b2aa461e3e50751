"""``Trainer``: the notes' training loop; everything else attaches as a callback.

One step (:meth:`Trainer.train_step`): the learning rate of the schedule at this step, forward of a
normalised, augmented mini-batch to the class scores, the softmax loss and its gradient, backward, the
gradient norm clipped, one parameter update. One epoch: the steps over a fresh shuffle of the training
set (batch ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``), then the validation pass.
Checkpoints, ``metrics.jsonl``, the progress bar, the NaN guard, frozen BN statistics, the best model and
the final test are :mod:`volnet.train.callbacks`.

Resuming (:meth:`Trainer.resume`) continues bit-identically: the checkpoint restores weights, BN running
statistics, optimizer state, dropout generators and the partial-epoch statistics, and the learning rate
is a pure function of the step. Ctrl-C is deferred to the end of the current step; ``fit`` then writes
``last/`` and raises :class:`~volnet.errors.TrainingInterrupted` (a second Ctrl-C interrupts at once).

Fine-tuning (``frozen=names``, e.g. ``volnet.zoo.freeze(net, "until:layer3")``): the optimizer holds the
other parameters only and steps with their gradients only, so frozen parameters stay bit-identical; BN
layers whose parameters are frozen keep their running statistics (``update_frozen_bn=True``: they
update, as PyTorch's default).

Example::

    from volnet.data import load_dataset, split_validation
    from volnet.train import Trainer, TrainConfig, default_model

    train, test = load_dataset("fashion-mnist")
    train, val = split_validation(train, 5000, seed=0)
    net = default_model(train.shape, train.num_classes)
    history = Trainer(net, train, val, test, TrainConfig(epochs=4), out_dir="runs/fmnist").fit()

See: cs231n ``solver.py`` (``Solver.train``), Keras ``Model.fit`` with callbacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from volnet.data import Dataset, Normalizer, batches, num_batches
from volnet.errors import ShapeError, TrainingError, TrainingInterrupted, VolnetError
from volnet.optim import Optimizer, clip_grad_norm, make_optimizer, make_schedule
from volnet.spec import format_shape
from volnet.train.callbacks import BestModel, Callback, CallbackList, StepLog, as_callback, standard
from volnet.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    fingerprint,
    read_checkpoint,
    write_checkpoint,
)
from volnet.train.config import TrainConfig
from volnet.train.distributed import Distributed, WatchdogCallback, watchdog_timeout
from volnet.train.evaluate import Evaluation, evaluate, prepare

AnyCallback = Callback | Callable[["Trainer", str], None]


class Trainer:
    """Mini-batch training of a volnet net on a :class:`volnet.data.Dataset`.

    Args:
        net: a ``Sequential``/``Graph`` (built or not: it is built for ``train.shape``) ending in class
            scores; a trailing ``Softmax`` is skipped during training (the loss is taken on its input).
        train, val, test: Datasets; ``val`` picks ``best/`` (None: the training accuracy does), ``test`` is
            evaluated with the best weights at the end (``results.json``).
        config: the :class:`~volnet.train.TrainConfig` (default ``TrainConfig()``); ``settings`` are its
            fields as keywords (``Trainer(net, train, epochs=3, lr=1e-3)``) and override it.
        normalizer: a fitted :class:`~volnet.data.Normalizer` (default: fitted on ``train.x``).
        out_dir: run directory for checkpoints, ``metrics.jsonl``, ``curves.png`` (None: nothing written).
        progress: the progress bar (on a terminal) and one line per epoch on stderr.
        callbacks: :class:`~volnet.train.callbacks.Callback` s (or functions ``f(trainer, event)``), run
            after the built-in ones.
        info: extra JSON-able data stored in the checkpoints (the CLI stores its arguments).

    ``trainer.config`` is the resolved config (the optimizer's default ``lr``, the dataset's ``augment``).
    """

    def __init__(self, net: Any, train: Dataset, val: Dataset | None = None, test: Dataset | None = None,
                 config: TrainConfig | None = None, *, normalizer: Normalizer | None = None,
                 out_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                 callbacks: Iterable[AnyCallback] = (), info: dict[str, Any] | None = None,
                 dist: Distributed | None = None, **settings: Any) -> None:
        frozen = settings.get("frozen")
        if isinstance(frozen, str):
            raise VolnetError(f"Trainer: frozen must be a set of parameter names, got the string {frozen!r}; "
                              "use volnet.zoo.freeze(net, 'until:layer3')")
        if "frozen" in settings:
            settings["frozen"] = sorted(str(k) for k in frozen or ())
        if settings.get("optimizer_kw", {}) is None:
            settings["optimizer_kw"] = {}
        cfg = (config or TrainConfig()).replace(**settings)
        if len(train) == 0:
            raise VolnetError("Trainer: the training set is empty")
        for ds in (val, test):
            if ds is not None and ds.shape != train.shape:
                raise ShapeError(f"Trainer: {ds.name} images are {ds.shape} but training images are "
                                 f"{train.shape}")
        self.net, self.train_set, self.val_set, self.test_set = net, train, val, test
        self.classes = list(train.classes)
        self._build_net()
        #: data-parallel training over MPI (:mod:`volnet.train.distributed`): None for one process
        self.dist = dist
        if dist is not None:  # every rank starts from rank 0's weights
            dist.broadcast({**net.params, **net.buffers})
            if dist.sync_bn:  # BN statistics of the global batch (--sync-bn)
                for _, layer in (net.named_layers() if hasattr(net, "named_layers") else [("", net)]):
                    if hasattr(layer, "sync"):
                        layer.sync = dist
        self._check_frozen(cfg.frozen)
        #: the parameters the optimizer updates (all of ``net.params`` but ``config.frozen``)
        self.trainable: dict[str, np.ndarray] = {k: v for k, v in net.params.items() if k not in cfg.frozen}
        self.optimizer: Optimizer = make_optimizer(cfg.optimizer, self.trainable, cfg.lr,
                                                   weight_decay=cfg.weight_decay, **cfg.optimizer_kw)
        augment = train.augment if cfg.augment is None else cfg.augment
        self.config = dataclasses.replace(cfg, lr=self.optimizer.lr, augment=augment)
        self.steps_per_epoch = num_batches(len(train), cfg.batch_size)
        spe = self.steps_per_epoch
        self.schedule = make_schedule(
            cfg.schedule, self.optimizer.lr, total=max(1, cfg.epochs * spe),
            step_size=None if cfg.step_size is None else max(1, int(round(cfg.step_size * spe))),
            gamma=cfg.gamma, min_lr=cfg.min_lr, warmup_steps=int(round(cfg.warmup * spe)))
        self.normalizer = normalizer if normalizer is not None else Normalizer().fit(train.x)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress, self.callbacks = bool(progress), list(callbacks)
        self.info = dict(info or {})
        self.epoch = 0  # 0-based epoch in progress
        self.batch = 0  # batches done in it
        self.step = 0  # steps done in all
        self.history: list[dict[str, Any]] = []
        self.epoch_stats = _zero_stats()
        self.best = BestModel()
        self.test_result: dict[str, Any] | None = None
        self._stop = self._sigint = False
        self._t_prev = 0.0

    # -- settings, read-only views of ``config`` ---------------------------------------------------
    epochs = property(lambda self: self.config.epochs)
    batch_size = property(lambda self: self.config.batch_size)
    lr = property(lambda self: self.config.lr)
    optimizer_name = property(lambda self: self.config.optimizer)
    augment = property(lambda self: self.config.augment)
    frozen = property(lambda self: set(self.config.frozen))
    best_acc = property(lambda self: self.best.acc)
    best_epoch = property(lambda self: self.best.epoch)

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train until ``epochs`` are done (from the current position: 0 or a resumed checkpoint).

        Returns the history (one dict per epoch, as in ``metrics.jsonl``). Raises TrainingError on a
        NaN/inf loss and TrainingInterrupted on Ctrl-C (after writing ``last/``).
        """
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        extra = [WatchdogCallback(self.dist, watchdog_timeout())] if self.dist is not None else []
        cbs = CallbackList([*standard(self.best, self.progress), *extra, *map(as_callback, self.callbacks)])
        self._stop = self._sigint = False
        with self._deferred_sigint():
            try:
                cbs.on_train_begin(self)
                while self.epoch < self.epochs and not self._stop:
                    cbs.on_epoch_begin(self)
                    self._t_prev = time.perf_counter()
                    for xb, yb in self.epoch_batches():
                        cbs.on_step_end(self, self.train_step(xb, yb))
                        self._t_prev = time.perf_counter()
                        if self._sigint:
                            raise KeyboardInterrupt
                        if self._stop:
                            break
                    else:
                        cbs.on_epoch_end(self, self.end_epoch())
            except KeyboardInterrupt:
                cbs.on_train_end(self, "interrupted")  # writes last/
                ckpt = self.out_dir / "last" if self.out_dir is not None else None
                where = f"epoch {self.epoch + 1}/{self.epochs}, batch {self.batch}/{self.steps_per_epoch}"
                msg = f"interrupted at {where}" + (f"; checkpoint written to {ckpt}" if ckpt else "")
                raise TrainingInterrupted(msg, ckpt, self.epoch, self.batch, self.step) from None
            except BaseException:
                cbs.on_train_end(self, "failed")
                raise
        cbs.on_train_end(self, "stopped" if self.epoch < self.epochs else "done")
        return self.history

    def epoch_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The mini-batches of the epoch in progress, from batch ``self.batch`` (shuffled, augmented)."""
        c = self.config
        return batches(self.train_set.x, self.train_set.y, c.batch_size, shuffle=True, seed=c.seed,
                       epoch=self.epoch, start=self.batch, augment=c.augment)

    def train_step(self, xb: np.ndarray, yb: np.ndarray) -> StepLog:
        """One parameter update on the mini-batch ``xb`` (B, C, H, W) raw images, ``yb`` (B,) labels.

        A NaN/inf loss updates nothing (the NaN guard then stops the run); a KeyboardInterrupt inside the
        step undoes its BN statistics and dropout draws, so a checkpoint never holds half a step.
        """
        from volnet.ops.losses import softmax_loss

        t0 = time.perf_counter()
        snap = self._snapshot()
        try:
            lr = float(self.schedule(self.step))
            self.optimizer.lr = lr
            self.net.train()
            n_all = len(yb)
            if self.dist is not None:  # this rank's shard of the global batch
                part = self.dist.shard(n_all)
                xb, yb = xb[part], yb[part]
                self.dist.weight = len(yb) / n_all
            out = self.scores_net.forward(prepare(xb, self.normalizer, self.dtype), True)
            scores = out.reshape(out.shape[0], -1)
            loss, dscores = softmax_loss(scores, yb, self.config.label_smoothing)
            correct = int(np.sum(scores.argmax(axis=1) == yb))
            if self.dist is not None:  # the global batch's mean loss and accuracy, on every rank
                total = self.dist.sum([loss * len(yb), correct])
                loss, correct = float(total[0] / n_all), int(round(total[1]))
            if math.isfinite(loss):
                self.scores_net.backward(dscores.reshape(out.shape), need_dx=False)
                grads = {k: g for k, g in self.net.grads.items() if k in self.trainable}
                if self.dist is not None:  # d(global mean)/dw = sum over ranks of n_rank/B d(shard mean)/dw
                    self.dist.allreduce_grads(grads, len(yb) / n_all)
                if self.config.clip is not None:
                    clip_grad_norm(grads, self.config.clip)
                self.optimizer.step(grads)
            else:
                self._restore(snap)
            self.scores_net.clear_cache()  # spent: the next step's forward does not hold the old caches
        except KeyboardInterrupt:
            self._restore(snap)
            raise
        return self._count_step(n_all, loss, correct, lr, t0)

    def end_epoch(self) -> dict[str, Any]:
        """Close the epoch in progress: the validation pass and its ``metrics.jsonl`` record."""
        self.net.clear_cache()
        st, t0 = self.epoch_stats, time.perf_counter()
        val = None
        if self.val_set is not None and len(self.val_set):
            val = self.evaluate(self.val_set, progress="auto" if self.progress else "off",
                                desc=f"epoch {self.epoch + 1}/{self.epochs} validation")
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
        self.epoch, self.batch, self.epoch_stats = self.epoch + 1, 0, _zero_stats()
        return rec

    def request_stop(self) -> None:
        """Stop :meth:`fit` after the current step (writing ``last/``); ``fit`` returns normally."""
        self._stop = True

    def evaluate(self, ds: Dataset, batch_size: int | None = None, progress: str = "off",
                 desc: str = "evaluate") -> Evaluation:
        """Mean softmax loss, accuracy and predictions on ``ds`` in inference mode, normalised with the
        training normaliser (:func:`volnet.train.evaluate.evaluate`). Nothing in the net changes.
        ``progress``: a :func:`volnet.progress.progress` mode for the pass (``fit`` uses ``"auto"`` for
        validation and test when ``progress=True``)."""
        if ds.shape != self.train_set.shape:
            raise ShapeError(f"evaluate: {ds.name} images are {ds.shape}, the net takes "
                             f"{self.train_set.shape}")
        bs = batch_size or self.config.eval_batch_size
        if self.dist is None:
            return evaluate(self.net, ds.x, ds.y, self.normalizer, bs, progress=progress, desc=desc)
        d = self.dist  # each rank evaluates its shard of ds; sums and rows are gathered on every rank
        if not d.sync_bn:  # BN running statistics of rank 0 for every rank (as PyTorch DDP broadcasts)
            d.broadcast(self.net.buffers)
        part = d.shard(len(ds))
        ev = evaluate(self.net, ds.x[part], ds.y[part], self.normalizer, bs, progress=progress, desc=desc)
        loss_sum, n = d.sum([ev.loss * ev.n, ev.n])
        y_true, y_pred, probs = (d.gather_rows(a) for a in (ev.y_true, ev.y_pred, ev.probs))
        return Evaluation(float(loss_sum / n), float(np.mean(y_true == y_pred)), int(n), y_true, y_pred,
                          probs)

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-able trainer state (everything of a checkpoint except the arrays)."""
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "position": {"epoch": self.epoch, "batch": self.batch, "step": self.step,
                         "steps_per_epoch": self.steps_per_epoch, "finished": self.epoch >= self.epochs},
            "epoch_stats": dict(self.epoch_stats),
            "config": self.config.to_dict(),
            "normalizer": self.normalizer.to_dict(),
            "classes": self.classes,
            "input_shape": list(self.train_set.shape),
            "data": {"train": fingerprint(self.train_set), "val": fingerprint(self.val_set),
                     "name": self.train_set.name},
            "rng": {"dropout": self.net.rng_states() if hasattr(self.net, "rng_states") else {}},
            "best": {"acc": self.best.acc, "epoch": self.best.epoch},
            "history": self.history,
            "info": self.info,
        }

    def save_checkpoint(self, which: str = "last") -> Path:
        """Write ``out_dir/last`` (with the optimizer state) or ``out_dir/best`` atomically."""
        if self.out_dir is None:
            raise VolnetError("Trainer.save_checkpoint: the trainer has no out_dir")
        opt = self.optimizer.state_dict() if which == "last" else None
        return write_checkpoint(self.out_dir / which, self.net, self.state(), opt)

    @classmethod
    def resume(cls, run: str | os.PathLike[str] | Checkpoint, train: Dataset, val: Dataset | None = None,
               test: Dataset | None = None, *, epochs: int | None = None,
               out_dir: str | os.PathLike[str] | None = None, progress: bool = True,
               callbacks: Iterable[AnyCallback] = (), info: dict[str, Any] | None = None,
               save_every: int | None = None, eval_batch_size: int | None = None,
               dist: Distributed | None = None) -> Trainer:
        """A trainer continuing the checkpoint ``run/last`` (or the checkpoint directory ``run``, or a
        :class:`~volnet.train.checkpoint.Checkpoint` already read with ``read_checkpoint``).

        The whole checkpoint is read and checked first (nothing is written before :meth:`fit`).
        ``train``/``val`` must be the same data as before (checked by size and a label checksum).
        ``epochs`` may extend the run (the schedule then differs from the original run); ``save_every``
        and ``eval_batch_size`` may change; everything else comes from the checkpoint.
        """
        ck = run if isinstance(run, Checkpoint) else read_checkpoint(run)
        doc = ck.doc
        for key, ds in (("train", train), ("val", val)):
            want = doc["data"].get(key)
            if want != fingerprint(ds):
                raise TrainingError(f"cannot resume: the {key} data differ from the run's ({want} vs "
                                    f"{fingerprint(ds)}); use the same --data, --val, --seed, --limit-train")
        changes = {k: v for k, v in (("epochs", epochs), ("save_every", save_every),
                                     ("eval_batch_size", eval_batch_size)) if v is not None}
        t = cls(ck.net, train, val, test, ck.config.replace(**changes),
                normalizer=Normalizer.from_dict(doc["normalizer"]),
                out_dir=out_dir if out_dir is not None else ck.path.parent, progress=progress,
                callbacks=callbacks, info=doc.get("info", {}) if info is None else info, dist=dist)
        pos = doc["position"]
        if pos["steps_per_epoch"] != t.steps_per_epoch or pos["batch"] >= t.steps_per_epoch or \
                pos["step"] != pos["epoch"] * t.steps_per_epoch + pos["batch"]:
            raise TrainingError(f"cannot resume: the checkpoint's position {pos} does not fit "
                                f"{t.steps_per_epoch} steps per epoch; use the same data and batch size")
        t.optimizer.load_state_dict(doc["optimizer"], ck.optimizer_arrays)
        t.optimizer.lr = float(doc["optimizer"]["lr"])
        if doc["rng"].get("dropout"):
            ck.net.set_rng_states(doc["rng"]["dropout"])
        t.epoch, t.batch, t.step = pos["epoch"], pos["batch"], pos["step"]
        t.epoch_stats = dict(doc["epoch_stats"])
        t.history = list(doc["history"])
        t.best.acc, t.best.epoch, t.best.weights = doc["best"]["acc"], doc["best"]["epoch"], ck.best
        return t

    # -- setup and helpers ------------------------------------------------------------------------
    def _build_net(self) -> None:
        from volnet.net import Container

        shape, net = self.train_set.shape, self.net
        if getattr(net, "input_shape", None) is not None and tuple(net.input_shape) != shape:
            raise ShapeError(f"the net takes {format_shape(net.input_shape)} inputs but "
                             f"{self.train_set.name} images are {format_shape(shape)}; build it for "
                             f"INPUT {format_shape(shape)}")
        net.build(shape)  # containers and layers alike (idempotent)
        out = tuple(net.output_shape(shape))
        k = int(np.prod(out))
        if k != len(self.classes):
            raise ShapeError(f"the net outputs {k} scores per image ({out}) but {self.train_set.name} has "
                             f"{len(self.classes)} classes; end the net with FC-{len(self.classes)}")
        self.dtype = np.dtype(getattr(net, "dtype", np.float32))
        #: the net up to its class scores (without a trailing Softmax), sharing the layers
        self.scores_net = net.without_softmax() if isinstance(net, Container) else net

    def _check_frozen(self, names: list[str]) -> None:
        params = self.net.params
        unknown = sorted(set(names) - set(params))
        if unknown:
            raise VolnetError(f"Trainer: frozen names {unknown[:3]} are not parameters of the net (e.g. "
                              f"{', '.join(list(params)[:3])}); use volnet.zoo.freeze(net, 'until:NAME')")
        if params and set(names) >= set(params):
            raise VolnetError(f"Trainer: all {len(params)} parameters are frozen: nothing to train; freeze "
                              "up to a block before the head (e.g. until:layer3)")

    def _count_step(self, n: int, loss: float, correct: int, lr: float, t0: float) -> StepLog:
        self.batch += 1
        self.step += 1
        st = self.epoch_stats
        st["loss_sum"] += loss * n
        st["correct"] += correct
        st["seen"] += n
        t1 = time.perf_counter()
        st["seconds"] += t1 - t0
        st["wall"] += t1 - self._t_prev
        st["lr"] = lr
        return StepLog(self.step, self.epoch, self.batch, float(loss), lr, n, correct, t1 - t0)

    def _snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({k: v.copy() for k, v in self.net.buffers.items()},
                self.net.rng_states() if hasattr(self.net, "rng_states") else {})

    def _restore(self, snap: tuple[dict[str, np.ndarray], dict[str, Any]]) -> None:
        bufs, rngs = snap
        for k, v in self.net.buffers.items():
            v[...] = bufs[k]
        if rngs:
            self.net.set_rng_states(rngs)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._sigint:  # second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self._sigint = True

    @contextlib.contextmanager
    def _deferred_sigint(self) -> Iterator[None]:
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


def _zero_stats() -> dict[str, Any]:
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "wall": 0.0, "lr": None}
