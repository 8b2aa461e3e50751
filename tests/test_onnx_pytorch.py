"""Files from ``torch.onnx.export`` import, from both exporters: ``dynamo=True`` (torch's default, opset
18+: GAP as ReduceMean + Reshape, folded BN) and ``dynamo=False`` (TorchScript, opsets 13-20: Flatten,
Identity aliases), optimised or not (standing BatchNormalization, shape subgraphs, MatMul + Add).

Every file is made here by torch (the oracle, a test-only dependency) and the imported net must compute
torch's scores. The exporter/opset matrix these tests cover:

==============  =======================  ====================================================
exporter        opsets                   nets
==============  =======================  ====================================================
dynamo=True     18, 19, 20 (13 -> 18)    LeNet-5, ResNet-18, GoogLeNet, AlexNet twins; a probe
dynamo=False    13, 14, ..., 20          LeNet-5, ResNet-18, GoogLeNet, AlexNet twins; a probe
==============  =======================  ====================================================

(torch's dynamo exporter has no implementations below opset 18: asked for 13 it writes 18.)
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import max_rel, torch_or_skip
from volnet.errors import ModelFileError
from volnet.onnx_io import import_onnx

onnx = pytest.importorskip("onnx")
torch = torch_or_skip()
from tests import torch_mirror  # noqa: E402  (needs torch)

TWINS = [("lenet5", (1, 28, 28)), ("resnet18", (3, 32, 32)), ("googlenet", (3, 32, 32)),
         ("alexnet", (3, 64, 64))]


def export(model: Any, x: Any, path: Path, dynamo: bool, opset: int, **kw: Any) -> Counter:
    """``torch.onnx.export`` quietly; the op types of the file written."""
    if dynamo:
        pytest.importorskip("onnxscript")  # the dynamo exporter's own dependency (in the test extra)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=dynamo, opset_version=opset, input_names=["input"],
                          output_names=["output"], **kw)
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def twin(name: str, shape: tuple[int, int, int]) -> Any:
    torch.manual_seed(0)
    model = torch_mirror.build(name, 10, shape)
    for m in model.modules():  # BN statistics away from (0, 1), so that folding them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def check(model: Any, x: Any, path: Path) -> None:
    net = import_onnx(path)
    with torch.no_grad():
        want = model(x).numpy()
    assert max_rel(net.predict(x.numpy()), want) < 1e-4


@pytest.mark.parametrize("dynamo,opset", [(True, 18), (False, 13)], ids=["dynamo-18", "torchscript-13"])
@pytest.mark.parametrize("name,shape", TWINS, ids=[t[0] for t in TWINS])
def test_twins_from_both_exporters(tmp_path, name: str, shape, dynamo: bool, opset: int) -> None:
    model, x = twin(name, shape), torch.randn(2, *shape)
    ops = export(model, x, tmp_path / "t.onnx", dynamo, opset)
    if name in ("resnet18", "googlenet"):  # GAP: ReduceMean + Reshape (dynamo), GlobalAveragePool (TS)
        assert (ops["ReduceMean"] and ops["Reshape"]) if dynamo else ops["GlobalAveragePool"]
    assert onnx.load(str(tmp_path / "t.onnx")).opset_import[0].version == opset
    check(model, x, tmp_path / "t.onnx")


@pytest.mark.parametrize("dynamo,opset", [(True, 13), (True, 19), (True, 20)] +
                         [(False, v) for v in range(14, 21)])
def test_lenet_every_opset(tmp_path, dynamo: bool, opset: int) -> None:
    model, x = twin("lenet5", (1, 28, 28)), torch.randn(2, 1, 28, 28)
    export(model, x, tmp_path / "t.onnx", dynamo, opset)
    got = onnx.load(str(tmp_path / "t.onnx")).opset_import[0].version
    assert got == (max(opset, 18) if dynamo else opset)
    check(model, x, tmp_path / "t.onnx")


class Probe(torch.nn.Module):
    """The patterns of unoptimised files: a bias-free conv (dynamo builds a zero bias from
    Shape/Expand/CastLike), standing BN, ``x.mean((2, 3), keepdim=True)``, ``x.view(x.size(0), -1)``
    (Shape/Gather/Unsqueeze/Concat into Reshape), ``x @ W.t() + b`` (Transpose of a weight, MatMul, Add),
    ``x.flatten(1)`` of a vector."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(6)
        self.conv2 = torch.nn.Conv2d(6, 5, 3)
        self.w = torch.nn.Parameter(torch.randn(4, 5))
        self.b = torch.nn.Parameter(torch.randn(4))
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x: Any) -> Any:
        x = torch.relu(self.bn(self.conv(x)))
        x = self.conv2(x).mean((2, 3), keepdim=True)
        x = x.view(x.size(0), -1)
        return torch.matmul(x, self.w.t()) + self.b


@pytest.mark.parametrize("kw", [
    {"dynamo": True, "opset": 18, "optimize": False},
    {"dynamo": True, "opset": 20, "dynamic_shapes": "batch"},
    {"dynamo": False, "opset": 13, "do_constant_folding": False},
    {"dynamo": False, "opset": 17, "dynamic_axes": {"input": {0: "N"}}},
], ids=["dynamo-unoptimised", "dynamo-dynamic-batch", "torchscript-unfolded", "torchscript-dynamic-batch"])
def test_unoptimised_and_dynamic_files(tmp_path, kw: dict) -> None:
    kw = dict(kw)
    dynamo, opset = kw.pop("dynamo"), kw.pop("opset")
    if kw.get("dynamic_shapes") == "batch":
        kw["dynamic_shapes"] = ({0: torch.export.Dim("N", min=2)},)
    torch.manual_seed(0)
    model, x = Probe().eval(), torch.randn(3, 3, 8, 8)
    ops = export(model, x, tmp_path / "p.onnx", dynamo, opset, **kw)
    assert ops["ReduceMean"] and ops["MatMul"] and ops["Add"]
    if "optimize" in kw or "do_constant_folding" in kw:
        assert ops["BatchNormalization"] and ops["Constant"] and ops["Concat"]
    if "dynamic_axes" in kw:
        assert ops["Shape"] and ops["Gather"] and ops["Unsqueeze"]
    check(model, x, tmp_path / "p.onnx")


class SqueezeHead(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(2, 4, 3), torch.nn.Linear(4, 3)

    def forward(self, x: Any) -> Any:
        return self.fc(self.conv(x).mean((2, 3), keepdim=True).squeeze(3).squeeze(2))


@pytest.mark.parametrize("dynamo", [True, False])
def test_squeeze_after_gap(tmp_path, dynamo: bool) -> None:
    """``x.mean((2, 3), keepdim=True).squeeze(3).squeeze(2)``: two Squeezes flatten the GAP output."""
    torch.manual_seed(0)
    model, x = SqueezeHead().eval(), torch.randn(2, 2, 6, 6)
    assert export(model, x, tmp_path / "s.onnx", dynamo, 18 if dynamo else 13)["Squeeze"] == 2
    check(model, x, tmp_path / "s.onnx")


def test_resnet18_unoptimised_dynamo(tmp_path) -> None:
    model, x = twin("resnet18", (3, 32, 32)), torch.randn(2, 3, 32, 32)
    ops = export(model, x, tmp_path / "r.onnx", True, 18, optimize=False)
    assert ops["BatchNormalization"] == 20 and ops["CastLike"] and ops["Expand"]
    check(model, x, tmp_path / "r.onnx")


class GlobalMax(torch.nn.Module):
    def forward(self, x: Any) -> Any:
        return x.amax((2, 3))


@pytest.mark.parametrize("module,op,hint", [
    (torch.nn.LeakyReLU(0.1), "LeakyRelu", "nn.ReLU"),
    (torch.nn.Sigmoid(), "Sigmoid", "nn.ReLU"),
    (GlobalMax(), "ReduceMax", "nn.MaxPool2d with kernel = H x W"),
])
def test_unsupported_op_names_op_node_and_rewrite(tmp_path, module: Any, op: str, hint: str) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), module).eval()
    export(model, torch.randn(1, 1, 6, 6), tmp_path / "u.onnx", False, 13)
    node = next(n.name for n in onnx.load(str(tmp_path / "u.onnx")).graph.node if n.op_type == op)
    with pytest.raises(ModelFileError) as e:
        import_onnx(tmp_path / "u.onnx")
    msg = str(e.value)
    assert "\n" not in msg and f"(op {op})" in msg and repr(node) in msg
    assert "nearest supported rewrite" in msg and hint in msg


def test_reductions_and_reshapes_that_do_not_map_name_the_rewrite(tmp_path) -> None:
    class ChannelMean(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x.mean(1, keepdim=True)

    class Fold(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x.reshape(x.size(0), 2, -1)

    for model, op, hint in [(ChannelMean(), "ReduceMean", "mean over H, W"),
                            (Fold(), "Reshape", r"torch\.flatten\(x, 1\)")]:
        export(model.eval(), torch.randn(1, 4, 4, 4), tmp_path / "m.onnx", False, 13)
        with pytest.raises(ModelFileError, match=rf"\(op {op}\).*nearest supported rewrite: .*{hint}"):
            import_onnx(tmp_path / "m.onnx")
