"""Threads and processes (issue 7, SPEC.md "Threads").

- Fork safety: after lrfast ran a parallel region, a child forked from the
  process (multiprocessing's default on Linux) would hang in its first OpenMP
  region with gcc's libgomp; lrfast switches such a child to serial steps. A
  forked child that steps must finish (a join timeout turns a hang into a
  failure, never a stuck suite) with the right result.
- ``set_num_threads`` is process-wide and safe from any thread.
- Two optimizers stepped from two Python threads at once equal the serial
  results (the GIL is released during a step).
- One optimizer stepped from two threads at once is serialized by its lock:
  N concurrent steps equal N sequential ones.
"""
import multiprocessing
import threading

import numpy as np
import pytest

import lrfast
from lrfast._dispatch import kernels as _K

from conftest import bits_equal

JOIN_TIMEOUT = 60.0          # a healthy child needs well under a second
SHAPES = [(300, 200), (7,), (50000,), (0,), (1,)]


def make(seed=0, dtype=np.float32, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def grads(seed, dtype=np.float32, shapes=SHAPES):
    return make(seed + 1000, dtype, shapes)


def _run_child(target, *args):
    """Fork a child running target(conn, *args); return what it sent."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(send, *args), daemon=True)
    proc.start()
    send.close()
    # read before joining: a large message blocks the child until it is read
    data = None
    if recv.poll(JOIN_TIMEOUT):
        try:
            data = recv.recv()
        except EOFError:              # the child died without sending
            pass
    proc.join(JOIN_TIMEOUT if data is not None else 1)
    if proc.is_alive():
        proc.kill()
        proc.join(5)
        pytest.fail(f"forked child still running after {JOIN_TIMEOUT} s: it hung in OpenMP")
    assert proc.exitcode == 0, f"forked child exited with {proc.exitcode}"
    assert data is not None, "forked child sent nothing"
    return data


def _child_steps(conn, opt, params, gs):
    try:
        info = {"threads": lrfast.get_num_threads()}
        for g in gs:
            opt.step(g)
        info["params"] = [p.tobytes() for p in params]
        info["step_count"] = opt.step_count
        conn.send(info)
    finally:
        conn.close()


def _child_fresh_optimizer(conn, seed):
    try:
        params = make(seed)
        opt = lrfast.Adam(params, lr=0.01, max_grad_norm=1.0)
        for k in range(3):
            opt.step(grads(k))
        conn.send([p.tobytes() for p in params])
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_forked_child_after_parallel_step_does_not_hang(name, parallel_always):
    lrfast.set_num_threads(2)
    params = make()
    opt = getattr(lrfast, name)(params, lr=0.01, max_grad_norm=10.0)
    opt.step(grads(0))                         # a parallel region in the parent
    assert _K._parallel_was_used()
    gs = [grads(k) for k in range(1, 4)]

    out = _run_child(_child_steps, opt, params, gs)
    assert out["threads"] == 1                 # the child runs serially
    assert out["step_count"] == 4

    # the same steps in the parent (any thread count gives the same bits)
    for g in gs:
        opt.step(g)
    for b, p in zip(out["params"], params):
        assert b == p.tobytes()
    assert lrfast.get_num_threads() == 2       # the parent keeps its setting


def test_forked_child_builds_and_steps_new_optimizer(parallel_always):
    lrfast.set_num_threads(2)
    warm = make(5)
    lrfast.SGD(warm, lr=0.1).step(grads(5))     # parallel region in the parent
    got = _run_child(_child_fresh_optimizer, 7)
    params = make(7)
    opt = lrfast.Adam(params, lr=0.01, max_grad_norm=1.0)
    for k in range(3):
        opt.step(grads(k))
    assert got == [p.tobytes() for p in params]


def _child_grad_norm(conn, gs):
    try:
        conn.send((lrfast.grad_norm(gs), lrfast.clip_grad_norm([g.copy() for g in gs], 1.0)))
    finally:
        conn.close()


def test_forked_child_reductions(parallel_always):
    lrfast.set_num_threads(2)
    gs = grads(3)
    expect = lrfast.grad_norm(gs)              # parallel reduction in the parent
    got = _run_child(_child_grad_norm, gs)
    assert got[0] == expect and got[1] == expect[0]


def test_set_num_threads_from_many_threads():
    errors = []
    params = make(1, shapes=[(2000,), (3,)])
    opt = lrfast.SGD(params, lr=0.001)
    g = grads(1, shapes=[(2000,), (3,)])
    barrier = threading.Barrier(6)

    def worker(k):
        try:
            barrier.wait()
            for i in range(200):
                lrfast.set_num_threads(1 + (i + k) % 3)
                n = lrfast.get_num_threads()
                assert 1 <= n <= 3
                if i % 50 == 0:
                    with lrfast.threads(2):
                        pass
        except Exception as e:        # pragma: no cover - reported below
            errors.append(e)

    def stepper():
        try:
            barrier.wait()
            for _ in range(100):
                opt.step(g)
        except Exception as e:        # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(5)]
    ts.append(threading.Thread(target=stepper))
    for t in ts:
        t.start()
    for t in ts:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in ts)
    assert not errors, errors
    lrfast.set_num_threads(3)
    assert lrfast.get_num_threads() == 3
    assert opt.step_count == 100


@pytest.mark.parametrize("threads", [1, 2])
def test_two_optimizers_two_threads_equal_serial(threads, parallel_always):
    lrfast.set_num_threads(threads)
    n_steps = 20
    gs_a = [grads(k) for k in range(n_steps)]
    gs_b = [grads(100 + k, np.float64) for k in range(n_steps)]

    def build():
        pa, pb = make(0), make(1, np.float64)
        return (pa, lrfast.Adam(pa, lr=0.01, max_grad_norm=5.0)), \
               (pb, lrfast.RMSprop(pb, lr=0.01, momentum=0.5, centered=True))

    (pa, oa), (pb, ob) = build()
    for ga, gb in zip(gs_a, gs_b):
        oa.step(ga)
        ob.step(gb)
    serial = [p.copy() for p in pa + pb]

    (pa, oa), (pb, ob) = build()
    barrier = threading.Barrier(2)
    errors = []

    def run(opt, gs):
        try:
            barrier.wait()
            for g in gs:
                opt.step(g)
        except Exception as e:        # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=run, args=(oa, gs_a)),
          threading.Thread(target=run, args=(ob, gs_b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in ts) and not errors, errors
    for a, b in zip(pa + pb, serial):
        assert bits_equal(a, b)


@pytest.mark.parametrize("name", ["Adam", "SGD", "NAdam"])
def test_one_optimizer_stepped_from_two_threads_is_serialized(name, parallel_always):
    lrfast.set_num_threads(2)
    n_each = 40
    g = grads(0)          # the same grad every step: the result depends on the count only

    def build():
        ps = make(0)
        hp = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
        return ps, getattr(lrfast, name)(ps, **hp)

    ref, ref_opt = build()
    for _ in range(2 * n_each):
        ref_opt.step(g)

    ps, opt = build()
    barrier = threading.Barrier(2)
    errors = []

    def run():
        try:
            barrier.wait()
            for _ in range(n_each):
                assert opt.step(g) is True
        except Exception as e:        # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=run) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in ts) and not errors, errors
    assert opt.step_count == 2 * n_each
    for a, b in zip(ps, ref):
        assert bits_equal(a, b)
    for i, e in opt.state.items():
        if "step" in e:
            assert e["step"] == 2 * n_each


def test_state_dict_taken_while_another_thread_steps_is_consistent():
    ps = make(2)
    opt = lrfast.Adam(ps, lr=0.01)
    g = grads(2)
    done = threading.Event()
    errors = []

    def stepper():
        try:
            for _ in range(150):
                opt.step(g)
        except Exception as e:        # pragma: no cover
            errors.append(e)
        finally:
            done.set()

    t = threading.Thread(target=stepper)
    t.start()
    seen = 0
    while not done.is_set() or seen == 0:
        sd = opt.state_dict()
        n = sd["step_count"]
        for e in sd["state"].values():
            assert e["step"] == n        # never half a step
        seen += 1
    t.join(JOIN_TIMEOUT)
    assert not errors and opt.step_count == 150


def _child_asks_for_threads(conn, opt, params, gs):
    import warnings
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            lrfast.set_num_threads(2)
        info = {"warned": any(issubclass(x.category, RuntimeWarning) for x in w),
                "threads": lrfast.get_num_threads()}
        for g in gs:
            opt.step(g)
        info["params"] = [p.tobytes() for p in params]
        conn.send(info)
    finally:
        conn.close()


def test_forked_child_asking_for_threads_stays_safe(parallel_always):
    # gcc's libgomp hangs in a parallel region of a child forked after the
    # parent used its pool: with it, set_num_threads(2) in such a child warns
    # and the child stays serial (it must finish, with the right result).
    if not _K.OPENMP:
        pytest.skip("serial build")
    lrfast.set_num_threads(2)
    params = make()
    opt = lrfast.Adam(params, lr=0.01)
    opt.step(grads(0))
    gs = [grads(k) for k in range(1, 3)]
    out = _run_child(_child_asks_for_threads, opt, params, gs)
    if _K.FORK_UNSAFE_OMP:
        assert out["warned"] and out["threads"] == 1
    for g in gs:
        opt.step(g)
    assert out["params"] == [p.tobytes() for p in params]
