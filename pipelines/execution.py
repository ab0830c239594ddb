"""Where the work runs: an in-process Dask cluster by default, any existing cluster by address.

The platform's one scaling pattern lives here: a domain statistic given as `partial(chunk) -> S`,
`merge(S, S) -> S` and `finalize(S) -> result` is mapped over the partitions of a Dask DataFrame and
tree-reduced. The merge tree has a fixed shape and order, so the result is bit-identical on any scheduler and
any number of workers (for the same partitions).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import dask
import dask.dataframe as dd
import pandas as pd
from distributed import Client, LocalCluster, as_completed

from pipelines.errors import InputError
from pipelines.progress import busy, progress

S = TypeVar("S")
R = TypeVar("R")
T = TypeVar("T")

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, *, n_workers: int = 1, threads_per_worker: int | None = None
                ) -> Iterator[Client]:
    """A Dask client for the job: `scheduler` (or $DASK_SCHEDULER_ADDRESS) if given, else an in-process cluster."""
    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if address:
        try:
            client = Client(address, timeout="10s", set_as_default=True)
        except (OSError, TimeoutError) as error:
            raise InputError(f"scheduler: cannot connect to Dask scheduler at {address}: {error}") from None
        with client:
            yield client
        return
    threads = threads_per_worker or os.cpu_count() or 1
    with LocalCluster(n_workers=n_workers, threads_per_worker=threads, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster, set_as_default=True) as client:
        yield client


def current_client() -> Client | None:
    """The Dask distributed client in use, or None when running on a local scheduler."""
    try:
        from distributed import get_client

        return get_client()
    except ValueError:
        return None


def map_tasks(function: Callable[[T], R], items: Sequence[T], description: str) -> list[R]:
    """Run `function` on every item (on the cluster when one is in use), with progress; results in item order."""
    client = current_client()
    if client is None:
        return [function(item) for item in progress(items, description)]
    futures = client.map(function, list(items), pure=False)
    for _ in progress(as_completed(futures), description, total=len(futures)):
        pass
    return client.gather(futures)


class MergeableStatistic(Protocol[S, R]):
    """A statistic that scales past memory: partial stats per chunk, an associative merge, and a finalize."""

    def partial(self, chunk: pd.DataFrame) -> S: ...

    def merge(self, left: S, right: S) -> S: ...

    def finalize(self, stats: S) -> R: ...


def _merge_group(merge: Callable[[S, S], S], *stats: S) -> S:
    return functools.reduce(merge, stats)


def _merge_tree(level: list[Any], merge_node: Callable[..., Any], split_every: int) -> Any:
    """Merge groups of `split_every` neighbours level by level (fixed shape, left to right) down to one node."""
    while len(level) > 1:
        level = [merge_node(*level[i:i + split_every]) if len(level[i:i + split_every]) > 1 else level[i]
                 for i in range(0, len(level), split_every)]
    return level[0]


def tree_reduce(data: pd.DataFrame | dd.DataFrame | tuple, partial: Callable[..., S],
                merge: Callable[[S, S], S], finalize: Callable[[S], R] | None = None, *,
                columns: Sequence[str] | None = None, split_every: int = 8) -> R | S:
    """Compute finalize(merge over partitions of partial(partition)) for a pandas or a Dask DataFrame.

    For pandas the frame is one chunk. For Dask, `partial` runs where the partition lives, and groups of
    `split_every` partial results are merged level by level (left to right), so memory on the driver stays at a
    few partial statistics however many rows there are. `columns` restricts what is read from storage.
    `data` may also be a tuple of row-aligned frames with the same partitions (e.g. logs and their truth, written
    file by file): `partial` then gets one chunk of each.
    """
    if split_every < 2:
        raise InputError(f"split_every: must be >= 2, got {split_every}")
    frames = data if isinstance(data, tuple) else (data,)
    if columns is not None:
        frames = (frames[0][list(columns)], *frames[1:])
    if all(isinstance(frame, pd.DataFrame) for frame in frames):
        stats = partial(*frames)
    else:
        parts = [frame.to_delayed() for frame in frames]
        if len({len(p) for p in parts}) != 1:
            raise InputError(f"tree_reduce: aligned frames have different partition counts {[len(p) for p in parts]}")
        partials = [dask.delayed(partial)(*chunks) for chunks in zip(*parts, strict=True)]
        merge_node = dask.delayed(functools.partial(_merge_group, merge), pure=True)
        tree = _merge_tree(partials, merge_node, split_every)
        # One graph, so the scheduler merges each group as soon as its partials exist and frees them: memory holds
        # a few partial statistics, not one per partition (submitting partials first held them all: 7x the memory).
        with busy(f"reducing {len(partials)} partitions"):
            (stats,) = dask.compute(tree)
    return finalize(stats) if finalize is not None else stats


def reduce_statistic(data: pd.DataFrame | dd.DataFrame, statistic: MergeableStatistic[S, R], *,
                     columns: Sequence[str] | None = None, split_every: int = 8) -> R:
    """tree_reduce with the three functions taken from a MergeableStatistic object."""
    return tree_reduce(data, statistic.partial, statistic.merge, statistic.finalize,  # type: ignore[return-value]
                       columns=columns, split_every=split_every)
