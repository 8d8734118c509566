"""The LR range test ("LR finder"): pick an initial learning rate by trying them all.

The initial rate "can be left as system default or can be selected using a
range of techniques" (Wikipedia, "Learning rate"). The range test (Smith, *Cyclical
Learning Rates for Training Neural Networks*, 2017; popularized by fastai and
torch-lr-finder) trains for a few steps while the rate grows from tiny to huge
(:class:`lrfast.schedules.LRRangeTest`), records the loss after each step and
suggests the rate where the (smoothed) loss falls fastest. It stops early once
the loss diverges.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Literal, Optional, Sequence, SupportsFloat, Tuple

import numpy as np

from ._typing import Array, Axes
from ._validate import integer, real, scalar
from .optim import SGD
from .schedules import LRRangeTest, _pyplot

__all__ = ["find_lr", "LRFinderResult"]


@dataclass
class LRFinderResult:
    """The outcome of :func:`find_lr`.

    Attributes
    ----------
    lrs : ndarray
        The rate used by each step taken.
    losses : ndarray
        ``losses[i]``: the loss right after the step taken with ``lrs[i]``.
    smoothed_losses : ndarray
        Exponential moving average of ``losses``:
        ``smoothed[i] = smooth * losses[i] + (1 - smooth) * smoothed[i - 1]``.
    suggestion : float or None
        The rate at the steepest descent of the smoothed loss (per step of the
        ramp, before its minimum); ``None`` when the loss never went down.
    diverged : bool
        Whether the run stopped early because the loss diverged (or became
        NaN/inf; that loss is not recorded).
    initial_loss : float
        The loss at the starting params, before any step.
    mode : str
        The ramp, "exp" or "linear".

    Examples
    --------
    Returned by :func:`find_lr`; ``result.plot()`` draws loss against rate:

    >>> res = LRFinderResult(lrs=np.array([1e-3, 1e-2, 1e-1]),
    ...                      losses=np.array([1.0, 0.5, 0.4]),
    ...                      smoothed_losses=np.array([1.0, 0.6, 0.5]), suggestion=1e-2)
    >>> res.suggestion, res.diverged
    (0.01, False)
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    suggestion: Optional[float]
    diverged: bool = False
    initial_loss: float = math.nan
    mode: str = "exp"

    def plot(self, ax: Optional[Axes] = None, show_raw: bool = True) -> Axes:
        """Plot loss against learning rate (log x axis for the "exp" ramp); return the Axes.

        Draws the smoothed loss, the raw loss (faint, with ``show_raw``) and a
        marker at the suggestion. Needs matplotlib.
        """
        if ax is None:
            _, ax = _pyplot().subplots(figsize=(6, 4))
        if show_raw:
            ax.plot(self.lrs, self.losses, color="0.7", lw=1, label="loss")
        ax.plot(self.lrs, self.smoothed_losses, color="C0", lw=2, label="smoothed loss")
        if self.suggestion is not None:
            i = int(np.argmin(np.abs(self.lrs - self.suggestion)))
            ax.plot([self.suggestion], [self.smoothed_losses[i]], "o", color="C3",
                    label=f"suggestion {self.suggestion:.3g}")
        if self.mode == "exp":
            ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title("LR range test" + (" (stopped: diverged)" if self.diverged else ""))
        ax.legend(fontsize=8)
        return ax


def _evaluate(loss_and_grads, params, n_params):
    out = loss_and_grads(params)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError("find_lr: loss_and_grads(params) must return (loss, grads), got "
                        f"{type(out).__name__}")
    loss, grads = out
    loss = scalar(loss, "the loss", "find_lr: ")
    if not isinstance(grads, (list, tuple)) or len(grads) != n_params:
        raise ValueError(f"find_lr: loss_and_grads must return one grad per param "
                         f"({n_params}), got {grads!r:.80}")
    return loss, list(grads)


def _suggest(lrs, smoothed, mode):
    """The rate where the smoothed loss falls fastest, before its minimum."""
    stop = int(np.argmin(smoothed)) + 1
    if stop < 3:
        return None
    x = np.log(lrs[:stop]) if mode == "exp" else lrs[:stop]
    slope = np.gradient(smoothed[:stop], x)
    i = int(np.argmin(slope))
    return float(lrs[i]) if slope[i] < 0 else None


def find_lr(loss_and_grads: Callable[[List[Array]],
                                     Tuple[SupportsFloat, Sequence[Optional[Array]]]],
            params: Sequence[Array], optimizer: Optional[Callable[..., Any]] = None,
            start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100,
            mode: Literal["exp", "linear"] = "exp", smooth: float = 0.05,
            diverge_threshold: float = 5.0, **optimizer_kwargs: Any) -> LRFinderResult:
    """Run an LR range test on copies of ``params``; return an :class:`LRFinderResult`.

    The rate follows ``LRRangeTest(start_lr, end_lr, num_steps, mode)``: step
    ``k`` uses ``lrs[k]``. After each step the loss is recorded and smoothed;
    the run stops early when the smoothed loss exceeds ``diverge_threshold``
    times the best smoothed loss so far (for a best ``b <= 0``: exceeds it by
    more than ``(diverge_threshold - 1) * |b|``), or when the loss is NaN/inf.
    The user's arrays are never modified: the optimizer works on copies.

    Parameters
    ----------
    loss_and_grads : callable
        ``loss_and_grads(params) -> (loss, grads)`` with ``grads`` a list of
        arrays in the order (and with the shapes and dtypes) of ``params``.
    params : list of ndarray
        The starting point (float32/float64 arrays; copied, not modified).
    optimizer : class, optional
        An lrfast optimizer class (or any ``cls(params, lr=schedule, **kw)``
        with ``.step(grads)``); default ``lrfast.SGD``.
    start_lr, end_lr : float
        The ramp's first and last rates.
    num_steps : int
        Length of the ramp (>= 2); the run takes at most this many steps.
    mode : {"exp", "linear"}
        Geometric ("exp", the usual) or linear ramp.
    smooth : float
        Weight of the newest loss in the moving average, in (0, 1] (1: no
        smoothing). Default 0.05, as torch-lr-finder.
    diverge_threshold : float
        Stop when the smoothed loss exceeds this multiple of the best (> 1).
    **optimizer_kwargs
        Passed to the optimizer (for example ``momentum=0.9``); not ``lr``.

    Returns
    -------
    LRFinderResult

    Examples
    --------
    Least squares, whose largest stable SGD rate is ``2 / L`` with ``L`` the
    largest eigenvalue of ``A.T @ A / m``:

    >>> import numpy as np, lrfast
    >>> A = np.random.default_rng(0).normal(size=(200, 10)); b = A @ np.ones(10)
    >>> def loss_and_grads(p):
    ...     r = A @ p[0] - b
    ...     return 0.5 * (r @ r) / len(b), [A.T @ r / len(b)]
    >>> res = lrfast.find_lr(loss_and_grads, [np.zeros(10)])
    >>> L = float(np.linalg.eigvalsh(A.T @ A / len(b)).max())
    >>> 0.01 * 2 / L < res.suggestion < 2 / L
    True
    """
    if not callable(loss_and_grads):
        raise TypeError(f"find_lr: loss_and_grads must be callable, got {loss_and_grads!r}")
    if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)) or not params:
        raise TypeError("find_lr: params must be a non-empty list of numpy arrays, got "
                        f"{type(params).__name__}")
    for i, p in enumerate(params):
        if not isinstance(p, np.ndarray):
            raise TypeError(f"find_lr: params[{i}] must be a numpy array, got "
                            f"{type(p).__name__} (parameter groups are not supported here)")
    if "lr" in optimizer_kwargs:
        raise TypeError("find_lr: lr is set by the range test; use start_lr and end_lr")
    num_steps = integer(num_steps, "num_steps", "find_lr: ", low=2)
    smooth = real(smooth, "smooth", "find_lr: ", low=0.0, high=1.0, low_open=True)
    diverge_threshold = real(diverge_threshold, "diverge_threshold", "find_lr: ", low=1.0,
                             low_open=True)
    schedule = LRRangeTest(start_lr, end_lr, num_steps, mode=mode)
    if optimizer is None:
        optimizer = SGD
    if not callable(optimizer):
        raise TypeError(f"find_lr: optimizer must be an optimizer class, got {optimizer!r}")

    work = [p.copy(order="K") for p in params]  # same dtype and memory layout, writable
    opt = optimizer(work, lr=schedule, **optimizer_kwargs)
    loss, grads = _evaluate(loss_and_grads, work, len(work))
    initial_loss = loss
    lrs: Any        # lists while recording, ndarrays at the end
    losses: Any
    smoothed: Any
    lrs, losses, smoothed = [], [], []
    best = math.inf
    diverged = False
    avg = 0.0
    for k in range(num_steps):
        opt.step(grads)
        loss, grads = _evaluate(loss_and_grads, work, len(work))
        if not math.isfinite(loss):
            diverged = True
            break
        avg = loss if k == 0 else smooth * loss + (1.0 - smooth) * avg
        lrs.append(schedule(k))
        losses.append(loss)
        smoothed.append(avg)
        best = min(best, avg)
        if avg - best > (diverge_threshold - 1.0) * abs(best):
            diverged = True
            break
    lrs, losses, smoothed = np.array(lrs), np.array(losses), np.array(smoothed)
    suggestion = _suggest(lrs, smoothed, schedule.mode) if len(lrs) else None
    return LRFinderResult(lrs=lrs, losses=losses, smoothed_losses=smoothed,
                          suggestion=suggestion, diverged=diverged,
                          initial_loss=initial_loss, mode=schedule.mode)
