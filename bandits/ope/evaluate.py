"""One entry point for off-policy evaluation: `evaluate(feedback, target, estimators=..., reward_model=...)`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bandits.feedback import LoggedFeedback, check_target_probabilities
from bandits.ope.reward_model import cross_fit_rewards
from bandits.ope.statistics import ESTIMATORS, NEEDS_REWARD_MODEL, EstimatorSettings, finalize, ope_partial
from bandits.policies.base import sample_from
from campaign_core import InputError

DEFAULT_ESTIMATORS = ("ips", "snips", "dm", "dr", "switch-dr", "dr-shrink")


class PoorOverlapWarning(UserWarning):
    """The target policy puts its mass where the logger rarely went: estimates rest on few effective rows."""


def check_estimators(estimators: Sequence[str] | str) -> tuple[str, ...]:
    names = (estimators,) if isinstance(estimators, str) else tuple(estimators)
    unknown = [name for name in names if name not in ESTIMATORS]
    if unknown or not names:
        raise InputError(f"estimators: unknown {unknown or 'empty list'}; choose from {list(ESTIMATORS)}")
    return names


def overlap_warnings(table: pd.DataFrame, min_ess_share: float = 0.02, min_ess: float = 100.0) -> list[str]:
    """Messages about poor overlap from an estimates table's diagnostics (empty when overlap is fine)."""
    first = table.iloc[0]
    messages = []
    if first["effective_sample_size"] < min_ess or first["ess_share"] < min_ess_share:
        messages.append(f"poor overlap: effective sample size {first['effective_sample_size']:.0f} of "
                        f"{first['n_rounds']} rows ({first['ess_share']:.2%}); weight-based estimates are unreliable")
    return messages


def target_probabilities_of(target, feedback: LoggedFeedback) -> np.ndarray:
    """The target's (n, K) probabilities: a policy's `action_probabilities` on the logged contexts, or the array."""
    if hasattr(target, "action_probabilities"):
        if hasattr(target, "arms_") and tuple(target.arms_) != tuple(feedback.arm_labels):
            raise InputError(f"target: the policy's arms {list(target.arms_)} differ from the logs' arms "
                             f"{list(feedback.arm_labels)}")
        target = target.action_probabilities(feedback.contexts)
    return check_target_probabilities(target, feedback.n_rounds, feedback.n_arms)


def evaluate(feedback: LoggedFeedback, target, estimators: Sequence[str] = DEFAULT_ESTIMATORS,
             reward_model="ridge", *, n_folds: int = 5, clip: float | None = None, switch_threshold: float = 10.0,
             shrinkage: float = 10.0, confidence: float = 0.95, random_state: int = 0,
             min_ess_share: float = 0.02, reward_contexts: np.ndarray | None = None) -> pd.DataFrame:
    """Estimate the target policy's value (mean reward per round) from logged feedback.

    target: a fitted policy (its `action_probabilities` on the logged contexts are used) or an (n, K) array of
    target probabilities in the logs' arm order. reward_model: "ridge" (cross-fitted per-arm ridge), a scikit-learn
    estimator (cross-fitted per arm over `n_folds`), an (n, K) array of already out-of-fold estimates, or None (then
    only ips, snips and replay can be asked for); `reward_contexts` (n, d') gives the reward model more features
    than the policy's contexts (recommended when the logger targeted on other features). Returns one row per
    estimator with value, se, ci_low, ci_high (normal interval at `confidence`), rows_used, and support diagnostics
    (n_rounds, effective_sample_size, ess_share, tiny_target_share, max_weight); warns `PoorOverlapWarning` when the
    effective sample size is below `min_ess_share` of the rows or below 100.

    The standard errors treat the reward model as fixed: for ips, snips, dr and replay that is right (the model only
    enters through mean-zero corrections, or not at all); dm, switch-dr and dr-shrink also inherit the model's bias,
    which no interval computed from the rows can show, so their intervals are too narrow when q is misspecified.
    """
    names = check_estimators(estimators)
    if not 0 < confidence < 1:
        raise InputError(f"confidence: must be in (0, 1), got {confidence}")
    settings = EstimatorSettings(clip, switch_threshold, shrinkage)
    propensities = feedback.require_propensities("off-policy evaluation")
    target_probabilities = target_probabilities_of(target, feedback)
    needs_model = [name for name in names if name in NEEDS_REWARD_MODEL]
    q = None
    if needs_model:
        if reward_model is None:
            raise InputError(f"reward_model: estimators {needs_model} need a reward model; pass 'ridge', "
                             f"a scikit-learn estimator or an (n, K) array")
        if isinstance(reward_model, np.ndarray):
            q = np.asarray(reward_model, dtype=np.float64)
            if q.shape != (feedback.n_rounds, feedback.n_arms) or not np.isfinite(q).all():
                raise InputError(f"reward_model: expected a finite ({feedback.n_rounds}, {feedback.n_arms}) array "
                                 f"of estimates, got shape {q.shape}")
        else:
            q = cross_fit_rewards(feedback, reward_model, n_folds, random_state, contexts=reward_contexts)
    rows = np.arange(feedback.n_rounds)
    replay_match = None
    if "replay" in names:
        replay_match = sample_from(target_probabilities, random_state) == feedback.arms
    stats = ope_partial(names, feedback.rewards, target_probabilities[rows, feedback.arms], propensities,
                        q_logged=None if q is None else q[rows, feedback.arms],
                        q_target=None if q is None else (target_probabilities * q).sum(axis=1),
                        replay_match=replay_match, settings=settings)
    table = finalize(stats, confidence)
    for message in overlap_warnings(table, min_ess_share):
        warnings.warn(message, PoorOverlapWarning, stacklevel=2)
    return table


def on_policy_value(rewards: np.ndarray, confidence: float = 0.95) -> pd.DataFrame:
    """The plain mean reward with its standard error and interval (the ground truth of on-policy logs)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    ones = np.ones_like(rewards)
    stats = ope_partial(("ips",), rewards, ones, ones)
    table = finalize(stats, confidence).drop(columns=["effective_sample_size", "ess_share", "tiny_target_share",
                                                      "max_weight"])
    table["estimator"] = "on-policy"
    return table
