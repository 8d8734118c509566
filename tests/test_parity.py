"""Every kernel equals its plain-numpy twin (lrfast/_reference.py) bit for bit:
over dtypes x options x sizes at chunk edges x thread counts, with param
groups, None grads and scheduled hyperparameters."""
import numpy as np
import pytest

import lrfast
from lrfast import _reference as R

from _cases import CASES, case_id
from conftest import bits_equal

PART = 4096  # the engine's minimum part size (elements): chunk edges sit here


class Twin:
    """Runs the numpy twins with lrfast's semantics: per-param step counts,
    None grads skip a param, hyperparameters (floats or callables) evaluated
    at n = number of completed steps."""

    def __init__(self, name, groups):
        self.name = name
        self.groups = [(list(ps), dict(hp)) for ps, hp in groups]
        self.states = [[R.init_state(name, p, **hp) for p in ps] for ps, hp in self.groups]
        self.steps = [[0] * len(ps) for ps, _ in self.groups]
        self.n = 0

    @staticmethod
    def _eval(hp, n):
        out = {}
        for k, v in hp.items():
            if k == "betas":
                out[k] = tuple(b(n) if callable(b) else b for b in v)
            elif callable(v):
                out[k] = v(n)
            else:
                out[k] = v
        return out

    def step(self, grads, grad_scale=1.0):
        it = iter(grads)
        for gi, (ps, hp) in enumerate(self.groups):
            h = self._eval(hp, self.n)
            for j, p in enumerate(ps):
                g = next(it)
                if g is None:
                    continue
                self.steps[gi][j] += 1
                R.STEPPERS[self.name](p, g, self.states[gi][j], step=self.steps[gi][j],
                                      grad_scale=grad_scale, **h)
        self.n += 1


def make(shapes, dtype, seed=0, order="C"):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s), dtype=dtype, order=order) for s in shapes]


def run_both(name, hp, shapes, dtype, steps=6, none_at=(), groups=None, seed=0, order="C"):
    """Step lrfast and the twin on copies of the same params and grads."""
    a = make(shapes, dtype, seed, order)
    b = [x.copy(order="K") for x in a]
    if groups is None:
        groups = [(range(len(shapes)), hp)]
    opt = getattr(lrfast, name)([{"params": [a[i] for i in idx], **ghp} for idx, ghp in groups])
    twin = Twin(name, [([b[i] for i in idx], {**_full_defaults(name), **ghp})
                       for idx, ghp in groups])
    order_idx = [i for idx, _ in groups for i in idx]
    rng = np.random.default_rng(seed + 1)
    for k in range(steps):
        gs = [np.asarray(rng.standard_normal(shapes[i]), dtype=dtype, order=order)
              for i in order_idx]
        gs = [None if (k, j) in none_at else g for j, g in enumerate(gs)]
        keep = [None if g is None else g.copy(order="K") for g in gs]
        assert opt.step(gs)
        twin.step(gs)
        for g, kk in zip(gs, keep):  # grads are never modified
            assert g is None or bits_equal(g, kk)
    return [a[i] for i in order_idx], [b[i] for i in order_idx], opt, twin


def _full_defaults(name):
    d = dict(getattr(lrfast, name).spec.defaults)
    if name == "AdamW":
        d.pop("weight_decay")
        d["weight_decay"] = 1e-2
    return d


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_twin_bitwise_small(case, dtype):
    name, hp = case
    a, b, _, _ = run_both(name, hp, [(3, 5), (7,), (1,), (0,), (2, 3, 4)], dtype, steps=7)
    for x, y in zip(a, b):
        assert bits_equal(x, y)


@pytest.mark.parametrize("case", CASES[::2], ids=case_id)
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_twin_bitwise_chunk_edges_threads(case, threads, parallel_always):
    name, hp = case
    sizes = [(0,), (1,), (PART - 1,), (PART,), (PART + 1,), (3 * PART + 17,)]
    with lrfast.threads(threads):
        a, b, _, _ = run_both(name, hp, sizes, np.float32, steps=3)
    for x, y in zip(a, b):
        assert bits_equal(x, y)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "NAdam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_tensor_any_thread_count_identical(name, dtype, parallel_always):
    hp = dict(lr=0.01, momentum=0.9) if name in ("SGD", "RMSprop") else dict(lr=0.01)
    results = []
    for threads in (1, 2, 4):
        with lrfast.threads(threads):
            a, b, _, _ = run_both(name, hp, [(1_000_003,)], dtype, steps=2, seed=3)
        assert bits_equal(a[0], b[0])
        results.append(a[0])
    assert bits_equal(results[0], results[1]) and bits_equal(results[0], results[2])


@pytest.mark.parametrize("case", CASES[::3], ids=case_id)
def test_fortran_order(case):
    name, hp = case
    a, b, _, _ = run_both(name, hp, [(5, 7), (3, 4)], np.float64, order="F")
    for x, y in zip(a, b):
        assert x.flags.f_contiguous and bits_equal(x, y)


@pytest.mark.parametrize("case", CASES[::2], ids=case_id)
def test_none_grads_skip_params(case):
    name, hp = case
    none_at = {(0, 1), (1, 1), (2, 0), (4, 2), (4, 0)}
    a, b, opt, twin = run_both(name, hp, [(4, 3), (5,), (6,)], np.float64, steps=6,
                               none_at=none_at)
    for x, y in zip(a, b):
        assert bits_equal(x, y)
    if name != "SGD":
        assert [opt.state[i]["step"] for i in range(3)] == twin.steps[0]
    assert opt.step_count == 6


def test_none_grad_first_step_leaves_param_and_state_fresh():
    p = [np.ones(3), np.ones(2)]
    opt = lrfast.Adam(p, lr=0.1)
    opt.step([np.ones(3), None])
    assert bits_equal(p[1], np.ones(2))
    assert 1 not in opt.state and opt.state[0]["step"] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_param_groups_and_mixed_dtypes(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    rng = np.random.default_rng(0)
    a = [rng.standard_normal(5).astype(dtype), rng.standard_normal(4).astype(other),
         rng.standard_normal((2, 3)).astype(dtype)]
    b = [x.copy() for x in a]
    opt = lrfast.Adam([{"params": [a[0], a[1]], "lr": 0.1, "betas": (0.8, 0.9)},
                       {"params": [a[2]], "weight_decay": 0.5, "amsgrad": True}], lr=0.01)
    twin = Twin("Adam", [([b[0], b[1]], {**_full_defaults("Adam"), "lr": 0.1,
                                         "betas": (0.8, 0.9)}),
                         ([b[2]], {**_full_defaults("Adam"), "lr": 0.01, "weight_decay": 0.5,
                                   "amsgrad": True})])
    assert opt.lr == [0.1, 0.01]
    for _ in range(5):
        gs = [rng.standard_normal(x.shape).astype(x.dtype) for x in a]
        opt.step(gs)
        twin.step(gs)
    for x, y in zip(a, b):
        assert bits_equal(x, y)
    assert opt.state[1]["exp_avg"].dtype == other


@pytest.mark.parametrize("name", ["SGD", "Adam", "NAdam", "RMSprop"])
def test_scheduled_hyperparameters(name):
    lr = lambda n: 0.1 * 0.9 ** n  # noqa: E731
    hp = {"lr": lr, "weight_decay": lambda n: 0.01 * (n % 3)}
    if name in ("SGD", "RMSprop"):
        hp["momentum"] = lambda n: 0.0 if n < 2 else 0.9   # buffer starts at step 2
    if name in ("Adam", "NAdam"):
        hp["betas"] = (lambda n: 0.5 + 0.04 * n, 0.99)
    a, b, opt, _ = run_both(name, hp, [(6,), (2, 2)], np.float64, steps=8)
    for x, y in zip(a, b):
        assert bits_equal(x, y)
    assert opt.lr == pytest.approx(lr(8))
    assert opt.hyperparams[0]["weight_decay"] == pytest.approx(0.01 * (8 % 3))


def test_assigning_param_group_lr_takes_effect():
    a = [np.ones(4)]
    opt = lrfast.SGD(a, lr=0.1)
    opt.step([np.ones(4)])
    opt.param_groups[0]["lr"] = 0.5
    opt.step([np.ones(4)])
    np.testing.assert_array_equal(a[0], np.full(4, 1 - 0.1 - 0.5))
    assert opt.lr == 0.5


def test_add_param_group():
    rng = np.random.default_rng(0)
    a = [rng.standard_normal(3)]
    b = [a[0].copy()]
    opt = lrfast.SGD(a, lr=0.1, momentum=0.9)
    twin = Twin("SGD", [(b, {**_full_defaults("SGD"), "lr": 0.1, "momentum": 0.9})])
    g = rng.standard_normal(3)
    opt.step([g])
    twin.step([g])
    new = rng.standard_normal(2)
    opt.add_param_group({"params": [new], "lr": 0.01})
    assert len(opt.param_groups) == 2 and opt.lr == [0.1, 0.01]
    newb = new.copy()
    # as torch: missing keys come from the constructor's arguments (momentum=0.9)
    twin.groups.append(([newb], {**_full_defaults("SGD"), "lr": 0.01, "momentum": 0.9}))
    twin.states.append([R.init_state("SGD", newb)])
    twin.steps.append([0])
    for _ in range(3):
        gs = [rng.standard_normal(3), rng.standard_normal(2)]
        opt.step(gs)
        twin.step(gs)
    assert bits_equal(a[0], b[0]) and bits_equal(new, newb)


def test_many_small_tensors_one_engine_call():
    shapes = [(int(s),) for s in np.random.default_rng(5).integers(100, 10_000, size=200)]
    a, b, opt, _ = run_both("Adam", dict(lr=1e-3), shapes, np.float32, steps=3)
    for x, y in zip(a, b):
        assert bits_equal(x, y)
    eng = opt._engine
    tasks = eng.tasks()
    covered = {}
    for part in tasks:
        for t, start, n in part:
            covered.setdefault(t, []).append((start, n))
    # every element of every tensor is covered exactly once, parts are balanced
    for t, spans in covered.items():
        spans.sort()
        pos = 0
        for start, n in spans:
            assert start == pos
            pos += n
        assert pos == shapes[t][0]
    sizes = [sum(n for _, _, n in part) for part in tasks]
    assert max(sizes[:-1]) == min(sizes[:-1])  # all but the last part are equal


def test_functional_layer_matches_twin():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        p = rng.standard_normal(1000).astype(dtype)
        q = p.copy()
        m, v, vm = (np.zeros_like(p) for _ in range(3))
        st = R.init_state("Adam", q)
        for t in range(1, 6):
            g = rng.standard_normal(1000).astype(dtype)
            lrfast.kernels.adam_step(p, g, m, v, lr=0.01, beta1=0.8, beta2=0.99, eps=1e-8,
                                     weight_decay=0.1, step=t, amsgrad=True, max_exp_avg_sq=vm,
                                     decoupled=True)
            R.adam(q, g, st, lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1,
                   amsgrad=True, decoupled=True, step=t)
        assert bits_equal(p, q) and bits_equal(m, st["exp_avg"])

        p = rng.standard_normal(50).astype(dtype)
        q = p.copy()
        buf = np.zeros_like(p)
        st = R.init_state("SGD", q)
        for t in range(3):
            g = rng.standard_normal(50).astype(dtype)
            lrfast.kernels.sgd_step(p, g, buf, lr=0.1, momentum=0.9, nesterov=True,
                                    first_step=(t == 0))
            R.sgd(q, g, st, lr=0.1, momentum=0.9, nesterov=True)
        assert bits_equal(p, q)

        p = rng.standard_normal(50).astype(dtype)
        q = p.copy()
        m, v = np.zeros_like(p), np.zeros_like(p)
        st = R.init_state("NAdam", q)
        mp = 1.0
        for t in range(1, 4):
            g = rng.standard_normal(50).astype(dtype)
            mp = lrfast.kernels.nadam_step(p, g, m, v, lr=0.01, step=t, mu_product=mp)
            R.nadam(q, g, st, lr=0.01, step=t)
        assert bits_equal(p, q) and mp == st["mu_product"]


def test_functional_layer_validates_before_writing():
    p = np.ones(4, np.float32)
    m, v = np.zeros(4, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="shape"):
        lrfast.kernels.adam_step(p, np.ones(4, np.float32), m, v, lr=0.1, step=1)
    with pytest.raises(ValueError, match="step"):
        lrfast.kernels.adam_step(p, np.ones(4, np.float32), m, np.zeros(4, np.float32),
                                 lr=0.1, step=0)
    assert bits_equal(p, np.ones(4, np.float32)) and not m.any()
