"""The report page of a run directory: what ``volnet report`` writes and ``volnet train --live`` serves.

Sections: the net (spec and summary table), the curves (per-step loss, per-epoch loss and accuracy,
learning rate, best epoch; a PNG in the report, redrawn as SVG by the live page's script), the test set's
confusion matrix with per-class recall and the most confident mistakes, the first layer's filters, the
run's settings, timing and machine. Everything comes from the run's own files (``metrics.jsonl``,
``steps.jsonl``, ``best/`` or ``last/``, ``results.json``) and, for the confusion matrix, the run's
dataset as the run names it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from volnet.errors import VolnetError

_TEMPLATE = Template((Path(__file__).parent / "template.html").read_text(encoding="utf-8"))
_SCRIPT = (Path(__file__).parent / "live.js").read_text(encoding="utf-8")


def _img(png: bytes | None, alt: str, ident: str = "") -> str:
    if png is None:
        return f"<p class='note'>{html.escape(alt)}: not drawn (matplotlib is not installed)</p>"
    b64 = base64.b64encode(png).decode("ascii")
    idattr = f" id='{ident}'" if ident else ""
    return f"<img{idattr} alt='{html.escape(alt)}' src='data:image/png;base64,{b64}'>"


def _table(rows: list[tuple[str, Any]], head: tuple[str, ...] = ()) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{'<tr>' + th + '</tr>' if th else ''}{body}</table>"


def _read_json(p: Path) -> Any:
    from volnet.validate import read_json

    try:
        return read_json(p) if p.is_file() else None
    except (VolnetError, OSError):
        return None


def run_data(run: str | os.PathLike[str]) -> dict[str, Any]:
    """What the curves need, from the run's own files: ``{"history": metrics.jsonl records, "steps":
    steps.jsonl records, "done": results.json exists}`` (missing or half-written files read as empty)."""
    from volnet.train.checkpoint import METRICS, RESULTS, read_steps

    run = Path(run)
    history: list[dict[str, Any]] = []
    p = run / METRICS
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
                history.append(rec)
    return {"history": history, "steps": read_steps(run), "done": (run / RESULTS).is_file()}


def _machine() -> list[tuple[str, Any]]:
    import numba

    return [("python", platform.python_version()), ("numpy", np.__version__), ("numba", numba.__version__),
            ("platform", platform.platform()), ("processor", platform.machine()),
            ("CPU cores", os.cpu_count())]


def _settings(info: dict[str, Any]) -> list[tuple[str, Any]]:
    cfg = info.get("config") or {}
    args = (info.get("info") or {}).get("args") or {}
    rows = [(k, v) for k, v in sorted(cfg.items()) if v is not None and not isinstance(v, (dict, list))]
    rows += [(f"--{k.replace('_', '-')}", v) for k, v in sorted(args.items())
             if k in ("data_used", "data_dir", "val", "limit_train", "augment", "init", "freeze") and v]
    return rows


def _timing(history: list[dict[str, Any]], results: dict[str, Any] | None) -> list[tuple[str, Any]]:
    rows = [(f"epoch {h['epoch']}", f"{h.get('seconds', 0):.1f} s, {h.get('images_per_s', 0):,.0f} images/s")
            for h in history]
    total = sum(float(h.get("seconds") or 0) for h in history)
    rows.append(("total", f"{total:.1f} s ({total / 60:.1f} min)"))
    return rows


def _evaluation_section(model: Any, info: dict[str, Any], quiet: bool) -> tuple[str, str]:
    """(confusion + recall html, mistakes html) on the run's test set (else validation set)."""
    from volnet.cli.train import load_data
    from volnet.train import plots
    from volnet.train.evaluate import evaluate

    args = (info.get("info") or {}).get("args") or {}
    if not args.get("data_used"):
        return "<p class='note'>the run does not name its dataset: no confusion matrix</p>", ""
    try:
        _, val, test, used = load_data(args["data_used"], args.get("data_dir"), val=args.get("val"),
                                       seed=int(args.get("seed") or 0), limit_train=args.get("limit_train"),
                                       num_classes=args.get("num_classes"), download=False, quiet=True,
                                       channels=args.get("channels"))
    except (VolnetError, OSError) as e:
        what = html.escape(str(args["data_used"]))
        return f"<p class='note'>dataset {what} not readable here ({html.escape(str(e))}): no confusion " \
               "matrix</p>", ""
    ds, which = (test, "test") if test is not None else (val, "validation")
    if ds is None:
        return "<p class='note'>the run has no test or validation set</p>", ""
    ev = evaluate(model.net, ds.x, ds.y, model.normalizer)
    k = ev.probs.shape[1]
    names = model.class_names(k)
    cm = ev.confusion(k)
    recall = [(names[i], int(cm[i].sum()), f"{100 * cm[i, i] / max(1, cm[i].sum()):.1f}%") for i in range(k)]
    conf = (f"<p>{which} set ({used}, {len(ds)} images): accuracy <b>{100 * ev.acc:.2f}%</b>, loss "
            f"{ev.loss:.4f}</p><div class='row'>"
            f"{_img(plots.confusion_png(cm, names), 'confusion matrix', 'confusion')}"
            f"{_table(recall, ('class', 'images', 'recall'))}</div>")
    wrong = np.flatnonzero(ev.y_pred != ev.y_true)
    conf_p = ev.probs[wrong, ev.y_pred[wrong]]
    top = wrong[np.argsort(-conf_p, kind="stable")[:16]]
    if not len(top):
        return conf, "<p>no mistakes</p>"
    caps = [f"{names[ev.y_true[i]]} -> {names[ev.y_pred[i]]}\n{100 * ev.probs[i, ev.y_pred[i]]:.0f}%"
            for i in top]
    grid = plots.images_png([ds.x[i] for i in top], caps)
    return conf, (f"<p>the {len(top)} mistakes the net was surest of (true -> predicted, its probability)</p>"
                  + _img(grid, "most confident mistakes", "mistakes"))


def _page(title: str, body: dict[str, str], live: bool, data: dict[str, Any]) -> str:
    return _TEMPLATE.substitute(
        title=html.escape(title), live="true" if live else "false",
        data=json.dumps(data, allow_nan=False).replace("</", "<\\/"), script=_SCRIPT, **body)


def build_report(run: str | os.PathLike[str], quiet: bool = True) -> str:
    """The HTML text of the report of training run ``run`` (a run directory with ``best/`` or ``last/``)."""
    from volnet import viz
    from volnet.summary import summary
    from volnet.train import load_trained, plots
    from volnet.train.checkpoint import RESULTS, model_dir, read_trainer_json

    run = Path(run)
    mdir = model_dir(run)
    if mdir == run:
        raise VolnetError(f"{run} is a model directory, not a training run; pass the run's directory "
                          "(with metrics.jsonl, best/, last/)")
    model = load_trained(run)
    info = read_trainer_json(mdir) if (mdir / "trainer.json").is_file() else {}
    data = run_data(run)
    history = data["history"]
    results = _read_json(run / RESULTS)
    test_acc = results.get("test_acc") if isinstance(results, dict) else None
    title = plots.curves_title(info.get("info"), history, test_acc)
    best = plots.best_epoch(history)
    rows: list[tuple[str, Any]] = [
        ("model", model.net.spec()), ("parameters", f"{model.net.num_params():,}"),
        ("epochs", len(history)), ("best epoch", best if best is not None else "-")]
    if history:
        last = history[-1]
        rows += [("final train acc", f"{100 * last['train_acc']:.2f}%")]
        if last.get("val_acc") is not None:
            top = max(h["val_acc"] for h in history if h.get("val_acc") is not None)
            rows += [("best val acc", f"{100 * top:.2f}%")]
    if test_acc is not None:
        rows.append(("test acc (best model)", f"{100 * test_acc:.2f}%"))
    try:
        name, w = viz.filters(model.net)
        filt = _img(plots.filters_png(w, f"{name}:"), "first-layer filters", "filters")
    except VolnetError as e:
        filt = f"<p class='note'>{html.escape(str(e))}</p>"
    conf, mistakes = _evaluation_section(model, info, quiet)
    body = {
        "summary": _table(rows),
        "summary_table": f"<pre>{html.escape(str(summary(model.net, model.input_shape)))}</pre>",
        "curves": _img(plots.curves_png(history, data["steps"], title), "training curves", "curves-png"),
        "confusion": conf, "mistakes": mistakes, "filters": filt,
        "settings": _table(_settings(info), ("setting", "value")),
        "timing": _table(_timing(history, results), ("epoch", "time")),
        "machine": _table(_machine(), ("", "")) + "<p class='note'>the machine this report was made on</p>",
    }
    return _page(f"volnet report: {run.name}", body, False, data)


def live_page(run: str | os.PathLike[str], spec: str = "") -> str:
    """The live view: the report's layout with the curves drawn (and redrawn every second) from
    ``/data.json``; the other sections say they come with ``volnet report`` after training."""
    later = "<p class='note'>written by <code>volnet report RUN_DIR</code> after training</p>"
    body = {"summary": _table([("model", spec), ("run", str(run))]), "summary_table": "",
            "curves": "", "confusion": later, "mistakes": later, "filters": later, "settings": later,
            "timing": later, "machine": _table(_machine(), ("", ""))}
    return _page(f"volnet live: {Path(run).name}", body, True, run_data(run))


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write ``report.html`` (default inside the run) atomically; returns its path."""
    from volnet.atomic import atomic_write_text
    from volnet.train.checkpoint import REPORT

    out = Path(out) if out is not None else Path(run) / REPORT
    atomic_write_text(out, build_report(run))
    return out

