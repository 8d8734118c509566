"""Optimizers: the thin Python layer over the fused kernels.

Every optimizer is one row of the table in :mod:`lrfast.optim._table`, one row
plan in :mod:`lrfast.optim._rules` and one loop in the kernels; its class here
is a name and a docstring, with the signature and defaults derived from its
table row. Update rules are torch.optim 2.13's documented algorithms; each has a
plain-numpy twin in :mod:`lrfast._reference` that the kernels equal bit for bit.
"""
from __future__ import annotations

from ._base import (FORMAT, GroupPlan, Optimizer, ParamGroup, check_header, make_init,
                    parse_groups, state_index)
from .._validate import check_param
from ._table import KINDS, TABLE, HP, Kind, Spec, optimizers
from ._sparse import RowSparse

__all__ = ["Lamb", "LARS", "NovoGrad", "Prodigy", "DoG", "LDoG", "DAdaptAdam", "DAdaptSGD",
           "DAdaptAdaGrad",
           "Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW",
           "Adamax", "NAdam", "RAdam", "Rprop", "ASGD", "Lion", "AdaBelief", "Yogi", "ADOPT",
           "Adan", "Adafactor", "Muon", "SparseAdam", "ScheduleFreeSGD", "ScheduleFreeAdamW",
           "ScheduleFreeRAdam", "RowSparse", "ParamGroup", "TABLE",
           "optimizers", "make_init",
           "check_param"]


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum (torch.optim.SGD).

    The learning rate as step size, with momentum "analogous to a ball rolling
    down a hill" (Wikipedia, "Learning rate"; Polyak 1964, Sutskever et al.
    2013). Per element, in torch's order::

        g = -g if maximize;  g += wd*p
        if momentum != 0:
            b = g (first step with momentum) else b = momentum*b + (1-dampening)*g
            g = g + momentum*b if nesterov else b
        p -= lr*g

    Examples
    --------
    >>> import numpy as np, lrfast
    >>> w = np.zeros(3, np.float32)
    >>> opt = lrfast.SGD([w], lr=0.1, momentum=0.9)
    >>> opt.step([np.ones(3, np.float32)]); w
    True
    array([-0.1, -0.1, -0.1], dtype=float32)
    """
    spec = TABLE["SGD"]
    __init__ = make_init(spec)

class Adagrad(Optimizer):
    r"""Adagrad (torch.optim.Adagrad): per-parameter rates from the sum of squared grads.

    ::

        clr = lr / (1 + (t-1)*lr_decay);  g += wd*p;  s += g*g
        p -= clr * g / (sqrt(s) + eps)          # s starts at initial_accumulator_value
    """
    spec = TABLE["Adagrad"]
    __init__ = make_init(spec)

class Adadelta(Optimizer):
    r"""Adadelta (torch.optim.Adadelta), eps inside the square roots.

    ::

        g += wd*p;  v = rho*v + (1-rho)*g*g
        d = sqrt(u + eps) / sqrt(v + eps) * g;  u = rho*u + (1-rho)*d*d;  p -= lr*d
    """
    spec = TABLE["Adadelta"]
    __init__ = make_init(spec)

class RMSprop(Optimizer):
    r"""RMSprop (torch.optim.RMSprop), optionally centered and with momentum.

    ::

        g += wd*p;  v = alpha*v + (1-alpha)*g*g
        centered: a += (1-alpha)*(g-a);  w = v - a*a   else w = v
        momentum > 0: b = momentum*b + g/(sqrt(w)+eps);  p -= lr*b
        else: p -= lr*g/(sqrt(w)+eps)
    """
    spec = TABLE["RMSprop"]
    __init__ = make_init(spec)

class Adam(Optimizer):
    r"""Adam (torch.optim.Adam), with amsgrad; L2 weight decay, or decoupled weight
    decay with ``decoupled_weight_decay=True`` (then equal to ``AdamW``).

    ::

        g += wd*p   (decoupled: p *= 1 - lr*wd)
        m += (1-beta1)*(g-m);  v = beta2*v + (1-beta2)*g*g;  amsgrad: vmax = max(vmax, v)
        p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)

    Bias corrections are computed once per step in double. Any of lr, betas[0],
    betas[1], weight_decay may be a schedule; bias correction then uses the
    current beta (as torch).
    """
    spec = TABLE["Adam"]
    __init__ = make_init(spec)

class AdamW(Optimizer):
    r"""AdamW (torch.optim.AdamW): Adam with decoupled weight decay ``p *= 1 - lr*wd``
    (default weight_decay 1e-2)."""
    spec = TABLE["AdamW"]
    __init__ = make_init(spec)

class Adamax(Optimizer):
    r"""Adamax (torch.optim.Adamax): Adam with an infinity norm.

    ::

        g += wd*p;  m += (1-beta1)*(g-m);  u = max(beta2*u, |g| + eps)
        p -= lr/(1-beta1^t) * m / u
    """
    spec = TABLE["Adamax"]
    __init__ = make_init(spec)

class NAdam(Optimizer):
    r"""NAdam (torch.optim.NAdam): Adam with Nesterov momentum and momentum decay.

    ::

        mu_t = beta1*(1 - 0.5*0.96^(t*momentum_decay));  mu_{t+1} likewise
        g += wd*p (or p *= 1 - lr*wd with decoupled_weight_decay)
        m += (1-beta1)*(g-m);  v = beta2*v + (1-beta2)*g*g;  d = sqrt(v/(1-beta2^t)) + eps
        p -= lr*(1-mu_t)/(1-prod mu) * g/d;  p -= lr*mu_{t+1}/(1-prod mu * mu_{t+1}) * m/d
    """
    spec = TABLE["NAdam"]
    __init__ = make_init(spec)

class RAdam(Optimizer):
    r"""RAdam (torch.optim.RAdam): Adam with variance rectification.

    ::

        rho_inf = 2/(1-beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1-beta2^t)
        m_hat = m/(1-beta1^t)
        rho_t > 5: p -= m_hat*lr * (1/(sqrt(v)+eps) * sqrt(1-beta2^t)) * r_t   else p -= m_hat*lr
    """
    spec = TABLE["RAdam"]
    __init__ = make_init(spec)

class Rprop(Optimizer):
    r"""Rprop (torch.optim.Rprop): per-element step sizes from the signs of successive grads.

    ::

        s = sign(g*prev);  f = etaplus (s > 0), etaminus (s < 0), 1 (s == 0)
        step_size = clamp(step_size*f, step_sizes[0], step_sizes[1])   # starts at lr
        g = 0 where s < 0;  p -= sign(g)*step_size;  prev = g

    ``etas`` and ``step_sizes`` are pairs of numbers, not schedules; ``lr`` is
    read only on a param's first step (as torch).
    """
    spec = TABLE["Rprop"]
    __init__ = make_init(spec)

class ASGD(Optimizer):
    r"""ASGD (torch.optim.ASGD): averaged stochastic gradient descent.

    Per param, with the ``eta`` and ``mu`` of the previous step (``eta`` starts
    at lr, ``mu`` at 1), in torch's order::

        g += wd*p;  p *= 1 - lambd*eta;  p -= eta*g
        ax += (p - ax)*mu   (ax = p while mu == 1)
        eta = lr / (1 + lambd*lr*t)^alpha;  mu = 1 / max(1, t - t0)

    ``ax`` holds the average; ``eta`` and ``mu`` are per-param numbers in the
    state_dict, as torch.
    """
    spec = TABLE["ASGD"]
    __init__ = make_init(spec)

class Lion(Optimizer):
    r"""Lion (``optax.lion``): the sign of an interpolated momentum.

    ``Lion(params, lr, betas=(b1, b2), weight_decay)`` is
    ``optax.lion(learning_rate=lr, b1=b1, b2=b2, weight_decay=weight_decay)``
    (optax's default weight_decay is 1e-3, lrfast's 0, as torch's
    optimizers); the state ``exp_avg`` is optax's ``mu``. Per element::

        c = (1-b1)*g + b1*m;  p -= lr*(sign(c) + wd*p);  m = (1-b2)*g + b2*m

    The weight decay term is skipped when weight_decay is 0, as optax.
    """
    spec = TABLE["Lion"]
    __init__ = make_init(spec)


class AdaBelief(Optimizer):
    r"""AdaBelief (optax.adabelief): Adam whose second moment is the EMA of the
    squared deviation of the grad from its running mean.
    ::

        m = (1-beta1)*g + beta1*m;  s = (1-beta2)*(g-m)^2 + beta2*s + eps_root
        p -= lr * (m/(1-beta1^t)) / (sqrt(s/(1-beta2^t)) + eps)

    ``exp_avg`` and ``exp_avg_sq`` are Optax's ``mu`` and ``nu`` (``nu`` includes
    ``eps_root``, as Optax stores it).
    """
    spec = TABLE["AdaBelief"]
    __init__ = make_init(spec)


class Yogi(Optimizer):
    r"""Yogi (optax.yogi): Adam with an additive second-moment update.
    ::

        m = (1-beta1)*g + beta1*m;  v = v - (1-beta2)*sign(v - g*g)*g*g
        p -= lr * (m/(1-beta1^t)) / (sqrt(v/(1-beta2^t)) + eps)

    Both moments start at 1e-6 (Optax's ``initial_accumulator_value``);
    ``exp_avg``/``exp_avg_sq`` are Optax's ``mu``/``nu``.
    """
    spec = TABLE["Yogi"]
    __init__ = make_init(spec)


class ADOPT(Optimizer):
    r"""ADOPT (optax.contrib.adopt with its defaults: clipping on, no Nesterov).
    ::

        t = 1:  v = g*g  (the param does not move)
        t > 1:  u = clip(g / max(sqrt(v), eps), -(t-1)^0.25, (t-1)^0.25)
                v = (1-beta2)*g*g + beta2*v;  m = (1-beta1)*u + beta1*m;  p -= lr*m

    The grad is normalized by the second moment of the previous steps.
    ``exp_avg``/``exp_avg_sq`` are Optax's ``mu``/``nu``.
    """
    spec = TABLE["ADOPT"]
    __init__ = make_init(spec)


class Adan(Optimizer):
    r"""Adan (optax.adan): adaptive Nesterov momentum from the grad and its change.
    ::

        d = g - g_prev (0 on the first step);  m = (1-beta1)*g + beta1*m
        v = (1-beta2)*d + beta2*v;  q = g + (1-beta2)*d;  n = (1-beta3)*q*q + beta3*n
        u = (m/(1-beta1^t) + (1-beta2)*v/(1-beta2^t)) / (sqrt(n/(1-beta3^t) + eps_root) + eps)
        p -= lr * (u + weight_decay*p)

    Four state arrays: ``exp_avg``, ``exp_avg_diff``, ``exp_avg_sq`` and
    ``prev_grad`` are Optax's ``m``, ``v``, ``n`` and ``g``.
    """
    spec = TABLE["Adan"]
    __init__ = make_init(spec)



class Lamb(Optimizer):
    r"""LAMB (optax.lamb): Adam's update scaled per tensor by a trust ratio.
    ::

        m = (1-beta1)*g + beta1*m;  v = (1-beta2)*g*g + beta2*v
        u = (m/(1-beta1^t)) / (sqrt(v/(1-beta2^t) + eps_root) + eps) + weight_decay*p
        p -= lr * (||p|| / ||u||) * u          (ratio 1 where either norm is 0)

    The norms come from a read-only pass over the tensor before the update
    (fixed blocks and lanes: bitwise the same on every thread count).
    ``exp_avg``/``exp_avg_sq`` are Optax's ``mu``/``nu``.
    """
    spec = TABLE["Lamb"]
    __init__ = make_init(spec)


class LARS(Optimizer):
    r"""LARS (optax.lars, its default masks: every param): layer-wise adaptive
    rate scaling of SGD with momentum.
    ::

        u = g + weight_decay*p
        u = -lr * trust_coefficient * ||p|| / (||u|| + eps) * u   (ratio 1 where a norm is 0)
        trace = u + momentum*trace;  p += trace    (nesterov: p += u + momentum*trace)

    ``lr`` has no default, as in Optax. ``trace`` is Optax's trace: the
    momentum of the lr-scaled update, with its sign.
    """
    spec = TABLE["LARS"]
    __init__ = make_init(spec)


class NovoGrad(Optimizer):
    r"""NovoGrad (optax.novograd): a second moment per tensor, of the grad norm.
    ::

        nu = ||g||^2 (first step), then (1-beta2)*||g||^2 + beta2*nu
        u = g / (sqrt(nu + eps_root) + eps) + weight_decay*p
        m = u (first step), then beta1*m + u;  p -= lr*m

    ``nu`` (one number per tensor) appears in each param's state entry.
    """
    spec = TABLE["NovoGrad"]
    __init__ = make_init(spec)


class _OneD(Optimizer):
    """Prodigy and D-Adaptation: one step size d per optimizer (group 0's in
    the reference), engine-held; ``_same_lr``: every group's lr must be the
    largest one or 0, as the reference checks."""
    _same_lr = True

    @property
    def d(self) -> float:
        """The step-size estimate the next step uses (one value for all groups)."""
        return float(self._engine.global_state()[0])

    def step(self, grads, _aux=None, **kw):   # type: ignore[override]
        """As :meth:`Optimizer.step`; first checks, as the reference, that every
        group's lr is the largest one or 0 (before any write)."""
        self._check_lrs()
        return Optimizer.step(self, grads, _aux, **kw)

    def _step(self, grads, aux=None, norm_hook=None, ema=-1.0, sums_hook=None):
        self._check_lrs()          # the distributed wrapper's and EMA's path too
        return Optimizer._step(self, grads, aux, norm_hook, ema, sums_hook)

    def _check_lrs(self) -> None:
        if self._same_lr and len(self._plans) > 1:
            lrs = [hp["lr"] for hp in self._hyperparams()]
            top = max(lrs)
            bad = [i for i, x in enumerate(lrs) if x not in (top, 0.0)]
            if bad:
                raise ValueError(f"group {bad[0]}: {type(self).__name__}'s groups share one "
                                 f"step size: each lr must be the largest ({top}) or 0, got "
                                 f"{lrs[bad[0]]}")


class Prodigy(_OneD):
    r"""Prodigy (prodigyopt.Prodigy 1.1.2): Adam with a step size d estimated
    from the run; ``lr`` (default 1) multiplies it.
    ::

        dlr = d*lr*bc    (bc = sqrt(1-b2^(k+1))/(1-b1^(k+1)) with use_bias_correction, else 1)
        m = b1*m + d*(1-b1)*g;  v = b2*v + d^2*(1-b2)*g^2
        s = b3*s + (d/d0)*dlr*g   (safeguard_warmup: (d/d0)*d*g)
        d_numerator = b3*d_numerator + sum over params (d/d0)*dlr*<g, p0 - p>
        d_hat = d_coef * d_numerator / sum over params ||s||_1
        d = max(d, d_hat) while d == d0;  d_max = max(d_max, d_hat)
        d = min(d_max, d*growth_rate)
        p = p - weight_decay*dlr*p (decouple);  p = p - dlr * m/(sqrt(v) + d*eps)

    The sums run over every param of every group, in the engine's
    deterministic read-only pass (fixed blocks, double accumulators, tensors
    combined in order): the same bits for any thread count. The update needs
    the new d, so a step is two passes over memory: the read-only pass reads
    g, p, p0 and s; the update reads g, p, s, exp_avg, exp_avg_sq and writes
    p, s, exp_avg, exp_avg_sq (p0 once, at a param's first step).

    d, d_max, d_numerator and k are one set per optimizer (the reference
    copies them into every param group), recorded in every state entry;
    ``opt.d`` is the d the next step uses. As the reference, the betas,
    beta3, use_bias_correction, d_coef, growth_rate and decouple of the
    first group are used for all groups; weight_decay, eps, d0,
    safeguard_warmup and lr are per group (a group's lr must be the largest
    group lr, or 0).

    Differences from the reference: the grads are never modified (the
    reference adds the L2 term into ``p.grad``); ``s`` and ``p0`` are kept in
    the param's shape (the reference flattens them); only ``slice_p=1`` is
    implemented (others raise NotImplementedError); a param's step count
    advances on a step whose d could not be estimated (all of ``s`` zero:
    the reference then updates the moments, skips the params, and keeps its
    step count). Distributed (:class:`lrfast.distributed.DistributedOptimizer`,
    sharded or not), the sums are global across ranks and bit-identical to
    one process's.
    """
    spec = TABLE["Prodigy"]
    __init__ = make_init(spec)

    def _plan_load(self, sd):
        # exp_avg may be absent only where the saved group has betas[0] == 0 (the
        # reference keeps none then); an entry lacking it for beta1 > 0 is
        # malformed (it would resume from a zero first moment)
        plan = super()._plan_load(sd)
        plans, entries = plan[0], plan[1]
        j = self.spec.states.index("exp_avg")
        for i, e in entries.items():
            if (e[0][j] is None and self._states[i][j] is not None
                    and plans[self._group_of[i]].static["betas"][0] > 0):
                raise ValueError(f"{self._where(i)}: state lacks 'exp_avg' (needed with "
                                 "betas[0] > 0)")
        return plan


_DADAPT_COMMON = """
    The sums run over every param of every group in the engine's deterministic
    read-only pass (fixed blocks, double accumulators, tensors combined in
    order as the reference's per-tensor ``.item()`` sums): the same bits for
    any thread count. A step is two passes over memory: the sums, then the
    update (the reference skips the update when its norm of ``s`` is 0, which
    the sums decide). d and the running sums are one set per optimizer (the
    reference copies them into every group), recorded in every state entry;
    ``opt.d`` is the d the next step uses.

    Differences from the reference: the grads are never modified (the
    reference adds the L2 term into ``p.grad``); ``log_every`` must be 0 (lrfast
    does not log; read ``opt.d``) and ``fsdp_in_use`` False, others raise
    NotImplementedError; a param's step count advances on a step the reference
    skips. Distributed (:class:`lrfast.distributed.DistributedOptimizer`,
    sharded or not), the sums are global across ranks and bit-identical to
    one process's.
"""


class DAdaptAdam(_OneD):
    __doc__ = r"""DAdaptAdam (dadaptation.DAdaptAdam 3.2): Adam with D-Adaptation's
    step size d estimated from the run; ``lr`` (default 1) multiplies it.
    ::

        dlr = d*lr*bc   (bc = sqrt(1-b2^(k+1))/(1-b1^(k+1)) with use_bias_correction, else 1)
        g = g + weight_decay*p   (decouple=False)
        num = sum over params layer_scale*dlr*<g, s/(sqrt(v) + eps)>   (old s, v)
        m = b1*m + layer_scale*dlr*(1-b1)*g;  v = b2*v + (1-b2)*g^2
        s = sqrt(b2)*s + dlr*(1-sqrt(b2))*g
        numerator_weighted = sqrt(b2)*numerator_weighted + (1-sqrt(b2))*num
        d_hat = numerator_weighted / ((1-sqrt(b2)) * sum layer_scale*||s||_1)
        d = max(d, min(d_hat, d*growth_rate))
        p = p - weight_decay*dlr*p (decouple);  p = p - m/(sqrt(v) + eps)

    As the reference, the betas, use_bias_correction, decouple and
    growth_rate of the first group are used for all groups; weight_decay,
    eps, layer_scale and lr are per group (a group's lr must be the largest
    group lr, or 0: a group with lr 0 takes no part in d and keeps its
    moments, but still steps with them). ``layer_scale`` is the reference's
    per-group key (default 1), here also a keyword.
""" + _DADAPT_COMMON
    spec = TABLE["DAdaptAdam"]
    __init__ = make_init(spec)


class DAdaptSGD(_OneD):
    __doc__ = r"""DAdaptSGD (dadaptation.DAdaptSGD 3.2): SGD dual averaging with
    D-Adaptation's step size d estimated from the run; ``lr`` (default 1)
    multiplies it.
    ::

        g0_norm = ||g|| over all params at the first step (without weight decay)
        dlr = d*lr/g0_norm;  g = g + weight_decay*p
        numerator_weighted += dlr*<g, s>  (old s, per param in order)
        s = s + dlr*g;  d_hat = 2*numerator_weighted / ||s||   (over all params)
        d = max(d, min(d_hat, d*growth_rate))
        z = x0 - s;  p = p*(1-ck) + ck*z   (ck = 1 - momentum; x0 = the first p)

    As the reference, the weight_decay, momentum and growth_rate of the first
    group are used for all groups; a group's lr must be the largest group lr,
    or 0 (such a group takes no part in d and keeps its ``s``, but still
    moves to ``z``). The first step's ``||s||^2`` is ``dlr^2 * ||g||^2``
    (``s`` is 0 there: one pass instead of two; the reference squares
    ``dlr*g``, a last-bit difference). Where the reference divides by zero
    (all grads zero at the first step, all lrs 0), the step changes no
    param.
""" + _DADAPT_COMMON
    spec = TABLE["DAdaptSGD"]
    __init__ = make_init(spec)


class DAdaptAdaGrad(_OneD):
    __doc__ = r"""DAdaptAdaGrad (dadaptation.DAdaptAdaGrad 3.2): AdaGrad dual
    averaging with D-Adaptation's step size d estimated from the run.
    ::

        dlr = d*lr;  g = g + weight_decay*p
        alphak = alphak + g^2  (alphak starts at 1e-6);  s = s + dlr*g
        sksq_weighted += sum s^2/(sqrt(alphak) + eps) (new minus old, per param)
        skl1 += sum |s| (new minus old);  gsq_weighted += dlr^2 * sum g^2/(sqrt(alphak) + eps)
        d_hat = (sksq_weighted - gsq_weighted) / skl1;  d = max(d, min(d_hat, d*growth_rate))
        z = x0 - s/(sqrt(alphak) + eps);  p = p*(1-ck) + ck*z (momentum), else z

    As the reference, the lr, momentum and growth_rate of the first group are
    used for all groups (the other groups' lr is not read); weight_decay and
    eps are per group. The new-minus-old sums are summed per element (the
    reference subtracts the two sums of each param: a last-bit difference).
    Only dense grads (the reference's sparse branch is not reproduced).
""" + _DADAPT_COMMON
    _same_lr = False
    spec = TABLE["DAdaptAdaGrad"]
    __init__ = make_init(spec)

class DoG(Optimizer):
    r"""DoG (dog.DoG 1.0.3): SGD whose step size is the distance travelled over
    the root of the summed squared grads, per group.
    ::

        g = g + weight_decay*p
        rbar = reps_rel*(1 + ||x0||) at the first step, then max(rbar, ||p - x0||)
        G = sum ||g||^2 + eps (first step), then G + sum ||g||^2
        eta = lr * rbar / sqrt(G)   (init_eta, if given, at the first step)
        p = p - eta*g

    The norms run over the group's params with a grad, in the engine's
    deterministic read-only pass (the same bits for any thread count); the
    update needs eta, so a step is two passes: the sums read p, x0 and g, the
    update reads p and g and writes p (and x0 at a param's first step).
    rbar, G and eta are per group, recorded in the state entry of each of its
    params; ``opt.d`` is the eta of the last step (a float for one group, else
    a list per group), the reference's ``group['eta']``.

    Differences from the reference: grads are never modified (the reference
    adds the weight decay into ``p.grad``); ``None`` grads are allowed (their
    params take no part in the norms, and their x0 is taken at their first
    step with a grad; the reference fails on them); the first step is a
    group's own (G == 0), not the optimizer's. Distributed, the norms are
    global across ranks and bit-identical to one process's. Iterate
    averaging, which the reference recommends, is :class:`lrfast.EMA`'s (its
    polynomial averager is not reproduced).
    """
    spec = TABLE["DoG"]
    __init__ = make_init(spec)

    @property
    def d(self):
        """The eta of the last step: a float for one group, else a list per group."""
        etas = [float(self._engine.global_state(g)[2]) for g in range(len(self._plans))]
        return etas[0] if len(etas) == 1 else etas


class LDoG(Optimizer):
    r"""LDoG (dog.LDoG 1.0.3): DoG with rbar, G and eta per param (layer-wise).
    Each param's norms come from the engine's deterministic read-only pass;
    rbar, G and eta are recorded in its state entry; ``opt.d`` is the list of
    the last step's eta per param. Differences from the reference: as
    :class:`DoG`.
    """
    spec = TABLE["LDoG"]
    __init__ = make_init(spec)

    @property
    def d(self):
        """The eta of the last step, per param (a list)."""
        return [float(ts[2]) for ts in self._engine.tensor_state()]


from ._own import Adafactor, Muon  # noqa: E402  (own steps: factored state, matrices)

class SparseAdam(Optimizer):
    r"""SparseAdam (torch.optim.SparseAdam): lazy Adam for row-sparse grads.

    Grads are :class:`lrfast.RowSparse` (rows ``indices`` of the param; repeated
    indices are summed), or None; a dense grad is refused, as torch does (use
    :class:`Adam`). Only the touched rows of the param and of its moments
    change, and a step costs O(rows touched), not O(param). Per touched row,
    in torch's order, with t the param's step count::

        g = -g if maximize
        m += (1-beta1)*(g - m);  v += (1-beta2)*(g*g - v)
        p -= lr*sqrt(1-beta2^t)/(1-beta1^t) * m/(sqrt(v) + eps)

    ``max_grad_norm`` is not supported with row-sparse grads.
    """
    spec = TABLE["SparseAdam"]
    __init__ = make_init(spec)


from ._schedulefree import ScheduleFreeOptimizer  # noqa: E402

_SF_NOTES = """
    Schedule-free: no learning-rate schedule; the params hold ``y`` (where grads
    are taken) and state ``z`` the base sequence; ``opt.eval()`` moves the
    params to the average ``x`` (evaluate and checkpoint there), ``opt.train()``
    back, exactly as the reference does; ``step`` in eval mode raises
    RuntimeError. ``k``, ``lr_max`` and ``weight_sum``, per group in the
    reference, are kept per param (state ``step``, ``lr_max``, ``weight_sum``):
    they are the same while every param gets a grad every step; a param whose
    grad is None does not advance them. The state_dict records the mode
    (``train_mode`` in each param group) and resumes exactly from either mode.

    Differences from the reference: the reference overwrites ``p.grad`` with
    the normalized grad; lrfast never modifies grads. The reference starts in
    eval mode and refuses a step before ``train()``; lrfast starts in train
    mode (the same thing: before the first step ``train()`` moves nothing).
    ``z`` is set to the param at the param's first step, as the reference
    does.
"""


class ScheduleFreeSGD(ScheduleFreeOptimizer):
    r"""Schedule-free SGD (schedulefree.SGDScheduleFree 1.4.1).

    Per step, with k the steps taken, in the reference's order::

        lr_t = lr * min(1, (k+1)/warmup_steps);  lr_max = max(lr_max, lr_t)
        weight = (k+1)**r * lr_max**weight_lr_power;  weight_sum += weight
        ckp1 = weight/weight_sum (0 if weight_sum == 0)
        g += weight_decay*y
        y = lerp(y, z, ckp1);  y += lr_t*(momentum*(1-ckp1) - 1)*g;  z -= lr_t*g
    """ + _SF_NOTES
    spec = TABLE["ScheduleFreeSGD"]
    __init__ = make_init(spec)


class ScheduleFreeAdamW(ScheduleFreeOptimizer):
    r"""Schedule-free AdamW (schedulefree.AdamWScheduleFree 1.4.1).

    Per step, as :class:`ScheduleFreeSGD` with beta1 as the momentum and the
    grad normalized first (no first moment: y's interpolation is the momentum)::

        v = beta2*v + (1-beta2)*g*g;  g = g / (sqrt(v/(1-beta2^(k+1))) + eps)
    """ + _SF_NOTES
    spec = TABLE["ScheduleFreeAdamW"]
    __init__ = make_init(spec)


class ScheduleFreeRAdam(ScheduleFreeOptimizer):
    r"""Schedule-free RAdam (schedulefree.RAdamScheduleFree 1.4.1).

    As :class:`ScheduleFreeAdamW` without warmup: the lr is scaled by RAdam's
    rectification, and while rho_t <= 4 the grad is not normalized and the lr
    is 0 (``silent_sgd_phase=True``) or the plain lr.
    """ + _SF_NOTES
    spec = TABLE["ScheduleFreeRAdam"]
    __init__ = make_init(spec)


_ = (FORMAT, GroupPlan, check_header, parse_groups, state_index, KINDS, HP, Kind, Spec)
