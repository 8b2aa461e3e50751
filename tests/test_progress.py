"""volnet.progress: a line every N steps/seconds off a terminal, a tqdm bar that fits the terminal width
on one, elapsed time and ETA in both."""

from __future__ import annotations

import io
import re

import pytest

from volnet.progress import BarProgress, LineProgress, Progress, format_duration, progress

STATS = {"loss": 0.33104, "acc": "88.1%", "img/s": "1012"}


def test_durations() -> None:
    assert [format_duration(s) for s in (0, 42, 61.4, 3723)] == ["0:00", "0:42", "1:01", "1:02:03"]


def test_auto_mode_off_a_terminal_writes_plain_lines_every_n_steps() -> None:
    out = io.StringIO()
    p = progress(10, "epoch 2/5", stream=out, every=4, interval=1e9)
    assert isinstance(p, LineProgress)
    with p:
        for i in range(1, 11):
            p.update(i, **STATS)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()  # at 4 and 8; the caller prints the end
    assert lines[0].startswith("epoch 2/5: 4/10 (40%), 0:00 elapsed, ETA 0:00, loss 0.331, acc 88.1%")


def test_lines_every_interval_seconds(monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr("volnet.progress.time.perf_counter", lambda: now[0])
    out = io.StringIO()
    p = progress(100, "val", stream=out, mode="lines", interval=25)
    for i in range(1, 8):  # one step every 10 s: a line at 30 s and at 60 s
        now[0] = 10.0 * i
        p.update(i)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and re.match(r"val: \d/100 \(\d%\), 0:\d\d elapsed, ETA \d+:\d\d$", lines[0])


@pytest.mark.parametrize("width", [50, 80, 160])
def test_bar_fits_the_terminal_width(width: int) -> None:
    out = io.StringIO()
    p = progress(860, "epoch 2/10", stream=out, mode="bar", width=width)
    assert isinstance(p, BarProgress)
    for i in (1, 430, 860):
        p.update(i, **STATS)
        p.bar.refresh()
    p.close()
    shown = [seg.rstrip("\n") for seg in out.getvalue().split("\r") if seg.strip()]
    assert shown and all(len(s) <= width for s in shown), [len(s) for s in shown]
    assert any("430/860" in s and "<" in s for s in shown)  # counts, elapsed < ETA
    mid = next(s for s in shown if "430/860" in s)
    if width >= 160:
        assert "loss 0.331, acc 88.1%, img/s 1012" in mid
    if width == 50:
        assert "img/s" not in mid  # statistics are dropped from the end instead of wrapping


def test_off_shows_nothing_and_bad_mode_is_an_error() -> None:
    out = io.StringIO()
    p = progress(5, "x", stream=out, mode="off")
    assert type(p) is Progress
    p.update(3, loss=1.0)
    p.close()
    assert out.getvalue() == "" and p.done == 3
    with pytest.raises(ValueError, match="progress mode"):
        progress(5, mode="fancy")


def test_evaluate_shows_progress_and_the_same_numbers(capsys) -> None:
    import numpy as np

    import volnet
    from volnet.train import evaluate

    net = volnet.build("INPUT [4x4x1] -> FC-3", seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, 50)
    quiet = evaluate(net, x, y, batch_size=8)
    assert capsys.readouterr().err == ""
    shown = evaluate(net, x, y, batch_size=8, progress="bar", desc="val")
    err = capsys.readouterr().err
    assert "val" in err and "/50 [" in err  # tqdm draws at most every 0.1 s: the first state here
    assert shown.acc == quiet.acc and shown.loss == quiet.loss
    assert np.array_equal(shown.probs, quiet.probs)
