"""The one evaluation routine (the trainer's validation and test passes, ``volnet evaluate``): mean softmax
loss, accuracy, predictions and the confusion matrix, in inference mode.

The loss is the notes' softmax (cross-entropy) loss on the class scores (the input of a trailing SOFTMAX,
see :meth:`volnet.net.Container.without_softmax`), averaged over the N images; ``probs`` are the softmax
of the scores.

>>> import numpy as np
>>> from volnet.spec import build
>>> net = build("INPUT [4x4x1] -> FC-3 -> SOFTMAX", seed=0)
>>> x, y = np.zeros((5, 1, 4, 4), np.float32), np.array([0, 1, 2, 0, 1])
>>> ev = evaluate(net, x, y)
>>> round(ev.loss, 4), ev.n, ev.probs.shape        # zero images: equal scores, loss log(3)
(1.0986, 5, (5, 3))
>>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist()
[[1, 0], [1, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from volnet.data import Normalizer
from volnet.errors import ShapeError, VolnetError


@dataclass
class Evaluation:
    """Result of :func:`evaluate`: mean softmax ``loss``, accuracy ``acc`` in [0, 1], ``n`` samples,
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


def prepare(x: np.ndarray, normalizer: Normalizer | None, dtype: Any) -> np.ndarray:
    """Raw images (N, C, H, W) as the net takes them: normalised (when ``normalizer``), in ``dtype``."""
    if normalizer is not None:
        x = normalizer.transform(x)
    return np.asarray(x).astype(dtype, copy=False)


def _scores_net(net: Any) -> Any:
    return net.without_softmax() if hasattr(net, "without_softmax") else net


def _batches(net: Any, x: np.ndarray, normalizer: Normalizer | None, batch_size: int) -> Any:
    if batch_size < 1:
        raise VolnetError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    scores = _scores_net(net)
    dtype = np.dtype(getattr(net, "dtype", np.float32))
    for i in range(0, len(x), batch_size):
        out = scores.forward(prepare(x[i:i + batch_size], normalizer, dtype), False)
        yield i, out.reshape(out.shape[0], -1)
    net.clear_cache()


def probabilities(net: Any, x: np.ndarray, normalizer: Normalizer | None = None,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, K): the softmax of the net's scores for raw images ``x``."""
    from volnet.ops.activations import softmax

    parts = [softmax(s) for _, s in _batches(net, x, normalizer, batch_size)]
    if not parts:
        k = int(np.prod(net.output_shape(tuple(x.shape[1:]))))
        return np.zeros((0, k), dtype=np.dtype(getattr(net, "dtype", np.float32)))
    return np.concatenate(parts)


def evaluate(net: Any, x: np.ndarray, y: np.ndarray, normalizer: Normalizer | None = None,
             batch_size: int = 256, progress: str = "off", desc: str = "evaluate") -> Evaluation:
    """Loss, accuracy and predictions of ``net`` on raw images ``x`` (N, C, H, W) with labels ``y`` (N,),
    in inference mode (BN running statistics, no dropout); nothing in the net changes.

    ``progress``: a :func:`volnet.progress.progress` mode (``"auto"``: a bar on a terminal, a line every
    30 s in a log; ``"off"``) showing the images done, elapsed time, ETA and the running accuracy.
    """
    from volnet.ops.activations import softmax
    from volnet.ops.losses import softmax_loss
    from volnet.progress import progress as show

    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    loss_sum, parts, correct = 0.0, [], 0
    with show(n, desc, mode=progress) as bar:
        for i, s in _batches(net, x, normalizer, batch_size):
            yb = y[i:i + len(s)]
            if len(yb) and int(yb.max()) >= s.shape[1]:
                raise ShapeError(f"the model has {s.shape[1]} outputs but the labels go up to "
                                 f"{int(y.max())}; evaluate on the dataset it was trained for")
            loss, _ = softmax_loss(s, yb)
            loss_sum += loss * len(s)
            parts.append(softmax(s))
            correct += int(np.sum(s.argmax(axis=1) == yb))
            bar.update(i + len(s), acc=f"{100 * correct / (i + len(s)):.1f}%")
    if parts:
        probs = np.concatenate(parts)
    else:
        k = int(np.prod(net.output_shape(tuple(x.shape[1:]))))
        probs = np.zeros((0, k), dtype=np.dtype(getattr(net, "dtype", np.float32)))
    pred = probs.argmax(axis=1).astype(np.int64)
    acc = float(np.mean(pred == y)) if n else 0.0
    return Evaluation(loss_sum / n if n else 0.0, acc, n, y.copy(), pred, probs)


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
