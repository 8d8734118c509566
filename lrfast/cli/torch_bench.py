"""``python -m lrfast bench --torch``: ``lrfast.torch.AdamW`` against
``torch.optim.AdamW(fused=True)`` (and ``foreach=True``) on float32 CPU tensors.

One process, interleaved rounds (the order rotates and reverses from round to
round, as the main runner's); each figure is the median over rounds of the
per-round time ratio torch / lrfast (> 1: lrfast is faster). Cases: one tensor
of each size, and GPT-2-small's 148 parameter shapes (124,439,808 params).
Needs torch.

Pauses, as the main runner's: every timed block is preceded by a short sleep
(``--pause-ms``, 1 ms) and one untimed step (the first call after a sleep runs
cold), and followed by a longer one (``--spin-ms``, 12 ms). lrfast's OpenMP
pool and torch's (torch ships its own libgomp) spin-wait about 8 ms after each
parallel region; without that sleep the next contender shares the cores with
the previous one's spinning workers, and the 1e6 ratio swung from 0.8x to 1.4x
between runs.

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
    python -m lrfast bench --torch --pause-ms 1 --spin-ms 12   # the defaults
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["gpt2_small_shapes", "run", "main"]

PAUSE_S = 0.001     # sleep before each timed block
SPIN_S = 0.012      # sleep after each timed block (libgomp spins ~8 ms after a region)


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


def timed_rounds(steps: Dict[str, Callable[[], Any]], rounds: int, block_s: float,
                 pause_s: float = PAUSE_S, spin_s: float = SPIN_S) -> Dict[str, List[float]]:
    """Seconds per call of each step function, one figure per round.

    Each is warmed up (3 calls); the calls per block (the same for all) are
    set so that the first one's block takes about ``block_s``. Each round times
    every function once, in an order that rotates by one every two rounds and
    is reversed every other round. Every block: sleep ``pause_s``, one untimed
    call (when a block has more than one), the timed block, sleep ``spin_s``
    (the block's OpenMP workers stop spinning before the next one runs). The
    garbage collector is off while timing."""
    from .bench import _order
    names = list(steps)
    for f in steps.values():            # warm up (state allocated, pools started)
        for _ in range(3):
            f()
    time.sleep(spin_s)
    first = steps[names[0]]
    first()
    t0 = time.perf_counter()
    first()
    reps = max(1, int(block_s / max(time.perf_counter() - t0, 1e-7)))
    time.sleep(spin_s)
    times: Dict[str, List[float]] = {k: [] for k in names}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for i in _order(len(names), r):
                k = names[i]
                f = steps[k]
                if pause_s > 0:
                    time.sleep(pause_s)
                if reps > 1:
                    f()             # untimed: the first call after a sleep runs cold
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                times[k].append((time.perf_counter() - t0) / reps)
                if spin_s > 0:
                    time.sleep(spin_s)
    finally:
        if gc_was:
            gc.enable()
    return times


def _case(torch: Any, shapes: Sequence[Tuple[int, ...]], rounds: int,
          block_s: float, extra: Optional[Dict[str, Callable[[list], Any]]] = None,
          pause_s: float = PAUSE_S, spin_s: float = SPIN_S) -> Dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    opts = {}
    for name, make in {**_makers(torch), **(extra or {})}.items():
        ps = []
        for s in shapes:
            p = torch.randn(s, generator=gen, requires_grad=True)
            p.grad = torch.randn(s, generator=gen) * 1e-3
            ps.append(p)
        opts[name] = make(ps)
    times = timed_rounds({k: o.step for k, o in opts.items()}, rounds, block_s,
                         pause_s, spin_s)
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
        quick: bool = False, deepspeed: Optional[bool] = None,
        pause_s: Optional[float] = None, spin_s: Optional[float] = None) -> Dict[str, Any]:
    """Time every case; returns {case: {"us": {...}, "x torch-fused": r, ...}}
    and, under "deepspeed", whether DeepSpeedCPUAdam ran or why it was skipped
    (``deepspeed=None``: tried unless ``quick``). ``pause_s``/``spin_s``: the
    sleeps before and after each timed block (see :func:`timed_rounds`)."""
    import os
    import torch
    if quick:
        sizes, rounds, block_s = sizes or [1e3, 1e4], 3, 0.002
    else:
        sizes, block_s = sizes or [1e3, 1e5, 1e6, 1e7], 0.02
    pause_s = PAUSE_S if pause_s is None else float(pause_s)
    spin_s = SPIN_S if spin_s is None else float(spin_s)
    if not (pause_s >= 0 and spin_s >= 0):
        raise ValueError(f"pause_s and spin_s must be >= 0, got {pause_s!r}, {spin_s!r}")
    res: Dict[str, Any] = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                           "load_average": list(os.getloadavg()), "pause_s": pause_s,
                           "spin_s": spin_s, "cases": {}}
    extra: Dict[str, Callable[[list], Any]] = {}
    if deepspeed if deepspeed is not None else not quick:
        make, why = deepspeed_maker(torch)
        if make is not None:
            extra["deepspeed"] = make
        res["deepspeed"] = "ran" if make is not None else f"skipped: {why}"
    else:
        res["deepspeed"] = "not requested"
    for size in sizes:
        res["cases"][f"{int(size):.0e}"] = _case(torch, [(int(size),)], rounds, block_s, extra,
                                                 pause_s, spin_s)
    if gpt2:
        res["cases"]["GPT-2 small (148 tensors)"] = _case(torch, gpt2_small_shapes(),
                                                          max(3, rounds // 3), block_s, extra,
                                                          pause_s, spin_s)
    return res


def master_case(torch: Any, n: int, rounds: int, block_s: float,
                pause_s: float = PAUSE_S, spin_s: float = SPIN_S) -> Dict[str, Any]:
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
    times = timed_rounds(steps, rounds, block_s, pause_s, spin_s)
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
    if "spin_s" in res:
        lines.append(f"each timed block: {1e3 * res['pause_s']:g} ms sleep and one untimed step "
                     f"before, {1e3 * res['spin_s']:g} ms sleep after (OpenMP pools idle)")
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
    p.add_argument("--pause-ms", type=float, default=None,
                   help=f"sleep before each timed block (default {PAUSE_S * 1e3:g})")
    p.add_argument("--spin-ms", type=float, default=None,
                   help="sleep after each timed block so its OpenMP pool (lrfast's or "
                        "torch's own libgomp) stops spinning before the next contender "
                        f"runs (default {SPIN_S * 1e3:g}; libgomp spins ~8 ms)")
    ds = p.add_mutually_exclusive_group()
    ds.add_argument("--deepspeed", dest="deepspeed", action="store_true", default=None,
                    help="time DeepSpeedCPUAdam too (the default unless --quick)")
    ds.add_argument("--no-deepspeed", dest="deepspeed", action="store_false")
    a = p.parse_args(argv)
    try:
        import torch  # noqa: F401  (optional dependency)
    except ImportError:
        p.error("--torch needs PyTorch (pip install torch)")
    for opt in ("pause_ms", "spin_ms"):
        v = getattr(a, opt)
        if v is not None and not v >= 0:
            p.error(f"--{opt.replace('_', '-')} must be >= 0, got {v}")
    pause_s = PAUSE_S if a.pause_ms is None else a.pause_ms / 1e3
    spin_s = SPIN_S if a.spin_ms is None else a.spin_ms / 1e3
    sizes = [float(x) for x in a.sizes.split(",")] if a.sizes else None
    res = run(sizes=sizes, gpt2=a.gpt2, rounds=a.rounds, quick=a.quick, deepspeed=a.deepspeed,
              pause_s=pause_s, spin_s=spin_s)
    if a.master:
        import torch
        res["master"] = {f"{int(x):.0e}": master_case(torch, int(x), 3 if a.quick else a.rounds,
                                                      0.002 if a.quick else 0.02,
                                                      pause_s, spin_s)
                         for x in (sizes or ([1e3, 1e4] if a.quick else [1e3, 1e5, 1e6, 1e7]))}
    print(format_table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0
