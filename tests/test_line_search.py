"""lrfast.line_search: the strong Wolfe and backtracking searches satisfy the
conditions they claim (checked independently, in numpy), follow
torch.optim.LBFGS's _strong_wolfe step for step, never return NaN, reject
non-descent directions; and the flat-vector kernels under them (dot, axpy,
two-loop recursion) are deterministic and equal their numpy twins."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import lrfast
from lrfast import line_search as LS
from lrfast import _dispatch
from lrfast._dispatch import kernels as K

from conftest import bits_equal

BLOCK = K.BLOCK_SIZE


def rosen(x):
    f = 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2
    g = np.array([-400 * x[0] * (x[1] - x[0] ** 2) - 2 * (1 - x[0]), 200 * (x[1] - x[0] ** 2)],
                 dtype=x.dtype)
    return float(f), g


def quadratic(n, seed, cond=100.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.logspace(0, np.log10(cond), n)) @ Q.T
    A = (A + A.T) / 2
    b = rng.standard_normal(n)

    def fg(x):
        Ax = A @ x
        return float(0.5 * x @ Ax - b @ x), Ax - b
    return fg, A, b


def counting(fg):
    calls = []

    def f(x):
        calls.append(np.array(x, copy=True))
        return fg(x)
    return f, calls


def check_claims(fg, x, d, r, c1=1e-4, c2=0.9):
    """Verify the result independently: the point, its values and the flags."""
    assert math.isfinite(r.step) and r.step >= 0
    f0, g0 = fg(x)
    gtd0 = float(np.dot(g0.ravel(), d.ravel()))
    scale0 = float(np.abs(g0.ravel() * d.ravel()).sum())
    assert r.f0 == f0 and abs(r.gtd0 - gtd0) <= 1e-13 * scale0
    if r.step == 0:
        assert r.f == r.f0 and not r.armijo
        return
    xt = x + r.step * d
    assert bits_equal(r.x, xt)
    f1, g1 = fg(xt)
    assert r.f == f1 and np.array_equal(r.g, g1)
    gtd1 = float(np.dot(g1.ravel(), d.ravel()))
    scale1 = float(np.abs(g1.ravel() * d.ravel()).sum())
    assert abs(r.gtd - gtd1) <= 1e-13 * scale1
    if r.armijo:
        assert f1 <= f0 + c1 * r.step * gtd0 + 1e-12 * (abs(f0) + 1)
    if r.curvature:
        assert abs(gtd1) <= c2 * abs(gtd0) + 1e-13 * (scale0 + scale1)


# ---------------------------------------------------------------------------
# strong Wolfe
# ---------------------------------------------------------------------------
def test_strong_wolfe_rosenbrock_claims_and_counts():
    x = np.array([-1.2, 1.0])
    f, calls = counting(rosen)
    _, g = rosen(x)
    r = LS.strong_wolfe(f, x, -g)
    check_claims(rosen, x, -g, r)
    assert r.success and r.armijo and r.curvature
    assert r.n_evals == len(calls)
    assert np.array_equal(x, [-1.2, 1.0])          # x is never modified


def test_strong_wolfe_given_f0_g0_saves_an_evaluation():
    x = np.array([-1.2, 1.0])
    f0, g0 = rosen(x)
    f, calls = counting(rosen)
    r = LS.strong_wolfe(f, x, -g0, f0=f0, g0=g0)
    r2 = LS.strong_wolfe(rosen, x, -g0)
    assert r.n_evals == len(calls) == r2.n_evals - 1
    assert r.step == r2.step and r.f == r2.f


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), t0=st.floats(1e-3, 1e3), scale=st.floats(1e-3, 1e3),
       cond=st.floats(1.0, 1e4))
def test_strong_wolfe_quadratic_claims(seed, t0, scale, cond):
    fg, A, b = quadratic(6, seed, cond)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal(6) * scale
    _, g = fg(x)
    # a random descent direction
    d = -g + 0.5 * np.linalg.norm(g) * rng.standard_normal(6) / math.sqrt(6)
    if np.dot(g, d) >= 0:
        d = -g
    r = LS.strong_wolfe(fg, x, d, t0=t0, max_ls=60)
    check_claims(fg, x, d, r)
    assert r.success                 # a smooth convex 1-D problem: the search succeeds
    # the exact minimizer along d satisfies the curvature condition; its Armijo
    # neighbourhood is where the accepted step must lie
    tstar = -np.dot(g, d) / (d @ A @ d)
    assert 0 < r.step <= 2 * (1 - 1e-4) * tstar * (1 + 1e-9)


def test_strong_wolfe_matches_torch_step_for_step():
    torch = pytest.importorskip("torch")
    from torch.optim.lbfgs import _strong_wolfe
    for seed in range(20):
        fg, A, b = quadratic(5, seed, 1e3)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(5) * 3
        f0, g0 = fg(x)
        d = -g0 * (0.1 + seed)       # some searches extrapolate, some zoom
        t0 = [1.0, 1e-3, 30.0][seed % 3]
        pts = []

        def obj(xt, t, dt):
            xx = xt[0].numpy() + float(t) * dt.numpy()
            pts.append(xx)
            f, g = fg(xx)
            return f, torch.tensor(g)
        tf, tg, tt, tn = _strong_wolfe(obj, [torch.tensor(x)], t0, torch.tensor(d), f0,
                                       torch.tensor(g0), float(np.dot(g0, d)))
        f, calls = counting(fg)
        r = LS.strong_wolfe(f, x, d, f0=f0, g0=g0, t0=t0)
        assert r.n_evals == tn == len(calls)
        assert r.step == pytest.approx(float(tt), rel=1e-10)
        assert r.f == pytest.approx(float(tf), rel=1e-10, abs=1e-12)
        np.testing.assert_allclose(np.array(calls), np.array(pts), rtol=1e-10, atol=1e-12)


def test_cubic_interpolate_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.optim.lbfgs import _cubic_interpolate as tci
    rng = np.random.default_rng(0)
    for _ in range(300):
        x1, x2 = rng.uniform(-2, 2, 2)
        f1, f2, g1, g2 = rng.standard_normal(4) * 3
        bounds = None if rng.random() < 0.5 else tuple(sorted(rng.uniform(-3, 3, 2)))
        want = float(tci(x1, torch.tensor(f1), torch.tensor(g1), x2, torch.tensor(f2),
                         torch.tensor(g2), bounds))
        got = LS._cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds)
        if math.isnan(want):
            assert math.isfinite(got)            # lrfast falls back to the middle
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_cubic_interpolate_never_nan():
    for args in [(0.0, 1.0, -1.0, 0.0, 1.0, -1.0),              # x1 == x2
                 (0.0, 1.0, -1.0, 1.0, math.inf, math.nan),     # a bad point
                 (0.0, 0.0, -1.0, 1.0, -1.0, 1.0)]:
        for b in (None, (0.25, 4.0)):
            assert math.isfinite(LS._cubic_interpolate(*args, bounds=b))


def test_overflowing_function_comes_back():
    # f is finite only for x < 1: steps beyond fail Armijo and the search zooms back
    def fg(x):
        if x[0] >= 1:
            return math.inf, np.array([math.nan])
        return float(-math.log1p(-x[0]) - 3 * x[0]), np.array([1 / (1 - x[0]) - 3])
    x = np.array([0.0])
    r = LS.strong_wolfe(fg, x, np.array([1.0]), t0=50.0)
    assert math.isfinite(r.step) and math.isfinite(r.f) and 0 < r.step < 1
    assert r.armijo and r.curvature
    r = LS.backtracking_armijo(fg, x, np.array([1.0]), t0=50.0)
    assert 0 < r.step < 1 and r.armijo and math.isfinite(r.f)


def test_nan_returning_function_never_gives_nan():
    def fg(x):
        if x[0] > 0.5:
            return math.nan, np.array([math.nan])
        return float((x[0] - 2) ** 2), np.array([2 * (x[0] - 2)])
    for max_ls in (0, 1, 3, 25):
        r = LS.strong_wolfe(fg, np.array([0.0]), np.array([1.0]), t0=10.0, max_ls=max_ls)
        assert math.isfinite(r.step) and math.isfinite(r.f) and math.isfinite(r.gtd)
        assert r.n_evals <= max_ls + 2


def test_budget_exhausted_returns_honest_flags():
    x = np.array([-1.2, 1.0])
    _, g = rosen(x)
    r = LS.strong_wolfe(rosen, x, -g, t0=1.0, max_ls=0)
    assert r.n_evals == 2 and math.isfinite(r.step)
    check_claims(rosen, x, -g, r)


def test_list_of_arrays_equals_flat():
    fg, A, b = quadratic(10, 3)
    x = np.random.default_rng(3).standard_normal(10)
    _, g = fg(x)

    def fg_list(xs):
        f, gg = fg(np.concatenate(xs))
        return f, [gg[:3], gg[3:]]
    r1 = LS.strong_wolfe(fg, x, -g, t0=0.01)
    r2 = LS.strong_wolfe(fg_list, [x[:3].copy(), x[3:].copy()], [-g[:3], -g[3:]], t0=0.01)
    assert r1.step == r2.step and r1.n_evals == r2.n_evals and r1.f == r2.f
    assert isinstance(r2.x, list) and bits_equal(np.concatenate(r2.x), r1.x)
    assert bits_equal(np.concatenate(r2.g), r1.g)


def test_float32_and_fortran_arrays():
    A = np.asfortranarray(np.diag([1.0, 4.0, 9.0, 16.0]).reshape(4, 4).astype(np.float32))

    def fg(X):
        return float(0.5 * np.sum(A * X * X)), A * X
    X = np.asfortranarray(np.ones((4, 4), np.float32))
    _, G = fg(X)
    r = LS.strong_wolfe(fg, X, -G)
    assert r.x.dtype == np.float32 and r.g.dtype == np.float32 and r.x.flags.f_contiguous
    assert r.armijo and r.curvature


# ---------------------------------------------------------------------------
# backtracking
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("t0,shrink", [(1.0, 0.5), (100.0, 0.5), (10.0, 0.1), (1e-4, 0.5)])
def test_backtracking_first_acceptable_step(t0, shrink):
    x = np.array([-1.2, 1.0])
    _, g = rosen(x)
    d = -g
    f, calls = counting(rosen)
    r = LS.backtracking_armijo(f, x, d, t0=t0, shrink=shrink)
    check_claims(rosen, x, d, r)
    assert r.armijo and r.curvature is None and r.success
    assert r.n_evals == len(calls)
    k = r.n_evals - 2                     # trials that failed before the accepted one
    f0 = rosen(x)[0]
    gtd = float(g @ d)
    t = t0
    for _ in range(k):                    # every earlier trial failed Armijo
        assert rosen(x + t * d)[0] > f0 + 1e-4 * t * gtd
        t *= shrink
    assert r.step == t                    # the accepted step is t0 * shrink^k


def test_backtracking_failure_returns_zero_step():
    x = np.array([-1.2, 1.0])
    _, g = rosen(x)
    r = LS.backtracking_armijo(rosen, x, -g, t0=1e6, max_evals=3)
    assert r.step == 0.0 and not r.armijo and not r.success and r.n_evals == 4
    assert r.x is x and r.f == r.f0


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("search", [LS.strong_wolfe, LS.backtracking_armijo])
def test_non_descent_direction_raises(search):
    x = np.array([-1.2, 1.0])
    _, g = rosen(x)
    for d in (g, np.zeros(2), np.array([g[1], -g[0]])):       # ascent, zero, orthogonal
        with pytest.raises(ValueError, match="not a descent direction"):
            search(rosen, x, d)


@pytest.mark.parametrize("kw,err", [
    (dict(c1=0.95), ValueError), (dict(c2=1.0), ValueError), (dict(c1=0.0), ValueError),
    (dict(t0=0.0), ValueError), (dict(t0=math.nan), ValueError), (dict(t0=math.inf), ValueError),
    (dict(max_ls=-1), ValueError), (dict(max_ls=2.5), TypeError), (dict(c1="a"), TypeError),
    (dict(tolerance_change=-1.0), ValueError)])
def test_strong_wolfe_bad_arguments(kw, err):
    x = np.array([-1.2, 1.0])
    _, g = rosen(x)
    with pytest.raises(err):
        LS.strong_wolfe(rosen, x, -g, **kw)


@pytest.mark.parametrize("kw", [dict(shrink=1.0), dict(shrink=0.0), dict(max_evals=0),
                                dict(c1=1.0)])
def test_backtracking_bad_arguments(kw):
    x = np.array([-1.2, 1.0])
    _, g = rosen(x)
    with pytest.raises(ValueError):
        LS.backtracking_armijo(rosen, x, -g, **kw)


def test_bad_problems():
    x = np.array([-1.2, 1.0])
    _, g = rosen(x)
    with pytest.raises(TypeError):
        LS.strong_wolfe("f", x, -g)
    with pytest.raises(ValueError):
        LS.strong_wolfe(rosen, x, -g[:1])                          # d shape
    with pytest.raises(ValueError):
        LS.strong_wolfe(lambda x: (1.0, np.zeros(3)), x, -g)       # g shape
    with pytest.raises(TypeError):
        LS.strong_wolfe(lambda x: 1.0, x, -g)                      # not a pair
    with pytest.raises(ValueError, match="not finite"):
        LS.strong_wolfe(lambda x: (math.nan, np.ones(2)), x, -g)
    with pytest.raises(ValueError, match="NaN or inf"):
        LS.strong_wolfe(rosen, x, np.array([math.nan, 1.0]))
    with pytest.raises(ValueError, match="both"):
        LS.strong_wolfe(rosen, x, -g, f0=1.0)


# ---------------------------------------------------------------------------
# the flat-vector kernels under the searches and L-BFGS
# ---------------------------------------------------------------------------
SIZES = [0, 1, 7, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 5]


def split(x, rng, k):
    """x cut into k pieces at random places (some may be empty)."""
    cuts = np.sort(rng.integers(0, x.size + 1, k - 1))
    return [p.copy() for p in np.split(x, cuts)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_dot_deterministic_and_accurate(n, dtype, parallel_always):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    ref = K.vdot(x, y)
    exact = math.fsum(float(a) * float(b) for a, b in zip(x, y))
    scale = math.fsum(abs(float(a) * float(b)) for a, b in zip(x, y))
    assert abs(ref - exact) <= 1e-14 * scale
    for nt in (1, 2, 4):
        lrfast.set_num_threads(nt)
        assert K.vdot(x, y) == ref
        for k in (2, 5):
            assert K.vdot(split(x, rng, k), split(y, rng, k + 1)) == ref   # any split
    s = K.vstats(x)
    assert s[0] == pytest.approx(float(np.abs(x.astype(float)).sum()), rel=1e-12, abs=0)
    assert s[1] == (float(np.abs(x).max()) if n else 0.0)
    assert s[2] == pytest.approx(float((x.astype(float) ** 2).sum()), rel=1e-12, abs=0)


def test_dot_equals_across_isa_builds():
    builds = [_dispatch.load(name) for name in _dispatch.available_isas()]
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(3 * BLOCK + 11), rng.standard_normal(3 * BLOCK + 11)
    assert len({b.vdot(x, y) for b in builds}) == 1
    assert len({b.vstats(x) for b in builds}) == 1


def test_max_propagates_nan():
    x = np.ones(2 * BLOCK)
    x[BLOCK + 3] = np.nan
    assert math.isnan(K.vstats(x)[1]) and math.isnan(K.vdot(x, x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_elementwise_ops_equal_numpy(n, dtype, parallel_always):
    rng = np.random.default_rng(n + 1)
    T = np.dtype(dtype).type
    x = rng.standard_normal(n).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    a = 0.3713
    for nt in (1, 3):
        lrfast.set_num_threads(nt)
        yy = split(y, rng, 3)
        K.vaxpy(a, split(x, rng, 4), yy)
        assert bits_equal(np.concatenate(yy).astype(dtype), y + T(a) * x)
        out = np.empty_like(x)
        K.vlincomb(out, x, a, y)
        assert bits_equal(out, x + T(a) * y)
        out2 = np.empty_like(x)
        K.vscale(a, x, out=out2)
        assert bits_equal(out2, x * T(a))
        z = x.copy()
        K.vscale(a, z)
        assert bits_equal(z, x * T(a))
        cp = np.empty_like(x)
        s = K.vcopy(split(x, rng, 3), cp, y)
        assert bits_equal(cp, x) and s[2] == K.vdot(x, y)


def test_vector_op_errors():
    x = np.ones(10)
    with pytest.raises(ValueError, match="overlaps"):
        K.vlincomb(x[2:], x[:8], 1.0, np.ones(8))
    with pytest.raises(ValueError, match="sizes"):
        K.vdot(np.ones(3), np.ones(4))
    with pytest.raises(TypeError, match="dtypes|dtype"):
        K.vdot(np.ones(3), np.ones(3, np.float32))
    with pytest.raises(TypeError):
        K.vdot(np.ones(3, np.int64), np.ones(3, np.int64))
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        K.vaxpy(1.0, np.ones(3), ro)
    with pytest.raises(ValueError, match="contiguous"):
        K.vdot(np.ones(6)[::2], np.ones(3))
    K.vaxpy(2.0, x, x)                 # the same object: an in-place update is fine
    assert np.all(x == 3.0)


def twin_two_loop(g, S, Y, ro, h):
    """numpy twin of the fused two-loop recursion (dots from the kernel's vdot)."""
    T = g.dtype.type
    m = len(S)
    q = -g
    al = [0.0] * m
    for i in range(m - 1, -1, -1):
        al[i] = K.vdot(S[i], q) * ro[i]
        q = q + T(-al[i]) * Y[i]
    d = q * T(h)
    for i in range(m):
        be = K.vdot(Y[i], d) * ro[i]
        d = d + T(al[i] - be) * S[i]
    return d, al


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,m", [(1, 0), (5, 1), (BLOCK + 3, 3), (3 * BLOCK, 7), (100, 12)])
def test_two_loop_equals_twin(n, m, dtype, parallel_always):
    rng = np.random.default_rng(n * 31 + m)
    S = [rng.standard_normal(n).astype(dtype) for _ in range(m)]
    Y = [(s + 0.3 * rng.standard_normal(n)).astype(dtype) for s in S]
    ro = [1.0 / K.vdot(y, s) for s, y in zip(S, Y)]
    g = rng.standard_normal(n).astype(dtype)
    want, al_want = twin_two_loop(g, S, Y, ro, 0.7)
    for nt in (1, 2, 4):
        lrfast.set_num_threads(nt)
        d = np.empty_like(g)
        al = K.lbfgs_two_loop(g, d, S, Y, ro, 0.7)
        assert bits_equal(d, want) and al == al_want
