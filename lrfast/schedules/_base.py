"""The :class:`Schedule` base class, argument and step validation, and serialization
(:func:`serialize`, :func:`deserialize` and the registry of schedule classes)."""
from __future__ import annotations

import copy
import math
import numbers
from typing import Any, Callable, Dict, Optional, Type, Union, overload

import numpy as np

from .._typing import Axes, FloatArray, Step, Steps

#: lrfast schedule classes by name (filled as the classes are defined, in every module
#: of this package); :func:`deserialize` looks names up here and nowhere else.
_REGISTRY: Dict[str, Type[Schedule]] = {}
_PACKAGE = __name__.rpartition(".")[0]  # "lrfast.schedules"
#: the largest step a schedule takes (an int64 step counter)
_MAX_STEP = 2 ** 63 - 1


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
    Python float: the value, ``s(n)``) and ``_array(n)`` (``n`` an int64
    ndarray, returning a float64 ndarray of the same shape, with numpy and no
    Python loop over the elements), and record their constructor arguments in
    ``self._config``. ``s(n)`` on a Python int calls ``_scalar`` directly (an
    optimizer evaluates its schedules once per step), so ``_scalar`` does its
    work with constants precomputed in ``__init__``; a caller that has already
    validated its step (an int in ``[0, 2**63)``) may call ``s._scalar(n)``
    itself and skip the dispatch. The optimizers accept any
    callable ``n -> float``: deriving from this class is what adds
    vectorization, configs, serialization and plots.

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
    #: and inherited by the products and scalings that contain one. Those three
    #: classes apply it in ``_scalar``/``_array``; their ``_raw_scalar``/``_raw_array``
    #: give the value before it, which a product of them multiplies.
    _clamp_min: Optional[float] = None
    #: the constructor arguments (set by every subclass's ``__init__``)
    _config: Dict[str, Any]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith(_PACKAGE + ".") and not cls.__name__.startswith("_"):
            # a public class shows (and pickles) as lrfast.schedules.Name, wherever it lives
            cls.__module__ = _PACKAGE
            _REGISTRY[cls.__name__] = cls

    # ---- evaluation
    @overload
    def __call__(self, n: Step) -> float: ...

    @overload
    def __call__(self, n: Steps) -> FloatArray: ...

    def __call__(self, n: Union[Step, Steps]) -> Union[float, FloatArray]:
        """The value at step ``n`` (int -> float; array-like of ints -> float64 ndarray)."""
        if type(n) is int and 0 <= n <= _MAX_STEP:  # the optimizers' case, first
            return self._scalar(n)
        if isinstance(n, (np.ndarray, list, tuple)):
            steps = _as_steps(type(self).__name__, n)
            with np.errstate(all="ignore"):
                out = self._array(steps)
            return np.asarray(out, dtype=np.float64).reshape(steps.shape)
        return self._scalar(_as_step(type(self).__name__, n))

    def _scalar(self, n: int) -> float:
        raise NotImplementedError

    def _array(self, n: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _raw_scalar(self, n: int) -> float:
        return self._scalar(n)

    def _raw_array(self, n: np.ndarray) -> np.ndarray:
        return self._array(n)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # Rebuild the constants that __init__ precomputes (a pickle from an older
        # version may lack some), then restore the pickled attributes and state.
        type(self).__init__(self, **state["_config"])
        self.__dict__.update(state)

    # ---- composition
    def __mul__(self, other: Union[Schedule, float]) -> Schedule:
        if isinstance(other, Schedule):
            return _make("Product", _factors(self) + _factors(other))
        if _is_real(other):
            return _make("Scaled", self, other)
        return NotImplemented

    def __rmul__(self, other: float) -> Schedule:
        if _is_real(other):
            return _make("Scaled", self, other)
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


Schedule.__module__ = _PACKAGE


def _make(name: str, *args: Any) -> Schedule:
    """An instance of the registered class ``name``.

    Product and Scaled are defined in ``_compose``, which imports this module; the
    base class reaches them through the registry, filled once the package is imported.
    """
    cls: Callable[..., Schedule] = _REGISTRY[name]
    return cls(*args)


def _factors(s):
    """The factors of a product (a product's own list, flattened one level)."""
    return list(s._config["schedules"]) if type(s) is _REGISTRY["Product"] else [s]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from e
    return plt


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
