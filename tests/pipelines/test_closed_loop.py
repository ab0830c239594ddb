"""The closed loop on the simulator: the daily job (fit-bandit warm-started, promote) fed its own decisions, each
day decided by the registry's champion, with the day's values read off the world's truth."""

from __future__ import annotations

import datetime as dt

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipelines.synthetic import CampaignConfig, CampaignWorld
from pipelines.synthetic.loop import closed_loop, cumulative_share, loop_frame, promotions


def _daily_job(date: dt.date, warm: bool) -> dict:
    fit = {"logs": "logs/date={date}", "out": "out/{date}/policy", "policy": "lin-ts", "split": "train",
           "params": {"alpha": 0.3}}
    return {"seed": 7, "experiment": "loop", "fit-bandit": fit | ({"warm_start": "previous"} if warm else {}),
            "promote": {"logs": "logs/date={date}", "out": "out/{date}/promotion.csv", "model_name": "offers",
                        "estimators": ["ips", "dr"], "incumbent": "none"}}


def test_the_loop_serves_the_logging_policy_then_its_champion_and_reads_values_off_the_truth(tmp_path, mlflow_uri):
    world = CampaignWorld.from_config(CampaignConfig(n_users=4_000, n_days=4, chunk_users=4_000), random_state=5)
    run = closed_loop(world, 4_000, 4, _daily_job, tmp_path, model_name="offers", start=dt.date(2026, 12, 1),
                      tracking_uri=mlflow_uri)
    assert run.experiment is None
    frame = loop_frame(run.days)
    assert list(frame["date"]) == ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
    first = frame.iloc[0]
    assert first["served_version"] == 0 and first["served_value"] == pytest.approx(first["logging_value"])
    assert first["promoted"]  # the first fitted policy becomes champion, and serves the next day
    assert (frame["served_version"].iloc[1:] >= 1).all()
    assert (frame["oracle_value"] >= frame["served_value"] - 1e-12).all()
    assert (frame["oracle_value"] >= frame["ceiling_value"] - 1e-12).all()
    assert (frame["ceiling_value"] > frame["logging_value"]).all()
    assert 0 < cumulative_share(frame, "oracle") <= cumulative_share(frame, "ceiling") < 1
    assert (frame["decisions"] > 0).all()
    # the champion's probabilities reach the world in the world's arm order: a policy that learned from four days
    # of logs buys more than the logging policy on the same users (its arms sort differently from the world's)
    assert (frame["served_value"].iloc[1:] > frame["logging_value"].iloc[1:]).all()
    for day in frame["date"]:
        assert (tmp_path / "logs" / f"date={day}" / "part-0.parquet").exists()
        assert (tmp_path / "out" / day / "policy").exists()
    gate = promotions(frame)
    assert len(gate) == int(frame["promoted"].sum()) >= 1
    assert (gate["ci_low"] <= gate["estimate"]).all() and (gate["estimate"] <= gate["ci_high"]).all()
    assert gate["true_value"].between(0, 1).all()
    assert gate["delivered_next_day"].iloc[0] == frame.loc[1, "served_value"]
    # the first champion, served the next day, is the one whose truth was taken on its promotion day
    assert frame.loc[1, "served_version"] == 1
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["loop"])
    jobs = runs[runs["tags.campaign.kind"] == "job"]
    assert sorted(jobs["tags.campaign.date"]) == list(frame["date"]) and (jobs["status"] == "FINISHED").all()


def test_the_loop_runs_a_graph_clustered_ab_test_against_the_logging_policy_and_scores_it_on_the_truth(
        tmp_path, mlflow_uri):
    """Clusters of the observed graph are randomized before day 1; the control group is served the logging policy
    every day, the treatment group the champion; the read-out's lift is scored against the world's lift of serving
    everyone the loop's champions against serving everyone the logging policy."""
    world = CampaignWorld.from_config(CampaignConfig(n_users=6_000, n_days=4, chunk_users=6_000), random_state=5)
    run = closed_loop(world, 6_000, 4, _daily_job, tmp_path, model_name="offers", start=dt.date(2026, 12, 1),
                      tracking_uri=mlflow_uri, contagion=1.0,
                      experiment={"experiment": "loop", "method": "louvain", "max_cluster_size": 200})
    assignment = pd.read_parquet(tmp_path / "experiment" / "assignment.parquet")
    assert len(assignment) == 6_000 and 0.3 < assignment["group"].mean() < 0.7
    assert assignment.groupby("cluster")["group"].nunique().max() == 1  # whole clusters are randomized
    logs = pd.concat([pd.read_parquet(path) for path in sorted((tmp_path / "logs").rglob("*.parquet"))])
    logs = logs.merge(assignment[["user_id", "group"]], on="user_id")
    served = logs[logs["day"] > 0]
    # the control group keeps the logging policy's propensities; the treatment group gets the champion's
    logging_p = world.logging_probabilities(world.draw_users(0, 1, 6_000))
    arm = served["arm"].map({label: k for k, label in enumerate(world.arm_labels)}).to_numpy()
    expected = logging_p[served["user_id"].to_numpy() - 1, arm]
    control = (served["group"] == 0).to_numpy()
    np.testing.assert_allclose(served["propensity"].to_numpy()[control], expected[control])
    assert not np.allclose(served["propensity"].to_numpy()[~control], expected[~control])
    table = run.experiment
    assert set(table["estimator"]) >= {"difference_in_means", "cuped"}
    truth = table["true_lift"].iloc[0]
    assert truth > 0  # the loop's champions buy more than the logging policy, on everyone
    headline = table.set_index("estimator").loc["cuped"]
    assert abs(headline["estimate"] - truth) < 3 * headline["se"]
    outcomes = pd.read_parquet(tmp_path / "experiment" / "outcomes.parquet")
    assert outcomes["purchases"].sum() == logs["reward"].sum()
    frame = loop_frame(run.days)
    assert (frame["decisions"] < logs.groupby("day").size().to_numpy()).all()  # values are the treatment group's
