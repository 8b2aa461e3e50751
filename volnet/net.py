"""Containers: ``Sequential`` (a stack, the notes' ``INPUT -> CONV -> RELU -> POOL -> FC``) and ``Graph``
(a DAG of named nodes with the merge layers ``Add`` (ResNet's residual sum) and ``Concat`` (GoogLeNet's
channel concatenation)).

Both are :class:`~volnet.layers.base.Layer` s, so they nest (a ResNet block is a ``Graph`` inside a
``Sequential``). Parameters are exposed as flat dicts with dotted names (``conv1.w``, ``block1.conv2.b``)
that reference the layers' own arrays, so an optimizer updating ``net.params[k]`` in place updates the
layer. ``net.grads`` is collected afresh from the layers on every access (after each ``backward``).

>>> from volnet.layers import Conv, FC, Pool, ReLU
>>> net = Sequential([Conv(8, 3, pad=1), ReLU(), Pool(2), FC(10)], input_shape=(3, 8, 8))
>>> net.spec()
'INPUT [8x8x3] -> CONV3-8 -> RELU -> POOL2 -> FC-10'
>>> sorted(net.params)
['conv1.b', 'conv1.w', 'fc1.b', 'fc1.w']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from volnet.errors import ShapeError, VolnetError
from volnet.layers import ReLU, Softmax
from volnet.layers._common import shape_str
from volnet.layers.base import InShape, Layer, Shape
from volnet.registry import layer_from_config, layer_to_config, layer_types, register
from volnet.registry import short as _short

__all__ = ["Add", "Concat", "Container", "Graph", "Sequential", "layer_from_config", "layer_to_config",
           "layer_types"]
Row = tuple[str, Layer, InShape, Shape]  # layer_shapes(): (dotted name, leaf, input shape, output shape)
C = TypeVar("C", bound="Container")


# --------------------------------------------------------------------------- merge layers


class Add(Layer):
    """ADD: elementwise sum of its inputs (ResNet's residual connection y = F(x) + x).

    All inputs must have the same shape (else ShapeError: use a 1x1 CONV projection on the shortcut).
    Backward hands dout unchanged to every input. No params; macs 0.

    See: ``torch.add`` / ``a + b`` in a ResNet block.
    """

    kind = "ADD"
    multi_input = True

    def output_shape(self, input_shape: Any) -> Shape:
        shapes = _shape_list(input_shape, self.token())
        first = shapes[0]
        for s in shapes[1:]:
            if s != first:
                raise ShapeError(
                    f"{self.token()}: input shapes differ: {shape_str(shapes)}; a residual sum needs equal "
                    f"shapes: give the shortcut a 1x1 CONV (projection, with stride) or pad the depth"
                )
        return first

    def forward(self, x: Any, train: bool = True) -> np.ndarray:
        xs = list(x)
        out = xs[0] + xs[1] if len(xs) > 1 else xs[0].copy()
        for xi in xs[2:]:
            out += xi
        self.cache = len(xs) if train else None
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> list[np.ndarray]:
        return [dout] * int(self.forward_cache())


class Concat(Layer):
    """CONCAT: concatenate the inputs along the channel axis (D); spatial sizes must agree.

    (D1, H, W), (D2, H, W), ... -> (D1 + D2 + ..., H, W) (GoogLeNet's Inception output); 1-D feature
    vectors concatenate too. Backward splits dout along the channels. No params; macs 0.

    See: ``torch.cat(xs, dim=1)``.
    """

    kind = "CONCAT"
    multi_input = True

    def output_shape(self, input_shape: Any) -> Shape:
        shapes = _shape_list(input_shape, self.token())
        rest = shapes[0][1:]
        for s in shapes:
            if len(s) != len(shapes[0]) or s[1:] != rest:
                raise ShapeError(
                    f"{self.token()}: inputs {shape_str(shapes)} differ in more than the depth; channel "
                    "concatenation needs equal W x H: use size-preserving padding (P = (F - 1)/2) in each "
                    "branch"
                )
        return (sum(s[0] for s in shapes), *rest)

    def forward(self, x: Any, train: bool = True) -> np.ndarray:
        xs = list(x)
        out = np.concatenate(xs, axis=1)
        self.cache = [int(a.shape[1]) for a in xs] if train else None
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> list[np.ndarray]:
        return np.split(dout, np.cumsum(self.forward_cache())[:-1], axis=1)


def _shape_list(input_shape: Any, what: str) -> list[Shape]:
    if not isinstance(input_shape, (list, tuple)) or not input_shape or not all(
        isinstance(s, (list, tuple)) for s in input_shape
    ):
        raise ShapeError(
            f"{what}: expects a list of input shapes (one per incoming node), got {input_shape!r}"
        )
    return [tuple(int(v) for v in s) for s in input_shape]


# --------------------------------------------------------------------------- helpers


def _run_child(name: str, layer: Layer, x: Any, train: bool, kept: dict[str, np.ndarray],
               sub: dict[str, list[str]]) -> Any:
    """Forward one child; record its output (or its kept inner outputs) in ``kept``."""
    if name in sub:
        out, inner = layer.forward(x, train, keep=sub[name])  # type: ignore[call-arg]
        kept.update({f"{name}.{k}": v for k, v in inner.items()})
    else:
        out = layer.forward(x, train)
    if name in kept:
        kept[name] = np.array(out, order="C", copy=True)  # later layers may work in place (RELU)
    return out


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "." in name or name == "input" or name.strip() != name:
        raise VolnetError(
            "layer name must be a non-empty string without dots or spaces at the ends, not 'input'; "
            f"got {name!r}"
        )
    return name


def _zero_grads(layer: Layer) -> None:
    """Zero gradients for a layer that received no gradient (a node that does not reach the output)."""
    if isinstance(layer, Container):
        for _, child in layer.children():
            _zero_grads(child)
    else:
        layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}


# --------------------------------------------------------------------------- containers


class Container(Layer):
    """What ``Sequential`` and ``Graph`` share: flat dotted params, modes, dtype, predict, save, spec."""

    kind = "CONTAINER"
    skips_dx = True

    def __init__(self, input_shape: Shape | None = None, seed: int = 0) -> None:
        # No Layer.__init__: params/grads/buffers are views of the children (properties below).
        self.input_shape: Shape | None = None if input_shape is None else tuple(int(v) for v in input_shape)
        self.train_mode = True
        self.dtype = np.dtype(np.float32)
        self.cache = None
        self.seed = int(seed)
        self._built = False

    # -- children (subclasses) -------------------------------------------------------------------
    def children(self) -> list[tuple[str, Layer]]:
        """(name, layer) of the direct children, in execution order."""
        raise NotImplementedError

    def edges(self) -> list[tuple[str, Layer, list[str]]]:
        """(name, layer, input names) of the direct children in execution order (``"input"``: the net's
        input); what shape tracing and building walk, for a stack and a DAG alike."""
        raise NotImplementedError

    def _output_name(self) -> str:
        raise NotImplementedError

    def _walk(self, input_shape: Any, visit: Callable[[str, Layer, InShape], Shape]) -> Shape:
        """``visit(name, layer, its input shape) -> its output shape`` for every child in order; the net's
        output shape. A ShapeError is raised again naming the child's dotted path."""
        shapes: dict[str, Shape] = {"input": tuple(input_shape)}
        for name, layer, inputs in self.edges():
            s_in: InShape = [shapes[i] for i in inputs] if layer.multi_input else shapes[inputs[0]]
            try:
                shapes[name] = tuple(visit(name, layer, s_in))
            except ShapeError as e:
                raise e.at(name) from None
        return shapes[self._output_name()]

    def _trace(self, input_shape: Any, prefix: str) -> tuple[list[Row], Shape]:
        rows: list[Row] = []

        def visit(name: str, layer: Layer, s_in: InShape) -> Shape:
            if isinstance(layer, Container):
                sub, out = layer._trace(s_in, f"{prefix}{name}.")
                rows.extend(sub)
                return out
            out = layer.output_shape(s_in)
            rows.append((f"{prefix}{name}", layer, s_in, out))
            return out

        return rows, self._walk(input_shape, visit)

    def _build_children(self, input_shape: Shape, rng: np.random.Generator) -> None:
        def visit(name: str, layer: Layer, s_in: InShape) -> Shape:
            layer.build(s_in, rng, self.dtype)
            return layer.output_shape(s_in)

        self._walk(input_shape, visit)

    @property
    def layers(self) -> list[Layer]:
        """The direct children, in execution order."""
        return [layer for _, layer in self.children()]

    def layer_names(self) -> list[str]:
        """Every name :meth:`forward`'s ``keep`` accepts: the children and, dotted, what is inside nested
        containers."""
        return [n for n, _ in self.named_layers(leaves_only=False)]

    def check_keep(self, keep: Sequence[str]) -> list[str]:
        """``keep`` as a list, or a VolnetError naming the unknown names and listing the valid ones."""
        names = self.layer_names()
        bad = [k for k in keep if k not in names]
        if bad:
            raise VolnetError(f"unknown layer name{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; "
                              f"this net's layers: {', '.join(names)}")
        return list(keep)

    def _keep_plan(self, keep: Sequence[str] | None) -> tuple[dict[str, Any], dict[str, list[str]]]:
        kept: dict[str, Any] = {}
        sub: dict[str, list[str]] = {}
        for k in self.check_keep(keep) if keep is not None else []:
            head, _, rest = k.partition(".")
            if rest:
                sub.setdefault(head, []).append(rest)
            else:
                kept[k] = None
        return kept, sub

    def named_layers(self, prefix: str = "", leaves_only: bool = True) -> Iterator[tuple[str, Layer]]:
        """(dotted name, layer) depth-first; containers themselves too when ``leaves_only=False``."""
        for name, layer in self.children():
            full = f"{prefix}{name}"
            if isinstance(layer, Container):
                if not leaves_only:
                    yield full, layer
                yield from layer.named_layers(full + ".", leaves_only)
            else:
                yield full, layer

    # -- flat parameter views ----------------------------------------------------------------------
    def _flat(self, attr: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, layer in self.children():
            for k, v in getattr(layer, attr).items():
                out[f"{name}.{k}"] = v
        return out

    def _not_settable(self, attr: str) -> None:
        raise VolnetError(f"{type(self).__name__}.{attr} is a view of its layers' arrays; set them on the "
                          f"layers (or update net.{attr}[name] in place)")

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Trainable arrays by dotted name (the layers' own arrays: update in place)."""
        return self._flat("params")

    @params.setter
    def params(self, value: dict[str, np.ndarray]) -> None:
        self._not_settable("params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Gradients of the last backward by dotted name (same keys as ``params``)."""
        return self._flat("grads")

    @grads.setter
    def grads(self, value: dict[str, np.ndarray]) -> None:
        self._not_settable("grads")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trained saved state by dotted name (BN ``running_mean``/``running_var``)."""
        return self._flat("buffers")

    @buffers.setter
    def buffers(self, value: dict[str, np.ndarray]) -> None:
        self._not_settable("buffers")

    # -- shapes ----------------------------------------------------------------------------------
    def layer_shapes(self, input_shape: Shape | None = None) -> list[Row]:
        """(dotted name, leaf layer, input shape, output shape) for every leaf, depth first.

        A merge layer's input shape is the list of its inputs' shapes.
        """
        return self._trace(self._shape_or_default(input_shape), "")[0]

    def output_shape(self, input_shape: Shape) -> Shape:
        return self._trace(tuple(input_shape), "")[1]

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        out: dict[str, Shape] = {}
        for name, layer, s_in, _ in self._trace(tuple(input_shape), "")[0]:
            for k, s in layer.param_shapes(s_in).items():
                out[f"{name}.{k}"] = s
        return out

    def macs(self, input_shape: Shape | None = None) -> int:
        """Multiply-adds per sample, summed over the leaves (CONV/LOCAL/FC; others count 0)."""
        return sum(int(layer.macs(s_in)) for _, layer, s_in, _ in self.layer_shapes(input_shape))

    def num_params(self, input_shape: Shape | None = None) -> int:
        """Trainable numbers (allocated ones, or what ``input_shape`` would allocate)."""
        if input_shape is None and not self._built and self.input_shape is not None:
            input_shape = self.input_shape
        if input_shape is None:
            return int(sum(int(v.size) for v in self.params.values()))
        return int(sum(int(np.prod(s)) for s in self.param_shapes(input_shape).values()))

    def _shape_or_default(self, input_shape: Shape | None) -> Shape:
        if input_shape is None:
            if self.input_shape is None:
                raise ShapeError(
                    f"{type(self).__name__}: no input shape: pass one or build(input_shape) first"
                )
            return self.input_shape
        return tuple(int(v) for v in input_shape)

    # -- building ------------------------------------------------------------------------------
    def build(self, input_shape: Any, rng: np.random.Generator | int | None = None,
              dtype: Any = None) -> None:
        """Check shapes through the whole net and allocate every parameter (He init): the Layer contract.

        ``rng``: a Generator (a parent container passes its own), an int seed, or None (the constructor's
        seed, 0); ``dtype``: float32 unless given. Raises ShapeError naming the first layer that does not
        fit. Idempotent: layers already built keep their parameters.
        """
        if dtype is not None and np.dtype(dtype) != self.dtype:
            self.astype(dtype)
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(self.seed if rng is None else int(rng))
        input_shape = tuple(int(v) for v in input_shape)
        self._build_children(input_shape, rng)
        self.input_shape = input_shape
        self._built = True

    def _prepare(self, x: np.ndarray) -> None:
        shape = tuple(int(v) for v in np.shape(x)[1:])
        if not self._built:
            if self.input_shape is not None and np.ndim(x) == len(self.input_shape):
                raise ShapeError(
                    f"{type(self).__name__}: input has shape {np.shape(x)} = one sample of "
                    f"{shape_str(self.input_shape)}; add the batch axis with x[None]"
                )
            self.build(shape)
        elif shape != self.input_shape:
            if self.input_shape is not None and tuple(np.shape(x)) == self.input_shape:
                raise ShapeError(
                    f"{type(self).__name__}: input has shape {np.shape(x)} = one sample; add the batch axis "
                    f"with x[None]"
                )
            self.output_shape(shape)  # names the layer that does not fit this input

    # -- views ---------------------------------------------------------------------------------
    def until(self, name: str) -> Container:
        """A view of the net ending with its child ``name`` (its output is the net's output): the same
        layer objects (training the view trains the net), built when the net is."""
        raise NotImplementedError

    def output_child(self) -> tuple[str, Layer] | None:
        """(name, layer) of the child producing the net's output (None for an empty net)."""
        raise NotImplementedError

    def without_softmax(self) -> Container:
        """The net up to its class scores: :meth:`until` the input of a trailing SOFTMAX, or the net
        itself when it does not end in one (what the softmax loss and the evaluation take)."""
        last = self.output_child()
        if last is None or not isinstance(last[1], Softmax):
            return self
        return self.until(self._input_of(last[0]))

    def _input_of(self, name: str) -> str:
        raise NotImplementedError

    def _view_of(self, view: C) -> C:
        """``view`` (a container of some of this net's children) in this net's build state."""
        view.dtype, view.train_mode, view.seed = self.dtype, self.train_mode, self.seed
        if self._built and self.input_shape is not None:
            view.input_shape, view._built = self.input_shape, True
        return view

    # -- modes, dtype, caches ------------------------------------------------------------------
    def train(self, mode: bool = True) -> Container:
        self.train_mode = bool(mode)
        for _, layer in self.children():
            layer.train(mode)
        return self

    def eval(self) -> Container:
        return self.train(False)

    def astype(self, dtype: Any) -> Container:
        """Convert every param and buffer (e.g. ``net.astype(np.float64)`` for gradient checks)."""
        self.dtype = np.dtype(dtype)
        for _, layer in self.children():
            layer.astype(dtype)
        return self

    def clear_cache(self) -> None:
        for _, layer in self.children():
            layer.clear_cache()

    def _mode(self, train: bool | None) -> bool:
        return self.train_mode if train is None else bool(train)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Scores for x in batches of ``batch_size``, inference mode (train=False), no caches kept."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        x = np.asarray(x)
        self._prepare(x[:1] if len(x) else x)
        outs = [np.ascontiguousarray(self.forward(x[i : i + batch_size], train=False))
                for i in range(0, len(x), batch_size)]
        self.clear_cache()
        if not outs:
            return np.zeros((0, *self.output_shape(tuple(x.shape[1:]))), dtype=self.dtype)
        return np.concatenate(outs)

    # -- random state (dropout) -------------------------------------------------------------------
    def rng_states(self) -> dict[str, Any]:
        """JSON-able random states of the layers that have one (Dropout), by dotted name."""
        return {name: layer.rng_state() for name, layer in self.named_layers() if hasattr(layer, "rng_state")}

    def set_rng_states(self, states: dict[str, Any]) -> None:
        """Restore :meth:`rng_states` (bit-identical dropout masks after resuming)."""
        layers = dict(self.named_layers())
        for name, state in states.items():
            setter = getattr(layers.get(name), "set_rng_state", None)
            if setter is None:
                raise VolnetError(f"rng state for {name!r}: no such dropout layer in this net")
            setter(state)

    # -- notation and files ----------------------------------------------------------------------
    def spec(self, input_shape: Shape | None = None) -> str:
        """The net in the notes' notation: ``INPUT [WxHxD] -> CONV3-64 -> RELU -> ...``."""
        shape = input_shape if input_shape is not None else self.input_shape
        body = self._spec_body()
        return body if shape is None else f"INPUT {shape_str(tuple(shape))} -> {body}"

    def _spec_body(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        """``Sequential('INPUT [32x32x3] -> CONV3-8 -> ...')  # 21,298 parameters (21.3K)``."""
        text = f"{type(self).__name__}({self.spec()!r})"
        if self.input_shape is None:
            return text
        from volnet.summary import format_count

        n = self.num_params()
        return f"{text}  # {n:,} parameters ({format_count(n)})"

    def _repr_html_(self) -> str:
        """In a notebook: the type, parameter count and spec, then the summary table."""
        import html

        from volnet.summary import format_count, summary

        spec = html.escape(self.spec())
        if self.input_shape is None:
            return f"<p><b>{type(self).__name__}</b> (no input shape yet)</p><pre>{spec}</pre>"
        n = self.num_params()
        return (f"<p><b>{type(self).__name__}</b>: {n:,} parameters ({format_count(n)})</p>"
                f"<pre style=\"white-space:pre-wrap\">{spec}</pre>\n{summary(self)._repr_html_()}")

    def save(self, path: str) -> None:
        """Write the model directory (``model.json`` + ``weights.npz``) atomically; see :mod:`volnet.io`."""
        from volnet.io import save

        save(self, path)


class Sequential(Container):
    """A stack of layers: ``Sequential(layers, input_shape=None, seed=0)``.

    ``layers``: Layers or ``(name, Layer)`` pairs (or ``{"name", "type", "config"}`` dicts from
    :meth:`config`). Default names are the lower-case kind plus a per-kind counter: ``conv1, relu1,
    pool1, conv2, ..., fc1``. With ``input_shape`` the net is built at once (He init from ``seed``);
    otherwise at the first forward from the input's shape.

    See: ``torch.nn.Sequential``.
    """

    kind = "BLOCK"

    def __init__(self, layers: Iterable[Any] = (), input_shape: Shape | None = None, seed: int = 0) -> None:
        super().__init__(input_shape, seed)
        self._items: list[tuple[str, Layer]] = []
        self._names: set[str] = set()  # of _items, so appending is O(1) (a 100k-layer net builds linearly)
        items: list[tuple[str | None, Layer]] = []
        for i, item in enumerate(layers):
            if isinstance(item, Layer):
                items.append((None, item))
            elif isinstance(item, dict):
                items.append((item.get("name"), layer_from_config(item, where=f"layers[{i}]")))
            elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Layer):
                items.append((item[0], item[1]))
            else:
                raise VolnetError(
                    f"Sequential: layers[{i}] must be a Layer or a (name, Layer) pair, got {_short(item)}"
                )
        taken = {n for n, _ in items if n is not None}
        counters: dict[str, int] = {}
        for name, layer in items:
            if name is None:
                base = layer.kind.lower()
                while True:
                    counters[base] = counters.get(base, 0) + 1
                    name = f"{base}{counters[base]}"
                    if name not in taken:
                        break
                taken.add(name)
            self._append(name, layer)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def _append(self, name: str, layer: Layer) -> None:
        _check_name(name)
        if name in self._names:
            raise VolnetError(f"Sequential: duplicate layer name {name!r}")
        if layer.multi_input:
            raise VolnetError(f"Sequential: {layer.token()} merges several inputs; use it inside a Graph")
        self._items.append((name, layer))
        self._names.add(name)

    def add(self, layer: Layer, name: str | None = None) -> str:
        """Append a layer (default name: kind + counter); returns its name. The net rebuilds lazily."""
        if name is None:
            base, i = layer.kind.lower(), 1
            while f"{base}{i}" in self._names:
                i += 1
            name = f"{base}{i}"
        self._append(name, layer)
        self._built = False
        return name

    def children(self) -> list[tuple[str, Layer]]:
        return list(self._items)

    def replace(self, name: str, layer: Layer) -> Layer:
        """Swap the child ``name`` for ``layer`` (same position); returns the old layer.

        Used for fine-tuning (a new head). The new layer must fit the same input; call ``build`` (or
        just run a forward) to check the shapes through the whole net again.
        """
        for i, (n, old) in enumerate(self._items):
            if n == name:
                self._items[i] = (name, layer)
                self._built = False
                return old
        raise VolnetError(f"Sequential: no layer {name!r}; layers: {', '.join(n for n, _ in self._items)}")

    def until(self, name: str) -> Sequential:
        names = [n for n, _ in self._items]
        if name not in names:
            raise VolnetError(f"Sequential: no layer {name!r}; layers: {', '.join(names)}")
        return self._view_of(Sequential(self._items[:names.index(name) + 1]))

    def output_child(self) -> tuple[str, Layer] | None:
        return self._items[-1] if self._items else None

    def _input_of(self, name: str) -> str:
        i = [n for n, _ in self._items].index(name)
        if i == 0:
            raise VolnetError("Sequential: a net of only a SOFTMAX has no class scores before it")
        return self._items[i - 1][0]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, key: int | str) -> Layer:
        if isinstance(key, str):
            for n, layer in self._items:
                if n == key:
                    return layer
            raise KeyError(key)
        return self._items[key][1]

    def edges(self) -> list[tuple[str, Layer, list[str]]]:
        names = ["input"] + [n for n, _ in self._items]
        return [(n, layer, [prev]) for (n, layer), prev in zip(self._items, names)]

    def _output_name(self) -> str:
        return self._items[-1][0] if self._items else "input"

    def _build_children(self, input_shape: Shape, rng: np.random.Generator) -> None:
        super()._build_children(input_shape, rng)
        fresh = False  # the caller's array is never overwritten
        for _, layer in self._items:
            if isinstance(layer, ReLU):  # in place where safe: saves an activation-sized copy
                layer.auto_inplace = fresh
            fresh = layer.fresh_output

    def forward(self, x: Any, train: bool | None = None, keep: Sequence[str] | None = None) -> Any:
        """Run every layer in order; ``train=None`` uses the mode set by ``train()``/``eval()``.

        ``keep``: layer names (dotted inside nested containers) whose outputs to return as well: the
        result is then ``(out, {name: activation})`` (see :meth:`Container.check_keep`)."""
        train = self._mode(train)
        self._prepare(x)
        kept, sub = self._keep_plan(keep)
        for name, layer in self._items:
            x = _run_child(name, layer, x, train, kept, sub)
        return x if keep is None else (x, kept)

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Backpropagate through the layers in reverse; fills every layer's grads; returns dx.

        ``need_dx=False`` (the trainer's call: nothing needs the gradient of the images) lets the first
        layer skip its input gradient when it can (``skips_dx``); the result is then None. Each layer's
        cache is freed once its backward has run (one backward per forward; the memory ledger counts
        on it, :mod:`volnet.memory`).
        """
        for i in range(len(self._items) - 1, -1, -1):
            layer = self._items[i][1]
            if i == 0 and not need_dx and layer.skips_dx:
                layer.backward(dout, need_dx=False)
                layer.clear_cache()
                return None
            dout = layer.backward(dout)
            layer.clear_cache()  # consumed: what it kept for backward is freed as backward moves on
        return dout if need_dx else None

    def config(self) -> dict[str, Any]:
        return {"layers": [{"name": n, **layer_to_config(layer)} for n, layer in self._items]}

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "net") -> Sequential:
        layers = config.get("layers")
        if not isinstance(layers, list):
            raise VolnetError(f"{where}: Sequential config needs a \"layers\" list")
        extra = set(config) - {"layers", "input_shape", "seed"}
        if extra:
            raise VolnetError(f"{where}: unexpected Sequential config keys {sorted(extra)}")
        items = []
        for i, d in enumerate(layers):
            if not isinstance(d, dict) or not isinstance(d.get("name"), str):
                raise VolnetError(
                    f"{where}.layers[{i}]: expected {{\"name\", \"type\", \"config\"}}, got {_short(d)}"
                )
            items.append((d["name"], layer_from_config(d, where=f"{where}.layers[{i}] ({d['name']})")))
        return cls(items, config.get("input_shape"), config.get("seed", 0))

    def token(self) -> str:
        return f"[{self._spec_body()}]"

    def _spec_body(self) -> str:
        return " -> ".join(layer.token() for _, layer in self._items)


class Graph(Container):
    """A DAG of named nodes: ``g.add(name, layer, inputs=[...])``; the graph input is named ``"input"``.

    ``inputs`` defaults to the previously added node (``"input"`` for the first); inputs must already
    exist, so insertion order is a topological order. Merge layers (``Add``, ``Concat``) take several
    inputs, other layers exactly one. The output is the last added node unless ``g.output = name``.
    Backward accumulates (sums) the gradients of a node that feeds several consumers.

    >>> from volnet.layers import Conv, ReLU
    >>> g = Graph()
    >>> _ = g.add("conv1", Conv(4, 3, pad=1), ["input"]); _ = g.add("relu1", ReLU())
    >>> _ = g.add("sum", Add(), ["relu1", "input"]); g.build((4, 8, 8)); g.output_shape((4, 8, 8))
    (4, 8, 8)
    """

    kind = "GRAPH"

    def __init__(
        self,
        nodes: Iterable[Any] = (),
        output: str | None = None,
        input_shape: Shape | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(input_shape, seed)
        self._nodes: dict[str, tuple[Layer, list[str]]] = {}
        self._output: str | None = None
        for i, n in enumerate(nodes):
            if isinstance(n, dict):
                layer = layer_from_config(n, where=f"nodes[{i}]")
                name = n.get("name")
                if not isinstance(name, str):
                    raise VolnetError(f"Graph: nodes[{i}] needs a \"name\" string, got {_short(name)}")
                self.add(name, layer, n.get("inputs"))
            elif isinstance(n, (tuple, list)) and len(n) in (2, 3):
                self.add(*n)
            else:
                raise VolnetError(f"Graph: nodes[{i}] must be (name, layer[, inputs]), got {_short(n)}")
        if output is not None:
            self.output = output
        if self.input_shape is not None and self._nodes:
            self.build(self.input_shape)

    def add(self, name: str, layer: Layer, inputs: str | list[str] | None = None) -> str:
        """Add node ``name`` computing ``layer(inputs)``; returns the name (for chaining)."""
        _check_name(name)
        if name in self._nodes:
            raise VolnetError(f"Graph: duplicate node name {name!r}")
        if not isinstance(layer, Layer):
            raise VolnetError(f"Graph: node {name!r} needs a Layer, got {_short(layer)}")
        if inputs is None:
            inputs = [next(reversed(self._nodes))] if self._nodes else ["input"]
        elif isinstance(inputs, str):
            inputs = [inputs]
        inputs = list(inputs)
        for i in inputs:
            if i != "input" and i not in self._nodes:
                raise VolnetError(
                    f"Graph: node {name!r} takes input {i!r}, which is not 'input' or an earlier node "
                    f"({', '.join(self._nodes) or 'none yet'}); add nodes in order"
                )
        if not inputs:
            raise VolnetError(f"Graph: node {name!r} has no inputs")
        if not layer.multi_input and len(inputs) != 1:
            raise VolnetError(
                f"Graph: node {name!r} ({layer.token()}) takes one input, got {inputs}; "
                "merge with Add or Concat"
            )
        self._nodes[name] = (layer, inputs)
        self._built = False
        return name

    @property
    def output(self) -> str:
        """Name of the output node (the last added unless set)."""
        if self._output is not None:
            return self._output
        if not self._nodes:
            raise VolnetError("Graph: no nodes yet; add some with g.add(name, layer, inputs)")
        return next(reversed(self._nodes))

    @output.setter
    def output(self, name: str) -> None:
        if name not in self._nodes:
            raise VolnetError(f"Graph: output {name!r} is not a node ({', '.join(self._nodes)})")
        self._output = name

    def set_output(self, name: str) -> None:
        self.output = name

    def children(self) -> list[tuple[str, Layer]]:
        return [(n, layer) for n, (layer, _) in self._nodes.items()]

    def replace(self, name: str, layer: Layer) -> Layer:
        """Swap the node ``name``'s layer for ``layer`` (same inputs and consumers); returns the old one."""
        if name not in self._nodes:
            raise VolnetError(f"Graph: no node {name!r}; nodes: {', '.join(self._nodes)}")
        old, inputs = self._nodes[name]
        self._nodes[name] = (layer, inputs)
        self._built = False
        return old

    def until(self, name: str) -> Graph:
        if name not in self._nodes:
            raise VolnetError(f"Graph: no node {name!r}; nodes: {', '.join(self._nodes)}")
        nodes = [(n, layer, inputs) for n, (layer, inputs) in self._nodes.items()]  # dead ends get zero grads
        return self._view_of(Graph(nodes, output=name))

    def output_child(self) -> tuple[str, Layer] | None:
        return (self.output, self._nodes[self.output][0]) if self._nodes else None

    def _input_of(self, name: str) -> str:
        inputs = self._nodes[name][1]
        if inputs == ["input"]:
            raise VolnetError("Graph: a SOFTMAX on the graph input has no class scores before it")
        return inputs[0]

    def inputs_of(self, name: str) -> list[str]:
        """The input names of node ``name``."""
        return list(self._nodes[name][1])

    def __getitem__(self, name: str) -> Layer:
        return self._nodes[name][0]

    def __len__(self) -> int:
        return len(self._nodes)

    def _check_inplace(self) -> None:
        uses: dict[str, int] = {}
        for _, (_, inputs) in self._nodes.items():
            for i in inputs:
                uses[i] = uses.get(i, 0) + 1
        for name, (layer, inputs) in self._nodes.items():
            if getattr(layer, "inplace", False) and uses[inputs[0]] > 1:
                raise VolnetError(
                    f"Graph: node {name!r} is an in-place {layer.token()} on {inputs[0]!r}, which other "
                    "nodes also read; use ReLU(inplace=False)"
                )

    def edges(self) -> list[tuple[str, Layer, list[str]]]:
        return [(n, layer, list(inputs)) for n, (layer, inputs) in self._nodes.items()]

    def _output_name(self) -> str:
        return self.output

    def _build_children(self, input_shape: Shape, rng: np.random.Generator) -> None:
        self._check_inplace()
        super()._build_children(input_shape, rng)

    def _last_use(self) -> dict[str, str]:
        last: dict[str, str] = {}
        for name, (_, inputs) in self._nodes.items():
            for i in inputs:
                last[i] = name
        return last

    def forward(self, x: Any, train: bool | None = None, keep: Sequence[str] | None = None) -> Any:
        """Evaluate the nodes in insertion order; values are dropped after their last consumer.
        ``keep``: as :meth:`Sequential.forward` (returns ``(out, {name: activation})``)."""
        train = self._mode(train)
        self._prepare(x)
        kept, sub = self._keep_plan(keep)
        out_name = self.output
        last = self._last_use()
        vals: dict[str, Any] = {"input": x}
        for name, (layer, inputs) in self._nodes.items():
            xin = [vals[i] for i in inputs] if layer.multi_input else vals[inputs[0]]
            vals[name] = _run_child(name, layer, xin, train, kept, sub)
            for i in set(inputs):
                if last.get(i) == name and i != out_name:
                    del vals[i]
        return vals[out_name] if keep is None else (vals[out_name], kept)

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Reverse insertion order; gradients reaching a node from several consumers are summed.

        ``need_dx=False``: nodes fed only by the graph input skip their input gradient where they can
        (``skips_dx``); the result is then None. Each node's cache is freed once its backward has run.
        """
        douts: dict[str, np.ndarray] = {self.output: dout}
        reached_input = False
        for name, (layer, inputs) in reversed(self._nodes.items()):
            d = douts.pop(name, None)
            if d is None:  # does not reach the output: no gradient flows through it
                _zero_grads(layer)
                layer.clear_cache()
                continue
            if not need_dx and layer.skips_dx and all(i == "input" for i in inputs):
                layer.backward(d, need_dx=False)
                layer.clear_cache()
                reached_input = True
                continue
            dx = layer.backward(d)
            layer.clear_cache()  # consumed: what it kept for backward is freed as backward moves on
            dxs = list(dx) if layer.multi_input else [dx]
            for i, g in zip(inputs, dxs):
                if i == "input":
                    reached_input = True
                    if not need_dx:
                        continue
                douts[i] = douts[i] + g if i in douts else g  # never in place: g may be shared (ADD)
        if not reached_input:
            raise VolnetError("Graph: the output does not depend on the input")
        return douts["input"] if need_dx else None

    def config(self) -> dict[str, Any]:
        return {
            "nodes": [{"name": n, **layer_to_config(layer), "inputs": list(inputs)}
                      for n, (layer, inputs) in self._nodes.items()],
            "output": self._output,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "net") -> Graph:
        nodes = config.get("nodes")
        if not isinstance(nodes, list):
            raise VolnetError(f"{where}: Graph config needs a \"nodes\" list")
        extra = set(config) - {"nodes", "output", "input_shape", "seed"}
        if extra:
            raise VolnetError(f"{where}: unexpected Graph config keys {sorted(extra)}")
        g = cls(seed=config.get("seed", 0))
        for i, d in enumerate(nodes):
            if not isinstance(d, dict) or not isinstance(d.get("name"), str):
                raise VolnetError(
                    f"{where}.nodes[{i}]: expected {{\"name\", \"type\", \"config\", \"inputs\"}}"
                )
            inputs = d.get("inputs")
            if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
                raise VolnetError(
                    f"{where}.nodes[{i}] ({d['name']}): \"inputs\" must be a list of node names"
                )
            g.add(d["name"], layer_from_config(d, where=f"{where}.nodes[{i}] ({d['name']})"), inputs)
        if config.get("output") is not None:
            g.output = config["output"]
        if config.get("input_shape") is not None:
            g.build(tuple(config["input_shape"]))
        return g

    def token(self) -> str:
        return f"GRAPH{{{self._spec_body()}}}"

    def _spec_body(self) -> str:
        parts = [f"{n} = {layer.token()}({', '.join(inputs)})" for n, (layer, inputs) in self._nodes.items()]
        out = f"; output {self.output}" if self._output is not None else ""
        return "; ".join(parts) + out


for _cls in (Sequential, Graph, Add, Concat):
    register(_cls)
