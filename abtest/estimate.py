"""Effect estimators for (cluster-)randomized experiments, with variance at the randomization unit.

- `difference_in_means`: mean of treated minus mean of control (a Hajek ratio), standard error from the
  cluster-robust (CR1) sandwich of the regression y ~ 1 + treated with the randomization units as clusters;
  with a pre-period `covariate` it is CUPED: y - theta (x - mean x), theta = cov(x, y) / var(x) pooled.
- `exposure_estimate`: Horvitz-Thompson and Hajek estimators over users exposed to treatment / control, weighted by
  1 / P(exposure). Variance from the linearized estimator summed per randomization unit. For Horvitz-Thompson, given
  `exposure_units` (`abtest.exposure.exposure_units`), each user's term is summed into *every* randomization coin
  their exposure depends on (their own unit's and each neighbour's), not just their own: a user exposed through
  three clusters moves with all three coins. Measured (benchmarks/bench_abtest_designs.py): under cluster Bernoulli
  with full exposure that takes Horvitz-Thompson's mean SE / SD from 0.35-0.50 (own unit only) to 0.92-0.95
  (coverage 0.94-0.96); under the paired and user designs, where users touch more coins, it is conservative
  (1.1-2.4 and 1.9-2.8). Hajek keeps the own-unit sum: it is already calibrated (SE / SD 0.88-1.04) and the wider
  sum makes it conservative (1.3-1.7).
- `network_effect_test`: Saveski et al.: the cluster-randomized arm's effect minus the user-randomized arm's, a
  z-test of no interference (the arms are independent halves of the clusters).

Intervals and p-values use Student's t with (randomization units - 1) degrees of freedom, honest with few clusters.
An arm without users gives NaN figures and a note, never an exception.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
from scipy import sparse, stats

from campaign_core import InputError


@dataclass(frozen=True)
class Effect:
    """An effect estimate: absolute (outcome units) and relative (share of the control mean) lift with intervals."""

    estimator: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    relative_lift: float
    relative_ci_low: float
    relative_ci_high: float
    control_mean: float
    n_treatment: int
    n_control: int
    n_units: int
    note: str = ""

    def to_frame(self) -> pd.DataFrame:
        """One row: the estimator's name, every figure, and the note."""
        return effects_frame((self,))

    def summary(self) -> dict[str, float]:
        """The figures (everything but the estimator's name and the note)."""
        return {name: value for name, value in asdict(self).items() if name not in ("estimator", "note")}


@dataclass(frozen=True)
class NetworkEffectTest:
    """Cluster-randomized minus user-randomized effect: non-zero means users interfere (Saveski et al. 2017)."""

    user_randomized: Effect
    cluster_randomized: Effect
    difference: float
    se: float
    z: float
    p_value: float

    def to_frame(self) -> pd.DataFrame:
        """One row per arm's estimator (`user_randomized`, `cluster_randomized`), columns of `Effect`."""
        return effects_frame((self.user_randomized, self.cluster_randomized))

    def summary(self) -> dict[str, float]:
        return {"difference": self.difference, "se": self.se, "z": self.z, "p_value": self.p_value}


EFFECT_COLUMNS = tuple(field.name for field in fields(Effect))


def effects_frame(effects) -> pd.DataFrame:
    """One row per `Effect`, columns `EFFECT_COLUMNS`."""
    return pd.DataFrame([asdict(effect) for effect in effects], columns=list(EFFECT_COLUMNS))


def difference_in_means(y, treated, unit, *, covariate=None, alpha: float = 0.05,
                        estimator: str | None = None) -> Effect:
    """Treated mean minus control mean with cluster-robust SE over randomization units `unit` (CUPED when a
    pre-period `covariate` is given)."""
    y, treated, unit = np.asarray(y, dtype=float), np.asarray(treated).astype(bool), np.asarray(unit)
    name = estimator or ("cuped" if covariate is not None else "difference_in_means")
    n1, n0 = int(treated.sum()), int((~treated).sum())
    if n1 == 0 or n0 == 0:
        return _empty(name, n1, n0, unit, "an arm has no users")
    if covariate is not None:
        x = np.asarray(covariate, dtype=float)
        variance = x.var(ddof=1)
        theta = np.cov(x, y)[0, 1] / variance if variance > 0 else 0.0
        y = y - theta * (x - x.mean())
    design = np.column_stack([np.ones_like(y), treated.astype(float)])
    beta, cov, n_units = _cluster_robust_ols(design, y, unit)
    return _effect(name, beta[1], cov[1, 1], beta[0], cov[0, 0], cov[0, 1], n1, n0, n_units, alpha)


def exposure_estimate(y, exposed_treatment, exposed_control, p_treatment, p_control, unit, *, kind: str = "hajek",
                      alpha: float = 0.05, exposure_units=None) -> Effect:
    """Horvitz-Thompson (kind="horvitz_thompson") or Hajek (kind="hajek") estimate of the global effect from the
    users exposed to each condition, over users whose two exposure probabilities are positive.

    unit: each user's randomization unit (the intervals' degrees of freedom, and Hajek's variance).
    exposure_units: for Horvitz-Thompson's variance, a users x coins 0/1 sparse matrix of the randomization coins
        each user's exposure depends on (`abtest.exposure.exposure_units`, rows in the order of `y`); None sums each
        user into their own unit only (optimistic when exposures reach across units; module docstring).
    """
    if kind not in ("horvitz_thompson", "hajek"):
        raise InputError(f"kind: must be 'horvitz_thompson' or 'hajek', got {kind!r}")
    y = np.asarray(y, dtype=float)
    p1, p0 = np.asarray(p_treatment, dtype=float), np.asarray(p_control, dtype=float)
    unit = np.asarray(unit)
    eligible = (p1 > 0) & (p0 > 0)
    e1 = np.asarray(exposed_treatment).astype(bool) & eligible
    e0 = np.asarray(exposed_control).astype(bool) & eligible
    n1, n0, n = int(e1.sum()), int(e0.sum()), int(eligible.sum())
    if n1 == 0 or n0 == 0:
        return _empty(kind, n1, n0, unit[eligible], "no user is exposed to one of the conditions")
    w1 = np.where(e1, 1.0 / np.where(eligible, p1, 1.0), 0.0)
    w0 = np.where(e0, 1.0 / np.where(eligible, p0, 1.0), 0.0)
    if kind == "horvitz_thompson":
        mean1, mean0 = (w1 * y).sum() / n, (w0 * y).sum() / n
        influence1, influence0 = w1 * y / n, w0 * y / n
        centred = True
    else:
        mean1, mean0 = (w1 * y).sum() / w1.sum(), (w0 * y).sum() / w0.sum()
        influence1, influence0 = w1 * (y - mean1) / w1.sum(), w0 * (y - mean0) / w0.sum()
        centred = False
    _, unit_index = np.unique(unit, return_inverse=True)
    n_units = int(np.unique(unit_index[eligible]).size)
    if centred and exposure_units is not None:
        coins = _checked_exposure_units(exposure_units, len(y))
        terms = np.column_stack([influence1, influence0])
        terms[eligible] -= terms[eligible].mean(axis=0)
        terms[~eligible] = 0.0
        totals = np.asarray(coins.T @ terms)
        totals = totals[np.asarray(coins[eligible].sum(axis=0)).ravel() > 0]
    else:
        totals = np.column_stack([np.bincount(unit_index, influence1), np.bincount(unit_index, influence0)])
        totals = totals[np.bincount(unit_index[eligible], minlength=len(totals)) > 0]
        if centred:
            totals = totals - totals.mean(axis=0)
    n_coins = len(totals)
    cov = totals.T @ totals * (n_coins / max(n_coins - 1, 1))
    if n_units < 2:
        cov = np.full((2, 2), np.nan)
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    # In (mean_control, difference) coordinates for the relative lift's delta method.
    return _effect(kind, mean1 - mean0, variance, mean0, cov[1, 1], cov[0, 1] - cov[1, 1], n1, n0, n_units, alpha)


def network_effect_test(y, treated, unit, design, *, alpha: float = 0.05) -> NetworkEffectTest:
    """Compare the effect in the cluster-randomized half (`design` == "cluster") with the user-randomized half
    (`design` == "user"); each arm's SE is at its own randomization unit (users in the "user" arm)."""
    y, treated, unit, design = (np.asarray(v) for v in (y, treated, unit, design))
    user_rows, cluster_rows = design == "user", design == "cluster"
    user_ids = np.arange(len(y))
    by_user = difference_in_means(y[user_rows], treated[user_rows], user_ids[user_rows], alpha=alpha,
                                  estimator="user_randomized")
    by_cluster = difference_in_means(y[cluster_rows], treated[cluster_rows], unit[cluster_rows], alpha=alpha,
                                     estimator="cluster_randomized")
    difference = by_cluster.estimate - by_user.estimate
    se = float(np.hypot(by_cluster.se, by_user.se))
    z = difference / se if se > 0 else np.nan
    return NetworkEffectTest(by_user, by_cluster, float(difference), se, float(z),
                             float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else np.nan)


def _checked_exposure_units(exposure_units, n: int) -> sparse.csr_matrix:
    if not sparse.issparse(exposure_units) or exposure_units.ndim != 2 or exposure_units.shape[0] != n:
        shape = getattr(exposure_units, "shape", None)
        raise InputError(f"exposure_units: need a sparse matrix with one row per user ({n}), got {shape}")
    return sparse.csr_matrix(exposure_units)


def _cluster_robust_ols(design: np.ndarray, y: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """OLS coefficients and their CR1 covariance (units as clusters, small-sample factor G/(G-1) (n-1)/(n-k))."""
    bread = np.linalg.pinv(design.T @ design)
    beta = bread @ design.T @ y
    residual = y - design @ beta
    _, unit_index = np.unique(unit, return_inverse=True)
    n_units = int(unit_index.max()) + 1
    scores = np.zeros((n_units, design.shape[1]))
    np.add.at(scores, unit_index, design * residual[:, None])
    n, k = design.shape
    if n_units < 2 or n <= k:
        return beta, np.full((k, k), np.nan), n_units
    factor = n_units / (n_units - 1) * (n - 1) / (n - k)
    return beta, factor * bread @ (scores.T @ scores) @ bread, n_units


def _effect(name, difference, variance, control_mean, control_variance, covariance, n1, n0, n_units, alpha):
    se = float(np.sqrt(variance)) if np.isfinite(variance) and variance >= 0 else np.nan
    df = max(n_units - 1, 1)
    quantile = stats.t.ppf(1 - alpha / 2, df)
    t = difference / se if se and np.isfinite(se) and se > 0 else np.nan
    p_value = float(2 * stats.t.sf(abs(t), df)) if np.isfinite(t) else np.nan
    relative = difference / control_mean if control_mean else np.nan
    if control_mean and np.isfinite(se):
        gradient = np.array([-difference / control_mean ** 2, 1.0 / control_mean])
        matrix = np.array([[control_variance, covariance], [covariance, variance]])
        relative_se = float(np.sqrt(max(gradient @ matrix @ gradient, 0.0)))
    else:
        relative_se = np.nan
    return Effect(name, float(difference), se, float(difference - quantile * se), float(difference + quantile * se),
                  p_value, float(relative), float(relative - quantile * relative_se),
                  float(relative + quantile * relative_se), float(control_mean), n1, n0, int(n_units))


def _empty(name: str, n1: int, n0: int, unit: np.ndarray, note: str) -> Effect:
    nan = float("nan")
    return Effect(name, nan, nan, nan, nan, nan, nan, nan, nan, nan, n1, n0, int(np.unique(unit).size), note)
