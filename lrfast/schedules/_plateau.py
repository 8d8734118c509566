"""Stateful schedules: torch's ReduceLROnPlateau and Keras' LearningRateScheduler."""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Literal, SupportsFloat, Union

import numpy as np

from ._base import Schedule, _choice, _from_json_float, _int, _json_float, _real
from ._decay import _as_schedule


# --------------------------------------------------------------------------- stateful
class ReduceOnPlateau(Schedule):
    r"""torch's ``ReduceLROnPlateau`` as a schedule: reduce when a metric stalls.

    The one stateful schedule: call ``.step(metric)`` once per evaluation
    (epoch). It keeps a *level*, starting at ``initial``; when the metric has
    not improved (by ``threshold``, relative or absolute, in ``mode`` min or
    max) for more than ``patience`` calls, the level becomes
    ``max(level * factor, min_lr)`` (skipped when that changes it by less than
    ``eps``), followed by ``cooldown`` calls during which bad epochs are not
    counted. Exactly torch's rules.

    Value: ``max(level * base(n), min_lr)``, where ``base`` is ``1`` when
    omitted. Standalone, ``ReduceOnPlateau(0.1, ...)`` is torch's scheduler on
    an optimizer with lr 0.1. As a factor, ``ReduceOnPlateau(...) * s`` (or
    ``base=s``) multiplies any schedule by the level, and ``min_lr`` clamps the
    product. Products keep a reference to this object, so ``rop.step(metric)``
    updates every schedule built from it.

    Parameters
    ----------
    initial : float
        Initial level (>= 0): the lr standalone, 1.0 as a factor.
    base : Schedule or float, optional
        Schedule multiplied by the level.
    mode : {"min", "max"}
        Whether the metric should decrease or increase.
    factor : float
        Reduction factor, in (0, 1).
    patience : int
        Bad calls tolerated before a reduction (>= 0).
    threshold : float
        Minimal significant improvement (>= 0).
    threshold_mode : {"rel", "abs"}
        Improvement over ``best * (1 -/+ threshold)`` or ``best -/+ threshold``.
    cooldown : int
        Calls after a reduction during which bad calls are ignored (>= 0).
    min_lr : float
        Lower bound of the level and of the value, in [0, initial].
    eps : float
        Minimal change of the level to apply a reduction (>= 0).

    Examples
    --------
    >>> rop = ReduceOnPlateau(0.1, factor=0.5, patience=1)
    >>> for loss in [1.0, 0.9, 0.9, 0.9]:
    ...     rop.step(loss)
    >>> rop(0)
    0.05
    >>> s = ReduceOnPlateau(factor=0.5, patience=0, min_lr=1e-3) * CosineDecay(0.1, 100)
    """

    def __init__(self, initial: float = 1.0, *, base: Union[Schedule, float, None] = None,
                 mode: Literal["min", "max"] = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: Literal["rel", "abs"] = "rel",
                 cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8) -> None:
        o = "ReduceOnPlateau"
        self.initial = _real(o, "initial", initial, lo=0.0)
        self.base = None if base is None else _as_schedule(o, "base", base)
        self.mode = _choice(o, "mode", mode, ("min", "max"))
        self.factor = _real(o, "factor", factor, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        self.patience = _int(o, "patience", patience, lo=0)
        self.threshold = _real(o, "threshold", threshold, lo=0.0)
        self.threshold_mode = _choice(o, "threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = _int(o, "cooldown", cooldown, lo=0)
        self.min_lr = _real(o, "min_lr", min_lr, lo=0.0)
        if self.min_lr > self.initial:
            raise ValueError(f"{o}: min_lr must be <= initial ({self.initial!r}), "
                             f"got {min_lr!r}")
        self.eps = _real(o, "eps", eps, lo=0.0)
        self._clamp_min = self.min_lr
        self._config = {"initial": self.initial, "base": self.base, "mode": self.mode,
                        "factor": self.factor, "patience": self.patience,
                        "threshold": self.threshold, "threshold_mode": self.threshold_mode,
                        "cooldown": self.cooldown, "min_lr": self.min_lr, "eps": self.eps}
        self.reset()

    def reset(self) -> None:
        """Forget the history: level back to ``initial``, counters to zero."""
        self.level = self.initial
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metric: SupportsFloat) -> None:
        """Record one value of the monitored metric (torch's ``scheduler.step(metric)``)."""
        try:
            current = float(metric)
        except (TypeError, ValueError) as e:
            raise TypeError(f"ReduceOnPlateau.step: metric must be a number, got "
                            f"{metric!r}") from e
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.level
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.level = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _raw_scalar(self, n):
        return self.level if self.base is None else self.level * self.base._scalar(n)

    def _raw_array(self, n):
        if self.base is None:
            return np.full(n.shape, self.level)
        return self.level * self.base._array(n)

    def _scalar(self, n):
        return max(self._raw_scalar(n), self.min_lr)

    def _array(self, n):
        return np.maximum(self._raw_array(n), self.min_lr)

    def _own_state(self):
        return {"level": self.level, "best": _json_float(self.best),
                "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter,
                "last_epoch": self.last_epoch}

    def _load_own_state(self, state):
        o = "ReduceOnPlateau"
        keys = {"level", "best", "num_bad_epochs", "cooldown_counter", "last_epoch"}
        if set(state) != keys:
            raise ValueError(f"{o}: state must have keys {sorted(keys)}, got {sorted(state)}")
        level = _from_json_float(o, "level", state["level"])
        if not (math.isfinite(level) and level >= 0):
            raise ValueError(f"{o}: state level must be finite and >= 0, got {level!r}")
        best = _from_json_float(o, "best", state["best"])
        counters = {k: _int(o, f"state {k}", state[k], lo=0)
                    for k in ("num_bad_epochs", "cooldown_counter", "last_epoch")}
        self.level, self.best = level, best
        for k, v in counters.items():
            setattr(self, k, v)


class LearningRateScheduler(Schedule):
    r"""Keras' ``LearningRateScheduler(schedule)`` callback as a stateful schedule.

    Keras calls ``lr = schedule(epoch, lr)`` at the start of every epoch, from
    the optimizer's initial rate; this schedule does the same with epoch
    ``e = n // steps_per_epoch``:

    .. math:: \eta^{(-1)} = \mathrm{initial}, \qquad
              \eta^{(e)} = \mathrm{schedule}(e, \eta^{(e-1)}), \qquad
              \eta_n = \eta^{(\lfloor n / \mathrm{steps\_per\_epoch} \rfloor)}

    ``schedule`` is any callable ``(epoch, lr) -> lr``, or an lrfast
    :class:`Schedule` (called as ``schedule(epoch)``, Keras' one-argument
    form). The recursion is replayed as needed: the schedule keeps the last
    epoch evaluated and its rate as its state (``state_dict()``, saved in the
    optimizer's ``state_dict``), so an optimizer stepping forward costs one
    call of ``schedule`` per epoch, and an evaluation before that epoch starts
    over from ``initial``. ``schedule`` must therefore be a pure function of
    its arguments, as Keras' are in practice. Its values must be finite and
    >= 0. A plain callable is recorded in ``get_config()`` by name only, as
    :func:`serialize` does: pass it again to rebuild the schedule.

    Source: ``keras.callbacks.LearningRateScheduler``.

    Parameters
    ----------
    schedule : callable or Schedule
        ``(epoch, lr) -> lr``, or a schedule of the epoch.
    initial : float
        The optimizer's rate before the first epoch (>= 0).
    steps_per_epoch : int
        Optimizer steps per epoch (>= 1).

    Examples
    --------
    >>> def halve_after_2(epoch, lr):
    ...     return lr if epoch < 2 else lr * 0.5
    >>> s = LearningRateScheduler(halve_after_2, 0.1, steps_per_epoch=10)
    >>> s(0), s(19), s(20), s(30), s.state_dict()
    (0.1, 0.1, 0.05, 0.025, {'epoch': 3, 'lr': 0.025})
    """

    def __init__(self, schedule: Union[Schedule, Callable[[int, float], float]],
                 initial: float = 0.001, steps_per_epoch: int = 1) -> None:
        o = "LearningRateScheduler"
        if isinstance(schedule, dict) and schedule.get("class") == "callable":
            raise ValueError(f"{o}: the schedule was a plain callable "
                             f"({schedule.get('name')!r}), saved by name only; pass the "
                             "callable again")
        if not callable(schedule):
            raise TypeError(f"{o}: schedule must be a callable (epoch, lr) -> lr or an "
                            f"lrfast Schedule, got {schedule!r}")
        self.schedule = schedule
        self.initial = _real(o, "initial", initial, lo=0.0)
        self.steps_per_epoch = _int(o, "steps_per_epoch", steps_per_epoch, lo=1)
        self._config = {"schedule": schedule, "initial": self.initial,
                        "steps_per_epoch": self.steps_per_epoch}
        self.reset()

    def reset(self) -> None:
        """Forget the replayed epochs: start over from ``initial``."""
        self.epoch = -1
        self.lr = self.initial

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        if not isinstance(self.schedule, Schedule):
            cfg["schedule"] = {"class": "callable", "name": getattr(
                self.schedule, "__qualname__", type(self.schedule).__qualname__)}
        return cfg

    def _next(self, epoch, lr):
        s = self.schedule
        v = s._scalar(epoch) if isinstance(s, Schedule) else s(epoch, lr)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"LearningRateScheduler: schedule({epoch}, {lr!r}) returned "
                            f"{v!r} ({type(v).__name__}), not a number")
        v = float(v)
        if not (math.isfinite(v) and v >= 0.0):
            raise ValueError(f"LearningRateScheduler: schedule({epoch}, {lr!r}) returned "
                             f"{v!r}; a rate must be finite and >= 0")
        return v

    def _scalar(self, n):
        e = n // self.steps_per_epoch
        epoch, lr = self.epoch, self.lr
        if e < epoch:
            epoch, lr = -1, self.initial
        while epoch < e:           # validated before anything is kept
            epoch += 1
            lr = self._next(epoch, lr)
        self.epoch, self.lr = epoch, lr
        return lr

    def _array(self, n):
        out = np.empty(n.shape)
        flat = n.ravel()
        order = np.argsort(flat, kind="stable")
        res = out.reshape(-1)
        for i in order:            # a loop over steps: the recursion is sequential
            res[i] = self._scalar(int(flat[i]))
        return out

    def _own_state(self):
        return {"epoch": self.epoch, "lr": self.lr}

    def _load_own_state(self, state):
        o = "LearningRateScheduler"
        if set(state) != {"epoch", "lr"}:
            raise ValueError(f"{o}: state must have keys ['epoch', 'lr'], got {sorted(state)}")
        epoch = state["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < -1:
            raise ValueError(f"{o}: state epoch must be an int >= -1, got {epoch!r}")
        lr = _from_json_float(o, "lr", state["lr"])
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"{o}: state lr must be finite and >= 0, got {lr!r}")
        self.epoch, self.lr = epoch, lr
