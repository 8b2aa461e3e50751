"""Layer-by-layer summary and the notes' memory accounting ("Computational Considerations").

One row per layer: output volume ``[WxHxD]``, activations W*H*D, parameters (weights + biases, e.g.
``1,728+64`` for CONV3-64 on depth 3: 3*3*3*64 weights and 64 biases) and multiply-adds. Then the three
sources of memory of the notes:

1. activations (the intermediate volumes, kept for backpropagation) and their gradients (equal size);
   both scale with the batch size N;
2. parameters, their gradients and the optimizer's step cache: parameters x 3 ("a factor of at least 3
   or so"; x2 for plain SGD, x3 momentum/Nesterov/Adagrad/RMSProp, x4 Adam);
3. miscellaneous: the input batch (N images).

Number of values -> bytes: x4 (float32) or x8 (float64), then /1024 for KB, MB, GB.

RELU and FLATTEN rows add no activation memory: ReLU is elementwise and runs in place (the notes' VGGNet
table folds it into its CONV/FC rows), FLATTEN is a view. Their volumes are shown but not summed.

VGGNet (configuration D, 224x224x3 input) reproduces the notes' table row by row, e.g. CONV3-64:
[224x224x64], memory 224*224*64 = 3.2M, weights (3*3*3)*64 = 1,728; the first FC: weights 7*7*512*4096 =
102,760,448; 138,357,544 parameters in all. (The rows of that table add up to 15.2M activations per
image, 150K of them the input; the notes' "TOTAL memory: 24M" is an arithmetic slip.)

>>> s = summary("INPUT [224x224x3] -> [CONV3-64]*3")
>>> s.totals["activations"], round(s.memory["activations_bytes"] * 2 / 1024**2, 1)
(9633792, 73.5)

That is the notes' "about 10 million activations, or 72MB of memory (per image, for both activations and
gradients)". Nothing is allocated: counting uses ``output_shape``/``param_shapes`` of unbuilt layers.

See: Keras ``model.summary()``, ``torchinfo.summary``.
"""

from __future__ import annotations

import difflib
import html
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from volnet.errors import VolnetError
from volnet.spec import Shape, format_shape, parse_shape, unbuilt

#: Layer kinds whose output adds no stored activations (in place / views).
IN_PLACE = frozenset({"RELU", "FLATTEN"})

#: Parameter memory factor per optimizer: params + grads + the step caches (the notes' "x3 or so").
OPTIMIZER_FACTORS = {
    "sgd": 2, "momentum": 3, "nesterov": 3, "adagrad": 3, "rmsprop": 3, "adam": 4, "adamw": 4,
}
DEFAULT_FACTOR = 3

BYTES_PER_VALUE = {"float32": 4, "float64": 8, "float16": 2}

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "GIB": 1024**3, "T": 1024**4, "TB": 1024**4, "TIB": 1024**4}


def parse_memory(memory: int | float | str) -> int:
    """Bytes in a budget: ``4GB`` -> 4*1024**3 (the notes divide by 1024), ``512MB``, ``1.5G``, or a number.

    >>> parse_memory("4GB"), parse_memory("512 MB"), parse_memory(1000)
    (4294967296, 536870912, 1000)
    """
    if isinstance(memory, bool):
        raise VolnetError(f"memory must be a number of bytes or a size like 4GB, got {memory!r}")
    if isinstance(memory, (int, float)):
        value = float(memory)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", str(memory))
        unit = m.group(2).upper() if m else ""
        if not m or unit not in _UNITS:
            raise VolnetError(f"cannot read the memory size {memory!r}; write e.g. 4GB, 512MB or 6G "
                              "(1 GB = 1024^3 bytes)")
        value = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value <= 0:
        raise VolnetError(f"memory must be positive, got {memory!r}")
    return int(value)


def format_bytes(n: float) -> str:
    """Bytes -> ``"57.55 MB"`` dividing by 1024 as the notes do (B, KB, MB, GB, TB)."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TB"


def format_count(n: float) -> str:
    """A count in human units, 3 significant digits (1000-based, as torchinfo): ``11.7M``, ``1.81G``.

    >>> format_count(11_689_512), format_count(1_814_073_344), format_count(698), format_count(21_298)
    ('11.7M', '1.81G', '698', '21.3K')
    """
    n = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 999.5 or unit == "T":
            return f"{n:.0f}" if not unit else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}T"  # pragma: no cover - the loop returns at "T"


def optimizer_factor(optimizer: str | None) -> int:
    """How many parameter-sized arrays training keeps: params + grads + the optimizer's caches.

    2 + ``volnet.optim.state_size_factor(name)`` (the optimizer's state arrays: sgd 0, momentum 1, adam 2)
    when :mod:`volnet.optim` knows the name, else :data:`OPTIMIZER_FACTORS`; ``None``: the notes' 3.
    """
    if optimizer is None:
        return DEFAULT_FACTOR
    name = str(optimizer).strip().lower()
    try:
        from volnet.optim import state_size_factor
    except ImportError:  # pragma: no cover - optim is part of volnet
        state_size_factor = None  # type: ignore[assignment]
    if state_size_factor is not None:
        try:
            return 2 + int(state_size_factor(name))
        except VolnetError:
            pass
    if name in OPTIMIZER_FACTORS:
        return OPTIMIZER_FACTORS[name]
    known = list(OPTIMIZER_FACTORS)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise VolnetError(f"unknown optimizer {optimizer!r}{hint} (known: {', '.join(known)})")


@dataclass
class Row:
    """One layer: its output volume, activations, parameters and multiply-adds per sample."""

    name: str
    token: str
    in_shape: Shape
    out_shape: Shape
    activations: int  # W*H*D of the output volume
    stored: bool  # counted in the activation memory (False: RELU in place, FLATTEN a view, INPUT)
    weights: int
    biases: int
    macs: int

    @property
    def params(self) -> int:
        return self.weights + self.biases

    @property
    def volume(self) -> str:
        return format_shape(self.out_shape)

    def params_text(self) -> str:
        """``"1,728+64"`` (weights + biases), ``"0"`` without parameters."""
        if self.biases:
            return f"{self.weights:,}+{self.biases:,}"
        return f"{self.weights:,}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_shape"] = list(self.in_shape)
        d["out_shape"] = list(self.out_shape)
        d["volume"] = self.volume
        d["params"] = self.params
        return d


def fold_rows(rows: list[Row], depth: int, kinds: dict[str, str] | None = None) -> list[Row]:
    """Rows with every layer deeper than ``depth`` dotted name parts folded into its block at that depth
    (as torchinfo's ``depth``): a block row has the block's input and output volume, the sum of its
    parameters and multiply-adds, and its stored activations. ``kinds``: block name -> type for the
    notation column (default ``BLOCK``). ``rows[0]`` (the input) stays.

    >>> r = [Row("input", "INPUT", (), (3, 8, 8), 192, False, 0, 0, 0),
    ...      Row("b.conv", "CONV3-4", (3, 8, 8), (4, 8, 8), 256, True, 108, 4, 6912),
    ...      Row("b.relu", "RELU", (4, 8, 8), (4, 8, 8), 256, False, 0, 0, 0)]
    >>> [(x.name, x.token, x.params, x.activations) for x in fold_rows(r, 1)]
    [('input', 'INPUT', 0, 192), ('b', 'BLOCK[2]', 112, 256)]
    """
    if depth < 1:
        raise VolnetError(f"depth must be >= 1, got {depth}")
    out: list[Row] = list(rows[:1])
    group: list[Row] = []

    def flush() -> None:
        if not group:
            return
        if len(group) == 1 and group[0].name.count(".") < depth:
            out.append(group[0])
        else:
            name = ".".join(group[0].name.split(".")[:depth])
            kind = (kinds or {}).get(name, "BLOCK")
            out.append(Row(name, f"{kind}[{len(group)}]", group[0].in_shape, group[-1].out_shape,
                           sum(r.activations for r in group if r.stored), True,
                           sum(r.weights for r in group), sum(r.biases for r in group),
                           sum(r.macs for r in group)))
        group.clear()

    for r in rows[1:]:
        key = ".".join(r.name.split(".")[:depth])
        if group and ".".join(group[0].name.split(".")[:depth]) != key:
            flush()
        group.append(r)
    flush()
    return out


@dataclass
class Summary:
    """Rows (``rows[0]`` is the input), per-sample ``totals`` and the ``memory`` accounting for ``batch``.

    ``depth`` (None: every layer) folds the table's rows into blocks (:func:`fold_rows`); the totals are
    always over every layer. In a notebook the summary shows as its table (``_repr_html_``).
    """

    rows: list[Row]
    totals: dict[str, int]
    memory: dict[str, Any]
    input_shape: Shape
    batch: int
    dtype: str
    advice: list[str] = field(default_factory=list)
    depth: int | None = None
    kinds: dict[str, str] = field(default_factory=dict)

    def shown_rows(self) -> list[Row]:
        """The table's rows: all of them, or folded to ``depth``."""
        return self.rows if self.depth is None else fold_rows(self.rows, self.depth, self.kinds)

    def counts_line(self) -> str:
        """``parameters 11,689,512 (11.7M): trainable 11,689,512, frozen 0; multiply-adds 1,814,073,344
        (1.81G)``."""
        t = self.totals
        return (f"parameters {t['params']:,} ({format_count(t['params'])}): trainable {t['trainable']:,}, "
                f"frozen {t['frozen']:,}; multiply-adds {t['macs']:,} ({format_count(t['macs'])}) per image")

    def __repr__(self) -> str:
        return str(self)

    def _table(self) -> tuple[list[str], list[list[str]], list[str]]:
        head = ["layer", "notation", "output [WxHxD]", "activations", "parameters (w+b)", "multiply-adds"]
        body = []
        for r in self.shown_rows():
            acts = f"{r.activations:,}" if r.stored or r.name == "input" else f"({r.activations:,})"
            body.append([r.name, r.token, r.volume, acts, r.params_text(), f"{r.macs:,}"])
        t = self.totals
        foot = ["total", "", "", f"{t['activations']:,}", f"{t['params']:,}", f"{t['macs']:,}"]
        return head, body, foot

    def _repr_html_(self) -> str:
        """The table as HTML (Jupyter/IPython show it instead of the text)."""
        head, body, foot = self._table()
        esc = html.escape

        def tr(cells: list[str], tag: str = "td") -> str:
            return "<tr>" + "".join(
                f'<{tag} style="text-align:{"right" if i >= 3 else "left"}">{esc(c)}</{tag}>'
                for i, c in enumerate(cells)) + "</tr>"

        m = self.memory
        mem = (f"memory for batch {self.batch}, {self.dtype}: activations + gradients "
               f"{format_bytes(m['activations_bytes'] + m['gradients_bytes'])}, parameters "
               f"x{m['param_factor']} {format_bytes(m['params_bytes'])}, input "
               f"{format_bytes(m['input_bytes'])}; total {format_bytes(m['total_bytes'])}")
        return ("<table>\n<thead>" + tr(head, "th") + "</thead>\n<tbody>\n"
                + "\n".join(tr(b) for b in body) + "\n</tbody>\n<tfoot>" + tr(foot, "th")
                + "</tfoot>\n</table>\n" + f"<p>{esc(self.counts_line())}<br>{esc(mem)}</p>")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``volnet summary --json``)."""
        return {
            "input_shape": list(self.input_shape),
            "input": format_shape(self.input_shape),
            "batch": self.batch,
            "dtype": self.dtype,
            "rows": [r.to_dict() for r in self.rows],
            "totals": dict(self.totals),
            "memory": dict(self.memory),
            "advice": list(self.advice),
        }

    def __str__(self) -> str:
        head, body, foot = self._table()
        widths = [max(len(row[i]) for row in [head, *body, foot]) for i in range(len(head))]
        right = [False, False, False, True, True, True]

        def line(cells: list[str]) -> str:
            cols = (c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right))
            return "  ".join(cols).rstrip()

        rule = "  ".join("-" * w for w in widths)
        out = [line(head), rule, *(line(b) for b in body), rule, line(foot)]
        notes = "total activations: the layers' outputs per image (the input is the input batch below)"
        if any(not r.stored and r.name != "input" for r in self.shown_rows()):
            notes += "\n(in parentheses): RELU runs in place, FLATTEN is a view: not counted"
        if self.depth is not None:
            notes += (f"\nblocks folded at depth {self.depth}: NAME[n] is n layers, their parameters, "
                      "multiply-adds and stored activations summed")
        out.append(notes)
        out.append(self.counts_line())
        m = self.memory
        bpv = m["bytes_per_value"]
        out.append("")
        out.append(f"memory for batch {self.batch}, {self.dtype} ({bpv} bytes per value, 1 KB = 1024 bytes):")
        items = [
            ("activations (forward)", m["activations"], m["activations_bytes"]),
            ("activation gradients (backward)", m["gradients"], m["gradients_bytes"]),
            ("  activations + gradients", m["activations"] + m["gradients"],
             m["activations_bytes"] + m["gradients_bytes"]),
            (f"parameters x{m['param_factor']} ({m['param_factor_why']})", m["params"], m["params_bytes"]),
            ("input batch", m["input"], m["input_bytes"]),
            ("total", m["total"], m["total_bytes"]),
        ]
        lw = max(len(a) for a, _, _ in items)
        vw = max(len(f"{v:,}") for _, v, _ in items)
        for label, v, b in items:
            out.append(f"  {label.ljust(lw)}  {v:>{vw},} values  {format_bytes(b):>10}")
        if "train_peak_bytes" in m:
            opt_name = m['ledger_optimizer']
            out.append(f"what volnet really allocates (the memory ledger, optimizer {opt_name}):")
            out.append(f"  training step peak  {format_bytes(m['train_peak_bytes']):>10}   "
                       f"inference peak  {format_bytes(m['inference_peak_bytes']):>10}")
            kept = format_bytes(m['ledger_kept_bytes'])
            where = m['ledger_peak_at'] or 'the optimizer step'
            rest = format_bytes(m['ledger_transient_bytes'])
            out.append(f"  the training peak is at {where}; all outputs kept for backward {kept}, the "
                       f"kernels' reusable scratch {format_bytes(m['ledger_scratch_bytes'])}, the rest of "
                       f"the peak (gradients, temporaries, less what backward has freed) {rest}")
            out.append("  (the notes' total counts each activation and its gradient once; volnet also holds "
                       "the normalised input copy, dropout masks, CONV scratch, the optimizer's work array, "
                       "gradients only live layer by layer, and backward frees each layer's cache once it "
                       "has run)")
        if "budget_bytes" in m:
            out.append(self.batch_line())
            if "max_batch_train" in m:
                out.append(f"by the ledger: largest batch for training {m['max_batch_train']:,}, "
                           f"for inference {m['max_batch_inference']:,}")
        if self.advice:
            out.append("")
            out.append("the notes' layer sizing patterns:")
            out.extend(f"  - {a}" for a in self.advice)
        return "\n".join(out)

    def batch_line(self) -> str:
        """The ``--memory`` answer: largest batch size that fits the budget."""
        m = self.memory
        budget = format_bytes(m["budget_bytes"])
        if m["max_batch"] < 1:
            return (f"does not fit in {budget}: parameters x{m['param_factor']} alone take "
                    f"{format_bytes(m['fixed_bytes'])}, one image {format_bytes(m['per_image_bytes'])} more")
        return (f"largest batch that fits in {budget}: {m['max_batch']:,} "
                f"({format_bytes(m['fixed_bytes'])} parameters x{m['param_factor']} + "
                f"{format_bytes(m['per_image_bytes'])} per image)")


def _rows(shapes: list[Any], input_shape: Shape) -> list[Row]:
    rows = [Row("input", "INPUT", (), tuple(input_shape),
                math.prod(input_shape), False, 0, 0, 0)]
    for name, layer, in_shape, out_shape in shapes:
        pshapes = layer.param_shapes(tuple(in_shape))
        biases = sum(math.prod(s) for k, s in pshapes.items() if k == "b")
        weights = sum(math.prod(s) for k, s in pshapes.items() if k != "b")
        kind = str(getattr(layer, "kind", type(layer).__name__)).upper()
        token = layer.token() if hasattr(layer, "token") else kind
        rows.append(Row(
            str(name), token, tuple(in_shape), tuple(out_shape), math.prod(out_shape), kind not in IN_PLACE,
            int(weights), int(biases), int(layer.macs(tuple(in_shape))),
        ))
    return rows


def sizing_advice(net: Any, input_shape: Shape, shapes: list[Any] | None = None) -> list[str]:
    """The notes' "layer sizing patterns" checked on a net (advice, not errors):

    - the input should be divisible by 2 many times (32, 64, 96, 224, 384, 512);
    - CONV layers should use small filters (3x3, at most 5x5; larger ones only in the first CONV layer),
      stride 1, and zero padding P = (F - 1)/2 so that they keep the spatial size;
    - POOL layers larger than 3x3 are "too lossy and aggressive".

    ``shapes``: ``net.layer_shapes(input_shape)`` when the caller has it already.
    """
    advice = []
    H, W = (int(input_shape[1]), int(input_shape[2])) if len(input_shape) == 3 else (0, 0)
    for side, v in (("width", W), ("height", H)):
        if v and v % 4:
            advice.append(f"input {side} {v} is not divisible by 2 twice; the notes suggest sizes such as "
                          "32, 64, 96, 224, 384, 512 so that pools halve it cleanly")
    first_conv = True
    if shapes is None:
        shapes = net.layer_shapes(tuple(input_shape))
    for name, layer, in_shape, out_shape in shapes:
        kind = str(getattr(layer, "kind", "")).upper()
        token = layer.token() if hasattr(layer, "token") else kind
        if kind in ("CONV", "LOCAL"):
            F, S = tuple(layer.F), tuple(layer.stride)
            if max(F) > 5 and not first_conv:
                advice.append(f"{name} {token}: {F[0]}x{F[1]} filters after the first CONV layer; the notes "
                              "prefer a stack of 3x3 CONV layers (fewer parameters, more non-linearities)")
            if S == (1, 1) and tuple(out_shape[1:]) != tuple(in_shape[1:]):
                advice.append(f"{name} {token}: changes the size {in_shape[2]}x{in_shape[1]} -> "
                              f"{out_shape[2]}x{out_shape[1]}; P = (F - 1)/2 keeps it, so that only the "
                              "pools downsample and the borders are not washed away")
            first_conv = False
        elif kind in ("POOL", "AVGPOOL", "L2POOL") and max(tuple(layer.F)) > 3:
            advice.append(f"{name} {token}: pools larger than 3x3 are very uncommon (too lossy); use POOL2 "
                          "or the overlapping POOL3/2")
    return advice


def summary(
    net_or_spec: Any,
    input_shape: Any = None,
    batch: int = 1,
    memory: int | float | str | None = None,
    optimizer: str | None = None,
    dtype: Any = "float32",
    depth: int | None = None,
    frozen: Any = None,
) -> Summary:
    """Rows, totals and the notes' memory accounting of a net or a spec string.

    Args:
        net_or_spec: a notation string (``"INPUT [224x224x3] -> ..."``) or a net with ``layer_shapes``
            (:class:`volnet.net.Sequential`, :class:`volnet.net.Graph`); built or not.
        input_shape: ``(C, H, W)`` or ``"WxHxD"``; overrides the spec's INPUT / the net's input shape.
        batch: images per batch N (activations, their gradients and the input scale with N).
        memory: a budget (bytes or ``"4GB"``): adds ``memory["max_batch"]``, the largest N that fits.
        optimizer: ``sgd``, ``momentum``, ``nesterov``, ``adagrad``, ``rmsprop``, ``adam``: sets the
            parameter factor (2, 3, 3, 3, 3, 4); None: the notes' 3.
        dtype: ``float32`` (4 bytes per value) or ``float64`` (8).
        depth: fold the table's rows into blocks at this many dotted name parts (``layer1`` at 1,
            ``layer1.0`` at 2), as torchinfo's ``depth``; None shows every layer.
        frozen: parameter names left out of training (``volnet.zoo.freeze``, a run's ``--freeze``):
            ``totals["frozen"]`` counts them, ``totals["trainable"]`` the rest.
    """
    import numpy as np

    try:
        dname = np.dtype(dtype).name
    except TypeError as e:
        raise VolnetError(f"unknown dtype {dtype!r}; use float32 or float64") from e
    if dname not in BYTES_PER_VALUE:
        raise VolnetError(f"dtype must be float32 or float64, got {dname}")
    if isinstance(batch, bool) or int(batch) != batch or batch < 1:
        raise VolnetError(f"batch must be an integer >= 1, got {batch!r}")
    batch = int(batch)
    factor = optimizer_factor(optimizer)

    if isinstance(net_or_spec, str):
        net, shape = unbuilt(net_or_spec, input_shape)
    elif hasattr(net_or_spec, "layer_shapes"):
        net = net_or_spec
        given = input_shape if input_shape is not None else getattr(net, "input_shape", None)
        if given is None:
            raise VolnetError("the net has no input shape; pass input_shape=(C, H, W) or --input WxHxD")
        shape = parse_shape(given)
    else:
        raise VolnetError(f"summary needs a spec string or a net, got {type(net_or_spec).__name__}")

    if depth is not None and (isinstance(depth, bool) or int(depth) != depth or depth < 1):
        raise VolnetError(f"depth must be an integer >= 1, got {depth!r}")
    shapes = net.layer_shapes(tuple(shape))  # traced once: rows and advice
    rows = _rows(shapes, shape)
    frozen_names = set(frozen or ())
    n_frozen = sum(math.prod(s) for name, layer, in_shape, _ in shapes
                   for k, s in layer.param_shapes(tuple(in_shape)).items() if f"{name}.{k}" in frozen_names)
    layers = rows[1:]
    totals = {
        "layers": len(layers),
        "input": rows[0].activations,
        "activations": sum(r.activations for r in layers if r.stored),
        "weights": sum(r.weights for r in layers),
        "biases": sum(r.biases for r in layers),
        "params": sum(r.params for r in layers),
        "macs": sum(r.macs for r in layers),
    }
    totals["frozen"] = int(n_frozen)
    totals["trainable"] = totals["params"] - totals["frozen"]
    bpv = BYTES_PER_VALUE[dname]
    acts = totals["activations"] * batch
    params = totals["params"] * factor
    inp = totals["input"] * batch
    why = {2: "params, grads", 3: "params, grads, 1 cache", 4: "params, grads, 2 caches"}.get(
        factor, f"params, grads, {factor - 2} caches")
    mem: dict[str, Any] = {
        "batch": batch, "dtype": dname, "bytes_per_value": bpv,
        "optimizer": optimizer, "param_factor": factor, "param_factor_why": why,
        "activations": acts, "gradients": acts, "params": params, "input": inp,
        "total": 2 * acts + params + inp,
    }
    for k in ("activations", "gradients", "params", "input", "total"):
        mem[f"{k}_bytes"] = mem[k] * bpv
    if memory is not None:
        budget = parse_memory(memory)
        fixed = params * bpv
        per_image = (2 * totals["activations"] + totals["input"]) * bpv
        mem.update(
            budget_bytes=budget, fixed_bytes=fixed, per_image_bytes=per_image,
            max_batch=max(0, (budget - fixed) // per_image) if per_image else 0,
        )
    from volnet.memory import ledger, max_batch

    opt = "momentum" if optimizer is None else str(optimizer).strip().lower()  # None: the notes' x3
    led = ledger(net, tuple(shape), batch, dname, opt)
    mem.update(train_peak_bytes=led["train_peak_bytes"], inference_peak_bytes=led["inference_peak_bytes"],
               ledger_optimizer=opt, ledger_kept_bytes=led["kept_bytes"],
               ledger_transient_bytes=led["transient_bytes"], ledger_scratch_bytes=led["scratch_bytes"],
               ledger_peak_at=led["train_peak_at"])
    if memory is not None:
        mem.update(max_batch_train=max_batch(net, tuple(shape), budget, dname, opt, train=True),
                   max_batch_inference=max_batch(net, tuple(shape), budget, dname, opt, train=False))
    kinds = {}
    if depth is not None and hasattr(net, "named_layers"):
        kinds = {name: type(layer).__name__.upper() for name, layer in net.named_layers(leaves_only=False)}
    return Summary(rows, totals, mem, tuple(shape), batch, dname, sizing_advice(net, shape, shapes),
                   None if depth is None else int(depth), kinds)
