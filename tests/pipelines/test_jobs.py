"""Jobs end to end on the embedded defaults: config, stage registry, MLflow records, FAILED runs, CLI, demo."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipelines import stages  # noqa: F401
from pipelines.cli import main
from pipelines.compare import compare_runs
from pipelines.config import StageConfig
from pipelines.errors import InputError
from pipelines.job import build_job, load_job, run_job
from pipelines.stages.registry import StageContext, get_stage, registered_stages
from pipelines.tracking import fingerprint, flatten


def _job_file(folder: Path, body: str) -> Path:
    path = folder / "jobs" / "job.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


JOB = """
seed: 5
experiment: unit
generate: {out: ../data/campaign, n_users: 1500, n_days: 3, chunk_users: 500}
profile-logs: {logs: ../data/campaign/logs, out: ../out/profile.csv, randomized: randomized}
"""


def test_paths_are_relative_to_the_config_file_and_sections_run_in_registry_order(tmp_path):
    job = load_job(_job_file(tmp_path, JOB))
    assert [stage.name for stage, _ in job.stages] == ["generate", "profile-logs"]
    generate, profile = job.stages[0][1], job.stages[1][1]
    assert generate.out == (tmp_path / "data" / "campaign").resolve()
    assert profile.out == (tmp_path / "out" / "profile.csv").resolve()
    assert job.settings.seed == 5 and job.source == "job"
    assert profile.output_paths() == [profile.out]


def test_registry_orders_stages_and_each_has_a_command():
    names = [stage.name for stage in registered_stages()]
    assert names[:2] == ["generate", "profile-logs"]
    assert names == sorted(names, key=lambda n: get_stage(n).order)
    assert all(issubclass(stage.config_model, StageConfig) for stage in registered_stages())


def test_stage_seeds_are_stable_and_distinct():
    context = StageContext(seed=3, log=None)  # type: ignore[arg-type]
    assert context.stage_seed("a") == StageContext(seed=3, log=None).stage_seed("a")  # type: ignore[arg-type]
    assert context.stage_seed("a") != context.stage_seed("b")
    assert context.stage_seed("a") != StageContext(seed=4, log=None).stage_seed("a")  # type: ignore[arg-type]


def test_a_job_is_one_mlflow_run_with_a_nested_run_per_stage(tmp_path, mlflow_uri):
    report = run_job(load_job(_job_file(tmp_path, JOB)), tracking_uri=mlflow_uri)
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["unit"])
    job = runs[runs["run_id"] == report.run_id].iloc[0]
    assert job["status"] == "FINISHED"
    assert job["params.generate.n_users"] == "1500" and job["params.seed"] == "5"
    assert len(job["tags.campaign.input_fingerprint"]) == 64
    assert job["tags.campaign.version"] == "0.1.0"
    assert job["tags.campaign.git_commit"] != ""
    nested = runs[runs["tags.mlflow.parentRunId"] == report.run_id]
    assert sorted(nested["tags.campaign.stage"]) == ["generate", "profile-logs"]
    assert (nested["status"] == "FINISHED").all()
    profile_run = nested[nested["tags.campaign.stage"] == "profile-logs"].iloc[0]
    assert profile_run["metrics.rows"] == report.results["generate"].summary["log rows"]
    assert profile_run["params.randomized"] == "randomized"
    client = MlflowClient(mlflow_uri)
    artifacts = {a.path for folder in ("tables", "figures")
                 for a in client.list_artifacts(profile_run["run_id"], folder)}
    assert {"tables/log_profile.csv", "figures/arm_values.png"} <= artifacts
    config_text = mlflow.artifacts.load_text(f"runs:/{report.run_id}/config.yaml")
    assert "n_users: 1500" in config_text
    profile = pd.read_csv(tmp_path / "out" / "profile.csv", index_col="arm")
    assert profile["rows"].sum() == profile_run["metrics.rows"]


def test_a_failing_stage_marks_its_run_and_the_job_failed(tmp_path, mlflow_uri, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("pipelines.stages.profile_logs.run_statistic", broken)
    code = main(["run", str(_job_file(tmp_path, JOB)), "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err
    assert code == 1 and "disk on fire" in err and "internal error" in err
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["unit"])
    status = dict(zip(runs["tags.mlflow.runName"], runs["status"], strict=True))
    assert status == {"job": "FAILED", "generate": "FINISHED", "profile-logs": "FAILED"}
    assert not (tmp_path / "out" / "profile.csv").exists()


def test_an_internal_value_error_is_a_bug_not_bad_input(tmp_path, mlflow_uri, monkeypatch, capsys):
    """A ValueError deep inside a stage (here: the per-arm profile's last step) exits 1 with its traceback, and the
    job's and the stage's MLflow runs record the error's type and message, not only FAILED."""
    def broken(self, state):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setattr("pipelines.profile.ArmProfile.finalize", broken)
    code = main(["run", str(_job_file(tmp_path, JOB)), "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" in err and "could not be broadcast" in err and "internal error" in err
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["unit"]).set_index("tags.mlflow.runName")
    for name in ("job", "profile-logs"):
        assert runs.loc[name, "status"] == "FAILED"
        assert runs.loc[name, "tags.campaign.error_type"] == "ValueError"
        assert "could not be broadcast" in runs.loc[name, "tags.campaign.error"]
        traceback_text = mlflow.artifacts.load_text(f"runs:/{runs.loc[name, 'run_id']}/error.txt")
        assert "Traceback" in traceback_text and "in broken" in traceback_text
    assert pd.isna(runs.loc["generate"].get("tags.campaign.error_type"))


def test_an_input_error_mid_job_is_one_line_and_recorded(tmp_path, mlflow_uri, capsys):
    """Bad input met inside a stage: exit 2, one line naming the stage, and the error on both MLflow runs."""
    body = JOB.replace("randomized: randomized}", "reward: no_such_column}")
    code = main(["run", str(_job_file(tmp_path, body)), "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "no_such_column" in err
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["unit"]).set_index("tags.mlflow.runName")
    for name in ("job", "profile-logs"):
        assert runs.loc[name, "tags.campaign.error_type"] == "InputError"
        assert "no_such_column" in runs.loc[name, "tags.campaign.error"]


def test_input_fingerprint_follows_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.parquet").write_bytes(b"one")
    first = fingerprint([tmp_path / "a"])
    assert fingerprint([tmp_path / "a"]) == first
    (tmp_path / "a" / "x.parquet").write_bytes(b"two")
    assert fingerprint([tmp_path / "a"]) != first


def test_flatten_nested_params():
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2], "f": None}) == {
        "a.b": "1", "a.c.d": "x", "e": "[1, 2]", "f": "null"}


def test_demo_runs_every_stage_on_embedded_defaults(in_tmp, capsys, _mlflow_template):
    import shutil

    shutil.copy(_mlflow_template, in_tmp / "mlflow.db")  # the embedded default store, pre-migrated
    code = main(["demo", "--users", "2000", "--days", "3"])
    out = capsys.readouterr().out
    assert code == 0
    for stage in registered_stages():
        if stage.demo is not None:
            assert stage.name in out
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in out
    assert (in_tmp / "demo-output" / "campaign" / "campaign.json").exists()
    assert any((in_tmp / "mlartifacts").rglob("log_profile.csv"))

    code = main(["demo", "--users", "2000", "--days", "3", "--seed", "1"])
    assert code == 0
    capsys.readouterr()
    table = compare_runs("campaign-demo")
    assert table.shape[1] == 2 and "profile-logs.rows" in table.index
    assert main(["compare", "--experiment", "campaign-demo", "--metric", "rows", "--plot", "cmp.png"]) == 0
    assert "profile-logs.rows" in capsys.readouterr().out and (in_tmp / "cmp.png").stat().st_size > 1000
    assert main(["compare", "--experiment", "nope"]) == 2


def test_stage_command_runs_one_tracked_stage(tmp_path, mlflow_uri, small_campaign, capsys):
    out = tmp_path / "profile.csv"
    code = main(["profile-logs", "--logs", str(small_campaign.paths.logs), "--out", str(out),
                 "--propensity", "none", "--tracking-uri", mlflow_uri, "--experiment", "one"])
    assert code == 0, capsys.readouterr().err
    assert "ips_value" not in pd.read_csv(out).columns
    mlflow.set_tracking_uri(mlflow_uri)
    assert len(mlflow.search_runs(experiment_names=["one"])) == 2


def test_build_job_rejects_underscored_section_names():
    with pytest.raises(ValueError, match="unknown key 'profile_logs'"):
        build_job({"profile_logs": {"logs": "x", "out": "y"}})


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert "0.1.0" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "profile-logs" in capsys.readouterr().out


def test_a_bad_table_for_the_last_stage_fails_the_job_before_the_first_stage(tmp_path, mlflow_uri, capsys):
    """Every input table is validated, values included, before any stage starts: a NaN in the last stage's table
    fails the job with one line, no MLflow run and nothing written, not after the earlier stages' work."""
    rng = np.random.default_rng(0)
    n = 200
    pd.DataFrame({"user_id": np.arange(n), "arm": rng.choice(["a", "b"], n), "reward": rng.random(n),
                  "propensity": 0.5}).to_parquet(tmp_path / "logs.parquet")
    pd.DataFrame({"user_id": np.arange(n), "cluster": np.arange(n) // 10,
                  "group": (np.arange(n) // 10) % 2}).to_parquet(tmp_path / "assignment.parquet")
    outcomes = pd.DataFrame({"user_id": np.arange(n), "outcome": rng.normal(size=n)})
    outcomes.loc[[3, 7], "outcome"] = np.nan
    outcomes.to_parquet(tmp_path / "outcomes.parquet")
    (tmp_path / "job.yaml").write_text("""
experiment: checked-first
profile-logs: {logs: logs.parquet, out: out/profile.csv}
readout: {assignment: assignment.parquet, outcomes: outcomes.parquet, out: out/effects.csv}
""")
    code = main(["run", str(tmp_path / "job.yaml"), "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "outcomes: column 'outcome' has 2 NaN, inf or missing values of 200 rows" in err
    assert not (tmp_path / "out").exists()
    mlflow.set_tracking_uri(mlflow_uri)
    assert mlflow.get_experiment_by_name("checked-first") is None


@pytest.mark.parametrize(("section", "old", "new"), [
    ("fit-bandit", "data: logs", "`logs`"), ("evaluate-policy", "users: holdout", "`split: train|holdout|all`"),
    ("select-features", "data: logs", "`logs`"), ("readout", "simulate: {}", "`simulate-outcomes`"),
    ("allocate", "transitions: t", "`constrained-rl`"), ("assign", "truth_interactions: x", "truth automatically")])
def test_retired_keys_are_refused_naming_the_new_key(tmp_path, section, old, new):
    key = old.split(":")[0]
    with pytest.raises(InputError, match=rf"^config: key '{key}' in section '{section}' is retired: ") as error:
        build_job(yaml.safe_load(f"{section}: {{{old}, out: x}}"), base_dir=tmp_path)
    assert new in str(error.value) and "\n" not in str(error.value)
