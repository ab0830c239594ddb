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


STRETCH = 512  # rows binned together: one vectorised compare-and-count loop per edge


@njit(cache=True, nogil=True)
def observed_feature_sums(x: np.ndarray, edges: np.ndarray, codes: np.ndarray, missing_bin: int,
                          arms: np.ndarray, reward: np.ndarray, weight: np.ndarray, binary: bool, starts: np.ndarray,
                          rows: np.ndarray, weights: np.ndarray, wy: np.ndarray, wyy: np.ndarray,
                          x_sum: np.ndarray, weight_sq: np.ndarray) -> None:
    """One feature's observed (bin, arm) tables, summed block by block over the row blocks `starts` (block b is
    rows starts[b]..starts[b+1]-1) and the blocks added up in order: the same numbers, bit for bit, as
    `replicate_sums` on each block's cells, `np.bincount` of the cleaned values (`x_sum`) and of the squared
    weights (`weight_sq`), added block after block.

    A numeric feature gives its float64 values `x` and inner `edges` (x <= edges[j] is bin j, NaN the
    `missing_bin`); a categorical one its bin `codes` (x and edges empty). The tables are
    (bins, arms) flattened, zeroed here; `x_sum` has one entry per bin; `weight` empty means 1. Row counts are
    kept as integers within a block (exact, and faster to add than floats)."""
    n_arms = rows.size // x_sum.size
    has_weight = weight.size > 0
    numeric = codes.size == 0
    cells = rows.size
    counts = np.empty(cells * 2, dtype=np.int64)  # rows per (cell, reward 0/1), or per cell
    block_weights = np.empty(cells * 2)  # weight per (cell, reward 0/1), or per cell
    block_wy = np.empty(cells)
    block_wyy = np.empty(cells)
    block_x = np.empty(x_sum.size)
    block_sq = np.empty(cells)
    values = np.zeros(STRETCH)
    stretch = np.zeros(STRETCH, dtype=np.int64)
    rows[:] = 0.0
    weights[:] = 0.0
    wy[:] = 0.0
    wyy[:] = 0.0
    x_sum[:] = 0.0
    weight_sq[:] = 0.0
    for b in range(starts.size - 1):
        counts[:] = 0
        block_weights[:] = 0.0
        block_wy[:] = 0.0
        block_wyy[:] = 0.0
        block_x[:] = 0.0
        block_sq[:] = 0.0
        for first in range(starts[b], starts[b + 1], STRETCH):
            size = min(STRETCH, starts[b + 1] - first)
            if numeric:  # bin the stretch: a fixed-length compare-and-count loop per edge vectorises
                values[:size] = x[first:first + size]
                stretch[:] = 0
                for edge in edges:
                    for k in range(STRETCH):
                        stretch[k] += np.int64(values[k] > edge)
                for k in range(size):
                    value = values[k]
                    if np.isnan(value):
                        stretch[k] = missing_bin
                    elif not np.isinf(value):
                        block_x[stretch[k]] += value
            else:
                stretch[:size] = codes[first:first + size]
            for k in range(size):
                i = first + k
                cell = stretch[k] * n_arms + arms[i]
                if binary:
                    slot = cell * 2 + (1 if reward[i] == 1.0 else 0)
                    counts[slot] += 1
                    if has_weight:
                        u = weight[i]
                        block_weights[slot] += u
                        block_sq[cell] += u * u
                else:
                    counts[cell] += 1
                    y = reward[i]
                    if has_weight:
                        u = weight[i]
                        uy = u * y
                        block_weights[cell] += u
                        block_wy[cell] += uy
                        block_wyy[cell] += uy * y
                        block_sq[cell] += u * u
                    else:
                        block_wy[cell] += y
                        block_wyy[cell] += y * y
        for cell in range(cells):
            if binary:
                n_rows = float(counts[cell * 2] + counts[cell * 2 + 1])
                if has_weight:
                    positive = block_weights[cell * 2 + 1]
                    total = block_weights[cell * 2] + positive
                else:
                    positive = float(counts[cell * 2 + 1])
                    total = n_rows
                rows[cell] += n_rows
                weights[cell] += total
                wy[cell] += positive
                wyy[cell] += positive
            else:
                n_rows = float(counts[cell])
                rows[cell] += n_rows
                weights[cell] += block_weights[cell] if has_weight else n_rows
                wy[cell] += block_wy[cell]
                wyy[cell] += block_wyy[cell]
            weight_sq[cell] += block_sq[cell] if has_weight else n_rows
        for code in range(x_sum.size):
            x_sum[code] += block_x[code]

