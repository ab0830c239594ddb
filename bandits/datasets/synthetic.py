"""A synthetic contextual bandit with known expected rewards, so every policy's true value is known exactly.

Contexts x ~ N(0, I_d). Expected reward of arm k (a click or purchase probability):
  linear:     mu_k(x) = sigmoid(b_k + x' theta_k)
  nonlinear:  mu_k(x) = sigmoid(b_k + 1.5 sin(x' u_k) + (x' v_k)^2 / 2 - 1/2)   (no linear model ranks arms well)
Rewards are Bernoulli(mu_k(x)). The logging policy is a softmax of a random linear score with temperature
`logging_temperature`, mixed with `logging_epsilon` of uniform, so its propensities are known and bounded away from 0.
The value of a policy pi on contexts X is mean_i sum_k pi(k|x_i) mu_k(x_i).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bandits.feedback import LoggedFeedback
from bandits.policies.base import sample_from
from campaign_core import InputError


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass(frozen=True)
class SyntheticBandit:
    """Known-truth environment: `n_features` Gaussian features, `n_arms` arms, linear or nonlinear rewards."""

    n_features: int = 5
    n_arms: int = 4
    reward: str = "linear"
    signal: float = 1.0
    logging_temperature: float = 1.0
    logging_epsilon: float = 0.1
    seed: int = 0
    _parameters: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.reward not in ("linear", "nonlinear"):
            raise InputError(f"reward: 'linear' or 'nonlinear', got {self.reward!r}")
        if self.n_arms < 2:
            raise InputError(f"n_arms: need at least 2 arms, got {self.n_arms}")
        if self.n_features < 1:
            raise InputError(f"n_features: need at least 1, got {self.n_features}")
        if not 0 <= self.logging_epsilon <= 1:
            raise InputError(f"logging_epsilon: must be in [0, 1], got {self.logging_epsilon}")
        rng = np.random.default_rng(self.seed)
        scale = self.signal / np.sqrt(self.n_features)
        parameters = {
            "bias": rng.normal(-0.5, 0.3, self.n_arms),
            "theta": rng.normal(0.0, scale, (self.n_arms, self.n_features)),
            "u": rng.normal(0.0, 2 * scale, (self.n_arms, self.n_features)),
            "v": rng.normal(0.0, scale, (self.n_arms, self.n_features)),
            "logging": rng.normal(0.0, 1.0 / np.sqrt(self.n_features), (self.n_arms, self.n_features)),
        }
        object.__setattr__(self, "_parameters", parameters)

    @property
    def arm_labels(self) -> tuple[str, ...]:
        return tuple(f"arm_{k}" for k in range(self.n_arms))

    def contexts(self, n: int, random_state: int | np.random.Generator | None = None) -> np.ndarray:
        return np.random.default_rng(random_state).standard_normal((n, self.n_features))

    def expected_rewards(self, X: np.ndarray) -> np.ndarray:
        """(n, K) probability of reward 1 for each arm."""
        p = self._parameters
        if self.reward == "linear":
            return _sigmoid(p["bias"] + X @ p["theta"].T)
        return _sigmoid(p["bias"] + 1.5 * np.sin(X @ p["u"].T) + 0.5 * (X @ p["v"].T) ** 2 - 0.5)

    def logging_probabilities(self, X: np.ndarray) -> np.ndarray:
        """(n, K) action probabilities of the logging policy."""
        logits = X @ self._parameters["logging"].T / self.logging_temperature
        logits -= logits.max(axis=1, keepdims=True)
        softmax = np.exp(logits)
        softmax /= softmax.sum(axis=1, keepdims=True)
        return (1 - self.logging_epsilon) * softmax + self.logging_epsilon / self.n_arms

    def rewards(self, X: np.ndarray, arms: np.ndarray, random_state) -> np.ndarray:
        """Bernoulli rewards of the given arms."""
        mu = self.expected_rewards(X)[np.arange(len(X)), arms]
        return (np.random.default_rng(random_state).random(len(X)) < mu).astype(np.float64)

    def policy_value(self, probabilities: np.ndarray, X: np.ndarray) -> float:
        """True value of a policy with these (n, K) probabilities on contexts X: mean expected reward per round."""
        return float((probabilities * self.expected_rewards(X)).sum(axis=1).mean())

    def logged_feedback(self, n: int, random_state: int = 0, logger=None) -> tuple[LoggedFeedback, np.ndarray]:
        """n logged rounds and their (n, K) true means; `logger` is a fitted policy or a function X -> (n, K)
        probabilities (default: the built-in softmax logger)."""
        rng = np.random.default_rng(random_state)
        X = self.contexts(n, rng)
        if logger is None:
            probabilities = self.logging_probabilities(X)
        else:
            probabilities = logger.action_probabilities(X) if hasattr(logger, "action_probabilities") else logger(X)
            if hasattr(logger, "arms_"):  # a policy's columns follow its own arm order: put them in ours
                order = list(logger.arms_)
                unknown = [arm for arm in self.arm_labels if arm not in order]
                if unknown or len(order) != self.n_arms:
                    raise InputError(f"logger: its arms {order} are not this environment's {list(self.arm_labels)}")
                probabilities = probabilities[:, [order.index(arm) for arm in self.arm_labels]]
        arms = sample_from(probabilities, rng)
        rewards = self.rewards(X, arms, rng)
        feedback = LoggedFeedback(X, arms, rewards, probabilities[np.arange(n), arms], self.arm_labels,
                                  tuple(f"x{j}" for j in range(self.n_features)))
        return feedback, self.expected_rewards(X)
