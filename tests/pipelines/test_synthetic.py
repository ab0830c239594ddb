"""The synthetic campaign against what it promises: roles, propensities, carry-over, graph, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dask
import networkx as nx
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipelines.execution import dask_client
from pipelines.profile import ArmProfile
from pipelines.synthetic import (
    MODIFIER,
    NOISE,
    PROGNOSTIC,
    CampaignConfig,
    CampaignWorld,
    generate_campaign,
    load_truth,
    simulate_campaign,
)
from pipelines.synthetic.world import CampaignDays
from tests.conftest import SMALL


def _digests(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def medium():
    """20,000 users, 5 days, in memory."""
    return simulate_campaign(CampaignConfig(n_users=20_000, n_days=5, chunk_users=5_000), random_state=3)


# ------------------------------------------------------------------ determinism and layout
def test_same_seed_same_bytes_on_any_scheduler(tmp_path, small_campaign):
    with dask.config.set(scheduler="synchronous"):
        generate_campaign(SMALL, tmp_path / "again", random_state=11)
    with dask_client(threads_per_worker=2):
        generate_campaign(SMALL, tmp_path / "threaded", random_state=11)
    reference = _digests(small_campaign.paths.root)
    assert len(reference) > 10
    assert _digests(tmp_path / "again") == reference
    assert _digests(tmp_path / "threaded") == reference


def test_other_seed_other_data(tmp_path, small_campaign):
    with dask.config.set(scheduler="synchronous"):
        generate_campaign(SMALL, tmp_path / "other", random_state=12)
    assert _digests(tmp_path / "other")["logs/part-00000.parquet"] != _digests(
        small_campaign.paths.root)["logs/part-00000.parquet"]


def test_files_match_in_memory_campaign_and_truth_round_trips(small_campaign):
    paths = small_campaign.paths
    memory = simulate_campaign(SMALL, random_state=11)
    pd.testing.assert_frame_equal(pd.read_parquet(paths.logs), memory.logs)
    pd.testing.assert_frame_equal(pd.read_parquet(paths.users), memory.users)
    pd.testing.assert_frame_equal(pd.read_parquet(paths.edges), memory.edges)
    loaded = load_truth(paths.root)
    pd.testing.assert_frame_equal(loaded.users, small_campaign.users)
    pd.testing.assert_frame_equal(loaded.interactions, small_campaign.interactions)
    assert loaded.n_log_rows == small_campaign.n_log_rows == len(memory.logs)
    assert len(list(paths.logs.glob("part-*.parquet"))) == 3  # one per chunk of 1,000 users


def test_logs_follow_the_decision_log_contract(medium):
    logs = medium.logs
    assert {"user_id", "arm", "reward", "propensity", "cost", "day"} <= set(logs.columns)
    assert set(logs["arm"].unique()) <= set(medium.truth.world.arm_labels)
    assert ((logs["propensity"] > 0) & (logs["propensity"] <= 1)).all()
    assert set(np.unique(logs["reward"])) <= {0.0, 1.0}
    assert (logs["cost"] >= 0).all()
    assert not logs.duplicated(["user_id", "day"]).any()


# ------------------------------------------------------------------ roles
def test_only_modifiers_move_arm_effects():
    world = CampaignWorld.from_config(CampaignConfig(), random_state=5)
    users = world.draw_users(0, 0, 500)
    effects = world.arm_effects(users)
    users.prognostic_signal = users.prognostic_signal + 3.0
    np.testing.assert_array_equal(world.arm_effects(users), effects)  # prognostic: no effect on tau
    assert np.all(np.argmax(world.response_probability(users), axis=1) == world.best_arm(users))
    for m in range(users.modifier_signal.shape[1]):
        shifted = world.draw_users(0, 0, 500)
        shifted.modifier_signal[:, m] += 1.0
        delta = world.arm_effects(shifted) - effects
        assert np.all(delta[:, 0] == 0) and np.all(np.abs(delta[:, 1:]) > 0.05)


def test_every_modifier_changes_the_best_arm_and_no_other_feature_does(medium):
    truth = medium.truth
    users = medium.users.merge(truth.users[["user_id", "best_arm"]], on="user_id")
    assert truth.users["best_arm"].nunique() >= 3
    for role, expect_dependence in ((MODIFIER, True), (PROGNOSTIC, False), (NOISE, False)):
        for feature in truth.features_with_role(role):
            column = users[feature]
            binned = (pd.qcut(column.rank(method="first"), 5, labels=False) if column.nunique() > 10
                      else column.astype(str))
            table = pd.crosstab(binned, users["best_arm"])
            p_value = stats.chi2_contingency(table)[1]
            if expect_dependence:
                assert p_value < 1e-6, (feature, p_value)
            else:
                assert p_value > 1e-4, (feature, p_value)


def test_prognostic_features_predict_reward_and_noise_does_not(medium):
    logs, truth = medium.logs, medium.truth
    n = len(logs)
    for feature in truth.features_with_role(PROGNOSTIC) + truth.features_with_role(NOISE):
        values = logs[feature]
        if values.dtype.kind not in "fi":
            values = values.map(values.value_counts(normalize=True))  # a categorical as its level frequency
        ok = values.notna()
        rho = stats.spearmanr(values[ok], logs.loc[ok, "reward"]).statistic
        if feature in truth.features_with_role(PROGNOSTIC):
            if feature != "age_band":
                assert abs(rho) > 0.03, feature
        else:
            assert abs(rho) < 4 / np.sqrt(n), feature


def test_missing_values_only_where_declared(medium):
    truth = medium.truth
    declared = set(truth.features.loc[truth.features["can_be_missing"], "feature"])
    n = len(medium.users)
    for feature in truth.features["feature"]:
        share = medium.users[feature].isna().mean()
        if feature in declared:
            assert abs(share - 0.05) < 4 * np.sqrt(0.05 * 0.95 / n), feature
        else:
            assert share == 0, feature


# ------------------------------------------------------------------ logging policy
def test_propensities_are_the_logging_policy(medium):
    logs, truth_logs, labels = medium.logs, medium.truth_logs, medium.truth.world.arm_labels
    logging_p = truth_logs[[f"logging_p_{a}" for a in labels]].to_numpy()
    np.testing.assert_allclose(logging_p.sum(axis=1), 1.0, rtol=1e-12)
    chosen = logs["arm"].map({a: k for k, a in enumerate(labels)}).to_numpy()
    np.testing.assert_array_equal(logs["propensity"].to_numpy(), logging_p[np.arange(len(logs)), chosen])
    assert np.all(logs.loc[logs["randomized"], "propensity"] == 1 / len(labels))
    assert logs.loc[~logs["randomized"], "propensity"].std() > 0.05  # biased by features
    observed = np.bincount(chosen, minlength=len(labels))
    expected = logging_p.sum(axis=0)
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_ips_per_arm_recovers_true_arm_values(medium):
    """Known answer: IPS of "always arm k" equals the mean true mu_k over the logged contexts."""
    profile = ArmProfile(randomized="randomized")
    table = profile.finalize(profile.partial(medium.logs))
    for arm, row in table.iterrows():
        truth = medium.truth_logs[f"mu_{arm}"].mean()
        assert abs(row["ips_value"] - truth) < 4 * row["ips_se"], arm


def test_rewards_are_drawn_from_the_true_response(medium):
    labels = medium.truth.world.arm_labels
    mu = medium.truth_logs[[f"mu_{a}" for a in labels]].to_numpy()
    chosen = medium.logs["arm"].map({a: k for k, a in enumerate(labels)}).to_numpy()
    expected = mu[np.arange(len(chosen)), chosen]
    residual = medium.logs["reward"].to_numpy() - expected
    assert abs(residual.mean()) < 4 * np.sqrt(np.mean(expected * (1 - expected)) / len(expected))


# ------------------------------------------------------------------ multi-day carry-over
def test_a_coupon_today_raises_activity_tomorrow():
    """On a fully randomized campaign, users given a coupon on day 0 are more often active on day 1."""
    campaign = simulate_campaign(CampaignConfig(n_users=40_000, n_days=2, randomized_share=1.0, avg_degree=0),
                                 random_state=9)
    logs = campaign.logs
    day0 = logs[logs["day"] == 0].set_index("user_id")
    active_next = day0.index.isin(logs.loc[logs["day"] == 1, "user_id"])
    treated = (day0["arm"] != "control").to_numpy()
    lift = active_next[treated].mean() - active_next[~treated].mean()
    se = np.sqrt(active_next[treated].var() / treated.sum() + active_next[~treated].var() / (~treated).sum())
    assert lift > 3 * se


def test_habit_carries_purchases_forward(medium):
    logs = medium.logs
    later = logs[logs["day"] >= 2]
    assert later.groupby(later["recent_purchases"] > 0)["reward"].mean().diff().iloc[-1] > 0.03
    assert (medium.truth_logs.loc[logs["day"] == 0, "habit"] == 0).all()


# ------------------------------------------------------------------ graph
def test_social_graph_has_communities(medium):
    edges, truth = medium.edges, medium.truth
    friends = edges[edges["kind"] == "friend"]
    assert (friends["src"] < friends["dst"]).all()
    assert not friends.duplicated(["src", "dst"]).any()
    n = len(medium.users)
    assert abs(2 * len(friends) / n - 10.0) < 1.0  # mean degree ~ avg_degree
    community = truth.users["community"].to_numpy()
    crossing = (community[friends["src"]] != community[friends["dst"]]).mean()
    assert 0.05 < crossing < 0.15  # mixing = 0.1
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(friends[["src", "dst"]].itertuples(index=False))
    partition = pd.Series(range(n)).groupby(community).apply(set).tolist()
    assert nx.community.modularity(graph, partition) > 0.7


def test_hidden_interactions_differ_from_friends_but_are_partly_predictable(medium):
    edges, hidden = medium.edges, medium.truth.interactions
    n = len(medium.users)
    key = lambda frame: set((frame["src"] * n + frame["dst"]).tolist())  # noqa: E731
    friends, invites = key(edges[edges["kind"] == "friend"]), key(edges[edges["kind"] == "invite"])
    interactions = key(hidden)
    on_friend_edges = len(interactions & friends) / len(interactions)
    assert 0.5 < on_friend_edges < 0.99  # mostly along friendships, but not only
    assert len(interactions) < 0.6 * len(friends)  # most friendships carry no interaction
    # Past invitations predict current interactions among friends: a lift, not a copy.
    invited_friends = friends & invites
    rate_invited = len(invited_friends & interactions) / len(invited_friends)
    rate_not = len((friends - invites) & interactions) / len(friends - invites)
    assert rate_invited > 1.5 * rate_not
    assert rate_invited < 0.9


def test_dormant_ties_add_random_friendships_and_change_nothing_else():
    """Dormant ties are uniformly random observed friendships drawn from their own stream: the hidden interactions,
    past invitations, communities and every real friendship stay exactly as without them."""
    config = dict(n_users=4_000, n_days=1, community_size=100)
    plain = simulate_campaign(CampaignConfig(**config), random_state=5)
    dormant = simulate_campaign(CampaignConfig(**config, dormant_ties=1.0), random_state=5)
    pd.testing.assert_frame_equal(plain.truth.interactions, dormant.truth.interactions)
    pd.testing.assert_frame_equal(plain.truth.users, dormant.truth.users)
    pd.testing.assert_frame_equal(plain.logs, dormant.logs)
    n = 4_000
    key = lambda frame: set((frame["src"] * n + frame["dst"]).tolist())  # noqa: E731
    assert key(plain.edges[plain.edges["kind"] == "invite"]) == key(dormant.edges[dormant.edges["kind"] == "invite"])
    real = key(plain.edges[plain.edges["kind"] == "friend"])
    both = key(dormant.edges[dormant.edges["kind"] == "friend"])
    extra = both - real
    assert real <= both and len(extra) == len(real)  # ratio 1: as many dormant ties as friendships
    community = plain.truth.users["community"].to_numpy()
    extra = np.array(sorted(extra))
    crossing = np.mean(community[extra // n] != community[extra % n])
    assert crossing > 0.9  # uniformly random pairs: almost all across the 40 communities


def test_config_rejects_bad_arms():
    with pytest.raises(ValueError, match="control and must cost 0"):
        CampaignConfig(arms={"coupon": 5.0, "control": 0.0})
    with pytest.raises(ValueError, match="at least 2 arms"):
        CampaignConfig(arms={"control": 0.0})
    with pytest.raises(ValueError, match="extra"):
        CampaignConfig(n_userz=5)


def test_campaign_days_run_the_campaign_under_any_policy_one_day_at_a_time():
    """The stepper behind `simulate` (and a closed loop): a policy giving every active user its best arm is drawn
    with propensity 1, takes that arm, and buys more than the logging policy on the same users and draws."""
    config = CampaignConfig(n_users=4_000, n_days=6, chunk_users=4_000)
    world = CampaignWorld.from_config(config, random_state=3)
    users = world.draw_users(0, 0, 4_000)
    logged = world.simulate(users, 0)
    best = np.eye(len(world.arm_base))[world.best_arm(users)]
    days = CampaignDays.start(world, users, 0)
    rows = []
    for _ in range(config.n_days):
        active = days.active()
        rows.append(days.respond(active, best[active]))
    served = {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}
    assert (served["propensity"] == 1.0).all() and set(np.unique(served["day"])) == set(range(config.n_days))
    np.testing.assert_array_equal(served["arm"], world.best_arm(users)[served["user_id"] - users.user_id[0]])
    assert served["mu"].max(axis=1).mean() > (logged["mu"] * logged["logging_p"]).sum(axis=1).mean()
    assert served["reward"].mean() > logged["reward"].mean()


def test_the_feature_ceiling_averages_only_over_what_the_logs_do_not_hold():
    """The ceiling's arm is the oracle's where every modifier is logged; where `basket_value` is missing it is the
    arm with the highest response averaged over the signal's N(0, 1) marginal (checked by Monte Carlo); under hidden
    targeting it is the arm of the allocation benchmark's ceiling (the response averaged over the affinity)."""
    world = CampaignWorld.from_config(CampaignConfig(n_users=20_000, missing_rate=0.2), random_state=3)
    users = world.draw_users(0, 0, 20_000)
    habit = np.random.default_rng(0).exponential(1.0, 20_000)
    ceiling = world.ceiling_arm(users, habit)
    missing = np.isnan(users.columns["basket_value"].astype(float))
    assert 0.15 < missing.mean() < 0.25
    np.testing.assert_array_equal(ceiling[~missing], world.best_arm(users)[~missing])
    assert (ceiling[missing] != world.best_arm(users)[missing]).any()
    rows = np.flatnonzero(missing)[:200]
    draws = np.random.default_rng(1).standard_normal(200_000)
    known = users.modifier_signal[rows].copy()
    known[:, 3] = 0.0
    logit = (world.baseline_logit(users)[rows] + world.config.habit_effect * habit[rows])[:, None] \
        + world.arm_base + known @ world.effects.T
    expected = np.stack([(1 / (1 + np.exp(-(logit[:, [k]] + world.effects[k, 3] * draws)))).mean(axis=1)
                         for k in range(len(world.arm_base))], axis=1)
    top_two = np.sort(expected, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 1e-3  # Monte Carlo error is about 1e-4
    assert clear.sum() > 150
    np.testing.assert_array_equal(ceiling[rows][clear], np.argmax(expected, axis=1)[clear])
    # its value: at most the oracle's
    mu = world.response_probability(users, habit)
    index = np.arange(len(mu))
    assert mu[index, ceiling].mean() <= mu.max(axis=1).mean()

    hidden = CampaignWorld.from_config(CampaignConfig(n_users=5_000, missing_rate=0.0, hidden_targeting=0.5,
                                                      chunk_users=5_000), random_state=3)
    from benchmarks.bench_allocation import _feature_ceiling

    np.testing.assert_array_equal(hidden.ceiling_arm(hidden.draw_users(0, 0, 5_000)),
                                  np.argmax(_feature_ceiling(hidden, 5_000, 0.5), axis=1))


def test_contagion_brings_back_the_partners_of_yesterdays_buyers_and_is_off_by_default():
    """A user whose every partner bought yesterday gains `strength` on today's activity logit; without contagion (or
    with strength 0) the days are drawn exactly as before."""
    from pipelines.synthetic.world import Contagion

    config = CampaignConfig(n_users=3_000, n_days=3, chunk_users=3_000)
    world = CampaignWorld.from_config(config, random_state=3)
    users = world.draw_users(0, 0, 3_000)
    src, dst = np.arange(0, 3_000, 2), np.arange(1, 3_000, 2)  # pairs (0, 1), (2, 3), ...
    spread = Contagion.of_interactions(src, dst, np.ones(src.size), 3_000, 2.0)
    bought = np.zeros(3_000)
    bought[::2] = 1.0
    np.testing.assert_array_equal(spread.pull(bought), np.where(np.arange(3_000) % 2 == 1, 2.0, 0.0))

    def run(contagion):
        days, rewards = CampaignDays.start(world, users, 0, contagion=contagion), []
        for _ in range(config.n_days):
            active = days.active()
            rewards.append(days.respond(active, world.logging_probabilities(users)[active])["reward"])
        return rewards

    plain, off = world.simulate(users, 0), run(Contagion.of_interactions(src, dst, np.ones(src.size), 3_000, 0.0))
    np.testing.assert_array_equal(plain["reward"], np.concatenate(off))
    assert sum(day.size for day in run(spread)) > sum(day.size for day in off)
