"""Conversion between lrfast's int8-state Adam/AdamW state_dicts and
bitsandbytes' ``Adam8bit`` / ``AdamW8bit`` ones.

Both keep the same numbers: 8-bit blockwise codes (block 256, bitsandbytes'
signed dynamic map for the first moment, unsigned for the second) and one
float32 absmax per block, so converting moves arrays and renames keys:

============================  =================================================
lrfast (``lrfast.optim/1``)    bitsandbytes (torch's layout)
============================  =================================================
``exp_avg`` (uint8 codes)      ``state1``, with ``qmap1`` (the signed map)
``exp_avg_absmax``             ``absmax1``
``exp_avg_sq`` (uint8 codes)   ``state2``, with ``qmap2`` (the unsigned map)
``exp_avg_sq_absmax``          ``absmax2``
``step``                       ``step`` (an int)
============================  =================================================

bitsandbytes' ``state_dict()`` nests the quantization tensors of an entry under
``"__bnb_optimizer_quant_state__"``; both nestings are read, and that one is
written. A param under 4096 elements keeps float32 state on both sides (its
``state1``/``state2`` are then float32 arrays); a float32 state of a larger
param is quantized, and 8-bit codes of a smaller one decoded, so the result
always has the layout its optimizer allocates.

bitsandbytes' 8-bit Adam decays weights decoupled, as AdamW (``p *= 1 -
lr*weight_decay``): an lrfast ``Adam`` with ``weight_decay != 0`` (L2 decay
folded into the gradient) has no bitsandbytes twin and is refused.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np

from . import _quant as Q

__all__ = ["to_bitsandbytes_state_dict", "from_bitsandbytes_state_dict", "MIN_8BIT_SIZE"]

MIN_8BIT_SIZE = 4096          # bitsandbytes' min_8bit_size: smaller params keep float32 state
_WRAP = "__bnb_optimizer_quant_state__"
_QUANT_KEYS = ("state1", "state2", "qmap1", "qmap2", "absmax1", "absmax2")
_NAMES = ("Adam", "AdamW")


def _np(v: Any, where: str) -> np.ndarray:
    """A numpy copy of a torch tensor or array-like (no torch import)."""
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        v = v.detach().cpu().numpy()
    if not isinstance(v, np.ndarray):
        raise TypeError(f"{where}: expected an array or a tensor, got {type(v).__name__}")
    return np.array(v, copy=True)


def _int(v: Any, where: str) -> int:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 0:
        raise ValueError(f"{where}: expected a whole number >= 0, got {v!r}")
    return int(v)


def _known_map(q: np.ndarray, signed: bool) -> bool:
    if q.shape != (256,):
        return False
    q = q.astype(np.float32)
    return bool(np.array_equal(q, Q.dynamic_map(signed))
                or np.array_equal(q, Q._build_map(signed, fma=False)))


def _lrfast_moment(codes_or_f32: np.ndarray, absmax, size: int, signed: bool, where: str):
    """(state, absmax or None) in the layout lrfast's int8 Adam keeps for a param
    of ``size`` elements."""
    if codes_or_f32.dtype == np.uint8:
        if absmax is None:
            raise ValueError(f"{where}: 8-bit state without its absmax")
        absmax = absmax.astype(np.float32, copy=False).reshape(-1)
        if absmax.shape != (Q.n_blocks(size),):
            raise ValueError(f"{where}: absmax has {absmax.size} blocks, expected "
                             f"{Q.n_blocks(size)} for {size} elements (blocks of 256)")
        if size >= MIN_8BIT_SIZE:
            return codes_or_f32, absmax
        return Q.dequantize_blockwise_ref(codes_or_f32, absmax, signed), None
    if codes_or_f32.dtype != np.float32:
        raise ValueError(f"{where}: state must be uint8 codes or float32, got "
                         f"{codes_or_f32.dtype}")
    if size >= MIN_8BIT_SIZE:
        return Q.quantize_blockwise_ref(np.ascontiguousarray(codes_or_f32), signed)
    return codes_or_f32, None


def _check_groups(groups: Any, where: str) -> list:
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, Mapping) for g in groups):
        raise ValueError(f"{where}: param_groups must be a list of dicts")
    return list(groups)


def _lrfast_group(g: Mapping, gw: str, optimizer: str) -> Dict[str, Any]:
    """One bitsandbytes param group as an lrfast Adam/AdamW group."""
    try:
        lr, eps, wd = float(g["lr"]), float(g["eps"]), float(g["weight_decay"])
        betas = tuple(float(b) for b in g["betas"])[:2]
        params = [int(i) for i in g["params"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{gw}: missing or bad Adam hyperparameter ({err})") from None
    if len(betas) != 2:
        raise ValueError(f"{gw}: betas must be a pair")
    if optimizer == "Adam" and wd != 0.0:
        raise ValueError(f"{gw}: bitsandbytes' 8-bit Adam decays weights decoupled "
                         f"(weight_decay={wd}); convert to 'AdamW'")
    out: Dict[str, Any] = {"params": params, "lr": lr, "betas": betas, "eps": eps,
                           "weight_decay": wd, "amsgrad": False, "maximize": False}
    if optimizer == "Adam":
        out["decoupled_weight_decay"] = False
    out["state_dtype"] = "int8"
    return out


def _lrfast_entry(entry: Any, ew: str) -> Dict[str, Any]:
    """One bitsandbytes per-param state as an lrfast Adam entry."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"{ew}: expected a dict")
    e = {k: v for k, v in entry.items() if k != _WRAP}
    e.update(entry.get(_WRAP, {}))
    if "state1" not in e or "state2" not in e or "step" not in e:
        raise ValueError(f"{ew}: expected 'step', 'state1' and 'state2' (Adam's state)")
    s1, s2 = _np(e["state1"], ew + "['state1']"), _np(e["state2"], ew + "['state2']")
    if s1.shape != s2.shape:
        raise ValueError(f"{ew}: state1 and state2 shapes differ ({s1.shape}, {s2.shape})")
    for qk, signed in (("qmap1", True), ("qmap2", False)):
        if s1.dtype == np.uint8 and (qk not in e or not _known_map(_np(e[qk], ew), signed)):
            raise ValueError(f"{ew}: {qk} is not bitsandbytes' "
                             f"{'signed' if signed else 'unsigned'} dynamic map")
    a1 = _np(e["absmax1"], ew) if "absmax1" in e else None
    a2 = _np(e["absmax2"], ew) if "absmax2" in e else None
    m, ma = _lrfast_moment(s1, a1, s1.size, True, ew + "['state1']")
    v, va = _lrfast_moment(s2, a2, s2.size, False, ew + "['state2']")
    out: Dict[str, Any] = {"step": _int(e["step"], ew + "['step']"), "exp_avg": m}
    if ma is not None:
        out["exp_avg_absmax"] = ma
    out["exp_avg_sq"] = v
    if va is not None:
        out["exp_avg_sq_absmax"] = va
    return out


def from_bitsandbytes_state_dict(bnb_state_dict: Mapping, optimizer: str = "AdamW"
                                 ) -> Dict[str, Any]:
    """Convert a bitsandbytes ``Adam8bit``/``AdamW8bit`` state_dict to an lrfast
    state_dict (format ``lrfast.optim/1``) for an lrfast ``Adam`` or ``AdamW``
    with ``state_dtype="int8"``, to pass to ``opt.load_state_dict``.

    Tensors may be torch tensors or numpy arrays; the result holds numpy arrays
    only. ``optimizer`` is ``"Adam"`` (only with ``weight_decay == 0``: bitsandbytes
    decays decoupled) or ``"AdamW"``. Codes and absmax are moved unchanged; their
    blocks run along the C order, as bitsandbytes keeps them, so load the result
    into an optimizer over C-contiguous params (an F-contiguous param's 8-bit
    blocks run along its own memory order).

    Raises TypeError/ValueError for a malformed dict, a quantization map that is
    not bitsandbytes' dynamic map, or a block count that does not fit the state.
    """
    where = "from_bitsandbytes_state_dict"
    if optimizer not in _NAMES:
        raise ValueError(f"{where}: optimizer must be one of {_NAMES}, got {optimizer!r}")
    if not isinstance(bnb_state_dict, Mapping) or "state" not in bnb_state_dict \
            or "param_groups" not in bnb_state_dict:
        raise TypeError(f"{where}: expected a torch-style state_dict (a dict with 'state' and "
                        "'param_groups')")
    groups = [_lrfast_group(g, f"{where}: param_groups[{gi}]", optimizer)
              for gi, g in enumerate(_check_groups(bnb_state_dict["param_groups"], where))]
    raw = bnb_state_dict["state"]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: 'state' must be a dict")
    state: Dict[int, Dict[str, Any]] = {}
    for key, entry in raw.items():
        ew = f"{where}: state[{key!r}]"
        state[_int(key, ew)] = _lrfast_entry(entry, ew)
    steps = [s["step"] for s in state.values()]
    return {"format": "lrfast.optim/1", "optimizer": optimizer,
            "step_count": max(steps, default=0), "skipped_steps": 0, "state": state,
            "param_groups": groups}


def _decode_f(codes: np.ndarray, absmax: Any, signed: bool) -> np.ndarray:
    """8-bit codes of an F-ordered param (blocks along F memory order) as
    float32 in the param's shape; anything else is returned unchanged."""
    if codes.dtype != np.uint8 or absmax is None:
        return codes
    absmax = np.asarray(absmax, np.float32).reshape(-1)
    if absmax.shape != (Q.n_blocks(codes.size),):
        return codes                  # _lrfast_moment refuses it with the reason
    flat = np.ascontiguousarray(codes.reshape(-1, order="F"))
    return Q.dequantize_blockwise_ref(flat, absmax, signed).reshape(codes.shape, order="F")


def to_bitsandbytes_state_dict(opt_or_state_dict: Any) -> Dict[str, Any]:
    """Convert an lrfast ``Adam``/``AdamW`` (or its state_dict) to a state_dict
    that bitsandbytes' ``Adam8bit`` / ``AdamW8bit`` ``load_state_dict`` accepts
    (torch tensors: torch is imported here).

    Codes and absmax are moved unchanged; float32 moments of a param with 4096
    or more elements are quantized (as bitsandbytes keeps them), smaller params
    keep float32 state. The 8-bit blocks of an F-contiguous param run along its
    memory order, bitsandbytes' along the C order: given the optimizer, such a
    param's moments are decoded and quantized again in C order (given only a
    state_dict, every param is taken to be C-ordered, as torch's are). Refused
    with ValueError: ``amsgrad``, ``maximize``, and ``Adam`` with
    ``weight_decay != 0`` (L2 decay: bitsandbytes decays decoupled).
    """
    where = "to_bitsandbytes_state_dict"
    sd = opt_or_state_dict
    fortran = set()              # params whose 8-bit blocks run along F memory order
    if not isinstance(sd, Mapping) and callable(getattr(sd, "state_dict", None)):
        flat = [p for g in getattr(sd, "param_groups", ()) for p in g.get("params", ())]
        fortran = {i for i, p in enumerate(flat) if isinstance(p, np.ndarray) and p.ndim > 1
                   and p.flags.f_contiguous and not p.flags.c_contiguous}
        sd = sd.state_dict()
    if not isinstance(sd, Mapping) or sd.get("format") != "lrfast.optim/1":
        raise TypeError(f"{where}: expected an lrfast optimizer or its state_dict")
    name = sd.get("optimizer")
    if name not in _NAMES:
        raise ValueError(f"{where}: only Adam and AdamW have a bitsandbytes 8-bit twin, "
                         f"got {name!r}")
    groups = []
    for gi, g in enumerate(_check_groups(sd.get("param_groups"), where)):
        gw = f"{where}: param_groups[{gi}]"
        if g.get("amsgrad") or g.get("maximize"):
            raise ValueError(f"{gw}: bitsandbytes' 8-bit Adam has no amsgrad or maximize")
        decoupled = name == "AdamW" or bool(g.get("decoupled_weight_decay", False))
        if not decoupled and float(g["weight_decay"]) != 0.0:
            raise ValueError(f"{gw}: Adam's weight_decay is L2 (added to the gradient); "
                             "bitsandbytes decays decoupled: use AdamW")
        groups.append({"lr": float(g["lr"]), "betas": tuple(float(b) for b in g["betas"]),
                       "eps": float(g["eps"]), "weight_decay": float(g["weight_decay"]),
                       "alpha": 0.0, "t_alpha": None, "t_beta3": None,
                       "params": [int(i) for i in g["params"]]})
    pending = {}
    for key, e in dict(sd.get("state", {})).items():
        ew = f"{where}: state[{key!r}]"
        if not isinstance(e, Mapping) or "exp_avg" not in e or "exp_avg_sq" not in e:
            raise ValueError(f"{ew}: expected Adam's exp_avg and exp_avg_sq")
        m, v = np.asarray(e["exp_avg"]), np.asarray(e["exp_avg_sq"])
        if int(key) in fortran:
            # an F-ordered param's blocks run along its memory order; bitsandbytes'
            # along the C order: decode, and quantize again below (not bit-exact)
            m = _decode_f(m, e.get("exp_avg_absmax"), True)
            v = _decode_f(v, e.get("exp_avg_sq_absmax"), False)
        m, ma = _lrfast_moment(m, e.get("exp_avg_absmax"), m.size, True, ew + "['exp_avg']")
        v, va = _lrfast_moment(v, e.get("exp_avg_sq_absmax"), v.size, False,
                               ew + "['exp_avg_sq']")
        pending[int(key)] = (_int(e.get("step", 0), ew + "['step']"), m, ma, v, va)
    import torch                                     # bitsandbytes users have torch

    state = {}
    for key, (step, m, ma, v, va) in pending.items():
        q = {"state1": torch.from_numpy(np.array(m)), "state2": torch.from_numpy(np.array(v))}
        if ma is not None:
            q.update(qmap1=torch.from_numpy(Q.dynamic_map(True)),
                     qmap2=torch.from_numpy(Q.dynamic_map(False)),
                     absmax1=torch.from_numpy(np.array(ma)), absmax2=torch.from_numpy(np.array(va)))
        state[key] = {"step": step, _WRAP: q}
    return {"state": state, "param_groups": groups}
