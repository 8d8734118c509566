"""The schedules that Optax and Keras users bring, against the reference libraries.

Optax (in float64: jax x64), Keras 3 (any backend; its schedules compute in
float32, so the comparison is to float32 resolution) and torch.optim.lr_scheduler.
Each reference test skips when its library is not installed.
"""
import copy
import json
import math
import os
import pickle

import numpy as np
import pytest

from lrfast import schedules as S

STEPS = np.arange(0, 400)


def assert_close(actual, expected, rtol=1e-12, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, dtype=float),
                               np.asarray(expected, dtype=float), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def optax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return pytest.importorskip("optax")


def optax_values(fn, steps=STEPS):
    import jax
    import jax.numpy as jnp
    return np.asarray(jax.vmap(fn)(jnp.asarray(steps, dtype=jnp.int64)), dtype=np.float64)


def check(s, ref, steps=STEPS, rtol=1e-12, atol=0.0):
    """Scalar and vectorized values of s equal the reference's."""
    assert_close([s(int(k)) for k in steps], ref, rtol, atol)
    assert_close(s(np.asarray(steps)), ref, rtol, atol)


# --------------------------------------------------------------------------- Optax
@pytest.mark.parametrize("rate,ts,begin,staircase,end", [
    (0.5, 10, 0, False, None), (0.5, 10, 25, True, None), (0.9, 7, 13, False, 0.3),
    (0.9, 7, 13, True, 0.3), (1.05, 5, 3, False, None), (1.05, 5, 3, True, 1.7),
    (0.99, 1, 0, False, 0.0), (1.0, 3, 2, False, None),
])
def test_exponential_decay_vs_optax(optax, rate, ts, begin, staircase, end):
    s = S.ExponentialDecay(1.3, rate=rate, transition_steps=ts, transition_begin=begin,
                           staircase=staircase, end_value=end)
    ref = optax_values(optax.exponential_decay(1.3, ts, rate, begin, staircase, end))
    check(s, ref)


@pytest.mark.parametrize("alpha,exponent", [(0.0, 1.0), (0.1, 2.0), (0.05, 0.5), (0.0, 3.7)])
def test_cosine_exponent_vs_optax(optax, alpha, exponent):
    s = S.CosineDecay(0.7, 300, alpha=alpha, exponent=exponent)
    ref = optax_values(optax.cosine_decay_schedule(0.7, 300, alpha, exponent))
    # Optax computes 1 + cos directly: near the end (where the cosine factor is ~1e-5 and
    # below) it loses relative accuracy that lrfast keeps; compare to 1e-16 of the peak there
    check(s, ref, rtol=1e-12, atol=1e-15)


def test_warmup_cosine_exponent_vs_optax(optax):
    # optax.warmup_cosine_decay_schedule(init, peak, W, decay_steps (incl. warmup), end, exp)
    s = S.CosineDecay(0.01, 270, alpha=0.05 / 0.9, warmup_target=0.9, warmup_steps=30,
                      exponent=2.0)
    ref = optax_values(optax.warmup_cosine_decay_schedule(0.01, 0.9, 30, 300, 0.05, 2.0))
    check(s, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("bs", [{}, {50: 0.5}, {0: 2.0, 40: 0.5, 41: 3.0, 300: 0.1},
                                {10: 0.0, 90: 1.0}, {120: 1.5, 200: 0.25}])
def test_piecewise_interpolate_vs_optax(optax, kind, bs):
    s = S.PiecewiseInterpolate(0.8, dict(bs), interpolate_type=kind)
    ref = optax_values(optax.piecewise_interpolate_schedule(kind, 0.8, dict(bs)))
    check(s, ref, rtol=1e-12, atol=1e-15)
    # the list form is the same schedule
    lists = S.PiecewiseInterpolate(0.8, sorted(bs), [bs[k] for k in sorted(bs)], kind)
    assert np.array_equal(lists(STEPS), s(STEPS))


@pytest.mark.parametrize("T,pct,final,div,fdiv", [
    (300, 0.3, 0.85, 25.0, 1e4), (200, 0.1, 0.3, 10.0, 100.0), (97, 0.45, 0.55, 4.0, 3.0),
])
def test_linear_onecycle_vs_optax(optax, T, pct, final, div, fdiv):
    s = S.LinearOneCycle(T, 0.5, pct, final, div, fdiv)
    ref = optax_values(optax.linear_onecycle_schedule(T, 0.5, pct, final, div, fdiv))
    check(s, ref, rtol=1e-12)


def test_join_schedules_vs_optax(optax):
    s = S.Sequence([S.LinearWarmup(0.5, 0.0, 1.0, 40), S.CosineDecay(0.5, 200, exponent=2.0)],
                   [40])
    ref = optax_values(optax.join_schedules(
        [optax.linear_schedule(0.0, 0.5, 40), optax.cosine_decay_schedule(0.5, 200, 0.0, 2.0)],
        [40]))
    check(s, ref, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- Keras
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        return pytest.importorskip("keras")
    except ImportError as e:  # keras present but without a usable backend
        pytest.skip(f"keras is not usable: {e}")


def keras_values(sched, steps=STEPS):
    return np.array([float(sched(int(k))) for k in steps])


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay_vs_keras(keras, staircase):
    ref = keras_values(keras.optimizers.schedules.ExponentialDecay(0.3, 17, 0.6, staircase))
    s = S.ExponentialDecay(0.3, rate=0.6, transition_steps=17, staircase=staircase)
    check(s, ref, rtol=2e-6)  # Keras computes in float32


def test_learning_rate_scheduler_vs_keras_callback(keras):
    def schedule(epoch, lr):
        return lr if epoch < 3 else lr * math.exp(-0.1)

    opt = keras.optimizers.SGD(learning_rate=0.2)

    class Model:  # what the callback reads: model.optimizer.learning_rate
        optimizer = opt

    cb = keras.callbacks.LearningRateScheduler(schedule)
    cb.set_model(Model())
    ref = []
    for epoch in range(12):
        cb.on_epoch_begin(epoch)
        ref.append(float(opt.learning_rate))
    s = S.LearningRateScheduler(schedule, 0.2, steps_per_epoch=5)
    steps = np.arange(60)
    assert_close([s(int(k)) for k in steps], np.repeat(ref, 5), rtol=1e-6)


# --------------------------------------------------------------------------- torch
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_learning_rate_scheduler_vs_torch_lambda_forms(torch):
    # torch's MultiplicativeLR(lr_lambda=f) is lr_e = lr_{e-1} * f(e) (from epoch 1):
    # Keras' form with schedule(e, lr) = lr * f(e) for e >= 1, lr for e = 0.
    def f(e):
        return 0.9 if e % 3 else 0.5

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.3)
    sched = torch.optim.lr_scheduler.MultiplicativeLR(opt, lr_lambda=f)
    ref = []
    for _ in range(20):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    s = S.LearningRateScheduler(lambda e, lr: lr * f(e) if e else lr, 0.3)
    assert_close([s(k) for k in range(20)], ref, rtol=1e-14)


def test_wsd_linear_vs_torch_sequential(torch):
    # torch: LinearLR warmup, ConstantLR hold, LinearLR decay to 0, joined by SequentialLR
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.4)
    lr_ = torch.optim.lr_scheduler
    W, St, D = 10, 20, 30
    sched = lr_.SequentialLR(opt, [
        lr_.LambdaLR(opt, lambda n: n / W),
        lr_.LambdaLR(opt, lambda n: 1.0),
        lr_.LambdaLR(opt, lambda n: max(0.0, 1.0 - n / D)),
    ], milestones=[W, W + St])
    ref = []
    for _ in range(80):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    check(S.WarmupStableDecay(0.4, W, St, D, "linear"), ref, steps=np.arange(80),
          rtol=1e-12, atol=1e-17)


# --------------------------------------------------------------------------- the new classes
def wsd_reference(n, peak, W, St, D, kind, end):
    if n < W:
        return peak * n / W
    if n < W + St:
        return peak
    if n >= W + St + D:
        return end
    f = (n - W - St) / D
    if kind == "linear":
        return peak - (peak - end) * f
    if kind == "cosine":
        return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * f))
    return peak - (peak - end) * math.sqrt(f)


@pytest.mark.parametrize("kind", ["linear", "cosine", "sqrt"])
@pytest.mark.parametrize("W,St,D,end", [(10, 50, 40, 0.0), (0, 0, 7, 0.01), (25, 0, 100, 0.1)])
def test_warmup_stable_decay_definition(kind, W, St, D, end):
    s = S.WarmupStableDecay(0.5, W, St, D, decay=kind, end=end)
    steps = np.arange(W + St + D + 20)
    ref = [wsd_reference(int(k), 0.5, W, St, D, kind, end) for k in steps]
    check(s, ref, steps=steps, rtol=1e-12, atol=1e-16)
    assert s(0) == (0.0 if W else 0.5)
    assert s(W) == 0.5 and s(W + St) == 0.5 and s(W + St + D) == end == s(10 ** 12)


@pytest.mark.parametrize("t_mul", [1.0, 2.0])
def test_cosine_restarts_exponent_definition(t_mul):
    s = S.CosineRestarts(0.4, 20, t_mul, m_mul=0.8, alpha=0.1, exponent=2.0)
    base = S.CosineRestarts(0.4, 20, t_mul, m_mul=0.8, alpha=0.1)
    steps = np.arange(300)
    # value = lr0 * ((1 - a) m^i c^p + a), with the exponent-free schedule giving c
    i = np.floor(np.log1p(steps * (t_mul - 1) / 20) / np.log(t_mul)) if t_mul > 1 else steps // 20
    c = (base(steps) / 0.4 - 0.1) / (0.9 * 0.8 ** i)
    check(s, 0.4 * (0.9 * 0.8 ** i * c ** 2 + 0.1), steps=steps, rtol=1e-11, atol=1e-15)
    assert s.get_config()["exponent"] == 2.0 and "exponent" not in base.get_config()


def test_exponential_decay_classic_form_unchanged():
    s = S.ExponentialDecay(0.1, 1e-3)
    assert s.get_config() == {"lr0": 0.1, "decay": 1e-3}
    assert S.ExponentialDecay(0.1, decay=1e-3)(12345) == 0.1 * math.exp(-1e-3 * 12345)
    assert S.deserialize({"class": "ExponentialDecay", "config": {"lr0": 0.1, "decay": 0.5}})(
        2) == 0.1 * math.exp(-1.0)


def test_exponential_growth_overflows_to_inf_not_an_error():
    s = S.ExponentialDecay(1.0, rate=2.0, transition_steps=1)
    assert s(2000) == math.inf and s(np.array([2000]))[0] == math.inf
    assert S.ExponentialDecay(1.0, rate=2.0, end_value=8.0)(2000) == 8.0


@pytest.mark.parametrize("make,exc,match", [
    (lambda: S.ExponentialDecay(0.1), TypeError, "exactly one of decay= "),
    (lambda: S.ExponentialDecay(0.1, 0.5, rate=0.5), TypeError, "exactly one"),
    (lambda: S.ExponentialDecay(0.1, 0.5, staircase=True), TypeError, "give rate="),
    (lambda: S.ExponentialDecay(0.1, rate=0.0), ValueError, "rate must be > 0"),
    (lambda: S.ExponentialDecay(0.1, rate=0.5, end_value=0.2), ValueError, "end_value must be <="),
    (lambda: S.ExponentialDecay(0.1, rate=2.0, end_value=0.05), ValueError, "end_value must be >="),
    (lambda: S.ExponentialDecay(0.1, rate=0.5, transition_steps=0), ValueError, "transition_steps"),
    (lambda: S.CosineDecay(0.1, 10, exponent=0.0), ValueError, "exponent"),
    (lambda: S.PiecewiseInterpolate(0.1, [10, 5], [1.0, 1.0]), ValueError, "increasing"),
    (lambda: S.PiecewiseInterpolate(0.1, [10], [-1.0]), ValueError, "scales"),
    (lambda: S.PiecewiseInterpolate(0.1, [10]), TypeError, "scales is required"),
    (lambda: S.PiecewiseInterpolate(0.1, {10: 1.0}, [1.0]), TypeError, "not both"),
    (lambda: S.PiecewiseInterpolate(0.1, [10], [1.0], "cubic"), ValueError, "interpolate_type"),
    (lambda: S.LinearOneCycle(10, 0.1, pct_start=0.5, pct_final=0.5), ValueError, "int"),
    (lambda: S.LinearOneCycle(0, 0.1), ValueError, "transition_steps"),
    (lambda: S.WarmupStableDecay(0.1, 1, 1, 0), ValueError, "decay_steps"),
    (lambda: S.WarmupStableDecay(0.1, 1, 1, 5, end=0.2), ValueError, "end"),
    (lambda: S.WarmupStableDecay(0.1, 1, 1, 5, decay="exp"), ValueError, "decay"),
    (lambda: S.LearningRateScheduler(0.1), TypeError, "callable"),
    (lambda: S.LearningRateScheduler(lambda e, lr: lr, steps_per_epoch=0), ValueError,
     "steps_per_epoch"),
])
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


NEW = {
    "exp-optax": lambda: S.ExponentialDecay(0.2, rate=0.8, transition_steps=9,
                                            transition_begin=4, staircase=True,
                                            end_value=0.01),
    "exp-growth": lambda: S.ExponentialDecay(0.2, rate=1.01, end_value=0.5),
    "cosine-exponent": lambda: S.CosineDecay(0.1, 300, 0.1, exponent=2.0),
    "piecewise-interpolate": lambda: S.PiecewiseInterpolate(0.1, [0, 40, 200], [2.0, 0.5, 0.1],
                                                            "cosine"),
    "linear-onecycle": lambda: S.LinearOneCycle(300, 0.1),
    "wsd": lambda: S.WarmupStableDecay(0.1, 20, 100, 50, "cosine", 0.001),
}


@pytest.mark.parametrize("make", list(NEW.values()), ids=list(NEW))
def test_new_schedules_round_trip(make):
    s = make()
    n = np.concatenate([np.arange(600), [10 ** 6, 10 ** 12]])
    v = s(n)
    assert_close(v, [s(int(k)) for k in n])
    text = json.dumps(S.serialize(s), allow_nan=False)
    for clone in (S.deserialize(json.loads(text)), pickle.loads(pickle.dumps(s)),
                  copy.deepcopy(s), type(s).from_config(s.get_config())):
        assert type(clone) is type(s) and clone.get_config() == s.get_config()
        assert np.array_equal(clone(n), v)


# --------------------------------------------------------------------------- Keras adapter
def halve_every_3(epoch, lr):
    return lr * 0.5 if epoch and epoch % 3 == 0 else lr


def test_learning_rate_scheduler_recursion_state_and_replay():
    s = S.LearningRateScheduler(halve_every_3, 0.8, steps_per_epoch=4)
    ref = []
    lr = 0.8
    for e in range(10):
        lr = halve_every_3(e, lr)
        ref += [lr] * 4
    assert [s(k) for k in range(40)] == ref
    assert s.state_dict() == {"epoch": 9, "lr": ref[-1]}
    assert s(0) == 0.8 and s.state_dict() == {"epoch": 0, "lr": 0.8}  # replays from scratch
    assert s(np.arange(40)[::-1]).tolist() == ref[::-1]
    # state round trip: a fresh adapter resumes where the saved one was
    s(25)
    state = json.loads(json.dumps(s.state_dict()))
    t = S.LearningRateScheduler(halve_every_3, 0.8, steps_per_epoch=4)
    t.load_state_dict(state)
    assert t.state_dict() == state and t(26) == ref[26] and t(39) == ref[39]
    with pytest.raises(ValueError):
        t.load_state_dict({"epoch": -2, "lr": 0.1})
    with pytest.raises(ValueError):
        t.load_state_dict({"epoch": 1, "lr": math.nan})
    assert t.state_dict() == {"epoch": 9, "lr": ref[39]}  # unchanged by the refusals


def test_learning_rate_scheduler_config_pickle_and_serialize():
    s = S.LearningRateScheduler(halve_every_3, 0.8, steps_per_epoch=4)
    s(17)
    clone = pickle.loads(pickle.dumps(s))  # a module-level function pickles by reference
    assert clone.state_dict() == s.state_dict() and clone(30) == s(30)
    data = json.loads(json.dumps(S.serialize(s)))
    assert data["config"]["schedule"] == {"class": "callable", "name": "halve_every_3"}
    with pytest.raises(ValueError, match="pass the callable again"):
        S.deserialize(data)
    # with a Schedule (Keras' one-argument form), it round-trips completely
    s = S.LearningRateScheduler(S.StepDecay(0.1, 0.5, 3), steps_per_epoch=10)
    s(55)
    back = S.deserialize(json.loads(json.dumps(S.serialize(s))))
    assert back.state_dict() == s.state_dict() == {"epoch": 5, "lr": 0.025}
    assert back(99) == s(99) == 0.1 * 0.5 ** 3


def test_learning_rate_scheduler_rejects_bad_values_and_keeps_state():
    s = S.LearningRateScheduler(lambda e, lr: -1.0 if e == 3 else lr, 0.1)
    assert s(2) == 0.1
    with pytest.raises(ValueError, match="finite and >= 0"):
        s(5)
    assert s.state_dict() == {"epoch": 2, "lr": 0.1}
    with pytest.raises(TypeError, match="not a number"):
        S.LearningRateScheduler(lambda e, lr: "0.1", 0.1)(0)


def test_learning_rate_scheduler_in_optimizer_state_dict():
    lrfast = pytest.importorskip("lrfast")
    p = np.zeros(4)
    s = S.LearningRateScheduler(halve_every_3, 0.1, steps_per_epoch=2)
    opt = lrfast.SGD([p], lr=s)
    for _ in range(9):
        opt.step([np.ones(4)])
    sd = opt.state_dict()
    q = p.copy()
    s2 = S.LearningRateScheduler(halve_every_3, 0.1, steps_per_epoch=2)
    opt2 = lrfast.SGD([q], lr=s2)
    opt2.load_state_dict(sd)
    assert s2.state_dict() == s.state_dict()
    for _ in range(7):
        opt.step([np.ones(4)])
        opt2.step([np.ones(4)])
    assert np.array_equal(p, q) and opt.lr == opt2.lr
