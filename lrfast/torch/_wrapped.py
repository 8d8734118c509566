"""``lrfast.torch`` classes that drive one :mod:`lrfast` optimizer over the
tensors' memory: the optimizers whose step is more than one fused loop with
torch-shaped state (per-tensor and global sums, engine-held scalars, factored
state, matrix iterations, row-sparse grads, train/eval modes).

Design
------
torch owns the interface (``param_groups``, ``state``, hooks, ``zero_grad``);
an inner ``lrfast.<Name>`` optimizer, built over ``Tensor.numpy()`` views of the
params, owns the arithmetic and the state arrays. ``self.state[p]`` holds
``torch.from_numpy`` views of those same arrays (published at a param's first
step, as torch), so nothing is copied either way; per-param numbers (``step``,
NovoGrad's ``nu``, Prodigy's ``d``...) are refreshed after every step.

Per step: group values that changed since the last step (a scheduler setting
``group["lr"]``) are passed to the inner optimizer, which validates them; the
grads are viewed (cached per grad tensor); one inner step; the state numbers
refreshed. ``load_state_dict`` takes torch's format, converts it to lrfast's
and lets the inner optimizer validate and copy it (nothing changes on error).

Adding an optimizer is one line: ``class X(WrappedOptimizer): lrfast_class =
lrfast.X`` (its torch.optim counterpart, if the table names one, gives the
signature, as for :class:`~lrfast.torch.TorchOptimizer`).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.optim.optimizer as _optim_mod

from ..optim._sparse import RowSparse
from ..optim._table import REQUIRED, Spec
from ._optimizer import _FLAG_OK, TorchOptimizer, _check_state_dtype, _make_init, _scalar_dtype

__all__ = ["WrappedOptimizer"]


class WrappedOptimizer(torch.optim.Optimizer):
    """Base of the ``lrfast.torch`` optimizers that drive an inner lrfast
    optimizer (see the module docstring)."""

    lrfast_class: Any = None
    spec: Spec
    torch_class: Optional[type] = None
    _flags: Dict[str, Any] = {}
    _names: Any = ()
    _getter: Any = None
    _int_step = False          # torch.optim.SparseAdam keeps "step" as a Python int
    _sparse = False            # takes torch sparse COO grads only (SparseAdam)
    _param_view = TorchOptimizer._param_view  # type: ignore[assignment]

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        inner = cls.__dict__.get("lrfast_class")
        if inner is None:
            return
        cls.spec = inner.spec
        ref = cls.spec.refs.get("torch")
        cls.torch_class = getattr(torch.optim, ref.split(" ")[0].rsplit(".", 1)[-1],
                                  None) if ref else None
        cls._sparse = cls.spec.sparse == "only"
        cls._int_step = cls._sparse
        cls.__init__ = _make_init(cls, WrappedOptimizer, positional=True)    # type: ignore[method-assign]
        if cls.__doc__ is None:
            cls.__doc__ = (f"{cls.__name__} (see :class:`lrfast.{cls.__name__}`) as a torch "
                           "optimizer.")

    def __init__(self, params: Any, defaults: Dict[str, Any], flags: Dict[str, Any],
                 master_weights: bool = False, state_dtype: Optional[str] = "float32") -> None:
        name = type(self).__name__
        _check_state_dtype(name, state_dtype, False)
        if master_weights:
            raise ValueError(
                f"lrfast.torch.{name}: master_weights=True is available for the elementwise "
                "optimizers (SGD, Adam, AdamW, Lion, ...); give float32 or float64 params")
        for k, v in flags.items():
            if v not in _FLAG_OK.get(k, (self._flags.get(k),)):
                raise ValueError(f"lrfast.torch.{name}: {k}={v!r} is not supported (lrfast "
                                 f"runs its own CPU kernels; leave {k} at its default "
                                 f"{self._flags.get(k)!r})")
        defaults = {k: (_optim_mod.required if v is REQUIRED else v)
                    for k, v in defaults.items()}
        self._inner: Any = None
        self._plist: List[torch.Tensor] = []
        self._views: List[np.ndarray] = []
        super().__init__(params, {**defaults, **flags})
        self._build()

    # ------------------------------------------------------------ structure
    def _hp(self, d: Dict[str, Any]) -> Dict[str, Any]:
        return {k: d[k] for k in self.lrfast_class.spec.defaults}

    def _build(self) -> None:
        """The inner optimizer over every group's params (validates all first)."""
        plist: List[Any] = []
        views: List[Any] = []
        groups: List[Any] = []
        for gi, d in enumerate(self.param_groups):
            vs = []
            for p in d["params"]:
                vs.append(self._param_view(p, f"group {gi}, param {len(plist)}"))  # type: ignore[misc]  # noqa: E501
                plist.append(p)
            views.extend(vs)
            groups.append({"params": vs, **self._hp(d)})
        self._check_flags(self.param_groups)
        inner = self.lrfast_class(groups)
        self._inner, self._plist, self._views = inner, plist, views
        self._after_build()

    def _after_build(self) -> None:
        n = len(self._plist)
        self._ptrs = [p.data_ptr() for p in self._plist]
        self._gview: List[Any] = [None] * n
        self._gten: List[Any] = [None] * n
        self._grads_out: List[Any] = [None] * n
        self._pub: List[Dict[str, Any]] = [{} for _ in range(n)]   # name -> published array
        self._last = [self._hp(d) for d in self.param_groups]
        self._sizes = [len(d["params"]) for d in self.param_groups]
        self._scalars = _scalar_dtype()

    def _check_flags(self, groups) -> None:
        name = type(self).__name__
        for gi, d in enumerate(groups):
            for k, dv in self._flags.items():
                if k in d and d[k] not in _FLAG_OK.get(k, (dv,)):
                    raise ValueError(f"lrfast.torch.{name}: group {gi}: {k}={d[k]!r} is not "
                                     f"supported (leave it at {dv!r})")

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group, as torch's; its params and values are checked now (a
        bad group is refused and nothing changes)."""
        n = len(self.param_groups)
        super().add_param_group(param_group)
        if self._inner is None:             # during __init__: built once at its end
            return
        d = self.param_groups[-1]
        try:
            base = len(self._plist)
            vs = [self._param_view(p, f"group {n}, param {base + j}")  # type: ignore[misc]
                  for j, p in enumerate(d["params"])]
            self._check_flags([d])
            self._inner.add_param_group({"params": vs, **self._hp(d)})
        except Exception:
            del self.param_groups[n:]
            raise
        self._plist.extend(d["params"])
        self._views.extend(vs)
        self._after_build()
        self._publish()

    def _ensure(self) -> None:
        """Rebuild after unpickling or a deepcopy (torch pickles the groups and
        the state only)."""
        if self._inner is None:
            saved = self.state
            self._build()
            self._load_inner(saved)
            self._publish()
            return
        sizes = [len(d["params"]) for d in self.param_groups]
        if sizes != self._sizes:
            raise RuntimeError(f"lrfast.torch.{type(self).__name__}: the param groups' "
                               "params changed since the optimizer was built; add params "
                               "with add_param_group, or build a new optimizer")

    # ------------------------------------------------------------------ step
    step = TorchOptimizer.__dict__["step"]

    def _step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._ensure()
        self._before_step()
        self._sync_groups()
        grads = self._grads()
        try:
            self._inner.step(grads)
        finally:
            self._grads_out[:] = [None] * len(self._grads_out)
        self._dirty = True          # self.state is refreshed when next read
        return loss

    def _before_step(self) -> None:
        pass

    def _sync_groups(self) -> None:
        """Values that a scheduler or the user changed since the last step go
        to the inner optimizer, which validates them (nothing changes on error)."""
        inner_groups = self._inner.param_groups
        for gi, (d, last) in enumerate(zip(self.param_groups, self._last)):
            changed = None
            for k, v in last.items():
                w = d[k]
                if w is not v and w != v:
                    if isinstance(w, torch.Tensor):
                        raise TypeError(f"lrfast.torch.{type(self).__name__}: group {gi}: {k} "
                                        "is a Tensor; give a number")
                    if changed is None:
                        changed = {}
                    changed[k] = w
            if changed:
                inner_groups[gi].update(changed)
                last.update(changed)

    def _grads(self) -> List[Any]:
        out, gview, gten, ptrs = self._grads_out, self._gview, self._gten, self._ptrs
        for i, p in enumerate(self._plist):
            g = p.grad
            if g is None:
                out[i] = None
            elif g is gten[i]:
                out[i] = gview[i]
            elif self._sparse:
                out[i] = self._sparse_grad(i, p, g)
            else:
                out[i] = TorchOptimizer._grad_view(self, i, p, g)  # type: ignore[arg-type]
            if p.data_ptr() != ptrs[i]:
                raise RuntimeError(
                    f"lrfast.torch.{type(self).__name__}: param {i}'s memory changed since "
                    "the optimizer was built (p.data was reassigned); build a new optimizer")
        return out

    @property
    def _group_of(self) -> List[int]:      # TorchOptimizer._grad_view's messages
        return self._inner._group_of

    def _sparse_grad(self, i: int, p: torch.Tensor, g: torch.Tensor) -> RowSparse:
        name, where = TorchOptimizer._check_grad(
            self, i, p, g, torch.sparse_coo,  # type: ignore[arg-type]
            "{name} takes sparse COO grads only (use Adam for dense grads)")
        if g.shape != p.shape or g.sparse_dim() != 1:
            raise ValueError(f"lrfast.torch.{name}: {where}'s grad must have the param's shape "
                             f"{tuple(p.shape)} and one sparse dimension (rows), got shape "
                             f"{tuple(g.shape)} with {g.sparse_dim()}")
        g = g.detach().coalesce()          # torch's SparseAdam coalesces too
        return RowSparse(g.indices()[0].numpy(), g.values().contiguous().numpy())

    # ----------------------------------------------------------- the state
    @property
    def state(self):  # type: ignore[override]
        """torch's ``state`` (param -> dict): views of the inner optimizer's
        arrays and its per-param numbers, brought up to date when read."""
        if self.__dict__.get("_dirty"):
            self._publish()
        return self.__dict__["_state"]

    @state.setter
    def state(self, value) -> None:
        self.__dict__["_state"] = value

    def _publish(self) -> None:
        """self.state[p]: views of the inner arrays, and the per-param numbers."""
        self._dirty = False
        inner, sdt, state = self._inner, self._scalars, self.__dict__["_state"]
        for i, p in enumerate(self._plist):
            e = inner._state_entry(i, copy=False)
            if e is None:
                continue
            st = state[p]
            pub = self._pub[i]
            for k, v in e.items():
                if isinstance(v, np.ndarray):
                    if pub.get(k) is not v:
                        st[k] = torch.from_numpy(v)
                        pub[k] = v
                elif v is None:
                    continue
                elif k == "step" and not self._int_step:
                    t: Any = st.get("step")
                    if t is None or pub.get("step") is not t:
                        t = st["step"] = torch.tensor(float(v), dtype=sdt)
                        pub["step"] = t
                    else:
                        t.fill_(v)  # type: ignore[union-attr]
                else:
                    st[k] = v

    def _load_inner(self, state) -> None:
        """Torch-format state (``self.state`` after torch's load) into the inner
        optimizer, which validates it all before writing."""
        inner = self._inner
        entries: Dict[int, Dict[str, Any]] = {}
        top = 0
        for i, p in enumerate(self._plist):
            st = state.get(p)
            if not st:
                continue
            e: Dict[str, Any] = {}
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    v = v.detach()
                    if k == "step" or (v.ndim == 0 and k not in self.spec.states):
                        v = v.item()
                    else:
                        v = v.to("cpu").numpy()
                if k == "step" and isinstance(v, float) and v.is_integer():
                    v = int(v)
                e[k] = v
            if isinstance(e.get("step"), int):
                top = max(top, e["step"])
            entries[i] = e
        groups, start = [], 0
        for d in self.param_groups:
            n = len(d["params"])
            g = {"params": list(range(start, start + n)),
                 **{k: d[k] for k in inner.defaults if k in d}}
            self._saved_group_extra(d, g)
            groups.append(g)
            start += n
        sd = inner.state_dict()
        sd.update(state=entries, param_groups=groups, step_count=top, skipped_steps=0)
        inner.load_state_dict(sd)

    def _saved_group_extra(self, d: Dict[str, Any], g: Dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------ torch API
    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad`` (the optimizer also drops its grad views)."""
        super().zero_grad(set_to_none)
        if self.__dict__.get("_inner") is not None:
            self._gview[:] = [None] * len(self._gview)
            self._gten[:] = [None] * len(self._gten)

    def state_dict(self) -> Dict[str, Any]:
        """torch's ``state_dict`` (torch.optim's format)."""
        self._ensure()
        return super().state_dict()

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch's ``load_state_dict``; the loaded state is then checked and
        copied into the inner optimizer's arrays. A state_dict that does not
        fit raises and leaves the optimizer as it was."""
        self._ensure()
        old_state, old_groups = self.state, self.param_groups
        super().load_state_dict(state_dict)
        try:
            self._check_flags(self.param_groups)
            for gi, d in enumerate(self.param_groups):
                for k in self.lrfast_class.spec.defaults:
                    if isinstance(d.get(k), torch.Tensor):
                        raise TypeError(f"lrfast.torch.{type(self).__name__}: group {gi}: "
                                        f"{k} is a Tensor; give a number")
            self._load_inner(self.state)
        except Exception:
            self.state, self.param_groups = old_state, old_groups
            raise
        loaded = self.state
        self.state = defaultdict(dict)      # as torch.optim.Optimizer.__init__
        self._after_build()
        for i, p in enumerate(self._plist):  # entries without inner state (e.g. SGD-like)
            if loaded.get(p) and self._inner._state_entry(i, copy=False) is None:
                self.state[p].update(loaded[p])
        self._publish()

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        if "state" in self.__dict__:           # torch's __setstate__ updates __dict__
            self.__dict__["_state"] = self.__dict__.pop("state")
        if "_inner" not in self.__dict__:      # unpickled or deep-copied: built when used
            self._inner = None
            self._plist, self._views = [], []


class _LrFree(WrappedOptimizer):
    """Prodigy, DoG, LDoG: ``opt.d``, the step size the next step uses."""

    @property
    def d(self):
        """The inner optimizer's ``d`` (see :class:`lrfast.Prodigy`, :class:`lrfast.DoG`)."""
        self._ensure()
        return self._inner.d


class _ScheduleFree(WrappedOptimizer):
    """The schedule-free optimizers: ``train()``/``eval()`` and the mode in
    every param group's ``train_mode``, as the ``schedulefree`` package."""

    def _after_build(self) -> None:
        super()._after_build()
        for d in self.param_groups:         # a new group, or one loaded without a mode
            d.setdefault("train_mode", self._inner.train_mode)

    @property
    def train_mode(self) -> bool:
        """True when the params hold y (steps allowed), False after ``eval()``."""
        self._ensure()
        return self._inner.train_mode

    def train(self) -> None:
        """Move the params from the average x back to y (a no-op in train mode)."""
        self._ensure()
        self._inner.train()
        for d in self.param_groups:
            d["train_mode"] = True

    def eval(self) -> None:
        """Move the params to the average x, the point to evaluate and to
        checkpoint (a no-op in eval mode); ``step`` raises until ``train()``."""
        self._ensure()
        self._inner.eval()
        for d in self.param_groups:
            d["train_mode"] = False

    def _before_step(self) -> None:
        if not self._inner.train_mode:
            raise RuntimeError(f"lrfast.torch.{type(self).__name__}.step called in eval mode "
                               "(the params hold the average x, not y): call opt.train() "
                               "before stepping")

    def _saved_group_extra(self, d: Dict[str, Any], g: Dict[str, Any]) -> None:
        g["train_mode"] = d.get("train_mode", True)
