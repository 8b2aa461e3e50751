"""safetensors: the pure-NumPy reader/writer against the package, PyTorch state_dict names for the zoo,
weights loaded from torch models built with torchvision names, and the one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import max_rel, torch_or_skip
from tests.test_zoo import randomize_bn
from volnet import safetensors_io as st
from volnet import zoo
from volnet.errors import ModelFileError

ARRAYS = {
    "a.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    "b": np.linspace(-1, 1, 5),  # float64
    "h": np.array([0.5, -2.0], dtype=np.float16),
    "n.num_batches_tracked": np.array(7, dtype=np.int64),  # 0-d
    "u": np.array([[1, 2], [3, 255]], dtype=np.uint8),
    "m": np.array([True, False]),
    "empty": np.zeros((0, 3), dtype=np.float32),
}


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k])


def test_pure_round_trip(tmp_path) -> None:
    data = st.write_safetensors_pure(ARRAYS, {"who": "volnet"})
    (n,) = np.frombuffer(data[:8], dtype="<u8")
    assert (8 + int(n)) % 8 == 0  # header padded to 8 bytes
    (tmp_path / "x.safetensors").write_bytes(data)
    tensors, meta = st.read_safetensors_pure(tmp_path / "x.safetensors")
    _same(tensors, ARRAYS)
    assert meta == {"who": "volnet"}


def test_pure_and_package_agree(tmp_path) -> None:
    stn = pytest.importorskip("safetensors.numpy")
    pure = tmp_path / "pure.safetensors"
    st.write_safetensors(pure, ARRAYS, {"k": "v"}, pure=True)
    _same(stn.load_file(str(pure)), ARRAYS)  # the package reads the pure writer's file
    pkg = tmp_path / "pkg.safetensors"
    stn.save_file(ARRAYS, str(pkg), metadata={"k": "v"})
    _same(st.read_safetensors_pure(pkg)[0], ARRAYS)  # the pure reader reads the package's file
    assert st.read_safetensors_pure(pkg)[1] == {"k": "v"}
    _same(st.read_safetensors(pkg), ARRAYS)


def test_bf16_from_torch(tmp_path) -> None:
    torch = torch_or_skip()
    safetensors_torch = pytest.importorskip("safetensors.torch")
    t = torch.randn(3, 4).to(torch.bfloat16)
    safetensors_torch.save_file({"w": t}, str(tmp_path / "b.safetensors"))
    for got in (st.read_safetensors_pure(tmp_path / "b.safetensors")[0]["w"],
                st.read_safetensors(tmp_path / "b.safetensors")["w"]):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, t.float().numpy())


def test_corrupt_files(tmp_path) -> None:
    good = st.write_safetensors_pure({"w": np.ones((4, 4), np.float32)})
    cases = {"short": good[:5], "truncated": good[:-8], "header": good[:8] + b"{not json" + good[17:],
             "huge": np.array([2**40], "<u8").tobytes() + good[8:]}
    for name, data in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        for pure in (True, False):
            with pytest.raises(ModelFileError) as e:
                st.read_safetensors(path, pure=pure)
            assert "\n" not in str(e.value) and name in str(e.value)
    with pytest.raises(ModelFileError, match="no safetensors file"):
        st.read_safetensors(tmp_path / "missing.safetensors")


def test_torch_names() -> None:
    r = st.torch_names(zoo.get("resnet18", build=False))
    assert r["conv1.w"] == "conv1.weight" and r["bn1.running_var"] == "bn1.running_var"
    assert r["layer2.0.downsample.0.w"] == "layer2.0.downsample.0.weight"
    assert r["layer2.0.downsample.1.b"] == "layer2.0.downsample.1.bias" and r["fc.b"] == "fc.bias"
    v = st.torch_names(zoo.get("vgg16", build=False))
    convs = sorted({int(k.split(".")[1]) for k in v.values() if k.startswith("features")})
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's vgg16 conv indices
    assert {k for k in v.values() if k.startswith("classifier")} == {
        f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
    a = st.torch_names(zoo.get("alexnet", build=False))
    assert sorted({int(k.split(".")[1]) for k in a.values() if k.startswith("features")}) == [0, 3, 6, 8, 10]
    assert sorted({int(k.split(".")[1]) for k in a.values() if k.startswith("classifier")}) == [1, 4, 6]
    g = st.torch_names(zoo.get("googlenet", build=False))
    assert g["conv1.conv.w"] == "conv1.conv.weight"
    assert g["inception3a.branch2.1.bn.running_mean"] == "inception3a.branch2.1.bn.running_mean"
    assert g["inception5b.branch4.1.conv.w"] == "inception5b.branch4.1.conv.weight"
    assert len(g) == len(set(g.values()))


@pytest.mark.parametrize("name,shape", [("resnet18", (3, 32, 32)), ("googlenet", (3, 32, 32)),
                                        ("vgg11", (3, 32, 32)), ("zfnet", (3, 80, 80))])
def test_load_weights_saved_from_torch(tmp_path, name: str, shape) -> None:
    """A torch model with torchvision names -> safetensors.torch.save_file -> volnet: same outputs."""
    torch = torch_or_skip()
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from tests import torch_mirror

    torch.manual_seed(0)
    model = torch_mirror.build(name, 7, shape)
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(path))
    net = zoo.get(name, num_classes=7, input_shape=shape, build=False)
    result = st.load_torch_state_dict(net, path)
    assert sorted(result.loaded) == sorted({**net.params, **net.buffers})
    assert all(k.endswith("num_batches_tracked") for k in result.unused)
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    model.eval()
    with torch.no_grad():
        yt = model(torch.from_numpy(x)).numpy()
    assert max_rel(net.eval().forward(x), yt) < 1e-4


def test_save_for_torch(tmp_path) -> None:
    """volnet -> save_torch_state_dict -> torch load_state_dict(strict=True): same outputs."""
    torch = torch_or_skip()
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from tests import torch_mirror

    net = zoo.get("resnet18", num_classes=5, input_shape=(3, 32, 32), seed=3)
    randomize_bn(net)
    path = tmp_path / "r.safetensors"
    st.save_torch_state_dict(net, path)
    state = safetensors_torch.load_file(str(path))
    assert state["bn1.num_batches_tracked"].dtype == torch.int64
    model = torch_mirror.build("resnet18", 5, (3, 32, 32))
    model.load_state_dict(state, strict=True)
    model.eval()
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        assert max_rel(net.predict(x), model(torch.from_numpy(x)).numpy()) < 1e-4
    again = zoo.get("resnet18", num_classes=5, input_shape=(3, 32, 32), seed=9)
    st.load_torch_state_dict(again, path)
    np.testing.assert_array_equal(again.predict(x), net.predict(x))


def test_missing_wrong_and_extra_keys(tmp_path) -> None:
    net = zoo.get("resnet18", num_classes=4, input_shape=(3, 16, 16), seed=0)
    state = st.to_torch_state_dict(net)
    before = net.params["conv1.w"].copy()
    bad = {k: v for k, v in state.items() if k != "layer2.1.conv2.weight"}
    bad["conv1.weight"] = state["conv1.weight"] + 1  # must not be applied when another key fails
    path = tmp_path / "m.safetensors"
    st.write_safetensors(path, bad)
    with pytest.raises(ModelFileError) as e:
        st.load_torch_state_dict(net, path)
    msg = str(e.value)
    assert "\n" not in msg and "'layer2.1.conv2.weight'" in msg and "missing" in msg
    np.testing.assert_array_equal(net.params["conv1.w"], before)
    wrong = dict(state, **{"fc.weight": np.zeros((9, 512), np.float32), "fc.bias": np.zeros(9, np.float32)})
    st.write_safetensors(path, wrong)
    with pytest.raises(ModelFileError, match=r"'fc.weight' has shape \(9, 512\)"):
        st.load_torch_state_dict(net, path)
    # fine-tuning: another class count, everything but the head
    res = st.load_torch_state_dict(net, path, skip=[zoo.head_name(net)])
    assert res.skipped == ["fc.w", "fc.b"] and "fc.weight" in res.unused
    extra = dict(state, **{"aux.weight": np.zeros(3, np.float32)})
    st.write_safetensors(path, extra)
    with pytest.raises(ModelFileError, match="unexpected key 'aux.weight'"):
        st.load_torch_state_dict(net, path)
    assert "aux.weight" in st.load_torch_state_dict(net, path, strict=False).unused


def test_without_the_package(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(st, "_package", lambda: None)
    net = zoo.get("lenet5", seed=1)
    path = tmp_path / "l.safetensors"
    st.save_torch_state_dict(net, path)
    keys = set(st.read_safetensors(path))
    assert {"features.0.weight", "features.3.weight", "features.6.weight", "classifier.0.weight",
            "classifier.2.bias"} <= keys
    other = zoo.get("lenet5", seed=2)
    st.load_torch_state_dict(other, path)
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(other.predict(x), net.predict(x))
