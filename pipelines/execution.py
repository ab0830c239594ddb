"""Where the work runs, and the one place that runs statistics.

A statistic (`campaign_core.Statistic`: `partial(chunk) -> state`, `merge(state, state) -> state`,
`finalize(state) -> result`) is run by `run_statistic` in one of three ways:

- on one in-memory chunk: a pandas DataFrame (or any in-memory object) given whole;
- on threaded blocks: a pandas DataFrame cut into blocks of `block_rows` rows, `partial` on a thread pool;
- over Dask partitions: `partial` runs where each partition lives, and the partial states are merged on the
  cluster while they arrive, so the driver holds a few states however many rows there are.

Blocks and partitions are merged in one fixed tree (groups of `split_every` neighbours, level by level, left to
right), so the result is bit-identical on any scheduler and any number of workers or threads for the same chunks.
`Partitions` and `Blocks` wrap a frame as a `campaign_core.ChunkedTable`, the form in which domain entry points
(`causal_fs.score_features`, `budget_rl.solve_dual`, ...) accept data they must not hold in memory.

The Dask client: an in-process cluster by default, any existing cluster by address (`dask_client`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import dask
import dask.dataframe as dd
import pandas as pd
from distributed import Client, LocalCluster, as_completed

from campaign_core import InputError, Statistic
from pipelines.progress import busy, progress

S = TypeVar("S")
R = TypeVar("R")
T = TypeVar("T")

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
SPLIT_EVERY = 8


class _TaskFailureReports(logging.Filter):
    """Drops an in-process worker's "Compute Failed" report of a task that raised: the exception reaches the caller
    with its traceback, and the caller reports it once, in one line for a user's mistake (an `InputError`, or a
    parser error it turns into one), with the traceback for a bug. The report would print the traceback before."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


@contextlib.contextmanager
def _quiet_task_failures() -> Iterator[None]:
    worker_log, reports = logging.getLogger("distributed.worker"), _TaskFailureReports()
    worker_log.addFilter(reports)
    try:
        yield
    finally:
        worker_log.removeFilter(reports)


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
    with _quiet_task_failures(), LocalCluster(n_workers=n_workers, threads_per_worker=threads, processes=False,
                                              dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=True) as client:
        yield client


def current_client() -> Client | None:
    """The Dask distributed client in use, or None when running on a local scheduler."""
    try:
        from distributed import get_client

        return get_client()
    except ValueError:
        return None


def map_tasks(function: Callable[[T], R], items: Sequence[T], description: str) -> list[R]:
    """Run independent tasks (on the cluster when one is in use), with progress; results in item order."""
    client = current_client()
    if client is None:
        return [function(item) for item in progress(items, description)]
    futures = client.map(function, list(items), pure=False)
    for _ in progress(as_completed(futures), description, total=len(futures)):
        pass
    return client.gather(futures)


# ---------------------------------------------------------------------------- running statistics
def merge_tree(states: list[Any], merge_group: Callable[..., Any], split_every: int = SPLIT_EVERY) -> Any:
    """Merge groups of `split_every` neighbours level by level (fixed shape, left to right) down to one state."""
    if not states:
        raise ValueError("merge_tree: no states to merge")
    while len(states) > 1:
        states = [merge_group(*states[i:i + split_every]) if len(states[i:i + split_every]) > 1 else states[i]
                  for i in range(0, len(states), split_every)]
    return states[0]


def _project(frame: Any, columns: Sequence[str] | None) -> Any:
    return frame if columns is None else frame[list(columns)]


def run_statistic(statistic: Statistic[Any, R], data: Any, *, columns: Sequence[str] | None = None,
                  block_rows: int | None = None, split_every: int = SPLIT_EVERY) -> R:
    """finalize(merge of partial(chunk) over the chunks of `data`), in the fixed merge tree.

    `data`: a Dask DataFrame (its partitions are the chunks), a tuple of row-aligned Dask DataFrames with the same
    partitions (`partial` gets a tuple of chunks, e.g. logs and their truth written file by file), a pandas
    DataFrame (one chunk; blocks of `block_rows` rows on threads when given) or any other in-memory object (one
    chunk). `columns` restricts what is read (of the first frame of a tuple).
    """
    if split_every < 2:
        raise InputError(f"split_every: must be >= 2, got {split_every}")
    if block_rows is not None and block_rows < 1:
        raise InputError(f"block_rows: must be >= 1, got {block_rows}")
    frames = data if isinstance(data, tuple) else (data,)
    if any(isinstance(frame, dd.DataFrame) for frame in frames):
        return statistic.finalize(_reduce_partitions(statistic, frames, columns, split_every))
    chunk = (_project(frames[0], columns), *frames[1:]) if isinstance(data, tuple) else _project(data, columns)
    if block_rows is None or not isinstance(chunk, pd.DataFrame) or len(chunk) <= block_rows:
        return statistic.finalize(statistic.partial(chunk))
    blocks = [chunk.iloc[start:start + block_rows] for start in range(0, len(chunk), block_rows)]
    with ThreadPoolExecutor(max_workers=min(len(blocks), os.cpu_count() or 1)) as pool:
        states = list(pool.map(statistic.partial, blocks))
    return statistic.finalize(merge_tree(states, functools.partial(_merge_states, statistic), split_every))


def _partial_of_chunks(statistic: Statistic[Any, Any], aligned: bool, *chunks: pd.DataFrame) -> Any:
    return statistic.partial(chunks if aligned else chunks[0])


def _merge_states(statistic: Statistic[Any, Any], *states: Any) -> Any:
    return functools.reduce(statistic.merge, states)


def _reduce_partitions(statistic: Statistic[Any, Any], frames: tuple, columns: Sequence[str] | None,
                       split_every: int) -> Any:
    if not all(isinstance(frame, dd.DataFrame) for frame in frames):
        raise TypeError("run_statistic: aligned frames must all be Dask DataFrames")
    frames = (_project(frames[0], columns), *frames[1:])
    parts = [frame.to_delayed() for frame in frames]
    if len({len(p) for p in parts}) != 1:
        raise InputError(f"tables: aligned frames have different partition counts {[len(p) for p in parts]}")
    # On a cluster the statistic (it may hold a fitted policy or a reward model: megabytes) goes to the workers
    # once, as data, instead of inside the graph, which is shipped whole to the scheduler (Dask warns above 10 MB).
    client = current_client()
    shared = client.scatter([statistic], broadcast=True, hash=False)[0] if client is not None else statistic
    partial, merge = dask.delayed(_partial_of_chunks, pure=True), dask.delayed(_merge_states, pure=True)
    partials = [partial(shared, len(frames) > 1, *chunks) for chunks in zip(*parts, strict=True)]
    tree = merge_tree(partials, functools.partial(merge, shared), split_every)
    # One graph, so the scheduler merges each group as soon as its partials exist and frees them: memory holds a
    # few partial states, not one per partition (submitting the partials first held them all: 7x the memory).
    with busy(f"reducing {len(partials)} partitions"):
        (state,) = dask.compute(tree)
    return state


class _FrameTable:
    """What both chunked frames share: the frame's columns and types (read without reading rows)."""

    frame: Any

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)

    @property
    def dtypes(self) -> pd.Series:
        return self.frame.dtypes


@dataclass(frozen=True)
class Partitions(_FrameTable):
    """A Dask DataFrame as a `campaign_core.ChunkedTable`: statistics run over its partitions."""

    frame: dd.DataFrame
    split_every: int = SPLIT_EVERY

    @property
    def n_chunks(self) -> int:
        return self.frame.npartitions

    def reduce(self, statistic: Statistic[Any, R], *, columns: Sequence[str] | None = None) -> R:
        return run_statistic(statistic, self.frame, columns=columns, split_every=self.split_every)


@dataclass(frozen=True)
class Blocks(_FrameTable):
    """An in-memory DataFrame as a `campaign_core.ChunkedTable`: statistics run on blocks of rows on threads."""

    frame: pd.DataFrame
    block_rows: int = 1 << 16
    split_every: int = SPLIT_EVERY

    @property
    def n_chunks(self) -> int:
        return max(1, -(-len(self.frame) // self.block_rows))

    def reduce(self, statistic: Statistic[Any, R], *, columns: Sequence[str] | None = None) -> R:
        return run_statistic(statistic, self.frame, columns=columns, block_rows=self.block_rows,
                             split_every=self.split_every)


@dataclass(frozen=True)
class OnRows:
    """A statistic computed on some rows of every chunk, e.g. one side of a user split (`rows` picks them)."""

    statistic: Statistic[Any, Any]
    rows: Callable[[pd.DataFrame], pd.DataFrame]

    def partial(self, chunk: pd.DataFrame) -> Any:
        return self.statistic.partial(self.rows(chunk))

    def merge(self, left: Any, right: Any) -> Any:
        return self.statistic.merge(left, right)

    def finalize(self, state: Any) -> Any:
        return self.statistic.finalize(state)


def chunked(frame: dd.DataFrame | pd.DataFrame) -> Partitions | Blocks:
    """A Dask DataFrame as `Partitions`; an in-memory frame as `Blocks` (threads over blocks of rows)."""
    return Partitions(frame) if isinstance(frame, dd.DataFrame) else Blocks(frame)
