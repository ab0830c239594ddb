"""The synthetic campaign as episodes under any policy (the constrained-RL simulator): reproducible, the world's
formulas, transitions that chain day to day, and offline data the budget_rl learners take."""

from __future__ import annotations

import numpy as np
import pytest

from campaign_core import InputError
from pipelines.synthetic import CampaignConfig
from pipelines.synthetic.episodes import DYNAMIC_FEATURES, CampaignEpisodes, rollout
from pipelines.synthetic.world import CampaignWorld, _sigmoid


@pytest.fixture(scope="module")
def env() -> CampaignEpisodes:
    world = CampaignWorld.from_config(CampaignConfig(n_users=4000, avg_degree=0), random_state=2)
    return CampaignEpisodes(world, 0, 4000, horizon=6)


def _always(arm: int):
    return lambda features, day: np.full(len(features), arm)


def test_same_seed_same_episodes_and_other_seed_other(env):
    first, second = env.run(_always(1), random_state=3), env.run(_always(1), random_state=3)
    np.testing.assert_array_equal(first.transitions.reward, second.transitions.reward)
    np.testing.assert_array_equal(first.transitions.state, second.transitions.state)
    assert not np.array_equal(env.run(_always(1), random_state=4).transitions.reward, first.transitions.reward)


@pytest.mark.parametrize("arm", [0, 1, 2, 3])
def test_first_day_purchases_follow_the_worlds_formulas(env, arm):
    world, users = env.world, env.users
    active = _sigmoid(world.activity_logit(users, np.zeros(len(users)), np.full(len(users), -1)))
    expected = active * world.response_probability(users)[:, arm]
    rewards = np.stack([env.run(_always(arm), random_state=seed).transitions.reward[:len(users)]
                        for seed in range(5)])
    standard_error = rewards.std() / np.sqrt(rewards.size)
    assert abs(rewards.mean() - expected.mean()) < 4 * standard_error
    costs = env.run(_always(arm), random_state=0)
    np.testing.assert_allclose(costs.transitions.cost, world.arm_costs[arm] * costs.transitions.reward)


def test_transitions_chain_day_to_day_and_state_features_are_as_documented(env):
    episodes = env.run(env.logging_policy(random_state=1), random_state=1)
    data = episodes.transitions
    n = len(env.users)
    assert data.state.shape == (6 * n, env.static.shape[1] + len(DYNAMIC_FEATURES) + env.n_arms)
    np.testing.assert_array_equal(data.next_state[:5 * n], data.state[n:])
    day_share = env.static.shape[1] + DYNAMIC_FEATURES.index("day_share")
    np.testing.assert_allclose(data.state[data.day == 3][:, day_share], 0.5)
    np.testing.assert_allclose(episodes.total_reward, data.reward.reshape(6, n).sum(axis=0))
    assert set(np.unique(data.action)) == {0, 1, 2, 3}
    randomized = env.users.randomized
    actions = data.action.reshape(6, n)
    shares = np.bincount(actions[:, randomized].ravel(), minlength=4) / actions[:, randomized].size
    np.testing.assert_allclose(shares, 0.25, atol=0.03)  # the randomized slice is uniform


def test_a_coupon_builds_long_term_value(env):
    """Coupons every day buy more purchases than their first day alone shows: habit and carry-over."""
    never, always = env.run(_always(0), random_state=5), env.run(_always(2), random_state=5)
    n = len(env.users)
    first_day_gain = always.transitions.reward[:n].mean() - never.transitions.reward[:n].mean()
    assert always.value - never.value > env.horizon * first_day_gain


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    import pandas as pd

    from pipelines.synthetic.episodes import write_transitions

    world = CampaignWorld.from_config(CampaignConfig(n_users=1500, avg_degree=0, chunk_users=500), random_state=4)
    folder = write_transitions(world, 1500, 4, tmp_path_factory.mktemp("rl") / "transitions", random_state=2)
    return world, pd.read_parquet(folder)


def test_written_transitions_read_back_with_propensities_of_the_logging_policy(written):
    from budget_rl.offline import Transitions

    world, frame = written
    data = Transitions.from_frame(frame, world.arm_labels, horizon=4)
    assert data.state.shape[0] == 1500 * 4 and data.propensity is not None
    first_chunk = CampaignEpisodes(world, 0, 500, 4)
    probabilities = world.logging_probabilities(first_chunk.users)
    day0 = frame[(frame["day"] == 0) & (frame["user_id"] < 500)].sort_values("user_id")
    codes = np.asarray([world.arm_labels.index(a) for a in day0["action"]])
    np.testing.assert_allclose(day0["propensity"], probabilities[np.arange(500), codes])
    np.testing.assert_array_equal(np.sort(frame["user_id"].unique()), np.arange(1500))


@pytest.mark.parametrize(("change", "match"), [
    (lambda f: f.drop(columns="cost"), r"^transitions: missing column\(s\) \['cost'\]"),
    (lambda f: f.assign(action=f["action"].where(f.index != 7, "gold")), r"^action: 1 logged actions are outside"),
    (lambda f: f.assign(reward=f["reward"].where(f.index != 3, np.nan)), r"^reward: 1 values are NaN"),
    (lambda f: f.drop(index=f.index[(f["user_id"] == 5) & (f["day"] == 1)]), r"^day: 1 users do not have"),
    (lambda f: pytest.importorskip("pandas").concat([f, f.iloc[:2]]), r"^day: 2 rows repeat"),
])
def test_bad_transitions_are_refused_with_one_line(written, change, match):
    from budget_rl.offline import Transitions

    world, frame = written
    with pytest.raises(ValueError, match=match) as error:
        Transitions.from_frame(change(frame), world.arm_labels, horizon=4)
    assert "\n" not in str(error.value)


def test_fqe_on_campaign_logs_never_estimates_a_negative_spend():
    """Regression: a linear cost model extrapolates below zero, and greedy policies seek exactly those actions."""
    from budget_rl.offline import RidgeQ, fqe_oracle

    world = CampaignWorld.from_config(CampaignConfig(n_users=10000, avg_degree=0), random_state=1)
    episodes = CampaignEpisodes(world, 0, 10000, horizon=14)
    logged = episodes.run(episodes.logging_policy(random_state=7), random_state=7).transitions
    oracle = fqe_oracle(logged, regressor=lambda: RidgeQ(1e-3))
    for multiplier in (0.5, 1.0, 2.0, 5.0):
        assert oracle(np.array([-1.0, multiplier]))[1][1] >= 0.0


def test_generate_stage_writes_transitions_on_request(tmp_path, mlflow_uri):
    import pandas as pd

    from budget_rl.offline import Transitions
    from pipelines.cli import main

    out = tmp_path / "campaign"
    assert main(["generate", "--users", "600", "--days", "2", "--out", str(out), "--transitions-horizon", "3",
                 "--tracking-uri", mlflow_uri]) == 0
    data = Transitions.from_frame(pd.read_parquet(out / "transitions"),
                                  ["control", "discount_5", "free_shipping", "cashback_10"], horizon=3)
    assert len(data.action) == 600 * 3 and data.propensity is not None
    assert main(["generate", "--users", "600", "--days", "2", "--out", str(tmp_path / "plain"),
                 "--tracking-uri", mlflow_uri]) == 0
    assert not (tmp_path / "plain" / "transitions").exists()


def test_rollout_runs_a_models_policy_with_its_state_columns_levels_and_spend_so_far():
    # a model whose state columns are in another order and whose levels are cheapest first, always taking
    # free_shipping: chunk 0 of the rollout is the simulator's own run with the world's free_shipping arm
    world = CampaignWorld.from_config(CampaignConfig(n_users=500, n_days=3, avg_degree=0, chunk_users=200),
                                      random_state=3)
    reference = CampaignEpisodes(world, 0, 200, horizon=3)
    names = reference.feature_names[::-1]
    levels = ["control", "free_shipping", "discount_5", "cashback_10"]
    seen: dict = {}

    def decide(ids, states, day, spent):
        seen.setdefault(day, []).append((ids, states, spent))
        return np.full(len(ids), levels.index("free_shipping"))

    reward, cost = rollout(world, 500, 3, decide, encoder=reference.encoder, state_names=names, levels=levels,
                           random_state=5)
    arm = world.arm_labels.index("free_shipping")
    expected = reference.run(_always(arm), random_state=5)
    assert reward.shape == cost.shape == (500,) and [len(seen[day]) for day in range(3)] == [3, 3, 3]
    np.testing.assert_array_equal(reward[:200], expected.total_reward)
    np.testing.assert_array_equal(cost[:200], expected.total_cost)
    data = expected.transitions
    ids, states, spent = seen[2][0]
    np.testing.assert_array_equal(ids, reference.users.user_id)
    np.testing.assert_array_equal(states, data.state[data.on_day(2)][:, ::-1])
    np.testing.assert_allclose(spent, data.cost[data.on_day(0)] + data.cost[data.on_day(1)])
    with pytest.raises(InputError, match=r"levels: \['coupon'\] are not arms"):
        rollout(world, 200, 3, decide, encoder=reference.encoder, state_names=names, levels=["control", "coupon"])
    with pytest.raises(InputError, match=r"state: the simulator does not produce \['purchases_decay_0.7'\]"):
        rollout(world, 200, 3, decide, encoder=reference.encoder, state_names=[*names, "purchases_decay_0.7"],
                levels=levels)
