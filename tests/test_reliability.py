"""Issue 11's guarantees that are not fuzzing: the CLI's last-resort handler, OS errors in one line, model
files checked before anything is built, and the checkers of :mod:`volnet.validate`."""

from __future__ import annotations

import errno
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import volnet
import volnet.cli.summary as summary_cmd
from volnet.cli.main import main
from volnet.errors import ModelFileError
from volnet.validate import check_fields, json_depth, loads_json, npz_members, open_regular, read_regular


def _run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().err


def test_internal_error_is_one_line_asking_for_a_report(monkeypatch, capsys) -> None:
    def bug(args):
        return 1 // 0

    monkeypatch.setattr(summary_cmd, "run", bug)
    monkeypatch.delenv("VOLNET_DEBUG", raising=False)
    rc, err = _run(capsys, "summary", "vgg16")
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("volnet summary: error: internal error (ZeroDivisionError")
    assert "please report this" in err
    with pytest.raises(ZeroDivisionError):  # --debug shows the real exception (and its traceback)
        main(["--debug", "summary", "vgg16"])
    monkeypatch.setenv("VOLNET_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["summary", "vgg16"])


@pytest.mark.parametrize("code, hint", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "permissions"), (errno.EISDIR, "not a directory"),
                                        (errno.EBUSY, "in use")])
def test_os_errors_are_one_line_with_the_path(monkeypatch, capsys, code: int, hint: str) -> None:
    def fail(args):
        raise OSError(code, os.strerror(code), "/some/out/weights.npz")

    monkeypatch.setattr(summary_cmd, "run", fail)
    rc, err = _run(capsys, "summary", "vgg16")
    assert rc == 2 and err.count("\n") == 1 and "/some/out/weights.npz" in err
    assert hint in err or (code == errno.EISDIR and "give a file" in err), err


def test_bad_arguments_are_one_line(capsys) -> None:
    for argv in (["evaluate", "x", "--batch", "zero"], ["summary"], ["train", "--optim"],
                 ["train", "--epochs", "9" * 40], ["train", "--lr", "nan"], ["train", "--warmup", "-1"],
                 ["train", "--step-size", "0"], ["train", "--val", "nan"], ["evaluate", "x", "--batch", "0"],
                 ["predict", "x", "y.png", "--top", "0"]):
        rc, err = _run(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and "error:" in err, (argv, err)


def test_load_builds_without_he_init(monkeypatch, tmp_path: Path) -> None:
    """The stored arrays become the layers' own: no He initialisation is drawn when weights follow."""
    net = volnet.build("INPUT [8x8x1] -> CONV3-4 -> BN -> RELU -> FC-3")
    net.save(tmp_path / "m")
    import volnet.layers._common as common

    def no_init(*a, **k):
        raise AssertionError("He init during load")

    monkeypatch.setattr(common, "he_normal", no_init)
    back = volnet.load(tmp_path / "m")
    for k, v in net.params.items():
        np.testing.assert_array_equal(back.params[k], v)


def test_declared_sizes_are_compared_before_building(tmp_path: Path) -> None:
    """FC-20000000 in model.json (1.5 GB of He init before issue 11) is refused from the npz header."""
    net = volnet.build("INPUT [8x8x1] -> FC-3")
    net.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["net"]["config"]["layers"][0]["config"]["N"] = 2 * 10**7
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    msg = r"array 'fc1.w' has shape \(3, 64\), model expects \(20000000, 64\)"
    with pytest.raises(ModelFileError, match=msg):
        volnet.load(tmp_path / "m")


def test_npz_members_reads_headers_only() -> None:
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros((3, 4), np.float32), b=np.arange(5))
    members = npz_members(io.BytesIO(buf.getvalue()), "w.npz")
    assert {k: (m.shape, m.dtype.str) for k, m in members.items()} == {"a": ((3, 4), "<f4"),
                                                                       "b": ((5,), np.arange(1).dtype.str)}
    # a header claiming 10^12 elements is refused from the header, nothing allocated
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (10**12,)}).encode()
    text += b" " * (-(11 + len(text)) % 64) + b"\n"
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as z:
        z.writestr("a.npy", b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text)
    with pytest.raises(ModelFileError, match="needs 4,000,000,000,000 bytes"):
        npz_members(io.BytesIO(bomb.getvalue()), "w.npz")


def test_json_limits() -> None:
    assert json_depth('{"a": "[[[[", "b": [[1]]}') == 3
    for text, msg in (("[" * 101 + "]" * 101, "nested 101 deep"), ("[" + "9" * 5000 + "]", "5000 digits"),
                      ("[1e999]", "too large"), ("[NaN]", "NaN"), ('{"a": 1', "invalid JSON")):
        with pytest.raises(ModelFileError, match=msg):
            loads_json(text, "x.json")


def test_check_fields_types_and_ranges() -> None:
    schema = {"n": "int+", "lr": "float0+", "name": "str?"}
    assert check_fields({"n": 1, "lr": 0, "name": None}, schema, "t") == {"n": 1, "lr": 0, "name": None}
    for doc in ({"n": 0, "lr": 1}, {"n": True, "lr": 1}, {"n": 1, "lr": -1}, {"n": 1, "lr": float("nan")},
                {"n": 1}, {"n": 1, "lr": 1, "name": 3}, []):
        with pytest.raises(ModelFileError):
            check_fields(doc, schema, "t")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_special_files_are_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p")
    with pytest.raises(ModelFileError, match="is a FIFO"):
        open_regular(tmp_path / "p")
    with pytest.raises(ModelFileError, match="is a character device"):
        read_regular("/dev/zero")
    (tmp_path / "f").write_bytes(b"abc")
    assert read_regular(tmp_path / "f") == b"abc"
    with pytest.raises(ModelFileError, match="more than the 2 volnet reads"):
        read_regular(tmp_path / "f", limit=2)


@pytest.mark.parametrize("nodes,consts", [
    ([("ConstantOfShape", ["shp"], ["big"])], {"shp": np.array([1, 4_000_000_000], np.int64)}),
    ([("Expand", ["one", "shp"], ["big"])], {"one": np.ones(1, np.float32),
                                             "shp": np.array([70_000, 70_000], np.int64)}),
    ([("Tile", ["one", "rep"], ["big"])], {"one": np.ones(4, np.float32),
                                           "rep": np.array([10**9], np.int64)}),
    ([("MatMul", ["col", "row"], ["big"])], {"col": np.ones((50_000, 1), np.float32),
                                             "row": np.ones((1, 50_000), np.float32)}),
    ([("Range", ["a", "b", "c"], ["big"])], {"a": np.array(0.0, np.float32), "b": np.array(1e12, np.float32),
                                             "c": np.array(1.0, np.float32)}),
])
def test_onnx_constant_folding_is_bounded_before_it_allocates(tmp_path: Path, nodes, consts) -> None:
    """A few bytes of ONNX must not make the importer compute a constant of gigabytes: the output size is
    known from the inputs' shapes first and refused beyond volnet's limit."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from volnet.onnx_io import import_onnx

    graph_nodes = [helper.make_node(op, i, o) for op, i, o in nodes]
    graph_nodes.append(helper.make_node("Add", ["x", "big"], ["y"]))
    g = helper.make_graph(graph_nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [numpy_helper.from_array(v, k) for k, v in consts.items()])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    assert path.stat().st_size < 600_000
    with pytest.raises(ModelFileError, match=r"constant output would hold [\d,]+ values \(limit"):
        import_onnx(path)
