"""Local response normalization across channels (AlexNet), with PyTorch's semantics.

For each position and channel c of x (N, D, ...) with n = ``size``:

    b_c = a_c / (k + alpha/n * sum_{c'=c-n//2}^{c+(n-1)//2} a_{c'}^2)^beta

The window runs over channels, zero padded (n//2 channels before, (n-1)//2 after; centred for odd n).
This is exactly ``torch.nn.functional.local_response_norm(x, n, alpha, beta, k)``; Caffe also divides
alpha by n.

AlexNet's paper writes the sum WITHOUT the 1/n: b = a / (k + alpha * sum a^2)^beta with k=2, n=5,
alpha=1e-4, beta=0.75. To reproduce the paper here pass ``size=5, alpha=5e-4 (= n * 1e-4), beta=0.75,
k=2.0``.

The notes: "in practice their contribution has been shown to be minimal, if any".
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError, VolnetError


def _channel_window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """s_c = sum_{c'=c-before}^{c+after} a_{c'} along axis 1, zeros outside [0, D)."""
    D = a.shape[1]
    s = a.copy()
    for o in range(1, before + 1):  # c' = c - o
        if o < D:
            s[:, o:] += a[:, : D - o]
    for o in range(1, after + 1):  # c' = c + o
        if o < D:
            s[:, : D - o] += a[:, o:]
    return s


def lrn_forward(
    x: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> tuple[np.ndarray, tuple]:
    """b = a / (k + alpha/n * sum over n neighbouring channels of a^2)^beta (see module docstring).

    x: (N, D, H, W) (or any (N, D, ...) with ndim >= 3); returns out of the same shape and the cache.

    See: ``torch.nn.functional.local_response_norm(x, size, alpha, beta, k)``.
    """
    if x.ndim < 3:
        raise ShapeError(
            f"lrn: expected an (N, D, H, W) input (at least 3-D, channels on axis 1), "
            f"got shape {tuple(x.shape)}"
        )
    if int(size) != size or size < 1:
        raise VolnetError(f"lrn: size must be an integer >= 1, got {size!r}")
    t = x.dtype.type
    d = _channel_window_sum(x * x, size // 2, (size - 1) // 2)
    d *= t(alpha / size)
    d += t(k)
    scale = d ** t(-beta)
    return x * scale, (x, d, scale, size, alpha, beta)


def lrn_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dx_j = dout_j d_j^-beta - (2 alpha beta / n) a_j sum_{c: j in window(c)} dout_c a_c d_c^(-beta-1),

    with d_c = k + alpha/n * sum_{window(c)} a^2; channel c's window contains j when
    j - (n-1)//2 <= c <= j + n//2 (the transposed window).
    """
    x, d, scale, size, alpha, beta = cache
    t = x.dtype.type
    g = dout * x * scale
    g /= d
    back = _channel_window_sum(g, (size - 1) // 2, size // 2)
    back *= x
    back *= t(2.0 * alpha * beta / size)
    return dout * scale - back
