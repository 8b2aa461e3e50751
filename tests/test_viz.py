"""Seeing inside a net: ``steps.jsonl`` and ``curves.png``, ``forward(keep=...)``, ``volnet show``
(filters, activations, occlusion, saliency), ``volnet report`` and ``volnet train --live``, the last two
opened in a real headless browser (Debian ``chromium`` + ``chromium-driver``, driven by selenium)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from volnet import Add, Graph, Sequential
from volnet.cli.main import main
from volnet.errors import VolnetError
from volnet.layers import FC, Conv, Pool, ReLU

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

SPEC = "INPUT [8x8x1] -> CONV3-8 -> RELU -> POOL2 -> FC-32 -> RELU -> FC-10"


def _train(out: Path, seed: int, epochs: int) -> Path:
    rc = main(["train", "--model", SPEC, "--data", "digits", "--epochs", str(epochs), "--batch", "32",
               "--lr", "3e-3", "--val", "200", "--seed", str(seed), "--out", str(out), "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two small nets trained on digits (about 2 s each): different seeds and lengths."""
    pytest.importorskip("sklearn")
    root = tmp_path_factory.mktemp("viz")
    return _train(root / "a", 0, 3), _train(root / "b", 1, 2)


@pytest.fixture(scope="session")
def digit_png(tmp_path_factory) -> Path:
    from sklearn.datasets import load_digits

    p = tmp_path_factory.mktemp("img") / "digit.png"
    img = load_digits().images[3] * (255 / 16)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(p)
    return p


def _png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:4] == b"\x89PNG"
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def _nonblank(a: np.ndarray) -> None:
    assert a.std() > 10, "image is (nearly) one colour"
    assert (np.abs(a - a.reshape(-1, 3).mean(0)).sum(-1) > 30).mean() > 0.01, "too few drawn pixels"


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc: int, err: str) -> str:
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], err
    return lines[0]


# ------------------------------------------------------------------------ steps.jsonl and curves.png

def test_steps_jsonl_records_the_loss_per_step(runs) -> None:
    a, _ = runs
    recs = [json.loads(line) for line in (a / "steps.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs]
    assert steps == sorted(steps) and steps[-1] == metrics[-1]["step"] and len(recs) >= 3 * 10
    assert all(set(r) >= {"step", "epoch", "loss", "acc", "lr", "seconds"} for r in recs)
    assert recs[-1]["epoch"] == pytest.approx(3.0) and recs[0]["epoch"] < 0.1
    early = np.mean([r["loss"] for r in recs[:5]])
    late = np.mean([r["loss"] for r in recs[-5:]])
    assert late < early  # the net learned
    assert json.loads((a / "volnet-run.json").read_text())  # the marker owns steps.jsonl
    assert "steps.jsonl" in (a / "volnet-run.json").read_text()


def test_curves_png_has_steps_lr_best_epoch(runs, tmp_path) -> None:
    from volnet.train.plots import best_epoch, curves_png

    a, _ = runs
    img = _png(a / "curves.png")
    assert img.shape[:2] == (400, 1000)
    _nonblank(img)
    history = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert best_epoch(history) == max(history, key=lambda h: h["val_acc"])["epoch"]
    # the per-step loss and the title are drawn: the picture differs from one without them
    steps = [json.loads(line) for line in (a / "steps.jsonl").read_text().splitlines()]
    with_steps = curves_png(history, steps, "t")
    without = curves_png(history, None, None)
    assert with_steps != without
    # a one-epoch run draws a line (the steps), not two lone dots
    one = np.asarray(Image.open(io.BytesIO(curves_png(history[:1], steps[:12]))).convert("RGB"), float)
    lone = np.asarray(Image.open(io.BytesIO(curves_png(history[:1], None))).convert("RGB"), float)
    assert (np.abs(one - lone).sum(-1) > 30).sum() > 200


def test_curves_title_ends_with_the_test_accuracy(tmp_path, capsys, monkeypatch) -> None:
    pytest.importorskip("sklearn")
    import volnet.train.callbacks as cb

    titles: list[str] = []
    real = cb.plot_curves
    monkeypatch.setattr(cb, "plot_curves", lambda *a, **k: titles.append(k["title"]) or real(*a, **k))
    rc, _, err = _run(capsys, "train", "--model", SPEC, "--data", "digits", "--epochs", "2", "--limit-train",
                      "300", "--out", tmp_path / "r", "--quiet")
    assert rc == 0, err
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert len(titles) == 3 and all("val acc" in t for t in titles[:2])  # after each epoch
    assert titles[-1].endswith(f"test acc {100 * res['test_acc']:.2f}%"), titles[-1]  # after the test


# ------------------------------------------------------------------------------- forward(keep=...)

def test_forward_keep_returns_named_activations() -> None:
    net = Sequential([Conv(4, 3, pad=1), ReLU(), Pool(2), FC(5)], input_shape=(2, 6, 6))
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)
    out, acts = net.forward(x, train=False, keep=["conv1", "pool1"])
    np.testing.assert_array_equal(out, net.forward(x, train=False))
    np.testing.assert_allclose(acts["conv1"], net.until("conv1").forward(x, train=False))
    assert acts["pool1"].shape == (3, 4, 3, 3) and list(acts) == ["conv1", "pool1"]
    with pytest.raises(VolnetError, match="unknown layer name 'conv9'; this net's layers: conv1, relu1, "
                       "pool1"):
        net.forward(x, keep=["conv9"])


def test_forward_keep_in_a_graph_and_nested() -> None:
    inner = Sequential([Conv(4, 3, pad=1), ReLU()])
    g = Graph()
    g.add("stem", Conv(4, 3, pad=1))
    g.add("block", inner)
    g.add("sum", Add(), ["block", "stem"])
    g.build((2, 5, 5))
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)
    out, acts = g.forward(x, train=False, keep=["stem", "block.relu1", "sum"])
    np.testing.assert_allclose(acts["sum"], out)
    np.testing.assert_allclose(acts["block.relu1"] + acts["stem"], out, rtol=1e-6)
    assert "block.conv1" in g.layer_names()


# ------------------------------------------------------------------------------------- volnet show

@pytest.mark.parametrize("what", ["filters", "activations", "occlusion", "saliency"])
def test_show_draws_each_picture_and_differs_between_models(runs, digit_png, tmp_path, capsys, what) -> None:
    pics = []
    for run in runs:
        out = tmp_path / f"{run.name}.png"
        img = [] if what == "filters" else [digit_png]
        rc, _, err = _run(capsys, "show", what, run, *img, "-o", out)
        assert rc == 0, err
        assert f"wrote {out}" in err
        a = _png(out)
        assert a.shape[0] >= 150 and a.shape[1] >= 300
        _nonblank(a)
        pics.append(a)
    assert pics[0].shape != pics[1].shape or np.abs(pics[0] - pics[1]).mean() > 0.5


def test_trained_filters_are_not_their_initialisation(runs, tmp_path) -> None:
    """The first-layer filters after training differ from the He initialisation they started from."""
    from volnet import viz
    from volnet.spec import build
    from volnet.train import load_trained

    a, _ = runs
    trained = viz.filters(load_trained(a).net)[1]
    init = viz.filters(build(SPEC, seed=0))[1]
    assert trained.shape == init.shape == (8, 1, 3, 3)
    assert np.abs(trained - init).mean() > 0.05 * np.abs(init).mean()


def test_saliency_by_backprop_equals_finite_differences(runs) -> None:
    from volnet import viz
    from volnet.train import load_trained

    net = load_trained(runs[0]).net
    x = np.random.default_rng(2).standard_normal((1, 8, 8)).astype(np.float32)
    g = viz.saliency(net, x, 3)
    num = viz._saliency_numeric(net.without_softmax(), x, 3, eps=1e-3)
    assert g.shape == (8, 8) and g.max() > 0
    # equal but where a RELU or max-pool kink lies within eps of a pixel (float32 differences)
    close = np.isclose(g, num, rtol=0.02, atol=1e-3 * float(g.max()))
    assert close.mean() > 0.85, (g, num)


def test_occlusion_with_a_patch_over_everything_is_the_grey_image() -> None:
    from volnet import viz

    img = np.random.default_rng(3).random((1, 6, 6)).astype(np.float32)
    calls = []

    def probs(x):
        calls.append(x.copy())
        return np.stack([x.mean(axis=(1, 2, 3)), 1 - x.mean(axis=(1, 2, 3))], axis=1)

    heat = viz.occlusion(probs, img, 0, patch=6)
    np.testing.assert_allclose(heat, 0.5)
    heat = viz.occlusion(probs, img, 0, patch=2, stride=2)
    assert sum(len(c) for c in calls) == 1 + 9 and heat.shape == (6, 6)


def test_show_bad_input(runs, digit_png, tmp_path, capsys) -> None:
    a, _ = runs
    out = tmp_path / "x.png"
    line = _one_line_error(*_run(capsys, "show", "filters", tmp_path / "nope", "-o", out)[::2])
    assert "no model at" in line
    rc, _, err = _run(capsys, "show", "activations", a, digit_png, "--layers", "conv9", "-o", out)
    line = _one_line_error(rc, err)
    assert "unknown layer name 'conv9'" in line and "conv1, relu1, pool1, fc1" in line
    line = _one_line_error(*_run(capsys, "show", "filters", a, "--layer", "fc1", "-o", out)[::2])
    assert "no conv layer named 'fc1'; this net's conv layers: conv1" in line
    line = _one_line_error(*_run(capsys, "show", "occlusion", a, "-o", out)[::2])
    assert "needs an IMAGE" in line
    line = _one_line_error(*_run(capsys, "show", "saliency", a, tmp_path / "missing.png", "-o", out)[::2])
    assert "image file not found" in line
    assert not out.exists()
    # an RGB image of another size: converted and resized, each with a note
    rgb = tmp_path / "rgb.png"
    Image.fromarray((np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)).save(rgb)
    rc, _, err = _run(capsys, "show", "activations", a, rgb, "-o", out)
    assert rc == 0 and "3-channel image converted to L" in err and "resized 30x20 -> 8x8" in err
    _nonblank(_png(out))


def test_show_without_matplotlib_says_what_to_install(runs, tmp_path, capsys, monkeypatch) -> None:
    import volnet.cli.show as show

    monkeypatch.setattr(show, "_importable", lambda m: m != "matplotlib")
    line = _one_line_error(*_run(capsys, "show", "filters", runs[0], "-o", tmp_path / "f.png")[::2])
    assert "needs matplotlib: pip install 'volnet[viz]'" in line


# ----------------------------------------------------------------------------------- the browser

@pytest.fixture(scope="session")
def browser():
    """A headless Chromium driven by selenium; skips (with the reason) where it cannot be installed."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install "
                                    "'volnet[test]')")
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        pytest.skip("no chromedriver on PATH: apt-get install -y chromium chromium-driver (.ci/run does)")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1600"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver_path), options=opts)
    yield d
    d.quit()


def _page_checks(browser, url: str, shot: Path) -> None:
    browser.get(url)
    time.sleep(0.5)
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert all(ok and w > 0 for _, ok, w in images), images
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    browser.save_screenshot(str(shot))
    _nonblank(_png(shot))
    return images


def test_report_opens_in_a_browser(runs, tmp_path, capsys, browser) -> None:
    a, _ = runs
    rc, _, err = _run(capsys, "report", a)
    assert rc == 0, err
    html = (a / "report.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "<link" not in html and "src='http" not in html
    for section in ("Confusion matrix", "per-class recall", "Most confident mistakes", "First-layer filters",
                    "Settings", "Timing", "Machine", "best epoch", "test acc"):
        assert section in html, section
    images = _page_checks(browser, (a / "report.html").as_uri(), tmp_path / "report.png")
    assert {alt for alt, _, _ in images} == {"training curves", "confusion matrix", "most confident mistakes",
                                             "first-layer filters"}
    # the report of a model directory (no run) is refused with one line
    line = _one_line_error(*_run(capsys, "report", a / "best")[::2])
    assert "not a training run" in line


def test_live_page_shows_a_new_point(runs, tmp_path, browser) -> None:
    from volnet.report import LiveView, open_server

    run = tmp_path / "live"
    shutil.copytree(runs[0], run)
    (run / "results.json").unlink()  # still training
    server = open_server(lambda: run, port=0)
    live = LiveView(server, stream=io.StringIO())
    live.on_train_begin(None)
    try:
        assert "127.0.0.1" in live.stream.getvalue() and "this machine only" in live.stream.getvalue()
        _page_checks(browser, server.url, tmp_path / "live.png")
        pts = lambda: int(browser.find_element("id", "live-curves").get_attribute("data-points"))  # noqa: E731
        before = pts()
        assert before == 3 * 4  # train/val loss and accuracy of 3 epochs
        lines = (run / "metrics.jsonl").read_text().splitlines()
        rec = json.loads(lines[-1]) | {"epoch": 4}
        (run / "metrics.jsonl").write_text("\n".join(lines + [json.dumps(rec)]) + "\n")
        deadline = time.time() + 10
        while pts() == before and time.time() < deadline:
            time.sleep(0.2)
        assert pts() == before + 4
        assert "4 epochs" in browser.find_element("id", "live-status").text
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        live.close()


def test_train_live_serves_and_refuses_a_port_in_use(tmp_path, capsys) -> None:
    pytest.importorskip("sklearn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.listen()
        rc, _, err = _run(capsys, "train", "--model", SPEC, "--data", "digits", "--epochs", "1", "--out",
                          tmp_path / "r", "--quiet", "--live", "--port", port)
        line = _one_line_error(rc, err)
        assert f"port {port} on 127.0.0.1 is in use; try --port" in line
        assert not (tmp_path / "r").exists()
    rc, _, err = _run(capsys, "train", "--model", SPEC, "--data", "digits", "--epochs", "1", "--limit-train",
                      "300", "--out", tmp_path / "r", "--quiet", "--live", "--port", "0")
    assert rc == 0, err
    assert "live view at http://127.0.0.1:" in err and "bound to this machine only" in err
    line = _one_line_error(*_run(capsys, "train", "--data", "digits", "--port", "9000")[::2])
    assert "--port and --host go with --live" in line


def test_steps_jsonl_is_appended_not_rewritten(tmp_path, capsys, monkeypatch) -> None:
    """A record costs one line: the file is written whole once per place (the staging folder, the run
    after the swap), appended to otherwise; a resumed run rewrites it once, keeping its steps."""
    pytest.importorskip("sklearn")
    import volnet.train.callbacks as cb

    calls: list[str] = []
    for name in ("write_jsonl", "append_jsonl"):
        real = getattr(cb, name)
        monkeypatch.setattr(cb, name, lambda p, r, _n=name, _f=real: (
            calls.append(_n) if Path(p).name == "steps.jsonl" else None) or _f(p, r))
    base = ["train", "--model", SPEC, "--data", "digits", "--epochs", "3", "--limit-train", "300", "--quiet"]
    rc, _, err = _run(capsys, *base, "--out", tmp_path / "a")
    assert rc == 0, err
    straight = [json.loads(line) for line in (tmp_path / "a" / "steps.jsonl").read_text().splitlines()]
    writes = calls.count("write_jsonl")
    assert writes <= 2 and calls.count("append_jsonl") == len(calls) - writes >= 5
    assert [r["step"] for r in straight] == sorted({r["step"] for r in straight})  # none twice or lost
    # a Ctrl-C in the checkpoint callback after 7 steps, resumed: one whole rewrite, then appends
    n = {"steps": 0}
    real_end = cb.ModelCheckpoint.on_step_end

    def interrupt(self, trainer, log):
        real_end(self, trainer, log)
        n["steps"] += 1
        if n["steps"] == 7:
            raise KeyboardInterrupt

    monkeypatch.setattr(cb.ModelCheckpoint, "on_step_end", interrupt)
    assert _run(capsys, *base, "--save-every", "3", "--out", tmp_path / "b")[0] == 130
    monkeypatch.setattr(cb.ModelCheckpoint, "on_step_end", real_end)
    calls.clear()
    rc, _, err = _run(capsys, "train", "--resume", tmp_path / "b", "--quiet")
    assert rc == 0, err
    assert calls[0] == "write_jsonl" and calls.count("write_jsonl") == 1 and "append_jsonl" in calls
    resumed = [json.loads(line) for line in (tmp_path / "b" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [r["step"] for r in straight]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
