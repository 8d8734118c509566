"""lrfast vs the named reference of each optimizer added for Adam's
decoupled_weight_decay, Rprop, ASGD and Lion: >= 50 steps of a contracting
problem that starts far from its optimum, per tensor max|a-b|/max|b| <= 1e-10
in float64 and <= 1e-4 in float32.

References: ``torch.optim.<Name>(foreach=False)`` (torch's default dtype set to
the run's dtype) and ``optax.lion`` (jax with ``jax_enable_x64``). Each
reference is optional: its tests skip when it is not installed. The measured
figures are printed as a table at the end of the module.
"""
import numpy as np
import pytest

import lrfast

TOL = {np.float64: 1e-10, np.float32: 1e-4}
SHAPES = [(17, 9), (64,), (1,), (3, 4, 5)]
STEPS = 60
RESULTS = {}          # (name, options, dtype) -> worst relative error over the tensors


@pytest.fixture(scope="module", autouse=True)
def _parity_table(request):
    yield
    if not RESULTS:
        return
    pm = request.config.pluginmanager
    tr, cm = pm.get_plugin("terminalreporter"), pm.get_plugin("capturemanager")
    if tr is None or cm is None:
        return
    with cm.global_and_fixture_disabled():
        tr.write_line("")
        tr.write_line(f"measured parity (max over tensors of max|a-b|/max|b|, {STEPS} steps):")
        for (name, opts, dt), err in sorted(RESULTS.items()):
            tr.write_line(f"  {name:6s} {dt:8s} {err:10.3e}  {opts}")


def rel_err(a, b):
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(np.max(np.abs(b)), 1e-300))


def problem(dtype, seed=0):
    """Params far from their targets (|p - target| ~ 10), and a grad function:
    f = 0.35*|p - target|^2 plus a little noise (a contracting problem)."""
    rng = np.random.default_rng(seed)
    target = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    init = [(t + dtype(10) * np.sign(rng.standard_normal(s)).astype(dtype)
             + rng.standard_normal(s).astype(dtype)) for t, s in zip(target, SHAPES)]

    def grads(ps):
        return [((p - t) * dtype(0.7) + dtype(0.01) * rng.standard_normal(p.shape).astype(dtype))
                for p, t in zip(ps, target)]
    return init, grads


def record(name, hp, dtype, ours, theirs):
    errs = [rel_err(a, b) for a, b in zip(ours, theirs)]
    RESULTS[(name, repr(hp), np.dtype(dtype).name)] = max(errs)
    assert max(errs) <= TOL[dtype], (name, hp, errs)


# ---------------------------------------------------------------------------
# torch.optim references
# ---------------------------------------------------------------------------
TORCH_CASES = [
    ("Adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True,
                  maximize=True)),
    ("Rprop", dict()),
    ("Rprop", dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.5), maximize=True)),
    ("ASGD", dict(lr=0.05)),
    ("ASGD", dict(lr=0.05, lambd=1e-2, alpha=0.5, t0=10.0, weight_decay=0.01, maximize=True)),
]


def torch_case_id(c):
    return c[0] + "-" + "-".join(f"{k}={v}" for k, v in c[1].items())


def run_torch(name, hp, dtype, torch_name=None, torch_hp=None):
    torch = pytest.importorskip("torch")
    init, grads = problem(dtype)
    ours = [x.copy() for x in init]
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        theirs = [torch.tensor(x.copy()) for x in init]
        opt = getattr(lrfast, name)(ours, **hp)
        topt = getattr(torch.optim, torch_name or name)(theirs, foreach=False,
                                                        **(torch_hp or hp))
        sign = -1 if hp.get("maximize") else 1
        for _ in range(STEPS):
            gs = [sign * g for g in grads(ours)]
            opt.step(gs)
            for tp, g in zip(theirs, gs):
                tp.grad = torch.tensor(g.copy())
            topt.step()
    finally:
        torch.set_default_dtype(prev)
    return ours, [t.detach().numpy() for t in theirs], opt, topt


@pytest.mark.parametrize("case", TORCH_CASES, ids=torch_case_id)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch(case, dtype):
    name, hp = case
    ours, theirs, _, _ = run_torch(name, hp, dtype)
    record(name, hp, dtype, ours, theirs)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_decoupled_equals_adamw(amsgrad):
    """Adam(decoupled_weight_decay=True) is AdamW: bitwise, in lrfast and in torch."""
    torch = pytest.importorskip("torch")
    hp = dict(lr=0.05, weight_decay=0.1, amsgrad=amsgrad)
    ours, theirs, _, _ = run_torch("Adam", {**hp, "decoupled_weight_decay": True}, np.float64,
                                   torch_name="AdamW", torch_hp=hp)
    ref, _, _, _ = run_torch("AdamW", hp, np.float64)
    for a, b, c in zip(ours, ref, theirs):
        assert np.array_equal(a, b)
        assert rel_err(a, c) <= 1e-10
    del torch


# ---------------------------------------------------------------------------
# the functional layer (lrfast.kernels.*_step) equals the numpy twins bitwise
# ---------------------------------------------------------------------------
def _functional(dtype, n, steps, call, twin_name, twin_hp, states):
    from lrfast import _reference as R
    from conftest import bits_equal
    rng = np.random.default_rng(3)
    p = (rng.standard_normal(n) * 5).astype(dtype)
    q = p.copy()
    arrays = [np.zeros_like(p) for _ in states]
    st = R.init_state(twin_name, q)
    out = None
    for t in range(1, steps + 1):
        g = rng.standard_normal(n).astype(dtype)
        out = call(p, g, arrays, t, out)
        R.STEPPERS[twin_name](q, g, st, step=t, **twin_hp)
    assert bits_equal(p, q)
    for a, s in zip(arrays, states):
        assert bits_equal(a, st[s])
    return out, st


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rprop_step_matches_twin(dtype):
    from lrfast import kernels as K

    def call(p, g, arrays, t, _):
        K.rprop_step(p, g, *arrays, lr=0.05, etaminus=0.4, etaplus=1.3, step_size_min=1e-3,
                     step_size_max=0.3, step=t, maximize=True)
    _functional(dtype, 5000, 8, call, "Rprop",
                dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-3, 0.3), maximize=True),
                ["prev", "step_size"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_asgd_step_matches_twin(dtype):
    from lrfast import kernels as K

    def call(p, g, arrays, t, em):
        eta, mu = em if em is not None else (None, 1.0)
        return K.asgd_step(p, g, *arrays, lr=0.05, lambd=1e-2, alpha=0.5, t0=3.0,
                           weight_decay=0.01, step=t, eta=eta, mu=mu, maximize=True)
    (eta, mu), st = _functional(dtype, 5000, 8, call, "ASGD",
                                dict(lr=0.05, lambd=1e-2, alpha=0.5, t0=3.0, weight_decay=0.01,
                                     maximize=True), ["ax"])
    assert (eta, mu) == (st["eta"], st["mu"])


def test_asgd_state_matches_torch():
    """eta, mu and step in the state_dict are torch's, and a torch state_dict
    resumes exactly."""
    torch = pytest.importorskip("torch")
    hp = dict(lr=0.05, lambd=1e-2, alpha=0.5, t0=3.0)
    ours, theirs, opt, topt = run_torch("ASGD", hp, np.float64)
    sd = opt.state_dict()
    for i, p in enumerate(topt.param_groups[0]["params"]):
        ts = topt.state[p]
        assert sd["state"][i]["step"] == int(ts["step"])
        assert sd["state"][i]["eta"] == pytest.approx(float(ts["eta"]), rel=1e-15)
        assert sd["state"][i]["mu"] == pytest.approx(float(ts["mu"]), rel=1e-15)
        assert rel_err(sd["state"][i]["ax"], ts["ax"].numpy()) <= 1e-10
    back = lrfast.from_torch_state_dict(topt.state_dict(), "ASGD", step_count=opt.step_count)
    clone = lrfast.ASGD([t.copy() for t in theirs], **hp)
    clone.load_state_dict(back)
    assert clone.state_dict()["state"][0]["eta"] == sd["state"][0]["eta"]
    del torch


# ---------------------------------------------------------------------------
# optax references
# ---------------------------------------------------------------------------
OPTAX_CASES = [
    ("Lion", dict(lr=0.01), lambda o, hp: o.lion(hp["lr"], weight_decay=0.0)),
    ("Lion", dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1),
     lambda o, hp: o.lion(hp["lr"], b1=0.8, b2=0.95, weight_decay=0.1)),
]


@pytest.mark.parametrize("case", OPTAX_CASES, ids=lambda c: torch_case_id(c[:2]))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_optax(case, dtype):
    name, hp, make = case
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    init, grads = problem(dtype)
    ours = [x.copy() for x in init]
    opt = getattr(lrfast, name)(ours, **hp)
    tx = make(optax, hp)
    theirs = [jnp.asarray(x.copy()) for x in init]
    state = tx.init(theirs)
    for _ in range(STEPS):
        gs = grads(ours)
        opt.step(gs)
        upd, state = tx.update([jnp.asarray(g) for g in gs], state, theirs)
        theirs = optax.apply_updates(theirs, upd)
    theirs = [np.asarray(t) for t in theirs]
    assert all(t.dtype == dtype for t in theirs)
    record(name, hp, dtype, ours, theirs)
    # far from the optimum every sign agrees: the moments match too
    m = [np.asarray(x) for x in state[0].mu]
    for i in range(len(ours)):
        assert rel_err(opt.state[i]["exp_avg"], m[i]) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lion_step_matches_twin(dtype):
    from lrfast import kernels as K

    def call(p, g, arrays, t, _):
        K.lion_step(p, g, *arrays, lr=0.01, beta1=0.8, beta2=0.95, weight_decay=0.1)
    _functional(dtype, 5000, 8, call, "Lion", dict(lr=0.01, betas=(0.8, 0.95),
                                                   weight_decay=0.1), ["exp_avg"])
