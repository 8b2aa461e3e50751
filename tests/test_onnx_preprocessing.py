"""Self-describing ONNX files: a run's normaliser (Sub/Div nodes + metadata) and class names go into the
export, come back on import, and export -> import -> predict gives the run's own top-5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import max_rel
from volnet.cli.main import main
from volnet.data import Normalizer
from volnet.io import load_meta
from volnet.onnx_io import import_onnx, read_onnx, to_onnx_model
from volnet.spec import build
from volnet.train import load_trained

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

SPEC = "INPUT [8x8x1] -> CONV3-4 -> BN -> RELU -> POOL2 -> FC-10"


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny trained run (digits, one epoch): its trainer.json holds a normaliser far from (0, 1)."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("runs") / "tiny"
    rc = main(["train", "--model", SPEC, "--data", "digits", "--epochs", "1", "--batch", "64", "--lr", "3e-3",
               "--val", "100", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def test_export_of_a_run_carries_normaliser_nodes_and_class_names(run_dir, tmp_path, capsys) -> None:
    path = tmp_path / "m.onnx"
    rc, out, err = _run(capsys, "export", run_dir, path)  # the run directory, not run/best
    assert rc == 0, err
    assert "Sub/Div nodes" in out and "10 class names" in out
    run = load_trained(run_dir)
    assert run.normalizer is not None and abs(run.normalizer.mean[0] - 0.5) > 0.1  # not a no-op normaliser
    model = onnx.load(str(path))
    nodes = model.graph.node
    assert [n.op_type for n in nodes[:2]] == ["Sub", "Div"] and nodes[0].input[0] == "input"
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["volnet.classes"]) == run.classes == [str(i) for i in range(10)]
    assert np.allclose(json.loads(meta["volnet.normalizer"])["mean"], run.normalizer.mean)
    # any runtime fed [0, 1] pixels gets the run's probabilities: the normalisation is in the graph
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    scores = _ort(path, x)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    assert max_rel(e / e.sum(axis=1, keepdims=True), run.probabilities(x)) < 1e-4


def test_round_trip_export_import_predict_gives_the_runs_top5(run_dir, tmp_path, capsys) -> None:
    from volnet.data import load_dataset

    onnx_path, imported = tmp_path / "m.onnx", tmp_path / "imported"
    assert main(["export", str(run_dir), str(onnx_path)]) == 0
    rc, out, err = _run(capsys, "import", onnx_path, imported)
    assert rc == 0, err
    assert "input normaliser restored" in out and "10 class names restored" in out
    meta = load_meta(imported)
    run = load_trained(run_dir)
    assert np.allclose(meta["normalizer"]["mean"], run.normalizer.mean, rtol=1e-6)
    assert np.allclose(meta["normalizer"]["std"], run.normalizer.std, rtol=1e-6)
    assert meta["classes"] == run.classes
    back = load_trained(imported)
    assert [type(lay).__name__ for _, lay in back.net.named_layers()][0] == "Conv"  # Sub/Div stripped
    _, test = load_dataset("digits")
    paths = []
    for i in range(4):
        p = tmp_path / f"d{i}.png"
        Image.fromarray((test.x[i, 0] * 255).astype(np.uint8)).save(p)
        paths.append(p)
    rc, out_run, err = _run(capsys, "predict", run_dir, *paths, "--json")
    assert rc == 0 and "warning" not in err
    rc, out_imp, err = _run(capsys, "predict", imported, *paths, "--json")
    assert rc == 0 and "warning" not in err, err
    a, b = json.loads(out_run), json.loads(out_imp)
    for ra, rb in zip(a, b):
        assert [t["class"] for t in ra["top"]] == [t["class"] for t in rb["top"]]
        assert np.allclose([t["probability"] for t in ra["top"]], [t["probability"] for t in rb["top"]],
                           atol=1e-5)


def test_summary_accepts_a_run_directory(run_dir, capsys) -> None:
    rc, out, err = _run(capsys, "summary", run_dir)  # the run, not run/best
    assert rc == 0, err
    total = next(line for line in out.splitlines() if line.startswith("total "))
    assert total.split()[2] == f"{load_trained(run_dir).net.num_params():,}" == "698"


def test_predict_warns_without_normaliser_and_notes_resize_and_light_background(tmp_path, capsys) -> None:
    spec_onnx, imported = tmp_path / "s.onnx", tmp_path / "plain"
    assert main(["export", SPEC, str(spec_onnx)]) == 0  # a spec: no normaliser, no classes
    rc, out, _ = _run(capsys, "import", spec_onnx, imported)
    assert rc == 0 and "no input normalisation in the file" in out
    img = np.full((16, 16), 240, np.uint8)
    img[5:11, 5:11] = 10  # a dark object on a light background, twice the model's size
    Image.fromarray(img).save(tmp_path / "light.png")
    rc, out, err = _run(capsys, "predict", imported, tmp_path / "light.png")
    assert rc == 0
    assert "stores no input normaliser" in err
    assert "resized 16x16 -> 8x8" in err and "--invert" in err
    rc, out, err = _run(capsys, "predict", imported, tmp_path / "light.png", "--invert")
    assert rc == 0 and "--invert" not in err


def test_read_onnx_strips_a_foreign_input_normalisation(tmp_path) -> None:
    """Sub/Div by per-channel constants after the input (any producer) become the Normalizer; import_onnx
    keeps them in the net as an affine BN layer, so both compute what the file computes."""
    net = build("INPUT [6x6x3] -> CONV3-4 -> RELU -> GAP -> FC-3", seed=1)
    norm = Normalizer([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    model = to_onnx_model(net, normalizer=norm, classes=["a", "b", "c"])
    for p in list(model.metadata_props):  # a foreign file: no volnet metadata but the nodes
        if p.key == "volnet.normalizer":
            model.metadata_props.remove(p)
    path = tmp_path / "f.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(0).random((2, 3, 6, 6), dtype=np.float32)
    want = _ort(path, x)
    m = read_onnx(path)
    assert m.classes == ["a", "b", "c"]
    assert np.allclose(m.normalizer.mean, norm.mean, rtol=1e-6) and np.allclose(m.normalizer.std, norm.std)
    assert max_rel(m.net.predict(m.normalizer.transform(x)), want) < 1e-5
    whole = import_onnx(path)
    assert type(next(iter(whole.named_layers()))[1]).__name__ == "BatchNorm"
    assert max_rel(whole.predict(x), want) < 1e-5
    with pytest.raises(Exception, match="positive std"):
        to_onnx_model(net, normalizer={"mean": [0, 0, 0], "std": [1, 0, 1]})
