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
16 GEMMs. Forward and backward work on blocks of tile rows (``BLOCK_BYTES`` of scratch, whatever the
image size); within a block the transforms are strided slice arithmetic over all its tiles (a few passes
over memory, no Python loop over tiles).

Backward (every step is the adjoint of a forward step, so the gradients are exact, not approximations):

- ``dM[ab] = (A dY A^T)[ab]`` from the non-overlapping 2x2 tiles of dout (cheap);
- ``dU[ab] = dM[ab] @ V[ab]^T`` (16 GEMMs, V recomputed from x), ``dw = G^T dU G``;
- ``dV[ab] = U[ab]^T @ dM[ab]`` (16 GEMMs), ``dx`` = overlap-add of ``B dV B^T`` over the tiles.

Arrays follow :mod:`volnet.ops.conv`: x (N, C, H, W) of any memory order (channel-major from a previous
conv is free), w (K, C, 3, 3); out (N, K, Ho, Wo) returned as a view of a channel-major (K, N, Ho, Wo)
buffer, dx likewise. Padding may be 0, 1 or 2 per side (``pt, pb, pl, pr`` of the conv geometry).
Accuracy: float32 agrees with im2col to a few 1e-7 relative (F(2x2,3x3) has small transform constants);
F(4x4,3x3), below, saves more multiplies at ~10x the float32 error.

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
           "filter_transform", "clear_workspace", "winograd_memory"]

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
        bufs[name] = buf = None  # the old buffer is freed before the larger one is allocated
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
    K, C = w.shape[:2]
    return _kron_gemm(np.kron(G, G), w.reshape(K * C, 9).T, w.dtype).reshape(16, K, C)


#: columns (filters x channels) per float64 GEMM of the filter transforms: bounds their temporaries
#: (36 x 8192 float64 = 2.4 MB) whatever the layer (VGG-16's 512 x 512 would otherwise take 75 MB)
KRON_COLUMNS = 8192


def _kron_gemm(m: np.ndarray, a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """m @ a in float64 over blocks of ``KRON_COLUMNS`` columns, each rounded once to ``dtype``.

    With m = kron(G, G) (n*n, 9) and a (9, K*C) the filters: U[a*n + b] = sum_ij G[a, i] G[b, j] g[i*3 + j]
    (measured 30x faster than K*C batched 6x3 @ 3x3 products for K = C = 128); with m = kron(G, G)^T
    and a = dU (n*n, K*C): its adjoint, dw (9, K*C).
    """
    out = np.empty((m.shape[0], a.shape[1]), dtype=dtype)
    for j in range(0, a.shape[1], KRON_COLUMNS):
        out[:, j:j + KRON_COLUMNS] = m @ a[:, j:j + KRON_COLUMNS].astype(np.float64)
    return out


def _pad_tiles(x: np.ndarray, pt: int, pl: int, tw: int, r0: int, nr: int) -> np.ndarray:
    """Padded rows r0 .. r0 + nr of x (N, C, H, W) -> column-deinterleaved (2, C, N, nr, tw + 1) scratch.

    ``xp[e, c, n, k, j]`` is padded pixel (row r0 + k, column 2j + e); padded row r is input row r - pt
    and padded column q is input column q - pl (zero outside the input: the top/left padding, the
    bottom/right padding and the round-up to whole tiles). Splitting even and odd columns once here makes
    every later transform pass read unit-stride memory; a block of tile rows i0 .. i0 + n needs padded
    rows 2 i0 .. 2 (i0 + n) + 2.
    """
    N, C, H, W = x.shape
    xcn = x.transpose(1, 0, 2, 3)
    xp = _scratch("xp", (2, C, N, nr, tw + 1), x.dtype)
    a, b = max(0, r0 - pt), min(H, r0 + nr - pt)  # the input rows inside this window
    lo = min(nr, a + pt - r0)  # where input row a lands in the window
    hi = lo + max(0, b - a)
    xp[:, :, :, :lo] = 0
    xp[:, :, :, hi:] = 0
    if hi == lo:
        return xp
    for e in range(2):
        c0 = (e - pl) % 2  # first input column landing on a padded column of parity e
        j0 = (c0 + pl) // 2  # its index among the padded columns of that parity
        n = max(0, min((W - c0 + 1) // 2, tw + 1 - j0))
        dst = xp[e, :, :, lo:hi]
        dst[..., :j0] = 0
        dst[..., j0 + n:] = 0
        dst[..., j0:j0 + n] = xcn[:, :, a:b, c0:c0 + 2 * n - 1:2]
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
#: scratch budget per block of tile rows, forward and backward (bytes of V, M or dM: 16 x channels x
#: tiles of the block); the other scratch of a block is at most half of it each. Whole-grid scratch took
#: 0.8 GB at 224x224x64, batch 4 (BENCHMARKS.md "Memory")
BLOCK_BYTES = 4 * 2**20
#: ... but at least this many tiles per block: each block adds its (16, K, C) share to dU, a pass over
#: memory that costs about 30/P of the block's GEMMs (measured: P = 112 made the 28x28x512 backward 30%
#: slower; from P ~ 1000 blocks are as fast as one block for the whole grid)
BLOCK_MIN_TILES = 1024


def _tiles(g: Geometry) -> tuple[int, int]:
    return (g.Ho + 1) // 2, (g.Wo + 1) // 2


def _row_block2(g: Geometry, K: int, itemsize: int) -> int:
    """Tile rows per block of F(2x2): 16 x max(C, K) x tiles of the block under BLOCK_BYTES, at least
    BLOCK_MIN_TILES tiles, at most the whole grid."""
    th, tw = _tiles(g)
    per_row = g.N * tw
    budget = BLOCK_BYTES // (16 * max(g.C, K) * per_row * itemsize)
    return max(1, min(th, max(budget, -(-BLOCK_MIN_TILES // per_row))))


def _block_input_transform(x: np.ndarray, g: Geometry, tw: int, i0: int, n: int) -> np.ndarray:
    """V of tile rows i0 .. i0 + n: the padded input rows 2 i0 .. 2 (i0 + n) + 2, transformed."""
    return _input_transform(_pad_tiles(x, g.pt, g.pl, tw, 2 * i0, 2 * n + 2), n, tw)


def winograd_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: Geometry
) -> tuple[np.ndarray, Any]:
    """out = conv(x, w) + b for a 3x3 stride-1 conv by F(2x2, 3x3). Returns (out, None).

    x: (N, C, H, W); w: (K, C, 3, 3); b: (K,) or None; g: the conv geometry (padding pt/pl used; the
    bottom/right padding and the round-up to whole 2x2 tiles are zeros). out: (N, K, Ho, Wo), a view of
    a channel-major (K, N, 2*th, 2*tw) buffer (th, tw = tiles along H, W). Blocks of tile rows
    (``BLOCK_BYTES``) bound the scratch whatever the image size.
    """
    th, tw = _tiles(g)
    K, C = w.shape[:2]
    N = g.N
    U = filter_transform(w)
    bias = None if b is None else b.astype(x.dtype, copy=False)[:, None]
    out = np.empty((K, N, 2 * th, 2 * tw), dtype=x.dtype)
    out6 = out.reshape(K, N, th, 2, tw, 2)
    rb = _row_block2(g, K, x.dtype.itemsize)
    for i0 in range(0, th, rb):
        n = min(rb, th - i0)
        V = _block_input_transform(x, g, tw, i0, n)
        M = _scratch("M", (16, K, N * n * tw), x.dtype)
        np.matmul(U, V.reshape(16, C, -1), out=M)
        if bias is not None:  # b enters every output through M[1,1] (coefficient 1 in all four outputs)
            M[5] += bias
        _output_transform(M.reshape(16, K, N, n, tw), out6[:, :, i0:i0 + n])
    return out[:, :, :g.Ho, :g.Wo].transpose(1, 0, 2, 3), None


def _dout_rows(dcn: np.ndarray, g: Geometry, tw: int, i0: int, n: int) -> np.ndarray:
    """Output rows 2 i0 .. 2 (i0 + n) of dout (K, N, Ho, Wo) as (K, N, n, 2, tw, 2) tiles: a view, or a
    zero-padded scratch copy where the block reaches past Ho or Wo is odd (round-up to whole tiles)."""
    K, N = dcn.shape[:2]
    r0, r1 = 2 * i0, 2 * (i0 + n)
    if r1 <= g.Ho and 2 * tw == g.Wo:
        return dcn[:, :, r0:r1].reshape(K, N, n, 2, tw, 2)
    d = _scratch("dpad", (K, N, 2 * n, 2 * tw), dcn.dtype)
    h = min(g.Ho, r1) - r0
    d[:, :, h:] = 0
    d[:, :, :h, g.Wo:] = 0
    d[:, :, :h, :g.Wo] = dcn[:, :, r0:r0 + h]
    return d.reshape(K, N, n, 2, tw, 2)


def winograd_backward(
    dout: np.ndarray, cache: ConvCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """dx, dw, db of :func:`winograd_forward`, each step the exact adjoint of a forward step.

    Per block of tile rows (as the forward): dM = A dY A^T (per 2x2 tile of dout), dU += dM V^T (V
    recomputed from the cached x, the cache keeps x only), dV = U^T dM, and the overlap-add of
    B dV B^T into dx's rows (two rows shared with the previous block are added, not overwritten);
    then dw = G^T dU G.
    """
    g, w, x = cache.geom, cache.w, cache.x
    th, tw = _tiles(g)
    K, C = w.shape[:2]
    N = g.N
    dt = x.dtype
    dcn = dout.transpose(1, 0, 2, 3)  # (K, N, Ho, Wo): free when dout is channel-major
    db = dcn.sum(axis=(1, 2, 3)) if cache.has_bias else None
    UT = filter_transform(w).transpose(0, 2, 1) if need_dx else None
    dU = np.zeros((16, K, C), dtype=dt)
    dxp = np.empty((C, N, 2 * th + 2, 2 * tw + 2), dtype=dt) if need_dx else None
    rb = _row_block2(g, K, dt.itemsize)
    for i0 in range(0, th, rb):
        n = min(rb, th - i0)
        dM = _output_transform_adjoint(_dout_rows(dcn, g, tw, i0, n)).reshape(16, K, -1)
        V = _block_input_transform(x, g, tw, i0, n).reshape(16, C, -1)
        dU += np.matmul(dM, V.transpose(0, 2, 1), out=_scratch("dUb", (16, K, C), dt))
        if dxp is None:
            continue
        dV = np.matmul(UT, dM, out=V)  # V is not needed any more
        rows = dxp[:, :, 2 * i0:2 * (i0 + n) + 2]
        carry = None
        if i0:  # rows 2 i0, 2 i0 + 1 already hold the previous block's share
            carry = _scratch("carry", (C, N, 2, 2 * tw + 2), dt)
            carry[...] = rows[:, :, :2]
        _input_transform_adjoint(dV.reshape(16, C, N, n, tw), rows)
        if carry is not None:
            rows[:, :, :2] += carry
    dw = np.ascontiguousarray(_kron_gemm(np.kron(G, G).T, dU.reshape(16, K * C), dt).T).reshape(K, C, 3, 3)
    if dxp is None:
        return None, dw, db
    # row r of dxp is input row r - pt; rows past the input belong to padding
    dx = dxp[:, :, g.pt:g.pt + g.H, g.pl:g.pl + g.W]
    if dx.shape[2] < g.H or dx.shape[3] < g.W:  # cannot happen for stride 1 (Hp >= pt + H); guard
        raise AssertionError("winograd backward: padded tile grid smaller than the input")
    return dx.transpose(1, 0, 2, 3), dw, db


# =============================================================================================
# F(4x4, 3x3): 36 multiplies per 4x4 output tile instead of 144 (4x fewer than direct/im2col)
# =============================================================================================
# One 6x6 input tile d (stride 4 between tiles: neighbours overlap by 2) and one 3x3 filter g give
#
#     Y (4x4) = A4^T [ (G4 g G4^T) * (B4^T d B4) ] A4          (Lavin & Gray 2016; points 0, +-1, +-2, inf)
#
# Summed over channels: 36 GEMMs M[ab] (K x P) = U[ab] (K x C) @ V[ab] (C x P), P = N * th * tw tiles
# (th, tw = ceil(Ho/4), ceil(Wo/4)). The larger transform constants cost accuracy: float32 error is about
# 10x that of F(2x2, 3x3) (measured: ~5e-6 relative to a float64 reference, vs ~5e-7 for im2col).
# The transforms run as compiled kernels (numba, :mod:`volnet.kernels`); their NumPy twins below are
# the reference the tests compare with and the path used without numba.
BT4 = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G4 = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]], dtype=np.float64)
AT4 = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], dtype=np.float64)

__all__ += ["BT4", "G4", "AT4", "filter_transform4", "winograd4_forward", "winograd4_backward"]


def filter_transform4(w: np.ndarray) -> np.ndarray:
    """U = G4 g G4^T for every filter: w (K, C, 3, 3) -> (36, K, C) (index a*6 + b), w's dtype.

    Computed in float64 and rounded once (1/6, 1/12 and 1/24 are not exact in float32).
    """
    K, C = w.shape[:2]
    return _kron_gemm(np.kron(G4, G4), w.reshape(K * C, 9).T, w.dtype).reshape(36, K, C)


def _tiles4(g: Geometry) -> tuple[int, int]:
    return (g.Ho + 3) // 4, (g.Wo + 3) // 4


# ---- NumPy twins (reference and fallback) ---------------------------------------------------
# Layout: the F(4x4) path works on batch-last memory (:mod:`volnet.ops.layout`): x is read as
# xT = x.transpose(1, 2, 3, 0) (C, H, W, N) and the output is written as (K, Ho, Wo, N), returned as an
# (N, K, Ho, Wo) view. Every tile transform then runs over the N images (contiguous: long vectors for the
# compiled loops), and a following conv finds its input in that layout already. The work is split into
# blocks of tile rows i0..i0+ni (all images), whose transformed tiles stay in cache between the
# transform and the GEMMs; a block's tiles are numbered p = ((i - i0)*tw + j)*N + n.
def _np_input4(xT: np.ndarray, pt: int, pl: int, tw: int, i0: int, ni: int) -> np.ndarray:
    """V = B4^T d B4 for the 6x6 tiles of tile rows i0..i0+ni: xT (C, H, W, N) -> (36, C, ni*tw*N)."""
    C, H, W, N = xT.shape
    Hb, Wp = 4 * ni + 2, 4 * tw + 2
    xp = np.zeros((C, Hb, Wp, N), dtype=xT.dtype)  # padded rows 4*i0 .. 4*i0 + Hb
    h0 = 4 * i0 - pt
    lo, hi = max(0, h0), min(H, h0 + Hb)
    w_ = min(W, Wp - pl)
    if hi > lo:
        xp[:, lo - h0:hi - h0, pl:pl + w_] = xT[:, lo:hi, :w_]
    tiles = np.lib.stride_tricks.sliding_window_view(xp, (6, 6), axis=(1, 2))[:, ::4, ::4]  # (C,ni,tw,N,6,6)
    bt = BT4.astype(xT.dtype)
    V = bt @ tiles @ bt.T
    return np.ascontiguousarray(V.transpose(4, 5, 0, 1, 2, 3)).reshape(36, C, ni * tw * N)


def _np_output4(M: np.ndarray, bias: np.ndarray, out: np.ndarray, tw: int, i0: int, ni: int) -> None:
    """Rows 4*i0.. of out = A4^T M A4 (+ bias), cropped: M (36, K, ni*tw*N) -> out (K, Ho, Wo, N)."""
    K, Ho, Wo, N = out.shape
    at = AT4.astype(M.dtype)
    m = M.reshape(6, 6, K, ni, tw, N).transpose(2, 3, 4, 5, 0, 1)  # (K, ni, tw, N, 6, 6)
    y = (at @ m @ at.T).transpose(0, 1, 4, 2, 5, 3).reshape(K, 4 * ni, 4 * tw, N)
    h1 = min(Ho, 4 * (i0 + ni))
    out[:, 4 * i0:h1] = y[:, :h1 - 4 * i0, :Wo] + bias[:, None, None, None]


def _np_output4_adjoint(dT: np.ndarray, tw: int, i0: int, ni: int) -> np.ndarray:
    """dM = A4 dY A4^T for tile rows i0..i0+ni: dT (K, Ho, Wo, N) -> (36, K, ni*tw*N).

    dY is zero past Ho, Wo."""
    K, Ho, Wo, N = dT.shape
    d = np.zeros((K, 4 * ni, 4 * tw, N), dtype=dT.dtype)
    h1 = min(Ho, 4 * (i0 + ni))
    d[:, :h1 - 4 * i0, :Wo] = dT[:, 4 * i0:h1]
    at = AT4.astype(dT.dtype)
    y = d.reshape(K, ni, 4, tw, 4, N).transpose(0, 1, 3, 5, 2, 4)  # (K, ni, tw, N, 4, 4)
    dm = at.T @ y @ at
    return np.ascontiguousarray(dm.transpose(4, 5, 0, 1, 2, 3)).reshape(36, K, ni * tw * N)


def _np_input4_adjoint(dV: np.ndarray, dxT: np.ndarray, pt: int, pl: int, tw: int, i0: int, ni: int) -> None:
    """Add the overlap-add of B4 dV B4^T over tile rows i0..i0+ni into dxT (C, H, W, N), padding cropped.

    Rows shared with the previous block (the first two) are added to; the others are assigned.
    """
    C, H, W, N = dxT.shape
    bt = BT4.astype(dV.dtype)
    v = dV.reshape(6, 6, C, ni, tw, N).transpose(2, 3, 4, 5, 0, 1)  # (C, ni, tw, N, 6, 6)
    d = bt.T @ v @ bt
    Hb = 4 * ni + 2
    dxp = np.zeros((C, Hb, 4 * tw + 2, N), dtype=dV.dtype)
    for r in range(6):
        for s in range(6):
            dxp[:, r:r + 4 * ni:4, s:s + 4 * tw:4] += d[:, :, :, :, r, s]
    h0 = 4 * i0 - pt
    for rr in range(Hb):
        h = h0 + rr
        if 0 <= h < H:
            if i0 > 0 and rr < 2:
                dxT[:, h] += dxp[:, rr, pl:pl + W]
            else:
                dxT[:, h] = dxp[:, rr, pl:pl + W]


# ---- compiled kernels (numba) ---------------------------------------------------------------
# Each works on one channel of one block of tile rows at a time: a zero-bordered scratch plane
# (rows, Wp, N) holds the padded input rows, and every tile's arithmetic runs as loops over the N images
# (contiguous: vectorised). ``k`` carries the constants 2, 4, 5, 8 in the array's dtype (a Python int
# would promote float32 to float64 inside numba).
def _k_input4(xT, pt, pl, tw, i0, ni, k, V, plane, T):  # pragma: no cover - compiled
    C, H, W, N = xT.shape
    c2, c4, c5 = k[0], k[1], k[2]
    Hb, Wp, _ = plane.shape
    w_end = min(W, Wp - pl)
    h0 = 4 * i0 - pt
    plane[:, :, :] = 0
    for c in range(C):
        for rr in range(Hb):
            h = h0 + rr
            if 0 <= h < H:
                for w in range(w_end):
                    for n in range(N):
                        plane[rr, w + pl, n] = xT[c, h, w, n]
        for il in range(ni):
            for j in range(tw):
                for r in range(6):
                    for n in range(N):
                        d0 = plane[4 * il + r, 4 * j, n]
                        d1 = plane[4 * il + r, 4 * j + 1, n]
                        d2 = plane[4 * il + r, 4 * j + 2, n]
                        d3 = plane[4 * il + r, 4 * j + 3, n]
                        d4 = plane[4 * il + r, 4 * j + 4, n]
                        d5 = plane[4 * il + r, 4 * j + 5, n]
                        T[r, 0, n] = c4 * d0 - c5 * d2 + d4
                        T[r, 1, n] = d3 + d4 - c4 * (d1 + d2)
                        T[r, 2, n] = d4 - d3 + c4 * (d1 - d2)
                        T[r, 3, n] = d4 - d2 + c2 * (d3 - d1)
                        T[r, 4, n] = d4 - d2 + c2 * (d1 - d3)
                        T[r, 5, n] = c4 * d1 - c5 * d3 + d5
                p0 = (il * tw + j) * N
                for b in range(6):
                    for n in range(N):
                        t0 = T[0, b, n]
                        t1 = T[1, b, n]
                        t2 = T[2, b, n]
                        t3 = T[3, b, n]
                        t4 = T[4, b, n]
                        t5 = T[5, b, n]
                        V[b, c, p0 + n] = c4 * t0 - c5 * t2 + t4
                        V[6 + b, c, p0 + n] = t3 + t4 - c4 * (t1 + t2)
                        V[12 + b, c, p0 + n] = t4 - t3 + c4 * (t1 - t2)
                        V[18 + b, c, p0 + n] = t4 - t2 + c2 * (t3 - t1)
                        V[24 + b, c, p0 + n] = t4 - t2 + c2 * (t1 - t3)
                        V[30 + b, c, p0 + n] = c4 * t1 - c5 * t3 + t5


def _k_output4(M, bias, out, tw, i0, ni, k, S, Y):  # pragma: no cover - compiled
    K, Ho, Wo, N = out.shape
    c2, c4, c8 = k[0], k[1], k[3]
    for kk in range(K):
        bk = bias[kk]
        for il in range(ni):
            for j in range(tw):
                p0 = (il * tw + j) * N
                for a in range(6):
                    for n in range(N):
                        m0 = M[6 * a, kk, p0 + n]
                        m1 = M[6 * a + 1, kk, p0 + n]
                        m2 = M[6 * a + 2, kk, p0 + n]
                        m3 = M[6 * a + 3, kk, p0 + n]
                        m4 = M[6 * a + 4, kk, p0 + n]
                        m5 = M[6 * a + 5, kk, p0 + n]
                        S[a, 0, n] = m0 + m1 + m2 + m3 + m4
                        S[a, 1, n] = m1 - m2 + c2 * (m3 - m4)
                        S[a, 2, n] = m1 + m2 + c4 * (m3 + m4)
                        S[a, 3, n] = m1 - m2 + c8 * (m3 - m4) + m5
                for q in range(4):
                    w = 4 * j + q
                    if w >= Wo:
                        break
                    for n in range(N):
                        s0 = S[0, q, n]
                        s1 = S[1, q, n]
                        s2 = S[2, q, n]
                        s3 = S[3, q, n]
                        s4 = S[4, q, n]
                        s5 = S[5, q, n]
                        Y[0, n] = s0 + s1 + s2 + s3 + s4 + bk
                        Y[1, n] = s1 - s2 + c2 * (s3 - s4) + bk
                        Y[2, n] = s1 + s2 + c4 * (s3 + s4) + bk
                        Y[3, n] = s1 - s2 + c8 * (s3 - s4) + s5 + bk
                    for rr in range(4):
                        h = 4 * (i0 + il) + rr
                        if h >= Ho:
                            break
                        for n in range(N):
                            out[kk, h, w, n] = Y[rr, n]


def _k_output4_adjoint(dT, tw, i0, ni, k, dM, plane, E):  # pragma: no cover - compiled
    K, Ho, Wo, N = dT.shape
    c2, c4, c8 = k[0], k[1], k[3]
    plane[:, :, :] = 0
    h1 = min(Ho, 4 * (i0 + ni))
    for kk in range(K):
        for h in range(4 * i0, h1):
            for w in range(Wo):
                for n in range(N):
                    plane[h - 4 * i0, w, n] = dT[kk, h, w, n]
        for il in range(ni):
            for j in range(tw):
                for r in range(4):
                    for n in range(N):
                        y0 = plane[4 * il + r, 4 * j, n]
                        y1 = plane[4 * il + r, 4 * j + 1, n]
                        y2 = plane[4 * il + r, 4 * j + 2, n]
                        y3 = plane[4 * il + r, 4 * j + 3, n]
                        E[r, 0, n] = y0
                        E[r, 1, n] = y0 + y1 + y2 + y3
                        E[r, 2, n] = y0 - y1 + y2 - y3
                        E[r, 3, n] = y0 + c2 * y1 + c4 * y2 + c8 * y3
                        E[r, 4, n] = y0 - c2 * y1 + c4 * y2 - c8 * y3
                        E[r, 5, n] = y3
                p0 = (il * tw + j) * N
                for b in range(6):
                    for n in range(N):
                        e0 = E[0, b, n]
                        e1 = E[1, b, n]
                        e2 = E[2, b, n]
                        e3 = E[3, b, n]
                        dM[b, kk, p0 + n] = e0
                        dM[6 + b, kk, p0 + n] = e0 + e1 + e2 + e3
                        dM[12 + b, kk, p0 + n] = e0 - e1 + e2 - e3
                        dM[18 + b, kk, p0 + n] = e0 + c2 * e1 + c4 * e2 + c8 * e3
                        dM[24 + b, kk, p0 + n] = e0 - c2 * e1 + c4 * e2 - c8 * e3
                        dM[30 + b, kk, p0 + n] = e3


def _k_input4_adjoint(dV, dxT, pt, pl, tw, i0, ni, k, plane, U):  # pragma: no cover - compiled
    C, H, W, N = dxT.shape
    c2, c4, c5 = k[0], k[1], k[2]
    Hb = plane.shape[0]
    h0 = 4 * i0 - pt
    for c in range(C):
        plane[:, :, :] = 0
        for il in range(ni):
            for j in range(tw):
                p0 = (il * tw + j) * N
                for b in range(6):  # along the tile's rows: u[r] = sum_a BT[a, r] dV[a]
                    for n in range(N):
                        t0 = dV[b, c, p0 + n]
                        t1 = dV[6 + b, c, p0 + n]
                        t2 = dV[12 + b, c, p0 + n]
                        t3 = dV[18 + b, c, p0 + n]
                        t4 = dV[24 + b, c, p0 + n]
                        t5 = dV[30 + b, c, p0 + n]
                        U[0, b, n] = c4 * t0
                        U[1, b, n] = c4 * (t2 - t1) + c2 * (t4 - t3) + c4 * t5
                        U[2, b, n] = -(c5 * t0 + c4 * (t1 + t2) + t3 + t4)
                        U[3, b, n] = t1 - t2 + c2 * (t3 - t4) - c5 * t5
                        U[4, b, n] = t0 + t1 + t2 + t3 + t4
                        U[5, b, n] = t5
                for r in range(6):  # along the columns, overlap-added into the plane
                    h = 4 * il + r
                    for n in range(N):
                        u0 = U[r, 0, n]
                        u1 = U[r, 1, n]
                        u2 = U[r, 2, n]
                        u3 = U[r, 3, n]
                        u4 = U[r, 4, n]
                        u5 = U[r, 5, n]
                        plane[h, 4 * j, n] += c4 * u0
                        plane[h, 4 * j + 1, n] += c4 * (u2 - u1) + c2 * (u4 - u3) + c4 * u5
                        plane[h, 4 * j + 2, n] -= c5 * u0 + c4 * (u1 + u2) + u3 + u4
                        plane[h, 4 * j + 3, n] += u1 - u2 + c2 * (u3 - u4) - c5 * u5
                        plane[h, 4 * j + 4, n] += u0 + u1 + u2 + u3 + u4
                        plane[h, 4 * j + 5, n] += u5
        for rr in range(Hb):
            h = h0 + rr
            if 0 <= h < H:
                if i0 > 0 and rr < 2:  # rows shared with the previous block of tile rows
                    for w in range(W):
                        for n in range(N):
                            dxT[c, h, w, n] += plane[rr, w + pl, n]
                else:
                    for w in range(W):
                        for n in range(N):
                            dxT[c, h, w, n] = plane[rr, w + pl, n]


_kernels4: dict[str, Any] = {}


def _compiled4() -> dict[str, Any] | None:
    """The four F(4x4, 3x3) kernels, compiled on first use; None when the NumPy path is selected."""
    from volnet import kernels

    if not kernels.using("numba"):
        return None
    if not _kernels4:
        for name, fn in (("input", _k_input4), ("output", _k_output4), ("output_adjoint", _k_output4_adjoint),
                         ("input_adjoint", _k_input4_adjoint)):
            _kernels4[name] = kernels.jit(fn)
    return _kernels4


def _consts(dt: np.dtype) -> np.ndarray:
    return np.array([2, 4, 5, 8], dtype=dt)


def _input4(xT, pt, pl, tw, i0, ni, name="V4"):
    ks = _compiled4()
    if ks is None:
        return _np_input4(xT, pt, pl, tw, i0, ni)
    dt = xT.dtype
    C, _, _, N = xT.shape
    V = _scratch(name, (36, C, ni * tw * N), dt)
    ks["input"](xT, pt, pl, tw, i0, ni, _consts(dt), V,
                _scratch("plane4", (4 * ni + 2, 4 * tw + 2, N), dt), _scratch("T4", (6, 6, N), dt))
    return V


def _output4(M, bias, out, tw, i0, ni):
    ks = _compiled4()
    if ks is None:
        return _np_output4(M, bias, out, tw, i0, ni)
    dt = M.dtype
    N = out.shape[3]
    ks["output"](M, bias, out, tw, i0, ni, _consts(dt), _scratch("T4", (6, 4, N), dt),
                 _scratch("Y4", (4, N), dt))


def _output4_adjoint(dT, tw, i0, ni):
    ks = _compiled4()
    if ks is None:
        return _np_output4_adjoint(dT, tw, i0, ni)
    dt = dT.dtype
    K, _, _, N = dT.shape
    dM = _scratch("dM4", (36, K, ni * tw * N), dt)
    ks["output_adjoint"](dT, tw, i0, ni, _consts(dt), dM,
                         _scratch("plane4", (4 * ni, 4 * tw, N), dt), _scratch("T4", (4, 6, N), dt))
    return dM


def _input4_adjoint(dV, dxT, pt, pl, tw, i0, ni):
    ks = _compiled4()
    if ks is None:
        return _np_input4_adjoint(dV, dxT, pt, pl, tw, i0, ni)
    dt = dV.dtype
    N = dxT.shape[3]
    ks["input_adjoint"](dV, dxT, pt, pl, tw, i0, ni, _consts(dt),
                        _scratch("plane4", (4 * ni + 2, 4 * tw + 2, N), dt), _scratch("T4", (6, 6, N), dt))


#: tile rows per block: a block's transformed tiles (36 x channels x tiles) stay under this many bytes
#: (cache-sized: measured faster than one block for the whole batch, see BENCHMARKS.md)
BLOCK_BYTES4 = 2 * 2**20


def _row_block(g: Geometry, K: int, itemsize: int) -> int:
    th, tw = _tiles4(g)
    per_row = 36 * max(g.C, K) * tw * g.N * itemsize
    return max(1, min(th, BLOCK_BYTES4 // max(per_row, 1)))


def winograd4_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: Geometry
) -> tuple[np.ndarray, Any]:
    """out = conv(x, w) + b for a 3x3 stride-1 conv by F(4x4, 3x3). Returns (out, None).

    x: (N, C, H, W) any memory order (read as (C, H, W, N)); w: (K, C, 3, 3); out: (N, K, Ho, Wo) as a
    view of a contiguous (K, Ho, Wo, N) array. Tile rows are processed in blocks (``BLOCK_BYTES4``).
    """
    th, tw = _tiles4(g)
    K, C = w.shape[:2]
    dt = x.dtype
    xT = x.transpose(1, 2, 3, 0)
    U = filter_transform4(w)
    bias = np.zeros(K, dt) if b is None else b.astype(dt, copy=False)
    out = np.empty((K, g.Ho, g.Wo, g.N), dtype=dt)
    rb = _row_block(g, K, dt.itemsize)
    for i0 in range(0, th, rb):
        ni = min(rb, th - i0)
        V = _input4(xT, g.pt, g.pl, tw, i0, ni)
        M = np.matmul(U, V, out=_scratch("M4", (36, K, ni * tw * g.N), dt))
        _output4(M, bias, out, tw, i0, ni)
    return out.transpose(3, 0, 1, 2), None


def winograd4_backward(
    dout: np.ndarray, cache: ConvCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """dx, dw, db of :func:`winograd4_forward`, each step the exact adjoint of a forward step.

    dM = A4 dY A4^T, dU = dM V^T (V recomputed from x), dw = G4^T dU G4, dV = U^T dM,
    dx = overlap-add of B4 dV B4^T.
    """
    g, w, x = cache.geom, cache.w, cache.x
    th, tw = _tiles4(g)
    K, C = w.shape[:2]
    dt = x.dtype
    dT = dout.transpose(1, 2, 3, 0)
    db = dT.sum(axis=(1, 2, 3)) if cache.has_bias else None
    xT = x.transpose(1, 2, 3, 0)
    UT = filter_transform4(w).transpose(0, 2, 1) if need_dx else None
    dU = np.zeros((36, K, C), dtype=dt)
    dx = np.empty((C, g.H, g.W, g.N), dtype=dt) if need_dx else None
    rb = _row_block(g, K, dt.itemsize)
    for i0 in range(0, th, rb):
        ni = min(rb, th - i0)
        dM = _output4_adjoint(dT, tw, i0, ni)
        V = _input4(xT, g.pt, g.pl, tw, i0, ni)
        dU += np.matmul(dM, V.transpose(0, 2, 1))
        if dx is not None:
            dV = np.matmul(UT, dM, out=V)  # V is not needed any more
            _input4_adjoint(dV, dx, g.pt, g.pl, tw, i0, ni)
    dw = np.ascontiguousarray(_kron_gemm(np.kron(G4, G4).T, dU.reshape(36, K * C), dt).T).reshape(K, C, 3, 3)
    return (None if dx is None else dx.transpose(3, 0, 1, 2)), dw, db


def winograd_memory(g: Geometry, K: int, itemsize: int, algo: str, need_dx: bool = True) -> dict[str, Any]:
    """Bytes this module allocates for one conv (the memory ledger, :mod:`volnet.memory`), from the same
    shapes and block sizes as :func:`winograd_forward`/:func:`winograd4_forward` and their backward:
    ``{"scratch": {name: bytes}, "scratch_forward": {...}, "forward": bytes, "backward": bytes}``: the
    named per-thread scratch buffers (kept between calls, each at its largest use; ``scratch_forward``:
    those of the forward pass alone), and the transient arrays of each pass besides
    the output and dx (the filter transforms U, dU)."""
    C, N, b = g.C, g.N, itemsize
    sc: dict[str, int] = {}

    def need(name: str, n: int) -> None:
        sc[name] = max(sc.get(name, 0), int(n) * b)

    if algo == "winograd4":
        th, tw = _tiles4(g)
        rb = _row_block(g, K, b)
        ni = min(rb, th)
        need("V4", 36 * C * ni * tw * N)
        need("plane4", (4 * ni + 2) * (4 * tw + 2) * N)
        need("M4", 36 * K * ni * tw * N)
        fwd = dict(sc)
        need("dM4", 36 * K * ni * tw * N)
        fw, bw = _filter_memory(36, K * C, b, need_dx)
        return {"scratch": sc, "scratch_forward": fwd, "forward": fw, "backward": bw}
    th, tw = _tiles(g)
    n = _row_block2(g, K, b)
    need("xp", 2 * C * N * (2 * n + 2) * (tw + 1))
    need("t", 4 * C * N * (2 * n + 2) * tw)
    need("V", 16 * C * N * n * tw)
    need("M", 16 * K * N * n * tw)
    need("s", 8 * K * N * n * tw)
    fwd = dict(sc)
    if g.Ho % 2 or g.Wo % 2:  # odd sizes: a zero-padded copy of dout's rows (whole tiles)
        need("dpad", K * N * 4 * n * tw)
    need("e", 8 * K * N * n * tw)
    need("dM", 16 * K * N * n * tw)
    if need_dx:
        need("u", 4 * C * N * n * (2 * tw + 2))
        need("tmp", C * N * n * (2 * tw + 2))
        if th > n:
            need("carry", C * N * 2 * (2 * tw + 2))
    fw, bw = _filter_memory(16, K * C, b, need_dx)
    extra = C * N * ((2 * th + 2) * (2 * tw + 2) - g.H * g.W) * b if need_dx else 0  # dxp beyond dx
    return {"scratch": sc, "scratch_forward": fwd, "forward": fw, "backward": bw + extra}


def _filter_memory(n2: int, KC: int, b: int, need_dx: bool) -> tuple[int, int]:
    """Peak bytes of the filter-side arrays of one conv, forward and backward: U = G g G^T (n2 x K*C)
    made by :func:`_kron_gemm` (float64 blocks of ``KRON_COLUMNS`` columns: the block of g and its
    product); backward, U^T, dU and the block product live through the loop, then dw = G^T dU G (float64
    blocks of dU and dw, dw and its contiguous copy)."""
    u, cb = n2 * KC * b, min(KC, KRON_COLUMNS)
    make_u = u + (9 + n2) * cb * 8
    fwd = make_u
    held = u if need_dx else 0  # U^T
    loop = held + 2 * u  # dU and the block's dM V^T
    dw = held + u + (n2 + 9) * cb * 8 + 2 * 9 * KC * b
    return fwd, max(make_u if need_dx else 0, loop, dw)
