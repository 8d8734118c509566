"""Build, configuration and CLI."""
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
