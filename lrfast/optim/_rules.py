"""Row plans: for each optimizer of the table, the per-step scalars its kernel reads.

A rule turns a group's hyperparameters into its kernel's named row (the
fields of ``Kind.row_fields`` in :mod:`lrfast.optim._table`), computed in
double, once per step, exactly as written (the kernels and the numpy twins in
:mod:`lrfast._reference` round each value once to the param dtype):

- ``plan(hp)`` returns ``(fixed, step)``: ``fixed`` maps every one of the
  kind's ``fields`` to its value (it depends on the hyperparameters only), and
  ``step(key, lr)`` returns the ``step_fields`` values in table order plus the
  param's key after the step (its step count and any per-param history, such
  as NAdam's momentum product). The learning rate is an argument of ``step``,
  so a scheduled lr costs one call, not a new plan.
- ``alloc(p, hp)`` returns the state arrays (None where an option is off).
- ``check(hp, where)`` holds the cross-field rules that ranges cannot express.

Both the optimizer classes and :mod:`lrfast.kernels` use these rules.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .._validate import is_schedule, number, real, saved_scalar, step_count
from ._table import KINDS, MAX_STATES, TABLE

Key = Any
StepFn = Callable[[Key, float], Tuple[Tuple[float, ...], Key]]

__all__ = ["Rule", "RULES"]


def _head(hp: Dict[str, Any], decoupled: bool = False) -> Dict[str, float]:
    """gs (sign of maximize), wd and the L2 flag: every kind's first fields."""
    wd = hp["weight_decay"]
    l2 = 1.0 if (wd != 0 and not decoupled) else 0.0
    return {"gs": -1.0 if hp["maximize"] else 1.0, "wd": wd if wd != 0 else 0.0, "l2": l2}


def _dm(lr: float, wd: float, decoupled: bool) -> float:
    """Decoupled weight decay multiplier 1 - lr*wd (1 when off)."""
    return 1.0 - lr * wd if (decoupled and wd != 0) else 1.0


class Rule:
    """Base rule: a param's key is its step count."""
    name = ""
    initial_key: Key = 0

    def alloc(self, p: np.ndarray, hp: Dict[str, Any]) -> List[Optional[np.ndarray]]:
        z = [np.zeros_like(p) for _ in TABLE[self.name].states]
        return z + [None] * (MAX_STATES - len(z))

    def check(self, hp: Dict[str, Any], where: str) -> None:
        """Cross-field checks (ranges are checked from the table)."""

    def plan(self, hp: Dict[str, Any]) -> Tuple[Dict[str, float], StepFn]:
        raise NotImplementedError

    # per-param history beyond the step count (state_dict entries)
    def t_of(self, key: Key) -> int:
        return key

    def entry_extra(self, entry: Dict[str, Any], key: Key) -> None:
        pass

    def entry_key(self, t: int, e: Dict[str, Any], where: str) -> Key:
        return t

    # a global kind's engine-held state (Kind.global_state): its start from a
    # group's values, and its state_dict entries; global_shared: one set per
    # optimizer (group 0's), not per group
    global_shared = False

    def initial_global(self, hp0: Dict[str, Any]) -> Tuple[float, ...]:
        return ()

    def global_entry(self, values: Tuple[float, ...]) -> Dict[str, Any]:
        return {}

    def global_from_entry(self, e: Dict[str, Any], where: str) -> Tuple[float, ...]:
        return ()


class SGDRule(Rule):
    name = "SGD"
    initial_key = (0, False)         # (steps taken, momentum buffer started)

    def alloc(self, p, hp):
        mom = hp["momentum"]
        return [np.zeros_like(p) if (is_schedule(mom) or mom != 0) else None, None, None]

    def check(self, hp, where):
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            raise ValueError(f"{where}nesterov momentum requires momentum > 0 and zero "
                             f"dampening (momentum={hp['momentum']}, "
                             f"dampening={hp['dampening']})")

    def plan(self, hp):
        mu = hp["momentum"]
        mom = mu != 0
        fixed = dict(_head(hp), mu=mu, d1=1.0 - hp["dampening"], mom=float(mom),
                     nesterov=float(hp["nesterov"]))
        first = float(mom)

        def step(key, lr):
            t, started = key
            return (lr, 0.0 if started else first), (t + 1, started or mom)
        return fixed, step

    def t_of(self, key):
        return key[0]

    def entry_key(self, t, e, where):
        return (1, e.get("momentum_buffer") is not None)


class AdagradRule(Rule):
    name = "Adagrad"

    def alloc(self, p, hp):
        return [np.full_like(p, hp["initial_accumulator_value"]), None, None]

    def plan(self, hp):
        lr_decay = hp["lr_decay"]

        def step(t, lr):
            t += 1
            return (lr / (1 + (t - 1) * lr_decay),), t
        return dict(_head(hp), eps=hp["eps"]), step


def _bias_corrections(b1: float, b2: float) -> StepFn:
    """Step fields (1 - b1^t, 1 - b2^t, lr) in double, t the step count after this step."""
    def step(t, lr):
        t += 1
        return (1 - b1 ** t, 1 - b2 ** t, lr), t
    return step


def _plain_lr(t, lr):
    return (lr,), t + 1


def _first_lr(t, lr):
    """Step fields (lr, first) of a param at step count t (its first step copies
    the param: Prodigy's p0, DoG's x0, DAdaptSGD's z and x0)."""
    return (lr, 1.0 if t == 0 else 0.0), t + 1


class AdadeltaRule(Rule):
    name = "Adadelta"

    def plan(self, hp):
        rho = hp["rho"]
        return dict(_head(hp), rho=rho, c=1.0 - rho, eps=hp["eps"]), _plain_lr


class RMSpropRule(Rule):
    name = "RMSprop"

    def alloc(self, p, hp):
        mom = hp["momentum"]
        return [np.zeros_like(p),
                np.zeros_like(p) if (is_schedule(mom) or mom > 0) else None,
                np.zeros_like(p) if hp["centered"] else None]

    def plan(self, hp):
        a, mu = hp["alpha"], hp["momentum"]
        return dict(_head(hp), alpha=a, c=1.0 - a, eps=hp["eps"], mu=mu, mom=float(mu > 0),
                    centered=float(hp["centered"])), _plain_lr


class AdamRule(Rule):
    name = "Adam"
    decoupled = False

    def alloc(self, p, hp):
        return [np.zeros_like(p), np.zeros_like(p),
                np.zeros_like(p) if hp["amsgrad"] else None]

    def plan(self, hp):
        b1, b2 = hp["betas"]
        wd = hp["weight_decay"]
        dec = self.decoupled or bool(hp.get("decoupled_weight_decay", False))
        fixed = dict(_head(hp, dec), c1=1 - b1, b2=b2, c2=1 - b2, eps=hp["eps"],
                     decoupled=1.0 if (dec and wd != 0) else 0.0, amsgrad=float(hp["amsgrad"]))

        def step(t, lr):
            t += 1
            # bias corrections in double, once per step: lr/(1-b1^t), sqrt(1-b2^t)
            return (lr / (1 - b1 ** t), (1 - b2 ** t) ** 0.5, _dm(lr, wd, dec)), t
        return fixed, step


class AdamWRule(AdamRule):
    name = "AdamW"
    decoupled = True


class AdamaxRule(Rule):
    name = "Adamax"

    def plan(self, hp):
        b1, b2 = hp["betas"]

        def step(t, lr):
            t += 1
            return (lr / (1 - b1 ** t),), t
        return dict(_head(hp), c1=1 - b1, b2=b2, eps=hp["eps"]), step


class NAdamRule(Rule):
    name = "NAdam"
    initial_key = (0, 1.0)        # (step, mu_product)

    def plan(self, hp):
        b1, b2 = hp["betas"]
        md, wd = hp["momentum_decay"], hp["weight_decay"]
        dec = bool(hp["decoupled_weight_decay"])
        fixed = dict(_head(hp, dec), c1=1 - b1, b2=b2, c2=1 - b2, eps=hp["eps"],
                     decoupled=1.0 if (dec and wd != 0) else 0.0)

        def step(key, lr):
            t, mu_product = key
            t += 1
            mu = b1 * (1.0 - 0.5 * (0.96 ** (t * md)))
            mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * md)))
            mu_product = mu_product * mu
            den = 1.0 - mu_product * mu_next
            if 1.0 - mu_product == 0.0 or den == 0.0:
                raise ValueError(f"NAdam: momentum product {mu_product!r} makes the step "
                                 "divide by zero")
            cg = lr * (1.0 - mu) / (1.0 - mu_product)
            cm = lr * mu_next / den
            return (1 - b2 ** t, cg, cm, _dm(lr, wd, dec)), (t, mu_product)
        return fixed, step

    def t_of(self, key):
        return key[0]

    def entry_extra(self, entry, key):
        entry["mu_product"] = key[1]

    def entry_key(self, t, e, where):
        mp = e.get("mu_product", None)
        if isinstance(mp, np.ndarray) and mp.size == 1:
            mp = mp.item()
        try:
            mp = number(mp, "state 'mu_product'", f"{where}: ")
        except TypeError:
            raise ValueError(f"{where}: state 'mu_product' must be a finite number, "
                             f"got {mp!r}") from None
        if not 0.0 <= mp <= 1.0:
            raise ValueError(f"{where}: state 'mu_product' must be in [0, 1], got {mp!r}")
        return (t, mp)


class RAdamRule(Rule):
    name = "RAdam"

    def plan(self, hp):
        b1, b2 = hp["betas"]
        wd = hp["weight_decay"]
        dec = bool(hp["decoupled_weight_decay"])
        rho_inf = 2 / (1 - b2) - 1
        fixed = dict(_head(hp, dec), c1=1 - b1, b2=b2, c2=1 - b2, eps=hp["eps"],
                     decoupled=1.0 if (dec and wd != 0) else 0.0)

        def step(t, lr):
            t += 1
            bc1 = 1 - b1 ** t
            bc2 = 1 - b2 ** t
            rho_t = rho_inf - 2 * t * (b2 ** t) / bc2
            if rho_t > 5.0:
                rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                        / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                on = 1.0
            else:
                rect, on = 1.0, 0.0
            return (bc1, lr, bc2 ** 0.5, rect, on, _dm(lr, wd, dec)), t
        return fixed, step


class RpropRule(Rule):
    name = "Rprop"

    def plan(self, hp):
        em, ep = hp["etas"]
        smin, smax = hp["step_sizes"]
        fixed = dict(gs=-1.0 if hp["maximize"] else 1.0, etaminus=em, etaplus=ep, smin=smin,
                     smax=smax)

        def step(t, lr):
            # the first step starts every step size at lr (torch's full_like(grad, lr))
            return (lr, 1.0 if t == 0 else 0.0), t + 1
        return fixed, step


class ASGDRule(Rule):
    name = "ASGD"
    initial_key = (0, None, 1.0)     # (step, eta, mu): eta None until the first step (= lr)

    def plan(self, hp):
        lambd, alpha, t0 = hp["lambd"], hp["alpha"], hp["t0"]

        def step(key, lr):
            # torch: the update uses the eta and mu of the previous step (eta
            # starts at lr, mu at 1); then both are recomputed from the new step
            t, eta, mu = key
            if eta is None:
                eta = lr
            t += 1
            new_eta = lr / ((1 + lambd * lr * t) ** alpha)
            new_mu = 1 / max(1, t - t0)
            return (1 - lambd * eta, eta, mu, 1.0 if mu != 1 else 0.0), (t, new_eta, new_mu)
        return _head(hp), step

    def t_of(self, key):
        return key[0]

    def entry_extra(self, entry, key):
        entry["eta"] = key[1]
        entry["mu"] = key[2]

    def entry_key(self, t, e, where):
        return (t, saved_scalar(e.get("eta"), "eta", 0.0, None, where),
                saved_scalar(e.get("mu"), "mu", 0.0, 1.0, where, low_open=True))


class LionRule(Rule):
    name = "Lion"

    def plan(self, hp):
        b1, b2 = hp["betas"]
        fixed = dict(gs=1.0, wd=hp["weight_decay"], b1=b1, c1=1 - b1, b2=b2, c2=1 - b2)
        return fixed, _plain_lr


class AdaBeliefRule(Rule):
    name = "AdaBelief"

    def plan(self, hp):
        b1, b2 = hp["betas"]
        fixed = dict(gs=1.0, b1=b1, c1=1 - b1, b2=b2, c2=1 - b2, eps=hp["eps"],
                     eps_root=hp["eps_root"])
        return fixed, _bias_corrections(b1, b2)


class YogiRule(Rule):
    name = "Yogi"
    initial = 1e-6          # optax.yogi's initial_accumulator_value, for both moments

    def alloc(self, p, hp):
        return [np.full_like(p, self.initial), np.full_like(p, self.initial), None]

    def plan(self, hp):
        b1, b2 = hp["betas"]
        fixed = dict(gs=1.0, b1=b1, c1=1 - b1, c2=1 - b2, eps=hp["eps"])
        return fixed, _bias_corrections(b1, b2)


class ADOPTRule(Rule):
    name = "ADOPT"

    def plan(self, hp):
        b1, b2 = hp["betas"]
        fixed = dict(gs=1.0, b1=b1, c1=1 - b1, b2=b2, c2=1 - b2, eps=hp["eps"])

        def step(t, lr):
            # optax clips by clip_value_fn(count) = count**0.25, count = steps before this one
            return (1.0 if t == 0 else 0.0, float(t) ** 0.25, lr), t + 1
        return fixed, step


class AdanRule(Rule):
    name = "Adan"

    def plan(self, hp):
        b1, b2, b3 = hp["betas"]
        wd = hp["weight_decay"]
        fixed = dict(gs=1.0, b1=b1, c1=1 - b1, b2=b2, c2=1 - b2, b3=b3, c3=1 - b3,
                     eps=hp["eps"], eps_root=hp["eps_root"], wd=wd if wd != 0 else 0.0,
                     decay=float(wd != 0))

        def step(t, lr):
            first = 1.0 if t == 0 else 0.0
            t += 1
            return (first, 1 - b1 ** t, 1 - b2 ** t, 1 - b3 ** t, lr), t
        return fixed, step


class SparseAdamRule(Rule):
    """torch.optim.SparseAdam on the adam kind's row: only the fields the
    sparse kernel reads matter (gs, c1, c2, eps, step_size); step_size is
    torch's single lr*sqrt(1-b2^t)/(1-b1^t)."""
    name = "SparseAdam"

    def plan(self, hp):
        b1, b2 = hp["betas"]
        fixed = dict(gs=-1.0 if hp["maximize"] else 1.0, wd=0.0, l2=0.0, c1=1 - b1, b2=b2,
                     c2=1 - b2, eps=hp["eps"], decoupled=0.0, amsgrad=0.0)

        def step(t, lr):
            t += 1
            bc2 = 1 - b2 ** t
            return (lr * math.sqrt(bc2) / (1 - b1 ** t), bc2 ** 0.5, 1.0), t
        return fixed, step


class DiagonalNewtonRule(Rule):
    name = "DiagonalNewton"

    def plan(self, hp):
        return dict(_head(hp), damping=hp["damping"]), _plain_lr


class LambRule(Rule):
    name = "Lamb"

    def plan(self, hp):
        b1, b2 = hp["betas"]
        wd = hp["weight_decay"]
        fixed = dict(gs=1.0, b1=b1, c1=1 - b1, b2=b2, c2=1 - b2, eps=hp["eps"],
                     eps_root=hp["eps_root"], wd=wd, decay=1.0 if wd != 0 else 0.0)
        return fixed, _bias_corrections(b1, b2)


class LARSRule(Rule):
    name = "LARS"

    def plan(self, hp):
        wd = hp["weight_decay"]
        fixed = dict(gs=1.0, wd=wd, decay=1.0 if wd != 0 else 0.0,
                     tc=hp["trust_coefficient"], eps=hp["eps"], mom=hp["momentum"],
                     nesterov=float(hp["nesterov"]))
        return fixed, _plain_lr


class NovoGradRule(Rule):
    name = "NovoGrad"

    def plan(self, hp):
        b1, b2 = hp["betas"]
        wd = hp["weight_decay"]
        fixed = dict(gs=1.0, b1=b1, b2=b2, c2=1 - b2, eps=hp["eps"], eps_root=hp["eps_root"],
                     wd=wd, decay=1.0 if wd != 0 else 0.0)

        def step(t, lr):
            return (1.0 if t == 0 else 0.0, lr), t + 1
        return fixed, step


class _ScheduleFreeRule(Rule):
    """schedulefree's per-group scalars, kept per param in the key
    ``(k, lr_max, weight_sum)``: steps taken, the largest scheduled lr so far
    and the sum of the averaging weights (the references start at
    ``(0, -1.0, 0.0)``)."""
    initial_key = (0, -1.0, 0.0)

    def alloc(self, p, hp):
        # z starts as a copy of the param on its first step (the kernel's `first`)
        z = [np.zeros_like(p) for _ in TABLE[self.name].states]
        return z + [None] * (MAX_STATES - len(z))

    def sched_lr(self, hp, k, lr):
        """(scheduled lr, adapt) of step k + 1."""
        w = hp["warmup_steps"]
        return lr * ((k + 1) / w if k < w else 1.0), 1.0

    def beta1(self, hp):
        return hp["betas"][0]

    def plan(self, hp):
        wd = hp["weight_decay"]
        r, wlp, b1 = hp["r"], hp["weight_lr_power"], self.beta1(hp)
        fixed = dict(gs=1.0, wd=wd if wd != 0 else 0.0, decay=float(wd != 0))
        fixed.update(self.fixed(hp))

        def step(key, lr):
            k, lr_max, weight_sum = key
            lr_t, adapt = self.sched_lr(hp, k, lr)
            lr_max = max(lr_t, lr_max)
            try:
                weight = ((k + 1) ** r) * (lr_max ** wlp)
            except OverflowError:
                weight = math.inf
            weight_sum = weight_sum + weight
            if not math.isfinite(weight_sum):
                raise ValueError(f"{self.name}: the averaging weight (k+1)**r * "
                                 f"lr_max**weight_lr_power overflows at step {k + 1} "
                                 f"(r={r!r}, weight_lr_power={wlp!r}, lr_max={lr_max!r})")
            try:
                ckp1 = weight / weight_sum
            except ZeroDivisionError:
                ckp1 = 0.0
            cy = lr_t * (b1 * (1 - ckp1) - 1)
            sv = (1.0 if k == 0 else 0.0, ckp1, float(abs(ckp1) >= 0.5), cy, lr_t)
            return sv + self.more(hp, k, adapt), (k + 1, lr_max, weight_sum)
        return fixed, step

    def fixed(self, hp):
        return {}

    def more(self, hp, k, adapt):
        return ()

    def t_of(self, key):
        return key[0]

    def entry_extra(self, entry, key):
        entry["lr_max"] = key[1]
        entry["weight_sum"] = key[2]

    def entry_key(self, t, e, where):
        return (t, saved_scalar(e.get("lr_max"), "lr_max", -1.0, None, where),
                saved_scalar(e.get("weight_sum"), "weight_sum", 0.0, None, where))


class ScheduleFreeSGDRule(_ScheduleFreeRule):
    name = "ScheduleFreeSGD"

    def beta1(self, hp):
        return hp["momentum"]


class ScheduleFreeAdamWRule(_ScheduleFreeRule):
    name = "ScheduleFreeAdamW"

    def fixed(self, hp):
        b2 = hp["betas"][1]
        return dict(b2=b2, c2=1 - b2, eps=hp["eps"])

    def more(self, hp, k, adapt):
        return (1 - hp["betas"][1] ** (k + 1), adapt)


class ScheduleFreeRAdamRule(ScheduleFreeAdamWRule):
    name = "ScheduleFreeRAdam"

    def sched_lr(self, hp, k, lr):
        # RAdam's rectification as the lr; before rho_t > 4 the step is plain SGD,
        # at lr 0 with silent_sgd_phase
        b2 = hp["betas"][1]
        step = k + 1
        beta2_t = b2 ** step
        bias_correction2 = 1 - beta2_t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * step * beta2_t / bias_correction2
        if rho_t > 4.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        else:
            rect = float(not hp["silent_sgd_phase"])
        return lr * rect, 1.0 if rho_t > 4.0 else 0.0
class ProdigyRule(Rule):
    """prodigyopt.Prodigy 1.1.2. The fixed fields are the group's; the kernel's
    global function takes the betas, bias correction, d_coef, growth_rate and
    decouple of the first param's group (the reference reads group 0's). d,
    d_max, d_numerator and k are engine-held (``Kind.global_state``); a param's
    key is its step count (its first step copies p into p0)."""
    name = "Prodigy"
    global_shared = True

    def alloc(self, p, hp):
        b1 = hp["betas"][0]
        return [np.zeros_like(p), np.zeros_like(p),
                np.zeros_like(p) if b1 > 0 else None, np.zeros_like(p)]

    def plan(self, hp):
        b1, b2 = hp["betas"]
        b3 = hp["beta3"] if hp["beta3"] is not None else math.sqrt(b2)
        fixed = dict(gs=1.0, wd=hp["weight_decay"], decouple=float(hp["decouple"]),
                     eps=hp["eps"], d0=hp["d0"], safeguard=float(hp["safeguard_warmup"]),
                     b1=b1, b2=b2, b3=b3, bias=float(hp["use_bias_correction"]),
                     d_coef=hp["d_coef"], growth=hp["growth_rate"])
        return fixed, _first_lr

    # the engine-held global state: (d, d_max, d_numerator, k)
    def initial_global(self, hp0):
        return (hp0["d0"], hp0["d0"], 0.0, 0.0)

    def global_entry(self, values):
        d, d_max, num, k = values
        return {"d": d, "d_max": d_max, "d_numerator": num, "k": int(k)}

    def global_from_entry(self, e, where):
        d = real(e.get("d"), f"{where}: state 'd'", low=0.0, low_open=True)
        d_max = real(e.get("d_max"), f"{where}: state 'd_max'", low=0.0, low_open=True)
        num = real(e.get("d_numerator"), f"{where}: state 'd_numerator'")
        k = step_count(e.get("k"), f"{where}: state 'k'")
        return (d, d_max, num, float(k))


class _DAdaptRule(Rule):
    """dadaptation 3.2: d and its running sums are group 0's, engine-held
    (``Kind.global_state``, one set per optimizer, recorded in every state
    entry); a param's key is its step count."""
    global_shared = True

    @property
    def names(self):
        return KINDS[TABLE[self.name].kind].global_state

    def initial_global(self, hp0):
        return (hp0["d0"],) + (0.0,) * (len(self.names) - 1)

    def global_entry(self, values):
        e = dict(zip(self.names, values))
        e["k"] = int(e["k"])
        return e

    def global_from_entry(self, e, where):
        out = []
        for k in self.names:
            if k == "d":
                out.append(real(e.get(k), f"{where}: state 'd'", low=0.0, low_open=True))
            elif k == "k":
                out.append(float(step_count(e.get(k), f"{where}: state 'k'")))
            else:
                out.append(real(e.get(k), f"{where}: state {k!r}",
                                low=0.0 if k in ("g0_norm", "skl1") else None))
        return tuple(out)


class DAdaptAdamRule(_DAdaptRule):
    """dadaptation.DAdaptAdam: global (d, numerator_weighted, k)."""
    name = "DAdaptAdam"

    def plan(self, hp):
        b1, b2 = hp["betas"]
        fixed = dict(gs=1.0, wd=hp["weight_decay"], decouple=float(hp["decouple"]),
                     eps=hp["eps"], b1=b1, b2=b2, bias=float(hp["use_bias_correction"]),
                     growth=hp["growth_rate"], ls=hp["layer_scale"])
        return fixed, _plain_lr


class DAdaptSGDRule(_DAdaptRule):
    """dadaptation.DAdaptSGD: global (d, numerator_weighted, g0_norm, k); z and
    x0 copy the param at its first step."""
    name = "DAdaptSGD"

    def plan(self, hp):
        fixed = dict(gs=1.0, wd=hp["weight_decay"], mom=hp["momentum"],
                     growth=hp["growth_rate"])
        return fixed, _first_lr


class DAdaptAdaGradRule(_DAdaptRule):
    """dadaptation.DAdaptAdaGrad: global (d, gsq_weighted, sksq_weighted, skl1,
    k); alphak starts at 1e-6, x0 copies the param at its first step."""
    name = "DAdaptAdaGrad"

    def alloc(self, p, hp):
        return [np.full_like(p, 1e-6), np.zeros_like(p), np.zeros_like(p), None]

    def plan(self, hp):
        wd = hp["weight_decay"]
        fixed = dict(gs=1.0, wd=wd, decay=float(wd != 0), eps=hp["eps"],
                     momentum=hp["momentum"], growth=hp["growth_rate"])
        return fixed, _first_lr


class DoGRule(Rule):
    """dog.DoG 1.0.3: x0 per param (copied at its first step); rbar, G, eta
    per group, engine-held (G == 0: the group's first step)."""
    name = "DoG"

    def plan(self, hp):
        wd, ie = hp["weight_decay"], hp["init_eta"]
        fixed = dict(gs=1.0, wd=wd, decay=1.0 if wd > 0 else 0.0,
                     reps=0.0 if ie is not None else hp["reps_rel"], eps=hp["eps"],
                     has_init=1.0 if ie is not None else 0.0,
                     init_eta=ie if ie is not None else 0.0)
        return fixed, _first_lr

    def initial_global(self, hp0):
        return (0.0, 0.0, 0.0)

    def global_entry(self, values):
        return dict(zip(("rbar", "G", "eta"), values))

    def global_from_entry(self, e, where):
        return tuple(real(e.get(k), f"{where}: state {k!r}", low=0.0)
                     for k in ("rbar", "G", "eta"))


class LDoGRule(DoGRule):
    """dog.LDoG 1.0.3: rbar, G, eta per param (the kind's tensor_state)."""
    name = "LDoG"


RULES: Dict[str, Rule] = {r.name: r for r in (
    SGDRule(), AdagradRule(), AdadeltaRule(), RMSpropRule(), AdamRule(), AdamWRule(),
    AdamaxRule(), NAdamRule(), RAdamRule(), RpropRule(), ASGDRule(), LionRule(),
    AdaBeliefRule(), YogiRule(), ADOPTRule(), AdanRule(), LambRule(), LARSRule(), SparseAdamRule(),
    NovoGradRule(), DiagonalNewtonRule(), ScheduleFreeSGDRule(), ScheduleFreeAdamWRule(),
    ScheduleFreeRAdamRule(), ProdigyRule(), DoGRule(), LDoGRule(), DAdaptAdamRule(),
    DAdaptSGDRule(), DAdaptAdaGradRule())}



# ---------------------------------------------------------------------------
# Own steps (lrfast/optim/_own.py): the same plans, read by Python, not by an
# engine kernel (their fields are not a KINDS row).
# ---------------------------------------------------------------------------
class AdafactorRule(Rule):
    """torch.optim.Adafactor: row_var (..., n, 1) and col_var (..., 1, m) for
    ndim >= 2, variance (the param's shape) otherwise."""
    name = "Adafactor"

    def alloc(self, p, hp):
        if p.ndim >= 2:
            return [np.zeros(p.shape[:-1] + (1,), p.dtype),
                    np.zeros(p.shape[:-2] + (1,) + p.shape[-1:], p.dtype), None, None]
        return [None, None, np.zeros_like(p), None]

    def plan(self, hp):
        b2d, wd = hp["beta2_decay"], hp["weight_decay"]
        eps1, eps2 = hp["eps"]
        fixed = dict(gs=-1.0 if hp["maximize"] else 1.0, eps1=eps1, eps2=eps2, d=hp["d"],
                     decay=float(wd != 0))

        def step(t, lr):
            # torch: 1 - beta2_t = t**beta2_decay, rho_t = min(lr, 1/sqrt(t))
            t += 1
            return (float(t) ** b2d, min(lr, 1 / (float(t) ** 0.5)), 1.0 - lr * wd), t
        return fixed, step


class MuonRule(Rule):
    """torch.optim.Muon: one momentum buffer per (2-D) param."""
    name = "Muon"

    def alloc(self, p, hp):
        return [np.zeros_like(p), None, None, None]

    def plan(self, hp):
        m = hp["momentum"]
        fixed = dict(w=1.0 - m, momentum=m, nesterov=hp["nesterov"],
                     coefficients=hp["ns_coefficients"], ns_steps=hp["ns_steps"],
                     eps=hp["eps"], adjust=hp["adjust_lr_fn"])
        wd = hp["weight_decay"]

        def step(t, lr):
            return (lr, 1.0 - lr * wd), t + 1
        return fixed, step


RULES.update({r.name: r for r in (AdafactorRule(), MuonRule())})

assert set(RULES) == {s for s in TABLE}, "every table row has a rule"


def distinct_keys(keys: List[Key], group_of: List[int], ngroups: int,
                  initial_key: Key) -> Tuple[List[List[Key]], List[int]]:
    """Per-param keys -> each group's distinct keys (in first-seen order; a
    group without params gets ``initial_key``) and each param's index into
    its group's list: params with equal keys share one kernel row."""
    ukeys: List[List[Key]] = [[] for _ in range(ngroups)]
    seen: List[Dict[Key, int]] = [{} for _ in range(ngroups)]
    cls = []
    for i, key in enumerate(keys):
        g = group_of[i]
        c = seen[g].get(key)
        if c is None:
            c = seen[g][key] = len(ukeys[g])
            ukeys[g].append(key)
        cls.append(c)
    for u in ukeys:
        if not u:
            u.append(initial_key)
    return ukeys, cls


def build_row(name: str, hp: Dict[str, Any], key: Key) -> Tuple[Tuple[float, ...], Key]:
    """Optimizer ``name``'s complete kernel row for (validated) ``hp`` at ``key``,
    and the key after the step: the fixed fields in table order, then the
    step fields."""
    fixed, step = RULES[name].plan(hp)
    kind = KINDS[TABLE[name].kind]
    sv, k2 = step(key, hp["lr"])
    return tuple(float(fixed[f]) for f in kind.fields) + tuple(sv), k2
