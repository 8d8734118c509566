"""Low-precision optimizer state under MPI (scenarios in _lowstate.py);
tests/test_distributed.py compares them with one process.

    mpiexec -n 3 python -m mpi4py tests/mpi_scripts/run_lowstate.py OUTDIR

Each rank writes OUTDIR/lowstate{r}.npz (final params of every scenario and
of its resumed runs) and OUTDIR/lowstate{r}.json (messages of the error
checks); rank 0 writes each scenario's checkpoints (step MID and final).
Resumed runs, each over the step-MID params: the step-MID checkpoint loaded
by a wrapper of the other mode (``load``: root 0 sends the shards), by one of
the same mode (``load_state_dict`` of the full dict on every rank), and,
sharded, by one of the other state dtype (int8 <-> bfloat16); the int8
sharded Adam also loads a float32 state_dict.
"""
import json
import os
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _lowstate as L  # noqa: E402
import lrfast  # noqa: E402
from lrfast.distributed import DistributedOptimizer  # noqa: E402
from _scenarios import recorder  # noqa: E402

comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
out_dir = sys.argv[1]
arrays, info = {}, {"P": P, "checks": {}}
OTHER = {"int8": "bfloat16", "bfloat16": "int8"}


def wrap(spec, groups, shard, state_dtype=None):
    return DistributedOptimizer(L.build(spec, groups, state_dtype), shard_state=shard,
                                bucket_mb=L.BUCKET_MB if shard else 25.0)


def resume(tag, spec, shard, load, state_dtype=None, start=None):
    groups = L.make_params(spec)
    params = L.flat(groups)
    for p, q in zip(params, mid_params if start is None else start):
        p[...] = q
    d = wrap(spec, groups, shard, state_dtype)
    load(d)
    for t in range(L.MID, L.STEPS):
        d.step(L.rank_grads(rank, t, params))
    for i, p in enumerate(params):
        arrays[f"{tag}/{i}"] = p


for name, spec in L.scenarios().items():
    shard = spec["shard"]
    groups = L.make_params(spec)
    params = L.flat(groups)
    dopt = wrap(spec, groups, shard)
    mid_path = os.path.join(out_dir, f"{name}.mid.npz")
    for t in range(L.STEPS):
        dopt.step(L.rank_grads(rank, t, params))
        if t + 1 == L.MID:
            dopt.save(mid_path)
            mid_params = [p.copy() for p in params]
    dopt.save(os.path.join(out_dir, f"{name}.end.npz"))
    for i, p in enumerate(params):
        arrays[f"{name}/{i}"] = p
    resume(f"{name}/other_mode", spec, not shard, lambda d: d.load(mid_path))
    mid_sd = lrfast.io.read(mid_path)
    resume(f"{name}/same_mode", spec, shard, lambda d: d.load_state_dict(mid_sd))
    if shard and spec["state_dtype"] in OTHER:
        resume(f"{name}/other_dtype", spec, True, lambda d: d.load(mid_path),
               OTHER[spec["state_dtype"]])
    if shard and spec["opt"] == "Adam" and spec["state_dtype"] == "int8":
        f32 = L.run(spec, P, L.MID, "float32")[1]     # one process, float32 state
        resume(f"{name}/from_float32", spec, True, lambda d: d.load_state_dict(f32[0]),
               start=f32[1])

# ---- bad input: raised on every rank, nothing changed, still in step
checks = info["checks"]
expect = recorder(checks)


def state_bytes(d):
    sd = d.state_dict(root=None)
    return b"".join(v.tobytes() for e in sd["state"].values() for v in e.values()
                    if isinstance(v, np.ndarray))


for shard in (True, False):
    tag = "shard" if shard else "replicated"
    ps = [np.linspace(-1, 1, 5000, dtype=np.float32), np.full(7, 0.5, dtype=np.float32)]
    d = DistributedOptimizer(lrfast.Adam(ps, lr=1e-2, state_dtype="int8"), shard_state=shard)
    g = [np.full(5000, 0.5, dtype=np.float32), np.full(7, 0.25 * (rank + 1), dtype=np.float32)]
    d.step(g)
    d.step(g)
    sd = d.state_dict(root=None)
    bad = dict(sd, state={k: dict(v) for k, v in sd["state"].items()})
    bad["state"][0]["exp_avg_absmax"] = sd["state"][0]["exp_avg_absmax"][:-1].copy()
    before = [p.copy() for p in ps], state_bytes(d)
    expect(f"bad_absmax-{tag}", lambda: d.load_state_dict(bad))
    expect(f"bad_absmax_root-{tag}",
           lambda: d.load_state_dict(bad if rank == 1 else None, root=1))
    bad2 = dict(sd, state={k: dict(v) for k, v in sd["state"].items()})
    del bad2["state"][0]["exp_avg_sq_absmax"]
    expect(f"no_absmax-{tag}", lambda: d.load_state_dict(bad2))
    checks[f"bad_absmax-{tag}/unchanged"] = (
        all(np.array_equal(a, b) for a, b in zip(before[0], ps))
        and state_bytes(d) == before[1] and d.step_count == 2)
    d.step(g)
    checks[f"bad_absmax-{tag}/step_count"] = d.step_count
    checks[f"bad_absmax-{tag}/in_sync"] = len(set(comm.allgather(
        b"".join(p.tobytes() for p in ps)))) == 1
    # wrapping an optimizer that has stepped carries its 8-bit state over
    ps2 = [np.linspace(-1, 1, 5000, dtype=np.float32), np.full(7, 0.5, dtype=np.float32)]
    o = lrfast.Adam(ps2, lr=1e-2, state_dtype="int8")
    o.step([np.full(5000, 0.5, dtype=np.float32), np.full(7, 0.25, dtype=np.float32)])
    o.step([np.linspace(0, 1, 5000, dtype=np.float32), np.full(7, -0.25, dtype=np.float32)])
    want = o.state_dict()
    got = DistributedOptimizer(o, shard_state=shard).state_dict(root=None)
    checks[f"carry-{tag}"] = (
        list(got["state"]) == list(want["state"])
        and all(list(got["state"][i]) == list(e) for i, e in want["state"].items())
        and all(np.asarray(got["state"][i][k]).dtype == np.asarray(v).dtype
                and np.asarray(got["state"][i][k]).tobytes() == np.asarray(v).tobytes()
                for i, e in want["state"].items() for k, v in e.items())
        and want["state"][0]["exp_avg"].dtype == np.uint8)
    # ... and the float32 master copies of 16-bit params (sharded: each rank's pieces)
    bf16 = L.param_dtype({"params": "bfloat16"})
    ps3 = [np.linspace(-1, 1, 5000, dtype=np.float32).astype(bf16)]
    o = lrfast.Adam(ps3, lr=1e-2, state_dtype="int8", master_weights=True)
    o.step([np.full(5000, 0.5, dtype=bf16)])
    o.step([np.linspace(0, 1, 5000, dtype=np.float32).astype(bf16)])
    want = o.state_dict()
    d3 = DistributedOptimizer(o, shard_state=shard)
    got = d3.state_dict(root=None)
    checks[f"carry_master-{tag}"] = (
        list(got["state"][0]) == list(want["state"][0])
        and all(np.asarray(got["state"][0][k]).dtype == np.asarray(v).dtype
                and np.asarray(got["state"][0][k]).tobytes() == np.asarray(v).tobytes()
                for k, v in want["state"][0].items())
        and not np.array_equal(want["state"][0]["master_param"],
                               ps3[0].astype(np.float32)))
    checks[f"memory_master-{tag}"] = d3.memory()["state"]
    # a master copy of the wrong shape: raised on every rank, nothing changed
    bad3 = dict(got, state={0: dict(got["state"][0])})
    bad3["state"][0]["master_param"] = got["state"][0]["master_param"][:-1].copy()
    before3 = ps3[0].copy(), state_bytes(d3)
    expect(f"bad_master-{tag}", lambda: d3.load_state_dict(bad3))
    expect(f"bad_master_root-{tag}", lambda: d3.load_state_dict(bad3 if rank == 0 else None,
                                                                 root=0))
    checks[f"bad_master-{tag}/unchanged"] = (np.array_equal(before3[0].view(np.uint16),
                                                            ps3[0].view(np.uint16))
                                             and state_bytes(d3) == before3[1])
    # 16-bit params, master weights and stochastic rounding wrap in both modes
    half = [np.zeros(5000, dtype=np.float16)]
    expect(f"float16_params-{tag}", lambda: DistributedOptimizer(lrfast.Adam(half),
                                                                 shard_state=shard))
    expect(f"master_weights-{tag}", lambda: DistributedOptimizer(
        lrfast.Adam([np.zeros(5000, dtype=np.float16)], master_weights=True),
        shard_state=shard))
    expect(f"stochastic_rounding-{tag}", lambda: DistributedOptimizer(
        lrfast.Adam([np.zeros(5000, dtype=np.float32)], state_dtype="bfloat16",
                    stochastic_rounding=True), shard_state=shard))
    # ranks that disagree on the state dtype
    expect(f"dtypes_differ-{tag}", lambda: DistributedOptimizer(
        lrfast.Adam([np.zeros(5000, dtype=np.float32)],
                    state_dtype="int8" if rank == 0 else "bfloat16"), shard_state=shard))

np.savez(os.path.join(out_dir, f"lowstate{rank}.npz"),
         **{k.replace("/", "__"): v for k, v in arrays.items()})
with open(os.path.join(out_dir, f"lowstate{rank}.json"), "w") as f:
    json.dump(info, f, indent=1)
