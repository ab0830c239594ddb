"""Mixed policies that maximize value under budget constraints, from a best-response oracle.

A policy's measurement vector z (d entries: value, then the constrained quantities such as cost per user) is
linear in mixtures, so the achievable vectors of mixed policies are the convex hull of the deterministic
policies' vectors, and the budgeted optimum is a mixture of at most d of them (an LP vertex: d - 1 limit rows and
the convexity row).

`maximize_under_budget` finds it by column generation (docs/constrained_rl.md, 'The mixed policy'): a restricted
master LP over the stored policies (HiGHS dual simplex, a vertex) gives the prices lambda >= 0 of the limits; the
oracle returns the deterministic policy best for the relabelled reward value - <lambda, constrained measurements>
(for one budget: the best response to r - lambda c); it joins the store if its reduced value is positive, and
policies with zero weight leave it, so at most d + 1 policies are stored at any time. It stops when no policy
improves (the optimum over the whole hull). The stored policies' weights are the mixture; `MixedPolicy.assign`
executes it by hashing user ids.

`approach_target` is the minimum-norm-point loop for a target set C = {sense * z <= bound}: Wolfe's algorithm on
conv(m_i - bound) + R^d_+ (m = sense * z; the orthant's unit vectors are rays of the corral), whose minimum-norm
point is 0 exactly when a mixture lies in C. Each iteration calls the oracle with the current point x (the gradient
of 1/2 dist^2), adds the policy or the ray that improves, and applies the corral update
(`min_norm_point.wolfe_step`: affine minimization, step back to the hull, drop zero weights; a Caratheodory step
keeps the corral at d + 1), so at most d + 1 policies are held at every iteration. It stops at x = 0 (in C), when
<x, v> > tol ||x|| for every policy v (every mixture is farther than tol from C: out of reach), or at Wolfe's
certificate <x, v> >= ||x||^2 - tol^2 (x is the minimum-norm point). `maximize_by_target_search` wraps it in a
bisection on the value target, warm-started from the last feasible corral: a second route to the same optimum, kept
as a check on column generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linprog

from budget_rl.min_norm_point import wolfe_step
from campaign_core import InputError, salted_uniform

#: oracle(direction) -> (deterministic policy minimizing <direction, z(policy)>, its measurement vector z)
Oracle = Callable[[np.ndarray], tuple[Any, np.ndarray]]
#: oracle_many(directions) -> [oracle(direction) for direction in directions], answered together
BatchOracle = Callable[[Sequence[np.ndarray]], list[tuple[Any, np.ndarray]]]


@dataclass(frozen=True)
class MixedPolicy:
    """A mixture of deterministic policies: `components[i]` with probability `weights[i]`, and its measurements.

    measurements : (k, d) vectors of the components; `expected` is their weighted mean (the mixture's vector).
    Executing it: draw the component once per user for the whole campaign (`assign`), never per decision.
    """

    components: tuple[Any, ...]
    weights: np.ndarray
    measurements: np.ndarray
    oracle_calls: int = 0
    history: tuple[np.ndarray, ...] = field(default=(), compare=False)
    rounds: int = 0

    @property
    def expected(self) -> np.ndarray:
        return self.weights @ self.measurements

    def _measurement_names(self) -> list[str]:
        """`value`, then `cost` for one constrained measurement, or `cost_0`, `cost_1`, ... for several."""
        extra = self.measurements.shape[1] - 1
        return ["value", *(["cost"] if extra == 1 else [f"cost_{j}" for j in range(extra)])]

    def to_frame(self) -> pd.DataFrame:
        """One row per component: `component` (its index, as `assign` returns it), `weight`, and its measurements
        (`value`, then `cost`, or `cost_0`, `cost_1`, ... with several constraints)."""
        frame = pd.DataFrame({"component": np.arange(len(self.weights)), "weight": self.weights})
        for name, column in zip(self._measurement_names(), np.asarray(self.measurements).T, strict=True):
            frame[name] = column
        return frame

    def summary(self) -> dict[str, float]:
        """Headline figures: components stored, oracle calls, and the mixture's expected measurements."""
        figures = {"n_components": len(self.weights), "oracle_calls": self.oracle_calls}
        return figures | {name: float(value)
                          for name, value in zip(self._measurement_names(), self.expected, strict=True)}

    def assign(self, user_ids, *, salt: str) -> np.ndarray:
        """Component index of each user: `campaign_core.salted_uniform(user_id, salt)` cut at the cumulative
        weights, so the draw is reproducible, auditable and independent of row order and partitioning."""
        uniform = salted_uniform(user_ids, salt)
        return np.minimum(np.searchsorted(np.cumsum(self.weights), uniform, side="right"), len(self.weights) - 1)

    def act(self, user_ids, states: np.ndarray, day: int, *, salt: str) -> np.ndarray:
        """Actions on `day` for users in `states` (n, p): each user follows the component `assign` draws for them
        (the same every day), whose `act(states, day)` decides."""
        component = self.assign(user_ids, salt=salt)
        action = np.zeros(len(states), dtype=np.int64)
        for index, policy in enumerate(self.components):
            rows = component == index
            if rows.any():
                action[rows] = policy.act(states[rows], day)
        return action


def _checked_limits(limits: Sequence[float]) -> np.ndarray:
    limits = np.asarray(limits, dtype=float)
    if limits.ndim != 1 or len(limits) == 0 or not np.isfinite(limits).all():
        raise InputError(f"limits: need one finite limit per constrained measurement, got {limits.tolist()}")
    return limits


def _cheapest(oracle: Oracle, limits: np.ndarray, tolerance: float) -> tuple[Any, np.ndarray]:
    """The policy minimizing the constrained measurements; ValueError (with what it needs) if over a limit."""
    policy, measurement = oracle(np.r_[0.0, np.ones(len(limits))])
    return policy, _within(measurement, limits, tolerance)


def _within(cheapest: np.ndarray, limits: np.ndarray, tolerance: float) -> np.ndarray:
    """The cheapest policy's measurements; InputError naming them when one is over its limit."""
    cheapest = np.asarray(cheapest, dtype=float)
    if (cheapest[1:] > limits + tolerance).any():
        raise InputError(f"limits: infeasible; the cheapest policy found needs {cheapest[1:].tolist()} "
                         f"against limits {limits.tolist()}")
    return cheapest


def _master(table: np.ndarray, limits: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The restricted master LP over the stored measurement vectors (rows of `table`): the weights of its vertex,
    the prices lambda >= 0 of the limits and the convexity row's price (the value the prices leave)."""
    result = linprog(-table[:, 0], A_ub=table[:, 1:].T, b_ub=limits, A_eq=np.ones((1, len(table))), b_eq=[1.0],
                     bounds=(0, None), method="highs-ds")
    weights = np.where(result.x > tolerance, result.x, 0.0)
    weights /= weights.sum()
    prices = -np.asarray(result.ineqlin.marginals)  # value per unit of each limit (>= 0)
    return weights, prices, -result.fun - prices @ limits


def _improves(measurement: np.ndarray, prices: np.ndarray, baseline: float, table: np.ndarray,
              tolerance: float) -> bool:
    """Whether a best response at `prices` has a positive reduced value and is not already stored."""
    scale = max(1.0, float(np.abs(table).max()))
    return bool(measurement[0] - prices @ measurement[1:] - baseline > tolerance * scale
                and not any(np.array_equal(measurement, vector) for vector in table))


def maximize_under_budget(oracle: Oracle, limits: Sequence[float], *, tolerance: float = 1e-9,
                          max_iterations: int = 500) -> MixedPolicy:
    """The mixture of oracle policies with the largest first measurement (value) subject to measurement j + 1 <=
    limits[j] (e.g. expected cost per user <= budget per user), by column generation (module docstring).

    Raises ValueError when even the policy minimizing the constrained measurements violates a limit, naming the
    least achievable values."""
    limits = _checked_limits(limits)
    cheapest, measurement = _cheapest(oracle, limits, tolerance)
    components, vectors = [cheapest], [measurement]
    weights, calls, history = np.ones(1), 1, [measurement]
    for _ in range(max_iterations):
        table = np.asarray(vectors)
        weights, prices, baseline = _master(table, limits, tolerance)
        history.append(weights @ table)
        candidate, measurement = oracle(np.r_[-1.0, prices])
        calls += 1
        measurement = np.asarray(measurement, dtype=float)
        if not _improves(measurement, prices, baseline, table, tolerance):
            break
        keep = np.flatnonzero(weights > 0)  # the basic columns (at most d) and the new one
        components = [components[i] for i in keep] + [candidate]
        vectors = [vectors[i] for i in keep] + [measurement]
    keep = np.flatnonzero(weights > 0)
    return MixedPolicy(tuple(components[i] for i in keep), weights[keep], np.asarray(vectors)[keep], calls,
                       tuple(history), rounds=calls)


#: The multiples of the master's prices a batched round asks for, besides the prices themselves.
PRICE_SPREAD = (0.5, 0.7, 0.85, 0.93, 1.0, 1.07, 1.15, 1.3, 1.6)


def maximize_under_budget_batched(oracle_many: BatchOracle, limits: Sequence[float], *,
                                  first: Sequence[Sequence[float]] = (), spread: Sequence[float] = PRICE_SPREAD,
                                  tolerance: float = 1e-9, max_rounds: int = 100) -> MixedPolicy:
    """`maximize_under_budget` with an oracle that answers many directions at once (for `RidgeSweeps`, one sweep
    over the data for all of them): each round asks for the master's prices and their multiples by `spread`, and
    keeps every answer as a column. The first round asks for the cheapest direction and the `first` directions
    (e.g. the pacing grid, already needed). It stops as column generation does, when the answer at the master's
    prices has no positive reduced value, so the result is the same optimum over the hull, in fewer rounds (reads
    of the data) and more oracle answers. `oracle_calls` counts the answers, `rounds` the batches."""
    limits = _checked_limits(limits)
    spread = sorted({1.0, *map(float, spread)})
    answers = oracle_many([np.r_[0.0, np.ones(len(limits))], *(np.asarray(d, dtype=float) for d in first)])
    measurement, calls, rounds = _within(answers[0][1], limits, tolerance), len(answers), 1
    components = [policy for policy, _ in answers]
    vectors = [np.asarray(z, dtype=float) for _, z in answers]
    history = [measurement]
    for _ in range(max_rounds):
        table = np.asarray(vectors)
        weights, prices, baseline = _master(table, limits, tolerance)
        history.append(weights @ table)
        answers = oracle_many([np.r_[-1.0, factor * prices] for factor in spread])
        calls, rounds = calls + len(answers), rounds + 1
        at_prices = np.asarray(answers[spread.index(1.0)][1], dtype=float)
        if not _improves(at_prices, prices, baseline, table, tolerance):
            break
        components += [policy for policy, _ in answers]
        vectors += [np.asarray(z, dtype=float) for _, z in answers]
    keep = np.flatnonzero(weights > 0)
    return MixedPolicy(tuple(components[i] for i in keep), weights[keep], np.asarray(vectors)[keep], calls,
                       tuple(history), rounds=rounds)


@dataclass
class Corral:
    """What a target search holds: policies (at most d + 1) with their signed measurement vectors and weights."""

    components: list
    signed: list
    weights: np.ndarray

    def point(self) -> np.ndarray:
        return self.weights @ np.asarray(self.signed)


def _caratheodory(points: np.ndarray, rays: np.ndarray, active: list[int], weights: np.ndarray,
                  d: int) -> tuple[list[int], np.ndarray]:
    """Drop elements while the corral has more than d + 1, keeping the same point: move the weights along a null
    vector of [elements; point indicator] until one reaches 0 (Caratheodory)."""
    while len(active) > d + 1:
        system = np.vstack([points[active].T, (~rays[active]).astype(float)])
        direction = np.linalg.svd(system)[2][-1]
        if not (direction > 1e-12).any():
            direction = -direction
        positive = direction > 1e-12
        step = np.min(weights[positive] / direction[positive])
        weights = weights - step * direction
        keep = weights > 1e-15
        keep[np.argmin(np.where(positive, weights, np.inf))] = False
        active = [i for i, k in zip(active, keep, strict=True) if k]
        weights = weights[keep]
    return active, weights


def approach_target(oracle: Oracle, sense: np.ndarray, bound: np.ndarray, start: Corral, *,
                    tolerance: float = 1e-9, max_iterations: int = 500) -> tuple[Corral, bool, int, int]:
    """Move the mixture into C = {sense * z <= bound}: Wolfe's minimum-norm point of conv(m_i - bound) + R^d_+
    (a point x = 0 there is a mixture inside C; the unit vectors are rays of the corral, so the gradient direction
    is exact and the corral update converges like Wolfe's). Returns the corral of policies, whether C was reached,
    the oracle calls and the largest number of policies held at any iteration."""
    d = len(bound)
    scale = max(1.0, float(np.abs(np.asarray(start.signed)).max()), float(np.abs(bound).max()))
    tol = tolerance * scale
    components = list(start.components)
    points = [np.asarray(v, dtype=float) - bound for v in start.signed]
    rays = [False] * len(points)
    active = list(range(len(points)))
    weights = np.asarray(start.weights, dtype=float)
    calls, largest = 0, len(points)
    unit = np.eye(d)
    for _ in range(max_iterations):
        table = np.asarray(points)
        x = weights @ table[active]
        if np.linalg.norm(x) <= tol:
            break
        direction = int(np.argmin(x))
        ray_index = next((i for i, (r, p) in enumerate(zip(rays, points, strict=True))
                          if r and np.array_equal(p, unit[direction])), None)
        if x[direction] < -tol and ray_index not in active:
            if ray_index is None:
                points.append(unit[direction])
                rays.append(True)
                components.append(None)
                ray_index = len(points) - 1
            new = ray_index
        else:
            policy, measurement = oracle(x * sense)
            calls += 1
            shifted = sense * np.asarray(measurement, dtype=float) - bound
            if x @ shifted > tol * np.linalg.norm(x):
                break  # every mixture y has x.y >= x.shifted, so |y| > tol: C is out of reach (Farkas)
            if x @ shifted >= x @ x - tol * tol:
                break  # Wolfe's certificate: x is the minimum-norm point, within tol of C
            points.append(shifted)
            rays.append(False)
            components.append(policy)
            new = len(points) - 1
        active, weights, _ = wolfe_step(np.asarray(points), [*active, new], np.r_[weights, 0.0], tol * tol,
                                        np.asarray(rays))
        active, weights = _caratheodory(np.asarray(points), np.asarray(rays), active, weights, d)
        largest = max(largest, sum(not rays[i] for i in active))
    x = weights @ np.asarray(points)[active]
    kept = [(i, w) for i, w in zip(active, weights, strict=True) if not rays[i]]
    corral = Corral([components[i] for i, _ in kept], [points[i] + bound for i, _ in kept],
                    np.array([w for _, w in kept]))
    return corral, bool(np.linalg.norm(x) <= tol), calls, largest


def maximize_by_target_search(oracle: Oracle, limits: Sequence[float], *, tolerance: float = 1e-9,
                              search_steps: int = 40) -> tuple[MixedPolicy, int]:
    """The value-maximizing mixture under `limits` by bisection on the value target, each step `approach_target`
    from the last feasible corral. Returns the mixture and the largest number of policies held at any time."""
    limits = _checked_limits(limits)
    sense = np.r_[-1.0, np.ones(len(limits))]
    cheapest, low_z = _cheapest(oracle, limits, tolerance)
    richest, high_z = oracle(np.r_[-1.0, np.zeros(len(limits))])
    high_z = np.asarray(high_z, float)
    if (high_z[1:] <= limits).all():
        return MixedPolicy((richest,), np.ones(1), high_z[None, :], 2), 1
    best = Corral([cheapest], [sense * low_z], np.ones(1))
    low, high, calls, largest = float(low_z[0]), float(high_z[0]), 2, 1
    for _ in range(search_steps):
        if high - low <= tolerance * max(1.0, abs(high)):
            break  # targets closer than the tolerance cannot be told apart
        target = 0.5 * (low + high)
        corral, reached, used, held = approach_target(oracle, sense, np.r_[-target, limits], best,
                                                      tolerance=tolerance)
        calls, largest = calls + used, max(largest, held)
        if reached:
            best, low = corral, target
        else:
            high = target
    measurements = sense * np.asarray(best.signed)
    return MixedPolicy(tuple(best.components), best.weights, measurements, calls), largest
