"""lrfast.torch.Adam against torch.optim.Adam(fused=True) and (foreach=True) on
one float32 CPU tensor of 1e3, 1e5 and 1e7 elements: same process, interleaved
rounds, the median of the per-round time ratios (torch / lrfast: > 1 means
lrfast is faster).

    python bench/torch_adam.py [--rounds 30]
"""
import argparse
import time

import numpy as np
import torch

import lrfast
import lrfast.torch as lt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--sizes", type=float, nargs="*", default=[1e3, 1e5, 1e7])
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"lrfast {lrfast.get_num_threads()} threads")
    print(f"{'size':>8} {'lrfast us':>10} {'fused us':>10} {'foreach us':>10} "
          f"{'x fused':>8} {'x foreach':>9}")
    for size in args.sizes:
        n = int(size)
        opts = {}
        for name, make in (("lrfast", lambda ps: lt.Adam(ps, lr=1e-3)),
                           ("fused", lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True)),
                           ("foreach", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True))):
            p = torch.randn(n, requires_grad=True)
            p.grad = torch.randn(n) * 1e-3
            opts[name] = make([p])
        reps = max(1, int(2e6 // n))            # ~ the same work per timing
        times = {k: [] for k in opts}
        for _ in range(3):                      # warm up
            for o in opts.values():
                o.step()
        for _ in range(args.rounds):
            for k, o in opts.items():
                t0 = time.perf_counter()
                for _ in range(reps):
                    o.step()
                times[k].append((time.perf_counter() - t0) / reps)
        t = {k: np.array(v) for k, v in times.items()}
        med = {k: 1e6 * float(np.median(v)) for k, v in t.items()}
        rf = float(np.median(t["fused"] / t["lrfast"]))
        re = float(np.median(t["foreach"] / t["lrfast"]))
        print(f"{n:>8.0e} {med['lrfast']:>10.1f} {med['fused']:>10.1f} {med['foreach']:>10.1f} "
              f"{rf:>7.2f}x {re:>8.2f}x")


if __name__ == "__main__":
    main()
