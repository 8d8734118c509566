"""Learning-rate-free optimizers against their reference packages (test-only,
skipped when absent), on torch CPU: Prodigy = prodigyopt.Prodigy 1.1.2, DoG
and LDoG = dog-optimizer 1.0.3's dog.DoG and dog.LDoG.

The problems are not chaotic (small initial params, about 1e-3, and smooth
grads): on a badly scaled problem Prodigy's defaults amplify a last-bit
difference in a reduction (torch.dot's order is not lrfast's) by many orders
of magnitude, and its first steps (d about 1e-6) fall below float32
resolution on values near 1."""
import numpy as np
import pytest

import lrfast

torch = pytest.importorskip("torch")

from _lrfree_pair import STEPS, grad as _grad, problem as _problem, run_pair  # noqa: E402


def _compare(hp, dtype, groups=None, none_at=()):
    prodigyopt = pytest.importorskip("prodigyopt")
    params, tp, opt, ref, ds, refds = run_pair(torch, prodigyopt.Prodigy, lrfast.Prodigy, hp,
                                               dtype, groups, none_at)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for p, x in zip(params, tp):
        b = x.detach().numpy()
        assert np.max(np.abs(p - b)) / np.max(np.abs(b)) <= tol
    np.testing.assert_allclose(ds, refds, rtol=tol)
    assert ds[-1] > 100 * ds[0]                   # the estimate grew: not a trivial run
    sd = opt.state_dict()["state"]
    for i, x in enumerate(tp):
        rs = ref.state[x]
        if "exp_avg" in rs:
            b = rs["exp_avg"].numpy()
            assert np.max(np.abs(sd[i]["exp_avg"] - b)) <= tol * np.max(np.abs(b))
        b = rs["s"].numpy().reshape(sd[i]["s"].shape)
        assert np.max(np.abs(sd[i]["s"] - b)) <= tol * np.max(np.abs(b))
        np.testing.assert_array_equal(sd[i]["p0"].ravel(), rs["p0"].numpy())
    g0 = ref.param_groups[0]
    assert sd[0]["k"] == g0["k"]
    assert abs(sd[0]["d_numerator"] - g0["d_numerator"]) <= tol * abs(g0["d_numerator"])
    assert abs(sd[0]["d_max"] - g0["d_max"]) <= tol * g0["d_max"]


OPTION_SETS = [
    dict(),
    dict(lr=0.5, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    dict(weight_decay=0.01, decouple=False, use_bias_correction=True),
    dict(safeguard_warmup=True, beta3=0.95, growth_rate=1.2, d0=1e-5, d_coef=0.8),
    dict(betas=(0.0, 0.99)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hp", OPTION_SETS,
                         ids=lambda h: "-".join(f"{k}={v}" for k, v in h.items()) or "default")
def test_prodigy_matches_prodigyopt(hp, dtype):
    _compare(hp, dtype)


def test_prodigy_groups_and_none_grads():
    _compare(dict(), np.float64, groups=[dict(weight_decay=0.01, eps=1e-7),
                                         dict(safeguard_warmup=True)], none_at={5, 6, 20})


DOG_SETS = [dict(), dict(reps_rel=1e-4, weight_decay=0.01, eps=1e-6), dict(init_eta=1e-4)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hp", DOG_SETS,
                         ids=lambda h: "-".join(f"{k}={v}" for k, v in h.items()) or "default")
@pytest.mark.parametrize("name", ["DoG", "LDoG"])
def test_dog_matches_dog_optimizer(name, hp, dtype):
    dog = pytest.importorskip("dog")
    params, target = _problem(dtype)
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    tp = [torch.tensor(p.copy(), dtype=tdt, requires_grad=True) for p in params]
    groups = [dict(params=tp[:1]), dict(params=tp[1:], eps=1e-7)]
    ref = getattr(dog, name)(groups, **hp)
    opt = getattr(lrfast, name)([dict(params=params[:1]), dict(params=params[1:], eps=1e-7)],
                                **hp)
    etas = []
    for t in range(STEPS):
        grads = [_grad(p, c, t).astype(dtype) for p, c in zip(params, target)]
        for x, g in zip(tp, grads):
            x.grad = torch.tensor(g.copy(), dtype=tdt)
        opt.step(grads)
        ref.step()
        ref_eta = [float(e) for grp in ref.param_groups for e in grp["eta"]]
        mine = opt.d if name == "LDoG" else [opt.d[0]] + [opt.d[1]] * (len(params) - 1)
        etas.append(mine[0])
        tol = 1e-10 if dtype == np.float64 else 1e-4
        np.testing.assert_allclose(mine, ref_eta, rtol=tol)
    for p, x in zip(params, tp):
        b = x.detach().numpy()
        assert np.max(np.abs(p - b)) / np.max(np.abs(b)) <= tol
    assert etas[-1] > 100 * etas[0]               # the step size grew: not a trivial run
