"""Per-(feature, bin, arm) tables: the one mergeable statistic every bin-based score is computed from.

For each feature f, bin b and arm k the tables hold
  rows   N_fbk  the number of rows (or the bootstrap weight of the rows),
  weight W_fbk  the sum of the row weights (1, or 1/propensity when the logs carry propensities),
  wy     S_fbk  the weighted reward sum,
  wyy    Q_fbk  the weighted sum of squared rewards,
in arrays of shape (replicates, features, bins, arms), padded to the largest bin count (padding stays empty).
Replicate 0 is the data as observed; the next `n_permutations` replicates have (arm, reward, weight) shuffled
against the features within each chunk; the last `n_bootstrap` carry Poisson(1) row weights. Both kinds of
replicate are seeded by (seed, chunk number), so tables built chunk by chunk and added up are reproducible, and
a shuffle within chunks is a valid permutation null when rows are exchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

    def replicate(self, index: slice | int) -> Tables:
        """The tables of some replicates (keeps the leading axis when given a slice)."""
        return Tables(*(getattr(self, name)[index] for name in STATISTICS))



@dataclass(frozen=True)
class ObservedExtras:
    """What the regression filters need beyond the tables, for the observed data only: the sum of each numeric
    feature's values per (feature, bin), and the sum of squared row weights per (feature, bin, arm) (for the
    effective row count W^2 / sum w^2 of a weighted cell)."""

    x_sum: np.ndarray
    weight_sq: np.ndarray

    def __add__(self, other: ObservedExtras) -> ObservedExtras:
        return ObservedExtras(self.x_sum + other.x_sum, self.weight_sq + other.weight_sq)



def chunk_tables(codes: np.ndarray, arms: np.ndarray, reward: np.ndarray, weight: np.ndarray | None,
                 layout: Layout, rng: np.random.Generator) -> Tables:
    """The tables of one chunk. `codes` is (features, rows) bin indices, `arms` 0..K-1, `weight` None for 1.

    When the reward is 0/1, counts per (cell, reward) give all four statistics (one count, two with weights);
    otherwise four weighted counts. Permutation replicates shuffle (arm, reward, weight) rows, which
    is the same null as shuffling every feature column together and needs no re-binning.
    """
    n_rows = len(arms)
    cell_base = (np.arange(layout.n_features, dtype=np.int64) * layout.n_bins)[:, None] + codes
    cell_base *= layout.n_arms
    binary = bool(np.all((reward == 0) | (reward == 1)))
    replicates = [_one_replicate(cell_base, arms, reward, weight, None, layout, binary)]
    for _ in range(layout.n_permutations):
        order = rng.permutation(n_rows)
        replicates.append(_one_replicate(cell_base, arms[order], reward[order],
                                         None if weight is None else weight[order], None, layout, binary))
    for _ in range(layout.n_bootstrap):
        replicates.append(_one_replicate(cell_base, arms, reward, weight, rng.poisson(1.0, n_rows).astype(np.float64),
                                         layout, binary))
    return Tables(*(np.stack([getattr(replicate, name) for replicate in replicates]) for name in STATISTICS))


def _one_replicate(cell_base: np.ndarray, arms: np.ndarray, reward: np.ndarray, weight: np.ndarray | None,
                   resample: np.ndarray | None, layout: Layout, binary: bool) -> Tables:
    shape = layout.shape()[1:]
    n_features = cell_base.shape[0]
    unit = resample if weight is None else (weight if resample is None else resample * weight)

    def total(index: np.ndarray, values: np.ndarray | None, cells: int) -> np.ndarray:
        repeated = None if values is None else np.tile(values, n_features)
        return np.bincount(index, weights=repeated, minlength=cells).astype(np.float64)

    if binary:  # 0/1 rewards: counts per (cell, reward) give every statistic, wy = wyy
        index = (cell_base * 2 + (arms * 2 + reward.astype(np.int64))[None, :]).ravel()
        rows = total(index, resample, layout.cells * 2).reshape(*shape, 2)
        weight_sums = rows if unit is resample else total(index, unit, layout.cells * 2).reshape(*shape, 2)
        positives = weight_sums[..., 1]
        return Tables(rows.sum(axis=-1), weight_sums.sum(axis=-1), positives, positives)
    index = (cell_base + arms[None, :]).ravel()
    unit = np.ones(len(arms)) if unit is None else unit
    rows = total(index, resample, layout.cells).reshape(shape)
    return Tables(rows, total(index, unit, layout.cells).reshape(shape),
                  total(index, unit * reward, layout.cells).reshape(shape),
                  total(index, unit * reward * reward, layout.cells).reshape(shape))
