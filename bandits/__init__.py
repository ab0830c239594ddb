"""Contextual bandits that log propensities, and off-policy evaluation with intervals.

    from bandits import LoggedFeedback, LinTS, evaluate
    feedback = LoggedFeedback.from_frame(logs, features, propensity="propensity")
    policy = LinTS(alpha=0.5).fit(feedback)
    arms, propensities = policy.sample(new_contexts, random_state=7)
    evaluate(feedback, policy, estimators=("ips", "snips", "dr"))
"""

from bandits.encoding import ContextEncoder
from bandits.feedback import LoggedFeedback
from bandits.ope import evaluate, on_policy_value
from bandits.policies import UCB1, EpsilonGreedy, LinearStats, LinEpsilonGreedy, LinTS, LinUCB, ThompsonSampling
from bandits.policies.neural import NeuralTS

__all__ = ["LoggedFeedback", "ContextEncoder", "EpsilonGreedy", "UCB1", "ThompsonSampling", "LinUCB", "LinTS",
           "LinEpsilonGreedy", "NeuralTS", "LinearStats", "evaluate", "on_policy_value"]
