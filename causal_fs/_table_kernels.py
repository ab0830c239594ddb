"""Compiled pass of one replicate's (feature, bin, arm) sums (numba), in place of four `np.bincount` calls.

The sums accumulate row by row in the order `np.bincount` would over the (features, rows) cell index, so each table
is bit-identical to the bincount form; but no (features x rows) index or tiled weight array is built, a replicate
reads its rows through an order (a permutation) instead of copying them, and the outputs are written into the
caller's arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def replicate_sums(cell_base: np.ndarray, columns: np.ndarray, order: np.ndarray, arms: np.ndarray,
                   reward: np.ndarray, resample: np.ndarray, weight: np.ndarray, binary: bool,
                   rows: np.ndarray, weights: np.ndarray, wy: np.ndarray, wyy: np.ndarray,
                   scratch: np.ndarray) -> None:
    """Fill the flat (cells,) tables `rows` (sum of the resample weights), `weights` (of resample x weight), `wy`
    and `wyy` for one replicate.

    cell_base (n, features): each row's first cell per feature (arm 0); row i of the replicate takes the cells of
    row `columns[i]` (empty: i) and the arm, reward and weight of row `order[i]` (empty: i). `resample` and `weight`:
    per row of the data (empty: 1). With `binary` rewards the sums are taken per (cell, reward) in `scratch`
    (cells, 2, 2), as the 0/1 counting form does: rows = n0 + n1, weights = w0 + w1, wy = wyy = w1. Each cell
    belongs to one feature, so it sums its rows in row order whichever loop is outside."""
    n, n_features = cell_base.shape
    has_columns, has_order = columns.size > 0, order.size > 0
    has_resample, has_weight = resample.size > 0, weight.size > 0
    if binary:
        scratch[:] = 0.0
    else:
        rows[:] = 0.0
        weights[:] = 0.0
        wy[:] = 0.0
        wyy[:] = 0.0
    for i in range(n):
        column = columns[i] if has_columns else i
        source = order[i] if has_order else i
        r = resample[source] if has_resample else 1.0
        u = r * weight[source] if (has_resample and has_weight) else (weight[source] if has_weight else r)
        arm = arms[source]
        if binary and not has_weight:  # u is r: one sum per (cell, reward) gives both
            y = 1 if reward[source] == 1.0 else 0
            for f in range(n_features):
                scratch[cell_base[column, f] + arm, y, 0] += r
        elif binary:
            y = 1 if reward[source] == 1.0 else 0
            for f in range(n_features):
                cell = cell_base[column, f] + arm
                scratch[cell, y, 0] += r
                scratch[cell, y, 1] += u
        else:
            y = reward[source]
            uy = u * y
            uyy = uy * y
            for f in range(n_features):
                cell = cell_base[column, f] + arm
                rows[cell] += r
                weights[cell] += u
                wy[cell] += uy
                wyy[cell] += uyy
    if binary:
        w = 1 if has_weight else 0
        for cell in range(rows.size):
            rows[cell] = scratch[cell, 0, 0] + scratch[cell, 1, 0]
            weights[cell] = scratch[cell, 0, w] + scratch[cell, 1, w]
            wy[cell] = scratch[cell, 1, w]
            wyy[cell] = scratch[cell, 1, w]


@njit(cache=True, nogil=True)
def poisson_of_uniform(uniform: np.ndarray, cdf: np.ndarray, out: np.ndarray) -> None:
    """out[i] = the Poisson count whose CDF interval holds uniform[i] (inverse-CDF sampling): the number of CDF
    values at or below it. `cdf` is increasing and ends at or above 1 - 2^-53."""
    for i in range(uniform.size):
        k = 0
        while k < cdf.size - 1 and cdf[k] <= uniform[i]:
            k += 1
        out[i] = k
