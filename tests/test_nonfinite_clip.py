"""Non-finite gradients and global-norm clipping (issue 7, SPEC.md "Reductions").

- ``skip_nonfinite=True``: a step whose grads hold NaN/inf writes nothing,
  advances neither ``step_count`` nor any per-param step, and is counted in
  ``skipped_steps``; skipping a step equals never having been given it.
- The default propagates NaN as torch does.
- ``max_grad_norm=M`` equals torch's ``clip_grad_norm_`` + optimizer, and the
  numpy twin with ``grad_scale=clip_coef(opt.last_grad_norm, M)`` bit for bit;
  grads are never modified.
- The norm equals ``math.fsum`` to 1e-12 relative and has the same bits for
  1, 2 and 4 threads (fixed blocks, fixed combine order).
- ``lrfast.clip_grad_norm`` matches ``torch.nn.utils.clip_grad_norm_``.
"""
import math

import numpy as np
import pytest

import lrfast
from lrfast import _reference as R
from lrfast.optim import KINDS, TABLE

from _snap import assert_same, snapshot
from conftest import bits_equal

from _cases import NAMES, rich_case

HP = {name: rich_case(name) for name in NAMES}
TORCH_NAMES = [n for n in NAMES if "torch" in lrfast.optim.TABLE[n].refs]   # the others: optax
SHAPES = [(7, 5), (13,), (1,), (0,), (2, 3, 4)]
BIG_SHAPES = [(3 * 4096 + 5,), (4096,), (1,), (0,), (20000,)]   # many reduction blocks


def full_hp(name):
    return {**getattr(lrfast, name).spec.defaults, **HP[name]}


def make(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def grad_stream(shapes, dtype, n, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    return [[(scale * rng.standard_normal(s)).astype(dtype) for s in shapes] for _ in range(n)]


class Twin:
    """The numpy twins, one group, per-param step counts, optional grad_scale."""

    def __init__(self, name, params, hp):
        self.name, self.params, self.hp = name, params, hp
        self.states = [R.init_state(name, p, **hp) for p in params]
        self.steps = [0] * len(params)

    def step(self, grads, grad_scale=1.0):
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:
                continue
            self.steps[i] += 1
            R.STEPPERS[self.name](p, g, self.states[i], step=self.steps[i],
                                  grad_scale=grad_scale, **self.hp)


def _poison(g, where, value):
    g = g.copy()
    g.reshape(-1)[where] = value
    return g


# ---------------------------------------------------------------------------
# skip_nonfinite
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_skip_nonfinite_writes_nothing_and_equals_never_given(name, dtype, bad):
    params = make(SHAPES, dtype)
    ref = [p.copy() for p in params]
    opt = getattr(lrfast, name)(params, skip_nonfinite=True, **HP[name])
    twin = getattr(lrfast, name)(ref, **HP[name])          # never sees the bad steps
    stream = grad_stream(SHAPES, dtype, 8)
    for k, gs in enumerate(stream):
        if k in (0, 3, 4):          # the very first step, and two in a row
            bad_gs = list(gs)
            j = {0: 4, 3: 0, 4: 2}[k]
            bad_gs[j] = _poison(gs[j], -1, bad)
            if k == 4:
                bad_gs[1] = None    # a None grad elsewhere changes nothing
            keep = [None if g is None else g.copy() for g in bad_gs]
            before = snapshot(opt)
            assert opt.step(bad_gs) is False
            after = snapshot(opt)
            # only the counter and the reported norm may change
            assert after.pop("skipped_steps") == before.pop("skipped_steps") + 1
            after.pop("last_grad_norm"), before.pop("last_grad_norm")
            after.pop("state_dict"), before.pop("state_dict")
            assert_same(before, after)
            for g, kk in zip(bad_gs, keep):
                assert g is None or bits_equal(g, kk)
            assert not math.isfinite(opt.last_grad_norm)
        assert opt.step(gs) is True
        twin.step(gs)
    assert opt.skipped_steps == 3 and opt.step_count == twin.step_count == 8
    for a, b in zip(params, ref):
        assert bits_equal(a, b)
    sd, td = opt.state_dict(), twin.state_dict()
    assert sd["skipped_steps"] == 3 and sd["step_count"] == 8
    for i in td["state"]:
        for k, v in td["state"][i].items():
            if isinstance(v, np.ndarray):
                assert bits_equal(sd["state"][i][k], v)
            else:
                assert sd["state"][i][k] == v       # per-param steps were not advanced


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop"])
def test_skip_nonfinite_parallel_path_is_atomic(name, threads, parallel_always):
    """A NaN in the last block of the last tensor: no thread writes anything."""
    params = make(BIG_SHAPES, np.float32)
    opt = getattr(lrfast, name)(params, skip_nonfinite=True, max_grad_norm=1.0, **HP[name])
    stream = grad_stream(BIG_SHAPES, np.float32, 3)
    with lrfast.threads(threads):
        opt.step(stream[0])
        bad = list(stream[1])
        bad[-1] = _poison(bad[-1], -1, np.nan)
        before = snapshot(opt)
        assert opt.step(bad) is False
        after = snapshot(opt)
    for k in ("skipped_steps", "last_grad_norm", "state_dict"):
        before.pop(k), after.pop(k)
    assert_same(before, after)
    assert opt.skipped_steps == 1 and opt.step_count == 1


def test_skip_nonfinite_with_none_grads_and_all_finite():
    p = make(SHAPES, np.float64)
    opt = lrfast.Adam(p, skip_nonfinite=True)
    gs = grad_stream(SHAPES, np.float64, 1)[0]
    assert opt.step([None] * len(p)) is True      # nothing to check, nothing to skip
    assert opt.step(gs) is True and opt.skipped_steps == 0
    assert math.isfinite(opt.last_grad_norm)
    gs[2] = None
    gs[0] = _poison(gs[0], 3, np.inf)
    assert opt.step(gs) is False and opt.skipped_steps == 1


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("name", NAMES)
def test_default_propagates_nan_like_the_twin(name):
    """skip_nonfinite=False (the default): the NaN reaches the params exactly
    where the numpy twin puts it, bit for bit."""
    params = make(SHAPES, np.float64)
    ref = [p.copy() for p in params]
    opt = getattr(lrfast, name)(params, **HP[name])
    twin = Twin(name, ref, full_hp(name))
    for k, gs in enumerate(grad_stream(SHAPES, np.float64, 6)):
        if k == 2:
            gs = list(gs)
            gs[0] = _poison(gs[0], 4, np.nan)
            gs[4] = _poison(gs[4], 0, np.inf)
        assert opt.step(gs) is True
        twin.step(gs)
    assert opt.skipped_steps == 0
    # Rprop moves by sign(g), and torch.sign(NaN) is 0: a NaN grad leaves the param
    assert np.isnan(params[0].reshape(-1)[4]) != (name == "Rprop")
    per_tensor = bool(KINDS[TABLE[name].kind].sums)
    for a, b in zip(params, ref):
        if per_tensor:
            # a NaN norm makes the tensor's scalar NaN too; where two NaNs meet, which
            # one's sign survives is the compiler's (IEEE leaves it open): same NaNs,
            # the same bits elsewhere
            assert np.array_equal(np.isnan(a), np.isnan(b))
            assert bits_equal(np.where(np.isnan(a), 0, a), np.where(np.isnan(b), 0, b))
        else:
            assert bits_equal(a, b)


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_default_propagates_nan_like_torch(name):
    torch = pytest.importorskip("torch")
    params = make(SHAPES, np.float64)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)     # ASGD's eta is a tensor of the default dtype
    try:
        theirs = [torch.tensor(p.copy()) for p in params]
        opt = getattr(lrfast, name)(params, **HP[name])
        topt = getattr(torch.optim, name)(theirs, foreach=False, **HP[name])
        for k, gs in enumerate(grad_stream(SHAPES, np.float64, 6)):
            if k == 2:
                gs = list(gs)
                gs[0] = _poison(gs[0], 4, np.nan)
                gs[4] = _poison(gs[4], 0, np.inf)
            opt.step(gs)
            for t, g in zip(theirs, gs):
                t.grad = torch.tensor(g.copy())
            topt.step()
    finally:
        torch.set_default_dtype(prev)
    for a, t in zip(params, theirs):
        b = t.numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.array_equal(np.isinf(a), np.isinf(b))
        ok = np.isfinite(b)
        if ok.any():
            assert np.max(np.abs(a[ok] - b[ok])) <= 1e-10 * max(np.max(np.abs(b[ok])), 1e-300)


# ---------------------------------------------------------------------------
# max_grad_norm
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_max_grad_norm_equals_twin_with_clip_coef(name, dtype):
    M = 2.0
    params = make(SHAPES, dtype)
    ref = [p.copy() for p in params]
    opt = getattr(lrfast, name)(params, max_grad_norm=M, **HP[name])
    twin = Twin(name, ref, full_hp(name))
    clipped = 0
    for k, gs in enumerate(grad_stream(SHAPES, dtype, 10)):
        gs = [g * dtype(3.0 if k % 3 else 0.05) for g in gs]   # clipped, and not
        if k == 5:
            gs[1] = None
        keep = [None if g is None else g.copy() for g in gs]
        assert opt.step(gs)
        norm = opt.last_grad_norm
        exact = R.global_norm(gs)
        assert abs(norm - exact) <= 1e-12 * exact
        coef = R.clip_coef(norm, M)
        clipped += coef < 1.0
        twin.step(gs, grad_scale=coef)
        for g, kk in zip(gs, keep):
            assert g is None or bits_equal(g, kk)       # clipping scales a temporary
    assert 0 < clipped < 10
    for a, b in zip(params, ref):
        assert bits_equal(a, b)


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_max_grad_norm_matches_torch(name):
    torch = pytest.importorskip("torch")
    M = 1.5
    params = make(SHAPES, np.float64)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        theirs = [torch.tensor(p.copy(), requires_grad=True) for p in params]
        opt = getattr(lrfast, name)(params, max_grad_norm=M, **HP[name])
        topt = getattr(torch.optim, name)(theirs, foreach=False, **HP[name])
        rng = np.random.default_rng(3)
        target = make(SHAPES, np.float64, seed=9)
        for k in range(50):
            # a contracting problem; every third step small enough not to clip
            s = 4.0 if k % 3 else 0.01
            gs = [s * (p - t) + 0.01 * rng.standard_normal(p.shape)
                  for p, t in zip(params, target)]
            opt.step(gs)
            for t, g in zip(theirs, gs):
                t.grad = torch.tensor(g.copy())
            tnorm = torch.nn.utils.clip_grad_norm_(theirs, M, foreach=False)
            assert abs(float(tnorm) - opt.last_grad_norm) <= 1e-12 * float(tnorm)
            topt.step()
    finally:
        torch.set_default_dtype(prev)
    for a, t in zip(params, theirs):
        b = t.detach().numpy()
        if b.size:
            assert np.max(np.abs(a - b)) <= 1e-10 * max(np.max(np.abs(b)), 1e-300)


def test_max_grad_norm_nan_without_skip_propagates_like_torch():
    torch = pytest.importorskip("torch")
    p = np.ones(4)
    t = torch.tensor(p.copy(), requires_grad=True)
    g = np.array([1.0, np.nan, 1.0, 1.0])
    lrfast.SGD([p], lr=0.1, max_grad_norm=1.0).step([g])
    topt = torch.optim.SGD([t], lr=0.1)
    t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_([t], 1.0)
    topt.step()
    assert np.array_equal(np.isnan(p), np.isnan(t.detach().numpy()))


def test_max_grad_norm_with_skip_reports_nonfinite_norm():
    p = make(SHAPES, np.float32)
    opt = lrfast.SGD(p, lr=0.1, max_grad_norm=1.0, skip_nonfinite=True)
    gs = grad_stream(SHAPES, np.float32, 1)[0]
    gs[0] = _poison(gs[0], 0, np.inf)
    assert opt.step(gs) is False and opt.last_grad_norm == math.inf
    gs[0] = _poison(gs[0], 1, np.nan)
    assert opt.step(gs) is False and math.isnan(opt.last_grad_norm)
    assert opt.skipped_steps == 2 and opt.step_count == 0


def test_last_grad_norm_is_nan_when_not_computed():
    p = make(SHAPES, np.float64)
    opt = lrfast.Adam(p)
    opt.step(grad_stream(SHAPES, np.float64, 1)[0])
    assert math.isnan(opt.last_grad_norm)


# ---------------------------------------------------------------------------
# the norm: accuracy and thread-count independence
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norm_accurate_and_identical_for_any_thread_count(dtype, parallel_always):
    rng = np.random.default_rng(4)
    # magnitudes spread over many decades so summation order matters
    gs = [(rng.standard_normal(s) * 10.0 ** rng.uniform(-6, 6, s)).astype(dtype)
          for s in BIG_SHAPES]
    exact = R.global_norm(gs)
    norms, opt_norms, results = [], [], []
    for n in (1, 2, 4):
        with lrfast.threads(n):
            norm, finite = lrfast.grad_norm(gs)
            assert finite
            norms.append(norm)
            p = make(BIG_SHAPES, dtype)
            opt = lrfast.Adam(p, max_grad_norm=1.0)
            opt.step(gs)
            opt_norms.append(opt.last_grad_norm)
            results.append(p)
    assert abs(norms[0] - exact) <= 1e-12 * exact
    assert len({np.float64(x).tobytes() for x in norms + opt_norms}) == 1
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert bits_equal(a, b)


def test_grad_norm_flags_nonfinite_and_skips_none():
    gs = [np.ones(5), None, np.full(3, 2.0, np.float32)]
    norm, finite = lrfast.grad_norm(gs)
    assert finite and norm == math.sqrt(5 + 12)
    gs[0][2] = np.inf
    assert lrfast.grad_norm(gs)[1] is False
    assert lrfast.grad_norm([])[0] == 0.0


# ---------------------------------------------------------------------------
# lrfast.clip_grad_norm vs torch.nn.utils.clip_grad_norm_
# ---------------------------------------------------------------------------
def _torch_clip(torch, arrays, max_norm):
    ps = []
    for a in arrays:
        p = torch.zeros(a.shape, dtype=torch.from_numpy(a).dtype, requires_grad=True)
        p.grad = torch.from_numpy(a.copy())
        ps.append(p)
    n = torch.nn.utils.clip_grad_norm_(ps, max_norm, foreach=False)
    return float(n), [p.grad.numpy() for p in ps]


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_clip_grad_norm_matches_torch(dtype, rtol, scale):
    torch = pytest.importorskip("torch")
    gs = [g * dtype(scale) for g in grad_stream(SHAPES, dtype, 1, seed=5)[0]]
    tn, tg = _torch_clip(torch, gs, 1.0)
    n = lrfast.clip_grad_norm(gs, 1.0)
    assert abs(n - tn) <= rtol * tn
    for a, b in zip(gs, tg):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=0)
        if scale == 0.01:
            assert bits_equal(a, b)      # not clipped: untouched, as torch's * 1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=repr)
def test_clip_grad_norm_nonfinite_matches_torch(bad):
    torch = pytest.importorskip("torch")
    gs = grad_stream(SHAPES, np.float64, 1, seed=6)[0]
    gs[0] = _poison(gs[0], 2, bad)
    tn, tg = _torch_clip(torch, gs, 1.0)
    n = lrfast.clip_grad_norm(gs, 1.0)
    assert (math.isnan(n) and math.isnan(tn)) or n == tn
    for a, b in zip(gs, tg):
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.array_equal(a[~np.isnan(a)], b[~np.isnan(b)])
    with pytest.raises(RuntimeError, match="non-finite"):
        lrfast.clip_grad_norm(gs, 1.0, error_if_nonfinite=True)


def test_clip_grad_norm_is_in_place_and_returns_norm():
    g = np.array([3.0, 4.0])
    assert lrfast.clip_grad_norm([g], 1.0) == 5.0
    assert bits_equal(g, np.array([3.0, 4.0]) * (1.0 / (5.0 + 1e-6)))
    g2 = np.array([3.0, 4.0])
    assert lrfast.clip_grad_norm(g2, 10.0) == 5.0          # a single array works too
    assert bits_equal(g2, np.array([3.0, 4.0]))


def test_norm_hook_turns_the_local_norm_into_the_global_one():
    """A wrapper that shards the state gets the engine's local sum of squares,
    returns a global one, and clipping and skipping use it (nothing else)."""
    g = np.full(4, 3.0)
    seen = []

    def hook(sumsq, finite):
        seen.append((sumsq, finite))
        return sumsq + 64.0, finite            # another rank holds 8^2 more

    p = np.zeros(4)
    opt = lrfast.SGD([p], lr=1.0, max_grad_norm=1.0)
    assert opt._step([g], norm_hook=hook)
    assert seen == [(36.0, True)]
    assert opt.last_grad_norm == 10.0
    np.testing.assert_allclose(p, -3.0 * 1.0 / (10.0 + 1e-6))
    opt2 = lrfast.SGD([np.zeros(4)], lr=1.0, skip_nonfinite=True)
    assert not opt2._step([g], norm_hook=lambda s, f: (s, False))   # another rank saw a NaN
    assert opt2.skipped_steps == 1 and opt2.step_count == 0
