# Low precision: 16-bit params and grads (bfloat16, float16) and 16-bit or
# 8-bit optimizer state, staged through float32 stack buffers inside the fused
# pass (included by _kernels.pxi before the task runner).
#
# A staged task runs in chunks of SUMCH (256) elements, aligned to the tensor's
# start (an 8-bit block is one chunk). Per chunk: the param (or its float32
# master copy), the grad and every state are widened into float32 buffers that
# stay in L1, the float32 kernel of the optimizer runs on them (its per-step
# scalars rounded once to float32), and the results are narrowed back: the
# param rounded once (to nearest even, or stochastically), 16-bit states
# rounded the same way, 8-bit states re-quantized with the block's new absmax.
# Every array is read once and written once: no second pass over memory.
#
# Stochastic rounding draws from a counter-based hash keyed by (seed, step,
# tensor, array, element index): the same bits for any thread count, task
# split, ISA build and resume. Conversions are integer code (and float adds in
# round-to-nearest), so both ISA builds give the same bits.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #include <string.h>
    #include <math.h>
    #include <stdint.h>
    static inline uint32_t lrfast_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
    static inline float lrfast_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
    static inline float lrfast_bf16_u2f(uint16_t h) { return lrfast_u2f((uint32_t)h << 16); }

    /* a 32-bit integer hash (lowbias32, C. Wellons): vectorizes */
    static inline uint32_t lrfast_h32(uint32_t x) {
        x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
        return x;
    }
    static inline uint64_t lrfast_mix64(uint64_t z) {      /* splitmix64's finalizer */
        z += 0x9e3779b97f4a7c15ULL;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    /* the key of one array's stream at one step; the element index's high
       half joins it (tensors over 2**32 elements) */
    static inline uint64_t lrfast_sr_key(uint64_t seed, uint64_t step, uint64_t tensor,
                                         uint64_t slot, uint64_t hi) {
        return lrfast_mix64(seed ^ lrfast_mix64(step ^ lrfast_mix64(
            (tensor << 3 | slot) ^ lrfast_mix64(hi))));
    }
    /* 32 random bits for element (low 32 bits of its index) i */
    static inline uint32_t lrfast_rand(uint32_t i, uint32_t k0, uint32_t k1) {
        return lrfast_h32(lrfast_h32(i ^ k0) + k1);
    }

    /* ---- bfloat16 ---- */
    static void lrfast_bf16_load(const uint16_t* h, float* out, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) out[i] = lrfast_bf16_u2f(h[i]);
    }
    /* the select happens on 32-bit lanes and the high half is taken once: gcc
       then narrows with one pack (2x fewer instructions than selecting 16-bit
       halves; the same bits for all 2**32 inputs) */
    static inline uint16_t lrfast_bf16_rne(uint32_t u) {
        uint32_t r = u + 0x7fffU + ((u >> 16) & 1U);
        uint32_t q = u | 0x400000U;                          /* a NaN stays a (quiet) NaN */
        int32_t ax = (int32_t)(u & 0x7fffffffU);
        return (uint16_t)((ax > (int32_t)0x7f800000 ? q : r) >> 16);
    }
    static void lrfast_bf16_store(const float* x, uint16_t* h, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) h[i] = lrfast_bf16_rne(lrfast_f2u(x[i]));
    }
    static void lrfast_bf16_store_sr(const float* x, uint16_t* h, Py_ssize_t n,
                                     uint32_t base, uint32_t k0, uint32_t k1) {
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t u = lrfast_f2u(x[i]);
            uint32_t r = u + (lrfast_rand(base + (uint32_t)i, k0, k1) & 0xffffU);
            int32_t ax = (int32_t)(u & 0x7fffffffU);
            r = ax == (int32_t)0x7f800000 ? u : r;           /* +-inf: exact */
            r = ax > (int32_t)0x7f800000 ? (u | 0x400000U) : r;   /* NaN: quiet */
            h[i] = (uint16_t)(r >> 16);
        }
    }

    /* ---- Adam in one pass over 16-bit arrays (no staging) ----
       The staged path's operations, in its order, 8 lanes at a time: widen the
       grad (bf16 or float32), the param (its float32 master, the float32 param,
       or the widened bf16 param) and m and v (bf16 or float32); the float32 Adam
       update; then the param and the 16-bit states rounded to nearest even
       (lrfast_bf16_rne on 8 lanes), the master or float32 arrays stored as they
       are. The same bits as the staged path. Of each pair (x32, x16) exactly one
       pointer is set. Only the AVX2 build has it (elsewhere the staged path runs). */
    typedef struct {
        float* p32; uint16_t* p16;          /* param: float32 (or its master) / bf16 */
        uint16_t* out16;                     /* the bf16 param rounded from the master, or NULL */
        const float* g32; const uint16_t* g16;
        float* m32; uint16_t* m16; float* v32; uint16_t* v16;
    } lrfast_adam1p_t;
    #if defined(__AVX2__)
    #include <immintrin.h>
    #define LRFAST_ADAM_1P 1
    static inline __m256 lrfast_bf16x8_load(const uint16_t* h) {
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)h)), 16));
    }
    static inline __m256i lrfast_bf16x8_rne(__m256 x) {   /* 8 lanes of lrfast_bf16_rne */
        __m256i u = _mm256_castps_si256(x);
        __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff),
                        _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))));
        __m256i q = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
        __m256i ax = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
        __m256i nan = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x7f800000));
        return _mm256_srli_epi32(_mm256_blendv_epi8(r, q, nan), 16);
    }
    static inline void lrfast_bf16x16_store(uint16_t* h, __m256i a, __m256i b) {
        __m256i pk = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
        _mm256_storeu_si256((__m256i*)h, pk);
    }
    static inline __m256 lrfast_ld8(const float* x32, const uint16_t* x16, Py_ssize_t j) {
        return x32 ? _mm256_loadu_ps(x32 + j) : lrfast_bf16x8_load(x16 + j);
    }
    static void lrfast_adam_1p(const lrfast_adam1p_t* a, Py_ssize_t n, float gs, float wd,
                               float c1, float b2, float c2, float ss, float bc2s, float eps,
                               float dm, int l2, int decoupled) {
        const __m256 vgs = _mm256_set1_ps(gs), vwd = _mm256_set1_ps(wd);
        const __m256 vc1 = _mm256_set1_ps(c1), vb2 = _mm256_set1_ps(b2);
        const __m256 vc2 = _mm256_set1_ps(c2), vss = _mm256_set1_ps(ss);
        const __m256 vbc = _mm256_set1_ps(bc2s), veps = _mm256_set1_ps(eps);
        const __m256 vdm = _mm256_set1_ps(dm);
        uint16_t* pout = a->p16 ? a->p16 : a->out16;
        Py_ssize_t i = 0;
        for (; i + 16 <= n; i += 16) {
            const __m256i z = _mm256_setzero_si256();
            __m256i mo[2] = {z, z}, vo[2] = {z, z}, po[2] = {z, z};
            for (int h = 0; h < 2; h++) {
                Py_ssize_t j = i + 8 * h;
                __m256 pj = lrfast_ld8(a->p32, a->p16, j);
                __m256 gi = _mm256_mul_ps(vgs, lrfast_ld8(a->g32, a->g16, j));
                if (l2) gi = _mm256_add_ps(gi, _mm256_mul_ps(vwd, pj));
                __m256 m0 = lrfast_ld8(a->m32, a->m16, j), v0 = lrfast_ld8(a->v32, a->v16, j);
                __m256 mi = _mm256_add_ps(m0, _mm256_mul_ps(vc1, _mm256_sub_ps(gi, m0)));
                __m256 vi = _mm256_add_ps(_mm256_mul_ps(v0, vb2),
                                          _mm256_mul_ps(_mm256_mul_ps(vc2, gi), gi));
                if (a->m16) mo[h] = lrfast_bf16x8_rne(mi); else _mm256_storeu_ps(a->m32 + j, mi);
                if (a->v16) vo[h] = lrfast_bf16x8_rne(vi); else _mm256_storeu_ps(a->v32 + j, vi);
                if (decoupled) pj = _mm256_mul_ps(pj, vdm);
                __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbc), veps);
                pj = _mm256_sub_ps(pj, _mm256_div_ps(_mm256_mul_ps(vss, mi), den));
                if (a->p32) _mm256_storeu_ps(a->p32 + j, pj);
                if (pout) po[h] = lrfast_bf16x8_rne(pj);
            }
            if (a->m16) lrfast_bf16x16_store(a->m16 + i, mo[0], mo[1]);
            if (a->v16) lrfast_bf16x16_store(a->v16 + i, vo[0], vo[1]);
            if (pout) lrfast_bf16x16_store(pout + i, po[0], po[1]);
        }
        for (; i < n; i++) {        /* the tail, in scalar code: the same operations */
            float pi = a->p32 ? a->p32[i] : lrfast_bf16_u2f(a->p16[i]);
            float gi = gs * (a->g32 ? a->g32[i] : lrfast_bf16_u2f(a->g16[i]));
            float m0 = a->m32 ? a->m32[i] : lrfast_bf16_u2f(a->m16[i]);
            float v0 = a->v32 ? a->v32[i] : lrfast_bf16_u2f(a->v16[i]);
            float mi, vi;
            if (l2) gi = gi + wd * pi;
            mi = m0 + c1 * (gi - m0);
            vi = v0 * b2 + c2 * gi * gi;
            if (a->m16) a->m16[i] = lrfast_bf16_rne(lrfast_f2u(mi)); else a->m32[i] = mi;
            if (a->v16) a->v16[i] = lrfast_bf16_rne(lrfast_f2u(vi)); else a->v32[i] = vi;
            if (decoupled) pi = pi * dm;
            pi = pi - ss * mi / (sqrtf(vi) / bc2s + eps);
            if (a->p32) a->p32[i] = pi;
            if (pout) pout[i] = lrfast_bf16_rne(lrfast_f2u(pi));
        }
    }
    #else
    #define LRFAST_ADAM_1P 0
    static void lrfast_adam_1p(const lrfast_adam1p_t* a, Py_ssize_t n, float gs, float wd,
                               float c1, float b2, float c2, float ss, float bc2s, float eps,
                               float dm, int l2, int decoupled) { }
    #endif

    /* ---- float16 (IEEE binary16), after F. Giesen's conversions ---- */
    static void lrfast_f16_load(const uint16_t* h, float* out, Py_ssize_t n) {
        const float magic = lrfast_u2f(113U << 23);
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t x = h[i];
            uint32_t o = (x & 0x7fffU) << 13;
            uint32_t e = o & (0x7c00U << 13);
            o += (127U - 15U) << 23;
            uint32_t big = o + ((128U - 16U) << 23);               /* inf, NaN */
            float sub = lrfast_u2f(o + (1U << 23)) - magic;        /* zero, subnormal */
            uint32_t r = e == (0x7c00U << 13) ? big : (e == 0 ? lrfast_f2u(sub) : o);
            out[i] = lrfast_u2f(r | ((x & 0x8000U) << 16));
        }
    }
    static inline uint16_t lrfast_f16_rne(float f) {
        const uint32_t denorm_magic = ((127U - 15U) + (23U - 10U) + 1U) << 23;
        uint32_t u = lrfast_f2u(f);
        uint32_t sign = (u >> 16) & 0x8000U;
        uint32_t a = u & 0x7fffffffU;
        uint32_t big = a > 0x7f800000U ? (0x7e00U | ((a >> 13) & 0x3ffU)) : 0x7c00U;
        uint32_t sub = lrfast_f2u(lrfast_u2f(a) + lrfast_u2f(denorm_magic)) - denorm_magic;
        uint32_t nrm = (a + 0xc8000fffU + ((a >> 13) & 1U)) >> 13;
        uint32_t o = a >= (143U << 23) ? big : (a < (113U << 23) ? sub : nrm);
        return (uint16_t)(o | sign);
    }
    static void lrfast_f16_store(const float* x, uint16_t* h, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) h[i] = lrfast_f16_rne(x[i]);
    }
    static void lrfast_f16_store_sr(const float* x, uint16_t* h, Py_ssize_t n,
                                    uint32_t base, uint32_t k0, uint32_t k1) {
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t rnd = lrfast_rand(base + (uint32_t)i, k0, k1);
            uint32_t u = lrfast_f2u(x[i]);
            uint32_t sign = (u >> 16) & 0x8000U;
            uint32_t a = u & 0x7fffffffU;
            uint32_t o;
            if (a >= (143U << 23)) {
                o = lrfast_f16_rne(x[i]);                 /* inf, NaN, beyond 65536 */
                h[i] = (uint16_t)o;
                continue;
            }
            if (a < (113U << 23)) {                       /* a subnormal half: unit 2**-24 */
                float s = lrfast_u2f(a) * 16777216.0f;     /* exact */
                float q = floorf(s);
                float frac = s - q;                        /* exact */
                uint32_t up = (float)(rnd >> 8) * 5.9604644775390625e-08f < frac;
                o = (uint32_t)q + up;                      /* 0x400: the smallest normal */
            } else {
                o = (a + 0xc8000000U + (rnd & 0x1fffU)) >> 13;   /* 13 dropped bits */
            }
            h[i] = (uint16_t)(o | sign);
        }
    }
    """
    uint32_t lrfast_f2u(float f) noexcept nogil
    uint64_t lrfast_sr_key(uint64_t seed, uint64_t step, uint64_t tensor, uint64_t slot,
                           uint64_t hi) noexcept nogil
    void lrfast_bf16_load(const uint16_t* h, float* out, Py_ssize_t n) noexcept nogil
    void lrfast_bf16_store(const float* x, uint16_t* h, Py_ssize_t n) noexcept nogil
    void lrfast_bf16_store_sr(const float* x, uint16_t* h, Py_ssize_t n, uint32_t base,
                              uint32_t k0, uint32_t k1) noexcept nogil
    int LRFAST_ADAM_1P
    ctypedef struct lrfast_adam1p_t:
        float* p32
        uint16_t* p16
        uint16_t* out16
        const float* g32
        const uint16_t* g16
        float* m32
        uint16_t* m16
        float* v32
        uint16_t* v16
    void lrfast_adam_1p(const lrfast_adam1p_t* a, Py_ssize_t n, float gs, float wd, float c1,
                        float b2, float c2, float ss, float bc2s, float eps, float dm, int l2,
                        int decoupled) noexcept nogil
    void lrfast_f16_load(const uint16_t* h, float* out, Py_ssize_t n) noexcept nogil
    void lrfast_f16_store(const float* x, uint16_t* h, Py_ssize_t n) noexcept nogil
    void lrfast_f16_store_sr(const float* x, uint16_t* h, Py_ssize_t n, uint32_t base,
                             uint32_t k0, uint32_t k1) noexcept nogil


cdef enum:
    F_NATIVE = 0     # float32 / float64 storage: the kernel reads it in place
    F_BF16 = 1
    F_F16 = 2
    F_Q8S = 3        # 8-bit blockwise, signed dynamic map (first moments)
    F_Q8U = 4        # 8-bit blockwise, unsigned dynamic map (second moments)


cdef inline void _load16(int fmt, const uint16_t* h, float* out, Py_ssize_t n) noexcept nogil:
    if fmt == F_BF16:
        lrfast_bf16_load(h, out, n)
    else:
        lrfast_f16_load(h, out, n)


cdef inline void _store16(Data* d, TensorRec* t, int slot, int fmt, const float* x, uint16_t* h,
                          Py_ssize_t e, Py_ssize_t n, bint sr) noexcept nogil:
    # elements [e, e+n) of the tensor: nearest even, or stochastic (the bits of
    # elements sr_off + e ... of tensor sr_id: a piece of a tensor, as the whole)
    cdef uint64_t key, ge
    cdef Py_ssize_t m
    if not sr:
        if fmt == F_BF16:
            lrfast_bf16_store(x, h, n)
        else:
            lrfast_f16_store(x, h, n)
        return
    while n > 0:
        ge = <uint64_t>(t.sr_off + e)
        m = n           # one key per 2**32 elements: split where the high half changes
        if (ge >> 32) != ((ge + <uint64_t>(n - 1)) >> 32):
            m = <Py_ssize_t>((((ge >> 32) + 1) << 32) - ge)
        key = lrfast_sr_key(d.sr_seed, d.sr_step, <uint64_t>t.sr_id, <uint64_t>slot, ge >> 32)
        if fmt == F_BF16:
            lrfast_bf16_store_sr(x, h, m, <uint32_t>ge, <uint32_t>key, <uint32_t>(key >> 32))
        else:
            lrfast_f16_store_sr(x, h, m, <uint32_t>ge, <uint32_t>key, <uint32_t>(key >> 32))
        x += m
        h += m
        e += m
        n -= m


cdef bint _adam_one_pass(Data* d, TensorRec* t, Py_ssize_t o, Py_ssize_t n,
                         const AdamRow* ar) noexcept nogil:
    # Adam (no amsgrad, no clip_value) over bf16 or float32 params, grads and m, v,
    # with or without a master copy, rounded to nearest even: one pass, the same
    # bits as the chunks of _run_staged. False: not this case (stochastic
    # rounding of what the pass would round, float16, 8-bit state).
    cdef lrfast_adam1p_t a
    cdef int j
    if ar.amsgrad != 0 or d.clip_value > 0.0 or t.pfmt == F_F16:
        return False
    if d.sr and (t.pfmt == F_BF16 and t.master == NULL or t.sfmt[0] != F_NATIVE
                 or t.sfmt[1] != F_NATIVE):
        return False
    for j in range(2):
        if t.sfmt[j] != F_NATIVE and t.sfmt[j] != F_BF16:
            return False
    memset(&a, 0, sizeof(a))
    if t.master != NULL:
        a.p32 = <float*>t.master + o
        a.out16 = <uint16_t*>t.p + o
    elif t.pfmt == F_BF16:
        a.p16 = <uint16_t*>t.p + o
    else:
        a.p32 = <float*>t.p + o
    if t.pfmt == F_BF16:
        a.g16 = <const uint16_t*>t.g + o
    else:
        a.g32 = <const float*>t.g + o
    if t.sfmt[0] == F_BF16:
        a.m16 = <uint16_t*>t.s[0] + o
    else:
        a.m32 = <float*>t.s[0] + o
    if t.sfmt[1] == F_BF16:
        a.v16 = <uint16_t*>t.s[1] + o
    else:
        a.v32 = <float*>t.s[1] + o
    lrfast_adam_1p(&a, n, <float>ar.gs, <float>ar.wd, <float>ar.c1, <float>ar.b2,
                   <float>ar.c2, <float>ar.step_size, <float>ar.bc2_sqrt, <float>ar.eps,
                   <float>ar.dm, ar.l2 != 0, ar.decoupled != 0)
    return True


cdef void _run_staged(Data* d, TensorRec* t, Py_ssize_t o, Py_ssize_t n,
                      const double* r) noexcept nogil:
    # A task of a low-precision tensor (see the top of this file). o is a
    # multiple of SUMCH (tasks of such tensors are cut on chunk boundaries).
    cdef float pb[SUMCH]
    cdef float gb[SUMCH]
    cdef float sb[MAX_STATES * SUMCH]
    cdef float* pp
    cdef const float* gp
    cdef float* sp[MAX_STATES]
    cdef Py_ssize_t e = o, c
    cdef int j, f
    if LRFAST_ADAM_1P and d.kind == K_ADAM and _adam_one_pass(d, t, o, n, <const AdamRow*>r):
        return
    while e < o + n:
        c = min(<Py_ssize_t>SUMCH, o + n - e)
        if t.master != NULL:
            pp = <float*>t.master + e
        elif t.pfmt == F_NATIVE:
            pp = <float*>t.p + e
        else:
            _load16(t.pfmt, <const uint16_t*>t.p + e, pb, c)
            pp = pb
        if t.pfmt == F_NATIVE:
            gp = <const float*>t.g + e
        else:
            _load16(t.pfmt, <const uint16_t*>t.g + e, gb, c)
            gp = gb
        if d.clip_value > 0.0:
            _clipped(gb, gp, c, <float>d.clip_value)
            gp = gb
        for j in range(MAX_STATES):
            f = t.sfmt[j]
            if t.s[j] == NULL:
                sp[j] = NULL
            elif f == F_NATIVE:
                sp[j] = <float*>t.s[j] + e
            else:
                sp[j] = sb + j * SUMCH
                if f == F_BF16 or f == F_F16:
                    _load16(f, <const uint16_t*>t.s[j] + e, sp[j], c)
                else:
                    _q8_decode(<const uint8_t*>t.s[j] + e, t.amax[j][e // SUMCH], c,
                               f == F_Q8S, sp[j])
        _apply(d.kind, pp, gp, <const float*>NULL, sp[0], sp[1], sp[2], sp[3], c, r)
        if t.pfmt != F_NATIVE:      # rounded once: from the master, to nearest even
            _store16(d, t, 0, t.pfmt, pp, <uint16_t*>t.p + e, e, c,
                     d.sr and t.master == NULL)
        for j in range(MAX_STATES):
            f = t.sfmt[j]
            if t.s[j] == NULL or f == F_NATIVE:
                continue
            if f == F_BF16 or f == F_F16:
                _store16(d, t, 1 + j, f, sp[j], <uint16_t*>t.s[j] + e, e, c, d.sr)
            else:
                t.amax[j][e // SUMCH] = _q8_encode(sp[j], c, f == F_Q8S,
                                                   <uint8_t*>t.s[j] + e)
        e += c


cdef void _sumsq16(int fmt, const uint16_t* x, Py_ssize_t n, double* out_sum,
                   double* out_probe) noexcept nogil:
    # _sumsq of the widened values, chunk by chunk (SUMCH is a multiple of 8:
    # element i stays in lane i % 8, so the result equals _sumsq of a float32 copy)
    cdef float buf[SUMCH]
    cdef double acc[8]
    cdef double probe[8]
    cdef double xi
    cdef Py_ssize_t e = 0, c, i
    cdef int j
    for j in range(8):
        acc[j] = 0.0
        probe[j] = 0.0
    while e < n:
        c = min(<Py_ssize_t>SUMCH, n - e)
        _load16(fmt, x + e, buf, c)
        for i in range(c):
            xi = buf[i]
            acc[i % 8] = acc[i % 8] + xi * xi
            probe[i % 8] = probe[i % 8] + xi * 0.0
        e += c
    out_sum[0] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    out_probe[0] = ((probe[0] + probe[1]) + (probe[2] + probe[3])) + (
        (probe[4] + probe[5]) + (probe[6] + probe[7]))


# ---- Python-level conversions (tests, state_dict loads), same code paths ----
def _round16(x, str fmt, bint stochastic=False, unsigned long long seed=0,
             unsigned long long step=0, int tensor=0, int slot=0):
    """float32 array -> uint16 bits of bfloat16 ('bf16') or float16 ('f16'),
    rounded as the kernels round (nearest even, or stochastic with the key
    (seed, step, tensor, slot, element index))."""
    cdef cnp.ndarray a = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    cdef cnp.ndarray out = np.empty(a.shape[0], dtype=np.uint16)
    cdef int f = F_BF16 if fmt == "bf16" else F_F16
    cdef Py_ssize_t n = a.shape[0], e = 0, c
    cdef uint64_t key
    cdef const float* src = <const float*>cnp.PyArray_DATA(a)
    cdef uint16_t* dst = <uint16_t*>cnp.PyArray_DATA(out)
    if fmt not in ("bf16", "f16"):
        raise ValueError(f"fmt must be 'bf16' or 'f16', got {fmt!r}")
    with nogil:
        while e < n:
            c = min(<Py_ssize_t>SUMCH, n - e)
            if not stochastic:
                if f == F_BF16:
                    lrfast_bf16_store(src + e, dst + e, c)
                else:
                    lrfast_f16_store(src + e, dst + e, c)
            else:
                key = lrfast_sr_key(seed, step, <uint64_t>tensor, <uint64_t>slot,
                                    <uint64_t>e >> 32)
                if f == F_BF16:
                    lrfast_bf16_store_sr(src + e, dst + e, c, <uint32_t>e, <uint32_t>key,
                                         <uint32_t>(key >> 32))
                else:
                    lrfast_f16_store_sr(src + e, dst + e, c, <uint32_t>e, <uint32_t>key,
                                        <uint32_t>(key >> 32))
            e += c
    return out.reshape(np.shape(x))


def _widen16(h, str fmt):
    """uint16 bits of bfloat16 ('bf16') or float16 ('f16') -> float32."""
    cdef cnp.ndarray a = np.ascontiguousarray(h, dtype=np.uint16).reshape(-1)
    cdef cnp.ndarray out = np.empty(a.shape[0], dtype=np.float32)
    if fmt not in ("bf16", "f16"):
        raise ValueError(f"fmt must be 'bf16' or 'f16', got {fmt!r}")
    _load16(F_BF16 if fmt == "bf16" else F_F16, <const uint16_t*>cnp.PyArray_DATA(a),
            <float*>cnp.PyArray_DATA(out), a.shape[0])
    return out.reshape(np.shape(h))
