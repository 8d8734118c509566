"""``python -m lrfast bench --lowp``: Adam with fewer bytes per element.

Variants of one ``lrfast.Adam`` step (lr 1e-3) on one tensor of each size,
against float32 Adam, each against its own byte ceiling, and bitsandbytes'
CPU ``Adam8bit`` where it is installed. One process, interleaved rounds; each
figure is the median over rounds of a per-round time ratio.

    python -m lrfast bench --lowp [--sizes 1e3,1e5,1e6,1e7] [--rounds 9] [--threads 2]
    python -m lrfast bench --lowp --quick            # 1e4 and 1e5, 3 rounds

Bytes per element (read + written; 8-bit blocks of 256 add 4/256 per state):

==========================  =====================================  =======
variant                     arrays                                 B/el
==========================  =====================================  =======
fp32                        p, g, m, v float32                     28
bf16 state                  m, v bfloat16                          20
int8 state                  m, v 8-bit + absmax                    16.06
bf16 p+g, fp32 state        p, g bfloat16                          20
bf16 p+g, int8 state        p, g bfloat16; m, v 8-bit              10.06
bf16 p+g+master, int8       + a float32 master copy                18.06
==========================  =====================================  =======

The ceiling of a variant is lrfast's SGD-momentum pass (read p, g, buf; write
buf, p: 20 B per float32 element, 3:2 reads to writes, as Adam's) over
``B/20`` float32 elements per element: a pass that moves the variant's bytes
and does nothing else. "% ceiling" is ceiling time over variant time.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["VARIANTS", "run", "format_table", "main"]

# name: (param dtype, state_dtype, master, bytes per element)
VARIANTS: Dict[str, Tuple[str, str, bool, float]] = {
    "fp32": ("float32", "float32", False, 28.0),
    "bf16 state": ("float32", "bfloat16", False, 20.0),
    "int8 state": ("float32", "int8", False, 16.0 + 16 / 256),
    "bf16 p+g, fp32 state": ("bfloat16", "float32", False, 20.0),
    "bf16 p+g, int8 state": ("bfloat16", "int8", False, 10.0 + 16 / 256),
    "bf16 p+g+master, int8": ("bfloat16", "int8", True, 18.0 + 16 / 256),
}


def _state_bytes(variant: str) -> float:
    """Optimizer memory per param (bytes): state, plus the master copy."""
    _, sd, master, _ = VARIANTS[variant]
    per = {"float32": 8.0, "bfloat16": 4.0, "int8": 2.0 + 8 / 256}[sd]
    return per + (4.0 if master else 0.0)


def _makers(n: int, seed: int) -> Dict[str, Callable[[], Any]]:
    import lrfast
    from .bench import Ceiling
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(np.float32)
    g0 = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    out: Dict[str, Callable[[], Any]] = {}
    bf16 = None
    for name, (pdt, sd, master, bpe) in VARIANTS.items():
        if pdt == "bfloat16" and bf16 is None:
            from ..optim._lowp import bfloat16
            bf16 = bfloat16()
        dt = bf16 if pdt == "bfloat16" else np.float32
        p, g = p0.astype(dt), [g0.astype(dt)]
        opt = lrfast.Adam([p], lr=1e-3, state_dtype=sd, master_weights=master)
        out[name] = functools.partial(opt.step, g)
        m = max(1, int(round(n * bpe / 20.0)))
        c = Ceiling([p0[:m].copy() if m <= n else np.resize(p0, m)],
                    [np.resize(g0, m)], 1)
        out["ceiling " + name] = c.step
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError:
        return out
    tp = torch.from_numpy(p0.copy()).requires_grad_()
    tp.grad = torch.from_numpy(g0.copy())
    bopt = bnb.optim.Adam8bit([tp], lr=1e-3, min_8bit_size=4096)
    out["bitsandbytes Adam8bit"] = bopt.step
    return out


def _case(n: int, rounds: int, block_s: float, seed: int) -> Dict[str, Any]:
    steps = _makers(n, seed)
    for f in steps.values():          # warm up: state allocated, pools started
        for _ in range(2):
            f()
    reps: Dict[str, int] = {}
    for k, f in steps.items():
        t0 = time.perf_counter()
        f()
        reps[k] = max(1, int(block_s / max(time.perf_counter() - t0, 1e-7)))
    times: Dict[str, List[float]] = {k: [] for k in steps}
    order = list(steps)
    bnb_rounds = rounds if n <= 1_000_000 else min(rounds, 3)   # its step takes seconds there
    for r in range(rounds):
        for k in (order if r % 2 == 0 else order[::-1]):
            if k == "bitsandbytes Adam8bit" and r >= bnb_rounds:
                continue
            f, m = steps[k], reps[k]
            t0 = time.perf_counter()
            for _ in range(m):
                f()
            times[k].append((time.perf_counter() - t0) / m)
    res: Dict[str, Any] = {"elements": n, "ns_per_el": {}, "x fp32": {}, "pct ceiling": {},
                           "x bitsandbytes": {}}
    for k, v in times.items():
        res["ns_per_el"][k] = 1e9 * statistics.median(v) / n
    for k in VARIANTS:
        res["x fp32"][k] = statistics.median(a / b for a, b in zip(times["fp32"], times[k]))
        res["pct ceiling"][k] = 100 * statistics.median(
            a / b for a, b in zip(times["ceiling " + k], times[k]))
        if "bitsandbytes Adam8bit" in times:       # over the rounds bitsandbytes ran
            res["x bitsandbytes"][k] = statistics.median(
                a / b for a, b in zip(times["bitsandbytes Adam8bit"], times[k]))
    return res


def run(sizes: Optional[Sequence[float]] = None, rounds: int = 9, quick: bool = False,
        seed: int = 0) -> Dict[str, Any]:
    if quick:
        sizes, rounds, block_s = sizes or [1e4, 1e5], 3, 0.002
    else:
        sizes, block_s = sizes or [1e3, 1e5, 1e6, 1e7], 0.05
    import lrfast
    res: Dict[str, Any] = {"threads": lrfast.get_num_threads(), "loadavg": os.getloadavg()[0],
                           "state_bytes_per_param": {k: _state_bytes(k) for k in VARIANTS},
                           "bytes_per_element": {k: v[3] for k, v in VARIANTS.items()},
                           "cases": {}}
    for s in sizes:
        res["cases"][f"{int(s):.0e}"] = _case(int(s), rounds, block_s, seed)
    res["loadavg_after"] = os.getloadavg()[0]
    return res


def format_table(res: Dict[str, Any]) -> str:
    lines = [f"Adam, lrfast {res['threads']} threads, load {res['loadavg']:.1f} -> "
             f"{res['loadavg_after']:.1f}; x fp32 = fp32 time / variant time (> 1: faster)"]
    for size, c in res["cases"].items():
        lines.append(f"\n{size} elements")
        lines.append(f"  {'variant':<24} {'B/el':>6} {'state B/param':>13} {'ns/el':>8} "
                     f"{'x fp32':>7} {'% ceiling':>9} {'x bnb':>7}")
        for k in VARIANTS:
            xb = c["x bitsandbytes"].get(k)
            lines.append(f"  {k:<24} {res['bytes_per_element'][k]:>6.2f} "
                         f"{res['state_bytes_per_param'][k]:>13.2f} {c['ns_per_el'][k]:>8.3f} "
                         f"{c['x fp32'][k]:>6.2f}x {c['pct ceiling'][k]:>8.0f}% "
                         + (f"{xb:>6.1f}x" if xb is not None else "     -"))
        if "bitsandbytes Adam8bit" in c["ns_per_el"]:
            lines.append(f"  {'bitsandbytes Adam8bit':<24} {'':>6} {2 + 8 / 256:>13.2f} "
                         f"{c['ns_per_el']['bitsandbytes Adam8bit']:>8.3f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="lrfast bench --lowp", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=None, help="comma list, e.g. 1e3,1e5,1e6,1e7")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=None, help="lrfast threads (default: all)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None, help="write the result here")
    a = p.parse_args(argv)
    try:
        import ml_dtypes  # noqa: F401  (optional dependency)
    except ImportError:
        p.error("--lowp needs ml_dtypes (pip install 'lrfast[lowp]')")
    import lrfast
    if a.threads:
        lrfast.set_num_threads(a.threads)
    sizes = [float(x) for x in a.sizes.split(",")] if a.sizes else None
    res = run(sizes=sizes, rounds=a.rounds, quick=a.quick)
    print(format_table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0
