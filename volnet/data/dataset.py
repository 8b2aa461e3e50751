"""The in-memory dataset container: images ``x`` (N, C, H, W) float32 and labels ``y`` (N,) int64."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from volnet.data.augment import Augment
from volnet.errors import DataError


@dataclass(repr=False, eq=False)
class Dataset:
    """A labelled image set held in memory.

    Attributes:
        x: images of shape (N, C, H, W), float32 (raw pixels scaled to [0, 1] by the readers).
        y: labels of shape (N,), int64, each in ``[0, len(classes))``.
        classes: class names; ``classes[y[i]]`` names sample i.
        name: short name, e.g. ``"fashion-mnist/train"``.
        augment: the default on-the-fly augmentation for this data (``Augment()`` = none);
            override with ``dataclasses.replace(ds.augment, flip=False)`` or a new ``Augment``.
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    name: str = "dataset"
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise DataError(f"dataset {self.name!r}: x must be an (N, C, H, W) array, got shape "
                            f"{getattr(x, 'shape', None)}; add the channel axis (x[:, None]) for grey images")
        if x.dtype not in (np.float32, np.float64):
            raise DataError(f"dataset {self.name!r}: x must be float32 (or float64), got {x.dtype}; "
                            "convert with x.astype(np.float32) / 255")
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"dataset {self.name!r}: y must have shape ({x.shape[0]},) to match x "
                            f"{x.shape}, got {y.shape}")
        if y.dtype != np.int64:
            y = y.astype(np.int64)
        self.y = y
        self.classes = [str(c) for c in self.classes]
        if y.size and (y.min() < 0 or y.max() >= len(self.classes)):
            raise DataError(f"dataset {self.name!r}: labels span [{y.min()}, {y.max()}] but there are "
                            f"{len(self.classes)} class names; pass one name per class")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-sample shape (C, H, W)."""
        return tuple(int(s) for s in self.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    def subset(self, index: np.ndarray, name: str | None = None) -> Dataset:
        """A new Dataset with the samples ``index`` (integer indices or a boolean mask), copied."""
        index = np.asarray(index)
        return Dataset(self.x[index], self.y[index], list(self.classes),
                       name if name is not None else self.name, self.augment)

    def __getitem__(self, index: int | slice | np.ndarray) -> Any:
        """``ds[i]``: the sample ``(x[i], y[i])``; ``ds[:2000]``, ``ds[idx]``, ``ds[mask]``: a new Dataset
        (:meth:`subset`) with the same classes, name and augmentation.

        >>> ds = Dataset(np.zeros((5, 1, 2, 2), np.float32), np.arange(5) % 2, ["a", "b"])
        >>> len(ds[:3]), ds[1][1], ds[np.array([0, 4])].y.tolist()
        (3, 1, [0, 0])
        """
        if isinstance(index, (int, np.integer)):
            return self.x[index], int(self.y[index])
        if isinstance(index, slice):
            return self.subset(np.arange(len(self))[index])
        return self.subset(np.asarray(index))

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, n={len(self)}, shape={self.shape}, dtype={self.x.dtype}, "
                f"classes={self.num_classes}, augment={self.augment})")
