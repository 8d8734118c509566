"""``python -m lrfast bench --torch``: ``lrfast.torch.AdamW`` against
``torch.optim.AdamW(fused=True)`` (and ``foreach=True``) on float32 CPU tensors.

One process, interleaved rounds; each figure is the median over rounds of the
per-round time ratio torch / lrfast (> 1: lrfast is faster). Cases: one tensor
of each size, and GPT-2-small's 148 parameter shapes (124,439,808 params).
Needs torch.

    python -m lrfast bench --torch [--sizes 1e3,1e5,1e6,1e7] [--gpt2] [--rounds 15]
    python -m lrfast bench --torch --quick          # 1e3 and 1e4, 3 rounds
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["gpt2_small_shapes", "run", "main"]


def gpt2_small_shapes() -> List[Tuple[int, ...]]:
    """The 148 parameter shapes of GPT-2 small (124M params, tied embeddings)."""
    d, ff, layers = 768, 3072, 12
    shapes: List[Tuple[int, ...]] = [(50257, d), (1024, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),
                   (d,), (d,), (d, ff), (ff,), (ff, d), (d,)]
    return shapes + [(d,), (d,)]


def _makers(torch: Any) -> Dict[str, Callable[[list], Any]]:
    import lrfast.torch as lt
    return {"lrfast": lambda ps: lt.AdamW(ps, lr=1e-3),  # type: ignore[call-arg]
            "torch-fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
            "torch-foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True)}


def _case(torch: Any, shapes: Sequence[Tuple[int, ...]], rounds: int,
          block_s: float) -> Dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    opts = {}
    for name, make in _makers(torch).items():
        ps = []
        for s in shapes:
            p = torch.randn(s, generator=gen, requires_grad=True)
            p.grad = torch.randn(s, generator=gen) * 1e-3
            ps.append(p)
        opts[name] = make(ps)
    for o in opts.values():             # warm up (state allocated, pools started)
        for _ in range(3):
            o.step()
    t0 = time.perf_counter()
    opts["lrfast"].step()
    reps = max(1, int(block_s / max(time.perf_counter() - t0, 1e-7)))
    times: Dict[str, List[float]] = {k: [] for k in opts}
    order = list(opts)
    for r in range(rounds):
        for k in (order if r % 2 == 0 else order[::-1]):
            o = opts[k]
            t0 = time.perf_counter()
            for _ in range(reps):
                o.step()
            times[k].append((time.perf_counter() - t0) / reps)
    out: Dict[str, Any] = {"elements": int(sum(int(_prod(s)) for s in shapes)),
                           "tensors": len(shapes),
                           "us": {k: 1e6 * statistics.median(v) for k, v in times.items()}}
    for k in ("torch-fused", "torch-foreach"):
        out[f"x {k}"] = statistics.median(a / b for a, b in zip(times[k], times["lrfast"]))
    return out


def _prod(s: Tuple[int, ...]) -> int:
    n = 1
    for x in s:
        n *= x
    return n


def run(sizes: Optional[Sequence[float]] = None, gpt2: bool = False, rounds: int = 15,
        quick: bool = False) -> Dict[str, Any]:
    """Time every case; returns {case: {"us": {...}, "x torch-fused": r, ...}}."""
    import torch
    if quick:
        sizes, rounds, block_s = sizes or [1e3, 1e4], 3, 0.002
    else:
        sizes, block_s = sizes or [1e3, 1e5, 1e6, 1e7], 0.02
    res: Dict[str, Any] = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                           "cases": {}}
    for size in sizes:
        res["cases"][f"{int(size):.0e}"] = _case(torch, [(int(size),)], rounds, block_s)
    if gpt2:
        res["cases"]["GPT-2 small (148 tensors)"] = _case(torch, gpt2_small_shapes(),
                                                          max(3, rounds // 3), block_s)
    return res


def format_table(res: Dict[str, Any]) -> str:
    lines = [f"torch {res['torch']} ({res['torch_threads']} threads); lrfast.torch.AdamW "
             "against torch.optim.AdamW; ratio = torch time / lrfast time",
             f"{'case':<28} {'elements':>12} {'lrfast us':>11} {'fused us':>11} "
             f"{'foreach us':>11} {'x fused':>8} {'x foreach':>9}"]
    for name, c in res["cases"].items():
        us = c["us"]
        lines.append(f"{name:<28} {c['elements']:>12,} {us['lrfast']:>11.1f} "
                     f"{us['torch-fused']:>11.1f} {us['torch-foreach']:>11.1f} "
                     f"{c['x torch-fused']:>7.2f}x {c['x torch-foreach']:>8.2f}x")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="lrfast bench --torch",
                                description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=None, help="comma list, e.g. 1e3,1e5,1e6,1e7")
    p.add_argument("--gpt2", action="store_true", help="add GPT-2 small's 148 shapes")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None, help="write the result here")
    a = p.parse_args(argv)
    try:
        import torch  # noqa: F401  (optional dependency)
    except ImportError:
        p.error("--torch needs PyTorch (pip install torch)")
    sizes = [float(x) for x in a.sizes.split(",")] if a.sizes else None
    res = run(sizes=sizes, gpt2=a.gpt2, rounds=a.rounds, quick=a.quick)
    print(format_table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0
