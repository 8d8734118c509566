# lrfast kernels: the per-parameter update loops, shared by every ISA build.
#
# Design (read before changing the loops)
# ---------------------------------------
# a) One optimizer step is ONE call into this module (`Engine.step`). It walks a
#    flat list of tasks prebuilt when the params were registered; a task is
#    (tensor, start, length). Tasks are grouped into "parts" of about equal
#    element count, and one `prange(parts, schedule='static')` runs them, so one
#    huge tensor and a thousand small ones cost the same single thread wake-up
#    (apex multi_tensor_apply). A sharded optimizer can own a slice of a tensor:
#    a task is just an offset and a length.
# b) Per-step scalars (lr, bias corrections, 1-beta, weight decay factor, grad
#    scale, flags) are computed ONCE per step in double by the Python layer, one
#    "row" per (group, step-count), and cast once to the tensor's dtype at the
#    start of each task. float32 loops never promote to double per element, and
#    there are no literals in the loops (they would promote).
# c) Loop bodies are the update rules written exactly as torch.optim documents them, in
#    torch's order, compiled with -ffp-contract=off: every kernel equals its
#    plain-numpy twin in lrfast/_reference.py bit for bit, for any thread count
#    and on any ISA build. Options that change which arrays are touched are
#    loop-invariant branches gcc unswitches; options that only change arithmetic
#    are selects gcc if-converts, so every loop vectorizes (check with
#    -fopt-info-vec-optimized).
# d) The update loops contain no reductions. The only reduction (grad norm for
#    clipping and the non-finite check) is a separate read-only pass over fixed
#    blocks with double accumulators combined in a fixed order, so its result
#    does not depend on the thread count, and a skipped step writes nothing.
# e) Below a measured element count the walk is serial and never enters an
#    OpenMP region (thread wake-up costs more than it saves, and a child forked
#    from this process must not touch the OpenMP pool: libgomp hangs there).

cimport cython
cimport numpy as cnp
import numpy as np
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf, fabs, fabsf, NAN
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memset
from libc.stdint cimport uintptr_t
from _openmp cimport LRFAST_OPENMP, lrfast_omp_get_max_threads

cnp.import_array()

cdef extern from *:
    """
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && (__GNUC__ >= 12)
    static int lrfast_cpu_has_v3(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("x86-64-v3");
    }
    #elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static int lrfast_cpu_has_v3(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
            && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("avx");
    }
    #else
    static int lrfast_cpu_has_v3(void) { return 0; }
    #endif
    #if defined(__AVX2__)
    #define LRFAST_ISA_NAME "x86-64-v3"
    #elif defined(__x86_64__)
    #define LRFAST_ISA_NAME "x86-64"
    #else
    #define LRFAST_ISA_NAME "baseline"
    #endif
    /* gcc's libgomp cannot run a parallel region in a child forked after the
       parent used its thread pool (it hangs); LLVM's libomp reinitializes. */
    #if defined(_OPENMP) && defined(__GNUC__) && !defined(__clang__)
    #define LRFAST_FORK_UNSAFE_OMP 1
    #else
    #define LRFAST_FORK_UNSAFE_OMP 0
    #endif
    #ifdef __VERSION__
    #define LRFAST_CC_VERSION __VERSION__
    #else
    #define LRFAST_CC_VERSION "unknown"
    #endif
    """
    int lrfast_cpu_has_v3() noexcept nogil
    const char* LRFAST_ISA_NAME
    const char* LRFAST_CC_VERSION
    bint LRFAST_FORK_UNSAFE_OMP


ctypedef fused real:
    float
    double

# The kind enum, one named row struct per kind (SgdRow, AdamRow, ...) and the
# KINDS / ROW_FIELDS / ROW_SIZES maps, generated from lrfast/optim/_table.py.
include "_table.pxi"
include "_quant.pxi"

cdef enum:
    MAX_STATES = 4   # state arrays per param (lrfast/optim/_table.py MAX_STATES)
    BLOCK = 4096     # elements per reduction block (fixed: results never depend on threads)
    SUMCH = 256      # elements per chunk of a lane sum or of clip_value's clipped grad copy

N_STATES = MAX_STATES
BLOCK_SIZE = BLOCK
_KIND_NAMES = {v: k for k, v in KINDS.items()}
ISA = LRFAST_ISA_NAME.decode()
COMPILER = LRFAST_CC_VERSION.decode()
OPENMP = bool(LRFAST_OPENMP)
FORK_UNSAFE_OMP = bool(LRFAST_FORK_UNSAFE_OMP)


# --------------------------------------------------------------------------
# Thread policy, first rule that applies:
#   1. a child forked after a parallel region -> 1 (gcc's libgomp hangs there);
#   2. `with lrfast.threads(n)` in the calling thread -> n (a C thread-local
#      override, read by the steps that run in that thread only);
#   3. `set_num_threads(n)` -> n, process-wide;
#   4. the adaptive default: omp_get_max_threads() read at every step (so
#      OMP_NUM_THREADS and threadpoolctl limits are honoured), or 1 when this
#      engine's own measured cost per element says threads lose (a busy
#      machine: an OpenMP barrier waits a whole scheduler slice for a
#      descheduled thread). See `Policy` below.
# Steps under the serial threshold never enter an OpenMP region. The count
# passed to prange never exceeds the number of work parts (`_run`/`_reduce`).
# Results are bit-identical for any count, so the choice changes no number.
# --------------------------------------------------------------------------
cdef extern from *:
    """
    #if defined(_WIN32)
    #ifndef WIN32_LEAN_AND_MEAN
    #define WIN32_LEAN_AND_MEAN
    #endif
    #ifndef NOMINMAX
    #define NOMINMAX
    #endif
    #include <windows.h>
    static double lrfast_monotonic(void) {
        LARGE_INTEGER f, c;
        QueryPerformanceFrequency(&f);
        QueryPerformanceCounter(&c);
        return (double)c.QuadPart / (double)f.QuadPart;
    }
    #else
    #include <time.h>
    static double lrfast_monotonic(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    #endif
    /* `with lrfast.threads(n)`: a per-OS-thread override (a Python thread is
       one OS thread, and a step's nogil section runs in the caller's thread). */
    #if defined(_MSC_VER)
    #define LRFAST_TLS __declspec(thread)
    #else
    #define LRFAST_TLS __thread
    #endif
    static LRFAST_TLS int lrfast_tl_threads_v = 0;
    static int lrfast_tl_threads(void) { return lrfast_tl_threads_v; }
    static void lrfast_set_tl_threads(int n) { lrfast_tl_threads_v = n; }
    """
    double lrfast_monotonic() noexcept nogil
    int lrfast_tl_threads() noexcept nogil
    void lrfast_set_tl_threads(int n) noexcept nogil


cdef int _user_threads = 0
cdef int _forked = 0
cdef int _parallel_used = 0
cdef int _serial_warned = 0
cdef Py_ssize_t _threshold = 24576   # measured: bench/threshold.py (2 threads win from 16384 hot)

import os as _os
# The most threads set_num_threads / threads accept: 4 per CPU, at most 1024.
# More only oversubscribes (20000 threads cost seconds per step, and thread
# creation can fail inside the OpenMP runtime).
MAX_THREADS = min(1024, 4 * max(_os.cpu_count() or 1, 1))


def _check_threads(n, str what):
    import numbers
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{what}: n must be an int, got {n!r}")
    n = int(n)
    if n < 0:
        raise ValueError(f"{what}: n must be >= 0, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"{what}: n={n} exceeds the limit of {MAX_THREADS} threads "
                         f"(4 per CPU, at most 1024)")
    return n


def _warn_thread_request(int n, int stacklevel):
    # Returns True when the request must not lift the forked-child guard.
    global _serial_warned
    import warnings
    if not LRFAST_OPENMP and n > 1 and not _serial_warned:
        _serial_warned = 1
        warnings.warn("lrfast: this build has no OpenMP (serial build): steps run on one "
                      "thread whatever is asked", RuntimeWarning, stacklevel=stacklevel)
    if _forked and LRFAST_FORK_UNSAFE_OMP:
        return True
    return False


def set_num_threads(n):
    """Threads every later step uses (process-wide); 0 restores the adaptive
    default. ``n`` is an int in [0, MAX_THREADS] (TypeError / ValueError
    otherwise). On a serial build (no OpenMP) asking for more than one thread
    warns once, and steps stay serial.

    In a child forked after this process ran a parallel step, gcc's libgomp
    would hang in the next parallel region: there the child stays serial
    whatever is asked (with a RuntimeWarning for n > 1); use the 'spawn' or
    'forkserver' start method for parallel workers. With an OpenMP runtime
    that survives fork, the request lifts the child's serial guard.
    """
    global _user_threads, _forked
    n = _check_threads(n, "set_num_threads")
    _warn_thread_request(n, 2)       # (stacklevel: the caller of lrfast.set_num_threads)
    _user_threads = n
    if _forked and LRFAST_FORK_UNSAFE_OMP:
        if n != 1:
            import warnings
            warnings.warn("lrfast: this process was forked after its parent ran parallel "
                          "steps; gcc's libgomp would hang in a parallel region here, so "
                          "steps stay serial (start workers with the 'spawn' or "
                          "'forkserver' method to use threads)", RuntimeWarning, stacklevel=3)
        return
    _forked = 0


def _set_thread_override(n):
    """Set the calling thread's override (``lrfast.threads``); 0 removes it.
    Returns the previous value. Validated as set_num_threads."""
    global _forked
    n = _check_threads(n, "threads")
    cdef int prev = lrfast_tl_threads()
    if _warn_thread_request(n, 3):   # (the caller of `with lrfast.threads(n)`)
        if n > 1:
            import warnings
            warnings.warn("lrfast: this process was forked after its parent ran parallel "
                          "steps; steps stay serial here (see set_num_threads)",
                          RuntimeWarning, stacklevel=5)
    elif n > 0:
        _forked = 0
    lrfast_set_tl_threads(n)
    return prev


def _thread_override():
    return lrfast_tl_threads()


def get_num_threads():
    """Threads a large step would use now in the calling thread (before the
    serial threshold; under the adaptive default, the most it may use)."""
    if _forked or not LRFAST_OPENMP:
        return 1
    cdef int nt = lrfast_tl_threads()
    if nt <= 0:
        nt = _user_threads
    if nt <= 0:
        nt = lrfast_omp_get_max_threads()
    return nt if nt > 1 else 1


def _user_num_threads():
    return _user_threads


def thread_mode():
    """How the calling thread's steps pick their thread count: "serial build",
    "forked child: 1 thread", "pinned n (threads() in this thread)", "pinned n
    (set_num_threads)" or "adaptive (up to n)"."""
    if not LRFAST_OPENMP:
        return "serial build: 1 thread"
    if _forked:
        return "forked child: 1 thread"
    if lrfast_tl_threads() > 0:
        return f"pinned {lrfast_tl_threads()} (threads() in this thread)"
    if _user_threads > 0:
        return f"pinned {_user_threads} (set_num_threads)"
    return f"adaptive (up to {lrfast_omp_get_max_threads()})"


def set_parallel_threshold(n):
    """Steps moving fewer elements than n run serially (no OpenMP region);
    n is an int in [0, 2**62]."""
    global _threshold
    import numbers
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_parallel_threshold: n must be an int, got {n!r}")
    n = int(n)
    if not 0 <= n <= 2 ** 62:
        raise ValueError(f"set_parallel_threshold: n must be in [0, 2**62], got {n}")
    _threshold = <Py_ssize_t>n


def get_parallel_threshold():
    return _threshold


def _after_fork_in_child():
    global _forked
    if _parallel_used:
        _forked = 1


def _parallel_was_used():
    return bool(_parallel_used)


def cpu_supports_x86_64_v3():
    return bool(lrfast_cpu_has_v3())


cdef inline bint _pinned() noexcept nogil:
    return lrfast_tl_threads() > 0 or _user_threads > 0


cdef int _threads_for(Py_ssize_t n_elements) noexcept nogil:
    cdef int nt
    if _forked or n_elements < _threshold:
        return 1
    nt = lrfast_tl_threads()
    if nt <= 0:
        nt = _user_threads
    if nt <= 0:
        nt = lrfast_omp_get_max_threads()
    return nt if nt > 1 else 1


# The adaptive default. Each engine keeps one Policy per kind of pass (update
# step, grad norm): an EWMA of its measured wall time per element for one
# thread and for threads. The first parallel step is a warm-up (thread pool
# start, first-touch page faults) and not counted; then one step of each mode
# is measured, and the cheaper mode runs. Every `interval` steps (64, doubling
# to 256 while probes confirm the choice) one step runs in the other mode and
# its time replaces that mode's estimate (which is that old), provided the steps
# run since the last probe took at least 20 times what the probe is expected to
# lose, judged by the worse of that mode's average and latest sample (a parallel
# step on a busy machine can cost 500 serial ones: probes then wait longer, so
# they never cost more than about 5%). A probe must win by 17% to switch (one
# sample of a heavy-tailed time can be lucky), an average by 5%.
# The cost: two clock reads per step and one step in 64-256 (or fewer) in the
# losing mode. An engine is stepped by one thread at a time, so its Policy needs
# no lock. `_policy_simulate` drives this logic with synthetic timings (tests).
cdef enum:
    POLICY_PROBE_MIN = 64
    POLICY_PROBE_MAX = 256
    POLICY_PROBE_PRICE = 20     # steps between probes take >= 20x a probe's expected loss

cdef struct Policy:
    double cost[2]          # EWMA seconds per element: [0] one thread, [1] threads
    long long seen[2]       # samples taken per mode
    long long steps[2]      # steps run per mode
    int mode                # the mode that wins now (0 one thread, 1 threads)
    int cur                 # this step's mode
    int adaptive            # this step's count was chosen here (not pinned)
    int since               # steps since the last probe
    int interval            # steps between probes
    int warm                # the warm-up step was taken
    double credit           # seconds spent in the winning mode since the last probe
    double last[2]          # the latest sample per mode (seconds per element)
    double seed             # > 0: cost ratio threads/one thread inherited (see below)


cdef int _policy_choose(Policy* pol, int base, Py_ssize_t work) noexcept nogil:
    # The count for this step, given `base` threads for the parallel mode.
    cdef int m
    cdef double loss
    pol.adaptive = 1
    if pol.interval < POLICY_PROBE_MIN:
        pol.interval = POLICY_PROBE_MIN
        pol.mode = 1
    if pol.seed > 0.0 and pol.seen[0] == 0 and pol.seen[1] == 0:
        m = pol.mode            # a new engine starts in the mode the process last chose
    elif not pol.warm or pol.seen[1] == 0:
        m = 1
    elif pol.seen[0] == 0:
        m = 0
    else:
        pol.since += 1
        loss = (max(pol.cost[1 - pol.mode], pol.last[1 - pol.mode])
                - pol.cost[pol.mode]) * <double>work
        if pol.since >= pol.interval and pol.credit >= POLICY_PROBE_PRICE * loss:
            pol.since = 0
            pol.credit = 0.0
            m = 1 - pol.mode
        else:
            m = pol.mode
    pol.cur = m
    return base if m else 1


cdef int _policy_threads(Policy* pol, Py_ssize_t work) noexcept nogil:
    # The thread count for this step (rules 1-4 above).
    cdef int base = _threads_for(work)
    if base <= 1 or _pinned():
        pol.adaptive = 0
        return base
    return _policy_choose(pol, base, work)


cdef void _policy_record(Policy* pol, int nt, Py_ssize_t work, double seconds) noexcept nogil:
    # Called after the step with its wall time.
    cdef int m = pol.cur, other
    cdef double c
    if not pol.adaptive:
        return
    pol.adaptive = 0
    pol.steps[m] += 1
    if work <= 0 or not seconds >= 0.0:
        return
    if not pol.warm:
        pol.warm = 1            # the first step: thread start-up and page faults
        return
    c = seconds / <double>work
    pol.last[m] = c
    if m == pol.mode:
        pol.credit += seconds
    if pol.seen[m] == 0 or m != pol.mode:
        pol.cost[m] = c         # first sample, or a probe: the old estimate is stale
    else:
        pol.cost[m] = pol.cost[m] + 0.125 * (c - pol.cost[m])
    pol.seen[m] += 1
    if pol.seed > 0.0 and pol.seen[1 - m] == 0:
        # the other mode's estimate from the inherited ratio, in this engine's units
        pol.cost[1 - m] = c * pol.seed if m == 0 else c / pol.seed
        pol.last[1 - m] = pol.cost[1 - m]
        pol.seen[1 - m] = 1
    if pol.seen[0] == 0 or pol.seen[1] == 0:
        return
    other = 1 - pol.mode
    # a probe (one sample) must win by 17%, an average by 5%
    if pol.cost[other] < (0.83 if m == other else 0.95) * pol.cost[pol.mode]:
        pol.mode = other
        pol.interval = POLICY_PROBE_MIN
        pol.since = 0
        pol.credit = 0.0
    elif m != pol.mode and pol.seen[m] > 1 and pol.interval < POLICY_PROBE_MAX:
        pol.interval = pol.interval * 2     # a probe confirmed the choice: probe less


# What the process has learnt, for engines created later: a new engine (and
# lrfast.grad_norm, clip_grad_norm and the functional kernels build one per
# call) starts in the mode the last measured engine chose, with its cost ratio,
# instead of a parallel warm-up step that costs milliseconds on a busy machine.
# Read and written with the GIL held (Engine.__cinit__, after each step).
cdef Policy _shared_pol
cdef int _shared_valid = 0


cdef void _policy_share(Policy* pol) noexcept:
    # after a step, GIL held
    global _shared_pol, _shared_valid
    if pol.seen[0] > 0 and pol.seen[1] > 0 and pol.cost[0] > 0.0 and pol.cost[1] > 0.0:
        _shared_pol = pol[0]
        _shared_valid = 1


cdef void _policy_seed(Policy* pol) noexcept:
    # a new engine, GIL held
    memset(pol, 0, sizeof(Policy))
    if _shared_valid:
        pol.mode = _shared_pol.mode
        pol.seed = _shared_pol.cost[1] / _shared_pol.cost[0]
        pol.warm = 0            # its first step (page faults of new state) is not counted
        pol.interval = POLICY_PROBE_MIN


cdef int _policy_hint_threads(Py_ssize_t work) noexcept nogil:
    # For passes that keep no Policy of their own (L-BFGS vector passes, the
    # functional one-tensor step): the process's last measured mode. (Reads one
    # int written under the GIL.)
    cdef int base = _threads_for(work)
    if base <= 1 or _pinned():
        return base
    if _shared_valid and _shared_pol.mode == 0:
        return 1
    return base


def _policy_hint(Py_ssize_t work):
    """Test hook: the count a pass without its own Policy would use."""
    return _policy_hint_threads(work)


def _policy_set_shared(mode=None, double ratio=1.0):
    """Test hook: set (mode "threads" / "one thread", cost ratio threads/one)
    or forget (None) what new engines inherit."""
    global _shared_valid
    if mode is None:
        _shared_valid = 0
        return
    memset(&_shared_pol, 0, sizeof(Policy))
    _shared_pol.mode = 1 if mode == "threads" else 0
    _shared_pol.cost[0] = 1.0
    _shared_pol.cost[1] = ratio
    _shared_pol.seen[0] = _shared_pol.seen[1] = 1
    _shared_valid = 1


def _policy_shared():
    return _policy_dict(&_shared_pol) if _shared_valid else None


cdef dict _policy_dict(Policy* pol):
    return {"mode": "threads" if pol.mode else "one thread",
            "cost_per_element": (pol.cost[0] if pol.seen[0] else None,
                                 pol.cost[1] if pol.seen[1] else None),
            "samples": (pol.seen[0], pol.seen[1]),
            "steps": (pol.steps[0], pol.steps[1]),
            "probe_interval": pol.interval}


def _policy_simulate(int base, cost, int steps, Py_ssize_t work=1000000, seed_mode=None,
                     double seed_ratio=1.0):
    """Test hook: run the adaptive policy for `steps` steps with a synthetic
    wall time ``cost(step, nt)`` (seconds for the whole step), for a fresh
    engine or (seed_mode "threads"/"one thread") one that inherits a mode and
    cost ratio. Returns (the thread count chosen at each step, the final
    policy state)."""
    cdef Policy pol
    cdef int k, nt
    memset(&pol, 0, sizeof(Policy))
    if seed_mode is not None:
        pol.mode = 1 if seed_mode == "threads" else 0
        pol.seed = seed_ratio
        pol.interval = POLICY_PROBE_MIN
    out = []
    for k in range(steps):
        nt = _policy_choose(&pol, base, work)
        out.append(nt)
        _policy_record(&pol, nt, work, float(cost(k, nt)))
    return out, _policy_dict(&pol)


# --------------------------------------------------------------------------
# Element helpers (inlined into the loops).
# --------------------------------------------------------------------------
cdef inline real _sqrt(real x) noexcept nogil:
    if real is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline real _abs(real x) noexcept nogil:
    if real is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline real _nanmax(real a, real b) noexcept nogil:
    # np.maximum semantics: a NaN in either argument gives NaN. `|`, not `or`: the
    # short-circuit became a select between two masks, which gcc does not
    # vectorize (it left Adamax, amsgrad and ADOPT scalar in some builds).
    return a if ((a >= b) | (a != a)) else b


cdef inline real _grad(real g, real p, real gs, real wd, bint l2) noexcept nogil:
    # g = gs*g (gs = +-1 times the clipping scale: maximize and clipping in one
    # exact multiply), then L2 weight decay g += wd*p.
    g = gs * g
    return g + wd * p if l2 else g


cdef inline real _decay(real p, real dm, bint decoupled) noexcept nogil:
    # decoupled weight decay (AdamW): p *= 1 - lr*wd
    return p * dm if decoupled else p


# --------------------------------------------------------------------------
# Update loops, one per kernel kind, all with one signature: p: param (IN/OUT),
# g: grad (IN, never written), h: auxiliary input (IN, NULL unless the kind
# reads one), s0..s2 (and s3, for kinds with 4 states): state (IN/OUT, NULL when not
# allocated), r: the kind's
# named scalar row (lrfast/optim/_table.py lists its fields; the row plans in
# lrfast/optim/_rules.py fill them). Scalars are cast once to the param dtype.
# --------------------------------------------------------------------------
cdef void _sgd(real* p, const real* g, const real* h, real* b, real* s1, real* s2,
               Py_ssize_t n, const SgdRow* r) noexcept nogil:
    cdef real gs = <real>r.gs, wd = <real>r.wd, lr = <real>r.lr, mu = <real>r.mu
    cdef real d1 = <real>r.d1
    cdef bint l2 = r.l2 != 0, mom = r.mom != 0, nesterov = r.nesterov != 0, first = r.first != 0
    cdef Py_ssize_t i
    cdef real gi, bi
    if not mom:
        for i in range(n):
            p[i] = p[i] - lr * _grad(g[i], p[i], gs, wd, l2)
        return
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        bi = gi if first else b[i] * mu + d1 * gi
        b[i] = bi
        gi = gi + mu * bi if nesterov else bi
        p[i] = p[i] - lr * gi


cdef void _adagrad(real* p, const real* g, const real* h, real* s, real* s1, real* s2,
                   Py_ssize_t n, const AdagradRow* r) noexcept nogil:
    cdef real gs = <real>r.gs, wd = <real>r.wd, clr = <real>r.clr, eps = <real>r.eps
    cdef bint l2 = r.l2 != 0
    cdef Py_ssize_t i
    cdef real gi, si
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] - clr * gi / (_sqrt(si) + eps)


cdef void _adadelta(real* p, const real* g, const real* h, real* v, real* u, real* s2,
                    Py_ssize_t n, const AdadeltaRow* r) noexcept nogil:
    cdef real gs = <real>r.gs, wd = <real>r.wd, lr = <real>r.lr, rho = <real>r.rho
    cdef real c = <real>r.c, eps = <real>r.eps
    cdef bint l2 = r.l2 != 0
    cdef Py_ssize_t i
    cdef real gi, vi, di
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        vi = v[i] * rho + c * gi * gi
        v[i] = vi
        di = _sqrt(u[i] + eps) / _sqrt(vi + eps) * gi
        u[i] = u[i] * rho + c * di * di
        p[i] = p[i] - lr * di


cdef inline void _rmsprop_loop(real* p, const real* g, real* v, real* b, real* a, Py_ssize_t n,
                               real gs, real wd, bint l2, real lr, real alpha, real c, real eps,
                               real mu, bint mom, bint centered) noexcept nogil:
    cdef Py_ssize_t i
    cdef real gi, vi, ai, wi, bi
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        vi = v[i] * alpha + c * gi * gi
        v[i] = vi
        if centered:
            ai = a[i] + c * (gi - a[i])
            a[i] = ai
            # v - a*a; where that is inf - inf (v overflowed, and so did a*a),
            # keep v: torch's fused addcmul never forms a*a and gets inf, not NaN
            wi = vi - ai * ai
            vi = wi if wi == wi else vi
        wi = _sqrt(vi) + eps
        if mom:
            bi = b[i] * mu + gi / wi
            b[i] = bi
            p[i] = p[i] - lr * bi
        else:
            p[i] = p[i] - lr * gi / wi


cdef void _rmsprop(real* p, const real* g, const real* h, real* v, real* b, real* a,
                   Py_ssize_t n, const RmspropRow* r) noexcept nogil:
    # one loop per (centered, momentum): each specialization vectorizes
    cdef real gs = <real>r.gs, wd = <real>r.wd, lr = <real>r.lr, alpha = <real>r.alpha
    cdef real c = <real>r.c, eps = <real>r.eps, mu = <real>r.mu
    cdef bint l2 = r.l2 != 0, mom = r.mom != 0, centered = r.centered != 0
    if centered:
        if mom:
            _rmsprop_loop(p, g, v, b, a, n, gs, wd, l2, lr, alpha, c, eps, mu, True, True)
        else:
            _rmsprop_loop(p, g, v, b, a, n, gs, wd, l2, lr, alpha, c, eps, mu, False, True)
    elif mom:
        _rmsprop_loop(p, g, v, b, a, n, gs, wd, l2, lr, alpha, c, eps, mu, True, False)
    else:
        _rmsprop_loop(p, g, v, b, a, n, gs, wd, l2, lr, alpha, c, eps, mu, False, False)


cdef void _adam(real* p, const real* g, const real* h, real* m, real* v, real* vmax,
                Py_ssize_t n, const AdamRow* r) noexcept nogil:
    cdef real gs = <real>r.gs, wd = <real>r.wd, c1 = <real>r.c1, b2 = <real>r.b2
    cdef real c2 = <real>r.c2, ss = <real>r.step_size, bc2s = <real>r.bc2_sqrt
    cdef real eps = <real>r.eps, dm = <real>r.dm
    cdef bint l2 = r.l2 != 0, decoupled = r.decoupled != 0, amsgrad = r.amsgrad != 0
    cdef Py_ssize_t i
    cdef real gi, mi, vi
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        mi = m[i] + c1 * (gi - m[i])
        m[i] = mi
        vi = v[i] * b2 + c2 * gi * gi
        v[i] = vi
        if amsgrad:
            vi = _nanmax(vmax[i], vi)
            vmax[i] = vi
        p[i] = _decay(p[i], dm, decoupled) - ss * mi / (_sqrt(vi) / bc2s + eps)


cdef void _adamax(real* p, const real* g, const real* h, real* m, real* u, real* s2,
                  Py_ssize_t n, const AdamaxRow* r) noexcept nogil:
    cdef real gs = <real>r.gs, wd = <real>r.wd, c1 = <real>r.c1, b2 = <real>r.b2
    cdef real eps = <real>r.eps, clr = <real>r.clr
    cdef bint l2 = r.l2 != 0
    cdef Py_ssize_t i
    cdef real gi, mi, ui
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        mi = m[i] + c1 * (gi - m[i])
        m[i] = mi
        ui = _nanmax(u[i] * b2, _abs(gi) + eps)
        u[i] = ui
        p[i] = p[i] - clr * mi / ui


cdef void _nadam(real* p, const real* g, const real* h, real* m, real* v, real* s2,
                 Py_ssize_t n, const NadamRow* r) noexcept nogil:
    cdef real gs = <real>r.gs, wd = <real>r.wd, c1 = <real>r.c1, b2 = <real>r.b2
    cdef real c2 = <real>r.c2, bc2 = <real>r.bc2, eps = <real>r.eps, cg = <real>r.cg
    cdef real cm = <real>r.cm, dm = <real>r.dm
    cdef bint l2 = r.l2 != 0, decoupled = r.decoupled != 0
    cdef Py_ssize_t i
    cdef real gi, mi, vi, den, pi
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        pi = _decay(p[i], dm, decoupled)
        mi = m[i] + c1 * (gi - m[i])
        m[i] = mi
        vi = v[i] * b2 + c2 * gi * gi
        v[i] = vi
        den = _sqrt(vi / bc2) + eps
        pi = pi - cg * gi / den
        p[i] = pi - cm * mi / den


cdef void _radam(real* p, const real* g, const real* h, real* m, real* v, real* s2,
                 Py_ssize_t n, const RadamRow* r) noexcept nogil:
    cdef real gs = <real>r.gs, wd = <real>r.wd, c1 = <real>r.c1, b2 = <real>r.b2
    cdef real c2 = <real>r.c2, bc1 = <real>r.bc1, lr = <real>r.lr, bc2s = <real>r.bc2_sqrt
    cdef real eps = <real>r.eps, rect = <real>r.rect, dm = <real>r.dm, one = 1
    cdef bint l2 = r.l2 != 0, rectify = r.rectify != 0, decoupled = r.decoupled != 0
    cdef Py_ssize_t i
    cdef real gi, mi, vi, step
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        mi = m[i] + c1 * (gi - m[i])
        m[i] = mi
        vi = v[i] * b2 + c2 * gi * gi
        v[i] = vi
        step = mi / bc1 * lr
        # torch: scalar / tensor is tensor.reciprocal() * scalar
        step = step * (one / (_sqrt(vi) + eps) * bc2s) * rect if rectify else step
        p[i] = _decay(p[i], dm, decoupled) - step


cdef inline real _sign(real x) noexcept nogil:
    # torch.sign / jnp.sign: +-1, a zero keeps itself, NaN stays NaN (two
    # selects in a row: gcc if-converts these, not the nested form)
    cdef real one = 1, s
    s = one if x > 0 else x
    return -one if x < 0 else s


cdef inline real _torch_sign(real x) noexcept nogil:
    # torch.sign on CPU: +-1, and 0 for a zero or a NaN
    cdef real one = 1, zero = 0, s
    s = one if x > 0 else zero
    return -one if x < 0 else s


cdef void _rprop(real* p, const real* g, const real* h, real* prev, real* ss, real* s2,
                 Py_ssize_t n, const RpropRow* r) noexcept nogil:
    # torch's single-tensor Rprop: the sign of g*prev picks etaplus, etaminus or 1
    # (torch.sign(NaN) is 0: a NaN picks 1 and moves nothing), the step size is scaled and clamped, g is zeroed where the
    # sign flipped, p -= sign(g)*step_size and prev = g. The first step starts
    # every step size at lr (torch fills it with the lr of that step).
    cdef real gs = <real>r.gs, em = <real>r.etaminus, ep = <real>r.etaplus
    cdef real smin = <real>r.smin, smax = <real>r.smax, lr = <real>r.lr, one = 1, zero = 0
    cdef bint first = r.first != 0
    cdef Py_ssize_t i
    cdef real gi, x, f, si
    for i in range(n):
        gi = gs * g[i]
        x = gi * prev[i]
        f = ep if x > 0 else (em if x < 0 else one)
        si = ss[i]                              # loaded every time: the select vectorizes
        si = lr if first else si
        si = si * f
        si = smin if si < smin else si          # clamp_(min, max): NaN stays NaN
        si = smax if si > smax else si
        ss[i] = si
        gi = zero if x < 0 else gi
        p[i] = p[i] - _torch_sign(gi) * si
        prev[i] = gi


cdef void _asgd(real* p, const real* g, const real* h, real* ax, real* s1, real* s2,
                Py_ssize_t n, const AsgdRow* r) noexcept nogil:
    # torch's single-tensor ASGD with the eta and mu of the previous step:
    # p *= 1 - lambd*eta;  p -= eta*g;  ax += (p - ax)*mu (ax = p when mu == 1)
    cdef real gs = <real>r.gs, wd = <real>r.wd, dm = <real>r.dm, eta = <real>r.eta
    cdef real mu = <real>r.mu
    cdef bint l2 = r.l2 != 0, avg = r.avg != 0
    cdef Py_ssize_t i
    cdef real gi, pi
    if not avg:       # before t0 (mu == 1) the average is a copy: ax is not read
        for i in range(n):
            gi = _grad(g[i], p[i], gs, wd, l2)
            pi = p[i] * dm
            pi = pi - eta * gi
            p[i] = pi
            ax[i] = pi
        return
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        pi = p[i] * dm
        pi = pi - eta * gi
        p[i] = pi
        ax[i] = ax[i] + (pi - ax[i]) * mu


cdef void _lion(real* p, const real* g, const real* h, real* m, real* s1, real* s2,
                Py_ssize_t n, const LionRow* r) noexcept nogil:
    # optax.lion: c = (1-b1)*g + b1*m;  p -= lr*(sign(c) + wd*p);  m = (1-b2)*g + b2*m
    # (optax skips the weight decay term when it is 0)
    cdef real gs = <real>r.gs, wd = <real>r.wd, b1 = <real>r.b1, c1 = <real>r.c1
    cdef real b2 = <real>r.b2, c2 = <real>r.c2, lr = <real>r.lr
    cdef bint decay = r.wd != 0
    cdef Py_ssize_t i
    cdef real gi, mi, c
    for i in range(n):
        gi = gs * g[i]
        mi = m[i]
        c = c1 * gi + b1 * mi
        p[i] = p[i] - lr * (_sign(c) + wd * p[i] if decay else _sign(c))
        m[i] = c2 * gi + b2 * mi


# ---- Optax's modern set (reference: optax 0.2.x; each loop in Optax's operation order)
cdef void _adabelief(real* p, const real* g, const real* h, real* m, real* s, real* s2,
                     Py_ssize_t n, const AdabeliefRow* r) noexcept nogil:
    # optax.scale_by_belief: m = (1-b1)*g + b1*m;  s = (1-b2)*(g-m)^2 + b2*s + eps_root
    # p -= lr * (m/bc1) / (sqrt(s/bc2) + eps)
    cdef real gs = <real>r.gs, b1 = <real>r.b1, c1 = <real>r.c1, b2 = <real>r.b2
    cdef real c2 = <real>r.c2, eps = <real>r.eps, er = <real>r.eps_root
    cdef real bc1 = <real>r.bc1, bc2 = <real>r.bc2, lr = <real>r.lr
    cdef Py_ssize_t i
    cdef real gi, mi, si, d
    for i in range(n):
        gi = gs * g[i]
        mi = c1 * gi + b1 * m[i]
        m[i] = mi
        d = gi - mi
        si = c2 * (d * d) + b2 * s[i] + er
        s[i] = si
        p[i] = p[i] - lr * (mi / bc1 / (_sqrt(si / bc2) + eps))


cdef void _yogi(real* p, const real* g, const real* h, real* m, real* v, real* s2,
                Py_ssize_t n, const YogiRow* r) noexcept nogil:
    # optax.scale_by_yogi: m = (1-b1)*g + b1*m;  v = v - (1-b2)*sign(v - g*g)*g*g
    # p -= lr * (m/bc1) / (sqrt(v/bc2) + eps)
    cdef real gs = <real>r.gs, b1 = <real>r.b1, c1 = <real>r.c1, c2 = <real>r.c2
    cdef real eps = <real>r.eps, bc1 = <real>r.bc1, bc2 = <real>r.bc2, lr = <real>r.lr
    cdef real one = 1, zero = 0
    cdef Py_ssize_t i
    cdef real gi, mi, vi, g2, d, sg
    for i in range(n):
        gi = gs * g[i]
        mi = c1 * gi + b1 * m[i]
        m[i] = mi
        g2 = gi * gi
        vi = v[i]
        d = vi - g2
        sg = (one if d > zero else zero) - (one if d < zero else zero)
        vi = vi - c2 * sg * g2
        v[i] = vi
        p[i] = p[i] - lr * (mi / bc1 / (_sqrt(vi / bc2) + eps))


cdef inline real _max_nn(real a, real b) noexcept nogil:
    # max(a, b) for a b that is never NaN: a NaN a gives NaN, as np.maximum; one
    # compare and select (gcc: vmaxps), where _nanmax's NaN test on a left
    # ADOPT's clip chain scalar (gcc merged the two tests into a select of masks)
    return b if a < b else a


cdef inline real _min_nn(real a, real b) noexcept nogil:
    # min(a, b) for a b that is never NaN (see _max_nn)
    return b if a > b else a


cdef void _adopt(real* p, const real* g, const real* h, real* m, real* v, real* s2,
                 Py_ssize_t n, const AdoptRow* r) noexcept nogil:
    # optax.contrib.adopt (use_clipping, no nesterov). First step: v = g*g only.
    # Then u = clip(g / max(sqrt(v_old), eps), -c, c) with c = (t-1)**0.25,
    # v = (1-b2)*g*g + b2*v;  m = (1-b1)*u + b1*m;  p -= lr*m
    cdef real gs = <real>r.gs, b1 = <real>r.b1, c1 = <real>r.c1, b2 = <real>r.b2
    cdef real c2 = <real>r.c2, eps = <real>r.eps, c = <real>r.clip, lr = <real>r.lr
    cdef real nc = -c
    cdef bint first = r.first != 0
    cdef Py_ssize_t i
    cdef real gi, mi, vi, u
    if first:
        for i in range(n):
            gi = gs * g[i]
            v[i] = gi * gi
        return
    for i in range(n):
        gi = gs * g[i]
        vi = v[i]
        u = _min_nn(_max_nn(gi / _max_nn(_sqrt(vi), eps), nc), c)   # eps, c: not NaN
        v[i] = c2 * (gi * gi) + b2 * vi
        mi = c1 * u + b1 * m[i]
        m[i] = mi
        p[i] = p[i] - lr * mi


cdef inline void _adan_loop(real* p, const real* g, real* m, real* v, real* nn, real* gp,
                            Py_ssize_t n, const AdanRow* r, bint first, bint decay) noexcept nogil:
    # Two loops per chunk of SUMCH elements, so that each has few enough distinct
    # pointers for gcc to vectorize it behind its default number of runtime alias
    # checks: (g, gp) -> the scaled grad and its difference, kept in stack buffers
    # (in L1: no extra memory traffic); then (m, v, nn, p) from those buffers.
    # The same operations in the same order as one loop: bitwise equal.
    cdef real gs = <real>r.gs, b1 = <real>r.b1, c1 = <real>r.c1, b2 = <real>r.b2
    cdef real c2 = <real>r.c2, b3 = <real>r.b3, c3 = <real>r.c3, eps = <real>r.eps
    cdef real er = <real>r.eps_root, wd = <real>r.wd, bc1 = <real>r.bc1, bc2 = <real>r.bc2
    cdef real bc3 = <real>r.bc3, lr = <real>r.lr
    cdef real gb[SUMCH]
    cdef real db[SUMCH]
    cdef Py_ssize_t i, o = 0, c
    cdef real gi, pi, di, mi, vi, q, ni, u
    while o < n:
        c = min(<Py_ssize_t>SUMCH, n - o)
        if first:
            for i in range(c):
                gi = gs * g[o + i]
                gb[i] = gi
                db[i] = 0
                gp[o + i] = gi
        else:
            for i in range(c):
                gi = gs * g[o + i]
                gb[i] = gi
                db[i] = gi - gp[o + i]
                gp[o + i] = gi
        for i in range(c):
            gi = gb[i]
            di = db[i]
            pi = p[o + i]
            mi = c1 * gi + b1 * m[o + i]
            m[o + i] = mi
            vi = c2 * di + b2 * v[o + i]
            v[o + i] = vi
            q = gi + c2 * di
            ni = c3 * (q * q) + b3 * nn[o + i]
            nn[o + i] = ni
            u = (mi / bc1 + c2 * (vi / bc2)) / (_sqrt(ni / bc3 + er) + eps)
            if decay:
                u = u + wd * pi
            p[o + i] = pi - lr * u
        o += c


cdef void _adan(real* p, const real* g, const real* h, real* m, real* v, real* nn, real* gp,
                Py_ssize_t n, const AdanRow* r) noexcept nogil:
    # optax.scale_by_adan + add_decayed_weights + scale_by_learning_rate (4 states: the
    # linear recursions of m, v and the previous grad have three modes, b1, b2 and 0,
    # with separate bias corrections, so none can be folded into another):
    # d = g - g_prev (0 on the first step);  m = (1-b1)*g + b1*m;  v = (1-b2)*d + b2*v
    # q = g + (1-b2)*d;  n = (1-b3)*q*q + b3*n;  g_prev = g
    # u = (m/bc1 + (1-b2)*(v/bc2)) / (sqrt(n/bc3 + eps_root) + eps) (+ wd*p);  p -= lr*u
    # One loop per (first step, weight decay): each specialization vectorizes.
    cdef bint first = r.first != 0, decay = r.decay != 0
    if first:
        if decay:
            _adan_loop(p, g, m, v, nn, gp, n, r, True, True)
        else:
            _adan_loop(p, g, m, v, nn, gp, n, r, True, False)
    elif decay:
        _adan_loop(p, g, m, v, nn, gp, n, r, False, True)
    else:
        _adan_loop(p, g, m, v, nn, gp, n, r, False, False)


cdef void _diag_newton(real* p, const real* g, const real* h, real* s0, real* s1, real* s2,
                       Py_ssize_t n, const DiagNewtonRow* r) noexcept nogil:
    # p -= lr * g / (|h| + damping): per-parameter rates as a diagonal
    # approximation of the inverse Hessian.
    cdef real gs = <real>r.gs, wd = <real>r.wd, lr = <real>r.lr, damping = <real>r.damping
    cdef bint l2 = r.l2 != 0
    cdef Py_ssize_t i
    for i in range(n):
        p[i] = p[i] - lr * _grad(g[i], p[i], gs, wd, l2) / (_abs(h[i]) + damping)


cdef inline real _sf_lerp(real y, real z, real w, real w1, bint hi) noexcept nogil:
    # torch.lerp(y, z, w) on CPU: y + w*(z-y) for |w| < 0.5, else z - (z-y)*(1-w)
    return z - (z - y) * w1 if hi else y + w * (z - y)


cdef void _sf_sgd(real* p, const real* g, const real* h, real* z, real* s1, real* s2,
                  Py_ssize_t n, const SfSgdRow* r) noexcept nogil:
    # schedulefree.SGDScheduleFree: p holds y; z starts as a copy of y (first step)
    # g += wd*y;  y = lerp(y, z, ckp1);  y += cy*g  (cy = lr*(momentum*(1-ckp1)-1));  z -= lr*g
    cdef real gs = <real>r.gs, wd = <real>r.wd, w = <real>r.ckp1, cy = <real>r.cy
    cdef real lr = <real>r.lr, one = 1, w1
    cdef bint decay = r.decay != 0, first = r.first != 0, hi = r.hi != 0
    cdef Py_ssize_t i
    cdef real gi, yi, zi
    w1 = one - w
    for i in range(n):
        gi = gs * g[i]
        yi = p[i]
        zi = yi if first else z[i]
        if decay:
            gi = gi + wd * yi
        yi = _sf_lerp(yi, zi, w, w1, hi)
        p[i] = yi + cy * gi
        z[i] = zi - lr * gi


cdef void _sf_adam(real* p, const real* g, const real* h, real* z, real* v, real* s2,
                   Py_ssize_t n, const SfAdamRow* r) noexcept nogil:
    # schedulefree.AdamWScheduleFree / RAdamScheduleFree: v = b2*v + (1-b2)*g*g
    # adapt: g = g / (sqrt(v/bc2) + eps);  then as _sf_sgd (cy = lr*(beta1*(1-ckp1)-1))
    cdef real gs = <real>r.gs, wd = <real>r.wd, b2 = <real>r.b2, c2 = <real>r.c2
    cdef real eps = <real>r.eps, w = <real>r.ckp1, cy = <real>r.cy, lr = <real>r.lr
    cdef real bc2 = <real>r.bc2, one = 1, w1
    cdef bint decay = r.decay != 0, first = r.first != 0, hi = r.hi != 0
    cdef bint adapt = r.adapt != 0
    cdef Py_ssize_t i
    cdef real gi, yi, zi, vi
    w1 = one - w
    for i in range(n):
        gi = gs * g[i]
        yi = p[i]
        zi = yi if first else z[i]
        vi = v[i] * b2 + c2 * gi * gi
        v[i] = vi
        if adapt:
            gi = gi / (_sqrt(vi / bc2) + eps)
        if decay:
            gi = gi + wd * yi
        yi = _sf_lerp(yi, zi, w, w1, hi)
        p[i] = yi + cy * gi
        z[i] = zi - lr * gi


cdef void _scale(real* x, const real* g, const real* h, real* s0, real* s1, real* s2,
                 Py_ssize_t n, const ScaleRow* r) noexcept nogil:
    cdef real c = <real>r.gs
    cdef Py_ssize_t i
    for i in range(n):
        x[i] = x[i] * c


# ---- per-tensor kinds (LAMB, LARS, NovoGrad: optax 0.2.x, each in optax's order).
# A read-only pass sums the tensor's norms in fixed lanes (`_lanes`: element k of
# a block joins lane k % 8, in order), `_<kind>_tensor` turns the sums into the
# tensor's scalar row fields in double, then the update loop runs.
cdef inline void _lanes(double* acc, const double* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, n8 = n - n % 8
    cdef int j
    for i in range(0, n8, 8):
        for j in range(8):
            acc[j] = acc[j] + x[i + j]
    for i in range(n8, n):
        acc[i - n8] = acc[i - n8] + x[i]


cdef inline double _lanes_total(const double* acc) noexcept nogil:
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline real _lamb_u(real gi, real pi, real* m, real* v, Py_ssize_t i, const LambRow* r,
                         bint decay, bint write) noexcept nogil:
    # optax.scale_by_adam + add_decayed_weights: the update before the trust ratio
    cdef real mi = <real>r.c1 * gi + <real>r.b1 * m[i]
    cdef real vi = <real>r.c2 * (gi * gi) + <real>r.b2 * v[i]
    if write:
        m[i] = mi
        v[i] = vi
    cdef real u = mi / <real>r.bc1 / (_sqrt(vi / <real>r.bc2 + <real>r.eps_root) + <real>r.eps)
    if decay:
        u = u + <real>r.wd * pi
    return u


cdef void _lamb_sums(const real* p, const real* g, const real* m, const real* v, Py_ssize_t n,
                     const LambRow* r, double* acc) noexcept nogil:
    cdef double a[SUMCH]
    cdef double b[SUMCH]
    cdef real gs = <real>r.gs, u
    cdef bint decay = r.decay != 0
    cdef Py_ssize_t o, k, c
    o = 0
    while o < n:
        c = min(<Py_ssize_t>SUMCH, n - o)
        for k in range(c):
            u = _lamb_u(gs * g[o + k], p[o + k], <real*>m + o, <real*>v + o, k, r, decay, False)
            a[k] = <double>p[o + k] * <double>p[o + k]
            b[k] = <double>u * <double>u
        _lanes(acc, a, c)
        _lanes(acc + 8, b, c)
        o += SUMCH


cdef void _lamb_tensor(LambRow* r, const double* sums, double* ts) noexcept nogil:
    # optax.scale_by_trust_ratio (trust_coefficient 1, eps 0): ||p|| / ||u||, 1 where
    # either is 0; times the learning rate
    cdef double pn = sqrt(sums[0]), un = sqrt(sums[1])
    r.step = r.lr * (1.0 if (pn == 0.0 or un == 0.0) else pn / un)


cdef void _lamb(real* p, const real* g, const real* h, real* m, real* v, real* s2,
                Py_ssize_t n, const LambRow* r) noexcept nogil:
    # m = (1-b1)*g + b1*m;  v = (1-b2)*g*g + b2*v
    # u = (m/bc1) / (sqrt(v/bc2 + eps_root) + eps) (+ wd*p);  p -= (lr*ratio) * u
    cdef real gs = <real>r.gs, st = <real>r.step
    cdef bint decay = r.decay != 0
    cdef Py_ssize_t i
    cdef real pi
    for i in range(n):
        pi = p[i]
        p[i] = pi - st * _lamb_u(gs * g[i], pi, m, v, i, r, decay, True)


cdef void _lars_sums(const real* p, const real* g, const real* s0, const real* s1, Py_ssize_t n,
                     const LarsRow* r, double* acc) noexcept nogil:
    cdef double a[SUMCH]
    cdef double b[SUMCH]
    cdef real gs = <real>r.gs, wd = <real>r.wd, u
    cdef bint decay = r.decay != 0
    cdef Py_ssize_t o, k, c
    o = 0
    while o < n:
        c = min(<Py_ssize_t>SUMCH, n - o)
        for k in range(c):
            u = gs * g[o + k]
            if decay:
                u = u + wd * p[o + k]
            a[k] = <double>p[o + k] * <double>p[o + k]
            b[k] = <double>u * <double>u
        _lanes(acc, a, c)
        _lanes(acc + 8, b, c)
        o += SUMCH


cdef void _lars_tensor(LarsRow* r, const double* sums, double* ts) noexcept nogil:
    # optax.scale_by_trust_ratio: tc * ||p|| / (||u|| + eps), 1 where either norm
    # is 0; then scale_by_learning_rate's -lr
    cdef double pn = sqrt(sums[0]), un = sqrt(sums[1])
    r.nstep = -(r.lr * (1.0 if (pn == 0.0 or un == 0.0) else r.tc * pn / (un + r.eps)))


cdef void _lars(real* p, const real* g, const real* h, real* tr, real* s1, real* s2,
                Py_ssize_t n, const LarsRow* r) noexcept nogil:
    # optax.lars: u = g + wd*p;  u = (-lr*ratio) * u;  trace = u + mom*trace
    # p += trace (nesterov: p += u + mom*trace)
    cdef real gs = <real>r.gs, wd = <real>r.wd, ns = <real>r.nstep, mom = <real>r.mom
    cdef bint decay = r.decay != 0, nesterov = r.nesterov != 0
    cdef Py_ssize_t i
    cdef real u, t
    for i in range(n):
        u = gs * g[i]
        if decay:
            u = u + wd * p[i]
        u = u * ns
        t = u + mom * tr[i]
        tr[i] = t
        p[i] = p[i] + (u + mom * t if nesterov else t)


cdef void _novograd_sums(const real* p, const real* g, const real* s0, const real* s1,
                         Py_ssize_t n, const NovogradRow* r, double* acc) noexcept nogil:
    cdef double a[SUMCH]
    cdef real gs = <real>r.gs, gi
    cdef Py_ssize_t o, k, c
    o = 0
    while o < n:
        c = min(<Py_ssize_t>SUMCH, n - o)
        for k in range(c):
            gi = gs * g[o + k]
            a[k] = <double>gi * <double>gi
        _lanes(acc, a, c)
        o += SUMCH


cdef void _novograd_tensor(NovogradRow* r, const double* sums, double* ts) noexcept nogil:
    # optax.scale_by_novograd: nu = ||g||^2 on the first step, then
    # (1-b2)*||g||^2 + b2*nu (one number per tensor, kept by the engine)
    if r.first != 0:
        ts[0] = sums[0]
    else:
        ts[0] = r.c2 * sums[0] + r.b2 * ts[0]
    r.den = sqrt(ts[0] + r.eps_root) + r.eps


cdef void _novograd(real* p, const real* g, const real* h, real* m, real* s1, real* s2,
                    Py_ssize_t n, const NovogradRow* r) noexcept nogil:
    # u = g / (sqrt(nu + eps_root) + eps) (+ wd*p);  m = u (first step) or b1*m + u
    # p -= lr*m
    cdef real gs = <real>r.gs, den = <real>r.den, wd = <real>r.wd, b1 = <real>r.b1
    cdef real lr = <real>r.lr
    cdef bint decay = r.decay != 0, first = r.first != 0
    cdef Py_ssize_t i
    cdef real u, mi
    for i in range(n):
        u = gs * g[i] / den
        if decay:
            u = u + wd * p[i]
        mi = u if first else b1 * m[i] + u
        m[i] = mi
        p[i] = p[i] - lr * mi


from libc.math cimport pow     # the global kinds' bias correction (Python's x ** y)


# ---- global kinds (Prodigy: prodigyopt 1.1.2, in its order). d, d_max,
# d_numerator and k are engine-held (Data.gstate, group 0's), one set per optimizer.
# Phase 0 (before the read-only pass) fills every tensor's row from d; the pass
# sums, per tensor, <g, p0 - p> and ||s_new||_1 (s_new = b3*s + cs*g, not
# written); phase 1 combines them in tensor order, as the reference's
# per-tensor .item() sums, updates d and fills the update's fields. Two passes:
# the update needs the new d (denominator d*eps), so reads are g, p, p0, s
# then g, p, s, exp_avg, exp_avg_sq and writes p, s, exp_avg, exp_avg_sq
# (p0 written once, on a param's first step).
cdef void _prodigy_sums(const real* p, const real* g, const real* s, const real* p0,
                        Py_ssize_t n, const ProdigyRow* r, double* acc) noexcept nogil:
    cdef double a[SUMCH]
    cdef double b[SUMCH]
    cdef real gs = <real>r.gs, b3 = <real>r.b3r, cs = <real>r.cs, wd = <real>r.wd, gi, sn
    cdef bint first = r.first != 0, l2 = r.l2 != 0
    cdef Py_ssize_t o, k, c
    if r.on == 0:                    # a group with lr 0: no part in d
        return
    o = 0
    while o < n:
        c = min(<Py_ssize_t>SUMCH, n - o)
        for k in range(c):
            gi = gs * g[o + k]
            gi = gi + wd * p[o + k] if l2 else gi     # the reference's grad.add_(p, alpha=wd)
            # torch.dot(g, p0 - p): p0 - p in the param dtype, the products in double
            a[k] = 0.0 if first else <double>gi * <double>(p0[o + k] - p[o + k])
            sn = s[o + k] * b3 + cs * gi
            b[k] = <double>_abs(sn)
        _lanes(acc, a, c)
        _lanes(acc + 8, b, c)
        o += SUMCH


cdef inline double _rows_max(const double* trows, int n, const double* field) noexcept nogil:
    # the largest value of one field (given in the first row) over the tensors'
    # rows: Prodigy's and D-Adaptation's lr = max over the groups
    cdef Py_ssize_t j = field - trows
    cdef double x = 0.0
    cdef int i
    for i in range(n):
        if trows[i * NS + j] > x:
            x = trows[i * NS + j]
    return x


cdef inline double _dadapt_bc(double b1, double b2, double k) noexcept nogil:
    # Prodigy's and DAdaptAdam's bias correction ((1-b2**(k+1))**0.5)/(1-b1**(k+1))
    return pow(1.0 - pow(b2, k + 1.0), 0.5) / (1.0 - pow(b1, k + 1.0))


cdef void _prodigy_global(double* trows, int n, const double* tsums, double* gst,
                          int phase) noexcept nogil:
    # tsums: per tensor (stride TSTRIDE) its sums, 1.0 if it has a grad, its group;
    # gst: group 0's state (Prodigy's is one set per optimizer)
    cdef ProdigyRow* r0 = <ProdigyRow*>trows
    cdef ProdigyRow* r
    cdef double d = gst[0], d_max = gst[1], k = gst[2 + 1], lr = 0.0, bc = 1.0, dlr
    cdef double b1 = r0.b1, b2 = r0.b2, num, den, delta, d_hat, d_new
    cdef int i
    if n == 0:
        return
    lr = _rows_max(trows, n, &r0.lr)   # lr = max over the groups (the reference's)
    if r0.bias != 0:
        bc = _dadapt_bc(b1, b2, k)
    dlr = d * lr * bc
    if phase == 0:
        for i in range(n):
            r = <ProdigyRow*>(trows + i * NS)
            r.mom = 1.0 if b1 > 0.0 else 0.0
            r.b1r = b1
            r.cm = d * (1.0 - b1)
            r.b2r = b2
            r.cv = d * d * (1.0 - b2)
            r.b3r = r0.b3
            r.cs = (d / r.d0) * d if r.safeguard != 0 else (d / r.d0) * dlr
            r.wn = (d / r.d0) * dlr
            r.l2 = 1.0 if (r.wd != 0.0 and r0.decouple == 0) else 0.0
            r.dec = 1.0 if (r.wd != 0.0 and r0.decouple != 0) else 0.0
            r.on = 1.0 if r.lr > 0.0 else 0.0
            r.apply = 0.0
        return
    num = gst[2] * r0.b3
    delta = 0.0
    den = 0.0
    for i in range(n):                 # tensor order, as the reference's Python sums
        r = <ProdigyRow*>(trows + i * NS)
        if tsums[i * TSTRIDE + MAX_SUMS] != 0.0 and r.on != 0:
            delta = delta + r.wn * tsums[i * TSTRIDE]
            den = den + tsums[i * TSTRIDE + 1]
    if den == 0.0:                     # the reference returns before the update
        return
    num = num + delta
    d_new = d
    if lr > 0.0:
        d_hat = r0.d_coef * num / den
        # Python's max(a, b) / min(a, b): a unless b is strictly better
        if d_new == (<ProdigyRow*>(trows + (n - 1) * NS)).d0:   # the last group's d0
            d_new = d_hat if d_hat > d_new else d_new
        d_max = d_hat if d_hat > d_max else d_max
        d_new = d_new * r0.growth
        d_new = d_new if d_new < d_max else d_max
    gst[0] = d_new
    gst[1] = d_max
    gst[2] = num
    gst[3] = k + 1.0
    for i in range(n):
        r = <ProdigyRow*>(trows + i * NS)
        r.deps = d_new * r.eps
        r.dwd = -r.wd * dlr
        r.stepc = -dlr if b1 > 0.0 else -dlr * d_new
        r.apply = 1.0


cdef inline void _prodigy_loop(real* p, const real* g, real* s, real* m, real* v, Py_ssize_t n,
                               const ProdigyRow* r, bint mom) noexcept nogil:
    # every store unconditional, the options as selects on loop-invariant flags
    # (vectorizes); mom: exp_avg exists (b1 > 0), else the update uses g
    cdef real gs = <real>r.gs, wd = <real>r.wd, b1 = <real>r.b1r, cm = <real>r.cm
    cdef real b2 = <real>r.b2r, cv = <real>r.cv, b3 = <real>r.b3r, cs = <real>r.cs
    cdef real deps = <real>r.deps, dwd = <real>r.dwd, stepc = <real>r.stepc
    cdef bint l2 = r.l2 != 0, on = r.on != 0, apply = r.apply != 0, dec = r.dec != 0
    cdef Py_ssize_t i
    cdef real gi, pi, vi, mi, q
    for i in range(n):
        pi = p[i]
        gi = gs * g[i]
        gi = gi + wd * pi if l2 else gi
        vi = v[i] * b2 + cv * (gi * gi) if on else v[i]
        v[i] = vi
        s[i] = s[i] * b3 + cs * gi if on else s[i]
        if mom:
            mi = m[i] * b1 + cm * gi if on else m[i]
            m[i] = mi
        else:
            mi = gi
        q = pi + dwd * pi if dec else pi
        q = q + stepc * (mi / (_sqrt(vi) + deps))
        p[i] = q if apply else pi


cdef void _prodigy(real* p, const real* g, const real* h, real* s, real* p0, real* m, real* v,
                   Py_ssize_t n, const ProdigyRow* r) noexcept nogil:
    # (first) p0 = p;  (on) m = m*b1 + cm*g;  v = v*b2 + cv*(g*g);  s = s*b3 + cs*g
    # (apply) p = p - wd*dlr*p (decoupled);  p = p + stepc * (m or g)/(sqrt(v) + d*eps)
    cdef Py_ssize_t i
    if r.first != 0:                   # a param's first step: p0 = p (the reference's clone)
        for i in range(n):
            p0[i] = p[i]
    if r.mom != 0:
        _prodigy_loop(p, g, s, m, v, n, r, True)
    else:
        _prodigy_loop(p, g, s, m, v, n, r, False)


# ---- D-Adaptation (dadaptation 3.2): DAdaptAdam, DAdaptSGD, DAdaptAdaGrad. Global
# kinds as Prodigy: the engine-held d and sums are group 0's, one set per
# optimizer; phase 0 fills the rows from them, the read-only pass sums per
# tensor, phase 1 combines the sums in tensor order (the reference's per-tensor
# .item() sums) and updates d. Two passes: the sums, then the update (which
# reads the sums' verdict: the reference skips the params when its l1 or
# squared norm of s is 0).
cdef inline double _dadapt_d(double d, double d_hat, double growth) noexcept nogil:
    # Python's max(d, min(d_hat, d*growth_rate)): the first argument unless the
    # second is strictly better
    cdef double m = d * growth
    m = m if m < d_hat else d_hat
    return m if m > d else d


cdef void _dadapt_adam_sums(const real* p, const real* g, const real* s, const real* v,
                            Py_ssize_t n, const DadaptAdamRow* r, double* acc) noexcept nogil:
    # <g, s/(sqrt(v) + eps)> (old s and v; the quotient in the dtype, the product
    # in double) and ||s_new||_1 (s_new = s*sqrt(b2) + cs*g, not written)
    cdef double a[SUMCH]
    cdef double b[SUMCH]
    cdef real gs = <real>r.gs, wd = <real>r.wd, eps = <real>r.eps, sb2 = <real>r.sb2
    cdef real cs = <real>r.cs, gi, sn
    cdef bint l2 = r.l2 != 0
    cdef Py_ssize_t o, k, c
    if r.on == 0:                    # a group with lr 0: no part in d
        return
    o = 0
    while o < n:
        c = min(<Py_ssize_t>SUMCH, n - o)
        for k in range(c):
            gi = gs * g[o + k]
            gi = gi + wd * p[o + k] if l2 else gi      # the reference's grad.add_(p, alpha=wd)
            a[k] = <double>gi * <double>(s[o + k] / (_sqrt(v[o + k]) + eps))
            sn = s[o + k] * sb2 + cs * gi
            b[k] = <double>_abs(sn)
        _lanes(acc, a, c)
        _lanes(acc + 8, b, c)
        o += SUMCH


cdef void _dadapt_adam_global(double* trows, int n, const double* tsums, double* gst,
                              int phase) noexcept nogil:
    # gst: (d, numerator_weighted, k); betas, bias correction, decouple and
    # growth_rate are the first row's (the reference reads group 0's)
    cdef DadaptAdamRow* r0 = <DadaptAdamRow*>trows
    cdef DadaptAdamRow* r
    cdef double d = gst[0], k = gst[2], b1 = r0.b1, b2 = r0.b2, sb2 = pow(r0.b2, 0.5)
    cdef double lr, dlr, bc = 1.0, acum = 0.0, l1 = 0.0, nw
    cdef int i
    if n == 0:
        return
    lr = _rows_max(trows, n, &r0.lr)
    if r0.bias != 0:
        bc = _dadapt_bc(b1, b2, k)
    dlr = d * lr * bc
    if phase == 0:
        for i in range(n):
            r = <DadaptAdamRow*>(trows + i * NS)
            r.b1r = b1
            r.cm = r.ls * dlr * (1.0 - b1)
            r.b2r = b2
            r.c2 = 1.0 - b2
            r.sb2 = sb2
            r.cs = dlr * (1.0 - sb2)
            r.l2 = 1.0 if (r.wd != 0.0 and r0.decouple == 0) else 0.0
            r.dec = 1.0 if (r.wd != 0.0 and r0.decouple != 0) else 0.0
            r.dwd = -r.wd * dlr
            r.on = 1.0 if r.lr > 0.0 else 0.0
            r.apply = 0.0
        return
    for i in range(n):                 # tensor order, as the reference's Python sums
        r = <DadaptAdamRow*>(trows + i * NS)
        if tsums[i * TSTRIDE + MAX_SUMS] != 0.0 and r.on != 0:
            acum = acum + r.ls * dlr * tsums[i * TSTRIDE]
            l1 = l1 + r.ls * tsums[i * TSTRIDE + 1]
    nw = sb2 * gst[1] + (1.0 - sb2) * acum
    if l1 == 0.0:                      # the reference returns before the update
        return
    if lr > 0.0:
        d = _dadapt_d(d, nw / ((1.0 - sb2) * l1), r0.growth)
    gst[0] = d
    gst[1] = nw
    gst[2] = k + 1.0
    for i in range(n):
        (<DadaptAdamRow*>(trows + i * NS)).apply = 1.0


cdef void _dadapt_adam(real* p, const real* g, const real* h, real* s, real* v, real* m,
                       Py_ssize_t n, const DadaptAdamRow* r) noexcept nogil:
    # (on) m = m*b1 + cm*g;  v = v*b2 + (1-b2)*(g*g);  s = s*sqrt(b2) + cs*g
    # (apply) p = p - wd*dlr*p (decouple);  p = p - m/(sqrt(v) + eps)
    cdef real gs = <real>r.gs, wd = <real>r.wd, eps = <real>r.eps, b1 = <real>r.b1r
    cdef real cm = <real>r.cm, b2 = <real>r.b2r, c2 = <real>r.c2, sb2 = <real>r.sb2
    cdef real cs = <real>r.cs, dwd = <real>r.dwd
    cdef bint l2 = r.l2 != 0, on = r.on != 0, apply = r.apply != 0, dec = r.dec != 0
    cdef Py_ssize_t i
    cdef real gi, pi, mi, vi, q
    for i in range(n):
        pi = p[i]
        gi = gs * g[i]
        gi = gi + wd * pi if l2 else gi
        mi = m[i] * b1 + cm * gi if on else m[i]
        m[i] = mi
        vi = v[i] * b2 + c2 * (gi * gi) if on else v[i]
        v[i] = vi
        s[i] = s[i] * sb2 + cs * gi if on else s[i]
        q = pi + dwd * pi if dec else pi
        q = q - mi / (_sqrt(vi) + eps)
        p[i] = q if apply else pi


cdef void _dadapt_sgd_sums(const real* p, const real* g, const real* s, const real* z,
                           Py_ssize_t n, const DadaptSgdRow* r, double* acc) noexcept nogil:
    # k == 0: ||g||^2 (g0_norm's, without the weight decay, as the reference) and
    # ||g + wd*p||^2; else <g, s> (old s) and ||s + dlr*g||^2 (s_new in the dtype)
    cdef double a[SUMCH]
    cdef double b[SUMCH]
    cdef real gs = <real>r.gs, w = <real>r.w, dlr = <real>r.dlr, g0, gi, sn
    cdef bint l2 = r.l2 != 0, k0 = r.k0 != 0
    cdef Py_ssize_t o, k, c
    if r.on == 0:
        return
    o = 0
    while o < n:
        c = min(<Py_ssize_t>SUMCH, n - o)
        for k in range(c):
            g0 = gs * g[o + k]
            gi = g0 + w * p[o + k] if l2 else g0
            sn = s[o + k] + dlr * gi
            a[k] = <double>g0 * <double>g0 if k0 else <double>gi * <double>s[o + k]
            b[k] = <double>gi * <double>gi if k0 else <double>sn * <double>sn
        _lanes(acc, a, c)
        _lanes(acc + 8, b, c)
        o += SUMCH


cdef void _dadapt_sgd_global(double* trows, int n, const double* tsums, double* gst,
                             int phase) noexcept nogil:
    # gst: (d, numerator_weighted, g0_norm, k); weight_decay, momentum and
    # growth_rate are the first row's (the reference reads group 0's)
    cdef DadaptSgdRow* r0 = <DadaptSgdRow*>trows
    cdef DadaptSgdRow* r
    cdef double d = gst[0], nw = gst[1], g0n = gst[2], k = gst[3], ck = 1.0 - r0.mom
    cdef double lr, dlr = 0.0, gsq = 0.0, sk = 0.0
    cdef int i
    if n == 0:
        return
    lr = _rows_max(trows, n, &r0.lr)
    if k != 0.0:
        dlr = d * lr / g0n
    if phase == 0:
        for i in range(n):
            r = <DadaptSgdRow*>(trows + i * NS)
            r.w = r0.wd
            r.l2 = 1.0 if r0.wd != 0.0 else 0.0
            r.k0 = 1.0 if k == 0.0 else 0.0
            r.dlr = dlr
            r.ck = ck
            r.a = 1.0 - ck
            r.on = 1.0 if r.lr > 0.0 else 0.0
            r.apply = 0.0
        return
    if k == 0.0:                       # g0_norm from this step's grads; s = 0
        for i in range(n):
            if tsums[i * TSTRIDE + MAX_SUMS] != 0.0 and (<DadaptSgdRow*>(trows + i * NS)).on != 0:
                gsq = gsq + tsums[i * TSTRIDE]
        g0n = sqrt(gsq)
        if g0n == 0.0:                 # the reference divides by zero: no step
            for i in range(n):
                (<DadaptSgdRow*>(trows + i * NS)).on = 0.0
            return
        dlr = d * lr / g0n
    for i in range(n):                 # tensor order
        r = <DadaptSgdRow*>(trows + i * NS)
        if tsums[i * TSTRIDE + MAX_SUMS] != 0.0 and r.on != 0:
            if k == 0.0:
                sk = sk + (dlr * dlr) * tsums[i * TSTRIDE + 1]
            else:
                nw = nw + dlr * tsums[i * TSTRIDE]
                sk = sk + tsums[i * TSTRIDE + 1]
        r.dlr = dlr
    if sk == 0.0:                      # the reference divides by zero: no step
        return
    if lr > 0.0:
        d = _dadapt_d(d, 2.0 * nw / sqrt(sk), r0.growth)
    gst[0] = d
    gst[1] = nw
    gst[2] = g0n
    gst[3] = k + 1.0
    for i in range(n):
        (<DadaptSgdRow*>(trows + i * NS)).apply = 1.0


cdef void _dadapt_sgd(real* p, const real* g, const real* h, real* s, real* z, real* x0,
                      Py_ssize_t n, const DadaptSgdRow* r) noexcept nogil:
    # (first) x0 = z = p;  (on) s = s + dlr*(g + wd*p)
    # (apply) z = x0 - s;  p = p*(1-ck) + ck*z   (ck = 1 - momentum)
    cdef real gs = <real>r.gs, w = <real>r.w, dlr = <real>r.dlr, a = <real>r.a
    cdef real ck = <real>r.ck
    cdef bint l2 = r.l2 != 0, on = r.on != 0, apply = r.apply != 0
    cdef Py_ssize_t i
    cdef real gi, pi, si, zi
    if r.first != 0:                   # the reference's clones, at a param's first step
        for i in range(n):
            x0[i] = p[i]
            z[i] = p[i]
    for i in range(n):
        pi = p[i]
        gi = gs * g[i]
        gi = gi + w * pi if l2 else gi
        si = s[i] + dlr * gi if on else s[i]
        s[i] = si
        zi = x0[i] - si if apply else z[i]
        z[i] = zi
        p[i] = pi * a + ck * zi if apply else pi


cdef void _dadapt_adagrad_sums(const real* p, const real* g, const real* al, const real* s,
                               Py_ssize_t n, const DadaptAdagradRow* r,
                               double* acc) noexcept nogil:
    # per element, with D = sqrt(alphak) + eps, alphak' = alphak + g*g,
    # s' = s + dlr*g: s'^2/D' - s^2/D, g^2/D' and |s'| - |s| (the terms in the
    # dtype, the differences in double)
    cdef double a[SUMCH]
    cdef double b[SUMCH]
    cdef double e[SUMCH]
    cdef real gs = <real>r.gs, wd = <real>r.wd, eps = <real>r.eps, dlr = <real>r.dlr
    cdef real gi, si, sn, an, dn
    cdef bint decay = r.decay != 0
    cdef Py_ssize_t o, k, c
    o = 0
    while o < n:
        c = min(<Py_ssize_t>SUMCH, n - o)
        for k in range(c):
            gi = gs * g[o + k]
            gi = gi + wd * p[o + k] if decay else gi
            si = s[o + k]
            an = al[o + k] + gi * gi
            dn = _sqrt(an) + eps
            sn = si + dlr * gi
            a[k] = <double>(sn * sn / dn) - <double>(si * si / (_sqrt(al[o + k]) + eps))
            b[k] = <double>(gi * gi / dn)
            e[k] = <double>_abs(sn) - <double>_abs(si)
        _lanes(acc, a, c)
        _lanes(acc + 8, b, c)
        _lanes(acc + 16, e, c)
        o += SUMCH


cdef void _dadapt_adagrad_global(double* trows, int n, const double* tsums, double* gst,
                                 int phase) noexcept nogil:
    # gst: (d, gsq_weighted, sksq_weighted, skl1, k); lr, momentum and
    # growth_rate are the first row's (the reference reads group 0's)
    cdef DadaptAdagradRow* r0 = <DadaptAdagradRow*>trows
    cdef DadaptAdagradRow* r
    cdef double d = gst[0], dlr, ck = 1.0 - r0.momentum, dsk = 0.0, gsq = 0.0, dl1 = 0.0
    cdef double sksq, skl1, gw
    cdef int i
    if n == 0:
        return
    dlr = d * r0.lr
    if phase == 0:
        for i in range(n):
            r = <DadaptAdagradRow*>(trows + i * NS)
            r.dlr = dlr
            r.ck = ck
            r.a = 1.0 - ck
            r.mom = 1.0 if r0.momentum != 0.0 else 0.0
            r.apply = 0.0
        return
    for i in range(n):                 # tensor order
        if tsums[i * TSTRIDE + MAX_SUMS] != 0.0:
            dsk = dsk + tsums[i * TSTRIDE]
            gsq = gsq + tsums[i * TSTRIDE + 1]
            dl1 = dl1 + tsums[i * TSTRIDE + 2]
    sksq = gst[2] + dsk
    skl1 = gst[3] + dl1
    if skl1 == 0.0:                    # the reference returns before the update
        return
    gw = gst[1] + dlr * dlr * gsq
    if r0.lr > 0.0:
        d = _dadapt_d(d, (sksq - gw) / skl1, r0.growth)
    gst[0] = d
    gst[1] = gw
    gst[2] = sksq
    gst[3] = skl1
    gst[4] = gst[4] + 1.0
    for i in range(n):
        (<DadaptAdagradRow*>(trows + i * NS)).apply = 1.0


cdef void _dadapt_adagrad(real* p, const real* g, const real* h, real* al, real* s, real* x0,
                          Py_ssize_t n, const DadaptAdagradRow* r) noexcept nogil:
    # (first) x0 = p;  alphak = alphak + g*g;  s = s + dlr*g
    # (apply) z = x0 - s/(sqrt(alphak) + eps);  p = p*(1-ck) + ck*z (momentum), else z
    cdef real gs = <real>r.gs, wd = <real>r.wd, eps = <real>r.eps, dlr = <real>r.dlr
    cdef real a = <real>r.a, ck = <real>r.ck
    cdef bint decay = r.decay != 0, mom = r.mom != 0, apply = r.apply != 0
    cdef Py_ssize_t i
    cdef real gi, pi, ai, si, zi, q
    if r.first != 0:
        for i in range(n):
            x0[i] = p[i]
    for i in range(n):
        pi = p[i]
        gi = gs * g[i]
        gi = gi + wd * pi if decay else gi
        ai = al[i] + gi * gi
        al[i] = ai
        si = s[i] + dlr * gi
        s[i] = si
        zi = x0[i] - si / (_sqrt(ai) + eps)
        q = pi * a + ck * zi if mom else zi
        p[i] = q if apply else pi


# ---- DoG and LDoG (dog-optimizer 1.0.3). DoG: a global kind, per group
# rbar = max(rbar, ||x - x0||) (first step: reps_rel*(1 + ||x||)),
# G += ||g||^2 (first: + eps), eta = lr*rbar/sqrt(G), all over the group's
# params; LDoG: the same per tensor (engine-held rbar, G, eta per tensor).
# Two passes: sums (read p, x0, g), then the update (read p, g; write p, x0 on
# a param's first step). Sums: per tensor, then combined in tensor order.
cdef void _dog_sums(const real* p, const real* g, const real* x0, const real* s1,
                    Py_ssize_t n, const DogRow* r, double* acc) noexcept nogil:
    cdef double a[SUMCH]
    cdef double b[SUMCH]
    cdef real gs = <real>r.gs, wd = <real>r.wd, gi, dx
    cdef bint first = r.first != 0, decay = r.decay != 0
    cdef Py_ssize_t o, k, c
    o = 0
    while o < n:
        c = min(<Py_ssize_t>SUMCH, n - o)
        for k in range(c):
            gi = gs * g[o + k]
            gi = gi + wd * p[o + k] if decay else gi   # the reference's grad.add_(p, alpha=wd)
            dx = p[o + k] if first else p[o + k] - x0[o + k]
            a[k] = <double>dx * <double>dx
            b[k] = <double>gi * <double>gi
        _lanes(acc, a, c)
        _lanes(acc + 8, b, c)
        o += SUMCH


cdef void _ldog_sums(const real* p, const real* g, const real* x0, const real* s1,
                     Py_ssize_t n, const LdogRow* r, double* acc) noexcept nogil:
    _dog_sums(p, g, x0, s1, n, <const DogRow*>r, acc)      # the same row layout


cdef inline void _dog_eta(double* st, double dd, double gg, double reps, double eps, double lr,
                          double has_init, double init_eta) noexcept nogil:
    # st = (rbar, G, eta); G == 0: the first step (G >= eps > 0 after it)
    cdef bint first = st[1] == 0.0
    cdef double dn = sqrt(dd)
    if first:
        st[0] = reps * (1.0 + dn)
        st[1] = gg + eps
    else:
        st[0] = dn if dn > st[0] else st[0]          # torch.maximum(rbar, d)
        st[1] = st[1] + gg
    st[2] = lr * st[0] / sqrt(st[1])
    if first and has_init != 0:
        st[2] = init_eta


cdef void _ldog_tensor(LdogRow* r, const double* sums, double* ts) noexcept nogil:
    _dog_eta(ts, sums[0], sums[1], r.reps, r.eps, r.lr, r.has_init, r.init_eta)
    r.neta = -ts[2]


cdef void _dog_global(double* trows, int n, const double* tsums, double* gst,
                      int phase) noexcept nogil:
    # per group g, gst + g*MAX_GSTATE = (rbar, G, eta, sum dd, sum gg, has grads)
    cdef DogRow* r
    cdef double* st
    cdef int i
    if phase == 0:
        return
    for i in range(n):
        st = gst + <int>tsums[i * TSTRIDE + MAX_SUMS + 1] * MAX_GSTATE
        st[3] = 0.0
        st[4] = 0.0
        st[5] = 0.0
    for i in range(n):                 # tensor order
        if tsums[i * TSTRIDE + MAX_SUMS] != 0.0:
            st = gst + <int>tsums[i * TSTRIDE + MAX_SUMS + 1] * MAX_GSTATE
            st[3] = st[3] + tsums[i * TSTRIDE]
            st[4] = st[4] + tsums[i * TSTRIDE + 1]
            st[5] = 1.0
    for i in range(n):
        r = <DogRow*>(trows + i * NS)
        st = gst + <int>tsums[i * TSTRIDE + MAX_SUMS + 1] * MAX_GSTATE
        if st[5] == 1.0:               # once per group that has grads
            st[5] = 2.0
            _dog_eta(st, st[3], st[4], r.reps, r.eps, r.lr, r.has_init, r.init_eta)
        r.neta = -st[2]


cdef inline void _dog_loop(real* p, const real* g, real* x0, Py_ssize_t n,
                           const DogRow* r) noexcept nogil:
    # (first) x0 = p;  g = g + wd*p (wd > 0);  p = p + (-eta)*g
    cdef real gs = <real>r.gs, wd = <real>r.wd, neta = <real>r.neta, gi, pi
    cdef bint decay = r.decay != 0
    cdef Py_ssize_t i
    if r.first != 0:
        for i in range(n):
            x0[i] = p[i]
    for i in range(n):
        pi = p[i]
        gi = gs * g[i]
        gi = gi + wd * pi if decay else gi
        p[i] = pi + neta * gi


cdef void _dog(real* p, const real* g, const real* h, real* x0, real* s1, real* s2,
               Py_ssize_t n, const DogRow* r) noexcept nogil:
    _dog_loop(p, g, x0, n, r)


cdef void _ldog(real* p, const real* g, const real* h, real* x0, real* s1, real* s2,
                Py_ssize_t n, const LdogRow* r) noexcept nogil:
    # _dog_loop's body, written out (scripts/check_vectorization.py counts each
    # kernel's own loops)
    cdef real gs = <real>r.gs, wd = <real>r.wd, neta = <real>r.neta, gi, pi
    cdef bint decay = r.decay != 0
    cdef Py_ssize_t i
    if r.first != 0:
        for i in range(n):
            x0[i] = p[i]
    for i in range(n):
        pi = p[i]
        gi = gs * g[i]
        gi = gi + wd * pi if decay else gi
        p[i] = pi + neta * gi


# _apply(kind, ...): the dispatch over kinds, generated from the table.
include "_table_dispatch.pxi"


# Weight EMA (lrfast.EMA), run on each task's chunk right after its update
# loop, while p is in cache: torch's lerp, ema += w*(p - ema), in its two
# branches (w < 0.5, else p - (p - ema)*(1 - w)); w >= 1 copies p. w and 1-w
# come in double and are rounded once (twin: lrfast._reference.ema_blend).
cdef Py_ssize_t _ema_block = 2048   # elements per update+blend block (elementwise: any size)


def _set_ema_block(Py_ssize_t n):
    """Elements per update+blend block of an EMA step (benchmarks; results
    do not depend on it)."""
    global _ema_block
    if n < 64 or n % 64:
        raise ValueError("the EMA block is a positive multiple of 64 elements")
    _ema_block = n


cdef void _ema_blend(const real* p, real* e, Py_ssize_t n, double w) noexcept nogil:
    cdef real a = <real>w, b = <real>(1.0 - w)
    cdef Py_ssize_t i
    if w >= 1.0:
        for i in range(n):
            e[i] = p[i]
    elif w < 0.5:
        for i in range(n):
            e[i] = e[i] + a * (p[i] - e[i])
    else:
        for i in range(n):
            e[i] = p[i] - (p[i] - e[i]) * b


cdef inline real _adam_p(real* p, const real* g, real* m, real* v, Py_ssize_t i,
                         real gs, real wd, real c1, real b2, real c2, real ss, real bc2s,
                         real eps, real dm, bint l2, bint decoupled) noexcept nogil:
    # one element of _adam's loop without amsgrad; returns the new p (also stored)
    cdef real gi, mi, vi, pi
    gi = _grad(g[i], p[i], gs, wd, l2)
    mi = m[i] + c1 * (gi - m[i])
    m[i] = mi
    vi = v[i] * b2 + c2 * gi * gi
    v[i] = vi
    pi = _decay(p[i], dm, decoupled) - ss * mi / (_sqrt(vi) / bc2s + eps)
    p[i] = pi
    return pi


cdef void _adam_ema(real* p, const real* g, real* m, real* v, real* e,
                    Py_ssize_t n, const AdamRow* r, double w) noexcept nogil:
    # _adam's loop (without amsgrad) with the blend of the new p fused in (the
    # same bits as _adam then _ema_blend): one pass with the average as a fifth
    # stream, so the step moves only the average's extra bytes. One loop per
    # blend branch, so each is branch-free and vectorizes.
    cdef real gs = <real>r.gs, wd = <real>r.wd, c1 = <real>r.c1, b2 = <real>r.b2
    cdef real c2 = <real>r.c2, ss = <real>r.step_size, bc2s = <real>r.bc2_sqrt
    cdef real eps = <real>r.eps, dm = <real>r.dm
    cdef real a = <real>w, b = <real>(1.0 - w)
    cdef bint l2 = r.l2 != 0, decoupled = r.decoupled != 0
    cdef Py_ssize_t i
    cdef real pi
    if w >= 1.0:
        for i in range(n):
            e[i] = _adam_p(p, g, m, v, i, gs, wd, c1, b2, c2, ss, bc2s, eps, dm, l2,
                           decoupled)
    elif w < 0.5:
        for i in range(n):
            pi = _adam_p(p, g, m, v, i, gs, wd, c1, b2, c2, ss, bc2s, eps, dm, l2,
                         decoupled)
            e[i] = e[i] + a * (pi - e[i])
    else:
        for i in range(n):
            pi = _adam_p(p, g, m, v, i, gs, wd, c1, b2, c2, ss, bc2s, eps, dm, l2,
                         decoupled)
            e[i] = pi - (pi - e[i]) * b


# _run_task calls _adam_ema through these pointers, never inlined: inlined there,
# gcc left its loop scalar (the same cold-part placement as sparse_rows' walk).
ctypedef void (*_adam_ema32_t)(float*, const float*, float*, float*, float*,
                               Py_ssize_t, const AdamRow*, double) noexcept nogil
ctypedef void (*_adam_ema64_t)(double*, const double*, double*, double*, double*,
                               Py_ssize_t, const AdamRow*, double) noexcept nogil
cdef _adam_ema32_t _adam_ema32 = NULL
cdef _adam_ema64_t _adam_ema64 = NULL
_adam_ema32 = _adam_ema[float]
_adam_ema64 = _adam_ema[double]


# Read-only reduction over one block: sum of squares and a non-finite probe,
# eight fixed lanes in double combined pairwise, so the result is the same on
# every thread count and ISA build.
cdef void _sumsq(const real* x, Py_ssize_t n, double* out_sum, double* out_probe) noexcept nogil:
    cdef double acc[8]
    cdef double probe[8]
    cdef double xi
    cdef Py_ssize_t i, j, n8 = n - n % 8
    for j in range(8):
        acc[j] = 0.0
        probe[j] = 0.0
    for i in range(0, n8, 8):
        for j in range(8):
            xi = x[i + j]
            acc[j] = acc[j] + xi * xi
            probe[j] = probe[j] + xi * 0.0     # NaN iff some x is inf or NaN
    for i in range(n8, n):
        xi = x[i]
        acc[i - n8] = acc[i - n8] + xi * xi
        probe[i - n8] = probe[i - n8] + xi * 0.0
    out_sum[0] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    out_probe[0] = ((probe[0] + probe[1]) + (probe[2] + probe[3])) + (
        (probe[4] + probe[5]) + (probe[6] + probe[7]))


cdef double _pairwise(const double* x, Py_ssize_t n) noexcept nogil:
    cdef double s
    cdef Py_ssize_t i
    if n <= 8:
        s = 0.0
        for i in range(n):
            s = s + x[i]
        return s
    cdef Py_ssize_t h = n // 2
    return _pairwise(x, h) + _pairwise(x + h, n - h)


# --------------------------------------------------------------------------
# The engine: C records for tensors and tasks, built once, stepped many times.
# --------------------------------------------------------------------------
cdef struct TensorRec:
    char* p
    char* g                    # this step's grad (NULL: no grad, skip)
    char* h                    # this step's auxiliary input (DiagonalNewton: Hessian diagonal)
    char* s[MAX_STATES]        # state arrays, NULL when not allocated
    char* e                    # weight EMA average (Engine.set_ema), NULL: none
    Py_ssize_t size
    int dtype                  # 0 float32, 1 float64
    int typenum                # the param's numpy type number at registration
    int itemsize
    int group
    int row                    # this step's scalar row
    int active                 # had a grad in the last step
    int c_contig, f_contig
    int b0, nb                 # its reduction blocks: d.blocks[b0 .. b0+nb-1]
    double ts[MAX_TSTATE]      # per-tensor scalar state (NovoGrad's nu)
    # low precision (_lowp.pxi); lp == 0: none of these apply
    int scode                  # the param's (and grad's) storage: _store_code
    int lp                     # staged through float32 buffers
    int pfmt                   # the param's format (F_NATIVE, F_BF16, F_F16)
    char* master               # float32 master copy of a 16-bit param, or NULL
    int sfmt[MAX_STATES]       # each state's format (F_*)
    int styp[MAX_STATES]       # each state's numpy type number
    float* amax[MAX_STATES]    # an 8-bit state's per-block absmax
    unsigned long long sr_id   # stochastic rounding: the tensor index of its key
    Py_ssize_t sr_off          # ... and the element index of element 0 (a piece's offset)


cdef struct Task:
    int tensor
    Py_ssize_t start
    Py_ssize_t n


cdef struct Data:
    int kind
    int ntensors
    TensorRec* t
    int ntasks
    Task* tasks
    int nparts
    int* part_first            # tasks of part k: part_first[k] .. part_first[k+1]-1
    int nblocks
    Task* blocks               # reduction blocks (fixed size BLOCK)
    double* bsum
    double* bprobe
    int nrows_cap
    double* rows
    double* bred               # per block: MAX_SUMS per-tensor-kind sums
    double* trows              # per tensor: its own row (per-tensor kinds, clip_norm)
    int use_trows              # this step reads trows, not rows
    double clip_value          # > 0: grads clipped elementwise to [-c, c] as they are read
    int ema_on                 # this step blends the EMA averages (weight ema_w)
    double ema_w
    # global kinds (Prodigy, DoG): the engine-held state, MAX_GSTATE per group,
    # and per tensor its sums (MAX_SUMS), 1.0 if it has a grad, and its group
    # (stride TSTRIDE)
    int ngroups
    double* gstate
    double* tsums
    # stochastic rounding of 16-bit params and states (low precision)
    int sr
    unsigned long long sr_seed
    unsigned long long sr_step


cdef inline char* _shift(char* base, Py_ssize_t start, int itemsize) noexcept nogil:
    return base + start * itemsize if base != NULL else NULL


cdef inline void _clipped(real* out, const real* g, Py_ssize_t n, real c) noexcept nogil:
    # torch's clip_grad_value_: clamp to [-c, c] (a NaN stays NaN)
    cdef Py_ssize_t i
    cdef real x, nc = -c
    for i in range(n):
        x = g[i]
        out[i] = nc if x < nc else (c if x > c else x)


cdef void _apply_at(Data* d, TensorRec* t, Py_ssize_t o, Py_ssize_t n, const char* g,
                    const double* r) noexcept nogil:
    # The kernel on elements [o, o+n) of tensor t, reading the grad from g (its
    # element o): the one place the dispatch is expanded per dtype (a single
    # copy of every loop in the library, whatever the caller).
    if t.dtype == 0:
        _apply(d.kind, <float*>t.p + o, <const float*>g,
               <const float*>_shift(t.h, o, 4), <float*>_shift(t.s[0], o, 4),
               <float*>_shift(t.s[1], o, 4), <float*>_shift(t.s[2], o, 4),
               <float*>_shift(t.s[3], o, 4), n, r)
    else:
        _apply(d.kind, <double*>t.p + o, <const double*>g,
               <const double*>_shift(t.h, o, 8), <double*>_shift(t.s[0], o, 8),
               <double*>_shift(t.s[1], o, 8), <double*>_shift(t.s[2], o, 8),
               <double*>_shift(t.s[3], o, 8), n, r)


cdef void _run_clipped(Data* d, TensorRec* t, Py_ssize_t o, Py_ssize_t n,
                       const double* r) noexcept nogil:
    # clip_value: the task in chunks of SUMCH, each grad chunk clipped into a
    # stack buffer the kernel reads at once (still in L1: no second pass)
    cdef float fb[SUMCH]
    cdef double db[SUMCH]
    cdef Py_ssize_t e, c
    e = o
    while e < o + n:
        c = min(<Py_ssize_t>SUMCH, o + n - e)
        if t.dtype == 0:
            _clipped(fb, <const float*>t.g + e, c, <float>d.clip_value)
            _apply_at(d, t, e, c, <const char*>fb, r)
        else:
            _clipped(db, <const double*>t.g + e, c, d.clip_value)
            _apply_at(d, t, e, c, <const char*>db, r)
        e += SUMCH


include "_lowp.pxi"


cdef void _run_task(Data* d, int k) noexcept nogil:
    cdef Task* tk = &d.tasks[k]
    cdef TensorRec* t = &d.t[tk.tensor]
    cdef bint ema = d.ema_on and t.e != NULL    # a param without grad is averaged too
    if t.g == NULL and not ema:
        return
    cdef const double* r = (d.trows + tk.tensor * NS) if d.use_trows else (d.rows + t.row * NS)
    cdef Py_ssize_t o = tk.start, end = tk.start + tk.n, n = tk.n
    if (ema and d.kind == K_ADAM and t.g != NULL and not t.lp and d.clip_value <= 0.0
            and (<const AdamRow*>r).amsgrad == 0):
        # Adam (and AdamW) with the blend in the same loop, over the whole task
        if t.dtype == 0:
            _adam_ema32(<float*>t.p + o, <const float*>t.g + o, <float*>_shift(t.s[0], o, 4),
                        <float*>_shift(t.s[1], o, 4), <float*>t.e + o, n,
                        <const AdamRow*>r, d.ema_w)
        else:
            _adam_ema64(<double*>t.p + o, <const double*>t.g + o,
                        <double*>_shift(t.s[0], o, 8), <double*>_shift(t.s[1], o, 8),
                        <double*>t.e + o, n, <const AdamRow*>r, d.ema_w)
        return
    while o < end:
        if ema:           # blocks small enough that p is still in L1/L2 for the blend
            n = min(_ema_block, end - o)
        if t.g == NULL:
            pass
        elif t.lp:
            _run_staged(d, t, o, n, r)
        elif d.clip_value > 0.0:
            _run_clipped(d, t, o, n, r)
        else:
            _apply_at(d, t, o, n, _shift(t.g, o, t.itemsize), r)
        if ema:
            if t.dtype == 0:
                _ema_blend(<const float*>t.p + o, <float*>t.e + o, n, d.ema_w)
            else:
                _ema_blend(<const double*>t.p + o, <double*>t.e + o, n, d.ema_w)
        o += n


cdef void _run_part(Data* d, Py_ssize_t k) noexcept nogil:
    cdef int j
    for j in range(d.part_first[k], d.part_first[k + 1]):
        _run_task(d, j)


cdef void _run(Data* d, int nt) noexcept nogil:
    global _parallel_used
    cdef Py_ssize_t k
    if nt > d.nparts:          # never more threads than work parts
        nt = d.nparts
    if nt <= 1:
        for k in range(d.nparts):
            _run_part(d, k)
    else:
        _parallel_used = 1
        for k in prange(d.nparts, schedule='static', num_threads=nt):
            _run_part(d, k)


cdef void _reduce_block(Data* d, Py_ssize_t k) noexcept nogil:
    # grad sum of squares and non-finite probe; the auxiliary input (if any)
    # joins the probe, so skip_nonfinite covers it too
    cdef Task* b = &d.blocks[k]
    cdef TensorRec* t = &d.t[b.tensor]
    cdef double hs = 0.0, hp = 0.0
    if t.g == NULL:
        d.bsum[k] = 0.0
        d.bprobe[k] = 0.0
        return
    if t.scode >= 2:
        _sumsq16(t.pfmt, <const uint16_t*>t.g + b.start, b.n, &d.bsum[k], &d.bprobe[k])
    elif t.dtype == 0:
        _sumsq(<const float*>t.g + b.start, b.n, &d.bsum[k], &d.bprobe[k])
        if t.h != NULL:
            _sumsq(<const float*>t.h + b.start, b.n, &hs, &hp)
    else:
        _sumsq(<const double*>t.g + b.start, b.n, &d.bsum[k], &d.bprobe[k])
        if t.h != NULL:
            _sumsq(<const double*>t.h + b.start, b.n, &hs, &hp)
    d.bprobe[k] = d.bprobe[k] + hp


cdef void _reduce(Data* d, int nt, double* sumsq, bint* finite) noexcept nogil:
    global _parallel_used
    cdef Py_ssize_t k
    if nt > d.nblocks:
        nt = d.nblocks
    if nt <= 1:
        for k in range(d.nblocks):
            _reduce_block(d, k)
    else:
        _parallel_used = 1
        for k in prange(d.nblocks, schedule='static', num_threads=nt):
            _reduce_block(d, k)
    sumsq[0] = _pairwise(d.bsum, d.nblocks)
    cdef double probe = _pairwise(d.bprobe, d.nblocks)
    finite[0] = probe == 0.0


cdef void _sums_block(Data* d, Py_ssize_t k) noexcept nogil:
    # a per-tensor kind's read-only pass over one block (grads clipped as read)
    cdef Task* b = &d.blocks[k]
    cdef TensorRec* t = &d.t[b.tensor]
    cdef double acc[MAX_SUMS * 8]
    cdef float fb[SUMCH]
    cdef double db[SUMCH]
    cdef const double* r = d.trows + b.tensor * NS
    cdef Py_ssize_t e, c, o = b.start
    cdef int j
    for j in range(MAX_SUMS * 8):
        acc[j] = 0.0
    if t.g != NULL:
        if d.clip_value > 0.0:         # chunks of SUMCH (a multiple of 8: the same lanes)
            e = o
            while e < o + b.n:
                c = min(<Py_ssize_t>SUMCH, o + b.n - e)
                if t.dtype == 0:
                    _clipped(fb, <const float*>t.g + e, c, <float>d.clip_value)
                    _apply_sums(d.kind, <const float*>t.p + e, fb,
                                <const float*>_shift(t.s[0], e, 4),
                                <const float*>_shift(t.s[1], e, 4), c, r, acc)
                else:
                    _clipped(db, <const double*>t.g + e, c, d.clip_value)
                    _apply_sums(d.kind, <const double*>t.p + e, db,
                                <const double*>_shift(t.s[0], e, 8),
                                <const double*>_shift(t.s[1], e, 8), c, r, acc)
                e += SUMCH
        elif t.dtype == 0:
            _apply_sums(d.kind, <const float*>t.p + o, <const float*>t.g + o,
                        <const float*>_shift(t.s[0], o, 4), <const float*>_shift(t.s[1], o, 4),
                        b.n, r, acc)
        else:
            _apply_sums(d.kind, <const double*>t.p + o, <const double*>t.g + o,
                        <const double*>_shift(t.s[0], o, 8), <const double*>_shift(t.s[1], o, 8),
                        b.n, r, acc)
    for j in range(MAX_SUMS):
        d.bred[k * MAX_SUMS + j] = _lanes_total(acc + 8 * j)


cdef double _pairwise_strided(const double* x, Py_ssize_t n, Py_ssize_t stride) noexcept nogil:
    # _pairwise over x[0], x[stride], ... (the same tree)
    cdef double s
    cdef Py_ssize_t i
    if n <= 8:
        s = 0.0
        for i in range(n):
            s = s + x[i * stride]
        return s
    cdef Py_ssize_t h = n // 2
    return _pairwise_strided(x, h, stride) + _pairwise_strided(x + h * stride, n - h, stride)


cdef void _tensor_rows(Data* d, int nt, double clip_norm) noexcept nogil:
    # Each tensor's own row: its group's row, gs times the per-tensor clip_norm
    # factor (Keras clipnorm: c / max(||g||, c)); for a per-tensor kind, the
    # read-only pass, then each tensor's sums (pairwise over its blocks, in
    # block order) into tsums, which _tensor_finish turns into the rows.
    global _parallel_used
    cdef Py_ssize_t i, k, j
    cdef TensorRec* t
    cdef double* tr
    cdef double nrm
    cdef int nsums = _NSUMS[d.kind]
    for i in range(d.ntensors):
        t = &d.t[i]
        tr = d.trows + i * NS
        memcpy(tr, d.rows + t.row * NS, NS * sizeof(double))
        if clip_norm > 0.0 and t.g != NULL:
            nrm = sqrt(_pairwise(d.bsum + t.b0, t.nb))
            tr[0] = tr[0] * (clip_norm / (nrm if not nrm <= clip_norm else clip_norm))
    d.use_trows = 1
    if nsums == 0:
        return
    if _GLOBAL[d.kind]:                # a global kind's rows from its state (phase 0)
        _apply_global(d.kind, d.trows, d.ntensors, d.tsums, d.gstate, 0)
    if nt > d.nblocks:
        nt = d.nblocks
    if nt <= 1:
        for k in range(d.nblocks):
            _sums_block(d, k)
    else:
        _parallel_used = 1
        for k in prange(d.nblocks, schedule='static', num_threads=nt):
            _sums_block(d, k)
    # each tensor's sums (pairwise over its blocks), whether it has a grad, its group
    for i in range(d.ntensors):
        t = &d.t[i]
        for j in range(nsums):
            d.tsums[i * TSTRIDE + j] = (
                _pairwise_strided(d.bred + t.b0 * MAX_SUMS + j, t.nb, MAX_SUMS)
                if t.g != NULL else 0.0)
        d.tsums[i * TSTRIDE + MAX_SUMS] = 1.0 if t.g != NULL else 0.0
        d.tsums[i * TSTRIDE + MAX_SUMS + 1] = t.group


cdef void _tensor_finish(Data* d) noexcept nogil:
    # After _tensor_rows (and the step's sums hook, which may have replaced the
    # tensors' sums): a global kind's function combines them in tensor order
    # (phase 1); a per-tensor kind fills each tensor's fields from its own.
    cdef Py_ssize_t i
    if _NSUMS[d.kind] == 0:
        return
    if _GLOBAL[d.kind]:
        _apply_global(d.kind, d.trows, d.ntensors, d.tsums, d.gstate, 1)
        return
    for i in range(d.ntensors):
        if d.t[i].g != NULL:
            _apply_tensor(d.kind, d.trows + i * NS, d.tsums + i * TSTRIDE, d.t[i].ts)


cdef inline int _dtype_code(cnp.ndarray a):
    cdef int tn = cnp.PyArray_TYPE(a)
    if tn == cnp.NPY_FLOAT32:
        return 0
    if tn == cnp.NPY_FLOAT64:
        return 1
    return -1


cdef int _bf16_num = -1      # ml_dtypes' bfloat16 type number, once one is registered
_STORE_NAMES = ("float32", "float64", "bfloat16", "float16")


def _register_bf16(dt):
    global _bf16_num
    _bf16_num = np.dtype(dt).num


cdef inline int _store_code(cnp.ndarray a):
    # 0 float32, 1 float64, 2 bfloat16 (ml_dtypes), 3 float16, -1 other
    cdef int tn = cnp.PyArray_TYPE(a)
    if tn == cnp.NPY_FLOAT32:
        return 0
    if tn == cnp.NPY_FLOAT64:
        return 1
    if tn == cnp.NPY_FLOAT16:
        return 3
    if tn == _bf16_num:
        return 2
    return -1


cdef int _check_array(object x, str what, str where, TensorRec* t) except -1:
    # One input array (grad or auxiliary input) against its param's record:
    # type, dtype, byte order, shape, layout, alignment. Raises; never writes.
    if not cnp.PyArray_CheckExact(x):
        if not cnp.PyArray_Check(x):
            raise TypeError(f"{where}: {what} must be a numpy ndarray, got {type(x).__name__}")
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(f"{where}: {what} is a masked array; its mask would be ignored "
                            f"(pass {what}.filled(0) or a plain ndarray)")
    cdef cnp.ndarray a = <cnp.ndarray>x
    if _store_code(a) != t.scode:
        raise TypeError(f"{where}: {what} dtype {a.dtype} != param dtype "
                        f"{_STORE_NAMES[t.scode]}")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"{where}: {what} has non-native byte order ({a.dtype}); "
                        f"use {what}.astype({what}.dtype.newbyteorder('='))")
    if cnp.PyArray_SIZE(a) != t.size:
        raise ValueError(f"{where}: {what} shape {x.shape} does not match its param "
                         f"({t.size} elements)")
    if not ((t.c_contig and cnp.PyArray_IS_C_CONTIGUOUS(a))
            or (t.f_contig and cnp.PyArray_IS_F_CONTIGUOUS(a))):
        raise ValueError(f"{where}: {what} memory layout differs from the param's "
                         f"(param is {'C' if t.c_contig else 'F'}-contiguous; pass "
                         f"np.{'ascontiguousarray' if t.c_contig else 'asfortranarray'}"
                         f"({what}) or an array of the same layout)")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{where}: {what} is not aligned")
    return 0


cdef class Engine:
    """Fused multi-tensor stepper for one optimizer (internal; see lrfast.optim).

    Parameters
    ----------
    kind : int            kernel kind (KINDS)
    params : list         validated writable contiguous float32/float64 ndarrays
                          (or views of them: a sharded optimizer passes slices)
    states : list         per param, a list of MAX_STATES state arrays or None
    groups : list[int]    group index of each param (names errors, picks rows)
    part_elems : int      target elements per part (0: automatic)
    aux_name : str        what the auxiliary input is called in errors

    The engine holds a reference to every param and state array for its whole
    life, records each param's geometry (data pointer, dtype, shape, layout)
    and refuses to step if any of it changed since (numpy lets users change a
    live array's dtype, shape or buffer). Each step holds the grads for the
    whole call (a snapshot of the sequence it was given).
    """
    cdef Data d
    cdef Policy _pol, _pol_norm        # adaptive thread counts (seeded in __cinit__)
    cdef list _params, _states, _shapes
    cdef list _extras              # per param: its master copy and absmax arrays (low precision)
    cdef readonly bint lowp        # some tensor is staged (16-bit param or non-float32 state)
    cdef tuple _geom
    cdef int _busy
    cdef Py_ssize_t _nw
    cdef uintptr_t* _wlo
    cdef uintptr_t* _whi
    cdef int* _wown
    cdef readonly list ema         # the weight EMA averages (set_ema), or None
    cdef int _row_len
    cdef int _max_row              # largest row index a step needs (row map set)
    cdef bint _row_map             # rows picked by the map, not by group
    cdef readonly Py_ssize_t total_elements
    cdef readonly int ntensors
    cdef public str aux_name

    def __cinit__(self):
        _policy_seed(&self._pol)
        _policy_seed(&self._pol_norm)
        self.d.t = NULL
        self.d.tasks = NULL
        self.d.part_first = NULL
        self.d.blocks = NULL
        self.d.bsum = NULL
        self.d.bprobe = NULL
        self.d.rows = NULL
        self.d.bred = NULL
        self.d.tsums = NULL
        self.d.gstate = NULL
        self.d.trows = NULL
        self._wlo = NULL
        self._whi = NULL
        self._wown = NULL

    def __dealloc__(self):
        free(self.d.t)
        free(self.d.tasks)
        free(self.d.part_first)
        free(self.d.blocks)
        free(self.d.bsum)
        free(self.d.bprobe)
        free(self.d.rows)
        free(self.d.bred)
        free(self.d.tsums)
        free(self.d.gstate)
        free(self.d.trows)
        free(self._wlo)
        free(self._whi)
        free(self._wown)

    def __init__(self, int kind, list params, list states, list groups, Py_ssize_t part_elems=0,
                 *, str aux_name="auxiliary input", lowp=None):
        cdef int n = len(params), i, j
        cdef cnp.ndarray a
        if not 0 <= kind < N_KINDS:
            raise ValueError(f"unknown kernel kind {kind}")
        if len(states) != n or len(groups) != n:
            raise ValueError("params, states and groups must have the same length")
        self.d.kind = kind
        self._row_len = _ROW_LEN[kind]
        self.aux_name = aux_name
        self.d.ntensors = n
        self.ntensors = n
        self._params = list(params)
        self._states = [list(s) + [None] * (MAX_STATES - len(s)) if s is not None
                        else [None] * MAX_STATES for s in states]
        self._shapes = [x.shape for x in params]
        self.d.t = <TensorRec*>calloc(max(n, 1), sizeof(TensorRec))
        if self.d.t == NULL:
            raise MemoryError()
        cdef Py_ssize_t total = 0
        self._extras = [[] for _ in range(n)]
        for i in range(n):
            a = params[i]
            self.d.t[i].p = <char*>cnp.PyArray_DATA(a)
            self.d.t[i].size = cnp.PyArray_SIZE(a)
            self.d.t[i].scode = _store_code(a)
            self.d.t[i].dtype = 1 if self.d.t[i].scode == 1 else 0
            self.d.t[i].typenum = cnp.PyArray_TYPE(a)
            self.d.t[i].itemsize = a.itemsize
            self.d.t[i].group = groups[i]
            self.d.t[i].c_contig = cnp.PyArray_IS_C_CONTIGUOUS(a)
            self.d.t[i].f_contig = cnp.PyArray_IS_F_CONTIGUOUS(a)
            for j in range(MAX_STATES):
                s = self._states[i][j]
                self.d.t[i].s[j] = <char*>cnp.PyArray_DATA(s) if s is not None else NULL
                self.d.t[i].styp[j] = cnp.PyArray_TYPE(s) if s is not None else -1
            total += self.d.t[i].size
        self.total_elements = total
        self._set_lowp(lowp)
        self._geom = tuple(self._geometry(i) for i in range(n))
        if kind != K_SCALE:
            self._build_written()
        self._build_tasks(part_elems)
        self._build_blocks()
        self._ensure_rows(n + 1)
        for i in range(n):
            self.d.t[i].row = self.d.t[i].group
        self._row_map = False
        self._max_row = max(groups) if n else 0
        self.d.ngroups = (max(groups) + 1) if n else 1
        self.d.gstate = <double*>calloc(self.d.ngroups * MAX_GSTATE, sizeof(double))
        if self.d.gstate == NULL:
            raise MemoryError()

    cdef _set_lowp(self, lowp):
        # lowp: None, or {"pfmt": [...], "sfmt": [[...]], "master": [...],
        # "amax": [[...]], "sr": bool, "seed": int, "sr_keys": None or
        # [(tensor, offset)]} (lrfast/optim/_lowp.py validated it): each
        # param's and state's format, master copies and 8-bit absmax arrays,
        # and whose elements' random bits stochastic rounding draws
        cdef int i, j, n = self.d.ntensors
        cdef TensorRec* t
        self.lowp = False
        self.d.sr = 0
        if lowp is None:
            for i in range(n):
                if self.d.t[i].scode not in (0, 1):
                    raise TypeError(f"{self._where(i)}: a 16-bit param needs the low-precision "
                                    "setup of an optimizer")
            return
        self.d.sr = 1 if lowp["sr"] else 0
        self.d.sr_seed = <unsigned long long>lowp["seed"]
        if not (len(lowp["pfmt"]) == len(lowp["master"]) == len(lowp["sfmt"])
                == len(lowp["amax"]) == n and all(len(x) == MAX_STATES for x in lowp["sfmt"])
                and all(len(x) == MAX_STATES for x in lowp["amax"])):
            raise ValueError(f"lowp: one format and master per param, and {MAX_STATES} state "
                             "formats and absmax arrays per param")
        keys = lowp.get("sr_keys")
        if keys is not None and (len(keys) != n or any(
                int(a) < 0 or int(b) < 0 for a, b in keys)):
            raise ValueError("lowp: sr_keys must give one (tensor, offset) >= 0 per param")
        for i in range(n):
            t = &self.d.t[i]
            t.sr_id = <unsigned long long>(i if keys is None else int(keys[i][0]))
            t.sr_off = <Py_ssize_t>(0 if keys is None else int(keys[i][1]))
            t.pfmt = lowp["pfmt"][i]
            m = lowp["master"][i]
            t.master = <char*>cnp.PyArray_DATA(<cnp.ndarray>m) if m is not None else NULL
            if m is not None:
                self._extras[i].append(m)
            t.lp = t.pfmt != F_NATIVE or t.master != NULL
            for j in range(MAX_STATES):
                t.sfmt[j] = lowp["sfmt"][i][j] if t.s[j] != NULL else F_NATIVE
                am = lowp["amax"][i][j]
                t.amax[j] = <float*>cnp.PyArray_DATA(<cnp.ndarray>am) if am is not None else NULL
                if am is not None:
                    self._extras[i].append(am)
                if t.sfmt[j] != F_NATIVE:
                    t.lp = 1
            if t.lp and t.scode == 1:
                raise TypeError(f"{self._where(i)}: low-precision state needs a float32, "
                                "bfloat16 or float16 param, not float64")
            if t.lp:
                self.lowp = True

    cdef tuple _geometry(self, Py_ssize_t i):
        # Everything the kernel relies on, per array: buffer, type, shape,
        # strides, writability (params, state, master copies, absmax).
        arrs = ([self._params[i]] + [s for s in self._states[i] if s is not None]
                + self._extras[i])
        return tuple((<Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>x), cnp.PyArray_TYPE(<cnp.ndarray>x),
                      x.shape, x.strides, bool(cnp.PyArray_ISWRITEABLE(<cnp.ndarray>x)))
                     for x in arrs)

    cdef int _check_geometry(self) except -1:
        # Cheap per step: pointer, type and flags of every registered array;
        # the full record only when one of those looks different.
        cdef Py_ssize_t i, j
        cdef cnp.ndarray a
        cdef TensorRec* t
        for i in range(self.d.ntensors):
            t = &self.d.t[i]
            a = <cnp.ndarray>self._params[i]
            ok = (<char*>cnp.PyArray_DATA(a) == t.p and cnp.PyArray_TYPE(a) == t.typenum
                  and cnp.PyArray_SIZE(a) == t.size and cnp.PyArray_ISWRITEABLE(a)
                  and (cnp.PyArray_IS_C_CONTIGUOUS(a) == t.c_contig)
                  and (cnp.PyArray_IS_F_CONTIGUOUS(a) == t.f_contig))
            if ok:
                for j in range(MAX_STATES):
                    if t.s[j] != NULL:
                        a = <cnp.ndarray>self._states[i][j]
                        if (<char*>cnp.PyArray_DATA(a) != t.s[j] or cnp.PyArray_TYPE(a) != t.styp[j]
                                or cnp.PyArray_SIZE(a) != t.size or not cnp.PyArray_ISWRITEABLE(a)):
                            ok = False
                if t.lp:
                    for x in self._extras[i]:
                        if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>x):
                            ok = False
            if not ok and self._geometry(i) != self._geom[i]:
                raise ValueError(f"{self._where(i)}: the param or its optimizer state changed "
                                 "after it was registered (buffer, dtype, shape, strides or "
                                 "writability: resize, dtype or shape assignment, "
                                 "__setstate__); the optimizer refuses to touch it. Build a "
                                 "new optimizer over the current arrays")
        return 0

    cdef _build_tasks(self, Py_ssize_t part_elems):
        # Cut the concatenation of all tensors into parts of ~part_elems
        # elements (multiples of 64, so vector loops start aligned).
        cdef Py_ssize_t total = self.total_elements
        if part_elems <= 0:
            part_elems = max(<Py_ssize_t>4096, (total + 255) // 256)
        part_elems = (part_elems + 63) // 64 * 64
        cdef int cap = 2 * self.d.ntensors + <int>(total // part_elems) + 2
        self.d.tasks = <Task*>malloc(cap * sizeof(Task))
        self.d.part_first = <int*>malloc((cap + 1) * sizeof(int))
        if self.d.tasks == NULL or self.d.part_first == NULL:
            raise MemoryError()
        cdef int nt = 0, npart = 0, i
        cdef Py_ssize_t room = part_elems, pos, take, size
        self.d.part_first[0] = 0
        for i in range(self.d.ntensors):
            size = self.d.t[i].size
            pos = 0
            while pos < size:
                take = min(room, size - pos)
                if self.d.t[i].lp and take < size - pos:
                    # a staged tensor is cut on chunk (8-bit block) boundaries
                    take -= take % SUMCH
                    if take == 0:
                        npart += 1
                        self.d.part_first[npart] = nt
                        room = part_elems
                        continue
                self.d.tasks[nt].tensor = i
                self.d.tasks[nt].start = pos
                self.d.tasks[nt].n = take
                nt += 1
                pos += take
                room -= take
                if room == 0:
                    npart += 1
                    self.d.part_first[npart] = nt
                    room = part_elems
        if room != part_elems:
            npart += 1
            self.d.part_first[npart] = nt
        self.d.ntasks = nt
        self.d.nparts = npart

    cdef _build_blocks(self):
        cdef int nb = 0, i
        cdef Py_ssize_t pos
        for i in range(self.d.ntensors):
            nb += <int>((self.d.t[i].size + BLOCK - 1) // BLOCK)
        self.d.nblocks = nb
        self.d.blocks = <Task*>malloc(max(nb, 1) * sizeof(Task))
        self.d.bsum = <double*>malloc(max(nb, 1) * sizeof(double))
        self.d.bprobe = <double*>malloc(max(nb, 1) * sizeof(double))
        self.d.bred = <double*>malloc(max(nb, 1) * MAX_SUMS * sizeof(double))
        self.d.trows = <double*>malloc(max(self.d.ntensors, 1) * NS * sizeof(double))
        self.d.tsums = <double*>calloc(max(self.d.ntensors, 1) * TSTRIDE,
                                       sizeof(double))
        if (self.d.blocks == NULL or self.d.bsum == NULL or self.d.bprobe == NULL
                or self.d.bred == NULL or self.d.trows == NULL or self.d.tsums == NULL):
            raise MemoryError()
        nb = 0
        for i in range(self.d.ntensors):
            self.d.t[i].b0 = nb
            self.d.t[i].nb = <int>((self.d.t[i].size + BLOCK - 1) // BLOCK)
            pos = 0
            while pos < self.d.t[i].size:
                self.d.blocks[nb].tensor = i
                self.d.blocks[nb].start = pos
                self.d.blocks[nb].n = min(<Py_ssize_t>BLOCK, self.d.t[i].size - pos)
                nb += 1
                pos += BLOCK

    cdef _ensure_rows(self, int n):
        if n <= self.d.nrows_cap:
            return
        cdef double* rows = <double*>realloc(self.d.rows, n * NS * sizeof(double))
        if rows == NULL:
            raise MemoryError()
        self.d.rows = rows
        self.d.nrows_cap = n

    def tasks(self):
        """[(tensor, start, length)] per part: the prebuilt work list."""
        return [[(self.d.tasks[j].tensor, self.d.tasks[j].start, self.d.tasks[j].n)
                 for j in range(self.d.part_first[k], self.d.part_first[k + 1])]
                for k in range(self.d.nparts)]

    def active(self):
        """Per param, whether it had a grad in the last step."""
        return [bool(self.d.t[i].active) for i in range(self.d.ntensors)]

    def tensor_state(self):
        """Per param, the engine-held per-tensor scalars of its kind (a tuple,
        empty for most kinds)."""
        cdef int n = len(TENSOR_STATE.get(_KIND_NAMES[self.d.kind], ()))
        return [tuple(self.d.t[i].ts[j] for j in range(n)) for i in range(self.d.ntensors)]

    def set_tensor_state(self, Py_ssize_t i, values):
        """Set param i's per-tensor scalars (validated by the caller)."""
        cdef int j, n = len(TENSOR_STATE.get(_KIND_NAMES[self.d.kind], ()))
        if not 0 <= i < self.d.ntensors or len(values) != n:
            raise ValueError(f"param {i}: expected {n} per-tensor values")
        for j in range(MAX_TSTATE):
            self.d.t[i].ts[j] = float(values[j]) if j < n else 0.0

    def global_state(self, int group=0):
        """A global kind's engine-held scalars of a group (Prodigy's d, d_max,
        d_numerator, k in group 0; DoG's rbar, G, eta), as a tuple (empty for
        other kinds, zeros for a group without params)."""
        cdef int n = len(GLOBAL_STATE.get(_KIND_NAMES[self.d.kind], ()))
        if not 0 <= group < self.d.ngroups:
            return (0.0,) * n
        return tuple(self.d.gstate[group * MAX_GSTATE + j] for j in range(n))

    def set_global_state(self, values, int group=0):
        """Set a global kind's scalars of a group (validated by the caller; a
        group without params has none: ignored)."""
        cdef int j, n = len(GLOBAL_STATE.get(_KIND_NAMES[self.d.kind], ()))
        if len(values) != n:
            raise ValueError(f"expected {n} global values")
        if not 0 <= group < self.d.ngroups:
            return
        for j in range(MAX_GSTATE):
            self.d.gstate[group * MAX_GSTATE + j] = float(values[j]) if j < n else 0.0

    def set_row_map(self, row_index):
        """Which scalar row each param reads: a list with one row index per
        param, or None for "the row of its group". Kept across steps until set
        again, so a step passes only its rows."""
        cdef Py_ssize_t i, k, mx = 0
        if row_index is None:
            for i in range(self.d.ntensors):
                self.d.t[i].row = self.d.t[i].group
                mx = max(mx, self.d.t[i].group)
            self._row_map = False
        else:
            idx = [int(k) for k in row_index]
            if len(idx) != self.d.ntensors or (idx and min(idx) < 0):
                raise ValueError("row_index must hold one index >= 0 per param")
            for i in range(self.d.ntensors):
                self.d.t[i].row = <int>idx[i]
                mx = max(mx, idx[i])
            self._row_map = True
        self._max_row = <int>mx

    def set_ema(self, arrays):
        """Register one weight-EMA average per param (an ndarray of its
        param's dtype, shape and layout, writable, overlapping nothing a step
        writes), or None to drop them. A step given ``ema=w`` blends them."""
        cdef Py_ssize_t i, n = self.d.ntensors
        cdef TensorRec* t
        cdef cnp.ndarray a
        if arrays is not None and self.lowp:
            raise ValueError("an EMA average does not combine with low-precision params or "
                             "state")
        if arrays is not None:
            arrays = list(arrays)
            if len(arrays) != n:
                raise ValueError(f"expected {n} EMA averages (one per param), got {len(arrays)}")
            for i in range(n):
                x, t = arrays[i], &self.d.t[i]
                if not cnp.PyArray_CheckExact(x):
                    raise TypeError(f"{self._where(i)}: EMA average must be a numpy ndarray")
                a = <cnp.ndarray>x
                if not (_dtype_code(a) == t.dtype and x.shape == self._shapes[i]
                        and cnp.PyArray_ISWRITEABLE(a) and cnp.PyArray_ISALIGNED(a)
                        and cnp.PyArray_ISNOTSWAPPED(a)
                        and ((t.c_contig and cnp.PyArray_IS_C_CONTIGUOUS(a))
                             or (t.f_contig and cnp.PyArray_IS_F_CONTIGUOUS(a)))):
                    raise ValueError(f"{self._where(i)}: EMA average must be a writable, "
                                     "aligned array of its param's dtype, shape and layout")
        old = [<uintptr_t>self.d.t[i].e for i in range(n)]
        cdef uintptr_t* wlo = self._wlo
        cdef uintptr_t* whi = self._whi
        cdef int* wown = self._wown
        cdef Py_ssize_t nw = self._nw
        for i in range(n):
            self.d.t[i].e = (<char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[i])
                             if arrays is not None else NULL)
        self._wlo = self._whi = NULL
        self._wown = NULL
        try:
            self._build_written()            # raises on an overlap, before its mallocs
        except BaseException:
            for i in range(n):
                self.d.t[i].e = <char*>(<uintptr_t>old[i])
            self._wlo, self._whi, self._wown, self._nw = wlo, whi, wown, nw
            raise
        free(wlo)
        free(whi)
        free(wown)
        self.ema = arrays

    cdef int _bind(self, tuple xs, bint allow_none, int slot) except -1:
        # Validate every grad (slot 0) or auxiliary input (slot 1) and record
        # its pointer. Raises before anything is written; returns the number
        # of params that have one.
        cdef Py_ssize_t n = self.d.ntensors, i, j, na = 0
        cdef TensorRec* t
        cdef char* gp
        cdef Py_ssize_t nbytes
        cdef str what = "grad" if slot == 0 else self.aux_name
        if len(xs) != n:
            raise ValueError(f"expected {n} {what}s (one per param, in param order), got {len(xs)}")
        for i in range(n):
            g = xs[i]
            t = &self.d.t[i]
            if slot == 0:
                t.active = g is not None
            if g is None:
                if slot == 1 and t.g != NULL:
                    raise ValueError(f"{self._where(i)}: has a grad but no {what}")
                if not allow_none:
                    raise ValueError(f"{self._where(i)}: {what} is None")
                if slot == 0:
                    t.g = NULL
                else:
                    t.h = NULL
                continue
            if slot == 1 and t.g == NULL:
                raise ValueError(f"{self._where(i)}: has a {what} but no grad")
            _check_array(g, what, self._where(i), t)
            if g.shape != self._params[i].shape:
                raise ValueError(f"{self._where(i)}: {what} shape {g.shape} != param shape "
                                 f"{self._params[i].shape}")
            gp = <char*>cnp.PyArray_DATA(<cnp.ndarray>g)
            nbytes = t.size * t.itemsize
            if nbytes and self.d.kind != K_SCALE:
                j = self._written_overlap(<uintptr_t>gp, <uintptr_t>gp + nbytes)
                if j >= 0:
                    raise ValueError(f"{self._where(i)}: {what} overlaps "
                                     + self._written_name(j, i) + f" (pass a separate {what} array)")
            if slot == 0:
                t.g = gp
            else:
                t.h = gp
            na += 1
        return <int>na

    cdef _build_written(self):
        # Sorted, disjoint [lo, hi) byte ranges of everything a step writes
        # (params and state), so each grad is checked in O(log n) per step.
        iv = []
        cdef Py_ssize_t i, k, nb
        cdef TensorRec* t
        for i in range(self.d.ntensors):
            t = &self.d.t[i]
            nb = t.size * t.itemsize
            if nb == 0:
                continue
            iv.append((<uintptr_t>t.p, <uintptr_t>t.p + nb, i, 0))
            for k in range(MAX_STATES):
                if t.s[k] != NULL:
                    iv.append((<uintptr_t>t.s[k],
                               <uintptr_t>t.s[k] + self._states[i][k].nbytes, i, 1))
            for x in self._extras[i]:       # master copies, absmax (low precision)
                iv.append((<uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>x),
                           <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>x) + x.nbytes, i, 1))
            if t.e != NULL:
                iv.append((<uintptr_t>t.e, <uintptr_t>t.e + nb, i, 1))
        iv.sort()
        for k in range(1, len(iv)):
            if iv[k][0] < iv[k - 1][1]:
                a, b = iv[k - 1], iv[k]
                what = ("param", "optimizer state")
                raise ValueError(f"{self._where(b[2])}: {what[b[3]]} overlaps the {what[a[3]]} of "
                                 f"{self._where(a[2])}")
        self._nw = len(iv)
        self._wlo = <uintptr_t*>malloc(max(self._nw, 1) * sizeof(uintptr_t))
        self._whi = <uintptr_t*>malloc(max(self._nw, 1) * sizeof(uintptr_t))
        self._wown = <int*>malloc(max(self._nw, 1) * sizeof(int))
        if self._wlo == NULL or self._whi == NULL or self._wown == NULL:
            raise MemoryError()
        for k in range(self._nw):
            self._wlo[k] = iv[k][0]
            self._whi[k] = iv[k][1]
            self._wown[k] = 2 * iv[k][2] + iv[k][3]     # owner param, and param (0) or state (1)

    cdef str _written_name(self, Py_ssize_t j, Py_ssize_t i):
        cdef int owner = self._wown[j] // 2, is_state = self._wown[j] % 2
        if owner == i:
            return "its own optimizer state" if is_state else "its own param"
        return (f"the optimizer state of {self._where(owner)}" if is_state
                else f"the param of {self._where(owner)}")

    cdef int _written_overlap(self, uintptr_t lo, uintptr_t hi) noexcept:
        # index of the written range overlapping [lo, hi), or -1
        cdef Py_ssize_t a = 0, b = self._nw, m
        while a < b:                  # first range with wlo >= hi
            m = (a + b) // 2
            if self._wlo[m] < hi:
                a = m + 1
            else:
                b = m
        if a > 0 and self._whi[a - 1] > lo:
            return <int>(a - 1)
        return -1

    def _where(self, Py_ssize_t i):
        return f"group {self.d.t[i].group}, param {i}"

    cdef int _load_rows(self, rows) except -1:
        cdef Py_ssize_t k, j, nrows = len(rows), rl = self._row_len
        if nrows <= self._max_row:
            raise ValueError(f"{nrows} scalar rows given, the row map needs {self._max_row + 1}")
        self._ensure_rows(<int>nrows)
        for k in range(nrows):
            row = rows[k]
            if len(row) != rl:
                raise ValueError(f"scalar row {k} has {len(row)} fields, this kernel's row "
                                 f"has {rl}")
            for j in range(rl):
                self.d.rows[k * NS + j] = row[j]
        return 0

    def step(self, grads, rows, *, double max_norm=0.0, bint skip_nonfinite=False,
             bint allow_none=True, aux=None, norm_hook=None, double clip_norm=0.0,
             double clip_value=0.0, double ema=-1.0, unsigned long long sr_step=0,
             sums_hook=None):
        """Validate grads, then apply one fused step.

        rows: the scalar rows of this step (each a sequence of exactly the
        kernel's row fields, see ROW_FIELDS); param i reads the row that
        ``set_row_map`` gave it (by default its group's). aux: optional second
        input per param (same rules as grads; DiagonalNewton's Hessian
        diagonal). norm_hook: optional ``f(sumsq, finite) -> (sumsq, finite)``
        called between the reduction pass and the update (a sharded optimizer
        turns its local sum of squares into the global one there); clipping
        and skipping then use what it returns. Returns (n_active, applied,
        grad_norm): grad_norm is NaN unless max_norm > 0, skip_nonfinite or
        a hook. clip_norm > 0: each grad is scaled by clip_norm / max(||g||,
        clip_norm) (per tensor); clip_value > 0: each grad element is clipped
        to [-clip_value, clip_value] as the kernel reads it. Both are applied
        in the kernel; the grads are never written. ema: a weight w in [0, 1]:
        an applied step also blends every EMA average (``set_ema``; params
        without a grad too) toward its param right after the update of each
        chunk, avg += w*(p - avg) as torch's lerp (w = 1 copies p); negative:
        no blend. sr_step: the step number that keys stochastic rounding (low
        precision). sums_hook: optional ``f(bsums, tsums)`` for a kind with
        sums (per-tensor and global kinds), called after the read-only pass
        and before the sums are used: ``bsums`` (blocks x MAX_SUMS, a copy)
        holds each reduction block's sums (blocks of BLOCK_SIZE elements from
        each tensor's start, in tensor order), ``tsums`` (tensors x (MAX_SUMS
        + 2): each tensor's sums, 1.0 if it has a grad, its group) is read
        back after the call, so the hook may replace a tensor's sums (a
        sharded wrapper puts those of the whole tensor across ranks there).
        Nothing is written before the hook returns.
        """
        cdef Py_ssize_t i, k, nrows
        cdef int na, nt
        cdef double sumsq = 0.0, norm = NAN, coef
        cdef bint finite = True, go
        cdef bint reduce = (max_norm > 0.0 or skip_nonfinite or norm_hook is not None
                            or clip_norm > 0.0)
        cdef bint per_tensor = clip_norm > 0.0 or _NSUMS[self.d.kind] > 0
        cdef Py_ssize_t work = 0
        cdef double t0, el = 0.0   # the kernels' wall time (not the norm hook's)
        cdef tuple gs, hs = None     # the snapshots hold every input for the whole call
        if self._busy:
            raise RuntimeError("this optimizer is being stepped from another thread")
        self._busy = 1
        try:
            if not isinstance(grads, (list, tuple)):
                raise TypeError(f"grads must be a list or tuple of arrays, got "
                                f"{type(grads).__name__}")
            gs = tuple(grads)
            self._check_geometry()
            na = self._bind(gs, allow_none, 0)
            if aux is not None:
                if not isinstance(aux, (list, tuple)):
                    raise TypeError(f"{self.aux_name} must be a list or tuple of arrays, got "
                                    f"{type(aux).__name__}")
                hs = tuple(aux)
                self._bind(hs, allow_none, 1)
            elif self.d.kind in AUX_KINDS:
                raise ValueError(f"this kernel needs a {self.aux_name} per param")
            if self.lowp and (ema >= 0.0 or clip_norm > 0.0 or per_tensor):
                raise ValueError("low-precision params or state do not combine with an EMA "
                                 "average, clip_norm or a per-tensor optimizer")
            if ema >= 0.0 and (ema > 1.0 or self.ema is None):
                raise ValueError(f"ema weight {ema} needs registered EMA averages and a "
                                 "value in [0, 1]")
            self._load_rows(rows)
            nrows = len(rows)
            for i in range(self.d.ntensors):
                if self.d.t[i].g != NULL or ema >= 0.0:
                    work += self.d.t[i].size
            self.d.ema_on = ema >= 0.0
            self.d.ema_w = ema
            self.d.sr_step = sr_step
            with nogil:
                nt = _policy_threads(&self._pol, work)
                t0 = lrfast_monotonic()
                if reduce:
                    _reduce(&self.d, nt, &sumsq, &finite)
                el = lrfast_monotonic() - t0
            if norm_hook is not None:
                sumsq, finite = norm_hook(sumsq, bool(finite))
            if reduce:
                norm = sqrt(sumsq)
            go = not (skip_nonfinite and not finite)
            with nogil:
                t0 = lrfast_monotonic()
                if go:
                    if max_norm > 0.0:
                        # torch: g *= clamp(max_norm/(norm + 1e-6), max=1); a NaN
                        # norm gives a NaN factor (not "no clipping")
                        coef = max_norm / (norm + 1e-6)
                        if not coef >= 1.0:
                            for k in range(nrows):       # field 0 of every row: gs
                                self.d.rows[k * NS] = self.d.rows[k * NS] * coef
                    self.d.clip_value = clip_value
                    if per_tensor:
                        _tensor_rows(&self.d, nt, clip_norm)
                el = el + (lrfast_monotonic() - t0)
            if go and per_tensor and sums_hook is not None and _NSUMS[self.d.kind] > 0:
                self._call_sums_hook(sums_hook)
            with nogil:
                t0 = lrfast_monotonic()
                if go:
                    if per_tensor:
                        _tensor_finish(&self.d)
                    _run(&self.d, nt)
                _policy_record(&self._pol, nt, work, el + (lrfast_monotonic() - t0))
            _policy_share(&self._pol)
        finally:
            self._busy = 0
            self.d.ema_on = 0
            self.d.use_trows = 0
            self.d.clip_value = 0.0
            self._unbind()
        return na, bool(finite) or not skip_nonfinite, norm

    cdef _call_sums_hook(self, hook):
        # the step's sums hook (see step): copies out, the tensors' sums back in
        cdef cnp.ndarray b = np.empty((self.d.nblocks, MAX_SUMS), dtype=np.float64)
        cdef cnp.ndarray ts = np.empty((self.d.ntensors, TSTRIDE), dtype=np.float64)
        if self.d.nblocks:
            memcpy(cnp.PyArray_DATA(b), self.d.bred,
                   self.d.nblocks * MAX_SUMS * sizeof(double))
        if self.d.ntensors:
            memcpy(cnp.PyArray_DATA(ts), self.d.tsums,
                   self.d.ntensors * TSTRIDE * sizeof(double))
        hook(b, ts)
        if self.d.ntensors:
            memcpy(self.d.tsums, cnp.PyArray_DATA(ts),
                   self.d.ntensors * TSTRIDE * sizeof(double))

    def _policy_state(self):
        """The adaptive thread policy of this engine (inspection, tests)."""
        return {"step": _policy_dict(&self._pol), "grad_norm": _policy_dict(&self._pol_norm)}

    cdef void _unbind(self) noexcept:
        cdef Py_ssize_t i
        for i in range(self.d.ntensors):
            self.d.t[i].g = NULL
            self.d.t[i].h = NULL

    def grad_norm(self, grads):
        """Global L2 norm of grads (None skipped) and whether all are finite."""
        cdef double sumsq = 0.0
        cdef bint finite = True
        cdef Py_ssize_t i, work = 0
        cdef int nt
        cdef double t0
        cdef tuple gs
        if self._busy:
            raise RuntimeError("this engine is in use by another thread")
        self._busy = 1
        try:
            if not isinstance(grads, (list, tuple)):
                raise TypeError(f"grads must be a list or tuple of arrays, got "
                                f"{type(grads).__name__}")
            gs = tuple(grads)
            self._check_geometry()     # an own-step optimizer's pass: its params unchanged
            self._bind(gs, True, 0)
            for i in range(self.d.ntensors):
                if self.d.t[i].g != NULL:
                    work += self.d.t[i].size
            with nogil:
                nt = _policy_threads(&self._pol_norm, work)
                t0 = lrfast_monotonic()
                _reduce(&self.d, nt, &sumsq, &finite)
                _policy_record(&self._pol_norm, nt, work, lrfast_monotonic() - t0)
            _policy_share(&self._pol_norm)
        finally:
            self._busy = 0
            self._unbind()
        return sqrt(sumsq), bool(finite)


# --------------------------------------------------------------------------
# One array, one step: the functional layer (lrfast.kernels.*_step). No
# Engine is built: a stack record, parts cut arithmetically, the same loops.
# --------------------------------------------------------------------------
cdef int _check_writable(object x, str where, str what) except -1:
    # A param or state array the kernel writes: the checks of
    # lrfast._validate.check_param, in C (same messages).
    if not cnp.PyArray_Check(x):
        raise TypeError(f"{where}: {what} must be a numpy ndarray, got {type(x).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray>x
    if not cnp.PyArray_CheckExact(x) and isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{where}: {what} is a masked array (its mask would be ignored)")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"{where}: {what} dtype {a.dtype.str} has non-native byte order (use "
                        "a.astype(a.dtype.newbyteorder('=')))")
    if _dtype_code(a) < 0:
        raise TypeError(f"{where}: {what} dtype {a.dtype} is not supported (float32 or float64)")
    if not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{where}: {what} is read-only (the optimizer updates it in place)")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a)):
        raise ValueError(f"{where}: {what} is not contiguous (use np.ascontiguousarray and "
                         "keep a reference to the copy)")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{where}: {what} is not aligned")
    return 0


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int k, nd = cnp.PyArray_NDIM(a)
    if nd != cnp.PyArray_NDIM(b):
        return False
    for k in range(nd):
        if cnp.PyArray_DIMS(a)[k] != cnp.PyArray_DIMS(b)[k]:
            return False
    return True


cdef str _state_label(int j, tuple names):
    if j < 0:
        return "param"
    return f"state {names[j]!r}" if names is not None else f"state {j}"


cdef int _state_error(object x, object p, int j, tuple names, str where) except -1:
    what = _state_label(j, names)
    _check_writable(x, where, what)
    if x.shape != p.shape or x.dtype != p.dtype:
        raise ValueError(f"{where}: {what} shape/dtype {x.shape}/{x.dtype} != param's "
                         f"{p.shape}/{p.dtype}")
    raise ValueError(f"{where}: {what} memory layout differs from the param's")


def step_one(int kind, p, g, s0, s1, s2, row, h=None, str where="step", tuple names=None,
             s3=None, tuple tstate=()):
    """Apply kernel ``kind`` to one param in place: the functional layer's
    entry. Validates the param, its state arrays (``names`` name them in
    errors), the grad and the auxiliary input, and that no two of them
    overlap, before anything is written. ``row`` holds exactly the kind's row
    fields; ``tstate`` the kind's per-tensor scalars before the step (a
    per-tensor kind returns them after it)."""
    cdef TensorRec t
    cdef Data d
    cdef Task tasks[64]
    cdef int part_first[65]
    cdef double r[NS]
    cdef double tr[NS]
    cdef double tsum1[TSTRIDE]
    cdef Py_ssize_t j, k, n, per, pos = 0
    cdef int nb = 0
    cdef int nparts, nt
    cdef cnp.ndarray pa, sa
    cdef uintptr_t lo[1 + MAX_STATES]
    cdef uintptr_t hi[1 + MAX_STATES]
    if not 0 <= kind < N_KINDS:
        raise ValueError(f"unknown kernel kind {kind}")
    if _GLOBAL[kind]:                  # engine-held state across tensors: no stack record
        raise ValueError(f"kernel kind {kind} sums over all params: step it with an Engine")
    if len(row) != _ROW_LEN[kind]:
        raise ValueError(f"scalar row has {len(row)} fields, this kernel's row has "
                         f"{_ROW_LEN[kind]}")
    _check_writable(p, where, "param")
    pa = <cnp.ndarray>p
    memset(&t, 0, sizeof(TensorRec))
    t.p = <char*>cnp.PyArray_DATA(pa)
    t.size = cnp.PyArray_SIZE(pa)
    t.dtype = _dtype_code(pa)
    t.scode = t.dtype
    t.itemsize = 4 if t.dtype == 0 else 8
    t.c_contig = cnp.PyArray_IS_C_CONTIGUOUS(pa)
    t.f_contig = cnp.PyArray_IS_F_CONTIGUOUS(pa)
    cdef int ns = 0
    cdef int which[1 + MAX_STATES]
    cdef uintptr_t gl, span = <uintptr_t>(t.size * t.itemsize)
    which[0] = -1
    lo[0] = <uintptr_t>t.p
    for j, x in enumerate((s0, s1, s2, s3)):
        if x is None:
            continue
        if not cnp.PyArray_CheckExact(x) or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>x) \
                or _dtype_code(<cnp.ndarray>x) != t.dtype \
                or not _same_shape(<cnp.ndarray>x, pa) \
                or not cnp.PyArray_ISALIGNED(<cnp.ndarray>x) \
                or ((cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x) != t.c_contig)
                    and cnp.PyArray_NDIM(pa) > 1) \
                or not (cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)
                        or cnp.PyArray_IS_F_CONTIGUOUS(<cnp.ndarray>x)):
            _state_error(x, p, j, names, where)          # raises, naming the state
        t.s[j] = <char*>cnp.PyArray_DATA(<cnp.ndarray>x)
        ns += 1
        which[ns] = j
        lo[ns] = <uintptr_t>t.s[j]
    _check_array(g, "grad", where, &t)
    if not _same_shape(<cnp.ndarray>g, pa):
        raise ValueError(f"{where}: grad shape {g.shape} != param shape {p.shape}")
    t.g = <char*>cnp.PyArray_DATA(<cnp.ndarray>g)
    if h is not None:
        _check_array(h, "auxiliary input", where, &t)
        t.h = <char*>cnp.PyArray_DATA(<cnp.ndarray>h)
    elif kind in AUX_KINDS:
        raise ValueError("this kernel needs an auxiliary input")
    if t.size:
        # written arrays must not overlap each other, and the grad none of them
        gl = <uintptr_t>t.g
        for j in range(ns + 1):
            hi[j] = lo[j] + span
        for j in range(ns + 1):
            for k in range(j + 1, ns + 1):
                if lo[j] < hi[k] and lo[k] < hi[j]:
                    raise ValueError(f"{where}: {_state_label(which[k], names)} overlaps the "
                                     f"{_state_label(which[j], names)} (the param and each "
                                     "state must be separate arrays)")
            if lo[j] < gl + span and gl < hi[j]:
                raise ValueError(f"{where}: grad overlaps its own "
                                 f"{'param' if j == 0 else 'optimizer state'} "
                                 "(pass a separate grad array)")
    for j in range(_ROW_LEN[kind]):
        r[j] = row[j]
    n = t.size
    nparts = <int>min(<Py_ssize_t>64, max(<Py_ssize_t>1, n // 4096))
    per = (n + nparts - 1) // nparts
    per = (per + 63) // 64 * 64
    nparts = 0
    part_first[0] = 0
    while pos < n:
        tasks[nparts].tensor = 0
        tasks[nparts].start = pos
        tasks[nparts].n = min(per, n - pos)
        pos += tasks[nparts].n
        nparts += 1
        part_first[nparts] = nparts
    memset(&d, 0, sizeof(Data))
    d.kind = kind
    d.ntensors = 1
    d.t = &t
    d.tasks = tasks
    d.ntasks = nparts
    d.part_first = part_first
    d.nparts = nparts
    d.rows = r
    if _NSUMS[kind] == 0:
        with nogil:
            nt = _policy_hint_threads(n)   # no Policy of its own: the process mode
            _run(&d, nt)
        return None
    # a per-tensor kind: its blocks, the read-only pass, then the update
    if len(tstate) > MAX_TSTATE:
        raise ValueError("too many per-tensor values")
    for j in range(len(tstate)):
        t.ts[j] = float(tstate[j])
    nb = <int>((n + BLOCK - 1) // BLOCK)
    d.blocks = <Task*>malloc(max(nb, 1) * sizeof(Task))
    d.bred = <double*>malloc(max(nb, 1) * MAX_SUMS * sizeof(double))
    if d.blocks == NULL or d.bred == NULL:
        free(d.blocks)
        free(d.bred)
        raise MemoryError()
    for k in range(nb):
        d.blocks[k].tensor = 0
        d.blocks[k].start = k * BLOCK
        d.blocks[k].n = min(<Py_ssize_t>BLOCK, n - k * BLOCK)
    d.nblocks = nb
    t.b0 = 0
    t.nb = nb
    t.row = 0
    d.trows = tr
    d.tsums = tsum1
    try:
        with nogil:
            nt = _policy_hint_threads(n)
            _tensor_rows(&d, nt, 0.0)
            _tensor_finish(&d)
            _run(&d, nt)
    finally:
        free(d.blocks)
        free(d.bred)
    return tuple(t.ts[j] for j in range(len(tstate)))
