"""Thread policy: in a child forked after a parallel region, 1 thread
(gcc's libgomp hangs otherwise) until the child calls set_num_threads;
``set_num_threads(n)`` for the process; otherwise ``omp_get_max_threads()`` read
at every step, so OMP_NUM_THREADS and threadpoolctl limits are honoured."""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

from ._dispatch import kernels as _K

__all__ = ["set_num_threads", "get_num_threads", "threads", "set_parallel_threshold",
           "get_parallel_threshold"]

_lock = threading.Lock()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for every later step, process-wide (``0``: the default
    policy, ``omp_get_max_threads()``). Safe to call from any thread."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {n!r}")
    with _lock:
        _K.set_num_threads(n)


def get_num_threads() -> int:
    """Threads a large step uses now (small steps run serially: see
    ``get_parallel_threshold``)."""
    return _K.get_num_threads()


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Context manager: ``with lrfast.threads(1): opt.step(g)``."""
    with _lock:
        prev = _K._user_num_threads()
        _K.set_num_threads(n)
    try:
        yield
    finally:
        with _lock:
            _K.set_num_threads(prev)


def set_parallel_threshold(n: int) -> None:
    """Steps that touch fewer than ``n`` elements in total run serially."""
    _K.set_parallel_threshold(int(n))


def get_parallel_threshold() -> int:
    return _K.get_parallel_threshold()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_K._after_fork_in_child)
