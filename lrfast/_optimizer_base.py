"""What every lrfast optimizer shares, whatever its step: the public views
(``step_count``, ``hyperparams``, ``lr``, ``params``, ``state``), the
state_dict envelope of format ``lrfast.optim/1`` (docs/state_dict.md), the
re-entry guard, ``zero_state``, pickling and deep copies, and ``repr``.

A subclass keeps its own storage and fills in a few hooks:

``_hyperparams() -> list of dict``
    Per group, the hyperparameter values the next step will use.
``_state_entries(copy) -> {param index: entry}``
    The per-param state (copies for a state_dict, views for ``state``).
``_saved_groups() -> list of dict``
    The ``param_groups`` of a state_dict: ``params`` (indices), the
    hyperparameters and ``schedules``.
``_plan_load(sd) -> plan``
    Validate a state_dict whose header :meth:`load_state_dict` has checked;
    raise before any write. ``_commit_load(plan)`` applies it (it must not
    fail); the base then sets ``step_count`` and ``skipped_steps``.
``_clear_state()``
    Forget the state (``zero_state``; the base resets the counters).
``_init_args() -> (args, kwargs)``
    What ``_reinit`` needs to rebuild the optimizer over the same params
    (pickling and ``copy.deepcopy``); ``_reinit`` defaults to
    ``type(self).__init__``. ``_pickle_extra``/``_unpickle_extra`` carry
    anything else (default: nothing). ``_repr_extra()`` adds items to the
    last line of ``repr`` (default: none).

A subclass calls :meth:`_init_base` in its ``__init__`` before anything that
uses the guard or the counters, and wraps every public method that reads or
changes its state in ``_enter(name)``/``_exit()`` (or ``with
self._guard(name)``). It must have ``param_groups`` (dicts with ``params``)
and ``_params``.
"""
from __future__ import annotations

import contextlib
import copy
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from ._typing import Array, StateDict
from ._validate import ReentryError, step_count

FORMAT = "lrfast.optim/1"

__all__ = ["OptimizerBase", "schedule_restore", "FORMAT", "check_header"]


def check_header(sd: Any, optimizer: str) -> None:
    """Check a state_dict's type, format, optimizer kind and step counters."""
    if not isinstance(sd, dict):
        raise TypeError(f"state_dict must be a dict, got {type(sd).__name__}")
    if sd.get("format") != FORMAT:
        raise ValueError(f"not an lrfast optimizer state_dict of format {FORMAT!r} "
                         f"(format {sd.get('format')!r})")
    if sd.get("optimizer") != optimizer:
        raise ValueError(f"state_dict is for optimizer {sd.get('optimizer')!r}, not {optimizer}")
    for k in ("step_count", "skipped_steps"):
        step_count(sd.get(k), f"state_dict[{k!r}]")


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def schedule_restore(fn: Callable[..., Any], ser: Any, name: str,
                     where: str = "") -> Optional[Tuple[Any, Any]]:
    """``(fn, saved state)`` to restore a saved schedule's state into ``fn``,
    checked on a copy (so the commit cannot fail); None when the saved entry
    holds no state. Raises ValueError when it does not fit."""
    if not (isinstance(ser, dict) and ser.get("state")):
        return None
    if not hasattr(fn, "load_state_dict"):
        raise ValueError(f"{where}saved schedule {name} has state but the optimizer's "
                         f"{name} is {_name(fn)}")
    try:
        copy.deepcopy(fn).load_state_dict(ser["state"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{where}saved state of schedule {name} does not fit: {e}") from e
    return fn, ser["state"]


class OptimizerBase:
    """The API every lrfast optimizer shares (see the module docstring for the
    hooks a subclass provides)."""

    param_groups: List[Dict[str, Any]]
    _params: List[Array]
    _step_count: int
    skipped_steps: int

    def _init_base(self) -> None:
        self._lock = threading.RLock()
        self._running: Optional[str] = None   # the public call in progress
        self._step_count = 0
        self.skipped_steps = 0

    # ------------------------------------------------------------- the guard
    def _enter(self, what: str = "step") -> None:
        """Take the optimizer's lock (another thread waits). Re-entry from code
        the optimizer runs (a closure, a schedule, a callback) is a
        RuntimeError, never a deadlock or a corrupted step."""
        self._lock.acquire()
        running = self._running
        if running is not None:
            self._lock.release()
            cls = type(self).__name__
            now = "a step" if running == "step" else f"{cls}.{running}"
            raise ReentryError(f"{cls}.{what} called from the closure, a schedule or a "
                               f"callback while {now} is running")
        self._running = what

    def _exit(self) -> None:
        self._running = None
        self._lock.release()

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        self._enter(what)
        try:
            yield
        finally:
            self._exit()

    # ------------------------------------------------------------------ views
    @property
    def step_count(self) -> int:
        """Number of completed (not skipped) steps."""
        return self._step_count

    @property
    def hyperparams(self) -> List[Dict[str, Any]]:
        """Per group, the hyperparameter values the next step will use
        (schedules evaluated at ``step_count``)."""
        return self._hyperparams()

    @property
    def lr(self) -> Union[float, List[float]]:
        """The learning rate the next step will use (a list for several groups)."""
        lrs = [h["lr"] for h in self.hyperparams]
        return lrs[0] if len(lrs) == 1 else lrs

    @property
    def params(self) -> List[Array]:
        return list(self._params)

    @property
    def state(self) -> Dict[int, Dict[str, Any]]:
        """Per-param state, as torch's ``optimizer.state`` (views, not copies)."""
        return self._state_entries(copy=False)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for gi, hp in enumerate(self.hyperparams):
            lines.append(f"  group {gi}: {len(self.param_groups[gi]['params'])} params, "
                         + ", ".join(f"{k}={v!r}" for k, v in hp.items()))
        last = self._repr_extra() + [f"step_count={self._step_count}"]
        lines.append("  " + ", ".join(last) + ")")
        return "\n".join(lines)

    # ------------------------------------------------------------ state dict
    def state_dict(self) -> StateDict:
        """A plain dict (numpy arrays, numbers, strings): the format
        ``lrfast.optim/1`` described in docs/state_dict.md."""
        with self._guard("state_dict"):
            return {"format": FORMAT, "optimizer": type(self).__name__,
                    "step_count": self._step_count, "skipped_steps": self.skipped_steps,
                    "state": self._state_entries(copy=True),
                    "param_groups": self._saved_groups()}

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Restore a state_dict (exact resume); checks everything before
        changing anything."""
        with self._guard("load_state_dict"):
            check_header(state_dict, type(self).__name__)
            counts = [step_count(state_dict[k], f"state_dict[{k!r}]")
                      for k in ("step_count", "skipped_steps")]
            plan = self._plan_load(state_dict)
            self._commit_load(plan)
            self._step_count, self.skipped_steps = counts

    def zero_state(self) -> None:
        """Forget the optimizer's state as if freshly built (params and
        schedules untouched); ``step_count`` restarts at 0."""
        with self._guard("zero_state"):
            self._clear_state()
            self._step_count = 0
            self.skipped_steps = 0

    # -------------------------------------------------------- pickle, copy
    def __getstate__(self) -> Dict[str, Any]:
        return {"init": self._init_args(), "state": self.state_dict(),
                "extra": self._pickle_extra()}

    def __setstate__(self, st: Dict[str, Any]) -> None:
        args, kwargs = st["init"]
        self._reinit(*args, **kwargs)
        self.load_state_dict(st["state"])
        self._unpickle_extra(st.get("extra") or {})

    # ------------------------------------------------------------------ hooks
    def _hyperparams(self) -> List[Dict[str, Any]]:
        raise NotImplementedError

    def _state_entries(self, copy: bool) -> Dict[int, Dict[str, Any]]:
        raise NotImplementedError

    def _saved_groups(self) -> List[Dict[str, Any]]:
        raise NotImplementedError

    def _plan_load(self, sd: StateDict) -> Any:
        raise NotImplementedError

    def _commit_load(self, plan: Any) -> None:
        raise NotImplementedError

    def _clear_state(self) -> None:
        raise NotImplementedError

    def _init_args(self) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        raise NotImplementedError

    def _reinit(self, *args: Any, **kwargs: Any) -> None:
        type(self).__init__(self, *args, **kwargs)  # type: ignore[misc]

    def _pickle_extra(self) -> Dict[str, Any]:
        return {}

    def _unpickle_extra(self, extra: Dict[str, Any]) -> None:
        pass

    def _repr_extra(self) -> List[str]:
        return []
