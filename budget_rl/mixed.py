"""Mixed policies that maximize value under budget constraints, from a best-response oracle.

A policy's measurement vector z (d entries: value, then the constrained quantities such as cost per user) is
linear in mixtures, so the achievable vectors of mixed policies are the convex hull of the deterministic
policies' vectors, and the budgeted optimum is a mixture of at most d of them (an LP vertex: d - 1 limit rows and
the convexity row).

`maximize_under_budget` finds it by column generation, the variant the spec allows next to the value-target search
(section 2): a restricted master LP over the stored policies (HiGHS dual simplex, a vertex) gives the prices
lambda >= 0 of the limits; the oracle returns the deterministic policy best for the relabelled reward
value - <lambda, constrained measurements> (for one budget: the best response to r - lambda c); it joins the
store if its reduced value is positive, and policies with zero weight leave it, so at most d + 1 policies are
stored at any time. It stops when no policy improves (the optimum over the whole hull). The stored policies'
weights are the mixture; `MixedPolicy.assign` executes it by hashing user ids.

`budget_rl.min_norm_point` has Wolfe's minimum-norm point and its corral update for the distance-to-target-set loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linprog

#: oracle(direction) -> (deterministic policy minimizing <direction, z(policy)>, its measurement vector z)
Oracle = Callable[[np.ndarray], tuple[Any, np.ndarray]]


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

    @property
    def expected(self) -> np.ndarray:
        return self.weights @ self.measurements

    def assign(self, user_ids, salt: str) -> np.ndarray:
        """Component index of each user: a salted hash of the user id mapped to [0, 1) and cut at the cumulative
        weights, so the draw is reproducible, auditable and independent of row order and partitioning."""
        salt_bits = np.uint64(int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little"))
        hashed = _mix64(pd.util.hash_array(np.asarray(user_ids)) ^ salt_bits)  # (hash_key is ignored for numbers)
        uniform = (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return np.minimum(np.searchsorted(np.cumsum(self.weights), uniform, side="right"), len(self.weights) - 1)


def _mix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: every input bit moves every output bit (uint64 arithmetic wraps)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def maximize_under_budget(oracle: Oracle, limits: Sequence[float], *, tolerance: float = 1e-9,
                          max_iterations: int = 500) -> MixedPolicy:
    """The mixture of oracle policies with the largest first measurement (value) subject to measurement j + 1 <=
    limits[j] (e.g. expected cost per user <= budget per user), by column generation (module docstring).

    Raises ValueError when even the policy minimizing the constrained measurements violates a limit, naming the
    least achievable values."""
    limits = np.asarray(limits, dtype=float)
    if limits.ndim != 1 or len(limits) == 0 or not np.isfinite(limits).all():
        raise ValueError(f"limits: need one finite limit per constrained measurement, got {limits.tolist()}")
    cheapest, measurement = oracle(np.r_[0.0, np.ones(len(limits))])
    measurement = np.asarray(measurement, dtype=float)
    if (measurement[1:] > limits + tolerance).any():
        raise ValueError(f"limits: infeasible; the cheapest policy found needs {measurement[1:].tolist()} "
                         f"against limits {limits.tolist()}")
    components, vectors = [cheapest], [measurement]
    weights, calls, history = np.ones(1), 1, [measurement]
    for _ in range(max_iterations):
        table = np.asarray(vectors)
        result = linprog(-table[:, 0], A_ub=table[:, 1:].T, b_ub=limits, A_eq=np.ones((1, len(table))), b_eq=[1.0],
                         bounds=(0, None), method="highs-ds")
        weights = np.where(result.x > tolerance, result.x, 0.0)
        weights /= weights.sum()
        history.append(weights @ table)
        prices = -np.asarray(result.ineqlin.marginals)  # value per unit of each limit (>= 0)
        baseline = -result.fun - prices @ limits  # the convexity row's price
        candidate, measurement = oracle(np.r_[-1.0, prices])
        calls += 1
        measurement = np.asarray(measurement, dtype=float)
        scale = max(1.0, float(np.abs(table).max()))
        if measurement[0] - prices @ measurement[1:] - baseline <= tolerance * scale or any(
                np.array_equal(measurement, vector) for vector in vectors):
            break
        keep = np.flatnonzero(weights > 0)  # the basic columns (at most d) and the new one
        components = [components[i] for i in keep] + [candidate]
        vectors = [vectors[i] for i in keep] + [measurement]
    keep = np.flatnonzero(weights > 0)
    return MixedPolicy(tuple(components[i] for i in keep), weights[keep], np.asarray(vectors)[keep], calls,
                       tuple(history))
