"""The run directory and its checkpoints: public read/write, every file checked before it is used.

A run directory holds::

    volnet-run.json  the run marker: format, version and the names this run owns (only those are ever
                     replaced or deleted by --overwrite)
    metrics.jsonl    one JSON object per epoch: epoch, train_loss, train_acc, val_loss, val_acc, lr,
                     seconds, images_per_s, step (rewritten atomically after every epoch)
    curves.png       loss and accuracy vs epoch (needs matplotlib)
    last/            checkpoint: model.json + weights.npz (a volnet.io model directory), trainer.json
                     (position, normaliser, class names, config, RNG states, history, optimizer scalars),
                     optimizer.npz (optimizer state arrays); written as a whole (temp directory + rename)
    best/            the same for the best validation accuracy (without optimizer state)
    results.json     test loss/accuracy of ``best/`` when a test set was given

:func:`read_checkpoint` checks a whole checkpoint (trainer.json's fields and types, the model files, the
optimizer arrays, ``best/``) before a resumed run touches anything; every problem is one
:class:`~volnet.errors.ModelFileError` line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volnet.data import Dataset, Normalizer
from volnet.errors import ConfigError, ModelFileError, TrainingError, VolnetError
from volnet.train.config import TrainConfig

CHECKPOINT_FORMAT = "volnet-checkpoint"
CHECKPOINT_VERSION = 1
TRAINER_JSON = "trainer.json"
OPTIMIZER_NPZ = "optimizer.npz"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
RESULTS = "results.json"
CONFUSION = "confusion.png"
STEPS = "steps.jsonl"
REPORT = "report.html"
RUN_MARKER = "volnet-run.json"
RUN_FORMAT = "volnet-run"
#: What a run owns in its directory (the marker lists these; nothing else is ever replaced or deleted).
RUN_FILES = ("last", "best", METRICS, CURVES, RESULTS, CONFUSION, STEPS, REPORT)


def fingerprint(ds: Dataset | None) -> dict[str, Any] | None:
    """Size, image shape and a CRC of the labels: what a resumed run checks its data against."""
    if ds is None:
        return None
    crc = zlib.crc32(np.ascontiguousarray(ds.y).tobytes())
    return {"n": len(ds), "shape": list(ds.shape), "y_crc32": crc}


# ------------------------------------------------------------------------------------------ run directory

STAGE_PREFIX = ".volnet-new-"  # a new run trains here, inside the old run's folder, until its 1st checkpoint
TRASH_PREFIX = ".volnet-old-"  # the old run's files, for the moment of the swap


def run_kind(out: str | os.PathLike[str]) -> str:
    """What the folder ``out`` is: ``"new"`` (absent or empty), ``"run"`` (a volnet run: its marker, or a
    ``last/trainer.json`` of a run made before markers existed) or ``"foreign"`` (anything else)."""
    p = Path(out)
    if not p.exists() and not p.is_symlink():
        return "new"
    if not p.is_dir():
        return "foreign"
    try:
        names = [c.name for c in p.iterdir()]
    except OSError:
        return "foreign"
    if not names:
        return "new"
    if (p / RUN_MARKER).is_file() or (p / "last" / TRAINER_JSON).is_file():
        return "run"
    return "foreign"


def check_out_dir(out: str | os.PathLike[str], overwrite: bool) -> str:
    """Refuse, before anything is built or written, an ``out`` that is not a volnet run and not empty, or
    a run without ``overwrite``. Returns :func:`run_kind`."""
    p = Path(out)
    kind = run_kind(p)
    if kind == "foreign":
        if p.exists() and not p.is_dir():
            raise VolnetError(f"--out {p} is a file, not a folder; choose a new or empty folder")
        first = sorted(c.name for c in p.iterdir())[:3]
        raise VolnetError(f"--out {p} is not empty ({', '.join(first)}, ...) and not a volnet run; volnet "
                          "never replaces files it did not write: choose a new or empty folder")
    if kind == "run" and not overwrite:
        raise VolnetError(f"{p} already holds a run; continue it with --resume {p}, replace it with "
                          "--overwrite or choose another --out")
    return kind


def _is_stale_temp(name: str) -> bool:
    """A temporary name volnet gives a run file while writing it (``.last.<random>.tmp``, ...)."""
    return name.startswith(".") and name.endswith((".tmp", ".old", ".part")) and any(
        name.startswith(f".{n}.") for n in (*RUN_FILES, RUN_MARKER))


def clean_stale(out: Path) -> list[str]:
    """Remove what a killed run left half-written in ``out`` (volnet's own temporary names only: the
    checkpoints themselves are whole, old or new); returns the names removed."""
    gone = []
    for c in out.iterdir() if out.is_dir() else ():
        if _is_stale_temp(c.name) and not c.is_symlink():
            if c.is_dir():
                shutil.rmtree(c, ignore_errors=True)
            else:
                c.unlink(missing_ok=True)
            gone.append(c.name)
    return gone


def write_marker(out: Path) -> None:
    """Write ``out/volnet-run.json``: the names this run owns (what --overwrite may replace)."""
    write_json(out / RUN_MARKER, {"format": RUN_FORMAT, "version": 1, "files": list(RUN_FILES)})


def owned(out: str | os.PathLike[str]) -> list[Path]:
    """The paths in ``out`` that a volnet run wrote: the names its marker lists (only names volnet
    writes are taken from it), the marker, and left-over staging folders. A run made before markers owns
    ``last/``, ``best/`` (each only with a ``trainer.json``) and the run files."""
    p = Path(out)
    names: list[str] = []
    marker = p / RUN_MARKER
    if marker.is_file():
        try:
            doc = json.loads(marker.read_text(encoding="utf-8"))
            listed = doc.get("files", []) if isinstance(doc, dict) else []
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            listed = []
        names = [n for n in listed if isinstance(n, str) and n in RUN_FILES] if isinstance(listed, list) \
            else []
        names.append(RUN_MARKER)
    else:
        names = [n for n in RUN_FILES if n not in ("last", "best") or (p / n / TRAINER_JSON).is_file()]
    out_paths = [p / n for n in dict.fromkeys(names) if (p / n).exists() or (p / n).is_symlink()]
    stale = [c for c in p.iterdir() if c.is_dir() and not c.is_symlink()
             and c.name.startswith((STAGE_PREFIX, TRASH_PREFIX))] if p.is_dir() else []
    return out_paths + stale


def stage_dir(out: Path) -> Path:
    """A fresh staging folder inside the run folder ``out`` (where a replacing run trains at first)."""
    import secrets

    stage = out / f"{STAGE_PREFIX}{secrets.token_hex(4)}"
    stage.mkdir()
    return stage


def replace_run(stage: Path, out: Path) -> None:
    """Swap the new run in ``stage`` for the old run in ``out``: the old run's own files are moved aside,
    the new ones moved in, then the old ones deleted (files of the user's in ``out`` stay as they are).
    A crash in between leaves both copies on disk."""
    import secrets

    trash = out / f"{TRASH_PREFIX}{secrets.token_hex(4)}"
    trash.mkdir()
    for path in owned(out):
        if path != stage and path != trash:
            os.replace(path, trash / path.name)
    for path in stage.iterdir():
        os.replace(path, out / path.name)
    stage.rmdir()
    shutil.rmtree(trash, ignore_errors=True)


# ------------------------------------------------------------------------------------------ writing

def write_checkpoint(path: Path, net: Any, state: dict[str, Any],
                     optimizer: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None) -> Path:
    """Write the checkpoint directory ``path`` as a whole: the model files, ``trainer.json`` (``state``,
    plus the optimizer's scalars) and ``optimizer.npz``; readers see the old checkpoint or the new one.

    Raises TrainingError, leaving ``path`` as it was, when a parameter holds NaN/inf.
    """
    from volnet.atomic import replace_dir, write_file
    from volnet.io import npz_bytes, save

    bad = [k for k, v in net.params.items() if not np.all(np.isfinite(v))]
    if bad:
        raise TrainingError(f"parameter {bad[0]!r} holds NaN/inf: not overwriting {path}; lower the learning "
                            "rate (--lr)")
    doc = dict(state)
    if optimizer is not None:
        doc["optimizer"] = optimizer[0]
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"  # before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        save(net, tmp / "ckpt")
        if optimizer is not None:
            write_file(tmp / "ckpt" / OPTIMIZER_NPZ, npz_bytes(optimizer[1]))
        write_file(tmp / "ckpt" / TRAINER_JSON, text.encode("utf-8"))
        replace_dir(tmp / "ckpt", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_json(path: Path, doc: Any) -> None:
    """One JSON file, atomically (``results.json``, the run marker)."""
    from volnet.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


# ------------------------------------------------------------------------------------------ reading

def read_trainer_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``trainer.json`` of the checkpoint directory ``path``: a JSON object of a known version."""
    from volnet.validate import check_trainer_json

    p = Path(path) / TRAINER_JSON
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as e:
        raise ModelFileError(f"{p}: unreadable checkpoint metadata ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{p}: not a JSON object")
    if doc.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{p}: not a volnet checkpoint (format {doc.get('format')!r})")
    version = doc.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{p}: version must be an integer, got {version!r}")
    if version > CHECKPOINT_VERSION:
        raise ModelFileError(f"{p}: checkpoint version {version} is newer than this volnet; upgrade volnet")
    return check_trainer_json(doc, p)  # every section's types and ranges, no NaN anywhere


def _need(p: Path, where: str, ok: bool, expected: str, value: Any) -> None:
    if not ok:
        r = repr(value)
        raise ModelFileError(f"{p}: {where} must be {expected}, got {r if len(r) < 60 else r[:57] + '...'}; "
                             "the checkpoint is damaged (start the run again with --overwrite)")


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _num_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def check_state(doc: dict[str, Any], p: Path) -> TrainConfig:
    """Check the fields of a ``trainer.json`` a resumed run reads (types and ranges); its TrainConfig."""
    pos = doc.get("position")
    _need(p, "position", isinstance(pos, dict), "an object", pos)
    for k in ("epoch", "batch", "step", "steps_per_epoch"):
        _need(p, f"position.{k}", _count(pos.get(k)), "an integer >= 0", pos.get(k))
    st = doc.get("epoch_stats")
    _need(p, "epoch_stats", isinstance(st, dict), "an object", st)
    for k in ("loss_sum", "seconds", "wall"):
        _need(p, f"epoch_stats.{k}", isinstance(st.get(k), (int, float)) and not isinstance(st.get(k), bool),
              "a number", st.get(k))
    for k in ("correct", "seen"):
        _need(p, f"epoch_stats.{k}", _count(st.get(k)), "an integer >= 0", st.get(k))
    _need(p, "epoch_stats.lr", _num_or_none(st.get("lr")), "a number or null", st.get("lr"))
    hist = doc.get("history")
    _need(p, "history", isinstance(hist, list) and all(isinstance(h, dict) for h in hist),
          "a list of objects", hist)
    best = doc.get("best")
    _need(p, "best", isinstance(best, dict), "an object", best)
    _need(p, "best.acc", _num_or_none(best.get("acc")), "a number or null", best.get("acc"))
    _need(p, "best.epoch", best.get("epoch") is None or _count(best.get("epoch")), "an integer or null",
          best.get("epoch"))
    rng = doc.get("rng")
    _need(p, "rng", isinstance(rng, dict) and isinstance(rng.get("dropout", {}), dict), "an object", rng)
    _need(p, "normalizer", isinstance(doc.get("normalizer"), dict), "an object", doc.get("normalizer"))
    _need(p, "data", isinstance(doc.get("data"), dict), "an object", doc.get("data"))
    _need(p, "info", isinstance(doc.get("info", {}), dict), "an object", doc.get("info"))
    try:
        Normalizer.from_dict(doc["normalizer"])
    except (VolnetError, TypeError, ValueError, KeyError) as e:
        raise ModelFileError(f"{p}: normalizer: {e}") from None
    try:
        return TrainConfig.from_dict(doc.get("config"))
    except ConfigError as e:
        raise ModelFileError(f"{p}: config: {e}; the checkpoint is damaged or was made by another "
                             "volnet") from None
    except TypeError as e:
        raise ModelFileError(f"{p}: config: {e}") from None


@dataclass
class Checkpoint:
    """A checked checkpoint: ``path`` (the ``last/`` directory), ``doc`` (trainer.json), ``config``, the
    loaded ``net``, the optimizer arrays and ``best`` (the arrays of ``best/``, or None)."""

    path: Path
    doc: dict[str, Any]
    config: TrainConfig
    net: Any
    optimizer_arrays: dict[str, np.ndarray]
    best: dict[str, np.ndarray] | None


def find_checkpoint(run: str | os.PathLike[str]) -> Path:
    """``run/last`` (or ``run`` itself when it is a checkpoint directory); one line when there is none."""
    p = Path(run)
    ck = p / "last" if (p / "last" / TRAINER_JSON).is_file() else p
    if not (ck / TRAINER_JSON).is_file():
        if not p.exists():
            raise ModelFileError(f"cannot resume: {p} does not exist")
        raise ModelFileError(f"cannot resume: no checkpoint in {p} (expected {p}/last/{TRAINER_JSON})")
    return ck


def read_checkpoint(run: str | os.PathLike[str]) -> Checkpoint:
    """Read and check everything a resumed run needs from ``run/last`` (and ``run/best``) up front."""
    from volnet.io import load, read_npz

    ck = find_checkpoint(run)
    doc = read_trainer_json(ck)
    config = check_state(doc, ck / TRAINER_JSON)
    if not isinstance(doc.get("optimizer"), dict) or not (ck / OPTIMIZER_NPZ).is_file():
        raise ModelFileError(f"cannot resume from {ck}: it has no optimizer state (a best/ copy?); "
                             f"resume from the run's last/")
    net = load(ck)
    arrays = read_npz(ck / OPTIMIZER_NPZ)
    best = None
    best_dir = ck.parent / "best"
    if doc["best"]["acc"] is not None and (best_dir / "model.json").is_file():
        bnet = load(best_dir)
        mine = {**net.params, **net.buffers}
        theirs = {**bnet.params, **bnet.buffers}
        if set(mine) != set(theirs) or any(mine[k].shape != theirs[k].shape for k in mine):
            raise ModelFileError(f"{best_dir} holds another architecture than {ck}; the run is damaged "
                                 "(start it again with --overwrite)")
        best = {k: v.copy() for k, v in theirs.items()}
    return Checkpoint(ck, doc, config, net, arrays, best)


# ------------------------------------------------------------------------------------------ models

@dataclass
class TrainedModel:
    """A model for inference with what preprocessing it needs (see :func:`load_trained`).

    ``net`` (built, eval mode), ``normalizer`` (None: inputs are used as they are), ``classes`` (None:
    class indices), ``path`` (the model directory), ``run_dir`` (its run, if any), ``info`` (the
    ``trainer.json`` contents or ``{}``).
    """

    net: Any
    normalizer: Normalizer | None
    classes: list[str] | None
    path: Path
    run_dir: Path | None
    info: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.net.input_shape)

    def class_names(self, k: int) -> list[str]:
        """``classes`` or ``["0", "1", ...]`` for ``k`` outputs."""
        return list(self.classes) if self.classes and len(self.classes) == k else [str(i) for i in range(k)]

    def probabilities(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, K) for raw images ``x`` (N, C, H, W) in [0, 1] (normalised here)."""
        from volnet.train.evaluate import probabilities

        return probabilities(self.net, x, self.normalizer, batch_size)


def model_dir(path: str | os.PathLike[str]) -> Path:
    """The model directory of ``path``: itself, or a run's ``best/`` (else ``last/``)."""
    path = Path(path)
    if (path / "model.json").is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / "model.json").is_file():
            return path / sub
    if not path.exists():
        raise ModelFileError(f"no model at {path}: the directory does not exist")
    raise ModelFileError(f"{path} is neither a model directory (model.json + weights.npz) nor a training run "
                         "(best/ or last/ inside); pass runs/NAME or runs/NAME/best")


def load_trained(path: str | os.PathLike[str]) -> TrainedModel:
    """Load a model for evaluation/prediction from a run directory (uses ``best/``, else ``last/``), a
    checkpoint directory or a plain model directory (:func:`volnet.io.save`).

    The normaliser and class names come from the checkpoint's ``trainer.json`` when there is one, else
    from ``model.json``'s ``meta`` (:func:`volnet.io.load_meta`; an imported ONNX file's).
    Raises ModelFileError (one line) when nothing loadable is there.
    """
    from volnet.io import load, load_meta

    mdir = model_dir(path)
    net = load(mdir)
    net.eval()
    info: dict[str, Any] = read_trainer_json(mdir) if (mdir / TRAINER_JSON).is_file() else {}
    meta = load_meta(mdir)
    where = mdir / TRAINER_JSON if info.get("normalizer") else mdir / "model.json"
    stored = info.get("normalizer") or meta.get("normalizer")
    try:
        norm = Normalizer.from_dict(stored) if stored else None
    except (VolnetError, TypeError, ValueError, KeyError) as e:
        raise ModelFileError(f"{where}: normalizer: {e}") from None
    names = info.get("classes") if isinstance(info.get("classes"), list) else meta.get("classes")
    classes = [str(c) for c in names] if names else None
    run_dir = mdir.parent if (mdir.parent / METRICS).is_file() or info else None
    return TrainedModel(net, norm, classes, mdir, run_dir, info)


def write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
    """Write ``records`` as JSON lines (``metrics.jsonl``, ``steps.jsonl``), atomically: a reader sees the
    old file or the new one, never half a line. NaN/inf are refused (JSON has no such numbers)."""
    from volnet.atomic import atomic_write_text

    atomic_write_text(path, _jsonl(records))


def append_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
    """Append ``records`` to a JSON-lines file in one ``write`` (a log that grows: ``steps.jsonl``). A
    crash can leave a torn last line, which :func:`read_steps` skips; :func:`write_jsonl` rewrites the
    file whole where it must be exact (a resumed run). NaN/inf are refused."""
    text = _jsonl(records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)


def read_steps(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-step records of a run's ``steps.jsonl`` (``[]`` when there is none); a torn line (a crash
    in the middle of an append, or a live reader racing one) is skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / STEPS
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The epoch records of a ``metrics.jsonl`` (a run directory or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
