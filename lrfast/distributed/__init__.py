"""Data-parallel training over MPI (mpi4py), with optional ZeRO-1 state sharding.

::

    from mpi4py import MPI                       # mpiexec -n 4 python train.py
    import lrfast
    from lrfast.distributed import DistributedOptimizer

    opt = DistributedOptimizer(lrfast.Adam(params, lr=1e-3))   # every rank, same params
    for batch in my_shard_of_the_data:
        opt.step(backward(batch))                # grads of THIS rank's batch
    sd = opt.state_dict()                        # full state on rank 0 (None elsewhere)

Design (read before changing the step)
--------------------------------------
The package has three parts:

- :mod:`._layout`: the flat index space of each dtype, its buckets and each
  rank's shard (pieces of params are contiguous 1-D *views*, so nothing in the
  kernels changes).
- :mod:`._protocol`: the agreement protocol. Every collective is preceded by
  an agreement that every rank reaches, so a failure or a disagreement on one
  rank raises on every rank and changes nothing; no rank hangs.
- :mod:`._optimizer`: :class:`DistributedOptimizer`.

a) Gradient averaging copies the user's grads (never modified) into a bucket
   buffer per dtype and reduces it with one nonblocking ``Ireduce_scatter``
   (``shard_state=True``) or ``Iallreduce`` (``shard_state=False``) per bucket:
   the next bucket is packed while the previous one is on the wire. No
   per-tensor messages, no pickling. The sum is divided by P: the reference is
   one process stepping on the mean of the per-rank grads.
b) ``shard_state=True`` (ZeRO stage 1): each rank keeps an inner optimizer of
   the same class and hyperparameters (the same schedule objects) over the
   views of its pieces, so optimizer state is allocated for ~1/P of the
   elements, and steps them with the same fused kernel call. Then one
   ``Iallgatherv`` per bucket sends every rank's updated pieces to all ranks,
   which copy them into their params. Every element is computed by exactly one
   rank, so params are bit-identical across ranks by construction.
   ``shard_state=False`` keeps the wrapped optimizer as it is (full state on
   every rank) and steps it on the averaged grads.
c) Elementwise updates on the same averaged grad are bit-identical to one
   process; only the sum's association order (MPI's) differs from
   ``g0 + g1 + ...`` (for P = 2 it cannot). Global quantities stay global:
   the inner optimizer clips and skips inside its engine step, on the global
   sum of squares that its norm hook returns (the per-rank partial sums,
   combined exactly with ``math.fsum``), so a non-finite step is skipped on
   every rank. Kinds that sum per tensor (Prodigy, D-Adaptation, DoG, LDoG):
   sharded, the ranks' ranges are cut on the engine's reduction-block
   boundaries, every rank keeps an (empty) piece of every param, and the step's
   sums hook all-gathers the block sums and sums each param's blocks in one
   process's order: d is the same bits as one process's (``_sums_hook``).
   8-bit state: sharded, the cuts lie on its 256-element blocks, and the
   inner optimizer decides each piece's state format on its whole tensor's
   size (``lrfast.optim._lowp.decide_on``), so a piece's codes and absmax are
   the whole tensor's; ``state_dict`` concatenates them (absmax by a pickled
   gather, codes and bfloat16 state carried exactly in the float32 buffers).
   16-bit params: their grads are reduced in float32 and the mean rounded once
   to the params' dtype (nearest even) on every rank, as replicated; sharded,
   the updated pieces travel widened to float32, the master copies
   (``master_param``) shard like any state array, and stochastic rounding
   keys each piece's random bits by its whole tensor's index and its offset
   there (``decide_on(..., sr_keys=)``), as one process keys them.
d) A step agrees twice: before any data moves (grads, params, and a digest of
   the step's evaluated hyperparameters, step counters and options), and after
   the reduction, before anything is written (the norm hook's verdict).
   Construction allgathers a digest of (optimizer class, hyperparameters,
   param shapes/dtypes/layouts, options) and every rank raises if the digests
   differ.
e) Step counts and schedules: the inner optimizer counts steps exactly as the
   wrapped one would (a param whose grad is None on every rank is skipped, as in
   one process; None on some ranks only counts as a zero grad there, as torch
   DDP does), so schedules evaluate at the same n.
"""
from __future__ import annotations

from ._optimizer import _SUPPORTED, DistributedOptimizer, default_num_threads  # noqa: F401

__all__ = ["DistributedOptimizer", "default_num_threads"]
