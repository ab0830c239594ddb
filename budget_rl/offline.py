"""Offline learning from logged campaign transitions: fitted Q iteration (the best-response oracle) and fitted Q
evaluation (value and cost of any policy), for finite-horizon campaigns.

An episode is one user over the campaign's days. With horizon T, the Q-function of day t is fitted by backward
induction on the transitions of day t: target = relabelled reward + (day t + 1's value at the next state), zero
after the last day. So there is no discount and no bootstrapping across days of the same fit, and with one-hot
state features and every (state, action) logged (full coverage) both procedures are exactly the tabular ones on
the empirical MDP.

Q regressors: `RidgeQ` (per-action ridge regression in closed form; exact for one-hot features) and `MLPQ` (a torch
network with one output per action, for rich state features; on a GPU when given one). For transitions too large for
memory, `budget_rl.ridge_statistics` computes the same ridge FQI and FQE from sufficient statistics over chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from campaign_core import InputError, plain

#: What `fitted_q_evaluation` estimates per episode, in order.
MEASUREMENTS = ("value", "cost")


@dataclass(frozen=True)
class Transitions:
    """Logged decisions as (state, action, reward, cost, next state) per user and day.

    state, next_state : (n, p) finite features. action : (n,) codes 0..n_actions-1. reward, cost : (n,) finite,
    cost >= 0. day : (n,) in 0..horizon-1 (the next state of the last day is ignored). user : (n,) episode ids.
    """

    state: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    cost: np.ndarray
    next_state: np.ndarray
    day: np.ndarray
    user: np.ndarray
    n_actions: int
    horizon: int
    propensity: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.action)
        for name in ("state", "next_state"):
            array = getattr(self, name)
            if array.ndim != 2 or array.shape[0] != n or not np.isfinite(array).all():
                raise InputError(f"{name}: must be {n} rows of finite features, got shape {array.shape}")
        for name in ("reward", "cost", "day", "user"):
            if getattr(self, name).shape != (n,):
                raise InputError(f"{name}: must have {n} values, got shape {getattr(self, name).shape}")
        for name in ("reward", "cost"):
            bad = int((~np.isfinite(getattr(self, name))).sum())
            if bad:
                raise InputError(f"{name}: {bad} values are NaN or infinite")
        if (self.cost < 0).any():
            raise InputError(f"cost: {int((self.cost < 0).sum())} values are negative")
        outside = int(((self.action < 0) | (self.action >= self.n_actions)).sum())
        if outside:
            raise InputError(f"action: {outside} logged actions are outside 0..{self.n_actions - 1}")
        if ((self.day < 0) | (self.day >= self.horizon)).any():
            raise InputError(f"day: values must be in 0..{self.horizon - 1}")
        if self.propensity is not None:
            bad = int((~((self.propensity > 0) & (self.propensity <= 1))).sum()) if self.propensity.shape == (n,) else n
            if bad:
                raise InputError(f"propensity: {bad} values are not in (0, 1] (or the length is not {n})")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, actions: list, horizon: int, *, state_prefix: str = "state_",
                   next_prefix: str = "next_") -> Transitions:
        """From a table with user_id, day, action (labels in `actions`), reward, cost, optional propensity, and the
        state columns `state_<name>` with their `next_<name>`; one row per user and day 0..horizon-1."""
        required = ["user_id", "day", "action", "reward", "cost"]
        missing = [column for column in required if column not in frame.columns]
        if missing:
            raise InputError(f"transitions: missing column(s) {missing}")
        states = [c for c in frame.columns if c.startswith(state_prefix)]
        nexts = [next_prefix + c.removeprefix(state_prefix) for c in states]
        absent = [c for c in nexts if c not in frame.columns]
        if not states or absent:
            raise InputError(f"transitions: need {state_prefix}* columns and their {next_prefix}* twins; "
                             f"missing {absent or [state_prefix + '*']}")
        codes = pd.Index(actions).get_indexer(frame["action"])
        unknown = frame["action"][codes < 0].unique().tolist()
        if unknown:
            raise InputError(f"action: {int((codes < 0).sum())} logged actions are outside the action set "
                             f"{[plain(action) for action in actions]}: {unknown[:5]}")
        repeated = int(frame.duplicated(["user_id", "day"]).sum())
        if repeated:
            raise InputError(f"day: {repeated} rows repeat a (user_id, day) pair; one row per user and day")
        ordered = frame.sort_values(["day", "user_id"], kind="stable")
        per_user = ordered.groupby("user_id")["day"].agg(["min", "max", "count"])
        broken = int(((per_user["min"] != 0) | (per_user["count"] != per_user["max"] + 1)).sum())
        if broken:
            raise InputError(f"day: {broken} users do not have consecutive days from 0 (inconsistent user/day order)")
        codes = pd.Index(actions).get_indexer(ordered["action"])
        propensity = ordered["propensity"].to_numpy(dtype=float) if "propensity" in ordered else None
        return cls(ordered[states].to_numpy(dtype=float), codes.astype(np.int64),
                   ordered["reward"].to_numpy(dtype=float), ordered["cost"].to_numpy(dtype=float),
                   ordered[nexts].to_numpy(dtype=float), ordered["day"].to_numpy(dtype=np.int64),
                   ordered["user_id"].to_numpy(), len(actions), horizon, propensity)

    def on_day(self, day: int) -> np.ndarray:
        return np.flatnonzero(self.day == day)

    def to_frame(self, *, actions: list | None = None, feature_names: list[str] | None = None) -> pd.DataFrame:
        """One row per logged decision (user and day), in stored order: user_id, day, action (its label in
        `actions`, else its code), reward, cost, propensity (when logged), then state_<name> and next_<name> per
        feature (`feature_names`, else 0..p-1): the table `from_frame` reads back."""
        labels = np.asarray(actions, dtype=object)[self.action] if actions is not None else self.action
        frame = pd.DataFrame({"user_id": self.user, "day": self.day, "action": labels, "reward": self.reward,
                              "cost": self.cost})
        if self.propensity is not None:
            frame["propensity"] = self.propensity
        names = list(range(self.state.shape[1])) if feature_names is None else list(feature_names)
        if len(names) != self.state.shape[1]:
            raise InputError(f"feature_names: {len(names)} names for {self.state.shape[1]} state features")
        states = pd.DataFrame(self.state, columns=[f"state_{name}" for name in names])
        nexts = pd.DataFrame(self.next_state, columns=[f"next_{name}" for name in names])
        return pd.concat([frame, states, nexts], axis=1)

    def summary(self) -> dict[str, float]:
        """Headline figures: rows, users, actions, horizon, mean total reward and cost per user, whether the
        propensities were logged."""
        n_users = int(np.unique(self.user).size)
        per_user = max(n_users, 1)
        return {"n_rows": len(self.action), "n_users": n_users, "n_actions": self.n_actions,
                "horizon": self.horizon, "reward_per_user": float(self.reward.sum() / per_user),
                "cost_per_user": float(self.cost.sum() / per_user), "has_propensity": self.propensity is not None}


class RidgeQ:
    """Per-action ridge regression of the target on the features (closed form); predict gives (n, n_actions)."""

    def __init__(self, l2: float = 1e-8):
        self.l2 = l2

    def fit(self, features: np.ndarray, action: np.ndarray, target: np.ndarray, n_actions: int, *,
            weight: np.ndarray | None = None) -> RidgeQ:
        p = features.shape[1]
        self.coefficients_ = np.zeros((n_actions, p))
        for a in range(n_actions):
            rows = action == a
            x = features[rows]
            weighted = x if weight is None else x * weight[rows, None]
            self.coefficients_[a] = np.linalg.solve(weighted.T @ x + self.l2 * np.eye(p), weighted.T @ target[rows])
        return self

    @classmethod
    def from_coefficients(cls, coefficients: np.ndarray, l2: float = 1e-8) -> RidgeQ:
        """A fitted RidgeQ with the given (n_actions, p) coefficients (e.g. solved from sufficient statistics)."""
        fitted = cls(l2)
        fitted.coefficients_ = np.asarray(coefficients, dtype=float)
        return fitted

    def predict(self, features: np.ndarray) -> np.ndarray:
        return features @ self.coefficients_.T


class MLPQ:
    """A torch MLP with one output per action, fitted on the taken action's output by Adam (seeded, CPU or GPU)."""

    def __init__(self, hidden: int = 64, epochs: int = 30, batch_size: int = 1024, learning_rate: float = 3e-3,
                 random_state: int = 0, device: str = "cpu"):
        self.hidden, self.epochs, self.batch_size = hidden, epochs, batch_size
        self.learning_rate, self.random_state, self.device = learning_rate, random_state, device

    def fit(self, features: np.ndarray, action: np.ndarray, target: np.ndarray, n_actions: int, *,
            weight: np.ndarray | None = None) -> MLPQ:
        generator = torch.Generator().manual_seed(self.random_state)
        torch.manual_seed(self.random_state)
        self.network_ = torch.nn.Sequential(
            torch.nn.Linear(features.shape[1], self.hidden), torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, self.hidden), torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, n_actions)).to(self.device)
        x = torch.as_tensor(features, dtype=torch.float32, device=self.device)
        a = torch.as_tensor(action, dtype=torch.int64, device=self.device)
        y = torch.as_tensor(target, dtype=torch.float32, device=self.device)
        w = torch.as_tensor(np.ones(len(target)) if weight is None else weight / weight.mean(), dtype=torch.float32,
                            device=self.device)
        optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.learning_rate)
        for _ in range(self.epochs):
            order = torch.randperm(len(x), generator=generator).to(self.device)
            for start in range(0, len(x), self.batch_size):
                batch = order[start:start + self.batch_size]
                predicted = self.network_(x[batch]).gather(1, a[batch, None])[:, 0]
                loss = torch.mean(w[batch] * (predicted - y[batch]) ** 2)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(features, dtype=torch.float32, device=self.device)
            return self.network_(x).cpu().numpy().astype(np.float64)


Regressor = Callable[[], RidgeQ | MLPQ]


@dataclass(frozen=True)
class GreedyQPolicy:
    """Acts greedily on one fitted Q-function per day (from `fitted_q_iteration`)."""

    q_functions: tuple

    def act(self, features: np.ndarray, day: int) -> np.ndarray:
        return np.argmax(self.q_functions[day].predict(features), axis=1)


def step_weight(data: Transitions, rows: np.ndarray, importance_weighted: bool) -> np.ndarray | None:
    """Per-step inverse propensities of the logged actions (or None): each day's regression for action a then
    fits the day's whole state distribution rather than the states the logging policy gave a to."""
    if not importance_weighted:
        return None
    if data.propensity is None:
        raise InputError("propensity: importance weighting needs the logged propensities")
    return 1.0 / data.propensity[rows]


def fitted_q_iteration(data: Transitions, reward_weight: float, cost_weight: float, *,
                       regressor: Regressor = RidgeQ, importance_weighted: bool = False) -> GreedyQPolicy:
    """The greedy policy for the relabelled reward reward_weight * r + cost_weight * c (backward induction).

    importance_weighted: weight each regression row by 1 / logged propensity (needs `data.propensity`); this
    removes the part of a misspecified Q-function's bias that comes from a targeted logging policy (each action
    logged at other states than the day's whole distribution), at the price of variance. The shift in later days'
    states between the logging and the evaluated policy remains."""
    relabelled = reward_weight * data.reward + cost_weight * data.cost
    q_functions: list = [None] * data.horizon
    for day in reversed(range(data.horizon)):
        rows = data.on_day(day)
        target = relabelled[rows].copy()
        if day + 1 < data.horizon:
            target += q_functions[day + 1].predict(data.next_state[rows]).max(axis=1)
        q_functions[day] = regressor().fit(data.state[rows], data.action[rows], target, data.n_actions,
                                           weight=step_weight(data, rows, importance_weighted))
    return GreedyQPolicy(tuple(q_functions))


def _fqe_sweep(data: Transitions, policy: GreedyQPolicy, signal: np.ndarray, regressor: Regressor,
               importance_weighted: bool) -> tuple[tuple, float]:
    """FQE of one signal: the per-day Q-functions of `policy` for it (day 0 first) and their mean start value."""
    floor = 0.0 if signal.min() >= 0 else -np.inf  # a non-negative signal (cost) has non-negative values
    q_functions: list = [None] * data.horizon
    q_next = None
    for day in reversed(range(data.horizon)):
        rows = data.on_day(day)
        target = signal[rows].copy()
        if q_next is not None:
            following = data.next_state[rows]
            predicted = q_next.predict(following)[np.arange(len(rows)), policy.act(following, day + 1)]
            target += np.maximum(predicted, floor)
        q_next = regressor().fit(data.state[rows], data.action[rows], target, data.n_actions,
                                 weight=step_weight(data, rows, importance_weighted))
        q_functions[day] = q_next
    first = data.state[data.on_day(0)]
    start = q_next.predict(first)[np.arange(len(first)), policy.act(first, 0)]
    return tuple(q_functions), float(np.maximum(start, floor).mean())


def fitted_q_evaluation(data: Transitions, policy: GreedyQPolicy, *, regressor: Regressor = RidgeQ,
                        importance_weighted: bool = False) -> np.ndarray:
    """(value, cost) per episode of `policy`: mean over the logged first-day states of the day-0 Q-functions (one
    for reward, one for cost) at the policy's action. importance_weighted as in `fitted_q_iteration`."""
    return np.asarray([_fqe_sweep(data, policy, signal, regressor, importance_weighted)[1]
                       for signal in (data.reward, data.cost)])


@dataclass(frozen=True)
class EvaluatedPolicy:
    """A greedy policy with its FQE Q-functions per day: `value_q[t]` and `cost_q[t]` predict, for day t's states
    (n, p), the expected purchases and spend per user from day t to the end, (n, actions), when the day's action
    is taken and the policy followed afterwards; `measurement` is its (value, cost) per episode from day 0.
    What `budget_rl.pacing` re-plans from each day."""

    policy: GreedyQPolicy
    value_q: tuple
    cost_q: tuple
    measurement: np.ndarray


def evaluated_policy(data: Transitions, reward_weight: float, cost_weight: float, *, regressor: Regressor = RidgeQ,
                     importance_weighted: bool = False) -> EvaluatedPolicy:
    """The greedy policy for reward_weight * r + cost_weight * c (`fitted_q_iteration`) with its per-day FQE
    Q-functions of value and cost (the ones `fitted_q_evaluation` fits)."""
    policy = fitted_q_iteration(data, reward_weight, cost_weight, regressor=regressor,
                                importance_weighted=importance_weighted)
    (value_q, value), (cost_q, cost) = (_fqe_sweep(data, policy, signal, regressor, importance_weighted)
                                        for signal in (data.reward, data.cost))
    return EvaluatedPolicy(policy, value_q, cost_q, np.array([value, cost]))


def one_step_models(data: Transitions, *, regressor: Regressor = RidgeQ,
                    importance_weighted: bool = False) -> tuple[tuple, tuple]:
    """Per day, the regressions of the day's reward and of its cost alone on the state, per action: (reward
    models, cost models), each a tuple over days whose `predict(states)` gives (n, actions) expected purchases and
    spend of that day only. importance_weighted as in `fitted_q_iteration`."""
    reward_models, cost_models = [], []
    for day in range(data.horizon):
        rows = data.on_day(day)
        weight = step_weight(data, rows, importance_weighted)
        for models, signal in ((reward_models, data.reward), (cost_models, data.cost)):
            models.append(regressor().fit(data.state[rows], data.action[rows], signal[rows], data.n_actions,
                                          weight=weight))
    return tuple(reward_models), tuple(cost_models)


@dataclass(frozen=True)
class PolicyEstimate:
    """FQE of a policy: (value, cost) per episode, with percentile bootstrap intervals over users at `confidence`;
    `replicates` (n_bootstrap, 2) are the bootstrap estimates."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    replicates: np.ndarray
    confidence: float = 0.95

    def to_frame(self) -> pd.DataFrame:
        """One row per measurement (`value`, `cost`, per episode): `measurement`, `estimate`, `low`, `high`."""
        return pd.DataFrame({"measurement": MEASUREMENTS, "estimate": self.estimate, "low": self.low,
                             "high": self.high})

    def summary(self) -> dict[str, float]:
        """Headline figures: value and cost per episode with their interval bounds (`value_low`, ...), the
        bootstrap resamples and the confidence."""
        figures: dict[str, float] = {}
        for index, name in enumerate(MEASUREMENTS):
            figures |= {name: float(self.estimate[index]), f"{name}_low": float(self.low[index]),
                        f"{name}_high": float(self.high[index])}
        return figures | {"n_bootstrap": len(self.replicates), "confidence": self.confidence}


def fqe_with_intervals(data: Transitions, policy: GreedyQPolicy, *, regressor: Regressor = RidgeQ,
                       importance_weighted: bool = False, n_bootstrap: int = 50, confidence: float = 0.95,
                       random_state: int = 0) -> PolicyEstimate:
    """FQE on the logs and on `n_bootstrap` resamples of the users (episodes drawn with replacement, whole)."""
    estimate = fitted_q_evaluation(data, policy, regressor=regressor, importance_weighted=importance_weighted)
    rng = np.random.default_rng(random_state)
    users, position = np.unique(data.user, return_inverse=True)
    rows_of = np.argsort(position, kind="stable")
    starts = np.searchsorted(position[rows_of], np.arange(len(users)))
    counts = np.bincount(position, minlength=len(users))
    replicates = []
    for _ in range(n_bootstrap):
        drawn = rng.integers(0, len(users), size=len(users))
        lengths = counts[drawn]
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows = rows_of[np.repeat(starts[drawn], lengths) + within]
        sample = Transitions(data.state[rows], data.action[rows], data.reward[rows], data.cost[rows],
                             data.next_state[rows], data.day[rows], data.user[rows], data.n_actions, data.horizon,
                             None if data.propensity is None else data.propensity[rows])
        replicates.append(fitted_q_evaluation(sample, policy, regressor=regressor,
                                              importance_weighted=importance_weighted))
    replicates = np.asarray(replicates)
    tail = 100 * (1 - confidence) / 2
    return PolicyEstimate(estimate, np.percentile(replicates, tail, axis=0),
                          np.percentile(replicates, 100 - tail, axis=0), replicates, float(confidence))


def fqe_oracle(data: Transitions, *, regressor: Regressor = RidgeQ, importance_weighted: bool = False):
    """A best-response oracle for `budget_rl.mixed.maximize_under_budget`: FQI on the reward relabelled by the
    direction, then FQE of the resulting policy for its (value, cost)."""
    step_weight(data, data.on_day(0), importance_weighted)  # no propensities: fail before any work

    def oracle(direction: np.ndarray) -> tuple[GreedyQPolicy, np.ndarray]:
        policy = fitted_q_iteration(data, -float(direction[0]), -float(direction[1]), regressor=regressor,
                                    importance_weighted=importance_weighted)
        return policy, fitted_q_evaluation(data, policy, regressor=regressor, importance_weighted=importance_weighted)

    return oracle
