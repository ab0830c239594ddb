"""Off-policy evaluation as two statistics, and the entry point `evaluate(feedback, target, ...)` that runs them.

1. `RewardModelPass` (only for the estimators that need a reward model): per-fold per-arm ridge statistics of the
   cross-fitted reward model, merged over chunks, finalized into each fold's coefficients.
2. `OffPolicyPass`: the sums of every estimator (`bandits.ope.statistics`), merged over chunks, finalized into the
   estimates table.

A chunk is an `EvaluationChunk` (logged feedback and the reward model's contexts), or a decision-log DataFrame
turned into one by an `EvaluationReader`. `evaluate` runs both passes on the feedback in memory, as one chunk; the
`evaluate-policy` stage runs the same passes over the partitions of a log on disk, with the same folds (a salted hash
of the user id) and the same replay draws (keyed by the seed and each chunk's rows), so both give the same numbers
on the same rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bandits.encoding import ContextEncoder
from bandits.feedback import LoggedFeedback, LogReader, check_contexts, check_target_probabilities
from bandits.ope.reward_model import (
    assign_folds,
    cross_fit_rewards,
    ridge_fold_coefficients,
    ridge_fold_statistics,
    ridge_predict,
)
from bandits.ope.statistics import (
    ESTIMATORS,
    NEEDS_REWARD_MODEL,
    EstimatorSettings,
    OPEStats,
    finalize,
    ope_partial,
)
from bandits.policies.base import sample_from
from bandits.policies.linear import LinearStats
from campaign_core import InputError, SelfMerging, chunk_generator, compute

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


# ---------------------------------------------------------------------------- chunks
@dataclass(frozen=True, eq=False)
class EvaluationChunk:
    """Logged feedback and the reward model's contexts (n, d'), row-aligned; `q` (n, K): out-of-fold reward
    estimates already computed (an in-memory evaluation with a scikit-learn or given reward model)."""

    feedback: LoggedFeedback
    reward_contexts: np.ndarray
    q: np.ndarray | None = None


@dataclass(frozen=True)
class EvaluationReader:
    """How a chunk of a decision-log table becomes an `EvaluationChunk`: `log` reads the feedback (the policy's
    contexts), `reward_encoder` the reward model's contexts (None: the policy's)."""

    log: LogReader
    reward_encoder: ContextEncoder | None = None

    def __call__(self, chunk: pd.DataFrame) -> EvaluationChunk | None:
        """None for a chunk without rows."""
        feedback = self.log(chunk)
        if feedback is None:
            return None
        reward_contexts = feedback.contexts if self.reward_encoder is None else self.reward_encoder.transform(chunk)
        return EvaluationChunk(feedback, reward_contexts)


def _evaluation_chunk(chunk: Any, read: EvaluationReader | None) -> EvaluationChunk | None:
    if read is not None:
        return read(chunk)
    if not isinstance(chunk, EvaluationChunk):
        raise TypeError(f"chunk: expected an EvaluationChunk (or an EvaluationReader for frames), got {type(chunk)}")
    return chunk


# ---------------------------------------------------------------------------- pass 1: the reward model
@dataclass(frozen=True)
class RewardModelPass:
    """Cross-fitted per-arm ridge reward model: per-fold statistics over chunks -> (F, K, d'+1) coefficients, the
    model of fold f fitted on every other fold (`bandits.ope.reward_model`)."""

    n_arms: int
    n_folds: int = 5
    random_state: int = 0
    l2: float = 1.0
    read: EvaluationReader | None = None

    def partial(self, chunk: Any) -> list[LinearStats] | None:
        chunk = _evaluation_chunk(chunk, self.read)
        if chunk is None:
            return None
        feedback = chunk.feedback
        return ridge_fold_statistics(chunk.reward_contexts, feedback.arms, feedback.rewards,
                                     assign_folds(feedback, self.n_folds, self.random_state), self.n_arms, self.n_folds)

    @staticmethod
    def merge(left: list[LinearStats] | None, right: list[LinearStats] | None) -> list[LinearStats] | None:
        if left is None or right is None:
            return left if right is None else right
        return [a + b for a, b in zip(left, right, strict=True)]

    def finalize(self, fold_stats: list[LinearStats] | None) -> np.ndarray:
        if fold_stats is None:
            raise InputError("logs: no rows to fit the reward model on")
        return ridge_fold_coefficients(fold_stats, self.l2)


# ---------------------------------------------------------------------------- pass 2: the estimates
class FixedProbabilities:
    """A target given as its (n, K) action probabilities on the logged rows (one chunk only)."""

    def __init__(self, probabilities: np.ndarray):
        self.probabilities = np.asarray(probabilities, dtype=np.float64)

    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        if len(contexts) != len(self.probabilities):
            raise InputError(f"target: {len(self.probabilities)} rows of probabilities for {len(contexts)} logged "
                             f"rows; an array target covers exactly the logged rows")
        return self.probabilities


@dataclass(frozen=True)
class OffPolicyPass(SelfMerging):
    """The sums of every estimator over chunks -> one row per estimator (value, se, interval, diagnostics).

    target: anything with `action_probabilities(contexts) -> (n, K)` (a fitted policy). coefficients: the
    `RewardModelPass` result (None: the chunk's own `q`, or no reward model). Replay draws the target's arm with
    randomness keyed by `random_state` and the chunk's rows.
    """

    estimators: tuple[str, ...]
    target: Any
    coefficients: np.ndarray | None = None
    n_folds: int = 5
    random_state: int = 0
    settings: EstimatorSettings = EstimatorSettings()
    confidence: float = 0.95
    read: EvaluationReader | None = None

    def partial(self, chunk: Any) -> OPEStats:
        chunk = _evaluation_chunk(chunk, self.read)
        if chunk is None:
            return OPEStats.zeros(self.estimators)
        feedback = chunk.feedback
        propensities = feedback.require_propensities("off-policy evaluation")
        target = check_target_probabilities(self.target.action_probabilities(feedback.contexts), feedback.n_rounds,
                                            feedback.n_arms)
        q = chunk.q
        if self.coefficients is not None:
            q = ridge_predict(chunk.reward_contexts, assign_folds(feedback, self.n_folds, self.random_state),
                              self.coefficients)
        missing = [name for name in self.estimators if name in NEEDS_REWARD_MODEL]
        if q is None and missing:
            raise InputError(f"reward_model: estimators {missing} need a reward model; pass 'ridge', "
                             f"a scikit-learn estimator or an (n, K) array")
        rows, arms = np.arange(feedback.n_rounds), feedback.arms
        replay_match = None
        if "replay" in self.estimators:
            rng = chunk_generator(self.random_state, 3, arms, feedback.rewards)
            replay_match = sample_from(target, rng) == arms
        return ope_partial(self.estimators, feedback.rewards, target[rows, arms], propensities,
                           q_logged=None if q is None else q[rows, arms],
                           q_target=None if q is None else (target * q).sum(axis=1),
                           replay_match=replay_match, settings=self.settings)

    def finalize(self, stats: OPEStats) -> pd.DataFrame:
        return finalize(stats, self.confidence)


# ---------------------------------------------------------------------------- the entry point
def evaluate(feedback: LoggedFeedback, target, *, estimators: Sequence[str] = DEFAULT_ESTIMATORS,
             reward_model="ridge", n_folds: int = 5, clip: float | None = None, switch_threshold: float = 10.0,
             shrinkage: float = 10.0, l2: float = 1.0, confidence: float = 0.95, random_state: int = 0,
             min_ess_share: float = 0.02, reward_contexts: np.ndarray | None = None) -> pd.DataFrame:
    """Estimate the target policy's value (mean reward per round) from logged feedback.

    target: a fitted policy (its `action_probabilities` on the logged contexts are used) or an (n, K) array of
    target probabilities in the logs' arm order. reward_model: "ridge" (cross-fitted per-arm ridge with penalty
    `l2`), a scikit-learn estimator (cross-fitted per arm over `n_folds`), an (n, K) array of already out-of-fold
    estimates, or None (then only ips, snips and replay can be asked for); `reward_contexts` (n, d') gives the
    reward model more features than the policy's contexts (recommended when the logger targeted on other features).
    Folds follow a salted hash of the user ids when the feedback has them. Returns one row per estimator with value,
    se, ci_low, ci_high (normal interval at `confidence`), rows_used, logged_value (the logged rewards' mean), and
    support diagnostics (n_rounds, effective_sample_size, ess_share, tiny_target_share, max_weight); warns
    `PoorOverlapWarning` when the effective sample size is below `min_ess_share` of the rows or below 100.

    The standard errors treat the reward model as fixed: for ips, snips, dr and replay that is right (the model only
    enters through mean-zero corrections, or not at all); dm, switch-dr and dr-shrink also inherit the model's bias,
    which no interval computed from the rows can show, so their intervals are too narrow when q is misspecified.
    """
    names = check_estimators(estimators)
    if not 0 < confidence < 1:
        raise InputError(f"confidence: must be in (0, 1), got {confidence}")
    settings = EstimatorSettings(clip, switch_threshold, shrinkage)
    feedback.require_propensities("off-policy evaluation")
    if hasattr(target, "action_probabilities"):
        if hasattr(target, "arms_") and tuple(target.arms_) != tuple(feedback.arm_labels):
            raise InputError(f"target: the policy's arms {list(target.arms_)} differ from the logs' arms "
                             f"{list(feedback.arm_labels)}")
    else:
        target = FixedProbabilities(check_target_probabilities(target, feedback.n_rounds, feedback.n_arms))
    contexts = feedback.contexts if reward_contexts is None else check_contexts(reward_contexts, "reward_contexts")
    if len(contexts) != feedback.n_rounds:
        raise InputError(f"reward_contexts: expected {feedback.n_rounds} rows, got {len(contexts)}")
    needs_model = [name for name in names if name in NEEDS_REWARD_MODEL]
    coefficients = q = None
    if needs_model:
        if reward_model is None:
            raise InputError(f"reward_model: estimators {needs_model} need a reward model; pass 'ridge', "
                             f"a scikit-learn estimator or an (n, K) array")
        if isinstance(reward_model, np.ndarray):
            q = np.asarray(reward_model, dtype=np.float64)
            if q.shape != (feedback.n_rounds, feedback.n_arms) or not np.isfinite(q).all():
                raise InputError(f"reward_model: expected a finite ({feedback.n_rounds}, {feedback.n_arms}) array "
                                 f"of estimates, got shape {q.shape}")
        elif isinstance(reward_model, str) and reward_model == "ridge":
            if n_folds < 2:
                raise InputError(f"n_folds: cross-fitting needs at least 2 folds, got {n_folds}")
            coefficients = compute(RewardModelPass(feedback.n_arms, n_folds, random_state, l2),
                                   EvaluationChunk(feedback, contexts))
        else:
            q = cross_fit_rewards(feedback, reward_model, n_folds=n_folds, random_state=random_state, l2=l2,
                                  contexts=contexts)
    table = compute(OffPolicyPass(names, target, coefficients, n_folds, random_state, settings, confidence),
                    EvaluationChunk(feedback, contexts, q))
    for message in overlap_warnings(table, min_ess_share):
        warnings.warn(message, PoorOverlapWarning, stacklevel=2)
    return table


def on_policy_value(rewards: np.ndarray, confidence: float = 0.95) -> pd.DataFrame:
    """The plain mean reward with its standard error and interval (the ground truth of on-policy logs)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    ones = np.ones_like(rewards)
    stats = ope_partial(("ips",), rewards, ones, ones)
    table = finalize(stats, confidence).drop(columns=["effective_sample_size", "ess_share", "tiny_target_share",
                                                      "max_weight", "logged_value"])
    table["estimator"] = "on-policy"
    return table
