"""Train a numpy MLP with an lrfast optimizer: the whole training loop in one page.

The model is plain numpy (float32, forward and backward by hand); lrfast updates
its weight arrays IN PLACE, one fused call per step for all of them. The
learning rate follows a warmup + cosine schedule, and the run ends with a
checkpoint that resumes exactly.

Data: scikit-learn's digits when scikit-learn is installed, otherwise a
synthetic 10-class problem of the same shape.

    python examples/mlp_numpy.py            # 1500 steps
    python examples/mlp_numpy.py --quick    # 200 steps (CI)
"""
import argparse
import os
import tempfile
import time

import numpy as np

import lrfast
from lrfast.schedules import CosineDecay


def load(seed):
    try:
        from sklearn.datasets import load_digits
        d = load_digits()
        X, y, name = d.data / 16.0, d.target, "digits"
    except ImportError:  # synthetic: 10 Gaussian blobs in 64 dimensions
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((10, 64))
        y = rng.integers(0, 10, 1800)
        X, name = centers[y] + 0.8 * rng.standard_normal((1800, 64)), "synthetic blobs"
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    X, y = X[idx].astype(np.float32), y[idx]
    cut = int(0.8 * len(y))
    return X[:cut], y[:cut], X[cut:], y[cut:], name


def init(sizes, rng):
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params.append((rng.standard_normal((fan_in, fan_out)) * np.sqrt(2 / fan_in))
                      .astype(np.float32))
        params.append(np.zeros(fan_out, np.float32))
    return params


def forward_backward(params, X, y):
    """Softmax cross-entropy of a ReLU MLP and the gradient of every param."""
    W1, b1, W2, b2 = params
    h = np.maximum(X @ W1 + b1, 0)
    z = h @ W2 + b2
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y] + 1e-12).mean()
    dz = p
    dz[np.arange(n), y] -= 1
    dz /= n
    dh = (dz @ W2.T) * (h > 0)
    grads = [X.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]
    return float(loss), grads


def accuracy(params, X, y):
    W1, b1, W2, b2 = params
    return float(((np.maximum(X @ W1 + b1, 0) @ W2 + b2).argmax(1) == y).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="200 steps")
    args = ap.parse_args(argv)
    steps = 200 if args.quick else args.steps

    Xtr, ytr, Xte, yte, name = load(args.seed)
    rng = np.random.default_rng(args.seed)
    params = init((Xtr.shape[1], 128, 10), rng)

    # warmup from 0 to 3e-3 over 10% of the run, then cosine down to 1% of the peak
    warmup = steps // 10
    lr = CosineDecay(0.0, decay_steps=steps - warmup, alpha=0.01, warmup_target=3e-3,
                     warmup_steps=warmup)
    opt = lrfast.AdamW(params, lr=lr, weight_decay=1e-4)

    print(f"{name}: {len(ytr)} train / {len(yte)} test; {steps} steps of AdamW + warmup-cosine")
    step_time, t0 = 0.0, time.perf_counter()
    for k in range(steps):
        batch = rng.integers(0, len(ytr), args.batch_size)
        loss, grads = forward_backward(params, Xtr[batch], ytr[batch])
        ts = time.perf_counter()
        opt.step(grads)                      # updates W1, b1, W2, b2 in place
        step_time += time.perf_counter() - ts
        if k % max(1, steps // 5) == 0 or k == steps - 1:
            print(f"step {k:5d}  lr {lr(k):.2e}  loss {loss:.4f}  "
                  f"test acc {accuracy(params, Xte, yte):.3f}")
    total = time.perf_counter() - t0
    print(f"final test accuracy {accuracy(params, Xte, yte):.3f}; {total:.2f} s in total, "
          f"{step_time:.3f} s in opt.step ({100 * step_time / total:.1f}%)")

    # Checkpoint: .npz + JSON, written atomically; resuming continues the same curve.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "opt.npz")
        lrfast.save(opt, path)
        opt2 = lrfast.AdamW([p.copy() for p in params], lr=lr, weight_decay=1e-4)
        lrfast.load(opt2, path)
        print(f"checkpoint reloaded: step_count {opt2.step_count}, next lr {opt2.lr:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
