"""Stage `fit-bandit`: learn a contextual bandit policy from the decision log and save it as an MLflow pyfunc model.

By default it learns from `split: train`, the users outside the holdout (`holdout_share`, by a salted hash of
the user id), and records that split with the policy so `evaluate-policy` evaluates on the users it never saw.
Linear policies are a statistic over the log's partitions (`bandits.policies.linear.LinearPass`: per-arm ridge
statistics, the same code as `LinearPolicy.fit`), so they fit on logs of any size with the memory of a few d x d
matrices per arm. Context-free and neural policies fit
in memory on at most `max_rows_in_memory` rows (a seeded sample beyond that). The context encoder is fitted on a
seeded sample of `encoder_rows` rows. The model folder at `out` and the model logged to the stage's MLflow run both
take a DataFrame of raw feature columns and return `arm`, `propensity` and every arm's probability.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from bandits import (
    UCB1,
    ContextEncoder,
    EpsilonGreedy,
    LinEpsilonGreedy,
    LinTS,
    LinUCB,
    NeuralTS,
    ThompsonSampling,
)
from bandits.feedback import LogReader
from bandits.policies.linear import LinearPass, LinearPolicy
from campaign_core import StatisticOf, sorted_labels
from pipelines.config import ConfigPath
from pipelines.errors import InputError
from pipelines.execution import OnRows, run_statistic
from pipelines.io import atomic_output
from pipelines.models import FittedPolicy, load_fitted_policy, log_policy_model, save_policy_model
from pipelines.stages.bandit_data import (
    BanditLogConfig,
    Split,
    read_columns,
    resolve_features,
    user_split,
    warn_row_split,
)
from pipelines.stages.registry import DemoInputs, StageContext, StageResult, register_stage
from pipelines.tables import read_table

POLICIES = {"lin-ts": LinTS, "lin-ucb": LinUCB, "lin-epsilon-greedy": LinEpsilonGreedy,
            "epsilon-greedy": EpsilonGreedy, "ucb1": UCB1, "thompson": ThompsonSampling, "neural-ts": NeuralTS}


class FitBanditConfig(BanditLogConfig):
    out: ConfigPath = Field(description="policy model folder (MLflow pyfunc format; replaced atomically)")
    split: Split = Field("train", description="which users' rows to learn from (default: train, the users outside "
                                              "the holdout, so that evaluate-policy can evaluate on the others)")
    policy: Literal[tuple(POLICIES)] = Field("lin-ts", description="policy: " + ", ".join(POLICIES))  # type: ignore
    params: dict[str, Any] = Field({}, description="policy hyperparameters (e.g. {alpha: 0.5, l2: 1.0})")
    weight_by_propensity: bool = Field(False, description="weight rows by 1/(K propensity) when learning")
    encoder_rows: int = Field(200_000, ge=100, description="rows sampled to fit the context encoder")
    max_rows_in_memory: int = Field(1_000_000, ge=100, description="rows for policies fitted in memory "
                                                                   "(context-free, neural); a seeded sample beyond")
    warm_start: str | None = Field(None, description="continue from an earlier policy: 'previous' (this dated "
                                                     "job's policy of its latest earlier date with a finished run) or "
                                                     "a policy model folder or MLflow model URI; the earlier "
                                                     "policy's encoder, arms and kind are kept")
    forgetting: float = Field(1.0, gt=0, le=1, description="linear policies, with warm_start: the earlier "
                                                           "statistics count forgetting^(days since its date) (1: "
                                                           "all of them, the same model as one fit on every day)")


    def reads_earlier_runs(self) -> bool:
        return self.warm_start == "previous"


def _demo(inputs: DemoInputs) -> dict:
    return {"logs": str(inputs.campaign_dir / "logs"), "out": str(inputs.out_dir / "policy"),
            "policy": "lin-ts", "params": {"alpha": 0.3}}


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


def _earlier_policy(context: StageContext, config: FitBanditConfig, policy) -> tuple[FittedPolicy, int] | None:
    """(the earlier policy to continue from, days since it) for `warm_start`; one-line InputErrors when there is
    none, when it is another kind of policy, or when `forgetting` is asked of a policy that is not linear."""
    if config.warm_start is None:
        if config.forgetting != 1.0:
            raise InputError("fit-bandit.forgetting: applies to a warm start; set warm_start too")
        return None
    days = 1
    source = config.warm_start
    if source == "previous":
        if context.earlier is None:
            raise InputError("fit-bandit.warm_start: 'previous' needs a dated run (--date or date:)")
        found = context.earlier.latest_stage("fit-bandit")
        if found is None:
            raise InputError(f"fit-bandit.warm_start: no finished run of this job before {context.date.isoformat()} "
                             f"to start from; run that date without warm_start first")
        day, params = found
        source, days = params.get("out", ""), (context.date - day).days
        if not Path(source).exists():
            raise InputError(f"fit-bandit.warm_start: the policy of {day.isoformat()} ({source}) is gone")
    earlier = load_fitted_policy(source)
    if type(earlier.policy) is not type(policy):
        raise InputError(f"fit-bandit.warm_start: {source} holds a {type(earlier.policy).__name__}, not the "
                         f"configured {config.policy}")
    if config.forgetting != 1.0 and not isinstance(policy, LinearPolicy):
        raise InputError(f"fit-bandit.forgetting: applies to linear policies, not {config.policy}")
    return earlier, days


def _rows_and_arms(chunk: pd.DataFrame, arm: str) -> tuple[int, frozenset]:
    return len(chunk), frozenset(pd.unique(chunk[arm]).tolist())


def _merge_rows_and_arms(left: tuple[int, frozenset], right: tuple[int, frozenset]) -> tuple[int, frozenset]:
    return left[0] + right[0], left[1] | right[1]


@register_stage("fit-bandit", FitBanditConfig, order=30, demo=_demo)
def fit_bandit(context: StageContext, config: FitBanditConfig) -> StageResult:
    """Fit a contextual bandit policy on the decision log and save it as an MLflow pyfunc model."""
    seed = context.stage_seed("fit-bandit")
    policy = build_policy(config, seed)
    if config.weight_by_propensity and not config.propensity:
        raise InputError("fit-bandit: weight_by_propensity needs the propensity column")
    logs = read_table(config.logs, config.log_schema())
    choice = resolve_features(config, context, logs)
    earlier = _earlier_policy(context, config, policy)
    features = list(choice.taken) if earlier is None else earlier[0].features
    split = user_split(config, context, list(logs.columns))
    if split.side != "all" and split.user_id is None:
        warn_row_split("fit-bandit")
    logs = logs[read_columns(config, split, *features)]
    started = time.perf_counter()
    counting = StatisticOf(functools.partial(_rows_and_arms, arm=config.arm), _merge_rows_and_arms)
    n_rows, arm_set = run_statistic(OnRows(counting, split.rows), logs)
    if n_rows == 0:
        raise InputError(f"fit-bandit: no rows for split={config.split!r} in {config.logs}")
    arms = list(sorted_labels(arm_set))
    if len(arms) < 2:
        raise InputError(f"{config.arm}: the logs have {len(arms)} arm(s) {arms}; a bandit needs at least 2")
    sample = logs.sample(frac=min(1.0, config.encoder_rows / n_rows), random_state=seed).compute()
    if earlier is not None:
        (start, days), encoder = earlier, earlier[0].encoder
        unknown = sorted(set(map(str, arms)) - set(map(str, start.arms)))
        if unknown:
            raise InputError(f"{config.arm}: arms {unknown} are not in the earlier policy's arms {start.arms}; fit "
                             f"without warm_start")
        arms = start.arms
    else:
        encoder = ContextEncoder(features).fit(sample)
    read = LogReader(encoder, tuple(arms), arm=config.arm, reward=config.reward, propensity=config.propensity,
                     user_id=config.user_id)
    if isinstance(policy, LinearPolicy):
        learning = LinearPass(len(arms), len(encoder.feature_names_out_), policy.fit_intercept,
                              config.weight_by_propensity, read=read)
        statistics = run_statistic(OnRows(learning, split.rows), logs)
        if earlier is not None:
            statistics = start.policy.stats_.scaled(config.forgetting ** days) + statistics
        policy.fit_statistics(statistics, arms, list(encoder.feature_names_out_))
    else:
        frame = logs.sample(frac=min(1.0, config.max_rows_in_memory / n_rows), random_state=seed + 1) \
            if n_rows > config.max_rows_in_memory else logs
        feedback = read(split.rows(frame.compute()))
        if earlier is not None:  # continues from its stored state (a neural policy: its weights and buffer)
            policy = start.policy.partial_fit(feedback)
        else:
            policy.fit(feedback)
    fit_seconds = time.perf_counter() - started
    fitted = FittedPolicy(encoder, policy, split)
    with atomic_output(config.out) as temporary:
        save_policy_model(fitted, temporary, sample)
    model_uri = log_policy_model(fitted, "policy", sample)

    context.log.params({"context_features": ",".join(features), "encoded_features": len(encoder.feature_names_out_),
                        "arms": ",".join(map(str, arms)), "split_salt": split.salt})
    choice.record(context.log)
    context.log.metrics({"training_rows": n_rows, "fit_seconds": fit_seconds,
                         **({"warm_start_days": days} if earlier is not None else {})})
    context.log.text("\n".join(encoder.feature_names_out_) + "\n", "encoded_features.txt")
    summary = {"policy": config.policy, "training rows": f"{n_rows} ({split.describe()})",
               "features": ", ".join(features), "feature choice": choice.summary()}
    if earlier is not None:
        summary["warm start"] = (f"{days} day(s) on, earlier statistics x {config.forgetting ** days:.4g}"
                                 if isinstance(policy, LinearPolicy) else f"{days} day(s) on, training continued")
    return StageResult(summary=summary,
                       outputs={"policy": config.out},
                       data={"fitted": fitted, "model_uri": model_uri, "features": features})
