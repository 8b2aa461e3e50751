"""Checks of an ONNX file before :func:`volnet.onnx_io.import_onnx` maps it to layers.

- :func:`load_model`: reads the file (a regular file only) without letting the ``onnx`` package resolve
  external data, then resolves every external-data reference itself, whatever the ``onnx`` version:
  the location must be a relative path that stays inside the model's folder once resolved (no ``..``, no
  symbolic link anywhere on the way, no second hard link to the file), name a regular file, and
  ``offset + length`` must lie within it and match the tensor's declared shape and type. The bytes are
  then copied into the tensor, so nothing outside the folder is ever read.
- :func:`check_tensor`: dims of an initializer against volnet's element limit before it is converted.
- :func:`spatial_attrs`: ``kernel_shape``, ``strides``, ``pads``, ``dilations`` of a Conv/Pool node are
  lists of the right length and range (``pads=[1]`` or ``strides=[0, 0]`` are one-line errors, never an
  ``IndexError`` or ``ZeroDivisionError``).

Every problem raises :class:`volnet.ModelFileError` with one line naming the file, tensor or node.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from volnet.errors import ModelFileError
from volnet.validate import count_bound, open_regular

#: Largest ONNX file read (protobuf's own limit is 2 GB).
MAX_ONNX_BYTES = 2 * 1024**3
#: Largest kernel, stride, padding or dilation accepted from an ONNX node.
MAX_WINDOW = 65536


def _external_entries(tensor: Any, where: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for e in tensor.external_data:
        if e.key in entries:
            raise ModelFileError(f"{where}: external data key {e.key!r} given twice")
        entries[e.key] = e.value
    unknown = set(entries) - {"location", "offset", "length", "checksum", "basepath"}
    if unknown:
        raise ModelFileError(f"{where}: unknown external data keys {sorted(unknown)}")
    return entries


def _int_entry(entries: dict[str, str], key: str, where: str) -> int | None:
    v = entries.get(key)
    if v is None:
        return None
    if not v.isdigit() or len(v) > 19:
        raise ModelFileError(f"{where}: external data {key} {v[:24]!r} is not a non-negative integer")
    return int(v)


def _itemsize(onnx: Any, tensor: Any, where: str) -> int:
    try:
        import numpy as np

        return int(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize)
    except Exception:  # unknown or undefined data_type: onnx raises KeyError/ValueError/TypeError
        raise ModelFileError(f"{where}: unsupported tensor data type {tensor.data_type}") from None


def external_path(base: Path, location: str, where: str) -> Path:
    """The file ``location`` names inside the model folder ``base``, refusing anything that leaves it.

    Refused: an empty or absolute location, a NUL byte, ``..`` or a symbolic link on the way (the
    resolved path must equal the plain join), a target that is not a regular file or has more than one
    hard link (the same bytes reachable from outside the folder).
    """
    if not location or "\0" in location or os.path.isabs(location) or Path(location).drive:
        raise ModelFileError(f"{where}: external data location {location!r} must be a relative path inside "
                             f"the model's folder {base}")
    base_real = Path(os.path.realpath(base))
    joined = Path(os.path.normpath(base_real / location))
    resolved = Path(os.path.realpath(base_real / location))
    if resolved != joined or base_real not in resolved.parents:
        raise ModelFileError(f"{where}: external data location {location!r} leaves the model's folder {base} "
                             "(through '..' or a symbolic link); volnet reads only files inside it")
    try:
        st = os.lstat(resolved)
    except FileNotFoundError:
        raise ModelFileError(f"{where}: external data file {location!r} not found next to the model"
                             ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{where}: external data {location!r} is not a regular file")
    if st.st_nlink > 1:
        raise ModelFileError(f"{where}: external data file {location!r} has {st.st_nlink} hard links; volnet "
                             "reads only files with one (a link could reach a file outside the folder)")
    return resolved


def _inline_external(onnx: Any, tensor: Any, base: Path, where: str) -> None:
    entries = _external_entries(tensor, where)
    path = external_path(base, entries.get("location", ""), where)
    offset = _int_entry(entries, "offset", where) or 0
    length = _int_entry(entries, "length", where)
    n = count_bound(list(tensor.dims), where)
    need = n * _itemsize(onnx, tensor, where)
    if length is not None and length != need:
        raise ModelFileError(f"{where}: external data length {length} does not match dims "
                             f"{list(tensor.dims)} ({need} bytes)")
    with open_regular(path, where) as f:
        st = os.fstat(f.fileno())
        if st.st_nlink > 1 or not stat.S_ISREG(st.st_mode):  # changed since the check
            raise ModelFileError(f"{where}: external data file {path.name!r} changed while reading")
        if offset + need > st.st_size:
            raise ModelFileError(f"{where}: external data {path.name!r} offset {offset} + {need} bytes lies "
                                 f"past its end ({st.st_size} bytes); truncated file?")
        f.seek(offset)
        data = f.read(need)
    tensor.raw_data = data
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT


def _tensors(model: Any) -> list[tuple[str, Any]]:
    """(where, tensor) of every initializer and Constant value of the main graph."""
    out = [(f"initializer {t.name!r}", t) for t in model.graph.initializer]
    for node in model.graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                out.append((f"node {node.name or node.op_type!r} attribute {a.name!r}", a.t))
    return out


def load_model(onnx: Any, path: Path) -> Any:
    """The ModelProto of the regular file ``path``, external data checked and inlined (see module doc)."""
    try:
        with open_regular(path, "ONNX file") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_ONNX_BYTES:
                raise ModelFileError(f"{path}: {size:,} bytes is larger than an ONNX file can be (2 GB)")
            data = f.read()
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf DecodeError and friends
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelFileError(f"{path}: not a valid ONNX file ({type(e).__name__}: {first})") from None
    for where, t in _tensors(model):
        where = f"{path}: {where}"
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _inline_external(onnx, t, path.parent, where)
        else:
            check_tensor(t, where)
    return model


def check_tensor(tensor: Any, where: str) -> None:
    """The tensor's dims are non-negative and within volnet's element limit."""
    count_bound(list(tensor.dims), where)


def _ints(a: dict[str, Any], key: str, n: int, lo: int, default: list[int], where: str) -> list[int]:
    v = a.get(key, default)
    if not isinstance(v, (list, tuple)) or len(v) != n or not all(isinstance(x, int) for x in v):
        shown = list(v) if isinstance(v, (list, tuple)) else v
        raise ModelFileError(f"{where}: {key} must be {n} integers, got {shown!r}")
    if any(x < lo or x > MAX_WINDOW for x in v):
        raise ModelFileError(f"{where}: {key} {list(v)} must lie in [{lo}, {MAX_WINDOW}]")
    return [int(x) for x in v]


def spatial_attrs(a: dict[str, Any], kernel: Any, where: str) -> None:
    """Check the kernel and the window attributes of a 2-D Conv/Pool node (lengths and ranges)."""
    _ints({"kernel_shape": list(kernel)}, "kernel_shape", 2, 1, [], where)
    _ints(a, "strides", 2, 1, [1, 1], where)
    _ints(a, "pads", 4, 0, [0, 0, 0, 0], where)
    _ints(a, "dilations", 2, 1, [1, 1], where)


__all__ = ["MAX_WINDOW", "check_tensor", "external_path", "load_model", "spatial_attrs"]
