"""Thread policy, first rule that applies:

1. in a child forked after a parallel region, 1 thread (gcc's libgomp hangs
   otherwise) until the child calls ``set_num_threads``;
2. ``with lrfast.threads(n)``: n for the steps run *in the calling thread*
   (a thread-local override; other threads are not affected);
3. ``set_num_threads(n)``: n for the whole process;
4. otherwise the adaptive default: up to ``omp_get_max_threads()`` read at
   every step (so OMP_NUM_THREADS and threadpoolctl limits are honoured), and
   one thread while the step's own measured cost says threads lose (a busy
   machine). Results are bit-identical whatever the count.

``n`` is an int (any ``numbers.Integral`` but bool) in ``[0, MAX_THREADS]``,
``MAX_THREADS`` being 4 per CPU, at most 1024; ``0`` restores the default.
A serial build (no OpenMP) warns once when asked for more than one thread.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

from ._dispatch import kernels as _K

__all__ = ["set_num_threads", "get_num_threads", "threads", "set_parallel_threshold",
           "get_parallel_threshold"]

_lock = threading.Lock()
MAX_THREADS: int = _K.MAX_THREADS


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for every later step, process-wide (``0``: the adaptive
    default). Safe to call from any thread. A ``with lrfast.threads(m)`` block
    in a thread takes precedence there.

    Raises TypeError unless ``n`` is an int, ValueError unless
    ``0 <= n <= MAX_THREADS`` (4 per CPU, at most 1024)."""
    with _lock:
        _K.set_num_threads(n)


def get_num_threads() -> int:
    """Threads a large step run in the calling thread uses now: under the
    adaptive default, the most it may use (small steps run serially: see
    ``get_parallel_threshold``). 1 on a serial build."""
    return _K.get_num_threads()


def thread_mode() -> str:
    """How steps in the calling thread pick their thread count now: "adaptive
    (up to n)", "pinned n (set_num_threads)", "pinned n (threads() in this
    thread)", "forked child: 1 thread" or "serial build: 1 thread"."""
    return _K.thread_mode()


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Context manager: ``with lrfast.threads(1): opt.step(g)``.

    Pins ``n`` threads for the steps run in the calling thread only, until the
    block exits (then the thread's previous setting returns; blocks nest).
    Steps run by other threads keep their own setting, so two threads using
    ``threads`` at once never leave a stale value behind. Validated as
    :func:`set_num_threads` (``0``: no override in this block)."""
    prev = _K._set_thread_override(n)
    try:
        yield
    finally:
        _K._set_thread_override(prev)


def set_parallel_threshold(n: int) -> None:
    """Steps that touch fewer than ``n`` elements in total run serially
    (``n``: an int in ``[0, 2**62]``; TypeError / ValueError otherwise)."""
    _K.set_parallel_threshold(n)


def get_parallel_threshold() -> int:
    return _K.get_parallel_threshold()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_K._after_fork_in_child)
