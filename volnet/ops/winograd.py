"""Winograd F(2x2, 3x3) convolution for 3x3 filters at stride 1 (Lavin & Gray 2016).

A direct (or im2col) 3x3 convolution spends 36 multiplies per 2x2 output tile and input channel;
Winograd's minimal filtering algorithm spends 16 (2.25x fewer). For one 4x4 input tile d (stride 2
between tiles: neighbouring tiles overlap by 2) and one 3x3 filter g:

    Y (2x2) = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise over the 4x4 "Winograd domain")

    B^T = [[1, 0,-1, 0],      G = [[ 1,   0,   0 ],     A^T = [[1, 1, 1, 0],
           [0, 1, 1, 0],           [ .5,  .5,  .5],            [0, 1,-1, 1]]
           [0,-1, 1, 0],           [ .5, -.5,  .5],
           [0,-1, 0, 1]]           [ 0,   0,   1 ]]

Summed over input channels, the elementwise product becomes 16 independent matrix products, one per
Winograd-domain position (a, b):

    M[ab] (K x P) = U[ab] (K x C) @ V[ab] (C x P),   U = G g G^T (filters),  V = B^T d B (input tiles)

with P = N * ceil(Ho/2) * ceil(Wo/2) tiles; ``np.matmul`` on the (16, K, C) x (16, C, P) stacks runs the
16 GEMMs. The transforms are done over all tiles at once with strided slice arithmetic (each is a few
passes over memory, no Python loop over tiles).

Backward (every step is the adjoint of a forward step, so the gradients are exact, not approximations):

- ``dM[ab] = (A dY A^T)[ab]`` from the non-overlapping 2x2 tiles of dout (cheap);
- ``dU[ab] = dM[ab] @ V[ab]^T`` (16 GEMMs, V recomputed from x), ``dw = G^T dU G``;
- ``dV[ab] = U[ab]^T @ dM[ab]`` (16 GEMMs), ``dx`` = overlap-add of ``B dV B^T`` over the tiles.

Arrays follow :mod:`volnet.ops.conv`: x (N, C, H, W) of any memory order (channel-major from a previous
conv is free), w (K, C, 3, 3); out (N, K, Ho, Wo) returned as a view of a channel-major (K, N, Ho, Wo)
buffer, dx likewise. Padding may be 0, 1 or 2 per side (``pt, pb, pl, pr`` of the conv geometry).
Accuracy: float32 agrees with im2col to a few 1e-7 relative (F(2x2,3x3) has small transform constants);
F(4x4,3x3) would save more multiplies but its error grows ~8x, so it is not used.

:mod:`volnet.ops.conv` picks this path automatically for the shapes where it measured faster (see
``_choose_algo`` there and BENCHMARKS.md); ``conv_forward(..., algo="winograd")`` forces it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from volnet.ops.conv import ConvCache, Geometry

__all__ = ["BT", "G", "AT", "winograd_supported", "winograd_forward", "winograd_backward",
           "filter_transform", "clear_workspace"]

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, 1]], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# scratch buffers (reused across calls: fresh large arrays cost page faults)
# ---------------------------------------------------------------------------------------------
_tls = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread scratch array for ``name`` (grows as needed); valid until the next use of ``name``."""
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = bufs.get(name)
    if buf is None or buf.nbytes < nbytes:
        bufs[name] = None
        buf = bufs[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def clear_workspace() -> None:
    """Free this thread's Winograd scratch buffers."""
    _tls.bufs = {}


# ---------------------------------------------------------------------------------------------
# applicability
# ---------------------------------------------------------------------------------------------
def winograd_supported(g: Geometry) -> bool:
    """True for 3x3 filters, stride 1, dilation 1, padding 0..2 on every side (dx needs 2 - P >= 0)."""
    return (
        g.Fh == 3 and g.Fw == 3 and g.Sh == 1 and g.Sw == 1 and g.Dh == 1 and g.Dw == 1
        and max(g.pt, g.pb, g.pl, g.pr) <= 2 and g.Ho >= 1 and g.Wo >= 1
    )


# ---------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------
def filter_transform(w: np.ndarray) -> np.ndarray:
    """U = G g G^T for every filter: w (K, C, 3, 3) -> (16, K, C) (index a*4 + b), w's dtype."""
    Gt = G.astype(w.dtype)
    U = np.matmul(np.matmul(Gt, w), Gt.T)  # (K, C, 4, 4)
    K, C = w.shape[:2]
    return np.ascontiguousarray(U.reshape(K, C, 16).transpose(2, 0, 1))


def _pad_tiles(x: np.ndarray, pt: int, pl: int, th: int, tw: int) -> np.ndarray:
    """x (N, C, H, W) -> zero-padded, column-deinterleaved (2, C, N, 2*th + 2, tw + 1) scratch copy.

    ``xp[e, c, n, r, j]`` is padded pixel (row r, column 2j + e); padded row r is input row r - pt and
    padded column q is input column q - pl (zero outside the input: the top/left padding, the
    bottom/right padding and the round-up to whole tiles). Splitting even and odd columns once here makes
    every later transform pass read unit-stride memory.
    """
    N, C, H, W = x.shape
    Hp = 2 * th + 2
    xcn = x.transpose(1, 0, 2, 3)
    xp = _scratch("xp", (2, C, N, Hp, tw + 1), x.dtype)
    h1 = min(H, Hp - pt)
    xp[:, :, :, :pt] = 0
    xp[:, :, :, pt + h1:] = 0
    for e in range(2):
        c0 = (e - pl) % 2  # first input column landing on a padded column of parity e
        j0 = (c0 + pl) // 2  # its index among the padded columns of that parity
        n = max(0, min((W - c0 + 1) // 2, tw + 1 - j0))
        dst = xp[e, :, :, pt:pt + h1]
        dst[..., :j0] = 0
        dst[..., j0 + n:] = 0
        dst[..., j0:j0 + n] = xcn[:, :, :h1, c0:c0 + 2 * n - 1:2]
    return xp


def _input_transform(xp: np.ndarray, th: int, tw: int, name: str = "V") -> np.ndarray:
    """V = B^T d B for every 4x4 tile (stride 2) of the padded input -> (16, C, N, th, tw).

    xp: from :func:`_pad_tiles`. Columns first (unit-stride slices of the even/odd halves), then rows.
    """
    C, N, Hp = xp.shape[1:4]
    dt = xp.dtype
    # columns: t_b[:, :, r, j] = sum_k BT[b, k] xp[r, 2j + k]; taps k = 0..3 are even[j], odd[j],
    # even[j+1], odd[j+1]
    c = [xp[0, ..., 0:tw], xp[1, ..., 0:tw], xp[0, ..., 1:tw + 1], xp[1, ..., 1:tw + 1]]
    t = _scratch("t", (4, C, N, Hp, tw), dt)
    np.subtract(c[0], c[2], out=t[0])
    np.add(c[1], c[2], out=t[1])
    np.subtract(c[2], c[1], out=t[2])
    np.subtract(c[3], c[1], out=t[3])
    V = _scratch(name, (16, C, N, th, tw), dt)
    for b in range(4):  # rows: V[a, b][i] = sum_k BT[a, k] t_b[2i + k]
        r = [t[b][:, :, k:k + 2 * th:2] for k in range(4)]
        np.subtract(r[0], r[2], out=V[b])
        np.add(r[1], r[2], out=V[4 + b])
        np.subtract(r[2], r[1], out=V[8 + b])
        np.subtract(r[3], r[1], out=V[12 + b])
    return V


def _output_transform(M: np.ndarray, out6: np.ndarray) -> None:
    """Y = A^T M A per tile: M (16, K, N, th, tw) -> out6 (K, N, th, 2, tw, 2) (any strides)."""
    K, N, th, tw = M.shape[1:]
    s = _scratch("s", (2, 4, K, N, th, tw), M.dtype)
    for b in range(4):  # s[0][b] = M0b + M1b + M2b ; s[1][b] = M1b - M2b + M3b
        np.add(M[b], M[4 + b], out=s[0, b])
        s[0, b] += M[8 + b]
        np.subtract(M[4 + b], M[8 + b], out=s[1, b])
        s[1, b] += M[12 + b]
    for r in range(2):
        q = s[r]
        np.add(q[0], q[1], out=out6[:, :, :, r, :, 0])
        out6[:, :, :, r, :, 0] += q[2]
        np.subtract(q[1], q[2], out=out6[:, :, :, r, :, 1])
        out6[:, :, :, r, :, 1] += q[3]


def _output_transform_adjoint(d6: np.ndarray, name: str = "dM") -> np.ndarray:
    """dM = A dY A^T per tile: d6 (K, N, th, 2, tw, 2) -> (16, K, N, th, tw) (adjoint of the above)."""
    K, N, th, _, tw, _ = d6.shape
    dt = d6.dtype
    # along the width: e[r][b] = sum_s A[b, s] dY[r, s]; A rows: [1,0],[1,1],[1,-1],[0,1]
    e = _scratch("e", (2, 4, K, N, th, tw), dt)
    for r in range(2):
        y0, y1 = d6[:, :, :, r, :, 0], d6[:, :, :, r, :, 1]
        e[r, 0] = y0
        np.add(y0, y1, out=e[r, 1])
        np.subtract(y0, y1, out=e[r, 2])
        e[r, 3] = y1
    dM = _scratch(name, (16, K, N, th, tw), dt)
    for b in range(4):
        dM[b] = e[0, b]
        np.add(e[0, b], e[1, b], out=dM[4 + b])
        np.subtract(e[0, b], e[1, b], out=dM[8 + b])
        dM[12 + b] = e[1, b]
    return dM


def _adjoint_axis(v: list[np.ndarray], out: np.ndarray, n: int, axis: int, tmp: np.ndarray) -> None:
    """Along one axis: out[2i + k] = sum_a BT[a, k] v[a][i], overlapping tiles summed.

    v: four arrays (..., n along ``axis``, ...); out has 2n + 2 entries along ``axis``; tmp is scratch
    of v's shape. BT's columns give z0 = v0, z1 = v1 - v2 - v3, z2 = v1 + v2 - v0, z3 = v3; even entries
    2i get z0[i] + z2[i-1], odd entries 2i+1 get z1[i] + z3[i-1].
    """
    def sl(start: int, stop: int, step: int = 2) -> tuple:
        return (slice(None),) * axis + (slice(start, stop, step),)

    v0, v1, v2, v3 = v
    out[sl(2 * n, 2 * n + 2, 1)] = 0
    out[sl(0, 2 * n)] = v0
    np.add(v1, v2, out=tmp)
    tmp -= v0
    out[sl(2, 2 * n + 2)] += tmp
    np.subtract(v1, v2, out=tmp)
    tmp -= v3
    out[sl(1, 2 * n)] = tmp
    out[sl(3, 2 * n + 2)] += v3


def _input_transform_adjoint(dV: np.ndarray, dxp: np.ndarray) -> None:
    """Overlap-add of B dV B^T over the tiles: dV (16, C, N, th, tw) -> dxp (C, N, 2th+2, 2tw+2)."""
    C, N, th, tw = dV.shape[1:]
    dt = dV.dtype
    u = _scratch("u", (4, C, N, th, 2 * tw + 2), dt)
    tmp = _scratch("tmp", (C, N, th, tw), dt)
    for a in range(4):  # along the width, for each row index a of the Winograd domain
        _adjoint_axis([dV[4 * a + b] for b in range(4)], u[a], tw, 3, tmp)
    tmp2 = _scratch("tmp", (C, N, th, 2 * tw + 2), dt)
    _adjoint_axis([u[a] for a in range(4)], dxp, th, 2, tmp2)


# ---------------------------------------------------------------------------------------------
# forward / backward
# ---------------------------------------------------------------------------------------------
#: scratch budget per block of tile rows in the forward pass (bytes of V or M)
BLOCK_BYTES = 16 * 2**20


def _tiles(g: Geometry) -> tuple[int, int]:
    return (g.Ho + 1) // 2, (g.Wo + 1) // 2


def winograd_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: Geometry
) -> tuple[np.ndarray, Any]:
    """out = conv(x, w) + b for a 3x3 stride-1 conv by F(2x2, 3x3). Returns (out, None).

    x: (N, C, H, W); w: (K, C, 3, 3); b: (K,) or None; g: the conv geometry (padding pt/pl used; the
    bottom/right padding and the round-up to whole 2x2 tiles are zeros). out: (N, K, Ho, Wo), a view of
    a channel-major (K, N, 2*th, 2*tw) buffer (th, tw = tiles along H, W).
    """
    th, tw = _tiles(g)
    K, C = w.shape[:2]
    N = g.N
    xp = _pad_tiles(x, g.pt, g.pl, th, tw)
    U = filter_transform(w)
    bias = None if b is None else b.astype(x.dtype, copy=False)[:, None]
    out = np.empty((K, N, 2 * th, 2 * tw), dtype=x.dtype)
    out6 = out.reshape(K, N, th, 2, tw, 2)
    # blocks of tile rows keep the scratch (V, M: 16 x channels x tiles) under BLOCK_BYTES: bounded memory
    # for large images (VGG-16 at 224x224) and cache-friendlier passes; batch-64 CIFAR shapes fit in one
    rb = max(1, min(th, BLOCK_BYTES // (16 * max(C, K) * N * tw * x.dtype.itemsize)))
    for i0 in range(0, th, rb):
        i1 = min(th, i0 + rb)
        n = i1 - i0
        V = _input_transform(xp[:, :, :, 2 * i0:2 * i1 + 2], n, tw)
        M = _scratch("M", (16, K, N * n * tw), x.dtype)
        np.matmul(U, V.reshape(16, C, -1), out=M)
        if bias is not None:  # b enters every output through M[1,1] (coefficient 1 in all four outputs)
            M[5] += bias
        _output_transform(M.reshape(16, K, N, n, tw), out6[:, :, i0:i1])
    return out[:, :, :g.Ho, :g.Wo].transpose(1, 0, 2, 3), None


def winograd_backward(
    dout: np.ndarray, cache: ConvCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """dx, dw, db of :func:`winograd_forward`, each step the exact adjoint of a forward step.

    dM = A dY A^T (per 2x2 tile of dout), dU = dM V^T, dw = G^T dU G, dV = U^T dM,
    dx = overlap-add of B dV B^T. V is recomputed from the cached x (the cache keeps x only).
    """
    g, w, x = cache.geom, cache.w, cache.x
    th, tw = _tiles(g)
    K, C = w.shape[:2]
    N = g.N
    P = N * th * tw
    dt = x.dtype
    dcn = dout.transpose(1, 0, 2, 3)  # (K, N, Ho, Wo): free when dout is channel-major
    db = dcn.sum(axis=(1, 2, 3)) if cache.has_bias else None
    if g.Ho % 2 or g.Wo % 2:  # round up to whole tiles with zeros
        d = _scratch("dpad", (K, N, 2 * th, 2 * tw), dt)
        d[:, :, g.Ho:] = 0
        d[:, :, :g.Ho, g.Wo:] = 0
        d[:, :, :g.Ho, :g.Wo] = dcn
        dcn = d
    dM = _output_transform_adjoint(dcn.reshape(K, N, th, 2, tw, 2)).reshape(16, K, P)
    # dw: dU[ab] = dM[ab] @ V[ab]^T, then dw = G^T dU G
    xp = _pad_tiles(x, g.pt, g.pl, th, tw)
    V = _input_transform(xp, th, tw).reshape(16, C, P)
    dU = np.matmul(dM, V.transpose(0, 2, 1))  # (16, K, C)
    Gt = G.astype(dt)
    dw = np.ascontiguousarray(np.matmul(np.matmul(Gt.T, dU.transpose(1, 2, 0).reshape(K, C, 4, 4)), Gt))
    if not need_dx:
        return None, dw, db
    # dx: dV[ab] = U[ab]^T @ dM[ab] (V's buffer is free again), then the adjoint input transform
    U = filter_transform(w)
    dV = np.matmul(U.transpose(0, 2, 1), dM, out=V)
    dxp = np.empty((C, N, 2 * th + 2, 2 * tw + 2), dtype=dt)
    _input_transform_adjoint(dV.reshape(16, C, N, th, tw), dxp)
    # row r of dxp is input row r - pt; rows past the input belong to padding
    dx = dxp[:, :, g.pt:g.pt + g.H, g.pl:g.pl + g.W]
    if dx.shape[2] < g.H or dx.shape[3] < g.W:  # cannot happen for stride 1 (Hp >= pt + H); guard
        raise AssertionError("winograd backward: padded tile grid smaller than the input")
    return dx.transpose(1, 0, 2, 3), dw, db
