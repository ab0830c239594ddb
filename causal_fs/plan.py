"""The first pass over the data: validate the columns' values and learn the arms and every feature's bins.

It is a statistic (`SketchPass`: `sketch_chunk`, `merge_data_sketches`, `make_plan`), so a chunked table is
checked and summarised chunk by chunk; all value errors are raised from `make_plan`, before any score is
computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from campaign_core import InputError, chunk_generator, sorted_labels
from campaign_core.parallel import available_threads, thread_map
from causal_fs.binning import (
    FeatureBins,
    FeatureSketch,
    compat_bins,
    feature_bins,
    level_counts,
    merge_sketches,
    sketch_feature,
)
from causal_fs.options import ScoringOptions


@dataclass
class DataSketch:
    """Counts and sketches of one chunk (or of several merged): what `make_plan` needs."""

    rows: int
    arm_counts: pd.Series
    missing_arms: int
    bad_rewards: int
    non_binary_rewards: int
    bad_propensities: int
    missing_users: int
    features: list[FeatureSketch] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """What the table pass needs: the arms (labels in code order), the control, the bins of every feature."""

    arms: tuple
    control: int
    binary_reward: bool
    bins: tuple[FeatureBins, ...]
    rows: int
    compat_bins: tuple[FeatureBins, ...] = ()  # CausalML's qcut bins, with `compat`

    @property
    def max_bins(self) -> int:
        return max(feature.n_bins for feature in self.bins)


def sketch_chunk(chunk: pd.DataFrame, options: ScoringOptions, sample_size: int | None) -> DataSketch:
    """The sketch of one chunk; numeric features keep `sample_size` values (None: the data is in memory, exact
    quantiles, the features on threads)."""
    arms = chunk[options.arm_col]
    reward = chunk[options.reward_col].to_numpy(dtype=np.float64, na_value=np.nan)
    rng = chunk_generator(options.seed, 1, arms, reward)
    finite = np.isfinite(reward)
    bad_propensities = 0
    if options.propensity_col is not None:
        propensity = chunk[options.propensity_col].to_numpy(dtype=np.float64, na_value=np.nan)
        bad_propensities = int((~((propensity > 0) & (propensity <= 1))).sum())
    return DataSketch(
        rows=len(chunk),
        arm_counts=level_counts(arms),
        missing_arms=int(arms.isna().sum()),
        bad_rewards=int((~finite).sum()),
        non_binary_rewards=int((finite & (reward != 0) & (reward != 1)).sum()),
        bad_propensities=bad_propensities,
        missing_users=int(chunk[options.user_col].isna().sum()) if options.user_col else 0,
        features=thread_map(lambda name: sketch_feature(chunk[name], options.n_bins, sample_size, rng,
                                                        options.compat is not None),
                            options.features, available_threads() if sample_size is None else 1),
    )


def merge_data_sketches(left: DataSketch, right: DataSketch, n_bins: int) -> DataSketch:
    return DataSketch(
        rows=left.rows + right.rows,
        arm_counts=left.arm_counts.add(right.arm_counts, fill_value=0),
        missing_arms=left.missing_arms + right.missing_arms,
        bad_rewards=left.bad_rewards + right.bad_rewards,
        non_binary_rewards=left.non_binary_rewards + right.non_binary_rewards,
        bad_propensities=left.bad_propensities + right.bad_propensities,
        missing_users=left.missing_users + right.missing_users,
        features=[merge_sketches(a, b, n_bins) for a, b in zip(left.features, right.features, strict=True)],
    )


@dataclass(frozen=True)
class SketchPass:
    """The first pass as a statistic: a chunk's counts and value sketches, merged; finalized into the `Plan`."""

    options: ScoringOptions
    sample_size: int | None  # values kept per numeric feature and chunk (None: all, exact quantiles)

    def partial(self, chunk: pd.DataFrame) -> DataSketch:
        return sketch_chunk(chunk, self.options, self.sample_size)

    def merge(self, left: DataSketch, right: DataSketch) -> DataSketch:
        return merge_data_sketches(left, right, self.options.n_bins)

    def finalize(self, sketch: DataSketch) -> Plan:
        return make_plan(sketch, self.options)


def make_plan(sketch: DataSketch, options: ScoringOptions) -> Plan:
    """Check the values (one-line ValueError naming the column and the count) and fix arms and bins."""
    if sketch.rows == 0:
        raise InputError("data: no rows")
    if sketch.missing_arms:
        raise InputError(f"{options.arm_col}: {sketch.missing_arms} of {sketch.rows} rows have no arm")
    arms = sorted_labels(sketch.arm_counts.index)
    if len(arms) < 2:
        raise InputError(f"{options.arm_col}: needs at least 2 arms to compare, found {len(arms)} ({list(arms)})")
    if sketch.bad_rewards:
        raise InputError(f"{options.reward_col}: {sketch.bad_rewards} of {sketch.rows} rows are NaN or infinite")
    if sketch.bad_propensities:
        raise InputError(f"{options.propensity_col}: {sketch.bad_propensities} of {sketch.rows} rows are outside "
                         f"(0, 1] or missing")
    for name, feature in zip(options.features, sketch.features, strict=True):
        if feature.present == 0:
            raise InputError(f"{name}: every value is missing (all {sketch.rows} rows are NaN)")
    control = _control_index(arms, options)
    bins = tuple(feature_bins(name, feature, options.n_bins, max_levels=options.max_levels,
                              min_level_share=options.min_level_share)
                 for name, feature in zip(options.features, sketch.features, strict=True))
    compat = tuple(compat_bins(name, feature) for name, feature in zip(options.features, sketch.features, strict=True)
                   if feature.qcut_edges is not None)
    return Plan(arms=arms, control=control, binary_reward=sketch.non_binary_rewards == 0, bins=bins, rows=sketch.rows,
                compat_bins=compat)


def _control_index(arms: tuple, options: ScoringOptions) -> int:
    """The control arm: the one named, else an arm labelled "control", else the first arm in label order."""
    if options.control is not None:
        matches = [i for i, arm in enumerate(arms) if arm == options.control or str(arm) == str(options.control)]
        if not matches:
            raise InputError(f"control: arm {options.control!r} is not in {options.arm_col} (arms: {list(arms)})")
        return matches[0]
    return next((i for i, arm in enumerate(arms) if str(arm) == "control"), 0)
