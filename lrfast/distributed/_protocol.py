"""The agreement protocol of the distributed optimizer: no rank hangs, no rank
diverges silently.

Every collective call of the optimizer is preceded by an agreement, a small
collective that every rank reaches whatever happened on it locally:

- A step agrees twice. First, before any data moves, one ``Allreduce`` carries
  each rank's has-grad flags, an error flag (bad grads, a changed param, a
  schedule that raised) and a digest of the step's evaluated hyperparameters,
  step counters and options; a disagreement raises on every rank, naming the
  first value that differs. Second, after the grads are reduced and before
  anything is written, the *verdict*: one ``Allgather`` of (sum of squares,
  finite, failed) per rank, run as the inner optimizer's norm hook (between
  the engine's reduction pass and its update), or directly by a rank whose
  local work failed before reaching it. It turns the local sums of squares
  into the global one for clipping and skipping, and raises on every rank if
  any rank failed (packing its grads, evaluating a schedule, ...).
- ``state_dict``, ``load_state_dict``, ``save`` and ``load`` do their local
  work (which can fail) before a tiny ``allgather`` of (call, root, error),
  and ``load_state_dict`` rolls back on every rank if any rank's load failed.

A failing rank re-raises its own error; the others raise one that names the
rank and its error. Nothing is changed on any rank then.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Optional

from mpi4py import MPI

__all__ = ["Agreement", "digest62", "msg", "raise_everywhere", "diff", "show"]


def digest62(vals):
    """A 62-bit digest of a repr-able value (so that -digest fits an int64)."""
    d = hashlib.blake2b(repr(vals).encode(), digest_size=8).digest()
    return int.from_bytes(d, "little") >> 2


def msg(e):
    return f"{type(e).__name__}: {e}"


def raise_everywhere(comm, err, template, cls):
    """Error path of an agreement that found a failure (every rank is here):
    allgather the messages; the failing ranks re-raise their own error, the
    others raise ``cls(template.format(r=first failing rank, e=its message))``."""
    msgs = comm.allgather(None if err is None else msg(err))
    if err is not None:
        raise err
    r = next(r for r, m in enumerate(msgs) if m is not None)
    raise cls(template.format(r=r, e=msgs[r]))


def diff(sigs):
    """Name the first field on which some rank disagrees with rank 0."""
    ref = sigs[0]
    for r, s in enumerate(sigs[1:], 1):
        if s == ref:
            continue
        for (k0, v0), (k1, v1) in zip(ref, s):      # the first field that differs
            if (k0, v0) != (k1, v1):
                return f"{k0}: rank 0 has {show(v0)}, rank {r} has {show(v1)}"
        if len(s) != len(ref):
            n0 = dict(ref).get("number of param groups")
            return (f"the parameter list: rank 0 has {len(ref)} entries ({n0} groups), "
                    f"rank {r} has {len(s)} ({dict(s).get('number of param groups')} groups)")
    return "their settings"


def show(v):
    if isinstance(v, str):
        try:
            return repr(float.fromhex(v)) if v.startswith(("0x", "-0x")) else v
        except ValueError:
            return v
    if isinstance(v, tuple):
        return "(" + ", ".join(show(x) for x in v) + ")"
    return repr(v)


class Agreement:
    """The protocol's methods, mixed into the optimizer. It provides
    ``_comm``, ``size``, ``rank``, ``shard_state``, ``_n``, ``_ctrl`` (int64,
    n + 3), ``_scalars`` (3 doubles), ``_scalars_all`` (3 * size), ``_core``
    (the optimizer that steps) and ``last_grad_norm``."""

    _verdict_done = False

    def _agree_before_step(self, prepare):
        """The step's first agreement, before any data moves. ``prepare()``
        does this rank's checks and returns (has-grad flag per param, the
        [(name, value)] every rank must agree on, payload). One ``Allreduce``
        (MAX) of [flags, error flag, h, -h], where h is a digest of the values:
        all ranks agree iff max(h) == h and max(-h) == -h. Returns (payload,
        global has-grad mask); raises on every rank if any rank failed or
        disagrees."""
        ctrl, n = self._ctrl, self._n
        err: Optional[BaseException] = None
        payload: Any = None
        vals: Any = None
        h = 0
        try:
            flags, vals, payload = prepare()
            h = digest62(vals)
        except Exception as exc:       # noqa: BLE001 - raised on every rank below
            err = exc
        if err is None:
            ctrl[:n] = flags
            ctrl[n] = 0
        else:
            ctrl[:n] = 0
            ctrl[n] = 1
        ctrl[n + 1], ctrl[n + 2] = h, -h
        self._comm.Allreduce(MPI.IN_PLACE, ctrl, op=MPI.MAX)
        if ctrl[n]:
            raise_everywhere(self._comm, err, "DistributedOptimizer.step: rank {r} could not "
                             "step ({e}); nothing changed on any rank", ValueError)
        if ctrl[n + 1] != h or ctrl[n + 2] != -h:
            everyone = self._comm.allgather(vals)
            raise ValueError("DistributedOptimizer.step: ranks disagree on this step's "
                             + diff(everyone) + " (set hyperparameters on every rank alike); "
                             "nothing changed on any rank")
        return payload, ctrl[:n].astype(bool)

    def _verdict(self, sumsq=0.0, finite=True, err=None):
        """The step's second agreement, after the grads are reduced and before
        anything is written: one ``Allgather`` of (sum of squares, finite,
        failed) per rank. The inner step calls it as its norm hook, between
        the engine's reduction pass and the update; a rank whose step failed
        before that point calls it with its error. Raises on every rank if any
        rank failed; else returns the global (sum of squares, finite): sharded,
        the per-rank partial sums combined exactly (``math.fsum``, so in no
        rank-dependent order); replicated, this rank's (every rank reduced
        the same averaged grads)."""
        self._verdict_done = True
        s = self._scalars
        s[0], s[1], s[2] = sumsq, 1.0 if finite else 0.0, 0.0 if err is None else 1.0
        self._comm.Allgather(s, self._scalars_all)
        parts = self._scalars_all.reshape(self.size, 3)
        if parts[:, 2].any():
            raise_everywhere(self._comm, err, "DistributedOptimizer.step: rank {r} failed "
                              "during the step ({e}); nothing changed on any rank",
                              RuntimeError)
        if not self.shard_state:
            return sumsq, finite
        try:
            total = math.fsum(parts[:, 0].tolist())
        except OverflowError:            # finite partial sums whose total overflows
            total = float("inf")
        return total, bool((parts[:, 1] == 1.0).all())

    def _run_local(self, opt, grads, err, sums_hook=None):
        """Step ``opt`` with the verdict as its norm hook (and ``sums_hook``,
        which every rank reaches once the verdict passed); every rank passes
        the verdict exactly once, whatever fails where. Returns applied."""
        self._verdict_done = False
        ok = False
        if err is None:
            try:
                ok = opt._step(grads, norm_hook=self._verdict, sums_hook=sums_hook)
            except Exception as exc:       # noqa: BLE001 - raised on every rank below
                if self._verdict_done:    # the verdict raised, or the update ran
                    raise
                err = exc
        if err is not None:
            self._verdict(err=err)       # raises, on every rank
        self.last_grad_norm = (opt.last_grad_norm if (opt.max_grad_norm is not None
                                                      or opt.skip_nonfinite) else float("nan"))
        return ok

    def _agree_on(self, what, root, err=None, same=None):
        """A tiny allgather so that ranks calling a collective with different
        arguments (or one that failed locally, or whose ``same`` digest
        differs) raise instead of deadlocking or diverging."""
        if root is not None and (isinstance(root, bool) or not isinstance(root, int)
                                 or not 0 <= root < self.size):
            err = err or ValueError(f"{what}: root must be a rank in [0, {self.size}) or None, "
                                    f"got {root!r}")
            root = -2
        everyone = self._comm.allgather((what, root, None if err is None else msg(err), same))
        if len({(w, r) for w, r, _, _ in everyone}) > 1:
            if err is not None:
                raise err
            raise ValueError(f"DistributedOptimizer.{what}: ranks called it with different "
                             f"arguments: {[(w, r) for w, r, _, _ in everyone]}")
        for r, (_, _, e, _) in enumerate(everyone):
            if e is not None:
                if err is not None:
                    raise err
                raise ValueError(f"DistributedOptimizer.{what}: rank {r} failed ({e}); "
                                 "nothing changed on any rank")
        if len({s for _, _, _, s in everyone}) > 1:
            raise ValueError(f"DistributedOptimizer.{what}: ranks passed different state_dicts "
                             "(step counts, hyperparameters or state entries differ); pass "
                             "the same dict on every rank, or pass root=k to send rank k's; "
                             "nothing changed on any rank")

    def _load_all_ranks(self, load, backup_fn, err=None):
        """Run ``load`` on every rank (unless this rank already failed with
        ``err``); if it fails anywhere, undo it everywhere."""
        backup = None
        if err is None:
            try:
                backup = backup_fn()
                load()
            except Exception as exc:   # noqa: BLE001 - raised on every rank below
                err = exc
        everyone = self._comm.allgather(None if err is None else f"{type(err).__name__}: {err}")
        failed = [(r, e) for r, e in enumerate(everyone) if e is not None]
        if failed:
            if err is None:
                self._core.load_state_dict(backup)
                r, e = failed[0]
                raise ValueError(f"load_state_dict: rank {r} rejected the state ({e}); "
                                 "nothing changed on any rank")
            raise err
