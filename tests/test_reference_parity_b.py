"""The Optax-referenced optimizers (AdaBelief, Yogi, ADOPT, Adan) against Optax 0.2.x
with ``jax_enable_x64``: >= 50 steps of a contracting problem that starts far
from its optimum, per tensor max|a-b|/max|b| <= 1e-10 (float64) and <= 1e-4
(float32). The functional layer equals the classes bit for bit."""
import numpy as np
import pytest

import lrfast
from lrfast import kernels as K

from _cases import CASES, case_id
from conftest import bits_equal

TOL = {np.float64: 1e-10, np.float32: 1e-4}
SHAPES = [(17, 9), (64,), (1,), (3, 4, 5)]
OPTAX = ("AdaBelief", "Yogi", "ADOPT", "Adan")
OPTAX_CASES = [c for c in CASES if c[0] in OPTAX]


def _optax_tx(optax, name, hp):
    d = {**getattr(lrfast, name).spec.defaults, **hp}
    if name == "LARS":
        return optax.lars(d["lr"], weight_decay=d["weight_decay"],
                          trust_coefficient=d["trust_coefficient"], eps=d["eps"],
                          momentum=d["momentum"], nesterov=d["nesterov"])
    if name == "Adan":
        b1, b2, b3 = d["betas"]
        return optax.adan(d["lr"], b1=b1, b2=b2, b3=b3, eps=d["eps"], eps_root=d["eps_root"],
                          weight_decay=d["weight_decay"])
    b1, b2 = d["betas"]
    if name == "AdaBelief":
        return optax.adabelief(d["lr"], b1=b1, b2=b2, eps=d["eps"], eps_root=d["eps_root"])
    if name == "Yogi":
        return optax.yogi(d["lr"], b1=b1, b2=b2, eps=d["eps"])
    if name == "ADOPT":
        return optax.contrib.adopt(d["lr"], b1=b1, b2=b2, eps=d["eps"])
    if name in ("Lamb", "NovoGrad"):
        fn = optax.lamb if name == "Lamb" else optax.novograd
        return fn(d["lr"], b1=b1, b2=b2, eps=d["eps"], eps_root=d["eps_root"],
                  weight_decay=d["weight_decay"])
    raise AssertionError(name)


def run_optax(name, hp, dtype, steps=60, seed=0, shapes=SHAPES):
    """lrfast and Optax from the same start on the same grads (computed from
    lrfast's params): g = 0.7*(p - target) + 0.01*noise, target ~5 away."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    target = [(rng.standard_normal(s) + 5.0).astype(dtype) for s in shapes]
    ours = [x.copy() for x in init]
    opt = getattr(lrfast, name)(ours, **hp)
    tx = _optax_tx(optax, name, hp)
    theirs = [jnp.asarray(x.copy()) for x in init]
    state = tx.init(theirs)
    for _ in range(steps):
        gs = [(p - t) * dtype(0.7) + dtype(0.01) * rng.standard_normal(p.shape).astype(dtype)
              for p, t in zip(ours, target)]
        opt.step(gs)
        upd, state = tx.update([jnp.asarray(g.copy()) for g in gs], state, theirs)
        theirs = optax.apply_updates(theirs, upd)
    out = [np.asarray(t) for t in theirs]
    assert all(t.dtype == dtype for t in out)
    far = max(float(np.max(np.abs(p - t))) for p, t in zip(ours, target))
    assert far > 1.0          # still far from the optimum: no sign-like bouncing
    return ours, out, init


def rel_err(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("case", OPTAX_CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_optax(case, dtype):
    name, hp = case
    ours, theirs, init = run_optax(name, hp, dtype)
    errs = [rel_err(a, b) for a, b in zip(ours, theirs)]
    assert max(errs) <= TOL[dtype], (name, hp, errs)
    # both moved well beyond the tolerance: the comparison is not of two unchanged arrays
    assert min(rel_err(b, x) for b, x in zip(theirs, init)) > 1e3 * TOL[dtype]


def test_adopt_first_step_only_fills_second_moment():
    p = np.array([1.0, -2.0, 3.0])
    g = np.array([0.5, -4.0, 0.0])
    opt = lrfast.ADOPT([p], lr=0.1)
    opt.step([g])
    assert bits_equal(p, np.array([1.0, -2.0, 3.0]))
    st = opt.state_dict()["state"][0]
    assert bits_equal(st["exp_avg_sq"], g * g) and not st["exp_avg"].any()


def test_yogi_moments_start_at_1e_6():
    p = np.zeros(4, np.float32)
    opt = lrfast.Yogi([p])
    opt.step([np.zeros(4, np.float32)])
    st = opt.state_dict()["state"][0]
    # zero grads: m = 0.9*1e-6, v = 1e-6 - 0.001*sign(1e-6)*0 = 1e-6
    assert bits_equal(st["exp_avg"], np.full(4, np.float32(0.9) * np.float32(1e-6), np.float32))
    assert bits_equal(st["exp_avg_sq"], np.full(4, 1e-6, np.float32))


_FUNC = {"AdaBelief": K.adabelief_step, "Yogi": K.yogi_step, "ADOPT": K.adopt_step,
         "Adan": K.adan_step}


@pytest.mark.parametrize("case", OPTAX_CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_equals_class(case, dtype):
    name, hp = case
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 7)).astype(dtype)
    b = a.copy()
    opt = getattr(lrfast, name)([a], **hp)
    fill = 1e-6 if name == "Yogi" else 0.0
    names = opt.spec.states
    states = [np.full_like(b, fill) for _ in names]
    kw = {k: v_ for k, v_ in hp.items() if k != "betas"}
    for i, beta in enumerate(hp.get("betas", ())):
        kw[f"beta{i + 1}"] = beta
    for t in range(1, 8):
        g = rng.standard_normal(a.shape).astype(dtype)
        opt.step([g])
        _FUNC[name](b, g, *states, step=t, **kw)
    st = opt.state_dict()["state"][0]
    assert bits_equal(a, b)
    for sname, x in zip(names, states):
        assert bits_equal(st[sname], x), sname


@pytest.mark.parametrize("name", OPTAX)
def test_functional_bad_input_changes_nothing(name):
    p = np.ones(3)
    states = [np.zeros(3) for _ in getattr(lrfast, name).spec.states]
    with pytest.raises(ValueError, match="eps"):
        _FUNC[name](p, np.ones(3), *states, eps=-1.0, step=2)
    with pytest.raises(ValueError):
        _FUNC[name](p, np.ones(3), *states, beta1=1.0, step=2)
    with pytest.raises(ValueError):
        _FUNC[name](p, np.ones(4), *states, step=2)
    bad = states[:-1] + [np.zeros(4)]            # the last state has the wrong shape
    with pytest.raises(ValueError, match=getattr(lrfast, name).spec.states[-1]):
        _FUNC[name](p, np.ones(3), *bad, step=2)
    assert bits_equal(p, np.ones(3)) and not any(x.any() for x in states)


def test_adan_first_step_has_no_grad_difference():
    # step 1: d = 0, so m = (1-b1) g, v = 0, n = (1-b3) g^2, prev_grad = g
    p = np.array([0.5, -1.0])
    g = np.array([2.0, -3.0])
    opt = lrfast.Adan([p])
    opt.step([g])
    st = opt.state_dict()["state"][0]
    assert not st["exp_avg_diff"].any() and bits_equal(st["prev_grad"], g)
    assert bits_equal(st["exp_avg"], (1 - 0.98) * g + 0.98 * np.zeros(2))
    assert bits_equal(st["exp_avg_sq"], (1 - 0.99) * (g * g) + 0.99 * np.zeros(2))


def test_engine_holds_max_states():
    from lrfast._dispatch import kernels as _K
    from lrfast.optim import TABLE
    from lrfast.optim._table import MAX_STATES
    assert _K.N_STATES == MAX_STATES == max(len(s.states) for s in TABLE.values())
