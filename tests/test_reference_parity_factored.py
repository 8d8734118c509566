"""Adafactor and Muon (the optimizers with their own step): parity with
torch.optim 2.13 (foreach=False) on contracting problems far from the
optimum, bitwise equality with their numpy twins for 1 and 2 threads, errors
that change nothing, None grads and exact resume.

Muon: torch runs its Newton-Schulz iteration in bfloat16; the reference here
is torch's algorithm with that cast removed (torch's own
``_zeropower_via_newtonschulz`` is replaced for the test by the same code
without ``.bfloat16()``)."""
import copy
import pickle

import numpy as np
import pytest

import lrfast
from lrfast import _reference as R

TOL = {np.float64: 1e-10, np.float32: 1e-4}
STEPS = 60
AF_SHAPES = [(6, 5), (3, 4, 7), (40, 3), (9,), ()]
MUON_SHAPES = [(6, 5), (4, 9), (16, 16)]


def _problem(shapes, dtype, seed=0):
    """f = 0.5 * sum h*(p - t)^2 with h in [0.5, 2], started ~10 away from t."""
    rng = np.random.default_rng(seed)
    t = [np.array(rng.standard_normal(s), dtype) for s in shapes]
    h = [np.array(rng.uniform(0.5, 2.0, s), dtype) for s in shapes]
    p0 = [np.array(ti + 10 * rng.standard_normal(s), dtype) for ti, s in zip(t, shapes)]
    return p0, lambda ps: [np.array(hi * (pi - ti), dtype) for hi, pi, ti in zip(h, ps, t)]


def _rel(a, b):
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-300))


def _torch_run(cls, p0, grad_fn, hp, steps, sign=1.0):
    torch = pytest.importorskip("torch")
    tp = [torch.tensor(p.copy()) for p in p0]
    for x in tp:
        x.requires_grad_(False)
    opt = cls(tp, **hp)
    for _ in range(steps):
        gs = grad_fn([x.numpy() for x in tp])
        for x, g in zip(tp, gs):
            x.grad = torch.tensor(sign * g)
        opt.step()
    return [x.numpy() for x in tp]


AF_OPTS = [dict(), dict(lr=0.05, weight_decay=0.01, d=2.0, beta2_decay=-0.5),
           dict(lr=0.02, eps=(1e-12, 1e-2), maximize=True)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hp", AF_OPTS, ids=str)
def test_adafactor_matches_torch(dtype, hp):
    torch = pytest.importorskip("torch")
    p0, grad_fn = _problem(AF_SHAPES, dtype)
    sign = -1.0 if hp.get("maximize") else 1.0
    ref = _torch_run(torch.optim.Adafactor, p0, grad_fn, {**hp, "foreach": False}, STEPS, sign)
    ps = [p.copy() for p in p0]
    opt = lrfast.Adafactor(ps, **hp)
    for _ in range(STEPS):
        opt.step([np.array(sign * g, dtype) for g in grad_fn(ps)])
    for a, b, q in zip(ps, ref, p0):
        assert _rel(a, b) <= TOL[dtype], (a.shape, _rel(a, b))
        assert _rel(q, b) > 100 * TOL[dtype]          # the params really moved
    # torch's state names and shapes
    tst = torch.optim.Adafactor([torch.zeros(3, 4, 7, dtype=torch.float64)])
    x = tst.param_groups[0]["params"][0]
    x.grad = torch.ones_like(x)
    tst.step()
    st = opt.state[1]
    assert st["row_var"].shape == tuple(tst.state[x]["row_var"].shape) == (3, 4, 1)
    assert st["col_var"].shape == tuple(tst.state[x]["col_var"].shape) == (3, 1, 7)
    assert set(opt.state[3]) == {"step", "variance"} and opt.state[3]["step"] == STEPS


def _ns_no_bf16(grad, ns_coefficients, ns_steps, eps):
    """torch.optim._muon._zeropower_via_newtonschulz without the bfloat16 cast."""
    import torch
    a, b, c = ns_coefficients
    x = grad.clone()
    if grad.size(0) > grad.size(1):
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        upd = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, upd, x, beta=a)
    if grad.size(0) > grad.size(1):
        x = x.T
    return x


MUON_OPTS = [dict(lr=0.02), dict(lr=0.02, nesterov=False, weight_decay=0.0),
             dict(lr=0.01, momentum=0.9, adjust_lr_fn="match_rms_adamw", weight_decay=0.05),
             dict(lr=0.02, adjust_lr_fn="original", ns_steps=3, eps=1e-5)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hp", MUON_OPTS, ids=str)
def test_muon_matches_torch_without_bfloat16(dtype, hp, monkeypatch):
    torch = pytest.importorskip("torch")
    import torch.optim._muon as tm
    monkeypatch.setattr(tm, "_zeropower_via_newtonschulz", _ns_no_bf16)
    p0, grad_fn = _problem(MUON_SHAPES, dtype, seed=1)
    ref = _torch_run(torch.optim.Muon, p0, grad_fn, hp, STEPS)
    ps = [p.copy() for p in p0]
    opt = lrfast.Muon(ps, **hp)
    for _ in range(STEPS):
        opt.step(grad_fn(ps))
    for a, b, q in zip(ps, ref, p0):
        assert _rel(a, b) <= TOL[dtype], (a.shape, _rel(a, b))
        assert _rel(q, b) > 100 * TOL[dtype]
    assert set(opt.state[0]) == {"momentum_buffer"}


def _twin_run(name, shapes, dtype, hp, threads, steps=4, order="C", none_at=None):
    rng = np.random.default_rng(3)
    ps = [np.asarray(rng.standard_normal(s), dtype=dtype, order=order) for s in shapes]
    qs = [p.copy() for p in ps]
    opt = getattr(lrfast, name)(ps, **hp)
    names = opt.spec.states
    sts = [{k: a.copy() for k, a in zip(names, s) if a is not None} for s in opt._states]
    tcount = [0] * len(ps)
    twin = getattr(R, name.lower())
    with lrfast.threads(threads):
        for k in range(steps):
            gs = [np.asarray(rng.standard_normal(s), dtype=dtype, order=order) for s in shapes]
            if none_at is not None and k % 2 == 1:
                gs[none_at] = None
            assert opt.step(gs)
            for i, g in enumerate(gs):
                if g is None:
                    continue
                tcount[i] += 1
                twin(qs[i], g, sts[i], step=tcount[i], **hp)
    for i in range(len(ps)):
        assert np.array_equal(ps[i], qs[i]), (i, shapes[i])
        for k, a in sts[i].items():
            assert np.array_equal(opt.state[i][k], a), (i, k)
    return ps


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_adafactor_bitwise_twin_any_threads(dtype, order):
    # above the parallel threshold: (300, 200), a batch of matrices, a long vector
    shapes = [(300, 200), (2, 130, 70), (70001,), (5, 3), ()]
    hp = dict(lr=0.03, weight_decay=0.01, maximize=True)
    out = [_twin_run("Adafactor", shapes, dtype, hp, nt, order=order, none_at=3)
           for nt in (1, 2)]
    for a, b in zip(*out):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_muon_bitwise_twin(dtype):
    for nt in (1, 2):
        _twin_run("Muon", [(40, 30), (20, 50)], dtype, dict(lr=0.02), nt, none_at=1)


def _snapshot(opt, ps):
    return [p.copy() for p in ps], copy.deepcopy(opt.state_dict())


def test_adafactor_bad_grads_change_nothing():
    ps = [np.ones((4, 3)), np.ones(5)]
    opt = lrfast.Adafactor(ps)
    opt.step([np.full((4, 3), 0.5), np.full(5, 0.5)])
    before = _snapshot(opt, ps)
    bad = [[np.ones((4, 3)), np.ones(4)], [np.ones((4, 3)), np.ones(5, np.float32)],
           [np.ones((4, 3))], [np.ones((3, 4)), np.ones(5)], [np.ones((4, 3)), "x"],
           [np.ones((4, 3)), ps[1]]]
    for grads in bad:
        with pytest.raises((TypeError, ValueError)):
            opt.step(grads)
        after = _snapshot(opt, ps)
        for a, b in zip(before[0], after[0]):
            assert np.array_equal(a, b)
        assert after[1]["step_count"] == before[1]["step_count"] == 1
        for i in (0, 1):
            for k, v in before[1]["state"][i].items():
                assert np.array_equal(np.asarray(v), np.asarray(after[1]["state"][i][k]))


@pytest.mark.parametrize("kw, exc", [
    (dict(beta2_decay=0.1), ValueError), (dict(d=0.5), ValueError),
    (dict(eps=(-1.0, 1e-3)), ValueError), (dict(eps=(None, -1.0)), ValueError),
    (dict(eps=(None,)), ValueError), (dict(eps=("a", 1e-3)), TypeError),
    (dict(lr=-1.0), ValueError), (dict(weight_decay=float("nan")), ValueError),
    (dict(maximize=1), TypeError), (dict(eps=lambda n: (None, 1e-3)), TypeError)])
def test_adafactor_bad_hyperparameters(kw, exc):
    with pytest.raises(exc):
        lrfast.Adafactor([np.ones(3)], **kw)
    opt = lrfast.Adafactor([np.ones(3)])
    with pytest.raises(exc):
        opt.param_groups[0].update(kw)
    assert opt.param_groups[0]["eps"] == (None, 1e-3) and opt.param_groups[0]["d"] == 1.0


@pytest.mark.parametrize("kw, exc", [
    (dict(ns_steps=100), ValueError), (dict(ns_steps=2.0), TypeError),
    (dict(adjust_lr_fn="other"), ValueError), (dict(ns_coefficients=(1.0, 2.0)), ValueError),
    (dict(ns_coefficients=(1.0, 2.0, float("inf"))), ValueError), (dict(momentum=-0.1), ValueError),
    (dict(nesterov=None), TypeError), (dict(eps=-1.0), ValueError)])
def test_muon_bad_hyperparameters(kw, exc):
    with pytest.raises(exc):
        lrfast.Muon([np.ones((2, 3))], **kw)


def test_muon_refuses_non_matrices_and_nonfinite_updates():
    with pytest.raises(ValueError, match="2-D"):
        lrfast.Muon([np.ones((2, 3)), np.ones(3)])
    with pytest.raises(ValueError, match="2-D"):
        lrfast.Muon([np.ones((2, 3, 4))])
    opt = lrfast.Muon([np.ones((2, 3))])
    with pytest.raises(ValueError, match="2-D"):
        opt.add_param_group({"params": [np.ones(3)]})
    assert len(opt.param_groups) == 1
    ps = [np.ones((3, 2)), np.ones((2, 4))]
    opt = lrfast.Muon(ps, lr=0.1)
    opt.step([np.full((3, 2), 0.5), np.full((2, 4), 0.5)])
    before = _snapshot(opt, ps)
    g = np.full((2, 4), 0.5)
    g[0, 0] = np.inf
    with pytest.raises(ValueError, match="not finite"):
        opt.step([np.ones((3, 2)), g])              # the first param's update is fine
    after = _snapshot(opt, ps)
    for a, b in zip(before[0], after[0]):
        assert np.array_equal(a, b)
    for i in (0, 1):
        assert np.array_equal(before[1]["state"][i]["momentum_buffer"],
                              after[1]["state"][i]["momentum_buffer"])
    assert after[1]["step_count"] == 1
    opt.skip_nonfinite = True
    assert opt.step([np.ones((3, 2)), g]) is False and opt.skipped_steps == 1


@pytest.mark.parametrize("name, shapes, hp", [
    ("Adafactor", [(5, 4), (2, 3, 6), (7,)], dict(lr=lambda n: 0.05 * 0.97 ** n,
                                                   weight_decay=0.01)),
    ("Muon", [(5, 4), (3, 6)], dict(lr=lambda n: 0.05 * 0.97 ** n, nesterov=False))])
def test_state_dict_resume_is_exact(name, shapes, hp):
    rng = np.random.default_rng(5)
    cls = getattr(lrfast, name)
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(12)]
    grads[2][1] = None                              # a None grad before the save
    ps = [rng.standard_normal(s) for s in shapes]
    opt = cls(ps, **hp)
    for g in grads[:6]:
        opt.step(g)
    sd = copy.deepcopy(opt.state_dict())
    qs = [p.copy() for p in ps]
    for g in grads[6:]:
        opt.step(g)
    opt2 = cls(qs, **hp)
    opt2.load_state_dict(sd)
    for g in grads[6:]:
        opt2.step(g)
    for a, b in zip(ps, qs):
        assert np.array_equal(a, b)
    assert opt2.step_count == opt.step_count == 12
    if name == "Adafactor":
        assert sd["state"][1]["step"] == 5 and sd["state"][0]["step"] == 6
    # pickling (static lr) round-trips the state
    opt3 = cls([p.copy() for p in ps], **{**hp, "lr": 0.01})
    opt3.step(grads[0])
    opt4 = pickle.loads(pickle.dumps(opt3))
    for a, b in zip(opt3._states, opt4._states):
        for x, y in zip(a, b):
            assert (x is None and y is None) or np.array_equal(x, y)


def test_adafactor_load_refuses_wrong_state_shapes():
    ps = [np.ones((4, 3))]
    opt = lrfast.Adafactor(ps)
    opt.step([np.ones((4, 3))])
    sd = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(sd)
    bad["state"][0]["row_var"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match="row_var"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(sd)
    bad["state"][0]["variance"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match="variance"):
        opt.load_state_dict(bad)
    assert np.array_equal(opt.state[0]["row_var"], sd["state"][0]["row_var"])


@pytest.mark.parametrize("name", ["Adafactor", "Muon"])
def test_stale_param_geometry_is_refused(name):
    # numpy lets a live array change dtype or buffer: the own step refuses it
    # before any write, as the engine optimizers do
    p = np.ones((4, 3))
    opt = getattr(lrfast, name)([p])
    opt.step([np.full((4, 3), 0.1)])
    before = opt.state_dict()
    p.dtype = np.float32                      # same buffer, reinterpreted: (4, 6) float32
    with pytest.raises(ValueError, match="changed after it was registered"):
        opt.step([np.full((4, 6), 0.1, np.float32)])
    p.dtype = np.float64
    after = opt.state_dict()
    assert after["step_count"] == before["step_count"]


@pytest.mark.parametrize("adjust", [None, "match_rms_adamw"])
def test_muon_leaves_empty_params_alone(adjust):
    # a (3, 0) param as a (0, 3) one: nothing to update, the other params step
    # as without it (its lr factor divided by zero columns)
    ps = [np.ones((3, 0)), np.ones((0, 3)), np.full((4, 5), 0.5)]
    ref = [np.full((4, 5), 0.5)]
    opt = lrfast.Muon(ps, lr=0.02, adjust_lr_fn=adjust)
    opt_ref = lrfast.Muon(ref, lr=0.02, adjust_lr_fn=adjust)
    g = np.linspace(-1, 1, 20).reshape(4, 5)
    for _ in range(2):
        assert opt.step([np.ones((3, 0)), np.ones((0, 3)), g])
        opt_ref.step([g])
    assert np.array_equal(ps[2], ref[0])
    assert opt.state[0]["momentum_buffer"].shape == (3, 0)
