"""Distributed benchmark: step time and per-rank state memory vs the number of
ranks, for ``DistributedOptimizer`` (ZeRO-1 sharded and replicated).

    python -m lrfast bench --distributed [--ranks 1,2,4] [--sizes 1e6,1e7] [--quick]

Runs ``mpiexec -n P`` for each P (this module again, as the worker), prints one
table. Each rank steps on its own fixed random grads; a step is timed from a
barrier to the end of ``step()``, the slowest rank counts, and the table shows
the median over the timed steps, split into the phases the wrapper records
(pack + reduce, local kernel step, all-gather of the params). "plain" is the
wrapped optimizer alone in one process, without MPI: the floor.

Needs mpi4py and an MPI runtime (``pip install "lrfast[mpi-bundled]"``, or
``"lrfast[mpi]"`` beside an MPI you have).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

__all__ = ["main"]


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.access(here, os.X_OK) else shutil.which("mpiexec")


def _parser():
    p = argparse.ArgumentParser(prog="python -m lrfast bench --distributed",
                                description="DistributedOptimizer: step time and state "
                                            "memory per rank vs the number of ranks")
    p.add_argument("--ranks", default="1,2,4", help="comma-separated rank counts (1,2,4)")
    p.add_argument("--sizes", default="1e6,1e7", help="total params per model (1e6,1e7)")
    p.add_argument("--optimizer", default="Adam", help="lrfast optimizer class (Adam)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--tensors", type=int, default=16, help="tensors per model (16)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (20)")
    p.add_argument("--modes", default="shard,replicated",
                   help="shard (ZeRO-1) and/or replicated")
    p.add_argument("--bucket-mb", type=float, default=25.0)
    p.add_argument("--threads", type=int, default=None,
                   help="kernel threads per rank (default: cores // ranks per host)")
    p.add_argument("--quick", action="store_true", help="small sizes, few steps (CI)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per mpiexec run")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def _sizes(text):
    return [int(float(s)) for s in text.split(",") if s.strip()]


def _model(n_total, n_tensors, dtype, seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    n_tensors = max(1, min(n_tensors, n_total))
    cuts = np.linspace(0, n_total, n_tensors + 1).astype(int)
    return [rng.standard_normal(int(b - a)).astype(dtype) for a, b in zip(cuts[:-1], cuts[1:])]


def _worker(args):
    import numpy as np
    from mpi4py import MPI
    import lrfast
    from lrfast.distributed import DistributedOptimizer
    import time

    comm = MPI.COMM_WORLD
    rank, P = comm.Get_rank(), comm.Get_size()
    cls = getattr(lrfast, args.optimizer)
    if args.threads is not None:
        lrfast.set_num_threads(args.threads)
    rows = []
    for n in _sizes(args.sizes):
        grads = _model(n, args.tensors, args.dtype, seed=1000 + rank)
        if P == 1:                       # the floor: the optimizer alone, no wrapper
            params = _model(n, args.tensors, args.dtype, seed=0)
            opt = cls(params)
            for _ in range(3):
                opt.step(grads)
            ts = []
            for _ in range(args.steps):
                t = time.perf_counter()
                opt.step(grads)
                ts.append(time.perf_counter() - t)
            state = sum(a.nbytes for s in opt._states for a in s if a is not None)
            rows.append(dict(n=n, P=1, mode="plain", ms=1e3 * float(np.median(ts)),
                             state=state, buffers=0, threads=lrfast.get_num_threads()))
            del opt, params
        for mode in args.modes.split(","):
            params = _model(n, args.tensors, args.dtype, seed=0)
            d = DistributedOptimizer(cls(params), shard_state=(mode == "shard"),
                                     bucket_mb=args.bucket_mb)
            for _ in range(3):
                d.step(grads)
            ts, phases = [], []
            for _ in range(args.steps):
                d.timings = {}
                comm.Barrier()
                t = time.perf_counter()
                d.step(grads)
                ts.append(time.perf_counter() - t)
                phases.append(dict(d.timings))
            ts = np.array(ts)
            comm.Allreduce(MPI.IN_PLACE, ts, op=MPI.MAX)
            k = int(np.argsort(ts)[len(ts) // 2])          # the median step, all phases
            ph = {key: comm.allreduce(v, op=MPI.MAX) for key, v in sorted(phases[k].items())}
            mem = d.memory()
            state = comm.allreduce(mem["state"], op=MPI.MAX)
            buf = comm.allreduce(mem["buffers"], op=MPI.MAX)
            rows.append(dict(n=n, P=P, mode=mode, ms=1e3 * float(ts[k]),
                             phases={key: 1e3 * v for key, v in ph.items()},
                             state=int(state), buffers=int(buf),
                             threads=lrfast.get_num_threads()))
            del d, params
    if rank == 0:
        with open(args.worker, "w") as f:
            json.dump({"rows": rows, "mpi": MPI.Get_library_version().splitlines()[0],
                       "cores": os.cpu_count()}, f)
    return 0


def _table(rows, args, meta):
    out = [f"lrfast distributed bench: {args.optimizer} {args.dtype}, {args.tensors} tensors, "
           f"median of {args.steps} steps, slowest rank; {meta.get('cores')} cores; "
           f"{meta.get('mpi', '')}",
           "",
           "| params | ranks | mode | threads/rank | step ms | reduce ms | local step ms | "
           "gather ms | state MiB/rank | buffers MiB/rank |",
           "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    mib = 1 << 20
    for r in rows:
        ph = r.get("phases", {})
        def f(k):
            return f"{ph[k]:.2f}" if k in ph else "-"
        out.append(f"| {r['n']:.0e} | {r['P']} | {r['mode']} | {r['threads']} | {r['ms']:.2f} | "
                   f"{f('reduce')} | {f('step')} | {f('gather')} | {r['state'] / mib:.1f} | "
                   f"{r['buffers'] / mib:.1f} |")
    return "\n".join(out)


def main(argv=None):
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return _worker(args)
    if args.quick:
        args.sizes, args.steps = "1e5,1e6", min(args.steps, 5)
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        print("bench --distributed needs mpi4py and an MPI runtime: "
              "pip install 'lrfast[mpi-bundled]' (or 'lrfast[mpi]' with your own MPI)",
              file=sys.stderr)
        return 2
    mpiexec = _mpiexec()
    if mpiexec is None:
        print("bench --distributed: no mpiexec found (pip install mpich)", file=sys.stderr)
        return 2
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    rows, meta = [], {}
    fwd = ["--sizes", args.sizes, "--optimizer", args.optimizer, "--dtype", args.dtype,
           "--tensors", str(args.tensors), "--steps", str(args.steps), "--modes", args.modes,
           "--bucket-mb", str(args.bucket_mb)]
    if args.threads is not None:
        fwd += ["--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        for P in [int(x) for x in args.ranks.split(",") if x.strip()]:
            path = os.path.join(tmp, f"p{P}.json")
            # python -m mpi4py: an uncaught exception aborts every rank (no hang)
            cmd = [mpiexec, "-n", str(P), sys.executable, "-m", "mpi4py", "-m",
                   "lrfast.cli.distributed_bench", "--worker", path, *fwd]
            print(f"+ {' '.join(cmd[:3])} python -m mpi4py -m lrfast.cli.distributed_bench ...",
                  flush=True)
            try:
                r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                   timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"  {P} ranks: timed out after {args.timeout:.0f} s", file=sys.stderr)
                continue
            if r.returncode != 0:
                print(f"  {P} ranks failed (exit {r.returncode}):\n{r.stderr[-3000:]}",
                      file=sys.stderr)
                return 1
            with open(path) as f:
                res = json.load(f)
            rows.extend(res["rows"])
            meta = res
    rows.sort(key=lambda r: (r["n"], r["mode"] != "plain", r["mode"], r["P"]))
    print(_table(rows, args, meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "args": vars(args)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
