r"""L-BFGS (torch.optim.LBFGS's algorithm and names) over numpy params.

As the Wikipedia article "Learning rate" puts it, in quasi-Newton methods "the
learning rate is related to the step length determined by inexact line
search". L-BFGS keeps the last ``history_size`` pairs ``s_k = x_{k+1} - x_k``,
``y_k = g_{k+1} - g_k`` and applies the implied inverse-Hessian approximation
to the gradient by the two-loop recursion (Nocedal & Wright, *Numerical
Optimization*, 2nd ed., Algorithms 7.4 and 7.5); the step length along that
direction is ``lr`` or comes from a line search (:mod:`lrfast.line_search`).

All vector work (the two-loop recursion, dot products, axpys, trial points)
runs in lrfast's kernels over the params as one flat vector without
concatenating them, with deterministic reductions: the trajectory is the same
bit for bit for any thread count.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Literal, NoReturn, Optional, Tuple

import numpy as np

from . import schedules as _schedules
from ._dispatch import kernels as _K
from ._optimizer_base import OptimizerBase, schedule_restore
from ._typing import Array, Closure, Hyper, ParamsLike, StateDict
from ._validate import (check_param, check_value, choice, integer, is_schedule, number,
                        scalar, schedule_value, step_count)
from .line_search import LineSearchResult, _armijo_core, _armijo_holds, _wolfe_core
from .optim import ParamGroup, parse_groups
from .optim._base import check_names, split_names

__all__ = ["LBFGS"]

_LINE_SEARCHES = (None, "strong_wolfe", "backtracking")
_HP = ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history_size",
       "line_search_fn")
_C1, _C2, _SHRINK = 1e-4, 0.9, 0.5
_WHERE = "group 0: "


def _named(fn, *args):
    """Call a FlatParams method; its errors name "param i": add the group, as every
    lrfast optimizer's errors do."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise type(e)(msg if msg.startswith("group") else f"group 0, {msg}") from None


def _check_hp(hp: Dict[str, Any], where: str = _WHERE) -> None:
    """Validate LBFGS hyperparameters (lr may be a schedule: checked when evaluated)."""
    if not is_schedule(hp["lr"]):
        check_value(hp["lr"], "lr", "ge0", where)
    for k in ("max_iter", "max_eval", "history_size"):
        integer(hp[k], k, where, low=1)
    for k in ("tolerance_grad", "tolerance_change"):
        check_value(hp[k], k, "ge0", where)
    choice(hp["line_search_fn"], "line_search_fn", _LINE_SEARCHES, where)


class LBFGS(OptimizerBase):
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
    The learning rate is the initial trial step of the line search: the "step
    length determined by inexact line search" of quasi-Newton methods (Nocedal &
    Wright, *Numerical Optimization*, 2nd ed., chapter 3).

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
        plist, names = split_names(plist, "group 0")
        if "max_iter" in overrides:
            max_iter = overrides["max_iter"]
        if max_eval is None and "max_eval" not in overrides:
            max_eval = integer(max_iter, "max_iter", _WHERE, low=1) * 5 // 4
        hp = dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                  tolerance_change=tolerance_change, history_size=history_size,
                  line_search_fn=line_search_fn)
        hp.update(overrides)
        _check_hp(hp)
        for i, p in enumerate(plist):
            check_param(p, f"group 0, param {i}" + (f" {names[i]!r}" if names else ""))
        dtypes = {p.dtype for p in plist}
        if len(dtypes) > 1:
            raise TypeError(f"group 0: LBFGS needs all params of one dtype (it works on them as "
                            f"one flat vector), got {sorted(str(d) for d in dtypes)}")
        self._space = _named(_K.FlatParams, plist)        # rejects overlapping params
        self._init_base()
        self.defaults = {k: hp[k] for k in _HP}
        group = ParamGroup(params=plist, **hp)
        if names is not None:
            dict.__setitem__(group, "param_names", list(names))
        group._bind(self, 0)
        self.param_groups = [group]
        self._params = plist
        self._dtype = plist[0].dtype
        self._n = self._space.n
        self._to_mem, self._to_c = _flat_orders(plist)
        self._x0: Optional[Array] = None
        self.line_search_log: List[LineSearchResult] = []
        self._clear_state()

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

    def _clear_state(self) -> None:
        self._func_evals = 0
        self._n_iter = 0
        self._d: Optional[Array] = None       # last direction (flat)
        self._t: Optional[float] = None       # last step length
        self._S: List[Array] = []             # s_i = t_i d_i, oldest first (torch: old_stps)
        self._Y: List[Array] = []             # y_i = g_{i+1} - g_i (torch: old_dirs)
        self._ro: List[float] = []            # 1 / (y_i . s_i)
        self._H = 1.0                         # initial inverse-Hessian scale (torch: H_diag)
        self._prev_g: Optional[Array] = None  # flat grad at the start of the last iteration
        self._prev_loss: Optional[float] = None

    # ------------------------------------------------------------------ views
    @property
    def n_iter(self) -> int:
        """L-BFGS iterations over all steps (torch's ``state['n_iter']``)."""
        return self._n_iter

    @property
    def func_evals(self) -> int:
        """Closure evaluations over all steps (torch's ``state['func_evals']``)."""
        return self._func_evals

    def _hyperparams(self) -> List[Dict[str, Any]]:
        hp = {k: self.param_groups[0][k] for k in _HP}
        if is_schedule(hp["lr"]):
            hp["lr"] = self._lr_at(hp["lr"], self._step_count)
        return [hp]

    def _state_entries(self, copy: bool) -> Dict[int, Dict[str, Any]]:
        """``{0: entry}`` (the flat vectors as one entry, as torch), or ``{}``
        before the first step."""
        if self._func_evals == 0 and self._n_iter == 0:
            return {}
        c = (lambda a: None if a is None else a.copy()) if copy else (lambda a: a)
        to_c = self._to_c
        if to_c is not None:      # the kernels' memory order -> each param's C order, as torch
            c = (lambda a: None if a is None else a[to_c])   # noqa: E731
        m = len(self._S)
        return {0: {
            "func_evals": self._func_evals, "n_iter": self._n_iter,
            "d": c(self._d), "t": self._t,
            "old_dirs": (np.array(self._Y) if to_c is None else np.array(self._Y)[:, to_c])
            if m else np.empty((0, self._n), self._dtype),
            "old_stps": (np.array(self._S) if to_c is None else np.array(self._S)[:, to_c])
            if m else np.empty((0, self._n), self._dtype),
            "ro": np.array(self._ro, dtype=np.float64), "H_diag": self._H,
            "prev_flat_grad": c(self._prev_g), "prev_loss": self._prev_loss,
        }}

    def _repr_extra(self) -> List[str]:
        return [f"{self._n} elements", str(self._dtype), f"n_iter={self._n_iter}",
                f"func_evals={self._func_evals}"]

    @staticmethod
    def _lr_at(fn, n):
        return schedule_value(fn, n, "lr", "ge0", _WHERE)

    # ------------------------------------------------------------------- step
    def _call(self, closure, d=None):
        """closure() -> (loss, flat grad copy, sum|g|, max|g|, g.d), validated."""
        out = closure()
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError("the LBFGS closure must return (loss, grads), grads one array per "
                            f"param; got {type(out).__name__}")
        loss = scalar(out[0], "the closure's loss")
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
        RuntimeError
            If the closure calls this optimizer back.
        """
        if not callable(closure):
            raise TypeError("LBFGS.step needs a closure: closure() -> (loss, grads)")
        with self._guard("step"):
            return self._step(closure)

    def _direction(self, k, g, history_size):
        """The k-th search direction -H g; updates the (s, y) history from the
        last iteration first (kept only if s.y > 1e-10)."""
        K = _K
        if k == 1:
            d = np.empty_like(g)
            K.vscale(-1.0, g, out=d)
            return d, [], [], [], 1.0
        S, Y, ro, H = self._S, self._Y, self._ro, self._H
        y = np.empty_like(g)
        K.vlincomb(y, g, -1.0, self._prev_g)          # y = g - prev_g
        s = np.empty_like(g)
        K.vscale(self._t, self._d, out=s)             # s = d * t
        ys = K.vdot(y, s)
        if ys > 1e-10:
            S, Y, ro = list(S), list(Y), list(ro)
            while len(S) >= history_size:             # shift history by one
                del S[0], Y[0], ro[0]
            S.append(s)
            Y.append(y)
            ro.append(1.0 / ys)
            H = ys / K.vdot(y, y)
        d = np.empty_like(g)
        K.lbfgs_two_loop(g, d, S, Y, ro, H)
        return d, S, Y, ro, H

    def _search(self, closure, kind, x0, d, t, loss, gtd, tok0, dmax, budget, tolerance_change):
        """One line search from x0 along d; leaves the params at the accepted
        point. Returns (t, loss, (g, sum|g|, max|g|), evaluations)."""
        space = self._space

        def phi(tt):
            space.push(x0, tt, d)
            f_new, g_new, sa, ma, gtd_new = self._eval(closure, d)
            return f_new, gtd_new, (g_new, sa, ma)

        if kind == "strong_wolfe":
            t, f_new, gtd_new, tok, n = _wolfe_core(phi, t, loss, gtd, tok0, dmax, _C1, _C2,
                                                    tolerance_change, budget)
            curv: Optional[bool] = bool(abs(gtd_new) <= -_C2 * gtd)
        else:
            t, f_new, gtd_new, tok, n = _armijo_core(phi, t, loss, gtd, tok0, _C1, _SHRINK,
                                                     max(1, budget))
            curv = None
        space.push(x0, t, d)
        self.line_search_log.append(LineSearchResult(
            step=float(t), f=f_new, g=None, gtd=gtd_new, f0=loss, gtd0=gtd, n_evals=n,
            armijo=_armijo_holds(t, f_new, loss, gtd, _C1), curvature=curv))
        return t, f_new, tok, n

    def _step(self, closure):
        group = self.param_groups[0]
        _check_hp(group)
        lr = group["lr"]
        if is_schedule(lr):
            lr = self._lr_at(lr, self._step_count)
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]

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

        if self._x0 is None:
            self._x0 = np.empty(self._n, self._dtype)
        x0 = self._x0
        moved = False
        n_iter = 0
        try:
            while n_iter < max_iter:
                n_iter += 1
                k = self._n_iter + 1
                d, S, Y, ro, H = self._direction(k, g, history_size)
                prev_g, prev_loss = g, loss
                # ---- step length
                t = min(1.0, 1.0 / sumabs) * lr if k == 1 else lr
                gtd = _K.vdot(g, d)
                if gtd > -tolerance_change:
                    self._commit(k, d, t, S, Y, ro, H, prev_g, prev_loss)
                    break
                dmax = _K.vstats(d)[1]
                ls_evals = 0
                self._space.pull(x0)
                moved = True
                if line_search_fn is not None:
                    t, loss, (g, sumabs, maxabs), ls_evals = self._search(
                        closure, line_search_fn, x0, d, t, loss, gtd, (g, sumabs, maxabs),
                        dmax, max_eval - current_evals, tolerance_change)
                    opt_cond = maxabs <= tolerance_grad
                else:
                    # no line search, simply move with fixed step
                    self._space.add(t, d)
                    opt_cond = False
                    if n_iter != max_iter:
                        loss, g, sumabs, maxabs, _ = self._eval(closure)
                        opt_cond = maxabs <= tolerance_grad
                        ls_evals = 1
                moved = False
                current_evals += ls_evals
                self._commit(k, d, t, S, Y, ro, H, prev_g, prev_loss)
                # ---- check conditions: iterations, evaluations, optimality,
                # lack of progress in x, lack of progress in f
                if (n_iter == max_iter or current_evals >= max_eval or opt_cond
                        or abs(t) * dmax <= tolerance_change
                        or abs(loss - prev_loss) < tolerance_change):
                    break
        except BaseException:
            if moved:
                self._space.put(x0)
            raise
        self._step_count += 1
        return orig_loss

    def _commit(self, k, d, t, S, Y, ro, H, prev_g, prev_loss):
        self._n_iter = k
        self._d, self._t = d, float(t)
        self._S, self._Y, self._ro, self._H = S, Y, ro, float(H)
        self._prev_g, self._prev_loss = prev_g, float(prev_loss)

    # ------------------------------------------------------------ state dict
    def _saved_groups(self) -> List[Dict[str, Any]]:
        g: Dict[str, Any] = {"params": list(range(len(self._params)))}
        if "param_names" in self.param_groups[0]:
            g["param_names"] = list(self.param_groups[0]["param_names"])
        g.update(self.hyperparams[0])
        lr = self.param_groups[0]["lr"]
        if is_schedule(lr):
            g["schedules"] = {"lr": _schedules.serialize(lr)}
        return [g]

    def _plan_load(self, sd: StateDict) -> Tuple[Dict[str, Any], Any, Any]:
        groups = sd.get("param_groups")
        if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
            raise ValueError("state_dict must have exactly one param group for LBFGS")
        g = groups[0]
        if list(g.get("params", [])) != list(range(len(self._params))):
            raise ValueError(f"group 0: state_dict lists params {g.get('params')}, the "
                             f"optimizer has {len(self._params)}")
        mine = self.param_groups[0].get("param_names")
        if "param_names" in g:
            saved = check_names(g["param_names"], len(self._params), 0)
            if mine is not None and list(mine) != saved:
                raise ValueError(f"group 0: state_dict param names {saved} differ from the "
                                 f"optimizer's {list(mine)}")
        trial = dict(self.param_groups[0])
        for k in _HP:
            if k not in g:
                raise ValueError(f"group 0: state_dict lacks hyperparameter {k!r}")
            if k == "lr" and is_schedule(trial["lr"]):
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
        lr = self.param_groups[0]["lr"]
        schedules = g.get("schedules") or {}
        restore = (schedule_restore(lr, schedules.get("lr"), "lr", _WHERE)
                   if is_schedule(lr) and isinstance(schedules, dict) else None)
        return trial, new, restore

    def _commit_load(self, plan: Tuple[Dict[str, Any], Any, Any]) -> None:
        trial, new, restore = plan
        if restore is not None:
            fn, st = restore
            fn.load_state_dict(st)
        for k in _HP:
            dict.__setitem__(self.param_groups[0], k, trial[k])
        self._clear_state()
        if new is not None:
            for k, v in new.items():
                setattr(self, k, v)

    def _check_entry(self, e, hp):
        where = "group 0, state"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: entry must be a dict")
        out: Dict[str, Any] = {"_func_evals": _saved_count(e, "func_evals", where),
                               "_n_iter": _saved_count(e, "n_iter", where)}
        started = out["_n_iter"] > 0
        out["_d"] = self._saved_vector(e, "d", where, not started)
        out["_prev_g"] = self._saved_vector(e, "prev_flat_grad", where, not started)
        out["_t"] = _saved_number(e, "t", where, not started)
        out["_prev_loss"] = _saved_number(e, "prev_loss", where, not started)
        out["_H"] = _saved_number(e, "H_diag", where, False) if "H_diag" in e else 1.0
        out["_Y"], out["_S"], out["_ro"] = self._saved_history(e, where, hp["history_size"])
        return out

    def _saved_vector(self, e, k, where, none_ok):
        v = e.get(k)
        if v is None and none_ok:
            return None
        if not isinstance(v, np.ndarray):
            raise TypeError(f"{where}: {k!r} must be an ndarray, got {type(v).__name__}")
        if v.shape != (self._n,) or v.dtype != self._dtype:
            raise ValueError(f"{where}: {k!r} has shape/dtype {v.shape}/{v.dtype}, "
                             f"expected ({self._n},)/{self._dtype}")
        if self._to_mem is not None:          # saved in C order: to the kernels' memory order
            return np.ascontiguousarray(v[self._to_mem])
        return np.array(v, order="C", copy=True)

    def _saved_history(self, e, where, history_size):
        n, dt = self._n, self._dtype
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
        if m > history_size:
            raise ValueError(f"{where}: history has {m} pairs, more than history_size="
                             f"{history_size}")
        if not np.all(np.isfinite(ro)):
            raise ValueError(f"{where}: 'ro' must be finite")
        if self._to_mem is not None:          # saved in C order: to the kernels' memory order
            hist = [np.asarray(h)[:, self._to_mem] for h in hist]
        return ([np.array(hist[0][i], order="C", copy=True) for i in range(m)],
                [np.array(hist[1][i], order="C", copy=True) for i in range(m)],
                [float(r) for r in ro])

    # -------------------------------------------------------- pickle, copy
    def _init_args(self) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        hp = {k: v for k, v in self.param_groups[0].items() if k not in ("params", "param_names")}
        names = self.param_groups[0].get("param_names")
        params = list(self._params) if names is None else list(zip(names, self._params))
        return (params,), hp

    def _reinit(self, *args: Any, **kwargs: Any) -> None:
        LBFGS.__init__(self, *args, **kwargs)

    def _pickle_extra(self) -> Dict[str, Any]:
        return {"log": list(self.line_search_log)}

    def _unpickle_extra(self, extra: Dict[str, Any]) -> None:
        self.line_search_log = extra.get("log", [])


def _flat_orders(params: List[Array]) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(to_mem, to_c): index arrays between the flat vector the kernels use (each
    param's elements in its memory order) and the state_dict's (each param's
    elements in C order, as torch's ``view(-1)``): ``mem = c[to_mem]`` and
    ``c = mem[to_c]``. (None, None) when every param is C-ordered."""
    if all(p.flags.c_contiguous for p in params):
        return None, None
    parts, off = [], 0
    for p in params:
        idx = np.arange(off, off + p.size, dtype=np.intp)
        parts.append(idx if p.flags.c_contiguous else idx.reshape(p.shape).ravel(order="F"))
        off += p.size
    to_mem = np.concatenate(parts)
    to_c = np.empty_like(to_mem)
    to_c[to_mem] = np.arange(to_mem.size, dtype=np.intp)
    return to_mem, to_c


def _unwrap(v):
    if isinstance(v, np.ndarray) and v.size == 1:
        return v.item()
    return v


def _saved_count(e, k, where):
    """A saved counter: an int in [0, 2**53] (a bad state_dict is a ValueError)."""
    return step_count(_unwrap(e.get(k)), f"{where}: {k!r}")


def _saved_number(e, k, where, none_ok):
    v = _unwrap(e.get(k))
    if v is None and none_ok:
        return None
    try:
        return number(v, repr(k), f"{where}: ")
    except TypeError as err:                  # a bad state_dict is a ValueError
        raise ValueError(str(err)) from None
