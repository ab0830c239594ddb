"""Supervised-to-bandit conversion: a classification data set becomes logged bandit feedback with a known truth.

Each row's arms are the classes; playing arm a earns reward 1{a == label}. The logs reveal only the logged arm's
reward, but since the label is known, every policy's true value is known: mean_i pi(label_i | x_i)
(Dudik, Langford and Li 2011; Open Bandit Pipeline's multiclass setup). Logging and target policies are built the
usual way: a classifier's prediction with probability `alpha`, a uniform arm otherwise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn import datasets
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from bandits.feedback import LoggedFeedback
from bandits.policies.base import sample_from
from campaign_core import InputError

LOADERS = {"digits": datasets.load_digits, "wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}


@dataclass(frozen=True)
class ClassificationBandit:
    """Contexts (standardized features), labels as class codes, and class names as arm labels."""

    contexts: np.ndarray
    labels: np.ndarray
    arm_labels: tuple

    @property
    def n_arms(self) -> int:
        return len(self.arm_labels)

    def expected_rewards(self) -> np.ndarray:
        """(n, K) true expected reward: 1 on the row's class, 0 elsewhere."""
        return np.eye(self.n_arms)[self.labels]

    def policy_value(self, probabilities: np.ndarray) -> float:
        """True value of a policy with these (n, K) probabilities: its mean probability of the right class."""
        return float(probabilities[np.arange(len(self.labels)), self.labels].mean())

    def classifier_policy(self, alpha: float, train_share: float = 0.3, random_state: int = 0,
                          classifier=None) -> np.ndarray:
        """(n, K) probabilities of the policy 'a classifier's prediction with probability alpha, else uniform'.

        The classifier (default: logistic regression, deliberately weak with few iterations) is fitted on a seeded
        `train_share` of the rows, so different seeds give different policies of similar quality.
        """
        if not 0 <= alpha <= 1:
            raise InputError(f"alpha: must be in [0, 1], got {alpha}")
        rng = np.random.default_rng(random_state)
        train = rng.random(len(self.labels)) < train_share
        model = clone(classifier) if classifier is not None else LogisticRegression(max_iter=30, C=0.05)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a deliberately under-trained model does not converge
            model.fit(self.contexts[train], self.labels[train])
        predicted = model.predict(self.contexts)
        return alpha * np.eye(self.n_arms)[predicted] + (1 - alpha) / self.n_arms

    def logged_feedback(self, logging_probabilities: np.ndarray, random_state: int = 0) -> LoggedFeedback:
        """One logged round per row: an arm drawn from `logging_probabilities`, reward 1 if it is the right class."""
        rng = np.random.default_rng(random_state)
        arms = sample_from(logging_probabilities, rng)
        rewards = (arms == self.labels).astype(np.float64)
        return LoggedFeedback(self.contexts, arms, rewards, logging_probabilities[np.arange(len(arms)), arms],
                              self.arm_labels, tuple(f"x{j}" for j in range(self.contexts.shape[1])))


def load_classification_bandit(name: str = "digits") -> ClassificationBandit:
    """One of the classification sets scikit-learn ships offline (digits, wine, breast_cancer), standardized."""
    if name not in LOADERS:
        raise InputError(f"name: unknown data set {name!r}; choose from {sorted(LOADERS)}")
    data = LOADERS[name]()
    contexts = StandardScaler().fit_transform(data.data.astype(np.float64))
    classes, labels = np.unique(data.target, return_inverse=True)
    names = getattr(data, "target_names", classes)
    return ClassificationBandit(contexts, labels.astype(np.int64), tuple(str(n) for n in np.asarray(names)[classes]))
