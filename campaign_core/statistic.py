"""The platform's one scaling contract: a statistic is `partial(chunk) -> state`, `merge(state, state) -> state`
and `finalize(state) -> result`.

Domain code states *what* to compute as a statistic; it never decides *where*. A computation that needs several
passes is several statistics, each built with the previous pass's result. The data a domain entry point takes is
either in memory (a pandas DataFrame, arrays, a `LoggedFeedback`): then the statistic sees it as one chunk; or a
`ChunkedTable`, an object that runs statistics over its own chunks (the `pipelines` package provides them, for
threaded blocks of a frame and for the partitions of a Dask DataFrame, merged in a fixed order so that the result
is bit-identical on any scheduler). Domain packages implement statistics structurally and import nothing of
`pipelines` or Dask.

`merge` must be associative; the runner may merge in any fixed tree. `partial` must be a pure function of the
chunk (randomness from `campaign_core.chunk_generator`), so a chunk's state is the same wherever it is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

S = TypeVar("S")
R = TypeVar("R")


@runtime_checkable
class Statistic(Protocol[S, R]):
    """What scales past memory: partial state per chunk, an associative merge, and the final result."""

    def partial(self, chunk: Any) -> S: ...

    def merge(self, left: S, right: S) -> S: ...

    def finalize(self, state: S) -> R: ...


@dataclass(frozen=True)
class StatisticOf(Generic[S, R]):
    """A statistic made of three functions (`finalize` None: the merged state is the result)."""

    partial_function: Callable[[Any], S]
    merge_function: Callable[[S, S], S]
    finalize_function: Callable[[S], R] | None = None

    def partial(self, chunk: Any) -> S:
        return self.partial_function(chunk)

    def merge(self, left: S, right: S) -> S:
        return self.merge_function(left, right)

    def finalize(self, state: S) -> R:
        return state if self.finalize_function is None else self.finalize_function(state)


class SelfMerging:
    """Statistic base for states that merge themselves (`left.merge(right)`) and are their own result: a subclass
    writes only `partial`."""

    @staticmethod
    def merge(left: Any, right: Any) -> Any:
        return left.merge(right)

    @staticmethod
    def finalize(state: Any) -> Any:
        return state


@runtime_checkable
class ChunkedTable(Protocol):
    """A table whose rows live in chunks and that runs a statistic over them (see `pipelines.execution`)."""

    @property
    def columns(self) -> Sequence[str]: ...

    @property
    def dtypes(self) -> Mapping[str, Any]: ...

    @property
    def n_chunks(self) -> int: ...

    def reduce(self, statistic: Statistic[Any, R], *, columns: Sequence[str] | None = None) -> R: ...


def is_chunked(data: Any) -> bool:
    """True for a `ChunkedTable`, False for data held in memory."""
    return isinstance(data, ChunkedTable)


def compute(statistic: Statistic[Any, R], data: Any, *, columns: Sequence[str] | None = None) -> R:
    """The statistic of `data`: a `ChunkedTable` runs it over its chunks; in-memory data is one chunk."""
    if is_chunked(data):
        return data.reduce(statistic, columns=columns)
    chunk = data[list(columns)] if columns is not None else data
    return statistic.finalize(statistic.partial(chunk))
