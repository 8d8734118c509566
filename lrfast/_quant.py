"""8-bit blockwise dynamic quantization (bitsandbytes' format): the maps, the
plain-numpy twin of the kernels' encoder and decoder, and the encoder's tables.

Format
------
An array is flattened and cut into blocks of ``BLOCK = 256`` elements (the
last block may be shorter). Each block stores one float32 ``absmax`` (the
largest ``|x|`` of the block) and one uint8 code per element: the index into a
256-entry map of values in ``[-1, 1]`` (:func:`dynamic_map`, signed for first
moments, unsigned for second moments). Decoding is ``map[code] * absmax`` in
float32.

Rounding rule (exact, the same in C and here)
---------------------------------------------
``y = x / absmax`` (float32 IEEE division) is encoded as the code of the
NEAREST map value. Nearest is decided against the midpoints between
consecutive map values, computed exactly in float64: the code is the number of
midpoints ``m`` with ``y >= m``. A ``y`` exactly on a midpoint goes UP, to the
larger map value.

One exception, on the unsigned map (second moments) only: a POSITIVE ``y``
below the first midpoint (``|y| < 1.625e-7``) takes the smallest positive code
(3.25e-7), not 0.0. A second moment that rounds to zero while its first moment
does not turns Adam's ``m / (sqrt(v) + eps)`` into ``m / eps``: on the demo's
MLP (digits, whose zero pixels give exactly-zero grads) that blew up 2 of 5
seeds. bitsandbytes' CPU search never hits it because it rounds such values far
up (to code 7, 1.6e-5); the floor keeps every other code nearest.

Special blocks
--------------
- ``absmax == 0`` (all zeros, including ``-0.0``): every code is the index of
  0.0 in the map; absmax is stored as 0 and the block decodes to zeros.
- A block holding a NaN or an infinity stores absmax NaN and every code is the
  index of 0.0; it decodes to NaN everywhere (``0 * NaN``). Optimizers skip
  non-finite steps before they write state; this only makes the result
  deterministic.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["BLOCK", "dynamic_map", "quantize_blockwise_ref", "dequantize_blockwise_ref",
           "zero_code", "n_blocks"]

BLOCK = 256
# encoder lookup: the key of a float32 |y| is its exponent and top KEY_BITS
# mantissa bits; keys below KEY_MIN (|y| < 2**-24) share the first bucket
KEY_BITS = 7
KEY_SHIFT = 23 - KEY_BITS
KEY_MIN = (127 - 24) << KEY_BITS
N_KEYS = ((127 << KEY_BITS) - KEY_MIN) + 1          # up to |y| == 1.0

_MAPS: dict = {}


def _linspace32(n: int, fma: bool) -> np.ndarray:
    """torch.linspace(0.1, 1, n, dtype=float32), element by element as torch's CPU
    kernel computes it: ``start + step*i`` for the first half and
    ``end - step*(n-1-i)`` for the rest, in float32. torch's AVX2/AVX-512 builds
    contract each into one fused multiply-add (one rounding); its generic build
    rounds the product first (``fma=False``)."""
    start, end = np.float32(0.1), np.float32(1.0)
    step = np.float32((end - start) / np.float32(n - 1))
    i = np.arange(n)
    k = np.where(i < n // 2, i, n - 1 - i).astype(np.float64)
    base = np.where(i < n // 2, np.float64(start), np.float64(end))
    sign = np.where(i < n // 2, 1.0, -1.0)
    if fma:
        # step (24 bits) times k (<= 8 bits) and the sum with 0.1f or 1.0f are exact
        # in float64, so one rounding to float32 is the fused multiply-add
        return (base + sign * (np.float64(step) * k)).astype(np.float32)
    prod = (np.float32(step) * k.astype(np.float32)).astype(np.float32)
    return (base.astype(np.float32) + (sign.astype(np.float32) * prod)).astype(np.float32)


def _build_map(signed: bool, fma: bool = True) -> np.ndarray:
    # bitsandbytes.functional.create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)
    data = []
    for i in range(7):
        k = 2 ** i + 1 if signed else 2 ** (i + 1) + 1
        b = _linspace32(k, fma)
        means = (b[:-1] + b[1:]) / np.float32(2.0)
        # torch multiplies a float32 tensor by a Python scalar in float32
        vals = (np.float32(10.0 ** (-6 + i)) * means).astype(np.float32)
        data.append(vals)
        if signed:
            data.append(-vals)
    data.append(np.array([0.0, 1.0], np.float32))
    out = np.sort(np.concatenate(data)).astype(np.float32)
    assert out.shape == (256,)
    return out


def dynamic_map(signed: bool) -> np.ndarray:
    """The 256-value dynamic quantization map, float32, sorted ascending.

    Equal value for value to ``bitsandbytes.functional.create_dynamic_map(signed)``
    (``max_exponent_bits=7, total_bits=8``) as torch computes it on x86-64 with
    AVX2 or newer and on other CPUs whose torch build contracts ``torch.linspace``
    into fused multiply-adds. torch's generic x86-64 kernels
    (``ATEN_CPU_CAPABILITY=default``) give a map with some values one float32
    ulp away. The signed map runs from about -0.993 to 1.0 with one 0.0 (index
    127); the unsigned one from 0.0 (index 0) to 1.0.
    """
    signed = bool(signed)
    if signed not in _MAPS:
        m = _build_map(signed)
        m.setflags(write=False)
        _MAPS[signed] = m
    return _MAPS[signed].copy()


def zero_code(signed: bool) -> int:
    """The index of 0.0 in the map (127 signed, 0 unsigned)."""
    return int(np.flatnonzero(dynamic_map(signed) == 0.0)[0])


def n_blocks(size: int) -> int:
    """Blocks (one absmax each) for an array of ``size`` elements."""
    return -(-int(size) // BLOCK)


def _midpoints(signed: bool) -> np.ndarray:
    m = dynamic_map(signed).astype(np.float64)
    return (m[:-1] + m[1:]) / 2.0          # exact: the mean of two float32 in float64


def _as_f32(x, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{what}: expected float32, got {x.dtype}")
    return x


def quantize_blockwise_ref(x: np.ndarray, signed: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Plain-numpy 8-bit blockwise quantization of a float32 array.

    Returns ``(codes, absmax)``: uint8 codes of ``x``'s shape and float32 absmax of
    shape ``(ceil(x.size / 256),)``. See the module docstring for the rule.
    """
    x = _as_f32(x, "quantize_blockwise_ref")
    flat = x.reshape(-1)
    n = flat.size
    nb = n_blocks(n)
    codes = np.empty(n, np.uint8)
    absmax = np.zeros(nb, np.float32)
    mids = _midpoints(signed)
    z = zero_code(signed)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for b in range(nb):
            blk = flat[b * BLOCK:(b + 1) * BLOCK]
            a = np.float32(np.max(np.abs(blk)))
            if not np.isfinite(a):
                absmax[b] = np.float32(np.nan)
                codes[b * BLOCK:b * BLOCK + blk.size] = z
                continue
            absmax[b] = a
            if a == 0:
                codes[b * BLOCK:b * BLOCK + blk.size] = z
                continue
            y = (blk / a).astype(np.float32)
            c = np.searchsorted(mids, y.astype(np.float64), side="right")
            if not signed:
                c[(c == 0) & (y > 0)] = 1          # the floor (module docstring)
            codes[b * BLOCK:b * BLOCK + blk.size] = c
    return codes.reshape(x.shape), absmax


def dequantize_blockwise_ref(codes: np.ndarray, absmax: np.ndarray, signed: bool) -> np.ndarray:
    """Plain-numpy inverse: ``map[code] * absmax`` in float32, ``codes``' shape."""
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
        raise TypeError("dequantize_blockwise_ref: codes must be a uint8 numpy array")
    absmax = _as_f32(absmax, "dequantize_blockwise_ref")
    if absmax.shape != (n_blocks(codes.size),):
        raise ValueError(f"dequantize_blockwise_ref: absmax must have shape "
                         f"({n_blocks(codes.size)},), got {absmax.shape}")
    m = dynamic_map(signed)
    flat = codes.reshape(-1)
    scale = np.repeat(absmax, BLOCK)[:flat.size]
    with np.errstate(invalid="ignore", over="ignore"):
        return (m[flat] * scale).astype(np.float32).reshape(codes.shape)


def encoder_table(signed: bool) -> np.ndarray:
    """The kernels' encoder table for one map: uint32, ``2 * N_KEYS`` entries.

    The key of a float32 ``y`` in ``[-1, 1]`` is its sign (``N_KEYS`` entries
    each) then the exponent and top ``KEY_BITS`` mantissa bits of ``|y|``,
    clamped to ``[KEY_MIN, KEY_MIN + N_KEYS - 1]`` (everything below ``2**-24``
    shares the first key). The entry is ``code << 16 | t``: ``code`` is the code
    of the key's most negative ``y``; the y of the key share all but their low
    16 bits ``l`` (of ``|y|``), and the code is ``code + (l' > t)`` with
    ``l' = l`` for ``y >= 0`` and ``0xFFFF - l`` for ``y < 0``. A key holds at most
    one midpoint (checked here), so one comparison decides the rule of the module
    docstring exactly; ``t = 0xFFFF`` when the key holds none.
    """
    mids = _midpoints(signed)
    keys = np.arange(N_KEYS, dtype=np.int64) + KEY_MIN
    lo = (keys << KEY_SHIFT).astype(np.uint32).view(np.float32).copy()   # smallest |y| of a key
    hi = (((keys + 1) << KEY_SHIFT) - 1).astype(np.uint32).view(np.float32)  # largest
    lo[0] = 0.0                                          # the first key takes everything below
    hi = np.minimum(hi, np.float32(1.0))                 # |y| <= 1
    table = np.empty(2 * N_KEYS, np.uint32)
    for half, (first, last) in enumerate(((lo, hi), (-hi, -lo))):
        c0 = np.searchsorted(mids, first.astype(np.float64), side="right")
        c1 = np.searchsorted(mids, last.astype(np.float64), side="right")
        if np.any(c1 - c0 > 1) or c1[0] != c0[0]:
            raise AssertionError("encoder table: a key holds two midpoints")
        t = np.full(N_KEYS, 0xFFFF, np.int64)
        j = np.flatnonzero(c1 > c0)
        m = mids[c0[j]]
        thr = m.astype(np.float32)                       # smallest float32 >= the midpoint
        below = thr.astype(np.float64) < m
        thr[below] = np.nextafter(thr[below], np.float32(np.inf))
        low16 = (np.abs(thr).view(np.uint32) & 0xFFFF).astype(np.int64)
        # y >= 0: bump when l >= low16, i.e. l > low16 - 1; y < 0: bump when
        # |y| <= |thr|, i.e. 0xFFFF - l > 0xFFFE - low16
        t[j] = low16 - 1 if half == 0 else 0xFFFE - low16
        assert np.all((t[j] >= 0) & (t[j] < 0xFFFF))
        table[half * N_KEYS:(half + 1) * N_KEYS] = (c0.astype(np.int64) << 16) | t
    return table
