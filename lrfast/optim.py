"""Optimizers: the thin Python layer over the fused kernels.

Each optimizer validates its params once, allocates its state, and builds one
:class:`Engine` (a prebuilt task list over all tensors). ``step(grads)``
evaluates the hyperparameters for this step (floats or schedules at
n = step_count), computes one row of per-step scalars per (group, step count)
in double, and makes ONE call into the kernels, which validate the grads and
walk all tensors with the GIL released.

Update rules are torch.optim 2.13's (SPEC.md); each one has a plain-numpy twin
in :mod:`lrfast._reference` that the kernels equal bit for bit.
"""
from __future__ import annotations

import copy
import math
import numbers
import threading
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ._dispatch import kernels as _K
from ._typing import Array, Betas, Grads, Hyper, ParamsLike, StateDict

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW",
           "Adamax", "NAdam", "RAdam", "ParamGroup"]

FORMAT = "lrfast.optim/1"
MAX_STEP = 2 ** 53     # step counts enter double arithmetic (beta ** t): keep them exact
SCHEDULABLE = ("lr", "momentum", "weight_decay", "betas")
_KIND = _K.KINDS


def _is_sched(v):
    return callable(v) and not isinstance(v, (numbers.Number, np.ndarray))


def _finite(v):
    try:
        return math.isfinite(v)
    except OverflowError:       # an int too large for a double
        return False


def _name(fn):
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _serialize(fn):
    """{"class", "config", "state"} of an lrfast schedule; a plain callable is
    recorded by name only (SPEC.md)."""
    if hasattr(fn, "get_config"):
        from . import schedules
        return schedules.serialize(fn)
    return {"class": "callable", "name": _name(fn)}


def check_param(a: Any, where: str) -> None:
    """Raise unless ``a`` can be updated in place by the kernels."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}: params must be numpy ndarrays, got {type(a).__name__}")
    if not a.dtype.isnative:
        raise TypeError(f"{where}: dtype {a.dtype.str} has non-native byte order (use "
                        "a.astype(a.dtype.newbyteorder('=')))")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{where}: dtype {a.dtype} is not supported (float32 or float64)")
    if not a.flags.writeable:
        raise ValueError(f"{where}: param is read-only (the optimizer updates it in place)")
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        raise ValueError(f"{where}: param is not contiguous (use np.ascontiguousarray and "
                         "keep a reference to the copy)")
    if not a.flags.aligned:
        raise ValueError(f"{where}: param is not aligned")


def parse_groups(params: Any) -> List[Dict[str, Any]]:
    """``params`` as torch takes them (a list of arrays, or of group dicts) ->
    a list of group dicts. Raises a clear error for anything else."""
    if isinstance(params, np.ndarray):
        raise TypeError("params must be a list of arrays (or of dicts), got a single "
                        "ndarray: wrap it in a list")
    if isinstance(params, dict):
        params = [params]
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
        raise TypeError("params must be all arrays or all dicts (parameter groups)")
    return [{"params": params}]


def check_header(sd, optimizer):
    """Check a state_dict's type, format, optimizer kind and step counters."""
    if not isinstance(sd, dict):
        raise TypeError(f"state_dict must be a dict, got {type(sd).__name__}")
    if sd.get("format") != FORMAT:
        raise ValueError(f"not an lrfast optimizer state_dict of format {FORMAT!r} "
                         f"(format {sd.get('format')!r})")
    if sd.get("optimizer") != optimizer:
        raise ValueError(f"state_dict is for optimizer {sd.get('optimizer')!r}, not {optimizer}")
    for k in ("step_count", "skipped_steps"):
        v = sd.get(k)
        if (isinstance(v, bool) or not isinstance(v, numbers.Integral)
                or not 0 <= v <= MAX_STEP):
            raise ValueError(f"state_dict[{k!r}] must be an int in [0, 2**53], got {v!r}")


def state_index(i, n):
    """A state_dict['state'] key (int, or digits after a JSON round trip) as an
    index into n params; raises ValueError otherwise."""
    if isinstance(i, str) and i.isdigit():
        i = int(i)
    if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < n:
        raise ValueError(f"state_dict['state'] has an entry for param {i!r}; the optimizer "
                         f"has {n} params")
    return int(i)


class ParamGroup(dict):
    """A parameter group: a dict that validates hyperparameters when they are set
    (``opt.param_groups[0]["lr"] = 0.1`` works as in torch, and is checked)."""

    __slots__ = ("_opt", "_index")

    def __setitem__(self, key, value):
        opt = getattr(self, "_opt", None)
        if opt is not None:
            if key == "params":
                raise ValueError("param_groups[i]['params'] cannot be reassigned; "
                                 "use add_param_group or a new optimizer")
            if key not in self:
                raise KeyError(f"{type(opt).__name__}: unknown hyperparameter {key!r}")
            trial = dict(self)
            trial[key] = value
            commit = opt._check_group_change(self._index, trial)  # raises: nothing changes
            dict.__setitem__(self, key, value)
            commit()
            return
        dict.__setitem__(self, key, value)

    def update(self, *args, **kw):
        for k, v in dict(*args, **kw).items():
            self[k] = v

    def __reduce__(self):
        return (dict, (dict(self),))


class Optimizer:
    """Base class: param groups, validation, per-step rows, state, resume.

    Subclasses define ``_defaults``, ``_state_names``, ``_check`` (hyperparameter
    ranges), ``_alloc`` (state buffers) and ``_row`` (per-step scalars).
    """

    _kind = None
    _defaults: Dict[str, Any] = {}
    _state_names: Tuple[str, ...] = ()
    _has_step = True

    def __init__(self, params: ParamsLike, defaults: Optional[Dict[str, Any]] = None, *,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False) -> None:
        if defaults is None:
            defaults = dict(self._defaults)
        self.defaults = dict(defaults)
        self.max_grad_norm = max_grad_norm
        self.skip_nonfinite = skip_nonfinite
        self._lock = threading.Lock()
        self.param_groups: List[ParamGroup] = []
        self._compiled: List[Any] = []
        self._params: List[Array] = []
        self._group_of: List[int] = []
        self._states: List[Any] = []
        self._gkey: List[Any] = []   # per group: the common step key, or None (per-tensor keys)
        self._keys: List[Any] = []   # per param: its key (only read for non-uniform groups)
        self._step_count = 0
        self.skipped_steps = 0
        self.last_grad_norm = float("nan")
        groups = parse_groups(params)
        for g in groups:
            self._add_group(g, build=False)
        self._build()

    @property
    def max_grad_norm(self) -> Optional[float]:
        """Clip the global grad norm to this value before each step (None: off)."""
        return self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, v: Optional[float]) -> None:
        self._check_options(v, False)
        self._max_grad_norm = v
        self._max_norm = 0.0 if v is None else float(v)

    @property
    def skip_nonfinite(self) -> bool:
        """Skip (write nothing, count in ``skipped_steps``) steps whose grads hold NaN/inf."""
        return self._skip

    @skip_nonfinite.setter
    def skip_nonfinite(self, v: bool) -> None:
        self._check_options(None, v)
        self._skip = bool(v)

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _check_options(max_grad_norm, skip_nonfinite):
        if max_grad_norm is not None:
            if (isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, numbers.Real)
                    or not _finite(max_grad_norm) or max_grad_norm <= 0):
                raise ValueError(f"max_grad_norm must be a positive finite number or None, "
                                 f"got {max_grad_norm!r}")
        if not isinstance(skip_nonfinite, (bool, np.bool_)):
            raise TypeError(f"skip_nonfinite must be a bool, got {skip_nonfinite!r}")

    def _add_group(self, group, build=True):
        gi = len(self.param_groups)
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"group {gi}: a parameter group is a dict with a 'params' list")
        plist = group["params"]
        if isinstance(plist, np.ndarray):
            plist = [plist]
        plist = list(plist)
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"group {gi}: unknown hyperparameter(s) {sorted(unknown)} for "
                             f"{type(self).__name__}")
        full = {k: group.get(k, v) for k, v in self.defaults.items()}
        if "betas" in full and not _is_sched(full["betas"]):
            b = full["betas"]
            if not isinstance(b, (tuple, list)) or len(b) != 2:
                raise ValueError(f"group {gi}: betas must be a pair (beta1, beta2), got {b!r}")
            full["betas"] = tuple(b)
        base = len(self._params)
        for j, p in enumerate(plist):
            check_param(p, f"group {gi}, param {base + j}")
        compiled = self._compile_group(full, gi)
        pg = ParamGroup(params=plist, **full)
        pg._opt = None
        states = [self._alloc(p, compiled[0]) for p in plist]
        # Everything is valid: commit.
        pg._opt, pg._index = self, gi
        self.param_groups.append(pg)
        self._compiled.append(compiled)
        self._params.extend(plist)
        self._group_of.extend([gi] * len(plist))
        self._states.extend(states)
        self._keys.extend([self._initial_key()] * len(plist))
        self._gkey.append(self._initial_key())
        if build:
            try:
                self._build()
            except Exception:
                del self.param_groups[-1], self._compiled[-1], self._gkey[-1]
                del self._params[base:], self._group_of[base:], self._states[base:]
                del self._keys[base:]
                self._build()
                raise

    def _check_group_change(self, gi, trial):
        """Validate group ``gi`` with one value changed; return the commit."""
        compiled = self._compile_group(trial, gi)

        def commit():
            self._compiled[gi] = compiled
        return commit

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group (a dict with 'params' and optional hyperparameters), as torch."""
        with self._lock:
            self._add_group(param_group, build=True)

    def _build(self):
        self._engine = _K.Engine(_KIND[self._kernel_name], self._params, self._states,
                                 self._group_of)
        self._n = len(self._params)

    def _compile_group(self, group, gi):
        """Split a group into (static values, [(name, index, schedule)]) and
        validate it, evaluating schedules at the current step."""
        static, sched = {}, []
        for k in self.defaults:
            v = group[k]
            if k == "betas" and not _is_sched(v):
                if not isinstance(v, (tuple, list)) or len(v) != 2:
                    raise ValueError(f"group {gi}: betas must be a pair, got {v!r}")
                for i, b in enumerate(v):
                    if _is_sched(b):
                        sched.append((k, i, b))
                static[k] = tuple(v)
            elif _is_sched(v):
                if k not in SCHEDULABLE:
                    raise TypeError(f"group {gi}: {k} cannot be a schedule (only "
                                    f"{', '.join(SCHEDULABLE)} can)")
                if k == "betas":
                    raise TypeError(f"group {gi}: give betas as a pair whose items may be "
                                    "schedules")
                sched.append((k, None, v))
                static[k] = v
            else:
                static[k] = v
        n = getattr(self, "_step_count", 0)
        hp = self._evaluate((static, sched), n, gi)
        for k, v in hp.items():
            if isinstance(v, (bool, np.bool_)) or k in self._flag_names:
                if not isinstance(v, (bool, np.bool_)):
                    raise TypeError(f"group {gi}: {k} must be a bool, got {v!r}")
        self._check_all(hp, gi)
        if gi < len(getattr(self, "param_groups", ())):
            self._check_slots(static, gi)
        # static groups get their row function built once (all values bound)
        return static, sched, (None if sched else self._make_row(static))

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
                need[dt] = self._alloc(np.empty(0, dt), static)
            for name, want, have in zip(self._state_names, need[dt], self._states[i]):
                if want is not None and have is None:
                    raise ValueError(f"group {gi}, param {i}: these hyperparameters need "
                                     f"optimizer state {name!r}, which was not allocated "
                                     "(the optimizer was built with that option off); "
                                     "build a new optimizer with it on")

    _flag_names = ("maximize", "nesterov", "amsgrad", "centered", "decoupled_weight_decay")

    def _evaluate(self, compiled, n, gi):
        static, sched = compiled[0], compiled[1]
        if not sched:
            return static
        hp = dict(static)
        for k, i, fn in sched:
            try:
                v = float(fn(n))
            except Exception as e:
                raise ValueError(f"group {gi}: schedule for {k if i is None else f'{k}[{i}]'} "
                                 f"failed at step {n}: {e}") from e
            if i is None:
                hp[k] = v
            else:
                b = list(hp[k])
                b[i] = v
                hp[k] = tuple(b)
        return hp

    def _check_all(self, hp, gi):
        for k, v in hp.items():
            if k == "betas":
                for i, b in enumerate(v):
                    self._num(b, f"betas[{i}]", gi)
                    if not 0.0 <= b < 1.0:
                        raise ValueError(f"group {gi}: invalid betas[{i}]: "
                                         f"{b!r} (must be in [0, 1))")
            elif k not in self._flag_names:
                self._num(v, k, gi)
        if hp["lr"] < 0:
            raise ValueError(f"group {gi}: invalid learning rate lr={hp['lr']!r} (must be >= 0)")
        if hp.get("weight_decay", 0.0) < 0:
            raise ValueError(f"group {gi}: invalid weight_decay {hp['weight_decay']!r} "
                             "(must be >= 0)")
        if "eps" in hp and not hp["eps"] > 0:
            raise ValueError(f"group {gi}: invalid eps {hp['eps']!r} (must be > 0: it "
                             "keeps a division finite)")
        if hp.get("momentum", 0.0) < 0:
            raise ValueError(f"group {gi}: invalid momentum {hp['momentum']!r} (must be >= 0)")
        self._check(hp, gi)

    @staticmethod
    def _num(v, name, gi):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"group {gi}: {name} must be a number or a schedule, got {v!r}")
        if not _finite(v):
            raise ValueError(f"group {gi}: {name} must be finite, got {v!r}")

    def _check(self, hp, gi):
        """Optimizer-specific hyperparameter checks (subclasses)."""

    def _alloc(self, p, hp):
        raise NotImplementedError

    def _initial_key(self):
        return 0

    def _make_row(self, hp):
        """For fixed hyperparameters ``hp``, return ``row(key) -> (row, new key)``:
        the kernel's scalar row for one step from a param's step key (its step
        count, plus optimizer-specific history). Subclasses implement it; all
        static values are bound once, so a step costs a few float operations."""
        raise NotImplementedError

    def _row(self, hp, key):
        return self._make_row(hp)(key)

    # ------------------------------------------------------------------- step
    def step(self, grads: Grads, _aux: Optional[Grads] = None) -> bool:
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
        lock = self._lock
        lock.acquire()        # explicit acquire/release: half the cost of `with`
        try:
            compiled, gkey = self._compiled, self._gkey
            if len(compiled) == 1 and compiled[0][2] is not None and gkey[0] is not None:
                # fast path: one group, no schedules, one step key
                row, key = compiled[0][2](gkey[0])
                na, applied, norm = self._engine.step(grads, [row], None, self._max_norm,
                                                      self._skip, True, _aux)
                self.last_grad_norm = norm
                if applied and na == self._n:
                    gkey[0] = key
                    self._step_count += 1
                    return True
                rows, index, new_keys = [row], None, [key]
            else:
                rows, index, new_keys = self._rows(self._step_count)
                na, applied, norm = self._engine.step(grads, rows, index, self._max_norm,
                                                      self._skip, True, _aux)
                self.last_grad_norm = norm
            if not applied:
                self.skipped_steps += 1
                return False
            if na == self._n:
                if index is None:
                    gkey[:] = new_keys
                else:
                    # per-param keys: a group key left set would go stale
                    self._keys[:] = [new_keys[k] for k in index]
                    gkey[:] = [None] * len(gkey)
                    self._regroup()
            else:
                self._advance_partial(grads, index, new_keys)
            self._step_count += 1
            return True
        finally:
            lock.release()

    def _rows(self, n):
        """Scalar rows for step n: one per group when every param of a group has
        the same step key (the common case), else one per distinct key."""
        fns = []
        for gi, c in enumerate(self._compiled):
            fn = c[2]
            if fn is None:                      # scheduled: evaluate, validate, bind
                hp = self._evaluate(c, n, gi)
                self._check_all(hp, gi)
                fn = self._make_row(hp)
            fns.append(fn)
        if None not in self._gkey:
            rows, new_keys = [], []
            for gi, fn in enumerate(fns):
                r, k = fn(self._gkey[gi])
                rows.append(r)
                new_keys.append(k)
            return rows, None, new_keys
        rows, new_keys, index, seen = [], [], [], {}
        for i in range(self._n):
            gi = self._group_of[i]
            key = self._gkey[gi] if self._gkey[gi] is not None else self._keys[i]
            j = seen.get((gi, key))
            if j is None:
                r, k = fns[gi](key)
                j = seen[(gi, key)] = len(rows)
                rows.append(r)
                new_keys.append(k)
            index.append(j)
        return rows, index, new_keys

    def _advance_partial(self, grads, index, new_keys):
        # Some grads were None: keys become per param; regroup where uniform.
        for i in range(self._n):
            old = self._gkey[self._group_of[i]]
            if old is not None:
                self._keys[i] = old
        for gi in range(len(self._gkey)):
            self._gkey[gi] = None
        for i in range(self._n):
            if grads[i] is not None:
                self._keys[i] = new_keys[index[i]] if index is not None else new_keys[
                    self._group_of[i]]
        self._regroup()

    def _regroup(self):
        for gi in range(len(self.param_groups)):
            keys = {self._keys[i] for i in range(self._n) if self._group_of[i] == gi}
            self._gkey[gi] = keys.pop() if len(keys) == 1 else None
            if not keys and self._gkey[gi] is None:
                self._gkey[gi] = self._initial_key()

    # ----------------------------------------------------------------- views
    @property
    def step_count(self) -> int:
        """Number of completed (not skipped) steps."""
        return self._step_count

    @property
    def hyperparams(self) -> List[Dict[str, Any]]:
        """Per group, the hyperparameter values the next step will use."""
        return [dict(self._evaluate(c, self._step_count, gi))
                for gi, c in enumerate(self._compiled)]

    @property
    def lr(self) -> Union[float, List[float]]:
        """The learning rate the next step will use (a list for several groups)."""
        lrs = [h["lr"] for h in self.hyperparams]
        return lrs[0] if len(lrs) == 1 else lrs

    @property
    def params(self) -> List[Array]:
        return list(self._params)

    def _key_of(self, i):
        g = self._gkey[self._group_of[i]]
        return g if g is not None else self._keys[i]

    def _t_of(self, key):
        return key[0] if isinstance(key, tuple) else key

    @property
    def state(self) -> Dict[int, Dict[str, Any]]:
        """Per-param state, as torch's ``optimizer.state`` (views, not copies)."""
        out = {}
        for i in range(self._n):
            e = self._state_entry(i, copy=False)
            if e is not None:
                out[i] = e
        return out

    def _state_entry(self, i, copy=True):
        key = self._key_of(i)
        if key == self._initial_key():
            return None
        e = {"step": self._t_of(key)} if self._has_step else {}
        for name, a in zip(self._state_names, self._states[i]):
            if a is not None:
                e[name] = a.copy() if copy else a
        self._extra_state(e, key, i)
        return e

    def _extra_state(self, entry, key, i):
        pass

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for gi, hp in enumerate(self.hyperparams):
            lines.append(f"  group {gi}: {len(self.param_groups[gi]['params'])} params, "
                         + ", ".join(f"{k}={v!r}" for k, v in hp.items()))
        lines.append(f"  step_count={self._step_count})")
        return "\n".join(lines)

    # ------------------------------------------------------------ state dict
    def zero_state(self) -> None:
        """Reset all optimizer state (moments, step counts) as if freshly built.
        Params and schedules are untouched; ``step_count`` restarts at 0."""
        with self._lock:
            for i, p in enumerate(self._params):
                fresh = self._alloc(p, self._compiled[self._group_of[i]][0])
                for a, f in zip(self._states[i], fresh):
                    if a is not None:
                        a[...] = f
            self._keys = [self._initial_key()] * self._n
            self._gkey = [self._initial_key()] * len(self.param_groups)
            self._step_count = 0
            self.skipped_steps = 0

    def state_dict(self) -> StateDict:
        """A plain dict (numpy arrays, numbers, strings): SPEC.md schema v1."""
        with self._lock:
            state = {}
            for i in range(self._n):
                e = self._state_entry(i, copy=True)
                if e is not None:
                    state[i] = e
            groups, start = [], 0
            for gi, pg in enumerate(self.param_groups):
                hp = self._evaluate(self._compiled[gi], self._step_count, gi)
                g: Dict[str, Any] = {"params": list(range(start, start + len(pg["params"])))}
                start += len(pg["params"])
                g.update(hp)
                sched = {}
                for k, i, fn in self._compiled[gi][1]:
                    sched[k if i is None else f"{k}.{i}"] = _serialize(fn)
                if sched:
                    g["schedules"] = sched
                groups.append(g)
            return {"format": FORMAT, "optimizer": type(self).__name__,
                    "step_count": self._step_count, "skipped_steps": self.skipped_steps,
                    "state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Restore a state_dict; checks everything before changing anything."""
        with self._lock:
            sd = state_dict
            check_header(sd, type(self).__name__)
            groups = sd.get("param_groups")
            if not isinstance(groups, list) or len(groups) != len(self.param_groups):
                raise ValueError(f"state_dict has {len(groups) if isinstance(groups, list) else '?'}"
                                 f" param groups, optimizer has {len(self.param_groups)}")
            start = 0
            new_compiled = []
            for gi, (g, pg) in enumerate(zip(groups, self.param_groups)):
                if not isinstance(g, dict):
                    raise ValueError(f"group {gi}: state_dict param group must be a dict, got "
                                     f"{type(g).__name__}")
                n = len(pg["params"])
                gp = g.get("params", [])
                if not isinstance(gp, (list, tuple)) or list(gp) != list(range(start, start + n)):
                    raise ValueError(f"group {gi}: state_dict lists params {g.get('params')}, "
                                     f"optimizer group has {n} params starting at {start}")
                start += n
                trial = dict(pg)
                sched = self._compiled[gi][1]
                sched_keys = {(k, i) for k, i, _ in sched}
                saved_sched = g.get("schedules", {}) or {}
                if not isinstance(saved_sched, dict):
                    raise ValueError(f"group {gi}: state_dict 'schedules' must be a dict, got "
                                     f"{type(saved_sched).__name__}")
                for k in self.defaults:
                    if k not in g:
                        raise ValueError(f"group {gi}: state_dict lacks hyperparameter {k!r}")
                    if k == "betas":
                        if not isinstance(g[k], (tuple, list)) or len(g[k]) != 2:
                            raise ValueError(f"group {gi}: state_dict betas must be a pair, "
                                             f"got {g[k]!r}")
                        b = list(trial[k]) if not _is_sched(trial[k]) else None
                        if b is not None:
                            for i in range(2):
                                if (k, i) not in sched_keys and f"betas.{i}" not in saved_sched:
                                    b[i] = g[k][i]
                            trial[k] = tuple(b)
                    elif (k, None) not in sched_keys and k not in saved_sched:
                        trial[k] = g[k]
                new_compiled.append(trial)
            state = sd.get("state")
            if not isinstance(state, dict):
                raise ValueError("state_dict['state'] must be a dict")
            plan = {}
            for i, e in state.items():
                i = state_index(i, self._n)
                plan[i] = self._check_entry(i, e)
            # Validate group hyperparameters (may raise) before any write.
            compiled = []
            saved_n = self._step_count
            self._step_count = sd["step_count"]
            try:
                for gi, trial in enumerate(new_compiled):
                    compiled.append(self._compile_group(trial, gi))
            finally:
                self._step_count = saved_n
            for gi, g in enumerate(groups):
                for name, ser in (g.get("schedules") or {}).items():
                    k, _, idx = name.partition(".")
                    fn = None
                    for kk, ii, f in compiled[gi][1]:
                        if kk == k and (ii is None if not idx else ii == int(idx)):
                            fn = f
                    if fn is not None and isinstance(ser, dict) and ser.get("state"):
                        if not hasattr(fn, "load_state_dict"):
                            raise ValueError(f"group {gi}: saved schedule {name} has state but "
                                             f"the optimizer's {name} is {_name(fn)}")
                        try:        # on a copy: the commit below must not fail halfway
                            copy.deepcopy(fn).load_state_dict(ser["state"])
                        except (TypeError, ValueError, KeyError) as e:
                            raise ValueError(f"group {gi}: saved state of schedule {name} does "
                                             f"not fit: {e}") from e
            # ---- commit
            for gi, g in enumerate(groups):
                for name, ser in (g.get("schedules") or {}).items():
                    k, _, idx = name.partition(".")
                    for kk, ii, f in compiled[gi][1]:
                        if kk == k and (ii is None if not idx else ii == int(idx)):
                            if isinstance(ser, dict) and ser.get("state") and hasattr(
                                    f, "load_state_dict"):
                                f.load_state_dict(ser["state"])
            for gi, trial in enumerate(new_compiled):
                pg = self.param_groups[gi]
                for k in self.defaults:
                    dict.__setitem__(pg, k, trial[k])
                self._compiled[gi] = compiled[gi]
            for i in range(self._n):
                fresh = self._alloc(self._params[i], self._compiled[self._group_of[i]][0])
                if i in plan:
                    arrays, key = plan[i]
                else:
                    arrays, key = fresh, self._initial_key()
                for a, src in zip(self._states[i], arrays):
                    if a is not None:
                        a[...] = src if src is not None else 0
                self._keys[i] = key
            self._gkey = [None] * len(self.param_groups)
            self._regroup()
            self._step_count = int(sd["step_count"])
            self.skipped_steps = int(sd["skipped_steps"])

    def _check_entry(self, i, e):
        """Validate one saved state entry against param i; return (arrays, key)."""
        where = f"group {self._group_of[i]}, param {i}"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: state entry must be a dict")
        p = self._params[i]
        arrays = []
        for name, a in zip(self._state_names, self._states[i]):
            if a is None:
                arrays.append(None)
                continue
            v = e.get(name)
            if v is None:
                if name in self._optional_state:
                    arrays.append(None)
                    continue
                raise ValueError(f"{where}: state lacks {name!r}")
            if not isinstance(v, np.ndarray):
                raise TypeError(f"{where}: state {name!r} must be an ndarray, got "
                                f"{type(v).__name__}")
            if v.shape != p.shape:
                raise ValueError(f"{where}: state {name!r} has shape {v.shape}, param has "
                                 f"{p.shape}")
            if v.dtype != p.dtype:
                raise ValueError(f"{where}: state {name!r} has dtype {v.dtype}, param has "
                                 f"{p.dtype}")
            arrays.append(v)
        if self._has_step:
            t = e.get("step")
            if isinstance(t, np.ndarray) and t.size == 1:
                t = t.item()
            if isinstance(t, float) and t.is_integer():
                t = int(t)
            if (isinstance(t, bool) or not isinstance(t, numbers.Integral)
                    or not 0 <= t <= MAX_STEP):
                raise ValueError(f"{where}: state 'step' must be an int in [0, 2**53], "
                                 f"got {t!r}")
        else:
            t = 0
        return arrays, self._entry_key(int(t), e, where)

    _optional_state: Tuple[str, ...] = ()

    def _entry_key(self, t, e, where):
        return t

    # -------------------------------------------------------- pickle, copy
    def __getstate__(self):
        groups = [dict(pg) for pg in self.param_groups]
        return {"groups": groups, "defaults": self.defaults,
                "options": {"max_grad_norm": self.max_grad_norm,
                            "skip_nonfinite": self.skip_nonfinite},
                "state": self.state_dict()}

    def __setstate__(self, st):
        Optimizer.__init__(self, st["groups"], st["defaults"], **st["options"])
        self.load_state_dict(st["state"])


# ----------------------------------------------------------------------------
# The optimizers. Each _row returns (row of doubles for the kernel, key after
# this step). Row layouts match the kernels in src/_kernels.pxi.
# ----------------------------------------------------------------------------
def _gs(hp):
    return -1.0 if hp["maximize"] else 1.0


def _l2(hp):
    """(wd, l2 flag, decoupled multiplier, decoupled flag)."""
    wd = hp["weight_decay"]
    dec = hp.get("decoupled_weight_decay", False)
    if wd == 0:
        return 0.0, 0.0, 1.0, 0.0
    if dec:
        return wd, 0.0, 1.0 - hp["lr"] * wd, 1.0
    return wd, 1.0, 1.0, 0.0


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum (torch.optim.SGD).

    The seed's "learning rate as step size" with its "momentum ... analogous to a
    ball rolling down a hill". Per element, in torch's order::

        g = -g if maximize;  g += wd*p
        if momentum != 0:
            b = g (first step with momentum) else b = momentum*b + (1-dampening)*g
            g = g + momentum*b if nesterov else b
        p -= lr*g

    Examples
    --------
    >>> import numpy as np, lrfast
    >>> w = np.zeros(3, np.float32)
    >>> opt = lrfast.SGD([w], lr=0.1, momentum=0.9)
    >>> opt.step([np.ones(3, np.float32)]); w
    True
    array([-0.1, -0.1, -0.1], dtype=float32)
    """
    _kernel_name = "SGD"
    _defaults = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                     nesterov=False, maximize=False)
    _state_names = ("momentum_buffer",)
    _has_step = False
    _optional_state = ("momentum_buffer",)

    def __init__(self, params: ParamsLike, lr: Hyper = 1e-3, momentum: Hyper = 0.0,
                 dampening: float = 0.0, weight_decay: Hyper = 0.0, nesterov: bool = False,
                 *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)

    def _check(self, hp, gi):
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            raise ValueError(f"group {gi}: nesterov momentum requires momentum > 0 and "
                             f"zero dampening (momentum={hp['momentum']}, "
                             f"dampening={hp['dampening']})")

    def _alloc(self, p, hp):
        mom = hp["momentum"]
        need = _is_sched(mom) or mom != 0
        return [np.zeros_like(p) if need else None, None, None]

    def _initial_key(self):
        return (0, False)      # (steps taken, momentum buffer started)

    def _make_row(self, hp):
        mu = hp["momentum"]
        wd, l2, _, _ = _l2(hp)
        mom = mu != 0
        head = (_gs(hp), wd, l2, hp["lr"], mu, 1.0 - hp["dampening"], float(mom),
                float(hp["nesterov"]))
        first, later = head + (float(mom),), head + (0.0,)

        def row(key):
            t, started = key
            return (later if started else first), (t + 1, started or mom)
        return row

    def _state_entry(self, i, copy=True):
        key = self._key_of(i)
        if key == self._initial_key():
            return None
        a = self._states[i][0]
        if not key[1] or a is None:
            return {"momentum_buffer": None}
        return {"momentum_buffer": a.copy() if copy else a}

    def _entry_key(self, t, e, where):
        return (1, e.get("momentum_buffer") is not None)

    def _check_entry(self, i, e):
        if isinstance(e, dict) and e.get("momentum_buffer") is not None \
                and self._states[i][0] is None:
            raise ValueError(f"group {self._group_of[i]}, param {i}: state has a momentum "
                             "buffer but this optimizer has momentum=0")
        return super()._check_entry(i, e)


class Adagrad(Optimizer):
    r"""Adagrad (torch.optim.Adagrad): per-parameter rates from the sum of squared grads.

    ::

        clr = lr / (1 + (t-1)*lr_decay);  g += wd*p;  s += g*g
        p -= clr * g / (sqrt(s) + eps)          # s starts at initial_accumulator_value
    """
    _kernel_name = "Adagrad"
    _defaults = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                     eps=1e-10, maximize=False)
    _state_names = ("sum",)

    def __init__(self, params: ParamsLike, lr: Hyper = 1e-2, lr_decay: float = 0.0,
                 weight_decay: Hyper = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)

    def _check(self, hp, gi):
        if hp["lr_decay"] < 0:
            raise ValueError(f"group {gi}: invalid lr_decay {hp['lr_decay']!r} (must be >= 0)")
        if hp["initial_accumulator_value"] < 0:
            raise ValueError(f"group {gi}: invalid initial_accumulator_value "
                             f"{hp['initial_accumulator_value']!r} (must be >= 0)")

    def _alloc(self, p, hp):
        return [np.full_like(p, hp["initial_accumulator_value"]), None, None]

    def _make_row(self, hp):
        wd, l2, _, _ = _l2(hp)
        gs, lr, lr_decay, eps = _gs(hp), hp["lr"], hp["lr_decay"], hp["eps"]

        def row(t):
            t += 1
            return (gs, wd, l2, lr / (1 + (t - 1) * lr_decay), eps), t
        return row


class Adadelta(Optimizer):
    r"""Adadelta (torch.optim.Adadelta), eps inside the square roots.

    ::

        g += wd*p;  v = rho*v + (1-rho)*g*g
        d = sqrt(u + eps) / sqrt(v + eps) * g;  u = rho*u + (1-rho)*d*d;  p -= lr*d
    """
    _kernel_name = "Adadelta"
    _defaults = dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False)
    _state_names = ("square_avg", "acc_delta")

    def __init__(self, params: ParamsLike, lr: Hyper = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: Hyper = 0.0, *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)

    def _check(self, hp, gi):
        if not 0.0 <= hp["rho"] <= 1.0:
            raise ValueError(f"group {gi}: invalid rho {hp['rho']!r} (must be in [0, 1])")

    def _alloc(self, p, hp):
        return [np.zeros_like(p), np.zeros_like(p), None]

    def _make_row(self, hp):
        wd, l2, _, _ = _l2(hp)
        rho = hp["rho"]
        r = (_gs(hp), wd, l2, hp["lr"], rho, 1.0 - rho, hp["eps"])
        return lambda t: (r, t + 1)


class RMSprop(Optimizer):
    r"""RMSprop (torch.optim.RMSprop), optionally centered and with momentum.

    ::

        g += wd*p;  v = alpha*v + (1-alpha)*g*g
        centered: a += (1-alpha)*(g-a);  w = v - a*a   else w = v
        momentum > 0: b = momentum*b + g/(sqrt(w)+eps);  p -= lr*b
        else: p -= lr*g/(sqrt(w)+eps)
    """
    _kernel_name = "RMSprop"
    _defaults = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                     centered=False, maximize=False)
    _state_names = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params: ParamsLike, lr: Hyper = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: Hyper = 0.0, momentum: Hyper = 0.0,
                 centered: bool = False, *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)

    def _check(self, hp, gi):
        if not 0.0 <= hp["alpha"] <= 1.0:
            raise ValueError(f"group {gi}: invalid alpha {hp['alpha']!r} (must be in [0, 1])")

    def _alloc(self, p, hp):
        mom = hp["momentum"]
        return [np.zeros_like(p),
                np.zeros_like(p) if (_is_sched(mom) or mom > 0) else None,
                np.zeros_like(p) if hp["centered"] else None]

    def _make_row(self, hp):
        wd, l2, _, _ = _l2(hp)
        a, mu = hp["alpha"], hp["momentum"]
        r = (_gs(hp), wd, l2, hp["lr"], a, 1.0 - a, hp["eps"], mu, float(mu > 0),
             float(hp["centered"]))
        return lambda t: (r, t + 1)


class Adam(Optimizer):
    r"""Adam (torch.optim.Adam), with amsgrad; L2 weight decay (``AdamW``: decoupled).

    ::

        g += wd*p   (AdamW: p *= 1 - lr*wd)
        m += (1-beta1)*(g-m);  v = beta2*v + (1-beta2)*g*g;  amsgrad: vmax = max(vmax, v)
        p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)

    Bias corrections are computed once per step in double. Any of lr, betas[0],
    betas[1], weight_decay may be a schedule; bias correction then uses the
    current beta (as torch).
    """
    _kernel_name = "Adam"
    _defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                     amsgrad=False, maximize=False)
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False

    def __init__(self, params: ParamsLike, lr: Hyper = 1e-3, betas: Betas = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Hyper = 0.0, amsgrad: bool = False,
                 *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)

    def _alloc(self, p, hp):
        return [np.zeros_like(p), np.zeros_like(p),
                np.zeros_like(p) if hp["amsgrad"] else None]

    def _make_row(self, hp):
        b1, b2 = hp["betas"]
        lr, wd, eps = hp["lr"], hp["weight_decay"], hp["eps"]
        if wd == 0:
            l2, dm, dec = 0.0, 1.0, 0.0
        elif self._decoupled:
            l2, dm, dec = 0.0, 1 - lr * wd, 1.0
        else:
            l2, dm, dec = 1.0, 1.0, 0.0
        gs, c1, c2, ams = _gs(hp), 1 - b1, 1 - b2, float(hp["amsgrad"])

        def row(t):
            t += 1
            # bias corrections in double, once per step: step size lr/(1-b1^t), sqrt(1-b2^t)
            return (gs, wd, l2, c1, b2, c2, lr / (1 - b1 ** t), (1 - b2 ** t) ** 0.5, eps, dm,
                    dec, ams), t
        return row


class AdamW(Adam):
    r"""AdamW (torch.optim.AdamW): Adam with decoupled weight decay ``p *= 1 - lr*wd``
    (default weight_decay 1e-2)."""
    _defaults = dict(Adam._defaults, weight_decay=1e-2)
    _decoupled = True

    def __init__(self, params: ParamsLike, lr: Hyper = 1e-3, betas: Betas = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Hyper = 1e-2, amsgrad: bool = False,
                 *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite)


class Adamax(Optimizer):
    r"""Adamax (torch.optim.Adamax): Adam with an infinity norm.

    ::

        g += wd*p;  m += (1-beta1)*(g-m);  u = max(beta2*u, |g| + eps)
        p -= lr/(1-beta1^t) * m / u
    """
    _kernel_name = "Adamax"
    _defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False)
    _state_names = ("exp_avg", "exp_inf")

    def __init__(self, params: ParamsLike, lr: Hyper = 2e-3, betas: Betas = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Hyper = 0.0, *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)

    def _alloc(self, p, hp):
        return [np.zeros_like(p), np.zeros_like(p), None]

    def _make_row(self, hp):
        b1, b2 = hp["betas"]
        wd, l2, _, _ = _l2(hp)
        gs, c1, eps, lr = _gs(hp), 1 - b1, hp["eps"], hp["lr"]

        def row(t):
            t += 1
            return (gs, wd, l2, c1, b2, eps, lr / (1 - b1 ** t)), t
        return row


class NAdam(Optimizer):
    r"""NAdam (torch.optim.NAdam): Adam with Nesterov momentum and momentum decay.

    ::

        mu_t = beta1*(1 - 0.5*0.96^(t*momentum_decay));  mu_{t+1} likewise
        g += wd*p (or p *= 1 - lr*wd with decoupled_weight_decay)
        m += (1-beta1)*(g-m);  v = beta2*v + (1-beta2)*g*g;  d = sqrt(v/(1-beta2^t)) + eps
        p -= lr*(1-mu_t)/(1-prod mu) * g/d;  p -= lr*mu_{t+1}/(1-prod mu * mu_{t+1}) * m/d
    """
    _kernel_name = "NAdam"
    _defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                     momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False)
    _state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: ParamsLike, lr: Hyper = 2e-3, betas: Betas = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Hyper = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)

    def _check(self, hp, gi):
        if hp["momentum_decay"] < 0:
            raise ValueError(f"group {gi}: invalid momentum_decay {hp['momentum_decay']!r} "
                             "(must be >= 0)")

    def _alloc(self, p, hp):
        return [np.zeros_like(p), np.zeros_like(p), None]

    def _initial_key(self):
        return (0, 1.0)        # (step, mu_product)

    def _make_row(self, hp):
        b1, b2 = hp["betas"]
        lr, md, eps = hp["lr"], hp["momentum_decay"], hp["eps"]
        wd, l2, dm, dec = _l2(hp)
        gs, c1, c2 = _gs(hp), 1 - b1, 1 - b2

        def row(key):
            t, mu_product = key
            t += 1
            mu = b1 * (1.0 - 0.5 * (0.96 ** (t * md)))
            mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * md)))
            mu_product = mu_product * mu
            cg = lr * (1.0 - mu) / (1.0 - mu_product)
            cm = lr * mu_next / (1.0 - mu_product * mu_next)
            return (gs, wd, l2, c1, b2, c2, 1 - b2 ** t, eps, cg, cm, dm, dec), (t, mu_product)
        return row

    def _extra_state(self, entry, key, i):
        entry["mu_product"] = key[1]

    def _entry_key(self, t, e, where):
        mp = e.get("mu_product", None)
        if isinstance(mp, np.ndarray) and mp.size == 1:
            mp = mp.item()
        if isinstance(mp, bool) or not isinstance(mp, numbers.Real) or not _finite(mp):
            raise ValueError(f"{where}: state 'mu_product' must be a finite number, got {mp!r}")
        return (t, float(mp))


class RAdam(Optimizer):
    r"""RAdam (torch.optim.RAdam): Adam with variance rectification.

    ::

        rho_inf = 2/(1-beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1-beta2^t)
        m_hat = m/(1-beta1^t)
        rho_t > 5: p -= m_hat*lr * (1/(sqrt(v)+eps) * sqrt(1-beta2^t)) * r_t   else p -= m_hat*lr
    """
    _kernel_name = "RAdam"
    _defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                     decoupled_weight_decay=False, maximize=False)
    _state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: ParamsLike, lr: Hyper = 1e-3, betas: Betas = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Hyper = 0.0,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)

    def _alloc(self, p, hp):
        return [np.zeros_like(p), np.zeros_like(p), None]

    def _make_row(self, hp):
        b1, b2 = hp["betas"]
        lr, eps = hp["lr"], hp["eps"]
        wd, l2, dm, dec = _l2(hp)
        gs, c1, c2 = _gs(hp), 1 - b1, 1 - b2
        rho_inf = 2 / (1 - b2) - 1

        def row(t):
            t += 1
            bc1 = 1 - b1 ** t
            bc2 = 1 - b2 ** t
            rho_t = rho_inf - 2 * t * (b2 ** t) / bc2
            if rho_t > 5.0:
                rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                        / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                on = 1.0
            else:
                rect, on = 1.0, 0.0
            return (gs, wd, l2, c1, b2, c2, bc1, lr, bc2 ** 0.5, eps, rect, on, dm, dec), t
        return row
