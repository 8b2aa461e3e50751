"""Shared pieces of the layer classes: parameter allocation (He init), lazy building, token helpers."""

from __future__ import annotations

from typing import Any

import numpy as np

from volnet.errors import ShapeError
from volnet.layers.base import Layer, Shape, format_shape
from volnet.ops.sizes import FITS, pair

IntPair = int | tuple[int, int]


def shape_str(shape: Shape | list[Shape]) -> str:
    """:func:`volnet.layers.base.format_shape` (error messages: (N,) -> ``[N]``)."""
    return format_shape(shape)


def pair_str(v: tuple[int, int]) -> str:
    """Token form of an (h, w) pair: ``3`` when square, else ``3x5`` (h x w)."""
    return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"


def as_pair(v: IntPair | list[int], name: str, lo: int) -> tuple[int, int]:
    """``sizes.pair`` plus a range check: raise ValueError naming the argument."""
    try:
        p = pair(v, name)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an int or an (h, w) pair of ints, got {v!r}") from e
    if min(p) < lo or any(int(a) != a for a in (v if isinstance(v, (tuple, list)) else [v])):
        raise ValueError(f"{name} must be an integer >= {lo} (or an (h, w) pair of them), got {v!r}")
    return p


def cfg_pair(p: tuple[int, int]) -> int | list[int]:
    """JSON-able config value of a pair: an int when square, else [h, w]."""
    return p[0] if p[0] == p[1] else [p[0], p[1]]


def check_int(v: Any, name: str, lo: int, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def check_fit(fit: str) -> str:
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    return fit


def expect_volume(input_shape: Shape, what: str) -> tuple[int, int, int]:
    """(C, H, W) of a 3-D per-sample shape, or ShapeError naming the layer."""
    s = tuple(input_shape)
    if len(s) != 3:
        raise ShapeError(
            f"{what}: expects a volume (C, H, W) = [WxHxD] per sample, got shape {s}; "
            f"put it before FC/FLATTEN or feed images"
        )
    return int(s[0]), int(s[1]), int(s[2])


def he_normal(rng: np.random.Generator, shape: Shape, fan_in: int, dtype: np.dtype) -> np.ndarray:
    """He initialisation w ~ N(0, 2/fan_in) (drawn in float64, so values do not depend on dtype)."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


class ParamLayer(Layer):
    """A layer with parameters: He-initialised weights ``w``, zero biases ``b``, built lazily.

    Subclasses implement ``param_shapes`` and ``fan_in``; ``init_buffers`` for non-trained state.
    """

    def fan_in(self, input_shape: Shape) -> int:
        raise NotImplementedError

    def init_param(self, name: str, shape: Shape, input_shape: Shape, rng: np.random.Generator) -> np.ndarray:
        if name == "w":
            return he_normal(rng, shape, self.fan_in(input_shape), self.dtype)
        return np.zeros(shape, dtype=self.dtype)

    def init_buffers(self, input_shape: Shape) -> dict[str, np.ndarray]:
        return {}

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None, dtype: Any = None) -> None:
        """Allocate the parameters for ``input_shape`` (idempotent when they already fit)."""
        if dtype is not None and np.dtype(dtype) != self.dtype:
            self.astype(dtype)
        input_shape = tuple(int(v) for v in input_shape)
        self.output_shape(input_shape)  # validates (ShapeError naming the layer)
        shapes = self.param_shapes(input_shape)
        if self.params:
            have = {k: tuple(v.shape) for k, v in self.params.items()}
            if have != shapes:
                raise ShapeError(
                    f"{self.token()}: parameters were built for input {shape_str(self.input_shape or ())} "
                    f"({have}), input {shape_str(input_shape)} needs {shapes}; build a new layer"
                )
        else:
            rng = np.random.default_rng(0) if rng is None else rng
            self.params = {k: self.init_param(k, s, input_shape, rng) for k, s in shapes.items()}
            self.buffers = self.init_buffers(input_shape)
        self.input_shape = input_shape

    def prepare(self, x: np.ndarray) -> None:
        """Build at the first forward (input depth inferred from x) or check x against the params."""
        shape = tuple(x.shape[1:])
        if not self.params or shape != self.input_shape:
            self.build(shape)
