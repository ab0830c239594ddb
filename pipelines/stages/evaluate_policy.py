"""Stage `evaluate-policy`: estimate a policy's value from the decision log by off-policy evaluation, with intervals.

Two mergeable passes over the log's partitions: (1) per-fold per-arm ridge statistics for the cross-fitted reward
model (folds by a seeded hash of user_id, so a user's rows never predict themselves; by default on every feature of
the log, since a logger that targeted on features the policy ignores confounds a model without them); (2) the OPE
sums of every estimator (`bandits.ope.ope_partial`). Memory is a few matrices and sums however many rows. When the
log comes from the synthetic generator (`truth`: its row-aligned truth/logs with mu_<arm>), the true value of the
policy on the same rows is computed in the same pass and every interval is checked against it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import Field

from bandits.encoding import ContextEncoder
from bandits.feedback import encode_arms
from bandits.ope import DEFAULT_ESTIMATORS, ESTIMATORS, EstimatorSettings, OPEStats, finalize, ope_partial
from bandits.ope.evaluate import NEEDS_REWARD_MODEL, PoorOverlapWarning, check_estimators, overlap_warnings
from bandits.ope.reward_model import fold_of, ridge_fold_coefficients, ridge_fold_statistics, ridge_predict
from bandits.policies.base import sample_from
from bandits.policies.linear import LinearStats
from pipelines.config import ConfigPath
from pipelines.errors import InputError
from pipelines.execution import tree_reduce
from pipelines.io import write_csv
from pipelines.models import FittedPolicy, load_fitted_policy
from pipelines.stages.bandit_data import BanditLogConfig, log_features, user_mask
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.tables import NUMERIC, Column, Schema, read_row_aligned, read_table


class EvaluatePolicyConfig(BanditLogConfig):
    out: ConfigPath = Field(description="OPE table (CSV): one row per estimator")
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
    truth: ConfigPath | None = Field(None, description="row-aligned truth logs with mu_<arm> (synthetic data; "
                                                       "none: found automatically when this job generated the log)")


def _demo(inputs: DemoInputs) -> dict:
    return {"data": str(inputs.campaign_dir / "logs"), "out": str(inputs.out_dir / "policy_value.csv"),
            "users": "holdout"}


def _fitted_policy(context: StageContext, config: EvaluatePolicyConfig) -> FittedPolicy:
    if config.policy is not None:
        return load_fitted_policy(config.policy)
    if "fit-bandit" in context.results:
        return context.results["fit-bandit"].data["fitted"]
    raise InputError("evaluate-policy: no policy: set `policy` to a model folder written by fit-bandit")


class _Pass:
    """The per-partition work of both passes, as picklable state for the workers."""

    def __init__(self, config: EvaluatePolicyConfig, fitted: FittedPolicy, seed: int,
                 reward_encoder: ContextEncoder):
        self.config, self.fitted, self.seed, self.reward_encoder = config, fitted, seed, reward_encoder
        self.estimators = tuple(config.estimators)
        self.needs_model = any(name in NEEDS_REWARD_MODEL for name in self.estimators)
        self.coefficients: np.ndarray | None = None

    def _rows(self, chunk: pd.DataFrame, truth: pd.DataFrame | None = None):
        keep = user_mask(chunk, self.config)  # positional: truth is row-aligned with the chunk
        chunk = chunk[keep]
        truth = None if truth is None else truth[keep]
        arms = encode_arms(chunk[self.config.arm].to_numpy(), self.fitted.arms, self.config.arm)
        folds = fold_of(chunk[self.config.user_id].to_numpy(), self.config.n_folds, self.seed)
        return chunk, truth, arms, folds

    def reward_statistics(self, chunk: pd.DataFrame) -> list[LinearStats]:
        chunk, _, arms, folds = self._rows(chunk)
        rewards = chunk[self.config.reward].to_numpy(dtype=np.float64)
        return ridge_fold_statistics(self.reward_encoder.transform(chunk), arms, rewards, folds,
                                     len(self.fitted.arms), self.config.n_folds)

    def ope_statistics(self, chunk: pd.DataFrame, truth: pd.DataFrame | None = None
                       ) -> tuple[OPEStats, float, int, float]:
        """OPE sums, the sum of true policy values (0 without truth), rows, and the logged rewards' sum."""
        chunk, truth, arms, folds = self._rows(chunk, truth)
        target = self.fitted.probabilities(chunk)
        rows = np.arange(len(chunk))
        q = None if self.coefficients is None else ridge_predict(self.reward_encoder.transform(chunk), folds,
                                                                 self.coefficients)
        replay = None
        if "replay" in self.estimators:
            first = int(chunk[self.config.user_id].iloc[0]) if len(chunk) and pd.api.types.is_integer_dtype(
                chunk[self.config.user_id]) else 0
            replay = sample_from(target, np.random.default_rng([self.seed, first, len(chunk)])) == arms
        settings = EstimatorSettings(self.config.clip, self.config.switch_threshold, self.config.shrinkage)
        rewards = chunk[self.config.reward].to_numpy(dtype=np.float64)
        stats = ope_partial(self.estimators, rewards,
                            target[rows, arms], chunk[self.config.propensity].to_numpy(dtype=np.float64),
                            q_logged=None if q is None else q[rows, arms],
                            q_target=None if q is None else (target * q).sum(axis=1), replay_match=replay,
                            settings=settings)
        true_sum = 0.0
        if truth is not None:
            mu = truth[[f"mu_{arm}" for arm in self.fitted.arms]].to_numpy(dtype=np.float64)
            true_sum = float((target * mu).sum())
        return stats, true_sum, len(chunk), float(rewards.sum())


def _merge_fold_stats(left: list[LinearStats], right: list[LinearStats]) -> list[LinearStats]:
    return [a + b for a, b in zip(left, right, strict=True)]


def _merge_ope(left: tuple, right: tuple) -> tuple:
    return tuple(a + b for a, b in zip(left, right, strict=True))


def estimates_figure(table: pd.DataFrame, true_value: float | None, logged_value: float) -> Figure:
    """Each estimator's value with its interval; the true value (when known) and the logging policy's value."""
    figure = Figure(figsize=(6.5, 0.45 * len(table) + 1.5))
    axis = figure.subplots()
    y = np.arange(len(table))
    errors = np.vstack([table["value"] - table["ci_low"], table["ci_high"] - table["value"]])
    axis.errorbar(table["value"], y, xerr=errors, fmt="o", capsize=4, color="tab:blue")
    axis.set_yticks(y, table["estimator"])
    axis.axvline(logged_value, color="tab:gray", linestyle=":", label=f"logging policy {logged_value:.4f}")
    if true_value is not None:
        axis.axvline(true_value, color="tab:red", linestyle="--", label=f"true value {true_value:.4f}")
    axis.set_xlabel("policy value (mean reward per decision)")
    axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    return figure


@register_stage("evaluate-policy", EvaluatePolicyConfig, order=40, demo=_demo)
def evaluate_policy(context: StageContext, config: EvaluatePolicyConfig) -> StageResult:
    """Estimate a policy's value from logged decisions (IPS, SNIPS, DM, DR, Switch-DR, DR-shrink, replay)."""
    check_estimators(config.estimators)
    if not config.propensity:
        raise InputError("evaluate-policy: off-policy evaluation needs the propensity column")
    fitted = _fitted_policy(context, config)
    logs = read_table(config.data, config.schema())
    missing = [name for name in fitted.features if name not in logs.columns]
    if missing:
        raise InputError(f"evaluate-policy: the policy's features are not in {config.data}: {missing}")
    reward_features = config.reward_features or log_features(config, list(logs.columns))
    unknown = [name for name in reward_features if name not in logs.columns]
    if unknown:
        raise InputError(f"evaluate-policy.reward_features: columns not in {config.data}: {unknown}")
    columns = list(dict.fromkeys([config.user_id, config.arm, config.reward, config.propensity, *fitted.features,
                                  *reward_features]))
    logs = logs[columns]
    truth_path = context.generated_truth(config.data, config.truth)
    data = logs
    if truth_path is not None:
        truth_columns = [f"mu_{arm}" for arm in fitted.arms]
        read_table(truth_path, _truth_schema(fitted.arms), columns=truth_columns)  # validates
        data = read_row_aligned([config.data, truth_path], [columns, truth_columns])
    seed = context.stage_seed("evaluate-policy")
    # The reward model's encoder is fitted on the first partition (a chunk of users like any other).
    reward_encoder = ContextEncoder(reward_features).fit(logs.partitions[0].compute())
    work = _Pass(config, fitted, seed, reward_encoder)
    if work.needs_model:
        fold_stats = tree_reduce(logs, work.reward_statistics, _merge_fold_stats)
        work.coefficients = ridge_fold_coefficients(fold_stats, config.l2)
    stats, true_sum, n_rows, reward_sum = tree_reduce(data, work.ope_statistics, _merge_ope)
    if n_rows == 0:
        raise InputError(f"evaluate-policy: no rows for users={config.users!r} in {config.data}")
    table = finalize(stats, config.confidence)
    logged_value = reward_sum / n_rows
    true_value = true_sum / n_rows if truth_path is not None else None
    if true_value is not None:
        table["true_value"] = true_value
        table["covers_truth"] = (table["ci_low"] <= true_value) & (true_value <= table["ci_high"])
    messages = overlap_warnings(table)
    for message in messages:
        warnings.warn(message, PoorOverlapWarning, stacklevel=2)
    write_csv(table, config.out, index=False)

    metrics = {"rows": n_rows, "effective_sample_size": float(table["effective_sample_size"].iloc[0]),
               "logging_policy_value": logged_value}
    for _, row in table.iterrows():
        for key in ("value", "se", "ci_low", "ci_high"):
            metrics[f"{row['estimator']}.{key}"] = float(row[key])
    if true_value is not None:
        metrics["true_value"] = true_value
        metrics["intervals_covering_truth"] = int(table["covers_truth"].sum())
    context.log.metrics(metrics)
    context.log.table(table, "policy_value", index=False)
    if messages:
        context.log.text("\n".join(messages) + "\n", "overlap_warnings.txt")
    context.log.figure(estimates_figure(table, true_value, logged_value), "policy_value")
    headline = table.set_index("estimator")
    best = "dr" if "dr" in headline.index else headline.index[0]
    summary = {f"{best} value": f"{headline.loc[best, 'value']:.4f} ± {headline.loc[best, 'se']:.4f}",
               "logging policy": f"{logged_value:.4f}"}
    if true_value is not None:
        summary["true value"] = f"{true_value:.4f}"
    return StageResult(summary=summary, outputs={"estimates": config.out},
                       data={"estimates": table, "true_value": true_value})


def _truth_schema(arms: list) -> Schema:
    return Schema("truth", required=tuple(Column(f"mu_{arm}", NUMERIC, low=0.0, high=1.0) for arm in arms))
