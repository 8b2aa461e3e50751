"""Progress of long loops (training epochs, validation, ``volnet evaluate``), wherever the output goes.

:func:`progress` picks one of three displays:

- a **terminal** (the stream is a tty): a tqdm bar rewritten in place, with elapsed time and ETA, that
  fits the terminal's width (the bar shrinks first, then the last statistics are left out; no wrapped
  stacks of half lines on a 50-column terminal);
- a **notebook** (Jupyter): tqdm's widget bar (``tqdm.notebook``) when ipywidgets is installed, else the
  text bar, which Jupyter also rewrites in place;
- anything else (a log file, CI, a pipe): one plain line every ``interval`` seconds (default 30) or
  ``every`` steps, e.g. ``epoch 2/5: 430/860 (50%), 0:42 elapsed, ETA 0:42, loss 0.3310, acc 88.1%``,
  instead of minutes of silence or a file full of carriage returns.

tqdm rather than a hand-written bar: it is well kept, measures rates and ETA robustly, handles terminal
width and notebooks; volnet only decides which display fits and formats the statistics.

Example::

    with progress(len(batches), "epoch 1/5") as bar:
        for i, b in enumerate(batches, 1):
            ...
            bar.update(i, loss=0.331, acc="88.1%")
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["Progress", "format_duration", "format_stats", "in_notebook", "progress"]


def format_duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``: ``format_duration(42) == "0:42"``, ``format_duration(3723) == "1:02:03"``."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def format_stats(stats: Mapping[str, Any]) -> list[str]:
    """``["loss 0.3310", "acc 88.1%"]``: floats with 4 significant digits, everything else as given."""
    return [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()]


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython's ZMQ shell)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - a broken IPython
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _width(stream: Any) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return shutil.get_terminal_size((80, 24)).columns


class Progress:
    """The display-independent part: ``update(done, **stats)``, ``close()``, a context manager.

    This base class shows nothing (``mode="off"``, ``--quiet``).
    """

    def __init__(self, total: int, desc: str = "") -> None:
        self.total, self.desc = int(total), desc
        self.done = 0
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self) -> float | None:
        """Seconds left at the mean rate so far (None before the first step)."""
        if self.done <= 0 or self.total <= 0:
            return None
        return self.elapsed() * max(0, self.total - self.done) / self.done

    def update(self, done: int, **stats: Any) -> None:
        """``done`` of ``total`` steps finished; ``stats`` (name -> value) are shown after the counts."""
        self.done = int(done)

    def close(self) -> None:
        """End the display (a bar clears its line; the caller prints its own summary line)."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LineProgress(Progress):
    """One plain line every ``interval`` seconds or ``every`` steps (logs, CI, pipes)."""

    def __init__(self, total: int, desc: str = "", stream: TextIO | None = None, interval: float = 30.0,
                 every: int | None = None) -> None:
        super().__init__(total, desc)
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.every = float(interval), every
        self._last_t, self._last_n = self.start, 0

    def line(self, **stats: Any) -> str:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = self.eta()
        parts = [f"{self.done}/{self.total}{pct}", f"{format_duration(self.elapsed())} elapsed"]
        if eta is not None and self.done < self.total:
            parts.append(f"ETA {format_duration(eta)}")
        head = f"{self.desc}: " if self.desc else ""
        return head + ", ".join(parts + format_stats(stats))

    def update(self, done: int, **stats: Any) -> None:
        super().update(done, **stats)
        now = time.perf_counter()
        due = now - self._last_t >= self.interval or (
            self.every is not None and self.done - self._last_n >= self.every)
        if due and self.done < self.total:
            self.stream.write(self.line(**stats) + "\n")
            self.stream.flush()
            self._last_t, self._last_n = now, self.done


class BarProgress(Progress):
    """A tqdm bar (terminal or notebook text bar), fitted to ``width`` columns (None: the terminal's)."""

    FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"

    def __init__(self, total: int, desc: str = "", stream: TextIO | None = None, width: int | None = None,
                 widget: bool = False) -> None:
        super().__init__(total, desc)
        self.stream = stream if stream is not None else sys.stderr
        self.fixed_width = width
        if widget:
            from tqdm.notebook import tqdm as bar_cls
        else:
            from tqdm import tqdm as bar_cls
        self.bar = bar_cls(total=self.total, desc=desc, file=None if widget else self.stream,
                           leave=False, mininterval=0.1, bar_format=None if widget else self.FORMAT,
                           ncols=None if widget else self.width(), dynamic_ncols=False)
        self.widget = widget

    def width(self) -> int:
        return self.fixed_width if self.fixed_width is not None else _width(self.stream)

    def fit(self, stats: Mapping[str, Any], width: int) -> str:
        """The statistics that fit after the counts in ``width`` columns, keeping a bar of >= 5 cells
        when there is room for one (the bar goes first, then statistics from the last)."""
        base = len(self.desc) + len(f" 100%|| {self.total}/{self.total} [00:00<00:00]")
        items = format_stats(stats)
        while items and base + 5 + len(", " + ", ".join(items)) > width:
            items.pop()
        return ", ".join(items)

    def update(self, done: int, **stats: Any) -> None:
        step = int(done) - self.done
        super().update(done, **stats)
        if not self.widget:
            self.bar.ncols = self.width()
        self.bar.set_postfix_str(self.fit(stats, self.bar.ncols or 10_000) if not self.widget
                                 else ", ".join(format_stats(stats)), refresh=False)
        if step > 0:
            self.bar.update(step)
        elif step < 0:  # restarted (a resumed epoch shows its position)
            self.bar.n = self.done
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def progress(total: int, desc: str = "", *, stream: TextIO | None = None, mode: str = "auto",
             interval: float = 30.0, every: int | None = None, width: int | None = None) -> Progress:
    """The progress display for ``total`` steps labelled ``desc``.

    ``mode``: ``"auto"`` (a notebook's bar in Jupyter, a tqdm bar on a terminal, lines otherwise),
    ``"bar"``, ``"lines"``, ``"notebook"`` or ``"off"``. ``interval``/``every``: how often the line
    display writes (seconds / steps). ``width``: the bar's columns (default: the terminal's).
    """
    stream = stream if stream is not None else sys.stderr
    if mode not in ("auto", "bar", "lines", "notebook", "off"):
        raise ValueError(f"progress mode must be auto, bar, lines, notebook or off, got {mode!r}")
    if mode == "auto":
        mode = "notebook" if in_notebook() else "bar" if _isatty(stream) else "lines"
    if mode == "off":
        return Progress(total, desc)
    if mode == "lines":
        return LineProgress(total, desc, stream, interval, every)
    if mode == "notebook":
        try:
            import ipywidgets  # noqa: F401  (tqdm's widget bar needs it)
        except ImportError:
            return BarProgress(total, desc, stream, width=width or 100)  # Jupyter rewrites '\r' lines too
        return BarProgress(total, desc, stream, widget=True)
    return BarProgress(total, desc, stream, width=width)
