"""Optimizers with their own step: Adafactor and Muon.

They are rows of the table (hyperparameters, defaults, ranges, state names,
references) and share everything of :class:`~lrfast.optim.Optimizer` but the
step: param groups, schedules, ``None`` grads, ``max_grad_norm`` and
``skip_nonfinite``, state_dict format ``lrfast.optim/1`` with exact resume,
pickling. Their state is not the param's shape (Adafactor's row and column
factors) or their update is a matrix iteration (Muon's Newton-Schulz), so the
fused engine's same-shape loops do not fit; the engine still validates the
grads (type, dtype, shape, layout, overlaps) and gives their global norm in
one read-only pass before anything is written.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from .._dispatch import kernels as _K
from .._typing import Grads
from .._validate import state_array, step_count
from ._base import Optimizer, make_init
from ._rules import RULES
from ._table import TABLE

__all__ = ["OwnStepOptimizer", "Adafactor", "Muon"]


class OwnStepOptimizer(Optimizer):
    """Base of the optimizers whose step is not a fused-engine kernel."""

    def __init_subclass__(cls, **kw):
        # not Optimizer's: the spec's kind names the own step, not an engine kernel
        spec = cls.__dict__.get("spec")
        if spec is not None:
            cls._rule = RULES[spec.name]
            cls._kind = -1

    def _build(self):
        n = len(self._params)
        # the engine holds the params (overlap and geometry records) and
        # validates grads; it never runs an update here
        self._engine = _K.Engine(_K.KINDS["sgd"], self._params, [None] * n, self._group_of)
        self._n = n
        self._uniform = True
        self._prepare()

    def _prepare(self) -> None:
        pass

    def _pack(self, fixed):          # the plan's fields stay named: Python reads them
        return fixed

    def _check_slots(self, static, gi):
        pass                          # no option allocates or drops a state array

    def step(self, grads: Grads, _aux: Optional[Grads] = None, *,
             _norm_hook: Optional[Callable[[float, bool], Tuple[float, bool]]] = None,
             _ema: float = -1.0, _sums_hook: Optional[Callable[..., None]] = None) -> bool:
        """Apply one update to every param that has a grad.

        Parameters
        ----------
        grads : list of ndarray or None
            One per param, in the order the params were given (groups
            flattened in order); same shape, dtype and layout as its param.
            ``None`` skips that param for this step. Grads are never modified.

        Returns
        -------
        bool
            False if the step was skipped (``skip_nonfinite`` and a grad held
            NaN/inf); nothing was written then.
        """
        if _aux is not None or _norm_hook is not None or _ema >= 0.0 or _sums_hook is not None:
            raise TypeError(f"{type(self).__name__}.step takes the grads only")
        self._enter()
        try:
            n = self._step_count
            plans = []
            for plan in self._plans:
                hp = self._values(plan, n)
                if plan.others:
                    self._rule.check(hp, plan.where)
                    fixed, stepfn = self._rule.plan(hp)
                else:
                    fixed, stepfn = plan.fixed, plan.step
                plans.append((hp, fixed, stepfn))
            norm, finite = self._engine.grad_norm(grads)        # validates every grad
            reduce = self._max_norm > 0.0 or self._skip
            self.last_grad_norm = norm if reduce else float("nan")
            if self._skip and not finite:
                self.skipped_steps += 1
                return False
            coef = 1.0
            if self._max_norm > 0.0:
                c = self._max_norm / (norm + 1e-6)          # as the engine (torch's clip)
                if not c >= 1.0:
                    coef = c
            active = self._engine.active()
            keys = [self._key_of(i) for i in range(self._n)]
            new = self._apply(tuple(grads), plans, keys, active, coef)
            self._set_keys(new)
            self._step_count = n + 1
            return True
        finally:
            self._exit()

    def _apply(self, grads, plans, keys, active, coef) -> List[Any]:
        raise NotImplementedError

    def _check_entry(self, i, e):
        """Validate one saved entry against param i's state arrays."""
        where = f"group {self._group_of[i]}, param {i}"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: state entry must be a dict")
        arrays = []
        for name, a in zip(self.spec.states, self._states[i]):
            v = e.get(name)
            if a is None:
                if v is not None:
                    raise ValueError(f"{where}: state has {name!r}, which a param of shape "
                                     f"{self._params[i].shape} does not use")
                arrays.append(None)
                continue
            arrays.append((state_array(v, name, a.shape, a.dtype, where), None))
        # (arrays as (array, absmax), key, per-tensor scalars: none here, master: none)
        if self.spec.has_step:
            return arrays, step_count(e.get("step"), f"{where}: state 'step'"), (), None
        return arrays, 1, (), None


class Adafactor(OwnStepOptimizer):
    r"""Adafactor (torch.optim.Adafactor): factored second moments, relative
    step sizes and update clipping (Shazeer & Stern 2018, with torch's use of
    ``lr`` and ``eps1``). Per param, at step t::

        g = -g if maximize;  w = t**beta2_decay;  rho = min(lr, 1/sqrt(t))
        alpha = max(eps2, RMS(p)) * rho;  p *= 1 - lr*weight_decay
        ndim >= 2 (last two axes n x m):
            row_var = lerp(row_var, mean(g*g, axis=-1), w)      # shape (..., n, 1)
            col_var = lerp(col_var, mean(g*g, axis=-2), w)      # shape (..., 1, m)
            v = row_var @ col_var / max(mean(row_var, axis=-2), eps1)
        else:
            variance = lerp(variance, g*g, w);  v = variance
        u = g / sqrt(max(v, eps1**2));  p -= alpha / max(1, RMS(u)/d) * u

    ``eps1=None`` is the machine epsilon of each param's dtype (torch takes the
    first param's dtype for its whole group). Every mean and RMS is a sum in
    double over fixed blocks in a fixed order, so results are bitwise the same
    for any thread count. A step reads the grads four times (the validation
    and norm pass, then three passes) and the param three times; the state is
    n + m values per matrix. Empty params are left alone (torch divides by
    zero there).

    Examples
    --------
    >>> import numpy as np, lrfast
    >>> w = np.ones((4, 3))
    >>> opt = lrfast.Adafactor([w], lr=0.01)
    >>> opt.step([np.ones((4, 3))]); opt.state[0]["row_var"].shape
    True
    (4, 1)
    """
    spec = TABLE["Adafactor"]
    __init__ = make_init(spec)

    def _prepare(self):
        geo = []
        for p in self._params:
            if p.ndim < 2:
                geo.append(None)
                continue
            it = p.itemsize
            st = [s // it for s in p.strides]
            bshape = p.shape[:-2]
            if bshape:
                idx = np.indices(bshape).reshape(len(bshape), -1)
                boff = (idx * np.array(st[:-2], np.intp)[:, None]).sum(axis=0).astype(np.intp)
            else:
                boff = np.zeros(1, np.intp)
            geo.append((np.ascontiguousarray(boff), p.shape[-2], p.shape[-1], st[-2], st[-1]))
        self._geo = geo

    def _apply(self, grads, plans, keys, active, coef):
        new = list(keys)
        step = _K._adafactor_step
        for i, p in enumerate(self._params):
            if not active[i]:
                continue
            hp, fixed, stepfn = plans[self._group_of[i]]
            (w, rho, dm), new[i] = stepfn(keys[i], hp["lr"])
            eps1 = fixed["eps1"]
            if eps1 is None:
                eps1 = float(np.finfo(p.dtype).eps)
            s = self._states[i]
            geo = self._geo[i]
            if geo is None:
                step(p, grads[i], s[2], None, None, 0, 0, 0, 0, fixed["gs"] * coef, w, eps1,
                     fixed["eps2"], rho, dm, fixed["d"], bool(fixed["decay"]))
            else:
                boff, n, m, si, sj = geo
                step(p, grads[i], s[0], s[1], boff, n, m, si, sj, fixed["gs"] * coef, w, eps1,
                     fixed["eps2"], rho, dm, fixed["d"], bool(fixed["decay"]))
        return new


class Muon(OwnStepOptimizer):
    r"""Muon (torch.optim.Muon): momentum orthogonalized by a Newton-Schulz
    iteration, for 2-D params only (use AdamW or another optimizer for
    biases, norms and embeddings). Per param::

        buf = lerp(buf, g, 1 - momentum)
        u = lerp(g, buf, momentum) if nesterov else buf
        X = u / max(||u||_F, eps)   (on u.T when u is taller than wide)
        ns_steps times:  A = X X^T;  X = a X + (b A + c A A) X
        p *= 1 - lr*weight_decay;  p -= adjusted_lr * X
        adjusted_lr = lr * sqrt(max(1, rows/cols))        (None, "original")
                    = lr * 0.2 * sqrt(max(rows, cols))    ("match_rms_adamw")

    The elementwise part runs in numpy in the param's dtype; the iteration
    is numpy matmuls (``@``) in the param's dtype on numpy's BLAS, with the
    BLAS library's own thread pool (OpenBLAS or MKL: OPENBLAS_NUM_THREADS,
    MKL_NUM_THREADS, or threadpoolctl's ``threadpool_limits``), not lrfast's
    thread setting. torch casts the iteration to bfloat16; this one does not
    (float32 and float64 results match torch's algorithm without that cast).
    All updates are computed before any write: an update that is not finite
    raises ValueError and changes nothing (``skip_nonfinite`` skips steps
    whose grads are not finite). A 1-D or 3-D param is refused when the
    optimizer is built.
    """
    spec = TABLE["Muon"]
    __init__ = make_init(spec)

    def _add_group(self, group, build=True):
        if isinstance(group, dict) and "params" in group:
            plist = group["params"]
            if isinstance(plist, np.ndarray):
                plist = [plist]
            try:
                plist = list(plist)
            except TypeError:
                plist = []
            for j, p in enumerate(plist):
                if isinstance(p, np.ndarray) and p.ndim != 2:
                    raise ValueError(
                        f"group {len(self._param_groups)}, param {len(self._params) + j}: "
                        f"Muon only supports 2-D params, got shape {p.shape} (optimize "
                        "biases, norms and other params with another optimizer, e.g. AdamW)")
        super()._add_group(group, build)

    def _state_entry(self, i, copy=True):
        if self._key_of(i) == 0:
            return None
        a = self._states[i][0]
        return {"momentum_buffer": a.copy() if copy else a}

    def _apply(self, grads, plans, keys, active, coef):
        new = list(keys)
        todo = []
        for i, p in enumerate(self._params):       # everything computed first
            if not active[i]:
                continue
            hp, fx, stepfn = plans[self._group_of[i]]
            (lr, dm), new[i] = stepfn(keys[i], hp["lr"])
            T = p.dtype.type
            g = grads[i] if coef == 1.0 else grads[i] * T(coef)
            buf = self._states[i][0]
            with np.errstate(all="ignore"):         # a non-finite update raises below
                nb = _lerp(buf, g, fx["w"])
                u = _lerp(g, nb, fx["momentum"]) if fx["nesterov"] else nb
                o = _newton_schulz(u, fx["coefficients"], fx["ns_steps"], fx["eps"])
            if not np.isfinite(o).all():
                raise ValueError(f"group {self._group_of[i]}, param {i}: Muon's update is not "
                                 "finite (a grad or the momentum holds NaN/inf, or the "
                                 "iteration overflowed); nothing was changed")
            todo.append((i, nb, o, T(dm) if hp["weight_decay"] != 0 else None,
                         T(-lr * _lr_ratio(fx["adjust"], p.shape))))
        for i, nb, o, dm, c in todo:
            p = self._params[i]
            self._states[i][0][...] = nb
            if dm is not None:
                np.multiply(p, dm, out=p)
            o *= c
            p += o
        return new


def _newton_schulz(u, coefficients, steps, eps):
    """torch's _zeropower_via_newtonschulz in u's dtype (no bfloat16 cast),
    on C-ordered work arrays."""
    T = u.dtype.type
    a, b, c = (T(x) for x in coefficients)
    tall = u.shape[0] > u.shape[1]
    X = u.T if tall else u
    nrm = T(np.linalg.norm(X))
    X = np.ascontiguousarray(X / (nrm if nrm > T(eps) else T(eps)))
    for _ in range(steps):
        A = X @ X.T
        B = A @ A
        B *= c
        A *= b
        B += A                    # b*A + c*A@A
        Y = B @ X
        X *= a
        Y += X                    # a*X + B@X
        X = Y
    return X.T if tall else X


def _lr_ratio(adjust, shape):
    """torch's _adjust_lr factor: sqrt(max(1, rows/cols)), or 0.2*sqrt(max(rows, cols))
    for "match_rms_adamw"."""
    rows, cols = shape
    if adjust is None or adjust == "original":
        if cols == 0:             # an empty param: no update to scale (torch divides by 0)
            return 1.0
        return float(np.sqrt(max(1, rows / cols)))
    return 0.2 * float(np.sqrt(max(rows, cols)))


def _lerp(x, e, w):
    """torch's lerp, in x's dtype, into a new array."""
    T = x.dtype.type
    tw = T(w)
    d = e - x
    if abs(float(tw)) < 0.5:
        d *= tw
        d += x
        return d
    d *= T(1) - tw
    return np.subtract(e, d, out=d)


