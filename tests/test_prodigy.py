"""Prodigy: the engine's global (all-params) sums and step-size estimate, bitwise
against the numpy twin (lrfast._reference.prodigy) for any thread count; the
state_dict round trip; bad input. Parity with prodigyopt itself:
tests/test_reference_parity_lrfree.py."""
import copy

import numpy as np
import pytest

import lrfast
from lrfast import _reference as R

OPTION_SETS = [
    dict(),
    dict(lr=0.5, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    dict(weight_decay=0.02, decouple=False, use_bias_correction=True, d_coef=0.7),
    dict(safeguard_warmup=True, beta3=0.95, growth_rate=1.05, d0=1e-5),
    dict(betas=(0.0, 0.99), weight_decay=0.01),
]


def _problem(dtype, seed=0, sizes=((5000,), (3, 7), (40000,))):
    rng = np.random.default_rng(seed)
    params = [(1e-3 * rng.standard_normal(s)).astype(dtype) for s in sizes]
    target = [rng.standard_normal(s).astype(dtype) for s in sizes]
    return params, target


def _grads(params, target, dtype, t):
    # smooth grads of 0.5*||p - target||^2, with a slow drift
    return [((p - c) * dtype(1.0 + 0.01 * np.sin(t))).astype(dtype)
            for p, c in zip(params, target)]


def _run(hp, dtype, threads, steps=25, groups=None, none_at=None):
    params, target = _problem(dtype)
    twin_p = [p.copy() for p in params]
    if groups is None:
        opt = lrfast.Prodigy(params, **hp)
        ghp, gof = [hp], [0] * len(params)
    else:
        opt = lrfast.Prodigy([dict(params=params[:1], **groups[0]),
                              dict(params=params[1:], **groups[1])], **hp)
        ghp = [dict(hp, **groups[0]), dict(hp, **groups[1])]
        gof = [0] + [1] * (len(params) - 1)
    st = [R.prodigy_state(p, **ghp[gof[i]]) for i, p in enumerate(twin_p)]
    gst = R.prodigy_global(**ghp[0])
    with lrfast.threads(threads):
        for t in range(steps):
            g = _grads(params, target, dtype, t)
            if none_at is not None and t in none_at:
                g[1] = None
            opt.step(g)
            R.prodigy(twin_p, [None if x is None else x.copy() for x in g], st, gst, ghp, gof)
            assert opt.d == gst["d"]
    return opt, params, twin_p, st, gst


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hp", OPTION_SETS,
                         ids=lambda h: "-".join(f"{k}={v}" for k, v in h.items()) or "default")
def test_twin_bitwise(hp, dtype, threads):
    opt, params, twin_p, st, gst = _run(hp, dtype, threads)
    assert opt.d > 1e-6                          # d grew from d0: the estimate ran
    for p, q in zip(params, twin_p):
        np.testing.assert_array_equal(p, q)
    sd = opt.state_dict()["state"]
    for i, s in enumerate(st):
        for k in ("s", "p0", "exp_avg_sq") + (("exp_avg",) if "exp_avg" in s else ()):
            np.testing.assert_array_equal(sd[i][k], s[k])
        assert sd[i]["d"] == gst["d"] and sd[i]["d_max"] == gst["d_max"]
        assert sd[i]["d_numerator"] == gst["d_numerator"] and sd[i]["k"] == gst["k"]
        assert ("exp_avg" in sd[i]) == (("betas" not in hp) or hp["betas"][0] > 0)


def test_groups_and_none_grads():
    groups = [dict(weight_decay=0.01, eps=1e-7, d0=2e-6), dict(safeguard_warmup=True)]
    opt, params, twin_p, st, gst = _run(dict(), np.float64, 2, groups=groups,
                                        none_at={3, 4, 10})
    for p, q in zip(params, twin_p):
        np.testing.assert_array_equal(p, q)
    assert opt.state_dict()["state"][1]["step"] == 22


def test_zero_lr_group_twin():
    opt, params, twin_p, st, gst = _run(dict(), np.float64, 1,
                                        groups=[dict(lr=0.0), dict()])
    for p, q in zip(params, twin_p):
        np.testing.assert_array_equal(p, q)


def test_resume_exact():
    params, target = _problem(np.float64)
    a = [p.copy() for p in params]
    opt = lrfast.Prodigy(a, use_bias_correction=True)
    for t in range(10):
        opt.step(_grads(a, target, np.float64, t))
    sd = copy.deepcopy(opt.state_dict())
    b = [p.copy() for p in a]
    opt2 = lrfast.Prodigy(b, use_bias_correction=True)
    opt2.load_state_dict(sd)
    assert opt2.d == opt.d
    for t in range(10, 20):
        opt.step(_grads(a, target, np.float64, t))
        opt2.step(_grads(b, target, np.float64, t))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert opt2.d == opt.d
    opt2.load_state_dict(opt2.state_dict())           # and a fresh state starts at d0
    fresh = lrfast.Prodigy([p.copy() for p in b])
    opt2.load_state_dict(fresh.state_dict())
    assert opt2.d == 1e-6


def test_bad_input_changes_nothing():
    params, target = _problem(np.float64)
    opt = lrfast.Prodigy(params)
    for t in range(3):
        opt.step(_grads(params, target, np.float64, t))
    sd = opt.state_dict()
    snap = [p.copy() for p in params]
    d = opt.d
    bad = copy.deepcopy(sd)
    bad["state"][0]["p0"] = np.zeros(7)               # mismatched x0 shape
    with pytest.raises(ValueError, match="p0"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(sd)
    bad["state"][1]["d"] = 2 * bad["state"][1]["d"]   # entries disagree on d
    with pytest.raises(ValueError, match="disagree"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(sd)
    bad["state"][1]["d"] = -1.0
    with pytest.raises(ValueError, match="'d'"):
        opt.load_state_dict(bad)
    assert opt.d == d
    for p, q in zip(params, snap):
        np.testing.assert_array_equal(p, q)
    g2 = lrfast.Prodigy([dict(params=[np.zeros(3)], lr=1.0),
                         dict(params=[np.zeros(3)], lr=0.5)])
    with pytest.raises(ValueError, match="largest"):
        g2.step([np.ones(3), np.ones(3)])
    assert g2.state_dict()["state"] == {}


@pytest.mark.parametrize("kw, exc", [
    (dict(slice_p=2), NotImplementedError), (dict(slice_p=0), ValueError),
    (dict(slice_p=1.0), TypeError), (dict(beta3=1.0), ValueError), (dict(beta3="x"), TypeError),
    (dict(growth_rate=0.5), ValueError), (dict(d0=0.0), ValueError), (dict(eps=0.0), ValueError),
    (dict(betas=(1.0, 0.9)), ValueError), (dict(d_coef=-1.0), ValueError),
    (dict(d0=lambda n: 1e-6), TypeError)])
def test_bad_hyperparams(kw, exc):
    with pytest.raises(exc):
        lrfast.Prodigy([np.zeros(3)], **kw)


def test_all_zero_grads_do_not_move_params():
    # the reference returns before the update when every s is zero
    p = [np.full(4, 1e-3)]
    opt = lrfast.Prodigy(p)
    opt.step([np.zeros(4)])
    np.testing.assert_array_equal(p[0], np.full(4, 1e-3))
    assert opt.d == 1e-6 and opt.state_dict()["state"][0]["k"] == 0


def test_load_refuses_entry_lacking_exp_avg():
    # beta1 > 0: an entry without exp_avg is malformed (it zero-filled it: an
    # inexact resume); with beta1 == 0 the reference keeps none, and that loads
    rng = np.random.default_rng(0)
    p = rng.standard_normal(5)
    opt = lrfast.Prodigy([p])
    for _ in range(3):
        opt.step([rng.standard_normal(5)])
    before = copy.deepcopy(opt.state_dict())
    sd = copy.deepcopy(before)
    del sd["state"][0]["exp_avg"]
    with pytest.raises(ValueError, match="exp_avg"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert np.array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])
    q = rng.standard_normal(5)
    o0 = lrfast.Prodigy([q], betas=(0.0, 0.999))
    o0.step([rng.standard_normal(5)])
    sd0 = o0.state_dict()
    assert "exp_avg" not in sd0["state"][0]
    lrfast.Prodigy([q.copy()], betas=(0.0, 0.999)).load_state_dict(sd0)
