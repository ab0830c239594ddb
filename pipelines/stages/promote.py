"""Stage `promote`: champion and challenger in the MLflow Model Registry.

The challenger (the policy fit-bandit fitted in this job, or `policy:`) is registered as a new version of
`model_name`. The champion is the version the `champion` alias marks (what `decide` serves). Both are evaluated by
off-policy evaluation on the same rows: the challenger's holdout users (`split: holdout`, the default), with the
same estimators, reward model and intervals as `evaluate-policy`. The alias moves to the challenger only when its
lower confidence bound (of `estimator`, default DR) is above the champion's estimate; both estimates, the rule
and the decision are logged, and each version is tagged with its estimate. Until a version has been champion the
incumbent is the logging policy (`incumbent: logging`, its mean logged reward on the same rows): a challenger that
does not beat it is registered but not deployed, and the logs' own policy keeps deciding.

The rule reads an estimate it picked the challenger for, so that estimate runs high when the challenger won (the
winner's curse: a challenger whose holdout happened to flatter it is the one promoted). `confirmation_share` of the
holdout users (half by default) are therefore held back from the decision: the comparison runs on the rest, and
the estimate and interval reported for each version (the `confirmed_*` columns, the version tags and what a
promotion is later checked against) come from the held-back users alone. A registered model whose
champion alias is gone (its version was deleted) is refused: a person sets the alias again (docs/operations.md,
'Rollback').
"""

from __future__ import annotations

import contextlib
import io
from typing import Literal

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from pydantic import Field

from campaign_core import seeded_salt
from pipelines.config import ConfigPath
from pipelines.errors import InputError
from pipelines.io import write_csv
from pipelines.models import FittedPolicy, load_fitted_policy, log_policy_model
from pipelines.stages.evaluate_policy import EvaluatePolicyConfig, checked_estimators, off_policy_evaluation
from pipelines.stages.registry import StageContext, StageResult, register_stage

CHAMPION = "champion"
#: Tags of a version that has been champion, and of a registered model that has had one (a model without it is
#: still on its logs' policy; with it and no alias, the champion's version was deleted).
WAS_CHAMPION, HAD_CHAMPION = "campaign.was_champion", "campaign.had_champion"


class PromoteConfig(EvaluatePolicyConfig):
    out: ConfigPath = Field(description="comparison table (CSV): one row per policy (challenger, champion)")
    model_name: str = Field(min_length=1, description="registered model name in the MLflow Model Registry")
    estimator: str = Field("dr", description="the estimator whose interval the promotion rule reads")
    alias: str = Field(CHAMPION, min_length=1, description="the alias that marks the deployed version")
    confirmation_share: float = Field(
        0.5, ge=0.0, lt=1.0, description="share of the holdout users held back from the decision: the reported "
                                         "estimates come from them, unbiased by the choice (0: decide and report on "
                                         "the same rows)")
    incumbent: Literal["logging", "none"] = Field(
        "logging", description="what a model without a champion yet is compared with: the logging policy (its mean "
                               "logged reward on the same rows; the logs' policy stays deployed until a version "
                               "beats it) or nothing (the first version becomes champion)")

    def check_ready(self) -> None:
        """A registered model whose champion alias is gone is refused before any stage runs."""
        champion_version(mlflow.MlflowClient(), self.model_name, self.alias)


def _challenger(context: StageContext, config: PromoteConfig) -> tuple[FittedPolicy, str]:
    """The challenger and a model URI to register it from: fit-bandit's logged model of this job, or `policy`
    logged again in this stage's run (a folder cannot be registered as it is)."""
    if config.policy is not None:
        fitted = load_fitted_policy(config.policy)
        example = pd.DataFrame(columns=fitted.features)
        return fitted, log_policy_model(fitted, "challenger", example)
    if "fit-bandit" in context.results:
        result = context.results["fit-bandit"]
        return result.data["fitted"], result.data["model_uri"]
    raise InputError("promote: no challenger: set `policy` to a model folder written by fit-bandit, or run "
                     "fit-bandit in the same job")


def champion_version(client: mlflow.MlflowClient, name: str, alias: str):
    """The model version the alias marks; None while no version has been champion (a model not registered yet, or
    whose versions never beat the logging policy). InputError when a version was champion but none holds the alias
    now (the champion's version was deleted, or the alias removed)."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return None
    if alias in model.aliases:
        return client.get_model_version(name, model.aliases[alias])
    if HAD_CHAMPION not in model.tags:
        return None
    numbers = sorted(int(version.version) for version in client.search_model_versions(f"name = '{name}'"))
    raise InputError(f"model_name: {name!r} has versions {numbers} but no version holds the alias {alias!r} (its "
                     f"version was deleted?); set it again (docs/operations.md, 'Rollback')")


def _estimate(evaluation, estimator: str) -> pd.Series:
    table = evaluation.table.set_index("estimator")
    if estimator not in table.index:
        raise InputError(f"promote.estimator: {estimator!r} is not among the estimators {list(table.index)}")
    return table.loc[estimator]


def register_version(model_uri: str, name: str):
    """Register a logged model as a new version of `name` (MLflow's own notes of it silenced: the summary says)."""
    with contextlib.redirect_stderr(io.StringIO()):
        return mlflow.register_model(model_uri, name)


def crown(client: mlflow.MlflowClient, name: str, alias: str, version) -> None:
    """Move the alias to `version`, and mark the version and the model as having had a champion (`champion_version`
    then tells a deleted champion from none yet)."""
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, WAS_CHAMPION, "true")
    client.set_registered_model_tag(name, HAD_CHAMPION, "true")


def _row(context: StageContext, config: PromoteConfig, fitted: FittedPolicy, rows_of: FittedPolicy, role: str,
         version: str | None) -> dict:
    """One policy's estimate on the decision rows, and the one reported for it (on the held-back rows)."""
    share = config.confirmation_share
    salt = seeded_salt("promote-confirmation", context.stage_seed("promote"))
    decided = _estimate(off_policy_evaluation(context, config, fitted, rows_of=rows_of, stage="promote",
                                              part=(share, salt, False) if share > 0 else None), config.estimator)
    confirmed = decided if share == 0 else _estimate(
        off_policy_evaluation(context, config, fitted, rows_of=rows_of, stage="promote", part=(share, salt, True)),
        config.estimator)
    return {"policy": role, "version": version, "estimator": config.estimator, "value": float(decided["value"]),
            "se": float(decided["se"]), "ci_low": float(decided["ci_low"]), "ci_high": float(decided["ci_high"]),
            "rows": int(decided["n_rounds"]), "logged_value": float(decided["logged_value"]),
            **{f"confirmed_{key}": float(confirmed[key]) for key in ("value", "se", "ci_low", "ci_high")},
            "confirmed_rows": int(confirmed["n_rounds"])}


@register_stage("promote", PromoteConfig, order=45)
def promote(context: StageContext, config: PromoteConfig) -> StageResult:
    """Register the challenger and move the champion alias to it when its lower confidence bound beats the
    champion's estimate on the same holdout rows."""
    checked_estimators(config, "promote")
    if config.estimator not in config.estimators:
        raise InputError(f"promote.estimator: {config.estimator!r} is not among the estimators {config.estimators}")
    client = mlflow.MlflowClient()
    champion = champion_version(client, config.model_name, config.alias)  # refused before any work
    challenger, uri = _challenger(context, config)
    rows = [_row(context, config, challenger, challenger, "challenger", None)]
    if champion is not None:
        deployed = load_fitted_policy(f"models:/{config.model_name}/{champion.version}")
        rows.append(_row(context, config, deployed, challenger, "champion", str(champion.version)))
    registered = register_version(uri, config.model_name)
    rows[0]["version"] = str(registered.version)
    if champion is not None:
        against, incumbent = rows[1]["value"], "champion estimate"
    elif config.incumbent == "logging":
        against, incumbent = rows[0]["logged_value"], "the logging policy's mean reward"
    else:
        against, incumbent = -np.inf, ""
    promoted = rows[0]["ci_low"] > against
    rule = ("the first version of the model" if not incumbent else
            f"challenger {config.estimator} lower bound {rows[0]['ci_low']:.4f} "
            f"{'>' if promoted else '<='} {incumbent} {against:.4f}")
    for row in rows:
        for key in ("value", "ci_low", "ci_high"):
            client.set_model_version_tag(config.model_name, row["version"], f"ope.{config.estimator}.{key}",
                                         f"{row[f'confirmed_{key}']:.6g}")
    if promoted:
        crown(client, config.model_name, config.alias, registered.version)
    table = pd.DataFrame(rows)
    write_csv(table, config.out, index=False)
    context.log.params({"model_name": config.model_name, "challenger_version": registered.version,
                        "champion_version": None if champion is None else champion.version, "rule": rule})
    context.log.params({"confirmation_share": config.confirmation_share})
    context.log.metrics({f"{row['policy']}.{prefix}{key}": row[f"{prefix}{key}"] for row in rows
                         for prefix in ("", "confirmed_") for key in ("value", "ci_low", "ci_high")}
                        | {"promoted": float(promoted)})
    context.log.table(table, "promotion", index=False)
    deployed = (registered.version if promoted else None if champion is None else champion.version)
    summary = {"decision": f"{'promoted' if promoted else 'kept'}: {rule}",
               f"{config.alias}": ("the logging policy (no version has beaten it yet)" if deployed is None
                                   else f"{config.model_name} version {deployed}")}
    return StageResult(summary=summary, outputs={"comparison": config.out},
                       data={"promoted": promoted, "table": table, "version": str(registered.version),
                             "champion": None if deployed is None else str(deployed)})
