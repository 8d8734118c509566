"""``python -m lrfast bench --torch``: ``lrfast.torch.AdamW`` against
``torch.optim.AdamW(fused=True)`` (and ``foreach=True``) on float32 CPU tensors.

One process, interleaved rounds; each figure is the median over rounds of the
per-round time ratio torch / lrfast (> 1: lrfast is faster). Cases: one tensor
of each size, and GPT-2-small's 148 parameter shapes (124,439,808 params).
Needs torch.

Where the ``deepspeed`` package is installed and its CPU Adam op builds (it
compiles at first use: a C++ compiler and torch's headers, several minutes
once, then cached under ~/.cache/torch_extensions), DeepSpeed's
``DeepSpeedCPUAdam`` (adamw_mode, the same weight decay) runs in the same
rounds ("x deepspeed"); otherwise the runner prints why it was skipped. It is
on by default, off with ``--quick`` unless ``--deepspeed`` is given.

    python -m lrfast bench --torch [--sizes 1e3,1e5,1e6,1e7] [--gpt2] [--rounds 15]
    python -m lrfast bench --torch --quick          # 1e3 and 1e4, 3 rounds
    python -m lrfast bench --torch --no-deepspeed   # without DeepSpeedCPUAdam
    python -m lrfast bench --torch --master         # + bf16 params, fp32 master weights
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


def deepspeed_maker(torch: Any) -> Tuple[Optional[Callable[[list], Any]], str]:
    """``(maker, "")`` when DeepSpeed's CPU Adam builds and steps here, else
    ``(None, why not)``. The maker builds ``DeepSpeedCPUAdam`` with
    lrfast.torch.AdamW's math (adamw_mode, weight_decay=0.01, bias correction)."""
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception as e:          # not installed, or its import fails
        return None, f"deepspeed is not importable ({type(e).__name__}: {e})"

    def make(ps):
        return DeepSpeedCPUAdam(ps, lr=1e-3, weight_decay=0.01, adamw_mode=True)
    try:
        p = torch.zeros(8, requires_grad=True)
        p.grad = torch.ones(8)
        make([p]).step()            # compiles the op at first use
        if not float(p.detach()[0]) < 0.0:
            return None, "DeepSpeedCPUAdam's step did not move the param"
    except Exception as e:
        msg = str(e).strip().splitlines()
        return None, (f"DeepSpeedCPUAdam's op did not build or run ({type(e).__name__}: "
                      f"{msg[-1] if msg else ''})")
    return make, ""


def _case(torch: Any, shapes: Sequence[Tuple[int, ...]], rounds: int,
          block_s: float, extra: Optional[Dict[str, Callable[[list], Any]]] = None
          ) -> Dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    opts = {}
    for name, make in {**_makers(torch), **(extra or {})}.items():
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
    for k in [k for k in opts if k != "lrfast"]:
        out[f"x {k}"] = statistics.median(a / b for a, b in zip(times[k], times["lrfast"]))
    return out


def _prod(s: Tuple[int, ...]) -> int:
    n = 1
    for x in s:
        n *= x
    return n


def run(sizes: Optional[Sequence[float]] = None, gpt2: bool = False, rounds: int = 15,
        quick: bool = False, deepspeed: Optional[bool] = None) -> Dict[str, Any]:
    """Time every case; returns {case: {"us": {...}, "x torch-fused": r, ...}}
    and, under "deepspeed", whether DeepSpeedCPUAdam ran or why it was skipped
    (``deepspeed=None``: tried unless ``quick``)."""
    import os
    import torch
    if quick:
        sizes, rounds, block_s = sizes or [1e3, 1e4], 3, 0.002
    else:
        sizes, block_s = sizes or [1e3, 1e5, 1e6, 1e7], 0.02
    res: Dict[str, Any] = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                           "load_average": list(os.getloadavg()), "cases": {}}
    extra: Dict[str, Callable[[list], Any]] = {}
    if deepspeed if deepspeed is not None else not quick:
        make, why = deepspeed_maker(torch)
        if make is not None:
            extra["deepspeed"] = make
        res["deepspeed"] = "ran" if make is not None else f"skipped: {why}"
    else:
        res["deepspeed"] = "not requested"
    for size in sizes:
        res["cases"][f"{int(size):.0e}"] = _case(torch, [(int(size),)], rounds, block_s, extra)
    if gpt2:
        res["cases"]["GPT-2 small (148 tensors)"] = _case(torch, gpt2_small_shapes(),
                                                          max(3, rounds // 3), block_s, extra)
    return res


def master_case(torch: Any, n: int, rounds: int, block_s: float) -> Dict[str, Any]:
    """bfloat16 params with float32 master weights (the ZeRO-Offload step):
    ``lrfast.torch.AdamW(master_weights=True)`` against the same step written
    with torch: fused AdamW on the float32 masters, then ``p.copy_(master)``."""
    import lrfast.torch as lt
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=gen)
    g = (torch.randn(n, generator=gen) * 1e-3)
    p = x.to(torch.bfloat16).requires_grad_()
    p.grad = g.to(torch.bfloat16)
    opt = lt.AdamW([p], lr=1e-3, master_weights=True)  # type: ignore[call-arg]
    q = x.to(torch.bfloat16)
    m = x.clone().requires_grad_()
    m.grad = g.to(torch.bfloat16).float()
    topt = torch.optim.AdamW([m], lr=1e-3, fused=True)

    def torch_step():
        topt.step()
        with torch.no_grad():
            q.copy_(m)
    steps = {"lrfast": opt.step, "torch-fused+copy_": torch_step}
    for f in steps.values():
        for _ in range(3):
            f()
    t0 = time.perf_counter()
    opt.step()
    reps = max(1, int(block_s / max(time.perf_counter() - t0, 1e-7)))
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for r in range(rounds):
        for k in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            t0 = time.perf_counter()
            for _ in range(reps):
                steps[k]()
            times[k].append((time.perf_counter() - t0) / reps)
    return {"elements": n, "us": {k: 1e6 * statistics.median(v) for k, v in times.items()},
            "x torch-fused+copy_": statistics.median(
                a / b for a, b in zip(times["torch-fused+copy_"], times["lrfast"]))}


def format_table(res: Dict[str, Any]) -> str:
    ds = any("deepspeed" in c["us"] for c in res["cases"].values())
    lines = [f"torch {res['torch']} ({res['torch_threads']} threads); lrfast.torch.AdamW "
             "against torch.optim.AdamW; ratio = other time / lrfast time",
             f"{'case':<28} {'elements':>12} {'lrfast us':>11} {'fused us':>11} "
             f"{'foreach us':>11} {'x fused':>8} {'x foreach':>9}"
             + (f" {'ds us':>11} {'x ds':>7}" if ds else "")]
    for name, c in res["cases"].items():
        us = c["us"]
        lines.append(f"{name:<28} {c['elements']:>12,} {us['lrfast']:>11.1f} "
                     f"{us['torch-fused']:>11.1f} {us['torch-foreach']:>11.1f} "
                     f"{c['x torch-fused']:>7.2f}x {c['x torch-foreach']:>8.2f}x"
                     + (f" {us['deepspeed']:>11.1f} {c['x deepspeed']:>6.2f}x" if ds else ""))
    if "load_average" in res:
        lines.append("load average (1, 5, 15 min) at the start: "
                     + ", ".join(f"{x:.2f}" for x in res["load_average"]))
    if res.get("deepspeed", "not requested") != "not requested":
        lines.append(f"DeepSpeedCPUAdam: {res['deepspeed']}")
    if res.get("master"):
        lines.append("bfloat16 params, float32 master weights: lrfast.torch.AdamW("
                     "master_weights=True) against torch fused AdamW on the masters + copy_")
        for name, c in res["master"].items():
            lines.append(f"{name:<28} {c['elements']:>12,} {c['us']['lrfast']:>11.1f} "
                         f"{c['us']['torch-fused+copy_']:>11.1f} "
                         f"{c['x torch-fused+copy_']:>7.2f}x")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="lrfast bench --torch",
                                description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=None, help="comma list, e.g. 1e3,1e5,1e6,1e7")
    p.add_argument("--gpt2", action="store_true", help="add GPT-2 small's 148 shapes")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--master", action="store_true",
                   help="also bfloat16 params with float32 master weights, per size")
    ds = p.add_mutually_exclusive_group()
    ds.add_argument("--deepspeed", dest="deepspeed", action="store_true", default=None,
                    help="time DeepSpeedCPUAdam too (the default unless --quick)")
    ds.add_argument("--no-deepspeed", dest="deepspeed", action="store_false")
    a = p.parse_args(argv)
    try:
        import torch  # noqa: F401  (optional dependency)
    except ImportError:
        p.error("--torch needs PyTorch (pip install torch)")
    sizes = [float(x) for x in a.sizes.split(",")] if a.sizes else None
    res = run(sizes=sizes, gpt2=a.gpt2, rounds=a.rounds, quick=a.quick, deepspeed=a.deepspeed)
    if a.master:
        import torch
        res["master"] = {f"{int(x):.0e}": master_case(torch, int(x), 3 if a.quick else a.rounds,
                                                      0.002 if a.quick else 0.02)
                         for x in (sizes or ([1e3, 1e4] if a.quick else [1e3, 1e5, 1e6, 1e7]))}
    print(format_table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0
