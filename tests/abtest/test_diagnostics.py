"""design_diagnostics against hand computations, and the cluster-size figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from abtest import (  # noqa: E402
    assign,
    build_graph,
    cluster_graph,
    cluster_size_figure,
    design_diagnostics,
    difference_in_means,
    exposure_probabilities,
)
from abtest.simulate import planted_partition  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    """A weighted planted-partition graph (with isolated users), its Louvain clusters and a Bernoulli assignment."""
    base = planted_partition(25, 8, 0.45, 0.01, random_state=4)
    rng = np.random.default_rng(4)
    edges = base.to_frame()
    edges["weight"] = rng.uniform(0.5, 4.0, len(edges))
    graph = build_graph(edges, np.arange(base.n_users))
    clusters = cluster_graph(graph, random_state=1)
    return graph, clusters, assign(clusters, salt="diag", p=0.4)


def test_cut_weight_share_by_hand(setup):
    graph, clusters, table = setup
    diagnostics = design_diagnostics(graph, table, p=0.4)
    label = dict(zip(table["user_id"], table["cluster"], strict=True))
    cut = total = 0.0
    for u, v, d in graph.to_networkx().edges(data=True):
        total += d["weight"]
        cut += d["weight"] * (label[graph.user_ids[u]] != label[graph.user_ids[v]])
    assert diagnostics.cut_weight_share == pytest.approx(cut / total, rel=1e-12)
    assert 0 < diagnostics.cut_weight_share < 0.5


def test_same_cluster_and_same_arm_shares_by_hand(setup):
    graph, _, table = setup
    diagnostics = design_diagnostics(graph, table, p=0.4)
    cluster, group = table["cluster"].to_numpy(), table["group"].to_numpy()
    nxg = graph.to_networkx()
    same_cluster, same_arm = [], []
    for u in range(graph.n_users):
        neighbours = list(nxg.neighbors(u))
        if neighbours:  # users without neighbours are left out
            same_cluster.append(np.mean([cluster[v] == cluster[u] for v in neighbours]))
            same_arm.append(np.mean([group[v] == group[u] for v in neighbours]))
    assert len(same_cluster) < graph.n_users
    assert diagnostics.same_cluster_share == pytest.approx(np.mean(same_cluster), rel=1e-12)
    assert diagnostics.same_arm_share == pytest.approx(np.mean(same_arm), rel=1e-12)
    assert diagnostics.treated_share == pytest.approx(group.mean())
    assert diagnostics.n_clusters == table["cluster"].nunique()
    np.testing.assert_array_equal(np.sort(diagnostics.cluster_sizes), np.sort(np.bincount(cluster)))


def test_expected_same_arm_share_over_salts(setup):
    """Docstring: E[same_arm] = same_cluster + (1 - same_cluster) (p^2 + (1 - p)^2), averaged over users."""
    graph, clusters, _ = setup
    p = 0.3
    shares = [design_diagnostics(graph, assign(clusters, salt=f"arm-{k}", p=p), p=p).same_arm_share for k in range(150)]
    same = design_diagnostics(graph, assign(clusters, salt="x", p=p), p=p).same_cluster_share
    expected = same + (1 - same) * (p ** 2 + (1 - p) ** 2)
    assert abs(np.mean(shares) - expected) < 4 * np.std(shares, ddof=1) / np.sqrt(len(shares))


def test_balance_table_rows_for_numeric_covariates(setup):
    graph, _, table = setup
    rng = np.random.default_rng(0)
    covariates = pd.DataFrame({"user_id": graph.user_ids, "age": rng.normal(40, 10, graph.n_users),
                               "spend": rng.exponential(5, graph.n_users), "country": rng.choice(["fr", "de"],
                                                                                                  graph.n_users),
                               "flag": rng.integers(0, 2, graph.n_users)})
    balance = design_diagnostics(graph, table, p=0.4, covariates=covariates).balance
    assert balance["covariate"].tolist() == ["age", "spend", "flag"]
    treated = table["group"].to_numpy() == 1
    for _, row in balance.iterrows():
        x = covariates[row["covariate"]].to_numpy(dtype=float)
        assert row["mean_treatment"] == pytest.approx(x[treated].mean())
        assert row["mean_control"] == pytest.approx(x[~treated].mean())
        pooled = np.sqrt((x[treated].var() + x[~treated].var()) / 2)
        assert row["std_diff"] == pytest.approx((x[treated].mean() - x[~treated].mean()) / pooled)
        assert row["p_value"] == pytest.approx(difference_in_means(x, treated, table["cluster"]).p_value)
    assert design_diagnostics(graph, table, p=0.4).balance.empty


def test_balance_flags_an_imbalanced_covariate(setup):
    graph, _, table = setup
    covariates = pd.DataFrame({"user_id": graph.user_ids, "leaky": table["group"].to_numpy() * 3.0
                               + np.random.default_rng(1).normal(size=graph.n_users)})
    row = design_diagnostics(graph, table, p=0.4, covariates=covariates).balance.iloc[0]
    assert row["std_diff"] > 2 and row["p_value"] < 1e-6


def test_exposure_and_summary(setup):
    graph, clusters, table = setup
    diagnostics = design_diagnostics(graph, table, p=0.4, condition=("fractional", 0.5))
    pd.testing.assert_frame_equal(diagnostics.exposure,
                                  exposure_probabilities(graph, table, p=0.4, condition=("fractional", 0.5)))
    summary = diagnostics.summary()
    assert summary["n_users"] == graph.n_users and summary["n_clusters"] == clusters.n_clusters
    assert summary["cluster_size_max"] == clusters.sizes.max()
    assert summary["largest_cluster_share"] == pytest.approx(clusters.sizes.max() / graph.n_users)
    assert summary["mean_exposure_p1"] == pytest.approx(diagnostics.exposure["exposure_p1"].mean())


def test_per_user_table_is_what_the_figures_average(setup):
    graph, _, table = setup
    diagnostics = design_diagnostics(graph, table, p=0.4)
    users = diagnostics.to_frame()
    assert list(users.columns) == ["user_id", "cluster", "group", "degree", "same_cluster_share",
                                   "same_cluster_weight_share", "same_arm_share", "exposure_p1", "exposure_p0",
                                   "n_units_touched"]
    np.testing.assert_array_equal(users["user_id"], graph.user_ids)
    np.testing.assert_array_equal(users["degree"], graph.degree)
    assert users["same_cluster_share"].isna().to_numpy().tolist() == (graph.degree == 0).tolist()
    for name in ("same_cluster_share", "same_cluster_weight_share", "same_arm_share"):
        assert users[name].mean() == pytest.approx(getattr(diagnostics, name))
    position = pd.Index(table["user_id"]).get_indexer(users["user_id"])
    np.testing.assert_array_equal(users["group"], table["group"].to_numpy()[position])
    assert not users.attrs


def test_network_test_assignment_has_no_exposure_probabilities(setup):
    graph, clusters, _ = setup
    diagnostics = design_diagnostics(graph, assign(clusters, salt="net", design="network_test"))
    assert diagnostics.exposure[["exposure_p1", "exposure_p0"]].isna().all().all()


def test_paired_design_is_inferred(setup):
    graph, clusters, _ = setup
    table = assign(clusters, salt="pairs", design="paired")
    diagnostics = design_diagnostics(graph, table)
    pd.testing.assert_frame_equal(diagnostics.exposure, exposure_probabilities(graph, table, p=0.5, design="paired"))


def test_cluster_size_figure_returns_a_figure(setup):
    graph, _, table = setup
    figure = cluster_size_figure(design_diagnostics(graph, table, p=0.4))
    try:
        assert isinstance(figure, Figure)
        assert "clusters" in figure.axes[0].get_title()
    finally:
        plt.close(figure)


def test_graph_without_edges():
    graph = build_graph(pd.DataFrame({"src": pd.Series([], dtype=int), "dst": pd.Series([], dtype=int)}),
                        np.arange(6))
    table = assign(pd.DataFrame({"user_id": np.arange(6), "cluster": np.arange(6)}), salt="x")
    diagnostics = design_diagnostics(graph, table)
    assert diagnostics.cut_weight_share == 0.0 and diagnostics.same_cluster_share == 1.0
    assert nx.number_of_edges(graph.to_networkx()) == 0
