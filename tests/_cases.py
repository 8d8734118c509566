"""Optimizer configurations shared by the tests: every option of every optimizer
at least once. The optimizer names come from lrfast's table; adding an
optimizer adds its option sets here (its one test entry)."""
import math

import numpy as np

import lrfast
from lrfast.optim import TABLE, optimizers

NAMES = optimizers(twin=True)          # every optimizer with a numpy twin

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.02, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1,
                     eps=1e-8, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.9, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, maximize=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, eps=1e-6)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, amsgrad=True, maximize=True, eps=1e-6)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True,
                  maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("Adamax", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01, maximize=True)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.01, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01, weight_decay=0.01, betas=(0.9, 0.99))),
    ("RAdam", dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True, maximize=True)),
    ("Rprop", dict()),
    ("Rprop", dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2), maximize=True)),
    ("ASGD", dict()),
    ("ASGD", dict(lr=0.05, lambd=1e-2, alpha=0.5, t0=2.0, weight_decay=0.01, maximize=True)),
    ("Lion", dict(lr=0.01)),
    ("Lion", dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)),
    # the modern set (Optax references)
    ("AdaBelief", dict(lr=0.01)),
    ("AdaBelief", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, eps_root=0.0)),
    ("Yogi", dict(lr=0.01)),
    ("Yogi", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6)),
    ("ADOPT", dict(lr=0.01)),
    ("ADOPT", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-4)),
    ("Adan", dict(lr=0.01)),
    ("Adan", dict(lr=0.01, betas=(0.9, 0.8, 0.95), eps=1e-6, eps_root=0.0, weight_decay=0.02)),
    # per-tensor trust ratios and moments (a read-only norm pass, then the update)
    ("Lamb", dict(lr=0.01)),
    ("Lamb", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01, eps_root=1e-10)),
    ("LARS", dict(lr=0.1)),
    ("LARS", dict(lr=0.1, momentum=0.8, weight_decay=0.01, trust_coefficient=0.01, eps=1e-8,
                  nesterov=True)),
    ("NovoGrad", dict(lr=0.01)),
    ("NovoGrad", dict(lr=0.01, betas=(0.8, 0.5), eps=1e-4, eps_root=1e-8, weight_decay=0.01)),
    # schedule-free (schedulefree references); momentum 0.3 takes lerp's other branch
    ("ScheduleFreeSGD", dict(lr=0.05)),
    ("ScheduleFreeSGD", dict(lr=0.05, momentum=0.3, weight_decay=0.01, warmup_steps=3, r=0.5,
                             weight_lr_power=1.0)),
    ("ScheduleFreeAdamW", dict(lr=0.01)),
    ("ScheduleFreeAdamW", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01,
                               warmup_steps=4, r=1.0, weight_lr_power=0.0)),
    ("ScheduleFreeRAdam", dict(lr=0.01)),
    ("ScheduleFreeRAdam", dict(lr=0.01, betas=(0.9, 0.9), weight_decay=0.01, r=0.5,
                               silent_sgd_phase=False)),
]


def case_id(case):
    name, hp = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in hp.items())


def _n_states(name, hp):
    opt = getattr(lrfast, name)([np.zeros(2)], **hp)
    return sum(a is not None for a in opt._states[0])


def rich_case(name):
    """The simplest option set of ``name`` that allocates the most state
    arrays: exercises every state buffer."""
    cases = [hp for n, hp in CASES if n == name]
    return dict(max(cases, key=lambda hp: (_n_states(name, hp), -len(hp))))


_NAN, _INF = float("nan"), float("inf")
BETAS_BAD = [((1.0, 0.999), ValueError), ((0.9, 1.0), ValueError), ((-0.1, 0.999), ValueError),
             ((0.9, _NAN), ValueError), ((0.9, 1.5), ValueError), ((0.9,), ValueError),
             (0.9, ValueError), ((0.9, 0.99, 0.5), ValueError), (("a", 0.9), TypeError),
             ((None, 0.9), TypeError), ((True, 0.9), TypeError)]
_NUM_BAD = [(_NAN, ValueError), (_INF, ValueError), (-_INF, ValueError), ("0.1", TypeError),
            (None, TypeError), (True, TypeError), (1j, TypeError), ([0.1], TypeError),
            (np.array([0.1, 0.2]), TypeError), (10 ** 400, ValueError)]
# Bad values for each range of the table (lrfast/optim/_table.py, HP.check).
BAD_BY_CHECK = {
    "ge0": _NUM_BAD + [(-1e-3, ValueError)],
    "gt0": _NUM_BAD + [(0.0, ValueError), (-1e-8, ValueError)],
    "unit": _NUM_BAD + [(1.5, ValueError), (-0.1, ValueError)],
    "unit_open": _NUM_BAD + [(1.0, ValueError), (-0.1, ValueError)],
    "real": _NUM_BAD,
    "bool": [("yes", TypeError), (1, TypeError), (None, TypeError), (0.0, TypeError)],
    "betas": BETAS_BAD,
    "etas": [((0.0, 1.2), ValueError), ((1.0, 1.2), ValueError), ((0.5, 1.0), ValueError),
             ((0.5, 0.9), ValueError), ((-0.5, 1.2), ValueError), ((0.5, _NAN), ValueError),
             ((0.5, _INF), ValueError), ((0.5,), ValueError), (0.5, ValueError),
             ((0.5, 1.2, 2.0), ValueError), (("a", 1.2), TypeError), ((None, 1.2), TypeError),
             ((True, 1.2), TypeError), ((lambda n: 0.5, 1.2), TypeError)],
    "step_sizes": [((-1e-6, 50.0), ValueError), ((1.0, 0.5), ValueError),
                   ((1e-6, _INF), ValueError), ((_NAN, 50.0), ValueError), ((1e-6,), ValueError),
                   (1e-6, ValueError), (("a", 50.0), TypeError), ((1e-6, None), TypeError),
                   ((False, 50.0), TypeError), ((1e-6, lambda n: 1.0), TypeError)],
    "betas3": [((1.0, 0.9, 0.99), ValueError), ((0.9, 0.9, 1.0), ValueError),
               ((0.9, -0.1, 0.99), ValueError), ((0.9, 0.9, _NAN), ValueError),
               ((0.9, 0.99), ValueError), (0.9, ValueError), ((0.9, 0.9, 0.9, 0.9), ValueError),
               (("a", 0.9, 0.9), TypeError), ((0.9, None, 0.9), TypeError),
               ((0.9, 0.9, True), TypeError)],
}


def bad_hyperparams(name):
    """(key, bad value, exception) for every hyperparameter of ``name``, from
    its table range."""
    return [(h.name, v, e) for h in TABLE[name].hparams for v, e in BAD_BY_CHECK[h.check]]


assert math.isnan(_NAN)
