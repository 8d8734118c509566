"""lrfast.EMA, lrfast.Accumulate and lrfast.Lookahead: behaviour against plain
numpy twins written here (bit for bit, any thread count), None grads, skipped
steps, errors that change nothing, and exact resume through state_dict."""
import copy
import pickle

import numpy as np
import pytest

import lrfast
from lrfast._reference import ema_blend

from conftest import bits_equal

DTYPES = [np.float32, np.float64]


def make_params(dtype, seed=0):
    """One tensor above the parallel threshold, one tiny, one F-ordered."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(70_000).astype(dtype), rng.standard_normal(37).astype(dtype),
            np.asfortranarray(rng.standard_normal((60, 50)).astype(dtype))]


def grads_for(params, rng):
    out = []
    for p in params:
        g = np.empty_like(p, order="K")
        g[...] = rng.standard_normal(p.shape)
        out.append(g)
    return out


def snapshot(arrs):
    return [np.array(a, order="K", copy=True) for a in arrs]


def same(xs, ys):
    return len(xs) == len(ys) and all(bits_equal(a, b) for a, b in zip(xs, ys))


def ema_weight(n, decay, warmup):
    """The blend weight of the EMA update after n earlier ones (1: copy)."""
    if n == 0:
        return 1.0
    d = min(decay, (1 + n) / (10 + n)) if warmup else decay
    return 1.0 - d


# ---------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_name, hp", [("Adam", {"lr": 0.01}),
                                          ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
                                          ("Adam", {"lr": 0.01, "amsgrad": True}),
                                          ("SGD", {"lr": 0.05, "momentum": 0.9})])
@pytest.mark.parametrize("decay, every, warmup", [(0.9, 1, False), (0.3, 1, False),
                                                  (0.99, 1, True), (0.8, 3, False)])
def test_ema_equals_twin_for_any_thread_count(parallel_always, dtype, opt_name, hp, decay,
                                              every, warmup):
    cls = getattr(lrfast, opt_name)
    results = []
    for nt in (1, 2, 3):
        rng = np.random.default_rng(1)
        ps = make_params(dtype)
        twin_p = snapshot(ps)
        opt, ref = cls(ps, **hp), cls(twin_p, **hp)
        ema = lrfast.EMA(opt, decay, every=every, warmup=warmup)
        avg, n = snapshot(twin_p), 0
        with lrfast.threads(nt):
            for t in range(1, 13):
                gs = grads_for(ps, rng)
                if t == 4:
                    gs[1] = None                # averaged all the same
                assert ema.step(gs) is True
                ref.step(gs)
                if t % every == 0:
                    for a, p in zip(avg, twin_p):
                        ema_blend(a, p, ema_weight(n, decay, warmup))
                    n += 1
        assert same(ps, twin_p)                   # the optimizer's step is untouched
        assert same(ema.params, avg)
        assert ema.n_averaged == n == 12 // every
        results.append(snapshot(ema.params))
    assert same(results[0], results[1]) and same(results[0], results[2])


def test_ema_twin_branches():
    # torch's lerp: below 0.5 a + w*(p - a), from 0.5 p - (p - a)*(1 - w)
    a = np.array([1.0, -3.0, 1e20], np.float32)
    p = np.array([2.0, 5.0, 1.0], np.float32)
    x = a.copy()
    ema_blend(x, p, 0.25)
    assert bits_equal(x, a + np.float32(0.25) * (p - a))
    x = a.copy()
    ema_blend(x, p, 0.75)
    assert bits_equal(x, p - (p - a) * np.float32(0.25))
    x = a.copy()
    ema_blend(x, p, 1.0)
    assert bits_equal(x, p)


def test_ema_first_update_copies_then_opt_step_alone_leaves_it():
    ps = make_params(np.float64)
    init = snapshot(ps)
    opt = lrfast.SGD(ps, lr=0.1)
    ema = lrfast.EMA(opt, 0.5)
    assert same(ema.params, init)               # the averages start as the params
    rng = np.random.default_rng(0)
    ema.step(grads_for(ps, rng))
    assert same(ema.params, ps)                 # first update: a copy
    before = snapshot(ema.params)
    opt.step(grads_for(ps, rng))
    assert same(ema.params, before) and ema.n_averaged == 1
    ema.step(grads_for(ps, rng))
    assert ema.n_averaged == 2
    assert all(not bits_equal(a, b) for a, b in zip(ema.params, before))


def test_ema_every_counts_optimizer_steps():
    ps = [np.zeros(8)]
    opt = lrfast.SGD(ps, lr=1.0)
    ema = lrfast.EMA(opt, 0.5, every=2)
    g = [np.full(8, -1.0)]
    ema.step(g)                                  # step 1: not an averaging step
    assert ema.n_averaged == 0 and (ema.params[0] == 0).all()
    ema.step(g)                                  # step 2: first average, a copy
    assert ema.n_averaged == 1 and (ema.params[0] == 2).all()
    opt.step(g)                                  # step 3 (no average)
    ema.step(g)                                  # step 4: 0.5*2 + 0.5*4
    assert ema.n_averaged == 2 and (ema.params[0] == 3).all()


def test_ema_skipped_step_averages_nothing():
    ps = [np.ones(5)]
    opt = lrfast.Adam(ps, lr=0.1, skip_nonfinite=True)
    ema = lrfast.EMA(opt, 0.9)
    assert ema.step([np.ones(5)])
    before = snapshot(ema.params)
    assert ema.step([np.full(5, np.nan)]) is False
    assert same(ema.params, before) and ema.n_averaged == 1


def test_ema_swapped_is_exact_and_exception_safe():
    ps = make_params(np.float32)
    opt = lrfast.Adam(ps, lr=0.1)
    ema = lrfast.EMA(opt, 0.9)
    rng = np.random.default_rng(0)
    for _ in range(3):
        ema.step(grads_for(ps, rng))
    own, avg = snapshot(ps), snapshot(ema.params)
    ids = [id(p) for p in ps]
    with ema.swapped():
        assert same(ps, avg) and [id(p) for p in ps] == ids
        with pytest.raises(RuntimeError, match="swapped"):
            ema.step(grads_for(ps, rng))
        assert same(ps, avg)
    assert same(ps, own) and same(ema.params, avg)
    with pytest.raises(KeyError):
        with ema.swapped():
            ps[0][:] = 7
            raise KeyError("boom")
    assert same(ps, own)
    ema.step(grads_for(ps, rng))                # usable afterwards


def test_ema_params_are_read_only_views():
    ps = [np.ones(4)]
    ema = lrfast.EMA(lrfast.SGD(ps, lr=0.1), 0.9)
    with pytest.raises(ValueError):
        ema.params[0][0] = 5.0


@pytest.mark.parametrize("kw, exc", [
    ({"decay": -0.1}, ValueError), ({"decay": 1.5}, ValueError),
    ({"decay": float("nan")}, ValueError), ({"decay": "0.9"}, TypeError),
    ({"decay": True}, TypeError), ({"every": 0}, ValueError), ({"every": 1.0}, TypeError),
    ({"warmup": 1}, TypeError)])
def test_ema_bad_arguments(kw, exc):
    ps = [np.ones(4)]
    with pytest.raises(exc):
        lrfast.EMA(lrfast.SGD(ps, lr=0.1), **kw)


def test_ema_refuses_non_optimizers():
    ps = [np.ones(4)]
    with pytest.raises(TypeError, match="EMA wraps"):
        lrfast.EMA(object())
    with pytest.raises(TypeError, match="EMA wraps"):
        lrfast.EMA(lrfast.Lookahead(lrfast.SGD(ps, lr=0.1)))
    with pytest.raises(TypeError, match="EMA wraps"):           # its own step, not the engine's
        lrfast.EMA(lrfast.Adafactor([np.ones((3, 4))]))


@pytest.mark.parametrize("bad", ["wrong_shape", "wrong_dtype", "too_few", "not_array",
                                 "average_as_grad"])
def test_ema_bad_grads_change_nothing(bad):
    ps = make_params(np.float64)
    opt = lrfast.Adam(ps, lr=0.1)
    ema = lrfast.EMA(opt, 0.9)
    rng = np.random.default_rng(0)
    ema.step(grads_for(ps, rng))
    gs = grads_for(ps, rng)
    if bad == "wrong_shape":
        gs[2] = np.zeros(3)
    elif bad == "wrong_dtype":
        gs[1] = gs[1].astype(np.float32)
    elif bad == "too_few":
        gs = gs[:2]
    elif bad == "not_array":
        gs[0] = list(gs[0][:3])
    else:
        gs[1] = ema.params[1]                   # the average itself: it is written
    p0, a0, sd0 = snapshot(ps), snapshot(ema.params), ema.state_dict()
    with pytest.raises((TypeError, ValueError)):
        ema.step(gs)
    assert same(ps, p0) and same(ema.params, a0) and ema.n_averaged == 1
    assert opt.step_count == sd0["inner"]["step_count"]


def test_ema_params_changed_after_wrapping():
    ps = [np.ones(4)]
    opt = lrfast.SGD(ps, lr=0.1)
    ema = lrfast.EMA(opt, 0.9)
    opt.add_param_group({"params": [np.ones(3)]})
    with pytest.raises(ValueError, match="params changed"):
        ema.step([np.ones(4), np.ones(3)])


def test_ema_two_averages_on_one_optimizer():
    ps = [np.zeros(6)]
    opt = lrfast.SGD(ps, lr=1.0)
    e1, e2 = lrfast.EMA(opt, 0.5), lrfast.EMA(opt, 0.25)
    g = [np.full(6, -1.0)]
    e1.step(g)                  # p = 1: e1 copies
    e2.step(g)                  # p = 2: e2 copies, e1 untouched
    e1.step(g)                  # p = 3: e1 = 1 + 0.5*(3 - 1) = 2
    assert (e1.params[0] == 2).all() and (e2.params[0] == 2).all()
    assert e1.n_averaged == 2 and e2.n_averaged == 1


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_ema_copy_is_independent(how):
    ps = [np.zeros(6)]
    ema = lrfast.EMA(lrfast.SGD(ps, lr=1.0), 0.5)
    ema.step([np.ones(6)])
    twin = copy.deepcopy(ema) if how == "deepcopy" else pickle.loads(pickle.dumps(ema))
    assert twin.params[0] is not ema.params[0] and twin.optimizer.params[0] is twin._params[0]
    twin.step([np.ones(6)])
    assert (ps[0] == -1).all() and (ema.params[0] == -1).all() and ema.n_averaged == 1
    assert (twin.optimizer.params[0] == -2).all()
    assert (twin.params[0] == -1.5).all() and twin.n_averaged == 2


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_resume_is_exact(warmup):
    def build():
        ps = make_params(np.float32)
        return ps, lrfast.EMA(lrfast.Adam(ps, lr=0.01), 0.95, every=2, warmup=warmup)
    rng = np.random.default_rng(3)
    gs_all = [grads_for(make_params(np.float32), rng) for _ in range(12)]
    ps, ema = build()
    for gs in gs_all[:7]:
        ema.step(gs)
    sd = ema.state_dict()
    assert sd["format"] == "lrfast.wrapper/1" and sd["wrapper"] == "EMA"
    assert sd["inner"]["optimizer"] == "Adam"
    ps2, ema2 = build()
    ema2.load_state_dict(sd)
    for p, q in zip(ps2, ps):
        p[...] = q                              # params are the user's to restore
    for gs in gs_all[7:]:
        ema.step(gs)
        ema2.step(gs)
    assert same(ps, ps2) and same(ema.params, ema2.params)
    assert ema.n_averaged == ema2.n_averaged


@pytest.mark.parametrize("bad", ["average_shape", "n_averaged", "inner", "format", "decay",
                                 "missing"])
def test_ema_bad_state_dict_changes_nothing(bad):
    ps = make_params(np.float64)
    opt = lrfast.Adam(ps, lr=0.01)
    ema = lrfast.EMA(opt, 0.9)
    rng = np.random.default_rng(0)
    for _ in range(3):
        ema.step(grads_for(ps, rng))
    sd = ema.state_dict()
    other = lrfast.EMA(lrfast.Adam(make_params(np.float64, seed=5), lr=0.01), 0.5)
    other.step(grads_for(ps, rng))
    before = other.state_dict()
    if bad == "average_shape":
        sd["averages"][2] = np.zeros((50, 60))
    elif bad == "n_averaged":
        sd["n_averaged"] = -1
    elif bad == "inner":
        sd["inner"]["state"][0]["exp_avg"] = np.zeros(3)
    elif bad == "format":
        sd["wrapper"] = "Lookahead"
    elif bad == "decay":
        sd["decay"] = 2.0
    else:
        del sd["averages"]
    with pytest.raises((TypeError, ValueError)):
        other.load_state_dict(sd)
    after = other.state_dict()
    assert same(after["averages"], before["averages"])
    assert after["n_averaged"] == before["n_averaged"] and after["decay"] == 0.5
    assert same([e["exp_avg"] for e in after["inner"]["state"].values()],
                [e["exp_avg"] for e in before["inner"]["state"].values()])


# ---------------------------------------------------------------------------
# Accumulate
# ---------------------------------------------------------------------------
def welford(window, every, mean):
    """optax.MultiSteps' accumulation of one param's grads (None: zero), in
    the param's dtype; None when the window has no grad at all."""
    if all(g is None for g in window):
        return None
    like = next(g for g in window if g is not None)
    acc = np.zeros_like(like)
    for j, g in enumerate(window):
        g = np.zeros_like(like) if g is None else g
        acc = acc + (g - acc) / like.dtype.type(j + 1) if mean else acc + g
    return acc


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mean", [True, False])
def test_accumulate_equals_twin(dtype, mean):
    k = 3
    rng = np.random.default_rng(0)
    ps = make_params(dtype)
    twin_p = snapshot(ps)
    opt, ref = lrfast.Adam(ps, lr=0.01), lrfast.Adam(twin_p, lr=0.01)
    acc = lrfast.Accumulate(opt, every=k, mean=mean)
    window = []
    for t in range(1, 3 * k + 1):
        gs = grads_for(ps, rng)
        if t in (2, 4, 5, 6):
            gs[1] = None                         # the second window has no grad for param 1
        window.append(gs)
        applied = acc.step(gs)
        assert applied is (t % k == 0)
        assert acc.micro_step == t % k and opt.step_count == t // k
        if t % k == 0:
            outs = [welford([w[i] for w in window], k, mean) for i in range(len(ps))]
            ref.step(outs)
            window = []
        assert same(ps, twin_p)
    # param 1 missed a whole window: its Adam step count is one behind
    assert opt.state[1]["step"] == 2 and opt.state[0]["step"] == 3


def test_accumulate_none_grads_count_as_zero():
    ps = [np.zeros(4)]
    opt = lrfast.SGD(ps, lr=1.0)
    acc = lrfast.Accumulate(opt, every=4)
    for g in ([np.full(4, 4.0)], [None], [None], [None]):
        acc.step(g)
    assert (ps[0] == -1.0).all()                 # mean over 4 micro-steps: 1


def test_accumulate_schedules_count_optimizer_steps():
    ps = [np.zeros(2)]
    seen = []

    def lr(n):
        seen.append(n)
        return 0.1

    opt = lrfast.SGD(ps, lr=lr)
    acc = lrfast.Accumulate(opt, every=5)
    for _ in range(15):
        acc.step([np.ones(2)])
    assert opt.step_count == 3 and max(seen) <= 3


@pytest.mark.parametrize("mean", [True, False])
def test_accumulate_partial_window_resumes(mean):
    def build():
        ps = make_params(np.float32)
        return ps, lrfast.Accumulate(lrfast.Adam(ps, lr=0.01), every=4, mean=mean)
    rng = np.random.default_rng(2)
    gs_all = [grads_for(make_params(np.float32), rng) for _ in range(14)]
    gs_all[5][2] = None
    ps, acc = build()
    for gs in gs_all[:6]:                        # one window and 2 micro-steps
        acc.step(gs)
    sd = acc.state_dict()
    assert sd["micro_step"] == 2 and sorted(sd["accumulators"]) == [0, 1, 2]
    ps2, acc2 = build()
    acc2.load_state_dict(sd)
    for p, q in zip(ps2, ps):
        p[...] = q
    for gs in gs_all[6:]:
        acc.step(gs)
        acc2.step(gs)
    assert same(ps, ps2) and acc2.micro_step == acc.micro_step == 2


def test_accumulate_bad_grads_change_nothing():
    ps = make_params(np.float64)
    acc = lrfast.Accumulate(lrfast.Adam(ps, lr=0.01), every=3)
    rng = np.random.default_rng(0)
    acc.step(grads_for(ps, rng))
    sd0 = acc.state_dict()
    for bad in range(3):
        gs = grads_for(ps, rng)
        gs[bad] = [np.zeros(3), np.zeros(37, np.float32), np.ascontiguousarray(gs[2])][bad]
        with pytest.raises((TypeError, ValueError)):
            acc.step(gs)
        sd = acc.state_dict()
        assert sd["micro_step"] == 1
        assert same(list(sd["accumulators"].values()), list(sd0["accumulators"].values()))


def test_accumulate_failing_optimizer_step_keeps_the_window():
    ps = [np.zeros(3)]
    broken = [False]

    def lr(n):
        if broken[0]:
            raise RuntimeError("schedule broke")
        return 0.1

    acc = lrfast.Accumulate(lrfast.SGD(ps, lr=lr), every=2)
    acc.step([np.ones(3)])
    sd0 = acc.state_dict()
    broken[0] = True
    with pytest.raises(ValueError, match="schedule broke"):
        acc.step([np.ones(3)])
    broken[0] = False
    sd = acc.state_dict()
    assert sd["micro_step"] == 1 and same([sd["accumulators"][0]], [sd0["accumulators"][0]])
    assert (ps[0] == 0).all()


@pytest.mark.parametrize("kw, exc", [({"every": 0}, ValueError), ({"every": 2.0}, TypeError),
                                     ({"every": 2, "mean": "yes"}, TypeError)])
def test_accumulate_bad_arguments(kw, exc):
    with pytest.raises(exc):
        lrfast.Accumulate(lrfast.SGD([np.ones(3)], lr=0.1), **kw)


def test_accumulate_bad_state_dict_changes_nothing():
    ps = [np.ones(3), np.ones(2)]
    acc = lrfast.Accumulate(lrfast.SGD(ps, lr=0.1), every=3)
    acc.step([np.ones(3), np.ones(2)])
    sd = acc.state_dict()
    for change in ({"micro_step": 3}, {"accumulators": {5: np.ones(3)}},
                   {"accumulators": {0: np.ones(2)}}, {"every": 0}):
        bad = {**sd, **change}
        with pytest.raises((TypeError, ValueError)):
            acc.load_state_dict(bad)
        assert acc.state_dict()["micro_step"] == 1
        assert bits_equal(acc.state_dict()["accumulators"][0], sd["accumulators"][0])


# ---------------------------------------------------------------------------
# Lookahead
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_lookahead_equals_twin(dtype):
    k, alpha = 3, 0.4
    rng = np.random.default_rng(0)
    ps = make_params(dtype)
    twin_p = snapshot(ps)
    slow = snapshot(ps)
    opt, ref = lrfast.Adam(ps, lr=0.01), lrfast.Adam(twin_p, lr=0.01)
    look = lrfast.Lookahead(opt, k=k, alpha=alpha)
    for t in range(1, 11):
        gs = grads_for(ps, rng)
        look.step(gs)
        ref.step(gs)
        if t % k == 0:
            for p, s in zip(twin_p, slow):
                s += dtype(alpha) * (p - s)
                p[...] = s
        assert same(ps, twin_p) and same(look.slow_params, slow)
        assert look.steps_since_sync == t % k


def test_lookahead_skipped_steps_do_not_count():
    ps = [np.zeros(3)]
    look = lrfast.Lookahead(lrfast.SGD(ps, lr=1.0, skip_nonfinite=True), k=2, alpha=0.5)
    look.step([np.ones(3)])
    assert look.step([np.full(3, np.inf)]) is False
    assert look.steps_since_sync == 1
    look.step([np.ones(3)])                    # p = -2, sync: slow = 0.5*(-2) = -1
    assert (ps[0] == -1).all() and (look.slow_params[0] == -1).all()


def test_lookahead_resume_is_exact():
    def build():
        ps = make_params(np.float64)
        return ps, lrfast.Lookahead(lrfast.Adam(ps, lr=0.01), k=4, alpha=0.5)
    rng = np.random.default_rng(4)
    gs_all = [grads_for(make_params(np.float64), rng) for _ in range(11)]
    ps, look = build()
    for gs in gs_all[:6]:
        look.step(gs)
    sd = look.state_dict()
    assert sd["steps_since_sync"] == 2
    ps2, look2 = build()
    look2.load_state_dict(sd)
    for p, q in zip(ps2, ps):
        p[...] = q
    for gs in gs_all[6:]:
        look.step(gs)
        look2.step(gs)
    assert same(ps, ps2) and same(look.slow_params, look2.slow_params)


@pytest.mark.parametrize("kw, exc", [({"k": 0}, ValueError), ({"k": "5"}, TypeError),
                                     ({"alpha": 1.5}, ValueError), ({"alpha": None}, TypeError)])
def test_lookahead_bad_arguments(kw, exc):
    with pytest.raises(exc):
        lrfast.Lookahead(lrfast.SGD([np.ones(3)], lr=0.1), **kw)


def test_lookahead_bad_input_changes_nothing():
    ps = [np.ones(3)]
    look = lrfast.Lookahead(lrfast.SGD(ps, lr=0.1), k=2)
    look.step([np.ones(3)])
    with pytest.raises(ValueError):
        look.step([np.ones(4)])
    assert look.steps_since_sync == 1 and (ps[0] == 0.9).all()
    sd = look.state_dict()
    with pytest.raises(ValueError):
        look.load_state_dict({**sd, "steps_since_sync": 2})
    with pytest.raises(ValueError):
        look.load_state_dict({**sd, "slow": [np.ones(2)]})
    assert look.steps_since_sync == 1 and (look.slow_params[0] == 1).all()


def test_wrappers_compose():
    # Lookahead over Accumulate counts optimizer steps; EMA under both
    ps = [np.zeros(2)]
    opt = lrfast.SGD(ps, lr=1.0)
    ema = lrfast.EMA(opt, 0.5)
    look = lrfast.Lookahead(lrfast.Accumulate(ema, every=2), k=2, alpha=0.5)
    for _ in range(4):
        look.step([np.ones(2)])
    # optimizer steps: p = -1 (average copies -1), p = -2 then sync to -1
    assert opt.step_count == 2 and (ps[0] == -1).all()
    assert (ema.params[0] == -1.5).all()
    sd = look.state_dict()
    assert sd["inner"]["wrapper"] == "Accumulate" and sd["inner"]["inner"]["wrapper"] == "EMA"


def test_ema_block_size_changes_no_bit(parallel_always):
    from lrfast._dispatch import kernels as K
    out = []
    try:
        for block in (64, 2048, 1 << 20):
            K._set_ema_block(block)
            rng = np.random.default_rng(7)
            ps = make_params(np.float32)
            ema = lrfast.EMA(lrfast.Adam(ps, lr=0.01), 0.9)
            for _ in range(4):
                ema.step(grads_for(ps, rng))
            out.append(snapshot(ema.params) + snapshot(ps))
    finally:
        K._set_ema_block(2048)
    assert same(out[0], out[1]) and same(out[0], out[2])
    with pytest.raises(ValueError):
        K._set_ema_block(100)


def test_state_dict_doc_lists_the_keys():
    import pathlib
    import re
    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "state_dict.md").read_text()
    section = doc.split("## Wrappers: format `lrfast.wrapper/1`", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("key", "---"):
            rows[cells[0]] = cells[1:]
    ps = [np.ones(3)]
    opt = lrfast.SGD(ps, lr=0.1)
    wrappers = [lrfast.EMA(opt), lrfast.Accumulate(opt, every=2), lrfast.Lookahead(opt)]
    for col, w in enumerate(wrappers):
        w.step([np.ones(3)])
        documented = set()
        for key, cells in rows.items():
            names = re.findall(r"`(\w+)`", key) or re.findall(r"`(\w+)`(?: \(|:)", cells[col])
            documented.update(names)
        assert documented == set(w.state_dict()), type(w).__name__


def test_ema_registers_its_averages_once():
    ps = [np.ones(5), np.ones(3)]
    opt = lrfast.Adam(ps, lr=0.1)
    ema = lrfast.EMA(opt, 0.9)
    ema.step([np.ones(5), np.ones(3)])
    registered = opt._engine.ema
    ema.step([np.ones(5), np.ones(3)])
    assert opt._engine.ema is registered
    assert all(a is b for a, b in zip(registered, ema._avg))


def test_accumulate_and_lookahead_wrap_own_step_optimizers():
    ps = [np.ones((3, 4))]
    twin = [np.ones((3, 4))]
    look = lrfast.Lookahead(lrfast.Accumulate(lrfast.Adafactor(ps, lr=0.1), every=2), k=2)
    ref = lrfast.Adafactor(twin, lr=0.1)
    slow = twin[0].copy()
    rng = np.random.default_rng(0)
    for t in range(1, 9):
        g1, g2 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
        look.step([g1])
        look.step([g2])
        ref.step([g1 + (g2 - g1) / 2.0])
        if t % 2 == 0:
            slow += 0.5 * (twin[0] - slow)
            twin[0][...] = slow
        assert bits_equal(ps[0], twin[0])
