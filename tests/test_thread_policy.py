"""The thread policy under hostile use (issue 14 items 3, 17, 18 and "Busy
machines"; issue 15 "runtime honesty").

- ``set_num_threads`` / ``threads`` / ``set_parallel_threshold`` take any int
  (``numbers.Integral``, not bool) in range, refuse floats and bools with
  TypeError and out-of-range values (negative, 2**40, 100000) with ValueError,
  never OverflowError.
- ``threads(n)`` is thread-local: two threads using it at once see their own
  value and leave no stale value behind.
- The adaptive default is tested through its decision logic with synthetic
  timings (``_policy_simulate``), never with timed assertions; and a real run
  that goes through both of its modes gives the same bits as one thread.
"""
import threading

import numpy as np
import pytest

import lrfast
from lrfast._dispatch import kernels as K

from conftest import bits_equal

OPENMP = lrfast.config()["openmp"]
JOIN = 60.0


@pytest.fixture
def forget_shared():
    K._policy_set_shared(None)
    yield
    K._policy_set_shared(None)


# ---------------------------------------------------------------------------
# items 3 and 17: argument checks
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [lrfast.set_num_threads, K.set_num_threads])
@pytest.mark.parametrize("n", [2**40, 2**70, 100000, getattr(K, "MAX_THREADS", 1024) + 1, -1,
                               -(2**70)])
def test_set_num_threads_out_of_range_is_value_error(fn, n):
    before = lrfast.get_num_threads()
    with pytest.raises(ValueError, match="set_num_threads"):
        fn(n)
    assert lrfast.get_num_threads() == before


@pytest.mark.parametrize("n", [1.5, 2.0, "2", None, True, False, np.bool_(True), np.float64(2)])
def test_set_num_threads_wrong_type_is_type_error(n):
    with pytest.raises(TypeError, match="set_num_threads"):
        lrfast.set_num_threads(n)


@pytest.mark.parametrize("n", [np.int64(2), np.int32(1), np.uint8(2), 2])
def test_set_num_threads_accepts_any_integral(n):
    lrfast.set_num_threads(n)
    assert lrfast.get_num_threads() == (int(n) if OPENMP else 1)
    assert type(K._user_num_threads()) is int


def test_max_threads_is_bounded():
    import os
    assert 4 <= K.MAX_THREADS <= 1024 and K.MAX_THREADS <= 4 * (os.cpu_count() or 1)
    lrfast.set_num_threads(K.MAX_THREADS)                 # the limit itself is accepted


@pytest.mark.parametrize("n, exc", [(1.5, TypeError), ("1", TypeError), (True, TypeError),
                                    (None, TypeError), (-1, ValueError), (2**40, ValueError),
                                    (100000, ValueError)])
def test_threads_context_refuses_bad_n(n, exc):
    before = (lrfast.get_num_threads(), K._thread_override())
    with pytest.raises(exc, match="threads"):
        with lrfast.threads(n):
            pytest.fail("entered the block")           # pragma: no cover
    assert (lrfast.get_num_threads(), K._thread_override()) == before


@pytest.mark.parametrize("n, exc", [(1.5, TypeError), ("5", TypeError), (True, TypeError),
                                    (None, TypeError), (2**70, ValueError), (-1, ValueError),
                                    (2**63, ValueError)])
def test_set_parallel_threshold_refuses_bad_n(n, exc):
    before = lrfast.get_parallel_threshold()
    with pytest.raises(exc, match="set_parallel_threshold"):
        lrfast.set_parallel_threshold(n)
    assert lrfast.get_parallel_threshold() == before


def test_set_parallel_threshold_accepts_any_integral():
    before = lrfast.get_parallel_threshold()
    try:
        lrfast.set_parallel_threshold(np.int64(1000))
        assert lrfast.get_parallel_threshold() == 1000
        lrfast.set_parallel_threshold(2**62)            # "never parallel"
        assert lrfast.get_parallel_threshold() == 2**62
    finally:
        lrfast.set_parallel_threshold(before)


def _adam_run(steps=12, shapes=((3000,), (5, 7), (1,)), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(s).astype(dtype) for s in shapes]
    opt = lrfast.Adam(ps, lr=0.01, max_grad_norm=1.0)
    for _ in range(steps):
        opt.step([rng.standard_normal(s).astype(dtype) for s in shapes])
    return ps, opt


def test_more_threads_than_parts_is_exact(parallel_always):
    """The thread count passed to prange is capped at the number of parts (a
    one-element param is one part): the most threads allowed give the serial
    result."""
    with lrfast.threads(1):
        ref, _ = _adam_run()
    lrfast.set_num_threads(K.MAX_THREADS)
    got, opt = _adam_run()                  # 3036 elements: one part (parts hold >= 4096)
    assert all(bits_equal(a, b) for a, b in zip(ref, got))
    norm = lrfast.grad_norm([np.ones(5, np.float32)])
    assert norm[0] == np.sqrt(np.float64(5.0))


# ---------------------------------------------------------------------------
# item 18: threads() is thread-local
# ---------------------------------------------------------------------------
def test_threads_from_two_threads_leave_no_stale_value():
    """Enter in A, enter in B, exit in A, exit in B: the interleaving that left
    a stale process-wide value. Each thread sees its own value throughout."""
    base = lrfast.get_num_threads()
    mode = lrfast._threads.thread_mode()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen, errors = {}, []

    def run_a():
        try:
            with lrfast.threads(1):
                a_in.set()
                assert b_in.wait(JOIN)
                seen["a"] = lrfast.get_num_threads()
            seen["a_after"] = lrfast.get_num_threads()
            a_out.set()
        except BaseException as e:   # pragma: no cover
            errors.append(e)
            a_out.set()

    def run_b():
        try:
            assert a_in.wait(JOIN)
            with lrfast.threads(3):
                b_in.set()
                assert a_out.wait(JOIN)
                seen["b"] = lrfast.get_num_threads()
                seen["b_mode"] = lrfast._threads.thread_mode()
            seen["b_after"] = lrfast.get_num_threads()
        except BaseException as e:   # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(JOIN)
    assert not errors, errors
    assert seen["a"] == 1
    assert seen["b"] == (3 if OPENMP else 1)
    if OPENMP:
        assert seen["b_mode"] == "pinned 3 (threads() in this thread)"
    assert seen["a_after"] == seen["b_after"] == base
    assert lrfast.get_num_threads() == base and lrfast._threads.thread_mode() == mode
    assert K._user_num_threads() == 0 and K._thread_override() == 0


def test_threads_nests_and_overrides_set_num_threads():
    lrfast.set_num_threads(2)
    with lrfast.threads(1):
        assert lrfast.get_num_threads() == 1
        with lrfast.threads(3):
            assert lrfast.get_num_threads() == (3 if OPENMP else 1)
        assert lrfast.get_num_threads() == 1
    assert lrfast.get_num_threads() == (2 if OPENMP else 1)
    assert K._thread_override() == 0


@pytest.mark.skipif(not OPENMP, reason="the policy runs only in an OpenMP build")
def test_threads_override_reaches_steps_in_its_own_thread_only(parallel_always):
    """A thread inside ``threads(1)`` steps pinned (its engine's adaptive
    policy never runs); another thread at the same time steps adaptively."""
    pa, oa = _adam_run(steps=0)
    pb, ob = _adam_run(steps=0, seed=1)
    rng = np.random.default_rng(3)
    gs = [[rng.standard_normal(p.shape).astype(p.dtype) for p in pa] for _ in range(20)]
    go, errors = threading.Barrier(2), []

    def pinned():
        try:
            with lrfast.threads(1):
                go.wait(JOIN)
                for g in gs:
                    oa.step(g)
        except BaseException as e:   # pragma: no cover
            errors.append(e)

    def adaptive():
        try:
            go.wait(JOIN)
            for g in gs:
                ob.step(g)
        except BaseException as e:   # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=pinned), threading.Thread(target=adaptive)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(JOIN)
    assert not errors, errors
    assert oa._engine._policy_state()["step"]["steps"] == (0, 0)
    assert sum(ob._engine._policy_state()["step"]["steps"]) == 20


# ---------------------------------------------------------------------------
# show_config says which mode is in force
# ---------------------------------------------------------------------------
def test_show_config_reports_thread_mode(capsys):
    if not OPENMP:
        assert lrfast.config()["thread_mode"] == "serial build: 1 thread"
        return
    assert lrfast.config()["thread_mode"].startswith("adaptive (up to ")
    lrfast.set_num_threads(3)
    assert lrfast.config()["thread_mode"] == "pinned 3 (set_num_threads)"
    with lrfast.threads(1):
        lrfast.show_config()
        assert "pinned 1 (threads() in this thread)" in capsys.readouterr().out
    lrfast.set_num_threads(0)
    assert lrfast.config()["thread_mode"].startswith("adaptive")


# ---------------------------------------------------------------------------
# issue 15: a serial build says so (CI runs this file on the serial build)
# ---------------------------------------------------------------------------
SERIAL_CHILD = """
import warnings, lrfast
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    lrfast.set_num_threads(2)
    assert lrfast.get_num_threads() == 1, lrfast.get_num_threads()
    lrfast.set_num_threads(4)
    with lrfast.threads(3):
        assert lrfast.get_num_threads() == 1
    lrfast.set_num_threads(1)
msgs = [(str(x.message), x.filename) for x in w if issubclass(x.category, RuntimeWarning)]
assert len(msgs) == 1 and "serial build" in msgs[0][0], msgs
assert msgs[0][1] == "<string>", msgs            # points at the caller's line
assert "serial" in lrfast.config()["thread_mode"]
print("ok")
"""


@pytest.mark.skipif(OPENMP, reason="serial build only")
def test_serial_build_warns_once_and_reports_one_thread():
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(lrfast.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", SERIAL_CHILD], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------------------
# the adaptive default: decision logic with synthetic timings
# ---------------------------------------------------------------------------
def simulate(cost, steps, base=2):
    nts, state = K._policy_simulate(base, cost, steps)
    assert set(nts) <= {1, base}
    return nts, state


def test_policy_keeps_threads_when_they_win():
    nts, state = simulate(lambda k, nt: 0.55 if nt > 1 else 1.0, 2000)
    assert nts[:3] == [2, 2, 1]                 # warm-up, one of each
    assert state["mode"] == "threads"
    ones = nts[3:].count(1)
    assert 1 <= ones <= 2000 // 64              # only probes run serially
    assert state["probe_interval"] == 256       # confirmed probes back off


def test_policy_falls_back_to_one_thread_when_threads_lose():
    nts, state = simulate(lambda k, nt: 6.0 if nt > 1 else 1.0, 2000)
    assert state["mode"] == "one thread"
    par = nts[3:].count(2)
    assert 1 <= par <= 2000 // 64
    total = sum(6.0 if n > 1 else 1.0 for n in nts)
    assert total <= 1.2 * 2000                  # the busy-machine target, in simulation


def test_policy_recovers_both_ways():
    def cost(k, nt):
        busy = 500 <= k < 1500
        return (6.0 if busy else 0.55) if nt > 1 else 1.0

    nts, state = simulate(cost, 2500)
    assert nts[300:500].count(2) >= 196           # quiet: threads, but for probes
    # falls back within a few steps of the machine becoming busy
    assert nts[510:1500].count(2) <= 1000 // 64 + 1
    # recovers within two maximal probe intervals of it becoming quiet again
    assert nts[1500 + 2 * 256:].count(1) <= (2500 - 2012) // 64 + 1
    assert state["mode"] == "threads"


def test_policy_resists_noise():
    """Heavy-tailed parallel timings on a busy machine (1 in 10 steps lucky):
    the choice stays on the cheaper mode on average."""
    rng = np.random.default_rng(0)
    draws = rng.random(5000)
    par_cost = np.where(draws < 0.1, 0.4, rng.lognormal(np.log(5.0), 0.8, 5000))
    nts, state = simulate(lambda k, nt: par_cost[k] if nt > 1 else 1.0, 5000)
    total = sum(par_cost[k] if n > 1 else 1.0 for k, n in enumerate(nts))
    assert total <= 1.2 * 5000
    assert state["mode"] == "one thread"


def test_policy_probes_rarely_when_threads_lose_badly():
    """A parallel step on a busy machine can cost hundreds of serial ones (a
    barrier waiting out scheduler slices): probes then wait, and cost about 5%."""
    nts, state = simulate(lambda k, nt: 500.0 if nt > 1 else 1.0, 20000)
    total = sum(500.0 if n > 1 else 1.0 for n in nts)
    assert total <= 1.1 * 20000 + 500.0             # (+ the warm-up step)
    assert 1 <= nts[3:].count(2) <= 20000 // (20 * 499) + 1
    assert state["mode"] == "one thread"


@pytest.mark.parametrize("p_lucky, bad", [(0.1, 5.0), (0.2, 200.0), (0.5, 200.0), (0.3, 30.0)])
def test_policy_lucky_parallel_samples_do_not_cost_much(p_lucky, bad):
    """Parallel steps that are usually far slower but sometimes lucky (a busy
    machine whose other processes come and go): the total stays within 10% of
    always-serial."""
    rng = np.random.default_rng(1)
    n = 20000
    par = np.where(rng.random(n) < p_lucky, 0.5, bad * rng.lognormal(0.0, 0.5, n))
    nts, _ = simulate(lambda k, nt: par[k] if nt > 1 else 1.0, n)
    total = sum(par[k] if t > 1 else 1.0 for k, t in enumerate(nts))
    assert total <= 1.1 * n


@pytest.mark.parametrize("seed_mode, ratio, first", [("one thread", 8.0, 1), ("threads", 0.5, 2)])
def test_policy_new_engine_starts_in_the_inherited_mode(seed_mode, ratio, first):
    """An engine created after others measured the machine starts in their
    mode, without a warm-up step in the other one; its other-mode estimate is
    its own first sample times the inherited ratio."""
    busy = seed_mode == "one thread"
    nts, state = K._policy_simulate(2, lambda k, nt: (6.0 if busy else 0.5) if nt > 1 else 1.0,
                                    300, seed_mode=seed_mode, seed_ratio=ratio)
    assert nts[:63] == [first] * 63
    assert state["mode"] == seed_mode
    assert state["samples"][0] >= 1 and state["samples"][1] >= 1


def test_policy_inherited_mode_is_corrected_by_measurement():
    # told "threads lose" while they win: the first probe finds out
    nts, state = K._policy_simulate(2, lambda k, nt: 0.5 if nt > 1 else 1.0, 400,
                                    seed_mode="one thread", seed_ratio=1.5)
    assert nts[0] == 1 and state["mode"] == "threads"
    assert nts[100:].count(2) >= 290


@pytest.mark.skipif(not OPENMP, reason="the policy runs only in an OpenMP build")
@pytest.mark.parametrize("mode, ratio, expect", [(None, 1.0, (0, 1)), ("one thread", 8.0, (1, 0)),
                                                 ("threads", 0.5, (0, 1))])
def test_new_engines_inherit_the_process_mode(parallel_always, forget_shared, mode, ratio,
                                              expect):
    """grad_norm, clip_grad_norm and the functional kernels build an engine per
    call: each starts in the mode the process last measured (no parallel
    warm-up on a busy machine)."""
    K._policy_set_shared(mode, ratio)
    ps, opt = _adam_run(steps=1)
    assert opt._engine._policy_state()["step"]["steps"] == expect
    shared = K._policy_shared()
    assert shared is None if mode is None else shared is not None


@pytest.mark.skipif(not OPENMP, reason="the policy runs only in an OpenMP build")
def test_passes_without_a_policy_follow_the_process_mode(forget_shared):
    """L-BFGS's vector passes keep no policy of their own: they use the mode
    the process last measured, and any pin."""
    big = 10**7
    top = lrfast.get_num_threads()
    assert K._policy_hint(big) == top                 # nothing measured yet
    assert K._policy_hint(10) == 1                    # under the threshold
    K._policy_set_shared("one thread", 8.0)
    assert K._policy_hint(big) == 1
    with lrfast.threads(2):
        assert K._policy_hint(big) == 2               # a pin wins
    K._policy_set_shared("threads", 0.5)
    assert K._policy_hint(big) == top


def test_policy_ignores_the_warm_up_step():
    # the first (parallel) step is very slow (thread start, page faults): ignored
    nts, state = simulate(lambda k, nt: 100.0 if k == 0 else (0.5 if nt > 1 else 1.0), 100)
    assert state["cost_per_element"][1] == 0.5 / 1e6
    assert nts[3:].count(2) >= 95


def test_policy_equal_costs_do_not_flip_flop():
    nts, state = simulate(lambda k, nt: 1.0, 1000)
    changes = sum(1 for a, b in zip(nts[3:], nts[4:]) if a != b)
    assert changes <= 2 * (1000 // 64) + 2


@pytest.mark.skipif(not OPENMP, reason="the policy runs only in an OpenMP build")
def test_adaptive_steps_equal_one_thread_bitwise_in_both_modes(parallel_always, forget_shared):
    """200 adaptive steps of a fresh engine go through both modes (its warm-up
    step runs threads, its first measured step one thread, whatever the
    timings) and give the same bits as one thread."""
    with lrfast.threads(1):
        ref, ropt = _adam_run(steps=200, shapes=((50_000,), (301,), (7, 9)))
    got, opt = _adam_run(steps=200, shapes=((50_000,), (301,), (7, 9)))
    st = opt._engine._policy_state()["step"]
    assert st["steps"][0] >= 1 and st["steps"][1] >= 1 and sum(st["steps"]) == 200
    assert all(bits_equal(a, b) for a, b in zip(ref, got))
    assert ropt._engine._policy_state()["step"]["steps"] == (0, 0)     # pinned: no policy


@pytest.mark.skipif(not OPENMP, reason="the policy runs only in an OpenMP build")
def test_grad_norm_policy_is_exact(parallel_always):
    rng = np.random.default_rng(5)
    gs = [rng.standard_normal(20_000), rng.standard_normal(33).astype(np.float32)]
    with lrfast.threads(1):
        ref = lrfast.grad_norm(gs)
    for _ in range(5):
        assert lrfast.grad_norm(gs) == ref


HUGE_OMP_CHILD = """
import numpy as np, lrfast
lrfast.set_parallel_threshold(0)
p = np.ones(300_000, np.float32); q = p.copy()
g = np.full(300_000, 0.5, np.float32)
o = lrfast.Adam([p])
for _ in range(3):
    o.step([g])
with lrfast.threads(1):
    o1 = lrfast.Adam([q])
    for _ in range(3):
        o1.step([g])
assert p.tobytes() == q.tobytes()
print("ok")
"""


@pytest.mark.skipif(not OPENMP, reason="OpenMP build only")
def test_huge_omp_num_threads_is_capped_at_the_parts():
    """OMP_NUM_THREADS=100000 (the environment's sibling of
    set_num_threads(100000)): the default passes at most one thread per part to
    OpenMP, so the step runs, and exactly."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(lrfast.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="100000",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", HUGE_OMP_CHILD], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok"), (out.returncode, out.stderr)
