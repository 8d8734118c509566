"""Every schedule stays exactly within its documented range, for any parameters.

Each builder below draws a schedule's parameters, and returns the schedule, the
bounds its docstring promises (computed here from the parameters, in floats, as a
user would), and the steps where rounding is most likely to cross a bound (the
ends of phases, cycles and ramps, plus a few random and far steps). The values
are checked scalar and vectorized: exact bounds, no tolerance.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lrfast import schedules as S

pos = st.floats(1e-8, 10.0, allow_subnormal=False)           # a rate > 0
nonneg = st.one_of(st.just(0.0), pos)
unit = st.floats(0.0, 1.0)
frac = st.floats(1e-6, 1.0, exclude_max=True)
length = st.integers(1, 3000)


def around(*points):
    """Steps at and around each point (>= 0)."""
    out = set()
    for p in points:
        p = int(p)
        out.update(k for k in (p - 2, p - 1, p, p + 1, p + 2) if k >= 0)
    return out


def finish(data, s, lo, hi, steps):
    steps = set(steps) | {0, 10 ** 6, 10 ** 12}
    steps |= set(data.draw(st.lists(st.integers(0, 10 ** 7), max_size=8)))
    return s, lo, hi, sorted(steps)


def b_constant(data):
    v = data.draw(nonneg)
    return finish(data, S.Constant(v), v, v, [])


def b_time_based(data):
    lr0, d = data.draw(nonneg), data.draw(st.one_of(st.just(0.0), st.floats(1e-9, 50.0)))
    return finish(data, S.TimeBasedDecay(lr0, d), 0.0, lr0, range(40))


def b_step(data):
    lr0, drop, every = data.draw(nonneg), data.draw(st.floats(1e-3, 1.0)), data.draw(length)
    return finish(data, S.StepDecay(lr0, drop, every), 0.0, lr0, around(every, 2 * every))


def b_exponential(data):
    lr0, d = data.draw(nonneg), data.draw(st.floats(0.0, 10.0))
    return finish(data, S.ExponentialDecay(lr0, d), 0.0, lr0, range(20))


def b_exponential_optax(data):
    lr0 = data.draw(pos)
    rate = data.draw(st.floats(1e-3, 3.0))
    ts, begin = data.draw(length), data.draw(st.integers(0, 500))
    staircase = data.draw(st.booleans())
    end = data.draw(st.one_of(st.none(), st.floats(0.0, 20.0)))
    if end is not None and rate < 1.0 and end > lr0:
        end = lr0 * rate   # a lower clamp must not be above lr0 (else it is rejected)
    if end is not None and rate > 1.0 and end < lr0:
        end = lr0 / rate * 4.0 if lr0 / rate * 4.0 >= lr0 else lr0
    s = S.ExponentialDecay(lr0, rate=rate, transition_steps=ts, transition_begin=begin,
                           staircase=staircase, end_value=end)
    if rate <= 1.0:
        lo, hi = (0.0 if end is None else end), lr0
    else:
        lo, hi = lr0, (math.inf if end is None else end)
    return finish(data, s, lo, hi, around(begin, begin + ts, begin + 3 * ts))


def b_inverse_time(data):
    lr0, ds, r = data.draw(nonneg), data.draw(length), data.draw(st.floats(0.0, 100.0))
    s = S.InverseTimeDecay(lr0, ds, r, staircase=data.draw(st.booleans()))
    return finish(data, s, 0.0, lr0, around(ds))


def b_polynomial(data):
    lr0, end, ds = data.draw(nonneg), data.draw(nonneg), data.draw(length)
    s = S.PolynomialDecay(lr0, ds, end, power=data.draw(st.floats(0.05, 5.0)),
                          cycle=data.draw(st.booleans()))
    return finish(data, s, min(lr0, end), max(lr0, end), around(ds, 2 * ds))


def b_piecewise_constant(data):
    b = sorted(set(data.draw(st.lists(st.integers(0, 3000), min_size=1, max_size=5))))
    v = data.draw(st.lists(nonneg, min_size=len(b) + 1, max_size=len(b) + 1))
    return finish(data, S.PiecewiseConstant(b, v), min(v), max(v), around(*b))


def b_piecewise_interpolate(data):
    init = data.draw(nonneg)
    b = sorted(set(data.draw(st.lists(st.integers(0, 3000), max_size=5))))
    scales = data.draw(st.lists(st.floats(0.0, 3.0), min_size=len(b), max_size=len(b)))
    s = S.PiecewiseInterpolate(init, b, scales, interpolate_type=data.draw(
        st.sampled_from(["linear", "cosine"])))
    levels = [init]
    for c in scales:
        levels.append(levels[-1] * c)
    return finish(data, s, min(levels), max(levels), around(*b))


def b_cosine(data):
    lr0, ds, alpha = data.draw(nonneg), data.draw(length), data.draw(unit)
    exponent = data.draw(st.sampled_from([1.0, 0.5, 2.0, 3.7]))
    if data.draw(st.booleans()):
        s = S.CosineDecay(lr0, ds, alpha, exponent=exponent)
        return finish(data, s, lr0 * alpha, lr0, around(ds, ds / 2))
    wt, ws = data.draw(nonneg), data.draw(length)
    s = S.CosineDecay(lr0, ds, alpha, warmup_target=wt, warmup_steps=ws, exponent=exponent)
    return finish(data, s, min(lr0, wt * alpha), max(lr0, wt), around(ws, ws + ds))


def b_restarts(data):
    lr0, T0 = data.draw(nonneg), data.draw(st.integers(1, 300))
    t_mul = data.draw(st.sampled_from([1.0, 2.0, 3.0, 1.3, 1.5]))
    s = S.CosineRestarts(lr0, T0, t_mul, data.draw(unit), alpha=(a := data.draw(unit)),
                         exponent=data.draw(st.sampled_from([1.0, 0.5, 2.0])))
    starts = [T0 * (t_mul ** i - 1) / (t_mul - 1) if t_mul != 1 else i * T0 for i in range(6)]
    return finish(data, s, lr0 * a, lr0, around(*starts))


def b_linear_warmup(data):
    base, sf, ef, T = data.draw(nonneg), data.draw(st.floats(0.0, 2.0)), \
        data.draw(st.floats(0.0, 2.0)), data.draw(length)
    s = S.LinearWarmup(base, sf, ef, T)
    return finish(data, s, base * min(sf, ef), base * max(sf, ef), around(T))


def b_one_cycle(data):
    mx, T = data.draw(pos), data.draw(st.integers(10, 3000))
    three = data.draw(st.booleans())
    pct = data.draw(st.floats(0.1, 0.5 if three else 0.9))
    div, final = data.draw(st.floats(0.5, 100.0)), data.draw(st.floats(0.5, 1e4))
    assume(pct * T >= 2)  # no zero-length phase (rejected by the constructor)
    s = S.OneCycle(mx, T, pct, data.draw(st.sampled_from(["cos", "linear"])), div, final,
                   three)
    ini = mx / div
    pts = [ini, mx, ini / final]
    return finish(data, s, min(pts), max(pts), around(pct * T, 2 * pct * T, T))


def b_one_cycle_momentum(data):
    T = data.draw(st.integers(10, 3000))
    three = data.draw(st.booleans())
    pct = data.draw(st.floats(0.1, 0.5 if three else 0.9))
    b, m = data.draw(st.floats(0.0, 0.999)), data.draw(st.floats(0.0, 0.999))
    assume(pct * T >= 2)
    s = S.OneCycleMomentum(T, pct, data.draw(st.sampled_from(["cos", "linear"])), three, b, m)
    return finish(data, s, min(b, m), max(b, m), around(pct * T, 2 * pct * T, T))


def b_linear_onecycle(data):
    T = data.draw(st.integers(10, 3000))
    peak = data.draw(pos)
    pct = data.draw(st.floats(0.05, 0.5))
    pct2 = data.draw(st.floats(pct + 0.05, 0.95))
    div, final = data.draw(st.floats(0.5, 100.0)), data.draw(st.floats(0.5, 1e4))
    assume(int(pct * T) < int(pct2 * T) < T)  # else rejected by the constructor
    s = S.LinearOneCycle(T, peak, pct_start=pct, pct_final=pct2, div_factor=div,
                         final_div_factor=final)
    pts = [peak / div, peak, peak / div / final]
    return finish(data, s, min(pts), max(pts), around(pct * T, pct2 * T, T))


def b_cyclic(data):
    lo_, hi_ = data.draw(nonneg), data.draw(nonneg)
    up, down = data.draw(length), data.draw(st.one_of(st.none(), length))
    mode = data.draw(st.sampled_from(["triangular", "triangular2", "exp_range"]))
    s = S.Cyclic(lo_, hi_, up, down, mode, gamma=data.draw(st.floats(0.9, 1.0)))
    d = up if down is None else down
    return finish(data, s, min(lo_, hi_), max(lo_, hi_), around(up, up + d, 2 * up + d))


def b_cyclic_momentum(data):
    b, m = data.draw(st.floats(0.0, 0.999)), data.draw(st.floats(0.0, 0.999))
    up = data.draw(length)
    s = S.CyclicMomentum(b, m, up, None, data.draw(
        st.sampled_from(["triangular", "triangular2", "exp_range"])))
    return finish(data, s, min(b, m), max(b, m), around(up, 2 * up))


def b_multistep(data):
    lr0, gamma = data.draw(nonneg), data.draw(st.floats(1e-3, 1.0))
    ms = data.draw(st.lists(st.integers(0, 3000), max_size=5))
    return finish(data, S.MultiStepDecay(lr0, ms, gamma), 0.0, lr0, around(*ms))


def b_wsd(data):
    peak, end = data.draw(nonneg), data.draw(nonneg)
    w, st_, d = data.draw(st.integers(0, 500)), data.draw(st.integers(0, 500)), \
        data.draw(st.integers(1, 500))
    end = min(end, peak)
    s = S.WarmupStableDecay(peak, w, st_, d, decay=data.draw(
        st.sampled_from(["linear", "cosine", "sqrt"])), end=end)
    return finish(data, s, 0.0, peak, around(w, w + st_, w + st_ + d))


def b_sequence(data):
    a, b_ = data.draw(pos), data.draw(pos)
    T = data.draw(length)
    s = S.Sequence([S.LinearWarmup(a, 0.0, 1.0, T), S.CosineDecay(b_, T)], [T])
    return finish(data, s, 0.0, max(a, b_), around(T, 2 * T))


def b_scaled(data):
    k, lr0 = data.draw(st.floats(0.0, 10.0)), data.draw(nonneg)
    T = data.draw(length)
    return finish(data, k * S.CosineDecay(lr0, T), 0.0, k * lr0, around(T))


def b_product(data):
    a, b_ = data.draw(pos), data.draw(pos)
    T = data.draw(length)
    s = S.CosineDecay(a, T) * S.ExponentialDecay(b_, 1e-3)
    return finish(data, s, 0.0, a * b_, around(T))


def b_plateau(data):
    init = data.draw(pos)
    mn = data.draw(st.floats(0.0, 1.0)) * init
    rop = S.ReduceOnPlateau(init, factor=data.draw(st.floats(0.01, 0.99)), patience=0,
                            min_lr=mn)
    for m in data.draw(st.lists(st.floats(0.0, 1.0), max_size=30)):
        rop.step(m)
    return finish(data, rop, mn, init, [])


def b_lr_range(data):
    mode = data.draw(st.sampled_from(["exp", "linear"]))
    a = data.draw(pos)
    b_ = a * data.draw(st.floats(1.0001, 1e6))
    N = data.draw(st.integers(2, 3000))
    return finish(data, S.LRRangeTest(a, b_, N, mode), a, b_, around(N))


def b_keras_scheduler(data):
    # a recursion over epochs (cost O(epochs)): 1e10 steps per epoch keeps the far steps
    # below to 100 epochs
    lr0, d = data.draw(pos), data.draw(st.floats(0.0, 1.0))
    s = S.LearningRateScheduler(lambda e, lr: lr * math.exp(-d) if e else lr, lr0,
                                steps_per_epoch=10 ** 10)
    return finish(data, s, 0.0, lr0, [])


BUILDERS = {
    "Constant": b_constant, "TimeBasedDecay": b_time_based, "StepDecay": b_step,
    "ExponentialDecay": b_exponential, "ExponentialDecay-optax": b_exponential_optax,
    "InverseTimeDecay": b_inverse_time, "PolynomialDecay": b_polynomial,
    "PiecewiseConstant": b_piecewise_constant, "PiecewiseInterpolate": b_piecewise_interpolate,
    "CosineDecay": b_cosine, "CosineRestarts": b_restarts, "LinearWarmup": b_linear_warmup,
    "OneCycle": b_one_cycle, "OneCycleMomentum": b_one_cycle_momentum,
    "LinearOneCycle": b_linear_onecycle, "Cyclic": b_cyclic, "CyclicMomentum": b_cyclic_momentum,
    "MultiStepDecay": b_multistep, "WarmupStableDecay": b_wsd, "Sequence": b_sequence,
    "Scaled": b_scaled, "Product": b_product, "ReduceOnPlateau": b_plateau,
    "LRRangeTest": b_lr_range, "LearningRateScheduler": b_keras_scheduler,
}


def test_builders_cover_every_class():
    covered = {k.split("-")[0] for k in BUILDERS}
    assert covered == set(S._REGISTRY), covered ^ set(S._REGISTRY)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_values_stay_within_documented_range(name, data):
    s, lo, hi, steps = BUILDERS[name](data)
    scalar = [s(k) for k in steps]
    vector = s(np.array(steps, dtype=np.int64))
    for k, v, w in zip(steps, scalar, vector):
        assert type(v) is float
        assert not math.isnan(v) and (math.isfinite(v) or hi == math.inf), (k, v)
        assert lo <= v <= hi, (k, v, lo, hi)
        assert lo <= w <= hi, (k, w, lo, hi)


# --------------------------------------------------------------------------- regressions
def test_linear_warmup_to_zero_is_never_negative():
    # Before the clamp, s + (0 - s) * T / T rounded to about -1e-20 for ~2% of pairs,
    # and AdamW then refused the "invalid learning rate" mid-training.
    bad = []
    for T in range(1, 200):
        for sf in (0.1, 0.3, 0.7, 1.0 / 3, 0.9, 0.01 * T, 1.0 / T):
            s = S.LinearWarmup(1.0, start_factor=sf, end_factor=0.0, total_iters=T)
            if s(T) != 0.0 or s(T + 5) != 0.0 or np.any(s(np.arange(T, T + 3)) != 0.0):
                bad.append((sf, T, s(T)))
            if min(s(np.arange(T + 2))) < 0.0:
                bad.append((sf, T, "negative before T"))
    assert not bad, bad[:5]
