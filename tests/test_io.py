"""Model files: round trips, atomic writes, and one clear ModelFileError per kind of damage."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import volnet.io as vio
from volnet.errors import ModelFileError
from volnet.io import atomic_write_bytes, atomic_write_text, load, save
from volnet.layers import FC, BatchNorm, Conv, Dropout, GlobalAvgPool, Pool, ReLU
from volnet.net import Add, Concat, Graph, Sequential


def _x(shape: tuple[int, ...] = (5, 3, 6, 6), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _seq() -> Sequential:
    layers = [Conv(4, 3, pad=1), BatchNorm(), ReLU(), Pool(2), Dropout(0.3), FC(3)]
    net = Sequential(layers, input_shape=(3, 6, 6))
    net.forward(_x())  # a training step: BN running statistics move away from 0/1
    return net


def _graph() -> Graph:
    g = Graph(seed=2)
    g.add("stem", Conv(4, 3, pad=1), ["input"])
    g.add("bn", BatchNorm())
    g.add("relu", ReLU())
    g.add("conv", Conv(4, 3, pad=1))
    g.add("sum", Add(), ["conv", "stem"])
    g.add("cat", Concat(), ["sum", "input"])
    g.add("gap", GlobalAvgPool())
    g.add("fc", FC(2))
    g.build((3, 6, 6))
    g.forward(_x())
    return g


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("make", [_seq, _graph], ids=["sequential", "graph"])
def test_round_trip_identical_outputs(tmp_path: Path, make) -> None:
    net = make()
    assert np.any(net.buffers[next(k for k in net.buffers if k.endswith("running_mean"))] != 0)
    save(net, tmp_path / "m")
    assert _listing(tmp_path) == ["m"]
    assert _listing(tmp_path / "m") == ["model.json", "weights.npz"]
    again = load(tmp_path / "m")
    assert type(again) is type(net) and again.spec() == net.spec()
    assert sorted(again.params) == sorted(net.params) and sorted(again.buffers) == sorted(net.buffers)
    for k, v in {**net.params, **net.buffers}.items():
        np.testing.assert_array_equal({**again.params, **again.buffers}[k], v)
        assert {**again.params, **again.buffers}[k].dtype == np.float32
    x = _x(seed=1)
    np.testing.assert_array_equal(again.predict(x), net.predict(x))


def test_round_trip_float64_and_nested(tmp_path: Path) -> None:
    block = Graph([("c", Conv(2, 3, pad=1), ["input"]), ("s", Add(), ["c", "input"])])
    net = Sequential([Conv(2, 1), ("res", block), FC(3)], input_shape=(2, 4, 4)).astype(np.float64)
    net.save(str(tmp_path / "m"))
    again = load(tmp_path / "m")
    assert again.params["res.c.w"].dtype == np.float64
    x = _x((2, 2, 4, 4)).astype(np.float64)
    np.testing.assert_array_equal(again.forward(x, train=False), net.forward(x, train=False))


def test_file_contents_are_plain(tmp_path: Path) -> None:
    net = _seq()
    save(net, tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["format"] == "volnet-model" and doc["version"] == 1 and doc["input_shape"] == [3, 6, 6]
    assert doc["net"]["type"] == "Sequential"
    assert [d["type"] for d in doc["net"]["config"]["layers"]][:2] == ["Conv", "BatchNorm"]
    with np.load(tmp_path / "m" / "weights.npz", allow_pickle=False) as z:  # no pickle inside
        assert sorted(z.files) == sorted([*net.params, *net.buffers])
        assert all(z[k].dtype == np.float32 for k in z.files)
    with zipfile.ZipFile(tmp_path / "m" / "weights.npz") as zf:
        assert all(n.endswith(".npy") for n in zf.namelist())


def test_save_needs_input_shape(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no input shape"):
        save(Sequential([FC(3)]), tmp_path / "m")


def test_save_lazily_built_net(tmp_path: Path) -> None:
    net = Sequential([FC(3)])
    net.forward(np.ones((1, 4), np.float32))
    save(net, tmp_path / "m")
    assert load(tmp_path / "m").params["fc1.w"].shape == (3, 4)


# --------------------------------------------------------------------------- atomicity


def test_overwrite_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    a, b = _seq(), _graph()
    save(a, tmp_path / "m")
    save(b, tmp_path / "m")
    assert _listing(tmp_path) == ["m"]
    assert isinstance(load(tmp_path / "m"), Graph)


def test_failure_mid_write_keeps_previous_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _seq()
    save(old, tmp_path / "m")
    real = vio.write_file
    calls = []

    def failing(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if len(calls) == 2:
            real(path, data[: len(data) // 2])
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(vio, "write_file", failing)
    with pytest.raises(OSError, match="disk full"):
        save(_graph(), tmp_path / "m")
    assert _listing(tmp_path) == ["m"]  # no temp dir left behind
    x = _x(seed=3)
    np.testing.assert_array_equal(load(tmp_path / "m").predict(x), old.predict(x))


def test_failure_at_rename_restores_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save(_seq(), tmp_path / "m")
    real = os.rename

    def failing(src, dst) -> None:
        if Path(src).name.endswith(".tmp"):
            raise OSError("rename failed")
        real(src, dst)

    monkeypatch.setattr(vio.os, "rename", failing)
    with pytest.raises(OSError, match="rename failed"):
        save(_graph(), tmp_path / "m")
    monkeypatch.undo()
    assert _listing(tmp_path) == ["m"]
    assert isinstance(load(tmp_path / "m"), Sequential)


def test_refuses_to_overwrite_other_directories(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(ModelFileError, match="not a volnet model directory"):
        save(_seq(), tmp_path / "data")
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    save(_seq(), tmp_path / "empty")  # an empty directory is fine
    assert _listing(tmp_path / "empty") == ["model.json", "weights.npz"]


def test_atomic_write_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "metrics.json"
    atomic_write_text(p, "one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two" and _listing(tmp_path) == ["metrics.json"]

    def boom(src, dst) -> None:
        raise OSError("no replace")

    monkeypatch.setattr(vio.os, "replace", boom)
    with pytest.raises(OSError, match="no replace"):
        atomic_write_text(p, "three")
    assert p.read_text() == "two" and _listing(tmp_path) == ["metrics.json"]


# --------------------------------------------------------------------------- damaged files


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    net = Sequential([Conv(16, 3, pad=1), BatchNorm(), ReLU(), FC(3)], input_shape=(3, 4, 4))
    save(net, tmp_path / "m")
    return tmp_path / "m"


def _edit_json(d: Path, fn) -> None:
    doc = json.loads((d / "model.json").read_text())
    fn(doc)
    (d / "model.json").write_text(json.dumps(doc))


def _edit_npz(d: Path, fn) -> None:
    with np.load(d / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    fn(arrays)
    np.savez(d / "weights.npz", **arrays)


def _layer(i: int, **kv):
    def fn(doc: dict) -> None:
        doc["net"]["config"]["layers"][i].update(kv)

    return fn


def _layer_cfg(i: int, **kv):
    def fn(doc: dict) -> None:
        doc["net"]["config"]["layers"][i]["config"].update(kv)

    return fn


def _set(key: str, value):
    def fn(doc: dict) -> None:
        doc[key] = value

    return fn


CASES = {
    "missing_dir": (lambda d: d.rename(d.with_name("gone")), r"no model at .*does not exist"),
    "missing_json": (lambda d: (d / "model.json").unlink(), r"^model\.json missing in"),
    "missing_npz": (lambda d: (d / "weights.npz").unlink(), r"^weights\.npz missing in"),
    "invalid_json": (lambda d: (d / "model.json").write_text('{"format": "volnet-model",'),
                     r"^model\.json: invalid JSON at line 1 column \d+"),
    "not_object": (lambda d: (d / "model.json").write_text("[1, 2]"), r"expected a JSON object, got list"),
    "format": (lambda d: _edit_json(d, _set("format", "keras")), r"format 'keras' is not 'volnet-model'"),
    "newer_version": (lambda d: _edit_json(d, _set("version", 7)),
                      r"^model\.json version 7 is newer than this volnet \(1\): upgrade volnet$"),
    "bad_version": (lambda d: _edit_json(d, _set("version", "1")), r"version must be a positive integer"),
    "input_shape": (lambda d: _edit_json(d, _set("input_shape", [3, -4, 4])), r"input_shape must be"),
    "dtype": (lambda d: _edit_json(d, _set("dtype", "int8")), r"dtype must be"),
    "no_net": (lambda d: _edit_json(d, lambda doc: doc.pop("net")), r"no \"net\" entry"),
    "unknown_type": (lambda d: _edit_json(d, _layer(2, type="os.system")),
                     r"unknown layer type 'os\.system'"),
    "bad_kwargs": (lambda d: _edit_json(d, _layer_cfg(0, Q=1)),
                   r"bad config for Conv"),
    "bad_value": (lambda d: _edit_json(d, _layer_cfg(0, K=0)),
                  r"K \(number of filters\) must be an integer >= 1"),
    "net_does_not_fit": (lambda d: _edit_json(d, _set("input_shape", [3, 4])), r"layer conv1: CONV3-16"),
    "missing_array": (lambda d: _edit_npz(d, lambda a: a.pop("bn1.running_var")),
                      r"^weights\.npz: missing array 'bn1\.running_var'"),
    "extra_array": (lambda d: _edit_npz(d, lambda a: a.update(extra=np.zeros(2))),
                    r"^weights\.npz: unexpected array 'extra'"),
    "wrong_shape": (
        lambda d: _edit_npz(d, lambda a: a.update({"conv1.w": np.zeros((8, 3, 3, 3), np.float32)})),
        r"^weights\.npz: array 'conv1\.w' has shape \(8, 3, 3, 3\), model expects \(16, 3, 3, 3\)$",
    ),
    "string_array": (lambda d: _edit_npz(d, lambda a: a.update({"fc1.b": np.array(["a", "b", "c"])})),
                     r"array 'fc1\.b' has dtype <U1, expected a float array"),
    "pickled_array": (
        lambda d: _edit_npz(d, lambda a: a.update({"fc1.b": np.array([None, 1, 2], dtype=object)})),
        r"^weights\.npz: array 'fc1\.b' holds Python objects \(pickle\)",
    ),
    "truncated_npz": (lambda d: (d / "weights.npz").write_bytes((d / "weights.npz").read_bytes()[:300]),
                      r"^weights\.npz: truncated"),
    "garbage_npz": (lambda d: (d / "weights.npz").write_bytes(b"not a zip file at all"),
                    r"^weights\.npz: truncated or not an \.npz"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damage_gives_model_file_error(saved: Path, case: str) -> None:
    damage, pattern = CASES[case]
    damage(saved)
    with pytest.raises(ModelFileError, match=pattern) as info:
        load(saved)
    assert "\n" not in str(info.value)


def test_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelFileError, match="is a file"):
        load(tmp_path / "f")


def test_crc_damage_inside_npz(saved: Path) -> None:
    data = bytearray((saved / "weights.npz").read_bytes())
    with zipfile.ZipFile(saved / "weights.npz") as zf:
        info = zf.getinfo("conv1.w.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    data[start] ^= 0xFF  # flip a byte inside the stored array data
    (saved / "weights.npz").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load(saved)


def test_atomic_write_into_a_missing_directory_says_so(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        atomic_write_bytes(tmp_path / "missing" / "x.bin", b"data")
    assert not (tmp_path / "missing").exists()
