"""Bad input: a one-line ValueError naming the table and column (or argument), raised before any work."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from abtest import (
    assign,
    build_graph,
    cluster_graph,
    design_diagnostics,
    exposure_estimate,
    exposure_probabilities,
    readout,
)

EDGES = pd.DataFrame({"src": [1, 2, 3], "dst": [2, 3, 4], "weight": [1.0, 2.0, 0.5]})


def one_line(error: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(error.value), str(error.value)


@pytest.fixture
def graph():
    return build_graph(EDGES)


@pytest.fixture
def table():
    return pd.DataFrame({"user_id": [1, 2, 3, 4], "cluster": [0, 0, 1, 1], "group": [1, 1, 0, 0]})


@pytest.fixture
def outcomes():
    return pd.DataFrame({"user_id": [1, 2, 3, 4], "y": [1.0, 2.0, 3.0, 4.0], "pre": [0.5, 1.0, 1.5, 2.0]})


@pytest.mark.parametrize("weights", [[1.0, 0.0, 1.0], [1.0, -2.0, 1.0], [1.0, np.nan, 1.0], [1.0, np.inf, 1.0],
                                     ["1", "2", "3"], [True, False, True], [1, None, 2]])
def test_bad_weights_name_edges_weight(weights):
    edges = EDGES.assign(weight=pd.Series(weights, dtype=object if weights[0] == "1" else None))
    with pytest.raises(ValueError, match=r"^edges\.weight: ") as error:
        build_graph(edges)
    one_line(error)


def test_bad_weight_raises_even_on_an_edge_the_kind_filter_would_drop():
    edges = EDGES.assign(kind=["friend", "friend", "call"], weight=[1.0, 1.0, -1.0])
    with pytest.raises(ValueError, match="edges.weight"):
        build_graph(edges, kinds="friend")


@pytest.mark.parametrize("column", ["src", "dst"])
def test_missing_endpoint_column(column):
    with pytest.raises(ValueError, match=f"edges: missing column '{column}'") as error:
        build_graph(EDGES.drop(columns=column))
    one_line(error)


@pytest.mark.parametrize("column", ["src", "dst"])
def test_missing_endpoint_values(column):
    edges = EDGES.astype({column: float})
    edges.loc[1, column] = np.nan
    with pytest.raises(ValueError, match=f"edges.{column}: 1 missing value"):
        build_graph(edges)


def test_other_graph_inputs():
    with pytest.raises(ValueError, match="edges: need a DataFrame"):
        build_graph(EDGES.to_numpy())
    with pytest.raises(ValueError, match="unknown_users"):
        build_graph(EDGES, unknown_users="ignore")
    with pytest.raises(ValueError, match="no 'kind' column"):
        build_graph(EDGES, kinds="friend")
    with pytest.raises(ValueError, match="users: missing column 'user_id'"):
        build_graph(EDGES, pd.DataFrame({"id": [1, 2, 3, 4]}))
    with pytest.raises(ValueError, match="users.user_id: 1 duplicate"):
        build_graph(EDGES, pd.DataFrame({"user_id": [1, 2, 3, 4, 4]}))
    with pytest.raises(ValueError, match="users.user_id: 1 missing"):
        build_graph(EDGES, pd.DataFrame({"user_id": [1, 2, 3, None]}))


def test_cluster_graph_arguments(graph):
    with pytest.raises(ValueError, match="method"):
        cluster_graph(graph, method="spectral")
    with pytest.raises(ValueError, match="backend"):
        cluster_graph(graph, backend="graph-tool")
    for resolution in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="resolution"):
            cluster_graph(graph, resolution=resolution)
    with pytest.raises(ValueError, match="max_cluster_size"):
        cluster_graph(graph, max_cluster_size=0)
    with pytest.raises(ValueError, match="linklouvain: needs the edges table"):
        cluster_graph(graph, method="linklouvain")


def test_assign_arguments(table):
    clusters = table[["user_id", "cluster"]]
    with pytest.raises(ValueError, match="design"):
        assign(clusters, salt="x", design="stratified")
    for salt in ("", None, 7):
        with pytest.raises(ValueError, match="salt"):
            assign(clusters, salt=salt)
    with pytest.raises(ValueError, match="clusters: need a Clustering"):
        assign(clusters.to_numpy(), salt="x")
    with pytest.raises(ValueError, match="clusters: missing column 'cluster'"):
        assign(clusters[["user_id"]], salt="x")
    with pytest.raises(ValueError, match="clusters.cluster: must be integer"):
        assign(clusters.astype({"cluster": float}), salt="x")
    with pytest.raises(ValueError, match="clusters.user_id: 1 duplicate"):
        assign(pd.concat([clusters, clusters.iloc[:1]]), salt="x")
    with pytest.raises(ValueError, match="clusters.cluster: 1 missing"):
        assign(clusters.astype({"cluster": float}).assign(cluster=[0, 0, 1, np.nan]), salt="x")


@pytest.mark.parametrize("condition", ["partial", ("fractional", 0.0), ("fractional", 1.2), ("absolute", -1),
                                       ("absolute", 1.5), ("fractional",), ("quantile", 0.5)])
def test_bad_exposure_condition(graph, table, condition):
    with pytest.raises(ValueError, match="condition") as error:
        exposure_probabilities(graph, table, p=0.5, condition=condition)
    one_line(error)


def test_exposure_arguments(graph, table):
    with pytest.raises(ValueError, match="design"):
        exposure_probabilities(graph, table, p=0.5, design="network_test")
    with pytest.raises(ValueError, match="p: "):
        exposure_probabilities(graph, table, p=1.0)
    with pytest.raises(ValueError, match="p must be 0.5"):
        exposure_probabilities(graph, table.assign(pair=[0, 0, 0, 0]), p=0.4, design="paired")
    with pytest.raises(ValueError, match="assignment.user_id: 1 user"):
        exposure_probabilities(graph, table.iloc[:3], p=0.5)
    with pytest.raises(ValueError, match="'pair'"):
        exposure_probabilities(graph, table, p=0.5, design="paired")
    with pytest.raises(ValueError, match="network_test"):
        exposure_probabilities(graph, table.assign(design="user"), p=0.5)
    with pytest.raises(ValueError, match="kind"):
        exposure_estimate(np.ones(2), [1, 0], [0, 1], [0.5, 0.5], [0.5, 0.5], [0, 1], kind="ipw")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_metric_raises(table, outcomes, bad):
    outcomes.loc[2, "y"] = bad
    with pytest.raises(ValueError, match="outcomes.y: 1 missing or infinite") as error:
        readout(outcomes, table, metric="y")
    one_line(error)


def test_bad_outcome_tables(table, outcomes):
    with pytest.raises(ValueError, match="outcomes.user_id: 1 duplicate"):
        readout(pd.concat([outcomes, outcomes.iloc[:1]]), table, metric="y")
    with pytest.raises(ValueError, match="outcomes: missing column 'revenue'"):
        readout(outcomes, table, metric="revenue")
    with pytest.raises(ValueError, match="outcomes.y: must be numeric"):
        readout(outcomes.assign(y=["a", "b", "c", "d"]), table, metric="y")
    with pytest.raises(ValueError, match="outcomes.y: must be numeric"):
        readout(outcomes.assign(y=[True, False, True, False]), table, metric="y")
    with pytest.raises(ValueError, match="outcomes.pre: 1 missing"):
        readout(outcomes.assign(pre=[1.0, np.nan, 1.0, 1.0]), table, metric="y", pre_metric="pre")
    with pytest.raises(ValueError, match="outcomes.user_id: 1 missing"):
        readout(outcomes.assign(user_id=[1, 2, 3, None]), table, metric="y")
    with pytest.raises(ValueError, match="outcomes: need a DataFrame"):
        readout(outcomes.to_numpy(), table, metric="y")


def test_bad_assignment_tables(table, outcomes):
    with pytest.raises(ValueError, match="assignment: missing column 'group'"):
        readout(outcomes, table.drop(columns="group"), metric="y")
    with pytest.raises(ValueError, match="assignment.group: 1 value"):
        readout(outcomes, table.assign(group=[1, 2, 0, 0]), metric="y")
    with pytest.raises(ValueError, match="assignment.user_id: 1 duplicate"):
        readout(outcomes, table.assign(user_id=[1, 1, 3, 4]), metric="y")
    with pytest.raises(ValueError, match="assignment.cluster: must be integer"):
        readout(outcomes, table.astype({"cluster": str}), metric="y")
    with pytest.raises(ValueError, match="design 'paired' needs the 'pair' column"):
        readout(outcomes, table, metric="y", design="paired")
    with pytest.raises(ValueError, match="design 'network_test' needs the 'design' column"):
        readout(outcomes, table, metric="y", design="network_test")
    with pytest.raises(ValueError, match="design: must be one of"):
        readout(outcomes, table, metric="y", design="cluster")


def test_bad_readout_arguments(table, outcomes, graph):
    with pytest.raises(ValueError, match="alpha"):
        readout(outcomes, table, metric="y", alpha=1.0)
    with pytest.raises(ValueError, match="p: "):
        readout(outcomes, table, metric="y", p=0.0)
    with pytest.raises(ValueError, match="unknown_users"):
        readout(outcomes, table, metric="y", unknown_users="ignore")
    with pytest.raises(ValueError, match="assignment.user_id: 1 user\\(s\\) of the graph are not assigned"):
        readout(outcomes.iloc[:3], table.iloc[:3], metric="y", graph=graph)


def test_bad_diagnostics_input(graph, table):
    with pytest.raises(ValueError, match="covariates: missing column 'user_id'"):
        design_diagnostics(graph, table, covariates=pd.DataFrame({"age": [1, 2, 3, 4]}))
    with pytest.raises(ValueError, match="assignment.user_id: 1 user"):
        design_diagnostics(graph, table.iloc[1:])
