"""lrfast.EMA against torch's AveragedModel, lrfast.Accumulate against
optax.MultiSteps and lrfast.Lookahead against optax.lookahead: >= 50
optimizer steps of a contracting problem that starts far from its optimum,
per tensor max|a-b|/max|b| <= 1e-10 (float64) and <= 1e-4 (float32)."""
import numpy as np
import pytest

import lrfast

TOL = {np.float64: 1e-10, np.float32: 1e-4}
SHAPES = [(17, 9), (64,), (1,), (3, 4, 5)]
DTYPES = [np.float64, np.float32]


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    target = [(rng.standard_normal(s) + 5.0).astype(dtype) for s in SHAPES]
    return rng, init, target


def grads(params, target, rng):
    """g = 0.7*(p - target) + 0.01*noise, in the param dtype."""
    return [(0.7 * (p.astype(np.float64) - t) + 0.01 * rng.standard_normal(p.shape))
            .astype(p.dtype) for p, t in zip(params, target)]


def _optax():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    return jax, optax, jnp


# ---------------------------------------------------------------------------
# EMA vs torch.optim.swa_utils.AveragedModel
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decay, warmup", [(0.9, False), (0.99, False), (0.95, True)])
def test_ema_vs_torch_averaged_model(dtype, decay, warmup):
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    rng, init, target = problem(dtype)
    ours = [x.copy() for x in init]
    ema = lrfast.EMA(lrfast.Adam(ours, lr=0.05), decay, warmup=warmup)
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(x, dtype=tdt))
                                    for x in init])
    if warmup:
        # TensorFlow's num_updates rule; AveragedModel passes n_averaged (>= 1 here)
        def avg_fn(ema_list, cur_list, n):
            d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
            torch._foreach_lerp_(ema_list, cur_list, 1.0 - d)
        averaged = AveragedModel(model, multi_avg_fn=avg_fn)
    else:
        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    for _ in range(60):
        ema.step(grads(ours, target, rng))
        with torch.no_grad():               # the model's params are the optimizer's
            for tp, p in zip(model, ours):
                tp.copy_(torch.from_numpy(p.copy()))
        averaged.update_parameters(model)
    assert ema.n_averaged == int(averaged.n_averaged) == 60
    theirs = [t.detach().numpy() for t in averaged.module]
    for a, b in zip(ema.params, theirs):
        assert rel(a, b) <= TOL[dtype]
    # the averages lag the params: the test is not comparing params to params
    assert max(rel(a, p) for a, p in zip(ema.params, ours)) > 1e-3


# ---------------------------------------------------------------------------
# Accumulate vs optax.MultiSteps
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, mean", [(4, True), (3, False), (1, True)])
def test_accumulate_vs_optax_multisteps(dtype, k, mean):
    jax, optax, jnp = _optax()
    rng, init, target = problem(dtype, seed=1)
    lr = 0.05 if mean else 0.05 / k
    ours = [x.copy() for x in init]
    acc = lrfast.Accumulate(lrfast.Adam(ours, lr=lr, eps=1e-8), every=k, mean=mean)
    # optax's accumulator is float32 unless told: lrfast's has the param's dtype
    tx = optax.MultiSteps(optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8), every_k_schedule=k,
                          use_grad_mean=mean, accumulator_dtype=dtype)
    theirs = [jnp.asarray(x.copy()) for x in init]
    state = tx.init(theirs)
    update = jax.jit(tx.update)
    for _ in range(55 * k):
        gs = grads(ours, target, rng)     # the same grads for both (params agree to tol)
        acc.step(gs)
        updates, state = update([jnp.asarray(g) for g in gs], state, theirs)
        theirs = optax.apply_updates(theirs, updates)
    assert acc.step_count == 55 and acc.micro_step == 0
    for a, b in zip(ours, theirs):
        assert np.asarray(b).dtype == dtype
        assert rel(a, np.asarray(b)) <= TOL[dtype]
    assert max(rel(a, x) for a, x in zip(ours, init)) > 0.1   # it moved


# ---------------------------------------------------------------------------
# Lookahead vs optax.lookahead
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, alpha", [(5, 0.5), (3, 0.8), (1, 0.3)])
def test_lookahead_vs_optax(dtype, k, alpha):
    jax, optax, jnp = _optax()
    rng, init, target = problem(dtype, seed=2)
    ours = [x.copy() for x in init]
    look = lrfast.Lookahead(lrfast.Adam(ours, lr=0.05), k=k, alpha=alpha)
    tx = optax.lookahead(optax.adam(0.05, b1=0.9, b2=0.999, eps=1e-8), sync_period=k,
                         slow_step_size=alpha)
    theirs = optax.LookaheadParams.init_synced([jnp.asarray(x.copy()) for x in init])
    state = tx.init(theirs)
    update = jax.jit(tx.update)
    for t in range(1, 63):              # ends between syncs for k > 1
        gs = grads(ours, target, rng)     # taken at the fast params, as optax's example
        look.step(gs)
        updates, state = update([jnp.asarray(g) for g in gs], state, theirs)
        theirs = optax.apply_updates(theirs, updates)
        assert look.steps_since_sync == int(state.steps_since_sync) == t % k
    for a, b in zip(ours, theirs.fast):
        assert rel(a, np.asarray(b)) <= TOL[dtype]
    for a, b in zip(look.slow_params, theirs.slow):
        assert rel(a, np.asarray(b)) <= TOL[dtype]
    if k > 1:     # between syncs the fast and slow weights differ
        assert max(rel(a, s) for a, s in zip(ours, look.slow_params)) > 1e-4
