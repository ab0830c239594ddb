"""Smoke tests of the abtest benchmarks: the --quick paths run end to end through the harness (a fresh subprocess per
measurement, tables printed, JSON saved), into a temporary results folder so real results are never overwritten."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import _harness, bench_abtest_clustering, bench_abtest_designs


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(_harness, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(bench_abtest_clustering, "DATA_DIR", tmp_path)  # the cached graphs
    monkeypatch.setitem(_harness.settings, "max_quiet_wait_s", 0.0)  # main() sets it too; restored afterwards
    return tmp_path / "results"


def test_clustering_quick(results_dir, capsys):
    payload = bench_abtest_clustering.main(["--quick"])
    (size,) = payload["sizes"]
    assert size["n_edges"] == 25_000
    assert set(size["methods"]) == {"louvain", "leiden"}
    for result in size["methods"].values():
        run = result["runs"][0]
        assert run["backend"] == "igraph"  # above NETWORKX_MAX_EDGES: "auto" picks igraph
        assert run["reported_modularity"] == pytest.approx(result["modularity"])
        assert result["modularity"] > 0.6 and abs(result["modularity_difference"]) < 0.05
        assert result["ratio"] > 0 and run["other_load_cores"] >= 0
    saved = json.loads((results_dir / "abtest_clustering-quick.json").read_text())
    assert saved["quick"] is True and saved["sizes"][0]["n_edges"] == 25_000
    assert "networkx / ours" in capsys.readouterr().out


def test_dcsbm_has_exact_edge_count_and_planted_mixing():
    src, dst, community = bench_abtest_clustering.dcsbm(3_000, average_degree=20, seed=1)
    assert len(src) == 30_000 and (src < dst).all()
    assert np.unique(src * 3_000 + dst).size == 30_000
    cross = np.mean(community[src] != community[dst])
    assert 0.15 < cross < 0.25  # mixing 0.2 plus random ends that land inside the community anyway (about 1%)


@pytest.mark.parametrize("name", list(bench_abtest_designs.GRAPHS))
def test_designs_graphs_build(name):
    graph, community = bench_abtest_designs.build(name, 600, seed=0)
    assert graph.n_users == 600 and graph.n_edges > 2_000
    assert (community is None) == (name == "watts-strogatz")


def test_designs_quick_one_graph(results_dir, capsys):
    payload = bench_abtest_designs.main(["--quick", "--graphs", "planted-0.1", "--replications", "10"])
    result = payload["graphs"]["planted-0.1"]
    rows = {(r["outcome"], r["design"], r["estimator"], r["condition"]): r for r in result["rows"]}
    # outcomes x (user design: DiM + Hajek and HT at fractional 0.75; each cluster design: DiM + both at two conditions)
    assert len(rows) == 2 * (3 + 2 * 5)
    assert result["info"]["conditions"]["bernoulli"] == ["fractional 0.75", "full"]
    user = rows[("linear-in-means", "user Bernoulli", "difference_in_means", "-")]
    assert user["bias"] == pytest.approx(-1.0, abs=0.25)  # bias -g under user-level Bernoulli (docs/abtest.md)
    assert {r["design"] for r in result["removed"]} == {"cluster Bernoulli", "cluster paired"}
    assert (results_dir / "abtest_designs-quick.json").exists()
    assert "Share of the user-level bias removed" in capsys.readouterr().out


@pytest.mark.slow
def test_designs_quick(results_dir):
    payload = bench_abtest_designs.main(["--quick"])
    assert set(payload["graphs"]) == set(bench_abtest_designs.GRAPHS)
