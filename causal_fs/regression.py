"""F and likelihood-ratio filters: does the arm interact with the feature in a regression of the reward?

Full model y ~ [1, T_2..T_K, x, T_2 x..T_K x], reduced model without the interactions (Zhao et al. with one
treatment indicator per non-control arm). Both are fitted on the per-(bin, arm) tables, so the filters scale like
the bin scores. Our reading:

- numeric feature: x is the mean of the feature in the row's bin (a grouped regression; with 10 quantile bins
  this is close to the raw-x regression), and rows with NaN take the overall mean;
- categorical feature: x is the set of level indicators, so the test is the arm x level interaction;
- F: weighted least squares; F = ((RSS_reduced - RSS_full) / df1) / (RSS_full / df2), df2 = rows - parameters;
- LR: binary rewards, grouped logistic regression, LR = 2 (loglik_full - loglik_reduced) ~ chi2(df1); real
  rewards, the Gaussian LR = rows * log(RSS_reduced / RSS_full).
The p-values are the analytic ones (F and chi-square), not permutation p-values. With propensities, cell means
are inverse-propensity weighted and each cell counts as its effective number of rows W^2 / sum(w^2) (Kish), so
the statistics stay on the scale of the rows actually observed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

RIDGE = 1e-8


@dataclass(frozen=True)
class InteractionTest:
    statistic: float
    p_value: float
    df: int


def _designs(x_per_bin: np.ndarray | None, bins: int, arms: int, control: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell-level designs (bins*arms rows, cell (b, k) at row b*arms + k) of the reduced and full models."""
    arm_of_cell = np.tile(np.arange(arms), bins)
    treatments = np.stack([arm_of_cell == k for k in range(arms) if k != control], axis=1).astype(float)
    if x_per_bin is None:  # categorical: level indicators, first level as the reference
        bin_of_cell = np.repeat(np.arange(bins), arms)
        covariate = np.stack([bin_of_cell == b for b in range(1, bins)], axis=1).astype(float)
    else:
        covariate = np.repeat(x_per_bin, arms)[:, None]
    reduced = np.hstack([np.ones((bins * arms, 1)), treatments, covariate])
    interactions = (treatments[:, :, None] * covariate[:, None, :]).reshape(bins * arms, -1)
    return reduced, np.hstack([reduced, interactions])


def _wls_rss(design: np.ndarray, mean: np.ndarray, weight: np.ndarray) -> tuple[float, int]:
    """Between-cell residual sum of squares of a WLS fit of cell means, and the design's rank."""
    root = np.sqrt(weight)
    coefficients, *_ = np.linalg.lstsq(design * root[:, None], mean * root, rcond=None)
    rank = np.linalg.matrix_rank(design * root[:, None])
    return float((weight * (mean - design @ coefficients) ** 2).sum()), int(rank)


def _logistic_loglik(design: np.ndarray, successes: np.ndarray, trials: np.ndarray) -> float:
    """Maximized grouped-binomial log-likelihood (Newton steps with step halving and a tiny ridge)."""
    beta = np.zeros(design.shape[1])

    def loglik(b: np.ndarray) -> float:
        eta = design @ b
        return float((successes * eta - trials * np.logaddexp(0.0, eta)).sum()) - 0.5 * RIDGE * float(b @ b)

    current = loglik(beta)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        gradient = design.T @ (successes - trials * p) - RIDGE * beta
        hessian = (design * (trials * p * (1 - p))[:, None]).T @ design + RIDGE * np.eye(len(beta))
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        scale = 1.0
        while scale > 1e-6:
            candidate = beta + scale * step
            value = loglik(candidate)
            if value >= current - 1e-12:
                break
            scale /= 2
        improvement = value - current
        beta, current = candidate, value
        if improvement < 1e-10:
            break
    return current + 0.5 * RIDGE * float(beta @ beta)


def interaction_tests(weight: np.ndarray, wy: np.ndarray, wyy: np.ndarray, x_per_bin: np.ndarray | None,
                      control: int, binary: bool) -> tuple[InteractionTest, InteractionTest]:
    """F and LR tests for one feature from its (bins, arms) tables of (effective) rows, reward sums and sums of
    squares; `x_per_bin` None for a categorical feature."""
    bins, arms = weight.shape
    reduced, full = _designs(x_per_bin, bins, arms, control)
    flat = [array.ravel() for array in (weight, wy, wyy)]
    keep = flat[0] > 0
    cell_weight, cell_wy, cell_wyy = (array[keep] for array in flat)
    reduced, full = reduced[keep], full[keep]
    mean = cell_wy / cell_weight
    within = float(np.maximum(cell_wyy - cell_wy * mean, 0.0).sum())
    between_reduced, rank_reduced = _wls_rss(reduced, mean, cell_weight)
    between_full, rank_full = _wls_rss(full, mean, cell_weight)
    rss_reduced, rss_full = within + between_reduced, within + between_full
    n_rows = float(cell_weight.sum())
    df1, df2 = rank_full - rank_reduced, n_rows - rank_full
    if df1 <= 0 or df2 <= 0 or rss_full <= 0:
        no_test = InteractionTest(0.0, 1.0, max(df1, 0))
        return no_test, no_test
    f_value = max((rss_reduced - rss_full) / df1 / (rss_full / df2), 0.0)
    f_test = InteractionTest(f_value, float(stats.f.sf(f_value, df1, df2)), df1)
    if binary:
        lr_value = 2 * (_logistic_loglik(full, cell_wy, cell_weight) - _logistic_loglik(reduced, cell_wy, cell_weight))
    else:
        lr_value = n_rows * np.log(rss_reduced / rss_full)
    lr_value = max(float(lr_value), 0.0)
    return f_test, InteractionTest(lr_value, float(stats.chi2.sf(lr_value, df1)), df1)
