"""Pacing: a daily job that spends the campaign's budget, re-planning each day from the spend so far.

FQE plans the spend of a policy from logs, and with misspecified Q-functions the plan is biased (on the synthetic
campaign it overstates spend by 11-35%, so a mixture planned to spend b spends 0.74-0.90 b). A job that decides
every day sees what was really spent so far and the users' actual states, so it can correct the plan as it goes:

- **Offline** (`paced_policy`): the best responses pi_k to r - lambda_k c for a grid of multipliers lambda_k
  (FQI), each with its per-day FQE Q-functions of cost and value (`budget_rl.offline.EvaluatedPolicy`), and the
  per-day one-step cost models E[c_t | s, a] (the spend of today's decision alone). Both oracles give them: the
  in-memory one (`budget_rl.offline.evaluated_policy`, `one_step_models`) and `RidgeSweeps` over partitions
  (`RidgeSweeps.evaluated`, `RidgeSweeps.one_step`), so the plan never needs the table in memory.
- **Each day t** (`PacedPolicy.decide`): the remaining budget is (1 - safety) x the total budget minus the spend so
  far. The calibration factor kappa = (spend so far) / (the one-step spend planned for the days already run) turns
  a planned spend into an expected realised one (1 on the first day). The predicted remaining spend of component k
  is the sum over today's users of Q^c_{k,t}(s_i, pi_k(s_i)); the target is remaining / kappa. The components are
  ordered by that predicted spend at today's states; the two neighbours around the target (the cheaper `low`, the
  dearer `high`) are mixed by a salted hash of the user id: users in increasing order of salted_uniform(user_id,
  salt) take `high` while the predicted total stays within the target, the rest take `low`. So the plan hits the
  target to one user's spend, from below, and the same users take the dearer policy on every day the same pair is
  mixed. A target outside the grid's range gives everyone its cheapest or its dearest component. The last component
  is the stop component: the free action (the level never paid for) for everyone, planned spend 0, so once the
  budget is spent nobody is paid for anything.

Column generation (`budget_rl.mixed.maximize_under_budget`) mixes, once for the whole campaign, two best responses
at the LP's price lambda*: neighbours on the planned (cost, value) frontier. Pacing mixes two neighbouring
multipliers too, but re-solves the weight (and the pair) every day against the spend really left. On the first day,
with no history, it plays the role of the column-generation mixture restricted to the grid's policies (the same
neighbours when the grid contains column generation's two components, split to the same planned spend). The
`safety` share of the budget is held
back on every day, so that the last days' errors of the one-step cost models do not carry the total over budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from budget_rl.offline import EvaluatedPolicy, Regressor, RidgeQ, Transitions, evaluated_policy, one_step_models
from campaign_core import InputError, salted_uniform

#: Budget multipliers of the default grid (purchases per currency unit): 0, then 16 steps from 0.004 to 1.
DEFAULT_MULTIPLIERS = (0.0, *np.geomspace(4e-3, 1.0, 16).tolist())
#: The multiplier `paced_policy` adds last to every grid: the stop component. `decide` gives its users the free
#: action (the level never paid for) with a planned spend of 0, so the plan can always stop spending; its
#: value-to-go is read from this multiplier's best response, which spends next to nothing.
STOP_MULTIPLIER = 1e3


@dataclass(frozen=True)
class PacedDecision:
    """Today's decision per user, in the order of the states given.

    action : (n,) action codes. component : (n,) the grid index of the policy each user followed today.
    multiplier : (n,) that policy's budget multiplier. expected_cost : (n,) one-step predicted spend of today's
    action (currency units; what `planned_so_far` sums over the days run). The day's figures: `calibration` (kappa),
    `remaining_budget` (total, after the safety share), `target` (remaining / kappa, in planned units),
    `planned_remaining` (the plan's predicted remaining spend, <= target unless the target is below every
    component), `planned_value` (the plan's predicted remaining purchases) and `high_share` (share of users on the
    dearer component)."""

    action: np.ndarray
    component: np.ndarray
    multiplier: np.ndarray
    expected_cost: np.ndarray
    day: int
    calibration: float
    remaining_budget: float
    target: float
    planned_remaining: float
    planned_value: float
    high_share: float

    def to_frame(self, user_ids) -> pd.DataFrame:
        """Today's decision table: `user_id`, `component`, `multiplier`, `action` (code), `expected_cost`."""
        return pd.DataFrame({"user_id": np.asarray(user_ids), "component": self.component,
                             "multiplier": self.multiplier, "action": self.action,
                             "expected_cost": self.expected_cost})

    def summary(self) -> dict[str, float]:
        """The day's figures (see the class docstring) and its total expected cost."""
        return {"day": self.day, "calibration": self.calibration, "remaining_budget": self.remaining_budget,
                "target": self.target, "planned_remaining": self.planned_remaining,
                "planned_value": self.planned_value, "high_share": self.high_share,
                "expected_cost": float(self.expected_cost.sum())}


@dataclass(frozen=True)
class PacedPolicy:
    """The grid of evaluated best responses and the one-step cost models that `decide` re-plans from each day.

    multipliers[k] is the multiplier of components[k] (`EvaluatedPolicy`: greedy policy, per-day FQE Q-functions of
    value and cost, its planned (value, cost) per episode); the last, `STOP_MULTIPLIER`'s, is the stop component.
    one_step_cost[t].predict(states) -> (n, actions) expected spend of day t alone. safety: the share of the total
    budget held back."""

    multipliers: tuple[float, ...]
    components: tuple[EvaluatedPolicy, ...]
    one_step_cost: tuple
    horizon: int
    safety: float = 0.02

    def to_frame(self) -> pd.DataFrame:
        """One row per grid component: `component`, `multiplier`, planned `value` and `cost` per episode."""
        measurements = np.asarray([c.measurement for c in self.components])
        return pd.DataFrame({"component": np.arange(len(self.components)), "multiplier": self.multipliers,
                             "value": measurements[:, 0], "cost": measurements[:, 1]})

    def summary(self) -> dict[str, float]:
        """Headline figures: components, horizon, safety share, the planned cost range of the grid."""
        costs = [float(c.measurement[1]) for c in self.components]
        return {"n_components": len(self.components), "horizon": self.horizon, "safety": self.safety,
                "cheapest_cost": min(costs), "dearest_cost": max(costs)}

    def decide(self, user_ids, states: np.ndarray, day: int, spent_so_far, budget_per_user, *, salt: str,
               planned_so_far=None) -> PacedDecision:
        """Today's actions for the campaign's users (every user, each day: the budget is shared).

        states: (n, p) today's state features. spent_so_far: (n,) or scalar, realised spend per user on the days
        already run (currency units). budget_per_user: (n,) or scalar budget of each user for the whole campaign.
        planned_so_far: (n,) or scalar, the sum of the `expected_cost` of the days already run (None on the
        first day: no calibration). Deterministic in its arguments; the salt keys the split between two
        neighbouring components."""
        states, user_ids = self._checked(user_ids, states, day)
        n = len(states)
        spent = _per_user(spent_so_far, n, "spent_so_far")
        budget = _per_user(budget_per_user, n, "budget_per_user")
        planned = None if planned_so_far is None else _per_user(planned_so_far, n, "planned_so_far")
        calibration = 1.0
        if planned is not None and planned.sum() > 0 and spent.sum() > 0:
            calibration = float(spent.sum() / planned.sum())
        remaining = max((1.0 - self.safety) * float(budget.sum()) - float(spent.sum()), 0.0)
        target = remaining / calibration
        rows = np.arange(n)
        actions = np.stack([c.policy.act(states, day) for c in self.components[:-1]]
                           + [np.full(n, self._free_action(states, day))])
        cost = np.stack([np.maximum(c.cost_q[day].predict(states)[rows, a], 0.0)
                         for c, a in zip(self.components[:-1], actions, strict=False)] + [np.zeros(n)])
        value = np.stack([c.value_q[day].predict(states)[rows, a] for c, a in zip(self.components, actions,
                                                                                   strict=True)])
        totals = cost.sum(axis=1)
        stop = len(totals) - 1
        order = np.lexsort((np.arange(len(totals)) != stop, totals))  # cheapest plan first, the stop one first of ties
        position = int(np.searchsorted(totals[order], target, side="left"))
        low = order[max(position - 1, 0)]
        high = order[min(position, len(order) - 1)]
        chosen = np.full(n, low)
        if low != high:
            ranked = np.argsort(salted_uniform(user_ids, salt), kind="stable")
            extra = np.cumsum(cost[high, ranked] - cost[low, ranked])
            over = np.flatnonzero(totals[low] + extra > target)
            takes = over[0] if len(over) else n
            chosen[ranked[:takes]] = high
        action = actions[chosen, rows]
        expected = np.maximum(self.one_step_cost[day].predict(states)[rows, action], 0.0)
        return PacedDecision(action, chosen, np.asarray(self.multipliers)[chosen], expected, day, calibration,
                             remaining, target, float(cost[chosen, rows].sum()), float(value[chosen, rows].sum()),
                             float(np.mean(chosen != low)) if low != high else 0.0)

    def _free_action(self, states: np.ndarray, day: int) -> int:
        """The action with the least predicted spend today over these users: the level never paid for (its one-step
        cost model is fitted on zeros, so it predicts exactly 0)."""
        return int(np.argmin(self.one_step_cost[day].predict(states).sum(axis=0)))

    def _checked(self, user_ids, states, day: int) -> tuple[np.ndarray, np.ndarray]:
        states = np.asarray(states, dtype=float)
        user_ids = np.asarray(user_ids)
        if not 0 <= day < self.horizon:
            raise InputError(f"day: must be in 0..{self.horizon - 1}, got {day}")
        if states.ndim != 2 or len(states) != len(user_ids) or not np.isfinite(states).all():
            raise InputError(f"states: need one row of finite features per user ({len(user_ids)}), got shape "
                             f"{states.shape}")
        return states, user_ids


def _per_user(values, n: int, name: str) -> np.ndarray:
    values = np.broadcast_to(np.asarray(values, dtype=float), (n,)) if np.ndim(values) == 0 else np.asarray(
        values, dtype=float)
    if values.shape != (n,) or not np.isfinite(values).all() or (values < 0).any():
        raise InputError(f"{name}: need a finite value >= 0 per user ({n}), got shape {values.shape}")
    return values


def paced_policy(evaluate_all: Callable[[Sequence[float]], Sequence[EvaluatedPolicy]], one_step_cost: Sequence, *,
                 multipliers: Sequence[float] = DEFAULT_MULTIPLIERS, safety: float = 0.02) -> PacedPolicy:
    """The grid of best responses: `evaluate_all(multipliers)` gives the evaluated greedy policy for r - m c for
    every multiplier m (e.g. `lambda ms: sweeps.evaluated_many([(1.0, -m) for m in ms])` for `RidgeSweeps`: one
    sweep for the whole grid), `STOP_MULTIPLIER` added last; `one_step_cost` the per-day cost models."""
    multipliers = tuple(float(m) for m in multipliers)
    if not multipliers or min(multipliers) < 0 or not np.isfinite(multipliers).all():
        raise InputError(f"multipliers: need finite multipliers >= 0, got {list(multipliers)}")
    if not 0 <= safety < 1:
        raise InputError(f"safety: must be in [0, 1), got {safety}")
    multipliers = (*multipliers, STOP_MULTIPLIER)
    components = tuple(evaluate_all(multipliers))
    return PacedPolicy(multipliers, components, tuple(one_step_cost), len(one_step_cost), safety)


def paced_policy_from_transitions(data: Transitions, *, multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
                                  regressor: Regressor = RidgeQ, importance_weighted: bool = False,
                                  safety: float = 0.02) -> PacedPolicy:
    """`paced_policy` with the in-memory oracle (FQI + FQE with `regressor`)."""
    _, cost_models = one_step_models(data, regressor=regressor, importance_weighted=importance_weighted)
    return paced_policy(lambda ms: [evaluated_policy(data, 1.0, -m, regressor=regressor,
                                                     importance_weighted=importance_weighted) for m in ms],
                        cost_models, multipliers=multipliers, safety=safety)


def paced_policy_from_sweeps(sweeps, *, multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
                             safety: float = 0.02) -> PacedPolicy:
    """`paced_policy` with `budget_rl.ridge_statistics.RidgeSweeps` (the table stays in its partitions)."""
    _, cost_models = sweeps.one_step()
    return paced_policy(lambda ms: sweeps.evaluated_many([(1.0, -m) for m in ms]), cost_models,
                        multipliers=multipliers, safety=safety)
