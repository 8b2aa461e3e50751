"""Dropout (``DROPOUT{p}``): in training each activation is zeroed with probability p and the survivors
are scaled by 1/(1 - p) (inverted dropout), so inference is the identity. No params, macs 0.

The layer owns its random generator (``seed``); its state is JSON-able (``rng_state()`` /
``set_rng_state()``) so a resumed training run draws bit-identical masks. The math is
:mod:`volnet.ops.dropout`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from volnet.errors import ModelFileError
from volnet.layers.base import Layer, Shape
from volnet.ops.dropout import dropout_backward, dropout_forward


class Dropout(Layer):
    """DROPOUT layer: ``Dropout(p=0.5, seed=None)``; p = probability of dropping a unit.

    With ``seed=None`` the generator is derived from the net's build seed (a spawned child of the build
    generator, so the weights of other layers do not change), or from OS entropy for a lone layer.

    See: ``torch.nn.Dropout(p)``.
    """

    kind = "DROPOUT"

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"dropout p (drop probability) must be in [0, 1), got {p!r}")
        bad_seed = isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
        if seed is not None and bad_seed:
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.p = float(p)
        self.seed = None if seed is None else int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._rng_from_build = False

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None, dtype: Any = None) -> None:
        super().build(input_shape, rng, dtype)
        if self.seed is None and rng is not None and not self._rng_from_build:
            self.rng = rng.spawn(1)[0]
            self._rng_from_build = True

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        out, cache = dropout_forward(x, p=self.p, train=train, rng=self.rng)
        self.cache = cache if train else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dropout_backward(dout, self.forward_cache())

    def rng_state(self) -> dict[str, Any]:
        """The generator's state as a JSON-able dict (``bit_generator.state``)."""
        return copy.deepcopy(self.rng.bit_generator.state)

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`rng_state` (same bit generator kind, e.g. PCG64)."""
        kinds = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "MT19937": np.random.MT19937,
                 "Philox": np.random.Philox, "SFC64": np.random.SFC64}
        name = state.get("bit_generator") if isinstance(state, dict) else None
        if not isinstance(name, str) or name not in kinds:
            raise ModelFileError(
                f"dropout rng state: unknown bit generator {name!r}; expected one of {sorted(kinds)}"
            )
        bg = kinds[name]()
        try:
            bg.state = copy.deepcopy(state)
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise ModelFileError(f"dropout rng state: damaged {name} state ({type(e).__name__}: {e})"
                                 ) from None
        self.rng = np.random.Generator(bg)
        self._rng_from_build = True

    def config(self) -> dict[str, Any]:
        return {"p": self.p, "seed": self.seed}

    def token(self) -> str:
        return f"DROPOUT{self.p:g}"
