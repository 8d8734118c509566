"""The decay family: constant, time-based, step, exponential and inverse-time decay,
polynomial, piecewise constant, cosine, multi-step and the LR range test's ramp."""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from math import cos, exp, sin
from typing import Any, Iterable, Literal, Optional, Union

import numpy as np

from .._typing import FloatArray, Step, Steps
from ._base import Schedule, _as_step, _as_steps, _bool, _choice, _int, _int_list, _is_real, _real
from ._numerics import (_HALF_PI, _STIRLING, _clip, _half_cos, _half_cos_np, _horner,
                        _log1pmx_over_u, _log1pmx_over_u_np, _stirling_tail)


class Constant(Schedule):
    """A constant value: ``eta_n = value``.

    Parameters
    ----------
    value : float
        The value (>= 0) returned at every step.

    Examples
    --------
    >>> Constant(0.01)(12345)
    0.01
    """

    def __init__(self, value: float) -> None:
        self._value = _real("Constant", "value", value, lo=0.0)
        self._config = {"value": self._value}

    def _scalar(self, n):
        return self._value

    def _array(self, n):
        return np.full(n.shape, self._value)


def _as_schedule(owner, name, value):
    """A Schedule stays itself; a real number becomes :class:`Constant`."""
    if isinstance(value, Schedule):
        return value
    if _is_real(value):
        return Constant(_real(owner, name, value, lo=0.0))
    raise TypeError(f"{owner}: {name} must be an lrfast Schedule or a number, got "
                    f"{value!r} ({type(value).__name__})")


class TimeBasedDecay(Schedule):
    r"""Time-based decay: a running product of ``1 / (1 + d n)``.

    .. math:: \eta_0 = \mathrm{lr0}, \qquad \eta_{n+1} = \frac{\eta_n}{1 + d\,n}

    (the Wikipedia article "Learning rate": "Time-based learning schedules alter
    the learning rate depending on the learning rate of the previous time
    iteration"). Unrolled,
    ``eta_n = lr0 / prod_{k=1}^{n-1} (1 + d k)``, so ``eta_1 = eta_0`` (the
    ``n = 0`` factor is 1) and

    .. math:: \eta_n = \mathrm{lr0}\,\frac{\Gamma(1 + 1/d)}{d^{\,n-1}\,\Gamma(n + 1/d)}
              \qquad (n \ge 1)

    which decays like ``1 / (d^n n!)``: much faster than Keras'
    ``lr0 / (1 + d n)`` (available here as :class:`InverseTimeDecay`)::

        d = 0.01          n = 10    n = 100    n = 300
        this class        0.6464    2.37e-17   5.8e-111   (x lr0)
        Keras 1/(1+dn)    0.9091    0.5        0.25

    The value is computed in O(1) from the log-gamma closed form, written
    without cancellation: a few explicit factors lift the gamma arguments to
    >= 10, the rest is the Stirling series in ``log1p`` form. The exponent is
    then exact to a few ulps, and the value to a few 1e-13 relative (the
    rounding of an exponent up to ~745), for every ``d``; plain ``lgamma``
    differences lose up to ~3e-11 at d = 1e-4. ``d = 0`` is constant; once the
    value underflows it is 0.0, never NaN.

    Parameters
    ----------
    lr0 : float
        Initial rate ``eta_0`` (>= 0).
    decay : float
        The decay parameter ``d`` (>= 0).

    Examples
    --------
    >>> s = TimeBasedDecay(0.1, decay=0.5)
    >>> [round(s(n), 6) for n in range(5)]  # 0.1, 0.1/1, /1.5, /2, /2.5
    [0.1, 0.1, 0.066667, 0.033333, 0.013333]
    """

    def __init__(self, lr0: float, decay: float) -> None:
        self.lr0 = _real("TimeBasedDecay", "lr0", lr0, lo=0.0)
        self.decay = d = _real("TimeBasedDecay", "decay", decay, lo=0.0)
        self._config = {"lr0": self.lr0, "decay": self.decay}
        if d == 0.0:
            return
        a = 1.0 / d  # may be inf for subnormal d; the formulas below stay finite
        # K explicit factors, then gamma arguments start at x1 = K + a >= 10.
        K = max(1, math.ceil(10.0 - a)) if math.isfinite(a) else 1
        self._K = K
        self._a = a
        self._x1 = K + a
        self._S1 = _stirling_tail(self._x1)
        # prefix[j] = log prod_{k=1}^{j-1} (1 + d k), j = 0..K (exact sums)
        logs = [math.log1p(d * k) for k in range(1, K)]
        self._prefix = [0.0, 0.0] + [math.fsum(logs[:j - 1]) for j in range(2, K + 1)]
        self._prefix_np = np.array(self._prefix)

    def log_decay(self, n: Union[Step, Steps]) -> Union[float, FloatArray]:
        """``log(lr0 / eta_n) = sum_{k=1}^{n-1} log1p(d k)`` (float or ndarray)."""
        steps = _as_steps("TimeBasedDecay", n) if isinstance(
            n, (np.ndarray, list, tuple)) else _as_step("TimeBasedDecay", n)
        if self.decay == 0.0:
            return np.zeros(np.shape(steps)) if isinstance(steps, np.ndarray) else 0.0
        if isinstance(steps, np.ndarray):
            with np.errstate(all="ignore"):
                return self._log_decay_np(steps)
        return self._log_decay(steps)

    def _log_decay(self, n):
        K = self._K
        if n <= K:
            return self._prefix[n]
        m = n - K
        u = m / self._x1
        return (self._prefix[K] + m * math.log1p(self.decay * n) + m * _log1pmx_over_u(u)
                - 0.5 * math.log1p(u) + (_stirling_tail(n + self._a) - self._S1))

    def _log_decay_np(self, n):
        K = self._K
        nf = n.astype(np.float64)
        m = np.maximum(nf - K, 0.0)
        u = m / self._x1
        tail = (self._prefix[K] + m * np.log1p(self.decay * nf) + m * _log1pmx_over_u_np(u)
                - 0.5 * np.log1p(u) + (_horner(_STIRLING, 1.0 / ((nf + self._a) ** 2))
                                       / (nf + self._a) - self._S1))
        return np.where(n <= K, self._prefix_np[np.minimum(n, K)], tail)

    def _scalar(self, n):
        if self.decay == 0.0:
            return self.lr0
        return self.lr0 * math.exp(-self._log_decay(n))

    def _array(self, n):
        if self.decay == 0.0:
            return np.full(n.shape, self.lr0)
        return self.lr0 * np.exp(-self._log_decay_np(n))


class StepDecay(Schedule):
    r"""Step-based decay: multiply by ``drop`` every ``every`` steps.

    .. math:: \eta_n = \mathrm{lr0}\cdot \mathrm{drop}^{\lfloor (1 + n) / \mathrm{every}\rfloor}

    (the Wikipedia article "Learning rate": "d is how much the learning rate
    should change at each drop (0.5 corresponds to a halving) and r corresponds
    to the drop rate, or how often the rate should be dropped"). Because of the
    ``1 + n``, the first drop happens at ``n = every - 1``, one step *before* torch's
    ``StepLR(step_size=every, gamma=drop)``, whose value is
    ``lr0 * drop ** (n // every)``: ``StepDecay(n) == StepLR(n + 1)``.

    Parameters
    ----------
    lr0 : float
        Initial rate (>= 0).
    drop : float
        Factor applied at each drop, in (0, 1].
    every : int
        Steps between drops (>= 1).

    Examples
    --------
    >>> s = StepDecay(0.1, drop=0.5, every=10)
    >>> s(0), s(8), s(9), s(19)
    (0.1, 0.1, 0.05, 0.025)
    """

    def __init__(self, lr0: float, drop: float, every: int) -> None:
        self.lr0 = _real("StepDecay", "lr0", lr0, lo=0.0)
        self.drop = _real("StepDecay", "drop", drop, lo=0.0, hi=1.0, lo_open=True)
        self.every = _int("StepDecay", "every", every, lo=1)
        self._config = {"lr0": self.lr0, "drop": self.drop, "every": self.every}

    def _scalar(self, n):
        return self.lr0 * self.drop ** ((1 + n) // self.every)

    def _array(self, n):
        # (1 + n) // every without forming 1 + n, which overflows int64 at n = 2**63 - 1
        k = (n // self.every).astype(np.float64) + (n % self.every + 1) // self.every
        return self.lr0 * np.power(self.drop, k)


class ExponentialDecay(Schedule):
    r"""Exponential decay (or growth): the classic form and Optax's.

    Classic form, ``ExponentialDecay(lr0, decay)`` (the Wikipedia article
    "Learning rate"):

    .. math:: \eta_n = \mathrm{lr0}\, e^{-d\,n}

    equal to torch's ``ExponentialLR(gamma=exp(-d))`` and Keras'
    ``ExponentialDecay(lr0, 1, exp(-d))``.

    Optax's form, ``ExponentialDecay(lr0, rate=r, transition_steps=T,
    transition_begin=B, staircase=False, end_value=None)``
    (``optax.exponential_decay(init_value, transition_steps, decay_rate,
    transition_begin, staircase, end_value)``), with ``k = n - B``:

    .. math:: \eta_n = \mathrm{lr0}\ (n \le B), \qquad
              \mathrm{lr0}\, r^{\,k / T}\ (n > B;\ \lfloor k / T \rfloor
              \text{ with staircase})

    clamped by ``end_value``: a floor when ``r < 1``, a ceiling when ``r > 1``
    (a growing rate is allowed). Keras' ``ExponentialDecay(lr0, decay_steps,
    decay_rate, staircase)`` is ``rate=decay_rate, transition_steps=decay_steps``.

    Parameters
    ----------
    lr0 : float
        Initial rate (>= 0).
    decay : float, optional
        The decay parameter ``d`` (>= 0) of the classic form.
    rate : float, optional
        Optax's ``decay_rate`` (> 0), instead of ``decay``.
    transition_steps : int
        Steps per factor ``rate`` (>= 1; Optax form only).
    transition_begin : int
        Steps before the decay starts (>= 0; Optax form only).
    staircase : bool
        Decay in whole transitions (Optax form only).
    end_value : float, optional
        Floor (``rate < 1``, at most ``lr0``) or ceiling (``rate > 1``, at least
        ``lr0``) of the value (Optax form only).

    Examples
    --------
    >>> s = ExponentialDecay(1.0, decay=math.log(2) / 10)  # halves every 10 steps
    >>> round(s(10), 12), round(s(20), 12)
    (0.5, 0.25)
    >>> s = ExponentialDecay(1.0, rate=0.5, transition_steps=10, transition_begin=5,
    ...                      staircase=True, end_value=0.2)
    >>> s(5), s(14), s(15), s(25), s(10**6)
    (1.0, 1.0, 0.5, 0.25, 0.2)
    """

    def __init__(self, lr0: float, decay: Optional[float] = None, *,
                 rate: Optional[float] = None, transition_steps: int = 1,
                 transition_begin: int = 0, staircase: bool = False,
                 end_value: Optional[float] = None) -> None:
        o = "ExponentialDecay"
        self.lr0 = _real(o, "lr0", lr0, lo=0.0)
        if (decay is None) == (rate is None):
            raise TypeError(f"{o}: give exactly one of decay= (lr0 * exp(-decay * n)) and "
                            f"rate= (Optax's lr0 * rate ** (n / transition_steps)), got "
                            f"decay={decay!r}, rate={rate!r}")
        self.transition_steps = _int(o, "transition_steps", transition_steps, lo=1)
        self.transition_begin = _int(o, "transition_begin", transition_begin, lo=0)
        self.staircase = _bool(o, "staircase", staircase)
        self.end_value = None if end_value is None else _real(o, "end_value", end_value, lo=0.0)
        if decay is not None:
            self.decay = _real(o, "decay", decay, lo=0.0)
            self.rate = None
            if (self.transition_steps, self.transition_begin, self.staircase,
                    self.end_value) != (1, 0, False, None):
                raise TypeError(f"{o}: transition_steps, transition_begin, staircase and "
                                "end_value belong to Optax's form: give rate= instead of decay=")
            self._config = {"lr0": self.lr0, "decay": self.decay}
            self._neg_decay = -self.decay
            return
        self.rate = r = _real(o, "rate", rate, lo=0.0, lo_open=True)
        self.decay = None
        e = self.end_value
        if e is not None and ((r < 1.0 and e > self.lr0) or (r > 1.0 and e < self.lr0)):
            raise ValueError(f"{o}: end_value must be {'<=' if r < 1.0 else '>='} lr0 "
                             f"({self.lr0!r}) with rate={r!r} (it is the "
                             f"{'floor' if r < 1.0 else 'ceiling'}), got {end_value!r}")
        self._lo = (self.lr0 if r >= 1.0 else 0.0 if e is None else e)
        self._hi = (self.lr0 if r <= 1.0 else math.inf if e is None else e)
        self._config = {"lr0": self.lr0, "rate": r, "transition_steps": self.transition_steps,
                        "transition_begin": self.transition_begin, "staircase": self.staircase,
                        "end_value": self.end_value}

    def _scalar(self, n):
        if self.rate is None:
            return self.lr0 * exp(self._neg_decay * n)
        k = n - self.transition_begin
        if k <= 0:
            return self.lr0
        T = self.transition_steps
        try:
            v = self.lr0 * self.rate ** (k // T if self.staircase else k / T)
        except OverflowError:   # a growing rate far out, without a ceiling
            v = math.inf
        return self._lo if v < self._lo else self._hi if v > self._hi else v

    def _array(self, n):
        if self.rate is None:
            return self.lr0 * np.exp(-self.decay * n.astype(np.float64))
        k = n - self.transition_begin
        T = self.transition_steps
        p = (k // T).astype(np.float64) if self.staircase else k / T
        v = np.where(k <= 0, self.lr0, self.lr0 * np.power(self.rate, p))
        return np.clip(v, self._lo, self._hi)


# --------------------------------------------------------------------------- Keras family
class InverseTimeDecay(Schedule):
    r"""Keras' inverse time decay.

    .. math:: \eta_n = \frac{\mathrm{lr0}}{1 + r\, p}, \qquad
              p = n / \mathrm{decay\_steps}
              \ (\lfloor n / \mathrm{decay\_steps} \rfloor \text{ if staircase})

    Source: ``keras.optimizers.schedules.InverseTimeDecay`` (``r`` is
    ``decay_rate``). With ``decay_steps=1`` it is the classic
    ``lr0 / (1 + d n)``, not the running product (:class:`TimeBasedDecay`).

    Parameters
    ----------
    lr0 : float
        Initial rate (>= 0).
    decay_steps : int
        Steps per unit of ``p`` (>= 1).
    decay_rate : float
        ``r`` (>= 0).
    staircase : bool
        Floor ``p`` (decay in discrete steps).

    Examples
    --------
    >>> s = InverseTimeDecay(0.1, decay_steps=10, decay_rate=1.0)
    >>> s(0), s(10), round(s(5), 12)
    (0.1, 0.05, 0.066666666667)
    """

    def __init__(self, lr0: float, decay_steps: int, decay_rate: float,
                 staircase: bool = False) -> None:
        o = "InverseTimeDecay"
        self.lr0 = _real(o, "lr0", lr0, lo=0.0)
        self.decay_steps = _int(o, "decay_steps", decay_steps, lo=1)
        self.decay_rate = _real(o, "decay_rate", decay_rate, lo=0.0)
        self.staircase = _bool(o, "staircase", staircase)
        self._config = {"lr0": self.lr0, "decay_steps": self.decay_steps,
                        "decay_rate": self.decay_rate, "staircase": self.staircase}

    def _scalar(self, n):
        p = n // self.decay_steps if self.staircase else n / self.decay_steps
        return self.lr0 / (1.0 + self.decay_rate * p)

    def _array(self, n):
        p = (n // self.decay_steps).astype(np.float64) if self.staircase else n / self.decay_steps
        return self.lr0 / (1.0 + self.decay_rate * p)


class PolynomialDecay(Schedule):
    r"""Keras' polynomial decay from ``lr0`` to ``end_lr`` over ``decay_steps``.

    .. math:: \eta_n = (\mathrm{lr0} - \mathrm{end\_lr})\,(1 - n'/T)^{\mathrm{power}}
              + \mathrm{end\_lr}, \qquad n' = \min(n, T)

    with ``T = decay_steps``; with ``cycle=True``, ``n' = n`` and ``T`` becomes
    ``decay_steps * ceil(n / decay_steps)`` (1 at ``n = 0``). Source:
    ``keras.optimizers.schedules.PolynomialDecay``; torch's
    ``PolynomialLR(total_iters=T, power=p)`` is ``end_lr=0``. ``1 - n'/T`` is
    computed as ``(T - n') / T``, exact near the end of the decay.

    Parameters
    ----------
    lr0 : float
        Initial rate (>= 0).
    decay_steps : int
        ``T`` (>= 1).
    end_lr : float
        Final rate (>= 0), Keras' ``end_learning_rate`` (default 1e-4 as Keras).
    power : float
        Exponent (> 0).
    cycle : bool
        Restart the decay at every multiple of ``decay_steps``.

    Examples
    --------
    >>> s = PolynomialDecay(0.1, decay_steps=100, end_lr=0.0, power=2.0)
    >>> s(0), round(s(50), 12), s(100), s(1000)
    (0.1, 0.025, 0.0, 0.0)
    """

    def __init__(self, lr0: float, decay_steps: int, end_lr: float = 0.0001,
                 power: float = 1.0, cycle: bool = False) -> None:
        o = "PolynomialDecay"
        self.lr0 = _real(o, "lr0", lr0, lo=0.0)
        self.decay_steps = _int(o, "decay_steps", decay_steps, lo=1)
        self.end_lr = _real(o, "end_lr", end_lr, lo=0.0)
        self.power = _real(o, "power", power, lo=0.0, lo_open=True)
        self.cycle = _bool(o, "cycle", cycle)
        self._config = {"lr0": self.lr0, "decay_steps": self.decay_steps,
                        "end_lr": self.end_lr, "power": self.power, "cycle": self.cycle}
        self._lo, self._hi = sorted((self.lr0, self.end_lr))

    def _scalar(self, n):
        T = self.decay_steps
        if self.cycle:
            T = T * max(1, -(-n // T))
        else:
            n = min(n, T)
        v = (self.lr0 - self.end_lr) * ((T - n) / T) ** self.power + self.end_lr
        return _clip(v, self._lo, self._hi)

    def _array(self, n):
        T = self.decay_steps
        if self.cycle:
            # T * ceil(n / T) overflows int64 near 2**63: the remainder T' - n is exact
            # as (-n) % T, and T' is taken in float64
            q = np.maximum(1, -(-n // T)).astype(np.float64)
            frac = np.where(n == 0, T, (-n) % T) / (q * T)
        else:
            n = np.minimum(n, T)
            frac = (T - n) / T
        v = (self.lr0 - self.end_lr) * frac ** self.power + self.end_lr
        return np.clip(v, self._lo, self._hi)


class PiecewiseConstant(Schedule):
    r"""Keras' piecewise constant: ``values[i]`` between boundaries.

    .. math:: \eta_n = \mathrm{values}[i], \quad i = \#\{b \in \mathrm{boundaries}: b < n\}

    i.e. ``values[0]`` for ``n <= boundaries[0]``, ``values[1]`` for
    ``boundaries[0] < n <= boundaries[1]``, ..., ``values[-1]`` after the last
    boundary. Source: ``keras.optimizers.schedules.PiecewiseConstantDecay``.

    Parameters
    ----------
    boundaries : list of int
        Strictly increasing steps (>= 0).
    values : list of float
        ``len(boundaries) + 1`` values (>= 0).

    Examples
    --------
    >>> s = PiecewiseConstant([100, 200], [1.0, 0.5, 0.1])
    >>> s(100), s(101), s(200), s(201)
    (1.0, 0.5, 0.5, 0.1)
    """

    def __init__(self, boundaries: Iterable[int], values: Iterable[float]) -> None:
        o = "PiecewiseConstant"
        self.boundaries = _int_list(o, "boundaries", boundaries, increasing=True)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(f"{o}: values must be a list of numbers, got {values!r}")
        self.values = [_real(o, f"values[{i}]", v, lo=0.0) for i, v in enumerate(values)]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"{o}: values must have len(boundaries) + 1 = "
                             f"{len(self.boundaries) + 1} items, got {len(self.values)}")
        self._b = np.array(self.boundaries, dtype=np.int64)
        self._v = np.array(self.values)
        self._config = {"boundaries": list(self.boundaries), "values": list(self.values)}

    def _scalar(self, n):
        return self.values[bisect_left(self.boundaries, n)]

    def _array(self, n):
        return self._v[np.searchsorted(self._b, n, side="left")]


class CosineDecay(Schedule):
    r"""Keras' cosine decay to a floor ``alpha * peak``, with optional linear warmup.

    Without warmup (``warmup_target=None``), with ``n' = min(n, decay_steps)``:

    .. math:: \eta_n = \mathrm{lr0}\left((1 - \alpha)\,\tfrac12
              \left(1 + \cos\frac{\pi n'}{\mathrm{decay\_steps}}\right) + \alpha\right)

    With ``warmup_target`` and ``W = warmup_steps``: for ``n < W`` the rate goes
    linearly ``lr0 + (warmup_target - lr0) n / W``; then the cosine above
    starts from ``warmup_target`` at ``n = W`` and runs for ``decay_steps``.
    Source: ``keras.optimizers.schedules.CosineDecay`` (Loshchilov & Hutter,
    SGDR; warmup: Goyal et al.). torch's ``CosineAnnealingLR(T_max, eta_min)``
    is ``CosineDecay(lr0, T_max, alpha=eta_min / lr0)`` for ``n <= T_max``
    (torch's cosine keeps going after ``T_max``; Keras' and this one hold the
    floor). Keras silently ignores ``warmup_steps`` without ``warmup_target``;
    this class raises instead.

    Parameters
    ----------
    lr0 : float
        Initial rate (>= 0): the cosine's peak, or the warmup's start.
    decay_steps : int
        Length of the cosine (>= 1).
    alpha : float
        Floor as a fraction of the peak, in [0, 1].
    warmup_target : float, optional
        Peak reached at the end of warmup (>= 0).
    warmup_steps : int
        Warmup length (>= 0; needs ``warmup_target`` when > 0).
    exponent : float
        Power ``p`` (> 0) of the cosine factor, as Optax's
        ``cosine_decay_schedule(..., exponent=p)``:
        ``peak * ((1 - alpha) * (0.5 (1 + cos(pi n' / T)))**p + alpha)``.

    Examples
    --------
    >>> s = CosineDecay(0.0, decay_steps=100, warmup_target=0.1, warmup_steps=10)
    >>> round(s(5), 12), s(10), round(s(60), 12), s(110), s(10**9)
    (0.05, 0.1, 0.05, 0.0, 0.0)
    """

    def __init__(self, lr0: float, decay_steps: int, alpha: float = 0.0,
                 warmup_target: Optional[float] = None, warmup_steps: int = 0,
                 exponent: float = 1.0) -> None:
        o = "CosineDecay"
        self.lr0 = _real(o, "lr0", lr0, lo=0.0)
        self.decay_steps = _int(o, "decay_steps", decay_steps, lo=1)
        self.alpha = _real(o, "alpha", alpha, lo=0.0, hi=1.0)
        self.warmup_target = (None if warmup_target is None
                              else _real(o, "warmup_target", warmup_target, lo=0.0))
        self.warmup_steps = _int(o, "warmup_steps", warmup_steps, lo=0)
        if self.warmup_target is None and self.warmup_steps > 0:
            raise ValueError(f"{o}: warmup_steps={self.warmup_steps} needs warmup_target (the "
                             "rate reached at the end of warmup), got warmup_target=None")
        self.exponent = _real(o, "exponent", exponent, lo=0.0, lo_open=True)
        self._config = {"lr0": self.lr0, "decay_steps": self.decay_steps, "alpha": self.alpha,
                        "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}
        if self.exponent != 1.0:  # (configs without it stay as they were)
            self._config["exponent"] = self.exponent
        self._peak = self.lr0 if self.warmup_target is None else self.warmup_target
        self._amp = 1.0 - self.alpha
        self._rise = (0.0 if self.warmup_target is None
                      else self.warmup_target - self.lr0)
        self._warm_lo, self._warm_hi = sorted((self.lr0, self._peak))

    def _scalar(self, n):
        W = self.warmup_steps
        if n < W:
            return _clip(self._rise * (n / W) + self.lr0, self._warm_lo, self._warm_hi)
        T = self.decay_steps
        k = n - W
        if k > T:
            k = T
        # _half_cos(k, T), inlined: this runs once per optimizer step
        if 2 * k <= T:
            c = cos(_HALF_PI * k / T)
            h = c * c
        else:
            s = sin(_HALF_PI * (T - k) / T)
            h = s * s
        if self.exponent != 1.0:
            h = h ** self.exponent
        v = self._peak * (self._amp * h + self.alpha)
        # >= peak * alpha by monotone rounding; amp * h + alpha can round above 1
        return v if v <= self._peak else self._peak

    def _array(self, n):
        W, T = self.warmup_steps, self.decay_steps
        k = np.minimum(np.maximum(n - W, 0), T).astype(np.float64)
        h = _half_cos_np(k, T)
        if self.exponent != 1.0:
            h = h ** self.exponent
        decay = np.minimum(self._peak * ((1.0 - self.alpha) * h + self.alpha), self._peak)
        if W == 0:
            return decay
        warm = np.clip((self.warmup_target - self.lr0) * (n / W) + self.lr0, self._warm_lo,
                       self._warm_hi)
        return np.where(n < W, warm, decay)


class MultiStepDecay(Schedule):
    r"""torch's ``MultiStepLR``: multiply by ``gamma`` at each milestone.

    .. math:: \eta_n = \mathrm{lr0}\cdot \gamma^{\#\{m \in \mathrm{milestones}: m \le n\}}

    A milestone listed twice counts twice, as in torch. Source:
    ``torch.optim.lr_scheduler.MultiStepLR``.

    Parameters
    ----------
    lr0 : float
        Initial rate (>= 0).
    milestones : list of int
        Steps (>= 0) at which the rate is multiplied by ``gamma``; any order.
    gamma : float
        Factor (> 0).

    Examples
    --------
    >>> s = MultiStepDecay(1.0, milestones=[3, 5], gamma=0.5)
    >>> [s(n) for n in range(7)]
    [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """

    def __init__(self, lr0: float, milestones: Iterable[int], gamma: float = 0.1) -> None:
        o = "MultiStepDecay"
        self.lr0 = _real(o, "lr0", lr0, lo=0.0)
        self.milestones = sorted(_int_list(o, "milestones", milestones, increasing=False))
        self.gamma = _real(o, "gamma", gamma, lo=0.0, lo_open=True)
        self._m = np.array(self.milestones, dtype=np.int64)
        self._config = {"lr0": self.lr0, "milestones": list(self.milestones),
                        "gamma": self.gamma}

    def _scalar(self, n):
        return self.lr0 * self.gamma ** bisect_right(self.milestones, n)

    def _array(self, n):
        k = np.searchsorted(self._m, n, side="right").astype(np.float64)
        return self.lr0 * np.power(self.gamma, k)


class LRRangeTest(Schedule):
    r"""The LR range test's ramp from ``start_lr`` to ``end_lr`` over ``num_steps`` steps.

    With ``t = min(n, num_steps - 1) / (num_steps - 1)``:

    .. math:: \eta_n = \mathrm{start}\,(\mathrm{end}/\mathrm{start})^t \ \text{("exp")},
              \qquad \mathrm{start} + (\mathrm{end} - \mathrm{start})\,t \ \text{("linear")}

    holding ``end_lr`` after the ramp. The Wikipedia article "Learning rate"
    says the initial rate "can be left as system default or can be selected
    using a range of techniques"; this is the best known one (Smith, Cyclical
    Learning Rates, 2017; the fastai / torch-lr-finder "LR finder"). Run it with
    :func:`lrfast.find_lr`, which trains on copies of the params along this
    ramp and suggests a rate.

    Parameters
    ----------
    start_lr : float
        First rate (> 0 for "exp", >= 0 for "linear").
    end_lr : float
        Last rate (> start_lr).
    num_steps : int
        Length of the ramp (>= 2).
    mode : {"exp", "linear"}

    Examples
    --------
    >>> s = LRRangeTest(1e-4, 1.0, num_steps=5)
    >>> [float(f"{s(n):.3g}") for n in range(5)]
    [0.0001, 0.001, 0.01, 0.1, 1.0]
    """

    def __init__(self, start_lr: float, end_lr: float, num_steps: int,
                 mode: Literal["exp", "linear"] = "exp") -> None:
        o = "LRRangeTest"
        self.mode = _choice(o, "mode", mode, ("exp", "linear"))
        self.start_lr = _real(o, "start_lr", start_lr, lo=0.0, lo_open=self.mode == "exp")
        self.end_lr = _real(o, "end_lr", end_lr, lo=self.start_lr, lo_open=True)
        self.num_steps = _int(o, "num_steps", num_steps, lo=2)
        self._config = {"start_lr": self.start_lr, "end_lr": self.end_lr,
                        "num_steps": self.num_steps, "mode": self.mode}

    def _scalar(self, n):
        t = min(n, self.num_steps - 1) / (self.num_steps - 1)
        if self.mode == "exp":
            v = self.start_lr * (self.end_lr / self.start_lr) ** t
        else:
            v = self.start_lr + (self.end_lr - self.start_lr) * t
        return _clip(v, self.start_lr, self.end_lr)

    def _array(self, n):
        t = np.minimum(n, self.num_steps - 1) / (self.num_steps - 1)
        if self.mode == "exp":
            v = self.start_lr * np.power(self.end_lr / self.start_lr, t)
        else:
            v = self.start_lr + (self.end_lr - self.start_lr) * t
        return np.clip(v, self.start_lr, self.end_lr)


class PiecewiseInterpolate(Schedule):
    r"""Optax's piecewise interpolation: scale the value at boundaries, smoothly.

    With ``b_0 = 0 < b_1 < ... < b_m`` (the boundaries) and the levels
    ``v_0 = init_value``, ``v_i = v_{i-1} * scales[i-1]``, the value on
    ``b_i <= n < b_{i+1}`` goes from ``v_i`` to ``v_{i+1}``, with
    ``pct = (n - b_i) / (b_{i+1} - b_i)``:

    .. math:: v_i + (v_{i+1} - v_i)\,\mathrm{pct}\ \text{("linear")}, \qquad
              v_{i+1} + (v_i - v_{i+1})\,\tfrac12(1 + \cos \pi\,\mathrm{pct})
              \ \text{("cosine")}

    and holds ``v_m`` from the last boundary on. Source:
    ``optax.piecewise_interpolate_schedule(interpolate_type, init_value,
    boundaries_and_scales)``; the cosine is computed without cancellation near
    ``pct = 1``.

    Parameters
    ----------
    init_value : float
        ``v_0`` (>= 0).
    boundaries : list of int, or dict
        Strictly increasing steps (>= 0); or Optax's ``{boundary: scale}`` dict
        (then ``scales`` is omitted).
    scales : list of float, optional
        One factor (>= 0) per boundary.
    interpolate_type : {"linear", "cosine"}

    Examples
    --------
    >>> s = PiecewiseInterpolate(1.0, [10, 20], [0.5, 0.1])
    >>> s(0), s(5), s(10), s(20), s(10**6)
    (1.0, 0.75, 0.5, 0.05, 0.05)
    >>> PiecewiseInterpolate(1.0, {10: 0.5, 20: 0.1}, interpolate_type="cosine")(10)
    0.5
    """

    def __init__(self, init_value: float, boundaries: Any,
                 scales: Optional[Iterable[float]] = None,
                 interpolate_type: Literal["linear", "cosine"] = "linear") -> None:
        o = "PiecewiseInterpolate"
        self.init_value = _real(o, "init_value", init_value, lo=0.0)
        if isinstance(boundaries, dict):
            if scales is not None:
                raise TypeError(f"{o}: give scales in the boundaries dict or as a list, "
                                "not both")
            items = sorted(boundaries.items())
            boundaries, scales = [b for b, _ in items], [c for _, c in items]
        if scales is None:
            raise TypeError(f"{o}: scales is required (or a {{boundary: scale}} dict)")
        self.boundaries = _int_list(o, "boundaries", boundaries, increasing=True)
        if isinstance(scales, (str, bytes)) or not hasattr(scales, "__iter__"):
            raise TypeError(f"{o}: scales must be a list of numbers, got {scales!r}")
        self.scales = [_real(o, f"scales[{i}]", c, lo=0.0) for i, c in enumerate(scales)]
        if len(self.scales) != len(self.boundaries):
            raise ValueError(f"{o}: needs one scale per boundary ({len(self.boundaries)}), "
                             f"got {len(self.scales)}")
        self.interpolate_type = _choice(o, "interpolate_type", interpolate_type,
                                        ("linear", "cosine"))
        levels = [self.init_value]
        for c in self.scales:
            levels.append(levels[-1] * c)
        self._setup(self.boundaries, levels, self.interpolate_type)
        self._config = {"init_value": self.init_value, "boundaries": list(self.boundaries),
                        "scales": list(self.scales), "interpolate_type": self.interpolate_type}

    def _setup(self, boundaries, levels, kind):
        """Intervals [b_i, b_{i+1}) from 0 through the boundaries, with their levels."""
        self._starts = [0] + list(boundaries)
        self._levels = list(levels)
        self._cosine = kind == "cosine"
        self._starts_np = np.array(self._starts, dtype=np.int64)
        self._levels_np = np.array(self._levels)
        self._lengths_np = np.maximum(np.diff(self._starts_np), 1).astype(np.float64)

    def _scalar(self, n):
        starts = self._starts
        i = bisect_right(starts, n) - 1          # n >= starts[i]
        if i == len(starts) - 1:
            return self._levels[-1]
        a, b = self._levels[i], self._levels[i + 1]
        pct = (n - starts[i]) / max(starts[i + 1] - starts[i], 1)
        if self._cosine:
            v = b + (a - b) / 2.0 * (2.0 * _half_cos(pct, 1.0))
        else:
            v = (b - a) * pct + a
        return _clip(v, min(a, b), max(a, b))

    def _array(self, n):
        last = len(self._starts) - 1
        i = np.searchsorted(self._starts_np, n, side="right") - 1
        j = np.minimum(i, last - 1) if last else i
        if not last:
            return np.full(n.shape, self._levels[-1])
        a, b = self._levels_np[j], self._levels_np[j + 1]
        pct = (n - self._starts_np[j]) / self._lengths_np[j]
        if self._cosine:
            v = b + (a - b) / 2.0 * (2.0 * _half_cos_np(np.clip(pct, 0.0, 1.0), 1.0))
        else:
            v = (b - a) * pct + a
        v = np.clip(v, np.minimum(a, b), np.maximum(a, b))
        return np.where(i >= last, self._levels[-1], v)


class WarmupStableDecay(Schedule):
    r"""Warmup-stable-decay (WSD), the LLM-training schedule.

    With ``W = warmup_steps``, ``S = stable_steps``, ``D = decay_steps`` and
    the decay fraction ``f = (n - W - S) / D``:

    .. math:: \eta_n = \mathrm{peak}\,\frac{n}{W}\ (n < W), \qquad
              \mathrm{peak}\ (W \le n < W + S), \qquad
              \mathrm{end} + (\mathrm{peak} - \mathrm{end})\,g(f)\ (W + S \le n < W + S + D)

    and ``end`` from ``W + S + D`` on, where ``g(f) = 1 - f`` ("linear"),
    ``(1 + cos(pi f)) / 2`` ("cosine") or ``1 - sqrt(f)`` ("sqrt": the value is
    ``peak - (peak - end) sqrt(f)``). Sources: Hu et al., MiniCPM (2024);
    Hägele et al., Scaling Laws and Compute-Optimal Training Beyond Fixed
    Training Durations (2024).

    Parameters
    ----------
    peak : float
        The stable rate (>= 0).
    warmup_steps, stable_steps : int
        Phase lengths (>= 0).
    decay_steps : int
        Length of the decay (>= 1).
    decay : {"linear", "cosine", "sqrt"}
    end : float
        Final rate, in [0, peak].

    Examples
    --------
    >>> s = WarmupStableDecay(1.0, 10, 80, 10, decay="sqrt", end=0.0)
    >>> s(0), s(5), s(10), s(89), s(90), round(s(94), 12), s(100)
    (0.0, 0.5, 1.0, 1.0, 1.0, 0.367544467966, 0.0)
    """

    def __init__(self, peak: float, warmup_steps: int, stable_steps: int, decay_steps: int,
                 decay: Literal["linear", "cosine", "sqrt"] = "linear",
                 end: float = 0.0) -> None:
        o = "WarmupStableDecay"
        self.peak = _real(o, "peak", peak, lo=0.0)
        self.warmup_steps = _int(o, "warmup_steps", warmup_steps, lo=0)
        self.stable_steps = _int(o, "stable_steps", stable_steps, lo=0)
        self.decay_steps = _int(o, "decay_steps", decay_steps, lo=1)
        self.decay = _choice(o, "decay", decay, ("linear", "cosine", "sqrt"))
        self.end = _real(o, "end", end, lo=0.0, hi=self.peak)
        self._config = {"peak": self.peak, "warmup_steps": self.warmup_steps,
                        "stable_steps": self.stable_steps, "decay_steps": self.decay_steps,
                        "decay": self.decay, "end": self.end}
        self._decay_start = self.warmup_steps + self.stable_steps
        self._drop = self.peak - self.end

    def _scalar(self, n):
        W = self.warmup_steps
        if n < W:
            v = self.peak * n / W
            return v if v <= self.peak else self.peak
        k = n - self._decay_start
        if k < 0:
            return self.peak
        D = self.decay_steps
        if k >= D:
            return self.end
        if self.decay == "linear":
            v = self.peak - self._drop * (k / D)
        elif self.decay == "cosine":
            v = self.end + self._drop * _half_cos(k, D)
        else:
            v = self.peak - self._drop * math.sqrt(k / D)
        return _clip(v, self.end, self.peak)

    def _array(self, n):
        W, D = self.warmup_steps, self.decay_steps
        k = np.clip(n - self._decay_start, 0, D).astype(np.float64)
        f = k / D
        if self.decay == "linear":
            v = self.peak - self._drop * f
        elif self.decay == "cosine":
            v = self.end + self._drop * _half_cos_np(k, D)
        else:
            v = self.peak - self._drop * np.sqrt(f)
        v = np.where(k >= D, self.end, np.clip(v, self.end, self.peak))
        v = np.where(n < self._decay_start, self.peak, v)
        if W:
            warm = np.minimum(self.peak * n / W, self.peak)
            v = np.where(n < W, warm, v)
        return v
