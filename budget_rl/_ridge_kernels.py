"""Compiled per-row pass of the ridge sweeps (numba): the greedy choice of every Q-function at once.

For a block of states, each greedy (actions, p) coefficient matrix gives the first action with the largest value and
that value, and each evaluated matrix gives its value at the action its greedy matrix chose: what the FQI and FQE
targets of `budget_rl.ridge_statistics` need, without the (matrices x actions x rows) products a dense product would
hold.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True, nogil=True)
def greedy_and_followed(states: np.ndarray, greedy: np.ndarray, evaluated: np.ndarray, follows: np.ndarray,
                        best: np.ndarray, chosen: np.ndarray) -> None:
    """Fill best[s, r] (the largest value of greedy matrix s at row r) and chosen[e, r] (evaluated matrix e's value
    at the action greedy matrix follows[e] chose for row r). states (rows, p); greedy (g, actions, p); evaluated
    (e, actions, p); ties go to the first action."""
    n, p = states.shape
    n_greedy, n_actions = greedy.shape[0], greedy.shape[1]
    choice = np.zeros(max(n_greedy, 1), np.int64)
    for r in range(n):
        x = states[r]
        for s in range(n_greedy):
            top, arg = -np.inf, 0
            for a in range(n_actions):
                value = 0.0
                for j in range(p):
                    value += greedy[s, a, j] * x[j]
                if value > top:
                    top, arg = value, a
            best[s, r] = top
            choice[s] = arg
        for e in range(evaluated.shape[0]):
            a = choice[follows[e]]
            value = 0.0
            for j in range(p):
                value += evaluated[e, a, j] * x[j]
            chosen[e, r] = value


@njit(cache=True, nogil=True)
def poisson_counts(keys: np.ndarray, salt: np.uint64, thresholds: np.ndarray) -> np.ndarray:
    """Per key (splitmix64 of the id's word), how many `thresholds` its salted 53-bit draw reaches: the draw is
    splitmix64(key XOR salt) >> 11, as `campaign_core.salted_uniform` takes it (before dividing by 2^53), and
    thresholds ceil(cdf x 2^53) cut it exactly where the CDF values cut the uniform."""
    counts = np.empty(keys.size, np.float64)
    for i in range(keys.size):
        z = keys[i] ^ salt
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        draw = (z ^ (z >> np.uint64(31))) >> np.uint64(11)
        k = 0
        for threshold in thresholds:
            k += draw >= threshold
        counts[i] = k
    return counts
