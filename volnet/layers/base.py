"""The uniform layer interface (as ConvNetJS: forward, backward, params and grads, to/from JSON).

Shapes in code are per-sample (C, H, W) = the notes' (D, H, W); batches are NCHW. A layer's
``params`` and ``grads`` are dicts with the same keys (``"w"``, ``"b"``, ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Shape = tuple[int, ...]  # per-sample shape: (C, H, W) for volumes, (N_features,) after FC


class Layer:
    """Base class: stateless layers only override ``forward``/``backward``/``output_shape``.

    Subclasses set ``kind`` (the notation's keyword, e.g. ``"CONV"``) and implement:

    - ``output_shape(input_shape) -> Shape``: shape inference without allocating anything; raises
      :class:`volnet.ShapeError` when the layer does not fit.
    - ``param_shapes(input_shape) -> dict[str, Shape]``: what ``build`` would allocate (for summaries).
    - ``build(input_shape, rng)``: allocate parameters (He init) for this input shape; idempotent.
    - ``forward(x, train=True) -> out`` and ``backward(dout) -> dx`` (accumulates nothing: ``grads`` are
      overwritten by each backward).
    - ``config() -> dict``: JSON-able keyword arguments that rebuild the layer: ``type(self)(**config)``.
    - ``macs(input_shape) -> int``: multiply-adds per sample.
    - ``token() -> str``: the layer in the notes' notation (``"CONV3-64"``), canonical form.
    """

    kind: str = "LAYER"

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}  # saved state that is not trained (BN running stats)
        self.input_shape: Shape | None = None
        self.train_mode: bool = True

    # -- shape inference and parameters -------------------------------------------------------
    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}

    def num_params(self, input_shape: Shape) -> int:
        return int(sum(int(np.prod(s)) for s in self.param_shapes(input_shape).values()))

    def macs(self, input_shape: Shape) -> int:
        return 0

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        self.output_shape(input_shape)  # validates
        self.input_shape = tuple(input_shape)

    # -- computation ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- serialisation ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {}

    def token(self) -> str:
        return self.kind

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
