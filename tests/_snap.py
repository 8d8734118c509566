"""Snapshots for "nothing changed" assertions (SPEC.md, Errors): the exact bytes
of every array an optimizer owns or was handed, its step counts and its
hyperparameters. NaN-aware by construction: arrays compare as bytes, float
NaNs as a marker."""
import math

import numpy as np


def _val(v):
    if isinstance(v, np.ndarray):
        return ("ndarray", v.dtype.str, v.shape, v.flags.c_contiguous, v.tobytes(order="A"))
    if isinstance(v, dict):
        return ("dict", tuple((k, _val(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_val(x) for x in v))
    if isinstance(v, float) and math.isnan(v):
        return ("nan",)
    if callable(v) and not isinstance(v, (int, float)):
        return ("callable", id(v))
    return v


def snapshot(opt=None, arrays=()):
    """Everything a rejected call must leave as it was.

    ``opt``: params (bytes), ``opt.state`` (the live state arrays and per-param
    steps), ``step_count``, ``skipped_steps``, ``last_grad_norm``, the param
    groups (which arrays, which values) and ``state_dict()`` (hyperparameters
    the next step will use, schedule states). ``arrays``: any other arrays
    (grads, functional-layer state), None allowed.
    """
    snap = {"arrays": [None if a is None else _val(a) for a in arrays]}
    if opt is not None:
        snap["params"] = [_val(p) for p in opt.params]
        snap["state"] = _val(opt.state)
        snap["step_count"] = opt.step_count
        snap["skipped_steps"] = opt.skipped_steps
        snap["last_grad_norm"] = _val(opt.last_grad_norm)
        snap["groups"] = [(tuple(id(p) for p in pg["params"]),
                           _val({k: v for k, v in pg.items() if k != "params"}))
                          for pg in opt.param_groups]
        snap["state_dict"] = _val(opt.state_dict())
    return snap


def assert_same(before, after):
    """Assert two snapshots are identical, naming the first difference."""
    for key in before:
        assert key in after, key
        if before[key] != after[key]:
            b, a = before[key], after[key]
            if isinstance(b, list) and isinstance(a, list) and len(a) == len(b):
                bad = [i for i, (x, y) in enumerate(zip(b, a)) if x != y]
                raise AssertionError(f"{key} changed at index {bad}")
            raise AssertionError(f"{key} changed")
    assert set(before) == set(after)
