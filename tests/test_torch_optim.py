"""lrfast.torch: torch.optim.Optimizer subclasses on lrfast's kernels, checked
against torch.optim.<Name>(foreach=False): parity (float64 <= 1e-10 relative,
float32 <= 1e-4, >= 50 steps), torch's schedulers, state_dict both ways,
hooks, grad=None, zero copy, and the refusals."""
import copy
import inspect
import tracemalloc

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lrfast.torch as lt  # noqa: E402
from lrfast.optim import KINDS, TABLE, optimizers  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
SHAPES = [(17, 9), (64,), (1,), (3, 4, 5)]
TORCH_NAMES = [n for n in optimizers(aux=False, twin=True) if "torch" in TABLE[n].refs]

# option sets per optimizer: weight decay variants, maximize, the flags
OPTIONS = {
    "SGD": [dict(lr=0.05), dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
            dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)],
    "Adagrad": [dict(lr=0.05, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
                dict(maximize=True)],
    "Adadelta": [dict(weight_decay=0.01), dict(lr=0.5, rho=0.8, maximize=True)],
    "RMSprop": [dict(weight_decay=0.01), dict(momentum=0.9, centered=True, maximize=True)],
    "Adam": [dict(lr=0.01, weight_decay=0.01), dict(lr=0.01, amsgrad=True, maximize=True),
             dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)],
    "AdamW": [dict(lr=0.01), dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True)],
    "Adamax": [dict(weight_decay=0.01), dict(maximize=True)],
    "NAdam": [dict(weight_decay=0.01), dict(weight_decay=0.1, decoupled_weight_decay=True,
                                            maximize=True)],
    "RAdam": [dict(weight_decay=0.01), dict(weight_decay=0.1, decoupled_weight_decay=True,
                                            maximize=True)],
    "Rprop": [dict(), dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-5, 1.0), maximize=True)],
    "ASGD": [dict(weight_decay=0.01), dict(lr=0.05, t0=10, lambd=1e-3, maximize=True)],
}
CASES = [(n, o) for n in TORCH_NAMES for o in OPTIONS[n]]


def _ids(c):
    return c[0] + "-" + ",".join(f"{k}={v}" for k, v in c[1].items())


def _pair(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]
    target = [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]
    ours = [x.clone().requires_grad_() for x in init]
    theirs = [x.clone().requires_grad_() for x in init]
    return ours, theirs, target


def _grads(ps, target, gen, dtype, none=()):
    # a contracting problem, 0.5*|p - target|^2 plus a little noise
    out = []
    for i, (p, t) in enumerate(zip(ps, target)):
        noise = torch.randn(p.shape, generator=gen, dtype=dtype)
        out.append(None if i in none else (p.detach() - t) * 0.7 + 0.01 * noise)
    return out


def _train(oa, ob, ours, theirs, target, dtype, steps=60, seed=1, sched=None, none_at=()):
    gen = torch.Generator().manual_seed(seed)
    for k in range(steps):
        gs = _grads(ours, target, gen, dtype, none=[i for (kk, i) in none_at if kk == k])
        for a, b, g in zip(ours, theirs, gs):
            a.grad = None if g is None else g.clone()
            b.grad = None if g is None else g.clone()
        oa.step()
        ob.step()
        if sched is not None:
            sched(k)


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-300))


def _close(ours, theirs, dtype):
    for a, b in zip(ours, theirs):
        assert _rel(a, b) <= TOL[dtype]


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torch(case, dtype):
    name, hp = case
    ours, theirs, target = _pair(dtype)
    oa = getattr(lt, name)(ours, **hp)
    ob = getattr(torch.optim, name)(theirs, foreach=False, **hp)
    _train(oa, ob, ours, theirs, target, dtype, none_at=[(3, 1), (10, 0), (10, 2)])
    _close(ours, theirs, dtype)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for i in sb["state"]:
        assert sa["state"][i].keys() == sb["state"][i].keys()
        for k, v in sb["state"][i].items():
            w = sa["state"][i][k]
            assert isinstance(w, torch.Tensor) and w.dtype == v.dtype and w.shape == v.shape
            assert _rel(w, v) <= TOL[dtype] * (10 if w.numel() > 1 else 1), k
    assert [set(g) for g in sa["param_groups"]] == [set(g) for g in sb["param_groups"]]


@pytest.mark.parametrize("default", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["NAdam", "ASGD", "Adam"])
def test_scalar_states_follow_torch_default_dtype(name, default):
    """NAdam's mu_product and ASGD's eta/mu live in scalar tensors of torch's
    default dtype: the updates match torch bit for bit in float64 params."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        ours, theirs, target = _pair(torch.float64)
        hp = dict(t0=5) if name == "ASGD" else {}
        oa, ob = getattr(lt, name)(ours, **hp), getattr(torch.optim, name)(theirs, foreach=False,
                                                                           **hp)
        _train(oa, ob, ours, theirs, target, torch.float64)
    finally:
        torch.set_default_dtype(prev)
    for a, b in zip(ours, theirs):
        assert _rel(a, b) <= 1e-14
    for k, v in ob.state[theirs[0]].items():
        if v.numel() == 1:
            assert oa.state[ours[0]][k].dtype == v.dtype and float(oa.state[ours[0]][k]) == float(v)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad", "NAdam", "ASGD"])
def test_param_groups_and_named_params(name):
    dtype = torch.float64
    ours, theirs, target = _pair(dtype)
    extra = {"momentum": 0.9} if name == "SGD" else {}

    def groups(ps):
        return [{"params": [("w0", ps[0]), ("w2", ps[2])], "lr": 0.05, "weight_decay": 0.01},
                {"params": [("w1", ps[1]), ("w3", ps[3])], "lr": 0.02, **extra}]
    oa = getattr(lt, name)(groups(ours), lr=0.01)
    ob = getattr(torch.optim, name)(groups(theirs), lr=0.01, foreach=False)
    assert oa.param_groups[0]["param_names"] == ["w0", "w2"]
    _train(oa, ob, ours, theirs, target, dtype, none_at=[(2, 3)])
    _close(ours, theirs, dtype)


def _scheduled(name, make_sched, hp, dtype=torch.float64, steps=60):
    ours, theirs, target = _pair(dtype)
    oa = getattr(lt, name)(ours, **hp)
    ob = getattr(torch.optim, name)(theirs, foreach=False, **hp)
    sa, sb = make_sched(oa), make_sched(ob)
    gen = torch.Generator().manual_seed(5)
    for k in range(steps):
        gs = _grads(ours, target, gen, dtype)
        for a, b, g in zip(ours, theirs, gs):
            a.grad, b.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        if isinstance(sa, torch.optim.lr_scheduler.ReduceLROnPlateau):
            metric = 1.0 if k < 10 else 2.0          # plateaus after step 10
            sa.step(metric)
            sb.step(metric)
        else:
            sa.step()
            sb.step()
        assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    _close(ours, theirs, dtype)
    return oa, ob


S = torch.optim.lr_scheduler
SCHEDULERS = {
    "StepLR": lambda o: S.StepLR(o, step_size=7, gamma=0.5),
    "OneCycleLR": lambda o: S.OneCycleLR(o, max_lr=0.05, total_steps=60),
    "ReduceLROnPlateau": lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=2),
    "SequentialLR": lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.1, total_iters=10),
                                                 S.CosineAnnealingLR(o, T_max=50)],
                                             milestones=[10]),
}


@pytest.mark.parametrize("sched", list(SCHEDULERS))
@pytest.mark.parametrize("name,hp", [("Adam", dict(lr=0.01)), ("SGD", dict(lr=0.01, momentum=0.9)),
                                     ("AdamW", dict(lr=0.01, amsgrad=True)),
                                     ("RMSprop", dict(lr=0.01, momentum=0.5)),
                                     ("NAdam", dict(lr=0.01)), ("RAdam", dict(lr=0.01))])
def test_torch_schedulers(sched, name, hp):
    oa, ob = _scheduled(name, SCHEDULERS[sched], hp)
    if sched == "OneCycleLR":       # beta cycling reached the optimizer
        key = "momentum" if name in ("SGD", "RMSprop") else "betas"
        assert oa.param_groups[0][key] == ob.param_groups[0][key]


def test_one_cycle_beta_cycling_changes_the_betas():
    oa, _ = _scheduled("Adam", lambda o: S.OneCycleLR(o, max_lr=0.05, total_steps=60,
                                                      cycle_momentum=True), dict(lr=0.01))
    assert oa.param_groups[0]["betas"][0] != 0.9


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_state_dict_both_ways(name, dtype):
    """lrfast.torch -> torch.optim and torch.optim -> lrfast.torch, mid-training,
    through torch.save/torch.load: the continuations match."""
    import io
    hp = dict(OPTIONS[name][-1])
    ours, theirs, target = _pair(dtype)
    oa = getattr(lt, name)(ours, **hp)
    ob = getattr(torch.optim, name)(theirs, foreach=False, **hp)
    _train(oa, ob, ours, theirs, target, dtype, steps=25, none_at=[(4, 1)])

    def through_disk(sd):
        buf = io.BytesIO()
        torch.save(sd, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=True)
    # swap: a torch optimizer continues from lrfast's state and vice versa
    a2 = [p.detach().clone().requires_grad_() for p in ours]
    b2 = [p.detach().clone().requires_grad_() for p in theirs]
    tb = getattr(torch.optim, name)(a2, foreach=False, **hp)
    tb.load_state_dict(through_disk(oa.state_dict()))
    la = getattr(lt, name)(b2, **hp)
    la.load_state_dict(through_disk(ob.state_dict()))
    _train(oa, tb, ours, a2, target, dtype, steps=30, seed=7)
    _train(la, ob, b2, theirs, target, dtype, steps=30, seed=7)
    _close(ours, a2, dtype)
    _close(b2, theirs, dtype)


def test_state_is_the_kernels_memory():
    p = torch.randn(100, requires_grad=True)
    opt = lt.Adam([p], lr=0.1)
    assert len(opt.state) == 0                      # as torch: state appears at the first step
    ptr = p.data_ptr()
    p.grad = torch.ones(100)
    opt.step()
    st = opt.state[p]
    assert st["step"].dtype == torch.float32 and st["step"].dim() == 0 and float(st["step"]) == 1
    m = st["exp_avg"]
    mp = m.data_ptr()
    opt.step()
    assert p.data_ptr() == ptr and opt.state[p]["exp_avg"].data_ptr() == mp
    assert float(st["step"]) == 2
    np.testing.assert_allclose(m.numpy(), 1 - 0.9 ** 2, rtol=1e-6)
    m.zero_()                                        # in-place changes reach the kernels
    opt.step()
    np.testing.assert_allclose(m.numpy(), 0.1, rtol=1e-6)


def test_no_allocation_per_step():
    ps = [torch.randn(1000, requires_grad=True) for _ in range(8)]
    opt = lt.AdamW(ps, lr=1e-3)
    for p in ps:
        p.grad = torch.randn(1000)
    for _ in range(20):
        opt.step()
    tracemalloc.start()
    try:
        opt.step()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(500):
            opt.step()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 2048, grown


def test_hooks_zero_grad_and_closure():
    p = torch.randn(5, requires_grad=True)
    opt = lt.SGD([p], lr=0.1)
    seen = []
    h1 = opt.register_step_pre_hook(lambda o, a, k: seen.append(("pre", float(p[0]))))
    h2 = opt.register_step_post_hook(lambda o, a, k: seen.append(("post", float(p[0]))))

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss
    before = float(p[0])
    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor)
    assert seen == [("pre", before), ("post", float(p[0]))]
    assert float(p[0]) == pytest.approx(before * 0.8)
    h1.remove()
    h2.remove()
    opt.zero_grad()
    assert p.grad is None
    opt.step()                                       # no grad: nothing moves
    assert len(seen) == 2
    from torch.optim.optimizer import register_optimizer_step_post_hook
    h3 = register_optimizer_step_post_hook(lambda o, a, k: seen.append("global"))
    try:
        opt.step()
    finally:
        h3.remove()
    opt.step()
    assert seen[2:] == ["global"]


def test_signatures_are_torchs():
    for name in TORCH_NAMES:
        ours = inspect.signature(getattr(lt, name).__init__).parameters
        theirs = inspect.signature(getattr(torch.optim, name).__init__).parameters
        assert list(ours)[:len(theirs)] == list(theirs), name
        for k, prm in theirs.items():
            if k not in ("self", "params"):
                assert ours[k].default == prm.default, (name, k)
                assert ours[k].kind == prm.kind, (name, k)
        ob = getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)])
        oa = getattr(lt, name)([torch.zeros(2, requires_grad=True)])
        ga = {k: v for k, v in oa.param_groups[0].items() if k != "params"}
        gb = {k: v for k, v in ob.param_groups[0].items() if k != "params"}
        assert ga == gb, name
    # every elementwise engine optimizer; not yet the per-tensor kinds (Lamb, LARS,
    # NovoGrad: engine-held norms), the own-step ones (Adafactor, Muon) nor the
    # schedule-free ones (their train/eval modes)
    elementwise = {n for n in optimizers(aux=False, twin=True)
                   if not KINDS[TABLE[n].kind].sums and not n.startswith("ScheduleFree")}
    assert set(lt.__all__) >= elementwise


@pytest.mark.parametrize("name", ["Lion", "AdaBelief", "Yogi", "ADOPT", "Adan"])
def test_optax_rules_match_lrfast(name):
    """The optimizers without a torch counterpart equal lrfast's numpy classes."""
    import lrfast
    rng = np.random.default_rng(0)
    x = [rng.standard_normal(s) for s in SHAPES]
    ps = [torch.tensor(a.copy(), requires_grad=True) for a in x]
    ref = [a.copy() for a in x]
    oa, ob = getattr(lt, name)(ps), getattr(lrfast, name)(ref)
    for k in range(50):
        gs = [rng.standard_normal(s) for s in SHAPES]
        for p, g in zip(ps, gs):
            p.grad = torch.tensor(g)
        oa.step()
        ob.step(gs)
    for p, r in zip(ps, ref):
        np.testing.assert_array_equal(p.detach().numpy(), r)
    assert float(oa.state[ps[0]]["step"]) == 50


def test_add_param_group_and_changed_options():
    a = [torch.randn(4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    b = [x.detach().clone().requires_grad_() for x in a]
    oa, ob = lt.SGD([a[0]], lr=0.1), torch.optim.SGD([b[0]], lr=0.1, foreach=False)
    for k in range(6):
        if k == 2:
            oa.add_param_group({"params": [a[1]], "lr": 0.05})
            ob.add_param_group({"params": [b[1]], "lr": 0.05})
        if k == 4:           # momentum switched on mid-run: a buffer is started, as torch
            oa.param_groups[0]["momentum"] = 0.9
            ob.param_groups[0]["momentum"] = 0.9
        for x, y in zip(a, b):
            x.grad = torch.full((4,), float(k + 1), dtype=torch.float64)
            y.grad = torch.full((4,), float(k + 1), dtype=torch.float64)
        oa.step()
        ob.step()
    for x, y in zip(a, b):
        assert _rel(x, y) <= 1e-12


def _refused(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


def test_refusals():
    p = torch.randn(4, requires_grad=True)
    _refused(lambda: lt.Adam([p], foreach=True), ValueError, "foreach")
    _refused(lambda: lt.Adam([p], fused=True), ValueError, "fused")
    _refused(lambda: lt.Adam([p], capturable=True), ValueError, "capturable")
    _refused(lambda: lt.Adam([p], differentiable=True), ValueError, "differentiable")
    _refused(lambda: lt.AdamW([p], master_weights=True), TypeError, "master_weights=True takes")
    _refused(lambda: lt.Adam([p.detach().to(torch.bfloat16).requires_grad_()]), TypeError,
             "bfloat16")
    _refused(lambda: lt.Adam([torch.randn(4, 4).t().contiguous().t().requires_grad_()]),
             ValueError, "contiguous")
    _refused(lambda: lt.Adam([torch.randn(4, 4).to_sparse().requires_grad_()]), ValueError,
             "layout")
    _refused(lambda: lt.Adam([p], lr=-1.0), ValueError, "lr")
    _refused(lambda: lt.Adam([p], betas=(0.9, 1.5)), ValueError, "betas")
    assert lt.Adam([p], foreach=False, fused=False).param_groups[0]["foreach"] is False
    opt = lt.Adam([p], lr=0.1)
    before = p.detach().clone()
    for bad, exc, match in [(torch.randn(8)[::2], ValueError, "contiguous"),
                            (torch.randn(4).to_sparse(), ValueError, "sparse")]:
        p.grad = bad
        _refused(opt.step, exc, match)
    assert torch.equal(p.detach(), before) and len(opt.state) == 0
    q = torch.randn(4)
    q.grad = torch.ones(4)
    opt2 = lt.Adam([p, q])
    p.grad = torch.ones(4)
    _refused(opt2.step, ValueError, "requires_grad=False")
    assert torch.equal(p.detach(), before)
    opt.param_groups[0]["lr"] = -0.5
    p.grad = torch.ones(4)
    _refused(opt.step, ValueError, "lr")
    assert torch.equal(p.detach(), before)
    opt.param_groups[0]["lr"] = 0.1
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [torch.randn(3, requires_grad=True)], "eps": -1.0})
    assert len(opt.param_groups) == 1
    opt.step()
    assert not torch.equal(p.detach(), before)


def test_bad_state_dict_changes_nothing():
    p = torch.randn(4, requires_grad=True)
    opt = lt.Adam([p], lr=0.1)
    p.grad = torch.ones(4)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["exp_avg"] = torch.zeros(7)
    m = opt.state[p]["exp_avg"].clone()
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(sd)
    assert torch.equal(opt.state[p]["exp_avg"], m) and float(opt.state[p]["step"]) == 1
    opt.step()
    assert float(opt.state[p]["step"]) == 2


def test_deepcopy_and_pickle_continue():
    import pickle
    p = torch.randn(6, requires_grad=True)
    opt = lt.Adam([p], lr=0.1)
    p.grad = torch.ones(6)
    opt.step()
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    q = p.detach().clone().requires_grad_()
    o2 = lt.Adam([q], lr=0.1)
    o2.load_state_dict(sd)
    q.grad = torch.ones(6)
    opt.step()
    o2.step()
    assert torch.equal(p, q)
