"""volnet.optim against torch.optim: same parameters, same random gradients, 10 steps, float64."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.helpers import torch_or_skip
from volnet.errors import ModelFileError, ShapeError, VolnetError
from volnet.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    CosineLR,
    Momentum,
    Nesterov,
    OneCycleLR,
    RMSProp,
    StepLR,
    clip_grad_norm,
    make_optimizer,
    make_schedule,
    state_size_factor,
    warmup,
)

SHAPES = {"conv1.w": (4, 3, 3, 3), "conv1.b": (4,), "fc1.w": (5, 7)}

# (volnet name, volnet kwargs, torch class name, torch kwargs)
CASES = [
    ("sgd", {"lr": 0.1}, "SGD", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "weight_decay": 0.01}, "SGD", {"lr": 0.1, "weight_decay": 0.01}),
    ("momentum", {"lr": 0.05, "momentum": 0.9}, "SGD", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}, "SGD",
     {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}),
    ("nesterov", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}, "SGD",
     {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("adagrad", {"lr": 0.1}, "Adagrad", {"lr": 0.1}),
    ("adagrad", {"lr": 0.1, "weight_decay": 0.01, "lr_decay": 0.05}, "Adagrad",
     {"lr": 0.1, "weight_decay": 0.01, "lr_decay": 0.05}),
    ("rmsprop", {"lr": 0.01}, "RMSprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.01}, "RMSprop",
     {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.01}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.5, "centered": True}, "RMSprop",
     {"lr": 0.01, "momentum": 0.5, "centered": True}),
    ("adam", {"lr": 1e-2}, "Adam", {"lr": 1e-2}),
    ("adam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05}, "Adam",
     {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05}),
    ("adamw", {"lr": 1e-2, "weight_decay": 0.1}, "AdamW", {"lr": 1e-2, "weight_decay": 0.1}),
]


def _params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def _grads(steps, dtype=np.float64, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()} for _ in range(steps)]


@pytest.mark.parametrize("name,kw,tname,tkw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch(name, kw, tname, tkw):
    torch = torch_or_skip()
    params = _params()
    tparams = {k: torch.tensor(v.copy(), dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    opt = make_optimizer(name, params, **kw)
    topt = getattr(torch.optim, tname)(list(tparams.values()), **tkw)
    for g in _grads(10):
        opt.step(g)
        for k, tp in tparams.items():
            tp.grad = torch.tensor(g[k])
        topt.step()
        for k, tp in tparams.items():
            np.testing.assert_allclose(params[k], tp.detach().numpy(), rtol=1e-6, atol=1e-6 * 1e-2)


def test_grads_not_modified_and_missing_grads_skipped():
    params = _params()
    before = {k: v.copy() for k, v in params.items()}
    g = _grads(1)[0]
    g_copy = {k: v.copy() for k, v in g.items()}
    del g["fc1.w"]
    Adam(params, weight_decay=0.1).step(g)
    for k in g:
        np.testing.assert_array_equal(g[k], g_copy[k])
    np.testing.assert_array_equal(params["fc1.w"], before["fc1.w"])
    assert not np.array_equal(params["conv1.w"], before["conv1.w"])


@pytest.mark.parametrize("name,kw", [(c[0], c[1]) for c in CASES])
def test_state_dict_round_trip_bit_identical(name, kw):
    grads = _grads(10, np.float32)
    straight = _params(np.float32)
    opt = make_optimizer(name, straight, **kw)
    for g in grads:
        opt.step(g)

    resumed = _params(np.float32)
    opt1 = make_optimizer(name, resumed, **kw)
    for g in grads[:5]:
        opt1.step(g)
    meta, arrays = opt1.state_dict()
    meta = json.loads(json.dumps(meta))  # JSON-able scalars
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    saved = {k: v.copy() for k, v in resumed.items()}
    fresh = {k: v.copy() for k, v in saved.items()}
    opt2 = make_optimizer(name, fresh, lr=123.0)  # lr and hyperparameters come from the state
    opt2.load_state_dict(meta, arrays)
    for g in grads[5:]:
        opt2.step(g)
    for k in straight:
        np.testing.assert_array_equal(fresh[k], straight[k])


def test_state_dict_npz_round_trip(tmp_path):
    params = _params(np.float32)
    opt = Adam(params)
    opt.step(_grads(1, np.float32)[0])
    meta, arrays = opt.state_dict()
    np.savez(tmp_path / "opt.npz", **arrays)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as z:
        loaded = {k: z[k] for k in z.files}
    assert set(loaded) == {f"{s}.{k}" for s in ("exp_avg", "exp_avg_sq") for k in SHAPES}
    opt2 = Adam(_params(np.float32))
    opt2.load_state_dict(meta, loaded)
    assert opt2.steps == {k: 1 for k in SHAPES}


def test_load_state_dict_errors():
    opt = Adam(_params())
    opt.step(_grads(1)[0])
    meta, arrays = opt.state_dict()
    with pytest.raises(ModelFileError, match="Adam"):
        SGD(_params(), lr=0.1).load_state_dict(meta, arrays)
    bad = dict(arrays)
    del bad["exp_avg.fc1.w"]
    with pytest.raises(ModelFileError, match="exp_avg.fc1.w"):
        Adam(_params()).load_state_dict(meta, bad)
    bad = dict(arrays, **{"exp_avg.fc1.w": np.zeros((2, 2))})
    with pytest.raises(ModelFileError, match="shape"):
        Adam(_params()).load_state_dict(meta, bad)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_float32_stays_float32(name):
    params = _params(np.float32)
    ids = {k: id(v) for k, v in params.items()}
    opt = make_optimizer(name, params)
    for g in _grads(3, np.float32):
        opt.step(g)
    for k, v in params.items():
        assert v.dtype == np.float32 and id(v) == ids[k]
    for st in opt.state.values():
        for a in st.values():
            assert a.dtype == np.float32


def test_state_size_factor():
    p = _params()
    assert SGD(p, 0.1).state_size_factor == 0
    assert Momentum(p).state_size_factor == 1
    assert Nesterov(p).state_size_factor == 1
    assert Adagrad(p).state_size_factor == 1
    assert RMSProp(p).state_size_factor == 1
    assert RMSProp(p, momentum=0.9, centered=True).state_size_factor == 3
    assert Adam(p).state_size_factor == 2
    assert AdamW(p).state_size_factor == 2
    assert state_size_factor("adam") == 2 and state_size_factor("sgd") == 0
    assert state_size_factor("sgd", momentum=0.9) == 1


def test_errors():
    p = _params()
    with pytest.raises(VolnetError, match="unknown optimizer"):
        make_optimizer("lbfgs", p)
    with pytest.raises(VolnetError, match="nesterov"):
        SGD(p, 0.1, nesterov=True)
    with pytest.raises(VolnetError, match="lr"):
        SGD(p, -1.0)
    with pytest.raises(ShapeError, match="conv1.b"):
        SGD(p, 0.1).step({"conv1.b": np.zeros(3)})
    with pytest.raises(VolnetError, match="nope"):
        SGD(p, 0.1).step({"nope": np.zeros(3)})
    with pytest.raises(VolnetError, match="momentum"):
        make_optimizer("adam", p, momentum=0.9)


def _torch_lrs(torch, make_sched, n, base_lr):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = make_sched(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_step_lr_matches_torch():
    torch = torch_or_skip()
    ref = _torch_lrs(torch, lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 12, 0.1)
    s = StepLR(0.1, 3, 0.5)
    np.testing.assert_allclose([s(t) for t in range(12)], ref, rtol=1e-12)


def test_cosine_lr_matches_torch():
    torch = torch_or_skip()
    ref = _torch_lrs(torch, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=1e-3),
                     11, 0.1)
    s = CosineLR(0.1, 10, min_lr=1e-3)
    np.testing.assert_allclose([s.lr_at(t) for t in range(11)], ref, rtol=1e-10)
    assert s(10) == pytest.approx(1e-3) and s(50) == pytest.approx(1e-3)


def test_warmup_matches_torch_chain():
    torch = torch_or_skip()
    lr = torch.optim.lr_scheduler

    def make(o):
        return lr.ChainedScheduler([lr.LinearLR(o, start_factor=0.25, total_iters=4),
                                    lr.StepLR(o, step_size=5, gamma=0.1)])

    ref = _torch_lrs(torch, make, 12, 0.2)
    s = warmup(StepLR(0.2, 5, 0.1), 4, start_factor=0.25)
    np.testing.assert_allclose([s(t) for t in range(12)], ref, rtol=1e-10)
    assert make_schedule("cosine", 0.1, total=10, warmup_steps=2)(0) == pytest.approx(0.01)
    assert make_schedule("constant", 0.3)(7) == 0.3


@pytest.mark.parametrize("total,pct", [(100, 0.3), (37, 0.25), (430 * 3, 0.1)])
def test_onecycle_matches_torch(total, pct):
    torch = torch_or_skip()
    ref = _torch_lrs(torch, lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.1, total_steps=total, pct_start=pct, anneal_strategy="cos"), total, 0.1)
    s = OneCycleLR(0.1, total, pct)
    np.testing.assert_allclose([s(t) for t in range(total)], ref, rtol=1e-9)
    assert s(total + 5) == pytest.approx(0.1 / 25 / 1e4)
    # make_schedule: the rise lasts warmup_steps (torch's pct_start = warmup_steps / total), else 30%
    t = make_schedule("onecycle", 0.1, total=total, warmup_steps=int(pct * total))
    assert t(int(pct * total) - 1) == pytest.approx(0.1) and t(0) == pytest.approx(0.004)
    assert make_schedule("onecycle", 0.1, total=100)(29) == pytest.approx(0.1)


def test_onecycle_tiny_runs_and_bad_values():
    for total in (1, 2, 3):
        lrs = [OneCycleLR(0.1, total)(t) for t in range(total)]
        assert all(math.isfinite(v) and 0 < v <= 0.1 for v in lrs)
    for kw in ({"total": 0}, {"total": 10, "pct_start": 0.0}, {"total": 10, "pct_start": 1.0}):
        with pytest.raises(VolnetError, match="OneCycleLR"):
            OneCycleLR(0.1, **kw)


@pytest.mark.parametrize("max_norm,norm_type", [(1.0, 2.0), (100.0, 2.0), (0.5, 1.0), (0.3, math.inf)])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    torch = torch_or_skip()
    grads = _grads(1, seed=5)[0]
    tgrads = [torch.tensor(g.copy()) for g in grads.values()]
    tparams = [torch.zeros_like(g, requires_grad=True) for g in tgrads]
    for p, g in zip(tparams, tgrads):
        p.grad = g
    ref = float(torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type))
    total = clip_grad_norm(grads, max_norm, norm_type)
    assert total == pytest.approx(ref, rel=1e-12)
    for g, p in zip(grads.values(), tparams):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_float32_in_place():
    g = {"a": np.full((3,), 4.0, dtype=np.float32)}
    arr = g["a"]
    total = clip_grad_norm(g, 1.0)
    assert total == pytest.approx(math.sqrt(48), rel=1e-6)
    assert g["a"] is arr and arr.dtype == np.float32
    assert np.linalg.norm(arr) == pytest.approx(1.0, rel=1e-5)
