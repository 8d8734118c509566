"""Train a small numpy MLP data-parallel over MPI with lrfast.

    pip install "lrfast[mpi-bundled]"         # mpi4py + MPICH, from wheels (lrfast[mpi]: your MPI)
    mpiexec -n 4 python examples/distributed_mlp.py            # ~20 s on a laptop
    mpiexec -n 2 python examples/distributed_mlp.py --quick --verify

Every rank holds the full model and sees a different quarter of each global
batch; ``DistributedOptimizer`` averages the gradients over the ranks and steps
(ZeRO-1: each rank keeps the Adam state of ~1/P of the weights), so all ranks
hold the same weights after every step. ``--verify`` makes rank 0 replay the
run in one process, stepping on the mean of all ranks' gradients, and prints
the largest difference (float64: about 1e-15 relative).
"""
import argparse
import os
import sys
import time

try:
    from mpi4py import MPI
except ImportError:
    sys.exit("this example needs mpi4py and an MPI runtime: pip install 'lrfast[mpi-bundled]' "
             "(or 'lrfast[mpi]' with your own MPI)")

# Ranks on one host share its cores: give numpy's BLAS (the matmuls below) its
# share before numpy starts its thread pool, or P ranks x all-cores BLAS
# threads fight over the cores (30x slower on 2 cores). lrfast's own kernels
# split the cores the same way by default (DistributedOptimizer).
_local = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(max(1, (os.cpu_count() or 1) // _local)))

import numpy as np  # noqa: E402

import lrfast  # noqa: E402
from lrfast import schedules  # noqa: E402
from lrfast.distributed import DistributedOptimizer  # noqa: E402


def spirals(n, classes=3, seed=0):
    """``classes`` interleaved noisy spirals in 2-D: not linearly separable."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, classes, n)
    r = rng.uniform(0.05, 1.0, n)
    theta = 4.0 * r + 2 * np.pi * k / classes + rng.normal(0, 0.15, n)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    return x, k


def init(sizes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params.append((rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(dtype))
        params.append(np.zeros(b, dtype))
    return params


def forward_backward(params, x, y):
    """Mean cross-entropy over the batch and its gradients (tanh hidden layers)."""
    acts, h = [x], x
    n_layers = len(params) // 2
    for i in range(n_layers):
        z = h @ params[2 * i] + params[2 * i + 1]
        h = np.tanh(z) if i < n_layers - 1 else z
        acts.append(h)
    z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))
    d = p
    d[np.arange(len(y)), y] -= 1
    d /= len(y)
    grads = [None] * len(params)
    for i in reversed(range(n_layers)):
        grads[2 * i] = acts[i].T @ d
        grads[2 * i + 1] = d.sum(axis=0)
        if i:
            d = (d @ params[2 * i].T) * (1 - acts[i] ** 2)
    return loss, [g.astype(pp.dtype) for g, pp in zip(grads, params)]


def accuracy(params, x, y):
    h = x
    for i in range(len(params) // 2):
        h = h @ params[2 * i] + params[2 * i + 1]
        if i < len(params) // 2 - 1:
            h = np.tanh(h)
    return float(np.mean(h.argmax(axis=1) == y))


def make_optimizer(params, steps):
    lr = schedules.CosineDecay(3e-2, decay_steps=steps, alpha=0.05)
    return lrfast.Adam(params, lr=lr, weight_decay=1e-5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds: smaller run")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch", type=int, default=256, help="global batch (split over ranks)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--replicated", action="store_true",
                    help="shard_state=False: full optimizer state on every rank")
    ap.add_argument("--checkpoint", help="save the optimizer here at the end (rank 0 writes)")
    ap.add_argument("--verify", action="store_true",
                    help="rank 0 replays the run in one process and compares")
    args = ap.parse_args(argv)
    comm = MPI.COMM_WORLD
    rank, P = comm.Get_rank(), comm.Get_size()
    epochs = args.epochs or (3 if args.quick else 30)
    n_train = 3000 if args.quick else 12000
    x, y = spirals(n_train + 2000, seed=1)
    x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    x_train = x_train.astype(args.dtype)
    sizes = [2, args.hidden, args.hidden, 3]
    batch = max(P, args.batch - args.batch % P)          # equal local batches
    steps_per_epoch = n_train // batch
    total = epochs * steps_per_epoch

    params = init(sizes, args.dtype)          # every rank: same init (rank 0's is broadcast)
    opt = DistributedOptimizer(make_optimizer(params, total), shard_state=not args.replicated)
    if rank == 0:
        n_par = sum(p.size for p in params)
        mem = opt.memory()
        print(f"{P} ranks, {n_par} params ({args.dtype}), global batch {batch} "
              f"({batch // P} per rank), {total} steps; Adam state on this rank: "
              f"{mem['state'] / 1024:.0f} KiB (one process: "
              f"{2 * sum(p.nbytes for p in params) / 1024:.0f} KiB); "
              f"{lrfast.get_num_threads()} kernel thread(s) per rank", flush=True)
    order_rng = np.random.default_rng(7)       # the same shuffles on every rank
    history = []                               # (global batch indices) for --verify
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = order_rng.permutation(n_train)
        losses = []
        for s in range(steps_per_epoch):
            idx = perm[s * batch:(s + 1) * batch]
            mine = idx[rank::P]                # this rank's share of the global batch
            loss, grads = forward_backward(params, x_train[mine], y_train[mine])
            opt.step(grads)
            losses.append(loss)
            if args.verify:
                history.append(idx)
        loss = comm.allreduce(float(np.mean(losses))) / P
        if rank == 0 and (epoch % max(1, epochs // 10) == 0 or epoch == epochs - 1):
            print(f"epoch {epoch + 1:3d}  loss {loss:.4f}  lr {opt.lr:.2e}  "
                  f"test accuracy {accuracy(params, x_test, y_test):.3f}", flush=True)
    elapsed = time.perf_counter() - t0
    same = comm.allgather(b"".join(p.tobytes() for p in params))
    if rank == 0:
        print(f"{total} steps in {elapsed:.1f} s; weights identical on all ranks: "
              f"{len(set(same)) == 1}")
    if args.checkpoint:
        path = opt.save(args.checkpoint)
        if rank == 0:
            print(f"saved {path} (loads into lrfast.Adam in one process, or into "
                  f"DistributedOptimizer on any number of ranks)")
    if args.verify and rank == 0:
        ref = init(sizes, args.dtype)
        ref_opt = make_optimizer(ref, total)
        for idx in history:
            per_rank = [forward_backward(ref, x_train[idx[r::P]], y_train[idx[r::P]])[1]
                        for r in range(P)]
            mean = []
            for i in range(len(ref)):
                s = per_rank[0][i].copy()
                for g in per_rank[1:]:
                    s += g[i]
                mean.append(s / s.dtype.type(P) if P > 1 else s)
            ref_opt.step(mean)
        err = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(params, ref))
        print(f"--verify: max relative difference from one process stepping on the mean "
              f"gradient: {err:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
