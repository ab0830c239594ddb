"""Work that is independent per item (a feature, a column) spread over threads, for kernels that release the GIL."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from typing import TypeVar

from threadpoolctl import ThreadpoolController

T = TypeVar("T")
R = TypeVar("R")


def available_threads() -> int:
    """The cores this process may use."""
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


@cache
def _controller() -> ThreadpoolController:
    """The BLAS and OpenMP pools loaded when first asked (numpy's BLAS by then); inspecting them once costs about
    0.6 ms, which `threadpool_limits` would pay on every call."""
    return ThreadpoolController()


_limit_lock = threading.Lock()
_limit_holders = 0
_limiter = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread inside the block: for work that runs its own threads, and for products whose rounding
    must not depend on the machine's core count. Threads may overlap in it: the first in sets the limit, the last
    out restores the original (so an overlap cannot leave BLAS on one thread)."""
    global _limit_holders, _limiter
    with _limit_lock:
        if _limit_holders == 0:
            _limiter = _controller().limit(limits=1)
        _limit_holders += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_holders -= 1
            if _limit_holders == 0:
                _limiter.restore_original_limits()
