"""Preprocessing: per-channel normalisation, validation split, resumable mini-batch iterator."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from volnet.data.augment import Augment
from volnet.data.dataset import Dataset
from volnet.errors import DataError


class Normalizer:
    """Per-channel standardisation ``(x - mean[c]) / std[c]``, statistics fitted on the training split.

    ``mean``/``std`` are plain lists of floats (one per channel), so ``to_dict()`` goes into JSON.

    Example::

        norm = Normalizer().fit(train.x)
        xtr = norm.transform(train.x); xte = norm.transform(test.x)
        Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    """

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):  # type: ignore[arg-type]
            raise DataError(f"Normalizer: give mean and std with one value per channel, got mean={mean}, "
                            f"std={std}")
        self.mean: list[float] | None = None if mean is None else [float(m) for m in mean]
        self.std: list[float] | None = None if std is None else [float(s) for s in std]
        if self.std is not None and any(not (0 < s < float("inf")) for s in self.std):
            raise DataError(f"Normalizer: every std must be a finite number > 0, got {self.std}")
        if self.mean is not None and any(m != m or abs(m) == float("inf") for m in self.mean):
            raise DataError(f"Normalizer: every mean must be a finite number, got {self.mean}")

    def fit(self, x: np.ndarray, chunk: int = 8192) -> Normalizer:
        """Compute per-channel mean and (population) std of ``x`` (N, C, H, W) in float64.

        Two passes over chunks of ``chunk`` samples, so no full-size temporary is made.
        A channel with zero spread gets std 1.
        """
        if x.ndim != 4 or x.shape[0] == 0:
            raise DataError(f"Normalizer.fit: need a non-empty (N, C, H, W) array, got shape {x.shape}")
        n, c = x.shape[0], x.shape[1]
        count = n * x.shape[2] * x.shape[3]
        total = np.zeros(c, dtype=np.float64)
        for i in range(0, n, chunk):
            total += x[i:i + chunk].sum(axis=(0, 2, 3), dtype=np.float64)
        mean = total / count
        sq = np.zeros(c, dtype=np.float64)
        for i in range(0, n, chunk):
            d = x[i:i + chunk].astype(np.float64) - mean[None, :, None, None]
            sq += np.einsum("nchw,nchw->c", d, d)
        std = np.sqrt(sq / count)
        self.mean = mean.tolist()
        self.std = np.where(std > 0, std, 1.0).tolist()
        return self

    def _stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.mean is None or self.std is None:
            raise DataError("Normalizer is not fitted; call fit(train.x) first or build it from_dict(...)")
        if x.ndim != 4 or x.shape[1] != len(self.mean):
            raise DataError(f"Normalizer has {len(self.mean)} channel(s) but x has shape {x.shape}; fit it "
                            "on data with the same channels (N, C, H, W)")
        shape = (1, -1, 1, 1)
        return (np.asarray(self.mean, dtype=x.dtype).reshape(shape),
                np.asarray(self.std, dtype=x.dtype).reshape(shape))

    def transform(self, x: np.ndarray, inplace: bool = False) -> np.ndarray:
        """``(x - mean) / std`` per channel, in ``x``'s dtype; ``inplace=True`` overwrites ``x``."""
        mean, std = self._stats(x)
        out = x if inplace else np.empty_like(x)
        np.subtract(x, mean, out=out)
        np.divide(out, std, out=out)
        return out

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """``x * std + mean`` per channel (undo ``transform``)."""
        mean, std = self._stats(x)
        return x * std + mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{"mean": [...], "std": [...]}``."""
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        """Rebuild from ``to_dict()`` output."""
        return cls(d["mean"], d["std"])

    def __repr__(self) -> str:
        return f"Normalizer(mean={self.mean}, std={self.std})"


def split_validation(ds: Dataset, size: float | int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Carve a validation set out of a training set.

    Args:
        ds: the training Dataset.
        size: a float fraction in (0, 1) of ``len(ds)`` (rounded), or an int count in [1, len(ds) - 1].
        seed: the permutation seed; the same seed gives the same split.

    Returns:
        ``(train, val)``: disjoint, together all of ``ds``, each in the original sample order,
        named ``<name>-train`` / ``<name>-val``.
    """
    n = len(ds)
    if isinstance(size, float | np.floating):
        if not 0.0 < size < 1.0:
            raise DataError(f"split_validation: fraction must be in (0, 1), got {size}")
        count = int(round(float(size) * n))
    else:
        count = int(size)
    if not 1 <= count <= n - 1:
        raise DataError(f"split_validation: validation size {size!r} gives {count} of {n} samples; "
                        f"need between 1 and {n - 1}")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:count]), np.sort(perm[count:])
    return ds.subset(train_idx, f"{ds.name}-train"), ds.subset(val_idx, f"{ds.name}-val")


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of mini-batches per epoch: ``ceil(n / B)`` or ``floor(n / B)`` with ``drop_last``."""
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The sample order of one epoch, a pure function of (n, seed, epoch): resumable without RNG state."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def batch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation Generator of batch ``index`` of ``epoch``: a pure function of its arguments."""
    return np.random.default_rng([int(seed), int(epoch), int(index), 1])


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool = True, seed: int = 0,
            epoch: int = 0, start: int = 0, drop_last: bool = False, augment: Augment | None = None,
            rng: np.random.Generator | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield mini-batches ``(xb, yb)`` of one epoch, optionally augmented, resumable mid-epoch.

    The order is ``epoch_permutation(N, seed, epoch, shuffle)`` and batch ``i`` holds positions
    ``[i*B, (i+1)*B)`` of it; augmentation of batch ``i`` draws from ``batch_rng(seed, epoch, i)``.
    So ``batches(..., epoch=e, start=k)`` yields exactly batches k, k+1, ... of the uninterrupted
    epoch, bit for bit: a trainer checkpoints only (seed, epoch, batches done).

    Args:
        x: inputs (N, ...); y: labels (N,).
        batch_size: B; the last batch is smaller unless ``drop_last``.
        shuffle: permute the samples (else the original order).
        seed, epoch: determine the permutation and the augmentation draws.
        start: index of the first batch to yield (number of batches already done this epoch).
        augment: applied to each batch's ``xb`` (``None`` or ``Augment()``: no augmentation).
        rng: if given, the permutation and augmentation draw from it instead (not resumable by
            ``start`` unless the caller restores the Generator's state).
    """
    n = x.shape[0]
    if y.shape[0] != n:
        raise DataError(f"batches: x has {n} samples but y has {y.shape[0]}")
    if batch_size < 1:
        raise DataError(f"batches: batch_size must be >= 1, got {batch_size}")
    total = num_batches(n, batch_size, drop_last)
    if not 0 <= start <= total:
        raise DataError(f"batches: start={start} is outside the epoch's {total} batches")
    if rng is not None:
        order = rng.permutation(n) if shuffle else np.arange(n)
    else:
        order = epoch_permutation(n, seed, epoch, shuffle)
    use_aug = augment is not None and augment.enabled
    for i in range(start, total):
        idx = order[i * batch_size:(i + 1) * batch_size]
        if not shuffle:
            idx = slice(i * batch_size, min((i + 1) * batch_size, n))
        xb, yb = x[idx], y[idx]
        if use_aug:
            xb = augment(xb, rng if rng is not None else batch_rng(seed, epoch, i))  # type: ignore[misc]
        yield xb, yb
