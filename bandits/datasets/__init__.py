"""Data with known answers: a synthetic environment, supervised-to-bandit conversion, the Open Bandit Dataset."""

from bandits.datasets.open_bandit import bts_position_probabilities, open_bandit_feedback, position_target_probabilities
from bandits.datasets.supervised import ClassificationBandit, load_classification_bandit
from bandits.datasets.synthetic import SyntheticBandit

__all__ = ["SyntheticBandit", "ClassificationBandit", "load_classification_bandit", "bts_position_probabilities",
           "open_bandit_feedback", "position_target_probabilities"]
