"""Pick the kernel build at import: the best ISA the CPU supports.

``LRFAST_ISA=baseline`` forces the portable build; ``LRFAST_ISA=avx2`` asks for
the x86-64-v3 build and fails loudly if the CPU lacks it (never selected
silently on a CPU without AVX2/FMA/BMI2).
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

from . import _kernels_baseline as _baseline

__all__ = ["kernels", "isa", "available_isas", "load"]


def available_isas():
    """ISA builds that are installed AND supported by this CPU, best last."""
    out = ["baseline"]
    try:
        importlib.import_module("lrfast._kernels_avx2")
    except ImportError:
        return out
    if _baseline.cpu_supports_x86_64_v3():
        out.append("avx2")
    return out


def load(name):
    """Import one kernel build by name ('baseline' or 'avx2')."""
    if name == "baseline":
        return _baseline
    if name == "avx2":
        if not _baseline.cpu_supports_x86_64_v3():
            raise RuntimeError("LRFAST_ISA=avx2: this CPU does not support x86-64-v3 "
                               "(AVX2, FMA, BMI2)")
        return importlib.import_module("lrfast._kernels_avx2")
    raise ValueError(f"LRFAST_ISA must be 'baseline' or 'avx2', got {name!r}")


def _choose():
    forced = os.environ.get("LRFAST_ISA", "").strip().lower()
    if forced:
        return forced, load(forced)
    best = available_isas()[-1]
    return best, load(best)


isa: str
kernels: ModuleType
isa, kernels = _choose()
