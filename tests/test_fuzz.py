"""Property-based tests (hypothesis), issue 7.

1. Random shapes (0-d, 0-size, 1-element, C and Fortran order), dtypes mixed
   per param, parameter groups with their own hyperparameters, step counts,
   None grads, clipping and thread counts: the optimizer equals the numpy
   twins (lrfast._reference) bit for bit, NaNs included.
2. Random malformed grads, hyperparameters and state_dicts never crash the
   interpreter: they raise TypeError/ValueError and change nothing (or, for a
   state_dict that happens to be valid, load).
"""
import copy
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lrfast
from lrfast import _reference as R

from _snap import assert_same, snapshot
from conftest import bits_equal

from _cases import NAMES
from lrfast.optim import TABLE
from lrfast.optim._table import REQUIRED
from lrfast.optim._rules import RULES
SETTINGS = dict(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

unit = st.floats(0.0, 1.0, allow_nan=False)
small = st.floats(0.0, 0.1, allow_nan=False)
beta = st.floats(0.0, 0.999, allow_nan=False)
eps = st.floats(1e-10, 1e-3, allow_nan=False)
flag = st.booleans()


_BY_CHECK = {"ge0": small, "gt0": eps, "unit": unit, "unit_open": beta, "real": unit,
             "bool": flag}
_PAIR = {"etas": st.tuples(st.floats(0.05, 0.95), st.floats(1.05, 3.0)),
         "step_sizes": st.tuples(st.floats(0.0, 1e-3), st.floats(1e-3, 10.0))}
_BY_NAME = {"lr": st.floats(0.0, 1.0, allow_nan=False),
            "momentum": st.sampled_from([0.0, 0.5, 0.9]) | unit,
            "momentum_decay": st.floats(0.0, 0.01)}


@st.composite
def hyperparams(draw, name):
    """A valid-range group of hyperparameters for ``name`` (some keys left at
    default), drawn from the table's ranges."""
    hp = {}
    for h in TABLE[name].hparams:
        if h.default is not REQUIRED and not draw(st.booleans()):
            continue
        if h.check in ("betas", "betas3"):
            hp[h.name] = tuple(draw(beta) for _ in h.default)
        elif h.check in _PAIR:
            hp[h.name] = draw(_PAIR[h.check])
        else:
            by_name = _BY_NAME.get(h.name) if h.check != "unit_open" else None
            hp[h.name] = draw(_BY_CHECK[h.check] if by_name is None else by_name)
    return hp


shape = st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple)


@st.composite
def problem(draw):
    name = draw(st.sampled_from(NAMES))
    n = draw(st.integers(1, 5))
    shapes = [draw(shape) for _ in range(n)]
    dtypes = [draw(st.sampled_from([np.float32, np.float64])) for _ in range(n)]
    orders = [draw(st.sampled_from("CF")) for _ in range(n)]
    cuts = sorted(draw(st.lists(st.integers(1, n - 1), max_size=2, unique=True))) if n > 1 else []
    bounds = [0] + cuts + [n]
    groups = [(list(range(a, b)), draw(hyperparams(name))) for a, b in zip(bounds, bounds[1:])]
    top = draw(hyperparams(name))
    for _, ghp in groups:    # cross-field rules (SGD's nesterov): turn the flags off
        try:
            RULES[name].check(_full(name, top, ghp), "")
        except ValueError:
            for h in TABLE[name].hparams:
                if h.check == "bool" and h.name != "maximize":
                    ghp[h.name] = False
    steps = draw(st.integers(1, 6))
    none = draw(st.sets(st.tuples(st.integers(0, steps - 1), st.integers(0, n - 1)),
                        max_size=4))
    clip = draw(st.none() | st.floats(0.1, 10.0))
    threads = draw(st.sampled_from([1, 2]))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    seed = draw(st.integers(0, 2 ** 16))
    return dict(name=name, shapes=shapes, dtypes=dtypes, orders=orders, groups=groups,
                top=top, steps=steps, none=none, clip=clip, threads=threads, scale=scale,
                seed=seed)


def _full(name, top, ghp):
    d = dict(getattr(lrfast, name).spec.defaults)
    d.update(top)
    d.update(ghp)
    return d


@settings(max_examples=150, **SETTINGS)
@given(problem())
def test_random_problems_equal_numpy_twins(pb):
    name = pb["name"]
    rng = np.random.default_rng(pb["seed"])
    params = [np.asarray(rng.standard_normal(s), dtype=d, order=o)
              for s, d, o in zip(pb["shapes"], pb["dtypes"], pb["orders"])]
    ref = [p.copy(order="K") for p in params]
    opt = getattr(lrfast, name)([{"params": [params[i] for i in idx], **ghp}
                                 for idx, ghp in pb["groups"]],
                                max_grad_norm=pb["clip"], **pb["top"])
    hps = {i: _full(name, pb["top"], ghp) for idx, ghp in pb["groups"] for i in idx}
    states = [R.init_state(name, p, **hps[i]) for i, p in enumerate(ref)]
    tsteps = [0] * len(ref)
    old = lrfast.get_parallel_threshold()
    lrfast.set_parallel_threshold(0 if pb["threads"] > 1 else old)
    try:
        with lrfast.threads(pb["threads"]), np.errstate(all="ignore"):
            for k in range(pb["steps"]):
                gs = [None if (k, i) in pb["none"] else
                      np.asarray(pb["scale"] * rng.standard_normal(p.shape), dtype=p.dtype,
                                 order="F" if not p.flags.c_contiguous else "C")
                      for i, p in enumerate(params)]
                keep = [None if g is None else g.copy(order="K") for g in gs]
                assert opt.step(gs) is True
                coef = 1.0
                if pb["clip"] is not None:
                    norm = opt.last_grad_norm
                    exact = R.global_norm(gs)
                    assert abs(norm - exact) <= 1e-12 * exact or (norm == exact == 0.0)
                    coef = R.clip_coef(norm, pb["clip"])
                for i, (p, g) in enumerate(zip(ref, gs)):
                    if g is None:
                        continue
                    tsteps[i] += 1
                    R.STEPPERS[name](p, g, states[i], step=tsteps[i], grad_scale=coef,
                                     **hps[i])
                for g, kk in zip(gs, keep):
                    assert g is None or bits_equal(g, kk)
    finally:
        lrfast.set_parallel_threshold(old)
    for i, (a, b) in enumerate(zip(params, ref)):
        assert bits_equal(a, b), (i, a, b)
    assert opt.step_count == pb["steps"]
    for i, e in opt.state.items():
        if "step" in e:
            assert e["step"] == tsteps[i]


@pytest.mark.parametrize("name", ["Adam", "NAdam", "Adagrad", "RAdam"])
def test_per_param_steps_after_a_partial_step_then_full_steps(name):
    # Found by the property above: after a None grad made one group's step
    # counts differ, a full step updated the per-param counts but left the
    # other group's (uniform) count stale, so its bias corrections froze.
    ps = [np.ones(3), np.ones(2), np.ones(4)]
    ref = [p.copy() for p in ps]
    opt = getattr(lrfast, name)([{"params": ps[:2]}, {"params": ps[2:]}], lr=0.1)
    hp = dict(getattr(lrfast, name).spec.defaults, lr=0.1)
    states = [R.init_state(name, p, **hp) for p in ref]
    steps = [0, 0, 0]
    rng = np.random.default_rng(0)
    for k in range(5):
        gs = [rng.standard_normal(p.shape) for p in ps]
        if k == 0:
            gs[0] = None
        opt.step(gs)
        for i, (p, g) in enumerate(zip(ref, gs)):
            if g is not None:
                steps[i] += 1
                R.STEPPERS[name](p, g, states[i], step=steps[i], **hp)
    assert [opt.state[i]["step"] for i in range(3)] == steps == [4, 5, 5]
    for a, b in zip(ps, ref):
        assert bits_equal(a, b)


# ---------------------------------------------------------------------------
# malformed inputs
# ---------------------------------------------------------------------------
def _model(name, seed):
    rng = np.random.default_rng(seed)
    buf = rng.standard_normal(40)
    params = [rng.standard_normal((3, 4)).astype(np.float32),
              np.asfortranarray(rng.standard_normal((2, 3))),
              buf[5:12],
              rng.standard_normal(1).astype(np.float32)]
    hp = {"SGD": dict(lr=0.1, momentum=0.9), "RMSprop": dict(centered=True, momentum=0.5),
          "Adam": dict(amsgrad=True), "LARS": dict(lr=0.1)}.get(name, {})
    opt = getattr(lrfast, name)([{"params": params[:2]}, {"params": params[2:]}], **hp)
    return opt, params, buf


def _grads(params, rng):
    return [np.asarray(rng.standard_normal(p.shape), dtype=p.dtype,
                       order="F" if not p.flags.c_contiguous else "C") for p in params]


def _misaligned(like):
    raw = bytearray(like.nbytes + 1)
    return np.frombuffer(raw, dtype=like.dtype, offset=1, count=like.size).reshape(like.shape)


FAULTS = [
    lambda g, p, o, b, i: g.astype(np.float16),
    lambda g, p, o, b, i: g.astype(np.int32),
    lambda g, p, o, b, i: g.astype(np.complex64),
    lambda g, p, o, b, i: g.astype(bool),
    lambda g, p, o, b, i: g.astype(np.float64 if g.dtype == np.float32 else np.float32),
    lambda g, p, o, b, i: g.reshape(-1)[:-1].copy(),
    lambda g, p, o, b, i: np.zeros(g.shape + (1,), g.dtype),
    lambda g, p, o, b, i: np.zeros((), g.dtype),
    # strided (a 1-element array is contiguous whatever its strides: use a bad dtype)
    lambda g, p, o, b, i: g.astype(np.float16) if g.size <= 1 else
    np.repeat(g, 2)[::2] if g.ndim == 1 else np.zeros(g.shape[::-1] + (2,), g.dtype)[..., 0].T,
    lambda g, p, o, b, i: g.astype(np.int8) if g.size <= 1 else
    np.repeat(g, 2)[1::2] if g.ndim == 1 else                              # other layout
    (np.asfortranarray(g) if p[i].flags.c_contiguous else np.ascontiguousarray(g)),
    lambda g, p, o, b, i: _misaligned(g),
    lambda g, p, o, b, i: p[i],                                            # the param
    lambda g, p, o, b, i: b[9:9 + g.size] if i == 2 else p[i],             # overlaps it
    lambda g, p, o, b, i: next((v for v in o.state.get(i, {}).values()
                                if isinstance(v, np.ndarray)), p[i]),      # its state
    lambda g, p, o, b, i: g.tolist(),
    lambda g, p, o, b, i: float(g.reshape(-1)[0]),
    lambda g, p, o, b, i: "grad",
    lambda g, p, o, b, i: {"grad": g},
]
CONTAINER_FAULTS = [
    lambda gs: gs[:-1], lambda gs: gs + [gs[0]], lambda gs: [], lambda gs: None,
    lambda gs: (x for x in gs), lambda gs: dict(enumerate(gs)), lambda gs: np.stack([1, 2]),
    lambda gs: "abcd", lambda gs: 4,
]


@settings(max_examples=200, **SETTINGS)
@given(name=st.sampled_from(NAMES), seed=st.integers(0, 1000),
       faults=st.lists(st.tuples(st.integers(0, 3), st.integers(0, len(FAULTS) - 1)),
                       min_size=1, max_size=3),
       container=st.none() | st.integers(0, len(CONTAINER_FAULTS) - 1),
       none_at=st.sets(st.integers(0, 3), max_size=2))
def test_malformed_grads_raise_and_change_nothing(name, seed, faults, container, none_at):
    opt, params, buf = _model(name, seed)
    rng = np.random.default_rng(seed)
    opt.step(_grads(params, rng))
    gs = _grads(params, rng)
    gs = [None if i in none_at else g for i, g in enumerate(gs)]
    bad = list(gs)
    for i, f in faults:
        base = gs[i] if gs[i] is not None else _grads(params, rng)[i]
        bad[i] = FAULTS[f](base, params, opt, buf, i)
    if container is not None:
        bad = CONTAINER_FAULTS[container](bad)
    before = snapshot(opt, [g for g in gs if g is not None] + [buf])
    with pytest.raises((TypeError, ValueError)):
        opt.step(bad)
    assert_same(before, snapshot(opt, [g for g in gs if g is not None] + [buf]))
    assert opt.step(_grads(params, rng))      # still usable


BAD_NUMBERS = [float("nan"), float("inf"), -float("inf"), "x", None, [1.0], 1j, 10 ** 400,
               True, (0.1,), np.array([0.1, 0.2]), object()]
BAD_FLAGS = ["x", 1, None, 1.0, float("nan"), [True]]


@settings(max_examples=200, **SETTINGS)
@given(name=st.sampled_from(NAMES), data=st.data())
def test_malformed_hyperparameters_raise_and_change_nothing(name, data):
    opt, params, buf = _model(name, 0)
    opt.step(_grads(params, np.random.default_rng(0)))
    gi = data.draw(st.integers(0, 1))
    key = data.draw(st.sampled_from(sorted(getattr(lrfast, name).spec.defaults)))
    if {h.name: h.check for h in type(opt).spec.hparams}[key] == "bool":
        value = data.draw(st.sampled_from(BAD_FLAGS))
    elif key == "betas":
        value = data.draw(st.sampled_from(BAD_NUMBERS + [(0.9, v) for v in BAD_NUMBERS]
                                          + [(1.0, 0.9), (0.9, -0.1)]))
    else:
        pool = BAD_NUMBERS + ([] if key == "dampening" else [-1.0, -1e-300])
        value = data.draw(st.sampled_from(pool))
    old = opt.param_groups[gi][key]
    before = snapshot(opt, [buf])
    with pytest.raises((TypeError, ValueError)):
        opt.param_groups[gi][key] = value
    assert_same(before, snapshot(opt, [buf]))
    assert opt.param_groups[gi][key] is old
    # the same value at construction names the group and the key
    msg_key = "beta" if key == "betas" else key
    with pytest.raises((TypeError, ValueError), match=f"group 1.*{msg_key}"):
        getattr(lrfast, name)([{"params": [np.zeros(2)]}, {"params": [np.zeros(3)], key: value}],
                              lr=0.1)


def _paths(obj, prefix=()):
    """Every (path) into a nested dict/list/tuple state_dict."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _replace(obj, path, value):
    if not path:
        return value
    k = path[0]
    if isinstance(obj, tuple):
        lst = list(obj)
        lst[k] = _replace(lst[k], path[1:], value)
        return tuple(lst)
    obj = copy.copy(obj)
    obj[k] = _replace(obj[k], path[1:], value)
    return obj


REPLACEMENTS = BAD_NUMBERS + [-1, 0, 1, 2.5, "Adam", "lrfast.optim/1", {}, [], (), {"x": 1},
                              np.zeros(3), np.zeros((3, 4), np.float32), np.zeros((2, 3)),
                              np.zeros(1, np.int64), np.array(1.0), "DELETE"]


@settings(max_examples=300, **SETTINGS)
@given(name=st.sampled_from(NAMES), data=st.data())
def test_malformed_state_dicts_are_atomic(name, data):
    """Any single replacement (or deletion) anywhere in a state_dict either
    loads or raises TypeError/ValueError leaving everything unchanged."""
    src, sparams, _ = _model(name, 1)
    for k in range(3):
        src.step(_grads(sparams, np.random.default_rng(k)))
    sd = src.state_dict()
    opt, params, buf = _model(name, 0)
    opt.step(_grads(params, np.random.default_rng(9)))
    n_edits = data.draw(st.integers(1, 3))
    bad = sd
    for _ in range(n_edits):
        path = data.draw(st.sampled_from(_paths(bad)))
        value = data.draw(st.sampled_from(REPLACEMENTS))
        if isinstance(value, str) and value == "DELETE":
            if not path or not isinstance(_get(bad, path[:-1]), dict):
                continue
            parent = copy.copy(_get(bad, path[:-1]))
            del parent[path[-1]]
            bad = _replace(bad, path[:-1], parent)
        else:
            bad = _replace(bad, path, value)
    before = snapshot(opt, [buf])
    try:
        opt.load_state_dict(bad)
    except (TypeError, ValueError):
        assert_same(before, snapshot(opt, [buf]))
    # loaded or not, the optimizer still steps (no NULL state, no bad row)
    with np.errstate(all="ignore"):
        assert opt.step(_grads(params, np.random.default_rng(3))) in (True, False)


def _get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


@settings(max_examples=100, **SETTINGS)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(0, 5), dtype=st.sampled_from(
    [np.float32, np.float64]), threads=st.sampled_from([1, 2]))
def test_grad_norm_matches_fsum(seed, n, dtype, threads):
    rng = np.random.default_rng(seed)
    gs = [(rng.standard_normal(int(rng.integers(0, 9000))) * 10.0 ** rng.uniform(-5, 5))
          .astype(dtype) for _ in range(n)]
    old = lrfast.get_parallel_threshold()
    lrfast.set_parallel_threshold(0)
    try:
        with lrfast.threads(threads):
            norm, finite = lrfast.grad_norm(gs)
    finally:
        lrfast.set_parallel_threshold(old)
    exact = R.global_norm(gs)
    assert finite and (abs(norm - exact) <= 1e-12 * exact or norm == exact == 0.0)
    assert math.isfinite(norm)
