"""Headroom: the best a policy can do on a campaign whose true per-user dynamics are known.

The synthetic campaign's truth, per user i (docs/constrained_rl.md, 'Spending the budget'): on day t the user is
active with probability sigmoid(activity_i + habit_effect h + carryover[last arm seen]); an active user given arm a
buys with probability sigmoid(purchase_i[a] + habit_effect h), paying face[a]; the habit moves to
habit_decay h + purchase, and the last arm seen becomes a when the user was active. Given a budget multiplier
lambda, the best policy for r - lambda c decouples into one small MDP per user with state (habit, last arm), which
`lagrangian_policy` solves exactly by backward induction, the habit on a grid (linear interpolation between grid
points; the decision uses the nearest grid point).

What it bounds. For any policy pi (one that may know every user's parameters and latent state) and lambda >= 0,
value(pi) <= L(lambda) + lambda cost(pi), L(lambda) = max_pi [value - lambda cost] (weak duality), so at expected
spend <= b no policy exceeds min_lambda L(lambda) + lambda b: a true upper bound up to the habit grid's
interpolation error (`HeadroomPolicy.dual_bound`). The policy that attains it, the full-knowledge Lagrangian
policy, is also run in the simulator: its realised value is the best policy found with full knowledge. A policy
learnt from logs sees neither the latent engagement nor the habit, so it cannot reach either figure in general;
the gap of the myopic allocator to it is the headroom that long-term planning and better models could share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from campaign_core import InputError


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class TrueCampaign:
    """The per-user truth of the campaign (logit scale).

    purchase_logit : (n, K) purchase logit of each arm at zero habit. activity_logit : (n,) activity logit at zero
    habit before any arm. carryover : (K,) activity logit gained the day after an arm was seen. face : (K,) cost of a
    purchase per arm (currency units). habit_effect, habit_decay : the habit's logit effect and daily decay."""

    purchase_logit: np.ndarray
    activity_logit: np.ndarray
    carryover: np.ndarray
    face: np.ndarray
    habit_effect: float
    habit_decay: float
    horizon: int

    def __post_init__(self) -> None:
        n, k = np.shape(self.purchase_logit)
        if np.shape(self.activity_logit) != (n,) or np.shape(self.carryover) != (k,) or np.shape(self.face) != (k,):
            raise InputError(f"purchase_logit: shape {(n, k)} does not match activity_logit, carryover or face")
        if not 0 <= self.habit_decay < 1 or self.horizon < 1:
            raise InputError(f"habit_decay: must be in [0, 1) and horizon >= 1, got {self.habit_decay}, "
                             f"{self.horizon}")

    @property
    def n_users(self) -> int:
        return len(self.activity_logit)

    def subset(self, rows: np.ndarray) -> TrueCampaign:
        return TrueCampaign(self.purchase_logit[rows], self.activity_logit[rows], self.carryover, self.face,
                            self.habit_effect, self.habit_decay, self.horizon)


@dataclass(frozen=True)
class HeadroomPolicy:
    """The best response to r - multiplier c with full knowledge, per user.

    action : (horizon, n, grid, K + 1) int8, the arm on each day at each habit grid point and last arm seen (index 0:
    none yet, k + 1: arm k). value, cost : (n,) expected purchases and spend per user over the campaign from the
    start (habit 0, no arm seen), by the same backward induction."""

    multiplier: float
    grid: np.ndarray
    action: np.ndarray
    value: np.ndarray
    cost: np.ndarray

    @property
    def lagrangian(self) -> float:
        """L(multiplier) per user: mean of value - multiplier cost."""
        return float(np.mean(self.value - self.multiplier * self.cost))

    def dual_bound(self, budget_per_user: float) -> float:
        """L(multiplier) + multiplier budget: no policy spending at most `budget_per_user` in expectation buys more
        purchases per user (up to the habit grid's interpolation error)."""
        return self.lagrangian + self.multiplier * budget_per_user

    def act(self, rows: np.ndarray, habit: np.ndarray, last_arm: np.ndarray, day: int) -> np.ndarray:
        """Arms of the users at positions `rows`, given their habit and last arm seen (-1: none)."""
        nearest = np.abs(habit[:, None] - self.grid[None, :]).argmin(axis=1)
        return self.action[day, rows, nearest, last_arm + 1].astype(np.int64)


def habit_grid(campaign: TrueCampaign, points: int) -> np.ndarray:
    """`points` habit levels from 0 to the largest reachable habit (a purchase every day)."""
    top = sum(campaign.habit_decay ** k for k in range(campaign.horizon))
    return np.linspace(0.0, top, points)


def _interpolation(grid: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(len(at), len(grid)) weights of linear interpolation on `grid` at the points `at` (clipped to the grid)."""
    at = np.clip(at, grid[0], grid[-1])
    upper = np.clip(np.searchsorted(grid, at, side="right"), 1, len(grid) - 1)
    share = (at - grid[upper - 1]) / (grid[upper] - grid[upper - 1])
    weights = np.zeros((len(at), len(grid)))
    weights[np.arange(len(at)), upper - 1] = 1 - share
    weights[np.arange(len(at)), upper] += share
    return weights


def lagrangian_policy(campaign: TrueCampaign, multiplier: float, *, grid_points: int = 32,
                      block_users: int = 10_000, keep_actions: bool = True) -> HeadroomPolicy:
    """Backward induction of every user's MDP for the reward r - multiplier c (module docstring), in blocks of
    users; keep_actions=False keeps only the start value and cost (for a search over multipliers)."""
    if multiplier < 0:
        raise InputError(f"multiplier: must be >= 0, got {multiplier}")
    grid = habit_grid(campaign, grid_points)
    stay, bought = (_interpolation(grid, campaign.habit_decay * grid + shift).T for shift in (0.0, 1.0))
    n, k = campaign.purchase_logit.shape
    carry = np.r_[0.0, campaign.carryover]  # by last arm seen: none, then each arm
    rewards = np.stack([1.0 - multiplier * campaign.face, np.ones(k), campaign.face])  # (3, K)
    actions = np.zeros((campaign.horizon, n if keep_actions else 0, grid_points, k + 1), dtype=np.int8)
    value, cost = np.zeros(n), np.zeros(n)
    for first in range(0, n, block_users):
        rows = slice(first, min(first + block_users, n))
        # arrays run (..., users, last arm seen, habit grid): the grid last, for the interpolation's matmul
        active = _sigmoid(campaign.activity_logit[rows, None, None] + carry[None, :, None]
                          + campaign.habit_effect * grid[None, None, :])  # (m, K + 1, grid)
        buys = _sigmoid(campaign.purchase_logit[rows, :, None] + campaign.habit_effect * grid[None, None, :])
        # to go from day t + 1 at (last arm, grid): lagrangian, purchases, spend
        ahead = np.zeros((3, *active.shape))
        for day in reversed(range(campaign.horizon)):
            if_stay, if_bought = ahead @ stay, ahead @ bought  # at habit decay * h and decay * h + 1
            # an active user given arm a buys or not, and has seen a: (3, m, K, grid)
            went = buys * (rewards[:, None, :, None] + if_bought[:, :, 1:]) + (1 - buys) * if_stay[:, :, 1:]
            q = (active[:, :, None] * went[:, :, None]
                 + (1 - active[:, :, None]) * if_stay[:, :, :, None])  # (3, m, K + 1 seen, K arm, grid)
            best = q[0].argmax(axis=2)  # (m, K + 1, grid)
            ahead = np.take_along_axis(q, best[None, :, :, None], axis=3)[:, :, :, 0]
            if keep_actions:
                actions[day, rows] = best.transpose(0, 2, 1)
        value[rows], cost[rows] = ahead[1, :, 0, 0], ahead[2, :, 0, 0]
    return HeadroomPolicy(float(multiplier), grid, actions, value, cost)


def multiplier_for_spend(campaign: TrueCampaign, spend: float, *, low: float = 1e-4, high: float = 10.0,
                         steps: int = 14, grid_points: int = 32) -> float:
    """The multiplier whose full-knowledge policy expects to spend `spend` per user (bisection on log multiplier;
    the spend decreases in the multiplier)."""
    for _ in range(steps):
        middle = float(np.sqrt(low * high))
        expected = lagrangian_policy(campaign, middle, grid_points=grid_points, keep_actions=False).cost.mean()
        low, high = (middle, high) if expected > spend else (low, middle)
    return float(np.sqrt(low * high))

