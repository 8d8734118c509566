#!/usr/bin/env python
"""Check that every update loop vectorizes, for both dtypes, in both ISA builds.

Recompiles the Cython-generated C of each build with the shipping flags plus
``-fopt-info-vec-optimized`` and counts, per kernel function and dtype
specialization, the source loops gcc reports as vectorized. Exits 1 if a
kernel has no vectorized loop, or if one of a kernel's unit-stride loops
stays scalar in every copy gcc made of it. Run after ``python setup.py build_ext -i``
(which leaves src/_kernels_*.c behind).

    python scripts/check_vectorization.py
"""
import bisect
import collections
import os
import re
import subprocess
import sys
import sysconfig

import runpy

import numpy as np

# Every kernel kind of the optimizer table, plus the reduction pass and the EMA blend.
_TABLE = runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "lrfast", "optim", "_table.py"))
KERNELS = [f"_{k}" for k in _TABLE["KINDS"]] + ["_sumsq", "_ema_blend", "_adam_ema"]
FLAGS = {"baseline": [], "avx2": ["-march=x86-64-v3"]}


def check(isa, root):
    c = os.path.join(root, "src", f"_kernels_{isa}.c")
    if not os.path.exists(c):
        sys.exit(f"{c} not found: build first (python setup.py build_ext -i)")
    cmd = [os.environ.get("CC", "gcc"), "-c", "-O3", "-fno-math-errno", "-fno-trapping-math",
           "-ffp-contract=off",
           "-fopenmp", "-fPIC", *FLAGS[isa], f"-I{np.get_include()}",
           f"-I{sysconfig.get_paths()['include']}", "-Isrc", c, "-o", os.devnull,
           "-fopt-info-vec-optimized"]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    lines = open(c).read().split("\n")
    funcs = [(i, m.group(1)) for i, line in enumerate(lines, 1)
             for m in [re.match(r"^static .*?(__pyx_\w+)\(", line)] if m]
    starts = [f[0] for f in funcs]
    loops = collections.defaultdict(set)
    scalar = collections.defaultdict(set)
    width = collections.defaultdict(set)
    for msg in out.stderr.splitlines():
        m = re.search(rf"_kernels_{isa}\.c:(\d+):\d+: "
                      r"(?:optimized: loop vectorized using (\d+) byte"
                      r"|missed: (couldn't vectorize loop))", msg)
        if not m:
            continue
        ln = int(m.group(1))
        name = funcs[bisect.bisect(starts, ln) - 1][1]
        m2 = re.match(r"__pyx_fuse_(\d)__pyx_f_\w+?_kernels_(?:avx2|baseline)_(_\w+)$", name)
        if m2:
            kname = m2.group(2)
            kname = kname[:-len("_loop")] if kname.endswith("_loop") else kname   # inlined body
            key = (kname, "float32" if m2.group(1) == "0" else "float64")
            if m.group(3):
                # a unit-stride element loop (not a lane-stride or chunk loop)
                if re.match(r"\s*for \(.*\+=1\) \{", lines[ln - 1]):
                    scalar[key].add(ln)
            else:
                loops[key].add(ln)
                width[key].add(int(m.group(2)))
    ok = True
    report = [f"[{isa}]"]
    for k in KERNELS:
        for dt in ("float32", "float64"):
            n = len(loops[(k, dt)])
            w = max(width[(k, dt)], default=0)
            left = sorted(scalar[(k, dt)] - loops[(k, dt)])
            note = f"; SCALAR loop(s) at {isa}.c lines {left}" if left else ""
            report.append(f"  {k:14s} {dt}: {n} loop(s) vectorized, widest {w * 8} bits{note}")
            ok &= n > 0 and not left
    return ok, "\n".join(report)


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    isas = ["baseline"] + (["avx2"] if os.path.exists(os.path.join(root, "src",
                                                                  "_kernels_avx2.c")) else [])
    from concurrent.futures import ThreadPoolExecutor     # one compiler process per build
    with ThreadPoolExecutor(len(isas)) as ex:
        results = list(ex.map(lambda isa: check(isa, root), isas))
    for _, report in results:
        print(report)
    sys.exit(0 if all(ok for ok, _ in results) else 1)
