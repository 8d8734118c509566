"""lrfast <-> bitsandbytes 8-bit Adam state_dicts (tests skip without bitsandbytes)."""
import copy

import numpy as np
import pytest

import lrfast
from lrfast import _quant as Q

torch = pytest.importorskip("torch")
bnb = pytest.importorskip("bitsandbytes")

from _bnb_ref import bnb_adam8bit_run  # noqa: E402

SHAPES = [(64, 80), (5000,), (10,), (300,)]          # two 8-bit params, two float32 ones


def make(seed=0, wd=0.0):
    rng = np.random.default_rng(seed)
    ps = [torch.nn.Parameter(torch.from_numpy(rng.standard_normal(s).astype(np.float32)))
          for s in SHAPES]
    return ps, bnb.optim.Adam8bit(ps, lr=1e-2, betas=(0.8, 0.99), eps=1e-7, weight_decay=wd)


def run(ps, opt, steps, seed):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.from_numpy(rng.standard_normal(p.shape).astype(np.float32))
        opt.step()


def test_lrfast_layout_equals_bnb_state():
    ps, opt = make()
    run(ps, opt, 3, 1)
    sd = lrfast.from_bitsandbytes_state_dict(opt.state_dict(), "Adam")
    assert sd["format"] == "lrfast.optim/1" and sd["optimizer"] == "Adam"
    assert sd["step_count"] == 3 and sd["skipped_steps"] == 0
    (g,) = sd["param_groups"]
    assert g == {"params": [0, 1, 2, 3], "lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-7,
                 "weight_decay": 0.0, "amsgrad": False, "maximize": False,
                 "decoupled_weight_decay": False, "state_dtype": "int8"}
    for i, p in enumerate(ps):
        e, s = sd["state"][i], opt.state[p]
        assert e["step"] == 3 and type(e["step"]) is int
        if p.numel() >= 4096:
            assert set(e) == {"step", "exp_avg", "exp_avg_absmax", "exp_avg_sq",
                              "exp_avg_sq_absmax"}
            assert e["exp_avg"].dtype == np.uint8 and e["exp_avg"].shape == tuple(p.shape)
            assert e["exp_avg_absmax"].dtype == np.float32
            assert e["exp_avg_absmax"].shape == (-(-p.numel() // 256),)
            np.testing.assert_array_equal(e["exp_avg"], s["state1"].numpy())
            np.testing.assert_array_equal(e["exp_avg_sq"], s["state2"].numpy())
            np.testing.assert_array_equal(e["exp_avg_absmax"], s["absmax1"].numpy())
            np.testing.assert_array_equal(e["exp_avg_sq_absmax"], s["absmax2"].numpy())
        else:
            assert set(e) == {"step", "exp_avg", "exp_avg_sq"}
            assert e["exp_avg"].dtype == np.float32
            np.testing.assert_array_equal(e["exp_avg"], s["state1"].numpy())
            np.testing.assert_array_equal(e["exp_avg_sq"], s["state2"].numpy())
    for a in sd["state"][0].values():          # numpy only, no tensors
        assert not hasattr(a, "detach")


@pytest.mark.parametrize("name,wd", [("Adam", 0.0), ("AdamW", 0.05)])
def test_round_trip_resumes_bnb_identically(name, wd):
    ps, opt = make(wd=wd)
    run(ps, opt, 4, 2)
    saved = copy.deepcopy(opt.state_dict())
    back = lrfast.to_bitsandbytes_state_dict(lrfast.from_bitsandbytes_state_dict(saved, name))
    ps2 = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt2 = bnb.optim.Adam8bit(ps2, lr=0.5, betas=(0.5, 0.5), eps=1.0)   # overwritten by the load
    opt2.load_state_dict(back)
    run(ps, opt, 3, 3)
    run(ps2, opt2, 3, 3)
    for p, p2 in zip(ps, ps2):
        np.testing.assert_array_equal(p.detach().numpy(), p2.detach().numpy())
        for k in ("state1", "state2", "absmax1", "absmax2"):
            if k in opt.state[p]:
                np.testing.assert_array_equal(opt.state[p][k].numpy(), opt2.state[p2][k].numpy())
        assert opt.state[p]["step"] == opt2.state[p2]["step"] == 7


def test_float32_state_is_quantized_for_large_params():
    rng = np.random.default_rng(4)
    m = (rng.standard_normal(5000) * 0.01).astype(np.float32)
    v = (m * m).astype(np.float32)
    sd = {"format": "lrfast.optim/1", "optimizer": "AdamW", "step_count": 2, "skipped_steps": 0,
          "state": {0: {"step": 2, "exp_avg": m, "exp_avg_sq": v}},
          "param_groups": [{"params": [0], "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                            "weight_decay": 0.01, "amsgrad": False, "maximize": False}]}
    out = lrfast.to_bitsandbytes_state_dict(sd)
    q = out["state"][0]["__bnb_optimizer_quant_state__"]
    c, a = Q.quantize_blockwise_ref(m, True)
    np.testing.assert_array_equal(q["state1"].numpy(), c)
    np.testing.assert_array_equal(q["absmax1"].numpy(), a)
    np.testing.assert_array_equal(q["qmap2"].numpy(), Q.dynamic_map(False))


def test_refusals():
    ps, opt = make(wd=0.1)
    run(ps, opt, 1, 5)
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="decoupled"):
        lrfast.from_bitsandbytes_state_dict(sd, "Adam")
    with pytest.raises(ValueError, match="optimizer must be"):
        lrfast.from_bitsandbytes_state_dict(sd, "SGD")
    bad = copy.deepcopy(sd)
    bad["state"][0]["__bnb_optimizer_quant_state__"]["absmax1"] = torch.zeros(3)
    with pytest.raises(ValueError, match="blocks"):
        lrfast.from_bitsandbytes_state_dict(bad, "AdamW")
    bad = copy.deepcopy(sd)
    bad["state"][0]["__bnb_optimizer_quant_state__"]["qmap1"] = torch.linspace(-1, 1, 256)
    with pytest.raises(ValueError, match="qmap1"):
        lrfast.from_bitsandbytes_state_dict(bad, "AdamW")
    lsd = lrfast.from_bitsandbytes_state_dict(sd, "AdamW")
    lsd["param_groups"][0]["amsgrad"] = True
    with pytest.raises(ValueError, match="amsgrad"):
        lrfast.to_bitsandbytes_state_dict(lsd)
    w = np.ones(10, np.float32)
    with pytest.raises(ValueError, match="L2"):
        lrfast.to_bitsandbytes_state_dict(lrfast.Adam([w], weight_decay=0.1))
    with pytest.raises(ValueError, match="twin"):
        lrfast.to_bitsandbytes_state_dict(lrfast.SGD([w], lr=0.1))


def test_reference_helper_matches_bnb_update_rule():
    # one step from zero state: p1 = p0 - lr * m/(sqrt(v)/c2 + eps)/c1 with unquantized m, v
    rng = np.random.default_rng(6)
    p0 = [rng.standard_normal(4096).astype(np.float32), rng.standard_normal(7).astype(np.float32)]
    g = [[rng.standard_normal(4096).astype(np.float32), rng.standard_normal(7).astype(np.float32)]]
    lr, b1, b2, eps = 1e-2, 0.9, 0.99, 1e-8
    final, first, last = bnb_adam8bit_run(p0, g, lr, (b1, b2), eps, 0.0)
    for p, gg, out, st in zip(p0, g[0], final, first):
        m = (1 - b1) * gg.astype(np.float64)
        v = (1 - b2) * gg.astype(np.float64) ** 2
        want = p - lr / (1 - b1) * m / (np.sqrt(v) / np.sqrt(1 - b2) + eps)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
        if p.size >= 4096:
            c, a = Q.quantize_blockwise_ref(m.astype(np.float32), True)
            np.testing.assert_allclose(st[1], a, rtol=1e-6)
    assert first[1][1] is None and last[0][1] is not None


def test_f_ordered_param_is_reblocked_for_bitsandbytes():
    # an F-contiguous param's 8-bit blocks run along its memory order; bitsandbytes
    # blocks the C order, so the conversion decodes and quantizes again: bnb's view
    # of the moments must match lrfast's (to quantization error), not pair codes
    # with another block's absmax
    rng = np.random.default_rng(5)
    p = np.asfortranarray(rng.standard_normal((96, 130)).astype(np.float32))
    # rows of very different scale, so a wrong block pairing is visible
    scale = np.exp(np.linspace(-6, 2, 96)).astype(np.float32)[:, None]
    opt = lrfast.Adam([p], lr=1e-3, state_dtype="int8")
    for _ in range(3):
        opt.step([np.asfortranarray(scale * rng.standard_normal(p.shape).astype(np.float32))])
    f32 = lrfast.Adam([p.copy(order="F")], lr=1e-3)
    f32.load_state_dict(opt.state_dict())         # lrfast decodes along F order
    want = f32.state_dict()["state"][0]
    q = lrfast.to_bitsandbytes_state_dict(opt)["state"][0]["__bnb_optimizer_quant_state__"]
    for k, (name, sig) in enumerate((("exp_avg", True), ("exp_avg_sq", False)), 1):
        codes = q[f"state{k}"].numpy()
        assert codes.shape == p.shape and codes.dtype == np.uint8
        got = Q.dequantize_blockwise_ref(np.ascontiguousarray(codes), q[f"absmax{k}"].numpy(),
                                         sig)
        err = np.abs(got - want[name])
        # within the quantization error of each element's own C-order block
        bound = np.repeat(q[f"absmax{k}"].numpy(), 256)[:p.size].reshape(p.shape) * 0.07
        assert np.all(err <= bound), (name, float(np.max(err / bound)))
