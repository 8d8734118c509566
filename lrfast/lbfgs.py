r"""L-BFGS (torch.optim.LBFGS's algorithm and names) over numpy params.

The seed text: "the learning rate is related to the step length determined by
inexact line search in quasi-Newton methods". L-BFGS keeps the last
``history_size`` pairs ``s_k = x_{k+1} - x_k``, ``y_k = g_{k+1} - g_k`` and
applies the implied inverse-Hessian approximation to the gradient by the
two-loop recursion (Nocedal & Wright, *Numerical Optimization*, 2nd ed.,
Algorithms 7.4 and 7.5); the step length along that direction is ``lr`` or
comes from a line search (:mod:`lrfast.line_search`).

All vector work (the two-loop recursion, dot products, axpys, trial points)
runs in lrfast's kernels over the params as one flat vector without
concatenating them, with deterministic reductions: the trajectory is the same
bit for bit for any thread count.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import threading
from typing import Any, Dict, List, Literal, NoReturn, Optional

import numpy as np

from ._dispatch import kernels as _K
from ._typing import Array, Closure, Hyper, ParamsLike, StateDict
from .line_search import (LineSearchResult, _armijo_core, _armijo_holds, _as_float,
                          _wolfe_core)
from ._validate import check_param
from ._validate import finite as _finite
from ._validate import is_schedule as _is_sched
from .optim import FORMAT, ParamGroup, check_header, parse_groups

__all__ = ["LBFGS"]

_LINE_SEARCHES = (None, "strong_wolfe", "backtracking")
_HP = ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history_size",
       "line_search_fn")
_C1, _C2, _SHRINK = 1e-4, 0.9, 0.5


def _named(fn, *args):
    """Call a FlatParams method; its errors name "param i": add the group, as every
    lrfast optimizer's errors do."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise type(e)(msg if msg.startswith("group") else f"group 0, {msg}") from None


def _check_hp(hp, where="group 0"):
    """Validate LBFGS hyperparameters (lr may be a schedule: checked when evaluated)."""
    lr = hp["lr"]
    if not _is_sched(lr):
        _check_lr(lr, where)
    for k in ("max_iter", "max_eval", "history_size"):
        v = hp[k]
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{where}: {k} must be an int, got {v!r}")
        if v < 1:
            raise ValueError(f"{where}: invalid {k} {v!r} (must be >= 1)")
    for k in ("tolerance_grad", "tolerance_change"):
        v = hp[k]
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{where}: {k} must be a number, got {v!r}")
        if not _finite(v) or v < 0:
            raise ValueError(f"{where}: invalid {k} {v!r} (must be finite and >= 0)")
    if hp["line_search_fn"] not in _LINE_SEARCHES:
        raise ValueError(f"{where}: line_search_fn must be one of {_LINE_SEARCHES}, got "
                         f"{hp['line_search_fn']!r}")


def _check_lr(lr, where):
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real):
        raise TypeError(f"{where}: lr must be a number or a schedule, got {lr!r}")
    if not _finite(lr):
        raise ValueError(f"{where}: lr must be finite, got {lr!r}")
    if lr < 0:
        raise ValueError(f"{where}: invalid learning rate {lr!r} (must be >= 0)")


class LBFGS:
    r"""L-BFGS with torch.optim.LBFGS's algorithm, names and defaults.

    Each :meth:`step` runs up to ``max_iter`` iterations of::

        g = grad f(x)
        d = -H g                       # two-loop recursion over (s_i, y_i), i < history_size,
                                       # H_0 = (s.y / y.y) I  (Nocedal & Wright, Alg. 7.4)
        t = min(1, 1/|g|_1) * lr on the very first iteration, else lr
        t = line_search(x, d, t)       # strong Wolfe (c1=1e-4, c2=0.9), backtracking
                                       # Armijo (c1=1e-4, shrink 0.5), or t as is (None)
        x = x + t d;  s = t d;  y = g(x) - g;  keep (s, y) if s.y > 1e-10

    stopping as torch does: ``max|g| <= tolerance_grad``, ``g.d > -tolerance_change``,
    ``max|t d| <= tolerance_change``, ``|f - f_prev| < tolerance_change``,
    ``max_iter`` iterations or ``max_eval`` evaluations (torch's quirk kept: a
    strong-Wolfe search may use up to ``max_eval - evals + 1`` evaluations).
    The learning rate is the initial trial step of the line search: the seed's
    "step length determined by inexact line search in quasi-Newton methods".

    Parameters
    ----------
    params : list of ndarray, or a list with one dict (one parameter group)
        Contiguous, writable float32 or float64 arrays, all of ONE dtype,
        updated in place. L-BFGS has one group (as torch).
    lr : float or schedule
        Initial step length (default 1). A schedule is evaluated at
        ``n = step_count`` at each :meth:`step`.
    max_iter : int
        Iterations per :meth:`step` (default 20).
    max_eval : int or None
        Closure evaluations per :meth:`step` (default ``max_iter * 5 // 4``).
    tolerance_grad, tolerance_change : float
        Stopping tolerances (defaults 1e-7 and 1e-9).
    history_size : int
        Number of (s, y) pairs kept (default 100).
    line_search_fn : {None, "strong_wolfe", "backtracking"}
        Default None (fixed step ``t = lr``), as torch.

    Notes
    -----
    ``step(closure)`` calls ``closure()`` (possibly several times); it must
    compute the loss and gradient at the CURRENT values of the params and
    return ``(loss, grads)``, grads in param order (``None`` = zero, as
    torch). Grads are copied at once, so the closure may reuse its arrays.
    If the closure raises during a step, the params are put back to the last
    accepted iterate and the state is that after the last completed
    iteration. After each step, ``line_search_log`` holds one
    :class:`~lrfast.line_search.LineSearchResult` per line search of that step
    (``g`` and ``x`` set to None), with the conditions each accepted step
    satisfies.

    Memory: ``2 * history_size + 4`` flat vectors of the params' size
    (torch: about the same).

    Examples
    --------
    >>> import numpy as np, lrfast
    >>> x = np.array([-1.2, 1.0])
    >>> def closure():
    ...     f = 100 * (x[1] - x[0]**2)**2 + (1 - x[0])**2
    ...     g = np.array([-400 * x[0] * (x[1] - x[0]**2) - 2 * (1 - x[0]),
    ...                   200 * (x[1] - x[0]**2)])
    ...     return f, [g]
    >>> opt = lrfast.LBFGS([x], max_iter=100, tolerance_change=1e-12,
    ...                    line_search_fn="strong_wolfe")
    >>> _ = opt.step(closure)
    >>> np.round(x, 6), opt.n_iter, opt.func_evals          # torch.optim.LBFGS: 36, 44
    (array([1., 1.]), 36, 44)
    """

    def __init__(self, params: ParamsLike, lr: Hyper = 1, max_iter: int = 20,
                 max_eval: Optional[int] = None, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: Optional[Literal["strong_wolfe", "backtracking"]] = None
                 ) -> None:
        plist, overrides = self._parse_params(params)
        if "max_iter" in overrides:
            max_iter = overrides["max_iter"]
        if max_eval is None and "max_eval" not in overrides:
            if isinstance(max_iter, numbers.Integral) and not isinstance(max_iter, bool):
                max_eval = max_iter * 5 // 4
        hp = dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                  tolerance_change=tolerance_change, history_size=history_size,
                  line_search_fn=line_search_fn)
        hp.update(overrides)
        _check_hp(hp)
        for i, p in enumerate(plist):
            check_param(p, f"group 0, param {i}")
        dtypes = {p.dtype for p in plist}
        if len(dtypes) > 1:
            raise TypeError(f"group 0: LBFGS needs all params of one dtype (it works on them as "
                            f"one flat vector), got {sorted(str(d) for d in dtypes)}")
        self._space = _named(_K.FlatParams, plist)        # rejects overlapping params
        self.defaults = {k: hp[k] for k in _HP}
        group = ParamGroup(params=plist, **hp)
        group._bind(self, 0)
        self.param_groups = [group]
        self._params = plist
        self._dtype = plist[0].dtype
        self._n = self._space.n
        self._lock = threading.Lock()
        self._owner = None
        self._x0 = None
        self._step_count = 0
        self.skipped_steps = 0
        self.line_search_log: List[LineSearchResult] = []
        self._reset_state()

    @staticmethod
    def _parse_params(params):
        groups = parse_groups(params)
        if len(groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter "
                             "groups): give one group")
        g = dict(groups[0])
        if "params" not in g:
            raise TypeError("group 0: a parameter group is a dict with a 'params' list")
        plist = g.pop("params")
        plist = [plist] if isinstance(plist, np.ndarray) else list(plist)
        unknown = set(g) - set(_HP)
        if unknown:
            raise ValueError(f"group 0: unknown hyperparameter(s) {sorted(unknown)} for LBFGS")
        if not plist:
            raise ValueError("optimizer got an empty parameter list")
        return plist, g

    def add_param_group(self, param_group: Dict[str, Any]) -> NoReturn:
        raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

    @staticmethod
    def _check_group_change(gi, trial):
        """param_groups[0][key] = value: validate; the value itself is the commit."""
        _check_hp(trial)
        return lambda: None

    def _reset_state(self):
        self._func_evals = 0
        self._n_iter = 0
        self._d = None            # last direction (flat)
        self._t = None            # last step length
        self._S = []              # s_i = t_i d_i, oldest first (torch: old_stps)
        self._Y = []              # y_i = g_{i+1} - g_i (torch: old_dirs)
        self._ro = []             # 1 / (y_i . s_i)
        self._H = 1.0             # initial inverse-Hessian scale (torch: H_diag)
        self._prev_g = None       # flat grad at the start of the last iteration
        self._prev_loss = None

    # ------------------------------------------------------------------ views
    @property
    def step_count(self) -> int:
        """Number of completed :meth:`step` calls."""
        return self._step_count

    @property
    def n_iter(self) -> int:
        """L-BFGS iterations over all steps (torch's ``state['n_iter']``)."""
        return self._n_iter

    @property
    def func_evals(self) -> int:
        """Closure evaluations over all steps (torch's ``state['func_evals']``)."""
        return self._func_evals

    @property
    def params(self) -> List[Array]:
        return list(self._params)

    @property
    def hyperparams(self) -> List[Dict[str, Any]]:
        """The hyperparameter values the next step will use (one group)."""
        hp = {k: self.param_groups[0][k] for k in _HP}
        if _is_sched(hp["lr"]):
            hp["lr"] = self._lr_at(hp["lr"], self._step_count)
        return [hp]

    @property
    def lr(self) -> float:
        """The lr the next step will use."""
        return self.hyperparams[0]["lr"]

    @property
    def state(self) -> Dict[int, Dict[str, Any]]:
        """torch-like state: ``{0: {...}}`` with views of the buffers (empty before
        the first step)."""
        e = self._state_entry(copy=False)
        return {} if e is None else {0: e}

    def __repr__(self):
        hp = self.hyperparams[0]
        return (f"LBFGS ({len(self._params)} params, {self._n} elements, {self._dtype}, "
                + ", ".join(f"{k}={v!r}" for k, v in hp.items())
                + f", n_iter={self._n_iter}, func_evals={self._func_evals})")

    @staticmethod
    def _lr_at(fn, n):
        try:
            v = float(fn(n))
        except Exception as e:
            raise ValueError(f"group 0: schedule for lr failed at step {n}: {e}") from e
        _check_lr(v, "group 0")
        return v

    # ------------------------------------------------------------------- step
    def _call(self, closure, d=None):
        """closure() -> (loss, flat grad copy, sum|g|, max|g|, g.d), validated."""
        out = closure()
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError("the LBFGS closure must return (loss, grads), grads one array per "
                            f"param; got {type(out).__name__}")
        loss = _as_float(out[0], "the closure's loss")
        g = np.empty(self._n, self._dtype)
        sumabs, maxabs, gtd = _named(self._space.gather, out[1], g, d)
        return loss, g, sumabs, maxabs, gtd

    def _eval(self, closure, d=None):
        r = self._call(closure, d)
        self._func_evals += 1
        return r

    def step(self, closure: Closure) -> float:
        """Run up to ``max_iter`` L-BFGS iterations; returns the loss at the start.

        Parameters
        ----------
        closure : callable
            ``closure() -> (loss, grads)`` at the current params (see the class
            notes); called at least once.

        Raises
        ------
        ValueError
            If the closure's first loss or gradient is not finite (nothing
            is changed then), or its grads do not match the params.
        """
        if not callable(closure):
            raise TypeError("LBFGS.step needs a closure: closure() -> (loss, grads)")
        with self._guard("step"):
            return self._step(closure)

    @contextlib.contextmanager
    def _guard(self, what):
        # One step at a time (another thread waits); the closure itself must
        # not re-enter the optimizer (that would deadlock or corrupt a step).
        me = threading.get_ident()
        if self._owner == me:
            raise RuntimeError(f"LBFGS.{what} called from the closure while a step is running")
        with self._lock:
            self._owner = me
            try:
                yield
            finally:
                self._owner = None

    def _step(self, closure):
        group = self.param_groups[0]
        _check_hp(group)
        lr = group["lr"]
        if _is_sched(lr):
            lr = self._lr_at(lr, self._step_count)
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]
        space, K = self._space, _K

        # evaluate initial f(x) and df/dx
        loss, g, sumabs, maxabs, _ = self._call(closure)
        if not (math.isfinite(loss) and math.isfinite(maxabs)):
            raise ValueError(f"LBFGS: the closure returned a non-finite "
                             f"{'loss' if not math.isfinite(loss) else 'gradient'} at the "
                             "current params; nothing was changed")
        self._func_evals += 1
        self.line_search_log = []
        orig_loss = loss
        current_evals = 1
        if maxabs <= tolerance_grad:         # optimal condition
            self._step_count += 1
            return orig_loss

        d, t = self._d, self._t
        S, Y, ro, H = self._S, self._Y, self._ro, self._H
        prev_g, prev_loss = self._prev_g, self._prev_loss
        if self._x0 is None:
            self._x0 = np.empty(self._n, self._dtype)
        x0 = self._x0
        moved = False
        n_iter = 0
        try:
            while n_iter < max_iter:
                n_iter += 1
                k = self._n_iter + 1
                # ---- direction
                if k == 1:
                    d = np.empty_like(g)
                    K.vscale(-1.0, g, out=d)
                    S, Y, ro, H = [], [], [], 1.0
                else:
                    y = np.empty_like(g)
                    K.vlincomb(y, g, -1.0, prev_g)            # y = g - prev_g
                    s = np.empty_like(g)
                    K.vscale(t, d, out=s)                     # s = d * t
                    ys = K.vdot(y, s)
                    if ys > 1e-10:
                        S, Y, ro = list(S), list(Y), list(ro)
                        while len(S) >= history_size:         # shift history by one
                            del S[0], Y[0], ro[0]
                        S.append(s)
                        Y.append(y)
                        ro.append(1.0 / ys)
                        H = ys / K.vdot(y, y)
                    d = np.empty_like(g)
                    K.lbfgs_two_loop(g, d, S, Y, ro, H)
                prev_g, prev_loss = g, loss
                # ---- step length
                t = min(1.0, 1.0 / sumabs) * lr if k == 1 else lr
                gtd = K.vdot(g, d)
                if gtd > -tolerance_change:
                    self._commit(k, d, t, S, Y, ro, H, prev_g, prev_loss)
                    break
                dmax = K.vstats(d)[1]
                ls_evals = 0
                space.pull(x0)
                moved = True
                if line_search_fn is not None:
                    def phi(tt):
                        space.push(x0, tt, d)
                        f_new, g_new, sa, ma, gtd_new = self._eval(closure, d)
                        return f_new, gtd_new, (g_new, sa, ma)

                    tok0 = (g, sumabs, maxabs)
                    if line_search_fn == "strong_wolfe":
                        t, loss, gtd_new, tok, ls_evals = _wolfe_core(
                            phi, t, loss, gtd, tok0, dmax, _C1, _C2, tolerance_change,
                            max_eval - current_evals)
                        curv = bool(abs(gtd_new) <= -_C2 * gtd)
                    else:
                        t, loss, gtd_new, tok, ls_evals = _armijo_core(
                            phi, t, loss, gtd, tok0, _C1, _SHRINK,
                            max(1, max_eval - current_evals))
                        curv = None
                    g, sumabs, maxabs = tok
                    space.push(x0, t, d)
                    opt_cond = maxabs <= tolerance_grad
                    self.line_search_log.append(LineSearchResult(
                        step=float(t), f=loss, g=None, gtd=gtd_new, f0=prev_loss, gtd0=gtd,
                        n_evals=ls_evals, armijo=_armijo_holds(t, loss, prev_loss, gtd, _C1),
                        curvature=curv))
                else:
                    # no line search, simply move with fixed step
                    space.add(t, d)
                    opt_cond = False
                    if n_iter != max_iter:
                        loss, g, sumabs, maxabs, _ = self._eval(closure)
                        opt_cond = maxabs <= tolerance_grad
                        ls_evals = 1
                moved = False
                current_evals += ls_evals
                self._commit(k, d, t, S, Y, ro, H, prev_g, prev_loss)
                # ---- check conditions
                if n_iter == max_iter:
                    break
                if current_evals >= max_eval:
                    break
                if opt_cond:
                    break
                if abs(t) * dmax <= tolerance_change:      # lack of progress
                    break
                if abs(loss - prev_loss) < tolerance_change:
                    break
        except BaseException:
            if moved:
                space.put(x0)
            raise
        self._step_count += 1
        return orig_loss

    def _commit(self, k, d, t, S, Y, ro, H, prev_g, prev_loss):
        self._n_iter = k
        self._d, self._t = d, float(t)
        self._S, self._Y, self._ro, self._H = S, Y, ro, float(H)
        self._prev_g, self._prev_loss = prev_g, float(prev_loss)

    # ------------------------------------------------------------ state dict
    def zero_state(self) -> None:
        """Forget the history and counters (params untouched; step_count restarts)."""
        with self._guard("zero_state"):
            self._reset_state()
            self._step_count = 0
            self.skipped_steps = 0

    def _state_entry(self, copy=True):
        if self._func_evals == 0 and self._n_iter == 0:
            return None
        c = (lambda a: None if a is None else a.copy()) if copy else (lambda a: a)
        m = len(self._S)
        return {
            "func_evals": self._func_evals, "n_iter": self._n_iter,
            "d": c(self._d), "t": self._t,
            "old_dirs": np.array(self._Y) if m else np.empty((0, self._n), self._dtype),
            "old_stps": np.array(self._S) if m else np.empty((0, self._n), self._dtype),
            "ro": np.array(self._ro, dtype=np.float64), "H_diag": self._H,
            "prev_flat_grad": c(self._prev_g), "prev_loss": self._prev_loss,
        }

    def state_dict(self) -> StateDict:
        """A plain dict (numpy arrays, numbers, strings; SPEC schema v1): the
        history as ``(m, n)`` arrays ``old_dirs`` (y) and ``old_stps`` (s),
        oldest first, with torch's other state names."""
        with self._guard("state_dict"):
            g: Dict[str, Any] = {"params": list(range(len(self._params)))}
            g.update(self.hyperparams[0])
            lr = self.param_groups[0]["lr"]
            if _is_sched(lr):
                from . import schedules as S
                ser = getattr(S, "serialize", None)
                g["schedules"] = {"lr": ser(lr) if ser is not None else
                                  {"class": type(lr).__name__}}
            e = self._state_entry(copy=True)
            return {"format": FORMAT, "optimizer": "LBFGS", "step_count": self._step_count,
                    "skipped_steps": self.skipped_steps, "state": {} if e is None else {0: e},
                    "param_groups": [g]}

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Restore a state_dict (exact resume); checks everything before changing
        anything."""
        with self._guard("load_state_dict"):
            sd = state_dict
            check_header(sd, "LBFGS")
            groups = sd.get("param_groups")
            if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0],
                                                                                  dict):
                raise ValueError("state_dict must have exactly one param group for LBFGS")
            g = groups[0]
            if list(g.get("params", [])) != list(range(len(self._params))):
                raise ValueError(f"group 0: state_dict lists params {g.get('params')}, the "
                                 f"optimizer has {len(self._params)}")
            trial = dict(self.param_groups[0])
            for k in _HP:
                if k not in g:
                    raise ValueError(f"group 0: state_dict lacks hyperparameter {k!r}")
                if k == "lr" and _is_sched(trial["lr"]):
                    continue
                trial[k] = g[k]
            _check_hp(trial)
            state = sd.get("state")
            if not isinstance(state, dict):
                raise ValueError("state_dict['state'] must be a dict")
            keys = [int(k) if isinstance(k, str) and k.isdigit() else k for k in state]
            if keys not in ([], [0]):
                raise ValueError(f"state_dict['state'] must be empty or have one entry (0) for "
                                 f"LBFGS, got keys {list(state)}")
            new = self._check_entry(next(iter(state.values())), trial) if state else None
            # ---- commit
            lr = self.param_groups[0]["lr"]
            ser = (g.get("schedules") or {}).get("lr")
            if _is_sched(lr) and isinstance(ser, dict) and ser.get("state") and hasattr(
                    lr, "load_state_dict"):
                lr.load_state_dict(ser["state"])
            for k in _HP:
                dict.__setitem__(self.param_groups[0], k, trial[k])
            self._reset_state()
            if new is not None:
                for k, v in new.items():
                    setattr(self, k, v)
            self._step_count = int(sd["step_count"])
            self.skipped_steps = int(sd["skipped_steps"])

    def _check_entry(self, e, hp):
        where = "group 0, state"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: entry must be a dict")
        n, dt = self._n, self._dtype

        def count(k):
            v = e.get(k)
            if isinstance(v, np.ndarray) and v.size == 1:
                v = v.item()
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"{where}: {k!r} must be an int >= 0, got {v!r}")
            return int(v)

        def num(k, none_ok):
            v = e.get(k)
            if v is None and none_ok:
                return None
            if isinstance(v, np.ndarray) and v.size == 1:
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not _finite(v):
                raise ValueError(f"{where}: {k!r} must be a finite number, got {v!r}")
            return float(v)

        def vec(k, none_ok):
            v = e.get(k)
            if v is None and none_ok:
                return None
            if not isinstance(v, np.ndarray):
                raise TypeError(f"{where}: {k!r} must be an ndarray, got {type(v).__name__}")
            if v.shape != (n,) or v.dtype != dt:
                raise ValueError(f"{where}: {k!r} has shape/dtype {v.shape}/{v.dtype}, "
                                 f"expected ({n},)/{dt}")
            return np.array(v, order="C", copy=True)

        out = {"_func_evals": count("func_evals"), "_n_iter": count("n_iter")}
        started = out["_n_iter"] > 0
        out["_d"] = vec("d", not started)
        out["_prev_g"] = vec("prev_flat_grad", not started)
        out["_t"] = num("t", not started)
        out["_prev_loss"] = num("prev_loss", not started)
        out["_H"] = num("H_diag", False) if "H_diag" in e else 1.0
        hist = []
        for k in ("old_dirs", "old_stps"):
            v = e.get(k)
            if not isinstance(v, np.ndarray) or v.ndim != 2 or v.shape[1] != n or v.dtype != dt:
                raise ValueError(f"{where}: {k!r} must be an (m, {n}) array of {dt}, got "
                                 f"{getattr(v, 'shape', type(v).__name__)}")
            hist.append(v)
        ro = np.asarray(e.get("ro"), dtype=np.float64) if e.get("ro") is not None else None
        m = hist[0].shape[0]
        if hist[1].shape[0] != m or ro is None or ro.shape != (m,):
            raise ValueError(f"{where}: old_dirs, old_stps and ro must have the same length")
        if m > hp["history_size"]:
            raise ValueError(f"{where}: history has {m} pairs, more than history_size="
                             f"{hp['history_size']}")
        if not np.all(np.isfinite(ro)):
            raise ValueError(f"{where}: 'ro' must be finite")
        out["_Y"] = [np.array(hist[0][i], order="C", copy=True) for i in range(m)]
        out["_S"] = [np.array(hist[1][i], order="C", copy=True) for i in range(m)]
        out["_ro"] = [float(r) for r in ro]
        return out

    # -------------------------------------------------------- pickle, copy
    def __getstate__(self):
        hp = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"params": list(self._params), "hp": hp, "state": self.state_dict(),
                "log": list(self.line_search_log)}

    def __setstate__(self, st):
        LBFGS.__init__(self, st["params"], **st["hp"])
        self.load_state_dict(st["state"])
        self.line_search_log = st.get("log", [])
