"""ONNX export/import: ONNX Runtime agrees with volnet on every zoo model, single layers with every fit,
import round trips, unsupported operators, and the export/import CLI. Files from PyTorch's exporters:
tests/test_onnx_pytorch.py; preprocessing and class names in the file: tests/test_onnx_preprocessing.py."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

from tests.helpers import max_rel
from tests.test_zoo import randomize_bn
from volnet import zoo
from volnet.cli.main import main
from volnet.errors import ModelFileError, VolnetError
from volnet.layers import (
    FC,
    LRN,
    BatchNorm,
    Conv,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Local,
    Pool,
    ReLU,
    Softmax,
)
from volnet.net import Sequential
from volnet.onnx_io import export_onnx, import_onnx, to_onnx_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def run_ort(path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


ZOO_CASES = [
    ("lenet5", (1, 28, 28), {}),
    ("alexnet", (3, 96, 96), {}),
    ("zfnet", (3, 112, 112), {}),
    ("vgg11", (3, 32, 32), {}),
    ("vgg16", (3, 32, 32), {}),
    ("vgg19", (3, 32, 32), {}),
    ("googlenet", (3, 64, 64), {}),
    ("resnet18", (3, 32, 32), {}),
    ("resnet34", (3, 32, 32), {"stem": "imagenet"}),
    ("resnet50", (3, 64, 64), {}),
]


@pytest.mark.parametrize("name,shape,opts", ZOO_CASES, ids=[c[0] for c in ZOO_CASES])
def test_zoo_model_onnxruntime_and_round_trip(tmp_path, name: str, shape, opts: dict) -> None:
    net = zoo.get(name, num_classes=10, input_shape=shape, seed=4, **opts)
    randomize_bn(net)
    path = tmp_path / f"{name}.onnx"
    export_onnx(net, path)
    x = np.random.default_rng(5).standard_normal((2, *shape)).astype(np.float32)
    y = net.predict(x)
    yo = run_ort(path, x)
    assert yo.shape == y.shape == (2, 10)
    err = max_rel(y, yo)
    print(f"{name}: ONNX Runtime max abs {np.abs(y - yo).max():.2e}, max rel {err:.2e}")
    assert err < 1e-4
    back = import_onnx(path)
    assert back.num_params() == net.num_params()
    assert max_rel(back.predict(x), y) < 1e-6


POOL_CASES = [(mode, F, S, P, fit) for mode, F, S, P, fit in
              itertools.product(["max", "avg", "l2"], [2, 3], [1, 2], [0, 1], ["floor", "ceil"])
              if P <= F // 2]


@pytest.mark.parametrize("mode,F,S,P,fit", POOL_CASES)
def test_pool_layers(tmp_path, mode: str, F: int, S: int, P: int, fit: str) -> None:
    rng = np.random.default_rng(F * 100 + S * 10 + P)
    for H, W in [(7, 8), (6, 9)]:
        net = Sequential([Pool(F, S, mode, P, fit)], input_shape=(2, H, W))
        path = tmp_path / f"p{H}.onnx"
        export_onnx(net, path)
        x = rng.standard_normal((1, 2, H, W)).astype(np.float32)
        y = net.predict(x)
        yo = run_ort(path, x)
        assert yo.shape == y.shape and max_rel(y, yo) < 1e-5
        back = import_onnx(path)
        assert back[0].config() == net[0].config() or back[0].fit in ("floor", "strict")
        np.testing.assert_array_equal(back.predict(x), y)


@pytest.mark.parametrize("F,S,P,D,fit", [(3, 2, 1, 1, "ceil"), (3, 2, 0, 2, "ceil"), (5, 3, 2, 1, "floor"),
                                         (1, 2, 0, 1, "floor"), (3, 1, 1, 1, "strict"), (4, 3, 1, 1, "ceil")])
def test_conv_layers(tmp_path, F: int, S: int, P: int, D: int, fit: str) -> None:
    net = Sequential([Conv(4, F, S, P, D, fit)], input_shape=(3, 11, 12), seed=1)
    path = tmp_path / "c.onnx"
    export_onnx(net, path)
    x = np.random.default_rng(0).standard_normal((2, 3, 11, 12)).astype(np.float32)
    y = net.predict(x)
    assert max_rel(y, run_ort(path, x)) < 1e-5
    np.testing.assert_array_equal(import_onnx(path).predict(x), y)


def test_other_layers(tmp_path) -> None:
    """LRN, L2 pool, GAP, Flatten, FC, BN on features (1-D), Dropout, Softmax in one chain."""
    net = Sequential([Conv(6, 3, pad=1), LRN(3, alpha=1e-2, beta=0.7, k=2.0), ReLU(), Pool(2, mode="l2"),
                      BatchNorm(), Flatten(), FC(12), BatchNorm(eps=1e-3), ReLU(), Dropout(0.3), FC(5),
                      Softmax()], input_shape=(3, 8, 8), seed=2)
    randomize_bn(net)
    path = tmp_path / "o.onnx"
    export_onnx(net, path, opset=17)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    y = net.predict(x)
    assert max_rel(y, run_ort(path, x)) < 1e-5
    back = import_onnx(path)
    assert isinstance(back, Sequential)
    # a Flatten feeding a Gemm folds into the FC (which flattens its input itself)
    kinds = [layer.kind for layer in net.layers if layer.kind != "FLATTEN"]
    assert [layer.kind for layer in back.layers] == kinds
    assert back.spec() == net.spec().replace(" -> FLATTEN", "")
    np.testing.assert_allclose(back.predict(x), y, rtol=1e-6, atol=1e-7)
    gap = Sequential([Conv(4, 3, pad=1), GlobalAvgPool(), FC(3)], input_shape=(2, 5, 5), seed=0)
    export_onnx(gap, tmp_path / "g.onnx")
    kinds = [n.op_type for n in onnx.load(str(tmp_path / "g.onnx")).graph.node]
    assert kinds == ["Conv", "GlobalAveragePool", "Flatten", "Gemm", "Identity"]
    assert [layer.kind for layer in import_onnx(tmp_path / "g.onnx").layers] == ["CONV", "GAP", "FC"]


def test_model_file_contents(tmp_path) -> None:
    net = zoo.get("resnet18", num_classes=10, input_shape=(3, 32, 32), build=False)
    model = to_onnx_model(net)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 13
    ops = {n.op_type for n in model.graph.node}
    assert ops == {"Conv", "BatchNormalization", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm",
                   "Identity"}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert "layer1.0.conv1.w" in {i.name for i in model.graph.initializer}
    with pytest.raises(VolnetError, match="opset"):
        to_onnx_model(net, opset=9)


def test_unsupported_op_is_one_line_error(tmp_path) -> None:
    h = onnx.helper
    x = h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 2, 4, 4])
    y = h.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 2, 4, 4])
    nodes = [h.make_node("Relu", ["input"], ["r"], name="relu_0"),
             h.make_node("LeakyRelu", ["r"], ["output"], name="leaky_7", alpha=0.1)]
    model = h.make_model(h.make_graph(nodes, "g", [x], [y]), opset_imports=[h.make_opsetid("", 13)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError) as e:
        import_onnx(path)
    msg = str(e.value)
    assert "\n" not in msg and "LeakyRelu" in msg and "leaky_7" in msg
    # grouped convolution: supported op type, unsupported attribute
    w = onnx.numpy_helper.from_array(np.zeros((2, 1, 3, 3), np.float32), "w")
    conv = h.make_node("Conv", ["input", "w"], ["output"], name="dw", group=2, kernel_shape=[3, 3],
                       pads=[1, 1, 1, 1])
    onnx.save(h.make_model(h.make_graph([conv], "g", [x], [y], [w]), opset_imports=[h.make_opsetid("", 13)]),
              str(path))
    with pytest.raises(ModelFileError, match="'dw' .*group"):
        import_onnx(path)


def test_export_errors_and_bad_files(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="local1"):
        export_onnx(Sequential([Local(2, 3), FC(2)], input_shape=(1, 5, 5)), tmp_path / "l.onnx")
    with pytest.raises(ModelFileError, match="even size"):
        export_onnx(Sequential([LRN(4)], input_shape=(6, 3, 3)), tmp_path / "l.onnx")
    assert not (tmp_path / "l.onnx").exists()
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage" * 5)
    with pytest.raises(ModelFileError, match="junk.onnx"):
        import_onnx(tmp_path / "junk.onnx")
    with pytest.raises(ModelFileError, match="no ONNX file"):
        import_onnx(tmp_path / "missing.onnx")


def test_symbolic_input_needs_a_shape(tmp_path) -> None:
    net = Sequential([Conv(2, 3, pad=1), ReLU()], input_shape=(1, 6, 6))
    model = to_onnx_model(net)
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "S"
    onnx.save(model, str(tmp_path / "s.onnx"))
    with pytest.raises(ModelFileError, match="input_shape"):
        import_onnx(tmp_path / "s.onnx")
    back = import_onnx(tmp_path / "s.onnx", input_shape=(1, 10, 9))
    assert back.output_shape((1, 10, 9)) == (2, 10, 9)


def test_missing_onnx_package(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(VolnetError, match="pip install"):
        export_onnx(Sequential([ReLU()], input_shape=(1, 2, 2)), tmp_path / "x.onnx")


def test_cli_export_and_import(tmp_path, capsys) -> None:
    path = tmp_path / "r.onnx"
    assert main(["export", "resnet18", str(path), "--num-classes", "10", "--input", "32x32x3"]) == 0
    assert "11,173,962 parameters" in capsys.readouterr().out
    assert main(["import", str(path), str(tmp_path / "model")]) == 0
    assert "11,173,962 parameters" in capsys.readouterr().out
    from volnet.io import load

    net = load(str(tmp_path / "model"))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert max_rel(net.predict(x), run_ort(path, x)) < 1e-4
    spec = "INPUT [8x8x1] -> CONV3-4 -> RELU -> POOL2 -> FC-3"
    assert main(["export", spec, str(tmp_path / "s.onnx")]) == 0
    assert main(["export", str(tmp_path / "model"), str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    assert main(["export", "vgg17", str(tmp_path / "v.onnx")]) == 2
    err = capsys.readouterr().err
    assert "vgg19" in err and err.count("\n") == 1
    assert main(["import", str(tmp_path / "nothing.onnx"), str(tmp_path / "o")]) == 2
