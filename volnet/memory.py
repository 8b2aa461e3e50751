"""Memory ledger: what one training step (or ``predict``) of a net really allocates, and its measurement.

The notes count activations + their gradients + parameters x3 + the input batch. A step of volnet holds:

- fixed: parameters P, their gradients P, the optimizer's state (SGD 0, momentum/Nesterov/Adagrad/RMSProp
  1, Adam/AdamW 2 copies of P), the input batch and its normalised float copy;
- forward: every layer's output (kept by the next layer's cache for backward; RELU after CONV/FC/BN runs in
  place, FLATTEN is a view), plus what the cache keeps beyond it (dropout's float mask), plus the layer's
  transient scratch (CONV's padded batch-last copy and its X_col block of at most
  ``conv.IM2COL_BLOCK_BYTES``);
- backward: all outputs are still held (the trainer clears the caches after the step); at layer i the
  upstream gradient dout_i, the new dx_i and the layer's backward scratch are live on top.

peak(train) = fixed + sum(outputs) + max_i max(forward scratch_i, dout_i + dx_i + backward scratch_i).
peak(inference) = params + input + max_i (in_i + out_i + scratch_i) (``predict`` keeps no caches).

:func:`measure_train_step` and :func:`measure_inference` give the real peak with ``tracemalloc`` (NumPy
reports its allocations to it), for the tests and ``benchmarks/bench_memory.py``.
"""

from __future__ import annotations

import math
import tracemalloc
from dataclasses import dataclass
from typing import Any

import numpy as np

from volnet.errors import VolnetError

#: optimizer state arrays per parameter (sgd 0, momentum 1, adam 2)
STATE_COPIES = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1, "adam": 2, "adamw": 2}
#: what a step allocates besides the arrays (Python objects of the net, caches' tuples, small arrays),
#: measured with tracemalloc on small nets
OVERHEAD_BYTES = 256 * 1024
IN_PLACE_AFTER = frozenset({"CONV", "FC", "BN", "LOCAL"})


@dataclass
class LayerMemory:
    """Bytes of one layer for a batch: its output, what its cache adds, forward/backward scratch, grads."""

    name: str
    kind: str
    output: int
    keeps: int
    forward_scratch: int
    backward_scratch: int
    dx: int
    grads: int


def _conv_scratch(layer: Any, in_shape: tuple, out_shape: tuple, N: int, bpv: int) -> tuple[int, int]:
    """Forward, backward scratch of a CONV (im2col path): the padded batch-last copy of x and one X_col
    block (``conv._row_blocks``); backward: the padded copy again, the padded dx and the block."""
    from volnet.ops import conv as C

    Cin, H, W = in_shape
    K, Ho, Wo = out_shape
    (Fh, Fw), (Ph, Pw) = layer.F, layer.pad
    Hp, Wp = H + 2 * Ph, W + 2 * Pw
    xp = Cin * Hp * Wp * N * bpv
    if Fh == Fw == 1 and tuple(layer.stride) == (1, 1) and Ph == Pw == 0:
        return xp + K * Ho * Wo * N * bpv * 0, xp
    per_row = Cin * Fh * Fw * Wo * N * bpv
    rb = max(1, min(Ho, C.IM2COL_BLOCK_BYTES // max(per_row, 1)))
    block = per_row * rb
    return xp + block, xp + block + xp


def layer_memory(name: str, layer: Any, in_shape: Any, out_shape: tuple, N: int, bpv: int,
                 prev_fresh: bool) -> LayerMemory:
    """The ledger entry of one leaf layer for batch ``N`` (``bpv`` bytes per value)."""
    kind = str(getattr(layer, "kind", type(layer).__name__)).upper()
    if isinstance(in_shape, list):
        n_in = sum(math.prod(s) for s in in_shape)
    else:
        n_in = math.prod(in_shape)
    out = math.prod(out_shape) * N * bpv
    x = n_in * N * bpv
    grads = sum(math.prod(s) for s in layer.param_shapes(in_shape).values()) * bpv
    keeps, fs, bs = 0, 0, 0
    if kind in ("RELU",) and prev_fresh:
        out = 0
    elif kind == "FLATTEN":
        out = 0
    if kind == "CONV":
        fs, bs = _conv_scratch(layer, tuple(in_shape), tuple(out_shape), N, bpv)
    elif kind == "LOCAL":
        Cin = in_shape[0]
        fs = bs = Cin * layer.F[0] * layer.F[1] * math.prod(out_shape[1:]) * N * bpv * 2
    elif kind == "DROPOUT":
        keeps = out
    elif kind in ("POOL", "L2POOL", "AVGPOOL"):
        bs = x + 2 * out
    elif kind in ("LRN",):
        keeps = x
        bs = 2 * x
    elif kind == "BN":
        bs = x
    return LayerMemory(name, kind, out, keeps, fs, bs, x, grads)


def _leaves(net: Any, input_shape: tuple) -> list[tuple[str, Any, Any, tuple]]:
    return [(n, layer, i, o) for n, layer, i, o in net.layer_shapes(tuple(input_shape))
            if not hasattr(layer, "edges")]


def ledger(net: Any, input_shape: tuple, batch: int, dtype: Any = "float32",
           optimizer: str | None = "sgd", input_dtype: Any = None) -> dict[str, Any]:
    """Predicted peak bytes of one training step and of inference, with the per-layer entries.

    ``input_dtype``: the dtype of the raw batch (uint8 images; None: the same as ``dtype``).
    """
    bpv = np.dtype(dtype).itemsize
    name = "sgd" if optimizer is None else str(optimizer).lower()
    if name not in STATE_COPIES:
        raise VolnetError(f"unknown optimizer {optimizer!r} (known: {', '.join(STATE_COPIES)})")
    N = int(batch)
    layers = []
    fresh = False
    for n, layer, i, o in _leaves(net, input_shape):
        layers.append(layer_memory(n, layer, i, o, N, bpv, fresh))
        kind = str(getattr(layer, "kind", "")).upper()
        fresh = kind in IN_PLACE_AFTER
    params = sum(lm.grads for lm in layers)
    largest = max((math.prod(s) for _, layer, i, _ in _leaves(net, input_shape)
                   for s in layer.param_shapes(i).values()), default=0) * bpv
    inp = math.prod(input_shape) * N * bpv
    raw = math.prod(input_shape) * N * np.dtype(input_dtype or dtype).itemsize
    # params, grads, state; the step's one parameter-sized work array (Adam's scratch, SGD's lr*g)
    fixed = params * (2 + STATE_COPIES[name]) + largest + inp + raw + OVERHEAD_BYTES
    acts = sum(lm.output + lm.keeps for lm in layers)
    transient = 0
    for lm in layers:
        transient = max(transient, lm.forward_scratch, lm.output + lm.dx + lm.backward_scratch)
    train_peak = fixed + acts + transient
    inf = 0
    for lm in layers:
        inf = max(inf, lm.dx + max(lm.output, lm.dx) + lm.forward_scratch)
    inference_peak = params + raw + inf + OVERHEAD_BYTES  # predict takes the batch as given
    return {
        "batch": N, "optimizer": name, "bytes_per_value": bpv,
        "params_bytes": params, "optimizer_state_bytes": params * STATE_COPIES[name],
        "input_bytes": inp + raw, "kept_bytes": acts, "transient_bytes": transient,
        "train_peak_bytes": int(train_peak), "inference_peak_bytes": int(inference_peak),
        "layers": [lm.__dict__ for lm in layers],
    }


def max_batch(net: Any, input_shape: tuple, budget: int, dtype: Any = "float32",
              optimizer: str | None = "sgd", train: bool = True, limit: int = 1 << 20,
              input_dtype: Any = None) -> int:
    """The largest batch whose predicted peak fits ``budget`` bytes (0: not even one image)."""
    key = "train_peak_bytes" if train else "inference_peak_bytes"

    def fits(n: int) -> bool:
        return ledger(net, input_shape, n, dtype, optimizer, input_dtype)[key] <= budget

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
def _make(spec: Any, seed: int) -> Any:
    from volnet.spec import build

    return build(spec, seed=seed) if isinstance(spec, str) else spec()


def measure_train_step(spec: Any, batch: int, optimizer: str = "sgd", classes: int = 10,
                       steps: int = 2, seed: int = 0) -> int:
    """Real peak bytes (tracemalloc) of ``steps`` training steps of a net built from ``spec`` (the net,
    its optimizer, the input batch and everything the steps allocate; the peak is of the second step).
    ``spec``: a notation string or a function returning a built net."""
    from volnet.ops.losses import softmax_loss
    from volnet.optim import make_optimizer

    def run(n_steps: int) -> None:
        net = _make(spec, seed)
        shape = tuple(net.input_shape)
        rng = np.random.default_rng(seed)
        xb = rng.random((batch, *shape), dtype=np.float32)
        yb = rng.integers(0, classes, batch)
        opt = make_optimizer(optimizer, net.params, lr=1e-3)
        scores_net = net.without_softmax()
        for _ in range(n_steps):
            net.train()
            out = scores_net.forward(xb.astype(np.float32), True)
            _, d = softmax_loss(out.reshape(out.shape[0], -1), yb)
            scores_net.backward(d.reshape(out.shape), need_dx=False)
            opt.step(dict(net.grads))
            scores_net.clear_cache()
            del out, d

    run(1)  # compiles the kernels, fills NumPy's caches: not counted
    clear_workspaces()
    tracemalloc.start()
    try:
        run(steps)
        return int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def clear_workspaces() -> None:
    """Drop the kernels' reusable scratch buffers (so a measurement sees them allocated)."""
    from volnet.ops import conv, winograd

    conv.clear_workspace()
    winograd.clear_workspace()


def measure_inference(spec: Any, batch: int, seed: int = 0) -> int:
    """Real peak bytes (tracemalloc) of ``net.predict`` on one batch (the net built inside the trace)."""
    def run() -> None:
        net = _make(spec, seed)
        x = np.random.default_rng(seed).random((batch, *net.input_shape), dtype=np.float32)
        net.eval()
        net.predict(x, batch_size=batch)

    run()
    clear_workspaces()
    tracemalloc.start()
    try:
        run()
        return int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
