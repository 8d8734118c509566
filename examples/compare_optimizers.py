"""Compare every lrfast optimizer on one problem and print a table.

The problem is the seed's picture of adaptive rates: an ill-conditioned
quadratic ``f(w) = 1/2 sum_i h_i (w_i - w*_i)^2`` with curvatures ``h_i``
spread over three decades and noisy gradients (``g = h (w - w*) + noise``).
One global rate must be small enough for the stiffest coordinate and is then
too small for the flat ones: momentum (SGD) speeds up the flat directions, and
Adagrad, RMSprop, Adam and kin scale each coordinate by its own gradient
history, a diagonal approximation of the inverse Hessian. With ``--noise 0``
(exact gradients) the per-coordinate rates win by orders of magnitude; with
noise every method ends at a noise floor set by the size of its rate and how
that rate decays.

Each optimizer runs the same steps from the same start with the same noise. The
table shows the final ``f / f(w0)``, the time per ``opt.step`` and, for scale,
the same Adam update written as a plain in-place numpy loop (equal result).

    python examples/compare_optimizers.py            # 1e5 params, 400 steps
    python examples/compare_optimizers.py --noise 0 --threads 1
    python examples/compare_optimizers.py --quick    # 2e4 params, 40 steps (CI)
"""
import argparse
import time

import numpy as np

import lrfast
from lrfast.schedules import CosineDecay, ExponentialDecay

DTYPE = np.float32


def problem(n, seed):
    rng = np.random.default_rng(seed)
    h = np.logspace(-3, 0, n).astype(DTYPE)
    rng.shuffle(h)
    w_star = rng.standard_normal(n).astype(DTYPE)
    return h, w_star


def f(w, h, w_star):
    d = (w - w_star).astype(np.float64)
    return 0.5 * float(np.dot(h * d, d))


def numpy_adam(w, lr=5e-2, b1=0.9, b2=0.999, eps=1e-8):
    """The reference: Adam as a plain in-place numpy loop (several passes per step)."""
    state = {"m": np.zeros_like(w), "v": np.zeros_like(w), "tmp": np.empty_like(w), "t": 0}

    def step(g):
        m, v, tmp = state["m"], state["v"], state["tmp"]
        state["t"] = t = state["t"] + 1
        m *= b1
        m += (1 - b1) * g
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp /= np.sqrt(1 - b2 ** t)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / (1 - b1 ** t)
        np.subtract(w, tmp, out=w)
    return step


def configs(steps):
    return [
        ("SGD", "momentum 0.9", lambda p: lrfast.SGD(p, lr=1.0, momentum=0.9)),
        ("SGD", "nesterov + exp decay", lambda p: lrfast.SGD(
            p, lr=ExponentialDecay(1.5, decay=1.0 / steps), momentum=0.9, nesterov=True)),
        ("Adagrad", "lr 0.3", lambda p: lrfast.Adagrad(p, lr=0.3)),
        ("Adadelta", "lr 1.0", lambda p: lrfast.Adadelta(p, lr=1.0)),
        ("RMSprop", "lr 0.01", lambda p: lrfast.RMSprop(p, lr=1e-2)),
        ("Adam", "lr 0.05", lambda p: lrfast.Adam(p, lr=5e-2)),
        ("AdamW", "warmup-cosine", lambda p: lrfast.AdamW(p, lr=CosineDecay(
            0.0, steps - steps // 10, warmup_target=0.1, warmup_steps=steps // 10),
            weight_decay=0.0)),
        ("Adamax", "lr 0.05", lambda p: lrfast.Adamax(p, lr=5e-2)),
        ("NAdam", "lr 0.05", lambda p: lrfast.NAdam(p, lr=5e-2)),
        ("RAdam", "lr 0.05", lambda p: lrfast.RAdam(p, lr=5e-2)),
    ]


def _stepper(build, w):
    opt = build([w])                      # the optimizer updates w in place
    return lambda g: opt.step([g])


def run(make_step, n_steps, h, w_star, noise):
    w = np.zeros_like(w_star)
    step = make_step(w)
    g = np.empty_like(w)
    spent = 0.0
    for k in range(n_steps):
        np.subtract(w, w_star, out=g)
        g *= h
        g += noise[k % len(noise)]
        t0 = time.perf_counter()
        step(g)
        spent += time.perf_counter() - t0
    return f(w, h, w_star), spent / n_steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=100_000, help="number of parameters")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.01, help="gradient noise std")
    ap.add_argument("--threads", type=int, default=0, help="lrfast threads (0: default)")
    ap.add_argument("--quick", action="store_true", help="2e4 params, 40 steps")
    args = ap.parse_args(argv)
    n, steps = (20_000, 40) if args.quick else (args.size, args.steps)

    h, w_star = problem(n, args.seed)
    f0 = f(np.zeros_like(w_star), h, w_star)
    rng = np.random.default_rng(args.seed + 1)
    noise = (args.noise * rng.standard_normal((8, n))).astype(DTYPE)   # reused cyclically
    lrfast.set_num_threads(args.threads)

    rows = []
    for name, setting, build in configs(steps):
        final, per_step = run(lambda w: _stepper(build, w), steps, h, w_star, noise)
        rows.append((f"lrfast.{name}", setting, final / f0, per_step))
    final, per_step = run(numpy_adam, steps, h, w_star, noise)
    rows.append(("numpy Adam loop", "lr 0.05 (reference)", final / f0, per_step))

    print(f"ill-conditioned quadratic, {n} float32 params, curvatures 1e-3..1, "
          f"{steps} steps, gradient noise {args.noise:g}, {lrfast.get_num_threads()} thread(s)")
    head = ("optimizer", "setting", "f / f(w0)", "us / step")
    w0 = max(len(r[0]) for r in rows + [head])
    w1 = max(len(r[1]) for r in rows + [head])
    print(f"{head[0]:<{w0}}  {head[1]:<{w1}}  {head[2]:>10}  {head[3]:>9}")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * 10}  {'-' * 9}")
    for name, setting, ratio, per_step in rows:
        print(f"{name:<{w0}}  {setting:<{w1}}  {ratio:>10.3e}  {1e6 * per_step:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
