"""Tests of lrfast.schedules: seed formulas, Keras and torch parity, vectorization,
O(1) evaluation, validation, configs, serialization, state, pickling, plots."""
import copy
import doctest
import json
import math
import pickle
import sys
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrfast import schedules as S


# --------------------------------------------------------------------------- helpers
def assert_close(actual, expected, rtol=1e-12, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, dtype=float),
                               np.asarray(expected, dtype=float), rtol=rtol, atol=atol)


def exact_cumsum(terms):
    """Running sums of floats, each exactly rounded (Shewchuk partials + math.fsum)."""
    partials, out = [], []
    for x in terms:
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]
        out.append(math.fsum(partials))
    return out


def stepped_plateau(**kw):
    """A ReduceOnPlateau fed a stalling metric: it has reduced its level, and has history."""
    rop = S.ReduceOnPlateau(**kw)
    for m in [1.0, 0.9, 0.9, 0.9, 0.9, 0.95, 0.9, 0.9, 0.9, 0.9, 0.91]:
        rop.step(m)
    return rop


def _product_with_plateau():
    rop = stepped_plateau(initial=1.0, factor=0.5, patience=2, cooldown=1, min_lr=2e-3)
    return rop * S.CosineDecay(0.1, 1000)


# One factory per configuration; together they cover every class in the registry
# (test_examples_cover_every_class checks it).
EXAMPLES = {
    "Constant": lambda: S.Constant(0.05),
    "TimeBasedDecay-1e-4": lambda: S.TimeBasedDecay(0.1, 1e-4),
    "TimeBasedDecay-2": lambda: S.TimeBasedDecay(0.1, 2.0),
    "TimeBasedDecay-0": lambda: S.TimeBasedDecay(0.1, 0.0),
    "TimeBasedDecay-tiny": lambda: S.TimeBasedDecay(0.1, 5e-324),
    "StepDecay": lambda: S.StepDecay(0.1, 0.5, 7),
    "ExponentialDecay": lambda: S.ExponentialDecay(0.1, 1e-3),
    "InverseTimeDecay": lambda: S.InverseTimeDecay(0.1, 10, 0.5),
    "InverseTimeDecay-staircase": lambda: S.InverseTimeDecay(0.1, 10, 0.5, staircase=True),
    "PolynomialDecay": lambda: S.PolynomialDecay(0.1, 1000, 1e-3, power=2.0),
    "PolynomialDecay-cycle": lambda: S.PolynomialDecay(0.1, 300, 1e-3, power=0.5, cycle=True),
    "PiecewiseConstant": lambda: S.PiecewiseConstant([10, 500], [0.1, 0.05, 0.01]),
    "CosineDecay": lambda: S.CosineDecay(0.1, 1000),
    "CosineDecay-warmup": lambda: S.CosineDecay(0.0, 900, alpha=0.1, warmup_target=0.2,
                                                warmup_steps=100),
    "CosineRestarts": lambda: S.CosineRestarts(0.1, 50, 2.0, 0.9),
    "CosineRestarts-t1.5": lambda: S.CosineRestarts(0.1, 10, 1.5, 1.0, 0.05),
    "CosineRestarts-t1": lambda: S.CosineRestarts(0.1, 30, 1.0, 0.8, 0.01),
    "LinearWarmup": lambda: S.LinearWarmup(0.1, 0.1, 1.0, 100),
    "LinearWarmup-schedule": lambda: S.LinearWarmup(S.CosineDecay(0.1, 2000), 0.0, 1.0, 100),
    "OneCycle": lambda: S.OneCycle(0.1, 2000),
    "OneCycle-3phase-linear": lambda: S.OneCycle(0.1, 1500, pct_start=0.25,
                                                 anneal_strategy="linear", three_phase=True),
    "OneCycleMomentum": lambda: S.OneCycle(0.1, 2000, three_phase=True).momentum,
    "Cyclic": lambda: S.Cyclic(0.01, 0.1, 37, 55),
    "Cyclic-triangular2": lambda: S.Cyclic(0.01, 0.1, 20, mode="triangular2"),
    "Cyclic-exp_range": lambda: S.Cyclic(0.01, 0.1, 20, 30, mode="exp_range", gamma=0.999),
    "CyclicMomentum": lambda: S.Cyclic(0.01, 0.1, 20, mode="exp_range", gamma=0.999).momentum,
    "MultiStepDecay": lambda: S.MultiStepDecay(0.1, [700, 100, 100], 0.5),
    "Sequence": lambda: S.Sequence([S.LinearWarmup(0.1, 0.0, 1.0, 50),
                                    S.ExponentialDecay(0.1, 1e-3), 0.01], [50, 2000]),
    "Scaled": lambda: 0.5 * S.StepDecay(0.1, 0.5, 100),
    "Product": lambda: S.CosineRestarts(0.1, 100, 1.0) * S.ExponentialDecay(1.0, 1e-3),
    "ReduceOnPlateau": lambda: stepped_plateau(initial=0.1, factor=0.5, patience=2, cooldown=1),
    "ReduceOnPlateau-base": lambda: stepped_plateau(initial=1.0, base=S.CosineDecay(0.1, 1000),
                                                    factor=0.5, patience=2, min_lr=2e-3),
    "Product-ReduceOnPlateau": _product_with_plateau,
    "LRRangeTest": lambda: S.LRRangeTest(1e-7, 10.0, 100),
    "LRRangeTest-linear": lambda: S.LRRangeTest(0.0, 1.0, 100, "linear"),
    "ExponentialDecay-optax": lambda: S.ExponentialDecay(0.1, rate=0.7, transition_steps=30,
                                                         transition_begin=10, staircase=True,
                                                         end_value=1e-3),
    "ExponentialDecay-growth": lambda: S.ExponentialDecay(0.1, rate=1.5, transition_steps=100,
                                                          end_value=2.0),
    "CosineDecay-exponent": lambda: S.CosineDecay(0.1, 1000, 0.05, exponent=2.0),
    "PiecewiseInterpolate": lambda: S.PiecewiseInterpolate(0.1, [100, 400, 2000],
                                                           [2.0, 0.5, 0.01], "cosine"),
    "LinearOneCycle": lambda: S.LinearOneCycle(2000, 0.1, 0.2, 0.7),
    "WarmupStableDecay": lambda: S.WarmupStableDecay(0.1, 100, 1500, 900, "sqrt", 1e-4),
}
# LearningRateScheduler (Keras' callback form) is a recursion over epochs, not O(1) in n:
# test_schedule_references.py tests it.
RECURSIVE = {"LearningRateScheduler"}
every_schedule = pytest.mark.parametrize("make", list(EXAMPLES.values()), ids=list(EXAMPLES))

BIG = [10 ** 6, 10 ** 9 + 7, 2 ** 40 + 3, 10 ** 12]


def test_examples_cover_every_class():
    made = {type(make()).__name__ for make in EXAMPLES.values()} | RECURSIVE
    assert made == set(S._REGISTRY), set(S._REGISTRY) ^ made
    for name in S._REGISTRY:
        assert name in S.__all__


def test_module_doctests():
    # the public classes show as lrfast.schedules.X (found in the package); the module
    # functions (serialize, ...) are found in the submodule that defines them
    names = {**vars(S), "math": math, "np": np}
    attempted = 0
    for mod in [S] + [sys.modules[f"lrfast.schedules.{m}"] for m in
                      ("_base", "_numerics", "_decay", "_cyclic", "_compose", "_plateau",
                       "_gallery")]:
        result = doctest.testmod(mod, extraglobs=names, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, mod.__name__
        attempted += result.attempted
    assert attempted > 30


def test_public_names_live_in_the_package():
    for name in S.__all__:
        obj = getattr(S, name)
        assert getattr(obj, "__module__", "").startswith("lrfast.schedules"), name
        if isinstance(obj, type):
            assert obj.__module__ == "lrfast.schedules", name  # pickles by its public path
    from lrfast.schedules import CosineDecay, Sequence  # noqa: F401


# --------------------------------------------------------------------------- generic properties
@every_schedule
def test_vectorized_equals_scalar(make):
    s = make()
    n = np.concatenate([np.arange(3000), BIG])
    v = s(n)
    assert isinstance(v, np.ndarray) and v.dtype == np.float64 and v.shape == n.shape
    scalar = [s(int(k)) for k in n]
    assert all(type(x) is float for x in scalar)
    assert_close(v, scalar)
    assert np.all(np.isfinite(v)) and np.all(v >= 0)
    # any shape, lists, numpy integer and integral float scalars
    assert_close(s(n[:12].reshape(3, 4)), np.reshape(scalar[:12], (3, 4)))
    assert s([0, 5, 9]).tolist() == [scalar[0], scalar[5], scalar[9]]
    assert s(np.int32(5)) == s(np.uint64(5)) == s(5.0) == s(np.float32(5)) == scalar[5]
    assert s(np.array([], dtype=np.int64)).shape == (0,)


@every_schedule
def test_constant_time_in_n(make):
    s = make()
    v = s(10 ** 12)
    assert type(v) is float and math.isfinite(v)
    assert type(s(10 ** 30)) is float

    def cost(n, reps=300):
        t0 = time.perf_counter()
        for _ in range(reps):
            s(n)
        return (time.perf_counter() - t0) / reps

    small, big = math.inf, math.inf
    for _ in range(4):  # interleaved, best of 4: robust to load on the machine
        small = min(small, cost(10))
        big = min(big, cost(10 ** 12))
    assert big < 5 * small + 20e-6, (small, big)


@every_schedule
def test_bad_steps(make):
    s = make()
    name = type(s).__name__
    with pytest.raises(ValueError, match=f"{name}: step n must be >= 0, got -1"):
        s(-1)
    with pytest.raises(ValueError, match="must be an integer"):
        s(1.5)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError):
            s(bad)
    for bad in ("3", None, True, np.bool_(True), 1j):
        with pytest.raises(TypeError):
            s(bad)
    with pytest.raises(ValueError, match=">= 0"):
        s(np.array([0, 3, -2]))
    with pytest.raises(ValueError, match="non-integral"):
        s(np.array([0.0, 0.5]))
    with pytest.raises(TypeError):
        s(np.array([True, False]))
    with pytest.raises(TypeError):
        s(np.array(["1"]))


@every_schedule
def test_config_round_trip(make):
    s = make()
    cfg = s.get_config()
    text = json.dumps(cfg, allow_nan=False)
    rebuilt = type(s).from_config(json.loads(text))
    assert type(rebuilt) is type(s)
    assert rebuilt.get_config() == cfg
    assert repr(rebuilt) == repr(s)
    same = S.Schedule.from_config({"class": type(s).__name__, "config": json.loads(text)})
    assert same.get_config() == cfg
    if not s.state_dict():  # stateful ones start over from their config alone
        n = np.concatenate([np.arange(500), BIG])
        assert np.array_equal(rebuilt(n), s(n))


@every_schedule
def test_serialize_round_trip(make):
    s = make()
    data = json.loads(json.dumps(S.serialize(s), allow_nan=False))
    assert data["class"] == type(s).__name__
    rebuilt = S.deserialize(data)
    assert type(rebuilt) is type(s)
    assert rebuilt.state_dict() == s.state_dict()
    n = np.concatenate([np.arange(500), BIG])
    assert np.array_equal(rebuilt(n), s(n))


@every_schedule
def test_pickle_and_deepcopy(make):
    s = make()
    n = np.concatenate([np.arange(300), BIG])
    for clone in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert type(clone) is type(s) and clone is not s
        assert clone.get_config() == s.get_config()
        assert clone.state_dict() == s.state_dict()
        assert np.array_equal(clone(n), s(n))


@every_schedule
def test_state_dict(make):
    s = make()
    state = s.state_dict()
    json.dumps(state, allow_nan=False)
    stateful = isinstance(s, S.ReduceOnPlateau) or any(
        isinstance(c, S.ReduceOnPlateau) for c in s._children())
    assert bool(state) == stateful
    before = s(np.arange(100))
    s.load_state_dict(copy.deepcopy(state))
    assert np.array_equal(s(np.arange(100)), before)
    with pytest.raises(ValueError):
        s.load_state_dict({**state, "bogus": 1})
    with pytest.raises(TypeError):
        s.load_state_dict([])
    assert s.state_dict() == state  # a rejected load changed nothing


# --------------------------------------------------------------------------- the seeds' three
def time_based_reference(lr0, d, N):
    """eta_n = lr0 * exp(-sum_{k<n} log1p(d k)): the seed recursion in log space, summed
    exactly (the float recursion itself drifts by one rounding per step)."""
    L = [0.0] + exact_cumsum(math.log1p(d * k) for k in range(N - 1))
    return np.array([lr0 * math.exp(-x) for x in L])


@pytest.mark.parametrize("d", [1e-4, 1e-2, 0.5, 2.0])
def test_time_based_decay_matches_seed_recursion(d):
    N = 10 ** 4
    s = S.TimeBasedDecay(0.3, d)
    ref = time_based_reference(0.3, d, N)
    got = s(np.arange(N))
    normal = ref >= np.finfo(float).tiny
    assert normal.sum() > 100
    assert_close(got[normal], ref[normal])
    assert_close([s(n) for n in range(0, N, 7) if normal[n]], ref[::7][normal[::7]])
    # past the normal range the value underflows to 0.0 (or a subnormal), never NaN
    assert np.all(np.isfinite(got)) and got[-1] == 0.0
    # the plain float recursion agrees over its first steps
    eta = 0.3
    for n in range(60):
        assert s(n) == pytest.approx(eta, rel=1e-13, abs=0)
        eta = eta / (1 + d * n)


def test_time_based_decay_tiny_decay_far_out():
    d, n = 1e-7, 10 ** 5
    L = math.fsum(math.log1p(d * k) for k in range(1, n))
    ref = math.exp(-L)
    got = S.TimeBasedDecay(1.0, d)(n)
    assert 3.7e-217 < ref < 3.8e-217
    assert got == pytest.approx(ref, rel=1e-9, abs=0)


def test_time_based_decay_basic_facts():
    s = S.TimeBasedDecay(0.1, 0.25)
    assert s(0) == s(1) == 0.1
    assert s(2) == pytest.approx(0.1 / 1.25, rel=1e-15, abs=0)
    assert S.TimeBasedDecay(0.1, 0.0)(10 ** 9) == 0.1
    assert S.TimeBasedDecay(0.1, 0.5)(10 ** 6) == 0.0
    assert S.TimeBasedDecay(0.1, 0.5)(np.array([10 ** 6]))[0] == 0.0
    # decays like 1 / (d^n n!), far faster than Keras' lr0 / (1 + d n)
    keras = S.InverseTimeDecay(0.1, 1, 0.25)
    n = np.arange(3, 200)  # (eta_1 = eta_0, so the product starts one factor late)
    assert np.all(s(n) < keras(n))
    assert s(100) < 1e-100 < keras(100)
    # log_decay is the exponent itself
    assert s.log_decay(3) == pytest.approx(math.log1p(0.25) + math.log1p(0.5), rel=1e-15)
    assert_close(s.log_decay(np.arange(50)), [s.log_decay(k) for k in range(50)])


@settings(max_examples=60, deadline=None)
@given(d=st.floats(1e-9, 50.0), n=st.integers(0, 3000))
def test_time_based_decay_property(d, n):
    ref = time_based_reference(1.0, d, n + 1)[-1]
    got = S.TimeBasedDecay(1.0, d)(n)
    if ref >= np.finfo(float).tiny:
        assert got == pytest.approx(ref, rel=1e-12, abs=0)
    else:
        assert 0.0 <= got < 1e-300


def test_step_decay_seed_formula():
    s = S.StepDecay(2.0, 0.5, 10)
    N = 10 ** 4
    ref = [2.0 * 0.5 ** math.floor((1 + n) / 10) for n in range(N)]
    assert_close(s(np.arange(N)), ref)
    assert [s(n) for n in (0, 8, 9, 18, 19)] == [2.0, 2.0, 1.0, 1.0, 0.5]  # first drop at 9
    assert S.StepDecay(1.0, 1.0, 3)(10 ** 12) == 1.0


def test_exponential_decay_seed_formula_and_recursion():
    d, N = 1e-3, 10 ** 4
    s = S.ExponentialDecay(0.2, d)
    n = np.arange(N)
    assert_close(s(n), [0.2 * math.exp(-d * k) for k in range(N)])
    # eta_{n+1} = eta_n * exp(-d): a float recursion, within one rounding per step
    eta, rec = 0.2, []
    for _ in range(N):
        rec.append(eta)
        eta *= math.exp(-d)
    assert_close(s(n), rec, rtol=2.3e-16 * N)


# --------------------------------------------------------------------------- Keras formulas
# Written out from the Keras docs / keras.optimizers.schedules (plain Python floats).
def keras_inverse_time(step, lr0, decay_steps, decay_rate, staircase):
    p = step / decay_steps
    if staircase:
        p = math.floor(p)
    return lr0 / (1 + decay_rate * p)


def keras_polynomial(step, lr0, decay_steps, end, power, cycle):
    if cycle:
        decay_steps = decay_steps * (1.0 if step == 0 else math.ceil(step / decay_steps))
    else:
        step = min(step, decay_steps)
    p = step / decay_steps
    return (lr0 - end) * (1 - p) ** power + end


def keras_piecewise(step, boundaries, values):
    if step <= boundaries[0]:
        return values[0]
    if step > boundaries[-1]:
        return values[-1]
    for low, high, v in zip(boundaries[:-1], boundaries[1:], values[1:-1]):
        if low < step <= high:
            return v


def keras_cosine(step, lr0, decay_steps, alpha, warmup_target=None, warmup_steps=0):
    def decay(s, peak):
        return peak * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * (s / decay_steps))) + alpha)
    if warmup_target is None:
        return decay(min(step, decay_steps), lr0)
    step = min(step, decay_steps + warmup_steps)
    if step < warmup_steps:
        return (warmup_target - lr0) * (step / warmup_steps) + lr0
    return decay(step - warmup_steps, warmup_target)


def keras_restarts(step, lr0, first, t_mul, m_mul, alpha):
    cf = step / first
    if t_mul == 1.0:
        i = math.floor(cf)
        cf -= i
    else:
        # Keras takes i = floor(log(1 - cf (1 - t_mul)) / log(t_mul)), which can land one
        # cycle early exactly at a restart (floor(log(9)/log(3)) = 1); find i from the
        # cycle starts instead (see test_cosine_restarts_restart_exactly_on_boundary).
        i = 0
        while first * (t_mul ** (i + 1) - 1) / (t_mul - 1) <= step:
            i += 1
        sum_r = (1.0 - t_mul ** i) / (1.0 - t_mul)
        cf = (cf - sum_r) / t_mul ** i
    return lr0 * ((1 - alpha) * 0.5 * m_mul ** i * (1.0 + math.cos(math.pi * cf)) + alpha)


@pytest.mark.parametrize("staircase", [False, True])
def test_inverse_time_decay_keras(staircase):
    s = S.InverseTimeDecay(0.1, 7, 0.3, staircase)
    assert_close(s(np.arange(10 ** 4)),
                 [keras_inverse_time(n, 0.1, 7, 0.3, staircase) for n in range(10 ** 4)])


@pytest.mark.parametrize("power,end,cycle", [(1.0, 1e-4, False), (2.0, 1e-3, False),
                                             (0.5, 0.0, False), (1.5, 1e-3, True),
                                             (3.0, 0.2, True)])
def test_polynomial_decay_keras(power, end, cycle):
    s = S.PolynomialDecay(0.1, 997, end, power, cycle)
    ref = [keras_polynomial(n, 0.1, 997, end, power, cycle) for n in range(10 ** 4)]
    # Keras forms 1 - n/T; at end=0 its absolute error (~1e-16 x lr0) shows up in the
    # last steps before 0, where this class's (T - n) / T is exact.
    assert_close(s(np.arange(10 ** 4)), ref, atol=1e-15 * 0.1)


def test_piecewise_constant_keras():
    b, v = [0, 10, 11, 500], [1.0, 0.5, 0.4, 0.2, 0.1]
    s = S.PiecewiseConstant(b, v)
    assert s(np.arange(1000)).tolist() == [keras_piecewise(n, b, v) for n in range(1000)]
    assert S.PiecewiseConstant([], [0.3])(10 ** 12) == 0.3


@pytest.mark.parametrize("alpha,target,warmup", [(0.0, None, 0), (0.05, None, 0),
                                                 (0.1, 0.3, 500), (0.0, 0.3, 1000),
                                                 (0.2, 0.05, 0)])
def test_cosine_decay_keras(alpha, target, warmup):
    s = S.CosineDecay(0.01, 5000, alpha, target, warmup)
    ref = [keras_cosine(n, 0.01, 5000, alpha, target, warmup) for n in range(10 ** 4)]
    # Keras forms 1 + cos(pi x), whose absolute error (~1e-16) is relative error near
    # the end of a cosine to 0 (alpha = 0); this class computes sin^2 there.
    peak = max(0.01, target or 0.0)
    assert_close(s(np.arange(10 ** 4)), ref, atol=1e-15 * peak)


@pytest.mark.parametrize("first,t_mul,m_mul,alpha", [(7, 2.0, 0.9, 0.1), (7, 3.0, 0.8, 0.05),
                                                     (10, 1.5, 0.9, 0.1), (5, 1.0, 0.7, 0.1),
                                                     (13, 2.0, 1.0, 0.0), (3, 1.0, 1.0, 0.0)])
def test_cosine_restarts_keras(first, t_mul, m_mul, alpha):
    s = S.CosineRestarts(0.1, first, t_mul, m_mul, alpha)
    ref = [keras_restarts(n, 0.1, first, t_mul, m_mul, alpha) for n in range(10 ** 4)]
    assert_close(s(np.arange(10 ** 4)), ref, atol=1e-15 * 0.1)  # 1 + cos near pi: see above


def test_cosine_restarts_fractional_t_mul_restarts_on_integer_starts():
    # S_i = 10 (1.3^i - 1) / 0.3 = 10, 23, 39.9, 61.87: S_2 = 23 exactly (in floats
    # 23.000000000000004), so step 23 restarts; the others restart at the next step.
    s = S.CosineRestarts(1.0, 10, t_mul=1.3)
    restarts = [n for n in range(1, 70) if s(n) > s(n - 1)]
    assert restarts == [10, 23, 40, 62]
    assert s(23) == 1.0 and s(np.array([23]))[0] == 1.0


def test_cosine_restarts_restart_exactly_on_boundary():
    s = S.CosineRestarts(1.0, 7, t_mul=3.0, m_mul=0.5)
    starts = [0, 7, 28, 91, 280, 847, 2548]  # 7 (3^i - 1) / 2
    for i, n in enumerate(starts):
        assert s(n) == 0.5 ** i
        assert s(np.array([n]))[0] == 0.5 ** i
        if n:  # the step before is the end of the previous cycle, at its lowest
            assert s(n - 1) < min(s(n - 2), 0.05 * 0.5 ** (i - 1))
    assert math.floor(math.log(1 + 847 / 7 * 2) / math.log(3)) == 4  # what Keras computes


# --------------------------------------------------------------------------- torch parity
def torch_run(make, n_steps, lr=0.1, metrics=None, momentum=None, closed_form=False):
    """lrs (and momentums) a torch scheduler gives steps 0..n_steps-1: the lr is read from
    the optimizer BEFORE each scheduler.step(), as the optimizer step n would use it."""
    torch = pytest.importorskip("torch")
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr, **({} if momentum is None else {"momentum": momentum}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        sched = make(torch.optim.lr_scheduler, opt)
        lrs, moms = [], []
        for n in range(n_steps):
            g = opt.param_groups[0]
            lrs.append(sched._get_closed_form_lr()[0] if closed_form else g["lr"])
            moms.append(g.get("momentum", math.nan))
            sched.step() if metrics is None else sched.step(metrics[n])
    return np.array(lrs), np.array(moms)


N_TORCH = 10 ** 4
steps = np.arange(N_TORCH)


def test_step_decay_vs_torch_steplr_one_step_early():
    lrs, _ = torch_run(lambda L, o: L.StepLR(o, step_size=30, gamma=0.7), N_TORCH + 1)
    s = S.StepDecay(0.1, 0.7, 30)
    assert_close(s(steps), lrs[1:])  # StepDecay(n) == StepLR(n + 1)
    assert s(29) < s(28) and lrs[29] == lrs[28]


def test_multistep_vs_torch():
    ms = [10, 200, 200, 5000]
    lrs, _ = torch_run(lambda L, o: L.MultiStepLR(o, ms, gamma=0.5), N_TORCH)
    assert_close(S.MultiStepDecay(0.1, ms, 0.5)(steps), lrs)


@pytest.mark.parametrize("gamma", [0.999, math.exp(-1e-3)])
def test_exponential_vs_torch(gamma):
    lrs, _ = torch_run(lambda L, o: L.ExponentialLR(o, gamma), N_TORCH)
    assert_close(S.ExponentialDecay(0.1, -math.log(gamma))(steps), lrs)


def test_cosine_vs_torch_cosine_annealing():
    lrs, _ = torch_run(lambda L, o: L.CosineAnnealingLR(o, T_max=N_TORCH, eta_min=1e-3),
                       N_TORCH + 1)
    assert_close(S.CosineDecay(0.1, N_TORCH, alpha=1e-2)(np.arange(N_TORCH + 1)), lrs)
    # eta_min = 0: torch's recursive form drifts by ~1e-16 x lr0 in absolute terms, which
    # is large relative error near 0; compare with its closed form, whose 1 + cos(theta)
    # near theta = pi is still only absolutely accurate (~1e-16).
    lrs, _ = torch_run(lambda L, o: L.CosineAnnealingLR(o, T_max=N_TORCH), N_TORCH + 1,
                       closed_form=True)
    assert_close(S.CosineDecay(0.1, N_TORCH)(np.arange(N_TORCH + 1)), lrs, atol=1e-15 * 0.1)


@pytest.mark.parametrize("T_0,T_mult", [(7, 1), (7, 2), (13, 3), (100, 2)])
def test_cosine_restarts_vs_torch_warm_restarts(T_0, T_mult):
    lrs, _ = torch_run(lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0, T_mult, 1e-3),
                       N_TORCH)
    assert_close(S.CosineRestarts(0.1, T_0, float(T_mult), 1.0, 1e-2)(steps), lrs)
    lrs, _ = torch_run(lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0, T_mult), N_TORCH)
    # eta_min = 0: torch's 1 + cos(pi T_cur / T_i) is absolutely accurate only (see above)
    assert_close(S.CosineRestarts(0.1, T_0, float(T_mult), 1.0, 0.0)(steps), lrs,
                 atol=1e-15 * 0.1)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@pytest.mark.parametrize("down", [None, 55])
def test_cyclic_vs_torch(mode, down):
    lrs, moms = torch_run(lambda L, o: L.CyclicLR(o, 0.01, 0.1, 37, down, mode=mode,
                                                  gamma=0.9995), N_TORCH, momentum=0.9)
    s = S.Cyclic(0.01, 0.1, 37, down, mode=mode, gamma=0.9995)
    assert_close(s(steps), lrs)
    assert isinstance(s.momentum, S.CyclicMomentum)
    assert_close(s.momentum(steps), moms)
    assert S.Cyclic(0.01, 0.1, cycle_momentum=False).momentum is None


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("pct,div,final", [(0.3, 25.0, 1e4), (0.1, 10.0, 100.0)])
def test_one_cycle_vs_torch(three_phase, anneal, pct, div, final):
    lrs, moms = torch_run(lambda L, o: L.OneCycleLR(
        o, 0.1, total_steps=N_TORCH, pct_start=pct, anneal_strategy=anneal, div_factor=div,
        final_div_factor=final, three_phase=three_phase, base_momentum=0.8,
        max_momentum=0.93), N_TORCH, momentum=0.9)
    s = S.OneCycle(0.1, N_TORCH, pct, anneal, div, final, three_phase, True, 0.8, 0.93)
    # cosine phases end at a tiny min_lr: torch's (cos + 1) is absolutely accurate only
    assert_close(s(steps), lrs, atol=1e-15 * 0.1)
    assert_close(s.momentum(steps), moms)
    assert s(10 ** 9) == s(N_TORCH - 1)  # holds the final value (torch raises)
    assert S.OneCycle(0.1, 10, cycle_momentum=False).momentum is None


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_polynomial_vs_torch(power):
    lrs, _ = torch_run(lambda L, o: L.PolynomialLR(o, total_iters=5000, power=power), N_TORCH)
    # torch's recursion and its 1 - n/T are absolutely accurate (~1e-16 x lr0) near 0
    assert_close(S.PolynomialDecay(0.1, 5000, 0.0, power)(steps), lrs, atol=1e-14 * 0.1)
    assert_close(S.PolynomialDecay(0.1, 5000, 0.0, power)(steps[:4000]), lrs[:4000])


@pytest.mark.parametrize("start,end", [(0.1, 1.0), (1.0, 0.05), (0.5, 0.5)])
def test_linear_warmup_vs_torch_linear_lr(start, end):
    lrs, _ = torch_run(lambda L, o: L.LinearLR(o, start, end, total_iters=1000), N_TORCH)
    assert_close(S.LinearWarmup(0.1, start, end, 1000)(steps), lrs)


def test_sequence_vs_torch_sequential_lr():
    # Equivalent when each torch scheduler restarts from its initial lr at its milestone.
    lrs, _ = torch_run(lambda L, o: L.SequentialLR(
        o, [L.LinearLR(o, 0.1, 1.0, 50), L.ExponentialLR(o, 0.999)], milestones=[50]), N_TORCH)
    s = S.Sequence([S.LinearWarmup(0.1, 0.1, 1.0, 50), S.ExponentialDecay(0.1, -math.log(0.999))],
                   [50])
    assert_close(s(steps), lrs)
    lrs, _ = torch_run(lambda L, o: L.SequentialLR(
        o, [L.ConstantLR(o, 0.5, 100), L.CosineAnnealingLR(o, 5000, 1e-3),
            L.StepLR(o, 100, 0.5)], milestones=[100, 5100]), N_TORCH)
    s = S.Sequence([0.05, S.CosineDecay(0.1, 5000, alpha=0.01),
                    S.MultiStepDecay(0.1, range(100, N_TORCH, 100), 0.5)], [100, 5100])
    assert_close(s(steps), lrs)


METRIC = (np.cumsum(np.random.default_rng(0).normal(0, 1, 3000)) * 0.01
          + 10 / (1 + np.arange(3000) / 100))


@pytest.mark.parametrize("kw", [
    {},
    {"mode": "max", "patience": 3},
    {"threshold_mode": "abs", "threshold": 0.01, "cooldown": 3, "patience": 5,
     "min_lr": 1e-4, "factor": 0.5},
    {"patience": 0, "factor": 0.9, "eps": 1e-3},
    {"patience": 0, "factor": 0.5, "min_lr": 0.02, "threshold": 0.0},
], ids=["default", "max", "abs-cooldown-min_lr", "eps", "min_lr-floor"])
def test_reduce_on_plateau_vs_torch(kw):
    lrs, _ = torch_run(lambda L, o: L.ReduceLROnPlateau(o, **kw), len(METRIC), metrics=METRIC)
    rop = S.ReduceOnPlateau(0.1, **kw)
    ours, levels = [], []
    for n, m in enumerate(METRIC):
        ours.append(rop(n))
        levels.append(rop.level)
        rop.step(m)
    assert len(set(lrs)) > 2  # the metric really triggers reductions
    assert ours == lrs.tolist()
    assert levels == lrs.tolist()  # the level itself is torch's lr (min_lr included)


# --------------------------------------------------------------------------- ReduceOnPlateau
def test_reduce_on_plateau_resume_continues_identically():
    base = S.CosineDecay(0.1, 3000, alpha=0.0)
    rop = S.ReduceOnPlateau(factor=0.5, patience=4, cooldown=2, min_lr=1e-4)
    s = rop * base
    for n in range(1200):
        s(n)
        rop.step(METRIC[n])
    saved = json.loads(json.dumps(S.serialize(s), allow_nan=False))
    resumed = S.deserialize(saved)
    rop2 = resumed.schedules[0]
    assert isinstance(rop2, S.ReduceOnPlateau) and rop2 is not rop
    a, b = [], []
    for n in range(1200, 3000):
        a.append(s(n))
        b.append(resumed(n))
        rop.step(METRIC[n])
        rop2.step(METRIC[n])
    assert a == b
    assert rop2.state_dict() == rop.state_dict()
    assert rop.level < 1.0 / 8  # several reductions happened
    # load_state_dict into a fresh object (what the optimizer's load does)
    fresh = S.ReduceOnPlateau(factor=0.5, patience=4, cooldown=2, min_lr=1e-4)
    fresh.load_state_dict(rop.state_dict())
    assert fresh.state_dict() == rop.state_dict()


def test_reduce_on_plateau_as_factor():
    rop = S.ReduceOnPlateau(factor=0.5, patience=0, min_lr=1e-3)
    cos = S.CosineDecay(0.1, 1000)
    prod, based = rop * cos, S.ReduceOnPlateau(factor=0.5, patience=0, min_lr=1e-3, base=cos)
    assert isinstance(prod, S.Product) and prod.schedules[0] is rop
    n = np.arange(1001)
    assert_close(prod(n), np.maximum(cos(n), 1e-3))  # min_lr clamps the product
    for m in (1.0, 2.0, 3.0):  # two bad epochs -> two reductions
        rop.step(m)
        based.step(m)
    assert rop.level == 0.25
    assert_close(prod(n), np.maximum(0.25 * cos(n), 1e-3))
    assert_close(based(n), prod(n))
    assert prod(1000) == 1e-3
    # scaling and further products keep the clamp on the whole product
    assert_close((2.0 * prod)(n), np.maximum(0.5 * cos(n), 1e-3))
    assert_close((prod * S.Constant(0.5))(n), np.maximum(0.125 * cos(n), 1e-3))
    # state travels through the product's state_dict
    assert prod.state_dict() == {"children": [rop.state_dict(), {}]}
    rop.reset()
    assert rop.level == 1.0 and rop.best == math.inf


def test_reduce_on_plateau_state_is_validated():
    rop = stepped_plateau(initial=0.1, factor=0.5, patience=1)
    state = rop.state_dict()
    for bad in ({**state, "level": -1.0}, {**state, "num_bad_epochs": -1},
                {**state, "best": "x"}, {k: v for k, v in state.items() if k != "best"}):
        with pytest.raises(ValueError):
            rop.load_state_dict(bad)
        assert rop.state_dict() == state
    fresh = S.ReduceOnPlateau(0.1)
    assert fresh.state_dict()["best"] == "inf"  # JSON-safe infinity
    fresh.load_state_dict(fresh.state_dict())
    assert fresh.best == math.inf
    with pytest.raises(TypeError, match="metric must be a number"):
        rop.step("bad")


# --------------------------------------------------------------------------- composition
def test_sequence_children_see_steps_since_boundary():
    a, b, c = S.ExponentialDecay(1.0, 0.1), S.StepDecay(0.5, 0.5, 3), S.Constant(0.01)
    s = S.Sequence([a, b, c], [10, 25])
    assert [s(n) for n in range(10)] == [a(n) for n in range(10)]
    assert [s(n) for n in range(10, 25)] == [b(n - 10) for n in range(10, 25)]
    assert s(25) == s(10 ** 12) == 0.01
    assert S.join_schedules([a, b], [10]).get_config() == S.Sequence([a, b], [10]).get_config()


def test_products_and_scaling():
    a, b = S.ExponentialDecay(0.1, 1e-3), S.CosineDecay(1.0, 100)
    n = np.arange(200)
    for s in (0.5 * a, a * 0.5):
        assert isinstance(s, S.Scaled) and s.factor == 0.5
        assert_close(s(n), 0.5 * a(n))
    p = a * b * S.Constant(2.0)
    assert isinstance(p, S.Product) and len(p.schedules) == 3  # flattened
    assert_close(p(n), 2.0 * a(n) * b(n))
    with pytest.raises(TypeError):
        a * "x"
    with pytest.raises(TypeError):
        a * (lambda n: 1.0)


def test_linear_warmup_multiplies_a_schedule():
    cos = S.CosineDecay(0.1, 1000)
    w = S.LinearWarmup(cos, start_factor=0.0, end_factor=1.0, total_iters=100)
    n = np.arange(1000)
    assert_close(w(n), cos(n) * np.minimum(n, 100) / 100)


def test_companions_are_schedules():
    one = S.OneCycle(0.1, 100)
    assert isinstance(one.momentum, S.OneCycleMomentum)
    assert one.momentum(0) == 0.95 and one.momentum(99) == 0.95
    assert min(one.momentum(np.arange(100))) == pytest.approx(0.85)
    cyc = S.Cyclic(0.01, 0.1, 10)
    assert cyc.momentum(0) == 0.9 and cyc.momentum(10) == pytest.approx(0.8)


def test_lr_range_test_ramp():
    s = S.LRRangeTest(1e-6, 1.0, 7)
    assert_close(s(np.arange(7)), np.geomspace(1e-6, 1.0, 7))
    assert s(6) == pytest.approx(1.0) and s(10 ** 6) == s(6)
    lin = S.LRRangeTest(0.0, 1.0, 5, "linear")
    assert lin(np.arange(5)).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


# --------------------------------------------------------------------------- serialization edges
def test_serialize_plain_callable_and_unknown_classes():
    def my_schedule(n):
        return 0.1

    data = S.serialize(my_schedule)
    assert data == {"class": "callable",
                    "name": "test_serialize_plain_callable_and_unknown_classes.<locals>."
                            "my_schedule"}
    with pytest.raises(ValueError, match="plain callable"):
        S.deserialize(data)
    with pytest.raises(ValueError, match="unknown schedule class 'os.system'"):
        S.deserialize({"class": "os.system", "config": {}})
    with pytest.raises(ValueError, match="unknown schedule class 'Schedule'"):
        S.deserialize({"class": "Schedule", "config": {}})
    with pytest.raises(TypeError):
        S.deserialize("StepDecay")
    with pytest.raises(TypeError):
        S.serialize(0.1)
    with pytest.raises(TypeError):  # a bad config is rejected by the constructor
        S.deserialize({"class": "StepDecay", "config": {"lr0": 0.1, "drop": 0.5}})


def test_nested_config_shape():
    s = S.Sequence([S.Constant(0.1), 0.2 * S.StepDecay(1.0, 0.5, 10)], [5])
    assert s.get_config() == {
        "schedules": [{"class": "Constant", "config": {"value": 0.1}},
                      {"class": "Scaled", "config": {
                          "schedule": {"class": "StepDecay",
                                       "config": {"lr0": 1.0, "drop": 0.5, "every": 10}},
                          "factor": 0.2}}],
        "boundaries": [5]}


# --------------------------------------------------------------------------- validation
BAD_ARGS = [
    (lambda: S.StepDecay(0.1, 1.5, 10), ValueError,
     r"StepDecay: drop must be in \(0, 1\], got 1.5"),
    (lambda: S.StepDecay(0.1, 0.0, 10), ValueError,
     r"StepDecay: drop must be in \(0, 1\], got 0.0"),
    (lambda: S.StepDecay(0.1, 0.5, 0), ValueError, "StepDecay: every must be >= 1, got 0"),
    (lambda: S.StepDecay(0.1, 0.5, 2.5), TypeError, "StepDecay: every must be an integer, got 2.5"),
    (lambda: S.StepDecay(math.nan, 0.5, 2), ValueError, "StepDecay: lr0 must be finite, got nan"),
    (lambda: S.Constant(math.inf), ValueError, "Constant: value must be finite, got inf"),
    (lambda: S.Constant("0.1"), TypeError, "Constant: value must be a real number, got '0.1'"),
    (lambda: S.Constant(True), TypeError, "Constant: value must be a real number, got True"),
    (lambda: S.TimeBasedDecay(0.1, -1e-3), ValueError,
     "TimeBasedDecay: decay must be >= 0, got -0.001"),
    (lambda: S.TimeBasedDecay(-0.1, 1e-3), ValueError,
     "TimeBasedDecay: lr0 must be >= 0, got -0.1"),
    (lambda: S.ExponentialDecay(0.1, math.inf), ValueError,
     "ExponentialDecay: decay must be finite"),
    (lambda: S.InverseTimeDecay(0.1, 0, 1.0), ValueError,
     "InverseTimeDecay: decay_steps must be >= 1, got 0"),
    (lambda: S.InverseTimeDecay(0.1, 10, 1.0, staircase=1), TypeError,
     "InverseTimeDecay: staircase must be a bool, got 1"),
    (lambda: S.PolynomialDecay(0.1, 10, power=0.0), ValueError,
     "PolynomialDecay: power must be > 0, got 0.0"),
    (lambda: S.PolynomialDecay(0.1, 10, end_lr=-1.0), ValueError,
     "PolynomialDecay: end_lr must be >= 0, got -1.0"),
    (lambda: S.PiecewiseConstant([10, 5], [1.0, 0.5, 0.1]), ValueError,
     r"PiecewiseConstant: boundaries must be strictly increasing, got \[10, 5\]"),
    (lambda: S.PiecewiseConstant([10], [1.0]), ValueError,
     "PiecewiseConstant: values must have len"),
    (lambda: S.PiecewiseConstant([10], [1.0, math.nan]), ValueError,
     r"PiecewiseConstant: values\[1\] must be finite, got nan"),
    (lambda: S.PiecewiseConstant([-1], [1.0, 0.5]), ValueError,
     r"PiecewiseConstant: boundaries\[0\] must be >= 0, got -1"),
    (lambda: S.CosineDecay(0.1, 100, alpha=1.5), ValueError,
     r"CosineDecay: alpha must be in \[0, 1\], got 1.5"),
    (lambda: S.CosineDecay(0.1, 100, warmup_steps=10), ValueError,
     "CosineDecay: warmup_steps=10 needs warmup_target"),
    (lambda: S.CosineDecay(0.1, 0), ValueError, "CosineDecay: decay_steps must be >= 1, got 0"),
    (lambda: S.CosineRestarts(0.1, 10, t_mul=0.5), ValueError,
     "CosineRestarts: t_mul must be >= 1, got 0.5"),
    (lambda: S.CosineRestarts(0.1, 10, m_mul=1.5), ValueError,
     r"CosineRestarts: m_mul must be in \[0, 1\], got 1.5"),
    (lambda: S.LinearWarmup(0.1, total_iters=0), ValueError,
     "LinearWarmup: total_iters must be >= 1, got 0"),
    (lambda: S.LinearWarmup("x"), TypeError,
     "LinearWarmup: base must be an lrfast Schedule or a number, got 'x'"),
    (lambda: S.LinearWarmup(0.1, start_factor=-0.5), ValueError,
     "LinearWarmup: start_factor must be >= 0, got -0.5"),
    (lambda: S.OneCycle(0.0, 100), ValueError, "OneCycle: max_lr must be > 0, got 0.0"),
    (lambda: S.OneCycle(0.1, 100, pct_start=1.2), ValueError,
     r"OneCycle: pct_start must be in \[0, 1\], got 1.2"),
    (lambda: S.OneCycle(0.1, 100, anneal_strategy="cosine"), ValueError,
     "OneCycle: anneal_strategy must be one of 'cos', 'linear', got 'cosine'"),
    (lambda: S.OneCycle(0.1, 100, pct_start=0.6, three_phase=True), ValueError,
     "OneCycle: pct_start must be <= 0.5 with three_phase=True"),
    (lambda: S.OneCycle(0.1, 10, pct_start=0.1), ValueError,
     "OneCycle: pct_start=0.1 with total_steps=10 gives phase 1 zero length"),
    (lambda: S.OneCycle(0.1, 100, max_momentum=1.0), ValueError,
     r"OneCycle: max_momentum must be in \[0, 1\), got 1.0"),
    (lambda: S.OneCycle(0.1, 0), ValueError, "OneCycle: total_steps must be >= 1, got 0"),
    (lambda: S.Cyclic(0.01, 0.1, mode="cosine"), ValueError, "Cyclic: mode must be one of"),
    (lambda: S.Cyclic(0.01, 0.1, gamma=1.01), ValueError,
     r"Cyclic: gamma must be in \(0, 1\], got 1.01"),
    (lambda: S.Cyclic(0.01, 0.1, step_size_down=0), ValueError,
     "Cyclic: step_size_down must be >= 1, got 0"),
    (lambda: S.CyclicMomentum(base_momentum=-0.1), ValueError,
     r"CyclicMomentum: base_momentum must be in \[0, 1\), got -0.1"),
    (lambda: S.MultiStepDecay(0.1, [10, -5]), ValueError,
     r"MultiStepDecay: milestones\[1\] must be >= 0, got -5"),
    (lambda: S.MultiStepDecay(0.1, 10), TypeError,
     "MultiStepDecay: milestones must be a list of integers, got 10"),
    (lambda: S.MultiStepDecay(0.1, [10], gamma=0.0), ValueError,
     "MultiStepDecay: gamma must be > 0, got 0.0"),
    (lambda: S.Sequence([S.Constant(0.1)], [10]), ValueError, "Sequence: needs len"),
    (lambda: S.Sequence([S.Constant(0.1), print], [10]), TypeError,
     r"Sequence: schedules\[1\] must be an lrfast Schedule or a number"),
    (lambda: S.Sequence([0.1, 0.2, 0.3], [10, 10]), ValueError,
     "Sequence: boundaries must be strictly increasing"),
    (lambda: S.Scaled(S.Constant(0.1), -2.0), ValueError, "Scaled: factor must be >= 0, got -2.0"),
    (lambda: S.Scaled(lambda n: 0.1, 2.0), TypeError,
     "Scaled: schedule must be an lrfast Schedule"),
    (lambda: S.Product([]), ValueError, "Product: schedules must not be empty"),
    (lambda: S.Product([S.Constant(0.1), 0.5]), TypeError,
     r"Product: schedules\[1\] must be an lrfast Schedule"),
    (lambda: S.ReduceOnPlateau(factor=1.0), ValueError,
     r"ReduceOnPlateau: factor must be in \(0, 1\), got 1.0"),
    (lambda: S.ReduceOnPlateau(mode="minimum"), ValueError,
     "ReduceOnPlateau: mode must be one of 'min', 'max', got 'minimum'"),
    (lambda: S.ReduceOnPlateau(threshold_mode="relative"), ValueError,
     "ReduceOnPlateau: threshold_mode must be one of"),
    (lambda: S.ReduceOnPlateau(patience=-1), ValueError,
     "ReduceOnPlateau: patience must be >= 0, got -1"),
    (lambda: S.ReduceOnPlateau(0.1, min_lr=0.5), ValueError,
     r"ReduceOnPlateau: min_lr must be <= initial \(0.1\), got 0.5"),
    (lambda: S.ReduceOnPlateau(eps=math.nan), ValueError,
     "ReduceOnPlateau: eps must be finite, got nan"),
    (lambda: S.LRRangeTest(0.0, 1.0, 10), ValueError, "LRRangeTest: start_lr must be > 0, got 0.0"),
    (lambda: S.LRRangeTest(1.0, 0.5, 10), ValueError, "LRRangeTest: end_lr must be > 1, got 0.5"),
    (lambda: S.LRRangeTest(1e-3, 1.0, 1), ValueError, "LRRangeTest: num_steps must be >= 2, got 1"),
    (lambda: S.LRRangeTest(1e-3, 1.0, 10, mode="log"), ValueError,
     "LRRangeTest: mode must be one of 'exp', 'linear', got 'log'"),
]


@pytest.mark.parametrize("make,exc,match", BAD_ARGS,
                         ids=[m.split(":")[0].strip("\\") + f"-{i}"
                              for i, (_, _, m) in enumerate(BAD_ARGS)])
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# --------------------------------------------------------------------------- hypothesis
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(EXAMPLES)),
       n=st.lists(st.one_of(st.integers(0, 5000), st.integers(0, 10 ** 13)), min_size=1,
                  max_size=40))
def test_vectorized_equals_scalar_property(name, n):
    s = EXAMPLES[name]()
    assert_close(s(np.array(n, dtype=np.int64)), [s(k) for k in n])


# --------------------------------------------------------------------------- plots
@pytest.fixture
def agg():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


@every_schedule
def test_plot_returns_axes(make, agg):
    from matplotlib.axes import Axes
    s = make()
    ax = s.plot(200)
    assert isinstance(ax, Axes)
    line = ax.get_lines()[-1]
    assert_close(line.get_ydata(), s(np.arange(200)))
    _, ax2 = agg.subplots()
    assert s.plot(np.arange(10, 50), ax=ax2, color="red") is ax2


def test_plots_without_matplotlib_say_so(monkeypatch, tmp_path):
    for mod in ("matplotlib", "matplotlib.pyplot", "matplotlib.figure",
                "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes "import mod" fail
    with pytest.raises(ImportError, match="pip install matplotlib"):
        S.Constant(0.1).plot(10)
    with pytest.raises(ImportError, match="gallery.. needs matplotlib: pip install matplotlib"):
        S.gallery(tmp_path)


def test_gallery_writes_png(tmp_path, agg, capsys, monkeypatch):
    out = tmp_path / "out"
    assert S.gallery_main(["--out", str(out), "--steps", "300"]) == 0
    assert capsys.readouterr().out.split() == [str(out / "schedules.png")]
    with open(out / "schedules.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (out / "schedules.png").stat().st_size > 20000
    # one file per schedule (on the first few examples, to keep the test fast)
    few = S._gallery_examples(2)[:3]
    monkeypatch.setattr(sys.modules[S.gallery.__module__], "_gallery_examples", lambda N: few)
    paths = S.gallery(tmp_path / "each", steps=2, per_schedule=True)
    assert paths == [str(tmp_path / "each" / f) for f in
                     ("schedules.png", "schedule_Constant.png", "schedule_TimeBasedDecay.png",
                      "schedule_StepDecay.png")]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
