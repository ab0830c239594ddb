"""assign: deterministic in (cluster, salt), row-order free, whole clusters per arm, shares near p, paired and
network-test layouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from abtest import assign
from campaign_core import salted_uniform


def clustering(n_clusters: int, size: int, *, string_ids: bool = False) -> pd.DataFrame:
    users = np.arange(n_clusters * size)
    ids = np.array([f"u{u:05d}" for u in users]) if string_ids else users
    return pd.DataFrame({"user_id": ids, "cluster": users // size})


def unequal_clustering(seed: int = 0, n_clusters: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, n_clusters)
    return pd.DataFrame({"user_id": np.arange(sizes.sum()), "cluster": np.repeat(np.arange(n_clusters), sizes)})


def by_user(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("user_id").reset_index(drop=True)


def binomial_ok(successes: int, trials: int, p: float, z: float = 4.0) -> bool:
    return abs(successes - trials * p) <= z * np.sqrt(trials * p * (1 - p))


@pytest.mark.parametrize("design", ["bernoulli", "paired", "user", "network_test"])
@pytest.mark.parametrize("string_ids", [False, True])
def test_deterministic_and_independent_of_row_order(design, string_ids):
    frame = unequal_clustering(1)
    if string_ids:
        frame["user_id"] = [f"user-{u}" for u in frame["user_id"]]
    first = assign(frame, salt="spring", design=design)
    again = assign(frame, salt="spring", design=design)
    pd.testing.assert_frame_equal(first, again)
    shuffled = assign(frame.sample(frac=1.0, random_state=3), salt="spring", design=design)
    pd.testing.assert_frame_equal(by_user(first), by_user(shuffled))
    assert first["group"].isin([0, 1]).all() and first["group"].dtype == np.int64


@pytest.mark.parametrize("design", ["bernoulli", "paired", "user", "network_test"])
def test_different_salt_changes_groups(design):
    frame = clustering(400, 5)
    a = assign(frame, salt="salt-a", design=design)["group"].to_numpy()
    b = assign(frame, salt="salt-b", design=design)["group"].to_numpy()
    units = 400 if design in ("bernoulli", "paired") else None
    agree = np.mean(a == b)
    # independent draws agree about half the time (on units; users move with their clusters)
    if units:
        agree_units = np.mean(a[::5] == b[::5])
        assert binomial_ok(int(agree_units * units), units, 0.5)
    assert 0.35 < agree < 0.65


def test_clustering_object_and_frame_give_the_same_groups():
    from abtest import Clustering

    frame = unequal_clustering(2)
    clusters = Clustering(frame["user_id"].to_numpy(), frame["cluster"].to_numpy(), "louvain", 1.0, 0.0, 0)
    pd.testing.assert_frame_equal(assign(clusters, salt="x"), assign(frame, salt="x"))


@pytest.mark.parametrize("design", ["bernoulli", "paired"])
def test_all_users_of_a_cluster_share_a_group(design):
    frame = unequal_clustering(3)
    for salt in ("a", "b", "c"):
        groups = assign(frame, salt=salt, design=design)
        assert (groups.groupby("cluster")["group"].nunique() == 1).all()


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_bernoulli_treated_share_of_clusters_is_near_p(p):
    frame = clustering(3000, 2)
    groups = assign(frame, salt=f"share-{p}", p=p)
    treated_clusters = int(groups.groupby("cluster")["group"].first().sum())
    assert binomial_ok(treated_clusters, 3000, p)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_user_design_treated_share_of_users_is_near_p(p):
    frame = clustering(100, 50)
    groups = assign(frame, salt="users", p=p, design="user")
    assert binomial_ok(int(groups["group"].sum()), 5000, p)
    # users are randomized on their own: clusters are mixed
    assert (groups.groupby("cluster")["group"].nunique() == 2).mean() > 0.9


@pytest.mark.parametrize("string_ids", [False, True])
def test_groups_are_the_platform_hash_cut_at_p(string_ids):
    """Every coin is `campaign_core.salted_uniform` (tested in tests/test_campaign_core.py) cut at p, so an auditor
    can recompute the groups from the ids and the salt alone: cluster ids for the cluster designs, user ids for the
    user design, under the documented sub-salts for the network test."""
    frame = clustering(300, 3, string_ids=string_ids)
    cluster, user = frame["cluster"].to_numpy(), frame["user_id"].to_numpy()
    np.testing.assert_array_equal(assign(frame, salt="audit", p=0.3)["group"],
                                  (salted_uniform(cluster, "audit") < 0.3).astype(int))
    np.testing.assert_array_equal(assign(frame, salt="audit", p=0.3, design="user")["group"],
                                  (salted_uniform(user, "audit") < 0.3).astype(int))
    network = assign(frame, salt="audit", p=0.3, design="network_test")
    by_user = salted_uniform(cluster, "audit/design") < 0.5
    np.testing.assert_array_equal(network["design"], np.where(by_user, "user", "cluster"))
    want = np.where(by_user, salted_uniform(user, "audit") < 0.3, salted_uniform(cluster, "audit") < 0.3)
    np.testing.assert_array_equal(network["group"], want.astype(int))


def test_paired_one_treated_per_pair_and_pair_column():
    frame = unequal_clustering(4, n_clusters=61)  # odd: one cluster has no partner
    groups = assign(frame, salt="pairs", design="paired")
    per_cluster = groups.groupby("cluster").agg(group=("group", "first"), pair=("pair", "first"),
                                                size=("user_id", "size"))
    pair_sizes = per_cluster.groupby("pair").size()
    assert sorted(pair_sizes.value_counts().to_dict().items()) == [(1, 1), (2, 30)]
    for pair, members in per_cluster.groupby("pair"):
        assert pair == members.index.min()  # the pair id is the smaller cluster id
        if len(members) == 2:
            assert members["group"].sum() == 1
    # pairs are size-matched: consecutive in size order, so no pair spans a gap another cluster sits in
    paired = per_cluster[per_cluster["pair"].map(pair_sizes) == 2]
    spans = paired.groupby("pair")["size"].agg(["min", "max"])
    ordered = np.sort(per_cluster["size"].to_numpy())
    assert (spans["max"] - spans["min"]).sum() <= ordered[-1] - ordered[0]
    odd = per_cluster[per_cluster["pair"].map(pair_sizes) == 1]
    assert odd["size"].iloc[0] == ordered[-1]  # the largest cluster is the one out


def test_paired_treats_half_the_clusters_over_salts_when_sizes_are_distinct():
    """Distinct sizes fix the pairing; over salts each cluster is treated half the time (the coin is fair)."""
    sizes = np.arange(1, 12)  # 11 clusters of sizes 1..11: 5 pairs and the largest one out
    frame = pd.DataFrame({"user_id": np.arange(sizes.sum()), "cluster": np.repeat(np.arange(11), sizes)})
    draws = 800
    treated = np.array([assign(frame, salt=f"s{k}", design="paired").groupby("cluster")["group"].first().to_numpy()
                        for k in range(draws)])
    for c in range(11):
        assert binomial_ok(int(treated[:, c].sum()), draws, 0.5), (c, treated[:, c].mean())


def test_paired_odd_cluster_out_is_treated_half_the_time_with_tied_sizes():
    frame = pd.DataFrame({"user_id": np.arange(9), "cluster": np.arange(9) // 3})  # 3 clusters of 3
    draws = 800
    treated = np.array([assign(frame, salt=f"s{k}", design="paired").groupby("cluster")["group"].first().to_numpy()
                        for k in range(draws)])
    # every cluster should be treated with probability 1/2: 1.5 treated clusters per draw on average
    assert binomial_ok(int(treated.sum()), 3 * draws, 0.5), treated.mean(axis=0)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.2, 1.5, "0.5", None])
def test_p_outside_the_open_unit_interval_raises(p):
    with pytest.raises(ValueError, match="p: "):
        assign(clustering(4, 2), salt="x", p=p)


def test_paired_needs_p_one_half():
    with pytest.raises(ValueError, match="p must be 0.5"):
        assign(clustering(4, 2), salt="x", p=0.3, design="paired")
    assert len(assign(clustering(4, 2), salt="x", p=0.5, design="paired")) == 8


def test_network_test_layout():
    frame = clustering(400, 6)
    groups = assign(frame, salt="net", design="network_test")
    assert set(groups["design"]) == {"user", "cluster"}
    per_cluster = groups.groupby("cluster")["design"].agg(["first", "nunique"])
    assert (per_cluster["nunique"] == 1).all()  # a cluster is in one arm of the test
    assert binomial_ok(int((per_cluster["first"] == "user").sum()), 400, 0.5)
    in_user = groups[groups["design"] == "user"]
    in_cluster = groups[groups["design"] == "cluster"]
    assert (in_cluster.groupby("cluster")["group"].nunique() == 1).all()
    mixed = in_user.groupby("cluster")["group"].nunique() == 2
    assert mixed.mean() > 0.8  # 1 - 2 / 2^6 of 6-user clusters have both groups when users are randomized
    assert binomial_ok(int(in_user["group"].sum()), len(in_user), 0.5)
    assert binomial_ok(int(in_cluster.groupby("cluster")["group"].first().sum()), in_cluster["cluster"].nunique(), 0.5)


def test_assignment_table_columns():
    frame = clustering(10, 3)
    assert list(assign(frame, salt="x").columns) == ["user_id", "cluster", "group"]
    assert list(assign(frame, salt="x", design="paired").columns) == ["user_id", "cluster", "group", "pair"]
    assert list(assign(frame, salt="x", design="network_test").columns) == ["user_id", "cluster", "group", "design"]
    assert list(assign(frame, salt="x", design="user").columns) == ["user_id", "cluster", "group"]


def test_a_table_whose_clusters_hold_both_groups_is_read_as_user_randomized():
    """The readout and the diagnostics infer the design from the table: without a `design` or `pair` column, a
    cluster with users in both groups can only come from user randomization (the exposure probabilities and the
    standard errors then count users, not clusters)."""
    from abtest.validation import infer_design

    frame = pd.DataFrame({"user_id": np.arange(400), "cluster": np.arange(400) // 20})
    assert infer_design(assign(frame, salt="u", design="user"), None) == "user"
    assert infer_design(assign(frame, salt="u", design="bernoulli"), None) == "bernoulli"
    assert infer_design(assign(frame, salt="u", design="bernoulli"), "user") == "user"  # a named design wins
