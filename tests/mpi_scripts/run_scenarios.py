"""Run every scenario of _scenarios.py under MPI; tests/test_distributed.py
compares the results with one process stepping on the mean grads.

    mpiexec -n 3 python tests/mpi_scripts/run_scenarios.py OUTDIR

Each rank writes OUTDIR/rank{r}.npz (final params of every scenario) and
OUTDIR/rank{r}.json (returns, step counts, messages of the error checks,
memory); rank 0 also writes a checkpoint per scenario (DistributedOptimizer.save).
"""
import json
import os
import sys
import time

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _scenarios as S  # noqa: E402
import lrfast  # noqa: E402
from lrfast.distributed import DistributedOptimizer  # noqa: E402

comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
out_dir = sys.argv[1]
only = sys.argv[2:]            # optional scenario names (debugging)
arrays, info = {}, {"P": P, "scenarios": {}, "checks": {}}
threads_at_start = lrfast.get_num_threads()


def run(name, spec, save=True):
    groups = S.make_params(spec)
    params = S.flat_params(groups)
    opt = S.build_opt(spec, groups)
    d = DistributedOptimizer(opt, shard_state=spec["shard"],
                             bucket_mb=spec.get("bucket_mb", 25.0))
    rets = []
    for t in range(spec["steps"]):
        rets.append(bool(d.step(S.rank_grads(spec, rank, t, params))))
    rec = {"returns": rets, "step_count": d.step_count, "skipped": d.skipped_steps,
           "lr": d.lr, "memory": d.memory(), "last_grad_norm": d.last_grad_norm}
    if save:
        path = os.path.join(out_dir, f"{name}.ckpt.npz")
        d.save(path)                  # rank 0 writes
        sd_all = d.state_dict(root=None)
        rec["state_keys"] = sorted(sd_all["state"])
    return params, d, rec


names = S.scenarios()
t0 = time.perf_counter()
for name, spec in names.items():
    if only and name not in only:
        continue
    params, d, rec = run(name, spec)
    for i, p in enumerate(params):
        arrays[f"{name}/{i}"] = p
    info["scenarios"][name] = rec

# ---- repeated runs with the same P are bit-identical
if not only:
    for name in ("case12-Adam-float32-shard", "buckets-mixeddtype-shard", "clip-replicated"):
        a = b"".join(p.tobytes() for p in run(name, names[name], save=False)[0])
        b = b"".join(p.tobytes() for p in run(name, names[name], save=False)[0])
        info["checks"][f"repeat/{name}"] = a == b

# ---- the wrapped optimizer hands over its state
spec = names["case12-Adam-float64-shard"]
groups = S.make_params(spec)
opt = S.build_opt(spec, groups)
d = DistributedOptimizer(opt)
try:
    opt.step([None] * len(S.flat_params(groups)))
    info["checks"]["template_step"] = "no error"
except RuntimeError as e:
    info["checks"]["template_step"] = str(e)
info["checks"]["threads"] = [threads_at_start, lrfast.get_num_threads(),
                             os.cpu_count(), len(os.sched_getaffinity(0))]

# ---- resume: wrap an optimizer that already stepped (state is carried over)
spec = dict(names["case12-Adam-float64-shard"])
groups = S.make_params(spec)
params = S.flat_params(groups)
opt = S.build_opt(spec, groups)
for t in range(4):
    opt.step(S.mean_grads(spec, P, t, params))
d = DistributedOptimizer(opt)
for t in range(4, spec["steps"]):
    d.step(S.rank_grads(spec, rank, t, params))
for i, p in enumerate(params):
    arrays[f"resume/{i}"] = p
info["checks"]["resume_step_count"] = d.step_count

# ---- checkpoint in the middle, continue on a different number of ranks (P-1)
for tag, shard, opt_name in (("ckpt-shard", True, "case21-NAdam-float64-shard"),
                             ("ckpt-replicated", False, "case13-Adam-float64-replicated"),
                             ("ckpt-sched", True, "schedule-shard")):
    spec = names[opt_name]
    k = spec["steps"] // 2
    groups = S.make_params(spec)
    params = S.flat_params(groups)
    d = DistributedOptimizer(S.build_opt(spec, groups), shard_state=shard)
    for t in range(k):
        d.step(S.rank_grads(spec, rank, t, params))
    path = os.path.join(out_dir, f"{tag}.mid.npz")
    d.save(path)
    saved = [p.copy() for p in params]
    for i, p in enumerate(saved):
        arrays[f"{tag}/mid/{i}"] = p
    sub = comm.Split(0 if rank < max(P - 1, 1) else MPI.UNDEFINED, rank)
    if sub != MPI.COMM_NULL:
        groups2 = S.make_params(spec)
        params2 = S.flat_params(groups2)
        for p, q in zip(params2, saved):
            p[...] = q
        d2 = DistributedOptimizer(S.build_opt(spec, groups2), comm=sub, shard_state=shard)
        d2.load(path)
        for t in range(k, spec["steps"]):
            # the grads of P ranks, averaged by only P-1: each rank of the
            # smaller job feeds the mean of "its" share so the reference is
            # still the mean over the original P ranks
            g_all = S.mean_grads(spec, P, t, params2)
            d2.step(g_all)
        for i, p in enumerate(params2):
            arrays[f"{tag}/{i}"] = p
        info["checks"][f"{tag}/step_count"] = d2.step_count
        info["checks"][f"{tag}/lr"] = d2.lr
        sub.Free()
    comm.Barrier()

# ---- load a single-process state_dict, root=0 and root=None
spec = names["case05-Adagrad-float64-shard"]
for root in (0, None):
    groups = S.make_params(spec)
    params = S.flat_params(groups)
    ref = S.build_opt(spec, [(o, [p.copy() for p in ps]) for o, ps in groups])
    refp = ref.params
    for t in range(5):
        ref.step(S.mean_grads(spec, P, t, refp))
    for p, q in zip(params, refp):
        p[...] = q
    d = DistributedOptimizer(S.build_opt(spec, groups))
    sd = ref.state_dict()
    d.load_state_dict(sd if (root is None or rank == root) else None, root=root)
    for t in range(5, spec["steps"]):
        d.step(S.rank_grads(spec, rank, t, params))
    for i, p in enumerate(params):
        arrays[f"load-root{root}/{i}"] = p

# ---- setting a hyperparameter through param_groups, then zero_state()
spec = names["case12-Adam-float64-shard"]
for shard in (True, False):
    groups = S.make_params(spec)
    params = S.flat_params(groups)
    d = DistributedOptimizer(S.build_opt(spec, groups), shard_state=shard)
    for t in range(6):
        if t == 2:
            d.param_groups[1]["lr"] = 0.0123
        if t == 4:
            d.zero_state()
        d.step(S.rank_grads(spec, rank, t, params))
    tag = f"setlr-{'shard' if shard else 'replicated'}"
    for i, p in enumerate(params):
        arrays[f"{tag}/{i}"] = p
    info["checks"][f"{tag}/lr"] = d.lr
    info["checks"][f"{tag}/step_count"] = d.step_count
    try:
        d.param_groups[0]["lr"] = -1.0
        info["checks"][f"{tag}/bad_lr"] = "no error"
    except ValueError as e:
        info["checks"][f"{tag}/bad_lr"] = str(e)
    info["checks"][f"{tag}/lr_after_bad"] = d.lr

# ---- errors: every rank raises, nobody hangs, nothing changes
checks = info["checks"]


def expect(tag, fn):
    try:
        fn()
        checks[tag] = "no error"
    except (ValueError, TypeError, RuntimeError) as e:
        checks[tag] = f"{type(e).__name__}: {e}"


def mismatch_shape():
    ps = [np.zeros(5 + (rank == P - 1)), np.zeros(3)]
    DistributedOptimizer(lrfast.Adam(ps))


def mismatch_lr():
    DistributedOptimizer(lrfast.SGD([np.zeros(4)], lr=0.1 if rank else 0.2))


def mismatch_class():
    p = [np.zeros(4)]
    DistributedOptimizer(lrfast.Adam(p) if rank else lrfast.AdamW(p))


def mismatch_dtype():
    DistributedOptimizer(lrfast.Adam([np.zeros(4, np.float32 if rank else np.float64)]))


def not_an_optimizer():
    p = [np.zeros(4)]
    DistributedOptimizer(lrfast.Adam(p) if rank != P - 1 else object())


expect("mismatch_shape", mismatch_shape)
expect("mismatch_lr", mismatch_lr)
expect("mismatch_class", mismatch_class)
expect("mismatch_dtype", mismatch_dtype)
expect("not_an_optimizer", not_an_optimizer)

# a bad grad on the last rank only: every rank raises, params and state unchanged
ps = [np.ones(7), np.ones((2, 3))]
d = DistributedOptimizer(lrfast.Adam(ps, lr=0.1))
d.step([np.full(7, 0.5), np.full((2, 3), 0.5)])
before = [p.copy() for p in ps] + [d.state_dict(root=None)["state"][0]["exp_avg"].copy()]
bad = [np.full(7, 0.5), np.full((3, 2), 0.5) if rank == P - 1 else np.full((2, 3), 0.5)]
expect("bad_grad_shape", lambda: d.step(bad))
bad = [np.full(7, 0.5, np.float32) if rank == P - 1 else np.full(7, 0.5), np.full((2, 3), 0.5)]
expect("bad_grad_dtype", lambda: d.step(bad))
expect("bad_grad_count", lambda: d.step([np.full(7, 0.5)] if rank == P - 1 else
                                         [np.full(7, 0.5), np.full((2, 3), 0.5)]))
after = [p.copy() for p in ps] + [d.state_dict(root=None)["state"][0]["exp_avg"].copy()]
checks["bad_grad_unchanged"] = all(np.array_equal(a, b) for a, b in zip(before, after))
checks["bad_grad_step_count"] = d.step_count
d.step([np.full(7, 0.5), np.full((2, 3), 0.5)])      # still in sync afterwards
checks["after_bad_step_count"] = d.step_count
# a bad state_dict on the root: every rank raises, nothing changes
sd = d.state_dict(root=0)
if rank == 0:
    sd["state"][1]["exp_avg"] = np.zeros((3, 2))
expect("bad_state_root", lambda: d.load_state_dict(sd, root=0))
sd = d.state_dict(root=None)
sd["optimizer"] = "SGD" if rank == P - 1 else "Adam"
expect("bad_state_one_rank", lambda: d.load_state_dict(sd))
expect("bad_root", lambda: d.state_dict(root=0 if rank else 1) if P > 1 else d.state_dict(5))
checks["bad_state_step_count"] = d.step_count
after2 = [p.copy() for p in ps] + [d.state_dict(root=None)["state"][0]["exp_avg"].copy()]
checks["still_in_sync"] = len(set(comm.allgather(b"".join(a.tobytes() for a in after2)))) == 1

# ---- memory per rank: state of a 1e5-element Adam model
big = [np.zeros(60001), np.zeros((200, 200), np.float32)]
d = DistributedOptimizer(lrfast.Adam(big))
d.step([np.zeros_like(p) for p in big])
info["memory"] = d.memory()
info["seconds"] = time.perf_counter() - t0

np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **{k.replace("/", "__"): v
                                                      for k, v in arrays.items()})
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(info, f, indent=1, default=str)
