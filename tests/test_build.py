"""Build, configuration and CLI."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import lrfast


def test_show_config_reports_build(capsys):
    lrfast.show_config()
    out = capsys.readouterr().out
    for key in ("lrfast", "isa", "openmp", "num_threads", "parallel_threshold", "compiler",
                "numpy", "flags"):
        assert key in out
    cfg = lrfast.config()
    assert "-fno-math-errno" in cfg["flags"] and "-ffp-contract=off" in cfg["flags"]
    assert "fast-math" not in cfg["flags"] and "native" not in cfg["flags"]


def test_cli_info():
    out = subprocess.run([sys.executable, "-m", "lrfast", "info"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "parallel_threshold" in out.stdout


def test_openmp_runtime_visible_to_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not lrfast.config()["openmp"]:
        pytest.skip("serial build")
    p = [np.zeros(100_000, np.float32)]
    with lrfast.threads(2):
        old = lrfast.get_parallel_threshold()
        lrfast.set_parallel_threshold(0)
        try:
            lrfast.SGD(p, lr=0.1).step([np.ones(100_000, np.float32)])
        finally:
            lrfast.set_parallel_threshold(old)
    apis = {i["user_api"] for i in threadpoolctl.threadpool_info()}
    assert "openmp" in apis


def test_thread_policy():
    three = 3 if lrfast.config()["openmp"] else 1      # a serial build reports 1
    lrfast.set_num_threads(3)
    assert lrfast.get_num_threads() == three
    with lrfast.threads(1):
        assert lrfast.get_num_threads() == 1
    assert lrfast.get_num_threads() == three
    lrfast.set_num_threads(0)
    if lrfast.config()["openmp"]:
        threadpoolctl = pytest.importorskip("threadpoolctl")
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            assert lrfast.get_num_threads() == 1
    with pytest.raises(ValueError):
        lrfast.set_num_threads(-1)
    with pytest.raises(TypeError):
        lrfast.set_num_threads(1.5)


def test_sgd_end_to_end_converges():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 10))
    x_true = rng.standard_normal(10)
    b = A @ x_true
    x = np.zeros(10)
    opt = lrfast.SGD([x], lr=0.01, momentum=0.9)
    for _ in range(2000):
        opt.step([A.T @ (A @ x - b) / 50])
    np.testing.assert_allclose(x, x_true, rtol=1e-6, atol=1e-8)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lrfast", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_version_and_bare_help():
    r = _run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"lrfast {lrfast.__version__}"
    r = _run_cli()
    assert r.returncode == 0 and "usage: python -m lrfast" in r.stdout
    for cmd in ("info", "demo", "bench", "schedules"):
        assert cmd in r.stdout
    r = _run_cli("nope")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_cli_main_in_process(capsys):
    from lrfast.__main__ import main
    assert main([]) == 0
    assert "usage: lrfast" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"lrfast {lrfast.__version__}"
    with pytest.raises(SystemExit) as e:
        main(["info", "extra"])
    assert e.value.code == 2


def test_version_single_source():
    from importlib import metadata
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", lrfast.__version__)
    pyproject = os.path.join(ROOT, "pyproject.toml")
    if os.path.isfile(pyproject):           # the version is written once, in lrfast/__init__.py
        with open(pyproject, encoding="utf-8") as f:
            text = f.read()
        assert 'version = {attr = "lrfast.__version__"}' in text
        assert not re.search(r"(?m)^version\s*=\s*\"", text)
    if "site-packages" in lrfast.__file__:   # installed: the metadata says the same
        assert metadata.version("lrfast") == lrfast.__version__


def test_dir_lists_lazy_names():
    names = dir(lrfast)
    for n in ("LBFGS", "find_lr", "DiagonalNewton", "schedules", "line_search", "distributed",
              "Adam", "__version__"):
        assert n in names
    for n in lrfast.__all__:
        assert n in names and getattr(lrfast, n) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = lrfast.nope


def test_show_config_says_serial(capsys, monkeypatch):
    from lrfast import _config
    monkeypatch.setattr(_config._K, "OPENMP", False)
    lrfast.show_config()
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"lrfast {lrfast.__version__}: SERIAL")
    assert lrfast.config()["build"].startswith("SERIAL")
    monkeypatch.setattr(_config._K, "OPENMP", True)
    lrfast.show_config()
    out = capsys.readouterr().out
    assert "SERIAL" not in out and lrfast.config()["build"] == "parallel (OpenMP)"


def test_dispatch_falls_back_without_the_avx2_build(monkeypatch):
    # as on aarch64, arm64 and Windows: no _kernels_avx2 module and a CPU that is
    # not x86-64-v3; the baseline build is chosen, and asking for AVX2 fails clearly
    from lrfast import _dispatch
    monkeypatch.setitem(sys.modules, "lrfast._kernels_avx2", None)   # import -> ImportError
    monkeypatch.delenv("LRFAST_ISA", raising=False)
    assert _dispatch.available_isas() == ["baseline"]
    assert _dispatch._choose() == ("baseline", _dispatch._baseline)
    monkeypatch.setattr(_dispatch._baseline, "cpu_supports_x86_64_v3", lambda: False)
    with pytest.raises(RuntimeError, match="x86-64-v3"):
        _dispatch.load("avx2")


def _docs(*names):
    out = {}
    for name in names:
        path = os.path.join(ROOT, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                out[name] = f.read()
    if not out:
        pytest.skip("the docs are not beside the tests (tests run from an installed wheel)")
    return out


def _default_threshold():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRFAST_")}
    return int(subprocess.run(
        [sys.executable, "-c", "import lrfast; print(lrfast.get_parallel_threshold())"],
        capture_output=True, text=True, timeout=120, check=True, env=env).stdout)


def test_docs_quote_the_code_serial_threshold():
    default = _default_threshold()
    docs = _docs("README.md", "docs/demo.md", "docs/bench.md")
    quoted = [(name, m.group(1)) for name, text in docs.items()
              for m in re.finditer(r"serial\s+threshold\s+\(([\d,]+)\s+elements", text)]
    assert quoted, "no serial threshold quoted in the docs"
    for name, num in quoted:
        assert int(num.replace(",", "")) == default, (name, num, default)


def test_demo_doc_quotes_the_model_size():
    from lrfast.cli import demo
    text = _docs("docs/demo.md")["docs/demo.md"]
    sizes = (64, *demo.HIDDEN, 10)      # load_digits: 8x8 inputs, 10 classes
    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    m = re.search(r"model's ([\d,]+) parameters", text)
    assert m and int(m.group(1).replace(",", "")) == n
    assert n > _default_threshold()      # the doc says a step is multi-threaded


def test_readme_links_are_absolute():
    # PyPI renders README.md outside the repository: relative links and images break
    text = _docs("README.md")["README.md"]
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    for t in targets:
        assert t.startswith(("https://", "#")), t
    for img in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
        assert img.startswith("https://raw.githubusercontent.com/"), img
