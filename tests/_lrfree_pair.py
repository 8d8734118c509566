"""The shared harness of the learning-rate-free reference-parity tests: a small,
non-chaotic problem (params about 1e-3, smooth grads), and one run of an lrfast
optimizer beside its reference package's torch class on the same grads."""
import numpy as np

SIZES = ((40,), (6, 5), (300,))
STEPS = 60


def problem(dtype, seed=1):
    rng = np.random.default_rng(seed)
    params = [(1e-3 * rng.standard_normal(s)).astype(dtype) for s in SIZES]
    target = [(0.5 + 0.1 * rng.standard_normal(s)).astype(dtype) for s in SIZES]
    return params, target


def grad(p, c, t):
    # smooth: the grad of 0.5*||p - c||^2 with a slowly varying scale
    return (p - c) * (1.0 + 0.1 * np.sin(0.3 * t))


def run_pair(torch, ref_cls, cls, hp, dtype, groups=None, none_at=()):
    """``STEPS`` steps of ``cls`` (lrfast) and ``ref_cls`` (torch) from the same
    params; param 1 has no grad at the steps in ``none_at``. ``groups``: two
    groups' options (param 0, then the rest). Returns (params, torch params,
    opt, ref, d per step, the reference's d per step)."""
    params, target = problem(dtype)
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    tp = [torch.tensor(p.copy(), dtype=tdt, requires_grad=True) for p in params]
    if groups is None:
        ref, opt = ref_cls(tp, **hp), cls(params, **hp)
    else:
        ref = ref_cls([dict(params=tp[:1], **groups[0]), dict(params=tp[1:], **groups[1])],
                      **hp)
        opt = cls([dict(params=params[:1], **groups[0]),
                   dict(params=params[1:], **groups[1])], **hp)
    ds, refds = [], []
    for t in range(STEPS):
        grads = []
        for i, (p, c, x) in enumerate(zip(params, target, tp)):
            if t in none_at and i == 1:
                grads.append(None)
                x.grad = None
                continue
            g = grad(p, c, t).astype(dtype)
            grads.append(g)
            x.grad = torch.tensor(g.copy(), dtype=tdt)
        opt.step(grads)
        ref.step()
        ds.append(opt.d)
        refds.append(float(ref.param_groups[0]["d"]))
    return params, tp, opt, ref, ds, refds
