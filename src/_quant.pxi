# 8-bit blockwise dynamic quantization (bitsandbytes' format), for optimizer state.
#
# One block is up to 256 elements with one float32 absmax and one uint8 code per
# element, the index into a 256-value map (signed map for first moments, unsigned
# for second moments). The rule, its special blocks and the plain-numpy twin are
# in lrfast/_quant.py; these functions equal the twin bit for bit.
#
# Why the loops look as they do
# -----------------------------
# a) absmax is an integer max over the bits of |x| (sign bit cleared): for
#    non-negative floats the bit order is the value order, and NaN's bits are
#    above inf's, so one integer max reduction gives absmax and the non-finite
#    test together. It vectorizes (no float max, whose NaN rules stop gcc).
# b) No per-element search. The key of y = x / absmax is its sign, exponent and
#    top 7 mantissa bits (clamped to [2**-24, 1]); ONE table entry (a gather
#    from 24 KiB per map) gives the code of the key's most negative value and
#    where the key's one midpoint, if any, falls in the low 16 bits, so one
#    integer comparison finishes exactly (lrfast._quant.encoder_table). On the
#    unsigned map a positive y never takes code 0 (lrfast/_quant.py: the
#    floor), one more integer test. The
#    loop has no branch. Gathers are the cost on AMD cores: a two-lookup
#    version (code, then a float threshold) ran 1.4x slower. An arithmetic
#    encoder (decade by comparisons, then a linear code) was not faster.
# c) The tables are filled once at import from lrfast._quant (numpy), which
#    also builds them and checks them against the exact midpoint search.
# d) Callers pass a block of n <= 256 elements; the loops are fixed-form so gcc
#    vectorizes them (x86-64-v3: vpmaxud; baseline: SSE2 parts), except the
#    encode loop, which gcc left scalar inside this module: the x86-64-v3
#    build runs it as AVX2 intrinsics (the same integer steps, the same codes).

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    #if defined(_MSC_VER)
    #define LRFAST_RESTRICT __restrict
    #define LRFAST_NOINLINE __declspec(noinline)
    #else
    #define LRFAST_RESTRICT __restrict__
    #define LRFAST_NOINLINE __attribute__((noinline))
    #endif
    #define LRFAST_Q8_BLOCK 256
    #define LRFAST_Q8_KEY_SHIFT 16
    #define LRFAST_Q8_KEY_MIN ((127 - 24) << 7)
    #define LRFAST_Q8_NKEYS (((127 << 7) - LRFAST_Q8_KEY_MIN) + 1)
    /* [0]: unsigned map, [1]: signed map */
    static float lrfast_q8_map[2][256];
    static uint32_t lrfast_q8_table[2][2 * LRFAST_Q8_NKEYS];
    static unsigned char lrfast_q8_zero[2];

    /* a union, not memcpy: gcc vectorizes the encode loop only through a union */
    typedef union { float f; uint32_t u; } lrfast_q8_fu;
    static inline uint32_t lrfast_q8_bits(float f) { lrfast_q8_fu v; v.f = f; return v.u; }
    static inline float lrfast_q8_float(uint32_t b) { lrfast_q8_fu v; v.u = b; return v.f; }

    /* the code of y = x / absmax: one table entry and one integer comparison */
    /* floor: 1 for the unsigned map, where a positive y never takes code 0 */
    static inline unsigned char lrfast_q8_code(float y, const uint32_t* LRFAST_RESTRICT table,
                                               uint32_t floor) {
        const uint32_t b = lrfast_q8_bits(y);
        const uint32_t s = b >> 31;
        int32_t k = (int32_t)((b & 0x7fffffffu) >> LRFAST_Q8_KEY_SHIFT) - LRFAST_Q8_KEY_MIN;
        k = k < 0 ? 0 : k;
        k = k > LRFAST_Q8_NKEYS - 1 ? LRFAST_Q8_NKEYS - 1 : k;
        const uint32_t e = table[k + (int32_t)s * LRFAST_Q8_NKEYS];
        const uint32_t low = (b ^ (0u - s)) & 0xffffu;     /* y < 0: 0xFFFF - l */
        const uint32_t c = (e >> 16) + (low > (e & 0xffffu));
        return (unsigned char)(c + (floor & (c == 0) & ((int32_t)b > 0)));
    }

    #if defined(__AVX2__)
    #include <immintrin.h>
    /* lrfast_q8_code on 32 elements at a time, in the same integer steps (so the
       same codes); returns how many it did. gcc would not vectorize the plain
       loop inside this module (it does in a small file), so it is written out. */
    static Py_ssize_t lrfast_q8_codes_avx2(const float* LRFAST_RESTRICT x, Py_ssize_t n, float m,
                                           const uint32_t* LRFAST_RESTRICT table, uint32_t floor,
                                           unsigned char* LRFAST_RESTRICT codes) {
        const __m256 vm = _mm256_set1_ps(m);
        const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
        const __m256i kmin = _mm256_set1_epi32(LRFAST_Q8_KEY_MIN);
        const __m256i kmax = _mm256_set1_epi32(LRFAST_Q8_NKEYS - 1);
        const __m256i nk = _mm256_set1_epi32(LRFAST_Q8_NKEYS);
        const __m256i zero = _mm256_setzero_si256();
        const __m256i lowm = _mm256_set1_epi32(0xffff);
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        const __m256i fl = _mm256_set1_epi32(floor ? -1 : 0);
        Py_ssize_t i;
        int r;
        for (i = 0; i + 32 <= n; i += 32) {
            __m256i c[4];
            for (r = 0; r < 4; r++) {
                const __m256i b = _mm256_castps_si256(_mm256_div_ps(_mm256_loadu_ps(x + i + 8 * r), vm));
                const __m256i s = _mm256_srai_epi32(b, 31);                 /* y < 0: -1 */
                __m256i k = _mm256_sub_epi32(
                    _mm256_srli_epi32(_mm256_and_si256(b, absmask), LRFAST_Q8_KEY_SHIFT), kmin);
                k = _mm256_min_epi32(_mm256_max_epi32(k, zero), kmax);
                k = _mm256_add_epi32(k, _mm256_and_si256(s, nk));
                const __m256i e = _mm256_i32gather_epi32((const int*)table, k, 4);
                const __m256i low = _mm256_and_si256(_mm256_xor_si256(b, s), lowm);
                const __m256i up = _mm256_cmpgt_epi32(low, _mm256_and_si256(e, lowm));
                const __m256i cr = _mm256_sub_epi32(_mm256_srli_epi32(e, 16), up);
                const __m256i up1 = _mm256_and_si256(
                    _mm256_and_si256(_mm256_cmpeq_epi32(cr, zero), _mm256_cmpgt_epi32(b, zero)), fl);
                c[r] = _mm256_sub_epi32(cr, up1);                         /* the floor: + 1 */
            }
            __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(c[0], c[1]),
                                            _mm256_packus_epi32(c[2], c[3]));
            _mm256_storeu_si256((__m256i*)(codes + i), _mm256_permutevar8x32_epi32(p, order));
        }
        return i;
    }
    #endif

    static LRFAST_NOINLINE float lrfast_q8_encode(const float* LRFAST_RESTRICT x, Py_ssize_t n,
                                         int is_signed, unsigned char* LRFAST_RESTRICT codes) {
        const int t = is_signed ? 1 : 0;
        const uint32_t* LRFAST_RESTRICT table = lrfast_q8_table[t];
        uint32_t mb = 0;
        Py_ssize_t i;
        if (n <= 0)
            return 0.0f;
        for (i = 0; i < n; i++) {
            uint32_t b = lrfast_q8_bits(x[i]) & 0x7fffffffu;
            mb = b > mb ? b : mb;
        }
        if (mb == 0 || mb >= 0x7f800000u) {          /* all zeros; a NaN or an inf */
            memset(codes, lrfast_q8_zero[t], (size_t)n);
            return mb == 0 ? 0.0f : lrfast_q8_float(0x7fc00000u);
        }
        const float m = lrfast_q8_float(mb);
        i = 0;
    #if defined(__AVX2__)
        i = lrfast_q8_codes_avx2(x, n, m, table, (uint32_t)(1 - t), codes);
    #endif
        for (; i < n; i++)
            codes[i] = lrfast_q8_code(x[i] / m, table, (uint32_t)(1 - t));
        return m;
    }

    static LRFAST_NOINLINE void lrfast_q8_decode(const unsigned char* LRFAST_RESTRICT codes, float absmax,
                                        Py_ssize_t n, int is_signed, float* LRFAST_RESTRICT out) {
        const float* LRFAST_RESTRICT map = lrfast_q8_map[is_signed ? 1 : 0];
        Py_ssize_t i;
        for (i = 0; i < n; i++)
            out[i] = map[codes[i]] * absmax;
    }
    """
    enum: LRFAST_Q8_BLOCK
    enum: LRFAST_Q8_NKEYS
    float lrfast_q8_map[2][256]
    unsigned int lrfast_q8_table[2][2 * LRFAST_Q8_NKEYS]
    unsigned char lrfast_q8_zero[2]
    float lrfast_q8_encode(const float* x, Py_ssize_t n, int is_signed,
                           unsigned char* codes) noexcept nogil
    void lrfast_q8_decode(const unsigned char* codes, float absmax, Py_ssize_t n,
                          int is_signed, float* out) noexcept nogil


cdef inline float _q8_encode(const float* x, Py_ssize_t n, int signed_,
                             unsigned char* codes) noexcept nogil:
    """Encode one block: x[0:n] (IN, n <= 256) -> codes[0:n] (OUT); returns absmax."""
    return lrfast_q8_encode(x, n, signed_, codes)


cdef inline void _q8_decode(const unsigned char* codes, float absmax, Py_ssize_t n,
                            int signed_, float* out) noexcept nogil:
    """Decode one block: codes[0:n] (IN) -> out[0:n] (OUT) = map[code] * absmax."""
    lrfast_q8_decode(codes, absmax, n, signed_, out)


def _q8_fill_tables():
    """Copy the maps and the encoder tables of lrfast._quant into the C tables."""
    from lrfast import _quant
    cdef int t, i
    if _quant.N_KEYS != LRFAST_Q8_NKEYS or _quant.BLOCK != LRFAST_Q8_BLOCK:
        raise ImportError("lrfast: the 8-bit quantization tables do not match the kernels")
    for t in range(2):
        m = np.ascontiguousarray(_quant.dynamic_map(bool(t)), np.float32)
        table = _quant.encoder_table(bool(t))
        for i in range(256):
            lrfast_q8_map[t][i] = m[i]
        for i in range(2 * LRFAST_Q8_NKEYS):
            lrfast_q8_table[t][i] = table[i]
        lrfast_q8_zero[t] = _quant.zero_code(bool(t))


_q8_fill_tables()


def _q8_signed(is_signed, str where):
    if not isinstance(is_signed, (bool, np.bool_)):
        raise TypeError(f"{where}: signed must be a bool, got {type(is_signed).__name__}")
    return 1 if is_signed else 0


def quantize_blockwise(x, is_signed):
    """8-bit blockwise quantization of a float32 array (blocks of 256 over the
    flattened C-order array, the last one may be shorter).

    Returns ``(codes, absmax)``: uint8 codes with ``x``'s shape and float32
    absmax of shape ``(ceil(x.size / 256),)``. Each code is the nearest value
    of ``lrfast._quant.dynamic_map(is_signed)`` to ``x / absmax`` (ties go to
    the larger value), except that on the unsigned map a positive value never
    takes the code of 0.0; see lrfast/_quant.py for the rule and special blocks.
    """
    cdef int s = _q8_signed(is_signed, "quantize_blockwise")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"quantize_blockwise: expected a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"quantize_blockwise: expected a float32 array, got {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError("quantize_blockwise: the array must be C-contiguous")
    cdef Py_ssize_t n = x.size
    cdef Py_ssize_t nb = (n + LRFAST_Q8_BLOCK - 1) // LRFAST_Q8_BLOCK
    codes = np.empty(x.shape, np.uint8)
    absmax = np.empty(nb, np.float32)
    if n == 0:
        return codes, absmax
    cdef const float[::1] xv = x.reshape(-1)
    cdef unsigned char[::1] cv = codes.reshape(-1)
    cdef float[::1] av = absmax
    cdef Py_ssize_t b, lo
    with nogil:
        for b in range(nb):
            lo = b * LRFAST_Q8_BLOCK
            av[b] = _q8_encode(&xv[lo], min(n - lo, <Py_ssize_t>LRFAST_Q8_BLOCK), s, &cv[lo])
    return codes, absmax


def dequantize_blockwise(codes, absmax, is_signed):
    """Inverse of :func:`quantize_blockwise`: ``map[code] * absmax`` in float32,
    with ``codes``' shape. ``codes``: uint8, C-contiguous; ``absmax``: float32
    of shape ``(ceil(codes.size / 256),)``."""
    cdef int s = _q8_signed(is_signed, "dequantize_blockwise")
    if not isinstance(codes, np.ndarray) or not isinstance(absmax, np.ndarray):
        raise TypeError("dequantize_blockwise: codes and absmax must be numpy arrays")
    if codes.dtype != np.uint8:
        raise TypeError(f"dequantize_blockwise: codes must be uint8, got {codes.dtype}")
    if absmax.dtype != np.float32:
        raise TypeError(f"dequantize_blockwise: absmax must be float32, got {absmax.dtype}")
    if not codes.flags.c_contiguous or not absmax.flags.c_contiguous:
        raise ValueError("dequantize_blockwise: codes and absmax must be C-contiguous")
    cdef Py_ssize_t n = codes.size
    cdef Py_ssize_t nb = (n + LRFAST_Q8_BLOCK - 1) // LRFAST_Q8_BLOCK
    if absmax.shape != (nb,):
        raise ValueError(f"dequantize_blockwise: absmax must have shape ({nb},) for "
                         f"{n} codes (one per block of 256), got {absmax.shape}")
    out = np.empty(codes.shape, np.float32)
    if n == 0:
        return out
    cdef const unsigned char[::1] cv = codes.reshape(-1)
    cdef const float[::1] av = absmax
    cdef float[::1] ov = out.reshape(-1)
    cdef Py_ssize_t b, lo
    with nogil:
        for b in range(nb):
            lo = b * LRFAST_Q8_BLOCK
            _q8_decode(&cv[lo], av[b], min(n - lo, <Py_ssize_t>LRFAST_Q8_BLOCK), s, &ov[lo])
    return out


def _q8_bench(x, int signed_, int reps):
    """(encode, decode) seconds for ``reps`` passes over ``x`` (float32, 1-D)
    block by block, for bench/quant.py."""
    import time
    cdef const float[::1] xv = x
    cdef Py_ssize_t n = x.size, nb = (n + LRFAST_Q8_BLOCK - 1) // LRFAST_Q8_BLOCK
    codes = np.empty(n, np.uint8)
    absmax = np.empty(nb, np.float32)
    out = np.empty(n, np.float32)
    cdef unsigned char[::1] cv = codes
    cdef float[::1] av = absmax
    cdef float[::1] ov = out
    cdef Py_ssize_t b, lo, r
    t0 = time.perf_counter()
    with nogil:
        for r in range(reps):
            for b in range(nb):
                lo = b * LRFAST_Q8_BLOCK
                av[b] = _q8_encode(&xv[lo], min(n - lo, <Py_ssize_t>LRFAST_Q8_BLOCK),
                                   signed_, &cv[lo])
    t1 = time.perf_counter()
    with nogil:
        for r in range(reps):
            for b in range(nb):
                lo = b * LRFAST_Q8_BLOCK
                _q8_decode(&cv[lo], av[b], min(n - lo, <Py_ssize_t>LRFAST_Q8_BLOCK),
                           signed_, &ov[lo])
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1
