"""Exposure probabilities: closed forms, exact enumeration of every assignment, and empirical frequencies over many
salted assignments (z-scores with the binomial standard error)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from abtest import (
    assign,
    build_graph,
    cluster_graph,
    exposure_probabilities,
    exposure_units,
    graph_from_networkx,
    realized_exposure,
)
from abtest.simulate import planted_partition
from tests.abtest.helpers import cluster_frame, enumerated_exposure, nx_closed_neighbourhood_clusters

CONDITIONS = ["full", ("fractional", 0.5), ("absolute", 2)]
DRAWS = 2000


@pytest.fixture(scope="module")
def small():
    """200 users, mean degree 2.5, max 7, 15 isolated: exposure probabilities are not tiny."""
    graph = planted_partition(40, 5, 0.4, 0.004, random_state=3)
    return graph, cluster_graph(graph, random_state=0)


def z_scores(probability: np.ndarray, frequency: np.ndarray, draws: int) -> np.ndarray:
    """Binomial z-scores where 0 < P < 1; where P is 0 or 1 the frequency must equal it exactly."""
    exact = (probability <= 0) | (probability >= 1)
    np.testing.assert_array_equal(frequency[exact], probability[exact])
    p = probability[~exact]
    return (frequency[~exact] - p) / np.sqrt(p * (1 - p) / draws)


def z_bound(n_scores: int, family_alpha: float = 1e-3) -> float:
    """Bonferroni bound on max |z| of n (dependent) normal scores: exceeded with probability < family_alpha."""
    return float(stats.norm.isf(family_alpha / (2 * n_scores)))


def empirical(graph, groups: np.ndarray, condition) -> tuple[np.ndarray, np.ndarray]:
    """Share of the draws (rows of `groups`) in which each user is exposed to treatment / control."""
    e1, e0 = np.zeros(graph.n_users), np.zeros(graph.n_users)
    for row in groups:
        a, b = realized_exposure(graph, row, condition=condition)
        e1 += a
        e0 += b
    return e1 / len(groups), e0 / len(groups)


def check_frequencies(graph, probabilities: list[pd.DataFrame], groups: np.ndarray) -> float:
    scores = []
    for condition, table in zip(CONDITIONS, probabilities, strict=True):
        f1, f0 = empirical(graph, groups, condition)
        scores += [z_scores(table["exposure_p1"].to_numpy(), f1, len(groups)),
                   z_scores(table["exposure_p0"].to_numpy(), f0, len(groups))]
    scores = np.concatenate(scores)
    assert np.abs(scores).max() < z_bound(len(scores)), np.abs(scores).max()
    return float(np.abs(scores).max())


@pytest.mark.parametrize(("design", "p"), [("bernoulli", 0.5), ("bernoulli", 0.3), ("user", 0.5)])
def test_probabilities_match_frequencies_over_salts(small, design, p):
    graph, clusters = small
    groups = np.array([assign(clusters, salt=f"salt-{k}", p=p, design=design)["group"].to_numpy()
                       for k in range(DRAWS)])
    tables = [exposure_probabilities(graph, clusters, p=p, condition=condition, design=design)
              for condition in CONDITIONS]
    check_frequencies(graph, tables, groups)


def test_paired_probabilities_match_frequencies_with_pairing_held_fixed(small):
    """assign's pairing depends on the salt (the hash breaks size ties), so fix one pairing and flip each pair's
    coin here: exactly one cluster of a pair treated, a cluster without partner Bernoulli(1/2)."""
    graph, clusters = small
    table = assign(clusters, salt="pairing", design="paired")
    cluster, pair = table["cluster"].to_numpy(), table["pair"].to_numpy()
    pair_ids, pair_of_user = np.unique(pair, return_inverse=True)
    rng = np.random.default_rng(11)
    coin = rng.random((DRAWS, len(pair_ids))) < 0.5
    # within a pair, the cluster equal to the pair id (the smaller one) is treated on heads, the other on tails;
    # a lone cluster (its own pair id) is treated on heads
    is_first = cluster == pair
    groups = np.where(is_first, coin[:, pair_of_user], ~coin[:, pair_of_user]).astype(int)
    tables = [exposure_probabilities(graph, table, p=0.5, condition=condition, design="paired")
              for condition in CONDITIONS]
    check_frequencies(graph, tables, groups)
    # the design really is paired: in every draw one cluster of each pair is treated
    two = np.flatnonzero(np.bincount(pair_of_user[np.unique(cluster, return_index=True)[1]]) == 2)
    assert len(two) >= 10


def test_paired_probabilities_match_assign_over_salts_when_sizes_are_distinct():
    """Clusters of distinct sizes 2..13 (12 clusters): the pairing no longer depends on the salt, so assign's own
    coin is used."""
    rng = np.random.default_rng(5)
    sizes = np.arange(2, 14)
    cluster = np.repeat(np.arange(12), sizes)
    source = nx.Graph()
    source.add_nodes_from(range(len(cluster)))
    start = np.concatenate([[0], np.cumsum(sizes)])
    for c in range(12):
        source.add_edges_from((start[c] + i, start[c] + i + 1) for i in range(sizes[c] - 1))  # a path per cluster
    for _ in range(25):
        source.add_edge(*(int(x) for x in rng.integers(0, len(cluster), 2)))
    source.remove_edges_from(nx.selfloop_edges(source))
    graph = graph_from_networkx(source)
    frame = cluster_frame(graph, cluster)
    table = assign(frame, salt="fixed", design="paired")
    groups, pairs = [], []
    for k in range(1000):
        drawn = assign(frame, salt=f"salt-{k}", design="paired")
        pairs.append(drawn["pair"].to_numpy())
        groups.append(drawn["group"].to_numpy())
    assert (np.array(pairs) == table["pair"].to_numpy()).all()
    tables = [exposure_probabilities(graph, table, p=0.5, condition=condition, design="paired")
              for condition in CONDITIONS]
    check_frequencies(graph, tables, np.array(groups))


@pytest.mark.parametrize("p", [0.5, 0.3, 0.85])
def test_full_exposure_is_p_to_the_number_of_clusters_touched(small, p):
    graph, clusters = small
    table = exposure_probabilities(graph, clusters, p=p, condition="full")
    touched = nx_closed_neighbourhood_clusters(graph, clusters.cluster)
    np.testing.assert_array_equal(table["n_units_touched"], touched)
    np.testing.assert_allclose(table["exposure_p1"], p ** touched, rtol=1e-12, atol=0)
    np.testing.assert_allclose(table["exposure_p0"], (1 - p) ** touched, rtol=1e-12, atol=0)


def test_user_design_full_exposure_is_p_to_degree_plus_one(small):
    graph, clusters = small
    table = exposure_probabilities(graph, clusters, p=0.4, condition="full", design="user")
    np.testing.assert_array_equal(table["n_units_touched"], graph.degree + 1)
    np.testing.assert_allclose(table["exposure_p1"], 0.4 ** (graph.degree + 1), rtol=1e-12)


def test_exposure_units_by_hand():
    # path 0-1-2-3-4 plus an isolated 5; clusters 7 7 3 3 9 9 (ids need not be 0..k-1), pairs {3, 7} and {9}
    graph = build_graph(pd.DataFrame({"src": [0, 1, 2, 3], "dst": [1, 2, 3, 4]}), np.arange(6))
    table = pd.DataFrame({"user_id": np.arange(6), "cluster": [7, 7, 3, 3, 9, 9], "pair": [3, 3, 3, 3, 9, 9]})
    clusters = exposure_units(graph, table, design="bernoulli").toarray()  # coins 3, 7, 9 -> columns 0, 1, 2
    assert clusters.tolist() == [[0, 1, 0], [1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 1], [0, 0, 1]]
    pairs = exposure_units(graph, table, design="paired").toarray()  # coins 3, 9
    assert pairs.tolist() == [[1, 0], [1, 0], [1, 0], [1, 1], [1, 1], [0, 1]]
    users = exposure_units(graph, table, design="user").toarray()  # the closed neighbourhood
    closed = [{0, 1}, {0, 1, 2}, {1, 2, 3}, {2, 3, 4}, {3, 4}, {5}]
    assert [set(np.flatnonzero(row).tolist()) for row in users] == closed


def test_exposure_units_rows_count_the_clusters_touched(small):
    graph, clusters = small
    table = exposure_probabilities(graph, clusters, p=0.5, condition="full")
    coins = exposure_units(graph, clusters, design="bernoulli")
    np.testing.assert_array_equal(np.asarray(coins.sum(axis=1)).ravel(), table["n_units_touched"])


@pytest.mark.parametrize("design", ["bernoulli", "user", "paired"])
def test_fractional_one_equals_full_exactly(small, design):
    graph, clusters = small
    frame = assign(clusters, salt="x", design="paired") if design == "paired" else clusters
    pd.testing.assert_frame_equal(
        exposure_probabilities(graph, frame, p=0.5, condition=("fractional", 1.0), design=design),
        exposure_probabilities(graph, frame, p=0.5, condition="full", design=design))


@pytest.mark.parametrize("condition", ["full", ("fractional", 0.3), ("absolute", 0)])
@pytest.mark.parametrize("design", ["bernoulli", "user", "paired"])
def test_isolated_users_are_exposed_whenever_in_their_arm(small, condition, design):
    graph, clusters = small
    frame = assign(clusters, salt="x", design="paired") if design == "paired" else clusters
    p = 0.5 if design == "paired" else 0.35
    table = exposure_probabilities(graph, frame, p=p, condition=condition, design=design)
    isolated = graph.degree == 0
    assert isolated.sum() >= 5
    np.testing.assert_allclose(table["exposure_p1"][isolated], p)
    np.testing.assert_allclose(table["exposure_p0"][isolated], 1 - p)
    np.testing.assert_array_equal(table["n_units_touched"][isolated], 1)


def test_absolute_zero_is_the_arm_probability_for_everyone(small):
    graph, clusters = small
    table = exposure_probabilities(graph, clusters, p=0.3, condition=("absolute", 0))
    np.testing.assert_allclose(table["exposure_p1"], 0.3)
    np.testing.assert_allclose(table["exposure_p0"], 0.7)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_absolute_k_above_degree_is_never_exposed(small, k):
    graph, clusters = small
    table = exposure_probabilities(graph, clusters, p=0.5, condition=("absolute", k))
    short = graph.degree < k
    assert short.any() and (~short).any()
    assert (table["exposure_p1"][short] == 0).all() and (table["exposure_p0"][short] == 0).all()
    assert (table["exposure_p1"][~short] > 0).all()


def test_paired_full_exposure_is_impossible_when_both_clusters_of_a_pair_are_touched():
    # clusters 0 = {0, 1}, 1 = {2, 3}: sizes tie, 2 clusters -> one pair; user 1 touches both clusters
    graph = build_graph(pd.DataFrame({"src": [0, 1, 2], "dst": [1, 2, 3]}))
    frame = assign(cluster_frame(graph, [0, 0, 1, 1]), salt="x", design="paired")
    assert frame["pair"].nunique() == 1
    table = exposure_probabilities(graph, frame, p=0.5, condition="full", design="paired")
    np.testing.assert_allclose(table["exposure_p1"], [0.5, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(table["exposure_p0"], [0.5, 0.0, 0.0, 0.5])
    bern = exposure_probabilities(graph, frame, p=0.5, condition="full", design="bernoulli")
    np.testing.assert_allclose(bern["exposure_p1"], [0.5, 0.25, 0.25, 0.5])


def test_realized_exposure_by_hand():
    # path 0-1-2-3 plus an isolated 4; groups 1 1 0 1 0
    graph = build_graph(pd.DataFrame({"src": [0, 1, 2], "dst": [1, 2, 3]}), np.arange(5))
    group = np.array([1, 1, 0, 1, 0])
    e1, e0 = realized_exposure(graph, group, condition="full")
    assert e1.tolist() == [True, False, False, False, False]
    assert e0.tolist() == [False, False, False, False, True]
    e1, e0 = realized_exposure(graph, group, condition=("fractional", 0.5))
    assert e1.tolist() == [True, True, False, False, False]
    assert e0.tolist() == [False, False, False, False, True]  # user 2: 0 of 2 neighbours in control
    e1, e0 = realized_exposure(graph, group, condition=("absolute", 1))
    assert e1.tolist() == [True, True, False, False, False]
    assert e0.tolist() == [False, False, False, False, False]


@pytest.mark.parametrize("condition", ["full", ("fractional", 0.4), ("fractional", 0.75), ("absolute", 1),
                                       ("absolute", 3)])
@pytest.mark.parametrize(("design", "p"), [("bernoulli", 0.5), ("bernoulli", 0.2), ("paired", 0.5)])
def test_karate_club_matches_enumeration_of_every_assignment(condition, design, p):
    graph = graph_from_networkx(nx.karate_club_graph(), weight=None)
    clusters = cluster_graph(graph, random_state=0, max_cluster_size=8)  # 6 clusters: 64 assignments
    assert clusters.n_clusters <= 8
    frame = assign(clusters, salt="pairs", design="paired") if design == "paired" else clusters.to_frame()
    table = exposure_probabilities(graph, frame, p=p, condition=condition, design=design)
    pair = frame["pair"].to_numpy() if design == "paired" else None
    p1, p0 = enumerated_exposure(graph, clusters.cluster, p, condition, design, pair)
    np.testing.assert_allclose(table["exposure_p1"], p1, atol=1e-12)
    np.testing.assert_allclose(table["exposure_p0"], p0, atol=1e-12)


@pytest.mark.parametrize("condition", ["full", ("fractional", 0.5), ("absolute", 2)])
def test_user_design_matches_enumeration(condition):
    graph = graph_from_networkx(nx.petersen_graph())  # 10 users of degree 3: 1,024 assignments
    table = exposure_probabilities(graph, None, p=0.3, condition=condition, design="user")
    p1, p0 = enumerated_exposure(graph, np.zeros(10, dtype=int), 0.3, condition, "user")
    np.testing.assert_allclose(table["exposure_p1"], p1, atol=1e-12)
    np.testing.assert_allclose(table["exposure_p0"], p0, atol=1e-12)


def test_assignment_table_in_any_order_with_string_ids():
    edges = pd.DataFrame({"src": ["a", "b", "c", "d"], "dst": ["b", "c", "d", "e"]})
    graph = build_graph(edges)
    frame = pd.DataFrame({"user_id": ["e", "d", "c", "b", "a", "zz"], "cluster": [2, 1, 1, 0, 0, 3]})
    table = exposure_probabilities(graph, frame, p=0.5, condition="full")
    assert table["user_id"].tolist() == ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(table["n_units_touched"], [1, 2, 2, 2, 2])
