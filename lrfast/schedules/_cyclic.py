"""Cyclic schedules: SGDR's warm restarts, torch's 1cycle and cyclical rates (with
their momentum companions)."""
from __future__ import annotations

import math
from typing import Literal, Optional

import numpy as np

from ._base import Schedule, _bool, _choice, _int, _real
from ._decay import PiecewiseInterpolate
from ._numerics import _clip, _half_cos, _half_cos_np, _one_plus_cos_pi


class CosineRestarts(Schedule):
    r"""SGDR: cosine decay with warm restarts (Keras ``CosineDecayRestarts``).

    Cycle ``i = 0, 1, ...`` lasts ``T_i = first_decay_steps * t_mul^i`` steps
    and starts at ``S_i = first_decay_steps (t_mul^i - 1) / (t_mul - 1)``
    (``i * first_decay_steps`` when ``t_mul = 1``). At step ``n`` of cycle
    ``i`` (``S_i <= n < S_{i+1}``), with ``x = (n - S_i) / T_i``:

    .. math:: \eta_n = \mathrm{lr0}\left((1 - \alpha)\, m^i\, \tfrac12
              (1 + \cos \pi x) + \alpha\right)

    (``m = m_mul``). Sources: Loshchilov & Hutter, SGDR (ICLR 2017);
    ``keras.optimizers.schedules.CosineDecayRestarts``. torch's
    ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)`` is
    ``CosineRestarts(lr0, T_0, t_mul=T_mult, m_mul=1, alpha=eta_min / lr0)``.
    The cycle index is found in O(1) with a logarithm, then checked against
    the exact cycle starts (integers when ``first_decay_steps`` and ``t_mul``
    are), so a restart lands exactly on its step as in torch. Unlike Keras,
    ``t_mul < 1`` (whose cycles end after finitely many steps) and
    ``m_mul > 1`` (unbounded growth) are rejected.

    Parameters
    ----------
    lr0 : float
        Peak rate of the first cycle (>= 0).
    first_decay_steps : int
        Length of the first cycle (>= 1).
    t_mul : float
        Cycle length multiplier (>= 1).
    m_mul : float
        Peak multiplier per cycle, in [0, 1].
    alpha : float
        Floor as a fraction of ``lr0``, in [0, 1].
    exponent : float
        Power ``p`` (> 0) of the cosine factor, ``(0.5 (1 + cos pi x))**p``, as
        the ``exponent`` of Optax's cosine schedules (and so of each cycle of
        ``optax.sgdr_schedule``).

    Examples
    --------
    >>> s = CosineRestarts(0.1, first_decay_steps=10, t_mul=2.0, m_mul=0.5)
    >>> s(0), round(s(5), 12), s(10), s(30)  # restarts at n = 10 and n = 30
    (0.1, 0.05, 0.05, 0.025)
    """

    def __init__(self, lr0: float, first_decay_steps: int, t_mul: float = 2.0,
                 m_mul: float = 1.0, alpha: float = 0.0, exponent: float = 1.0) -> None:
        o = "CosineRestarts"
        self.lr0 = _real(o, "lr0", lr0, lo=0.0)
        self.first_decay_steps = _int(o, "first_decay_steps", first_decay_steps, lo=1)
        self.t_mul = _real(o, "t_mul", t_mul, lo=1.0)
        self.m_mul = _real(o, "m_mul", m_mul, lo=0.0, hi=1.0)
        self.alpha = _real(o, "alpha", alpha, lo=0.0, hi=1.0)
        self.exponent = _real(o, "exponent", exponent, lo=0.0, lo_open=True)
        self._config = {"lr0": self.lr0, "first_decay_steps": self.first_decay_steps,
                        "t_mul": self.t_mul, "m_mul": self.m_mul, "alpha": self.alpha}
        if self.exponent != 1.0:  # (configs without it stay as they were)
            self._config["exponent"] = self.exponent
        t = self.t_mul
        self._int_t = int(t) if t.is_integer() and t < 2 ** 53 else None
        if self._int_t is not None and self._int_t > 1:
            # exact powers t^j as floats while they are < 2**64 (covers every int64 step)
            powers, p = [], 1
            while p < 2 ** 64:
                powers.append(float(p))
                p *= self._int_t
            self._pow_table = np.array(powers)

    # cycle starts, exact in Python ints when T0 and t_mul are integers
    def _start(self, i):
        T0, t = self.first_decay_steps, self._int_t
        if t is not None:
            return T0 * (t ** i - 1) // (t - 1)
        return T0 * (self.t_mul ** i - 1.0) / (self.t_mul - 1.0)

    def _cycle(self, n):
        """(i, S_i, T_i) for step n."""
        T0 = self.first_decay_steps
        if self.t_mul == 1.0:
            i = n // T0
            return i, i * T0, T0
        t = self.t_mul
        i = max(0, int(math.floor(math.log1p(n * (t - 1.0) / T0) / math.log(t))))
        if self._reached(self._start(i + 1), n):
            i += 1
        elif not self._reached(self._start(i), n):
            i -= 1
        length = T0 * self._int_t ** i if self._int_t is not None else T0 * t ** i
        return i, self._start(i), length

    def _reached(self, start, n):
        # Integer t_mul: exact integers. Otherwise a start within 1e-12 (relative) of an
        # integer step is that step (t_mul = 1.3: S_2 = 23 computes as 23.000000000000004).
        if self._int_t is not None:
            return start <= n
        return start - n <= 1e-12 * start

    def _scalar(self, n):
        i, start, length = self._cycle(n)
        hc = _half_cos(max(float(n - start), 0.0), float(length))
        if self.exponent != 1.0:
            hc = hc ** self.exponent
        v = self.lr0 * ((1.0 - self.alpha) * self.m_mul ** i * hc + self.alpha)
        return v if v <= self.lr0 else self.lr0  # the bracket can round above 1

    def _array(self, n):
        T0 = float(self.first_decay_steps)
        nf = n.astype(np.float64)
        if self.t_mul == 1.0:
            i = (n // self.first_decay_steps).astype(np.float64)
            # the offset in the cycle, exact in int64 (nf - i * T0 loses it past 2**53)
            nf = (n % self.first_decay_steps).astype(np.float64)
            start, length = 0.0, np.full(n.shape, T0)
        else:
            t = self.t_mul
            i = np.maximum(0.0, np.floor(np.log1p(nf * (t - 1.0) / T0) / math.log(t)))
            if self._int_t is not None:
                table = self._pow_table

                def tpow(j):
                    return table[np.minimum(j.astype(np.int64), len(table) - 1)]
            else:
                def tpow(j):
                    return np.power(t, j)

            def start_of(j):
                return T0 * (tpow(j) - 1.0) / (t - 1.0)

            if self._int_t is not None:
                def reached(start):
                    return start <= nf
            else:
                def reached(start):
                    return start - nf <= 1e-12 * start
            up = reached(start_of(i + 1.0))
            i = np.where(up, i + 1.0, np.where(reached(start_of(i)), i, i - 1.0))
            start, length = start_of(i), T0 * tpow(i)
        hc = _half_cos_np(np.maximum(nf - start, 0.0), length)
        if self.exponent != 1.0:
            hc = hc ** self.exponent
        return np.minimum(self.lr0 * ((1.0 - self.alpha) * np.power(self.m_mul, i) * hc
                                      + self.alpha), self.lr0)


class _OneCycleBase(Schedule):
    """Phases of torch's OneCycleLR, shared by the lr and its momentum companion."""

    _owner = "OneCycle"

    def _init_phases(self, total_steps, pct_start, anneal_strategy, three_phase):
        o = self._owner
        self.total_steps = _int(o, "total_steps", total_steps, lo=1)
        self.pct_start = _real(o, "pct_start", pct_start, lo=0.0, hi=1.0)
        self.anneal_strategy = _choice(o, "anneal_strategy", anneal_strategy, ("cos", "linear"))
        self.three_phase = _bool(o, "three_phase", three_phase)
        T, p = self.total_steps, self.pct_start
        if self.three_phase:
            if p > 0.5:
                raise ValueError(f"{o}: pct_start must be <= 0.5 with three_phase=True (the "
                                 f"first two phases take 2 * pct_start of the cycle), got {p!r}")
            ends = [float(p * T) - 1, float(2 * p * T) - 2, T - 1]
        else:
            ends = [float(p * T) - 1, T - 1]
        starts = [0.0] + ends[:-1]
        for i, (a, b) in enumerate(zip(starts, ends)):
            if b == a:
                raise ValueError(f"{o}: pct_start={p!r} with total_steps={T} gives phase {i + 1} "
                                 "zero length (torch divides by zero there); change either")
        self._ends, self._starts = ends, starts
        self._ends_np, self._starts_np = np.array(ends), np.array(starts)

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * _one_plus_cos_pi(pct)
        return (end - start) * pct + start

    def _scalar(self, n):
        n = min(n, self.total_steps - 1)  # hold the final value (torch raises after the end)
        last = len(self._ends) - 1
        for i, end in enumerate(self._ends):
            if n <= end or i == last:
                start = self._starts[i]
                a, b = self._values[i]
                lo, hi = self._bounds[i]
                return _clip(self._anneal(a, b, (n - start) / (end - start)), lo, hi)

    def _array(self, n):
        nf = np.minimum(n, self.total_steps - 1).astype(np.float64)
        i = np.searchsorted(self._ends_np[:-1], nf, side="left")
        start, end = self._starts_np[i], self._ends_np[i]
        a = self._values_np[i, 0]
        b = self._values_np[i, 1]
        pct = (nf - start) / (end - start)
        if self.anneal_strategy == "cos":
            v = b + (a - b) / 2.0 * (2.0 * _half_cos_np(pct, 1.0))
        else:
            v = (b - a) * pct + a
        return np.clip(v, np.minimum(a, b), np.maximum(a, b))

    def _set_values(self, values):
        self._values = values
        self._bounds = [(min(a, b), max(a, b)) for a, b in values]
        self._values_np = np.array(values, dtype=np.float64)


class OneCycle(_OneCycleBase):
    r"""torch's 1cycle policy (``OneCycleLR``), with its momentum as ``.momentum``.

    The rate goes from ``initial = max_lr / div_factor`` up to ``max_lr`` over
    the first ``pct_start`` of ``total_steps``, then down to
    ``min = initial / final_div_factor`` at step ``total_steps - 1``; with
    ``three_phase`` it goes back to ``initial`` symmetrically and then anneals
    to ``min``. Each phase anneals by cosine
    (``end + (start - end) (1 + cos(pi pct)) / 2``) or linearly, with
    ``pct = (n - phase start) / (phase end - phase start)`` and phase ends
    ``pct_start * total_steps - 1``, (``2 pct_start total_steps - 2``),
    ``total_steps - 1``: exactly torch's arithmetic. Source: Smith &
    Topin, Super-Convergence (2017); ``torch.optim.lr_scheduler.OneCycleLR``.

    Differences from torch: steps after ``total_steps - 1`` keep the final
    value (torch raises past ``total_steps``); ``three_phase`` with
    ``pct_start > 0.5`` and zero-length phases raise ``ValueError`` here.

    Parameters
    ----------
    max_lr : float
        Peak rate (> 0).
    total_steps : int
        Length of the cycle (>= 1).
    pct_start : float
        Fraction of the cycle spent increasing, in [0, 1].
    anneal_strategy : {"cos", "linear"}
    div_factor : float
        ``initial = max_lr / div_factor`` (> 0).
    final_div_factor : float
        ``min = initial / final_div_factor`` (> 0).
    three_phase : bool
    cycle_momentum : bool
        Whether ``.momentum`` is a schedule (``None`` otherwise).
    base_momentum, max_momentum : float
        Momentum (or Adam's beta1) bounds, in [0, 1): it goes
        ``max -> base`` while the rate rises and back while it falls.

    Examples
    --------
    >>> s = OneCycle(0.1, total_steps=100)
    >>> round(s(0), 12), round(s(29), 12), s(99)
    (0.004, 0.1, 4e-07)
    >>> m = s.momentum
    >>> m(0), round(m(29), 12), m(99)
    (0.95, 0.85, 0.95)
    """

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 anneal_strategy: Literal["cos", "linear"] = "cos", div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95) -> None:
        o = "OneCycle"
        self.max_lr = _real(o, "max_lr", max_lr, lo=0.0, lo_open=True)
        self.div_factor = _real(o, "div_factor", div_factor, lo=0.0, lo_open=True)
        self.final_div_factor = _real(o, "final_div_factor", final_div_factor, lo=0.0,
                                      lo_open=True)
        self.cycle_momentum = _bool(o, "cycle_momentum", cycle_momentum)
        self.base_momentum = _real(o, "base_momentum", base_momentum, lo=0.0, hi=1.0,
                                   hi_open=True)
        self.max_momentum = _real(o, "max_momentum", max_momentum, lo=0.0, hi=1.0, hi_open=True)
        self._init_phases(total_steps, pct_start, anneal_strategy, three_phase)
        self.initial_lr = self.max_lr / self.div_factor
        self.min_lr = self.initial_lr / self.final_div_factor
        ini, mx, mn = self.initial_lr, self.max_lr, self.min_lr
        self._set_values([(ini, mx), (mx, ini), (ini, mn)] if self.three_phase
                         else [(ini, mx), (mx, mn)])
        self._config = {"max_lr": self.max_lr, "total_steps": self.total_steps,
                        "pct_start": self.pct_start, "anneal_strategy": self.anneal_strategy,
                        "div_factor": self.div_factor, "final_div_factor": self.final_div_factor,
                        "three_phase": self.three_phase, "cycle_momentum": self.cycle_momentum,
                        "base_momentum": self.base_momentum, "max_momentum": self.max_momentum}

    @property
    def momentum(self) -> Optional[OneCycleMomentum]:
        """The companion momentum / beta1 schedule (:class:`OneCycleMomentum`), or
        ``None`` when ``cycle_momentum`` is False (torch then leaves momentum alone)."""
        if not self.cycle_momentum:
            return None
        return OneCycleMomentum(self.total_steps, self.pct_start, self.anneal_strategy,
                                self.three_phase, self.base_momentum, self.max_momentum)


class OneCycleMomentum(_OneCycleBase):
    """The momentum (or beta1) half of torch's ``OneCycleLR``; see :class:`OneCycle`.

    It goes ``max_momentum -> base_momentum`` while the rate rises and back to
    ``max_momentum`` while it falls (three phases: ``max -> base -> max``, then
    constant ``max``). Usually obtained as ``OneCycle(...).momentum``.

    Examples
    --------
    >>> m = OneCycleMomentum(total_steps=100, base_momentum=0.85, max_momentum=0.95)
    >>> m(0), m(99)
    (0.95, 0.95)
    """

    _owner = "OneCycleMomentum"

    def __init__(self, total_steps: int, pct_start: float = 0.3,
                 anneal_strategy: Literal["cos", "linear"] = "cos", three_phase: bool = False,
                 base_momentum: float = 0.85, max_momentum: float = 0.95) -> None:
        o = self._owner
        self.base_momentum = _real(o, "base_momentum", base_momentum, lo=0.0, hi=1.0,
                                   hi_open=True)
        self.max_momentum = _real(o, "max_momentum", max_momentum, lo=0.0, hi=1.0, hi_open=True)
        self._init_phases(total_steps, pct_start, anneal_strategy, three_phase)
        b, m = self.base_momentum, self.max_momentum
        self._set_values([(m, b), (b, m), (m, m)] if self.three_phase else [(m, b), (b, m)])
        self._config = {"total_steps": self.total_steps, "pct_start": self.pct_start,
                        "anneal_strategy": self.anneal_strategy,
                        "three_phase": self.three_phase, "base_momentum": self.base_momentum,
                        "max_momentum": self.max_momentum}


class _CyclicBase(Schedule):
    """The triangle wave of torch's CyclicLR, shared by the lr and its momentum."""

    _owner = "Cyclic"

    def _init_cycle(self, step_size_up, step_size_down, mode, gamma):
        o = self._owner
        self.step_size_up = _int(o, "step_size_up", step_size_up, lo=1)
        self.step_size_down = (None if step_size_down is None
                               else _int(o, "step_size_down", step_size_down, lo=1))
        self.mode = _choice(o, "mode", mode, ("triangular", "triangular2", "exp_range"))
        self.gamma = _real(o, "gamma", gamma, lo=0.0, hi=1.0, lo_open=True)
        up = float(self.step_size_up)
        down = float(self.step_size_down) if self.step_size_down is not None else up
        self._total = up + down
        self._ratio = up / self._total

    def _wave(self, n):
        """(scale_factor * scale_fn) at step n, exactly torch's arithmetic."""
        cycle = math.floor(1 + n / self._total)
        x = 1.0 + n / self._total - cycle
        r = self._ratio
        factor = x / r if x <= r else (x - 1) / (r - 1)
        return factor, self._scale(cycle, n)

    def _scale(self, cycle, n):
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 0.5 ** (cycle - 1)  # = torch's 1 / 2.0 ** (cycle - 1), without overflow
        return self.gamma ** n

    def _wave_np(self, n):
        nf = n.astype(np.float64)
        cycle = np.floor(1 + nf / self._total)
        x = 1.0 + nf / self._total - cycle
        r = self._ratio
        factor = np.where(x <= r, x / r, (x - 1) / (r - 1))
        if self.mode == "triangular":
            scale = np.ones_like(nf)
        elif self.mode == "triangular2":
            scale = np.power(0.5, cycle - 1)
        else:
            scale = np.power(self.gamma, nf)
        return factor, scale


class Cyclic(_CyclicBase):
    r"""torch's cyclical learning rate (``CyclicLR``), with momentum as ``.momentum``.

    A triangle wave between ``base_lr`` and ``max_lr``: ``step_size_up`` steps
    up, ``step_size_down`` (default: ``step_size_up``) steps down. With
    ``c = floor(1 + n / total)``, ``x = 1 + n / total - c`` and
    ``r = step_size_up / total``:

    .. math:: \eta_n = \mathrm{base\_lr} + (\mathrm{max\_lr} - \mathrm{base\_lr})
              \, f(x)\, g, \qquad f(x) = x / r \ (x \le r), \ (x - 1)/(r - 1)\ \text{else}

    with ``g = 1`` ("triangular"), ``2^{-(c-1)}`` ("triangular2"), or
    ``gamma^n`` ("exp_range"). Sources: Smith, Cyclical Learning Rates (2017);
    ``torch.optim.lr_scheduler.CyclicLR`` (arithmetic copied). torch's custom
    ``scale_fn`` is not offered (a callable cannot be serialized); multiply by
    a schedule instead. ``gamma`` must be in (0, 1] (larger grows without bound).

    Parameters
    ----------
    base_lr, max_lr : float
        Bounds of the wave (>= 0).
    step_size_up : int
        Steps from ``base_lr`` to ``max_lr`` (>= 1).
    step_size_down : int, optional
        Steps back down (>= 1; default ``step_size_up``).
    mode : {"triangular", "triangular2", "exp_range"}
    gamma : float
        Base of "exp_range", in (0, 1].
    cycle_momentum : bool
        Whether ``.momentum`` is a schedule (``None`` otherwise).
    base_momentum, max_momentum : float
        Momentum bounds in [0, 1): momentum is ``max_momentum`` where the rate
        is ``base_lr`` and ``base_momentum`` at the rate's peak.

    Examples
    --------
    >>> s = Cyclic(0.01, 0.1, step_size_up=5, mode="triangular2")
    >>> [round(s(n), 12) for n in (0, 5, 10, 15, 20)]
    [0.01, 0.1, 0.01, 0.055, 0.01]
    >>> round(s.momentum(5), 12)
    0.8
    """

    def __init__(self, base_lr: float, max_lr: float, step_size_up: int = 2000,
                 step_size_down: Optional[int] = None,
                 mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
                 gamma: float = 1.0, cycle_momentum: bool = True, base_momentum: float = 0.8,
                 max_momentum: float = 0.9) -> None:
        o = "Cyclic"
        self.base_lr = _real(o, "base_lr", base_lr, lo=0.0)
        self.max_lr = _real(o, "max_lr", max_lr, lo=0.0)
        self.cycle_momentum = _bool(o, "cycle_momentum", cycle_momentum)
        self.base_momentum = _real(o, "base_momentum", base_momentum, lo=0.0, hi=1.0,
                                   hi_open=True)
        self.max_momentum = _real(o, "max_momentum", max_momentum, lo=0.0, hi=1.0, hi_open=True)
        self._init_cycle(step_size_up, step_size_down, mode, gamma)
        self._range = (min(self.base_lr, self.max_lr), max(self.base_lr, self.max_lr))
        self._config = {"base_lr": self.base_lr, "max_lr": self.max_lr,
                        "step_size_up": self.step_size_up, "step_size_down": self.step_size_down,
                        "mode": self.mode, "gamma": self.gamma,
                        "cycle_momentum": self.cycle_momentum,
                        "base_momentum": self.base_momentum, "max_momentum": self.max_momentum}

    def _scalar(self, n):
        factor, scale = self._wave(n)
        v = self.base_lr + (self.max_lr - self.base_lr) * factor * scale
        return _clip(v, *self._range)

    def _array(self, n):
        factor, scale = self._wave_np(n)
        return np.clip(self.base_lr + (self.max_lr - self.base_lr) * factor * scale,
                       *self._range)

    @property
    def momentum(self) -> Optional[CyclicMomentum]:
        """The companion momentum / beta1 schedule (:class:`CyclicMomentum`), or ``None``
        when ``cycle_momentum`` is False."""
        if not self.cycle_momentum:
            return None
        return CyclicMomentum(self.base_momentum, self.max_momentum, self.step_size_up,
                              self.step_size_down, self.mode, self.gamma)


class CyclicMomentum(_CyclicBase):
    r"""The momentum (or beta1) half of torch's ``CyclicLR``; see :class:`Cyclic`.

    .. math:: m_n = \mathrm{max\_momentum} - (\mathrm{max\_momentum} - \mathrm{base\_momentum})
              \, f(x)\, g

    Examples
    --------
    >>> m = CyclicMomentum(0.8, 0.9, step_size_up=5)
    >>> m(0), round(m(5), 12)
    (0.9, 0.8)
    """

    _owner = "CyclicMomentum"

    def __init__(self, base_momentum: float = 0.8, max_momentum: float = 0.9,
                 step_size_up: int = 2000, step_size_down: Optional[int] = None,
                 mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
                 gamma: float = 1.0) -> None:
        o = self._owner
        self.base_momentum = _real(o, "base_momentum", base_momentum, lo=0.0, hi=1.0,
                                   hi_open=True)
        self.max_momentum = _real(o, "max_momentum", max_momentum, lo=0.0, hi=1.0, hi_open=True)
        self._init_cycle(step_size_up, step_size_down, mode, gamma)
        self._range = (min(self.base_momentum, self.max_momentum),
                       max(self.base_momentum, self.max_momentum))
        self._config = {"base_momentum": self.base_momentum, "max_momentum": self.max_momentum,
                        "step_size_up": self.step_size_up, "step_size_down": self.step_size_down,
                        "mode": self.mode, "gamma": self.gamma}

    def _scalar(self, n):
        factor, scale = self._wave(n)
        v = self.max_momentum - (self.max_momentum - self.base_momentum) * factor * scale
        return _clip(v, *self._range)

    def _array(self, n):
        factor, scale = self._wave_np(n)
        return np.clip(self.max_momentum - (self.max_momentum - self.base_momentum) * factor
                       * scale, *self._range)


class LinearOneCycle(PiecewiseInterpolate):
    r"""Optax's asymmetric linear 1cycle (``optax.linear_onecycle_schedule``).

    Three linear phases over ``transition_steps = T`` steps, with
    ``initial = peak_value / div_factor``: up from ``initial`` to
    ``peak_value`` until step ``int(pct_start * T)``, back down to
    ``initial`` at step ``int(pct_final * T)``, then to
    ``initial / final_div_factor`` at step ``T``, held after. Unlike
    :class:`OneCycle` (torch's, whose three-phase form is symmetric), the
    descent (``pct_final - pct_start``) may differ from the ascent. Optax's
    levels are the running product of its scale factors; here they are the
    declared values themselves (they differ by an ulp at most).

    Parameters
    ----------
    transition_steps : int
        ``T`` (>= 1).
    peak_value : float
        Peak rate (>= 0).
    pct_start, pct_final : float
        Ends of the ascent and of the descent as fractions of ``T``:
        ``0 <= int(pct_start T) < int(pct_final T) < T``.
    div_factor, final_div_factor : float
        ``initial = peak_value / div_factor``, final ``initial / final_div_factor`` (> 0).

    Examples
    --------
    >>> s = LinearOneCycle(100, 1.0, pct_start=0.2, pct_final=0.5, div_factor=10.0,
    ...                    final_div_factor=100.0)
    >>> s(0), s(20), s(50), s(100), s(10**6)
    (0.1, 1.0, 0.1, 0.001, 0.001)
    """

    def __init__(self, transition_steps: int, peak_value: float, pct_start: float = 0.3,
                 pct_final: float = 0.85, div_factor: float = 25.0,
                 final_div_factor: float = 1e4) -> None:
        o = "LinearOneCycle"
        self.transition_steps = T = _int(o, "transition_steps", transition_steps, lo=1)
        self.peak_value = _real(o, "peak_value", peak_value, lo=0.0)
        self.pct_start = _real(o, "pct_start", pct_start, lo=0.0, hi=1.0)
        self.pct_final = _real(o, "pct_final", pct_final, lo=0.0, hi=1.0)
        self.div_factor = _real(o, "div_factor", div_factor, lo=0.0, lo_open=True)
        self.final_div_factor = _real(o, "final_div_factor", final_div_factor, lo=0.0,
                                      lo_open=True)
        b1, b2 = int(self.pct_start * T), int(self.pct_final * T)
        if not b1 < b2 < T:
            raise ValueError(f"{o}: needs int(pct_start * T) < int(pct_final * T) < T, got "
                             f"{b1}, {b2}, {T} (pct_start={pct_start!r}, "
                             f"pct_final={pct_final!r}, transition_steps={T})")
        initial = self.peak_value / self.div_factor
        self._setup([b1, b2, T], [initial, self.peak_value, initial,
                                  initial / self.final_div_factor], "linear")
        self._config = {"transition_steps": T, "peak_value": self.peak_value,
                        "pct_start": self.pct_start, "pct_final": self.pct_final,
                        "div_factor": self.div_factor, "final_div_factor": self.final_div_factor}
