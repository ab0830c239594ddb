"""Ridge FQI and FQE from sufficient statistics (`budget_rl.ridge_statistics`): the learned greedy policy and its
(value, cost) equal the in-memory `RidgeQ` path of `budget_rl.offline`, in memory, over shuffled Dask partitions
and over one table per day; bad tables are refused before any sweep."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from budget_rl.mixed import maximize_under_budget, maximize_under_budget_batched
from budget_rl.offline import (
    Transitions,
    evaluated_policy,
    fitted_q_evaluation,
    fitted_q_iteration,
    fqe_oracle,
    one_step_models,
)
from budget_rl.ridge_statistics import resampled_counts, ridge_sweeps
from budget_rl.tabular import log_transitions, random_cmdp
from campaign_core import seeded_salt
from pipelines.execution import Partitions

ACTIONS = ["none", "small", "large"]


def _rich_transitions(n_users: int, horizon: int, seed: int) -> Transitions:
    """Episodes with 4 continuous state features and an intercept: a coupon raises today's purchase probability and a
    habit feature that carries over; the logging policy favours coupons for high-habit users (propensities logged)."""
    rng = np.random.default_rng(seed)
    profile = rng.normal(size=(n_users, 3))
    habit = rng.uniform(0, 1, n_users)
    rows: dict[str, list] = {key: [] for key in ("state", "action", "reward", "cost", "next", "day", "propensity")}
    for day in range(horizon):
        state = np.column_stack([np.ones(n_users), profile, habit])
        share = np.column_stack([np.full(n_users, 0.5), 0.3 * (1 - habit) + 0.1, 0.2 + 0.3 * habit - 0.1])
        share /= share.sum(axis=1, keepdims=True)
        action = (rng.random(n_users)[:, None] > share.cumsum(axis=1)).sum(axis=1).clip(0, 2)
        chance = 1 / (1 + np.exp(-(profile[:, 0] + 2 * habit - 1 + 0.8 * action)))
        bought = (rng.random(n_users) < chance).astype(float)
        habit = 0.7 * habit + 0.3 * bought
        rows["state"].append(state)
        rows["next"].append(np.column_stack([np.ones(n_users), profile, habit]))
        for key, value in (("action", action), ("reward", bought), ("cost", bought * np.array([0.0, 0.5, 1.5])[action]),
                           ("day", np.full(n_users, day)), ("propensity", share[np.arange(n_users), action])):
            rows[key].append(value)
    joined = {key: np.concatenate(value) for key, value in rows.items()}
    return Transitions(joined["state"], joined["action"].astype(np.int64), joined["reward"], joined["cost"],
                       joined["next"], joined["day"].astype(np.int64), np.tile(np.arange(n_users), horizon), 3,
                       horizon, joined["propensity"])


def _sources(data: Transitions) -> dict:
    """The same transitions: in memory, as 5 shuffled Dask partitions, and as one 2-partition table per day."""
    frame = data.to_frame(actions=ACTIONS)
    shuffled = frame.sample(frac=1.0, random_state=7).reset_index(drop=True)
    return {"memory": (data, None),
            "partitions": (Partitions(dd.from_pandas(shuffled, npartitions=5)), ACTIONS),
            "per day": ([Partitions(dd.from_pandas(frame[frame["day"] == day], npartitions=2))
                         for day in range(data.horizon)], ACTIONS)}


def _same(ours: np.ndarray, reference: np.ndarray) -> None:
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-12)


DATA = {"tabular": lambda: log_transitions(random_cmdp(4, 3, 4, random_state=3), 3_000, random_state=0),
        "rich": lambda: _rich_transitions(2_000, 4, seed=1)}


@pytest.mark.parametrize("importance_weighted", [False, True])
@pytest.mark.parametrize("kind", sorted(DATA))
def test_policy_and_its_value_and_cost_equal_the_in_memory_ridge_path_in_memory_and_over_chunks(kind,
                                                                                             importance_weighted):
    data = DATA[kind]()
    relabels = [(1.0, 0.0), (1.0, -0.4), (-0.2, -1.0)]
    reference = []
    for reward_weight, cost_weight in relabels:
        policy = fitted_q_iteration(data, reward_weight, cost_weight, importance_weighted=importance_weighted)
        reference.append((policy, fitted_q_evaluation(data, policy, importance_weighted=importance_weighted)))
    assert max(abs(estimate[1]) for _, estimate in reference) > 0.05  # the cost estimates are not trivially 0
    with dask.config.set(scheduler="synchronous"):
        for name, (source, actions) in _sources(data).items():
            sweeps = ridge_sweeps(source, actions=actions, importance_weighted=importance_weighted)
            for (reward_weight, cost_weight), (policy, estimate) in zip(relabels, reference, strict=True):
                learned, measured = sweeps.fit(reward_weight, cost_weight)
                for day in range(data.horizon):
                    _same(learned.q_functions[day].coefficients_, policy.q_functions[day].coefficients_)
                    states = data.state[data.day == day]
                    np.testing.assert_array_equal(learned.act(states, day), policy.act(states, day), err_msg=name)
                _same(measured, estimate)
                _same(sweeps.evaluate(policy), estimate)


def test_the_mixed_policy_learned_on_chunks_equals_the_in_memory_one():
    data = _rich_transitions(2_000, 3, seed=2)
    reference = maximize_under_budget(fqe_oracle(data), [0.3])
    with dask.config.set(scheduler="synchronous"):
        source, actions = _sources(data)["partitions"]
        mixed = maximize_under_budget(ridge_sweeps(source, actions=actions), [0.3])
    assert mixed.oracle_calls == reference.oracle_calls and len(mixed.components) == len(reference.components) == 2
    _same(mixed.weights, reference.weights)
    _same(mixed.measurements, reference.measurements)
    assert mixed.expected[1] == pytest.approx(0.3, rel=1e-9)  # the budget binds


def test_the_batched_mixture_over_sweeps_equals_column_generation_in_memory_and_reuses_its_sweeps():
    data = _rich_transitions(2_000, 3, seed=2)
    reference = maximize_under_budget(fqe_oracle(data), [0.3])
    grid = [(-1.0, m) for m in (0.0, 0.1, 0.3, 1.0)]
    with dask.config.set(scheduler="synchronous"):
        source, actions = _sources(data)["per day"]
        sweeps = ridge_sweeps(source, actions=actions)
        swept = []
        sweeps_of = sweeps._swept
        object.__setattr__(sweeps, "_swept", lambda weights: swept.append(len(weights)) or sweeps_of(weights))
        mixed = maximize_under_budget_batched(sweeps.best_responses, [0.3], first=grid)
        again = sweeps.evaluated_many([(1.0, -m) for _, m in grid])
    # FQI's answer to a price is greedy on its own Q-functions, so its FQE measurement need not have the largest
    # relabelled value of all policies: two column generations that ask different prices stop at values that differ
    # by that approximation (5e-6 relative here). With an exact oracle they agree to 1e-9 (test_mixed_policy.py).
    assert mixed.expected[0] == pytest.approx(reference.expected[0], rel=1e-4)
    assert mixed.expected[1] == pytest.approx(0.3, rel=1e-9)  # the budget binds
    assert len(swept) == mixed.rounds < reference.oracle_calls  # one sweep per round, fewer than the calls
    assert sum(swept) == mixed.oracle_calls  # no relabelling swept twice; the grid is remembered, not swept again
    for ours, (_, m) in zip(again, grid, strict=True):
        _same(ours.measurement, evaluated_policy(data, 1.0, -m).measurement)


@pytest.mark.parametrize("after_a_sweep", [False, True])
def test_one_step_models_on_chunks_equal_the_in_memory_ones_before_or_after_a_sweep(after_a_sweep):
    data = _rich_transitions(1_200, 3, seed=6)
    reference = one_step_models(data, importance_weighted=True)
    with dask.config.set(scheduler="synchronous"):
        source, actions = _sources(data)["per day"]
        sweeps = ridge_sweeps(source, actions=actions, importance_weighted=True)
        if after_a_sweep:
            sweeps.evaluated(1.0, -0.5)  # solves them on its passes
        ours = sweeps.one_step()
    for mine, theirs in zip(ours, reference, strict=True):
        for day in range(data.horizon):
            _same(mine[day].coefficients_, theirs[day].coefficients_)


def test_a_tabular_fqe_on_chunks_is_the_exact_evaluation_on_the_empirical_mdp():
    """Known answer: with one-hot states the ridge FQE of a policy is its exact value on the logged MDP, which
    the in-memory path reaches to 1e-7 (tests/budget_rl/test_tabular_cmdp.py); the chunked path reaches it too."""
    model = random_cmdp(3, 2, 3, random_state=5)
    data = log_transitions(model, 20_000, random_state=5)
    with dask.config.set(scheduler="synchronous"):
        source, actions = _sources(data)["partitions"]
        policy, measured = ridge_sweeps(source, actions=ACTIONS[:2]).fit(1.0, 0.0)
    table = np.stack([policy.act(np.eye(3), day) for day in range(model.horizon)])
    np.testing.assert_allclose(measured, model.evaluate(table), rtol=0.02)


def _table(frame: pd.DataFrame) -> Partitions:
    return Partitions(dd.from_pandas(frame, npartitions=2))


@pytest.mark.parametrize(("change", "options", "match"), [
    (lambda f: f.assign(action=f["action"].where(f.index != 3, "huge")), {}, "^action: 1 logged actions are outside"),
    (lambda f: f.assign(reward=f["reward"].where(f.index != 0, np.nan)), {}, "^reward: 1 values are NaN"),
    (lambda f: f.assign(cost=f["cost"].where(f.index != 0, -1.0)), {}, "^cost: 1 values are negative"),
    (lambda f: f.drop(columns="next_1"), {}, r"^transitions: missing column\(s\) \['next_1'\]"),
    (lambda f: f.drop(columns="propensity"), {"importance_weighted": True},
     r"^transitions: missing column\(s\) \['propensity'\]"),
    (lambda f: f.assign(propensity=f["propensity"].where(f.index != 0, 0.0)), {"importance_weighted": True},
     r"^propensity: 1 values are not in \(0, 1\]"),
    (lambda f: f[f["day"] != 1], {}, "^day: 50 users do not have consecutive days from 0"),
    (lambda f: f[(f["day"] != 0) | (f["user_id"] != 4)], {}, "^day: 1 users do not have consecutive days from 0"),
    (lambda f: pd.concat([f, f.iloc[[0, 1]]]), {}, r"^day: 2 rows repeat a \(user_id, day\) pair"),
    (lambda f: f, {"actions": []}, "^actions: the action labels"),
    (lambda f: f, {"l2": 0.0}, "^l2: must be > 0"),
])
def test_bad_tables_are_refused_in_one_line_before_any_sweep(change, options, match):
    data = log_transitions(random_cmdp(3, 2, 3, random_state=0), 50, random_state=0)
    frame = change(data.to_frame(actions=ACTIONS[:2]))
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(ValueError, match=match):
            ridge_sweeps(_table(frame), **({"actions": ACTIONS[:2]} | options))
        with pytest.raises(ValueError, match=match):  # one table per day
            ridge_sweeps([_table(frame[frame["day"] == day]) if (frame["day"] == day).any()
                          else _table(frame.head(0)) for day in range(3)], **({"actions": ACTIONS[:2]} | options))


def test_importance_weighting_without_propensities_is_refused_in_memory():
    data = log_transitions(random_cmdp(3, 2, 2, random_state=0), 50, random_state=0)
    bare = Transitions(*(getattr(data, f) for f in ("state", "action", "reward", "cost", "next_state", "day", "user",
                                                    "n_actions", "horizon")))
    with pytest.raises(ValueError, match="^propensity: importance weighting needs the logged propensities"):
        ridge_sweeps(bare, importance_weighted=True)


@pytest.mark.parametrize("importance_weighted", [False, True])
def test_a_bootstrap_replicate_is_fqe_on_the_logs_with_each_episode_repeated_its_drawn_number_of_times(
        importance_weighted):
    """Known answer: replicate b weights each user's rows by its Poisson count, which is the in-memory FQE on the
    transitions with every episode copied that many times; in memory and over partitions alike."""
    data = _rich_transitions(1_500, 3, seed=3)
    policy = fitted_q_iteration(data, 1.0, -0.5, importance_weighted=importance_weighted)
    sweeps = ridge_sweeps(data, importance_weighted=importance_weighted)
    replicates = sweeps.replicates([policy], n_bootstrap=3, random_state=11)
    for b in range(3):
        counts = resampled_counts(data.user, seeded_salt(f"fqe-bootstrap-{b}", 11)).astype(int)
        assert counts.max() >= 3 and (counts == 0).mean() == pytest.approx(np.exp(-1), abs=0.05)
        rows = np.repeat(np.arange(len(data.action)), counts)
        copied = Transitions(data.state[rows], data.action[rows], data.reward[rows], data.cost[rows],
                             data.next_state[rows], data.day[rows], data.user[rows], data.n_actions, data.horizon,
                             data.propensity[rows])
        _same(replicates[0, b], fitted_q_evaluation(copied, policy, importance_weighted=importance_weighted))
    with dask.config.set(scheduler="synchronous"):
        source, actions = _sources(data)["partitions"]
        chunked = ridge_sweeps(source, actions=actions, importance_weighted=importance_weighted)
        _same(chunked.replicates([policy], n_bootstrap=3, random_state=11), replicates)
    assert sweeps.episodes == chunked.episodes == 1_500


def test_the_replicates_of_several_policies_in_one_sweep_equal_each_policy_on_its_own():
    """All (replicate, policy) evaluations share one Gram pass and one backward sweep; each equals its own run."""
    data = _rich_transitions(800, 3, seed=5)
    policies = [fitted_q_iteration(data, 1.0, -0.5), fitted_q_iteration(data, 1.0, -2.0)]
    with dask.config.set(scheduler="synchronous"):
        source, actions = _sources(data)["per day"]
        sweeps = ridge_sweeps(source, actions=actions)
        together = sweeps.replicates(policies, n_bootstrap=2, random_state=4)
        assert together.shape == (2, 2, 2)
        for index, policy in enumerate(policies):
            _same(together[index], sweeps.replicates([policy], n_bootstrap=2, random_state=4)[0])


def test_a_grid_of_relabellings_in_one_sweep_equals_each_in_memory_evaluated_policy():
    data = _rich_transitions(1_500, 3, seed=4)
    relabels = [(1.0, 0.0), (1.0, -0.3), (1.0, -2.0)]
    with dask.config.set(scheduler="synchronous"):
        source, actions = _sources(data)["per day"]
        grid = ridge_sweeps(source, actions=actions, importance_weighted=True).evaluated_many(relabels)
    for (reward_weight, cost_weight), ours in zip(relabels, grid, strict=True):
        reference = evaluated_policy(data, reward_weight, cost_weight, importance_weighted=True)
        _same(ours.measurement, reference.measurement)
        for day in range(data.horizon):
            for mine, theirs in ((ours.policy.q_functions, reference.policy.q_functions),
                                 (ours.value_q, reference.value_q), (ours.cost_q, reference.cost_q)):
                _same(mine[day].coefficients_, theirs[day].coefficients_)
