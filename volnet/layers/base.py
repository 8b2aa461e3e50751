"""The uniform layer interface (as ConvNetJS: forward, backward, params and grads, to/from JSON).

Shapes in code are per-sample (C, H, W) = the notes' (D, H, W); batches are NCHW. A layer's
``params`` and ``grads`` are dicts with the same keys (``"w"``, ``"b"``, ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Shape = tuple[int, ...]  # per-sample shape: (C, H, W) for volumes, (N_features,) after FC
InShape = Shape | list[Shape]  # what a layer takes: a Shape, or one per input for a ``multi_input`` layer


def format_shape(shape: InShape, vector_as_volume: bool = False) -> str:
    """The one shape formatter: a per-sample shape in the notes' notation, (C, H, W) -> ``[WxHxD]``;
    (N,) -> ``[N]`` (``[1x1xN]`` with ``vector_as_volume``, as the notes print FC outputs); a list of
    shapes (a merge layer's inputs) comma-separated.

    >>> format_shape((3, 32, 16)), format_shape((10,)), format_shape((10,), vector_as_volume=True)
    ('[16x32x3]', '[10]', '[1x1x10]')
    """
    if isinstance(shape, list):
        return ", ".join(format_shape(s, vector_as_volume) for s in shape)
    s = tuple(int(v) for v in shape)
    if len(s) == 3:
        return f"[{s[2]}x{s[1]}x{s[0]}]"
    if len(s) == 1 and vector_as_volume:
        return f"[1x1x{s[0]}]"
    return "[" + "x".join(str(v) for v in s) + "]"


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

    Shared helpers: ``train()``/``eval()`` (``train_mode``), ``astype(dtype)`` (params and buffers),
    ``clear_cache()``, ``from_config(config)``, ``num_params()`` of the allocated params. ``forward(x,
    train=False)`` keeps no cache (``self.cache is None``), so inference holds no activations.
    ``multi_input`` layers (``Add``, ``Concat``) take a list of arrays and a list of shapes.
    """

    kind: str = "LAYER"
    #: True when ``backward(dout, need_dx=False)`` can skip the input gradient (CONV, LOCAL, containers)
    skips_dx: bool = False
    #: True when ``forward`` returns a new array that nothing else (its cache included) refers to, so the
    #: next layer may overwrite it: a Sequential then runs a following RELU in place (CONV, LOCAL, FC, BN)
    fresh_output: bool = False

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}  # saved state that is not trained (BN running stats)
        self.input_shape: Shape | None = None
        self.train_mode: bool = True
        self.dtype: np.dtype = np.dtype(np.float32)  # of the parameters ``build`` allocates
        self.cache: Any = None  # what ``backward`` needs; kept only by ``forward(x, train=True)``

    # -- shape inference and parameters -------------------------------------------------------
    # ``input_shape`` is typed Any: a Shape, or a list of Shapes for ``multi_input`` layers (InShape)
    def output_shape(self, input_shape: Any) -> Shape:
        return tuple(input_shape)

    def param_shapes(self, input_shape: Any) -> dict[str, Shape]:
        return {}

    def num_params(self, input_shape: Shape | None = None) -> int:
        """Trainable numbers: from ``param_shapes(input_shape)``, or the allocated params when None."""
        if input_shape is None:
            return int(sum(int(p.size) for p in self.params.values()))
        return int(sum(int(np.prod(s)) for s in self.param_shapes(input_shape).values()))

    def macs(self, input_shape: Any) -> int:
        return 0

    def build(self, input_shape: Any, rng: np.random.Generator | None = None, dtype: Any = None) -> None:
        """Validate ``input_shape`` and allocate parameters (He init from ``rng``; None: a generator
        seeded 0); ``dtype=None`` keeps ``self.dtype``. Containers take the same arguments."""
        if dtype is not None:
            self.dtype = np.dtype(dtype)
        self.output_shape(input_shape)  # validates
        self.input_shape = tuple(input_shape)

    # -- computation ---------------------------------------------------------------------------
    def forward(self, x: Any, train: bool = True) -> np.ndarray:
        """``x``: a batch (N, ...), or a list of batches for a ``multi_input`` layer."""
        raise NotImplementedError

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> Any:
        """dx of the last ``forward(x, train=True)`` (a list for ``multi_input`` layers), filling ``grads``.

        ``need_dx=False`` is only passed to layers with ``skips_dx`` (the others may leave it out of
        their signature); they then skip the input gradient and return None.
        """
        raise NotImplementedError

    # -- modes, dtype, caches -----------------------------------------------------------------
    #: True for merge layers (``Add``, ``Concat``) whose forward takes a list of inputs.
    multi_input: bool = False

    def train(self, mode: bool = True) -> Layer:
        """Set ``train_mode`` (containers: recursively; their ``forward(x)`` uses it). Returns self."""
        self.train_mode = bool(mode)
        return self

    def eval(self) -> Layer:
        """Same as ``train(False)``: inference (BN running statistics, no dropout, no caches)."""
        return self.train(False)

    def astype(self, dtype: Any) -> Layer:
        """Convert params and buffers to ``dtype`` (e.g. float64 for gradient checks). Returns self.

        The arrays are replaced, so optimizer state referring to the old arrays must be rebuilt.
        """
        self.dtype = np.dtype(dtype)
        for d in (self.params, self.buffers):
            for k in d:
                d[k] = d[k].astype(self.dtype)
        self.grads = {}
        return self

    def clear_cache(self) -> None:
        """Drop what ``backward`` needed (after the last backward or for inference)."""
        self.cache = None

    def forward_cache(self) -> Any:
        """What the last ``forward(x, train=True)`` kept for ``backward``; a clear error without one."""
        if self.cache is None:
            raise RuntimeError(f"{self.token()}: backward needs a forward(x, train=True) first")
        return self.cache

    # -- serialisation ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "net") -> Layer:
        """Rebuild from :meth:`config` (``cls(**config)``; containers rebuild their children too, naming
        ``where``, the position in a nested config, in their errors)."""
        return cls(**config)

    def token(self) -> str:
        return self.kind

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
