"""DoG and LDoG: the engine's per-group (DoG) and per-tensor (LDoG) norms and
step sizes, bitwise against the numpy twin (lrfast._reference.dog) for any
thread count; state_dict round trip; bad input. Parity with dog-optimizer:
tests/test_reference_parity_lrfree.py."""
import copy

import numpy as np
import pytest

import lrfast
from lrfast import _reference as R
from test_prodigy import _grads, _problem  # the same smooth problem

OPTION_SETS = [dict(), dict(reps_rel=1e-4, weight_decay=0.01, eps=1e-6),
               dict(init_eta=1e-3, lr=0.8)]


def _run(name, hp, dtype, threads, steps=20, groups=None, none_at=()):
    layer = name == "LDoG"
    params, target = _problem(dtype)
    twin_p = [p.copy() for p in params]
    cls = getattr(lrfast, name)
    if groups is None:
        opt = cls(params, **hp)
        ghp, gof = [hp], [0] * len(params)
    else:
        opt = cls([dict(params=params[:1], **groups[0]), dict(params=params[1:], **groups[1])],
                  **hp)
        ghp = [dict(hp, **groups[0]), dict(hp, **groups[1])]
        gof = [0] + [1] * (len(params) - 1)
    st = [dict(step=0, rbar=0.0, G=0.0, eta=0.0) for _ in params]
    gst = [dict(rbar=0.0, G=0.0, eta=0.0) for _ in ghp]
    with lrfast.threads(threads):
        for t in range(steps):
            g = _grads(params, target, dtype, t)
            if t in none_at:
                g[1] = None
            opt.step(g)
            R.dog(twin_p, [None if x is None else x.copy() for x in g], st, gst, ghp, gof,
                  layer=layer)
    return opt, params, twin_p, st, gst


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hp", OPTION_SETS,
                         ids=lambda h: "-".join(f"{k}={v}" for k, v in h.items()) or "default")
@pytest.mark.parametrize("name", ["DoG", "LDoG"])
def test_twin_bitwise(name, hp, dtype, threads):
    opt, params, twin_p, st, gst = _run(name, hp, dtype, threads)
    for p, q in zip(params, twin_p):
        np.testing.assert_array_equal(p, q)
    sd = opt.state_dict()["state"]
    for i, s in enumerate(st):
        np.testing.assert_array_equal(sd[i]["x0"], s["x0"])
        ref = s if name == "LDoG" else gst[0]
        assert (sd[i]["rbar"], sd[i]["G"], sd[i]["eta"]) == (ref["rbar"], ref["G"], ref["eta"])
    if name == "DoG":
        assert opt.d == gst[0]["eta"] > 0
    else:
        assert opt.d == [s["eta"] for s in st]


@pytest.mark.parametrize("name", ["DoG", "LDoG"])
def test_groups_and_none_grads(name):
    opt, params, twin_p, st, gst = _run(name, dict(), np.float64, 2,
                                        groups=[dict(weight_decay=0.01), dict(reps_rel=1e-5)],
                                        none_at={0, 3, 4})
    for p, q in zip(params, twin_p):
        np.testing.assert_array_equal(p, q)
    if name == "DoG":
        assert opt.d == [gst[0]["eta"], gst[1]["eta"]]


@pytest.mark.parametrize("name", ["DoG", "LDoG"])
def test_resume_exact(name):
    params, target = _problem(np.float64)
    a = [p.copy() for p in params]
    cls = getattr(lrfast, name)
    opt = cls(a, weight_decay=0.01)
    for t in range(8):
        opt.step(_grads(a, target, np.float64, t))
    sd = copy.deepcopy(opt.state_dict())
    b = [p.copy() for p in a]
    opt2 = cls(b, weight_decay=0.01)
    opt2.load_state_dict(sd)
    for t in range(8, 16):
        opt.step(_grads(a, target, np.float64, t))
        opt2.step(_grads(b, target, np.float64, t))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert opt2.d == opt.d


def test_dog_bad_state_changes_nothing():
    params, target = _problem(np.float64)
    opt = lrfast.DoG(params)
    for t in range(3):
        opt.step(_grads(params, target, np.float64, t))
    sd = opt.state_dict()
    snap, d = [p.copy() for p in params], opt.d
    for bad_entry, match in [({"x0": np.zeros(3)}, "x0"), ({"G": 2 * sd["state"][1]["G"]},
                                                           "disagree"),
                             ({"eta": -1.0}, "'eta'")]:
        bad = copy.deepcopy(sd)
        bad["state"][1].update(bad_entry)
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(bad)
    assert opt.d == d
    for p, q in zip(params, snap):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("name", ["DoG", "LDoG"])
@pytest.mark.parametrize("kw, exc", [
    (dict(reps_rel=0.0), ValueError), (dict(init_eta=0.0), ValueError),
    (dict(init_eta="x"), TypeError), (dict(eps=0.0), ValueError),
    (dict(weight_decay=-1.0), ValueError), (dict(reps_rel=lambda n: 1e-6), TypeError)])
def test_bad_hyperparams(name, kw, exc):
    with pytest.raises(exc):
        getattr(lrfast, name)([np.zeros(3)], **kw)
