"""Properties of `allocate`: the dual matches the cvxpy LP, respects the budget, and is order-free and monotone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import budget_rl.dual as dual_module
from budget_rl import allocate, spend_at_multiplier

from .conftest import SETTINGS, instances, relative_gap, shares_of, unconstrained_spend

TOL = 1e-6
MORE = settings(SETTINGS, max_examples=200)


# ----------------------------------------------------------------------------------------------- dual == LP
@MORE
@given(instances())
def test_dual_objective_equals_lp_optimum(instance):
    value, cost, budget = instance
    dual = allocate(value, cost, budget)
    lp = allocate(value, cost, budget, method="lp")
    assert relative_gap(dual.value, lp.value) <= TOL, (dual.value, lp.value)
    assert dual.diagnostics["method"] == "dual" and lp.diagnostics["method"] == "lp"


@MORE
@given(instances(ties=True, max_levels=4))
def test_dual_objective_equals_lp_optimum_with_tied_integer_values_and_costs(instance):
    value, cost, budget = instance
    dual = allocate(value, cost, budget)
    lp = allocate(value, cost, budget, method="lp")
    assert relative_gap(dual.value, lp.value) <= TOL, (dual.value, lp.value)
    assert len(dual.fractional) <= 1


@SETTINGS
@given(instances(min_users=5, min_levels=2, ties=False), st.floats(0.02, 0.98))
def test_budget_multiplier_equals_lp_dual_price_when_the_budget_binds(instance, fraction):
    value, cost, _ = instance
    full_spend, _ = spend_at_multiplier(value, cost, 0.0)
    if full_spend == 0.0:  # nothing worth buying: the budget cannot bind
        return
    budget = fraction * full_spend
    dual = allocate(value, cost, budget)
    lp = allocate(value, cost, budget, method="lp")
    assert lp.budget_multiplier > 0
    assert abs(dual.budget_multiplier - lp.budget_multiplier) <= TOL * lp.budget_multiplier, (
        dual.budget_multiplier, lp.budget_multiplier)
    assert dual.spend == pytest.approx(budget, rel=1e-9, abs=1e-12)


@SETTINGS
@given(instances(min_levels=2, ties=False))
def test_budget_multiplier_is_zero_when_the_budget_does_not_bind(instance):
    value, cost, _ = instance
    budget = unconstrained_spend(cost, value) * 1.5 + 1.0
    dual = allocate(value, cost, budget)
    assert dual.budget_multiplier == 0.0
    assert dual.fractional == ()
    assert dual.spend == pytest.approx(spend_at_multiplier(value, cost, 0.0)[0], rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------------------------- invariants
@SETTINGS
@given(instances())
def test_budget_is_respected_and_at_most_one_user_is_fractional(instance):
    value, cost, budget = instance
    dual = allocate(value, cost, budget)
    n, n_levels = value.shape
    assert len(dual.fractional) <= 1
    assert dual.integral_spend <= budget * (1 + 1e-9) + 1e-12
    assert dual.spend <= budget * (1 + 1e-9) + 1e-12
    for user in dual.fractional:
        assert 0.0 < user.share < 1.0, user
        assert cost[user.user_id, user.upper_level] > cost[user.user_id, user.level], user
        assert dual.level[user.user_id] == user.level
    rows = np.arange(n)
    assert dual.level.shape == (n,) and dual.level.dtype == np.int16
    assert dual.integral_value == pytest.approx(value[rows, dual.level].sum(), rel=1e-12, abs=1e-12)
    assert dual.integral_spend == pytest.approx(cost[rows, dual.level].sum(), rel=1e-12, abs=1e-12)
    shares = shares_of(dual, n_levels)
    assert (value * shares).sum() == pytest.approx(dual.value, rel=1e-9, abs=1e-9)
    assert (cost * shares).sum() == pytest.approx(dual.spend, rel=1e-9, abs=1e-12)


@SETTINGS
@given(instances(), st.integers(0, 2**32 - 1))
def test_allocation_does_not_depend_on_the_order_of_users(instance, seed):
    value, cost, budget = instance
    n = len(value)
    rng = np.random.default_rng(seed)
    ids = rng.choice(10 * n + 10, size=n, replace=False).astype(np.int64) - 3 * n  # unsorted, some negative
    order = rng.permutation(n)
    first = allocate(value, cost, budget, user_ids=ids)
    second = allocate(value[order], cost[order], budget, user_ids=ids[order])
    first_levels = dict(zip(ids.tolist(), first.level.tolist(), strict=True))
    assert first_levels == dict(zip(ids[order].tolist(), second.level.tolist(), strict=True))
    assert ({(f.user_id, f.level, f.upper_level) for f in first.fractional}
            == {(f.user_id, f.level, f.upper_level) for f in second.fractional})
    for a, b in zip(sorted(first.fractional, key=lambda f: f.user_id),
                    sorted(second.fractional, key=lambda f: f.user_id), strict=True):
        assert a.share == pytest.approx(b.share, rel=1e-9, abs=1e-9)
    assert relative_gap(first.value, second.value) <= 1e-9
    assert first.budget_multiplier == second.budget_multiplier


@SETTINGS
@given(instances(min_levels=2))
def test_zero_budget_gives_everyone_the_best_zero_cost_level(instance):
    value, cost, _ = instance
    dual = allocate(value, cost, 0.0)
    rows = np.arange(len(value))
    assert dual.spend == 0.0 and dual.integral_spend == 0.0
    assert dual.fractional == ()
    assert (cost[rows, dual.level] == 0.0).all()
    best_free = np.where(cost == 0.0, value, -np.inf).max(axis=1)
    np.testing.assert_array_equal(value[rows, dual.level], best_free)
    assert dual.value == pytest.approx(best_free.sum(), rel=1e-12, abs=1e-12)


def test_zero_budget_with_only_column_zero_free_gives_level_zero():
    rng = np.random.default_rng(0)
    value = rng.normal(size=(40, 4))
    cost = rng.uniform(0.5, 2.0, size=(40, 4))
    cost[:, 0] = 0.0
    dual = allocate(value, cost, 0.0)
    np.testing.assert_array_equal(dual.level, np.zeros(40))
    assert dual.value == pytest.approx(value[:, 0].sum())


# ----------------------------------------------------------------------------------------------- multiplier sweep
@SETTINGS
@given(instances(), st.lists(st.floats(0.0, 1e4), min_size=2, max_size=25))
def test_spend_and_value_are_non_increasing_in_the_multiplier(instance, multipliers):
    value, cost, _ = instance
    grid = np.sort(np.r_[multipliers, 0.0])
    spends, values = zip(*(spend_at_multiplier(value, cost, float(m)) for m in grid), strict=True)
    assert all(np.diff(spends) <= 1e-12 * max(1.0, max(spends))), spends
    assert all(np.diff(values) <= 1e-9 * max(1.0, np.abs(values).max())), values


@SETTINGS
@given(instances(min_levels=2, ties=False), st.floats(1e-3, 1e2))
def test_greedy_at_a_multiplier_is_the_optimum_for_its_own_spend(instance, multiplier):
    value, cost, _ = instance
    spend, greedy_value = spend_at_multiplier(value, cost, multiplier)
    best = allocate(value, cost, spend)
    assert relative_gap(best.value, greedy_value) <= TOL, (best.value, greedy_value)


def test_spend_at_multiplier_rejects_negative_or_infinite_multipliers():
    value, cost = np.ones((2, 2)), np.array([[0.0, 1.0], [0.0, 1.0]])
    for bad in (-1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="multiplier"):
            spend_at_multiplier(value, cost, bad)


# ----------------------------------------------------------------------------------------------- frontier
@SETTINGS
@given(instances())
def test_frontier_is_monotone_and_ends_at_the_unconstrained_value(instance):
    value, cost, budget = instance
    frontier = allocate(value, cost, budget).frontier
    assert list(frontier.columns) == ["budget_multiplier", "spend", "value", "marginal_value"]
    assert (np.diff(frontier["budget_multiplier"]) < 0).all()  # rows go down the multiplier
    assert (np.diff(frontier["spend"]) >= 0).all()
    assert (np.diff(frontier["value"]) >= -1e-9 * max(1.0, frontier["value"].abs().max())).all()
    unconstrained = allocate(value, cost, 1.5 * unconstrained_spend(cost, value) + 1.0)
    assert relative_gap(frontier["value"].iloc[-1], unconstrained.value) <= 1e-9
    assert frontier["spend"].iloc[-1] == pytest.approx(unconstrained.spend, rel=1e-9, abs=1e-12)
    nothing = allocate(value, cost, 0.0)
    assert frontier["spend"].iloc[0] == nothing.spend
    assert relative_gap(frontier["value"].iloc[0], nothing.value) <= 1e-9
    np.testing.assert_array_equal(frontier["marginal_value"], frontier["budget_multiplier"])


@SETTINGS
@given(instances(min_users=10, min_levels=2, ties=False))
def test_frontier_points_lie_on_the_optimal_value_curve(instance):
    value, cost, _ = instance
    frontier = allocate(value, cost, 0.0).frontier
    rows = np.unique(np.linspace(0, len(frontier) - 1, 5).astype(int))
    for spend, best in frontier[["spend", "value"]].to_numpy()[rows]:
        assert relative_gap(allocate(value, cost, float(spend)).value, best) <= TOL


def test_frontier_of_a_known_instance():
    value = np.array([[0.0, 3.0], [0.0, 1.0]])
    cost = np.array([[0.0, 1.0], [0.0, 1.0]])
    frontier = allocate(value, cost, 1.0).frontier
    points = frontier.drop_duplicates(["spend", "value"])
    np.testing.assert_allclose(points["spend"], [0.0, 1.0, 2.0])
    np.testing.assert_allclose(points["value"], [0.0, 3.0, 4.0])
    assert frontier["budget_multiplier"].iloc[0] == np.inf
    assert 1.0 < points["budget_multiplier"].iloc[1] <= 3.0 and 0.0 < points["budget_multiplier"].iloc[2] <= 1.0


# ----------------------------------------------------------------------------------------------- known answers
def test_small_known_instance_and_its_report():
    # user 0: +2 for 1, user 1: +1 for 1, user 2: +3 for 2; budget 2.5 buys user 0, then 1.5/2 of user 2's upgrade
    value = np.array([[0.0, 2.0], [0.0, 1.0], [0.0, 3.0]])
    cost = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    for method in ("dual", "lp"):
        result = allocate(value, cost, 2.5, method=method, user_ids=np.array([10, 11, 12]))
        np.testing.assert_array_equal(result.level, [1, 0, 0])
        assert result.value == pytest.approx(2.0 + 0.75 * 3.0)
        assert result.spend == pytest.approx(2.5)
        assert result.integral_value == pytest.approx(2.0) and result.integral_spend == pytest.approx(1.0)
        assert result.budget_multiplier == pytest.approx(1.5)
        (fractional,) = result.fractional
        assert (fractional.user_id, fractional.level, fractional.upper_level) == (12, 0, 1)
        assert fractional.share == pytest.approx(0.75)
        frame = result.to_frame(user_ids=np.array([10, 11, 12]), level_labels=["none", "coupon"])
        assert frame["level"].tolist() == ["coupon", "none", "none"]
        assert frame["upper_level"].isna().tolist() == [True, True, False]
        assert frame["upper_level"].iloc[2] == "coupon"
        np.testing.assert_allclose(frame["upper_share"], [0.0, 0.0, 0.75])
        summary = result.summary()
        assert isinstance(summary, dict) and summary["fractional_users"] == 1 and summary["method"] == method
        assert summary["value"] == result.value and summary["budget"] == 2.5
        assert not frame.attrs and len(frame) == 3


# ----------------------------------------------------------------------------------------------- overflowing slopes

@pytest.mark.parametrize(("value", "cost", "budget"), [
    ([[0.0, 1.0]], [[0.0, 5e-324]], 0.0),
    ([[0.0, 1e300]], [[0.0, 1e-300]], 0.5e-300),
])
def test_dual_terminates_when_a_slope_overflows(monkeypatch, value, cost, budget):
    passes = []
    original = dual_module._pass_over

    def guarded(users, statistic, columns):  # the real passes, stopped after 50 instead of looping forever
        passes.append(1)
        if len(passes) > 50:
            raise RuntimeError("solve_dual made more than 50 passes over 1 user")
        return original(users, statistic, columns)

    monkeypatch.setattr(dual_module, "_pass_over", guarded)
    value, cost = np.array(value), np.array(cost)
    result = allocate(value, cost, budget)  # both inputs are finite, costs >= 0: valid
    assert result.spend <= budget
    assert result.value == pytest.approx(value[0, 1] * budget / cost[0, 1] if budget else 0.0)
