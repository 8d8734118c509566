"""lrfast.torch with master_weights=True: bfloat16/float16 params, float32 master
copies in ``opt.state[p]["master_param"]`` (the ZeRO-Offload step). Checked
against torch.optim on float32 master weights followed by ``.to(dtype)``: the
master to 1e-6 relative, the param equal to the master rounded to nearest even."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ml_dtypes")
import lrfast.torch as lt  # noqa: E402

SHAPES = [(64, 33), (5000,), (7,)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name,hp", [("AdamW", dict(lr=1e-2, weight_decay=0.1)),
                                     ("Adam", dict(lr=1e-2, amsgrad=True)),
                                     ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True))])
def test_master_weights_against_torch(name, hp, dtype):
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in SHAPES]
    ref = [p.detach().float().clone().requires_grad_() for p in ps]
    opt = getattr(lt, name)(ps, master_weights=True, **hp)
    ropt = getattr(torch.optim, name)(ref, foreach=False, **hp)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, 0.5)
    rsched = torch.optim.lr_scheduler.StepLR(ropt, 10, 0.5)
    ptrs = [p.data_ptr() for p in ps]
    for _ in range(30):
        for p, r in zip(ps, ref):
            g = torch.randn(p.shape, generator=gen).to(dtype)
            p.grad, r.grad = g, g.float()
        opt.step()
        ropt.step()
        sched.step()
        rsched.step()
    for p, r in zip(ps, ref):
        m = opt.state[p]["master_param"]
        assert m.dtype == torch.float32
        rel = float((m - r.detach()).abs().max() / r.detach().abs().max())
        assert rel <= 1e-6, rel
        assert torch.equal(p.detach(), m.to(dtype))            # rounded once, nearest even
        assert opt.state[p]["exp_avg" if name != "SGD" else "momentum_buffer"].dtype \
            == torch.float32
    assert [p.data_ptr() for p in ps] == ptrs


def test_master_weights_resume_exactly():
    gen = torch.Generator().manual_seed(1)
    ps = [torch.randn(s, generator=gen).to(torch.bfloat16).requires_grad_() for s in SHAPES]
    opt = lt.AdamW(ps, lr=1e-2, master_weights=True)
    for _ in range(3):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen).to(torch.bfloat16)
        opt.step()
    sd = opt.state_dict()
    ps2 = [p.detach().clone().requires_grad_() for p in ps]
    o2 = lt.AdamW(ps2, lr=1e-2, master_weights=True)
    o2.load_state_dict(sd)
    for _ in range(3):
        for a, b in zip(ps, ps2):
            a.grad = torch.randn(a.shape, generator=gen).to(torch.bfloat16)
            b.grad = a.grad.clone()
        opt.step()
        o2.step()
    for a, b in zip(ps, ps2):
        assert torch.equal(a, b)
        assert torch.equal(opt.state[a]["master_param"], o2.state[b]["master_param"])
        assert o2.state[b]["exp_avg"].dtype == torch.float32


def test_master_weights_refusals():
    p32 = torch.zeros(10, requires_grad=True)
    with pytest.raises(TypeError, match="master_weights=True takes bfloat16"):
        lt.AdamW([p32], master_weights=True)
    ph = torch.zeros(10, dtype=torch.bfloat16, requires_grad=True)
    with pytest.raises(TypeError, match="bfloat16"):
        lt.AdamW([ph])                                       # 16-bit params need a master
    with pytest.raises(ValueError, match="elementwise"):
        lt.Lamb([ph], master_weights=True)
    opt = lt.AdamW([ph], master_weights=True)
    np.testing.assert_array_equal(opt.state[ph]["master_param"].numpy(), np.zeros(10))


def test_master_copy_not_kept_by_a_float32_optimizer():
    """A master-weights checkpoint loaded into a float32 optimizer: the master
    copy is dropped (as lrfast.AdamW drops it), not kept to go stale and come
    back as the master of a later master-weights load (the next step would then
    write the params from that stale master)."""
    gen = torch.Generator().manual_seed(2)
    p = torch.randn(300, generator=gen).to(torch.bfloat16).requires_grad_()
    o = lt.AdamW([p], lr=1e-1, master_weights=True)
    p.grad = torch.randn(300, generator=gen).to(torch.bfloat16)
    o.step()
    q = p.detach().float().requires_grad_()            # continue in float32
    o32 = lt.AdamW([q], lr=1e-1)
    o32.load_state_dict(o.state_dict())
    assert "master_param" not in o32.state[q]
    for _ in range(5):
        q.grad = torch.randn(300, generator=gen)
        o32.step()
    sd = o32.state_dict()
    assert "master_param" not in sd["state"][0]
    r = q.detach().to(torch.bfloat16).requires_grad_()  # back to bfloat16 + master
    o3 = lt.AdamW([r], lr=1e-1, master_weights=True)
    o3.load_state_dict(sd)
    assert torch.equal(o3.state[r]["master_param"], r.detach().float())
