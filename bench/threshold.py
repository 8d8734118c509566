"""Where do 2 (or T) threads start to beat 1? Measures the serial/parallel
threshold (``lrfast.set_parallel_threshold``, default 32768 elements).

    python bench/threshold.py [--optimizer adam] [--dtype float32] [--threads 2]
                              [--sizes 2048,4096,...] [--rounds 15] [--cold]

For each size, one optimizer is stepped at 1 thread and at T threads with the
threshold forced to 0 (so T threads really run), in interleaved rounds (lrfast
.bench's machinery: calibrated blocks, medians of per-round ratios).

Two regimes:
* hot (default): back-to-back steps, so the OpenMP workers are still
  spin-waiting when the next step starts (a tight benchmark loop);
* ``--cold``: every timed step follows a 15 ms sleep, so the workers have gone
  to sleep (libgomp spins ~8 ms) and must be woken, as in a training loop whose
  forward/backward pass takes longer than that between two steps.

The suggested threshold is the smallest size from which T threads win by at
least ``--margin`` (default 5%) at that size and every larger one.
"""
import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lrfast  # noqa: E402
from lrfast.cli import bench as B  # noqa: E402

DEFAULT_SIZES = [2048, 4096, 8192, 12288, 16384, 24576, 32768, 49152, 65536, 98304, 131072,
                 262144, 524288, 1048576]


def _cold_times(cs, rounds, sleep_s):
    """One call per timed block, each after a sleep long enough for the
    workers to park; interleaved as in lrfast.cli.bench."""
    import gc
    times = {c.key: [] for c in cs}
    gc.disable()
    try:
        for c in cs:               # warm
            c.prepare()
            c.fn()
        for r in range(rounds):
            for i in B._order(len(cs), r):
                c = cs[i]
                c.prepare()
                time.sleep(sleep_s)
                t0 = time.perf_counter_ns()
                c.fn()
                times[c.key].append(time.perf_counter_ns() - t0)
    finally:
        gc.enable()
    return times


def sweep(optimizer="adam", dtype="float32", threads=2, sizes=DEFAULT_SIZES, rounds=15,
          cold=False, block_s=0.005, margin=1.05, out=print):
    cls, hp = B.OPTIMIZERS[optimizer]
    rows = []
    thr = lrfast.get_parallel_threshold()
    lrfast.set_parallel_threshold(0)
    try:
        for n in sizes:
            params, grads = B.make_inputs([(n,)], np.dtype(dtype))
            opt = getattr(lrfast, cls)(params, **hp)
            fn = functools.partial(opt.step, grads)
            cs = [B.Contender("lrfast", 1, fn, B._lrfast_threads),
                  B.Contender("lrfast", threads, fn, B._lrfast_threads)]
            meter = B._CpuMeter().start()
            if cold:
                times = _cold_times(cs, rounds * 3, 0.015)
            else:
                times = B._measure(cs, rounds, block_s * 1e9, 0.001, 0.012)
            others = meter.stop()
            t1 = float(np.median(times["lrfast@1"]))
            tt = float(np.median(times[f"lrfast@{threads}"]))
            sp, q1, q3 = B._median_ratio(times["lrfast@1"], times[f"lrfast@{threads}"])
            rows.append({"n": n, "us_1": t1 / 1e3, f"us_{threads}": tt / 1e3, "speedup": sp,
                         "q1": q1, "q3": q3, "others_cpu": others})
            oc = "-" if others is None else f"{100 * others:.0f}%"
            out(f"{n:>9} {t1 / 1e3:10.2f} {tt / 1e3:10.2f} {sp:8.2f}x  [{q1:.2f} {q3:.2f}]"
                f"  others {oc}")
    finally:
        lrfast.set_parallel_threshold(thr)
    best = None
    for i in range(len(rows)):
        if all(r["speedup"] >= margin for r in rows[i:]):
            best = rows[i]["n"]
            break
    return rows, best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizer", default="adam", choices=sorted(B.OPTIMIZERS))
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default=None)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--margin", type=float, default=1.05)
    a = ap.parse_args(argv)
    sizes = [B._size(x) for x in a.sizes.split(",")] if a.sizes else DEFAULT_SIZES
    m = B.machine_info([1, a.threads])
    print(f"{a.optimizer} {a.dtype}: 1 vs {a.threads} threads, threshold forced to 0, "
          f"{'cold (15 ms sleep before each step)' if a.cold else 'hot (back-to-back)'}; "
          f"{m['cpu']}, {m['cores']} cores, isa {m['isa']}, load {m['loadavg_start']}")
    print(f"{'elements':>9} {'us@1':>10} {'us@' + str(a.threads):>10} {'speedup':>9}  "
          f"[quartiles]")
    rows, best = sweep(a.optimizer, a.dtype, a.threads, sizes, a.rounds, a.cold,
                       margin=a.margin)
    if best is None:
        print(f"{a.threads} threads never won by {a.margin:.2f}x in this range")
    else:
        print(f"{a.threads} threads win by >= {a.margin:.2f}x from {best} elements on "
              f"(current threshold {lrfast.get_parallel_threshold()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
