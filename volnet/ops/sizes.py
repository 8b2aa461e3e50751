"""Spatial size arithmetic of the notes: output = (W - F + 2P)/S + 1.

With dilation D (PyTorch's convention: D=1 is an ordinary filter) the filter covers
F_eff = D*(F - 1) + 1 input pixels. The notes' "dilation 0" is PyTorch's dilation=1, their
"dilation 1" (one gap between filter cells) is PyTorch's dilation=2.

When (W - F_eff + 2P)/S + 1 is not a positive integer the notes list three choices, all available
through ``fit``:

- ``"strict"`` (default): raise :class:`volnet.ShapeError` naming W, F, S, P, the fractional result and
  the nearest P and S that fit.
- ``"floor"``: crop, as PyTorch's convolution and pooling do by default (the last rows/columns that a
  full window does not reach are ignored). ResNet's 7x7/2 P3 conv on 224 needs this.
- ``"ceil"``: pad the rest with zeros on the bottom/right (PyTorch's ``ceil_mode=True`` for pooling: a
  last window is kept only if it starts inside the input or the left padding). GoogLeNet's pools need this.
"""

from __future__ import annotations

import math

from volnet.errors import ShapeError

FITS = ("strict", "floor", "ceil")


def effective_size(F: int, dilation: int = 1) -> int:
    """Input extent F_eff = D*(F - 1) + 1 that a dilated filter of size F covers."""
    return dilation * (F - 1) + 1


def _check_fit(fit: str) -> None:
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")


def _fits(W: int, F_eff: int, S: int, P: int) -> bool:
    span = W - F_eff + 2 * P
    return span >= 0 and span % S == 0


def _nearest_fixes(W: int, F: int, S: int, P: int, dilation: int) -> str:
    F_eff = effective_size(F, dilation)
    fixes = []
    pads = [p for p in range(0, max(P, F_eff) + S + 1) if _fits(W, F_eff, S, p)]
    if pads:
        p = min(pads, key=lambda p: (abs(p - P), p))
        fixes.append(f"P={p} (-> {(W - F_eff + 2 * p) // S + 1})")
    strides = [s for s in range(1, max(S, 2) + 3) if s != S and _fits(W, F_eff, s, P)]
    for s in sorted(strides, key=lambda s: (abs(s - S), s))[:2]:
        fixes.append(f"S={s} (-> {(W - F_eff + 2 * P) // s + 1})")
    return " or ".join(fixes) if fixes else "a smaller F or a larger P"


def output_size(
    W: int, F: int, S: int = 1, P: int = 0, dilation: int = 1, fit: str = "strict", what: str = "layer"
) -> int:
    """Number of filter positions along one axis: (W - F_eff + 2P)/S + 1.

    ``what`` names the layer in the error message (e.g. ``"conv"``, ``"pool"``, ``"CONV3-64 (layer 2)"``).

    >>> output_size(7, 3, 1), output_size(7, 3, 2), output_size(227, 11, 4)
    (5, 3, 55)
    >>> output_size(7, 3, 3, fit="floor"), output_size(7, 3, 3, fit="ceil")
    (2, 3)
    """
    _check_fit(fit)
    for name, v, lo in (("W", W, 1), ("F", F, 1), ("S", S, 1), ("P", P, 0), ("dilation", dilation, 1)):
        if int(v) != v or v < lo:
            raise ShapeError(f"{what}: {name} must be an integer >= {lo}, got {v}")
    F_eff = effective_size(F, dilation)
    span = W - F_eff + 2 * P
    fstr = f"F={F}" if dilation == 1 else f"F={F} (dilation {dilation}: F_eff={F_eff})"
    if span < 0:
        raise ShapeError(
            f"{what}: filter larger than padded input: W={W}, {fstr}, P={P}: W + 2P = {W + 2 * P} < {F_eff}; "
            f"use a smaller F or pad at least P={math.ceil((F_eff - W) / 2)}"
        )
    if span % S == 0:
        return span // S + 1
    if fit == "floor":
        return span // S + 1
    if fit == "ceil":
        out = -(-span // S) + 1
        if (out - 1) * S >= W + P:  # PyTorch: the last window must start inside the input or left pad
            out -= 1
        return out
    frac = span / S + 1
    fixes = _nearest_fixes(W, F, S, P, dilation)
    detail = (f"{what}: (W - F + 2P)/S + 1 = ({W} - {F_eff} + 2*{P})/{S} + 1 = {frac:.4g} is not an integer "
              f"(W={W}, {fstr}, S={S}, P={P}); nearest settings that fit: {fixes}")
    err = ShapeError(f"{detail}; or choose fit='floor' (crop) / fit='ceil' (pad the rest)")
    err.fit_hint, err.detail = True, detail
    raise err


def padding_for(
    W: int, F: int, S: int = 1, P: int = 0, dilation: int = 1, fit: str = "strict", what: str = "layer"
) -> tuple[int, int, int]:
    """Output size and the zero padding (before, after) an implementation applies along one axis.

    ``before`` is always P. ``after`` is P plus whatever ``fit="ceil"`` adds; with ``fit="floor"`` the
    windows simply stop early (after = P, the uncovered tail is ignored). Returns (out, before, after)
    such that windows start at 0, S, ..., (out-1)*S in the padded input and all lie inside it.
    """
    out = output_size(W, F, S, P, dilation, fit, what)
    need = (out - 1) * S + effective_size(F, dilation)
    after = max(P, need - W - P)
    return out, P, after


def pair(v: int | tuple[int, int] | list[int], name: str = "value") -> tuple[int, int]:
    """Normalise an int or (h, w) pair to an (h, w) tuple of ints."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)
