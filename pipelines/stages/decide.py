"""Stage `decide`: today's decisions from the deployed policy, the version the registry's `champion` alias marks.

For every user of the day's table (user_id and the policy's feature columns) it draws one arm from the champion
and writes `user_id, arm, propensity, decision_key, model_version`: what the campaign system serves and what the
next day's logs record (the propensity is the probability the arm was drawn with, for off-policy evaluation).
Each draw hashes (user_id, decision key); the key is the run date of a dated job (else today's date), so a rerun of
a day gives the same decisions and the next day fresh ones. The table is written partition by partition.

A champion that is a mixed allocation policy (`constrained-rl` with `model_name`) decides from the table's `day`
and state columns, and each user keeps one component for the whole campaign: the key is the campaign's own draw
(the user id alone) unless `decision_key` names one, and `arm` is the incentive level.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from pydantic import Field

from pipelines.config import ConfigPath, StageConfig
from pipelines.errors import InputError
from pipelines.io import atomic_output
from pipelines.models import FittedMixedPolicy, FittedPolicy, load_fitted, today_key
from pipelines.stages.promote import CHAMPION, champion_version
from pipelines.stages.registry import StageContext, StageResult, register_stage
from pipelines.tables import LABEL, Column, Schema, read_table


class DecideConfig(StageConfig):
    users: ConfigPath = Field(description="the day's users (parquet or CSV): user_id and the policy's features")
    out: ConfigPath = Field(description="decisions (parquet folder, replaced atomically)")
    model_name: str = Field(min_length=1, description="registered model name in the MLflow Model Registry")
    alias: str = Field(CHAMPION, min_length=1, description="the alias of the version to serve")
    decision_key: str | None = Field(None, description="the key hashed with each user id (none: the run date)")

    def check_ready(self) -> None:
        """A registered model whose champion alias is gone is refused before any stage runs."""
        champion_version(mlflow.MlflowClient(), self.model_name, self.alias)

    def input_tables(self) -> dict:
        return {self.users: Schema("users", required=(Column("user_id", LABEL),))}


def _decisions(block: pd.DataFrame, fitted: FittedPolicy | FittedMixedPolicy, key: str | None,
               version: str) -> pd.DataFrame:
    drawn = fitted.decide(block, decision_key=key)
    arm = drawn["action"] if isinstance(fitted, FittedMixedPolicy) else drawn["arm"]
    text = {"arm": arm.astype(str).to_numpy(), "decision_key": [key or ""] * len(block),
            "model_version": [version] * len(block)}
    return pd.DataFrame({"user_id": block["user_id"].to_numpy(), "propensity": drawn["propensity"].to_numpy(),
                         **{name: pd.array(values, dtype="string") for name, values in text.items()}}
                        )[["user_id", "arm", "propensity", "decision_key", "model_version"]]


@register_stage("decide", DecideConfig, order=46)
def decide(context: StageContext, config: DecideConfig) -> StageResult:
    """Draw today's arm for every user from the champion policy in the model registry."""
    version = champion_version(mlflow.MlflowClient(), config.model_name, config.alias)
    if version is None:
        raise InputError(f"model_name: no version of {config.model_name!r} is champion yet (none registered, or none "
                         f"has beaten the logging policy): the logging policy still decides")
    fitted = load_fitted(f"models:/{config.model_name}/{version.version}")
    users = read_table(config.users, config.input_tables()[config.users])
    mixed = isinstance(fitted, FittedMixedPolicy)
    features = ["day", *fitted.state_columns] if mixed else fitted.features
    missing = [name for name in features if name not in users.columns]
    if missing:
        raise InputError(f"users: the champion's features are not in {config.users}: {missing}")
    key = config.decision_key
    if not key and not mixed:  # a bandit draws afresh each day; a mixed policy keeps the campaign's own draw
        key = context.date.isoformat() if context.date else today_key()
    frame = users[["user_id", *features]]
    meta = _decisions(frame._meta, fitted, key, str(version.version))
    decisions = frame.map_partitions(_decisions, fitted, key, str(version.version), meta=meta)
    with atomic_output(config.out) as temporary:
        decisions.to_parquet(temporary, write_index=False)
    counts = pd.read_parquet(config.out, columns=["arm"])["arm"].value_counts()
    context.log.params({"model_name": config.model_name, "model_version": version.version,
                        "decision_key": key or "the campaign's own draw"})
    context.log.metrics({"users": float(counts.sum()), **{f"share.{arm}": n / counts.sum()
                                                          for arm, n in counts.items()}})
    return StageResult(summary={"served": f"{config.model_name} version {version.version} ({config.alias})",
                                "users": f"{int(counts.sum())}", "decision key": key or "the campaign's own draw"},
                       outputs={"decisions": config.out}, data={"version": str(version.version)})
