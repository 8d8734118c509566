"""``python -m lrfast bench``: lrfast against numpy, torch, optax and the
memory-bandwidth ceiling, measured in ONE process on the same inputs.

Method (why the figures can be trusted on a noisy machine)
----------------------------------------------------------
* One process; every contender is built once per case on the same inputs (the
  same initial params, the same grad arrays).
* Calibration and warmup: each contender first runs until a block of calls
  takes about ``block_s`` seconds; that fixes its calls per timed block
  (``number``) and warms its code paths, caches and thread pools.
* Interleaved rounds: each round times every contender once (one block of
  ``number`` calls, with the garbage collector off), in an order that rotates
  by one every two rounds and is reversed every other round, so no contender
  is always first or always follows the same neighbour.
* Pauses: after a block that ran more than one thread the runner sleeps
  ``spin_s`` (12 ms) before the next block. libgomp's workers spin-wait for
  about 8 ms after each parallel region (GOMP_SPINCOUNT=300000 by default;
  measured here), and torch ships its own libgomp: without the pause the next
  contender would share the cores with the previous one's spinning pool (a
  1 ms torch block right after lrfast@2 measured 6.7 ms/step on 2 cores).
  Every other block waits ``pause_s`` (1 ms). After a pause, one untimed
  call re-warms the core (the first call after a sleep ran 10-60x slower
  here: caches, TLBs and the vCPU itself go cold), unless a single call
  fills the block.
* Medians of per-round ratios: a ratio is taken within one round (both times
  saw the same machine state), and the median over rounds is reported.
  ns/element is the median over rounds of each contender's own time.

Contenders
----------
``lrfast``        the public API: ``opt.step(grads)``, validation included.
``numpy``         the same math written in place with ``out=`` ufuncs and
                  preallocated temporaries, as a careful numpy user would
                  (one thread: numpy does not parallelise elementwise ufuncs).
``torch-forloop`` ``torch.optim.<Opt>(foreach=False)``, ``opt.step()``.
``torch-foreach`` ``foreach=True``.
``torch-fused``   ``fused=True`` (CPU fused kernels exist for Adam, AdamW,
                  SGD and Adagrad in torch 2.13; skipped elsewhere).
``optax``         a jitted ``optax`` update (only when jax+optax are
                  installed; XLA picks its own threads).
``reference``     the learning-rate-free optimizers' reference packages
                  (:data:`LRFREE`: schedulefree, prodigyopt, dog), torch on CPU
                  tensors of the case's dtype, foreach where the package has it;
                  skipped when the package is not installed.
``ceiling``       see below.

The ceiling
-----------
A streaming kernel that moves exactly the bytes the optimizer moves, with
trivially little arithmetic and the same threads. An optimizer with ``k``
state arrays reads p, g and k states and writes p and the k states (all in
place, so each written cache line was just read: no write-allocate traffic):
``(3 + 2k) * itemsize`` bytes per element (Adam fp32: read p,g,m,v + write
p,m,v = 28 B). The ceiling is built from lrfast's own multi-tensor Engine
(the same task lists, parts, OpenMP schedule and serial threshold):

* pass 1, the SGD-momentum kernel on (p, g, s0):  ``s0 = 0.5*s0 + 0.5*g;
  p -= 1e-6*s0``: reads p, g, s0, writes s0, p = 5 * itemsize bytes;
* one pass per further state s_j, the ``scale`` kernel: ``s_j *= -1``:
  reads and writes s_j = 2 * itemsize bytes.

Adam fp32: 20 + 8 = 28 B/element, ~5 flops instead of Adam's ~12 + sqrt +
div. Each pass sees the same total element count as the optimizer's step, so
it makes the same serial/parallel decision with the same thread count. The
values stay bounded and never denormal (s0 tends to g; ``*-1`` is exact and
flips the sign bit, so no store is ever "silent"). The extra pass costs one
more Engine call, which only shows at small sizes: there the "ceiling" is a
fixed-cost figure, not a bandwidth one, and lrfast may exceed 100% of it.
A numpy chain (``np.add(p, g, out=p)`` etc.) could move the same bytes, but
only on one thread; a plain copy moves fewer bytes (no state reads).

Kinds with a read-only sums pass before their update read some arrays twice
per step: Lamb, LARS, NovoGrad (per-tensor norms; ``SUMS_READS``), and the
two-pass learning-rate-free optimizers (Prodigy: ``<g, p0-p>`` and
``||s_new||_1`` from p, g, p0, s; DoG: ``||p-x0||`` and ``||g||`` from p, g,
x0; D-Adaptation; :data:`LRFREE` lists them). Their ceiling first reads those
arrays once, in one call of the Engine's reduction pass (fixed blocks, lane
sums in double), then runs the passes above, so it moves exactly the bytes of
both passes: Lamb fp32 16 + 28 = 44 B/element, LARS 8 + 20 = 28, NovoGrad
4 + 20 = 24, Prodigy 16 + 36 = 52. DAdaptSGD's and DAdaptAdaGrad's update
only reads x0 (``LrFree.update_reads``): their ceiling reads it in its
read-only pass, 16 + 4 + 28 = 48.
"""
import argparse
import datetime
import functools
import gc
import math
import os
import platform
import statistics
import sys
import time
import warnings

from typing import List, NamedTuple, Tuple

import numpy as np

from lrfast.optim._table import KINDS, TABLE, optimizers

SGD_ROW = KINDS["sgd"]

__all__ = ["run", "main", "Ceiling", "make_case", "make_inputs", "model_shapes",
           "many_small_shapes", "build_contenders", "OPTIMIZERS", "IMPLS"]

SCHEMA = "lrfast.bench/1"


class LrFree(NamedTuple):
    """A learning-rate-free optimizer in the runner: its reference package and
    the arrays each pass over memory touches (per element, steady state).

    ``sums``: what the read-only pass reads (empty: one pass);
    ``update``: the states the update pass reads and writes (besides reading p
    and g and writing p); ``update_reads``: the states the update pass only
    reads (D-Adaptation SGD's and AdaGrad's x0, written at a param's first
    step only). Names are ``p``, ``g`` and state names."""
    module: str                 # the reference package's module
    cls: str                    # its class
    package: str                # pip name and version it is checked against
    sums: Tuple[str, ...]
    update: Tuple[str, ...]
    update_reads: Tuple[str, ...] = ()


#: Learning-rate-free optimizers: lrfast name -> reference and passes. One line each.
LRFREE = {
    "ScheduleFreeSGD": LrFree("schedulefree", "SGDScheduleFree", "schedulefree 1.4.1",
                              (), ("z",)),
    "ScheduleFreeAdamW": LrFree("schedulefree", "AdamWScheduleFree", "schedulefree 1.4.1",
                                (), ("z", "exp_avg_sq")),
    "ScheduleFreeRAdam": LrFree("schedulefree", "RAdamScheduleFree", "schedulefree 1.4.1",
                                (), ("z", "exp_avg_sq")),
    "Prodigy": LrFree("prodigyopt", "Prodigy", "prodigyopt 1.1.2",
                      ("p", "g", "p0", "s"), ("s", "exp_avg", "exp_avg_sq")),
    "DoG": LrFree("dog", "DoG", "dog-optimizer 1.0.3", ("p", "g", "x0"), ()),
    "LDoG": LrFree("dog", "LDoG", "dog-optimizer 1.0.3", ("p", "g", "x0"), ()),
    "DAdaptAdam": LrFree("dadaptation", "DAdaptAdam", "dadaptation 3.2",
                         ("p", "g", "s", "exp_avg_sq"), ("s", "exp_avg_sq", "exp_avg")),
    "DAdaptSGD": LrFree("dadaptation", "DAdaptSGD", "dadaptation 3.2",
                        ("p", "g", "s", "z"), ("s", "z"), ("x0",)),
    "DAdaptAdaGrad": LrFree("dadaptation", "DAdaptAdaGrad", "dadaptation 3.2",
                            ("p", "g", "alphak", "sk"), ("alphak", "sk"), ("x0",)),
}
DEFAULT_SIZES = (1000, 10_000, 100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (1000, 10_000)
IMPLS = ("lrfast", "ceiling", "numpy", "torch-forloop", "torch-foreach", "torch-fused",
         "optax", "reference")
_SHORT = {"lrfast": "lrfast", "ceiling": "ceiling", "numpy": "numpy",
          "torch-forloop": "t-loop", "torch-foreach": "t-foreach", "torch-fused": "t-fused",
          "optax": "optax", "reference": "ref"}
LRFREE_CONTENDERS = ("lrfast", "ceiling", "reference")
THREADED = ("lrfast", "ceiling", "torch-forloop", "torch-foreach", "torch-fused", "reference")

# name -> (lrfast/torch class, hyperparameters). The hyperparameters are
# torch's defaults (SGD: momentum 0.9, the "SGD-momentum" of the targets).
OPTIMIZERS = {name.lower(): (name, {**TABLE[name].defaults, **(TABLE[name].bench or {})})
              for name in optimizers() if TABLE[name].bench is not None}
# the learning-rate-free ones at their defaults (no lr to choose)
OPTIMIZERS.update({name.lower(): (name, dict(TABLE[name].defaults))
                   for name in LRFREE if name in TABLE and name.lower() not in OPTIMIZERS})

# Optimizers outside the fused engine's elementwise loop, measured against
# torch.optim's only (no same-bytes ceiling, numpy or optax version). Their params
# take a layout of each case's elements (the same element count):
# "matrix": 2-D, near square (Adafactor factors rows and columns; Muon needs 2-D);
# "rows": an embedding table (n/dim, dim), with a row-sparse grad touching
# SPARSE_FRAC of its rows (lrfast.RowSparse; torch: a sparse COO grad).
LAYOUTS = {"Adafactor": "matrix", "Muon": "matrix", "SparseAdam": "rows"}
SPARSE_FRAC = 0.01
OPTIMIZERS.update({name.lower(): (name, dict(TABLE[name].defaults)) for name in LAYOUTS})


# ---------------------------------------------------------------------------
# Cases and inputs
# ---------------------------------------------------------------------------
def fmt_n(n):
    """1000 -> '1e3', 30000000 -> '3e7', 12345 -> '12345'."""
    if n <= 0:
        return str(n)
    e = int(math.floor(math.log10(n)))
    m = n / 10 ** e
    if e >= 3 and abs(m - round(m)) < 1e-9:
        return f"{int(round(m))}e{e}"
    return str(n)


def many_small_shapes(count=200, lo=100, hi=10_000, seed=1):
    """``count`` 1-D tensors with log-uniform sizes in [lo, hi] (fixed seed)."""
    rng = np.random.default_rng(seed)
    sizes = np.exp(rng.uniform(np.log(lo), np.log(hi), count)).astype(np.int64)
    return [(int(s),) for s in sizes]


def model_shapes(d=768, ff=3072, vocab=4096, ctx=512):
    """Parameter shapes of a GPT-2-style model slice, ~10.6M params in 16 tensors:
    token and position embeddings plus one transformer block (d=768, ff=3072)."""
    return [(vocab, d), (ctx, d),                     # embeddings
            (d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),   # ln1, qkv, attn proj
            (d,), (d,), (d, ff), (ff,), (ff, d), (d,),        # ln2, mlp
            (d,), (d,)]                                        # final ln


def make_case(kind, n=None, quick=False):
    """A benchmark case: dict(name, label, shapes, n_elements, n_tensors)."""
    if kind == "size":
        shapes, name, label = [(int(n),)], fmt_n(int(n)), fmt_n(int(n))
    elif kind == "many-small":
        shapes = many_small_shapes(hi=1000 if quick else 10_000)
        name, label = "many-small", f"200 small ({'100..1e3' if quick else '100..1e4'})"
    elif kind == "model":
        shapes = model_shapes(d=64, ff=256, vocab=256, ctx=64) if quick else model_shapes()
        name, label = "model", "model (16 tensors)"
    else:
        raise ValueError(f"unknown case kind {kind!r}")
    total = int(sum(int(np.prod(s)) for s in shapes))
    return {"name": name, "label": label, "kind": kind, "shapes": shapes,
            "n_elements": total, "n_tensors": len(shapes)}


def _near_square(n, cap=None):
    """(r, n // r) with r the largest divisor of n at most sqrt(n) (or cap)."""
    top = math.isqrt(n) if cap is None else min(n, cap)
    for r in range(max(1, top), 0, -1):
        if n % r == 0:
            return r, n // r
    return 1, n


def layout_shapes(cls, shapes):
    """The params' shapes of ``cls`` for a case's 1-D shapes (see LAYOUTS): the
    same element counts, 2-D for "matrix" and "rows" layouts."""
    lay = LAYOUTS.get(cls)
    if lay is None:
        return list(shapes)
    out = []
    for s in shapes:
        n = int(np.prod(s))
        if lay == "matrix":
            out.append(_near_square(n))
        else:                                     # rows of up to 64 elements
            dim = _near_square(n, 64)[0]
            out.append((n // dim, dim))
    return out


def sparse_grads(shapes, dtype, seed=0, frac=SPARSE_FRAC):
    """Row-sparse grads (lrfast.RowSparse): ``frac`` of each table's rows (at
    least one), distinct and sorted, values as make_inputs' grads."""
    import lrfast
    rng = np.random.default_rng(seed + 1)
    out = []
    for s in shapes:
        k = max(1, int(round(s[0] * frac)))
        idx = np.sort(rng.choice(s[0], k, replace=False)).astype(np.int64)
        v = rng.uniform(0.1, 1.0, (k,) + tuple(s[1:])) * np.where(
            rng.random((k,) + tuple(s[1:])) < 0.5, -1.0, 1.0)
        out.append(lrfast.RowSparse(idx, v.astype(dtype)))
    return out


def make_inputs(shapes, dtype, seed=0):
    """(params0, grads): params ~ N(0,1); grads with |g| in [0.1, 1] and random
    signs, so no state ever becomes denormal however many steps are timed."""
    rng = np.random.default_rng(seed)
    params, grads = [], []
    for s in shapes:
        params.append(rng.standard_normal(s, dtype=np.float64).astype(dtype))
        g = rng.uniform(0.1, 1.0, s) * np.where(rng.random(s) < 0.5, -1.0, 1.0)
        grads.append(g.astype(dtype))
    return params, grads


# ---------------------------------------------------------------------------
# The ceiling
# ---------------------------------------------------------------------------
class Ceiling:
    """Moves exactly the bytes of an optimizer with ``n_states`` state arrays
    (read p, g, states; write p, states) with trivial arithmetic, through
    lrfast's Engine (same parts, same threads). See the module docstring.

    ``passes`` lists (kernel, reads, writes) per Engine call, by array name;
    ``bytes_per_element`` is derived from it.
    """

    def __init__(self, params, grads, n_states, *, sums=(), lr=1e-6, mu=0.5, damp=0.5,
                 scale=-1.0):
        from .._dispatch import kernels as K
        self.params = [p.copy() for p in params]
        self.grads = list(grads)
        self.n_states = int(n_states)
        # states start at |g|-sized values: never zero, never denormal
        self.states = [[g.copy() for g in grads] for _ in range(self.n_states)]
        n = len(self.params)
        self.itemsize = self.params[0].dtype.itemsize
        groups = [0] * n
        self.engines, self._calls, self.passes = [], [], []
        self.sums_reads = tuple(sums)
        self.extra = {}
        if self.sums_reads:
            self._read_pass(K, params)
        if self.n_states >= 1:
            st = [[s, None, None] for s in self.states[0]]
            row = SGD_ROW.pack(gs=1.0, wd=0.0, l2=0.0, mu=mu, d1=damp, mom=1.0, nesterov=0.0,
                               lr=lr, first=0.0)
            self.passes.append(("SGD-momentum", ["p", "g", "s0"], ["s0", "p"]))
        else:
            st = [[None, None, None] for _ in range(n)]
            row = SGD_ROW.pack(gs=1.0, wd=0.0, l2=0.0, mu=0.0, d1=1.0, mom=0.0, nesterov=0.0,
                               lr=lr, first=0.0)
            self.passes.append(("SGD", ["p", "g"], ["p"]))
        self.engines.append(K.Engine(K.KINDS["sgd"], self.params, st, groups))
        self._calls.append((self.engines[-1].step, self.grads, [row]))
        for j in range(1, self.n_states):
            arrs = self.states[j]
            self.engines.append(K.Engine(K.KINDS["scale"], arrs, [None] * n, groups))
            self._calls.append((self.engines[-1].step, arrs, [KINDS["scale"].pack(gs=scale)]))
            self.passes.append(("scale", [f"s{j}"], [f"s{j}"]))

    def _read_pass(self, K, params):
        # A per-tensor (or global) kind first reads some of its arrays in a
        # read-only sums pass: here the Engine's own reduction pass (fixed blocks,
        # lane sums in double) over exactly those arrays, in one Engine call.
        # Names: "p", "g", "s<j>", or "x<k>", an array only this pass reads (as
        # Prodigy's p0 and DoG's x0).
        named = {"p": self.params, "g": self.grads,
                 **{f"s{j}": self.states[j] for j in range(self.n_states)}}
        for name in self.sums_reads:
            if name not in named and name.startswith("x") and name[1:].isdigit():
                named[name] = self.extra[name] = [p.copy() for p in params]
        bad = [a for a in self.sums_reads if a not in named]
        if bad:
            raise ValueError(f"unknown array(s) {bad} in the sums pass: not arrays of an "
                             f"optimizer with "
                             f"{self.n_states} state(s)")
        arrs = [a for name in self.sums_reads for a in named[name]]
        # the Engine's params only give shapes here (np.zeros: no pages touched)
        shapes = [np.zeros(a.shape, a.dtype) for a in arrs]
        eng = K.Engine(K.KINDS["scale"], shapes, [None] * len(arrs), [0] * len(arrs))
        self.engines.append(eng)
        self._calls.append((functools.partial(self._read, eng), arrs, None))
        self.passes.append(("sums (read only)", list(self.sums_reads), []))

    def _read(self, eng, arrs, rows=None):
        # the result is kept (tests check every element was read)
        self.read_result = eng.grad_norm(arrs)

    @property
    def bytes_per_element(self):
        return self.itemsize * sum(len(r) + len(w) for _, r, w in self.passes)

    def step(self):
        for fn, arrs, rows in self._calls:
            if rows is None:
                fn(arrs)                # the read-only pass
            else:
                fn(arrs, rows)

    __call__ = step


def optimizer_bytes_per_element(n_states, itemsize, sums=0):
    """Bytes an in-place optimizer step moves per element: read p, g and the
    states, write p and the states; plus the arrays that are only read
    (``sums``: their number, or their names): by a read-only pass before the
    update, or by the update itself (D-Adaptation's x0)."""
    nsums = sums if isinstance(sums, int) else len(sums)
    return itemsize * (3 + 2 * int(n_states) + nsums)


# The arrays each kind's read-only sums pass reads (src/_kernels.pxi,
# ``_<kind>_sums``), by the ceiling's names: p, g and the states s0, s1, ...
# Every kind with ``sums`` in the kind table has an entry (tested); the
# learning-rate-free optimizers' passes are also in LRFREE (by state name).
SUMS_READS = {
    "lamb": ("p", "g", "s0", "s1"),        # ||p||, ||u||: u from g, m, v
    "lars": ("p", "g"),                    # ||p||, ||g + wd*p||
    "novograd": ("g",),                    # ||g||^2
    "prodigy": ("p", "g", "s0", "s1"),     # <g, p0 - p>, |b3*s + c*g|: s0 = s, s1 = p0
    "dog": ("p", "g", "s0"),               # ||p - x0||, ||g||: s0 = x0
    "ldog": ("p", "g", "s0"),
    "dadapt_adam": ("p", "g", "s0", "s1"),     # s, exp_avg_sq
    "dadapt_sgd": ("p", "g", "s0", "s1"),      # s, z
    "dadapt_adagrad": ("p", "g", "s0", "s1"),  # alphak, sk
}


def passes_of(cls, opt):
    """The passes over memory of one step of ``opt`` (an lrfast optimizer of
    class name ``cls``): ``(sums, update, update_reads)``, the arrays the
    read-only pass reads, the states the update pass reads and writes
    (besides p, g) and the states it only reads."""
    states = [n for n, a in zip(TABLE[cls].states, opt._states[0]) if a is not None]
    if cls in LRFREE:
        lf = LRFREE[cls]
        return (tuple(lf.sums), tuple(s for s in lf.update if s in states),
                tuple(s for s in lf.update_reads if s in states))
    spec = TABLE[cls]
    reads = SUMS_READS.get(spec.kind, ()) if not spec.own_step else ()
    return (tuple(states[int(r[1:])] if r.startswith("s") else r for r in reads),
            tuple(states), ())


def _ceiling_sums(sums, update):
    """An optimizer's sums-pass array names in the ceiling's terms: p, g, s<j>
    for the j-th update state, x<k> for arrays only the sums pass reads."""
    out, extra = [], 0
    for name in sums:
        if name in ("p", "g"):
            out.append(name)
        elif name in update:
            out.append(f"s{update.index(name)}")
        else:
            out.append(f"x{extra}")
            extra += 1
    return tuple(out)


# ---------------------------------------------------------------------------
# numpy in place: the same math with out= ufuncs and preallocated temporaries
# ---------------------------------------------------------------------------
def _np_adam(T, hp, decoupled):
    b1, b2 = hp["betas"]
    lr, eps, wd = hp["lr"], hp["eps"], hp.get("weight_decay", 0.0)
    mul, add, sqrt, div = np.multiply, np.add, np.sqrt, np.divide

    def step(st, t):
        bc1 = 1 - b1 ** t
        bc2s = math.sqrt(1 - b2 ** t)
        c1, cb1, cb2, c2 = T(1 - b1), T(b1), T(b2), T(1 - b2)
        ibc, e, ss, dm = T(1 / bc2s), T(eps), T(-lr / bc1), T(1 - lr * wd)
        for p, g, m, v, tmp in st:
            if decoupled:
                mul(p, dm, out=p)
            mul(m, cb1, out=m)                    # m = b1*m + (1-b1)*g
            mul(g, c1, out=tmp)
            add(m, tmp, out=m)
            mul(v, cb2, out=v)                    # v = b2*v + (1-b2)*g*g
            mul(g, g, out=tmp)
            mul(tmp, c2, out=tmp)
            add(v, tmp, out=v)
            sqrt(v, out=tmp)                      # p -= lr/bc1 * m / (sqrt(v)/bc2s + eps)
            mul(tmp, ibc, out=tmp)
            add(tmp, e, out=tmp)
            div(m, tmp, out=tmp)
            mul(tmp, ss, out=tmp)
            add(p, tmp, out=p)
    return step, 2, 1


def _np_sgd(T, hp):
    mu, lr = T(hp["momentum"]), T(-hp["lr"])
    mul, add = np.multiply, np.add

    def step(st, t):
        for p, g, b, tmp in st:
            if t == 1:
                np.copyto(b, g)
            else:
                mul(b, mu, out=b)                 # b = mu*b + g
                add(b, g, out=b)
            mul(b, lr, out=tmp)                   # p -= lr*b
            add(p, tmp, out=p)
    return step, 1, 1


def _np_adagrad(T, hp):
    lr, eps = hp["lr"], T(hp["eps"])
    mul, add, sqrt, div = np.multiply, np.add, np.sqrt, np.divide

    def step(st, t):
        clr = T(-lr)                              # lr_decay = 0
        for p, g, s, tmp in st:
            mul(g, g, out=tmp)                    # s += g*g
            add(s, tmp, out=s)
            sqrt(s, out=tmp)                      # p -= lr * g / (sqrt(s) + eps)
            add(tmp, eps, out=tmp)
            div(g, tmp, out=tmp)
            mul(tmp, clr, out=tmp)
            add(p, tmp, out=p)
    return step, 1, 1


def _np_rmsprop(T, hp):
    a, c, lr, eps = T(hp["alpha"]), T(1 - hp["alpha"]), T(-hp["lr"]), T(hp["eps"])
    mul, add, sqrt, div = np.multiply, np.add, np.sqrt, np.divide

    def step(st, t):
        for p, g, v, tmp in st:
            mul(v, a, out=v)                      # v = a*v + (1-a)*g*g
            mul(g, g, out=tmp)
            mul(tmp, c, out=tmp)
            add(v, tmp, out=v)
            sqrt(v, out=tmp)                      # p -= lr * g / (sqrt(v) + eps)
            add(tmp, eps, out=tmp)
            div(g, tmp, out=tmp)
            mul(tmp, lr, out=tmp)
            add(p, tmp, out=p)
    return step, 1, 1


def _np_adadelta(T, hp):
    rho, c, lr, eps = T(hp["rho"]), T(1 - hp["rho"]), T(-hp["lr"]), T(hp["eps"])
    mul, add, sqrt, div = np.multiply, np.add, np.sqrt, np.divide

    def step(st, t):
        for p, g, v, u, t1, t2 in st:
            mul(v, rho, out=v)                    # v = rho*v + (1-rho)*g*g
            mul(g, g, out=t1)
            mul(t1, c, out=t1)
            add(v, t1, out=v)
            add(u, eps, out=t1)                   # d = sqrt(u+eps)/sqrt(v+eps)*g
            sqrt(t1, out=t1)
            add(v, eps, out=t2)
            sqrt(t2, out=t2)
            div(t1, t2, out=t1)
            mul(t1, g, out=t1)
            mul(u, rho, out=u)                    # u = rho*u + (1-rho)*d*d
            mul(t1, t1, out=t2)
            mul(t2, c, out=t2)
            add(u, t2, out=u)
            mul(t1, lr, out=t1)                   # p -= lr*d
            add(p, t1, out=p)
    return step, 2, 2


_NUMPY = {"Adam": lambda T, hp: _np_adam(T, hp, False),
          "AdamW": lambda T, hp: _np_adam(T, hp, True),
          "SGD": _np_sgd, "Adagrad": _np_adagrad, "RMSprop": _np_rmsprop,
          "Adadelta": _np_adadelta}


def _numpy_contender(cls, hp, params0, grads):
    if cls not in _NUMPY:
        raise _Skip(f"no in-place numpy version of {cls} written")
    T = params0[0].dtype.type
    fn, n_states, n_tmp = _NUMPY[cls](T, hp)
    st = []
    for p0, g in zip(params0, grads):
        arrs = [p0.copy(), g] + [np.zeros_like(p0) for _ in range(n_states + n_tmp)]
        st.append(tuple(arrs))
    box = [0]

    def step():
        box[0] += 1
        fn(st, box[0])
    step.arrays = st            # per tensor: (p, g, states..., temporaries...)
    return step


# ---------------------------------------------------------------------------
# torch and optax
# ---------------------------------------------------------------------------
class _Skip(Exception):
    """A contender that cannot run here (the message says why)."""


def _torch_contender(variant, cls, hp, params0, grads):
    try:
        import torch
    except ImportError:
        raise _Skip("torch is not installed") from None
    kw = {"torch-forloop": {"foreach": False}, "torch-foreach": {"foreach": True},
          "torch-fused": {"fused": True}}[variant]
    tcls = getattr(torch.optim, cls, None)
    if tcls is None:
        raise _Skip(f"torch {torch.__version__} has no {cls}")
    import inspect
    if "foreach" not in inspect.signature(tcls.__init__).parameters:
        # one implementation (Muon, SparseAdam): the for-loop contender runs it
        if variant != "torch-forloop":
            raise _Skip(f"torch {torch.__version__} {cls} has only a for-loop step")
        kw = {}
    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params0]
    for p, g in zip(ps, grads):
        if hasattr(g, "indices"):     # lrfast.RowSparse: a sparse COO grad, coalesced
            # once here (distinct sorted rows), so torch's per-step coalesce is cheap
            p.grad = torch.sparse_coo_tensor(torch.from_numpy(g.indices)[None],
                                             torch.from_numpy(g.values), p.shape,
                                             check_invariants=True).coalesce()
        else:
            p.grad = torch.from_numpy(g)
    try:
        opt = getattr(torch.optim, cls)(ps, **hp, **kw)
        opt.step()
    except (TypeError, RuntimeError, ValueError) as e:
        opts = ", ".join(f"{k}={v}" for k, v in kw.items())
        raise _Skip(f"torch {torch.__version__} {cls}({opts}): "
                    f"{str(e).splitlines()[0][:120]}") from None
    return opt.step


def _optax_contender(cls, hp, params0, grads):
    try:
        import jax
        import optax
    except ImportError:
        raise _Skip("optax is not installed") from None
    if params0[0].dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        raise _Skip("jax runs float32 unless JAX_ENABLE_X64 is set")
    b = hp.get("betas", (0.9, 0.999))
    txs = {"Adam": lambda: optax.adam(hp["lr"], b1=b[0], b2=b[1], eps=hp.get("eps", 1e-8)),
           "AdamW": lambda: optax.adamw(hp["lr"], b1=b[0], b2=b[1], eps=hp.get("eps", 1e-8),
                                        weight_decay=hp.get("weight_decay", 1e-2)),
           "SGD": lambda: optax.sgd(hp["lr"], momentum=hp.get("momentum")),
           "RMSprop": lambda: optax.rmsprop(hp["lr"], decay=hp["alpha"], eps=hp["eps"],
                                            eps_in_sqrt=False),   # torch: sqrt(v) + eps
           "Adamax": lambda: optax.adamax(hp["lr"], b1=b[0], b2=b[1], eps=hp["eps"]),
           "Adagrad": lambda: optax.adagrad(
               hp["lr"], initial_accumulator_value=hp.get("initial_accumulator_value", 0.0),
               eps=hp["eps"]),
           "Adadelta": lambda: optax.adadelta(hp["lr"], rho=hp["rho"], eps=hp["eps"],
                                              weight_decay=hp.get("weight_decay", 0.0)),
           "Lion": lambda: optax.lion(hp["lr"], b1=b[0], b2=b[1],
                                      weight_decay=hp.get("weight_decay", 0.0)),
           "AdaBelief": lambda: optax.adabelief(hp["lr"], b1=b[0], b2=b[1], eps=hp["eps"],
                                                eps_root=hp["eps_root"]),
           "Yogi": lambda: optax.yogi(hp["lr"], b1=b[0], b2=b[1], eps=hp["eps"]),
           "ADOPT": lambda: optax.contrib.adopt(hp["lr"], b1=b[0], b2=b[1], eps=hp["eps"]),
           "Adan": lambda: optax.adan(hp["lr"], b1=b[0], b2=b[1], b3=b[2], eps=hp["eps"],
                                      eps_root=hp["eps_root"],
                                      weight_decay=hp.get("weight_decay", 0.0)),
           "Lamb": lambda: optax.lamb(hp["lr"], b1=b[0], b2=b[1], eps=hp["eps"],
                                      eps_root=hp.get("eps_root", 0.0),
                                      weight_decay=hp.get("weight_decay", 0.0)),
           "LARS": lambda: optax.lars(hp["lr"], weight_decay=hp.get("weight_decay", 0.0),
                                      trust_coefficient=hp["trust_coefficient"], eps=hp["eps"],
                                      momentum=hp["momentum"], nesterov=hp["nesterov"]),
           "NovoGrad": lambda: optax.novograd(hp["lr"], b1=b[0], b2=b[1], eps=hp["eps"],
                                              eps_root=hp.get("eps_root", 0.0),
                                              weight_decay=hp.get("weight_decay", 0.0))}
    if cls not in txs:
        raise _Skip(f"no optax equivalent of {cls} wired in")
    try:
        import jax.numpy as jnp
        tx = txs[cls]()
        params = [jnp.asarray(p) for p in params0]
        gs = [jnp.asarray(g) for g in grads]
        state = tx.init(params)

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def update(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        box = [params, state]

        def step():
            p, s = update(box[0], box[1], gs)
            jax.block_until_ready(p)
            box[0], box[1] = p, s
        step()
        step.params = lambda: [np.asarray(p) for p in box[0]]     # tests read them
    except Exception as e:  # noqa: BLE001 - any failure only skips this contender
        raise _Skip(f"optax failed: {type(e).__name__}: {str(e)[:120]}") from None
    return step


def _alternate(step, grads, grads_b):
    """``step(grads)`` and ``step(grads_b)`` in turn (see :func:`build_contenders`)."""
    box = [False]

    def fn():
        box[0] = not box[0]
        step(grads if box[0] else grads_b)
    return fn


def _reference_contender(cls, hp, params0, grads, grads_b):
    """The reference package's optimizer (torch, CPU) on copies of the params
    and grads (the schedule-free ones normalize ``p.grad`` in place, so they
    get grads of their own), stepping with ``grads`` and ``grads_b`` in turn:
    one ``p.grad =`` assignment per tensor per step (about 1 us each, measured),
    inside its time. Returns None when ``cls`` has no reference."""
    if cls not in LRFREE:
        return None
    lf = LRFREE[cls]
    try:
        import importlib
        import torch
        mod = importlib.import_module(lf.module)
    except ImportError:
        raise _Skip(f"{lf.package.split()[0]} (or torch) is not installed") from None
    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params0]
    ga = [torch.from_numpy(g.copy()) for g in grads]
    gb = [torch.from_numpy(g.copy()) for g in grads_b]

    def step(gs):
        for p, g in zip(ps, gs):
            p.grad = g
        opt.step()
    try:
        import inspect
        ref_cls = getattr(mod, lf.cls)
        takes = inspect.signature(ref_cls.__init__).parameters
        # lrfast-only keywords at their defaults (DAdaptAdam's per-group layer_scale)
        opt = ref_cls(ps, **{k: v for k, v in hp.items() if k in takes})
        if hasattr(opt, "train"):
            opt.train()                 # schedule-free: steps only in train mode
        fn = _alternate(step, ga, gb)
        fn()
    except (TypeError, RuntimeError, ValueError, AttributeError) as e:
        raise _Skip(f"{lf.package} {lf.cls}: {str(e).splitlines()[0][:120]}") from None
    fn.opt = opt
    return fn


# ---------------------------------------------------------------------------
# Contenders
# ---------------------------------------------------------------------------
class Contender:
    """One implementation at one thread count: ``fn()`` does one step."""

    def __init__(self, impl, threads, fn, set_threads=None):
        self.impl, self.threads, self.fn = impl, threads, fn
        self._set_threads = set_threads
        self.number = 1

    @property
    def key(self):
        return self.impl if self.threads is None else f"{self.impl}@{self.threads}"

    def prepare(self):
        if self._set_threads is not None:
            self._set_threads(self.threads)


def _lrfast_threads(n):
    import lrfast
    lrfast.set_num_threads(int(n))


_TORCH_THREADS0: List[int] = []      # torch's thread count before the runner first changed it


def _torch_threads(n):
    import torch
    cur = torch.get_num_threads()
    if not _TORCH_THREADS0:
        _TORCH_THREADS0.append(cur)
    if cur != n:
        torch.set_num_threads(int(n))


def _no_ceiling(cls):
    raise _Skip(f"no same-bytes ceiling for {cls} (not one elementwise pass)")


def _ceiling_step(params0, grads, n_states, bpe, sums=()):
    c = Ceiling(params0, grads, n_states, sums=sums)
    if c.bytes_per_element != bpe:            # the ceiling must move the optimizer's bytes
        raise AssertionError(f"ceiling moves {c.bytes_per_element} B/element, the "
                             f"optimizer {bpe}")
    return c.step


def build_contenders(cls, hp, params0, grads, threads, impls=IMPLS):
    """Build every contender of ``impls`` for one case. Returns (contenders,
    skipped: {impl: reason}, info: {bytes_per_element, n_states})."""
    import lrfast
    out, skipped = [], {}
    params = [p.copy() for p in params0]
    opt = getattr(lrfast, cls)(params, **hp)
    sums, update, ureads = passes_of(cls, opt)
    n_states = len(update)
    bpe = optimizer_bytes_per_element(n_states, params0[0].dtype.itemsize,
                                      len(sums) + len(ureads))
    if cls in LAYOUTS:        # not an elementwise pass over the table: no byte count
        bpe = None
    lr_step = functools.partial(opt.step, grads)
    grads_b = grads
    if cls in LRFREE:
        # a constant grad is a linear loss: DoG's and Prodigy's step sizes grow
        # with the distance travelled and the params overflow within thousands
        # of timed steps. Grads of alternating sign keep every contender's
        # values bounded (the same bytes and arithmetic per step).
        grads_b = [np.negative(g) for g in grads]
        lr_step = _alternate(opt.step, grads, grads_b)
        lr_step.opt = opt
    # the ceiling reads the update's read-only states in its read-only pass
    # (the same bytes, one Engine call fewer)
    csums = _ceiling_sums(tuple(sums) + tuple(ureads), update)
    builders = {
        "lrfast": lambda: lr_step,
        "ceiling": lambda: _ceiling_step(params0, grads, n_states, bpe, csums)
        if bpe is not None else _no_ceiling(cls),
        "numpy": lambda: _numpy_contender(cls, hp, params0, grads),
        "optax": lambda: _optax_contender(cls, hp, params0, grads),
        "reference": lambda: _reference_contender(cls, hp, params0, grads, grads_b),
    }
    for v in ("torch-forloop", "torch-foreach", "torch-fused"):
        builders[v] = functools.partial(_torch_contender, v, cls, hp, params0, grads)
    for impl in impls:
        if impl not in builders:
            raise ValueError(f"unknown contender {impl!r} (one of {', '.join(IMPLS)})")
        try:
            fn = builders[impl]()
        except _Skip as e:
            skipped[impl] = str(e)
            continue
        if fn is None:                  # does not apply (no reference package)
            continue
        if impl in ("lrfast", "ceiling"):
            out.extend(Contender(impl, t, fn, _lrfast_threads) for t in threads)
        elif impl.startswith("torch") or impl == "reference":
            out.extend(Contender(impl, t, fn, _torch_threads) for t in threads)
        else:
            out.append(Contender(impl, None, fn))
    return out, skipped, {"bytes_per_element": bpe, "n_states": n_states,
                          "passes": 2 if sums else 1, "sums_pass": list(sums),
                          "sums_reads": list(csums), "update_states": list(update),
                          "update_reads": list(ureads)}


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
def _block(fn, number, clock=time.perf_counter_ns):
    t0 = clock()
    for _ in range(number):
        fn()
    return clock() - t0


def _calibrate(c, block_ns, max_number=1 << 22):
    """Warm up ``c`` and choose its calls per block (about block_ns)."""
    c.prepare()
    c.fn()
    number = 1
    while True:
        t = _block(c.fn, number)
        if t >= block_ns / 4 or number >= max_number:
            break
        number *= 4 if t < block_ns / 40 else 2
    number = max(1, min(max_number, int(round(number * block_ns / max(t, 1)))))
    _block(c.fn, number)                          # one more warm block at size
    c.number = number
    return t / number if number else t


def _order(n, r):
    """Round r's order: rotated by r//2, reversed on odd rounds. Over 2n rounds
    every contender goes first twice and follows each of its two neighbours."""
    idx = list(range(n))
    k = (r // 2) % n if n else 0
    idx = idx[k:] + idx[:k]
    return idx[::-1] if r % 2 else idx


def _measure(contenders, rounds, block_ns, pause_s, spin_s=0.0, tick=None):
    """Interleaved rounds; returns {key: [ns per call, one per round]}."""
    times = {c.key: [] for c in contenders}
    gc_was = gc.isenabled()
    gc.disable()
    prev = None
    try:
        for c in contenders:
            if prev is not None and (prev.threads or 1) > 1 and spin_s > 0:
                time.sleep(spin_s)
            _calibrate(c, block_ns)
            prev = c
            if tick:
                tick(1)
        for r in range(rounds):
            for i in _order(len(contenders), r):
                c = contenders[i]
                c.prepare()
                wait = spin_s if prev is not None and (prev.threads or 1) > 1 else pause_s
                if wait > 0:
                    time.sleep(wait)
                    if c.number > 1:
                        c.fn()      # untimed: the first call after a sleep runs cold
                times[c.key].append(_block(c.fn, c.number) / c.number)
                prev = c
            if tick:
                tick(1)
    finally:
        if gc_was:
            gc.enable()
    return times


def _median_ratio(a, b):
    """Median over rounds of a[r]/b[r], with the quartiles."""
    rs = sorted(x / y for x, y in zip(a, b) if y > 0)
    if not rs:
        return None, None, None
    q = statistics.quantiles(rs, n=4, method="inclusive") if len(rs) > 1 else [rs[0]] * 3
    return statistics.median(rs), q[0], q[2]


def _analyse(case, times, contenders, threads, bpe):
    n = case["n_elements"]
    res = {}
    for c in contenders:
        ts = times[c.key]
        med = statistics.median(ts)
        res[c.key] = {"impl": c.impl, "threads": c.threads, "number": c.number,
                      "ns_per_step": med, "ns_per_element": med / n,
                      "GBps": None if bpe is None else bpe * n / med,
                      "min_ns_per_step": min(ts),
                      "times_ns": [round(x, 1) for x in ts]}
    ratios, pct, speedup = {}, {}, {}
    for t in threads:
        base = f"lrfast@{t}"
        if base not in times:
            continue
        rt = {}
        for c in contenders:
            if c.impl in ("lrfast", "ceiling") or (c.threads is not None and c.threads != t):
                continue
            m, lo, hi = _median_ratio(times[c.key], times[base])
            rt[c.impl] = {"ratio": m, "q1": lo, "q3": hi}
        ratios[str(t)] = rt
        if f"ceiling@{t}" in times:
            m, lo, hi = _median_ratio(times[f"ceiling@{t}"], times[base])
            pct[str(t)] = {"pct": 100 * m, "q1": 100 * lo, "q3": 100 * hi}
        sp = {}
        for impl in THREADED:
            one, k = f"{impl}@1", f"{impl}@{t}"
            if t != 1 and one in times and k in times:
                sp[impl] = _median_ratio(times[one], times[k])[0]
        if sp:
            speedup[str(t)] = sp
    return {"contenders": res, "ratio_to_lrfast": ratios, "pct_of_ceiling": pct,
            "thread_speedup": speedup}


# ---------------------------------------------------------------------------
# Machine record
# ---------------------------------------------------------------------------
def _cache_sizes():
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in sorted(os.listdir(base)):
            try:
                with open(f"{base}/{d}/level") as f:
                    lvl = f.read().strip()
                with open(f"{base}/{d}/type") as f:
                    typ = f.read().strip()
                with open(f"{base}/{d}/size") as f:
                    size = f.read().strip()
            except OSError:
                continue
            if typ != "Instruction":
                out[f"L{lvl}{'d' if typ == 'Data' else ''}"] = size
    except OSError:
        pass
    return out


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [x for x in ("sse2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                        "avx512vl") if x in have]
    except OSError:
        pass
    return []


def _versions():
    """Library versions, without importing what the run did not import."""
    from importlib import metadata
    v = {"python": sys.version.split()[0], "numpy": np.__version__}
    for mod in ("torch", "jax", "optax", "threadpoolctl"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            v[mod] = m.__version__
            continue
        try:
            v[mod] = metadata.version(mod)
        except metadata.PackageNotFoundError:
            pass
    return v


def machine_info(threads):
    """CPU model, cores, caches, ISA path, threads used, versions, date, load."""
    import lrfast
    cfg = lrfast.config()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):      # no load average on Windows
        load = None
    return {
        "cpu": cfg["cpu"], "cores": os.cpu_count(), "cores_usable": affinity,
        "cpu_flags": _cpu_flags(), "caches": _cache_sizes(),
        "threads_used": list(threads), "isa": cfg["isa"], "isa_build": cfg["isa_build"],
        "isa_available": cfg["isa_available"], "openmp": cfg["openmp"],
        "openmp_runtime": cfg["openmp_runtime"], "compiler": cfg["compiler"],
        "flags": cfg["flags"], "parallel_threshold": cfg["parallel_threshold"],
        "platform": platform.platform(), "lrfast": cfg["lrfast"],
        "versions": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": load,
    }


# ---------------------------------------------------------------------------
# Progress, table, JSON, plot
# ---------------------------------------------------------------------------
# A run (or a case) during which other processes used more than this share of the
# machine's CPU time is flagged as busy: in the table's first lines, on each such row
# and across the plot. Contended ratios (a "5329x") must never look like results.
BUSY_SHARE = 0.1


class _CpuMeter:
    """Share of the machine's CPU time used by OTHER processes between start()
    and stop(): /proc/stat's busy time minus this process's own (Linux only;
    None elsewhere). Published figures should come from runs where it is ~0."""

    def __init__(self):
        self._t0 = None

    @staticmethod
    def _busy_s():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal ...: busy = all but idle, iowait
        busy = sum(v) - v[3] - (v[4] if len(v) > 4 else 0)
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _self_s():
        import resource
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def start(self):
        b = self._busy_s()
        self._t0 = None if b is None else (b, self._self_s(), time.perf_counter())
        return self

    def stop(self):
        if self._t0 is None:
            return None
        b = self._busy_s()
        if b is None:
            return None
        b0, s0, w0 = self._t0
        wall = time.perf_counter() - w0
        ncpu = os.cpu_count() or 1
        if wall <= 0:
            return None
        other = (b - b0) - (self._self_s() - s0)
        return round(max(0.0, min(1.0, other / (wall * ncpu))), 3)


class _Progress:
    def __init__(self, total, enabled):
        self.total, self.done, self.enabled, self.bar = total, 0, enabled, None
        self.desc, self._last = "", 0.0
        if not enabled:
            return
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, file=sys.stderr, unit="round", leave=False,
                            dynamic_ncols=True)
        except ImportError:
            self.bar = None

    def set(self, desc):
        self.desc = desc
        if self.bar is not None:
            self.bar.set_description(desc)
        elif self.enabled:
            self._line(force=True)

    def tick(self, k):
        self.done += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.enabled:
            self._line()

    def _line(self, force=False):
        now = time.monotonic()
        if not force and now - self._last < 1.0:
            return
        self._last = now
        end = "\r" if sys.stderr.isatty() else "\n"
        print(f"[lrfast bench] {self.done}/{self.total} rounds  {self.desc}", end=end,
              file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and sys.stderr.isatty():
            print(file=sys.stderr)


def _f(x, w, fmt):
    return f"{'-':>{w}}" if x is None else f"{x:>{w}{fmt}}"


def format_table(result):
    """The text tables of one run (what ``main`` prints)."""
    lines = []
    m = result["machine"]
    if result.get("busy"):
        lines.append(f"!!! BUSY MACHINE: {result['busy']}. These figures are NOT results: "
                     "rerun on an idle machine. Rows marked ! were contended. !!!")
    lines.append(f"lrfast {m['lrfast']} bench, {m['date']}: {m['cpu']}, {m['cores']} cores, "
                 f"isa {m['isa']} ({m['isa_build']}), numpy {m['versions'].get('numpy')}"
                 + (f", torch {m['versions']['torch']}" if "torch" in m["versions"] else ""))
    by_opt = {}
    for r in result["results"]:
        by_opt.setdefault((r["optimizer"], r["dtype"]), []).append(r)
    for (opt, dtype), rows in by_opt.items():
        for t in result["settings"]["threads"]:
            impls = [i for i in IMPLS if any(
                (f"{i}@{t}" in r["contenders"] or i in r["contenders"]) for r in rows)]
            peers = [i for i in impls if i not in ("lrfast", "ceiling")]
            bpe = rows[0]["bytes_per_element"]
            npass = rows[0].get("passes", 1)
            passes = f" in {npass} passes" if npass > 1 else ""
            lines.append("")
            moved = (f"{bpe} B/element moved{passes}" if bpe is not None else
                     f"{LAYOUTS.get(opt)} layout" + (f", {SPARSE_FRAC:.0%} of rows touched"
                                                      if LAYOUTS.get(opt) == "rows" else ""))
            lines.append(f"{opt} {dtype}, {t} thread{'s' if t > 1 else ''} ({moved}). "
                         f"ns/element: median over rounds; peer/lrfast: median of "
                         f"per-round ratios (>1: lrfast faster); others: CPU share other "
                         f"processes used meanwhile (~0% for figures to publish)")
            head = f"{'case':<22}{'elements':>10} |"
            head += "".join(f"{_SHORT[i]:>10}" for i in impls) + " |"
            head += "".join(f"{_SHORT[i]:>10}" for i in peers) + (" |" if peers else "")
            head += f"{'% ceil':>8}"
            head += f"{'others':>8}"
            lines.append(head)
            lines.append("-" * len(head))
            for r in rows:
                cs = r["contenders"]
                s = f"{r['label']:<22}{r['n_elements']:>10} |"
                for i in impls:
                    c = cs.get(f"{i}@{t}") or cs.get(i)
                    s += _f(c and c["ns_per_element"], 10, ".3f")
                s += " |"
                rt = r["ratio_to_lrfast"].get(str(t), {})
                for i in peers:
                    x = rt.get(i, {}).get("ratio")
                    s += f"{'-':>10}" if x is None else f"{x:>9.2f}x"
                pc = r["pct_of_ceiling"].get(str(t), {}).get("pct")
                s += (" |" if peers else "") + ("       -" if pc is None else f"{pc:>7.0f}%")
                oc = r.get("others_cpu")
                s += "       -" if oc is None else f"{100 * oc:>7.0f}%"
                if oc is not None and oc > BUSY_SHARE:
                    s += " !"
                lines.append(s)
        ts = [t for t in result["settings"]["threads"] if t != 1]
        if ts and 1 in result["settings"]["threads"]:
            lines.append("")
            lines.append(f"{opt} {dtype} thread scaling (time@1 / time@t, median of "
                         "per-round ratios)")
            for r in rows:
                parts = []
                for t in ts:
                    sp = r["thread_speedup"].get(str(t), {})
                    parts.append(f"{t} threads: " + ", ".join(
                        f"{_SHORT[i]} {v:.2f}x" for i, v in sp.items() if v is not None))
                lines.append(f"  {r['label']:<22} " + "; ".join(parts))
    if result["skipped"]:
        lines.append("")
        for impl, why in sorted(result["skipped"].items()):
            lines.append(f"skipped {impl}: {why}")
    for w in result.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def _plot_contender(ax, impl, t, sized, others, color):
    """One contender's line over the single-tensor cases of a panel, plus a star
    per multi-tensor case."""
    pts = []
    for r in sized:
        c = r["contenders"].get(f"{impl}@{t}") or r["contenders"].get(impl)
        if c:
            pts.append((r["n_elements"], c["ns_per_element"]))
    if not pts:
        return
    style = "--" if impl == "ceiling" else "-"
    ax.plot(*zip(*pts), style, marker="o", ms=3, color=color,
            label={"numpy": "numpy (1 thread)",
                   "ceiling": "ceiling (same bytes)"}.get(impl, impl))
    for r in others:
        c = r["contenders"].get(f"{impl}@{t}") or r["contenders"].get(impl)
        if c:
            ax.plot([r["n_elements"]], [c["ns_per_element"]], marker="*", ms=9,
                    color=color, linestyle="none")


def _plot_panel(ax, opt, dtype, t, sized, others, colors):
    """The panel of one (optimizer, dtype) at ``t`` threads."""
    for impl in IMPLS:
        _plot_contender(ax, impl, t, sized, others, colors[impl])
    for r in others:
        c = r["contenders"].get(f"lrfast@{t}")
        if c:
            ax.annotate(r["case"], (r["n_elements"], c["ns_per_element"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("elements per step")
    ax.set_ylabel("ns / element")
    ax.set_title(f"{opt} {dtype}, {t} thread{'s' if t > 1 else ''}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _plot_busy(fig, busy):
    """Stamp a figure from a busy machine so it cannot pass for results."""
    fig.text(0.5, 1 - 0.42 / fig.get_figheight(),
             f"BUSY MACHINE ({busy}): not results, rerun on an idle machine",
             ha="center", va="top", fontsize=10, color="red", weight="bold")
    for ax in fig.axes:
        if ax.get_visible():
            ax.text(0.5, 0.5, "BUSY", transform=ax.transAxes, ha="center", va="center",
                    fontsize=40, color="red", alpha=0.25, rotation=30, weight="bold")


def plot(result, path):
    """ns/element vs elements, log-log, one line per contender; one panel per
    (optimizer, threads). Returns the path, or None (with a warning) without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("lrfast bench: matplotlib is not installed; no PNG written "
                      "(pip install matplotlib)", RuntimeWarning, stacklevel=2)
        return None
    threads = result["settings"]["threads"]
    keys = []
    for r in result["results"]:
        k = (r["optimizer"], r["dtype"])
        if k not in keys:
            keys.append(k)
    panels = [(k, t) for k in keys for t in threads]
    ncols = len(threads) if len(threads) > 1 else min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(5.2 * ncols, 4.2 * nrows + 0.4))
    for j in range(len(panels), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    colors = dict(zip(IMPLS, ["C0", "k", "C1", "C2", "C3", "C4", "C5", "C6"]))
    for opt, dtype in keys:
        rows = [r for r in result["results"] if (r["optimizer"], r["dtype"]) == (opt, dtype)]
        sized = sorted((r for r in rows if r["kind"] == "size"), key=lambda r: r["n_elements"])
        others = [r for r in rows if r["kind"] != "size"]
        for t in threads:
            j = panels.index(((opt, dtype), t))
            _plot_panel(axes[j // ncols][j % ncols], opt, dtype, t, sized, others, colors)
    m = result["machine"]
    fig.suptitle(f"lrfast {m['lrfast']} ({m['isa']}) on {m['cpu']}, {m['cores']} cores, "
                 f"{m['date'][:10]}  (*: multi-tensor cases)", fontsize=9)
    top = 0.35
    if result.get("busy"):
        top = 0.65
        _plot_busy(fig, result["busy"])
    fig.tight_layout(rect=(0, 0, 1, 1 - top / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# run / main
# ---------------------------------------------------------------------------
def _parse_list(s, conv):
    return [conv(x) for x in str(s).replace(" ", "").split(",") if x]


def _size(x):
    v = float(x)
    if not math.isfinite(v) or v < 1 or v != int(v):
        raise ValueError(f"bad size {x!r}")
    return int(v)


def _settings(optimizer, dtype, sizes, threads, rounds, quick, block_s, pause_s, spin_s,
              contenders):
    """Validate run()'s measurement arguments and fill in the defaults; returns
    (opts, dt, sizes, threads, rounds, block_ns, pause_s, spin_s, impls)."""
    import lrfast
    opts = [optimizer] if isinstance(optimizer, str) else list(optimizer)
    for o in opts:
        if o.lower() not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {o!r} (one of {', '.join(OPTIMIZERS)})")
    opts = [o.lower() for o in opts]
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    sizes = list(QUICK_SIZES if quick else DEFAULT_SIZES) if sizes is None else \
        [_size(s) for s in sizes]
    if threads is None:
        threads = sorted({1, max(1, lrfast.get_num_threads())})
    threads = sorted({int(t) for t in threads})
    if not threads or threads[0] < 1:
        raise ValueError("threads must be >= 1")
    rounds = (3 if quick else 15) if rounds is None else int(rounds)
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    block_ns = 1e9 * ((0.001 if quick else 0.01) if block_s is None else float(block_s))
    pause_s = 0.001 if pause_s is None else float(pause_s)
    spin_s = 0.012 if spin_s is None else float(spin_s)
    impls = list(IMPLS) if contenders is None else list(contenders)
    if "lrfast" not in impls:
        impls.insert(0, "lrfast")
    return opts, dt, sizes, threads, rounds, block_ns, pause_s, spin_s, impls


def _cases(sizes, quick, many_small, model):
    """The single-tensor cases, then the optional multi-tensor ones."""
    cases = [make_case("size", n) for n in sizes]
    if many_small:
        cases.append(make_case("many-small", quick=quick))
    if model:
        cases.append(make_case("model", quick=quick))
    return cases


def _merge_skipped(into, skipped):
    """Record why contenders were skipped, each distinct reason once per key."""
    for k, why in skipped.items():
        have = into.get(k)
        if have is None:
            into[k] = why
        elif why not in have.split("; "):
            into[k] = f"{have}; {why}"


def _bench_case(cls, hp, case, *, dt, seed, threads, impls, rounds, block_ns, pause_s, spin_s,
                prog, n_contenders, all_skipped):
    """Build the contenders of one (optimizer, case), time them, and return the
    result row; reasons for skipped contenders are merged into ``all_skipped``."""
    shapes = layout_shapes(cls, case["shapes"])
    params0, grads = make_inputs(shapes, dt, seed)
    if LAYOUTS.get(cls) == "rows":
        grads = sparse_grads(shapes, dt, seed)
    cs, skipped, info = build_contenders(cls, hp, params0, grads, threads, impls)
    _merge_skipped(all_skipped, skipped)
    meter = _CpuMeter().start()
    times = _measure(cs, rounds, block_ns, pause_s, spin_s, prog.tick)
    others = meter.stop()
    prog.tick(max(0, n_contenders - len(cs)))
    row = {"optimizer": cls, "dtype": dt.name, "case": case["name"],
           "label": case["label"], "kind": case["kind"],
           "n_elements": case["n_elements"], "n_tensors": case["n_tensors"],
           "bytes_per_element": info["bytes_per_element"],
           "n_states": info["n_states"], "passes": info["passes"],
           "sums_pass": info["sums_pass"], "sums_reads": info["sums_reads"],
           "update_states": info["update_states"],
           "skipped": skipped,
           "others_cpu": others}
    row.update(_analyse(case, times, cs, threads, info["bytes_per_element"]))
    return row


def _busy_verdict(result, run_meter):
    """Record the end load and the CPU share other processes took, and flag the
    result (``busy`` and a warning) when the machine was not idle."""
    try:
        result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):      # no load average on Windows
        result["machine"]["loadavg_end"] = None
    others = run_meter.stop()
    result["machine"]["others_cpu"] = others
    load = max((result["machine"].get(k) or [0])[0] for k in ("loadavg_start", "loadavg_end"))
    cores = result["machine"]["cores_usable"] or 1
    busy_rows = [r for r in result["results"] if (r.get("others_cpu") or 0) > BUSY_SHARE]
    result["busy"] = None
    if (others is not None and others > BUSY_SHARE) or busy_rows or \
            (others is None and load > 0.5 * cores):
        busy = (f"other processes used {100 * (others or 0):.0f}% of the CPU time"
                if others is not None else f"load average {load:.1f} on {cores} cores")
        if busy_rows:
            busy += f", over {100 * BUSY_SHARE:.0f}% in {len(busy_rows)} of " \
                    f"{len(result['results'])} cases"
        result["busy"] = busy
        result["warnings"].append(
            f"the machine was busy ({busy}): multi-threaded figures in particular are "
            "unreliable; rerun on an idle machine for figures to publish (per case: "
            "'others_cpu' in the JSON)")


def _write_out(result, out):
    """Write ``out/bench.png`` (its warnings go into the result) and
    ``out/bench.json``."""
    import json
    os.makedirs(out, exist_ok=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        png = plot(result, os.path.join(out, "bench.png"))
    for x in w:
        result["warnings"].append(str(x.message))
    result["files"] = {"json": os.path.join(out, "bench.json"), "png": png}
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(result, f, indent=1, default=_json_default)


def run(optimizer="adam", dtype="float32", sizes=None, threads=None, rounds=None,
        quick=False, many_small=False, model=False, contenders=None, out=None,
        block_s=None, pause_s=None, spin_s=None, seed=0, progress=None, verbose=False):
    """Run the comparison and return the result dict (also written to
    ``out/bench.json`` with ``out/bench.png`` when ``out`` is given).

    optimizer: a name of OPTIMIZERS or a list of them; dtype: 'float32' or
    'float64'; sizes: element counts of the single-tensor cases; threads:
    thread counts for the threaded contenders (default: 1 and lrfast's
    default); rounds: interleaved rounds per case; quick: tiny sizes, few
    rounds, short blocks (CI); many_small / model: add the 200-small-tensors /
    ~10M-param model case; contenders: subset of IMPLS (default: all);
    block_s: target seconds per timed block; pause_s: sleep before each block;
    spin_s: sleep after a multi-threaded block (OpenMP spin-wait window).
    """
    from .._dispatch import kernels as K
    opts, dt, sizes, threads, rounds, block_ns, pause_s, spin_s, impls = _settings(
        optimizer, dtype, sizes, threads, rounds, quick, block_s, pause_s, spin_s, contenders)
    if progress is None:
        progress = not quick
    cases = _cases(sizes, quick, many_small, model)

    prev_lr = K._user_num_threads()
    result = {"schema": SCHEMA, "machine": machine_info(threads),
              "settings": {"optimizers": opts, "dtype": dt.name, "sizes": sizes,
                           "threads": threads, "rounds": rounds, "quick": bool(quick),
                           "block_s": block_ns / 1e9, "pause_s": pause_s, "spin_s": spin_s,
                           "seed": seed,
                           "contenders": impls, "many_small": bool(many_small),
                           "model": bool(model),
                           "method": "one process; calibrated blocks; interleaved rounds "
                                     "(rotating, alternately reversed order); medians of "
                                     "per-round ratios"},
              "results": [], "skipped": {}, "warnings": []}
    n_contenders = len(impls) * len(threads)
    prog = _Progress(len(opts) * len(cases) * (rounds + n_contenders), progress)
    t_start = time.perf_counter()
    run_meter = _CpuMeter().start()
    try:
        for o in opts:
            cls, hp = OPTIMIZERS[o]
            for case in cases:
                prog.set(f"{cls} {dt.name} {case['label']}")
                row = _bench_case(cls, hp, case, dt=dt, seed=seed, threads=threads, impls=impls,
                                  rounds=rounds, block_ns=block_ns, pause_s=pause_s,
                                  spin_s=spin_s, prog=prog, n_contenders=n_contenders,
                                  all_skipped=result["skipped"])
                result["results"].append(row)
                gc.collect()
    finally:
        prog.close()
        K.set_num_threads(prev_lr)
        if _TORCH_THREADS0:
            sys.modules["torch"].set_num_threads(_TORCH_THREADS0.pop())
    _busy_verdict(result, run_meter)
    result["elapsed_s"] = round(time.perf_counter() - t_start, 2)
    if out is not None:
        _write_out(result, out)
    if verbose:
        print(format_table(result))
    return result


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o).__name__)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m lrfast bench",
        description="Time lrfast against in-place numpy, torch.optim (for-loop, foreach, "
                    "fused), optax and a bandwidth ceiling that moves the same bytes, in one "
                    "process with interleaved rounds; report medians of per-round ratios.")
    p.add_argument("--optimizer", default="adam",
                   help=f"one or a comma list of: {', '.join(OPTIMIZERS)}, or 'all' "
                        "(default adam)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--sizes", default=None,
                   help="comma list of element counts, e.g. 1e3,1e4,1e5,1e6,1e7 (default; "
                        "--quick: 1e3,1e4)")
    p.add_argument("--threads", default=None,
                   help="comma list of thread counts (default: 1 and lrfast's default)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 15, "
                                                            "--quick 3)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 3 rounds, 1 ms blocks")
    p.add_argument("--many-small", action="store_true",
                   help="add the 200-tensors case (sizes 100..1e4, log-uniform)")
    p.add_argument("--model", action="store_true",
                   help="add a ~10.6M-param model case (embeddings + a d=768 block, 16 "
                        "tensors)")
    p.add_argument("--contenders", default=None,
                   help=f"comma list of: {', '.join(IMPLS)} (default: all available)")
    p.add_argument("--block-ms", type=float, default=None,
                   help="target milliseconds per timed block (default 10, --quick 1)")
    p.add_argument("--pause-ms", type=float, default=None,
                   help="sleep before each block (default 1)")
    p.add_argument("--spin-ms", type=float, default=None,
                   help="sleep after a multi-threaded block so its OpenMP pool stops "
                        "spinning before the next contender runs (default 12; libgomp "
                        "spins ~8 ms)")
    p.add_argument("--lrfree", action="store_true",
                   help="the learning-rate-free optimizers (" + ", ".join(LRFREE) + ") "
                        "against their reference packages and the same-bytes ceiling "
                        "(default contenders: " + ",".join(LRFREE_CONTENDERS) + ")")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for bench.json and bench.png")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    opts = list(OPTIMIZERS) if a.optimizer.strip().lower() == "all" else \
        _parse_list(a.optimizer, str.lower)
    if a.lrfree:
        if a.optimizer == p.get_default("optimizer"):
            opts = [n.lower() for n in LRFREE if n.lower() in OPTIMIZERS]
        if a.contenders is None:
            a.contenders = ",".join(LRFREE_CONTENDERS)
    try:
        result = run(
            optimizer=opts, dtype=a.dtype,
            sizes=_parse_list(a.sizes, _size) if a.sizes else None,
            threads=_parse_list(a.threads, int) if a.threads else None,
            rounds=a.rounds, quick=a.quick, many_small=a.many_small, model=a.model,
            contenders=_parse_list(a.contenders, str.lower) if a.contenders else None,
            out=a.out, block_s=None if a.block_ms is None else a.block_ms / 1e3,
            pause_s=None if a.pause_ms is None else a.pause_ms / 1e3,
            spin_s=None if a.spin_ms is None else a.spin_ms / 1e3, seed=a.seed,
            progress=not a.no_progress)
    except ValueError as e:
        p.error(str(e))
    print(format_table(result))
    if a.out:
        print(f"\nwrote {result['files']['json']}"
              + (f" and {result['files']['png']}" if result['files']['png'] else
                 " (no PNG: matplotlib missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
