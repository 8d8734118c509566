"""Low precision: 16-bit params and grads, float32 master weights, bfloat16 and
8-bit blockwise state. Each configuration is checked bit for bit against a
numpy twin that widens to float32, runs the optimizer's float32 twin, and
rounds (numpy's and ml_dtypes' own casts for nearest even; the engine's
counter-based stream replayed in numpy for stochastic rounding)."""
import numpy as np
import pytest

import lrfast
from lrfast import _reference as R
from lrfast._dispatch import kernels as K
from lrfast.optim._table import KINDS, TABLE

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

try:
    from lrfast._quant import quantize_blockwise_ref as _qref, dequantize_blockwise_ref as _dqref
except ImportError:   # pragma: no cover - the quantizer's numpy twin
    _qref, _dqref = K.quantize_blockwise, K.dequantize_blockwise

CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("Adagrad", dict(lr=0.05, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.01, maximize=True)),   # L2 in the one-pass bf16 loop
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("Lion", dict(lr=0.001, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01)),
    ("Adadelta", dict(lr=1.0)),
    ("AdaBelief", dict(lr=0.01)),
    ("Yogi", dict(lr=0.01)),
    ("ADOPT", dict(lr=0.01)),
]
SIZES = (70000 + 37, 300, 4096)   # threads split the first; the second keeps float32 8-bit state


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    ps = [(rng.standard_normal(n) * 0.5).astype(np.float32).astype(dtype) for n in SIZES]
    gs = [[(rng.standard_normal(n) + 0.3).astype(np.float32).astype(dtype) for n in SIZES]
          for _ in range(6)]
    return ps, gs


class Twin:
    """One optimizer in numpy: float32 values, stored as the engine stores them."""

    def __init__(self, name, hp, params, state_dtype, master, sr, seed):
        self.name, self.hp, self.sd, self.sr, self.seed = name, hp, state_dtype, sr, seed
        spec = TABLE[name]
        self.names, self.qmaps = spec.states, KINDS[spec.kind].qmaps
        self.dtype = params[0].dtype
        self.x = [p.astype(np.float32) for p in params]         # master or widened value
        self.master = master
        self.st = []
        for x in self.x:
            st = R.init_state(name, x, **hp)
            for j, k in enumerate(self.names):
                if isinstance(st.get(k), np.ndarray):
                    st[k] = self._store(j, st[k], x.size, None, 0, 0)
            self.st.append(st)
        self.t = 0
        self.params = params

    def _fmt(self, j, size):
        if self.sd == "bfloat16":
            return "bf16"
        if self.sd == "int8" and size >= 4096:
            return "q8" + self.qmaps[j]
        return "f32"

    def _store(self, j, v, size, i, slot, step):
        f = self._fmt(j, size)
        if f == "f32":
            return v
        if f == "bf16":
            rnd = R.sr_bits(size, self.seed, step, i, slot) if self.sr and i is not None else None
            return R.round_half(v, BF16, rnd)
        return _qref(v, f == "q8s")

    def _load(self, j, v, size):
        f = self._fmt(j, size)
        if f == "f32":
            return v
        if f == "bf16":
            return v.astype(np.float32)
        return _dqref(v[0], v[1], f == "q8s").reshape(-1)

    def step(self, grads, coef=1.0):
        n = self.t
        self.t += 1
        for i, (x, g) in enumerate(zip(self.x, grads)):
            if not self.master and self.dtype != np.float32:
                x[...] = self.params[i].astype(np.float32)
            st = dict(self.st[i])
            for j, k in enumerate(self.names):
                if k in st and st[k] is not None and isinstance(st[k], (np.ndarray, tuple)):
                    st[k] = np.array(self._load(j, st[k], x.size), dtype=np.float32)
            R.STEPPERS[self.name](x, g.astype(np.float32), st, step=self.t, grad_scale=coef,
                                  **self.hp)
            for j, k in enumerate(self.names):
                if k in st and isinstance(st[k], np.ndarray):
                    self.st[i][k] = self._store(j, st[k], x.size, i, 1 + j, n)
                elif k in st:
                    self.st[i][k] = st[k]
            for k in st:
                if k not in self.names:
                    self.st[i][k] = st[k]
            if self.dtype == np.float32:
                self.params[i][...] = x
            else:
                rnd = (R.sr_bits(x.size, self.seed, n, i, 0) if self.sr and not self.master
                       else None)
                self.params[i][...] = R.round_half(x, self.dtype, rnd)


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _check_state(opt, twin):
    sd = opt.state_dict()["state"]
    for i in range(len(SIZES)):
        for j, k in enumerate(twin.names):
            v = twin.st[i].get(k)
            if not isinstance(v, (np.ndarray, tuple)) or k not in sd[i]:
                continue
            if isinstance(v, tuple):
                assert np.array_equal(sd[i][k].reshape(-1), v[0].reshape(-1)), (i, k)
                assert np.array_equal(_bits(sd[i][k + "_absmax"]), _bits(v[1])), (i, k)
            else:
                assert np.array_equal(_bits(sd[i][k]), _bits(v)), (i, k)
        if twin.master:
            assert np.array_equal(_bits(sd[i]["master_param"]), _bits(twin.x[i]))


@pytest.mark.parametrize("name,hp", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@pytest.mark.parametrize("dtype,state_dtype,master,sr", [
    ("bfloat16", "float32", False, False),
    ("bfloat16", "float32", True, False),
    ("float16", "float32", False, True),
    ("bfloat16", "bfloat16", False, True),
    ("float32", "bfloat16", False, False),
    ("float32", "int8", False, False),
    ("bfloat16", "int8", True, False),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_bitwise_twin(name, hp, dtype, state_dtype, master, sr, threads):
    dt = BF16 if dtype == "bfloat16" else np.dtype(dtype)
    ps, gs = _problem(dt)
    twin_ps = [p.copy() for p in ps]
    opt = getattr(lrfast, name)(ps, **hp, state_dtype=state_dtype, master_weights=master,
                                stochastic_rounding=sr, seed=11)
    twin = Twin(name, {k: v for k, v in hp.items()}, twin_ps, state_dtype, master, sr, 11)
    with lrfast.threads(threads):
        for g in gs:
            opt.step(g)
            twin.step(g)
    for p, q in zip(ps, twin_ps):
        assert p.dtype == dt
        assert np.array_equal(_bits(p), _bits(q))
    _check_state(opt, twin)


def test_max_grad_norm_on_16bit_grads():
    ps, gs = _problem(BF16, seed=3)
    twin_ps = [p.copy() for p in ps]
    opt = lrfast.Adam(ps, lr=0.01, max_grad_norm=1.0)
    twin = Twin("Adam", dict(lr=0.01), twin_ps, "float32", False, False, 0)
    for g in gs:
        opt.step(g)
        twin.step(g, coef=R.clip_coef(R.global_norm([x.astype(np.float32) for x in g]), 1.0))
    for p, q in zip(ps, twin_ps):
        assert np.array_equal(_bits(p), _bits(q))


@pytest.mark.parametrize("state_dtype,master,sr", [("int8", True, False), ("bfloat16", False, True),
                                                   ("float32", True, True)])
def test_resume_is_exact(state_dtype, master, sr):
    ps, gs = _problem(BF16, seed=1)
    a = [p.copy() for p in ps]
    kw = dict(lr=0.01, state_dtype=state_dtype, master_weights=master, stochastic_rounding=sr,
              seed=3)
    o1 = lrfast.AdamW(ps, **kw)
    for g in gs[:3]:
        o1.step(g)
    sd = o1.state_dict()
    b = [p.copy() for p in ps]
    for g in gs[3:]:
        o1.step(g)
    o2 = lrfast.AdamW(b, **kw)
    o2.load_state_dict(sd)
    for g in gs[3:]:
        o2.step(g)
    for p, q in zip(ps, b):
        assert np.array_equal(_bits(p), _bits(q))
    del a


def test_cross_format_loads():
    rng = np.random.default_rng(4)
    p = rng.standard_normal(10000).astype(np.float32)
    f32 = lrfast.Adam([p.copy()], lr=0.01)
    for _ in range(3):
        f32.step([rng.standard_normal(10000).astype(np.float32)])
    sd = f32.state_dict()
    q8 = lrfast.Adam([p.copy()], lr=0.01, state_dtype="int8")
    q8.load_state_dict(sd)                  # quantized on load
    e = q8.state_dict()["state"][0]
    m = sd["state"][0]["exp_avg"]
    assert e["exp_avg"].dtype == np.uint8 and e["exp_avg_absmax"].shape == (40,)
    back = K.dequantize_blockwise(e["exp_avg"], e["exp_avg_absmax"], True)
    assert np.max(np.abs(back - m)) <= 0.02 * np.max(np.abs(m))
    f32b = lrfast.Adam([p.copy()], lr=0.01)
    f32b.load_state_dict(q8.state_dict())   # dequantized on load
    assert np.array_equal(f32b.state_dict()["state"][0]["exp_avg"], back)
    b16 = lrfast.Adam([p.copy()], lr=0.01, state_dtype="bfloat16")
    b16.load_state_dict(sd)
    assert np.array_equal(b16.state_dict()["state"][0]["exp_avg"], m.astype(BF16))


def test_bad_input_changes_nothing():
    rng = np.random.default_rng(5)
    p = rng.standard_normal(10000).astype(np.float32)
    opt = lrfast.Adam([p], lr=0.01, state_dtype="int8")
    opt.step([rng.standard_normal(10000).astype(np.float32)])
    sd = opt.state_dict()
    before = (p.copy(), opt.state_dict())
    bad = opt.state_dict()
    bad["state"][0]["exp_avg_absmax"] = bad["state"][0]["exp_avg_absmax"][:-1]
    with pytest.raises(ValueError, match="blocks"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    del bad["state"][0]["exp_avg_sq_absmax"]
    with pytest.raises(ValueError, match="absmax"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert np.array_equal(p, before[0])
    for k, v in before[1]["state"][0].items():
        assert np.array_equal(after["state"][0][k], v)
    del sd
    with pytest.raises(ValueError, match="Rprop does not take"):
        lrfast.Rprop([p], state_dtype="int8")
    with pytest.raises(ValueError, match="state_dtype must be"):
        lrfast.Adam([p], state_dtype="int4")
    with pytest.raises(ValueError, match="master_weights=True needs"):
        lrfast.Adam([p], master_weights=True)
    with pytest.raises(ValueError, match="float64"):
        lrfast.Adam([p.astype(np.float64)], state_dtype="bfloat16")
    with pytest.raises(TypeError, match="bfloat16"):
        lrfast.Prodigy([p.astype(BF16)])
    h = p.astype(BF16)
    opt = lrfast.Adam([h], lr=0.1)
    with pytest.raises(TypeError, match="dtype"):
        opt.step([p])                                   # a float32 grad for a bfloat16 param
    assert np.array_equal(h, p.astype(BF16))


def test_master_params_and_memory():
    p = np.zeros(5000, BF16)
    opt = lrfast.AdamW([p], master_weights=True, state_dtype="int8")
    (m,) = opt.master_params
    assert m.dtype == np.float32 and m.shape == p.shape
    e = opt.state_dict()
    assert e["state"] == {}
    opt.step([np.ones(5000, BF16)])
    e = opt.state_dict()["state"][0]
    assert e["exp_avg"].dtype == np.uint8 and e["exp_avg_absmax"].dtype == np.float32
    assert np.array_equal(p, m.astype(BF16))            # the param is its master, rounded


@pytest.mark.parametrize("dtype", [BF16, np.dtype(np.float16)], ids=["bf16", "f16"])
@pytest.mark.parametrize("state_dtype,master", [("float32", False), ("bfloat16", False),
                                                ("int8", False), ("float32", True),
                                                ("int8", True)])
def test_f_contiguous_params_step_as_their_transpose(dtype, state_dtype, master):
    """An F-contiguous 16-bit param steps as the C-contiguous transpose that
    has its memory does: the same params, master copies and state_dict (8-bit
    blocks run along memory order in both) bit for bit. The master copy and
    fresh state follow the param's memory order, which the kernels pair
    elements in; a 70 x 64 matrix keeps 8-bit state, a 37 x 5 one float32."""
    rng = np.random.default_rng(5)
    shapes = [(70, 64), (37, 5)]
    x = [(0.5 * rng.standard_normal(s)).astype(np.float32).astype(dtype) for s in shapes]
    gs = [[(rng.standard_normal(s) + 0.3).astype(np.float32).astype(dtype) for s in shapes]
          for _ in range(4)]
    runs = []
    for fortran in (True, False):
        lay = np.asfortranarray if fortran else (lambda a: np.ascontiguousarray(a.T))
        ps = [lay(a) for a in x]
        opt = lrfast.AdamW(ps, lr=0.01, weight_decay=0.1, state_dtype=state_dtype,
                           master_weights=master)
        for g in gs:
            opt.step([lay(a) for a in g])
        if master:
            assert all(m.flags.f_contiguous == fortran and m.flags.c_contiguous != fortran
                       for m in opt.master_params)
        runs.append((ps, opt.state_dict()["state"]))
    (pf, sf), (pt, st) = runs
    assert pf[0].flags.f_contiguous and not pf[0].flags.c_contiguous
    for a, b in zip(pf, pt):
        assert a.T.tobytes() == b.tobytes()
    for i in sf:
        assert sorted(sf[i]) == sorted(st[i])
        for k, v in sf[i].items():
            if isinstance(v, np.ndarray):
                w = st[i][k]
                v = v.T if v.ndim == 2 else v                   # absmax: 1-D, as it is
                assert v.dtype == w.dtype and v.shape == w.shape, (i, k)
                assert np.ascontiguousarray(v).tobytes() == w.tobytes(), (i, k)
    assert ("master_param" in sf[0]) == master
    assert sf[0]["exp_avg"].dtype == {"int8": np.uint8, "bfloat16": BF16,
                                      "float32": np.float32}[state_dtype]


def test_stochastic_rounding_of_a_piece_draws_its_tensors_bits():
    """A sharded wrapper's piece (tensor 7, elements 2**32 - 100 ...: the key's
    high half changes inside the first chunk) rounds with the random bits of
    those elements of that tensor, as the numpy stream gives them; without
    keys, tensor 0 from element 0. The two differ."""
    from lrfast.optim import _lowp
    rng = np.random.default_rng(3)
    n, off = 1000, 2 ** 32 - 100
    x = rng.standard_normal(n).astype(np.float32).astype(BF16)
    g = rng.standard_normal(n).astype(np.float32).astype(BF16)
    want32 = x.astype(np.float32) - np.float32(0.01) * g.astype(np.float32)
    got = []
    for keys, (tensor, start) in ((None, (0, 0)), ([(7, off)], (7, off))):
        p = x.copy()
        with _lowp.decide_on([n], sr_keys=keys):
            opt = lrfast.SGD([p], lr=0.01, stochastic_rounding=True, seed=5)
        opt.step([g])
        want = R.round_half(want32, BF16, R.sr_bits(n, 5, 0, tensor, 0, start=start))
        assert want.view(np.uint16).tobytes() == p.view(np.uint16).tobytes(), keys
        got.append(p)
    assert not np.array_equal(got[0].view(np.uint16), got[1].view(np.uint16))


@pytest.mark.parametrize("state_dtype", ["float32", "int8"])
def test_lookahead_syncs_the_master_copies(state_dtype):
    """Lookahead over 16-bit params with master weights: the fast weights are
    the float32 masters, so the run equals Lookahead over float32 params on
    the widened grads bit for bit (masters = the float32 params, slow weights
    equal, each 16-bit param = its master rounded to nearest even), an
    F-contiguous param included; its state_dict resumes exactly, and a slow
    array of a wrong dtype raises before any write."""
    rng = np.random.default_rng(1)
    x0 = [(0.5 * rng.standard_normal(s)).astype(np.float32).astype(BF16)
          for s in ((70, 64), (300,))]
    gs = [[rng.standard_normal(a.shape).astype(np.float32).astype(BF16) for a in x0]
          for _ in range(8)]

    def make(master):
        ps = [np.asfortranarray(a if master else a.astype(np.float32)) for a in x0]
        opt = lrfast.Adam(ps, lr=1e-2, state_dtype=state_dtype, master_weights=master)
        return ps, lrfast.Lookahead(opt, k=3, alpha=0.5)

    def feed(look, gl, master):
        look.step([np.asfortranarray(g if master else g.astype(np.float32)) for g in gl])

    p32, l32 = make(False)
    pb, lb = make(True)
    for t, gl in enumerate(gs):
        feed(l32, gl, False)
        feed(lb, gl, True)
        if t == 4:
            sd = lb.state_dict()
    for a, b, m, s32, sb in zip(p32, pb, lb.optimizer.master_params, l32.slow_params,
                                lb.slow_params):
        assert m.tobytes(order="A") == a.tobytes(order="A")
        assert b.view(np.uint16).tobytes() == a.astype(BF16).view(np.uint16).tobytes()
        assert sb.dtype == np.float32 and np.array_equal(sb, s32)
    assert lb.steps_since_sync == 8 % 3
    pr, lr_ = make(True)            # resume from step 5
    for a, b in zip(pr, x0):
        a[...] = b
    lr_.load_state_dict(sd)
    for gl in gs[5:]:
        feed(lr_, gl, True)
    for a, b in zip(pr, pb):
        assert a.view(np.uint16).tobytes() == b.view(np.uint16).tobytes()
    bad = dict(sd, slow=[a.astype(np.float64) for a in sd["slow"]])
    before = [a.copy() for a in lr_.slow_params]
    with pytest.raises(ValueError, match="float32: its master copy"):
        lr_.load_state_dict(bad)
    assert all(np.array_equal(a, b) for a, b in zip(before, lr_.slow_params))


@pytest.mark.parametrize("kw", [dict(), dict(master_weights=True), dict(state_dtype="int8"),
                                dict(stochastic_rounding=True),
                                dict(f32=True, state_dtype="bfloat16")],
                         ids=["bf16", "master", "int8", "sr", "f32-bf16state"])
def test_ema_refuses_low_precision_at_construction(kw):
    """EMA's blend runs in the engine on float32/float64 params: wrapping a
    low-precision optimizer raises at construction, and the optimizer still
    steps as before."""
    kw = dict(kw)
    p = np.linspace(-1, 1, 5000, dtype=np.float32)
    if not kw.pop("f32", False):
        p = p.astype(BF16)
    opt = lrfast.Adam([p], lr=1e-2, **kw)
    with pytest.raises(ValueError, match="EMA: an EMA average does not combine with "
                                         "low-precision"):
        lrfast.EMA(opt)
    opt.step([np.full(5000, 0.5, p.dtype)])
    assert opt.step_count == 1


def test_quality_int8_state_against_fp32():
    """examples/lowp_quality.py, small: 8-bit state ends within 0.5 points of test
    accuracy of float32 Adam on the demo MLP, and within 1% of its final loss on
    least squares (the README has the full-size figures)."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "lowp_quality.py"
    if not path.exists():
        pytest.skip("examples/ is not next to the tests")
    spec = importlib.util.spec_from_file_location("lowp_quality", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    acc = mod.mlp(300)
    assert abs(acc["int8 state"] - acc["fp32 Adam"]) <= 0.005
    loss = mod.least_squares(100_000, 400)
    assert abs(loss["int8 state"] / loss["fp32 Adam"] - 1) <= 0.01


@pytest.mark.parametrize("name", ["Adam", "AdamW", "NAdam", "RAdam", "Adamax", "AdaBelief"])
def test_int8_second_moment_never_rounds_a_live_element_to_zero(name):
    # One element's grad is 1e-4 of its block's largest (second moment 1e-8 of the
    # block's: below half the unsigned map's smallest code). Nearest rounding would
    # store 0.0, and the next step with a zero grad (a zero input pixel) would divide
    # its first moment by eps alone. The floor keeps it at the smallest code, so the
    # step stays the size float32 state gives.
    n = 8192
    g1 = np.zeros(n, np.float32)
    g1[0], g1[1] = 1.0, 1e-4
    g2 = np.zeros(n, np.float32)
    g2[0] = 1.0
    lr = 1e-3
    moves = {}
    for sd in ("float32", "int8"):
        p = np.zeros(n, np.float32)
        opt = getattr(lrfast, name)([p], lr=lr, state_dtype=sd)
        opt.step([g1])
        before = p[1]
        opt.step([g2])
        moves[sd] = abs(float(p[1] - before))
    assert moves["float32"] <= 10 * lr
    assert moves["int8"] <= 10 * lr, moves
    state = lrfast.Adam([np.zeros(n, np.float32)], lr=lr, state_dtype="int8")
    state.step([g1])
    codes = state.state_dict()["state"][0]["exp_avg_sq"]
    assert codes[1] == 1 and codes[2] == 0        # live: the floor; never touched: 0.0


def test_load_without_an_entry_resets_the_master():
    """A state_dict without an entry for a param (never stepped) loads it
    fresh, master copy included (taken from the param), as into a new
    optimizer; the master of an optimizer that has stepped is not kept."""
    rng = np.random.default_rng(8)
    x = (0.5 * rng.standard_normal(500)).astype(np.float32).astype(BF16)
    gs = [rng.standard_normal(500).astype(np.float32).astype(BF16) for _ in range(4)]
    fresh = lrfast.AdamW([np.zeros(500, BF16)], lr=1e-3, master_weights=True).state_dict()
    p = x.copy()
    used = lrfast.AdamW([p], lr=1e-3, master_weights=True)
    for g in gs[:2]:
        used.step([g])
    used.load_state_dict(fresh)
    assert np.array_equal(used.master_params[0], p.astype(np.float32))
    q = p.copy()
    new = lrfast.AdamW([q], lr=1e-3, master_weights=True)
    new.load_state_dict(fresh)
    for g in gs[2:]:
        used.step([g])
        new.step([g])
    assert p.view(np.uint16).tobytes() == q.view(np.uint16).tobytes()


@pytest.mark.parametrize("dt", [BF16, np.dtype(np.float16)])
def test_accumulate_takes_16bit_grads(dt):
    """Accumulate over an optimizer of 16-bit params (master weights, 8-bit
    state) takes their 16-bit grads (it refused them as unsupported dtypes) and
    steps the optimizer with their mean in the param's dtype, as the
    optimizer stepped by hand; the state_dict round trip resumes exactly."""
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((64, 80)).astype(np.float32).astype(dt)
    gs = [rng.standard_normal(x0.shape).astype(np.float32).astype(dt) for _ in range(6)]

    def make():
        p = x0.copy()
        return p, lrfast.Adam([p], lr=1e-2, master_weights=True, state_dtype="int8")

    pa, oa = make()
    acc = lrfast.Accumulate(oa, 3)
    pb, ob = make()
    for t, g in enumerate(gs):
        acc.step([g] if t != 1 else [None])
        if t == 3:
            sd = acc.state_dict()
    for w in ([gs[0], None, gs[2]], gs[3:]):     # the running mean, in the param's dtype
        a = np.zeros_like(x0)
        for j, g in enumerate(w):
            a = a + ((-a if g is None else g - a) / dt.type(j + 1))
        ob.step([a])
    assert pa.view(np.uint16).tobytes() == pb.view(np.uint16).tobytes()
    pr, orr = make()                # resume mid-window: the params follow their masters
    acc2 = lrfast.Accumulate(orr, 3)
    acc2.load_state_dict(sd)
    for g in gs[4:]:
        acc2.step([g])
    assert pr.view(np.uint16).tobytes() == pa.view(np.uint16).tobytes()
