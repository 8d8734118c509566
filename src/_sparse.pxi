# Row-sparse steps: SGD, Adagrad and SparseAdam on lrfast.RowSparse grads.
#
# A row-sparse grad touches rows `indices` of a param of shape (n, d...). The
# Python layer (lrfast/optim/_sparse.py) validates everything and prepares the
# coalescing in O(k log k): `order` is a STABLE argsort of the indices, `starts`
# the first position in `order` of each run of equal indices (k runs end at
# starts[nruns] == k) and `rows` each run's row. A run's grad is the sum of its
# values rows in index order (first + second + ..., never reassociated), so
# duplicates are summed deterministically, as torch's coalesce does. Then only
# that row of the param and of its state is read and written: the step costs
# O(rows touched * d), never O(n * d). Runs are independent, so a parallel walk
# (over runs, static schedule) is bitwise equal to a serial one.
#
# Scalars (`sc`, computed in double by the Python layer, cast once here):
#   SP_SGD:      gs, -lr                       p += -lr * g
#   SP_ADAGRAD:  gs, eps, -clr                 s += g*g; p += -clr * (g / (sqrt(s) + eps))
#   SP_ADAM:     gs, 1-b1, 1-b2, eps, -step    torch.optim.SparseAdam (step = lr*sqrt(bc2)/bc1)
# gs is the sign of maximize. The numpy twins are lrfast/_reference.py's sparse_*.

from cython.parallel cimport threadid

cdef enum:
    SP_SGD = 0
    SP_ADAGRAD = 1
    SP_ADAM = 2

SPARSE_OPS = {"sgd": SP_SGD, "adagrad": SP_ADAGRAD, "adam": SP_ADAM}

# The sparse steps' own adaptive thread policy (the engine's, see Policy): one
# for the process, read and recorded with the GIL held. A sparse step is small
# and its rows are scattered, so on a busy machine one thread usually wins.
cdef Policy _sparse_pol
cdef int _sparse_pol_ready = 0


cdef void _sp_sgd(real* p, const real* g, Py_ssize_t d, const double* sc) noexcept nogil:
    cdef real gs = <real>sc[0], a = <real>sc[1]
    cdef Py_ssize_t j
    for j in range(d):
        p[j] = p[j] + a * (gs * g[j])


cdef void _sp_adagrad(real* p, real* s, const real* g, Py_ssize_t d,
                      const double* sc) noexcept nogil:
    cdef real gs = <real>sc[0], e = <real>sc[1], a = <real>sc[2]
    cdef real gj, vn
    cdef Py_ssize_t j
    for j in range(d):
        gj = gs * g[j]
        vn = s[j] + gj * gj
        s[j] = vn
        p[j] = p[j] + a * (gj / (_sqrt(vn) + e))


cdef void _sp_adam(real* p, real* m, real* v, const real* g, Py_ssize_t d,
                   const double* sc) noexcept nogil:
    cdef real gs = <real>sc[0], b = <real>sc[1], c = <real>sc[2], e = <real>sc[3]
    cdef real a = <real>sc[4]
    cdef real gj, mo, mn, vo, vn
    cdef Py_ssize_t j
    for j in range(d):
        gj = gs * g[j]
        mo = m[j]
        mn = mo + (gj - mo) * b
        m[j] = mn
        vo = v[j]
        vn = (gj * gj - vo) * c + vo
        v[j] = vn
        p[j] = p[j] + a * (mn / (_sqrt(vn) + e))


cdef inline void _sparse_row(int op, real* p, real* s0, real* s1, const real* g, Py_ssize_t d,
                             const double* sc) noexcept nogil:
    if op == SP_SGD:
        _sp_sgd(p, g, d, sc)
    elif op == SP_ADAGRAD:
        _sp_adagrad(p, s0, g, d, sc)
    else:
        _sp_adam(p, s0, s1, g, d, sc)


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define LRFAST_PREFETCH(a) __builtin_prefetch((const void*)(a), 1, 3)
    #else
    #define LRFAST_PREFETCH(a) ((void)0)
    #endif
    """
    void LRFAST_PREFETCH(const void* a) noexcept nogil

cdef enum:
    SP_AHEAD = 8    # runs ahead to prefetch: the touched rows are scattered, so the walk
                    # is bound by memory latency, not bandwidth


cdef inline void _sparse_prefetch(real* p, real* s0, real* s1, const Py_ssize_t* rows,
                                  Py_ssize_t r, Py_ssize_t nruns, Py_ssize_t d) noexcept nogil:
    # the first 512 bytes of run r's rows of the param and its state (a hint only)
    cdef Py_ssize_t off, b, nb
    if r >= nruns:
        return
    off = rows[r] * d
    nb = d * <Py_ssize_t>sizeof(real)
    if nb > 512:
        nb = 512
    b = 0
    while b < nb:
        LRFAST_PREFETCH(<char*>(p + off) + b)
        if s0 != NULL:
            LRFAST_PREFETCH(<char*>(s0 + off) + b)
        if s1 != NULL:
            LRFAST_PREFETCH(<char*>(s1 + off) + b)
        b += 64


cdef inline void _sparse_run(int op, real* p, real* s0, real* s1, const real* vals,
                             const Py_ssize_t* order, const Py_ssize_t* rows,
                             const Py_ssize_t* starts, Py_ssize_t r, Py_ssize_t d,
                             const double* sc, real* buf) noexcept nogil:
    cdef Py_ssize_t j, k, lo = starts[r], hi = starts[r + 1]
    cdef Py_ssize_t off = rows[r] * d
    cdef const real* g = vals + order[lo] * d
    cdef const real* v
    if hi - lo > 1:                     # duplicates: sum in index order into buf
        for j in range(d):
            buf[j] = g[j]
        for k in range(lo + 1, hi):
            v = vals + order[k] * d
            for j in range(d):
                buf[j] = buf[j] + v[j]
        g = buf
    _sparse_row(op, p + off, (s0 + off) if s0 != NULL else NULL,
                (s1 + off) if s1 != NULL else NULL, g, d, sc)


cdef void _sparse_walk(int op, real* p, real* s0, real* s1, const real* vals,
                       const Py_ssize_t* order, const Py_ssize_t* rows, const Py_ssize_t* starts,
                       Py_ssize_t nruns, Py_ssize_t d, const double* sc, real* buf,
                       int nt) noexcept nogil:
    cdef Py_ssize_t r
    cdef int tid
    if nt <= 1:
        for r in range(min(nruns, SP_AHEAD)):
            _sparse_prefetch(p, s0, s1, rows, r, nruns, d)
        for r in range(nruns):
            _sparse_prefetch(p, s0, s1, rows, r + SP_AHEAD, nruns, d)
            _sparse_run(op, p, s0, s1, vals, order, rows, starts, r, d, sc, buf)
    else:
        for r in prange(nruns, num_threads=nt, schedule='static'):
            tid = threadid()
            _sparse_prefetch(p, s0, s1, rows, r + SP_AHEAD, nruns, d)
            _sparse_run(op, p, s0, s1, vals, order, rows, starts, r, d, sc, buf + tid * d)


# sparse_rows calls the walk through these pointers, never inlined: inlined into
# that Python wrapper, gcc placed the walk in the wrapper's cold part and left
# the row loops scalar (measured 4-5x slower per element than the dense kernels).
ctypedef void (*_walk32_t)(int, float*, float*, float*, const float*, const Py_ssize_t*,
                           const Py_ssize_t*, const Py_ssize_t*, Py_ssize_t, Py_ssize_t,
                           const double*, float*, int) noexcept nogil
ctypedef void (*_walk64_t)(int, double*, double*, double*, const double*, const Py_ssize_t*,
                           const Py_ssize_t*, const Py_ssize_t*, Py_ssize_t, Py_ssize_t,
                           const double*, double*, int) noexcept nogil
cdef _walk32_t _walk32 = NULL
cdef _walk64_t _walk64 = NULL
_walk32 = _sparse_walk[float]
_walk64 = _sparse_walk[double]


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


def sparse_rows(int op, p, s0, s1, vals, order, rows, starts, sc):
    """One row-sparse step of one param (internal: lrfast.optim._sparse
    validates and prepares every argument; see the comment at the top of
    src/_sparse.pxi). Runs with the GIL released; returns None."""
    global _parallel_used, _sparse_pol_ready
    cdef Py_ssize_t n, d, nruns, k, r, total
    cdef int nt
    cdef double csc[8]
    cdef void* buf
    cdef void* pp
    cdef void* p0
    cdef void* p1
    cdef void* pv
    cdef const Py_ssize_t* po
    cdef const Py_ssize_t* pr
    cdef const Py_ssize_t* ps
    cdef bint f64
    cdef double t0, el
    # Defensive checks of the internal contract (cheap, O(runs)): a bug upstream
    # must raise, never write out of bounds.
    for a, what in ((p, "param"), (vals, "values"), (order, "order"), (rows, "rows"),
                    (starts, "starts")):
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            raise ValueError(f"sparse_rows: {what} must be a C-contiguous ndarray")
    if op < SP_SGD or op > SP_ADAM:
        raise ValueError(f"sparse_rows: unknown op {op}")
    if p.ndim < 1 or p.dtype not in (np.float32, np.float64) or vals.dtype != p.dtype:
        raise ValueError("sparse_rows: param and values must share a float dtype")
    for a in (s0, s1):
        if a is not None and (not isinstance(a, np.ndarray) or not a.flags.c_contiguous
                              or a.shape != p.shape or a.dtype != p.dtype):
            raise ValueError("sparse_rows: state arrays must match the param")
    if (op >= SP_ADAGRAD and s0 is None) or (op == SP_ADAM and s1 is None):
        raise ValueError("sparse_rows: missing state array")
    for a in (order, rows, starts):
        if a.dtype != np.intp:
            raise ValueError("sparse_rows: index arrays must be intp")
    n = p.shape[0]
    d = p.size // n if n else 0
    nruns = rows.shape[0]
    k = order.shape[0]
    if starts.shape[0] != nruns + 1 or vals.size != k * d or len(sc) > 8:
        raise ValueError("sparse_rows: inconsistent run arrays")
    for r in range(len(sc)):
        csc[r] = float(sc[r])
    po = <const Py_ssize_t*>cnp.PyArray_DATA(<cnp.ndarray>order)
    pr = <const Py_ssize_t*>cnp.PyArray_DATA(<cnp.ndarray>rows)
    ps = <const Py_ssize_t*>cnp.PyArray_DATA(<cnp.ndarray>starts)
    if nruns and (ps[0] != 0 or ps[nruns] != k):
        raise ValueError("sparse_rows: inconsistent run arrays")
    for r in range(nruns):
        if pr[r] < 0 or pr[r] >= n or ps[r + 1] <= ps[r]:
            raise ValueError("sparse_rows: row out of range")
    for r in range(k):
        if po[r] < 0 or po[r] >= k:
            raise ValueError("sparse_rows: order out of range")
    if nruns == 0 or d == 0:
        return None
    total = nruns * d
    if not _sparse_pol_ready:
        _policy_seed(&_sparse_pol)
        _sparse_pol_ready = 1
    nt = _policy_threads(&_sparse_pol, total)
    f64 = p.dtype == np.float64
    buf = malloc(<size_t>nt * <size_t>d * (sizeof(double) if f64 else sizeof(float)))
    if buf == NULL:
        raise MemoryError()
    pp = _ptr(p)
    p0 = _ptr(s0)
    p1 = _ptr(s1)
    pv = _ptr(vals)
    try:
        with nogil:
            t0 = lrfast_monotonic()
            if f64:
                _walk64(op, <double*>pp, <double*>p0, <double*>p1, <const double*>pv,
                        po, pr, ps, nruns, d, csc, <double*>buf, nt)
            else:
                _walk32(op, <float*>pp, <float*>p0, <float*>p1, <const float*>pv,
                        po, pr, ps, nruns, d, csc, <float*>buf, nt)
            el = lrfast_monotonic() - t0
        _policy_record(&_sparse_pol, nt, total, el)
    finally:
        free(buf)
    if nt > 1:
        _parallel_used = 1
    return None
