"""The per-step Python path: what a schedule, a None grad and the functional
layer cost on top of the kernel, at sizes where the kernel itself is cheap.

Cases (fp32 Adam, 1e3 elements unless said otherwise), each timed against its
baseline in interleaved rounds; the figure is the median over rounds of the
ratio case/baseline:

- ``ExponentialDecay`` lr, warmup+cosine ``Sequence`` lr, a Python lambda lr,
  each against a float lr;
- 100 tensors x 16 elements after one step with a ``None`` grad, against a
  fresh optimizer over the same shapes;
- ``kernels.adam_step`` on one array with caller-held state, against
  ``Adam.step``.

    python -m lrfast bench --step-path [--rounds 15] [--json PATH]
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

import lrfast
from lrfast import kernels, schedules

__all__ = ["run", "format_table", "main", "CASES"]


def _adam(lr, n=1000):
    p = np.zeros(n, np.float32)
    g = np.full(n, 1e-3, np.float32)
    opt = lrfast.Adam([p], lr=lr)
    return lambda: opt.step([g])


def _many(none_first: bool, count=100, size=16):
    ps = [np.zeros(size, np.float32) for _ in range(count)]
    gs = [np.full(size, 1e-3, np.float32) for _ in range(count)]
    opt = lrfast.Adam(ps, lr=1e-3)
    if none_first:
        opt.step([None] + gs[1:])
    return lambda: opt.step(gs)


def _functional(n=1000):
    p = np.zeros(n, np.float32)
    g = np.full(n, 1e-3, np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    state = {"t": 0}

    def step():
        state["t"] += 1
        kernels.adam_step(p, g, m, v, lr=1e-3, step=state["t"])
    return step


def _warmup_cosine():
    return schedules.Sequence([schedules.LinearWarmup(1e-3, 0.0, 1.0, 1000),
                               schedules.CosineDecay(1e-3, 10 ** 6)], [1000])


# name -> (case factory, baseline factory, target ratio)
CASES: Dict[str, Tuple[Callable[[], Callable[[], object]], Callable[[], Callable[[], object]],
                       float]] = {
    "ExponentialDecay lr / float lr": (
        lambda: _adam(schedules.ExponentialDecay(1e-3, decay=1e-6)), lambda: _adam(1e-3), 1.3),
    "warmup+cosine Sequence lr / float lr": (
        lambda: _adam(_warmup_cosine()), lambda: _adam(1e-3), 1.3),
    "lambda lr / float lr": (lambda: _adam(lambda n: 1e-3), lambda: _adam(1e-3), 1.8),
    "100x16 after a None grad / fresh": (lambda: _many(True), lambda: _many(False), 1.2),
    "kernels.adam_step / Adam.step": (_functional, lambda: _adam(1e-3), 1.5),
}


def _time(fn, number):
    t0 = time.perf_counter_ns()
    for _ in range(number):
        fn()
    return (time.perf_counter_ns() - t0) / number


def run(rounds: int = 15, number: int = 2000) -> List[Dict[str, Any]]:
    """Median ratios of each case to its baseline, interleaved, one process."""
    out = []
    for name, (case, base, target) in CASES.items():
        a, b = case(), base()
        for _ in range(200):           # warm both (caches, first-step work)
            a()
            b()
        ratios, ta, tb = [], [], []
        for r in range(rounds):
            order = (a, b) if r % 2 == 0 else (b, a)
            t = {id(f): _time(f, number) for f in order}
            ta.append(t[id(a)])
            tb.append(t[id(b)])
            ratios.append(t[id(a)] / t[id(b)])
        out.append({"case": name, "ratio": statistics.median(ratios), "target": target,
                    "case_us": statistics.median(ta) / 1e3,
                    "baseline_us": statistics.median(tb) / 1e3})
    return out


def format_table(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'case':40s} {'ratio':>7s} {'target':>7s} {'case us':>8s} {'base us':>8s}"]
    for r in rows:
        ok = "ok" if r["ratio"] <= r["target"] else "MISSED"
        lines.append(f"{r['case']:40s} {r['ratio']:7.2f} {r['target']:6.1f}x "
                     f"{r['case_us']:8.2f} {r['baseline_us']:8.2f}  {ok}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse
    import json
    p = argparse.ArgumentParser(prog="lrfast bench --step-path", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    p.add_argument("--number", type=int, default=2000, help="steps per timing (default 2000)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    rows = run(a.rounds, a.number)
    print(format_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
