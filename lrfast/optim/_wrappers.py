"""Wrappers around an optimizer: weight averaging (:class:`EMA`), gradient
accumulation (:class:`Accumulate`) and :class:`Lookahead`.

Each wraps an lrfast optimizer (or another wrapper; :class:`EMA` needs the
optimizer itself, since its blend runs inside the optimizer's fused pass) and
steps it with ``wrapper.step(grads)``. Their state_dicts (format
``lrfast.wrapper/1``, docs/state_dict.md) hold the wrapper's own state and the
wrapped optimizer's state_dict under ``"inner"``: a load restores both, exactly,
or raises before changing either.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .._dispatch import kernels as _K
from .._typing import Array, Grads, StateDict
from .._validate import (ReentryError, check_param, integer, is_bool, real,
                         step_count)
from . import _lowp
from ._base import Optimizer
from ._own import OwnStepOptimizer

__all__ = ["EMA", "Accumulate", "Lookahead", "WRAPPER_FORMAT"]

WRAPPER_FORMAT = "lrfast.wrapper/1"


def _copy(p: Array) -> Array:
    """A copy of p with its layout (C or F order), writable and aligned."""
    return np.array(p, order="K", copy=True)


def _readonly(a: Array) -> Array:
    v = a.view()
    v.flags.writeable = False
    return v


class _Wrapper:
    """What the wrappers share: the wrapped optimizer, a lock with a re-entry
    guard, the params (as the optimizer had them when wrapped), the
    state_dict envelope."""

    _what = ""                 # the wrapper's name in its state_dict

    def _init_wrapper(self, opt: Any, *, ema: bool = False) -> None:
        if ema:
            if not isinstance(opt, Optimizer) or isinstance(opt, OwnStepOptimizer):
                raise TypeError(f"EMA wraps an lrfast optimizer whose step runs in the fused "
                                f"engine (its blend runs there), got {type(opt).__name__}")
        elif not isinstance(opt, (Optimizer, _Wrapper)):
            raise TypeError(f"{type(self).__name__} wraps an lrfast optimizer or wrapper, got "
                            f"{type(opt).__name__}")
        if isinstance(opt, Optimizer) and opt.released:
            raise ValueError(f"{type(self).__name__}: this optimizer's state is held by a "
                             "distributed wrapper")
        self._opt = opt
        self._params: List[Array] = list(opt._params)
        self._lock = threading.RLock()
        self._running: Optional[str] = None

    def __getstate__(self) -> Dict[str, Any]:
        st = dict(self.__dict__)                 # pickles and copies share the params'
        del st["_lock"], st["_running"]          # identities with the optimizer's
        st.pop("_registered", None)              # a new optimizer's engine registers anew
        return st

    def __setstate__(self, st: Dict[str, Any]) -> None:
        self.__dict__.update(st)
        self._lock = threading.RLock()
        self._running = None

    # ------------------------------------------------------------- the guard
    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        self._lock.acquire()
        if self._running is not None:
            self._lock.release()
            cls = type(self).__name__
            raise ReentryError(f"{cls}.{what} called while {cls}.{self._running} is running")
        self._running = what
        try:
            yield
        finally:
            self._running = None
            self._lock.release()

    def _check_params(self) -> None:
        if len(self._opt._params) != len(self._params):
            raise ValueError(f"{type(self).__name__}: the optimizer's params changed since it "
                             f"was wrapped ({len(self._params)} then, "
                             f"{len(self._opt._params)} now: add_param_group); wrap the "
                             "optimizer again")

    # ------------------------------------------------------------------ views
    @property
    def optimizer(self) -> Any:
        """The wrapped optimizer (or wrapper)."""
        return self._opt

    @property
    def params(self) -> List[Array]:
        """The params (the user's arrays), in the optimizer's order."""
        return list(self._params)

    @property
    def step_count(self) -> int:
        """The wrapped optimizer's step count (optimizer steps, not micro-steps)."""
        return int(self._opt.step_count)

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        """The wrapped optimizer's param groups."""
        return self._opt.param_groups

    # ------------------------------------------------------------ state dict
    def state_dict(self) -> StateDict:
        """``{"format": "lrfast.wrapper/1", "wrapper": name, ...its state...,
        "inner": the wrapped optimizer's state_dict}`` (docs/state_dict.md)."""
        with self._guard("state_dict"):
            sd: Dict[str, Any] = {"format": WRAPPER_FORMAT, "wrapper": self._what}
            sd.update(self._own_state())
            sd["inner"] = self._opt.state_dict()
            return sd

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Restore a state_dict of this wrapper and its optimizer (exact
        resume); everything is checked before anything changes."""
        with self._guard("load_state_dict"):
            sd = state_dict
            if not isinstance(sd, dict):
                raise TypeError(f"state_dict must be a dict, got {type(sd).__name__}")
            if sd.get("format") != WRAPPER_FORMAT or sd.get("wrapper") != self._what:
                raise ValueError(f"not a {self._what} state_dict of format "
                                 f"{WRAPPER_FORMAT!r} (format {sd.get('format')!r}, wrapper "
                                 f"{sd.get('wrapper')!r})")
            if "inner" not in sd:
                raise ValueError("state_dict lacks 'inner' (the wrapped optimizer's state)")
            self._check_params()
            commit = self._plan_load(sd)          # raises: nothing changed
            self._opt.load_state_dict(sd["inner"])  # checks all, then writes, or raises
            commit()

    def _arrays(self, xs: Any, key: str, keyed: bool,
                float32: Optional[List[bool]] = None) -> Dict[int, Array]:
        """Saved per-param arrays (a list, or with ``keyed`` a dict by param
        index) checked against the params: {index: array}. ``float32[i]``:
        param i's entry may also be float32 (its master copy's dtype)."""
        n = len(self._params)
        if keyed:
            if not isinstance(xs, dict):
                raise ValueError(f"state_dict[{key!r}] must be a dict {{param index: array}}")
            items = []
            for i, a in xs.items():
                if isinstance(i, str) and i.isascii() and i.isdigit():
                    i = int(i)
                if is_bool(i) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
                    raise ValueError(f"state_dict[{key!r}] has an entry for param {i!r}; "
                                     f"there are {n} params")
                items.append((int(i), a))
        else:
            if not isinstance(xs, (list, tuple)) or len(xs) != n:
                raise ValueError(f"state_dict[{key!r}] must be a list of {n} arrays (one per "
                                 "param)")
            items = list(enumerate(xs))
        out = {}
        for i, a in items:
            p = self._params[i]
            if not isinstance(a, np.ndarray):
                raise TypeError(f"param {i}: state_dict[{key!r}] entry must be an ndarray, got "
                                f"{type(a).__name__}")
            wide = float32 is not None and float32[i]
            if a.shape != p.shape or not (a.dtype == p.dtype
                                          or (wide and a.dtype == np.float32)):
                raise ValueError(f"param {i}: state_dict[{key!r}] entry has shape/dtype "
                                 f"{a.shape}/{a.dtype}, param has {p.shape}/{p.dtype}"
                                 + (" (or float32: its master copy's)" if wide else ""))
            out[i] = a
        return out

    def _own_state(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _plan_load(self, sd: StateDict) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        inner = "\n".join("  " + line for line in repr(self._opt).splitlines())
        return f"{type(self).__name__}({self._config()},\n{inner})"

    def _config(self) -> str:
        raise NotImplementedError


def _check_grads(grads: Any, params: List[Array], where: str) -> Tuple[Any, ...]:
    """The grads of a step, checked against the params (as the optimizer
    checks them); raises before anything is written."""
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"grads must be a list or tuple of arrays, got {type(grads).__name__}")
    gs = tuple(grads)
    if len(gs) != len(params):
        raise ValueError(f"expected {len(params)} grads (one per param, in param order), got "
                         f"{len(gs)}")
    for i, (g, p) in enumerate(zip(gs, params)):
        if g is None:
            continue
        w = f"{where}param {i}"
        check_param(g, w, "grad", writeable=False, half=True)
        if g.dtype != p.dtype:
            raise TypeError(f"{w}: grad dtype {g.dtype} != param dtype {p.dtype}")
        if g.shape != p.shape:
            raise ValueError(f"{w}: grad shape {g.shape} != param shape {p.shape}")
        if not ((p.flags.c_contiguous and g.flags.c_contiguous)
                or (p.flags.f_contiguous and g.flags.f_contiguous)):
            raise ValueError(f"{w}: grad memory layout differs from the param's")
    return gs


# ---------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------
class EMA(_Wrapper):
    r"""Weight EMA: a shadow copy of the params, averaged as the optimizer steps.

    ``ema.step(grads)`` steps the optimizer and, on an averaging step, blends
    every average toward its param in the same fused pass (right after each
    chunk's update, while the param is in cache: one more read and write
    stream, not a second pass over memory). ``opt.step`` alone leaves the
    averages alone. As torch's
    ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))``::

        first averaging step:   avg = p                      (n_averaged: 0 -> 1)
        later averaging steps:  avg = lerp(avg, p, 1 - d)    (d = decay)

    where ``lerp(a, p, w)`` is torch's: ``a + w*(p - a)`` for ``w < 0.5``,
    else ``p - (p - a)*(1 - w)``. With ``warmup=True``,
    ``d = min(decay, (1 + t)/(10 + t))`` with ``t = n_averaged`` before this
    update (1 at the second update): the ``num_updates`` rule of TensorFlow's
    ``tf.train.ExponentialMovingAverage``. Every param is averaged on an
    averaging step, those without a grad included (the average follows the
    model, as ``AveragedModel.update_parameters``).

    Parameters
    ----------
    opt : lrfast.Optimizer
        The optimizer (not a wrapper: the blend runs in its kernel pass).
    decay : float in [0, 1]
        The EMA decay.
    every : int >= 1
        Average on the optimizer steps whose count (after the step) is a
        multiple of ``every``.
    warmup : bool
        Use the warmup decay above.

    The averages start as copies of the params (``ema.params`` before the
    first averaging step reads the initial weights). A skipped step
    (``skip_nonfinite``) averages nothing.
    """

    _what = "EMA"

    def __init__(self, opt: Optimizer, decay: float = 0.999, *, every: int = 1,
                 warmup: bool = False) -> None:
        decay = real(decay, "decay", "EMA: ", low=0.0, high=1.0)
        every = integer(every, "every", "EMA: ", low=1)
        if not is_bool(warmup):
            raise TypeError(f"EMA: warmup must be a bool, got {warmup!r}")
        self._init_wrapper(opt, ema=True)
        if opt._lp.active:      # the engine's blend runs on float32/float64 params only
            raise ValueError("EMA: an EMA average does not combine with low-precision params "
                             "or state (16-bit params, master_weights, state_dtype, "
                             "stochastic_rounding)")
        self.decay, self.every, self.warmup = decay, every, bool(warmup)
        self._avg: List[Array] = [_copy(p) for p in self._params]
        self.n_averaged = 0
        self._swapped = False
        self._registered: Optional[List[Array]] = None   # the engine's list of our averages

    def __setstate__(self, st: Dict[str, Any]) -> None:
        super().__setstate__(st)
        self._registered = None

    def _weight(self) -> float:
        """The blend weight of the next averaging step (1: copy)."""
        t = self.n_averaged
        if t == 0:
            return 1.0
        d = min(self.decay, (1.0 + t) / (10.0 + t)) if self.warmup else self.decay
        return 1.0 - d

    def step(self, grads: Grads, *aux: Grads) -> bool:
        """One optimizer step (``opt.step(grads)``; DiagonalNewton takes its
        ``hess_diag`` after the grads), blending the averages on an averaging
        step. Returns what the optimizer's step returns."""
        with self._guard("step"):
            if self._swapped:
                raise RuntimeError("EMA.step inside `with ema.swapped()`: the params hold "
                                   "the averages there")
            if len(aux) > 1:
                raise TypeError(f"EMA.step takes the grads and at most one auxiliary input, "
                                f"got {1 + len(aux)} arguments")
            opt = self._opt
            self._check_params()
            if opt.released:
                raise ValueError("EMA: the optimizer's state is held by a distributed wrapper")
            eng = opt._engine
            if eng.ema is None or eng.ema is not self._registered:
                eng.set_ema(self._avg)          # first step, a new engine or a copy, or
                self._registered = eng.ema      # another EMA stepped this optimizer
            due = (opt.step_count + 1) % self.every == 0
            ok = opt._step(grads, *aux, ema=self._weight() if due else -1.0)
            if ok and due:
                self.n_averaged += 1
            return bool(ok)

    @property
    def params(self) -> List[Array]:
        """The averages, one per param (read-only views; in
        ``with ema.swapped()`` they still hold the averages)."""
        return [_readonly(a) for a in self._avg]

    @contextlib.contextmanager
    def swapped(self) -> Iterator[List[Array]]:
        """``with ema.swapped():`` the user's param arrays hold the averages
        (in place); on exit, even by an exception, they hold their own values
        again, bit for bit. Costs a copy of the params while inside. Stepping
        the EMA inside is refused."""
        with self._guard("swapped"):
            if self._swapped:
                raise RuntimeError("EMA.swapped() is already active")
            saved = [_copy(p) for p in self._params]
            for p, a in zip(self._params, self._avg):
                np.copyto(p, a)
            self._swapped = True
        try:
            yield self.params
        finally:
            for p, s in zip(self._params, saved):
                np.copyto(p, s)
            self._swapped = False

    def _own_state(self) -> Dict[str, Any]:
        return {"decay": self.decay, "every": self.every, "warmup": self.warmup,
                "n_averaged": self.n_averaged, "averages": [a.copy() for a in self._avg]}

    def _plan_load(self, sd: StateDict) -> Any:
        if self._swapped:
            raise RuntimeError("EMA.load_state_dict inside `with ema.swapped()`")
        for k in ("decay", "every", "warmup", "n_averaged", "averages"):
            if k not in sd:
                raise ValueError(f"state_dict lacks {k!r}")
        decay = real(sd["decay"], "decay", "state_dict: ", low=0.0, high=1.0)
        every = integer(sd["every"], "every", "state_dict: ", low=1)
        if not is_bool(sd["warmup"]):
            raise ValueError(f"state_dict: warmup must be a bool, got {sd['warmup']!r}")
        warmup = bool(sd["warmup"])
        n = step_count(sd["n_averaged"], "state_dict['n_averaged']")
        avgs = self._arrays(sd["averages"], "averages", keyed=False)

        def commit():
            for i, a in avgs.items():
                np.copyto(self._avg[i], a)
            self.decay, self.every, self.warmup, self.n_averaged = decay, every, warmup, n
        return commit

    def _config(self) -> str:
        return (f"decay={self.decay!r}, every={self.every}, warmup={self.warmup}, "
                f"n_averaged={self.n_averaged}")


# ---------------------------------------------------------------------------
# Accumulate
# ---------------------------------------------------------------------------
class Accumulate(_Wrapper):
    r"""Gradient accumulation: ``every`` micro-steps make one optimizer step.

    ``acc.step(grads)`` is a micro-step. The grads are added into one
    accumulator per param (the param's dtype); the ``every``-th micro-step of
    a window steps the optimizer with their mean (``mean=True``) or sum, then
    starts a new window. As ``optax.MultiSteps(opt, every_k_schedule=every,
    use_grad_mean=mean)``: the mean is a running one,
    ``acc += (g - acc)/(j + 1)`` at micro-step j = 0, 1, ... of the window.

    A ``None`` grad counts as a zero grad for that micro-step (the mean still
    divides by ``every``, as a loss divided by ``every`` would give); a param
    with no grad in the whole window gets ``None`` in the optimizer step (its
    state stays as it is). Schedules see optimizer steps, not micro-steps.
    ``step`` returns True when it made an optimizer step that was applied.

    Parameters
    ----------
    opt : lrfast optimizer or wrapper
    every : int >= 1
        Micro-steps per optimizer step.
    mean : bool
        Step with the mean of the window's grads (True) or their sum.
    """

    _what = "Accumulate"

    def __init__(self, opt: Any, every: int, mean: bool = True) -> None:
        every = integer(every, "every", "Accumulate: ", low=1)
        if not is_bool(mean):
            raise TypeError(f"Accumulate: mean must be a bool, got {mean!r}")
        if isinstance(opt, Optimizer) and opt._kind in _K.AUX_KINDS:
            raise TypeError(f"Accumulate: {type(opt).__name__} takes a second input per "
                            "param; it cannot be accumulated")
        self._init_wrapper(opt)
        self.every, self.mean = every, bool(mean)
        self._acc: List[Array] = [np.zeros_like(p, order="K") for p in self._params]
        self._seen = [False] * len(self._params)
        self.micro_step = 0          # micro-steps done in the current window

    def step(self, grads: Grads) -> bool:
        """One micro-step; every ``every``-th also steps the optimizer."""
        with self._guard("step"):
            self._check_params()
            gs = _check_grads(grads, self._params, "")
            j = self.micro_step
            if j + 1 < self.every:
                for i, (g, a) in enumerate(zip(gs, self._acc)):
                    if g is not None:
                        self._seen[i] = True
                    if self._seen[i]:
                        self._fold(a, g, j, out=a)
                self.micro_step = j + 1
                return False
            outs = [self._fold(a, g, j) if (g is not None or self._seen[i]) else None
                    for i, (g, a) in enumerate(zip(gs, self._acc))]
            ok = self._opt.step(outs)           # raises: the window is as it was
            for a, s in zip(self._acc, self._seen):
                if s:
                    a.fill(0)
            self._seen = [False] * len(self._params)
            self.micro_step = 0
            return bool(ok)

    def _fold(self, a: Array, g: Optional[Array], j: int, out: Optional[Array] = None) -> Array:
        """acc + g (sum) or acc + (g - acc)/(j + 1) (mean), in the param's
        dtype; a None grad is a zero grad. Into ``out``, else a new array."""
        if not self.mean:
            if g is None:
                return a if out is not None else a.copy()
            return np.add(a, g, out=out)
        d = np.negative(a) if g is None else np.subtract(g, a)
        d /= a.dtype.type(j + 1)
        return np.add(a, d, out=d if out is None else out)

    def _own_state(self) -> Dict[str, Any]:
        return {"every": self.every, "mean": self.mean, "micro_step": self.micro_step,
                "accumulators": {i: a.copy() for i, a in enumerate(self._acc)
                                 if self._seen[i]}}

    def _plan_load(self, sd: StateDict) -> Any:
        for k in ("every", "mean", "micro_step", "accumulators"):
            if k not in sd:
                raise ValueError(f"state_dict lacks {k!r}")
        every = integer(sd["every"], "every", "state_dict: ", low=1)
        if not is_bool(sd["mean"]):
            raise ValueError(f"state_dict: mean must be a bool, got {sd['mean']!r}")
        j = step_count(sd["micro_step"], "state_dict['micro_step']")
        if j >= every:
            raise ValueError(f"state_dict: micro_step {j} must be < every ({every})")
        accs = self._arrays(sd["accumulators"], "accumulators", keyed=True)
        if accs and j == 0:
            raise ValueError("state_dict: accumulators given at micro_step 0 (an empty window)")

        def commit():
            for i, a in enumerate(self._acc):
                if i in accs:
                    np.copyto(a, accs[i])
                else:
                    a.fill(0)
            self._seen = [i in accs for i in range(len(self._acc))]
            self.every, self.mean, self.micro_step = every, bool(sd["mean"]), j
        return commit

    def _config(self) -> str:
        return f"every={self.every}, mean={self.mean}, micro_step={self.micro_step}"


# ---------------------------------------------------------------------------
# Lookahead
# ---------------------------------------------------------------------------
class Lookahead(_Wrapper):
    r"""Lookahead (Zhang et al. 2019): k fast steps forward, one step back.

    ``look.step(grads)`` steps the optimizer on the fast params (the user's
    arrays, in place). After every ``k``-th applied step::

        slow = slow + alpha*(fast - slow)     (in the param's dtype)
        fast = slow

    As ``optax.lookahead(opt, sync_period=k, slow_step_size=alpha)`` (whose
    ``LookaheadParams.fast`` are the user's params here and ``.slow`` are
    ``look.slow_params``); the optimizer's state is kept across syncs (optax's
    ``reset_state=False``). The slow params start as copies of the params.
    A skipped step (``skip_nonfinite``) does not count toward ``k``.

    With ``master_weights=True`` the fast weights are the float32 master
    copies: the slow weights are float32, the sync runs on the masters in
    float32, and each 16-bit param is then rounded from its master to nearest
    even (as the optimizer's step rounds it).

    Parameters
    ----------
    opt : lrfast optimizer or wrapper
    k : int >= 1
        Fast steps per sync.
    alpha : float in [0, 1]
        The slow step size.
    """

    _what = "Lookahead"

    def __init__(self, opt: Any, k: int = 5, alpha: float = 0.5) -> None:
        k = integer(k, "k", "Lookahead: ", low=1)
        alpha = real(alpha, "alpha", "Lookahead: ", low=0.0, high=1.0)
        self._init_wrapper(opt)
        self.k, self.alpha = k, alpha
        self._slow: List[Array] = [_copy(p if m is None else m)
                                   for p, m in zip(self._params, self._masters())]
        self.steps_since_sync = 0

    def _masters(self) -> List[Optional[Array]]:
        """The float32 master copy of each param (None: the param is its own)."""
        base = self._opt
        while isinstance(base, _Wrapper):
            base = base._opt
        lp = getattr(base, "_lp", None)
        ms = list(lp.master) if lp is not None else []
        return ms + [None] * (len(self._params) - len(ms))

    def step(self, grads: Grads, *aux: Grads) -> bool:
        """One fast step (the optimizer's ``step(grads, *aux)``), then a sync
        after every ``k``-th applied one. Returns what the optimizer's step
        returns."""
        with self._guard("step"):
            self._check_params()
            ok = self._opt.step(grads, *aux)
            if ok:
                self.steps_since_sync += 1
                if self.steps_since_sync >= self.k:
                    self._sync()
            return bool(ok)

    def _sync(self) -> None:
        for p, s, m in zip(self._params, self._slow, self._masters()):
            fast = p if m is None else m
            d = np.subtract(fast, s)
            d *= fast.dtype.type(self.alpha)
            s += d
            np.copyto(fast, s)
            if m is not None:       # the param, rounded from its master as a step rounds it
                p.view(np.uint16)[...] = _lowp.to_bits(m, _lowp.param_format(p))
        self.steps_since_sync = 0

    @property
    def slow_params(self) -> List[Array]:
        """The slow weights, one per param (read-only views)."""
        return [_readonly(a) for a in self._slow]

    def _own_state(self) -> Dict[str, Any]:
        return {"k": self.k, "alpha": self.alpha, "steps_since_sync": self.steps_since_sync,
                "slow": [a.copy() for a in self._slow]}

    def _plan_load(self, sd: StateDict) -> Any:
        for key in ("k", "alpha", "steps_since_sync", "slow"):
            if key not in sd:
                raise ValueError(f"state_dict lacks {key!r}")
        k = integer(sd["k"], "k", "state_dict: ", low=1)
        alpha = real(sd["alpha"], "alpha", "state_dict: ", low=0.0, high=1.0)
        n = step_count(sd["steps_since_sync"], "state_dict['steps_since_sync']")
        if n >= k:
            raise ValueError(f"state_dict: steps_since_sync {n} must be < k ({k})")
        masters = self._masters()
        slow = self._arrays(sd["slow"], "slow", keyed=False,
                            float32=[m is not None for m in masters])

        def commit():
            for i, a in slow.items():
                np.copyto(self._slow[i], a)     # a 16-bit one widens exactly
            self.k, self.alpha, self.steps_since_sync = k, alpha, n
        return commit

    def _config(self) -> str:
        return f"k={self.k}, alpha={self.alpha!r}, steps_since_sync={self.steps_since_sync}"
