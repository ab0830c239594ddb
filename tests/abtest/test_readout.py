"""readout: the rows each design gets, the sample-ratio check, the network-effect test, untidy outcome tables and the
figure."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from abtest import (  # noqa: E402
    Effect,
    MissingOutcomeWarning,
    assign,
    build_graph,
    difference_in_means,
    readout,
    readout_figure,
)
from abtest.simulate import LinearInMeans, planted_partition  # noqa: E402
from tests.abtest.helpers import cluster_frame  # noqa: E402

EFFECT_COLUMNS = list(Effect.__dataclass_fields__)


@pytest.fixture(scope="module")
def world():
    """1,200 users in 150 planted communities of 8 (the clusters), mean degree ~4.5."""
    graph = planted_partition(150, 8, 0.5, 1 / 1200, random_state=7)
    return graph, cluster_frame(graph, np.arange(graph.n_users) // 8)


def outcomes_for(graph, table, g: float = 1.0, seed: int = 0, pre: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    position = graph.positions(table["user_id"])
    treated = np.zeros(graph.n_users, dtype=int)
    treated[position] = table["group"].to_numpy()
    y = LinearInMeans(a=1.0, b=0.5, g=g, noise=1.0).outcomes(graph, treated, random_state=rng)
    frame = pd.DataFrame({"user_id": graph.user_ids, "conversions": y})
    if pre:
        frame["pre"] = y - 0.5 * treated + rng.normal(size=graph.n_users)
    return frame


@pytest.mark.parametrize(("design", "graph_in", "pre", "rows"), [
    ("bernoulli", False, False, ["difference_in_means"]),
    ("bernoulli", False, True, ["difference_in_means", "cuped"]),
    ("bernoulli", True, False, ["difference_in_means", "horvitz_thompson", "hajek"]),
    ("bernoulli", True, True, ["difference_in_means", "cuped", "horvitz_thompson", "hajek"]),
    ("paired", True, True, ["difference_in_means", "cuped", "horvitz_thompson", "hajek"]),
    ("user", True, False, ["difference_in_means", "horvitz_thompson", "hajek"]),
    ("network_test", True, True, ["user_randomized", "cluster_randomized"]),
])
def test_rows_per_design(world, design, graph_in, pre, rows):
    graph, frame = world
    table = assign(frame, salt=f"rows-{design}", design=design)
    result = readout(outcomes_for(graph, table), table, metric="conversions", graph=graph if graph_in else None,
                     pre_metric="pre" if pre else None, design="user" if design == "user" else None)
    assert result.design == design
    effects = result.to_frame()
    assert effects["estimator"].tolist() == rows
    assert list(effects.columns) == EFFECT_COLUMNS
    assert np.isfinite(effects["estimate"]).all() and np.isfinite(effects["se"]).all()
    assert (result.network_test is not None) == (design == "network_test")
    assert result.n_assigned == result.n_with_outcome == graph.n_users
    units = graph.n_users if design == "user" else 150
    if design != "network_test":
        assert (effects["n_units"] == units).all()


def test_result_objects_have_a_tidy_table_and_a_summary(world):
    """Readout, its effects, the SRM check and the network test: `to_frame()` one row per estimator / arm, `summary()`
    the headline figures; nothing hidden in DataFrame.attrs."""
    graph, frame = world
    table = assign(frame, salt="tidy", design="network_test")
    result = readout(outcomes_for(graph, table), table, metric="conversions")
    effects = result.to_frame()
    pd.testing.assert_frame_equal(effects, result.table)
    pd.testing.assert_frame_equal(effects, result.network_test.to_frame())
    pd.testing.assert_frame_equal(result.effects[0].to_frame(), effects.iloc[:1])
    assert not effects.attrs and not result.srm.to_frame().attrs
    first = result.effects[0].summary()
    assert set(first) == set(EFFECT_COLUMNS) - {"estimator", "note"}
    assert first["estimate"] == result.effects[0].estimate
    srm = result.srm.to_frame()
    assert srm["arm"].tolist() == ["treatment", "control"]
    assert srm["units"].tolist() == [result.srm.units_treatment, result.srm.units_control]
    assert result.srm.summary()["alarm"] == result.srm.alarm
    summary = result.summary()
    assert summary["n_assigned"] == graph.n_users and summary["n_estimators"] == 2
    assert summary["srm_units_p_value"] == result.srm.units_p_value
    assert summary["network_test_p_value"] == result.network_test.p_value
    assert result.network_test.summary() == {"difference": result.network_test.difference,
                                             "se": result.network_test.se, "z": result.network_test.z,
                                             "p_value": result.network_test.p_value}


def test_difference_in_means_row_equals_the_estimator(world):
    graph, frame = world
    table = assign(frame, salt="same")
    out = outcomes_for(graph, table).sample(frac=1.0, random_state=1)  # any row order
    row = readout(out, table, metric="conversions", alpha=0.1).effects[0]
    y = out.set_index("user_id").loc[table["user_id"], "conversions"].to_numpy()
    direct = difference_in_means(y, table["group"].to_numpy() == 1, table["cluster"].to_numpy(), alpha=0.1)
    assert row == direct


def test_clean_experiment_has_no_sample_ratio_alarm(world):
    graph, frame = world
    table = assign(frame, salt="clean")
    result = readout(outcomes_for(graph, table), table, metric="conversions")
    assert not result.srm.alarm
    assert result.srm.observed_share_treatment == result.srm.observed_share_control == 1.0
    assert result.srm.units_treatment + result.srm.units_control == 150


def test_outcomes_lost_for_30_percent_of_treated_users_raise_the_alarm(world):
    graph, frame = world
    table = assign(frame, salt="lossy")
    out = outcomes_for(graph, table)
    treated_users = table.loc[table["group"] == 1, "user_id"].to_numpy()
    lost = np.random.default_rng(0).choice(treated_users, int(0.3 * len(treated_users)), replace=False)
    result = readout(out[~out["user_id"].isin(lost)], table, metric="conversions")
    assert result.srm.alarm
    assert result.srm.observed_p_value < 1e-10
    assert result.srm.observed_share_treatment == pytest.approx(1 - len(lost) / len(treated_users))
    assert result.srm.observed_share_control == 1.0
    assert result.n_with_outcome == graph.n_users - len(lost)
    # a loss of 1% in both arms is no alarm
    everyone = table["user_id"].to_numpy()
    few = np.random.default_rng(1).choice(everyone, len(everyone) // 100, replace=False)
    assert not readout(out[~out["user_id"].isin(few)], table, metric="conversions").srm.alarm


def test_unit_count_mismatch_raises_the_alarm():
    users = np.arange(400)
    cluster = users // 2
    group = (cluster % 10 < 8).astype(int)  # 80% of clusters treated under p = 0.5
    table = pd.DataFrame({"user_id": users, "cluster": cluster, "group": group})
    out = pd.DataFrame({"user_id": users, "y": np.random.default_rng(0).normal(size=400)})
    result = readout(out, table, metric="y")
    assert result.srm.alarm and result.srm.units_p_value < 1e-6
    assert (result.srm.units_treatment, result.srm.units_control) == (160, 40)
    assert not readout(out, table, metric="y", p=0.8).srm.alarm


def test_outcomes_for_unknown_users_raise_or_are_dropped(world):
    graph, frame = world
    table = assign(frame, salt="unknown")
    out = outcomes_for(graph, table)
    extra = pd.concat([out, pd.DataFrame({"user_id": [10_001, 10_002], "conversions": [1e6, 1e6],
                                          "pre": [0.0, 0.0]})], ignore_index=True)
    with pytest.raises(ValueError, match="outcomes.user_id: 2 user\\(s\\) are not in the assignment"):
        readout(extra, table, metric="conversions")
    with pytest.warns(MissingOutcomeWarning, match="dropped"):
        dropped = readout(extra, table, metric="conversions", unknown_users="drop", graph=graph)
    pd.testing.assert_frame_equal(dropped.to_frame(), readout(out, table, metric="conversions", graph=graph).to_frame())


def test_outcome_of_an_assigned_user_outside_the_graph_does_not_land_on_another_user():
    graph = build_graph(pd.DataFrame({"src": ["a", "b", "c", "d"], "dst": ["b", "c", "d", "e"]}))
    table = pd.DataFrame({"user_id": list("abcdez"), "cluster": [0, 0, 1, 1, 2, 3], "group": [1, 1, 0, 0, 1, 0]})
    out = pd.DataFrame({"user_id": list("abcdez"), "y": [1.0, 1.0, 0.0, 0.0, 1.0, 1e6]})
    try:
        result = readout(out, table, metric="y", graph=graph)
    except ValueError:
        return  # refusing the table is fine
    estimate = result.effects[0].estimate
    # either user z is left out (graph users only: 1 - 0) or kept (with z's outcome: 1 - 5e5); nothing else
    assert estimate == pytest.approx(1.0) or estimate == pytest.approx(1.0 - (1e6 / 3)), estimate


def test_network_test_rejects_under_strong_interference(world):
    graph, frame = world
    table = assign(frame, salt="net-strong", design="network_test")
    result = readout(outcomes_for(graph, table, g=4.0, seed=3), table, metric="conversions", graph=graph)
    test = result.network_test
    assert test.p_value < 1e-4 and test.difference > 0
    assert test.difference == pytest.approx(test.cluster_randomized.estimate - test.user_randomized.estimate)
    assert test.user_randomized.n_units == test.user_randomized.n_treatment + test.user_randomized.n_control


def test_network_test_rarely_rejects_without_interference(world):
    graph, frame = world
    p_values = []
    for k in range(20):
        table = assign(frame, salt=f"net-null-{k}", design="network_test")
        result = readout(outcomes_for(graph, table, g=0.0, seed=k), table, metric="conversions")
        p_values.append(result.network_test.p_value)
    p_values = np.array(p_values)
    assert np.sum(p_values < 0.05) <= 4  # Binomial(20, 0.05) exceeds 4 with probability 0.003
    assert np.median(p_values) > 0.2


def test_readout_figure_returns_a_figure(world):
    graph, frame = world
    table = assign(frame, salt="figure")
    result = readout(outcomes_for(graph, table), table, metric="conversions", graph=graph, pre_metric="pre")
    for relative in (False, True):
        figure = readout_figure(result, relative=relative)
        try:
            assert isinstance(figure, Figure)
            labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
            assert labels == result.to_frame()["estimator"].tolist()
        finally:
            plt.close(figure)


def test_readout_figure_flags_sample_ratio_mismatch(world):
    graph, frame = world
    table = assign(frame, salt="figure-srm")
    out = outcomes_for(graph, table)
    result = readout(out[~((table["group"] == 1) & (np.arange(len(table)) % 2 == 0)).to_numpy()], table,
                     metric="conversions")
    figure = readout_figure(result)
    try:
        assert result.srm.alarm and "SAMPLE RATIO MISMATCH" in figure.axes[0].get_title()
    finally:
        plt.close(figure)


def test_two_clusters_do_not_crash():
    graph = build_graph(pd.DataFrame({"src": [0, 1, 2, 4, 5, 6, 3], "dst": [1, 2, 3, 5, 6, 7, 4]}))
    table = pd.DataFrame({"user_id": np.arange(8), "cluster": np.arange(8) // 4, "group": np.arange(8) // 4})
    out = pd.DataFrame({"user_id": np.arange(8), "y": np.arange(8.0), "pre": np.arange(8.0) ** 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no numpy warnings either
        result = readout(out, table, metric="y", graph=graph, pre_metric="pre")
    assert result.to_frame()["estimator"].tolist() == ["difference_in_means", "cuped", "horvitz_thompson", "hajek"]
    assert result.effects[0].estimate == pytest.approx(4.0) and result.effects[0].n_units == 2
    plt.close(readout_figure(result))


def test_everyone_in_one_arm_gives_nan_rows_with_notes():
    graph = build_graph(pd.DataFrame({"src": [0, 1, 3], "dst": [1, 2, 4]}))
    table = pd.DataFrame({"user_id": np.arange(5), "cluster": [0, 0, 0, 1, 1], "group": [1] * 5})
    out = pd.DataFrame({"user_id": np.arange(5), "y": np.arange(5.0)})
    result = readout(out, table, metric="y", graph=graph)
    assert result.to_frame()["estimate"].isna().all()
    assert (result.to_frame()["note"] != "").all()
    assert result.srm.units_control == 0
    plt.close(readout_figure(result))


def test_string_user_ids_and_partial_outcomes(world):
    graph, frame = world
    names = {u: f"user-{u}" for u in graph.user_ids}
    edges = graph.to_frame().assign(src=lambda d: d["src"].map(names), dst=lambda d: d["dst"].map(names))
    string_graph = build_graph(edges, [names[u] for u in graph.user_ids])
    table = assign(frame.assign(user_id=frame["user_id"].map(names)), salt="strings")
    out = outcomes_for(graph, assign(frame, salt="strings")).assign(user_id=lambda d: d["user_id"].map(names))
    half = out.iloc[::2]
    result = readout(half, table, metric="conversions", graph=string_graph)
    assert result.n_with_outcome == len(half) and result.n_assigned == graph.n_users
    assert result.effects[0].n_treatment + result.effects[0].n_control == len(half)
