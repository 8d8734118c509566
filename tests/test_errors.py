"""Bad input gets a clear error, and nothing changes (SPEC.md, "Errors").

Every rejected call is checked three ways: the exception type, a message that
names the group / parameter index and the problem, and a snapshot (bytes of
params, state arrays, grads; step counts; hyperparameters) taken before the
call that must equal one taken after. Where an optimizer survives the
rejected call, a later valid step must equal the same step on an identical
optimizer that never saw the bad input (nothing hidden changed either).
"""
import copy
import re

import numpy as np
import pytest

import lrfast
from lrfast import kernels as K

from _snap import assert_same, snapshot
from conftest import bits_equal

from _cases import NAMES, bad_hyperparams, rich_case
from lrfast.optim import TABLE

# Options that allocate every state array each optimizer has.
FULL = {name: rich_case(name) for name in NAMES}

N_BAD = {"count": 0}       # distinct bad inputs exercised (reported by test_zz_count)


def model(seed=0):
    """4 params in 2 groups: W (3,4) f32, b (4,) f32 | V (2,3) f64 Fortran, c (5,)
    f64 a view into a larger buffer (so a grad can overlap it partially)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    V = np.asfortranarray(rng.standard_normal((2, 3)))
    buf = rng.standard_normal(10)
    c = buf[2:7]
    return [W, b, V, c], buf


def grads_for(params, rng):
    return [np.asarray(rng.standard_normal(p.shape), dtype=p.dtype,
                       order="F" if not p.flags.c_contiguous else "C") for p in params]


# group 1 differs from group 0 (weight decay, or lr for an optimizer without it)
GROUP1 = {name: {"weight_decay": 0.01} if "weight_decay" in TABLE[name].defaults
          else {"lr": 0.02} for name in NAMES}


def make_opt(name, seed=0, steps=2, **extra):
    params, buf = model(seed)
    hp = {**FULL[name], **extra}
    opt = getattr(lrfast, name)([{"params": params[:2]}, {"params": params[2:], **GROUP1[name]}],
                                **hp)
    rng = np.random.default_rng(seed + 100)
    for _ in range(steps):
        assert opt.step(grads_for(params, rng))
    return opt, params, buf


def rejects(exc, patterns, fn, opt=None, arrays=(), hyper=True):
    """Call fn; assert it raises exc with every regex of patterns in the
    message, and that the snapshot of opt and arrays is unchanged."""
    N_BAD["count"] += 1
    before = snapshot(opt, arrays) if hyper else _light(opt, arrays)
    with pytest.raises(exc) as ei:
        fn()
    msg = str(ei.value)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in {msg!r}"
    after = snapshot(opt, arrays) if hyper else _light(opt, arrays)
    assert_same(before, after)
    return msg


def _light(opt, arrays):
    # snapshot without state_dict()/hyperparams (which evaluate schedules)
    s = {"arrays": [None if a is None else a.tobytes(order="A") for a in arrays]}
    if opt is not None:
        s["params"] = [p.tobytes(order="A") for p in opt.params]
        s["state"] = {i: {k: (v.tobytes() if isinstance(v, np.ndarray) else v)
                          for k, v in e.items()} for i, e in opt.state.items()}
        s["counts"] = (opt.step_count, opt.skipped_steps)
    return s


def assert_still_equal_to_clone(opt, params, name, seed=0, steps=2, **extra):
    """A valid step after the rejected call equals one on an untouched twin."""
    twin, tparams, _ = make_opt(name, seed, steps, **extra)
    rng = np.random.default_rng(7)
    g = grads_for(params, rng)
    assert opt.step(g) and twin.step(g)
    for a, b in zip(params, tparams):
        assert bits_equal(a, b)
    assert opt.step_count == twin.step_count
    sa, sb = opt.state, twin.state
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            if isinstance(sa[i][k], np.ndarray):
                assert bits_equal(sa[i][k], sb[i][k]), (i, k)
            else:
                assert sa[i][k] == sb[i][k], (i, k)


# ---------------------------------------------------------------------------
# step(grads): count, container, type, shape, dtype, layout, alignment, overlap
# ---------------------------------------------------------------------------
def _misaligned(n, dtype=np.float64):
    raw = bytearray(n * np.dtype(dtype).itemsize + 1)
    a = np.frombuffer(raw, dtype=dtype, offset=1, count=n)
    assert not a.flags.aligned
    return a


class _ArrayLike:
    def __init__(self, a):
        self.__array_interface__ = a.__array_interface__


def _state_array(opt, i):
    for k, v in opt.state[i].items():
        if isinstance(v, np.ndarray):
            return v
    return None


GRAD_CASES = {
    # id: (make bad grads from (grads, params, buf, opt), exception, message patterns)
    "too_few": (lambda g, p, b, o: g[:3], ValueError, [r"expected 4 grads", r"got 3"]),
    "too_many": (lambda g, p, b, o: g + [g[0]], ValueError, [r"expected 4 grads", r"got 5"]),
    "empty_list": (lambda g, p, b, o: [], ValueError, [r"expected 4 grads"]),
    "generator": (lambda g, p, b, o: (x for x in g), TypeError, [r"list or tuple", "generator"]),
    "object_ndarray": (lambda g, p, b, o: np.array(g + [None], dtype=object)[:4], TypeError,
                       [r"list or tuple", "ndarray"]),
    "dict": (lambda g, p, b, o: dict(enumerate(g)), TypeError, [r"list or tuple", "dict"]),
    "none_container": (lambda g, p, b, o: None, TypeError, [r"list or tuple"]),
    "string": (lambda g, p, b, o: "abcd", TypeError, [r"list or tuple", "str"]),
    "nested_list_grad": (lambda g, p, b, o: g[:2] + [g[2].tolist(), g[3]], TypeError,
                         [r"group 1, param 2", r"ndarray", r"list"]),
    "float_grad": (lambda g, p, b, o: [g[0], 1.0] + g[2:], TypeError,
                   [r"group 0, param 1", r"ndarray", r"float"]),
    "numpy_scalar_grad": (lambda g, p, b, o: [g[0], np.float32(1)] + g[2:], TypeError,
                          [r"group 0, param 1", r"ndarray"]),
    "array_interface_grad": (lambda g, p, b, o: g[:3] + [_ArrayLike(g[3])], TypeError,
                             [r"group 1, param 3", r"ndarray"]),
    "shape_transposed": (lambda g, p, b, o: [g[0].T.copy()] + g[1:], ValueError,
                         [r"group 0, param 0", r"shape \(4, 3\) != param shape \(3, 4\)"]),
    "shape_flat": (lambda g, p, b, o: [g[0].ravel()] + g[1:], ValueError,
                   [r"group 0, param 0", r"shape"]),
    "shape_extra_dim": (lambda g, p, b, o: [g[0], g[1][None]] + g[2:], ValueError,
                        [r"group 0, param 1", r"shape"]),
    "shape_0d": (lambda g, p, b, o: g[:3] + [np.array(1.0)], ValueError,
                 [r"group 1, param 3", r"shape"]),
    "shape_short": (lambda g, p, b, o: g[:3] + [g[3][:4].copy()], ValueError,
                    [r"group 1, param 3", r"shape"]),
    "dtype_f32_for_f64": (lambda g, p, b, o: g[:2] + [np.asfortranarray(g[2], np.float32), g[3]],
                          TypeError, [r"group 1, param 2", r"dtype float32 != param dtype float64"]),
    "dtype_f64_for_f32": (lambda g, p, b, o: [g[0].astype(np.float64)] + g[1:], TypeError,
                          [r"group 0, param 0", r"dtype"]),
    "dtype_float16": (lambda g, p, b, o: [g[0].astype(np.float16)] + g[1:], TypeError,
                      [r"group 0, param 0", r"float16"]),
    "dtype_longdouble": (lambda g, p, b, o: g[:3] + [g[3].astype(np.longdouble)], TypeError,
                         [r"group 1, param 3", r"dtype"]),
    "dtype_int64": (lambda g, p, b, o: g[:3] + [g[3].astype(np.int64)], TypeError,
                    [r"group 1, param 3", r"int64"]),
    "dtype_int32": (lambda g, p, b, o: [g[0].astype(np.int32)] + g[1:], TypeError,
                    [r"group 0, param 0", r"int32"]),
    "dtype_bool": (lambda g, p, b, o: [g[0], g[1] > 0] + g[2:], TypeError,
                   [r"group 0, param 1", r"bool"]),
    "dtype_complex": (lambda g, p, b, o: g[:3] + [g[3].astype(np.complex128)], TypeError,
                      [r"group 1, param 3", r"complex128"]),
    "dtype_object": (lambda g, p, b, o: g[:3] + [g[3].astype(object)], TypeError,
                     [r"group 1, param 3", r"object"]),
    "byteswapped": (lambda g, p, b, o: g[:3] + [g[3].astype(">f8")], TypeError,
                    [r"group 1, param 3", r"byte order|dtype"]),
    "non_contiguous": (lambda g, p, b, o: [np.zeros((3, 8), np.float32)[:, ::2]] + g[1:],
                       ValueError, [r"group 0, param 0", r"layout"]),
    "strided_1d": (lambda g, p, b, o: [g[0], np.zeros(8, np.float32)[::2]] + g[2:],
                   ValueError, [r"group 0, param 1", r"layout"]),
    "c_order_for_fortran_param": (lambda g, p, b, o: g[:2] + [np.ascontiguousarray(g[2]), g[3]],
                                  ValueError, [r"group 1, param 2", r"layout", r"F-contiguous",
                                               r"np\.asfortranarray\("]),
    "fortran_for_c_param": (lambda g, p, b, o: [np.asfortranarray(g[0])] + g[1:], ValueError,
                            [r"group 0, param 0", r"layout", r"C-contiguous",
                             r"np\.ascontiguousarray\("]),
    "misaligned": (lambda g, p, b, o: g[:3] + [_misaligned(5)], ValueError,
                   [r"group 1, param 3", r"aligned"]),
    "grad_is_param": (lambda g, p, b, o: g[:3] + [p[3]], ValueError,
                      [r"group 1, param 3", r"overlaps its own param"]),
    "grad_overlaps_own_param": (lambda g, p, b, o: g[:3] + [b[4:9]], ValueError,
                                [r"group 1, param 3", r"overlaps its own param"]),
    "grad_is_view_of_other_param": (lambda g, p, b, o: [g[0], p[0].reshape(-1)[4:8]] + g[2:],
                                    ValueError, [r"group 0, param 1", r"overlaps",
                                                 r"group 0, param 0"]),
    "grad_overlaps_state": (lambda g, p, b, o: [g[0], _state_array(o, 1)] + g[2:], ValueError,
                            [r"group 0, param 1", r"overlaps", r"optimizer state|param"]),
}


@pytest.mark.parametrize("case", sorted(GRAD_CASES))
@pytest.mark.parametrize("name", NAMES)
def test_bad_grads_rejected_and_nothing_changes(name, case):
    make_bad, exc, patterns = GRAD_CASES[case]
    opt, params, buf = make_opt(name)
    grads = grads_for(params, np.random.default_rng(3))
    bad = make_bad(grads, params, buf, opt)
    keep = [g for g in grads]
    rejects(exc, patterns, lambda: opt.step(bad), opt, arrays=keep + [buf])
    assert_still_equal_to_clone(opt, params, name)


@pytest.mark.parametrize("name", NAMES)
def test_read_only_grads_accepted_and_untouched(name):
    opt, params, _ = make_opt(name)
    grads = grads_for(params, np.random.default_rng(3))
    keep = [g.copy(order="K") for g in grads]
    for g in grads:
        g.flags.writeable = False
    assert opt.step(grads)
    for g, k in zip(grads, keep):
        assert bits_equal(g, k)


def test_grad_may_be_shared_between_params_and_overlap_other_grads():
    # grads are read-only inputs: two params may receive the same grad array
    a, b = np.ones(4), np.ones(4)
    opt = lrfast.SGD([a, b], lr=0.5)
    g = np.arange(4.0)
    opt.step([g, g])
    assert bits_equal(a, b) and bits_equal(g, np.arange(4.0))


# ---------------------------------------------------------------------------
# construction: params
# ---------------------------------------------------------------------------
def _ro(a):
    a.flags.writeable = False
    return a


def _param_cases():
    f = lambda: np.ones(4, np.float32)  # noqa: E731
    buf = np.zeros(10)
    W = np.zeros((3, 4))
    shared = np.zeros(3)
    return {
        "single_ndarray": (lambda: np.ones(3), TypeError, [r"list", r"single ndarray"]),
        "int": (lambda: 5, TypeError, [r"list of arrays"]),
        "none": (lambda: None, TypeError, [r"list of arrays"]),
        "empty": (lambda: [], ValueError, [r"empty"]),
        "nested_list": (lambda: [[1.0, 2.0]], TypeError, [r"group 0, param 0", r"ndarray"]),
        "float_param": (lambda: [f(), 3.0], TypeError, [r"group 0, param 1", r"ndarray"]),
        "string_param": (lambda: [f(), "w"], TypeError, [r"group 0, param 1", r"ndarray"]),
        "mixed_dicts_arrays": (lambda: [f(), {"params": [f()]}], TypeError, [r"all dicts"]),
        "group_without_params": (lambda: [{"lr": 0.1}], TypeError, [r"group 0", r"'params'"]),
        "unknown_key_in_group_1": (lambda: [{"params": [f()]}, {"params": [f()], "bogus": 1}],
                                  ValueError, [r"group 1", r"unknown", r"bogus"]),
        **{f"dtype_{d}": (lambda d=d: [f(), np.ones(4, d)], TypeError,
                          [r"group 0, param 1", r"dtype", np.dtype(d).name])
           # (float16 and bfloat16 params are valid here: tests/test_lowp.py)
           for d in ["int32", "int64", "uint8", "bool", "longdouble", "complex64",
                     "complex128", "object"]},
        "byteswapped": (lambda: [f(), np.ones(4, ">f4")], TypeError,
                        [r"group 0, param 1", r"byte order"]),
        "read_only": (lambda: [f(), _ro(np.ones(4))], ValueError,
                      [r"group 0, param 1", r"read-only"]),
        "non_contiguous": (lambda: [f(), np.ones((4, 4))[:, ::2]], ValueError,
                           [r"group 0, param 1", r"contiguous"]),
        "misaligned": (lambda: [f(), _misaligned(4)], ValueError,
                       [r"group 0, param 1", r"aligned"]),
        "same_array_twice": (lambda: [shared, f(), shared], ValueError,
                             [r"group 0, param 2", r"overlaps", r"group 0, param 0"]),
        "overlapping_views": (lambda: [buf[0:5], buf[3:8]], ValueError,
                              [r"param 1", r"overlaps", r"param 0"]),
        "row_of_other_param": (lambda: [W, W[1]], ValueError, [r"param 1", r"overlaps"]),
        "same_array_in_two_groups": (lambda: [{"params": [shared]}, {"params": [f(), shared]}],
                                     ValueError, [r"group 1, param 2", r"overlaps",
                                                  r"group 0, param 0"]),
        "torch_like_object": (lambda: [f(), _ArrayLike(np.ones(3))], TypeError,
                              [r"group 0, param 1", r"ndarray"]),
    }


PARAM_CASES = _param_cases()


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop"])
def test_bad_params_rejected_and_untouched(name, case):
    make_params, exc, patterns = _param_cases()[case]
    params = make_params()
    arrays = []
    if isinstance(params, list):
        for x in params:
            for a in (x.get("params", []) if isinstance(x, dict) else [x]):
                if isinstance(a, np.ndarray):
                    arrays.append(a)
    rejects(exc, patterns, lambda: getattr(lrfast, name)(params, **FULL[name]), arrays=arrays)


def test_zero_d_and_empty_params_are_accepted():
    a = np.array(1.0, np.float32)
    z = np.zeros((0, 3))
    opt = lrfast.SGD([a, z, z[:, :0]], lr=0.1)   # 0-size arrays may even share memory
    assert opt.step([np.array(1.0, np.float32), np.zeros((0, 3)), np.zeros((0, 0))])
    assert a == np.float32(1.0) - np.float32(0.1)


# ---------------------------------------------------------------------------
# hyperparameters: constructor, param_groups assignment, schedules
# ---------------------------------------------------------------------------
HP_CASES = [(name, k, v, e) for name in NAMES for (k, v, e) in bad_hyperparams(name)]


def _hp_id(c):
    name, k, v, e = c
    return f"{name}-{k}={v!r}"[:60]


def _key_pattern(k):
    return r"beta" if k == "betas" else re.escape(k)


@pytest.mark.parametrize("case", HP_CASES, ids=_hp_id)
def test_bad_hyperparameter_at_construction(case):
    name, key, value, exc = case
    params, buf = model()
    groups = [{"params": params[:2]}, {"params": params[2:], key: value}]
    rejects(exc, [r"group 1", _key_pattern(key)],
            lambda: getattr(lrfast, name)(groups, **FULL[name]), arrays=params + [buf])
    # the same value as a keyword names group 0
    rejects(exc, [r"group 0", _key_pattern(key)],
            lambda: getattr(lrfast, name)(params, **{**FULL[name], key: value}),
            arrays=params + [buf])


@pytest.mark.parametrize("case", HP_CASES, ids=_hp_id)
def test_bad_hyperparameter_assignment_keeps_old_value(case):
    name, key, value, exc = case
    opt, params, buf = make_opt(name)
    old = opt.param_groups[1][key]

    def assign():
        opt.param_groups[1][key] = value

    rejects(exc, [r"group 1", _key_pattern(key)], assign, opt, arrays=[buf])
    assert opt.param_groups[1][key] is old
    with pytest.raises(exc):
        opt.param_groups[1].update({key: value})
    assert opt.param_groups[1][key] is old
    assert_still_equal_to_clone(opt, params, name)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_nesterov_without_momentum(name):
    params, buf = model()
    if name == "SGD":
        rejects(ValueError, [r"group 0", r"nesterov", r"momentum"],
                lambda: lrfast.SGD(params, lr=0.1, nesterov=True), arrays=params)
        rejects(ValueError, [r"group 0", r"nesterov", r"dampening"],
                lambda: lrfast.SGD(params, lr=0.1, momentum=0.9, dampening=0.5, nesterov=True),
                arrays=params)
        opt, params, buf = make_opt("SGD")
        opt.param_groups[0]["nesterov"] = True
        rejects(ValueError, [r"group 0", r"nesterov"],
                lambda: opt.param_groups[0].__setitem__("momentum", 0.0), opt, arrays=[buf])
    else:
        rejects(TypeError, [r"nesterov"], lambda: lrfast.Adam(params, nesterov=True),
                arrays=params)


def test_unknown_and_structural_group_keys():
    opt, params, buf = make_opt("Adam")
    rejects(ValueError, [r"bogus"], lambda: opt.param_groups[0].__setitem__("bogus", 1), opt)
    rejects(ValueError, [r"params", r"cannot be reassigned"],
            lambda: opt.param_groups[0].__setitem__("params", [np.ones(3)]), opt)
    rejects(TypeError, [r"momentum_decay"], lambda: lrfast.Adam(params, momentum_decay=0.1))


# Options whose state is allocated at construction: switching them on later
# would need state that does not exist (the kernels would write through NULL).
STATE_FLIPS = [("SGD", dict(lr=0.1), "momentum", 0.9),
               ("RMSprop", dict(), "momentum", 0.5),
               ("RMSprop", dict(), "centered", True),
               ("Adam", dict(), "amsgrad", True),
               ("AdamW", dict(), "amsgrad", True)]


@pytest.mark.parametrize("name, hp, key, value", STATE_FLIPS)
def test_switching_on_state_that_was_never_allocated(name, hp, key, value):
    params, buf = model()
    opt = getattr(lrfast, name)(params, **hp)
    opt.step(grads_for(params, np.random.default_rng(0)))
    rejects(ValueError, [r"group 0, param 0", r"state", r"not allocated"],
            lambda: opt.param_groups[0].__setitem__(key, value), opt, arrays=[buf])
    # ... nor through load_state_dict of an optimizer built with the option on
    p2, _ = model()
    other = getattr(lrfast, name)(p2, **{**hp, key: value})
    other.step(grads_for(p2, np.random.default_rng(1)))
    sd = other.state_dict()
    rejects(ValueError, [r"group 0, param \d", r"state"], lambda: opt.load_state_dict(sd), opt,
            arrays=[buf])
    assert opt.step(grads_for(params, np.random.default_rng(2)))


GOOD = {"lr": 0.01, "weight_decay": 0.01, "momentum": 0.5, "betas.0": 0.9, "betas.1": 0.99}
SCHED_BAD = {
    "nan": (lambda k: float("nan"), [r"finite"]),
    "negative": (lambda k: 1.5 if k.startswith("betas") else -1.0, [r"invalid|must"]),
    "raises": (lambda k: RuntimeError("boom"), [r"schedule", r"failed at step 2", r"boom"]),
    "string": (lambda k: "abc", [r"schedule", r"failed at step 2"]),
    "none": (lambda k: None, [r"schedule", r"failed at step 2"]),
    "array": (lambda k: np.ones(3), [r"schedule", r"failed at step 2"]),
}


def _sched_keys(name):
    keys = [k for k in ("lr", "weight_decay") if k in getattr(lrfast, name).spec.defaults]
    if "betas" in getattr(lrfast, name).spec.defaults:
        keys += ["betas.0", "betas.1"]
    if "momentum" in getattr(lrfast, name).spec.defaults:
        keys.append("momentum")
    return keys


SCHED_CASES = [(n, k, b) for n in NAMES for k in _sched_keys(n) for b in sorted(SCHED_BAD)]


@pytest.mark.parametrize("name, key, bad", SCHED_CASES)
def test_schedule_going_bad_raises_before_writing(name, key, bad):
    value_at, patterns = SCHED_BAD[bad]
    good = GOOD[key]
    badv = value_at(key)

    def sched(n):
        if n < 2:
            return good
        if isinstance(badv, Exception):
            raise badv
        return badv

    params, buf = model()
    g1 = {"params": params[2:]}
    if key.startswith("betas"):
        i = int(key[-1])
        betas = list(getattr(lrfast, name).spec.defaults["betas"])   # a pair or a triple
        betas[i] = sched
        g1["betas"] = tuple(betas)
    else:
        g1[key] = sched
    opt = getattr(lrfast, name)([{"params": params[:2]}, g1], **FULL[name])
    rng = np.random.default_rng(5)
    for _ in range(2):
        assert opt.step(grads_for(params, rng))
    grads = grads_for(params, rng)
    label = rf"betas\[{key[-1]}\]" if key.startswith("betas") else key
    for _ in range(2):   # and again: a rejected step is not half-counted
        rejects(ValueError, [r"group 1", label] + patterns,
                lambda: opt.step(grads), opt, arrays=grads + [buf], hyper=False)
    assert opt.step_count == 2


# ---------------------------------------------------------------------------
# optimizer options
# ---------------------------------------------------------------------------
OPTION_CASES = [("max_grad_norm", v, ValueError) for v in
                (0, 0.0, -1.0, float("nan"), float("inf"), "1", True, 10 ** 400, [1.0])] + [
               ("skip_nonfinite", v, TypeError) for v in ("yes", 1, None, 0.0)]


@pytest.mark.parametrize("key, value, exc", OPTION_CASES, ids=lambda x: repr(x)[:20])
@pytest.mark.parametrize("name", ["SGD", "Adam", "NAdam"])
def test_bad_options(name, key, value, exc):
    params, buf = model()
    rejects(exc, [key], lambda: getattr(lrfast, name)(params, **{key: value}), arrays=params)


# ---------------------------------------------------------------------------
# add_param_group
# ---------------------------------------------------------------------------
def _add_cases(params, buf):
    new = lambda: np.ones(3, np.float32)  # noqa: E731
    return {
        "same_param_again": ({"params": [params[0]]}, ValueError,
                             [r"group 2, param 4", r"overlaps", r"group 0, param 0"]),
        "view_of_param": ({"params": [new(), params[0][1]]}, ValueError,
                          [r"group 2, param 5", r"overlaps"]),
        "overlaps_view_param": ({"params": [buf[0:4]]}, ValueError,
                                [r"group 2, param 4", r"overlaps", r"param 3"]),
        "two_new_overlapping": ({"params": [buf[7:10], buf[8:10]]}, ValueError,
                                [r"group 2", r"overlaps"]),
        "not_dict": ([new()], TypeError, [r"group 2", r"dict"]),
        "no_params_key": ({"lr": 0.1}, TypeError, [r"group 2", r"params"]),
        "unknown_hp": ({"params": [new()], "bogus": 1}, ValueError, [r"group 2", r"bogus"]),
        "bad_lr": ({"params": [new()], "lr": -1.0}, ValueError, [r"group 2", r"lr"]),
        "bad_weight_decay": ({"params": [new()], "weight_decay": "x"}, TypeError,
                             [r"group 2", r"weight_decay"]),
        "bad_dtype": ({"params": [np.ones(3, np.int32)]}, TypeError,
                      [r"group 2, param 4", r"dtype"]),
        "read_only": ({"params": [_ro(new())]}, ValueError, [r"group 2, param 4", r"read-only"]),
        "list_param": ({"params": [[1.0, 2.0]]}, TypeError, [r"group 2, param 4", r"ndarray"]),
    }


ADD_CASES = sorted(_add_cases(*model()))


@pytest.mark.parametrize("case", ADD_CASES)
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "NAdam"])
def test_bad_add_param_group(name, case):
    opt, params, buf = make_opt(name)
    group, exc, patterns = _add_cases(params, buf)[case]
    rejects(exc, patterns, lambda: opt.add_param_group(group), opt, arrays=[buf])
    assert len(opt.param_groups) == 2 and len(opt.params) == 4
    assert_still_equal_to_clone(opt, params, name)


# ---------------------------------------------------------------------------
# load_state_dict
# ---------------------------------------------------------------------------
def _first_array_name(sd, i):
    for k, v in sd["state"][i].items():
        if isinstance(v, np.ndarray):
            return k
    raise AssertionError("no state array")


def _mut(fn):
    """A mutation of a deep copy of the state_dict (fn works in place)."""
    def apply(sd):
        sd = copy.deepcopy(sd)
        fn(sd)
        return sd
    return apply


def _set(path, value):
    def f(sd):
        d = sd
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return _mut(f)


def _del(path):
    def f(sd):
        d = sd
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return _mut(f)


def _arr(fn):
    """Replace state[2][first array] by fn(array)."""
    def f(sd):
        k = _first_array_name(sd, 2)
        sd["state"][2][k] = fn(sd["state"][2][k])
    return _mut(f)


LOAD_CASES = {
    "not_dict_list": (lambda sd: [sd], TypeError, [r"dict"]),
    "not_dict_none": (lambda sd: None, TypeError, [r"dict"]),
    "format_missing": (_del(["format"]), ValueError, [r"format"]),
    "format_v2": (_set(["format"], "lrfast.optim/2"), ValueError, [r"format", r"optim/2"]),
    "format_torch": (lambda sd: {"state": sd["state"], "param_groups": sd["param_groups"]},
                     ValueError, [r"format"]),
    "other_optimizer": (lambda sd: {**sd, "optimizer": "Adagrad" if sd["optimizer"] != "Adagrad"
                                    else "SGD"}, ValueError, [r"optimizer"]),
    "optimizer_missing": (_del(["optimizer"]), ValueError, [r"optimizer"]),
    "step_count_negative": (_set(["step_count"], -1), ValueError, [r"step_count"]),
    "step_count_float": (_set(["step_count"], 1.5), ValueError, [r"step_count"]),
    "step_count_str": (_set(["step_count"], "3"), ValueError, [r"step_count"]),
    "step_count_bool": (_set(["step_count"], True), ValueError, [r"step_count"]),
    "step_count_missing": (_del(["step_count"]), ValueError, [r"step_count"]),
    "skipped_negative": (_set(["skipped_steps"], -2), ValueError, [r"skipped_steps"]),
    "step_count_huge": (_set(["step_count"], 10 ** 400), ValueError, [r"step_count"]),
    "groups_missing": (_del(["param_groups"]), ValueError, [r"param groups"]),
    "groups_one": (lambda sd: {**sd, "param_groups": sd["param_groups"][:1]}, ValueError,
                   [r"1 param groups", r"has 2"]),
    "groups_three": (lambda sd: {**sd, "param_groups": sd["param_groups"] * 2 + [{}]},
                     ValueError, [r"param groups"]),
    "groups_tuple": (lambda sd: {**sd, "param_groups": tuple(sd["param_groups"])}, ValueError,
                     [r"param groups"]),
    "group_not_dict": (_set(["param_groups", 1], 5), ValueError, [r"group 1", r"dict"]),
    "group_params_wrong": (_set(["param_groups", 1, "params"], [2]), ValueError,
                           [r"group 1", r"params"]),
    "group_params_swapped": (_set(["param_groups", 1, "params"], [3, 2]), ValueError,
                             [r"group 1", r"params"]),
    "group_params_int": (_set(["param_groups", 1, "params"], 2), ValueError,
                         [r"group 1", r"params"]),
    "group_lacks_lr": (_del(["param_groups", 1, "lr"]), ValueError, [r"group 1", r"'lr'"]),
    "group_lr_negative": (_set(["param_groups", 1, "lr"], -1.0), ValueError, [r"group 1", r"lr"]),
    "group_lr_nan": (_set(["param_groups", 0, "lr"], float("nan")), ValueError,
                     [r"group 0", r"lr"]),
    "group_lr_str": (_set(["param_groups", 1, "lr"], "0.1"), TypeError, [r"group 1", r"lr"]),
    "group_wd_negative": (_set(["param_groups", 1, "weight_decay"], -1.0), ValueError,
                          [r"group 1", r"weight_decay"]),
    "group_flag_str": (_set(["param_groups", 1, "maximize"], "no"), TypeError,
                       [r"group 1", r"maximize"]),
    "group_schedules_list": (_set(["param_groups", 1, "schedules"], [1]), ValueError,
                             [r"group 1", r"schedules"]),
    "state_not_dict": (_set(["state"], [1, 2]), ValueError, [r"state"]),
    "state_missing": (_del(["state"]), ValueError, [r"state"]),
    "state_index_out_of_range": (_mut(lambda sd: sd["state"].__setitem__(9, sd["state"][0])),
                                 ValueError, [r"param 9", r"4 params"]),
    "state_index_negative": (_mut(lambda sd: sd["state"].__setitem__(-1, sd["state"][0])),
                             ValueError, [r"param -1"]),
    "state_index_str": (_mut(lambda sd: sd["state"].__setitem__("x", sd["state"][0])),
                        ValueError, [r"param 'x'"]),
    "state_index_float": (_mut(lambda sd: sd["state"].__setitem__(1.0, sd["state"].pop(1))),
                          ValueError, [r"param 1.0"]),
    "state_entry_not_dict": (_set(["state", 2], 5), ValueError, [r"group 1, param 2", r"dict"]),
    "array_wrong_shape": (_arr(lambda a: np.zeros((3, 2))), ValueError,
                          [r"group 1, param 2", r"shape \(3, 2\)", r"\(2, 3\)"]),
    "array_wrong_dtype": (_arr(lambda a: a.astype(np.float32)), ValueError,
                          [r"group 1, param 2", r"dtype float32"]),
    "array_int_dtype": (_arr(lambda a: a.astype(np.int64)), ValueError,
                        [r"group 1, param 2", r"dtype int64"]),
    "array_flat": (_arr(lambda a: a.ravel()), ValueError, [r"group 1, param 2", r"shape"]),
    "array_list": (_arr(lambda a: a.tolist()), TypeError, [r"group 1, param 2", r"ndarray"]),
    "array_missing": (_mut(lambda sd: sd["state"][2].pop(_first_array_name(sd, 2))), ValueError,
                      [r"group 1, param 2", r"lacks"]),
}
STEP_CASES = {
    "step_negative": (_set(["state", 2, "step"], -1), ValueError, [r"group 1, param 2", r"step"]),
    # would load, then make every step raise OverflowError (beta ** t)
    "step_huge": (_set(["state", 2, "step"], 10 ** 400), ValueError,
                  [r"group 1, param 2", r"step"]),
    "step_fraction": (_set(["state", 2, "step"], 1.5), ValueError, [r"group 1, param 2", r"step"]),
    "step_str": (_set(["state", 2, "step"], "2"), ValueError, [r"group 1, param 2", r"step"]),
    "step_none": (_set(["state", 2, "step"], None), ValueError, [r"group 1, param 2", r"step"]),
    "step_missing": (_del(["state", 2, "step"]), ValueError, [r"group 1, param 2", r"step"]),
    "step_array": (_set(["state", 2, "step"], np.array([1, 2])), ValueError,
                   [r"group 1, param 2", r"step"]),
}
BETAS_LOAD = {
    "betas_out_of_range": (_set(["param_groups", 1, "betas"], (1.0, 0.999)), ValueError,
                           [r"group 1", r"beta"]),
    "betas_short": (_set(["param_groups", 1, "betas"], (0.9,)), ValueError,
                    [r"group 1", r"betas"]),
    "betas_scalar": (_set(["param_groups", 1, "betas"], 0.9), ValueError, [r"group 1", r"betas"]),
}
NADAM_LOAD = {
    "mu_product_nan": (_set(["state", 2, "mu_product"], float("nan")), ValueError,
                       [r"group 1, param 2", r"mu_product"]),
    "mu_product_missing": (_del(["state", 2, "mu_product"]), ValueError,
                           [r"group 1, param 2", r"mu_product"]),
}

RPROP_LOAD = {
    "etas_out_of_range": (_set(["param_groups", 1, "etas"], (0.5, 0.9)), ValueError,
                          [r"group 1", r"etas"]),
    "step_sizes_reversed": (_set(["param_groups", 1, "step_sizes"], (1.0, 0.1)), ValueError,
                            [r"group 1", r"step_sizes"]),
    "etas_scalar": (_set(["param_groups", 1, "etas"], 0.5), ValueError, [r"group 1", r"etas"]),
}

ASGD_LOAD = {
    "eta_nan": (_set(["state", 2, "eta"], float("nan")), ValueError,
                [r"group 1, param 2", r"eta"]),
    "eta_negative": (_set(["state", 2, "eta"], -0.1), ValueError, [r"group 1, param 2", r"eta"]),
    "mu_zero": (_set(["state", 2, "mu"], 0.0), ValueError, [r"group 1, param 2", r"mu"]),
    "mu_missing": (_del(["state", 2, "mu"]), ValueError, [r"group 1, param 2", r"mu"]),
    "eta_str": (_set(["state", 2, "eta"], "0.1"), ValueError, [r"group 1, param 2", r"eta"]),
}


def _load_cases(name):
    cases = dict(LOAD_CASES)
    if name == "SGD":
        del cases["array_missing"]   # a missing momentum_buffer is valid: not started yet
    if getattr(lrfast, name).spec.has_step:
        cases.update(STEP_CASES)
    defaults = getattr(lrfast, name).spec.defaults
    if "weight_decay" not in defaults:
        del cases["group_wd_negative"]
    if "maximize" not in defaults:
        del cases["group_flag_str"]
    if "betas" in getattr(lrfast, name).spec.defaults:
        cases.update(BETAS_LOAD)
    if name == "NAdam":
        cases.update(NADAM_LOAD)
    if name == "Rprop":
        cases.update(RPROP_LOAD)
    if name == "ASGD":
        cases.update(ASGD_LOAD)
    return cases


ALL_LOAD = [(n, c) for n in NAMES for c in sorted(_load_cases(n))]


@pytest.mark.parametrize("name, case", ALL_LOAD)
def test_bad_state_dict_rejected_and_nothing_changes(name, case):
    mutate, exc, patterns = _load_cases(name)[case]
    src, _, _ = make_opt(name, seed=1, steps=3)
    sd = src.state_dict()
    opt, params, buf = make_opt(name)
    bad = mutate(sd)
    rejects(exc, patterns, lambda: opt.load_state_dict(bad), opt, arrays=[buf])
    assert_still_equal_to_clone(opt, params, name)
    opt.load_state_dict(sd)               # the untouched original still loads
    assert opt.step_count == 3


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_from_another_optimizer(name):
    opt, params, buf = make_opt(name)
    for other in NAMES:
        if other == name:
            continue
        src, _, _ = make_opt(other, seed=1)
        rejects(ValueError, [r"optimizer", other, name],
                lambda: opt.load_state_dict(src.state_dict()), opt, arrays=[buf])
    assert_still_equal_to_clone(opt, params, name)


def test_state_dict_of_other_shapes_or_dtypes():
    opt, params, buf = make_opt("Adam")
    p2 = [np.zeros((4, 3), np.float32), np.zeros(4, np.float32), np.zeros((2, 3)),
          np.zeros(5)]
    other = lrfast.Adam([{"params": p2[:2]}, {"params": p2[2:], "weight_decay": 0.01}],
                        **FULL["Adam"])
    other.step([np.ones_like(p) for p in p2])
    rejects(ValueError, [r"group 0, param 0", r"shape"],
            lambda: opt.load_state_dict(other.state_dict()), opt, arrays=[buf])
    p3 = [p.astype(np.float64) for p in model()[0]]
    other = lrfast.Adam([{"params": p3[:2]}, {"params": p3[2:], "weight_decay": 0.01}],
                        **FULL["Adam"])
    other.step([np.ones_like(p) for p in p3])
    rejects(ValueError, [r"group 0, param 0", r"dtype float64"],
            lambda: opt.load_state_dict(other.state_dict()), opt, arrays=[buf])
    other = lrfast.Adam(model()[0], **FULL["Adam"])      # one group, not two
    rejects(ValueError, [r"param groups"], lambda: opt.load_state_dict(other.state_dict()),
            opt, arrays=[buf])


def test_stateful_schedule_state_checked_before_commit():
    S = lrfast.schedules
    params, buf = model()
    s0 = S.ReduceOnPlateau(0.1, patience=1)
    s1 = S.ReduceOnPlateau(0.1, patience=1)
    opt = lrfast.SGD([{"params": params[:2], "lr": s0}, {"params": params[2:], "lr": s1}])
    opt.step(grads_for(params, np.random.default_rng(0)))
    sd = opt.state_dict()
    bad = copy.deepcopy(sd)
    bad["param_groups"][1]["schedules"]["lr"]["state"] = {"nonsense": 1}
    s0_state = s0.state_dict()
    rejects(ValueError, [r"group 1", r"schedule", r"lr"], lambda: opt.load_state_dict(bad), opt,
            arrays=[buf])
    assert s0.state_dict() == s0_state   # group 0's schedule was not loaded halfway


# ---------------------------------------------------------------------------
# functional layer
# ---------------------------------------------------------------------------
def _fx():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((3, 4))
    g = rng.standard_normal((3, 4))
    m = rng.standard_normal((3, 4))
    v = np.abs(rng.standard_normal((3, 4)))
    return p, g, m, v


def _primed(good, bad):
    """Run ``good`` on fresh arrays (caching its plan), then ``bad``."""
    good(*_fx())
    return bad()


FUNC_CASES = {
    "p_read_only": (lambda p, g, m, v: K.adam_step(_ro(p), g, m, v, step=1), ValueError,
                    [r"read-only"]),
    "p_int": (lambda p, g, m, v: K.adam_step(p.astype(int), g, m, v, step=1), TypeError,
              [r"dtype"]),
    "p_list": (lambda p, g, m, v: K.adam_step(p.tolist(), g, m, v, step=1), TypeError,
               [r"ndarray"]),
    "p_noncontig": (lambda p, g, m, v: K.sgd_step(p[:, ::2], g[:, ::2].copy(), lr=0.1),
                    ValueError, [r"contiguous"]),
    "g_shape": (lambda p, g, m, v: K.adam_step(p, g.T.copy(), m, v, step=1), ValueError,
                [r"shape"]),
    "g_dtype": (lambda p, g, m, v: K.adam_step(p, g.astype(np.float32), m, v, step=1), TypeError,
                [r"dtype"]),
    "g_is_p": (lambda p, g, m, v: K.adam_step(p, p, m, v, step=1), ValueError,
               [r"overlaps its own param"]),
    "g_is_m": (lambda p, g, m, v: K.adam_step(p, m, m, v, step=1), ValueError, [r"overlaps"]),
    "g_list": (lambda p, g, m, v: K.sgd_step(p, g.tolist(), lr=0.1), TypeError, [r"ndarray"]),
    "m_shape": (lambda p, g, m, v: K.adam_step(p, g, m.ravel(), v, step=1), ValueError,
                [r"exp_avg", r"shape"]),
    "m_dtype": (lambda p, g, m, v: K.adam_step(p, g, m.astype(np.float32), v, step=1),
                ValueError, [r"exp_avg", r"float32"]),
    "m_none": (lambda p, g, m, v: K.adam_step(p, g, None, v, step=1), ValueError,
               [r"exp_avg", r"required"]),
    "v_none_adadelta": (lambda p, g, m, v: K.adadelta_step(p, g, m, None), ValueError,
                        [r"acc_delta", r"required"]),
    "sum_none_adagrad": (lambda p, g, m, v: K.adagrad_step(p, g, None, lr=0.1, step=1),
                         ValueError, [r"sum", r"required"]),
    "m_is_p": (lambda p, g, m, v: K.adam_step(p, g, p, v, step=1), ValueError, [r"overlaps"]),
    "m_is_v": (lambda p, g, m, v: K.adam_step(p, g, v, v, step=1), ValueError, [r"overlaps"]),
    "m_read_only": (lambda p, g, m, v: K.adam_step(p, g, _ro(m), v, step=1), ValueError,
                    [r"exp_avg", r"read-only"]),
    "m_fortran": (lambda p, g, m, v: K.adam_step(p, g, np.asfortranarray(m), v, step=1),
                  ValueError, [r"exp_avg", r"layout"]),
    "step_0": (lambda p, g, m, v: K.adam_step(p, g, m, v, step=0), ValueError, [r"step"]),
    "step_float": (lambda p, g, m, v: K.adam_step(p, g, m, v, step=1.5), ValueError, [r"step"]),
    "step_bool": (lambda p, g, m, v: K.adam_step(p, g, m, v, step=True), ValueError, [r"step"]),
    "lr_negative": (lambda p, g, m, v: K.adam_step(p, g, m, v, lr=-1.0, step=1), ValueError,
                    [r"lr"]),
    "beta1_one": (lambda p, g, m, v: K.adam_step(p, g, m, v, beta1=1.0, step=1), ValueError,
                  [r"beta"]),
    "eps_zero": (lambda p, g, m, v: K.adamax_step(p, g, m, v, eps=0.0, step=1), ValueError,
                 [r"eps"]),
    "amsgrad_no_max": (lambda p, g, m, v: K.adam_step(p, g, m, v, amsgrad=True, step=1),
                       ValueError, [r"max_exp_avg_sq"]),
    "maximize_str": (lambda p, g, m, v: K.adam_step(p, g, m, v, maximize="no", step=1),
                     TypeError, [r"maximize"]),
    "amsgrad_int": (lambda p, g, m, v: K.adam_step(p, g, m, v, amsgrad=1, step=1,
                                                   max_exp_avg_sq=np.zeros_like(p)),
                    TypeError, [r"amsgrad"]),
    # a validated plan is cached by value; an equal value of another type is not a hit
    "maximize_0_after_false": (lambda p, g, m, v: _primed(lambda q, w, e, r: K.adam_step(
        q, w, e, r, maximize=False, step=1), lambda: K.adam_step(p, g, m, v, maximize=0,
                                                                 step=1)),
                               TypeError, [r"maximize"]),
    "lr_true_after_one": (lambda p, g, m, v: _primed(lambda q, w, e, r: K.adam_step(
        q, w, e, r, lr=1.0, step=1), lambda: K.adam_step(p, g, m, v, lr=True, step=1)),
                          TypeError, [r"lr"]),
    "eps_true_after_one": (lambda p, g, m, v: _primed(lambda q, w, e, r: K.adamax_step(
        q, w, e, r, eps=1.0, step=1), lambda: K.adamax_step(p, g, m, v, eps=True, step=1)),
                           TypeError, [r"eps"]),
    "sgd_momentum_no_buffer": (lambda p, g, m, v: K.sgd_step(p, g, lr=0.1, momentum=0.9),
                               ValueError, [r"momentum_buffer"]),
    "sgd_nesterov_no_momentum": (lambda p, g, m, v: K.sgd_step(p, g, m, lr=0.1, nesterov=True),
                                 ValueError, [r"nesterov"]),
    "rmsprop_centered_no_avg": (lambda p, g, m, v: K.rmsprop_step(p, g, v, centered=True),
                                ValueError, [r"grad_avg"]),
    "nadam_mu_product_str": (lambda p, g, m, v: K.nadam_step(p, g, m, v, step=1,
                                                             mu_product="x"),
                             ValueError, [r""]),
    "radam_beta2_nan": (lambda p, g, m, v: K.radam_step(p, g, m, v, beta2=float("nan"), step=1),
                        ValueError, [r"beta"]),
}


@pytest.mark.parametrize("case", sorted(FUNC_CASES))
def test_functional_layer_rejects_before_writing(case):
    call, exc, patterns = FUNC_CASES[case]
    p, g, m, v = _fx()
    rejects(exc, patterns, lambda: call(p, g, m, v), arrays=[p, g, m, v])


# ---------------------------------------------------------------------------
# gradient utilities and thread settings
# ---------------------------------------------------------------------------
def _grads2():
    return [np.arange(6.0).reshape(2, 3), np.ones(4, np.float32)]


CLIP_CASES = {
    "list_grad": (lambda gs: lrfast.clip_grad_norm([gs[0], [1.0, 2.0]], 1.0), TypeError,
                  [r"grads\[1\]", r"ndarray"]),
    "int_grad": (lambda gs: lrfast.clip_grad_norm([gs[0], np.ones(3, int)], 1.0), TypeError,
                 [r"grads\[1\]", r"dtype"]),
    "float16_grad": (lambda gs: lrfast.grad_norm([np.ones(3, np.float16)]), TypeError,
                     [r"grads\[0\]", r"float16"]),
    "byteswapped_grad": (lambda gs: lrfast.grad_norm([gs[0], np.ones(3, ">f8")]), TypeError,
                         [r"grads\[1\]", r"dtype"]),
    "noncontig_grad": (lambda gs: lrfast.clip_grad_norm([np.ones((4, 4))[:, ::2]], 1.0),
                       ValueError, [r"grads\[0\]", r"contiguous"]),
    "read_only_grad": (lambda gs: lrfast.clip_grad_norm([gs[0], _ro(np.ones(3))], 1.0),
                       ValueError, [r"grad 1", r"read-only"]),
    "not_iterable": (lambda gs: lrfast.clip_grad_norm(5, 1.0), TypeError, [r""]),
    **{f"max_norm_{v!r}"[:24]: (lambda gs, v=v: lrfast.clip_grad_norm(gs, v), ValueError,
                                 [r"max_norm"])
       for v in (0, -1.0, float("nan"), float("inf"), "1", True, None, 10 ** 400)},
}


@pytest.mark.parametrize("case", sorted(CLIP_CASES))
def test_grad_utilities_reject_before_writing(case):
    call, exc, patterns = CLIP_CASES[case]
    gs = _grads2()
    gs[0] *= 100     # a clip would change them
    rejects(exc, patterns, lambda: call(gs), arrays=gs)


@pytest.mark.parametrize("call, exc", [
    (lambda: lrfast.set_num_threads(-1), ValueError),
    (lambda: lrfast.set_num_threads("2"), TypeError),
    (lambda: lrfast.set_num_threads(2.0), TypeError),
    (lambda: lrfast.set_num_threads(True), TypeError),
    (lambda: lrfast.set_num_threads(None), TypeError),
    (lambda: lrfast.set_parallel_threshold(-1), ValueError),
], ids=["neg", "str", "float", "bool", "none", "threshold_neg"])
def test_bad_thread_settings(call, exc):
    lrfast.set_num_threads(2)
    thr = lrfast.get_parallel_threshold()
    with pytest.raises(exc):
        call()
    N_BAD["count"] += 1
    assert lrfast.get_num_threads() == 2 and lrfast.get_parallel_threshold() == thr


def test_threads_context_rejects_and_restores():
    lrfast.set_num_threads(2)
    with pytest.raises(ValueError):
        with lrfast.threads(-3):
            pass
    N_BAD["count"] += 1
    assert lrfast.get_num_threads() == 2


def test_zz_count_of_bad_inputs(capsys):
    # Not an assertion about behaviour: prints how many bad inputs this module
    # tried (quoted in the closing note). Runs last (file order).
    with capsys.disabled():
        print(f"\n[test_errors] distinct bad inputs tried: {N_BAD['count']}")


# Ints too large for a double must give a clear ValueError, never OverflowError
# (found by hypothesis: a state_dict with mu_product = 10**400).
_HUGE = 10 ** 400


@pytest.mark.parametrize("make", [
    lambda: lrfast.LBFGS([np.zeros(3)], lr=_HUGE),
    lambda: lrfast.LBFGS([np.zeros(3)], tolerance_grad=_HUGE),
    lambda: lrfast.Adam([np.zeros(3)], lr=_HUGE),
    lambda: lrfast.schedules.Constant(_HUGE),
    lambda: lrfast.schedules.ExponentialDecay(0.1, _HUGE),
    lambda: lrfast.schedules.ExponentialDecay(0.1, 0.01)(_HUGE),
], ids=["lbfgs-lr", "lbfgs-tol", "adam-lr", "constant", "expdecay-arg", "expdecay-n"])
def test_huge_ints_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_huge_mu_product_in_state_dict_rejected_atomically():
    p = [np.ones(3)]
    opt = lrfast.NAdam(p, lr=0.01)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    before = opt.state_dict()
    sd["state"][0]["mu_product"] = _HUGE
    with pytest.raises(ValueError, match="mu_product"):
        opt.load_state_dict(sd)
    assert opt.state_dict()["state"][0]["mu_product"] == before["state"][0]["mu_product"]
