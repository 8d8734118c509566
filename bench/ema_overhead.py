"""EMA's cost: one Adam step with the fused weight-EMA blend (lrfast.EMA)
against a plain Adam step, float32, one 1e7-element tensor (issue target:
<= 1.35x; the bytes moved grow 9/7 = 1.29x: Adam reads p, g, m, v and writes
p, m, v; the blend adds a read and a write of the average). Interleaved
rounds; the median and the best of the per-round means (the best is the
figure a busy machine disturbs least).

    python bench/ema_overhead.py [--n 10000000] [--rounds 15] [--steps 10]
"""
import argparse
import statistics
import time

import numpy as np

import lrfast


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    p1 = rng.standard_normal(a.n).astype(np.float32)
    p2 = p1.copy()
    g = [(rng.standard_normal(a.n) * 1e-3).astype(np.float32)]
    plain = lrfast.Adam([p1], lr=1e-4)
    ema = lrfast.EMA(lrfast.Adam([p2], lr=1e-4), 0.999)
    for _ in range(3):                      # warm up (first pages, thread policy)
        plain.step(g)
        ema.step(g)
    tp, te = [], []
    for _ in range(a.rounds):
        for fn, out in ((plain.step, tp), (ema.step, te)):
            t0 = time.perf_counter()
            for _ in range(a.steps):
                fn(g)
            out.append((time.perf_counter() - t0) / a.steps)
    for what, f in (("median", statistics.median), ("best", min)):
        mp, me = f(tp), f(te)
        print(f"n={a.n:.0e} float32 threads={lrfast.get_num_threads()} {what}: Adam "
              f"{mp * 1e3:.2f} ms, EMA(Adam) {me * 1e3:.2f} ms, ratio {me / mp:.3f} "
              "(bytes 9/7 = 1.29)")


if __name__ == "__main__":
    main()
