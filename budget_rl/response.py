"""Response models: P(user responds | user features, incentive level), the first stage of the two-stage allocator.

`ResponseModel` (plain): one histogram gradient-boosting classifier on the features plus the level as a
categorical feature, fitted on the logged decisions as they are. Logs come from a past targeting policy, so the
levels a user got depend on the user, and on anything the marketer knew that the log lacks; a model of the logs
then misstates the effect of a level for users who seldom got it.

`DebiasedResponseModel`: the documented simpler variant of the CIKM 2021 idea (an unbiased model on the small
randomized slice pulls the main model towards it), a selection-aware recalibration:
1. the main model is the plain model fitted on the non-randomized (targeted) logs;
2. a logging-policy model, a multinomial logistic regression of the logged level on the features (same rows),
   says how selectively each level was given at each x;
3. a correction fitted on the randomized slice only, where the level is independent of everything: a penalized
   logistic regression of the response on, per level, an intercept, the main model's logit and the log of the
   logging policy's probability of that level at x (3 J parameters, so a few thousand rows suffice). Where the
   marketer gave a level rarely, the few who got it were picked on something, and the main model overstates the
   level there; the last term learns how much, from the randomized users.
Variants measured and not offered (RESULTS.md section 5): inverse-propensity weights on the main model (better
calibrated, but its allocations are worth 0-9% less); per-level feature terms in the correction (they overfit).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from campaign_core import InputError

_EPS = 1e-6


def _levels(level, n: int, n_levels: int | None) -> tuple[np.ndarray, int]:
    codes = np.asarray(level)
    if codes.shape != (n,) or not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"level: must be {n} integer level codes, got shape {codes.shape} dtype {codes.dtype}")
    if n and codes.min() < 0:
        raise InputError(f"level: {int((codes < 0).sum())} codes are negative")
    count = int(codes.max()) + 1 if n_levels is None else int(n_levels)
    if n and codes.max() >= count:
        raise InputError(f"level: code {int(codes.max())} is outside 0..{count - 1}")
    return codes.astype(np.int64), count


def _responses(response, n: int) -> np.ndarray:
    values = np.asarray(response, dtype=float)
    if values.shape != (n,):
        raise InputError(f"response: must have {n} values, got shape {values.shape}")
    if not np.isin(values, (0.0, 1.0)).all():
        raise InputError(f"response: {int((~np.isin(values, (0.0, 1.0))).sum())} values are not 0 or 1")
    if np.unique(values).size < 2:
        raise InputError("response: needs both responders and non-responders")
    return values


def _as_labels(column: pd.Series, known: list[str] | None = None) -> pd.Series:
    """A categorical feature as string labels (whatever the stored type), missing as NA; labels outside `known`
    (categories unseen in training) become NA too."""
    labels = column.reset_index(drop=True).astype("string")
    return labels if known is None else labels.where(labels.isin(known))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class ResponseModel(BaseEstimator):
    """P(respond | x, level) by histogram gradient boosting on the features and the level (the plain model).

    Parameters are those of sklearn's HistGradientBoostingClassifier; `random_state` seeds it.
    Fitted: `feature_names_`, `categories_` (levels of each non-numeric feature), `n_levels_`, `model_`.
    """

    def __init__(self, max_iter: int = 200, learning_rate: float = 0.1, max_leaf_nodes: int = 31,
                 min_samples_leaf: int = 40, l2_regularization: float = 0.0, random_state: int | None = None):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.random_state = random_state

    def _design(self, features: pd.DataFrame, level: np.ndarray) -> pd.DataFrame:
        missing = [name for name in self.feature_names_ if name not in features.columns]
        if missing:
            raise InputError(f"features: missing column(s) {missing}")
        design = pd.DataFrame(index=range(len(features)))
        for name in self.feature_names_:
            column = features[name].reset_index(drop=True)
            if name in self.categories_:
                design[name] = pd.Categorical(_as_labels(column, self.categories_[name]),
                                              categories=self.categories_[name])
            else:
                design[name] = pd.to_numeric(column, errors="raise").astype(float)
        design["__level__"] = pd.Categorical(level, categories=range(self.n_levels_))
        return design

    def fit(self, features: pd.DataFrame, level, response, *, n_levels: int | None = None,
            sample_weight=None) -> ResponseModel:
        """Fit on logged decisions: features (DataFrame), the level each row got (codes), the 0/1 response."""
        if not isinstance(features, pd.DataFrame) or features.shape[1] == 0:
            raise InputError("features: must be a pandas DataFrame with at least one column")
        n = len(features)
        level, self.n_levels_ = _levels(level, n, n_levels)
        response = _responses(response, n)
        self.feature_names_ = list(features.columns)
        self.categories_ = {name: sorted(_as_labels(features[name]).dropna().unique())
                            for name in self.feature_names_ if not pd.api.types.is_numeric_dtype(features[name])}
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
            categorical_features="from_dtype", early_stopping=False, random_state=self.random_state,
        ).fit(self._design(features, level), response, sample_weight=sample_weight)
        return self

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Response probability of every user at every level, shape (n, n_levels)."""
        check_is_fitted(self, "model_")
        return np.column_stack([self.predict_at(features, np.full(len(features), j)) for j in range(self.n_levels_)])

    def predict_at(self, features: pd.DataFrame, level) -> np.ndarray:
        """Response probability of each row at its own level, shape (n,)."""
        check_is_fitted(self, "model_")
        level, _ = _levels(level, len(features), self.n_levels_)
        return self.model_.predict_proba(self._design(features, level))[:, 1]


def _logging_policy_model(features: pd.DataFrame, categorical: list[str]) -> Pipeline:
    numeric = [name for name in features.columns if name not in categorical]
    encode = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), numeric),
        ("categorical", make_pipeline(SimpleImputer(strategy="constant", fill_value="__missing__"),
                                      OneHotEncoder(handle_unknown="ignore")), categorical),
    ])
    return make_pipeline(encode, LogisticRegression(C=1.0, max_iter=2000))


class DebiasedResponseModel(BaseEstimator):
    """The plain model recalibrated on the randomized slice with the logging policy's selectivity (module docstring).

    correction_l2 : ridge penalty of the correction. max_policy_rows : rows (seeded sample) that fit the
    logging-policy model. Fitted: `main_` (ResponseModel), `logging_policy_` (sklearn pipeline), `correction_`
    (logistic regression on the randomized slice), `n_levels_`.
    """

    def __init__(self, max_iter: int = 200, learning_rate: float = 0.1, max_leaf_nodes: int = 31,
                 min_samples_leaf: int = 40, correction_l2: float = 1.0, max_policy_rows: int = 100_000,
                 random_state: int | None = None):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.correction_l2 = correction_l2
        self.max_policy_rows = max_policy_rows
        self.random_state = random_state

    def _log_logging_probability(self, features: pd.DataFrame) -> np.ndarray:
        """log P(logging policy gives level j | x), (n, J); levels the logs never gave get log(1e-4)."""
        probabilities = np.full((len(features), self.n_levels_), 1e-4)
        given = self.logging_policy_.predict_proba(self._policy_frame(features))
        probabilities[:, self.logging_policy_.classes_] = given
        return np.log(np.clip(probabilities, 1e-4, 1.0))

    def _policy_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """The features as the logging-policy model takes them: categories as objects, missing as None."""
        frame = features[self.main_.feature_names_].reset_index(drop=True)
        for name in self.main_.categories_:
            labels = _as_labels(frame[name])
            frame[name] = labels.astype(object).where(labels.notna(), None)
        return frame

    def _correction_design(self, level: np.ndarray, main_logit: np.ndarray, log_logging: np.ndarray) -> np.ndarray:
        n, n_levels = len(level), self.n_levels_
        design = np.zeros((n, 3 * n_levels))
        rows = np.arange(n)
        design[rows, level] = 1.0
        design[rows, n_levels + level] = main_logit
        design[rows, 2 * n_levels + level] = log_logging[rows, level]
        return design

    def fit(self, features: pd.DataFrame, level, response, randomized, *,
            n_levels: int | None = None) -> DebiasedResponseModel:
        """Fit on logged decisions; `randomized` marks the rows of the uniformly randomized slice (bool)."""
        if not isinstance(features, pd.DataFrame):
            raise InputError("features: must be a pandas DataFrame")
        n = len(features)
        level, self.n_levels_ = _levels(level, n, n_levels)
        response = _responses(response, n)
        randomized = np.asarray(randomized, dtype=bool)
        if randomized.shape != (n,):
            raise InputError(f"randomized: must have {n} flags, got shape {randomized.shape}")
        in_slice = int(randomized.sum())
        if in_slice < 20 * self.n_levels_:
            raise InputError(f"randomized: {in_slice} rows in the randomized slice; the correction needs at least "
                             f"{20 * self.n_levels_} (20 per level)")
        targeted = np.flatnonzero(~randomized)
        if np.unique(level[targeted]).size < 2:
            raise InputError("level: the targeted (non-randomized) rows hold fewer than 2 levels")
        self.main_ = ResponseModel(self.max_iter, self.learning_rate, self.max_leaf_nodes, self.min_samples_leaf,
                                   random_state=self.random_state)
        self.main_.fit(features.iloc[targeted], level[targeted], response[targeted], n_levels=self.n_levels_)
        sample = targeted
        if len(sample) > self.max_policy_rows:
            sample = np.sort(np.random.default_rng(self.random_state).choice(targeted, self.max_policy_rows,
                                                                              replace=False))
        policy_features = self._policy_frame(features.iloc[sample])
        self.logging_policy_ = _logging_policy_model(policy_features, list(self.main_.categories_))
        self.logging_policy_.fit(policy_features, level[sample])
        rows = np.flatnonzero(randomized)
        sliced = features.iloc[rows]
        main_logit = _logit(self.main_.predict_at(sliced, level[rows]))
        self.correction_ = LogisticRegression(C=1.0 / self.correction_l2, fit_intercept=False, max_iter=2000)
        self.correction_.fit(self._correction_design(level[rows], main_logit, self._log_logging_probability(sliced)),
                             response[rows])
        return self

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Response probability of every user at every level, shape (n, n_levels)."""
        check_is_fitted(self, "correction_")
        main = self.main_.predict_proba(features)
        log_logging = self._log_logging_probability(features)
        return np.column_stack([
            self.correction_.predict_proba(self._correction_design(np.full(len(main), j), _logit(main[:, j]),
                                                                   log_logging))[:, 1]
            for j in range(self.n_levels_)])

    def predict_at(self, features: pd.DataFrame, level) -> np.ndarray:
        """Response probability of each row at its own level, shape (n,)."""
        check_is_fitted(self, "correction_")
        level, _ = _levels(level, len(features), self.n_levels_)
        main_logit = _logit(self.main_.predict_at(features, level))
        return self.correction_.predict_proba(
            self._correction_design(level, main_logit, self._log_logging_probability(features)))[:, 1]
