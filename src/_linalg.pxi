# Vector operations over all params as one flat vector: the L-BFGS two-loop
# recursion, its dot products and axpys, and the line searches' trial points.
# Included by both ISA builds, after _kernels.pxi (it uses BLOCK, _policy_hint_threads,
# _pairwise, _nanmax, _dtype_code and _parallel_used from there).
#
# Design (read before changing the loops)
# ---------------------------------------
# a) A "vector" is one ndarray or a list of ndarrays of one dtype, read as the
#    concatenation of each array's memory (C order for C-contiguous arrays,
#    Fortran order for F-contiguous ones). Nothing is ever concatenated: an
#    operation walks the segments of all its operands together.
# b) Work is cut into fixed blocks of BLOCK elements of the *flat* index
#    (block k = elements [k*BLOCK, (k+1)*BLOCK)), whatever the segments are;
#    a block that spans several arrays is walked piece by piece. One
#    prange(blocks, schedule='static') runs them (serial below the kernels'
#    threshold: same policy, `_policy_hint_threads`: the process's measured mode).
# c) Reductions (dot, sum|x|, sum x^2) accumulate in double, in eight lanes
#    chosen by the flat index mod 8, each lane in increasing index order; a
#    block's lanes are combined pairwise, blocks pairwise in a fixed order.
#    The result therefore depends neither on the thread count, nor on the ISA
#    build, nor on how the vector is split into arrays: a dot over 1000 params
#    equals, bit for bit, the dot over their concatenation. max|x| propagates
#    NaN (np.maximum semantics).
# d) Element updates (axpy, lincomb, scale) are written as torch.optim.LBFGS
#    writes them (`q.add_(y, alpha=-al)` is q + (-al)*y), with -ffp-contract=off;
#    scalars arrive in double and are rounded once to the vector's dtype, so
#    float32 loops never promote.
# e) The two-loop recursion (Nocedal & Wright, Numerical Optimization, 2nd ed.,
#    Algorithm 7.4) is fused: each pass over memory applies one axpy and
#    computes the dot product the next step needs, so m history pairs cost
#    2m+1 passes instead of 4m.

import bisect as _bisect
import numpy as _np

cdef enum:
    V_DOT = 0          # r0 = sum x0*x1
    V_STATS = 1        # r0 = sum|x0|, r1 = max|x0|, r2 = sum x0*x0
    V_GATHER = 2       # x0 = x1; r0 = sum|x1|, r1 = max|x1|, r2 = sum x1*x2 (if a third operand)
    V_AXPY = 3         # x1 = x1 + a*x0
    V_LINCOMB = 4      # x0 = x1 + a*x2
    V_SCALE = 5        # x0 = x0*a
    V_SCALECOPY = 6    # x0 = x1*a
    V_MAXARGS = 3


cdef struct VArg:
    int nseg
    char** ptr           # segment base pointers
    Py_ssize_t* off      # nseg + 1 cumulative element offsets


cdef struct VJob:
    int op
    int dtype            # 0 float32, 1 float64
    int itemsize
    int nargs
    Py_ssize_t n
    Py_ssize_t nblocks
    double a
    VArg arg[V_MAXARGS]
    double* r0
    double* r1
    double* r2


cdef class _Vec:
    """One bound operand: the arrays of a vector with their pointers (internal)."""
    cdef VArg v
    cdef list arrays
    cdef int dtype
    cdef Py_ssize_t n

    def __cinit__(self):
        self.v.nseg = 0
        self.v.ptr = NULL
        self.v.off = NULL

    def __dealloc__(self):
        free(self.v.ptr)
        free(self.v.off)


cdef _Vec _bind_vec(object obj, bint write, str name):
    # Validate a vector (an ndarray or a list/tuple of them) and record its segments.
    cdef list arrays
    cdef _Vec out = _Vec()
    cdef Py_ssize_t k, nseg, total = 0
    cdef int code
    cdef cnp.ndarray a
    if cnp.PyArray_Check(obj):
        arrays = [obj]
    elif isinstance(obj, (list, tuple)):
        arrays = list(obj)
    else:
        raise TypeError(f"{name} must be an ndarray or a list of ndarrays, "
                        f"got {type(obj).__name__}")
    nseg = len(arrays)
    out.arrays = arrays
    out.dtype = -1
    out.v.nseg = <int>nseg
    out.v.ptr = <char**>malloc(max(nseg, 1) * sizeof(char*))
    out.v.off = <Py_ssize_t*>malloc((nseg + 1) * sizeof(Py_ssize_t))
    if out.v.ptr == NULL or out.v.off == NULL:
        raise MemoryError()
    out.v.off[0] = 0
    for k in range(nseg):
        x = arrays[k]
        where = name if cnp.PyArray_Check(obj) else f"{name}[{k}]"
        if not cnp.PyArray_Check(x):
            raise TypeError(f"{where} must be a numpy ndarray, got {type(x).__name__}")
        a = <cnp.ndarray>x
        code = _dtype_code(a)
        if code < 0:
            raise TypeError(f"{where}: dtype {a.dtype} is not supported (float32 or float64)")
        if out.dtype < 0:
            out.dtype = code
        elif code != out.dtype:
            raise TypeError(f"{where}: dtype {a.dtype} differs from the other arrays' "
                            f"({'float32' if out.dtype == 0 else 'float64'})")
        if not (cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a)):
            raise ValueError(f"{where}: array is not contiguous")
        if not cnp.PyArray_ISALIGNED(a) or not cnp.PyArray_ISNOTSWAPPED(a):
            raise ValueError(f"{where}: array is not aligned or not in native byte order")
        if write and not cnp.PyArray_ISWRITEABLE(a):
            raise ValueError(f"{where}: array is read-only (this operation writes it)")
        out.v.ptr[k] = <char*>cnp.PyArray_DATA(a)
        total += cnp.PyArray_SIZE(a)
        out.v.off[k + 1] = total
    if out.dtype < 0:
        out.dtype = 1
    out.n = total
    return out


cdef list _ranges(_Vec v):
    cdef Py_ssize_t k, isz = 4 if v.dtype == 0 else 8
    out = []
    for k in range(v.v.nseg):
        if v.v.off[k + 1] > v.v.off[k]:
            out.append((<uintptr_t>v.v.ptr[k],
                        <uintptr_t>v.v.ptr[k] + (v.v.off[k + 1] - v.v.off[k]) * isz))
    out.sort()
    return out


cdef _check_no_overlap(_Vec w, object wobj, list reads, str wname):
    # The written vector must not overlap any read operand, unless that operand is
    # the very same object (an in-place update such as y += a*y).
    cdef list wr = None
    cdef _Vec r
    for robj, r, rname in reads:
        if robj is wobj:
            continue
        if wr is None:
            wr = _ranges(w)
            if not wr:
                return
        for lo, hi in _ranges(r):
            for wlo, whi in wr:
                if lo < whi and wlo < hi:
                    raise ValueError(f"{wname} overlaps {rname} in memory (pass separate arrays)")


# ---------------------------------------------------------------------------
# Lane reductions over one piece (see design point c). `lane` is the flat index
# of x[0] mod 8.
# ---------------------------------------------------------------------------
cdef inline double _lanes8(const double* a) noexcept nogil:
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


cdef inline double _lanes8max(const double* a) noexcept nogil:
    cdef double m = a[0]
    cdef int j
    for j in range(1, 8):
        m = _nanmax(m, a[j])
    return m


cdef void _ldot(const real* x, const real* y, Py_ssize_t n, int lane, double* acc) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef int j
    while i < n and lane != 0:
        acc[lane] = acc[lane] + <double>x[i] * <double>y[i]
        i += 1
        lane = (lane + 1) & 7
    while i + 8 <= n:
        for j in range(8):
            acc[j] = acc[j] + <double>x[i + j] * <double>y[i + j]
        i += 8
    while i < n:
        acc[lane] = acc[lane] + <double>x[i] * <double>y[i]
        i += 1
        lane = (lane + 1) & 7


cdef void _labs(const real* x, Py_ssize_t n, int lane, double* sacc, double* macc) noexcept nogil:
    # sum|x| into sacc, max|x| (NaN-propagating) into macc
    cdef Py_ssize_t i = 0
    cdef int j
    cdef double v
    while i < n and lane != 0:
        v = fabs(<double>x[i])
        sacc[lane] = sacc[lane] + v
        macc[lane] = _nanmax(macc[lane], v)
        i += 1
        lane = (lane + 1) & 7
    while i + 8 <= n:
        for j in range(8):
            v = fabs(<double>x[i + j])
            sacc[j] = sacc[j] + v
            macc[j] = _nanmax(macc[j], v)
        i += 8
    while i < n:
        v = fabs(<double>x[i])
        sacc[lane] = sacc[lane] + v
        macc[lane] = _nanmax(macc[lane], v)
        i += 1
        lane = (lane + 1) & 7


cdef void _vpiece(int op, real* x0, real* x1, real* x2, Py_ssize_t n, real a, int lane,
                  double* acc) noexcept nogil:
    cdef Py_ssize_t i
    if op == V_DOT:
        _ldot(x0, x1, n, lane, acc)
    elif op == V_STATS:
        _labs(x0, n, lane, acc, acc + 8)
        _ldot(x0, x0, n, lane, acc + 16)
    elif op == V_GATHER:
        for i in range(n):
            x0[i] = x1[i]
        _labs(x1, n, lane, acc, acc + 8)
        if x2 != NULL:
            _ldot(x1, x2, n, lane, acc + 16)
    elif op == V_AXPY:
        for i in range(n):
            x1[i] = x1[i] + a * x0[i]
    elif op == V_LINCOMB:
        for i in range(n):
            x0[i] = x1[i] + a * x2[i]
    elif op == V_SCALE:
        for i in range(n):
            x0[i] = x0[i] * a
    elif op == V_SCALECOPY:
        for i in range(n):
            x0[i] = x1[i] * a


cdef inline int _seg_of(const VArg* v, Py_ssize_t pos) noexcept nogil:
    # largest segment s with off[s] <= pos (then off[s+1] > pos for pos < n)
    cdef int lo = 0, hi = v.nseg - 1, mid
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if v.off[mid] <= pos:
            lo = mid
        else:
            hi = mid - 1
    return lo


cdef void _vblock(VJob* j, Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t lo = b * BLOCK, hi = lo + BLOCK, pos, end, e
    cdef int k
    cdef int s[V_MAXARGS]
    cdef char* p[V_MAXARGS]
    cdef double acc[24]
    if hi > j.n:
        hi = j.n
    for k in range(24):
        acc[k] = 0.0
    for k in range(V_MAXARGS):
        p[k] = NULL
        s[k] = 0
    for k in range(j.nargs):
        s[k] = _seg_of(&j.arg[k], lo)
    pos = lo
    while pos < hi:
        end = hi
        for k in range(j.nargs):
            while j.arg[k].off[s[k] + 1] <= pos:
                s[k] += 1
            e = j.arg[k].off[s[k] + 1]
            if e < end:
                end = e
            p[k] = j.arg[k].ptr[s[k]] + (pos - j.arg[k].off[s[k]]) * j.itemsize
        if j.dtype == 0:
            _vpiece(j.op, <float*>p[0], <float*>p[1], <float*>p[2], end - pos, <float>j.a,
                    <int>((pos - lo) & 7), acc)
        else:
            _vpiece(j.op, <double*>p[0], <double*>p[1], <double*>p[2], end - pos, j.a,
                    <int>((pos - lo) & 7), acc)
        pos = end
    j.r0[b] = _lanes8(acc)
    j.r1[b] = _lanes8max(acc + 8)
    j.r2[b] = _lanes8(acc + 16)


cdef void _vrun(VJob* j, int nt) noexcept nogil:
    global _parallel_used
    cdef Py_ssize_t b
    nt = <int>min(<Py_ssize_t>nt, j.nblocks)     # never more threads than blocks
    if nt <= 1 or j.nblocks <= 1:
        for b in range(j.nblocks):
            _vblock(j, b)
    else:
        _parallel_used = 1
        for b in prange(j.nblocks, schedule='static', num_threads=nt):
            _vblock(j, b)


cdef tuple _vjob(int op, double a, list vecs):
    # Run one walker operation over bound operands (same size and dtype, checked
    # here); returns the three block-combined reductions.
    cdef VJob j
    cdef _Vec v
    cdef int k
    cdef Py_ssize_t b
    cdef double s0 = 0.0, m1 = 0.0, s2 = 0.0
    v = vecs[0]
    j.op = op
    j.dtype = v.dtype
    j.itemsize = 4 if v.dtype == 0 else 8
    j.nargs = len(vecs)
    j.n = v.n
    j.a = a
    for k in range(j.nargs):
        v = vecs[k]
        if v.n != j.n:
            raise ValueError(f"vectors have different sizes ({j.n} and {v.n} elements)")
        if v.dtype != j.dtype:
            raise TypeError("vectors have different dtypes (float32 and float64)")
        j.arg[k] = v.v
    j.nblocks = (j.n + BLOCK - 1) // BLOCK
    if j.nblocks == 0:
        return 0.0, 0.0, 0.0
    j.r0 = <double*>malloc(3 * j.nblocks * sizeof(double))
    if j.r0 == NULL:
        raise MemoryError()
    j.r1 = j.r0 + j.nblocks
    j.r2 = j.r1 + j.nblocks
    try:
        with nogil:
            _vrun(&j, _policy_hint_threads(j.n))
            s0 = _pairwise(j.r0, j.nblocks)
            s2 = _pairwise(j.r2, j.nblocks)
            m1 = j.r1[0]
            for b in range(1, j.nblocks):
                m1 = _nanmax(m1, j.r1[b])
    finally:
        free(j.r0)
    return s0, m1, s2


# ---------------------------------------------------------------------------
# Public vector functions (lrfast.line_search and lrfast.lbfgs use them).
# ---------------------------------------------------------------------------
def vdot(x, y):
    """Deterministic dot product of two vectors (ndarrays or lists of them), in double."""
    return _vjob(V_DOT, 0.0, [_bind_vec(x, False, "x"), _bind_vec(y, False, "y")])[0]


def vstats(x):
    """(sum|x|, max|x|, sum x*x) of a vector, in double; max|x| propagates NaN."""
    return _vjob(V_STATS, 0.0, [_bind_vec(x, False, "x")])


def vaxpy(double a, x, y):
    """y += a*x (y written in place; a rounded once to the dtype)."""
    cdef _Vec vx = _bind_vec(x, False, "x"), vy = _bind_vec(y, True, "y")
    _check_no_overlap(vy, y, [(x, vx, "x")], "y")
    _vjob(V_AXPY, a, [vx, vy])


def vlincomb(out, x, double a, y):
    """out = x + a*y."""
    cdef _Vec vo = _bind_vec(out, True, "out"), vx = _bind_vec(x, False, "x")
    cdef _Vec vy = _bind_vec(y, False, "y")
    _check_no_overlap(vo, out, [(x, vx, "x"), (y, vy, "y")], "out")
    _vjob(V_LINCOMB, a, [vo, vx, vy])


def vscale(double a, x, out=None):
    """x *= a in place, or out = x*a."""
    cdef _Vec vx = _bind_vec(x, out is None, "x"), vo
    if out is None:
        _vjob(V_SCALE, a, [vx])
    else:
        vo = _bind_vec(out, True, "out")
        _check_no_overlap(vo, out, [(x, vx, "x")], "out")
        _vjob(V_SCALECOPY, a, [vo, vx])


def vcopy(x, out, d=None):
    """out = x; returns (sum|x|, max|x|, x.d) (x.d is 0.0 without d), all in double."""
    cdef _Vec vo = _bind_vec(out, True, "out"), vx = _bind_vec(x, False, "x"), vd
    reads = [(x, vx, "x")]
    vecs = [vo, vx]
    if d is not None:
        vd = _bind_vec(d, False, "d")
        reads.append((d, vd, "d"))
        vecs.append(vd)
    _check_no_overlap(vo, out, reads, "out")
    return _vjob(V_GATHER, 0.0, vecs)


# ---------------------------------------------------------------------------
# Params as one flat vector: bound once, with the grad checks of the Engine.
# ---------------------------------------------------------------------------
cdef class FlatParams:
    """A list of params (contiguous float32 or float64 ndarrays of ONE dtype)
    viewed as one flat vector, for L-BFGS and the line searches.

    Params are bound once (pointers, shapes, layouts, and the sorted byte ranges
    used to reject a grad that overlaps a param). ``gather`` copies a list of
    grads into a flat buffer (validating them like the optimizers' steps do),
    ``pull`` copies the params into a flat buffer and ``push`` writes
    ``params = x + t*d`` from flat buffers. Nothing is concatenated.
    """
    cdef _Vec pv
    cdef list _params, _shapes, _zeros
    cdef list _c, _f
    cdef list _wr
    cdef readonly Py_ssize_t n
    cdef readonly int nparams
    cdef readonly object dtype
    cdef TensorRec* _recs       # per param: the record the grad binder checks against

    def __dealloc__(self):
        free(self._recs)

    def __init__(self, list params):
        cdef Py_ssize_t i
        self.pv = _bind_vec(params, True, "params")
        free(self._recs)
        self._recs = <TensorRec*>calloc(max(len(params), 1), sizeof(TensorRec))
        if self._recs == NULL:
            raise MemoryError()
        for i in range(len(params)):
            self._recs[i].size = self.pv.v.off[i + 1] - self.pv.v.off[i]
            self._recs[i].dtype = self.pv.dtype
            self._recs[i].scode = self.pv.dtype
            self._recs[i].itemsize = 4 if self.pv.dtype == 0 else 8
            self._recs[i].c_contig = cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>params[i])
            self._recs[i].f_contig = cnp.PyArray_IS_F_CONTIGUOUS(<cnp.ndarray>params[i])
        self._params = list(params)
        self.nparams = len(params)
        self.n = self.pv.n
        self.dtype = _np.dtype(_np.float32 if self.pv.dtype == 0 else _np.float64)
        self._shapes = [p.shape for p in params]
        self._c = [bool(p.flags.c_contiguous) for p in params]
        self._f = [bool(p.flags.f_contiguous) for p in params]
        self._zeros = [None] * self.nparams
        isz = self.dtype.itemsize
        iv = []
        for i in range(self.nparams):
            lo = <uintptr_t>self.pv.v.ptr[i]
            nb = (self.pv.v.off[i + 1] - self.pv.v.off[i]) * isz
            if nb:
                iv.append((lo, lo + nb, i))
        iv.sort()
        for i in range(1, len(iv)):
            if iv[i][0] < iv[i - 1][1]:
                a, b = iv[i - 1], iv[i]
                raise ValueError(f"param {b[2]} overlaps param {a[2]} (the same array, or "
                                 "views of one array, given twice)")
        self._wr = iv

    def _overlap(self, uintptr_t lo, uintptr_t hi):
        # index of a param whose bytes overlap [lo, hi), or -1
        k = _bisect.bisect_left(self._wr, (hi,))
        if k > 0 and self._wr[k - 1][1] > lo:
            return self._wr[k - 1][2]
        return -1

    def check(self, grads, str what="grad"):
        """Validate one array per param (count, shape, dtype, layout, no overlap with
        a param); None entries are replaced by zeros. Returns the list to use."""
        cdef Py_ssize_t i
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"{what}s must be a list or tuple of arrays (one per param), got "
                            f"{type(grads).__name__}")
        if len(grads) != self.nparams:
            raise ValueError(f"expected {self.nparams} {what}s (one per param, in param order), "
                             f"got {len(grads)}")
        out = list(grads)
        isz = self.dtype.itemsize
        for i in range(self.nparams):
            g = out[i]
            if g is None:
                if self._zeros[i] is None:
                    z = _np.zeros(self._shapes[i], self.dtype)
                    z.flags.writeable = False
                    self._zeros[i] = z
                out[i] = self._zeros[i]
                continue
            # the engine's grad binder: type, dtype, byte order, size, layout, alignment
            _check_array(g, what, f"param {i}", &self._recs[i])
            if g.shape != self._shapes[i]:
                raise ValueError(f"param {i}: {what} shape {g.shape} != param shape "
                                 f"{self._shapes[i]}")
            if g.size:
                lo = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>g)
                j = self._overlap(lo, lo + g.size * isz)
                if j >= 0:
                    raise ValueError(f"param {i}: {what} overlaps "
                                     + ("its own param" if j == i else f"param {j}")
                                     + f" (pass a separate {what} array)")
        return out

    def gather(self, grads, out, d=None):
        """Validate grads, copy them into the flat buffer ``out`` and return
        (sum|g|, max|g|, g.d) in double (g.d is 0.0 without d)."""
        grads = self.check(grads)
        vecs = [_bind_vec(out, True, "out"), _bind_vec(grads, False, "grads")]
        if d is not None:
            vecs.append(_bind_vec(d, False, "d"))
        return _vjob(V_GATHER, 0.0, vecs)

    def pull(self, out):
        """out = params (flat); returns (sum|p|, max|p|, 0.0)."""
        return _vjob(V_GATHER, 0.0, [_bind_vec(out, True, "out"), self.pv])

    def put(self, x):
        """params = x (a flat buffer)."""
        _vjob(V_GATHER, 0.0, [self.pv, _bind_vec(x, False, "x")])

    def push(self, x, double t, d):
        """params = x + t*d (x, d flat buffers)."""
        _vjob(V_LINCOMB, t, [self.pv, _bind_vec(x, False, "x"), _bind_vec(d, False, "d")])

    def add(self, double t, d):
        """params += t*d."""
        _vjob(V_AXPY, t, [_bind_vec(d, False, "d"), self.pv])


# ---------------------------------------------------------------------------
# L-BFGS two-loop recursion over flat buffers (design point e).
# ---------------------------------------------------------------------------
cdef struct TLPass:
    char* q              # OUT: the running vector (q, then r = d)
    char* neg            # IN, if not NULL: q = -neg first
    char* axv            # IN, if not NULL: q = q + c*axv
    double c
    int scale            # if set: q = q*h
    double h
    char* dv             # IN, if not NULL: part[b] = dv . q (after the updates)
    Py_ssize_t n
    int dtype
    double* part


cdef void _tl_block_t(real* q, const real* neg, const real* axv, real c, bint scale, real h,
                      const real* dv, Py_ssize_t n, double* out) noexcept nogil:
    cdef Py_ssize_t i
    cdef double acc[8]
    cdef int j
    if neg != NULL:
        for i in range(n):
            q[i] = -neg[i]
    if axv != NULL:
        for i in range(n):
            q[i] = q[i] + c * axv[i]
    if scale:
        for i in range(n):
            q[i] = q[i] * h
    if dv != NULL:
        for j in range(8):
            acc[j] = 0.0
        _ldot(dv, q, n, 0, acc)
        out[0] = _lanes8(acc)


cdef void _tl_block(TLPass* s, Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t lo = b * BLOCK, n = s.n - lo
    if n > BLOCK:
        n = BLOCK
    if s.dtype == 0:
        _tl_block_t(<float*>_shift(s.q, lo, 4), <const float*>_shift(s.neg, lo, 4),
                    <const float*>_shift(s.axv, lo, 4), <float>s.c, s.scale, <float>s.h,
                    <const float*>_shift(s.dv, lo, 4), n, s.part + b)
    else:
        _tl_block_t(<double*>_shift(s.q, lo, 8), <const double*>_shift(s.neg, lo, 8),
                    <const double*>_shift(s.axv, lo, 8), s.c, s.scale, s.h,
                    <const double*>_shift(s.dv, lo, 8), n, s.part + b)


cdef double _tl_pass(TLPass* s, int nt) noexcept nogil:
    global _parallel_used
    cdef Py_ssize_t b, nb = (s.n + BLOCK - 1) // BLOCK
    nt = <int>min(<Py_ssize_t>nt, nb)            # never more threads than blocks
    if nt <= 1 or nb <= 1:
        for b in range(nb):
            _tl_block(s, b)
    else:
        _parallel_used = 1
        for b in prange(nb, schedule='static', num_threads=nt):
            _tl_block(s, b)
    return _pairwise(s.part, nb) if s.dv != NULL else 0.0


cdef char* _flat_ptr(object a, Py_ssize_t n, int dtype, str name, bint write) except NULL:
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy ndarray")
    cdef cnp.ndarray x = <cnp.ndarray>a
    if _dtype_code(x) != dtype or cnp.PyArray_SIZE(x) != n:
        raise ValueError(f"{name}: expected {n} elements of the same dtype as g")
    if not cnp.PyArray_IS_C_CONTIGUOUS(x) or not cnp.PyArray_ISALIGNED(x):
        raise ValueError(f"{name} must be C-contiguous and aligned")
    if write and not cnp.PyArray_ISWRITEABLE(x):
        raise ValueError(f"{name} is read-only")
    return <char*>cnp.PyArray_DATA(x)


def lbfgs_two_loop(g, d, list S, list Y, ro, double h_diag):
    """d = -H g by the L-BFGS two-loop recursion, as torch.optim.LBFGS computes it.

    g, d: flat C-contiguous buffers (d is written; it must not alias the others);
    S, Y: the m steps s_i and grad differences y_i, oldest first (flat buffers);
    ro: the m values 1/(y_i . s_i); h_diag: the initial inverse-Hessian scale
    gamma = s.y / y.y. Returns the list of the m alpha_i (torch's ``al``)::

        q = -g
        for i = m-1 .. 0:  al_i = ro_i * (s_i . q);  q = q + (-al_i) * y_i
        d = q * h_diag
        for i = 0 .. m-1:  be_i = ro_i * (y_i . d);  d = d + (al_i - be_i) * s_i

    (Nocedal & Wright, Algorithm 7.4, with q negated as torch does.)
    """
    cdef cnp.ndarray ga
    cdef int dtype, nt
    cdef Py_ssize_t n, m = len(S), i, nb
    cdef TLPass s
    cdef double be = 0.0, dot
    if not cnp.PyArray_Check(g):
        raise TypeError("g must be a numpy ndarray")
    ga = <cnp.ndarray>g
    dtype = _dtype_code(ga)
    if dtype < 0:
        raise TypeError(f"g: dtype {ga.dtype} is not supported (float32 or float64)")
    n = cnp.PyArray_SIZE(ga)
    if len(Y) != m or len(ro) != m:
        raise ValueError("S, Y and ro must have the same length")
    cdef char* gp = _flat_ptr(g, n, dtype, "g", False)
    cdef char* dp = _flat_ptr(d, n, dtype, "d", True)
    cdef char** sp = <char**>malloc(max(m, 1) * sizeof(char*))
    cdef char** yp = <char**>malloc(max(m, 1) * sizeof(char*))
    cdef double* rov = <double*>malloc(max(m, 1) * sizeof(double))
    cdef double* al = <double*>malloc(max(m, 1) * sizeof(double))
    nb = (n + BLOCK - 1) // BLOCK
    s.part = <double*>malloc(max(nb, 1) * sizeof(double))
    try:
        if sp == NULL or yp == NULL or rov == NULL or al == NULL or s.part == NULL:
            raise MemoryError()
        for i in range(m):
            sp[i] = _flat_ptr(S[i], n, dtype, f"S[{i}]", False)
            yp[i] = _flat_ptr(Y[i], n, dtype, f"Y[{i}]", False)
            if sp[i] == dp or yp[i] == dp:
                raise ValueError("d must not alias a history vector")
            rov[i] = ro[i]
        if gp == dp:
            raise ValueError("d must not alias g")
        s.q = dp
        s.n = n
        s.dtype = dtype
        s.h = h_diag
        with nogil:
            nt = _policy_hint_threads(n)
            if m == 0:
                s.neg = gp
                s.axv = NULL
                s.scale = 1
                s.dv = NULL
                _tl_pass(&s, nt)
            else:
                # q = -g; al_{m-1} = ro * (s_{m-1} . q)
                s.neg = gp
                s.axv = NULL
                s.scale = 0
                s.dv = sp[m - 1]
                al[m - 1] = _tl_pass(&s, nt) * rov[m - 1]
                s.neg = NULL
                i = m - 1
                while i >= 1:
                    # q += -al_i y_i; al_{i-1} = ro * (s_{i-1} . q)
                    s.axv = yp[i]
                    s.c = -al[i]
                    s.dv = sp[i - 1]
                    al[i - 1] = _tl_pass(&s, nt) * rov[i - 1]
                    i -= 1
                # q += -al_0 y_0; d = q*h; be_0 = ro_0 * (y_0 . d)
                s.axv = yp[0]
                s.c = -al[0]
                s.scale = 1
                s.dv = yp[0]
                be = _tl_pass(&s, nt) * rov[0]
                s.scale = 0
                for i in range(m):
                    # d += (al_i - be_i) s_i; be_{i+1} = ro * (y_{i+1} . d)
                    s.axv = sp[i]
                    s.c = al[i] - be
                    s.dv = yp[i + 1] if i + 1 < m else NULL
                    dot = _tl_pass(&s, nt)
                    if i + 1 < m:
                        be = dot * rov[i + 1]
        return [al[i] for i in range(m)]
    finally:
        free(sp)
        free(yp)
        free(rov)
        free(al)
        free(s.part)
