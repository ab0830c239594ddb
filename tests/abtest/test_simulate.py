"""The simulator's outcome models and graph generators against hand computations and networkx."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from abtest import build_graph
from abtest.simulate import (
    LinearInMeans,
    ThresholdOutcome,
    lfr,
    planted_partition,
    treated_neighbour_share,
    watts_strogatz,
)


@pytest.fixture(scope="module")
def graph():
    """A weighted random graph with isolated users (edges table -> build_graph)."""
    rng = np.random.default_rng(2)
    source = nx.gnm_random_graph(150, 180, seed=2)
    edges = pd.DataFrame(list(source.edges), columns=["src", "dst"])
    edges["weight"] = rng.uniform(0.2, 3.0, len(edges))
    built = build_graph(edges, np.arange(150))
    assert (built.degree == 0).sum() >= 5
    return built


def nx_share(graph, treated: np.ndarray, weighted: bool) -> np.ndarray:
    nxg = graph.to_networkx()
    share = np.zeros(graph.n_users)
    for u in range(graph.n_users):
        total = sum(d["weight"] if weighted else 1.0 for _, _, d in nxg.edges(u, data=True))
        hits = sum((d["weight"] if weighted else 1.0) * treated[v] for _, v, d in nxg.edges(u, data=True))
        share[u] = hits / total if total else 0.0
    return share


@pytest.mark.parametrize("weighted", [False, True])
def test_treated_neighbour_share_equals_networkx(graph, weighted):
    treated = (np.random.default_rng(0).random(graph.n_users) < 0.4).astype(int)
    got = treated_neighbour_share(graph, treated, weighted=weighted)
    np.testing.assert_allclose(got, nx_share(graph, treated, weighted), rtol=1e-12)
    assert (got[graph.degree == 0] == 0).all()


@pytest.mark.parametrize("weighted", [False, True])
def test_linear_in_means_global_effect_equals_all_minus_none(graph, weighted):
    model = LinearInMeans(a=2.0, b=0.7, g=1.3, noise=0.5, weighted=weighted)
    everyone = model.outcomes(graph, np.ones(graph.n_users, dtype=int), random_state=9)
    nobody = model.outcomes(graph, np.zeros(graph.n_users, dtype=int), random_state=9)
    assert model.global_effect(graph) == pytest.approx(np.mean(everyone - nobody), rel=1e-12)
    assert model.global_effect(graph) < 0.7 + 1.3  # isolated users get b only


def test_linear_in_means_outcome_formula(graph):
    treated = (np.random.default_rng(1).random(graph.n_users) < 0.5).astype(int)
    model = LinearInMeans(a=1.0, b=0.5, g=2.0, noise=0.0)
    y = model.outcomes(graph, treated, random_state=0)
    np.testing.assert_allclose(y, 1.0 + 0.5 * treated + 2.0 * nx_share(graph, treated, False), rtol=1e-12)
    noisy = LinearInMeans(a=1.0, b=0.5, g=2.0, noise=1.0).outcomes(graph, treated, random_state=0)
    np.testing.assert_allclose(noisy - y, np.random.default_rng(0).standard_normal(graph.n_users), rtol=1e-12)


@pytest.mark.parametrize("theta", [0.25, 0.5, 1.0])
def test_threshold_global_effect_equals_all_minus_none(graph, theta):
    model = ThresholdOutcome(a=1.0, b=0.4, g=2.0, theta=theta, noise=1.0)
    everyone = model.outcomes(graph, np.ones(graph.n_users, dtype=int), random_state=4)
    nobody = model.outcomes(graph, np.zeros(graph.n_users, dtype=int), random_state=4)
    assert model.global_effect(graph) == pytest.approx(np.mean(everyone - nobody), rel=1e-12)


def test_threshold_outcome_formula(graph):
    treated = (np.random.default_rng(3).random(graph.n_users) < 0.5).astype(int)
    model = ThresholdOutcome(a=1.0, b=0.4, g=2.0, theta=0.5, noise=0.0)
    share = nx_share(graph, treated, False)
    expected = 1.0 + 0.4 * treated + 2.0 * ((share >= 0.5) & (graph.degree > 0))
    np.testing.assert_allclose(model.outcomes(graph, treated, random_state=0), expected)


@pytest.mark.parametrize("theta", [0.0, 1.5])
def test_threshold_outside_the_unit_interval_is_refused(theta):
    with pytest.raises(ValueError, match="theta"):
        ThresholdOutcome(a=1.0, b=0.4, g=2.0, theta=theta, noise=1.0)


def test_same_generator_seed_gives_the_same_experiment(graph):
    treated = np.arange(graph.n_users) % 2
    model = LinearInMeans()
    np.testing.assert_array_equal(model.outcomes(graph, treated, random_state=5),
                                  model.outcomes(graph, treated, random_state=5))


def test_planted_partition_is_the_networkx_graph():
    graph = planted_partition(6, 7, 0.5, 0.05, random_state=3)
    source = nx.planted_partition_graph(6, 7, 0.5, 0.05, seed=3)
    assert graph.n_users == 42
    assert {frozenset((int(graph.user_ids[s]), int(graph.user_ids[d]))) for s, d in zip(graph.src, graph.dst,
                                                                                         strict=True)} == \
        {frozenset(e) for e in source.edges}


def test_watts_strogatz_is_connected_with_n_k_over_2_edges():
    graph = watts_strogatz(200, 6, 0.2, random_state=1)
    assert graph.n_users == 200 and graph.n_edges == 600
    assert nx.is_connected(graph.to_networkx())


def test_lfr_generates_a_graph():
    graph = lfr(n=250, average_degree=5, min_community=20, random_state=10)
    assert graph.n_users == 250
