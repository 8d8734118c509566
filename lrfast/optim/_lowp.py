"""Low precision for the elementwise optimizers: 16-bit params and grads
(float16, and bfloat16 as ``ml_dtypes.bfloat16``), float32 master weights, and
bfloat16 or 8-bit blockwise optimizer state.

The engine stages such tensors through float32 buffers in its one pass (see
``src/_lowp.pxi``): the update is computed in float32 and each 16-bit array is
rounded once. This module holds the optimizer-side bookkeeping: formats,
allocation, and the state_dict conversions.
"""
import contextlib
import contextvars
import numbers
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import numpy as np

from .._dispatch import kernels as _K
from .._validate import is_bool, is_half

F_NATIVE, F_BF16, F_F16, F_Q8S, F_Q8U = 0, 1, 2, 3, 4
MAX_STATES = 4            # state slots per param (the engine's)
QBLOCK = 256              # elements per 8-bit block (one absmax each)
MIN_8BIT_SIZE = 4096      # smaller tensors keep float32 state (as bitsandbytes)
STATE_DTYPES = ("float32", "bfloat16", "int8")


# the sizes a new optimizer decides its params' state formats on (see decide_on)
_DECIDE_ON: contextvars.ContextVar[Optional[Tuple[int, ...]]] = contextvars.ContextVar(
    "lrfast_lowp_decide_on", default=None)


_SR_KEYS: contextvars.ContextVar[Optional[Tuple[Tuple[int, int], ...]]] = \
    contextvars.ContextVar("lrfast_lowp_sr_keys", default=None)


@contextlib.contextmanager
def decide_on(sizes: Sequence[int],
              sr_keys: Optional[Sequence[Tuple[int, int]]] = None) -> Iterator[None]:
    """Optimizers built inside this block decide each param's state format on
    ``sizes[i]`` (the i-th param added) instead of the param's own size: a
    sharded wrapper's inner optimizer holds pieces of params, and a piece of
    a tensor of 4096 elements or more keeps 8-bit state as the whole tensor
    does in one process (its pieces start on 256-element blocks).

    ``sr_keys[i]``: (tensor, offset) of the i-th param for stochastic
    rounding: its random bits are those of elements ``offset + k`` of tensor
    ``tensor`` in one process (default: (i, 0)), so a piece rounds as its
    whole tensor does."""
    token = _DECIDE_ON.set(tuple(int(n) for n in sizes))
    token2 = _SR_KEYS.set(None if sr_keys is None
                          else tuple((int(a), int(b)) for a, b in sr_keys))
    try:
        yield
    finally:
        _SR_KEYS.reset(token2)
        _DECIDE_ON.reset(token)


def bfloat16() -> np.dtype:
    """ml_dtypes' bfloat16 dtype, or a clear ImportError."""
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError("bfloat16 needs the ml_dtypes package (pip install "
                          "'lrfast[lowp]' or pip install ml_dtypes)") from None
    dt = np.dtype(ml_dtypes.bfloat16)
    _K._register_bf16(dt)
    return dt


def param_format(p: np.ndarray) -> int:
    if p.dtype == np.float16:
        return F_F16
    if is_half(p.dtype):
        _K._register_bf16(p.dtype)
        return F_BF16
    return F_NATIVE


def to_bits(x: np.ndarray, fmt: int, **sr: Any) -> np.ndarray:
    """float32 -> the uint16 bits of ``fmt``, rounded as the kernels round."""
    return _K._round16(x, "bf16" if fmt == F_BF16 else "f16", **sr)


def widen(a: np.ndarray) -> np.ndarray:
    """A 16-bit (or float) array as float32, exactly, in ``a``'s memory order
    (an F-contiguous param's master copy and fresh state are F-contiguous:
    the kernels pair elements in memory order)."""
    if a.dtype == np.float16 or is_half(a.dtype):
        if mem_order(a) == "F":
            return widen(a.T).T
        fmt = "f16" if a.dtype == np.float16 else "bf16"
        return _K._widen16(a.view(np.uint16), fmt)
    return np.asarray(a, dtype=np.float32)


Order = Literal["C", "F"]


def mem_order(a: np.ndarray) -> Order:
    """'F' for an F-contiguous array that is not also C-contiguous, else 'C'."""
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


def nblocks(size: int) -> int:
    return (size + QBLOCK - 1) // QBLOCK


class Precision:
    """One optimizer's low-precision setup: per param, its format, master copy,
    and per state slot its format and 8-bit absmax array."""

    def __init__(self, opt_name: str, kind: Any, state_dtype: Optional[str],
                 master_weights: Any, stochastic_rounding: Any, seed: Any) -> None:
        if state_dtype is not None and state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be one of {STATE_DTYPES} or None, got "
                             f"{state_dtype!r}")
        for name, v in (("master_weights", master_weights),
                        ("stochastic_rounding", stochastic_rounding)):
            if not is_bool(v):
                raise TypeError(f"{name} must be a bool, got {v!r}")
        if (is_bool(seed) or not isinstance(seed, numbers.Integral)
                or not 0 <= int(seed) < 2 ** 64):
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        self.opt_name = opt_name
        self.qmaps: Tuple[str, ...] = kind.qmaps
        self.state_dtype = state_dtype or "float32"
        self.master_weights = bool(master_weights)
        self.sr = bool(stochastic_rounding)
        self.seed = int(seed)
        if self.state_dtype == "bfloat16":
            self._bf16 = bfloat16()
        self.pfmt: List[int] = []
        self.sfmt: List[List[int]] = []
        self.master: List[Optional[np.ndarray]] = []
        self.amax: List[List[Optional[np.ndarray]]] = []
        self._half = 0            # how many of pfmt are 16-bit
        self._decide = _DECIDE_ON.get()     # sizes to decide formats on (decide_on)
        self._sr_keys = _SR_KEYS.get()      # (tensor, offset) per param, or None

    @property
    def active(self) -> bool:
        """Some param is staged: a non-float32 state, a master, stochastic
        rounding, or a 16-bit param (counted as params are added)."""
        return (self.state_dtype != "float32" or self.master_weights or self.sr
                or self._half > 0)

    def check_supported(self, params: List[np.ndarray], where: str) -> None:
        """Raise unless this optimizer can run these params in this setup."""
        half = [p for p in params if is_half(p.dtype)]
        if half and not self.qmaps:
            raise TypeError(f"{where}{self.opt_name} does not take {half[0].dtype} params "
                            "(float32 or float64; the elementwise optimizers, SGD, Adam, "
                            "AdamW, Lion, ..., take float16 and bfloat16)")
        if (self.state_dtype != "float32" or self.master_weights or self.sr) and not self.qmaps:
            raise ValueError(f"{where}{self.opt_name} does not take state_dtype, "
                             "master_weights or stochastic_rounding (the elementwise "
                             "optimizers do: SGD, Adam, AdamW, Lion, ...)")
        for p in params:
            if self.state_dtype != "float32" and p.dtype == np.float64:
                raise ValueError(f"{where}state_dtype={self.state_dtype!r} needs float32, "
                                 "bfloat16 or float16 params, not float64")
        if self.master_weights and len(half) != len(params):
            raise ValueError(f"{where}master_weights=True needs bfloat16 or float16 params "
                             "(a float32 param is its own master)")

    def state_format(self, slot: int, size: int) -> int:
        if self.state_dtype == "bfloat16":
            return F_BF16
        if self.state_dtype == "int8" and size >= MIN_8BIT_SIZE:
            return F_Q8S if self.qmaps[slot] == "s" else F_Q8U
        return F_NATIVE

    def template(self, p: np.ndarray, i: Optional[int] = None) -> np.ndarray:
        """What a rule allocates fresh state from: the float32 value of p."""
        m = self.master[i] if i is not None and i < len(self.master) else None
        if m is not None:
            return m
        return widen(p) if is_half(p.dtype) else p

    def encode(self, fmt: int, x: np.ndarray,
               order: Optional[Order] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """A float state array in format ``fmt``: (storage, absmax or None).
        The storage has the memory order ``order`` (default: x's), the
        param's, as the kernels read state in the param's memory order; the
        8-bit blocks run along it."""
        if fmt == F_NATIVE:
            return x, None
        order = order or mem_order(x)
        flat = np.ascontiguousarray(x.reshape(-1, order=order), dtype=np.float32)
        if fmt == F_BF16:
            return to_bits(flat, F_BF16).view(self._bf16).reshape(x.shape, order=order), None
        codes, amax = _K.quantize_blockwise(flat, fmt == F_Q8S)
        return codes.reshape(x.shape, order=order), amax

    def decode(self, fmt: int, a: np.ndarray, amax: Optional[np.ndarray],
               order: Order = "C") -> np.ndarray:
        """A stored state as float32 (8-bit blocks along memory order ``order``)."""
        if fmt in (F_Q8S, F_Q8U):
            flat = np.ascontiguousarray(a.reshape(-1, order=order))
            return _K.dequantize_blockwise(flat, amax, fmt == F_Q8S).reshape(a.shape,
                                                                             order=order)
        return widen(a)

    def add(self, p: np.ndarray, fresh: List[Optional[np.ndarray]]) -> List[Optional[np.ndarray]]:
        """Register param p with its fresh float states; return its stored states."""
        n = len(self.pfmt)
        size = self._decide[n] if self._decide is not None and n < len(self._decide) else p.size
        self.pfmt.append(param_format(p))
        self._half += self.pfmt[-1] != F_NATIVE
        self.master.append(widen(p).copy(order="K") if self.master_weights else None)
        fmts, amaxes, out = [], [], []
        for j, s in enumerate(fresh):
            f = self.state_format(j, size) if s is not None else F_NATIVE
            st, am = self.encode(f, s) if s is not None else (None, None)
            fmts.append(f)
            amaxes.append(am)
            out.append(st)
        pad = MAX_STATES - len(fresh)
        self.sfmt.append(fmts + [F_NATIVE] * pad)
        self.amax.append(amaxes + [None] * pad)
        return out

    def truncate(self, n: int) -> None:
        del self.pfmt[n:], self.master[n:], self.sfmt[n:], self.amax[n:]
        self._half = sum(f != F_NATIVE for f in self.pfmt)

    def engine_args(self) -> Dict[str, Any]:
        keys = self._sr_keys
        return {"pfmt": self.pfmt, "sfmt": self.sfmt, "master": self.master,
                "amax": self.amax, "sr": self.sr, "seed": self.seed,
                "sr_keys": (None if keys is None else list(keys[:len(self.pfmt)]))}

    # ------------------------------------------------------------ state_dict
    def entry(self, i: int, e: Dict[str, Any], names: Tuple[str, ...], copy: bool) -> None:
        """Add param i's absmax arrays and master copy to its state entry."""
        for j, name in enumerate(names):
            am = self.amax[i][j] if j < len(self.amax[i]) else None
            if am is not None and name in e:
                e[name + "_absmax"] = am.copy() if copy else am
        m = self.master[i]
        if m is not None:
            e["master_param"] = m.copy() if copy else m

    def saved_format(self, j: int, name: str, e: Dict[str, Any], p: np.ndarray,
                     where: str) -> Tuple[np.ndarray, Optional[np.ndarray], int]:
        """Check saved state ``name`` (slot j) of a param like p: (array,
        absmax or None, its format). Raises on anything malformed."""
        v = e.get(name)
        if v is None:
            raise ValueError(f"{where}: state lacks {name!r}")
        if not isinstance(v, np.ndarray):
            raise TypeError(f"{where}: state {name!r} must be an ndarray, got "
                            f"{type(v).__name__}")
        if v.shape != p.shape:
            raise ValueError(f"{where}: state {name!r} has shape {v.shape}, expected {p.shape}")
        am = e.get(name + "_absmax")
        if v.dtype == np.uint8:
            if am is None:
                raise ValueError(f"{where}: 8-bit state {name!r} lacks {name + '_absmax'!r}")
            if not isinstance(am, np.ndarray) or am.dtype != np.float32 or am.ndim != 1:
                raise ValueError(f"{where}: state {name + '_absmax'!r} must be a 1-D float32 "
                                 "array")
            if am.shape[0] != nblocks(p.size):
                raise ValueError(f"{where}: state {name + '_absmax'!r} has {am.shape[0]} "
                                 f"blocks, a param of {p.size} elements has "
                                 f"{nblocks(p.size)} blocks of {QBLOCK}")
            src_fmt = F_Q8S if self.qmaps[j] == "s" else F_Q8U
        elif am is not None:
            raise ValueError(f"{where}: state {name + '_absmax'!r} given for a state that is "
                             "not 8-bit")
        elif is_half(v.dtype) and v.dtype != np.float16:
            src_fmt = F_BF16
        elif v.dtype == self._native_dtype(p):
            src_fmt = F_NATIVE
        else:
            raise ValueError(f"{where}: state {name!r} has dtype {v.dtype}, param has "
                             f"{self._native_dtype(p)}"
                             + (" (or bfloat16, or 8-bit codes with their absmax)"
                                if self.qmaps else ""))
        return v, am, src_fmt

    def load_state(self, i: int, j: int, name: str, e: Dict[str, Any], p: np.ndarray,
                   where: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Saved state ``name`` of param i (any of float, bfloat16 or 8-bit
        codes + absmax) in this optimizer's format for slot j: (storage,
        absmax). Raises on anything malformed; writes nothing."""
        v, am, src_fmt = self.saved_format(j, name, e, p, where)
        dst = self.sfmt[i][j]
        if src_fmt == dst:
            return (np.ascontiguousarray(v).reshape(p.shape) if dst != F_NATIVE
                    else v.astype(self._native_dtype(p), copy=False)), am
        order = mem_order(p)
        x = (v.astype(np.float32) if src_fmt == F_NATIVE
             else self.decode(src_fmt, v, am, order))
        if dst == F_NATIVE:
            return x.astype(self._native_dtype(p), copy=False), None
        return self.encode(dst, x, order)

    @staticmethod
    def _native_dtype(p: np.ndarray) -> Any:
        return np.float32 if is_half(p.dtype) else p.dtype

    def load_master(self, i: int, e: Dict[str, Any], p: np.ndarray,
                    where: str) -> Optional[np.ndarray]:
        if self.master[i] is None:
            return None
        v = e.get("master_param")
        if v is None:
            return widen(p)
        if not isinstance(v, np.ndarray) or v.shape != p.shape or v.dtype != np.float32:
            raise ValueError(f"{where}: state 'master_param' must be a float32 array of the "
                             f"param's shape {p.shape}")
        return v

    def assign(self, i: int, j: int, dst: np.ndarray, src: Any) -> None:
        """Write a load_state result into param i's slot j."""
        st, am = src
        dst[...] = st
        if am is not None:
            a = self.amax[i][j]
            assert a is not None
            a[...] = am
