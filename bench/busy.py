"""Busy-machine benchmark: lrfast's default thread policy against one thread.

On a machine whose cores are all busy in other processes, an OpenMP barrier can
wait a whole scheduler time slice for a descheduled thread, so a parallel step
can be many times slower than a serial one. lrfast's default is adaptive (it
measures its own steps and falls back to one thread when threads lose; results
are bit-identical whatever it picks). This script checks that:

- busy: one pure-Python spin process per core (time-bounded, killed at the end);
  Adam fp32 at 1e5, 1e6 and 4e6 elements; default / one-thread step time,
  target <= 1.2 at each size;
- quiet: no spinners; default / one-thread at 1e6, target <= 0.7 on 2+ cores
  (the default still gets the thread speedup).

Method: three optimizers per size over separate copies of the same params, one
stepped with the default policy, one inside ``lrfast.threads(1)`` and one inside
``lrfast.threads(all)`` (for reference: what threads alone do on this machine
now); rounds rotate and reverse the order; each round times a block of steps
(at least 64, so the policy's probes are included) for each; the figure is the
median over rounds of the per-round ratio. Results depend on the machine's other load: the script
prints the load average and the CPU count it ran with.

    python bench/busy.py                      # both scenarios, all sizes
    python bench/busy.py --rounds 9 --json out.json
    python bench/busy.py --scenario busy --sizes 1e5,1e6
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import lrfast  # noqa: E402

SPIN = ("import time, sys\n"
        "end = time.monotonic() + float(sys.argv[1])\n"
        "while time.monotonic() < end:\n"
        "    pass\n")


def start_spinners(n: int, seconds: float):
    """n busy processes (pure-Python spin loops) that end by themselves after
    ``seconds`` (and are killed by ``stop_spinners``)."""
    return [subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            for _ in range(n)]


def stop_spinners(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def _make(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    return p, g


def _block(opt, g, steps: int, pinned) -> float:
    """Seconds per step over `steps` steps; pinned: a thread count (or False
    for the default policy)."""
    grads = [g]
    if pinned:
        with lrfast.threads(int(pinned)):
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step(grads)
            return (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step(grads)
    return (time.perf_counter() - t0) / steps


def measure(n: int, rounds: int, block_s: float) -> dict:
    """Median over rounds of default/one-thread step time for Adam fp32 at n."""
    p1, g = _make(n)
    d = lrfast.Adam([p1], lr=1e-3)
    one = lrfast.Adam([p1.copy()], lr=1e-3)
    nmax = lrfast.get_num_threads()
    allt = lrfast.Adam([p1.copy()], lr=1e-3)
    # warm up (page faults, thread pool, the policy's first samples)
    _block(d, g, 8, False)
    _block(allt, g, 8, nmax)
    t1 = _block(one, g, 8, 1)
    steps = max(64, int(block_s / max(t1, 1e-7)))
    runs = [("default", d, False), ("one", one, 1), ("all", allt, nmax)]
    times = {k: [] for k, _, _ in runs}
    for r in range(rounds):
        order = runs[r % 3:] + runs[:r % 3]
        for k, opt, pin in (order if r % 2 == 0 else order[::-1]):
            times[k].append(_block(opt, g, steps, pin))
    ratios = [a / b for a, b in zip(times["default"], times["one"])]
    ratios_all = [a / b for a, b in zip(times["all"], times["one"])]
    st = d._engine._policy_state()["step"] if hasattr(d, "_engine") else None
    return {"elements": n, "steps_per_block": steps, "rounds": rounds, "threads_all": nmax,
            "default_us": statistics.median(times["default"]) * 1e6,
            "one_thread_us": statistics.median(times["one"]) * 1e6,
            "all_threads_us": statistics.median(times["all"]) * 1e6,
            "ratio": statistics.median(ratios), "ratios": ratios,
            "ratio_all_threads": statistics.median(ratios_all), "policy": st}


def _steps(res) -> str:
    st = res.get("policy")
    if not st:
        return ""
    one, par = st["steps"]
    return f"  [default ran {one} one-thread and {par} threaded steps]"


def run(scenario: str, sizes, rounds: int, block_s: float) -> dict:
    ncpu = os.cpu_count() or 1
    out = {"scenario": scenario, "cpu_count": ncpu, "num_threads": lrfast.get_num_threads(),
           "thread_mode": lrfast.config()["thread_mode"],
           "loadavg_before": os.getloadavg() if hasattr(os, "getloadavg") else None,
           "results": []}
    procs = []
    from lrfast._dispatch import kernels as K
    if hasattr(K, "_policy_set_shared"):
        K._policy_set_shared(None)   # as in a fresh process: nothing learnt yet
    try:
        if scenario == "busy":
            budget = 30.0 + len(sizes) * rounds * block_s * 2 * 4
            procs = start_spinners(ncpu, budget)
            time.sleep(1.0)              # let them start spinning
        for n in sizes:
            res = measure(int(n), rounds, block_s)
            out["results"].append(res)
            print(f"  {scenario:5} Adam fp32 {int(n):>9,d}: default {res['default_us']:9.1f} us"
                  f"  one thread {res['one_thread_us']:9.1f} us  default/one = "
                  f"{res['ratio']:.2f}  ({res['threads_all']} pinned threads/one = "
                  f"{res['ratio_all_threads']:.2f})" + _steps(res), file=sys.stderr, flush=True)
    finally:
        stop_spinners(procs)
    out["loadavg_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", choices=["busy", "quiet", "both"], default="both")
    ap.add_argument("--sizes", default=None,
                    help="comma-separated element counts (busy default 1e5,1e6,4e6; quiet 1e6)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--block-seconds", type=float, default=0.15,
                    help="time per timed block of steps (at least 64 steps)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    if lrfast.config()["thread_mode"].startswith("pinned"):
        print("note: threads are pinned (set_num_threads/OMP settings); the default policy "
              "is what this measures", file=sys.stderr)
    report = {"lrfast": lrfast.__version__, "config": {k: str(v) for k, v in
                                                       lrfast.config().items()}}
    ok = True
    lines = []
    if args.scenario in ("busy", "both"):
        sizes = [float(s) for s in (args.sizes or "1e5,1e6,4e6").split(",")]
        report["busy"] = run("busy", sizes, args.rounds, args.block_seconds)
        for r in report["busy"]["results"]:
            good = r["ratio"] <= 1.2
            ok &= good
            lines.append(f"busy  {r['elements']:>9,d}  default/one {r['ratio']:.2f}  "
                         f"(target <= 1.20) {'PASS' if good else 'FAIL'}   pinned "
                         f"{r['threads_all']}/one {r['ratio_all_threads']:.2f}" + _steps(r))
    if args.scenario in ("quiet", "both"):
        sizes = [float(s) for s in (args.sizes or "1e6").split(",")]
        report["quiet"] = run("quiet", sizes, args.rounds, args.block_seconds)
        for r in report["quiet"]["results"]:
            if (os.cpu_count() or 1) >= 2 and lrfast.config()["openmp"]:
                good = r["ratio"] <= 0.7
                ok &= good
                verdict = f"(target <= 0.70) {'PASS' if good else 'FAIL'}"
            else:
                verdict = "(no target: one core or a serial build)"
            lines.append(f"quiet {r['elements']:>9,d}  default/one {r['ratio']:.2f}  {verdict}"
                         f"   pinned {r['threads_all']}/one {r['ratio_all_threads']:.2f}"
                         + _steps(r))
            if r["ratio_all_threads"] > 0.8:
                lines.append("      (pinned threads do not win here either: the machine is not "
                             "quiet; other processes hold the cores)")
    la = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\nlrfast {lrfast.__version__}, {os.cpu_count()} CPUs, "
          f"{lrfast.config()['thread_mode']}, load average now {la}")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
