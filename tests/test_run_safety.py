"""``volnet train`` never loses a user's files (issue 11, section 1): a folder that is not a volnet run is
refused, ``--overwrite`` deletes only what a run owns, every argument is checked before anything is
touched, an old run is replaced only once the new one has its first checkpoint, and a failing
``--resume`` leaves every file as it was."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from volnet.cli.main import main
from volnet.data import make_synthetic
from volnet.errors import VolnetError
from volnet.spec import build
from volnet.train import Trainer, load_trained

NET = "INPUT [8x8x1] -> CONV3-4 -> RELU -> FC-4"
BASE = ["train", "--model", NET, "--data", "synthetic", "--num-classes", "4", "--limit-train", "64",
        "--val", "16", "--epochs", "1", "--batch", "32", "--quiet"]


def _run(capsys, *argv: object) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    return rc, err


def _files(root: Path) -> dict[str, tuple[str, int]]:
    """Every file below ``root`` (hidden ones too): sha256 and mtime."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def _one_line(rc: int, err: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    """A finished run, the template each test copies."""
    out = tmp_path_factory.mktemp("old") / "run"
    assert main([*BASE, "--out", str(out)]) == 0
    return out


def _copy_run(old_run: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(old_run, dst)
    return dst


def test_a_folder_that_is_not_a_run_is_refused_even_with_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "photos"
    (out / "best").mkdir(parents=True)
    (out / "best" / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    (out / "last").mkdir()
    (out / "last" / "notes.txt").write_text("mine")
    (out / "metrics.jsonl").write_text("my own metrics\n")
    before = _files(out)
    for extra in ([], ["--overwrite"]):
        err = _one_line(*_run(capsys, *BASE, "--out", out, *extra))
        assert "not a volnet run" in err
        assert _files(out) == before


def test_a_file_as_out_is_refused(tmp_path, capsys) -> None:
    f = tmp_path / "out"
    f.write_text("x")
    err = _one_line(*_run(capsys, *BASE, "--out", f))
    assert "is a file" in err and f.read_text() == "x"


def test_overwrite_deletes_only_what_the_run_owns(old_run, tmp_path, capsys) -> None:
    out = _copy_run(old_run, tmp_path / "run")
    (out / "my-notes.txt").write_text("keep me")
    (out / "plots").mkdir()
    (out / "plots" / "fig.png").write_bytes(b"png")
    marker = json.loads((out / "volnet-run.json").read_text())
    assert set(marker["files"]) >= {"last", "best", "metrics.jsonl"}
    old_weights = (out / "last" / "weights.npz").read_bytes()
    rc, err = _run(capsys, *BASE, "--out", out, "--overwrite", "--seed", "7")
    assert rc == 0, err
    assert (out / "my-notes.txt").read_text() == "keep me"
    assert (out / "plots" / "fig.png").read_bytes() == b"png"
    assert (out / "last" / "weights.npz").read_bytes() != old_weights
    assert json.loads((out / "last" / "trainer.json").read_text())["config"]["seed"] == 7
    assert not [p for p in os.listdir(out) if p.startswith(".")], "staging folders left behind"


def test_a_run_is_not_replaced_without_overwrite(old_run, tmp_path, capsys) -> None:
    out = _copy_run(old_run, tmp_path / "run")
    before = _files(out)
    err = _one_line(*_run(capsys, *BASE, "--out", out))
    assert "--resume" in err and "--overwrite" in err
    assert _files(out) == before


@pytest.mark.parametrize("flag, value", [
    ("--lr", "nan"), ("--lr", "-1"), ("--batch", "0"), ("--optim", "adamx"), ("--epochs", "-1"),
    ("--clip", "inf"), ("--clip", "0"), ("--gamma", "nan"), ("--val", "nan"), ("--val", "-3"),
    ("--warmup", "nan"), ("--warmup", "-1"), ("--step-size", "nan"), ("--step-size", "0"),
    ("--min-lr", "inf"), ("--weight-decay", "nan"), ("--momentum", "nan"), ("--save-every", "0"),
    ("--limit-train", "0"), ("--seed", "-1"),
])
def test_bad_arguments_leave_the_old_run_as_it_was(flag, value, old_run, tmp_path, capsys) -> None:
    out = _copy_run(old_run, tmp_path / "run")
    before = _files(out)
    err = _one_line(*_run(capsys, *BASE, "--out", out, "--overwrite", flag, value))
    assert flag in err, err
    assert _files(out) == before


def test_step_schedule_without_step_size_is_refused_up_front(old_run, tmp_path, capsys) -> None:
    out = _copy_run(old_run, tmp_path / "run")
    before = _files(out)
    err = _one_line(*_run(capsys, *BASE, "--out", out, "--overwrite", "--schedule", "step"))
    assert "--step-size" in err
    assert _files(out) == before


def test_bad_model_or_data_leave_the_old_run_as_it_was(old_run, tmp_path, capsys) -> None:
    out = _copy_run(old_run, tmp_path / "run")
    before = _files(out)
    _one_line(*_run(capsys, *BASE, "--out", out, "--overwrite", "--model", "INPUT [8x8x1] -> FROB -> FC-4"))
    _one_line(*_run(capsys, *BASE, "--out", out, "--overwrite", "--data", "nosuchdata"))
    assert _files(out) == before


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_run_that_fails_before_its_first_checkpoint_keeps_the_old_one(old_run, tmp_path, capsys) -> None:
    out = _copy_run(old_run, tmp_path / "run")
    before = _files(out)
    err = _one_line(*_run(capsys, *BASE, "--out", out, "--overwrite", "--optim", "sgd", "--lr", "1e30",
                          "--schedule", "constant", "--warmup", "0"))
    assert "diverged" in err
    assert _files(out) == before


def _damage(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("victim", ["best/weights.npz", "last/optimizer.npz", "last/weights.npz"])
def test_a_failing_resume_leaves_every_file_as_it_was(victim, old_run, tmp_path, capsys) -> None:
    out = _copy_run(old_run, tmp_path / "run")
    _damage(out / victim)
    before = _files(out)
    err = _one_line(*_run(capsys, "train", "--resume", out, "--epochs", "3", "--quiet"))
    assert Path(victim).name in err
    assert _files(out) == before


@pytest.mark.parametrize("edit", [
    lambda d: d["position"].update(step="12"),
    lambda d: d.update(history={"a": 1}),
    lambda d: d["config"].update(batch_size=0),
    lambda d: d["best"].update(acc="high"),
    lambda d: d["info"]["args"].update(seed="zero"),
])
def test_a_resume_with_a_damaged_trainer_json_leaves_every_file_as_it_was(edit, old_run, tmp_path,
                                                                          capsys) -> None:
    out = _copy_run(old_run, tmp_path / "run")
    doc = json.loads((out / "last" / "trainer.json").read_text())
    edit(doc)
    (out / "last" / "trainer.json").write_text(json.dumps(doc))
    before = _files(out)
    _one_line(*_run(capsys, "train", "--resume", out, "--epochs", "3", "--quiet"))
    assert _files(out) == before


def test_resume_with_a_bad_epochs_value_changes_nothing(old_run, tmp_path, capsys) -> None:
    out = _copy_run(old_run, tmp_path / "run")
    before = _files(out)
    err = _one_line(*_run(capsys, "train", "--resume", out, "--epochs", "-2", "--quiet"))
    assert "--epochs" in err
    assert _files(out) == before


def test_trainer_refuses_a_foreign_out_dir(tmp_path) -> None:
    train, _ = make_synthetic(n_train=32, n_test=0, num_classes=4, seed=0)
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "holiday.jpg").write_bytes(b"photo")
    t = Trainer(build(NET, seed=0), train, epochs=1, batch_size=16, out_dir=tmp_path, progress=False)
    with pytest.raises(VolnetError, match="not a volnet run"):
        t.fit()
    assert (tmp_path / "best" / "holiday.jpg").read_bytes() == b"photo"
    assert sorted(os.listdir(tmp_path)) == ["best"]


def test_old_runs_without_a_marker_still_resume_and_overwrite(old_run, tmp_path, capsys) -> None:
    out = _copy_run(old_run, tmp_path / "run")
    (out / "volnet-run.json").unlink()  # as runs made before the marker existed
    rc, err = _run(capsys, "train", "--resume", out, "--epochs", "2", "--quiet")
    assert rc == 0, err
    assert len(json.loads((out / "last" / "trainer.json").read_text())["history"]) == 2
    (out / "mine.txt").write_text("x")
    rc, err = _run(capsys, *BASE, "--out", out, "--overwrite")
    assert rc == 0, err
    assert (out / "mine.txt").read_text() == "x" and (out / "volnet-run.json").is_file()
    assert np.isfinite(load_trained(out).net.params["fc1.w"]).all()
