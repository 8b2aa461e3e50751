"""ONNX exchange: :func:`export_onnx` writes a volnet net as a standard ONNX model, :func:`import_onnx` reads
one back as a volnet :class:`~volnet.net.Sequential` (a chain) or :class:`~volnet.net.Graph` (a DAG).

Layer <-> operator (default opset 13, ``onnx.helper`` only; ``onnx`` and ``onnxruntime`` are the optional
extra ``volnet[onnx]``, imported only when used):

=================  ================================================================================
volnet             ONNX
=================  ================================================================================
CONV               ``Conv`` (kernel_shape, strides, pads, dilations; group 1)
POOL / AVGPOOL     ``MaxPool`` / ``AveragePool`` (count_include_pad=1 when padded, as PyTorch)
L2POOL             ``LpPool`` with p=2
GAP                ``GlobalAveragePool``
FC                 ``Gemm`` (transB=1; w is (out, in) as PyTorch), after a ``Flatten`` on volumes
RELU, SOFTMAX      ``Relu``, ``Softmax`` (axis 1)
LRN                ``LRN`` (odd sizes: ONNX and PyTorch centre even windows differently)
BN                 ``BatchNormalization`` (inference form: running mean and variance)
DROPOUT, FLATTEN   ``Dropout`` (ratio), ``Flatten`` (axis 1)
ADD, CONCAT        ``Add`` (chained for more than 2 inputs; ``Sum`` is read too), ``Concat`` (axis 1)
=================  ================================================================================

``fit`` (the notes' non-integer (W - F + 2P)/S + 1): ``floor`` is ONNX's own rounding with symmetric pads
[P, P, P, P]; ``ceil`` is written as explicit extra end padding (pads [P, P, P + e, P + e], where the last
window ends), which means the same for CONV (zeros), max pooling (padding never wins) and L2 pooling (zeros);
an average pool with ``ceil`` uses ``ceil_mode=1`` instead, so that the extra region is not counted.
On import ``ceil_mode=1`` maps to ``fit="ceil"``, asymmetric end pads to ``ceil`` or ``floor`` when one of
them gives the same windows, else a ModelFileError.

Preprocessing and class names (a file that describes itself): given the run's normaliser (the per-channel
``mean``/``std`` of ``trainer.json``), the exporter puts it **in the graph**, as ``Sub`` (``normalize.mean``)
and ``Div`` (``normalize.std``) nodes right after ``input``, so that any runtime (ONNX Runtime, OpenCV,
a browser) fed [0, 1] pixels gets the run's answers without knowing anything about volnet; nodes, not only
metadata, because a runtime ignores metadata, and a model whose normalisation is lost answers confidently
and wrongly. The same facts also go into ``metadata_props`` (``volnet.normalizer``, JSON ``{"mean": [...],
"std": [...]}``; ``volnet.classes``, a JSON list of names; ``volnet.spec``), for people and tools reading
the file. :func:`read_onnx` turns the leading ``Sub``/``Div`` (or ``Mul``) on the input back into a
:class:`~volnet.data.Normalizer` (the nodes are the truth: a file edited by another tool still imports
right) and reads the class names from the metadata; :func:`import_onnx` keeps such nodes inside the net
(as a per-channel affine BN layer), so its net alone computes what the file computes.

PyTorch's exporters (``torch.onnx.export`` with ``dynamo=True``, opset 18+, and ``dynamo=False``, the
TorchScript exporter, opsets 13-20) are read too: ``ReduceMean`` over the spatial axes is GAP,
``Reshape``/``Flatten``/``Squeeze`` to (N, -1) a flatten, ``MatMul`` by a constant (+ ``Add`` of a
constant) an FC, ``BatchNormalization`` either standing or folded into the ``Conv`` weights, per-channel
``Add``/``Sub``/``Mul``/``Div`` by constants an affine BN layer, ``Identity`` an alias; any node whose inputs
are all constants (the shape arithmetic ``Shape``/``Gather``/``Unsqueeze``/``Concat``/``Constant``/``Cast``
... that computes a ``Reshape`` target) is evaluated at import time with ``onnx.reference``.

An operator volnet has no layer for raises :class:`volnet.ModelFileError` with one line naming the op type,
the node and the nearest supported rewrite, e.g. ``ONNX node 'leaky_7' (op LeakyRelu) is not supported by
volnet; nearest supported rewrite: nn.ReLU (op Relu), volnet has no negative slope``.

See: ``torch.onnx.export``; the operator reference https://onnx.ai/onnx/operators/.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from volnet.errors import ModelFileError, VolnetError
from volnet.layers import (
    FC,
    LRN,
    BatchNorm,
    Conv,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    Pool,
    ReLU,
    Softmax,
)
from volnet.onnx_check import spatial_attrs
from volnet.ops.sizes import output_size, padding_for
from volnet.validate import check_weight_dtype, finite_or_raise

MIN_OPSET = 13
SUPPORTED_OPS = (
    "Conv", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "ReduceMean", "Gemm", "MatMul", "Relu",
    "LRN", "BatchNormalization", "Add", "Sum", "Sub", "Mul", "Div", "Concat", "Flatten", "Reshape", "Squeeze",
    "Dropout", "Softmax", "Identity", "Constant", "Shape", "Cast", "CastLike",
)
# the nearest supported rewrite of an operator volnet has no layer for (op type -> advice)
REWRITES = {
    **dict.fromkeys(("LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "Tanh", "HardSigmoid",
                     "HardSwish", "Softplus", "Softsign", "Mish", "Clip"),
                    "nn.ReLU (op Relu); volnet's only activation is the notes' ReLU"),
    "GlobalMaxPool": "nn.AdaptiveAvgPool2d(1) (op GlobalAveragePool), or nn.MaxPool2d with kernel = H x W",
    "ReduceMax": "nn.MaxPool2d with kernel = H x W (op MaxPool), or a mean over H, W (op ReduceMean)",
    "ReduceSum": "a mean over H, W (op ReduceMean), which is GAP",
    "Pad": "padding=P of the next nn.Conv2d / nn.MaxPool2d (op Conv/MaxPool pads)",
    "ConvTranspose": "strided nn.Conv2d (op Conv); volnet only down-samples",
    "Resize": "a fixed input size (volnet has no resampling layer)",
    "Upsample": "a fixed input size (volnet has no resampling layer)",
    "InstanceNormalization": "nn.BatchNorm2d (op BatchNormalization)",
    "LayerNormalization": "nn.BatchNorm2d (op BatchNormalization)",
    "GroupNormalization": "nn.BatchNorm2d (op BatchNormalization)",
    "Transpose": "keep the NCHW layout (no permute between layers)",
    "Unsqueeze": "keep (N, C, H, W) volumes or (N, K) vectors; torch.flatten(x, 1) before nn.Linear",
    "Expand": "keep (N, C, H, W) volumes; broadcast with constants only",
    "Split": "one nn.Conv2d per branch, torch.cat of branches (op Concat)",
    "Slice": "one nn.Conv2d per branch, torch.cat of branches (op Concat)",
    "LogSoftmax": "nn.Softmax(dim=1) (op Softmax), or no final activation (volnet adds the softmax loss)",
    "QuantizeLinear": "a float32 export (volnet has no quantized layers)",
    "DequantizeLinear": "a float32 export (volnet has no quantized layers)",
}
# placeholder for the batch size in folded shape arithmetic (Shape of a tensor with a symbolic batch N)
_BATCH = 1_000_003

Shape = tuple[int, ...]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise VolnetError(
            "ONNX support needs the optional 'onnx' package: pip install 'volnet[onnx]' (or pip install onnx)"
        ) from None
    return onnx


# =========================================================================== export


class _Exporter:
    """Collects ONNX nodes and initializers while walking the net's containers."""

    def __init__(self, onnx: Any, shapes: dict[str, Any], dtype: np.dtype) -> None:
        self.onnx = onnx
        self.h = onnx.helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.shapes = shapes  # dotted leaf name -> per-sample input shape
        self.dtype = dtype

    def init(self, name: str, a: np.ndarray) -> str:
        self.inits.append(self.onnx.numpy_helper.from_array(np.array(a, order="C"), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs: Any) -> str:
        self.nodes.append(self.h.make_node(op, inputs, [output], name=name, **attrs))
        return output

    # -- containers ------------------------------------------------------------------------------
    def emit(self, layer: Layer, path: str, inputs: list[str]) -> str:
        """Emit ``layer`` (dotted name ``path``, "" for the root) on ONNX tensors ``inputs``; return its
        output tensor name (leaves: their dotted name)."""
        from volnet.net import Container, Graph, Sequential

        def sub(name: str) -> str:
            return f"{path}.{name}" if path else name

        if isinstance(layer, Sequential):
            x = inputs[0]
            for name, child in layer.children():
                x = self.emit(child, sub(name), [x])
            return x
        if isinstance(layer, Graph):
            vals = {"input": inputs[0]}
            for name, child in layer.children():
                vals[name] = self.emit(child, sub(name), [vals[i] for i in layer.inputs_of(name)])
            return vals[layer.output]
        if isinstance(layer, Container):  # pragma: no cover - only two container kinds exist
            raise ModelFileError(f"ONNX export: unknown container {type(layer).__name__} at {path!r}")
        return self.leaf(layer, path, inputs)

    # -- leaves --------------------------------------------------------------------------------
    def leaf(self, layer: Layer, name: str, inputs: list[str]) -> str:
        x = inputs[0]
        s_in = self.shapes.get(name)
        if isinstance(layer, Conv):
            C, H, W = s_in
            pads = self._pads(layer, H, W, layer.dilation)
            ins = [x, self.init(f"{name}.w", layer.params["w"])]
            if layer.bias:
                ins.append(self.init(f"{name}.b", layer.params["b"]))
            return self.node("Conv", ins, name, name, kernel_shape=list(layer.F), strides=list(layer.stride),
                             pads=pads, dilations=list(layer.dilation), group=1)
        if isinstance(layer, Pool):
            C, H, W = s_in
            attrs: dict[str, Any] = {"kernel_shape": list(layer.F), "strides": list(layer.stride)}
            if layer.mode == "avg":
                if layer.fit == "ceil":
                    P = list(layer.pad)
                    attrs.update(pads=P + P, ceil_mode=1)
                else:
                    attrs["pads"] = self._pads(layer, H, W, (1, 1))
                attrs["count_include_pad"] = 1 if any(layer.pad) else 0
                return self.node("AveragePool", [x], name, name, **attrs)
            attrs["pads"] = self._pads(layer, H, W, (1, 1))
            if layer.mode == "max":
                return self.node("MaxPool", [x], name, name, **attrs)
            return self.node("LpPool", [x], name, name, p=2, **attrs)
        if isinstance(layer, GlobalAvgPool):
            return self.node("GlobalAveragePool", [x], name, name)
        if isinstance(layer, FC):
            if len(s_in) != 1:
                x = self.node("Flatten", [x], f"{name}.flatten", f"{name}.flatten", axis=1)
            ins = [x, self.init(f"{name}.w", layer.params["w"]), self.init(f"{name}.b", layer.params["b"])]
            return self.node("Gemm", ins, name, name, alpha=1.0, beta=1.0, transB=1)
        if isinstance(layer, ReLU):
            return self.node("Relu", [x], name, name)
        if isinstance(layer, Softmax):
            return self.node("Softmax", [x], name, name, axis=1)
        if isinstance(layer, Flatten):
            return self.node("Flatten", [x], name, name, axis=1)
        if isinstance(layer, Dropout):
            ratio = self.init(f"{name}.ratio", np.array(layer.p, dtype=self.dtype))
            return self.node("Dropout", [x, ratio], name, name)
        if isinstance(layer, LRN):
            if layer.size % 2 == 0:
                raise ModelFileError(
                    f"ONNX export: {name} is an LRN of even size {layer.size}; ONNX centres even windows "
                    f"differently from PyTorch/volnet: use an odd size"
                )
            return self.node("LRN", [x], name, name, size=layer.size, alpha=layer.alpha, beta=layer.beta,
                             bias=layer.k)
        if isinstance(layer, BatchNorm):
            ins = [x, self.init(f"{name}.w", layer.params["w"]), self.init(f"{name}.b", layer.params["b"]),
                   self.init(f"{name}.running_mean", layer.buffers["running_mean"]),
                   self.init(f"{name}.running_var", layer.buffers["running_var"])]
            return self.node("BatchNormalization", ins, name, name, epsilon=layer.eps,
                             momentum=1.0 - layer.momentum)
        kind = getattr(layer, "kind", "")
        if kind == "ADD":
            out = inputs[0]
            for i, other in enumerate(inputs[1:]):
                last = i == len(inputs) - 2
                out = self.node("Add", [out, other], name if last else f"{name}.{i}",
                                name if last else f"{name}.{i}")
            return out
        if kind == "CONCAT":
            return self.node("Concat", list(inputs), name, name, axis=1)
        raise ModelFileError(
            f"ONNX export: layer {name!r} ({layer.token()}) has no ONNX operator in volnet's exporter "
            f"(supported: CONV, POOL, AVGPOOL, L2POOL, GAP, FC, RELU, LRN, BN, DROPOUT, SOFTMAX, FLATTEN, "
            f"ADD, CONCAT)"
        )

    @staticmethod
    def _pads(layer: Any, H: int, W: int, dilation: tuple[int, int]) -> list[int]:
        """ONNX pads [top, left, bottom, right]; ``fit="ceil"`` adds the extra end padding explicitly."""
        (Fh, Fw), (Sh, Sw), (Ph, Pw) = layer.F, layer.stride, layer.pad
        _, t, b = padding_for(H, Fh, Sh, Ph, dilation[0], layer.fit)
        _, left, r = padding_for(W, Fw, Sw, Pw, dilation[1], layer.fit)
        if layer.fit != "ceil":
            b, r = Ph, Pw
        return [t, left, b, r]


def _norm_stats(normalizer: Any, C: int) -> tuple[list[float], list[float]]:
    """(mean, std) lists of a Normalizer or a ``{"mean": [...], "std": [...]}`` mapping, checked for C."""
    d = normalizer.to_dict() if hasattr(normalizer, "to_dict") else dict(normalizer)
    mean, std = d.get("mean"), d.get("std")
    if mean is None or std is None or len(mean) != C or len(std) != C or any(not float(v) > 0 for v in std):
        raise VolnetError(f"ONNX export: the normaliser needs {C} mean and {C} positive std values (one per "
                          f"input channel), got mean={mean}, std={std}")
    return [float(v) for v in mean], [float(v) for v in std]


def to_onnx_model(net: Layer, input_shape: Sequence[int] | None = None, opset: int = MIN_OPSET,
                  seed: int = 0, normalizer: Any = None, classes: Sequence[str] | None = None) -> Any:
    """The ``onnx.ModelProto`` of ``net`` (built first from ``input_shape`` / its own if needed).

    The graph input is ``input`` of shape (N, C, H, W) with a symbolic batch N; the output is ``output``.
    Initializers carry volnet's dotted names (``layer1.0.conv1.w``). ``normalizer`` (a
    :class:`~volnet.data.Normalizer` or ``{"mean": [...], "std": [...]}``) becomes ``Sub``/``Div`` nodes
    after the input, so the file takes [0, 1] pixels, and ``metadata_props["volnet.normalizer"]``;
    ``classes`` becomes ``metadata_props["volnet.classes"]`` (see the module docstring).
    """
    onnx = _onnx()
    from volnet.net import Container

    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise VolnetError(f"ONNX export: opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    latest = onnx.defs.onnx_opset_version()
    if opset > latest:
        raise VolnetError(f"ONNX export: opset {opset} is newer than this onnx package supports ({latest})")
    shape = tuple(int(v) for v in (input_shape if input_shape is not None else (net.input_shape or ())))
    if not shape:
        raise VolnetError("ONNX export: the net has no input shape; pass input_shape=(C, H, W)")
    if isinstance(net, Container):
        if not net.params or net.input_shape != shape:  # lazily built (zoo build=False) or another size
            net.build(shape, seed)
        rows = net.layer_shapes(shape)
    else:
        net.build(shape, np.random.default_rng(seed))
        rows = [("layer", net, shape, net.output_shape(shape))]
    dtype = np.dtype(getattr(net, "dtype", np.float32))
    elem = onnx.TensorProto.DOUBLE if dtype == np.float64 else onnx.TensorProto.FLOAT
    ex = _Exporter(onnx, {name: s_in for name, _, s_in, _ in rows}, dtype)
    x = "input"
    props: dict[str, str] = {}
    if normalizer is not None:
        C = shape[0]
        mean, std = _norm_stats(normalizer, C)
        bshape = (1, C) + (1,) * (len(shape) - 1)
        x = ex.node("Sub", [x, ex.init("normalize.mean", np.array(mean, dtype).reshape(bshape))],
                    "normalize.sub", "normalize.sub")
        x = ex.node("Div", [x, ex.init("normalize.std", np.array(std, dtype).reshape(bshape))],
                    "normalize", "normalize")
        props["volnet.normalizer"] = json.dumps({"mean": mean, "std": std})
    if classes is not None:
        names = [str(c) for c in classes]
        props["volnet.classes"] = json.dumps(names)
    if isinstance(net, Container):
        out = ex.emit(net, "", [x])
    else:
        out = ex.leaf(net, "layer", [x])
    out_shape = net.output_shape(shape)
    ex.nodes.append(onnx.helper.make_node("Identity", [out], ["output"], name="output"))
    h = onnx.helper
    graph = h.make_graph(
        ex.nodes, "volnet",
        [h.make_tensor_value_info("input", elem, ["N", *shape])],
        [h.make_tensor_value_info("output", elem, ["N", *out_shape])],
        ex.inits,
    )
    opsets = [h.make_opsetid("", opset)]
    model = h.make_model(graph, opset_imports=opsets, producer_name="volnet",
                         ir_version=h.find_min_ir_version_for(opsets))
    spec = net.spec() if hasattr(net, "spec") else ""
    if spec:
        props["volnet.spec"] = spec
    if props:
        h.set_model_props(model, dict(sorted(props.items())))
    model.graph.input[0].doc_string = (
        "pixels in [0, 1], N x C x H x W; normalised inside the graph (nodes normalize.sub, normalize)"
        if normalizer is not None else "N x C x H x W, as the net was trained on (no normaliser stored)")
    return model


def export_onnx(net: Layer, path: str | os.PathLike[str], input_shape: Sequence[int] | None = None,
                opset: int = MIN_OPSET, seed: int = 0, normalizer: Any = None,
                classes: Sequence[str] | None = None) -> None:
    """Write ``net`` as an ONNX file at ``path`` (atomically; checked with ``onnx.checker`` first).

    ``input_shape`` (C, H, W) defaults to the net's own; an unbuilt net is built (He init from ``seed``).
    ``normalizer`` and ``classes`` make the file self-describing (see :func:`to_onnx_model`).
    Raises ModelFileError naming the layer when a layer has no ONNX operator (LOCAL, even-size LRN).

    Example (a trained run: ``m = volnet.load_trained("runs/fmnist")``)::

        export_onnx(m.net, "fmnist.onnx", normalizer=m.normalizer, classes=m.classes)
    """
    from volnet.io import atomic_write_bytes

    onnx = _onnx()
    model = to_onnx_model(net, input_shape, opset, seed, normalizer, classes)
    data = model.SerializeToString()
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:  # pragma: no cover - a bug in the exporter
        raise ModelFileError(f"ONNX export produced an invalid model: {str(e).splitlines()[0]}") from None
    atomic_write_bytes(path, data)


# =========================================================================== import


def _attrs(onnx: Any, node: Any) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _safe_name(name: str, fallback: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_\-]+", "_", name).strip("_-") or fallback
    if base == "input":
        base = "input_1"
    out, i = base, 1
    while out in taken:
        i += 1
        out = f"{base}_{i}"
    taken.add(out)
    return out


#: Largest constant volnet computes while importing (values), unless an input is already larger.
MAX_FOLD_ELEMENTS = 1 << 24
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Equal", "Less", "Greater",
                "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Where", "Sum", "Mean", "BitShift"}
_UNARY = {"Cast", "CastLike", "Neg", "Abs", "Sqrt", "Reciprocal", "Exp", "Log", "Floor", "Ceil", "Round",
          "Not", "Sign", "Relu", "Sigmoid", "Tanh", "Erf", "Identity", "Clip", "Softmax", "LeakyRelu"}
_SHAPE_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Concat", "Split", "Shape",
              "Size", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "Constant",
              "ArgMax", "ArgMin", "NonZero", "Gather", "GatherElements", "Det", "Trilu"}


def _fold_size(op: str, ins: list[np.ndarray]) -> int | None:
    """Values an op's constant output holds, computed from its inputs' shapes and values before anything
    is evaluated; None for ops volnet does not fold."""
    def n(shape: Any) -> int:
        return int(np.prod([int(d) for d in shape], dtype=object))

    if op in _ELEMENTWISE:
        return n(np.broadcast_shapes(*[a.shape for a in ins]))
    if op in _UNARY:
        return ins[0].size if ins else 0
    if op == "Gather":
        return ins[0].size * max(ins[1].size, 1) if len(ins) > 1 else ins[0].size
    if op in _SHAPE_OPS:
        return sum(a.size for a in ins)
    if op in ("MatMul", "Gemm") and len(ins) >= 2 and ins[0].ndim >= 1 and ins[1].ndim >= 1:
        a, b = ins[0], ins[1]
        if op == "Gemm":
            return a.shape[-1] * b.shape[-1] if a.ndim == 2 and b.ndim == 2 else None
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        return n(batch) * (a.shape[-2] if a.ndim >= 2 else 1) * (b.shape[-1] if b.ndim >= 2 else 1)
    if op == "ConstantOfShape":
        return n(ins[0].reshape(-1)) if ins else 1
    if op == "Expand" and len(ins) == 2:
        return n(np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in ins[1].reshape(-1))))
    if op == "Tile" and len(ins) == 2:
        return ins[0].size * n(ins[1].reshape(-1))
    if op == "Range" and len(ins) == 3:
        start, limit, delta = (float(a.reshape(-1)[0]) for a in ins)
        return max(int(np.ceil((limit - start) / delta)), 0) if delta else None
    return None


class _Importer:
    """Maps ONNX nodes to volnet layers in topological order, tracking every tensor's shape."""

    def __init__(self, onnx: Any, model: Any, input_shape: Shape | None) -> None:
        self.onnx = onnx
        g = model.graph
        self.graph = g
        self.opset = max([int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")] or
                         [MIN_OPSET])
        self.consts: dict[str, np.ndarray] = {i.name: self.to_array(i) for i in g.initializer}
        real = [i for i in g.input if i.name not in self.consts]
        if len(real) != 1:
            raise ModelFileError(f"ONNX import: the graph must have one input, has {len(real)} "
                                 f"({', '.join(i.name for i in real)})")
        self.input_name = real[0].name
        tt = real[0].type.tensor_type
        self.dtype = np.dtype(np.float64) if tt.elem_type == onnx.TensorProto.DOUBLE else np.dtype(np.float32)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        # what a Reshape target's batch entry may be: copy (0), infer (-1), the file's own N, or Shape's N
        self.batch_values = {0, -1, _BATCH} | ({int(dims[0])} if dims and dims[0] else set())
        if input_shape is None:
            if len(dims) < 2 or any(d is None or not 1 <= d <= 1_000_000 for d in dims[1:]):
                raise ModelFileError(f"ONNX import: input {self.input_name!r} has shape {dims}; give the "
                                     f"per-sample shape (input_shape=(C, H, W) or --input WxHxD)")
            input_shape = tuple(int(d) for d in dims[1:])  # type: ignore[misc]
        self.input_shape: Shape = tuple(int(v) for v in input_shape)
        if len(g.output) != 1:
            raise ModelFileError(f"ONNX import: the graph must have one output, has {len(g.output)}")
        self.output_name = g.output[0].name
        self.tensor: dict[str, str] = {self.input_name: "input"}  # ONNX tensor -> volnet node
        self.shape: dict[str, Any] = {"input": self.input_shape}
        self.nodes: list[tuple[str, Layer, list[str]]] = []
        self.taken: set[str] = set()
        self.rng = np.random.default_rng(0)
        self.flat: set[str] = set()  # ONNX tensors that are flattened aliases of a volume (FC flattens)
        self.affine: set[str] = set()  # volnet nodes that are per-channel x * w + b (BN layers made here)
        self.layers: dict[str, Layer] = {}
        self.squeezed: dict[str, tuple[str, Shape]] = {}  # ONNX tensor -> (volnet node, squeezed shape)
        consumers: dict[str, list[Any]] = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        self.consumers = consumers

    # -- helpers ---------------------------------------------------------------------------------
    def to_array(self, t: Any) -> np.ndarray:
        try:
            return self.onnx.numpy_helper.to_array(t)
        except Exception as e:  # data that does not match the dims, unknown data types
            first = (str(e).splitlines() or [""])[0][:120]
            raise ModelFileError(f"ONNX tensor {t.name!r}: unreadable ({type(e).__name__}: {first})"
                                 ) from None

    def fail(self, node: Any, msg: str) -> ModelFileError:
        return ModelFileError(f"ONNX node {node.name or '(unnamed)'!r} (op {node.op_type}): {msg}")

    def const(self, node: Any, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise self.fail(node, f"{what} {name!r} must be a constant initializer")
        return self.consts[name]

    def make(self, node: Any, cls: type, *args: Any, **kwargs: Any) -> Any:
        """``cls(*args, **kwargs)`` with a bad argument reported as a ModelFileError naming the node."""
        try:
            return cls(*args, **kwargs)
        except (ValueError, TypeError) as e:
            raise self.fail(node, str(e).splitlines()[0]) from None

    def src(self, node: Any, i: int = 0) -> str:
        t = node.input[i]
        if t not in self.tensor:
            raise self.fail(node, f"input {t!r} is not produced by a supported node")
        return self.tensor[t]

    def add(self, node: Any, layer: Layer, inputs: list[str], params: dict[str, np.ndarray] | None = None,
            buffers: dict[str, np.ndarray] | None = None, suffix: str = "") -> str:
        """Add ``layer`` for ``node`` on volnet nodes ``inputs``; return its volnet name (which the node's
        first output now maps to). ``suffix`` names a second layer made for the same node."""
        name = _safe_name(node.name + suffix, node.op_type.lower() + suffix, self.taken)
        s_in = [self.shape[i] for i in inputs] if layer.multi_input else self.shape[inputs[0]]
        try:
            out = layer.output_shape(s_in)  # type: ignore[arg-type]
            if isinstance(layer, (Conv, FC, BatchNorm)):
                # compare the initializers with the shapes the node declares before allocating anything
                want = layer.param_shapes(s_in)  # type: ignore[arg-type]
                for k, v in {**(params or {}), **(buffers or {})}.items():  # real, finite numbers only
                    check_weight_dtype(np.asarray(v).dtype, f"ONNX node {node.name!r}: {k}")
                    finite_or_raise(np.asarray(v), f"ONNX node {node.name!r}: {k}")
                for k, v in (params or {}).items():
                    if tuple(want[k]) != tuple(v.shape):
                        raise self.fail(node, f"{k} has shape {v.shape}, expected {tuple(want[k])}")
                layer.params = {k: np.array(v, dtype=self.dtype) for k, v in (params or {}).items()}
                for k, v in (buffers or {}).items():
                    if tuple(v.shape) != (int(s_in[0]),):  # type: ignore[index]
                        raise self.fail(node, f"{k} has shape {v.shape}, expected ({int(s_in[0])},)")  # type: ignore[index]
                if buffers:
                    layer.buffers = {k: np.array(v, dtype=self.dtype) for k, v in buffers.items()}
                layer.build(s_in, self.rng, self.dtype)  # type: ignore[arg-type]
        except (VolnetError, ValueError) as e:
            if isinstance(e, ModelFileError):
                raise
            raise self.fail(node, str(e).splitlines()[0]) from None
        self.shape[name] = out
        self.nodes.append((name, layer, inputs))
        self.layers[name] = layer
        self.tensor[node.output[0]] = name
        return name

    def _spatial(self, node: Any, a: dict[str, Any], kernel: Sequence[int], s_in: Shape,
                 dilation: Sequence[int] = (1, 1), ceil_mode: int = 0) -> tuple[list[int], list[int], str]:
        """(stride, pad, fit) for a volnet layer from ONNX strides/pads/ceil_mode."""
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise self.fail(node, f"auto_pad={a['auto_pad']!r} is not supported; export with explicit pads")
        if len(kernel) != 2:
            raise self.fail(node, f"only 2-D kernels are supported, got kernel_shape {list(kernel)}")
        spatial_attrs({**a, "dilations": list(dilation)}, kernel,
                      f"ONNX node {node.name or '(unnamed)'!r} (op {node.op_type})")
        strides = list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if a.get("auto_pad") in (b"VALID", "VALID"):
            pads = [0, 0, 0, 0]
        begin, end = pads[:2], pads[2:]
        if ceil_mode:
            if begin != end:
                raise self.fail(node, f"ceil_mode with asymmetric pads {pads} is not supported")
            return strides, begin, "ceil"
        options = []  # per axis: the fits that give ONNX's windows
        for ax in range(2):
            L = int(s_in[1 + ax])
            F, S, D, b, e = int(kernel[ax]), int(strides[ax]), int(dilation[ax]), int(begin[ax]), int(end[ax])
            F_eff = D * (F - 1) + 1
            want = (L + b + e - F_eff) // S + 1
            ok = set()
            if e >= b:
                if e == b and (L - F_eff + 2 * b) >= 0 and (L - F_eff + 2 * b) % S == 0:
                    ok.add("strict")
                for fit in ("floor", "ceil"):
                    try:
                        if output_size(L, F, S, b, D, fit) == want:
                            ok.add(fit)
                    except VolnetError:
                        pass
            options.append(ok)
        common = options[0] & options[1]
        fit = next((f for f in ("strict", "floor", "ceil") if f in common), "")
        if not fit:
            raise self.fail(node, f"pads {pads} have no volnet equivalent (pad P on both sides, plus at most "
                                  f"the end padding of fit='ceil', the same rounding on both axes)")
        return strides, begin, fit

    # -- ops -------------------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.graph.node:
            handler = getattr(self, f"op_{node.op_type}", None)
            ins = [i for i in node.input if i]
            if node.domain in ("", "ai.onnx") and ins and all(i in self.consts for i in ins):
                self.fold(node)  # shape arithmetic, a transposed weight, ...: computed now
                continue
            if node.domain not in ("", "ai.onnx") or handler is None:
                hint = REWRITES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
                hint = hint or f"express it with the supported ops ({', '.join(SUPPORTED_OPS)})"
                raise ModelFileError(
                    f"ONNX node {node.name or '(unnamed)'!r} (op {node.op_type}) is not supported by volnet; "
                    f"nearest supported rewrite: {hint}"
                )
            try:
                handler(node, _attrs(self.onnx, node))
            except (IndexError, KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError,
                    AttributeError) as e:  # a malformed node (missing input or attribute, wrong types)
                if isinstance(e, VolnetError):
                    raise
                first = (str(e).splitlines() or [""])[0][:120]
                raise self.fail(node, f"malformed node ({type(e).__name__}: {first}); inputs "
                                      f"{list(node.input)}, attributes {[a.name for a in node.attribute]}"
                                ) from None

    def fold(self, node: Any) -> None:
        """Evaluate a node whose inputs are all constants (``onnx.reference``) into constants, once its
        output size is known to be bounded (:func:`_fold_size`): a few bytes of hostile file must not
        make volnet allocate gigabytes."""
        from onnx.reference import ReferenceEvaluator

        ins = [self.consts[i] for i in node.input if i]
        try:
            size = _fold_size(node.op_type, ins)
        except (ValueError, TypeError, OverflowError) as e:
            raise self.fail(node, f"constant inputs do not fit together ({type(e).__name__}: {e})") from None
        if size is None:
            raise self.fail(node, "volnet does not evaluate this op on constants; fold it when exporting "
                                  "(e.g. onnx-simplifier) or give it a graph input")
        limit = max([MAX_FOLD_ELEMENTS] + [a.size for a in ins])
        if size > limit:
            raise self.fail(node, f"its constant output would hold {size:,} values (limit {limit:,}); "
                                  "a damaged or hostile file?")
        try:
            ref = ReferenceEvaluator(node, opsets={"": self.opset})
            outs = ref.run(None, {i: self.consts[i] for i in node.input if i})
        except Exception as e:  # an op the reference runtime lacks, bad attributes
            raise self.fail(node, f"cannot evaluate this constant expression ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
        for name, v in zip(node.output, outs):
            if name:
                self.consts[name] = np.asarray(v)

    def consumers_of(self, tensor: str) -> list[Any]:
        return self.consumers.get(tensor, [])

    def sole_use(self, tensor: str) -> bool:
        """Whether ``tensor`` feeds exactly one node and is not the graph output (safe to rewrite)."""
        return len(self.consumers_of(tensor)) == 1 and tensor != self.output_name

    def flatten(self, node: Any, x: str, suffix: str = "") -> None:
        """A flatten of volnet node ``x`` to (N, -1): an alias when only FCs read it, else a FLATTEN."""
        out = node.output[0]
        users = self.consumers_of(out)
        if len(self.shape[x]) == 1:
            self.tensor[out] = x
        elif users and all(u.op_type in ("Gemm", "MatMul") for u in users) and out != self.output_name:
            self.tensor[out] = x  # FC flattens its input itself
            self.flat.add(out)
        else:
            self.add(node, Flatten(), [x], suffix=suffix)

    def op_Constant(self, node: Any, a: dict[str, Any]) -> None:
        if "sparse_value" in a:
            raise self.fail(node, "sparse constants are not supported; store the tensor dense ('value')")
        if "value" in a:
            self.consts[node.output[0]] = self.to_array(a["value"])
        else:
            self.fold(node)  # value_float(s), value_int(s), ...

    def op_Identity(self, node: Any, a: dict[str, Any]) -> None:
        if node.input[0] in self.consts:  # PyTorch's exporter aliases shared weights this way
            self.consts[node.output[0]] = self.consts[node.input[0]]
        else:
            self.tensor[node.output[0]] = self.src(node)

    def op_Conv(self, node: Any, a: dict[str, Any]) -> None:
        x = self.src(node)
        w = self.const(node, node.input[1], "weight")
        if int(a.get("group", 1)) != 1:
            raise self.fail(node, f"grouped convolution (group={a['group']}) is not supported")
        if w.ndim != 4:
            raise self.fail(node, f"only 2-D convolutions are supported (weight shape {w.shape})")
        b = self.const(node, node.input[2], "bias") if len(node.input) > 2 and node.input[2] else None
        kernel = list(a.get("kernel_shape", w.shape[2:]))
        if kernel != list(w.shape[2:]):
            raise self.fail(node, f"kernel_shape {kernel} does not match the weight's {list(w.shape[2:])}")
        if int(w.shape[1]) != int(self.shape[x][0]):
            raise self.fail(node, f"the weight expects {int(w.shape[1])} input channels, the input has "
                                  f"{int(self.shape[x][0])}")
        dil = list(a.get("dilations", [1, 1]))
        strides, pad, fit = self._spatial(node, a, kernel, self.shape[x], dil)
        layer = self.make(node, Conv, int(w.shape[0]), tuple(kernel), tuple(strides), tuple(pad), tuple(dil),
                          fit, bias=b is not None)
        params = {"w": w} if b is None else {"w": w, "b": b}
        self.add(node, layer, [x], params)

    def _pool(self, node: Any, a: dict[str, Any], mode: str) -> None:
        x = self.src(node)
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(node, "the Indices output of MaxPool is not supported")
        if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
            raise self.fail(node, "dilated pooling is not supported")
        kernel = list(a["kernel_shape"])
        ceil = int(a.get("ceil_mode", 0))
        strides, pad, fit = self._spatial(node, a, kernel, self.shape[x], (1, 1), ceil)
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if mode == "avg" and any(pad) and not int(a.get("count_include_pad", 0)):
            raise self.fail(node, "average pooling with padding and count_include_pad=0 is not supported "
                                  "(volnet, as PyTorch's default, counts the padding)")
        if mode == "avg" and pads[:2] != pads[2:] and int(a.get("count_include_pad", 0)):
            raise self.fail(node, f"average pooling with asymmetric pads {pads} and count_include_pad=1 is "
                                  f"not supported (the extra end padding would count in the divisor)")
        self.add(node, self.make(node, Pool, tuple(kernel), tuple(strides), mode, tuple(pad), fit), [x])

    def op_MaxPool(self, node: Any, a: dict[str, Any]) -> None:
        self._pool(node, a, "max")

    def op_AveragePool(self, node: Any, a: dict[str, Any]) -> None:
        self._pool(node, a, "avg")

    def op_LpPool(self, node: Any, a: dict[str, Any]) -> None:
        if int(a.get("p", 2)) != 2:
            raise self.fail(node, f"LpPool with p={a['p']} is not supported (volnet's L2POOL is p=2)")
        self._pool(node, a, "l2")

    def op_GlobalAveragePool(self, node: Any, a: dict[str, Any]) -> None:
        self.add(node, GlobalAvgPool(), [self.src(node)])

    def op_Relu(self, node: Any, a: dict[str, Any]) -> None:
        self.add(node, ReLU(), [self.src(node)])

    def op_Softmax(self, node: Any, a: dict[str, Any]) -> None:
        x = self.src(node)
        rank = len(self.shape[x]) + 1
        axis = int(a.get("axis", -1))
        if axis < 0:
            axis += rank
        if axis != 1:
            raise self.fail(node, f"Softmax over axis {a.get('axis', -1)} of a rank-{rank} tensor; volnet's "
                                  f"SOFTMAX is over axis 1")
        self.add(node, Softmax(), [x])

    def op_Flatten(self, node: Any, a: dict[str, Any]) -> None:
        if int(a.get("axis", 1)) != 1:
            raise self.fail(node, f"Flatten axis {a['axis']} is not supported (only axis 1)")
        self.flatten(node, self.src(node))

    def op_CastLike(self, node: Any, a: dict[str, Any]) -> None:
        if node.input[0] not in self.consts:
            raise self.fail(node, "CastLike of a computed tensor is not supported; nearest supported "
                                  "rewrite: keep one float dtype throughout (model.float())")
        self.consts[node.output[0]] = self.consts[node.input[0]].astype(self.dtype)  # the like of a tensor

    def op_Cast(self, node: Any, a: dict[str, Any]) -> None:
        elem = self.onnx.TensorProto.DOUBLE if self.dtype == np.float64 else self.onnx.TensorProto.FLOAT
        if int(a.get("to", 0)) != elem:
            raise self.fail(node, "Cast of a computed tensor to another type is not supported; nearest "
                                  "supported rewrite: keep one float dtype throughout (model.float())")
        self.tensor[node.output[0]] = self.src(node)

    def op_Shape(self, node: Any, a: dict[str, Any]) -> None:
        dims = [_BATCH, *self.shape[self.src(node)]]
        start, end = int(a.get("start", 0)), a.get("end")
        self.consts[node.output[0]] = np.array(dims[start:None if end is None else int(end)], dtype=np.int64)

    def op_Reshape(self, node: Any, a: dict[str, Any]) -> None:
        x = self.src(node)
        t = [int(v) for v in self.const(node, node.input[1], "shape").reshape(-1)]
        s = self.shape[x]
        per = int(np.prod(s))
        batch_ok = bool(t) and t[0] in self.batch_values and not (t[0] == 0 and int(a.get("allowzero", 0)))
        if batch_ok and len(t) == 2 and (t[1] == per or (t[1] == -1 and t[0] != -1)):
            self.flatten(node, x)
        elif batch_ok and t[1:] == list(s):
            self.tensor[node.output[0]] = x  # a no-op reshape
        else:
            raise self.fail(node, f"Reshape of a {list(s)} sample to {t} is not supported; nearest supported "
                                  f"rewrite: torch.flatten(x, 1) to (N, {per}) before nn.Linear")

    def axes(self, node: Any, a: dict[str, Any], rank: int, default: Sequence[int]) -> list[int]:
        """The sorted, non-negative ``axes`` of a node: the attribute (older opsets) or input 1 (newer)."""
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, node.input[1], "axes").reshape(-1).tolist()
        return sorted({int(v) + rank if int(v) < 0 else int(v) for v in (axes or default)})

    def op_Squeeze(self, node: Any, a: dict[str, Any]) -> None:
        """Squeezing the 1 x 1 of a (C, 1, 1) volume (after GAP) flattens it, in one Squeeze or two."""
        x, s = self.squeezed.get(node.input[0]) or (self.src(node), None)
        s = s or self.shape[x]
        axes = self.axes(node, a, len(s) + 1, [i for i, d in enumerate(s, start=1) if d == 1])
        kept = tuple(d for i, d in enumerate(s, start=1) if i not in axes)
        if len(self.shape[x]) == 3 and self.shape[x][1:] == (1, 1) and 1 not in axes and all(
                s[i - 1] == 1 for i in axes):
            if len(kept) == 1:
                self.flatten(node, x)
                return
            self.squeezed[node.output[0]] = (x, kept)  # (C, 1): half-way, for the next Squeeze
            return
        raise self.fail(node, f"Squeeze of axes {axes} of a {list(s)} sample is not supported; nearest "
                              f"supported rewrite: torch.flatten(x, 1) after global average pooling")

    def op_ReduceMean(self, node: Any, a: dict[str, Any]) -> None:
        x = self.src(node)
        s = self.shape[x]
        axes = self.axes(node, a, len(s) + 1, [])
        if len(s) != 3 or axes != [2, 3]:
            raise self.fail(node, f"ReduceMean over axes {axes} of a {list(s)} sample is not supported; "
                                  f"nearest supported rewrite: a mean over H, W (x.mean((2, 3)), "
                                  f"nn.AdaptiveAvgPool2d(1)), which is GAP")
        gap = self.add(node, GlobalAvgPool(), [x])
        if not int(a.get("keepdims", 1)):
            self.flatten(node, gap, suffix="_flatten")

    def op_MatMul(self, node: Any, a: dict[str, Any]) -> None:
        x = self.src(node)
        w = self.const(node, node.input[1], "weight")
        if w.ndim != 2 or (len(self.shape[x]) != 1 and node.input[0] not in self.flat):
            raise self.fail(node, f"MatMul of a {list(self.shape[x])} sample by a {list(w.shape)} constant "
                                  f"is not supported; nearest supported rewrite: nn.Linear on (N, K) inputs "
                                  f"(torch.flatten(x, 1) first)")
        n_out = int(w.shape[1])
        self.add(node, FC(n_out, int(w.shape[0])), [x], {"w": w.T, "b": np.zeros(n_out, dtype=w.dtype)})

    def op_Gemm(self, node: Any, a: dict[str, Any]) -> None:
        x = self.src(node)
        if float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0 or int(a.get("transA", 0)):
            raise self.fail(node, "only Gemm with alpha=1, beta=1, transA=0 (a fully-connected layer) is "
                                  "supported")
        w = self.const(node, node.input[1], "weight")
        if not int(a.get("transB", 0)):
            w = w.T
        n_out = int(w.shape[0])
        if len(node.input) > 2 and node.input[2]:
            b = self.const(node, node.input[2], "bias").reshape(-1)
            if b.size == 1 and n_out != 1:
                b = np.full(n_out, b.item(), dtype=w.dtype)
        else:
            b = np.zeros(n_out, dtype=w.dtype)
        self.add(node, FC(n_out, int(w.shape[1])), [x], {"w": w, "b": b})

    def op_LRN(self, node: Any, a: dict[str, Any]) -> None:
        size = int(a["size"])
        if size % 2 == 0:
            raise self.fail(node, f"LRN of even size {size}: ONNX centres it differently from volnet/PyTorch")
        layer = self.make(node, LRN, size, float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)),
                          float(a.get("bias", 1.0)))
        self.add(node, layer, [self.src(node)])

    def op_BatchNormalization(self, node: Any, a: dict[str, Any]) -> None:
        if int(a.get("training_mode", 0)) or len([o for o in node.output if o]) > 1:
            raise self.fail(node, "only inference-mode BatchNormalization (one output) is supported")
        x = self.src(node)
        scale, bias, mean, var = (self.const(node, node.input[i], n)
                                  for i, n in enumerate(("scale", "B", "mean", "var"), start=1))
        layer = self.make(node, BatchNorm, momentum=1.0 - float(a.get("momentum", 0.9)),
                          eps=float(a.get("epsilon", 1e-5)))
        self.add(node, layer, [x], {"w": scale, "b": bias}, {"running_mean": mean, "running_var": var})

    def op_Dropout(self, node: Any, a: dict[str, Any]) -> None:
        x = self.src(node)
        p = float(a.get("ratio", 0.5))
        if len(node.input) > 1 and node.input[1]:
            p = float(self.const(node, node.input[1], "ratio"))
        if len(node.input) > 2 and node.input[2]:
            t = self.consts.get(node.input[2])
            if t is None or bool(t):
                raise self.fail(node, "Dropout in training mode is not supported")
        self.add(node, self.make(node, Dropout, p), [x])

    def _merge(self, node: Any, layer: Layer) -> None:
        ins = []
        for i, t in enumerate(node.input):
            if t in self.consts:
                raise self.fail(node, f"input {t!r} is a constant; only merges of computed tensors are "
                                      f"supported")
            ins.append(self.src(node, i))
        self.add(node, layer, ins)

    def op_Add(self, node: Any, a: dict[str, Any]) -> None:
        from volnet.net import Add

        if any(t in self.consts for t in node.input):
            self._affine(node, "Add")
        else:
            self._merge(node, Add())

    def op_Sub(self, node: Any, a: dict[str, Any]) -> None:
        self._affine(node, "Sub")

    def op_Mul(self, node: Any, a: dict[str, Any]) -> None:
        self._affine(node, "Mul")

    def op_Div(self, node: Any, a: dict[str, Any]) -> None:
        self._affine(node, "Div")

    def _channel_const(self, node: Any, c: np.ndarray, s: Shape) -> np.ndarray:
        """A constant that broadcasts per channel over (N, *s): its (C,) values."""
        C = int(s[0])
        per_channel = (C,) + (1,) * (len(s) - 1)
        shape = tuple(int(d) for d in c.shape)
        while len(shape) > len(s) and shape[0] == 1:
            shape = shape[1:]
        if c.size == 1:
            return np.full(C, float(c.reshape(-1)[0]))
        if shape == per_channel:
            return c.reshape(C).astype(np.float64)
        raise self.fail(node, f"a constant of shape {list(c.shape)} on a {list(s)} sample is not "
                              f"per-channel; supported: a scalar or one value per channel "
                              f"({list(per_channel)}), as in (x - mean) / std normalisation")

    def _affine(self, node: Any, op: str) -> None:
        """x + c, x - c, c - x, x * c, c * x, x / c with per-channel constants c: a BN layer computing
        x * w + b (mean 0, variance 1), merged into the FC before it (bias) or the affine layer before it."""
        first_const = node.input[0] in self.consts
        if first_const == (node.input[1] in self.consts):
            raise self.fail(node, f"{op} of two computed tensors is not supported; nearest supported "
                                  f"rewrite: a residual sum (op Add)")
        if first_const and op == "Div":
            raise self.fail(node, "a constant divided by a tensor is not supported; nearest supported "
                                  "rewrite: multiply by a per-channel constant")
        t_in = node.input[1] if first_const else node.input[0]
        x = self.src(node, 1 if first_const else 0)
        c = self._channel_const(node, self.consts[node.input[0 if first_const else 1]], self.shape[x])
        layer = self.layers.get(x)
        if op in ("Add", "Sub") and not first_const and isinstance(layer, FC) and self.sole_use(t_in):
            layer.params["b"][...] += c if op == "Add" else -c  # MatMul + Add, Gemm + Add: the FC's bias
            self.tensor[node.output[0]] = x
            return
        if not (x in self.affine and self.sole_use(t_in)):
            C = int(self.shape[x][0])
            one, zero = np.ones(C), np.zeros(C)
            layer = self.make(node, BatchNorm, eps=1e-12)
            x = self.add(node, layer, [x], {"w": one, "b": zero}, {"running_mean": zero, "running_var": one})
            self.affine.add(x)
        assert layer is not None
        w, b = layer.params["w"].astype(np.float64), layer.params["b"].astype(np.float64)
        if op == "Add":
            b = b + c
        elif op == "Sub":
            w, b = (-w, c - b) if first_const else (w, b - c)
        elif op == "Mul":
            w, b = w * c, b * c
        else:
            if np.any(c == 0):
                raise self.fail(node, "division by a zero constant")
            w, b = w / c, b / c
        layer.params["w"][...] = w
        layer.params["b"][...] = b
        self.tensor[node.output[0]] = x

    def op_Sum(self, node: Any, a: dict[str, Any]) -> None:
        self.op_Add(node, a)

    def op_Concat(self, node: Any, a: dict[str, Any]) -> None:
        from volnet.net import Concat

        x = self.src(node)
        rank = len(self.shape[x]) + 1
        axis = int(a["axis"])
        if (axis + rank if axis < 0 else axis) != 1:
            raise self.fail(node, f"Concat along axis {axis}; volnet concatenates channels (axis 1)")
        self._merge(node, Concat())

    # -- result ----------------------------------------------------------------------------------
    def net(self) -> Any:
        from volnet.net import Graph, Sequential

        if self.output_name not in self.tensor:
            raise ModelFileError(f"ONNX import: output {self.output_name!r} is not computed by the graph")
        out = self.tensor[self.output_name]
        if out == "input" or not self.nodes:
            raise ModelFileError("ONNX import: the graph has no layers")
        chain = all(not layer.multi_input for _, layer, _ in self.nodes) and all(
            inputs == [self.nodes[i - 1][0] if i else "input"] for i, (_, _, inputs) in enumerate(self.nodes)
        ) and out == self.nodes[-1][0]
        if chain:
            net: Any = Sequential([(name, layer) for name, layer, _ in self.nodes])
        else:
            net = Graph()
            for name, layer, inputs in self.nodes:
                net.add(name, layer, inputs)
            net.output = out
        net.astype(self.dtype)
        net.build(self.input_shape)
        return net


@dataclass
class OnnxModel:
    """What :func:`read_onnx` finds in a file: the ``net`` (without the input normalisation), the
    ``normalizer`` its leading ``Sub``/``Div`` nodes compute (None: the file takes its inputs as they are),
    the ``classes`` of ``metadata_props["volnet.classes"]`` (None: unnamed) and all ``metadata``."""

    net: Any
    normalizer: Any
    classes: list[str] | None
    metadata: dict[str, str] = field(default_factory=dict)


def read_onnx(path: str | os.PathLike[str], input_shape: Sequence[int] | None = None) -> OnnxModel:
    """Read an ONNX file as a net plus its preprocessing and class names (see the module docstring).

    The per-channel ``(x - mean) / std`` the graph applies to its input (a volnet export's
    ``normalize.sub``/``normalize`` nodes, or any ``Sub``/``Div``/``Mul`` by per-channel constants right
    after the input) becomes a :class:`~volnet.data.Normalizer` and leaves the net; everything else is as
    :func:`import_onnx`. ``normalizer.transform(x)`` then ``net.forward`` computes what the file computes.
    """
    from volnet.data import Normalizer

    model, imp = _import(path, input_shape)
    meta = {p.key: p.value for p in model.metadata_props}
    norm = None
    first = imp.nodes[0][0] if imp.nodes else None
    users = [n for n, _, ins in imp.nodes if "input" in ins]
    if (first in imp.affine and users == [first] and imp.tensor[imp.output_name] != first):
        layer = imp.layers[first]
        w, b = layer.params["w"].astype(np.float64), layer.params["b"].astype(np.float64)
        if np.all(w > 0):  # x * w + b == (x - mean) / std with std = 1 / w, mean = -b / w
            norm = Normalizer((-b / w).tolist(), (1.0 / w).tolist())
            imp.nodes = [(n, lay, ["input" if i == first else i for i in ins])
                         for n, lay, ins in imp.nodes[1:]]
    classes = None
    if "volnet.classes" in meta:
        try:
            classes = [str(c) for c in json.loads(meta["volnet.classes"])]
        except (json.JSONDecodeError, TypeError):
            raise ModelFileError(f"{path}: metadata volnet.classes is not a JSON list of names") from None
    return OnnxModel(imp.net(), norm, classes, meta)


def import_onnx(path: str | os.PathLike[str], input_shape: Sequence[int] | None = None) -> Any:
    """Read an ONNX file into a built volnet net (Sequential for a chain of layers, else Graph).

    ``input_shape`` (C, H, W) is needed only when the file's input has symbolic spatial sizes. Node names
    become layer names (characters other than letters, digits, ``_`` and ``-`` replaced by ``_``).
    Input normalisation nodes stay in the net (as an affine BN layer); :func:`read_onnx` takes them out
    as a Normalizer and also returns the class names.
    Raises ModelFileError (one line) for a missing or corrupt file and for unsupported operators, naming
    the op type, the node and the nearest supported rewrite.
    """
    return _import(path, input_shape)[1].net()


def _import(path: str | os.PathLike[str], input_shape: Sequence[int] | None) -> tuple[Any, _Importer]:
    from volnet.onnx_check import load_model

    onnx = _onnx()
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"no ONNX file at {p}")
    model = load_model(onnx, p)  # regular file only; external data checked and read by volnet itself
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version < 7:
            raise ModelFileError(f"{p}: opset {imp.version} is too old; re-export with opset >= {MIN_OPSET}")
    shape = None if input_shape is None else tuple(int(v) for v in input_shape)
    imp = _Importer(onnx, model, shape)
    imp.run()
    return model, imp


__all__ = ["MIN_OPSET", "SUPPORTED_OPS", "OnnxModel", "export_onnx", "import_onnx", "read_onnx",
           "to_onnx_model"]
