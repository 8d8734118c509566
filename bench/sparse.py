"""SparseAdam with a row-sparse grad against dense Adam on the same table.

An embedding table of ``rows x dim`` (default 100000 x 64, float32). Each step
of SparseAdam gets a ``lrfast.RowSparse`` grad touching ``frac`` of the rows
(default 1%, distinct random rows); dense Adam gets the full dense grad (what a
dense step has to do for the same table). Rounds alternate the two; each round
times a block of steps of each; the figure is the median over rounds of the
per-round ratio dense / sparse (target >= 20x at 1%). Also reported: sparse SGD
and sparse Adagrad against their dense steps.

    python bench/sparse.py
    python bench/sparse.py --rows 100000 --dim 64 --frac 0.01 --rounds 11 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import lrfast


def _block(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def measure(name, rows, dim, frac, rounds, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    k = max(1, int(rows * frac))
    p_sparse = (rng.standard_normal((rows, dim)) * 0.1).astype(dtype)
    p_dense = p_sparse.copy()
    idx = [np.sort(rng.choice(rows, k, replace=False)) for _ in range(8)]
    vals = [rng.standard_normal((k, dim)).astype(dtype) for _ in range(8)]
    grads = [lrfast.RowSparse(i, v) for i, v in zip(idx, vals)]
    dense = [g.to_dense((rows, dim)) for g in grads]
    sparse_cls, dense_cls = {"SparseAdam": (lrfast.SparseAdam, lrfast.Adam),
                             "SGD": (lrfast.SGD, lrfast.SGD),
                             "Adagrad": (lrfast.Adagrad, lrfast.Adagrad)}[name]
    so, do = sparse_cls([p_sparse], lr=1e-3), dense_cls([p_dense], lr=1e-3)
    it = [0]

    def s_step():
        it[0] += 1
        so.step([grads[it[0] % 8]])

    def d_step():
        it[0] += 1
        do.step([dense[it[0] % 8]])

    s_step(), d_step()                       # warm up (first touch, thread pool)
    ns = max(5, int(0.05 / max(_block(s_step, 3), 1e-7)))
    nd = max(3, int(0.05 / max(_block(d_step, 2), 1e-7)))
    ratios, ts, td = [], [], []
    for r in range(rounds):
        if r % 2:
            a, b = _block(d_step, nd), _block(s_step, ns)
        else:
            b, a = _block(s_step, ns), _block(d_step, nd)
        ratios.append(a / b)
        ts.append(b)
        td.append(a)
    return statistics.median(ratios), statistics.median(ts), statistics.median(td), k


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--frac", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--threads", type=int, default=0, help="0: lrfast's default")
    a = ap.parse_args(argv)
    if a.threads:
        lrfast.set_num_threads(a.threads)
    print(f"table {a.rows} x {a.dim} float32, {a.frac:.2%} of rows touched, "
          f"{lrfast.get_num_threads()} threads")
    for name in ("SparseAdam", "SGD", "Adagrad"):
        ratio, ts, td, k = measure(name, a.rows, a.dim, a.frac, a.rounds)
        dense = "Adam" if name == "SparseAdam" else name
        print(f"{name:10s} sparse {ts * 1e6:9.1f} us   dense {dense} {td * 1e6:9.1f} us   "
              f"dense/sparse {ratio:6.1f}x  ({k} rows)")


if __name__ == "__main__":
    main()
