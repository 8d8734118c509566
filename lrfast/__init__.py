"""lrfast: optimizer steps that cost nothing.

Fused Cython/OpenMP kernels for SGD, Adagrad, Adadelta, RMSprop, Adam and kin
over contiguous float32/float64 numpy arrays, updated in place with one call
per step for all tensors, plus learning-rate schedules.

>>> import numpy as np, lrfast
>>> w = np.ones(4, np.float32)
>>> opt = lrfast.Adam([w], lr=0.1)
>>> opt.step([np.ones(4, np.float32)])
True
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"      # the one place the version is written (pyproject reads it)


from ._threads import (set_num_threads, get_num_threads, threads, set_parallel_threshold,
                       get_parallel_threshold)
from ._config import show_config, config
from .optim import (Optimizer, SGD, Adagrad, Adadelta, RMSprop, Adam, AdamW, Adamax, NAdam,
                    RAdam, Rprop, ASGD, Lion)
from .optim import AdaBelief, Yogi, ADOPT, Adan, Lamb, LARS, NovoGrad
from .optim import Prodigy, DoG, LDoG, DAdaptAdam, DAdaptSGD, DAdaptAdaGrad
from .optim import Adafactor, Muon
from .optim import SparseAdam, RowSparse
from .optim import ScheduleFreeSGD, ScheduleFreeAdamW, ScheduleFreeRAdam
from .optim._wrappers import EMA, Accumulate, Lookahead
from .utils import clip_grad_norm, grad_norm
from .io import save, load, to_torch_state_dict, from_torch_state_dict
from ._bnb import to_bitsandbytes_state_dict, from_bitsandbytes_state_dict
from . import kernels

if TYPE_CHECKING:      # imported lazily at runtime (see __getattr__); visible to type checkers
    from . import distributed, line_search, schedules  # noqa: F401
    from .lbfgs import LBFGS
    from .lr_finder import find_lr
    from .newton import DiagonalNewton

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax",
           "NAdam", "RAdam", "Rprop", "ASGD", "Lion", "set_num_threads", "get_num_threads",
           "threads",
           "set_parallel_threshold", "get_parallel_threshold", "show_config", "config",
           "clip_grad_norm", "grad_norm", "save", "load", "to_torch_state_dict",
           "from_torch_state_dict", "to_bitsandbytes_state_dict", "from_bitsandbytes_state_dict",
           "kernels", "schedules", "find_lr", "LBFGS", "DiagonalNewton",
           "line_search", "__version__"]
__all__ += ["AdaBelief", "Yogi", "ADOPT", "Adan", "Lamb", "LARS", "NovoGrad"]
__all__ += ["Prodigy", "DoG", "LDoG", "DAdaptAdam", "DAdaptSGD", "DAdaptAdaGrad"]
__all__ += ["Adafactor", "Muon"]
__all__ += ["SparseAdam", "RowSparse"]
__all__ += ["ScheduleFreeSGD", "ScheduleFreeAdamW", "ScheduleFreeRAdam"]
__all__ += ["EMA", "Accumulate", "Lookahead"]


_LAZY = {"schedules": ("schedules", None), "find_lr": ("lr_finder", "find_lr"),
         "LBFGS": ("lbfgs", "LBFGS"), "DiagonalNewton": ("newton", "DiagonalNewton"),
         "line_search": ("line_search", None), "distributed": ("distributed", None)}


def __getattr__(name: str) -> Any:
    # imported on first use: schedules and find_lr need only numpy (plots need
    # matplotlib), distributed needs mpi4py only when a communicator is made
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        m = importlib.import_module(f"{__name__}.{mod}")
        return m if attr is None else getattr(m, attr)
    raise AttributeError(f"module 'lrfast' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
