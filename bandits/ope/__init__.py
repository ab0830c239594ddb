"""Off-policy evaluation: IPS, SNIPS, DM, DR, Switch-DR, DR with shrinkage, replay; intervals and diagnostics."""

from bandits.ope.evaluate import (
    DEFAULT_ESTIMATORS,
    EvaluationChunk,
    EvaluationReader,
    OffPolicyPass,
    PoorOverlapWarning,
    RewardModelPass,
    evaluate,
    on_policy_value,
)
from bandits.ope.reward_model import cross_fit_rewards
from bandits.ope.statistics import ESTIMATORS, EstimatorSettings, OPEStats, finalize, ope_partial

__all__ = ["evaluate", "on_policy_value", "cross_fit_rewards", "ope_partial", "finalize", "OPEStats",
           "EstimatorSettings", "ESTIMATORS", "DEFAULT_ESTIMATORS", "PoorOverlapWarning", "RewardModelPass",
           "OffPolicyPass", "EvaluationChunk", "EvaluationReader"]
