"""Row-sparse grads: :class:`RowSparse` and the optimizers' sparse step.

A :class:`RowSparse` grad touches rows ``indices`` of a param of shape
``(n, ...)``; its ``values`` have shape ``(k, ...)``. Duplicate indices are
summed (in index order, deterministically), as torch coalesces a
``sparse_coo_tensor``. ``SGD`` (without momentum and weight decay),
``Adagrad`` (without weight decay) and ``SparseAdam`` step such a grad in
O(rows touched): only those rows of the param and of its state change, with
torch's sparse semantics.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._dispatch import kernels as _K
from ._table import KINDS

__all__ = ["RowSparse", "coalesce_plan", "sparse_step", "has_rowsparse"]


class RowSparse:
    """A row-sparse gradient: ``values[j]`` is the grad of row ``indices[j]``.

    Parameters
    ----------
    indices : array of int, shape (k,)
        Rows of the param this grad touches, each in ``[0, n)``; repeats are
        summed (in index order).
    values : ndarray, shape (k, ...)
        One grad row per index, in the param's dtype; ``values.shape[1:]``
        must equal the param's ``shape[1:]``.

    The arrays are referenced, not copied, and never modified. Their range
    and shape against the param are checked by the step, before any write.
    """

    __slots__ = ("indices", "values")

    def __init__(self, indices: Any, values: Any) -> None:
        idx = np.asarray(indices) if not isinstance(indices, np.ndarray) else indices
        if idx.dtype.kind not in "iu":
            raise TypeError(f"RowSparse: indices must be integers, got dtype {idx.dtype}")
        if idx.ndim != 1:
            raise ValueError(f"RowSparse: indices must have shape (k,), got shape {idx.shape}")
        if not isinstance(values, np.ndarray):
            raise TypeError(f"RowSparse: values must be a numpy ndarray, got "
                            f"{type(values).__name__}")
        if values.ndim < 1 or values.shape[0] != idx.shape[0]:
            raise ValueError(f"RowSparse: values must have shape (k, ...) with k = "
                             f"{idx.shape[0]} indices, got shape {values.shape}")
        self.indices = idx
        self.values = values

    @property
    def nnz(self) -> int:
        """Number of (index, values row) entries, duplicates included."""
        return int(self.indices.shape[0])

    def to_dense(self, shape: Tuple[int, ...]) -> np.ndarray:
        """The dense grad of a param of this ``shape`` (duplicates summed)."""
        out = np.zeros(shape, self.values.dtype)
        np.add.at(out, self.indices, self.values)
        return out

    def __repr__(self) -> str:
        return (f"RowSparse(nnz={self.nnz}, values shape {self.values.shape}, "
                f"dtype {self.values.dtype})")


def has_rowsparse(grads: Any) -> bool:
    if not isinstance(grads, (list, tuple)):
        return False
    return any(type(g) is RowSparse for g in grads)


def check_rowsparse(g: RowSparse, p: np.ndarray, where: str) -> None:
    """Raise unless ``g`` is a valid row-sparse grad of param ``p``."""
    if p.ndim < 1:
        raise ValueError(f"{where}: a RowSparse grad needs a param with at least one "
                         "dimension (rows), got a 0-d param")
    if not p.flags.c_contiguous:
        raise ValueError(f"{where}: a RowSparse grad needs a C-contiguous param "
                         "(its rows are contiguous)")
    v = g.values
    if v.dtype != p.dtype:
        raise TypeError(f"{where}: RowSparse values dtype {v.dtype} != param dtype {p.dtype}")
    if v.shape[1:] != p.shape[1:]:
        raise ValueError(f"{where}: RowSparse values shape {v.shape} does not match the param "
                         f"shape {p.shape} (values need shape (k, *{p.shape[1:]}))")
    if not v.dtype.isnative:
        raise TypeError(f"{where}: RowSparse values have non-native byte order")
    idx = g.indices
    if idx.dtype.kind not in "iu":          # the attribute may have been replaced
        raise TypeError(f"{where}: RowSparse indices must be integers, got dtype {idx.dtype}")
    if idx.shape != (v.shape[0],):
        raise ValueError(f"{where}: RowSparse has {idx.shape} indices for values of shape "
                         f"{v.shape}")
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0:
            raise ValueError(f"{where}: RowSparse index {lo} is negative (rows are 0.."
                             f"{p.shape[0] - 1})")
        if hi >= p.shape[0]:
            raise ValueError(f"{where}: RowSparse index {hi} is out of range for a param "
                             f"with {p.shape[0]} rows")


def coalesce_plan(indices: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, rows, starts)``: a stable argsort of ``indices``, the distinct
    rows in increasing order, and where each row's run starts in ``order``
    (``starts[-1] == k``). O(k log k); checked indices only."""
    idx = indices.astype(np.intp, copy=False)
    k = idx.shape[0]
    if k < 2 or bool((idx[1:] > idx[:-1]).all()):     # already distinct and increasing
        ar = np.arange(k + 1, dtype=np.intp)
        return ar[:k], np.ascontiguousarray(idx), ar
    order = np.argsort(idx, kind="stable").astype(np.intp, copy=False)
    s = idx[order]
    first = np.empty(k, bool)
    if k:
        first[0] = True
        np.not_equal(s[1:], s[:-1], out=first[1:])
    starts = np.flatnonzero(first).astype(np.intp, copy=False)
    rows = np.ascontiguousarray(s[starts])
    return (np.ascontiguousarray(order), rows,
            np.ascontiguousarray(np.append(starts, k).astype(np.intp, copy=False)))


# --------------------------------------------------------------------------
# The optimizers' sparse step
# --------------------------------------------------------------------------
_OPS = {"sgd": ("gs", "-lr"), "adagrad": ("gs", "eps", "-clr"),
        "adam": ("gs", "c1", "c2", "eps", "-step_size")}


def _scalars(kind: str, row: Tuple[float, ...]) -> List[float]:
    fields = KINDS[kind].row_fields
    out = []
    for f in _OPS[kind]:
        neg = f.startswith("-")
        v = row[fields.index(f.lstrip("-"))]
        out.append(-v if neg else v)
    return out


def _refuse_options(opt: Any, hp: Dict[str, Any], where: str) -> None:
    name = type(opt).__name__
    if opt.spec.kind == "sgd" and (hp["momentum"] != 0 or hp["weight_decay"] != 0):
        raise ValueError(f"{where}: {name} takes a RowSparse grad only without momentum and "
                         f"weight decay (momentum={hp['momentum']}, weight_decay="
                         f"{hp['weight_decay']}): with them every row changes (torch's sparse "
                         "SGD densifies); pass a dense grad")
    if opt.spec.kind == "adagrad" and hp["weight_decay"] != 0:
        raise ValueError(f"{where}: {name} takes a RowSparse grad only without weight decay "
                         f"(weight_decay={hp['weight_decay']}), as torch's sparse Adagrad; "
                         "pass a dense grad")


def refuse(opt: Any, grads: Any) -> None:
    """The error for a RowSparse grad given to an optimizer that takes none."""
    for i, g in enumerate(grads):
        if type(g) is RowSparse:
            raise TypeError(f"{opt._where(i)}: {type(opt).__name__} does not take RowSparse "
                            "grads (SparseAdam, SGD without momentum and weight decay, and "
                            "Adagrad without weight decay do); pass a dense ndarray")


def refuse_dense(opt: Any, grads: Any) -> None:
    """SparseAdam takes RowSparse grads only (as torch's SparseAdam)."""
    if not isinstance(grads, (list, tuple)):
        return                                  # the engine's error names the type
    for i, g in enumerate(grads):
        if g is not None and type(g) is not RowSparse:
            raise TypeError(f"{opt._where(i)}: {type(opt).__name__} takes RowSparse grads "
                            f"only (as torch's SparseAdam), got {type(g).__name__}; use "
                            "Adam for dense grads")


def sparse_step(opt: Any, grads: Any, rows: List[Tuple[float, ...]], new_keys: List[List[Any]],
                n: int, aux: Any, norm_hook: Any) -> bool:
    """One step of ``opt`` whose grads hold RowSparse entries: validate all,
    step the dense grads through the engine, then the sparse ones, and
    advance the keys of every param that had a grad. Called inside the
    optimizer's guard, with the rows the step computed."""
    name = type(opt).__name__
    if len(grads) != opt._n:
        raise ValueError(f"expected {opt._n} grads (one per param, in param order), got "
                         f"{len(grads)}")
    if aux is not None or norm_hook is not None:
        raise ValueError(f"{name}: RowSparse grads cannot be combined with an auxiliary "
                         "input or a distributed wrapper's global norm")
    for what in ("max_grad_norm", "clip_norm", "clip_value"):
        if getattr(opt, what) is not None:
            raise ValueError(f"{name}: {what} is not supported with RowSparse grads "
                             "(set it to None)")
    jobs, dense = _prepare(opt, grads, rows, n)
    if opt._skip:
        for _, _, _, _, g, _ in jobs:
            if not np.isfinite(g.values).all():
                _validate_dense(opt, dense)
                opt.last_grad_norm = float("nan")
                opt.skipped_steps += 1
                return False
    preps = [coalesce_plan(g.indices) for _, _, _, _, g, _ in jobs]
    vals = [np.ascontiguousarray(g.values) for _, _, _, _, g, _ in jobs]
    if all(g is None for g in dense):
        # no dense grad (every SparseAdam step): nothing for the engine to do; its
        # step would report these values
        norm = 0.0 if opt._skip else float("nan")
        active = [False] * len(dense)
    else:
        try:
            na, applied, norm = opt._engine.step(dense, rows, max_norm=0.0,
                                                 skip_nonfinite=opt._skip)
        except (TypeError, ValueError) as e:
            raise opt._named_error(e) from None
        if not applied:
            opt.last_grad_norm = norm
            opt.skipped_steps += 1
            return False
        active = opt._engine.active()
    opt.last_grad_norm = norm
    op = _K.SPARSE_OPS[opt.spec.kind]
    for (i, p, s0, s1, _, sc), (order, rws, starts), v in zip(jobs, preps, vals):
        _K.sparse_rows(op, p, s0, s1, v, order, rws, starts, sc)
    for i, *_ in jobs:
        active[i] = True
    if all(active):
        opt._ukeys = new_keys
    else:
        opt._advance_partial(active, new_keys)
    opt._step_count = n + 1
    return True


def _validate_dense(opt: Any, dense: List[Optional[np.ndarray]]) -> None:
    """Validate the dense grads (read-only) before a skip, as on the dense path."""
    if any(d is not None for d in dense):
        try:
            opt._engine.grad_norm(dense)
        except (TypeError, ValueError) as e:
            raise opt._named_error(e) from None


def _prepare(opt: Any, grads: Any, rows: List[Tuple[float, ...]], n: int):
    """Validate every RowSparse grad (and the options it needs); return the
    sparse jobs and the grads with None in their place (for the engine)."""
    kind = opt.spec.kind
    if not opt._uniform:
        off, o = [], 0
        for u in opt._ukeys:
            off.append(o)
            o += len(u)
    hps: Dict[int, Dict[str, Any]] = {}
    jobs = []
    dense: List[Optional[np.ndarray]] = list(grads)
    for i, g in enumerate(grads):
        if type(g) is not RowSparse:
            continue
        where = opt._where(i)
        p = opt._params[i]
        check_rowsparse(g, p, where)
        gi = opt._group_of[i]
        if gi not in hps:
            hps[gi] = opt._values(opt._plans[gi], n)
        _refuse_options(opt, hps[gi], where)
        row = rows[gi] if opt._uniform else rows[off[gi] + opt._cls[i]]
        st = opt._states[i]
        s0 = st[0] if kind != "sgd" else None
        s1 = st[1] if kind == "adam" else None
        _check_kernel_fit(p, (s0, s1), opt, where)
        jobs.append((i, p, s0, s1, g, _scalars(kind, row)))
        dense[i] = None
    if jobs:
        _refuse_overlaps(opt, grads, jobs)
    return jobs, dense


def _check_kernel_fit(p: np.ndarray, states: Tuple[Any, ...], opt: Any, where: str) -> None:
    """The sparse kernel steps float32/float64 params with state of the param's
    dtype; refuse anything else here, before the dense grads are stepped (the
    kernel's own check came after them: a partial step)."""
    name = type(opt).__name__
    if p.dtype not in (np.float32, np.float64):
        raise TypeError(f"{where}: {name} takes a RowSparse grad only for a float32 or float64 "
                        f"param, got {p.dtype}; pass a dense grad")
    for a in states:
        if a is not None and (not isinstance(a, np.ndarray) or a.dtype != p.dtype
                              or a.shape != p.shape or not a.flags.c_contiguous):
            raise TypeError(f"{where}: {name} takes a RowSparse grad only with state in the "
                            f"param's dtype ({p.dtype}; this optimizer keeps it as "
                            f"{getattr(a, 'dtype', type(a).__name__)}: state_dtype); pass a "
                            "dense grad")


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=1 << 20))  # type: ignore[arg-type]
    except getattr(np, "exceptions", np).TooHardError:
        return True


def _refuse_overlaps(opt: Any, grads: Any, jobs: List[Any]) -> None:
    """A RowSparse grad's values are read while the step writes the params and
    their state: values that share memory with any of them (a view of the
    param's rows) would be read after rows were updated. Refused, before any
    write, as the engine refuses a dense grad that overlaps its param."""
    written = []
    for i, g in enumerate(grads):
        if g is None:
            continue
        written.append((i, "param", opt._params[i]))
        for name, a in zip(opt.spec.states, opt._states[i]):
            if isinstance(a, np.ndarray):
                written.append((i, f"state {name!r}", a))
    for i, _, _, _, g, _ in jobs:
        for j, what, a in written:
            if _overlaps(g.values, a):
                whose = "its own param" if (j == i and what == "param") else (
                    f"the {what} of {opt._where(j)}")
                raise ValueError(f"{opt._where(i)}: RowSparse values overlap {whose} (the "
                                 "step writes it while reading them); pass a separate values "
                                 "array, e.g. values.copy()")
