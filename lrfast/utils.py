"""Gradient utilities: global norm and clipping, with the kernels' deterministic
reduction (fixed blocks, double accumulators, fixed combine order: the same
result for any thread count)."""
from __future__ import annotations

from typing import Iterable, Optional, Tuple, Union

import numpy as np

from ._dispatch import kernels as _K
from ._typing import Array
from ._validate import optional_positive

__all__ = ["grad_norm", "clip_grad_norm"]


def _engine(grads, what):
    if isinstance(grads, np.ndarray):
        grads = [grads]
    grads = list(grads)
    arrays = []
    for i, g in enumerate(grads):
        if g is None:
            continue
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{what}: grads[{i}] must be a numpy ndarray, got {type(g).__name__}")
        if g.dtype not in (np.float32, np.float64):
            raise TypeError(f"{what}: grads[{i}] has dtype {g.dtype} (float32 or float64)")
        if not (g.flags.c_contiguous or g.flags.f_contiguous) or not g.flags.aligned:
            raise ValueError(f"{what}: grads[{i}] must be contiguous and aligned")
        arrays.append(g)
    eng = _K.Engine(_K.KINDS["scale"], arrays, [None] * len(arrays), [0] * len(arrays))
    return eng, arrays


def grad_norm(grads: Union[Array, Iterable[Optional[Array]]]) -> Tuple[float, bool]:
    """Global L2 norm of ``grads`` (None entries skipped), in double.

    Returns
    -------
    (float, bool) : the norm and whether every element is finite.
    """
    eng, arrays = _engine(grads, "grad_norm")
    return eng.grad_norm(arrays)


def clip_grad_norm(grads: Union[Array, Iterable[Optional[Array]]], max_norm: float,
                   error_if_nonfinite: bool = False) -> float:
    """Scale ``grads`` IN PLACE so their global L2 norm is at most ``max_norm``,
    as ``torch.nn.utils.clip_grad_norm_``: ``g *= min(1, max_norm/(norm + 1e-6))``.

    Returns the total norm before clipping. (Optimizers take ``max_grad_norm=``
    instead, which clips a temporary and never modifies the grads.)
    """
    if max_norm is None:
        raise ValueError("clip_grad_norm: max_norm must be a positive finite number, got None")
    optional_positive(max_norm, "clip_grad_norm: max_norm")
    eng, arrays = _engine(grads, "clip_grad_norm")
    for i, g in enumerate(arrays):
        if not g.flags.writeable:
            raise ValueError(f"clip_grad_norm: grad {i} is read-only (it is scaled in place)")
    norm, finite = eng.grad_norm(arrays)
    if not finite:
        if error_if_nonfinite:
            raise RuntimeError(f"clip_grad_norm: the total norm is {norm} (non-finite grads)")
    coef = max_norm / (norm + 1e-6)
    if not coef >= 1.0:        # a NaN norm scales by NaN, as torch does
        eng.step(arrays, [(coef,)], allow_none=False)
    return norm
