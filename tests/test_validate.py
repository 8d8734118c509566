"""lrfast._validate: one judgement and one message shape per kind of value
(TypeError for a wrong type, ValueError for a wrong value; ints too large for
a double are a ValueError, never an OverflowError)."""
import math

import numpy as np
import pytest

import lrfast
from lrfast import _validate as V
from lrfast import line_search
from lrfast.io import from_torch_state_dict

HUGE = 10 ** 400


@pytest.mark.parametrize("v,expect", [(0.5, 0.5), (2, 2.0), (np.float32(0.25), 0.25),
                                      (np.int64(3), 3.0)])
def test_real_accepts_numbers(v, expect):
    out = V.real(v, "x", low=0.0)
    assert type(out) is float and out == expect


@pytest.mark.parametrize("v,kw,exc,msg", [
    ("1", {}, TypeError, "f: x must be a number, got '1'"),
    (True, {}, TypeError, "f: x must be a number, got True"),
    (np.ones(1), {}, TypeError, "f: x must be a number"),
    (None, {}, TypeError, "f: x must be a number, got None"),
    (math.nan, {}, ValueError, "f: x must be finite, got nan"),
    (-math.inf, {}, ValueError, "f: x must be finite, got -inf"),
    (HUGE, {}, ValueError, "f: x must be finite"),
    (0.0, dict(low=0.0, low_open=True), ValueError, "f: x must be > 0, got 0.0"),
    (1.0, dict(low=0.0, high=1.0, low_open=True, high_open=True), ValueError,
     r"f: x must be in \(0, 1\), got 1.0"),
    (2, dict(high=1.0), ValueError, "f: x must be <= 1, got 2"),
])
def test_real_rejects(v, kw, exc, msg):
    with pytest.raises(exc, match=f"^{msg}"):
        V.real(v, "x", "f: ", **kw)


def test_integer():
    assert V.integer(np.int32(4), "n", low=1) == 4 and type(V.integer(np.int32(4), "n")) is int
    for v in (2.0, 2.5, True, "3", None, np.ones(1, int)):
        with pytest.raises(TypeError, match=r"^g: n must be an int, got"):
            V.integer(v, "n", "g: ", low=1)
    with pytest.raises(ValueError, match=r"^g: n must be >= 1, got 0$"):
        V.integer(0, "n", "g: ", low=1)
    with pytest.raises(ValueError, match=r"^n must be <= 2\*\*53, got"):
        V.integer(HUGE, "n")
    assert V.integer(2 ** 53, "n") == 2 ** 53
    with pytest.raises(ValueError, match=r"must be <= 7, got 8"):
        V.integer(8, "n", high=7)


class _Tensor0d:
    def __float__(self):
        return 1.5


def test_scalar():
    assert V.scalar(np.array([[2.0]]), "loss") == 2.0
    assert V.scalar(_Tensor0d(), "loss") == 1.5
    assert math.isnan(V.scalar(math.nan, "loss"))          # a NaN loss is a value
    for v in ("1.0", b"1", True, np.bool_(False), 1j, np.ones(2), None, object()):
        with pytest.raises(TypeError, match="^find_lr: the loss must be a number, got"):
            V.scalar(v, "the loss", "find_lr: ")
    with pytest.raises(ValueError, match="too large for a double"):
        V.scalar(HUGE, "loss")


def test_choice():
    assert V.choice(None, "fn", (None, "a")) is None and V.choice("a", "fn", (None, "a")) == "a"
    for v in ("b", 0, False, ["a"]):
        with pytest.raises(ValueError, match=r"^w: fn must be one of \(None, 'a'\), got"):
            V.choice(v, "fn", (None, "a"), "w: ")


def test_check_value_message_shape_matches_real():
    with pytest.raises(ValueError) as a:
        V.check_value(-1.0, "lr", "ge0", "group 0: ")
    with pytest.raises(ValueError) as b:
        V.real(-1.0, "lr", "group 0: ", low=0.0)
    assert str(a.value) == str(b.value) == "group 0: lr must be >= 0, got -1.0"


def test_schedule_value_passes_reentry_through():
    def sched(n):
        raise V.ReentryError("called back")
    with pytest.raises(V.ReentryError):
        V.schedule_value(sched, 0, "lr", "ge0")
    def broken(n):
        raise RuntimeError("boom")           # any other error: a ValueError naming it
    with pytest.raises(ValueError, match="schedule for lr failed at step 0: boom"):
        V.schedule_value(broken, 0, "lr", "ge0")


# The same bad value is judged the same way by every entry point that takes it.
def _lbfgs(v):
    lrfast.LBFGS([np.zeros(2)], tolerance_change=v)


def _wolfe(v):
    x = np.array([1.0, 2.0])
    line_search.strong_wolfe(lambda z: (float(z @ z), 2 * z), x, -x, tolerance_change=v)


def _find_lr(v):
    lrfast.find_lr(lambda p: (float(p[0] @ p[0]), [2 * p[0]]), [np.ones(2)],
                   diverge_threshold=v)


def _sgd(v):
    lrfast.SGD([np.zeros(2)], lr=v)


@pytest.mark.parametrize("v,exc", [("1", TypeError), (True, TypeError), (None, TypeError),
                                   (math.nan, ValueError), (math.inf, ValueError),
                                   (HUGE, ValueError), (-5.0, ValueError)])
@pytest.mark.parametrize("call", [_lbfgs, _wolfe, _find_lr, _sgd])
def test_one_judgement_everywhere(call, v, exc):
    with pytest.raises(exc) as info:
        call(v)
    assert type(info.value) is exc
    msg = str(info.value)
    assert msg.endswith(f"got {v!r}") and " must be " in msg


@pytest.mark.parametrize("v,exc", [(2.5, TypeError), ("3", TypeError), (True, TypeError),
                                   (0, ValueError), (HUGE, ValueError)])
def test_counts_judged_alike(v, exc):
    x = np.array([1.0, 2.0])
    calls = [lambda: lrfast.LBFGS([np.zeros(2)], history_size=v),
             lambda: line_search.backtracking_armijo(lambda z: (float(z @ z), 2 * z), x, -x,
                                                     max_evals=v),
             lambda: lrfast.find_lr(lambda p: (float(p[0] @ p[0]), [2 * p[0]]), [np.ones(2)],
                                    num_steps=v)]
    for c in calls:
        with pytest.raises(exc, match=r" must be .*got "):
            c()


def test_from_torch_state_dict_checks_steps():
    tsd = {"state": {0: {"step": np.array(3.0, np.float32), "exp_avg": np.zeros(2),
                         "exp_avg_sq": np.zeros(2)}},
           "param_groups": [{"params": [0], "lr": 0.1}]}
    assert from_torch_state_dict(tsd, "Adam")["step_count"] == 3
    for bad in (np.array(math.nan), np.array(2.5), -1.0, math.inf):
        tsd["state"][0]["step"] = bad
        with pytest.raises(ValueError, match=r"state\[0\]\['step'\] must be an int"):
            from_torch_state_dict(tsd, "Adam")
    tsd["state"][0]["step"] = 3.0
    with pytest.raises(ValueError, match="step_count must be an int"):
        from_torch_state_dict(tsd, "Adam", step_count=HUGE)
