"""``python -m lrfast demo``: train a numpy MLP on digits with several optimizers.

The demo is lrfast's main job for a new user. It trains the same small
multilayer perceptron (plain numpy, float32, forward and backward written out
by hand) on scikit-learn's bundled ``load_digits`` data set (1797 8x8 images,
no download), once per optimizer + schedule pair, from the same initial
weights and with the same minibatches, and reports

- a progress bar per run (tqdm if installed, a plain line otherwise);
- a table: final training loss, test accuracy, total time, time spent in
  ``opt.step`` and its share of the total;
- ``DIR/results.json``: one entry per run (``final_loss``, ``test_accuracy``,
  ``step_seconds``, ..., and the per-step ``loss_curve`` and ``lr_curve``);
- ``DIR/demo.png``: one figure with the loss curves, the test accuracy and the
  learning rate each schedule gave the optimizer at each step, and a panel of
  the step sizes the learning-rate-free runs estimated.

A second panel, "no learning rate chosen", trains the same model with the
learning-rate-free optimizers at their defaults (no lr, no schedule: Prodigy,
DoG and the schedule-free ones), next to the tuned lineup. Their results carry
``panel: "lr-free"`` and ``d_curve``: ``opt.d`` after each step (Prodigy's d,
which the next step uses; DoG's eta, which that step used; LDoG's per tensor).
The schedule-free runs are evaluated in ``opt.eval()`` mode (the x sequence),
as their reference recommends.

The pairs come from the Wikipedia article "Learning rate" (momentum, Adagrad,
RMSprop, Adam; time-based, step-based and exponential decay) plus the
warmup-cosine that modern training uses. Decay constants scale with
``--steps`` so that every schedule keeps learning for the whole run: that
article's time-based decay is a running product, ``eta_{n+1} = eta_n / (1 + d n)``,
i.e. ``eta_n ~ lr0 exp(-d n^2 / 2)`` while ``d n`` is small, so
``d = 2.8 / steps^2`` ends the run at about a quarter of ``lr0`` (``d = 1e-4``
would reach 1e-21 by step 1000).

Needs the ``demo`` extra (scikit-learn, matplotlib, tqdm):
``pip install "lrfast[demo]"``. Without matplotlib the PNG is skipped; without
tqdm a plain progress line is printed.

Examples
--------
::

    python -m lrfast demo                       # default: 5 tuned + 4 lr-free runs x 1000 steps
    python -m lrfast demo --lrfree all          # every learning-rate-free optimizer
    python -m lrfast demo --steps 3000 --optimizers adam adamw --out /tmp/d
    python -m lrfast demo --optimizers all --threads 1
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from typing import Sequence, TextIO

import numpy as np

from .. import optim as _optim
from ..schedules import (Constant, CosineDecay, CosineRestarts, ExponentialDecay,
                        InverseTimeDecay, OneCycle, StepDecay, TimeBasedDecay, serialize)

__all__ = ["main", "run_demo", "MLP", "load_data", "RUNS", "LRFREE_RUNS"]

DEFAULT_STEPS = 1000
QUICK_STEPS = 60
BATCH = 64
HIDDEN = (256, 128)


# --------------------------------------------------------------------------- data
def load_data(seed: int = 0, test_fraction: float = 0.2
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 in [0, 1], split by a seeded, stratified permutation.

    Returns
    -------
    (X_train, y_train, X_test, y_test) : float32 (n, 64) images and int64 labels.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError('the demo needs scikit-learn for its data set: '
                          'pip install "lrfast[demo]"') from e
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):  # stratified: the same share of each digit in the test set
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[:int(round(test_fraction * len(idx)))]] = True
    return X[~test], y[~test], X[test], y[test]


# --------------------------------------------------------------------------- model
class MLP:
    """A ReLU multilayer perceptron with a softmax cross-entropy loss, in numpy.

    Parameters are float32 C-contiguous arrays in ``self.params``
    (``[W1, b1, W2, b2, ...]``), the list an lrfast optimizer updates in place.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first, classes last (e.g. ``(64, 256, 128, 10)``).
    seed : int
        Seed of the He-normal initialization.
    """

    def __init__(self, sizes: Sequence[int], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.sizes = tuple(int(s) for s in sizes)
        self.params = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            W = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
            self.params += [W.astype(np.float32), np.zeros(fan_out, np.float32)]

    def copy(self):
        """An independent copy (same weights)."""
        new = MLP.__new__(MLP)
        new.sizes = self.sizes
        new.params = [p.copy() for p in self.params]
        return new

    def logits(self, X):
        """Forward pass: the class scores for a batch ``X`` (n, sizes[0])."""
        h = X
        L = len(self.params) // 2
        for i in range(L):
            h = h @ self.params[2 * i] + self.params[2 * i + 1]
            if i < L - 1:
                np.maximum(h, 0, out=h)
        return h

    def loss_and_grads(self, X, y):
        """Mean cross-entropy on the batch and its gradient for every param.

        Backward written out by hand: with ``P = softmax(Z)`` and one-hot ``Y``,
        ``dL/dZ = (P - Y) / n``; per layer ``dW = H^T dZ``, ``db = sum_rows dZ``,
        ``dH = dZ W^T`` masked by ``H > 0`` (ReLU).
        """
        L = len(self.params) // 2
        acts = [X]
        h = X
        for i in range(L):
            h = h @ self.params[2 * i] + self.params[2 * i + 1]
            if i < L - 1:
                np.maximum(h, 0, out=h)
                acts.append(h)
        n = X.shape[0]
        z = h - h.max(axis=1, keepdims=True)
        ez = np.exp(z)
        s = ez.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        loss = float(np.mean(np.log(s[:, 0]) - z[rows, y]))
        dz = ez / s
        dz[rows, y] -= 1.0
        dz /= np.float32(n)
        grads = [None] * len(self.params)
        for i in range(L - 1, -1, -1):
            a = acts[i]
            grads[2 * i] = a.T @ dz
            grads[2 * i + 1] = dz.sum(axis=0)
            if i > 0:
                dz = dz @ self.params[2 * i].T
                dz *= acts[i] > 0
        return loss, [np.ascontiguousarray(g) for g in grads]

    def loss(self, X, y):
        """Mean cross-entropy on ``(X, y)`` (no gradient)."""
        z = self.logits(X).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    def accuracy(self, X, y):
        """Fraction of ``X`` classified correctly."""
        return float(np.mean(self.logits(X).argmax(axis=1) == y))


# --------------------------------------------------------------------------- runs
def _sgd(N):
    every = max(1, N // 4)
    return (_optim.SGD, {"momentum": 0.9}, StepDecay(0.1, drop=0.5, every=every),
            "SGD(momentum=0.9)", f"StepDecay(0.1, drop=0.5, every={every})")


def _adagrad(N):
    return (_optim.Adagrad, {}, Constant(0.05), "Adagrad()", "Constant(0.05)")


def _rmsprop(N):
    d = float(f"{math.log(20.0) / N:.3g}")  # ends at ~1/20 of lr0
    return (_optim.RMSprop, {}, ExponentialDecay(2e-3, decay=d), "RMSprop()",
            f"ExponentialDecay(2e-3, decay={d:g})")


def _adam(N):
    d = float(f"{2.8 / N ** 2:.3g}")  # running product: ends at ~1/4 of lr0
    return (_optim.Adam, {}, TimeBasedDecay(3e-3, decay=d), "Adam()",
            f"TimeBasedDecay(3e-3, decay={d:g})")


def _adamw(N):
    W = max(1, N // 10)
    s = CosineDecay(0.0, decay_steps=max(1, N - W), alpha=0.02, warmup_target=4e-3,
                    warmup_steps=W)
    return (_optim.AdamW, {"weight_decay": 1e-2}, s, "AdamW(weight_decay=0.01)",
            f"warmup {W} + CosineDecay(4e-3, {max(1, N - W)})")


def _adadelta(N):
    return (_optim.Adadelta, {}, Constant(1.0), "Adadelta()", "Constant(1.0)")


def _nadam(N):
    return (_optim.NAdam, {}, OneCycle(5e-3, total_steps=N), "NAdam()",
            f"OneCycle(5e-3, {N})")


def _radam(N):
    k = max(1, N // 10)
    return (_optim.RAdam, {}, InverseTimeDecay(3e-3, decay_steps=k, decay_rate=0.5),
            "RAdam()", f"InverseTimeDecay(3e-3, {k}, 0.5)")


def _adamax(N):
    T = max(1, N // 7)
    return (_optim.Adamax, {}, CosineRestarts(6e-3, T, t_mul=2.0, alpha=0.05),
            "Adamax()", f"CosineRestarts(6e-3, {T}, t_mul=2)")


#: Runs by name: a function of the step count returning
#: ``(optimizer class, options, lr schedule, optimizer text, schedule text)``.
#: The first five run by default; ``--optimizers all`` runs every one.
RUNS = {
    "sgd": _sgd,
    "adagrad": _adagrad,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": _adamw,
    "adadelta": _adadelta,
    "nadam": _nadam,
    "radam": _radam,
    "adamax": _adamax,
}
DEFAULT_RUNS = ("sgd", "adagrad", "rmsprop", "adam", "adamw")

#: The "no learning rate chosen" panel: learning-rate-free optimizers at their
#: defaults, no schedule. Name -> ``(optimizer class, options, optimizer text)``;
#: one line per optimizer. ``DEFAULT_LRFREE`` run by default, ``--lrfree all`` every one.
LRFREE_RUNS: dict[str, tuple[type, dict, str]] = {
    "sf_adamw": (_optim.ScheduleFreeAdamW, {}, "ScheduleFreeAdamW()"),
    "prodigy": (_optim.Prodigy, {}, "Prodigy()"),
    "dog": (_optim.DoG, {}, "DoG()"),
    "sf_sgd": (_optim.ScheduleFreeSGD, {}, "ScheduleFreeSGD()"),
    "sf_radam": (_optim.ScheduleFreeRAdam, {}, "ScheduleFreeRAdam()"),
    "ldog": (_optim.LDoG, {}, "LDoG()"),
    "dadapt_adam": (_optim.DAdaptAdam, {}, "DAdaptAdam()"),
    "dadapt_sgd": (_optim.DAdaptSGD, {}, "DAdaptSGD()"),
    "dadapt_adagrad": (_optim.DAdaptAdaGrad, {}, "DAdaptAdaGrad()"),
}
DEFAULT_LRFREE = ("sf_adamw", "prodigy", "dadapt_adam", "dog")
LRFREE_SCHEDULE = "none (defaults)"


class _Progress:
    """tqdm when installed (and wanted), else a plain line every ~10%."""

    def __init__(self, total, desc, enabled):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.bar = None
        self.n = 0
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self.bar = tqdm(total=total, desc=desc, unit="step", leave=True,
                            dynamic_ncols=True, mininterval=0.2)

    def update(self, loss):
        self.n += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if self.n % 25 == 0 or self.n == self.total:
                self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        elif self.n == self.total or self.n % max(1, self.total // 10) == 0:
            print(f"{self.desc}: {self.n}/{self.total} steps, loss {loss:.4f}",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _batches(n_train, steps, batch, seed):
    """The minibatch indices of every step (epoch-wise shuffles), shared by all runs."""
    rng = np.random.default_rng(seed + 1)
    per_epoch = n_train // batch
    epochs = -(-steps // per_epoch)
    idx = [rng.permutation(n_train)[:per_epoch * batch].reshape(per_epoch, batch)
           for _ in range(epochs)]
    return np.concatenate(idx)[:steps]


def _d_of(opt):
    """``opt.d`` (a float, or LDoG's list per tensor); None for optimizers without one."""
    d = getattr(opt, "d", None)
    if d is None:
        return None
    return [float(x) for x in d] if isinstance(d, (list, tuple)) else float(d)


@contextlib.contextmanager
def _eval_mode(opt):
    """A schedule-free optimizer's x sequence in the params for evaluation
    (``opt.eval()``, then ``opt.train()``); other optimizers: nothing."""
    if hasattr(opt, "eval") and hasattr(opt, "train") and opt.step_count > 0:
        opt.eval()
        try:
            yield
        finally:
            opt.train()
    else:
        yield


def train_one(name, model0, data, steps, batches, progress=True, evals=20):
    """Train a copy of ``model0`` with run ``name`` (of :data:`RUNS` or
    :data:`LRFREE_RUNS`); return its results dict."""
    Xtr, ytr, Xte, yte = data
    model = model0.copy()
    if name in RUNS:
        cls, options, schedule, opt_text, sched_text = RUNS[name](steps)
        opt = cls(model.params, lr=schedule, **options)
        panel = "tuned"
    else:
        cls, options, opt_text = LRFREE_RUNS[name]
        schedule, sched_text = None, LRFREE_SCHEDULE
        opt = cls(model.params, **options)
        panel = "lr-free"
    d_curve = [] if _d_of(opt) is not None else None
    loss_curve = np.empty(steps)
    lr_curve = np.empty(steps)
    eval_every = max(1, steps // evals)
    acc_steps, acc_curve = [], []
    bar = _Progress(steps, f"{name:>8}", progress)
    step_seconds = 0.0
    t0 = time.perf_counter()
    for k in range(steps):
        b = batches[k]
        loss, grads = model.loss_and_grads(Xtr[b], ytr[b])
        lr_curve[k] = opt.lr
        ts = time.perf_counter()
        opt.step(grads)
        step_seconds += time.perf_counter() - ts
        loss_curve[k] = loss
        if d_curve is not None:
            d_curve.append(_d_of(opt))
        if (k + 1) % eval_every == 0 or k + 1 == steps:
            acc_steps.append(k + 1)
            with _eval_mode(opt):
                acc_curve.append(model.accuracy(Xte, yte))
        bar.update(loss)
    total = time.perf_counter() - t0
    bar.close()
    with _eval_mode(opt):
        final_loss = model.loss(Xtr, ytr)
        train_acc, test_acc = model.accuracy(Xtr, ytr), model.accuracy(Xte, yte)
    out = {
        "panel": panel,
        "optimizer": opt_text,
        "schedule": sched_text,
        "final_loss": final_loss,
        "final_batch_loss": float(loss_curve[-1]),
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "total_seconds": total,
        "step_seconds": step_seconds,
        "step_share": step_seconds / total if total > 0 else 0.0,
        "steps": steps,
        "diverged": not math.isfinite(final_loss),
        "loss_curve": [float(x) for x in loss_curve],
        "lr_curve": [float(x) for x in lr_curve],
        "test_accuracy_steps": acc_steps,
        "test_accuracy_curve": acc_curve,
        "schedule_config": None if schedule is None else _schedule_config(schedule),
    }
    if panel == "lr-free":
        out["d_curve"] = d_curve
        out["final_d"] = None if d_curve is None else d_curve[-1]
    return out


def _json_safe(obj):
    """Non-finite floats (a diverged run) become None: results.json stays strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _schedule_config(s):
    try:
        return serialize(s)
    except Exception:  # pragma: no cover - every run uses an lrfast schedule
        return {"class": type(s).__name__}


def _fmt_d(d):
    if d is None:
        return "-"
    if isinstance(d, list):        # LDoG: one eta per tensor
        return f"{min(d):.3g}..{max(d):.3g}"
    return f"{d:.3g}"


def _table(rows, head, right):
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def fmt(row):
        return "  ".join(str(x).rjust(w[i]) if i in right else str(x).ljust(w[i])
                         for i, x in enumerate(row))

    return [fmt(head), "  ".join("-" * x for x in w)] + [fmt(r) for r in rows]


def format_table(results):
    """The results table as a string (one row per run; the learning-rate-free
    runs, if any, in a second table with their final ``opt.d``)."""
    head = ("run", "optimizer", "lr schedule", "train loss", "test acc", "total s",
            "step s", "step %")

    def cells(k, r):
        return [k, r["optimizer"], r["schedule"], f"{r['final_loss']:.4f}",
                f"{r['test_accuracy']:.3f}", f"{r['total_seconds']:.2f}",
                f"{r['step_seconds']:.3f}", f"{100 * r['step_share']:.1f}"]

    tuned = [cells(k, r) for k, r in results.items() if r.get("panel", "tuned") == "tuned"]
    free = [cells(k, r) + [_fmt_d(r.get("final_d"))] for k, r in results.items()
            if r.get("panel") == "lr-free"]
    lines = _table(tuned, head, {3, 4, 5, 6, 7}) if tuned else []
    if free:
        if lines:
            lines.append("")
        lines.append("no learning rate chosen (each optimizer's defaults, no schedule):")
        lines += _table(free, head + ("final d",), {3, 4, 5, 6, 7, 8})
    return "\n".join(lines)


def _d_line(r):
    """The step size curve of a learning-rate-free run for the plot: its d
    (LDoG: the median over tensors), or its constant lr (schedule-free)."""
    d = r.get("d_curve")
    if d is None:
        return np.asarray(r["lr_curve"], float), "lr (default, fixed)"
    if d and isinstance(d[0], list):
        return np.median(np.asarray(d, float), axis=1), "eta, median over tensors"
    return np.asarray(d, float), "eta" if r["optimizer"].startswith("DoG") else "d"


def plot(results, path):
    """Write one PNG: training loss (smoothed), test accuracy and lr per step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncol = 3
    rows = -(-len(results) // ncol)
    tuned = {k: r for k, r in results.items() if r.get("panel", "tuned") == "tuned"}
    free = {k: r for k, r in results.items() if r.get("panel") == "lr-free"}
    fig = Figure(figsize=(20 if free else 15, 4.6 + 0.22 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4 if free else 3)
    ax_loss, ax_acc, ax_lr = axes[:3]
    lr_min, handles, labels = np.inf, [], []
    for name, r in results.items():
        loss = np.asarray(r["loss_curve"])
        n = np.arange(1, len(loss) + 1)
        w = max(1, len(loss) // 50)  # moving average over ~2% of the run
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        style = "--" if name in free else "-"
        line, = ax_loss.plot(n[w - 1:], smooth, style, lw=1.4)
        ax_acc.plot(r["test_accuracy_steps"], r["test_accuracy_curve"], style, lw=1.4,
                    color=line.get_color(), marker=".", ms=4)
        handles.append(line)
        if name in free:
            dn, what = _d_line(r)
            free[name] = (r, dn, what, line.get_color())
            labels.append(f"{name}: {r['optimizer']}, no lr chosen")
            continue
        lr = np.asarray(r["lr_curve"])
        ax_lr.plot(np.arange(len(lr)), lr, lw=1.4, color=line.get_color())
        if np.any(lr > 0):
            lr_min = min(lr_min, lr[lr > 0].min())
        labels.append(f"{name}: {r['optimizer']} + {r['schedule']}")
    if free:
        ax_d = axes[3]
        for name, (r, dn, what, color) in free.items():
            ok = dn > 0
            ax_d.plot(np.arange(1, len(dn) + 1)[ok], dn[ok], "--", lw=1.4, color=color,
                      label=f"{name}: {what}")
        ax_d.set(yscale="log", xlabel="step n", ylabel="step size after step n",
                 title="No learning rate chosen: estimated step size (opt.d)")
        ax_d.legend(fontsize=7)
        ax_d.grid(alpha=0.3)
    ax_loss.set(yscale="log", xlabel="step", ylabel="training loss (minibatch, moving avg)",
                title="Training loss")
    ax_acc.set(xlabel="step", ylabel="test accuracy", title="Test accuracy",
               ylim=(max(0.0, min(min(r["test_accuracy_curve"]) for r in results.values())
                         - 0.02), 1.0))
    ax_lr.set(yscale="log", xlabel="step n", ylabel="learning rate used at step n",
              title="Learning rate (each run's schedule)")
    if np.isfinite(lr_min):
        # warmups start at 0 and OneCycle ends near 0: show four decades below the top
        top = max(max(r["lr_curve"]) for r in tuned.values())
        ax_lr.set_ylim(bottom=max(lr_min, top * 1e-4) / 1.5)
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8,
               frameon=False)
    steps = max(r["steps"] for r in results.values())
    fig.suptitle(f"lrfast demo: float32 numpy MLP on digits, {steps} steps per run, "
                 "same initial weights and minibatches")
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------- entry points
def run_demo(out: str | os.PathLike = "lrfast-demo", steps: int = DEFAULT_STEPS,
             optimizers: str | Sequence[str] = DEFAULT_RUNS,
             lrfree: str | Sequence[str] = DEFAULT_LRFREE, seed: int = 0,
             threads: int | str | None = "auto", progress: bool = True, batch: int = BATCH,
             hidden: Sequence[int] = HIDDEN, plot_png: bool = True,
             blas_threads: int | None = 1, stream: TextIO | None = None) -> dict[str, dict]:
    """Run the demo; return the results dict (what ``results.json`` holds).

    Parameters
    ----------
    out : str or os.PathLike
        Directory for ``results.json`` and ``demo.png`` (created if needed).
    steps : int
        Optimizer steps per run (>= 1).
    optimizers : sequence of str
        Run names from :data:`RUNS` (``"all"`` for every one, ``"none"`` for none).
    lrfree : sequence of str
        The "no learning rate chosen" panel: names from :data:`LRFREE_RUNS`
        (``"all"``, or ``"none"`` to skip the panel).
    seed : int
        Seed of the train/test split, the initial weights and the batch order.
    threads : int, "auto" or None
        ``lrfast.set_num_threads(threads)`` for the demo; ``None``: lrfast's
        policy; ``"auto"`` (default): lrfast's policy unless the load average
        says other jobs occupy the cores, then the free cores (at least 1),
        with a printed note.
    progress : bool
        Show a progress bar per run.
    batch : int
        Minibatch size.
    hidden : sequence of int
        Hidden layer widths.
    plot_png : bool
        Write ``demo.png`` (needs matplotlib).
    blas_threads : int or None
        Threads numpy's BLAS may use for the model's matmuls during training
        (through threadpoolctl, when installed); ``None`` leaves BLAS alone.
        The default, 1, is the fastest for these small matmuls: on a busy
        2-core machine a multi-threaded BLAS made forward/backward 50x slower
        (20-47 ms vs 0.37 ms per batch, measured).
    stream : file, optional
        Where the table is printed (default ``sys.stdout``).
    """
    from .. import _threads
    from .._dispatch import isa

    stream = sys.stdout if stream is None else stream
    names = _select(optimizers, RUNS, DEFAULT_RUNS, "optimizer run", empty_ok=True)
    names += _select(lrfree, LRFREE_RUNS, DEFAULT_LRFREE, "lr-free run", empty_ok=True)
    if not names:
        raise ValueError("no optimizer runs selected")
    data = load_data(seed)
    Xtr = data[0]
    if not 1 <= batch <= len(Xtr):
        raise ValueError(f"batch size must be in [1, {len(Xtr)}] (the training set), got {batch}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    sizes = (Xtr.shape[1], *hidden, 10)
    model0 = MLP(sizes, seed=seed)
    batches = _batches(len(Xtr), steps, batch, seed)
    os.makedirs(out, exist_ok=True)
    if threads == "auto":
        threads, note = _auto_threads(_threads.get_num_threads())
        if note:
            print(note, file=stream)
    ctx = _threads.threads(int(threads)) if threads is not None else contextlib.nullcontext()
    with ctx, _blas_limit(blas_threads, stream):
        n_threads = _threads.get_num_threads()
        n_params = sum(p.size for p in model0.params)
        print(f"lrfast demo: MLP {'-'.join(map(str, sizes))} ({n_params} float32 params) on "
              f"digits ({len(Xtr)} train / {len(data[2])} test), {steps} steps of batch "
              f"{batch}, seed {seed}, {n_threads} thread(s), {isa} kernels", file=stream,
              flush=True)
        results = {}
        for name in names:
            r = train_one(name, model0, data, steps, batches, progress=progress)
            r.update(seed=seed, batch_size=batch, hidden=list(hidden), threads=n_threads,
                     isa=isa)
            results[name] = r
    path_json = os.path.join(out, "results.json")
    tmp = path_json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_json_safe(results), f, indent=1, allow_nan=False)
    os.replace(tmp, path_json)
    print("\n" + format_table(results), file=stream)
    best = max(results, key=lambda k: results[k]["test_accuracy"])
    print(f"\nbest: {best} (test accuracy {results[best]['test_accuracy']:.3f})", file=stream)
    print(f"wrote {path_json}", file=stream)
    if plot_png:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print('matplotlib is not installed: skipped demo.png (pip install "lrfast[demo]")',
                  file=stream)
        else:
            print(f"wrote {plot(results, os.path.join(out, 'demo.png'))}", file=stream)
    stream.flush()
    return results


def _auto_threads(default):
    """Threads for ``--threads auto``: lrfast's default unless other jobs keep the cores busy.

    On an oversubscribed machine an OpenMP step waits for descheduled threads:
    measured on a 2-core machine at load 4-5, a 50k-element Adam step between
    small matmuls took 5.7-6.4 ms with 2 threads and 0.07 ms with 1. So when
    the 1-minute load average leaves fewer free cores than lrfast would use,
    use the free ones (at least 1) and say so. Returns ``(threads or None, note)``.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return None, ""
    free = max(1, int((os.cpu_count() or 1) - load + 0.5))
    if free >= default:
        return None, ""
    return free, (f"note: the machine is busy (load average {load:.1f} on {os.cpu_count()} "
                  f"cores): using {free} lrfast thread(s) instead of {default}; pass "
                  "--threads N to choose")


@contextlib.contextmanager
def _blas_limit(n, stream):
    """Limit numpy's BLAS threads to ``n`` inside the block (needs threadpoolctl)."""
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl is not installed, so numpy's BLAS threads are not limited "
              "(pip install threadpoolctl, or set OPENBLAS_NUM_THREADS=1, if the model's small "
              "matmuls are slow)", file=stream)
        yield
        return
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def _select(optimizers, table=None, default=None, what="optimizer run", empty_ok=False):
    """Run names from ``table`` (default :data:`RUNS`): names, ``default``,
    ``all`` or ``none``, in order, without repeats."""
    table = RUNS if table is None else table
    default = DEFAULT_RUNS if default is None else default
    if isinstance(optimizers, str):
        optimizers = [optimizers]
    names = []
    for o in optimizers:
        for part in str(o).replace(",", " ").split():
            key = part.strip().lower()
            if key == "all":
                names.extend(table)
            elif key == "default":
                names.extend(default)
            elif key == "none":
                continue
            elif key in table:
                names.append(key)
            else:
                raise ValueError(f"unknown {what} {part!r}; choose from "
                                 f"{', '.join(table)}, 'default', 'all' or 'none'")
    names = list(dict.fromkeys(names))  # keep order, drop repeats
    if not names and not empty_ok:
        raise ValueError("no optimizer runs selected")
    return names


def _positive_int(text):
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _threads_arg(text):
    return "auto" if text == "auto" else _positive_int(text)


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m lrfast demo",
        description="Train a float32 numpy MLP on scikit-learn's digits with several lrfast "
                    "optimizer + schedule pairs, and learning-rate-free optimizers at their "
                    "defaults (same initial weights, same batches); print a table, write "
                    "results.json and demo.png.")
    p.add_argument("--out", default="lrfast-demo", metavar="DIR",
                   help="output directory (default: ./lrfast-demo)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help=f"optimizer steps per run (default {DEFAULT_STEPS}; "
                        f"{QUICK_STEPS} with --quick)")
    p.add_argument("--optimizers", nargs="+", default=list(DEFAULT_RUNS), metavar="NAME",
                   help=f"runs to compare, from: {', '.join(RUNS)}; 'all' for every one "
                        f"(default: {' '.join(DEFAULT_RUNS)})")
    p.add_argument("--lrfree", nargs="+", default=list(DEFAULT_LRFREE), metavar="NAME",
                   help="the 'no learning rate chosen' panel: learning-rate-free optimizers at "
                        f"their defaults, from: {', '.join(LRFREE_RUNS)}; 'all' for every one, "
                        f"'none' to skip (default: {' '.join(DEFAULT_LRFREE)})")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the initial weights and the batch order")
    p.add_argument("--threads", type=_threads_arg, default="auto",
                   help="lrfast threads; 'auto' (default): lrfast's default (OMP_NUM_THREADS "
                        "or all cores) unless other jobs keep the cores busy, then the free "
                        "ones")
    p.add_argument("--blas-threads", type=int, default=1, metavar="N",
                   help="threads for numpy's BLAS during training (default 1, fastest for "
                        "these small matmuls; 0 leaves BLAS alone)")
    p.add_argument("--batch-size", type=_positive_int, default=BATCH, help="minibatch size")
    p.add_argument("--quick", action="store_true",
                   help=f"few steps ({QUICK_STEPS}), for tests and CI")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plot", action="store_true", help="skip demo.png")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m lrfast demo ARGS``); returns an exit code."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    try:
        names = _select(args.optimizers, empty_ok=True)
        lrfree = _select(args.lrfree, LRFREE_RUNS, DEFAULT_LRFREE, "lr-free run", empty_ok=True)
        if not names and not lrfree:
            raise ValueError("no optimizer runs selected")
    except ValueError as e:
        print(f"python -m lrfast demo: error: {e}", file=sys.stderr)
        return 2
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print('python -m lrfast demo needs scikit-learn (its data set) and, for the plot and '
              'progress bars, matplotlib and tqdm: pip install "lrfast[demo]"', file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    try:
        run_demo(out=args.out, steps=steps, optimizers=names, lrfree=lrfree, seed=args.seed,
                 threads=args.threads, progress=not args.no_progress, batch=args.batch_size,
                 plot_png=not args.no_plot,
                 blas_threads=args.blas_threads if args.blas_threads > 0 else None)
    except ValueError as e:
        print(f"python -m lrfast demo: error: {e}", file=sys.stderr)
        return 2
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
