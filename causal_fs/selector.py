"""`HTEFeatureSelector`: the filters as a scikit-learn feature selector (fit / transform / get_support)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted

from campaign_core import InputError
from causal_fs.options import BIN_METHODS, TEST_METHODS
from causal_fs.scoring import FeatureScores, score_features
from causal_fs.significance import minimum_permutations


def primary_method(methods: Sequence[str]) -> str:
    """The score that ranks and selects: `combined` when HIE and HDD are both asked for, else the first method."""
    methods = list(methods)
    if "combined" in methods or ("hie" in methods and "hdd" in methods):
        return "combined"
    return methods[0]


def select_features(scores: FeatureScores | pd.DataFrame, method: str, alpha: float = 0.05, k: int | None = None
                    ) -> list[str]:
    """Features whose BH q-value (or analytic p-value for f/lr; all when there are no p-values) is at most
    `alpha`, best `method` score first, at most `k`."""
    if isinstance(scores, FeatureScores):
        scores = scores.table
    ranked = scores.sort_values(method, ascending=False, kind="stable")
    column = f"q_{method}" if f"q_{method}" in ranked else (f"p_{method}" if f"p_{method}" in ranked else None)
    if column is not None:
        ranked = ranked[ranked[column] <= alpha]
    names = list(ranked.index)
    return names if k is None else names[:k]


class HTEFeatureSelector(SelectorMixin, BaseEstimator):
    """Keep the features that change which arm is best, at false discovery rate `alpha` (Benjamini-Hochberg over
    permutation p-values), optionally capped at the top `k` by score.

    `fit(X, y, arms=...)` takes a DataFrame (or array, with columns named x0, x1, ...), the rewards and the
    arm of every row (and optionally `propensity`, and `groups`: the user of every row, scikit-learn's name for
    it, so that permutations and bootstrap replicates move whole users when users repeat). With
    `n_permutations=0` there are no p-values for the bin scores and the top `k` (all when k is None) are kept.
    Fitted: `scores_` (the `score_features` table), `selected_` (names, best first), `feature_names_in_`,
    `n_features_in_`.
    """

    def __init__(self, methods: Sequence[str] = ("hie", "hdd"), n_bins: int = 10, alpha: float = 0.05,
                 k: int | None = None, n_permutations: int = 200, random_state: int | None = None):
        self.methods = methods
        self.n_bins = n_bins
        self.alpha = alpha
        self.k = k
        self.n_permutations = n_permutations
        self.random_state = random_state

    def fit(self, X, y, arms=None, propensity=None, groups=None):
        if arms is None:
            raise InputError("arms: fit needs the arm of every row (fit(X, y, arms=...))")
        if not 0 < self.alpha <= 1:
            raise InputError(f"alpha: must be in (0, 1], got {self.alpha!r}")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1):
            raise InputError(f"k: must be None or an integer >= 1, got {self.k!r}")
        if 0 < self.n_permutations < minimum_permutations(np.shape(X)[1], self.alpha):
            warnings.warn(f"n_permutations={self.n_permutations} is too few for {np.shape(X)[1]} features at "
                          f"alpha={self.alpha}: a single strong feature cannot reach q <= alpha; use at least "
                          f"{minimum_permutations(np.shape(X)[1], self.alpha)}", UserWarning, stacklevel=2)
        frame = X.copy() if isinstance(X, pd.DataFrame) else pd.DataFrame(
            np.asarray(X), columns=[f"x{i}" for i in range(np.shape(X)[1])])
        names = [str(column) for column in frame.columns]
        frame.columns = names
        if len(frame) != len(y) or len(frame) != len(arms):
            raise InputError(f"X, y, arms: lengths differ ({len(frame)}, {len(y)}, {len(arms)})")
        frame["__arm__"] = np.asarray(arms)
        frame["__reward__"] = np.asarray(y, dtype=np.float64)
        propensity_col = None
        if propensity is not None:
            frame["__propensity__"] = np.asarray(propensity, dtype=np.float64)
            propensity_col = "__propensity__"
        user_col = None
        if groups is not None:
            if len(groups) != len(frame):
                raise InputError(f"groups: {len(groups)} values for {len(frame)} rows")
            frame["__user__"] = np.asarray(groups)
            user_col = "__user__"
        self.scores_ = score_features(frame, names, arm_col="__arm__", reward_col="__reward__",
                                      methods=tuple(self.methods), n_bins=self.n_bins, propensity_col=propensity_col,
                                      user_col=user_col, n_permutations=self.n_permutations,
                                      random_state=self.random_state).to_frame()
        method = primary_method(self.methods)
        significance = method in TEST_METHODS or (method in BIN_METHODS and self.n_permutations > 0)
        self.selected_ = select_features(self.scores_, method, self.alpha if significance else 1.0, self.k)
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(names)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "selected_")
        return np.isin(self.feature_names_in_, self.selected_)
