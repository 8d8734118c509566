"""lrfast.LBFGS: converges on Rosenbrock (2-D, 100-D extended), a quadratic and
logistic regression on breast_cancer; follows torch.optim.LBFGS (float64, to
1e-8, first 10 iterations, same evaluations); accepted steps satisfy the
conditions their line search claims; deterministic for any thread count;
exact resume; bad input is rejected before anything changes."""
import copy
import math
import pickle

import numpy as np
import pytest

import lrfast
from lrfast._optimizer_base import OptimizerBase

from conftest import bits_equal

C1, C2 = 1e-4, 0.9
SEARCHES = ["strong_wolfe", "backtracking", None]


# ---------------------------------------------------------------------------
# test problems: fg(*params) -> (f, grad_1, ..., grad_k); x0 list; x* flat
# ---------------------------------------------------------------------------
def rosen(x):
    f = 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2
    g = np.array([-400 * x[0] * (x[1] - x[0] ** 2) - 2 * (1 - x[0]), 200 * (x[1] - x[0] ** 2)],
                 dtype=x.dtype)
    return float(f), g


def ext_rosen(x):
    """Extended Rosenbrock (Moré, Garbow & Hillstrom 1981, problem 21)."""
    a, b = x[0::2], x[1::2]
    t1, t2 = b - a * a, 1 - a
    g = np.empty_like(x)
    g[0::2] = -400 * a * t1 - 2 * t2
    g[1::2] = 200 * t1
    return float(np.sum(100 * t1 * t1 + t2 * t2)), g


def quadratic(n=50, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.logspace(0, 2, n)) @ Q.T
    A = (A + A.T) / 2
    b = rng.standard_normal(n)
    xs = np.linalg.solve(A, b)
    A32, b32 = A.astype(dtype), b.astype(dtype)

    def fg(x):
        Ax = A32 @ x
        return float(0.5 * x @ Ax - b32 @ x), Ax - b32
    return fg, xs


_LOGREG = {}


def logreg(lam=1e-2):
    """L2-regularized logistic regression on breast_cancer (standardized), params
    (W, b); the optimum from Newton's method."""
    if lam in _LOGREG:
        return _LOGREG[lam]
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = y.astype(float)
    m, k = X.shape

    def fg(w, b):
        z = X @ w + b[0]
        f = float(np.mean(np.logaddexp(0, z) - y * z) + 0.5 * lam * w @ w)
        r = (1 / (1 + np.exp(-z)) - y) / m
        return f, X.T @ r + lam * w, np.array([r.sum()])
    w, b = np.zeros(k), np.zeros(1)
    Xa = np.hstack([X, np.ones((m, 1))])
    for _ in range(30):
        p = 1 / (1 + np.exp(-(X @ w + b[0])))
        _, gw, gb = fg(w, b)
        H = (Xa.T * (p * (1 - p) / m)) @ Xa
        H[:k, :k] += lam * np.eye(k)
        s = np.linalg.solve(H, np.concatenate([gw, gb]))
        w, b = w - s[:k], b - s[k:]
    _LOGREG[lam] = fg, [np.zeros(k), np.zeros(1)], np.concatenate([w, b])
    return _LOGREG[lam]


def problem(name):
    if name == "rosen2":
        return rosen, [np.array([-1.2, 1.0])], np.ones(2)
    if name == "rosen100":
        return ext_rosen, [np.tile([-1.2, 1.0], 50)], np.ones(100)
    if name == "quadratic":
        fg, xs = quadratic()
        return fg, [np.zeros(50)], xs
    if name == "logreg":
        return logreg()
    raise ValueError(name)


PROBLEMS = ["rosen2", "rosen100", "quadratic", "logreg"]


def closure_for(fg, xs, log=None):
    def closure():
        if log is not None:
            log.append(np.concatenate([x.ravel() for x in xs]))
        out = fg(*xs)
        return out[0], list(out[1:])
    return closure


def flat(xs):
    return np.concatenate([np.asarray(x).ravel() for x in xs])


def run_torch(fg, x0, steps=1, log=None, **kw):
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(x.copy(), dtype=torch.float64, requires_grad=True) for x in x0]
    opt = torch.optim.LBFGS(ts, **kw)

    def closure():
        xs = [t.detach().numpy() for t in ts]
        if log is not None:
            log.append(flat(xs))
        out = fg(*xs)
        for t, g in zip(ts, out[1:]):
            t.grad = torch.tensor(g)
        return torch.tensor(out[0], dtype=torch.float64)
    trace = []
    for _ in range(steps):
        opt.step(closure)
        trace.append(flat([t.detach().numpy() for t in ts]))
    st = opt.state[ts[0]]
    return trace, int(st["n_iter"]), int(st["func_evals"])


# ---------------------------------------------------------------------------
# convergence (and the iterations / evaluations table next to torch's)
# ---------------------------------------------------------------------------
TOL = {"rosen2": 1e-6, "rosen100": 1e-6, "quadratic": 1e-5, "logreg": 1e-4}
CONV = dict(max_iter=500, max_eval=625, tolerance_change=1e-14)


@pytest.mark.parametrize("ls", SEARCHES)
@pytest.mark.parametrize("name", PROBLEMS)
def test_converges_to_known_optimum(name, ls):
    fg, x0, xstar = problem(name)
    xs = [x.copy() for x in x0]
    opt = lrfast.LBFGS(xs, line_search_fn=ls, **CONV)
    opt.step(closure_for(fg, xs))
    err = np.abs(flat(xs) - xstar).max() / max(1.0, np.abs(xstar).max())
    assert err < TOL[name], (name, ls, opt.n_iter, opt.func_evals, err)
    assert opt.n_iter < CONV["max_iter"] and opt.func_evals <= CONV["max_eval"] + 1


def test_convergence_table_next_to_torch(capsys):
    """Iterations / evaluations to converge, lrfast next to torch.optim.LBFGS
    (run with -s to see the table); with the strong Wolfe search and with no
    line search the counts are torch's."""
    pytest.importorskip("torch")
    rows = []
    for name in PROBLEMS:
        fg, x0, xstar = problem(name)
        for ls in ("strong_wolfe", None):
            xs = [x.copy() for x in x0]
            opt = lrfast.LBFGS(xs, line_search_fn=ls, **CONV)
            opt.step(closure_for(fg, xs))
            trace, n_it, n_ev = run_torch(fg, x0, line_search_fn=ls, **CONV)
            rows.append((name, ls, opt.n_iter, opt.func_evals, np.abs(flat(xs) - xstar).max(),
                         n_it, n_ev, np.abs(trace[-1] - xstar).max()))
    with capsys.disabled():
        print("\nproblem    line search    lrfast iters/evals (err)    torch iters/evals (err)")
        for r in rows:
            print(f"{r[0]:10s} {str(r[1]):13s} {r[2]:5d}/{r[3]:<5d} ({r[4]:.1e})       "
                  f"{r[5]:5d}/{r[6]:<5d} ({r[7]:.1e})")
    for r in rows:
        # identical up to the last few iterations, where rounding decides
        assert abs(r[2] - r[5]) <= max(2, 0.1 * r[5]) and abs(r[3] - r[6]) <= max(2, 0.1 * r[6])


# ---------------------------------------------------------------------------
# torch parity: the first 10 iterations, every evaluated point, to 1e-8
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("ls", ["strong_wolfe", None])
@pytest.mark.parametrize("name", PROBLEMS)
def test_first_10_iterations_match_torch(name, ls):
    fg, x0, _ = problem(name)
    tlog = []
    _, t_iter, t_evals = run_torch(fg, x0, log=tlog, max_iter=10, max_eval=100,
                                   line_search_fn=ls)
    xs = [x.copy() for x in x0]
    log = []
    opt = lrfast.LBFGS(xs, max_iter=10, max_eval=100, line_search_fn=ls)
    opt.step(closure_for(fg, xs, log))
    assert (opt.n_iter, opt.func_evals) == (t_iter, t_evals) == (10, len(tlog))
    assert len(log) == len(tlog)
    for a, b in zip(log, tlog):
        assert np.abs(a - b).max() <= 1e-8 * max(1.0, np.abs(b).max())


def test_ten_steps_of_one_iteration_match_torch():
    """State carried across step() calls (d, t, history, prev grad) as torch."""
    fg, x0, _ = problem("rosen100")
    kw = dict(max_iter=1, max_eval=25, history_size=4, line_search_fn="strong_wolfe")
    trace, t_iter, t_evals = run_torch(fg, x0, steps=10, **kw)
    xs = [x.copy() for x in x0]
    opt = lrfast.LBFGS(xs, **kw)
    cl = closure_for(fg, xs)
    for k in range(10):
        opt.step(cl)
        assert np.abs(flat(xs) - trace[k]).max() <= 1e-8 * max(1.0, np.abs(trace[k]).max())
    assert (opt.n_iter, opt.func_evals) == (t_iter, t_evals)


def test_float32_converges():
    fg, xs_ = quadratic(dtype=np.float32)
    for ls in SEARCHES:
        x = np.zeros(50, np.float32)
        opt = lrfast.LBFGS([x], line_search_fn=ls, max_iter=200, tolerance_grad=1e-4)
        opt.step(closure_for(fg, [x]))
        assert x.dtype == np.float32 and opt.state[0]["d"].dtype == np.float32
        assert np.abs(x - xs_).max() < 2e-3


# ---------------------------------------------------------------------------
# every accepted step satisfies what its line search claims (checked in numpy)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("ls", ["strong_wolfe", "backtracking"])
@pytest.mark.parametrize("name", ["rosen2", "rosen100", "logreg"])
def test_accepted_steps_satisfy_claimed_conditions(name, ls):
    fg, x0, _ = problem(name)
    xs = [x.copy() for x in x0]
    opt = lrfast.LBFGS(xs, max_iter=1, max_eval=30, line_search_fn=ls,
                       tolerance_change=1e-14)
    cl = closure_for(fg, xs)
    n_checked = 0
    for _ in range(25):
        xa = flat(xs)
        out = fg(*xs)
        fa, ga = out[0], flat(out[1:])
        opt.step(cl)
        if not opt.line_search_log:
            break
        (r,) = opt.line_search_log
        xb = flat(xs)
        out = fg(*xs)
        fb, gb = out[0], flat(out[1:])
        s = xb - xa
        assert r.f0 == fa and r.f == fb
        assert r.armijo and r.n_evals >= 1          # smooth problems: always found
        assert fb <= fa + C1 * float(ga @ s) + 1e-13 * abs(fa)       # Armijo
        if ls == "strong_wolfe":
            assert r.curvature
            assert abs(float(gb @ s)) <= C2 * abs(float(ga @ s)) * (1 + 1e-9)
        else:
            assert r.curvature is None
        n_checked += 1
    assert n_checked >= 10


# ---------------------------------------------------------------------------
# several params = one flat vector; threads; F order
# ---------------------------------------------------------------------------
def test_param_list_equals_one_flat_vector():
    fg, x0, _ = logreg()
    w, b = x0[0].copy(), x0[1].copy()
    z = np.concatenate([x0[0], x0[1]])
    k = w.size

    def fg_flat(z):
        f, gw, gb = fg(z[:k], z[k:])
        return f, np.concatenate([gw, gb])
    for ls in SEARCHES:
        w, b, zz = x0[0].copy(), x0[1].copy(), z.copy()
        o1 = lrfast.LBFGS([w, b], max_iter=15, line_search_fn=ls)
        o2 = lrfast.LBFGS([zz], max_iter=15, line_search_fn=ls)
        o1.step(closure_for(fg, [w, b]))
        o2.step(closure_for(fg_flat, [zz]))
        assert bits_equal(np.concatenate([w, b]), zz)          # bit for bit
        assert (o1.n_iter, o1.func_evals) == (o2.n_iter, o2.func_evals)


def test_deterministic_for_any_thread_count(parallel_always):
    n = 3 * 4096 + 6                  # several reduction blocks
    x0 = np.tile([-1.2, 1.0], n // 2)
    results = []
    for nt in (1, 2, 4):
        lrfast.set_num_threads(nt)
        x = x0.copy()
        opt = lrfast.LBFGS([x[: n // 3], x[n // 3:]], history_size=5, max_iter=12,
                           line_search_fn="strong_wolfe")

        def cl():
            f, g = ext_rosen(x)
            return f, [g[: n // 3], g[n // 3:]]
        for _ in range(2):
            opt.step(cl)
        results.append((x.copy(), opt.func_evals))
    for x, ev in results[1:]:
        assert bits_equal(x, results[0][0]) and ev == results[0][1]


def test_fortran_ordered_and_2d_params():
    fg, x0, xstar = logreg()
    W = np.asfortranarray(np.zeros((5, 6)))
    b = np.zeros(1)

    def cl():
        f, gw, gb = fg(W.ravel(order="C"), b)
        return f, [np.asfortranarray(gw.reshape(5, 6)), gb]
    opt = lrfast.LBFGS([W, b], max_iter=300, tolerance_change=1e-14,
                       line_search_fn="strong_wolfe")
    opt.step(cl)
    assert np.abs(np.concatenate([W.ravel(), b]) - xstar).max() < 1e-4
    with pytest.raises(ValueError, match="layout"):
        opt.step(lambda: (1.0, [np.ascontiguousarray(W), b]))


def test_none_grad_is_zero_as_torch():
    x, y = np.array([-1.2, 1.0]), np.array([3.0])
    opt = lrfast.LBFGS([x, y], max_iter=50, line_search_fn="strong_wolfe")
    opt.step(lambda: (rosen(x)[0], [rosen(x)[1], None]))
    assert np.abs(x - 1).max() < 1e-3 and y[0] == 3.0


def test_lr_schedule_and_fixed_step():
    x = np.array([4.0])
    opt = lrfast.LBFGS([x], lr=lambda n: 0.25 / (n + 1), max_iter=1)
    cl = lambda: (float(x @ x), [2 * x])
    assert opt.lr == 0.25
    opt.step(cl)                      # first iteration: t = min(1, 1/|g|_1) * lr
    assert x[0] == 4.0 - min(1.0, 1 / 8.0) * 0.25 * 8.0
    assert opt.lr == 0.125
    sd = opt.state_dict()
    assert sd["param_groups"][0]["lr"] == 0.125 and "schedules" in sd["param_groups"][0]


# ---------------------------------------------------------------------------
# state dict, exact resume, pickle
# ---------------------------------------------------------------------------
def make_rosen100(history_size=5, ls="strong_wolfe"):
    x = np.tile([-1.2, 1.0], 50)
    opt = lrfast.LBFGS([x], max_iter=4, history_size=history_size, line_search_fn=ls)
    return x, opt


@pytest.mark.parametrize("ls", SEARCHES)
@pytest.mark.parametrize("via", ["state_dict", "file", "pickle", "deepcopy"])
def test_exact_resume(ls, via, tmp_path):
    x, opt = make_rosen100(ls=ls)
    cl = closure_for(ext_rosen, [x])
    for _ in range(3):
        opt.step(cl)
    assert len(opt.state[0]["old_dirs"]) == 5                  # the history has wrapped
    x_ck = x.copy()
    sd = opt.state_dict()
    if via == "pickle":
        opt2 = pickle.loads(pickle.dumps(opt))
        x2 = opt2.params[0]
    elif via == "deepcopy":
        opt2 = copy.deepcopy(opt)
        x2 = opt2.params[0]
    else:
        x2 = x_ck.copy()
        opt2 = lrfast.LBFGS([x2], max_iter=4, history_size=5, line_search_fn=ls)
        if via == "file":
            lrfast.save(opt, tmp_path / "lbfgs.npz")
            lrfast.load(opt2, tmp_path / "lbfgs.npz")
        else:
            opt2.load_state_dict(sd)
    assert bits_equal(x2, x_ck) and x2 is not x
    cl2 = closure_for(ext_rosen, [x2])
    for _ in range(3):
        opt.step(cl)
        opt2.step(cl2)
        assert bits_equal(x2, x)
    assert (opt2.n_iter, opt2.func_evals, opt2.step_count) == (opt.n_iter, opt.func_evals,
                                                               opt.step_count)


def test_state_dict_schema():
    x, opt = make_rosen100()
    sd = opt.state_dict()
    assert sd["format"] == "lrfast.optim/1" and sd["optimizer"] == "LBFGS"
    assert sd["state"] == {} and sd["step_count"] == 0
    opt.step(closure_for(ext_rosen, [x]))
    sd = opt.state_dict()
    e = sd["state"][0]
    assert set(e) == {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
                      "prev_flat_grad", "prev_loss"}
    m = len(e["ro"])
    assert e["old_dirs"].shape == e["old_stps"].shape == (m, 100) and e["d"].shape == (100,)
    g = sd["param_groups"][0]
    assert g["params"] == [0] and g["history_size"] == 5 and g["max_eval"] == 5
    assert g["line_search_fn"] == "strong_wolfe" and g["lr"] == 1
    e["d"][:] = 7.0                       # a copy, not a view
    assert not np.any(opt.state[0]["d"] == 7.0)


def test_zero_state_restarts():
    x, opt = make_rosen100()
    cl = closure_for(ext_rosen, [x])
    opt.step(cl)
    opt.zero_state()
    assert opt.state == {} and opt.n_iter == 0 and opt.step_count == 0
    x2 = x.copy()
    opt2 = lrfast.LBFGS([x2], max_iter=4, history_size=5, line_search_fn="strong_wolfe")
    opt.step(cl)
    opt2.step(closure_for(ext_rosen, [x2]))
    assert bits_equal(x, x2)


# ---------------------------------------------------------------------------
# bad input: a clear error, and nothing changes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("make,err,match", [
    (lambda: lrfast.LBFGS(np.ones(3)), TypeError, "wrap it in a list"),
    (lambda: lrfast.LBFGS([]), ValueError, "empty"),
    (lambda: lrfast.LBFGS([np.ones(3), np.ones(2, np.float32)]), TypeError, "one dtype"),
    (lambda: lrfast.LBFGS([np.ones(3, np.int64)]), TypeError, "dtype"),
    (lambda: lrfast.LBFGS([np.ones(6)[::2]]), ValueError, "contiguous"),
    (lambda: lrfast.LBFGS([np.ones(3)] * 2), ValueError, "overlaps"),
    (lambda: (lambda a: lrfast.LBFGS([a[:4], a[2:]]))(np.ones(6)), ValueError, "overlaps"),
    (lambda: lrfast.LBFGS([{"params": [np.ones(2)]}, {"params": [np.ones(2)]}]), ValueError,
     "groups"),
    (lambda: lrfast.LBFGS([{"params": [np.ones(2)], "momentum": 0.9}]), ValueError, "unknown"),
    (lambda: lrfast.LBFGS([np.ones(2)], lr=-1), ValueError, r"lr must be >= 0, got -1"),
    (lambda: lrfast.LBFGS([np.ones(2)], lr=math.nan), ValueError, "finite"),
    (lambda: lrfast.LBFGS([np.ones(2)], lr="1"), TypeError, "lr"),
    (lambda: lrfast.LBFGS([np.ones(2)], max_iter=0), ValueError, "max_iter"),
    (lambda: lrfast.LBFGS([np.ones(2)], max_iter=2.5), TypeError, "max_iter"),
    (lambda: lrfast.LBFGS([np.ones(2)], max_eval=0), ValueError, "max_eval"),
    (lambda: lrfast.LBFGS([np.ones(2)], history_size=0), ValueError, "history_size"),
    (lambda: lrfast.LBFGS([np.ones(2)], tolerance_grad=-1.0), ValueError, "tolerance_grad"),
    (lambda: lrfast.LBFGS([np.ones(2)], tolerance_change=math.inf), ValueError,
     "tolerance_change"),
    (lambda: lrfast.LBFGS([np.ones(2)], line_search_fn="wolfe"), ValueError, "line_search_fn"),
])
def test_constructor_errors(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_read_only_param_rejected():
    a = np.ones(3)
    a.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        lrfast.LBFGS([a])


def snapshot(opt, xs):
    return [x.copy() for x in xs], opt.state_dict()


def same_snapshot(a, b):
    (xa, sa), (xb, sb) = a, b
    if not all(bits_equal(u, v) for u, v in zip(xa, xb)):
        return False
    ea, eb = sa["state"].get(0, {}), sb["state"].get(0, {})
    if set(ea) != set(eb) or sa["param_groups"] != sb["param_groups"]:
        return False
    for k in ea:
        u, v = ea[k], eb[k]
        if isinstance(u, np.ndarray):
            if not bits_equal(u, v):
                return False
        elif u != v:
            return False
    return sa["step_count"] == sb["step_count"]


def test_bad_closures_change_nothing():
    x = np.array([-1.2, 1.0])
    y = np.zeros((2, 2))
    opt = lrfast.LBFGS([x, y], line_search_fn="strong_wolfe", max_iter=3)

    def good():
        f, g = rosen(x)
        return f, [g, np.zeros((2, 2))]
    opt.step(good)
    before = snapshot(opt, [x, y])
    bad = [
        (lambda: rosen(x)[0], TypeError),                                  # loss only
        (lambda: (1.0, [rosen(x)[1]]), ValueError),                        # one grad missing
        (lambda: (1.0, [np.ones(3), np.zeros((2, 2))]), ValueError),       # shape
        (lambda: (1.0, [np.ones(2, np.float32), np.zeros((2, 2))]), TypeError),  # dtype
        (lambda: (1.0, [x, np.zeros((2, 2))]), ValueError),                # grad is the param
        (lambda: (1.0, [np.ones(2), np.asfortranarray(np.eye(2))[:, ::-1]]), ValueError),
        (lambda: (1.0, (np.ones(2), "g")), TypeError),
        (lambda: ("one", [np.ones(2), np.zeros((2, 2))]), TypeError),      # loss
        (lambda: (math.nan, [np.ones(2), np.zeros((2, 2))]), ValueError),  # NaN loss
        (lambda: (1.0, [np.array([1.0, math.inf]), np.zeros((2, 2))]), ValueError),  # inf grad
    ]
    for cl, err in bad:
        with pytest.raises(err):
            opt.step(cl)
        assert same_snapshot(before, snapshot(opt, [x, y])), cl
    with pytest.raises(TypeError, match="closure"):
        opt.step(None)


def test_bad_hyperparameter_assignment_changes_nothing():
    opt = lrfast.LBFGS([np.ones(2)])
    for k, v, err in [("lr", -1.0, ValueError), ("max_iter", 0, ValueError),
                      ("line_search_fn", "x", ValueError), ("params", [], ValueError),
                      ("momentum", 0.9, ValueError)]:
        with pytest.raises(err):
            opt.param_groups[0][k] = v
    assert opt.param_groups[0]["lr"] == 1 and opt.param_groups[0]["max_iter"] == 20
    opt.param_groups[0]["lr"] = 0.5
    assert opt.lr == 0.5
    with pytest.raises(ValueError, match="groups"):
        opt.add_param_group({"params": [np.ones(2)]})


def test_bad_state_dicts_change_nothing():
    x, opt = make_rosen100()
    cl = closure_for(ext_rosen, [x])
    opt.step(cl)
    good = opt.state_dict()
    before = snapshot(opt, [x])

    def edit(fn):
        sd = copy.deepcopy(good)
        fn(sd)
        return sd
    other_x, other = make_rosen100()
    other2 = lrfast.LBFGS([np.zeros(10)], max_iter=4, history_size=5)
    other2.step(lambda: (1.0, [np.ones(10)]))
    bad = [
        lrfast.SGD([np.ones(2)], lr=0.1).state_dict(),
        edit(lambda s: s.update(format="x")),
        edit(lambda s: s.update(step_count=-1)),
        edit(lambda s: s["param_groups"][0].update(history_size=1)),       # m > history_size
        edit(lambda s: s["param_groups"][0].update(lr=-1.0)),
        edit(lambda s: s["param_groups"][0].pop("max_iter")),
        edit(lambda s: s["state"][0].update(d=np.ones(99))),
        edit(lambda s: s["state"][0].update(d=np.ones(100, np.float32))),
        edit(lambda s: s["state"][0].update(ro=np.ones(1))),
        edit(lambda s: s["state"][0].update(old_dirs=np.ones((3, 100)))),
        edit(lambda s: s["state"][0].update(t=math.nan)),
        edit(lambda s: s["state"].update({1: {}})),
        other2.state_dict(),
        [],
    ]
    for sd in bad:
        with pytest.raises((ValueError, TypeError)):
            opt.load_state_dict(sd)
        assert same_snapshot(before, snapshot(opt, [x]))
    opt.load_state_dict(other.state_dict())          # a fresh state is fine
    assert opt.state == {}


def test_closure_error_mid_line_search_restores_last_iterate():
    fg = ext_rosen
    # reference: two iterations
    xr = np.tile([-1.2, 1.0], 50)
    ref = lrfast.LBFGS([xr], max_iter=2, max_eval=100, line_search_fn="strong_wolfe")
    ref_log = []
    ref.step(closure_for(fg, [xr], ref_log))
    # the same, asked for five iterations, with a closure that fails in the third
    x = np.tile([-1.2, 1.0], 50)
    opt = lrfast.LBFGS([x], max_iter=5, max_eval=100, line_search_fn="strong_wolfe")
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == len(ref_log) + 1:
            raise KeyboardInterrupt("stop")
        return fg(x)[0], [fg(x)[1]]
    with pytest.raises(KeyboardInterrupt):
        opt.step(failing)
    assert bits_equal(x, xr)                             # back at the last iterate
    a, b = opt.state_dict()["state"][0], ref.state_dict()["state"][0]
    for k in a:
        assert bits_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k]
    # and it goes on exactly as the reference does
    opt.param_groups[0]["max_iter"] = 2
    opt.step(closure_for(fg, [x]))
    ref.step(closure_for(fg, [xr]))
    assert bits_equal(x, xr)


def test_reentrant_step_rejected():
    x = np.array([1.0, 2.0])
    opt = lrfast.LBFGS([x])

    def cl():
        opt.step(lambda: (0.0, [np.zeros(2)]))
        return 1.0, [np.ones(2)]
    with pytest.raises(RuntimeError, match="while a step is running"):
        opt.step(cl)

    def cl2():
        opt.state_dict()
        return 1.0, [np.ones(2)]
    with pytest.raises(RuntimeError, match="state_dict called from the closure"):
        opt.step(cl2)
    assert opt.step_count == 0 and np.all(x == [1.0, 2.0])


def test_steps_from_two_threads_serialize():
    import threading
    xs = [np.tile([-1.2, 1.0], 50) for _ in range(2)]
    opt = lrfast.LBFGS([xs[0]], max_iter=5, line_search_fn="strong_wolfe")
    ref = lrfast.LBFGS([xs[1]], max_iter=5, line_search_fn="strong_wolfe")
    cl = closure_for(ext_rosen, [xs[0]])
    ts = [threading.Thread(target=opt.step, args=(cl,)) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for _ in range(4):
        ref.step(closure_for(ext_rosen, [xs[1]]))
    assert bits_equal(xs[0], xs[1]) and opt.step_count == 4


def test_grads_may_be_reused_buffers():
    """The closure may write its grads into the same arrays at every call."""
    x = np.tile([-1.2, 1.0], 50)
    gbuf = np.empty(100)

    def cl():
        f, g = ext_rosen(x)
        gbuf[:] = g
        return f, [gbuf]
    opt = lrfast.LBFGS([x], max_iter=500, tolerance_change=1e-14,
                       line_search_fn="strong_wolfe")
    opt.step(cl)
    assert np.abs(x - 1).max() < 1e-6


def test_lazy_exports():
    assert lrfast.LBFGS is __import__("lrfast.lbfgs", fromlist=["LBFGS"]).LBFGS
    assert lrfast.line_search.strong_wolfe is not None
    assert "LBFGS" in repr(lrfast.LBFGS([np.ones(2)]))


# ---------------------------------------------------------------------------
# the API shared with every lrfast optimizer (lrfast._optimizer_base)
# ---------------------------------------------------------------------------
def test_shared_api_views_and_repr():
    x = np.array([-1.2, 1.0])
    opt = lrfast.LBFGS([x], lr=lambda n: 0.5 / (n + 1), max_iter=3,
                       line_search_fn="backtracking")
    assert isinstance(opt, OptimizerBase)
    assert opt.lr == 0.5 and opt.hyperparams[0]["lr"] == 0.5 and opt.params[0] is x
    opt.step(lambda: rosen(x)[:1] + ([rosen(x)[1]],))
    assert opt.step_count == 1 and opt.lr == 0.25
    r = repr(opt)
    assert r.startswith("LBFGS (\n  group 0: 1 params, lr=0.25, max_iter=3,")
    assert r.endswith(f"2 elements, float64, n_iter={opt.n_iter}, "
                      f"func_evals={opt.func_evals}, step_count=1)")


def test_reentry_from_a_schedule_is_a_runtime_error():
    x = np.array([1.0, 2.0])
    holder = []

    def sched(n):
        holder[0].state_dict()            # the schedule calls the optimizer back
        return 0.1
    opt = lrfast.LBFGS([x], lr=0.1)
    holder.append(opt)
    opt.param_groups[0]["lr"] = sched
    with pytest.raises(RuntimeError, match=r"LBFGS.state_dict called from the closure, a "
                       r"schedule or a callback while LBFGS.state_dict is running"):
        opt.state_dict()
    opt.param_groups[0]["lr"] = 0.1      # the guard was released: usable again
    assert opt.state_dict()["step_count"] == 0


def test_pickle_keeps_the_line_search_log():
    x = np.tile([-1.2, 1.0], 5)
    opt = lrfast.LBFGS([x], max_iter=3, max_eval=100, line_search_fn="strong_wolfe")
    opt.step(closure_for(ext_rosen, [x]))
    opt2 = pickle.loads(pickle.dumps(opt))
    assert opt2.line_search_log == opt.line_search_log and len(opt2.line_search_log) == 3
    assert repr(opt2) == repr(opt)


def test_saved_schedule_state_that_does_not_fit_changes_nothing():
    x = np.array([4.0])
    s = lrfast.schedules.ReduceOnPlateau(0.5, patience=0)
    opt = lrfast.LBFGS([x], lr=s, max_iter=1)
    opt.step(lambda: (float(x @ x), [2 * x]))
    sd = opt.state_dict()
    assert sd["param_groups"][0]["schedules"]["lr"]["class"] == "ReduceOnPlateau"
    sd["param_groups"][0]["schedules"]["lr"]["state"] = {"nonsense": 1}
    before = snapshot(opt, [x])
    s_before = s.state_dict()
    with pytest.raises(ValueError, match="schedule lr does not fit"):
        opt.load_state_dict(sd)
    assert same_snapshot(before, snapshot(opt, [x])) and s.state_dict() == s_before
    plain = lrfast.LBFGS([x], lr=lambda n: 0.5, max_iter=1)
    good = opt.state_dict()
    with pytest.raises(ValueError, match="has state but the optimizer's lr is"):
        plain.load_state_dict(good)


@pytest.mark.parametrize("key,value", [("func_evals", 2 ** 53 + 1), ("n_iter", -1),
                                       ("n_iter", 1.5), ("t", True), ("t", "1"),
                                       ("prev_loss", 10 ** 400)])
def test_saved_scalars_are_value_errors(key, value):
    x, opt = make_rosen100()
    opt.step(closure_for(ext_rosen, [x]))
    sd = opt.state_dict()
    before = snapshot(opt, [x])
    sd["state"][0][key] = value
    with pytest.raises(ValueError, match=f"group 0, state: '{key}' must be"):
        opt.load_state_dict(sd)
    assert same_snapshot(before, snapshot(opt, [x]))


def test_fortran_param_flat_state_is_indexed_as_torch():
    # The flat vectors of the state_dict (d, prev_flat_grad, old_dirs, old_stps)
    # list each param's elements in C order (torch's view(-1)), whatever the
    # param's memory order: an F run's state matches a C run's, and resumes in a
    # C-ordered optimizer with the same values (and vice versa).
    rng = np.random.default_rng(0)
    A, D = rng.standard_normal((4, 6)), np.abs(rng.standard_normal((4, 6))) + 0.5
    x0, b0 = rng.standard_normal((4, 6)), rng.standard_normal(3)

    def make(order):
        x, b = np.array(x0, order=order), b0.copy()

        def cl():
            r = x - A
            return (float(np.sum(D * r * r) + 0.1 * np.sum(r ** 4) + b @ b),
                    [np.array(2 * D * r + 0.4 * r ** 3, order=order), 2 * b])
        return x, b, cl

    runs = {}
    for order in "CF":
        x, b, cl = make(order)
        opt = lrfast.LBFGS([x, b], max_iter=3, history_size=5)
        opt.step(cl)
        runs[order] = (x, b, cl, opt)
    ec, ef = (runs[o][3].state_dict()["state"][0] for o in "CF")
    for k in ("d", "prev_flat_grad", "old_dirs", "old_stps"):
        assert ec[k].shape == ef[k].shape
        assert np.allclose(ec[k], ef[k], rtol=1e-10, atol=1e-14), k
    for src, dst in ("FC", "CF"):
        x, b, cl = make(dst)
        x[...], b[...] = runs[src][0], runs[src][1]
        opt = lrfast.LBFGS([x, b], max_iter=3, history_size=5)
        opt.load_state_dict(runs[src][3].state_dict())
        e = opt.state_dict()["state"][0]        # the loaded state reads back as saved
        for k in ("d", "prev_flat_grad", "old_dirs", "old_stps"):
            assert np.array_equal(e[k], runs[src][3].state_dict()["state"][0][k]), k
        ref = copy.deepcopy(runs[src][3])       # the source optimizer continued
        xr, br = ref.param_groups[0]["params"]
        ref.step(lambda: (float(np.sum(D * (xr - A) ** 2) + 0.1 * np.sum((xr - A) ** 4)
                                + br @ br),
                          [np.array(2 * D * (xr - A) + 0.4 * (xr - A) ** 3, order=src),
                           2 * br]))
        opt.step(cl)
        assert np.allclose(x, xr, rtol=1e-10, atol=1e-14)
        assert np.allclose(b, br, rtol=1e-10, atol=1e-14)
