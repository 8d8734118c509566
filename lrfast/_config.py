"""``lrfast.show_config()``: what this build is and how it will run."""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict

import numpy as np

from . import __version__, _dispatch
from ._dispatch import kernels as _K


def _openmp_runtime():
    try:        # threadpoolctl is optional: imported only when asked, and may be absent
        from threadpoolctl import threadpool_info  # type: ignore[import-untyped]
    except ImportError:
        return "unknown (install threadpoolctl to see it)"
    libs = [i for i in threadpool_info() if i.get("user_api") == "openmp"]
    for i in libs:
        name = " ".join(str(x) for x in (i.get("prefix"), i.get("version")) if x)
        return f"{name} ({i.get('filepath')})"
    return "none found" if _K.OPENMP else "none (serial build)"


SERIAL_NOTE = ("SERIAL: built without OpenMP, every step runs on one thread whatever "
               "set_num_threads says; rebuild with a compiler that has OpenMP (gcc, or "
               "clang + libomp) for multi-threaded steps")


def config() -> Dict[str, Any]:
    """The configuration as a dict (what ``show_config`` prints)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "lrfast": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "isa": _dispatch.isa,
        "isa_build": _K.ISA,
        "isa_available": _dispatch.available_isas(),
        "isa_forced": os.environ.get("LRFAST_ISA") or None,
        "openmp": bool(_K.OPENMP),
        "build": "parallel (OpenMP)" if _K.OPENMP else SERIAL_NOTE,
        "openmp_runtime": _openmp_runtime(),
        "num_threads": _K.get_num_threads(),
        "thread_mode": _K.thread_mode(),
        "parallel_threshold": _K.get_parallel_threshold(),
        "compiler": _K.COMPILER,
        "flags": "-O3 -fno-math-errno -fno-trapping-math -ffp-contract=off"
                 + (" -march=x86-64-v3" if _K.ISA == "x86-64-v3" else ""),
        "kernels_module": _K.__name__,
    }


def show_config() -> None:
    """Print version, ISA path, OpenMP runtime, threads and thread mode ("adaptive
    (up to n)" or "pinned n"), threshold, compiler, numpy.

    A serial build (compiled without OpenMP) says so on its first line.
    """
    cfg = config()
    if not cfg["openmp"]:
        print(f"lrfast {cfg['lrfast']}: {SERIAL_NOTE}")
    for k, v in cfg.items():
        print(f"{k:>20}: {v}")
