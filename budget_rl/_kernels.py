"""Compiled per-block passes of the dual allocator (numba): hull walk, slope histogram, candidate pick, assignment.

Every pass walks each user's upper hull of (cost, value) (see `budget_rl.dual`) without storing it, so a block of
n users costs O(n J^2) time and O(bins) memory. The order of breakpoints everywhere is the total order (slope
descending, user id ascending, hull step ascending); a *key* (slope, user id, step, share) marks one breakpoint of
that order: the ones before it are taken whole, the key itself with `share`, the ones after not at all. A key with
slope -inf takes all.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _start(value_row: np.ndarray, cost_row: np.ndarray) -> int:
    best = 0
    for j in range(1, cost_row.size):
        if cost_row[j] < cost_row[best] or (cost_row[j] == cost_row[best] and value_row[j] > value_row[best]):
            best = j
    return best


@njit(cache=True, inline="always")
def _next(value_row: np.ndarray, cost_row: np.ndarray, current: int) -> tuple[int, float]:
    """The next hull level from `current` and its slope; (-1, 0) when no upgrade has a positive slope."""
    best, best_slope = -1, 0.0
    for j in range(cost_row.size):
        extra_cost = cost_row[j] - cost_row[current]
        if extra_cost > 0:
            slope = (value_row[j] - value_row[current]) / extra_cost
            if slope > best_slope or (best >= 0 and slope == best_slope and cost_row[j] > cost_row[best]):
                best, best_slope = j, slope
    return best, best_slope


@njit(cache=True, inline="always")
def _weight(slope: float, user: int, step: int, key_slope: float, key_user: int, key_step: int,
            key_share: float) -> float:
    if slope > key_slope:
        return 1.0
    if slope < key_slope:
        return 0.0
    if user < key_user or (user == key_user and step < key_step):
        return 1.0
    if user == key_user and step == key_step:
        return key_share
    return 0.0


@njit(cache=True, inline="always")
def _segment_weight(slope: float, user: int, step: int, segment: int, keys_slope, keys_user, keys_step,
                    keys_share) -> float:
    """The weight the key of `segment` gives an upgrade; 1 for users outside every capped segment (-1)."""
    if segment < 0:
        return 1.0
    return _weight(slope, user, step, keys_slope[segment], keys_user[segment], keys_step[segment],
                   keys_share[segment])


@njit(cache=True, nogil=True)
def _bin_of(slope: float, edges: np.ndarray) -> int:
    """Index b with edges[b] <= slope < edges[b + 1], or -1 when outside [edges[0], edges[-1])."""
    if slope < edges[0] or slope >= edges[edges.size - 1]:
        return -1
    low, high = 0, edges.size - 1
    while high - low > 1:
        middle = (low + high) // 2
        if edges[middle] <= slope:
            low = middle
        else:
            high = middle
    return low


@njit(cache=True, nogil=True)
def histogram_pass(value, cost, user_id, group, n_groups, edges, filter_group, keys_slope, keys_user, keys_step,
                   keys_share):
    """Per group: start spend and start value; per (group, slope bin): extra cost, extra value, count.

    `group[i]` (-1: none) is the histogram row of user i; upgrades are weighted by the key of `filter_group[i]`
    (-1: no filter), so a capped segment contributes only what its own cap lets through. `edges[g]` are the bin
    edges of group g; upgrades outside them only enter the totals.
    """
    n_bins = edges.shape[1] - 1
    start_cost = np.zeros(n_groups)
    start_value = np.zeros(n_groups)
    extra_cost = np.zeros((n_groups, n_bins))
    extra_value = np.zeros((n_groups, n_bins))
    count = np.zeros((n_groups, n_bins), dtype=np.int64)
    above_cost = np.zeros(n_groups)  # upgrades with slope at or above the last edge
    above_value = np.zeros(n_groups)
    for i in range(value.shape[0]):
        g = group[i]
        if g < 0:
            continue
        current = _start(value[i], cost[i])
        start_cost[g] += cost[i, current]
        start_value[g] += value[i, current]
        f = filter_group[i]
        step = 0
        while True:
            nxt, slope = _next(value[i], cost[i], current)
            if nxt < 0:
                break
            weight = _segment_weight(slope, user_id[i], step, f, keys_slope, keys_user, keys_step, keys_share)
            if weight == 0.0:
                break
            delta_cost = weight * (cost[i, nxt] - cost[i, current])
            delta_value = weight * (value[i, nxt] - value[i, current])
            b = _bin_of(slope, edges[g])
            if b >= 0:
                extra_cost[g, b] += delta_cost
                extra_value[g, b] += delta_value
                count[g, b] += 1
            elif slope >= edges[g, n_bins]:
                above_cost[g] += delta_cost
                above_value[g] += delta_value
            current = nxt
            step += 1
    return start_cost, start_value, extra_cost, extra_value, count, above_cost, above_value


@njit(cache=True, nogil=True)
def candidate_pass(value, cost, user_id, group, low, high, filter_group, keys_slope, keys_user, keys_step,
                   keys_share):
    """The upgrades of group g with low[g] <= slope < high[g]: slope, user id, step, weighted extra cost and value."""
    capacity = 1024
    slopes = np.empty(capacity)
    users = np.empty(capacity, dtype=np.int64)
    steps = np.empty(capacity, dtype=np.int64)
    costs = np.empty(capacity)
    values = np.empty(capacity)
    groups = np.empty(capacity, dtype=np.int64)
    size = 0
    for i in range(value.shape[0]):
        g = group[i]
        if g < 0:
            continue
        f = filter_group[i]
        current = _start(value[i], cost[i])
        step = 0
        while True:
            nxt, slope = _next(value[i], cost[i], current)
            if nxt < 0 or slope < low[g]:
                break
            weight = _segment_weight(slope, user_id[i], step, f, keys_slope, keys_user, keys_step, keys_share)
            if weight == 0.0:
                break
            if slope < high[g] or high[g] == np.inf:  # the top bin includes slopes that overflowed to +inf
                if size == capacity:
                    capacity *= 2
                    slopes = np.concatenate((slopes, np.empty(size)))
                    users = np.concatenate((users, np.empty(size, dtype=np.int64)))
                    steps = np.concatenate((steps, np.empty(size, dtype=np.int64)))
                    costs = np.concatenate((costs, np.empty(size)))
                    values = np.concatenate((values, np.empty(size)))
                    groups = np.concatenate((groups, np.empty(size, dtype=np.int64)))
                slopes[size] = slope
                users[size] = user_id[i]
                steps[size] = step
                costs[size] = weight * (cost[i, nxt] - cost[i, current])
                values[size] = weight * (value[i, nxt] - value[i, current])
                groups[size] = g
                size += 1
            current = nxt
            step += 1
    return slopes[:size], users[:size], steps[:size], costs[:size], values[:size], groups[:size]


@njit(cache=True, nogil=True)
def assign_pass(value, cost, user_id, segment, keys_slope, keys_user, keys_step, keys_share, global_slope,
                global_user, global_step, global_share):
    """Each user's level at the solution, and the partly taken upgrade if any (upper level and its share, else -1, 0).

    `segment[i]` (-1: uncapped) selects the user's segment key; the global key applies to everyone.
    """
    n = value.shape[0]
    level = np.empty(n, dtype=np.int16)
    upper_level = np.full(n, -1, dtype=np.int16)
    upper_share = np.zeros(n)
    for i in range(n):
        current = _start(value[i], cost[i])
        s = segment[i]
        step = 0
        while True:
            nxt, slope = _next(value[i], cost[i], current)
            if nxt < 0:
                break
            weight = _weight(slope, user_id[i], step, global_slope, global_user, global_step, global_share)
            if weight > 0.0:
                weight *= _segment_weight(slope, user_id[i], step, s, keys_slope, keys_user, keys_step, keys_share)
            if weight >= 1.0:
                current = nxt
                step += 1
                continue
            if weight > 0.0:
                upper_level[i] = nxt
                upper_share[i] = weight
            break
        level[i] = current
    return level, upper_level, upper_share


@njit(cache=True, nogil=True)
def spend_at(value, cost, multiplier):
    """Spend and value with every user at their argmax_j (v_ij - multiplier c_ij) levels (ties: the cheaper level)."""
    spend, total = 0.0, 0.0
    for i in range(value.shape[0]):
        best = _start(value[i], cost[i])
        for j in range(cost.shape[1]):
            gain = value[i, j] - multiplier * cost[i, j]
            best_gain = value[i, best] - multiplier * cost[i, best]
            if gain > best_gain or (gain == best_gain and cost[i, j] < cost[i, best]):
                best = j
        spend += cost[i, best]
        total += value[i, best]
    return spend, total
