"""Numerics shared by the schedules: cancellation-free cosine halves and the
Stirling / atanh series behind :class:`~lrfast.schedules.TimeBasedDecay`."""
from __future__ import annotations

import math

import numpy as np

_HALF_PI = 0.5 * math.pi


def _clip(v, lo, hi):
    """``v`` clamped to ``[lo, hi]``: where a formula's rounding can step over the bound
    that its exact value respects (``a + (b - a) * 1`` can exceed ``b`` by an ulp)."""
    return lo if v < lo else hi if v > hi else v


def _half_cos(k, T):
    """0.5 * (1 + cos(pi * k / T)) for 0 <= k <= T, without cancellation near k = T."""
    if 2.0 * k <= T:
        c = math.cos(_HALF_PI * k / T)
        return c * c
    s = math.sin(_HALF_PI * (T - k) / T)
    return s * s


def _half_cos_np(k, T):
    c = np.cos(0.5 * np.pi * k / T)
    s = np.sin(0.5 * np.pi * (T - k) / T)
    return np.where(2.0 * k <= T, c * c, s * s)


# Stirling series of log Gamma: lgamma(x) = (x - 1/2) log x - x + log(2 pi)/2 + S(x),
# S(x) = sum_k B_2k / (2k (2k - 1) x^(2k - 1)); eight terms are exact to < 1e-16 for x >= 10.
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156,
             -3617 / 122400)
# 1/3, 1/5, 1/7, ...: atanh series, used for log1p(u) - u below.
_ATANH = tuple(1.0 / (2 * j + 3) for j in range(18))


def _horner(coefs, z):
    acc = coefs[-1]
    for c in coefs[-2::-1]:
        acc = acc * z + c
    return acc


def _stirling_tail(x):
    """S(x), the remainder of the Stirling series (x >= 10, or inf)."""
    return _horner(_STIRLING, 1.0 / (x * x)) / x


def _log1pmx_over_u(u):
    """(log1p(u) - u) / u for u >= 0, with full relative accuracy for small u.

    With s = u / (2 + u): log1p(u) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) and
    u - 2 s = u s, so (log1p(u) - u) / u = -s + 2 s^2 / (2 + u) * (1/3 + s^2/5 + ...).
    For u <= 1, s^2 <= 1/9 and 18 terms of the series are exact to double precision.
    """
    if u <= 1.0:
        s = u / (2.0 + u)
        s2 = s * s
        return -s + 2.0 * s2 / (2.0 + u) * _horner(_ATANH, s2)
    return (math.log1p(u) - u) / u


def _log1pmx_over_u_np(u):
    s = u / (2.0 + u)
    s2 = s * s
    series = -s + 2.0 * s2 / (2.0 + u) * _horner(_ATANH, s2)
    direct = (np.log1p(u) - u) / np.where(u > 0, u, 1.0)
    return np.where(u <= 1.0, series, direct)


def _one_plus_cos_pi(pct):
    """1 + cos(pi * pct) for pct in [0, 1], without cancellation near pct = 1."""
    return 2.0 * _half_cos(pct, 1.0)
