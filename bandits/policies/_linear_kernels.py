"""Compiled per-row passes of the linear policies' scoring (numba): uncertainty widths, LinUCB's probabilities and
LinTS's Monte Carlo probabilities.

The widths are sqrt(sum_j P[r, k d + j]^2) over the projected contexts P = Z F (F F' = A_k^-1 per arm), summed in
numpy's pairwise order for a contiguous row (eight running sums, then the rest), so they are bit-identical to
`sqrt((P * P).reshape(n, K, d).sum(axis=2))`; but no squared copy of P or (n, K, d) view is reduced, and LinUCB's
scores, their maximum and the tie split are taken in the same pass. LinTS's pass (`gaussian_argmax_shares`) does the
numpy form's shortcuts and float32 draws row by row, without its (rows x arms) and (rows x draws) temporaries.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: The longest run numpy's pairwise summation adds in the order `_sum_of_squares` follows (its PW_BLOCKSIZE): the
#: kernels serve models with at most this many design columns, the numpy form the others.
PAIRWISE_BLOCK = 128


@njit(cache=True, nogil=True, inline="always")
def _sum_of_squares(row: np.ndarray, start: int, n: int) -> float:
    """sum(row[start:start + n] ** 2) in the order numpy's pairwise summation adds a contiguous run of n <= 128."""
    if n < 8:
        total = 0.0
        for i in range(n):
            total += row[start + i] * row[start + i]
        return total
    x = row[start:start + n]
    r0, r1, r2, r3 = x[0] * x[0], x[1] * x[1], x[2] * x[2], x[3] * x[3]
    r4, r5, r6, r7 = x[4] * x[4], x[5] * x[5], x[6] * x[6], x[7] * x[7]
    i = 8
    while i < n - (n % 8):
        r0 += x[i] * x[i]
        r1 += x[i + 1] * x[i + 1]
        r2 += x[i + 2] * x[i + 2]
        r3 += x[i + 3] * x[i + 3]
        r4 += x[i + 4] * x[i + 4]
        r5 += x[i + 5] * x[i + 5]
        r6 += x[i + 6] * x[i + 6]
        r7 += x[i + 7] * x[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += x[i] * x[i]
        i += 1
    return total


@njit(cache=True, nogil=True)
def widths(projected: np.ndarray, n_arms: int, out: np.ndarray) -> None:
    """out[r, k] = sqrt(sum_j projected[r, k d + j]^2), d = projected.shape[1] / n_arms (at most 128)."""
    d = projected.shape[1] // n_arms
    for r in range(projected.shape[0]):
        for k in range(n_arms):
            out[r, k] = math.sqrt(_sum_of_squares(projected[r], k * d, d))


@njit(cache=True, nogil=True)
def ucb_probabilities(projected: np.ndarray, mean: np.ndarray, alpha: float, out: np.ndarray) -> None:
    """LinUCB's action probabilities: one-hot of each row's largest mean + alpha width, ties split equally."""
    n, n_arms = mean.shape
    d = projected.shape[1] // n_arms
    scores = np.empty(n_arms)
    for r in range(n):
        best = -np.inf
        for k in range(n_arms):
            width = math.sqrt(_sum_of_squares(projected[r], k * d, d))
            scores[k] = mean[r, k] + alpha * width
            if scores[k] > best:
                best = scores[k]
        count = 0.0
        for k in range(n_arms):
            if scores[k] >= best:
                count += 1.0
        for k in range(n_arms):
            out[r, k] = (1.0 if scores[k] >= best else 0.0) / count


@njit(cache=True, nogil=True)
def gaussian_argmax_shares(mean: np.ndarray, sd: np.ndarray, normals: np.ndarray, z_max: float, slack: float,
                           out: np.ndarray) -> None:
    """out[r, k] = the share of the draws d whose largest mean[r, k] + sd[r, k] normals[d, k] is arm k's (ties to the
    lower arm): LinTS's Monte Carlo probabilities, row by row, with the numpy form's two shortcuts and arithmetic, so
    the shares are identical to it.

    A row whose best mean beats every other arm even at the extremes of the draws (its mean - sd z_max above the
    others' mean + sd z_max, by more than `slack`) is one-hot without drawing. Otherwise only the candidate arms
    (whose mean + sd z_max reaches the largest mean - sd z_max, less `slack`) are drawn, in float32 as the numpy form
    draws them."""
    n, n_arms = mean.shape
    n_draws = normals.shape[0]
    counts = np.zeros(n_arms, dtype=np.int64)
    arms = np.empty(n_arms, dtype=np.int64)  # the row's candidate arms, in increasing order
    for r in range(n):
        best = 0
        for k in range(1, n_arms):
            if mean[r, k] > mean[r, best]:
                best = k
        other_high = -np.inf
        largest_low = -np.inf
        for k in range(n_arms):
            low = mean[r, k] - sd[r, k] * z_max
            if low > largest_low:
                largest_low = low
            if k != best:
                high = mean[r, k] + sd[r, k] * z_max
                if high > other_high:
                    other_high = high
        out[r, :] = 0.0
        if mean[r, best] - sd[r, best] * z_max > other_high + slack:
            out[r, best] = 1.0
            continue
        n_candidates = 0
        for k in range(n_arms):
            if mean[r, k] + sd[r, k] * z_max >= largest_low - slack:
                arms[n_candidates] = k
                n_candidates += 1
        counts[:] = 0
        for d in range(n_draws):
            best_draw = np.float32(-np.inf)
            winner = 0
            for c in range(n_candidates):
                k = arms[c]
                draw = np.float32(mean[r, k]) + np.float32(sd[r, k]) * normals[d, k]
                if draw > best_draw:
                    best_draw = draw
                    winner = k
            counts[winner] += 1
        for k in range(n_arms):
            out[r, k] = counts[k] / n_draws


@njit(cache=True, nogil=True)
def arm_order(arms: np.ndarray, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, bounds): the rows grouped by arm code, each arm's rows in row order (what a stable argsort of `arms`
    gives, by counting), and arm k's rows order[bounds[k]:bounds[k + 1]]."""
    bounds = np.zeros(n_arms + 1, dtype=np.int64)
    for arm in arms:
        bounds[arm + 1] += 1
    for k in range(n_arms):
        bounds[k + 1] += bounds[k]
    filled = bounds[:-1].copy()
    order = np.empty(arms.size, dtype=np.int64)
    for i in range(arms.size):
        order[filled[arms[i]]] = i
        filled[arms[i]] += 1
    return order, bounds


@njit(cache=True, nogil=True)
def gather_design(X: np.ndarray, rows: np.ndarray, fit_intercept: bool, out: np.ndarray) -> None:
    """out[i] = the design row of X[rows[i]]: a leading 1 when `fit_intercept`, then the contexts."""
    offset = 1 if fit_intercept else 0
    for i in range(rows.size):
        if fit_intercept:
            out[i, 0] = 1.0
        for j in range(X.shape[1]):
            out[i, offset + j] = X[rows[i], j]
