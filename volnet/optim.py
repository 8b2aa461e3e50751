"""Optimizers, learning-rate schedules and gradient clipping (cs231n notes, "Parameter updates").

Optimizers update a dict of parameter arrays (``name -> np.ndarray``) IN PLACE from a dict of
gradients with the same names. The update rules are exactly those of ``torch.optim`` (see each class),
so a volnet run and a PyTorch run agree step by step. State arrays have the parameter's dtype: float32
parameters stay float32.

Checkpointing: ``meta, arrays = opt.state_dict()`` gives JSON-able scalars and a dict of arrays (for an
``.npz``, no pickle); ``opt.load_state_dict(meta, arrays)`` on a fresh optimizer over the same parameters
continues bit-identically.

Example::

    opt = make_optimizer("adam", net.params, lr=1e-3, weight_decay=5e-4)
    sched = warmup(CosineLR(1e-3, total=epochs), steps=2)
    for epoch in range(epochs):
        opt.lr = sched(epoch)
        ... loss, backward ...
        clip_grad_norm(net.grads, 5.0)
        opt.step(net.grads)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from volnet.errors import ModelFileError, ShapeError, VolnetError

Arrays = Mapping[str, np.ndarray]


def _like(v: Any, current: Any) -> bool:
    """``v`` (from a checkpoint) has the form of the hyperparameter's ``current`` value."""
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

    if isinstance(current, bool):
        return isinstance(v, bool)
    if isinstance(current, tuple):
        return isinstance(v, list | tuple) and len(v) == len(current) and all(number(x) for x in v)
    return number(v)


class Optimizer:
    """Base class: holds ``params`` (name -> array, updated in place), ``lr`` and per-parameter state.

    Subclasses list their state slots in ``slots`` (one param-sized array each, created lazily at the
    first step of that parameter, as torch does) and implement ``_update(name, p, g, state)``.
    """

    slots: ClassVar[tuple[str, ...]] = ()
    #: scalar hyperparameters saved in ``state_dict`` (besides ``lr``)
    hyper: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Mapping[str, np.ndarray], lr: float, weight_decay: float = 0.0) -> None:
        if not isinstance(params, Mapping):
            raise VolnetError(f"{type(self).__name__}: params must be a dict name -> array, got "
                              f"{type(params).__name__}; pass net.params")
        for name, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise VolnetError(f"{type(self).__name__}: parameter {name!r} must be a float array, got "
                                  f"{getattr(p, 'dtype', type(p).__name__)}")
        _check_nonneg(type(self).__name__, lr=lr, weight_decay=weight_decay)
        self.params = params
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.steps: dict[str, int] = {}

    @property
    def state_size_factor(self) -> int:
        """How many parameter-sized arrays of state this optimizer keeps (SGD 0, momentum 1, Adam 2)."""
        return len(self.active_slots())

    def active_slots(self) -> tuple[str, ...]:
        """The state slots used with the current settings."""
        return self.slots

    def step(self, grads: Arrays) -> None:
        """Update every parameter that has a gradient in ``grads`` (same names, same shapes), in place.

        Parameters absent from ``grads`` are skipped (like torch parameters with ``grad=None``).
        ``grads`` is not modified.
        """
        for name, g in grads.items():
            p = self.params.get(name)
            if p is None:
                raise VolnetError(f"{type(self).__name__}.step: gradient {name!r} has no parameter; "
                                  f"parameters are {sorted(self.params)[:8]}...")
            if g.shape != p.shape:
                raise ShapeError(f"{type(self).__name__}.step: gradient {name!r} has shape {g.shape}, "
                                 f"parameter has {p.shape}")
            g = np.asarray(g, dtype=p.dtype)
            if self.weight_decay:
                g = g + p.dtype.type(self.weight_decay) * p  # L2 penalty added to the gradient (torch)
            st = self.state.get(name)
            if st is None:
                st = self.state[name] = {s: np.zeros_like(p) for s in self.active_slots()}
            self.steps[name] = self.steps.get(name, 0) + 1
            self._update(name, p, g, st)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)``: JSON-able scalars (type, lr, hyperparameters, per-parameter step counts)
        and the state arrays keyed ``"<slot>.<param name>"`` (e.g. ``"exp_avg.conv1.w"``), for an npz."""
        meta: dict[str, Any] = {"type": type(self).__name__, "lr": self.lr, "weight_decay": self.weight_decay,
                                "steps": dict(self.steps)}
        for h in self.hyper:
            v = getattr(self, h)
            meta[h] = list(v) if isinstance(v, tuple) else v
        arrays = {f"{slot}.{name}": a.copy() for name, st in self.state.items() for slot, a in st.items()}
        return meta, arrays

    def load_state_dict(self, meta: Mapping[str, Any], arrays: Arrays) -> None:
        """Restore ``state_dict()`` output (lr and hyperparameters included) over the same parameters.

        Raises ``ModelFileError`` when the optimizer type differs or an array is missing or misshapen.
        """
        kind = type(self).__name__
        if meta.get("type") != kind:
            raise ModelFileError(f"optimizer state is for {meta.get('type')!r}, not {kind}; build the "
                                 f"optimizer the checkpoint was saved with")
        try:
            steps = {str(k): int(v) for k, v in dict(meta.get("steps", {})).items()}
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"optimizer state: \"steps\" must map parameter names to counts ({e})"
                                 ) from None
        unknown = sorted(set(steps) - set(self.params))
        if unknown:
            raise ModelFileError(f"optimizer state names parameters {unknown[:5]} the model does not have; "
                                 "load it into the same architecture")
        saved = {h: getattr(self, h) for h in ("lr", "weight_decay") + self.hyper}
        try:
            self.lr = float(meta["lr"])
            self.weight_decay = float(meta.get("weight_decay", 0.0))
            for h in self.hyper:
                if h in meta:
                    v = meta[h]
                    if not _like(v, getattr(self, h)):
                        raise ModelFileError(f"optimizer state: {h} must be of the form "
                                             f"{getattr(self, h)!r}, got {v!r:.40}; damaged checkpoint")
                    setattr(self, h, tuple(float(x) for x in v) if isinstance(v, list | tuple) else v)
            state = self._state_from_arrays(steps, arrays)
        except Exception as e:
            for h, v in saved.items():
                setattr(self, h, v)
            if isinstance(e, (TypeError, ValueError, KeyError)) and not isinstance(e, ModelFileError):
                raise ModelFileError(f"optimizer state: damaged ({type(e).__name__}: {e})") from None
            raise
        self.state = state
        self.steps = steps

    def _state_from_arrays(self, steps: dict[str, int], arrays: Arrays) -> dict[str, dict[str, np.ndarray]]:
        state: dict[str, dict[str, np.ndarray]] = {}
        for name in steps:
            p = self.params[name]
            state[name] = {}
            for slot in self.active_slots():
                key = f"{slot}.{name}"
                if key not in arrays:
                    raise ModelFileError(f"optimizer state lacks array {key!r}; the checkpoint is "
                                         "incomplete or from other optimizer settings")
                a = np.asarray(arrays[key])
                if a.shape != p.shape:
                    raise ModelFileError(f"optimizer state {key!r} has shape {a.shape}, parameter has "
                                         f"{p.shape}")
                state[name][slot] = a.astype(p.dtype, copy=True)
        return state

    def __repr__(self) -> str:
        hp = "".join(f"{h}={getattr(self, h)!r}, " for h in self.hyper)
        return f"{type(self).__name__}(lr={self.lr}, {hp}weight_decay={self.weight_decay})"


def _check_nonneg(who: str, **values: float) -> None:
    for k, v in values.items():
        if not (isinstance(v, int | float | np.floating) and v >= 0 and math.isfinite(v)):
            raise VolnetError(f"{who}: {k} must be a finite number >= 0, got {v!r}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    With ``g = grad + weight_decay * p``:
    no momentum: ``p -= lr * g``;
    momentum mu: ``v = g`` at the first step, then ``v = mu * v + (1 - dampening) * g``;
    ``p -= lr * v``, or with ``nesterov=True`` ``p -= lr * (g + mu * v)``.
    (The notes write ``v = mu*v - lr*dx; x += v``: the same steps while lr is constant.)
    See: https://pytorch.org/docs/stable/generated/torch.optim.SGD.html
    """

    slots = ("momentum_buffer",)
    hyper = ("momentum", "dampening", "nesterov")

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, dampening: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay)
        _check_nonneg("SGD", momentum=momentum, dampening=dampening)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise VolnetError(f"SGD: nesterov=True needs momentum > 0 and dampening 0, got "
                              f"momentum={momentum}, dampening={dampening}")
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)

    def active_slots(self) -> tuple[str, ...]:
        return self.slots if self.momentum else ()

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray]) -> None:
        t = p.dtype.type
        if self.momentum:
            buf = st["momentum_buffer"]
            if self.steps[name] == 1:
                buf[...] = g
            else:
                buf *= t(self.momentum)
                buf += t(1.0 - self.dampening) * g
            g = g + t(self.momentum) * buf if self.nesterov else buf
        p -= t(self.lr) * g


class Momentum(SGD):
    """SGD with momentum (default 0.9): ``SGD(params, lr, momentum=0.9)``."""

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0, dampening: float = 0.0) -> None:
        super().__init__(params, lr, momentum=momentum, weight_decay=weight_decay, dampening=dampening)


class Nesterov(SGD):
    """SGD with Nesterov momentum (default 0.9): ``SGD(params, lr, momentum=0.9, nesterov=True)``."""

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


class Adagrad(Optimizer):
    """Adagrad as ``torch.optim.Adagrad`` (initial accumulator 0).

    ``cache += g*g; p -= clr * g / (sqrt(cache) + eps)`` with ``clr = lr / (1 + (t - 1) * lr_decay)``.
    See: https://pytorch.org/docs/stable/generated/torch.optim.Adagrad.html
    """

    slots = ("sum",)
    hyper = ("lr_decay", "eps")

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 0.01, eps: float = 1e-10,
                 weight_decay: float = 0.0, lr_decay: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay)
        _check_nonneg("Adagrad", eps=eps, lr_decay=lr_decay)
        self.eps = float(eps)
        self.lr_decay = float(lr_decay)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray]) -> None:
        t = p.dtype.type
        clr = self.lr / (1 + (self.steps[name] - 1) * self.lr_decay)
        acc = st["sum"]
        acc += g * g
        std = np.sqrt(acc)
        std += t(self.eps)
        p -= t(clr) * (g / std)


class RMSProp(Optimizer):
    """RMSProp as ``torch.optim.RMSprop`` (non-centered by default).

    ``cache = alpha * cache + (1 - alpha) * g*g``; ``p -= lr * g / (sqrt(cache) + eps)``.
    ``centered=True`` divides by ``sqrt(cache - mean_g**2) + eps``; ``momentum > 0`` keeps
    ``buf = momentum * buf + g / (...)`` and steps ``p -= lr * buf``.
    See: https://pytorch.org/docs/stable/generated/torch.optim.RMSprop.html
    """

    slots = ("square_avg", "momentum_buffer", "grad_avg")
    hyper = ("alpha", "eps", "momentum", "centered")

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 0.01, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False) -> None:
        super().__init__(params, lr, weight_decay)
        _check_nonneg("RMSProp", alpha=alpha, eps=eps, momentum=momentum)
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.centered = bool(centered)

    def active_slots(self) -> tuple[str, ...]:
        return (("square_avg",) + (("momentum_buffer",) if self.momentum else ())
                + (("grad_avg",) if self.centered else ()))

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray]) -> None:
        t = p.dtype.type
        sq = st["square_avg"]
        sq *= t(self.alpha)
        sq += t(1.0 - self.alpha) * (g * g)
        if self.centered:
            ga = st["grad_avg"]
            ga += t(1.0 - self.alpha) * (g - ga)  # torch: grad_avg.lerp_(grad, 1 - alpha)
            avg = np.sqrt(sq - ga * ga)
        else:
            avg = np.sqrt(sq)
        avg += t(self.eps)
        if self.momentum:
            buf = st["momentum_buffer"]
            buf *= t(self.momentum)
            buf += g / avg
            p -= t(self.lr) * buf
        else:
            p -= t(self.lr) * (g / avg)


class Adam(Optimizer):
    """Adam as ``torch.optim.Adam`` (bias-corrected, L2 weight decay added to the gradient).

    ``m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g``;
    ``p -= (lr / (1 - b1**t)) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)``.
    See: https://pytorch.org/docs/stable/generated/torch.optim.Adam.html
    """

    slots = ("exp_avg", "exp_avg_sq")
    hyper = ("betas", "eps")
    decoupled = False

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay)
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise VolnetError(f"{type(self).__name__}: betas must be in [0, 1), got {betas}")
        _check_nonneg(type(self).__name__, eps=eps)
        self.betas = (b1, b2)
        self.eps = float(eps)
        self._scratch: dict[str, np.ndarray] = {}  # dtype -> one work array, not optimizer state

    def step(self, grads: Arrays) -> None:
        if not self.decoupled:
            return super().step(grads)
        wd, self.weight_decay = self.weight_decay, 0.0
        try:
            for name in grads:
                p = self.params.get(name)
                if p is not None and wd:
                    p *= p.dtype.type(1.0 - self.lr * wd)  # AdamW: decay the weights, not the gradient
            super().step(grads)
        finally:
            self.weight_decay = wd

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray]) -> None:
        t = p.dtype.type
        b1, b2 = self.betas
        step = self.steps[name]
        m, v = st["exp_avg"], st["exp_avg_sq"]
        # the same arithmetic as torch, in place through one scratch array (no temporaries)
        # one work array for all parameters, sized to the largest (not one per parameter: a third
        # copy of the weights) -- the memory ledger counts it once
        buf = self._scratch.get(p.dtype.name)
        if buf is None or buf.size < p.size:
            n = max(q.size for q in self.params.values())
            buf = self._scratch[p.dtype.name] = np.empty(n, p.dtype)
        s = buf[:p.size].reshape(p.shape)
        np.subtract(g, m, out=s)
        s *= t(1.0 - b1)
        m += s  # torch: exp_avg.lerp_(grad, 1 - beta1)
        v *= t(b2)
        np.multiply(g, g, out=s)
        s *= t(1.0 - b2)
        v += s
        step_size = self.lr / (1.0 - b1 ** step)
        np.sqrt(v, out=s)  # denom
        s /= t(math.sqrt(1.0 - b2 ** step))
        s += t(self.eps)
        np.divide(m, s, out=s)
        s *= t(step_size)
        p -= s


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW`` (default ``weight_decay=0.01``):
    ``p *= 1 - lr * weight_decay`` before the Adam step."""

    decoupled = True

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": Adagrad,
    "rmsprop": RMSProp, "adam": Adam, "adamw": AdamW,
}


def make_optimizer(name: str, params: Mapping[str, np.ndarray], lr: float | None = None,
                   **kw: Any) -> Optimizer:
    """Build an optimizer by name: sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw.

    ``lr=None`` takes the class default (sgd/momentum/nesterov/adagrad/rmsprop 0.01, adam/adamw 1e-3);
    ``kw`` are the class's keyword arguments (``momentum``, ``weight_decay``, ``betas``, ``eps``, ...).
    """
    cls = OPTIMIZERS.get(name.lower())
    if cls is None:
        raise VolnetError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    try:
        return cls(params, **kw) if lr is None else cls(params, lr, **kw)
    except TypeError as e:
        raise VolnetError(f"optimizer {name!r}: {e}; see help(volnet.optim.{cls.__name__})") from None


def state_size_factor(name: str, **kw: Any) -> int:
    """Parameter-sized state arrays the named optimizer keeps, without building it (for memory summaries):
    sgd 0 (1 with momentum), momentum/nesterov/adagrad 1, rmsprop 1 (+1 momentum, +1 centered), adam 2."""
    return make_optimizer(name, {}, **kw).state_size_factor


# ------------------------------------------------------------------------------------------ schedules

class StepLR:
    """``lr_at(t) = base_lr * gamma ** (t // step_size)`` (torch.optim.lr_scheduler.StepLR)."""

    def __init__(self, base_lr: float, step_size: int, gamma: float = 0.1) -> None:
        if step_size < 1:
            raise VolnetError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.base_lr, self.step_size, self.gamma = float(base_lr), int(step_size), float(gamma)

    def __call__(self, t: int) -> float:
        return self.base_lr * self.gamma ** (int(t) // self.step_size)

    lr_at = __call__

    def __repr__(self) -> str:
        return f"StepLR(base_lr={self.base_lr}, step_size={self.step_size}, gamma={self.gamma})"


class CosineLR:
    """Cosine annealing from ``base_lr`` at t=0 to ``min_lr`` at t=total (torch CosineAnnealingLR with
    T_max=total, eta_min=min_lr): ``min + (base - min) * (1 + cos(pi * t / total)) / 2``; ``min_lr``
    after ``total`` (torch would rise again)."""

    def __init__(self, base_lr: float, total: int, min_lr: float = 0.0) -> None:
        if total < 1:
            raise VolnetError(f"CosineLR: total must be >= 1, got {total}")
        self.base_lr, self.total, self.min_lr = float(base_lr), int(total), float(min_lr)

    def __call__(self, t: int) -> float:
        t = min(max(int(t), 0), self.total)
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t / self.total)) / 2

    lr_at = __call__

    def __repr__(self) -> str:
        return f"CosineLR(base_lr={self.base_lr}, total={self.total}, min_lr={self.min_lr})"


class OneCycleLR:
    """The one-cycle policy (Smith & Topin 2018), exactly ``torch.optim.lr_scheduler.OneCycleLR`` with
    cosine annealing and two phases: from ``max_lr / div`` up to ``max_lr`` over steps [0, r], then down
    to ``max_lr / (div * final_div)`` at step ``total - 1``, with ``r = pct_start * total - 1``; in each
    phase ``lr = end + (start - end) * (1 + cos(pi * p)) / 2``, p the fraction of the phase done.

    >>> s = OneCycleLR(0.1, total=100)
    >>> round(s(0), 6), round(s(29), 6), round(s(99), 10)
    (0.004, 0.1, 4e-07)
    """

    def __init__(self, max_lr: float, total: int, pct_start: float = 0.3, div: float = 25.0,
                 final_div: float = 1e4) -> None:
        if total < 1 or not 0 < pct_start < 1 or div <= 0 or final_div <= 0:
            raise VolnetError(f"OneCycleLR: need total >= 1, 0 < pct_start < 1, div > 0, final_div > 0, got "
                              f"total={total}, pct_start={pct_start}, div={div}, final_div={final_div}")
        self.base_lr, self.total, self.pct_start = float(max_lr), int(total), float(pct_start)
        self.div, self.final_div = float(div), float(final_div)

    def __call__(self, t: int) -> float:
        t = min(max(int(t), 0), self.total - 1)
        start, peak = self.base_lr / self.div, self.base_lr
        final = start / self.final_div
        rise = max(self.pct_start * self.total - 1, 0.0)  # too short a run: no rise, or no fall
        down = self.total - 1 - rise
        if t <= rise and rise > 0:
            a, b, p = start, peak, t / rise
        elif down > 0:
            a, b, p = peak, final, (t - rise) / down
        else:
            return peak
        return b + (a - b) * (1 + math.cos(math.pi * p)) / 2

    lr_at = __call__

    def __repr__(self) -> str:
        return f"OneCycleLR(max_lr={self.base_lr}, total={self.total}, pct_start={self.pct_start})"


class ConstantLR:
    """``lr_at(t) = lr`` for every t."""

    def __init__(self, lr: float) -> None:
        self.base_lr = float(lr)

    def __call__(self, t: int) -> float:
        return self.base_lr

    lr_at = __call__

    def __repr__(self) -> str:
        return f"ConstantLR({self.base_lr})"


class Warmup:
    """Linear warm-up in front of a schedule: ``lr_at(t) = schedule(t) * f(t)`` with
    ``f(t) = start_factor + (1 - start_factor) * t / steps`` for ``t < steps``, 1 after
    (torch LinearLR(start_factor, total_iters=steps) chained with the schedule)."""

    def __init__(self, schedule: Callable[[int], float], steps: int, start_factor: float = 0.1) -> None:
        if steps < 0 or not 0 < start_factor <= 1:
            raise VolnetError(f"warmup: need steps >= 0 and 0 < start_factor <= 1, got steps={steps}, "
                              f"start_factor={start_factor}")
        self.schedule, self.steps, self.start_factor = schedule, int(steps), float(start_factor)

    def __call__(self, t: int) -> float:
        t = int(t)
        f = 1.0 if t >= self.steps else self.start_factor + (1 - self.start_factor) * t / self.steps
        return self.schedule(t) * f

    lr_at = __call__

    def __repr__(self) -> str:
        return f"Warmup({self.schedule!r}, steps={self.steps}, start_factor={self.start_factor})"


def warmup(schedule: Callable[[int], float], steps: int, start_factor: float = 0.1) -> Warmup:
    """Wrap ``schedule`` with a linear warm-up over ``steps`` steps/epochs (see ``Warmup``)."""
    return Warmup(schedule, steps, start_factor)


def make_schedule(name: str, base_lr: float, *, total: int | None = None, step_size: int | None = None,
                  gamma: float = 0.1, min_lr: float = 0.0, warmup_steps: int = 0,
                  warmup_start: float = 0.1) -> Callable[[int], float]:
    """Build a schedule by name: ``constant``, ``step`` (needs ``step_size``), ``cosine`` (needs ``total``);
    ``warmup_steps > 0`` wraps it in a linear warm-up. ``onecycle`` (needs ``total``) is
    :class:`OneCycleLR` whose rise lasts ``warmup_steps`` (0: 30% of ``total``, torch's default)."""
    key = name.lower()
    sched: Callable[[int], float]
    if key in ("constant", "none"):
        sched = ConstantLR(base_lr)
    elif key == "step":
        if step_size is None:
            raise VolnetError("schedule 'step' needs step_size (epochs between decays)")
        sched = StepLR(base_lr, step_size, gamma)
    elif key == "cosine":
        if total is None:
            raise VolnetError("schedule 'cosine' needs total (number of epochs or steps)")
        sched = CosineLR(base_lr, total, min_lr)
    elif key == "onecycle":
        if total is None:
            raise VolnetError("schedule 'onecycle' needs total (number of steps)")
        return OneCycleLR(base_lr, total, warmup_steps / total if 0 < warmup_steps < total else 0.3)
    else:
        raise VolnetError(f"unknown schedule {name!r}; choose constant, step, cosine or onecycle")
    return Warmup(sched, warmup_steps, warmup_start) if warmup_steps > 0 else sched


# ------------------------------------------------------------------------------------------ clipping

def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float, norm_type: float = 2.0) -> float:
    """Scale all gradients in place so their joint norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: ``total = ||(||g_1||, ||g_2||, ...)||`` (p-norm, ``inf`` =
    max abs), every gradient multiplied by ``min(1, max_norm / (total + 1e-6))``.
    """
    arrays = list(grads.values())
    if not arrays:
        return 0.0
    norm_type = float(norm_type)
    if norm_type == math.inf:
        norms = [float(np.max(np.abs(g))) if g.size else 0.0 for g in arrays]
        total = max(norms)
    else:
        norms = [float(np.linalg.norm(g.ravel(), ord=norm_type)) if g.size else 0.0 for g in arrays]
        total = float(np.linalg.norm(np.asarray(norms), ord=norm_type))
    coef = min(1.0, float(max_norm) / (total + 1e-6))
    if coef < 1.0:
        for g in arrays:
            g *= g.dtype.type(coef)
    return total
