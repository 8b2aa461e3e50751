"""Memory ledger: what one training step (or ``predict``) of a net really allocates, and its measurement.

The notes count activations + their gradients + parameters x3 + the input batch. A step of volnet holds:

- fixed: parameters P, their gradients P, the optimizer's state (SGD 0, momentum/Nesterov/Adagrad/RMSProp
  1, Adam/AdamW 2 copies of P; Adam's one shared work array of the largest parameter), the input batch
  and its normalised float copy;
- scratch: the kernels' reusable per-thread buffers (the im2col workspace, Winograd's named buffers),
  kept between calls at their largest use: each counted once, from :func:`volnet.ops.conv.conv_memory`
  (the same algorithm choice and block sizes as the kernels);
- forward: every layer's output, kept for backward where a cache holds it (its own: RELU, max/L2 pool; or
  a reader's that keeps its input: CONV, FC, BN, pooling, LRN; an output read only by ADD, GAP or DROPOUT
  lives until its last reader has run; RELU after CONV/FC/BN/LOCAL in a Sequential runs in place, FLATTEN
  is a view), plus what the cache keeps beyond it (dropout's float mask, LRN's d and d^-beta, LOCAL's
  patch matrix), plus the layer's transient arrays (padded batch-last copies);
- backward: a layer's cache is freed once its backward has run (the containers do it), so at layer i
  the outputs and keeps of the layers before it are held, its own keeps (and its output where its cache
  holds it: RELU, max/L2 pooling), and on top the upstream gradient dout_i, the new dx_i and the layer's
  backward temporaries (the first layer computes no dx); SGD's ``lr * g`` (momentum's ...) lives during
  the update, after backward, when no cache is left.

peak(train) = fixed + scratch + max(largest P_i for SGD, sum(held outputs + keeps),
              max_i [before_i + waiting_i + out_i + keeps_i + forward_i],
              max_i [before_i + keeps_i + own_i + grads waiting_i + dout_i + dx_i + backward_i])
with before_i = the held outputs and keeps of the layers before i (in the order of ``net.layer_shapes``),
waiting_i the outputs not held whose reader has not run yet, and grads waiting_i the gradients of
outputs with a reader still to go backward (a skip connection's, while its block's main branch runs).
peak(inference) = params + input + forward scratch + max_i (in_i + out_i + forward_i)
(``predict`` keeps no caches). Measured against tracemalloc (tests/test_memory.py): within 10% on five
nets x three batches x two optimizers, and for inference.

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
OVERHEAD_BYTES = 48 * 1024
#: the same for ``predict`` (no optimizer, no caches)
INFERENCE_OVERHEAD_BYTES = 32 * 1024
#: layers whose cache holds their own output (RELU's mask is its output, max and L2 pooling compare with it)
OWN_OUTPUT = frozenset({"RELU", "POOL", "MAXPOOL", "L2POOL"})
#: layers whose cache holds their input (FLATTEN: a view, held by what reads it, FC; an in-place RELU too)
HOLDS_INPUT = frozenset({"CONV", "FC", "BN", "POOL", "MAXPOOL", "L2POOL", "LRN", "FLATTEN"})


@dataclass
class LayerMemory:
    """Bytes of one layer for a batch: its output, what its cache adds, forward/backward scratch, grads;
    ``scratch``: reusable named buffers of the kernels (kept between calls: counted once, at their largest
    use over all layers), ``scratch_forward``: those of the forward pass alone."""

    name: str
    kind: str
    output: int
    keeps: int
    forward_scratch: int
    backward_scratch: int
    dx: int
    grads: int
    scratch: dict
    scratch_forward: dict
    inp: int = 0
    dout: int = 0


#: layers whose output is batch-last (volnet.ops.layout) when their input is
BATCH_LAST_OUT = frozenset({"CONV", "BN", "POOL", "AVGPOOL", "L2POOL", "MAXPOOL"})
KEEP_LAYOUT = frozenset({"RELU", "DROPOUT", "LRN", "ADD"})


def layer_memory(name: str, layer: Any, in_shape: Any, out_shape: tuple, N: int, bpv: int,
                 in_place: bool, x_batch_last: bool = True, need_dx: bool = True) -> LayerMemory:
    """The ledger entry of one leaf layer for batch ``N`` (``bpv`` bytes per value). CONV's numbers come
    from :func:`volnet.ops.conv.conv_memory` (the same algorithm choice and block sizes as the kernels)."""
    kind = str(getattr(layer, "kind", type(layer).__name__)).upper()
    if isinstance(in_shape, list):
        n_in = sum(math.prod(s) for s in in_shape)
    else:
        n_in = math.prod(in_shape)
    out = dout = math.prod(out_shape) * N * bpv
    x = n_in * N * bpv
    grads = sum(math.prod(s) for s in layer.param_shapes(in_shape).values()) * bpv
    keeps, fs, bs = 0, 0, 0
    scratch: dict = {}
    scratch_f: dict = {}
    if kind == "RELU" and in_place:
        out = 0  # in place on its input
    elif kind == "FLATTEN":
        out = 0
    if kind == "CONV":
        from volnet.ops.conv import conv_memory

        m = conv_memory((N, *in_shape), int(out_shape[0]), layer.F, layer.stride, layer.pad, layer.dilation,
                        layer.fit, bpv, x_batch_last, need_dx)
        fs, bs, keeps = m["forward"], m["backward"], m["keeps"]
        scratch, scratch_f = m["scratch"], m["scratch_forward"]
    elif kind == "LOCAL":  # volnet.ops.local: the cache keeps the patch matrix (Ho*Wo, C*Fh*Fw, N)
        cols = in_shape[0] * layer.F[0] * layer.F[1] * math.prod(out_shape[1:]) * N * bpv
        keeps = cols
        copy = x if (any(layer.pad) or not x_batch_last) else 0
        fs = copy + out  # the padded batch-last copy of x; the GEMM's (P, K, N) result before the copy
        bs = dout + grads + (cols + copy if need_dx else 0)
    elif kind == "DROPOUT":
        keeps = out
    elif kind in ("L2POOL", "AVGPOOL"):
        bs = x + 2 * out
    elif kind == "POOL":  # max: the argmax is replayed into dx, nothing beyond it
        bs = 0
    elif kind in ("LRN",):  # the cache keeps d and d^-beta besides x
        keeps = 2 * x
        bs = 2 * x
    elif kind == "BN":
        bs = x
    elif kind == "FC":  # the new dw, db (the previous step's are freed when these replace them)
        bs = grads
    return LayerMemory(name, kind, out, keeps, fs, bs, x if need_dx else 0, grads, scratch, scratch_f, x,
                       dout)


def _scratch_total(layers: list[LayerMemory], key: str) -> int:
    """The kernels' reusable buffers: each name at its largest use over the layers, summed."""
    most: dict[str, int] = {}
    for lm in layers:
        for k, v in getattr(lm, key).items():
            most[k] = max(most.get(k, 0), v)
    return sum(most.values())


def _leaves(net: Any, input_shape: tuple) -> list[tuple[str, Any, Any, tuple]]:
    return [(n, layer, i, o) for n, layer, i, o in net.layer_shapes(tuple(input_shape))
            if not hasattr(layer, "edges")]


def _leaf_inputs(net: Any, prefix: str = "", inp: tuple = ("input",),
                 inplace: set | None = None) -> tuple[dict[str, list[str]], list[str], set]:
    """For every leaf of ``net`` (dotted name as in ``net.layer_shapes``): the leaves whose outputs it
    reads (``"input"``: the batch); the leaves whose outputs are the net's output; and the RELUs that run
    in place (``inplace=True``, or in a Sequential after a layer with a fresh output: what
    ``Sequential`` sets up when it builds, known here for unbuilt nets too)."""
    from volnet.net import Sequential

    inplace = set() if inplace is None else inplace
    reads: dict[str, list[str]] = {}
    produced: dict[str, list[str]] = {"input": list(inp)}
    edges = net.edges()
    fresh = False
    for name, layer, inputs in edges:
        src = [p for i in inputs for p in produced[i]]
        if hasattr(layer, "edges"):
            sub, produced[name], _ = _leaf_inputs(layer, f"{prefix}{name}.", tuple(src), inplace)
            reads.update(sub)
        else:
            reads[prefix + name] = src
            produced[name] = [prefix + name]
            if str(getattr(layer, "kind", "")).upper() == "RELU" and (
                    getattr(layer, "inplace", False) or (isinstance(net, Sequential) and fresh)):
                inplace.add(prefix + name)
        fresh = bool(getattr(layer, "fresh_output", False))
    out = getattr(net, "output", None)
    return reads, produced[out if isinstance(out, str) else edges[-1][0]], inplace


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
    reads, outputs, inplace = _leaf_inputs(net)
    bl, first = False, True  # the input batch is (N, C, H, W) contiguous
    for n, layer, i, o in _leaves(net, input_shape):
        layers.append(layer_memory(n, layer, i, o, N, bpv, n in inplace, bl, need_dx=not first))
        kind = str(getattr(layer, "kind", "")).upper()
        bl = kind in BATCH_LAST_OUT or (bl and kind in KEEP_LAYOUT)
        first = False
    params = sum(lm.grads for lm in layers)
    largest = max((math.prod(s) for _, layer, i, _ in _leaves(net, input_shape)
                   for s in layer.param_shapes(i).values()), default=0) * bpv
    inp = math.prod(input_shape) * N * bpv
    raw = math.prod(input_shape) * N * np.dtype(input_dtype or dtype).itemsize
    # params, grads, state; the step's one parameter-sized work array: Adam's shared scratch is kept
    # (fixed), SGD's lr*g (momentum's, ...) lives only during the update, after backward
    adam = name in ("adam", "adamw")
    fixed = params * (2 + STATE_COPIES[name]) + (largest if adam else 0) + inp + raw + OVERHEAD_BYTES
    # an output stays until the step ends only if a cache holds it: its own (RELU, max/L2 pool) or a
    # reader's that keeps its input (CONV, FC, BN, max/L2 pool, LRN); otherwise (into ADD, GAP, DROPOUT,
    # AVGPOOL) it lives until its last reader has run
    readers: dict[str, list[str]] = {}
    for reader, srcs in reads.items():
        for src in srcs:
            readers.setdefault(src, []).append(reader)
    # an in-place RELU (output 0 here) holds its input: it is its output
    holds = {lm.name for lm in layers if lm.kind in HOLDS_INPUT or (lm.kind == "RELU" and not lm.output)}
    held = {lm.name: lm.kind in OWN_OUTPUT or lm.name in outputs
            or any(r in holds for r in readers.get(lm.name, [])) for lm in layers}
    acts = sum(lm.keeps + (lm.output if held[lm.name] else 0) for lm in layers)
    scratch = _scratch_total(layers, "scratch")
    # live beyond ``fixed + scratch``: forward, layer i adds its output, keeps and transients to what the
    # layers before it hold; backward, layer i's cache is freed once its backward has run (the
    # containers do), so at layer i only the layers before it, its own keeps (and its output where its
    # cache holds it) are held, with dout_i, dx_i and its temporaries; SGD's lr*g (momentum's ...) lives
    # during the update, after backward, when no cache is left
    live, peak_at = (0, "") if adam else (largest, "optimizer step")
    at: dict[str, int] = {}  # "layer (forward|backward)" -> bytes live then, beyond fixed + scratch
    before = {}
    held_so_far = 0
    pending: dict[str, int] = {}  # outputs no cache holds, until their last reader has run
    for lm in layers:
        before[lm.name] = held_so_far
        at[f"{lm.name} (forward)"] = held_so_far + sum(pending.values()) + lm.output + lm.keeps \
            + lm.forward_scratch
        for src in reads.get(lm.name, []):
            if src in pending and readers[src][-1] == lm.name:
                del pending[src]
        held_so_far += lm.keeps
        if held[lm.name]:
            held_so_far += lm.output
        else:
            pending[lm.name] = lm.output
    at["end of forward"] = acts
    # backward, in reverse: the gradients waiting for their layer (a skip's, while its block's main
    # branch runs) are live besides dout_i, dx_i and the layer's temporaries
    size = {lm.name: lm.dout for lm in layers}
    waiting = {name: size[name] for name in outputs}
    caller = 2 * sum(waiting.values())  # the scores and their gradient, held by the caller throughout
    for lm in reversed(layers):
        if lm.name not in waiting:
            continue  # no gradient reaches it
        waiting.pop(lm.name)
        own = lm.output if lm.kind in OWN_OUTPUT else 0
        if lm.name in outputs:
            extra = lm.output  # the caller's scores; its dout is the caller's gradient
        else:
            extra = caller
        at[f"{lm.name} (backward)"] = before[lm.name] + lm.keeps + own + extra + sum(waiting.values()) \
            + lm.dout + lm.dx + lm.backward_scratch
        for src in reads.get(lm.name, []):
            if src != "input":
                waiting[src] = size[src]
    for where, n in at.items():
        if n > live:
            live, peak_at = n, where
    transient = live - acts
    train_peak = fixed + scratch + live
    inf = 0
    for lm in layers:
        inf = max(inf, lm.inp + lm.output + lm.forward_scratch)
    # predict takes the batch as given
    inference_peak = params + raw + _scratch_total(layers, "scratch_forward") + inf + INFERENCE_OVERHEAD_BYTES
    return {
        "batch": N, "optimizer": name, "bytes_per_value": bpv,
        "params_bytes": params, "optimizer_state_bytes": params * STATE_COPIES[name],
        "input_bytes": inp + raw, "kept_bytes": acts, "transient_bytes": transient, "scratch_bytes": scratch,
        "train_peak_bytes": int(train_peak), "inference_peak_bytes": int(inference_peak),
        "train_peak_at": peak_at, "train_live_bytes": {k: int(fixed + scratch + v) for k, v in at.items()},
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

    def run(n_steps: int, net: Any = None) -> None:
        net = _make(spec, seed) if net is None else net
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
    net = _make(spec, seed)  # built outside the trace (the initialisation's temporaries are not a step's)
    weights = sum(p.nbytes for p in net.params.values())
    tracemalloc.start()
    try:
        run(steps, net)
        return weights + int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def clear_workspaces() -> None:
    """Drop the kernels' reusable scratch buffers (so a measurement sees them allocated)."""
    from volnet.ops import conv, winograd

    conv.clear_workspace()
    winograd.clear_workspace()


def measure_inference(spec: Any, batch: int, seed: int = 0) -> int:
    """Real peak bytes (tracemalloc) of ``net.predict`` on one batch, plus the weights (built before)."""
    def run(net: Any = None) -> None:
        net = _make(spec, seed) if net is None else net
        x = np.random.default_rng(seed).random((batch, *net.input_shape), dtype=np.float32)
        net.eval()
        net.predict(x, batch_size=batch)

    run()
    clear_workspaces()
    net = _make(spec, seed)
    weights = sum(p.nbytes for p in net.params.values())
    tracemalloc.start()
    try:
        run(net)
        return weights + int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
