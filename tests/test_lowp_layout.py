"""Low-precision optimizer state of F-contiguous params, and bfloat16 state
in lrfast.save checkpoints.

The kernels read a param's state in the param's memory order, so bfloat16
and 8-bit state share the param's memory order (8-bit blocks of 256 run
along it), while the state_dict, as for float32 state, is indexed like the
param. The reference is the C-contiguous transpose of the same param, whose
memory order is the F param's.
"""
import numpy as np
import pytest

import lrfast

pytest.importorskip("ml_dtypes")


def _pair(state_dtype, steps=3):
    rng = np.random.default_rng(5)
    p = np.asfortranarray(rng.standard_normal((70, 90)).astype(np.float32))
    gs = [np.asfortranarray(rng.standard_normal((70, 90)).astype(np.float32))
          for _ in range(steps)]
    f = p.copy(order="F")
    c = np.ascontiguousarray(p.T)          # same memory, transposed indices
    of = lrfast.Adam([f], lr=1e-2, state_dtype=state_dtype)
    oc = lrfast.Adam([c], lr=1e-2, state_dtype=state_dtype)
    for g in gs:
        of.step([g])
        oc.step([np.ascontiguousarray(g.T)])
    return f, c, of, oc


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_f_contiguous_param_state_is_its_transposes(state_dtype):
    f, c, of, oc = _pair(state_dtype)
    assert f.T.tobytes() == np.ascontiguousarray(c).tobytes()
    ef, ec = of.state_dict()["state"][0], oc.state_dict()["state"][0]
    assert list(ef) == list(ec)
    for k in ("exp_avg", "exp_avg_sq"):
        assert ef[k].shape == (70, 90) and ef[k].dtype == ec[k].dtype
        assert ef[k].T.tobytes() == ec[k].tobytes(), k        # indexed like the param
        if state_dtype == "int8":                              # blocks along memory order
            assert ef[k + "_absmax"].tobytes() == ec[k + "_absmax"].tobytes()


@pytest.mark.parametrize("src", ["bfloat16", "int8"])
@pytest.mark.parametrize("dst", [None, "bfloat16", "int8"])
def test_f_contiguous_state_converts_on_load(src, dst):
    """A state_dict of any format loads into an optimizer of another format
    over the F param as it does over the C transpose."""
    f, c, of, oc = _pair(src)
    f2, c2 = f.copy(order="F"), c.copy()
    lf = lrfast.Adam([f2], lr=1e-2, state_dtype=dst)
    lc = lrfast.Adam([c2], lr=1e-2, state_dtype=dst)
    lf.load_state_dict(of.state_dict())
    lc.load_state_dict(oc.state_dict())
    g = np.asfortranarray(np.linspace(-1, 1, 6300, dtype=np.float32).reshape(70, 90))
    lf.step([g])
    lc.step([np.ascontiguousarray(g.T)])
    assert f2.T.tobytes() == c2.tobytes()
    ef, ec = lf.state_dict()["state"][0], lc.state_dict()["state"][0]
    for k, v in ec.items():
        if isinstance(v, np.ndarray) and v.ndim == 2:
            assert ef[k].T.tobytes() == v.tobytes(), k


def test_bfloat16_state_survives_save_and_load(tmp_path):
    p = [np.linspace(-1, 1, 5000, dtype=np.float32)]
    opt = lrfast.Adam(p, state_dtype="bfloat16")
    opt.step([p[0] * 0.5])
    lrfast.save(opt, tmp_path / "ck.npz")
    sd = lrfast.io.read(tmp_path / "ck.npz")
    ref = opt.state_dict()["state"][0]
    for k in ("exp_avg", "exp_avg_sq"):
        assert sd["state"][0][k].dtype.name == "bfloat16"
        assert sd["state"][0][k].tobytes() == ref[k].tobytes()
    q = [p[0].copy()]
    opt2 = lrfast.Adam(q, state_dtype="bfloat16")
    lrfast.load(opt2, tmp_path / "ck.npz")
    g = [np.full(5000, 0.25, dtype=np.float32)]
    opt.step(g)
    opt2.step(g)
    assert q[0].tobytes() == p[0].tobytes()
