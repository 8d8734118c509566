r"""Diagonal Newton: per-parameter rates as a diagonal inverse Hessian.

Per-parameter rates form "a diagonal matrix that can be interpreted as an
approximation to the inverse of the Hessian matrix in Newton's method"
(Wikipedia, "Learning rate"). Newton's step is ``x -= H^{-1} g``; keeping only the
diagonal of ``H`` gives every parameter its own rate ``lr / (|h_ii| + damping)``
(Becker & LeCun, "Improving the convergence of back-propagation learning with
second order methods", 1988; LeCun, Bottou, Orr & Müller, "Efficient
BackProp", 1998, section 9.1). :class:`DiagonalNewton` applies that step with
the fused kernel every lrfast optimizer uses; :func:`hutchinson_diag` and
:func:`secant_diag` estimate the diagonal when it is not known in closed form.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, List, Optional, Sequence, Union, overload

import numpy as np

from ._typing import Array, ArrayOrList, Grads
from .optim import TABLE, Optimizer, make_init

__all__ = ["DiagonalNewton", "hutchinson_diag", "secant_diag"]


class DiagonalNewton(Optimizer):
    r"""Diagonal Newton step: per-parameter rates from the Hessian diagonal.

    ::

        g = -g if maximize;  g += wd*p
        p -= lr * g / (|h| + damping)          # h: the Hessian diagonal, per element

    ``lr / (|h| + damping)`` is a diagonal approximation of the inverse Hessian
    of Newton's method (per-parameter rates as in Becker & LeCun 1988; LeCun
    et al., "Efficient BackProp", 1998, eq. for eta_ki = epsilon /
    (mu + h_kk)). The absolute value keeps the step a descent step where the
    curvature estimate is negative; ``damping`` (> 0) bounds the rate where it
    is near zero. One fused kernel call per step for all tensors, like every
    lrfast optimizer; bit-identical to its numpy twin.

    Parameters
    ----------
    params : list of ndarray or of dicts (parameter groups)
    lr : float or schedule
        Scale of the Newton step (1.0: the full diagonal Newton step).
    damping : float
        Added to ``|h|`` (default 1e-4; must be > 0).
    weight_decay : float or schedule
        L2 penalty added to the gradient (``h`` is used as given: add ``wd``
        to it yourself if it should include the penalty's curvature).
    maximize : bool
    max_grad_norm, skip_nonfinite
        As for the other optimizers; ``skip_nonfinite`` also skips a step
        whose ``hess_diag`` holds NaN/inf.

    Examples
    --------
    >>> import numpy as np, lrfast
    >>> a = np.array([1.0, 10.0, 100.0])            # f = sum(a*x^2)/2: H = diag(a)
    >>> x = np.ones(3)
    >>> opt = lrfast.DiagonalNewton([x], damping=1e-12)
    >>> opt.step([a * x], [a]); bool(np.abs(x).max() < 1e-9)   # one step to the minimum
    True
    True
    """
    spec = TABLE["DiagonalNewton"]
    __init__ = make_init(spec)
    _aux_name = "hess_diag"

    def step(self, grads: Grads, hess_diag: Grads) -> bool:  # type: ignore[override]
        """Apply ``p -= lr * g / (|h| + damping)`` to every param that has a grad.

        Parameters
        ----------
        grads : list of ndarray or None
            As for every optimizer (one per param, in param order).
        hess_diag : list of ndarray or None
            The Hessian diagonal per param: same shapes, dtypes and layouts as
            the grads; ``None`` exactly where the grad is None. Never modified.

        Returns
        -------
        bool
            False if the step was skipped (``skip_nonfinite``).
        """
        if hess_diag is None:
            raise ValueError("DiagonalNewton.step needs hess_diag: one Hessian-diagonal "
                             "array per param (see hutchinson_diag, secant_diag)")
        return self._step(grads, hess_diag)


# ----------------------------------------------------------------------------
# Estimating the Hessian diagonal
# ----------------------------------------------------------------------------
def _structure(params, name):
    if isinstance(params, np.ndarray):
        return [params], True
    try:
        ps = list(params)
    except TypeError:
        raise TypeError(f"{name} must be an ndarray or a list of ndarrays") from None
    for i, p in enumerate(ps):
        if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name}[{i}] must be a float32 or float64 ndarray")
    return ps, False


def _laid_out_like(p, v):
    """``v`` as a new array of p's dtype and memory layout (C or F): an estimate
    DiagonalNewton takes as the hess_diag of p."""
    out = np.empty_like(p)
    out[...] = v
    return out


def _like(values, ps, single, what):
    vs = [values] if single else (list(values) if isinstance(values, (list, tuple)) else None)
    if vs is None or len(vs) != len(ps):
        raise ValueError(f"{what} must have the structure of params ({len(ps)} arrays)")
    out = []
    for i, (v, p) in enumerate(zip(vs, ps)):
        v = np.asarray(v)
        if v.shape != p.shape:
            raise ValueError(f"{what}[{i}] has shape {v.shape}, param {i} has {p.shape}")
        out.append(v)
    return out


@overload
def hutchinson_diag(hvp: Callable[[Any], Any], params: Array, n_samples: int = ...,
                    rng: Union[None, int, np.random.Generator] = ...) -> Array: ...


@overload
def hutchinson_diag(hvp: Callable[[Any], Any], params: Sequence[Array], n_samples: int = ...,
                    rng: Union[None, int, np.random.Generator] = ...) -> List[Array]: ...


def hutchinson_diag(hvp: Callable[[Any], Any], params: ArrayOrList,
                    n_samples: int = 1, rng: Union[None, int, np.random.Generator] = None
                    ) -> Union[Array, List[Array]]:
    r"""Estimate the Hessian diagonal from Hessian-vector products (Hutchinson).

    ::

        diag(H) ~= (1/S) * sum_s  z_s * (H z_s),    z_s with independent +-1 entries

    (Hutchinson, 1990, for the trace; Bekas, Kokiopoulou & Saad, "An estimator
    for the diagonal of a matrix", 2007; used by AdaHessian). Unbiased, exact
    for a diagonal ``H`` with one sample; the error of entry i shrinks like
    ``sqrt(sum_{j != i} H_ij^2 / S)``.

    Parameters
    ----------
    hvp : callable
        ``hvp(v) -> H v`` for ``v`` with the structure of ``params`` (a list
        of arrays, or one array if ``params`` is one array).
    params : ndarray or list of ndarray
        Gives the shapes and dtypes (not modified).
    n_samples : int
        Number of probe vectors S (>= 1).
    rng : None, int or numpy.random.Generator

    Returns
    -------
    list of ndarray (or one ndarray)
        The estimate, shaped and typed like ``params`` (accumulated in float64).

    Examples
    --------
    >>> import numpy as np
    >>> from lrfast.newton import hutchinson_diag
    >>> H = np.diag([1.0, 2.0, 3.0])
    >>> hutchinson_diag(lambda v: H @ v, np.zeros(3), rng=0)
    array([1., 2., 3.])
    """
    if not callable(hvp):
        raise TypeError("hvp must be a callable v -> H v")
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) \
            or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
    ps, single = _structure(params, "params")
    rng = np.random.default_rng(rng)
    acc = [np.zeros(p.shape, np.float64) for p in ps]
    for _ in range(int(n_samples)):
        z = [(rng.integers(0, 2, size=p.shape) * 2 - 1).astype(p.dtype) for p in ps]
        hz = _like(hvp(z[0] if single else z), ps, single, "hvp(v)")
        for a, zi, hi in zip(acc, z, hz):
            a += zi.astype(np.float64) * hi.astype(np.float64)
    out = [_laid_out_like(p, a / n_samples) for a, p in zip(acc, ps)]
    return out[0] if single else out


@overload
def secant_diag(params: Array, grads: Array, prev_params: Array, prev_grads: Array, *,
                prev: Optional[Array] = ..., min_step: float = ..., fill: float = ...
                ) -> Array: ...


@overload
def secant_diag(params: Sequence[Array], grads: Sequence[Array], prev_params: Sequence[Array],
                prev_grads: Sequence[Array], *, prev: Optional[Sequence[Array]] = ...,
                min_step: float = ..., fill: float = ...) -> List[Array]: ...


def secant_diag(params: ArrayOrList, grads: ArrayOrList, prev_params: ArrayOrList,
                prev_grads: ArrayOrList, *, prev: Optional[ArrayOrList] = None,
                min_step: float = 1e-8, fill: float = 1.0) -> Union[Array, List[Array]]:
    r"""Estimate the Hessian diagonal from two gradients (elementwise secant).

    ::

        h_i = (g_i - g_prev_i) / (x_i - x_prev_i)   where |x_i - x_prev_i| > min_step*(1 + |x_i|)
        h_i = prev_i (or fill)                      elsewhere

    The per-coordinate secant condition of quasi-Newton methods (exact on a
    separable quadratic; Nocedal & Wright, *Numerical Optimization*, 2nd ed.,
    eq. 6.6, restricted to a diagonal matrix). Use it with
    :class:`DiagonalNewton`, whose ``|h| + damping`` keeps the rate positive
    and bounded.

    Parameters
    ----------
    params, grads : ndarray or list of ndarray
        The current point and its gradient.
    prev_params, prev_grads : same structure
        An earlier point and its gradient.
    prev : same structure, optional
        The previous estimate, kept where the step is too small to tell.
    min_step : float
        Relative step below which a coordinate is not updated (>= 0).
    fill : float
        Value where there is neither a usable step nor ``prev`` (default 1.0:
        a plain gradient step of size lr there).

    Returns
    -------
    list of ndarray (or one ndarray), shaped and typed like ``params``.
    """
    if isinstance(min_step, bool) or not isinstance(min_step, numbers.Real) \
            or not np.isfinite(min_step) or min_step < 0:
        raise ValueError(f"min_step must be a finite number >= 0, got {min_step!r}")
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real) or not np.isfinite(fill):
        raise ValueError(f"fill must be a finite number, got {fill!r}")
    ps, single = _structure(params, "params")
    gs = _like(grads, ps, single, "grads")
    pps = _like(prev_params, ps, single, "prev_params")
    pgs = _like(prev_grads, ps, single, "prev_grads")
    olds = _like(prev, ps, single, "prev") if prev is not None else [None] * len(ps)
    out = []
    for x, g, xp, gp, old in zip(ps, gs, pps, pgs, olds):
        x64 = x.astype(np.float64)
        dx = x64 - xp.astype(np.float64)
        dg = g.astype(np.float64) - gp.astype(np.float64)
        ok = np.abs(dx) > min_step * (1.0 + np.abs(x64))
        h = np.full(x.shape, float(fill)) if old is None else old.astype(np.float64)
        np.divide(dg, dx, out=h, where=ok)
        out.append(_laid_out_like(x, h))
    return out[0] if single else out
