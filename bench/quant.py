"""8-bit blockwise quantizer speed: ns per element to encode and to decode
blocks of 256, one thread, per kernel build (the loops the fused 8-bit
optimizer kernels call per block).

    python bench/quant.py [--n 1048576] [--reps 50]
"""
import argparse

import numpy as np

from lrfast._dispatch import available_isas, load


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 20)
    ap.add_argument("--reps", type=int, default=50)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    g = (rng.standard_normal(a.n) * np.exp(rng.uniform(-6, 2, a.n))).astype(np.float32)
    data = {"signed (m = 0.1 g)": (np.float32(0.1) * g, 1),
            "unsigned (v = 1e-3 g^2)": (np.float32(1e-3) * g * g, 0)}
    print(f"{'build':10s} {'map':26s} {'encode ns/el':>13s} {'decode ns/el':>13s}")
    for isa in available_isas():
        K = load(isa)
        for name, (x, signed) in data.items():
            K._q8_bench(x, signed, 2)                      # warm up
            best = min((K._q8_bench(x, signed, a.reps) for _ in range(3)),
                       key=lambda t: t[0] + t[1])
            te, td = (t / a.reps / a.n * 1e9 for t in best)
            print(f"{isa:10s} {name:26s} {te:13.3f} {td:13.3f}")


if __name__ == "__main__":
    main()
