"""Dated runs of a daily job: `{date}` templates, a rerun of a finished date is a no-op naming the earlier run,
`--force` and changed inputs recompute, a backfill runs the dates in order and stops at the first failure, and a
date whose run was killed mid-way ends with one FINISHED run and one set of outputs."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipelines.cli import main
from pipelines.dates import dates_between, fill_dates
from pipelines.errors import InputError
from pipelines.job import load_job
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
