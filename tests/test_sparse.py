"""Row-sparse grads (lrfast.RowSparse): SparseAdam, and SGD / Adagrad on their
sparse path. Kernels equal the numpy twins (lrfast._reference.sparse_*) bit
for bit, for any thread count and ISA build; only touched rows change; bad
input raises before any write; state_dict resume is exact; torch's
SparseAdam / sparse SGD / sparse Adagrad are the references."""
import math
import pickle

import numpy as np
import pytest

import lrfast
from lrfast import RowSparse
from lrfast import _reference as R
from lrfast._dispatch import available_isas, load

from conftest import bits_equal

SHAPES = [(50,), (40, 7), (30, 3, 4)]
CONFIGS = [
    ("SparseAdam", dict(lr=0.01)),
    ("SparseAdam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-8,
                     maximize=True)),
]


def _grad(rng, p, k, dup=True):
    """A RowSparse grad of k entries for param p, with repeated rows."""
    n = p.shape[0]
    idx = rng.integers(0, n, size=k)
    if dup and k > 2:
        idx[1] = idx[0]                       # at least one repeat
    vals = rng.standard_normal((k,) + p.shape[1:]).astype(p.dtype)
    return RowSparse(idx, vals)


def _twin_state(name, p, hp):
    return R.init_state(name, p, **hp)


def _run(name, hp, shape, dtype, steps=12, seed=0, none_every=5):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(shape).astype(dtype)
    q = p.copy()
    opt = getattr(lrfast, name)([p], **hp)
    st = _twin_state(name, q, hp)
    t = 0
    for s in range(steps):
        if none_every and s % none_every == none_every - 1:
            opt.step([None])
            continue
        g = _grad(rng, p, max(1, shape[0] // 4))
        opt.step([g])
        t += 1
        R.SPARSE_STEPPERS[name](q, g.indices, g.values, st, step=t, **hp)
    return opt, p, q, st, t


@pytest.mark.parametrize("name,hp", CONFIGS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_equal_to_twin(name, hp, shape, dtype):
    opt, p, q, st, t = _run(name, hp, shape, dtype)
    assert bits_equal(p, q)
    for k, a in opt.state[0].items():
        if isinstance(a, np.ndarray):
            assert bits_equal(a, st[k]), k
    if name != "SGD":
        assert opt.state[0]["step"] == t


@pytest.mark.parametrize("name,hp", CONFIGS[::2])
def test_bitwise_equal_to_twin_in_parallel(name, hp, parallel_always):
    lrfast.set_num_threads(2)
    opt, p, q, st, _ = _run(name, hp, (3000, 16), np.float32, steps=4)
    assert bits_equal(p, q)


@pytest.mark.parametrize("isa", available_isas())
@pytest.mark.parametrize("op,name,hp", [(2, "SparseAdam", dict(lr=0.01)), (0, "SGD", dict(lr=0.1)),
                                        (1, "Adagrad", dict(lr=0.1))])
def test_each_isa_build_equals_twin(isa, op, name, hp):
    K = load(isa)
    from lrfast.optim._sparse import coalesce_plan
    assert K.SPARSE_OPS[{"SGD": "sgd", "Adagrad": "adagrad", "SparseAdam": "adam"}[name]] == op
    rng = np.random.default_rng(3)
    p = rng.standard_normal((64, 5))
    q = p.copy()
    st = _twin_state(name, q, hp)
    s0 = np.zeros_like(p) if name != "SGD" else None
    s1 = np.zeros_like(p) if name == "SparseAdam" else None
    for t in range(1, 4):
        g = _grad(rng, p, 20)
        order, rows, starts = coalesce_plan(g.indices)
        if name == "SparseAdam":
            sc = [1.0, 1 - 0.9, 1 - 0.999, 1e-8,
                  -(0.01 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t))]
        elif name == "SGD":
            sc = [1.0, -0.1]
        else:
            sc = [1.0, 1e-10, -0.1]
        K.sparse_rows(op, p, s0, s1, np.ascontiguousarray(g.values), order, rows, starts, sc)
        R.SPARSE_STEPPERS[name](q, g.indices, g.values, st, step=t, **hp)
    assert bits_equal(p, q)


@pytest.mark.parametrize("name,hp", CONFIGS)
def test_only_touched_rows_change(name, hp):
    rng = np.random.default_rng(1)
    p = rng.standard_normal((20, 3))
    opt = getattr(lrfast, name)([p], **hp)
    before = p.copy()
    states = {k: a.copy() for k, a in opt.state.get(0, {}).items() if isinstance(a, np.ndarray)}
    g = RowSparse(np.array([3, 7, 3]), rng.standard_normal((3, 3)))
    opt.step([g])
    untouched = np.setdiff1d(np.arange(20), [3, 7])
    assert bits_equal(p[untouched], before[untouched])
    assert not np.array_equal(p[[3, 7]], before[[3, 7]])
    for k, a in opt.state[0].items():
        if isinstance(a, np.ndarray):
            ref = states.get(k, np.full_like(a, hp.get("initial_accumulator_value", 0.0)))
            assert bits_equal(a[untouched], ref[untouched]), k


def test_sgd_sparse_equals_dense_sgd_on_the_dense_grad():
    # an independent check: p + (-lr)*g == p - lr*g exactly, and untouched rows get g = 0
    rng = np.random.default_rng(2)
    p1 = rng.standard_normal((30, 4))
    p2 = p1.copy()
    a, b = lrfast.SGD([p1], lr=0.1), lrfast.SGD([p2], lr=0.1)
    for _ in range(5):
        g = _grad(rng, p1, 10, dup=False)
        g = RowSparse(np.unique(g.indices), g.values[:len(np.unique(g.indices))])
        a.step([g])
        b.step([g.to_dense(p2.shape)])
    assert bits_equal(p1, p2)


def test_duplicates_are_summed_as_one_row():
    p1 = np.ones((4, 2))
    p2 = p1.copy()
    a, b = lrfast.SparseAdam([p1]), lrfast.SparseAdam([p2])
    v = np.array([[1.0, 2.0], [3.0, -1.0]])
    a.step([RowSparse([2, 2], v)])
    b.step([RowSparse([2], v[:1] + v[1:])])
    assert bits_equal(p1, p2)
    assert bits_equal(a.state[0]["exp_avg"], b.state[0]["exp_avg"])


def test_empty_grad_counts_a_step_and_writes_nothing():
    p = np.ones((5, 2))
    opt = lrfast.SparseAdam([p])
    opt.step([RowSparse(np.zeros(0, np.int64), np.zeros((0, 2)))])
    assert bits_equal(p, np.ones((5, 2)))
    assert opt.state[0]["step"] == 1           # torch counts it
    assert not opt.state[0]["exp_avg"].any()


def test_mixed_dense_and_sparse_grads_in_one_step():
    rng = np.random.default_rng(4)
    ps = [rng.standard_normal((10, 3)), rng.standard_normal(6)]
    qs = [a.copy() for a in ps]
    opt = lrfast.Adagrad(ps, lr=0.1)
    st = [R.init_state("Adagrad", a) for a in qs]
    for t in range(1, 6):
        g0 = _grad(rng, ps[0], 4)
        g1 = rng.standard_normal(6)
        opt.step([g0, g1])
        R.sparse_adagrad(qs[0], g0.indices, g0.values, st[0], lr=0.1, step=t)
        R.adagrad(qs[1], g1, st[1], lr=0.1, step=t)
    assert bits_equal(ps[0], qs[0]) and bits_equal(ps[1], qs[1])
    assert opt.state[0]["step"] == opt.state[1]["step"] == 5


def test_param_groups_and_lr_schedule():
    rng = np.random.default_rng(5)
    ps = [rng.standard_normal((8, 2)), rng.standard_normal((6, 2))]
    qs = [a.copy() for a in ps]
    sched = lrfast.schedules.StepDecay(0.05, drop=0.5, every=2)
    opt = lrfast.SparseAdam([{"params": [ps[0]], "lr": sched}, {"params": [ps[1]], "lr": 0.01}])
    st = [R.init_state("SparseAdam", a) for a in qs]
    for t in range(1, 7):
        gs = [_grad(rng, a, 3) for a in ps]
        lr0 = sched(t - 1)
        opt.step(gs)
        R.sparse_adam(qs[0], gs[0].indices, gs[0].values, st[0], lr=lr0, step=t)
        R.sparse_adam(qs[1], gs[1].indices, gs[1].values, st[1], lr=0.01, step=t)
    assert bits_equal(ps[0], qs[0]) and bits_equal(ps[1], qs[1])


@pytest.mark.parametrize("name,hp", CONFIGS[::2])
def test_state_dict_resume_is_exact(name, hp):
    rng = np.random.default_rng(6)
    p = rng.standard_normal((12, 3))
    opt = getattr(lrfast, name)([p], **hp)
    for _ in range(4):
        opt.step([_grad(rng, p, 5)])
    sd = opt.state_dict()
    if name == "SparseAdam":
        assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    p2 = p.copy()
    opt2 = getattr(lrfast, name)([p2], **hp)
    opt2.load_state_dict(pickle.loads(pickle.dumps(sd)))
    for _ in range(4):
        g = _grad(rng, p, 5)
        opt.step([g])
        opt2.step([g])
    assert bits_equal(p, p2)


def test_skip_nonfinite_skips_the_whole_step():
    p = np.ones((5, 2))
    q = np.ones(3)
    opt = lrfast.SGD([p, q], lr=0.1, skip_nonfinite=True)
    assert opt.step([RowSparse([1], np.array([[np.nan, 1.0]])), np.ones(3)]) is False
    assert opt.skipped_steps == 1 and bits_equal(p, np.ones((5, 2))) and bits_equal(q, np.ones(3))
    assert opt.step([RowSparse([1], np.ones((1, 2))), np.array([np.inf, 0, 0])]) is False
    assert opt.skipped_steps == 2 and bits_equal(p, np.ones((5, 2)))
    assert opt.step([RowSparse([1], np.ones((1, 2))), np.ones(3)]) is True


# ---------------------------------------------------------------- errors
def _bad_cases(p):
    return [
        (RowSparse([5], np.ones((1, 2))), ValueError, "out of range"),
        (RowSparse([-1], np.ones((1, 2))), ValueError, "negative"),
        (RowSparse([1], np.ones((1, 3))), ValueError, "shape"),
        (RowSparse([1], np.ones((1, 2), np.float32)), TypeError, "dtype"),
    ]


@pytest.mark.parametrize("name", ["SparseAdam", "SGD", "Adagrad"])
@pytest.mark.parametrize("case", range(4))
def test_bad_rowsparse_raises_before_any_write(name, case):
    p0, p1 = np.ones((5, 2)), np.ones((5, 2))
    opt = getattr(lrfast, name)([p0, p1])
    good = RowSparse([0, 1], np.ones((2, 2)))
    opt.step([good, good])
    sd = opt.state_dict()
    b0, b1 = p0.copy(), p1.copy()
    g, exc, match = _bad_cases(p1)[case]
    with pytest.raises(exc, match=match):
        opt.step([good, g])
    assert bits_equal(p0, b0) and bits_equal(p1, b1)
    after = opt.state_dict()
    assert after["step_count"] == sd["step_count"] == 1
    for i in sd["state"]:
        for k, v in sd["state"][i].items():
            assert bits_equal(v, after["state"][i][k]) if isinstance(v, np.ndarray) \
                else v == after["state"][i][k]


def test_rowsparse_constructor_errors():
    with pytest.raises(TypeError, match="integers"):
        RowSparse(np.array([1.0]), np.ones((1, 2)))
    with pytest.raises(TypeError, match="integers"):
        RowSparse(np.array([True]), np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"shape \(k,\)"):
        RowSparse(np.zeros((1, 1), int), np.ones((1, 2)))
    with pytest.raises(ValueError, match="k = 2"):
        RowSparse([0, 1], np.ones((3, 2)))
    with pytest.raises(TypeError, match="ndarray"):
        RowSparse([0], [[1.0, 2.0]])


def test_options_that_touch_every_row_are_refused():
    p = np.ones((5, 2))
    g = RowSparse([1], np.ones((1, 2)))
    for opt, match in [(lrfast.SGD([p], lr=0.1, momentum=0.9), "momentum"),
                       (lrfast.SGD([p], lr=0.1, weight_decay=0.1), "weight decay"),
                       (lrfast.Adagrad([p], weight_decay=0.1), "weight decay")]:
        with pytest.raises(ValueError, match=match):
            opt.step([g])
        assert bits_equal(p, np.ones((5, 2)))
    with pytest.raises(TypeError, match="does not take RowSparse"):
        lrfast.Adam([p]).step([g])
    with pytest.raises(TypeError, match="RowSparse grads only"):
        lrfast.SparseAdam([p]).step([np.ones((5, 2))])
    for what in ("max_grad_norm", "clip_norm", "clip_value"):
        with pytest.raises(ValueError, match=what):
            lrfast.SparseAdam([p], **{what: 1.0}).step([g])
    with pytest.raises(ValueError, match="0-d"):
        lrfast.SparseAdam([np.ones(())]).step([RowSparse([0], np.ones(1))])
    with pytest.raises(ValueError, match="C-contiguous"):
        lrfast.SparseAdam([np.ones((4, 3), order="F")]).step([RowSparse([0], np.ones((1, 3)))])
    assert bits_equal(p, np.ones((5, 2)))


# ------------------------------------------------------------ torch parity
def _torch_run(name, hp, dtype, steps=60, seed=7):
    """Contracting problem (0.5*||p - c||^2 on a random half of the rows each
    step, one row's grad split in two duplicates), far from the optimum."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    n, d = 40, 6
    c = rng.standard_normal((n, d))
    p = (c + 10.0 * rng.standard_normal((n, d))).astype(dtype)
    tp = torch.tensor(p.copy(), requires_grad=True)
    topt = getattr(torch.optim, name)([tp], **hp)
    opt = getattr(lrfast, name)([p], **hp)
    start = float(np.linalg.norm(p - c))
    for _ in range(steps):
        rows = rng.choice(n, n // 2, replace=False)
        vals = (p[rows] - c[rows].astype(dtype)).astype(dtype)
        idx = np.concatenate([rows, rows[:1]])
        vals = np.concatenate([vals, vals[:1] * dtype(0.5)])
        vals[0] = vals[0] * dtype(0.5)
        opt.step([RowSparse(idx, vals)])
        tp.grad = torch.sparse_coo_tensor(torch.tensor(idx[None]), torch.tensor(vals), (n, d),
                                          check_invariants=True)
        topt.step()
    ref = tp.detach().numpy()
    return float(np.max(np.abs(p - ref)) / np.max(np.abs(ref))), start, p, c


TORCH_CASES = [
    ("SparseAdam", dict(lr=0.5)),
    ("SparseAdam", dict(lr=0.5, betas=(0.8, 0.99), eps=1e-6)),
    ("SGD", dict(lr=0.1)),
    ("Adagrad", dict(lr=2.0, lr_decay=0.001, initial_accumulator_value=0.1)),
]


@pytest.mark.parametrize("name,hp", TORCH_CASES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_torch_parity(name, hp, dtype, tol):
    err, start, p, c = _torch_run(name, hp, dtype)
    assert err <= tol, err
    # contracting: the run moved far toward the optimum
    assert np.linalg.norm(p - c) < 0.5 * start


def test_torch_sparse_adam_maximize():
    torch = pytest.importorskip("torch")
    p = np.linspace(-1, 1, 12).reshape(4, 3)
    tp = torch.tensor(p.copy(), requires_grad=True)
    topt = torch.optim.SparseAdam([tp], lr=0.1, maximize=True)
    opt = lrfast.SparseAdam([p], lr=0.1, maximize=True)
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = rng.integers(0, 4, 3)
        vals = rng.standard_normal((3, 3))
        opt.step([RowSparse(idx, vals)])
        tp.grad = torch.sparse_coo_tensor(torch.tensor(idx[None]), torch.tensor(vals), (4, 3),
                                          check_invariants=True)
        topt.step()
    ref = tp.detach().numpy()
    assert np.max(np.abs(p - ref)) / np.max(np.abs(ref)) <= 1e-10


def test_torch_state_dict_round_trip():
    torch = pytest.importorskip("torch")
    p = np.ones((4, 2))
    opt = lrfast.SparseAdam([p], lr=0.1)
    opt.step([RowSparse([1], np.ones((1, 2)))])
    t = lrfast.to_torch_state_dict(opt.state_dict())
    assert type(t["state"][0]["step"]) is int           # torch's SparseAdam keeps an int
    t["state"] = {i: {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                      for k, v in e.items()} for i, e in t["state"].items()}
    tp = torch.tensor(p.copy(), requires_grad=True)
    topt = torch.optim.SparseAdam([tp], lr=0.1)
    topt.load_state_dict(t)
    g = RowSparse([1, 2], np.full((2, 2), 0.5))
    tp.grad = torch.sparse_coo_tensor(torch.tensor(g.indices[None]), torch.tensor(g.values),
                                      (4, 2), check_invariants=True)
    topt.step()
    opt.step([g])
    assert np.max(np.abs(tp.detach().numpy() - p)) <= 1e-15
    tsd = topt.state_dict()
    tsd["state"] = {i: {k: v.numpy() if hasattr(v, "numpy") else v for k, v in e.items()}
                    for i, e in tsd["state"].items()}
    back = lrfast.SparseAdam([p.copy()], lr=0.1)
    back.load_state_dict(lrfast.from_torch_state_dict(tsd, "SparseAdam"))
    assert back.state[0]["step"] == 2
    assert bits_equal(back.state[0]["exp_avg"], opt.state[0]["exp_avg"])


def test_coalesce_plan_sorted_and_unsorted_agree():
    from lrfast.optim._sparse import coalesce_plan
    for idx in (np.array([0, 3, 7, 9]), np.array([7, 3, 7, 0, 3, 3]), np.array([5]),
                np.zeros(0, np.int64), np.array([2, 2])):
        order, rows, starts = coalesce_plan(idx)
        assert list(rows) == sorted(set(idx.tolist()))
        assert starts[0] == 0 and starts[-1] == len(idx) and len(starts) == len(rows) + 1
        for r, lo, hi in zip(rows, starts[:-1], starts[1:]):
            assert (idx[order[lo:hi]] == r).all()
            assert list(order[lo:hi]) == sorted(order[lo:hi])      # stable: index order


@pytest.mark.parametrize("name", ["SparseAdam", "SGD", "Adagrad"])
def test_values_overlapping_a_param_refused(name):
    # values that are a view of the param's rows were read after those rows were
    # updated (a silently wrong step); refused before any write, as a dense grad
    # that overlaps its param
    p = np.arange(1.0, 9.0).reshape(4, 2)
    other = np.arange(1.0, 9.0).reshape(4, 2)
    opt = getattr(lrfast, name)([p, other], lr=0.1)
    opt.step([RowSparse([0], np.ones((1, 2))), RowSparse([0], np.ones((1, 2)))])
    p0, o0, st0 = p.copy(), other.copy(), pickle.loads(pickle.dumps(opt.state))
    for bad in ([RowSparse([1, 0], p[0:2]), None],
                [RowSparse([1, 0], np.ones((2, 2))), RowSparse([2], p[3:4])]):
        with pytest.raises(ValueError, match="overlap"):
            opt.step(bad)
        assert bits_equal(p, p0) and bits_equal(other, o0)
        for i, e in st0.items():
            for k, a in e.items():
                if isinstance(a, np.ndarray):
                    assert bits_equal(opt.state[i][k], a), k
    assert opt.step([RowSparse([1, 0], p[0:2].copy()), None])


@pytest.mark.parametrize("kw,dtype", [(dict(state_dtype="bfloat16"), np.float32),
                                      ({}, np.float16), (dict(master_weights=True), np.float16)])
def test_unsupported_sparse_param_refused_before_dense_step(kw, dtype):
    # the kernel refused these after the dense grads had been stepped: a dense
    # param and its state changed, its step count did not
    a, b = np.ones((4, 2), dtype), np.ones((4, 2), dtype)
    opt = lrfast.Adagrad([a, b], lr=0.1, **kw)
    with pytest.raises(TypeError, match="RowSparse"):
        opt.step([np.ones((4, 2), dtype), RowSparse([0], np.ones((1, 2), dtype))])
    assert bits_equal(a, np.ones((4, 2), dtype))
    assert opt.state_dict()["state"] == {} and opt.step_count == 0


def test_skip_nonfinite_still_validates_dense_grads():
    # a non-finite RowSparse grad skipped the step before the dense grads were
    # validated: a wrong-shaped dense grad was counted as a skipped step
    a, b = np.ones((3, 3)), np.ones((4, 2))
    opt = lrfast.SGD([a, b], lr=0.1, skip_nonfinite=True)
    nan = RowSparse([0], np.full((1, 2), np.nan))
    with pytest.raises(ValueError, match="shape"):
        opt.step([np.ones((2, 2)), nan])
    assert opt.skipped_steps == 0
    assert opt.step([np.ones((3, 3)), nan]) is False and opt.skipped_steps == 1
    assert opt.step([np.ones((3, 3)), RowSparse([1], np.ones((1, 2)))])
    assert bits_equal(a, np.full((3, 3), 0.9)) and b[1, 0] == 0.9 and b[0, 0] == 1.0
