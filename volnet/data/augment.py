"""On-the-fly data augmentation, vectorised over a batch: random crop with zero padding, horizontal flip,
random erasing.

Every random draw comes from a given ``np.random.Generator``, so a batch is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from volnet.errors import DataError


def random_crop(x: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Pad each image with ``pad`` zeros on every side and cut a random H x W window back out.

    Args:
        x: images of shape (N, C, H, W).
        pad: zero padding P; the window's top-left corner is drawn uniformly from [0, 2P] x [0, 2P].
        rng: source of the offsets; draws ``rng.integers(0, 2P + 1, size=(2, N))`` (row offsets, then
            column offsets), nothing when ``pad == 0``.

    Returns:
        A new array of the same shape and dtype: ``out[i] = xpad[i, :, oy:oy+H, ox:ox+W]``.
    """
    if pad < 0:
        raise DataError(f"random_crop: pad must be >= 0, got {pad}")
    if pad == 0:
        return x.copy()
    n, _, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    off = rng.integers(0, 2 * pad + 1, size=(2, n))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (h, w), axis=(2, 3))  # (N, C, 2P+1, 2P+1, H, W)
    # Advanced indices separated by a slice: the sample axis goes first, giving (N, C, H, W).
    return np.ascontiguousarray(windows[np.arange(n), :, off[0], off[1]])


def random_flip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability ``p``.

    Draws ``mask = rng.random(N) < p``; returns a copy with ``out[mask] = x[mask][..., ::-1]``.
    """
    mask = rng.random(x.shape[0]) < p
    out = x.copy()
    out[mask] = x[mask][..., ::-1]
    return out


#: Random erasing's ranges (Zhong et al. 2017, torchvision ``RandomErasing``): the erased area as a
#: fraction of H x W, and its aspect ratio h/w (drawn log-uniformly).
ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)


def random_erase(x: np.ndarray, rng: np.random.Generator, p: float = 0.5, value: float = 0.0,
                 scale: tuple[float, float] = ERASE_SCALE,
                 ratio: tuple[float, float] = ERASE_RATIO) -> np.ndarray:
    """Random erasing (Zhong et al. 2017): with probability ``p`` set one random rectangle of each image,
    all channels, to ``value`` (0: black, as the crop's padding).

    Per image (N, C, H, W) the rectangle has area ``a * H * W``, ``a ~ U(scale)``, aspect ``r = h / w``
    with ``log r ~ U(log ratio)``: ``h = round(sqrt(a H W r))``, ``w = round(sqrt(a H W / r))``, both
    clipped to [1, H] and [1, W]; its corner is uniform over the positions where it fits. Draws, in this
    order and for every image whether erased or not: ``rng.random(N)`` (erase when < p), ``rng.uniform``
    of a and of log r (N each), ``rng.random((2, N))`` for the corner. Returns a new array.

    >>> x = np.ones((64, 1, 28, 28), np.float32)
    >>> out = random_erase(x, np.random.default_rng(0), p=1.0)
    >>> bool(((out == 0).reshape(64, -1).sum(1) >= 1).all()), float(out.mean()) > 0.6
    (True, True)
    """
    n, _, h, w = x.shape
    erase = rng.random(n) < p
    area = rng.uniform(scale[0], scale[1], n) * h * w
    r = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), n))
    eh = np.clip(np.rint(np.sqrt(area * r)), 1, h).astype(np.int64)
    ew = np.clip(np.rint(np.sqrt(area / r)), 1, w).astype(np.int64)
    u = rng.random((2, n))
    top = (u[0] * (h - eh + 1)).astype(np.int64)
    left = (u[1] * (w - ew + 1)).astype(np.int64)
    rows = np.arange(h)[None, :]
    cols = np.arange(w)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (N, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :]) & erase[:, None, None]  # (N, H, W)
    out = x.copy()
    out[np.broadcast_to(mask[:, None], x.shape)] = value
    return out


@dataclass(frozen=True)
class Augment:
    """Augmentation settings: random crop with ``pad`` zeros (0 = off), horizontal flip (``flip``) and
    random erasing with probability ``erase`` (0 = off; :func:`random_erase`).

    ``aug(x, rng)`` applies crop first, then flip, then erasing, drawing from ``rng`` in that order.
    ``Augment()`` is the identity (returns ``x`` itself, draws nothing).
    """

    pad: int = 0
    flip: bool = False
    flip_p: float = 0.5
    erase: float = 0.0

    def __post_init__(self) -> None:
        if int(self.pad) != self.pad or self.pad < 0:
            raise DataError(f"Augment: pad must be an integer >= 0, got {self.pad!r}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise DataError(f"Augment: flip_p must be in [0, 1], got {self.flip_p!r}")
        if not isinstance(self.erase, (int, float)) or isinstance(self.erase, bool) or \
                not 0.0 <= self.erase <= 1.0:
            raise DataError(f"Augment: erase must be a probability in [0, 1], got {self.erase!r}")

    @property
    def enabled(self) -> bool:
        """True when the augmentation changes anything."""
        return self.pad > 0 or (self.flip and self.flip_p > 0) or self.erase > 0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment a batch ``x`` (N, C, H, W); returns a new array (or ``x`` when disabled)."""
        if self.pad > 0:
            x = random_crop(x, int(self.pad), rng)
        if self.flip and self.flip_p > 0:
            x = random_flip(x, rng, self.flip_p)
        if self.erase > 0:
            x = random_erase(x, rng, self.erase)
        return x

    def config(self) -> dict[str, Any]:
        """JSON-able settings; ``Augment(**cfg)`` rebuilds it."""
        return asdict(self)

    def describe(self) -> str:
        """The settings in words: ``"random crop (pad 2) + horizontal flip"``, ``"none"``.

        >>> Augment(pad=2, flip=True).describe(), Augment(flip=True, flip_p=0.3).describe()
        ('random crop (pad 2) + horizontal flip', 'horizontal flip (p 0.3)')
        >>> Augment(pad=2, erase=0.5).describe()
        'random crop (pad 2) + random erasing (p 0.5)'

        """
        parts = []
        if self.pad > 0:
            parts.append(f"random crop (pad {self.pad})")
        if self.flip and self.flip_p > 0:
            parts.append("horizontal flip" + ("" if self.flip_p == 0.5 else f" (p {self.flip_p:g})"))
        if self.erase > 0:
            parts.append(f"random erasing (p {self.erase:g})")
        return " + ".join(parts) or "none"


#: Default augmentation per named dataset (crop pad about H/8, flips only where a mirror image is
#: still of the same class: not for digits).
DEFAULT_AUGMENT: dict[str, Augment] = {
    "fashion-mnist": Augment(pad=2, flip=True),
    "mnist": Augment(pad=2, flip=False),
    "digits": Augment(pad=1, flip=False),
    "cifar10": Augment(pad=4, flip=True),
    "cifar100": Augment(pad=4, flip=True),
    "synthetic": Augment(),
    "folder": Augment(flip=True),
}


def default_augment(name: str) -> Augment:
    """The default ``Augment`` of a named dataset (``"folder:PATH"``: flips only; unknown: ``Augment()``)."""
    key = name.split(":", 1)[0].split("/", 1)[0].lower()
    return DEFAULT_AUGMENT.get(key, Augment())
