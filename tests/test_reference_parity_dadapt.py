"""D-Adaptation against its reference package (test-only, skipped when absent),
on torch CPU: DAdaptAdam, DAdaptSGD and DAdaptAdaGrad = dadaptation 3.2's
classes of the same names. The params, the d estimate after every step and
the saved state are compared.

The problem is not chaotic (small initial params, about 1e-3, and smooth
grads; see tests/test_reference_parity_lrfree.py): the reference's reductions
(torch.dot, .sum()) run in another order than lrfast's deterministic pass, a
last-bit difference that a badly scaled problem would amplify."""
import numpy as np
import pytest

import lrfast

torch = pytest.importorskip("torch")
dadaptation = pytest.importorskip("dadaptation")

from _lrfree_pair import run_pair  # noqa: E402
# the reference's per-param state -> lrfast's state entry (the same names)
STATE = {"DAdaptAdam": ("s", "exp_avg", "exp_avg_sq"), "DAdaptSGD": ("s", "z", "x0"),
         "DAdaptAdaGrad": ("alphak", "sk", "x0")}
GROUP = {"DAdaptAdam": ("numerator_weighted",), "DAdaptSGD": ("numerator_weighted", "g0_norm"),
         "DAdaptAdaGrad": ("gsq_weighted", "sksq_weighted", "skl1")}


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _compare(name, hp, dtype, groups=None, none_at=()):
    params, tp, opt, ref, ds, refds = run_pair(torch, getattr(dadaptation, name),
                                               getattr(lrfast, name), hp, dtype, groups,
                                               none_at)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    worst = max(_rel(p, x.detach().numpy()) for p, x in zip(params, tp))
    assert worst <= tol
    np.testing.assert_allclose(ds, refds, rtol=tol)
    assert ds[-1] > 10 * ds[0]                    # the estimate grew: not a trivial run
    sd = opt.state_dict()["state"]
    for i, x in enumerate(tp):
        for k in STATE[name]:
            b = ref.state[x][k].numpy()
            assert np.max(np.abs(sd[i][k] - b)) <= tol * np.max(np.abs(b)), k
    g0 = ref.param_groups[0]
    assert sd[0]["k"] == g0["k"]
    for k in GROUP[name]:
        assert abs(sd[0][k] - g0[k]) <= tol * abs(g0[k]), k
    return worst, max(abs(a - b) / b for a, b in zip(ds, refds))


OPTION_SETS = [
    ("DAdaptAdam", dict()),
    ("DAdaptAdam", dict(lr=0.5, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)),
    ("DAdaptAdam", dict(weight_decay=0.01, decouple=True, use_bias_correction=True)),
    ("DAdaptAdam", dict(growth_rate=1.2, d0=1e-5, betas=(0.0, 0.99))),
    ("DAdaptSGD", dict()),
    ("DAdaptSGD", dict(momentum=0.9, weight_decay=0.01)),
    ("DAdaptSGD", dict(lr=0.5, momentum=0.5, growth_rate=1.2, d0=1e-5)),
    ("DAdaptAdaGrad", dict()),
    ("DAdaptAdaGrad", dict(momentum=0.9, weight_decay=0.01, eps=1e-8)),
    ("DAdaptAdaGrad", dict(lr=0.5, momentum=0.5, growth_rate=1.2, d0=1e-5)),
]


def _ids(case):
    name, hp = case
    return name + "-" + ("-".join(f"{k}={v}" for k, v in hp.items()) or "default")


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", OPTION_SETS, ids=_ids)
def test_matches_dadaptation(case, dtype):
    name, hp = case
    _compare(name, hp, dtype)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["DAdaptAdam", "DAdaptSGD", "DAdaptAdaGrad"])
def test_groups_and_none_grads(name):
    groups = ([dict(weight_decay=0.01, eps=1e-7, layer_scale=0.5), dict()]
              if name == "DAdaptAdam" else
              [dict(weight_decay=0.01, eps=1e-7), dict()] if name == "DAdaptAdaGrad" else
              [dict(momentum=0.5), dict()])
    _compare(name, dict(), np.float64, groups=groups, none_at={5, 6, 20})
