"""A PNG gallery of every schedule (``python -m lrfast schedules``)."""
from __future__ import annotations

import argparse
import math
import os
from typing import List, Optional

import numpy as np

from .._typing import StrPath
from ._base import _int
from ._compose import LinearWarmup, Sequence
from ._cyclic import CosineRestarts, Cyclic, LinearOneCycle, OneCycle
from ._decay import (Constant, CosineDecay, ExponentialDecay, InverseTimeDecay, LRRangeTest,
                     MultiStepDecay, PiecewiseConstant, PiecewiseInterpolate, PolynomialDecay,
                     StepDecay, TimeBasedDecay, WarmupStableDecay)
from ._plateau import ReduceOnPlateau


# --------------------------------------------------------------------------- gallery
def _gallery_examples(N):
    """[(file key, title, schedule or steps -> values, log y)] for the gallery."""
    q = max(N // 10, 1)
    one_cycle = OneCycle(0.1, N)
    cyclic = Cyclic(0.01, 0.1, step_size_up=max(N // 8, 1), mode="triangular2")

    def plateau(steps):
        # ReduceOnPlateau is fed a metric: simulate a loss that stalls, one value per step
        rop = ReduceOnPlateau(0.1, factor=0.5, patience=max(N // 12, 1), min_lr=1e-3)
        out = np.empty(len(steps))
        for i in range(len(steps)):
            out[i] = rop(i)
            rop.step(max(1.0 / (1.0 + i / q), 0.3) + 0.01 * math.sin(i))
        return out

    return [
        ("Constant", "Constant(0.1)", Constant(0.1), False),
        ("TimeBasedDecay", "TimeBasedDecay", TimeBasedDecay(0.1, decay=8.0 / N ** 2),
         True),
        ("StepDecay", "StepDecay", StepDecay(0.1, drop=0.5, every=2 * q), False),
        ("ExponentialDecay", "ExponentialDecay", ExponentialDecay(0.1, decay=5.0 / N),
         True),
        ("InverseTimeDecay", "InverseTimeDecay",
         InverseTimeDecay(0.1, decay_steps=q, decay_rate=1.0), False),
        ("PolynomialDecay", "PolynomialDecay (power 2)",
         PolynomialDecay(0.1, N, end_lr=0.001, power=2.0), False),
        ("PiecewiseConstant", "PiecewiseConstant",
         PiecewiseConstant([3 * q, 6 * q], [0.1, 0.05, 0.01]), False),
        ("CosineDecay", "CosineDecay with warmup",
         CosineDecay(0.0, N - q, alpha=0.05, warmup_target=0.1, warmup_steps=q), False),
        ("CosineRestarts", "CosineRestarts (SGDR)",
         CosineRestarts(0.1, max(N // 15, 1), t_mul=2.0, m_mul=0.8, alpha=0.05), False),
        ("LinearWarmup", "LinearWarmup", LinearWarmup(0.1, start_factor=0.1, total_iters=2 * q),
         False),
        ("OneCycle", "OneCycle", one_cycle, False),
        ("OneCycleMomentum", "OneCycle.momentum", one_cycle.momentum, False),
        ("Cyclic", "Cyclic (triangular2)", cyclic, False),
        ("CyclicMomentum", "Cyclic.momentum", cyclic.momentum, False),
        ("MultiStepDecay", "MultiStepDecay", MultiStepDecay(0.1, [5 * q, 8 * q], gamma=0.3),
         False),
        ("Sequence", "Sequence: warmup, then exponential", Sequence(
            [LinearWarmup(0.1, start_factor=0.0, total_iters=q),
             ExponentialDecay(0.1, decay=3.0 / N)], [q]), False),
        ("Product", "Product: restarts x exponential",
         CosineRestarts(0.1, 2 * q, t_mul=1.0) * ExponentialDecay(1.0, decay=2.0 / N), False),
        ("ReduceOnPlateau", "ReduceOnPlateau (simulated metric)", plateau, False),
        ("LRRangeTest", "LRRangeTest", LRRangeTest(1e-5, 1.0, N), True),
        ("WarmupStableDecay", "WarmupStableDecay (sqrt)",
         WarmupStableDecay(0.1, q, 6 * q, max(N - 7 * q, 1), decay="sqrt"), False),
        ("PiecewiseInterpolate", "PiecewiseInterpolate (cosine)",
         PiecewiseInterpolate(0.05, [2 * q, 5 * q, 8 * q], [2.0, 0.5, 0.1], "cosine"), False),
        ("LinearOneCycle", "LinearOneCycle (Optax)", LinearOneCycle(N, 0.1, 0.2, 0.6), False),
    ]


def gallery(out_dir: StrPath, steps: int = 1000, per_schedule: bool = False) -> List[str]:
    """Write a PNG gallery of every schedule; return the paths written.

    Writes ``schedules.png`` (one panel per schedule) into ``out_dir`` (created
    if needed), and with ``per_schedule=True`` also ``schedule_<name>.png`` for
    each. Uses matplotlib's Agg canvas, so it works without a display.

    Parameters
    ----------
    out_dir : str or os.PathLike
    steps : int
        Steps plotted (>= 2); the examples scale with it.
    per_schedule : bool
        Also write one PNG per schedule.
    """
    steps = _int("gallery", "steps", steps, lo=2)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("gallery() needs matplotlib: pip install matplotlib") from e
    os.makedirs(out_dir, exist_ok=True)
    examples = _gallery_examples(steps)
    n = np.arange(steps)

    def draw(ax, title, fn, log):
        ax.plot(n, fn(n), lw=1.5)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)

    cols = 4
    rows = -(-len(examples) // cols)
    fig = Figure(figsize=(4 * cols, 2.6 * rows))
    FigureCanvasAgg(fig)
    for k, (_, title, fn, log) in enumerate(examples):
        draw(fig.add_subplot(rows, cols, k + 1), title, fn, log)
    fig.suptitle(f"lrfast.schedules over {steps} steps (x: step n)")
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.04, top=0.93, hspace=0.5, wspace=0.25)
    paths = [os.path.join(out_dir, "schedules.png")]
    fig.savefig(paths[0], dpi=90)
    if per_schedule:
        for key, title, fn, log in examples:
            f = Figure(figsize=(5, 3))
            FigureCanvasAgg(f)
            draw(f.add_subplot(1, 1, 1), title, fn, log)
            f.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.9)
            path = os.path.join(out_dir, f"schedule_{key}.png")
            f.savefig(path, dpi=90)
            paths.append(path)
    return paths


def gallery_main(argv: Optional[List[str]] = None) -> int:
    """``python -m lrfast schedules --out DIR [--steps N] [--per-schedule]``: :func:`gallery`."""
    p = argparse.ArgumentParser(prog="python -m lrfast schedules",
                                description="Write a PNG gallery of lrfast's schedules.")
    p.add_argument("--out", default="lrfast-schedules", help="output directory "
                   "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=1000, help="steps plotted (default: %(default)s)")
    p.add_argument("--per-schedule", action="store_true", help="also one PNG per schedule")
    args = p.parse_args(argv)
    for path in gallery(args.out, steps=args.steps, per_schedule=args.per_schedule):
        print(path)
    return 0
