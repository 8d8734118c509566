"""Stateful schedules: torch's ReduceLROnPlateau."""
from __future__ import annotations

import math
from typing import Literal, SupportsFloat, Union

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
