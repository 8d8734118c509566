"""setup.py's per-platform build commands, simulated on any machine.

The OpenMP probe and the extensions must get the same flags from the same
compiler object: gcc (``-fopenmp``), Apple clang (``-Xpreprocessor -fopenmp`` +
``-lomp``, Homebrew gcc as the fallback) and MSVC (``/openmp``, where the
interpreter's ``CC`` config var is None). The compilers here record the commands
they would run instead of running them. Needs setup.py beside the tests (a
source checkout or an unpacked sdist) and setuptools.
"""
import importlib.util
import os
import shutil
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = os.path.join(ROOT, "setup.py")
if not os.path.isfile(SETUP):
    pytest.skip("setup.py is not beside the tests (tests run from an installed wheel)",
                allow_module_level=True)
pytest.importorskip("setuptools")
from setuptools._distutils.errors import CompileError
from setuptools._distutils.unixccompiler import UnixCCompiler


@pytest.fixture(scope="module")
def S():
    spec = importlib.util.spec_from_file_location("lrfast_setup_under_test", SETUP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)      # not __main__: nothing is built
    return mod


class Ext:
    def __init__(self, name):
        self.name = name
        self.extra_compile_args = self.extra_link_args = None


def exts(S, arch, platform):
    return [Ext(f"lrfast._kernels_{isa}") for isa in S.isas_for(arch, platform)]


def unix_compiler(cc):
    """A real distutils Unix compiler whose spawn() records the command lines."""
    c = UnixCCompiler()
    c.set_executables(compiler=cc, compiler_so=f"{cc} -fPIC", linker_so=f"{cc} -shared",
                      linker_exe=cc)
    c.force = True                  # link even though no object file was written
    c.commands = []

    def record(cmd, **kw):
        c.commands.append(list(cmd))
    c.spawn = c.call = record          # setuptools < 80 spawns, later ones call
    return c


class FakeMSVC:
    """Stands in for distutils' MSVCCompiler (which needs Visual Studio)."""
    compiler_type = "msvc"
    exe_extension = ".exe"

    def __init__(self):
        self.commands = []

    def compile(self, sources, output_dir=None, extra_postargs=None, **kw):
        self.commands.append(["cl.exe", "/c", *sources, *(extra_postargs or [])])
        return [s.replace(".c", ".obj") for s in sources]

    def link_executable(self, objects, name, output_dir=None, extra_preargs=None,
                        extra_postargs=None, **kw):
        self.commands.append(["link.exe", *(extra_preargs or []), *objects, f"/OUT:{name}.exe",
                              *(extra_postargs or [])])


def compile_cmd(c):
    return next(cmd for cmd in c.commands if "-c" in cmd or "/c" in cmd)


def link_cmd(c):
    return next(cmd for cmd in c.commands if "-c" not in cmd and "/c" not in cmd)


def test_linux_gcc(S):
    c = unix_compiler("gcc")
    ran = []
    e = exts(S, S.target_arch("linux-x86_64", ""), "linux")
    omp = S.configure_extensions(c, e, "linux", env={}, run=lambda exe: ran.append(exe) or True)
    assert omp == (["-fopenmp"], ["-fopenmp"])
    assert [x.name for x in e] == ["lrfast._kernels_baseline", "lrfast._kernels_avx2"]
    # the probe: compiled and linked with the flags the extensions get, then run
    cc, ld = compile_cmd(c), link_cmd(c)
    assert cc[:3] == ["gcc", "-fPIC", "-c"] and cc[-1] == "-fopenmp"
    assert ld[0] == "gcc" and ld[-1] == "-fopenmp"
    assert len(ran) == 1 and os.path.basename(ran[0]) == "probe"
    base, avx2 = e
    flags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
    assert base.extra_compile_args == flags + ["-fopenmp", "-g0"]
    assert avx2.extra_compile_args == flags + ["-march=x86-64-v3", "-mtune=generic",
                                               "-fopenmp", "-g0"]
    assert base.extra_link_args == avx2.extra_link_args == ["-fopenmp", "-s"]
    for x in e:
        assert not any("fast-math" in f or "native" in f for f in x.extra_compile_args)


def test_macos_apple_clang_with_libomp(S):
    c = unix_compiler("/usr/bin/clang")
    e = exts(S, S.target_arch("macosx-14.0-arm64", ""), "darwin")
    # cibuildwheel's macOS environment: Homebrew's libomp through LDFLAGS (CFLAGS and
    # CPPFLAGS reach the compile command through the compiler object, as for the build)
    env = {"LDFLAGS": "-L/opt/homebrew/opt/libomp/lib -Wl,-rpath,/opt/homebrew/opt/libomp/lib"}
    omp = S.configure_extensions(c, e, "darwin", env=env, run=lambda exe: True)
    assert omp == (["-Xpreprocessor", "-fopenmp"], ["-lomp"])
    cc, ld = compile_cmd(c), link_cmd(c)
    assert cc[0] == "/usr/bin/clang" and cc[-2:] == ["-Xpreprocessor", "-fopenmp"]
    assert ld[0] == "/usr/bin/clang" and ld[-1] == "-lomp"
    # the probe links as the extensions do: LDFLAGS before the objects, -lomp after
    assert ld[1:3] == ["-L/opt/homebrew/opt/libomp/lib",
                       "-Wl,-rpath,/opt/homebrew/opt/libomp/lib"]
    assert ld.index("-L/opt/homebrew/opt/libomp/lib") < ld.index("-lomp")
    assert [x.name for x in e] == ["lrfast._kernels_baseline"]     # arm64: no AVX2 twin
    (base,) = e
    assert base.extra_compile_args == ["-O3", "-fno-math-errno", "-fno-trapping-math",
                                       "-ffp-contract=off", "-Xpreprocessor", "-fopenmp", "-g0"]
    assert base.extra_link_args == ["-lomp"]           # no -s: ld64 deprecates it


def test_macos_falls_back_to_gcc_style_flags(S):
    c = unix_compiler("gcc-14")
    e = exts(S, "x86_64", "darwin")
    # Apple's flags fail to run (no libomp), Homebrew gcc's -fopenmp works
    omp = S.configure_extensions(c, e, "darwin", env={},
                                 run=lambda exe: len(c.commands) > 2)
    assert omp == (["-fopenmp"], ["-fopenmp"])
    assert [x.name for x in e] == ["lrfast._kernels_baseline", "lrfast._kernels_avx2"]
    assert all(x.extra_link_args == ["-fopenmp"] for x in e)
    # both candidates were compiled, each with its own flags
    compiles = [cmd for cmd in c.commands if "-c" in cmd]
    assert compiles[0][-2:] == ["-Xpreprocessor", "-fopenmp"] and compiles[1][-1] == "-fopenmp"


def test_windows_msvc_with_cc_none(S, monkeypatch):
    real = sysconfig.get_config_var
    monkeypatch.setattr(sysconfig, "get_config_var",
                        lambda name: None if name == "CC" else real(name))
    assert sysconfig.get_config_var("CC") is None       # as on Windows
    c = FakeMSVC()
    ran = []
    e = exts(S, S.target_arch("win-amd64", ""), "win32")
    omp = S.configure_extensions(c, e, "win32", env={"LDFLAGS": "-Lignored"},
                                 run=lambda exe: ran.append(exe) or True)
    assert omp == (["/openmp"], [])
    assert compile_cmd(c) == ["cl.exe", "/c", "probe.c", "/openmp"]
    assert link_cmd(c) == ["link.exe", "probe.obj", "/OUT:probe.exe"]     # no LDFLAGS
    assert ran and ran[0].endswith("probe.exe")
    assert [x.name for x in e] == ["lrfast._kernels_baseline"]
    assert e[0].extra_compile_args == ["/O2", "/fp:precise", "/openmp"]
    assert e[0].extra_link_args == []


def test_target_arch_and_isa_builds(S):
    assert S.target_arch("linux-aarch64", "") == "aarch64"
    assert S.isas_for("aarch64", "linux") == ["baseline"]
    assert S.isas_for("arm64", "darwin") == ["baseline"]
    assert S.isas_for("x86_64", "linux") == ["baseline", "avx2"]
    assert S.isas_for("amd64", "win32") == ["baseline"]
    # macOS cross-builds: ARCHFLAGS names the target, not the build machine
    assert S.target_arch("macosx-11.0-arm64", "-arch x86_64") == "x86_64"
    assert S.target_arch("macosx-11.0-x86_64", "-arch arm64") == "arm64"
    assert S.target_arch("macosx-11.0-universal2", "-arch arm64 -arch x86_64") == "universal2"
    assert S.isas_for("universal2", "darwin") == ["baseline"]


def test_serial_and_required_openmp(S):
    c = unix_compiler("gcc")
    e = exts(S, "x86_64", "linux")
    with pytest.warns(UserWarning, match="SERIAL"):
        omp = S.configure_extensions(c, e, "linux", env={"LRFAST_DISABLE_OPENMP": "1"})
    assert omp == ([], []) and c.commands == []          # no probe at all
    assert all("-fopenmp" not in x.extra_compile_args for x in e)
    assert all(x.extra_link_args == ["-s"] for x in e)

    def broken(cmd, **kw):
        raise CompileError("no omp.h")
    c.spawn = c.call = broken
    with pytest.raises(SystemExit, match="LRFAST_REQUIRE_OPENMP=1"):
        S.configure_extensions(c, e, "linux", env={"LRFAST_REQUIRE_OPENMP": "1"})


def test_debug_info_kept_on_request(S):
    for env in ({"LRFAST_KEEP_DEBUG": "1"}, {"CFLAGS": "-fsanitize=address -g"}):
        c = unix_compiler("gcc")
        e = exts(S, "x86_64", "linux")
        S.configure_extensions(c, e, "linux", env=env, run=lambda exe: True)
        assert all("-g0" not in x.extra_compile_args and "-s" not in x.extra_link_args
                   for x in e)
    assert not S.keep_debug({"CFLAGS": "-g0 -O2"})


@pytest.mark.skipif(sys.platform != "linux" or shutil.which("gcc") is None,
                    reason="needs gcc on Linux")
def test_probe_really_runs_with_gcc(S):
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler
    c = new_compiler()
    customize_compiler(c)
    assert S.probe_openmp(c, ["-fopenmp"], ["-fopenmp"]) is True
    # a flag set that cannot link an OpenMP program is refused, not trusted
    assert S.probe_openmp(c, [], []) is False
