"""Atomic file writes: the one writer of model files, checkpoints, plots, metrics and downloads.

A file is written to a hidden temporary sibling, flushed and fsynced, then renamed over the target
(``os.replace``), so readers see the old content or the new, never a partial file; on any error the
temporary file is removed and the old file is untouched. A directory is built as a temporary sibling and
swapped in whole (:func:`replace_dir`).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(d / "a.txt", "one"); atomic_write_text(d / "a.txt", "two")
>>> (d / "a.txt").read_text(), sorted(p.name for p in d.iterdir())
('two', ['a.txt'])
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from volnet.errors import ModelFileError


def fsync_dir(path: Path) -> None:
    """Persist a rename (best effort: not every platform can open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_name(path: Path, suffix: str) -> Path:
    """A fresh hidden sibling name of ``path`` (same directory, so renames stay atomic)."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """``with open_atomic(path) as f: f.write(...)``: the bytes go to a temporary sibling that replaces
    ``path`` when the block ends without an error (fsynced); on an error it is removed, ``path`` untouched.

    The directory must exist (ModelFileError otherwise: nothing is created behind the caller's back).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ModelFileError(
            f"cannot write {path}: the directory {path.parent} does not exist; create it first"
        )
    tmp = temp_name(path, suffix)
    # O_EXCL: never follow or reuse an existing file; mode 0o666 & ~umask, as open() would create it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`open_atomic`)."""
    with open_atomic(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """:func:`atomic_write_bytes` for text."""
    atomic_write_bytes(path, text.encode(encoding))


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file and fsync it (for files inside a directory swapped in whole)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_dir(tmp: Path, path: Path) -> None:
    """Rename the finished directory ``tmp`` over ``path``: an existing ``path`` is renamed away first
    (and put back if the rename fails), then removed; the parent directory is fsynced."""
    old: Path | None = None
    if path.exists():
        old = temp_name(path, ".old")
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:  # put the previous directory back
            os.rename(old, path)
        raise
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
