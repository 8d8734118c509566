"""Per-tensor optimizers and per-tensor clipping against their references.

- Lamb, LARS and NovoGrad against Optax 0.2.x (``jax_enable_x64``): >= 50 steps
  of a contracting problem that starts far from its optimum, per tensor
  max|a-b|/max|b| <= 1e-10 (float64) and <= 1e-4 (float32).
- Their numpy twins (``lrfast._reference``) compute the per-tensor norms in
  the kernels' exact order; the generic twin tests (test_parity.py) cover
  threads, ISA builds and chunk edges. Here: the functional layer equals the
  classes bit for bit, and NovoGrad's per-tensor ``nu`` resumes exactly.
- ``clip_value`` equals ``torch.nn.utils.clip_grad_value_`` + the optimizer
  (and the twin on clipped grads, bit for bit); ``clip_norm`` equals Keras
  ``clipnorm`` (per tensor ``g * c / max(||g||, c)``) and the twin with that
  factor, bit for bit.
"""
import math
import os

import numpy as np
import pytest

import lrfast
from lrfast import _reference as R
from lrfast import kernels as K

from _cases import CASES, case_id
from conftest import bits_equal
from test_reference_parity_b import rel_err, run_optax

TOL = {np.float64: 1e-10, np.float32: 1e-4}
SHAPES = [(17, 9), (64,), (3, 4, 5), (5000,)]
NAMES = ("Lamb", "LARS", "NovoGrad")
PT_CASES = [c for c in CASES if c[0] in NAMES]


@pytest.mark.parametrize("case", PT_CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_optax(case, dtype):
    name, hp = case
    ours, theirs, init = run_optax(name, hp, dtype, shapes=SHAPES)
    errs = [rel_err(a, b) for a, b in zip(ours, theirs)]
    assert max(errs) <= TOL[dtype], (name, hp, errs)
    # both moved well beyond the tolerance: the comparison is not of two unchanged arrays
    assert min(rel_err(b, x) for b, x in zip(theirs, init)) > 10 * TOL[dtype]


def test_trust_ratio_is_per_tensor_and_one_at_zero_norms():
    # a zero param: LAMB's ratio is 1 (p moves by lr*u); a zero grad: LARS's is 1
    p = [np.zeros(8), np.full(8, 2.0)]
    opt = lrfast.Lamb(p, lr=0.1)
    opt.step([np.ones(8), np.ones(8)])
    u = 1.0 / (1.0 + 1e-6)                    # first Adam step: m_hat/(sqrt(v_hat)+eps)
    assert np.allclose(p[0], -0.1 * u, rtol=1e-12)
    # second tensor: ratio ||p||/||u|| = 2/u, so p moves by lr*2 exactly per element
    assert np.allclose(p[1], 2.0 - 0.1 * 2.0, rtol=1e-12)


def test_novograd_nu_is_per_tensor_state_and_resumes_exactly():
    rng = np.random.default_rng(3)
    a = [rng.standard_normal(s) for s in ((6, 5), (7,))]
    b = [x.copy() for x in a]
    o1 = lrfast.NovoGrad(a, lr=0.05)
    gs = [[rng.standard_normal(x.shape) for x in a] for _ in range(6)]
    for g in gs[:3]:
        o1.step(g)
    sd = o1.state_dict()
    nu = [sd["state"][i]["nu"] for i in range(2)]
    assert nu[1] == pytest.approx((1 - 0.25) * float(np.sum(gs[2][1] ** 2)) + 0.25 * (
        (1 - 0.25) * float(np.sum(gs[1][1] ** 2)) + 0.25 * float(np.sum(gs[0][1] ** 2))))
    o2 = lrfast.NovoGrad(b, lr=0.05)
    for g in gs[:3]:
        o2.step(g)
    o3 = lrfast.NovoGrad([x.copy() for x in a], lr=0.05)
    o3.load_state_dict(sd)
    for g in gs[3:]:
        o1.step(g)
        o3.step(g)
    assert all(bits_equal(x, y) for x, y in zip(o1.params, o3.params))
    # a bad nu is refused and changes nothing
    bad = o1.state_dict()
    bad["state"][0]["nu"] = -1.0
    before = o3.state_dict()
    with pytest.raises(ValueError, match="nu"):
        o3.load_state_dict(bad)
    assert o3.state_dict()["state"][0]["nu"] == before["state"][0]["nu"]
    o3.zero_state()
    assert o3.state == {}


_FUNC = {"Lamb": K.lamb_step, "LARS": K.lars_step, "NovoGrad": K.novograd_step}


@pytest.mark.parametrize("case", PT_CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_equals_class(case, dtype):
    name, hp = case
    rng = np.random.default_rng(1)
    a = rng.standard_normal((90, 70)).astype(dtype)        # > one 4096-element block
    b = a.copy()
    opt = getattr(lrfast, name)([a], **hp)
    states = [np.zeros_like(b) for _ in opt.spec.states]
    kw = {k: v_ for k, v_ in hp.items() if k != "betas"}
    for i, beta in enumerate(hp.get("betas", ())):
        kw[f"beta{i + 1}"] = beta
    nu = 0.0
    for t in range(1, 8):
        g = rng.standard_normal(a.shape).astype(dtype)
        opt.step([g])
        if name == "NovoGrad":
            nu = _FUNC[name](b, g, *states, step=t, nu=nu, **kw)
        elif name == "LARS":
            _FUNC[name](b, g, *states, **kw)
        else:
            _FUNC[name](b, g, *states, step=t, **kw)
        assert bits_equal(a, b), (name, t)


# ---------------------------------------------------------------------------
# per-tensor clipping
# ---------------------------------------------------------------------------
def _grads(rng, shapes, dtype, scale):
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in shapes]


CLIP_SHAPES = [(40, 30), (5000,), (7,), (0,)]


@pytest.mark.parametrize("name", ["SGD", "Adam", "Lamb", "Rprop"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_clip_value_equals_twin_on_clipped_grads(name, dtype, threads):
    rng = np.random.default_rng(5)
    hp = {"lr": 0.01}
    a = [rng.standard_normal(s).astype(dtype) for s in CLIP_SHAPES]
    b = [x.copy() for x in a]
    opt = getattr(lrfast, name)(a, clip_value=0.3, **hp)
    st = [R.init_state(name, x) for x in b]
    with lrfast.threads(threads):
        for t in range(1, 5):
            gs = _grads(rng, CLIP_SHAPES, dtype, 1.0)
            keep = [g.copy() for g in gs]
            opt.step(gs)
            assert all(bits_equal(g, k) for g, k in zip(gs, keep))     # grads untouched
            for x, g, s in zip(b, gs, st):
                kw = {} if name == "SGD" else {"step": t}
                R.STEPPERS[name](x, np.clip(g, dtype(-0.3), dtype(0.3)), s, **hp, **kw)
            assert all(bits_equal(x, y) for x, y in zip(a, b)), (name, t)


@pytest.mark.parametrize("name", ["SGD", "Adam", "NovoGrad"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_clip_norm_equals_twin_with_per_tensor_factor(name, dtype, threads):
    rng = np.random.default_rng(6)
    hp = {"lr": 0.01}
    a = [rng.standard_normal(s).astype(dtype) for s in CLIP_SHAPES]
    b = [x.copy() for x in a]
    opt = getattr(lrfast, name)(a, clip_norm=2.0, **hp)
    st = [R.init_state(name, x) for x in b]
    with lrfast.threads(threads):
        for t in range(1, 5):
            gs = _grads(rng, CLIP_SHAPES, dtype, 0.5)
            opt.step(gs)
            for x, g, s in zip(b, gs, st):
                n = math.sqrt(R.tensor_sumsq(g))
                kw = {} if name == "SGD" else {"step": t}
                R.STEPPERS[name](x, g, s, grad_scale=2.0 / max(n, 2.0), **hp, **kw)
            assert all(bits_equal(x, y) for x, y in zip(a, b)), (name, t)


def test_clip_value_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    init = [rng.standard_normal(s) for s in ((20, 10), (33,))]
    ours = [x.copy() for x in init]
    opt = lrfast.Adam(ours, lr=0.01, clip_value=0.2)
    tp = [torch.tensor(x.copy(), requires_grad=True) for x in init]
    topt = torch.optim.Adam(tp, lr=0.01, foreach=False)
    for _ in range(50):
        gs = [rng.standard_normal(x.shape) for x in init]
        opt.step(gs)
        for p, g in zip(tp, gs):
            p.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_value_(tp, 0.2)
        topt.step()
    for x, p in zip(ours, tp):
        assert rel_err(x, p.detach().numpy()) <= 1e-10


def test_clip_norm_matches_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        keras = pytest.importorskip("keras")
    except Exception as e:          # a broken backend install: skip, as absent
        pytest.skip(f"keras unavailable: {e}")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(8)
    init = [rng.standard_normal(s) for s in ((20, 10), (33,))]
    ours = [x.copy() for x in init]
    opt = lrfast.SGD(ours, lr=0.25, clip_norm=0.5)     # 0.25: exact in Keras' float32 lr
    kv = [keras.Variable(x.copy(), dtype="float64") for x in init]
    kopt = keras.optimizers.SGD(learning_rate=0.25, clipnorm=0.5)
    for _ in range(50):
        gs = [rng.standard_normal(x.shape) * 3.0 for x in init]
        opt.step(gs)
        kopt.apply_gradients([(keras.ops.convert_to_tensor(g, dtype="float64"), v)
                              for g, v in zip(gs, kv)])
    for x, v in zip(ours, kv):
        assert rel_err(x, np.asarray(v.value)) <= 1e-10


@pytest.mark.parametrize("kw", [dict(clip_norm=1.0, max_grad_norm=1.0),
                                dict(clip_value=1.0, clip_norm=1.0),
                                dict(clip_value=1.0, max_grad_norm=1.0)])
def test_at_most_one_clipping(kw):
    with pytest.raises(ValueError, match="cannot both be set"):
        lrfast.Adam([np.zeros(3)], **kw)
    opt = lrfast.Adam([np.zeros(3)], **dict([next(iter(kw.items()))]))
    other = list(kw)[1]
    with pytest.raises(ValueError, match="cannot both be set"):
        setattr(opt, other, 1.0)
    assert getattr(opt, other) is None


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "1", True])
@pytest.mark.parametrize("which", ["clip_norm", "clip_value"])
def test_bad_clip_values(which, bad):
    with pytest.raises((TypeError, ValueError), match=which):
        lrfast.Adam([np.zeros(3)], **{which: bad})


def test_clipping_survives_pickle():
    import pickle
    opt = lrfast.Adam([np.ones(3)], clip_value=0.25)
    o2 = pickle.loads(pickle.dumps(opt))
    assert o2.clip_value == 0.25 and o2.clip_norm is None


@pytest.mark.parametrize("name", ["NovoGrad", "LDoG"])
def test_per_tensor_state_survives_add_param_group(name):
    # the engine is rebuilt by add_param_group: engine-held per-tensor scalars
    # must carry over, so the run equals one whose groups were there from the start
    rng = np.random.default_rng(11)
    a0, a1 = rng.standard_normal(6) * 1e-3, rng.standard_normal(4) * 1e-3
    b0, b1 = a0.copy(), a1.copy()
    kw = {"lr": 0.05} if name == "NovoGrad" else {}
    grads = [[rng.standard_normal(6), rng.standard_normal(4)] for _ in range(6)]
    o1 = getattr(lrfast, name)([a0], **kw)
    o2 = getattr(lrfast, name)([{"params": [b0]}, {"params": [b1]}], **kw)
    for g in grads[:3]:
        o1.step([g[0]])
        o2.step([g[0], None])
    o1.add_param_group({"params": [a1]})
    for g in grads[3:]:
        o1.step(g)
        o2.step(g)
    assert bits_equal(a0, b0) and bits_equal(a1, b1)
