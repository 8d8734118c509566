"""The optimizer base: param groups, compiled group plans, the per-step path,
state and resume.

Each optimizer validates its params once, allocates its state, and builds one
:class:`Engine` (a prebuilt task list over all tensors). Each param group is
compiled once into a :class:`GroupPlan` (rebuilt only when the group changes
through the validated API). ``step(grads)`` evaluates only the scheduled
values (each checked once), builds one scalar row per group and distinct
per-param step key, and makes ONE call into the kernels, which validate the
grads and walk all tensors with the GIL released.
"""
from __future__ import annotations

import copy
import re
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .. import schedules as _schedules
from .._dispatch import kernels as _K
from .._typing import Array, Betas, Grads, Hyper, ParamsLike
from .._validate import (check_param, check_value, is_bool, is_schedule,
                         optional_positive, real, schedule_value, state_array, step_count)
from .._optimizer_base import FORMAT, OptimizerBase, check_header, schedule_restore
from . import _sparse as _sp
from ._lowp import Precision
from ._rules import RULES, Rule, distinct_keys
from ._table import KINDS, REQUIRED, Spec

__all__ = ["Optimizer", "ParamGroup", "GroupPlan", "FORMAT", "parse_groups", "check_header",
           "state_index"]

def _name(fn):
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _serialize(fn):
    """{"class", "config", "state"} of an lrfast schedule; a plain callable is
    recorded by name only."""
    if hasattr(fn, "get_config"):
        return _schedules.serialize(fn)
    return {"class": "callable", "name": _name(fn)}


def parse_groups(params: Any) -> List[Dict[str, Any]]:
    """``params`` as torch takes them (a list of arrays, or of group dicts) ->
    a list of group dicts. Raises a clear error for anything else."""
    if isinstance(params, np.ndarray):
        raise TypeError("params must be a list of arrays (or of dicts), got a single "
                        "ndarray: wrap it in a list")
    if isinstance(params, dict):
        params = [params]
    if params is None or isinstance(params, (str, bytes)):
        raise TypeError(f"params must be a list of arrays or of dicts, got {params!r}")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"params must be a list of arrays or of dicts, got "
                        f"{type(params).__name__}") from None
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    if all(isinstance(p, dict) for p in params):
        return params
    if any(isinstance(p, dict) for p in params):
        raise TypeError("params must be all arrays (or (name, array) pairs) or all dicts "
                        "(parameter groups)")
    return [{"params": params}]


def split_names(plist: List[Any], where: str) -> Tuple[List[Any], Optional[List[str]]]:
    """A group's params as given -> (arrays, names or None). ``(name, array)``
    pairs (torch's ``named_parameters()``) give names; a group must be all
    named or all unnamed."""
    named = [isinstance(p, tuple) for p in plist]
    if not any(named):
        return plist, None
    if not all(named):
        raise ValueError(f"{where}: all params must be with names ((name, array) pairs) or "
                         "all without; some param names are missing")
    arrays, names = [], []
    for j, t in enumerate(plist):
        if len(t) != 2:
            raise TypeError(f"{where}: a named param is a (name, array) pair, got a tuple of "
                            f"{len(t)} items at position {j}")
        if not isinstance(t[0], str):
            raise TypeError(f"{where}: a param name must be a str, got "
                            f"{type(t[0]).__name__} at position {j}")
        names.append(t[0])
        arrays.append(t[1])
    return arrays, names


def check_names(saved: Any, n: int, gi: int) -> List[str]:
    """A state_dict group's ``param_names``, validated: n strings."""
    if (not isinstance(saved, (list, tuple)) or len(saved) != n
            or not all(isinstance(x, str) for x in saved)):
        raise ValueError(f"group {gi}: state_dict 'param_names' must be a list of {n} "
                         f"names (strings), got {saved!r}")
    return list(saved)


def state_index(i, n):
    """A state_dict['state'] key (int, or digits after a JSON round trip) as an
    index into n params; raises ValueError otherwise."""
    if isinstance(i, str) and i.isascii() and i.isdigit():
        i = int(i)
    if is_bool(i) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
        raise ValueError(f"state_dict['state'] has an entry for param {i!r}; the optimizer "
                         f"has {n} params (keys are param indices 0..{n - 1})")
    return int(i)


# ---------------------------------------------------------------------------
# Param groups: dicts whose every mutation is validated, or refused.
# ---------------------------------------------------------------------------
class _FrozenList(list):
    """A list whose in-place mutations raise ``TypeError(_why)``; it pickles and
    copies as a plain list."""

    _why = ""

    def _refuse(self, *a, **k):
        raise TypeError(self._why)

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce__(self):
        return (list, (list(self),))

    def __deepcopy__(self, memo):
        return list(self)


class ParamList(_FrozenList):
    """A group's params: read-only (add params with ``add_param_group``)."""

    _why = ("a param group's 'params' cannot be changed in place (the optimizer compiled its "
            "state and task list for them); use opt.add_param_group({'params': [...]}) or "
            "build a new optimizer")


class GroupList(_FrozenList):
    """``opt.param_groups``: the groups may be changed key by key, not replaced."""

    _why = ("param_groups cannot be replaced, reordered or removed; change a hyperparameter "
            "with opt.param_groups[i][key] = value, or add a group with opt.add_param_group")

    def __setitem__(self, i, g):
        if not (isinstance(i, int) and list.__getitem__(self, i) is g):   # pg |= {...} stores back
            self._refuse()

    def _append(self, g):
        list.append(self, g)


class ParamGroup(dict):
    """A parameter group: a dict that validates hyperparameters when they are set
    (``opt.param_groups[0]["lr"] = 0.1`` works as in torch, and is checked; the
    next step uses it). Removing keys or changing 'params' is refused."""

    __slots__ = ("_ref", "_index")

    def _owner(self):
        ref = getattr(self, "_ref", None)
        return ref() if ref is not None else None

    def _bind(self, opt, index):
        self._ref = weakref.ref(opt)        # no reference cycle with the optimizer
        self._index = index

    def __setitem__(self, key, value):
        self.update({key: value})

    def update(self, *args, **kw):
        changes = dict(*args, **kw)
        opt = self._owner()
        if opt is None:
            dict.update(self, changes)
            return
        if "params" in changes or "param_names" in changes:
            raise ValueError("param_groups[i]['params'] and ['param_names'] cannot be "
                             "reassigned; use add_param_group or a new optimizer")
        unknown = [k for k in changes if k not in self]
        if unknown:
            raise ValueError(f"{type(opt).__name__}: unknown hyperparameter(s) "
                             f"{sorted(map(str, unknown))} (known: "
                             f"{sorted(k for k in self if k not in ('params', 'param_names'))})")
        trial = dict(self)
        trial.update(changes)
        opt._enter("param_groups")   # validation runs schedules: user code, guarded
        try:
            commit = opt._check_group_change(self._index, trial)  # raises: nothing changes
            dict.update(self, changes)
            commit()
        finally:
            opt._exit()

    def __ior__(self, other):  # type: ignore[misc,override]
        self.update(other)
        return self

    def setdefault(self, key, default=None):
        if key in self:
            return self[key]
        self.update({key: default})          # unknown key: refused
        return self[key]

    def _refuse(self, *a, **k):
        if self._owner() is None:
            raise TypeError("cannot remove keys from a param group")
        raise TypeError("a param group's keys cannot be removed (every hyperparameter "
                        "is needed by the next step); set a new value instead")

    __delitem__ = pop = popitem = clear = _refuse

    def __reduce__(self):
        return (dict, (dict(self),))

    def __copy__(self):
        return dict(self)

    def __deepcopy__(self, memo):
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}


# ---------------------------------------------------------------------------
# Group plans
# ---------------------------------------------------------------------------
class GroupPlan:
    """A compiled param group: its static values, its schedules, and (when
    only lr or nothing is scheduled) its kernel row plan, built once.

    ``fixed`` is the row's fixed part (a tuple in the kind's field order) and
    ``step(key, lr)`` its per-step part; ``lr`` is the static lr or None with
    ``lr_fn`` its schedule; ``others`` lists the other scheduled values
    ``(name, index or None, schedule, check)``, re-planned every step.
    """
    __slots__ = ("static", "lr", "lr_fn", "lr_call", "others", "fixed", "step", "where")

    def __init__(self, static, lr, lr_fn, others, fixed, step, where):
        self.static = static
        self.lr = lr
        self.lr_fn = lr_fn
        # lrfast schedules evaluate an int step directly (their __call__ only dispatches)
        self.lr_call = (lr_fn._scalar if isinstance(lr_fn, _schedules.Schedule)
                        else lr_fn)
        self.others = others
        self.fixed = fixed
        self.step = step
        self.where = where

    def schedules(self):
        """[(name, index, fn)] of every scheduled value."""
        out = [("lr", None, self.lr_fn)] if self.lr_fn is not None else []
        return out + [(k, i, fn) for k, i, fn, _ in self.others]


def _tensor_state_names(spec: Spec) -> Tuple[str, ...]:
    """The engine-held per-tensor scalars of ``spec``'s kernel (NovoGrad's nu)."""
    kind = KINDS.get(spec.kind)            # own-step optimizers have no engine kind
    return kind.tensor_state if kind is not None else ()


def _global_state_names(spec: Spec) -> Tuple[str, ...]:
    """The engine-held scalars of a global kind, per group (Prodigy's d, d_max,
    d_numerator, k: group 0's, one set per optimizer; DoG's rbar, G, eta),
    recorded in the state entry of every param of the group."""
    kind = KINDS.get(spec.kind)
    return kind.global_state if kind is not None else ()


def _spec_checks(spec: Spec) -> Dict[str, str]:
    return {h.name: h.check for h in spec.hparams}


class Optimizer(OptimizerBase):
    """Base class of every lrfast optimizer: param groups, validation, per-step
    rows, state, resume. An optimizer is its table row (``spec``) and rule;
    subclasses are a docstring and a name."""

    spec: Spec
    _rule: Rule
    _kind: int
    _aux_name = "auxiliary input"
    _sparse_ok = False
    _sparse_only = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            cls._rule = RULES[spec.name]
            cls._kind = _K.KINDS[spec.kind]
            cls._sparse_ok = spec.sparse is not None       # takes RowSparse grads
            cls._sparse_only = spec.sparse == "only"       # and no dense ones (SparseAdam)

    def __init__(self, params: ParamsLike, defaults: Optional[Dict[str, Any]] = None, *,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False,
                 clip_norm: Optional[float] = None, clip_value: Optional[float] = None,
                 state_dtype: Optional[str] = None, master_weights: bool = False,
                 stochastic_rounding: bool = False, seed: int = 0) -> None:
        if defaults is None:
            defaults = dict(self.spec.defaults)
        self._lp = Precision(type(self).__name__, KINDS.get(self.spec.kind, _NO_KIND),
                             state_dtype, master_weights, stochastic_rounding, seed)
        if self._lp.qmaps and self.spec.sparse == "only":
            self._lp.qmaps = ()
        self.defaults = dict(defaults)
        self._max_grad_norm: Optional[float] = None
        self._clip_norm: Optional[float] = None
        self._clip_value: Optional[float] = None
        self._max_norm = self._cnorm = self._cvalue = 0.0
        self.max_grad_norm = max_grad_norm
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.skip_nonfinite = skip_nonfinite
        self._init_base()
        self._param_groups = GroupList()
        self._plans: List[GroupPlan] = []
        self._params: List[Array] = []
        self._names: List[Optional[str]] = []   # per param: its name, or None (unnamed)
        self._group_of: List[int] = []
        self._states: Any = []             # per param, its state arrays
        self._ukeys: List[List[Any]] = []   # per group: its distinct step keys
        self._cls: List[int] = []           # per param: index of its key in its group's list
        self._uniform = True                # every group has one key: rows by group
        self.last_grad_norm = float("nan")
        for g in parse_groups(params):
            self._add_group(g, build=False)
        self._build()

    # ------------------------------------------------------------ properties
    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        """The groups (dicts, as torch's): ``opt.param_groups[i][key] = value``
        is validated and used by the next step."""
        return self._param_groups

    @param_groups.setter
    def param_groups(self, v):
        raise TypeError("param_groups cannot be replaced; change values with "
                        "opt.param_groups[i][key] = value, or add a group with "
                        "opt.add_param_group")

    @property
    def master_params(self) -> List[Optional[Array]]:
        """The float32 master copies of the 16-bit params (``master_weights=True``),
        in param order (None for a param without one). The step updates them and
        rounds each param from its master to nearest even."""
        if self.released:
            raise RuntimeError(_Released._msg)
        return list(self._lp.master)

    @property
    def max_grad_norm(self) -> Optional[float]:
        """Clip the global grad norm to this value before each step (None: off)."""
        return self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, v: Optional[float]) -> None:
        optional_positive(v, "max_grad_norm")
        self._one_clipping("max_grad_norm", v)
        self._max_grad_norm = v
        self._max_norm = 0.0 if v is None else float(v)

    @property
    def clip_norm(self) -> Optional[float]:
        """Clip each grad's own L2 norm to this value, as Keras ``clipnorm``:
        ``g * c / max(||g||, c)`` per tensor, no epsilon (None: off)."""
        return self._clip_norm

    @clip_norm.setter
    def clip_norm(self, v: Optional[float]) -> None:
        optional_positive(v, "clip_norm")
        self._one_clipping("clip_norm", v)
        self._clip_norm = v
        self._cnorm = 0.0 if v is None else float(v)

    @property
    def clip_value(self) -> Optional[float]:
        """Clip each grad element to ``[-c, c]``, as
        ``torch.nn.utils.clip_grad_value_`` and Keras ``clipvalue`` (None: off).
        ``skip_nonfinite`` looks at the grads before clipping."""
        return self._clip_value

    @clip_value.setter
    def clip_value(self, v: Optional[float]) -> None:
        optional_positive(v, "clip_value")
        self._one_clipping("clip_value", v)
        self._clip_value = v
        self._cvalue = 0.0 if v is None else float(v)

    def _one_clipping(self, name: str, v: Optional[float]) -> None:
        # as Keras: at most one of the three clippings (their order would be a choice)
        if v is None:
            return
        for other in ("max_grad_norm", "clip_norm", "clip_value"):
            if other != name and getattr(self, "_" + other) is not None:
                raise ValueError(f"{name} and {other} cannot both be set (at most one of "
                                 "max_grad_norm, clip_norm and clip_value, as Keras)")

    @property
    def skip_nonfinite(self) -> bool:
        """Skip (write nothing, count in ``skipped_steps``) steps whose grads hold NaN/inf."""
        return self._skip

    @skip_nonfinite.setter
    def skip_nonfinite(self, v: bool) -> None:
        if not is_bool(v):
            raise TypeError(f"skip_nonfinite must be a bool, got {v!r}")
        self._skip = bool(v)

    # ------------------------------------------------------------------ setup
    def _add_group(self, group, build=True):
        gi = len(self._param_groups)
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"group {gi}: a parameter group is a dict with a 'params' list")
        plist = group["params"]
        if isinstance(plist, np.ndarray):
            plist = [plist]
        if plist is None or isinstance(plist, (str, bytes, dict)):
            raise TypeError(f"group {gi}: 'params' must be a list of arrays, got {plist!r}")
        try:
            plist = list(plist)
        except TypeError:
            raise TypeError(f"group {gi}: 'params' must be a list of arrays, got "
                            f"{type(plist).__name__}") from None
        plist, names = split_names(plist, f"group {gi}")
        if gi and (names is None) != (self._names[0] is None if self._names else True):
            raise ValueError(f"group {gi}: all param groups must be with names or all "
                             f"without; cannot add a group {'with' if names else 'without'} "
                             "names to this optimizer")
        unknown = set(group) - set(self.defaults) - {"params", "param_names"}
        if unknown:
            raise ValueError(f"group {gi}: unknown hyperparameter(s) {sorted(map(str, unknown))} "
                             f"for {type(self).__name__}")
        full = {k: group.get(k, v) for k, v in self.defaults.items()}
        for k, v in full.items():
            if v is REQUIRED:                # as torch's `required` (LARS's lr)
                raise ValueError(f"group {gi}: {type(self).__name__} has no default {k}; "
                                 f"give {k}= to the optimizer or to every group")
        base = len(self._params)
        for j, p in enumerate(plist):
            check_param(p, f"group {gi}, param {base + j}"
                        + (f" {names[j]!r}" if names else ""), half=True)
        self._lp.check_supported(plist, f"group {gi}: ")
        plan = self._compile_group(full, gi)
        full = plan.static
        pg = ParamGroup(params=ParamList(plist), **full)
        if names is not None:
            dict.__setitem__(pg, "param_names", ParamList(names))
        try:
            states = [self._lp.add(p, self._rule.alloc(self._lp.template(p), full))
                      for p in plist]
        except BaseException:
            self._lp.truncate(base)
            raise
        # Everything is valid: commit.
        pg._bind(self, gi)
        self._param_groups._append(pg)
        self._plans.append(plan)
        self._params.extend(plist)
        self._names.extend(names if names is not None else [None] * len(plist))
        self._group_of.extend([gi] * len(plist))
        self._states.extend(states)
        self._ukeys.append([self._rule.initial_key])
        self._cls.extend([0] * len(plist))
        if build:
            try:
                self._build()
            except Exception:
                list.pop(self._param_groups)
                del self._plans[-1], self._ukeys[-1]
                del self._params[base:], self._group_of[base:], self._states[base:]
                del self._names[base:]
                del self._cls[base:]
                self._lp.truncate(base)
                self._build()
                raise

    def _check_group_change(self, gi, trial):
        """Validate group ``gi`` with new values; return the commit."""
        plan = self._compile_group(trial, gi)
        self._check_slots(plan.static, gi)

        def commit():
            self._plans[gi] = plan
            for k, v in plan.static.items():         # normalized values (betas as a tuple)
                dict.__setitem__(self._param_groups[gi], k, v)
        return commit

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group (a dict with 'params' and optional hyperparameters), as torch."""
        self._enter("add_param_group")
        try:
            self._add_group(param_group, build=True)
            self._sync_row_map()
        finally:
            self._exit()

    def _build(self):
        old = self.__dict__.get("_engine")
        self._engine = _K.Engine(self._kind, self._params, self._states, self._group_of,
                                 aux_name=self._aux_name,
                                 lowp=self._lp.engine_args() if self._lp.active else None)
        if _global_state_names(self.spec):    # a global kind: its state survives a rebuild
            # (a group the old engine lacks reads zeros: DoG's fresh state; Prodigy
            # reads group 0's only)
            self._reset_global({gi: old.global_state(gi) for gi in range(len(self._plans))}
                               if hasattr(old, "global_state") else {})
        if _tensor_state_names(self.spec) and hasattr(old, "tensor_state"):
            # per-tensor scalars (NovoGrad's nu, LDoG's) survive a rebuild too: the
            # params keep their order, add_param_group only appends
            for i, ts in enumerate(old.tensor_state()[:len(self._params)]):
                self._engine.set_tensor_state(i, ts)
        self._n = len(self._params)
        self._uniform = True

    def release_state(self) -> None:
        """Drop this optimizer's state and engine (a wrapper that shards the
        state took it over); any later use raises a clear RuntimeError."""
        self._states = _Released()
        self._engine = _Released()
        # the master copies and 8-bit absmax arrays are state too (sharded now)
        lp = self._lp
        lp.master = [None] * len(lp.master)
        lp.amax = [[None] * len(a) for a in lp.amax]

    def _compile_group(self, group, gi) -> GroupPlan:
        """Validate a group's values (static ones against the table's ranges,
        schedules at the current step) and compile its plan."""
        where = f"group {gi}: "
        checks = _spec_checks(self.spec)
        static: Dict[str, Any] = {}
        others: List[Tuple[str, Optional[int], Any, str]] = []
        lr_fn = None
        for k in self.defaults:
            v, check = group[k], checks[k]
            sched = is_schedule(v)
            if sched and check in ("betas", "betas3"):
                raise TypeError(f"{where}give betas as a {'pair' if check == 'betas' else 'triple'}"
                                " whose items may be schedules")
            if sched:
                if not self._schedulable(k):
                    raise TypeError(f"{where}{k} cannot be a schedule (it is used when the "
                                    "state is allocated)")
                if k == "lr":
                    lr_fn = v
                else:
                    others.append((k, None, v, check))
                static[k] = v
                continue
            static[k] = v = check_value(v, k, check, where)
            if check in ("betas", "betas3"):
                others += [(k, i, b, "unit_open") for i, b in enumerate(v) if is_schedule(b)]
        plan = GroupPlan(static, None if lr_fn else static["lr"], lr_fn, others, None, None,
                         where)
        hp = self._values(plan, self._step_count)        # checks every schedule once
        self._rule.check(hp, where)
        if not others:
            fixed, plan.step = self._rule.plan(hp)
            plan.fixed = self._pack(fixed)
        return plan

    def _schedulable(self, k):
        for h in self.spec.hparams:
            if h.name == k:
                return h.schedulable and h.check != "bool"
        return False

    def _pack(self, fixed: Dict[str, float]) -> Tuple[float, ...]:
        """The fixed fields in the kind's order; exactly the kind's fields."""
        kind = KINDS[self.spec.kind]
        if set(fixed) != set(kind.fields):
            raise AssertionError(f"{self.spec.name}: row plan fills {sorted(fixed)}, the "
                                 f"kernel reads {sorted(kind.fields)}")
        return tuple(float(fixed[f]) for f in kind.fields)

    def _values(self, plan: GroupPlan, n: int) -> Dict[str, Any]:
        """The hyperparameters at step n (schedules evaluated and checked)."""
        if plan.lr_fn is None and not plan.others:
            return plan.static
        hp = dict(plan.static)
        if plan.lr_fn is not None:
            hp["lr"] = schedule_value(plan.lr_fn, n, "lr", "ge0", plan.where)
        for k, i, fn, check in plan.others:
            v = schedule_value(fn, n, k if i is None else f"{k}[{i}]", check, plan.where)
            if i is None:
                hp[k] = v
            else:
                b = list(hp[k])
                b[i] = v
                hp[k] = tuple(b)
        return hp

    def _check_slots(self, static, gi):
        # A change to an existing group (param_groups[i][k] = v, load_state_dict)
        # must not switch on an option whose state was never allocated (amsgrad,
        # momentum, centered): the kernel would write through a NULL pointer.
        need = {}
        for i in range(len(self._params)):
            if self._group_of[i] != gi:
                continue
            dt = self._params[i].dtype
            if dt not in need:
                need[dt] = self._rule.alloc(np.empty(0, dt), static)
            for name, want, have in zip(self.spec.states, need[dt], self._states[i]):
                if want is not None and have is None:
                    raise ValueError(f"{self._where(i)}: these hyperparameters need "
                                     f"optimizer state {name!r}, which was not allocated "
                                     "(the optimizer was built with that option off); "
                                     "build a new optimizer with it on")

    # ------------------------------------------------------------------- step
    def step(self, grads: Grads, _aux: Optional[Grads] = None, *,
             _norm_hook: Optional[Callable[[float, bool], Tuple[float, bool]]] = None,
             _ema: float = -1.0, _sums_hook: Optional[Callable[..., None]] = None) -> bool:
        """Apply one update to every param that has a grad.

        Parameters
        ----------
        grads : list of ndarray or None
            One per param, in the order the params were given (groups
            flattened in order); same shape, dtype and layout as its param.
            ``None`` skips that param for this step (its state and step count
            stay as they are). Grads are never modified.

        Returns
        -------
        bool
            False if the step was skipped (``skip_nonfinite`` and a grad held
            NaN/inf); nothing was written then.
        """
        self._enter()
        try:
            n = self._step_count
            rows, new_keys = [], []
            for plan, ukeys in zip(self._plans, self._ukeys):
                if plan.others:
                    hp = self._values(plan, n)
                    self._rule.check(hp, plan.where)
                    named, stepfn = self._rule.plan(hp)
                    fixed = self._pack(named)
                    lr = hp["lr"]
                else:
                    fixed, stepfn = plan.fixed, plan.step
                    lr = plan.lr if plan.lr_fn is None else schedule_value(
                        plan.lr_call, n, "lr", "ge0", plan.where)
                nk = []
                for key in ukeys:
                    sv, k2 = stepfn(key, lr)
                    rows.append(fixed + sv)
                    nk.append(k2)
                new_keys.append(nk)
            if self._sparse_only:
                _sp.refuse_dense(self, grads)
            if self._sparse_ok and _ema < 0.0 and _sp.has_rowsparse(grads):
                # straight to the sparse path (the engine would refuse the grads)
                return _sp.sparse_step(self, grads, rows, new_keys, n, _aux, _norm_hook)
            try:
                na, applied, norm = self._engine.step(grads, rows, max_norm=self._max_norm,
                                                      skip_nonfinite=self._skip, aux=_aux,
                                                      norm_hook=_norm_hook,
                                                      clip_norm=self._cnorm,
                                                      clip_value=self._cvalue, ema=_ema,
                                                      sr_step=n, sums_hook=_sums_hook)
            except (TypeError, ValueError) as e:
                if _ema >= 0.0 and _sp.has_rowsparse(grads):
                    raise ValueError("lrfast.EMA does not take RowSparse grads (the "
                                     "average is blended in the dense engine pass)") from None
                return self._step_error(e, grads, rows, new_keys, n, _aux, _norm_hook)
            self.last_grad_norm = norm
            if not applied:
                self.skipped_steps += 1
                return False
            if na == self._n:
                self._ukeys = new_keys
            else:
                self._advance_partial(self._engine.active(), new_keys)
            self._step_count = n + 1
            return True
        finally:
            self._exit()

    def _step_error(self, e, grads, rows, new_keys, n, aux, norm_hook):
        """The engine refused the grads: step RowSparse ones (which the engine
        does not take) on the sparse path, or raise ``e`` naming the param."""
        if isinstance(e, TypeError) and _sp.has_rowsparse(grads):
            if self._sparse_ok:
                return _sp.sparse_step(self, grads, rows, new_keys, n, aux, norm_hook)
            _sp.refuse(self, grads)
        raise self._named_error(e) from None

    def _where(self, i: int) -> str:
        """How errors name param i: its group, index and (if given) name."""
        name = self._names[i]
        return (f"group {self._group_of[i]}, param {i}"
                + ("" if name is None else f" {name!r}"))

    def _named_error(self, e: Exception) -> Exception:
        """``e`` with each "group G, param I" of its message followed by that
        param's name (an error of the kernels, which know indices only)."""
        if not self._names or self._names[0] is None:
            return e
        msg = _PARAM_RE.sub(lambda m: self._where(int(m.group(2)))
                            if int(m.group(2)) < self._n else m.group(0), str(e))
        try:
            return type(e)(msg)
        except Exception:
            return e


    def _step(self, grads, aux=None, norm_hook=None, ema=-1.0, sums_hook=None):
        """``step`` with the engine's hooks: ``aux`` (a second input per param),
        ``norm_hook`` (see ``Engine.step``: a sharded wrapper makes the norm
        global there), ``ema`` (lrfast.EMA's blend weight) and ``sums_hook``
        (see ``Engine.step``: a sharded wrapper makes per-tensor and global
        sums whole across ranks there)."""
        return Optimizer.step(self, grads, aux, _norm_hook=norm_hook, _ema=ema,
                              _sums_hook=sums_hook)

    def _advance_partial(self, active, new_keys):
        """Some grads were None: those params keep their keys. Re-derive each
        group's distinct keys (O(params), only on such a step)."""
        keys = [new_keys[g][c] if active[i] else self._ukeys[g][c]
                for i, (g, c) in enumerate(zip(self._group_of, self._cls))]
        self._set_keys(keys)

    def _set_keys(self, keys):
        """Per-param keys -> per group distinct keys and each param's class."""
        ukeys, cls = distinct_keys(keys, self._group_of, len(self._plans),
                                   self._rule.initial_key)
        self._ukeys, self._cls = ukeys, cls
        self._sync_row_map()

    def _sync_row_map(self):
        uniform = all(len(u) == 1 for u in self._ukeys)
        if uniform:
            if not self._uniform:
                self._engine.set_row_map(None)
        else:
            off, o = [], 0
            for u in self._ukeys:
                off.append(o)
                o += len(u)
            self._engine.set_row_map([off[g] + c for g, c in zip(self._group_of, self._cls)])
        self._uniform = uniform

    # ----------------------------------------------------------------- hooks
    def _hyperparams(self) -> List[Dict[str, Any]]:
        return [dict(self._values(p, self._step_count)) for p in self._plans]

    @property
    def released(self) -> bool:
        """True once ``release_state`` handed the state to a wrapper."""
        return isinstance(self.__dict__.get("_engine"), _Released)

    def _key_of(self, i):
        return self._ukeys[self._group_of[i]][self._cls[i]]

    def _state_entries(self, copy: bool) -> Dict[int, Dict[str, Any]]:
        out = {}
        for i in range(self._n):
            e = self._state_entry(i, copy=copy)
            if e is not None:
                out[i] = e
        return out

    def _state_entry(self, i, copy=True):
        key = self._key_of(i)
        rule = self._rule
        if key == rule.initial_key:
            return None
        if not self.spec.has_step:            # SGD: the momentum buffer, once started
            a = self._states[i][0]
            if not key[1] or a is None:
                e0: Dict[str, Any] = {"momentum_buffer": None}
            else:
                e0 = {"momentum_buffer": a.copy() if copy else a}
            if self._lp.active:
                self._lp.entry(i, e0, self.spec.states, copy)
            return e0
        e: Dict[str, Any] = {"step": rule.t_of(key)}
        for name, a in zip(self.spec.states, self._states[i]):
            if a is not None:
                e[name] = a.copy() if copy else a
        if self._lp.active:
            self._lp.entry(i, e, self.spec.states, copy)
        tnames = _tensor_state_names(self.spec)
        if tnames:                            # engine-held, one number per tensor
            e.update(zip(tnames, self._engine.tensor_state()[i]))
        if _global_state_names(self.spec):    # engine-held, one set per optimizer
            g = 0 if rule.global_shared else self._group_of[i]
            e.update(rule.global_entry(self._engine.global_state(g)))
        rule.entry_extra(e, key)
        return e

    # ------------------------------------------------------------ state dict
    def _fresh(self, i: int) -> List[Any]:
        """Param i's fresh state, as ``(stored array, absmax)`` per slot."""
        p = self._params[i]
        fresh = self._rule.alloc(self._lp.template(p, i), self._plans[self._group_of[i]].static)
        return [self._lp.encode(f, x) if x is not None else None
                for f, x in zip(self._lp.sfmt[i], fresh)]

    def _assign(self, i: int, sources: List[Any]) -> None:
        """Write ``(array, absmax)`` sources (None: zeros) into param i's state."""
        for j, (a, src) in enumerate(zip(self._states[i], sources)):
            if a is not None:
                self._lp.assign(i, j, a, src if src is not None else (0, None))

    def _clear_state(self) -> None:
        for i in range(self._n):
            self._assign(i, self._fresh(i))
            m = self._lp.master[i]
            if m is not None:
                m[...] = self._lp.template(self._params[i])
        self._set_tensor_state({})
        self._reset_global({})
        self._set_keys([self._rule.initial_key] * self._n)

    def _set_tensor_state(self, values: Dict[int, Tuple[float, ...]]) -> None:
        """Per-tensor scalars (NovoGrad's nu) of each param: ``values[i]``, else 0."""
        tnames = _tensor_state_names(self.spec)
        if tnames:
            for i in range(self._n):
                self._engine.set_tensor_state(i, values.get(i, (0.0,) * len(tnames)))

    def _saved_groups(self) -> List[Dict[str, Any]]:
        groups, start = [], 0
        for gi, pg in enumerate(self._param_groups):
            plan = self._plans[gi]
            g: Dict[str, Any] = {"params": list(range(start, start + len(pg["params"])))}
            start += len(pg["params"])
            if "param_names" in pg:
                g["param_names"] = list(pg["param_names"])
            g.update(self._values(plan, self._step_count))
            sched = {k if i is None else f"{k}.{i}": _serialize(fn)
                     for k, i, fn in plan.schedules()}
            if sched:
                g["schedules"] = sched
            groups.append(g)
        return groups

    def _plan_load(self, sd):
        """Everything a load changes, validated; raises before any write (the
        header was checked by load_state_dict)."""
        groups = sd.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self._param_groups):
            raise ValueError(f"state_dict has {len(groups) if isinstance(groups, list) else '?'}"
                             f" param groups, optimizer has {len(self._param_groups)}")
        trials, start = [], 0
        for gi, (g, pg) in enumerate(zip(groups, self._param_groups)):
            trials.append(self._load_group_values(gi, g, pg, start))
            start += len(pg["params"])
        names = self._load_names(groups)
        state = sd.get("state")
        if not isinstance(state, dict):
            raise ValueError("state_dict['state'] must be a dict")
        entries = {}
        for i, e in state.items():
            i = state_index(i, self._n)
            entries[i] = self._check_entry(i, e)
        gstate = self._load_global(state, entries)
        saved_n = self._step_count
        self._step_count = step_count(sd["step_count"])   # schedules are checked at the saved step
        try:
            plans = [self._compile_group(trial, gi) for gi, trial in enumerate(trials)]
        finally:
            self._step_count = saved_n
        for gi, plan in enumerate(plans):
            self._check_slots(plan.static, gi)
        restores = []                              # (schedule, saved state)
        for gi, g in enumerate(groups):
            for name, fn, ser in _matching_schedules(plans[gi], g):
                r = schedule_restore(fn, ser, name, f"group {gi}: ")
                if r is not None:
                    restores.append(r)
        return plans, entries, restores, names, gstate

    def _load_global(self, state, entries):
        """A global kind's scalars per group from the saved entries (the entries
        of a group, or all of them where the set is shared, hold the same set;
        a group without entries starts fresh)."""
        out: Dict[int, Tuple[float, ...]] = {}
        if not _global_state_names(self.spec):
            return out
        for k in state:
            i = state_index(k, self._n)
            g = 0 if self._rule.global_shared else self._group_of[i]
            v = self._rule.global_from_entry(state[k], self._where(i))
            if out.setdefault(g, v) != v:
                raise ValueError(f"{self._where(i)}: state_dict entries disagree on "
                                 f"{', '.join(_global_state_names(self.spec))} (one set per "
                                 + ("optimizer" if self._rule.global_shared else "group")
                                 + ", the same in each of its entries)")
        return out

    def _reset_global(self, values):
        """Set each group's global state: ``values[g]``, else its fresh start."""
        if not _global_state_names(self.spec):
            return
        for gi, plan in enumerate(self._plans):
            src = self._plans[0] if self._rule.global_shared else plan
            v = values.get(gi)
            self._engine.set_global_state(v if v is not None
                                          else self._rule.initial_global(src.static), gi)

    def _load_names(self, groups):
        """The saved groups' ``param_names``, checked: all groups or none have
        them; where the optimizer's params are named too, the names must be
        the same. Returns the names to adopt (the optimizer's are unnamed,
        as torch takes them from the state_dict), or None."""
        have = ["param_names" in g for g in groups]
        if not any(have):
            return None
        if not all(have):
            raise ValueError("state_dict: some param groups have 'param_names' and some do "
                             "not (all param groups are with names or all without)")
        out = []
        for gi, (g, pg) in enumerate(zip(groups, self._param_groups)):
            saved = check_names(g["param_names"], len(pg["params"]), gi)
            mine = pg.get("param_names")
            if mine is not None and list(mine) != saved:
                j = next(j for j, (a, b) in enumerate(zip(mine, saved)) if a != b)
                raise ValueError(f"group {gi}: state_dict param names differ from the "
                                 f"optimizer's: position {j} is {saved[j]!r} in the "
                                 f"state_dict, {mine[j]!r} here (the state would go to the "
                                 "wrong params)")
            out.append(saved)
        return None if self._names and self._names[0] is not None else out

    def _load_group_values(self, gi, g, pg, start):
        if not isinstance(g, dict):
            raise ValueError(f"group {gi}: state_dict param group must be a dict, got "
                             f"{type(g).__name__}")
        n = len(pg["params"])
        gp = g.get("params", [])
        if not isinstance(gp, (list, tuple)) or list(gp) != list(range(start, start + n)):
            raise ValueError(f"group {gi}: state_dict lists params {g.get('params')}, "
                             f"optimizer group has {n} params starting at {start}")
        saved_sched = g.get("schedules", {}) or {}
        if not isinstance(saved_sched, dict):
            raise ValueError(f"group {gi}: state_dict 'schedules' must be a dict, got "
                             f"{type(saved_sched).__name__}")
        trial = dict(pg)
        for k in self.defaults:
            if k not in g:
                raise ValueError(f"group {gi}: state_dict lacks hyperparameter {k!r}")
            cur = trial[k]
            if isinstance(cur, tuple):           # betas: items may be schedules
                if not isinstance(g[k], (tuple, list)) or len(g[k]) != len(cur):
                    raise ValueError(f"group {gi}: state_dict {k} must be a "
                                     f"{'pair' if len(cur) == 2 else 'triple'}, got {g[k]!r}")
                trial[k] = tuple(c if (is_schedule(c) or f"{k}.{i}" in saved_sched) else s
                                 for i, (c, s) in enumerate(zip(cur, g[k])))
            elif not is_schedule(cur) and k not in saved_sched:
                trial[k] = g[k]                  # the optimizer's schedules stay
        return trial

    def _commit_load(self, plan):
        plans, entries, restores, names, gstate = plan
        if names is not None:                      # adopt the saved names, as torch
            self._names = [x for ns in names for x in ns]
            for pg, ns in zip(self._param_groups, names):
                dict.__setitem__(pg, "param_names", ParamList(ns))
        for fn, st in restores:
            fn.load_state_dict(st)
        for gi, plan in enumerate(plans):
            pg = self._param_groups[gi]
            for k, v in plan.static.items():
                dict.__setitem__(pg, k, v)
            self._plans[gi] = plan
        keys = []
        for i in range(self._n):
            if i in entries:
                arrays, key, _, master = entries[i]
                if master is not None:
                    self._lp.master[i][...] = master
            else:                                  # fresh, as in a new optimizer
                arrays = self._fresh(i)
                key = self._rule.initial_key
                m = self._lp.master[i]
                if m is not None:
                    m[...] = self._lp.template(self._params[i])
            self._assign(i, arrays)
            keys.append(key)
        self._set_tensor_state({i: e[2] for i, e in entries.items()})
        self._reset_global(gstate)
        self._set_keys(keys)

    def _check_entry(self, i, e):
        """Validate one saved state entry against param i; return (arrays, key)."""
        where = self._where(i)
        if not isinstance(e, dict):
            raise ValueError(f"{where}: state entry must be a dict")
        p = self._params[i]
        if (not self.spec.has_step and e.get("momentum_buffer") is not None
                and self._states[i][0] is None):
            raise ValueError(f"{where}: state has a momentum buffer but this optimizer has "
                             "momentum=0")
        arrays: List[Any] = []
        for j, (name, a) in enumerate(zip(self.spec.states, self._states[i])):
            if a is None:
                arrays.append(None)
                continue
            v = e.get(name)
            if v is None and name in self.spec.optional_states:
                arrays.append(None)
                continue
            if self._lp.qmaps:     # any stored format converts (8-bit <-> bfloat16 <-> float)
                arrays.append(self._lp.load_state(i, j, name, e, p, where))
            else:
                arrays.append((state_array(v, name, p.shape, p.dtype, where), None))
        master = self._lp.load_master(i, e, p, where) if self._lp.active else None
        t = step_count(e.get("step"), f"{where}: state 'step'") if self.spec.has_step else 0
        tstate = tuple(real(e.get(k), f"{where}: state {k!r}", low=0.0)
                       for k in _tensor_state_names(self.spec))
        return arrays, self._rule.entry_key(t, e, where), tstate, master

    # -------------------------------------------------------- pickle, copy
    def _init_args(self):
        groups = [dict(pg) for pg in self._param_groups]
        for g in groups:
            g["params"] = list(g["params"])
            names = g.pop("param_names", None)
            if names is not None:
                g["params"] = list(zip(names, g["params"]))
        lp = self._lp
        return ((groups, self.defaults), {"max_grad_norm": self.max_grad_norm,
                                          "skip_nonfinite": self.skip_nonfinite,
                                          "clip_norm": self.clip_norm,
                                          "clip_value": self.clip_value,
                                          "state_dtype": lp.state_dtype,
                                          "master_weights": lp.master_weights,
                                          "stochastic_rounding": lp.sr, "seed": lp.seed})

    def _reinit(self, *args, **kwargs):
        Optimizer.__init__(self, *args, **kwargs)


def _matching_schedules(plan: GroupPlan, g: Dict[str, Any]):
    """(name, the optimizer's schedule, saved entry) for each saved stateful
    schedule that matches one of the plan's."""
    for name, ser in (g.get("schedules") or {}).items():
        if not (isinstance(ser, dict) and ser.get("state")):
            continue
        k, _, idx = str(name).partition(".")
        for kk, ii, fn in plan.schedules():
            if kk == k and (ii is None if not idx else str(ii) == idx):
                yield name, fn, ser


class _NoKind:
    qmaps: Tuple[str, ...] = ()     # an own-step optimizer: no low precision


_NO_KIND = _NoKind()
_PARAM_RE = re.compile(r"group (\d+), param (\d+)(?! ')")


class _Released:
    """Stands in for an optimizer's state once a sharded wrapper owns it."""

    __slots__ = ()
    _msg = ("this optimizer is wrapped by lrfast.distributed.DistributedOptimizer("
            "shard_state=True), which now holds its (sharded) state: call step, "
            "state_dict, load_state_dict and zero_state on the wrapper")

    def __getattr__(self, name):
        raise RuntimeError(self._msg)

    def __getitem__(self, i):
        raise RuntimeError(self._msg)


def make_init(spec: Spec) -> Callable[..., None]:
    """An ``__init__`` with the table's signature: torch's positional order,
    keyword-only flags, then lrfast's options."""
    pos = [h for h in spec.hparams if not h.kwonly]
    kwo = [h for h in spec.hparams if h.kwonly]
    args = ", ".join(f"{h.name}=_d[{h.name!r}]" for h in pos)
    kws = ", ".join(f"{h.name}=_d[{h.name!r}]" for h in kwo)
    names = ", ".join(f"{h.name}={h.name}" for h in spec.hparams)
    src = (f"def __init__(self, params, {args}, *, {kws + ', ' if kws else ''}"
           f"max_grad_norm=None, skip_nonfinite=False, clip_norm=None, clip_value=None, "
           f"state_dtype=None, master_weights=False, stochastic_rounding=False, seed=0):\n"
           f"    Optimizer.__init__(self, params, dict({names}), "
           f"max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite, "
           f"clip_norm=clip_norm, clip_value=clip_value, state_dtype=state_dtype, "
           f"master_weights=master_weights, stochastic_rounding=stochastic_rounding, "
           f"seed=seed)\n")
    ns: Dict[str, Any] = {"Optimizer": Optimizer, "_d": spec.defaults}
    exec(src, ns)
    fn = ns["__init__"]
    ann: Dict[str, Any] = {"params": ParamsLike}
    for h in spec.hparams:
        ann[h.name] = (bool if h.check == "bool" else Betas if h.check == "betas"
                       else Tuple[Hyper, Hyper, Hyper] if h.check == "betas3"
                       else Hyper if h.schedulable else float)
    fn.__annotations__ = {**ann, "max_grad_norm": Optional[float], "skip_nonfinite": bool,
                          "clip_norm": Optional[float], "clip_value": Optional[float],
                          "state_dtype": Optional[str], "master_weights": bool,
                          "stochastic_rounding": bool, "seed": int, "return": None}
    fn.__doc__ = f"{spec.doc}; defaults as {spec.refs.get('torch', 'the reference')}."
    return fn


