"""The benchmark runner (``python -m lrfast bench``) in a tiny quick mode: its
JSON and PNG, the ceiling kernel's byte accounting, the fairness of the
peers (same math), and the pytest-benchmark suite in bench/ (so it cannot rot)."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import lrfast
from lrfast.cli import bench as B

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    res = B.run(quick=True, sizes=[1000, 4000], threads=[1, 2], rounds=2, many_small=True,
                out=str(out), progress=False,
                contenders=["lrfast", "ceiling", "numpy", "torch-fused", "optax"])
    return res, out


def test_quick_run_writes_json_with_the_fields(quick_result):
    res, out = quick_result
    with open(out / "bench.json") as f:
        data = json.load(f)
    assert data["schema"] == "lrfast.bench/1"
    m = data["machine"]
    for k in ("cpu", "cores", "threads_used", "isa", "isa_build", "openmp", "versions", "date",
              "parallel_threshold", "loadavg_start"):
        assert k in m, k
    assert m["threads_used"] == [1, 2]
    assert m["isa"] == lrfast.config()["isa"]
    assert m["versions"]["numpy"] == np.__version__
    s = data["settings"]
    assert s["rounds"] == 2 and s["quick"] is True and s["dtype"] == "float32"
    assert [r["case"] for r in data["results"]] == ["1e3", "4e3", "many-small"]
    for r in data["results"]:
        assert r["optimizer"] == "Adam" and r["bytes_per_element"] == 28 and r["n_states"] == 2
        assert r["n_elements"] == sum(int(np.prod(s)) for s in
                                      (B.make_case("size", r["n_elements"])["shapes"]
                                       if r["kind"] == "size" else
                                       B.make_case("many-small", quick=True)["shapes"]))
        cs = r["contenders"]
        for key in ("lrfast@1", "lrfast@2", "ceiling@1", "ceiling@2", "numpy"):
            assert key in cs, key
            c = cs[key]
            assert c["ns_per_element"] > 0 and c["GBps"] > 0 and len(c["times_ns"]) == 2
            assert c["number"] >= 1
        for t in ("1", "2"):
            assert r["ratio_to_lrfast"][t]["numpy"]["ratio"] > 0
            assert r["pct_of_ceiling"][t]["pct"] > 0
        assert r["thread_speedup"]["2"]["lrfast"] > 0
        if HAVE_TORCH:
            assert "torch-fused@2" in cs and "torch-fused" in r["ratio_to_lrfast"]["2"]
    if not HAVE_TORCH:
        assert "torch-fused" in data["skipped"]
    if importlib.util.find_spec("optax") is None:
        assert data["skipped"]["optax"] == "optax is not installed"
    assert res["results"][0]["contenders"].keys() == data["results"][0]["contenders"].keys()


def test_quick_run_png_or_warning(quick_result):
    res, out = quick_result
    png = out / "bench.png"
    if HAVE_MPL:
        assert res["files"]["png"] == str(png)
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
    else:
        assert res["files"]["png"] is None and not png.exists()
        assert any("matplotlib" in w for w in res["warnings"])


def test_table_has_every_contender(quick_result):
    res, _ = quick_result
    text = B.format_table(res)
    assert "Adam float32, 1 thread" in text and "Adam float32, 2 threads" in text
    assert "% ceil" in text and "numpy" in text and "thread scaling" in text
    assert res["machine"]["cpu"] in text


@pytest.mark.parametrize("n_states,itemsize,expected", [
    (2, 4, 28),     # Adam fp32: read p,g,m,v; write p,m,v
    (2, 8, 56),     # Adam fp64
    (1, 4, 20),     # SGD-momentum, Adagrad, RMSprop: read p,g,s; write p,s
    (0, 4, 12),     # plain SGD: read p,g; write p
    (3, 4, 36),     # Adam amsgrad
])
def test_ceiling_moves_the_optimizers_bytes(n_states, itemsize, expected):
    dt = np.float32 if itemsize == 4 else np.float64
    params, grads = B.make_inputs([(100,), (37,)], dt)
    c = B.Ceiling(params, grads, n_states)
    assert c.bytes_per_element == expected == B.optimizer_bytes_per_element(n_states, itemsize)
    # every pass reads what it writes (in place: no write-allocate traffic), and
    # p, g and every state are read exactly once, p and every state written once
    reads = [a for _, r, _ in c.passes for a in r]
    writes = [a for _, _, w in c.passes for a in w]
    names = ["p", "g"] + [f"s{j}" for j in range(n_states)]
    assert sorted(reads) == sorted(names)
    assert sorted(writes) == sorted(n for n in names if n != "g")
    for _, r, w in c.passes:
        assert set(w) <= set(r)
    # each pass covers all elements, so it makes the optimizer's serial/parallel choice
    assert all(e.total_elements == 137 for e in c.engines)


@pytest.mark.parametrize("nthreads", [1, 2])
def test_ceiling_really_reads_and_writes_every_array(nthreads):
    """Run one ceiling step with visible coefficients and check every element
    of p, g and each state was read, and of p and each state written."""
    shapes = [(5000,), (64, 33), (1,), (70_001,)]
    params, grads = B.make_inputs(shapes, np.float32, seed=3)
    c = B.Ceiling(params, grads, 2, lr=0.5, mu=0.25, damp=2.0, scale=-3.0)
    p0 = [p.copy() for p in c.params]
    s0 = [s.copy() for s in c.states[0]]
    s1 = [s.copy() for s in c.states[1]]
    g0 = [g.copy() for g in grads]
    thr = lrfast.get_parallel_threshold()
    try:
        lrfast.set_parallel_threshold(0)
        with lrfast.threads(nthreads):
            c.step()
    finally:
        lrfast.set_parallel_threshold(thr)
    f = np.float32
    for i in range(len(shapes)):
        b = s0[i] * f(0.25) + f(2.0) * g0[i]
        np.testing.assert_array_equal(c.states[0][i], b)
        np.testing.assert_array_equal(c.params[i], p0[i] - f(0.5) * b)
        np.testing.assert_array_equal(c.states[1][i], s1[i] * f(-3.0))
        np.testing.assert_array_equal(grads[i], g0[i])          # read only
    assert c.params[0] is not params[0]                          # own copies


def test_ceiling_values_stay_bounded_over_many_steps():
    params, grads = B.make_inputs([(1000,)], np.float32)
    c = B.Ceiling(params, grads, 2)
    for _ in range(2001):
        c.step()
    for a in [c.params[0], c.states[0][0], c.states[1][0]]:
        assert np.isfinite(a).all()
        assert (np.abs(a[a != 0]) > np.finfo(np.float32).tiny).all()    # no denormals


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "adagrad", "rmsprop", "adadelta"])
def test_numpy_contender_is_the_same_math(name):
    cls, hp = B.OPTIMIZERS[name]
    params, grads = B.make_inputs([(300,), (7, 11)], np.float64, seed=5)
    step = B._numpy_contender(cls, hp, params, grads)
    mine = [p.copy() for p in params]
    opt = getattr(lrfast, cls)(mine, **hp)
    for _ in range(4):
        step()
        opt.step(grads)
    for (p, *_), q in zip(step.arrays, mine):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("variant", ["torch-forloop", "torch-foreach", "torch-fused"])
def test_torch_contender_is_the_same_math(variant):
    cls, hp = B.OPTIMIZERS["adam"]
    params, grads = B.make_inputs([(300,)], np.float32, seed=5)
    step = B._torch_contender(variant, cls, hp, params, grads)   # takes one step itself
    mine = [p.copy() for p in params]
    opt = lrfast.Adam(mine, **hp)
    opt.step(grads)
    for _ in range(3):
        step()
        opt.step(grads)
    tp = step.__self__.param_groups[0]["params"][0].detach().numpy()
    np.testing.assert_allclose(tp, mine[0], rtol=1e-6, atol=1e-7)


def test_order_rotates_and_reverses():
    orders = [B._order(4, r) for r in range(8)]
    for o in orders:
        assert sorted(o) == [0, 1, 2, 3]
    firsts = [o[0] for o in orders]
    assert sorted(firsts) == [0, 0, 1, 1, 2, 2, 3, 3]
    before = {(o[i - 1], o[i]) for o in orders for i in range(1, 4)}
    for c in range(4):       # every contender follows both of its neighbours
        assert ((c - 1) % 4, c) in before and ((c + 1) % 4, c) in before
    assert orders[0] == [0, 1, 2, 3] and orders[1] == [3, 2, 1, 0] and orders[2] == [1, 2, 3, 0]


def test_median_ratio():
    m, lo, hi = B._median_ratio([2, 4, 6, 100], [1, 1, 1, 1])
    assert m == 5 and lo <= m <= hi


def test_cli(tmp_path, capsys):
    from lrfast.__main__ import main
    rc = main(["bench", "--quick", "--sizes", "2e3", "--threads", "1", "--rounds", "1",
               "--contenders", "lrfast,ceiling,numpy", "--optimizer", "sgd,adagrad",
               "--dtype", "float64", "--out", str(tmp_path), "--no-progress",
               "--spin-ms", "0", "--pause-ms", "0"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "SGD float64, 1 thread (40 B/element moved)" in text
    assert "Adagrad float64" in text and "wrote" in text
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [r["optimizer"] for r in data["results"]] == ["SGD", "Adagrad"]
    assert data["settings"]["contenders"] == ["lrfast", "ceiling", "numpy"]
    assert data["results"][0]["contenders"]["lrfast@1"]["ns_per_element"] > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown optimizer"):
        B.run(optimizer="nope", quick=True)
    with pytest.raises(ValueError, match="dtype"):
        B.run(dtype="int32", quick=True)
    with pytest.raises(ValueError, match="unknown contender"):
        B.run(quick=True, sizes=[1000], rounds=1, contenders=["lrfast", "jax"])
    with pytest.raises(SystemExit):
        B.main(["--sizes", "1e3,abc"])


def test_threads_restored():
    before = lrfast.get_num_threads()
    B.run(quick=True, sizes=[1000], threads=[1], rounds=1, contenders=["lrfast", "ceiling"],
          progress=False, pause_s=0, spin_s=0)
    assert lrfast.get_num_threads() == before


def test_bench_suite_runs_in_quick_mode(tmp_path):
    """pytest bench/ in CI's quick mode (a slice of it: one thread, float32,
    no torch peers, whose glue is tested above; bodies run once): the suite
    must keep collecting and running. The whole quick suite:
    ``LRFAST_BENCH_QUICK=1 pytest bench/ --benchmark-disable``."""
    if not os.path.isdir(os.path.join(ROOT, "bench")):
        pytest.skip("bench/ is not beside the tests (tests run from an installed wheel)")
    env = dict(os.environ, LRFAST_BENCH_QUICK="1")
    # cwd outside the tree: from an unpacked sdist, `python -m` must import the
    # installed lrfast, not the uncompiled sources beside the tests
    r = subprocess.run(
        [sys.executable, "-m", "pytest", os.path.join(ROOT, "bench"), "-q",
         "-p", "no:cacheprovider", "--benchmark-disable",
         "-k", "(1e3 or many) and 1t and not float64 and not torch"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout


def test_busy_machine_flagged_in_table_and_plot(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure
    seen = []
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, *a, **k):
        seen.extend(t.get_text() for t in fig.texts)
        seen.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        return real_savefig(fig, *a, **k)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    # other processes took half the CPU time, in the run and in each case
    monkeypatch.setattr(B._CpuMeter, "stop", lambda self: 0.5)
    res = B.run(quick=True, sizes=[1000], threads=[1], rounds=1,
                contenders=["lrfast", "ceiling"], progress=False, pause_s=0, spin_s=0,
                out=str(tmp_path))
    assert res["busy"] and "50%" in res["busy"]
    table = B.format_table(res).splitlines()
    assert table[0].startswith("!!! BUSY MACHINE") and "NOT results" in table[0]
    row = next(x for x in table if x.startswith("1e3") or "1000" in x.split("|")[0])
    assert row.rstrip().endswith("!")
    assert any("BUSY MACHINE" in t for t in seen) and "BUSY" in seen
    assert os.path.getsize(tmp_path / "bench.png") > 0
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["busy"] == res["busy"]

    # a quiet run carries no warning
    seen.clear()
    monkeypatch.setattr(B._CpuMeter, "stop", lambda self: 0.0)
    res = B.run(quick=True, sizes=[1000], threads=[1], rounds=1,
                contenders=["lrfast", "ceiling"], progress=False, pause_s=0, spin_s=0,
                out=str(tmp_path))
    assert res["busy"] is None and "BUSY" not in B.format_table(res)
    assert not any("BUSY" in t for t in seen)


def test_step_path_cases_run_and_report_ratios(capsys):
    """python -m lrfast bench --step-path: every case runs and reports a ratio
    against its baseline and its target (speed itself is never asserted)."""
    from lrfast.cli import step_path
    from lrfast.__main__ import main
    rows = step_path.run(rounds=1, number=5)
    assert [r["case"] for r in rows] == list(step_path.CASES)
    for r in rows:
        assert r["ratio"] > 0 and r["case_us"] > 0 and r["baseline_us"] > 0
    assert main(["bench", "--step-path", "--rounds", "1", "--number", "3"]) == 0
    out = capsys.readouterr().out
    assert "kernels.adam_step / Adam.step" in out and "target" in out


def test_torch_bench_runs_and_reports_ratios(capsys):
    """python -m lrfast bench --torch: lrfast.torch.AdamW against torch's fused and
    foreach AdamW (speed itself is never asserted)."""
    pytest.importorskip("torch")
    from lrfast.cli import torch_bench
    from lrfast.__main__ import main
    shapes = torch_bench.gpt2_small_shapes()
    assert len(shapes) == 148
    assert sum(int(np.prod(s)) for s in shapes) == 124_439_808      # GPT-2 small
    res = torch_bench.run(sizes=[300.0], quick=True)
    c = res["cases"]["3e+02"]
    assert c["elements"] == 300 and c["x torch-fused"] > 0 and c["x torch-foreach"] > 0
    assert main(["bench", "--torch", "--quick", "--sizes", "200"]) == 0
    assert "x fused" in capsys.readouterr().out


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_torch_contender_skips_optimizers_torch_lacks():
    params, grads = B.make_inputs([(30,)], np.float32, seed=5)
    with pytest.raises(B._Skip, match="has no Lion"):
        B._torch_contender("torch-foreach", "Lion", {"lr": 1e-4}, params, grads)


# --------------------------------------------------------------- learning-rate free
LRFREE_BYTES = {"ScheduleFreeSGD": (20, 1), "ScheduleFreeAdamW": (28, 1),
                "ScheduleFreeRAdam": (28, 1),
                # sums pass reads p, g, p0, s (16 B); the update reads p, g, s, m, v
                # and writes p, s, m, v (36 B)
                "Prodigy": (52, 2),
                # sums pass reads p, g, x0 (12 B); the update reads p, g, writes p (12 B)
                "DoG": (24, 2), "LDoG": (24, 2),
                # sums pass reads p, g and two states (16 B); DAdaptAdam's update reads
                # p, g and three states and writes p and them (36 B); DAdaptSGD's and
                # DAdaptAdaGrad's reads p, g, two states and x0 and writes p and the
                # two states (x0 is written at a param's first step only: 32 B)
                "DAdaptAdam": (52, 2), "DAdaptSGD": (48, 2), "DAdaptAdaGrad": (48, 2)}


def _have(mod):
    return importlib.util.find_spec(mod) is not None


def test_lrfree_cases_run_and_report(capsys):
    """python -m lrfast bench --lrfree: every learning-rate-free optimizer runs
    against its reference package (or says why not) and the same-bytes ceiling,
    with both passes' bytes counted (speed itself is never asserted)."""
    names = [n.lower() for n in B.LRFREE]
    res = B.run(optimizer=names, quick=True, sizes=[1000], threads=[1], rounds=1,
                contenders=list(B.LRFREE_CONTENDERS), progress=False, pause_s=0, spin_s=0)
    assert [r["optimizer"] for r in res["results"]] == list(B.LRFREE)
    for r in res["results"]:
        bpe, passes = LRFREE_BYTES[r["optimizer"]]
        assert (r["bytes_per_element"], r["passes"]) == (bpe, passes), r["optimizer"]
        cs = r["contenders"]
        assert cs["lrfast@1"]["ns_per_element"] > 0 and cs["ceiling@1"]["ns_per_element"] > 0
        assert r["pct_of_ceiling"]["1"]["pct"] > 0
        lf = B.LRFREE[r["optimizer"]]
        if _have(lf.module) and HAVE_TORCH:
            assert cs["reference@1"]["ns_per_element"] > 0
            assert r["ratio_to_lrfast"]["1"]["reference"]["ratio"] > 0
        else:
            assert "not installed" in res["skipped"]["reference"]
    text = B.format_table(res)
    assert "Prodigy float32, 1 thread (52 B/element moved in 2 passes)" in text
    assert "ScheduleFreeSGD float32, 1 thread (20 B/element moved)" in text
    # one command: --lrfree selects these optimizers and contenders
    assert B.main(["--lrfree", "--quick", "--sizes", "1e3", "--threads", "1", "--rounds", "1",
                   "--optimizer", "dog", "--no-progress", "--spin-ms", "0",
                   "--pause-ms", "0"]) == 0
    out = capsys.readouterr().out
    assert "DoG float32, 1 thread (24 B/element moved in 2 passes)" in out
    assert "ref" in out and "Adam float32" not in out


def test_adam_runs_have_no_reference_contender():
    res = B.run(quick=True, sizes=[1000], threads=[1], rounds=1,
                contenders=["lrfast", "reference"], progress=False, pause_s=0, spin_s=0)
    assert "reference" not in res["skipped"]
    assert not any(k.startswith("reference") for k in res["results"][0]["contenders"])


@pytest.mark.parametrize("name", list(B.LRFREE))
def test_lrfree_declared_passes_cover_the_optimizers_state(name):
    cls, hp = B.OPTIMIZERS[name.lower()]
    params, grads = B.make_inputs([(50,), (3, 4)], np.float32)
    opt = getattr(lrfast, cls)(params, **hp)
    sums, update, ureads = B.passes_of(cls, opt)
    states = [n for n, a in zip(lrfast.optim.TABLE[cls].states, opt._states[0])
              if a is not None]
    assert set(sums) | set(update) | set(ureads) == \
        set(states) | ({"p", "g"} if sums else set())
    assert set(update) <= set(states) and set(sums) <= set(states) | {"p", "g"}
    assert not set(ureads) & set(update) and set(ureads) <= set(states)
    cs = B._ceiling_sums(sums + ureads, update)
    c = B.Ceiling(params, grads, len(update), sums=cs)
    assert c.bytes_per_element == LRFREE_BYTES[cls][0] == \
        B.optimizer_bytes_per_element(len(update), 4, len(sums) + len(ureads))


@pytest.mark.parametrize("name", ["DAdaptSGD", "DAdaptAdaGrad"])
def test_dadapt_x0_is_only_read_by_the_update(name):
    """DAdaptSGD's and DAdaptAdaGrad's update reads x0 and never writes it after
    a param's first step: the runner counts it once (read), not twice."""
    cls, hp = B.OPTIMIZERS[name.lower()]
    params, grads = B.make_inputs([(50,)], np.float64, seed=4)
    params = [1e-3 * p for p in params]
    opt = getattr(lrfast, cls)(params, **hp)
    opt.step(grads)
    x0 = opt.state_dict()["state"][0]["x0"].copy()
    for k in range(3):
        opt.step([g * (k + 2) for g in grads])
        assert not np.array_equal(params[0], x0)
        assert opt.state_dict()["state"][0]["x0"].tobytes() == x0.tobytes()
    assert B.passes_of(cls, opt)[2] == ("x0",)
    _, _, info = B.build_contenders(cls, hp, params, grads, [1], ["ceiling"])
    assert info["bytes_per_element"] == 12 * 8 and info["update_reads"] == ["x0"]  # float64
    assert "x0" in info["sums_reads"] and "x0" not in info["update_states"]


def test_ceiling_sums_pass_reads_every_array_once():
    params, grads = B.make_inputs([(5000,), (64, 33), (1,)], np.float32, seed=3)
    g0 = [g.copy() for g in grads]
    c = B.Ceiling(params, grads, 3, sums=("p", "g", "x0", "s0"))
    assert c.bytes_per_element == 52
    reads = [a for _, r, _ in c.passes for a in r]
    assert sorted(reads) == sorted(["p", "g", "x0", "s0"] + ["p", "g", "s0", "s1", "s2"])
    assert [r for _, r, w in c.passes if not w] == [["p", "g", "x0", "s0"]]  # one read pass
    # the read pass really reads every array: it returns their joint norm
    named = {"p": c.params, "g": c.grads, "x0": c.extra["x0"], "s0": c.states[0]}
    norm = np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2))
                       for k in ("p", "g", "x0", "s0") for a in named[k]))
    c._calls[0][0](c._calls[0][1])
    assert c.read_result[0] == pytest.approx(norm, rel=1e-6)
    c.step()
    for g, h in zip(grads, g0):
        np.testing.assert_array_equal(g, h)
    with pytest.raises(ValueError, match="unknown array"):
        B.Ceiling(params, grads, 1, sums=("q",))


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("name", list(B.LRFREE))
def test_reference_contender_is_the_same_math(name):
    """The runner times the reference on the same problem: its params equal
    lrfast's after the same steps (alternating grads), in float64."""
    lf = B.LRFREE[name]
    pytest.importorskip(lf.module)
    cls, hp = B.OPTIMIZERS[name.lower()]
    params, grads = B.make_inputs([(300,), (7, 11)], np.float64, seed=5)
    params = [1e-3 * p for p in params]            # small params: not chaotic
    grads_b = [np.negative(g) for g in grads]
    step = B._reference_contender(cls, hp, params, grads, grads_b)  # one step itself
    mine = [p.copy() for p in params]
    opt = getattr(lrfast, cls)(mine, **hp)
    # the schedule-free references normalize p.grad in place: compare after their
    # first step only; the others after five
    n = 1 if name in ("ScheduleFreeAdamW", "ScheduleFreeRAdam") else 5
    for k in range(n):
        if k:
            step()
        opt.step(grads if k % 2 == 0 else grads_b)
    tp = [p.detach().numpy() for p in step.opt.param_groups[0]["params"]]
    for a, b in zip(tp, mine):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["Prodigy", "DoG", "LDoG"])
def test_lrfree_timed_steps_stay_bounded(name):
    """Alternating grads keep the step-size estimates and params bounded over
    many timed steps (a constant grad made DoG overflow)."""
    cls, hp = B.OPTIMIZERS[name.lower()]
    params, grads = B.make_inputs([(1000,)], np.float32)
    cs, _, _ = B.build_contenders(cls, hp, params, grads, [1], ["lrfast"])
    for _ in range(5000):
        cs[0].fn()
    x = cs[0].fn.opt._params[0]
    assert x is not params[0] and not np.array_equal(x, params[0])
    assert np.isfinite(x).all() and np.abs(x).max() < 100


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_torch_bench_skips_deepspeed_with_the_reason(monkeypatch):
    """Without an importable DeepSpeed CPU Adam the runner skips it and says why."""
    import sys
    from lrfast.cli import torch_bench
    monkeypatch.setitem(sys.modules, "deepspeed", None)       # import fails
    monkeypatch.setitem(sys.modules, "deepspeed.ops", None)
    monkeypatch.setitem(sys.modules, "deepspeed.ops.adam", None)
    res = torch_bench.run(sizes=[300.0], quick=True, deepspeed=True)
    assert res["deepspeed"].startswith("skipped: deepspeed is not importable")
    assert "deepspeed" not in res["cases"]["3e+02"]["us"]
    assert "DeepSpeedCPUAdam: skipped" in torch_bench.format_table(res)
    assert torch_bench.run(sizes=[300.0], quick=True)["deepspeed"] == "not requested"

def test_every_kind_with_a_sums_pass_has_its_reads_listed():
    from lrfast.optim._table import KINDS
    with_sums = {k for k, v in KINDS.items() if v.sums}
    assert set(B.SUMS_READS) == with_sums
    for kind, reads in B.SUMS_READS.items():
        names = {"p", "g"} | {f"s{j}" for j in range(KINDS[kind].n_states)}
        assert reads and set(reads) <= names and len(set(reads)) == len(reads), kind


@pytest.mark.parametrize("name,bpe", [("Lamb", 28 + 16), ("LARS", 20 + 8), ("NovoGrad", 20 + 4),
                                      ("Adam", 28)])
def test_ceiling_counts_the_sums_pass(name, bpe):
    params, grads = B.make_inputs([(300,), (41,)], np.float32, seed=2)
    hp = B.OPTIMIZERS[name.lower()][1]
    cs, skipped, info = B.build_contenders(name, hp, params, grads, [1], ["ceiling"])
    assert not skipped and info["bytes_per_element"] == bpe
    c = B.Ceiling(params, grads, info["n_states"], sums=info["sums_reads"])
    assert c.bytes_per_element == bpe
    # the sums pass only reads (first, as in the optimizer's step); the update
    # passes still read p, g and every state once and write p and every state
    sums = [ps for ps in c.passes if not ps[2]]
    assert [r for _, r, _ in sums] == ([list(B.SUMS_READS[name.lower()])]
                                       if name != "Adam" else [])
    upd = [ps for ps in c.passes if ps[2]]
    names = ["p", "g"] + [f"s{j}" for j in range(info["n_states"])]
    assert sorted(a for _, r, _ in upd for a in r) == sorted(names)


@pytest.mark.parametrize("nthreads", [1, 2])
def test_ceiling_sums_pass_reads_every_element(nthreads):
    shapes = [(5000,), (64, 33), (1,), (9001,)]
    params, grads = B.make_inputs(shapes, np.float64, seed=4)
    c = B.Ceiling(params, grads, 2, sums=("p", "g", "s1"))
    named = {"p": [a.copy() for a in c.params], "g": [a.copy() for a in grads],
             "s1": [a.copy() for a in c.states[1]]}
    thr = lrfast.get_parallel_threshold()
    try:
        lrfast.set_parallel_threshold(0)
        with lrfast.threads(nthreads):
            c.step()
    finally:
        lrfast.set_parallel_threshold(thr)
    # the read pass ran before the update, on the arrays as they were
    ref = np.sqrt(sum(float(np.sum(a * a)) for v in named.values() for a in v))
    norm, finite = c.read_result
    assert finite and norm == pytest.approx(ref, rel=1e-12)
    for i in range(len(shapes)):
        np.testing.assert_array_equal(grads[i], named["g"][i])            # read only
    # one NaN anywhere in a read array shows: every element is read
    c.states[1][3][4567] = np.nan
    c.step()
    assert not c.read_result[1]
    with pytest.raises(ValueError, match="s2"):
        B.Ceiling(params, grads, 2, sums=("p", "s2"))


HAVE_OPTAX = (importlib.util.find_spec("optax") is not None
              and importlib.util.find_spec("jax") is not None)


@pytest.mark.skipif(not HAVE_OPTAX, reason="jax/optax are not installed")
@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "adagrad", "adadelta", "rmsprop",
                                  "adamax", "lion", "adabelief", "yogi", "adopt", "adan",
                                  "lamb", "lars", "novograd"])
def test_optax_contender_is_the_same_math(name):
    cls, hp = B.OPTIMIZERS[name]
    params, grads = B.make_inputs([(300,), (7, 11)], np.float32, seed=5)
    step = B._optax_contender(cls, hp, params, grads)     # takes one step itself
    mine = [p.copy() for p in params]
    opt = getattr(lrfast, cls)(mine, **hp)
    opt.step(grads)
    for _ in range(3):
        step()
        opt.step(grads)
    moved = False
    for p0, q, o in zip(params, mine, step.params()):
        np.testing.assert_allclose(o, q, rtol=2e-5, atol=2e-6)
        moved |= bool(np.any(q != p0))
    assert moved


def test_optax_contender_skips_what_it_lacks():
    params, grads = B.make_inputs([(30,)], np.float32, seed=5)
    with pytest.raises(B._Skip, match="optax"):
        B._optax_contender("Rprop", {"lr": 1e-2}, params, grads)


def test_layouts_keep_the_element_count():
    for n in (1, 7, 1000, 10_000, 100_000, 10_000_000, 9973):
        (r, c), = B.layout_shapes("Muon", [(n,)])
        assert r * c == n and r <= c
        (r, c), = B.layout_shapes("SparseAdam", [(n,)])
        assert r * c == n and c <= 64
    assert B.layout_shapes("Adafactor", [(10_000,)]) == [(100, 100)]
    assert B.layout_shapes("SparseAdam", [(10_000_000,)]) == [(156_250, 64)]
    assert B.layout_shapes("Adam", [(1000,)]) == [(1000,)]
    gs = B.sparse_grads([(1000, 10)], np.float32)
    assert len(gs[0].indices) == 10 and (np.diff(gs[0].indices) > 0).all()
    assert gs[0].values.shape == (10, 10)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("name", ["Adafactor", "Muon", "SparseAdam"])
def test_own_step_optimizers_in_the_runner_same_math_as_torch(name):
    cls, hp = B.OPTIMIZERS[name.lower()]
    shapes = B.layout_shapes(cls, [(2000,)])
    params, grads = B.make_inputs(shapes, np.float32, seed=6)
    if name == "SparseAdam":
        grads = B.sparse_grads(shapes, np.float32, seed=6)
    cs, skipped, info = B.build_contenders(cls, hp, params, grads, [1],
                                           ["lrfast", "ceiling", "torch-forloop",
                                            "torch-foreach"])
    assert "ceiling" in skipped and info["bytes_per_element"] is None
    assert ("torch-foreach" in skipped) == (name != "Adafactor")
    step = B._torch_contender("torch-forloop", cls, hp, params, grads)   # one step itself
    mine = [p.copy() for p in params]
    opt = getattr(lrfast, cls)(mine, **hp)
    opt.step(grads)
    for _ in range(2):
        step()
        opt.step(grads)
    tp = step.__self__.param_groups[0]["params"][0].detach().numpy()
    # Muon: torch runs Newton-Schulz in bfloat16, lrfast in the param's dtype
    tol = 2e-3 if name == "Muon" else 1e-5
    np.testing.assert_allclose(tp, mine[0], rtol=tol, atol=tol * 1e-2)
    assert np.any(mine[0] != params[0])
    if name == "SparseAdam":      # only the touched rows moved
        moved = np.flatnonzero(np.any(mine[0] != params[0], axis=1))
        np.testing.assert_array_equal(moved, grads[0].indices)


def test_runner_runs_the_own_step_optimizers(tmp_path):
    res = B.run(optimizer=["adafactor", "sparseadam"], sizes=[1000], threads=[1], rounds=1,
                quick=True, out=str(tmp_path), progress=False,
                contenders=["lrfast", "ceiling"])
    rows = {r["optimizer"]: r for r in res["results"]}
    assert set(rows) == {"Adafactor", "SparseAdam"}
    for r in rows.values():
        assert r["bytes_per_element"] is None and r["n_elements"] == 1000
        assert r["contenders"]["lrfast@1"]["ns_per_element"] > 0
    assert "layout" in B.format_table(res)


@pytest.mark.skipif(not HAVE_TORCH or importlib.util.find_spec("ml_dtypes") is None,
                    reason="torch or ml_dtypes is not installed")
def test_torch_bench_master_case_runs_and_reports():
    """bench --torch --master: bf16 params with fp32 masters against torch's fused
    AdamW on the masters + copy_ (no timing asserted)."""
    import torch
    from lrfast.cli import torch_bench
    c = torch_bench.master_case(torch, 3000, 1, 0.0)
    assert c["elements"] == 3000 and c["us"]["lrfast"] > 0
    assert c["us"]["torch-fused+copy_"] > 0 and c["x torch-fused+copy_"] > 0


def test_lowp_bench_runs_and_reports():
    """bench --lowp: every variant, its ceiling (no timing asserted)."""
    pytest.importorskip("ml_dtypes")
    from lrfast.cli import lowp_bench
    res = lowp_bench.run(sizes=[5000], rounds=1, quick=True)
    c = res["cases"]["5e+03"]
    assert set(c["x fp32"]) == set(lowp_bench.VARIANTS)
    assert all(v > 0 for v in c["ns_per_el"].values())
    assert res["bytes_per_element"]["int8 state"] == pytest.approx(16.0625)
    assert "int8 state" in lowp_bench.format_table(res)


def test_torch_bench_sleeps_around_every_block(monkeypatch):
    """bench --torch: every timed block of every contender is preceded by the
    pause and one untimed call and followed by the spin sleep (so one
    contender's OpenMP pool is idle before the next runs); rounds interleave."""
    pytest.importorskip("torch")
    from lrfast.cli import torch_bench
    log = []
    clock = iter(range(10 ** 9))               # a fake clock: 1 us per reading
    monkeypatch.setattr(torch_bench.time, "sleep", lambda s: log.append(("sleep", s)))
    monkeypatch.setattr(torch_bench.time, "perf_counter", lambda: next(clock) * 1e-6)
    steps = {k: (lambda k=k: log.append(k)) for k in ("a", "b", "c")}
    times = torch_bench.timed_rounds(steps, rounds=4, block_s=5.5e-6, pause_s=0.003,
                                     spin_s=0.02)      # 5 calls per block
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t > 0 for v in times.values() for t in v)
    timed = log[log.index(("sleep", 0.02), 12):]      # after warmup and calibration
    timed = timed[1:] if timed[0] == ("sleep", 0.02) else timed
    blocks, firsts = [], []
    i = 0
    while i < len(timed):
        assert timed[i] == ("sleep", 0.003)           # the pause before the block
        j = timed.index(("sleep", 0.02), i)           # the spin sleep after it
        calls = timed[i + 1:j]
        assert len(set(calls)) == 1 and len(calls) == 6    # untimed call + the block
        blocks.append(len(calls))
        firsts.append(calls[0])
        i = j + 1
    assert len(blocks) == 12 and len(set(blocks)) == 1    # same calls per block
    rounds = [firsts[3 * r:3 * r + 3] for r in range(4)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert rounds[0] != rounds[1] and rounds[0][0] != rounds[2][0]   # order changes


def test_torch_bench_pause_and_spin_options(capsys):
    pytest.importorskip("torch")
    from lrfast.__main__ import main
    assert main(["bench", "--torch", "--quick", "--no-deepspeed", "--sizes", "200",
                 "--pause-ms", "0", "--spin-ms", "2"]) == 0
    out = capsys.readouterr().out
    assert "x fused" in out and "0 ms sleep and one untimed step before, 2 ms sleep" in out
    with pytest.raises(SystemExit):
        main(["bench", "--torch", "--quick", "--spin-ms", "-1"])
    assert "--spin-ms must be >= 0" in capsys.readouterr().err
