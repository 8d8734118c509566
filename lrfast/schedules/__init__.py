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

The three schedules of the Wikipedia article "Learning rate" follow its formulas:
:class:`TimeBasedDecay` (``eta_{n+1} = eta_n / (1 + d n)``), :class:`StepDecay`
(``eta_n = eta_0 drop^floor((1 + n) / every)``) and :class:`ExponentialDecay`
(``eta_n = eta_0 exp(-d n)``). The others follow torch.optim.lr_scheduler,
Keras (``keras.optimizers.schedules``) or Optax, as each docstring says.

Layout: ``_base`` (the :class:`Schedule` class, validation, serialization),
``_numerics``, ``_decay`` (the decay family), ``_cyclic`` (restarts, 1cycle,
cyclical), ``_compose`` (warmup factor, :class:`Sequence`, products, scaling),
``_plateau`` (:class:`ReduceOnPlateau`) and ``_gallery`` (plots). Every public
name is importable from ``lrfast.schedules``.

Any plain callable ``n -> float`` is accepted by the optimizers wherever a
schedule is; the classes here add vectorization, configs and plots.

Accuracy notes. Where a formula subtracts nearly equal numbers (``1 + cos`` at
the end of a cosine, ``1 - n / T`` at the end of a polynomial decay, the
log-gamma difference of :class:`TimeBasedDecay`), this module uses a form
without the cancellation, so values keep their relative accuracy down to the
floor. torch computes some of those forms directly; the two then agree to
1e-12 relative except within ~1e-16 x (the schedule's peak) of zero.
"""
from ._base import _REGISTRY, Schedule, _int, _pyplot, _real, deserialize, serialize
from ._compose import LinearWarmup, Product, Scaled, Sequence, join_schedules
from ._cyclic import (CosineRestarts, Cyclic, CyclicMomentum, LinearOneCycle, OneCycle,
                      OneCycleMomentum)
from ._decay import (Constant, CosineDecay, ExponentialDecay, InverseTimeDecay, LRRangeTest,
                     MultiStepDecay, PiecewiseConstant, PiecewiseInterpolate, PolynomialDecay,
                     StepDecay, TimeBasedDecay, WarmupStableDecay)
from ._gallery import _gallery_examples, gallery, gallery_main
from ._plateau import LearningRateScheduler, ReduceOnPlateau

__all__ = [
    "Schedule", "Constant", "TimeBasedDecay", "StepDecay", "ExponentialDecay",
    "InverseTimeDecay", "PolynomialDecay", "PiecewiseConstant", "CosineDecay",
    "CosineRestarts", "LinearWarmup", "OneCycle", "OneCycleMomentum", "Cyclic",
    "CyclicMomentum", "Sequence", "join_schedules", "MultiStepDecay", "Scaled", "Product",
    "ReduceOnPlateau", "LRRangeTest", "serialize", "deserialize", "gallery",
    "PiecewiseInterpolate", "LinearOneCycle", "WarmupStableDecay", "LearningRateScheduler",
]

# ``_int``, ``_real`` and ``_pyplot`` are shared with lrfast.lr_finder; ``_REGISTRY`` and
# ``_gallery_examples`` with the tests.
_SHARED_PRIVATE = (_REGISTRY, _int, _real, _pyplot, _gallery_examples, gallery_main)
