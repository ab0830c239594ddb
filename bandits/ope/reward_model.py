"""Cross-fitted reward models q(x, a) for the direct-method and doubly robust estimators.

Rows are split into k folds; the model that predicts the rows of fold f never saw fold f, so the correction term
w (y - q) of DR keeps mean zero given q (Chernozhukov et al. 2018). Folds follow user ids when the logs have them
(all of a user's rounds in one fold), so a user's own rewards never leak into their prediction.

Two routes:
- "ridge": a per-arm ridge regression from the mergeable `LinearStats`: one pass builds per-fold statistics and the
  model for fold f is total minus fold f (`RewardModelPass`). Exact, fast, and the same chunk by chunk (`fold_of`
  is a pure function of the id).
- any scikit-learn regressor (or classifier with predict_proba for 0/1 rewards): one clone per fold and arm.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone, is_classifier

from bandits.feedback import LoggedFeedback, check_contexts
from bandits.policies.linear import LinearStats, design
from campaign_core import InputError, salted_uniform, seeded_salt


def fold_of(user_ids: np.ndarray, n_folds: int, random_state: int = 0) -> np.ndarray:
    """Fold of each row from a salted hash of its user id (salt "ope-folds/<random_state>"): stable across
    partitions, schedulers and runs; another `random_state` gives independent folds."""
    uniform = salted_uniform(user_ids, seeded_salt("ope-folds", random_state))
    return np.minimum((uniform * n_folds).astype(np.int64), n_folds - 1)


def assign_folds(feedback: LoggedFeedback, n_folds: int, random_state: int = 0) -> np.ndarray:
    """Fold of each row: by user id when the feedback has them, else a seeded random balanced split."""
    if n_folds < 2:
        raise InputError(f"n_folds: cross-fitting needs at least 2 folds, got {n_folds}")
    if feedback.user_ids is not None:
        return fold_of(feedback.user_ids, n_folds, random_state)
    rng = np.random.default_rng(random_state)
    return rng.permutation(np.arange(feedback.n_rounds) % n_folds)


def ridge_fold_statistics(X: np.ndarray, arms: np.ndarray, rewards: np.ndarray, folds: np.ndarray, n_arms: int,
                          n_folds: int) -> list[LinearStats]:
    """Per-fold per-arm ridge statistics of one chunk (merge them across chunks fold by fold)."""
    return [LinearStats.partial(X[folds == f], arms[folds == f], rewards[folds == f], n_arms) for f in range(n_folds)]


def ridge_fold_coefficients(fold_stats: list[LinearStats], l2: float = 1.0) -> np.ndarray:
    """(F, K, d+1) ridge coefficients of the model for each fold, fitted on every other fold."""
    total = fold_stats[0]
    for stats in fold_stats[1:]:
        total = total + stats
    n_arms, d = total.xty.shape
    coefficients = np.empty((len(fold_stats), n_arms, d))
    identity = l2 * np.eye(d)
    for f, stats in enumerate(fold_stats):
        for k in range(n_arms):
            coefficients[f, k] = np.linalg.solve(total.gram[k] - stats.gram[k] + identity,
                                                 total.xty[k] - stats.xty[k])
    return coefficients


def ridge_predict(X: np.ndarray, folds: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """(n, K) out-of-fold predictions: row i uses the model of its own fold."""
    Z = design(X, True)
    out = np.empty((len(X), coefficients.shape[1]))
    for f in range(coefficients.shape[0]):
        rows = folds == f
        out[rows] = Z[rows] @ coefficients[f].T
    return out


def cross_fit_rewards(feedback: LoggedFeedback, model="ridge", *, n_folds: int = 5, random_state: int = 0,
                      l2: float = 1.0, contexts: np.ndarray | None = None) -> np.ndarray:
    """(n, K) cross-fitted estimates of every arm's expected reward for every logged row.

    `contexts` (n, d') lets the reward model see more than the policy does: the logger may have targeted on features
    the target policy ignores, and a reward model without them is confounded (DM biased, DR noisier).
    """
    folds = assign_folds(feedback, n_folds, random_state)
    X = feedback.contexts if contexts is None else check_contexts(contexts, "reward_contexts")
    if len(X) != feedback.n_rounds:
        raise InputError(f"reward_contexts: expected {feedback.n_rounds} rows, got {len(X)}")
    arms, rewards = feedback.arms, feedback.rewards
    if isinstance(model, str):
        if model != "ridge":
            raise InputError(f"reward_model: unknown model {model!r}; use 'ridge', a scikit-learn estimator "
                             f"or an (n, K) array")
        stats = ridge_fold_statistics(X, arms, rewards, folds, feedback.n_arms, n_folds)
        return ridge_predict(X, folds, ridge_fold_coefficients(stats, l2))
    if not hasattr(model, "fit"):
        raise InputError(f"reward_model: expected 'ridge', a scikit-learn estimator or an array, got {type(model)}")
    out = np.empty((feedback.n_rounds, feedback.n_arms))
    for f in range(n_folds):
        test, train = folds == f, folds != f
        for k in range(feedback.n_arms):
            rows = train & (arms == k)
            fallback = rewards[rows].mean() if rows.any() else rewards[train].mean()
            out[test, k] = _fit_predict(model, X[rows], rewards[rows], X[test], fallback)
    return out


def _fit_predict(model, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, fallback: float) -> np.ndarray:
    """Fit a clone on one arm's training rows and predict; constant `fallback` when the rows cannot fit a model."""
    if len(X_test) == 0:
        return np.empty(0)
    if len(y_train) < 2 or np.unique(y_train).size < 2:
        return np.full(len(X_test), fallback)
    if is_classifier(model):
        fitted = clone(model).fit(X_train, y_train)
        classes = list(fitted.classes_)
        return fitted.predict_proba(X_test) @ np.asarray(classes, dtype=float)
    return clone(model).fit(X_train, y_train).predict(X_test)
