"""Heterogeneity scores computed from per-(feature, bin, arm) tables; pure functions over arrays.

Every function takes arrays whose last three axes are (features, bins, arms), with any leading axes (the
replicates of a permutation test or a bootstrap), and returns one score per leading index and feature.

Formulas: docs/feature_selection.md, 'Definitions'. Where the paper is silent, our readings (also in
docs/feature_selection.md, 'How it works, and the readings we chose'):

- Cell means are shrunk toward the arm's pooled mean with `smoothing` pseudo-rows:
  mean_fbk = (S_fbk + m p_fk) / (W_fbk + m). An empty cell therefore takes the pooled arm mean (no NaN, no
  winner invented from nothing) and a cell with a handful of rows cannot win a bin on noise alone. Bins are never
  merged, so a bin keeps its meaning (and the NaN bin stays separate).
- With propensities, W and S are inverse-propensity weighted (self-normalized means, arm shares as under uniform
  assignment); the bin weights N_b/N always use row counts, since logging does not change who the users are.
- Real-valued rewards: the KL in HDD and in the KL filter is the Gaussian KL between cell means and variances
  (variances shrunk like the means and floored at 1e-6 of the pooled variance); ED is the squared mean
  difference; Chi is the squared mean difference over the control variance.
- HIE ties: among arms tied for the best pooled mean, the overall winner is the one with the largest
  bin-weighted mean, then the lowest arm index, so the score does not depend on how arms are labelled.
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from causal_fs.tables import Tables

PROBABILITY_CLIP = 1e-6


def _pooled(tables: Tables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-arm pooled weight, mean and within-arm variance, shape (..., features, arms)."""
    weight = tables.weight.sum(axis=-2)
    wy, wyy = tables.wy.sum(axis=-2), tables.wyy.sum(axis=-2)
    mean = np.divide(wy, weight, out=np.zeros_like(wy), where=weight > 0)
    variance = np.divide(wyy, weight, out=np.zeros_like(wy), where=weight > 0) - mean**2
    return weight, mean, np.maximum(variance, 0.0)


def bin_shares(tables: Tables) -> np.ndarray:
    """N_b / N per (..., feature, bin), from row counts."""
    bin_rows = tables.rows.sum(axis=-1)
    total = bin_rows.sum(axis=-1, keepdims=True)
    return np.divide(bin_rows, total, out=np.zeros_like(bin_rows), where=total > 0)


def cell_means(tables: Tables, smoothing: float) -> np.ndarray:
    """Shrunk cell means (..., features, bins, arms); see the module docstring."""
    _, pooled_mean, _ = _pooled(tables)
    prior = pooled_mean[..., None, :]
    denominator = tables.weight + smoothing
    numerator = tables.wy + smoothing * prior
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), prior)


def _cell_variances(tables: Tables, means: np.ndarray, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """Shrunk cell variances (..., features, bins, arms) and the pooled per-arm variances, both floored."""
    weight, pooled_mean, pooled_variance = _pooled(tables)
    total_weight = weight.sum(axis=-1, keepdims=True)
    overall_mean = np.divide((weight * pooled_mean).sum(-1, keepdims=True), total_weight,
                             out=np.zeros_like(total_weight), where=total_weight > 0)
    spread = (weight * (pooled_variance + (pooled_mean - overall_mean) ** 2)).sum(-1, keepdims=True)
    overall_variance = np.divide(spread, total_weight, out=np.zeros_like(total_weight), where=total_weight > 0)
    floor = 1e-6 * overall_variance + 1e-12
    raw_mean = np.divide(tables.wy, tables.weight, out=np.zeros_like(tables.wy), where=tables.weight > 0)
    within = np.maximum(tables.wyy - tables.weight * raw_mean**2, 0.0)
    prior = pooled_variance[..., None, :]
    denominator = tables.weight + smoothing
    variance = np.where(denominator > 0, (within + smoothing * prior) / np.where(denominator > 0, denominator, 1.0),
                        prior)
    return np.maximum(variance, floor[..., None, :]), np.maximum(pooled_variance, floor)


def bernoulli_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(Bernoulli(p) || Bernoulli(q)) with both clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(p, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    q = np.clip(q, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def gaussian_kl(mean_p: np.ndarray, var_p: np.ndarray, mean_q: np.ndarray, var_q: np.ndarray) -> np.ndarray:
    """KL(N(mean_p, var_p) || N(mean_q, var_q))."""
    return 0.5 * (np.log(var_q / var_p) + (var_p + (mean_p - mean_q) ** 2) / var_q - 1.0)


def hie(tables: Tables, smoothing: float = 1.0) -> np.ndarray:
    """Heterogeneous incremental effect: reward per decision gained by the per-bin best arm over the overall best.

    HIE = sum_b (N_b/N) (p_{b,w_b} - p_{b,w*}), in reward units; >= 0, and 0 when one arm wins every bin.
    """
    means = cell_means(tables, smoothing)
    shares = bin_shares(tables)
    _, pooled_mean, _ = _pooled(tables)
    standardized = (shares[..., None] * means).sum(axis=-2)
    tied = pooled_mean >= pooled_mean.max(axis=-1, keepdims=True)
    overall = np.argmax(np.where(tied, standardized, -np.inf), axis=-1)
    overall_mean = np.take_along_axis(means, overall[..., None, None], axis=-1)[..., 0]
    return (shares * (means.max(axis=-1) - overall_mean)).sum(axis=-1)


def _pair_divergence(tables: Tables, smoothing: float, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """D per bin (..., features, bins) and pooled (..., features): sum_{i != j} s_i s_j KL(P_i || P_j).

    Both KLs separate into sums over single arms (`_bernoulli_pair_sum`, `_gaussian_pair_sum`), so the cost and
    memory are linear in the number of arms, not quadratic.
    """
    means = cell_means(tables, smoothing)
    weight, pooled_mean, _ = _pooled(tables)
    cell_weight = tables.weight.sum(axis=-1, keepdims=True)
    shares = np.divide(tables.weight, cell_weight, out=np.zeros_like(tables.weight), where=cell_weight > 0)
    pooled_total = weight.sum(axis=-1, keepdims=True)
    pooled_shares = np.divide(weight, pooled_total, out=np.zeros_like(weight), where=pooled_total > 0)
    if binary:
        return _bernoulli_pair_sum(shares, means), _bernoulli_pair_sum(pooled_shares, pooled_mean)
    variances, pooled_variance = _cell_variances(tables, means, smoothing)
    return (_gaussian_pair_sum(shares, means, variances),
            _gaussian_pair_sum(pooled_shares, pooled_mean, pooled_variance))


def _bernoulli_pair_sum(shares: np.ndarray, p: np.ndarray) -> np.ndarray:
    """sum_{i,j} s_i s_j KL(Bern(p_i) || Bern(p_j)) over the last axis, in O(arms):
    KL = [p_i log p_i + (1-p_i) log(1-p_i)] - p_i log p_j - (1-p_i) log(1-p_j), each term a product of sums.
    The diagonal terms are KL(P_i || P_i) = 0."""
    p = np.clip(p, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    log_p, log_q = np.log(p), np.log1p(-p)
    total = shares.sum(axis=-1)
    negative_entropy = (shares * (p * log_p + (1 - p) * log_q)).sum(axis=-1)
    cross = (shares * p).sum(axis=-1) * (shares * log_p).sum(axis=-1) \
        + (shares * (1 - p)).sum(axis=-1) * (shares * log_q).sum(axis=-1)
    return np.maximum(total * negative_entropy - cross, 0.0)


def _gaussian_pair_sum(shares: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """sum_{i,j} s_i s_j KL(N(m_i, v_i) || N(m_j, v_j)) over the last axis, in O(arms). The log-variance terms
    cancel in the double sum; means are centred first (KL does not change when all means shift) to keep the
    squares small."""
    total = shares.sum(axis=-1)
    centre = np.divide((shares * mean).sum(axis=-1), total, out=np.zeros_like(total), where=total > 0)
    m = mean - centre[..., None]
    inverse = shares / variance
    pair = ((shares * (variance + m**2)).sum(axis=-1) * inverse.sum(axis=-1)
            - 2 * (shares * m).sum(axis=-1) * (inverse * m).sum(axis=-1)
            + total * (inverse * m**2).sum(axis=-1) - total**2)
    return np.maximum(0.5 * pair, 0.0)


def hdd(tables: Tables, smoothing: float = 1.0, binary: bool = True) -> np.ndarray:
    """Heterogeneous distribution divergence: HDD = sum_b (N_b/N) D(bin b) - D(pooled), in nats."""
    per_bin, pooled = _pair_divergence(tables, smoothing, binary)
    return (bin_shares(tables) * per_bin).sum(axis=-1) - pooled


def _uplift_divergence(method: str, treated_mean, control_mean, treated_var, control_var, binary: bool):
    difference = treated_mean - control_mean
    if method == "kl":
        if binary:
            return bernoulli_kl(treated_mean, control_mean)
        return gaussian_kl(treated_mean, treated_var, control_mean, control_var)
    if method == "ed":
        return 2 * difference**2 if binary else difference**2
    if binary:  # chi
        return (difference**2 / np.maximum(PROBABILITY_CLIP, control_mean)
                + difference**2 / np.maximum(PROBABILITY_CLIP, 1 - control_mean))
    return difference**2 / control_var


def uplift_filter(tables: Tables, method: str, control: int, smoothing: float = 1.0, binary: bool = True
                  ) -> np.ndarray:
    """Zhao et al.'s KL/ED/Chi filter: sum_b (N_b/N) d_b - d_pooled, d = sum over treatments of div(t, control).

    A treatment contributes to a bin only where both it and the control have rows (as in CausalML).
    """
    means = cell_means(tables, smoothing)
    weight, pooled_mean, pooled_variance = _pooled(tables)
    if binary:
        variances, pooled_variance = np.ones_like(means), np.ones_like(pooled_mean)
    else:
        variances, pooled_variance = _cell_variances(tables, means, smoothing)
    treated = np.arange(means.shape[-1]) != control
    per_arm = _uplift_divergence(method, means, means[..., control:control + 1], variances,
                                 variances[..., control:control + 1], binary)
    both = (tables.weight > 0) & (tables.weight[..., control:control + 1] > 0) & treated
    per_bin = np.where(both, per_arm, 0.0).sum(axis=-1)
    pooled_per_arm = _uplift_divergence(method, pooled_mean, pooled_mean[..., control:control + 1], pooled_variance,
                                        pooled_variance[..., control:control + 1], binary)
    pooled = np.where((weight > 0) & (weight[..., control:control + 1] > 0) & treated, pooled_per_arm, 0.0).sum(-1)
    return (bin_shares(tables) * per_bin).sum(axis=-1) - pooled


def _causalml_summary(rows: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CausalML's node summary: +1 pseudo-count for an outcome seen in the node but not in an arm; returns the
    conversion rate and size per arm and whether the arm is in the node."""
    negatives = rows - positives
    present = rows > 0
    seen_positive = (positives > 0).any(axis=-1, keepdims=True)
    seen_negative = (negatives > 0).any(axis=-1, keepdims=True)
    ones = np.where(present & seen_positive, np.where(positives > 0, positives, 1.0), 0.0)
    zeros = np.where(present & seen_negative, np.where(negatives > 0, negatives, 1.0), 0.0)
    size = ones + zeros
    return np.divide(ones, size, out=np.zeros_like(size), where=size > 0), size, present


def _causalml_divergence(method: str, treated: np.ndarray, control: np.ndarray) -> np.ndarray:
    if method == "kl":
        clipped = np.clip(control, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
        # 0 log 0 = 0 (CausalML before 0.18 gave NaN there); identical rates diverge by exactly 0, as in 0.18.
        divergence = (xlogy(treated, treated) - treated * np.log(clipped)
                      + xlogy(1 - treated, 1 - treated) - (1 - treated) * np.log(1 - clipped))
        return np.where(treated == control, 0.0, divergence)
    if method == "ed":
        return 2 * (treated - control) ** 2
    return ((treated - control) ** 2 / np.maximum(PROBABILITY_CLIP, control)
            + (treated - control) ** 2 / np.maximum(PROBABILITY_CLIP, 1 - control))


def _causalml_node(method: str, rows: np.ndarray, positives: np.ndarray, control: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    rate, size, present = _causalml_summary(rows, positives)
    divergence = _causalml_divergence(method, rate, rate[..., control:control + 1])
    treated = present & (np.arange(rows.shape[-1]) != control)
    score = np.where(treated, divergence, 0.0).sum(axis=-1)
    return np.where(present[..., control], score, 0.0), size.sum(axis=-1)


def causalml_filter(tables: Tables, method: str, control: int, value_bins: np.ndarray) -> np.ndarray:
    """CausalML `FilterSelect` KL/ED/Chi numbers from count tables built on its qcut bins.

    `value_bins[f]` is the number of qcut bins of feature f; bins at or beyond it (the NaN rows) are left out of
    the children, as in CausalML, but count in the total. Needs 0/1 rewards and unweighted rows.
    """
    rows, positives = tables.rows, tables.wy
    bin_score, bin_size = _causalml_node(method, rows, positives, control)
    in_children = np.arange(rows.shape[-2]) < value_bins[:, None]
    total = rows.sum(axis=(-1, -2))
    children = np.where(in_children, bin_score * bin_size, 0.0).sum(axis=-1) / total
    parent, _ = _causalml_node(method, rows.sum(axis=-2), positives.sum(axis=-2), control)
    return children - parent


def min_max(scores: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Scale scores so the reference scores (default: the scores themselves) span [0, 1] across features (last
    axis); all-equal reference scores give 0."""
    reference = scores if reference is None else reference
    low, high = reference.min(axis=-1, keepdims=True), reference.max(axis=-1, keepdims=True)
    span = high - low
    return np.divide(scores - low, span, out=np.zeros_like(scores), where=span > 0)


def combined(hie_scores: np.ndarray, hdd_scores: np.ndarray, weights: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """Weighted sum of min-max normalized HIE and HDD across the candidate features (unitless, 0..1 observed).

    With replicates on the leading axis, replicate 0 (the observed data) fixes the normalization for all of them,
    so permutation and bootstrap replicates are on the observed scale (a per-replicate normalization would put
    some feature at 1 in every replicate and make the null meaningless).
    """
    hie_reference = hie_scores[0] if hie_scores.ndim > 1 else None
    hdd_reference = hdd_scores[0] if hdd_scores.ndim > 1 else None
    return weights[0] * min_max(hie_scores, hie_reference) + weights[1] * min_max(hdd_scores, hdd_reference)
