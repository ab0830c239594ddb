"""Stage `evaluate-policy`: estimate a policy's value from the decision log by off-policy evaluation, with intervals.

The same two statistics as `bandits.evaluate`, run over the log's partitions: (1) `RewardModelPass`, the cross-fitted
ridge reward model (folds by a salted hash of user_id, so a user's rows never predict themselves; by default on every
feature of the log, since a logger that targeted on features the policy ignores confounds a model without them);
(2) `OffPolicyPass`, the sums of every estimator. Memory is a few matrices and sums however many rows, and on the
same rows the numbers equal `bandits.evaluate`'s.

By default (`split: holdout`) it evaluates on the users the policy never saw: the other side of the split recorded
with the policy (fit-bandit's default `split: train`). A policy fitted on every user has no holdout: that is an input
error naming the two ways out. `split: all` or `split: train` evaluates on rows the policy learned from; saying so
in the config is the consent, and the stage then warns (`InSampleEvaluationWarning`), flags it in the summary table
and tags the run `campaign.in_sample_evaluation=true`: in-sample estimates flatter the policy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import Field

from bandits.encoding import ContextEncoder
from bandits.feedback import LogReader
from bandits.ope import DEFAULT_ESTIMATORS, ESTIMATORS, EstimatorSettings, EvaluationReader, OffPolicyPass
from bandits.ope.evaluate import (
    NEEDS_REWARD_MODEL,
    PoorOverlapWarning,
    RewardModelPass,
    check_estimators,
    overlap_warnings,
)
from pipelines.config import ConfigPath
from pipelines.errors import InputError
from pipelines.execution import OnRows, run_statistic
from pipelines.feature_columns import FeatureChoice, choose_features
from pipelines.io import write_csv
from pipelines.models import FittedPolicy, load_fitted_policy
from pipelines.stages.bandit_data import (
    BanditLogConfig,
    Split,
    log_features,
    read_columns,
    user_split,
    warn_row_split,
)
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.tables import read_table
from pipelines.user_split import UserSplit

IN_SAMPLE_TAG = "campaign.in_sample_evaluation"


class InSampleEvaluationWarning(UserWarning):
    """The policy is evaluated on rows of users it learned from: the estimates flatter it."""


class EvaluatePolicyConfig(BanditLogConfig):
    out: ConfigPath = Field(description="OPE table (CSV): one row per estimator")
    split: Split = Field("holdout", description="which users' rows to evaluate on (default: holdout, the users the "
                                                "policy never saw; all or train evaluate in-sample, with a warning)")
    policy: ConfigPath | None = Field(None, description="policy model folder written by fit-bandit "
                                                        "(none: the policy fitted by fit-bandit in this job)")
    estimators: list[str] = Field(list(DEFAULT_ESTIMATORS), description="of: " + ", ".join(ESTIMATORS))
    reward_features: list[str] | None = Field(None, description="features of the reward model (none: every feature "
                                                                "column of the log, not only the policy's)")
    n_folds: int = Field(5, ge=2, description="cross-fitting folds of the reward model")
    l2: float = Field(1.0, gt=0, description="ridge penalty of the reward model")
    clip: float | None = Field(None, gt=0, description="IPS weight clip (none: no clipping)")
    switch_threshold: float = Field(10.0, gt=0, description="Switch-DR weight threshold")
    shrinkage: float = Field(10.0, gt=0, description="DR shrinkage lambda")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")

    retired_keys: ClassVar[dict[str, str]] = {
        **BanditLogConfig.retired_keys,
        "truth": "synthetic campaigns are scored against their truth automatically"}


def _demo(inputs: DemoInputs) -> dict:
    return {"logs": str(inputs.campaign_dir / "logs"), "out": str(inputs.out_dir / "policy_value.csv")}


def _fitted_policy(context: StageContext, config: EvaluatePolicyConfig) -> FittedPolicy:
    if config.policy is not None:
        return load_fitted_policy(config.policy)
    if "fit-bandit" in context.results:
        return context.results["fit-bandit"].data["fitted"]
    raise InputError("evaluate-policy: no policy: set `policy` to a model folder written by fit-bandit")


def evaluation_split(config: EvaluatePolicyConfig, context: StageContext, fitted: FittedPolicy,
                     columns: list[str]) -> tuple[UserSplit, bool]:
    """The users evaluated and whether the policy learned from some of them (in-sample).

    holdout: the other side of the policy's training split (an input error when it was fitted on every user);
    train: the users it was fitted on; all: every row. The log's `columns` are the row key of a split by row.
    """
    holdout = fitted.holdout  # None when the policy was fitted on every user
    if config.split == "holdout":
        if holdout is None:
            raise InputError("evaluate-policy: the policy was fitted on every user (split: all), so no user is held "
                             "out from it; refit it with `split: train`, or evaluate in-sample with `split: all`")
        missing = [name for name in holdout.columns if name not in columns]
        if missing:
            raise InputError(f"evaluate-policy: the policy's holdout is defined by columns not in {config.logs}: "
                             f"{missing}")
        return holdout, False
    if config.split == "train" and holdout is not None:
        return fitted.training_split, True
    return user_split(config, context, columns), True


def estimates_figure(table: pd.DataFrame, true_value: float | None = None) -> Figure:
    """Each estimator's value with its interval, the logging policy's value and (when known) the true value."""
    figure = Figure(figsize=(6.5, 0.45 * len(table) + 1.5))
    axis = figure.subplots()
    y = np.arange(len(table))
    errors = np.vstack([table["value"] - table["ci_low"], table["ci_high"] - table["value"]])
    axis.errorbar(table["value"], y, xerr=errors, fmt="o", capsize=4, color="tab:blue")
    axis.set_yticks(y, table["estimator"])
    logged_value = float(table["logged_value"].iloc[0])
    axis.axvline(logged_value, color="tab:gray", linestyle=":", label=f"logging policy {logged_value:.4f}")
    if true_value is not None:
        axis.axvline(true_value, color="tab:red", linestyle="--", label=f"true value {true_value:.4f}")
    axis.set_xlabel("policy value (mean reward per decision)")
    axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    return figure


@dataclass(frozen=True)
class Evaluation:
    """One policy's OPE on a log: the estimates table (one row per estimator), the rows' split and whether the policy
    learned from them, the reward model's feature choice and the overlap warnings."""

    table: pd.DataFrame
    split: UserSplit
    in_sample: bool
    choice: FeatureChoice
    messages: list[str]


def checked_estimators(config: EvaluatePolicyConfig, stage: str) -> tuple[str, ...]:
    """The configured estimators; one-line InputErrors for an unknown one and for logs without propensities."""
    estimators = check_estimators(config.estimators)
    if not config.propensity:
        raise InputError(f"{stage}: off-policy evaluation needs the propensity column")
    return estimators


def off_policy_evaluation(context: StageContext, config: EvaluatePolicyConfig, fitted: FittedPolicy, *,
                          rows_of: FittedPolicy | None = None, stage: str = "evaluate-policy",
                          part: tuple[float, str, bool] | None = None) -> Evaluation:
    """OPE of `fitted` on the rows `config.split` picks for `rows_of` (default: `fitted`; the holdout of another
    policy compares two policies on the same users), with the estimators, reward model and intervals of `config`.
    `part` (share, salt, held): only the share of those users held back by a second salted hash, or the rest."""
    estimators = checked_estimators(config, stage)
    logs = read_table(config.logs, config.log_schema())
    missing = [name for name in fitted.features if name not in logs.columns]
    if missing:
        raise InputError(f"{stage}: the policy's features are not in {config.logs}: {missing}")
    choice = (choose_features(logs, config.reward_features) if config.reward_features
              else log_features(config, logs))
    reward_features = list(choice.taken)
    unknown = [name for name in reward_features if name not in logs.columns]
    if unknown:
        raise InputError(f"{stage}.reward_features: columns not in {config.logs}: {unknown}")
    split, in_sample = evaluation_split(config, context, rows_of or fitted, list(logs.columns))
    if part is not None:
        split = split.held_back(*part)
    if config.user_id is None or (split.side != "all" and split.user_id is None):
        warn_row_split(stage)
    logs = logs[read_columns(config, split, *fitted.features, *reward_features)]
    seed = context.stage_seed("evaluate-policy")
    # The reward model's encoder is fitted on the first partition (a chunk of users like any other).
    reward_encoder = ContextEncoder(reward_features).fit(logs.partitions[0].compute())
    log_columns = config.log_roles()
    read = EvaluationReader(LogReader(fitted.encoder, tuple(fitted.arms), **log_columns), reward_encoder)
    coefficients = None
    if any(name in NEEDS_REWARD_MODEL for name in estimators):
        # The reward model sees only its own contexts: read the chunk's feedback with the reward model's encoder.
        reward_read = EvaluationReader(LogReader(reward_encoder, tuple(fitted.arms), **log_columns))
        reward_model = RewardModelPass(len(fitted.arms), config.n_folds, seed, config.l2, read=reward_read)
        coefficients = run_statistic(OnRows(reward_model, split.rows), logs)
    settings = EstimatorSettings(config.clip, config.switch_threshold, config.shrinkage)
    estimate = OffPolicyPass(estimators, fitted.policy, coefficients, config.n_folds, seed, settings,
                             config.confidence, read=read)
    table = run_statistic(OnRows(estimate, split.rows), logs)
    if int(table["n_rounds"].iloc[0]) == 0:
        raise InputError(f"{stage}: no rows for split={config.split!r} in {config.logs}")
    return Evaluation(table, split, in_sample, choice, overlap_warnings(table))


@register_stage("evaluate-policy", EvaluatePolicyConfig, order=40, demo=_demo)
def evaluate_policy(context: StageContext, config: EvaluatePolicyConfig) -> StageResult:
    """Estimate a policy's value from logged decisions (IPS, SNIPS, DM, DR, Switch-DR, DR-shrink, replay)."""
    checked_estimators(config, "evaluate-policy")
    fitted = _fitted_policy(context, config)
    evaluation = off_policy_evaluation(context, config, fitted)
    table, split, in_sample, choice, messages = (evaluation.table, evaluation.split, evaluation.in_sample,
                                                 evaluation.choice, evaluation.messages)
    n_rows = int(table["n_rounds"].iloc[0])
    for message in messages:
        warnings.warn(message, PoorOverlapWarning, stacklevel=2)
    if in_sample:
        warnings.warn(f"evaluate-policy: split: {config.split} evaluates the policy on rows of users it learned "
                      f"from; these estimates flatter it (the honest default is split: holdout)",
                      InSampleEvaluationWarning, stacklevel=2)
    write_csv(table, config.out, index=False)

    logged_value = float(table["logged_value"].iloc[0])
    metrics = {"rows": n_rows, "effective_sample_size": float(table["effective_sample_size"].iloc[0]),
               "logging_policy_value": logged_value}
    for _, row in table.iterrows():
        for key in ("value", "se", "ci_low", "ci_high"):
            metrics[f"{row['estimator']}.{key}"] = float(row[key])
    context.log.params({"split_salt": split.salt, "split_holdout_share": split.holdout_share})
    context.log.tags({IN_SAMPLE_TAG: str(in_sample).lower()})
    choice.record(context.log, "reward_feature_columns")
    context.log.metrics(metrics)
    context.log.table(table, "policy_value", index=False)
    if messages:
        context.log.text("\n".join(messages) + "\n", "overlap_warnings.txt")
    context.log.figure(estimates_figure(table), "policy_value")
    headline = table.set_index("estimator")
    best = "dr" if "dr" in headline.index else headline.index[0]
    summary = {f"{best} value": f"{headline.loc[best, 'value']:.4f} ± {headline.loc[best, 'se']:.4f}",
               "logging policy": f"{logged_value:.4f}", "rows": f"{n_rows} ({split.describe()})",
               "reward features": choice.summary()}
    if in_sample:
        summary["IN-SAMPLE"] = "evaluated on rows the policy learned from: estimates flatter it"
    return StageResult(summary=summary, outputs={"estimates": config.out},
                       data={"estimates": table, "fitted": fitted, "split": split, "logs": config.logs,
                             "in_sample": in_sample})
