"""The learning-rate-free scenarios of the MPI tests (run_lrfree.py under
mpiexec, and the single-process reference in tests/test_distributed.py).

Prodigy, DoG, LDoG and D-Adaptation step on sums over all params (DoG: over
each group; LDoG: over each param). Distributed, those sums are whole across
ranks and summed in one process's order, so P ranks equal one process
stepping on the mean grads bit for bit. The grads are multiples of 2**-10
below 2**5, so their sum over ranks is exact in any order (MPI's reduction
order cannot change the mean) and the comparison can be bitwise for P = 3 too.
"""
import numpy as np

import lrfast
from _scenarios import mean_over_ranks

OPTS = {
    "Prodigy": dict(weight_decay=0.01),
    "DoG": dict(weight_decay=1e-3),
    "LDoG": dict(),
    "DAdaptAdam": dict(weight_decay=0.01, decouple=True),
    "DAdaptSGD": dict(momentum=0.9),
    "DAdaptAdaGrad": dict(momentum=0.5, weight_decay=1e-3),
}
STEPS = 24
MID = 10                  # the checkpoint's step
# odd sizes: 9001 and 4099 elements span several reduction blocks (4096), so
# ranks split them (on block boundaries); an F-contiguous matrix, a scalar and
# an empty param; two groups (DoG: its own lr per group)
LAYOUT = [[((9001,), "C"), ((37, 5), "F"), ((3,), "C")],
          [((4099,), "C"), ((), "C"), ((0, 3), "C"), ((11, 13), "C")]]
BUCKET_MB = 5000 * 8 / 2 ** 20     # sharded: several buckets, a tensor in two of them


def scenarios():
    out = {}
    for name in OPTS:
        for dt in ("float64", "float32"):
            for mode in ("shard", "replicated"):
                out[f"{name}-{dt}-{mode}"] = dict(opt=name, dtype=dt, shard=mode == "shard")
    return out


def make_params(spec):
    rng = np.random.default_rng(77)
    return [[np.array(1e-3 * rng.standard_normal(shape), dtype=spec["dtype"], order=o)
             for shape, o in g] for g in LAYOUT]


def build(spec, groups):
    cls = getattr(lrfast, spec["opt"])
    pgs = [{"params": ps} for ps in groups]
    if spec["opt"] in ("DoG", "LDoG"):
        pgs[1]["lr"] = 0.5
    return cls(pgs, **OPTS[spec["opt"]])


def flat(groups):
    return [p for ps in groups for p in ps]


def rank_grads(rank, t, params):
    """Rank ``rank``'s grads at step t: a pull toward 0.25 plus rank noise, on
    a 2**-10 grid. Param 1 has no grad on rank 0 at odd steps (a zero there);
    param 2 none on any rank every fifth step (skipped)."""
    rng = np.random.default_rng([t, rank, 5])
    out = []
    for i, p in enumerate(params):
        g = (p.astype(np.float64) - 0.25) + 0.5 * rng.standard_normal(p.shape)
        g = np.clip(np.round(g * 1024.0) / 1024.0, -31.0, 31.0)
        g = np.array(g, dtype=p.dtype, order="F" if not p.flags.c_contiguous else "C")
        if (i == 1 and rank == 0 and t % 2) or (i == 2 and t % 5 == 2):
            g = None
        out.append(g)
    return out


def mean_grads(P, t, params):
    return mean_over_ranks([rank_grads(r, t, params) for r in range(P)], params)


def reference(spec, P):
    """One process on the mean grads: (final params, d after every step, the
    state_dict at step MID, the final state_dict)."""
    groups = make_params(spec)
    params = flat(groups)
    opt = build(spec, groups)
    ds, mid = [], None
    for t in range(STEPS):
        opt.step(mean_grads(P, t, params))
        ds.append(opt.d)
        if t + 1 == MID:
            mid = (opt.state_dict(), [p.copy() for p in params])
    return params, ds, mid, opt.state_dict()
