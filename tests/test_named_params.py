"""Params given as (name, array) pairs, as torch >= 2.6 takes named_parameters():
names appear in param_groups and the state_dict's param_names, errors name the
param, mixing named and unnamed is refused, and load_state_dict checks names."""
import copy
import pickle

import numpy as np
import pytest

import lrfast
from lrfast.optim import optimizers

from conftest import bits_equal


def _named():
    return [("layer.weight", np.ones((3, 2))), ("layer.bias", np.zeros(2))]


@pytest.mark.parametrize("name", [n for n in optimizers() if n not in ("DiagonalNewton",
                                                                       "SparseAdam", "Muon")])
def test_names_in_groups_and_state_dict(name):
    ps = _named()
    opt = getattr(lrfast, name)(ps, **({"lr": 0.1} if name == "LARS" else {}))
    assert opt.param_groups[0]["param_names"] == ["layer.weight", "layer.bias"]
    assert opt.params[0] is ps[0][1] and opt.params[1] is ps[1][1]
    opt.step([np.full((3, 2), 0.5), np.full(2, 0.5)])
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == ["layer.weight", "layer.bias"]
    assert sd["param_groups"][0]["params"] == [0, 1]


def test_unnamed_state_dict_has_no_param_names():
    opt = lrfast.Adam([np.ones(3)])
    assert "param_names" not in opt.param_groups[0]
    assert "param_names" not in opt.state_dict()["param_groups"][0]


def test_same_as_unnamed_and_resume_pickle_deepcopy():
    a = _named()
    b = [np.ones((3, 2)), np.zeros(2)]
    oa, ob = lrfast.Adam(a, lr=0.1), lrfast.Adam(b, lr=0.1)
    for _ in range(3):
        g = [np.full((3, 2), 0.3), np.full(2, -0.2)]
        oa.step(g)
        ob.step(g)
    assert bits_equal(a[0][1], b[0]) and bits_equal(a[1][1], b[1])
    for o2 in (pickle.loads(pickle.dumps(oa)), copy.deepcopy(oa)):
        assert o2.param_groups[0]["param_names"] == ["layer.weight", "layer.bias"]
        assert o2.state_dict()["param_groups"][0]["param_names"] == ["layer.weight", "layer.bias"]


def test_groups_with_names():
    ps = _named()
    opt = lrfast.SGD([{"params": [ps[0]], "lr": 0.1}, {"params": [ps[1]]}], lr=0.01)
    sd = opt.state_dict()
    assert [g["param_names"] for g in sd["param_groups"]] == [["layer.weight"], ["layer.bias"]]
    opt.add_param_group({"params": [("head.w", np.ones(4))]})
    assert opt.param_groups[2]["param_names"] == ["head.w"]
    with pytest.raises(ValueError, match="with names or all without"):
        opt.add_param_group({"params": [np.ones(4)]})
    assert len(opt.param_groups) == 3


def test_mixed_named_and_unnamed_is_refused():
    with pytest.raises(ValueError, match="some param names are missing"):
        lrfast.Adam([("w", np.ones(3)), np.ones(2)])
    with pytest.raises(ValueError, match="with names or all without"):
        lrfast.Adam([{"params": [("w", np.ones(3))]}, {"params": [np.ones(2)]}])
    opt = lrfast.Adam([np.ones(3)])
    with pytest.raises(ValueError, match="with names or all without"):
        opt.add_param_group({"params": [("w", np.ones(2))]})
    with pytest.raises(TypeError, match="name must be a str"):
        lrfast.Adam([(1, np.ones(3))])
    with pytest.raises(TypeError, match="pair"):
        lrfast.Adam([("w", np.ones(3), 1)])


def test_names_are_read_only():
    opt = lrfast.Adam(_named())
    with pytest.raises(ValueError, match="param_names"):
        opt.param_groups[0]["param_names"] = ["a", "b"]
    with pytest.raises(TypeError):
        opt.param_groups[0]["param_names"].append("c")


def test_errors_name_the_param():
    with pytest.raises(TypeError, match="param 1 'layer.bias'.*dtype"):
        lrfast.Adam([("layer.weight", np.ones(2)), ("layer.bias", np.ones(2, np.int64))])
    opt = lrfast.Adam(_named())
    with pytest.raises(ValueError, match="param 1 'layer.bias'.*shape"):
        opt.step([np.ones((3, 2)), np.ones(3)])
    with pytest.raises(TypeError, match="param 0 'layer.weight'"):
        opt.step([np.ones((3, 2), np.float32), np.ones(2)])
    sd = opt.state_dict()
    opt.step([np.ones((3, 2)), np.ones(2)])
    sd = opt.state_dict()
    sd["state"][1]["exp_avg"] = np.ones(5)
    with pytest.raises(ValueError, match="param 1 'layer.bias'"):
        opt.load_state_dict(sd)


def test_sparse_errors_name_the_param():
    opt = lrfast.SparseAdam([("emb", np.ones((4, 2)))])
    with pytest.raises(ValueError, match="param 0 'emb'.*out of range"):
        opt.step([lrfast.RowSparse([9], np.ones((1, 2)))])


def test_load_state_dict_checks_names():
    src = lrfast.Adam(_named(), lr=0.1)
    src.step([np.ones((3, 2)), np.ones(2)])
    sd = src.state_dict()
    swapped = lrfast.Adam([("layer.bias", np.zeros((3, 2))), ("layer.weight", np.zeros(2))])
    with pytest.raises(ValueError, match="names differ.*'layer.weight'.*'layer.bias'"):
        swapped.load_state_dict(sd)
    assert swapped.step_count == 0
    same = lrfast.Adam(_named())
    same.load_state_dict(sd)
    assert same.step_count == 1
    # an unnamed optimizer takes the saved names (as torch); an unnamed state_dict keeps ours
    plain = lrfast.Adam([np.zeros((3, 2)), np.zeros(2)])
    plain.load_state_dict(sd)
    assert plain.param_groups[0]["param_names"] == ["layer.weight", "layer.bias"]
    unnamed_sd = lrfast.Adam([np.zeros((3, 2)), np.zeros(2)]).state_dict()
    same.load_state_dict(unnamed_sd)
    assert same.param_groups[0]["param_names"] == ["layer.weight", "layer.bias"]
    bad = copy.deepcopy(sd)
    bad["param_groups"][0]["param_names"] = ["a"]
    with pytest.raises(ValueError, match="list of 2 names"):
        same.load_state_dict(bad)


def test_torch_accepts_the_same_and_writes_the_same_format():
    torch = pytest.importorskip("torch")
    w = torch.nn.Linear(2, 3)
    topt = torch.optim.Adam(w.named_parameters())
    tsd = topt.state_dict()
    opt = lrfast.Adam([(n, p.detach().numpy().copy()) for n, p in w.named_parameters()])
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == tsd["param_groups"][0]["param_names"]
    assert sd["param_groups"][0]["params"] == tsd["param_groups"][0]["params"]


def test_lbfgs_takes_names():
    x = np.array([-1.2, 1.0])
    opt = lrfast.LBFGS([("x", x)], max_iter=3)
    assert opt.param_groups[0]["param_names"] == ["x"]
    opt.step(lambda: (float(x @ x), [2 * x]))
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == ["x"]
    assert pickle.loads(pickle.dumps(opt)).param_groups[0]["param_names"] == ["x"]
    other = lrfast.LBFGS([("y", np.zeros(2))], max_iter=3)
    with pytest.raises(ValueError, match="names"):
        other.load_state_dict(sd)
    with pytest.raises(TypeError, match="param 0 'y'"):
        lrfast.LBFGS([("y", np.zeros(2, np.int32))])
