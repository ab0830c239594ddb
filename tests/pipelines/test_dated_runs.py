"""Dated runs of a daily job: `{date}` templates, a rerun of a finished date is a no-op naming the earlier run,
`--force` and changed inputs recompute, a backfill runs the dates in order and stops at the first failure, a date
whose run was killed mid-way ends with one FINISHED run and one set of outputs; and fit-bandit's warm starts from
the previous date's policy (linear: the fit on every day, to 1e-10, with older days forgotten; neural: training
continued from its weights)."""

from __future__ import annotations

import copy
import datetime as dt
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bandits import LinUCB
from bandits.feedback import LogReader
from bandits.policies.linear import LinearStats
from pipelines.cli import main
from pipelines.dates import dates_between, fill_dates
from pipelines.errors import InputError
from pipelines.job import load_job
from pipelines.models import load_fitted_policy
from pipelines.tracking import DATE_TAG, JOB_KIND_TAG, JOB_NAME_TAG

DAY = dt.date(2026, 12, 5)


def test_templates_fill_the_run_date_with_offsets_and_formats():
    job = {"seed": 1, "fit-bandit": {"logs": "data/logs/date={date-1}", "out": "out/{date}/policy"},
           "profile-logs": {"out": "out/{date+2:%Y%m%d}/{date:%d.%m}.csv", "columns": ["arm", "{date-10}"]}}
    filled = fill_dates(job, DAY)
    assert filled["fit-bandit"] == {"logs": "data/logs/date=2026-12-04", "out": "out/2026-12-05/policy"}
    assert filled["profile-logs"] == {"out": "out/20261207/05.12.csv", "columns": ["arm", "2026-11-25"]}
    assert filled["seed"] == 1 and fill_dates("no template", None) == "no template"
    assert [d.isoformat() for d in dates_between(DAY, DAY + dt.timedelta(days=2))] == [
        "2026-12-05", "2026-12-06", "2026-12-07"]


@pytest.mark.parametrize("value, date, message", [
    ("out/{day}/x", DAY, "config: a.out: unknown template {day} (templates: {date}, {date-1}"),
    ("out/{date}/x", None, "config: a.out: 'out/{date}/x' needs a run date: pass --date YYYY-MM-DD or set date:"),
])
def test_bad_templates_are_refused_in_one_line_naming_the_key(value, date, message):
    with pytest.raises(InputError) as error:
        fill_dates({"a": {"out": value}}, date)
    assert str(error.value).startswith(message)


JOB = """
experiment: daily
profile-logs:
  logs: ../logs/date={date-1}        # yesterday's export
  out: ../out/{date}/profile.csv
  randomized: randomized
"""


@pytest.fixture
def daily(small_campaign, tmp_path) -> Path:
    """A dated job over daily log exports for 2026-12-03 .. 2026-12-05 (the same campaign's logs each day)."""
    for day in ("2026-12-03", "2026-12-04", "2026-12-05"):
        shutil.copytree(small_campaign.paths.logs, tmp_path / "logs" / f"date={day}")
    job = tmp_path / "jobs" / "daily.yaml"
    job.parent.mkdir()
    job.write_text(JOB)
    return job


def _job_runs(uri: str, date: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["daily"])
    return runs[(runs[f"tags.{JOB_KIND_TAG}"] == "job") & (runs[f"tags.{DATE_TAG}"] == date)]


def test_a_finished_date_is_not_recomputed_unless_forced_or_its_inputs_change(daily, mlflow_uri, capsys):
    run = ["run", str(daily), "--date", "2026-12-05", "--tracking-uri", mlflow_uri]
    assert load_job(daily, date="2026-12-05").stages[0][1].logs.name == "date=2026-12-04"
    assert main(run) == 0
    output = daily.parent.parent / "out" / "2026-12-05" / "profile.csv"
    first = _job_runs(mlflow_uri, "2026-12-05")
    assert len(first) == 1 and first["status"].iloc[0] == "FINISHED" and output.exists()
    assert first[f"tags.{JOB_NAME_TAG}"].iloc[0] == "daily"
    written = output.stat().st_mtime_ns
    capsys.readouterr()
    assert main(run) == 0  # the same date, config and inputs: nothing runs
    said = capsys.readouterr().out
    assert "2026-12-05: done before" in said and first["run_id"].iloc[0] in said.replace("\n", "")
    assert len(_job_runs(mlflow_uri, "2026-12-05")) == 1 and output.stat().st_mtime_ns == written
    assert main([*run, "--force"]) == 0
    assert (_job_runs(mlflow_uri, "2026-12-05")["status"] == "FINISHED").sum() == 2
    extra = daily.parent.parent / "logs" / "date=2026-12-04"
    shutil.copy(next(extra.glob("*.parquet")), extra / "part-late-arrival.parquet")  # a late file: new inputs
    assert main(run) == 0
    assert len(_job_runs(mlflow_uri, "2026-12-05")) == 3
    shutil.rmtree(output.parent)  # outputs gone: the date runs again
    assert main(run) == 0 and output.exists()


WINDOW_JOB = """
experiment: daily
profile-logs:
  logs: ../logs/date={date-6..date-1}     # the last week's exports
  out: ../out/{date}/profile.csv
  randomized: randomized
"""


def test_a_window_of_dates_reads_the_dates_that_exist_as_one_table_and_reruns_when_one_arrives(
        daily, small_campaign, mlflow_uri, capsys):

    daily.write_text(WINDOW_JOB)
    logs = daily.parent.parent / "logs"
    section = load_job(daily, date="2026-12-06").stages[0][1]
    assert section.logs == logs / ".windows" / "date=2026-11-30..2026-12-05"
    # 2026-12-03, -04 and -05 exist: their files, in date order, as one table (every row of the three exports)
    names = sorted(link.name for link in section.logs.iterdir())
    assert names[0].startswith("2026-12-03-") and names[-1].startswith("2026-12-05-")
    table = pd.read_parquet(section.logs)
    assert len(table) == 3 * len(pd.read_parquet(small_campaign.paths.logs))
    assert pd.read_parquet(logs).shape[0] == 3 * len(pd.read_parquet(small_campaign.paths.logs))  # root unchanged
    run = ["run", str(daily), "--date", "2026-12-06", "--tracking-uri", mlflow_uri]
    assert main(run) == 0
    capsys.readouterr()
    assert main(run) == 0 and "done before" in capsys.readouterr().out
    shutil.copytree(small_campaign.paths.logs, logs / "date=2026-12-01")  # a late export inside the window
    assert main(run) == 0 and "done before" not in capsys.readouterr().out
    assert len(_job_runs(mlflow_uri, "2026-12-06")) == 2
    assert len(list(section.logs.iterdir())) == 4 * len(names) // 3
    with pytest.raises(InputError, match=r"profile-logs.logs: no date of the window 2026-11-21..2026-11-26 has a"):
        load_job(daily, date="2026-11-27")
    with pytest.raises(InputError, match=r"ends \(2026-12-04\) before it starts \(2026-12-06\)"):
        fill_dates({"a": {"logs": "x/{date+1..date-1}"}}, DAY)


def test_a_backfill_runs_the_dates_in_order_and_stops_at_the_first_failure(daily, mlflow_uri, capsys):
    assert main(["run", str(daily), "--date", "2026-12-05", "--tracking-uri", mlflow_uri]) == 0
    code = main(["backfill", str(daily), "--from", "2026-12-04", "--to", "2026-12-08", "--tracking-uri",
                 mlflow_uri])
    captured = capsys.readouterr()
    assert code == 2
    # 2026-12-07 reads the logs of 2026-12-06, which were never exported
    assert captured.err.startswith("error: backfill stopped at 2026-12-07 (1 later date(s) not run): ")
    assert "date=2026-12-06" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "2026-12-05: done before" in captured.out
    out = daily.parent.parent / "out"
    assert sorted(p.name for p in out.iterdir()) == ["2026-12-04", "2026-12-05", "2026-12-06"]
    for date in ("2026-12-04", "2026-12-05", "2026-12-06"):
        assert (_job_runs(mlflow_uri, date)["status"] == "FINISHED").sum() == 1
    assert _job_runs(mlflow_uri, "2026-12-08").empty


def test_a_date_whose_run_was_killed_ends_with_one_finished_run(daily, mlflow_uri):
    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("daily")
    tags = {JOB_KIND_TAG: "job", DATE_TAG: "2026-12-04", JOB_NAME_TAG: "daily"}
    killed = client.create_run(experiment, tags=tags, run_name="daily")  # left RUNNING, as a SIGKILL leaves it
    stage = client.create_run(experiment, tags={"mlflow.parentRunId": killed.info.run_id, JOB_KIND_TAG: "stage"})
    assert main(["run", str(daily), "--date", "2026-12-04", "--tracking-uri", mlflow_uri]) == 0
    runs = _job_runs(mlflow_uri, "2026-12-04")
    assert sorted(runs["status"]) == ["FINISHED", "KILLED"]
    assert client.get_run(stage.info.run_id).info.status == "KILLED"
    assert (daily.parent.parent / "out" / "2026-12-04" / "profile.csv").exists()


def test_a_bad_date_is_refused_in_one_line(daily, mlflow_uri, capsys):
    assert main(["run", str(daily), "--date", "2026-13-01", "--tracking-uri", mlflow_uri]) == 2
    assert capsys.readouterr().err.strip() == "error: --date: '2026-13-01' is not a date (YYYY-MM-DD)"
    assert main(["run", str(daily), "--tracking-uri", mlflow_uri]) == 2
    assert "needs a run date: pass --date YYYY-MM-DD" in capsys.readouterr().err


# ---------------------------------------------------------------------------- warm starts of fit-bandit
def _warm_job(policy: str, warm: str, forgetting: float = 1.0) -> str:
    return f"""
experiment: daily
run_name: bandit
fit-bandit:
  logs: ../logs/date={{date}}
  out: ../out/{{date}}/policy
  policy: {policy}
  split: all
  params: {{{'hidden: [8], epochs: 2' if policy == 'neural-ts' else 'alpha: 0.5'}}}
{warm}  forgetting: {forgetting}
"""


@pytest.fixture
def two_days(small_campaign, tmp_path) -> tuple[Path, Path, pd.DataFrame]:
    """Daily exports of the campaign's days 0-1 (2026-12-04) and 2-4 (2026-12-05); job files without and with
    warm_start: previous (one job name, `bandit`)."""
    logs = pd.read_parquet(small_campaign.paths.logs)
    for date, days in (("2026-12-04", [0, 1]), ("2026-12-05", [2, 3, 4])):
        folder = tmp_path / "logs" / f"date={date}"
        folder.mkdir(parents=True)
        logs[logs["day"].isin(days)].to_parquet(folder / "part-0.parquet", index=False)
    (tmp_path / "jobs").mkdir()
    return tmp_path / "jobs", tmp_path / "out", logs


@pytest.mark.parametrize("forgetting", [1.0, 0.5])
def test_a_warm_started_linear_policy_is_the_fit_on_every_day_with_older_days_forgotten(two_days, mlflow_uri,
                                                                                        forgetting):
    jobs, out, logs = two_days
    cold, warm = jobs / "cold.yaml", jobs / "warm.yaml"
    cold.write_text(_warm_job("lin-ucb", ""))
    warm.write_text(_warm_job("lin-ucb", "  warm_start: previous\n", forgetting))
    assert main(["run", str(cold), "--date", "2026-12-04", "--tracking-uri", mlflow_uri]) == 0
    assert main(["run", str(warm), "--date", "2026-12-05", "--tracking-uri", mlflow_uri]) == 0
    first, second = (load_fitted_policy(out / date / "policy") for date in ("2026-12-04", "2026-12-05"))
    assert second.features == first.features and second.arms == first.arms
    # the reference: one fit on both days' rows at once, older rows weighted forgetting^1 (the dates are a day apart)
    read = LogReader(first.encoder, tuple(first.arms), propensity=None)
    feedback = read(logs)
    weights = np.where(logs["day"].isin([0, 1]), forgetting, 1.0)
    stats = LinearStats.partial(feedback.contexts, feedback.arms, feedback.rewards, len(first.arms),
                                weights=weights)
    reference = LinUCB(alpha=0.5).fit_statistics(stats, first.arms, list(first.encoder.feature_names_out_))
    np.testing.assert_allclose(second.policy.theta_, reference.theta_, rtol=1e-10, atol=1e-12)
    if forgetting == 1.0:
        alone = LinUCB(alpha=0.5).fit(feedback)  # the in-memory fit on every row
        np.testing.assert_allclose(second.policy.theta_, alone.theta_, rtol=1e-10, atol=1e-12)


def test_a_warm_started_date_is_redone_when_the_date_it_started_from_is_redone(two_days, mlflow_uri, capsys):
    """The run key of a date that continues from the previous date's policy includes that date's run: rerunning
    the later date is a no-op until the earlier date is run again (`--force`), and then it recomputes."""
    jobs, out, _ = two_days
    cold, warm = jobs / "cold.yaml", jobs / "warm.yaml"
    cold.write_text(_warm_job("lin-ucb", ""))
    warm.write_text(_warm_job("lin-ucb", "  warm_start: previous\n"))
    monday = ["run", str(cold), "--date", "2026-12-04", "--tracking-uri", mlflow_uri]
    tuesday = ["run", str(warm), "--date", "2026-12-05", "--tracking-uri", mlflow_uri]
    assert main(monday) == 0 and main(tuesday) == 0
    capsys.readouterr()
    assert main(tuesday) == 0 and "done before" in capsys.readouterr().out
    assert main([*monday, "--force"]) == 0
    capsys.readouterr()
    assert main(tuesday) == 0 and "done before" not in capsys.readouterr().out
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["daily"], filter_string=f"tags.`{DATE_TAG}` = '2026-12-05'")
    assert (runs[f"tags.{JOB_KIND_TAG}"] == "job").sum() == 2


def test_a_warm_started_neural_policy_continues_from_its_weights(two_days, mlflow_uri):
    jobs, out, logs = two_days
    cold, warm = jobs / "cold.yaml", jobs / "warm.yaml"
    cold.write_text(_warm_job("neural-ts", ""))
    warm.write_text(_warm_job("neural-ts", "  warm_start: previous\n"))
    assert main(["run", str(cold), "--date", "2026-12-04", "--tracking-uri", mlflow_uri]) == 0
    assert main(["run", str(warm), "--date", "2026-12-05", "--tracking-uri", mlflow_uri]) == 0
    first, second = (load_fitted_policy(out / date / "policy") for date in ("2026-12-04", "2026-12-05"))
    # its replay buffer holds both days (a fresh fit on the second day would hold only that day's rows)
    assert len(second.policy.buffer_[0]) == min(len(logs), second.policy.max_buffer)
    continued = copy.deepcopy(first.policy).partial_fit(LogReader(first.encoder, tuple(first.arms),
                                                                  propensity=None)(logs[logs["day"] >= 2]))
    for ours, theirs in zip(second.policy.network_.parameters(), continued.network_.parameters(), strict=True):
        np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-10)


@pytest.mark.parametrize("warm, message", [
    ("  warm_start: previous\n", "fit-bandit.warm_start: no finished run of this job before 2026-12-04 to start "
                                 "from; run that date without warm_start first"),
    ("", "fit-bandit.forgetting: applies to a warm start; set warm_start too"),
])
def test_warm_start_without_an_earlier_policy_is_refused_naming_the_date(two_days, mlflow_uri, capsys, warm,
                                                                        message):
    jobs, out, _ = two_days
    (jobs / "job.yaml").write_text(_warm_job("lin-ucb", warm, 1.0 if warm else 0.9))
    assert main(["run", str(jobs / "job.yaml"), "--date", "2026-12-04", "--tracking-uri", mlflow_uri]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (out / "2026-12-04").exists()
