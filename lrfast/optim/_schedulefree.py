"""The schedule-free optimizers' train/eval modes (Defazio et al. 2024).

A schedule-free optimizer keeps two sequences: the params hold ``y`` (where
the grads are taken) in train mode, and state ``z``; the average ``x`` that
one evaluates is ``x = (y - (1-beta1)*z) / beta1``. ``eval()`` moves the params
from y to x, ``train()`` back, exactly as the ``schedulefree`` package does
(torch.lerp in the param dtype). The step itself is a kernel of the fused
engine; this module adds only the modes.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np

from ._base import Optimizer


def _lerp_(p: np.ndarray, z: np.ndarray, w: float) -> None:
    """p = torch.lerp(p, z, w) in place, in p's dtype: p + w*(z-p) for |w| < 0.5,
    else z - (z-p)*(1-w)."""
    T = p.dtype.type
    d = np.subtract(z, p)
    if abs(w) < 0.5:
        d *= T(w)
        p += d
    else:
        d *= T(1) - T(w)
        np.subtract(z, d, out=p)


class ScheduleFreeOptimizer(Optimizer):
    """Base of the schedule-free optimizers: ``train()``, ``eval()`` and the mode
    in the state_dict (``train_mode`` in every saved param group)."""

    _train_mode = True

    @property
    def train_mode(self) -> bool:
        """True when the params hold y (steps allowed), False after ``eval()``
        (they hold x)."""
        return self._train_mode

    def _beta1(self, hp: Dict[str, Any]) -> float:
        return hp["momentum"] if "momentum" in hp else hp["betas"][0]

    def _swap(self, to_train: bool) -> None:
        hps = self._hyperparams()
        ws = []
        for gi, hp in enumerate(hps):
            b1 = self._beta1(hp)
            if b1 == 0:                        # checked before any param moves
                what = f"{type(self).__name__}.{'train' if to_train else 'eval'}"
                raise ValueError(f"group {gi}: {what} needs "
                                 f"{'momentum' if 'momentum' in hp else 'betas[0]'} > 0 "
                                 "(x = (y - (1-beta1)*z)/beta1)")
            ws.append(1 - b1 if to_train else 1 - 1 / b1)
        for i, p in enumerate(self._params):
            if self._rule.t_of(self._key_of(i)) == 0:
                continue                       # never stepped: no z yet (as the reference)
            _lerp_(p, self._states[i][0], ws[self._group_of[i]])
        self._train_mode = to_train

    def train(self) -> None:
        """Train mode: move the params from x back to y (a no-op in train mode)."""
        with self._guard("train"):
            if not self._train_mode:
                self._swap(True)

    def eval(self) -> None:
        """Eval mode: move the params from y to the average x, the point to
        evaluate and to checkpoint (a no-op in eval mode). ``step`` raises
        until ``train()``."""
        with self._guard("eval"):
            if self._train_mode:
                self._swap(False)

    def step(self, grads, _aux=None, **kw) -> bool:  # type: ignore[override]
        if not self._train_mode:
            raise RuntimeError(f"{type(self).__name__}.step called in eval mode (the params "
                               "hold the average x, not y): call opt.train() before stepping")
        return super().step(grads, _aux, **kw)

    # ------------------------------------------------------------ state dict
    def _saved_groups(self) -> List[Dict[str, Any]]:
        groups = super()._saved_groups()
        for g in groups:
            g["train_mode"] = self._train_mode
        return groups

    def _plan_load(self, sd: Any) -> Tuple[Any, bool]:
        plan = super()._plan_load(sd)          # checks the groups' count and shape first
        modes = []
        for gi, g in enumerate(sd["param_groups"]):
            m = g.get("train_mode")
            if not isinstance(m, (bool, np.bool_)):
                raise ValueError(f"group {gi}: state_dict 'train_mode' must be True or "
                                 f"False, got {m!r}")
            modes.append(bool(m))
        if len(set(modes)) > 1:
            raise ValueError("state_dict param groups disagree on 'train_mode' "
                             f"({modes}); lrfast keeps one mode for all groups")
        return plan, modes[0] if modes else self._train_mode

    def _commit_load(self, plan: Any) -> None:
        inner, mode = plan
        super()._commit_load(inner)
        self._train_mode = mode

    def _repr_extra(self) -> List[str]:
        return super()._repr_extra() + [f"train_mode={self._train_mode}"]
