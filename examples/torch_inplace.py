"""Step a torch model with lrfast: ``lrfast.torch.AdamW`` in place of
``torch.optim.AdamW``, driven by torch's own scheduler.

``lrfast.torch`` optimizers are ``torch.optim.Optimizer`` subclasses whose step
runs lrfast's fused kernels on the tensors' memory (numpy views, no copies):
torch computes the gradients (autograd), lrfast applies the update in one
fused call. The script trains the same model twice from the same weights, once
with ``torch.optim.AdamW`` and once with ``lrfast.torch.AdamW``, each with a
torch ``OneCycleLR`` (which also cycles Adam's beta1), and prints how far apart the two end (float32: within
torch's own rounding, ~1e-6 relative).

    python examples/torch_inplace.py            # 300 steps
    python examples/torch_inplace.py --quick    # 50 steps (CI)

Needs torch (CPU): ``pip install "lrfast[torch]"``; without it the script says
so and exits 0.
"""
import argparse
import copy
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="50 steps")
    args = ap.parse_args(argv)
    steps = 50 if args.quick else args.steps
    try:
        import torch
    except ImportError:
        print('torch is not installed: skipping this example (pip install "lrfast[torch]")')
        return 0
    import numpy as np

    import lrfast.torch

    torch.manual_seed(0)
    X = torch.randn(512, 20)
    y = (X[:, :5].sum(1, keepdim=True) > 0).float()
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    twin = copy.deepcopy(model)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    # 1) torch.optim with its scheduler
    ref = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=1e-2, foreach=False)
    sched = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=1e-2, total_steps=steps)
    t_torch = 0.0
    for _ in range(steps):
        ref.zero_grad()
        loss_fn(twin(X), y).backward()
        t0 = time.perf_counter()
        ref.step()
        sched.step()
        t_torch += time.perf_counter() - t0

    # 2) lrfast.torch: the same loop, one line changed
    params = list(model.parameters())
    opt = lrfast.torch.AdamW(params, lr=1e-2, weight_decay=1e-2)
    lsched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)
    t_lrfast = 0.0
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(X), y)
        loss.backward()
        t0 = time.perf_counter()
        opt.step()                                          # updates the tensors in place
        lsched.step()
        t_lrfast += time.perf_counter() - t0

    worst = 0.0
    for p, q in zip(params, twin.parameters()):
        a, b = p.detach().numpy(), q.detach().numpy()
        worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
    acc = float(((model(X) > 0).float() == y).float().mean())
    print(f"{steps} steps of AdamW + OneCycleLR (lr and beta1 cycled) on a torch MLP")
    print(f"final loss {loss.item():.4f}, train accuracy {acc:.3f}, next lr "
          f"{lsched.get_last_lr()[0]:.3e} "
          f"(torch: {sched.get_last_lr()[0]:.3e})")
    print(f"max relative difference lrfast vs torch.optim.AdamW: {worst:.2e}")
    print(f"time per optimizer step (incl. the scheduler): torch.optim "
          f"{1e6 * t_torch / steps:.1f} us, lrfast {1e6 * t_lrfast / steps:.1f} us")
    if not worst < 1e-3:
        print("lrfast and torch.optim disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
