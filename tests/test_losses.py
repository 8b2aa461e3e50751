"""Softmax (cross-entropy) and multiclass SVM losses: gradients, PyTorch agreement, label errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import grad_check, max_rel, torch_or_skip
from volnet.errors import ShapeError
from volnet.ops.losses import softmax_loss, svm_loss


@pytest.mark.parametrize("loss", [softmax_loss, svm_loss])
def test_loss_gradient(loss):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((5, 7))
    y = rng.integers(0, 7, size=5)
    _, dscores = loss(scores, y)
    grad_check(lambda: np.array(loss(scores, y)[0]), np.array(1.0), {"scores": scores}, {"scores": dscores})


def test_svm_margin_gradient():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((4, 5)) * 3
    y = rng.integers(0, 5, size=4)
    _, d = svm_loss(scores, y, margin=2.5)
    grad_check(lambda: np.array(svm_loss(scores, y, margin=2.5)[0]), np.array(1.0), {"s": scores}, {"s": d})


@pytest.mark.parametrize("which", ["cross_entropy", "multi_margin_loss"])
def test_losses_match_torch(which):
    torch = torch_or_skip()
    rng = np.random.default_rng({"cross_entropy": 2, "multi_margin_loss": 3}[which])
    worst, worst_cfg = 0.0, None
    for _ in range(60):
        N, C = int(rng.integers(1, 17)), int(rng.integers(2, 12))
        scale = float(rng.uniform(0.1, 10))
        scores = (rng.standard_normal((N, C)) * scale).astype(np.float32)
        y = rng.integers(0, C, size=N)
        st = torch.tensor(scores, requires_grad=True)
        yt = torch.tensor(y)
        if which == "cross_entropy":
            loss, d = softmax_loss(scores, y)
            lt = torch.nn.functional.cross_entropy(st, yt)
        else:
            margin = float(rng.uniform(0.1, 3))
            loss, d = svm_loss(scores, y, margin=margin)
            lt = torch.nn.functional.multi_margin_loss(st, yt, margin=margin)
        lt.backward()
        assert isinstance(loss, float) and d.dtype == np.float32
        err = max(abs(loss - lt.item()) / max(abs(lt.item()), 1e-12), max_rel(d, st.grad.numpy()))
        if err > worst:
            worst, worst_cfg = err, (N, C, scale)
    print(f"{which}: largest relative error vs torch {worst:.2e} at {worst_cfg}")
    assert worst < 1e-4, f"{which}: {worst:.2e} vs torch for {worst_cfg}"


def test_notes_svm_example():
    """cs231n linear classification notes: scores [13, -7, 11], y = 0, Delta = 10 -> 8; torch divides by C."""
    loss, _ = svm_loss(np.array([[13.0, -7.0, 11.0]]), np.array([0]), margin=10.0)
    assert loss == pytest.approx(8.0 / 3)


def test_softmax_loss_at_init_is_log_c_and_stable():
    loss, _ = softmax_loss(np.zeros((4, 10), np.float32), np.arange(4))
    assert loss == pytest.approx(np.log(10), rel=1e-6)
    loss, d = softmax_loss(np.array([[1000.0, 0.0], [0.0, 1000.0]], np.float32), np.array([0, 0]))
    assert np.isfinite(loss) and loss == pytest.approx(500.0) and np.all(np.isfinite(d))


@pytest.mark.parametrize("loss", [softmax_loss, svm_loss])
def test_bad_labels(loss):
    s = np.zeros((3, 4), np.float32)
    with pytest.raises(ShapeError, match=r"\[0, 4\)"):
        loss(s, np.array([0, 4, 1]))
    with pytest.raises(ShapeError, match=r"\[0, 4\)"):
        loss(s, np.array([0, -1, 1]))
    with pytest.raises(ShapeError, match=r"shape \(3,\)"):
        loss(s, np.array([0, 1]))
    with pytest.raises(ShapeError, match=r"shape \(3,\)"):
        loss(s, np.array([[0], [1], [2]]))
    with pytest.raises(ShapeError, match="integer"):
        loss(s, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ShapeError, match="2-D"):
        loss(np.zeros((3, 4, 1, 1), np.float32), np.array([0, 1, 2]))


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_label_smoothing_gradient_float64(eps):
    rng = np.random.default_rng(11)
    scores = rng.standard_normal((6, 10)) * 2
    y = rng.integers(0, 10, size=6)
    _, d = softmax_loss(scores, y, label_smoothing=eps)
    grad_check(lambda: np.array(softmax_loss(scores, y, label_smoothing=eps)[0]), np.array(1.0),
               {"scores": scores}, {"scores": d}, tol=1e-5)  # entries of p - q near 0: elementwise


def test_label_smoothing_matches_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(12)
    worst = 0.0
    for _ in range(40):
        N, C = int(rng.integers(1, 17)), int(rng.integers(2, 12))
        eps = float(rng.uniform(0.01, 0.9))
        scores = (rng.standard_normal((N, C)) * rng.uniform(0.1, 10)).astype(np.float32)
        y = rng.integers(0, C, size=N)
        st = torch.tensor(scores, requires_grad=True)
        lt = torch.nn.functional.cross_entropy(st, torch.tensor(y), label_smoothing=eps)
        lt.backward()
        loss, d = softmax_loss(scores, y, label_smoothing=eps)
        assert d.dtype == np.float32
        worst = max(worst, abs(loss - lt.item()) / max(abs(lt.item()), 1e-12), max_rel(d, st.grad.numpy()))
    assert worst < 1e-4, f"label smoothing vs torch: {worst:.2e}"


def test_label_smoothing_zero_is_plain_and_bad_value_refused():
    rng = np.random.default_rng(13)
    scores, y = rng.standard_normal((4, 3)), rng.integers(0, 3, size=4)
    a, b = softmax_loss(scores, y), softmax_loss(scores, y, label_smoothing=0.0)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ShapeError, match="label_smoothing"):
            softmax_loss(scores, y, label_smoothing=bad)
