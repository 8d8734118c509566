"""Build lrfast's Cython kernels.

Two extensions are compiled from the same sources (src/_kernels.pxi):
``lrfast._kernels_baseline`` for any x86-64 (or other) CPU, and on x86-64
``lrfast._kernels_avx2`` for x86-64-v3; ``lrfast/_dispatch.py`` picks one at import.

OpenMP is detected as scikit-learn does: compile *and run* a tiny program.
Without it the build warns loudly and produces serial kernels, unless
``LRFAST_REQUIRE_OPENMP=1`` (CI), which makes the build fail.
``LRFAST_DISABLE_OPENMP=1`` builds the serial variant on purpose (tested in CI).
"""
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# What ships: IEEE semantics, portable code. -fno-math-errno lets gcc vectorize
# sqrt (3.6-3.9x on Adam); -ffp-contract=off keeps kernels bit-identical to their
# numpy twins. Never fast-math (it sets flush-to-zero process-wide) and never a
# native-CPU build (wheels must run on any x86-64).
BASE_FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off"]
ISA_FLAGS = {"baseline": [], "avx2": ["-march=x86-64-v3", "-mtune=generic"]}
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}


def _compiler():
    return os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0] or "cc"


def _openmp_flags():
    """Return (compile, link) flags if a tiny OpenMP program compiles and runs."""
    if os.environ.get("LRFAST_DISABLE_OPENMP") == "1":
        return None
    if sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    elif sys.platform == "win32":
        candidates = [(["/openmp"], [])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    code = textwrap.dedent("""
        #include <omp.h>
        #include <stdio.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel num_threads(2) reduction(+:n)
            n += 1;
            printf("%d %d\\n", n, omp_get_max_threads() > 0);
            return n == 2 ? 0 : 1;
        }
    """)
    cc = _compiler()
    for cflags, lflags in candidates:
        tmp = tempfile.mkdtemp(prefix="lrfast-omp-")
        try:
            src = os.path.join(tmp, "t.c")
            exe = os.path.join(tmp, "t")
            with open(src, "w") as f:
                f.write(code)
            r = subprocess.run([cc, *cflags, src, "-o", exe, *lflags],
                               capture_output=True, text=True)
            if r.returncode == 0 and subprocess.run([exe], capture_output=True).returncode == 0:
                return cflags, lflags
        except OSError:
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return None


def _generate_table():
    """Write src/_table.pxi and src/_table_dispatch.pxi (the kernels' enum, named
    row structs and dispatch) from the optimizer table, lrfast/optim/_table.py."""
    import runpy
    here = os.path.dirname(os.path.abspath(__file__))
    table = runpy.run_path(os.path.join(here, "lrfast", "optim", "_table.py"))
    for fname, text in table["cython_source"]().items():
        path = os.path.join(here, "src", fname)
        old = open(path).read() if os.path.exists(path) else None
        if old != text:                     # unchanged files keep their mtime (no rebuild)
            with open(path, "w") as f:
                f.write(text)


def _extensions():
    _generate_table()
    omp = _openmp_flags()
    if omp is None:
        msg = ("lrfast: OpenMP was not found (or LRFAST_DISABLE_OPENMP=1): building SERIAL "
               "kernels. Install a compiler with OpenMP support (gcc, or clang + libomp) "
               "for multi-threaded steps.")
        if os.environ.get("LRFAST_REQUIRE_OPENMP") == "1":
            raise SystemExit("LRFAST_REQUIRE_OPENMP=1 but " + msg)
        warnings.warn(msg)
        print("*" * 78 + "\n" + msg + "\n" + "*" * 78, file=sys.stderr)
        omp = ([], [])
    isas = ["baseline"]
    if platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32":
        isas.append("avx2")
    exts = []
    for isa in isas:
        exts.append(Extension(
            f"lrfast._kernels_{isa}",
            [f"src/_kernels_{isa}.pyx"],
            include_dirs=[np.get_include(), "src"],
            extra_compile_args=BASE_FLAGS + ISA_FLAGS[isa] + omp[0],
            extra_link_args=omp[1],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        ))
    return exts


setup(
    ext_modules=cythonize(_extensions(), compiler_directives=DIRECTIVES,
                          include_path=["src"], quiet=True),
)
