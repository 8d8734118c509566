# Adafactor's step (lrfast.optim.Adafactor): factored second moments for
# params with ndim >= 2, a full one for vectors, then an update clipped by
# its RMS. Included after _kernels.pxi (it uses _pairwise, the thread policy
# and _parallel_used from there).
#
# The state is not the param's shape (row_var has one value per row,
# col_var one per column), so this is not a loop of the fused engine: one
# call per param, three passes over fixed blocks with the GIL released:
#   1. read g and p: per-row sums of g^2 (final: a block owns whole rows),
#      per-block partial column sums, per-block sums of p^2 (for RMS(p));
#      then, serially, the column partials combined in block order and the
#      state updated (torch's lerp);
#   2. read g: the update u = g / sqrt(max(v, eps1^2)) and per-block sums of u^2;
#   3. read g, write p: p = p*(1 - lr*wd) - alpha/denom * u (u recomputed).
# Every sum is in double: 8 fixed lanes over a row (or a 4096-element block
# of a vector) combined pairwise, rows added in order inside a block, blocks
# combined in order (columns) or by _pairwise (totals). A block is the unit
# of work of a thread, so no result depends on the thread count; the numpy
# twin lrfast._reference.adafactor reproduces every sum.

cdef enum:
    AF_ROWS = 64       # rows per block of a factored (ndim >= 2) param

AF_BLOCK_ROWS = AF_ROWS


cdef struct AfArgs:
    char* p
    const char* g
    char* rv                   # row_var (nb*n), or variance (size) for a vector
    char* cv                   # col_var (nb*m)
    const Py_ssize_t* boff     # element offset of each matrix of the batch
    Py_ssize_t nb, n, m, si, sj, nblk, size
    double gs, w, eps1, eps1sq, dm, c
    int decay
    double* rowsum             # nb*n
    double* colpart            # nb*nblk*m
    double* part               # per block partial sums (p^2 in pass 1, u^2 in pass 2)
    double* den                # per matrix: max(mean(row_var), eps1)


cdef inline double _lane8(const double* acc) noexcept nogil:
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline real _lerp(real x, real e, real w, real omw, bint low) noexcept nogil:
    # torch's lerp: x + w*(e - x) for |w| < 0.5, else e - (e - x)*(1 - w)
    if low:
        return x + w * (e - x)
    return e - (e - x) * omw


cdef inline real _rsqrt(real v) noexcept nogil:
    cdef real one = 1
    if real is float:
        return one / sqrtf(v)
    else:
        return one / sqrt(v)


# ---------------------------------------------------------------- matrices
cdef void _afm_block(AfArgs* a, Py_ssize_t k, int which, real* p, const real* g) noexcept nogil:
    cdef Py_ssize_t b = k // a.nblk, i0 = (k % a.nblk) * AF_ROWS, i1, i, j, q, l, n8, o
    cdef double acc[8]
    cdef double acc2[8]
    cdef double x, y, bsum = 0.0
    cdef double* cp = a.colpart + k * a.m
    cdef real gs = <real>a.gs, gv, v, u, rvi, den, e1sq = <real>a.eps1sq
    cdef real dm = <real>a.dm, c = <real>a.c
    cdef const real* cv = <const real*>a.cv + b * a.m
    cdef const real* gr
    cdef real* pr
    cdef Py_ssize_t sj = a.sj
    i1 = i0 + AF_ROWS
    if i1 > a.n:
        i1 = a.n
    n8 = a.m - a.m % 8
    if which == 1:
        for j in range(a.m):
            cp[j] = 0.0
    for i in range(i0, i1):
        o = a.boff[b] + i * a.si
        gr = g + o
        pr = p + o
        if which == 1:
            for l in range(8):
                acc[l] = 0.0
                acc2[l] = 0.0
            for q in range(0, n8, 8):
                for l in range(8):
                    x = <double>(gs * gr[(q + l) * sj])
                    x = x * x
                    acc[l] = acc[l] + x
                    cp[q + l] = cp[q + l] + x
                    y = <double>pr[(q + l) * sj]
                    acc2[l] = acc2[l] + y * y
            for j in range(n8, a.m):
                x = <double>(gs * gr[j * sj])
                x = x * x
                acc[j - n8] = acc[j - n8] + x
                cp[j] = cp[j] + x
                y = <double>pr[j * sj]
                acc2[j - n8] = acc2[j - n8] + y * y
            a.rowsum[b * a.n + i] = _lane8(acc)
            bsum = bsum + _lane8(acc2)
        else:
            rvi = (<const real*>a.rv)[b * a.n + i]
            den = <real>a.den[b]
            if which == 2:
                for l in range(8):
                    acc[l] = 0.0
                for q in range(0, n8, 8):
                    for l in range(8):
                        v = (rvi * cv[q + l]) / den
                        v = e1sq if v < e1sq else v
                        u = _rsqrt(v) * (gs * gr[(q + l) * sj])
                        x = <double>u
                        acc[l] = acc[l] + x * x
                for j in range(n8, a.m):
                    v = (rvi * cv[j]) / den
                    v = e1sq if v < e1sq else v
                    u = _rsqrt(v) * (gs * gr[j * sj])
                    x = <double>u
                    acc[j - n8] = acc[j - n8] + x * x
                bsum = bsum + _lane8(acc)
            else:
                for j in range(a.m):
                    v = (rvi * cv[j]) / den
                    v = e1sq if v < e1sq else v
                    u = _rsqrt(v) * (gs * gr[j * sj])
                    gv = pr[j * sj] * dm if a.decay else pr[j * sj]
                    pr[j * sj] = gv + c * u
    if which != 3:
        a.part[k] = bsum


cdef void _afm_run(AfArgs* a, int nt, int which, real* p, const real* g) noexcept nogil:
    global _parallel_used
    cdef Py_ssize_t k, nk = a.nb * a.nblk
    if nt > nk:
        nt = <int>nk
    if nt <= 1:
        for k in range(nk):
            _afm_block(a, k, which, p, g)
    else:
        _parallel_used = 1
        for k in prange(nk, schedule='static', num_threads=nt):
            _afm_block(a, k, which, p, g)


cdef void _afm_state(AfArgs* a, real* p) noexcept nogil:
    # serial: column partials combined in block order, the moments' lerp, and
    # each matrix's max(mean(row_var), eps1)
    cdef Py_ssize_t b, blk, i, j
    cdef real w = <real>a.w, one = 1, omw, e1 = <real>a.eps1, mean
    cdef bint low = fabs(<double>w) < 0.5
    cdef double s
    cdef double* c0
    cdef double* cb
    cdef real* rv = <real*>a.rv
    cdef real* cv = <real*>a.cv
    omw = one - w
    for b in range(a.nb):
        c0 = a.colpart + b * a.nblk * a.m
        for blk in range(1, a.nblk):
            cb = c0 + blk * a.m
            for j in range(a.m):
                c0[j] = c0[j] + cb[j]
        for j in range(a.m):
            cv[b * a.m + j] = _lerp(cv[b * a.m + j], <real>(c0[j] / <double>a.n), w, omw, low)
        s = 0.0
        for i in range(a.n):
            rv[b * a.n + i] = _lerp(rv[b * a.n + i], <real>(a.rowsum[b * a.n + i] / <double>a.m),
                                    w, omw, low)
            s = s + <double>rv[b * a.n + i]
        mean = <real>(s / <double>a.n)
        a.den[b] = <double>(e1 if mean < e1 else mean)


# ----------------------------------------------------------------- vectors
cdef void _afv_block(AfArgs* a, Py_ssize_t k, int which, real* p, const real* g) noexcept nogil:
    cdef Py_ssize_t i0 = k * BLOCK, n, i, q, l, n8
    cdef double acc[8]
    cdef double x
    cdef real gs = <real>a.gs, gv, v, u, w = <real>a.w, one = 1, omw
    cdef real e1sq = <real>a.eps1sq, dm = <real>a.dm, c = <real>a.c
    cdef bint low = fabs(<double>w) < 0.5
    cdef real* var = <real*>a.rv + i0
    cdef real* pp = p + i0
    cdef const real* gg = g + i0
    omw = one - w
    n = a.size - i0
    if n > BLOCK:
        n = BLOCK
    n8 = n - n % 8
    if which == 3:
        for i in range(n):
            v = var[i]
            v = e1sq if v < e1sq else v
            u = _rsqrt(v) * (gs * gg[i])
            gv = pp[i] * dm if a.decay else pp[i]
            pp[i] = gv + c * u
        return
    for l in range(8):
        acc[l] = 0.0
    if which == 1:
        for q in range(0, n8, 8):
            for l in range(8):
                x = <double>pp[q + l]
                acc[l] = acc[l] + x * x
        for i in range(n8, n):
            x = <double>pp[i]
            acc[i - n8] = acc[i - n8] + x * x
        for i in range(n):
            gv = gs * gg[i]
            var[i] = _lerp(var[i], gv * gv, w, omw, low)
    else:
        for q in range(0, n8, 8):
            for l in range(8):
                v = var[q + l]
                v = e1sq if v < e1sq else v
                x = <double>(_rsqrt(v) * (gs * gg[q + l]))
                acc[l] = acc[l] + x * x
        for i in range(n8, n):
            v = var[i]
            v = e1sq if v < e1sq else v
            x = <double>(_rsqrt(v) * (gs * gg[i]))
            acc[i - n8] = acc[i - n8] + x * x
    a.part[k] = _lane8(acc)


cdef void _afv_run(AfArgs* a, int nt, int which, real* p, const real* g) noexcept nogil:
    global _parallel_used
    cdef Py_ssize_t k, nk = a.nblk
    if nt > nk:
        nt = <int>nk
    if nt <= 1:
        for k in range(nk):
            _afv_block(a, k, which, p, g)
    else:
        _parallel_used = 1
        for k in prange(nk, schedule='static', num_threads=nt):
            _afv_block(a, k, which, p, g)


cdef int _af_check(object x, str what, int dt, Py_ssize_t size, bint writable) except -1:
    if not cnp.PyArray_CheckExact(x):
        raise TypeError(f"adafactor: {what} must be a numpy ndarray")
    cdef cnp.ndarray a = <cnp.ndarray>x
    if _dtype_code(a) != dt or (dt < 0):
        raise TypeError(f"adafactor: {what} dtype {a.dtype} does not match")
    if cnp.PyArray_SIZE(a) != size:
        raise ValueError(f"adafactor: {what} has {cnp.PyArray_SIZE(a)} elements, expected {size}")
    if not cnp.PyArray_ISALIGNED(a) or not cnp.PyArray_ISNOTSWAPPED(a):
        raise ValueError(f"adafactor: {what} is not aligned native-order memory")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"adafactor: {what} is read-only")
    return 0


def _adafactor_step(p, g, s0, s1, boff, Py_ssize_t n, Py_ssize_t m, Py_ssize_t si,
                    Py_ssize_t sj, double gs, double w, double eps1, double eps2, double rho,
                    double dm, double d, bint decay):
    """One Adafactor step of one param, in place (internal: lrfast.optim.Adafactor
    validates everything first).

    Factored (``s1`` is not None): ``p`` holds ``boff.size`` matrices of
    ``n`` x ``m`` elements, element (b, i, j) at ``boff[b] + i*si + j*sj``
    of ``p`` and ``g``; ``s0`` is row_var (``nb*n``), ``s1`` col_var
    (``nb*m``), both C-contiguous. Otherwise ``s0`` is the variance (same
    layout as ``p``, any contiguous order). ``gs`` scales the grad
    (maximize, clipping), ``w`` = t**beta2_decay, ``rho`` the relative step,
    ``dm`` = 1 - lr*wd (applied when ``decay``). Returns ``(alpha, denom)``.
    """
    cdef AfArgs a
    cdef cnp.ndarray pa = <cnp.ndarray>p, ba
    cdef int dt, nt
    cdef Py_ssize_t size, nk
    cdef double alpha, denom, psq, usq
    cdef bint factored = s1 is not None
    if not cnp.PyArray_CheckExact(p):
        raise TypeError("adafactor: param must be a numpy ndarray")
    dt = _dtype_code(pa)
    size = cnp.PyArray_SIZE(pa)
    if dt < 0:
        raise TypeError(f"adafactor: param dtype {pa.dtype} is not supported")
    _af_check(p, "param", dt, size, True)
    _af_check(g, "grad", dt, size, False)
    memset(&a, 0, sizeof(AfArgs))
    if factored:
        if not (cnp.PyArray_CheckExact(boff) and cnp.PyArray_TYPE(<cnp.ndarray>boff) == cnp.NPY_INTP
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>boff)):
            raise TypeError("adafactor: boff must be a C-contiguous intp array")
        ba = <cnp.ndarray>boff
        a.nb = cnp.PyArray_SIZE(ba)
        if n < 0 or m < 0 or a.nb * n * m != size:
            raise ValueError("adafactor: the matrix shape does not match the param")
        _af_check(s0, "row_var", dt, a.nb * n, True)
        _af_check(s1, "col_var", dt, a.nb * m, True)
        if not (cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>s0)
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>s1)):
            raise ValueError("adafactor: row_var and col_var must be C-contiguous")
        a.boff = <const Py_ssize_t*>cnp.PyArray_DATA(ba)
        a.n, a.m, a.si, a.sj = n, m, si, sj
        a.nblk = (n + AF_ROWS - 1) // AF_ROWS
        a.cv = <char*>cnp.PyArray_DATA(<cnp.ndarray>s1)
        nk = a.nb * a.nblk
    else:
        _af_check(s0, "variance", dt, size, True)
        a.nb = 1
        a.nblk = (size + BLOCK - 1) // BLOCK
        nk = a.nblk
    a.size = size
    a.p = <char*>cnp.PyArray_DATA(pa)
    a.g = <const char*>cnp.PyArray_DATA(<cnp.ndarray>g)
    a.rv = <char*>cnp.PyArray_DATA(<cnp.ndarray>s0)
    a.gs, a.w, a.eps1, a.eps1sq, a.dm, a.decay = gs, w, eps1, eps1 * eps1, dm, decay
    if size == 0:
        return (eps2 * rho, 1.0)
    a.part = <double*>malloc(max(nk, 1) * sizeof(double))
    if factored:
        a.rowsum = <double*>malloc(max(a.nb * n, 1) * sizeof(double))
        a.colpart = <double*>malloc(max(nk * m, 1) * sizeof(double))
        a.den = <double*>malloc(max(a.nb, 1) * sizeof(double))
    try:
        if a.part == NULL or (factored and (a.rowsum == NULL or a.colpart == NULL
                                            or a.den == NULL)):
            raise MemoryError()
        with nogil:
            nt = _policy_hint_threads(size)
            if factored:
                if dt == 0:
                    _afm_run(&a, nt, 1, <float*>a.p, <const float*>a.g)
                    _afm_state(&a, <float*>a.p)
                else:
                    _afm_run(&a, nt, 1, <double*>a.p, <const double*>a.g)
                    _afm_state(&a, <double*>a.p)
            elif dt == 0:
                _afv_run(&a, nt, 1, <float*>a.p, <const float*>a.g)
            else:
                _afv_run(&a, nt, 1, <double*>a.p, <const double*>a.g)
            psq = _pairwise(a.part, nk)
            alpha = sqrt(psq) / sqrt(<double>size)
            alpha = (alpha if alpha > eps2 else eps2) * rho
            if factored:
                if dt == 0:
                    _afm_run(&a, nt, 2, <float*>a.p, <const float*>a.g)
                else:
                    _afm_run(&a, nt, 2, <double*>a.p, <const double*>a.g)
            elif dt == 0:
                _afv_run(&a, nt, 2, <float*>a.p, <const float*>a.g)
            else:
                _afv_run(&a, nt, 2, <double*>a.p, <const double*>a.g)
            usq = _pairwise(a.part, nk)
            denom = sqrt(usq) / (sqrt(<double>size) * d)
            denom = denom if denom > 1.0 else 1.0
            a.c = -alpha / denom
            if factored:
                if dt == 0:
                    _afm_run(&a, nt, 3, <float*>a.p, <const float*>a.g)
                else:
                    _afm_run(&a, nt, 3, <double*>a.p, <const double*>a.g)
            elif dt == 0:
                _afv_run(&a, nt, 3, <float*>a.p, <const float*>a.g)
            else:
                _afv_run(&a, nt, 3, <double*>a.p, <const double*>a.g)
    finally:
        free(a.part)
        free(a.rowsum)
        free(a.colpart)
        free(a.den)
    return (alpha, denom)
