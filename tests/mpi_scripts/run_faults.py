"""Failures on one rank only, under MPI: every rank must raise (never hang,
never diverge silently) and nothing may change on any rank.

    mpiexec -n 2 python -m mpi4py tests/mpi_scripts/run_faults.py OUTDIR

Each rank writes OUTDIR/faults{r}.json: per case, the message this rank got
("no error" if none), whether params and state are unchanged, and whether the
ranks are still in step afterwards (a good step, then params compared).
tests/test_distributed.py runs it with a timeout, so a hang is a failure.
"""
import json
import os
import sys
import zipfile

import numpy as np
from mpi4py import MPI

import lrfast
from lrfast.distributed import DistributedOptimizer

comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
BAD = P - 1                      # the rank that misbehaves
out_dir = sys.argv[1]
only = sys.argv[2:]
os.makedirs(out_dir, exist_ok=True)
res = {}
TINY = 8 * 8 / 2 ** 20           # 8 float64 per bucket: several buckets


def log(msg):
    if rank == 0:
        print(msg, flush=True)


class Flaky:
    """An lr schedule, 0.01 * 0.9**n, that raises on rank BAD at step ``at``:
    on every evaluation there (call=0) or only on its ``call``-th."""

    def __init__(self, at, call=0):
        self.at, self.call, self.seen, self.on = at, call, 0, True

    def __call__(self, n):
        if self.on and rank == BAD and n == self.at:
            self.seen += 1
            if self.call == 0 or self.seen == self.call:
                raise RuntimeError("injected schedule failure")
        return 0.01 * 0.9 ** n


def make(shard, lr=0.01, **kw):
    ps = [np.linspace(-1.0, 1.0, 7), np.arange(6.0).reshape(2, 3) / 7.0,
          np.asfortranarray(np.ones((3, 4)))]
    return ps, DistributedOptimizer(lrfast.Adam(ps, lr=lr, **kw), shard_state=shard,
                                    bucket_mb=TINY)


def grads(ps, t=0):
    return [np.sin(p + t + rank).astype(p.dtype) * 0.5 for p in ps]


def snapshot(ps, d):
    sd = d.state_dict(root=None)
    arrs = [p.tobytes() for p in ps]
    for i in sorted(sd["state"]):
        arrs += [v.tobytes() for v in sd["state"][i].values() if isinstance(v, np.ndarray)]
    return b"".join(arrs), sd["step_count"], sd["skipped_steps"]


def in_sync(ps):
    blob = b"".join(p.tobytes() for p in ps)
    return len(set(comm.allgather(blob))) == 1


def case(name, shard, build, fault, after=None, compare=True):
    """build() -> (ps, d, ctx); fault(ps, d, ctx) must raise on every rank;
    after(ps, d, ctx) undoes the fault on its rank before the good step."""
    tag = f"{name}-{'shard' if shard else 'replicated'}"
    if only and not any(tag.startswith(o) for o in only):
        return
    log(f"case {tag}")
    ps, d, ctx = build(shard)
    d.step(grads(ps, 1))
    before = snapshot(ps, d) if compare else None
    rec = {}
    try:
        fault(ps, d, ctx)
        rec["msg"] = "no error"
    except Exception as e:       # noqa: BLE001 - recorded, checked by the test
        rec["msg"] = f"{type(e).__name__}: {e}"
    if after is not None:
        after(ps, d, ctx)
    if compare:
        rec["unchanged"] = snapshot(ps, d) == before
    n = d.step_count
    d.step(grads(ps, 2))
    rec["stepped_after"] = d.step_count == n + 1
    rec["in_sync"] = in_sync(ps)
    res[tag] = rec
    comm.Barrier()


def plain(shard, **kw):
    ps, d = make(shard, **kw)
    return ps, d, None


for shard in (True, False):
    # -- item 5: np.matrix grad on one rank (packing failed there only; hang)
    def matrix_grad(ps, d, ctx):
        g = grads(ps, 3)
        if rank == BAD:
            g[1] = np.matrix(g[1])
        d.step(g)
        ctx.append([p.copy() for p in ps])

    def matrix_ref(shard):
        ps, d = make(shard)
        return ps, d, []

    tag = f"matrix_grad-{'shard' if shard else 'replicated'}"
    if not only or any(tag.startswith(o) for o in only):
        log(f"case {tag}")
        ps, d, got = matrix_ref(shard)
        d.step(grads(ps, 1))
        rec = {}
        try:
            matrix_grad(ps, d, got)
            rec["msg"] = "no error"
        except Exception as e:   # noqa: BLE001
            rec["msg"] = f"{type(e).__name__}: {e}"
        ps2, d2 = make(shard)              # the same steps with plain arrays
        d2.step(grads(ps2, 1))
        d2.step(grads(ps2, 3))
        rec["same_as_plain"] = all(a.tobytes() == b.tobytes() for a, b in zip(ps, ps2))
        rec["in_sync"] = in_sync(ps)
        res[tag] = rec
        comm.Barrier()

    # -- masked-array grad on one rank: refused everywhere (its mask would be dropped)
    def masked_grad(ps, d, ctx):
        g = grads(ps, 3)
        if rank == BAD:
            g[0] = np.ma.masked_array(g[0], mask=np.arange(7) % 2 == 0)
        d.step(g)

    case("masked_grad", shard, plain, masked_grad)

    # -- packing fails on one rank, in the second bucket (fault injection)
    def pack_fails(ps, d, ctx):
        if rank == BAD:
            calls = []
            orig = d._pack

            def bad_pack(*a):
                calls.append(1)
                if len(calls) == 2:
                    raise RuntimeError("injected packing failure")
                return orig(*a)
            d._pack = bad_pack
        try:
            d.step(grads(ps, 3))
        finally:
            d.__dict__.pop("_pack", None)

    case("pack_fails", shard, plain, pack_fails)

    # -- item 7: a schedule that raises on one rank only
    def sched_off(ps, d, fn):
        fn.on = False

    # case() steps once first (n=0): the faulty step is n=1
    def sched1(shard, call=0, **kw):
        fn = Flaky(at=1, call=call)
        ps, d = make(shard, lr=fn, **kw)
        return ps, d, fn

    def one_step(ps, d, ctx):
        d.step(grads(ps, 3))

    case("schedule_raises", shard, sched1, one_step, after=sched_off, compare=False)
    # the same failure inside the local step (after the step's agreement):
    # the schedule raises on its second evaluation only
    case("local_step_raises", shard, lambda s: sched1(s, call=2), one_step, after=sched_off,
         compare=False)
    case("local_step_raises_clip", shard, lambda s: sched1(s, call=2, max_grad_norm=0.1),
         one_step, after=sched_off, compare=False)

    # -- item 10: lr changed on one rank only
    def lr_differs(ps, d, ctx):
        if rank == BAD:
            d.param_groups[0]["lr"] = 0.5
        d.step(grads(ps, 3))

    def lr_back(ps, d, ctx):
        d.param_groups[0]["lr"] = 0.01

    case("lr_differs", shard, plain, lr_differs, after=lr_back)

    # a scheduled value that differs between ranks (same schedule name everywhere)
    def sched_differs(shard):
        ps = [np.ones(5), np.ones((2, 2))]
        lr = (lambda n: 0.01) if rank != BAD else (lambda n: 0.01 * (1 + (n >= 1)))
        return ps, DistributedOptimizer(lrfast.SGD(ps, lr=lr), shard_state=shard), None

    case("scheduled_lr_differs", shard, sched_differs, one_step, compare=True,
         after=lambda ps, d, ctx: [d.param_groups[0].__setitem__("lr", 0.01)])

    # max_grad_norm set on one rank only (the sharded step's collectives differ)
    def clip_differs(ps, d, ctx):
        if rank == BAD:
            d.max_grad_norm = 0.1
        d.step(grads(ps, 3))

    def clip_back(ps, d, ctx):
        d.max_grad_norm = None

    case("clip_differs", shard, plain, clip_differs, after=clip_back)

    # a param reshaped in place on one rank (its views are stale)
    def reshaped(ps, d, ctx):
        if rank == BAD:
            ps[1].shape = (3, 2)
        d.step(grads(ps, 3) if rank != BAD else
               [g if i != 1 else g.reshape(3, 2) for i, g in enumerate(grads(ps, 3))])

    def reshape_back(ps, d, ctx):
        ps[1].shape = (2, 3)

    case("param_reshaped", shard, plain, reshaped, after=reshape_back, compare=False)

    # -- state_dict: a schedule that raises there on one rank only (hang in the gather)
    def sd_fault(ps, d, fn):
        d.state_dict(root=BAD)

    case("state_dict_schedule_raises", shard, sched1, sd_fault, after=sched_off,
         compare=False)

    # -- load_state_dict(root=None) with different dicts on the ranks
    def diff_dicts(ps, d, ctx):
        sd = d.state_dict(root=None)
        if rank == BAD:
            sd["step_count"] += 1
            for e in sd["state"].values():
                e["step"] += 1
        d.load_state_dict(sd)

    case("load_different_dicts", shard, plain, diff_dicts)

    # -- item 6: a crafted checkpoint whose .npy header declares 10**13 elements
    def crafted(ps, d, ctx):
        path = os.path.join(out_dir, f"good-{shard}.npz")
        bad = os.path.join(out_dir, f"crafted-{shard}.npz")
        d.save(path)
        if rank == 0:
            with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, "w") as zout:
                for info in zin.infolist():
                    data = zin.read(info)
                    if info.filename != "__lrfast_meta__.npy" and info.filename.endswith(
                            ".npy") and "a0" in info.filename:
                        from io import BytesIO
                        f = BytesIO()
                        np.lib.format.write_array_header_1_0(
                            f, {"descr": "<f8", "fortran_order": False,
                                "shape": (10 ** 13,)})
                        data = f.getvalue() + b"\0" * 64
                    zout.writestr(info, data)
        comm.Barrier()
        d.load(bad)

    case("load_huge_header", shard, plain, crafted)

with open(os.path.join(out_dir, f"faults{rank}.json"), "w") as f:
    json.dump(res, f, indent=1)
log("done")
