"""lrfast.torch's optimizers beyond the elementwise ones (Lamb, LARS, NovoGrad,
Adafactor, Muon, SparseAdam, the schedule-free three, Prodigy, DoG, LDoG).

- Adafactor, Muon and SparseAdam against torch.optim's class (Muon's
  Newton-Schulz without torch's bfloat16 cast, as
  test_reference_parity_factored.py), float64 <= 1e-10 relative, float32 <=
  1e-4, >= 40 steps, with param groups, a torch scheduler and maximize; the
  state_dict both ways (lrfast.torch.X <-> torch.optim.X), training continuing.
- The others against the plain lrfast class on numpy copies (bit for bit: the
  same kernels), and against their reference packages (schedulefree,
  prodigyopt, dog) on torch tensors; a torch-style state_dict round trip.
- Zero copy (data_ptr unchanged, the state is the kernels' memory), no
  per-step allocation, the refusals.
"""
import copy
import io
import pickle
import tracemalloc

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lrfast  # noqa: E402
import lrfast.torch as lt  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
DTYPES = [torch.float64, torch.float32]
SHAPES = [(17, 9), (64,), (3, 4, 5), (6, 11)]
MAT = [(17, 9), (6, 11), (12, 12)]

# name -> (option sets, shapes); each set is (group 0's options, group 1's options)
OURS = {
    "Lamb": ([dict(lr=0.01), dict(lr=0.01, weight_decay=0.1, eps_root=1e-8)], SHAPES),
    "LARS": ([dict(lr=0.5), dict(lr=0.5, nesterov=True, weight_decay=0.01, eps=1e-6)],
             SHAPES),
    "NovoGrad": ([dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, betas=(0.8, 0.5))],
                 SHAPES),
    "ScheduleFreeSGD": ([dict(lr=0.1), dict(lr=0.1, warmup_steps=5, weight_decay=0.01)],
                        SHAPES),
    "ScheduleFreeAdamW": ([dict(lr=0.01), dict(lr=0.01, warmup_steps=5, r=0.5)], SHAPES),
    "ScheduleFreeRAdam": ([dict(lr=0.01), dict(lr=0.01, silent_sgd_phase=False)], SHAPES),
    "Prodigy": ([dict(), dict(weight_decay=0.01, use_bias_correction=True)], SHAPES),
    "DoG": ([dict(), dict(reps_rel=1e-4, weight_decay=0.01)], SHAPES),
    "LDoG": ([dict(), dict(init_eta=1e-4)], SHAPES),
    "DAdaptAdam": ([dict(), dict(weight_decay=0.01, decouple=True)], SHAPES),
    "DAdaptSGD": ([dict(), dict(momentum=0.9)], SHAPES),
    "DAdaptAdaGrad": ([dict(), dict(momentum=0.5, eps=1e-8)], SHAPES),
}
LRFREE = ("Prodigy", "DoG", "LDoG", "DAdaptAdam", "DAdaptSGD", "DAdaptAdaGrad")
TORCH = {
    "Adafactor": ([dict(lr=0.01), dict(lr=0.02, weight_decay=0.01, maximize=True, d=2.0),
                   dict(lr=0.01, beta2_decay=-0.5, eps=(1e-30, 1e-3))], SHAPES),
    "Muon": ([dict(lr=0.02), dict(lr=0.02, nesterov=False, weight_decay=0.0),
              dict(lr=0.01, adjust_lr_fn="match_rms_adamw", weight_decay=0.05)], MAT),
    "SparseAdam": ([dict(lr=0.01), dict(lr=0.02, betas=(0.8, 0.99), maximize=True)],
                   [(40, 3), (25,), (30, 2, 2)]),
}
ALL = list(OURS) + list(TORCH)


def _ids(c):
    return c[0] + "-" + ",".join(f"{k}={v}" for k, v in c[1].items())


def _init(shapes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    init = [0.5 * torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    target = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    return init, target


def _grad(p, t, k, gen, sparse):
    g = (p.detach() - t) * (0.7 + 0.1 * np.sin(0.3 * k))
    g = g + 0.01 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
    if not sparse:
        return g
    rows = torch.randint(0, p.shape[0], (max(1, p.shape[0] // 3),), generator=gen)
    rows = torch.cat([rows, rows[:2]])                 # repeated rows: summed
    return torch.sparse_coo_tensor(rows[None], g[rows], p.shape)


def _feed(params_sets, target, k, gen, sparse=False, none=()):
    for i, t in enumerate(target):
        g = None if i in none else _grad(params_sets[0][i], t, k, gen, sparse)
        for ps in params_sets:
            ps[i].grad = None if g is None else g.clone()


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-300))


def _groups(ps, hp):
    return [dict(params=ps[:2], **hp), dict(params=ps[2:], lr=hp.get("lr", 1.0) * 0.5)
            if "Prodigy" not in str(hp) else dict(params=ps[2:])]


# --------------------------------------------------- torch.optim counterparts
def _ns_no_bf16(grad, ns_coefficients, ns_steps, eps):
    """torch.optim._muon._zeropower_via_newtonschulz without the bfloat16 cast."""
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


@pytest.fixture
def no_bf16(monkeypatch):
    import torch.optim._muon as tm
    monkeypatch.setattr(tm, "_zeropower_via_newtonschulz", _ns_no_bf16)


def _torch_pair(name, hp, dtype, groups=True):
    shapes = TORCH[name][1]
    init, target = _init(shapes, dtype)
    a = [x.clone().requires_grad_() for x in init]
    b = [x.clone().requires_grad_() for x in init]
    kw = {} if name in ("Muon", "SparseAdam") else dict(foreach=False)

    def build(cls, ps, **extra):
        if not groups:
            return cls(ps, **hp, **extra)
        return cls([dict(params=ps[:2]), dict(params=ps[2:], lr=hp.get("lr", 1e-2) * 0.5)],
                   **hp, **extra)
    return a, b, target, build(getattr(lt, name), a), build(getattr(torch.optim, name), b, **kw)


CASES_T = [(n, o) for n in TORCH for o in TORCH[n][0]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES_T, ids=_ids)
def test_matches_torch(case, dtype, no_bf16):
    name, hp = case
    a, b, target, oa, ob = _torch_pair(name, hp, dtype)
    sa_ = torch.optim.lr_scheduler.StepLR(oa, step_size=7, gamma=0.7)
    sb_ = torch.optim.lr_scheduler.StepLR(ob, step_size=7, gamma=0.7)
    gen = torch.Generator().manual_seed(1)
    moved = [x.detach().clone() for x in a]
    for k in range(45):
        _feed([a, b], target, k, gen, sparse=name == "SparseAdam",
              none=(1,) if k in (3, 10) else ())
        oa.step()
        ob.step()
        sa_.step()
        sb_.step()
    for x, y, z in zip(a, b, moved):
        assert _rel(x, y) <= TOL[dtype], (x.shape, _rel(x, y))
        assert _rel(z, y) > 100 * TOL[dtype]           # the params really moved
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for i in sb["state"]:
        assert sa["state"][i].keys() == sb["state"][i].keys()
        for k, v in sb["state"][i].items():
            w = sa["state"][i][k]
            assert type(w) is type(v), k
            if isinstance(v, torch.Tensor):
                assert w.dtype == v.dtype and w.shape == v.shape, k
                assert _rel(w, v) <= TOL[dtype] * 10, k
            else:
                assert w == v, k
    assert [set(g) for g in sa["param_groups"]] == [set(g) for g in sb["param_groups"]]
    for ga, gb in zip(sa["param_groups"], sb["param_groups"]):
        assert ({k: v for k, v in ga.items() if k != "foreach"}     # torch's: foreach=False
                == {k: v for k, v in gb.items() if k != "foreach"})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(TORCH))
def test_state_dict_both_ways_with_torch(name, dtype, no_bf16):
    """lrfast.torch.X's state_dict loads into torch.optim.X and the other way,
    through torch.save; training continues as the uninterrupted run."""
    hp = TORCH[name][0][1]
    a, b, target, oa, ob = _torch_pair(name, hp, dtype)
    gen = torch.Generator().manual_seed(2)
    for k in range(15):
        _feed([a, b], target, k, gen, sparse=name == "SparseAdam")
        oa.step()
        ob.step()

    def disk(sd):
        buf = io.BytesIO()
        torch.save(sd, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=False)

    # cross over: torch continues from ours, ours continues from torch's
    a2 = [x.detach().clone().requires_grad_() for x in a]
    b2 = [x.detach().clone().requires_grad_() for x in b]
    _, _, _, oa2, ob2 = _torch_pair(name, hp, dtype)
    oa2 = type(oa)([dict(params=a2[:2]), dict(params=a2[2:])], **hp)
    kw = {} if name in ("Muon", "SparseAdam") else dict(foreach=False)
    ob2 = type(ob)([dict(params=b2[:2]), dict(params=b2[2:])], **hp, **kw)
    ob2.load_state_dict(disk(oa.state_dict()))       # ours -> torch
    oa2.load_state_dict(disk(ob.state_dict()))       # torch -> ours
    for k in range(15, 30):
        _feed([a, b, a2, b2], target, k, gen, sparse=name == "SparseAdam")
        for o in (oa, ob, oa2, ob2):
            o.step()
    for x, y, x2, y2 in zip(a, b, a2, b2):
        assert _rel(y2, x) <= TOL[dtype]        # torch resumed from ours = ours
        assert torch.equal(x2, x) or _rel(x2, x) <= TOL[dtype]   # ours from torch's
        assert _rel(x2, y) <= TOL[dtype]
    assert oa2.param_groups[1]["lr"] == oa.param_groups[1]["lr"]


# ----------------------------------------------- against the lrfast classes
CASES_O = [(n, o) for n in OURS for o in OURS[n][0]]


def _plain_pair(name, hp, dtype, seed=0):
    init, target = _init(OURS[name][1], dtype, seed)
    if name in LRFREE:     # the lr-free methods: start near 0
        init = [1e-3 * x for x in init]
    tp = [x.clone().requires_grad_() for x in init]
    npp = [x.clone().numpy() for x in init]
    ng = [dict(params=npp[:2], **hp), dict(params=npp[2:], **_g1(name, hp))]
    tg = [dict(params=tp[:2], **hp), dict(params=tp[2:], **_g1(name, hp))]
    return tp, npp, target, getattr(lt, name)(tg), getattr(lrfast, name)(ng)


def _g1(name, hp):
    if name in ("Prodigy", "DAdaptAdam", "DAdaptSGD", "DAdaptAdaGrad"):
        return {}                    # the groups share d: lr the same or 0
    return dict(lr=hp.get("lr", lrfast.optim.TABLE[name].defaults["lr"]) * 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES_O, ids=_ids)
def test_matches_plain_lrfast_bitwise(case, dtype):
    """The same kernels on the tensors' memory: bit for bit the lrfast class on
    numpy copies, with a scheduler driving group["lr"] (the lrfast class's lr
    set to the same values) and None grads."""
    name, hp = case
    tp, npp, target, ot, on = _plain_pair(name, hp, dtype)
    sched = torch.optim.lr_scheduler.LambdaLR(ot, lambda k: 1.0 / (1 + 0.05 * k))
    gen = torch.Generator().manual_seed(1)
    for k in range(40):
        none = (1,) if k in (4, 11) else ()
        _feed([tp], target, k, gen, none=none)
        on.step([None if p.grad is None else p.grad.numpy().copy() for p in tp])
        ot.step()
        sched.step()
        for gt, gn in zip(ot.param_groups, on.param_groups):
            gn["lr"] = gt["lr"]
        if k == 20 and name.startswith("ScheduleFree"):
            ot.eval()
            on.eval()
            for x, y in zip(tp, npp):
                assert np.array_equal(x.detach().numpy(), y)
            ot.train()
            on.train()
    for x, y in zip(tp, npp):
        assert np.array_equal(x.detach().numpy(), y)
    sn = on.state_dict()["state"]
    st = ot.state_dict()["state"]
    assert sn.keys() == st.keys()
    for i in sn:
        for k, v in sn[i].items():
            w = st[i][k]
            if isinstance(v, np.ndarray):
                assert np.array_equal(w.numpy(), v), k
            elif k == "step":
                assert isinstance(w, torch.Tensor) and w.ndim == 0 and float(w) == v
            else:
                assert w == v, k
    if name in LRFREE:
        assert ot.d == on.d


def _ref_lr_free(name, hp, tg):
    if name == "Prodigy":
        return pytest.importorskip("prodigyopt").Prodigy(tg, **hp)
    return getattr(pytest.importorskip("dog"), name)(tg, **hp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["Prodigy", "DoG", "LDoG", "ScheduleFreeSGD",
                                  "ScheduleFreeAdamW", "ScheduleFreeRAdam"])
def test_matches_reference_package(name, dtype):
    """Against prodigyopt / dog / schedulefree on torch tensors (the
    reference packages' torch classes), two groups, train/eval cycles."""
    init, target = _init(SHAPES, dtype)
    init = [1e-3 * x for x in init]
    a = [x.clone().requires_grad_() for x in init]
    b = [x.clone().requires_grad_() for x in init]
    g1 = {} if name == "Prodigy" else dict(eps=1e-7) if "DoG" in name else dict(lr=0.005)
    hp = dict(lr=0.01) if name.startswith("ScheduleFree") else {}
    oa = getattr(lt, name)([dict(params=a[:2]), dict(params=a[2:], **g1)], **hp)
    if name.startswith("ScheduleFree"):
        sf = pytest.importorskip("schedulefree")
        ref = {"ScheduleFreeSGD": sf.SGDScheduleFree, "ScheduleFreeAdamW": sf.AdamWScheduleFree,
               "ScheduleFreeRAdam": sf.RAdamScheduleFree}[name]
        ob = ref([dict(params=b[:2]), dict(params=b[2:], **g1)], foreach=False, **hp)
        ob.train()
    else:
        ob = _ref_lr_free(name, hp, [dict(params=b[:2]), dict(params=b[2:], **g1)])
    gen = torch.Generator().manual_seed(3)
    for k in range(60):
        _feed([a, b], target, k, gen)
        oa.step()
        ob.step()
        if name.startswith("ScheduleFree") and k % 20 == 19:
            oa.eval()
            ob.eval()
            for x, y in zip(a, b):
                assert _rel(x, y) <= TOL[dtype]
            assert all(g["train_mode"] is False for g in oa.param_groups)
            oa.train()
            ob.train()
    for x, y in zip(a, b):
        assert _rel(x, y) <= TOL[dtype]
    if name == "Prodigy":
        assert abs(oa.d - ob.param_groups[0]["d"]) <= TOL[dtype] * ob.param_groups[0]["d"]
    elif name == "DoG":
        ref_eta = [float(g["eta"][0]) for g in ob.param_groups]
        np.testing.assert_allclose(oa.d, ref_eta, rtol=TOL[dtype])


@pytest.mark.parametrize("name", list(OURS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_state_dict_round_trip_is_exact(name, mode):
    """A torch-style state_dict (torch.save/torch.load) resumes bit for bit,
    from train or (schedule-free) eval mode."""
    if mode == "eval" and not name.startswith("ScheduleFree"):
        pytest.skip("no eval mode")
    hp = OURS[name][0][1]
    tp, _, target, ot, _ = _plain_pair(name, hp, torch.float64)
    gen = torch.Generator().manual_seed(4)
    for k in range(12):
        _feed([tp], target, k, gen)
        ot.step()
    if mode == "eval":
        ot.eval()
    buf = io.BytesIO()
    torch.save(ot.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=False)
    for e in sd["state"].values():
        assert isinstance(e["step"], torch.Tensor)
    t2 = [x.detach().clone().requires_grad_() for x in tp]
    o2 = type(ot)([dict(params=t2[:2], **hp), dict(params=t2[2:], **_g1(name, hp))])
    o2.load_state_dict(sd)
    if mode == "eval":
        assert o2.train_mode is False
        with pytest.raises(RuntimeError, match="eval mode"):
            o2.step()
        ot.train()
        o2.train()
    for k in range(12, 24):
        _feed([tp, t2], target, k, gen)
        ot.step()
        o2.step()
    for x, y in zip(tp, t2):
        assert torch.equal(x, y)
    if hasattr(ot, "d"):
        assert ot.d == o2.d


@pytest.mark.parametrize("name", ALL)
def test_zero_copy_and_deepcopy(name, no_bf16):
    """data_ptr() unchanged; the state tensors are the kernels' memory (an
    in-place change to the state steers the next step); a deepcopy and a
    pickle continue as the original."""
    dtype = torch.float64
    shapes = (OURS.get(name) or TORCH[name])[1]
    init, target = _init(shapes, dtype)
    ps = [x.clone().requires_grad_() for x in init]
    kw = dict(lr=0.5) if name == "LARS" else {}
    opt = getattr(lt, name)(ps, **kw)
    ptrs = [p.data_ptr() for p in ps]
    gen = torch.Generator().manual_seed(5)
    sparse = name == "SparseAdam"
    for k in range(5):
        _feed([ps], target, k, gen, sparse=sparse)
        opt.step()
    assert [p.data_ptr() for p in ps] == ptrs
    inner = opt._inner
    for i, p in enumerate(ps):
        e = inner._state_entry(i, copy=False)
        for key, v in e.items():
            if isinstance(v, np.ndarray):
                assert opt.state[p][key].data_ptr() == v.ctypes.data, key
    c = copy.deepcopy((opt, ps))
    q = pickle.loads(pickle.dumps((opt, ps)))
    for k in range(5, 9):
        _feed([ps, c[1], q[1]], target, k, gen, sparse=sparse)
        for o in (opt, c[0], q[0]):
            o.step()
    for x, y, z in zip(ps, c[1], q[1]):
        assert torch.equal(x, y) and torch.equal(x, z)
    assert [p.data_ptr() for p in ps] == ptrs


def test_state_changed_in_place_steers_the_step():
    ps = [torch.ones(5, requires_grad=True)]
    opt = lt.Lamb(ps, lr=0.1)
    ps[0].grad = torch.ones(5)
    opt.step()
    opt.state[ps[0]]["exp_avg"].zero_()
    inner = opt._inner
    assert not inner._states[0][0].any()


@pytest.mark.parametrize("name", ALL)
def test_no_allocation_per_step(name, no_bf16):
    shapes = (OURS.get(name) or TORCH[name])[1]
    init, target = _init(shapes, torch.float32)
    ps = [x.clone().requires_grad_() for x in init]
    opt = getattr(lt, name)(ps, **(dict(lr=0.5) if name == "LARS" else {}))
    gen = torch.Generator().manual_seed(6)
    sparse = name == "SparseAdam"
    grads = [_grad(p, t, 0, gen, sparse) for p, t in zip(ps, target)]
    for p, g in zip(ps, grads):
        p.grad = g
    for _ in range(3):
        opt.step()
    tracemalloc.start()
    try:
        for _ in range(3):
            opt.step()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            opt.step()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 4096, grown


# ----------------------------------------------------------- the modes, d
def test_schedule_free_modes():
    ps = [torch.randn(4, 3, requires_grad=True)]
    opt = lt.ScheduleFreeAdamW(ps, lr=0.01)
    assert opt.train_mode and opt.param_groups[0]["train_mode"] is True
    for _ in range(3):
        ps[0].grad = torch.randn(4, 3)
        opt.step()
    y = ps[0].detach().clone()
    opt.eval()
    x = ps[0].detach().clone()
    assert not torch.equal(x, y)
    before = (ps[0].detach().clone(), opt.state[ps[0]]["z"].clone())
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()
    assert torch.equal(ps[0], before[0]) and torch.equal(opt.state[ps[0]]["z"], before[1])
    opt.eval()                                         # a no-op
    assert torch.equal(ps[0], x)
    opt.train()
    assert _rel(ps[0], y) <= 1e-6


def test_prodigy_d_grows_and_lars_needs_lr():
    torch.manual_seed(0)
    ps = [(1e-3 * torch.randn(50)).requires_grad_()]
    opt = lt.Prodigy(ps)
    d0 = opt.d
    for _ in range(30):
        ps[0].grad = (ps[0].detach() - 1.0)
        opt.step()
    assert opt.d > 100 * d0
    assert opt.state[ps[0]]["d"] == opt.d or opt.state[ps[0]]["d_max"] >= opt.d
    with pytest.raises(ValueError, match="lr"):
        lt.LARS([torch.zeros(3, requires_grad=True)])


# ----------------------------------------------------------- refusals
def _refused(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


def test_refusals_change_nothing():
    p = torch.randn(6, 3, requires_grad=True)
    opt = lt.SparseAdam([p])
    p.grad = torch.randn(6, 3)
    _refused(opt.step, ValueError, "sparse COO")
    p.grad = torch.sparse_coo_tensor(torch.tensor([[1], [2]]), torch.ones(1), (6, 3))
    _refused(opt.step, ValueError, "one sparse dimension")
    assert not opt.state
    q = torch.randn(5, requires_grad=True)
    lamb = lt.Lamb([q], lr=0.1)
    q.grad = torch.randn(5).to_sparse()
    _refused(lamb.step, ValueError, "sparse")
    q.grad = torch.randn(5)
    lamb.step()
    snap = (q.detach().clone(), lamb.state[q]["exp_avg"].clone(), float(lamb.state[q]["step"]))
    lamb.param_groups[0]["lr"] = -1.0                 # a bad value from the user
    _refused(lamb.step, ValueError, "lr")
    assert torch.equal(q, snap[0]) and torch.equal(lamb.state[q]["exp_avg"], snap[1])
    assert float(lamb.state[q]["step"]) == snap[2]
    lamb.param_groups[0]["lr"] = 0.1
    lamb.step()
    _refused(lambda: lt.Adafactor([q], foreach=True), ValueError, "foreach")
    _refused(lambda: lt.Muon([q]), ValueError, "2-D")
    _refused(lambda: lt.Lamb([q.detach().cuda() if False else torch.zeros(3, dtype=torch.int64)]),
             TypeError, "dtype")
    _refused(lambda: lt.Prodigy([q], master_weights=True), ValueError, "master")
    _refused(lambda: lt.Lamb([q]).add_param_group({"params": [torch.zeros(2, 2).T]}),
             ValueError, "contiguous")


def test_bad_state_dict_changes_nothing():
    ps = [torch.randn(4, 3, requires_grad=True)]
    opt = lt.NovoGrad(ps, lr=0.01)
    ps[0].grad = torch.randn(4, 3)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    snap = opt.state[ps[0]]["exp_avg"].clone()
    bad = copy.deepcopy(sd)
    bad["state"][0]["exp_avg"] = torch.zeros(5)
    _refused(lambda: opt.load_state_dict(bad), ValueError, "exp_avg")
    assert torch.equal(opt.state[ps[0]]["exp_avg"], snap)
    bad = copy.deepcopy(sd)
    bad["state"][0]["nu"] = -1.0
    _refused(lambda: opt.load_state_dict(bad), ValueError, "nu")
    opt.step()                                         # still works, same memory
    assert opt.state[ps[0]]["exp_avg"].data_ptr() == opt._inner._states[0][0].ctypes.data


@pytest.mark.parametrize("cls,kw,drop", [("Adam", {}, "exp_avg_sq"), ("AdamW", {}, "exp_avg"),
                                         ("RMSprop", {}, "square_avg"), ("Adagrad", {}, "sum"),
                                         ("Adan", {}, "exp_avg_diff")])
def test_missing_state_is_refused_unless_an_option_added_it(cls, kw, drop):
    """A stepped param's entry without a state that every setting of the
    optimizer keeps is a malformed checkpoint: refused, nothing changed. A
    state that only an option switched on later needs (amsgrad, RMSprop's
    momentum and centered) is filled as a new run's would be."""
    C = getattr(lt, cls)
    ps = [torch.randn(4, 3, requires_grad=True)]
    opt = C(ps, lr=0.01, **kw)
    ps[0].grad = torch.randn(4, 3)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    if drop not in sd["state"][0]:
        pytest.skip(f"{cls} keeps no {drop!r}")
    snap = {k: v.clone() for k, v in opt.state[ps[0]].items() if isinstance(v, torch.Tensor)}
    bad = copy.deepcopy(sd)
    del bad["state"][0][drop]
    _refused(lambda: opt.load_state_dict(bad), ValueError, f"state lacks '{drop}'")
    assert all(torch.equal(opt.state[ps[0]][k], v) for k, v in snap.items())
    opt.step()
    for C2, kw2, new in ((lt.Adam, dict(amsgrad=True), "max_exp_avg_sq"),
                         (lt.RMSprop, dict(momentum=0.9, centered=True), "grad_avg")):
        q = [torch.randn(4, 3, requires_grad=True)]
        o = C2(q, lr=0.01)
        q[0].grad = torch.randn(4, 3)
        o.step()
        o.load_state_dict(o.state_dict())
        o.param_groups[0].update(kw2)          # switched on after the start
        o.step()
        assert new in o.state[q[0]]


def test_hooks_add_param_group_and_named_params():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    opt = lt.Lamb([("w", a)], lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kw: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kw: calls.append("post"))
    opt.add_param_group({"params": [("b", b)], "lr": 0.05})
    a.grad, b.grad = torch.randn(4, 3), torch.randn(5)
    opt.step()
    assert calls == ["pre", "post"]
    assert set(opt.state) == {a, b}
    assert opt.state_dict()["param_groups"][1]["param_names"] == ["b"]
    c = torch.randn(3, requires_grad=True)
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [c], "lr": -1.0})
    assert len(opt.param_groups) == 2
    b.grad = torch.randn(5)
    a.grad = None
    opt.step()
    assert float(opt.state[a]["step"]) == 1 and float(opt.state[b]["step"]) == 2
