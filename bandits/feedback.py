"""The logged feedback every policy and estimator understands: who saw which arm, with what probability, and the reward.

`LoggedFeedback` is typed and validated on construction, so a policy or an OPE estimator never meets a NaN context,
a zero propensity or an arm code outside 0..K-1. Arms are labels (strings or ints) in `arm_labels`; inside, they are
codes into that tuple.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from campaign_core import InputError, plain, sorted_labels


def _count(mask: np.ndarray) -> str:
    return f"{int(mask.sum())} of {mask.size} rows"


def check_contexts(contexts: np.ndarray, name: str = "contexts", n_features: int | None = None) -> np.ndarray:
    """Contexts as a finite float64 (n, d) array; one-line ValueError naming the problem otherwise."""
    array = np.asarray(contexts, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise InputError(f"{name}: expected a 2-d array (rows, features), got {array.ndim} dimensions")
    if n_features is not None and array.shape[1] != n_features:
        raise InputError(f"{name}: expected {n_features} features, got {array.shape[1]}")
    bad = ~np.isfinite(array)
    if bad.any():
        rows = bad.any(axis=1)
        column = int(np.flatnonzero(bad.any(axis=0))[0])
        raise InputError(f"{name}: NaN or inf in {_count(rows)} (first in feature {column}); impute before fitting")
    return array


def check_propensities(propensities: np.ndarray, name: str = "propensity") -> np.ndarray:
    """Logging propensities as float64 in (0, 1]; one-line ValueError naming the problem otherwise."""
    values = np.asarray(propensities, dtype=np.float64).ravel()
    for problem, mask in (("missing or NaN", ~np.isfinite(values)), ("zero or negative", values <= 0),
                          ("above 1", values > 1)):
        if mask.any():
            raise InputError(f"{name}: {problem} in {_count(mask)}; propensities must lie in (0, 1]")
    return values


def check_target_probabilities(probabilities: np.ndarray, n_rounds: int, n_arms: int,
                               name: str = "target_probabilities", atol: float = 1e-6) -> np.ndarray:
    """A target policy's (n, K) action probabilities: right shape, in [0, 1], each row summing to 1."""
    array = np.asarray(probabilities, dtype=np.float64)
    if array.shape != (n_rounds, n_arms):
        raise InputError(f"{name}: expected shape ({n_rounds}, {n_arms}) (rows, arms), got {array.shape}")
    bad = ~np.isfinite(array).all(axis=1) | (array < -atol).any(axis=1) | (array > 1 + atol).any(axis=1)
    if bad.any():
        raise InputError(f"{name}: values outside [0, 1] or NaN in {_count(bad)}")
    off = np.abs(array.sum(axis=1) - 1.0) > atol
    if off.any():
        raise InputError(f"{name}: rows do not sum to 1 in {_count(off)} "
                         f"(worst sum {array.sum(axis=1)[off][0]:.6g})")
    return np.clip(array, 0.0, 1.0)


def encode_arms(labels: np.ndarray, arm_labels: Sequence, name: str = "arm") -> np.ndarray:
    """Codes 0..K-1 of arm labels; ValueError naming the unknown labels when some are not in `arm_labels`."""
    index = pd.Index(list(arm_labels))
    codes = index.get_indexer(pd.Index(np.asarray(labels, dtype=object) if index.dtype == object else labels))
    unknown = codes < 0
    if unknown.any():
        examples = list(sorted_labels(set(np.asarray(labels, dtype=object)[unknown][:1000].tolist())))[:5]
        raise InputError(f"{name}: {_count(unknown)} have arms unknown to the policy {examples}; "
                         f"known arms: {[plain(arm) for arm in arm_labels]}")
    return codes.astype(np.int64)


@dataclass(frozen=True, eq=False)
class LoggedFeedback:
    """Logged bandit feedback: n rounds of (context, arm, reward, logging propensity).

    contexts: (n, d) float64, finite. arms: (n,) int64 codes into `arm_labels`. rewards: (n,) float64 (reward units,
    e.g. 1 = purchase). propensities: (n,) probability in (0, 1] with which the logger chose the logged arm, or None
    when unknown (then only on-policy summaries and replay-free learners can use the logs). costs: (n,) >= 0 in
    currency units, optional. user_ids: (n,) optional, used for user-level cross-fitting folds.
    """

    contexts: np.ndarray
    arms: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray | None
    arm_labels: tuple
    feature_names: tuple[str, ...] = ()
    costs: np.ndarray | None = None
    user_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        labels = tuple(self.arm_labels)
        if len(labels) < 2:
            raise InputError(f"arm_labels: need at least 2 arms, got {len(labels)}")
        if len(set(labels)) != len(labels):
            raise InputError(f"arm_labels: duplicated labels in {[plain(label) for label in labels]}")
        contexts = check_contexts(self.contexts)
        n = contexts.shape[0]
        if n == 0:
            raise InputError("feedback: no rows")
        arms = np.asarray(self.arms)
        if arms.shape != (n,):
            raise InputError(f"arm: expected {n} rows, got shape {arms.shape}")
        if not np.issubdtype(arms.dtype, np.integer):
            raise InputError(f"arm: expected integer codes into arm_labels, got dtype {arms.dtype}")
        outside = (arms < 0) | (arms >= len(labels))
        if outside.any():
            raise InputError(f"arm: codes outside 0..{len(labels) - 1} in {_count(outside)}")
        rewards = np.asarray(self.rewards, dtype=np.float64)
        if rewards.shape != (n,):
            raise InputError(f"reward: expected {n} rows, got shape {rewards.shape}")
        if not np.isfinite(rewards).all():
            raise InputError(f"reward: NaN or inf in {_count(~np.isfinite(rewards))}")
        propensities = None if self.propensities is None else check_propensities(self.propensities)
        if propensities is not None and propensities.shape != (n,):
            raise InputError(f"propensity: expected {n} rows, got shape {propensities.shape}")
        costs = None
        if self.costs is not None:
            costs = np.asarray(self.costs, dtype=np.float64)
            if costs.shape != (n,) or not np.isfinite(costs).all() or (costs < 0).any():
                raise InputError("cost: expected one finite value >= 0 per row")
        user_ids = None if self.user_ids is None else np.asarray(self.user_ids)
        if user_ids is not None and user_ids.shape != (n,):
            raise InputError(f"user_id: expected {n} rows, got shape {user_ids.shape}")
        names = tuple(self.feature_names) or tuple(f"x{j}" for j in range(contexts.shape[1]))
        if len(names) != contexts.shape[1]:
            raise InputError(f"feature_names: {len(names)} names for {contexts.shape[1]} context columns")
        for key, value in (("contexts", contexts), ("arms", arms.astype(np.int64, copy=False)), ("rewards", rewards),
                           ("propensities", propensities), ("costs", costs), ("arm_labels", labels),
                           ("feature_names", names), ("user_ids", user_ids)):
            object.__setattr__(self, key, value)

    @property
    def n_rounds(self) -> int:
        return self.contexts.shape[0]

    @property
    def n_arms(self) -> int:
        return len(self.arm_labels)

    @property
    def n_features(self) -> int:
        return self.contexts.shape[1]

    def arm_names(self) -> np.ndarray:
        """The logged arms as labels."""
        return np.asarray(self.arm_labels, dtype=object)[self.arms]

    def require_propensities(self, purpose: str) -> np.ndarray:
        if self.propensities is None:
            raise InputError(f"propensity: {purpose} needs the logging propensities, and these logs have none")
        return self.propensities

    def subset(self, rows: np.ndarray | slice) -> LoggedFeedback:
        """The feedback of some rows (an index array, a boolean mask or a slice), same arms and features."""
        def take(values):
            return None if values is None else values[rows]

        return LoggedFeedback(self.contexts[rows], self.arms[rows], self.rewards[rows], take(self.propensities),
                              self.arm_labels, self.feature_names, take(self.costs), take(self.user_ids))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, features, *, arm: str = "arm", reward: str = "reward",
                   propensity: str | None = "propensity", cost: str | None = None, user_id: str | None = None,
                   arms: Sequence | None = None) -> LoggedFeedback:
        """Build from a decision-log DataFrame; `arms` fixes the arm order (default: sorted labels in the logs).

        `features` is a list of numeric, finite columns, or a `bandits.ContextEncoder` (fitted on this frame if it
        is not fitted yet; without a feature list it takes every column except arm, reward, propensity, cost and
        user id) that encodes categories and missing values into the contexts.
        """
        encoder = features if hasattr(features, "transform") else None
        columns = list(encoder.features) if encoder is not None and encoder.features is not None else (
            [] if encoder is not None else list(features))
        wanted = [*columns, arm, reward, *(c for c in (propensity, cost, user_id) if c)]
        missing = [column for column in wanted if column not in frame.columns]
        if missing:
            raise InputError(f"feedback: columns not in the frame: {missing}")
        if encoder is not None:
            if not hasattr(encoder, "features_"):  # an encoder of "all columns" means all but the log's own
                log_columns = [c for c in (arm, reward, propensity, cost, user_id) if c]
                encoder.fit(frame if encoder.features is not None else frame.drop(columns=log_columns))
            contexts, names = encoder.transform(frame), list(encoder.feature_names_out_)
        else:
            if not columns:
                raise InputError("features: need at least one context column")
            non_numeric = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
            if non_numeric:
                raise InputError(f"features: non-numeric columns {non_numeric}; encode them first "
                                 f"(pass a bandits.ContextEncoder as features)")
            contexts, names = frame[columns].to_numpy(dtype=np.float64, na_value=np.nan), columns
            bad = ~np.isfinite(contexts)
            if bad.any():
                column = columns[int(np.flatnonzero(bad.any(axis=0))[0])]
                raise InputError(f"{column}: NaN or inf in {_count(bad.any(axis=1))}; impute before fitting "
                                 f"(or pass a bandits.ContextEncoder as features)")
        labels = frame[arm]
        if labels.isna().any():
            raise InputError(f"{arm}: missing arm in {_count(labels.isna().to_numpy())}")
        arm_labels = tuple(arms) if arms is not None else sorted_labels(pd.unique(labels).tolist())
        if not pd.api.types.is_numeric_dtype(frame[reward]):
            raise InputError(f"{reward}: rewards must be numeric, got dtype {frame[reward].dtype}")
        rewards = frame[reward].to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(rewards).all():
            raise InputError(f"{reward}: NaN or inf in {_count(~np.isfinite(rewards))}")
        propensities = None
        if propensity:
            propensities = check_propensities(frame[propensity].to_numpy(dtype=np.float64, na_value=np.nan),
                                              name=propensity)
        return cls(contexts, encode_arms(labels.to_numpy(), arm_labels, name=arm), rewards, propensities,
                   arm_labels, tuple(names),
                   None if cost is None else frame[cost].to_numpy(dtype=np.float64),
                   None if user_id is None else frame[user_id].to_numpy())

    def to_frame(self) -> pd.DataFrame:
        """Back to a decision-log DataFrame: features, arm (labels), reward, and propensity/cost/user_id if present."""
        frame = pd.DataFrame(self.contexts, columns=list(self.feature_names))
        if self.user_ids is not None:
            frame.insert(0, "user_id", self.user_ids)
        frame["arm"] = self.arm_names()
        frame["reward"] = self.rewards
        if self.propensities is not None:
            frame["propensity"] = self.propensities
        if self.costs is not None:
            frame["cost"] = self.costs
        return frame


@dataclass(frozen=True)
class LogReader:
    """How a chunk of a decision-log table becomes `LoggedFeedback`: a fitted encoder for the contexts (a
    `bandits.ContextEncoder`), the arm labels in code order and the column names. Statistics that learn or
    evaluate chunk by chunk take one to read table chunks; a chunk without rows reads as None."""

    encoder: object
    arms: tuple
    arm: str = "arm"
    reward: str = "reward"
    propensity: str | None = "propensity"
    user_id: str | None = "user_id"

    def __call__(self, chunk: pd.DataFrame) -> LoggedFeedback | None:
        if len(chunk) == 0:
            return None
        return LoggedFeedback.from_frame(chunk, self.encoder, arm=self.arm, reward=self.reward,
                                         propensity=self.propensity, user_id=self.user_id, arms=self.arms)
