"""Functional layer: one optimizer update on one array, in place, for users who
keep their own state and for benchmark comparisons.

Every function runs the same kernel loop as the optimizer classes (GIL
released, OpenMP above the serial threshold) through a light entry point (no
optimizer or engine is built per call), with the same validation and the same
row plans (:mod:`lrfast.optim._rules`), and checks everything before writing.
``step`` is the step count AFTER this update (1 on the first call).

>>> import numpy as np
>>> from lrfast import kernels
>>> p = np.ones(3); g = np.ones(3)
>>> m = np.zeros_like(p); v = np.zeros_like(p)
>>> kernels.adam_step(p, g, m, v, lr=0.1, step=1)
>>> p
array([0.9, 0.9, 0.9])
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ._dispatch import kernels as _K
from ._typing import Array
from ._validate import _RANGES, MAX_STEP, check_value, step_count
from .optim._rules import RULES
from .optim._table import KINDS, MAX_STATES, TABLE

__all__ = ["sgd_step", "adagrad_step", "adadelta_step", "rmsprop_step", "adam_step",
           "adamw_step", "adamax_step", "nadam_step", "radam_step",
           "rprop_step", "asgd_step", "lion_step", "adabelief_step", "yogi_step", "adopt_step",
           "adan_step", "lamb_step", "lars_step", "novograd_step", "schedule_free_sgd_step",
           "schedule_free_adamw_step", "schedule_free_radam_step"]

_CACHE: Dict[Any, Any] = {}     # validated plans, keyed by (optimizer, values)
# functional spellings of the table's pairs and triples
_GROUPED = (("betas", ("beta1", "beta2", "beta3")), ("etas", ("etaminus", "etaplus")),
            ("step_sizes", ("step_size_min", "step_size_max")))


# each functional signature's hyperparameters (lr apart), in call order
_SGD = ("momentum", "dampening", "weight_decay", "nesterov", "maximize")
_ADAGRAD = ("lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize")
_ADADELTA = ("rho", "eps", "weight_decay", "maximize")
_RMSPROP = ("alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
_ADAM = ("beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize")
_ADAMAX = ("beta1", "beta2", "eps", "weight_decay", "maximize")
_NADAM = ("beta1", "beta2", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay",
          "maximize")
_RADAM = ("beta1", "beta2", "eps", "weight_decay", "decoupled_weight_decay", "maximize")
_RPROP = ("etaminus", "etaplus", "step_size_min", "step_size_max", "maximize")
_ASGD = ("lambd", "alpha", "t0", "weight_decay", "maximize")
_LION = ("beta1", "beta2", "weight_decay")
_ADABELIEF = ("beta1", "beta2", "eps", "eps_root")
_BETAS_EPS = ("beta1", "beta2", "eps")
_ADAN = ("beta1", "beta2", "beta3", "eps", "eps_root", "weight_decay")
_LAMB = ("beta1", "beta2", "eps", "weight_decay", "eps_root")
_LARS = ("momentum", "weight_decay", "trust_coefficient", "eps", "nesterov")
_NOVOGRAD = ("beta1", "beta2", "eps", "eps_root", "weight_decay")
_SF_SGD = ("momentum", "weight_decay", "warmup_steps", "r", "weight_lr_power")
_SF_ADAMW = ("beta1", "beta2", "eps", "weight_decay", "warmup_steps", "r", "weight_lr_power")
_SF_RADAM = ("beta1", "beta2", "eps", "weight_decay", "r", "weight_lr_power", "silent_sgd_phase")


def _plan(name: str, names: Tuple[str, ...], vals: Tuple[Any, ...]) -> Any:
    """The validated row plan of optimizer ``name`` for hyperparameters
    ``names``/``vals`` (lr excluded: it is checked per call). Cached: a loop
    that calls the same step with the same hyperparameters validates once."""
    # the values and their exact types: equal values of one type validate alike,
    # and True never hits the entry of 1.0
    key = (name, vals)
    try:
        plan = _CACHE[key]
        if plan[0] == tuple(map(type, vals)):
            return plan
    except (KeyError, TypeError):       # TypeError: an unhashable value (checked below)
        pass
    hp = dict(zip(names, vals))
    for group, parts in _GROUPED:      # the functional signature spells pairs out
        if parts[0] in hp:
            hp[group] = tuple(hp.pop(k) for k in parts if k in hp)
    spec, rule = TABLE[name], RULES[name]
    checks = {h.name: h.check for h in spec.hparams}
    where = f"{name.lower()}_step"
    hp = {k: check_value(v, k, checks[k], where + ": ") for k, v in hp.items()}
    hp["lr"] = 0.0
    rule.check(hp, where + ": ")
    fixed, step = rule.plan(hp)
    need = rule.alloc(np.empty(0), hp)
    lr_ok = _RANGES[checks["lr"]][0]
    plan = (tuple(map(type, vals)), tuple(float(fixed[f]) for f in KINDS[spec.kind].fields),
            step, _K.KINDS[spec.kind], tuple(i for i, a in enumerate(need) if a is not None),
            spec.states, where, lr_ok, checks["lr"])
    if len(_CACHE) > 256:
        _CACHE.clear()
    try:
        _CACHE[key] = plan
    except TypeError:
        pass
    return plan


def _run(name: str, p: Array, g: Array, states: Sequence[Optional[Array]], lr: Any, key: Any,
         names: Tuple[str, ...], vals: Tuple[Any, ...], tstate: Tuple[float, ...] = ()) -> Any:
    """Validate and apply one step of optimizer ``name``; ``states`` are its
    state arrays in table order (None where an option is off)."""
    _, fixed, stepfn, kind, needed, snames, where, lr_ok, lr_check = _plan(name, names, vals)
    if not (type(lr) is float and lr - lr == 0.0 and lr_ok(lr)):
        lr = check_value(lr, "lr", lr_check, where + ": ")
    for i in needed:
        if states[i] is None:
            raise ValueError(f"{where}: state array {snames[i]!r} is required "
                             "with these hyperparameters, got None")
    sv, newkey = stepfn(key, lr)
    st = list(states) + [None] * (MAX_STATES - len(states))
    ts = _K.step_one(kind, p, g, st[0], st[1], st[2], fixed + sv, None, where, snames, st[3],
                     tstate)
    return newkey if ts is None else ts


def _step_arg(step: Any) -> int:
    if type(step) is int and 0 < step <= MAX_STEP:
        return step
    return step_count(step, "step (the step count after this update)", low=1)


def sgd_step(p: Array, g: Array, momentum_buffer: Optional[Array] = None, *, lr: float,
             momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
             nesterov: bool = False, maximize: bool = False, first_step: bool = False) -> None:
    """SGD: ``p -= lr*g`` with momentum/nesterov (see :class:`lrfast.SGD`).
    ``first_step=True`` starts the momentum buffer (``b = g``)."""
    first_step = check_value(first_step, "first_step", "bool", "sgd_step: ")
    _run("SGD", p, g, [momentum_buffer], lr, (0, not first_step), _SGD,
         (momentum, dampening, weight_decay, nesterov, maximize))


def adagrad_step(p: Array, g: Array, state_sum: Array, *, lr: float, step: int,
                 lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
                 maximize: bool = False) -> None:
    """Adagrad (see :class:`lrfast.Adagrad`)."""
    _run("Adagrad", p, g, [state_sum], lr, _step_arg(step) - 1, _ADAGRAD,
         (lr_decay, weight_decay, 0.0, eps, maximize))


def adadelta_step(p: Array, g: Array, square_avg: Array, acc_delta: Array, *,
                  lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                  weight_decay: float = 0.0, maximize: bool = False) -> None:
    """Adadelta (see :class:`lrfast.Adadelta`)."""
    _run("Adadelta", p, g, [square_avg, acc_delta], lr, 0, _ADADELTA,
         (rho, eps, weight_decay, maximize))


def rmsprop_step(p: Array, g: Array, square_avg: Array, *,
                 momentum_buffer: Optional[Array] = None, grad_avg: Optional[Array] = None,
                 lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
    """RMSprop (see :class:`lrfast.RMSprop`)."""
    _run("RMSprop", p, g, [square_avg, momentum_buffer, grad_avg], lr, 0, _RMSPROP,
         (alpha, eps, weight_decay, momentum, centered, maximize))


def adam_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *, lr: float = 1e-3,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0, step: int, amsgrad: bool = False,
              max_exp_avg_sq: Optional[Array] = None, maximize: bool = False,
              decoupled: bool = False, decoupled_weight_decay: bool = False) -> None:
    """Adam / AdamW (``decoupled=True``, or torch's name ``decoupled_weight_decay=True``)
    (see :class:`lrfast.Adam`)."""
    if decoupled is not True and decoupled is not False:
        decoupled = check_value(decoupled, "decoupled", "bool", "adam_step: ")
    if decoupled_weight_decay is not True and decoupled_weight_decay is not False:
        decoupled_weight_decay = check_value(decoupled_weight_decay, "decoupled_weight_decay",
                                             "bool", "adam_step: ")
    decoupled = decoupled or decoupled_weight_decay
    if amsgrad is not True and amsgrad is not False:   # np.True_ selects the state too
        amsgrad = check_value(amsgrad, "amsgrad", "bool", "adam_step: ")
    if type(step) is not int or not 0 < step <= MAX_STEP:
        step = _step_arg(step)
    _run("AdamW" if decoupled else "Adam", p, g,
         (exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad is True else None),
         lr, step - 1, _ADAM, (beta1, beta2, eps, weight_decay, amsgrad, maximize))


def adamw_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *,
               weight_decay: float = 1e-2, **kw: Any) -> None:
    """AdamW: Adam with decoupled weight decay (see :class:`lrfast.AdamW`)."""
    adam_step(p, g, exp_avg, exp_avg_sq, weight_decay=weight_decay, decoupled=True, **kw)


def adamax_step(p: Array, g: Array, exp_avg: Array, exp_inf: Array, *, lr: float = 2e-3,
                beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0, step: int, maximize: bool = False) -> None:
    """Adamax (see :class:`lrfast.Adamax`)."""
    _run("Adamax", p, g, [exp_avg, exp_inf], lr, _step_arg(step) - 1, _ADAMAX,
         (beta1, beta2, eps, weight_decay, maximize))


def nadam_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *, lr: float = 2e-3,
               beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, momentum_decay: float = 4e-3,
               decoupled_weight_decay: bool = False, step: int, mu_product: float = 1.0,
               maximize: bool = False) -> float:
    """NAdam (see :class:`lrfast.NAdam`). ``mu_product`` is the product of the
    momentum coefficients before this step; returns the new one."""
    t = _step_arg(step) - 1
    key = RULES["NAdam"].entry_key(t, {"mu_product": mu_product}, "nadam_step")
    return _run("NAdam", p, g, [exp_avg, exp_avg_sq], lr, key, _NADAM,
                (beta1, beta2, eps, weight_decay, momentum_decay, decoupled_weight_decay,
                 maximize))[1]


def radam_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *, lr: float = 1e-3,
               beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, decoupled_weight_decay: bool = False, step: int,
               maximize: bool = False) -> None:
    """RAdam (see :class:`lrfast.RAdam`)."""
    _run("RAdam", p, g, [exp_avg, exp_avg_sq], lr, _step_arg(step) - 1, _RADAM,
         (beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize))


def rprop_step(p: Array, g: Array, prev: Array, step_size: Array, *, lr: float = 1e-2,
               etaminus: float = 0.5, etaplus: float = 1.2, step_size_min: float = 1e-6,
               step_size_max: float = 50.0, step: int, maximize: bool = False) -> None:
    """Rprop (see :class:`lrfast.Rprop`). On the first step (``step=1``)
    ``step_size`` is set to ``lr`` before it is updated (torch's initial state),
    whatever it held."""
    _run("Rprop", p, g, [prev, step_size], lr, _step_arg(step) - 1, _RPROP,
         (etaminus, etaplus, step_size_min, step_size_max, maximize))


def asgd_step(p: Array, g: Array, ax: Array, *, lr: float = 1e-2, lambd: float = 1e-4,
              alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0.0, step: int,
              eta: Optional[float] = None, mu: float = 1.0,
              maximize: bool = False) -> Tuple[float, float]:
    """ASGD (see :class:`lrfast.ASGD`). ``eta`` and ``mu`` are the values of
    the previous step (``eta=None``, the first step: ``lr``); returns the new
    ``(eta, mu)``."""
    t = _step_arg(step) - 1
    key = RULES["ASGD"].entry_key(t, {"eta": 0.0 if eta is None else eta, "mu": mu},
                                  "asgd_step")
    if eta is None:
        key = (t, None, key[2])
    k = _run("ASGD", p, g, [ax], lr, key, _ASGD, (lambd, alpha, t0, weight_decay, maximize))
    return k[1], k[2]


def lion_step(p: Array, g: Array, exp_avg: Array, *, lr: float = 1e-4, beta1: float = 0.9,
              beta2: float = 0.99, weight_decay: float = 0.0) -> None:
    """Lion (see :class:`lrfast.Lion`): ``exp_avg`` is optax's ``mu``."""
    _run("Lion", p, g, [exp_avg], lr, 0, _LION, (beta1, beta2, weight_decay))


def adabelief_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *,
                   lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                   eps: float = 1e-16, eps_root: float = 1e-16, step: int) -> None:
    """AdaBelief (see :class:`lrfast.AdaBelief`)."""
    _run("AdaBelief", p, g, [exp_avg, exp_avg_sq], lr, _step_arg(step) - 1, _ADABELIEF,
         (beta1, beta2, eps, eps_root))


def yogi_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *, lr: float = 1e-2,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-3, step: int) -> None:
    """Yogi (see :class:`lrfast.Yogi`; fresh moments are filled with 1e-6)."""
    _run("Yogi", p, g, [exp_avg, exp_avg_sq], lr, _step_arg(step) - 1, _BETAS_EPS,
         (beta1, beta2, eps))


def adopt_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *, lr: float = 1e-3,
               beta1: float = 0.9, beta2: float = 0.9999, eps: float = 1e-6,
               step: int) -> None:
    """ADOPT (see :class:`lrfast.ADOPT`); ``step=1`` only fills ``exp_avg_sq``."""
    _run("ADOPT", p, g, [exp_avg, exp_avg_sq], lr, _step_arg(step) - 1, _BETAS_EPS,
         (beta1, beta2, eps))


def adan_step(p: Array, g: Array, exp_avg: Array, exp_avg_diff: Array, exp_avg_sq: Array,
              prev_grad: Array, *, lr: float = 1e-3, beta1: float = 0.98, beta2: float = 0.92,
              beta3: float = 0.99, eps: float = 1e-8, eps_root: float = 1e-8,
              weight_decay: float = 0.0, step: int) -> None:
    """Adan (see :class:`lrfast.Adan`); on ``step=1`` the grad difference is 0."""
    _run("Adan", p, g, [exp_avg, exp_avg_diff, exp_avg_sq, prev_grad], lr,
         _step_arg(step) - 1, _ADAN, (beta1, beta2, beta3, eps, eps_root, weight_decay))


def lamb_step(p: Array, g: Array, exp_avg: Array, exp_avg_sq: Array, *, lr: float = 1e-3,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-6,
              weight_decay: float = 0.0, eps_root: float = 0.0, step: int) -> None:
    """LAMB (see :class:`lrfast.Lamb`): the trust ratio of this one tensor."""
    _run("Lamb", p, g, [exp_avg, exp_avg_sq], lr, _step_arg(step) - 1, _LAMB,
         (beta1, beta2, eps, weight_decay, eps_root))


def lars_step(p: Array, g: Array, trace: Array, *, lr: float, momentum: float = 0.9,
              weight_decay: float = 0.0, trust_coefficient: float = 1e-3, eps: float = 0.0,
              nesterov: bool = False) -> None:
    """LARS (see :class:`lrfast.LARS`): ``trace`` is Optax's trace (start at zeros)."""
    _run("LARS", p, g, [trace], lr, 0, _LARS,
         (momentum, weight_decay, trust_coefficient, eps, nesterov))


def novograd_step(p: Array, g: Array, exp_avg: Array, *, lr: float = 1e-3, beta1: float = 0.9,
                  beta2: float = 0.25, eps: float = 1e-6, eps_root: float = 0.0,
                  weight_decay: float = 0.0, step: int, nu: float = 0.0) -> float:
    """NovoGrad (see :class:`lrfast.NovoGrad`). ``nu`` is the tensor's second
    moment before this step (ignored on ``step=1``); returns the new one."""
    nu = check_value(nu, "nu", "ge0", "novograd_step: ")
    return _run("NovoGrad", p, g, [exp_avg], lr, _step_arg(step) - 1, _NOVOGRAD,
                (beta1, beta2, eps, eps_root, weight_decay), (nu,))[0]


def _sf_key(name: str, step: Any, lr_max: Any, weight_sum: Any) -> Any:
    where = f"{name.lower()}_step"
    return RULES[name].entry_key(_step_arg(step) - 1, {"lr_max": lr_max,
                                                       "weight_sum": weight_sum}, where)


def schedule_free_sgd_step(p: Array, g: Array, z: Array, *, lr: float = 1.0,
                           momentum: float = 0.9, weight_decay: float = 0.0,
                           warmup_steps: float = 0, r: float = 0.0,
                           weight_lr_power: float = 2.0, step: int, lr_max: float = -1.0,
                           weight_sum: float = 0.0) -> Tuple[float, float]:
    """Schedule-free SGD (see :class:`lrfast.ScheduleFreeSGD`) on ``p`` = y.
    ``z`` is set to ``p`` on ``step=1``; ``lr_max`` and ``weight_sum`` are the
    values before this step; returns the new ones."""
    return _run("ScheduleFreeSGD", p, g, [z], lr, _sf_key("ScheduleFreeSGD", step, lr_max,
                                                            weight_sum),
                _SF_SGD, (momentum, weight_decay, warmup_steps, r, weight_lr_power))[1:]


def schedule_free_adamw_step(p: Array, g: Array, z: Array, exp_avg_sq: Array, *,
                             lr: float = 0.0025, beta1: float = 0.9, beta2: float = 0.999,
                             eps: float = 1e-8, weight_decay: float = 0.0,
                             warmup_steps: float = 0, r: float = 0.0,
                             weight_lr_power: float = 2.0, step: int, lr_max: float = -1.0,
                             weight_sum: float = 0.0) -> Tuple[float, float]:
    """Schedule-free AdamW (see :class:`lrfast.ScheduleFreeAdamW`), as
    :func:`schedule_free_sgd_step`."""
    return _run("ScheduleFreeAdamW", p, g, [z, exp_avg_sq], lr,
                _sf_key("ScheduleFreeAdamW", step, lr_max, weight_sum), _SF_ADAMW,
                (beta1, beta2, eps, weight_decay, warmup_steps, r, weight_lr_power))[1:]


def schedule_free_radam_step(p: Array, g: Array, z: Array, exp_avg_sq: Array, *,
                             lr: float = 0.0025, beta1: float = 0.9, beta2: float = 0.999,
                             eps: float = 1e-8, weight_decay: float = 0.0, r: float = 0.0,
                             weight_lr_power: float = 2.0, silent_sgd_phase: bool = True,
                             step: int, lr_max: float = -1.0,
                             weight_sum: float = 0.0) -> Tuple[float, float]:
    """Schedule-free RAdam (see :class:`lrfast.ScheduleFreeRAdam`), as
    :func:`schedule_free_sgd_step`."""
    return _run("ScheduleFreeRAdam", p, g, [z, exp_avg_sq], lr,
                _sf_key("ScheduleFreeRAdam", step, lr_max, weight_sum), _SF_RADAM,
                (beta1, beta2, eps, weight_decay, r, weight_lr_power, silent_sgd_phase))[1:]
