"""pytest-benchmark suite for lrfast: ``pytest bench/``.

Modes
-----
* default: sizes 1e3..1e6, float32 and float64, 1 and 2 threads, every
  optimizer, the 200-small-tensors and ~10M-param model cases, and the peers
  (numpy in place, torch, the bandwidth ceiling) for Adam; a couple of minutes
  on 2 cores.
* ``--bench-full`` (or ``LRFAST_BENCH_FULL=1``): adds 1e7-element cases.
* ``LRFAST_BENCH_QUICK=1``: tiny sizes and one short round each, for CI (with
  ``--benchmark-disable`` every benchmark body runs exactly once), so the suite
  cannot rot.

Each benchmark is timed with ``benchmark.pedantic``: ``LRFAST_BENCH_ROUNDS``
rounds (default 10) of a calibrated number of calls (about
``LRFAST_BENCH_ROUND_MS`` ms per round, default 5), after a warmup. Before
each one the suite sleeps 12 ms so the OpenMP pool of the previous benchmark
(lrfast's, or torch's own libgomp) has stopped spin-waiting (~8 ms).

Single comparisons of lrfast with its peers in ONE interleaved run are the job
of ``python -m lrfast bench``; this suite tracks each configuration over time
(``--benchmark-autosave``, ``--benchmark-compare``).
"""
import os
import time

import numpy as np
import pytest

QUICK = os.environ.get("LRFAST_BENCH_QUICK", "").strip() not in ("", "0")
ROUNDS = int(os.environ.get("LRFAST_BENCH_ROUNDS", "1" if QUICK else "10"))
ROUND_S = float(os.environ.get("LRFAST_BENCH_ROUND_MS", "0.2" if QUICK else "5")) / 1e3
SPIN_S = 0.0 if QUICK else 0.012

OPTIMIZERS = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam",
              "radam"]
THREADS = [1, 2]
DTYPES = ["float32", "float64"]
QUICK_SIZES = [1000, 10_000]
SIZES = [1000, 10_000, 100_000, 1_000_000]
FULL_SIZES = SIZES + [10_000_000]

def _have_plugin(pluginmanager):
    return pluginmanager.hasplugin("benchmark")


def pytest_addoption(parser, pluginmanager):
    group = parser.getgroup("lrfast bench")
    group.addoption("--bench-full", action="store_true", default=False,
                    help="include the 1e7-element cases (also LRFAST_BENCH_FULL=1)")
    if not _have_plugin(pluginmanager):
        # so that `pytest bench/ --benchmark-disable` still runs without the plugin
        group.addoption("--benchmark-disable", action="store_true", default=False,
                        help="(pytest-benchmark is not active: bodies run once anyway)")


class _FallbackBenchmark:
    """Stands in for pytest-benchmark's fixture when the plugin is not active:
    runs each body once, times nothing."""
    disabled = True

    def __init__(self):
        self.extra_info, self.group, self.stats = {}, None, None

    def pedantic(self, target, args=(), kwargs=None, **_):
        return target(*args, **(kwargs or {}))

    def __call__(self, target, *args, **kwargs):
        return target(*args, **kwargs)


class _FallbackPlugin:
    @pytest.fixture
    def benchmark(self):
        return _FallbackBenchmark()


def pytest_configure(config):
    if not _have_plugin(config.pluginmanager):
        config.pluginmanager.register(_FallbackPlugin(), "lrfast-benchmark-fallback")


def _full(config):
    return config.getoption("--bench-full") or os.environ.get(
        "LRFAST_BENCH_FULL", "").strip() not in ("", "0")


def sizes_for(config):
    if QUICK:
        return QUICK_SIZES
    return FULL_SIZES if _full(config) else SIZES


def pytest_generate_tests(metafunc):
    if "size" in metafunc.fixturenames:
        from lrfast.cli.bench import fmt_n
        sizes = sizes_for(metafunc.config)
        metafunc.parametrize("size", sizes, ids=[fmt_n(s) for s in sizes])
    if "nthreads" in metafunc.fixturenames:
        metafunc.parametrize("nthreads", THREADS, ids=[f"{t}t" for t in THREADS],
                             indirect=True)
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", DTYPES)
    if "opt_name" in metafunc.fixturenames:
        metafunc.parametrize("opt_name", OPTIMIZERS)


@pytest.fixture
def nthreads(request):
    """Run the test body with lrfast (and torch, if imported) at n threads."""
    import sys

    import lrfast
    n = request.param
    tprev = None
    torch = sys.modules.get("torch")
    if torch is not None:
        tprev = torch.get_num_threads()
        torch.set_num_threads(n)
    with lrfast.threads(n):
        yield n
    if torch is not None and tprev is not None:
        torch.set_num_threads(tprev)


def run_bench(benchmark, fn, n_elements, bytes_per_element=None, group=None):
    """Time ``fn`` (one optimizer step) with pedantic rounds of a calibrated
    number of calls; record elements, bytes and ns/element in extra_info."""
    if group is not None:
        benchmark.group = group
    info = benchmark.extra_info
    info["n_elements"] = int(n_elements)
    if bytes_per_element is not None:
        info["bytes_per_element"] = int(bytes_per_element)
    if getattr(benchmark, "disabled", False):
        benchmark.pedantic(fn)                     # runs the body once
        return
    if SPIN_S:
        time.sleep(SPIN_S)
    fn()                                           # warm: code paths, caches, pools
    number, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        t = time.perf_counter() - t0
        if t >= ROUND_S / 4 or number >= 1 << 20:
            break
        number *= 4
    iterations = max(1, int(round(number * ROUND_S / max(t, 1e-9))))
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=iterations, warmup_rounds=1)
    st = getattr(getattr(benchmark, "stats", None), "stats", None)
    if st is not None:
        med = st.median
        info["ns_per_element"] = round(med * 1e9 / n_elements, 4)
        if bytes_per_element:
            info["GBps"] = round(bytes_per_element * n_elements / med / 1e9, 2)


@pytest.fixture
def bench():
    return run_bench


def lrfast_setup(opt_name, shapes, dtype, seed=0):
    """(step, n_elements, bytes_per_element) for lrfast optimizer ``opt_name``."""
    import functools

    import lrfast
    from lrfast.cli.bench import OPTIMIZERS as REG, make_inputs, optimizer_bytes_per_element
    cls, hp = REG[opt_name]
    params, grads = make_inputs(shapes, np.dtype(dtype), seed)
    opt = getattr(lrfast, cls)(params, **hp)
    n_states = sum(a is not None for a in opt._states[0])
    n = sum(p.size for p in params)
    return (functools.partial(opt.step, grads), n,
            optimizer_bytes_per_element(n_states, np.dtype(dtype).itemsize))


@pytest.fixture
def make_lrfast():
    return lrfast_setup


@pytest.fixture
def bench_quick():
    """True in LRFAST_BENCH_QUICK mode (tiny inputs)."""
    return QUICK
