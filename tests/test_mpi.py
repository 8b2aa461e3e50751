"""Data-parallel training over MPI (``mpirun -np 2``) equals one process; a dead rank ends the job.

Needs the ``mpi`` extra (mpi4py and Open MPI's wheels, installed by ``make``/``.ci/run``); without it these
tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from volnet.cli.main import main
from volnet.train import load_trained

ROOT = Path(__file__).resolve().parents[1]
MPIRUN = Path(sys.executable).parent / "mpirun"
try:
    import mpi4py  # noqa: F401

    HAVE_MPI = MPIRUN.exists() or shutil.which("mpirun") is not None
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="the mpi extra (mpi4py + mpirun) is not installed")

PLAIN = "INPUT [8x8x1] -> CONV3-6 -> RELU -> POOL2 -> FC-16 -> RELU -> FC-4"
WITH_BN = "INPUT [8x8x1] -> CONV3-6 -> BN -> RELU -> POOL2 -> FC-16 -> BN -> RELU -> FC-4"
# 512 synthetic images, batch 64, 4 epochs: 32 steps; crops and flips check that every image is augmented
# the same way whichever rank it lands on
ARGS = ["--data", "synthetic", "--num-classes", "4", "--val", "0", "--epochs", "4", "--batch", "64",
        "--optim", "momentum", "--augment", "flip+crop", "--quiet"]


def _mpirun(n: int, args: list[str], timeout_s: str | None = None) -> subprocess.Popen:
    launcher = str(MPIRUN) if MPIRUN.exists() else "mpirun"
    cmd = [launcher, "-np", str(n), "--oversubscribe"]
    cmd += ["--allow-run-as-root"] if os.geteuid() == 0 else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    if timeout_s is not None:
        env["VOLNET_MPI_TIMEOUT"] = timeout_s
    return subprocess.Popen([*cmd, sys.executable, "-m", "volnet", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _weights(run: Path) -> np.ndarray:
    net = load_trained(run / "last").net
    return np.concatenate([net.params[k].ravel() for k in sorted(net.params)]).astype(np.float64)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over all weights / max |a|: biases before a BN have a zero true gradient, so their
    own relative error is noise over noise."""
    return float(np.abs(a - b).max() / np.abs(a).max())


@needs_mpi
@pytest.mark.parametrize("net,extra", [(PLAIN, []), (WITH_BN, ["--sync-bn"])], ids=["no-bn", "sync-bn"])
def test_two_ranks_equal_one_process(tmp_path, net: str, extra: list[str]) -> None:
    """Same weights, BN statistics, losses and (sharded, gathered) validation and test results."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = [a if a != "0" else "61" for a in ARGS]  # --val 61: odd shards for the sharded evaluation
    assert main(["train", "--model", net, *args, "--out", str(one)]) == 0
    proc = _mpirun(2, ["train", "--model", net, *args, *extra, "--out", str(two)])
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert out.count("test acc") == 1, out  # rank 0 alone prints (and writes)
    assert _rel(_weights(one), _weights(two)) < 1e-5
    a, b = load_trained(one / "last").net.buffers, load_trained(two / "last").net.buffers
    for k in a:  # with --sync-bn the running statistics are the global batch's too
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
    h1, h2 = (json.loads((r / "metrics.jsonl").read_text().splitlines()[-1]) for r in (one, two))
    assert h1["step"] == h2["step"] == 32 and h1["train_acc"] == h2["train_acc"]
    assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-5)
    assert h1["val_acc"] == h2["val_acc"] and h1["val_loss"] == pytest.approx(h2["val_loss"], rel=1e-5)
    r1, r2 = (json.loads((r / "results.json").read_text()) for r in (one, two))
    assert r1["n"] == r2["n"] and r1["test_acc"] == r2["test_acc"]


@needs_mpi
def test_per_rank_bn_statistics_differ_without_sync_bn(tmp_path) -> None:
    """Without --sync-bn each rank normalises with its own 32 images (PyTorch DDP's default)."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "--model", WITH_BN, *ARGS, "--out", str(one)]) == 0
    proc = _mpirun(2, ["train", "--model", WITH_BN, *ARGS, "--out", str(two)])
    assert proc.wait(timeout=240) == 0
    assert _rel(_weights(one), _weights(two)) > 1e-4


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _rank_pid(mpirun_pid: int, rank: int) -> int | None:
    for p in _descendants(mpirun_pid):
        try:
            env = Path(f"/proc/{p}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env and b"volnet" in cmdline:
            return p
    return None


def _signal_rank_1_after_a_checkpoint(proc: subprocess.Popen, run: Path, sig: int) -> str:
    """Once the job has written its first checkpoint, send ``sig`` to rank 1; the job must then end
    within 30 s. Returns its stderr (the job is killed if it is still running)."""
    err = ""
    try:
        deadline = time.monotonic() + 120
        while not (run / "last" / "trainer.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.02)
        victim = _rank_pid(proc.pid, 1)
        assert victim is not None, "rank 1 not found"
        os.kill(victim, sig)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return err


@needs_mpi
def test_a_killed_rank_ends_the_job_and_one_process_resumes(tmp_path) -> None:
    run = tmp_path / "run"
    args = ["train", "--model", PLAIN, *ARGS, "--epochs", "12", "--save-every", "5", "--out", str(run)]
    proc = _mpirun(2, args)
    _signal_rank_1_after_a_checkpoint(proc, run, signal.SIGKILL)
    assert proc.returncode != 0
    before = json.loads((run / "last" / "trainer.json").read_text())["position"]
    assert not before["finished"]
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # one process continues the 2-rank run
    after = json.loads((run / "last" / "trainer.json").read_text())["position"]
    assert after["finished"] and after["step"] == 12 * 8 > before["step"]


@needs_mpi
def test_workers_launches_mpirun_and_says_so(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    rc = main(["train", "--model", PLAIN, *ARGS, "--epochs", "1", "--workers", "2",
               "--out", str(tmp_path / "w")])
    assert rc == 0
    assert "training in 2 processes" in capsys.readouterr().err
    assert (tmp_path / "w" / "last" / "trainer.json").is_file()


def test_workers_without_mpi4py_is_one_line(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    rc = main(["train", "--model", PLAIN, *ARGS, "--workers", "2", "--out", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "pip install 'volnet[mpi]'" in err
    assert not (tmp_path / "w").exists()


@needs_mpi
def test_a_hanging_rank_ends_the_job_within_the_watchdog_time(tmp_path) -> None:
    """Rank 1 stopped (SIGSTOP: a hang, not a death): rank 0's watchdog aborts the job after
    VOLNET_MPI_TIMEOUT seconds without a finished step, naming itself; the checkpoint stays loadable."""
    run = tmp_path / "run"
    proc = _mpirun(2, ["train", "--model", PLAIN, *ARGS, "--epochs", "40", "--save-every", "5",
                       "--out", str(run)], timeout_s="4")
    err = _signal_rank_1_after_a_checkpoint(proc, run, signal.SIGSTOP)
    assert proc.returncode != 0
    assert "rank 0: no training step finished in" in err
    assert load_trained(run / "last").net.params


@needs_mpi
def test_workers_reports_a_dead_rank_in_one_line(tmp_path, capsys, monkeypatch) -> None:
    """--workers turns Open MPI's boxed report of a killed rank into one line naming it."""
    import threading

    run = tmp_path / "run"

    def kill_rank_1() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (run / "last" / "trainer.json").is_file():
                victim = _rank_pid(os.getpid(), 1)
                if victim is not None:
                    os.kill(victim, signal.SIGKILL)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_rank_1, daemon=True)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    killer.start()
    rc = main(["train", "--model", PLAIN, *ARGS, "--epochs", "200", "--save-every", "5", "--workers", "2",
               "--out", str(run)])
    killer.join(5)
    err = capsys.readouterr().err
    assert rc != 0
    assert "-----" not in err
    lines = [ln for ln in err.splitlines() if "rank 1" in ln]
    assert len(lines) == 1 and "exited on signal 9" in lines[0] and f"--resume {run}" in lines[0], err
