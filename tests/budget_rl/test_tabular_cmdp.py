"""Tabular constrained MDPs: exact evaluation and best response against brute force and Monte Carlo, the mixed
policy against the occupancy-measure LP, hash execution against the mixture, and per-day mixing as a different
policy (the documented counter-example)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budget_rl.mixed import MixedPolicy, maximize_under_budget
from budget_rl.offline import (
    GreedyQPolicy,
    Transitions,
    fitted_q_evaluation,
    fitted_q_iteration,
    fqe_oracle,
    fqe_with_intervals,
)
from budget_rl.tabular import TabularCMDP, log_transitions, per_day_mixture, random_cmdp


def _budget(model: TabularCMDP, share: float) -> float:
    free = model.evaluate(np.zeros((model.horizon, model.n_states), dtype=np.int64))[1]
    richest = model.best_response(np.array([-1.0, 0.0]))[1][1]
    return free + share * (richest - free)


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 6), st.integers(2, 4), st.integers(1, 6), st.integers(0, 2**31 - 1), st.floats(0.05, 0.95))
def test_mixed_policy_reaches_the_occupancy_lp_optimum_with_at_most_d_plus_1_policies(states, actions, horizon,
                                                                                     seed, share):
    model = random_cmdp(states, actions, horizon, random_state=seed)
    budget = _budget(model, share)
    mixed = maximize_under_budget(model.best_response, [budget])
    value, _ = model.constrained_optimum(budget)
    assert mixed.expected[0] == pytest.approx(value, rel=1e-6, abs=1e-7)  # exact oracle; learned offline: 1%
    assert mixed.expected[1] <= budget * (1 + 1e-9) + 1e-12
    assert len(mixed.components) <= 3
    for policy, measurement in zip(mixed.components, mixed.measurements, strict=True):
        np.testing.assert_allclose(model.evaluate(policy), measurement)


def test_best_response_is_the_best_deterministic_policy_by_brute_force():
    model = random_cmdp(2, 2, 2, random_state=4)
    direction = np.array([-1.0, 0.7])
    policy, measurement = model.best_response(direction)
    every = [np.array(p).reshape(2, 2) for p in itertools.product(range(2), repeat=4)]
    best = min(direction @ model.evaluate(p) for p in every)
    assert direction @ measurement == pytest.approx(best)


def test_evaluation_equals_monte_carlo():
    model = random_cmdp(4, 3, 5, random_state=2)
    rng = np.random.default_rng(0)
    policy = rng.integers(0, 3, size=(5, 4))
    n = 40_000
    state = rng.choice(4, size=n, p=model.initial)
    reward = np.zeros(n)
    cost = np.zeros(n)
    for t in range(5):
        action = policy[t, state]
        reward += model.reward[state, action]
        cost += model.cost[state, action]
        cumulative = model.transition[state, action].cumsum(axis=1)
        state = (rng.random(n)[:, None] > cumulative).sum(axis=1)
    exact = model.evaluate(policy)
    assert abs(reward.mean() - exact[0]) < 4 * reward.std() / np.sqrt(n)
    assert abs(cost.mean() - exact[1]) < 4 * cost.std() / np.sqrt(n)


def _habit_campaign() -> TabularCMDP:
    """Two days, habit 0 or 1: a coupon on day 0 builds the habit that makes day 1's coupon work."""
    transition = np.zeros((2, 2, 2))
    transition[0, 0, 0] = transition[0, 1, 1] = transition[1, 0, 1] = transition[1, 1, 1] = 1.0
    reward = np.array([[0.0, 0.1], [0.2, 1.0]])  # rows: habit; columns: none, coupon
    cost = np.array([[0.0, 0.5], [0.0, 0.5]])
    return TabularCMDP(transition, reward, cost, np.array([1.0, 0.0]), horizon=2)


def test_per_day_mixing_is_a_different_policy():
    model = _habit_campaign()
    always, never = np.ones((2, 2), dtype=np.int64), np.zeros((2, 2), dtype=np.int64)
    mixture = MixedPolicy((always, never), np.array([0.5, 0.5]),
                          np.vstack([model.evaluate(always), model.evaluate(never)]))
    np.testing.assert_allclose(mixture.expected, [0.55, 0.5])  # per user: half get two coupons, half none
    daily = model.evaluate(per_day_mixture([always, never], mixture.weights, 2))
    np.testing.assert_allclose(daily, [0.375, 0.5])  # same spend, value 0.375: the habit rarely meets its coupon


def test_hash_execution_reproduces_the_mixture_within_monte_carlo_error():
    model = random_cmdp(5, 3, 6, random_state=8)
    budget = _budget(model, 0.5)
    mixed = maximize_under_budget(model.best_response, [budget])
    assert len(mixed.components) == 2  # a binding budget mixes two policies
    users = np.arange(60_000)
    component = mixed.assign(users, salt="tabular")
    rng = np.random.default_rng(1)
    state = rng.choice(5, size=len(users), p=model.initial)
    totals = np.zeros((len(users), 2))
    tables = np.stack(mixed.components)
    for t in range(model.horizon):
        action = tables[component, t, state]
        totals += np.column_stack([model.reward[state, action], model.cost[state, action]])
        cumulative = model.transition[state, action].cumsum(axis=1)
        state = (rng.random(len(users))[:, None] > cumulative).sum(axis=1)
    error = 4 * totals.std(axis=0) / np.sqrt(len(users))
    assert (np.abs(totals.mean(axis=0) - mixed.expected) < error).all()


@pytest.mark.parametrize(("change", "match"), [
    (lambda m: {"transition": m.transition[:, :, :-1]}, "^transition:"),
    (lambda m: {"transition": m.transition * 2}, "^transition:"),
    (lambda m: {"cost": -m.cost}, "^cost:"),
    (lambda m: {"initial": np.ones(m.n_states)}, "^initial:"),
    (lambda m: {"horizon": 0}, "^horizon:"),
])
def test_bad_cmdp_is_refused(change, match):
    model = random_cmdp(3, 2, 2, random_state=0)
    fields = {"transition": model.transition, "reward": model.reward, "cost": model.cost, "initial": model.initial,
              "horizon": model.horizon} | change(model)
    with pytest.raises(ValueError, match=match):
        TabularCMDP(**fields)


# ------------------------------------------------------------------------------------- offline learners on logs
def _deterministic_cmdp(seed: int) -> TabularCMDP:
    model = random_cmdp(4, 3, 5, random_state=seed)
    following = np.random.default_rng(seed).integers(0, 4, size=(4, 3))
    return TabularCMDP(np.eye(4)[following], model.reward, model.cost, model.initial, model.horizon)


@pytest.mark.parametrize("importance_weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fqe_equals_exact_evaluation_on_a_deterministic_tabular_mdp_with_full_coverage(seed, importance_weighted):
    model = _deterministic_cmdp(seed)
    logging = np.random.default_rng(seed).dirichlet(np.ones(3), size=4)  # targeted, but every action everywhere
    data = log_transitions(model, 2_000, random_state=seed, logging=logging)
    policy = fitted_q_iteration(data, 1.0, -0.3, importance_weighted=importance_weighted)
    table = np.stack([policy.act(np.eye(4), day) for day in range(model.horizon)])
    first_states = data.state[data.day == 0].argmax(axis=1)
    start = np.bincount(first_states, minlength=4) / len(first_states)  # FQE averages over the logged first states
    exact = TabularCMDP(model.transition, model.reward, model.cost, start, model.horizon).evaluate(table)
    np.testing.assert_allclose(fitted_q_evaluation(data, policy, importance_weighted=importance_weighted), exact,
                               rtol=1e-7, atol=1e-12)  # the ridge's 1e-8 penalty on rarely logged cells
    relabelled = TabularCMDP(model.transition, model.reward - 0.3 * model.cost, np.zeros_like(model.cost), start,
                             model.horizon)
    best, _ = relabelled.best_response(np.array([-1.0, 0.0]))
    assert relabelled.evaluate(table)[0] == pytest.approx(relabelled.evaluate(best)[0])  # FQI found the optimum


def test_importance_weighting_removes_the_covariate_shift_bias_of_a_misspecified_q_function():
    """One day, state x ~ U(-1, 1) with features (1, x); action 1 pays x^2 (a line cannot fit it) and the logging
    policy gives action 1 mostly where x > 0.5. Always-action-1 is worth E[x^2] = 1/3. Plain least squares fits
    the line to the targeted states and extrapolates; weighted by 1 / propensity it fits the line of the whole
    state distribution, whose mean is E[x^2] exactly (the best linear fit of x^2 under U(-1, 1) is the constant)."""
    rng = np.random.default_rng(0)
    n = 200_000
    x = rng.uniform(-1, 1, n)
    share = np.where(x > 0.5, 0.9, 0.1)
    action = (rng.random(n) < share).astype(np.int64)
    features = np.column_stack([np.ones(n), x])
    data = Transitions(features, action, np.where(action == 1, x**2, 0.0), np.zeros(n), features, np.zeros(n, int),
                       np.arange(n), 2, 1, np.where(action == 1, share, 1 - share))
    always = GreedyQPolicy((type("Always", (), {"predict": lambda self, s: np.tile([0.0, 1.0], (len(s), 1))})(),))
    plain = fitted_q_evaluation(data, always)[0]
    weighted = fitted_q_evaluation(data, always, importance_weighted=True)[0]
    assert abs(weighted - 1 / 3) < 0.005  # seeds 0-2: within 0.0015
    assert plain - 1 / 3 > 0.03  # seeds 0-2: +0.041 (12%)


def test_importance_weighting_without_propensities_is_refused_before_any_work():
    data = replace(log_transitions(random_cmdp(3, 2, 2, random_state=0), 50, random_state=0), propensity=None)
    with pytest.raises(ValueError, match="^propensity: importance weighting needs the logged propensities"):
        fqe_oracle(data, importance_weighted=True)


def test_fqe_matches_the_true_value_within_sampling_error_on_a_stochastic_mdp():
    model = random_cmdp(4, 3, 4, random_state=3)
    data = log_transitions(model, 30_000, random_state=0)
    policy = fitted_q_iteration(data, 1.0, -0.5)
    table = np.stack([policy.act(np.eye(4), day) for day in range(model.horizon)])
    np.testing.assert_allclose(fitted_q_evaluation(data, policy), model.evaluate(table), rtol=0.01)


def test_mixed_policy_learned_offline_is_within_1_percent_of_the_lp_optimum_and_within_budget():
    model = random_cmdp(4, 3, 4, random_state=3)
    data = log_transitions(model, 30_000, random_state=0)
    budget = _budget(model, 0.4)
    mixed = maximize_under_budget(fqe_oracle(data), [budget])
    assert len(mixed.components) <= 3
    tables = [np.stack([p.act(np.eye(4), day) for day in range(model.horizon)]) for p in mixed.components]
    true = sum(w * model.evaluate(table) for w, table in zip(mixed.weights, tables, strict=True))
    optimum, _ = model.constrained_optimum(budget)
    assert true[0] >= 0.99 * optimum
    assert true[1] <= 1.005 * budget


@pytest.mark.parametrize(("change", "match"), [
    (lambda d: {"action": np.where(np.arange(len(d.action)) == 3, 7, d.action)}, "^action: 1 logged actions"),
    (lambda d: {"reward": np.where(np.arange(len(d.reward)) == 0, np.nan, d.reward)}, "^reward: 1 values are NaN"),
    (lambda d: {"cost": -d.cost - 1}, "^cost:"),
    (lambda d: {"day": d.day + 1}, "^day:"),
    (lambda d: {"state": d.state[:-1]}, "^state:"),
])
def test_bad_transitions_are_refused(change, match):
    data = log_transitions(random_cmdp(3, 2, 2, random_state=0), 50, random_state=0)
    with pytest.raises(ValueError, match=match):
        replace(data, **({"propensity": None} | change(data)))  # a new Transitions, checked as it is built


def test_fqe_bootstrap_intervals_cover_the_true_value_and_cost():
    model = random_cmdp(4, 3, 4, random_state=3)
    covered = np.zeros(2, dtype=int)
    for seed in range(12):
        data = log_transitions(model, 2_000, random_state=seed)
        policy = fitted_q_iteration(data, 1.0, -0.5)
        table = np.stack([policy.act(np.eye(4), day) for day in range(model.horizon)])
        estimate = fqe_with_intervals(data, policy, n_bootstrap=60, random_state=seed)
        true = model.evaluate(table)
        covered += (estimate.low <= true) & (true <= estimate.high)
        assert (estimate.low <= estimate.estimate).all() and (estimate.estimate <= estimate.high).all()
    assert (covered >= 10).all(), covered  # nominal 95% of 12 is 11.4; seen 12 of 12
    again = fqe_with_intervals(data, policy, n_bootstrap=60, random_state=11)
    np.testing.assert_array_equal(again.replicates, estimate.replicates)


def test_transitions_estimates_and_the_model_read_as_a_table_and_a_dict_of_headline_figures():
    """`to_frame()` one row per transition / measurement / (state, action), `summary()` a dict of scalars;
    the transitions' table is the one `Transitions.from_frame` reads back."""
    model = random_cmdp(3, 2, 2, random_state=0)
    data = log_transitions(model, 40, random_state=1)
    frame = data.to_frame(actions=["none", "coupon"], feature_names=["a", "b", "c"])
    assert list(frame.columns[:6]) == ["user_id", "day", "action", "reward", "cost", "propensity"]
    assert list(frame.columns[6:]) == ["state_a", "state_b", "state_c", "next_a", "next_b", "next_c"]
    assert len(frame) == 80 and set(frame["action"]) <= {"none", "coupon"} and not frame.attrs
    back = Transitions.from_frame(frame, ["none", "coupon"], horizon=2)
    order = np.lexsort((data.user, data.day))
    for name in ("state", "action", "reward", "cost", "next_state", "day", "user", "propensity"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name)[order])
    assert list(data.to_frame().columns[6:9]) == ["state_0", "state_1", "state_2"]
    assert data.summary() == {"n_rows": 80, "n_users": 40, "n_actions": 2, "horizon": 2,
                              "reward_per_user": pytest.approx(data.reward.sum() / 40),
                              "cost_per_user": pytest.approx(data.cost.sum() / 40), "has_propensity": True}
    with pytest.raises(ValueError, match="^feature_names: 2 names for 3 state features"):
        data.to_frame(feature_names=["a", "b"])

    estimate = fqe_with_intervals(data, fitted_q_iteration(data, 1.0, 0.0), n_bootstrap=10, confidence=0.9)
    table = estimate.to_frame()
    assert table["measurement"].tolist() == ["value", "cost"]
    np.testing.assert_array_equal(table[["estimate", "low", "high"]].to_numpy().T,
                                  [estimate.estimate, estimate.low, estimate.high])
    summary = estimate.summary()
    assert summary["value"] == estimate.estimate[0] and summary["cost_high"] == estimate.high[1]
    assert summary["n_bootstrap"] == 10 and summary["confidence"] == 0.9

    cells = model.to_frame()
    assert len(cells) == 6 and cells.loc[(cells["state"] == 2) & (cells["action"] == 1), "cost"].item() == \
        model.cost[2, 1]
    assert model.summary() == {"n_states": 3, "n_actions": 2, "horizon": 2}
