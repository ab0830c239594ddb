"""The dual's histogram search: refinement passes, exact ties between users, and independence of the block size."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget_rl import AllocationConstraints, allocate, spend_at_multiplier
from budget_rl.allocation import _from_dual, check_allocation_input
from budget_rl.dual import Block, UserColumns, solve_dual
from pipelines.execution import Blocks

from .conftest import SETTINGS, relative_gap


def _blocks(value, cost, user_id=None, segment=None) -> Block:
    """Every user in one block (the in-memory chunk)."""
    n = len(value)
    user_id = np.arange(n, dtype=np.int64) if user_id is None else np.asarray(user_id, dtype=np.int64)
    segment = np.full(n, -1, dtype=np.int64) if segment is None else np.asarray(segment, dtype=np.int64)
    return Block(np.ascontiguousarray(value, dtype=float), np.ascontiguousarray(cost, dtype=float), user_id, segment)


def _solve_in_blocks(value, cost, budget, block_rows, user_id=None, **options):
    """solve_dual over a users table cut into blocks of `block_rows` rows (threads, the fixed merge tree)."""
    value, cost = np.asarray(value, dtype=float), np.asarray(cost, dtype=float)
    levels = range(value.shape[1])
    frame = pd.DataFrame({"user_id": np.arange(len(value)) if user_id is None else user_id,
                          **{f"value_{j}": value[:, j] for j in levels}, **{f"cost_{j}": cost[:, j] for j in levels}})
    columns = UserColumns(tuple(f"value_{j}" for j in levels), tuple(f"cost_{j}" for j in levels))
    return solve_dual(Blocks(frame, block_rows=block_rows), budget, columns=columns, **options)


def _allocation(value, cost, budget, solution, constraints=None, segments=None):
    checked = check_allocation_input(value, cost, budget, constraints or AllocationConstraints(), segments=segments)
    return _from_dual(checked, budget, solution, time.perf_counter())


def _same_key(a, b, share_tol=1e-9) -> None:
    assert (a.slope, a.user, a.step) == (b.slope, b.user, b.step), (a, b)
    assert a.share == pytest.approx(b.share, rel=share_tol, abs=share_tol)


@pytest.fixture(scope="module")
def random_users():
    rng = np.random.default_rng(5)
    n, n_levels = 2_000, 4
    value = rng.uniform(0, 1, (n, n_levels))
    cost = rng.uniform(0, 2, (n, n_levels))
    value[:, 0] = cost[:, 0] = 0.0
    budget = 0.4 * spend_at_multiplier(value, cost, 0.0)[0]
    return value, cost, budget


# ----------------------------------------------------------------------------------------------- exact ties
ROW_VALUE = np.array([0.0, 1.0, 1.5, 2.0])
ROW_COST = np.array([0.0, 1.0, 2.0, 4.0])  # hull slopes 1, 0.5, 0.25: exact powers of two, i.e. on bin edges


@SETTINGS
@given(st.integers(1, 300), st.floats(0.0, 4.5))
def test_identical_users_match_the_lp_with_one_fractional_user(n, budget_per_user):
    value, cost = np.tile(ROW_VALUE, (n, 1)), np.tile(ROW_COST, (n, 1))
    budget = budget_per_user * n
    dual = allocate(value, cost, budget)
    lp = allocate(value, cost, budget, method="lp")
    assert relative_gap(dual.value, lp.value) <= 1e-6, (dual.value, lp.value)
    assert len(dual.fractional) <= 1
    assert dual.spend <= budget * (1 + 1e-9) + 1e-12
    # ties go to the lower user id: levels never increase with the id
    assert (np.diff(dual.level) <= 0).all()


@pytest.mark.parametrize("n", [7, 500])
@pytest.mark.parametrize("budget_per_user", [0.5, 1.0, 1.7, 2.0, 3.3, 4.0])
def test_identical_users_at_and_between_breakpoints(n, budget_per_user):
    value, cost = np.tile(ROW_VALUE, (n, 1)), np.tile(ROW_COST, (n, 1))
    budget = budget_per_user * n
    dual = allocate(value, cost, budget)
    lp = allocate(value, cost, budget, method="lp")
    assert relative_gap(dual.value, lp.value) <= 1e-6
    assert len(dual.fractional) <= 1
    # the per-user optimum is known: spend the budget along the hull 0 -> 1 -> 2 -> 3
    per_user = np.interp(budget_per_user, ROW_COST, ROW_VALUE)
    assert dual.value == pytest.approx(per_user * n, rel=1e-12)


def test_tied_users_force_refinements_down_to_the_float_resolution():
    n = 400
    value, cost = np.tile(ROW_VALUE, (n, 1)), np.tile(ROW_COST, (n, 1))
    budget = 1.7 * n + 0.3
    refined = solve_dual(_blocks(value, cost), budget, max_candidates=5)
    default = solve_dual(_blocks(value, cost), budget)
    assert refined.diagnostics.refinements >= 1
    assert default.diagnostics.refinements == 0
    _same_key(refined.global_solution.key, default.global_solution.key)
    assert refined.budget_multiplier == default.budget_multiplier == 0.5
    result = _allocation(value, cost, budget, refined)
    assert result.value == pytest.approx(allocate(value, cost, budget, method="lp").value, rel=1e-9)
    assert len(result.fractional) == 1
    (fractional,) = result.fractional
    assert (fractional.level, fractional.upper_level) == (1, 2)
    assert fractional.share == pytest.approx((0.7 * n + 0.3) % 1.0, abs=1e-6)


# ----------------------------------------------------------------------------------------------- refinement
def test_refinement_passes_give_the_same_key_and_multiplier(random_users):
    value, cost, budget = random_users
    refined = solve_dual(_blocks(value, cost), budget, max_candidates=5)
    default = solve_dual(_blocks(value, cost), budget)
    assert refined.diagnostics.refinements >= 1
    assert refined.diagnostics.passes > default.diagnostics.passes
    assert refined.diagnostics.candidates <= 5 < default.diagnostics.candidates
    _same_key(refined.global_solution.key, default.global_solution.key)
    assert refined.budget_multiplier == default.budget_multiplier > 0
    result = _allocation(value, cost, budget, refined)
    lp = allocate(value, cost, budget, method="lp")
    assert relative_gap(result.value, lp.value) <= 1e-6
    assert result.budget_multiplier == pytest.approx(lp.budget_multiplier, rel=1e-6)
    assert len(result.fractional) == 1
    np.testing.assert_array_equal(result.level, _allocation(value, cost, budget, default).level)


@pytest.mark.parametrize("max_candidates", [1, 2, 3])
def test_refinement_with_segment_caps(random_users, max_candidates):
    value, cost, budget = random_users
    n = len(value)
    segment = np.arange(n) % 3 - 1  # codes -1 (uncapped), 0, 1
    caps = np.array([0.2 * spend_at_multiplier(value[segment == s], cost[segment == s], 0.0)[0] for s in (0, 1)])
    refined = solve_dual(_blocks(value, cost, segment=segment), budget, caps, max_candidates=max_candidates)
    default = solve_dual(_blocks(value, cost, segment=segment), budget, caps)
    assert refined.diagnostics.refinements >= 1
    _same_key(refined.global_solution.key, default.global_solution.key)
    for ours, theirs in zip(refined.segment_solutions, default.segment_solutions, strict=True):
        _same_key(ours.key, theirs.key)
        assert ours.binding and ours.budget_multiplier == theirs.budget_multiplier
    labels = np.array(["none", "s0", "s1"], dtype=object)[segment + 1]
    constraints = AllocationConstraints(segment_caps={"s0": float(caps[0]), "s1": float(caps[1])})
    result = _allocation(value, cost, budget, refined, constraints, labels)
    lp = allocate(value, cost, budget, method="lp", constraints=constraints, segments=labels)
    assert relative_gap(result.value, lp.value) <= 1e-6
    for label in ("s0", "s1"):
        assert result.segment_multipliers[label] == pytest.approx(lp.segment_multipliers[label], rel=1e-6)


# ----------------------------------------------------------------------------------------------- block size
@pytest.mark.parametrize("block_rows", [1, 7, 333])
def test_block_size_does_not_change_the_solution(random_users, block_rows):
    value, cost, budget = random_users
    small = _solve_in_blocks(value, cost, budget, block_rows)
    whole = solve_dual(_blocks(value, cost), budget)
    _same_key(small.global_solution.key, whole.global_solution.key)
    assert small.budget_multiplier == whole.budget_multiplier
    small_levels = small.assign(_blocks(value, cost))[0]
    whole_levels = whole.assign(_blocks(value, cost))[0]
    np.testing.assert_array_equal(small_levels, whole_levels)
    np.testing.assert_allclose(small.frontier[["spend", "value"]], whole.frontier[["spend", "value"]], rtol=1e-9)


def test_block_size_does_not_change_a_tied_solution():
    n = 250
    value, cost = np.tile(ROW_VALUE, (n, 1)), np.tile(ROW_COST, (n, 1))
    ids = np.random.default_rng(0).permutation(n) * 3 + 11  # unsorted ids: ties are broken by id, not by row
    budget = 2.2 * n
    small = _solve_in_blocks(value, cost, budget, 7, user_id=ids, max_candidates=3)
    whole = solve_dual(_blocks(value, cost, user_id=ids), budget)
    _same_key(small.global_solution.key, whole.global_solution.key)
    small_levels = small.assign(_blocks(value, cost, user_id=ids))[0]
    whole_levels = whole.assign(_blocks(value, cost, user_id=ids))[0]
    np.testing.assert_array_equal(small_levels, whole_levels)
    by_id = small_levels[np.argsort(ids)]
    assert (np.diff(by_id) <= 0).all()  # lower ids first
