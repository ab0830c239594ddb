"""What every policy shares: arm bookkeeping, input checks, and sampling from its own action probabilities.

A policy *is* its action distribution: `sample` draws each row's arm from `action_probabilities(X)` and returns the
probability of the drawn arm as its propensity, so the logged propensity is exactly the chance the arm had. For
Thompson sampling this is the probability that the arm is the posterior argmax (computed by Monte Carlo with a
fixed seed where no closed form exists), which is the quantity an off-policy evaluator needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from numba import njit
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from bandits.feedback import LoggedFeedback, check_contexts, encode_arms
from campaign_core import InputError
from campaign_core.parallel import available_threads, single_thread_pools, thread_map

#: Rows per block when scoring, so memory stays flat for any number of rows.
BLOCK_ROWS = 8_192


def argmax_probabilities(scores: np.ndarray) -> np.ndarray:
    """One-hot of each row's best score, ties split equally (a deterministic policy as probabilities)."""
    best = scores.max(axis=1, keepdims=True)
    top = (scores >= best).astype(np.float64)
    return top / top.sum(axis=1, keepdims=True)


def epsilon_greedy_probabilities(scores: np.ndarray, epsilon: float) -> np.ndarray:
    """(1 - epsilon) on the best arm(s), epsilon spread uniformly over all K arms."""
    return (1.0 - epsilon) * argmax_probabilities(scores) + epsilon / scores.shape[1]


def sample_from(probabilities: np.ndarray, random_state: int | np.random.Generator | None) -> np.ndarray:
    """One arm code per row drawn from that row's probabilities (inverse CDF; one uniform per row)."""
    return inverse_cdf(probabilities, np.random.default_rng(random_state).random(probabilities.shape[0]))


def inverse_cdf(probabilities: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """The arm code of each row at its uniform in [0, 1): the inverse CDF of the row's probabilities, so the arm
    is drawn with exactly its probability when the uniform is uniform. (The uniform is scaled by the row's total, so
    rounding in the probabilities cannot push it past the last arm.)"""
    codes = np.empty(probabilities.shape[0], dtype=np.int64)
    _inverse_cdf(np.ascontiguousarray(probabilities, dtype=np.float64),
                 np.ascontiguousarray(uniforms, dtype=np.float64), codes)
    return codes


@njit(cache=True, nogil=True)
def _inverse_cdf(probabilities: np.ndarray, uniforms: np.ndarray, codes: np.ndarray) -> None:
    """codes[r] = the number of running sums of row r's probabilities at or below uniforms[r] x the row's total
    (at most K - 1), with the running sums added left to right as `np.cumsum` adds them."""
    n, n_arms = probabilities.shape
    for r in range(n):
        total = 0.0
        for k in range(n_arms):
            total += probabilities[r, k]
        draw = uniforms[r] * total
        running = 0.0
        count = 0
        for k in range(n_arms):
            running += probabilities[r, k]
            count += draw >= running
        codes[r] = min(count, n_arms - 1)


class BasePolicy(BaseEstimator, ABC):
    """Base for all policies. Subclasses implement three hooks:

    - `_reset(n_features)`: start from the prior (fitted state for `n_features` context columns and `arms_`);
    - `_update(feedback, weights)`: add a `LoggedFeedback` whose arms are already coded in `arms_` order;
      `weights` is None (every row counts once) or the per-row weights of `row_weights` (1 / (K propensity) when
      `weight_by_propensity`);
    - `_probabilities(X)`: the (n, K) action probabilities of a block of checked contexts.

    Hyperparameters live in `__init__` (scikit-learn style, so `sklearn.base.clone` works); fitted state ends in `_`.
    `arms` fixes the arm labels and their order; when None the first `fit` takes them from the feedback. A policy
    given its `arms` can act before any fit (cold start: context-free policies are uniform or follow their prior,
    linear ones their ridge prior).
    """

    #: Whether blocks of rows may be scored at once on threads: `_probabilities` is a pure function of the block
    #: that spends its time in BLAS or compiled code releasing the GIL.
    _blocks_on_threads = False

    arms: Sequence | None
    weight_by_propensity: bool

    # ----------------------------------------------------------------- learning
    def fit(self, feedback: LoggedFeedback) -> BasePolicy:
        """Learn from logs, forgetting anything learned before; returns self."""
        for attribute in [name for name in vars(self) if name.endswith("_") and not name.startswith("_")]:
            delattr(self, attribute)
        return self.partial_fit(feedback)

    def partial_fit(self, feedback: LoggedFeedback) -> BasePolicy:
        """Learn from more logs on top of what was learned; returns self."""
        if not isinstance(feedback, LoggedFeedback):
            raise TypeError(f"feedback: expected a LoggedFeedback, got {type(feedback).__name__}")
        if not hasattr(self, "arms_"):
            labels = tuple(self.arms) if self.arms is not None else feedback.arm_labels
            if len(labels) < 2:
                raise InputError(f"arms: a policy needs at least 2 arms, got {len(labels)}")
            self.arms_ = np.asarray(labels, dtype=object)
            self.feature_names_in_ = np.asarray(feedback.feature_names, dtype=object)
            self.n_features_in_ = feedback.n_features
            self._reset(feedback.n_features)
        elif feedback.n_features != self.n_features_in_:
            raise InputError(f"contexts: the policy was fitted on {self.n_features_in_} features, "
                             f"the feedback has {feedback.n_features}")
        if tuple(feedback.arm_labels) != tuple(self.arms_):
            codes = encode_arms(feedback.arm_names(), self.arms_)  # raises on arms unknown to the policy
            feedback = LoggedFeedback(feedback.contexts, codes, feedback.rewards, feedback.propensities,
                                      tuple(self.arms_), feedback.feature_names, feedback.costs, feedback.user_ids)
        self._update(feedback, self.row_weights(feedback))
        return self

    def row_weights(self, feedback: LoggedFeedback) -> np.ndarray | None:
        """Importance weights 1/(K * propensity) when `weight_by_propensity`, else None (every row counts once)."""
        if not getattr(self, "weight_by_propensity", False):
            return None
        propensities = feedback.require_propensities("weight_by_propensity=True")
        return 1.0 / (len(self.arms_) * propensities)

    # ----------------------------------------------------------------- acting
    @property
    def n_arms(self) -> int:
        return len(self.arms_)

    def _cold_start(self, X) -> None:
        """Before any fit, a policy given its `arms` acts from its prior (uniform, or the ridge prior)."""
        if hasattr(self, "arms_") or self.arms is None:
            return
        n_features = check_contexts(X, "contexts").shape[1]
        if len(self.arms) < 2:
            raise InputError(f"arms: a policy needs at least 2 arms, got {len(self.arms)}")
        self.arms_ = np.asarray(tuple(self.arms), dtype=object)
        self.feature_names_in_ = np.asarray([f"x{j}" for j in range(n_features)], dtype=object)
        self.n_features_in_ = n_features
        self._reset(n_features)

    def _check_X(self, X) -> np.ndarray:
        self._cold_start(X)
        check_is_fitted(self, "arms_")
        return check_contexts(X, "contexts", self.n_features_in_)

    def action_probabilities(self, X) -> np.ndarray:
        """(n, K) probability of each arm for each context row; rows sum to 1; columns follow `arms_`."""
        X = self._check_X(X)
        out = np.empty((X.shape[0], self.n_arms))

        def fill(start: int) -> None:
            out[start:start + BLOCK_ROWS] = self._probabilities(X[start:start + BLOCK_ROWS])

        starts = range(0, X.shape[0], BLOCK_ROWS)
        if self._blocks_on_threads and len(starts) > 1:  # BLAS on one thread per block, blocks on every core
            with single_thread_pools():
                thread_map(fill, starts, available_threads())
        else:
            for start in starts:
                fill(start)
        return out

    def sample(self, X, random_state: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(arms, propensities): one arm label per row drawn from `action_probabilities`, and its probability."""
        codes, propensities = self.sample_codes(X, random_state)
        return self.arms_[codes], propensities

    def sample_codes(self, X, random_state: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Like `sample`, with arm codes (indices into `arms_`) instead of labels."""
        probabilities = self.action_probabilities(X)
        codes = sample_from(probabilities, random_state)
        return codes, probabilities[np.arange(len(codes)), codes]

    # ----------------------------------------------------------------- for subclasses
    @abstractmethod
    def _reset(self, n_features: int) -> None:
        """Start from the prior: fitted state for `n_features` context columns and `arms_`."""

    @abstractmethod
    def _update(self, feedback: LoggedFeedback, weights: np.ndarray | None) -> None:
        """Add the feedback (arms already coded in `arms_` order) to the fitted state, each row weighted by
        `weights` (None: every row counts once)."""

    @abstractmethod
    def _probabilities(self, X: np.ndarray) -> np.ndarray:
        """(n, K) action probabilities of a block of checked contexts."""
