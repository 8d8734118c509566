"""lrfast's fused kernels behind torch.optim's interface: drop-in optimizers for
torch tensors on the CPU.

``lrfast.torch.AdamW(model.parameters(), lr=1e-3)`` is a
``torch.optim.Optimizer`` with ``torch.optim.AdamW``'s constructor (params as
tensors, dicts of param groups or ``(name, tensor)`` pairs; torch's defaults),
``param_groups``, ``state``, ``state_dict`` format, ``zero_grad`` and hooks.
Its ``step()`` reads ``p.grad`` and updates the params and the state tensors
in place with lrfast's fused multi-tensor kernels, without copies: the kernels
work on ``Tensor.numpy()`` views of the tensors' memory.

- torch's ``lr_scheduler`` classes drive it as they drive torch.optim (they set
  ``group["lr"]``, ``group["betas"]`` or ``group["momentum"]`` between steps;
  the next step uses the new values).
- ``state_dict()`` is torch.optim's: ``lrfast.torch.Adam``'s loads into
  ``torch.optim.Adam`` and the other way round, and training continues the same.
- Params whose ``grad`` is None are skipped (state and step count unchanged).
- Refused with a clear error: params that are not dense, contiguous float32 or
  float64 CPU tensors; grads whose device, dtype or layout differ from their
  param's; a grad on a param with ``requires_grad=False``; torch's
  implementation switches (``foreach``, ``fused``, ``capturable``,
  ``differentiable``) set to anything but their defaults (``foreach=False`` and
  ``fused=False`` are accepted: no torch implementation is requested).
- Low precision (the elementwise optimizers): bfloat16/float16 params with
  ``master_weights=True`` (a float32 master in ``state[p]["master_param"]``);
  ``state_dtype="bfloat16"`` or ``"int8"`` keeps the state as bfloat16 tensors,
  or as uint8 codes under the state's name plus ``<name>_absmax`` (float32, one
  per block of 256; tensors under 4096 elements keep float32 state), as
  :class:`lrfast.AdamW` does. ``load_state_dict`` converts any of the three
  formats to the optimizer's.

Rules of use: change the state in place (``opt.state[p]["exp_avg"].zero_()``)
or through ``load_state_dict``; a state tensor replaced by assignment is not
seen by the kernels. Don't reassign ``p.data`` (the next step refuses). The
optimizer holds a view of each param's current grad between steps until
``zero_grad`` drops it.

Every optimizer of :mod:`lrfast.optim` has a class here; those with a
torch.optim counterpart (the table's torch references, Adafactor, Muon and
SparseAdam included) take that class's exact signature and state_dict format,
the others the table's (Lamb, LARS, NovoGrad, Prodigy, DoG, LDoG and the
schedule-free ones: the reference packages' positional signatures). The
elementwise ones run the fused engine directly (:class:`TorchOptimizer`); the
rest drive an inner ``lrfast.<Name>`` over the same memory
(:class:`WrappedOptimizer`): ``opt.d`` on Prodigy/DoG/LDoG, ``train()``/
``eval()`` on the schedule-free ones (the mode in each group's ``train_mode``).
"""
from __future__ import annotations

try:
    import torch as _torch
except ImportError as e:      # pragma: no cover - exercised without torch
    raise ImportError("lrfast.torch needs PyTorch (CPU is enough): pip install torch, or "
                      "pip install \"lrfast[torch]\"; lrfast itself works without it") from e

from ..optim._table import TABLE
from ._optimizer import TorchOptimizer
from ._wrapped import WrappedOptimizer, _LrFree, _ScheduleFree
from .. import optim as _lo

__all__ = ["TorchOptimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW",
           "Adamax", "NAdam", "RAdam", "Rprop", "ASGD", "Lion", "AdaBelief", "Yogi", "ADOPT",
           "Adan", "Lamb", "LARS", "NovoGrad", "Adafactor", "Muon", "SparseAdam",
           "ScheduleFreeSGD", "ScheduleFreeAdamW", "ScheduleFreeRAdam", "Prodigy", "DoG", "LDoG",
           "DAdaptAdam", "DAdaptSGD", "DAdaptAdaGrad", "WrappedOptimizer"]

_ = _torch


class SGD(TorchOptimizer):
    """torch.optim.SGD on lrfast's kernels (see :class:`lrfast.SGD` for the rule)."""
    spec = TABLE["SGD"]


class Adagrad(TorchOptimizer):
    """torch.optim.Adagrad on lrfast's kernels (state filled when built, as torch)."""
    spec = TABLE["Adagrad"]


class Adadelta(TorchOptimizer):
    """torch.optim.Adadelta on lrfast's kernels."""
    spec = TABLE["Adadelta"]


class RMSprop(TorchOptimizer):
    """torch.optim.RMSprop on lrfast's kernels."""
    spec = TABLE["RMSprop"]


class Adam(TorchOptimizer):
    """torch.optim.Adam on lrfast's kernels (amsgrad, decoupled_weight_decay)."""
    spec = TABLE["Adam"]


class AdamW(TorchOptimizer):
    """torch.optim.AdamW on lrfast's kernels."""
    spec = TABLE["AdamW"]


class Adamax(TorchOptimizer):
    """torch.optim.Adamax on lrfast's kernels."""
    spec = TABLE["Adamax"]


class NAdam(TorchOptimizer):
    """torch.optim.NAdam on lrfast's kernels (``mu_product`` kept as torch stores it)."""
    spec = TABLE["NAdam"]


class RAdam(TorchOptimizer):
    """torch.optim.RAdam on lrfast's kernels."""
    spec = TABLE["RAdam"]


class Rprop(TorchOptimizer):
    """torch.optim.Rprop on lrfast's kernels."""
    spec = TABLE["Rprop"]


class ASGD(TorchOptimizer):
    """torch.optim.ASGD on lrfast's kernels (``eta``/``mu`` kept as torch stores them)."""
    spec = TABLE["ASGD"]


class Lion(TorchOptimizer):
    """Lion (see :class:`lrfast.Lion`) as a torch optimizer; state ``step``, ``exp_avg``."""
    spec = TABLE["Lion"]


class AdaBelief(TorchOptimizer):
    """AdaBelief (see :class:`lrfast.AdaBelief`) as a torch optimizer."""
    spec = TABLE["AdaBelief"]


class Yogi(TorchOptimizer):
    """Yogi (see :class:`lrfast.Yogi`) as a torch optimizer."""
    spec = TABLE["Yogi"]


class ADOPT(TorchOptimizer):
    """ADOPT (see :class:`lrfast.ADOPT`) as a torch optimizer."""
    spec = TABLE["ADOPT"]


class Adan(TorchOptimizer):
    """Adan (see :class:`lrfast.Adan`) as a torch optimizer."""
    spec = TABLE["Adan"]


# Optimizers driven through an inner lrfast optimizer (per-tensor and global
# sums, engine-held numbers, own steps, sparse grads, train/eval modes): one
# line each (lrfast/torch/_wrapped.py).

class Lamb(WrappedOptimizer):
    """LAMB (see :class:`lrfast.Lamb`) as a torch optimizer; state ``step``,
    ``exp_avg``, ``exp_avg_sq``."""
    lrfast_class = _lo.Lamb


class LARS(WrappedOptimizer):
    """LARS (see :class:`lrfast.LARS`) as a torch optimizer (``lr`` required);
    state ``step``, ``trace``."""
    lrfast_class = _lo.LARS


class NovoGrad(WrappedOptimizer):
    """NovoGrad (see :class:`lrfast.NovoGrad`) as a torch optimizer; state
    ``step``, ``exp_avg`` and ``nu`` (a number per tensor)."""
    lrfast_class = _lo.NovoGrad


class Adafactor(WrappedOptimizer):
    """torch.optim.Adafactor on lrfast's Adafactor step (state ``step``,
    ``row_var``/``col_var`` or ``variance``, in torch's shapes)."""
    lrfast_class = _lo.Adafactor


class Muon(WrappedOptimizer):
    """torch.optim.Muon on lrfast's Muon (2-D params; the Newton-Schulz
    iteration in the param's dtype, not bfloat16 as torch); state
    ``momentum_buffer``."""
    lrfast_class = _lo.Muon


class SparseAdam(WrappedOptimizer):
    """torch.optim.SparseAdam on lrfast's row-sparse Adam: grads are torch
    sparse COO tensors with one sparse dimension (rows), coalesced as torch
    does; only the touched rows change. State ``step`` (an int, as torch),
    ``exp_avg``, ``exp_avg_sq``."""
    lrfast_class = _lo.SparseAdam


class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-free SGD (see :class:`lrfast.ScheduleFreeSGD`; the
    ``schedulefree.SGDScheduleFree`` algorithm) as a torch optimizer, with
    ``train()``/``eval()``; the mode is each group's ``train_mode``, as the
    reference's; state ``step``, ``z``, ``lr_max``, ``weight_sum`` per param."""
    lrfast_class = _lo.ScheduleFreeSGD


class ScheduleFreeAdamW(_ScheduleFree):
    """Schedule-free AdamW (see :class:`lrfast.ScheduleFreeAdamW`) as a torch
    optimizer, with ``train()``/``eval()``; state as ScheduleFreeSGD's plus
    ``exp_avg_sq``."""
    lrfast_class = _lo.ScheduleFreeAdamW


class ScheduleFreeRAdam(_ScheduleFree):
    """Schedule-free RAdam (see :class:`lrfast.ScheduleFreeRAdam`) as a torch
    optimizer, with ``train()``/``eval()``."""
    lrfast_class = _lo.ScheduleFreeRAdam


class Prodigy(_LrFree):
    """Prodigy (see :class:`lrfast.Prodigy`; ``prodigyopt.Prodigy``) as a torch
    optimizer; ``opt.d`` is the step size the next step uses; state ``step``,
    ``s``, ``p0``, ``exp_avg``, ``exp_avg_sq`` and ``d``, ``d_max``,
    ``d_numerator``, ``k``."""
    lrfast_class = _lo.Prodigy


class DoG(_LrFree):
    """DoG (see :class:`lrfast.DoG`; ``dog.DoG``) as a torch optimizer;
    ``opt.d`` is the last step's eta; state ``step``, ``x0``, ``rbar``, ``G``,
    ``eta``."""
    lrfast_class = _lo.DoG


class LDoG(_LrFree):
    """LDoG (see :class:`lrfast.LDoG`; ``dog.LDoG``) as a torch optimizer."""
    lrfast_class = _lo.LDoG


class DAdaptAdam(_LrFree):
    """D-Adaptation Adam (see :class:`lrfast.DAdaptAdam`; ``dadaptation.DAdaptAdam``)
    as a torch optimizer; ``opt.d`` is the current d."""
    lrfast_class = _lo.DAdaptAdam


class DAdaptSGD(_LrFree):
    """D-Adaptation SGD (see :class:`lrfast.DAdaptSGD`; ``dadaptation.DAdaptSGD``) as
    a torch optimizer; ``opt.d`` is the current d."""
    lrfast_class = _lo.DAdaptSGD


class DAdaptAdaGrad(_LrFree):
    """D-Adaptation AdaGrad (see :class:`lrfast.DAdaptAdaGrad`;
    ``dadaptation.DAdaptAdaGrad``) as a torch optimizer; ``opt.d`` is the current d."""
    lrfast_class = _lo.DAdaptAdaGrad
