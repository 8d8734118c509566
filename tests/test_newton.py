"""lrfast.DiagonalNewton (per-parameter rates as a diagonal inverse Hessian):
bit-identical to its numpy twin for any dtype, option, size and thread count;
converges like Newton's method where the Hessian is diagonal; and the
Hutchinson and secant estimators of the Hessian diagonal."""
import copy
import math
import pickle

import numpy as np
import pytest

import lrfast
from lrfast.newton import hutchinson_diag, secant_diag

from conftest import bits_equal

PART = 4096   # the engine's minimum part size (elements)


def twin_step(p, g, h, *, lr=1.0, damping=1e-4, weight_decay=0.0, maximize=False,
              grad_scale=1.0):
    """numpy twin of the DiagonalNewton kernel: p -= lr * g / (|h| + damping),
    with g = +-grad_scale * g (+ wd * p); scalars rounded once to the dtype."""
    T = p.dtype.type
    g = g * T(-grad_scale if maximize else grad_scale)
    if weight_decay != 0:
        g = g + T(weight_decay) * p
    p -= T(lr) * g / (np.abs(h) + T(damping))


def make(shapes, dtype, seed, order="C"):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s), dtype=dtype, order=order) for s in shapes]


OPTIONS = [dict(), dict(lr=0.5, damping=0.1), dict(lr=0.3, weight_decay=0.01, maximize=True),
           dict(lr=0.7, damping=1e-3, max_grad_norm=1.0)]
SHAPES = [[(0,)], [(1,)], [(PART - 1,)], [(PART,), (PART + 1,)], [(3, 5), (40000,), (7,)]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: "x".join(str(x) for x in s))
def test_equals_numpy_twin(shapes, opts, dtype, parallel_always):
    for nt in (1, 2, 4):
        lrfast.set_num_threads(nt)
        ps = make(shapes, dtype, 0)
        ts = [p.copy() for p in ps]
        opt = lrfast.DiagonalNewton(ps, **opts)
        hp = {k: v for k, v in opts.items() if k != "max_grad_norm"}
        for k in range(4):
            gs = make(shapes, dtype, 10 + k)
            hs = make(shapes, dtype, 20 + k)           # some curvatures negative: |h| used
            gs_copy, hs_copy = [g.copy() for g in gs], [h.copy() for h in hs]
            if k == 2 and len(shapes) > 1:
                gs[1] = hs[1] = None                   # a None grad skips that param
            scale = 1.0
            if "max_grad_norm" in opts:
                norm = lrfast.grad_norm(gs)[0]
                scale = min(1.0, opts["max_grad_norm"] / (norm + 1e-6))
            assert opt.step(gs, hs)
            for p, g, h in zip(ts, gs, hs):
                if g is not None:
                    twin_step(p, g, h, grad_scale=scale, **hp)
            for p, t in zip(ps, ts):
                assert bits_equal(p, t)
            for a, b in zip(gs, gs_copy):              # inputs are never modified
                assert a is None or bits_equal(a, b)
            for a, b in zip(hs, hs_copy):
                assert a is None or bits_equal(a, b)
        assert opt.step_count == 4


def test_fortran_order_and_groups():
    ps = make([(4, 6), (5,)], np.float64, 1, order="F")
    ts = [p.copy(order="K") for p in ps]
    opt = lrfast.DiagonalNewton([{"params": [ps[0]], "lr": 0.5}, {"params": [ps[1]]}],
                                damping=0.01)
    gs = make([(4, 6), (5,)], np.float64, 2, order="F")
    hs = make([(4, 6), (5,)], np.float64, 3, order="F")
    opt.step(gs, hs)
    twin_step(ts[0], gs[0], hs[0], lr=0.5, damping=0.01)
    twin_step(ts[1], gs[1], hs[1], lr=1.0, damping=0.01)
    assert bits_equal(ps[0], ts[0]) and bits_equal(ps[1], ts[1])


# ---------------------------------------------------------------------------
# Newton's method where the Hessian is diagonal
# ---------------------------------------------------------------------------
def test_one_step_on_a_diagonal_quadratic():
    rng = np.random.default_rng(0)
    a = np.logspace(-2, 3, 200)                # condition number 1e5: GD would crawl
    c = rng.standard_normal(200)
    x = np.zeros(200)
    opt = lrfast.DiagonalNewton([x], damping=1e-12)
    opt.step([a * (x - c)], [a])
    assert np.abs(x - c).max() < 1e-9


def test_quadratic_convergence_on_a_separable_function():
    # f = sum(cosh(x_i - c_i)): H = diag(cosh(x - c)), Newton converges quadratically
    rng = np.random.default_rng(1)
    c = rng.uniform(-1, 1, 1000)
    x = np.zeros(1000)
    opt = lrfast.DiagonalNewton([x], damping=1e-12)
    errs = []
    for _ in range(6):
        opt.step([np.sinh(x - c)], [np.cosh(x - c)])
        errs.append(np.abs(x - c).max())
    assert errs[-1] < 1e-14
    assert errs[2] < errs[1] ** 2 * 2        # the error squares each step


def test_secant_estimate_drives_newton():
    rng = np.random.default_rng(2)
    a, c = np.logspace(-1, 2, 50), rng.standard_normal(50)
    grad = lambda x: a * (x - c)
    x = np.zeros(50)
    opt = lrfast.DiagonalNewton([x], lr=1.0, damping=1e-12)
    h = np.full(50, 100.0)                      # a first guess (max curvature): a safe step
    x_prev, g_prev = x.copy(), grad(x)
    opt.step([g_prev], [h])
    for _ in range(2):
        g = grad(x)
        h = secant_diag([x], [g], [x_prev], [g_prev], prev=[h])[0]
        x_prev, g_prev = x.copy(), g
        opt.step([g], [h])
    np.testing.assert_allclose(h, a, rtol=1e-10)       # exact on a separable quadratic
    assert np.abs(x - c).max() < 1e-10


def test_hutchinson_estimate_drives_newton_on_logistic_regression():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    m, k = X.shape
    lam = 1e-2

    def grad(w):
        p = 1 / (1 + np.exp(-(X @ w)))
        return X.T @ (p - y) / m + lam * w

    def loss(w):
        z = X @ w
        return float(np.mean(np.logaddexp(0, z) - y * z) + 0.5 * lam * w @ w)

    w = np.zeros(k)                      # the optimum, by Newton's method
    for _ in range(30):
        p = 1 / (1 + np.exp(-(X @ w)))
        H = (X.T * (p * (1 - p) / m)) @ X + lam * np.eye(k)
        w = w - np.linalg.solve(H, grad(w))
    f_star = loss(w)
    # correlated features: lr below 2 / lambda_max(D^-1/2 H D^-1/2) (about 0.16 here)
    w = np.zeros(k)
    opt = lrfast.DiagonalNewton([w], lr=0.1, damping=1e-3)
    rng = np.random.default_rng(0)
    f0 = loss(w)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(X @ w)))
        hvp = lambda v: X.T @ ((p * (1 - p)) * (X @ v)) / m + lam * v
        h = hutchinson_diag(hvp, w, n_samples=4, rng=rng)
        opt.step([grad(w)], [h])
    assert (loss(w) - f_star) < 1e-3 * (f0 - f_star) and np.abs(grad(w)).max() < 1e-3


# ---------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------
def test_hutchinson_exact_for_diagonal_and_unbiased():
    d = np.array([1.0, -2.0, 3.0, 0.5])
    assert bits_equal(hutchinson_diag(lambda v: d * v, np.zeros(4), rng=0), d)
    rng = np.random.default_rng(5)
    B = rng.standard_normal((6, 6))
    H = B @ B.T
    est = hutchinson_diag(lambda v: H @ v, np.zeros(6), n_samples=4000, rng=1)
    off = np.sqrt((H ** 2).sum(1) - np.diag(H) ** 2)       # per-entry standard deviation
    assert np.all(np.abs(est - np.diag(H)) < 5 * off / np.sqrt(4000))
    # lists of params, float32
    ps = [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]
    out = hutchinson_diag(lambda vs: [2 * vs[0], 3 * vs[1]], ps, n_samples=3, rng=2)
    assert out[0].dtype == np.float32 and np.all(out[0] == 2) and np.all(out[1] == 3)


def test_secant_masks_small_steps():
    x, xp = np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 3.0 + 1e-12])
    g, gp = np.array([5.0, 1.0, 1.0]), np.array([3.0, 0.0, 0.0])
    assert bits_equal(secant_diag(x, g, xp, gp), np.array([2.0, 1.0, 1.0]))
    assert bits_equal(secant_diag(x, g, xp, gp, prev=np.array([9.0, 8.0, 7.0])),
                      np.array([2.0, 8.0, 7.0]))
    assert bits_equal(secant_diag(x, g, xp, gp, fill=0.5), np.array([2.0, 0.5, 0.5]))


def test_estimator_errors():
    with pytest.raises(TypeError):
        hutchinson_diag("hvp", np.zeros(3))
    with pytest.raises(ValueError):
        hutchinson_diag(lambda v: v, np.zeros(3), n_samples=0)
    with pytest.raises(ValueError, match="shape"):
        hutchinson_diag(lambda v: v[:2], np.zeros(3))
    with pytest.raises(ValueError):
        secant_diag(np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError):
        secant_diag(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), min_step=-1.0)
    with pytest.raises(ValueError):
        secant_diag([np.zeros(3)], [np.zeros(3)], [np.zeros(3), np.zeros(1)], [np.zeros(3)])


# ---------------------------------------------------------------------------
# bad input, skipping, state
# ---------------------------------------------------------------------------
def test_bad_input_changes_nothing():
    ps = make([(5,), (3, 2)], np.float64, 0)
    before = [p.copy() for p in ps]
    opt = lrfast.DiagonalNewton(ps, damping=0.1)
    g = make([(5,), (3, 2)], np.float64, 1)
    h = make([(5,), (3, 2)], np.float64, 2)
    bad = [
        (g, None, ValueError),
        (g, h[:1], ValueError),
        (g, [h[0], np.ones((2, 3))], ValueError),                    # shape
        (g, [h[0], h[1].astype(np.float32)], TypeError),             # dtype
        (g, [h[0], None], ValueError),                               # None without a None grad
        ([g[0], None], h, ValueError),                               # h without a grad
        (g, [ps[0], h[1]], ValueError),                              # h is a param
        (g, [h[0], np.asfortranarray(h[1])], ValueError),            # layout
    ]
    for gg, hh, err in bad:
        with pytest.raises(err):
            opt.step(gg, hh)
        assert all(bits_equal(a, b) for a, b in zip(ps, before)) and opt.step_count == 0
    for kw in (dict(damping=0.0), dict(damping=-1.0), dict(damping=math.nan), dict(lr=-1.0),
               dict(weight_decay=-0.1)):
        with pytest.raises(ValueError):
            lrfast.DiagonalNewton(ps, **kw)
    with pytest.raises(ValueError, match="damping"):
        opt.param_groups[0]["damping"] = 0.0
    assert opt.param_groups[0]["damping"] == 0.1


def test_skip_nonfinite_covers_the_hessian():
    p = np.ones(4)
    opt = lrfast.DiagonalNewton([p], skip_nonfinite=True)
    assert not opt.step([np.ones(4)], [np.array([1.0, np.nan, 1.0, 1.0])])
    assert not opt.step([np.array([1.0, np.inf, 1.0, 1.0])], [np.ones(4)])
    assert np.all(p == 1.0) and opt.skipped_steps == 2 and opt.step_count == 0
    with pytest.raises(ValueError):                       # still validated when skipping
        opt.step([np.ones(3)], [np.array([np.nan, 1.0, 1.0, 1.0])])
    assert opt.step([np.ones(4)], [np.ones(4)]) and opt.step_count == 1


@pytest.mark.parametrize("via", ["state_dict", "pickle", "deepcopy"])
def test_state_resume(via):
    ps = make([(6,), (2, 3)], np.float32, 0)
    opt = lrfast.DiagonalNewton(ps, lr=0.5, weight_decay=0.01)
    for k in range(3):
        opt.step(make([(6,), (2, 3)], np.float32, k), make([(6,), (2, 3)], np.float32, 9 + k))
    sd = opt.state_dict()
    assert sd["optimizer"] == "DiagonalNewton" and sd["state"][0] == {"step": 3}
    if via == "state_dict":
        ps2 = [p.copy() for p in ps]
        opt2 = lrfast.DiagonalNewton(ps2, lr=0.5, weight_decay=0.01)
        opt2.load_state_dict(sd)
    else:
        opt2 = pickle.loads(pickle.dumps(opt)) if via == "pickle" else copy.deepcopy(opt)
        ps2 = opt2.params
    for k in range(3, 5):
        g, h = make([(6,), (2, 3)], np.float32, k), make([(6,), (2, 3)], np.float32, 9 + k)
        opt.step(g, h)
        opt2.step(g, h)
    assert all(bits_equal(a, b) for a, b in zip(ps, ps2)) and opt2.step_count == 5


def test_lazy_export():
    assert lrfast.DiagonalNewton.__module__ == "lrfast.newton"


def test_estimates_are_laid_out_like_fortran_params():
    # hutchinson_diag and secant_diag feed DiagonalNewton, which takes hess_diag
    # in its param's layout: an F-contiguous param gets an F-contiguous estimate
    ps = make([(4, 6), (5,)], np.float64, 1, order="F")
    gs = make([(4, 6), (5,)], np.float64, 2, order="F")
    pps = [p * 0.5 for p in ps]
    pgs = [g * 0.25 for g in gs]
    ests = [hutchinson_diag(lambda v: [2.0 * x for x in v], ps, rng=0),
            secant_diag(ps, gs, pps, pgs),
            secant_diag(ps, gs, pps, pgs, prev=[np.ones(p.shape) for p in ps])]
    for hs in ests:
        for h, p in zip(hs, ps):
            assert h.flags.f_contiguous and h.dtype == p.dtype
    ts = [p.copy(order="K") for p in ps]
    opt = lrfast.DiagonalNewton(ps, damping=0.01)
    hs = ests[1]
    assert opt.step(gs, hs)
    for t, g, h in zip(ts, gs, hs):
        twin_step(t, g, h, damping=0.01)
    assert all(bits_equal(p, t) for p, t in zip(ps, ts))
