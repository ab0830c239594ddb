"""Permutation p-values, Benjamini-Hochberg q-values and bootstrap intervals for feature scores."""

from __future__ import annotations

import numpy as np


def permutation_p_values(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """p = (1 + #{null >= observed}) / (B + 1) per feature; `null` is (B, features).

    Scores equal up to rounding count as ties (a constant feature scores 0 under every permutation: p = 1).
    """
    tolerance = 1e-9 * np.abs(observed) + 1e-12
    exceed = (null >= observed[None, :] - tolerance[None, :]).sum(axis=0)
    return (1.0 + exceed) / (null.shape[0] + 1.0)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), monotone in p and capped at 1."""
    p_values = np.asarray(p_values, dtype=np.float64)
    count = len(p_values)
    if count == 0:
        return p_values
    order = np.argsort(p_values, kind="stable")
    scaled = p_values[order] * count / np.arange(1, count + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    q_values = np.empty(count)
    q_values[order] = np.minimum(adjusted, 1.0)
    return q_values


def basic_interval(estimate: np.ndarray, replicates: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Basic (reverse percentile) bootstrap interval per feature: [2 t - q_high, 2 t - q_low].

    HIE is a mean of maxima and biased upward at finite samples; the bootstrap replicates carry that bias once
    more, and reflecting them around the estimate removes it to first order (a percentile interval would add it).
    """
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail], axis=0)
    return 2 * estimate - high, 2 * estimate - low


def minimum_permutations(n_features: int, alpha: float) -> int:
    """Fewest permutations for which a single strong feature among `n_features` can reach q <= alpha:
    the smallest p-value is 1/(B+1), and Benjamini-Hochberg multiplies it by up to `n_features`."""
    return int(np.ceil(n_features / alpha)) - 1
