"""Bandit policies: all offer fit, partial_fit, action_probabilities(X) and sample(X, random_state)."""

from bandits.policies.base import BasePolicy
from bandits.policies.context_free import UCB1, EpsilonGreedy, ThompsonSampling
from bandits.policies.linear import LinearPolicy, LinearStats, LinEpsilonGreedy, LinTS, LinUCB

__all__ = ["BasePolicy", "EpsilonGreedy", "UCB1", "ThompsonSampling", "LinUCB", "LinTS", "LinEpsilonGreedy",
           "LinearStats", "LinearPolicy"]
