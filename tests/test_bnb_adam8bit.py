"""lrfast's 8-bit Adam against bitsandbytes 0.50's CPU ``Adam8bit`` (block 256,
dynamic maps, ``min_8bit_size=4096``), on the same inputs.

What the issue asks, measured here and asserted:
- after one step, lrfast's codes are the nearest codes of its (float32) new
  moments (second moments: except the floor, a positive value below half the
  smallest positive code keeps that code instead of 0.0; about 0.1% of codes
  here, so 99.89% are nearest by the plain rule and 100% by lrfast's), and
  they equal bitsandbytes' for >= 99.5% of first-moment codes and
  >= 90% of second-moment codes (the rest is bitsandbytes' CPU search, which is
  not nearest); absmax equal to 1e-5 relative;
- after 100 steps, params within 5e-3 relative of bitsandbytes';
- checkpoints convert both ways (``lrfast.to_bitsandbytes_state_dict`` /
  ``from_bitsandbytes_state_dict``) and stepping continues identically.
"""
import numpy as np
import pytest

import lrfast
from lrfast._quant import dynamic_map

pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")
from _bnb_ref import bnb_adam8bit_run  # noqa: E402

SIZES = (65536, 20000, 1000)       # the last keeps float32 state (< 4096 elements)


def _inputs(steps, seed=0):
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    target = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    gs = []
    x = [p.copy() for p in ps]
    for _ in range(steps):          # a fixed grad sequence (least squares at fixed points)
        gs.append([(xi - t + 0.1 * rng.standard_normal(xi.size)).astype(np.float32)
                   for xi, t in zip(x, target)])
    return ps, gs


def _lrfast_run(ps, gs, steps, **kw):
    params = [p.copy() for p in ps]
    opt = lrfast.Adam(params, lr=1e-3, state_dtype="int8", **kw)
    first = None
    for t in range(steps):
        opt.step(gs[t])
        if t == 0:
            first = opt.state_dict()["state"]
    return params, first, opt


def _nearest(codes, x, absmax, signed, floor=False):
    """Fraction of codes that are a nearest code of x / absmax (ties: either);
    ``floor``: the unsigned map's code 0 is not a candidate for positive x."""
    m = dynamic_map(signed).astype(np.float64)
    y = np.repeat(absmax.astype(np.float64), 256)[:x.size]
    y = np.where(y > 0, x.astype(np.float64) / np.where(y > 0, y, 1), 0.0)
    d = np.abs(m[None, :] - y[:, None])
    if floor:
        d[:, 0] = np.where(y > 0, np.inf, d[:, 0])
    best = d.min(axis=1)
    return np.mean(d[np.arange(x.size), codes] <= best)


def test_one_step_codes_against_bitsandbytes():
    ps, gs = _inputs(1)
    _, first_b, _ = bnb_adam8bit_run(ps, gs, lr=1e-3)
    _, first_l, _ = _lrfast_run(ps, gs, 1)
    b1, b2 = 0.9, 0.999
    for i, n in enumerate(SIZES):
        e = first_l[i]
        s1, a1, s2, a2 = first_b[i]
        if n < 4096:
            assert e["exp_avg"].dtype == np.float32 and a1 is None
            continue
        g = gs[0][i].astype(np.float32)
        m = np.float32(1 - b1) * g                 # the unquantized new moments
        v = np.float32(1 - b2) * g * g
        near_m = _nearest(e["exp_avg"], m, e["exp_avg_absmax"], True)
        near_v = _nearest(e["exp_avg_sq"], v, e["exp_avg_sq_absmax"], False)
        floor_v = _nearest(e["exp_avg_sq"], v, e["exp_avg_sq_absmax"], False, floor=True)
        eq_m = np.mean(e["exp_avg"] == s1)
        eq_v = np.mean(e["exp_avg_sq"] == s2)
        print(f"size {n}: nearest m {near_m:.5f} v {near_v:.5f} (with the floor "
              f"{floor_v:.5f}); equal to bnb m {eq_m:.5f} v {eq_v:.5f}")
        assert near_m == 1.0 and floor_v == 1.0
        # the floor moves only the few positive second moments below 1.6e-7 * absmax
        assert 0.998 <= near_v < 1.0
        assert eq_m >= 0.995 and eq_v >= 0.90
        np.testing.assert_allclose(e["exp_avg_absmax"], a1, rtol=1e-5)
        np.testing.assert_allclose(e["exp_avg_sq_absmax"], a2, rtol=1e-5)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_hundred_steps_params_against_bitsandbytes(wd):
    steps = 100
    ps, gs = _inputs(steps, seed=1)
    pb, _, _ = bnb_adam8bit_run(ps, gs, lr=1e-3, weight_decay=wd)
    # bitsandbytes' Adam8bit decays weights decoupled: lrfast's AdamW
    params = [p.copy() for p in ps]
    opt = (lrfast.AdamW(params, lr=1e-3, weight_decay=wd, state_dtype="int8") if wd
           else lrfast.Adam(params, lr=1e-3, state_dtype="int8"))
    for g in gs:
        opt.step(g)
    f32 = [p.copy() for p in ps]
    o32 = (lrfast.AdamW(f32, lr=1e-3, weight_decay=wd) if wd else lrfast.Adam(f32, lr=1e-3))
    for g in gs:
        o32.step(g)
    for i in range(len(SIZES)):
        rel = np.max(np.abs(params[i] - pb[i])) / np.max(np.abs(pb[i]))
        rel32 = np.max(np.abs(f32[i] - pb[i])) / np.max(np.abs(pb[i]))
        print(f"size {SIZES[i]}: int8 vs bnb {rel:.2e}; fp32 vs bnb {rel32:.2e}")
        assert rel <= 5e-3


def test_checkpoints_convert_both_ways():
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    ps, gs = _inputs(6, seed=2)
    # lrfast -> bitsandbytes: bnb continues from lrfast's state
    params = [p.copy() for p in ps]
    opt = lrfast.AdamW(params, lr=1e-3, weight_decay=0.0, state_dtype="int8")
    for g in gs[:3]:
        opt.step(g)
    tp = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    bopt = bnb.optim.Adam8bit(tp, lr=1e-3, min_8bit_size=4096)
    bopt.load_state_dict(lrfast.to_bitsandbytes_state_dict(opt))
    sd_b = bopt.state_dict()
    # and back: an lrfast optimizer loaded from bitsandbytes' dict equals the original
    opt2 = lrfast.AdamW([p.copy() for p in params], lr=1e-3, weight_decay=0.0,
                        state_dtype="int8")
    opt2.load_state_dict(lrfast.from_bitsandbytes_state_dict(sd_b, "AdamW"))
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    for i in a:
        for k in a[i]:
            assert np.array_equal(np.asarray(a[i][k]), np.asarray(b[i][k])), (i, k)
    # one more step each: lrfast and bnb from the same state agree as the 100-step test says
    for p, g in zip(tp, gs[3]):
        p.grad = torch.from_numpy(g.copy())
    bopt.step()
    opt.step(gs[3])
    for p, q in zip(params, tp):
        q = q.detach().numpy()
        assert np.max(np.abs(p - q)) <= 1e-5 * max(1.0, np.max(np.abs(q)))
