"""Context-free policies (baselines and cold start): epsilon-greedy, UCB1 and Beta-Bernoulli Thompson sampling.

They ignore the context: every row gets the same action probabilities. State is per arm: pulls (or weights, with
`weight_by_propensity`) and reward sums, which merge across partitions by addition.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np

from bandits.feedback import LoggedFeedback
from bandits.policies.base import BasePolicy, argmax_probabilities, epsilon_greedy_probabilities
from campaign_core import InputError


class _ArmCounts(BasePolicy):
    """Shared state: pulls_ (weighted pull counts) and reward_sums_ per arm."""

    def _reset(self, n_features: int) -> None:
        self.pulls_ = np.zeros(self.n_arms)
        self.reward_sums_ = np.zeros(self.n_arms)

    def _update(self, feedback: LoggedFeedback, weights: np.ndarray | None) -> None:
        w = np.ones(feedback.n_rounds) if weights is None else weights
        self.pulls_ += np.bincount(feedback.arms, weights=w, minlength=self.n_arms)
        self.reward_sums_ += np.bincount(feedback.arms, weights=w * feedback.rewards, minlength=self.n_arms)

    def mean_rewards(self) -> np.ndarray:
        """Estimated mean reward per arm; +inf for arms never pulled (so they are tried first)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.pulls_ > 0, self.reward_sums_ / np.maximum(self.pulls_, 1e-300), np.inf)

    @abstractmethod
    def _row_probabilities(self) -> np.ndarray:
        """(K,) the action probabilities every row gets."""

    def _probabilities(self, X: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self._row_probabilities(), (X.shape[0], self.n_arms)).copy()


class EpsilonGreedy(_ArmCounts):
    """Best observed mean arm with probability 1 - epsilon, a uniform arm otherwise."""

    def __init__(self, epsilon: float = 0.1, arms: Sequence | None = None, weight_by_propensity: bool = False):
        self.epsilon = epsilon
        self.arms = arms
        self.weight_by_propensity = weight_by_propensity

    def _reset(self, n_features: int) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise InputError(f"epsilon: must be in [0, 1], got {self.epsilon}")
        super()._reset(n_features)

    def _row_probabilities(self) -> np.ndarray:
        return epsilon_greedy_probabilities(self.mean_rewards()[None, :], self.epsilon)[0]


class UCB1(_ArmCounts):
    """Upper confidence bound: mean + alpha * sqrt(2 ln N / n_k) (Auer et al. 2002); deterministic, ties split."""

    def __init__(self, alpha: float = 1.0, arms: Sequence | None = None, weight_by_propensity: bool = False):
        self.alpha = alpha
        self.arms = arms
        self.weight_by_propensity = weight_by_propensity

    def _reset(self, n_features: int) -> None:
        if self.alpha < 0:
            raise InputError(f"alpha: must be >= 0, got {self.alpha}")
        super()._reset(n_features)

    def upper_bounds(self) -> np.ndarray:
        total = self.pulls_.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            width = self.alpha * np.sqrt(2.0 * np.log(max(total, 1.0)) / self.pulls_)
        return np.where(self.pulls_ > 0, self.mean_rewards() + width, np.inf)

    def _row_probabilities(self) -> np.ndarray:
        return argmax_probabilities(self.upper_bounds()[None, :])[0]


class ThompsonSampling(_ArmCounts):
    """Beta-Bernoulli Thompson sampling: arm k's success rate ~ Beta(prior_alpha + successes, prior_beta + failures).

    Rewards must lie in [0, 1] (a fractional reward counts as that fraction of a success). The probability that each
    arm is the posterior argmax is estimated from `n_draws` posterior draws with the seed `random_state`, so it is
    the same on every call until the next fit.
    """

    def __init__(self, prior_alpha: float | Sequence[float] = 1.0, prior_beta: float | Sequence[float] = 1.0,
                 n_draws: int = 10_000, random_state: int = 0, arms: Sequence | None = None,
                 weight_by_propensity: bool = False):
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.n_draws = n_draws
        self.random_state = random_state
        self.arms = arms
        self.weight_by_propensity = weight_by_propensity

    def _reset(self, n_features: int) -> None:
        for name in ("prior_alpha", "prior_beta"):
            given = np.asarray(getattr(self, name), dtype=float)
            if given.ndim > 1 or (given.ndim == 1 and given.size != self.n_arms):
                raise InputError(f"{name}: expected one value or one per arm ({self.n_arms}), got shape {given.shape}")
            value = np.broadcast_to(given, (self.n_arms,))
            if (value <= 0).any() or not np.isfinite(value).all():
                raise InputError(f"{name}: must be > 0 (one value or one per arm), got {getattr(self, name)}")
        if self.n_draws < 1:
            raise InputError(f"n_draws: must be >= 1, got {self.n_draws}")
        super()._reset(n_features)
        self._cache = None

    def _update(self, feedback: LoggedFeedback, weights: np.ndarray | None) -> None:
        outside = (feedback.rewards < 0) | (feedback.rewards > 1)
        if outside.any():
            raise InputError(f"reward: Beta-Bernoulli Thompson sampling needs rewards in [0, 1]; "
                             f"{int(outside.sum())} of {outside.size} rows are outside")
        super()._update(feedback, weights)
        self._cache = None

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """The Beta posterior (alpha, beta) of each arm's success rate."""
        alpha = np.broadcast_to(np.asarray(self.prior_alpha, dtype=float), (self.n_arms,)) + self.reward_sums_
        beta = np.broadcast_to(np.asarray(self.prior_beta, dtype=float), (self.n_arms,)) + (
            self.pulls_ - self.reward_sums_)
        return alpha, beta

    def _row_probabilities(self) -> np.ndarray:
        if getattr(self, "_cache", None) is None:
            alpha, beta = self.posterior()
            draws = np.random.default_rng(self.random_state).beta(alpha, beta, size=(self.n_draws, self.n_arms))
            self._cache = np.bincount(draws.argmax(axis=1), minlength=self.n_arms) / self.n_draws
        return self._cache
