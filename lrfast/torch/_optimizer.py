"""The base of every ``lrfast.torch`` optimizer: a ``torch.optim.Optimizer``
whose ``step`` runs lrfast's fused kernels on the tensors' memory.

Design
------
torch owns the interface: ``param_groups`` are torch's plain dicts,
``self.state[p]`` holds torch's state tensors under torch's keys, and
``state_dict``/``load_state_dict``/``zero_grad``/hooks are torch's own. lrfast
owns the arithmetic: one :class:`lrfast.kernels` ``Engine`` (a prebuilt task
list) over ``Tensor.numpy()`` views of the params and of those same state
tensors, so every write lands in torch's memory and nothing is copied.

Per step: a structural check (are the groups and their param lists the ones
the engine was built over?), a cheap comparison of each group's values with
those of the last step (a scheduler that set ``group["lr"]`` costs one range
check; any other change re-plans the group), one scalar row per group and
distinct step count, one call into the kernels, and the step counts advanced
in one numpy operation (every ``state["step"]`` is a 0-d view into one array).
State tensors appear in ``self.state[p]`` at a param's first step, as torch's.
"""
from __future__ import annotations

import inspect
import operator
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.optim.optimizer as _optim_mod

from .._dispatch import kernels as _K
from .._validate import check_value
from ..optim import _lowp as _LP
from ..optim._rules import RULES, Rule, _dm, distinct_keys
from ..optim._table import KINDS, Spec

__all__ = ["TorchOptimizer"]

# torch's implementation switches: lrfast always runs its own fused CPU kernels.
# foreach/fused are requests for torch's implementations; False means the same as
# None (no request), anything true is refused.
_FLAG_OK = {"foreach": (None, False), "fused": (None, False), "capturable": (False,),
            "differentiable": (False,)}
_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_HALF = (torch.bfloat16, torch.float16)


def _np_view(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor's memory (bfloat16 through ml_dtypes)."""
    if t.dtype == torch.bfloat16:
        from ..optim._lowp import bfloat16
        return t.detach().view(torch.int16).numpy().view(bfloat16())
    return t.detach().numpy()


def _scalar_dtype() -> torch.dtype:
    # torch.optim's per-param scalars ("step", "mu_product", "eta", "mu") use
    # float64 when the default dtype is float64, else float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _round(x: float, dt: torch.dtype) -> float:
    """x stored in a tensor of dtype dt, read back (torch's scalar states)."""
    return float(np.float32(x)) if dt == torch.float32 else float(x)


class _Group:
    """One param group compiled: its values as last seen, its kernel row plan."""
    __slots__ = ("d", "params", "n", "vals", "fixed", "stepfn", "lr", "hp", "where")

    def __init__(self, d, where):
        self.d = d
        self.params = d["params"]
        self.n = len(self.params)
        self.where = where
        self.vals: Tuple[Any, ...] = ()
        self.fixed: Tuple[float, ...] = ()
        self.stepfn: Any = None
        self.lr = 0.0
        self.hp: Dict[str, Any] = {}


class TorchOptimizer(torch.optim.Optimizer):
    """Base class of the ``lrfast.torch`` optimizers (see the package docstring)."""

    spec: Spec
    torch_class: Optional[type] = None   # the torch.optim counterpart, if any
    _rule: Rule
    _kind: int
    _flags: Dict[str, Any] = {}          # torch-only arguments -> their defaults
    _master = False                       # master_weights=True: 16-bit params, float32 master
    _extras: Tuple[str, ...] = ()        # per-param scalar states beyond "step"
    _names: Tuple[str, ...] = ()         # the group keys a step reads
    _getter: Any = None
    _keys: Any = None

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        spec = cls.__dict__.get("spec")
        if spec is None:
            return
        cls._rule = RULES[spec.name]
        cls._kind = _K.KINDS[spec.kind]
        cls._extras = {"NAdam": ("mu_product",), "ASGD": ("eta", "mu")}.get(spec.name, ())
        ref = spec.refs.get("torch")
        cls.torch_class = getattr(torch.optim, ref.rsplit(".", 1)[-1], None) if ref else None
        cls.__init__ = _make_init(cls)   # type: ignore[method-assign]

    def __init__(self, params: Any, defaults: Dict[str, Any], flags: Dict[str, Any],
                 master_weights: bool = False, state_dtype: Optional[str] = "float32") -> None:
        name = type(self).__name__
        _check_state_dtype(name, state_dtype, bool(KINDS[self.spec.kind].qmaps))
        if master_weights is True and not KINDS[self.spec.kind].qmaps:
            raise ValueError(f"lrfast.torch.{name}: master_weights=True is available for the "
                             "elementwise optimizers (SGD, Adam, AdamW, Lion, ...)")
        for k, v in flags.items():
            if v not in _FLAG_OK.get(k, (self._flags.get(k),)):
                raise ValueError(f"lrfast.torch.{name}: {k}={v!r} is not supported (lrfast "
                                 f"runs its own fused CPU kernels; leave {k} at its default "
                                 f"{self._flags.get(k)!r})")
        if not isinstance(master_weights, bool):
            raise TypeError(f"master_weights must be a bool, got {master_weights!r}")
        self._master = master_weights
        self._lp = _LP.Precision(name, KINDS[self.spec.kind], state_dtype or "float32",
                                 master_weights, False, 0)
        self._ready = False
        self._groups: List[_Group] = []
        self._sdt = _scalar_dtype()
        super().__init__(params, {**defaults, **flags})
        self._ready = True
        self._rebuild()

    # ------------------------------------------------------------ structure
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group, as torch's; its params and values are checked now (a
        bad group is refused and nothing changes)."""
        n = len(self.param_groups)
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        try:
            for j, p in enumerate(g["params"]):
                self._param_view(p, f"group {n}, param {j}")
            self._compile(_Group(g, f"group {n}: "))
            if self._ready:
                self._rebuild()
        except Exception:
            del self.param_groups[n:]
            if self._ready:
                self._rebuild()
            raise

    def _stale(self) -> bool:
        pgs = self.param_groups
        if len(pgs) != len(self._groups):
            return True
        for d, g in zip(pgs, self._groups):
            if d is not g.d or d["params"] is not g.params or len(g.params) != g.n:
                return True
        return False

    def _param_view(self, p: Any, where: str) -> np.ndarray:
        name = type(self).__name__
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"lrfast.torch.{name}: {where} is a {type(p).__name__}, not a "
                            "torch.Tensor")
        if p.device.type != "cpu":
            raise ValueError(f"lrfast.torch.{name}: {where} is on {p.device}; lrfast steps "
                             "CPU tensors only (keep the params the optimizer sees in host "
                             "memory, or use torch.optim on the device)")
        if p.layout != torch.strided:
            raise ValueError(f"lrfast.torch.{name}: {where} has layout {p.layout}; only dense "
                             "(strided) tensors are supported")
        master = getattr(self, "_master", False)      # (WrappedOptimizer shares this check)
        if master and p.dtype not in _HALF:
            raise TypeError(f"lrfast.torch.{name}: {where} has dtype {p.dtype}; "
                            "master_weights=True takes bfloat16 and float16 params")
        if p.dtype not in _DTYPES and not master:
            raise TypeError(f"lrfast.torch.{name}: {where} has dtype {p.dtype}; lrfast steps "
                            "float32 and float64 tensors, and bfloat16 and float16 ones "
                            "with master_weights=True")
        if not p.is_contiguous():
            raise ValueError(f"lrfast.torch.{name}: {where} is not contiguous (the kernels "
                             "update the tensor's memory in place)")
        return _np_view(p)

    def _state_dtype(self, p: torch.Tensor) -> torch.dtype:
        """The dtype of p's state tensors: float32 under master weights, else p's."""
        return torch.float32 if self._master else p.dtype

    def _np_dtype(self, p: torch.Tensor) -> Any:
        return np.float32 if self._master else _DTYPES[p.dtype]

    def _fmt(self, p: torch.Tensor, slot: int) -> int:
        """The stored format of p's state slot (float, bfloat16 or 8-bit)."""
        return self._lp.state_format(slot, p.numel()) if self._lp.qmaps else _LP.F_NATIVE

    def _encode(self, fmt: int, x: np.ndarray) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """float32 values x in a non-float format, as torch tensors owning the
        memory the kernels will use: (bfloat16 tensor, None) or (uint8 codes,
        float32 absmax per block of 256)."""
        a, am = self._lp.encode(fmt, np.ascontiguousarray(x, dtype=np.float32))
        if fmt == _LP.F_BF16:
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16), None
        assert am is not None
        return torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(am)

    def _decode(self, fmt: int, t: torch.Tensor, am: Optional[torch.Tensor]) -> np.ndarray:
        """A stored state tensor as float32 values (a new array)."""
        if fmt in (_LP.F_Q8S, _LP.F_Q8U):
            assert am is not None
            return self._lp.decode(fmt, t.detach().contiguous().numpy(),
                                   am.detach().contiguous().numpy()).copy()
        if fmt == _LP.F_BF16:
            return _LP.widen(_np_view(t.detach().contiguous())).copy()
        return t.detach().to(torch.float32).numpy().copy()

    def _src_format(self, p: torch.Tensor, slot: int, nm: str, t: torch.Tensor,
                    am: Any, where: str) -> int:
        """The format a state tensor (and its absmax, or None) is stored in;
        raises on a malformed pair."""
        name = f"lrfast.torch.{type(self).__name__}: {where}"
        if t.dtype == torch.uint8:
            if not self._lp.qmaps:
                raise ValueError(f"{name}: state {nm!r} has dtype uint8 (8-bit codes); "
                                 f"{type(self).__name__} keeps float state")
            if am is None:
                raise ValueError(f"{name}: 8-bit state {nm!r} lacks {nm + '_absmax'!r}")
            nb = _LP.nblocks(p.numel())
            if (not isinstance(am, torch.Tensor) or am.dtype != torch.float32 or am.ndim != 1
                    or am.layout != torch.strided):
                raise ValueError(f"{name}: state {nm + '_absmax'!r} must be a 1-D float32 "
                                 "tensor")
            if am.shape[0] != nb:
                raise ValueError(f"{name}: state {nm + '_absmax'!r} has {am.shape[0]} blocks, "
                                 f"a param of {p.numel()} elements has {nb} blocks of "
                                 f"{_LP.QBLOCK}")
            return _LP.F_Q8S if self._lp.qmaps[slot] == "s" else _LP.F_Q8U
        if am is not None:
            raise ValueError(f"{name}: state {nm + '_absmax'!r} given for a state that is not "
                             "8-bit (uint8 codes)")
        if t.dtype == torch.bfloat16 and self._lp.qmaps:
            return _LP.F_BF16
        return _LP.F_NATIVE

    def _compile(self, g: _Group) -> None:
        """Validate group g's values and build its row plan (raises before any change)."""
        spec, d, where = self.spec, g.d, g.where
        name = type(self).__name__
        for k, ok in ((k, _FLAG_OK.get(k, (v,))) for k, v in self._flags.items()):
            if k in d and d[k] not in ok:
                raise ValueError(f"lrfast.torch.{name}: {where}{k}={d[k]!r} is not supported "
                                 f"(leave it at {self._flags[k]!r})")
        hp = {}
        for h in spec.hparams:
            v = d[h.name]
            if isinstance(v, torch.Tensor):
                raise TypeError(f"lrfast.torch.{name}: {where}{h.name} is a Tensor; give a "
                                "number")
            hp[h.name] = check_value(v, h.name, h.check, where)
        self._rule.check(hp, where)
        fixed, stepfn = self._rule.plan(hp)
        if spec.name == "NAdam" and self._sdt == torch.float32:
            stepfn = _nadam_f32(hp)
        elif spec.name == "ASGD":
            stepfn = _asgd_stored(stepfn, self._sdt)
        kind = KINDS[spec.kind]
        g.fixed = tuple(float(fixed[f]) for f in kind.fields)
        g.stepfn, g.lr, g.hp = stepfn, hp["lr"], hp
        g.vals = self._vals(d)

    def _vals(self, d: Dict[str, Any]) -> Tuple[Any, ...]:
        return self._getter(d)

    def _slots(self, hp: Dict[str, Any], dt: Any) -> List[bool]:
        return [a is not None for a in self._rule.alloc(np.zeros(1, dt), hp)]

    def _always_needed(self, slot: int, p: torch.Tensor, hp: Dict[str, Any]) -> bool:
        """State slot ``slot`` exists under the table's default hyperparameters
        (no option switched on), so a stepped param's saved state must hold it:
        its absence is a malformed checkpoint, not an option turned on later."""
        dflt = dict(hp)
        dflt.update((k, v) for k, v in self.spec.defaults.items() if k in hp)
        return bool(self._slots(dflt, self._np_dtype(p))[slot])

    def _fill(self, hp: Dict[str, Any], dt: Any, slot: int) -> float:
        a = self._rule.alloc(np.zeros(1, dt), hp)[slot]
        assert a is not None
        return float(a[0])

    def _rebuild(self) -> None:
        """(Re)build the engine over the current groups and state: adopts the
        state tensors in ``self.state`` (torch's, or loaded), allocates what is
        missing. Validates everything before changing anything."""
        spec = self.spec
        name = type(self).__name__
        self._sdt = _scalar_dtype()
        for st in self.state.values():          # loaded scalar states keep their dtype
            v = st.get(self._extras[0]) if self._extras else None
            if isinstance(v, torch.Tensor) and v.dtype in _DTYPES:
                self._sdt = v.dtype
                break
        groups = [_Group(d, f"group {gi}: ") for gi, d in enumerate(self.param_groups)]
        for g in groups:
            self._compile(g)
        plist: List[torch.Tensor] = []
        group_of: List[int] = []
        seen = set()
        for gi, g in enumerate(groups):
            for p in g.params:
                if id(p) in seen:
                    raise ValueError(f"lrfast.torch.{name}: a param appears twice in the "
                                     "param groups")
                seen.add(id(p))
                plist.append(p)
                group_of.append(gi)
        views = [self._param_view(p, f"group {group_of[i]}, param {i}")
                 for i, p in enumerate(plist)]
        self._check_lowp_params(plist, group_of)
        sdt = _scalar_dtype()
        n = len(plist)
        steps_t = torch.zeros(n, dtype=sdt)
        steps = steps_t.numpy()
        plans = self._plan_states(groups, plist, group_of, views)
        masters = [self._master_of(p, f"group {group_of[i]}, param {i}")
                   for i, p in enumerate(plist)] if self._master else []
        # commit
        self._groups, self._plist, self._group_of = groups, plist, group_of
        self._bufs = [b for b, _, _, _, _ in plans]
        self._amx = [a for _, a, _, _, _ in plans]
        self._ptrs = [p.data_ptr() for p in plist]
        self._steps_t, self._steps = steps_t, steps
        self._xt: List[Optional[List[torch.Tensor]]] = [None] * n   # extras' tensors
        self._unpub = set()
        keys = []
        for i, (bufs, amx, key, t, extras) in enumerate(plans):
            st = self.state.get(plist[i])
            if st and any(k != "master_param" for k in st):
                self._put_states(st, bufs, amx)
                if spec.has_step:
                    steps[i] = t
                    st["step"] = steps_t[i]
                if extras is not None:
                    st.update(zip(self._extras, extras))
                    self._xt[i] = extras
            else:
                self._unpub.add(i)
            keys.append(key)
        self._n = n
        self._gview: List[Any] = [None] * n     # cached grad views ...
        self._gten: List[Any] = [None] * n      # ... of these grad tensors
        self._engine = _K.Engine(self._kind, views,
                                 [[_np_view(b) if b is not None else None for b in bufs]
                                  for bufs in self._bufs], group_of,
                                 lowp=self._lowp(plist, views, masters))
        self._set_keys(keys)
        if spec.name == "Adagrad":        # torch fills Adagrad's state when it is built
            self._publish(list(self._unpub))

    def _check_lowp_params(self, plist: List[torch.Tensor], group_of: List[int]) -> None:
        if self._lp.state_dtype == "float32":
            return
        for i, p in enumerate(plist):
            if p.dtype == torch.float64:
                raise TypeError(f"lrfast.torch.{type(self).__name__}: group {group_of[i]}, "
                                f"param {i} has dtype float64; state_dtype="
                                f"{self._lp.state_dtype!r} takes float32 params (or "
                                "bfloat16/float16 ones with master_weights=True)")

    def _put_states(self, st: Dict[str, Any], bufs: List[Optional[torch.Tensor]],
                    amx: List[Optional[torch.Tensor]]) -> None:
        """Publish a param's state tensors (and 8-bit absmax) in its state entry."""
        for s, nm in enumerate(self.spec.states):
            if s < len(bufs) and bufs[s] is not None:
                st[nm] = bufs[s]
                if amx[s] is not None:
                    st[nm + "_absmax"] = amx[s]
                else:
                    st.pop(nm + "_absmax", None)

    def _lowp(self, plist, views, masters) -> Optional[Dict[str, Any]]:
        """The engine's low-precision setup under master weights (each master
        published as state 'master_param') or a bfloat16/int8 state_dtype,
        else None."""
        if not self._master and self._lp.state_dtype == "float32":
            return None
        for p, m in zip(plist, masters):
            self.state[p]["master_param"] = m
        n, pad = len(plist), _LP.MAX_STATES
        sfmt, amax = [], []
        for p, bufs, amx in zip(plist, self._bufs, self._amx):
            sfmt.append([self._fmt(p, s) if b is not None else _LP.F_NATIVE
                         for s, b in enumerate(bufs)] + [_LP.F_NATIVE] * (pad - len(bufs)))
            amax.append([a.numpy() if a is not None else None for a in amx]
                        + [None] * (pad - len(amx)))
        return {"pfmt": [_LP.param_format(v) for v in views], "sfmt": sfmt,
                "master": [m.numpy() for m in masters] if self._master else [None] * n,
                "amax": amax, "sr": False, "seed": 0}

    def _master_of(self, p: torch.Tensor, where: str) -> torch.Tensor:
        """p's float32 master copy: the one in its state (loaded), else p widened."""
        m = self.state.get(p, {}).get("master_param")
        if m is None:
            return p.detach().float().clone()
        if (not isinstance(m, torch.Tensor) or m.shape != p.shape or m.dtype != torch.float32
                or m.device.type != "cpu"):
            raise ValueError(f"lrfast.torch.{type(self).__name__}: {where}: state "
                             f"'master_param' must be a float32 CPU tensor of shape "
                             f"{tuple(p.shape)}")
        return m.detach().contiguous() if not m.is_contiguous() else m.detach()

    def _plan_states(self, groups, plist, group_of, views):
        """Per param, (storage, key, step, extras): its state in self.state
        adopted, or (before its first step) the buffers it had or new ones.
        Raises before anything is written."""
        old = {id(p): (b, a) for p, b, a in zip(getattr(self, "_plist", []),
                                                getattr(self, "_bufs", []),
                                                getattr(self, "_amx", []))}
        plans = []
        for i, p in enumerate(plist):
            where = f"group {group_of[i]}, param {i}"
            hp = groups[group_of[i]].hp
            dt = self._np_dtype(p)
            need = self._slots(hp, dt)
            st = self.state.get(p)
            if st and any(k != "master_param" for k in st):
                plans.append(self._adopt(p, st, need, hp, where))
                continue
            bufs, amx = old.get(id(p), (None, None))
            if bufs is None or [b is not None for b in bufs] != need:
                bufs, amx = [], []
                for s in range(len(need)):
                    b, a = None, None
                    if need[s]:
                        b, a = self._fresh(p, s, self._fill(hp, dt, s))
                    bufs.append(b)
                    amx.append(a)
            plans.append((bufs, amx, self._rule.initial_key, None, None))
        return plans

    def _fresh(self, p: torch.Tensor, s: int, fill: float
               ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """p's state slot s filled with ``fill``, in its stored format."""
        fmt = self._fmt(p, s)
        if fmt == _LP.F_NATIVE:
            return torch.full_like(p.detach(), fill, dtype=self._state_dtype(p)), None
        t, a = self._encode(fmt, np.full(tuple(p.shape), fill, np.float32))
        return t.reshape(p.shape), a

    def _adopt_slot(self, p: torch.Tensor, s: int, nm: str, t: torch.Tensor, am: Any,
                    where: str) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """State slot s of p as stored (with its absmax, or None): adopted as it
        is where it fits, else a fitting copy, converted from another stored
        format (float, bfloat16, 8-bit) where it has one."""
        src, dst = self._src_format(p, s, nm, t, am, where), self._fmt(p, s)
        if src != dst:          # another stored format (a loaded state_dict): convert
            x = self._decode(src, t.to("cpu"), am.to("cpu") if am is not None else None)
            if dst == _LP.F_NATIVE:
                return torch.from_numpy(x).to(self._state_dtype(p)), None
            t, am = self._encode(dst, x)
            return t.reshape(p.shape), am
        if dst == _LP.F_NATIVE:
            sdt = self._state_dtype(p)
        else:
            sdt = torch.uint8 if am is not None else torch.bfloat16
        if (t.device.type != "cpu" or t.dtype != sdt or t.layout != torch.strided
                or not t.is_contiguous() or t.requires_grad):
            t = t.detach().to(device="cpu", dtype=sdt).contiguous().clone()
        if am is not None and (am.device.type != "cpu" or not am.is_contiguous()
                               or am.requires_grad):
            am = am.detach().to("cpu").contiguous().clone()
        return t, am

    def _adopt(self, p, st, need, hp, where):
        """(bufs, key, step, extras) for a param whose state exists in self.state."""
        spec, name = self.spec, type(self).__name__
        bufs: List[Optional[torch.Tensor]] = []
        amx: List[Optional[torch.Tensor]] = []
        for s, nm in enumerate(spec.states[:len(need)]):
            t = st.get(nm)
            amx.append(None)
            if not need[s]:
                bufs.append(None)
                continue
            if t is None:
                if nm in spec.optional_states:     # SGD before its first momentum step
                    t = torch.zeros_like(p.detach())
                elif spec.has_step:                # an option switched on after the start
                    if self._always_needed(s, p, hp):   # ... which no option gives
                        raise ValueError(f"lrfast.torch.{name}: {where}: state lacks {nm!r}")
                    t = torch.full_like(p.detach(), self._fill(hp, self._np_dtype(p), s),
                                        dtype=self._state_dtype(p))
                else:
                    t = torch.zeros_like(p.detach())
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"lrfast.torch.{name}: {where}: state {nm!r} must be a "
                                f"Tensor, got {type(t).__name__}")
            if t.shape != p.shape:
                raise ValueError(f"lrfast.torch.{name}: {where}: state {nm!r} has shape "
                                 f"{tuple(t.shape)}, param has {tuple(p.shape)}")
            t, amx[s] = self._adopt_slot(p, s, nm, t, st.get(nm + "_absmax"), where)
            bufs.append(t)
        e = {k: (float(v) if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
             for k, v in st.items()}
        t_step = 0
        if spec.has_step:
            if "step" not in e:
                raise ValueError(f"lrfast.torch.{name}: {where}: state lacks 'step'")
            v = e["step"]
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0
                    or v != int(v) or v > 2 ** 53):
                raise ValueError(f"lrfast.torch.{name}: {where}: state 'step' must be a "
                                 f"whole number >= 0, got {st['step']!r}")
            t_step = int(v)
        if not spec.has_step:      # SGD: started once a momentum buffer exists
            e = {"momentum_buffer": st.get("momentum_buffer")}
        key = self._rule.entry_key(t_step, e, f"lrfast.torch.{name}: {where}")
        extras = None
        if self._extras:
            extras = []
            for k, v in zip(self._extras, key[1:]):
                extras.append(torch.tensor(v, dtype=self._sdt))
        return bufs, amx, key, t_step, extras

    # -------------------------------------------------------------- keys
    def _set_keys(self, keys: List[Any]) -> None:
        """Per-param keys -> each group's distinct keys and each param's row."""
        ukeys, cls = distinct_keys(keys, self._group_of, len(self._groups),
                                   self._rule.initial_key)
        self._ukeys, self._cls, self._keys = ukeys, cls, keys
        if all(len(u) == 1 for u in ukeys):
            self._engine.set_row_map(None)
        else:
            off, o = [], 0
            for u in ukeys:
                off.append(o)
                o += len(u)
            self._engine.set_row_map([off[g] + c for g, c in zip(self._group_of, cls)])

    def _publish(self, idx: List[int]) -> None:
        """Make params' state visible in self.state (at their first step, as torch)."""
        spec = self.spec
        for i in idx:
            entries: Dict[str, Any] = {}
            if spec.has_step:
                entries["step"] = self._steps_t[i]
            if self._extras:
                self._xt[i] = [torch.tensor(0.0, dtype=self._sdt) for _ in self._extras]
                self._write_extras(i)
                entries.update(zip(self._extras, self._xt[i] or ()))
            for nm, b, a in zip(spec.states, self._bufs[i], self._amx[i]):
                if b is not None:
                    entries[nm] = b
                if a is not None:
                    entries[nm + "_absmax"] = a
            if entries:             # SGD without momentum keeps no state, as torch
                self.state[self._plist[i]].update(entries)
            self._unpub.discard(i)

    def _write_extras(self, i: int) -> None:
        xt = self._xt[i]
        if xt is not None:
            assert self._keys is not None
            for t, v in zip(xt, self._keys[i][1:]):
                t.fill_(v)

    # -------------------------------------------------------------- step
    def step(self, closure=None):  # type: ignore[override]
        """One update of every param that has a grad (``p.grad``; params whose
        grad is None are skipped, their state and step count unchanged).

        ``closure`` (optional) re-evaluates the model and returns the loss; it
        runs with grad enabled before the update. Step hooks (the optimizer's
        and torch's global ones) and the profiler's record run as torch's."""
        if (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or _optim_mod._global_optimizer_pre_hooks
                or _optim_mod._global_optimizer_post_hooks
                or torch.autograd._profiler_enabled()):
            return _hooked_step(self, closure)
        return self._step(closure)

    step.hooked = True     # type: ignore[attr-defined]  # torch must not wrap it again

    def _step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._stale():
            self._rebuild()
        groups = self._groups
        for g in groups:
            vals = self._vals(g.d)
            if vals != g.vals:
                self._sync(g, vals)
        if self._stale():                # _sync may have needed new state arrays
            self._rebuild()
            groups = self._groups
        grads = self._grads()
        rows = []
        new_keys = []
        for g, ukeys in zip(groups, self._ukeys):
            nk = []
            stepfn, fixed, lr = g.stepfn, g.fixed, g.lr
            for key in ukeys:
                sv, k2 = stepfn(key, lr)
                rows.append(fixed + sv)
                nk.append(k2)
            new_keys.append(nk)
        na, _, _ = self._engine.step(grads, rows)
        del grads
        if na == self._n:
            self._ukeys = new_keys
            self._keys = None     # derived when needed
            if self.spec.has_step:
                self._steps += 1
            if self._extras:
                self._all_keys()
                for i in range(self._n):
                    self._write_extras(i)
            if self._unpub:
                self._publish(list(self._unpub))
        elif na:
            self._advance(self._engine.active(), new_keys)
        return loss

    def _advance(self, active: List[bool], new_keys) -> None:
        keys = self._all_keys()
        out = []
        pub = []
        for i, key in enumerate(keys):
            if active[i]:
                key = new_keys[self._group_of[i]][self._cls[i]]
                if self.spec.has_step:
                    self._steps[i] += 1
                if i in self._unpub:
                    pub.append(i)
            out.append(key)
        self._set_keys(out)
        if pub:
            self._publish(pub)
        if self._extras:
            for i in range(self._n):
                if active[i]:
                    self._write_extras(i)

    def _all_keys(self) -> List[Any]:
        if self._keys is None:
            self._keys = [self._ukeys[g][c] for g, c in zip(self._group_of, self._cls)]
        return self._keys

    def _sync(self, g: _Group, vals: Tuple[Any, ...]) -> None:
        """The group's values changed since the last step (a scheduler, or the
        user): a new lr is one range check; anything else re-plans the group."""
        changed = [k for k, a, b in zip(self._names, vals, g.vals) if a is not b and a != b]
        if changed == ["lr"]:
            v = g.d["lr"]
            if isinstance(v, torch.Tensor):
                raise TypeError(f"lrfast.torch.{type(self).__name__}: {g.where}lr is a Tensor;"
                                " give a number")
            g.lr = check_value(v, "lr", "ge0", g.where)
            g.hp["lr"] = g.lr
            g.vals = vals
            return
        before = {i: self._slots(g.hp, self._np_dtype(self._plist[i]))
                  for i in range(self._n) if self._groups[self._group_of[i]] is g}
        trial = _Group(g.d, g.where)
        self._compile(trial)
        for i, had in before.items():
            if self._slots(trial.hp, self._np_dtype(self._plist[i])) != had:
                g.n = -1            # new state arrays needed: rebuild the engine
                return
        g.fixed, g.stepfn, g.lr, g.hp, g.vals = (trial.fixed, trial.stepfn, trial.lr,
                                                 trial.hp, trial.vals)

    def _grads(self) -> List[Any]:
        out: List[Any] = []
        gview, gten, ptrs = self._gview, self._gten, self._ptrs
        for i, p in enumerate(self._plist):
            g = p.grad
            if g is None:
                out.append(None)
            elif g is gten[i]:
                out.append(gview[i])
            else:
                out.append(self._grad_view(i, p, g))
            if p.data_ptr() != ptrs[i]:
                raise RuntimeError(
                    f"lrfast.torch.{type(self).__name__}: param {i}'s memory changed since "
                    "the optimizer was built (p.data was reassigned); build a new optimizer")
        return out

    def _check_grad(self, i: int, p: torch.Tensor, g: torch.Tensor, layout: Any,
                    layout_hint: str) -> Tuple[str, str]:
        """Refuse param i's grad g unless it fits: requires_grad, device, layout
        (else ``layout_hint``), dtype. Returns (class name, where) for messages."""
        name, where = type(self).__name__, f"group {self._group_of[i]}, param {i}"
        if not p.requires_grad:
            raise ValueError(f"lrfast.torch.{name}: {where} has requires_grad=False but a "
                             "grad; set p.grad = None or p.requires_grad_(True)")
        if g.device != p.device:
            raise ValueError(f"lrfast.torch.{name}: {where}'s grad is on {g.device}, the param "
                             f"on {p.device}")
        if g.layout != layout:
            raise ValueError(f"lrfast.torch.{name}: {where}'s grad has layout {g.layout}; "
                             + layout_hint.format(name=name))
        if g.dtype != p.dtype:
            raise TypeError(f"lrfast.torch.{name}: {where}'s grad has dtype {g.dtype}, the "
                            f"param {p.dtype}")
        return name, where

    def _grad_view(self, i: int, p: torch.Tensor, g: torch.Tensor) -> np.ndarray:
        name, where = TorchOptimizer._check_grad(self, i, p, g, torch.strided,
                                                 "sparse grads are not supported")
        if not g.is_contiguous():
            raise ValueError(f"lrfast.torch.{name}: {where}'s grad is not contiguous")
        v = _np_view(g)
        self._gview[i], self._gten[i] = v, g
        return v

    # ------------------------------------------------------------ torch API
    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad`` (the optimizer also drops its grad views)."""
        super().zero_grad(set_to_none)
        if getattr(self, "_ready", False) and "_gview" in self.__dict__:   # (a copy: none yet)
            self._gview[:] = [None] * self._n
            self._gten[:] = [None] * self._n

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch's ``load_state_dict`` (torch.optim's format); the loaded state
        is then checked and adopted by the kernels. A state_dict that does not
        fit raises and leaves the optimizer as it was."""
        old_state, old_groups = self.state, self.param_groups
        super().load_state_dict(state_dict)
        if not self._master:
            # a master copy saved under master weights is not this optimizer's state (as
            # the plain optimizers drop it): kept, it would go stale as the params step
            # and come back as the master of a later master-weights load
            for st in self.state.values():
                st.pop("master_param", None)
        if self._master or self._lp.qmaps:
            # torch casts loaded state to the param's dtype: float32 state and masters
            # (under master weights), bfloat16 states and 8-bit codes with their absmax
            # keep their own dtypes, so take the saved tensors' values. A low-precision
            # optimizer takes copies of them all (torch would alias those it did not
            # cast: the steps would then write some of the loaded dict's tensors, e.g.
            # an absmax and not its codes)
            keep = {"master_param", *self.spec.states,
                    *(nm + "_absmax" for nm in self.spec.states)}
            lowp = self._master or self._lp.state_dtype != "float32"
            ids = [i for g in state_dict.get("param_groups", []) for i in g.get("params", [])]
            saved = state_dict.get("state", {})
            for p, i in zip([p for g in self.param_groups for p in g["params"]], ids):
                st = self.state.get(p, {})
                for k, v in (saved.get(i) or {}).items():
                    if (k in keep and isinstance(v, torch.Tensor) and k in st
                            and isinstance(st[k], torch.Tensor)
                            and (lowp or st[k].dtype != v.dtype)):
                        st[k] = v.detach().to("cpu").clone()
        try:
            self._rebuild()
        except Exception:
            self.state, self.param_groups = old_state, old_groups
            self._rebuild()
            raise

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state["_lrfast_precision"] = (self._master, self._lp.state_dtype)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        master, sdtype = state.pop("_lrfast_precision", (False, "float32"))
        super().__setstate__(state)
        if "_groups" not in self.__dict__:      # unpickled: built at the first step
            self._ready = True
            self._groups = []
            self._sdt = _scalar_dtype()
            self._master = master
            self._lp = _LP.Precision(type(self).__name__, KINDS[self.spec.kind], sdtype,
                                     master, False, 0)


def _check_state_dtype(name: str, state_dtype: Any, elementwise: bool) -> None:
    """Refuse a state_dtype that is not one of float32, bfloat16, int8 (None:
    float32), or a low-precision one where the optimizer has no such state."""
    if state_dtype is not None and (not isinstance(state_dtype, str)
                                    or state_dtype not in _LP.STATE_DTYPES):
        raise ValueError(f"lrfast.torch.{name}: state_dtype must be one of "
                         f"{', '.join(map(repr, _LP.STATE_DTYPES))}, got {state_dtype!r}")
    if state_dtype not in (None, "float32") and not elementwise:
        raise ValueError(f"lrfast.torch.{name}: state_dtype={state_dtype!r} is available for "
                         "the elementwise optimizers (SGD, Adagrad, Adadelta, RMSprop, Adam, "
                         "AdamW, Adamax, NAdam, RAdam, Lion, AdaBelief, Yogi, ADOPT)")


def _plain_step(self, closure=None):
    return self._step(closure)


_plain_step.__name__ = _plain_step.__qualname__ = "step"
_hooked_step = torch.optim.Optimizer.profile_hook_step(_plain_step)


def _nadam_f32(hp):
    """NAdam's step with torch's float32 ``mu_product`` (``mu_product *= mu`` in
    float32, read back as a Python float); else as lrfast's NAdam rule."""
    b1, b2 = hp["betas"]
    md, wd = hp["momentum_decay"], hp["weight_decay"]
    dec = bool(hp["decoupled_weight_decay"])

    def step(key, lr):
        t, mp = key
        t += 1
        mu = b1 * (1.0 - 0.5 * (0.96 ** (t * md)))
        mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * md)))
        mp = float(np.float32(mp) * np.float32(mu))
        den = 1.0 - mp * mu_next
        if 1.0 - mp == 0.0 or den == 0.0:
            raise ValueError(f"NAdam: momentum product {mp!r} makes the step divide by zero")
        return ((1 - b2 ** t, lr * (1.0 - mu) / (1.0 - mp), lr * mu_next / den,
                 _dm(lr, wd, dec)), (t, mp))
    return step


def _asgd_stored(inner, sdt):
    """ASGD's step with eta and mu as torch stores them: ``as_tensor`` (the
    default dtype) copied into the state tensors (dtype sdt)."""
    def rnd(x):
        if sdt == torch.float32 or torch.get_default_dtype() != torch.float64:
            return float(np.float32(x))
        return float(x)

    def step(key, lr):
        t, eta, mu = key
        if eta is None:                 # first step: eta = lr as a scalar tensor
            eta = float(np.float32(lr)) if sdt == torch.float32 else float(lr)
        sv, (t, eta, mu) = inner((t, eta, mu), lr)
        return sv, (t, rnd(eta), rnd(mu))
    return step


def _make_init(cls, base=None, positional=False):
    """``__init__`` with torch.optim's signature for cls's counterpart (its
    order, defaults and torch-only switches), else the table's; it calls
    ``base.__init__(self, params, defaults, flags, master_weights)``. With
    ``positional``, the table's own positional order where torch has no class
    (the reference packages' signatures), else only ``lr`` is positional."""
    spec = cls.spec
    table = {h.name: h for h in spec.hparams}
    sig: List[Tuple[str, Any, bool]] = []     # (name, default, keyword-only)
    flags: Dict[str, Any] = {}
    if cls.torch_class is not None:
        # torch's group keys (AdamW's carry decoupled_weight_decay=True, not an argument)
        built = cls.torch_class([torch.zeros(1, 1, requires_grad=True)]).defaults
        flags.update({k: v for k, v in built.items() if k not in table})
        for prm in list(inspect.signature(cls.torch_class.__init__).parameters.values())[2:]:
            kwonly = prm.kind == prm.KEYWORD_ONLY
            if prm.name in table:
                sig.append((prm.name, table[prm.name].default, kwonly))
            else:
                flags[prm.name] = prm.default
                sig.append((prm.name, prm.default, kwonly))
    have = {s[0] for s in sig}
    for h in spec.hparams:
        if h.name not in have:
            sig.append((h.name, h.default,
                        h.kwonly if positional else (True if sig or h.kwonly else h.kwonly)))
    sig.sort(key=lambda s: s[2])               # stable: positional first
    cls._flags = flags
    cls._names = tuple(h.name for h in spec.hparams) + tuple(flags)
    cls._getter = staticmethod(operator.itemgetter(*cls._names))
    args = {n for n, _, _ in sig}        # flags not in args are group keys only (AdamW's)
    pos = [f"{n}=_d[{n!r}]" for n, _, k in sig if not k]
    kwo = [f"{n}=_d[{n!r}]" for n, _, k in sig if k] + ["master_weights=False",
                                                         "state_dtype='float32'"]
    hps = ", ".join(f"{h.name}={h.name}" for h in spec.hparams)
    fls = ", ".join(f"{f}={f}" if f in args else f"{f}={v!r}" for f, v in flags.items())
    src = (f"def __init__(self, params, {', '.join(pos)}, *, {', '.join(kwo)}):\n"
           f"    _Base.__init__(self, params, dict({hps}), dict({fls}), master_weights, "
           "state_dtype)\n")
    ns: Dict[str, Any] = {"_Base": base or TorchOptimizer, "_d": {n: d for n, d, _ in sig}}
    exec(src, ns)
    fn = ns["__init__"]
    fn.__qualname__ = f"{cls.__name__}.__init__"
    ref = spec.refs.get("torch") or spec.refs.get("optax", "lrfast")
    switches = f" (its switches {', '.join(flags)} at their defaults)" if flags else ""
    fn.__doc__ = f"{spec.doc}; the signature and defaults of {ref.split(' ')[0]}{switches}."
    return fn
