"""The low-precision-state scenarios of the MPI tests (run_lowstate.py under
mpiexec, and the single-process reference in tests/test_distributed.py).

Adam, AdamW, SGD with momentum and Lion with ``state_dtype="int8"`` and
``"bfloat16"`` (float32 params), sharded (ZeRO-1) and replicated. Sharded,
8-bit state is cut on 256-element blocks of each tensor, and a piece keeps
the format its whole tensor has in one process (8-bit from 4096 elements),
so P ranks equal one process stepping on the mean grads bit for bit. The
grads are multiples of 2**-10 below 2**5: their sum over ranks is exact in
any order, so MPI's reduction order cannot change the mean.

16-bit params: grads of the param's dtype, summed in float32 and the mean
rounded once to nearest even; with master weights (sharded, each rank keeps
the master copy of its pieces) or stochastic rounding (sharded, a piece draws
its whole tensor's random bits, keyed by tensor and element index). Their
grads are multiples of 2**-6 below 2**3, so the 16-bit grads and their
float32 sums are exact.
"""
import numpy as np

import lrfast
from _scenarios import mean_over_ranks

OPTS = {
    "Adam": dict(lr=1e-2, weight_decay=0.01),
    "AdamW": dict(lr=1e-2, weight_decay=0.05, amsgrad=True),
    "SGD": dict(lr=1e-2, momentum=0.9, nesterov=True),
    "Lion": dict(lr=1e-3, weight_decay=0.1),
}
STEPS = 22
MID = 10                  # the checkpoint's step
# 9001 and 6000 (an F-contiguous matrix: blocks along its memory order)
# elements (8-bit state, split across ranks and buckets at offsets that are
# not a multiple of 4096), 4113 = 4096 + 17 (8-bit, a last block of 17), and
# tensors under 4096 elements (float32 state): an F-contiguous matrix, a
# scalar, an empty param; two groups
LAYOUT = [[((9001,), "C"), ((37, 5), "F"), ((4113,), "C")],
          [((3,), "C"), ((60, 100), "F"), ((), "C"), ((0, 3), "C"), ((11, 13), "C")]]
BUCKET_MB = 7000 * 4 / 2 ** 20     # sharded: several buckets, a tensor in two of them


def scenarios():
    out = {}
    for name in OPTS:
        for sdt in ("int8", "bfloat16"):
            for mode in ("shard", "replicated"):
                out[f"{name}-{sdt}-{mode}"] = dict(opt=name, state_dtype=sdt,
                                                   shard=mode == "shard")
    for mode in ("shard", "replicated"):
        out[f"Adam-int8-bf16params-master-{mode}"] = dict(
            opt="Adam", state_dtype="int8", shard=mode == "shard", params="bfloat16",
            master=True)
        out[f"AdamW-bfloat16-f16params-{mode}"] = dict(
            opt="AdamW", state_dtype="bfloat16", shard=mode == "shard", params="float16")
    out["SGD-float32-bf16params-master-shard"] = dict(
        opt="SGD", state_dtype="float32", shard=True, params="bfloat16", master=True)
    out["Adam-int8-bf16params-master-clipped-shard"] = dict(     # the global norm clips
        opt="Adam", state_dtype="int8", shard=True, params="bfloat16", master=True,
        max_grad_norm=2.0)
    for mode in ("shard", "replicated"):
        out[f"Lion-float32-bf16params-sr-{mode}"] = dict(
            opt="Lion", state_dtype="float32", shard=mode == "shard", params="bfloat16",
            sr=True)
    out["AdamW-bfloat16-f16params-sr-shard"] = dict(
        opt="AdamW", state_dtype="bfloat16", shard=True, params="float16", sr=True)
    return out


def param_dtype(spec):
    name = spec.get("params", "float32")
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def make_params(spec):
    rng = np.random.default_rng(78)
    dt = param_dtype(spec)
    return [[np.array(0.1 * rng.standard_normal(shape), dtype=np.float32).astype(dt, order=o)
             for shape, o in g] for g in LAYOUT]


def build(spec, groups, state_dtype=None):
    cls = getattr(lrfast, spec["opt"])
    pgs = [{"params": ps} for ps in groups]
    pgs[1]["lr"] = OPTS[spec["opt"]]["lr"] / 2
    sdt = spec["state_dtype"] if state_dtype is None else state_dtype
    return cls(pgs, **OPTS[spec["opt"]], state_dtype=None if sdt == "float32" else sdt,
               master_weights=spec.get("master", False),
               stochastic_rounding=spec.get("sr", False), seed=11,
               max_grad_norm=spec.get("max_grad_norm"))


def flat(groups):
    return [p for ps in groups for p in ps]


def rank_grads(rank, t, params):
    """Rank ``rank``'s grads at step t on a 2**-10 grid. Param 1 has no grad
    on rank 0 at odd steps (a zero there); param 3 none on any rank every
    fifth step (skipped)."""
    rng = np.random.default_rng([t, rank, 6])
    out = []
    q, top = (1024.0, 31.0) if params[0].dtype == np.float32 else (64.0, 7.9)
    for i, p in enumerate(params):
        g = (p.astype(np.float64) - 0.25) + 0.5 * rng.standard_normal(p.shape)
        g = np.clip(np.round(g * q) / q, -top, top)
        g = np.array(g, dtype=p.dtype, order="F" if not p.flags.c_contiguous else "C")
        if (i == 1 and rank == 0 and t % 2) or (i == 3 and t % 5 == 2):
            g = None
        out.append(g)
    return out


def mean_grads(P, t, params):
    # in float32 (16-bit params: then rounded to nearest even, as the wrapper does)
    return mean_over_ranks([rank_grads(r, t, params) for r in range(P)], params, wide=True)


def run(spec, P, steps, state_dtype=None, start=None):
    """One process on the mean grads from ``start`` ((state_dict, params at
    its step) or None) to ``steps``: (params, state_dict at MID, final state_dict)."""
    groups = make_params(spec)
    params = flat(groups)
    opt = build(spec, groups, state_dtype)
    t0 = 0
    if start is not None:
        for p, q in zip(params, start[1]):
            p[...] = q
        opt.load_state_dict(start[0])
        t0 = start[0]["step_count"]
    mid = None
    for t in range(t0, steps):
        opt.step(mean_grads(P, t, params))
        if t + 1 == MID:
            mid = (opt.state_dict(), [p.copy() for p in params])
    return params, mid, opt.state_dict()
