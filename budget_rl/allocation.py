"""`allocate`: which incentive level each user gets so that total value is largest within the budget.

Value v_ij and cost c_ij are per user i and level j (e.g. v = response probability, c = coupon value times the
probability it is redeemed), in the caller's units; the budget is in the cost's units. The solution of the LP
relaxation has at most one user per binding constraint between two levels (the *fractional* users); `level`
gives those users their cheaper level, so the integral allocation never spends more than the budget.

Input rules (checked before any work, one-line ValueError naming the argument):
value and cost (n, J) with the same shape, finite; cost >= 0; budget finite and >= 0; user ids unique integers;
every user has a zero-cost level (the "nothing" option) unless the budget covers everyone's highest-value level
and there are no segment caps (otherwise the budget could bind and a user could have nothing affordable).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from budget_rl.constraints import AllocationConstraints
from budget_rl.dual import Block, DualSolution, solve_dual
from budget_rl.lp import solve_lp
from campaign_core import InputError

Method = Literal["dual", "lp"]


@dataclass(frozen=True)
class FractionalUser:
    """A user the LP optimum splits between two levels: `share` of them at `upper_level`, the rest at `level`.

    With LP-only constraints the optimum may split a user over more than two levels; such a user appears once per
    extra level (each entry moves its share from `level`, the cheapest level used, to its `upper_level`)."""

    user_id: int
    level: int
    upper_level: int
    share: float


@dataclass(frozen=True)
class Allocation:
    """The allocation and what it achieves.

    level : (n,) level index per user (fractional users at their cheaper level); None when written elsewhere
        (a partitioned run writes it per partition).
    fractional : the users the optimum splits (at most one per binding constraint).
    value, spend : of the optimum, fractional users counted by their share (= the LP objective and its spend).
    integral_value, integral_spend : of `level` as given (spend <= budget).
    budget_multiplier : the shadow price of the budget, in value per currency unit (0 when it does not bind).
    segment_multipliers : extra price of each capped segment's cap (0 when it does not bind).
    frontier : value against spend as the multiplier sweeps (columns budget_multiplier, spend, value,
        marginal_value); None for the LP.
    diagnostics : solver facts (method, passes or solver status, seconds, ...).
    """

    level: np.ndarray | None
    fractional: tuple[FractionalUser, ...]
    value: float
    spend: float
    integral_value: float
    integral_spend: float
    budget: float
    budget_multiplier: float
    segment_multipliers: dict[str, float]
    frontier: pd.DataFrame | None
    diagnostics: dict = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Headline figures: budget, spend, value, integral spend and value, the budget's multiplier, the number of
        fractional users, each capped segment's extra multiplier (`segment_multiplier_<label>`), method, seconds."""
        figures = {
            "budget": self.budget, "spend": self.spend, "value": self.value, "integral_spend": self.integral_spend,
            "integral_value": self.integral_value, "budget_multiplier": self.budget_multiplier,
            "fractional_users": len(self.fractional),
        }
        figures |= {f"segment_multiplier_{label}": price for label, price in self.segment_multipliers.items()}
        return figures | {"method": self.diagnostics.get("method"), "seconds": self.diagnostics.get("seconds")}

    def to_frame(self, *, user_ids: np.ndarray | None = None, level_labels: list | None = None) -> pd.DataFrame:
        """One row per user: user_id, level (label if given), upper_level and upper_share (fractional users only;
        -1 / None and 0 for the others). The frontier, one row per multiplier, is `frontier`."""
        if self.level is None:
            raise InputError("level: this allocation was written per partition; read its parquet instead")
        n = len(self.level)
        ids = np.arange(n) if user_ids is None else np.asarray(user_ids)
        upper = np.full(n, -1)
        share = np.zeros(n)
        position = pd.Index(ids).get_indexer([f.user_id for f in self.fractional])
        upper[position] = [f.upper_level for f in self.fractional]
        share[position] = [f.share for f in self.fractional]
        frame = pd.DataFrame({"user_id": ids, "level": self.level, "upper_level": upper, "upper_share": share})
        if level_labels is not None:
            labels = np.asarray(level_labels, dtype=object)
            frame["level"] = labels[frame["level"]]
            frame["upper_level"] = np.where(upper >= 0, labels[np.maximum(upper, 0)], None)
        return frame


def _matrix(name: str, array) -> np.ndarray:
    try:
        matrix = np.ascontiguousarray(array, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name}: must be a numeric (n_users, n_levels) array ({error})") from None
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InputError(f"{name}: must be a non-empty (n_users, n_levels) array, got shape {matrix.shape}")
    bad = ~np.isfinite(matrix)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise InputError(f"{name}: {int(bad.sum())} entries are NaN or infinite (in {rows.size} users, first row "
                         f"{rows[0]})")
    return matrix


@dataclass(frozen=True)
class _Checked:
    value: np.ndarray
    cost: np.ndarray
    user_id: np.ndarray
    segment_codes: np.ndarray  # code into capped_segments, -1 for users of uncapped segments
    capped_segments: list[str]


def check_allocation_input(value, cost, budget: float, constraints: AllocationConstraints, *,
                           segments=None, user_ids=None) -> _Checked:
    """Validate every input of `allocate` (module docstring) and return the arrays it works on."""
    value, cost = _matrix("value", value), _matrix("cost", cost)
    if cost.shape != value.shape:
        raise InputError(f"cost: shape {cost.shape} does not match value's {value.shape}")
    if (cost < 0).any():
        raise InputError(f"cost: {int((cost < 0).sum())} entries are negative (smallest {cost.min():g}); "
                         "costs must be >= 0")
    if not (isinstance(budget, int | float | np.number) and np.isfinite(budget) and budget >= 0):
        raise InputError(f"budget: must be a finite number >= 0, got {budget!r}")
    n, n_levels = value.shape
    constraints.check_levels(n_levels)
    if user_ids is None:
        user_id = np.arange(n, dtype=np.int64)
    else:
        user_id = np.asarray(user_ids)
        if user_id.shape != (n,) or not np.issubdtype(user_id.dtype, np.integer):
            raise InputError(f"user_ids: must be {n} integers, got shape {user_id.shape} dtype {user_id.dtype}")
        user_id = user_id.astype(np.int64)
        duplicated = n - np.unique(user_id).size
        if duplicated:
            raise InputError(f"user_ids: {duplicated} ids are repeated; each user needs a unique id")
    capped = list(constraints.segment_caps)
    codes = np.full(n, -1, dtype=np.int64)
    if capped:
        if segments is None:
            raise InputError("constraints.segment_caps: needs `segments` (one label per user)")
        labels = pd.Series(np.asarray(segments, dtype=object))
        if len(labels) != n:
            raise InputError(f"segments: {len(labels)} labels for {n} users")
        if labels.isna().any():
            raise InputError(f"segments: {int(labels.isna().sum())} users have no segment")
        known = set(labels.unique())
        unknown = [label for label in capped if label not in known]
        if unknown:
            raise InputError(f"constraints.segment_caps: unknown segment(s) {unknown} (segments are "
                             f"{sorted(map(str, known))})")
        codes = pd.Index(capped, dtype=object).get_indexer(labels).astype(np.int64)
    no_free = int((cost.min(axis=1) > 0).sum())
    if no_free:
        top = np.argmax(value - 1e-12 * cost, axis=1)
        top_spend = float(cost[np.arange(n), top].sum())
        if capped or budget < top_spend:
            raise InputError(f"cost: {no_free} users have no zero-cost level; every user needs one (e.g. 'nothing') "
                             f"when the budget can bind (budget {budget:g} < {top_spend:g} at the highest-value "
                             "levels, or segment caps are set)")
    return _Checked(value, cost, user_id, codes, capped)


@dataclass(frozen=True)
class AssignmentTotals:
    """What an assigned block of users adds up to: users, value and spend of their integral levels, the extra value
    and cost the fractional users' shares buy, and those users. Mergeable, so partitions add up in any order."""

    users: int
    integral_value: float
    integral_spend: float
    extra_value: float
    extra_cost: float
    fractional: tuple[FractionalUser, ...]

    @classmethod
    def of(cls, value: np.ndarray, cost: np.ndarray, user_id: np.ndarray, level: np.ndarray, upper: np.ndarray,
           share: np.ndarray) -> AssignmentTotals:
        """Totals of one block from the dual's (level, upper_level, upper_share) per user."""
        rows = np.arange(len(level))
        split = np.flatnonzero(upper >= 0)
        extra_value = share[split] * (value[split, upper[split]] - value[split, level[split]])
        extra_cost = share[split] * (cost[split, upper[split]] - cost[split, level[split]])
        fractional = tuple(FractionalUser(int(user_id[i]), int(level[i]), int(upper[i]), float(share[i]))
                           for i in split)
        return cls(len(level), float(value[rows, level].sum()), float(cost[rows, level].sum()),
                   float(extra_value.sum()), float(extra_cost.sum()), fractional)

    def merge(self, other: AssignmentTotals) -> AssignmentTotals:
        return AssignmentTotals(self.users + other.users, self.integral_value + other.integral_value,
                                self.integral_spend + other.integral_spend, self.extra_value + other.extra_value,
                                self.extra_cost + other.extra_cost, self.fractional + other.fractional)


def dual_allocation(solution: DualSolution, totals: AssignmentTotals, budget: float, capped_segments: list,
                    level: np.ndarray | None, diagnostics: dict) -> Allocation:
    """The `Allocation` of a solved dual from its assignment totals (in memory or summed over partitions)."""
    return Allocation(
        level=level, fractional=totals.fractional, value=totals.integral_value + totals.extra_value,
        spend=totals.integral_spend + totals.extra_cost, integral_value=totals.integral_value,
        integral_spend=totals.integral_spend, budget=float(budget), budget_multiplier=solution.budget_multiplier,
        segment_multipliers={label: max(0.0, s.budget_multiplier - solution.budget_multiplier)
                             for label, s in zip(capped_segments, solution.segment_solutions, strict=True)},
        frontier=solution.frontier,
        diagnostics={"method": "dual", "refinements": solution.diagnostics.refinements,
                     "candidates": solution.diagnostics.candidates} | diagnostics)


def _block(checked: _Checked) -> Block:
    """All users in memory as one block (one chunk of the dual's passes)."""
    return Block(checked.value, checked.cost, checked.user_id, checked.segment_codes)


def _from_dual(checked: _Checked, budget: float, solution: DualSolution, started: float) -> Allocation:
    level, upper, share = solution.assign(_block(checked))
    totals = AssignmentTotals.of(checked.value, checked.cost, checked.user_id, level, upper, share)
    return dual_allocation(solution, totals, budget, checked.capped_segments, level,
                           {"passes": solution.diagnostics.passes, "seconds": time.perf_counter() - started})


def _from_lp(checked: _Checked, budget: float, constraints: AllocationConstraints, solver: str,
             started: float) -> Allocation:
    solution = solve_lp(checked.value, checked.cost, budget, constraints, checked.segment_codes,
                        checked.capped_segments, solver=solver)
    shares = solution.shares
    n = shares.shape[0]
    rows = np.arange(n)
    positive = shares > 1e-7
    positive[rows, np.argmax(shares, axis=1)] = True
    level = np.argmin(np.where(positive, checked.cost, np.inf), axis=1).astype(np.int16)  # the cheapest one used
    others = positive.copy()
    others[rows, level] = False
    users, uppers = np.nonzero(others)
    fractional = tuple(FractionalUser(int(checked.user_id[i]), int(level[i]), int(j), float(shares[i, j]))
                       for i, j in zip(users, uppers, strict=True))
    value, cost = checked.value, checked.cost
    return Allocation(
        level=level, fractional=fractional,
        value=float((value * shares).sum()), spend=float((cost * shares).sum()),
        integral_value=float(value[rows, level].sum()), integral_spend=float(cost[rows, level].sum()),
        budget=float(budget), budget_multiplier=max(0.0, solution.budget_multiplier),
        segment_multipliers=solution.segment_multipliers, frontier=None,
        diagnostics={"method": "lp", "solver": solution.solver, "status": solution.status,
                     "objective": solution.objective, "seconds": time.perf_counter() - started})


def allocate(value, cost, budget: float, *, method: Method = "dual", constraints: AllocationConstraints | None = None,
             segments=None, user_ids=None, solver: str = "HIGHS") -> Allocation:
    """The best allocation of incentive levels within `budget` (and `constraints`).

    value, cost : (n_users, n_levels) arrays (see the module docstring for units and rules).
    method : "dual" (exact multiplier search, seconds at 10^7 users; budget and segment caps) or "lp" (cvxpy with
        `solver`, every constraint; the reference).
    segments : one label per user, needed for segment caps. user_ids : unique integers (ties between users are
        broken by id, so the result does not depend on row order); default 0..n-1.
    For users in a table too large for memory, `pipelines.allocation.allocate_frame` runs the same dual's passes
    over its partitions.
    """
    constraints = constraints or AllocationConstraints()
    if method not in ("dual", "lp"):
        raise InputError(f"method: must be 'dual' or 'lp', got {method!r}")
    if method == "dual" and constraints.needs_lp:
        raise InputError(f"constraints: {', '.join(constraints.needs_lp)} need method='lp' "
                         "(the dual handles the budget and segment spend caps)")
    checked = check_allocation_input(value, cost, budget, constraints, segments=segments, user_ids=user_ids)
    started = time.perf_counter()
    if method == "lp":
        return _from_lp(checked, budget, constraints, solver, started)
    caps = np.array([constraints.segment_caps[label] for label in checked.capped_segments], dtype=float)
    return _from_dual(checked, budget, solve_dual(_block(checked), float(budget), caps), started)
