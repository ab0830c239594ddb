"""How each candidate feature is cut into bins, learned in one mergeable pass over the data.

Rules (shared by every bin-based score):

- numeric feature with more than `n_bins` distinct values: `n_bins` quantile bins, bin j holding
  edges[j-1] < x <= edges[j]. Edges are data values (inverted-CDF quantiles) with duplicates dropped, so a
  strictly increasing transform of the feature gives the same bins. A point mass therefore gets one bin of its
  own rather than several empty ones.
- numeric feature with at most `n_bins` distinct values (binary flags, small counts): one bin per value.
  (CausalML's filter puts a binary feature into a single quantile bin and so always scores it 0.)
- categorical feature (string, category or boolean dtype): one bin per level; levels with less than
  `min_level_share` of the rows, or beyond the `max_levels` most frequent, share an "other" bin.
- NaN (or a missing label) always gets a bin of its own, the last one.

CausalML-compatible bins (`compat="causalml"`) are `pd.qcut`'s instead: linear quantiles at evenly spaced levels
(`qcut_edges`), computed from the same sorted column.

For a pandas frame the quantiles are exact: each column is sorted once (numpy's vectorised sort is about three
times faster than selecting the order statistics with `np.partition`) and its edges are read off. For a
partitioned (Dask) frame each partition contributes a seeded random sample of its values with weights, and merged
samples are compressed to a fixed size by keeping evenly spaced points of the weighted distribution, so the edges
come from a bounded summary while the bin tables later use every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MISSING_LABEL = "missing"
OTHER_LABEL = "other"
SKETCH_SIZE = 1 << 18  # values kept per numeric feature when summarising a partitioned frame


def is_categorical(dtype) -> bool:
    """Whether a column of this dtype is binned by level (strings, categories, booleans), not by quantile."""
    return (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype))


def numeric_values(values: pd.Series) -> np.ndarray:
    """A numeric column as float64 with NaN for missing (nullable integer and float dtypes alike)."""
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def label_codes(values: pd.Series, labels: tuple) -> np.ndarray:
    """Position of every value in `labels` (-1 when absent or missing), hashing each distinct value once (Arrow
    strings against text labels: Arrow's own lookup, about twice as fast as factorizing them)."""
    if (isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow"
            and all(isinstance(label, str) for label in labels)):
        positions = pc.index_in(pa.array(values.array), value_set=pa.array(labels, type=pa.large_string()))
        return pc.fill_null(positions, -1).to_numpy().astype(np.int64, copy=False)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    position = {label: i for i, label in enumerate(labels)}
    lookup = np.array([position.get(value, -1) for value in uniques] + [-1], dtype=np.int64)
    return lookup[codes]


def level_counts(values: pd.Series) -> pd.Series:
    """Rows per distinct present value (labels as plain Python objects), zero counts dropped."""
    counts = values.value_counts(dropna=True)
    counts = counts[counts > 0]
    counts.index = pd.Index(list(counts.index), dtype=object)
    return counts


@dataclass(frozen=True)
class FeatureBins:
    """The bins of one feature: `edges` for numeric features, `levels` for categorical ones; NaN is the last bin."""

    name: str
    categorical: bool
    edges: np.ndarray = field(default_factory=lambda: np.empty(0))  # numeric: x <= edges[j] falls in bin j
    levels: tuple = ()  # categorical: kept levels; others share the "other" bin
    has_other: bool = False

    @property
    def n_bins(self) -> int:
        """Bins including the NaN bin (and "other" for categorical features)."""
        if self.categorical:
            return len(self.levels) + int(self.has_other) + 1
        return len(self.edges) + 2

    @property
    def missing_bin(self) -> int:
        return self.n_bins - 1

    def labels(self) -> list[str]:
        """A readable label per bin, e.g. "(0.5, 1.2]", a level, "other", "missing"."""
        if self.categorical:
            return [str(level) for level in self.levels] + [OTHER_LABEL] * self.has_other + [MISSING_LABEL]
        bounds = [-np.inf, *self.edges, np.inf]
        return [f"({low:.4g}, {high:.4g}]" for low, high in zip(bounds[:-1], bounds[1:], strict=True)] + [
            MISSING_LABEL]

    def codes(self, values: pd.Series) -> np.ndarray:
        """The bin index (0..n_bins-1) of every row."""
        if self.categorical:
            present = values.notna().to_numpy()
            codes = label_codes(values, self.levels)
            if self.has_other:
                codes[(codes < 0) & present] = len(self.levels)
            codes[~present] = self.missing_bin
            return codes
        return self.numeric_codes(numeric_values(values))

    def numeric_codes(self, x: np.ndarray) -> np.ndarray:
        """The bin index of every value of a numeric feature given as float64 (NaN: the missing bin)."""
        codes = np.zeros(len(x), dtype=np.int64)
        for edge in self.edges:  # x <= edges[j] is bin j: count the edges below x (faster than searchsorted)
            codes += x > edge
        codes[np.isnan(x)] = self.missing_bin
        return codes


@dataclass
class FeatureSketch:
    """What one pass learns about a feature: a weighted sample of numeric values, up to `n_bins`+1 distinct
    values, level counts for categorical features, and how many values are present."""

    categorical: bool
    present: int = 0
    sample: np.ndarray = field(default_factory=lambda: np.empty(0))
    sample_weight: np.ndarray = field(default_factory=lambda: np.empty(0))
    distinct: np.ndarray | None = field(default_factory=lambda: np.empty(0))  # None: more than n_bins values
    level_counts: pd.Series | None = None
    edges: np.ndarray | None = None  # exact inner edges of a whole in-memory column (no sample kept)
    qcut_edges: np.ndarray | None = None  # `pd.qcut`'s edges of a whole in-memory column, when asked for


def sketch_feature(values: pd.Series, n_bins: int, sample_size: int | None, rng: np.random.Generator,
                   compat: bool = False) -> FeatureSketch:
    """The sketch of one chunk of a feature; `sample_size` None: the whole column is in memory and its exact edges
    are taken here (such a sketch is final: it is not merged), with `pd.qcut`'s edges as well when `compat`."""
    if is_categorical(values.dtype):
        counts = level_counts(values)
        return FeatureSketch(True, present=int(counts.sum()), level_counts=counts)
    x = numeric_values(values)
    if sample_size is None:
        ordered = sorted_present(x)
        edges = sorted_quantile_edges(ordered, n_bins) if len(ordered) else np.empty(0)
        return FeatureSketch(False, present=len(ordered), distinct=_few_distinct(ordered, n_bins), edges=edges,
                             qcut_edges=sorted_qcut_edges(ordered, n_bins) if compat else None)
    missing = np.isnan(x)
    if missing.any():
        x = x[~missing]
    if len(x) <= sample_size:
        sample, weight = x, np.ones(len(x))
    else:
        sample = rng.choice(x, size=sample_size, replace=False)
        weight = np.full(sample_size, len(x) / sample_size)
    distinct = None
    if len(pd.unique(sample[:4 * n_bins])) <= n_bins and len(pd.unique(sample)) <= n_bins:
        # Few distinct values in the sample: confirm on the whole chunk (cheap for low-cardinality data).
        all_distinct = pd.unique(x)
        distinct = np.sort(all_distinct) if len(all_distinct) <= n_bins else None
    return FeatureSketch(False, present=len(x), sample=sample, sample_weight=weight, distinct=distinct)


def sorted_present(x: np.ndarray) -> np.ndarray:
    """The non-NaN values of x in increasing order (a sorted copy; NaN sorts last and `searchsorted` agrees)."""
    ordered = np.sort(x)
    return ordered[:np.searchsorted(ordered, np.nan)]


def _few_distinct(ordered: np.ndarray, n_bins: int) -> np.ndarray | None:
    """The distinct values of sorted values when there are at most `n_bins` of them, else None (at most n_bins + 1
    binary searches, not a scan)."""
    distinct, position = [], 0
    while position < len(ordered):
        if len(distinct) == n_bins:
            return None
        distinct.append(ordered[position])
        position = int(np.searchsorted(ordered, ordered[position], side="right"))
    return np.array(distinct, dtype=np.float64)


def _compress(values: np.ndarray, weights: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `size` points that keep the weighted distribution: evenly spaced weighted quantiles."""
    if len(values) <= size:
        return values, weights
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cumulative = np.cumsum(weights)
    targets = (np.arange(size) + 0.5) * (cumulative[-1] / size)
    picks = np.minimum(np.searchsorted(cumulative, targets, side="left"), len(values) - 1)
    return values[picks], np.full(size, cumulative[-1] / size)


def merge_sketches(left: FeatureSketch, right: FeatureSketch, n_bins: int) -> FeatureSketch:
    """One sketch for the union of two chunks (associative up to the compression of large samples)."""
    if left.edges is not None or right.edges is not None:
        raise TypeError("merge_sketches: a sketch with exact edges covers a whole in-memory column and is final")
    if left.categorical:
        counts = left.level_counts.add(right.level_counts, fill_value=0)
        return FeatureSketch(True, present=left.present + right.present, level_counts=counts)
    sample, weight = _compress(np.concatenate([left.sample, right.sample]),
                               np.concatenate([left.sample_weight, right.sample_weight]), SKETCH_SIZE)
    distinct = None
    if left.distinct is not None and right.distinct is not None:
        union = np.union1d(left.distinct, right.distinct)
        distinct = union if len(union) <= n_bins else None
    return FeatureSketch(False, present=left.present + right.present, sample=sample, sample_weight=weight,
                         distinct=distinct)


def sorted_quantile_edges(ordered: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner bin edges of sorted values: the inverted-CDF quantiles at 1/q, ..., (q-1)/q (the ceil(j n / q)-th
    smallest value), duplicates (and the maximum) dropped."""
    ranks = np.ceil(np.arange(1, n_bins) * len(ordered) / n_bins - 1e-9).astype(np.int64) - 1
    edges = np.unique(ordered[np.clip(ranks, 0, len(ordered) - 1)])
    return edges[edges < ordered[-1]]


def weighted_quantile_edges(values: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner bin edges of a weighted sample: the weighted inverted-CDF quantiles at 1/q, ..., (q-1)/q, duplicates
    (and the maximum) dropped; with unit weights, those of `sorted_quantile_edges`."""
    if np.all(weights == 1):
        return sorted_quantile_edges(np.sort(values), n_bins)
    order = np.argsort(values, kind="stable")
    values, cumulative = values[order], np.cumsum(weights[order])
    targets = np.arange(1, n_bins) / n_bins * cumulative[-1]
    picks = np.searchsorted(cumulative, targets * (1 - 1e-12), side="left")
    edges = np.unique(values[np.minimum(picks, len(values) - 1)])
    return edges[edges < values[-1]]


def qcut_edges(x: np.ndarray, n_bins: int) -> np.ndarray:
    """The edges `pd.qcut(x, n_bins, retbins=True, duplicates="drop")` returns, without the codes it assigns and then
    discards (see `sorted_qcut_edges`)."""
    return sorted_qcut_edges(sorted_present(x), n_bins)


def sorted_qcut_edges(ordered: np.ndarray, n_bins: int) -> np.ndarray:
    """`pd.qcut`'s edges of sorted values without NaN: `np.quantile(values, levels, method="linear")` at pandas'
    levels (linspace, nudged up one ulp where n_bins x level is not an integer, as `pd.qcut` does), read off the
    sorted values with numpy's own index and interpolation arithmetic, then repeated edges dropped (one edge for a
    constant column, [nan] for one without values). Bit-identical to pandas' edges (tested)."""
    if ordered.size == 0:
        return np.array([np.nan])
    levels = np.linspace(0, 1, n_bins + 1)
    np.putmask(levels, n_bins * levels != np.arange(n_bins + 1), np.nextafter(levels, 1))
    virtual = (ordered.size - 1) * levels
    previous = np.floor(virtual)
    following = previous + 1
    last = virtual >= ordered.size - 1  # numpy takes index -1, the maximum, for both
    previous[last] = following[last] = -1
    previous, following = previous.astype(np.intp), following.astype(np.intp)
    gamma = virtual - previous
    low, high = ordered[previous], ordered[following]
    difference = high - low  # numpy's `_lerp`, operation for operation
    edges = np.add(low, difference * gamma)
    np.subtract(high, difference * (1 - gamma), out=edges, where=gamma >= 0.5)
    unique = pd.unique(edges)
    return unique if len(unique) < len(edges) and len(edges) != 2 else edges


def compat_bins(name: str, sketch: FeatureSketch) -> FeatureBins:
    """CausalML's qcut bins as our right-closed bins (the same codes as `pd.qcut(..., labels=False)`); a constant
    column has one edge and so no bins at all."""
    return FeatureBins(name, False, edges=np.asarray(sketch.qcut_edges[1:-1], dtype=np.float64))


def feature_bins(name: str, sketch: FeatureSketch, n_bins: int, *, max_levels: int = 50,
                 min_level_share: float = 0.005) -> FeatureBins:
    """The bins of a feature from its merged sketch (see the module docstring for the rules)."""
    if sketch.categorical:
        counts = sketch.level_counts
        counts = counts[counts >= min_level_share * sketch.present]
        # Most frequent first, ties by label, so the kept set does not depend on row order.
        keyed = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))[:max_levels]
        kept = sorted((level for level, _ in keyed), key=str)
        return FeatureBins(name, True, levels=tuple(kept), has_other=len(kept) < len(sketch.level_counts))
    if sketch.distinct is not None:
        return FeatureBins(name, False, edges=np.asarray(sketch.distinct[:-1], dtype=np.float64))
    if sketch.edges is not None:
        return FeatureBins(name, False, edges=sketch.edges)
    return FeatureBins(name, False, edges=weighted_quantile_edges(sketch.sample, sketch.sample_weight, n_bins))

