"""Checkpoints: ``save``/``load`` an optimizer as ``.npz`` (arrays) plus JSON
(structure), never pickle; and conversion to/from torch.optim's state_dict."""
from __future__ import annotations

import errno
import json
import math
import numbers
import os
import re
import secrets
import stat
import zipfile
from typing import Any, Dict, List, Mapping, Optional, TypeVar, Union

import numpy as np

from ._typing import StateDict, StrPath, SupportsLoadStateDict, SupportsStateDict
from ._validate import is_half
from ._validate import step_count as _step_count

__all__ = ["save", "load", "to_torch_state_dict", "from_torch_state_dict"]

_META = "__lrfast_meta__"

_Opt = TypeVar("_Opt", bound=SupportsLoadStateDict)


def _encode(obj, arrays, path):
    if isinstance(obj, np.ndarray):
        if isinstance(obj, np.ma.MaskedArray):
            raise TypeError(f"save: masked array at {path} (its mask would be lost); pass "
                            "np.ma.filled(a) or the data and mask as two arrays")
        if is_half(obj.dtype) and obj.dtype != np.float16:     # bfloat16: its bits
            key = f"a{len(arrays)}"
            arrays[key] = obj.view(np.uint16)
            return {"__array__": key, "__bfloat16__": True}
        if obj.dtype.hasobject or obj.dtype.kind not in _ARRAY_KINDS or obj.dtype.fields \
                is not None or obj.dtype.subdtype is not None:
            raise TypeError(f"save: cannot store an array of dtype {obj.dtype} at {path} "
                            "(checkpoints hold numeric arrays only, never pickles)")
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
            a = arrays[obj["__array__"]]
            if obj.get("__bfloat16__") is True:
                if a.dtype != np.uint16:
                    raise ValueError("corrupted lrfast checkpoint (a bfloat16 array not "
                                     "stored as uint16 bits)")
                from .optim._lowp import bfloat16
                return a.view(bfloat16())
            return a
        if "__dict__" in obj:
            return {k: _decode(v, arrays) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, arrays) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        raise ValueError("corrupted lrfast checkpoint (unknown node)")
    return obj


_TMP_PREFIX = ".lrfast-"
_TMP_SUFFIX = ".tmp"
_TMP_RE = re.compile(r"^\.lrfast-.*\.tmp$", re.DOTALL)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _create_temp(d: str, base: str):
    """A new file ``.lrfast-<base>-<random>.tmp`` in directory d, created with
    mode 0o666 so the umask applies exactly as for ``open(path, "wb")``."""
    base = base[:80]
    for _ in range(100):
        tmp = os.path.join(d, f"{_TMP_PREFIX}{base}-{secrets.token_hex(6)}{_TMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY | _O_CLOEXEC,
                         0o666)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(f"save: could not create a temp file in {d}")


def save(opt: Union[SupportsStateDict, StateDict], path: StrPath) -> str:
    """Write ``opt.state_dict()`` to ``path`` (.npz) atomically.

    The archive is written to a temp file in the destination's directory,
    flushed and fsync'ed, then renamed over the destination (and the directory
    fsync'ed). The previous file at ``path`` is therefore either intact or
    replaced by the complete new one, never half-written.

    - If ``path`` is a symlink, the file it points to is replaced (as editors
      do) and the link is kept.
    - An existing file keeps its permission bits (and its owner and group where
      the process may set them); a new file gets ``0o666 & ~umask``, as
      ``open(path, "wb")`` would give it. The file is replaced, not rewritten:
      other hard links to it keep the old content.
    - If the save fails (an exception, a full disk), the temp file is removed
      and the exception propagates; ``path`` is unchanged.
    - If the process is killed mid-save (``kill -9``, power loss), ``path`` is
      unchanged (the previous checkpoint, or no file) and a temp file named
      ``.lrfast-<name>-<random>.tmp`` may remain beside the destination. It is
      never read by :func:`load` (which refuses such a name with a clear error)
      and is safe to delete.

    Returns ``path`` as a string.
    """
    sd = opt.state_dict() if hasattr(opt, "state_dict") else opt
    if not isinstance(sd, dict):
        raise ValueError(f"save: nothing to save (state_dict is {type(sd).__name__}); with "
                         "lrfast.distributed, only the root rank holds the full state: call "
                         "dopt.save(path) on every rank instead")
    arrays: Dict[str, Any] = {}
    meta = json.dumps(_encode(sd, arrays, "state_dict"), allow_nan=False)
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    target = os.path.realpath(path)         # write through a symlink to its target
    d, base = os.path.split(target)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, "save: the destination is a directory", path)
    try:
        st: Optional[os.stat_result] = os.stat(target)
    except FileNotFoundError:
        st = None                           # a new file: 0o666 & ~umask (set by os.open)
    fd, tmp = _create_temp(d, base)
    try:
        f = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    try:
        with f:
            if st is not None:
                if hasattr(os, "fchown"):   # keep the owner where allowed (as editors do)
                    try:
                        os.fchown(f.fileno(), st.st_uid, st.st_gid)
                    except OSError:
                        pass
                if hasattr(os, "fchmod"):
                    os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
                else:                       # pragma: no cover - Windows
                    os.chmod(tmp, stat.S_IMODE(st.st_mode))
            np.savez(f, **{_META: np.array(meta)}, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
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


def _unlink_quietly(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


class _Bad(ValueError):
    """A checkpoint rejected with a final message (not re-wrapped)."""


_NPY_MAGIC = b"\x93NUMPY"
_ARRAY_KINDS = "biufc"          # bool, ints, floats, complex: what a state_dict holds


def _member_header(m, name: str):
    """Parse an .npy member's header without reading its data: (shape,
    fortran_order, dtype, header_bytes)."""
    version = np.lib.format.read_magic(m)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(m)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(m)
    else:
        raise ValueError(f"member {name!r}: unsupported .npy version {version}")
    return shape, fortran, dtype, m.tell()


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: list, meta: bool):
    """Read one .npy member, after checking its declared shape and dtype
    against its real size and the bytes left in the file's budget."""
    name = info.filename
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"member {name!r} is compressed; lrfast checkpoints store arrays "
                         "uncompressed")
    if info.file_size != info.compress_size:
        raise ValueError(f"member {name!r}: sizes in the zip directory disagree")
    if info.file_size > budget[0]:
        raise ValueError(f"member {name!r} declares {info.file_size} bytes, more than the "
                         "file holds")
    budget[0] -= info.file_size
    with zf.open(info) as m:
        shape, fortran, dtype, hlen = _member_header(m, name)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or (
            dtype.kind not in ("U" if meta else _ARRAY_KINDS)):
        raise ValueError(f"member {name!r} has dtype {dtype}, which a checkpoint never holds")
    if meta and shape != ():
        raise ValueError(f"member {name!r}: metadata must be a 0-d string, got shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize      # Python ints: no overflow
    if hlen + nbytes != info.file_size:
        raise ValueError(f"member {name!r} declares shape {shape} of {dtype} ({nbytes} "
                         f"bytes) but holds {info.file_size - hlen} bytes of data")
    with zf.open(info) as m:                        # now read exactly what was declared
        a = np.lib.format.read_array(m, allow_pickle=False)
        if m.read(1):                               # (reaching the end checks the CRC)
            raise ValueError(f"member {name!r} has trailing data")
    if a.shape != shape or a.dtype != dtype:        # pragma: no cover - numpy guarantees it
        raise ValueError(f"member {name!r} does not match its header")
    return a


def _array_refs(obj, out: set) -> None:
    """The array keys the metadata names (iteratively: deep nesting is bounded
    by the JSON parser already)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, list):
            stack.extend(o)
        elif isinstance(o, dict):
            if "__array__" in o:
                k = o["__array__"]
                if not isinstance(k, str):
                    raise ValueError(f"array reference {k!r} is not a name")
                out.add(k)
            else:
                stack.extend(o.values())


def _read_zip(zf: zipfile.ZipFile, size: int, path) -> Any:
    infos = zf.infolist()
    by = {i.filename: i for i in infos}
    if len(by) != len(infos):
        raise ValueError("the archive lists a member name twice")
    meta_name = _META + ".npy"
    if meta_name not in by:
        raise _Bad(f"{path}: not an lrfast checkpoint (no metadata)")
    budget = [size]             # stored members: never more bytes than the file has
    meta = json.loads(str(_read_member(zf, by[meta_name], budget, True)[()]))
    refs: set = set()
    _array_refs(meta, refs)
    wanted = {meta_name} | {k + ".npy" for k in refs}
    extra = sorted(set(by) - wanted)
    if extra:
        shown = ", ".join(repr(x) for x in extra[:5]) + (", ..." if len(extra) > 5 else "")
        raise ValueError(f"unexpected archive member(s) {shown} (the metadata does not name "
                         "them)")
    missing = sorted(k for k in refs if k + ".npy" not in by)
    if missing:
        raise _Bad(f"{path}: corrupted lrfast checkpoint (bad metadata: array {missing[0]!r} "
                   "is missing)")
    arrays = {k: _read_member(zf, by[k + ".npy"], budget, False) for k in sorted(refs)}
    return meta, arrays


def read(path: StrPath) -> Any:
    """Read a checkpoint written by :func:`save` into a state_dict (no pickle).

    Only the members the metadata names are read; every member's declared
    shape and dtype are checked against its actual size before its data is
    read, so a crafted file is refused with ValueError and never makes this
    allocate more than the file's own size.
    """
    shown = os.fspath(path)
    name = os.path.basename(os.fsdecode(shown))
    if _TMP_RE.match(name):
        raise ValueError(f"{shown}: this is the temp file of an interrupted lrfast.save (a "
                         "process killed mid-save), not a checkpoint; load the destination "
                         "file instead, and delete this one")
    try:
        with open(shown, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                raise ValueError("an .npy array, not an .npz archive")
            f.seek(0)
            with zipfile.ZipFile(f) as zf:
                meta, arrays = _read_zip(zf, size, shown)
    except FileNotFoundError:
        raise
    except _Bad:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, json.JSONDecodeError, KeyError,
            NotImplementedError, RecursionError, ValueError, OverflowError,
            UnicodeDecodeError) as e:
        # (zipfile raises NotImplementedError for some corrupted headers)
        raise ValueError(f"{shown}: truncated, corrupted or not an lrfast checkpoint ({e})") \
            from None
    try:
        return _decode(meta, arrays)
    except (KeyError, TypeError, ValueError, IndexError, RecursionError) as e:
        raise ValueError(f"{shown}: corrupted lrfast checkpoint (bad metadata: {e!r})") from None


def load(opt: _Opt, path: StrPath) -> _Opt:
    """Load a checkpoint into ``opt``; checks everything before changing it.

    ``path`` is read as :func:`read` does; a temp file left by an interrupted
    :func:`save` (``.lrfast-*.tmp``) is refused, never taken for a checkpoint.
    """
    sd = read(path)
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: not an lrfast optimizer checkpoint (holds a "
                         f"{type(sd).__name__}, not a state_dict)")
    opt.load_state_dict(sd)
    return opt


_TORCH_FLAGS = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}


def _optimizer_names():
    """Public lrfast optimizer class names (every subclass of Optimizer)."""
    from .optim import Optimizer
    try:                                  # registers LBFGS/DiagonalNewton if they subclass it
        from . import newton  # noqa: F401
    except ImportError:                   # pragma: no cover
        pass
    names, todo = set(), [Optimizer]
    while todo:
        c = todo.pop()
        for s in c.__subclasses__():
            todo.append(s)
            if not s.__name__.startswith("_"):
                names.add(s.__name__)
    names.add("LBFGS")
    return names


def _scalar(v, what):
    """A float from a number, a 0-d/1-element array or tensor; ValueError otherwise."""
    if isinstance(v, bool):
        raise ValueError(f"{what} must be a number, got {v!r}")
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        if v.size != 1 or v.dtype.kind not in "iuf":
            raise ValueError(f"{what} must be a number, got an array of shape {v.shape} and "
                             f"dtype {v.dtype}")
        v = v.reshape(()).item()
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        raise ValueError(f"{what} must be a number, got {type(v).__name__}")
    return float(v)


def _entries(d, what):
    if not isinstance(d, Mapping):
        raise ValueError(f"{what} must be a dict, got {type(d).__name__}")
    out = []
    for i, e in d.items():
        if isinstance(i, str) and i.isdigit():
            i = int(i)
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or i < 0:
            raise ValueError(f"{what} has key {i!r}; keys are param indices (ints >= 0)")
        if not isinstance(e, Mapping):
            raise ValueError(f"{what}[{i}] must be a dict, got {type(e).__name__}")
        out.append((int(i), e))
    return out


def _groups(gs, what):
    if not isinstance(gs, (list, tuple)):
        raise ValueError(f"{what} must be a list, got {type(gs).__name__}")
    for k, g in enumerate(gs):
        if not isinstance(g, Mapping):
            raise ValueError(f"{what}[{k}] must be a dict, got {type(g).__name__}")
    return gs


def to_torch_state_dict(sd: StateDict) -> StateDict:
    """Convert an lrfast state_dict to torch.optim's layout (numpy arrays; apply
    ``torch.from_numpy`` to each array before ``torch_opt.load_state_dict``).

    Raises TypeError if ``sd`` is not a dict and ValueError if it is not a
    well-formed lrfast state_dict."""
    if not isinstance(sd, Mapping):
        raise TypeError(f"to_torch_state_dict: sd must be an lrfast state_dict (a dict), got "
                        f"{type(sd).__name__}")
    if sd.get("format") != "lrfast.optim/1":
        raise ValueError("to_torch_state_dict: not an lrfast state_dict")
    name = sd.get("optimizer")
    if not isinstance(name, str):
        raise ValueError(f"to_torch_state_dict: sd['optimizer'] must be a name, got {name!r}")
    state = {}
    for i, e in _entries(sd.get("state"), "to_torch_state_dict: sd['state']"):
        t: Dict[str, Any] = {}
        for k, v in e.items():
            if k == "step" and name == "SparseAdam":           # torch keeps an int there
                t[k] = int(_scalar(v, f"to_torch_state_dict: state[{i}][{k!r}]"))
            elif k in ("step", "mu_product"):
                t[k] = np.array(_scalar(v, f"to_torch_state_dict: state[{i}][{k!r}]"),
                                dtype=np.float32)
            elif k in ("eta", "mu") and name == "ASGD":     # torch keeps them as tensors
                t[k] = np.array(_scalar(v, f"to_torch_state_dict: state[{i}][{k!r}]"))
            else:
                t[k] = v
        state[i] = t
    groups = []
    for g in _groups(sd.get("param_groups"), "to_torch_state_dict: sd['param_groups']"):
        tg = {k: v for k, v in g.items() if k != "schedules"}
        tg.update({k: v for k, v in _TORCH_FLAGS.items() if k not in tg})
        if name in ("Adam", "AdamW"):
            tg.setdefault("decoupled_weight_decay", name == "AdamW")
        groups.append(tg)
    return {"state": state, "param_groups": groups}


def _torch_optimizer_name(optimizer):
    """The lrfast optimizer name ``from_torch_state_dict`` was given (a class
    or its name); TypeError / ValueError for anything else."""
    if isinstance(optimizer, str):
        name = optimizer
    elif isinstance(optimizer, type):
        name = optimizer.__name__
    else:
        raise TypeError(f"from_torch_state_dict: optimizer must be an lrfast optimizer class "
                        f"or its name, got {type(optimizer).__name__}")
    known = _optimizer_names()
    if name not in known:
        raise ValueError(f"from_torch_state_dict: unknown optimizer {name!r} (one of "
                         f"{', '.join(sorted(known))})")
    return name


def _check_torch_args(tsd, step_count):
    """Check ``from_torch_state_dict``'s ``tsd`` and return its ``step_count``
    as an int (None stays None)."""
    if not isinstance(tsd, Mapping):
        raise TypeError(f"from_torch_state_dict: tsd must be a torch.optim state_dict (a "
                        f"dict), got {type(tsd).__name__}")
    for k in ("state", "param_groups"):
        if k not in tsd:
            raise ValueError(f"from_torch_state_dict: not a torch.optim state_dict (no {k!r})")
    if step_count is not None:
        step_count = _step_count(step_count, "from_torch_state_dict: step_count")
    return step_count


def _torch_array(v):
    """A torch state value as numpy: None and numbers as they are, tensors
    detached to CPU arrays, anything else through ``np.asarray``."""
    if v is None or isinstance(v, (numbers.Number, np.ndarray)):
        return v
    if hasattr(v, "detach"):
        v = v.detach().cpu()
        if str(v.dtype) == "torch.bfloat16":     # numpy has no bfloat16: ml_dtypes' (bits)
            import torch                         # v is a torch tensor: torch is there
            from .optim._lowp import bfloat16
            return v.view(torch.int16).numpy().view(bfloat16())
        v = v.numpy()
    return np.asarray(v)


def _from_torch_entry(i, e, steps, name=""):
    """One torch per-param state entry in lrfast's schema (arrays copied); its
    ``step``, if any, is appended to ``steps``."""
    out = {}
    for k, v in e.items():
        if k == "step":
            v = _step_count(_scalar(v, f"from_torch_state_dict: state[{i}]['step']"),
                            f"from_torch_state_dict: state[{i}]['step']")
            steps.append(v)
        elif k == "mu_product" or (k in ("eta", "mu") and name == "ASGD"):
            v = _scalar(v, f"from_torch_state_dict: state[{i}]['mu_product']")
        else:
            v = _torch_array(v)
            if isinstance(v, np.ndarray):
                v = v.copy()
        out[k] = v
    return out


def _from_torch_group(g, name):
    """One torch param group in lrfast's schema: torch-only flags dropped,
    ``betas`` as a tuple."""
    lg = {k: v for k, v in g.items() if k not in _TORCH_FLAGS and k not in (
        "initial_lr", "param_names") and not (k == "decoupled_weight_decay"
                                               and name == "AdamW")}
    if "betas" in lg:
        b = lg["betas"]
        if not isinstance(b, (list, tuple)):
            raise ValueError(f"from_torch_state_dict: betas must be a pair, got {b!r}")
        lg["betas"] = tuple(b)
    return lg


def from_torch_state_dict(tsd: Mapping[str, Any], optimizer: Union[str, type],
                          step_count: Optional[int] = None) -> StateDict:
    """Convert a torch.optim state_dict (tensors or arrays) to lrfast's schema.

    ``optimizer``: the lrfast class or its name ("Adam", ...); another name or
    type is refused (ValueError / TypeError). ``step_count``: the optimizer's
    step count (default: the largest per-param ``step``), an int >= 0.
    """
    name = _torch_optimizer_name(optimizer)
    step_count = _check_torch_args(tsd, step_count)
    state: Dict[int, Any] = {}
    steps: List[int] = []
    for i, e in _entries(tsd["state"], "from_torch_state_dict: tsd['state']"):
        state[i] = _from_torch_entry(i, e, steps, name)
    groups = [_from_torch_group(g, name)
              for g in _groups(tsd["param_groups"], "from_torch_state_dict: tsd['param_groups']")]
    if step_count is None:
        step_count = max(steps) if steps else 0
    return {"format": "lrfast.optim/1", "optimizer": name, "step_count": int(step_count),
            "skipped_steps": 0, "state": state, "param_groups": groups}
