"""Hostile use of the optimizer layer: every case here crashed, hung or
silently changed something before (issue: robustness). Each asserts a clear
error and nothing changed, or the documented behaviour."""
import gc
import threading
import weakref

import numpy as np
import pytest

import lrfast
from lrfast import kernels as K

from _snap import assert_same, snapshot


def _adam(n=3, **kw):
    ps = [np.zeros(n, np.float32), np.zeros(n, np.float32)]
    return lrfast.Adam(ps, lr=0.1, **kw), ps


def _g(n=3):
    return [np.ones(n, np.float32), np.ones(n, np.float32)]


# ---- item 1: grads held for the whole call ---------------------------------------------
class _TempList(list):
    """__getitem__ returns a temporary array: a kernel that kept only its
    pointer would read freed memory."""

    def __getitem__(self, i):
        return np.ones(3, np.float32) * 2


def test_grads_are_snapshot_once_and_held():
    opt, ps = _adam()
    gs = _TempList(_g())
    assert opt.step(gs)
    # the snapshot iterates the list (its real items), never __getitem__
    ref, rps = _adam()
    ref.step(_g())
    for a, b in zip(ps, rps):
        np.testing.assert_array_equal(a, b)


def test_grads_replaced_by_another_thread_during_steps_are_safe():
    n = 200_000
    p = np.zeros(n, np.float32)
    opt = lrfast.SGD([p], lr=1e-6)
    grads = [np.ones(n, np.float32)]
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            grads[0] = None
            grads[0] = np.ones(n, np.float32)

    t = threading.Thread(target=flip)
    t.start()
    try:
        for _ in range(200):
            try:
                opt.step(grads)
            except ValueError:
                pass
    finally:
        stop.set()
        t.join()
    assert np.all(np.isfinite(p))


# ---- item 2: stale param geometry ------------------------------------------------------
@pytest.mark.parametrize("change", ["dtype", "resize", "setstate", "shape", "state_resize",
                                    "readonly"])
def test_param_changed_after_registration_is_refused(change):
    opt, ps = _adam(8)
    opt.step(_g(8))
    p = ps[0]
    if change == "dtype":
        p.dtype = np.int32
    elif change == "resize":
        p.resize((100,), refcheck=False)
    elif change == "setstate":
        p.__setstate__((1, (4,), np.dtype(np.float64), False, b"\0" * 32))
    elif change == "shape":
        p.shape = (2, 4)
    elif change == "state_resize":
        opt._states[0][0].resize((100,), refcheck=False)
    elif change == "readonly":
        p.flags.writeable = False
    before = snapshot(opt, ps[1:])
    with pytest.raises(ValueError, match="changed after it was registered"):
        opt.step(_g(8) if change not in ("dtype", "setstate") else _g(8))
    assert_same(snapshot(opt, ps[1:]), before)


# ---- item 4: re-entry from a schedule is an error, not a deadlock --------------------------
@pytest.mark.parametrize("call", ["state_dict", "step", "zero_state", "add_param_group",
                                  "load_state_dict"])
def test_schedule_calling_back_into_its_optimizer_raises(call):
    holder = {}

    def sched(n):
        opt = holder["opt"]
        if call == "step":
            opt.step(_g())
        elif call == "add_param_group":
            opt.add_param_group({"params": [np.zeros(2)]})
        elif call == "load_state_dict":
            opt.load_state_dict(holder["sd"])
        else:
            getattr(opt, call)()
        return 0.1

    ps = [np.zeros(3, np.float32), np.zeros(3, np.float32)]
    holder["sd"] = lrfast.Adam(ps, lr=0.1).state_dict()
    armed = []

    def guarded(n):
        return sched(n) if armed else 0.1
    holder["opt"] = opt = lrfast.Adam(ps, lr=guarded)
    armed.append(True)
    done = []
    t = threading.Thread(target=lambda: done.append(_try(opt.step, _g())))
    t.start()
    t.join(20)
    assert not t.is_alive(), "deadlock"
    assert isinstance(done[0], (RuntimeError, ValueError))
    assert "called from the closure, a schedule or a callback" in str(done[0])
    assert opt.step_count == 0


def _try(fn, *a):
    try:
        fn(*a)
    except Exception as e:      # noqa: BLE001 - the test inspects it
        return e
    return None


# ---- items 8, 9: param group mutations -----------------------------------------------------
def test_group_update_is_atomic():
    opt, ps = _adam()
    with pytest.raises(ValueError, match="eps"):
        opt.param_groups[0].update({"lr": 0.5, "eps": -1})
    assert opt.param_groups[0]["lr"] == 0.1 and opt.lr == 0.1


@pytest.mark.parametrize("op", ["ior", "setdefault_new", "pop", "del", "popitem", "clear",
                                "replace_group", "append_group", "params_append",
                                "params_setitem", "assign_param_groups"])
def test_every_group_mutation_is_validated_or_refused(op):
    opt, ps = _adam()
    pg = opt.param_groups[0]
    before = snapshot(opt, ps)
    sd = opt.state_dict()
    fns = {
        "ior": lambda: pg.__ior__({"eps": -1.0}),
        "setdefault_new": lambda: pg.setdefault("bogus", 1.0),
        "pop": lambda: pg.pop("lr"),
        "del": lambda: pg.__delitem__("lr"),
        "popitem": lambda: pg.popitem(),
        "clear": lambda: pg.clear(),
        "replace_group": lambda: opt.param_groups.__setitem__(0, {"params": ps, "lr": 1.0}),
        "append_group": lambda: opt.param_groups.append({"params": [np.zeros(2)]}),
        "params_append": lambda: pg["params"].append(np.zeros(3, np.float32)),
        "params_setitem": lambda: pg["params"].__setitem__(0, np.zeros(3, np.float32)),
        "assign_param_groups": lambda: setattr(opt, "param_groups", []),
    }
    with pytest.raises((TypeError, ValueError)):
        fns[op]()
    assert_same(snapshot(opt, ps), before)
    assert opt.state_dict()["param_groups"] == sd["param_groups"]
    assert opt.step(_g())


def test_valid_ior_and_setdefault_are_honoured_by_the_next_step():
    opt, ps = _adam()
    opt.param_groups[0] |= {"lr": 0.0}
    assert opt.param_groups[0].setdefault("lr", 5.0) == 0.0
    opt.step(_g())
    assert np.all(ps[0] == 0)


# ---- item 11: the functional layer validates as the classes do ----------------------------
@pytest.mark.parametrize("kw, exc", [
    (dict(mu_product=float("nan")), ValueError), (dict(mu_product=2.0), ValueError),
    (dict(decoupled_weight_decay="yes"), TypeError), (dict(step=2 ** 60), ValueError),
    (dict(step=10 ** 400), ValueError), (dict(lr=True), TypeError)])
def test_functional_nadam_rejects_like_the_class(kw, exc):
    p, g = np.zeros(4), np.ones(4)
    m, v = np.zeros(4), np.zeros(4)
    args = dict(step=1)
    args.update(kw)
    before = [p.copy(), m.copy(), v.copy()]
    with pytest.raises(exc):
        K.nadam_step(p, g, m, v, **args)
    for a, b in zip((p, m, v), before):
        assert np.array_equal(a, b)


def test_functional_flags_are_checked():
    p, g, b = np.zeros(4), np.ones(4), np.zeros(4)
    with pytest.raises(TypeError):
        K.sgd_step(p, g, b, lr=0.1, momentum=0.9, first_step="yes")
    with pytest.raises(TypeError):
        K.adam_step(p, g, np.zeros(4), np.zeros(4), step=1, decoupled="yes")
    assert np.all(p == 0)


# ---- item 12: NAdam mu_product that would divide by zero ----------------------------------
def test_nadam_mu_product_out_of_range_is_refused_at_load():
    p = np.zeros(3)
    opt = lrfast.NAdam([p])
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    bad = dict(sd, state={0: dict(sd["state"][0], mu_product=1.0 / 0.9)})
    with pytest.raises(ValueError, match="mu_product"):
        opt.load_state_dict(bad)
    opt.step([np.ones(3)])
    assert np.all(np.isfinite(p))


# ---- item 14: centered RMSprop stays finite where torch does ------------------------------
@pytest.mark.parametrize("dtype, big", [(np.float32, 1e30), (np.float64, 1e200)])
def test_centered_rmsprop_with_huge_grads_stays_finite(dtype, big):
    p = np.zeros(3, dtype)
    opt = lrfast.RMSprop([p], lr=0.01, centered=True)
    for _ in range(3):
        opt.step([np.full(3, big, dtype)])
    assert np.all(np.isfinite(p))
    torch = pytest.importorskip("torch")
    t = torch.zeros(3, dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
    topt = torch.optim.RMSprop([t], lr=0.01, centered=True, foreach=False)
    for _ in range(3):
        t.grad = torch.full((3,), big, dtype=t.dtype)
        topt.step()
    np.testing.assert_array_equal(p, t.detach().numpy())


# ---- item 15: no reference cycle ----------------------------------------------------------
def test_dropping_an_optimizer_frees_its_state_without_the_cycle_collector():
    gc.disable()
    try:
        opt, ps = _adam(1000)
        ref = weakref.ref(opt._states[0][0])
        del opt
        assert ref() is None
    finally:
        gc.enable()


# ---- item 17: clear errors of the right type ------------------------------------------------
def test_grad_overlapping_its_own_state_says_so():
    opt, ps = _adam()
    with pytest.raises(ValueError, match="its own optimizer state"):
        opt.step([opt._states[0][0], np.ones(3, np.float32)])


def test_hess_diag_errors_name_hess_diag():
    x = np.zeros(3)
    opt = lrfast.DiagonalNewton([x])
    with pytest.raises(TypeError, match="hess_diag"):
        opt.step([np.ones(3)], [np.ones(3, np.float32)])


def test_read_only_state_is_named_in_the_functional_layer():
    p, g = np.zeros(3), np.ones(3)
    m = np.zeros(3)
    m.flags.writeable = False
    with pytest.raises(ValueError, match="exp_avg.*read-only"):
        K.adam_step(p, g, m, np.zeros(3), step=1)


def test_masked_array_grads_are_refused():
    opt, ps = _adam()
    g = np.ma.masked_array(np.ones(3, np.float32), mask=[0, 1, 0])
    with pytest.raises(TypeError, match="masked"):
        opt.step([g, np.ones(3, np.float32)])
    assert np.all(ps[0] == 0)


def test_params_none_and_odd_state_keys_have_clear_messages():
    with pytest.raises(TypeError, match="params"):
        lrfast.Adam([{"params": None}])
    opt, ps = _adam()
    opt.step(_g())
    sd = opt.state_dict()
    sd["state"] = {"\u00b2": sd["state"][0]}
    with pytest.raises(ValueError, match="param indices"):
        opt.load_state_dict(sd)


def test_schedule_values_are_validated_like_static_ones():
    for bad in ("0.1", True, None):
        opt = lrfast.Adam([np.zeros(3, np.float32), np.zeros(3, np.float32)], lr=0.1)
        opt.param_groups[0]["lr"] = lambda n, b=bad: b if n > 0 else 0.1
        opt.step(_g())
        with pytest.raises(ValueError, match="schedule"):
            opt.step(_g())
