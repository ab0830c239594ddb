"""Stage `fit-bandit`: learn a contextual bandit policy from the decision log and save it as an MLflow pyfunc model.

Linear policies are a map-reduce over the log's partitions (per-arm ridge statistics, `bandits.LinearStats`), so
they fit on logs of any size with the memory of a few d x d matrices per arm. Context-free and neural policies fit
in memory on at most `max_rows_in_memory` rows (a seeded sample beyond that). The context encoder is fitted on a
seeded sample of `encoder_rows` rows. The model folder at `out` and the model logged to the stage's MLflow run both
take a DataFrame of raw feature columns and return `arm`, `propensity` and every arm's probability.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from bandits import (
    UCB1,
    ContextEncoder,
    EpsilonGreedy,
    LinearStats,
    LinEpsilonGreedy,
    LinTS,
    LinUCB,
    LoggedFeedback,
    NeuralTS,
    ThompsonSampling,
)
from bandits.feedback import sorted_labels
from bandits.policies.linear import LinearPolicy
from pipelines.config import ConfigPath
from pipelines.errors import InputError
from pipelines.execution import tree_reduce
from pipelines.io import atomic_output
from pipelines.models import FittedPolicy, log_policy_model, save_policy_model
from pipelines.stages.bandit_data import BanditLogConfig, resolve_features, select_users
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.tables import read_table

POLICIES = {"lin-ts": LinTS, "lin-ucb": LinUCB, "lin-epsilon-greedy": LinEpsilonGreedy,
            "epsilon-greedy": EpsilonGreedy, "ucb1": UCB1, "thompson": ThompsonSampling, "neural-ts": NeuralTS}


class FitBanditConfig(BanditLogConfig):
    out: ConfigPath = Field(description="policy model folder (MLflow pyfunc format; replaced atomically)")
    policy: Literal[tuple(POLICIES)] = Field("lin-ts", description="policy: " + ", ".join(POLICIES))  # type: ignore
    params: dict[str, Any] = Field({}, description="policy hyperparameters (e.g. {alpha: 0.5, l2: 1.0})")
    weight_by_propensity: bool = Field(False, description="weight rows by 1/(K propensity) when learning")
    encoder_rows: int = Field(200_000, ge=100, description="rows sampled to fit the context encoder")
    max_rows_in_memory: int = Field(1_000_000, ge=100, description="rows for policies fitted in memory "
                                                                   "(context-free, neural); a seeded sample beyond")


def _demo(inputs: DemoInputs) -> dict:
    return {"data": str(inputs.campaign_dir / "logs"), "out": str(inputs.out_dir / "policy"),
            "policy": "lin-ts", "params": {"alpha": 0.3}, "users": "train"}


def build_policy(config: FitBanditConfig, seed: int):
    """The configured policy; unknown hyperparameters are one-line errors naming them."""
    cls = POLICIES[config.policy]
    allowed = set(cls().get_params()) - {"arms", "weight_by_propensity"}
    unknown = sorted(set(config.params) - allowed)
    if unknown:
        raise InputError(f"fit-bandit.params: unknown hyperparameters {unknown} for {config.policy} "
                         f"(allowed: {sorted(allowed)})")
    params = dict(config.params)
    if "random_state" in allowed:
        params.setdefault("random_state", seed)
    return cls(**params, weight_by_propensity=config.weight_by_propensity)


def _count_and_arms(chunk: pd.DataFrame, config: FitBanditConfig) -> tuple[int, frozenset]:
    chunk = select_users(chunk, config)
    return len(chunk), frozenset(pd.unique(chunk[config.arm]).tolist())


def _merge_count_and_arms(left: tuple[int, frozenset], right: tuple[int, frozenset]) -> tuple[int, frozenset]:
    return left[0] + right[0], left[1] | right[1]


def _feedback(chunk: pd.DataFrame, config: FitBanditConfig, encoder: ContextEncoder, arms: list) -> LoggedFeedback:
    return LoggedFeedback.from_frame(chunk, encoder, arm=config.arm, reward=config.reward,
                                     propensity=config.propensity, user_id=config.user_id, arms=arms)


def _linear_statistics(chunk: pd.DataFrame, config: FitBanditConfig, encoder: ContextEncoder, arms: list,
                       policy: LinearPolicy) -> LinearStats:
    chunk = select_users(chunk, config)
    if len(chunk) == 0:
        return LinearStats.zeros(len(arms), len(encoder.feature_names_out_) + int(policy.fit_intercept))
    feedback = _feedback(chunk, config, encoder, arms)
    weights = 1.0 / (len(arms) * feedback.propensities) if config.weight_by_propensity else None  # as row_weights
    return LinearStats.partial(feedback.contexts, feedback.arms, feedback.rewards, len(arms),
                               weights=weights, fit_intercept=policy.fit_intercept)


@register_stage("fit-bandit", FitBanditConfig, order=30, demo=_demo)
def fit_bandit(context: StageContext, config: FitBanditConfig) -> StageResult:
    """Fit a contextual bandit policy on the decision log and save it as an MLflow pyfunc model."""
    seed = context.stage_seed("fit-bandit")
    policy = build_policy(config, seed)
    if config.weight_by_propensity and not config.propensity:
        raise InputError("fit-bandit: weight_by_propensity needs the propensity column")
    logs = read_table(config.data, config.schema())
    features = resolve_features(config, context, list(logs.columns))
    columns = list(dict.fromkeys([config.user_id, config.arm, config.reward,
                                  *([config.propensity] if config.propensity else []), *features]))
    logs = logs[columns]
    started = time.perf_counter()
    n_rows, arm_set = tree_reduce(logs, lambda chunk: _count_and_arms(chunk, config), _merge_count_and_arms)
    if n_rows == 0:
        raise InputError(f"fit-bandit: no rows for users={config.users!r} in {config.data}")
    arms = list(sorted_labels(arm_set))
    if len(arms) < 2:
        raise InputError(f"{config.arm}: the logs have {len(arms)} arm(s) {arms}; a bandit needs at least 2")
    sample = logs.sample(frac=min(1.0, config.encoder_rows / n_rows), random_state=seed).compute()
    encoder = ContextEncoder(features).fit(sample)
    if isinstance(policy, LinearPolicy):
        stats = tree_reduce(logs, lambda chunk: _linear_statistics(chunk, config, encoder, arms, policy),
                            LinearStats.merge)
        policy.fit_statistics(stats, arms, list(encoder.feature_names_out_))
    else:
        frame = logs.sample(frac=min(1.0, config.max_rows_in_memory / n_rows), random_state=seed + 1) \
            if n_rows > config.max_rows_in_memory else logs
        frame = select_users(frame.compute(), config)
        policy.fit(_feedback(frame, config, encoder, arms))
    fit_seconds = time.perf_counter() - started
    fitted = FittedPolicy(encoder, policy)
    with atomic_output(config.out) as temporary:
        save_policy_model(fitted, temporary, sample)
    model_uri = log_policy_model(fitted, "policy", sample)

    context.log.params({"context_features": ",".join(features), "encoded_features": len(encoder.feature_names_out_),
                        "arms": ",".join(map(str, arms))})
    context.log.metrics({"training_rows": n_rows, "fit_seconds": fit_seconds})
    context.log.text("\n".join(encoder.feature_names_out_) + "\n", "encoded_features.txt")
    return StageResult(summary={"policy": config.policy, "training rows": n_rows, "features": ", ".join(features)},
                       outputs={"policy": config.out},
                       data={"fitted": fitted, "model_uri": model_uri, "features": features})
