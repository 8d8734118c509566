"""Scenarios shared by the MPI runner (run_scenarios.py, under mpiexec) and the
single-process reference in tests/test_distributed.py.

A scenario is a JSON-able dict: optimizer, hyperparameters, param layout,
number of steps and the per-rank grad pattern. ``rank_grads`` gives rank r's
grads at step t from the current params, the same function on both sides; the
reference steps one process on their mean over ranks (None = zero; a param
whose grad is None on every rank gets None).
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))          # tests/ for _cases

import lrfast  # noqa: E402
from lrfast import schedules  # noqa: E402
from _cases import CASES  # noqa: E402
from lrfast.optim import TABLE  # noqa: E402

# Layouts: groups of (shape, order); every dtype in one scenario is the same
# unless the layout says otherwise. Sizes are chosen so that shards of 2 and 3
# ranks cut tensors in the middle.
LAYOUTS = {
    # two groups, an F-contiguous matrix, a scalar-shaped and an empty param
    "mixed": [({}, [((7, 5), "C"), ((3,), "C")]),
              ({"lr": "half"}, [((4, 6), "F"), ((), "C"), ((0, 3), "C")])],
    # smaller than the number of ranks: some ranks own nothing
    "tiny": [({}, [((1,), "C"), ((2,), "C")])],
    # one large tensor and several small ones (several buckets with bucket_mb tiny)
    # large enough (1 MB in float64) for MPICH's long-message algorithms, whose
    # summation order is not rank order
    "large": [({}, [((300, 400), "C"), ((1001,), "C")])],
    "buckets": [({}, [((33,), "C"), ((50, 4), "C"), ((5,), "C")]),
                ({"lr": "half"}, [((6, 7), "F"), ((11,), "C")])],
}


def scenarios():
    """All scenarios run under MPI, by name."""
    out = {}
    for k, (name, hp) in enumerate(CASES):
        if not TABLE[name].distributed:         # per-tensor norms: not sharded
            continue
        for dt in ("float64", "float32"):
            out[f"case{k:02d}-{name}-{dt}-shard"] = dict(
                opt=name, hp=hp, layout="mixed", dtype=dt, steps=12, shard=True)
    for k in (1, 5, 11, 13, 21):
        name, hp = CASES[k]
        for dt in ("float64", "float32"):
            out[f"case{k:02d}-{name}-{dt}-replicated"] = dict(
                opt=name, hp=hp, layout="mixed", dtype=dt, steps=12, shard=False)
    for shard in (True, False):
        tag = "shard" if shard else "replicated"
        for dt in ("float64", "float32"):
            out[f"large-{dt}-{tag}"] = dict(opt="Adam", hp=dict(lr=0.01), layout="large",
                                            dtype=dt, steps=4, shard=shard)
        out[f"buckets-mixeddtype-{tag}"] = dict(
            opt="Adam", hp=dict(lr=0.01, amsgrad=True), layout="buckets", dtype="mixed",
            steps=10, shard=shard, bucket_mb=24 * 8 / 2 ** 20)
        out[f"tiny-{tag}"] = dict(opt="NAdam", hp=dict(lr=0.01), layout="tiny",
                                  dtype="float64", steps=8, shard=shard)
        out[f"none-{tag}"] = dict(opt="SGD", hp=dict(lr=0.05, momentum=0.9), layout="mixed",
                                  dtype="float64", steps=10, shard=shard, nones=True)
        out[f"none-adam-{tag}"] = dict(opt="Adam", hp=dict(lr=0.01), layout="mixed",
                                       dtype="float64", steps=10, shard=shard, nones=True)
        out[f"clip-{tag}"] = dict(opt="Adam", hp=dict(lr=0.01), layout="buckets",
                                  dtype="float64", steps=10, shard=shard, max_grad_norm=0.5,
                                  bucket_mb=40 * 8 / 2 ** 20)
        out[f"clip32-{tag}"] = dict(opt="SGD", hp=dict(lr=0.05, momentum=0.5),
                                    layout="mixed", dtype="float32", steps=10, shard=shard,
                                    max_grad_norm=0.5)
        out[f"skip-{tag}"] = dict(opt="RMSprop", hp=dict(lr=0.01), layout="mixed",
                                  dtype="float64", steps=10, shard=shard, skip_nonfinite=True,
                                  nan_at=(3, 7))
        out[f"schedule-{tag}"] = dict(opt="Adam", hp=dict(lr="exp", betas="sched"),
                                      layout="mixed", dtype="float64", steps=12, shard=shard)
        out[f"adagrad-lrdecay-{tag}"] = dict(opt="Adagrad", hp=dict(lr=0.1, lr_decay=0.05),
                                             layout="buckets", dtype="float32", steps=10,
                                             shard=shard, bucket_mb=64 * 4 / 2 ** 20)
    return out


def _hp(hp):
    hp = dict(hp)
    if hp.get("lr") == "exp":
        hp["lr"] = schedules.ExponentialDecay(0.02, decay=0.05)
    if hp.get("betas") == "sched":
        hp["betas"] = (schedules.StepDecay(0.9, drop=0.9, every=4), 0.99)
    return hp


def make_params(spec):
    rng = np.random.default_rng(1234)
    groups = []
    for gi, (over, shapes) in enumerate(LAYOUTS[spec["layout"]]):
        ps = []
        for j, (shape, order) in enumerate(shapes):
            dt = spec["dtype"]
            if dt == "mixed":
                dt = "float32" if (gi + j) % 2 else "float64"
            ps.append(np.array(rng.standard_normal(shape), dtype=dt, order=order))
        groups.append((over, ps))
    return groups


def build_opt(spec, groups):
    cls = getattr(lrfast, spec["opt"])
    hp = _hp(spec["hp"])
    lr = hp.get("lr", cls.spec.defaults["lr"])
    pgs = []
    for over, ps in groups:
        g = {"params": ps}
        if over.get("lr") == "half" and not callable(lr):
            g["lr"] = lr / 2
        pgs.append(g)
    return cls(pgs, **hp, max_grad_norm=spec.get("max_grad_norm"),
               skip_nonfinite=spec.get("skip_nonfinite", False))


def flat_params(groups):
    return [p for _, ps in groups for p in ps]


def rank_grads(spec, rank, t, params):
    """Rank ``rank``'s grads at step ``t``: a contracting pull toward 0.5 plus
    rank-dependent noise, in the param's dtype and layout."""
    rng = np.random.default_rng([t, rank, 99])
    out = []
    for i, p in enumerate(params):
        g = (p.astype(np.float64) - 0.5) + 0.3 * rng.standard_normal(p.shape)
        g = np.array(g, dtype=p.dtype, order="F" if not p.flags.c_contiguous else "C")
        if spec.get("nones"):
            if i == 1 and rank == 0:
                g = None                          # None on one rank: a zero there
            elif i == 0 and t % 3 == 1:
                g = None                          # None on every rank: skipped
        if spec.get("nan_at") and t in spec["nan_at"] and i == 0 and rank == 0 and g is not None:
            g = g.copy()
            g.flat[0] = np.nan if t == spec["nan_at"][0] else np.inf
        out.append(g)
    return out


def mean_over_ranks(per, params, wide=False):
    """The mean of per-rank grad lists ``per`` (None -> zero; all None -> None),
    summed in rank order in the param's dtype, or with ``wide`` in float32 and
    rounded once to the param's dtype (16-bit params), in the param's order."""
    P = len(per)
    out = []
    for i, p in enumerate(params):
        gs = [g[i] for g in per]
        if all(g is None for g in gs):
            out.append(None)
            continue
        acc = np.dtype(np.float32) if wide else p.dtype
        s = None
        for g in gs:
            g = np.zeros(p.shape, acc) if g is None else g.astype(acc)
            s = g if s is None else s + g
        s = s / acc.type(P) if P > 1 else s
        out.append(np.array(s, dtype=acc).astype(
            p.dtype, order="F" if not p.flags.c_contiguous else "C"))
    return out


def mean_grads(spec, P, t, params):
    """The reference's grads: the mean over ranks (None -> zero; all None -> None)."""
    return mean_over_ranks([rank_grads(spec, r, t, params) for r in range(P)], params)


def reference(spec, P):
    """One process stepping on the mean of the per-rank grads."""
    groups = make_params(spec)
    params = flat_params(groups)
    opt = build_opt(spec, groups)
    rets = []
    for t in range(spec["steps"]):
        rets.append(bool(opt.step(mean_grads(spec, P, t, params))))
    return params, opt, rets


def rel_err(a, b):
    """max |a - b| / max |b| (SPEC's parity measure); 0 for empty arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if b.size == 0:
        return 0.0
    den = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / (den if den > 0 else 1.0))


def recorder(checks):
    """expect(tag, fn): runs fn and records under tag "no error" or the error it
    raised (the bad-input checks of the MPI runners)."""
    def expect(tag, fn):
        try:
            fn()
            checks[tag] = "no error"
        except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
            checks[tag] = f"{type(e).__name__}: {e}"
    return expect
