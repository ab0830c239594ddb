"""The dual allocator: find the budget multiplier by a histogram search over hull slopes, as a map-reduce.

For a multiplier lambda every user takes argmax_j (v_ij - lambda c_ij); spend(lambda) is non-increasing and is the
start spend plus the extra cost of every hull upgrade whose slope exceeds lambda (`_kernels`). So finding the
multiplier is finding where the cumulative extra cost, over upgrades sorted by slope, crosses the budget:

1. one pass sums extra cost and value per slope bin (64 bins per octave over 2^-60..2^60): the crossing bin is
   known, which is what 13 bisection steps would tell, and the cumulative bins are the value-vs-budget frontier;
2. one pass collects the upgrades inside that bin (a bin holding more than `max_candidates` is split into finer
   bins by another pass first); sorted by (slope desc, user id, step), their running cost gives the exact crossing
   upgrade and the share of it that the budget still buys: the one fractional user.

Per-segment spend caps (one multiplier per constraint): a capped segment s alone has a multiplier lambda_s at
which it spends its cap (0 when the cap does not bind); with the global multiplier lambda its users face
max(lambda, lambda_s). So the caps are solved first, each as its own crossing search (all segments in the same
passes), and the global budget is then solved over the upgrades each segment's cap lets through. Exact, with at
most one fractional user per binding constraint, as the LP's vertex solutions have.

Each pass is a statistic (`campaign_core.Statistic`: partial per chunk of users, an associative merge), so the same
code runs on users in memory (one `Block`) and on a chunked users table (`campaign_core.ChunkedTable`, e.g. Dask
partitions through `pipelines.allocation`), whose chunks `UserColumns` reads into blocks.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from budget_rl import _kernels
from campaign_core import InputError, SelfMerging, compute, is_chunked

BINS_PER_OCTAVE = 64
LOWEST_OCTAVE, HIGHEST_OCTAVE = -60, 60
#: A crossing bin holding more upgrades than this is split by another histogram pass before collecting.
MAX_CANDIDATES = 2_000_000


def _log_edges() -> np.ndarray:
    exponents = np.arange(LOWEST_OCTAVE * BINS_PER_OCTAVE, HIGHEST_OCTAVE * BINS_PER_OCTAVE + 1) / BINS_PER_OCTAVE
    return np.concatenate([[0.0], np.exp2(exponents), [np.inf]])


LOG_EDGES = _log_edges()


@dataclass(frozen=True)
class Block:
    """A block of users: values and costs (n, J), unique integer user ids, and capped-segment codes (-1: none)."""

    value: np.ndarray
    cost: np.ndarray
    user_id: np.ndarray
    segment: np.ndarray


@dataclass(frozen=True)
class UserColumns:
    """Which columns of a users table hold what: one value and one cost column per level, a unique integer user id
    and optionally a segment (codes of the capped segments). Reads a chunk of the table into a `Block`, checking
    its values (one-line InputError naming the column)."""

    value_columns: tuple[str, ...]
    cost_columns: tuple[str, ...]
    user_id: str = "user_id"
    segment: str | None = None
    capped_segments: tuple[str, ...] = ()

    @property
    def n_levels(self) -> int:
        return len(self.value_columns)

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys([self.user_id, *([self.segment] if self.segment else []),
                                   *self.value_columns, *self.cost_columns]))

    def block(self, chunk: pd.DataFrame) -> Block:
        value = _matrix(chunk, self.value_columns)
        cost = _matrix(chunk, self.cost_columns)
        negative = cost < 0
        if negative.any():
            column = self.cost_columns[int(np.flatnonzero(negative.any(axis=0))[0])]
            raise InputError(f"{column}: {int(negative.sum())} negative costs; costs must be >= 0")
        no_free = int((cost.min(axis=1) > 0).sum()) if cost.size else 0
        if no_free:
            raise InputError(f"{', '.join(self.cost_columns)}: {no_free} users have no zero-cost level; every user "
                             "needs one (e.g. 'nothing')")
        user_id = chunk[self.user_id].to_numpy()
        if not np.issubdtype(user_id.dtype, np.integer):
            raise InputError(f"{self.user_id}: user ids must be integers, got {user_id.dtype}")
        codes = np.full(len(chunk), -1, dtype=np.int64)
        if self.capped_segments:
            codes = pd.Index(self.capped_segments).get_indexer(chunk[self.segment].astype(str)).astype(np.int64)
        return Block(value, cost, user_id.astype(np.int64), codes)


def _matrix(chunk: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    matrix = np.ascontiguousarray(chunk[list(columns)].to_numpy(dtype=np.float64, na_value=np.nan))
    bad = ~np.isfinite(matrix)
    if bad.any():
        column = columns[int(np.flatnonzero(bad.any(axis=0))[0])]
        raise InputError(f"{column}: {int(bad.sum())} NaN or infinite values")
    return matrix


def _as_block(chunk: Any, columns: UserColumns | None) -> Block:
    if isinstance(chunk, Block):
        return chunk
    if columns is None:
        raise InputError("users: a users table needs its UserColumns (which columns hold values and costs)")
    return columns.block(chunk)


@dataclass(frozen=True)
class Key:
    """One upgrade in the total order (slope desc, user id, step); those before it are taken, it with `share`."""

    slope: float
    user: int
    step: int
    share: float


_TAKE_ALL = Key(-np.inf, -1, -1, 1.0)  # the key before which every upgrade lies


@dataclass(frozen=True)
class Keys:
    """The keys of the capped segments, as arrays indexed by segment code (what the compiled passes take)."""

    slope: np.ndarray
    user: np.ndarray
    step: np.ndarray
    share: np.ndarray

    @classmethod
    def of(cls, keys: list[Key]) -> Keys:
        keys = keys or [_TAKE_ALL]
        return cls(np.array([k.slope for k in keys], dtype=np.float64), np.array([k.user for k in keys], np.int64),
                   np.array([k.step for k in keys], np.int64), np.array([k.share for k in keys], np.float64))

    def args(self) -> tuple[np.ndarray, ...]:
        return self.slope, self.user, self.step, self.share


@dataclass
class _Histogram:
    start_cost: np.ndarray
    start_value: np.ndarray
    extra_cost: np.ndarray
    extra_value: np.ndarray
    count: np.ndarray
    above_cost: np.ndarray
    above_value: np.ndarray

    def merge(self, other: _Histogram) -> _Histogram:
        return _Histogram(*(a + b for a, b in zip(self.__dict__.values(), other.__dict__.values(), strict=True)))


@dataclass
class _Candidates:
    slope: np.ndarray
    user: np.ndarray
    step: np.ndarray
    extra_cost: np.ndarray
    extra_value: np.ndarray
    group: np.ndarray

    def merge(self, other: _Candidates) -> _Candidates:
        return _Candidates(*(np.concatenate([a, b]) for a, b in
                             zip(self.__dict__.values(), other.__dict__.values(), strict=True)))


@dataclass(frozen=True)
class _Pass:
    """Which histogram row each user belongs to and which segment key filters its upgrades (picklable)."""

    by_segment: bool  # True: group = capped segment, no filter; False: one global group filtered by segment keys
    keys: Keys

    def groups(self, block: Block) -> tuple[np.ndarray, np.ndarray]:
        if self.by_segment:
            return block.segment, np.full(len(block.segment), -1, dtype=np.int64)
        return np.zeros(len(block.segment), dtype=np.int64), block.segment

    def histogram(self, edges: np.ndarray, block: Block) -> _Histogram:
        group, filter_group = self.groups(block)
        return _Histogram(*_kernels.histogram_pass(block.value, block.cost, block.user_id, group, edges.shape[0],
                                                   edges, filter_group, *self.keys.args()))

    def candidates(self, low: np.ndarray, high: np.ndarray, block: Block) -> _Candidates:
        group, filter_group = self.groups(block)
        return _Candidates(*_kernels.candidate_pass(block.value, block.cost, block.user_id, group, low, high,
                                                    filter_group, *self.keys.args()))


@dataclass(frozen=True)
class _UsersPass(SelfMerging):
    """One pass over chunks of users as a statistic: `step(block)` per chunk (a histogram or the candidates of a
    `_Pass`), merged by the state's own `merge`."""

    step: Callable[[Block], Any]
    columns: UserColumns | None

    def partial(self, chunk: Any) -> Any:
        return self.step(_as_block(chunk, self.columns))


@dataclass(frozen=True)
class GroupSolution:
    """The crossing of one budget (global, or one segment's cap): its key, multiplier and the spend it implies."""

    key: Key
    budget_multiplier: float
    start_spend: float
    binding: bool


@dataclass
class DualDiagnostics:
    """What the search cost: data passes, histogram refinements, upgrades collected, wall seconds."""

    passes: int = 0
    refinements: int = 0
    candidates: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class DualSolution:
    """The solved multipliers and keys; `assign(block)` turns them into levels, block by block."""

    global_solution: GroupSolution
    segment_solutions: tuple[GroupSolution, ...]
    frontier: pd.DataFrame
    diagnostics: DualDiagnostics = field(compare=False)

    @property
    def budget_multiplier(self) -> float:
        return self.global_solution.budget_multiplier

    def assign(self, block: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(level, upper_level, upper_share) of each user of the block; upper_level is -1 unless fractional."""
        keys = Keys.of([s.key for s in self.segment_solutions])
        g = self.global_solution.key
        return _kernels.assign_pass(block.value, block.cost, block.user_id, block.segment, *keys.args(),
                                    g.slope, g.user, g.step, g.share)


def _crossing_bin(hist: _Histogram, g: int, need: float) -> tuple[int, float] | None:
    """Top-down over group g's bins: the first where the cumulative extra cost (from the top edge) reaches `need`,
    with the cost taken before it. Index len(bins) means above the top edge; None: the whole range stays within
    `need`."""
    if hist.above_cost[g] > 0 and hist.above_cost[g] >= need:
        return hist.extra_cost.shape[1], 0.0
    descending = hist.extra_cost[g, ::-1]
    cumulative = hist.above_cost[g] + np.cumsum(descending)
    nonempty = hist.count[g, ::-1] > 0
    reached = np.flatnonzero((cumulative >= need) & nonempty)
    if reached.size == 0:
        return None
    top_index = int(reached[0])
    return len(descending) - 1 - top_index, float(cumulative[top_index] - descending[top_index])


def _lowest_bin(hist: _Histogram, g: int) -> tuple[int, float]:
    """The lowest non-empty bin of group g and the cost above it (the crossing when rounding left it short)."""
    nonempty = np.flatnonzero(hist.count[g] > 0)
    b = int(nonempty[0]) if nonempty.size else 0
    return b, float(hist.above_cost[g] + hist.extra_cost[g, b + 1:].sum())


def _solve(users: Any, columns: UserColumns | None, plan: _Pass, budgets: np.ndarray, diagnostics: DualDiagnostics,
           max_candidates: int) -> tuple[list[GroupSolution], _Histogram]:
    """The crossing key of every group's budget; also the first (full-range) histogram, for the frontier."""
    n_groups = len(budgets)
    edges = np.tile(LOG_EDGES, (n_groups, 1))
    first: _Histogram | None = None
    solved: dict[int, GroupSolution] = {}
    pending = set(range(n_groups))
    while pending:
        hist = _pass_over(users, _UsersPass(functools.partial(plan.histogram, edges.copy()), columns), columns)
        diagnostics.passes += 1
        if first is None:
            first = hist
        else:
            diagnostics.refinements += 1
        low, high, before = np.full(n_groups, np.inf), np.full(n_groups, np.inf), np.zeros(n_groups)
        collect: list[int] = []
        for g in sorted(pending):
            need = budgets[g] - first.start_cost[g]
            found = _crossing_bin(hist, g, need)
            if found is None and hist is first:  # everything fits: the budget does not bind
                solved[g] = GroupSolution(_TAKE_ALL, 0.0, float(first.start_cost[g]), False)
                continue
            bin_index, before[g] = found if found is not None else _lowest_bin(hist, g)
            top = bin_index >= edges.shape[1] - 1
            lo, hi = (edges[g, -1], np.inf) if top else (edges[g, bin_index], edges[g, bin_index + 1])
            count = 0 if top else int(hist.count[g, bin_index])
            if count > max_candidates and np.isfinite(hi) and np.nextafter(lo, np.inf) < hi:
                edges[g] = np.linspace(lo, hi, edges.shape[1])
            else:
                low[g], high[g] = lo, hi
                collect.append(g)
        pending -= solved.keys()
        if collect:
            candidates = _pass_over(users, _UsersPass(functools.partial(plan.candidates, low.copy(), high.copy()),
                                                      columns), columns)
            diagnostics.passes += 1
            diagnostics.candidates += len(candidates.slope)
            for g in collect:
                key = _crossing_key(candidates, candidates.group == g, budgets[g] - first.start_cost[g] - before[g])
                solved[g] = GroupSolution(key, key.slope, float(first.start_cost[g]), True)
            pending -= set(collect)
    return [solved[g] for g in range(n_groups)], first


def _pass_over(users: Any, statistic: Any, columns: UserColumns | None) -> Any:
    return compute(statistic, users, columns=columns.columns if columns is not None and is_chunked(users) else None)


def _crossing_key(candidates: _Candidates, mine: np.ndarray, need: float) -> Key:
    """The upgrade at which the running extra cost (in the total order) reaches `need`, and the share bought."""
    slope, user, step = candidates.slope[mine], candidates.user[mine], candidates.step[mine]
    extra_cost = candidates.extra_cost[mine]
    order = np.lexsort((step, user, -slope))
    running = np.cumsum(extra_cost[order])
    k = min(int(np.searchsorted(running, need, side="left")), len(order) - 1)
    bought = need - (running[k] - extra_cost[order[k]])
    share = float(np.clip(bought / extra_cost[order[k]], 0.0, 1.0))
    if share > 1.0 - 1e-12:  # the budget ends on this upgrade: rounding must not leave it as a fractional user
        share = 1.0
    i = order[k]
    return Key(float(slope[i]), int(user[i]), int(step[i]), share)


def frontier_table(hist: _Histogram, start_spend: float, start_value: float, points: int = 120) -> pd.DataFrame:
    """Value against spend as the multiplier sweeps down the slope bins (exact at each bin edge), thinned to about
    `points` rows evenly spaced in spend. Columns: budget_multiplier, spend, value, marginal_value (= multiplier)."""
    extra_cost = hist.extra_cost[0, ::-1]
    extra_value = hist.extra_value[0, ::-1]
    spend = start_spend + hist.above_cost[0] + np.cumsum(extra_cost)
    value = start_value + hist.above_value[0] + np.cumsum(extra_value)
    multiplier = LOG_EDGES[:-1][::-1]
    keep = np.diff(np.r_[start_spend, spend]) > 0
    spend, value, multiplier = spend[keep], value[keep], multiplier[keep]
    if len(spend) > points:
        targets = np.linspace(spend[0], spend[-1], points)
        rows = np.unique(np.searchsorted(spend, targets).clip(0, len(spend) - 1))
        spend, value, multiplier = spend[rows], value[rows], multiplier[rows]
    first = pd.DataFrame({"budget_multiplier": [np.inf], "spend": [start_spend], "value": [start_value]})
    rest = pd.DataFrame({"budget_multiplier": multiplier, "spend": spend, "value": value})
    table = pd.concat([first, rest], ignore_index=True)
    table["marginal_value"] = table["budget_multiplier"]
    return table


def solve_dual(users: Any, budget: float, segment_caps: np.ndarray | None = None, *,
               columns: UserColumns | None = None, max_candidates: int = MAX_CANDIDATES) -> DualSolution:
    """Multipliers and keys of the budget (and of each capped segment, codes 0..S-1 in the blocks).

    users: a `Block` (in memory), or a users DataFrame or `campaign_core.ChunkedTable` read through `columns`.
    """
    started = time.perf_counter()
    diagnostics = DualDiagnostics()
    segment_solutions: list[GroupSolution] = []
    if segment_caps is not None and len(segment_caps):
        segment_solutions, _ = _solve(users, columns, _Pass(True, Keys.of([])),
                                      np.asarray(segment_caps, dtype=float), diagnostics, max_candidates)
    plan = _Pass(False, Keys.of([s.key for s in segment_solutions]))
    (global_solution,), first = _solve(users, columns, plan, np.array([budget], dtype=float), diagnostics,
                                       max_candidates)
    frontier = frontier_table(first, global_solution.start_spend, float(first.start_value[0]))
    diagnostics.seconds = time.perf_counter() - started
    return DualSolution(global_solution, tuple(segment_solutions), frontier, diagnostics)


def spend_at_multiplier(value: np.ndarray, cost: np.ndarray, multiplier: float) -> tuple[float, float]:
    """(spend, value) when every user takes argmax_j (v_ij - multiplier c_ij), ties to the cheaper level."""
    if not math.isfinite(multiplier) or multiplier < 0:
        raise InputError(f"multiplier: must be finite and >= 0, got {multiplier}")
    return _kernels.spend_at(np.ascontiguousarray(value, dtype=np.float64),
                             np.ascontiguousarray(cost, dtype=np.float64), float(multiplier))
