"""What `fit-bandit` and `evaluate-policy` share: the decision-log columns, the user split and the feature list.

Both stages split users the same way, by a salted hash of `user_id` (salt derived from the job seed), and their
defaults keep evaluation honest: `fit-bandit` fits on `split: train` (the users outside the holdout) and
`evaluate-policy` evaluates on `split: holdout`. A policy records the split it was fitted on, and `evaluate-policy`
takes the other side of that split as its holdout, so the two never share a user whatever the job seeds. Evaluating
on rows the policy learned from (`split: all` or `split: train` in evaluate-policy) flatters it: it is done only when
the config says so, and then warned about.

With `user_id: null` the split is by a salted hash of each row's content (see `pipelines.user_split`), with a
warning that one user's rows may land on both sides.

When `features` is not given, the contexts are the features select-features selected in the same job, else every
column `pipelines.feature_columns.choose_features` keeps (no ids, timestamps or the log's own columns).
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Literal

from pydantic import Field

from campaign_core import InputError
from pipelines.feature_columns import FeatureChoice, choose_features
from pipelines.stages.log_columns import LogSection
from pipelines.stages.registry import StageContext
from pipelines.user_split import ROW_SPLIT_NOTE, RowSplitWarning, UserSplit, split_salt

#: Columns of the decision log that are never contexts.
NOT_FEATURES = ["user_id", "day", "cost", "randomized"]

Split = Literal["all", "train", "holdout"]


class BanditLogConfig(LogSection):
    """Decision-log columns, the feature list and the user split, shared by the two bandit stages."""

    propensity: str | None = Field("propensity", description="logging propensity column")
    user_id: str | None = Field("user_id", description="user id column, for the user split and the cross-fitting "
                                                       "folds (none: split by row, with a warning)")
    features: list[str] | None = Field(None, description="raw feature columns (none: the features selected by "
                                                         "select-features in the same job, else every column "
                                                         "that is not an id, a timestamp or the log's own)")
    exclude: list[str] = Field(NOT_FEATURES, description="columns never used as features when `features` is none")
    split: Split = Field(description="which users' rows to use (each stage sets its honest default)")
    holdout_share: float = Field(0.2, gt=0, lt=1, description="share of users held out (by a hash of user_id)")

    retired_keys: ClassVar[dict[str, str]] = {
        "data": "the decision log is `logs`",
        "users": "the user split is `split: train|holdout|all` (`users` names a users table)"}
    required_roles: ClassVar[tuple[str, ...]] = ("user_id", "arm", "reward", "propensity")


def user_split(config: BanditLogConfig, context: StageContext, columns: list[str]) -> UserSplit:
    """The stage's side of the job's user split; by row over every column of the log (`columns`) without a user
    id."""
    return UserSplit(config.split, split_salt(context.seed), config.holdout_share, config.user_id,
                     () if config.user_id else tuple(columns))


def read_columns(config: BanditLogConfig, split: UserSplit, *features: str) -> list[str]:
    """The log columns a bandit stage reads, each once: its role columns, the split's, then the features."""
    return list(dict.fromkeys([*(name for name in config.log_roles().values() if name), *split.columns, *features]))


def warn_row_split(stage: str) -> None:
    """Warn that, without a user id column, rows of one user may land on both sides of the split (and folds)."""
    warnings.warn(f"{stage}: {ROW_SPLIT_NOTE}", RowSplitWarning, stacklevel=3)


def log_features(config: BanditLogConfig, logs) -> FeatureChoice:
    """The default features of the log (`logs`: a table or its schema): every column that is not an id, a timestamp,
    the arm, reward, propensity, user id or an excluded column."""
    return choose_features(logs, roles=config.log_roles(), exclude=config.exclude)


def resolve_features(config: BanditLogConfig, context: StageContext, logs) -> FeatureChoice:
    """Explicit features, else what select-features selected in this job, else the log's default features."""
    if config.features:
        choice = choose_features(logs, config.features)
    elif "select-features" in context.results and context.results["select-features"].data.get("selected"):
        choice = FeatureChoice(tuple(context.results["select-features"].data["selected"]),
                               source="select-features in this job")
    else:
        choice = log_features(config, logs)
    missing = [name for name in choice.taken if name not in logs.columns]
    if missing:
        raise InputError(f"features: columns not in {config.logs}: {missing}")
    if not choice.taken:
        raise InputError(f"features: no feature columns to use as contexts in {config.logs} "
                         f"(skipped: {', '.join(name for name, _, _ in choice.skipped) or 'none'})")
    return choice
