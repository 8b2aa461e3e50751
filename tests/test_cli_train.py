"""``volnet train`` / ``evaluate`` / ``predict`` end to end, resume from the CLI, and bad inputs (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import volnet.data.named as named
from volnet.cli.main import main
from volnet.train import load_trained, read_metrics

SMALL = "INPUT [8x8x1] -> CONV3-8 -> BN -> RELU -> POOL2 -> FC-32 -> DROPOUT0.2 -> RELU -> FC-10"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc: int, err: str, command: str) -> None:
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"volnet {command}: error:"), err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("runs") / "digits"
    rc = main(["train", "--model", SMALL, "--data", "digits", "--epochs", "2", "--batch", "32",
               "--lr", "3e-3", "--schedule", "constant", "--warmup", "0", "--val", "200", "--out", str(out),
               "--quiet"])
    assert rc == 0
    return out


def test_train_digits_end_to_end(digits_run) -> None:
    for name in ("metrics.jsonl", "curves.png", "results.json", "best/model.json", "last/trainer.json",
                 "last/optimizer.npz"):
        assert (digits_run / name).is_file(), name
    recs = read_metrics(digits_run)
    assert len(recs) == 2 and recs[-1]["val_acc"] > 0.5
    res = json.loads((digits_run / "results.json").read_text())
    assert res["n"] == 359 and res["test_acc"] > 0.5
    doc = json.loads((digits_run / "last" / "trainer.json").read_text())
    assert doc["info"]["args"]["data_used"] == "digits" and doc["classes"] == [str(i) for i in range(10)]


def test_evaluate_prints_accuracy_and_confusion(digits_run, capsys) -> None:
    rc, out, err = _run(capsys, "evaluate", digits_run, "--data", "digits")
    assert rc == 0, err
    res = json.loads((digits_run / "results.json").read_text())
    assert f"accuracy {100 * res['test_acc']:.2f}% ({round(res['test_acc'] * 359)}/359)" in out
    assert "confusion matrix" in out and " 9 9 " in out
    assert (digits_run / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    rc, out, _ = _run(capsys, "evaluate", digits_run / "last", "--json", "--no-plot", "--split", "val")
    assert rc == 0
    d = json.loads(out)
    assert d["n"] == 200 and np.array(d["confusion"]).sum() == 200 and d["data"] == "digits"


def test_predict_top5_for_image_files(digits_run, capsys, tmp_path) -> None:
    Image = pytest.importorskip("PIL.Image")
    from volnet.data import load_dataset

    _, test = load_dataset("digits")
    paths = []
    for i in range(2):  # two test digits, saved as 32x32 RGB PNGs (predict converts and resizes them)
        a = (test.x[i, 0] * 255).astype(np.uint8)
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(a).resize((32, 32), Image.Resampling.NEAREST).convert("RGB").save(p)
        paths.append(p)
    rc, out, err = _run(capsys, "predict", digits_run, *paths)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{paths[0]}:" and len(lines) == 2 * 6
    for k, line in zip(range(1, 6), lines[1:6]):
        assert line.strip().startswith(f"{k}.") and line.endswith("%")
    rc, out, _ = _run(capsys, "predict", digits_run, paths[0], "--json", "--top", "3")
    top = json.loads(out)[0]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert top[0]["class"] in [str(i) for i in range(10)]
    m = load_trained(digits_run)
    x = np.asarray(Image.open(paths[0]).convert("L").resize((8, 8), Image.Resampling.BILINEAR),
                   dtype=np.float32)[None, None] / 255
    assert int(np.argmax(m.probabilities(x)[0])) == top[0]["index"]


def test_ctrl_c_then_resume_matches_an_uninterrupted_run(tmp_path, capsys, monkeypatch) -> None:
    from volnet.train.callbacks import ModelCheckpoint

    base = ["train", "--model", SMALL, "--data", "synthetic", "--num-classes", "10", "--epochs", "2",
            "--batch", "32", "--quiet"]
    assert _run(capsys, *base, "--out", tmp_path / "a")[0] == 0

    calls = {"n": 0}
    real = ModelCheckpoint.on_step_end

    def interrupt(self, trainer, log):  # after the 20th step, as a user's Ctrl-C would
        real(self, trainer, log)
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt

    monkeypatch.setattr(ModelCheckpoint, "on_step_end", interrupt)
    rc, _, err = _run(capsys, *base, "--out", tmp_path / "b")
    assert rc == 130
    assert err.strip().count("\n") == 0 and f"volnet train --resume {tmp_path / 'b'}" in err
    monkeypatch.setattr(ModelCheckpoint, "on_step_end", real)
    rc, _, err = _run(capsys, "train", "--resume", tmp_path / "b", "--quiet", "--lr", "5")
    assert rc == 0 and "ignoring --lr" in err
    a, b = load_trained(tmp_path / "a" / "last").net, load_trained(tmp_path / "b" / "last").net
    for k, v in a.params.items():
        assert np.array_equal(v, b.params[k]), k
    rc, _, err = _run(capsys, *base, "--out", tmp_path / "b")
    _one_line_error(rc, err, "train")
    assert "--resume" in err


def test_fashion_mnist_falls_back_to_digits(tmp_path, capsys, monkeypatch) -> None:
    pytest.importorskip("sklearn")
    monkeypatch.setitem(named.SYSTEM_DIRS, "fashion-mnist", tmp_path / "none")
    monkeypatch.setenv("VOLNET_CACHE", str(tmp_path / "cache"))
    rc, out, err = _run(capsys, "train", "--data", "fashion-mnist", "--epochs", "1", "--limit-train", "64",
                        "--model", SMALL, "--out", tmp_path / "run", "--quiet", "--no-download")
    assert rc == 0, err
    assert "Fashion-MNIST is not installed and --no-download" in err and "digits" in err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["n"] == 359


def test_fashion_mnist_is_downloaded_before_falling_back(tmp_path, capsys, monkeypatch) -> None:
    """Not installed: volnet tries the checksummed download (no network here: urlopen is replaced), and
    only when that fails trains on digits, saying so in one line."""
    import importlib
    import urllib.error

    dl = importlib.import_module("volnet.data.download")  # the module (the package exports a function too)
    pytest.importorskip("sklearn")
    asked: list[str] = []

    def offline(url, *a, **k):
        asked.append(getattr(url, "full_url", url))
        raise urllib.error.URLError("no network in the tests")

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    monkeypatch.setitem(named.SYSTEM_DIRS, "fashion-mnist", tmp_path / "none")
    monkeypatch.setenv("VOLNET_CACHE", str(tmp_path / "cache"))
    rc, out, err = _run(capsys, "train", "--data", "fashion-mnist", "--epochs", "1", "--limit-train", "64",
                        "--model", SMALL, "--out", tmp_path / "run", "--quiet")
    assert rc == 0, err
    assert asked and "fashion-mnist" in asked[0]
    notes = [ln for ln in err.splitlines() if "Fashion-MNIST" in ln]
    assert len(notes) == 1 and "downloading it failed" in notes[0] and "digits" in notes[0]


@pytest.mark.parametrize("argv, command", [
    (["train", "--data", "mnist", "--data-dir", "/nonexistent/volnet-data", "--no-download"], "train"),
    (["train", "--data", "synthetic", "--model", "INPUT [8x8x1] -> CONV3-8 -> FROB -> FC-4"], "train"),
    (["train", "--data", "synthetic", "--model", "vgg17"], "train"),
    (["train", "--data", "synthetic", "--model", "INPUT [28x28x1] -> FC-4"], "train"),
    (["train", "--data", "nosuchdata"], "train"),
    (["train", "--data", "synthetic", "--val", "abc"], "train"),
    (["train", "--resume", "/nonexistent/run"], "train"),
    (["evaluate", "/nonexistent/model", "--data", "digits"], "evaluate"),
    (["predict", "/nonexistent/model", "x.png"], "predict"),
])
def test_bad_inputs_exit_2_with_one_line(argv, command, capsys, tmp_path) -> None:
    argv = [*argv, "--out", str(tmp_path / "run")] if command == "train" and "--resume" not in argv else argv
    rc, _, err = _run(capsys, *argv)
    _one_line_error(rc, err, command)


def test_corrupt_dataset_files_exit_2(tmp_path, capsys) -> None:
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / stem).write_bytes(b"\x00\x00\x08\x03garbage")
    rc, _, err = _run(capsys, "train", "--data", "mnist", "--data-dir", tmp_path, "--out", tmp_path / "r")
    _one_line_error(rc, err, "train")


def test_predict_bad_image_and_model_dir_errors(digits_run, capsys, tmp_path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    rc, _, err = _run(capsys, "predict", digits_run, bad)
    _one_line_error(rc, err, "predict")
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(capsys, "evaluate", tmp_path / "empty", "--data", "digits")
    _one_line_error(rc, err, "evaluate")
