"""What `fit-bandit` and `evaluate-policy` share: the decision-log contract, the user split and the feature list.

Both stages split users the same way, by a seeded hash of `user_id`: `users: train` fits on the users outside the
holdout, `users: holdout` evaluates on the others. Evaluating a policy on the rows it learned from flatters it, so
the demo fits on `train` and evaluates on `holdout`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from pipelines.config import ConfigPath, StageConfig
from pipelines.errors import InputError
from pipelines.stages.registry import StageContext
from pipelines.tables import LABEL, NUMERIC, Column, Schema

#: Columns of the decision log that are never contexts.
NOT_FEATURES = ["user_id", "day", "cost", "randomized"]
SPLIT_KEY = "campaign-user-split"


class BanditLogConfig(StageConfig):
    """Decision-log columns and the user split, shared by the two bandit stages."""

    data: ConfigPath = Field(description="decision log (parquet file or folder)")
    arm: str = Field("arm", description="arm column")
    reward: str = Field("reward", description="reward column")
    propensity: str | None = Field("propensity", description="logging propensity column")
    user_id: str = Field("user_id", description="user id column (for the user split and cross-fitting folds)")
    features: list[str] | None = Field(None, description="raw feature columns (none: the features selected by "
                                                         "select-features in the same job, else every other column)")
    exclude: list[str] = Field(NOT_FEATURES, description="columns never used as features when `features` is none")
    users: Literal["all", "train", "holdout"] = Field("all", description="which users' rows to use")
    holdout_share: float = Field(0.2, gt=0, lt=1, description="share of users held out (by a hash of user_id)")

    def schema(self) -> Schema:
        optional = ()
        if self.propensity:
            optional = (Column(self.propensity, NUMERIC, low=0.0, low_inclusive=False, high=1.0),)
        return Schema("data", required=(Column(self.user_id, LABEL), Column(self.arm, LABEL),
                                        Column(self.reward, NUMERIC), *optional))

    def input_tables(self) -> dict:
        return {self.data: self.schema()}


def in_holdout(user_ids: pd.Series | np.ndarray, share: float) -> np.ndarray:
    """True for the users in the holdout: a fixed hash of the id, the same in every stage, partition and run."""
    hashed = pd.util.hash_array(np.asarray(user_ids), hash_key=SPLIT_KEY[:16])
    return (hashed % np.uint64(1_000_000)) < np.uint64(round(share * 1_000_000))


def user_mask(chunk: pd.DataFrame, config: BanditLogConfig) -> np.ndarray:
    """True for the chunk's rows of the users the stage works on."""
    if config.users == "all":
        return np.ones(len(chunk), dtype=bool)
    holdout = in_holdout(chunk[config.user_id].to_numpy(), config.holdout_share)
    return holdout if config.users == "holdout" else ~holdout


def select_users(chunk: pd.DataFrame, config: BanditLogConfig) -> pd.DataFrame:
    """The chunk's rows of the users the stage works on."""
    return chunk if config.users == "all" else chunk[user_mask(chunk, config)]


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
        raise InputError(f"features: columns not in {config.data}: {missing}")
    if not features:
        raise InputError("features: no feature columns to use as contexts")
    return features
