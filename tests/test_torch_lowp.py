"""lrfast.torch with ``state_dtype="bfloat16"`` or ``"int8"``: the state lives in
torch tensors in ``opt.state[p]`` (bfloat16 tensors; or uint8 codes under the
state's name plus ``<name>_absmax``, float32, one per block of 256), the same
memory the kernels update. Checked bit for bit against the plain
``lrfast.AdamW(state_dtype=...)`` on the same numpy data (float32 params, and
bfloat16 params with float32 master weights), with torch schedulers changing
lr; state_dict round trips resume exactly and convert between formats."""
import copy
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")
import lrfast  # noqa: E402
import lrfast.torch as lt  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
SIZES = [(64, 80), (5000,), (7,), (300,)]      # 8-bit state for the first two only
HP = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)


def _to_torch(a):
    """A numpy float32 or ml_dtypes bfloat16 array as a new torch tensor."""
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def _to_np(t):
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BF16)
    return t.numpy()


def _data(master, steps=20, seed=0):
    rng = np.random.default_rng(seed)
    dt = BF16 if master else np.float32
    ps = [(rng.standard_normal(s) * 0.5).astype(np.float32).astype(dt) for s in SIZES]
    gs = [[(rng.standard_normal(s) + 0.2).astype(np.float32).astype(dt) for s in SIZES]
          for _ in range(steps)]
    return ps, gs


def _torch_opt(ps, state_dtype, master, sched=True):
    tp = [_to_torch(p).requires_grad_() for p in ps]
    opt = lt.AdamW(tp, state_dtype=state_dtype, master_weights=master, **HP)
    s = None
    if sched:
        s = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-2, total_steps=40,
                                                cycle_momentum=True)
    return tp, opt, s


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))


@pytest.mark.parametrize("master", [False, True], ids=["f32-params", "bf16-master"])
@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_bitwise_equal_to_plain_lrfast(state_dtype, master):
    ps, gs = _data(master)
    tp, opt, sched = _torch_opt(ps, state_dtype, master)
    ptrs = [p.data_ptr() for p in tp]
    plain = lrfast.AdamW([p.copy() for p in ps], state_dtype=state_dtype,
                         master_weights=master, **HP)
    lrs = set()
    for g in gs:
        for p, gi in zip(tp, g):
            p.grad = _to_torch(gi)
        # the scheduler's lr and (cycled) betas, given to the plain optimizer
        plain.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
        plain.param_groups[0]["betas"] = opt.param_groups[0]["betas"]
        lrs.add(opt.param_groups[0]["lr"])
        opt.step()
        plain.step(g)
        sched.step()
    assert len(lrs) == len(gs)                    # the scheduler changed lr every step
    assert [p.data_ptr() for p in tp] == ptrs
    sd = plain.state_dict()["state"]
    for i, p in enumerate(tp):
        _same(_to_np(p), plain.param_groups[0]["params"][i])
        st = opt.state[p]
        assert float(st["step"]) == 20
        big = p.numel() >= 4096
        for nm in ("exp_avg", "exp_avg_sq"):
            t = st[nm]
            if state_dtype == "bfloat16":
                assert t.dtype == torch.bfloat16
            elif big:
                assert t.dtype == torch.uint8 and t.shape == p.shape
                am = st[nm + "_absmax"]
                assert am.dtype == torch.float32 and am.shape == (-(-p.numel() // 256),)
                _same(am.numpy(), sd[i][nm + "_absmax"])
            else:
                assert t.dtype == torch.float32 and nm + "_absmax" not in st
            _same(_to_np(t), sd[i][nm])
        if master:
            _same(st["master_param"].numpy(), sd[i]["master_param"])
            assert torch.equal(p.detach(), st["master_param"].to(torch.bfloat16))


@pytest.mark.parametrize("master", [False, True], ids=["f32-params", "bf16-master"])
@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_state_is_the_kernels_memory(state_dtype, master):
    """The step writes into the published state tensors (no copy, no
    replacement): their memory is the kernels'."""
    ps, gs = _data(master, steps=2)
    tp, opt, _ = _torch_opt(ps, state_dtype, master, sched=False)
    for p, g in zip(tp, gs[0]):
        p.grad = _to_torch(g)
    opt.step()
    before = {(i, k): (v, v.data_ptr()) for i, p in enumerate(tp)
              for k, v in opt.state[p].items()}
    snap = {k: v.clone() for k, (v, _) in before.items()}
    for p, g in zip(tp, gs[1]):
        p.grad = _to_torch(g)
    opt.step()
    for k, (v, ptr) in before.items():
        i, nm = k
        assert opt.state[tp[i]][nm] is v and v.data_ptr() == ptr
        if nm != "step" and k[0] == 0:
            assert not torch.equal(v, snap[k])        # updated in place


@pytest.mark.parametrize("master", [False, True], ids=["f32-params", "bf16-master"])
@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_state_dict_round_trip_resumes_exactly(state_dtype, master):
    ps, gs = _data(master)
    tp, opt, sched = _torch_opt(ps, state_dtype, master)
    for g in gs[:10]:
        for p, gi in zip(tp, g):
            p.grad = _to_torch(gi)
        opt.step()
        sched.step()
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    saved = copy.deepcopy(sd)
    ssd = sched.state_dict()
    tp2 = [p.detach().clone().requires_grad_() for p in tp]
    opt2 = lt.AdamW(tp2, state_dtype=state_dtype, master_weights=master, **HP)
    sched2 = torch.optim.lr_scheduler.OneCycleLR(opt2, max_lr=2e-2, total_steps=40)
    opt2.load_state_dict(sd)                  # (after the scheduler sets its initial lr)
    sched2.load_state_dict(ssd)
    for i, p in enumerate(tp2):           # torch's load cast undone: dtypes as saved
        for k, v in opt2.state[p].items():
            assert v.dtype == saved["state"][i][k].dtype, k
            assert torch.equal(v, saved["state"][i][k]), k
    for g in gs[10:]:
        for a, b, gi in zip(tp, tp2, g):
            a.grad, b.grad = _to_torch(gi), _to_torch(gi)
        opt.step()
        opt2.step()
        sched.step()
        sched2.step()
    for a, b in zip(tp, tp2):
        assert torch.equal(a.view(torch.int16) if master else a,
                           b.view(torch.int16) if master else b)
        for k, v in opt.state[a].items():
            assert torch.equal(v, opt2.state[b][k]), k
    for i in sd["state"]:                 # the loaded dict itself is not written
        for k, v in sd["state"][i].items():
            assert torch.equal(v, saved["state"][i][k])


@pytest.mark.parametrize("src,dst", [("int8", "float32"), ("float32", "int8"),
                                     ("bfloat16", "int8"), ("int8", "bfloat16")])
def test_state_dict_converts_between_formats(src, dst):
    """A state_dict from one state_dtype loads into another: the values are
    converted as the plain lrfast optimizers convert (same stored result)."""
    ps, gs = _data(False, steps=5)
    tp, opt, _ = _torch_opt(ps, src, False, sched=False)
    plain = lrfast.AdamW([p.copy() for p in ps], state_dtype=src, **HP)
    for g in gs[:4]:
        for p, gi in zip(tp, g):
            p.grad = _to_torch(gi)
        opt.step()
        plain.step(g)
    tp2 = [p.detach().clone().requires_grad_() for p in tp]
    opt2 = lt.AdamW(tp2, state_dtype=dst, **HP)
    opt2.load_state_dict(opt.state_dict())
    plain2 = lrfast.AdamW([p.copy() for p in plain.param_groups[0]["params"]],
                          state_dtype=dst, **HP)
    plain2.load_state_dict(plain.state_dict())
    for a, b in zip(tp2, gs[4]):
        a.grad = _to_torch(b)
    opt2.step()
    plain2.step(gs[4])
    sd = plain2.state_dict()["state"]
    for i, p in enumerate(tp2):
        _same(_to_np(p), plain2.param_groups[0]["params"][i])
        st = opt2.state[p]
        for nm in ("exp_avg", "exp_avg_sq"):
            _same(_to_np(st[nm]), sd[i][nm])
            assert (nm + "_absmax" in st) == (nm + "_absmax" in sd[i])
            if nm + "_absmax" in st:
                _same(st[nm + "_absmax"].numpy(), sd[i][nm + "_absmax"])
            want = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                    "int8": torch.uint8 if p.numel() >= 4096 else torch.float32}[dst]
            assert st[nm].dtype == want


def test_torch_adamw_state_dict_loads_into_int8():
    """A torch.optim.AdamW checkpoint (float32 state) loads into an int8
    lrfast.torch.AdamW (quantized on load) and continues."""
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(5000, generator=gen, requires_grad=True)
    ref = torch.optim.AdamW([p], lr=1e-2)
    p.grad = torch.randn(5000, generator=gen)
    ref.step()
    q = p.detach().clone().requires_grad_()
    opt = lt.AdamW([q], lr=1e-2, state_dtype="int8")
    opt.load_state_dict(ref.state_dict())
    st = opt.state[q]
    assert st["exp_avg"].dtype == torch.uint8 and st["exp_avg_absmax"].shape == (20,)
    deq = lrfast._dispatch.kernels.dequantize_blockwise(st["exp_avg"].numpy(),
                                                        st["exp_avg_absmax"].numpy(), True)
    m = ref.state[p]["exp_avg"].numpy()
    assert np.abs(deq - m).max() <= 0.02 * np.abs(m).max()
    q.grad = p.grad.clone()
    opt.step()
    assert float(st["step"]) == 2 and torch.isfinite(q).all()


def test_bad_input_is_refused_before_any_write():
    p = torch.randn(5000, requires_grad=True)
    for bad in ("int4", "fp8", 8, torch.bfloat16):
        with pytest.raises(ValueError, match="state_dtype must be one of"):
            lt.AdamW([p], state_dtype=bad)
    with pytest.raises(ValueError, match="elementwise"):
        lt.Rprop([p], state_dtype="int8")
    with pytest.raises(ValueError, match="elementwise"):
        lt.Lamb([p], state_dtype="bfloat16")
    with pytest.raises(TypeError, match="float64"):
        lt.AdamW([torch.randn(10, dtype=torch.float64, requires_grad=True)],
                 state_dtype="bfloat16")
    assert lt.Lamb([p], state_dtype="float32") is not None
    # a malformed 8-bit state_dict: refused, the optimizer unchanged
    opt = lt.AdamW([p], state_dtype="int8")
    p.grad = torch.randn(5000)
    opt.step()
    good = copy.deepcopy(opt.state_dict())
    before = {k: v.clone() for k, v in opt.state[p].items()}
    for key, val, msg in [("exp_avg_absmax", torch.zeros(19), "blocks"),
                          ("exp_avg_absmax", None, "lacks"),
                          ("exp_avg_absmax", torch.zeros(20, dtype=torch.float64), "1-D float32")]:
        sd = copy.deepcopy(good)
        if val is None:
            del sd["state"][0][key]
        else:
            sd["state"][0][key] = val
        with pytest.raises(ValueError, match=msg):
            opt.load_state_dict(sd)
        for k, v in before.items():
            assert torch.equal(opt.state[p][k], v)
    sd = copy.deepcopy(good)
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].float()
    with pytest.raises(ValueError, match="not 8-bit"):       # absmax with float values
        opt.load_state_dict(sd)
    p.grad = torch.randn(5000)
    opt.step()                                                # still steps
    assert float(opt.state[p]["step"]) == 2


def test_deepcopy_keeps_state_dtype():
    p = torch.randn(5000, requires_grad=True)
    opt = lt.AdamW([p], state_dtype="int8")
    p.grad = torch.ones(5000)
    opt.step()
    o2 = copy.deepcopy(opt)
    q = o2.param_groups[0]["params"][0]
    q.grad = torch.ones(5000)
    o2.step()
    assert o2.state[q]["exp_avg"].dtype == torch.uint8 and float(o2.state[q]["step"]) == 2



@pytest.mark.parametrize("copier", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))],
                         ids=["deepcopy", "pickle"])
def test_copy_zero_grad_before_its_first_step(copier):
    """A deep-copied or unpickled optimizer (built at its first step) takes
    zero_grad before that step (it raised AttributeError), then steps as the
    original."""
    ps, gs = _data(True, steps=3)
    tp, opt, _ = _torch_opt(ps, "int8", True, sched=False)
    for p, g in zip(tp, gs[0]):
        p.grad = _to_torch(g)
    opt.step()
    o2 = copier(opt)
    q = o2.param_groups[0]["params"]
    o2.zero_grad()
    assert all(p.grad is None for p in q)
    for g in gs[1:]:
        for a, b, gi in zip(tp, q, g):
            a.grad, b.grad = _to_torch(gi), _to_torch(gi)
        opt.step()
        o2.step()
        o2.zero_grad()
    for a, b in zip(tp, q):
        assert torch.equal(a.view(torch.int16), b.view(torch.int16))
        assert torch.equal(opt.state[a]["master_param"], o2.state[b]["master_param"])

@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("name,hp", [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("Adagrad", dict(lr=0.05, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("Adamax", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01)),
    ("Adadelta", dict(lr=1.0)),
    ("Lion", dict(lr=0.001, weight_decay=0.1)),
    ("AdaBelief", dict(lr=0.01)),
    ("Yogi", dict(lr=0.01)),
    ("ADOPT", dict(lr=0.01)),
])
def test_every_elementwise_class_equals_plain(name, hp, state_dtype):
    """The other classes with low-precision state, against the plain class."""
    ps, gs = _data(False, steps=6, seed=4)
    tp = [_to_torch(p).requires_grad_() for p in ps]
    opt = getattr(lt, name)(tp, state_dtype=state_dtype, **hp)
    plain = getattr(lrfast, name)([p.copy() for p in ps], state_dtype=state_dtype, **hp)
    for g in gs:
        for p, gi in zip(tp, g):
            p.grad = _to_torch(gi)
        opt.step()
        plain.step(g)
    sd = plain.state_dict()["state"]
    for i, p in enumerate(tp):
        _same(_to_np(p), plain.param_groups[0]["params"][i])
        for k, v in sd[i].items():
            if isinstance(v, np.ndarray) and k in opt.state[p]:
                _same(_to_np(opt.state[p][k]), v)
        assert {k for k in sd[i] if k.endswith("_absmax")} == \
            {k for k in opt.state[p] if k.endswith("_absmax")}


def test_bfloat16_state_converts_with_from_torch_state_dict():
    """lrfast.io.from_torch_state_dict takes bfloat16 state tensors (torch.optim
    over bfloat16 params, or state_dtype="bfloat16"; it raised torch's
    TypeError "unsupported ScalarType BFloat16"): as ml_dtypes bfloat16 arrays,
    the same bits, and the plain optimizer resumes as the torch one."""
    from lrfast import io
    ps, gs = _data(True, steps=6)
    tp, opt, _ = _torch_opt(ps, "bfloat16", True, sched=False)
    for g in gs[:3]:
        for p, gi in zip(tp, g):
            p.grad = _to_torch(gi)
        opt.step()
    tsd = opt.state_dict()
    sd = io.from_torch_state_dict(tsd, "AdamW")
    for i, p in enumerate(tp):
        for k in ("exp_avg", "exp_avg_sq", "master_param"):
            assert sd["state"][i][k].dtype == _to_np(tsd["state"][i][k]).dtype
            _same(sd["state"][i][k], _to_np(tsd["state"][i][k]))
    plain = lrfast.AdamW([_to_np(p).copy() for p in tp], state_dtype="bfloat16",
                         master_weights=True, **HP)
    plain.load_state_dict(sd)
    for g in gs[3:]:
        for p, gi in zip(tp, g):
            p.grad = _to_torch(gi)
        opt.step()
        plain.step(g)
    for p, q in zip(tp, plain.param_groups[0]["params"]):
        _same(_to_np(p), q)
