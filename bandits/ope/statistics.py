"""Off-policy estimators as mergeable sums, so 10^7 logged rows on Dask cost one pass and a few hundred bytes per chunk.

Every estimator is a ratio of row sums, V = sum(num_i) / sum(den_i): the mean-type estimators (IPS, DM, DR,
Switch-DR, DR with shrinkage) have den_i = 1; SNIPS has num = w y, den = w; replay has num = m y, den = m with m the
indicator that the target's draw matches the logged arm. Five sums per estimator (num, den, num^2, den^2, num*den)
give the value and its delta-method standard error sqrt(sum (num_i - V den_i)^2) / sum den_i (times sqrt(n/(n-1))),
which for den = 1 is the usual standard error of a mean. Support diagnostics are sums too (weights, squared weights,
tiny-target count, the logged rewards) plus the largest weight.

Row quantities (w = pi(a_i|x_i) / propensity_i, q = reward model):
  ips        w y (w clipped at `clip` when given)         dm          sum_a pi(a|x_i) q(x_i, a)
  snips      w y / w                                      dr          dm_i + w (y - q(x_i, a_i))
  switch-dr  dm_i + w 1{w <= tau} (y - q(x_i, a_i))        dr-shrink   dm_i + w lambda / (w^2 + lambda) (y - q(...))
  replay     1{target draw = a_i} y / 1{target draw = a_i}  (Li et al. 2011; for uniform-random logs)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from campaign_core import InputError

ESTIMATORS = ("ips", "snips", "dm", "dr", "switch-dr", "dr-shrink", "replay")
NEEDS_REWARD_MODEL = frozenset({"dm", "dr", "switch-dr", "dr-shrink"})
#: Diagnostics: rows, sum w, sum w^2, rows with tiny target probability on the logged arm, largest w, sum of the
#: logged rewards.
_N, _SW, _SW2, _TINY, _MAXW, _REWARD = range(6)


@dataclass(frozen=True)
class EstimatorSettings:
    """Knobs of the estimators: IPS weight clip, Switch-DR threshold tau, DR shrinkage lambda, 'tiny' target."""

    clip: float | None = None
    switch_threshold: float = 10.0
    shrinkage: float = 10.0
    tiny_target: float = 1e-3

    def __post_init__(self) -> None:
        if self.clip is not None and not self.clip > 0:
            raise InputError(f"clip: must be > 0 (or None for no clipping), got {self.clip}")
        if not self.switch_threshold > 0:
            raise InputError(f"switch_threshold: must be > 0, got {self.switch_threshold}")
        if not self.shrinkage > 0:
            raise InputError(f"shrinkage: must be > 0, got {self.shrinkage}")


@dataclass(frozen=True)
class OPEStats:
    """Sums over logged rows: moments (E, 5) per estimator in `estimators` order, and diagnostics (6,)."""

    estimators: tuple[str, ...]
    moments: np.ndarray
    diagnostics: np.ndarray

    @classmethod
    def zeros(cls, estimators: tuple[str, ...]) -> OPEStats:
        """The sums of no rows (the neutral element of `merge`)."""
        return cls(tuple(estimators), np.zeros((len(estimators), 5)), np.zeros(6))

    def merge(self, other: OPEStats) -> OPEStats:
        if self.estimators != other.estimators:
            raise ValueError(f"estimators: cannot merge {self.estimators} with {other.estimators}")
        diagnostics = self.diagnostics + other.diagnostics
        diagnostics[_MAXW] = max(self.diagnostics[_MAXW], other.diagnostics[_MAXW])
        return OPEStats(self.estimators, self.moments + other.moments, diagnostics)

    __add__ = merge


def _moments(numerator: np.ndarray, denominator: np.ndarray | None) -> np.ndarray:
    if denominator is None:
        return np.array([numerator.sum(), numerator.size, numerator @ numerator, numerator.size, numerator.sum()])
    return np.array([numerator.sum(), denominator.sum(), numerator @ numerator, denominator @ denominator,
                     numerator @ denominator])


def ope_partial(estimators: tuple[str, ...], rewards: np.ndarray, target_on_logged: np.ndarray,
                propensities: np.ndarray, *, q_logged: np.ndarray | None = None, q_target: np.ndarray | None = None,
                replay_match: np.ndarray | None = None, settings: EstimatorSettings = EstimatorSettings()) -> OPEStats:
    """The sums of one chunk of logged rows.

    target_on_logged: pi(a_i|x_i), the target's probability of the logged arm; propensities: the logger's;
    q_logged: q(x_i, a_i); q_target: sum_a pi(a|x_i) q(x_i, a); replay_match: the target's draw equals a_i.
    """
    needs = {"replay": ("replay_match", replay_match)}
    for name in estimators:
        if name in NEEDS_REWARD_MODEL and (q_logged is None or q_target is None):
            raise InputError(f"{name}: needs the reward model's q_logged and q_target")
        if name in needs and needs[name][1] is None:
            raise InputError(f"{name}: needs {needs[name][0]}")
    weights = target_on_logged / propensities
    moments = np.empty((len(estimators), 5))
    residual = None if q_logged is None else rewards - q_logged
    for row, name in enumerate(estimators):
        if name == "ips":
            clipped = weights if settings.clip is None else np.minimum(weights, settings.clip)
            moments[row] = _moments(clipped * rewards, None)
        elif name == "snips":
            moments[row] = _moments(weights * rewards, weights)
        elif name == "replay":
            matched = replay_match.astype(np.float64)
            moments[row] = _moments(matched * rewards, matched)
        elif name == "dm":
            moments[row] = _moments(q_target, None)
        elif name == "dr":
            moments[row] = _moments(q_target + weights * residual, None)
        elif name == "switch-dr":
            moments[row] = _moments(q_target + np.where(weights <= settings.switch_threshold, weights, 0.0) * residual,
                                    None)
        elif name == "dr-shrink":
            shrunk = weights * settings.shrinkage / (weights * weights + settings.shrinkage)
            moments[row] = _moments(q_target + shrunk * residual, None)
        else:
            raise InputError(f"estimators: unknown estimator {name!r}; choose from {list(ESTIMATORS)}")
    diagnostics = np.array([weights.size, weights.sum(), weights @ weights,
                            (target_on_logged < settings.tiny_target).sum(), weights.max(initial=0.0),
                            rewards.sum()])
    return OPEStats(tuple(estimators), moments, diagnostics)


def finalize(stats: OPEStats, confidence: float = 0.95) -> pd.DataFrame:
    """One row per estimator: value, se, ci_low, ci_high, rows_used, logged_value (the mean logged reward: the
    logging policy's value on these rows) and the shared support diagnostics.

    effective_sample_size = (sum w)^2 / sum w^2 (Kish), ess_share = ESS / rows, tiny_target_share = share of rows
    where the target gives the logged arm probability below `tiny_target`, max_weight = largest pi / propensity.
    """
    if not 0 < confidence < 1:
        raise InputError(f"confidence: must be in (0, 1), got {confidence}")
    z = norm.ppf(0.5 + confidence / 2)
    rows = []
    n, sum_w, sum_w2, tiny, max_w, reward_sum = stats.diagnostics
    ess = sum_w * sum_w / sum_w2 if sum_w2 > 0 else 0.0
    for name, (s_num, s_den, s_nn, s_dd, s_nd) in zip(stats.estimators, stats.moments, strict=True):
        used = s_den if name in ("replay",) else n
        if s_den <= 0:
            value = se = np.nan
        else:
            value = s_num / s_den
            spread = max(s_nn - 2 * value * s_nd + value * value * s_dd, 0.0)
            se = np.sqrt(spread) / s_den * np.sqrt(used / (used - 1)) if used > 1 else np.nan
        rows.append({"estimator": name, "value": value, "se": se, "ci_low": value - z * se,
                     "ci_high": value + z * se, "rows_used": int(used)})
    table = pd.DataFrame(rows)
    table["logged_value"] = reward_sum / n if n else np.nan
    table["n_rounds"] = int(n)
    table["effective_sample_size"] = ess
    table["ess_share"] = ess / n if n else np.nan
    table["tiny_target_share"] = tiny / n if n else np.nan
    table["max_weight"] = max_w
    return table
