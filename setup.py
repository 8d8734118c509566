"""Build lrfast's Cython kernels.

Two extensions are compiled from the same sources (src/_kernels.pxi):
``lrfast._kernels_baseline`` for any CPU, and, when the target is x86-64 (not
Windows), ``lrfast._kernels_avx2`` for x86-64-v3; ``lrfast/_dispatch.py`` picks
one at import. Other targets (aarch64, arm64, universal2) build the baseline only.

OpenMP is detected as scikit-learn does: compile *and run* a tiny program, with
the compiler object and the flags the extensions are then built with (gcc and
clang: ``-fopenmp``; Apple clang: ``-Xpreprocessor -fopenmp`` + ``-lomp``; MSVC:
``/openmp``). Without it the build warns loudly and produces serial kernels,
unless ``LRFAST_REQUIRE_OPENMP=1`` (CI), which makes the build fail.
``LRFAST_DISABLE_OPENMP=1`` builds the serial variant on purpose (tested in CI).

Release builds carry no debug info (``-g0``, and ``-s`` at link on Linux): the
extensions shrink from ~2.4 MB to ~0.4 MB each. ``LRFAST_KEEP_DEBUG=1``, or a
``-g`` in ``CFLAGS`` (sanitizer and debugger builds), keeps it.

The module can be imported without running the build (the tests do, to check
the commands each platform gets): setuptools, Cython and numpy are imported
only under ``__main__``.
"""
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings

# What ships: IEEE semantics, portable code. -fno-math-errno lets gcc vectorize
# sqrt (3.6-3.9x on Adam); -ffp-contract=off keeps kernels bit-identical to their
# numpy twins. Never the flags that break IEEE semantics (they set flush-to-zero
# process-wide) and never a build for the build machine's own CPU (wheels must run
# on any CPU of their architecture). -fno-trapping-math lets gcc 13+ if-convert the
# loops' selects and loop-invariant options (measured on gcc 13.3, Intel Xeon, 1e7
# float32, 1 thread: Lion 9.6 -> 0.93 ns/element, Rprop 8.8 -> 1.24, Adam 4.0 ->
# 1.25; gcc 12 vectorized them without it). It changes no result: lrfast never
# enables floating-point traps, and no flush-to-zero is involved (clang's default).
BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
# MSVC: /fp:precise does not reorder, and (VS 2022) does not contract into FMA
# without /fp:contract: the same contract
MSVC_FLAGS = ["/O2", "/fp:precise"]
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

OPENMP_PROBE = textwrap.dedent("""
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


def target_arch(platform_tag=None, archflags=None):
    """The CPU architecture the wheel is for: 'x86_64', 'arm64', 'aarch64',
    'universal2', ...  Read from ARCHFLAGS (macOS cross-builds) and from
    ``sysconfig.get_platform()`` (which honours cibuildwheel's
    ``_PYTHON_HOST_PLATFORM``), never from the build machine alone."""
    archflags = os.environ.get("ARCHFLAGS", "") if archflags is None else archflags
    archs = [a for i, a in enumerate(archflags.split()[1:], 1)
             if archflags.split()[i - 1] == "-arch"]
    if len(archs) > 1:
        return "universal2"
    if archs:
        return archs[0].lower()
    tag = sysconfig.get_platform() if platform_tag is None else platform_tag
    return tag.rsplit("-", 1)[-1].lower()


def isas_for(arch, platform=None):
    """Which kernel builds to compile: the AVX2 twin only for a single-arch x86-64
    target with a gcc/clang-style compiler (not Windows)."""
    platform = sys.platform if platform is None else platform
    if arch in ("x86_64", "amd64") and platform != "win32":
        return ["baseline", "avx2"]
    return ["baseline"]


def openmp_candidates(compiler_type, platform=None):
    """(compile flags, link flags) to try, in order, for this compiler."""
    platform = sys.platform if platform is None else platform
    if compiler_type == "msvc":
        return [(["/openmp"], [])]
    if platform == "darwin":
        # Apple clang has no driver flag: the preprocessor flag plus Homebrew's libomp
        # (CPPFLAGS/LDFLAGS point at it); a gcc from Homebrew takes -fopenmp
        return [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    return [(["-fopenmp"], ["-fopenmp"])]


def keep_debug(env=None):
    env = os.environ if env is None else env
    if env.get("LRFAST_KEEP_DEBUG") == "1":
        return True
    return any(f.startswith("-g") and f != "-g0" for f in env.get("CFLAGS", "").split())


def compile_flags(compiler_type, isa, omp_cflags, platform=None, env=None):
    """extra_compile_args for one extension."""
    if compiler_type == "msvc":
        return MSVC_FLAGS + list(omp_cflags)
    flags = BASE_FLAGS + ISA_FLAGS[isa] + list(omp_cflags)
    if not keep_debug(env):
        flags.append("-g0")
    return flags


def link_flags(compiler_type, omp_lflags, platform=None, env=None):
    """extra_link_args for one extension."""
    platform = sys.platform if platform is None else platform
    flags = list(omp_lflags)
    # strip the symbol table too (GNU ld; Apple's ld64 deprecates -s)
    if compiler_type != "msvc" and platform.startswith("linux") and not keep_debug(env):
        flags.append("-s")
    return flags


def probe_openmp(compiler, cflags, lflags, run=None, env=None):
    """Compile, link and run OPENMP_PROBE with ``compiler`` (a distutils compiler
    object, as build_ext uses) and these flags, placed where build_ext places an
    extension's extra_compile_args / extra_link_args. Returns True if it ran and
    saw 2 threads. ``run`` (tests) replaces running the program.

    The compile step already carries CFLAGS/CPPFLAGS (as the extensions do); the
    executable linker does not carry LDFLAGS, which the extensions' linker does, so
    they are added here (macOS: ``-L$(brew --prefix libomp)/lib`` for ``-lomp``)."""
    env = os.environ if env is None else env
    run = run or (lambda exe: subprocess.run([exe], capture_output=True).returncode == 0)
    ldflags = [] if compiler.compiler_type == "msvc" else shlex.split(env.get("LDFLAGS", ""))
    tmp = tempfile.mkdtemp(prefix="lrfast-omp-")
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        with open("probe.c", "w") as f:
            f.write(OPENMP_PROBE)
        objects = compiler.compile(["probe.c"], output_dir=".", extra_postargs=list(cflags))
        compiler.link_executable(objects, "probe", output_dir=".", extra_preargs=ldflags,
                                 extra_postargs=list(lflags))
        exe = os.path.join(tmp, "probe" + (compiler.exe_extension or ""))
        return bool(run(exe))
    except Exception:       # CompileError, LinkError (distutils' or setuptools'), OSError
        return False
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def openmp_flags(compiler, platform=None, env=None, run=None):
    """(compile, link) OpenMP flags that work with ``compiler``, or None."""
    env = os.environ if env is None else env
    if env.get("LRFAST_DISABLE_OPENMP") == "1":
        return None
    for cflags, lflags in openmp_candidates(compiler.compiler_type, platform):
        if probe_openmp(compiler, cflags, lflags, run, env):
            return cflags, lflags
    return None


def configure_extensions(compiler, extensions, platform=None, env=None, run=None):
    """Set every extension's compile and link flags for ``compiler`` (the one
    build_ext will use); OpenMP flags only if the probe ran with them. Returns
    the OpenMP (compile, link) flags, ([], []) for a serial build."""
    env = os.environ if env is None else env
    omp = openmp_flags(compiler, platform, env, run)
    if omp is None:
        msg = ("lrfast: OpenMP was not found (or LRFAST_DISABLE_OPENMP=1): building SERIAL "
               "kernels. Install a compiler with OpenMP support (gcc, or clang + libomp) "
               "for multi-threaded steps.")
        if env.get("LRFAST_REQUIRE_OPENMP") == "1":
            raise SystemExit("LRFAST_REQUIRE_OPENMP=1 but " + msg)
        warnings.warn(msg)
        print("*" * 78 + "\n" + msg + "\n" + "*" * 78, file=sys.stderr)
        omp = ([], [])
    for ext in extensions:
        isa = ext.name.rsplit("_", 1)[-1]
        ext.extra_compile_args = compile_flags(compiler.compiler_type, isa, omp[0],
                                               platform, env)
        ext.extra_link_args = link_flags(compiler.compiler_type, omp[1], platform, env)
    return omp


def _extensions(Extension):
    return [Extension(f"lrfast._kernels_{isa}", [f"src/_kernels_{isa}.pyx"],
                      include_dirs=["src"],
                      define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")])
            for isa in isas_for(target_arch())]


def generate_table():
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


if __name__ == "__main__":
    from setuptools import Extension, setup
    from setuptools.command.build_ext import build_ext

    class BuildExt(build_ext):
        """Cythonize at build time (an sdist carries the .pyx, never generated C),
        then probe OpenMP with the compiler that builds the extensions."""

        def run(self):
            # here, not at import: `sdist` lists the .pyx sources without generating C
            import numpy as np
            from Cython.Build import cythonize
            generate_table()
            for ext in self.extensions:
                if np.get_include() not in ext.include_dirs:
                    ext.include_dirs.append(np.get_include())
            # one process per ISA module: each cythonizes the whole kernel source
            nproc = min(len(self.extensions), os.cpu_count() or 1)
            done = {e.name: e for e in cythonize(self.extensions, quiet=True,
                                                 compiler_directives=DIRECTIVES,
                                                 include_path=["src"],
                                                 nthreads=nproc if nproc > 1 else 0)}
            for ext in self.extensions:     # keep setuptools' objects: only the sources change
                ext.sources = done[ext.name].sources
            super().run()

        def finalize_options(self):
            super().finalize_options()
            # the ISA builds are independent C files: compile them side by side
            # (`build_ext -j N` still overrides)
            if not self.parallel:
                self.parallel = min(len(self.extensions or ()), os.cpu_count() or 1) or None

        def build_extensions(self):
            configure_extensions(self.compiler, self.extensions)
            super().build_extensions()

    setup(ext_modules=_extensions(Extension), cmdclass={"build_ext": BuildExt})
