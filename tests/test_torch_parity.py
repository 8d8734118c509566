"""lrfast vs torch.optim.<Name>(foreach=False), >= 50 steps of a contracting
problem, SPEC.md's parity policy: per tensor max|a-b|/max|b| <= 1e-10 (float64,
torch default dtype float64) and <= 1e-4 (float32)."""
import numpy as np
import pytest

import lrfast

from _cases import CASES as _ALL, case_id
from lrfast.optim import TABLE

CASES = [c for c in _ALL if "torch" in TABLE[c[0]].refs]   # torch-referenced optimizers

torch = pytest.importorskip("torch")

TOL = {np.float64: 1e-10, np.float32: 1e-4}
SHAPES = [(17, 9), (64,), (1,), (3, 4, 5)]


def _torch_hp(name, hp):
    if name == "AdamW" or name in ("Adam",):
        return dict(hp)
    return dict(hp)


def run(name, hp, dtype, steps=60, groups=None, none_at=()):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    target = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [x.copy() for x in init]
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        theirs = [torch.tensor(x.copy()) for x in init]
        if groups is None:
            opt = getattr(lrfast, name)(ours, **hp)
            topt = getattr(torch.optim, name)(theirs, foreach=False, **hp)
        else:
            opt = getattr(lrfast, name)([{"params": [ours[i] for i in idx], **g}
                                         for idx, g in groups], **hp)
            topt = getattr(torch.optim, name)([{"params": [theirs[i] for i in idx], **g}
                                               for idx, g in groups], foreach=False, **hp)
        order = list(range(len(SHAPES))) if groups is None else [i for idx, _ in groups
                                                                  for i in idx]
        for k in range(steps):
            # a contracting problem: f = 0.5*|p - target|^2 plus a little noise
            gs = [((p - t) * dtype(0.7) + dtype(0.01) * rng.standard_normal(p.shape).astype(dtype))
                  for p, t in zip(ours, target)]
            gs = [None if (k, i) in none_at else g for i, g in enumerate(gs)]
            opt.step([gs[i] for i in order])
            for tp, g in zip(theirs, gs):
                tp.grad = None if g is None else torch.tensor(g.copy())
            topt.step()
    finally:
        torch.set_default_dtype(prev)
    return ours, [t.detach().numpy() for t in theirs], opt, topt


def rel_err(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch(case, dtype):
    name, hp = case
    ours, theirs, _, _ = run(name, hp, dtype)
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= TOL[dtype], (name, hp)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_groups_match_torch(name):
    hp = dict(lr=0.01)
    groups = [([0, 2], {"lr": 0.05, "weight_decay": 0.01}), ([1, 3], {"lr": 0.02})]
    if name == "SGD":
        groups[1][1]["momentum"] = 0.9
    ours, theirs, _, _ = run(name, hp, np.float64, groups=groups)
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-10


@pytest.mark.parametrize("name", ["SGD", "Adam", "NAdam", "RAdam", "Adagrad"])
def test_none_grads_match_torch(name):
    hp = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    none_at = {(0, 1), (1, 1), (5, 0), (7, 3), (8, 3), (9, 2)}
    ours, theirs, opt, topt = run(name, hp, np.float64, none_at=none_at)
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-10
    if name != "SGD":
        tsteps = [int(topt.state[p]["step"]) for p in topt.param_groups[0]["params"]]
        assert [opt.state[i]["step"] for i in range(len(SHAPES))] == tsteps


def test_scheduled_lr_matches_torch_lambdalr():
    lam = lambda n: 0.95 ** n  # noqa: E731
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10)
    ours = [x.copy()]
    t = torch.tensor(x.copy())
    opt = lrfast.Adam(ours, lr=lambda n: 0.1 * lam(n))
    topt = torch.optim.Adam([t], lr=0.1, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(topt, lam)
    for _ in range(50):
        g = ours[0] * 0.5
        opt.step([g])
        t.grad = torch.tensor(g.copy())
        topt.step()
        sched.step()
    assert rel_err(ours[0], t.numpy()) <= 1e-10
