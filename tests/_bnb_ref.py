"""bitsandbytes' 8-bit blockwise Adam on CPU as a reference (tests only).

bitsandbytes 0.50's CPU update (backends/cpu/ops.py), per param, per step:
dequantize both moments (map[code] * absmax, float32); ``m = m*beta1 +
(1-beta1)*g``; ``v = v*beta2 + (1-beta2)*g*g``; ``denom = sqrt(v)/sqrt(1-beta2**t)
+ eps``; ``p *= 1 - lr*weight_decay`` (decoupled, when weight_decay > 0);
``p += -(lr/(1-beta1**t)) * m/denom``, from the UNQUANTIZED new moments; then
both moments are quantized again (block 256, new absmax).
"""
import numpy as np


def bnb_adam8bit_run(params0, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                     steps=None):
    """Run ``bitsandbytes.optim.Adam8bit`` on CPU (``min_8bit_size=4096``).

    ``params0``: list of float32 arrays; ``grads``: one list of per-param grads
    per step; ``steps`` (default ``len(grads)``). Returns ``(params, first,
    last)``: the final params (float32 arrays), and for each param after the
    first step and after the last the tuple ``(state1, absmax1, state2,
    absmax2)`` as numpy arrays (absmax None for a param with float32 state)."""
    import torch
    import bitsandbytes as bnb

    steps = len(grads) if steps is None else steps
    ps = [torch.nn.Parameter(torch.from_numpy(np.array(p, np.float32))) for p in params0]
    opt = bnb.optim.Adam8bit(ps, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                             min_8bit_size=4096)

    def snap():
        out = []
        for p in ps:
            s = opt.state[p]
            a1, a2 = s.get("absmax1"), s.get("absmax2")
            out.append((s["state1"].numpy().copy(), None if a1 is None else a1.numpy().copy(),
                        s["state2"].numpy().copy(), None if a2 is None else a2.numpy().copy()))
        return out

    first = None
    for t in range(steps):
        for p, g in zip(ps, grads[t]):
            p.grad = torch.from_numpy(np.array(g, np.float32))
        opt.step()
        if t == 0:
            first = snap()
    return [p.detach().numpy().copy() for p in ps], first, snap()
