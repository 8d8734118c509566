"""Layout arithmetic of the distributed optimizer: flat index spaces, buckets
and shards.

The params of each dtype are concatenated, in param order, into one flat index
space (a C-contiguous param in C order, an F-contiguous one in F order: memory
order, so the flat view of a param is a view). The space is cut into buckets
of at most ``bucket_mb`` MiB, and every bucket is split evenly among the P
ranks: rank r owns one contiguous range of each bucket (one contiguous range of
the whole space when it fits in one bucket, the usual case). Owned ranges cut
params into pieces; a piece ``p.reshape(-1)[a:b]`` is a contiguous 1-D *view*,
so nothing in the kernels changes.

With ``block`` (optimizers whose step sums per tensor: DoG, Prodigy,
D-Adaptation), every cut (bucket bounds and rank ranges) lies on a reduction
block boundary of the tensor it falls in (a multiple of ``block`` elements
from the tensor's start) or between tensors: each piece then holds whole
blocks of its tensor, whose sums are bit-identical to one process's, and a
rank may own less or more than 1/P of a bucket (at most a block apart per
cut; a tensor smaller than a block is never split). Sharded 8-bit state
(blocks of 256 elements, one absmax each) uses the same cuts with its block
(the least common multiple of both when an optimizer needs both).
"""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
from mpi4py import MPI

from .._typing import Array

MPI_TYPE = {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}


def order(a):
    """Memory order of a contiguous array: 'C' (also for arrays both C and F) or 'F'."""
    return "C" if a.flags.c_contiguous else "F"


def flat(a, order):
    """1-D view of a contiguous array in its memory order."""
    return a.reshape(-1) if order == "C" else a.T.reshape(-1)


def geometry(a):
    """What a wrapped param must keep: buffer, shape, strides, dtype, writeable."""
    return (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype,
            bool(a.flags.writeable))


class Space:
    """The flat index space of one dtype: offsets, buckets, this rank's ranges."""

    # set by DistributedOptimizer once the spaces are built
    pack: List[Any]
    own_pieces: List[Any]
    grad_shard: Array
    grad_half: Optional[Array]
    bufs: List[Array]
    reqs: List[Any]
    send_views: List[Any]
    recv_views: List[Any]
    bucket_params: List[Any]

    def __init__(self, dtype, idx, sizes, P, rank, bucket_elems, block=0):
        self.dtype = np.dtype(dtype)
        # 16-bit params (replicated only): grads are summed in float32
        self.half = self.dtype.itemsize == 2
        self.wire = np.dtype(np.float32) if self.half else self.dtype
        self.mpitype = MPI_TYPE[self.wire]
        self.idx = list(idx)                       # param indices, ascending
        self.offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self.N = N = int(self.offsets[-1])
        self.block = int(block)
        nb = max(1, -(-N // max(1, bucket_elems)))
        self.bounds = [b * N // nb for b in range(nb + 1)]
        if self.block:
            self.bounds = sorted({self.snap(x, 0, N) for x in self.bounds})
            nb = len(self.bounds) - 1
        self.counts, self.displs, self.own, self.shard_off = [], [], [], []
        pos = 0
        for b in range(nb):
            size = self.bounds[b + 1] - self.bounds[b]
            c = [size // P + (1 if r < size % P else 0) for r in range(P)]
            if self.block:          # each rank's range ends on a block boundary
                blo, bhi = self.bounds[b], self.bounds[b + 1]
                cuts = [blo] + [self.snap(blo + sum(c[:r + 1]), blo, bhi)
                                for r in range(P - 1)] + [bhi]
                c = [cuts[r + 1] - cuts[r] for r in range(P)]
            d = [sum(c[:r]) for r in range(P)]
            self.counts.append(c)
            self.displs.append(d)
            lo = self.bounds[b] + d[rank]
            self.own.append((lo, lo + c[rank]))
            self.shard_off.append(pos)
            pos += c[rank]
        self.shard_len = pos
        self.nb = nb
        self.bucket_max = max(self.bounds[b + 1] - self.bounds[b] for b in range(nb))

    def snap(self, x, lo, hi):
        """The cut nearest flat index x (the lower on a tie) that lies on a
        block boundary of its tensor or between tensors, within [lo, hi]
        (themselves such cuts)."""
        k = int(np.searchsorted(self.offsets, x, side="right")) - 1
        if k >= len(self.idx):
            return min(max(x, lo), hi)
        o, e = int(self.offsets[k]), int(self.offsets[k + 1])
        f = o + (x - o) // self.block * self.block
        c = min(f + self.block, e)
        y = f if x - f <= c - x else c
        return min(max(y, lo), hi)

    def segments(self, lo, hi):
        """[(param index, a, b, position)] covering flat [lo, hi): the pieces of
        params there (a:b in the param's flat view; position = flat index - lo)."""
        out = []
        if hi <= lo:
            return out
        k = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        while k < len(self.idx) and self.offsets[k] < hi:
            o, e = int(self.offsets[k]), int(self.offsets[k + 1])
            a, b = max(lo, o), min(hi, e)
            if b > a:
                out.append((self.idx[k], a - o, b - o, a - lo))
            k += 1
        return out
