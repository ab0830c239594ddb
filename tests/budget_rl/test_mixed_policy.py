"""Wolfe's minimum-norm point against a QP solver, and the mixed-policy search on the one-state case of
docs/constrained_rl.md and on random finite policy sets (against the exact LP over all policies)."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from budget_rl.baselines import fixed_multiplier_policy, game_theoretic_mixture
from budget_rl.min_norm_point import affine_minimizer, min_norm_point
from budget_rl.mixed import MixedPolicy, maximize_under_budget, maximize_under_budget_batched
from campaign_core import InputError


def _qp_distance(points: np.ndarray) -> float:
    weights = cp.Variable(len(points), nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(points.T @ weights)), [cp.sum(weights) == 1])
    # Tight tolerances: the distance is the square root of the objective, so an objective off by 1e-9 (CLARABEL's
    # default gap) moves a distance of 3e-4 by 2e-6.
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-14, tol_gap_rel=1e-14, tol_feas=1e-14)
    return float(np.sqrt(max(problem.value, 0.0)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 25), st.integers(1, 5), st.integers(0, 2**31 - 1), st.floats(0.0, 3.0))
@example(16, 4, 227, 0.744140625)  # a distance of 3.5e-4: the reference QP needs its tight tolerances
def test_min_norm_point_matches_a_qp_and_holds_the_certificate(m, d, seed, shift):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(m, d)) + shift * rng.normal(size=d)
    result = min_norm_point(points)
    assert np.linalg.norm(result.x) == pytest.approx(_qp_distance(points), abs=1e-6)
    assert len(result.active) <= d + 1
    assert result.weights.sum() == pytest.approx(1.0) and (result.weights > 0).all()
    np.testing.assert_allclose(result.weights @ points[result.active], result.x, atol=1e-9)
    assert (points @ result.x >= result.x @ result.x - 1e-9).all()  # the optimality certificate


def test_min_norm_point_of_a_segment_and_of_a_polytope_around_the_origin():
    segment = min_norm_point([[1.0, -1.0], [1.0, 1.0]])
    np.testing.assert_allclose(segment.x, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.sort(segment.weights), [0.5, 0.5])
    around = min_norm_point([[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0], [5.0, 5.0]])
    assert np.linalg.norm(around.x) < 1e-9 and len(around.active) <= 3


def test_affine_minimizer_of_a_line_is_the_foot_of_the_perpendicular():
    alpha = affine_minimizer(np.array([[2.0, 0.0], [2.0, 4.0]]))  # the line x = 2: the foot is (2, 0)
    np.testing.assert_allclose(alpha, [1.0, 0.0], atol=1e-12)
    alpha = affine_minimizer(np.array([[1.0, 1.0], [3.0, -1.0]]))  # the line x + y = 2: foot (1, 1)
    np.testing.assert_allclose(alpha @ np.array([[1.0, 1.0], [3.0, -1.0]]), [1.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("points", [np.zeros((0, 2)), np.array([1.0, 2.0]), np.array([[np.nan, 1.0]])])
def test_min_norm_point_rejects_bad_points(points):
    with pytest.raises(ValueError, match="^points:"):
        min_norm_point(points)


ONE_STATE = np.array([[0.0, 0.0], [1.0, 1.0], [0.6, 0.3]])  # (reward, cost) of the three actions


def _finite_oracle(measurements: np.ndarray, calls: list | None = None):
    def oracle(direction: np.ndarray):
        if calls is not None:
            calls.append(direction)
        index = int(np.argmin(measurements @ direction))
        return index, measurements[index]
    return oracle


def test_one_state_case_mixes_two_policies_for_value_0_4_at_cost_0_2():
    mixed = maximize_under_budget(_finite_oracle(ONE_STATE), [0.2])
    assert mixed.expected[0] >= 0.4 - 1e-9 and mixed.expected[1] <= 0.2 + 1e-9
    assert len(mixed.components) <= 3
    assert dict(zip(mixed.components, np.round(mixed.weights, 9), strict=True)) == {0: pytest.approx(1 / 3),
                                                                                   2: pytest.approx(2 / 3)}


@pytest.mark.parametrize("multiplier", np.linspace(0.0, 5.0, 101))
def test_one_state_case_every_fixed_multiplier_greedy_policy_is_infeasible_or_worthless(multiplier):
    greedy = ONE_STATE[int(np.argmax(ONE_STATE[:, 0] - multiplier * ONE_STATE[:, 1]))]
    assert greedy[1] > 0.2 or greedy[0] == 0.0


def test_budget_below_the_cheapest_policy_is_reported_with_the_cheapest_spend():
    with pytest.raises(ValueError, match=r"^limits: infeasible.*\[0\.3\]"):
        maximize_under_budget(_finite_oracle(ONE_STATE[1:]), [0.2])


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_mixture_matches_the_lp_over_all_policies_with_at_most_d_plus_1_stored(n_policies, n_limits, seed):
    rng = np.random.default_rng(seed)
    measurements = rng.uniform(0.0, 1.0, size=(n_policies, n_limits + 1))
    measurements[0, 1:] = 0.0  # a free "do nothing" policy keeps every budget feasible
    limits = rng.uniform(0.05, 0.6, size=n_limits)
    mixed = maximize_under_budget(_finite_oracle(measurements), limits)
    exact = linprog(-measurements[:, 0], A_ub=measurements[:, 1:].T, b_ub=limits,
                    A_eq=np.ones((1, n_policies)), b_eq=[1.0], bounds=(0, None), method="highs")
    assert mixed.expected[0] == pytest.approx(-exact.fun, abs=1e-6)
    assert (mixed.expected[1:] <= limits + 1e-9).all()
    assert len(mixed.components) <= n_limits + 2


def test_assignment_by_hash_reproduces_the_mixture_and_not_per_day_draws():
    mixture = MixedPolicy((0, 2), np.array([1 / 3, 2 / 3]), ONE_STATE[[0, 2]])
    users = np.arange(200_000)
    component = mixture.assign(users, salt="spring-campaign")
    shares = np.bincount(component, minlength=2) / len(users)
    np.testing.assert_allclose(shares, mixture.weights, atol=3 * np.sqrt(2 / 9 / len(users)))
    np.testing.assert_array_equal(mixture.assign(users[::-1], salt="spring-campaign"), component[::-1])
    other = mixture.assign(users, salt="summer-campaign")
    assert 0.4 < (other == component).mean() < 0.7  # a new salt draws anew


def test_act_follows_each_users_component_every_day():
    class Constant:
        def __init__(self, arm):
            self.arm = arm

        def act(self, states, day):
            return np.full(len(states), self.arm + 10 * day)

    mixture = MixedPolicy((Constant(0), Constant(2)), np.array([0.5, 0.5]), ONE_STATE[[0, 2]])
    users = np.arange(1_000)
    component = mixture.assign(users, salt="s")
    for day in (0, 3):
        actions = mixture.act(users, np.zeros((1_000, 4)), day, salt="s")
        np.testing.assert_array_equal(actions, np.where(component == 0, 0, 2) + 10 * day)


def test_baselines_on_the_one_state_case():
    oracle = _finite_oracle(ONE_STATE)
    fixed = fixed_multiplier_policy(oracle, 0.2)
    assert fixed.measurement[1] <= 0.2 and fixed.measurement[0] == 0.0  # the only affordable greedy policy: nothing
    game = game_theoretic_mixture(oracle, 0.2, iterations=200)
    assert len(game.components) == 200  # one stored policy per iteration
    assert game.expected[0] == pytest.approx(0.4, abs=0.02) and game.expected[1] == pytest.approx(0.2, abs=0.01)
    mixed = maximize_under_budget(oracle, [0.2])
    assert len(mixed.components) * 10 <= len(game.components)


def test_mixed_policy_beats_both_baselines_on_a_tabular_campaign():
    from budget_rl.tabular import random_cmdp

    model = random_cmdp(6, 4, 7, random_state=1)
    free = model.evaluate(np.zeros((7, 6), dtype=np.int64))[1]
    budget = free + 0.4 * (model.best_response(np.array([-1.0, 0.0]))[1][1] - free)
    mixed = maximize_under_budget(model.best_response, [budget])
    game = game_theoretic_mixture(model.best_response, budget, iterations=200, lambda_max=5.0)
    fixed = fixed_multiplier_policy(model.best_response, budget)
    optimum, _ = model.constrained_optimum(budget)
    assert mixed.expected[0] == pytest.approx(optimum, rel=1e-7)
    assert fixed.measurement[1] <= budget and fixed.measurement[0] < mixed.expected[0] - 1e-3
    assert game.expected[0] < mixed.expected[0] and len(game.components) >= 10 * len(mixed.components)


def test_myopic_allocator_spends_each_days_share_of_the_budget_on_its_own_predictions():
    from budget_rl.baselines import myopic_allocator
    from budget_rl.tabular import log_transitions, random_cmdp

    model = random_cmdp(5, 3, 4, random_state=2)
    data = log_transitions(model, 5_000, random_state=0)
    allocator = myopic_allocator(data, budget_per_user=0.8)
    states = np.eye(5)[np.random.default_rng(0).integers(0, 5, size=400)]
    for day in range(model.horizon):
        action = allocator.act(states, day)
        predicted = np.maximum(allocator.cost_models[day].predict(states), 0.0)[np.arange(400), action]
        assert predicted.sum() <= 0.2 * 400 * (1 + 1e-9)  # 0.8 over 4 days
        np.testing.assert_allclose(allocator.reward_models[day].predict(np.eye(5)), model.reward, atol=1e-6)


def test_target_search_with_the_min_norm_point_loop_on_the_one_state_case():
    from budget_rl.mixed import maximize_by_target_search

    mixed, held = maximize_by_target_search(_finite_oracle(ONE_STATE), [0.2])
    assert mixed.expected[0] >= 0.4 - 1e-7 and mixed.expected[1] <= 0.2 + 1e-9
    assert held <= 3 and len(mixed.components) <= 3


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_target_search_matches_column_generation_and_holds_at_most_d_plus_1(n_policies, n_limits, seed):
    from budget_rl.mixed import maximize_by_target_search

    rng = np.random.default_rng(seed)
    measurements = rng.uniform(0.0, 1.0, size=(n_policies, n_limits + 1))
    measurements[0, 1:] = 0.0
    limits = rng.uniform(0.05, 0.6, size=n_limits)
    searched, held = maximize_by_target_search(_finite_oracle(measurements), limits)
    generated = maximize_under_budget(_finite_oracle(measurements), limits)
    assert searched.expected[0] == pytest.approx(generated.expected[0], abs=1e-6)
    assert (searched.expected[1:] <= limits + 1e-7).all()
    assert held <= n_limits + 2  # d + 1 policies at every iteration of every search step


def test_affine_minimizer_with_a_ray_reaches_past_the_points():
    # the point (1, 1) plus the ray (0, -1): the nearest point of (1, 1) + cone{(0, -1)} to the origin is (1, 0)
    alpha = affine_minimizer(np.array([[1.0, 1.0], [0.0, -1.0]]), np.array([False, True]))
    np.testing.assert_allclose(alpha @ np.array([[1.0, 1.0], [0.0, -1.0]]), [1.0, 0.0], atol=1e-12)
    assert alpha[0] == pytest.approx(1.0) and alpha[1] == pytest.approx(1.0)


def test_result_objects_read_as_a_table_and_a_dict_of_headline_figures():
    """MixedPolicy, FixedMultiplierPolicy and MinNormPoint: `to_frame()` one row per component (point), `summary()`
    a dict of scalars; nothing in DataFrame.attrs."""
    mixed = maximize_under_budget(_finite_oracle(ONE_STATE), [0.2])
    frame = mixed.to_frame()
    assert list(frame.columns) == ["component", "weight", "value", "cost"] and not frame.attrs
    np.testing.assert_allclose(frame[["value", "cost"]].to_numpy(), mixed.measurements)
    assert frame["component"].tolist() == list(range(len(mixed.components)))
    summary = mixed.summary()
    assert summary == {"n_components": len(mixed.components), "oracle_calls": mixed.oracle_calls,
                       "value": pytest.approx(mixed.expected[0]), "cost": pytest.approx(mixed.expected[1])}
    several = MixedPolicy((0, 1), np.array([0.5, 0.5]), np.array([[1.0, 0.1, 0.2], [2.0, 0.3, 0.4]]))
    assert list(several.to_frame().columns) == ["component", "weight", "value", "cost_0", "cost_1"]
    assert several.summary()["cost_1"] == pytest.approx(0.3)

    fixed = fixed_multiplier_policy(_finite_oracle(ONE_STATE), 0.2)
    assert fixed.to_frame().iloc[0].to_dict() == {"component": 0, "weight": 1.0, "value": fixed.measurement[0],
                                                  "cost": fixed.measurement[1], "multiplier": fixed.multiplier}
    assert fixed.summary() == {"multiplier": fixed.multiplier, "value": fixed.measurement[0],
                               "cost": fixed.measurement[1], "oracle_calls": fixed.oracle_calls}

    point = min_norm_point([[1.0, -1.0], [1.0, 1.0]])
    assert point.to_frame()["weight"].sum() == pytest.approx(1.0) and len(point.to_frame()) == len(point.active)
    assert point.summary()["norm"] == pytest.approx(1.0) and point.summary()["n_active"] == 2


def _many(oracle, rounds: list | None = None):
    def oracle_many(directions):
        if rounds is not None:
            rounds.append(len(directions))
        return [oracle(np.asarray(d)) for d in directions]
    return oracle_many


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.integers(1, 2), st.integers(0, 2**31 - 1), st.floats(0.1, 0.9))
def test_batched_column_generation_reaches_the_exact_lp_optimum_in_fewer_rounds(m, limits_count, seed, share):
    """Known answer: the LP over every policy's measurements; the batched rounds ask many directions at once and
    must stop at the same optimal value, never over a limit."""
    rng = np.random.default_rng(seed)
    measurements = np.column_stack([rng.uniform(0, 1, m), rng.uniform(0, 1, (m, limits_count))])
    measurements[0, 1:] = 0.0  # a free policy: always feasible
    limits = share * measurements[:, 1:].max(axis=0)
    exact = linprog(-measurements[:, 0], A_ub=measurements[:, 1:].T, b_ub=limits, A_eq=np.ones((1, m)), b_eq=[1.0],
                    bounds=(0, None), method="highs")
    rounds: list = []
    batched = maximize_under_budget_batched(_many(_finite_oracle(measurements), rounds), limits,
                                            first=[(-1.0, *[g] * limits_count) for g in (0.0, 0.3, 1.0, 3.0)])
    sequential = maximize_under_budget(_finite_oracle(measurements), limits)
    assert batched.expected[0] == pytest.approx(-exact.fun, abs=1e-9)
    assert batched.expected[0] == pytest.approx(sequential.expected[0], abs=1e-9)
    assert (batched.expected[1:] <= limits + 1e-9).all()
    assert len(batched.components) <= limits_count + 1 and batched.weights.sum() == pytest.approx(1.0)
    assert batched.rounds == len(rounds) <= sequential.rounds and batched.oracle_calls == sum(rounds)


def test_batched_column_generation_on_the_one_state_case_and_an_infeasible_budget():
    mixed = maximize_under_budget_batched(_many(_finite_oracle(ONE_STATE)), [0.2])
    assert mixed.expected == pytest.approx([0.4, 0.2], abs=1e-12)
    with pytest.raises(InputError, match=r"^limits: infeasible; the cheapest policy found needs \[0.3\]"):
        maximize_under_budget_batched(_many(_finite_oracle(ONE_STATE[1:])), [0.2])
