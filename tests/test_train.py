"""Trainer: accuracy on real images, bit-identical resume, Ctrl-C, NaN stop, metrics files, float32."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from volnet.data import Augment, Dataset, load_dataset, make_synthetic, split_validation
from volnet.errors import DataError, ShapeError, VolnetError
from volnet.spec import build
from volnet.train import (
    DEFAULT_MODEL,
    Progress,
    Trainer,
    TrainingError,
    TrainingInterrupted,
    adapt_spec,
    confusion_matrix,
    default_model,
    format_confusion,
    load_trained,
    read_metrics,
)

#: Small net with every stateful piece: BN running statistics, a dropout generator, a trailing Softmax.
SPEC = ("INPUT [8x8x1] -> CONV3-6 -> BN -> RELU -> POOL2 -> FC-16 -> DROPOUT0.3 -> RELU -> FC-4 "
        "-> SOFTMAX")


@pytest.fixture(scope="module")
def synth() -> tuple[Dataset, Dataset, Dataset]:
    train, test = make_synthetic(n_train=300, n_test=64, num_classes=4, noise=0.3, seed=1)
    train, val = split_validation(train, 40, seed=0)
    train.augment = Augment(pad=1, flip=True)  # exercise the augmentation draws in resume tests
    return train, val, test


def _trainer(data: tuple[Dataset, Dataset, Dataset], out: Path | None, **kw) -> Trainer:
    train, val, _ = data
    kw.setdefault("epochs", 2)
    return Trainer(build(SPEC, seed=0), train, val, batch_size=32, lr=3e-3, out_dir=out, progress=False,
                   warmup=0.3, **kw)


def _same_state(a: Trainer, b: Trainer) -> None:
    for k, v in a.net.params.items():
        assert np.array_equal(v, b.net.params[k]), f"param {k} differs"
    for k, v in a.net.buffers.items():
        assert np.array_equal(v, b.net.buffers[k]), f"buffer {k} differs"
    ma, aa = a.optimizer.state_dict()
    mb, ab = b.optimizer.state_dict()
    assert ma == mb
    assert all(np.array_equal(aa[k], ab[k]) for k in aa)
    strip = [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in b.history]


@pytest.fixture(scope="module")
def straight(synth, tmp_path_factory) -> Trainer:
    t = _trainer(synth, tmp_path_factory.mktemp("straight"))
    t.fit()
    return t


# ------------------------------------------------------------------------------------------ model

def test_adapt_spec_rewrites_input_and_classes() -> None:
    s = adapt_spec(DEFAULT_MODEL, (3, 32, 32), 100)
    assert s.startswith("INPUT [32x32x3] ->") and s.endswith("FC-100")
    assert adapt_spec("CONV3-8 -> FC-10", (1, 8, 8), 3) == "INPUT [8x8x1] -> CONV3-8 -> FC-3"
    with pytest.raises(VolnetError, match="FC"):
        adapt_spec("INPUT [8x8x1] -> CONV3-8", (1, 8, 8), 3)


def test_default_model_adapts_to_the_data() -> None:
    net = default_model((1, 8, 8), 10)
    assert net.input_shape == (1, 8, 8) and net.output_shape((1, 8, 8)) == (10,)
    assert default_model((3, 32, 32), 7).output_shape((3, 32, 32)) == (7,)


def test_trainer_rejects_mismatched_net(synth) -> None:
    train, val, _ = synth
    with pytest.raises(ShapeError, match="FC-4"):
        Trainer(build("INPUT [8x8x1] -> FC-10"), train, val)
    with pytest.raises(ShapeError, match="INPUT"):
        Trainer(build("INPUT [9x9x1] -> FC-4"), train, val)


# ------------------------------------------------------------------------------------------ real images

def test_fashion_mnist_subset_reaches_80_percent() -> None:
    """2,000 training images, 3 epochs of a two-CONV net: > 80% on 2,000 test images (~8 s)."""
    try:
        train, test = load_dataset("fashion-mnist", download=False)
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    train, test = train.subset(np.arange(2000)), test.subset(np.arange(2000))
    net = build("INPUT [28x28x1] -> [CONV3-16 -> BN -> RELU -> POOL2] -> [CONV3-32 -> BN -> RELU -> POOL2]"
                " -> FC-10")
    t = Trainer(net, train, None, test, epochs=3, batch_size=32, lr=3e-3, augment=Augment(), progress=False)
    t.fit()
    assert t.test_result["test_acc"] > 0.80, t.history
    assert t.evaluate(test).acc == pytest.approx(t.test_result["test_acc"])


# ------------------------------------------------------------------------------------------ files

def test_run_directory_files(straight) -> None:
    out = straight.out_dir
    recs = read_metrics(out)
    assert [r["epoch"] for r in recs] == [1, 2]
    keys = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"}
    for r, h in zip(recs, straight.history):
        assert keys <= set(r)
        assert r == json.loads(json.dumps(h))
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["val_acc"] <= 1 and r["train_loss"] > 0
        assert r["seconds"] > 0 and r["images_per_s"] > 0 and r["lr"] > 0
    assert recs[1]["train_loss"] < recs[0]["train_loss"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(out) if p.startswith(".")], "temporary files left behind"
    for sub in ("best", "last"):
        m = load_trained(out / sub)
        assert m.classes == straight.classes
        assert m.normalizer is not None and m.normalizer.to_dict() == straight.normalizer.to_dict()
    assert (out / "last" / "optimizer.npz").is_file()
    assert load_trained(out).path == out / "best"
    best = json.loads((out / "best" / "trainer.json").read_text())
    assert best["best"]["acc"] == max(r["val_acc"] for r in recs)


def test_loaded_model_predicts_like_the_trainer(straight, synth) -> None:
    _, val, _ = synth
    m = load_trained(straight.out_dir / "last")
    probs = m.probabilities(val.x)
    np.testing.assert_allclose(probs, straight.evaluate(val).probs, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ resume

def test_resume_at_epoch_boundary_is_bit_identical(synth, straight, tmp_path) -> None:
    stop = lambda t, event: t.request_stop() if event == "epoch" and t.epoch == 1 else None  # noqa: E731
    first = _trainer(synth, tmp_path, callbacks=[stop])
    first.fit()
    assert (first.epoch, first.batch) == (1, 0) and len(read_metrics(tmp_path)) == 1
    second = Trainer.resume(tmp_path, synth[0], synth[1], progress=False)
    assert (second.epoch, second.batch, second.step) == (1, 0, first.step)
    second.fit()
    _same_state(straight, second)
    assert read_metrics(tmp_path)[1]["train_loss"] == straight.history[1]["train_loss"]


def test_resume_mid_epoch_after_a_crash_is_bit_identical(synth, straight, tmp_path) -> None:
    def crash(t: Trainer, event: str) -> None:
        if event == "step" and t.step == 13:
            raise RuntimeError("power cut")

    first = _trainer(synth, tmp_path, save_every=4, callbacks=[crash])
    with pytest.raises(RuntimeError, match="power cut"):
        first.fit()
    second = Trainer.resume(tmp_path, synth[0], synth[1], progress=False)
    assert (second.epoch, second.batch, second.step) == (1, 12 - first.steps_per_epoch, 12)
    second.fit()
    _same_state(straight, second)


def test_keyboard_interrupt_inside_a_step_writes_a_resumable_checkpoint(synth, straight, tmp_path) -> None:
    t = _trainer(synth, tmp_path)
    backward = t.scores_net.backward  # the net up to its scores (it ends in a SOFTMAX)

    def interrupted_backward(dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        if t.step == 11:  # after BN statistics and dropout masks of step 12 were drawn
            raise KeyboardInterrupt
        return backward(dout, need_dx=need_dx)

    t.scores_net.backward = interrupted_backward
    with pytest.raises(TrainingInterrupted) as e:
        t.fit()
    assert e.value.step == 11 and e.value.checkpoint == tmp_path / "last"
    assert "interrupted at epoch 2/2" in str(e.value)
    resumed = Trainer.resume(tmp_path, synth[0], synth[1], progress=False)
    resumed.fit()
    _same_state(straight, resumed)


def test_sigint_is_deferred_to_the_end_of_the_step(synth, straight, tmp_path) -> None:
    def ctrl_c(t: Trainer, event: str) -> None:
        if event == "step" and t.step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    t = _trainer(synth, tmp_path, callbacks=[ctrl_c])
    with pytest.raises(TrainingInterrupted) as e:
        t.fit()
    assert e.value.step == 5 and isinstance(e.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is before
    doc = json.loads((tmp_path / "last" / "trainer.json").read_text())
    assert doc["position"]["step"] == 5
    resumed = Trainer.resume(tmp_path, synth[0], synth[1], progress=False)
    resumed.fit()
    _same_state(straight, resumed)


def test_resume_refuses_other_data(synth, straight) -> None:
    train, val, _ = synth
    with pytest.raises(TrainingError, match="data differ"):
        Trainer.resume(straight.out_dir, train.subset(np.arange(len(train) - 1)), val)
    with pytest.raises(VolnetError, match="no checkpoint|does not exist"):
        Trainer.resume(straight.out_dir / "nothing", train, val)


# ------------------------------------------------------------------------------------------ divergence

@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(synth, tmp_path) -> None:
    train, val, _ = synth
    net = build("INPUT [8x8x1] -> CONV3-6 -> RELU -> FC-4")
    t = Trainer(net, train, val, optimizer="sgd", lr=1e12, schedule="constant", batch_size=32,
                epochs=2, out_dir=tmp_path, save_every=1, progress=False)
    with pytest.raises(TrainingError) as e:
        t.fit()
    msg = str(e.value)
    assert "\n" not in msg and "diverged" in msg and "--lr" in msg
    ck = tmp_path / "last"
    doc = json.loads((ck / "trainer.json").read_text())
    assert 1 <= doc["position"]["step"] <= t.step
    good = load_trained(ck).net
    assert all(np.all(np.isfinite(v)) for v in good.params.values())


# ------------------------------------------------------------------------------------------ details

def test_float32_step_keeps_everything_float32(synth) -> None:
    train, val, _ = synth
    t = Trainer(build(SPEC, seed=0), train, val, batch_size=16, epochs=1, progress=False, clip=1.0)
    seen: list[tuple[str, np.dtype]] = []
    for name, layer in t.net.named_layers():
        fwd, bwd = layer.forward, layer.backward

        def f(x, train=True, _f=fwd, _n=name):
            out = _f(x, train)
            seen.append((_n, out.dtype))
            return out

        def b(d, need_dx=True, _b=bwd, _n=name):
            dx = _b(d, need_dx=need_dx) if not need_dx else _b(d)
            if dx is not None:
                seen.append((_n + ".dx", dx.dtype))
            return dx

        layer.forward, layer.backward = f, b
    stop = lambda tr, event: tr.request_stop()  # noqa: E731
    t.callbacks.append(stop)
    t.fit()
    assert t.step == 1 and seen
    assert all(d == np.float32 for _, d in seen), [s for s in seen if s[1] != np.float32]
    assert all(v.dtype == np.float32 for v in t.net.params.values())
    assert all(v.dtype == np.float32 for v in t.net.grads.values())
    assert all(v.dtype == np.float32 for v in t.net.buffers.values())
    _, arrays = t.optimizer.state_dict()
    assert all(v.dtype == np.float32 for v in arrays.values())


def test_trailing_softmax_is_skipped_for_the_loss(synth) -> None:
    train, val, _ = synth
    body = "INPUT [8x8x1] -> CONV3-4 -> RELU -> FC-4"
    nets = [build(body, seed=3), build(body + " -> SOFTMAX", seed=3)]
    for net in nets:
        t = Trainer(net, train, val, batch_size=32, epochs=1, progress=False)
        t.callbacks.append(lambda tr, event: tr.request_stop() if tr.step == 3 else None)
        t.fit()
    for k, v in nets[0].params.items():
        assert np.array_equal(v, nets[1].params[k])


def test_progress_in_a_log_is_a_line_every_n_steps_and_the_star_is_explained(synth, tmp_path) -> None:
    """Off a terminal the epoch shows as plain lines (every 3 steps here) with elapsed time and ETA, the
    epoch line follows; the first '*' says what it means. On a terminal: a tqdm bar, none in the log."""
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    log, tty = io.StringIO(), Tty()
    t = _trainer(synth, tmp_path / "r", epochs=2, callbacks=[Progress(stream=log, every=3),
                                                            Progress(stream=tty, mode="bar")])
    t.fit()
    lines = log.getvalue().splitlines()
    steps = [ln for ln in lines if ln.startswith("epoch 1/2: ")]
    assert len(steps) == (t.steps_per_epoch - 1) // 3 and "\r" not in log.getvalue()
    assert steps[0].startswith("epoch 1/2: 3/9 (33%), 0:0") and "ETA" in steps[0] and "loss " in steps[0]
    epochs = [ln for ln in lines if ln.startswith("epoch ") and "train loss" in ln]
    assert len(epochs) == 2 and epochs[0].endswith("  * = best val acc so far (saved as best/)")
    assert not epochs[1].endswith("so far (saved as best/)")
    assert "\r" in tty.getvalue() and "epoch 1/2" in tty.getvalue() and "|" in tty.getvalue()


def test_confusion_matrix_text() -> None:
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    text = format_confusion(cm, ["cat", "dog", "ankle boot"])
    assert "ankle boot" in text and "50.0%" in text and "66.7%" in text
