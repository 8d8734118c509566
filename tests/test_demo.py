"""``python -m lrfast demo``: files, keys, accuracy, options, fallbacks.

The demo runs in quick mode (a few dozen steps per run, ~1 s) and with one lrfast
thread where timings do not matter: on a busy 2-core machine the tests stay fast.
"""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from lrfast.cli import demo  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_KEYS = {"final_loss": float, "test_accuracy": float, "step_seconds": float,
            "total_seconds": float, "step_share": float, "optimizer": str, "schedule": str,
            "loss_curve": list, "lr_curve": list, "steps": int}


def _has(mod):
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


def _check_results(path, names, steps):
    with open(path) as f:
        results = json.load(f)
    assert isinstance(results, dict)
    assert list(results) == list(names)
    for name, r in results.items():
        for key, typ in RUN_KEYS.items():
            assert isinstance(r[key], typ), (name, key, type(r[key]))
        assert r["steps"] == steps
        assert len(r["loss_curve"]) == steps and len(r["lr_curve"]) == steps
        assert np.isfinite(r["final_loss"]) and r["final_loss"] >= 0
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert 0.0 <= r["step_seconds"] <= r["total_seconds"]
        assert 0.0 <= r["step_share"] <= 1.0
    return results


def _check_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) > 10_000
    assert data.startswith(PNG_SIGNATURE)
    assert b"IEND" in data[-16:]


@pytest.mark.skipif(not _has("matplotlib"), reason="matplotlib not installed")
def test_quick_demo_writes_table_json_png_and_learns(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = demo.main(["--quick", "--out", str(out), "--threads", "1", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    for col in ("train loss", "test acc", "total s", "step s", "step %"):
        assert col in printed
    results = _check_results(out / "results.json", demo.DEFAULT_RUNS + demo.DEFAULT_LRFREE,
                             demo.QUICK_STEPS)
    assert len(results) >= 4
    assert "no learning rate chosen" in printed and "final d" in printed
    # the best run learns digits in the few steps of the quick mode
    assert max(r["test_accuracy"] for r in results.values()) >= 0.9
    _check_png(out / "demo.png")


def test_same_init_same_batches_and_lr_curve_is_the_schedule(tmp_path):
    steps = 12
    results = demo.run_demo(out=str(tmp_path), steps=steps, optimizers="all", lrfree="all",
                            threads=1, progress=False, plot_png=False, stream=io.StringIO())
    assert list(results) == list(demo.RUNS) + list(demo.LRFREE_RUNS)
    # step 0 sees the same weights and the same batch in every run: same first loss
    first = {r["loss_curve"][0] for r in results.values()}
    assert len(first) == 1
    for name, r in results.items():
        if name in demo.LRFREE_RUNS:
            assert r["panel"] == "lr-free" and r["schedule_config"] is None
            # no lr chosen: the optimizer's default lr throughout
            cls = demo.LRFREE_RUNS[name][0]
            assert r["lr_curve"] == [cls.spec.defaults["lr"]] * steps
            continue
        assert r["panel"] == "tuned" and "d_curve" not in r
        schedule = demo.RUNS[name](steps)[2]
        np.testing.assert_allclose(r["lr_curve"], schedule(np.arange(steps)), rtol=1e-12)


def test_lrfree_panel_records_the_step_size_estimates(tmp_path):
    """d_curve is opt.d after each step: checked against values computed here
    from the definitions (Prodigy's d stays d0 after its first step, then never
    falls; DoG's first eta is reps_rel*(1 + ||x0||) / sqrt(||g0||^2 + eps))."""
    steps = 20
    results = demo.run_demo(out=str(tmp_path), steps=steps, optimizers="none",
                            lrfree=["prodigy", "dog", "ldog", "sf_sgd"], threads=1,
                            progress=False, plot_png=False, stream=io.StringIO())
    assert list(results) == ["prodigy", "dog", "ldog", "sf_sgd"]
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["dog"]["d_curve"] == results["dog"]["d_curve"]
    d = results["prodigy"]["d_curve"]
    assert len(d) == steps and d[0] == 1e-6            # the first step's numerator is 0
    assert all(b >= a for a, b in zip(d, d[1:])) and d[-1] > 1e-5
    assert results["prodigy"]["final_d"] == d[-1]
    # DoG's first eta, from model0 and the first batch, in float64
    data = demo.load_data(0)
    model0 = demo.MLP((64, *demo.HIDDEN, 10), seed=0)
    b = demo._batches(len(data[0]), steps, demo.BATCH, 0)[0]
    _, g = model0.loss_and_grads(data[0][b], data[1][b])
    x0 = np.sqrt(sum(float(np.sum(p.astype(np.float64) ** 2)) for p in model0.params))
    gg = sum(float(np.sum(x.astype(np.float64) ** 2)) for x in g)
    eta1 = 1e-6 * (1 + x0) / np.sqrt(gg + 1e-8)
    assert results["dog"]["d_curve"][0] == pytest.approx(eta1, rel=1e-6)
    assert len(results["ldog"]["d_curve"][0]) == len(model0.params)    # LDoG: per tensor
    assert results["sf_sgd"]["d_curve"] is None and results["sf_sgd"]["final_d"] is None
    assert "final d" in demo.format_table(results)


def test_seeded_runs_are_reproducible(tmp_path):
    kw = dict(steps=15, optimizers=["adam", "sgd"], lrfree=["prodigy"], threads=1, progress=False,
              plot_png=False, stream=io.StringIO())
    a = demo.run_demo(out=str(tmp_path / "a"), seed=3, **kw)
    b = demo.run_demo(out=str(tmp_path / "b"), seed=3, **kw)
    c = demo.run_demo(out=str(tmp_path / "c"), seed=4, **kw)
    for k in a:
        assert a[k]["loss_curve"] == b[k]["loss_curve"]
        assert a[k]["final_loss"] == b[k]["final_loss"]
    assert a["adam"]["loss_curve"] != c["adam"]["loss_curve"]


def test_decays_keep_learning_for_the_whole_run():
    # the seed's time-based decay is a running product (~exp(-d n^2 / 2)): the demo's
    # d scales with the run so the last step still has a useful rate
    for steps in (60, 1000, 5000):
        for name in demo.RUNS:
            schedule = demo.RUNS[name](steps)[2]
            lr = schedule(np.arange(steps))
            assert np.all(np.isfinite(lr)) and np.all(lr >= 0)
            if name in ("adam", "rmsprop", "sgd"):
                assert lr[-1] >= lr[0] / 25, (name, steps, lr[0], lr[-1])


def test_optimizer_selection_and_errors(tmp_path, capsys):
    out = tmp_path / "sel"
    rc = demo.main(["--steps", "5", "--optimizers", "adamw", "SGD", "--out", str(out),
                    "--threads", "1", "--no-progress", "--no-plot", "--seed", "1",
                    "--lrfree", "none"])
    assert rc == 0
    _check_results(out / "results.json", ["adamw", "sgd"], 5)
    assert not (out / "demo.png").exists()
    rc = demo.main(["--steps", "5", "--optimizers", "none", "--lrfree", "DoG", "prodigy",
                    "--out", str(out), "--threads", "1", "--no-progress", "--no-plot"])
    assert rc == 0
    _check_results(out / "results.json", ["dog", "prodigy"], 5)
    assert demo.main(["--optimizers", "lion", "--out", str(out)]) == 2
    assert "unknown optimizer run 'lion'" in capsys.readouterr().err
    assert demo.main(["--lrfree", "adam", "--out", str(out)]) == 2
    assert "unknown lr-free run 'adam'" in capsys.readouterr().err
    assert demo.main(["--optimizers", "none", "--lrfree", "none", "--out", str(out)]) == 2
    assert "no optimizer runs selected" in capsys.readouterr().err
    assert demo.main(["--steps", "2", "--batch-size", "100000", "--out", str(out),
                      "--no-progress", "--no-plot"]) == 2
    with pytest.raises(SystemExit):
        demo.main(["--steps", "0"])


def test_progress_falls_back_to_plain_lines_without_tqdm(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    rc = demo.main(["--steps", "10", "--optimizers", "adam", "--out", str(tmp_path),
                    "--threads", "1", "--no-plot", "--lrfree", "none"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "adam: 10/10 steps, loss" in err


def test_without_matplotlib_the_png_is_skipped_with_a_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc = demo.main(["--steps", "3", "--optimizers", "sgd", "--out", str(tmp_path),
                    "--threads", "1", "--no-progress"])
    assert rc == 0
    assert 'pip install "lrfast[demo]"' in capsys.readouterr().out
    assert (tmp_path / "results.json").exists() and not (tmp_path / "demo.png").exists()


def test_auto_threads_backs_off_on_a_busy_machine(monkeypatch):
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 10.0, 0.0, 0.0), raising=False)
    n, note = demo._auto_threads(cores)
    assert n == 1 and "busy" in note and "--threads" in note
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0), raising=False)
    assert demo._auto_threads(cores) == (None, "")

    def unavailable():
        raise OSError

    monkeypatch.setattr(os, "getloadavg", unavailable, raising=False)
    assert demo._auto_threads(cores) == (None, "")


def test_mlp_gradient_matches_finite_differences():
    model = demo.MLP((5, 7, 3), seed=1)
    model.params = [p.astype(np.float64) for p in model.params]
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    loss, grads = model.loss_and_grads(X, y)
    assert loss == pytest.approx(model.loss(X, y), rel=1e-12)
    for p, g in zip(model.params, grads):
        assert g.shape == p.shape and g.flags.c_contiguous
        for idx in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            old = p[idx]
            p[idx] = old + 1e-6
            up = model.loss(X, y)
            p[idx] = old - 1e-6
            down = model.loss(X, y)
            p[idx] = old
            assert g[idx] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-8)


@pytest.mark.skipif(not _has("matplotlib"), reason="matplotlib not installed")
def test_python_m_lrfast_demo_quick_subprocess(tmp_path):
    # cwd is a fresh directory: the default --out (./lrfast-demo) is created there
    import lrfast
    root = os.path.dirname(os.path.dirname(os.path.abspath(lrfast.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, "-m", "lrfast", "demo", "--quick", "--threads", "1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "test acc" in r.stdout and "best:" in r.stdout
    out = tmp_path / "lrfast-demo"
    results = _check_results(out / "results.json", demo.DEFAULT_RUNS + demo.DEFAULT_LRFREE,
                             demo.QUICK_STEPS)
    assert max(v["test_accuracy"] for v in results.values()) >= 0.9
    _check_png(out / "demo.png")


def test_schedule_free_runs_are_evaluated_at_x():
    # the schedule-free optimizers' params hold y while training; the demo evaluates
    # at x = (y - (1-beta1)*z)/beta1 (opt.eval()), then returns to y (opt.train())
    import lrfast
    w = np.array([1.0, -2.0, 3.0])
    opt = lrfast.ScheduleFreeSGD([w], lr=0.1, momentum=0.9)
    for g in ([1.0, 1.0, -1.0], [0.5, -2.0, 1.0]):
        opt.step([np.array(g)])
    y = w.copy()
    z = opt.state_dict()["state"][0]["z"]
    with demo._eval_mode(opt):
        assert not opt.train_mode
        np.testing.assert_allclose(w, (y - 0.1 * z) / 0.9, rtol=1e-12)
    assert opt.train_mode
    np.testing.assert_allclose(w, y, rtol=1e-12)
    plain = lrfast.SGD([np.zeros(2)], lr=0.1)
    with demo._eval_mode(plain):     # nothing to do for other optimizers
        pass
