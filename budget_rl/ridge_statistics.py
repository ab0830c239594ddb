"""Ridge fitted Q iteration and fitted Q evaluation from sufficient statistics, for transitions too large for memory.

A ridge Q-function of day t is, per action a, coef = (X'WX + l2 I)^-1 X'Wy over the day's rows that took a (X the
state features, W the row weights: 1, or 1 / logged propensity). The Gram matrix X'WX + l2 I does not depend on the
target, so it is computed once for every (day, action) in one pass over all chunks and Cholesky-factorized once
(`RidgeSweeps`). Each best-response oracle call is then one backward sweep from the last day: for day t, one
statistic over the rows of day t computes X'Wy for three targets at once, all from day t + 1's fitted coefficients:
the relabelled reward plus the best next value (FQI), and the reward and the cost plus the next value of FQI's greedy
action (FQE of the policy being learned); the cached factors solve them. A last pass over day 0 averages the start
values. So a call reads each day once (T + 1 passes), and memory holds (horizon x actions) p x p matrices and one
chunk, however many rows there are.

The targets and the solves are those of `budget_rl.offline` with `RidgeQ`, so the learned greedy policy and its
(value, cost) equal the in-memory path to rounding. The data are either `Transitions` in memory (one chunk), a
`campaign_core.ChunkedTable` of the transitions table (each pass keeps the rows of its day), or one `ChunkedTable`
per day (each pass reads only its day's table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.linalg import cho_factor, cho_solve
from scipy.stats import poisson

from budget_rl._ridge_kernels import greedy_and_followed, poisson_counts
from budget_rl.offline import EvaluatedPolicy, GreedyQPolicy, RidgeQ, Transitions
from campaign_core import (
    InputError,
    SelfMerging,
    compute,
    is_chunked,
    plain,
    salted_hash,
    seeded_salt,
)
from campaign_core.hashing import id_words, salt_word, splitmix64

STATE_PREFIX, NEXT_PREFIX = "state_", "next_"
#: Where `RidgeSweeps.remembered` keeps the one-step regressions (the other keys are relabellings).
ONE_STEP = "one-step"
#: Poisson(1) cumulative probabilities up to 20 draws (beyond: probability below 1e-19).
_POISSON_CDF = poisson.cdf(np.arange(21), 1.0)
#: The same cuts on the 53-bit integer draw behind `salted_uniform` (u = draw / 2^53, so cdf <= u exactly when
#: ceil(cdf x 2^53) <= draw).
_POISSON_THRESHOLDS = np.ceil(_POISSON_CDF * 2.0**53).astype(np.uint64)


def resampled_counts(users: np.ndarray, salt: str) -> np.ndarray:
    """How many times each user's episode is drawn in a bootstrap replicate: Poisson(1) from the user's salted hash
    (the same count on every day and in every chunk, so whole episodes are resampled without gathering them):
    the number of Poisson(1) CDF values at or below `campaign_core.salted_uniform(user, salt)`."""
    return _resampled_counts_of_keys(user_keys(users), salt)


def user_keys(users: np.ndarray) -> np.ndarray:
    """The salt-independent half of every user's salted hash (splitmix64 of the id's word), computed once for all
    the replicates of a pass."""
    return splitmix64(id_words(users))


def _resampled_counts_of_keys(keys: np.ndarray, salt: str) -> np.ndarray:
    return poisson_counts(keys, salt_word(salt), _POISSON_THRESHOLDS)


@dataclass(frozen=True)
class _DayRows:
    """The rows of one day in one chunk, as arrays grouped by action: action a's rows are `bounds[a]:bounds[a + 1]`
    (a contiguous slice, so every kernel reads each action's rows without copying them; rows whose action is
    outside the layout's set are left out). `importance`: 1 / logged propensity (None: unweighted)."""

    state: np.ndarray
    reward: np.ndarray
    cost: np.ndarray
    next_state: np.ndarray
    users: np.ndarray
    importance: np.ndarray | None
    bounds: np.ndarray

    @cached_property
    def user_keys(self) -> np.ndarray:
        return user_keys(self.users)

    @classmethod
    def grouped(cls, state, action, reward, cost, next_state, users, propensity, n_actions: int) -> _DayRows:
        order = np.argsort(action, kind="stable")
        bounds = np.searchsorted(action[order], np.arange(n_actions + 1))
        kept = order[bounds[0]:bounds[-1]]
        return cls(np.ascontiguousarray(state[kept]), reward[kept], cost[kept], np.ascontiguousarray(next_state[kept]),
                   np.asarray(users)[kept], None if propensity is None else 1.0 / propensity[kept], bounds - bounds[0])

    def __len__(self) -> int:
        return len(self.reward)

    def action_slices(self, start: int = 0, stop: int | None = None) -> list[slice]:
        """Per action, the slice of its rows within rows start:stop (positions relative to `start`)."""
        stop = len(self) if stop is None else stop
        edges = np.clip(self.bounds, start, stop) - start
        return [slice(int(low), int(high)) for low, high in zip(edges[:-1], edges[1:], strict=True)]


@dataclass(frozen=True)
class TransitionLayout:
    """How a chunk of the transitions table reads: the action labels (code = position), the `state_<f>` columns
    (their `next_<f>` twins hold the next state), whether rows are weighted by 1 / `propensity`, and the salt of a
    bootstrap replicate (None: the logs as they are; else each user's rows count `resampled_counts` times)."""

    actions: tuple
    states: tuple[str, ...]
    importance_weighted: bool = False
    resample_salt: str | None = None

    @property
    def nexts(self) -> tuple[str, ...]:
        return tuple(NEXT_PREFIX + name.removeprefix(STATE_PREFIX) for name in self.states)

    @property
    def columns(self) -> list[str]:
        """The columns the passes read."""
        return ["user_id", "day", "action", "reward", "cost",
                *(["propensity"] * self.importance_weighted), *self.states, *self.nexts]

    def weights(self, rows: _DayRows) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(row weight, bootstrap multiplicity) of a day's rows (None: 1 for every row)."""
        weight = rows.importance if self.importance_weighted else None
        if self.resample_salt is None:
            return weight, None
        counts = _resampled_counts_of_keys(rows.user_keys, self.resample_salt)
        return (counts if weight is None else weight * counts), counts

    def rows(self, chunk: Any, day: int) -> _DayRows:
        """Day `day`'s rows of a chunk: a `Transitions`, a DataFrame with `columns` (labels coded by `actions`), or
        a `_SharedChunk` (the same, its rows grouped once for every statistic of the pass)."""
        if isinstance(chunk, _SharedChunk):
            return chunk.day_rows(self, day)
        if isinstance(chunk, Transitions):
            on_day = chunk.on_day(day)
            return _DayRows.grouped(chunk.state[on_day], chunk.action[on_day], chunk.reward[on_day],
                                    chunk.cost[on_day], chunk.next_state[on_day], chunk.user[on_day],
                                    None if chunk.propensity is None else chunk.propensity[on_day],
                                    len(self.actions))
        frame = chunk[chunk["day"].to_numpy() == day]
        return _DayRows.grouped(frame[list(self.states)].to_numpy(dtype=float),
                                action_codes(frame["action"], self.actions),
                                frame["reward"].to_numpy(dtype=float), frame["cost"].to_numpy(dtype=float),
                                frame[list(self.nexts)].to_numpy(dtype=float), frame["user_id"].to_numpy(),
                                frame["propensity"].to_numpy(dtype=float) if "propensity" in frame.columns else None,
                                len(self.actions))


def action_codes(labels: pd.Series, actions: Sequence) -> np.ndarray:
    """Each label's position in `actions` (-1: not an action), with Arrow's hash lookup when labels and actions
    have the same Arrow type (text read from parquet: 10x pandas' indexer, outside the GIL)."""
    try:
        values, value_set = pa.array(labels), pa.array(list(actions))
        if pa.types.is_large_string(values.type) and pa.types.is_string(value_set.type):
            value_set = value_set.cast(values.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        values = value_set = None
    if values is None or values.type != value_set.type:
        return pd.Index(actions).get_indexer(labels).astype(np.int64)
    return pc.index_in(values, value_set=value_set).fill_null(-1).to_numpy().astype(np.int64)


class _SharedChunk:
    """A DataFrame chunk read by several statistics in one pass (bootstrap replicates, a pacing grid): each day's
    rows are extracted and grouped once for all of them; columns read as the frame's."""

    def __init__(self, frame: pd.DataFrame):
        self.frame, self._days = frame, {}

    def __getitem__(self, key):
        return self.frame[key]

    def day_rows(self, layout: TransitionLayout, day: int) -> _DayRows:
        key = (day, layout.actions, layout.states)
        if key not in self._days:
            self._days[key] = layout.rows(self.frame, day)
        return self._days[key]


@dataclass(frozen=True)
class _InOnePass:
    """Several statistics of the same chunks in one pass: a tuple of states, each merged and finalized by its own."""

    statistics: tuple

    def partial(self, chunk: Any) -> tuple:
        shared = _SharedChunk(chunk) if isinstance(chunk, pd.DataFrame) else chunk
        return tuple(statistic.partial(shared) for statistic in self.statistics)

    def merge(self, left: tuple, right: tuple) -> tuple:
        return tuple(statistic.merge(one, other)
                     for statistic, one, other in zip(self.statistics, left, right, strict=True))

    def finalize(self, state: tuple) -> tuple:
        return tuple(statistic.finalize(one) for statistic, one in zip(self.statistics, state, strict=True))


def _days_of(chunk: Any, wanted: tuple[int, ...] | None) -> list[int]:
    """The days a chunk holds (a `Transitions`: all of its horizon), restricted to `wanted` (None: all)."""
    days = (range(chunk.horizon) if isinstance(chunk, Transitions)
            else np.unique(chunk["day"].to_numpy(dtype=np.int64)).tolist())
    return [day for day in days if wanted is None or day in wanted]


def _found_in(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each value is in the sorted array `reference` (binary search: no sort of either)."""
    position = np.minimum(np.searchsorted(reference, values), max(len(reference) - 1, 0))
    return (reference[position] == values) if len(reference) else np.zeros(len(values), dtype=bool)


def _union_of_sorted(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, int]:
    """(the sorted union, how many values both hold) of two sorted arrays of unique values, in linear time (a
    stable sort merges the two runs)."""
    both = np.sort(np.concatenate([left, right]), kind="stable")
    repeated = both[1:] == both[:-1]
    return both[np.r_[True, ~repeated]], int(repeated.sum())


# ------------------------------------------------------------------------------------------- the pass done once
@dataclass
class GramState:
    """Per day: the (actions, p, p) sums of W X'X by action, the row count and the day's users (sorted unique
    64-bit hashes of user_id, when episodes are checked); plus what validation counts."""

    gram: dict[int, np.ndarray] = field(default_factory=dict)
    rows: dict[int, int] = field(default_factory=dict)
    lowest: np.ndarray = field(default_factory=lambda: np.full(2, np.inf))  # smallest reward, cost
    unknown_actions: int = 0
    unknown_example: Any = None
    not_finite: dict[str, int] = field(default_factory=dict)
    negative_cost: int = 0
    bad_propensity: int = 0
    users: dict[int, np.ndarray] = field(default_factory=dict)
    repeated: int = 0

    def merge(self, other: GramState) -> GramState:
        merged = GramState(dict(self.gram), dict(self.rows), np.minimum(self.lowest, other.lowest),
                           self.unknown_actions + other.unknown_actions,
                           self.unknown_example if self.unknown_actions else other.unknown_example,
                           {k: self.not_finite.get(k, 0) + other.not_finite.get(k, 0)
                            for k in {*self.not_finite, *other.not_finite}},
                           self.negative_cost + other.negative_cost, self.bad_propensity + other.bad_propensity,
                           dict(self.users), self.repeated + other.repeated)
        for day, users in other.users.items():
            if day in merged.users:
                users, common = _union_of_sorted(merged.users[day], users)
                merged.repeated += common
            merged.users[day] = users
        for day, gram in other.gram.items():
            merged.gram[day] = merged.gram[day] + gram if day in merged.gram else gram
            merged.rows[day] = merged.rows.get(day, 0) + other.rows[day]
        return merged


@dataclass(frozen=True)
class GramPass(SelfMerging):
    """The statistic computed once: per (day, action) Gram sums over every chunk, and the checks of the rows.
    `days`: the days to read (None: every day in the chunk). `validate`: check the rows (done by one statistic of
    a pass; the bootstrap replicates' passes read the same rows)."""

    layout: TransitionLayout
    days: tuple[int, ...] | None = None
    check_episodes: bool = True
    validate: bool = True

    def partial(self, chunk: Any) -> GramState:
        state = GramState()
        if not isinstance(chunk, Transitions) and self.validate and self._refused(chunk, state):
            return state
        n_actions, p = len(self.layout.actions), len(self.layout.states)
        for day in _days_of(chunk, self.days):
            rows = self.layout.rows(chunk, day)
            weight, _ = self.layout.weights(rows)
            gram = np.zeros((n_actions, p, p))
            for a, taken in enumerate(rows.action_slices()):
                x = rows.state[taken]
                gram[a] = (x if weight is None else x * weight[taken, None]).T @ x
            state.gram[int(day)], state.rows[int(day)] = gram, len(rows)
            if self.check_episodes and not isinstance(chunk, Transitions):
                hashed = salted_hash(chunk["user_id"].to_numpy()[chunk["day"].to_numpy() == day], "episodes")
                state.users[int(day)] = np.unique(hashed)
                state.repeated += hashed.size - state.users[int(day)].size
            if len(rows):
                state.lowest = np.minimum(state.lowest, [rows.reward.min(), rows.cost.min()])
        return state

    def _refused(self, chunk: pd.DataFrame, state: GramState) -> bool:
        """Counts the chunk's bad rows into `state`; True when there are any (finalize then refuses the table)."""
        codes = action_codes(chunk["action"], self.layout.actions)
        if (codes < 0).any():
            state.unknown_actions = int((codes < 0).sum())
            state.unknown_example = plain(chunk["action"].to_numpy()[codes < 0][0])
        for name in ("reward", "cost", *self.layout.states, *self.layout.nexts):
            bad = int((~np.isfinite(chunk[name].to_numpy(dtype=float))).sum())
            if bad:
                state.not_finite[name] = bad
        state.negative_cost = int((chunk["cost"].to_numpy(dtype=float) < 0).sum())
        if self.layout.importance_weighted:
            propensity = chunk["propensity"].to_numpy(dtype=float)
            state.bad_propensity = int((~((propensity > 0) & (propensity <= 1))).sum())
        return bool(state.unknown_actions or state.not_finite or state.negative_cost or state.bad_propensity)

    def finalize(self, state: GramState) -> GramState:
        """The merged state; refuses (InputError, one line) unknown actions, non-finite values, negative costs and
        propensities outside (0, 1]."""
        if state.unknown_actions:
            raise InputError(f"action: {state.unknown_actions} logged actions are outside the action set "
                             f"{[plain(a) for a in self.layout.actions]}, e.g. {state.unknown_example!r}")
        if state.not_finite:
            name, bad = next(iter(sorted(state.not_finite.items())))
            raise InputError(f"{name}: {bad} values are NaN or infinite")
        if state.negative_cost:
            raise InputError(f"cost: {state.negative_cost} values are negative")
        if state.bad_propensity:
            raise InputError(f"propensity: {state.bad_propensity} values are not in (0, 1]")
        return state


def _upper_products(states: np.ndarray) -> np.ndarray:
    """(p (p + 1) / 2, rows): per row, the products x_i x_j for i <= j, in `np.triu_indices` order."""
    columns = np.ascontiguousarray(states.T)
    p = len(columns)
    products = np.empty((p * (p + 1) // 2, states.shape[0]))
    offset = 0
    for i in range(p):
        np.multiply(columns[i], columns[i:], out=products[offset:offset + p - i])
        offset += p - i
    return products


@dataclass(frozen=True)
class Grams:
    """Per day and action, the sums of W X'X of each layout (layouts that differ only in their bootstrap salt), with
    no checks (the rows were checked by the `GramPass` of `ridge_sweeps`): per block of an action's rows, one
    product of every layout's weights by the rows' upper triangles of x x'. `days`: as `GramPass`."""

    layouts: tuple[TransitionLayout, ...]
    days: tuple[int, ...] | None = None

    def partial(self, chunk: Any) -> dict[int, tuple[np.ndarray, int, np.ndarray]]:
        upper = np.triu_indices(len(self.layouts[0].states))
        sums = {}
        for day in _days_of(chunk, self.days):
            rows = self.layouts[0].rows(chunk, day)
            weights = np.empty((len(rows), len(self.layouts)))
            for index, layout in enumerate(self.layouts):
                weight = layout.weights(rows)[0]
                weights[:, index] = 1.0 if weight is None else weight
            triangles = np.zeros((len(self.layouts), len(rows.bounds) - 1, len(upper[0])))
            block = _block_rows(len(upper[0]) + len(self.layouts))
            for a, taken in enumerate(rows.action_slices()):
                for start in range(taken.start, taken.stop, block):
                    stop = min(start + block, taken.stop)
                    triangles[:, a] += (_upper_products(rows.state[start:stop]) @ weights[start:stop]).T
            lowest = ([rows.reward.min(), rows.cost.min()] if len(rows) else np.full(2, np.inf))
            sums[int(day)] = (triangles, len(rows), np.asarray(lowest, dtype=float))
        return sums

    @staticmethod
    def merge(left: dict, right: dict) -> dict:
        merged = dict(left)
        for day, (triangles, count, lowest) in right.items():
            if day in merged:
                before = merged[day]
                triangles, count, lowest = (before[0] + triangles, before[1] + count,
                                            np.minimum(before[2], lowest))
            merged[day] = (triangles, count, lowest)
        return merged

    def finalize(self, sums: dict) -> tuple[GramState, ...]:
        """One `GramState` per layout (Gram sums, rows and smallest reward and cost per day; nothing checked)."""
        p = len(self.layouts[0].states)
        upper = np.triu_indices(p)
        states = tuple(GramState() for _ in self.layouts)
        for day, (triangles, count, lowest) in sums.items():
            for index, state in enumerate(states):
                gram = np.zeros((triangles.shape[1], p, p))
                gram[:, upper[0], upper[1]] = triangles[index]
                gram[:, upper[1], upper[0]] = triangles[index]
                state.gram[day], state.rows[day] = gram, count
                state.lowest = np.minimum(state.lowest, lowest)
        return states


def _broken_episodes(days: Sequence[np.ndarray | None]) -> np.ndarray:
    """The users (hashes) on some day but not on the day before: their days do not run consecutively from 0."""
    broken = [today[~_found_in(yesterday, today)] for yesterday, today in zip(days[:-1], days[1:], strict=True)
              if today is not None and yesterday is not None]
    return np.unique(np.concatenate(broken)) if broken else np.zeros(0, dtype=np.uint64)


def _refuse_episodes(repeated: int, broken: int) -> None:
    """Refuses (InputError, one line) rows repeating a (user, day) pair, then users with a gap in their days."""
    if repeated:
        raise InputError(f"day: {repeated} rows repeat a (user_id, day) pair; one row per user and day")
    if broken:
        raise InputError(f"day: {broken} users do not have consecutive days from 0 (inconsistent user/day order)")


# ------------------------------------------------------------------------------------ one day of a backward sweep
#: values per row block of the backup kernels (next-state products and targets): about 64 MB of float64 per block
_BLOCK_VALUES = 1 << 23


@dataclass(frozen=True)
class Backup:
    """One set of regressions a day's pass solves: X'Wy per action for its targets, solved by `factors` (the
    day's Cholesky factors of its `layout`'s weighting).

    Targets (in order): with `relabel` = (reward_weight, cost_weight), the relabelled reward plus the largest next
    value of `greedy_next` (FQI); with `evaluated_next` (2, actions, p), the reward and the cost plus the next value
    (reward, cost coefficients) of `greedy_next`'s greedy action, floored (FQE). On the last day `greedy_next` is
    None and the targets are the day's signals alone (with neither relabel nor next: the one-step regressions)."""

    layout: TransitionLayout
    factors: tuple
    relabel: tuple[float, float] | None = None
    greedy_next: np.ndarray | None = None
    evaluated_next: np.ndarray | None = None

    @property
    def width(self) -> int:
        """How many targets it regresses."""
        return (self.relabel is not None) + 2 * (self.evaluated_next is not None or self.greedy_next is None)


@dataclass(frozen=True)
class _Followed:
    """Greedy (actions, p) matrices and evaluated ones that follow them (`follows[e]`: the greedy matrix whose
    choice evaluated matrix e reads), stacked once for every block of a pass."""

    greedy: np.ndarray
    evaluated: np.ndarray
    follows: np.ndarray

    @classmethod
    def of(cls, greedy: Sequence[np.ndarray], evaluated: Sequence[np.ndarray], follows: Sequence[int],
           n_actions: int, p: int) -> _Followed:
        return cls(np.stack(greedy) if greedy else np.zeros((0, n_actions, p)),
                   np.stack(evaluated) if evaluated else np.zeros((0, n_actions, p)),
                   np.asarray(follows, dtype=np.int64))

    def values(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(best, chosen): per greedy matrix and row of `states`, the largest Q-value (matrices, rows); per evaluated
        matrix, its value at the action its greedy matrix chose (matrices, rows)."""
        best, chosen = np.empty((len(self.greedy), len(states))), np.empty((len(self.evaluated), len(states)))
        greedy_and_followed(np.ascontiguousarray(states), self.greedy, self.evaluated, self.follows, best, chosen)
        return best, chosen


def _by_salt(layouts: Sequence[TransitionLayout], rows: _DayRows, which: int) -> dict:
    """{bootstrap salt: its `weights(rows)[which]`} (0: row weights, 1: multiplicities), once per distinct salt."""
    found: dict = {}
    for layout in layouts:
        if layout.resample_salt not in found:
            found[layout.resample_salt] = layout.weights(rows)[which]
    return found


def _block_rows(width: int) -> int:
    """Rows per block of a kernel that holds `width` values per row, so that a block stays near `_BLOCK_VALUES`."""
    return max(1024, _BLOCK_VALUES // max(1, width))


class _Slots:
    """Distinct objects by identity (the greedy matrix of a policy is shared by its bootstrap replicates)."""

    def __init__(self):
        self.items: list = []
        self._index: dict[int, int] = {}

    def __call__(self, item: Any) -> int:
        if id(item) not in self._index:
            self._index[id(item)] = len(self.items)
            self.items.append(item)
        return self._index[id(item)]


@dataclass(frozen=True)
class DayBackups:
    """The statistic of one day of a sweep: every `Backup` of the day over the same rows, in one pass. The rows are
    grouped by action once; per block of rows, each distinct greedy matrix's choices come from one product, the
    evaluated next values of the backups that follow it from one product per chosen action, and every backup's
    targets from one X'(W y) product per action (a bootstrap replicate's weighting multiplies its targets, so all
    replicates share the states)."""

    day: int
    backups: tuple[Backup, ...]
    floors: tuple[float, float]

    def partial(self, chunk: Any) -> np.ndarray:
        rows = self.backups[0].layout.rows(chunk, self.day)
        n_actions = len(rows.bounds) - 1
        offsets = np.cumsum([0, *(backup.width for backup in self.backups)])
        products = np.zeros((n_actions, rows.state.shape[1], offsets[-1]))
        slots = _Slots()
        greedy = [None if b.greedy_next is None else slots(b.greedy_next) for b in self.backups]
        following = [i for i, b in enumerate(self.backups) if greedy[i] is not None and b.evaluated_next is not None]
        evaluated = [e for i in following for e in self.backups[i].evaluated_next]
        follows = [greedy[i] for i in following for _ in range(2)]
        position = {i: 2 * k for k, i in enumerate(following)}
        weights = _by_salt([backup.layout for backup in self.backups], rows, 0)
        matrices = _Followed.of(slots.items, evaluated, follows, n_actions, rows.state.shape[1])
        block = _block_rows(len(slots.items) + len(evaluated) + int(offsets[-1]))
        for start in range(0, len(rows), block):
            stop = min(start + block, len(rows))
            best, chosen = matrices.values(rows.next_state[start:stop])
            reward, cost = rows.reward[start:stop], rows.cost[start:stop]
            targets = np.empty((stop - start, offsets[-1]), order="F")
            for i, (backup, low, high) in enumerate(zip(self.backups, offsets[:-1], offsets[1:], strict=True)):
                column = low
                if backup.relabel is not None:
                    targets[:, column] = backup.relabel[0] * reward + backup.relabel[1] * cost
                    if greedy[i] is not None:
                        targets[:, column] += best[greedy[i]]
                    column += 1
                if column < high:
                    for index, signal in enumerate((reward, cost)):
                        targets[:, column] = signal
                        if greedy[i] is not None:
                            targets[:, column] += np.maximum(chosen[position[i] + index], self.floors[index])
                        column += 1
                weight = weights[backup.layout.resample_salt]
                if weight is not None:
                    targets[:, low:high] *= weight[start:stop, None]
            states = rows.state[start:stop]
            for a, taken in enumerate(rows.action_slices(start, stop)):
                if taken.stop > taken.start:
                    products[a] += states[taken].T @ targets[taken]
        return products

    @staticmethod
    def merge(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return left + right

    def finalize(self, products: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per backup, its (targets, actions, p) ridge coefficients."""
        offsets = np.cumsum([0, *(backup.width for backup in self.backups)])
        return tuple(np.stack([cho_solve(factor, products[a][:, low:high])
                               for a, factor in enumerate(backup.factors)]).transpose(2, 0, 1)
                     for backup, low, high in zip(self.backups, offsets[:-1], offsets[1:], strict=True))


@dataclass(frozen=True)
class StartValues:
    """Per (layout, greedy, evaluated): the mean over day-0 rows of the (reward, cost) Q-values (`evaluated`) of the
    greedy action of `greedy` (floored; in a bootstrap replicate each row counts its user's multiplicity), all from
    one product per block of rows."""

    starts: tuple[tuple[TransitionLayout, np.ndarray, np.ndarray], ...]
    floors: tuple[float, float]

    def partial(self, chunk: Any) -> np.ndarray:
        rows = self.starts[0][0].rows(chunk, 0)
        slots = _Slots()
        follows = [slots(matrix) for _, matrix, _ in self.starts for _ in range(2)]
        evaluated = [e for _, _, pair in self.starts for e in pair]
        multiplicity = _by_salt([layout for layout, _, _ in self.starts], rows, 1)
        matrices = _Followed.of(slots.items, evaluated, follows, len(rows.bounds) - 1, rows.state.shape[1])
        sums = np.zeros((len(self.starts), 3))
        block = _block_rows(len(slots.items) + len(evaluated))
        for start in range(0, len(rows), block):
            stop = min(start + block, len(rows))
            _, chosen = matrices.values(rows.state[start:stop])
            for i, (layout, _, _) in enumerate(self.starts):
                counts = multiplicity[layout.resample_salt]
                counts = np.ones(stop - start) if counts is None else counts[start:stop]
                sums[i] += [*(np.maximum(chosen[2 * i + j], self.floors[j]) @ counts for j in range(2)),
                            counts.sum()]
        return sums

    @staticmethod
    def merge(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return left + right

    @staticmethod
    def finalize(state: np.ndarray) -> np.ndarray:
        """(starts, 2): the mean (value, cost) per start."""
        return state[:, :2] / state[:, 2:]


# ---------------------------------------------------------------------------------------------- the entry point
@dataclass(frozen=True)
class RidgeSweeps:
    """Ridge FQI and FQE over transitions whose Gram matrices are factorized (built by `ridge_sweeps`).

    `factors[t][a]`: the Cholesky factor of day t, action a. `floors`: the least value of the reward's and the
    cost's continuation (0 for a non-negative signal, as in `fitted_q_evaluation`). `episodes`: the users (rows of
    day 0). Calling it with a direction is the best-response oracle of `budget_rl.mixed` (as
    `budget_rl.offline.fqe_oracle` with `RidgeQ`)."""

    data: Any
    layout: TransitionLayout
    factors: tuple
    floors: tuple[float, float]
    horizon: int
    episodes: int
    l2: float
    remembered: dict = field(default_factory=dict, compare=False, repr=False)

    def _pass(self, statistic: Any, day: int) -> Any:
        table = self.data[day] if isinstance(self.data, list) else self.data
        return compute(statistic, table, columns=self.layout.columns if is_chunked(table) else None)

    def fit(self, reward_weight: float, cost_weight: float) -> tuple[GreedyQPolicy, np.ndarray]:
        """The greedy policy for the relabelled reward reward_weight * r + cost_weight * c, and its (value, cost)
        per episode by FQE, in one backward sweep (one pass per day, then one over day 0)."""
        evaluated = self.evaluated(reward_weight, cost_weight)
        return evaluated.policy, evaluated.measurement

    def evaluated(self, reward_weight: float, cost_weight: float) -> EvaluatedPolicy:
        """As `fit`, keeping the per-day FQE Q-functions of value and cost that the sweep solves on the way (the
        in-memory counterpart is `budget_rl.offline.evaluated_policy`)."""
        return self.evaluated_many([(reward_weight, cost_weight)])[0]

    def evaluated_many(self, weights: Sequence[tuple[float, float]]) -> list[EvaluatedPolicy]:
        """`evaluated` for each (reward_weight, cost_weight), all in one backward sweep: T + 1 passes over the data
        however many relabellings (a pacing grid costs the reads of one oracle call). Relabellings evaluated before
        are remembered, not swept again (the column generation's first round and the pacing grid share theirs)."""
        keys = [(float(r), float(c)) for r, c in weights]
        new = list(dict.fromkeys(key for key in keys if key not in self.remembered))
        if new:
            self.remembered.update(zip(new, self._swept(new), strict=True))
        return [self.remembered[key] for key in keys]

    def best_responses(self, directions: Sequence[np.ndarray]) -> list[tuple[GreedyQPolicy, np.ndarray]]:
        """The oracle answers (`__call__`) for many directions, from one sweep (the `BatchOracle` of
        `budget_rl.mixed.maximize_under_budget_batched`)."""
        evaluated = self.evaluated_many([(-float(d[0]), -float(d[1])) for d in directions])
        return [(one.policy, one.measurement) for one in evaluated]

    def _swept(self, weights: Sequence[tuple[float, float]]) -> list[EvaluatedPolicy]:
        """One backward sweep for these relabellings; the first sweep also solves the one-step regressions on its
        passes (`one_step` then reads nothing)."""
        k = len(weights)
        greedy: list = [None] * k
        evaluated: list = [None] * k
        coefficients = [[None] * self.horizon for _ in range(k)]
        value_q = [[None] * self.horizon for _ in range(k)]
        cost_q = [[None] * self.horizon for _ in range(k)]
        one_step = [None] * self.horizon if ONE_STEP not in self.remembered else None
        for day in reversed(range(self.horizon)):
            backups = [Backup(self.layout, self.factors[day], (float(r), float(c)), greedy[i], evaluated[i])
                       for i, (r, c) in enumerate(weights)]
            solved = self._pass(DayBackups(day, (*backups, *[Backup(self.layout, self.factors[day])] * bool(one_step)),
                                           self.floors), day)
            for i, one in enumerate(solved[:k]):
                greedy[i], evaluated[i] = one[0], one[1:]
                coefficients[i][day] = greedy[i]
                value_q[i][day], cost_q[i][day] = (RidgeQ.from_coefficients(c, self.l2) for c in evaluated[i])
            if one_step:
                one_step[day] = solved[k]
        if one_step:
            self.remembered[ONE_STEP] = one_step
        starts = self._pass(StartValues(tuple((self.layout, greedy[i], evaluated[i]) for i in range(k)),
                                        self.floors), 0)
        return [EvaluatedPolicy(GreedyQPolicy(tuple(RidgeQ.from_coefficients(c, self.l2) for c in coefficients[i])),
                                tuple(value_q[i]), tuple(cost_q[i]), starts[i]) for i in range(k)]

    def one_step(self) -> tuple[tuple, tuple]:
        """Per day, the ridge regressions of the day's reward and of its cost alone (`RidgeQ`, one per day), from
        the cached factors: solved on the first sweep's passes, or in one pass per day before any sweep (as
        `budget_rl.offline.one_step_models`)."""
        if ONE_STEP not in self.remembered:
            self.remembered[ONE_STEP] = [
                self._pass(DayBackups(day, (Backup(self.layout, self.factors[day]),), self.floors), day)[0]
                for day in range(self.horizon)]
        solved = self.remembered[ONE_STEP]
        return (tuple(RidgeQ.from_coefficients(day[0], self.l2) for day in solved),
                tuple(RidgeQ.from_coefficients(day[1], self.l2) for day in solved))

    def evaluate(self, policy: GreedyQPolicy) -> np.ndarray:
        """(value, cost) per episode of a policy greedy on linear Q-functions (`coefficients_`, e.g. from `fit`)."""
        return self.evaluate_many([policy])[0]

    def evaluate_many(self, policies: Sequence[GreedyQPolicy]) -> np.ndarray:
        """(policies, 2): `evaluate` of each policy, all in one backward sweep (policies learned elsewhere, e.g. a
        deployed mixture's components on new users)."""
        return self._evaluate([(self.layout, self.factors, policy) for policy in policies])

    def _evaluate(self, evaluations: Sequence[tuple[TransitionLayout, tuple, GreedyQPolicy]]) -> np.ndarray:
        """(evaluations, 2) FQE (value, cost) of each (layout, its factors, policy), all in one backward sweep (one
        pass per day, then one over day 0); the layouts differ only in their bootstrap salt."""
        for _, _, policy in evaluations:
            if len(policy.q_functions) != self.horizon or not all(hasattr(q, "coefficients_")
                                                                  for q in policy.q_functions):
                raise InputError(f"policy: needs {self.horizon} linear Q-functions (coefficients_), one per day")
        evaluated: tuple = (None,) * len(evaluations)
        for day in reversed(range(self.horizon)):
            evaluated = self._pass(DayBackups(day, tuple(
                Backup(layout, factors[day], None,
                       policy.q_functions[day + 1].coefficients_ if day + 1 < self.horizon else None, following)
                for (layout, factors, policy), following in zip(evaluations, evaluated, strict=True)), self.floors),
                day)
        starts = self._pass(StartValues(tuple(
            (layout, policy.q_functions[0].coefficients_, following)
            for (layout, _, policy), following in zip(evaluations, evaluated, strict=True)), self.floors), 0)
        return np.asarray(starts)

    def __call__(self, direction: np.ndarray) -> tuple[GreedyQPolicy, np.ndarray]:
        return self.fit(-float(direction[0]), -float(direction[1]))

    def replicates(self, policies: Sequence[GreedyQPolicy], *, n_bootstrap: int = 50,
                   random_state: int = 0) -> np.ndarray:
        """(policies, n_bootstrap, 2) FQE (value, cost) of each policy on bootstrap replicates of the users: whole
        episodes drawn Poisson(1) times each by a salted hash of the user id (replicate b: salt
        "fqe-bootstrap-<b>/<random_state>"), so a replicate is a row weighting that every chunk applies on its own.
        Every replicate's Gram matrices come from one Gram pass and every (replicate, policy) FQE from one backward
        sweep, so the data are read as often as for one evaluation; memory holds n_bootstrap times the matrices."""
        if n_bootstrap < 1:
            raise InputError(f"n_bootstrap: must be >= 1, got {n_bootstrap}")
        layouts = [replace(self.layout, resample_salt=seeded_salt(f"fqe-bootstrap-{b}", random_state))
                   for b in range(n_bootstrap)]
        factors, _, _, _ = _factorized(self.data, layouts, self.l2, checked=False)
        estimates = self._evaluate([(layout, replicate, policy) for layout, replicate in zip(layouts, factors,
                                                                                             strict=True)
                                    for policy in policies])
        return estimates.reshape(n_bootstrap, len(policies), 2).transpose(1, 0, 2)


def _merged_grams(data: Any, layouts: Sequence[TransitionLayout], checked: bool) -> list[GramState]:
    """The Gram sums of each layout, all in one pass over the data (one per day for a table per day). `checked`:
    the first layout's pass also checks the rows and refuses users whose days are not consecutive from 0 (one table
    per day: holding two days' users at a time); the others (bootstrap replicates of rows already checked) come
    from one `Grams`."""
    def grams(days: tuple[int, ...] | None = None) -> Any:
        rest = tuple(layouts[1:] if checked else layouts)
        return _InOnePass((*[GramPass(layouts[0], days, True, True)] * checked, *[Grams(rest, days)] * bool(rest)))

    def flat(states: tuple) -> list[GramState]:
        return [*states[:checked], *(state for group in states[checked:] for state in group)]

    if isinstance(data, Transitions):
        return flat(compute(grams(), data))
    columns = layouts[0].columns
    if not isinstance(data, list):
        merged = flat(compute(grams(), data, columns=columns))
        users = merged[0].users
        horizon = max(users, default=-1) + 1
        _refuse_episodes(merged[0].repeated, _broken_episodes([users.get(day, np.zeros(0, np.uint64))
                                                                for day in range(horizon)]).size)
        return merged
    merged, broken, yesterday = [GramState() for _ in layouts], np.zeros(0, dtype=np.uint64), None
    for day, table in enumerate(data):
        states = flat(compute(grams((day,)), table, columns=columns))
        today = states[0].users.pop(day, np.zeros(0, dtype=np.uint64)) if checked else None
        broken = np.union1d(broken, _broken_episodes([yesterday, today]))
        merged = [before.merge(state) for before, state in zip(merged, states, strict=True)]
        yesterday = today
    _refuse_episodes(merged[0].repeated, broken.size)
    return merged


def _factorized(data: Any, layouts: Sequence[TransitionLayout], l2: float, *, checked: bool = True
                ) -> tuple[list[tuple], tuple[float, float], int, int]:
    """(Cholesky factors per day and action of each layout, floors, horizon, episodes) from one pass over the
    data (floors, horizon and episodes do not depend on the row weights: those of the first layout)."""
    merged = _merged_grams(data, layouts, checked)
    first = merged[0]
    horizon = data.horizon if isinstance(data, Transitions) else max(first.rows, default=-1) + 1
    absent = [day for day in range(horizon) if not first.rows.get(day)]
    if horizon == 0 or (absent and not isinstance(data, Transitions)):
        raise InputError(f"day: no transitions on day(s) {absent[:5] or [0]}; days must run 0..horizon-1")
    p, identity = len(layouts[0].states), np.eye(len(layouts[0].states))
    empty = np.zeros((len(layouts[0].actions), p, p))
    factors = [tuple(tuple(cho_factor(gram + l2 * identity) for gram in state.gram.get(day, empty))
                     for day in range(horizon)) for state in merged]
    floors = tuple(0.0 if low >= 0 else -np.inf for low in first.lowest)
    return factors, floors, horizon, first.rows.get(0, 0)


def ridge_sweeps(data: Transitions | Any | Sequence[Any], *, actions: Sequence | None = None, l2: float = 1e-8,
                 importance_weighted: bool = False) -> RidgeSweeps:
    """Check the transitions, compute every (day, action) Gram matrix in one pass and factorize it: what each
    oracle call of the returned `RidgeSweeps` reuses.

    data: `Transitions` in memory; a `campaign_core.ChunkedTable` of the transitions table (columns day, action,
    reward, cost, propensity when importance weighted, state_<f> and next_<f>; days 0..horizon-1); or a list of
    such tables, the i-th holding day i. actions: the action labels of a table, in code order (a `Transitions`
    has codes already). importance_weighted: rows weighted by 1 / logged propensity. Refuses bad input
    (InputError, one line) before any sweep."""
    if l2 <= 0:
        raise InputError(f"l2: must be > 0 (the Gram matrices are Cholesky-factorized), got {l2}")
    if isinstance(data, Transitions):
        if importance_weighted and data.propensity is None:
            raise InputError("propensity: importance weighting needs the logged propensities")
        states = tuple(f"{STATE_PREFIX}{i}" for i in range(data.state.shape[1]))
        layout = TransitionLayout(tuple(range(data.n_actions)), states, importance_weighted)
    else:
        tables = data if is_chunked(data) else list(data)
        first = tables if is_chunked(tables) else tables[0]
        if actions is None or len(actions) == 0:
            raise InputError("actions: the action labels of a chunked transitions table are required")
        states = tuple(name for name in first.columns if str(name).startswith(STATE_PREFIX))
        layout = TransitionLayout(tuple(actions), states, importance_weighted)
        if not states:
            raise InputError(f"transitions: need {STATE_PREFIX}* columns and their {NEXT_PREFIX}* twins; missing "
                             f"{[STATE_PREFIX + '*']}")
        missing = [name for name in layout.columns if name not in first.columns]
        if missing:
            raise InputError(f"transitions: missing column(s) {missing}")
        data = tables
    (factors,), floors, horizon, episodes = _factorized(data, [layout], l2)
    return RidgeSweeps(data, layout, factors, floors, horizon, episodes, l2)
