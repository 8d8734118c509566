"""The learning-rate-free optimizers under MPI (scenarios in _lrfree.py);
tests/test_distributed.py compares them with one process.

    mpiexec -n 3 python -m mpi4py tests/mpi_scripts/run_lrfree.py OUTDIR

Each rank writes OUTDIR/lrfree{r}.npz (final params of every scenario, and
of its resumed run) and OUTDIR/lrfree{r}.json (d after every step, messages of
the error checks); rank 0 writes each scenario's checkpoints (step MID and
final). The resumed run loads the step-MID checkpoint into a new wrapper of
the other mode (sharded <-> replicated) over the step-MID params and finishes.
"""
import json
import os
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _lrfree as L  # noqa: E402
import lrfast  # noqa: E402
from lrfast.distributed import DistributedOptimizer  # noqa: E402
from _scenarios import recorder  # noqa: E402

comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
out_dir = sys.argv[1]
arrays, info = {}, {"P": P, "d": {}, "resumed_d": {}, "checks": {}}


def wrap(spec, groups, shard):
    return DistributedOptimizer(L.build(spec, groups), shard_state=shard,
                                bucket_mb=L.BUCKET_MB if shard else 25.0)


def as_json(d):
    return [float(x) for x in d] if isinstance(d, list) else float(d)


for name, spec in L.scenarios().items():
    groups = L.make_params(spec)
    params = L.flat(groups)
    dopt = wrap(spec, groups, spec["shard"])
    ds = []
    for t in range(L.STEPS):
        dopt.step(L.rank_grads(rank, t, params))
        ds.append(as_json(dopt.d))
        if t + 1 == L.MID:
            dopt.save(os.path.join(out_dir, f"{name}.mid.npz"))
            for i, p in enumerate(params):
                arrays[f"{name}/mid/{i}"] = p.copy()
    dopt.save(os.path.join(out_dir, f"{name}.end.npz"))
    info["d"][name] = ds
    for i, p in enumerate(params):
        arrays[f"{name}/{i}"] = p
    # resume from the step-MID checkpoint, in the other mode
    groups2 = L.make_params(spec)
    params2 = L.flat(groups2)
    for p, q in zip(params2, (arrays[f"{name}/mid/{i}"] for i in range(len(params2)))):
        p[...] = q
    d2 = wrap(spec, groups2, not spec["shard"])
    d2.load(os.path.join(out_dir, f"{name}.mid.npz"))
    rd = [as_json(d2.d)]
    for t in range(L.MID, L.STEPS):
        d2.step(L.rank_grads(rank, t, params2))
        rd.append(as_json(d2.d))
    info["resumed_d"][name] = rd
    for i, p in enumerate(params2):
        arrays[f"{name}/resumed/{i}"] = p

# ---- bad input: raised on every rank, nothing changed, still in step
checks = info["checks"]
expect = recorder(checks)


for shard in (True, False):
    tag = "shard" if shard else "replicated"
    ps = [np.linspace(-1e-3, 1e-3, 5000), np.full(7, 1e-3)]
    opt = lrfast.Prodigy([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.5}])
    d = DistributedOptimizer(opt, shard_state=shard)
    g = [np.full(5000, 0.5), np.full(7, 0.25 * (rank + 1))]
    before = [p.copy() for p in ps]
    expect(f"prodigy_lrs_differ-{tag}", lambda: d.step(g))
    checks[f"prodigy_lrs_differ-{tag}/unchanged"] = all(
        np.array_equal(a, b) for a, b in zip(before, ps)) and d.step_count == 0
    d.param_groups[1]["lr"] = 0.0                 # allowed: the largest lr or 0
    d.step(g)
    sd = d.state_dict(root=None)
    bad = dict(sd, state={k: dict(v) for k, v in sd["state"].items()})
    bad["state"][0]["p0"] = np.zeros(4999)
    before = [p.copy() for p in ps]
    expect(f"bad_p0-{tag}", lambda: d.load_state_dict(bad))
    d.step(g)
    checks[f"bad_p0-{tag}/step_count"] = d.step_count
    checks[f"bad_p0-{tag}/in_sync"] = len(set(comm.allgather(
        b"".join(p.tobytes() for p in ps) + np.float64(d.d).tobytes()))) == 1

np.savez(os.path.join(out_dir, f"lrfree{rank}.npz"),
         **{k.replace("/", "__"): v for k, v in arrays.items()})
with open(os.path.join(out_dir, f"lrfree{rank}.json"), "w") as f:
    json.dump(info, f, indent=1)
