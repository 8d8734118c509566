"""Functional layer: one optimizer update on one array, in place, for users who
keep their own state and for benchmark comparisons.

Every function runs the same fused kernel as the optimizer classes (GIL
released, OpenMP above the serial threshold) and validates everything before
writing. ``step`` is the step count AFTER this update (1 on the first call).

>>> import numpy as np
>>> from lrfast import kernels
>>> p = np.ones(3); g = np.ones(3)
>>> m = np.zeros_like(p); v = np.zeros_like(p)
>>> kernels.adam_step(p, g, m, v, lr=0.1, step=1)
>>> p
array([0.9, 0.9, 0.9])
"""
from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np

from . import optim as _o
from ._dispatch import kernels as _K
from ._typing import Array

__all__ = ["sgd_step", "adagrad_step", "adadelta_step", "rmsprop_step", "adam_step",
           "adamw_step", "adamax_step", "nadam_step", "radam_step"]


def _run(cls, p, g, states, hp, key):
    _o.check_param(p, "param")
    for name, s in states:
        if s is None:
            continue
        _o.check_param(s, name)
        if s.shape != p.shape or s.dtype != p.dtype:
            raise ValueError(f"{name}: shape/dtype {s.shape}/{s.dtype} != param's "
                             f"{p.shape}/{p.dtype}")
        if s.flags.c_contiguous != p.flags.c_contiguous and p.ndim > 1:
            raise ValueError(f"{name}: memory layout differs from the param's")
    for k in cls._flag_names:
        if k in hp and not isinstance(hp[k], (bool, np.bool_)):
            raise TypeError(f"{k} must be a bool, got {hp[k]!r}")
    inst = cls.__new__(cls)
    inst._check_all(hp, 0)
    need = inst._alloc(np.empty(0, p.dtype), hp)
    for (name, s), want in zip(states, need):
        if s is None and want is not None:
            raise ValueError(f"{cls.__name__.lower()} step: state array {name!r} is required "
                             "with these hyperparameters, got None")
    row, newkey = inst._row(hp, key)
    slots = [s for _, s in states] + [None] * (_K.N_STATES - len(states))
    eng = _K.Engine(_K.KINDS[cls._kernel_name], [p], [slots], [0])
    eng.step([g], [row], None, 0.0, False, False)
    return newkey


def _step_arg(step):
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
        raise ValueError(f"step must be the step count after this update (an int >= 1), "
                         f"got {step!r}")
    return int(step)


def sgd_step(p: Array, g: Array, momentum_buffer: Optional[Array] = None, *, lr: float,
             momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
             nesterov: bool = False, maximize: bool = False, first_step: bool = False) -> None:
    """SGD: ``p -= lr*g`` with momentum/nesterov (see :class:`lrfast.SGD`).
    ``first_step=True`` starts the momentum buffer (``b = g``)."""
    if momentum != 0 and momentum_buffer is None:
        raise ValueError("sgd_step: momentum != 0 needs a momentum_buffer array")
    hp = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
              nesterov=nesterov, maximize=maximize)
    _run(_o.SGD, p, g, [("momentum_buffer", momentum_buffer)], hp, (0, not first_step))


def adagrad_step(p: Array, g: Array, state_sum: Array, *, lr: float, step: int,
                 lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
                 maximize: bool = False) -> None:
    """Adagrad (see :class:`lrfast.Adagrad`)."""
    hp = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
              initial_accumulator_value=0.0, eps=eps, maximize=maximize)
    _run(_o.Adagrad, p, g, [("sum", state_sum)], hp, _step_arg(step) - 1)


def adadelta_step(p: Array, g: Array, square_avg: Array, acc_delta: Array, *,
                  lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                  weight_decay: float = 0.0, maximize: bool = False) -> None:
    """Adadelta (see :class:`lrfast.Adadelta`)."""
    hp = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
    _run(_o.Adadelta, p, g, [("square_avg", square_avg), ("acc_delta", acc_delta)], hp, 0)


def rmsprop_step(p: Array, g: Array, square_avg: Array, *,
                 momentum_buffer: Optional[Array] = None, grad_avg: Optional[Array] = None,
                 lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
    """RMSprop (see :class:`lrfast.RMSprop`)."""
    if momentum > 0 and momentum_buffer is None:
        raise ValueError("rmsprop_step: momentum > 0 needs a momentum_buffer array")
    if centered and grad_avg is None:
        raise ValueError("rmsprop_step: centered=True needs a grad_avg array")
    hp = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
              centered=centered, maximize=maximize)
    _run(_o.RMSprop, p, g, [("square_avg", square_avg), ("momentum_buffer", momentum_buffer),
                            ("grad_avg", grad_avg)], hp, 0)


def adam_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *, lr: float = 1e-3,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0, step: int, amsgrad: bool = False,
              max_exp_avg_sq: Optional[Array] = None, maximize: bool = False,
              decoupled: bool = False) -> None:
    """Adam / AdamW (``decoupled=True``) (see :class:`lrfast.Adam`)."""
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError("adam_step: amsgrad=True needs a max_exp_avg_sq array")
    hp = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
              amsgrad=amsgrad, maximize=maximize)
    cls = _o.AdamW if decoupled else _o.Adam
    _run(cls, p, g, [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq),
                     ("max_exp_avg_sq", max_exp_avg_sq if amsgrad else None)],
         hp, _step_arg(step) - 1)


def adamw_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *,
               weight_decay: float = 1e-2, **kw: Any) -> None:
    """AdamW: Adam with decoupled weight decay (see :class:`lrfast.AdamW`)."""
    adam_step(p, g, exp_avg, exp_avg_sq, weight_decay=weight_decay, decoupled=True, **kw)


def adamax_step(p: Array, g: Array, exp_avg: Array, exp_inf: Array, *, lr: float = 2e-3,
                beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0, step: int, maximize: bool = False) -> None:
    """Adamax (see :class:`lrfast.Adamax`)."""
    hp = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
              maximize=maximize)
    _run(_o.Adamax, p, g, [("exp_avg", exp_avg), ("exp_inf", exp_inf)], hp,
         _step_arg(step) - 1)


def nadam_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *, lr: float = 2e-3,
               beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, momentum_decay: float = 4e-3,
               decoupled_weight_decay: bool = False, step: int, mu_product: float = 1.0,
               maximize: bool = False) -> float:
    """NAdam (see :class:`lrfast.NAdam`). ``mu_product`` is the product of the
    momentum coefficients before this step; returns the new one."""
    hp = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
              momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
              maximize=maximize)
    return _run(_o.NAdam, p, g, [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)], hp,
                (_step_arg(step) - 1, float(mu_product)))[1]


def radam_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *, lr: float = 1e-3,
               beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, decoupled_weight_decay: bool = False, step: int,
               maximize: bool = False) -> None:
    """RAdam (see :class:`lrfast.RAdam`)."""
    hp = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
              decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    _run(_o.RAdam, p, g, [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)], hp,
         _step_arg(step) - 1)
