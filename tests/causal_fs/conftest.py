"""Data builders for the causal_fs tests: the crossover example of docs/feature_selection.md, exact and sampled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

CROSSOVER_RATES = {False: (0.45, 0.20, 0.25), True: (0.20, 0.40, 0.25)}  # x < 0, x >= 0


def crossover_exact(rows_per_side: int = 3000) -> pd.DataFrame:
    """The crossover example with exactly the stated click rates: rows sorted by x, arms in turn, and the ones of
    every (side, arm) cell spread evenly, so every quantile bin holds each arm equally and HIE is exactly 0.100."""
    x = np.concatenate([np.linspace(-3, -0.001, rows_per_side), np.linspace(0, 3, rows_per_side)])
    arm = np.arange(2 * rows_per_side) % 3
    reward = np.zeros(len(x))
    for side in (False, True):
        for k in range(3):
            cell = np.flatnonzero(((x >= 0) == side) & (arm == k))
            rate = CROSSOVER_RATES[side][k]
            position = np.arange(len(cell))
            reward[cell] = np.floor((position + 1) * rate + 1e-9) - np.floor(position * rate + 1e-9)
    return pd.DataFrame({"x": x, "above": (x >= 0).astype(int), "arm": arm, "reward": reward})


def crossover_sample(n: int, seed: int) -> pd.DataFrame:
    """The crossover example drawn at random: x ~ N(0, 1), arms uniform, Bernoulli rewards."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    arm = rng.integers(0, 3, n)
    rates = np.where((x >= 0)[:, None], CROSSOVER_RATES[True], CROSSOVER_RATES[False])
    reward = (rng.random(n) < rates[np.arange(n), arm]).astype(float)
    return pd.DataFrame({"x": x, "above": (x >= 0).astype(int), "noise": rng.normal(size=n),
                         "arm": np.array(["a", "b", "c"])[arm], "reward": reward})


@pytest.fixture(scope="module")
def crossover() -> pd.DataFrame:
    return crossover_sample(30_000, seed=5)
