"""Tests of lrfast.find_lr (the LR range test) on least-squares problems."""
import doctest
import math

import numpy as np
import pytest

import lrfast
from lrfast import lr_finder, schedules
from lrfast.lr_finder import LRFinderResult, find_lr


def least_squares(seed, m=200, d=20, L=4.0, cond=100.0, dtype=np.float64):
    """0.5/m ||A x - b||^2 with Hessian A^T A / m of eigenvalues in [L / cond, L].

    Gradient descent is stable for lr < 2 / L."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(m, d)))
    V, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = L * np.geomspace(1.0 / cond, 1.0, d)
    A = (U * np.sqrt(lam * m)) @ V.T
    b = A @ rng.normal(size=d) + 0.01 * rng.normal(size=m)
    A, b = A.astype(dtype), b.astype(dtype)

    def loss_and_grads(params):
        r = A @ params[0] - b
        return 0.5 * float(r @ r) / m, [(A.T @ r / m).astype(dtype)]

    return loss_and_grads, float(np.linalg.eigvalsh(A.T.astype(float) @ A / m).max())


class RecordingSGD:
    """Plain gradient descent that records what it was given (a stand-in optimizer)."""

    instances = []

    def __init__(self, params, lr, **kwargs):
        self.params, self.lr, self.kwargs, self.n, self.used = params, lr, kwargs, 0, []
        RecordingSGD.instances.append(self)

    def step(self, grads):
        lr = self.lr(self.n)
        self.used.append(lr)
        for p, g in zip(self.params, grads):
            p -= lr * g
        self.n += 1


@pytest.mark.parametrize("seed,cond", [(0, 10.0), (1, 100.0), (2, 100.0), (3, 1000.0)])
def test_suggestion_within_stable_range_default_sgd(seed, cond):
    loss_and_grads, L = least_squares(seed, cond=cond)
    x0 = np.zeros(20)
    res = find_lr(loss_and_grads, [x0])  # default optimizer: lrfast.SGD
    assert isinstance(res, LRFinderResult)
    assert res.suggestion is not None
    assert 0.01 * 2 / L <= res.suggestion <= 2 / L, (res.suggestion, 2 / L)
    # the ramp ran into divergence (lr beyond 2/L) and stopped there
    assert res.diverged and len(res.lrs) < 100 and res.lrs[-1] > 2 / L
    assert np.array_equal(res.lrs, schedules.LRRangeTest(1e-7, 10.0, 100)(
        np.arange(len(res.lrs))))
    assert len(res.losses) == len(res.smoothed_losses) == len(res.lrs)
    assert np.all(x0 == 0)


def test_user_params_are_never_modified():
    loss_and_grads, _ = least_squares(4)
    x0 = np.arange(20, dtype=np.float64) / 20
    saved = x0.copy()
    seen = []

    def spy(params):
        seen.append(params[0])
        return loss_and_grads(params)

    res = find_lr(spy, [x0], momentum=0.9)
    assert np.array_equal(x0, saved)
    assert all(p is not x0 and not np.shares_memory(p, x0) for p in seen)
    assert len(res.lrs) > 10


def test_steps_losses_and_smoothing_bookkeeping():
    loss_and_grads, L = least_squares(5, cond=10.0)
    RecordingSGD.instances.clear()
    res = find_lr(loss_and_grads, [np.zeros(20)], optimizer=RecordingSGD, start_lr=1e-4,
                  end_lr=1.0, num_steps=40, smooth=0.3, diverge_threshold=1e9, extra=7)
    opt = RecordingSGD.instances[-1]
    assert opt.kwargs == {"extra": 7}
    assert isinstance(opt.lr, schedules.LRRangeTest)
    assert opt.used == res.lrs.tolist()  # the optimizer used exactly the recorded rates
    assert len(res.lrs) == 40 and not res.diverged
    # losses[i] is the loss after the step taken with lrs[i]: replay the steps
    x = np.zeros(20)
    assert res.initial_loss == loss_and_grads([x])[0]
    for lr, loss in zip(res.lrs, res.losses):
        x = x - lr * loss_and_grads([x])[1][0]
        assert loss == pytest.approx(loss_and_grads([x])[0], rel=1e-12)
    ema = [res.losses[0]]
    for loss in res.losses[1:]:
        ema.append(0.3 * loss + 0.7 * ema[-1])
    np.testing.assert_allclose(res.smoothed_losses, ema, rtol=1e-14)
    # the suggestion is the steepest descent of the smoothed loss before its minimum
    stop = int(np.argmin(res.smoothed_losses)) + 1
    slope = np.gradient(res.smoothed_losses[:stop], np.log(res.lrs[:stop]))
    assert res.suggestion == res.lrs[int(np.argmin(slope))]


def test_copies_keep_dtype_and_layout():
    RecordingSGD.instances.clear()
    W = np.asfortranarray(np.ones((3, 4), dtype=np.float32))
    b = np.zeros(4, dtype=np.float64)

    def loss_and_grads(params):
        w, c = params
        return float((w ** 2).sum() + (c ** 2).sum()), [2 * w, 2 * c]

    find_lr(loss_and_grads, [W, b], optimizer=RecordingSGD, num_steps=5)
    w_copy, b_copy = RecordingSGD.instances[-1].params
    assert w_copy.dtype == np.float32 and w_copy.flags.f_contiguous and w_copy.flags.writeable
    assert b_copy.dtype == np.float64
    assert np.all(W == 1) and np.all(b == 0)


def test_stops_early_on_divergence():
    loss_and_grads, L = least_squares(6, cond=10.0)
    res = find_lr(loss_and_grads, [np.zeros(20)], optimizer=RecordingSGD, start_lr=1.0,
                  end_lr=100.0, num_steps=100, diverge_threshold=5.0)
    assert res.diverged and len(res.lrs) < 20
    assert res.smoothed_losses[-1] > 5.0 * res.smoothed_losses.min()
    assert np.all(res.smoothed_losses[:-1] <= 5.0 * np.minimum.accumulate(
        res.smoothed_losses)[:-1])


def test_nonfinite_loss_stops_without_recording_it():
    calls = []

    def loss_and_grads(params):
        calls.append(1)
        loss = 1.0 / len(calls) if len(calls) < 8 else math.nan
        return loss, [np.ones_like(params[0])]

    res = find_lr(loss_and_grads, [np.zeros(3)], optimizer=RecordingSGD, num_steps=50)
    assert res.diverged and len(res.lrs) == 6 and np.all(np.isfinite(res.losses))


def test_no_descent_gives_no_suggestion():
    res = find_lr(lambda p: (1.0, [np.zeros_like(p[0])]), [np.zeros(3)],
                  optimizer=RecordingSGD, num_steps=30)
    assert res.suggestion is None and not res.diverged and len(res.lrs) == 30


def test_linear_mode():
    loss_and_grads, L = least_squares(7, cond=10.0)
    res = find_lr(loss_and_grads, [np.zeros(20)], optimizer=RecordingSGD, start_lr=0.0,
                  end_lr=1.0, num_steps=50, mode="linear", smooth=1.0)
    assert res.mode == "linear"
    np.testing.assert_allclose(np.diff(res.lrs), 1.0 / 49, rtol=1e-12)
    assert res.suggestion is not None and res.suggestion <= 2 / L


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"params": np.zeros(3)}, TypeError, "params must be a non-empty list"),
    ({"params": []}, TypeError, "params must be a non-empty list"),
    ({"params": [[0.0, 1.0]]}, TypeError, r"params\[0\] must be a numpy array"),
    ({"lr": 0.1}, TypeError, "lr is set by the range test"),
    ({"smooth": 0.0}, ValueError, r"find_lr: smooth must be in \(0, 1\], got 0.0"),
    ({"diverge_threshold": 1.0}, ValueError, "find_lr: diverge_threshold must be > 1, got 1.0"),
    ({"num_steps": 1}, ValueError, "find_lr: num_steps must be >= 2, got 1"),
    ({"start_lr": 1.0, "end_lr": 0.1}, ValueError, "LRRangeTest: end_lr must be > 1"),
    ({"mode": "log"}, ValueError, "LRRangeTest: mode must be one of"),
    ({"loss_and_grads": 3}, TypeError, "loss_and_grads must be callable"),
    ({"loss_and_grads": lambda p: 1.0}, TypeError, r"must return \(loss, grads\)"),
    ({"loss_and_grads": lambda p: ("x", [p[0]])}, TypeError, "the loss must be a number"),
    ({"loss_and_grads": lambda p: (1.0, [])}, ValueError, "one grad per param"),
])
def test_bad_arguments(kwargs, exc, match):
    args = {"loss_and_grads": lambda p: (float(p[0] @ p[0]), [2 * p[0]]),
            "params": [np.ones(3)], "optimizer": RecordingSGD}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        find_lr(**args)


def test_result_plot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    loss_and_grads, _ = least_squares(8)
    res = find_lr(loss_and_grads, [np.zeros(20)], optimizer=RecordingSGD)
    try:
        ax = res.plot()
        assert isinstance(ax, Axes) and ax.get_xscale() == "log"
        assert len(ax.get_lines()) == 3  # raw, smoothed, suggestion
        _, ax2 = plt.subplots()
        assert res.plot(ax=ax2, show_raw=False) is ax2 and len(ax2.get_lines()) == 2
    finally:
        plt.close("all")


def test_package_exposes_find_lr_and_doctest():
    assert lrfast.find_lr is find_lr
    result = doctest.testmod(lr_finder)
    assert result.attempted >= 5 and result.failed == 0
