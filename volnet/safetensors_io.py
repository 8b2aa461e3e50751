"""Weights in the safetensors format under PyTorch/torchvision ``state_dict`` names.

The file format (https://github.com/huggingface/safetensors) is simple::

    8 bytes: N, the header length (unsigned little-endian 64-bit)
    N bytes: JSON header {"name": {"dtype": "F32", "shape": [64, 3, 7, 7], "data_offsets": [begin, end]},
                          ..., "__metadata__": {"key": "value"}}   (padded with spaces)
    the rest: the tensors' raw little-endian bytes, row-major, at [begin, end) after the header

:func:`read_safetensors` / :func:`write_safetensors` use the ``safetensors`` package when it is installed
(``safetensors.numpy``) and a small pure-NumPy reader/writer otherwise (:func:`read_safetensors_pure`,
:func:`write_safetensors_pure`). BF16 tensors are widened to float32 on reading. No network access.

Name mapping (volnet dotted names -> PyTorch keys, :func:`torch_names`):

- nets with a hierarchy (the zoo's ResNet and GoogLeNet, whose layer names are torchvision's): the
  volnet name with ``w`` -> ``weight``, ``b`` -> ``bias``; BN buffers keep their names.
  ResNet: ``conv1.weight``, ``bn1.weight/bias/running_mean/running_var``, ``layer1.0.conv1.weight``,
  ``layer2.0.downsample.0.weight``, ``layer2.0.downsample.1.running_var``, ..., ``fc.weight``, ``fc.bias``.
  GoogLeNet: ``conv1.conv.weight``, ``conv1.bn.weight``, ``inception3a.branch1.conv.weight``,
  ``inception3a.branch2.1.bn.running_mean``, ``inception3a.branch4.1.conv.weight``, ..., ``fc.weight``.
- flat nets (LeNet-5, AlexNet, ZFNet, VGG and any spec-built Sequential): torchvision's
  ``features.N`` / ``classifier.N`` where N is the layer's index in its part (every layer counts,
  RELU and POOL too), and the classifier starts at the first FC, DROPOUT or FLATTEN layer.
  VGG-16: ``features.0.weight`` (conv1), ``features.2.weight`` (conv2), ..., ``features.28.weight``,
  ``classifier.0.weight``, ``classifier.3.weight``, ``classifier.6.weight``; AlexNet:
  ``features.0/3/6/8/10``, ``classifier.1/4/6``.

BN's ``num_batches_tracked`` (a PyTorch counter) is written as 0 and ignored on loading.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from volnet.errors import ModelFileError, VolnetError
from volnet.layers import FC, BatchNorm, Dropout, Flatten, Layer

# safetensors dtype codes <-> NumPy (little-endian)
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {v.newbyteorder("<").str: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header


def _code_of(a: np.ndarray) -> str:
    key = a.dtype.newbyteorder("<").str
    if key not in _CODES:
        raise VolnetError(f"safetensors: cannot store dtype {a.dtype}; use a float, int or bool array")
    return _CODES[key]


# --------------------------------------------------------------------------- pure reader / writer


def write_safetensors_pure(tensors: Mapping[str, np.ndarray],
                           metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors bytes of ``tensors`` (name -> array) with optional string ``metadata``.

    Tensors are laid out in name order, the header is padded with spaces to a multiple of 8 bytes, as
    the reference implementation does.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        code = _code_of(a)
        data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": code, "shape": [int(d) for d in a.shape],
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def read_safetensors_pure(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, NumPy only; every defect is a one-line ModelFileError."""
    from volnet.validate import count_bound, loads_json, read_regular

    p = Path(path)
    try:
        raw = read_regular(p, "safetensors file")
    except FileNotFoundError:
        raise ModelFileError(f"no safetensors file at {p}") from None
    except OSError as e:
        raise ModelFileError(f"cannot read {p}: {e.strerror or e}") from None
    if len(raw) < 8:
        raise ModelFileError(f"{p}: {len(raw)} bytes is too short for a safetensors file (8-byte header)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER or 8 + n > len(raw):
        raise ModelFileError(f"{p}: header length {n} does not fit the file ({len(raw)} bytes); truncated or "
                             f"not a safetensors file")
    header = loads_json(raw[8 : 8 + n], f"{p}: the safetensors header")
    if not isinstance(header, dict):
        raise ModelFileError(f"{p}: the safetensors header must be a JSON object")
    data = memoryview(raw)[8 + n :]
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{p}: __metadata__ must be an object of strings")
    out: dict[str, np.ndarray] = {}
    spans = []
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{p}: tensor {name!r}: header entry needs dtype, shape and data_offsets"
                                 ) from None
        if code == "BF16":
            itemsize, dt = 2, np.dtype("<u2")
        elif code in DTYPES:
            itemsize, dt = DTYPES[code].itemsize, DTYPES[code]
        else:
            raise ModelFileError(f"{p}: tensor {name!r} has dtype {code!r}, which volnet cannot read")
        count = count_bound(shape, f"{p}: tensor {name!r}")
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= len(data)):
            raise ModelFileError(f"{p}: tensor {name!r}: data_offsets {[begin, end]} outside the data "
                                 f"({len(data)} bytes); truncated file?")
        if end - begin != count * itemsize:
            raise ModelFileError(f"{p}: tensor {name!r}: {end - begin} bytes for shape {shape} of {code} "
                                 f"({count * itemsize} expected)")
        a = np.frombuffer(data[begin:end], dtype=dt).reshape(shape)
        if code == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.astype(a.dtype.newbyteorder("="), copy=True)
        spans.append((begin, end))
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise ModelFileError(f"{p}: tensor data is not contiguous (gap or overlap at byte {pos})")
        pos = end
    return out, {str(k): str(v) for k, v in metadata.items()}


# --------------------------------------------------------------------------- package-or-pure front end


def _package() -> Any:
    try:
        import safetensors.numpy as stn
    except ImportError:
        return None
    return stn


def read_safetensors(path: str | os.PathLike[str], pure: bool = False) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file (name -> array), via the ``safetensors`` package when installed
    (``pure=True`` or no package: :func:`read_safetensors_pure`). Errors are one-line ModelFileErrors."""
    stn = None if pure else _package()
    if stn is None:
        return read_safetensors_pure(path)[0]
    from volnet.validate import refuse_special

    p = Path(path)
    refuse_special(p, "safetensors file")
    if not p.is_file():
        raise ModelFileError(f"no safetensors file at {p}")
    try:
        tensors = dict(stn.load_file(str(p)))
    except Exception as e:  # safetensors raises its own SafetensorError / TypeError (BF16 in NumPy)
        if "bf16" in str(e).lower() or "bfloat16" in str(e).lower():
            return read_safetensors_pure(p)[0]
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFileError(f"{p}: not a valid safetensors file ({msg})") from None
    # with ml_dtypes installed (onnx brings it) the package returns bfloat16 arrays: widen them (as pure)
    return {k: v.astype(np.float32) if "bfloat16" in v.dtype.name else v for k, v in tensors.items()}


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None, pure: bool = False) -> None:
    """Write ``tensors`` atomically as a safetensors file (package when installed, else the pure writer)."""
    from volnet.io import atomic_write_bytes

    arrays = {k: np.asarray(v, order="C") for k, v in tensors.items()}
    stn = None if pure else _package()
    if stn is None:
        data = write_safetensors_pure(arrays, metadata)
    else:
        data = stn.save(arrays, metadata=dict(metadata) if metadata else None)
    atomic_write_bytes(path, data)


# --------------------------------------------------------------------------- name mapping

_LEAF_NAMES = {"w": "weight", "b": "bias"}
_HEAD_TYPES = (FC, Dropout, Flatten)


def _is_flat(net: Layer) -> bool:
    from volnet.net import Container, Sequential

    return isinstance(net, Sequential) and not any(isinstance(c, Container) for _, c in net.children())


def _names_and_shapes(net: Layer) -> dict[str, tuple[int, ...]]:
    """Every param and buffer name of ``net`` with its shape (no allocation needed for unbuilt nets)."""
    if net.params or not getattr(net, "input_shape", None):
        return {k: tuple(v.shape) for k, v in {**net.params, **net.buffers}.items()}
    shapes = dict(net.param_shapes(net.input_shape))  # type: ignore[arg-type]
    for name, layer, s_in, _ in net.layer_shapes(net.input_shape):  # type: ignore[attr-defined]
        if isinstance(layer, BatchNorm):
            d = (int(s_in[0]),)  # type: ignore[index]
            shapes[f"{name}.running_mean"] = d
            shapes[f"{name}.running_var"] = d
    return shapes


def torch_names(net: Layer) -> dict[str, str]:
    """volnet param/buffer name -> PyTorch ``state_dict`` key (the module docstring gives the rules)."""
    names = list(_names_and_shapes(net))
    if _is_flat(net):
        out: dict[str, str] = {}
        index: dict[str, str] = {}
        part, i = "features", 0
        for name, layer in net.children():  # type: ignore[attr-defined]
            if part == "features" and isinstance(layer, _HEAD_TYPES):
                part, i = "classifier", 0
            index[name] = f"{part}.{i}"
            i += 1
        for k in names:
            layer_name, leaf = k.rsplit(".", 1)
            out[k] = f"{index[layer_name]}.{_LEAF_NAMES.get(leaf, leaf)}"
        return out
    out = {}
    for k in names:
        layer_name, leaf = k.rsplit(".", 1)
        out[k] = f"{layer_name}.{_LEAF_NAMES.get(leaf, leaf)}"
    return out


def _bn_counters(net: Layer, mapping: Mapping[str, str]) -> list[str]:
    """PyTorch keys of BN's ``num_batches_tracked`` counters (beside each ``running_mean``)."""
    return [v.rsplit(".", 1)[0] + ".num_batches_tracked"
            for k, v in mapping.items() if k.endswith(".running_mean")]


def to_torch_state_dict(net: Layer, mapping: Mapping[str, str] | None = None,
                        num_batches_tracked: bool = True) -> dict[str, np.ndarray]:
    """The net's params and buffers under PyTorch names (plus BN ``num_batches_tracked`` = 0)."""
    mapping = dict(torch_names(net) if mapping is None else mapping)
    arrays = {**net.params, **net.buffers}
    if not arrays:
        raise ModelFileError("the net has no parameters yet: build it first (net.build(input_shape))")
    out: dict[str, np.ndarray] = {}
    for k, a in arrays.items():
        if k not in mapping:
            raise ModelFileError(f"mapping has no PyTorch name for {k!r}")
        out[mapping[k]] = np.ascontiguousarray(a)
    if num_batches_tracked:
        for key in _bn_counters(net, mapping):
            out[key] = np.zeros((), dtype=np.int64)
    return out


def save_torch_state_dict(net: Layer, path: str | os.PathLike[str], mapping: Mapping[str, str] | None = None,
                          metadata: Mapping[str, str] | None = None) -> None:
    """Write the net's weights as a safetensors file with PyTorch/torchvision names (atomically).

    ``torch_model.load_state_dict(safetensors.torch.load_file(path))`` then loads them into the
    torchvision model of the same architecture.
    """
    meta = {"format": "pt", "producer": "volnet"}
    meta.update(metadata or {})
    write_safetensors(path, to_torch_state_dict(net, mapping), meta)


@dataclass
class LoadResult:
    """What :func:`load_torch_state_dict` did: volnet names loaded, volnet names left as they were
    (``skip``), and file keys not used (BN ``num_batches_tracked``, skipped layers' keys, extras when
    ``strict=False``)."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def load_torch_state_dict(net: Layer, path: str | os.PathLike[str] | Mapping[str, np.ndarray],
                          mapping: Mapping[str, str] | None = None, *, strict: bool = True,
                          skip: Iterable[str] = ()) -> LoadResult:
    """Copy weights with PyTorch names from a safetensors file (or a dict of arrays) into ``net``, in place.

    - ``mapping``: volnet name -> PyTorch key (default :func:`torch_names`).
    - ``skip``: volnet layer names (or prefixes, e.g. ``"fc"``, ``zoo.head_name(net)``) whose weights
      stay as they are: fine-tuning loads everything but the classifier of another class count.
    - ``strict``: keys in the file that the net does not use are an error (else listed in ``unused``).

    Raises ModelFileError (one line) for a missing key, a shape mismatch or an unexpected key. The net
    is built first if needed; arrays are cast to its dtype. Nothing is changed unless everything fits.
    """
    from volnet.net import Container
    from volnet.validate import finite_or_raise

    if not net.params and getattr(net, "input_shape", None) is not None:
        if isinstance(net, Container):
            net.build(net.input_shape)
        else:
            net.build(net.input_shape, np.random.default_rng(0))
    arrays = read_safetensors(path) if isinstance(path, (str, os.PathLike)) else dict(path)
    where = str(path) if isinstance(path, (str, os.PathLike)) else "state_dict"
    mapping = dict(torch_names(net) if mapping is None else mapping)
    skip = [s for s in skip]
    targets = {**net.params, **net.buffers}
    result = LoadResult()
    updates: list[tuple[np.ndarray, np.ndarray]] = []
    used: set[str] = set()
    for k, dst in targets.items():
        key = mapping.get(k)
        if key is None:
            raise ModelFileError(f"mapping has no PyTorch name for volnet {k!r}")
        if any(k == s or k.startswith(s + ".") for s in skip):
            result.skipped.append(k)
            continue
        if key not in arrays:
            raise ModelFileError(f"{where}: missing key {key!r} (volnet {k!r}, shape {tuple(dst.shape)})")
        a = np.asarray(arrays[key])
        if tuple(a.shape) != tuple(dst.shape):
            raise ModelFileError(f"{where}: {key!r} has shape {tuple(a.shape)}, volnet {k!r} needs "
                                 f"{tuple(dst.shape)}; a different architecture or number of classes?")
        if a.dtype.kind not in "fiu":
            raise ModelFileError(f"{where}: {key!r} has dtype {a.dtype}, expected floats")
        finite_or_raise(a, f"{where}: {key!r}")
        updates.append((dst, a))
        used.add(key)
        result.loaded.append(k)
    skipped_keys = {mapping[k] for k in result.skipped}
    for key in arrays:
        if key in used:
            continue
        if key.endswith("num_batches_tracked") or key in skipped_keys or not strict:
            result.unused.append(key)
            continue
        raise ModelFileError(f"{where}: unexpected key {key!r}: not part of this net (strict=False: ignore)")
    for dst, a in updates:
        dst[...] = a.astype(dst.dtype, copy=False)
    return result


def load_safetensors_into(net: Layer, path: str | os.PathLike[str]) -> LoadResult:
    """Load a safetensors file that uses volnet's own dotted names (``conv1.w``), as written by
    ``write_safetensors(path, {**net.params, **net.buffers})``."""
    identity = {k: k for k in {**net.params, **net.buffers}}
    return load_torch_state_dict(net, path, identity)


__all__ = [
    "DTYPES",
    "LoadResult",
    "load_safetensors_into",
    "load_torch_state_dict",
    "read_safetensors",
    "read_safetensors_pure",
    "save_torch_state_dict",
    "to_torch_state_dict",
    "torch_names",
    "write_safetensors",
    "write_safetensors_pure",
]
