"""Learning-rate schedules: pure, vectorized, serializable functions of the step.

A schedule maps the step index ``n = 0, 1, 2, ...`` to a value (a learning
rate, a momentum, a beta): the k-th optimizer step uses ``s(k)``. Every
schedule here

- is a pure function of ``n`` (except :class:`ReduceOnPlateau`, which is fed a
  metric), evaluated in O(1) time whatever ``n`` is: ``s(10**12)`` costs what
  ``s(10)`` costs;
- returns a Python ``float`` for an integer ``n`` and a float64 ndarray for an
  array of steps, ``s(np.arange(N))``, computed with numpy (no Python loop over
  the elements) and equal to the scalar calls to 1e-12 relative;
- raises ``ValueError`` for ``n < 0`` or a non-integral ``n``;
- validates its arguments in the constructor (``ValueError``/``TypeError``
  naming the argument and the value; NaN and infinities are rejected);
- round-trips through ``get_config()`` / ``from_config()`` and through the
  module functions :func:`serialize` / :func:`deserialize` (plain JSON, never
  pickle or eval), pickles and deep-copies;
- composes: ``0.5 * s`` (:class:`Scaled`), ``s1 * s2`` (:class:`Product`),
  :class:`Sequence` (join at boundaries), :class:`LinearWarmup` (warmup factor);
- plots itself (``s.plot(1000)``, matplotlib imported lazily); :func:`gallery`
  writes a PNG of all of them.

The seeds' three schedules follow the seeds' formulas: :class:`TimeBasedDecay`
(``eta_{n+1} = eta_n / (1 + d n)``), :class:`StepDecay`
(``eta_n = eta_0 drop^floor((1 + n) / every)``) and :class:`ExponentialDecay`
(``eta_n = eta_0 exp(-d n)``). The others follow torch.optim.lr_scheduler,
Keras (``keras.optimizers.schedules``) or Optax, as each docstring says.

Any plain callable ``n -> float`` is accepted by the optimizers wherever a
schedule is; the classes here add vectorization, configs and plots.

Accuracy notes. Where a formula subtracts nearly equal numbers (``1 + cos`` at
the end of a cosine, ``1 - n / T`` at the end of a polynomial decay, the
log-gamma difference of :class:`TimeBasedDecay`), this module uses a form
without the cancellation, so values keep their relative accuracy down to the
floor. torch computes some of those forms directly; the two then agree to
1e-12 relative except within ~1e-16 x (the schedule's peak) of zero.
"""
from __future__ import annotations

import copy
import math
import numbers
import os
from bisect import bisect_left, bisect_right
from typing import (Any, Callable, Dict, Iterable, List, Literal, Optional, SupportsFloat,
                    Type, Union, overload)

import numpy as np

from .._typing import Axes, FloatArray, Step, Steps, StrPath

__all__ = [
    "Schedule", "Constant", "TimeBasedDecay", "StepDecay", "ExponentialDecay",
    "InverseTimeDecay", "PolynomialDecay", "PiecewiseConstant", "CosineDecay",
    "CosineRestarts", "LinearWarmup", "OneCycle", "OneCycleMomentum", "Cyclic",
    "CyclicMomentum", "Sequence", "join_schedules", "MultiStepDecay", "Scaled", "Product",
    "ReduceOnPlateau", "LRRangeTest", "serialize", "deserialize", "gallery",
]

#: lrfast schedule classes by name (filled as the classes below are defined);
#: :func:`deserialize` looks names up here and nowhere else.
_REGISTRY: Dict[str, Type[Schedule]] = {}


# --------------------------------------------------------------------------- validation
def _is_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _bounds_text(lo, hi, lo_open, hi_open):
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"{'<' if hi_open else '<='} {hi:g}"


def _real(owner, name, value, lo=None, hi=None, lo_open=False, hi_open=False):
    """Validate a finite real number (optionally within bounds); return a float."""
    if not _is_real(value):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r} "
                        f"({type(value).__name__})")
    try:
        v = float(value)
    except OverflowError:           # an int too large for a double
        v = math.inf
    if not math.isfinite(v):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")
    if ((lo is not None and (v <= lo if lo_open else v < lo))
            or (hi is not None and (v >= hi if hi_open else v > hi))):
        raise ValueError(f"{owner}: {name} must be {_bounds_text(lo, hi, lo_open, hi_open)}, "
                         f"got {value!r}")
    return v


def _int(owner, name, value, lo=None):
    """Validate an integer (optionally >= lo); return a Python int."""
    if not _is_int(value):
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r} "
                        f"({type(value).__name__})")
    v = int(value)
    if lo is not None and v < lo:
        raise ValueError(f"{owner}: {name} must be >= {lo}, got {v}")
    return v


def _bool(owner, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be a bool, got {value!r} "
                        f"({type(value).__name__})")
    return bool(value)


def _choice(owner, name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value


def _int_list(owner, name, values, increasing):
    """Validate a list of integers >= 0, strictly increasing or sorted on the way."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{owner}: {name} must be a list of integers, got {values!r}")
    out = [_int(owner, f"{name}[{i}]", v, lo=0) for i, v in enumerate(values)]
    if increasing:
        for i in range(1, len(out)):
            if out[i] <= out[i - 1]:
                raise ValueError(f"{owner}: {name} must be strictly increasing, got {out}")
    return out


def _as_schedule(owner, name, value):
    """A Schedule stays itself; a real number becomes :class:`Constant`."""
    if isinstance(value, Schedule):
        return value
    if _is_real(value):
        return Constant(_real(owner, name, value, lo=0.0))
    raise TypeError(f"{owner}: {name} must be an lrfast Schedule or a number, got "
                    f"{value!r} ({type(value).__name__})")


# --------------------------------------------------------------------------- steps
def _as_step(owner, n):
    """Validate one step index; return a Python int."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Real):
        raise TypeError(f"{owner}: step n must be an integer, got {n!r} ({type(n).__name__})")
    if isinstance(n, numbers.Integral):
        k = int(n)
    else:
        x = float(n)
        if not (math.isfinite(x) and x == math.floor(x)):
            raise ValueError(f"{owner}: step n must be an integer, got {n!r}")
        k = int(x)
    if k < 0:
        raise ValueError(f"{owner}: step n must be >= 0, got {k}")
    try:
        float(k)
    except OverflowError:
        raise ValueError(f"{owner}: step n is too large for a float, got {k}") from None
    return k


def _as_steps(owner, n):
    """Validate an array of step indices; return an int64 ndarray of the same shape."""
    a = np.asarray(n)
    kind = a.dtype.kind
    if kind == "u":
        if a.size and int(a.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{owner}: steps must be < 2**63")
        a = a.astype(np.int64)
    elif kind == "i":
        a = a.astype(np.int64, copy=False)
    elif kind == "f":
        if a.size and not (np.all(np.isfinite(a)) and np.all(a == np.floor(a))):
            raise ValueError(f"{owner}: steps must be integers, got non-integral values")
        if a.size and float(a.max()) >= 2.0 ** 63:
            raise ValueError(f"{owner}: steps must be < 2**63")
        a = a.astype(np.int64)
    else:
        raise TypeError(f"{owner}: steps must be an integer array, got dtype {a.dtype}")
    if a.size and int(a.min()) < 0:
        raise ValueError(f"{owner}: steps must be >= 0, got {int(a.min())}")
    return a


# --------------------------------------------------------------------------- numerics
def _half_cos(k, T):
    """0.5 * (1 + cos(pi * k / T)) for 0 <= k <= T, without cancellation near k = T."""
    if 2.0 * k <= T:
        c = math.cos(0.5 * math.pi * k / T)
        return c * c
    s = math.sin(0.5 * math.pi * (T - k) / T)
    return s * s


def _half_cos_np(k, T):
    c = np.cos(0.5 * np.pi * k / T)
    s = np.sin(0.5 * np.pi * (T - k) / T)
    return np.where(2.0 * k <= T, c * c, s * s)


# Stirling series of log Gamma: lgamma(x) = (x - 1/2) log x - x + log(2 pi)/2 + S(x),
# S(x) = sum_k B_2k / (2k (2k - 1) x^(2k - 1)); eight terms are exact to < 1e-16 for x >= 10.
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156,
             -3617 / 122400)
# 1/3, 1/5, 1/7, ...: atanh series, used for log1p(u) - u below.
_ATANH = tuple(1.0 / (2 * j + 3) for j in range(18))


def _horner(coefs, z):
    acc = coefs[-1]
    for c in coefs[-2::-1]:
        acc = acc * z + c
    return acc


def _stirling_tail(x):
    """S(x), the remainder of the Stirling series (x >= 10, or inf)."""
    return _horner(_STIRLING, 1.0 / (x * x)) / x


def _log1pmx_over_u(u):
    """(log1p(u) - u) / u for u >= 0, with full relative accuracy for small u.

    With s = u / (2 + u): log1p(u) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) and
    u - 2 s = u s, so (log1p(u) - u) / u = -s + 2 s^2 / (2 + u) * (1/3 + s^2/5 + ...).
    For u <= 1, s^2 <= 1/9 and 18 terms of the series are exact to double precision.
    """
    if u <= 1.0:
        s = u / (2.0 + u)
        s2 = s * s
        return -s + 2.0 * s2 / (2.0 + u) * _horner(_ATANH, s2)
    return (math.log1p(u) - u) / u


def _log1pmx_over_u_np(u):
    s = u / (2.0 + u)
    s2 = s * s
    series = -s + 2.0 * s2 / (2.0 + u) * _horner(_ATANH, s2)
    direct = (np.log1p(u) - u) / np.where(u > 0, u, 1.0)
    return np.where(u <= 1.0, series, direct)


def _json_float(x):
    """A float for JSON: non-finite values become the strings 'inf', '-inf', 'nan'."""
    x = float(x)
    return x if math.isfinite(x) else repr(x)


def _from_json_float(owner, name, x):
    if isinstance(x, str) and x in ("inf", "-inf", "nan"):
        return float(x)
    if not _is_real(x):
        raise ValueError(f"{owner}: state {name} must be a number, got {x!r}")
    return float(x)


# --------------------------------------------------------------------------- base class
def _encode(value):
    if isinstance(value, Schedule):
        return {"class": type(value).__name__, "config": value.get_config()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if isinstance(value, dict) and set(value) == {"class", "config"}:
        return deserialize(value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class Schedule:
    """Base class of lrfast schedules: ``s(n) -> float``, ``s(array) -> ndarray``.

    Subclasses implement ``_scalar(n)`` (``n`` a Python int >= 0, returning a
    float) and ``_array(n)`` (``n`` an int64 ndarray, returning a float64
    ndarray of the same shape, with numpy and no Python loop over the
    elements), and record their constructor arguments in ``self._config``.
    The optimizers accept any callable ``n -> float``: deriving from this class
    is what adds vectorization, configs, serialization and plots.

    Composition: ``k * s`` and ``s * k`` (k a number) give :class:`Scaled`,
    ``s1 * s2`` gives :class:`Product`.

    Examples
    --------
    >>> import numpy as np
    >>> s = ExponentialDecay(0.1, decay=0.01)
    >>> s(0), round(s(100), 6)
    (0.1, 0.036788)
    >>> s(np.arange(3)).dtype
    dtype('float64')
    >>> deserialize(serialize(s))(100) == s(100)
    True
    """

    #: lower clamp applied to the value (``None``: none); set by :class:`ReduceOnPlateau`
    #: and inherited by the products and scalings that contain one.
    _clamp_min: Optional[float] = None
    #: the constructor arguments (set by every subclass's ``__init__``)
    _config: Dict[str, Any]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__ and not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    # ---- evaluation
    @overload
    def __call__(self, n: Step) -> float: ...

    @overload
    def __call__(self, n: Steps) -> FloatArray: ...

    def __call__(self, n: Union[Step, Steps]) -> Union[float, FloatArray]:
        """The value at step ``n`` (int -> float; array-like of ints -> float64 ndarray)."""
        if type(n) is int and 0 <= n < 9223372036854775808:  # the optimizers' case, first
            return self._value_scalar(n)
        if isinstance(n, (np.ndarray, list, tuple)):
            steps = _as_steps(type(self).__name__, n)
            with np.errstate(all="ignore"):
                out = self._value_array(steps)
            return np.asarray(out, dtype=np.float64).reshape(steps.shape)
        return self._value_scalar(_as_step(type(self).__name__, n))

    def _value_scalar(self, n):
        v = float(self._scalar(n))
        c = self._clamp_min
        return v if c is None else max(v, c)

    def _value_array(self, n):
        v = self._array(n)
        c = self._clamp_min
        return v if c is None else np.maximum(v, c)

    def _scalar(self, n):
        raise NotImplementedError

    def _array(self, n):
        raise NotImplementedError

    # ---- composition
    def __mul__(self, other: Union[Schedule, float]) -> Schedule:
        if isinstance(other, Schedule):
            return Product(_factors(self) + _factors(other))
        if _is_real(other):
            return Scaled(self, other)
        return NotImplemented

    def __rmul__(self, other: float) -> Schedule:
        if _is_real(other):
            return Scaled(self, other)
        return NotImplemented

    # ---- config and state
    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments as a JSON-serializable dict.

        Nested schedules appear as ``{"class": name, "config": {...}}``.
        """
        return {k: _encode(v) for k, v in self._config.items()}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> Schedule:
        """Build a schedule from :meth:`get_config`'s output.

        On a subclass, ``config`` is that class's config; on :class:`Schedule`
        itself it is a ``{"class": ..., "config": ...}`` dict (as
        :func:`serialize` writes).
        """
        if not isinstance(config, dict):
            raise TypeError(f"{cls.__name__}.from_config: config must be a dict, got "
                            f"{type(config).__name__}")
        if cls is Schedule:
            return deserialize(config)
        return cls(**{k: _decode(v) for k, v in config.items()})

    def _children(self):
        """The schedules this one is built from (in config order)."""
        out = []
        for v in self._config.values():
            if isinstance(v, Schedule):
                out.append(v)
            elif isinstance(v, (list, tuple)):
                out.extend(x for x in v if isinstance(x, Schedule))
        return out

    def _own_state(self):
        return {}

    def _load_own_state(self, state):
        if state:
            raise ValueError(f"{type(self).__name__}: stateless schedule got state "
                             f"{sorted(state)}")

    def state_dict(self) -> Dict[str, Any]:
        """The mutable state as a JSON-serializable dict (``{}`` when stateless).

        A composite schedule carries its children's states under ``"children"``
        when any child has state.
        """
        state = self._own_state()
        kids = [c.state_dict() for c in self._children()]
        if any(kids):
            state["children"] = kids
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (checked before anything changes)."""
        if not isinstance(state, dict):
            raise TypeError(f"{type(self).__name__}: state must be a dict, got "
                            f"{type(state).__name__}")
        state = dict(state)
        kids_state = state.pop("children", None)
        kids = self._children()
        if kids_state is not None and (not isinstance(kids_state, list)
                                       or len(kids_state) != len(kids)):
            raise ValueError(f"{type(self).__name__}: state has "
                             f"{len(kids_state) if isinstance(kids_state, list) else '?'} "
                             f"children, the schedule has {len(kids)}")
        # validate everything on copies first, then commit
        trial_self = copy.copy(self)
        trial_self._load_own_state(state)
        if kids_state is not None:
            for c, s in zip(kids, kids_state):
                copy.deepcopy(c).load_state_dict(s)
        self._load_own_state(state)
        if kids_state is not None:
            for c, s in zip(kids, kids_state):
                c.load_state_dict(s)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({args})"

    # ---- plotting
    def plot(self, steps: Union[int, Steps], ax: Optional[Axes] = None,
             **plot_kwargs: Any) -> Axes:
        """Draw the schedule over ``steps`` with matplotlib; return the Axes.

        Parameters
        ----------
        steps : int or array-like of int
            ``N`` plots steps ``0 .. N-1``; an array plots those steps.
        ax : matplotlib.axes.Axes, optional
            Where to draw; a new figure (pyplot) when omitted.
        **plot_kwargs
            Passed to ``ax.plot``.
        """
        n = np.arange(steps) if _is_int(steps) else np.asarray(steps)  # type: ignore[arg-type]
        if ax is None:
            plt = _pyplot()
            _, ax = plt.subplots(figsize=(6, 3.5))
        plot_kwargs.setdefault("label", type(self).__name__)
        ax.plot(n, self(n), **plot_kwargs)
        ax.set_xlabel("step n")
        ax.set_ylabel("value")
        ax.set_title(type(self).__name__)
        return ax


def _factors(s):
    return list(s._config["schedules"]) if type(s) is Product else [s]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from e
    return plt


# --------------------------------------------------------------------------- seeds' three
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


class TimeBasedDecay(Schedule):
    r"""The seed's time-based decay: a running product of ``1 / (1 + d n)``.

    .. math:: \eta_0 = \mathrm{lr0}, \qquad \eta_{n+1} = \frac{\eta_n}{1 + d\,n}

    (seed text: "Time-based learning schedules alter the learning rate depending
    on the learning rate of the previous time iteration"). Unrolled,
    ``eta_n = lr0 / prod_{k=1}^{n-1} (1 + d k)``, so ``eta_1 = eta_0`` (the
    ``n = 0`` factor is 1) and

    .. math:: \eta_n = \mathrm{lr0}\,\frac{\Gamma(1 + 1/d)}{d^{\,n-1}\,\Gamma(n + 1/d)}
              \qquad (n \ge 1)

    which decays like ``1 / (d^n n!)``: much faster than Keras'
    ``lr0 / (1 + d n)`` (available here as :class:`InverseTimeDecay`)::

        d = 0.01          n = 10    n = 100    n = 300
        seed (this)       0.6464    2.37e-17   5.8e-111   (x lr0)
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
    r"""The seed's step-based decay: multiply by ``drop`` every ``every`` steps.

    .. math:: \eta_n = \mathrm{lr0}\cdot \mathrm{drop}^{\lfloor (1 + n) / \mathrm{every}\rfloor}

    (seed text: "d is how much the learning rate should change at each drop
    (0.5 corresponds to a halving) and r corresponds to the drop rate, or how
    often the rate should be dropped"). Because of the ``1 + n``, the first drop
    happens at ``n = every - 1``, one step *before* torch's
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
        return self.lr0 * np.power(self.drop, ((1 + n) // self.every).astype(np.float64))


class ExponentialDecay(Schedule):
    r"""The seed's exponential decay.

    .. math:: \eta_n = \mathrm{lr0}\, e^{-d\,n}

    Equal to torch's ``ExponentialLR(gamma=exp(-d))``. (Keras'
    ``ExponentialDecay(initial_learning_rate, decay_steps, decay_rate)`` is
    ``lr0 * decay_rate ** (n / decay_steps)``: this class with
    ``d = -log(decay_rate) / decay_steps``.)

    Parameters
    ----------
    lr0 : float
        Initial rate (>= 0).
    decay : float
        The decay parameter ``d`` (>= 0).

    Examples
    --------
    >>> s = ExponentialDecay(1.0, decay=math.log(2) / 10)  # halves every 10 steps
    >>> round(s(10), 12), round(s(20), 12)
    (0.5, 0.25)
    """

    def __init__(self, lr0: float, decay: float) -> None:
        self.lr0 = _real("ExponentialDecay", "lr0", lr0, lo=0.0)
        self.decay = _real("ExponentialDecay", "decay", decay, lo=0.0)
        self._config = {"lr0": self.lr0, "decay": self.decay}

    def _scalar(self, n):
        return self.lr0 * math.exp(-self.decay * n)

    def _array(self, n):
        return self.lr0 * np.exp(-self.decay * n.astype(np.float64))


# --------------------------------------------------------------------------- Keras family
class InverseTimeDecay(Schedule):
    r"""Keras' inverse time decay.

    .. math:: \eta_n = \frac{\mathrm{lr0}}{1 + r\, p}, \qquad
              p = n / \mathrm{decay\_steps}
              \ (\lfloor n / \mathrm{decay\_steps} \rfloor \text{ if staircase})

    Source: ``keras.optimizers.schedules.InverseTimeDecay`` (``r`` is
    ``decay_rate``). With ``decay_steps=1`` it is the classic
    ``lr0 / (1 + d n)``, not the seed's running product (:class:`TimeBasedDecay`).

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

    def _scalar(self, n):
        T = self.decay_steps
        if self.cycle:
            T = T * max(1, -(-n // T))
        else:
            n = min(n, T)
        return (self.lr0 - self.end_lr) * ((T - n) / T) ** self.power + self.end_lr

    def _array(self, n):
        T = self.decay_steps
        if self.cycle:
            T = T * np.maximum(1, -(-n // T))
        else:
            n = np.minimum(n, T)
        return (self.lr0 - self.end_lr) * ((T - n) / T) ** self.power + self.end_lr


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

    Examples
    --------
    >>> s = CosineDecay(0.0, decay_steps=100, warmup_target=0.1, warmup_steps=10)
    >>> round(s(5), 12), s(10), round(s(60), 12), s(110), s(10**9)
    (0.05, 0.1, 0.05, 0.0, 0.0)
    """

    def __init__(self, lr0: float, decay_steps: int, alpha: float = 0.0,
                 warmup_target: Optional[float] = None, warmup_steps: int = 0) -> None:
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
        self._config = {"lr0": self.lr0, "decay_steps": self.decay_steps, "alpha": self.alpha,
                        "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}
        self._peak = self.lr0 if self.warmup_target is None else self.warmup_target

    def _scalar(self, n):
        W, T = self.warmup_steps, self.decay_steps
        if n < W:
            return (self.warmup_target - self.lr0) * (n / W) + self.lr0
        k = min(n - W, T)
        return self._peak * ((1.0 - self.alpha) * _half_cos(k, T) + self.alpha)

    def _array(self, n):
        W, T = self.warmup_steps, self.decay_steps
        k = np.minimum(np.maximum(n - W, 0), T).astype(np.float64)
        decay = self._peak * ((1.0 - self.alpha) * _half_cos_np(k, T) + self.alpha)
        if W == 0:
            return decay
        warm = (self.warmup_target - self.lr0) * (n / W) + self.lr0
        return np.where(n < W, warm, decay)


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

    Examples
    --------
    >>> s = CosineRestarts(0.1, first_decay_steps=10, t_mul=2.0, m_mul=0.5)
    >>> s(0), round(s(5), 12), s(10), s(30)  # restarts at n = 10 and n = 30
    (0.1, 0.05, 0.05, 0.025)
    """

    def __init__(self, lr0: float, first_decay_steps: int, t_mul: float = 2.0,
                 m_mul: float = 1.0, alpha: float = 0.0) -> None:
        o = "CosineRestarts"
        self.lr0 = _real(o, "lr0", lr0, lo=0.0)
        self.first_decay_steps = _int(o, "first_decay_steps", first_decay_steps, lo=1)
        self.t_mul = _real(o, "t_mul", t_mul, lo=1.0)
        self.m_mul = _real(o, "m_mul", m_mul, lo=0.0, hi=1.0)
        self.alpha = _real(o, "alpha", alpha, lo=0.0, hi=1.0)
        self._config = {"lr0": self.lr0, "first_decay_steps": self.first_decay_steps,
                        "t_mul": self.t_mul, "m_mul": self.m_mul, "alpha": self.alpha}
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
        return self.lr0 * ((1.0 - self.alpha) * self.m_mul ** i * hc + self.alpha)

    def _array(self, n):
        T0 = float(self.first_decay_steps)
        nf = n.astype(np.float64)
        if self.t_mul == 1.0:
            i = (n // self.first_decay_steps).astype(np.float64)
            start, length = i * T0, np.full(n.shape, T0)
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
        return self.lr0 * ((1.0 - self.alpha) * np.power(self.m_mul, i) * hc + self.alpha)


# --------------------------------------------------------------------------- torch family
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

    def _scalar(self, n):
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        return self.base._value_scalar(n) * (s + (e - s) * min(T, n) / T)

    def _array(self, n):
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        return self.base._value_array(n) * (s + (e - s) * np.minimum(T, n) / T)


def _one_plus_cos_pi(pct):
    """1 + cos(pi * pct) for pct in [0, 1], without cancellation near pct = 1."""
    return 2.0 * _half_cos(pct, 1.0)


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

    def _phase_values(self):
        """[(start value, end value)] per phase."""
        raise NotImplementedError

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
                return self._anneal(a, b, (n - start) / (end - start))

    def _array(self, n):
        nf = np.minimum(n, self.total_steps - 1).astype(np.float64)
        i = np.searchsorted(self._ends_np[:-1], nf, side="left")
        start, end = self._starts_np[i], self._ends_np[i]
        a = self._values_np[i, 0]
        b = self._values_np[i, 1]
        pct = (nf - start) / (end - start)
        if self.anneal_strategy == "cos":
            return b + (a - b) / 2.0 * (2.0 * _half_cos_np(pct, 1.0))
        return (b - a) * pct + a

    def _set_values(self, values):
        self._values = values
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
        self._config = {"base_lr": self.base_lr, "max_lr": self.max_lr,
                        "step_size_up": self.step_size_up, "step_size_down": self.step_size_down,
                        "mode": self.mode, "gamma": self.gamma,
                        "cycle_momentum": self.cycle_momentum,
                        "base_momentum": self.base_momentum, "max_momentum": self.max_momentum}

    def _scalar(self, n):
        factor, scale = self._wave(n)
        return self.base_lr + (self.max_lr - self.base_lr) * factor * scale

    def _array(self, n):
        factor, scale = self._wave_np(n)
        return self.base_lr + (self.max_lr - self.base_lr) * factor * scale

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
        self._config = {"base_momentum": self.base_momentum, "max_momentum": self.max_momentum,
                        "step_size_up": self.step_size_up, "step_size_down": self.step_size_down,
                        "mode": self.mode, "gamma": self.gamma}

    def _scalar(self, n):
        factor, scale = self._wave(n)
        return self.max_momentum - (self.max_momentum - self.base_momentum) * factor * scale

    def _array(self, n):
        factor, scale = self._wave_np(n)
        return self.max_momentum - (self.max_momentum - self.base_momentum) * factor * scale


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

    def _scalar(self, n):
        i = bisect_right(self.boundaries, n)
        return self.schedules[i]._value_scalar(n - self._offsets[i])

    def _array(self, n):
        idx = np.searchsorted(self._b, n, side="right")
        out = np.empty(n.shape)
        for i, s in enumerate(self.schedules):  # a loop over pieces, not over steps
            sel = idx == i
            if sel.any():
                out[sel] = s._value_array(n[sel] - self._offsets[i])
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

    def _scalar(self, n):
        return self.factor * self.schedule._scalar(n)

    def _array(self, n):
        return self.factor * self.schedule._array(n)


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

    def _scalar(self, n):
        v = 1.0
        for s in self.schedules:
            v *= s._scalar(n)
        return v

    def _array(self, n):
        v = np.ones(n.shape)
        for s in self.schedules:
            v = v * s._array(n)
        return v


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

    def _scalar(self, n):
        return self.level if self.base is None else self.level * self.base._value_scalar(n)

    def _array(self, n):
        if self.base is None:
            return np.full(n.shape, self.level)
        return self.level * self.base._value_array(n)

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


# --------------------------------------------------------------------------- LR range test
class LRRangeTest(Schedule):
    r"""The LR range test's ramp from ``start_lr`` to ``end_lr`` over ``num_steps`` steps.

    With ``t = min(n, num_steps - 1) / (num_steps - 1)``:

    .. math:: \eta_n = \mathrm{start}\,(\mathrm{end}/\mathrm{start})^t \ \text{("exp")},
              \qquad \mathrm{start} + (\mathrm{end} - \mathrm{start})\,t \ \text{("linear")}

    holding ``end_lr`` after the ramp. The seed says the initial rate "can be
    left as system default or can be selected using a range of techniques";
    this is the best known one (Smith, Cyclical Learning Rates, 2017; the
    fastai / torch-lr-finder "LR finder"). Run it with
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
            return self.start_lr * (self.end_lr / self.start_lr) ** t
        return self.start_lr + (self.end_lr - self.start_lr) * t

    def _array(self, n):
        t = np.minimum(n, self.num_steps - 1) / (self.num_steps - 1)
        if self.mode == "exp":
            return self.start_lr * np.power(self.end_lr / self.start_lr, t)
        return self.start_lr + (self.end_lr - self.start_lr) * t


# --------------------------------------------------------------------------- serialization
def serialize(schedule: Callable[..., Any]) -> Dict[str, Any]:
    """A JSON-serializable dict describing a schedule: class, config and state.

    ``{"class": name, "config": get_config(), "state": state_dict()}`` for an
    lrfast schedule; ``{"class": "callable", "name": qualname}`` for any other
    callable (recorded by name only: :func:`deserialize` cannot rebuild it).

    Examples
    --------
    >>> serialize(StepDecay(0.1, drop=0.5, every=10))
    {'class': 'StepDecay', 'config': {'lr0': 0.1, 'drop': 0.5, 'every': 10}, 'state': {}}
    """
    if isinstance(schedule, Schedule):
        return {"class": type(schedule).__name__, "config": schedule.get_config(),
                "state": schedule.state_dict()}
    if callable(schedule):
        name = getattr(schedule, "__qualname__", None) or type(schedule).__qualname__
        return {"class": "callable", "name": name}
    raise TypeError(f"serialize: expected a schedule or a callable, got {schedule!r}")


def deserialize(data: Dict[str, Any]) -> Schedule:
    """Rebuild a schedule from :func:`serialize`'s output (config, then state).

    Classes are looked up by name among lrfast's schedule classes only.
    """
    if not isinstance(data, dict) or "class" not in data:
        raise TypeError(f"deserialize: expected a dict with a 'class' key, got {data!r}")
    name = data["class"]
    if name == "callable":
        raise ValueError(f"deserialize: the schedule was a plain callable "
                         f"({data.get('name')!r}), saved by name only; pass the callable again")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"deserialize: unknown schedule class {name!r} (known: "
                         f"{', '.join(sorted(_REGISTRY))})")
    config = data.get("config", {})
    s = cls.from_config(config)
    state = data.get("state")
    if state:
        s.load_state_dict(state)
    return s


# --------------------------------------------------------------------------- gallery
def _gallery_examples(N):
    """[(file key, title, schedule or steps -> values, log y)] for the gallery."""
    q = max(N // 10, 1)
    one_cycle = OneCycle(0.1, N)
    cyclic = Cyclic(0.01, 0.1, step_size_up=max(N // 8, 1), mode="triangular2")

    def plateau(steps):
        # ReduceOnPlateau is fed a metric: simulate a loss that stalls, one value per step
        rop = ReduceOnPlateau(0.1, factor=0.5, patience=max(N // 12, 1), min_lr=1e-3)
        out = np.empty(len(steps))
        for i in range(len(steps)):
            out[i] = rop(i)
            rop.step(max(1.0 / (1.0 + i / q), 0.3) + 0.01 * math.sin(i))
        return out

    return [
        ("Constant", "Constant(0.1)", Constant(0.1), False),
        ("TimeBasedDecay", "TimeBasedDecay (seed)", TimeBasedDecay(0.1, decay=8.0 / N ** 2),
         True),
        ("StepDecay", "StepDecay (seed)", StepDecay(0.1, drop=0.5, every=2 * q), False),
        ("ExponentialDecay", "ExponentialDecay (seed)", ExponentialDecay(0.1, decay=5.0 / N),
         True),
        ("InverseTimeDecay", "InverseTimeDecay",
         InverseTimeDecay(0.1, decay_steps=q, decay_rate=1.0), False),
        ("PolynomialDecay", "PolynomialDecay (power 2)",
         PolynomialDecay(0.1, N, end_lr=0.001, power=2.0), False),
        ("PiecewiseConstant", "PiecewiseConstant",
         PiecewiseConstant([3 * q, 6 * q], [0.1, 0.05, 0.01]), False),
        ("CosineDecay", "CosineDecay with warmup",
         CosineDecay(0.0, N - q, alpha=0.05, warmup_target=0.1, warmup_steps=q), False),
        ("CosineRestarts", "CosineRestarts (SGDR)",
         CosineRestarts(0.1, max(N // 15, 1), t_mul=2.0, m_mul=0.8, alpha=0.05), False),
        ("LinearWarmup", "LinearWarmup", LinearWarmup(0.1, start_factor=0.1, total_iters=2 * q),
         False),
        ("OneCycle", "OneCycle", one_cycle, False),
        ("OneCycleMomentum", "OneCycle.momentum", one_cycle.momentum, False),
        ("Cyclic", "Cyclic (triangular2)", cyclic, False),
        ("CyclicMomentum", "Cyclic.momentum", cyclic.momentum, False),
        ("MultiStepDecay", "MultiStepDecay", MultiStepDecay(0.1, [5 * q, 8 * q], gamma=0.3),
         False),
        ("Sequence", "Sequence: warmup, then exponential", Sequence(
            [LinearWarmup(0.1, start_factor=0.0, total_iters=q),
             ExponentialDecay(0.1, decay=3.0 / N)], [q]), False),
        ("Product", "Product: restarts x exponential",
         CosineRestarts(0.1, 2 * q, t_mul=1.0) * ExponentialDecay(1.0, decay=2.0 / N), False),
        ("ReduceOnPlateau", "ReduceOnPlateau (simulated metric)", plateau, False),
        ("LRRangeTest", "LRRangeTest", LRRangeTest(1e-5, 1.0, N), True),
    ]


def gallery(out_dir: StrPath, steps: int = 1000, per_schedule: bool = False) -> List[str]:
    """Write a PNG gallery of every schedule; return the paths written.

    Writes ``schedules.png`` (one panel per schedule) into ``out_dir`` (created
    if needed), and with ``per_schedule=True`` also ``schedule_<name>.png`` for
    each. Uses matplotlib's Agg canvas, so it works without a display.

    Parameters
    ----------
    out_dir : str or os.PathLike
    steps : int
        Steps plotted (>= 2); the examples scale with it.
    per_schedule : bool
        Also write one PNG per schedule.
    """
    steps = _int("gallery", "steps", steps, lo=2)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("gallery() needs matplotlib: pip install matplotlib") from e
    os.makedirs(out_dir, exist_ok=True)
    examples = _gallery_examples(steps)
    n = np.arange(steps)

    def draw(ax, title, fn, log):
        ax.plot(n, fn(n), lw=1.5)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)

    cols = 4
    rows = -(-len(examples) // cols)
    fig = Figure(figsize=(4 * cols, 2.6 * rows))
    FigureCanvasAgg(fig)
    for k, (_, title, fn, log) in enumerate(examples):
        draw(fig.add_subplot(rows, cols, k + 1), title, fn, log)
    fig.suptitle(f"lrfast.schedules over {steps} steps (x: step n)")
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.04, top=0.93, hspace=0.5, wspace=0.25)
    paths = [os.path.join(out_dir, "schedules.png")]
    fig.savefig(paths[0], dpi=90)
    if per_schedule:
        for key, title, fn, log in examples:
            f = Figure(figsize=(5, 3))
            FigureCanvasAgg(f)
            draw(f.add_subplot(1, 1, 1), title, fn, log)
            f.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.9)
            path = os.path.join(out_dir, f"schedule_{key}.png")
            f.savefig(path, dpi=90)
            paths.append(path)
    return paths


def gallery_main(argv: Optional[List[str]] = None) -> int:
    """``python -m lrfast schedules --out DIR [--steps N] [--per-schedule]``: run :func:`gallery`."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m lrfast schedules",
                                description="Write a PNG gallery of lrfast's schedules.")
    p.add_argument("--out", default="lrfast-schedules", help="output directory "
                   "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=1000, help="steps plotted (default: %(default)s)")
    p.add_argument("--per-schedule", action="store_true", help="also one PNG per schedule")
    args = p.parse_args(argv)
    for path in gallery(args.out, steps=args.steps, per_schedule=args.per_schedule):
        print(path)
    return 0
