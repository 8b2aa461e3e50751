"""kill -9 in the middle of ``volnet train``, then ``--resume``: the final weights are bit-identical to an
uninterrupted run's (the checkpoints are whole, the sample order, augmentation, dropout draws and learning
rate are pure functions of the position)."""

from __future__ import annotations

import json
import os
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
NET = "INPUT [8x8x1] -> CONV3-6 -> BN -> RELU -> POOL2 -> FC-16 -> DROPOUT0.3 -> RELU -> FC-4"
ARGS = ["train", "--model", NET, "--data", "synthetic", "--num-classes", "4", "--limit-train", "480",
        "--val", "32", "--epochs", "3", "--batch", "16", "--save-every", "3", "--augment", "flip+crop",
        "--quiet"]


def _step(run: Path) -> int:
    try:
        return int(json.loads((run / "last" / "trainer.json").read_text())["position"]["step"])
    except (OSError, ValueError, KeyError):
        return -1


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("kill_after_step", [4, 40])  # in the first epoch; in the second, after a best/
def test_kill_9_then_resume_is_bit_identical(kill_after_step, straight, tmp_path) -> None:
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "volnet.cli.main", *ARGS, "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _step(run) < kill_after_step and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    a, b = load_trained(straight / "last"), load_trained(run / "last")
    for k, v in {**a.net.params, **a.net.buffers}.items():
        assert np.array_equal(v, {**b.net.params, **b.net.buffers}[k]), k
    hist = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    strip = lambda hs: [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in hs]  # noqa: E731
    assert strip(hist) == strip(ref)
    assert not [p for p in os.listdir(run) if p.startswith(".")], "temporary files left behind"


def _spawn(args: list[str], limit_bytes: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def limit() -> None:  # in the child: files may not grow beyond limit_bytes (EFBIG, as a full disk)
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen([sys.executable, "-m", "volnet.cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit if limit_bytes is not None else None)


def test_twenty_kills_at_random_moments_then_resume_is_bit_identical(straight, tmp_path) -> None:
    """kill -9 twenty times at seeded random moments (in training steps, between them, and while
    checkpoints are written: one every 3 steps), resuming after each; the end equals one straight run."""
    rng = np.random.default_rng(11)
    run = tmp_path / "killed20"
    proc = _spawn([*ARGS, "--out", str(run)])
    kills, seen = 0, []
    while kills < 20:
        start, deadline = _step(run), time.monotonic() + 120
        while _step(run) <= start and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)  # this process trains (it wrote a checkpoint): kill it a moment later
        time.sleep(float(rng.uniform(0.0, 0.03)))
        seen.append(_step(run))
        if proc.poll() is not None:
            break  # the run finished between two kills
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        proc = _spawn(["train", "--resume", str(run), "--quiet"])
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert kills >= 10, f"only {kills} kills landed before the run ended (at steps {seen})"
    a, b = load_trained(straight / "last"), load_trained(run / "last")
    for k, v in {**a.net.params, **a.net.buffers}.items():
        assert np.array_equal(v, {**b.net.params, **b.net.buffers}[k]), k
    assert not [p for p in os.listdir(run) if p.startswith(".")], "temporary files left behind"


@pytest.mark.parametrize("limit_kb", [1, 8, 12, 40])  # every file fails; weights; optimizer; curves
def test_a_full_disk_fails_in_one_line_and_keeps_the_last_checkpoint(straight, tmp_path, limit_kb) -> None:
    """A resumed run whose files may not grow past limit_kb (RLIMIT_FSIZE: writes fail as on a full disk)
    ends with one error line, exit 2, and leaves the previous checkpoint loadable and resumable."""
    import shutil

    run = tmp_path / "full"
    shutil.copytree(straight, run)  # its checkpoint, resumed for two more epochs
    before = load_trained(run / "last")
    proc = _spawn(["train", "--resume", str(run), "--epochs", "5", "--quiet"], limit_bytes=limit_kb * 1024)
    err = proc.communicate(timeout=300)[1]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "too large" in lines[0] or "larger than" in lines[0] or "space" in lines[0], lines[0]
    after = load_trained(run / "last")  # whole: the old checkpoint or a newer complete one
    assert after.net.params.keys() == before.net.params.keys()
    assert main(["train", "--resume", str(run), "--epochs", "5", "--quiet"]) == 0
