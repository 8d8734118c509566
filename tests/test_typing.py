"""PEP 561/484: the package ships ``py.typed`` and its public annotations resolve."""
import importlib
import os
import typing
from importlib.resources import files

import pytest

import lrfast
from lrfast import kernels, schedules


def test_py_typed_ships():
    assert os.path.isfile(os.path.join(os.path.dirname(lrfast.__file__), "py.typed"))
    assert (files("lrfast") / "py.typed").is_file()


def _public_callables():
    lbfgs = importlib.import_module("lrfast.lbfgs")
    newton = importlib.import_module("lrfast.newton")
    lr_finder = importlib.import_module("lrfast.lr_finder")
    line_search = importlib.import_module("lrfast.line_search")
    io = importlib.import_module("lrfast.io")
    out = [lrfast.Adam.__init__, lrfast.Adam.step, lrfast.kernels.adam_step,
           lrfast.schedules.CosineDecay.__init__, lrfast.save]
    for cls in (lrfast.SGD, lrfast.Adagrad, lrfast.Adadelta, lrfast.RMSprop, lrfast.AdamW,
                lrfast.Adamax, lrfast.NAdam, lrfast.RAdam, newton.DiagonalNewton):
        out.append(cls.__init__)
    opt = lrfast.Optimizer
    out += [opt.__init__, opt.step, opt.state_dict, opt.load_state_dict, opt.add_param_group,
            opt.zero_state]
    out += [getattr(opt, p).fget for p in ("lr", "step_count", "hyperparams", "params",
                                           "state", "max_grad_norm", "skip_nonfinite")]
    out += [getattr(kernels, name) for name in kernels.__all__]
    out += [io.save, io.load, io.read, io.to_torch_state_dict, io.from_torch_state_dict]
    out += [lrfast.grad_norm, lrfast.clip_grad_norm, lrfast.set_num_threads,
            lrfast.get_num_threads, lrfast.set_parallel_threshold,
            lrfast.get_parallel_threshold, lrfast.config, lrfast.show_config]
    out += [schedules.Schedule.__call__, schedules.Schedule.get_config,
            schedules.Schedule.from_config, schedules.Schedule.state_dict,
            schedules.Schedule.load_state_dict, schedules.Schedule.plot,
            schedules.serialize, schedules.deserialize, schedules.gallery,
            schedules.join_schedules, schedules.ReduceOnPlateau.step]
    for name in schedules.__all__:
        obj = getattr(schedules, name)
        if isinstance(obj, type) and obj is not schedules.Schedule:
            out.append(obj.__init__)
    out += [lr_finder.find_lr, lr_finder.LRFinderResult.plot, lr_finder.LRFinderResult]
    L = lbfgs.LBFGS
    out += [L.__init__, L.step, L.state_dict, L.load_state_dict, L.zero_state,
            L.add_param_group, L.lr.fget, L.state.fget]
    out += [newton.DiagonalNewton.step, newton.hutchinson_diag, newton.secant_diag]
    out += [line_search.strong_wolfe, line_search.backtracking_armijo,
            line_search.LineSearchResult.success.fget]
    return out


@pytest.mark.parametrize("fn", _public_callables(),
                         ids=lambda f: getattr(f, "__qualname__", repr(f)))
def test_type_hints_resolve(fn):
    hints = typing.get_type_hints(fn)
    assert hints, f"{fn!r} has no type hints"
    if not isinstance(fn, type):
        assert "return" in hints, f"{fn!r} has no return annotation"


def test_aliases_importable():
    from lrfast import _typing as T
    for name in T.__all__:
        assert getattr(T, name) is not None
