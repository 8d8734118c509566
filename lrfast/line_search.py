r"""Inexact line searches: the step length of quasi-Newton methods.

In quasi-Newton methods "the learning rate is related to the step length
determined by inexact line search" (Wikipedia, "Learning rate"). Given a
point ``x``, a descent direction ``d`` (``g(x).d < 0``) and a function
returning ``(f, g)``, a line search picks a step ``t > 0`` along ``x + t*d``:

- :func:`strong_wolfe`: bracketing and zoom with safeguarded cubic
  interpolation, a port of torch.optim.LBFGS's ``_strong_wolfe`` (itself from
  minFunc / torch7's ``lswolfe.lua``; Nocedal & Wright, *Numerical
  Optimization*, 2nd ed., Algorithms 3.5 and 3.6). It looks for a step with::

      f(x + t d) <= f(x) + c1 * t * g(x).d          (sufficient decrease, Armijo)
      |g(x + t d).d| <= c2 * |g(x).d|                (strong curvature condition)

- :func:`backtracking_armijo`: ``t, shrink*t, shrink^2*t, ...`` until the
  Armijo condition holds (Nocedal & Wright, Algorithm 3.1).

Both work on an ndarray ``x`` or on a list of ndarrays (then ``f_and_grad``
receives and returns lists); vector operations run in lrfast's kernels with
deterministic reductions. Both raise ``ValueError`` when ``d`` is not a
descent direction, never return a NaN step, and treat a trial point where
``f`` or ``g.d`` is not finite as one that fails the Armijo condition (so a
search that overshoots into an overflow comes back). The result records the
evaluations used and which conditions the accepted step satisfies.

>>> import numpy as np
>>> from lrfast import line_search
>>> fg = lambda x: (float(x @ x), 2 * x)          # f = |x|^2
>>> x = np.array([1.0, 2.0]); d = -x
>>> r = line_search.strong_wolfe(fg, x, d)
>>> r.step, r.n_evals, r.armijo, r.curvature     # n_evals counts f(x) too
(1.0, 2, True, True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, SupportsFloat

import numpy as np

from ._dispatch import kernels as _K
from ._typing import ArrayOrList, FAndGrad
from ._validate import integer, real, scalar

__all__ = ["LineSearchResult", "strong_wolfe", "backtracking_armijo"]

_FMAX = 1.7976931348623157e308


@dataclass(frozen=True)
class LineSearchResult:
    """The accepted step of a line search along ``x + t*d``.

    Attributes
    ----------
    step : float
        The step length ``t`` (finite; 0.0 when no acceptable step was found,
        then ``f``, ``g`` are those at ``x``).
    f : float
        ``f(x + step*d)``.
    g : ndarray or list of ndarray or None
        The gradient at ``x + step*d`` (same structure as ``x``; ``None`` in
        the per-iteration records of :class:`lrfast.LBFGS`).
    gtd : float
        ``g(x + step*d) . d``.
    f0, gtd0 : float
        ``f(x)`` and ``g(x) . d``.
    n_evals : int
        Evaluations of ``f_and_grad`` made by the search.
    armijo : bool
        ``step > 0`` and ``f <= f0 + c1*step*gtd0`` (sufficient decrease).
    curvature : bool or None
        ``|gtd| <= c2*|gtd0|`` (strong Wolfe curvature); ``None`` for
        backtracking, which does not test it.
    x : ndarray or list of ndarray or None
        The accepted point ``x + step*d`` (``x`` itself when ``step == 0``).
    """
    step: float
    f: float
    g: Any
    gtd: float
    f0: float
    gtd0: float
    n_evals: int
    armijo: bool
    curvature: Optional[bool]
    x: Any = None

    @property
    def success(self) -> bool:
        """True if the step satisfies every condition its search tests."""
        return bool(self.armijo and self.curvature is not False)


# ----------------------------------------------------------------------------
# Scalar cores, shared with lrfast.LBFGS. ``phi(t)`` evaluates the function at
# x + t*d and returns (f, g.d, token); tokens are opaque to the cores.
# ----------------------------------------------------------------------------
def _div(a, b):
    """a / b with IEEE semantics (Python raises on division by zero; torch does not)."""
    if b != 0:
        return a / b
    if a != a or a == 0:
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _finite(*xs):
    return all(math.isfinite(x) for x in xs)


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimizer of the cubic through (x1, f1, g1), (x2, f2, g2), clamped to
    ``bounds`` (torch.optim.lbfgs._cubic_interpolate; Nocedal & Wright eq. 3.59).
    Falls back to the middle of the bounds where torch would return NaN."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    if _finite(x1, f1, g1, x2, f2, g2):
        d1 = g1 + g2 - 3 * _div(f1 - f2, x1 - x2)
        d2_square = d1 ** 2 - g1 * g2
        if d2_square >= 0:
            d2 = math.sqrt(d2_square)
            if x1 <= x2:
                min_pos = x2 - (x2 - x1) * _div(g2 + d2 - d1, g2 - g1 + 2 * d2)
            else:
                min_pos = x1 - (x1 - x2) * _div(g1 + d2 - d1, g1 - g2 + 2 * d2)
            if min_pos == min_pos:
                return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _safeguard(t, bracket, insuf_progress):
    """Keep a zoom trial t at least 10% of the bracket away from its ends
    (torch.optim.lbfgs._strong_wolfe); returns (t, insuf_progress)."""
    eps = 0.1 * (max(bracket) - min(bracket))
    if min(max(bracket) - t, t - min(bracket)) < eps:
        if insuf_progress or t >= max(bracket) or t <= min(bracket):
            if abs(t - max(bracket)) < abs(t - min(bracket)):
                t = max(bracket) - eps
            else:
                t = min(bracket) + eps
            return t, False
        return t, True
    return t, False


def _wolfe_core(phi, t, f, gtd, g, d_norm, c1, c2, tolerance_change, max_ls):
    """torch.optim.lbfgs._strong_wolfe on scalars: returns
    (t, f_new, gtd_new, token_new, n_evals). ``g`` is the token of x itself.

    A trial point whose f or g.d is not finite is stored with f = +inf, so it
    fails the Armijo test and is never the low end of the bracket."""
    def ev(t):
        f_new, gtd_new, tok = phi(t)
        if not _finite(f_new, gtd_new):
            return math.inf, math.nan, tok, True
        return f_new, gtd_new, tok, False

    f_new, gtd_new, g_new, bad = ev(t)
    ls_func_evals = 1
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    # (always set before use: by a break below, or when ls_iter reaches max_ls)
    bracket: List[float] = []
    bracket_f: List[float] = []
    bracket_g: List[Any] = []
    bracket_gtd: List[float] = []
    while ls_iter < max_ls:
        if bad or f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g, bracket_gtd = [t], [f_new], [g_new], [gtd_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        # interpolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = min(t * 10, _FMAX)
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                               bounds=(min_step, max_step))
        # next step
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, gtd_new, g_new, bad = ev(t)
        ls_func_evals += 1
        ls_iter += 1

    # reached max number of iterations?
    if ls_iter == max_ls:
        bracket, bracket_f = [0, t], [f, f_new]
        bracket_g, bracket_gtd = [g, g_new], [gtd, gtd_new]

    # zoom phase
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        t, insuf_progress = _safeguard(t, bracket, insuf_progress)

        f_new, gtd_new, g_new, bad = ev(t)
        ls_func_evals += 1
        ls_iter += 1

        if bad or f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo condition not satisfied or not lower than lowest point
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new, gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True        # Wolfe conditions satisfied
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # old high becomes new low
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            # new point becomes new low
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new, gtd_new

    return (bracket[low_pos], bracket_f[low_pos], bracket_gtd[low_pos], bracket_g[low_pos],
            ls_func_evals)


def _armijo_core(phi, t, f, gtd, g, c1, shrink, max_evals):
    """Backtracking: returns (t, f_new, gtd_new, token, n_evals); t = 0.0 (and
    the values at x) when no step within max_evals satisfies Armijo."""
    n = 0
    while True:
        f_new, gtd_new, tok = phi(t)
        n += 1
        if _finite(f_new, gtd_new) and f_new <= f + c1 * t * gtd:
            return t, f_new, gtd_new, tok, n
        if n >= max_evals:
            return 0.0, f, gtd, g, n
        t = t * shrink


def _armijo_holds(t, f_new, f0, gtd0, c1):
    return bool(t > 0 and f_new <= f0 + c1 * t * gtd0)


# ----------------------------------------------------------------------------
# Public functions for numpy users
# ----------------------------------------------------------------------------
def _as_list(x, name):
    if isinstance(x, np.ndarray):
        return [x], True
    if isinstance(x, (list, tuple)) and x and all(isinstance(a, np.ndarray) for a in x):
        return list(x), False
    raise TypeError(f"{name} must be an ndarray or a non-empty list of ndarrays, got "
                    f"{type(x).__name__}")


class _Problem:
    """x, d and the user's f_and_grad, with the trial points and grad copies."""

    def __init__(self, f_and_grad, x, d):
        if not callable(f_and_grad):
            raise TypeError("f_and_grad must be a callable x -> (f, g)")
        self.fg = f_and_grad
        self.xs, self.single = _as_list(x, "x")
        self.ds, single_d = _as_list(d, "d")
        if single_d != self.single or len(self.ds) != len(self.xs):
            raise ValueError("d must have the structure of x (an ndarray, or a list of as "
                             "many arrays)")
        dt = self.xs[0].dtype
        for i, (a, b) in enumerate(zip(self.xs, self.ds)):
            w = "" if self.single else f"[{i}]"
            if a.dtype not in (np.float32, np.float64) or a.dtype != dt:
                raise TypeError(f"x{w}: dtype {a.dtype} (all float32 or all float64)")
            if b.dtype != a.dtype or b.shape != a.shape:
                raise ValueError(f"d{w}: shape/dtype {b.shape}/{b.dtype} != x{w}'s "
                                 f"{a.shape}/{a.dtype}")
            for nm, v in (("x", a), ("d", b)):
                if not (v.flags.c_contiguous or v.flags.f_contiguous):
                    raise ValueError(f"{nm}{w} must be contiguous")
            if a.flags.c_contiguous != b.flags.c_contiguous and a.ndim > 1:
                raise ValueError(f"d{w}: memory layout differs from x{w}'s")
        _, dmax, _ = _K.vstats(self.ds)
        if not math.isfinite(dmax):
            raise ValueError("d holds NaN or inf")
        self.d_norm = dmax

    def pack(self, arrays):
        return arrays[0] if self.single else arrays

    def _copy_grad(self, g, what):
        # Copy a gradient into arrays laid out like x (so flat orders match).
        gs = [g] if self.single else (list(g) if isinstance(g, (list, tuple)) else None)
        if gs is None or len(gs) != len(self.xs):
            raise ValueError(f"{what} must have the structure of x (an ndarray, or a list "
                             f"of {len(self.xs)} arrays)")
        copies = []
        for i, (a, gi) in enumerate(zip(self.xs, gs)):
            gi = np.asarray(gi)
            if gi.shape != a.shape:
                raise ValueError(f"{what}{'' if self.single else f'[{i}]'} has shape "
                                 f"{gi.shape}, x has {a.shape}")
            c = np.empty_like(a)
            c[...] = gi
            copies.append(c)
        return copies, _K.vdot(copies, self.ds)

    def evaluate(self, xs):
        out = self.fg(self.pack(xs))
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"f_and_grad must return a pair (f, g), got {type(out).__name__}")
        g, gtd = self._copy_grad(out[1], "the gradient from f_and_grad")
        return scalar(out[0], "f_and_grad's f"), gtd, g

    def start(self, f0, g0):
        if (f0 is None) != (g0 is None):
            raise ValueError("give both f0 and g0 (the values at x), or neither")
        if f0 is None:
            f0, gtd0, g = self.evaluate(self.xs)
            n = 1
        else:
            f0 = scalar(f0, "f0")
            g, gtd0 = self._copy_grad(g0, "g0")
            n = 0
        if not math.isfinite(f0):
            raise ValueError(f"f(x) is not finite ({f0}): a line search needs a finite start")
        if not math.isfinite(gtd0):
            raise ValueError(f"g(x).d is not finite ({gtd0})")
        if not gtd0 < 0:
            raise ValueError(f"d is not a descent direction: g(x).d = {gtd0!r} >= 0 (a line "
                             "search needs g.d < 0; try d = -g)")
        return f0, gtd0, g, n

    def phi(self, t):
        xt = [np.empty_like(a) for a in self.xs]
        _K.vlincomb(xt, self.xs, t, self.ds)
        f, gtd, g = self.evaluate(xt)
        return f, gtd, (xt, g)


def strong_wolfe(f_and_grad: FAndGrad, x: ArrayOrList, d: ArrayOrList,
                 f0: Optional[SupportsFloat] = None, g0: Optional[ArrayOrList] = None,
                 t0: float = 1.0, *, c1: float = 1e-4, c2: float = 0.9,
                 tolerance_change: float = 1e-9, max_ls: int = 25) -> LineSearchResult:
    r"""Strong Wolfe line search (torch.optim.LBFGS's ``_strong_wolfe``).

    Finds ``t`` with ``f(x+t d) <= f(x) + c1 t g(x).d`` and
    ``|g(x+t d).d| <= c2 |g(x).d|`` (Nocedal & Wright, *Numerical
    Optimization*, 2nd ed., eqs. 3.7 and Algorithms 3.5/3.6): a bracketing
    phase that grows ``t`` by cubic interpolation of (f, g.d) at the last two
    points (within ``[t + 0.01 (t - t_prev), 10 t]``), then a zoom phase that
    shrinks the bracket by safeguarded cubic interpolation.

    Parameters
    ----------
    f_and_grad : callable
        ``f_and_grad(x) -> (f, g)``: the function value (a real number) and
        its gradient (same structure and shapes as ``x``). It receives new
        arrays at each call; ``g`` is copied.
    x, d : ndarray or list of ndarray
        The start point (not modified) and a descent direction (``g(x).d < 0``).
    f0, g0 : optional
        ``f(x)`` and ``g(x)`` if already known (saves one evaluation).
    t0 : float
        The first trial step (1.0 for quasi-Newton directions).
    c1, c2 : float
        ``0 < c1 < c2 < 1``; defaults 1e-4 and 0.9 (Nocedal & Wright's for
        quasi-Newton methods).
    tolerance_change : float
        Stop zooming when the bracket is shorter than this (times max|d|).
    max_ls : int
        Maximum line-search iterations after the first evaluation (torch's
        ``max_ls``): at most ``max_ls + 1`` evaluations.

    Returns
    -------
    LineSearchResult
        ``step`` (finite, never NaN), ``f``, ``g`` and ``x`` at the accepted
        point, ``n_evals``, and ``armijo``/``curvature``: which conditions it
        satisfies (both, unless the evaluation budget or the bracket
        tolerance ran out; torch then returns its best point too).

    Raises
    ------
    ValueError
        If ``d`` is not a descent direction (``g(x).d >= 0``), ``f(x)`` or
        ``g(x).d`` is not finite, or an argument is out of range.
    """
    t0 = real(t0, "t0", low=0.0, low_open=True)
    c1 = real(c1, "c1", low=0.0, high=1.0, low_open=True, high_open=True)
    c2 = real(c2, "c2", low=0.0, high=1.0, low_open=True, high_open=True)
    if not c1 < c2:
        raise ValueError(f"need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")
    tolerance_change = real(tolerance_change, "tolerance_change", low=0.0)
    max_ls = integer(max_ls, "max_ls", low=0)
    prob = _Problem(f_and_grad, x, d)
    f, gtd, g, n0 = prob.start(f0, g0)
    t, f_new, gtd_new, tok, n = _wolfe_core(prob.phi, t0, f, gtd, (None, g), prob.d_norm,
                                            c1, c2, tolerance_change, max_ls)
    xt, gt = tok
    return LineSearchResult(
        step=float(t), f=float(f_new), g=prob.pack(gt), gtd=float(gtd_new), f0=f, gtd0=gtd,
        n_evals=n + n0, armijo=_armijo_holds(t, f_new, f, gtd, c1),
        curvature=bool(abs(gtd_new) <= -c2 * gtd), x=x if xt is None else prob.pack(xt))


def backtracking_armijo(f_and_grad: FAndGrad, x: ArrayOrList, d: ArrayOrList,
                        f0: Optional[SupportsFloat] = None, g0: Optional[ArrayOrList] = None,
                        t0: float = 1.0, *, c1: float = 1e-4, shrink: float = 0.5,
                        max_evals: int = 30) -> LineSearchResult:
    r"""Backtracking line search: the first of ``t0, shrink*t0, shrink^2*t0, ...``
    with ``f(x + t d) <= f(x) + c1 t g(x).d`` (Armijo; Nocedal & Wright,
    *Numerical Optimization*, 2nd ed., Algorithm 3.1).

    Parameters are those of :func:`strong_wolfe`, plus ``shrink`` (the
    contraction factor, in (0, 1)) and ``max_evals`` (evaluations allowed
    along the line, >= 1). A trial point with a non-finite ``f`` or ``g.d``
    counts as failing the test.

    Returns
    -------
    LineSearchResult
        ``armijo`` is True when a step was accepted; otherwise ``step`` is
        0.0 and ``f``, ``g``, ``x`` are those at ``x``. ``curvature`` is None
        (not tested).

    Raises
    ------
    ValueError
        If ``d`` is not a descent direction (``g(x).d >= 0``), ``f(x)`` is
        not finite, or an argument is out of range.
    """
    t0 = real(t0, "t0", low=0.0, low_open=True)
    c1 = real(c1, "c1", low=0.0, high=1.0, low_open=True, high_open=True)
    shrink = real(shrink, "shrink", low=0.0, high=1.0, low_open=True, high_open=True)
    max_evals = integer(max_evals, "max_evals", low=1)
    prob = _Problem(f_and_grad, x, d)
    f, gtd, g, n0 = prob.start(f0, g0)
    t, f_new, gtd_new, tok, n = _armijo_core(prob.phi, t0, f, gtd, (None, g), c1, shrink,
                                             max_evals)
    xt, gt = tok
    return LineSearchResult(
        step=float(t), f=float(f_new), g=prob.pack(gt), gtd=float(gtd_new), f0=f, gtd0=gtd,
        n_evals=n + n0, armijo=_armijo_holds(t, f_new, f, gtd, c1), curvature=None,
        x=x if xt is None else prob.pack(xt))
