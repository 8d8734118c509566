"""The schedule-free optimizers against the ``schedulefree`` package (1.4.1).

>= 60 steps of a smooth contracting problem from small initial params (about
1e-3), two param groups with their own hyperparameters, the same grads fed
to both: per tensor max|a-b|/max|b| <= 1e-10 (float64) and <= 1e-4 (float32),
for the params in train mode (y) and, after ``eval()``, in eval mode (x), with
a train/eval/train cycle mid-run. Checkpoints taken in either mode resume
exactly (bit for bit against the uninterrupted run).
"""
import numpy as np
import pytest

import lrfast

TOL = {np.float64: 1e-10, np.float32: 1e-4}
SHAPES = [(17, 9), (64,), (3, 4, 5)]
REF = {"ScheduleFreeSGD": "SGDScheduleFree", "ScheduleFreeAdamW": "AdamWScheduleFree",
       "ScheduleFreeRAdam": "RAdamScheduleFree"}

# (name, group 0's options, group 1's options)
SF_CASES = [
    ("ScheduleFreeSGD", dict(lr=0.1), dict(lr=0.05, momentum=0.8)),
    ("ScheduleFreeSGD", dict(lr=0.1, warmup_steps=10, weight_decay=0.01),
     dict(lr=0.2, momentum=0.3, r=1.0, weight_lr_power=1.0)),
    ("ScheduleFreeSGD", dict(), dict(lr=0.5, weight_lr_power=0.0)),
    ("ScheduleFreeAdamW", dict(), dict(lr=0.01, betas=(0.8, 0.99))),
    ("ScheduleFreeAdamW", dict(lr=0.01, warmup_steps=20, weight_decay=0.05, r=0.5),
     dict(lr=0.005, eps=1e-6, r=2.0, weight_lr_power=1.0, weight_decay=0.1)),
    ("ScheduleFreeRAdam", dict(), dict(lr=0.01, betas=(0.9, 0.99))),
    ("ScheduleFreeRAdam", dict(lr=0.01, weight_decay=0.02, r=1.0),
     dict(lr=0.005, silent_sgd_phase=False, weight_lr_power=1.0)),
]


def _id(c):
    return c[0] + "-" + "-".join(f"{k}={v}" for hp in c[1:] for k, v in hp.items())


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    init = [(1e-3 * rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    target = [(0.5 + 0.3 * rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    curv = [(0.5 + rng.random(s)).astype(dtype) for s in SHAPES]
    return init, target, curv


def _grads(params, target, curv):
    """Smooth grads: a diagonal quadratic plus a small smooth term."""
    return [c * (p - t) + p.dtype.type(0.01) * np.sin(p) for p, t, c in zip(params, target, curv)]


def _ours(name, params, hp0, hp1):
    return getattr(lrfast, name)([{"params": params[:2], **hp0}, {"params": params[2:], **hp1}])


def _rel(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))
                 / max(np.max(np.abs(b.astype(np.float64))), 1e-300))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SF_CASES, ids=_id)
def test_matches_schedulefree(case, dtype):
    torch = pytest.importorskip("torch")
    sf = pytest.importorskip("schedulefree")
    name, hp0, hp1 = case
    init, target, curv = _problem(dtype)
    ours = [x.copy() for x in init]
    opt = _ours(name, ours, hp0, hp1)
    tp = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    ref = getattr(sf, REF[name])([{"params": tp[:2], **hp0}, {"params": tp[2:], **hp1}],
                                 foreach=False)
    ref.train()
    tol = TOL[dtype]
    for k in range(60):
        gs = _grads(ours, target, curv)
        for p, g in zip(tp, gs):
            p.grad = torch.from_numpy(g.copy())
        keep = [g.copy() for g in gs]
        ref.step()
        assert opt.step(gs)
        assert all(np.array_equal(g, c) for g, c in zip(gs, keep))    # grads untouched
        if k in (20, 40):                     # a train/eval/train cycle mid-run
            ref.eval()
            opt.eval()
            assert not opt.train_mode
            for a, p in zip(ours, tp):
                assert _rel(a, p.detach().numpy()) <= tol
            ref.train()
            opt.train()
    for a, p in zip(ours, tp):                # y
        assert _rel(a, p.detach().numpy()) <= tol
    for i, (a, p) in enumerate(zip(ours, tp)):
        st = ref.state[p]
        assert _rel(opt.state[i]["z"], st["z"].numpy()) <= tol
        if "exp_avg_sq" in st:
            assert _rel(opt.state[i]["exp_avg_sq"], st["exp_avg_sq"].numpy()) <= tol
        g = ref.param_groups[0 if i < 2 else 1]
        assert opt.state[i]["step"] == g["k"]
        assert opt.state[i]["lr_max"] == pytest.approx(g["lr_max"], rel=1e-15)
        assert opt.state[i]["weight_sum"] == pytest.approx(g["weight_sum"], rel=1e-13)
    ref.eval()
    opt.eval()
    for a, p in zip(ours, tp):                # x
        assert _rel(a, p.detach().numpy()) <= tol


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(REF))
def test_checkpoint_resumes_exactly_from_either_mode(name, mode):
    case = next(c for c in SF_CASES if c[0] == name and c[1])
    _, hp0, hp1 = case
    init, target, curv = _problem(np.float64, seed=1)
    full = [x.copy() for x in init]
    a = _ours(name, full, hp0, hp1)
    half = [x.copy() for x in init]
    b = _ours(name, half, hp0, hp1)
    for _ in range(15):
        a.step(_grads(full, target, curv))
        b.step(_grads(half, target, curv))
    if mode == "eval":                        # the uninterrupted run takes the same cycle
        a.eval()
        a.train()
        b.eval()
    sd = b.state_dict()
    assert all(g["train_mode"] is (mode == "train") for g in sd["param_groups"])
    saved = [x.copy() for x in half]          # the params as checkpointed
    resumed = [x.copy() for x in saved]
    c = _ours(name, resumed, hp0, hp1)
    c.load_state_dict(sd)
    assert c.train_mode is (mode == "train")
    if mode == "eval":
        with pytest.raises(RuntimeError, match="eval mode"):
            c.step(_grads(resumed, target, curv))
    c.train()
    assert c.train_mode
    for _ in range(15):
        a.step(_grads(full, target, curv))
        c.step(_grads(resumed, target, curv))
    a.eval()
    c.eval()
    for x, y in zip(full, resumed):
        assert np.array_equal(x, y)
    assert a.state_dict()["state"][0]["weight_sum"] == c.state_dict()["state"][0]["weight_sum"]


def test_eval_step_raises_and_changes_nothing():
    p = [np.full(4, 1e-3), np.full(3, 2e-3)]
    opt = lrfast.ScheduleFreeAdamW(p)
    g = [np.ones(4), np.ones(3)]
    opt.step(g)
    opt.eval()
    before = [x.copy() for x in p]
    sd = opt.state_dict()
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step(g)
    assert all(np.array_equal(x, y) for x, y in zip(p, before))
    assert opt.state_dict()["step_count"] == sd["step_count"]
    opt.eval()                                 # a second eval is a no-op
    assert all(np.array_equal(x, y) for x, y in zip(p, before))


def test_never_stepped_params_do_not_move_and_mode_is_validated_on_load():
    p = [np.full(4, 1e-3), np.full(3, 2e-3)]
    opt = lrfast.ScheduleFreeSGD(p, lr=0.1)
    opt.step([np.ones(4), None])               # param 1 has no z yet
    opt.step([np.full(4, 2.0), None])
    y = p[0].copy()
    z = opt.state[0]["z"].copy()
    opt.eval()
    assert np.array_equal(p[1], np.full(3, 2e-3))
    assert np.allclose(p[0], (y - 0.1 * z) / 0.9, rtol=1e-14) and not np.allclose(p[0], y)
    sd = opt.state_dict()
    sd["param_groups"][0]["train_mode"] = "yes"
    fresh = lrfast.ScheduleFreeSGD([np.zeros(4), np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="train_mode"):
        fresh.load_state_dict(sd)
    assert fresh.train_mode and fresh.state_dict()["state"] == {}
    del sd["param_groups"][0]["train_mode"]
    with pytest.raises(ValueError, match="train_mode"):
        fresh.load_state_dict(sd)


def test_eval_with_zero_beta1_raises_before_moving_anything():
    p = [np.full(4, 1e-3)]
    opt = lrfast.ScheduleFreeAdamW(p, betas=(0.0, 0.999))
    opt.step([np.ones(4)])
    before = p[0].copy()
    with pytest.raises(ValueError, match="betas"):
        opt.eval()
    assert opt.train_mode and np.array_equal(p[0], before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.9, 0.3])
def test_train_eval_equal_the_numpy_twin_bitwise(dtype, momentum):
    """eval()/train() are torch.lerp in the param dtype (both of its branches:
    momentum 0.3 gives weights 0.7 and -2.33)."""
    from lrfast import _reference as R
    rng = np.random.default_rng(5)
    p = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    opt = lrfast.ScheduleFreeSGD(p, lr=0.1, momentum=momentum)
    for _ in range(3):
        opt.step([rng.standard_normal(x.shape).astype(dtype) for x in p])
    twin = [x.copy() for x in p]
    z = [opt.state[i]["z"].copy() for i in range(len(p))]
    for to_train in (False, True, False):
        opt.train() if to_train else opt.eval()
        for x, zz in zip(twin, z):
            R.sf_swap(x, zz, momentum, to_train)
        for a, b in zip(p, twin):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SF_CASES, ids=_id)
def test_functional_layer_equals_the_class_bitwise(case, dtype):
    from lrfast import kernels as K
    name, hp0, _ = case
    fn = {"ScheduleFreeSGD": K.schedule_free_sgd_step,
          "ScheduleFreeAdamW": K.schedule_free_adamw_step,
          "ScheduleFreeRAdam": K.schedule_free_radam_step}[name]
    init, target, curv = _problem(dtype, seed=2)
    a = init[0].copy()
    opt = getattr(lrfast, name)([a], **hp0)
    q = init[0].copy()
    st = [np.zeros_like(q) for _ in opt.spec.states]
    kw = {k: v for k, v in hp0.items() if k != "betas"}
    if "betas" in hp0:
        kw["beta1"], kw["beta2"] = hp0["betas"]
    lr_max, weight_sum = -1.0, 0.0
    for t in range(1, 30):
        g = _grads([a], target[:1], curv[:1])[0]
        opt.step([g])
        lr_max, weight_sum = fn(q, g, *st, step=t, lr_max=lr_max, weight_sum=weight_sum, **kw)
        assert a.tobytes() == q.tobytes()
    assert (lr_max, weight_sum) == (opt.state[0]["lr_max"], opt.state[0]["weight_sum"])
    assert st[0].tobytes() == opt.state[0]["z"].tobytes()
