"""Classification losses on class scores (N, C) with integer labels y (N,) in [0, C).

Softmax (cross-entropy) loss: L = (1/N) sum_i -log p_{i, y_i}, p = softmax(scores);
dL/ds = (p - onehot(y)) / N.

Multiclass SVM (hinge) loss, PyTorch's ``multi_margin_loss`` (p=1): note that PyTorch divides each
sample's sum by the number of classes C (the cs231n notes' SVM loss does not):
L = (1/N) sum_i (1/C) sum_{j != y_i} max(0, margin - s_{i, y_i} + s_{i, j}).
Multiply by C to get the notes' Delta-margin SVM loss.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError
from volnet.ops.activations import softmax


def _check(scores: np.ndarray, y: np.ndarray, what: str) -> np.ndarray:
    if scores.ndim != 2:
        raise ShapeError(
            f"{what}: scores must be 2-D (N, C), got shape {tuple(scores.shape)}; flatten with FC first"
        )
    N, C = scores.shape
    y = np.asarray(y)
    if y.shape != (N,):
        raise ShapeError(
            f"{what}: labels must have shape ({N},) to match scores {tuple(scores.shape)}, "
            f"got {tuple(y.shape)}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ShapeError(
            f"{what}: labels must be integer class indices, got dtype {y.dtype}; use y.astype(int)"
        )
    if N and (y.min() < 0 or y.max() >= C):
        bad = y[(y < 0) | (y >= C)]
        raise ShapeError(f"{what}: labels must be in [0, {C}) for C={C} classes, got {bad[:5].tolist()}")
    return y


def softmax_loss(scores: np.ndarray, y: np.ndarray, label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(scores) against labels y; returns (loss, dscores).

    scores: (N, C) unnormalized log probabilities (logits); y: (N,) ints in [0, C);
    dscores: (N, C) in scores' dtype.

    ``label_smoothing`` eps in [0, 1) (Szegedy et al. 2016) replaces the one-hot target by
    q = (1 - eps) onehot(y) + eps / C: L = (1/N) sum_i -sum_j q_ij log p_ij, dL/ds = (p - q) / N.

    >>> s = np.array([[2.0, 0.0, 0.0]]); y = np.array([0])
    >>> round(softmax_loss(s, y)[0], 4), round(softmax_loss(s, y, 0.1)[0], 4)
    (0.2395, 0.3729)

    See: ``torch.nn.functional.cross_entropy(scores, y, label_smoothing=eps)``.
    """
    y = _check(scores, y, "softmax loss")
    eps = float(label_smoothing)
    if not 0.0 <= eps < 1.0:
        raise ShapeError(f"softmax loss: label_smoothing must be in [0, 1), got {label_smoothing!r}")
    N, C = scores.shape
    t = scores.dtype.type
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(N)
    nll = log_z - shifted[rows, y]
    if eps:  # -sum_j q_j log p_j = (1 - eps) nll + eps * mean_j(log_z - s_j)
        nll = (1 - eps) * nll + eps * (log_z - shifted.mean(axis=1))
    loss = float(np.mean(nll))
    dscores = softmax(scores)
    if eps:
        dscores -= t(eps / C)
    dscores[rows, y] -= t(1 - eps)
    dscores /= t(N)
    return loss, dscores


def svm_loss(scores: np.ndarray, y: np.ndarray, margin: float = 1.0) -> tuple[float, np.ndarray]:
    """Mean multiclass hinge loss, exactly ``torch.nn.functional.multi_margin_loss`` (p=1, mean).

    L = (1/N) sum_i (1/C) sum_{j != y_i} max(0, margin - s_{i,y_i} + s_{i,j}) (PyTorch divides by C too).
    scores: (N, C); y: (N,) ints in [0, C); returns (loss, dscores (N, C)).

    See: ``torch.nn.functional.multi_margin_loss(scores, y, margin=margin)``.
    """
    y = _check(scores, y, "svm loss")
    N, C = scores.shape
    t = scores.dtype.type
    rows = np.arange(N)
    margins = scores - scores[rows, y][:, None]
    margins += t(margin)
    margins[rows, y] = 0
    np.maximum(margins, t(0), out=margins)
    loss = float(margins.sum() / (N * C))
    dscores = (margins > 0).astype(scores.dtype)
    dscores[rows, y] = -dscores.sum(axis=1)
    dscores /= t(N * C)
    return loss, dscores
