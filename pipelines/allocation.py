"""The dual allocator on a Dask DataFrame of users: the same passes as `budget_rl.allocate`, over partitions.

The users frame holds one value and one cost column per level, a unique integer user id and optionally a segment.
Each pass of `budget_rl.dual.solve_dual` is a statistic that `pipelines.execution` runs over the partitions
(histograms, then the few upgrades in the crossing bin), so memory stays at one partition per worker. The last pass
assigns levels partition by partition and writes them as parquet, one file per partition, into a folder that
appears in one rename.

Partitioned input is held to the strict zero-cost rule: every user needs a zero-cost level (whether the budget binds
is only known after a pass). Constraints other than the budget and segment caps need the LP: `method="lp"`
collects the users into memory, up to `max_lp_users`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from budget_rl import Allocation, AllocationConstraints, allocate
from budget_rl.allocation import AssignmentTotals, dual_allocation
from budget_rl.dual import DualSolution, UserColumns, solve_dual
from campaign_core import StatisticOf
from pipelines.errors import InputError
from pipelines.execution import chunked, merge_tree
from pipelines.io import atomic_output
from pipelines.progress import busy


def _assign_partition(solution: DualSolution, users: UserColumns, level_labels: list[str], folder: Path | None,
                      index: int, partition: pd.DataFrame) -> AssignmentTotals:
    block = users.block(partition)
    level, upper, share = solution.assign(block)
    if folder is not None:
        rows = np.arange(len(level))
        labels = np.asarray(level_labels, dtype=object)
        table = {"user_id": block.user_id}
        if users.segment:
            table["segment"] = partition[users.segment].astype(str).to_numpy()
        table |= {"level": pa.array(labels[level], type=pa.string()),
                  "upper_level": pa.array(np.where(upper >= 0, labels[np.maximum(upper, 0)], None), type=pa.string()),
                  "upper_share": share, "value": block.value[rows, level], "cost": block.cost[rows, level]}
        pq.write_table(pa.table(table), folder / f"part-{index:05d}.parquet", compression="zstd")
    return AssignmentTotals.of(block.value, block.cost, block.user_id, level, upper, share)


def _check_columns(frame: dd.DataFrame | pd.DataFrame, users: UserColumns) -> None:
    missing = [column for column in users.columns if column not in frame.columns]
    if missing:
        raise InputError(f"users: missing column(s) {missing}")
    for column in [*users.value_columns, *users.cost_columns]:
        if not pd.api.types.is_numeric_dtype(frame[column].dtype):
            raise InputError(f"{column}: must be numeric, got {frame[column].dtype}")
    if len(users.value_columns) != len(users.cost_columns) or not users.value_columns:
        raise InputError(f"value/cost columns: need the same number (>= 1), got {len(users.value_columns)} and "
                         f"{len(users.cost_columns)}")


class _UserValueCounts:
    """Per level column, [NaN or infinite, negative]; [users with no zero-cost level, rows, repeated ids]; and the
    sorted distinct ids (8 bytes a user): a statistic, so that bad values are counted over the whole table before
    the first pass (a pass would stop at the first bad chunk)."""

    def __init__(self, users: UserColumns):
        self.users = users

    def partial(self, chunk: pd.DataFrame) -> dict[str, np.ndarray]:
        columns = [*self.users.value_columns, *self.users.cost_columns]
        ids = np.unique(chunk[self.users.user_id].to_numpy(dtype=np.int64))
        matrix = chunk[columns].to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(matrix)
        cost = np.where(finite, matrix, np.inf)[:, len(self.users.value_columns):]
        negative = np.zeros(len(columns), dtype=np.int64)
        negative[len(self.users.value_columns):] = (cost < 0).sum(axis=0)
        no_free = int((cost.min(axis=1) > 0).sum()) if cost.size else 0
        return {"nonfinite": (~finite).sum(axis=0).astype(np.int64), "negative": negative,
                "users": np.array([no_free, len(chunk), len(chunk) - len(ids)], dtype=np.int64), "ids": ids}

    @staticmethod
    def merge(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.union1d(left["ids"], right["ids"])
        merged = {name: left[name] + right[name] for name in ("nonfinite", "negative", "users")}
        merged["users"][2] += len(left["ids"]) + len(right["ids"]) - len(ids)
        return merged | {"ids": ids}

    @staticmethod
    def finalize(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return counts


def _segment_labels(chunk: pd.DataFrame, segment: str) -> frozenset[str]:
    """The segment labels of a chunk, as text (a statistic's partial; a distinct-values query would shuffle)."""
    return frozenset(chunk[segment].astype(str).unique().tolist())


def _check_values(frame: dd.DataFrame | pd.DataFrame, users: UserColumns) -> None:
    """The dual's per-block rules, checked on every row first: one line with the total count of the first broken
    rule (and no task failures logged by the cluster on the way)."""
    if not pd.api.types.is_integer_dtype(frame[users.user_id].dtype):
        raise InputError(f"{users.user_id}: user ids must be integers, got {frame[users.user_id].dtype}")
    columns = [*users.value_columns, *users.cost_columns]
    with busy("checking users"):
        counts = chunked(frame).reduce(_UserValueCounts(users), columns=[users.user_id, *columns])
    no_free, rows, repeated = (int(v) for v in counts["users"])
    if repeated:
        raise InputError(f"{users.user_id}: {repeated} of {rows} ids are repeated; each user needs a unique id")
    for column, nonfinite in zip(columns, counts["nonfinite"], strict=True):
        if nonfinite:
            raise InputError(f"{column}: {int(nonfinite)} NaN or infinite values of {rows} users")
    for column, negative in zip(columns, counts["negative"], strict=True):
        if negative:
            raise InputError(f"{column}: {int(negative)} negative costs of {rows} users; costs must be >= 0")
    if no_free:
        raise InputError(f"{', '.join(users.cost_columns)}: {no_free} of {rows} users have no zero-cost level; "
                         "every user needs one (e.g. 'nothing')")


def allocate_frame(frame: dd.DataFrame | pd.DataFrame, value_columns: list[str], cost_columns: list[str],
                   budget: float, *, level_labels: list[str] | None = None, user_id: str = "user_id",
                   segment: str | None = None, constraints: AllocationConstraints | None = None,
                   method: str = "dual", out: Path | None = None, max_lp_users: int = 200_000) -> Allocation:
    """Allocate levels to the users of `frame` (see the module docstring); writes the per-user allocation to `out`
    (parquet folder: user_id, segment, level, upper_level, upper_share, value, cost) when given."""
    constraints = constraints or AllocationConstraints()
    level_labels = list(level_labels or [str(j) for j in range(len(value_columns))])
    if not (np.isfinite(budget) and budget >= 0):
        raise InputError(f"budget: must be a finite number >= 0, got {budget!r}")
    capped = tuple(constraints.segment_caps)
    if capped and segment is None:
        raise InputError("constraints.segment_caps: needs the segment column")
    users = UserColumns(tuple(value_columns), tuple(cost_columns), user_id, segment, capped)
    _check_columns(frame, users)
    constraints.check_levels(users.n_levels)
    if capped:
        labels = StatisticOf(functools.partial(_segment_labels, segment=segment), frozenset.union)
        with busy("reading segments"):
            known = chunked(frame).reduce(labels, columns=[segment])
        unknown = [label for label in capped if label not in known]
        if unknown:
            raise InputError(f"constraints.segment_caps: unknown segment(s) {unknown} (segments are {sorted(known)})")
    frame = frame[users.columns]
    if method == "lp" or constraints.needs_lp:
        return _allocate_in_memory(frame, users, budget, constraints, level_labels, out, max_lp_users)
    _check_values(frame, users)
    caps = np.array([constraints.segment_caps[label] for label in capped], dtype=float)
    # A Dask frame's partitions, or an in-memory frame's blocks on threads (the compiled passes release the GIL).
    solution = solve_dual(chunked(frame), float(budget), caps, columns=users)
    written = _write_assignment(frame, solution, users, level_labels, out)
    return dual_allocation(solution, written, budget, list(capped), None,
                           {"passes": solution.diagnostics.passes + 1, "users": written.users})


def _compute(collection):
    return collection.compute() if hasattr(collection, "compute") else collection


def _write_assignment(frame, solution: DualSolution, users: UserColumns, level_labels: list[str],
                      out: Path | None) -> AssignmentTotals:
    partitions = frame.to_delayed() if isinstance(frame, dd.DataFrame) else [frame]

    def run(folder: Path | None) -> AssignmentTotals:
        work = functools.partial(_assign_partition, solution, users, level_labels, folder)
        if isinstance(frame, dd.DataFrame):
            tasks = [dask.delayed(work)(i, part) for i, part in enumerate(partitions)]
            with busy(f"assigning {len(tasks)} partitions"):
                results = dask.compute(*tasks)
        else:
            results = [work(0, frame)]
        return merge_tree(list(results), _merge_totals)

    if out is None:
        return run(None)
    with atomic_output(Path(out)) as temporary:
        temporary.mkdir(parents=True, exist_ok=True)
        return run(temporary)


def _merge_totals(*totals: AssignmentTotals) -> AssignmentTotals:
    return functools.reduce(AssignmentTotals.merge, totals)


def _allocate_in_memory(frame, users: UserColumns, budget: float, constraints: AllocationConstraints,
                        level_labels: list[str], out: Path | None, max_lp_users: int) -> Allocation:
    n = int(_compute(frame.shape[0]))
    if n > max_lp_users:
        raise InputError(f"method: the LP collects users into memory and is limited to {max_lp_users} users "
                         f"(got {n}); use the dual (budget and segment caps) or raise max_lp_users")
    users_frame = _compute(frame).reset_index(drop=True)
    allocation = allocate(users_frame[list(users.value_columns)].to_numpy(dtype=float),
                          users_frame[list(users.cost_columns)].to_numpy(dtype=float), budget, method="lp",
                          constraints=constraints, segments=users_frame[users.segment] if users.segment else None,
                          user_ids=users_frame[users.user_id].to_numpy())
    if out is not None:
        table = allocation.to_frame(user_ids=users_frame[users.user_id].to_numpy(), level_labels=level_labels)
        if users.segment:
            table.insert(1, "segment", users_frame[users.segment].astype(str).to_numpy())
        rows = np.arange(len(table))
        table["value"] = users_frame[list(users.value_columns)].to_numpy()[rows, allocation.level]
        table["cost"] = users_frame[list(users.cost_columns)].to_numpy()[rows, allocation.level]
        with atomic_output(Path(out)) as temporary:
            temporary.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pandas(table, preserve_index=False), temporary / "part-00000.parquet",
                           compression="zstd")
    return allocation
