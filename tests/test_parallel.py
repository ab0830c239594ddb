"""campaign_core.parallel: threads for GIL-free work and one BLAS thread for products that must not depend on the
core count."""

from __future__ import annotations

import threading
import time

import numpy as np  # noqa: F401  (loads the BLAS the limit applies to)
from threadpoolctl import threadpool_info

from campaign_core.parallel import one_blas_thread, thread_map


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_overlapping_holders_restore_the_original_blas_threads():
    """Three threads hold the limit over overlapping spans: BLAS is on one thread while any holds it and back to
    its original count after the last leaves (a plain save-and-restore per thread would leave it at one)."""
    before = _blas_threads()
    seen = []

    def hold(seconds: float) -> None:
        with one_blas_thread():
            seen.append(_blas_threads())
            time.sleep(seconds)

    threads = [threading.Thread(target=hold, args=(0.05 * (i + 1),)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(counts == [1] * len(counts) for counts in seen)
    assert _blas_threads() == before


def test_thread_map_keeps_the_order_of_the_items():
    assert thread_map(lambda x: x * x, range(20), threads=4) == [x * x for x in range(20)]
    assert thread_map(lambda x: -x, [3], threads=4) == [-3]
