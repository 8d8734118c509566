"""Composition: a warmup factor, schedules joined at boundaries, scaling and products."""
from __future__ import annotations

from bisect import bisect_right
from typing import Iterable, Union

import numpy as np

from ._base import Schedule, _int, _int_list, _real
from ._decay import Constant, _as_schedule


class LinearWarmup(Schedule):
    r"""A linear factor from ``start_factor`` to ``end_factor`` over ``total_iters`` steps.

    .. math:: \eta_n = \mathrm{base}(n)\left(s + (e - s)\frac{\min(n, T)}{T}\right)

    With a number as ``base`` this is torch's
    ``LinearLR(start_factor=s, end_factor=e, total_iters=T)`` on an optimizer
    whose lr is ``base``; with a schedule as ``base`` it is a warmup factor
    multiplied onto that schedule, which keeps running from ``n = 0`` (torch's
    ``ChainedScheduler([LinearLR, ...])``). To start another schedule only when
    the warmup ends, join them with :class:`Sequence` instead.

    Parameters
    ----------
    base : float or Schedule
        The rate (or schedule) the factor multiplies.
    start_factor : float
        Factor at ``n = 0`` (>= 0; torch requires > 0).
    end_factor : float
        Factor from ``n = total_iters`` on (>= 0).
    total_iters : int
        Length of the ramp (>= 1).

    Examples
    --------
    >>> s = LinearWarmup(0.1, start_factor=0.0, end_factor=1.0, total_iters=4)
    >>> [round(s(n), 12) for n in range(6)]
    [0.0, 0.025, 0.05, 0.075, 0.1, 0.1]
    >>> w = LinearWarmup(CosineDecay(0.1, 100), start_factor=0.1, total_iters=10)
    """

    def __init__(self, base: Union[Schedule, float], start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5) -> None:
        o = "LinearWarmup"
        self.base = _as_schedule(o, "base", base)
        self.start_factor = _real(o, "start_factor", start_factor, lo=0.0)
        self.end_factor = _real(o, "end_factor", end_factor, lo=0.0)
        self.total_iters = _int(o, "total_iters", total_iters, lo=1)
        self._config = {"base": self.base, "start_factor": self.start_factor,
                        "end_factor": self.end_factor, "total_iters": self.total_iters}
        self._delta = self.end_factor - self.start_factor
        self._lo, self._hi = sorted((self.start_factor, self.end_factor))
        # a constant base (the usual warmup of a number) is read once, here
        self._base_value = self.base._value if type(self.base) is Constant else None

    def _scalar(self, n):
        T = self.total_iters
        if n >= T:
            f = self.end_factor  # exactly: s + (e - s) * T / T may miss it by an ulp
        else:
            f = self.start_factor + self._delta * n / T
            if f < self._lo:  # _clip, inlined: this runs once per optimizer step
                f = self._lo
            elif f > self._hi:
                f = self._hi
        b = self._base_value
        return (self.base._scalar(n) if b is None else b) * f

    def _array(self, n):
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        f = np.where(n >= T, e, np.clip(s + (e - s) * np.minimum(T, n) / T, self._lo, self._hi))
        return self.base._array(n) * f


# --------------------------------------------------------------------------- composition
class Sequence(Schedule):
    r"""Schedules joined at boundaries; each one sees the steps since its boundary.

    .. math:: \eta_n = s_i(n - b_{i-1}), \quad i = \#\{b \in \mathrm{boundaries}: b \le n\}
              \ (b_{-1} = 0)

    Source: Optax ``join_schedules`` (same semantics). torch's
    ``SequentialLR`` agrees for schedulers with a closed form (each restarts at
    its milestone from its initial value); it differs where a torch scheduler
    depends on the lr left by the previous one.

    Parameters
    ----------
    schedules : list of Schedule or float
        ``len(boundaries) + 1`` pieces (numbers become :class:`Constant`).
    boundaries : list of int
        Strictly increasing steps (>= 0) where the next piece starts.

    Examples
    --------
    >>> warm = LinearWarmup(0.1, start_factor=0.0, total_iters=10)
    >>> s = Sequence([warm, CosineDecay(0.1, 90)], boundaries=[10])
    >>> round(s(5), 12), s(10), s(100)
    (0.05, 0.1, 0.0)
    """

    def __init__(self, schedules: Iterable[Union[Schedule, float]],
                 boundaries: Iterable[int]) -> None:
        o = "Sequence"
        if isinstance(schedules, (str, bytes)) or not hasattr(schedules, "__iter__"):
            raise TypeError(f"{o}: schedules must be a list of schedules, got {schedules!r}")
        self.schedules = [_as_schedule(o, f"schedules[{i}]", s) for i, s in enumerate(schedules)]
        self.boundaries = _int_list(o, "boundaries", boundaries, increasing=True)
        if len(self.schedules) != len(self.boundaries) + 1:
            raise ValueError(f"{o}: needs len(boundaries) + 1 = {len(self.boundaries) + 1} "
                             f"schedules, got {len(self.schedules)}")
        self._b = np.array(self.boundaries, dtype=np.int64)
        self._offsets = [0] + self.boundaries
        self._config = {"schedules": list(self.schedules), "boundaries": list(self.boundaries)}
        self._pieces = tuple(s._scalar for s in self.schedules)   # once per step: no lookups

    def _scalar(self, n):
        i = bisect_right(self.boundaries, n)
        return self._pieces[i](n - self._offsets[i])

    def _array(self, n):
        idx = np.searchsorted(self._b, n, side="right")
        out = np.empty(n.shape)
        for i, s in enumerate(self.schedules):  # a loop over pieces, not over steps
            sel = idx == i
            if sel.any():
                out[sel] = s._array(n[sel] - self._offsets[i])
        return out


def join_schedules(schedules: Iterable[Union[Schedule, float]],
                   boundaries: Iterable[int]) -> Sequence:
    """Optax's name for :class:`Sequence`: ``Sequence(schedules, boundaries)``."""
    return Sequence(schedules, boundaries)


def _merge_clamps(schedules):
    clamps = [s._clamp_min for s in schedules if s._clamp_min is not None]
    return max(clamps) if clamps else None


class Scaled(Schedule):
    r"""A schedule times a constant: ``eta_n = factor * schedule(n)`` (also ``factor * s``).

    When ``schedule`` is a :class:`ReduceOnPlateau` (or contains one as a
    factor), its ``min_lr`` clamps the scaled value.

    Parameters
    ----------
    schedule : Schedule
    factor : float
        Multiplier (>= 0).

    Examples
    --------
    >>> s = 0.5 * StepDecay(0.1, drop=0.5, every=10)
    >>> type(s).__name__, s(0)
    ('Scaled', 0.05)
    """

    def __init__(self, schedule: Schedule, factor: float) -> None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"Scaled: schedule must be an lrfast Schedule, got {schedule!r}")
        self.schedule = schedule
        self.factor = _real("Scaled", "factor", factor, lo=0.0)
        self._clamp_min = schedule._clamp_min
        self._config = {"schedule": self.schedule, "factor": self.factor}

    def _raw_scalar(self, n):
        return self.factor * self.schedule._raw_scalar(n)

    def _raw_array(self, n):
        return self.factor * self.schedule._raw_array(n)

    def _scalar(self, n):
        v = self.factor * self.schedule._raw_scalar(n)
        c = self._clamp_min
        return v if c is None else max(v, c)

    def _array(self, n):
        v = self.factor * self.schedule._raw_array(n)
        c = self._clamp_min
        return v if c is None else np.maximum(v, c)


class Product(Schedule):
    r"""The product of schedules: ``eta_n = prod_i s_i(n)`` (also ``s1 * s2``).

    A :class:`ReduceOnPlateau` factor contributes its current level, and its
    ``min_lr`` clamps the whole product:
    ``(rop * CosineDecay(0.1, 1000))(n) = max(level * cosine(n), min_lr)``.
    The product holds the very objects given, so stepping ``rop`` changes it.

    Parameters
    ----------
    schedules : list of Schedule
        At least one factor.

    Examples
    --------
    >>> s = CosineDecay(1.0, 100) * ExponentialDecay(0.1, decay=0.0)
    >>> type(s).__name__, s(0), round(s(50), 12)
    ('Product', 0.1, 0.05)
    """

    def __init__(self, schedules: Iterable[Schedule]) -> None:
        if isinstance(schedules, (str, bytes)) or not hasattr(schedules, "__iter__"):
            raise TypeError(f"Product: schedules must be a list of schedules, got {schedules!r}")
        schedules = list(schedules)
        if not schedules:
            raise ValueError("Product: schedules must not be empty")
        for i, s in enumerate(schedules):
            if not isinstance(s, Schedule):
                raise TypeError(f"Product: schedules[{i}] must be an lrfast Schedule, got {s!r}")
        self.schedules = schedules
        self._clamp_min = _merge_clamps(schedules)
        self._config = {"schedules": list(schedules)}

    def _raw_scalar(self, n):
        v = 1.0
        for s in self.schedules:
            v *= s._raw_scalar(n)
        return v

    def _raw_array(self, n):
        v = np.ones(n.shape)
        for s in self.schedules:
            v = v * s._raw_array(n)
        return v

    def _scalar(self, n):
        v = self._raw_scalar(n)
        c = self._clamp_min
        return v if c is None else max(v, c)

    def _array(self, n):
        v = self._raw_array(n)
        c = self._clamp_min
        return v if c is None else np.maximum(v, c)
