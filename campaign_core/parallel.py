"""Work that is independent per item (a feature, a column) spread over threads, for kernels that release the GIL."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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
