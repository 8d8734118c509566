"""Where the fixed cost of ``opt.step`` goes at small sizes.

    python bench/fixed_cost.py [--optimizer adam] [--n 1000] [--dtype float32]
                               [--rounds 21] [--tensors 200]

Times, in ONE process with interleaved rounds (lrfast.cli.bench's machinery,
short blocks, medians and minima), on one thread, all on one optimizer
instance (two instances' timings differ with their arrays' placement):

* ``opt.step(grads)``: the public API, validation included;
* ``Engine.step`` with prebuilt rows: the one C call (grad validation, row
  copy, kernel), and the same at n=1 (its fixed cost without element work);
* ``opt._rows``: the Python scalar rows (hyperparameters -> doubles);
* ``with lock``: the optimizer's threading.Lock;
* the same split for ``--tensors`` tensors of n/tensors elements (per-tensor
  validation cost);
* torch's fused Adam at the same size, if torch is installed (reference).

The remainder (opt.step - Engine.step - _rows - lock) is the rest of the
Python in ``Optimizer.step`` (call, attribute reads/writes, key bookkeeping).
"""
import argparse
import functools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lrfast  # noqa: E402
from lrfast.cli import bench as B  # noqa: E402


def components(cls, hp, shapes, dtype, tag):
    """Contender functions, all on ONE optimizer instance (the same arrays:
    timings of different instances differ by their memory layout)."""
    params, grads = B.make_inputs(shapes, np.dtype(dtype))
    opt = getattr(lrfast, cls)([p.copy() for p in params], **hp)
    opt.step(grads)
    one = [(1,) for _ in shapes]
    p1, g1 = B.make_inputs(one, np.dtype(dtype))
    opt1 = getattr(lrfast, cls)(p1, **hp)
    opt1.step(g1)
    rows, index, _ = opt._rows(opt._step_count)
    rows1, index1, _ = opt1._rows(opt1._step_count)

    def with_lock(lock=opt._lock):
        with lock:
            pass
    fns = {
        f"{tag} opt.step": functools.partial(opt.step, grads),
        f"{tag} Engine.step": functools.partial(opt._engine.step, grads, rows, index, 0.0,
                                                False),
        f"{tag} Engine.step (n=1 per tensor)": functools.partial(
            opt1._engine.step, g1, rows1, index1, 0.0, False),
        f"{tag} opt._rows": functools.partial(opt._rows, 0),
        f"{tag} with opt._lock": with_lock,
    }
    return fns, params, grads


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizer", default="adam", choices=sorted(B.OPTIMIZERS))
    ap.add_argument("--n", type=float, default=1000)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=201)
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--block-ms", type=float, default=0.2,
                    help="short blocks: on a busy machine fewer of them are preempted")
    a = ap.parse_args(argv)
    n = int(a.n)
    cls, hp = B.OPTIMIZERS[a.optimizer]
    fns, params, grads = components(cls, hp, [(n,)], a.dtype, "1 tensor:")
    k = max(1, a.tensors)
    fk, _, _ = components(cls, hp, [(max(1, n // k),)] * k, a.dtype, f"{k} tensors:")
    fns.update(fk)
    try:
        fns["torch fused opt.step (reference)"] = B._torch_contender(
            "torch-fused", cls, hp, params, grads)
        import torch
        torch.set_num_threads(1)
    except B._Skip as e:
        print(f"(torch reference skipped: {e})")
    cs = [B.Contender(name, None, fn) for name, fn in fns.items()]
    meter = B._CpuMeter().start()
    with lrfast.threads(1):
        times = B._measure(cs, a.rounds, a.block_ms * 1e6, 0.0002)
    others = meter.stop()
    m = B.machine_info([1])
    print(f"{cls} {a.dtype}, n={n} elements, 1 thread, {a.rounds} interleaved rounds; "
          f"{m['cpu']}, isa {m['isa']}, python {m['versions']['python']}, "
          f"load {m['loadavg_start']}, others " + ("-" if others is None else
                                                   f"{100 * others:.0f}%"))
    med = {c.key: float(np.median(times[c.key])) for c in cs}
    low = {c.key: float(np.min(times[c.key])) for c in cs}
    print(f"  {'':<46} {'median':>9} {'min':>9}")
    for c in cs:
        print(f"  {c.key:<46} {med[c.key] / 1e3:7.3f}us {low[c.key] / 1e3:7.3f}us")
    for tag in ("1 tensor:", f"{k} tensors:"):
        for name, d in (("median", med), ("min", low)):
            tot, eng = d[f"{tag} opt.step"], d[f"{tag} Engine.step"]
            eng1 = d[f"{tag} Engine.step (n=1 per tensor)"]
            rows, lk = d[f"{tag} opt._rows"], d[f"{tag} with opt._lock"]
            rest = tot - eng - rows - lk
            print(f"{tag} ({name}s) opt.step {tot / 1e3:.3f} us = Engine.step {eng / 1e3:.3f} "
                  f"(fixed {eng1 / 1e3:.3f} + elements {(eng - eng1) / 1e3:.3f}) + _rows "
                  f"{rows / 1e3:.3f} + lock {lk / 1e3:.3f} + rest {rest / 1e3:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
