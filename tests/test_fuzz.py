"""Fuzzing every input surface: hostile specs, model directories, ONNX, safetensors, IDX/CIFAR files, image
folders and CLI argument lists (issue 11, "Proof").

Each case runs bounded: an address-space limit (``RLIMIT_AS``: what the process had plus
``MEMORY_BUDGET``) and a wall-clock timeout (``SIGALRM``), and must end in exit 0 or a clear error: for the
CLI exit status 2 with one ``volnet CMD: error: ...`` line (a spec error adds its caret display), for the
library a :class:`volnet.VolnetError`; never a traceback, an internal error, a ``MemoryError`` or a hang, and
no file of the user's changed or lost. Most cases call ``volnet.cli.main.main(argv)`` in-process (cheap);
``test_cli_subprocess_bombs`` runs the worst ones as real processes under the same limits.

Hypothesis generates the cases, seeded (``derandomize=True``, no example database), so a run is
reproducible. ``FUZZ_CASES`` sets the total number of cases (default 2,000; ``FUZZ_CASES=20000`` for a
long local run), shared among the surfaces by ``WEIGHTS``.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import volnet  # noqa: E402
from volnet.cli.main import main  # noqa: E402
from volnet.errors import VolnetError  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")

TOTAL = int(os.environ.get("FUZZ_CASES", "2000"))
WEIGHTS = {"spec": 0.2, "model_dir": 0.18, "run_dir": 0.08, "onnx": 0.12, "safetensors": 0.08,
           "idx_cifar": 0.08, "image_folder": 0.08, "cli_args": 0.18}
MEMORY_BUDGET = 1536 * 1024**2  # bytes a case may add to the address space
TIMEOUT_S = 20
COUNTS: Counter[str] = Counter()


def _settings(surface: str) -> settings:
    return settings(max_examples=max(10, round(TOTAL * WEIGHTS[surface])), derandomize=True, database=None,
                    deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


# --------------------------------------------------------------------------------------------- harness

class Hang(BaseException):
    """Raised by the alarm: the case ran past TIMEOUT_S (BaseException: no ``except Exception`` eats it)."""


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def bounded(timeout: float = TIMEOUT_S):
    """Limit the address space to what the process has plus MEMORY_BUDGET, and the time to ``timeout``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_bytes() + MEMORY_BUDGET
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no result after {timeout} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (FIFOs and links by kind) with a digest of its content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            st_ = os.lstat(p)
            if not os.path.isfile(p) or os.path.islink(p):
                out[p] = f"special:{st_.st_mode:o}"
            else:
                with open(p, "rb") as f:
                    out[p] = hashlib.sha1(f.read()).hexdigest()
    return out


def assert_kept(before: dict[str, str], root: Path, allowed: tuple[Path, ...] = ()) -> None:
    """No file of ``before`` is changed or gone (paths under ``allowed`` may be written by the command)."""
    after = snapshot(root)
    for p, digest in before.items():
        if any(Path(p).is_relative_to(a) for a in allowed):
            continue
        assert after.get(p) == digest, f"user file {p} was {'changed' if p in after else 'deleted'}"


def assert_clear_error(rc: int, err: str, argv: list[str]) -> None:
    """Exit 0, or exit 2 with one ``volnet ...: error:`` line (plus a caret display for spec errors)."""
    assert "Traceback" not in err, f"traceback for {argv}:\n{err}"
    assert "please report this" not in err, f"internal error for {argv}:\n{err}"
    assert "not enough memory" not in err, f"unbounded allocation for {argv}:\n{err}"
    assert rc in (0, 2), f"exit {rc} for {argv}:\n{err}"
    if rc == 2:
        lines = err.rstrip("\n").split("\n")
        errors = [i for i, ln in enumerate(lines) if ln.startswith("volnet") and "error:" in ln]
        assert errors, f"no error line for {argv}:\n{err}"
        tail = lines[errors[-1] + 1:]
        assert len(tail) in (0, 2) and all(ln.startswith("  ") for ln in tail), \
            f"more than one line (or caret display) for {argv}:\n{err}"


def run_cli(argv: list[str], root: Path | None = None, allowed: tuple[Path, ...] = (),
            surface: str = "cli_args") -> tuple[int, str, str]:
    """``main(argv)`` in-process under :func:`bounded`, with the outcome and the user's files checked."""
    before = snapshot(root) if root is not None else {}
    out, err = io.StringIO(), io.StringIO()
    try:
        with bounded(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except Hang as e:
        raise AssertionError(f"hang: {e} for {argv}") from None
    assert_clear_error(rc, err.getvalue(), argv)
    if root is not None:
        assert_kept(before, root, allowed)
    COUNTS[surface] += 1
    return rc, out.getvalue(), err.getvalue()


def run_lib(fn: Any, *args: Any, surface: str, **kwargs: Any) -> Any:
    """A library call under :func:`bounded`: it returns or raises a VolnetError (never anything else)."""
    try:
        with bounded():
            try:
                result = fn(*args, **kwargs)
            except VolnetError as e:
                assert str(e) and "\n" not in str(e).split("\n")[0], e
                result = e
    except Hang as e:
        raise AssertionError(f"hang: {e} for {fn.__name__}{args}") from None
    COUNTS[surface] += 1
    return result


def fresh(tmp_path_factory: Any, name: str) -> Path:
    d = tmp_path_factory.mktemp(name)
    return d


def _clear(d: Path) -> None:
    for p in d.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


# --------------------------------------------------------------------------------------------- values

HUGE = ["9" * 40, "9" * 5000, "1e309", "-1e309", "1" + "0" * 19, str(2**63), str(2**64 + 1)]
NUMBERS = ["0", "1", "-1", "2", "3", "7", "32", "0.5", "1e-3", "nan", "inf", "-inf", "1e9", *HUGE[:1], "x",
           ""]


def _json_values(depth: int = 3) -> st.SearchStrategy[Any]:
    base = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                     st.text(max_size=8), st.sampled_from([0, 1, -1, 2**31, 10**30, "float32", "Conv", "FC"]))
    return st.recursive(base, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                   max_size=3), max_leaves=8)


# --------------------------------------------------------------------------------------------- specs

WORDS = ["INPUT", "[32x32x3]", "[8x8x1]", "[0x8x1]", "CONV3-8", "CONV3-8/2", "CONV11-96/4p0", "CONV3x5-4",
         "CONV3-0", "CONV0-3", "DCONV3-4", "d2", "LOCAL3-4", "POOL2", "POOL3/2", "POOL9", "AVGPOOL2",
         "L2POOL2", "GAP", "FC-10", "FC-0", "FC-", "RELU", "BN", "LRN", "LRN4", "DROPOUT", "DROPOUT1.5",
         "DROPOUT0.5", "SOFTMAX", "FLATTEN", "floor", "ceil", "strict", "POOL?", "...", "->", "->", "->", "-",
         "[", "]", "]*2", "]*0", "*3", "*", "→", "RELUU", "conv3-8", "FC-" + "9" * 40,
         "CONV" + "9" * 12 + "-1", "[" * 60, "]" * 60, "\n", "#", "\x00", "é", "FC-2000000000"]


@st.composite
def specs(draw: Any) -> str:
    parts = draw(st.lists(st.sampled_from(WORDS), min_size=0, max_size=14))
    if draw(st.booleans()):
        parts = ["INPUT", draw(st.sampled_from(["[8x8x1]", "[16x16x3]", "[4x4x2]"])), "->"] + parts
    if draw(st.integers(0, 9)) == 0:
        n = draw(st.sampled_from([2, 49, 51, 400, 600]))
        parts = ["["] * n + ["RELU"] + ["]"] * n
    if draw(st.integers(0, 9)) == 0:
        parts += ["->", "[RELU]*" + draw(st.sampled_from(["100000", "100001", "1000000", "999999999"]))]
    return " ".join(parts)


@given(spec=specs(), extra=st.lists(st.sampled_from(
    ["--input", "8x8x1", "--input", "9" * 40 + "x3x3", "--batch", "0", "--batch", "-3", "--memory", "4GB",
     "--memory", "nanGB", "--memory", "9" * 50 + "GB", "--json", "--dtype", "float64", "--optimizer",
     "adamx"]),
    max_size=3))
@_settings("spec")
def test_fuzz_specs(spec: str, extra: list[str]) -> None:
    run_cli(["summary", spec, *extra], surface="spec")


def test_spec_limits_are_fast() -> None:
    """100,000 layers summarise in seconds; 1,000,000 and 500-deep nesting are one-line errors."""
    for spec, ok in (("INPUT [8x8x1] -> [RELU]*100000", True), ("INPUT [8x8x1] -> [RELU]*1000000", False),
                     ("INPUT [8x8x1] -> " + "[" * 500 + "RELU" + "]" * 500, False)):
        rc, _, err = run_cli(["summary", spec], surface="spec")
        assert (rc == 0) == ok, err


# --------------------------------------------------------------------------------------------- model dirs

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: Any) -> Path:
    net = volnet.build("INPUT [8x8x1] -> CONV3-4 -> BN -> RELU -> POOL2 -> FC-3")
    d = tmp_path_factory.mktemp("model") / "m"
    net.save(d)
    return d


def _npz(arrays: dict[str, Any], compress: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    return buf.getvalue()


def _npy_member(header: dict[str, Any], data: bytes = b"") -> bytes:
    text = repr(header).encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def _npy_members(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    out = {}
    for n, a in arrays.items():
        f = io.BytesIO()
        np.lib.format.write_array(f, a)
        out[f"{n}.npy"] = f.getvalue()
    return out


@functools.lru_cache(maxsize=4)
def _bomb_npz(model_dir: Path, name: str) -> bytes:
    """The model's weights plus (or with ``name`` replaced by) 256 MiB of zeros, deflated to ~256 KB."""
    members = _npy_members(dict(np.load(model_dir / "weights.npz")))
    members.pop(f"{name}.npy", None)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in members.items():
            z.writestr(k, v)
        with z.open(f"{name}.npy", "w", force_zip64=True) as m:
            n = 2**25
            m.write(_npy_member({"descr": "<f8", "fortran_order": False, "shape": (n,)}))
            block = bytes(2**20)
            for _ in range(n * 8 // len(block)):
                m.write(block)
    return buf.getvalue()


def _zip(members: dict[str, bytes], compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for k, v in members.items():
            z.writestr(k, v)
    return buf.getvalue()


def _mutate_json(doc: Any, path: list[Any], value: Any) -> Any:
    """``doc`` with the node at ``path`` (indices taken modulo the sizes) replaced by ``value``."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        keys = sorted(doc)
        k = keys[path[0] % len(keys)]
        return {**doc, k: _mutate_json(doc[k], path[1:], value)}
    i = path[0] % len(doc)
    return doc[:i] + [_mutate_json(doc[i], path[1:], value)] + doc[i + 1:]


JSON_TEXTS = ["", "{", "[]", "null", "[" * 100000 + "]" * 100000, '{"a": ' * 5000 + "1" + "}" * 5000,
              '{"format": "volnet-model", "version": ' + "9" * 5000 + "}", '{"version": NaN}', "\xff\xfe",
              '{"format": "volnet-model", "version": 1e999}']
WEIGHT_KINDS = ["keep", "flip", "truncate", "extra_big", "extra_small", "huge_header", "complex", "timedelta",
                "object", "nan", "wrong_shape", "lying_size", "deflate_bomb", "fifo", "dir", "empty", "junk",
                "missing", "int", "compressed"]


@given(json_kind=st.sampled_from(["keep", "mutate", "mutate", "mutate", "text", "fc_huge",
                                  "nested_input_shape", "fifo"]),
       path=st.lists(st.integers(0, 50), max_size=8), value=_json_values(),
       text=st.sampled_from(JSON_TEXTS), weights=st.sampled_from(WEIGHT_KINDS),
       pos=st.integers(0, 10**6), command=st.sampled_from(["summary", "summary", "export", "predict"]))
@_settings("model_dir")
def test_fuzz_model_dirs(tmp_path_factory: Any, model_dir: Path, json_kind: str, path: list[int], value: Any,
                         text: str, weights: str, pos: int, command: str) -> None:
    root = fresh(tmp_path_factory, "md")
    d = root / "m"
    shutil.copytree(model_dir, d)
    doc = json.loads((d / "model.json").read_text())
    mj, wz = d / "model.json", d / "weights.npz"
    if json_kind == "mutate":
        mj.write_text(json.dumps(_mutate_json(doc, path, value)))
    elif json_kind == "text":
        mj.write_bytes(text.encode("utf-8", "surrogatepass") if text != "\xff\xfe" else b"\xff\xfe{")
    elif json_kind == "fc_huge":
        doc["net"]["config"]["layers"][-1]["config"]["N"] = 2 * 10**7
        mj.write_text(json.dumps(doc))
    elif json_kind == "nested_input_shape":
        doc["net"]["config"]["input_shape"] = [1, 8, 8]
        mj.write_text(json.dumps(doc))
    elif json_kind == "fifo":
        mj.unlink()
        os.mkfifo(mj)
    arrays = dict(np.load(model_dir / "weights.npz"))
    raw = wz.read_bytes()
    if weights == "flip":
        b = bytearray(raw)
        b[pos % len(b)] ^= 0x5A
        wz.write_bytes(bytes(b))
    elif weights == "truncate":
        wz.write_bytes(raw[: pos % len(raw)])
    elif weights == "extra_big":  # a 256 KB file with a 256 MiB member the model does not have
        wz.write_bytes(_bomb_npz(model_dir, "junk"))
    elif weights == "extra_small":
        wz.write_bytes(_npz({**arrays, "fc1.extra": np.zeros(3, np.float32)}))
    elif weights == "huge_header":
        buf = _npy_members(arrays)
        k = sorted(arrays)[pos % len(arrays)]
        buf[f"{k}.npy"] = _npy_member({"descr": "<f4", "fortran_order": False,
                                       "shape": (10**6, 10**6) if pos % 2 else (10**12,)})
        wz.write_bytes(_zip(buf))
    elif weights in ("complex", "timedelta", "int", "nan", "wrong_shape"):
        k = sorted(arrays)[pos % len(arrays)]
        a = arrays[k]
        arrays[k] = {"complex": a.astype(np.complex64), "timedelta": a.astype("m8[s]"),
                     "int": a.astype(np.int64), "nan": np.full_like(a, np.nan),
                     "wrong_shape": np.zeros(a.size + 1, a.dtype)}[weights]
        wz.write_bytes(_npz(arrays))
    elif weights == "object":
        buf = _npy_members(arrays)
        k = sorted(arrays)[pos % len(arrays)]
        buf[f"{k}.npy"] = _npy_member({"descr": "|O", "fortran_order": False, "shape": (3,)}, b"\x80\x04N.")
        wz.write_bytes(_zip(buf))
    elif weights == "lying_size":
        b = bytearray(raw)
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            zi = z.infolist()[pos % len(z.infolist())]
        # the local header's and the central directory's uncompressed sizes
        struct.pack_into("<I", b, zi.header_offset + 22, 2**31)
        cd = raw.rfind(b"PK\x01\x02" + raw[zi.header_offset + 4: zi.header_offset + 6])
        if cd > 0:
            struct.pack_into("<I", b, cd + 24, 2**31)
        wz.write_bytes(bytes(b))
    elif weights == "deflate_bomb":  # a model array replaced by 256 MiB of compressed zeros
        wz.write_bytes(_bomb_npz(model_dir, sorted(arrays)[0]))
    elif weights == "fifo":
        wz.unlink()
        os.mkfifo(wz)
    elif weights == "dir":
        wz.unlink()
        wz.mkdir()
    elif weights == "empty":
        wz.write_bytes(b"")
    elif weights == "junk":
        wz.write_bytes(os.urandom(64) + raw[64:])
    elif weights == "missing":
        wz.unlink()
    elif weights == "compressed":
        wz.write_bytes(_npz(arrays, compress=True))
    if command == "summary":
        argv = ["summary", str(d)]
        allowed: tuple[Path, ...] = ()
    elif command == "export":
        argv = ["export", str(d), str(root / "out.onnx")]
        allowed = (root / "out.onnx",)
    else:
        from PIL import Image

        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "x.png")
        argv = ["predict", str(d), str(root / "x.png")]
        allowed = ()
    run_cli(argv, root, allowed, surface="model_dir")


def test_model_json_layer_limit(tmp_path: Path, model_dir: Path) -> None:
    """A model.json of 100,000 layers loads and summarises in seconds; 100,001 is a one-line error."""
    for n, ok in ((100_000 - 5, True), (100_001, False)):
        d = tmp_path / str(n)
        shutil.copytree(model_dir, d)
        doc = json.loads((d / "model.json").read_text())
        relus = [{"name": f"r{i}", "type": "ReLU", "config": {}} for i in range(n)]
        doc["net"]["config"]["layers"][-1:-1] = relus
        (d / "model.json").write_text(json.dumps(doc))
        rc, out, err = run_cli(["summary", str(d)], tmp_path, surface="model_dir")
        assert (rc == 0) == ok, err
        assert ok or "more than 100,000 layers" in err


# --------------------------------------------------------------------------------------------- run dirs

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: Any) -> Path:
    out = tmp_path_factory.mktemp("rundir") / "run"
    rc = main(["train", "--model", "INPUT [8x8x1] -> CONV3-4 -> BN -> DROPOUT0.5 -> RELU -> FC-4", "--data",
               "synthetic", "--epochs", "1", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


@given(which=st.sampled_from(["best", "last"]), path=st.lists(st.integers(0, 60), max_size=6),
       value=st.one_of(_json_values(), st.sampled_from([float("nan"), float("inf"), -1, 0, 10**30, "x", [],
                                                         {}, None, True])),
       damage=st.sampled_from(["trainer", "trainer", "trainer", "deep", "optimizer", "metrics", "none"]),
       command=st.sampled_from(["predict", "evaluate", "summary", "resume"]), pos=st.integers(0, 10**6))
@_settings("run_dir")
def test_fuzz_run_dirs(tmp_path_factory: Any, run_dir: Path, which: str, path: list[int], value: Any,
                       damage: str, command: str, pos: int) -> None:
    root = fresh(tmp_path_factory, "rd")
    run = root / "run"
    shutil.copytree(run_dir, run)
    tj = run / which / "trainer.json"
    if damage == "trainer":
        doc = json.loads(tj.read_text())
        tj.write_text(json.dumps(_mutate_json(doc, path, value)))  # NaN/Infinity written as JSON allows
    elif damage == "deep":
        tj.write_text('{"a":' * 100000 + "1" + "}" * 100000)
    elif damage == "optimizer":
        opt = run / "last" / "optimizer.npz"
        raw = opt.read_bytes()
        opt.write_bytes([os.urandom(len(raw)), raw[: pos % len(raw)], b"PK\x03\x04" + bytes(60)][pos % 3])
    elif damage == "metrics":
        (run / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": NaN}\n[' * 3)
    (root / "x.png").write_bytes(_png(8, 8))
    argv = {"predict": ["predict", str(run), str(root / "x.png")],
            "evaluate": ["evaluate", str(run), "--no-plot"], "summary": ["summary", str(run / which)],
            "resume": ["train", "--resume", str(run), "--epochs", "2", "--quiet"]}[command]
    # resume continues the run in place (its own files); the image and anything else stay
    run_cli(argv, root, (run,) if command == "resume" else (), surface="run_dir")


# --------------------------------------------------------------------------------------------- ONNX

@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    pytest.importorskip("onnx")
    from volnet.onnx_io import to_onnx_model

    net = volnet.build("INPUT [8x8x2] -> CONV3-4 -> BN -> RELU -> POOL2 -> AVGPOOL2 -> FC-3")
    return to_onnx_model(net).SerializeToString()


ATTR_VALUES = [[1], [0, 0], [1, 1], [2, 2], [8001, 8001], [-1, -1], [1, 1, 1, 1], [0, 0, 0, 0], [1, 2, 3, 4],
               [10**9, 1], [3], [], [100000, 100000, 100000, 100000]]


EXTERNAL_KINDS = ["ok", "dotdot", "absolute", "symlink", "symlink_dir", "hardlink", "offset", "length",
                  "fifo", "missing", "bad_offset", "empty"]


def _external(m: Any, t: Any, model_dir: Path, secret: Path, ext: str) -> None:
    """Move initializer ``t`` of model ``m`` to external data of the kind ``ext`` (``ok`` or an attack)."""
    import onnx

    arr = onnx.numpy_helper.to_array(t)
    nbytes = arr.nbytes
    target = model_dir / "w.bin"
    location = "w.bin"
    offset, length = 0, nbytes
    if ext == "ok":
        target.write_bytes(arr.tobytes())
    elif ext == "dotdot":
        location = "../outside/secret.bin"
    elif ext == "absolute":
        location = str(secret)
    elif ext == "symlink":
        target.symlink_to(secret)
    elif ext == "symlink_dir":
        (model_dir / "sub").symlink_to(secret.parent)
        location = "sub/secret.bin"
    elif ext == "hardlink":
        os.link(secret, target)
    elif ext == "offset":
        target.write_bytes(arr.tobytes())
        offset = 10**9
    elif ext == "length":
        target.write_bytes(arr.tobytes())
        length = nbytes + 4
    elif ext == "fifo":
        os.mkfifo(target)
    elif ext == "bad_offset":
        target.write_bytes(arr.tobytes())
        offset = -5
    elif ext == "empty":
        target.write_bytes(b"")
    t.ClearField("raw_data")
    for f in ("float_data", "int64_data", "int32_data", "double_data"):
        t.ClearField(f)
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v


@given(kind=st.sampled_from(["attr", "attr", "attr", "drop_inputs", "op_type", "init_dims", "input_dims",
                             "flip", "truncate", "external", "keep"]),
       node=st.integers(0, 20), attr=st.sampled_from(["kernel_shape", "pads", "strides", "dilations", "group",
                                                     "axis", "ceil_mode"]),
       value=st.sampled_from(ATTR_VALUES), pos=st.integers(0, 10**6),
       ext=st.sampled_from(EXTERNAL_KINDS))
@_settings("onnx")
def test_fuzz_onnx(tmp_path_factory: Any, onnx_bytes: bytes, kind: str, node: int, attr: str,
                   value: list[int], pos: int, ext: str) -> None:
    import onnx

    root = fresh(tmp_path_factory, "ox")
    (root / "outside").mkdir()
    secret = root / "outside" / "secret.bin"
    secret.write_bytes(np.arange(64, dtype=np.float32).tobytes())
    model_dir = root / "model"
    model_dir.mkdir()
    m = onnx.load_model_from_string(onnx_bytes)
    nodes = m.graph.node
    n = nodes[node % len(nodes)]
    data: bytes | None = None
    if kind == "attr":
        for a in list(n.attribute):
            if a.name == attr:
                n.attribute.remove(a)
        scalar = attr in ("group", "axis", "ceil_mode")
        n.attribute.append(onnx.helper.make_attribute(attr, (value[0] if value else 0) if scalar else value,
                                                      attr_type=None if scalar else onnx.AttributeProto.INTS))
    elif kind == "drop_inputs":
        del n.input[pos % (len(n.input) + 1):]
    elif kind == "op_type":
        n.op_type = ["Conv", "Gemm", "MaxPool", "Relu", "BatchNormalization", "Concat", "Add", "Flatten",
                     "Softmax", "LRN", "Dropout", "Identity", "Constant", "Loop"][pos % 14]
    elif kind == "init_dims":
        t = m.graph.initializer[pos % len(m.graph.initializer)]
        t.dims[:] = [[10**6, 10**6], [0], [3, 3, 8001, 8001], [-1], [1] * 9, []][pos % 6]
    elif kind == "input_dims":
        d = m.graph.input[0].type.tensor_type.shape.dim
        d[1 + pos % 3].dim_value = [0, 10**9, 2**62, 1][pos % 4]
    elif kind == "external":
        _external(m, m.graph.initializer[pos % len(m.graph.initializer)], model_dir, secret, ext)
    data = m.SerializeToString()
    if kind == "flip":
        b = bytearray(data)
        b[pos % len(b)] ^= 0xFF
        data = bytes(b)
    elif kind == "truncate":
        data = data[: pos % len(data)]
    (model_dir / "m.onnx").write_bytes(data)
    out = root / "imported"
    rc, _, err = run_cli(["import", str(model_dir / "m.onnx"), str(out)], root, (out,), surface="onnx")
    if kind == "external":
        assert (rc == 0) == (ext == "ok"), (ext, err)





@pytest.mark.parametrize("ext", EXTERNAL_KINDS)
def test_onnx_external_data_stays_in_the_folder(tmp_path: Path, onnx_bytes: bytes, ext: str) -> None:
    """Every external-data trick is refused in one line (``ok`` imports the right weights)."""
    import onnx

    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.bin"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    m = onnx.load_model_from_string(onnx_bytes)
    t = next(t for t in m.graph.initializer if len(t.dims) == 4)  # the conv weight
    want = onnx.numpy_helper.to_array(t).copy()
    secret.write_bytes(np.arange(want.size, dtype=np.float32).tobytes())
    _external(m, t, model_dir, secret, ext)
    (model_dir / "m.onnx").write_bytes(m.SerializeToString())
    rc, _, err = run_cli(["import", str(model_dir / "m.onnx"), str(tmp_path / "out")], tmp_path,
                         (tmp_path / "out",), surface="onnx")
    assert (rc == 0) == (ext == "ok"), err
    if rc == 0:
        w = dict(np.load(tmp_path / "out" / "weights.npz"))
        assert any(v.shape == want.shape and np.array_equal(v, want) for v in w.values())


# --------------------------------------------------------------------------------------------- safetensors

@st.composite
def safetensors_files(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["header", "header", "deep", "huge_len", "numbers", "valid", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=64))
    if kind == "deep":
        n = draw(st.sampled_from([200, 100000]))
        text = ('{"a":' * n + "1" + "}" * n) if draw(st.booleans()) else "[" * n + "]" * n
        body = text.encode()
        return struct.pack("<Q", len(body)) + body
    if kind == "huge_len":
        return struct.pack("<Q", draw(st.sampled_from([2**63, 2**40, 10**8]))) + b"{}"
    if kind == "numbers":
        shape = draw(st.sampled_from(HUGE))
        body = ('{"w": {"dtype": "F32", "shape": [' + shape + '], "data_offsets": [0, 4]}}').encode()
        return struct.pack("<Q", len(body)) + body + b"\0" * 4
    if kind == "valid":
        from volnet.safetensors_io import write_safetensors_pure

        return write_safetensors_pure({"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)})
    header = draw(st.dictionaries(st.sampled_from(["w", "b", "__metadata__", "x"]), st.one_of(
        _json_values(), st.fixed_dictionaries({
            "dtype": st.sampled_from(["F32", "F64", "BF16", "I8", "BOOL", "C64", "F8", 3, None]),
            "shape": st.lists(st.integers(-3, 2**62), max_size=4),
            "data_offsets": st.lists(st.integers(-3, 2**62), max_size=3)})), max_size=3))
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + draw(st.binary(max_size=64))


@given(data=safetensors_files(), pure=st.booleans(), fifo=st.integers(0, 19))
@_settings("safetensors")
def test_fuzz_safetensors(tmp_path_factory: Any, data: bytes, pure: bool, fifo: int) -> None:
    from volnet.safetensors_io import read_safetensors

    root = fresh(tmp_path_factory, "st")
    p = root / "w.safetensors"
    if fifo == 0:
        os.mkfifo(p)
    else:
        p.write_bytes(data)
    before = snapshot(root)
    run_lib(read_safetensors, p, pure=pure, surface="safetensors")
    assert_kept(before, root)


def test_init_fifo_is_one_line(tmp_path: Path) -> None:
    """``train --init FIFO`` says the path is not a regular file instead of blocking."""
    os.mkfifo(tmp_path / "w.safetensors")
    rc, _, err = run_cli(["train", "--model", "INPUT [8x8x1] -> FC-4", "--data", "synthetic", "--epochs",
                          "1", "--init", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "run"),
                          "--quiet"], tmp_path, surface="safetensors")
    assert rc == 2 and "not a regular file" in err, err


# --------------------------------------------------------------------------------------------- IDX / CIFAR

@st.composite
def idx_files(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["random", "header", "header", "bomb", "valid"]))
    if kind == "random":
        data = draw(st.binary(max_size=80))
    else:
        t = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]))
        dims = draw(st.lists(st.sampled_from([0, 1, 2, 3, 28, 60000, 2**31, 2**32 - 1]), max_size=4))
        head = bytes([0, 0, t, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
        if kind == "valid":
            dims = [3, 2, 2]
            head = bytes([0, 0, 0x08, 3]) + b"".join(struct.pack(">I", d) for d in dims)
            data = head + bytes(12)
        elif kind == "bomb":
            head = bytes([0, 0, 0x08, 3]) + b"".join(struct.pack(">I", d) for d in (60000, 28, 28))
            return gzip.compress(head + bytes(draw(st.sampled_from([2**20, 2**27]))), 1)
        else:
            data = head + draw(st.binary(max_size=64))
    if draw(st.booleans()):
        data = gzip.compress(data, 1)
        if draw(st.integers(0, 3)) == 0:
            data = data[: draw(st.integers(0, len(data)))]
    return data


@given(images=idx_files(), labels=idx_files(), cifar=st.binary(max_size=3100), which=st.integers(0, 9))
@_settings("idx_cifar")
def test_fuzz_idx_cifar(tmp_path_factory: Any, images: bytes, labels: bytes, cifar: bytes,
                        which: int) -> None:
    from volnet.data import read_cifar_binary, read_idx, read_idx_pair

    root = fresh(tmp_path_factory, "idx")
    (root / "i").write_bytes(images)
    (root / "l").write_bytes(labels)
    (root / "c.bin").write_bytes(cifar if which % 3 else bytes(3073 * (1 + which)))
    if which == 9:
        (root / "i").unlink()
        os.mkfifo(root / "i")
    before = snapshot(root)
    run_lib(read_idx, root / "i", surface="idx_cifar")
    run_lib(read_idx_pair, root / "i", root / "l", surface="idx_cifar")
    run_lib(read_cifar_binary, root / "c.bin", 1 + which % 2, surface="idx_cifar")
    assert_kept(before, root)


def test_gzip_bomb_is_bounded(tmp_path: Path) -> None:
    """A gzip IDX file inflating far past its header's size stops at the declared size."""
    from volnet.data import read_idx

    head = bytes([0, 0, 0x08, 3]) + b"".join(struct.pack(">I", d) for d in (10, 28, 28))
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(head + bytes(2**30), 1))  # 1 GiB of zeros, ~1 MB
    err = run_lib(read_idx, tmp_path / "bomb.gz", surface="idx_cifar")
    assert isinstance(err, VolnetError) and "inflates to more than 7,857 bytes" in str(err), err


# --------------------------------------------------------------------------------------------- image folders

def _png(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _png_claiming(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


FILE_KINDS = ["png", "png", "png", "png_other_size", "junk", "empty", "fifo", "bomb", "huge_claim", "dir.png",
              "truncated"]


@given(classes=st.lists(st.sampled_from(["a", "b", "c", ".hidden"]), min_size=0, max_size=3, unique=True),
       files=st.lists(st.sampled_from(FILE_KINDS), min_size=0, max_size=4),
       split=st.sampled_from(["flat", "train_test", "test_extra_class"]), size=st.sampled_from([None, 6]))
@_settings("image_folder")
def test_fuzz_image_folders(tmp_path_factory: Any, classes: list[str], files: list[str], split: str,
                            size: int | None) -> None:
    from volnet.data import load_dataset

    root = fresh(tmp_path_factory, "img")
    base = root / "set"
    dirs = [base / c for c in classes] if split == "flat" else [base / s / c for s in ("train", "test")
                                                                  for c in classes]
    if split == "test_extra_class":
        dirs.append(base / "test" / "zzz")
    for d in dirs:
        d.mkdir(parents=True)
        for i, kind in enumerate(files):
            p = d / f"{i}.png"
            if kind == "png":
                p.write_bytes(_png(6, 5))
            elif kind == "png_other_size":
                p.write_bytes(_png(7, 3))
            elif kind == "junk":
                p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(40)))
            elif kind == "empty":
                p.write_bytes(b"")
            elif kind == "fifo":
                os.mkfifo(p)
            elif kind == "bomb":
                p.write_bytes(_png_claiming(30000, 30000))
            elif kind == "huge_claim":
                p.write_bytes(_png_claiming(2**31 - 1, 1))
            elif kind == "dir.png":
                p.mkdir()
            elif kind == "truncated":
                p.write_bytes(_png(6, 5)[:40])
    before = snapshot(root)
    options = {} if size is None else {"size": size}
    run_lib(load_dataset, f"folder:{base}", surface="image_folder", **options)
    assert_kept(before, root)


# --------------------------------------------------------------------------------------------- CLI arguments

@pytest.fixture(scope="module")
def user_area(tmp_path_factory: Any) -> Path:
    """A trained run, a model, images (one a FIFO), a file where a folder is expected, and a read-only dir."""
    root = tmp_path_factory.mktemp("user")
    rc = main(["train", "--model", "INPUT [8x8x1] -> CONV3-4 -> RELU -> POOL2 -> FC-4", "--data", "synthetic",
               "--epochs", "1", "--out", str(root / "run"), "--quiet"])
    assert rc == 0
    (root / "img.png").write_bytes(_png(8, 8))
    (root / "bomb.png").write_bytes(_png_claiming(40000, 40000))
    os.mkfifo(root / "fifo.png")
    (root / "afile").write_text("not a folder\n")
    (root / "ro").mkdir()
    (root / "ro" / "keep.txt").write_text("mine\n")
    (root / "ro").chmod(0o555)
    (root / "bin.onnx").write_bytes(b"\x7fELF" + bytes(100))
    return root


OPTION_VALUES = ["--batch", "--epochs", "--lr", "--warmup", "--step-size", "--gamma", "--clip", "--val",
                 "--top", "--limit", "--memory", "--input", "--seed", "--momentum", "--weight-decay",
                 "--min-lr", "--save-every", "--limit-train", "--num-classes", "--opset", "--split"]


@st.composite
def argv_lists(draw: Any, root: Path) -> tuple[list[str], tuple[Path, ...]]:
    cmd = draw(st.sampled_from(["summary", "evaluate", "predict", "export", "import", "train", "train",
                                "bogus", "--help"]))
    names = ("run", "run/best", "run/last", "img.png", "bomb.png", "fifo.png", "afile", "ro", "ro/x",
             "nothing",
             "bin.onnx")
    paths = [str(root / p) for p in names] + ["/bin/ls", "/dev/null", "/", ""]
    out_new = root / "new" / draw(st.text("abc", min_size=1, max_size=3))
    allowed: tuple[Path, ...] = (root / "new", root / "run" / "confusion.png", Path.cwd() / "confusion.png")
    argv: list[str] = [cmd]
    if cmd == "summary":
        argv.append(draw(st.sampled_from(paths + ["vgg16", "INPUT [8x8x1] -> FC-3", "resnet18"])))
    elif cmd == "evaluate":
        argv += [draw(st.sampled_from(paths)), "--no-plot"]
        if draw(st.booleans()):
            argv += ["--data", draw(st.sampled_from(["synthetic", "digits", "folder:" + str(root / "afile"),
                                                     "mnist", "bogus"])), "--data-dir", str(root / "nothing")]
    elif cmd == "predict":
        argv += [draw(st.sampled_from(paths)),
                 *draw(st.lists(st.sampled_from(paths), min_size=1, max_size=2))]
    elif cmd == "export":
        argv += [draw(st.sampled_from(paths + ["INPUT [8x8x1] -> FC-3"])),
                 draw(st.sampled_from([str(out_new) + ".onnx", str(root / "afile"),
                                       str(root / "ro" / "x.onnx"), str(root / "nothing" / "x" / "y.onnx")]))]
    elif cmd == "import":
        argv += [draw(st.sampled_from(paths)), draw(st.sampled_from([str(out_new), str(root / "afile"),
                                                                     str(root / "ro" / "m")]))]
    elif cmd == "train":
        argv += ["--model", draw(st.sampled_from(["INPUT [8x8x1] -> FC-4", "default", str(root / "run"),
                                                  "INPUT [8x8x1] -> FC-" + "9" * 40, "/bin/ls"])),
                 "--data", draw(st.sampled_from(["synthetic", "synthetic", "bogus", "folder:" + str(root)])),
                 "--epochs", draw(st.sampled_from(["1", "0", "-1", "nan", "9" * 40])), "--quiet",
                 "--out", draw(st.sampled_from([str(out_new), str(root / "afile"), str(root / "ro" / "r")]))]
        if draw(st.integers(0, 3)) == 0:
            argv += ["--resume", draw(st.sampled_from(paths))]
    for _ in range(draw(st.integers(0, 3))):
        argv += [draw(st.sampled_from(OPTION_VALUES)), draw(st.sampled_from(NUMBERS + ["32x32x3", "test"]))]
    return argv, allowed


@given(data=st.data())
@_settings("cli_args")
def test_fuzz_cli_arguments(user_area: Path, data: Any) -> None:
    argv, allowed = data.draw(argv_lists(user_area))
    # only train writes runs; a 1-epoch synthetic run is short, longer ones are refused before they start
    if argv[0] == "train" and "--epochs" in argv and argv[argv.index("--epochs") + 1] == "1" and \
            "--batch" in argv and argv[argv.index("--batch") + 1] in ("1", "2", "3", "7"):
        argv += ["--limit-train", "64"]
    run_cli(argv, user_area, allowed, surface="cli_args")


def test_cli_values_named_in_the_issue(user_area: Path) -> None:
    run = str(user_area / "run")
    for argv in (["evaluate", run, "--batch", "0", "--no-plot"], ["summary", "/bin/ls"],
                 ["train", "--model", "/bin/ls", "--data", "synthetic", "--out",
                  str(user_area / "new" / "z")],
                 ["predict", run, str(user_area / "fifo.png")], ["predict", run, str(user_area / "bomb.png")],
                 ["export", "INPUT [8x8x1] -> FC-3", str(user_area / "afile")]):
        rc, _, err = run_cli(argv, user_area, (user_area / "new",), surface="cli_args")
        assert rc == 2, (argv, err)


# --------------------------------------------------------------------------------------------- real processes

def _limits() -> None:  # in the child, before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, resource.RLIM_INFINITY))


def test_cli_subprocess_bombs(tmp_path: Path, model_dir: Path) -> None:
    """The worst cases as real ``volnet`` processes under a 3 GB address space and a 60 s timeout."""
    d = tmp_path / "fc"
    shutil.copytree(model_dir, d)
    doc = json.loads((d / "model.json").read_text())
    doc["net"]["config"]["layers"][-1]["config"]["N"] = 2 * 10**7  # 1.5 GB of He init before the fix
    (d / "model.json").write_text(json.dumps(doc))
    os.mkfifo(tmp_path / "fifo.png")
    cases = [["summary", str(d)], ["summary", "INPUT [8x8x1] -> [RELU]*1000000"],
             ["predict", str(model_dir), str(tmp_path / "fifo.png")]]
    env = {**os.environ, "PYTHONPATH": str(Path(volnet.__file__).parents[1])}
    for argv in cases:
        p = subprocess.run([sys.executable, "-m", "volnet.cli.main", *argv], capture_output=True, text=True,
                           timeout=60, preexec_fn=_limits, env=env)
        assert_clear_error(p.returncode, p.stderr, argv)
        assert p.returncode == 2, (argv, p.stderr)
        COUNTS["subprocess"] += 1


def test_zz_case_counts() -> None:
    """At least FUZZ_CASES cases ran when the whole module ran (printed with -s)."""
    print("\nfuzz cases per surface:", dict(COUNTS), "total", sum(COUNTS.values()))
    if set(WEIGHTS) <= set(COUNTS):
        assert sum(COUNTS.values()) >= TOTAL
