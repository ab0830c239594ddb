"""build_graph's tidy rules (kinds, self-loops, unknown users, duplicates) and the graph views against networkx."""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from abtest import GraphInputWarning, build_graph, graph_from_networkx


def edge_dict(graph) -> dict[frozenset, float]:
    """{frozenset({label, label}): weight} of a built graph."""
    frame = graph.to_frame()
    return {frozenset((s, d)): w for s, d, w in zip(frame["src"], frame["dst"], frame["weight"], strict=True)}


def test_duplicates_in_either_direction_are_collapsed_with_summed_weights():
    edges = pd.DataFrame({"src": [1, 2, 1, 2, 3], "dst": [2, 1, 2, 3, 2], "weight": [1.0, 2.0, 0.5, 4.0, 1.0]})
    with pytest.warns(GraphInputWarning, match="collapsed 3 duplicate"):
        graph = build_graph(edges)
    assert graph.n_users == 3 and graph.n_edges == 2
    assert edge_dict(graph) == {frozenset((1, 2)): 3.5, frozenset((2, 3)): 5.0}
    assert np.all(graph.src < graph.dst)
    assert graph.summary() == {"n_users": 3, "n_edges": 2, "total_weight": 8.5, "mean_degree": 4 / 3,
                               "isolated_users": 0}


def test_duplicates_without_weight_column_count_as_weight_one_each():
    edges = pd.DataFrame({"src": ["a", "b", "a"], "dst": ["b", "a", "c"]})
    with pytest.warns(GraphInputWarning, match="duplicate"):
        graph = build_graph(edges)
    assert edge_dict(graph) == {frozenset(("a", "b")): 2.0, frozenset(("a", "c")): 1.0}


def test_self_loops_are_dropped_with_a_warning():
    edges = pd.DataFrame({"src": [1, 2, 2, 3], "dst": [1, 3, 2, 4], "weight": [9.0, 1.0, 9.0, 2.0]})
    with pytest.warns(GraphInputWarning, match="dropped 2 self-loop"):
        graph = build_graph(edges)
    assert edge_dict(graph) == {frozenset((2, 3)): 1.0, frozenset((3, 4)): 2.0}
    # user 1 appears only in a self-loop: without a users table it is not a node
    assert sorted(graph.user_ids.tolist()) == [2, 3, 4]


def test_clean_input_raises_no_warning():
    edges = pd.DataFrame({"src": [1, 2], "dst": [2, 3]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = build_graph(edges, pd.DataFrame({"user_id": [1, 2, 3, 4]}))
    assert graph.n_users == 4 and graph.degree.tolist() == [1, 2, 1, 0]


def test_unknown_users_are_dropped_with_a_warning():
    users = pd.DataFrame({"user_id": [10, 20, 30]})
    edges = pd.DataFrame({"src": [10, 20, 99, 10], "dst": [20, 30, 10, 77]})
    with pytest.warns(GraphInputWarning, match="2 edge\\(s\\) name a user who is not in the users table"):
        graph = build_graph(edges, users)
    assert graph.user_ids.tolist() == [10, 20, 30]
    assert edge_dict(graph) == {frozenset((10, 20)): 1.0, frozenset((20, 30)): 1.0}


def test_unknown_users_raise_with_error_policy():
    users = pd.DataFrame({"user_id": [10, 20, 30]})
    edges = pd.DataFrame({"src": [10, 20, 99], "dst": [20, 30, 10]})
    with pytest.raises(ValueError, match="not in the users table.*99"):
        build_graph(edges, users, unknown_users="error")


def test_users_table_fixes_node_set_and_order():
    users = pd.DataFrame({"user_id": ["z", "y", "x", "lonely"]})
    edges = pd.DataFrame({"src": ["x", "y"], "dst": ["z", "x"]})
    graph = build_graph(edges, users)
    assert graph.user_ids.tolist() == ["z", "y", "x", "lonely"]
    assert graph.degree.tolist() == [1, 1, 2, 0]
    # also accepted: the ids as an array or a Series
    assert build_graph(edges, np.array(["z", "y", "x", "lonely"])).degree.tolist() == [1, 1, 2, 0]
    assert build_graph(edges, users["user_id"]).n_users == 4


def test_kinds_filter_keeps_only_the_named_kinds():
    edges = pd.DataFrame({"src": [1, 2, 3, 1], "dst": [2, 3, 4, 4], "kind": ["friend", "invite", "friend", "call"],
                          "weight": [1.0, 2.0, 3.0, 4.0]})
    users = pd.DataFrame({"user_id": [1, 2, 3, 4]})
    friends = build_graph(edges, users, kinds="friend")
    assert edge_dict(friends) == {frozenset((1, 2)): 1.0, frozenset((3, 4)): 3.0}
    two = build_graph(edges, users, kinds=["friend", "call"])
    assert edge_dict(two) == {frozenset((1, 2)): 1.0, frozenset((3, 4)): 3.0, frozenset((1, 4)): 4.0}
    assert build_graph(edges, users).n_edges == 4
    with pytest.raises(ValueError, match="edges.kind"):
        build_graph(edges, users, kinds="colleague")


def test_kinds_filter_applies_before_duplicate_collapsing():
    edges = pd.DataFrame({"src": [1, 2, 1], "dst": [2, 1, 3], "kind": ["friend", "invite", "friend"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the friend/invite duplicate is filtered out: nothing to collapse
        graph = build_graph(edges, kinds="friend")
    assert edge_dict(graph) == {frozenset((1, 2)): 1.0, frozenset((1, 3)): 1.0}


def test_string_user_ids_work_end_to_end():
    edges = pd.DataFrame({"src": ["ann", "bob", "cat"], "dst": ["bob", "cat", "ann"], "weight": [1, 2, 3]})
    graph = build_graph(edges)
    assert sorted(graph.user_ids.tolist()) == ["ann", "bob", "cat"]
    assert graph.positions(["cat", "ann"]).tolist() == [graph.user_ids.tolist().index("cat"),
                                                         graph.user_ids.tolist().index("ann")]
    assert edge_dict(graph) == {frozenset(("ann", "bob")): 1.0, frozenset(("bob", "cat")): 2.0,
                                frozenset(("ann", "cat")): 3.0}
    with pytest.raises(ValueError, match="user_id: 1 value"):
        graph.positions(["dan"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adjacency_degree_and_strength_agree_with_networkx(seed):
    """A messy random edge list (duplicates both ways, self-loops) against networkx built by hand."""
    rng = np.random.default_rng(seed)
    n, m = 40, 150
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    weight = rng.uniform(0.1, 3.0, m)
    expected = nx.Graph()
    expected.add_nodes_from(range(n))
    for s, d, w in zip(src.tolist(), dst.tolist(), weight.tolist(), strict=True):
        if s != d:
            old = expected.get_edge_data(s, d, {"weight": 0.0})["weight"]
            expected.add_edge(s, d, weight=old + w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GraphInputWarning)
        graph = build_graph(pd.DataFrame({"src": src, "dst": dst, "weight": weight}), np.arange(n))
    assert graph.n_edges == expected.number_of_edges()
    indptr, neighbour, w = graph.adjacency
    for u in range(n):
        got = dict(zip(neighbour[indptr[u]:indptr[u + 1]].tolist(), w[indptr[u]:indptr[u + 1]].tolist(),
                       strict=True))
        want = {v: d["weight"] for v, d in expected[u].items()}
        assert got.keys() == want.keys()
        assert np.allclose([got[v] for v in want], list(want.values()))
        assert list(got) == sorted(got)  # neighbours sorted within a row
    assert graph.degree.tolist() == [expected.degree(u) for u in range(n)]
    np.testing.assert_allclose(graph.strength, [expected.degree(u, weight="weight") for u in range(n)])
    assert nx.utils.graphs_equal(graph.to_networkx(), expected)


def test_networkx_round_trip_and_subgraph():
    rng = np.random.default_rng(4)
    source = nx.gnm_random_graph(30, 60, seed=4)
    for u, v in source.edges:
        source[u][v]["weight"] = float(rng.uniform(0.5, 2.0))
    graph = graph_from_networkx(source)
    assert nx.utils.graphs_equal(graph.to_networkx(), source)
    assert set(graph.to_networkx(weight=False).edges) == set(source.edges)
    nodes = np.array([7, 3, 12, 25, 0, 18])
    sub = graph.subgraph(nodes)
    assert sub.user_ids.tolist() == nodes.tolist()
    want = source.subgraph(nodes.tolist())
    got = {frozenset((int(nodes[s]), int(nodes[d]))): w for s, d, w in zip(sub.src, sub.dst, sub.weight,
                                                                          strict=True)}
    assert got == {frozenset((u, v)): d["weight"] for u, v, d in want.edges(data=True)}
    assert np.all(sub.src < sub.dst)


def test_igraph_view_has_the_same_edges_and_weights():
    graph = build_graph(pd.DataFrame({"src": [0, 1, 2, 0], "dst": [1, 2, 3, 3], "weight": [1.0, 2.0, 3.0, 4.0]}))
    ig_graph = graph.to_igraph()
    assert ig_graph.vcount() == 4
    assert {(min(e.tuple), max(e.tuple)): e["weight"] for e in ig_graph.es} == {(0, 1): 1.0, (1, 2): 2.0,
                                                                                 (2, 3): 3.0, (0, 3): 4.0}


def test_empty_edges_with_users_gives_isolated_users():
    graph = build_graph(pd.DataFrame({"src": pd.Series([], dtype=int), "dst": pd.Series([], dtype=int)}),
                        np.arange(5))
    assert graph.n_users == 5 and graph.n_edges == 0
    assert graph.degree.tolist() == [0] * 5


def test_same_pair_under_two_kinds_is_merged_without_a_duplicate_warning():
    """A friendship and an invitation between the same users are two relations: their weights add up, and only
    repeats within one kind are reported as duplicates."""
    edges = pd.DataFrame({"src": [1, 2, 1], "dst": [2, 1, 3], "kind": ["friend", "invite", "friend"],
                          "weight": [1.0, 2.0, 1.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = build_graph(edges)
    assert edge_dict(graph) == {frozenset((1, 2)): 3.0, frozenset((1, 3)): 1.0}
    repeated = pd.concat([edges, edges.iloc[[0]].assign(src=2, dst=1)], ignore_index=True)
    with pytest.warns(GraphInputWarning, match="collapsed 1 duplicate"):
        assert edge_dict(build_graph(repeated))[frozenset((1, 2))] == 4.0


def test_real_networkx_graph_with_string_labels_and_weights():
    source = nx.les_miserables_graph()
    graph = graph_from_networkx(source)
    assert graph.n_users == 77 and graph.n_edges == 254
    assert nx.utils.graphs_equal(nx.relabel_nodes(graph.to_networkx(), dict(enumerate(graph.user_ids))), source)


def test_networkx_graph_with_tuple_node_labels():
    graph = graph_from_networkx(nx.grid_2d_graph(3, 3))
    assert graph.n_users == 9 and graph.n_edges == 12
