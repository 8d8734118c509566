"""lrfast.distributed: data-parallel steps over MPI, checked against one process
stepping on the mean of the per-rank grads.

Each P in (1, 2, 3) runs tests/mpi_scripts/run_scenarios.py once under
``mpiexec -n P`` (3 ranks cut tensors into uneven shards, and the "tiny"
scenario leaves some ranks with nothing); the tests below read its outputs.
Skipped when mpi4py or mpiexec is missing (``pip install "lrfast[mpi-bundled]"``).
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lrfast

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "mpi_scripts")
sys.path.insert(0, SCRIPTS)
import _scenarios as S  # noqa: E402

TOL = {"float64": 1e-12, "float32": 1e-5, "mixed": 1e-5}
SCEN = S.scenarios()
PS = (1, 2, 3)


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.access(here, os.X_OK) else shutil.which("mpiexec")


def _have_mpi():
    try:
        import mpi4py  # noqa: F401  (the package only: MPI is not initialized here)
    except ImportError:
        return False
    return _mpiexec() is not None


needs_mpi = pytest.mark.skipif(not _have_mpi(), reason="needs mpi4py and mpiexec "
                               "(pip install 'lrfast[mpi-bundled]')")


def _env():
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(lrfast.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("OMP_NUM_THREADS", None)      # the wrapper's default thread split is tested
    return env


def mpirun(P, script, *args, timeout=180):
    # python -m mpi4py: an uncaught exception on one rank aborts them all (no hang)
    cmd = [_mpiexec(), "-n", str(P), sys.executable, "-m", "mpi4py", script, *map(str, args)]
    try:
        r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd)} timed out after {timeout} s (deadlock?)\n"
                    f"{(e.stdout or '')[-3000:]}\n{(e.stderr or '')[-3000:]}")
    if r.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout[-3000:]}\n"
                    f"{r.stderr[-5000:]}")
    return r


_RUNS = {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    def get(P):
        if P not in _RUNS:
            out = tmp_path_factory.mktemp(f"mpi{P}")
            mpirun(P, os.path.join(SCRIPTS, "run_scenarios.py"), out)
            ranks = []
            for r in range(P):
                with np.load(out / f"rank{r}.npz") as z:
                    arrays = {k.replace("__", "/"): z[k] for k in z.files}
                with open(out / f"rank{r}.json") as f:
                    ranks.append((arrays, json.load(f)))
            _RUNS[P] = (out, ranks)
        return _RUNS[P]
    return get


_REFS = {}


def reference(name, P):
    if (name, P) not in _REFS:
        _REFS[(name, P)] = S.reference(SCEN[name], P)
    return _REFS[(name, P)]


def _params(arrays, prefix):
    ks = sorted((k for k in arrays if k.startswith(prefix + "/") and
                 k[len(prefix) + 1:].isdigit()), key=lambda k: int(k.rsplit("/", 1)[1]))
    return [arrays[k] for k in ks]


def _assert_ranks_identical(ranks, prefix):
    first = _params(ranks[0][0], prefix)
    assert first, prefix
    for r, (arrays, _) in enumerate(ranks[1:], 1):
        for i, (a, b) in enumerate(zip(first, _params(arrays, prefix))):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), \
                f"{prefix}: param {i} differs between rank 0 and rank {r}"
    return first


def _bits(x):
    return np.asarray(x, dtype=np.float64).tobytes()


def _compare_state(sd, ref_sd, tol, exact=False):
    """sd against the one-process ref_sd: within tol, or (exact) bit for bit,
    every array and every scalar."""
    assert sd.keys() == ref_sd.keys()
    for k in ("format", "optimizer", "step_count", "skipped_steps"):
        assert sd[k] == ref_sd[k], k
    assert sd["param_groups"] == ref_sd["param_groups"]
    assert sorted(sd["state"]) == sorted(ref_sd["state"])
    for i, e in ref_sd["state"].items():
        d = sd["state"][i]
        assert list(d) == list(e), (i, list(d), list(e))
        for k, v in e.items():
            if isinstance(v, np.ndarray):
                assert d[k].shape == v.shape and d[k].dtype == v.dtype, (i, k)
                if exact:
                    assert d[k].tobytes() == v.tobytes(), (i, k)
                else:
                    assert S.rel_err(d[k], v) <= tol, (i, k, S.rel_err(d[k], v))
            elif exact:
                assert _bits(d[k]) == _bits(v), (i, k, d[k], v)
            else:
                assert d[k] == v if not isinstance(v, float) else abs(d[k] - v) <= tol * abs(v)


# ------------------------------------------------------------------ exactness
@needs_mpi
@pytest.mark.parametrize("P", PS)
@pytest.mark.parametrize("name", sorted(SCEN))
def test_matches_one_process_on_the_mean_grad(runs, name, P):
    """P ranks == one process on mean_r(g_r): 1e-12 (float64), 1e-5 (float32);
    bit-identical across ranks; bit-identical to the reference when the mean
    cannot depend on MPI's summation order (P <= 2, no clipping)."""
    spec = SCEN[name]
    out, ranks = runs(P)
    got = _assert_ranks_identical(ranks, name)
    ref_params, ref_opt, ref_rets = reference(name, P)
    exact = P <= 2 and not spec.get("max_grad_norm")
    tol = TOL[spec["dtype"]]
    for i, (a, b) in enumerate(zip(got, ref_params)):
        assert a.shape == b.shape and a.dtype == b.dtype
        if exact:
            assert a.tobytes() == b.tobytes(), f"param {i}: rel err {S.rel_err(a, b)}"
        else:
            assert S.rel_err(a, b) <= tol, f"param {i}: rel err {S.rel_err(a, b)}"
    for _, info in ranks:
        rec = info["scenarios"][name]
        assert rec["returns"] == ref_rets
        assert rec["step_count"] == ref_opt.step_count
        assert rec["skipped"] == ref_opt.skipped_steps
        assert rec["lr"] == ref_opt.lr
    # the checkpoint is the single-process state_dict, and loads into one
    sd = lrfast.io.read(out / f"{name}.ckpt.npz")
    _compare_state(sd, ref_opt.state_dict(), tol, exact=exact)
    groups = S.make_params(spec)
    fresh = S.build_opt(spec, groups)
    fresh.load_state_dict(sd)
    assert fresh.step_count == ref_opt.step_count


@needs_mpi
@pytest.mark.parametrize("P", PS)
def test_repeated_runs_bit_identical(runs, P):
    _, ranks = runs(P)
    for _, info in ranks:
        checks = {k: v for k, v in info["checks"].items() if k.startswith("repeat/")}
        assert checks and all(checks.values()), checks


@needs_mpi
@pytest.mark.parametrize("P", [2, 3])
def test_between_runs_bit_identical(runs, P, tmp_path):
    """A second mpiexec run with the same P gives the same bits."""
    out, ranks = runs(P)
    name = "case13-Adam-float32-shard"
    mpirun(P, os.path.join(SCRIPTS, "run_scenarios.py"), tmp_path, name)
    with np.load(tmp_path / "rank0.npz") as z:
        again = {k.replace("__", "/"): z[k] for k in z.files}
    for a, b in zip(_params(ranks[0][0], name), _params(again, name)):
        assert a.tobytes() == b.tobytes()


# ------------------------------------------------------ state, checkpoints
def _assert_matches_one_process(got, spec, P):
    """Params from P ranks equal one process stepping on the mean grads."""
    groups = S.make_params(spec)
    params = S.flat_params(groups)
    opt = S.build_opt(spec, groups)
    for t in range(spec["steps"]):
        opt.step(S.mean_grads(spec, P, t, params))
    for a, b in zip(got, params):
        assert S.rel_err(a, b) <= 1e-12


@needs_mpi
@pytest.mark.parametrize("P", PS)
def test_wrapping_a_resumed_optimizer_carries_its_state(runs, P):
    _, ranks = runs(P)
    got = _assert_ranks_identical(ranks, "resume")
    spec = SCEN["case12-Adam-float64-shard"]
    _assert_matches_one_process(got, spec, P)
    assert ranks[0][1]["checks"]["resume_step_count"] == spec["steps"]


@needs_mpi
@pytest.mark.parametrize("P", PS)
@pytest.mark.parametrize("tag,scen", [("ckpt-shard", "case21-NAdam-float64-shard"),
                                      ("ckpt-replicated", "case13-Adam-float64-replicated"),
                                      ("ckpt-sched", "schedule-shard")])
def test_checkpoint_continues_on_a_different_number_of_ranks(runs, P, tag, scen):
    """Save at step k on P ranks, load on max(P-1, 1) ranks and finish: the same
    trajectory as one process loading the same checkpoint (step counts and
    schedules continue exactly)."""
    out, ranks = runs(P)
    spec = SCEN[scen]
    k = spec["steps"] // 2
    P2 = max(P - 1, 1)
    got = _assert_ranks_identical(ranks[:P2], tag)
    groups = S.make_params(spec)
    params = S.flat_params(groups)
    for p, q in zip(params, _params(ranks[0][0], f"{tag}/mid")):
        p[...] = q
    opt = S.build_opt(spec, groups)
    lrfast.load(opt, out / f"{tag}.mid.npz")
    assert opt.step_count == k
    for t in range(k, spec["steps"]):
        opt.step(S.mean_grads(spec, P, t, params))
    for a, b in zip(got, params):
        assert a.tobytes() == b.tobytes()      # identical grads -> identical bits
    info = ranks[0][1]["checks"]
    assert info[f"{tag}/step_count"] == opt.step_count
    assert info[f"{tag}/lr"] == opt.lr


@needs_mpi
@pytest.mark.parametrize("P", PS)
@pytest.mark.parametrize("root", [0, None])
def test_loads_a_single_process_state_dict(runs, P, root):
    _, ranks = runs(P)
    got = _assert_ranks_identical(ranks, f"load-root{root}")
    spec = SCEN["case05-Adagrad-float64-shard"]
    _assert_matches_one_process(got, spec, P)


@needs_mpi
@pytest.mark.parametrize("P", PS)
@pytest.mark.parametrize("mode", ["shard", "replicated"])
def test_param_groups_setter_and_zero_state(runs, P, mode):
    """``dopt.param_groups[i]['lr'] = x`` reaches the stepping optimizer (and is
    validated); ``zero_state()`` restarts the state as in one process."""
    _, ranks = runs(P)
    tag = f"setlr-{mode}"
    got = _assert_ranks_identical(ranks, tag)
    spec = SCEN["case12-Adam-float64-shard"]
    groups = S.make_params(spec)
    params = S.flat_params(groups)
    opt = S.build_opt(spec, groups)
    for t in range(6):
        if t == 2:
            opt.param_groups[1]["lr"] = 0.0123
        if t == 4:
            opt.zero_state()
        opt.step(S.mean_grads(spec, P, t, params))
    for a, b in zip(got, params):
        assert S.rel_err(a, b) <= 1e-12
    c = ranks[0][1]["checks"]
    assert c[f"{tag}/lr"] == opt.lr == [0.01, 0.0123]
    assert c[f"{tag}/step_count"] == opt.step_count == 2
    assert "lr" in c[f"{tag}/bad_lr"] and c[f"{tag}/lr_after_bad"] == opt.lr


@needs_mpi
@pytest.mark.parametrize("P", PS)
def test_state_memory_is_divided_among_ranks(runs, P):
    _, ranks = runs(P)
    full = 2 * (60001 * 8 + 200 * 200 * 4)          # Adam: exp_avg + exp_avg_sq
    states = [info["memory"]["state"] for _, info in ranks]
    assert sum(states) == full
    assert max(states) <= full / P + 2 * 8 * 2       # +1 element per dtype and array
    assert all(isinstance(info["memory"]["buffers"], int) for _, info in ranks)


@needs_mpi
@pytest.mark.parametrize("P", PS)
def test_wrapped_optimizer_refuses_direct_steps(runs, P):
    _, ranks = runs(P)
    for _, info in ranks:
        assert "wrapped by lrfast.distributed.DistributedOptimizer" in \
            info["checks"]["template_step"]


@needs_mpi
@pytest.mark.parametrize("P", PS)
def test_default_threads_split_the_cores(runs, P):
    for _, info in runs(P)[1]:
        start, after, ncpu, mine = info["checks"]["threads"]
        want = max(1, mine) if mine < ncpu else max(1, ncpu // P)
        assert after == want


# ------------------------------------------------------------------- errors
@needs_mpi
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("check,words", [
    ("mismatch_shape", ["disagree", "shape", "(5,)", "(6,)"]),
    ("mismatch_lr", ["disagree", "lr", "0.2", "0.1"]),
    ("mismatch_class", ["disagree", "optimizer class", "AdamW", "Adam"]),
    ("mismatch_dtype", ["disagree", "float32", "float64"]),
    ("not_an_optimizer", ["lrfast optimizer"]),
    ("bad_grad_shape", ["grad shape (3, 2) != param shape (2, 3)"]),
    ("bad_grad_dtype", ["dtype float32 != param dtype float64"]),
    ("bad_grad_count", ["expected 2 grads"]),
    ("bad_state_root", ["exp_avg", "shape (3, 2)"]),
    ("bad_state_one_rank", ["SGD"]),
    ("bad_root", ["different arguments"]),
])
def test_errors_raise_on_every_rank(runs, P, check, words):
    """Disagreeing or bad inputs raise on every rank (never a hang), naming the
    problem, and change nothing."""
    for r, (_, info) in enumerate(runs(P)[1]):
        msg = info["checks"][check]
        assert msg != "no error", (r, check)
        for w in words:
            assert w in msg, (r, check, msg)


@needs_mpi
@pytest.mark.parametrize("P", [2, 3])
def test_rejected_calls_change_nothing(runs, P):
    for _, info in runs(P)[1]:
        c = info["checks"]
        assert c["bad_grad_unchanged"] is True
        assert c["bad_grad_step_count"] == 1 and c["after_bad_step_count"] == 2
        assert c["bad_state_step_count"] == 2
        assert c["still_in_sync"] is True


# --------------------------------------------------------- without mpi4py
def test_lrfast_works_without_mpi4py():
    """``import lrfast`` never imports mpi4py; lrfast.distributed needs it."""
    code = textwrap.dedent("""
        import sys
        sys.modules["mpi4py"] = None          # as if not installed
        import numpy as np, lrfast
        w = np.ones(3)
        lrfast.Adam([w]).step([np.ones(3)])
        assert "mpi4py" not in [m for m in sys.modules if sys.modules[m] is not None]
        try:
            lrfast.distributed
        except ImportError as e:
            print("ImportError", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "ImportError" in r.stdout


# ----------------------------------------------- failures on one rank only
_FAULTS = {}


def faults(P, tmp_path_factory):
    """Run tests/mpi_scripts/run_faults.py once per P, under a timeout: a rank
    left waiting in a collective is a test failure, not a stuck run."""
    if P not in _FAULTS:
        out = tmp_path_factory.mktemp(f"faults{P}")
        mpirun(P, os.path.join(SCRIPTS, "run_faults.py"), out, timeout=240)
        ranks = []
        for r in range(P):
            with open(out / f"faults{r}.json") as f:
                ranks.append(json.load(f))
        _FAULTS[P] = ranks
    return _FAULTS[P]


@needs_mpi
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("mode", ["shard", "replicated"])
@pytest.mark.parametrize("case,words", [
    # a masked grad on the last rank: refused there, every rank raises
    ("masked_grad", ["masked"]),
    # packing of the second bucket fails on the last rank (fault injection)
    ("pack_fails", ["injected packing failure"]),
    # the lr schedule raises on the last rank only (issue: the others hung)
    ("schedule_raises", ["schedule for lr failed", "injected schedule failure"]),
    # ... on its second evaluation only: the failure is inside the local step,
    # after the step's first agreement (the verdict catches it)
    ("local_step_raises", ["schedule for lr failed", "injected schedule failure"]),
    ("local_step_raises_clip", ["schedule for lr failed", "injected schedule failure"]),
    # lr set on the last rank only (replicated: params diverged; sharded: each
    # shard used its own lr)
    ("lr_differs", ["disagree", "group 0: lr", "0.5", "0.01"]),
    # a scheduled lr whose values differ between ranks
    ("scheduled_lr_differs", ["disagree", "group 0: lr", "0.02"]),
    # max_grad_norm set on the last rank only (sharded: a collective only there)
    ("clip_differs", ["disagree", "max_grad_norm", "0.1", "None"]),
    # a param reshaped in place on the last rank: its views are stale
    ("param_reshaped", ["memory changed"]),
    # state_dict while the schedule raises on the last rank (the others hung)
    ("state_dict_schedule_raises", ["injected schedule failure"]),
    # load_state_dict(root=None) with a different dict on the last rank
    ("load_different_dicts", ["different state_dicts"]),
    # a crafted checkpoint declaring a 10**13-element array (rank 0 failed
    # to allocate and the others hung)
    ("load_huge_header", ["crafted"]),
])
def test_a_failure_on_one_rank_raises_on_every_rank(tmp_path_factory, P, mode, case, words):
    """Every rank raises (none hangs), naming the problem; nothing changed on
    any rank; the ranks step together again afterwards."""
    for r, res in enumerate(faults(P, tmp_path_factory)):
        rec = res[f"{case}-{mode}"]
        assert rec["msg"] != "no error", (r, rec)
        for w in words:
            assert w in rec["msg"], (r, w, rec["msg"])
        assert rec.get("unchanged", True) is True, (r, rec)
        assert rec["stepped_after"] and rec["in_sync"], (r, rec)


@needs_mpi
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("mode", ["shard", "replicated"])
def test_a_matrix_grad_on_one_rank_steps_as_its_array(tmp_path_factory, P, mode):
    """An np.matrix grad passes the grad checks (right dtype, shape, layout):
    it is used as the plain array it holds, as one process does (it used to
    fail in packing on that rank only, and the others hung)."""
    for r, res in enumerate(faults(P, tmp_path_factory)):
        rec = res[f"matrix_grad-{mode}"]
        assert rec["msg"] == "no error", (r, rec)
        assert rec["same_as_plain"] and rec["in_sync"], (r, rec)


# ------------------------------------------- learning-rate-free optimizers
import _lrfree as L  # noqa: E402

_SCRIPT_RUNS = {}


def script_runs(name, P, tmp_path_factory):
    """tests/mpi_scripts/run_<name>.py once per P (cached): (out dir, [(arrays,
    info)] per rank) from the <name><rank>.npz / .json files it writes."""
    if (name, P) not in _SCRIPT_RUNS:
        out = tmp_path_factory.mktemp(f"{name}{P}")
        mpirun(P, os.path.join(SCRIPTS, f"run_{name}.py"), out, timeout=300)
        ranks = []
        for r in range(P):
            with np.load(out / f"{name}{r}.npz") as z:
                arrays = {k.replace("__", "/"): z[k] for k in z.files}
            with open(out / f"{name}{r}.json") as f:
                ranks.append((arrays, json.load(f)))
        _SCRIPT_RUNS[(name, P)] = (out, ranks)
    return _SCRIPT_RUNS[(name, P)]


def lrfree_runs(P, tmp_path_factory):
    return script_runs("lrfree", P, tmp_path_factory)


_LRFREE_REFS = {}


def lrfree_reference(name, P):
    if (name, P) not in _LRFREE_REFS:
        _LRFREE_REFS[(name, P)] = L.reference(L.scenarios()[name], P)
    return _LRFREE_REFS[(name, P)]


def _assert_same_state(sd, ref):
    """Bit for bit: every array and every scalar (d, sums, step counts)."""
    _compare_state(sd, ref, 0.0, exact=True)


@needs_mpi
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("name", sorted(L.scenarios()))
def test_lrfree_bit_identical_to_one_process(tmp_path_factory, name, P):
    """Prodigy, DoG, LDoG and D-Adaptation on P ranks (sharded and replicated,
    float64 and float32, params split across ranks and buckets, None grads)
    equal one process on the mean grads bit for bit: params, ``d`` after
    every step and the checkpoint's state (d, its sums and every array)."""
    out, ranks = lrfree_runs(P, tmp_path_factory)
    ref_params, ref_d, _, ref_end = lrfree_reference(name, P)
    for r, (arrays, info) in enumerate(ranks):
        got = _params(arrays, name)
        assert len(got) == len(ref_params)
        for i, (a, b) in enumerate(zip(got, ref_params)):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), \
                (r, i, S.rel_err(a, b))
        assert _bits(info["d"][name]) == _bits(ref_d), (r, info["d"][name][-1], ref_d[-1])
    _assert_same_state(lrfast.io.read(out / f"{name}.end.npz"), ref_end)


@needs_mpi
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("name", sorted(L.scenarios()))
def test_lrfree_checkpoint_resumes_exactly(tmp_path_factory, name, P):
    """The step-MID checkpoint is one process's state_dict bit for bit; loaded
    into a wrapper of the other mode (sharded <-> replicated), the run finishes
    on the reference's bits, and so does one process loading it."""
    out, ranks = lrfree_runs(P, tmp_path_factory)
    ref_params, ref_d, (ref_mid, ref_mid_params), _ = lrfree_reference(name, P)
    mid = lrfast.io.read(out / f"{name}.mid.npz")
    _assert_same_state(mid, ref_mid)
    for r, (arrays, info) in enumerate(ranks):
        for i, (a, b) in enumerate(zip(_params(arrays, f"{name}/resumed"), ref_params)):
            assert a.tobytes() == b.tobytes(), (r, i, S.rel_err(a, b))
        assert _bits(info["resumed_d"][name]) == _bits(ref_d[L.MID - 1:])
    # one process resumes the distributed checkpoint
    spec = L.scenarios()[name]
    groups = L.make_params(spec)
    params = L.flat(groups)
    for p, q in zip(params, ref_mid_params):
        p[...] = q
    opt = L.build(spec, groups)
    lrfast.load(opt, out / f"{name}.mid.npz")
    for t in range(L.MID, L.STEPS):
        opt.step(L.mean_grads(P, t, params))
    for a, b in zip(params, ref_params):
        assert a.tobytes() == b.tobytes()


@needs_mpi
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("mode", ["shard", "replicated"])
def test_lrfree_bad_input_raises_on_every_rank(tmp_path_factory, P, mode):
    """Prodigy's groups with different lrs (the reference refuses them) and a
    state_dict whose p0 has the wrong shape raise on every rank, before any
    write; the ranks step together afterwards."""
    for r, (_, info) in enumerate(lrfree_runs(P, tmp_path_factory)[1]):
        c = info["checks"]
        msg = c[f"prodigy_lrs_differ-{mode}"]
        assert "share one step size" in msg and "group 1" in msg, (r, msg)
        assert c[f"prodigy_lrs_differ-{mode}/unchanged"] is True
        msg = c[f"bad_p0-{mode}"]
        assert "p0" in msg and "(4999,)" in msg, (r, msg)
        assert c[f"bad_p0-{mode}/step_count"] == 2
        assert c[f"bad_p0-{mode}/in_sync"] is True


# ------------------------------------------- low-precision optimizer state
import _lowstate as LS  # noqa: E402

_LOWSTATE_REFS = {}


def lowstate_runs(P, tmp_path_factory):
    return script_runs("lowstate", P, tmp_path_factory)


def lowstate_reference(name, P, state_dtype=None, start=None):
    key = (name, P, state_dtype, None if start is None else id(start[0]))
    if key not in _LOWSTATE_REFS:
        _LOWSTATE_REFS[key] = LS.run(LS.scenarios()[name], P, LS.STEPS, state_dtype, start)
    return _LOWSTATE_REFS[key]


def _assert_params(got, ref, what):
    assert len(got) == len(ref), what
    for i, (a, b) in enumerate(zip(got, ref)):
        if a.dtype.kind == "V" and a.dtype.itemsize == 2:     # bfloat16 through np.savez
            a = a.view(b.dtype)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (what, i, S.rel_err(a, b))


lowstate_needs = pytest.mark.skipif(
    not _have_mpi() or __import__("importlib").util.find_spec("ml_dtypes") is None,
    reason="needs mpi4py, mpiexec and ml_dtypes")


@lowstate_needs
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("name", sorted(LS.scenarios()))
def test_low_precision_state_bit_identical_to_one_process(tmp_path_factory, name, P):
    """Adam, AdamW (amsgrad), SGD (Nesterov momentum) and Lion with int8 and
    bfloat16 state on P ranks, and bfloat16 or float16 params (with master
    weights or stochastic rounding), sharded (8-bit blocks never cut; a
    rank's piece of a tensor of 4096+ elements keeps 8-bit state, whatever
    its own size; a rank keeps the master copy of its pieces; a piece rounds
    with its whole tensor's random bits) and replicated, equal one process
    on the mean grads bit for bit:
    the params on every rank, and the final checkpoint (codes and
    ``<name>_absmax`` of whole tensors, bfloat16 moments, float32 state of
    the small tensors)."""
    out, ranks = lowstate_runs(P, tmp_path_factory)
    ref_params, _, ref_end = lowstate_reference(name, P)
    for r, (arrays, _) in enumerate(ranks):
        _assert_params(_params(arrays, name), ref_params, (r, name))
    end = lrfast.io.read(out / f"{name}.end.npz")
    _assert_same_state(end, ref_end)
    spec = LS.scenarios()[name]
    kinds = {e[k].dtype.name for e in end["state"].values() for k in e
             if isinstance(e[k], np.ndarray) and k not in ("master_param", k + "_absmax")
             and not k.endswith("_absmax")}
    assert kinds == {"int8": {"uint8", "float32"}, "bfloat16": {"bfloat16"},
                     "float32": {"float32"}}[spec["state_dtype"]], kinds
    assert spec.get("master", False) == all("master_param" in e
                                            for e in end["state"].values())


@lowstate_needs
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("name", sorted(LS.scenarios()))
def test_low_precision_checkpoint_resumes_exactly(tmp_path_factory, name, P):
    """The step-MID checkpoint is one process's state_dict bit for bit; loaded
    into a wrapper of the other mode (root 0 sends the shards), into one of
    the same mode (the full dict on every rank) and into one process, the run
    finishes on the reference's bits. Sharded, loading it into the other
    state dtype (int8 codes into bfloat16 pieces that start inside a block,
    bfloat16 into int8) and a float32 state_dict into int8 equal one process
    loading the same."""
    out, ranks = lowstate_runs(P, tmp_path_factory)
    spec = LS.scenarios()[name]
    ref_params, (ref_mid, ref_mid_params), _ = lowstate_reference(name, P)
    mid = lrfast.io.read(out / f"{name}.mid.npz")
    _assert_same_state(mid, ref_mid)
    for r, (arrays, _) in enumerate(ranks):
        for tag in ("other_mode", "same_mode"):
            _assert_params(_params(arrays, f"{name}/{tag}"), ref_params, (r, tag))
    groups = LS.make_params(spec)
    params = LS.flat(groups)
    for p, q in zip(params, ref_mid_params):
        p[...] = q
    opt = LS.build(spec, groups)
    lrfast.load(opt, out / f"{name}.mid.npz")
    for t in range(LS.MID, LS.STEPS):
        opt.step(LS.mean_grads(P, t, params))
    _assert_params(params, ref_params, "one process")
    if not spec["shard"] or spec["state_dtype"] == "float32":
        return
    other = {"int8": "bfloat16", "bfloat16": "int8"}[spec["state_dtype"]]
    want = LS.run(spec, P, LS.STEPS, other, (mid, ref_mid_params))[0]
    for r, (arrays, _) in enumerate(ranks):
        _assert_params(_params(arrays, f"{name}/other_dtype"), want, (r, "other_dtype"))
    if spec["opt"] == "Adam" and spec["state_dtype"] == "int8":
        f32 = LS.run(spec, P, LS.MID, "float32")[1]
        want = LS.run(spec, P, LS.STEPS, None, f32)[0]
        for r, (arrays, _) in enumerate(ranks):
            _assert_params(_params(arrays, f"{name}/from_float32"), want, (r, "from_float32"))


@lowstate_needs
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("mode", ["shard", "replicated"])
def test_low_precision_bad_input_raises_on_every_rank(tmp_path_factory, P, mode):
    """A checkpoint whose 8-bit state has one absmax block too few (the full
    dict on every rank, or sent from rank 1), or lacks its absmax, raises on
    every rank before any write; the ranks step together afterwards. So does
    a master copy of the wrong shape. Wrapping a stepped optimizer with
    8-bit state and master weights carries both over bit for bit. 16-bit
    params, master weights and stochastic rounding wrap in both modes; ranks
    with different state dtypes raise."""
    for r, (_, info) in enumerate(lowstate_runs(P, tmp_path_factory)[1]):
        c = info["checks"]
        for tag in ("bad_absmax", "bad_absmax_root"):
            msg = c[f"{tag}-{mode}"]
            assert "exp_avg_absmax" in msg and "19 blocks" in msg and "20 blocks" in msg, \
                (r, tag, msg)
        assert "lacks 'exp_avg_sq_absmax'" in c[f"no_absmax-{mode}"], r
        assert c[f"bad_absmax-{mode}/unchanged"] is True
        assert c[f"bad_absmax-{mode}/step_count"] == 3
        assert c[f"bad_absmax-{mode}/in_sync"] is True
        assert c[f"carry-{mode}"] is True, r
        assert c[f"carry_master-{mode}"] is True, r
        # codes, absmax and master copy: sharded, the ranks split them
        mem = [info["checks"][f"memory_master-{mode}"] for _, info in
               lowstate_runs(P, tmp_path_factory)[1]]
        full = 5000 * (1 + 1 + 4) + 2 * 20 * 4
        assert (sum(mem) if mode == "shard" else mem[r]) == full, (r, mem)
        for tag in ("bad_master", "bad_master_root"):
            msg = c[f"{tag}-{mode}"]
            assert msg.startswith("ValueError") and "'master_param'" in msg \
                and "(5000,)" in msg, (r, tag, msg)
        assert c[f"bad_master-{mode}/unchanged"] is True
        for tag in ("float16_params", "master_weights", "stochastic_rounding"):
            assert c[f"{tag}-{mode}"] == "no error", (r, tag)
        msg = c[f"dtypes_differ-{mode}"]
        assert "disagree" in msg and "state_dtype" in msg, (r, msg)


@needs_mpi
def test_sync_params_carries_master_weights(tmp_path):
    """sync_params broadcasts rank 0's params, and with master_weights their
    float32 master copies (from which a 16-bit param steps): ranks initialized
    apart then step as one process from rank 0's params, in both modes (the
    replicated wrapper used to step each rank from its own master)."""
    pytest.importorskip("ml_dtypes")
    script = tmp_path / "run_sync_master.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np, ml_dtypes, lrfast
        from mpi4py import MPI
        from lrfast.distributed import DistributedOptimizer
        BF16 = np.dtype(ml_dtypes.bfloat16)
        comm = MPI.COMM_WORLD
        rank = comm.Get_rank()
        def init(r):
            x = np.random.default_rng(100 + r).standard_normal((50, 100)).astype(np.float32)
            return np.asfortranarray(x.astype(BF16))
        g = np.asfortranarray(np.full((50, 100), 0.5, np.float32).astype(BF16))
        ref = init(0)
        o = lrfast.Adam([ref], lr=1e-2, master_weights=True)
        for _ in range(3):
            o.step([g])
        for shard in (False, True):
            p = init(rank)                   # ranks initialized apart
            d = DistributedOptimizer(lrfast.Adam([p], lr=1e-2, master_weights=True),
                                     shard_state=shard)
            for _ in range(3):
                d.step([g])
            ok = p.tobytes(order="A") == ref.tobytes(order="A")
            if not all(comm.allgather(ok)):
                if rank == 0:
                    print(f"shard_state={shard}: a rank differs from one process")
                sys.exit(1)
    """))
    mpirun(2, str(script))


@needs_mpi
def test_sharded_wrapper_releases_master_copies(tmp_path):
    """shard_state=True takes over the wrapped optimizer's state, its float32
    master copies and 8-bit absmax arrays included: the wrapped optimizer no
    longer holds them (ZeRO-1: a rank keeps the masters of its pieces only),
    and its master_params raises as its other state does (they went stale)."""
    pytest.importorskip("ml_dtypes")
    script = tmp_path / "run_release_master.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np, ml_dtypes, lrfast
        from lrfast.distributed import DistributedOptimizer
        BF16 = np.dtype(ml_dtypes.bfloat16)
        p = np.linspace(-1, 1, 10000, dtype=np.float32).astype(BF16)
        opt = lrfast.Adam([p], lr=1e-2, master_weights=True, state_dtype="int8")
        d = DistributedOptimizer(opt, shard_state=True)
        d.step([np.full(10000, 0.5, np.float32).astype(BF16)])
        held = [m for m in opt._lp.master if m is not None]
        held += [a for s in opt._lp.amax for a in s if a is not None]
        if held:
            print("the wrapped optimizer still holds", sum(a.nbytes for a in held), "bytes")
            sys.exit(1)
        try:
            opt.master_params
        except RuntimeError as e:
            assert "DistributedOptimizer" in str(e), e
        else:
            print("master_params did not raise")
            sys.exit(1)
    """))
    mpirun(2, str(script))
