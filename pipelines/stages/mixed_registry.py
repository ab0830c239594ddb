"""The constrained-RL mixed policy in the MLflow Model Registry: champion and challenger on held-out users.

With `model_name`, `constrained-rl` learns its mixed policy on the training side of a salted hash of the user id
and keeps the other side (`holdout_share` of the users) for the comparison: FQE of the challenger's components and
of the champion's (the version the alias marks) on the held-out users' transitions, with the same bootstrap
replicates of those users, and what the logs' own policy bought and spent per user there. The challenger is
registered as a new version; the alias moves to it only when its value's lower bound (2.5th percentile of the
bootstrap) is above the champion's value on the same users. The first version becomes champion: the logs' policy
keeps to no budget, so its return is reported beside the challenger's, not used as a bar. The estimates a version is
tagged with (`fqe.value`, `fqe.value_ci_low`, `fqe.value_ci_high`, `fqe.spend`) are out-of-sample: the challenger
never learned from those users.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd

from pipelines.errors import InputError
from pipelines.models import FittedMixedPolicy, load_fitted
from pipelines.stages.promote import champion_version, crown, register_version


@dataclass(frozen=True)
class DeployedMixed:
    """The champion's version and its mixed policy."""

    version: str
    fitted: FittedMixedPolicy


def deployed_mixed(name: str, alias: str, actions: list, state_columns: list[str]) -> DeployedMixed | None:
    """The mixed policy the alias marks (None while no version has been champion); InputError when it decides over
    other actions or states than these transitions have (it cannot be evaluated on them)."""
    version = champion_version(mlflow.MlflowClient(), name, alias)
    if version is None:
        return None
    fitted = load_fitted(f"models:/{name}/{version.version}", (FittedMixedPolicy,))
    if [str(a) for a in fitted.actions] != [str(a) for a in actions] or fitted.state_columns != state_columns:
        raise InputError(f"model_name: the champion (version {version.version} of {name!r}) decides over actions "
                         f"{fitted.actions} and states {fitted.state_columns[:3]}..., these transitions have "
                         f"{actions} and {state_columns[:3]}...: register under a new model name")
    return DeployedMixed(str(version.version), fitted)


@dataclass(frozen=True)
class HoldoutComparison:
    """Per user of the held-out side, over the campaign: each policy's FQE value and spend, the challenger's
    bootstrap interval of its value, and the logged return (the logs' own policy)."""

    users: int
    challenger: tuple[float, float]  # (value, spend)
    challenger_interval: tuple[float, float]  # value, 2.5th and 97.5th percentiles of the bootstrap
    champion: tuple[float, float] | None
    logged: tuple[float, float]  # (return, spend) per user of the logs' own policy

    @classmethod
    def of(cls, weights: np.ndarray, estimates: np.ndarray, replicates: np.ndarray, champion_weights: np.ndarray,
           users: int, logged: tuple[float, float]) -> HoldoutComparison:
        """From the FQE (value, spend) of every component, the challenger's first (`estimates` (components, 2),
        `replicates` (components, bootstrap, 2)); `champion_weights` those of the champion's components after them
        (empty: no champion)."""
        k = len(weights)
        mixture = np.tensordot(weights, replicates[:k], axes=1)
        low, high = np.percentile(mixture[:, 0], [2.5, 97.5])
        champion = (tuple(float(x) for x in champion_weights @ estimates[k:]) if len(champion_weights) else None)
        return cls(users, tuple(float(x) for x in weights @ estimates[:k]), (float(low), float(high)), champion,
                   logged)

    def promoted(self) -> tuple[bool, str]:
        """Whether the challenger wins, and the rule in words."""
        if self.champion is None:
            return True, (f"the first version of the model (value {self.challenger[0]:.4f} at spend "
                          f"{self.challenger[1]:.4f}; the logs bought {self.logged[0]:.4f} at spend "
                          f"{self.logged[1]:.4f}) on {self.users:,} held-out users")
        won = self.challenger_interval[0] > self.champion[0]
        return won, (f"challenger value lower bound {self.challenger_interval[0]:.4f} {'>' if won else '<='} "
                     f"champion value {self.champion[0]:.4f} on {self.users:,} held-out users")

    def to_frame(self) -> pd.DataFrame:
        rows = [{"policy": "challenger", "value": self.challenger[0], "spend": self.challenger[1],
                 "ci_low": self.challenger_interval[0], "ci_high": self.challenger_interval[1]}]
        if self.champion is not None:
            rows.append({"policy": "champion", "value": self.champion[0], "spend": self.champion[1],
                         "ci_low": np.nan, "ci_high": np.nan})
        rows.append({"policy": "logging", "value": self.logged[0], "spend": self.logged[1], "ci_low": np.nan,
                     "ci_high": np.nan})
        return pd.DataFrame(rows)


def register_mixed(model_uri: str, name: str, alias: str, comparison: HoldoutComparison,
                   champion: DeployedMixed | None, budget: float) -> dict:
    """Register the logged mixed policy as a new version, tag it with its held-out estimates, and move the alias
    when it wins; what was decided, for the stage's run and summary."""
    client = mlflow.MlflowClient()
    registered = register_version(model_uri, name)
    promoted, rule = comparison.promoted()
    tags = {"fqe.value": comparison.challenger[0], "fqe.spend": comparison.challenger[1],
            "fqe.value_ci_low": comparison.challenger_interval[0],
            "fqe.value_ci_high": comparison.challenger_interval[1], "budget_per_user": budget}
    for key, value in tags.items():
        client.set_model_version_tag(name, registered.version, key, f"{value:.6g}")
    if promoted:
        crown(client, name, alias, registered.version)
    deployed = registered.version if promoted else None if champion is None else champion.version
    return {"version": str(registered.version), "promoted": promoted, "rule": rule,
            "champion": None if deployed is None else str(deployed)}
