"""Stage `allocate` and `pipelines.allocation.allocate_frame`: CLI and YAML job, MLflow record, Dask equals memory,
the written allocation, truth scoring on the synthetic campaign, bad input."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from budget_rl import AllocationConstraints, allocate
from pipelines.allocation import allocate_frame
from pipelines.cli import main
from pipelines.errors import InputError
from pipelines.job import build_job, load_job, run_job

LEVELS = 4


def _scores(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    faces = np.array([0.0, 2.0, 5.0, 9.0])
    response = np.sort(rng.uniform(0.0, 0.5, size=(n, LEVELS)), axis=1)
    frame = pd.DataFrame({"user_id": rng.permutation(np.arange(10 * n, 11 * n)),
                          "segment": rng.choice(["a", "b", "c"], n)})
    for j in range(LEVELS):
        frame[f"value_{j}"] = response[:, j]
        frame[f"cost_{j}"] = faces[j] * response[:, j]
    return frame


VALUES = [f"value_{j}" for j in range(LEVELS)]
COSTS = [f"cost_{j}" for j in range(LEVELS)]


@pytest.mark.parametrize("caps", [{}, {"a": 40.0, "c": 15.0}])
def test_frame_dual_equals_in_memory_and_writes_every_user(tmp_path, caps):
    frame = _scores(3000, 1)
    budget = 0.25 * frame["cost_3"].sum()
    constraints = AllocationConstraints(segment_caps=caps)
    with dask.config.set(scheduler="synchronous"):
        partitioned = allocate_frame(dd.from_pandas(frame, npartitions=7), VALUES, COSTS, budget,
                                     segment="segment", constraints=constraints, out=tmp_path / "alloc")
    memory = allocate(frame[VALUES].to_numpy(), frame[COSTS].to_numpy(), budget, constraints=constraints,
                      segments=frame["segment"], user_ids=frame["user_id"].to_numpy())
    assert partitioned.value == pytest.approx(memory.value, rel=1e-12)
    assert partitioned.spend == pytest.approx(memory.spend, rel=1e-12)
    assert partitioned.budget_multiplier == memory.budget_multiplier
    assert partitioned.fractional == memory.fractional
    written = pd.read_parquet(tmp_path / "alloc").set_index("user_id").loc[frame["user_id"]]
    assert len(written) == len(frame)
    assert (written["level"].astype(int).to_numpy() == memory.level).all()
    assert written["cost"].sum() == pytest.approx(memory.integral_spend, rel=1e-12)
    assert written["cost"].sum() <= budget * (1 + 1e-12)
    for label, cap in caps.items():
        assert written.loc[written["segment"] == label, "cost"].sum() <= cap * (1 + 1e-12)


def test_frame_lp_path_for_lp_only_constraints(tmp_path):
    frame = _scores(200, 2)
    budget = 0.1 * frame["cost_3"].sum()
    constraints = AllocationConstraints(min_treated_share=0.6)
    result = allocate_frame(dd.from_pandas(frame, npartitions=2), VALUES, COSTS, budget, constraints=constraints,
                            out=tmp_path / "alloc")
    assert result.diagnostics["method"] == "lp"
    written = pd.read_parquet(tmp_path / "alloc")
    treated = (written["level"] != "0").sum() + written["upper_share"].where(written["level"] == "0", 0).sum()
    assert treated >= 0.6 * len(frame) - 1e-6
    with pytest.raises(InputError, match="max_lp_users"):
        allocate_frame(frame, VALUES, COSTS, budget, constraints=constraints, max_lp_users=100)


@pytest.mark.parametrize(("change", "match"), [
    (lambda f: f.assign(cost_2=-f["cost_2"]), "cost_2: .* negative"),
    (lambda f: f.assign(value_1=np.where(np.arange(len(f)) == 5, np.nan, f["value_1"])), "value_1: 1 NaN"),
    (lambda f: f.assign(cost_0=0.5), "no zero-cost level"),
    (lambda f: f.drop(columns="cost_3"), "missing column"),
    (lambda f: f.assign(value_2="x"), "value_2: must be numeric"),
])
def test_frame_bad_input_is_one_line_and_writes_nothing(tmp_path, change, match):
    frame = change(_scores(100, 3))
    with pytest.raises(InputError, match=match) as error:
        allocate_frame(dd.from_pandas(frame, npartitions=2), VALUES, COSTS, 10.0, out=tmp_path / "alloc")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "alloc").exists()


def test_frame_unknown_segment_cap_fails_before_any_pass(tmp_path):
    frame = _scores(100, 4)
    with pytest.raises(InputError, match="unknown segment"):
        allocate_frame(frame, VALUES, COSTS, 10.0, segment="segment",
                       constraints=AllocationConstraints(segment_caps={"zzz": 1.0}), out=tmp_path / "alloc")
    assert not (tmp_path / "alloc").exists()


def test_cli_allocate_on_campaign_logs_frontier_and_truth(tmp_path, mlflow_uri, small_campaign, capsys):
    out = tmp_path / "allocation"
    code = main(["allocate", "--users", str(small_campaign.paths.users), "--logs", str(small_campaign.paths.logs),
                 "--out", str(out), "--budget-per-user", "0.5", "--max-iter", "30", "--tracking-uri", mlflow_uri,
                 "--experiment", "alloc"])
    assert code == 0, capsys.readouterr().err
    written = pd.read_parquet(out)
    users = pd.read_parquet(small_campaign.paths.users)
    assert sorted(written["user_id"]) == sorted(users["user_id"])
    assert set(written["level"]) <= {"control", "discount_5", "free_shipping", "cashback_10"}
    assert written["cost"].sum() <= 0.5 * len(users) * (1 + 1e-9)

    mlflow.set_tracking_uri(mlflow_uri)
    run = mlflow.search_runs(experiment_names=["alloc"]).query("`tags.campaign.stage` == 'allocate'").iloc[0]
    assert run["metrics.spend"] == pytest.approx(0.5 * len(users), rel=1e-9)  # the budget binds
    assert run["metrics.budget_multiplier"] > 0
    assert run["metrics.integral_spend"] == pytest.approx(written["cost"].sum(), rel=1e-9)
    # scored under the true response by the synthetic-truth hook (the users table lies in a generated campaign)
    assert 0 < run["metrics.true_spend"] and 0 < run["metrics.true_value"] < len(users)
    assert run["metrics.plain.log_loss"] > 0 and run["metrics.debiased.log_loss"] > 0
    assert run["params.levels"].split(",")[0] == "control"  # the zero-cost level first
    client = MlflowClient(mlflow_uri)
    figures = {a.path for a in client.list_artifacts(run["run_id"], "figures")}
    assert "figures/frontier.png" in figures


def test_yaml_job_with_scores_and_segment_caps(tmp_path, mlflow_uri):
    frame = _scores(2000, 5)
    frame.to_parquet(tmp_path / "scores.parquet")
    job = tmp_path / "job.yaml"
    job.write_text("""
experiment: alloc-yaml
allocate:
  users: scores.parquet
  scores: true
  out: allocation
  budget: 300
  segment_caps: {a: 50}
""")
    report = run_job(load_job(job), tracking_uri=mlflow_uri)
    allocation = report.results["allocate"].data["allocation"]
    memory = allocate(frame[VALUES].to_numpy(), frame[COSTS].to_numpy(), 300.0,
                      constraints=AllocationConstraints(segment_caps={"a": 50.0}), segments=frame["segment"],
                      user_ids=frame["user_id"].to_numpy())
    assert allocation.value == pytest.approx(memory.value, rel=1e-12)
    assert allocation.segment_multipliers["a"] == pytest.approx(memory.segment_multipliers["a"])
    written = pd.read_parquet(tmp_path / "allocation")
    assert written.loc[written["segment"] == "a", "cost"].sum() <= 50.0 * (1 + 1e-12)


@pytest.mark.parametrize(("args", "match"), [
    (["--budget", "-1"], "budget"),
    (["--campaign-budget", "1000"], "days: campaign_budget needs the campaign's days"),
    (["--campaign-budget", "1000", "--days", "7", "--day", "7"], "day: 7 is past the campaign's last day (6)"),
    (["--campaign-budget", "1000", "--days", "7", "--budget", "10"], "budget: set budget (today's) or"),
    (["--segment-caps", "{nowhere: 5}"], "unknown segment"),
    (["--level-costs", "{control: 0, discount_5: 5}"], "level_costs"),
    (["--level-inventory", "{gold: 5}", "--method", "lp"], "level_inventory: unknown level"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, mlflow_uri, small_campaign, capsys, args, match):
    code = main(["allocate", "--users", str(small_campaign.paths.users), "--logs", str(small_campaign.paths.logs),
                 "--out", str(tmp_path / "allocation"), "--max-iter", "5", "--tracking-uri", mlflow_uri, *args])
    assert code == 2
    err = capsys.readouterr().err
    assert match.split(":")[0] in err
    assert not (tmp_path / "allocation").exists()


def test_constrained_rl_learns_a_mixed_policy_from_generated_transitions(tmp_path, mlflow_uri, capsys):
    campaign = tmp_path / "campaign"
    assert main(["generate", "--users", "800", "--days", "2", "--out", str(campaign), "--transitions-horizon", "3",
                 "--avg-degree", "0", "--tracking-uri", mlflow_uri]) == 0
    out = tmp_path / "mixed_policy"
    code = main(["constrained-rl", "--transitions", str(campaign / "transitions"),
                 "--out", str(out), "--budget-per-user", "1.0", "--bootstrap", "5", "--tracking-uri", mlflow_uri,
                 "--experiment", "rl"])
    assert code == 0, capsys.readouterr().err
    mlflow.set_tracking_uri(mlflow_uri)
    run = mlflow.search_runs(experiment_names=["rl"]).query("`tags.campaign.stage` == 'constrained-rl'").iloc[0]
    assert 1 <= run["metrics.stored_policies"] <= 3
    assert run["metrics.spend"] <= 1.0 + 1e-9
    assert run["metrics.value_ci_low"] <= run["metrics.value_ci_high"]
    assert run["metrics.fixed_multiplier.spend"] <= 1.0 + 1e-9
    client = MlflowClient(mlflow_uri)
    components = [a.path for a in client.list_artifacts(run["run_id"], "components")]
    assert len(components) == run["metrics.stored_policies"]
    frame = pd.read_parquet(campaign / "transitions")
    decided = mlflow.pyfunc.load_model(str(out)).predict(frame)
    assert set(decided["action"]) <= {"control", "discount_5", "free_shipping", "cashback_10"}
    per_user = decided.groupby(frame["user_id"])["component"].nunique()
    assert (per_user == 1).all()  # one component per user for the whole campaign


def test_constrained_rl_with_torch_q_functions_and_no_propensities(tmp_path, mlflow_uri, capsys):
    campaign = tmp_path / "campaign"
    assert main(["generate", "--users", "400", "--days", "2", "--out", str(campaign), "--transitions-horizon", "2",
                 "--avg-degree", "0", "--tracking-uri", mlflow_uri]) == 0
    frame = pd.read_parquet(campaign / "transitions").drop(columns="propensity")
    frame.to_parquet(tmp_path / "no_propensity.parquet")
    common = ["constrained-rl", "--transitions", str(tmp_path / "no_propensity.parquet"),
              "--budget-per-user", "1.0", "--bootstrap", "2", "--tracking-uri", mlflow_uri, "--experiment", "mlp"]
    code = main([*common, "--out", str(tmp_path / "refused"), "--importance-weighting", "on"])
    assert code == 2
    assert "propensity: importance_weighting on needs a propensity column" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    assert main([*common, "--out", str(tmp_path / "mixed"), "--q-model", "mlp"]) == 0, capsys.readouterr().err
    mlflow.set_tracking_uri(mlflow_uri)
    run = mlflow.search_runs(experiment_names=["mlp"]).query("`tags.campaign.stage` == 'constrained-rl'").iloc[0]
    assert run["params.q_model"] == "mlp" and run["params.importance_weighted"] == "false"
    assert 1 <= run["metrics.stored_policies"] <= 3
    assert run["metrics.spend"] <= 1.0 + 1e-9


def test_constrained_rl_without_transitions_is_a_one_line_error(tmp_path, mlflow_uri, capsys):
    code = main(["constrained-rl", "--out", str(tmp_path / "mixed"), "--tracking-uri", mlflow_uri])
    assert code == 2
    assert "transitions" in capsys.readouterr().err
    assert not (tmp_path / "mixed").exists()


def test_the_old_allocate_method_for_constrained_rl_is_refused_naming_the_stage(tmp_path, mlflow_uri, capsys):
    (tmp_path / "job.yaml").write_text("allocate: {method: constrained_rl, transitions: t, out: mixed}\n")
    code = main(["run", str(tmp_path / "job.yaml"), "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "'transitions' in section 'allocate' is retired" in err and "`constrained-rl`" in err


def test_a_daily_job_gets_todays_budget_from_the_campaigns_spend_so_far(tmp_path, mlflow_uri, small_campaign):
    """campaign_budget 1,000 over 7 days, day 3, 500 spent of 480 planned: (0.995 x 1000 - 500) / 4 / (500 / 480);
    a spent campaign gives nobody a paid level."""
    common = ["allocate", "--users", str(small_campaign.paths.users), "--logs", str(small_campaign.paths.logs),
              "--max-iter", "5", "--tracking-uri", mlflow_uri, "--campaign-budget", "1000", "--days", "7"]
    assert main([*common, "--out", str(tmp_path / "day3"), "--day", "3", "--spent-so-far", "500",
                 "--planned-so-far", "480"]) == 0
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["campaign"], order_by=["start_time DESC"])
    stage = runs[runs["tags.campaign.stage"] == "allocate"].iloc[0]
    assert stage["metrics.budget"] == pytest.approx((0.995 * 1000 - 500) / 4 / (500 / 480))
    assert stage["metrics.spend"] <= stage["metrics.budget"] + 1e-6
    assert main([*common, "--out", str(tmp_path / "spent"), "--day", "5", "--spent-so-far", "1000"]) == 0
    spent = pd.read_parquet(tmp_path / "spent")
    assert (spent["level"] == "control").all()


def test_a_daily_job_can_give_each_days_figures_and_follow_the_trend_of_their_ratios(tmp_path, mlflow_uri,
                                                                                     small_campaign):
    """With the days' figures, `calibration: total` is the ratio of their totals; `trend` reads the line through
    the daily ratios (0.9, 0.8, 0.7 on equal plans: 0.6 today). Figures that do not fit the day are refused."""
    def job(out: str, **extra) -> dict:
        return {"allocate": {"users": str(small_campaign.paths.users), "logs": str(small_campaign.paths.logs),
                             "out": str(tmp_path / out), "max_iter": 5, "campaign_budget": 1000.0, "days": 7,
                             "day": 3, "planned_by_day": [100.0, 100.0, 100.0], **extra}}

    budgets = {}
    for calibration in ("total", "trend"):
        report = run_job(build_job(job(calibration, spent_by_day=[90.0, 80.0, 70.0], calibration=calibration)),
                         tracking_uri=mlflow_uri)
        budgets[calibration] = report.results["allocate"].data["allocation"].budget
    assert budgets["total"] == pytest.approx((0.995 * 1000 - 240) / 4 / 0.8)
    assert budgets["trend"] == pytest.approx((0.995 * 1000 - 240) / 4 / 0.6)
    for extra, message in (
            ({"spent_by_day": [90.0, 80.0]}, r"need one figure per day run \(3 before day 3\), got 2 and 3"),
            ({"spent_by_day": [90.0, 80.0, 70.0], "spent_so_far": 240.0}, "not both"),
            ({"spent_by_day": [90.0, -1.0, 70.0]}, "must be finite and >= 0")):
        with pytest.raises(InputError, match=message):
            run_job(build_job(job("bad", **extra)), tracking_uri=mlflow_uri)
    with pytest.raises(InputError, match="calibration: 'trend' needs spent_by_day and planned_by_day"):
        section = job("bad", calibration="trend")["allocate"]
        section.pop("planned_by_day")
        run_job(build_job({"allocate": section}), tracking_uri=mlflow_uri)
    assert not (tmp_path / "bad").exists()
