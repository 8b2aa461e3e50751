"""Pooling layer of the notes: max, average and L2-norm pooling over F x F windows with stride S.

The pooling layer operates independently on every depth slice: an input volume W x H x D gives
W2 x H2 x D with W2 = (W - F + 2P)/S + 1, H2 = (H - F + 2P)/S + 1 (``volnet.ops.sizes``). The common
setting is F=2, S=2 (discards 75% of the activations); overlapping pooling uses F=3, S=2.

Arrays are NCHW: x (N, D, H, W) -> out (N, D, H2, W2). ``size`` (F), ``stride`` (S) and ``pad`` (P)
take an int or an (h, w) pair. ``fit`` is ``"strict"`` (ShapeError when the windows do not tile the
input), ``"floor"`` (crop; PyTorch's default) or ``"ceil"`` (PyTorch ``ceil_mode=True``: one more
window on the bottom/right that may run past the padded input).

Modes:

- ``"max"``: out = max over the window. Padding (and the ceil region) counts as -inf, so a padded max
  pool (ResNet's 3x3/2 P1) never picks it. Backward routes the gradient to the argmax; on ties the first
  maximum in row-major window order gets it, as PyTorch does.
- ``"avg"``: out = sum over the window / divisor, as ``torch.nn.functional.avg_pool2d``. Padding counts
  as zeros. With ``count_include_pad=True`` the divisor is the window clipped to the padded input
  (H + 2P) x (W + 2P), i.e. the extra ceil region is never counted; with ``count_include_pad=False`` the
  divisor is the number of real input pixels in the window.
- ``"l2"``: out = sqrt(sum of squares over the window) (zero padding). Without padding this is
  ``torch.nn.functional.lp_pool2d(x, 2, F, S)``; note lp_pool2d has no padding, and with
  ``ceil_mode=True`` it rescales partial windows (it is avg_pool2d times F*F), whereas volnet always uses
  the plain sum over the window.

The fast kernels loop over the F*F window offsets with strided slices (no loop over batch or positions).
Max pool forward is F*F ``np.maximum`` passes (a reshape to (N, D, H2, F, W2, F) + ``max`` over two axes
measured 25x slower in NumPy 2.4); backward finds the first window offset equal to the max, and for
non-overlapping windows (S >= F) writes dx with no accumulation.
``pool_naive``/``pool_backward_naive`` are the loop-over-every-output oracles used in tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volnet import kernels
from volnet.errors import ShapeError, VolnetError
from volnet.ops.layout import BATCH_LAST, batch_last, empty_in_order, empty_like_layout, memory_order
from volnet.ops.sizes import padding_for, pair

MODES = ("max", "avg", "l2")

IntPair = int | tuple[int, int]


# --------------------------------------------------------------------------- geometry


def _geometry(
    x: np.ndarray, size: IntPair, stride: IntPair | None, mode: str, pad: IntPair, fit: str
) -> dict[str, Any]:
    """Validate the arguments and compute window geometry along both axes."""
    if mode not in MODES:
        raise VolnetError(f"pool: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if x.ndim != 4:
        raise ShapeError(
            f"pool: expected a 4-D (N, D, H, W) input, got shape {tuple(x.shape)} ({x.ndim}-D); "
            f"use x[None] for a single (D, H, W) volume"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise VolnetError(
            f"pool: expected a floating-point input, got dtype {x.dtype}; use x.astype(np.float32)"
        )
    Fh, Fw = pair(size, "size")
    Sh, Sw = pair(size if stride is None else stride, "stride")
    Ph, Pw = pair(pad, "pad")
    for name, F, P in (("height", Fh, Ph), ("width", Fw, Pw)):
        if P > F // 2:
            raise ShapeError(
                f"pool ({name}): padding P={P} is more than half the window F={F}; a window could lie "
                f"entirely in the padding. Use P <= {F // 2} (PyTorch's rule)"
            )
    N, C, H, W = x.shape
    Ho, pth, pbh = padding_for(H, Fh, Sh, Ph, 1, fit, what=f"pool (height H={H})")
    Wo, ptw, pbw = padding_for(W, Fw, Sw, Pw, 1, fit, what=f"pool (width W={W})")
    return dict(
        N=N, C=C, H=H, W=W, Fh=Fh, Fw=Fw, Sh=Sh, Sw=Sw, Ph=Ph, Pw=Pw, Ho=Ho, Wo=Wo,
        pads=((0, 0), (0, 0), (pth, pbh), (ptw, pbw)), mode=mode, x_shape=x.shape,
    )


def _divisor(g: dict[str, Any], count_include_pad: bool, dtype: np.dtype) -> np.ndarray:
    """avg_pool2d divisor per output position, shape (H2, W2), as PyTorch computes it."""

    def along(out: int, F: int, S: int, P: int, L: int) -> np.ndarray:
        start = np.arange(out) * S  # window start in padded coordinates
        end = np.minimum(start + F, L + 2 * P)  # the ceil region past the padded input never counts
        if not count_include_pad:
            start = np.maximum(start, P)
            end = np.minimum(end, L + P)
        return end - start

    dh = along(g["Ho"], g["Fh"], g["Sh"], g["Ph"], g["H"])
    dw = along(g["Wo"], g["Fw"], g["Sw"], g["Pw"], g["W"])
    return np.multiply.outer(dh, dw).astype(dtype)


def _full(shape: tuple[int, ...], like: np.ndarray, value: float, dtype: Any = None) -> np.ndarray:
    """An array of ``value`` in the memory layout of ``like`` (batch-last stays batch-last, so
    elementwise passes never mix layouts)."""
    return empty_like_layout(shape, like, dtype, fill=value)


def _pad(x: np.ndarray, pads: tuple, value: float) -> np.ndarray:
    if all(a == 0 and b == 0 for a, b in pads):
        return x
    (_, _), (_, _), (pt, pb), (pl, pr) = pads
    N, C, H, W = x.shape
    xp = _full((N, C, H + pt + pb, W + pl + pr), x, x.dtype.type(value))
    xp[:, :, pt:pt + H, pl:pl + W] = x
    return xp


def _window(xp: np.ndarray, g: dict[str, Any], i: int, j: int) -> np.ndarray:
    """Strided view of the input pixel at window offset (i, j) for every output position."""
    Sh, Sw = g["Sh"], g["Sw"]
    return xp[:, :, i : i + Sh * (g["Ho"] - 1) + 1 : Sh, j : j + Sw * (g["Wo"] - 1) + 1 : Sw]


# --------------------------------------------------------------------------- compiled max pool backward
# For batch-last memory (what CONV returns) with numba, max pool's backward is one compiled pass: for each
# window, in row-major order, the first offset whose value equals the max takes dout (as the NumPy
# passes below and PyTorch do), branch-free over the N contiguous images. (The forward stays F*F NumPy
# ``maximum`` passes: measured faster than a compiled loop that also records the argmax.)
def _k_maxpool_backward(xp, out, d, Fh, Fw, Sh, Sw, dxp, taken):  # pragma: no cover - compiled
    C, Ho, Wo, N = out.shape
    z = d.dtype.type(0)
    for c in range(C):
        for ho in range(Ho):
            for wo in range(Wo):
                for n in range(N):
                    taken[n] = False
                for i in range(Fh):
                    h = ho * Sh + i
                    for j in range(Fw):
                        w = wo * Sw + j
                        for n in range(N):
                            hit = (xp[c, h, w, n] == out[c, ho, wo, n]) & (not taken[n])
                            dxp[c, h, w, n] += d[c, ho, wo, n] if hit else z
                            taken[n] = taken[n] | hit


_MAXPOOL_BWD = kernels.jit(_k_maxpool_backward)


def _k_maxpool_backward_planes(xp, out, d, Fh, Fw, Sh, Sw, dxp):  # pragma: no cover - compiled
    """The same for arrays whose (H, W) planes are contiguous ((A, B, H, W) views: channel-major memory
    from F(2x2) Winograd or C order): per output pixel the first window offset equal to the max."""
    A, B, Ho, Wo = out.shape
    for a in range(A):
        for b in range(B):
            for ho in range(Ho):
                for wo in range(Wo):
                    m = out[a, b, ho, wo]
                    done = False
                    for i in range(Fh):
                        for j in range(Fw):
                            if not done and xp[a, b, ho * Sh + i, wo * Sw + j] == m:
                                dxp[a, b, ho * Sh + i, wo * Sw + j] += d[a, b, ho, wo]
                                done = True


_MAXPOOL_BWD_PLANES = kernels.jit(_k_maxpool_backward_planes)


def _planes(x: np.ndarray) -> tuple[int, int, int, int] | None:
    """The axes order that makes x an (A, B, H, W) array with contiguous-ish planes, or None."""
    order = memory_order(x)
    return (order[0], order[1], 2, 3) if order[2:] == (2, 3) else None


# --------------------------------------------------------------------------- fast kernels


def pool_forward(
    x: np.ndarray,
    size: IntPair = 2,
    stride: IntPair | None = None,
    mode: str = "max",
    pad: IntPair = 0,
    fit: str = "strict",
    count_include_pad: bool = True,
) -> tuple[np.ndarray, tuple]:
    """Pool every depth slice of x over F x F windows with stride S.

    x: (N, D, H, W); returns out (N, D, H2, W2) with H2 = (H - F + 2P)/S + 1, W2 = (W - F + 2P)/S + 1
    (rounded per ``fit``), and the cache for :func:`pool_backward`.

    - size F, stride S (None: S = F), pad P: int or (h, w); P <= F//2.
    - mode ``"max"`` | ``"avg"`` | ``"l2"`` (see the module docstring for the exact formulas).
    - fit ``"strict"`` | ``"floor"`` | ``"ceil"``; count_include_pad: avg pool divisor counts padding.

    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> pool_forward(x)[0][0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)

    See: ``torch.nn.functional.max_pool2d(x, F, S, P, ceil_mode=fit == "ceil")``,
    ``avg_pool2d(x, F, S, P, ceil_mode, count_include_pad)``, ``lp_pool2d(x, 2, F, S)``.
    """
    g = _geometry(x, size, stride, mode, pad, fit)
    N, C, Ho, Wo, Fh, Fw = g["N"], g["C"], g["Ho"], g["Wo"], g["Fh"], g["Fw"]
    if mode == "max":
        if (_MAXPOOL_BWD is not None and kernels.using("numba") and memory_order(x) != BATCH_LAST
                and _planes(x) is None):
            x = batch_last(x).transpose(3, 0, 1, 2)  # one fast copy; then a compiled backward applies
        xp = _pad(x, g["pads"], -np.inf)
        out = _window(xp, g, 0, 0).copy(order="K")  # keeps x's memory layout
        for k in range(1, Fh * Fw):
            np.maximum(out, _window(xp, g, k // Fw, k % Fw), out=out)
        return out, ("max", g, xp, out)
    xp = _pad(x, g["pads"], 0.0)
    if mode == "l2":
        out = _full((N, C, Ho, Wo), x, 0)
        for i in range(Fh):
            for j in range(Fw):
                v = _window(xp, g, i, j)
                out += v * v
        np.sqrt(out, out=out)
        return out, ("l2", g, xp, out)
    # avg
    out = _full((N, C, Ho, Wo), x, 0)
    for i in range(Fh):
        for j in range(Fw):
            out += _window(xp, g, i, j)
    div = _divisor(g, count_include_pad, x.dtype)
    out /= div
    return out, ("avg", g, div)


def pool_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Gradient of the pool with respect to its input: dx (N, D, H, W) from dout (N, D, H2, W2).

    max: dx gets dout at the (first) argmax of each window; avg: dout / divisor spread over the window;
    l2: dx = dout * x / out over the window (0 where out = 0). Overlapping windows add up.

    See: autograd of ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` / ``lp_pool2d``.
    """
    kind, g = cache[0], cache[1]
    N, C, Ho, Wo, Fh, Fw = g["N"], g["C"], g["Ho"], g["Wo"], g["Fh"], g["Fw"]
    if dout.shape != (N, C, Ho, Wo):
        raise ShapeError(f"pool backward: dout has shape {tuple(dout.shape)}, expected {(N, C, Ho, Wo)}")
    x_shape = g["x_shape"]
    (pth, pbh), (ptw, pbw) = g["pads"][2], g["pads"][3]
    like = cache[2] if kind in ("max", "l2") else dout  # the padded input's layout where it is cached
    if memory_order(like) == BATCH_LAST and memory_order(dout) != BATCH_LAST:
        dout = batch_last(dout).transpose(3, 0, 1, 2)  # one compiled transposing copy
    elif memory_order(like) != memory_order(dout):  # one small copy, then no mixed-layout passes
        d = _full(dout.shape, like, 0, dout.dtype)
        d[...] = dout
        dout = d
    dxp = _full((N, C, x_shape[2] + pth + pbh, x_shape[3] + ptw + pbw), like, 0, dout.dtype)
    if (kind == "max" and _MAXPOOL_BWD is not None and kernels.using("numba")
            and memory_order(dxp) == BATCH_LAST and memory_order(cache[2]) == BATCH_LAST):
        xp, out = cache[2], cache[3]
        _MAXPOOL_BWD(xp.transpose(1, 2, 3, 0), batch_last(out), batch_last(dout), Fh, Fw, g["Sh"], g["Sw"],
                     dxp.transpose(1, 2, 3, 0), np.empty(N, dtype=np.bool_))
    elif (kind == "max" and _MAXPOOL_BWD_PLANES is not None and kernels.using("numba")
          and (ax := _planes(cache[2])) is not None
          and memory_order(dxp) == memory_order(dout) == memory_order(cache[2])):
        # no copy of x: its (H, W) planes are read in place
        _MAXPOOL_BWD_PLANES(cache[2].transpose(ax), cache[3].transpose(ax), dout.transpose(ax), Fh, Fw,
                            g["Sh"], g["Sw"], dxp.transpose(ax))
    elif kind == "max":
        # Route dout to the first window offset (row-major) whose value equals the max, as PyTorch does.
        xp, out = cache[2], cache[3]
        disjoint = g["Sh"] >= Fh and g["Sw"] >= Fw  # non-overlapping windows: assign, no add needed
        taken = np.zeros_like(out, dtype=bool)
        hit = np.empty_like(out, dtype=bool)
        tmp = None if disjoint else np.empty_like(dout)
        for k in range(Fh * Fw):
            i, j = k // Fw, k % Fw
            np.equal(_window(xp, g, i, j), out, out=hit)
            if k:
                np.greater(hit, taken, out=hit)  # hit and not taken
            if k < Fh * Fw - 1:
                taken |= hit
            if tmp is None:
                np.multiply(dout, hit, out=_window(dxp, g, i, j))
            else:
                np.multiply(dout, hit, out=tmp)
                _window(dxp, g, i, j)[...] += tmp
    elif kind == "avg":
        d = dout / cache[2]
        for i in range(Fh):
            for j in range(Fw):
                _window(dxp, g, i, j)[...] += d
    else:  # l2
        xp, out = cache[2], cache[3]
        d = np.zeros_like(dout)
        np.divide(dout, out, out=d, where=out > 0)
        for i in range(Fh):
            for j in range(Fw):
                _window(dxp, g, i, j)[...] += _window(xp, g, i, j) * d
    if pth or pbh or ptw or pbw:
        return dxp[:, :, pth : pth + x_shape[2], ptw : ptw + x_shape[3]].copy(order="K")
    return dxp


def global_avg_pool_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Average every depth slice to one number: x (N, D, H, W) -> out (N, D, 1, 1).

    out[n, d] = (1 / (H*W)) * sum_{h, w} x[n, d, h, w] (GoogLeNet/ResNet replace FC layers by this).

    See: ``torch.nn.functional.adaptive_avg_pool2d(x, 1)``.
    """
    if x.ndim != 4:
        raise ShapeError(
            f"global avg pool: expected a 4-D (N, D, H, W) input, got shape {tuple(x.shape)} ({x.ndim}-D)"
        )
    return x.mean(axis=(2, 3), keepdims=True), (x.shape, memory_order(x))


def global_avg_pool_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dx (N, D, H, W) = dout (N, D, 1, 1) / (H*W), broadcast over every position."""
    shape, order = cache
    N, C, H, W = shape
    if dout.shape != (N, C, 1, 1):
        raise ShapeError(
            f"global avg pool backward: dout has shape {tuple(dout.shape)}, expected {(N, C, 1, 1)}"
        )
    dx = empty_in_order(shape, order, dout.dtype)  # in the input's memory layout (batch-last after CONV)
    dx[...] = dout / dout.dtype.type(H * W)
    return dx


# --------------------------------------------------------------------------- naive oracles


def _naive_windows(g: dict[str, Any], oh: int, ow: int) -> tuple[range, range, int, int]:
    """Real input rows/cols of a window and its avg divisors (include pad / exclude pad)."""
    h0, w0 = oh * g["Sh"] - g["Ph"], ow * g["Sw"] - g["Pw"]
    h1, w1 = h0 + g["Fh"], w0 + g["Fw"]
    # padded-input extent (ceil region beyond it is never counted)
    inc = (min(h1, g["H"] + g["Ph"]) - h0) * (min(w1, g["W"] + g["Pw"]) - w0)
    rows = range(max(h0, 0), min(h1, g["H"]))
    cols = range(max(w0, 0), min(w1, g["W"]))
    return rows, cols, inc, len(rows) * len(cols)


def pool_naive(
    x: np.ndarray,
    size: IntPair = 2,
    stride: IntPair | None = None,
    mode: str = "max",
    pad: IntPair = 0,
    fit: str = "strict",
    count_include_pad: bool = True,
) -> np.ndarray:
    """Loop version of :func:`pool_forward` (one Python iteration per output number); the test oracle."""
    g = _geometry(x, size, stride, mode, pad, fit)
    out = np.zeros((g["N"], g["C"], g["Ho"], g["Wo"]), dtype=x.dtype)
    for n in range(g["N"]):
        for c in range(g["C"]):
            for oh in range(g["Ho"]):
                for ow in range(g["Wo"]):
                    rows, cols, inc, exc = _naive_windows(g, oh, ow)
                    vals = [x[n, c, h, w] for h in rows for w in cols]
                    if mode == "max":
                        best = vals[0]
                        for v in vals[1:]:
                            if v > best:
                                best = v
                        out[n, c, oh, ow] = best
                    elif mode == "avg":
                        out[n, c, oh, ow] = sum(vals) / (inc if count_include_pad else exc)
                    else:
                        out[n, c, oh, ow] = np.sqrt(sum(v * v for v in vals))
    return out


def pool_backward_naive(
    dout: np.ndarray,
    x: np.ndarray,
    size: IntPair = 2,
    stride: IntPair | None = None,
    mode: str = "max",
    pad: IntPair = 0,
    fit: str = "strict",
    count_include_pad: bool = True,
) -> np.ndarray:
    """Loop version of :func:`pool_backward` for the same arguments as :func:`pool_naive`."""
    g = _geometry(x, size, stride, mode, pad, fit)
    dx = np.zeros_like(x)
    for n in range(g["N"]):
        for c in range(g["C"]):
            for oh in range(g["Ho"]):
                for ow in range(g["Wo"]):
                    rows, cols, inc, exc = _naive_windows(g, oh, ow)
                    d = dout[n, c, oh, ow]
                    pos = [(h, w) for h in rows for w in cols]
                    if mode == "max":
                        best = pos[0]
                        for p in pos[1:]:
                            if x[n, c, p[0], p[1]] > x[n, c, best[0], best[1]]:
                                best = p
                        dx[n, c, best[0], best[1]] += d
                    elif mode == "avg":
                        for h, w in pos:
                            dx[n, c, h, w] += d / (inc if count_include_pad else exc)
                    else:
                        norm = np.sqrt(sum(x[n, c, h, w] ** 2 for h, w in pos))
                        for h, w in pos:
                            dx[n, c, h, w] += d * x[n, c, h, w] / norm if norm > 0 else 0
    return dx
