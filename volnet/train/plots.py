"""Plots of a run: ``curves.png`` (loss and accuracy vs epoch) and ``confusion.png`` (needs matplotlib;
each function returns False, writing nothing, when it is missing)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt: Any, fig: Any, path: Path) -> bool:
    """Lay out, write ``path`` atomically (PNG) and close ``fig``."""
    from volnet.atomic import atomic_write_bytes

    try:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        atomic_write_bytes(path, buf.getvalue())
    finally:
        plt.close(fig)
    return True


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
    return _save_figure(plt, fig, Path(path))


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
    return _save_figure(plt, fig, Path(path))
