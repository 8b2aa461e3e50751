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
