"""Model files: a directory with ``model.json`` (architecture) and ``weights.npz`` (arrays), atomic writes.

``model.json``::

    {"format": "volnet-model", "version": 1, "input_shape": [3, 32, 32], "dtype": "float32",
     "spec": "INPUT [32x32x3] -> CONV3-16 -> ...",
     "meta": {"normalizer": {"mean": [0.5], "std": [0.25]}, "classes": ["cat", ...]},   # optional
     "net": {"type": "Sequential",
             "config": {"layers": [{"name": "conv1", "type": "Conv", "config": {...}}, ...]}}}

``weights.npz`` holds every param and buffer by dotted name (``conv1.w``, ``bn1.running_mean``), plain
arrays only: loading uses ``np.load(..., allow_pickle=False)`` and instantiates only registered layer
classes (:func:`volnet.registry.layer_types`), so a model file never executes code. Every problem
(missing file, bad JSON, newer version, unknown layer, missing/extra/wrong-shape arrays, truncated zip)
raises :class:`volnet.ModelFileError` with one line naming it.

Writes go to a temporary sibling (file or directory) that is renamed over the target, so a crash leaves
either the old model or the new one, never a mix (:mod:`volnet.atomic`, whose ``atomic_write_bytes`` /
``atomic_write_text`` are re-exported here).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from volnet.atomic import atomic_write_bytes, atomic_write_text, fsync_dir, replace_dir, temp_name, write_file
from volnet.errors import ModelFileError, VolnetError
from volnet.layers.base import Layer

FORMAT = "volnet-model"
VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.npz"
_OWN_FILES = {MODEL_JSON, WEIGHTS}
__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_dir", "load", "npz_bytes", "read_npz",
           "replace_dir", "save", "write_file"]


# --------------------------------------------------------------------------- atomic writes


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of an uncompressed ``.npz`` file (no pickled objects)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _is_replaceable(path: Path) -> bool:
    """Only an empty directory or a volnet model directory may be replaced (never arbitrary data)."""
    if not path.is_dir() or path.is_symlink():
        return False
    names = {p.name for p in path.iterdir()}
    return not names or (MODEL_JSON in names and names <= _OWN_FILES)


def atomic_write_dir(path: str | os.PathLike[str], files: dict[str, bytes]) -> None:
    """Write a directory of files atomically: build it as a temp sibling, then rename it over ``path``.

    An existing target (which must be an empty or volnet model directory) is first renamed away, the new
    one renamed in, and the old one removed; on a failure before the swap the old directory stays intact
    and no temp directory is left behind.
    """
    path = Path(path)
    parent = path.parent
    if path.exists() and not _is_replaceable(path):
        raise ModelFileError(
            f"{path} exists and is not a volnet model directory (only {MODEL_JSON} and {WEIGHTS}); "
            f"refusing to overwrite it: choose another path"
        )
    parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path, ".tmp")
    os.mkdir(tmp)  # permissions from the umask, like any directory the user creates
    try:
        for name, data in files.items():
            write_file(tmp / name, data)
        fsync_dir(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- save


def save(net: Layer, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
    """Save ``net`` (any built Layer, usually a Sequential or Graph) as a model directory at ``path``.

    Writes ``model.json`` and ``weights.npz`` (params + buffers by dotted name) via
    :func:`atomic_write_dir`. The net must know its input shape (built, or run once). ``meta`` (optional,
    JSON-able) is what the model needs around it: ``{"normalizer": {"mean": [...], "std": [...]},
    "classes": [...]}`` (see :func:`load_meta`); ``volnet import`` stores an ONNX file's there.
    """
    from volnet.registry import layer_to_config

    if net.input_shape is None:
        raise ModelFileError(
            "save: the net has no input shape; build it first (net.build(input_shape)) or run a forward"
        )
    net.build(net.input_shape)  # allocates anything still lazy (no-op when built)
    arrays: dict[str, np.ndarray] = {}
    for kind, d in (("param", net.params), ("buffer", net.buffers)):
        for k, v in d.items():
            if k in arrays:
                raise ModelFileError(f"save: {kind} name {k!r} is used twice")
            arrays[k] = np.ascontiguousarray(v)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "input_shape": [int(v) for v in net.input_shape],
        "dtype": str(np.dtype(getattr(net, "dtype", np.float32))),
        "net": layer_to_config(net),
    }
    if hasattr(net, "spec"):
        doc["spec"] = net.spec()
    if meta:
        doc["meta"] = meta
    text = json.dumps(doc, indent=2, allow_nan=False)
    atomic_write_dir(path, {MODEL_JSON: text.encode("utf-8"), WEIGHTS: npz_bytes(arrays)})


# --------------------------------------------------------------------------- load


def _read_json(path: Path) -> dict[str, Any]:
    from volnet.validate import read_json

    doc = read_json(path, MODEL_JSON)
    if not isinstance(doc, dict):
        raise ModelFileError(f"{MODEL_JSON}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _check_header(doc: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise ModelFileError(f"{MODEL_JSON}: format {fmt!r} is not {FORMAT!r}; not a volnet model file")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{MODEL_JSON}: version must be a positive integer, got {version!r}")
    if version > VERSION:
        raise ModelFileError(
            f"{MODEL_JSON} version {version} is newer than this volnet ({VERSION}): upgrade volnet"
        )
    shape = doc.get("input_shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
        raise ModelFileError(f"{MODEL_JSON}: input_shape must be a list of positive integers, got {shape!r}")
    dtype_name = doc.get("dtype", "float32")
    if dtype_name not in ("float32", "float64"):
        raise ModelFileError(f"{MODEL_JSON}: dtype must be 'float32' or 'float64', got {dtype_name!r}")
    if "net" not in doc:
        raise ModelFileError(f"{MODEL_JSON}: no \"net\" entry (the layer configuration)")
    return tuple(shape), np.dtype(dtype_name)


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path`` with the checks of ``weights.npz`` (zip directory and
    ``.npy`` headers checked before any array is read, no pickle, regular files only, one-line
    ModelFileError naming the file on damage); for checkpoint files such as ``optimizer.npz``."""
    from volnet.validate import read_npz as checked

    return checked(path, Path(path).name)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def load_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta`` entry of a model directory's ``model.json`` (``{}`` when there is none): the input
    ``normalizer`` (``{"mean": [...], "std": [...]}``) and class names (``classes``) stored with the model.

    Raises ModelFileError (one line) when the entry is there but malformed.
    """
    doc = _read_json(Path(path) / MODEL_JSON)
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise ModelFileError(f"{MODEL_JSON}: \"meta\" must be a JSON object, got {type(meta).__name__}")
    norm = meta.get("normalizer")
    if norm is not None and not (isinstance(norm, dict) and isinstance(norm.get("mean"), list)
                                 and isinstance(norm.get("std"), list)):
        raise ModelFileError(f"{MODEL_JSON}: meta.normalizer must be {{\"mean\": [...], \"std\": [...]}}")
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ModelFileError(f"{MODEL_JSON}: meta.classes must be a list of class names")
    return meta


def _count_layers(cfg: Any, where: str = "net") -> int:
    """Layers in a ``"net"`` config (containers count their children), refusing more than MAX_LAYERS."""
    from volnet.validate import MAX_LAYERS

    total, stack = 0, [cfg]
    while stack:
        d = stack.pop()
        is_container = isinstance(d, dict) and d.get("type") in ("Sequential", "Graph")
        total += 0 if is_container else 1
        if total > MAX_LAYERS:
            raise ModelFileError(f"{MODEL_JSON}: more than {MAX_LAYERS:,} layers, volnet's limit; a damaged "
                                 "or hostile file?")
        c = d.get("config") if isinstance(d, dict) else None
        if isinstance(c, dict):
            if d.get("type") in ("Sequential", "Graph") and c.get("input_shape") is not None:
                raise ModelFileError(f"{MODEL_JSON}: a {d['type']} config holds an input_shape; volnet "
                                     "writes it only at the top of the file (remove it)")
            for key in ("layers", "nodes"):
                if isinstance(c.get(key), list):
                    stack.extend(c[key])
    return total


def _expected_arrays(net: Layer, input_shape: tuple[int, ...]) -> tuple[dict[str, tuple[int, ...]],
                                                                        list[tuple[str, Layer, Any]]]:
    """Param shapes by dotted name (nothing allocated) and the (name, leaf, input shape) of every leaf."""
    from volnet.net import Container

    if isinstance(net, Container):
        leaves = [(f"{name}.", layer, s_in) for name, layer, s_in, _ in net.layer_shapes(input_shape)]
    else:
        net.output_shape(input_shape)
        leaves = [("", net, input_shape)]
    shapes = {f"{prefix}{k}": tuple(int(d) for d in s)
              for prefix, layer, s_in in leaves for k, s in layer.param_shapes(s_in).items()}
    return shapes, leaves


def _check_members(members: dict[str, Any], want: dict[str, tuple[int, ...]], what: str) -> None:
    missing = [k for k in want if k not in members]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelFileError(f"{what}: missing array {missing[0]!r}{more}; the model expects it")
    for k, shape in want.items():
        if members[k].shape != shape:
            raise ModelFileError(f"{what}: array {k!r} has shape {members[k].shape}, model expects {shape}")


def load(path: str | os.PathLike[str]) -> Layer:
    """Read a model directory written by :func:`save` and return the built net with its weights.

    Everything is checked before anything is allocated: ``model.json`` (size, depth, numbers, header,
    layer types and configs, at most :data:`volnet.validate.MAX_LAYERS` layers, shapes through the net),
    then the names, dtypes, shapes and declared sizes of the arrays in ``weights.npz`` from its zip
    directory and ``.npy`` headers (missing, extra, wrong-shape, complex/time/object arrays are refused
    unread). Only then are the arrays read (NaN/inf refused) and the net built around them (no He
    initialisation). Only regular files are read. Every problem raises ModelFileError (one line).
    """
    from volnet.registry import layer_from_config
    from volnet.validate import (
        check_fits_memory,
        finite_or_raise,
        npz_members,
        open_regular,
        read_npz_arrays,
        refuse_special,
    )

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"no model at {path}: the directory does not exist")
    if not path.is_dir():
        raise ModelFileError(
            f"{path} is a file; a volnet model is a directory with {MODEL_JSON} and {WEIGHTS}"
        )
    mj, wz = path / MODEL_JSON, path / WEIGHTS
    for f in (mj, wz):
        refuse_special(f, "model file")
    if not mj.is_file():
        raise ModelFileError(f"{MODEL_JSON} missing in {path}; is this a volnet model directory?")
    if not wz.is_file():
        raise ModelFileError(f"{WEIGHTS} missing in {path}; the model was not saved completely")
    doc = _read_json(mj)
    input_shape, dtype = _check_header(doc)
    _count_layers(doc["net"])
    try:
        net = layer_from_config(doc["net"], where="net")
        net.astype(dtype)
        want, leaves = _expected_arrays(net, input_shape)
    except VolnetError as e:
        raise ModelFileError(f"{MODEL_JSON}: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        raise ModelFileError(f"{MODEL_JSON}: bad layer configuration: {e}") from None
    try:
        f = open_regular(wz, WEIGHTS)
    except OSError as e:
        raise ModelFileError(f"{WEIGHTS}: cannot read {wz}: {e.strerror or e}") from None
    with f:
        members = npz_members(f, WEIGHTS)
        _check_members(members, want, WEIGHTS)
        # buffers (BN running statistics) are as large as the params just checked
        leaf_buffers = [layer.init_buffers(s_in) if hasattr(layer, "init_buffers") else {}
                        for _, layer, s_in in leaves]
        buffers = {f"{prefix}{k}": tuple(v.shape)
                   for (prefix, _, _), bufs in zip(leaves, leaf_buffers) for k, v in bufs.items()}
        _check_members(members, buffers, WEIGHTS)
        extra = [k for k in members if k not in want and k not in buffers]
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise ModelFileError(
                f"{WEIGHTS}: unexpected array {extra[0]!r}{more}; not part of the model in {MODEL_JSON}"
            )
        check_fits_memory(sum(m.nbytes for m in members.values()), f"loading {path}")
        arrays = read_npz_arrays(f, list(members), WEIGHTS)
    for k, a in arrays.items():
        finite_or_raise(a, f"{WEIGHTS}: array {k!r}")
    for (prefix, layer, s_in), bufs in zip(leaves, leaf_buffers):  # the stored arrays become the layers'
        names = list(layer.param_shapes(s_in))  # own: build then skips the He initialisation
        if names:
            layer.params = {k: np.ascontiguousarray(arrays[prefix + k], dtype=dtype) for k in names}
        if bufs:
            layer.buffers = {k: np.ascontiguousarray(arrays[prefix + k], dtype=dtype) for k in bufs}
    try:
        net.build(input_shape, None, dtype)
    except VolnetError as e:
        raise ModelFileError(f"{MODEL_JSON}: {e}") from None
    return net
