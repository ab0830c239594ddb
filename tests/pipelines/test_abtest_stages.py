"""Stages assign and readout: CLI commands, a YAML job with MLflow records, the written tables, reproducibility,
the simulated experiment on the generated campaign, and bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.job import load_job, run_job


def _assign(small_campaign, out, mlflow_uri, *extra):
    return main(["assign", "--edges", str(small_campaign.paths.edges), "--users", str(small_campaign.paths.users),
                 "--out", str(out), "--tracking-uri", mlflow_uri, *extra])


def _assign_run(mlflow_uri, experiment):
    """The MLflow record of the assign stage in `experiment`."""
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=[experiment])
    return runs[runs["tags.campaign.stage"] == "assign"].iloc[0]


def test_cli_assign_writes_the_assignment_and_logs_diagnostics(tmp_path, mlflow_uri, small_campaign, capsys):
    out = tmp_path / "assignment.parquet"
    code = _assign(small_campaign, out, mlflow_uri, "--max-cluster-size", "200", "--salt", "spring",
                   "--exposure", "fractional:0.5", "--experiment", "ab")
    assert code == 0, capsys.readouterr().err
    table = pd.read_parquet(out)
    users = pd.read_parquet(small_campaign.paths.users, columns=["user_id"])
    assert sorted(table["user_id"]) == sorted(users["user_id"])
    assert list(table.columns[:3]) == ["user_id", "cluster", "group"]
    assert table.groupby("cluster")["group"].nunique().max() == 1
    assert table.groupby("cluster").size().max() <= 200
    assert table["exposure_p1"].between(0, 0.5).all() and table["exposure_p0"].between(0, 0.5).all()
    stage = _assign_run(mlflow_uri, "ab")
    assert stage["metrics.n_clusters"] == table["cluster"].nunique()
    assert 0 < stage["metrics.cut_weight_share"] < 0.5
    assert stage["params.salt"] == "spring"
    # Same salt, same groups: re-running reproduces the file.
    again = tmp_path / "again.parquet"
    assert _assign(small_campaign, again, mlflow_uri, "--max-cluster-size", "200", "--salt", "spring",
                   "--exposure", "fractional:0.5") == 0
    pd.testing.assert_frame_equal(pd.read_parquet(again), table)


def test_cli_readout_reads_outcomes_and_writes_the_effect_table(tmp_path, mlflow_uri, small_campaign, capsys):
    assignment = tmp_path / "assignment.parquet"
    assert _assign(small_campaign, assignment, mlflow_uri, "--salt", "s1") == 0
    groups = pd.read_parquet(assignment)
    rng = np.random.default_rng(0)
    pre = rng.normal(size=len(groups))
    outcomes = pd.DataFrame({"user_id": groups["user_id"], "pre": pre,
                             "sales": 2.0 + 0.3 * groups["group"] + pre + 0.5 * rng.normal(size=len(groups))})
    outcomes.to_parquet(tmp_path / "outcomes.parquet")
    out = tmp_path / "effects.csv"
    code = main(["readout", "--assignment", str(assignment), "--outcomes", str(tmp_path / "outcomes.parquet"),
                 "--metric", "sales", "--pre-metric", "pre", "--out", str(out), "--tracking-uri", mlflow_uri,
                 "--experiment", "ro"])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out).set_index("estimator")
    assert list(table.index) == ["difference_in_means", "cuped"]
    assert table.loc["cuped", "se"] < 0.8 * table.loc["difference_in_means", "se"]
    assert table.loc["cuped", "ci_low"] < 0.3 < table.loc["cuped", "ci_high"]
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["ro"])
    stage = runs[runs["tags.campaign.stage"] == "readout"].iloc[0]
    assert stage["metrics.cuped.estimate"] == pytest.approx(table.loc["cuped", "estimate"])
    assert stage["metrics.srm.alarm"] == 0.0


def test_yaml_job_generates_assigns_and_reads_out_a_simulated_experiment(tmp_path, mlflow_uri):
    job_file = tmp_path / "job.yaml"
    job_file.write_text("""
seed: 5
experiment: ab-job
generate: {out: data/campaign, n_users: 4000, n_days: 1}
assign:
  edges: data/campaign/edges
  users: data/campaign/users
  out: out/assignment.parquet
  max_cluster_size: 300
simulate-outcomes:
  assignment: out/assignment.parquet
  campaign: data/campaign
  out: out/outcomes.parquet
  effect: 0.2
  spillover: 0.5
  noise: 0.5
readout:
  assignment: out/assignment.parquet
  outcomes: out/outcomes.parquet
  out: out/effects.csv
  pre_metric: pre_outcome
  edges: data/campaign/edges
  users: data/campaign/users
  exposure: "fractional:0.75"
""")
    report = run_job(load_job(job_file), tracking_uri=mlflow_uri)
    assign = report.results["assign"]
    assert 0.0 <= assign.data["diagnostics"].cut_weight_share < 0.3
    readout = report.results["readout"]
    table = readout.data["readout"].table.set_index("estimator")
    assert list(table.index) == ["difference_in_means", "cuped", "horvitz_thompson", "hajek"]
    truth = readout.data["truth"].metrics["true_global_effect"]  # scored by the synthetic-truth hook
    assert truth == report.results["simulate-outcomes"].data["global_effect"]
    assert truth == pytest.approx(0.2 + 0.5 * readout.data["readout"].n_with_outcome / 4000, abs=0.05)
    # The cluster design keeps most interactions in one arm: CUPED's interval covers the global effect and sits
    # far above the direct effect alone a user-level test would measure.
    assert table.loc["cuped", "ci_low"] < truth < table.loc["cuped", "ci_high"]
    assert table.loc["cuped", "estimate"] > 0.2 + 0.5 * 0.6
    assert (tmp_path / "out" / "outcomes.parquet").exists()
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["ab-job"])
    stage = runs[runs["tags.campaign.stage"] == "assign"].iloc[0]
    assert 0.0 <= stage["metrics.true_interaction_cut_share"] < 0.5
    readout_run = runs[runs["tags.campaign.stage"] == "readout"].iloc[0]
    assert readout_run["metrics.cuped.error"] == pytest.approx(table.loc["cuped", "estimate"] - truth)


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, mlflow_uri, small_campaign, capsys):
    out = tmp_path / "assignment.parquet"
    assert _assign(small_campaign, out, mlflow_uri, "--exposure", "most") == 2
    assert "exposure" in capsys.readouterr().err
    assert _assign(small_campaign, out, mlflow_uri, "--p", "1.5") == 2
    capsys.readouterr()
    bad_edges = tmp_path / "edges.parquet"
    pd.DataFrame({"src": [1, 2], "dst": [2, 3], "weight": [1.0, -1.0]}).to_parquet(bad_edges)
    assert main(["assign", "--edges", str(bad_edges), "--out", str(out), "--tracking-uri", mlflow_uri]) == 2
    err = capsys.readouterr().err
    assert "weight" in err and "Traceback" not in err
    assert not out.exists()

    assert _assign(small_campaign, out, mlflow_uri) == 0
    outcomes = pd.DataFrame({"user_id": [10**9, 10**9 + 1], "outcome": [1.0, 2.0]})
    outcomes.to_parquet(tmp_path / "outcomes.parquet")
    effects = tmp_path / "effects.csv"
    assert main(["readout", "--assignment", str(out), "--outcomes", str(tmp_path / "outcomes.parquet"),
                 "--out", str(effects), "--tracking-uri", mlflow_uri]) == 2
    err = capsys.readouterr().err
    assert "not in the assignment" in err and "Traceback" not in err
    assert not effects.exists()


def test_cli_linklouvain_reports_the_link_auc_and_clusters_the_predicted_graph(tmp_path, mlflow_uri, small_campaign,
                                                                               capsys):
    out = tmp_path / "assignment.parquet"
    code = _assign(small_campaign, out, mlflow_uri, "--method", "linklouvain", "--experiment", "ll",
                   "--max-cluster-size", "300")
    assert code == 0, capsys.readouterr().err
    table = pd.read_parquet(out)
    assert table.groupby("cluster").size().max() <= 300
    stage = _assign_run(mlflow_uri, "ll")
    assert stage["metrics.link_auc"] > 0.8
    assert stage["metrics.link_kept"] > 0


def test_cli_leiden_gives_connected_clusters_of_the_observed_graph(tmp_path, mlflow_uri, small_campaign, capsys):
    import networkx as nx

    from abtest import build_graph

    out = tmp_path / "assignment.parquet"
    code = _assign(small_campaign, out, mlflow_uri, "--method", "leiden", "--experiment", "ld",
                   "--max-cluster-size", "300")
    assert code == 0, capsys.readouterr().err
    table = pd.read_parquet(out)
    assert table.groupby("cluster").size().max() <= 300
    graph = build_graph(pd.read_parquet(small_campaign.paths.edges), table["user_id"]).to_networkx()
    for _, members in table.groupby("cluster")["user_id"]:
        assert nx.is_connected(graph.subgraph(members.tolist()))
    stage = _assign_run(mlflow_uri, "ld")
    assert stage["params.method"] == "leiden" and stage["metrics.n_clusters"] == table["cluster"].nunique()
