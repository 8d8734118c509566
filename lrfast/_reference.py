"""Plain-numpy twins of every update rule: the "slow" reference the kernels are
tested against, bit for bit.

Written from torch.optim 2.13's documented algorithms, in torch's order.
Per-step scalars are computed
in Python floats (double), then rounded ONCE to the param dtype (``T(x)``);
every array operation is a numpy ufunc in the param's dtype, one operation at a
time, so numpy's rounding equals the kernels' (compiled without contraction).

Each function updates ``p`` and ``state`` in place for one step of one tensor.
``step`` is the param's step count after this step (t = 1 on the first step).
``grad_scale`` is the clipping factor (1.0 when not clipping).
"""
import math

import numpy as np

__all__ = ["init_state", "sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamax", "nadam",
           "radam", "rprop", "asgd", "lion", "adabelief", "yogi", "adopt", "adan",
           "lamb", "lars", "novograd", "tensor_sumsq", "tensor_sum", "prodigy",
           "dadapt_state", "dadapt_global", "dadapt_adam", "dadapt_sgd", "dadapt_adagrad",
           "prodigy_state", "prodigy_global", "dog",
           "sf_sgd", "sf_adamw", "sf_radam", "sf_swap",
           "clip_coef", "global_norm", "STEPPERS", "adafactor", "muon", "newton_schulz",
           "sparse_coalesce", "sparse_sgd", "sparse_adagrad", "sparse_adam", "SPARSE_STEPPERS"]


def _g(p, g, maximize, grad_scale):
    T = p.dtype.type
    return g * T(-grad_scale if maximize else grad_scale)


def _l2(p, g, weight_decay, decoupled=False):
    if weight_decay != 0 and not decoupled:
        return g + p.dtype.type(weight_decay) * p
    return g


def _decay(p, lr, weight_decay, decoupled):
    if weight_decay != 0 and decoupled:
        p *= p.dtype.type(1 - lr * weight_decay)


_ZERO_STATES = {
    "Adadelta": ("square_avg", "acc_delta"),
    "RMSprop": ("square_avg", "momentum_buffer", "grad_avg"),
    "Adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "AdamW": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "Adamax": ("exp_avg", "exp_inf"),
    "NAdam": ("exp_avg", "exp_avg_sq"), "RAdam": ("exp_avg", "exp_avg_sq"),
    "Rprop": ("prev", "step_size"), "ASGD": ("ax",), "Lion": ("exp_avg",),
    "AdaBelief": ("exp_avg", "exp_avg_sq"), "ADOPT": ("exp_avg", "exp_avg_sq"),
    "SparseAdam": ("exp_avg", "exp_avg_sq"),
    "Adan": ("exp_avg", "exp_avg_diff", "exp_avg_sq", "prev_grad"),
    "Lamb": ("exp_avg", "exp_avg_sq"), "LARS": ("trace",), "NovoGrad": ("exp_avg",),
    "ScheduleFreeSGD": ("z",), "ScheduleFreeAdamW": ("z", "exp_avg_sq"),
    "ScheduleFreeRAdam": ("z", "exp_avg_sq"),
}
_SCALAR_STATES = {"NAdam": {"mu_product": 1.0}, "ASGD": {"eta": None, "mu": 1.0},
                  "NovoGrad": {"nu": 0.0},
                  "ScheduleFreeSGD": {"lr_max": -1.0, "weight_sum": 0.0},
                  "ScheduleFreeAdamW": {"lr_max": -1.0, "weight_sum": 0.0},
                  "ScheduleFreeRAdam": {"lr_max": -1.0, "weight_sum": 0.0}}


def init_state(name, p, **hp):
    """Fresh state of optimizer ``name`` for param ``p`` (torch's names)."""
    if name == "SGD":
        return {"momentum_buffer": None}
    if name == "Adagrad":
        return {"sum": np.full_like(p, hp.get("initial_accumulator_value", 0.0))}
    if name == "Yogi":           # optax.yogi starts both moments at 1e-6
        return {"exp_avg": np.full_like(p, 1e-6), "exp_avg_sq": np.full_like(p, 1e-6)}
    if name not in _ZERO_STATES:
        raise ValueError(name)
    st = {k: np.zeros_like(p) for k in _ZERO_STATES[name]}
    st.update(_SCALAR_STATES.get(name, {}))
    return st


def sgd(p, g, st, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
        maximize=False, grad_scale=1.0, step=None):
    T = p.dtype.type
    g = _l2(p, _g(p, g, maximize, grad_scale), weight_decay)
    if momentum != 0:
        if st["momentum_buffer"] is None:
            b = g.copy()
        else:
            b = st["momentum_buffer"] * T(momentum) + T(1 - dampening) * g
        st["momentum_buffer"] = b
        g = g + T(momentum) * b if nesterov else b
    p -= T(lr) * g


def adagrad(p, g, st, *, lr, step, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False,
            grad_scale=1.0, initial_accumulator_value=0.0):
    T = p.dtype.type
    clr = lr / (1 + (step - 1) * lr_decay)
    g = _l2(p, _g(p, g, maximize, grad_scale), weight_decay)
    s = st["sum"]
    s += g * g
    p -= T(clr) * g / (np.sqrt(s) + T(eps))


def adadelta(p, g, st, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False,
             grad_scale=1.0, step=None):
    T = p.dtype.type
    g = _l2(p, _g(p, g, maximize, grad_scale), weight_decay)
    v, u = st["square_avg"], st["acc_delta"]
    v[...] = v * T(rho) + T(1 - rho) * g * g
    d = np.sqrt(u + T(eps)) / np.sqrt(v + T(eps)) * g
    u[...] = u * T(rho) + T(1 - rho) * d * d
    p -= T(lr) * d


def rmsprop(p, g, st, *, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
            centered=False, maximize=False, grad_scale=1.0, step=None):
    T = p.dtype.type
    g = _l2(p, _g(p, g, maximize, grad_scale), weight_decay)
    v = st["square_avg"]
    v[...] = v * T(alpha) + T(1 - alpha) * g * g
    w = v
    if centered:
        a = st["grad_avg"]
        a[...] = a + T(1 - alpha) * (g - a)
        with np.errstate(invalid="ignore", over="ignore"):
            w = v - a * a
        w = np.where(w == w, w, v)          # inf - inf keeps v (torch's fused addcmul)
    den = np.sqrt(w) + T(eps)
    if momentum > 0:
        b = st["momentum_buffer"]
        b[...] = b * T(momentum) + g / den
        p -= T(lr) * b
    else:
        p -= T(lr) * g / den


def adam(p, g, st, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
         maximize=False, decoupled=False, decoupled_weight_decay=False, grad_scale=1.0, step):
    T = p.dtype.type
    decoupled = decoupled or decoupled_weight_decay
    b1, b2 = betas
    g = _l2(p, _g(p, g, maximize, grad_scale), weight_decay, decoupled)
    _decay(p, lr, weight_decay, decoupled)
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m += T(1 - b1) * (g - m)
    v[...] = v * T(b2) + T(1 - b2) * g * g
    if amsgrad:
        np.maximum(st["max_exp_avg_sq"], v, out=st["max_exp_avg_sq"])
        v = st["max_exp_avg_sq"]
    step_size = lr / (1 - b1 ** step)
    bc2_sqrt = (1 - b2 ** step) ** 0.5   # torch: bias_correction2 ** 0.5
    p -= T(step_size) * m / (np.sqrt(v) / T(bc2_sqrt) + T(eps))


def adamw(p, g, st, **kw):
    kw.setdefault("weight_decay", 1e-2)
    adam(p, g, st, decoupled=True, **kw)


def adamax(p, g, st, *, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
           maximize=False, grad_scale=1.0, step):
    T = p.dtype.type
    b1, b2 = betas
    g = _l2(p, _g(p, g, maximize, grad_scale), weight_decay)
    m, u = st["exp_avg"], st["exp_inf"]
    m += T(1 - b1) * (g - m)
    np.maximum(u * T(b2), np.abs(g) + T(eps), out=u)
    p -= T(lr / (1 - b1 ** step)) * m / u


def nadam(p, g, st, *, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
          momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False, grad_scale=1.0,
          step):
    T = p.dtype.type
    b1, b2 = betas
    g = _l2(p, _g(p, g, maximize, grad_scale), weight_decay, decoupled_weight_decay)
    _decay(p, lr, weight_decay, decoupled_weight_decay)
    mu = b1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    st["mu_product"] *= mu
    mp = st["mu_product"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m += T(1 - b1) * (g - m)
    v[...] = v * T(b2) + T(1 - b2) * g * g
    den = np.sqrt(v / T(1 - b2 ** step)) + T(eps)
    p -= T(lr * (1.0 - mu) / (1.0 - mp)) * g / den
    p -= T(lr * mu_next / (1.0 - mp * mu_next)) * m / den


def radam(p, g, st, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
          decoupled_weight_decay=False, maximize=False, grad_scale=1.0, step):
    T = p.dtype.type
    b1, b2 = betas
    g = _l2(p, _g(p, g, maximize, grad_scale), weight_decay, decoupled_weight_decay)
    _decay(p, lr, weight_decay, decoupled_weight_decay)
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m += T(1 - b1) * (g - m)
    v[...] = v * T(b2) + T(1 - b2) * g * g
    bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * step * b2 ** step / bc2
    upd = m / T(bc1) * T(lr)
    if rho_t > 5.0:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        # torch: scalar / tensor is tensor.reciprocal() * scalar
        upd = upd * (T(1) / (np.sqrt(v) + T(eps)) * T(bc2 ** 0.5)) * T(rect)
    p -= upd


def _sign(x):
    # torch.sign / jnp.sign: +-1, a zero keeps itself, NaN stays NaN
    T = x.dtype.type
    return np.where(x > 0, T(1), np.where(x < 0, T(-1), x))


def rprop(p, g, st, *, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False,
          grad_scale=1.0, step):
    T = p.dtype.type
    em, ep = etas
    smin, smax = step_sizes
    g = _g(p, g, maximize, grad_scale)
    prev, ss = st["prev"], st["step_size"]
    if step == 1:
        ss[...] = T(lr)
    x = g * prev
    f = np.where(x > 0, T(ep), np.where(x < 0, T(em), T(1)))     # torch.sign(NaN) is 0
    s = ss * f
    s = np.where(s < T(smin), T(smin), s)
    s = np.where(s > T(smax), T(smax), s)
    ss[...] = s
    g = np.where(x < 0, T(0), g)
    p -= np.where(g > 0, T(1), np.where(g < 0, T(-1), T(0))) * s
    prev[...] = g


def asgd(p, g, st, *, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0,
         maximize=False, grad_scale=1.0, step):
    T = p.dtype.type
    g = _l2(p, _g(p, g, maximize, grad_scale), weight_decay)
    eta = lr if st["eta"] is None else st["eta"]
    mu = st["mu"]
    p *= T(1 - lambd * eta)
    p -= T(eta) * g
    ax = st["ax"]
    if mu != 1:
        ax += (p - ax) * T(mu)
    else:
        ax[...] = p
    st["eta"] = lr / ((1 + lambd * lr * step) ** alpha)
    st["mu"] = 1 / max(1, step - t0)


def lion(p, g, st, *, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, grad_scale=1.0,
         step=None):
    T = p.dtype.type
    b1, b2 = betas
    g = _g(p, g, False, grad_scale)
    m = st["exp_avg"]
    c = T(1 - b1) * g + T(b1) * m
    u = _sign(c)
    if weight_decay != 0:
        u = u + T(weight_decay) * p
    p -= T(lr) * u
    m[...] = T(1 - b2) * g + T(b2) * m


def adabelief(p, g, st, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, eps_root=1e-16,
              grad_scale=1.0, step):
    """optax.scale_by_belief + scale_by_learning_rate, in Optax's order."""
    T = p.dtype.type
    b1, b2 = betas
    g = _g(p, g, False, grad_scale)
    m, s = st["exp_avg"], st["exp_avg_sq"]
    m[...] = T(1 - b1) * g + T(b1) * m
    d = g - m
    s[...] = T(1 - b2) * (d * d) + T(b2) * s + T(eps_root)
    p -= T(lr) * (m / T(1 - b1 ** step) / (np.sqrt(s / T(1 - b2 ** step)) + T(eps)))


def yogi(p, g, st, *, lr=1e-2, betas=(0.9, 0.999), eps=1e-3, grad_scale=1.0, step):
    """optax.scale_by_yogi + scale_by_learning_rate; moments start at 1e-6."""
    T = p.dtype.type
    b1, b2 = betas
    g = _g(p, g, False, grad_scale)
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m[...] = T(1 - b1) * g + T(b1) * m
    g2 = g * g
    d = v - g2
    sg = (d > 0).astype(p.dtype) - (d < 0).astype(p.dtype)
    v[...] = v - T(1 - b2) * sg * g2
    p -= T(lr) * (m / T(1 - b1 ** step) / (np.sqrt(v / T(1 - b2 ** step)) + T(eps)))


def adopt(p, g, st, *, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, grad_scale=1.0, step):
    """optax.contrib.adopt (use_clipping=True, nesterov=False) + scale_by_learning_rate."""
    T = p.dtype.type
    b1, b2 = betas
    g = _g(p, g, False, grad_scale)
    m, v = st["exp_avg"], st["exp_avg_sq"]
    if step == 1:
        v[...] = g * g
        return
    c = T(float(step - 1) ** 0.25)
    u = np.minimum(np.maximum(g / np.maximum(np.sqrt(v), T(eps)), -c), c)
    v[...] = T(1 - b2) * (g * g) + T(b2) * v
    m[...] = T(1 - b1) * u + T(b1) * m
    p -= T(lr) * m


def adan(p, g, st, *, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, eps_root=1e-8,
         weight_decay=0.0, grad_scale=1.0, step):
    """optax.scale_by_adan + add_decayed_weights + scale_by_learning_rate."""
    T = p.dtype.type
    b1, b2, b3 = betas
    g = _g(p, g, False, grad_scale)
    m, v, n, gp = st["exp_avg"], st["exp_avg_diff"], st["exp_avg_sq"], st["prev_grad"]
    d = np.zeros_like(g) if step == 1 else g - gp
    m[...] = T(1 - b1) * g + T(b1) * m
    v[...] = T(1 - b2) * d + T(b2) * v
    q = g + T(1 - b2) * d
    n[...] = T(1 - b3) * (q * q) + T(b3) * n
    gp[...] = g
    u = (m / T(1 - b1 ** step) + T(1 - b2) * (v / T(1 - b2 ** step))) / (
        np.sqrt(n / T(1 - b3 ** step) + T(eps_root)) + T(eps))
    if weight_decay != 0:
        u = u + T(weight_decay) * p
    p -= T(lr) * u


BLOCK = 4096     # the kernels' reduction block


def tensor_sumsq(x):
    """Sum of squares of one tensor exactly as the kernels' read-only pass:
    squares in double; per block of 4096, element k joins lane k % 8 in order;
    lanes combined pairwise; blocks combined by ``_pairwise``."""
    sq = np.asarray(x).astype(np.float64, order="K").ravel(order="K")    # memory order
    sq = sq * sq
    totals = []
    for b in range(0, len(sq), BLOCK):
        blk = sq[b:b + BLOCK]
        rows = np.zeros(-(-len(blk) // 8) * 8)
        rows[:len(blk)] = blk
        a = np.add.accumulate(rows.reshape(-1, 8), axis=0)[-1]     # sequential per lane
        totals.append(((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])))
    return _pairwise(totals)


def tensor_sum(x):
    """Sum of one tensor's doubles (given in memory order) exactly as a kernel's
    read-only pass: per block of 4096, element k joins lane k % 8 in order;
    lanes combined pairwise; blocks combined by ``_pairwise``."""
    x = np.asarray(x, dtype=np.float64).ravel()
    totals = []
    for b in range(0, len(x), BLOCK):
        blk = x[b:b + BLOCK]
        rows = np.zeros(-(-len(blk) // 8) * 8)
        rows[:len(blk)] = blk
        a = np.add.accumulate(rows.reshape(-1, 8), axis=0)[-1]
        totals.append(((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])))
    return _pairwise(totals)


def prodigy_state(p, betas=(0.9, 0.999), **_):
    """Fresh Prodigy state of param ``p`` (lrfast's shapes: s and p0 as p)."""
    st = {"s": np.zeros_like(p), "p0": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p),
          "step": 0}
    if betas[0] > 0:
        st["exp_avg"] = np.zeros_like(p)
    return st


def prodigy_global(d0=1e-6, **_):
    """Fresh Prodigy global state (one per optimizer)."""
    return {"d": d0, "d_max": d0, "d_numerator": 0.0, "k": 0}


def prodigy(params, grads, states, gstate, groups, group_of):
    """One prodigyopt.Prodigy 1.1.2 step (slice_p=1) over every param, exactly as
    lrfast's two passes: per tensor (memory order) <g, p0 - p> (p0 - p in the
    dtype, products in double) and ||s_new||_1 summed as :func:`tensor_sum`,
    combined in tensor order as the reference's per-tensor ``.item()`` sums;
    then the update. ``groups``: each group's hyperparameters (betas, beta3,
    eps, weight_decay, decouple, use_bias_correction, safeguard_warmup, d0,
    d_coef, growth_rate, lr; defaults as the reference); ``group_of``: each
    param's group. ``None`` grads skip their param. Updates ``gstate``."""
    full = []
    for h in groups:
        x = dict(lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0,
                 decouple=True, use_bias_correction=False, safeguard_warmup=False, d0=1e-6,
                 d_coef=1.0, growth_rate=math.inf)
        x.update(h)
        full.append(x)
    h0 = full[0]
    b1, b2 = h0["betas"]
    b3 = h0["beta3"] if h0["beta3"] is not None else math.sqrt(b2)
    d, d_max, k = gstate["d"], gstate["d_max"], gstate["k"]
    lr = max(full[group_of[i]]["lr"] for i in range(len(params)))
    bc = (((1 - b2 ** (k + 1)) ** 0.5) / (1 - b1 ** (k + 1)) if h0["use_bias_correction"]
          else 1.0)
    dlr = d * lr * bc
    rows, delta, den = [], 0.0, 0.0
    for i, (p, g) in enumerate(zip(params, grads)):
        h = full[group_of[i]]
        T = p.dtype.type
        wd = h["weight_decay"]
        r = dict(l2=wd != 0 and not h0["decouple"], dec=wd != 0 and h0["decouple"],
                 cm=d * (1 - b1), cv=d * d * (1 - b2),
                 cs=(d / h["d0"]) * d if h["safeguard_warmup"] else (d / h["d0"]) * dlr,
                 wn=(d / h["d0"]) * dlr, on=h["lr"] > 0, wd=wd, eps=h["eps"])
        rows.append(r)
        if g is None:
            continue
        st = states[i]
        gi = g + T(wd) * p if r["l2"] else g
        r["g"] = gi
        if not r["on"]:
            continue
        first = st["step"] == 0
        a = (np.zeros(p.size) if first else
             gi.ravel(order="K").astype(np.float64) * (st["p0"] - p).ravel(order="K").astype(
                 np.float64))
        sn = st["s"] * T(b3) + T(r["cs"]) * gi
        delta = delta + r["wn"] * tensor_sum(a)
        den = den + tensor_sum(np.abs(sn).ravel(order="K"))
    apply = den != 0.0
    if apply:
        num = gstate["d_numerator"] * b3 + delta
        d_new = d
        if lr > 0.0:
            d_hat = h0["d_coef"] * num / den
            if d_new == full[group_of[len(params) - 1]]["d0"]:
                d_new = max(d_new, d_hat)
            d_max = max(d_max, d_hat)
            d_new = min(d_max, d_new * h0["growth_rate"])
        gstate.update(d=d_new, d_max=d_max, d_numerator=num, k=k + 1)
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            continue
        r, st = rows[i], states[i]
        T = p.dtype.type
        gi = r["g"]
        if st["step"] == 0:
            st["p0"][...] = p
        st["step"] += 1
        if r["on"]:
            if b1 > 0:
                st["exp_avg"][...] = st["exp_avg"] * T(b1) + T(r["cm"]) * gi
            st["exp_avg_sq"][...] = st["exp_avg_sq"] * T(b2) + T(r["cv"]) * (gi * gi)
            st["s"][...] = st["s"] * T(b3) + T(r["cs"]) * gi
        if apply:
            dn = np.sqrt(st["exp_avg_sq"]) + T(gstate["d"] * r["eps"])
            if r["dec"]:
                p[...] = p + T(-r["wd"] * dlr) * p
            u = st["exp_avg"] if b1 > 0 else gi
            stepc = -dlr if b1 > 0 else -dlr * gstate["d"]
            p[...] = p + T(stepc) * (u / dn)


def _dadapt_d(d, d_hat, growth):
    return max(d, min(d_hat, d * growth))


def _flat64(x):
    return np.asarray(x).ravel(order="K").astype(np.float64)


def dadapt_state(name, p):
    """Fresh state of DAdaptAdam, DAdaptSGD or DAdaptAdaGrad for param ``p``."""
    if name == "DAdaptAdam":
        return {"step": 0, "s": np.zeros_like(p), "exp_avg": np.zeros_like(p),
                "exp_avg_sq": np.zeros_like(p)}
    if name == "DAdaptSGD":
        return {"step": 0, "s": np.zeros_like(p), "z": np.zeros_like(p), "x0": np.zeros_like(p)}
    return {"step": 0, "alphak": np.full_like(p, 1e-6), "sk": np.zeros_like(p),
            "x0": np.zeros_like(p)}


def dadapt_global(name, d0=1e-6, **_):
    """Fresh D-Adaptation global state (one per optimizer)."""
    if name == "DAdaptAdam":
        return {"d": d0, "numerator_weighted": 0.0, "k": 0}
    if name == "DAdaptSGD":
        return {"d": d0, "numerator_weighted": 0.0, "g0_norm": 0.0, "k": 0}
    return {"d": d0, "gsq_weighted": 0.0, "sksq_weighted": 0.0, "skl1": 0.0, "k": 0}


def _dadapt_groups(groups, defaults):
    out = []
    for h in groups:
        x = dict(defaults)
        x.update(h)
        out.append(x)
    return out


def dadapt_adam(params, grads, states, gstate, groups, group_of):
    """One dadaptation.DAdaptAdam 3.2 step over every param, exactly as lrfast's
    two passes: per tensor (memory order) <g, s/(sqrt(v) + eps)> (the quotient
    in the dtype, products in double) and ||s_new||_1, summed as
    :func:`tensor_sum`, combined in tensor order; then the update."""
    full = _dadapt_groups(groups, dict(lr=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                                       decouple=False, use_bias_correction=False, d0=1e-6,
                                       growth_rate=math.inf, layer_scale=1.0))
    h0 = full[0]
    b1, b2 = h0["betas"]
    sb2 = b2 ** 0.5
    d, k = gstate["d"], gstate["k"]
    lr = max(full[group_of[i]]["lr"] for i in range(len(params)))
    bc = (((1 - b2 ** (k + 1)) ** 0.5) / (1 - b1 ** (k + 1)) if h0["use_bias_correction"]
          else 1.0)
    dlr = d * lr * bc
    acum, l1, gis = 0.0, 0.0, []
    for i, (p, g) in enumerate(zip(params, grads)):
        h = full[group_of[i]]
        T = p.dtype.type
        wd, ls = h["weight_decay"], h["layer_scale"]
        gi = None if g is None else (g + T(wd) * p if wd != 0 and not h0["decouple"] else g)
        gis.append(gi)
        if gi is None or not h["lr"] > 0:
            continue
        st = states[i]
        q = st["s"] / (np.sqrt(st["exp_avg_sq"]) + T(h["eps"]))
        acum = acum + ls * dlr * tensor_sum(_flat64(gi) * _flat64(q))
        sn = st["s"] * T(sb2) + T(dlr * (1 - sb2)) * gi
        l1 = l1 + ls * tensor_sum(_flat64(np.abs(sn)))
    nw = sb2 * gstate["numerator_weighted"] + (1 - sb2) * acum
    apply = l1 != 0.0
    if apply:
        if lr > 0.0:
            d = _dadapt_d(d, nw / ((1 - sb2) * l1), h0["growth_rate"])
        gstate.update(d=d, numerator_weighted=nw, k=k + 1)
    for i, (p, gi) in enumerate(zip(params, gis)):
        if gi is None:
            continue
        h, st = full[group_of[i]], states[i]
        T = p.dtype.type
        st["step"] += 1
        if h["lr"] > 0:
            st["exp_avg"][...] = st["exp_avg"] * T(b1) + T(h["layer_scale"] * dlr * (1 - b1)) * gi
            st["exp_avg_sq"][...] = st["exp_avg_sq"] * T(b2) + T(1 - b2) * (gi * gi)
            st["s"][...] = st["s"] * T(sb2) + T(dlr * (1 - sb2)) * gi
        if apply:
            wd = h["weight_decay"]
            if wd != 0 and h0["decouple"]:
                p[...] = p + T(-wd * dlr) * p
            p[...] = p - st["exp_avg"] / (np.sqrt(st["exp_avg_sq"]) + T(h["eps"]))


def dadapt_sgd(params, grads, states, gstate, groups, group_of):
    """One dadaptation.DAdaptSGD 3.2 step, exactly as lrfast's two passes: at
    the first step (k == 0) ||g||^2 and ||g + wd*p||^2 per tensor (squares in
    double; ||s||^2 = dlr^2 * the latter), else <g, s> and ||s + dlr*g||^2;
    combined in tensor order; then the update."""
    full = _dadapt_groups(groups, dict(lr=1.0, momentum=0.0, weight_decay=0.0, d0=1e-6,
                                       growth_rate=math.inf))
    h0 = full[0]
    wd, ck = h0["weight_decay"], 1 - h0["momentum"]
    d, nw, g0n, k = (gstate[x] for x in ("d", "numerator_weighted", "g0_norm", "k"))
    lr = max(full[group_of[i]]["lr"] for i in range(len(params)))
    on = [g is not None and full[group_of[i]]["lr"] > 0 for i, g in enumerate(grads)]
    gis = [None if g is None else (g + p.dtype.type(wd) * p if wd != 0 else g)
           for p, g in zip(params, grads)]
    if k == 0:
        gsq = 0.0
        for i, g in enumerate(grads):
            if on[i]:
                gsq = gsq + tensor_sum(_flat64(g) ** 2)
        g0n = math.sqrt(gsq)
        if g0n == 0.0:
            on = [False] * len(params)
    dlr = d * lr / g0n if g0n != 0.0 else 0.0
    sk = 0.0
    for i, (p, gi) in enumerate(zip(params, gis)):
        if not on[i]:
            continue
        st = states[i]
        if k == 0:
            sk = sk + (dlr * dlr) * tensor_sum(_flat64(gi) ** 2)
        else:
            nw = nw + dlr * tensor_sum(_flat64(gi) * _flat64(st["s"]))
            sk = sk + tensor_sum(_flat64(st["s"] + p.dtype.type(dlr) * gi) ** 2)
    apply = g0n != 0.0 and sk != 0.0
    if apply:
        if lr > 0.0:
            d = _dadapt_d(d, 2 * nw / math.sqrt(sk), h0["growth_rate"])
        gstate.update(d=d, numerator_weighted=nw, g0_norm=g0n, k=k + 1)
    for i, (p, gi) in enumerate(zip(params, gis)):
        if gi is None:
            continue
        st = states[i]
        T = p.dtype.type
        if st["step"] == 0:
            st["x0"][...] = p
            st["z"][...] = p
        st["step"] += 1
        if on[i]:
            st["s"][...] = st["s"] + T(dlr) * gi
        if apply:
            st["z"][...] = st["x0"] - st["s"]
            p[...] = p * T(1 - ck) + T(ck) * st["z"]


def dadapt_adagrad(params, grads, states, gstate, groups, group_of):
    """One dadaptation.DAdaptAdaGrad 3.2 step (dense grads), exactly as
    lrfast's two passes: per tensor the sums of s'^2/D' - s^2/D, g^2/D' and
    |s'| - |s| (terms in the dtype, differences in double), combined in tensor
    order; then the update."""
    full = _dadapt_groups(groups, dict(lr=1.0, momentum=0.0, weight_decay=0.0, eps=1e-6,
                                       d0=1e-6, growth_rate=math.inf))
    h0 = full[group_of[0]] if params else full[0]
    ck = 1 - h0["momentum"]
    d = gstate["d"]
    dlr = d * h0["lr"]
    dsk = gsq = dl1 = 0.0
    gis = []
    for i, (p, g) in enumerate(zip(params, grads)):
        h = full[group_of[i]]
        T = p.dtype.type
        gi = None if g is None else (g + T(h["weight_decay"]) * p if h["weight_decay"] != 0
                                     else g)
        gis.append(gi)
        if gi is None:
            continue
        st = states[i]
        al, s, eps = st["alphak"], st["sk"], T(h["eps"])
        an = al + gi * gi
        dn = np.sqrt(an) + eps
        sn = s + T(dlr) * gi
        dsk = dsk + tensor_sum(_flat64(sn * sn / dn) - _flat64(s * s / (np.sqrt(al) + eps)))
        gsq = gsq + tensor_sum(_flat64(gi * gi / dn))
        dl1 = dl1 + tensor_sum(_flat64(np.abs(sn)) - _flat64(np.abs(s)))
    sksq = gstate["sksq_weighted"] + dsk
    skl1 = gstate["skl1"] + dl1
    apply = skl1 != 0.0
    if apply:
        gw = gstate["gsq_weighted"] + dlr * dlr * gsq
        if h0["lr"] > 0.0:
            d = _dadapt_d(d, (sksq - gw) / skl1, h0["growth_rate"])
        gstate.update(d=d, gsq_weighted=gw, sksq_weighted=sksq, skl1=skl1, k=gstate["k"] + 1)
    for i, (p, gi) in enumerate(zip(params, gis)):
        if gi is None:
            continue
        h, st = full[group_of[i]], states[i]
        T = p.dtype.type
        if st["step"] == 0:
            st["x0"][...] = p
        st["step"] += 1
        st["alphak"][...] = st["alphak"] + gi * gi
        st["sk"][...] = st["sk"] + T(dlr) * gi
        if apply:
            z = st["x0"] - st["sk"] / (np.sqrt(st["alphak"]) + T(h["eps"]))
            p[...] = p * T(1 - ck) + T(ck) * z if h0["momentum"] != 0 else z


def _dog_eta(st, dd, gg, h):
    ie = h.get("init_eta")
    first = st["G"] == 0.0
    if first:
        st["rbar"] = (0.0 if ie is not None else h.get("reps_rel", 1e-6)) * (1.0 + math.sqrt(dd))
        st["G"] = gg + h.get("eps", 1e-8)
    else:
        dn = math.sqrt(dd)
        st["rbar"] = dn if dn > st["rbar"] else st["rbar"]
        st["G"] = st["G"] + gg
    st["eta"] = h.get("lr", 1.0) * st["rbar"] / math.sqrt(st["G"])
    if first and ie is not None:
        st["eta"] = ie


def dog(params, grads, states, gstates, groups, group_of, layer=False):
    """One dog.DoG (``layer``: dog.LDoG) 1.0.3 step exactly as lrfast's two
    passes: per tensor (memory order) ||x - x0||^2 (first step: ||x||^2) and
    ||g + wd*x||^2, squares in double, summed as :func:`tensor_sum`; DoG
    combines a group's tensors in order. ``states[i]``: {"x0", "step"} (LDoG:
    also rbar, G, eta); ``gstates[g]``: {"rbar", "G", "eta"} (DoG).
    ``None`` grads skip their param."""
    gs = []
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            gs.append(None)
            continue
        h, st = groups[group_of[i]], states[i]
        T = p.dtype.type
        wd = h.get("weight_decay", 0.0)
        gi = g + T(wd) * p if wd > 0 else g
        gs.append(gi)
        dx = p if st["step"] == 0 else p - st["x0"]
        dd = tensor_sum(dx.ravel(order="K").astype(np.float64) ** 2)
        gg = tensor_sum(gi.ravel(order="K").astype(np.float64) ** 2)
        if layer:
            _dog_eta(st, dd, gg, h)
        else:
            acc = gstates[group_of[i]].setdefault("_acc", [0.0, 0.0])
            acc[0] = acc[0] + dd
            acc[1] = acc[1] + gg
    if not layer:
        for gst, h in zip(gstates, groups):
            acc = gst.pop("_acc", None)
            if acc is not None:
                _dog_eta(gst, acc[0], acc[1], h)
    for i, (p, gi) in enumerate(zip(params, gs)):
        if gi is None:
            continue
        st = states[i]
        T = p.dtype.type
        if st["step"] == 0:
            st["x0"] = p.copy()
        st["step"] += 1
        eta = st["eta"] if layer else gstates[group_of[i]]["eta"]
        p[...] = p + T(-eta) * gi


def lamb(p, g, st, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
         eps_root=0.0, grad_scale=1.0, step):
    """optax.lamb: scale_by_adam, add_decayed_weights, scale_by_trust_ratio, lr."""
    T = p.dtype.type
    b1, b2 = betas
    g = _g(p, g, False, grad_scale)
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m[...] = T(1 - b1) * g + T(b1) * m
    v[...] = T(1 - b2) * (g * g) + T(b2) * v
    u = m / T(1 - b1 ** step) / (np.sqrt(v / T(1 - b2 ** step) + T(eps_root)) + T(eps))
    if weight_decay != 0:
        u = u + T(weight_decay) * p
    pn, un = math.sqrt(tensor_sumsq(p)), math.sqrt(tensor_sumsq(u))
    p -= T(lr * (1.0 if (pn == 0.0 or un == 0.0) else pn / un)) * u


def lars(p, g, st, *, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
         nesterov=False, grad_scale=1.0, step=None):
    """optax.lars (default masks): add_decayed_weights, scale_by_trust_ratio, lr, trace."""
    T = p.dtype.type
    u = _g(p, g, False, grad_scale)
    if weight_decay != 0:
        u = u + T(weight_decay) * p
    pn, un = math.sqrt(tensor_sumsq(p)), math.sqrt(tensor_sumsq(u))
    ratio = 1.0 if (pn == 0.0 or un == 0.0) else trust_coefficient * pn / (un + eps)
    u = u * T(-(lr * ratio))
    tr = st["trace"]
    tr[...] = u + T(momentum) * tr
    p += (u + T(momentum) * tr) if nesterov else tr


def novograd(p, g, st, *, lr=1e-3, betas=(0.9, 0.25), eps=1e-6, eps_root=0.0,
             weight_decay=0.0, grad_scale=1.0, step):
    """optax.novograd: scale_by_novograd (nu one number per tensor) + lr."""
    T = p.dtype.type
    b1, b2 = betas
    g = _g(p, g, False, grad_scale)
    gg = tensor_sumsq(g)
    st["nu"] = gg if step == 1 else (1 - b2) * gg + b2 * st["nu"]
    u = g / T(math.sqrt(st["nu"] + eps_root) + eps)
    if weight_decay != 0:
        u = u + T(weight_decay) * p
    m = st["exp_avg"]
    m[...] = u if step == 1 else T(b1) * m + u
    p -= T(lr) * m


def _sf_scalars(st, k, lr_t, r, weight_lr_power, beta1):
    """schedulefree's per-group scalars (kept per param in ``st``) for step k + 1."""
    lr_max = st["lr_max"] = max(lr_t, st["lr_max"])
    weight = ((k + 1) ** r) * (lr_max ** weight_lr_power)
    weight_sum = st["weight_sum"] = st["weight_sum"] + weight
    try:
        ckp1 = weight / weight_sum
    except ZeroDivisionError:
        ckp1 = 0.0
    return ckp1, lr_t * (beta1 * (1 - ckp1) - 1)


def _sf_lerp(y, z, w):
    """torch.lerp on CPU with a scalar weight, one operation at a time."""
    T = y.dtype.type
    if abs(w) < 0.5:
        return y + T(w) * (z - y)
    return z - (z - y) * (T(1) - T(w))


def _sf_update(p, g, st, step, ckp1, cy, lr_t, weight_decay):
    T = p.dtype.type
    if step == 1:
        st["z"][...] = p
    z = st["z"]
    if weight_decay != 0:
        g = g + T(weight_decay) * p
    y = _sf_lerp(p, z, ckp1)
    p[...] = y + T(cy) * g
    z[...] = z - T(lr_t) * g


def sf_sgd(p, g, st, *, lr=1.0, momentum=0.9, weight_decay=0.0, warmup_steps=0, r=0.0,
           weight_lr_power=2.0, grad_scale=1.0, step):
    """schedulefree.SGDScheduleFree (p holds y); lrfast's per-param step counts."""
    k = step - 1
    lr_t = lr * ((k + 1) / warmup_steps if k < warmup_steps else 1.0)
    ckp1, cy = _sf_scalars(st, k, lr_t, r, weight_lr_power, momentum)
    _sf_update(p, _g(p, g, False, grad_scale), st, step, ckp1, cy, lr_t, weight_decay)


def _sf_adam(p, g, st, step, lr_t, adapt, betas, eps, weight_decay, r, weight_lr_power,
             grad_scale):
    T = p.dtype.type
    b1, b2 = betas
    ckp1, cy = _sf_scalars(st, step - 1, lr_t, r, weight_lr_power, b1)
    g = _g(p, g, False, grad_scale)
    v = st["exp_avg_sq"]
    v[...] = v * T(b2) + T(1 - b2) * g * g
    if adapt:
        g = g / (np.sqrt(v / T(1 - b2 ** step)) + T(eps))
    _sf_update(p, g, st, step, ckp1, cy, lr_t, weight_decay)


def sf_adamw(p, g, st, *, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             warmup_steps=0, r=0.0, weight_lr_power=2.0, grad_scale=1.0, step):
    """schedulefree.AdamWScheduleFree (p holds y); lrfast's per-param step counts."""
    k = step - 1
    lr_t = lr * ((k + 1) / warmup_steps if k < warmup_steps else 1.0)
    _sf_adam(p, g, st, step, lr_t, True, betas, eps, weight_decay, r, weight_lr_power,
             grad_scale)


def sf_radam(p, g, st, *, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, r=0.0,
             weight_lr_power=2.0, silent_sgd_phase=True, grad_scale=1.0, step):
    """schedulefree.RAdamScheduleFree (p holds y); lrfast's per-param step counts."""
    b2 = betas[1]
    beta2_t = b2 ** step
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * step * beta2_t / (1 - beta2_t)
    if rho_t > 4.0:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    else:
        rect = float(not silent_sgd_phase)
    _sf_adam(p, g, st, step, lr * rect, rho_t > 4.0, betas, eps, weight_decay, r,
             weight_lr_power, grad_scale)


def sf_swap(p, z, beta1, to_train):
    """train(): p = lerp(p, z, 1 - beta1) (x to y); eval(): lerp(p, z, 1 - 1/beta1)."""
    p[...] = _sf_lerp(p, z, 1 - beta1 if to_train else 1 - 1 / beta1)


STEPPERS = {"SGD": sgd, "Adagrad": adagrad, "Adadelta": adadelta, "RMSprop": rmsprop,
            "Adam": adam, "AdamW": adamw, "Adamax": adamax, "NAdam": nadam, "RAdam": radam,
            "Rprop": rprop, "ASGD": asgd, "Lion": lion,
            "AdaBelief": adabelief, "Yogi": yogi, "ADOPT": adopt, "Adan": adan,
            "Lamb": lamb, "LARS": lars, "NovoGrad": novograd,
            "ScheduleFreeSGD": sf_sgd, "ScheduleFreeAdamW": sf_adamw,
            "ScheduleFreeRAdam": sf_radam}


def global_norm(grads):
    """L2 norm of all grads, accurately (math.fsum of float64 squares)."""
    return math.sqrt(math.fsum(float(x) * float(x) for g in grads if g is not None
                               for x in np.asarray(g, np.float64).ravel()))


def clip_coef(total_norm, max_norm):
    """torch.nn.utils.clip_grad_norm_'s factor, clamped to 1."""
    return min(1.0, max_norm / (total_norm + 1e-6))


# ---------------------------------------------------------------------------
# Own steps: Adafactor (its state is not the param's shape) and Muon. Not in
# STEPPERS: the engine-shaped generic tests do not run them.
# ---------------------------------------------------------------------------
AF_ROWS = 64         # rows per block of Adafactor's factored sums (src/_factored.pxi)
AF_BLOCK = 4096      # elements per block of a vector's sums


def _pairwise(xs):
    """The kernels' _pairwise: sequential for <= 8 values, else halves."""
    n = len(xs)
    if n <= 8:
        s = 0.0
        for x in xs:
            s = s + float(x)
        return s
    h = n // 2
    return _pairwise(xs[:h]) + _pairwise(xs[h:])


def _seq_last(x, axis):
    """Sequential (left to right) sums along ``axis``: np.cumsum's last value."""
    return np.take(np.cumsum(x, axis=axis), -1, axis=axis)


def _pad(x, axis, k):
    """Zero-pad ``axis`` of x to a multiple of k (adding +0.0 to a sum of
    squares changes nothing)."""
    r = (-x.shape[axis]) % k
    if r == 0:
        return x
    w = [(0, 0)] * x.ndim
    w[axis] = (0, r)
    return np.pad(x, w)


def _lanes(x2):
    """Sums of the last axis as the kernels take them: 8 lanes (element j in
    lane j % 8, each lane in order), combined pairwise."""
    x2 = _pad(x2, -1, 8)
    a = _seq_last(x2.reshape(x2.shape[:-1] + (-1, 8)), -2)
    return ((a[..., 0] + a[..., 1]) + (a[..., 2] + a[..., 3])) + (
        (a[..., 4] + a[..., 5]) + (a[..., 6] + a[..., 7]))


def _rows_blocks(r, k):
    """Row values (..., n) summed in order within blocks of k rows: (..., nblk)."""
    r = _pad(r, -1, k)
    return _seq_last(r.reshape(r.shape[:-1] + (-1, k)), -1)


def _lerp(x, e, w):
    """torch's lerp in x's dtype: x + w*(e - x) for |w| < 0.5, else e - (e - x)*(1 - w)."""
    T = x.dtype.type
    tw = T(w)
    if abs(float(tw)) < 0.5:
        return x + tw * (e - x)
    return e - (e - x) * (T(1) - tw)


def adafactor(p, g, st, *, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
              weight_decay=0.0, maximize=False, grad_scale=1.0, step):
    """torch.optim.Adafactor (foreach=False) for one param, with the kernels'
    deterministic sums (double, fixed blocks and lanes). ``st`` holds
    ``row_var``/``col_var`` (ndim >= 2) or ``variance``."""
    T = p.dtype.type
    eps1, eps2 = eps
    if eps1 is None:
        eps1 = float(np.finfo(p.dtype).eps)
    t = float(step)
    w = t ** beta2_decay
    rho = min(lr, 1 / (t ** 0.5))
    dm = 1.0 - lr * weight_decay
    gv = g * T(-grad_scale if maximize else grad_scale)
    size = p.size
    if size == 0:
        return
    e1sq = T(eps1 * eps1)
    if p.ndim >= 2:
        n, m = p.shape[-2:]
        P = p.reshape((-1, n, m))          # a copy for an F-ordered param: read only
        G = gv.reshape((-1, n, m))
        g64 = G.astype(np.float64)
        g2 = g64 * g64
        p64 = P.astype(np.float64)
        psq = _pairwise(_rows_blocks(_lanes(p64 * p64), AF_ROWS).ravel())
        rowsum = _lanes(g2)                                       # (B, n)
        colsum = _seq_last(_seq_last(
            _pad(g2, 1, AF_ROWS).reshape((g2.shape[0], -1, AF_ROWS, m)), 2), 1)   # (B, m)
        rv = st["row_var"].reshape((-1, n))
        cv = st["col_var"].reshape((-1, m))
        rv[...] = _lerp(rv, (rowsum / m).astype(p.dtype), w)
        cv[...] = _lerp(cv, (colsum / n).astype(p.dtype), w)
        mean = (_seq_last(rv.astype(np.float64), -1) / n).astype(p.dtype)
        den = np.maximum(mean, T(eps1))[:, None, None]
        v = (rv[:, :, None] * cv[:, None, :]) / den
        v = np.where(v < e1sq, e1sq, v)
        u = (T(1) / np.sqrt(v)) * G
        u64 = u.astype(np.float64)
        usq = _pairwise(_rows_blocks(_lanes(u64 * u64), AF_ROWS).ravel())
        u = u.reshape(p.shape)
    else:
        x = p.reshape(-1).astype(np.float64)
        psq = _pairwise(_lanes(_pad(x * x, 0, AF_BLOCK).reshape((-1, AF_BLOCK))))
        var = st["variance"]
        var[...] = _lerp(var, gv * gv, w)
        v = np.where(var < e1sq, e1sq, var)
        u = (T(1) / np.sqrt(v)) * gv
        x = u.reshape(-1).astype(np.float64)
        usq = _pairwise(_lanes(_pad(x * x, 0, AF_BLOCK).reshape((-1, AF_BLOCK))))
    alpha = math.sqrt(psq) / math.sqrt(size)
    alpha = (alpha if alpha > eps2 else eps2) * rho
    denom = math.sqrt(usq) / (math.sqrt(size) * d)
    denom = denom if denom > 1.0 else 1.0
    if weight_decay != 0:
        p[...] = p * T(dm)
    p[...] = p + T(-alpha / denom) * u


def newton_schulz(x, coefficients=(3.4445, -4.775, 2.0315), steps=5, eps=1e-7):
    """torch.optim.Muon's _zeropower_via_newtonschulz in x's dtype (torch
    casts to bfloat16 first): x / max(||x||_F, eps), then ``steps`` times
    A = X X^T, B = b A + c A A, X = a X + B X, on the wide orientation."""
    T = x.dtype.type
    a, b, c = coefficients
    tall = x.shape[0] > x.shape[1]
    X = x.T if tall else x
    nrm = T(np.linalg.norm(X))
    X = np.ascontiguousarray(X / (nrm if nrm > T(eps) else T(eps)))
    for _ in range(steps):
        A = X @ X.T
        B = T(b) * A + T(c) * (A @ A)
        X = np.ascontiguousarray(T(a) * X + B @ X)
    return X.T if tall else X


def muon_lr(lr, adjust_lr_fn, shape):
    """torch's _adjust_lr."""
    A, B = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, A / B))
    return lr * (0.2 * math.sqrt(max(A, B)))


def muon(p, g, st, *, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
         ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None,
         grad_scale=1.0, step=None):
    """torch.optim.Muon for one 2-D param, Newton-Schulz in the param's dtype."""
    T = p.dtype.type
    if grad_scale != 1.0:
        g = g * T(grad_scale)
    buf = st["momentum_buffer"]
    buf[...] = _lerp(buf, g, 1 - momentum)
    u = _lerp(g, buf, momentum) if nesterov else buf
    o = newton_schulz(u, ns_coefficients, ns_steps, eps)
    if weight_decay != 0:
        p[...] = p * T(1 - lr * weight_decay)
    p[...] = p + T(-muon_lr(lr, adjust_lr_fn, p.shape)) * o
# Row-sparse twins (lrfast.RowSparse grads): torch's sparse semantics, only the
# touched rows change. ``indices``/``values`` are the RowSparse's arrays.
# ---------------------------------------------------------------------------
def sparse_coalesce(indices, values):
    """(rows, grads): the distinct rows in increasing order and each one's
    grad, the sum of its values rows in index order (a + b + c, never
    reassociated), as the kernels sum duplicates."""
    order = sorted(range(len(indices)), key=lambda j: int(indices[j]))    # stable
    rows, out = [], []
    for j in order:
        r = int(indices[j])
        if rows and rows[-1] == r:
            out[-1] = out[-1] + values[j]
        else:
            rows.append(r)
            out.append(values[j].copy())
    shape = (0,) + values.shape[1:]
    return (np.array(rows, dtype=np.intp),
            np.stack(out) if out else np.zeros(shape, values.dtype))


def sparse_sgd(p, indices, values, st, *, lr, maximize=False, step=None, **_):
    """torch.optim.SGD (no momentum, no weight decay) on a sparse grad:
    p[rows] += -lr * g."""
    T = p.dtype.type
    rows, g = sparse_coalesce(indices, values)
    g = T(-1.0 if maximize else 1.0) * g
    p[rows] = p[rows] + T(-lr) * g


def sparse_adagrad(p, indices, values, st, *, lr, step, lr_decay=0.0, eps=1e-10,
                   maximize=False, **_):
    """torch.optim.Adagrad (no weight decay) on a sparse grad: state_sum
    grows on the touched rows and only they move (torch's _make_sparse path)."""
    T = p.dtype.type
    clr = lr / (1 + (step - 1) * lr_decay)
    rows, g = sparse_coalesce(indices, values)
    g = T(-1.0 if maximize else 1.0) * g
    s = st["sum"]
    sn = s[rows] + g * g
    s[rows] = sn
    p[rows] = p[rows] + T(-clr) * (g / (np.sqrt(sn) + T(eps)))


def sparse_adam(p, indices, values, st, *, lr, step, betas=(0.9, 0.999), eps=1e-8,
                maximize=False, **_):
    """torch.optim.SparseAdam (lazy Adam), in torch's order."""
    T = p.dtype.type
    b1, b2 = betas
    rows, g = sparse_coalesce(indices, values)
    g = T(-1.0 if maximize else 1.0) * g
    m, v = st["exp_avg"], st["exp_avg_sq"]
    mo, vo = m[rows], v[rows]
    mn = mo + (g - mo) * T(1 - b1)
    vn = (g * g - vo) * T(1 - b2) + vo
    m[rows] = mn
    v[rows] = vn
    step_size = lr * math.sqrt(1 - b2 ** step) / (1 - b1 ** step)
    p[rows] = p[rows] + T(-step_size) * (mn / (np.sqrt(vn) + T(eps)))


SPARSE_STEPPERS = {"SGD": sparse_sgd, "Adagrad": sparse_adagrad, "SparseAdam": sparse_adam}


def ema_blend(avg, p, w):
    """lrfast.EMA's blend of ``avg`` toward ``p`` in place, as the kernel runs
    it: torch's lerp with weight ``w`` (w and 1-w rounded once to the dtype),
    ``w >= 1`` copies p."""
    T = p.dtype.type
    if w >= 1.0:
        avg[...] = p
    elif w < 0.5:
        avg += T(w) * (p - avg)
    else:
        avg[...] = p - (p - avg) * T(1.0 - w)


__all__ += ["ema_blend"]


# --------------------------------------------------------------------------
# Low precision (16-bit params and state): the engine's rounding, in numpy.
# Nearest-even rounding is numpy's / ml_dtypes' own cast; stochastic rounding
# replays the engine's counter-based stream (keyed by seed, step, tensor,
# array slot and element index) in uint32/uint64 arithmetic.
# --------------------------------------------------------------------------
_M64 = (1 << 64) - 1


def _mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def sr_key(seed, step, tensor, slot, hi=0):
    return _mix64(seed ^ _mix64(step ^ _mix64(((tensor << 3) | slot) ^ _mix64(hi))))


def _h32(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def sr_bits(n, seed, step, tensor, slot, start=0):
    """The 32 random bits of elements start..start+n-1 of one array's stream:
    element index j draws from the key of its high half (j >> 32) with its
    low half."""
    j = np.arange(start, start + n, dtype=np.uint64)
    out = np.empty(n, dtype=np.uint32)
    for hi in np.unique(j >> np.uint64(32)):
        sel = (j >> np.uint64(32)) == hi
        k = sr_key(seed, step, tensor, slot, int(hi))
        i = (j[sel] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        with np.errstate(over="ignore"):
            out[sel] = _h32(_h32(i ^ np.uint32(k & 0xFFFFFFFF)) + np.uint32(k >> 32))
    return out


def round_half(x, dtype, rnd=None):
    """float32 ``x`` rounded to ``dtype`` (float16 or ml_dtypes' bfloat16): to
    nearest even, or stochastically with the random bits ``rnd``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    dtype = np.dtype(dtype)
    if rnd is None:
        with np.errstate(over="ignore"):
            return x.astype(dtype)
    u = x.view(np.uint32).reshape(-1)
    rnd = rnd.reshape(-1)
    a = u & np.uint32(0x7FFFFFFF)
    with np.errstate(over="ignore"):
        if dtype != np.float16:                 # bfloat16: 16 random bits below the cut
            r = (u + (rnd & np.uint32(0xFFFF))) >> np.uint32(16)
            out = np.where(a > 0x7F800000, (u >> np.uint32(16)) | np.uint32(0x40),
                           np.where(a == 0x7F800000, u >> np.uint32(16), r))
            return out.astype(np.uint16).view(dtype).reshape(x.shape)
        sign = (u >> np.uint32(16)) & np.uint32(0x8000)
        nrm = (a + np.uint32(0xC8000000) + (rnd & np.uint32(0x1FFF))) >> np.uint32(13)
        s = np.where(a < np.uint32(113 << 23), a, 0).view(np.float32) * np.float32(16777216.0)
        q = np.floor(s)
        up = ((rnd >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)) < (s - q)
        sub = q.astype(np.uint32) + up.astype(np.uint32)
        big = x.reshape(-1).astype(np.float16).view(np.uint16).astype(np.uint32) & np.uint32(0x7FFF)
        o = np.where(a >= np.uint32(143 << 23), big,
                     np.where(a < np.uint32(113 << 23), sub, nrm)) | sign
        return o.astype(np.uint16).view(np.float16).reshape(x.shape)
