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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from budget_rl.offline import EvaluatedPolicy, Regressor, RidgeQ, Transitions, evaluated_policy, one_step_models
from campaign_core import InputError, compute, salted_uniform

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
        neighbouring components. (`DayPlan` makes the same decision in blocks of users, for any number.)"""
        states, user_ids = self._checked(user_ids, states, day)
        n = len(states)
        spent = _per_user(spent_so_far, n, "spent_so_far")
        budget = _per_user(budget_per_user, n, "budget_per_user")
        planned = None if planned_so_far is None else _per_user(planned_so_far, n, "planned_so_far")
        free = self._free_action(states, day)
        actions, cost = self._options(states, day, free)
        plan = self.plan_day(day, cost.sum(axis=1), free, float(spent.sum()), float(budget.sum()),
                             None if planned is None else float(planned.sum()))
        cut, uniform = 1.0, salted_uniform(user_ids, salt)
        if plan.low != plan.high:
            ranked = np.argsort(uniform, kind="stable")
            extra = np.cumsum(cost[plan.high, ranked] - cost[plan.low, ranked])
            over = np.flatnonzero(plan.low_total + extra > plan.target)
            cut = uniform[ranked[over[0]]] if len(over) else 1.0
        decision = plan.decide(self, user_ids, states, salt, cut, options=(actions, cost), uniform=uniform)
        value = self._value(states, day, decision.action, decision.component)
        return replace(decision, planned_value=float(value.sum()), high_share=float(np.mean(
            decision.component == plan.high)) if plan.low != plan.high else 0.0)

    def _options(self, states: np.ndarray, day: int, free: int) -> tuple[np.ndarray, np.ndarray]:
        """(actions, planned cost), (components, n) each: every component's action for each user today and its
        predicted remaining spend Q^c (the stop component: the free action, 0)."""
        n, rows = len(states), np.arange(len(states))
        actions = np.stack([c.policy.act(states, day) for c in self.components[:-1]] + [np.full(n, free)])
        cost = np.stack([np.maximum(c.cost_q[day].predict(states)[rows, a], 0.0)
                         for c, a in zip(self.components[:-1], actions, strict=False)] + [np.zeros(n)])
        return actions, cost

    def _value(self, states: np.ndarray, day: int, action: np.ndarray, component: np.ndarray) -> np.ndarray:
        """The planned remaining purchases Q^v of each user's component at its action today."""
        value = np.zeros(len(states))
        for k in np.unique(component):
            rows = component == k
            value[rows] = self.components[k].value_q[day].predict(states[rows])[np.arange(rows.sum()), action[rows]]
        return value

    def plan_day(self, day: int, planned_totals: np.ndarray, free_action: int, spent_total: float,
                 budget_total: float, planned_total: float | None) -> DayPlan:
        """The day's pair of neighbouring components and target, from totals over all of today's users: each
        component's planned remaining spend, the spend so far, the campaign budget and the summed expected_cost of
        the days already run (None: no calibration)."""
        calibration = 1.0
        if planned_total is not None and planned_total > 0 and spent_total > 0:
            calibration = float(spent_total / planned_total)
        remaining = max((1.0 - self.safety) * budget_total - spent_total, 0.0)
        target = remaining / calibration
        totals = np.asarray(planned_totals, dtype=float)
        stop = len(totals) - 1
        order = np.lexsort((np.arange(len(totals)) != stop, totals))  # cheapest plan first, the stop one first of ties
        position = int(np.searchsorted(totals[order], target, side="left"))
        low, high = int(order[max(position - 1, 0)]), int(order[min(position, len(order) - 1)])
        return DayPlan(day, low, high, free_action, calibration, remaining, target, float(totals[low]),
                       float(totals[high]))

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


@dataclass(frozen=True)
class DayPlan:
    """A day's plan from totals over all its users (`PacedPolicy.plan_day`): the cheaper (`low`) and dearer
    (`high`) neighbouring components around the target, the free action, and the figures of `PacedDecision`.

    Users whose salted uniform is below a cut take `high`, the others `low`; the cut is where the planned total,
    taking users in increasing order of their uniform, first passes the target (1: nobody passes it). In memory
    `PacedPolicy.decide` finds it by sorting; over blocks of users, `cut_of` finds the same cut from `SplitBins` and
    `BinUsers` passes, without ever holding every user."""

    day: int
    low: int
    high: int
    free_action: int
    calibration: float
    remaining: float
    target: float
    low_total: float
    high_total: float

    def decide(self, policy: PacedPolicy, user_ids, states: np.ndarray, salt: str, cut: float, *,
               options: tuple[np.ndarray, np.ndarray] | None = None,
               uniform: np.ndarray | None = None) -> PacedDecision:
        """The decision of a block of today's users under this plan and cut (`planned_value` and `high_share`
        are left at 0: figures of all users, summed by the caller). `options` (every component's actions and
        planned costs for these users) and `uniform` (their salted uniforms): computed here unless the caller has
        them already."""
        rows = np.arange(len(states))
        chosen = np.full(len(states), self.low)
        if self.low != self.high:
            chosen[(salted_uniform(user_ids, salt) if uniform is None else uniform) < cut] = self.high
        actions, cost = policy._options(states, self.day, self.free_action) if options is None else options
        action = actions[chosen, rows]
        expected = np.maximum(policy.one_step_cost[self.day].predict(states)[rows, action], 0.0)
        return PacedDecision(action, chosen, np.asarray(policy.multipliers)[chosen], expected, self.day,
                             self.calibration, self.remaining, self.target, float(cost[chosen, rows].sum()), 0.0, 0.0)

    def cut_of(self, bins: np.ndarray, users_of_bin: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> float:
        """The cut from `SplitBins`' (3, bins) sums and, for a bin where the total may pass the target,
        users_of_bin(bin) -> (uniforms, extra planned spend) of its users: the first user whose running total
        passes the target (1 if none). A bin is read user by user only when its positive extras could carry the
        running total over the target."""
        if self.low == self.high:
            return 1.0
        before = self.low_total + np.concatenate([[0.0], np.cumsum(bins[0])[:-1]])  # running total at each bin
        for b in np.flatnonzero((before + bins[1] > self.target) & (bins[2] > 0)):
            uniforms, extra = users_of_bin(int(b))
            order = np.argsort(uniforms, kind="stable")
            over = np.flatnonzero(before[b] + np.cumsum(extra[order]) > self.target)
            if len(over):
                return float(uniforms[order[over[0]]])
        return 1.0


#: Bins of the salted uniform in which `SplitBins` sums the extra planned spend of the dearer component.
SPLIT_BINS = 1 << 16


def _split_bin(uniform: np.ndarray) -> np.ndarray:
    return np.minimum((uniform * SPLIT_BINS).astype(np.int64), SPLIT_BINS - 1)


@dataclass(frozen=True)
class _UsersOfDay:
    """How a block of today's users reads: their ids and states from a DataFrame's `user_id` and state columns."""

    policy: PacedPolicy
    columns: tuple[str, ...]

    def of(self, chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return chunk["user_id"].to_numpy(), chunk[list(self.columns)].to_numpy(dtype=float)


@dataclass(frozen=True)
class PlanTotals(_UsersOfDay):
    """Statistic over blocks of today's users: each component's summed planned remaining spend at its action, the
    summed one-step spend of each action (the free action is the least), and the users; `finalize` gives
    (planned totals, free action, users)."""

    day: int

    def partial(self, chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
        _, states = self.of(chunk)
        one_step = self.policy.one_step_cost[self.day].predict(states).sum(axis=0)
        # the stop component plans 0 whatever its action: any action stands in for the free one here
        _, cost = self.policy._options(states, self.day, 0)
        return cost.sum(axis=1), one_step, len(states)

    @staticmethod
    def merge(left: tuple, right: tuple) -> tuple:
        return left[0] + right[0], left[1] + right[1], left[2] + right[2]

    @staticmethod
    def finalize(state: tuple) -> tuple[np.ndarray, int, int]:
        return state[0], int(np.argmin(state[1])), state[2]


@dataclass(frozen=True)
class SplitBins(_UsersOfDay):
    """Statistic over blocks of today's users: per bin of the salted uniform, the summed extra planned spend of the
    plan's `high` over its `low` component, the summed positive extras and the users: (3, SPLIT_BINS)."""

    plan: DayPlan
    salt: str

    def _extra(self, chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        users, states = self.of(chunk)
        _, cost = self.policy._options(states, self.plan.day, self.plan.free_action)
        return salted_uniform(users, self.salt), cost[self.plan.high] - cost[self.plan.low]

    def partial(self, chunk: pd.DataFrame) -> np.ndarray:
        uniform, extra = self._extra(chunk)
        bins = _split_bin(uniform)
        return np.stack([np.bincount(bins, extra, SPLIT_BINS), np.bincount(bins, np.maximum(extra, 0.0), SPLIT_BINS),
                         np.bincount(bins, minlength=SPLIT_BINS).astype(float)])

    @staticmethod
    def merge(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return left + right

    @staticmethod
    def finalize(state: np.ndarray) -> np.ndarray:
        return state


@dataclass(frozen=True)
class BinUsers(SplitBins):
    """Statistic over blocks of today's users: the (uniforms, extra planned spend) of the users in one bin."""

    bin: int

    def partial(self, chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        uniform, extra = self._extra(chunk)
        inside = _split_bin(uniform) == self.bin
        return uniform[inside], extra[inside]

    @staticmethod
    def merge(left: tuple, right: tuple) -> tuple:
        return np.concatenate([left[0], right[0]]), np.concatenate([left[1], right[1]])

    @staticmethod
    def finalize(state: tuple) -> tuple:
        return state


@dataclass(frozen=True)
class DayFigures(SplitBins):
    """Statistic over blocks of today's users, once the cut is known: the sums of the day's figures (planned
    remaining spend and purchases of each user's component, users on `high`, expected cost, users), merged as
    `SplitBins` merges."""

    cut: float

    def partial(self, chunk: pd.DataFrame) -> np.ndarray:
        users, states = self.of(chunk)
        decision = self.plan.decide(self.policy, users, states, self.salt, self.cut)
        value = self.policy._value(states, self.plan.day, decision.action, decision.component)
        return np.array([decision.planned_remaining, value.sum(), np.sum(decision.component == self.plan.high),
                         decision.expected_cost.sum(), len(states)])


def decide_in_blocks(policy: PacedPolicy, table: Any, columns: Sequence[str], day: int, *, spent_so_far: float,
                     budget_per_user: float, salt: str, planned_so_far: float | None = None
                     ) -> tuple[DayPlan, float, dict[str, float]]:
    """The day's plan, cut and figures for every user of `table` (a `campaign_core.ChunkedTable` or DataFrame with
    `user_id` and the state `columns`), never holding more than a block of users: one pass for the totals, one for
    the split's bins, one per bin read user by user (usually one), one for the figures. The decisions are then
    `plan.decide(policy, users, states, salt, cut)` block by block, the same as `PacedPolicy.decide` on all the
    users at once with spent_so_far and planned_so_far as campaign totals (currency units)."""
    columns, read = tuple(columns), ["user_id", *columns]
    totals, free, n = compute(PlanTotals(policy, columns, day), table, columns=read)
    plan = policy.plan_day(day, totals, free, float(spent_so_far), float(budget_per_user) * n, planned_so_far)
    cut = 1.0
    if plan.low != plan.high:
        bins = compute(SplitBins(policy, columns, plan, salt), table, columns=read)
        cut = plan.cut_of(bins, lambda b: compute(BinUsers(policy, columns, plan, salt, b), table, columns=read))
    planned, value, high, expected, users = compute(DayFigures(policy, columns, plan, salt, cut), table, columns=read)
    figures = {"day": day, "calibration": plan.calibration, "remaining_budget": plan.remaining,
               "target": plan.target, "planned_remaining": planned, "planned_value": value,
               "high_share": high / users if plan.low != plan.high and users else 0.0, "expected_cost": expected,
               "users": users}
    return plan, cut, figures


def daily_budget(campaign_budget: float, spent_so_far: float, day: int, days: int, *,
                 planned_so_far: float | None = None, safety: float = 0.0,
                 calibration: float | None = None) -> float:
    """Today's budget for an allocator that spends one day at a time (the two-stage allocator), re-solved each day
    from the spend so far: what is left of the campaign budget after the `safety` share, split evenly over the days
    left (today included), divided by the calibration kappa, the realised over planned spend expected today, so
    that a plan whose cost models overstate spend is given more planned budget. kappa is `calibration` when given
    (`spend_calibration` of the days' own figures), else spent_so_far / planned_so_far (1 without history).
    Currency units, like the arguments; 0 once the budget is spent."""
    if not 0 <= day < days:
        raise InputError(f"day: must be in 0..{days - 1} for a campaign of {days} days, got {day}")
    if campaign_budget < 0 or spent_so_far < 0 or (planned_so_far is not None and planned_so_far < 0):
        raise InputError("campaign_budget, spent_so_far, planned_so_far: must be >= 0")
    if not 0 <= safety < 1:
        raise InputError(f"safety: must be in [0, 1), got {safety}")
    if calibration is not None and not (np.isfinite(calibration) and calibration > 0):
        raise InputError(f"calibration: must be a finite ratio > 0, got {calibration}")
    if calibration is None:
        calibration = 1.0
        if planned_so_far is not None and planned_so_far > 0 and spent_so_far > 0:
            calibration = spent_so_far / planned_so_far
    remaining = max((1.0 - safety) * campaign_budget - spent_so_far, 0.0)
    return remaining / (days - day) / calibration


#: Days of history from which `spend_calibration` follows the trend of the daily ratios (before: their total).
TREND_DAYS = 3


def spend_calibration(spent_by_day: Sequence[float], planned_by_day: Sequence[float]) -> float:
    """The ratio of realised to planned spend to expect today, from the days run (currency units each): with
    `TREND_DAYS` or more days, the least-squares line through the daily ratios (each day weighted by its planned
    spend) read at today, kept within half and twice the ratio of the totals; with fewer, the ratio of the totals;
    1 with none. The ratio drifts as the campaign moves its users away from the logs the cost models learned from
    (on the simulator it fell from 0.83 to 0.71 over 14 days), and a total lags behind such a drift."""
    spent, planned = np.asarray(spent_by_day, dtype=float), np.asarray(planned_by_day, dtype=float)
    if spent.shape != planned.shape or spent.ndim != 1:
        raise InputError(f"spent_by_day, planned_by_day: need one figure per day run each, got {spent.size} and "
                         f"{planned.size}")
    if not (np.isfinite(spent).all() and np.isfinite(planned).all()) or (spent < 0).any() or (planned < 0).any():
        raise InputError("spent_by_day, planned_by_day: must be finite and >= 0")
    if planned.sum() <= 0 or spent.sum() <= 0:
        return 1.0
    total = spent.sum() / planned.sum()
    days = np.flatnonzero(planned > 0)
    if days.size < TREND_DAYS:
        return float(total)
    slope, intercept = np.polyfit(days, spent[days] / planned[days], 1, w=np.sqrt(planned[days]))
    return float(np.clip(intercept + slope * len(planned), total / 2, total * 2))


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
