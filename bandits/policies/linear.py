"""Linear contextual policies, disjoint per-arm ridge models: LinUCB, linear Thompson sampling, linear epsilon-greedy.

Each arm k keeps the sufficient statistics of a weighted ridge regression of reward on context,
A_k = l2 I + sum_i w_i x_i x_i' and b_k = sum_i w_i y_i x_i (x with a leading 1 when `fit_intercept`), in a
`LinearStats`. They add across chunks, so a fit chunk by chunk (`LinearPass`, then `fit_statistics`) equals the
in-memory fit to rounding. theta_k = A_k^-1 b_k is the arm's reward model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.lapack import dtrtri
from sklearn.utils.validation import check_is_fitted

from bandits.feedback import LoggedFeedback, check_contexts
from bandits.policies._linear_kernels import (
    PAIRWISE_BLOCK,
    arm_order,
    gather_design,
    gaussian_argmax_shares,
    ucb_probabilities,
    widths,
)
from bandits.policies.base import BasePolicy, argmax_probabilities, epsilon_greedy_probabilities
from campaign_core import InputError, SelfMerging
from campaign_core.parallel import available_threads, single_thread_pools, thread_map

PARALLEL_ROWS = 50_000  # a fit of fewer rows runs its arms on one thread (a pool costs more than it saves)


def design(X: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """Contexts with a leading column of ones when the model has an intercept."""
    if not fit_intercept:
        return X
    Z = np.empty((X.shape[0], X.shape[1] + 1))
    Z[:, 0] = 1.0
    Z[:, 1:] = X
    return Z


@dataclass(frozen=True)
class LinearStats:
    """Per-arm ridge sufficient statistics without the l2 term: gram (K, d, d), xty (K, d), weight (K,), yy (K,)."""

    gram: np.ndarray
    xty: np.ndarray
    weight: np.ndarray
    yy: np.ndarray

    @classmethod
    def zeros(cls, n_arms: int, n_columns: int) -> LinearStats:
        return cls(np.zeros((n_arms, n_columns, n_columns)), np.zeros((n_arms, n_columns)), np.zeros(n_arms),
                   np.zeros(n_arms))

    @classmethod
    def partial(cls, X: np.ndarray, arms: np.ndarray, rewards: np.ndarray, n_arms: int, *,
                weights: np.ndarray | None = None, fit_intercept: bool = True) -> LinearStats:
        """Statistics of one chunk of rows (contexts X, arm codes, rewards, optional row weights). Each arm's rows
        are gathered (with the intercept's ones) into a buffer reused arm after arm, so the fresh memory is a few
        arms' rows, not three copies of the chunk; the arms are shared out over the cores (BLAS on one thread
        each: the same products)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        rewards = np.asarray(rewards, dtype=np.float64)
        stats = cls.zeros(n_arms, X.shape[1] + int(fit_intercept))
        order, bounds = arm_order(np.ascontiguousarray(arms, dtype=np.int64), n_arms)
        largest = int(np.diff(bounds).max(initial=0))

        def arms_of(share: range) -> None:
            gathered, weighted = (np.empty((largest, stats.gram.shape[1])) for _ in range(2))
            for k in share:
                rows = order[bounds[k]:bounds[k + 1]]
                if rows.size == 0:
                    continue
                Zk, WZ = gathered[:rows.size], weighted[:rows.size]
                gather_design(X, rows, fit_intercept, Zk)
                yk = rewards[rows]
                wk = np.ones(rows.size) if weights is None else weights[rows]
                np.multiply(Zk, wk[:, None], out=WZ)
                stats.gram[k] = Zk.T @ WZ
                stats.xty[k] = WZ.T @ yk
                stats.weight[k] = wk.sum()
                stats.yy[k] = wk @ (yk * yk)

        threads = min(available_threads(), n_arms) if len(order) >= PARALLEL_ROWS else 1
        with single_thread_pools():
            thread_map(arms_of, [range(first, n_arms, threads) for first in range(threads)], threads)
        return stats

    def merge(self, other: LinearStats) -> LinearStats:
        """Statistics of the union of two disjoint sets of rows."""
        return LinearStats(self.gram + other.gram, self.xty + other.xty, self.weight + other.weight,
                           self.yy + other.yy)

    __add__ = merge

    def scaled(self, factor: float) -> LinearStats:
        """The statistics with every row's weight times `factor` (exponential forgetting of older rows)."""
        return LinearStats(self.gram * factor, self.xty * factor, self.weight * factor, self.yy * factor)


@dataclass(frozen=True)
class LinearPass(SelfMerging):
    """A linear policy's per-arm ridge statistics as a statistic over chunks of `LoggedFeedback` (or of a log table,
    read by `read`, e.g. a `bandits.feedback.LogReader`); rows weighted 1 / (K propensity) when
    `weight_by_propensity`. `LinearPolicy.fit_statistics` turns the result into the fitted policy."""

    n_arms: int
    n_features: int
    fit_intercept: bool = True
    weight_by_propensity: bool = False
    read: Callable[[Any], LoggedFeedback | None] | None = None

    def partial(self, chunk: Any) -> LinearStats:
        feedback = self.read(chunk) if self.read is not None else chunk
        if feedback is None:
            return LinearStats.zeros(self.n_arms, self.n_features + int(self.fit_intercept))
        weights = None
        if self.weight_by_propensity:
            weights = 1.0 / (self.n_arms * feedback.require_propensities("weight_by_propensity=True"))
        return LinearStats.partial(feedback.contexts, feedback.arms, feedback.rewards, self.n_arms, weights=weights,
                                   fit_intercept=self.fit_intercept)


class LinearPolicy(BasePolicy):
    """Shared state: stats_ (LinearStats), theta_ (K, d) ridge coefficients, and a factor of each A_k^-1."""

    _blocks_on_threads = True

    def _check_hyperparameters(self) -> None:
        """Subclass checks of their own hyperparameters (one-line ValueErrors)."""

    def _reset(self, n_features: int) -> None:
        if self.l2 <= 0:
            raise InputError(f"l2: the ridge penalty must be > 0, got {self.l2}")
        self._check_hyperparameters()
        self.stats_ = LinearStats.zeros(self.n_arms, n_features + int(self.fit_intercept))
        self._refresh()

    def _update(self, feedback: LoggedFeedback, weights: np.ndarray | None) -> None:
        learning = LinearPass(self.n_arms, feedback.n_features, self.fit_intercept, weights is not None)
        self.stats_ = self.stats_ + learning.partial(feedback)
        self._refresh()

    def fit_statistics(self, stats: LinearStats, arms: Sequence, feature_names: Sequence[str]) -> LinearPolicy:
        """Fit from merged statistics (`LinearPass` over chunks): same result as `fit` on the rows they summarize."""
        labels = tuple(self.arms) if self.arms is not None else tuple(arms)
        if len(labels) < 2:
            raise InputError(f"arms: a policy needs at least 2 arms, got {len(labels)}")
        if len(labels) != stats.gram.shape[0]:
            raise InputError(f"stats: {stats.gram.shape[0]} arms in the statistics, {len(labels)} in the policy")
        width = len(feature_names) + int(self.fit_intercept)
        if stats.gram.shape[1:] != (width, width) or stats.xty.shape[1:] != (width,):
            raise InputError(f"stats: statistics of width {stats.gram.shape[1]} for {len(feature_names)} features "
                             f"(expected {width} with fit_intercept={self.fit_intercept})")
        self.arms_ = np.asarray(labels, dtype=object)
        self.feature_names_in_ = np.asarray(feature_names, dtype=object)
        self.n_features_in_ = len(feature_names)
        if self.l2 <= 0:
            raise InputError(f"l2: the ridge penalty must be > 0, got {self.l2}")
        self._check_hyperparameters()
        self.stats_ = stats
        self._refresh()
        return self

    def _refresh(self) -> None:
        """Recompute theta_k = A_k^-1 b_k and F_k with F_k F_k' = A_k^-1 (for the uncertainty widths)."""
        n_arms, d = self.stats_.xty.shape
        self.theta_ = np.empty((n_arms, d))
        inverse_factors = np.empty((n_arms, d, d))
        identity = np.eye(d)
        for k in range(n_arms):
            A = self.stats_.gram[k] + self.l2 * identity
            factor = cho_factor(A, lower=True)
            self.theta_[k] = cho_solve(factor, self.stats_.xty[k])
            # F = L^-T, so F F' = L^-T L^-1 = A^-1. (LAPACK trtri: solve_triangular stalls on BLAS threads here.)
            inverse, info = dtrtri(np.tril(factor[0]), lower=1)
            if info != 0:
                raise np.linalg.LinAlgError(f"ridge factor of arm {k} is singular")
            inverse_factors[k] = inverse.T
        self._stacked_factors = np.ascontiguousarray(inverse_factors.transpose(1, 0, 2).reshape(d, n_arms * d))

    def expected_rewards(self, X) -> np.ndarray:
        """(n, K) ridge estimate of each arm's mean reward for each context row."""
        X = self._check_X(X)
        return design(X, self.fit_intercept) @ self.theta_.T

    def _mean_and_width(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean reward x'theta_k and width sqrt(x' A_k^-1 x) for each row and arm, (n, K) each."""
        mean, projected = self._mean_and_projected(X)
        n_arms, d = self.theta_.shape
        if d > PAIRWISE_BLOCK:  # numpy sums a longer run in another order: keep its arithmetic
            return mean, np.sqrt((projected * projected).reshape(len(mean), n_arms, d).sum(axis=2))
        width = np.empty_like(mean)
        widths(projected, n_arms, width)
        return mean, width

    def _mean_and_projected(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean reward x'theta_k (n, K) and the contexts projected on every arm's factor F_k (n, K d), whose row
        blocks' squared norms are the squared widths x' A_k^-1 x."""
        Z = design(X, self.fit_intercept)
        return Z @ self.theta_.T, Z @ self._stacked_factors

    def _check_X(self, X) -> np.ndarray:
        self._cold_start(X)
        check_is_fitted(self, "theta_")
        return check_contexts(X, "contexts", self.n_features_in_)


class LinUCB(LinearPolicy):
    """LinUCB (Li et al. 2010, disjoint): arm with the largest x'theta_k + alpha sqrt(x' A_k^-1 x); ties split."""

    def __init__(self, alpha: float = 1.0, l2: float = 1.0, fit_intercept: bool = True, arms: Sequence | None = None,
                 weight_by_propensity: bool = False):
        self.alpha = alpha
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.arms = arms
        self.weight_by_propensity = weight_by_propensity

    def upper_bounds(self, X) -> np.ndarray:
        mean, width = self._mean_and_width(self._check_X(X))
        return mean + self.alpha * width

    def _probabilities(self, X: np.ndarray) -> np.ndarray:
        if self.theta_.shape[1] > PAIRWISE_BLOCK:
            mean, width = self._mean_and_width(X)
            return argmax_probabilities(mean + self.alpha * width)
        mean, projected = self._mean_and_projected(X)
        out = np.empty_like(mean)
        ucb_probabilities(projected, mean, float(self.alpha), out)
        return out


class LinEpsilonGreedy(LinearPolicy):
    """Arm with the largest ridge estimate x'theta_k with probability 1 - epsilon, a uniform arm otherwise."""

    def __init__(self, epsilon: float = 0.1, l2: float = 1.0, fit_intercept: bool = True,
                 arms: Sequence | None = None, weight_by_propensity: bool = False):
        self.epsilon = epsilon
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.arms = arms
        self.weight_by_propensity = weight_by_propensity

    def _check_hyperparameters(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise InputError(f"epsilon: must be in [0, 1], got {self.epsilon}")

    def _probabilities(self, X: np.ndarray) -> np.ndarray:
        return epsilon_greedy_probabilities(design(X, self.fit_intercept) @ self.theta_.T, self.epsilon)


def gaussian_argmax_probabilities(mean: np.ndarray, sd: np.ndarray, n_draws: int, random_state: int) -> np.ndarray:
    """P(arm k has the largest draw) for independent N(mean_k, sd_k^2) per row, by Monte Carlo, shape (n, K).

    The same draws are used for every row (common random numbers, seeded by `random_state`; antithetic pairs z, -z,
    so every arm's draws have mean exactly 0 and no arm is favoured in close calls): the probabilities are a fixed
    function of (mean, sd), each a multiple of 1/n_draws. Two shortcuts give exactly the Monte Carlo answer at a
    fraction of its cost: a row whose best arm beats every other arm even at the extremes of the draws gets
    probability 1 without drawing; otherwise only the arms that can win some draw (their largest draw reaches the
    largest smallest draw of any arm) are drawn, with a running maximum (ties go to the lower arm, as argmax). One
    compiled pass over the rows (`gaussian_argmax_shares`).
    """
    n_arms = mean.shape[1]
    half = np.random.default_rng(random_state).standard_normal(((n_draws + 1) // 2, n_arms))
    normals = np.ascontiguousarray(np.concatenate([half, -half])[:n_draws].astype(np.float32))
    z_max = float(np.abs(normals).max())
    slack = 1e-5 * (1.0 + np.abs(mean).max(initial=0.0) + z_max * sd.max(initial=0.0))  # covers float32 rounding
    out = np.empty(mean.shape)
    gaussian_argmax_shares(np.ascontiguousarray(mean), np.ascontiguousarray(sd), normals, z_max, float(slack), out)
    return out


class LinTS(LinearPolicy):
    """Linear Thompson sampling (Agrawal and Goyal 2013): theta_k ~ N(A_k^-1 b_k, alpha^2 A_k^-1), play the argmax.

    The action probabilities (chance each arm wins the posterior draw) come from `n_draws` Monte Carlo draws with the
    seed `random_state`; each probability is a multiple of 1/n_draws.
    """

    def __init__(self, alpha: float = 1.0, l2: float = 1.0, n_draws: int = 100, random_state: int = 0,
                 fit_intercept: bool = True, arms: Sequence | None = None, weight_by_propensity: bool = False):
        self.alpha = alpha
        self.l2 = l2
        self.n_draws = n_draws
        self.random_state = random_state
        self.fit_intercept = fit_intercept
        self.arms = arms
        self.weight_by_propensity = weight_by_propensity

    def _check_hyperparameters(self) -> None:
        if self.alpha < 0:
            raise InputError(f"alpha: must be >= 0, got {self.alpha}")
        if self.n_draws < 1:
            raise InputError(f"n_draws: must be >= 1, got {self.n_draws}")

    def _probabilities(self, X: np.ndarray) -> np.ndarray:
        mean, width = self._mean_and_width(X)
        return gaussian_argmax_probabilities(mean, self.alpha * width, self.n_draws, self.random_state)
