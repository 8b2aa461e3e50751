"""Plots of a run and of a net (needs matplotlib): ``curves.png`` (loss and accuracy vs epoch, per-step
loss behind), ``confusion.png``, filters, activation maps, heat maps over an image (occlusion, saliency)
and a grid of images. ``plot_*`` write a PNG atomically and return False, writing nothing, when
matplotlib is missing; ``*_png`` return the PNG bytes (None without matplotlib) for the HTML report."""

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


def _png(plt: Any, fig: Any) -> bytes:
    """Lay out ``fig``, close it, return its PNG bytes."""
    try:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buf.getvalue()


def _write(data: bytes | None, path: str | os.PathLike[str]) -> bool:
    from volnet.atomic import atomic_write_bytes

    if data is None:
        return False
    atomic_write_bytes(Path(path), data)
    return True


def _save_figure(plt: Any, fig: Any, path: Path) -> bool:
    """Lay out, write ``path`` atomically (PNG) and close ``fig``."""
    return _write(_png(plt, fig), path)


def curves_title(info: dict[str, Any] | None, history: Sequence[dict[str, Any]],
                 test_acc: float | None = None) -> str:
    """``model on data, test acc X%`` (what is known) for the curves' title."""
    args = (info or {}).get("args") or {}
    model = str(args.get("model") or "model")
    if len(model) > 60:
        model = model[:57] + "..."
    data = args.get("data_used") or args.get("data")
    t = f"{model} on {data}" if data else model
    if test_acc is not None:
        t += f", test acc {100 * test_acc:.2f}%"
    elif history and history[-1].get("val_acc") is not None:
        t += f", val acc {100 * history[-1]['val_acc']:.2f}%"
    return t


def best_epoch(history: Sequence[dict[str, Any]]) -> int | None:
    """The epoch (1-based, as recorded) of the highest validation accuracy (train accuracy without a
    validation set); None for an empty history."""
    if not history:
        return None
    key = "val_acc" if any(h.get("val_acc") is not None for h in history) else "train_acc"
    best = max(history, key=lambda h: -1.0 if h.get(key) is None else h[key])
    return int(best["epoch"])


def curves_png(history: Sequence[dict[str, Any]], steps: Sequence[dict[str, Any]] | None = None,
               title: str | None = None) -> bytes | None:
    """The curves figure as PNG bytes: softmax loss (per-step loss faint behind the per-epoch points,
    learning rate on a right axis) and accuracy in percent vs epoch, whole-number epoch ticks, the best
    epoch marked. A step's x is ``epoch - 1 + batch / steps_per_epoch`` so epoch e's point sits at its
    end."""
    plt = _pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    ep = [h["epoch"] for h in history]
    steps = [r for r in (steps or []) if r.get("loss") is not None]
    best = best_epoch(history)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    if steps:
        a1.plot([r["epoch"] for r in steps], [r["loss"] for r in steps], "-", color="tab:blue", alpha=0.3,
                lw=1, label="train (per step)")
    for ax, key, label, scale in ((a1, "loss", "softmax loss", 1.0), (a2, "acc", "accuracy (%)", 100.0)):
        ax.plot(ep, [scale * h[f"train_{key}"] for h in history], "o-", color="tab:blue", label="train")
        if any(h.get(f"val_{key}") is not None for h in history):
            ax.plot(ep, [None if h.get(f"val_{key}") is None else scale * h[f"val_{key}"] for h in history],
                    "s-", color="tab:orange", label="validation")
        if best is not None:
            ax.axvline(best, color="tab:green", ls="--", lw=1, label=f"best epoch {best}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0 if steps else min(ep, default=1) - 0.5, max(ep, default=1) + 0.5)
        ax.grid(alpha=0.3)
    lrs = [(r["epoch"], r["lr"]) for r in steps if r.get("lr") is not None] or \
        [(h["epoch"], h["lr"]) for h in history if h.get("lr") is not None]
    if lrs:
        a3 = a1.twinx()
        a3.plot([e for e, _ in lrs], [v for _, v in lrs], ":", color="gray", label="learning rate")
        a3.set_ylabel("learning rate", color="gray")
        a3.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        h1, l1 = a1.get_legend_handles_labels()
        h3, l3 = a3.get_legend_handles_labels()
        a1.legend(h1 + h3, l1 + l3, fontsize=8)
    else:
        a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _png(plt, fig)


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str],
                steps: Sequence[dict[str, Any]] | None = None, title: str | None = None) -> bool:
    """Write ``path`` (PNG): :func:`curves_png`. Returns False when matplotlib is missing (nothing
    written)."""
    return _write(curves_png(history, steps, title), path)


def _tile_grid(n: int) -> tuple[int, int]:
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def filters_png(w: np.ndarray, title: str = "") -> bytes | None:
    """Conv weights ``w`` (K, C, F, F) as tiles, each filter normalised to [0, 1] on its own (min -> 0,
    max -> 1; the subtitle gives the overall weight range as the scale): colour tiles when C == 3,
    grayscale when C == 1, else one grayscale row per filter with its C input channels (at most 16x16)."""
    plt = _pyplot()
    if plt is None:
        return None
    w = np.asarray(w, dtype=np.float64)
    k, c = w.shape[:2]
    lo = w.reshape(k, -1).min(axis=1)[:, None, None, None]
    hi = w.reshape(k, -1).max(axis=1)[:, None, None, None]
    t = (w - lo) / np.where(hi > lo, hi - lo, 1.0)
    if c in (1, 3):
        rows, cols = _tile_grid(k)
        fig, axes = plt.subplots(rows, cols, figsize=(0.8 * cols + 0.4, 0.8 * rows + 0.6), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < k:
                img = t[i].transpose(1, 2, 0) if c == 3 else t[i, 0]
                ax.imshow(img, cmap=None if c == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        k, c = min(k, 16), min(c, 16)
        fig, axes = plt.subplots(k, c, figsize=(0.5 * c + 0.4, 0.5 * k + 0.6), squeeze=False)
        for i in range(k):
            for j in range(c):
                axes[i, j].axis("off")
                axes[i, j].imshow(t[i, j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    fig.set_size_inches(max(fig.get_size_inches()[0], 4.0), fig.get_size_inches()[1] + 0.3)
    fig.suptitle(f"{title}\neach filter scaled min..max; weights in [{w.min():.3g}, {w.max():.3g}]".strip(),
                 fontsize=8)
    return _png(plt, fig)


def activations_png(acts: Sequence[tuple[str, np.ndarray]], max_maps: int = 32) -> bytes | None:
    """Activation maps of one image: per layer (name, array (D, H, W) or (D,)) a labelled row block of
    up to ``max_maps`` maps, titled ``name [WxHxD]`` (the notes' order); each map scaled to its own
    range (a 1-D volume is drawn as a bar)."""
    plt = _pyplot()
    if plt is None:
        return None
    blocks = []
    for name, a in acts:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == 1 or a.shape[1:] == (1, 1):  # a vector (FC output): one bar chart across the row
            v = a.reshape(-1)
            blocks.append((name, v, 1, 1, 2, f"[1x1x{v.size}]"))
            continue
        d, h, w_ = a.shape
        n = min(d, max_maps)
        cols = min(n, 16)
        blocks.append((name, a, n, cols, int(np.ceil(n / cols)), f"[{w_}x{h}x{d}]"))
    total = sum(b[4] + 1 for b in blocks)
    cols = max(8, max(b[3] for b in blocks))
    fig = plt.figure(figsize=(0.8 * cols + 0.5, 0.8 * total + 0.3))
    gs = fig.add_gridspec(total, cols)
    r = 0
    for name, a, n, bc, br, vol in blocks:
        tax = fig.add_subplot(gs[r, :])
        tax.axis("off")
        more = f" (first {n} of {a.shape[0]} maps)" if a.ndim == 3 and n < a.shape[0] else ""
        tax.text(0, 0.2, f"{name} {vol}{more}", fontsize=9, weight="bold")
        r += 1
        if a.ndim == 1:
            ax = fig.add_subplot(gs[r:r + br, :])
            ax.bar(range(a.size), a, color="tab:blue")
            ax.set_xlim(-0.5, a.size - 0.5)
            ax.tick_params(labelsize=7)
        else:
            for i in range(n):
                ax = fig.add_subplot(gs[r + i // bc, i % bc])
                ax.axis("off")
                ax.imshow(a[i], cmap="viridis", interpolation="nearest")
        r += br
    return _png(plt, fig)


def overlay_png(image: np.ndarray, heat: np.ndarray, title: str, label: str) -> bytes | None:
    """``image`` (C, H, W) in [0, 1] beside the same image with ``heat`` (H, W) overlaid (colour bar
    labelled ``label``)."""
    plt = _pyplot()
    if plt is None:
        return None
    img = image.transpose(1, 2, 0) if image.shape[0] == 3 else image[0]
    cmap = None if image.shape[0] == 3 else "gray"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.5, 3.6))
    a1.imshow(img, cmap=cmap, vmin=0, vmax=1)
    a1.set_title("image", fontsize=9)
    a2.imshow(img, cmap=cmap, vmin=0, vmax=1)
    im = a2.imshow(heat, cmap="jet", alpha=0.5, interpolation="bilinear")
    fig.colorbar(im, ax=a2, label=label)
    a2.set_title(title, fontsize=8, wrap=True)
    for ax in (a1, a2):
        ax.axis("off")
    return _png(plt, fig)


def images_png(images: Sequence[np.ndarray], captions: Sequence[str], cols: int = 8) -> bytes | None:
    """A grid of images (C, H, W) in [0, 1], each with a caption below."""
    plt = _pyplot()
    if plt is None or not len(images):
        return None
    rows = int(np.ceil(len(images) / cols))
    cols = min(cols, len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.3 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            im = np.asarray(images[i], dtype=np.float64)
            ax.imshow(im.transpose(1, 2, 0) if im.shape[0] == 3 else im[0], cmap=None if im.shape[0] == 3
                      else "gray", vmin=0, vmax=1)
            ax.set_title(captions[i], fontsize=7)
    return _png(plt, fig)


def confusion_png(cm: np.ndarray, classes: Sequence[str]) -> bytes | None:
    """The confusion matrix figure (see :func:`plot_confusion`) as PNG bytes."""
    plt = _pyplot()
    if plt is None:
        return None
    return _png(plt, _confusion_figure(plt, cm, classes))


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike[str]) -> bool:
    """Write a confusion-matrix image (rows true, columns predicted); False when matplotlib is missing."""
    return _write(confusion_png(cm, classes), path)


def _confusion_figure(plt: Any, cm: np.ndarray, classes: Sequence[str]) -> Any:
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
    return fig
