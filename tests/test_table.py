"""The optimizer table is the single source of truth: the kernels' named row
structs, the row plans, the classes' signatures and every list of optimizers
agree with it."""
import inspect
import itertools

import numpy as np
import pytest

import lrfast
from lrfast import _dispatch
from lrfast.optim import TABLE, optimizers
from lrfast.optim._rules import RULES, build_row
from lrfast.optim._table import REQUIRED, KINDS, cython_source

from _cases import CASES, NAMES


@pytest.mark.parametrize("isa", _dispatch.available_isas())
def test_compiled_structs_are_the_table_fields(isa):
    K = _dispatch.load(isa)
    assert set(K.KINDS) == set(KINDS)
    for name, kind in KINDS.items():
        assert K.ROW_FIELDS[name] == kind.row_fields
        # sizeof(struct) / sizeof(double): the compiled struct really has these fields
        assert K.ROW_SIZES[name] == len(kind.struct_fields)
        assert kind.row_fields[0] == "gs", "clipping scales field 0 of every row"


def _option_sets(name):
    """Every case of the parity tests, plus each bool option flipped and a
    nonzero weight decay: the plan must fill the same fields in every branch."""
    spec = TABLE[name]
    base = [dict(hp) for n, hp in CASES if n == name] or [{}]
    flags = [h.name for h in spec.hparams if h.check == "bool"]
    out = []
    for hp in base:
        for bits in itertools.product([False, True], repeat=len(flags)):
            trial = {**spec.defaults, **hp, **dict(zip(flags, bits)), "weight_decay": 0.01}
            try:
                RULES[name].check(trial, "")
            except ValueError:
                continue
            out.append(trial)
    return out


@pytest.mark.parametrize("name", [n for n, s in TABLE.items() if not s.own_step])
def test_row_plans_fill_exactly_their_struct_fields(name):
    kind = KINDS[TABLE[name].kind]
    rule = RULES[name]
    sets = _option_sets(name)
    assert sets
    for hp in sets:
        fixed, step = rule.plan(hp)
        assert set(fixed) == set(kind.fields), (name, sorted(fixed))
        key = rule.initial_key
        for _ in range(3):
            sv, key = step(key, hp["lr"])
            assert len(sv) == len(kind.step_fields)
            assert all(isinstance(v, float) for v in sv)
        row, _ = build_row(name, hp, rule.initial_key)
        assert len(row) == len(kind.row_fields)


def test_generated_cython_names_every_kind():
    src = cython_source()
    for kind in KINDS.values():
        assert f"K_{kind.name.upper()} =" in src["_table.pxi"]
        for f in kind.row_fields:
            assert f"    double {f}\n" in src["_table.pxi"]
        s3 = " s3," if kind.n_states > 3 else ""
        assert f"_{kind.name}(p, g, h, s0, s1, s2,{s3} n," in src["_table_dispatch.pxi"]


@pytest.mark.parametrize("name", optimizers())
def test_class_signature_and_defaults_come_from_the_table(name):
    spec = TABLE[name]
    cls = getattr(lrfast, name)
    assert cls.spec is spec
    sig = inspect.signature(cls)
    for h in spec.hparams:
        p = sig.parameters[h.name]
        assert p.default is h.default or p.default == h.default
        assert (p.kind is inspect.Parameter.KEYWORD_ONLY) == h.kwonly
    for opt_name in ("max_grad_norm", "clip_norm", "clip_value", "skip_nonfinite"):
        assert sig.parameters[opt_name].kind is inspect.Parameter.KEYWORD_ONLY
    # torch's positional order: lr first (DoG and LDoG: their reference's,
    # dog.DoG(params, reps_rel, lr, ...))
    assert list(sig.parameters)[1:3] == (["reps_rel", "lr"] if name in ("DoG", "LDoG")
                                         else ["lr", list(sig.parameters)[2]])
    required = {h.name: 0.1 for h in spec.hparams if h.default is REQUIRED}
    if required:                            # LARS's lr, as torch's `required`
        with pytest.raises(ValueError, match="no default lr"):
            cls([np.zeros((3, 2))])
    opt = cls([np.zeros((3, 2))], **required)    # 2-D: Muon takes matrices only
    assert opt.defaults == {**spec.defaults, **required}


def test_every_list_of_optimizers_derives_from_the_table():
    assert set(NAMES) == {s.name for s in TABLE.values() if s.twin and s.public}
    for name in optimizers():
        assert name in lrfast.__all__ and getattr(lrfast, name).spec is TABLE[name]
    assert {n for n, _ in CASES} == set(NAMES), "every optimizer has parity cases"


def test_distributed_support_comes_from_the_table():
    pytest.importorskip("mpi4py")
    from lrfast import distributed
    assert set(distributed._SUPPORTED) == {s.name for s in TABLE.values() if s.distributed}


def _sched_cases():
    out = []
    for name in NAMES:
        spec = TABLE[name]
        hp = dict(next(h for n, h in CASES if n == name))
        for h in spec.hparams:
            if h.schedulable and h.check != "bool" and not h.check.startswith("betas"):
                out.append((name, h.name, hp))
    return out


@pytest.mark.parametrize("name, key, hp", _sched_cases(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_any_numeric_hyperparameter_may_be_a_schedule(name, key, hp):
    """Every numeric hyperparameter the table marks schedulable (eps, alpha,
    rho, lr_decay, momentum_decay, dampening, ... as Optax's inject_hyperparams
    allows) accepts a schedule; a schedule that returns the static value gives
    the same bits, and one that changes is used from its step on."""
    cls = getattr(lrfast, name)
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(50)
    grads = [rng.standard_normal(50) for _ in range(6)]
    full = {**TABLE[name].defaults, **hp}
    v = full[key]
    a, b = p0.copy(), p0.copy()
    oa = cls([a], **hp)
    ob = cls([b], **{**hp, key: (lambda n, v=v: v)})
    for g in grads:
        oa.step([g])
        ob.step([g])
    np.testing.assert_array_equal(a, b)
    assert ob.hyperparams[0][key] == v
    sd = ob.state_dict()
    assert sd["param_groups"][0]["schedules"][key]["class"] == "callable"
