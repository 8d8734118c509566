"""Type aliases for lrfast's public API (PEP 484; the package ships ``py.typed``).

Importable at runtime (only numpy and the standard library are imported), so
``typing.get_type_hints`` resolves every public annotation. Nothing here is
used to compute anything.
"""
from __future__ import annotations

import os
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Protocol,
                    Sequence, SupportsFloat, Tuple, Union)

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from matplotlib.axes import Axes
else:
    Axes = Any  # matplotlib is optional: a plain Any at runtime

__all__ = ["Array", "Grads", "ParamsLike", "Hyper", "Betas", "StateDict", "StrPath",
           "ArrayOrList", "Closure", "FAndGrad", "Step", "Steps", "FloatArray", "Axes",
           "SupportsStateDict", "SupportsLoadStateDict"]

#: A float32/float64 numpy array (params, grads, optimizer state).
Array = npt.NDArray[np.floating[Any]]

#: One gradient per param, in param order; ``None`` skips that param.
Grads = Sequence[Optional[Array]]

#: What optimizers take as params, as torch: a list of arrays, or of group dicts
#: (``{"params": [...], "lr": ...}``).
ParamsLike = Union[Iterable[Array], Iterable[Dict[str, Any]]]

#: A hyperparameter that may vary with the step: a number, or a schedule (any
#: callable ``n -> float``, such as an :class:`lrfast.schedules.Schedule`).
Hyper = Union[float, Callable[[int], float]]

#: Adam's ``(beta1, beta2)``; each may be a schedule.
Betas = Tuple[Hyper, Hyper]

#: A state_dict: plain dicts of numpy arrays, numbers and strings.
StateDict = Dict[str, Any]

#: A file system path.
StrPath = Union[str, os.PathLike[str]]

#: One array, or a list of arrays with the same structure as some params.
ArrayOrList = Union[Array, Sequence[Array]]

#: ``LBFGS.step``'s closure: ``closure() -> (loss, grads)``.
Closure = Callable[[], Tuple[SupportsFloat, Sequence[Optional[Array]]]]

#: A line search's ``f_and_grad(x) -> (f, g)``: ``x`` and ``g`` an array or a list of
#: arrays, as the search's ``x``.
FAndGrad = Callable[[Any], Tuple[SupportsFloat, Any]]

#: One step index of a schedule.
Step = Union[int, np.integer[Any]]

#: Several step indices: an integer array (or a list or tuple of ints).
Steps = Union[npt.NDArray[Any], List[int], Tuple[int, ...]]

#: What a schedule returns for several steps.
FloatArray = npt.NDArray[np.float64]


class SupportsStateDict(Protocol):
    """Anything with ``state_dict()`` (an lrfast optimizer)."""

    def state_dict(self) -> StateDict: ...


class SupportsLoadStateDict(Protocol):
    """Anything with ``load_state_dict(state_dict)`` (an lrfast optimizer)."""

    def load_state_dict(self, state_dict: StateDict) -> None: ...
