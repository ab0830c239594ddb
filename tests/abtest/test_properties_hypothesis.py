"""Property tests on random small inputs: exposure probabilities (bounds, monotone in q, q = 1 is full, exact
enumeration), assignment free of row order, graph building and modularity against networkx, canonical labels."""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abtest import (
    GraphInputWarning,
    SingleClusterWarning,
    assign,
    build_graph,
    cluster_graph,
    exposure_probabilities,
    graph_from_networkx,
    modularity,
)
from abtest.cluster import canonical_labels
from tests.abtest.helpers import cluster_frame, enumerated_exposure

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
QS = [0.1, 0.25, 1 / 3, 0.5, 0.6, 0.75, 0.9, 1.0]


@st.composite
def small_design(draw, max_users: int = 9, max_clusters: int = 5):
    """(graph, cluster labels) on up to `max_users` users: random edges (some isolated users) and clusters."""
    n = draw(st.integers(2, max_users))
    pairs = [(u, v) for u in range(n) for v in range(u + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=len(pairs), unique=True))
    edges = pd.DataFrame(chosen or [(0, 1)], columns=["src", "dst"])
    graph = build_graph(edges, np.arange(n))
    k = draw(st.integers(1, min(n, max_clusters)))
    cluster = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    return graph, canonical_labels(cluster)


@SETTINGS
@given(design=small_design(), p=st.floats(0.05, 0.95), kind=st.sampled_from(["bernoulli", "user"]))
def test_exposure_bounded_monotone_in_q_and_full_at_q_one(design, p, kind):
    graph, cluster = design
    frame = cluster_frame(graph, cluster)
    tables = [exposure_probabilities(graph, frame, p=p, condition=("fractional", q), design=kind) for q in QS]
    p1 = np.array([t["exposure_p1"].to_numpy() for t in tables])
    p0 = np.array([t["exposure_p0"].to_numpy() for t in tables])
    assert np.all((p1 >= 0) & (p1 <= 1)) and np.all((p0 >= 0) & (p0 <= 1))
    assert np.all(np.diff(p1, axis=0) <= 1e-12) and np.all(np.diff(p0, axis=0) <= 1e-12)
    assert np.all(p1 <= p + 1e-12) and np.all(p0 <= 1 - p + 1e-12)  # exposure needs the user in the arm
    full = exposure_probabilities(graph, frame, p=p, condition="full", design=kind)
    np.testing.assert_array_equal(p1[-1], full["exposure_p1"])
    np.testing.assert_array_equal(p0[-1], full["exposure_p0"])
    np.testing.assert_allclose(full["exposure_p1"], p ** full["n_units_touched"], rtol=1e-12)
    absolute = np.array([exposure_probabilities(graph, frame, p=p, condition=("absolute", k),
                                                design=kind)["exposure_p1"] for k in range(5)])
    assert np.all(np.diff(absolute, axis=0) <= 1e-12)


@SETTINGS
@given(design=small_design(max_users=8), p=st.floats(0.05, 0.95),
       condition=st.one_of(st.just("full"), st.tuples(st.just("fractional"), st.sampled_from(QS)),
                           st.tuples(st.just("absolute"), st.integers(0, 4))),
       kind=st.sampled_from(["bernoulli", "user", "paired"]), salt=st.text(min_size=1, max_size=4))
def test_exposure_equals_enumeration_of_every_assignment(design, p, condition, kind, salt):
    graph, cluster = design
    frame = cluster_frame(graph, cluster)
    pair = None
    if kind == "paired":
        p = 0.5
        frame = assign(frame, salt=salt, design="paired")
        pair = frame["pair"].to_numpy()
    table = exposure_probabilities(graph, frame, p=p, condition=condition, design=kind)
    p1, p0 = enumerated_exposure(graph, cluster, p, condition, kind, pair)
    np.testing.assert_allclose(table["exposure_p1"], p1, atol=1e-12)
    np.testing.assert_allclose(table["exposure_p0"], p0, atol=1e-12)


@SETTINGS
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=15), data=st.data(),
       design=st.sampled_from(["bernoulli", "paired", "user", "network_test"]), salt=st.text(min_size=1, max_size=6))
def test_assignment_does_not_depend_on_row_order(sizes, data, design, salt):
    cluster = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)  # arbitrary integer ids
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(len(cluster))], "cluster": cluster})
    order = data.draw(st.permutations(range(len(frame))))
    first = assign(frame, salt=salt, design=design).set_index("user_id").sort_index()
    shuffled = assign(frame.iloc[list(order)], salt=salt, design=design).set_index("user_id").sort_index()
    pd.testing.assert_frame_equal(first, shuffled)
    if design in ("bernoulli", "paired"):
        assert (first.groupby("cluster")["group"].nunique() == 1).all()
    if design == "paired":
        per_pair = first.groupby("cluster").first().groupby("pair")["group"].agg(["sum", "size"])
        assert ((per_pair["size"] == 1) | (per_pair["sum"] == 1)).all()


@SETTINGS
@given(edges=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(1, 5)), max_size=30))
def test_build_graph_equals_networkx_with_summed_duplicates(edges):
    frame = pd.DataFrame(edges, columns=["src", "dst", "weight"]).astype({"weight": float})
    expected = nx.Graph()
    expected.add_nodes_from(range(8))
    for s, d, w in edges:
        if s != d:
            expected.add_edge(s, d, weight=expected.get_edge_data(s, d, {"weight": 0.0})["weight"] + w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GraphInputWarning)
        graph = build_graph(frame, np.arange(8))
    assert nx.utils.graphs_equal(graph.to_networkx(), expected)
    assert graph.degree.tolist() == [expected.degree(u) for u in range(8)]


@SETTINGS
@given(edges=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.floats(0.1, 10.0)), min_size=1,
                      max_size=30),
       labels=st.lists(st.integers(0, 3), min_size=10, max_size=10), resolution=st.floats(0.1, 3.0))
def test_modularity_equals_networkx(edges, labels, resolution):
    frame = pd.DataFrame(edges, columns=["src", "dst", "weight"])
    frame = frame[frame["src"] != frame["dst"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GraphInputWarning)
        graph = build_graph(frame, np.arange(10))
    if graph.n_edges == 0:
        return
    labels = canonical_labels(np.array(labels))
    parts = [set(np.flatnonzero(labels == c).tolist()) for c in range(labels.max() + 1)]
    want = nx.community.modularity(graph.to_networkx(), parts, weight="weight", resolution=resolution)
    assert abs(modularity(graph, labels, resolution=resolution) - want) < 1e-10


@SETTINGS
@given(labels=st.lists(st.integers(-5, 50), min_size=1, max_size=60))
def test_canonical_labels_keep_the_partition_and_order_by_size(labels):
    labels = np.array(labels)
    canon = canonical_labels(labels)
    # the same partition
    for value in np.unique(labels):
        assert len(np.unique(canon[labels == value])) == 1
    assert len(np.unique(canon)) == len(np.unique(labels))
    sizes = np.bincount(canon)
    assert np.all(np.diff(sizes) <= 0)
    first = np.array([np.flatnonzero(canon == c)[0] for c in range(len(sizes))])
    ties = sizes[:-1] == sizes[1:]
    assert np.all(first[:-1][ties] < first[1:][ties])


@SETTINGS
@given(n=st.integers(2, 60), density=st.floats(0.02, 0.5), cap=st.integers(1, 12), seed=st.integers(0, 1000),
       backend=st.sampled_from(["networkx", "igraph"]))
def test_size_cap_refines_the_uncapped_clustering(n, density, cap, seed, backend):
    """Oversized clusters are re-split on their own: every capped cluster lies inside one uncapped cluster, clusters
    already within the cap are kept whole, and every part fits."""
    graph = graph_from_networkx(nx.gnp_random_graph(n, density, seed=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClusterWarning)
        free = cluster_graph(graph, method="louvain", random_state=seed, backend=backend).cluster
        capped = cluster_graph(graph, method="louvain", random_state=seed, backend=backend, max_cluster_size=cap)
    assert capped.sizes.max() <= cap and capped.sizes.sum() == n
    np.testing.assert_array_equal(canonical_labels(capped.cluster), capped.cluster)
    for c in range(capped.n_clusters):
        assert len(np.unique(free[capped.cluster == c])) == 1
    for c in np.flatnonzero(np.bincount(free) <= cap):
        assert len(np.unique(capped.cluster[free == c])) == 1
