"""Checks made before volnet reads, builds or allocates anything from a file the user gave.

One place for the limits and the small readers every file format goes through:

- :func:`open_regular` / :func:`read_regular`: only regular files are read (a FIFO, a device or a socket
  would block or never end); the file is opened non-blocking and checked with ``fstat`` (no race).
- :func:`loads_json` / :func:`read_json`: JSON with bounded size, nesting depth (no ``RecursionError``)
  and numbers (no 5000-digit integers, no ``1e999``/``NaN``); :func:`check_fields` checks the types and
  ranges of an object's fields (the schema of ``trainer.json``, ``model.json`` headers, ...).
- :func:`npz_members`: the names, dtypes, shapes and declared sizes of the arrays of an ``.npz`` read from
  the zip directory and the ``.npy`` headers only, so declared sizes are compared with what a model needs
  before any array is read (:func:`volnet.io.load`).
- :func:`count_bound`: a product of declared sizes against a limit, in Python integers (no overflow).

Every problem raises a :class:`volnet.VolnetError` subclass with one line naming the file.

>>> loads_json('{"a": [1, 2.5]}', "x.json")
{'a': [1, 2.5]}
>>> loads_json("[" * 1000 + "]" * 1000, "x.json")
Traceback (most recent call last):
...
volnet.errors.ModelFileError: x.json: JSON nested 1000 deep (limit 100); not a volnet file
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from volnet.errors import ModelFileError, VolnetError

#: Most layers a model file or a spec may have.
MAX_LAYERS = 100_000
#: Deepest JSON nesting accepted in any file volnet reads (a 1000-layer ResNet config is ~20 deep).
MAX_JSON_DEPTH = 100
#: Largest JSON file (model.json, trainer.json) read, in bytes.
MAX_JSON_BYTES = 256 * 1024**2
#: Most digits of an integer in a JSON file (sizes fit in int64: 19 digits).
MAX_INT_DIGITS = 20
#: Largest number of elements one declared array (IDX, npz, safetensors, ONNX) may have: 2^40.
MAX_ELEMENTS = 2**40
#: Deflate cannot inflate more than ~1032:1; a larger declared ratio is a lie (or a bomb).
MAX_DEFLATE_RATIO = 1100

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def is_special(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` exists and is neither a regular file nor a directory (FIFO, device, socket)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def refuse_special(path: str | os.PathLike[str], what: str, cls: type[VolnetError] = ModelFileError) -> None:
    """Raise ``cls`` when ``path`` is a FIFO, a device or a socket (reading it could block forever)."""
    if is_special(path):
        raise cls(f"{what} {path} is {_kind(os.stat(path).st_mode)}, not a regular file; give a regular file")


def open_regular(path: str | os.PathLike[str], what: str = "file",
                 cls: type[VolnetError] = ModelFileError) -> BinaryIO:
    """Open ``path`` for reading in binary mode, refusing anything but a regular file.

    The file is opened with ``O_NONBLOCK`` (a FIFO without a writer does not block the open) and checked
    with ``fstat`` on the open descriptor. Missing files raise ``FileNotFoundError`` as ``open`` does.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise cls(f"{what} {path} is {_kind(mode)}, not a regular file; give a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], what: str = "file", limit: int | None = None,
                 cls: type[VolnetError] = ModelFileError) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`), refusing files larger than ``limit``."""
    with open_regular(path, what, cls) as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise cls(f"{what} {path} is {size:,} bytes, more than the {limit:,} volnet reads; "
                      "not a file of this kind")
        return f.read()  # the size is known: read() allocates it once


def read_text(path: str | os.PathLike[str], what: str = "file", cls: type[VolnetError] = VolnetError,
              limit: int = MAX_JSON_BYTES) -> str:
    """A UTF-8 text file (a spec file): regular files only, at most ``limit`` bytes, one-line errors."""
    try:
        raw = read_regular(path, what, limit, cls)
    except OSError as e:
        raise cls(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise cls(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start}); is it a binary "
                  "file?") from None


# --------------------------------------------------------------------------- JSON

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_depth(text: str | bytes) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text (strings skipped); linear time, no recursion."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    raw = _STRING.sub(b'""', raw)
    a = np.frombuffer(raw, dtype=np.uint8)
    if a.size == 0:
        return 0
    step = (np.isin(a, (0x5B, 0x7B)).astype(np.int64) - np.isin(a, (0x5D, 0x7D)).astype(np.int64))
    return int(np.cumsum(step).max(initial=0))


def loads_json(text: str | bytes, what: str, cls: type[VolnetError] = ModelFileError,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` with bounded depth and numbers; any problem is one line ``what: ...`` of ``cls``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise cls(f"{what}: not UTF-8 text ({e.reason} at byte {e.start}); not a JSON file") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise cls(f"{what}: JSON nested {depth} deep (limit {max_depth}); not a volnet file")

    def parse_int(s: str) -> int:
        if len(s.lstrip("-")) > MAX_INT_DIGITS:
            raise cls(f"{what}: the number {s[:12]}... has {len(s)} digits; sizes and counts fit in "
                      f"{MAX_INT_DIGITS - 1}")
        return int(s)

    def parse_float(s: str) -> float:
        v = float(s)
        if not math.isfinite(v):
            raise cls(f"{what}: the number {s[:24]}{'...' if len(s) > 24 else ''} is too large for a float")
        return v

    def parse_constant(s: str) -> float:
        raise cls(f"{what}: {s} is not allowed (JSON has no NaN or Infinity); the file is damaged")

    try:
        return json.loads(text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    except json.JSONDecodeError as e:
        raise cls(f"{what}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise cls(f"{what}: JSON nested too deep") from None


def read_json(path: str | os.PathLike[str], what: str | None = None, cls: type[VolnetError] = ModelFileError,
              limit: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file through :func:`read_regular` and :func:`loads_json`."""
    what = what or str(path)
    try:
        raw = read_regular(path, what, limit, cls)
    except FileNotFoundError:
        raise cls(f"{what}: file not found ({path})") from None
    except OSError as e:
        raise cls(f"{what}: cannot read {path}: {e.strerror or e}") from None
    return loads_json(raw, what, cls)


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,),
}


def check_fields(doc: Any, schema: Mapping[str, str], what: str, cls: type[VolnetError] = ModelFileError,
                 optional: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check that ``doc`` is an object whose fields have the types of ``schema`` (required) and
    ``optional``; types are ``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``, with ``?`` for
    "or null" and ``+`` for "> 0" / ``0+`` for ">= 0" on numbers (``"int+"``, ``"float0+?"``).

    >>> check_fields({"epochs": 3, "lr": 0.1}, {"epochs": "int+", "lr": "float+"}, "t.json")
    {'epochs': 3, 'lr': 0.1}
    >>> check_fields({"epochs": "3"}, {"epochs": "int+"}, "t.json")
    Traceback (most recent call last):
    ...
    volnet.errors.ModelFileError: t.json: "epochs" must be an integer > 0, got '3'
    """
    if not isinstance(doc, dict):
        raise cls(f"{what}: expected a JSON object, got {type(doc).__name__}")
    fields = {k: (v, True) for k, v in schema.items()}
    fields.update({k: (v, False) for k, v in (optional or {}).items()})
    for key, (spec, required) in fields.items():
        if key not in doc:
            if required:
                raise cls(f"{what}: missing field \"{key}\"")
            continue
        v = doc[key]
        nullable = spec.endswith("?")
        base = spec.rstrip("?")
        lo = "0+" if base.endswith("0+") else "+" if base.endswith("+") else ""
        base = base[: len(base) - len(lo)]
        if v is None and nullable:
            continue
        ok = isinstance(v, _TYPES[base]) and (base == "bool" or not isinstance(v, bool))
        if ok and lo and base in ("int", "float"):
            ok = math.isfinite(v) and (v > 0 if lo == "+" else v >= 0)
        if not ok:
            noun = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
                    "list": "a list", "dict": "an object"}[base]
            rng = {"+": " > 0", "0+": " >= 0", "": ""}[lo]
            null = " or null" if nullable else ""
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            raise cls(f"{what}: \"{key}\" must be {noun}{rng}{null}, got {shown}")
    return doc


def count_bound(shape: Any, what: str, limit: int = MAX_ELEMENTS,
                cls: type[VolnetError] = ModelFileError) -> int:
    """The number of elements of ``shape`` (Python ints, no overflow), refusing more than ``limit``."""
    n = 1
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise cls(f"{what}: bad size {d!r} in shape {tuple(shape)}")
        n *= int(d)
    if n > limit:
        raise cls(f"{what}: shape {tuple(int(d) for d in shape)} declares {n:,} elements, more than "
                  f"volnet's limit of {limit:,}; the file is damaged or hostile")
    return n


def memory_bytes() -> int | None:
    """Physical memory of this machine in bytes (None when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_memory(nbytes: int, what: str, cls: type[VolnetError] = ModelFileError) -> None:
    """Refuse to allocate more than this machine's physical memory (a clear line, not a MemoryError)."""
    mem = memory_bytes()
    if mem is not None and nbytes > mem:
        raise cls(f"{what} needs {nbytes / 1024**3:,.1f} GB, more than this machine's "
                  f"{mem / 1024**3:,.1f} GB of memory")


# --------------------------------------------------------------------------- .npz

@dataclass(frozen=True)
class NpzMember:
    """One array of an ``.npz`` as its zip entry and ``.npy`` header declare it (nothing read yet)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int  # of the array data, from shape and dtype
    file_size: int  # the zip's declared uncompressed size of the .npy member
    compress_size: int


def check_weight_dtype(dtype: np.dtype, what: str, cls: type[VolnetError] = ModelFileError) -> None:
    """Weights are real numbers: float or integer arrays; never objects, complex or time values."""
    kinds = {"c": "complex numbers", "m": "time differences", "M": "dates",
             "O": "Python objects (pickle, which volnet never loads)", "V": "raw records", "S": "bytes",
             "U": "strings", "b": "booleans"}
    if dtype.kind not in "fiu":
        why = kinds.get(dtype.kind, "not numbers")
        raise cls(f"{what} has dtype {dtype}, expected a float array ({why} are not weights)")


def npz_members(f: BinaryIO, what: str, cls: type[VolnetError] = ModelFileError) -> dict[str, NpzMember]:
    """The arrays of an open ``.npz`` file by name, from the zip directory and ``.npy`` headers only.

    Refuses: not a zip, duplicate or non-``.npy`` members, unreadable headers, pickled/object/complex/
    time dtypes, sizes that disagree with the zip's declared sizes, members that would extend past the
    end of the file, and declared compression ratios deflate cannot reach (a zip bomb).
    """
    try:
        size: int | None = os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # io.BytesIO has no descriptor
        size = None
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise cls(f"{what}: truncated or not an .npz (zip) archive ({e}); save the model again") from None
    out: dict[str, NpzMember] = {}
    with zf:
        infos = zf.infolist()
        if len(infos) > 4 * MAX_LAYERS:
            raise cls(f"{what}: {len(infos):,} members; more than any volnet model has")
        for zi in infos:
            if not zi.filename.endswith(".npy"):
                raise cls(f"{what}: member {zi.filename!r} is not an array (.npy); not a volnet weights file")
            key = zi.filename[:-4]
            if key in out:
                raise cls(f"{what}: array {key!r} is stored twice")
            if zi.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise cls(f"{what}: array {key!r} uses an unsupported compression ({zi.compress_type})")
            if zi.compress_type == zipfile.ZIP_STORED and zi.compress_size != zi.file_size:
                raise cls(f"{what}: array {key!r}: stored member with sizes {zi.compress_size} != "
                          f"{zi.file_size}; damaged file")
            if zi.file_size > MAX_DEFLATE_RATIO * zi.compress_size + 4096:
                raise cls(f"{what}: array {key!r} declares {zi.file_size:,} bytes from {zi.compress_size:,} "
                          "compressed: impossible for deflate; damaged or hostile file")
            if size is not None and zi.header_offset + zi.compress_size > size:
                raise cls(f"{what}: array {key!r} extends past the end of the file; truncated, save again")
            try:
                with zf.open(zi) as m:
                    version = np.lib.format.read_magic(m)
                    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    if version not in ((1, 0), (2, 0), (3, 0)):
                        raise ValueError(f"unknown .npy version {version}")
                    shape, fortran, dtype = reader(m)
                    header_len = m.tell()
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError,
                    SyntaxError, TypeError) as e:
                text = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise cls(f"{what}: truncated or corrupt at array {key!r} ({text[:120]}); save the model "
                          "again") from None
            dtype = np.dtype(dtype)
            if dtype.hasobject:
                raise cls(f"{what}: array {key!r} holds Python objects (pickle), which volnet never loads")
            check_weight_dtype(dtype, f"{what}: array {key!r}", cls)
            n = count_bound(shape, f"{what}: array {key!r}", cls=cls)
            nbytes = n * dtype.itemsize
            if header_len + nbytes != zi.file_size:
                raise cls(f"{what}: array {key!r}: shape {tuple(shape)} of {dtype} needs {nbytes:,} bytes, "
                          f"the file holds {zi.file_size - header_len:,}; truncated or damaged, save again")
            out[key] = NpzMember(key, tuple(int(d) for d in shape), dtype, nbytes, zi.file_size,
                                 zi.compress_size)
    return out


def read_npz_arrays(f: BinaryIO, names: list[str], what: str,
                    cls: type[VolnetError] = ModelFileError) -> dict[str, np.ndarray]:
    """Read the arrays ``names`` (already checked with :func:`npz_members`) without pickle."""
    out: dict[str, np.ndarray] = {}
    key = None
    try:
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            for key in names:
                with zf.open(key + ".npy") as m:
                    out[key] = np.lib.format.read_array(m, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise cls(f"{what}: truncated or corrupt at array {key!r} ({type(e).__name__}: {text[:120]}); "
                  "save the model again") from None
    return out


def read_npz(path: str | os.PathLike[str], what: str | None = None,
             cls: type[VolnetError] = ModelFileError) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file after :func:`npz_members` checked it (optimizer state, weights)."""
    what = what or str(path)
    try:
        with open_regular(path, what, cls) as f:
            members = npz_members(f, what, cls)
            check_fits_memory(sum(m.nbytes for m in members.values()), what, cls)
            return read_npz_arrays(f, list(members), what, cls)
    except FileNotFoundError:
        raise cls(f"{what}: file not found ({path})") from None
    except OSError as e:
        raise cls(f"{what}: cannot read {path}: {e.strerror or e}") from None


def finite_or_raise(a: np.ndarray, what: str, cls: type[VolnetError] = ModelFileError) -> None:
    """Refuse arrays with NaN or infinite values (a damaged file or a diverged training)."""
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise cls(f"{what} holds {bad:,} NaN or infinite value(s); the file is damaged or the training "
                  "diverged")




# --------------------------------------------------------------------------- trainer.json

#: ``trainer.json`` (a checkpoint's training state): field -> type (see :func:`check_fields`); every
#: section is optional (a ``best/`` copy has no optimizer), but present ones must have these types.
TRAINER_SCHEMA: dict[str, Any] = {
    "format": "str", "version": "int+", "input_shape": "list?", "classes": "list?", "normalizer": "dict?",
    "history": "list", "info": "dict", "data": "dict", "rng": "dict", "epoch_stats": "dict",
    "optimizer": "dict", "config": "dict", "position": "dict", "best": "dict",
}
#: Per section: (fields every checkpoint writes, fields older checkpoints may lack).
TRAINER_SECTIONS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "position": ({"epoch": "int0+", "batch": "int0+", "step": "int0+", "steps_per_epoch": "int+"},
                 {"finished": "bool"}),
    "config": ({"optimizer": "str", "lr": "float+?", "batch_size": "int+", "epochs": "int0+",
                "schedule": "str?", "warmup": "float0+?", "step_size": "float+?", "gamma": "float+?",
                "min_lr": "float0+?", "weight_decay": "float0+?", "optimizer_kw": "dict?", "clip": "float+?",
                "seed": "int0+", "augment": "dict"},
               {"save_every": "int+?", "eval_batch_size": "int+?", "frozen": "list?",
                "update_frozen_bn": "bool?"}),
    "normalizer": ({"mean": "list", "std": "list"}, {}),
    "best": ({"acc": "float0+?", "epoch": "int0+?"}, {}),
    "optimizer": ({"type": "str", "lr": "float0+"}, {}),
    "rng": ({"dropout": "dict"}, {}),
    "epoch_stats": ({"loss_sum": "float", "correct": "int0+", "seen": "int0+"},
                    {"seconds": "float0+", "wall": "float0+", "lr": "float0+?"}),
    "info": ({}, {"args": "dict?"}),
}
#: Sections a checkpoint that can be resumed (one with optimizer state) must have.
RESUME_SECTIONS = ("config", "position", "best", "rng", "epoch_stats", "history", "normalizer", "data")


def check_trainer_json(doc: Any, path: Any) -> dict[str, Any]:
    """Check a ``trainer.json`` against :data:`TRAINER_SCHEMA` / :data:`TRAINER_SECTIONS` (types,
    ranges, finite normaliser with std > 0, class names as strings); returns ``doc`` or raises
    ModelFileError naming the file and the field."""
    what = str(path)
    stack = [doc]
    while stack:  # NaN/Infinity anywhere would pass today and break the next checkpoint write
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise ModelFileError(f"{what}: holds {v} (JSON has no NaN or Infinity); the file is damaged")
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    check_fields(doc, {"format": "str"}, what,
                 optional={k: v for k, v in TRAINER_SCHEMA.items() if k != "format"})
    if doc.get("optimizer") is not None:
        missing = [k for k in RESUME_SECTIONS if doc.get(k) is None]
        if missing:
            raise ModelFileError(f"{what}: a checkpoint with optimizer state needs the section(s) {missing}")
    for section, (required, optional) in TRAINER_SECTIONS.items():
        if doc.get(section) is not None:
            check_fields(doc[section], required, f"{what}: {section}", optional=optional)
    for i, rec in enumerate(doc.get("history") or []):  # one record per epoch (metrics.jsonl's lines)
        check_fields(rec, {"epoch": "int+"}, f"{what}: history[{i}]")
        bad = [k for k, v in rec.items()
               if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))]
        if bad:
            raise ModelFileError(f"{what}: history[{i}]: \"{bad[0]}\" must be a number or null")
    args = (doc.get("info") or {}).get("args")
    if args:  # what `volnet evaluate` reuses of the training command
        check_fields(args, {}, f"{what}: info.args", optional={
            "data_used": "str?", "data": "str?", "data_dir": "str?", "seed": "int0+?", "limit_train": "int+?",
            "num_classes": "int+?"})
        if not (args.get("val") is None or isinstance(args["val"], (str, int, float))) \
                or isinstance(args.get("val"), bool):
            raise ModelFileError(f"{what}: info.args: \"val\" must be a count, a fraction or null")
    norm = doc.get("normalizer")
    if norm:
        check_fields(norm, {"mean": "list", "std": "list"}, f"{what}: normalizer")
        values = list(norm["mean"]) + list(norm["std"])
        if (len(norm["mean"]) != len(norm["std"]) or not norm["mean"]
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in values) or not all(s > 0 for s in norm["std"])):
            raise ModelFileError(f"{what}: normalizer needs one finite mean and one std > 0 per channel, got "
                                 f"mean={norm['mean']!r:.60} std={norm['std']!r:.60}")
    classes = doc.get("classes")
    if classes and not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes):
        raise ModelFileError(f"{what}: classes must be a list of names")
    return doc


__all__ = [
    "MAX_ELEMENTS", "MAX_JSON_DEPTH", "MAX_LAYERS", "TRAINER_SCHEMA", "NpzMember", "check_fields",
    "check_fits_memory", "check_trainer_json", "check_weight_dtype", "count_bound", "finite_or_raise",
    "is_special", "json_depth", "loads_json", "memory_bytes", "npz_members", "open_regular", "read_json",
    "read_npz", "read_npz_arrays", "read_regular", "read_text", "refuse_special",
]
