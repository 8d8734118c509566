"""Checkpoints: ``save``/``load`` an optimizer as ``.npz`` (arrays) plus JSON
(structure), never pickle; and conversion to/from torch.optim's state_dict."""
from __future__ import annotations

import json
import numbers
import os
import tempfile
import zipfile
from typing import Any, Dict, Mapping, Optional, TypeVar, Union

import numpy as np

from ._typing import StateDict, StrPath, SupportsLoadStateDict, SupportsStateDict
from ._validate import step_count as _step_count

__all__ = ["save", "load", "to_torch_state_dict", "from_torch_state_dict"]

_META = "__lrfast_meta__"

_Opt = TypeVar("_Opt", bound=SupportsLoadStateDict)


def _encode(obj, arrays, path):
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, dict):
        if any(not isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"save: unsupported key type in {path}")
        return {"__dict__": [[k, _encode(v, arrays, f"{path}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays, path) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays, path) for v in obj]
    if isinstance(obj, (np.bool_, np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (str, bool, int, float)):
        if isinstance(obj, float) and obj != obj:
            return {"__float__": "nan"}
        if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
            return {"__float__": "inf" if obj > 0 else "-inf"}
        return obj
    raise TypeError(f"save: cannot store {type(obj).__name__} at {path}")


def _decode(obj, arrays):
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__dict__" in obj:
            return {k: _decode(v, arrays) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, arrays) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        raise ValueError("corrupted lrfast checkpoint (unknown node)")
    return obj


def save(opt: Union[SupportsStateDict, StateDict], path: StrPath) -> str:
    """Write ``opt.state_dict()`` to ``path`` (.npz) atomically: a temp file in
    the same directory, flushed and fsync'ed, then renamed over ``path``. A
    crash mid-save leaves any previous file intact."""
    sd = opt.state_dict() if hasattr(opt, "state_dict") else opt
    if not isinstance(sd, dict):
        raise ValueError(f"save: nothing to save (state_dict is {type(sd).__name__}); with "
                         "lrfast.distributed, only the root rank holds the full state: call "
                         "dopt.save(path) on every rank instead")
    arrays: Dict[str, Any] = {}
    meta = json.dumps(_encode(sd, arrays, "state_dict"), allow_nan=False)
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".lrfast-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_META: np.array(meta)}, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def read(path: StrPath) -> Any:
    """Read a checkpoint written by :func:`save` into a state_dict (no pickle)."""
    try:
        z = np.load(os.fspath(path), allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):     # a .npy file: one bare array
            raise ValueError("an .npy array, not an .npz archive")
        with z:
            if _META not in z.files:
                raise ValueError(f"{path}: not an lrfast checkpoint (no metadata)")
            meta = json.loads(str(z[_META]))
            arrays = {k: z[k] for k in z.files if k != _META}
    except (zipfile.BadZipFile, EOFError, OSError, json.JSONDecodeError, KeyError,
            NotImplementedError, RecursionError) as e:
        # (zipfile raises NotImplementedError for some corrupted headers)
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: truncated, corrupted or not an lrfast checkpoint ({e})") \
            from None
    except ValueError as e:
        raise ValueError(f"{path}: truncated, corrupted or not an lrfast checkpoint ({e})") \
            from None
    try:
        return _decode(meta, arrays)
    except (KeyError, TypeError, ValueError, IndexError, RecursionError) as e:
        raise ValueError(f"{path}: corrupted lrfast checkpoint (bad metadata: {e!r})") from None


def load(opt: _Opt, path: StrPath) -> _Opt:
    """Load a checkpoint into ``opt``; checks everything before changing it."""
    sd = read(path)
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: not an lrfast optimizer checkpoint (holds a "
                         f"{type(sd).__name__}, not a state_dict)")
    opt.load_state_dict(sd)
    return opt


_TORCH_FLAGS = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}


def to_torch_state_dict(sd: StateDict) -> StateDict:
    """Convert an lrfast state_dict to torch.optim's layout (numpy arrays; apply
    ``torch.from_numpy`` to each array before ``torch_opt.load_state_dict``)."""
    if sd.get("format") != "lrfast.optim/1":
        raise ValueError("to_torch_state_dict: not an lrfast state_dict")
    name = sd["optimizer"]
    state = {}
    for i, e in sd["state"].items():
        t = {}
        for k, v in e.items():
            if k == "step":
                t[k] = np.array(float(v), dtype=np.float32)
            elif k == "mu_product":
                t[k] = np.array(float(v), dtype=np.float32)
            elif k in ("eta", "mu") and name == "ASGD":
                t[k] = np.array(float(v))
            else:
                t[k] = v
        state[int(i)] = t
    groups = []
    for g in sd["param_groups"]:
        tg = {k: v for k, v in g.items() if k != "schedules"}
        tg.update({k: v for k, v in _TORCH_FLAGS.items() if k not in tg})
        if name in ("Adam", "AdamW"):
            tg.setdefault("decoupled_weight_decay", name == "AdamW")
        groups.append(tg)
    return {"state": state, "param_groups": groups}


def from_torch_state_dict(tsd: Mapping[str, Any], optimizer: Union[str, type],
                          step_count: Optional[int] = None) -> StateDict:
    """Convert a torch.optim state_dict (tensors or arrays) to lrfast's schema.

    ``optimizer``: the lrfast class or its name ("Adam", ...).
    """
    name = optimizer if isinstance(optimizer, str) else optimizer.__name__

    def arr(v):
        if v is None or isinstance(v, (numbers.Number, np.ndarray)):
            return v
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        return np.asarray(v)

    state, steps = {}, []
    for i, e in tsd["state"].items():
        out = {}
        for k, v in e.items():
            v = arr(v)
            if k == "step":
                v = _step_count(v, f"from_torch_state_dict: state[{i!r}]['step']")
                steps.append(v)
            elif k == "mu_product" or (k in ("eta", "mu") and name == "ASGD"):
                v = float(v)
            elif isinstance(v, np.ndarray):
                v = v.copy()
            out[k] = v
        state[int(i)] = out
    groups = []
    for g in tsd["param_groups"]:
        lg = {k: v for k, v in g.items() if k not in _TORCH_FLAGS and k not in (
            "initial_lr", "param_names") and not (k == "decoupled_weight_decay"
                                                   and name == "AdamW")}
        if "betas" in lg:
            lg["betas"] = tuple(lg["betas"])
        groups.append(lg)
    step_count = (max(steps) if steps else 0) if step_count is None else _step_count(
        step_count, "from_torch_state_dict: step_count")
    return {"format": "lrfast.optim/1", "optimizer": name, "step_count": int(step_count),
            "skipped_steps": 0, "state": state, "param_groups": groups}
