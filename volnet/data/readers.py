"""File readers: IDX (MNIST / Fashion-MNIST), CIFAR-10/100 binary version, image folders.

No reader ever unpickles: CIFAR is read from the *binary* version (fixed-length records).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volnet.errors import DataError

# IDX type byte -> big-endian dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_TYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES: dict[str, int] = {np.dtype(v).newbyteorder("=").str[1:]: k for k, v in _IDX_TYPES.items()}

PathLike = str | os.PathLike[str]


#: Largest uncompressed dataset file volnet reads (and never more than half this machine's memory).
MAX_DATA_BYTES = 64 * 1024**3
#: Largest image (width x height) volnet decodes: 16384 x 16384.
MAX_IMAGE_PIXELS = 16384 * 16384


def data_limit() -> int:
    """Most bytes one dataset file may hold uncompressed: MAX_DATA_BYTES or half the physical memory."""
    from volnet.validate import memory_bytes

    mem = memory_bytes()
    return MAX_DATA_BYTES if mem is None else min(MAX_DATA_BYTES, mem // 2)


def _gunzip(path: Path, raw: bytes, limit: int, partial: bool = False) -> bytes:
    """Decompress (possibly multi-member) gzip data, stopping with a DataError past ``limit`` bytes
    (``partial``: return the first ``limit`` bytes instead)."""
    out: list[bytes] = []
    total = 0
    rest = raw
    try:
        while rest:
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            data = rest
            while True:
                chunk = d.decompress(data, max(1, limit + 1 - total))
                total += len(chunk)
                out.append(chunk)
                if partial and total >= limit:
                    return b"".join(out)[:limit]
                if total > limit:
                    raise DataError(f"{path}: gzip data inflates to more than {limit:,} bytes (a damaged "
                                    "file or a decompression bomb); delete it and download it again")
                data = d.unconsumed_tail
                if d.eof or (not data and not chunk):
                    break
            if not d.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            rest = d.unused_data.lstrip(b"\0")
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e}); delete the file and "
                        "download it again") from None
    return b"".join(out)


def _read_bytes(path: Path, limit: int | None = None, size_of: Any = None) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic bytes; regular files only, at
    most ``limit`` bytes after decompression (default :func:`data_limit`). ``size_of(prefix)`` may give
    the length the file's own header declares (from its first bytes), which then bounds decompression."""
    from volnet.validate import read_regular

    limit = data_limit() if limit is None else limit
    try:
        raw = read_regular(path, "dataset file", limit, DataError)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check the path or pass --data-dir") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); check permissions") from None
    if raw[:2] == b"\x1f\x8b":
        if size_of is not None:
            declared = size_of(_gunzip(path, raw, 1024, partial=True))
            if declared is not None:
                limit = min(limit, declared + 1)  # one more byte: "trailing bytes" is reported by the caller
        return _gunzip(path, raw, limit)
    return raw


def _idx_size(prefix: bytes) -> int | None:
    """The total length an IDX header declares (None when the prefix is not a readable IDX header)."""
    if len(prefix) < 4 or prefix[0] or prefix[1] or prefix[2] not in _IDX_TYPES or not prefix[3]:
        return None
    header = 4 + 4 * prefix[3]
    if len(prefix) < header:
        return None
    count = 1
    for d in np.frombuffer(prefix, dtype=">u4", count=prefix[3], offset=4):
        count *= int(d)
    return header + count * np.dtype(_IDX_TYPES[prefix[2]]).itemsize


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into an array in native byte order.

    Layout: 2 zero bytes, a type byte (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float,
    0x0E double), a byte D = number of dimensions, D big-endian uint32 sizes, then the data.
    Raises ``DataError`` naming the file when the magic number, the sizes or the length are wrong.
    """
    path = Path(path)
    data = _read_bytes(path, size_of=_idx_size)
    fix = "delete the file and download it again"
    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file (only {len(data)} bytes); {fix}")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{path}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000TTDD with type "
                        f"TT in 08/09/0B/0C/0D/0E); not an IDX file or corrupt; {fix}")
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; corrupt file; {fix}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header}); {fix}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    from volnet.validate import count_bound

    count_bound([max(d, 1) for d in dims], f"{path}: IDX header", cls=DataError)  # even around a 0 size
    count = 1
    for d in dims:
        count *= d  # Python ints: no overflow
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{path}: IDX file {what}: dims {dims} of {dtype.name} need {expected} bytes, "
                        f"found {len(data)}; {fix}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=dtype.itemsize > 1 or not arr.flags.writeable)


def write_idx(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends with ``.gz``.

    Supported dtypes: uint8, int8, int16, int32, float32, float64.
    """
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("=").str[1:])
    if code is None or array.ndim == 0 or array.ndim > 255:
        raise DataError(f"write_idx: cannot store dtype {array.dtype} with {array.ndim} dims in IDX; "
                        "use uint8/int8/int16/int32/float32/float64 with 1..255 dims")
    payload = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
               + np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes())
    path = Path(path)
    path.write_bytes(gzip.compress(payload, compresslevel=6) if path.suffix == ".gz" else payload)


def find_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists (raw first), else None."""
    for cand in (directory / stem, directory / (stem + ".gz")):
        if cand.is_file():
            return cand
    return None


def read_idx_pair(images: PathLike, labels: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an IDX image file (N, H, W) uint8 and its label file (N,).

    Returns ``x`` float32 of shape (N, 1, H, W) scaled to [0, 1] and ``y`` int64 of shape (N,).
    """
    imgs = read_idx(images)
    labs = read_idx(labels)
    if imgs.ndim != 3 or imgs.dtype != np.uint8:
        raise DataError(f"{images}: expected (N, H, W) uint8 images, got {imgs.shape} {imgs.dtype}; "
                        "is this an image file (idx3-ubyte)?")
    if labs.ndim != 1 or labs.shape[0] != imgs.shape[0]:
        raise DataError(f"{labels}: expected ({imgs.shape[0]},) labels to match {images}, got "
                        f"{labs.shape}; the image and label files are from different sets")
    x = np.empty((imgs.shape[0], 1) + imgs.shape[1:], dtype=np.float32)
    np.multiply(imgs[:, None], np.float32(1 / 255), out=x, dtype=np.float32)
    return x, labs.astype(np.int64)


# ----------------------------------------------------------------------------------------- CIFAR binary

CIFAR_IMAGE_BYTES = 3 * 32 * 32


def read_cifar_binary(path: PathLike, label_bytes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Read one file of the CIFAR *binary* version (fixed-length records, no pickle).

    Each record is ``label_bytes`` label bytes followed by 3072 pixel bytes (1024 red, 1024 green,
    1024 blue, each 32x32 row-major). CIFAR-10 (``data_batch_*.bin``, ``test_batch.bin``) has 1 label
    byte; CIFAR-100 (``train.bin``, ``test.bin``) has 2: the coarse label then the fine label.

    Returns:
        x: uint8 of shape (N, 3, 32, 32); labels: uint8 of shape (N, label_bytes).
    """
    path = Path(path)
    data = _read_bytes(path)
    rec = label_bytes + CIFAR_IMAGE_BYTES
    if len(data) == 0 or len(data) % rec:
        raise DataError(f"{path}: {len(data)} bytes is not a whole number of {rec}-byte CIFAR records "
                        f"({label_bytes} label byte(s) + 3072 pixels); truncated or not the binary version "
                        "(cifar-*-binary.tar.gz); download it again")
    recs = np.frombuffer(data, dtype=np.uint8).reshape(-1, rec)
    return recs[:, label_bytes:].reshape(-1, 3, 32, 32), recs[:, :label_bytes].copy()


def cifar_to_float(x: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]."""
    out = np.empty(x.shape, dtype=np.float32)
    np.multiply(x, np.float32(1 / 255), out=out, dtype=np.float32)
    return out


def read_cifar_files(paths: Sequence[PathLike], label_bytes: int = 1,
                     label_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate several CIFAR binary files; returns ``x`` float32 (N, 3, 32, 32) in [0, 1]
    and ``y`` int64 (N,) taken from label byte ``label_index`` (CIFAR-100: 0 coarse, 1 fine)."""
    xs, ys = [], []
    for p in paths:
        x, lab = read_cifar_binary(p, label_bytes)
        xs.append(x)
        ys.append(lab[:, label_index])
    return cifar_to_float(np.concatenate(xs)), np.concatenate(ys).astype(np.int64)


# ----------------------------------------------------------------------------------------- image folder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders needs Pillow; install it with pip install 'volnet[images]' "
                        "(or pip install pillow)") from None
    return Image


def read_image(path: PathLike, size: tuple[int, int] | None = None, mode: str = "RGB") -> np.ndarray:
    """Read one image with Pillow as float32 (C, H, W) in [0, 1]; ``mode`` ``"RGB"`` (C=3) or ``"L"`` (C=1).

    ``size=(H, W)`` resizes (bilinear) first.
    """
    from volnet.validate import open_regular

    Image = _pillow()
    try:
        with open_regular(path, "image", DataError) as f, Image.open(f) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: image of {w}x{h} pixels is larger than volnet reads "
                                f"({MAX_IMAGE_PIXELS:,} pixels); shrink it first")
            im = im.convert(mode)
            if size is not None:
                im = im.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: refused as a decompression bomb ({e}); shrink the image first") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode this image; shrink it first") from None
    except Exception as e:  # Pillow's decoders raise many types on damaged files (OSError, SyntaxError, ...)
        first = (str(e).splitlines() or [""])[0][:160]
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {first}); remove or replace the "
                        "file") from None
    if a.ndim == 2:
        a = a[:, :, None]
    return cifar_to_float(a.transpose(2, 0, 1))


def read_image_folder(root: PathLike, size: int | tuple[int, int] | None = None, mode: str = "RGB",
                      classes: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``root/class_name/*.png|jpg|...`` (classes = sorted sub-directory names).

    Args:
        root: folder with one sub-folder per class.
        size: resize every image to (H, W) (an int means square); required when sizes differ.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (grayscale, 1 channel).
        classes: class names to use, in label order (default: sorted sub-folders of ``root``).

    Returns:
        x float32 (N, C, H, W) in [0, 1], y int64 (N,), class names.
    """
    root = Path(root)
    if mode not in ("RGB", "L"):
        raise DataError(f"image folder: mode must be 'RGB' or 'L' (grayscale), got {mode!r}")
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; expected {root}/CLASS_NAME/*.png|jpg")
    if classes is None:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders; expected {root}/CLASS_NAME/*.png|jpg")
    if len(classes) < 2:
        raise DataError(f"image folder {root} has one class ({classes[0]!r}); a classifier needs at least "
                        f"two class sub-folders {root}/CLASS_NAME/")
    hw = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    images: list[np.ndarray] = []
    labels: list[int] = []
    for k, cls in enumerate(classes):
        d = root / cls
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS) if d.is_dir() else []
        for f in files:
            img = read_image(f, hw, mode)
            if images and img.shape != images[0].shape:
                raise DataError(f"{f}: image size {img.shape[1:]} differs from {images[0].shape[1:]}; "
                                "pass size=(H, W) to resize all images")
            images.append(img)
            labels.append(k)
    if not images:
        raise DataError(f"image folder {root} has no images ({', '.join(IMAGE_EXTENSIONS)}) in its "
                        f"class sub-folders {list(classes)}")
    return np.stack(images), np.asarray(labels, dtype=np.int64), list(classes)
