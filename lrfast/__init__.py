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

__version__ = "0.1.0"


from ._threads import (set_num_threads, get_num_threads, threads, set_parallel_threshold,
                       get_parallel_threshold)
from ._config import show_config, config
from .optim import (Optimizer, SGD, Adagrad, Adadelta, RMSprop, Adam, AdamW, Adamax, NAdam,
                    RAdam)
from .optim import AdaBelief, Yogi, ADOPT, Adan
from .utils import clip_grad_norm, grad_norm
from .io import save, load, to_torch_state_dict, from_torch_state_dict
from . import kernels

if TYPE_CHECKING:      # imported lazily at runtime (see __getattr__); visible to type checkers
    from . import distributed, line_search, schedules  # noqa: F401
    from .lbfgs import LBFGS
    from .lr_finder import find_lr
    from .newton import DiagonalNewton

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax",
           "NAdam", "RAdam", "set_num_threads", "get_num_threads", "threads",
           "set_parallel_threshold", "get_parallel_threshold", "show_config", "config",
           "clip_grad_norm", "grad_norm", "save", "load", "to_torch_state_dict",
           "from_torch_state_dict", "kernels", "schedules", "find_lr", "LBFGS", "DiagonalNewton",
           "line_search", "__version__"]
__all__ += ["AdaBelief", "Yogi", "ADOPT", "Adan"]


def __getattr__(name: str) -> Any:
    # schedules and find_lr import lazily (they need only numpy; plots need matplotlib)
    if name == "schedules":
        import importlib
        return importlib.import_module(f"{__name__}.schedules")
    if name == "find_lr":
        from .lr_finder import find_lr
        return find_lr
    lazy = {"LBFGS": ("lbfgs", "LBFGS"), "DiagonalNewton": ("newton", "DiagonalNewton"),
            "line_search": ("line_search", None), "distributed": ("distributed", None)}
    if name in lazy:
        import importlib
        mod, attr = lazy[name]
        m = importlib.import_module(f"{__name__}.{mod}")
        return m if attr is None else getattr(m, attr)
    raise AttributeError(f"module 'lrfast' has no attribute {name!r}")
