"""Work spread over threads (features, columns, blocks of rows) for kernels that release the GIL, and the native
thread pools (BLAS, OpenMP) held to one thread while it runs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from threadpoolctl import ThreadpoolController

T = TypeVar("T")
R = TypeVar("R")


def available_threads() -> int:
    """The threads a call may start: the cores this process may use, from the main thread; 1 from any other thread
    (a Dask worker or the caller's own pool already runs such calls side by side, and nesting pools thrashes)."""
    if threading.current_thread() is not threading.main_thread():
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_map(function: Callable[[T], R], items: Iterable[T], threads: int = 1) -> list[R]:
    """[function(item) for item in items], on up to `threads` threads, results in the items' order. Worth it only
    when `function` spends its time in code that releases the GIL (numpy sorts, numba `nogil` kernels)."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(function, items))


_limit_lock = threading.Lock()
_limit_holders = 0
_limiter = None


@contextmanager
def single_thread_pools() -> Iterator[None]:
    """The native thread pools (BLAS, OpenMP) on one thread inside the block: for work that runs its own threads
    (Dask tasks, `thread_map`), and for products whose rounding must not depend on the machine's core count.

    BLAS's size is one setting for the whole process, so holders share it: the first one in sets it, the last one
    out restores it (`threadpool_limits` saves and restores per call, so two overlapping calls, as Dask tasks make,
    can leave BLAS on one thread for the rest of the process). OpenMP's size belongs to the calling thread, so each
    holder sets and restores its own."""
    global _limit_holders, _limiter
    with _limit_lock:
        if _limit_holders == 0:
            _limiter = ThreadpoolController().limit(limits=1, user_api="blas")
        _limit_holders += 1
    openmp = ThreadpoolController().limit(limits=1, user_api="openmp")
    try:
        yield
    finally:
        openmp.restore_original_limits()
        with _limit_lock:
            _limit_holders -= 1
            if _limit_holders == 0:
                _limiter.restore_original_limits()
