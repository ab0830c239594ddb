"""The synthetic campaign as episodes under any policy (the constrained-RL simulator): reproducible, the world's
formulas, transitions that chain day to day, and offline data the budget_rl learners take."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.synthetic import CampaignConfig
from pipelines.synthetic.episodes import DYNAMIC_FEATURES, CampaignEpisodes
from pipelines.synthetic.world import CampaignWorld, _sigmoid


@pytest.fixture(scope="module")
def env() -> CampaignEpisodes:
    world = CampaignWorld.from_config(CampaignConfig(n_users=4000, avg_degree=0), seed=2)
    return CampaignEpisodes(world, 0, 4000, horizon=6)


def _always(arm: int):
    return lambda features, day: np.full(len(features), arm)


def test_same_seed_same_episodes_and_other_seed_other(env):
    first, second = env.run(_always(1), seed=3), env.run(_always(1), seed=3)
    np.testing.assert_array_equal(first.transitions.reward, second.transitions.reward)
    np.testing.assert_array_equal(first.transitions.state, second.transitions.state)
    assert not np.array_equal(env.run(_always(1), seed=4).transitions.reward, first.transitions.reward)


@pytest.mark.parametrize("arm", [0, 1, 2, 3])
def test_first_day_purchases_follow_the_worlds_formulas(env, arm):
    world, users = env.world, env.users
    active = _sigmoid(world.activity_logit(users, np.zeros(len(users)), np.full(len(users), -1)))
    expected = active * world.response_probability(users)[:, arm]
    rewards = np.stack([env.run(_always(arm), seed=seed).transitions.reward[:len(users)] for seed in range(5)])
    standard_error = rewards.std() / np.sqrt(rewards.size)
    assert abs(rewards.mean() - expected.mean()) < 4 * standard_error
    costs = env.run(_always(arm), seed=0)
    np.testing.assert_allclose(costs.transitions.cost, world.arm_costs[arm] * costs.transitions.reward)


def test_transitions_chain_day_to_day_and_state_features_are_as_documented(env):
    episodes = env.run(env.logging_policy(seed=1), seed=1)
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
    never, always = env.run(_always(0), seed=5), env.run(_always(2), seed=5)
    n = len(env.users)
    first_day_gain = always.transitions.reward[:n].mean() - never.transitions.reward[:n].mean()
    assert always.value - never.value > env.horizon * first_day_gain
