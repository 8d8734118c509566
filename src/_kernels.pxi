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
# c) Loop bodies are the update rules written exactly as SPEC.md gives them, in
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
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf, fabs, fabsf, NAN
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset
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

# Optimizer kinds (the Python layer uses the same numbers, see lrfast/optim.py).
cdef enum:
    K_SGD = 0
    K_ADAGRAD = 1
    K_ADADELTA = 2
    K_RMSPROP = 3
    K_ADAM = 4
    K_ADAMAX = 5
    K_NADAM = 6
    K_RADAM = 7
    K_SCALE = 8      # g *= row[0] (clip_grad_norm's in-place scaling)
    K_DIAG_NEWTON = 9
    N_KINDS = 10

cdef enum:
    NS = 16          # doubles per scalar row
    MAX_STATES = 3   # state arrays per param
    BLOCK = 4096     # elements per reduction block (fixed: results never depend on threads)

KINDS = {"SGD": K_SGD, "Adagrad": K_ADAGRAD, "Adadelta": K_ADADELTA, "RMSprop": K_RMSPROP,
         "Adam": K_ADAM, "Adamax": K_ADAMAX, "NAdam": K_NADAM, "RAdam": K_RADAM, "scale": K_SCALE,
         "DiagonalNewton": K_DIAG_NEWTON}
ROW_SIZE = NS
N_STATES = MAX_STATES
BLOCK_SIZE = BLOCK
ISA = LRFAST_ISA_NAME.decode()
COMPILER = LRFAST_CC_VERSION.decode()
OPENMP = bool(LRFAST_OPENMP)
FORK_UNSAFE_OMP = bool(LRFAST_FORK_UNSAFE_OMP)


# --------------------------------------------------------------------------
# Thread policy (SPEC.md "Threads"), first rule that applies:
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
    # np.maximum semantics: a NaN in either argument gives NaN.
    return a if (a >= b or a != a) else b


cdef inline real _grad(real g, real p, real gs, real wd, bint l2) noexcept nogil:
    # g = gs*g (gs = +-1 times the clipping scale: maximize and clipping in one
    # exact multiply), then L2 weight decay g += wd*p.
    g = gs * g
    return g + wd * p if l2 else g


cdef inline real _decay(real p, real dm, bint decoupled) noexcept nogil:
    # decoupled weight decay (AdamW): p *= 1 - lr*wd
    return p * dm if decoupled else p


# --------------------------------------------------------------------------
# Update loops, one per optimizer. p: param (IN/OUT), g: grad (IN, never
# written), s0..s2: state (IN/OUT, NULL when not allocated), r: scalar row.
# --------------------------------------------------------------------------
cdef void _sgd(real* p, const real* g, real* b, Py_ssize_t n, const double* r) noexcept nogil:
    cdef real gs = <real>r[0], wd = <real>r[1], lr = <real>r[3], mu = <real>r[4], d1 = <real>r[5]
    cdef bint l2 = r[2] != 0, mom = r[6] != 0, nesterov = r[7] != 0, first = r[8] != 0
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


cdef void _adagrad(real* p, const real* g, real* s, Py_ssize_t n, const double* r) noexcept nogil:
    cdef real gs = <real>r[0], wd = <real>r[1], clr = <real>r[3], eps = <real>r[4]
    cdef bint l2 = r[2] != 0
    cdef Py_ssize_t i
    cdef real gi, si
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] - clr * gi / (_sqrt(si) + eps)


cdef void _adadelta(real* p, const real* g, real* v, real* u, Py_ssize_t n,
                    const double* r) noexcept nogil:
    cdef real gs = <real>r[0], wd = <real>r[1], lr = <real>r[3], rho = <real>r[4]
    cdef real c = <real>r[5], eps = <real>r[6]
    cdef bint l2 = r[2] != 0
    cdef Py_ssize_t i
    cdef real gi, vi, di
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        vi = v[i] * rho + c * gi * gi
        v[i] = vi
        di = _sqrt(u[i] + eps) / _sqrt(vi + eps) * gi
        u[i] = u[i] * rho + c * di * di
        p[i] = p[i] - lr * di


cdef void _rmsprop(real* p, const real* g, real* v, real* b, real* a, Py_ssize_t n,
                   const double* r) noexcept nogil:
    cdef real gs = <real>r[0], wd = <real>r[1], lr = <real>r[3], alpha = <real>r[4]
    cdef real c = <real>r[5], eps = <real>r[6], mu = <real>r[7]
    cdef bint l2 = r[2] != 0, mom = r[8] != 0, centered = r[9] != 0
    cdef Py_ssize_t i
    cdef real gi, vi, ai, wi, bi
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        vi = v[i] * alpha + c * gi * gi
        v[i] = vi
        if centered:
            ai = a[i] + c * (gi - a[i])
            a[i] = ai
            vi = vi - ai * ai
        wi = _sqrt(vi) + eps
        if mom:
            bi = b[i] * mu + gi / wi
            b[i] = bi
            p[i] = p[i] - lr * bi
        else:
            p[i] = p[i] - lr * gi / wi


cdef void _adam(real* p, const real* g, real* m, real* v, real* vmax, Py_ssize_t n,
                const double* r) noexcept nogil:
    cdef real gs = <real>r[0], wd = <real>r[1], c1 = <real>r[3], b2 = <real>r[4], c2 = <real>r[5]
    cdef real ss = <real>r[6], bc2s = <real>r[7], eps = <real>r[8], dm = <real>r[9]
    cdef bint l2 = r[2] != 0, decoupled = r[10] != 0, amsgrad = r[11] != 0
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


cdef void _adamax(real* p, const real* g, real* m, real* u, Py_ssize_t n,
                  const double* r) noexcept nogil:
    cdef real gs = <real>r[0], wd = <real>r[1], c1 = <real>r[3], b2 = <real>r[4]
    cdef real eps = <real>r[5], clr = <real>r[6]
    cdef bint l2 = r[2] != 0
    cdef Py_ssize_t i
    cdef real gi, mi, ui
    for i in range(n):
        gi = _grad(g[i], p[i], gs, wd, l2)
        mi = m[i] + c1 * (gi - m[i])
        m[i] = mi
        ui = _nanmax(u[i] * b2, _abs(gi) + eps)
        u[i] = ui
        p[i] = p[i] - clr * mi / ui


cdef void _nadam(real* p, const real* g, real* m, real* v, Py_ssize_t n,
                 const double* r) noexcept nogil:
    cdef real gs = <real>r[0], wd = <real>r[1], c1 = <real>r[3], b2 = <real>r[4], c2 = <real>r[5]
    cdef real bc2 = <real>r[6], eps = <real>r[7], cg = <real>r[8], cm = <real>r[9], dm = <real>r[10]
    cdef bint l2 = r[2] != 0, decoupled = r[11] != 0
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


cdef void _radam(real* p, const real* g, real* m, real* v, Py_ssize_t n,
                 const double* r) noexcept nogil:
    cdef real gs = <real>r[0], wd = <real>r[1], c1 = <real>r[3], b2 = <real>r[4], c2 = <real>r[5]
    cdef real bc1 = <real>r[6], lr = <real>r[7], bc2s = <real>r[8], eps = <real>r[9]
    cdef real rect = <real>r[10], dm = <real>r[12], one = 1
    cdef bint l2 = r[2] != 0, rectify = r[11] != 0, decoupled = r[13] != 0
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


cdef void _diag_newton(real* p, const real* g, const real* h, Py_ssize_t n,
                       const double* r) noexcept nogil:
    # p -= lr * g / (|h| + damping): per-parameter rates as a diagonal
    # approximation of the inverse Hessian (the seed's view of adaptive rates).
    cdef real gs = <real>r[0], wd = <real>r[1], lr = <real>r[3], damping = <real>r[4]
    cdef bint l2 = r[2] != 0
    cdef Py_ssize_t i
    for i in range(n):
        p[i] = p[i] - lr * _grad(g[i], p[i], gs, wd, l2) / (_abs(h[i]) + damping)


cdef void _scale(real* x, Py_ssize_t n, const double* r) noexcept nogil:
    cdef real c = <real>r[0]
    cdef Py_ssize_t i
    for i in range(n):
        x[i] = x[i] * c


cdef inline void _apply(int kind, real* p, const real* g, const real* h, real* s0, real* s1,
                        real* s2, Py_ssize_t n, const double* r) noexcept nogil:
    if kind == K_SGD:
        _sgd(p, g, s0, n, r)
    elif kind == K_ADAGRAD:
        _adagrad(p, g, s0, n, r)
    elif kind == K_ADADELTA:
        _adadelta(p, g, s0, s1, n, r)
    elif kind == K_RMSPROP:
        _rmsprop(p, g, s0, s1, s2, n, r)
    elif kind == K_ADAM:
        _adam(p, g, s0, s1, s2, n, r)
    elif kind == K_ADAMAX:
        _adamax(p, g, s0, s1, n, r)
    elif kind == K_NADAM:
        _nadam(p, g, s0, s1, n, r)
    elif kind == K_RADAM:
        _radam(p, g, s0, s1, n, r)
    elif kind == K_SCALE:
        _scale(p, n, r)
    elif kind == K_DIAG_NEWTON:
        _diag_newton(p, g, h, n, r)


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
    Py_ssize_t size
    int dtype                  # 0 float32, 1 float64
    int itemsize
    int group
    int row                    # this step's scalar row
    int c_contig, f_contig


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


cdef inline char* _shift(char* base, Py_ssize_t start, int itemsize) noexcept nogil:
    return base + start * itemsize if base != NULL else NULL


cdef void _run_task(Data* d, int k) noexcept nogil:
    cdef Task* tk = &d.tasks[k]
    cdef TensorRec* t = &d.t[tk.tensor]
    if t.g == NULL:
        return
    cdef const double* r = d.rows + t.row * NS
    cdef Py_ssize_t o = tk.start
    if t.dtype == 0:
        _apply(d.kind, <float*>t.p + o, <const float*>t.g + o,
               <const float*>_shift(t.h, o, 4), <float*>_shift(t.s[0], o, 4), <float*>_shift(t.s[1], o, 4),
               <float*>_shift(t.s[2], o, 4), tk.n, r)
    else:
        _apply(d.kind, <double*>t.p + o, <const double*>t.g + o,
               <const double*>_shift(t.h, o, 8), <double*>_shift(t.s[0], o, 8), <double*>_shift(t.s[1], o, 8),
               <double*>_shift(t.s[2], o, 8), tk.n, r)


cdef void _run_part(Data* d, Py_ssize_t k) noexcept nogil:
    cdef int j
    for j in range(d.part_first[k], d.part_first[k + 1]):
        _run_task(d, j)


cdef void _run(Data* d, int nt) noexcept nogil:
    global _parallel_used
    cdef Py_ssize_t k
    nt = min(nt, d.nparts)              # never more threads than parts
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
    if t.dtype == 0:
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
    nt = min(nt, d.nblocks)             # never more threads than blocks
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


cdef inline int _dtype_code(cnp.ndarray a):
    cdef int tn = cnp.PyArray_TYPE(a)
    if tn == cnp.NPY_FLOAT32:
        return 0
    if tn == cnp.NPY_FLOAT64:
        return 1
    return -1


cdef class Engine:
    """Fused multi-tensor stepper for one optimizer (internal; see lrfast.optim).

    Parameters
    ----------
    kind : int            optimizer kind (KINDS)
    params : list         validated writable contiguous float32/float64 ndarrays
    states : list         per param, a list of MAX_STATES state arrays or None
    groups : list[int]    group index of each param (names errors, picks rows)
    part_elems : int      target elements per part (0: automatic)
    """
    cdef Data d
    cdef Policy _pol, _pol_norm        # adaptive thread counts (seeded in __cinit__)
    cdef list _params, _states, _shapes
    cdef int _busy
    cdef Py_ssize_t _nw
    cdef uintptr_t* _wlo
    cdef uintptr_t* _whi
    cdef int* _wown
    cdef readonly Py_ssize_t total_elements
    cdef readonly int ntensors

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
        free(self._wlo)
        free(self._whi)
        free(self._wown)

    def __init__(self, int kind, list params, list states, list groups, Py_ssize_t part_elems=0):
        cdef int n = len(params), i, j
        cdef cnp.ndarray a
        if not 0 <= kind < N_KINDS:
            raise ValueError(f"unknown kernel kind {kind}")
        self.d.kind = kind
        self.d.ntensors = n
        self.ntensors = n
        self._params = list(params)
        self._states = [list(s) if s is not None else [None] * MAX_STATES for s in states]
        self._shapes = [x.shape for x in params]
        self.d.t = <TensorRec*>calloc(max(n, 1), sizeof(TensorRec))
        if self.d.t == NULL:
            raise MemoryError()
        cdef Py_ssize_t total = 0
        for i in range(n):
            a = params[i]
            self.d.t[i].p = <char*>cnp.PyArray_DATA(a)
            self.d.t[i].size = cnp.PyArray_SIZE(a)
            self.d.t[i].dtype = _dtype_code(a)
            self.d.t[i].itemsize = 4 if self.d.t[i].dtype == 0 else 8
            self.d.t[i].group = groups[i]
            self.d.t[i].c_contig = cnp.PyArray_IS_C_CONTIGUOUS(a)
            self.d.t[i].f_contig = cnp.PyArray_IS_F_CONTIGUOUS(a)
            for j in range(MAX_STATES):
                s = self._states[i][j]
                self.d.t[i].s[j] = <char*>cnp.PyArray_DATA(s) if s is not None else NULL
            total += self.d.t[i].size
        self.total_elements = total
        if kind != K_SCALE:
            self._build_written()
        self._build_tasks(part_elems)
        self._build_blocks()
        self._ensure_rows(n + 1)

    cdef _build_tasks(self, Py_ssize_t part_elems):
        # Cut the concatenation of all tensors into parts of ~part_elems
        # elements (multiples of 64, so vector loops start aligned).
        cdef Py_ssize_t total = self.total_elements
        if part_elems <= 0:
            part_elems = max(<Py_ssize_t>4096, (total + 255) // 256)
        part_elems = (part_elems + 63) // 64 * 64
        cdef int cap = self.d.ntensors + <int>(total // part_elems) + 2
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
        if self.d.blocks == NULL or self.d.bsum == NULL or self.d.bprobe == NULL:
            raise MemoryError()
        nb = 0
        for i in range(self.d.ntensors):
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

    @property
    def n_tasks(self):
        return self.d.ntasks

    @property
    def n_parts(self):
        return self.d.nparts

    def tasks(self):
        """[(tensor, start, length)] per part: the prebuilt work list."""
        return [[(self.d.tasks[j].tensor, self.d.tasks[j].start, self.d.tasks[j].n)
                 for j in range(self.d.part_first[k], self.d.part_first[k + 1])]
                for k in range(self.d.nparts)]

    cdef int _bind_grads(self, object grads, bint allow_none, int slot=0) except -1:
        # Validate every grad and record its pointer. Raises before anything
        # is written; returns the number of params that have a grad.
        cdef Py_ssize_t n = self.d.ntensors, i, j, na = 0
        cdef cnp.ndarray a, p
        cdef TensorRec* t
        cdef char* gp
        cdef Py_ssize_t nbytes
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be a list or tuple of arrays, got {type(grads).__name__}")
        if len(grads) != n:
            raise ValueError(f"expected {n} grads (one per param, in param order), got {len(grads)}")
        for i in range(n):
            g = grads[i]
            t = &self.d.t[i]
            if g is None:
                if slot == 1 and t.g != NULL:
                    raise ValueError(f"{self._where(i)}: has a grad but no auxiliary input")
                if not allow_none:
                    raise ValueError(f"{self._where(i)}: grad is None")
                if slot == 0:
                    t.g = NULL
                else:
                    t.h = NULL
                continue
            if slot == 1 and t.g == NULL:
                raise ValueError(f"{self._where(i)}: has an auxiliary input but no grad")
            if not cnp.PyArray_Check(g):
                raise TypeError(f"{self._where(i)}: grad must be a numpy ndarray, "
                                f"got {type(g).__name__}")
            a = <cnp.ndarray>g
            p = <cnp.ndarray>self._params[i]
            if _dtype_code(a) != t.dtype:
                raise TypeError(f"{self._where(i)}: grad dtype {a.dtype} != param dtype {p.dtype}")
            if not cnp.PyArray_ISNOTSWAPPED(a):
                raise TypeError(f"{self._where(i)}: grad has non-native byte order ({a.dtype}); "
                                "use grad.astype(grad.dtype.newbyteorder('='))")
            if cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(p):
                raise ValueError(f"{self._where(i)}: grad shape {g.shape} != param shape {self._shapes[i]}")
            for j in range(cnp.PyArray_NDIM(p)):
                if cnp.PyArray_DIM(a, j) != cnp.PyArray_DIM(p, j):
                    raise ValueError(f"{self._where(i)}: grad shape {g.shape} != param shape {self._shapes[i]}")
            if not ((t.c_contig and cnp.PyArray_IS_C_CONTIGUOUS(a))
                    or (t.f_contig and cnp.PyArray_IS_F_CONTIGUOUS(a))):
                raise ValueError(f"{self._where(i)}: grad memory layout differs from the param's "
                                 f"(param is {'C' if t.c_contig else 'F'}-contiguous; pass "
                                 f"np.ascontiguousarray(grad) or a grad of the same layout)")
            if not cnp.PyArray_ISALIGNED(a):
                raise ValueError(f"{self._where(i)}: grad is not aligned")
            gp = <char*>cnp.PyArray_DATA(a)
            nbytes = t.size * t.itemsize
            if nbytes and self.d.kind != K_SCALE:
                j = self._written_overlap(<uintptr_t>gp, <uintptr_t>gp + nbytes)
                if j >= 0:
                    j = self._wown[j]
                    raise ValueError(f"{self._where(i)}: grad overlaps "
                                     + ("its own param" if j == i else
                                        f"the param or optimizer state of {self._where(j)}")
                                     + " (pass a separate grad array)")
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
            iv.append((<uintptr_t>t.p, <uintptr_t>t.p + nb, i, "param"))
            for k in range(MAX_STATES):
                if t.s[k] != NULL:
                    iv.append((<uintptr_t>t.s[k], <uintptr_t>t.s[k] + nb, i, "optimizer state"))
        iv.sort()
        for k in range(1, len(iv)):
            if iv[k][0] < iv[k - 1][1]:
                a, b = iv[k - 1], iv[k]
                raise ValueError(f"{self._where(b[2])}: {b[3]} overlaps the {a[3]} of "
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
            self._wown[k] = iv[k][2]

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

    def step(self, grads, rows, row_index=None, double max_norm=0.0,
             bint skip_nonfinite=False, bint allow_none=True, aux=None):
        """Validate grads, then apply one fused step.

        rows: list of scalar rows (sequences of <= ROW_SIZE floats); tensor i
        uses rows[row_index[i]] if row_index is given, else rows[its group].
        aux: optional second input per tensor (same rules as grads; the
        DiagonalNewton kernel reads the Hessian diagonal from it).
        Returns (n_active, applied, grad_norm): grad_norm is NaN unless
        max_norm > 0 or skip_nonfinite.
        """
        cdef Py_ssize_t i, j, nrows, k
        cdef int na, nt
        cdef double sumsq = 0.0, norm = NAN, coef
        cdef bint finite = True
        cdef Py_ssize_t work = 0
        cdef double t0
        if self._busy:
            raise RuntimeError("this optimizer is being stepped from another thread")
        self._busy = 1
        try:
            na = self._bind_grads(grads, allow_none)
            if aux is not None:
                self._bind_grads(aux, allow_none, 1)
            elif self.d.kind == K_DIAG_NEWTON:
                raise ValueError("this kernel needs an auxiliary input per param")
            nrows = len(rows)
            self._ensure_rows(<int>nrows)
            for k in range(nrows):
                row = rows[k]
                if len(row) > NS:
                    raise ValueError("scalar row too long")
                for j in range(len(row)):
                    self.d.rows[k * NS + j] = row[j]
            if row_index is None:
                for i in range(self.d.ntensors):
                    if self.d.t[i].group >= nrows:
                        raise ValueError("missing scalar row for a group")
                    self.d.t[i].row = self.d.t[i].group
            else:
                if len(row_index) != self.d.ntensors:
                    raise ValueError("row_index must have one entry per param")
                for i in range(self.d.ntensors):
                    k = row_index[i]
                    if not 0 <= k < nrows:
                        raise ValueError("row_index out of range")
                    self.d.t[i].row = <int>k
            for i in range(self.d.ntensors):
                if self.d.t[i].g != NULL:
                    work += self.d.t[i].size
            with nogil:
                nt = _policy_threads(&self._pol, work)
                t0 = lrfast_monotonic()
                if max_norm > 0.0 or skip_nonfinite:
                    _reduce(&self.d, nt, &sumsq, &finite)
                    norm = sqrt(sumsq)
                if not (skip_nonfinite and not finite):
                    if max_norm > 0.0:
                        # torch: g *= clamp(max_norm/(norm + 1e-6), max=1); a NaN
                        # norm gives a NaN factor (not "no clipping")
                        coef = max_norm / (norm + 1e-6)
                        if not coef >= 1.0:
                            for k in range(nrows):
                                self.d.rows[k * NS] = self.d.rows[k * NS] * coef
                    _run(&self.d, nt)
                _policy_record(&self._pol, nt, work, lrfast_monotonic() - t0)
            _policy_share(&self._pol)
        finally:
            self._busy = 0
            self._unbind()
        return na, bool(finite) or not skip_nonfinite, norm

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
        if self._busy:
            raise RuntimeError("this engine is in use by another thread")
        self._busy = 1
        try:
            self._bind_grads(grads, True)
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
