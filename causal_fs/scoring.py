"""`score_features`: every heterogeneity score of every candidate feature, with significance, at any scale.

Two passes over the data, both statistics in the platform's one contract (`campaign_core.Statistic`): the first
checks the values and learns the arms and bins (`causal_fs.plan.SketchPass`), the second builds the
per-(feature, bin, arm) tables of the observed data and of every permutation and bootstrap replicate
(`TablePass`). All scores are then pure functions of those tables (`causal_fs.scores`, `causal_fs.regression`).
Data in memory (a pandas DataFrame) is one chunk, scanned in row blocks; a `campaign_core.ChunkedTable` (e.g.
`pipelines.execution.Partitions` over a Dask DataFrame) runs the passes over its chunks and merges the tables, so
memory stays at a few tables however many rows there are. Permutations shuffle rows (or, given a user id column,
whole users) within a block of at most `CHUNK_ROWS` rows (fewer when many features), with randomness keyed by the
seed, the block's content and the replicate number (`campaign_core.chunk_seed`).

Memory does not grow with the number of replicates: the replicate tables are built and scored a block of replicates
at a time, the block as large as `replicate_memory_mb` allows (`replicate_blocks`), one pass over the data per
block. A request whose single replicate does not fit is refused before any work, naming the knob.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from campaign_core import InputError, chunk_seed, compute, is_chunked
from campaign_core.hashing import id_words
from campaign_core.parallel import available_threads, thread_map
from causal_fs import regression, scores
from causal_fs._table_kernels import observed_feature_sums
from causal_fs.binning import SKETCH_SIZE, FeatureBins, is_categorical, label_codes, numeric_values
from causal_fs.options import BIN_METHODS, UPLIFT_METHODS, ScoringOptions
from causal_fs.plan import Plan, SketchPass
from causal_fs.significance import basic_interval, benjamini_hochberg, permutation_p_values
from causal_fs.tables import STATISTICS, Layout, ObservedExtras, Tables, Users, binary_rewards, chunk_tables

CHUNK_ROWS = 1 << 16  # most rows per block (bounds the per-block code matrices: features x rows)
MIN_BLOCK_ROWS = 4096  # fewest rows per block, however many features
ROW_ARRAYS = 4  # (features, rows) int64/float64 arrays alive while a block's tables are built
SCORE_BLOCK = 16  # replicates scored at once (bounds the scoring arrays)
SCORE_ARRAYS = 16  # (features, bins, arms) arrays alive per replicate while replicates are scored
TABLE_HOLDERS = 2  # copies of a block's tables alive at once over several row blocks: the sum so far and a row
                   # block's (one copy when all rows are one block)
MERGE_HOLDERS = 10  # ... over a chunked table: the merge tree's fan-in (8) plus two


@dataclass(frozen=True)
class FeatureScores:
    """Every score of every candidate feature, and what they were computed on.

    `to_frame()`: one row per feature (index `feature`), one column per score and its significance (see
    `score_features`). `arms` (labels, in code order), `control` (the uplift filters' control arm), `rows` (rows
    scored), `binary_reward` (0/1 rewards), `bins` (feature -> bin labels, the NaN bin last when present), `passes`
    (table passes over the data: one per block of replicates).
    """

    table: pd.DataFrame
    arms: tuple
    control: Any
    rows: int
    binary_reward: bool
    bins: dict[str, list[str]] = field(repr=False)
    passes: int = 1

    def to_frame(self) -> pd.DataFrame:
        """The per-feature table (a copy)."""
        return self.table.copy()

    def summary(self) -> dict[str, Any]:
        """Headline figures: rows scored, arms, features scored."""
        return {"rows": self.rows, "arms": len(self.arms), "features": len(self.table)}


def score_features(data: Any, features: Sequence[str] | None = None, *, arm_col: str = "arm",
                   reward_col: str = "reward", methods: Sequence[str] = ("hie", "hdd"), n_bins: int = 10,
                   control: Any = None, propensity_col: str | None = None, user_col: str | None = None,
                   n_permutations: int = 0,
                   compat: str | None = None, random_state: int | None = None, n_bootstrap: int | None = None,
                   smoothing: float = 1.0, confidence: float = 0.95,
                   combined_weights: tuple[float, float] = (0.5, 0.5), max_levels: int = 50,
                   min_level_share: float = 0.005, forest_rows: int = 50_000,
                   replicate_memory_mb: float = 256.0) -> FeatureScores:
    """Score how much each feature changes which arm is best; one row per feature, one column per method.

    Columns of `.to_frame()` (those of the methods asked for): `hie` (reward per decision gained by per-bin arm
    choice, reward units), `hdd` (nats), `combined` (0..1; added whenever both hie and hdd are computed), `kl`,
    `ed`, `chi` (uplift filters against the control arm), `f`, `lr` (interaction test statistics, with analytic
    `p_f`, `p_lr`), `causal_forest` (EconML heterogeneity importance). With `n_permutations` > 0, each bin-based
    method also gets `p_<method>` (permutation p-value), `q_<method>` (Benjamini-Hochberg across features) and
    `<method>_low`/`<method>_high` (basic bootstrap interval at `confidence`, from `n_bootstrap` Poisson
    bootstrap replicates, default as many as permutations). Always present: `n_bins` (bins used, NaN bin
    included when there are NaNs) and `missing_share`.

    `user_col` names a user id column when users have several rows: permutations then give each user another
    user's features and bootstrap replicates draw whole users, the valid null and resampling unit when a user's
    rows are alike (row permutations would call user-level noise significant). A chunked table must hold each
    user's rows in one chunk for this (a user split over chunks counts as several users).
    `replicate_memory_mb` caps the replicate tables and their scoring (MB); more replicates than fit in one block
    cost more passes over the data, not more memory.

    `data` is a pandas DataFrame or a `campaign_core.ChunkedTable` with the feature, arm and reward columns (and
    the propensity column, whose values must be in (0, 1], to inverse-propensity weight the cell means).
    `features` None means every other column. `compat="causalml"` computes kl/ed/chi exactly as CausalML's
    `FilterSelect.get_importance` does (qcut bins, +1 pseudo-counts, control vs each treatment); rows with a NaN
    feature value are left out of the bins and count in the total (CausalML 0.18 refuses NaN). The same
    `random_state` and the same chunks give the same output on any scheduler.
    """
    options = _options(data, features, arm_col, reward_col, methods, n_bins, control, propensity_col, user_col,
                       n_permutations, compat, random_state, n_bootstrap, smoothing, confidence, combined_weights,
                       max_levels, min_level_share, forest_rows, replicate_memory_mb)
    _check_columns(data, options)
    columns = options.needed_columns() if is_chunked(data) else None  # a chunked table reads only these
    if columns is None:
        data = data[options.needed_columns()]
        if isinstance(data[options.arm_col].dtype, pd.StringDtype):  # hashed once here, not once per pass
            data = data.assign(**{options.arm_col: data[options.arm_col].astype("category")})
    sample_size = max(1024, SKETCH_SIZE // data.n_chunks) if is_chunked(data) else None
    plan = compute(SketchPass(options, sample_size), data, columns=columns)
    _check_method_inputs(data, plan, options)

    layout = Layout(len(plan.bins), plan.max_bins, len(plan.arms), options.n_permutations, options.n_bootstrap)
    methods = options.score_methods
    bin_methods = [m for m in methods if m in BIN_METHODS and not (options.compat and m in UPLIFT_METHODS)]
    compat_methods = [m for m in methods if options.compat and m in UPLIFT_METHODS]
    compat_bins = plan.compat_bins if compat_methods else ()
    compat_layout = Layout(len(compat_bins), max((b.n_bins for b in compat_bins), default=1), len(plan.arms),
                           options.n_permutations, options.n_bootstrap)
    layouts = (layout, compat_layout) if compat_methods else (layout,)  # both tables of a block are held at once
    plan_blocks = replicate_blocks(layouts, options, is_chunked(data), plan.rows)
    value_bins = np.array([b.n_bins - 1 for b in compat_bins])
    threads = 1 if is_chunked(data) else available_threads()  # a chunked table already runs chunks in parallel
    replicate_scores: dict[str, list[np.ndarray]] = {}
    for block in plan_blocks.blocks:
        table_pass = TablePass(plan.bins, plan, layout, options, block, plan_blocks.block_rows, threads)
        tables, block_extras = compute(table_pass, data, columns=columns)
        if block.start == 0:  # a copy: a view would keep the whole block's tables alive
            observed, extras = tables.replicate(slice(0, 1)).copy(), block_extras
        block_scores = _bin_scores(tables, bin_methods, plan, options, plan_blocks.score_block)
        if compat_methods:
            compat_tables, _ = compute(TablePass(compat_bins, plan, compat_layout, options, block,
                                                 plan_blocks.block_rows, threads), data)
            for method in compat_methods:
                block_scores[method] = _in_score_blocks(
                    compat_tables, plan_blocks.score_block,
                    lambda part, method=method: scores.causalml_filter(part, method, plan.control, value_bins))
        for method, values in block_scores.items():
            replicate_scores.setdefault(method, []).append(values)
        del tables  # before the next block's tables are built
    replicate_scores = {method: np.concatenate(parts) for method, parts in replicate_scores.items()}
    if "combined" in bin_methods:
        replicate_scores["combined"] = scores.combined(replicate_scores["hie"], replicate_scores["hdd"],
                                                       options.combined_weights)
    result = pd.DataFrame(index=pd.Index(options.features, name="feature"))
    for method in methods:
        if method in replicate_scores:
            result[method] = replicate_scores[method][0]
    if "f" in methods or "lr" in methods:
        _add_interaction_tests(result, observed, extras, plan, methods)
    if "causal_forest" in methods:
        from causal_fs.forest import causal_forest_importance

        result["causal_forest"] = causal_forest_importance(data, plan, options)
    _add_significance(result, replicate_scores, options)
    observed = observed.replicate(0)
    result["n_bins"] = [int((observed.rows[f].sum(axis=-1) > 0).sum()) for f in range(len(plan.bins))]
    result["missing_share"] = [observed.rows[f, b.missing_bin].sum() / plan.rows for f, b in enumerate(plan.bins)]
    return FeatureScores(result, tuple(plan.arms), plan.arms[plan.control], plan.rows, plan.binary_reward,
                         {b.name: b.labels() for b in plan.bins}, len(plan_blocks.blocks))


@dataclass(frozen=True)
class ReplicateBlocks:
    """How the replicates are computed: `blocks` of replicate numbers built together (one pass over the data
    each), in row blocks of at most `block_rows` rows, and scored `score_block` replicates at a time."""

    blocks: list[range]
    score_block: int
    block_rows: int


def replicate_blocks(layouts: Sequence[Layout], options: ScoringOptions, chunked: bool, rows: int
                     ) -> ReplicateBlocks:
    """As many replicates per block as fit in `options.replicate_memory_mb`: the row arrays of a row block (up to
    CHUNK_ROWS rows, within a quarter of the limit), the scoring arrays of `score_block` replicates (up to
    SCORE_BLOCK, within a quarter of the limit) and the tables of the block's replicates in every layout (held
    several times while chunks merge). Refuses, naming the knob, when not even one replicate fits."""
    layout = layouts[0]
    cell_bytes = sum(each.cells for each in layouts) * 8
    limit = options.replicate_memory_mb * 2**20
    per_score = cell_bytes * SCORE_ARRAYS
    score_block = int(max(1, min(SCORE_BLOCK, limit / 4 // per_score)))
    per_row = layout.n_features * 8 * ROW_ARRAYS
    block_rows = int(min(CHUNK_ROWS, max(MIN_BLOCK_ROWS, limit / 4 // per_row)))
    holders = MERGE_HOLDERS if chunked else TABLE_HOLDERS if rows > block_rows else 1
    per_replicate = cell_bytes * len(STATISTICS) * holders
    fixed = per_row * min(rows, block_rows) + per_score * score_block
    if fixed + per_replicate > limit:
        raise InputError(
            f"replicate_memory_mb: one replicate of {layout.n_features} features x {layout.n_bins} bins x "
            f"{layout.n_arms} arms needs {(fixed + per_replicate) / 2**20:.3g} MB, over the limit of "
            f"{options.replicate_memory_mb:g} MB; raise replicate_memory_mb, or score fewer features, bins "
            "(n_bins, max_levels) or arms")
    size = max(1, int((limit - fixed) // per_replicate))
    blocks = [range(start, min(start + size, layout.n_replicates)) for start in range(0, layout.n_replicates, size)]
    return ReplicateBlocks(blocks, score_block, block_rows)


def _options(data, features, arm_col, reward_col, methods, n_bins, control, propensity_col, user_col, n_permutations,
             compat, random_state, n_bootstrap, smoothing, confidence, combined_weights, max_levels, min_level_share,
             forest_rows, replicate_memory_mb) -> ScoringOptions:
    if isinstance(methods, str):
        methods = (methods,)
    if features is None:
        reserved = {arm_col, reward_col, propensity_col, user_col}
        features = [column for column in data.columns if column not in reserved]
    elif isinstance(features, str):
        features = (features,)
    if random_state is None:
        seed = int(np.random.SeedSequence().entropy % (1 << 63))
    elif isinstance(random_state, bool) or not isinstance(random_state, int | np.integer) or random_state < 0:
        raise InputError(f"random_state: must be None or a non-negative integer, got {random_state!r}")
    else:
        seed = int(random_state)
    return ScoringOptions(
        features=tuple(features), arm_col=arm_col, reward_col=reward_col, methods=tuple(methods), n_bins=n_bins,
        control=control, propensity_col=propensity_col, user_col=user_col, n_permutations=n_permutations,
        n_bootstrap=n_permutations if n_bootstrap is None else n_bootstrap, compat=compat, seed=seed,
        smoothing=float(smoothing), confidence=float(confidence), combined_weights=tuple(combined_weights),
        max_levels=max_levels, min_level_share=min_level_share, forest_rows=forest_rows,
        replicate_memory_mb=float(replicate_memory_mb))


def _check_columns(data: Any, options: ScoringOptions) -> None:
    """Column presence and types, from the frame's schema only (no rows read)."""
    if not isinstance(data, pd.DataFrame) and not is_chunked(data):
        raise InputError(f"data: expected a pandas DataFrame or a chunked table, got {type(data).__name__}")
    missing = [name for name in options.needed_columns() if name not in data.columns]
    if missing:
        key = "features" if missing[0] in options.features else "data"
        raise InputError(f"{key}: column {missing[0]!r} is not in the data"
                         + (f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""))
    dtypes = data.dtypes
    for name in (options.reward_col, options.propensity_col):
        if name is not None and (not pd.api.types.is_numeric_dtype(dtypes[name])
                                 or pd.api.types.is_bool_dtype(dtypes[name])):
            raise InputError(f"{name}: must be numeric, got dtype {dtypes[name]}")
    if options.compat:
        categorical = [name for name in options.features if is_categorical(dtypes[name])]
        if categorical:
            raise InputError(f"compat: CausalML's filters bin numeric features only; {categorical[0]!r} is "
                             "categorical")
        if is_chunked(data):
            raise InputError("compat: 'causalml' needs a pandas DataFrame (CausalML's exact qcut quantiles)")


def _check_method_inputs(data: Any, plan: Plan, options: ScoringOptions) -> None:
    if options.compat and any(m in UPLIFT_METHODS for m in options.score_methods):
        if not plan.binary_reward or options.propensity_col:
            raise InputError(f"compat: CausalML's filters need a 0/1 {options.reward_col} and no propensity weights")
    if "causal_forest" in options.score_methods and is_chunked(data):
        raise InputError("methods: 'causal_forest' needs a pandas DataFrame (pass a sample of the rows)")


# --- the table pass ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TablePass:
    """The second pass as a statistic: the tables of a block of replicates (`replicates`) and, in the block with
    the observed data (replicate 0), the observed data's extras for the regression filters; summed over chunks."""

    bins: tuple[FeatureBins, ...]
    plan: Plan
    layout: Layout
    options: ScoringOptions
    replicates: range
    block_rows: int = CHUNK_ROWS
    threads: int = 1  # features of the observed pass built at once

    def partial(self, chunk: pd.DataFrame) -> tuple[Tables, ObservedExtras | None]:
        """The observed data (replicate 0) is one compiled pass per feature over its column, features on threads. The
        resampled replicates are built in row blocks of at most `block_rows` rows (a user's rows stay in one
        block), so the per-row code matrices stay small; the blocks' tables are added up in place. Both sum row
        block by row block, so the numbers do not depend on which replicates share a pass."""
        starts: list[int] = list(range(0, max(len(chunk), 1), self.block_rows))
        user_words = None
        if self.options.user_col is not None:
            chunk, user_words = _grouped_by_user(chunk, self.options)
            users = Users.of_sorted(user_words)
            starts = sorted({int(users.start[np.searchsorted(users.start, start)]) for start in starts
                             if start < len(chunk)} | {0})
        stops = [*starts[1:], len(chunk)]
        tables = Tables(*(np.empty((len(self.replicates), *self.layout.shape()[1:])) for _ in STATISTICS))
        extras = None
        resampled = range(max(self.replicates.start, 1), self.replicates.stop)
        if self.replicates.start == 0:
            extras = self._observed(chunk, np.array([*starts, len(chunk)], dtype=np.int64),
                                    tables.replicate(slice(0, 1)))
        into = tables.replicate(slice(len(self.replicates) - len(resampled), None))
        for index, (start, stop) in enumerate(zip(starts, stops, strict=True)):
            if not resampled:
                break
            block = self._resampled(chunk.iloc[start:stop], None if user_words is None else user_words[start:stop],
                                    resampled, into if index == 0 else None)
            if index > 0:
                into.add_into(block)
        return tables, extras

    @staticmethod
    def merge(left: tuple[Tables, ObservedExtras | None], right: tuple[Tables, ObservedExtras | None]
              ) -> tuple[Tables, ObservedExtras | None]:
        return left[0] + right[0], None if left[1] is None else left[1] + right[1]

    @staticmethod
    def finalize(state: tuple[Tables, ObservedExtras | None]) -> tuple[Tables, ObservedExtras | None]:
        return state

    def _observed(self, chunk: pd.DataFrame, starts: np.ndarray, tables: Tables) -> ObservedExtras:
        """Fill `tables` (replicate 0 alone) with the observed tables, summed block by block over the row blocks
        `starts`; returns the observed extras of the regression filters."""
        layout, options = self.layout, self.options
        extras = ObservedExtras(np.empty((layout.n_features, layout.n_bins)), np.empty(layout.shape()[1:]))
        arms = label_codes(chunk[options.arm_col], self.plan.arms)
        reward = chunk[options.reward_col].to_numpy(dtype=np.float64)
        weight = np.zeros(0)
        if options.propensity_col is not None:
            weight = 1.0 / chunk[options.propensity_col].to_numpy(dtype=np.float64)
        binary = binary_rewards(reward)
        none_float, none_int = np.zeros(0), np.zeros(0, dtype=np.int64)

        def one_feature(f: int) -> None:
            feature = self.bins[f]
            values = chunk[feature.name]
            x, codes = (none_float, feature.codes(values)) if feature.categorical else \
                (np.ascontiguousarray(numeric_values(values)), none_int)
            observed_feature_sums(x, feature.edges, codes, feature.missing_bin, arms, reward, weight, binary, starts,
                                  *(getattr(tables, name)[0, f].reshape(-1) for name in STATISTICS),
                                  extras.x_sum[f], extras.weight_sq[f].reshape(-1))

        thread_map(one_feature, range(len(self.bins)), self.threads)
        return extras

    def _resampled(self, block: pd.DataFrame, user_words: np.ndarray | None, replicates: range,
                   out: Tables | None) -> Tables:
        """The tables of the permutation and bootstrap `replicates` on one row block (into `out` when given)."""
        options = self.options
        codes = np.empty((len(self.bins), len(block)), dtype=np.int64)
        for f, feature in enumerate(self.bins):
            codes[f] = feature.codes(block[feature.name])
        arms = label_codes(block[options.arm_col], self.plan.arms)
        reward = block[options.reward_col].to_numpy(dtype=np.float64)
        weight = None
        if options.propensity_col is not None:
            weight = 1.0 / block[options.propensity_col].to_numpy(dtype=np.float64)
        users = None if user_words is None else Users.of_sorted(user_words)
        return chunk_tables(codes, arms, reward, weight, self.layout, replicates,
                            chunk_seed(options.seed, 2, arms, reward), users, out)


def _grouped_by_user(chunk: pd.DataFrame, options: ScoringOptions) -> tuple[pd.DataFrame, np.ndarray]:
    """The chunk's rows in a canonical order, grouped by user: by the user id's word, then by a hash of the row's
    values, so the same rows give the same replicates in whatever order a shuffle delivered them."""
    user_words = id_words(chunk[options.user_col].to_numpy())
    row_hash = pd.util.hash_pandas_object(chunk[options.needed_columns()], index=False).to_numpy()
    order = np.lexsort((row_hash, user_words))
    return chunk.iloc[order], user_words[order]


# --- scores and significance ------------------------------------------------------------------------------------

def _bin_scores(tables: Tables, methods: list[str], plan: Plan, options: ScoringOptions, score_block: int
                ) -> dict[str, np.ndarray]:
    """(replicates, features) scores of every bin-based method but `combined` (which needs every replicate's hie
    and hdd: its scale is fixed by the observed scores), `score_block` replicates at a time."""
    return {method: _in_score_blocks(tables, score_block,
                                     lambda part, method=method: _method_scores(part, method, plan, options))
            for method in methods if method != "combined"}


def _in_score_blocks(tables: Tables, score_block: int, score: Callable[[Tables], np.ndarray]) -> np.ndarray:
    """`score` of every replicate, computed on `score_block` replicates at a time (bounds the scoring arrays)."""
    return np.concatenate([score(tables.replicate(slice(start, start + score_block)))
                           for start in range(0, len(tables.rows), score_block)])


def _method_scores(tables: Tables, method: str, plan: Plan, options: ScoringOptions) -> np.ndarray:
    """(replicates, features) scores of one bin-based method (hie, hdd or an uplift filter)."""
    if method == "hie":
        return scores.hie(tables, options.smoothing)
    if method == "hdd":
        return scores.hdd(tables, options.smoothing, plan.binary_reward)
    return scores.uplift_filter(tables, method, plan.control, options.smoothing, plan.binary_reward)


def _add_interaction_tests(result: pd.DataFrame, tables: Tables, extras: ObservedExtras, plan: Plan,
                           methods: tuple[str, ...]) -> None:
    observed = tables.replicate(0)
    # A weighted cell counts as its effective rows W^2 / sum(w^2) (plain rows when unweighted): IPW means,
    # precision of the rows actually seen.
    scale = np.divide(observed.weight, extras.weight_sq, out=np.zeros_like(observed.weight),
                      where=extras.weight_sq > 0)
    tests = []
    for f, feature in enumerate(plan.bins):
        size = feature.n_bins
        x_per_bin = None
        if not feature.categorical:
            present = observed.rows[f, :size - 1].sum(axis=-1)
            x_sum = extras.x_sum[f, :size - 1]
            overall = x_sum.sum() / max(present.sum(), 1.0)
            x_per_bin = np.append(np.divide(x_sum, present, out=np.full(size - 1, overall), where=present > 0),
                                  overall)
        cell_scale = scale[f, :size]
        tests.append(regression.interaction_tests(
            observed.weight[f, :size] * cell_scale, observed.wy[f, :size] * cell_scale,
            observed.wyy[f, :size] * cell_scale, x_per_bin, plan.control, plan.binary_reward))
    for position, method in enumerate(("f", "lr")):
        if method in methods:
            result[method] = [test[position].statistic for test in tests]
            result[f"p_{method}"] = [test[position].p_value for test in tests]


def _add_significance(result: pd.DataFrame, replicate_scores: dict[str, np.ndarray], options: ScoringOptions
                      ) -> None:
    first_bootstrap = 1 + options.n_permutations
    for method, values in replicate_scores.items():
        if options.n_permutations:
            p_values = permutation_p_values(values[0], values[1:first_bootstrap])
            result[f"p_{method}"] = p_values
            result[f"q_{method}"] = benjamini_hochberg(p_values)
        if options.n_bootstrap:
            low, high = basic_interval(values[0], values[first_bootstrap:], options.confidence)
            if method == "hie":  # HIE >= 0 by definition: the reflected interval is cut at 0
                low, high = np.maximum(low, 0.0), np.maximum(high, 0.0)
            result[f"{method}_low"], result[f"{method}_high"] = low, high
