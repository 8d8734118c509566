"""state_dict schema v1, exact resume, pickle/deepcopy, torch conversion, save/load."""
import copy
import pickle

import numpy as np
import pytest

import lrfast
from _cases import NAMES

from _cases import CASES, case_id
from conftest import bits_equal

SHAPES = [(6, 4), (9,), (2, 3, 2)]


def _grads(rng, params):
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def _opt(name, hp, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    return getattr(lrfast, name)(ps, **hp), ps


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_resume_is_exact(case, tmp_path):
    name, hp = case
    full, pf = _opt(name, hp)
    rng = np.random.default_rng(1)
    grads = [_grads(rng, pf) for _ in range(20)]
    for k, g in enumerate(grads):
        # a None grad mid-run makes per-param step counts differ
        full.step([None if (k == 3 and i == 1) else x for i, x in enumerate(g)])

    half, ph = _opt(name, hp)
    for k, g in enumerate(grads[:10]):
        half.step([None if (k == 3 and i == 1) else x for i, x in enumerate(g)])
    path = tmp_path / "ckpt.npz"
    lrfast.save(half, path)
    fresh, pn = _opt(name, hp)
    for a, b in zip(pn, ph):
        a[...] = b
    lrfast.load(fresh, path)
    assert fresh.step_count == 10
    for g in grads[10:]:
        fresh.step(g)
    for a, b in zip(pn, pf):
        assert bits_equal(a, b)
    assert fresh.step_count == full.step_count == 20


def test_state_dict_schema():
    opt, ps = _opt("Adam", dict(lr=1e-3, amsgrad=True))
    opt.step(_grads(np.random.default_rng(0), ps))
    sd = opt.state_dict()
    assert sd["format"] == "lrfast.optim/1" and sd["optimizer"] == "Adam"
    assert sd["step_count"] == 1 and sd["skipped_steps"] == 0
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"] == 1
    g = sd["param_groups"][0]
    assert g["params"] == [0, 1, 2] and g["betas"] == (0.9, 0.999) and g["lr"] == 1e-3
    # copies, not views
    sd["state"][0]["exp_avg"][...] = 123
    assert not (opt.state[0]["exp_avg"] == 123).any()


def test_state_dict_records_schedules_and_next_values():
    sched = lambda n: 0.1 / (1 + n)  # noqa: E731
    opt, ps = _opt("SGD", dict(lr=sched, momentum=0.9))
    for _ in range(3):
        opt.step(_grads(np.random.default_rng(0), ps))
    sd = opt.state_dict()
    assert sd["param_groups"][0]["lr"] == pytest.approx(0.1 / 4)
    assert "lr" in sd["param_groups"][0]["schedules"]
    assert opt.lr == pytest.approx(0.1 / 4)


def test_load_checks_before_changing_anything():
    opt, ps = _opt("Adam", dict(lr=1e-3))
    opt.step(_grads(np.random.default_rng(0), ps))
    before = opt.state_dict()
    other, _ = _opt("SGD", dict(lr=0.1))
    with pytest.raises(ValueError, match="optimizer"):
        opt.load_state_dict(other.state_dict())
    bad = copy.deepcopy(before)
    bad["state"][2]["exp_avg"] = np.zeros((5,))
    bad["step_count"] = 7
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    bad["state"][0]["exp_avg"] = bad["state"][0]["exp_avg"].astype(np.float32)
    with pytest.raises(ValueError, match="dtype"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    bad["format"] = "lrfast.optim/2"
    with pytest.raises(ValueError, match="format"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["step_count"] == before["step_count"]
    for i in before["state"]:
        for k, v in before["state"][i].items():
            assert bits_equal(v, after["state"][i][k]) if isinstance(v, np.ndarray) else \
                v == after["state"][i][k]


@pytest.mark.parametrize("case", CASES[::4], ids=case_id)
def test_pickle_and_deepcopy_continue_identically(case):
    name, hp = case
    opt, ps = _opt(name, hp)
    rng = np.random.default_rng(2)
    for _ in range(4):
        opt.step(_grads(rng, ps))
    for clone_fn in (lambda o: pickle.loads(pickle.dumps(o)), copy.deepcopy):
        clone = clone_fn(opt)
        cps = clone.params
        assert all(a is not b for a, b in zip(cps, ps))
        g = _grads(np.random.default_rng(3), ps)
        saved = [p.copy() for p in ps]
        opt.step(g)
        clone.step(g)
        for a, b in zip(ps, cps):
            assert bits_equal(a, b)
        for p, s in zip(ps, saved):   # rewind the original for the next clone
            p[...] = s
        opt2 = clone_fn(clone)
        assert opt2.step_count == clone.step_count


def test_deepcopy_with_model_shares_arrays():
    opt, ps = _opt("SGD", dict(lr=0.1, momentum=0.9))
    model_copy, opt_copy = copy.deepcopy((ps, opt))
    assert all(a is b for a, b in zip(model_copy, opt_copy.params))


def test_zero_state():
    opt, ps = _opt("Adagrad", dict(initial_accumulator_value=0.5))
    opt.step(_grads(np.random.default_rng(0), ps))
    opt.zero_state()
    assert opt.step_count == 0 and opt.state == {}
    fresh, _ = _opt("Adagrad", dict(initial_accumulator_value=0.5))
    assert np.all(opt._states[0][0] == 0.5)


@pytest.mark.parametrize("name", [n for n in NAMES if "torch" in lrfast.optim.TABLE[n].refs])
def test_torch_state_dict_round_trip(name):
    torch = pytest.importorskip("torch")
    hp = {"SGD": dict(lr=0.1, momentum=0.9), "RMSprop": dict(momentum=0.9, centered=True),
          "Adam": dict(amsgrad=True)}.get(name, {})
    opt, ps = _opt(name, hp)
    rng = np.random.default_rng(4)
    for _ in range(5):
        opt.step(_grads(rng, ps))
    tsd = lrfast.to_torch_state_dict(opt.state_dict())
    tsd_t = {"state": {i: {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                           for k, v in e.items()} for i, e in tsd["state"].items()},
             "param_groups": tsd["param_groups"]}
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        tparams = [torch.tensor(p.copy()) for p in ps]
        topt = getattr(torch.optim, name)(tparams, foreach=False, **hp)
        topt.load_state_dict(tsd_t)
        g = _grads(rng, ps)
        opt.step(g)
        for t, x in zip(tparams, g):
            t.grad = torch.tensor(x.copy())
        topt.step()
        for a, t in zip(ps, tparams):
            np.testing.assert_allclose(a, t.numpy(), rtol=1e-10, atol=1e-12)
        back = lrfast.from_torch_state_dict(topt.state_dict(), name, step_count=opt.step_count)
        clone, cps = _opt(name, hp)
        for a, t in zip(cps, tparams):
            a[...] = t.numpy()
        clone.load_state_dict(back)
        g = _grads(rng, ps)
        opt.step(g)
        clone.step(g)
        for a, b in zip(ps, cps):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    finally:
        torch.set_default_dtype(prev)


def test_save_is_atomic_and_load_rejects_garbage(tmp_path):
    opt, ps = _opt("Adam", dict(lr=0.01))
    opt.step(_grads(np.random.default_rng(0), ps))
    path = tmp_path / "opt.npz"
    lrfast.save(opt, path)
    assert [p.name for p in tmp_path.iterdir()] == ["opt.npz"]  # no temp file left
    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:100])
    before = opt.state_dict()
    with pytest.raises(ValueError, match="checkpoint"):
        lrfast.load(opt, bad)
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="lrfast"):
        lrfast.load(opt, tmp_path / "foreign.npz")
    assert opt.state_dict()["step_count"] == before["step_count"]
    assert bits_equal(opt.state[0]["exp_avg"], before["state"][0]["exp_avg"])


def _plateau_run(steps, save_at=None, tmp_path=None):
    """Adam whose lr is a ReduceOnPlateau factor on warmup->cosine, fed a metric."""
    from lrfast import schedules as S

    def build():
        rop = S.ReduceOnPlateau(1.0, factor=0.5, patience=2, min_lr=1e-5)
        lr = rop * S.CosineDecay(0.05, decay_steps=40, warmup_target=0.1, warmup_steps=5)
        rng = np.random.default_rng(0)
        ps = [rng.standard_normal(s) for s in SHAPES]
        return lrfast.Adam(ps, lr=lr, betas=(S.LinearWarmup(S.Constant(0.9), 0.5, 1.0, 10),
                                             0.999)), ps, rop

    opt, ps, rop = build()
    rng = np.random.default_rng(7)
    lrs = []
    for k in range(steps):
        if save_at is not None and k == save_at:
            lrfast.save(opt, tmp_path / "plateau.npz")
            opt, new_ps, rop = build()
            for a, b in zip(new_ps, ps):
                a[...] = b
            ps = new_ps
            lrfast.load(opt, tmp_path / "plateau.npz")
        lrs.append(opt.lr)
        opt.step(_grads(rng, ps))
        rop.step(1.0 if k < 10 else 2.0)   # the metric stops improving: lr drops
    return ps, lrs, opt


def test_plateau_schedule_resumes_exactly(tmp_path):
    full, lrs_full, opt = _plateau_run(30)
    resumed, lrs_res, opt2 = _plateau_run(30, save_at=17, tmp_path=tmp_path)
    assert lrs_full == lrs_res
    assert min(lrs_full[12:]) < 0.5 * max(lrs_full)     # the plateau factor did act
    for a, b in zip(full, resumed):
        assert bits_equal(a, b)
    sd = opt2.state_dict()["param_groups"][0]["schedules"]
    assert sd["lr"]["class"] == "Product" and "betas.0" in sd
