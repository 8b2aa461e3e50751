"""Memory ledger: what one training step (or ``predict``) of a net really allocates, and its measurement.

The notes count activations + their gradients + parameters x3 + the input batch. A step of volnet holds:

- fixed: parameters P, their gradients P, the optimizer's state (SGD 0, momentum/Nesterov/Adagrad/RMSProp
  1, Adam/AdamW 2 copies of P; Adam's one shared work array of the largest parameter), the input batch
  and its normalised float copy;
- scratch: the kernels' reusable per-thread buffers (the im2col workspace, Winograd's named buffers),
  kept between calls at their largest use: each counted once, from :func:`volnet.ops.conv.conv_memory`
  (the same algorithm choice and block sizes as the kernels);
- forward: every layer's output (kept by the next layer's cache for backward; RELU after CONV/FC/BN runs in
  place, FLATTEN is a view), plus what the cache keeps beyond it (dropout's float mask, LRN's d and
  d^-beta, LOCAL's patch matrix), plus the layer's transient arrays (padded batch-last copies);
- backward: all outputs are still held (the trainer clears the caches after the step); at layer i the
  upstream gradient dout_i, the new dx_i and the layer's backward temporaries are live on top (the first
  layer computes no dx); SGD's ``lr * g`` (momentum's ...) lives during the update, after backward.

peak(train) = fixed + scratch + sum(outputs + keeps) + max(largest P_i for SGD,
              max_i max(forward_i, dout_i + dx_i + backward_i)).
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
OVERHEAD_BYTES = 96 * 1024
#: the same for ``predict`` (no optimizer, no caches)
INFERENCE_OVERHEAD_BYTES = 64 * 1024
IN_PLACE_AFTER = frozenset({"CONV", "FC", "BN", "LOCAL"})


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
                 prev_fresh: bool, x_batch_last: bool = True, need_dx: bool = True) -> LayerMemory:
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
    if kind in ("RELU",) and prev_fresh:
        out = 0
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
    fresh, bl, first = False, False, True  # the input batch is (N, C, H, W) contiguous
    for n, layer, i, o in _leaves(net, input_shape):
        layers.append(layer_memory(n, layer, i, o, N, bpv, fresh, bl, need_dx=not first))
        kind = str(getattr(layer, "kind", "")).upper()
        fresh = kind in IN_PLACE_AFTER
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
    acts = sum(lm.output + lm.keeps for lm in layers)
    scratch = _scratch_total(layers, "scratch")
    transient = 0 if adam else largest
    for lm in layers:
        transient = max(transient, lm.forward_scratch, lm.dout + lm.dx + lm.backward_scratch)
    train_peak = fixed + scratch + acts + transient
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
