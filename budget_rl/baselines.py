"""Baselines of the constrained-RL allocator, on the same best-response oracle as `mixed.maximize_under_budget`.

- `game_theoretic_mixture` (Le, Voloshin and Yue, ICML 2019): the budget's multiplier lambda in [0, lambda_max]
  plays exponentiated gradient against best responses; the output is the uniform average of every iterate's
  policy, so it stores one policy per iteration.
- `fixed_multiplier_policy`: one greedy policy for r - lambda c, lambda found by bisection as the smallest whose
  policy is within budget: the single value-based policy a team would deploy; in general over budget or below the
  mixed optimum (docs/constrained_rl.md, 'The constrained MDP').
- `myopic_allocator`: the two-stage allocator (docs/budget_allocation.md, 'The two-stage problem') applied day
  by day: one-step models of today's reward and cost per action, then `budget_rl.allocate` with the day's share of
  the budget. Blind to carry-over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from budget_rl.allocation import allocate
from budget_rl.mixed import MixedPolicy, Oracle
from budget_rl.offline import Regressor, RidgeQ, Transitions, one_step_models
from budget_rl.pacing import daily_budget


def game_theoretic_mixture(oracle: Oracle, limit: float, *, iterations: int = 100, lambda_max: float = 10.0,
                           learning_rate: float = 1.0) -> MixedPolicy:
    """Le et al.'s mixture: lambda_t by exponentiated gradient on the two-point simplex (lambda, lambda_max -
    lambda), pi_t the best response to r - lambda_t c; returns the uniform mixture of all `iterations` policies."""
    log_weights = np.zeros(2)  # weights of (lambda_max, 0): lambda = lambda_max * share of the first
    components, measurements, history = [], [], []
    for _ in range(iterations):
        share = np.exp(log_weights - log_weights.max())
        multiplier = lambda_max * share[0] / share.sum()
        policy, measurement = oracle(np.array([-1.0, multiplier]))
        measurement = np.asarray(measurement, dtype=float)
        components.append(policy)
        measurements.append(measurement)
        history.append(np.mean(measurements, axis=0))
        log_weights[0] += learning_rate * (measurement[1] - limit)  # over budget: raise the price
    weights = np.full(iterations, 1.0 / iterations)
    return MixedPolicy(tuple(components), weights, np.asarray(measurements), iterations, tuple(history))


@dataclass(frozen=True)
class FixedMultiplierPolicy:
    """One greedy policy for r - multiplier c, with its (value, cost)."""

    policy: object
    multiplier: float
    measurement: np.ndarray
    oracle_calls: int

    def to_frame(self) -> pd.DataFrame:
        """One row per component, as `MixedPolicy.to_frame` (a single one here, of weight 1): `component`,
        `weight`, `value`, `cost`, and its `multiplier`."""
        return pd.DataFrame({"component": [0], "weight": [1.0], "value": [float(self.measurement[0])],
                             "cost": [float(self.measurement[1])], "multiplier": [self.multiplier]})

    def summary(self) -> dict[str, float]:
        """Headline figures: the multiplier, the policy's value and cost, and the oracle calls."""
        return {"multiplier": self.multiplier, "value": float(self.measurement[0]),
                "cost": float(self.measurement[1]), "oracle_calls": self.oracle_calls}


def fixed_multiplier_policy(oracle: Oracle, limit: float, *, lambda_max: float = 100.0,
                            steps: int = 50) -> FixedMultiplierPolicy:
    """The greedy policy of the smallest multiplier (bisection on [0, lambda_max]) whose cost is within `limit`."""
    low, high = 0.0, lambda_max
    policy, measurement = oracle(np.array([-1.0, 0.0]))
    if measurement[1] <= limit:
        return FixedMultiplierPolicy(policy, 0.0, np.asarray(measurement, dtype=float), 1)
    best = oracle(np.array([-1.0, high]))
    for _ in range(steps):
        middle = 0.5 * (low + high)
        candidate = oracle(np.array([-1.0, middle]))
        if candidate[1][1] <= limit:
            high, best = middle, candidate
        else:
            low = middle
    return FixedMultiplierPolicy(best[0], high, np.asarray(best[1], dtype=float), steps + 2)


@dataclass(frozen=True)
class MyopicAllocator:
    """Per day, predicted (reward, cost) of every action for every user, allocated under the day's budget."""

    reward_models: tuple
    cost_models: tuple
    budget_per_user_day: float

    def act(self, features: np.ndarray, day: int) -> np.ndarray:
        value = self.reward_models[day].predict(features)
        cost = np.maximum(self.cost_models[day].predict(features), 0.0)
        return allocate(value, cost, self.budget_per_user_day * len(features)).level.astype(np.int64)


@dataclass(frozen=True)
class PacedAllocator:
    """The two-stage allocator run as a daily job with a campaign budget: each day's budget is re-solved from the
    realised spend so far and the days left (`budget_rl.pacing.daily_budget`), instead of a fixed daily share."""

    reward_models: tuple
    cost_models: tuple
    budget_per_user: float  # over the whole campaign
    safety: float = 0.0

    def act(self, features: np.ndarray, day: int, spent_so_far: float, planned_so_far: float | None = None, *,
            calibration: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(levels, expected cost per user of today's levels): today's allocation for these users, given the
        campaign's realised spend so far and the summed expected cost of the days run (both totals, currency), or
        the realised over planned spend to expect today (`budget_rl.pacing.spend_calibration`)."""
        n = len(features)
        today = daily_budget(self.budget_per_user * n, spent_so_far, day, len(self.cost_models),
                             planned_so_far=planned_so_far, safety=self.safety, calibration=calibration)
        value = self.reward_models[day].predict(features)
        cost = np.maximum(self.cost_models[day].predict(features), 0.0)
        level = allocate(value, cost, today).level.astype(np.int64)
        return level, cost[np.arange(n), level]


def myopic_allocator(data: Transitions, budget_per_user: float, *, regressor: Regressor = RidgeQ,
                     importance_weighted: bool = False) -> MyopicAllocator:
    """The day-by-day two-stage allocator fitted on the logs; `budget_per_user` covers the whole campaign.
    importance_weighted as in `budget_rl.offline.fitted_q_iteration`."""
    reward_models, cost_models = one_step_models(data, regressor=regressor, importance_weighted=importance_weighted)
    return MyopicAllocator(reward_models, cost_models, budget_per_user / data.horizon)
