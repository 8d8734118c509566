"""Does low precision cost quality? Adam with float32 state, 8-bit blockwise
state, and bfloat16 params and grads with 8-bit state, on two problems:

1. the demo's MLP (``python -m lrfast demo``'s data, model, schedule and
   batches): final test accuracy;
2. a 1e6-parameter least-squares problem with noisy gradients: final loss
   after 2000 steps.

    python examples/lowp_quality.py            # both, full size (~1 min)
    python examples/lowp_quality.py --quick    # smaller, for the tests
    python examples/lowp_quality.py --seeds 0,1,2,3,4   # the MLP on five seeds

Needs ml_dtypes (pip install 'lrfast[lowp]').
"""
import argparse
import json
import sys

import numpy as np

import lrfast
from lrfast.cli import demo
from lrfast.optim._lowp import bfloat16

try:
    import ml_dtypes  # noqa: F401
except ImportError:
    print("ml_dtypes is not installed (pip install 'lrfast[lowp]'): nothing to compare")
    sys.exit(0)

CONFIGS = {  # name: (param dtype, state_dtype, master weights, or "sr": stochastic rounding)
    "fp32 Adam": ("float32", "float32", False),
    "int8 state": ("float32", "int8", False),
    "bf16 params+grads, int8 state": ("bfloat16", "int8", False),
    "bf16 params+grads (stochastic rounding), int8 state": ("bfloat16", "int8", "sr"),
    "bf16 params+grads, fp32 master, int8": ("bfloat16", "int8", True),
}


def mlp(steps, seed=0):
    """Test accuracy of the demo's MLP after ``steps`` Adam steps, per config."""
    data = demo.load_data(seed)
    Xtr, ytr, Xte, yte = data
    model0 = demo.MLP((Xtr.shape[1], 256, 128, 10), seed=seed)
    batches = demo._batches(len(Xtr), steps, demo.BATCH, seed)
    bf16 = bfloat16()
    out = {}
    for name, (pdt, sd, master) in CONFIGS.items():
        _, options, schedule, _, _ = demo.RUNS["adam"](steps)
        work = model0.copy()                    # float32 copy the forward pass uses
        if pdt == "bfloat16":
            params = [p.astype(bf16) for p in work.params]
        else:
            params = work.params
        opt = lrfast.Adam(params, lr=schedule, state_dtype=sd, master_weights=master is True,
                          stochastic_rounding=master == "sr", **options)
        for k in range(steps):
            if pdt == "bfloat16":
                for w, p in zip(work.params, params):
                    w[...] = p                  # widen the bfloat16 weights
            _, grads = work.loss_and_grads(Xtr[batches[k]], ytr[batches[k]])
            if pdt == "bfloat16":
                grads = [g.astype(bf16) for g in grads]
            opt.step(grads)
        if pdt == "bfloat16":
            for w, p in zip(work.params, params):
                w[...] = p
        out[name] = work.accuracy(Xte, yte)
    return out


def least_squares(n, steps, seed=0):
    """Final loss of 0.5*sum(h*(x - t)**2) / n after ``steps`` Adam steps on
    noisy gradients h*(x - t) + 0.01*noise (h log-uniform in [0.01, 1])."""
    rng = np.random.default_rng(seed)
    h = np.exp(rng.uniform(np.log(0.01), 0.0, n)).astype(np.float32)
    t = rng.standard_normal(n).astype(np.float32)
    x0 = np.zeros(n, np.float32)
    noise = [(0.01 * rng.standard_normal(n)).astype(np.float32) for _ in range(16)]
    bf16 = bfloat16()
    out = {}
    for name, (pdt, sd, master) in CONFIGS.items():
        x = x0.astype(bf16) if pdt == "bfloat16" else x0.copy()
        sched = lrfast.schedules.CosineDecay(0.05, decay_steps=steps, alpha=0.01)
        opt = lrfast.Adam([x], lr=sched, state_dtype=sd, master_weights=master is True,
                          stochastic_rounding=master == "sr")
        for k in range(steps):
            xf = x.astype(np.float32)
            g = h * (xf - t) + noise[k % 16]
            opt.step([g.astype(x.dtype)])
        xf = x.astype(np.float64)
        out[name] = float(0.5 * np.sum(h * (xf - t) ** 2) / n)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--seeds", default="0",
                   help="comma list of MLP seeds (data split, init, batches); the table "
                        "shows the first, and the worst difference over all of them")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    steps, n, ls_steps = (300, 100_000, 400) if a.quick else (demo.DEFAULT_STEPS, 1_000_000, 2000)
    by_seed = {s: mlp(steps, seed=s) for s in seeds}
    res = {"mlp_test_accuracy": by_seed[seeds[0]], "least_squares_final_loss":
           least_squares(n, ls_steps), "mlp_steps": steps, "ls_params": n, "ls_steps": ls_steps,
           "mlp_test_accuracy_by_seed": {str(s): r for s, r in by_seed.items()}}
    base = res["mlp_test_accuracy"]["fp32 Adam"]
    lbase = res["least_squares_final_loss"]["fp32 Adam"]
    print(f"MLP ({steps} steps), test accuracy; least squares ({n:.0e} params, {ls_steps} "
          "steps), final loss")
    for name in CONFIGS:
        acc = res["mlp_test_accuracy"][name]
        loss = res["least_squares_final_loss"][name]
        worst = min(r[name] - r["fp32 Adam"] for r in by_seed.values())
        print(f"  {name:<52} {100 * acc:6.2f}% ({100 * (acc - base):+.2f} points; worst of "
              f"{len(seeds)} seed(s) {100 * worst:+.2f})   "
              f"{loss:.6g} ({100 * (loss / lbase - 1):+.2f}%)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
