"""campaign_core.parallel: threads for GIL-free work and one native thread for products that must not depend on the
core count."""

from __future__ import annotations

import numpy as np  # noqa: F401  (loads the BLAS the limit applies to)
from threadpoolctl import threadpool_info

from campaign_core.parallel import single_thread_pools, thread_map


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_overlapping_holders_restore_the_original_blas_threads():
    """Two holders overlap as Dask tasks do (A in, B in, A out, B out): the pools stay on one thread until the last
    holder leaves, then get their original sizes back (a plain save-and-restore per holder would leave B's saved
    size, one thread, in place). Read from the thread that set the limit: OpenBLAS reports a limit set elsewhere
    per thread, though it applies it to all."""
    import campaign_core.parallel as parallel

    assert parallel._limit_holders == 0
    before = _blas_threads()
    first, second = single_thread_pools(), single_thread_pools()
    first.__enter__()
    second.__enter__()
    assert set(_blas_threads()) == {1}
    first.__exit__(None, None, None)
    assert set(_blas_threads()) == {1}
    second.__exit__(None, None, None)
    assert _blas_threads() == before and parallel._limit_holders == 0


def test_thread_map_keeps_the_order_of_the_items():
    assert thread_map(lambda x: x * x, range(20), threads=4) == [x * x for x in range(20)]
    assert thread_map(lambda x: -x, [3], threads=4) == [-3]


def test_calls_off_the_main_thread_start_no_threads_of_their_own():
    """A Dask worker thread (or the caller's own pool) already runs calls side by side: they get one thread."""
    from concurrent.futures import ThreadPoolExecutor

    from campaign_core.parallel import available_threads

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(available_threads).result() == 1
    assert available_threads() >= 1
