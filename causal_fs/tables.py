"""Per-(feature, bin, arm) tables: the one mergeable statistic every bin-based score is computed from.

For each feature f, bin b and arm k the tables hold
  rows   N_fbk  the number of rows (or the bootstrap weight of the rows),
  weight W_fbk  the sum of the row weights (1, or 1/propensity when the logs carry propensities),
  wy     S_fbk  the weighted reward sum,
  wyy    Q_fbk  the weighted sum of squared rewards,
in arrays of shape (replicates, features, bins, arms), padded to the largest bin count (padding stays empty).
Replicate 0 is the data as observed; replicates 1..P are permutations, the next B Poisson(1) bootstrap
replicates. Tables are built for a block of replicates at a time (`replicates`, a range of replicate numbers), so
their memory is set by the block, not by P + B. Replicate r of a chunk draws from its own generator, keyed by the
seed, the chunk's content and r, so tables built chunk by chunk and block by block add up to the same numbers
whatever the blocks.

Rows are resampled one by one, or, when the rows carry user ids (`Users`), user by user: a permutation gives each
user the feature rows of another user (a random permutation of the chunk's users), a bootstrap replicate draws one
Poisson(1) weight per user. Permuting rows is a valid null only when rows are exchangeable; with repeated users it
is not (a user's preference moves all of its rows together), and moving whole users is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from causal_fs._table_kernels import poisson_of_uniform, replicate_sums

STATISTICS = ("rows", "weight", "wy", "wyy")


@dataclass(frozen=True)
class Layout:
    """Shape of the tables: features x bins (padded) x arms, plus the replicate count."""

    n_features: int
    n_bins: int
    n_arms: int
    n_permutations: int = 0
    n_bootstrap: int = 0

    @property
    def n_replicates(self) -> int:
        return 1 + self.n_permutations + self.n_bootstrap

    @property
    def cells(self) -> int:
        return self.n_features * self.n_bins * self.n_arms

    def shape(self) -> tuple[int, int, int, int]:
        return (self.n_replicates, self.n_features, self.n_bins, self.n_arms)


@dataclass(frozen=True)
class Tables:
    """Summed statistics per (replicate, feature, bin, arm); add two chunks' tables with `+`."""

    rows: np.ndarray
    weight: np.ndarray
    wy: np.ndarray
    wyy: np.ndarray

    def __add__(self, other: Tables) -> Tables:
        return Tables(*(getattr(self, name) + getattr(other, name) for name in STATISTICS))

    def add_into(self, other: Tables) -> None:
        """Add `other` into these tables' own arrays (no new arrays: row blocks of one chunk)."""
        for name in STATISTICS:
            np.add(getattr(self, name), getattr(other, name), out=getattr(self, name))

    def replicate(self, index: slice | int) -> Tables:
        """The tables of some replicates (keeps the leading axis when given a slice; views, not copies)."""
        return Tables(*(getattr(self, name)[index] for name in STATISTICS))

    def copy(self) -> Tables:
        return Tables(*(getattr(self, name).copy() for name in STATISTICS))


@dataclass(frozen=True)
class ObservedExtras:
    """What the regression filters need beyond the tables, for the observed data only: the sum of each numeric
    feature's values per (feature, bin), and the sum of squared row weights per (feature, bin, arm) (for the
    effective row count W^2 / sum w^2 of a weighted cell)."""

    x_sum: np.ndarray
    weight_sq: np.ndarray

    def __add__(self, other: ObservedExtras) -> ObservedExtras:
        return ObservedExtras(self.x_sum + other.x_sum, self.weight_sq + other.weight_sq)

    def add_into(self, other: ObservedExtras) -> None:
        np.add(self.x_sum, other.x_sum, out=self.x_sum)
        np.add(self.weight_sq, other.weight_sq, out=self.weight_sq)



@dataclass(frozen=True)
class Users:
    """The rows of a chunk grouped by user: each user's rows are contiguous, `start` and `size` per user."""

    start: np.ndarray
    size: np.ndarray

    @classmethod
    def of_sorted(cls, user_words: np.ndarray) -> Users:
        """Users of rows sorted by user (one word per row, equal words = same user)."""
        n = len(user_words)
        if n == 0:
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        start = np.flatnonzero(np.r_[True, user_words[1:] != user_words[:-1]])
        return cls(start, np.diff(np.r_[start, n]))

    @cached_property
    def user_of_row(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.start)), self.size)

    @cached_property
    def position_in_user(self) -> np.ndarray:
        return np.arange(len(self.user_of_row)) - self.start[self.user_of_row]

    def partner_rows(self, rng: np.random.Generator) -> np.ndarray:
        """For every row, the row whose features it takes in a user-level permutation: user u takes the rows of
        user pi(u), in order, cycling through them when pi(u) has fewer rows than u. For features that are constant
        per user this is an exact permutation of the users' feature vectors."""
        partner = rng.permutation(len(self.start))[self.user_of_row]
        return self.start[partner] + self.position_in_user % self.size[partner]

    def weights(self, rng: np.random.Generator) -> np.ndarray:
        """Poisson(1) bootstrap weight per user, repeated on the user's rows."""
        return np.repeat(poisson_ones(rng, len(self.start)), self.size)


#: The Poisson(1) CDF at 0, 1, ..., 19 (the tail beyond 18 is below 2^-53).
_POISSON_ONE_CDF = np.cumsum(np.exp(-1.0) / np.cumprod(np.r_[1.0, np.arange(1, 20)]))


def poisson_ones(rng: np.random.Generator, n: int) -> np.ndarray:
    """n Poisson(1) draws as float64, by inverse CDF on `rng.random(n)` (8x faster than `rng.poisson(1.0, n)`, which
    was most of a bootstrap replicate's time)."""
    out = np.empty(n)
    poisson_of_uniform(rng.random(n), _POISSON_ONE_CDF, out)
    return out


def binary_rewards(reward: np.ndarray) -> bool:
    """Whether every reward of a chunk is 0 or 1: its tables are then counted per (cell, reward)."""
    return bool(np.all((reward == 0) | (reward == 1)))


def chunk_tables(codes: np.ndarray, arms: np.ndarray, reward: np.ndarray, weight: np.ndarray | None,
                 layout: Layout, replicates: range, seed: list[int], users: Users | None = None,
                 out: Tables | None = None) -> Tables:
    """The tables of one chunk for the replicate numbers in `replicates` (0 observed, 1..P permutations, then
    bootstrap). `codes` is (features, rows) bin indices, `arms` 0..K-1, `weight` None for 1, `seed` the chunk's
    entropy (`campaign_core.chunk_seed`), `users` None when rows are independent, `out` tables of
    `len(replicates)` replicates to write into (None: new ones).

    When the reward is 0/1, counts per (cell, reward) give all four statistics (one count, two with weights);
    otherwise four weighted counts. A row permutation shuffles (arm, reward, weight) rows, the same null as
    shuffling every feature column together, and needs no re-binning; a user permutation moves the code columns.
    """
    n_rows = len(arms)
    cell_base = np.array(codes.T, dtype=np.int64, order="C")  # a copy, (rows, features): a row's cells side by side
    cell_base += (np.arange(layout.n_features, dtype=np.int64) * layout.n_bins)[None, :]
    cell_base *= layout.n_arms
    binary = binary_rewards(reward)
    out = [np.empty((len(replicates), *layout.shape()[1:])) for _ in STATISTICS] if out is None else \
        [getattr(out, name) for name in STATISTICS]
    none = np.zeros(0, dtype=np.int64)
    weight = np.zeros(0) if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    arms, reward = np.ascontiguousarray(arms, dtype=np.int64), np.ascontiguousarray(reward, dtype=np.float64)
    scratch = np.empty((layout.cells, 2, 2) if binary else (0, 2, 2))
    for position, replicate in enumerate(replicates):
        rng = np.random.default_rng([*seed, replicate])
        columns, order, resample = none, none, np.zeros(0)
        if 0 < replicate <= layout.n_permutations and users is None:
            order = rng.permutation(n_rows)
        elif 0 < replicate <= layout.n_permutations:
            columns = users.partner_rows(rng)
        elif replicate > layout.n_permutations:
            resample = poisson_ones(rng, n_rows) if users is None else users.weights(rng)
        replicate_sums(cell_base, columns, order, arms, reward, resample, weight, binary,
                       *(array[position].reshape(-1) for array in out), scratch)
    return Tables(*out)
