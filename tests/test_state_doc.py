"""docs/state_dict.md cannot go stale: its per-optimizer table lists every
optimizer of lrfast.optim.TABLE with exactly its state names, and the entries
a real optimizer writes (every option on) are the ones the table names."""
import pathlib
import re

import numpy as np
import pytest

import lrfast
from lrfast.optim import TABLE

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "state_dict.md"
ALL_ON = {"SGD": {"momentum": 0.9}, "RMSprop": {"momentum": 0.9, "centered": True},
          "Adam": {"amsgrad": True}, "AdamW": {"amsgrad": True}}


def _names(cell):
    return [] if cell.strip() == "none" else re.findall(r"`([^`]+)`", cell)


def doc_table():
    """{optimizer: (state arrays, other entries)} from the doc's table."""
    rows = {}
    text = DOC.read_text()
    section = text.split("## Per-param state", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        m = re.match(r"\|\s*`(\w+)`\s*\|(.*)\|(.*)\|\s*$", line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} listed twice"
            rows[m.group(1)] = (_names(m.group(2)), _names(m.group(3)))
    return rows


def test_doc_lists_every_optimizer_with_its_states():
    rows = doc_table()
    assert sorted(rows) == sorted(TABLE)
    for name, spec in TABLE.items():
        assert rows[name][0] == list(spec.states), name
        assert ("step" in rows[name][1]) == spec.has_step, name


@pytest.mark.parametrize("name", sorted(n for n, s in TABLE.items() if not s.own_step))
def test_written_entries_are_the_documented_ones(name):
    arrays, other = doc_table()[name]
    p = [np.ones(3), np.ones((2, 2), np.float32)]
    cls = getattr(lrfast, name)
    opt = cls(p, **ALL_ON.get(name, {}), **({"lr": 0.1} if name == "LARS" else {}))
    grads = [np.full_like(a, 0.5) for a in p]
    if name == "DiagonalNewton":
        opt.step(grads, [np.ones_like(a) for a in p])
    elif name == "SparseAdam":
        opt.step([lrfast.RowSparse([0, 1], g[:2]) for g in grads])
    else:
        opt.step(grads)
    sd = opt.state_dict()
    assert sd["format"] == "lrfast.optim/1" and sd["optimizer"] == name
    for i, a in enumerate(p):
        e = sd["state"][i]
        assert set(e) == set(arrays) | set(other), (name, sorted(e))
        for k in arrays:
            assert e[k].shape == a.shape and e[k].dtype == a.dtype
        if "step" in e:
            assert e["step"] == 1 and type(e["step"]) is int
    mode = {"train_mode"} if name.startswith("ScheduleFree") else set()
    assert set(sd["param_groups"][0]) == {"params"} | set(TABLE[name].defaults) | mode


def test_lbfgs_entry_is_the_documented_one():
    text = DOC.read_text().split("## L-BFGS", 1)[1].split("\n## ", 1)[0]
    keys = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    x = np.array([-1.2, 1.0])
    opt = lrfast.LBFGS([x], max_iter=3)
    opt.step(lambda: (float(x @ x), [2 * x]))
    assert sorted(keys) == sorted(opt.state_dict()["state"][0])


def test_own_step_entries_are_the_documented_ones():
    """Adafactor's factored entries (ndim >= 2) and vector entry; Muon's buffer."""
    arrays, other = doc_table()["Adafactor"]
    p = [np.ones(3), np.ones((2, 4), np.float32)]
    opt = lrfast.Adafactor(p)
    opt.step([np.full_like(a, 0.5) for a in p])
    st = opt.state_dict()["state"]
    assert set(st[0]) == {"variance"} | set(other) and st[0]["variance"].shape == (3,)
    assert set(st[1]) == {"row_var", "col_var"} | set(other)
    assert st[1]["row_var"].shape == (2, 1) and st[1]["col_var"].shape == (1, 4)
    assert set(arrays) == {"row_var", "col_var", "variance"}
    arrays, other = doc_table()["Muon"]
    opt = lrfast.Muon([np.ones((2, 3))])
    opt.step([np.full((2, 3), 0.5)])
    e = opt.state_dict()["state"][0]
    assert set(e) == set(arrays) | set(other) and e["momentum_buffer"].shape == (2, 3)
