"""The Open Bandit Dataset (Saito et al. 2021; ZOZOTOWN fashion e-commerce; CC BY 4.0) as logged feedback.

Each round shows an item at one of three positions; the reward is a click; the logs carry the logging policy's
propensity of that item at that position. Two logging policies ran on the same traffic: uniform random and
Bernoulli Thompson sampling (BTS) with a production prior. The classic real-data check evaluates BTS from the random
logs and compares with the BTS logs' own click rate.

Pure functions here; reading the CSVs out of the obp wheel is `pipelines.open_bandit` (the I/O edge).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bandits.feedback import LoggedFeedback
from campaign_core import InputError

N_POSITIONS = 3


def bts_position_probabilities(alpha: np.ndarray, beta: np.ndarray, n_positions: int = N_POSITIONS,
                               n_draws: int = 100_000, random_state: int = 12345, block: int = 10_000) -> np.ndarray:
    """(items, positions) probability that BTS with Beta(alpha, beta) per item shows each item at each position.

    BTS draws a click rate per item and shows the items with the `n_positions` largest draws, best first; the
    probabilities are Monte Carlo frequencies over `n_draws` seeded draws (as obp's `compute_batch_action_dist`).
    Each column sums to 1.
    """
    alpha, beta = np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)
    if alpha.shape != beta.shape or alpha.ndim != 1 or (alpha <= 0).any() or (beta <= 0).any():
        raise InputError("alpha, beta: need two equal-length 1-d arrays of positive Beta parameters")
    if not 1 <= n_positions <= alpha.size:
        raise InputError(f"n_positions: must be between 1 and the number of items ({alpha.size}), got {n_positions}")
    rng = np.random.default_rng(random_state)
    counts = np.zeros((alpha.size, n_positions))
    for start in range(0, n_draws, block):
        size = min(block, n_draws - start)
        draws = rng.beta(alpha, beta, size=(size, alpha.size))
        top = np.argsort(-draws, axis=1, kind="stable")[:, :n_positions]
        for position in range(n_positions):
            counts[:, position] += np.bincount(top[:, position], minlength=alpha.size)
    return counts / n_draws


def open_bandit_feedback(logs: pd.DataFrame, n_items: int) -> tuple[LoggedFeedback, np.ndarray]:
    """LoggedFeedback from an Open Bandit Dataset log frame, and each row's position (0-based).

    Arms are item ids 0..n_items-1; contexts are the user-item affinity columns and one-hot positions (the
    hashed user features are categorical codes without order and are left out).
    """
    required = ["item_id", "position", "click", "propensity_score"]
    missing = [column for column in required if column not in logs.columns]
    if missing:
        raise InputError(f"open bandit logs: missing columns {missing}")
    positions = logs["position"].to_numpy(dtype=np.int64) - 1
    if ((positions < 0) | (positions >= N_POSITIONS)).any():
        raise InputError(f"position: expected 1..{N_POSITIONS}")
    affinity = [column for column in logs.columns if column.startswith("user-item_affinity_")]
    contexts = np.hstack([logs[affinity].to_numpy(dtype=np.float64), np.eye(N_POSITIONS)[positions]])
    feedback = LoggedFeedback(contexts, logs["item_id"].to_numpy(dtype=np.int64),
                              logs["click"].to_numpy(dtype=np.float64), logs["propensity_score"].to_numpy(),
                              tuple(range(n_items)), (*affinity, *(f"position_{p + 1}" for p in range(N_POSITIONS))))
    return feedback, positions


def position_target_probabilities(item_position_probabilities: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(n, items) target probabilities of each logged row: the target's item distribution at the row's position."""
    return item_position_probabilities[:, positions].T
