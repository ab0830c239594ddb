"""What `fit-bandit` and `evaluate-policy` share: the decision-log columns, the user split and the feature list.

Both stages split users the same way, by a salted hash of `user_id` (salt derived from the job seed): `split: train`
fits on the users outside the holdout, `split: holdout` evaluates on the others. A policy fitted on `train` records
the split's salt and share, and `evaluate-policy` uses them for its holdout, so the two never share a user whatever
the job seeds. Evaluating a policy on the rows it learned from flatters it, so the demo fits on `train` and evaluates
on `holdout`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from campaign_core import InputError
from pipelines.stages.log_columns import LogSection
from pipelines.stages.registry import StageContext
from pipelines.user_split import UserSplit, split_salt

#: Columns of the decision log that are never contexts.
NOT_FEATURES = ["user_id", "day", "cost", "randomized"]


class BanditLogConfig(LogSection):
    """Decision-log columns, the feature list and the user split, shared by the two bandit stages."""

    propensity: str | None = Field("propensity", description="logging propensity column")
    user_id: str = Field("user_id", description="user id column (for the user split and cross-fitting folds)")
    features: list[str] | None = Field(None, description="raw feature columns (none: the features selected by "
                                                         "select-features in the same job, else every other column)")
    exclude: list[str] = Field(NOT_FEATURES, description="columns never used as features when `features` is none")
    split: Literal["all", "train", "holdout"] = Field("all", description="which users' rows to use")
    holdout_share: float = Field(0.2, gt=0, lt=1, description="share of users held out (by a hash of user_id)")

    retired_keys: ClassVar[dict[str, str]] = {
        "data": "the decision log is `logs`",
        "users": "the user split is `split: train|holdout|all` (`users` names a users table)"}
    required_roles: ClassVar[tuple[str, ...]] = ("user_id", "arm", "reward")


def user_split(config: BanditLogConfig, context: StageContext) -> UserSplit:
    """The stage's side of the job's user split."""
    return UserSplit(config.split, split_salt(context.seed), config.holdout_share, config.user_id)


def log_features(config: BanditLogConfig, columns: list[str]) -> list[str]:
    """Every column of the log that is not the arm, reward, propensity, user id or an excluded column."""
    reserved = {config.arm, config.reward, config.propensity, config.user_id, *config.exclude}
    return [column for column in columns if column not in reserved]


def resolve_features(config: BanditLogConfig, context: StageContext, columns: list[str]) -> list[str]:
    """Explicit features, else what select-features selected in this job, else every non-reserved column."""
    if config.features:
        features = list(config.features)
    elif "select-features" in context.results and context.results["select-features"].data.get("selected"):
        features = list(context.results["select-features"].data["selected"])
    else:
        features = log_features(config, columns)
    missing = [name for name in features if name not in columns]
    if missing:
        raise InputError(f"features: columns not in {config.logs}: {missing}")
    if not features:
        raise InputError("features: no feature columns to use as contexts")
    return features
