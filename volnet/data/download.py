"""Downloads into the cache directory with checksum verification and atomic writes (temp + rename)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from volnet.atomic import open_atomic, replace_dir, temp_name
from volnet.errors import DataError


def cache_dir() -> Path:
    """The download cache: ``$VOLNET_CACHE`` if set, else ``~/.cache/volnet``."""
    env = os.environ.get("VOLNET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "volnet"


def _parse_checksum(checksum: str) -> tuple[str, str]:
    """``"md5:HEX"`` / ``"sha256:HEX"`` / bare HEX (32 digits md5, 64 sha256) -> (algorithm, hex)."""
    algo, _, digest = checksum.rpartition(":")
    digest = digest.strip().lower()
    if not algo:
        algo = {32: "md5", 64: "sha256"}.get(len(digest), "")
    if algo not in ("md5", "sha256") or len(digest) != hashlib.new(algo).digest_size * 2:
        raise DataError(f"bad checksum {checksum!r}; give 'md5:<32 hex>' or 'sha256:<64 hex>'")
    return algo, digest


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: str | os.PathLike[str], checksum: str) -> bool:
    """True when the file's digest equals ``checksum`` (``"md5:..."``, ``"sha256:..."`` or bare hex)."""
    algo, digest = _parse_checksum(checksum)
    return file_digest(path, algo) == digest


def download(url: str, dest: str | os.PathLike[str], checksum: str | None = None, *,
             timeout: float = 60.0) -> Path:
    """Fetch ``url`` (http(s) or file://) to ``dest`` atomically and verify its checksum.

    An existing ``dest`` whose checksum matches is kept (no transfer). The bytes go to a temporary
    file in ``dest``'s directory, are hashed on the way, and are renamed onto ``dest`` only when the
    digest matches; on mismatch the temporary file is removed and ``DataError`` names the URL and both
    digests.
    """
    dest = Path(dest)
    algo, digest = _parse_checksum(checksum) if checksum else ("sha256", "")
    if dest.is_file() and (not digest or file_digest(dest, algo) == digest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.new(algo)
    with open_atomic(dest, suffix=".part") as out:  # renamed onto dest only when the digest matches
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http/file only)
                while block := resp.read(1 << 20):
                    h.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"cannot download {url} ({reason}); check the network, or fetch the file "
                            f"by hand and put it at {dest}") from None
        got = h.hexdigest()
        if digest and got != digest:
            raise DataError(f"checksum mismatch for {url}: expected {algo} {digest}, got {got}; the "
                            "download is corrupt or the mirror changed; try again or fetch it by hand to "
                            f"{dest}")
    return dest


def download_first(urls: Sequence[str], dest: str | os.PathLike[str], checksum: str | None = None) -> Path:
    """Try each mirror URL in turn; raise the last ``DataError`` when all fail."""
    err: DataError | None = None
    for url in urls:
        try:
            return download(url, dest, checksum)
        except DataError as e:
            err = e
    assert err is not None, "download_first needs at least one URL"
    raise err


def extract_members(archive: str | os.PathLike[str], members: dict[str, str],
                    dest_dir: str | os.PathLike[str], optional: Sequence[str] = ()) -> Path:
    """Copy named regular files out of a tar archive into ``dest_dir`` atomically.

    ``members`` maps archive member names to output file names. Nothing else in the archive is
    touched (no ``extractall``, no links, no path traversal); members named in ``optional`` may be
    absent. The files are written to a temporary
    directory next to ``dest_dir`` which is then renamed onto it.
    """
    dest_dir = Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest_dir, ".tmp")
    tmp.mkdir()
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for name, out_name in members.items():
                    try:
                        info = tar.getmember(name)
                    except KeyError:
                        if name in optional:
                            continue
                        raise DataError(f"{archive}: member {name} is missing; the archive is not the "
                                        "expected one; delete it and download again") from None
                    src = tar.extractfile(info) if info.isreg() else None
                    if src is None:
                        raise DataError(f"{archive}: member {name} is not a regular file; delete the "
                                        "archive and download again")
                    with src, open(tmp / out_name, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{archive}: corrupt archive ({e}); delete it and download again") from None
        replace_dir(tmp, dest_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest_dir
