"""Finite-horizon tabular constrained MDPs: exact optimum (occupancy-measure LP), exact evaluation, best response.

A campaign of `horizon` days for one user: state s_t, incentive level a_t, reward r(s, a) (e.g. purchase
probability), cost c(s, a) (expected spend), transitions P(s' | s, a). A deterministic Markov policy is an
(horizon, n_states) table of levels. The measurement vector of a policy is (expected total reward, expected total
cost) per user; the budget bounds the expected total cost per user.

The true constrained optimum is the occupancy-measure LP: maximize sum_t,s,a q_t(s, a) r(s, a) subject to
sum_a q_0(s, a) = initial(s), sum_a q_{t+1}(s', a) = sum_s,a P(s' | s, a) q_t(s, a), q >= 0 and
sum q c <= budget. Its optimum mixes at most two deterministic policies (one constraint), which is what the
column generation of `budget_rl.mixed` must recover.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pandas as pd

from budget_rl.offline import Transitions
from campaign_core import InputError


@dataclass(frozen=True)
class TabularCMDP:
    """transition (S, A, S) rows summing to 1; reward, cost (S, A); initial (S,) summing to 1; horizon in days."""

    transition: np.ndarray
    reward: np.ndarray
    cost: np.ndarray
    initial: np.ndarray
    horizon: int

    def __post_init__(self) -> None:
        n_states, n_actions = self.reward.shape
        if self.transition.shape != (n_states, n_actions, n_states):
            raise InputError(f"transition: shape {self.transition.shape}, expected {(n_states, n_actions, n_states)}")
        if not np.allclose(self.transition.sum(axis=2), 1.0) or (self.transition < 0).any():
            raise InputError("transition: every P(. | s, a) must be a probability distribution")
        if self.cost.shape != self.reward.shape or (self.cost < 0).any():
            raise InputError("cost: must have the reward's shape and be >= 0")
        if self.initial.shape != (n_states,) or not np.isclose(self.initial.sum(), 1.0):
            raise InputError("initial: must be a distribution over the states")
        if self.horizon < 1:
            raise InputError(f"horizon: must be >= 1, got {self.horizon}")

    @property
    def n_states(self) -> int:
        return self.reward.shape[0]

    @property
    def n_actions(self) -> int:
        return self.reward.shape[1]

    def to_frame(self) -> pd.DataFrame:
        """One row per (state, action): `state`, `action`, its per-day `reward` and `cost`, and `initial` (the
        state's probability on day 0). The transitions are `transition` (S, A, S)."""
        state, action = np.meshgrid(np.arange(self.n_states), np.arange(self.n_actions), indexing="ij")
        return pd.DataFrame({"state": state.ravel(), "action": action.ravel(), "reward": self.reward.ravel(),
                             "cost": self.cost.ravel(), "initial": self.initial[state.ravel()]})

    def summary(self) -> dict[str, float]:
        """Headline figures: states, actions, horizon."""
        return {"n_states": self.n_states, "n_actions": self.n_actions, "horizon": self.horizon}

    def evaluate(self, policy: np.ndarray) -> np.ndarray:
        """(expected total reward, expected total cost) of a policy: an (horizon, S) table of actions, or an
        (horizon, S, A) table of action probabilities (a randomized Markov policy)."""
        probabilities = self._as_probabilities(policy)
        state = self.initial.copy()
        totals = np.zeros(2)
        for t in range(self.horizon):
            occupancy = state[:, None] * probabilities[t]
            totals += [(occupancy * self.reward).sum(), (occupancy * self.cost).sum()]
            state = np.einsum("sa,sap->p", occupancy, self.transition)
        return totals

    def best_response(self, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The deterministic policy minimizing <direction, (total reward, total cost)> (backward induction on the
        relabelled reward -direction[0] r - direction[1] c), and its measurement vector."""
        relabelled = -(direction[0] * self.reward + direction[1] * self.cost)
        policy = np.zeros((self.horizon, self.n_states), dtype=np.int64)
        future = np.zeros(self.n_states)
        for t in reversed(range(self.horizon)):
            q = relabelled + self.transition @ future
            policy[t] = np.argmax(q, axis=1)
            future = q.max(axis=1)
        return policy, self.evaluate(policy)

    def constrained_optimum(self, budget: float) -> tuple[float, float]:
        """(value, cost) of the best randomized policy with expected total cost <= budget (occupancy LP, Clarabel)."""
        occupancy = [cp.Variable((self.n_states, self.n_actions), nonneg=True) for _ in range(self.horizon)]
        constraints = [cp.sum(occupancy[0], axis=1) == self.initial]
        for t in range(self.horizon - 1):
            inflow = sum(self.transition[:, a, :].T @ occupancy[t][:, a] for a in range(self.n_actions))
            constraints.append(cp.sum(occupancy[t + 1], axis=1) == inflow)
        total_cost = sum(cp.sum(cp.multiply(q, self.cost)) for q in occupancy)
        constraints.append(total_cost <= budget)
        problem = cp.Problem(cp.Maximize(sum(cp.sum(cp.multiply(q, self.reward)) for q in occupancy)), constraints)
        problem.solve(solver="CLARABEL")
        if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            raise InputError(f"budget: no policy spends within {budget!r} (the occupancy LP is infeasible)")
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            raise RuntimeError(f"budget: the occupancy LP ended with status {problem.status}")
        return float(problem.value), float(total_cost.value)

    def _as_probabilities(self, policy: np.ndarray) -> np.ndarray:
        policy = np.asarray(policy)
        if policy.shape == (self.horizon, self.n_states):
            return np.eye(self.n_actions)[policy]
        if policy.shape == (self.horizon, self.n_states, self.n_actions):
            return policy
        raise InputError(f"policy: shape {policy.shape}, expected {(self.horizon, self.n_states)} or with actions")


def per_day_mixture(policies: list[np.ndarray], weights: np.ndarray, n_actions: int) -> np.ndarray:
    """The randomized Markov policy that redraws the component every day: P(a | s, t) = sum_i w_i 1[pi_i(s, t) = a].
    A different policy from drawing the component once per user, with a different value and cost in general."""
    return sum(w * np.eye(n_actions)[p] for w, p in zip(weights, policies, strict=True))


def random_cmdp(n_states: int, n_actions: int, horizon: int, *, random_state: int = 0) -> TabularCMDP:
    """A random CMDP whose costly actions pay off later (action a moves mass to higher states with a's size), with a
    free action 0, so budgets trade today's reward for tomorrow's. `random_state` seeds every draw."""
    rng = np.random.default_rng(random_state)
    transition = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
    lift = np.linspace(0.0, 0.8, n_actions)
    upward = np.zeros(n_states)
    upward[-1] = 1.0
    transition = (1 - lift)[None, :, None] * transition + lift[None, :, None] * upward[None, None, :]
    reward = rng.uniform(0.0, 1.0, size=(n_states, n_actions)) * (1 + np.arange(n_states))[:, None] / n_states
    cost = np.sort(rng.uniform(0.0, 1.0, size=(n_states, n_actions)), axis=1)
    cost[:, 0] = 0.0
    return TabularCMDP(transition, reward, cost, rng.dirichlet(np.ones(n_states)), horizon)


def log_transitions(model: TabularCMDP, n_users: int, *, random_state: int = 0,
                    logging: np.ndarray | None = None) -> Transitions:
    """Episodes of `n_users` users under a logging policy (S, A) (default uniform: full coverage), with one-hot
    state features and the logged propensities: the offline data the learners of `budget_rl.offline` take.
    `random_state` seeds the users' draws."""
    rng = np.random.default_rng(random_state)
    logging = np.full((model.n_states, model.n_actions), 1.0 / model.n_actions) if logging is None else logging
    eye = np.eye(model.n_states)
    state = rng.choice(model.n_states, size=n_users, p=model.initial)
    columns: dict[str, list] = {key: [] for key in ("state", "action", "next", "day")}
    for day in range(model.horizon):
        action = (rng.random(n_users)[:, None] > logging[state].cumsum(axis=1)).sum(axis=1)
        following = (rng.random(n_users)[:, None] > model.transition[state, action].cumsum(axis=1)).sum(axis=1)
        for key, value in (("state", state), ("action", action), ("next", following),
                           ("day", np.full(n_users, day))):
            columns[key].append(value)
        state = following
    state, action, following, day = (np.concatenate(columns[key]) for key in ("state", "action", "next", "day"))
    return Transitions(eye[state], action, model.reward[state, action], model.cost[state, action], eye[following],
                       day, np.tile(np.arange(n_users), model.horizon), model.n_actions, model.horizon,
                       logging[state, action])

