"""Shared helpers for the budget_rl tests: random allocation instances (hypothesis) and LP-share bookkeeping."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def relative_gap(ours: float, reference: float) -> float:
    """|ours - reference| relative to max(1, |reference|)."""
    return abs(ours - reference) / max(1.0, abs(reference))


def unconstrained_spend(cost: np.ndarray, value: np.ndarray) -> float:
    """The largest spend a budget can ever buy: every user at its most expensive level."""
    return float(cost.max(axis=1).sum())


def value_and_cost(rng: np.random.Generator, n: int, n_levels: int, integer: bool, lowest_value: int,
                   scales: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """(n, J) values and costs, level 0 free: small integers (many ties; values from `lowest_value` to 4) or
    continuous (normal values and exponential costs times `scales`)."""
    if integer:
        value = rng.integers(lowest_value, 5, (n, n_levels)).astype(float)
        cost = rng.integers(0, 4, (n, n_levels)).astype(float)
    else:
        value = rng.normal(size=(n, n_levels)) * scales[0]
        cost = rng.exponential(size=(n, n_levels)) * scales[1]
    cost[:, 0] = 0.0
    return value, cost


@st.composite
def instances(draw, min_users: int = 1, max_users: int = 60, min_levels: int = 1, max_levels: int = 6,
              ties: bool | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """(value, cost, budget): column 0 costs 0; values continuous (no ties) or small integers (many ties);
    budgets 0, inside the range, above every spend, or at an integer (hitting breakpoints for integer costs)."""
    n = draw(st.integers(min_users, max_users))
    n_levels = draw(st.integers(min_levels, max_levels))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    integer = draw(st.booleans()) if ties is None else ties
    scales = (1.0, 1.0) if integer else (draw(st.sampled_from([1e-3, 1.0, 1e3])),
                                         draw(st.sampled_from([1e-2, 1.0, 1e2])))
    value, cost = value_and_cost(rng, n, n_levels, integer, -2, scales)
    top = unconstrained_spend(cost, value)
    budget = draw(st.sampled_from(["zero", "inside", "above", "integer"]))
    budget = {"zero": 0.0, "inside": float(rng.uniform(0, 1) * top), "above": 1.5 * top + 1.0,
              "integer": float(rng.integers(0, int(top) + 2))}[budget]
    return value, cost, budget


def shares_of(allocation, n_levels: int, user_ids=None) -> np.ndarray:
    """The (n, J) shares an Allocation describes: 1 at `level`, moved by each fractional user's share."""
    n = len(allocation.level)
    ids = np.arange(n) if user_ids is None else np.asarray(user_ids)
    position = {int(uid): i for i, uid in enumerate(ids)}
    shares = np.zeros((n, n_levels))
    shares[np.arange(n), allocation.level] = 1.0
    for user in allocation.fractional:
        i = position[user.user_id]
        shares[i, user.level] -= user.share
        shares[i, user.upper_level] += user.share
    return shares
