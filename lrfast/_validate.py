"""One place for input checks: hyperparameter values, step counters, arrays.

Every public entry point (optimizer classes, the functional layer, L-BFGS, the
line searches, utilities, the distributed wrapper) validates through these
helpers, so a value is judged the same way everywhere and the messages read
alike. Checks raise ``TypeError`` for a wrong type and ``ValueError`` for a
wrong value, and never change anything.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

__all__ = ["MAX_STEP", "is_schedule", "is_bool", "number", "real", "integer", "scalar",
           "choice", "check_value", "schedule_value", "step_count", "saved_scalar", "check_param",
           "optional_positive", "finite", "ReentryError"]

MAX_STEP = 2 ** 53     # step counts enter double arithmetic (beta ** t): keep them exact


class ReentryError(RuntimeError):
    """An optimizer was called back by code it was running (a closure, a
    schedule, a callback). Passed through unwrapped wherever user code's
    errors are otherwise reported as a ValueError."""


def is_schedule(v: Any) -> bool:
    """A schedule is any callable that is not a number or an array."""
    return callable(v) and not isinstance(v, (numbers.Number, np.ndarray))


def is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def finite(v: Any) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:       # an int too large for a double
        return False


def number(v: Any, name: str, where: str = "") -> float:
    """``v`` as a finite float, or a clear error (bools, strings, arrays refused)."""
    if type(v) is float:                 # the common case, first
        if v - v == 0.0:
            return v
    elif is_bool(v) or not isinstance(v, numbers.Real):
        raise TypeError(f"{where}{name} must be a number, got {v!r}")
    elif finite(v):
        return float(v)
    raise ValueError(f"{where}{name} must be finite, got {v!r}")


def _bounds(low: Optional[float], high: Optional[float], low_open: bool,
            high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


def real(v: Any, name: str, where: str = "", *, low: Optional[float] = None,
         high: Optional[float] = None, low_open: bool = False,
         high_open: bool = False) -> float:
    """``v`` as a finite float within optional bounds: TypeError for a non-number
    (bools, strings, arrays), ValueError for NaN/inf, an int too large for a
    double, or a value out of bounds."""
    x = number(v, name, where)
    if ((low is not None and (x <= low if low_open else x < low))
            or (high is not None and (x >= high if high_open else x > high))):
        raise ValueError(f"{where}{name} must be {_bounds(low, high, low_open, high_open)}, "
                         f"got {v!r}")
    return x


def integer(v: Any, name: str, where: str = "", *, low: Optional[int] = None,
            high: int = MAX_STEP) -> int:
    """``v`` as a Python int in [low, high] (numpy integers accepted; bools,
    floats and strings are a TypeError). Counts above 2**53 are refused: they
    reach double arithmetic, where they would not be exact."""
    if is_bool(v) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{where}{name} must be an int, got {v!r}")
    x = int(v)
    if (low is not None and x < low) or x > high:
        bound = f">= {low}" if x < high else f"<= {'2**53' if high == MAX_STEP else high}"
        raise ValueError(f"{where}{name} must be {bound}, got {v!r}")
    return x


def scalar(v: Any, name: str, where: str = "") -> float:
    """A value a user's function returned (a loss) as a float, NaN and inf
    allowed: a real number, a 1-element array or anything with ``__float__``
    (a 0-d tensor); never a bool, a string or a complex."""
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(()).item()
    if isinstance(v, numbers.Real) and not is_bool(v):
        try:
            return float(v)
        except OverflowError:            # an int too large for a double
            raise ValueError(f"{where}{name} is too large for a double, got {v!r}") from None
    if is_bool(v) or isinstance(v, (str, bytes, complex, np.ndarray)) or not hasattr(
            v, "__float__"):
        raise TypeError(f"{where}{name} must be a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{where}{name} must be a number, got {v!r}") from None


def choice(v: Any, name: str, choices: Tuple[Any, ...], where: str = "") -> Any:
    """``v`` if it is one of ``choices`` (compared by equality, strings or None)."""
    if not any(v is c or (isinstance(v, str) and v == c) for c in choices):
        raise ValueError(f"{where}{name} must be one of {choices}, got {v!r}")
    return v


_RANGES: Dict[str, Any] = {
    "ge0": (lambda x: x >= 0.0, "must be >= 0"),
    "gt0": (lambda x: x > 0.0, "must be > 0"),
    "unit": (lambda x: 0.0 <= x <= 1.0, "must be in [0, 1]"),
    "unit_open": (lambda x: 0.0 <= x < 1.0, "must be in [0, 1)"),
    "real": (lambda x: True, ""),
    "le0": (lambda x: x <= 0.0, "must be <= 0"),
    "ge1": (lambda x: x >= 1.0, "must be >= 1"),
}


def _eps_pair(v: Any, name: str, where: str) -> Tuple[Optional[float], float]:
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise ValueError(f"{where}{name} must be a pair (eps1 or None, eps2), got {v!r}")
    e1 = None if v[0] is None else real(v[0], f"{name}[0]", where, low=0.0)
    return (e1, real(v[1], f"{name}[1]", where, low=0.0))


def _real3(v: Any, name: str, where: str) -> Tuple[float, float, float]:
    if not isinstance(v, (tuple, list)) or len(v) != 3:
        raise ValueError(f"{where}{name} must be a triple of numbers, got {v!r}")
    a, b, c = (number(x, f"{name}[{i}]", where) for i, x in enumerate(v))
    return (a, b, c)


def _growth(v: Any, name: str, where: str) -> float:
    # Prodigy's growth_rate: a number >= 1, inf (the default) allowed
    if not (isinstance(v, numbers.Real) and not is_bool(v) and v == math.inf):
        return real(v, name, where, low=1.0)
    return math.inf


def _slice_p(v: Any, name: str, where: str) -> int:
    x = integer(v, name, where, low=1)
    if x != 1:
        raise NotImplementedError(f"{where}{name}={x}: only slice_p=1 (every element in "
                                  "the step-size estimate) is implemented")
    return x


def _log_every(v: Any, name: str, where: str) -> int:
    # D-Adaptation's log_every: an int >= 0; lrfast logs nothing (read opt.d)
    x = integer(v, name, where, low=0)
    if x != 0:
        raise NotImplementedError(f"{where}{name}={x}: lrfast does not log; read the step-size "
                                  "estimate from opt.d (log_every=0 only)")
    return x


def _fsdp(v: Any, name: str, where: str) -> bool:
    # D-Adaptation's fsdp_in_use: sharded params are not supported
    if not is_bool(v):
        raise TypeError(f"{where}{name} must be a bool, got {v!r}")
    if v:
        raise NotImplementedError(f"{where}{name}=True: sharded (FSDP) params are not "
                                  "supported (fsdp_in_use=False only)")
    return False


# Values of one kind each (never schedules): name -> checker returning the value.
_SPECIAL: Dict[str, Callable[[Any, str, str], Any]] = {
    "eps_pair": _eps_pair,
    "real3": _real3,
    "beta_or_none": lambda v, name, where: (None if v is None
                                            else real(v, name, where, low=0.0, high=1.0,
                                                      high_open=True)),
    "growth": _growth,
    "gt0_or_none": lambda v, name, where: (None if v is None
                                           else real(v, name, where, low=0.0, low_open=True)),
    "slice_p": _slice_p,
    "log_every": _log_every,
    "fsdp": _fsdp,
    "ns_steps": lambda v, name, where: integer(v, name, where, low=0, high=99),
    "adjust_lr_fn": lambda v, name, where: choice(v, name, (None, "original",
                                                            "match_rms_adamw"), where),
}


# Pairs of numbers (never schedules): (what, test, message).
_PAIRS: Dict[str, Any] = {
    "etas": ("(etaminus, etaplus)", lambda a, b: 0.0 < a < 1.0 < b,
             "0 < etaminus < 1 < etaplus"),
    "step_sizes": ("(min, max)", lambda a, b: 0.0 <= a <= b, "0 <= min <= max"),
}


def check_value(v: Any, name: str, check: str, where: str = "") -> Any:
    """Validate one static hyperparameter value against its table range; return
    it normalized (floats for numbers, a tuple for betas and the other pairs,
    bool for flags)."""
    if check == "bool":
        if not is_bool(v):
            raise TypeError(f"{where}{name} must be a bool, got {v!r}")
        return bool(v)
    if check == "betas" or check == "betas3":
        if check == "betas" and (not isinstance(v, (tuple, list)) or len(v) != 2):
            raise ValueError(f"{where}{name} must be a pair (beta1, beta2), got {v!r}")
        if check == "betas3" and (not isinstance(v, (tuple, list)) or len(v) != 3):
            raise ValueError(f"{where}{name} must be a triple (beta1, beta2, beta3), got {v!r}")
        return tuple(b if is_schedule(b) else check_value(b, f"{name}[{i}]", "unit_open", where)
                     for i, b in enumerate(v))
    if check in _SPECIAL:
        return _SPECIAL[check](v, name, where)
    if check in _PAIRS:
        what, ok, msg = _PAIRS[check]
        if not isinstance(v, (tuple, list)) or len(v) != 2:
            raise ValueError(f"{where}{name} must be a pair {what}, got {v!r}")
        pair = tuple(number(x, f"{name}[{i}]", where) for i, x in enumerate(v))
        if not ok(*pair):
            raise ValueError(f"{where}{name} must satisfy {msg}, got {v!r}")
        return pair
    x = number(v, name, where)
    ok, msg = _RANGES[check]
    if not ok(x):
        raise ValueError(f"{where}{name} {msg}, got {v!r}")
    return x


def schedule_value(fn: Callable[[int], Any], n: int, name: str, check: str,
                   where: str = "") -> float:
    """Evaluate a schedule at step n and check the value as a static one would be."""
    try:
        v = fn(n)
    except ReentryError:
        raise
    except Exception as e:
        raise ValueError(f"{where}schedule for {name} failed at step {n}: {e}") from e
    if type(v) is float and v - v == 0.0 and (v >= 0.0 if check == "ge0"
                                              else _RANGES[check][0](v)):
        return v                          # fast path: a finite float in range
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    try:
        return check_value(v, name, check)
    except (TypeError, ValueError) as e:     # the schedule misbehaved: a ValueError
        raise ValueError(f"{where}schedule for {name} failed at step {n}: it returned "
                         f"{v!r}; {e}") from None


def step_count(v: Any, name: str = "step", *, low: int = 0) -> int:
    """An int step counter in [low, 2**53] (numpy integers accepted)."""
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if is_bool(v) or not isinstance(v, numbers.Integral) or not low <= int(v) <= MAX_STEP:
        raise ValueError(f"{name} must be an int in [{low}, 2**53], got {v!r}")
    return int(v)


def saved_scalar(v: Any, name: str, low: Optional[float], high: Optional[float],
                 where: str, *, low_open: bool = False) -> float:
    """A number read back from a saved state entry (ASGD's eta and mu, the
    schedule-free rules' lr_max and weight_sum): a 1-element array is taken as
    its value; anything but a finite number, or one outside [low, high] (low
    excluded with ``low_open``), is a ValueError naming the state key."""
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.item()
    try:
        x = number(v, f"state {name!r}", f"{where}: ")
    except TypeError:
        raise ValueError(f"{where}: state {name!r} must be a finite number, got {v!r}") from None
    if ((low is not None and (x <= low if low_open else x < low))
            or (high is not None and x > high)):
        raise ValueError(f"{where}: state {name!r} must be "
                         f"{_bounds(low, high, low_open, False)}, got {v!r}")
    return x


def is_half(dt: Any) -> bool:
    """float16, or ml_dtypes' bfloat16 (the 16-bit param dtypes)."""
    return dt == np.float16 or (dt.name == "bfloat16" and dt.itemsize == 2
                                and type(dt).__module__.startswith(("ml_dtypes", "numpy")))


def check_param(a: Any, where: str, what: str = "param", *, writeable: bool = True,
                half: bool = False) -> None:
    """Raise unless ``a`` can be updated in place by the kernels (or, with
    ``writeable=False``, read by them). ``half``: float16 and bfloat16 are
    accepted too (the optimizers that take 16-bit params)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}: {what} must be a numpy ndarray, got {type(a).__name__}")
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{where}: {what} is a masked array (its mask would be ignored)")
    if not a.dtype.isnative:
        raise TypeError(f"{where}: {what} dtype {a.dtype.str} has non-native byte order (use "
                        "a.astype(a.dtype.newbyteorder('=')))")
    if a.dtype not in (np.float32, np.float64) and not (half and is_half(a.dtype)):
        raise TypeError(f"{where}: {what} dtype {a.dtype} is not supported (float32 or float64"
                        + (", or float16 and bfloat16 with an optimizer that takes them)"
                           if is_half(a.dtype) else ")"))
    if writeable and not a.flags.writeable:
        raise ValueError(f"{where}: {what} is read-only (the optimizer updates it in place)")
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        raise ValueError(f"{where}: {what} is not contiguous (use np.ascontiguousarray and "
                         "keep a reference to the copy)")
    if not a.flags.aligned:
        raise ValueError(f"{where}: {what} is not aligned")


def optional_positive(v: Optional[Any], name: str) -> Optional[float]:
    """None, or a positive finite number."""
    if v is None:
        return None
    if is_bool(v) or not isinstance(v, numbers.Real) or not finite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number or None, got {v!r}")
    return float(v)


def state_array(v: Any, name: str, shape: Tuple[int, ...], dtype: Any, where: str) -> np.ndarray:
    """A saved state array ``name``: an ndarray of exactly ``shape`` and ``dtype``."""
    if v is None:
        raise ValueError(f"{where}: state lacks {name!r}")
    if not isinstance(v, np.ndarray):
        raise TypeError(f"{where}: state {name!r} must be an ndarray, got {type(v).__name__}")
    if v.shape != shape:
        raise ValueError(f"{where}: state {name!r} has shape {v.shape}, expected {shape}")
    if v.dtype != dtype:
        raise ValueError(f"{where}: state {name!r} has dtype {v.dtype}, param has {dtype}")
    return v
