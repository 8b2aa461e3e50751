"""Looking inside a trained net (the pictures of the notes' "Visualizing what ConvNets learn"): filters,
activation maps, occlusion sensitivity (Zeiler & Fergus 2014, ZFNet) and saliency (the gradient of the
class score w.r.t. the input pixels, Simonyan et al. 2014). Pure NumPy; the figures are drawn by
:mod:`volnet.train.plots`.

>>> from volnet import Sequential
>>> from volnet.layers import Conv, ReLU, FC
>>> net = Sequential([Conv(2, 3), ReLU(), FC(3)], input_shape=(1, 4, 4)); net.build((1, 4, 4))
>>> [n for n, _ in conv_layers(net)]
['conv1']
>>> out, acts = net.forward(np.zeros((1, 1, 4, 4), np.float32), train=False, keep=["relu1"])
>>> acts["relu1"].shape  # (W - F + 2P)/S + 1 = (4 - 3 + 0)/1 + 1 = 2
(1, 2, 2, 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from volnet.errors import VolnetError


def conv_layers(net: Any) -> list[tuple[str, Any]]:
    """(dotted name, layer) of the layers with conv weights ``w`` of shape (K, C, F, F), in order."""
    return [(n, layer) for n, layer in net.named_layers()
            if getattr(layer, "kind", "") == "CONV" and "w" in getattr(layer, "params", {})
            and np.ndim(layer.params["w"]) == 4]


def filters(net: Any, layer: str | None = None) -> tuple[str, np.ndarray]:
    """(name, weights (K, C, F, F)) of conv layer ``layer`` (default: the first conv layer); an unknown or
    non-conv name raises a VolnetError listing the conv layers."""
    convs = conv_layers(net)
    if not convs:
        raise VolnetError("this net has no CONV layer: nothing to show as filters")
    if layer is None:
        return convs[0][0], np.ascontiguousarray(convs[0][1].params["w"])
    for n, lay in convs:
        if n == layer:
            return n, np.ascontiguousarray(lay.params["w"])
    raise VolnetError(f"no conv layer named {layer!r}; this net's conv layers: "
                      f"{', '.join(n for n, _ in convs)}")


def activations(net: Any, x: np.ndarray, layers: list[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """The activations of one normalised image ``x`` (C, H, W) at ``layers`` (default: every top-level
    layer but the last): [(name, array (D, H', W') or (D,))], each C-contiguous (conv and pool outputs
    may be batch-last views)."""
    names = layers if layers else [n for n, _ in net.children()][:-1] or [n for n, _ in net.children()]
    _, kept = net.forward(x[None], train=False, keep=names)
    return [(n, np.ascontiguousarray(kept[n][0])) for n in names]


def occlusion(probabilities: Any, image: np.ndarray, cls: int, patch: int | None = None,
              stride: int | None = None, value: float = 0.5, batch: int = 256) -> np.ndarray:
    """Occlusion sensitivity: the probability of class ``cls`` as a ``patch`` x ``patch`` square of grey
    ``value`` slides over ``image`` (C, H, W) with ``stride``; ``probabilities(x (N, C, H, W)) -> (N, K)``.
    Returns an (H, W) map: at each pixel the mean probability over the patches covering it (low where
    the net looks). Defaults: patch = max(1, min(H, W) // 4), stride = max(1, patch // 2)."""
    c, h, w = image.shape
    patch = patch or max(1, min(h, w) // 4)
    stride = stride or max(1, patch // 2)
    if not 1 <= patch <= min(h, w):
        raise VolnetError(f"occlusion patch {patch} must be between 1 and the image size {min(h, w)}")
    ys = list(range(0, h - patch + 1, stride))
    xs = list(range(0, w - patch + 1, stride))
    if ys[-1] != h - patch:
        ys.append(h - patch)
    if xs[-1] != w - patch:
        xs.append(w - patch)
    spots = [(y, x) for y in ys for x in xs]
    total = np.zeros((h, w), np.float64)
    count = np.zeros((h, w), np.float64)
    for i in range(0, len(spots), batch):
        chunk = spots[i:i + batch]
        xb = np.repeat(image[None], len(chunk), axis=0)
        for j, (y, x) in enumerate(chunk):
            xb[j, :, y:y + patch, x:x + patch] = value
        p = np.asarray(probabilities(xb))[:, cls]
        for j, (y, x) in enumerate(chunk):
            total[y:y + patch, x:x + patch] += p[j]
            count[y:y + patch, x:x + patch] += 1
    return total / np.maximum(count, 1)


def saliency(net: Any, x: np.ndarray, cls: int) -> np.ndarray:
    """|d score_cls / d x| maximised over the channels, shape (H, W), for one normalised image ``x``
    (C, H, W); the score is the class score before a trailing SOFTMAX. By backpropagation; a net with BN
    or dropout (whose train mode would change the function) by central differences in eval mode."""
    scores_net = net.without_softmax()
    if any(getattr(layer, "kind", "") in ("BN", "DROPOUT") for _, layer in net.named_layers()):
        return _saliency_numeric(scores_net, x, cls)
    xb = np.asarray(x, dtype=net.dtype)[None]
    s = scores_net.forward(xb, train=True)
    d = np.zeros_like(s)
    d[0, cls] = 1
    dx = scores_net.backward(d)
    net.clear_cache()
    return np.abs(np.asarray(dx[0], dtype=np.float64)).max(axis=0)


def _saliency_numeric(scores_net: Any, x: np.ndarray, cls: int, eps: float = 1e-2,
                      limit: int = 4096) -> np.ndarray:
    """Central differences in eval mode (nets with BN or dropout), for inputs of at most ``limit`` values."""
    if x.size > limit:
        raise VolnetError(f"saliency of a net with BN or dropout is computed by finite differences, which "
                          f"volnet does for inputs of at most {limit} values (this one has {x.size}); use "
                          f"volnet show occlusion instead")
    flat = np.repeat(x.reshape(1, -1), 2 * x.size, axis=0).astype(np.float64)
    idx = np.arange(x.size)
    flat[2 * idx, idx] += eps
    flat[2 * idx + 1, idx] -= eps
    s = np.concatenate([scores_net.predict(b.reshape(-1, *x.shape).astype(np.float32))[:, cls]
                        for b in np.array_split(flat, max(1, len(flat) // 256))])
    g = (s[0::2] - s[1::2]) / (2 * eps)
    return np.abs(g.reshape(x.shape)).max(axis=0)
