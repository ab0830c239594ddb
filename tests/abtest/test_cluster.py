"""cluster_graph: modularity against networkx, Louvain backends, reproducibility, the size cap, components, labels."""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from abtest import SingleClusterWarning, build_graph, cluster_graph, graph_from_networkx, modularity
from abtest.cluster import canonical_labels
from abtest.simulate import planted_partition, watts_strogatz

BACKENDS = ["networkx", "igraph"]


def communities(labels: np.ndarray) -> list[set[int]]:
    return [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]


def as_partition(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(c) for c in communities(labels)}


@pytest.fixture(scope="module")
def planted():
    """20 communities of 25 users, dense inside (0.4), sparse across (0.005); nodes numbered by community."""
    return planted_partition(20, 25, 0.4, 0.005, random_state=1)


@pytest.fixture(scope="module")
def weighted_graph():
    rng = np.random.default_rng(7)
    source = nx.gnm_random_graph(60, 200, seed=7)
    for u, v in source.edges:
        source[u][v]["weight"] = float(rng.uniform(0.1, 5.0))
    return graph_from_networkx(source)


@pytest.mark.parametrize("resolution", [1.0, 0.4, 2.5])
def test_modularity_equals_networkx_on_weighted_graph(weighted_graph, resolution):
    rng = np.random.default_rng(int(resolution * 10))
    reference = weighted_graph.to_networkx()
    for k in (1, 3, 7, 60):
        labels = rng.integers(0, k, weighted_graph.n_users) if k < 60 else np.arange(60)
        labels = canonical_labels(labels)
        want = nx.community.modularity(reference, communities(labels), weight="weight", resolution=resolution)
        assert modularity(weighted_graph, labels, resolution=resolution) == pytest.approx(want, abs=1e-12)


def test_clustering_reports_modularity_of_its_own_labels(weighted_graph):
    clusters = cluster_graph(weighted_graph, method="louvain", resolution=1.7, random_state=3)
    want = nx.community.modularity(weighted_graph.to_networkx(), communities(clusters.cluster), weight="weight",
                                   resolution=1.7)
    assert clusters.modularity == pytest.approx(want, abs=1e-12)
    assert clusters.method == "louvain" and clusters.resolution == 1.7 and clusters.random_state == 3
    summary = clusters.summary()
    assert summary["modularity"] == clusters.modularity and summary["n_clusters"] == clusters.n_clusters
    assert summary["n_users"] == weighted_graph.n_users and summary["cluster_size_max"] == clusters.sizes.max()
    assert summary["singleton_clusters"] == int((clusters.sizes == 1).sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_louvain_backends_reach_the_planted_modularity(planted, backend):
    planted_q = modularity(planted, np.arange(planted.n_users) // 25)
    clusters = cluster_graph(planted, method="louvain", random_state=0, backend=backend)
    assert clusters.modularity == pytest.approx(planted_q, abs=0.02)
    # and it recovers the planted communities (they are well separated): most pairs agree
    same_found = clusters.cluster[planted.src] == clusters.cluster[planted.dst]
    same_planted = planted.src // 25 == planted.dst // 25
    assert np.mean(same_found == same_planted) > 0.95


def test_backends_agree_with_each_other(planted):
    a = cluster_graph(planted, method="louvain", random_state=5, backend="networkx").modularity
    b = cluster_graph(planted, method="louvain", random_state=5, backend="igraph").modularity
    assert abs(a - b) < 0.02


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_gives_identical_clusters(backend):
    """Watts-Strogatz: different seeds give different partitions, so equality under one seed is informative."""
    graph = watts_strogatz(400, 6, 0.1, random_state=3)
    # interleaved: no state carried over
    first = cluster_graph(graph, method="louvain", random_state=0, backend=backend).cluster
    other = cluster_graph(graph, method="louvain", random_state=1, backend=backend).cluster
    again = cluster_graph(graph, method="louvain", random_state=0, backend=backend).cluster
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_auto_backend_uses_networkx_on_small_graphs(planted):
    np.testing.assert_array_equal(cluster_graph(planted, method="louvain", random_state=2).cluster,
                                  cluster_graph(planted, method="louvain", random_state=2, backend="networkx").cluster)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_cluster_size_on_planted_partition(planted, backend):
    clusters = cluster_graph(planted, method="louvain", random_state=0, backend=backend, max_cluster_size=10)
    assert clusters.sizes.max() <= 10
    assert clusters.sizes.sum() == planted.n_users
    # splitting happens inside the planted communities: at least 3 parts for each 25, not shattered into singletons
    assert 60 <= clusters.n_clusters <= 100
    inside = clusters.cluster[planted.src] == clusters.cluster[planted.dst]
    assert np.all(planted.src[inside] // 25 == planted.dst[inside] // 25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_cluster_size_on_a_clique(backend):
    clique = graph_from_networkx(nx.complete_graph(30))
    clusters = cluster_graph(clique, method="louvain", random_state=0, backend=backend, max_cluster_size=7)
    assert clusters.sizes.max() <= 7 and clusters.sizes.sum() == 30
    # all parts touch each other, so no two could be merged under the cap: at most one part is <= 7/2
    assert clusters.n_clusters <= 2 * 30 // 7 + 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_cluster_size_on_a_star(backend):
    star = graph_from_networkx(nx.star_graph(40))  # centre 0 and 40 leaves
    clusters = cluster_graph(star, method="louvain", random_state=0, backend=backend, max_cluster_size=5)
    assert clusters.sizes.max() <= 5 and clusters.sizes.sum() == 41
    assert clusters.sizes[clusters.cluster[0]] == 5  # the centre's cluster is filled up to the cap


@pytest.mark.parametrize("cap", [1, 3])
def test_max_cluster_size_small_caps(planted, cap):
    clusters = cluster_graph(planted, method="louvain", random_state=0, max_cluster_size=cap)
    assert clusters.sizes.max() <= cap


def test_connected_components_equal_networkx():
    source = nx.disjoint_union_all([nx.path_graph(5), nx.cycle_graph(7), nx.complete_graph(4), nx.empty_graph(3),
                                    nx.star_graph(6)])
    source.add_edge(0, 12)  # join the path with the clique
    graph = graph_from_networkx(source)
    clusters = cluster_graph(graph, method="connected_components")
    assert as_partition(clusters.cluster) == {frozenset(c) for c in nx.connected_components(source)}
    assert clusters.method == "connected_components"


def test_single_cluster_warns():
    graph = graph_from_networkx(nx.cycle_graph(12))
    with pytest.warns(SingleClusterWarning, match="all 12 users fell in one cluster"):
        clusters = cluster_graph(graph, method="connected_components")
    assert clusters.n_clusters == 1


def test_several_clusters_do_not_warn(planted):
    two_cycles = graph_from_networkx(nx.disjoint_union(nx.cycle_graph(6), nx.cycle_graph(5)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SingleClusterWarning)
        assert cluster_graph(two_cycles, method="connected_components").n_clusters == 2
        assert cluster_graph(planted, method="louvain", random_state=0).n_clusters > 1


def test_louvain_at_tiny_resolution_warns_single_cluster(planted):
    with pytest.warns(SingleClusterWarning, match="louvain"):
        assert cluster_graph(planted, method="louvain", resolution=0.01, random_state=0).n_clusters == 1


def test_canonical_labels_by_decreasing_size_ties_by_smallest_member():
    np.testing.assert_array_equal(canonical_labels(np.array([5, 5, 3, 3, 3, 9])), [1, 1, 0, 0, 0, 2])
    np.testing.assert_array_equal(canonical_labels(np.array([7, 7, 2, 2, 4])), [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(canonical_labels(np.array([2, 1, 0])), [0, 1, 2])
    assert canonical_labels(np.array([], dtype=int)).size == 0


@pytest.mark.parametrize("method", ["louvain", "connected_components"])
def test_cluster_labels_are_canonical(planted, method):
    graph = planted.subgraph(np.arange(300))  # 12 communities of 25 (some merged or split by Louvain)
    clusters = cluster_graph(graph, method=method, random_state=1, max_cluster_size=20)
    labels = clusters.cluster
    sizes = clusters.sizes
    assert np.all(np.diff(sizes) <= 0)
    first = np.array([np.flatnonzero(labels == c)[0] for c in range(clusters.n_clusters)])
    for c in range(clusters.n_clusters - 1):
        if sizes[c] == sizes[c + 1]:
            assert first[c] < first[c + 1]
    np.testing.assert_array_equal(canonical_labels(labels), labels)


def test_edges_table_input_equals_built_graph():
    rng = np.random.default_rng(3)
    edges = pd.DataFrame({"src": rng.integers(0, 80, 300), "dst": rng.integers(0, 80, 300)})
    edges = edges[edges["src"] != edges["dst"]].drop_duplicates()
    edges = edges[edges["src"] < edges["dst"]]
    users = pd.DataFrame({"user_id": np.arange(85)})
    from_table = cluster_graph(edges, users=users, random_state=4)
    from_graph = cluster_graph(build_graph(edges, users), random_state=4)
    np.testing.assert_array_equal(from_table.cluster, from_graph.cluster)
    assert from_table.user_ids.tolist() == list(range(85))
    frame = from_table.to_frame()
    assert list(frame.columns) == ["user_id", "cluster"] and len(frame) == 85


def test_higher_resolution_gives_more_clusters(planted):
    counts = [cluster_graph(planted, resolution=r, random_state=0).n_clusters for r in (0.3, 1.0, 20.0)]
    assert counts[0] < counts[1] == 20 < counts[2]


def test_graph_without_edges_gives_singletons():
    graph = build_graph(pd.DataFrame({"src": pd.Series([], dtype=int), "dst": pd.Series([], dtype=int)}),
                        np.arange(4))
    clusters = cluster_graph(graph)
    assert sorted(clusters.cluster.tolist()) == [0, 1, 2, 3]
    assert clusters.modularity == 0.0


def test_leiden_recovers_the_planted_communities(planted):
    planted_q = modularity(planted, np.arange(planted.n_users) // 25)
    clusters = cluster_graph(planted, method="leiden", random_state=0)
    assert clusters.method == "leiden"
    assert clusters.modularity == pytest.approx(planted_q, abs=0.02)
    assert as_partition(clusters.cluster) == as_partition(np.arange(planted.n_users) // 25)


def test_leiden_modularity_is_at_least_louvains_and_clusters_are_connected():
    """A rewired ring lattice has no planted answer: Leiden (Louvain plus refinement) must score no worse than
    Louvain, and its refinement guarantees that every cluster is connected."""
    graph = watts_strogatz(2_000, 8, 0.2, random_state=4)
    leiden = cluster_graph(graph, method="leiden", random_state=0)
    louvain = cluster_graph(graph, method="louvain", random_state=0, backend="igraph")
    assert leiden.modularity >= louvain.modularity - 0.005
    reference = graph.to_networkx()
    for members in communities(leiden.cluster):
        assert nx.is_connected(reference.subgraph(members))


def test_leiden_same_seed_same_clusters_and_size_cap():
    graph = watts_strogatz(400, 6, 0.1, random_state=3)
    first = cluster_graph(graph, method="leiden", random_state=0, max_cluster_size=15)
    other = cluster_graph(graph, method="leiden", random_state=1, max_cluster_size=15)
    again = cluster_graph(graph, method="leiden", random_state=0, max_cluster_size=15)
    np.testing.assert_array_equal(first.cluster, again.cluster)
    assert not np.array_equal(first.cluster, other.cluster)
    assert first.sizes.max() <= 15 and first.sizes.sum() == 400


def test_leiden_has_no_networkx_backend(planted):
    with pytest.raises(ValueError, match="backend: leiden runs on igraph only"):
        cluster_graph(planted, method="leiden", backend="networkx")


def test_leiden_is_the_default_method_of_the_library_and_of_the_assign_stage(planted):
    """Leiden is the default: it is the faster of the two at scale (RESULTS.md 7a) and its clusters are connected;
    Louvain stays available by name."""
    from pipelines.stages.assign import AssignConfig

    default = cluster_graph(planted, random_state=0)
    leiden = cluster_graph(planted, method="leiden", random_state=0)
    assert default.method == "leiden"
    np.testing.assert_array_equal(default.cluster, leiden.cluster)
    assert AssignConfig.model_fields["method"].default == "leiden"
    assert cluster_graph(planted, method="louvain", random_state=0).method == "louvain"
