"""Shared data for the bandits tests: a seeded synthetic environment and its logs, and a chi-square helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from bandits.datasets import SyntheticBandit


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """NeuralTS trains on tiny batches: one thread per xdist worker is faster than two fighting over 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def env() -> SyntheticBandit:
    return SyntheticBandit(n_features=5, n_arms=4, seed=3)


@pytest.fixture(scope="module")
def logs(env):
    """2,000 logged rounds of the built-in softmax logger, and their (n, K) true means."""
    return env.logged_feedback(2_000, random_state=11)


def chi_square_p(codes: np.ndarray, probabilities: np.ndarray) -> float:
    """Goodness-of-fit p-value of sampled arm codes against one row of probabilities.

    Arms with probability 0 must never be drawn (asserted here); they are left out of the test.
    """
    counts = np.bincount(codes, minlength=probabilities.size)
    possible = probabilities > 0
    assert counts[~possible].sum() == 0, f"drew arms of probability 0: counts {counts}, probabilities {probabilities}"
    if possible.sum() == 1:
        return 1.0
    expected = counts.sum() * probabilities[possible] / probabilities[possible].sum()
    return float(chisquare(counts[possible], expected).pvalue)
