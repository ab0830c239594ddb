"""A real MLflow tracking server: `mlflow server` on 127.0.0.1 with a temporary sqlite store and proxied artifacts.

A job run with `--tracking-uri` (or $MLFLOW_TRACKING_URI) is read back with `mlflow.search_runs`: one job run with
its params and tags, a nested run per stage with metrics and artifacts, FAILED statuses when a stage raises, and
`campaign compare` over the experiment.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

import pipelines
from pipelines.tracking import fingerprint, git_commit, package_version
from tests.conftest import run_campaign
from tests.services import bandit_job_yaml, campaign_job_yaml, free_port, listens, service_env, start, stop, tail

pytestmark = [pytest.mark.real_services, pytest.mark.xdist_group("mlflow")]

MLFLOW = Path(sys.executable).parent / "mlflow"
START_TIMEOUT = 90.0
EXPERIMENT = "real-mlflow"

JOB_YAML = campaign_job_yaml(EXPERIMENT, run_name="nightly")

WIDE = {"COLUMNS": "250"}  # rich wraps tables at 80 columns when not on a terminal


# ---------------------------------------------------------------------------- helpers
def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def expect(done, code: int, what: str) -> None:
    assert done.code == code, (f"{what}: exit code {done.code}, expected {code}:\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def assert_git_commit(tag: str) -> None:
    """The tag names a commit of this checkout (HEAD when the job ran; HEAD may have moved on since)."""
    if git_commit() == "unknown":  # no git here: the job could not know either
        assert tag == "unknown"
        return
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", tag), tag
    checkout = Path(pipelines.__file__).resolve().parent
    ancestor = subprocess.run(["git", "-C", str(checkout), "merge-base", "--is-ancestor", tag[:40], "HEAD"],
                              capture_output=True, timeout=30)
    assert ancestor.returncode == 0, f"{tag} is not a commit of the checkout at {checkout}"


def runs_of(experiment: str) -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[experiment])


def job_run(experiment: str, run_name: str | None = None) -> pd.Series:
    runs = runs_of(experiment)
    jobs = runs[runs["tags.campaign.kind"] == "job"]
    if run_name is not None:
        jobs = jobs[jobs["tags.mlflow.runName"] == run_name]
    assert len(jobs) == 1, f"expected one job run in {experiment!r}, found {len(jobs)}"
    return jobs.iloc[0]


def stage_runs(job_id: str) -> dict[str, pd.Series]:
    """The runs nested in a job run (searched in every experiment), by stage name."""
    runs = mlflow.search_runs(search_all_experiments=True,
                              filter_string=f"tags.`mlflow.parentRunId` = '{job_id}'")
    return {run["tags.campaign.stage"]: run for _, run in runs.iterrows()}


# ---------------------------------------------------------------------------- the server and one tracked job
@dataclass
class Server:
    url: str
    home: Path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[Server]:
    """`mlflow server` with a fresh sqlite store and proxied artifacts, on a free port (retried on a collision)."""
    home = tmp_path_factory.mktemp("mlflow-server")
    env = service_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no background job runner (huey processes)
    process = None
    try:
        for attempt in range(3):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = home / f"server-{attempt}.log"
            process = start([str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                             "--artifacts-destination", str(home / "artifacts")], log, home, env)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None and not healthy(url):
                time.sleep(0.5)
            # healthy *and* ours: on a port collision /health could be answered by another test's server
            if process.poll() is None and healthy(url) and listens(process, port):
                break
            stop(process)
            process = None
            if attempt == 2:
                pytest.fail(f"mlflow server did not answer {url}/health:\n{tail(log)}")
        yield Server(url, home)
    finally:
        stop(process)


@pytest.fixture
def tracking(mlflow_server) -> Iterator[str]:
    """Point this process's mlflow at the server for one test, and restore what was there before."""
    from mlflow.tracking._tracking_service import utils

    previous = getattr(utils, "_tracking_uri", None)
    mlflow.set_tracking_uri(mlflow_server.url)
    try:
        yield mlflow_server.url
    finally:
        mlflow.set_tracking_uri(previous)


@dataclass
class TrackedJob:
    folder: Path
    stdout: str


@pytest.fixture(scope="module")
def tracked_job(mlflow_server, tmp_path_factory) -> TrackedJob:
    """generate + profile-logs, run once with --tracking-uri pointing at the server."""
    folder = tmp_path_factory.mktemp("tracked-job")
    (folder / "job.yaml").write_text(JOB_YAML)
    done = run_campaign("run", "job.yaml", "--tracking-uri", mlflow_server.url, cwd=folder, env=WIDE,
                        timeout=240)
    expect(done, 0, "run --tracking-uri")
    return TrackedJob(folder, done.stdout)


# ---------------------------------------------------------------------------- tests
def test_job_run_has_status_params_tags_and_config(tracked_job, tracking, tmp_path):
    job = job_run(EXPERIMENT, "nightly")
    assert job["status"] == "FINISHED"
    assert f"MLflow run {job['run_id']} in experiment '{EXPERIMENT}' at {tracking}" in tracked_job.stdout
    # no local store was created: everything went to the server
    assert not any((tracked_job.folder / name).exists() for name in ("mlflow.db", "mlartifacts", "mlruns"))

    # params: the validated config, flattened
    assert job["params.seed"] == "7"
    assert job["params.experiment"] == EXPERIMENT
    assert job["params.generate.n_users"] == "3000"
    assert job["params.generate.chunk_users"] == "1000"
    assert job["params.profile-logs.randomized"] == "randomized"
    assert job["params.profile-logs.logs"] == str(tracked_job.folder / "data" / "campaign" / "logs")
    # tags
    assert job["tags.campaign.kind"] == "job"
    assert job["tags.campaign.stages"] == "generate,profile-logs"
    assert job["tags.campaign.seed"] == "7"
    assert re.fullmatch(r"[0-9a-f]{64}", job["tags.campaign.input_fingerprint"])
    assert job["tags.campaign.version"] == package_version() != "unknown"
    assert_git_commit(job["tags.campaign.git_commit"])
    assert job["metrics.job_seconds"] > 0

    # the effective config is an artifact of the job run
    client = MlflowClient(tracking_uri=tracking)
    assert "config.yaml" in {a.path for a in client.list_artifacts(job["run_id"])}
    local = mlflow.artifacts.download_artifacts(run_id=job["run_id"], artifact_path="config.yaml",
                                                dst_path=str(tmp_path), tracking_uri=tracking)
    config = yaml.safe_load(Path(local).read_text())
    assert config["seed"] == 7 and config["generate"]["n_users"] == 3000
    assert set(config) >= {"generate", "profile-logs"}


def test_stage_runs_are_nested_with_params_metrics_and_artifacts(tracked_job, tracking, tmp_path):
    job = job_run(EXPERIMENT, "nightly")
    stages = stage_runs(job["run_id"])
    assert sorted(stages) == ["generate", "profile-logs"]
    for name, run in stages.items():
        assert run["status"] == "FINISHED", name
        assert run["tags.campaign.kind"] == "stage"
        assert run["tags.mlflow.runName"] == name
        assert run["metrics.stage_seconds"] >= 0

    manifest = json.loads((tracked_job.folder / "data" / "campaign" / "campaign.json").read_text())
    generate, profile = stages["generate"], stages["profile-logs"]
    # params: the stage's own validated section
    assert generate["params.n_users"] == "3000" and generate["params.n_days"] == "5"
    assert profile["params.randomized"] == "randomized"
    # metrics agree with what was written
    assert generate["metrics.n_users"] == 3000
    assert generate["metrics.n_log_rows"] == manifest["n_log_rows"] > 0
    assert generate["metrics.n_edges"] == manifest["n_edges"]
    assert profile["metrics.rows"] == manifest["n_log_rows"]
    assert profile["metrics.arms"] == 4

    client = MlflowClient(tracking_uri=tracking)
    assert {a.path for a in client.list_artifacts(generate["run_id"], "tables")} == {
        "tables/arms.csv", "tables/feature_roles.csv"}
    assert {a.path for a in mlflow.artifacts.list_artifacts(run_id=profile["run_id"], artifact_path="tables",
                                                            tracking_uri=tracking)} == {"tables/log_profile.csv"}
    assert "figures/arm_values.png" in {a.path for a in client.list_artifacts(profile["run_id"], "figures")}

    # download: the logged table parses and is the very table the stage wrote to disk
    table = Path(client.download_artifacts(profile["run_id"], "tables/log_profile.csv", str(tmp_path)))
    logged = pd.read_csv(table, index_col=0)
    assert len(logged) == 4 and logged["rows"].sum() == manifest["n_log_rows"]
    assert table.read_bytes() == (tracked_job.folder / "out" / "log_profile.csv").read_bytes()
    arms = pd.read_csv(io.StringIO(Path(client.download_artifacts(generate["run_id"], "tables/arms.csv",
                                                                  str(tmp_path))).read_text()))
    assert arms["arm"].tolist() == ["control", "discount_5", "free_shipping", "cashback_10"]
    figure = Path(client.download_artifacts(profile["run_id"], "figures/arm_values.png", str(tmp_path)))
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_runs_are_in_the_job_experiment(tracked_job, tracking):
    job = job_run(EXPERIMENT, "nightly")
    runs = runs_of(EXPERIMENT)
    nested = runs[runs.get("tags.mlflow.parentRunId", pd.Series(index=runs.index, dtype=object)) == job["run_id"]]
    assert sorted(nested.get("tags.campaign.stage", [])) == ["generate", "profile-logs"], \
        f"the stage runs are not in the job's experiment {EXPERIMENT!r} (search_runs over it misses them)"
    assert (nested["experiment_id"] == job["experiment_id"]).all()


def test_tracking_uri_environment_variable(tracked_job, tracking, tmp_path):
    """A profile-logs job on the logs written above, told where the server is only by $MLFLOW_TRACKING_URI."""
    logs = tracked_job.folder / "data" / "campaign" / "logs"
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump({
        "seed": 3, "experiment": f"{EXPERIMENT}-env",
        "profile-logs": {"logs": str(logs), "out": "profile.csv", "randomized": "randomized"}}))
    done = run_campaign("run", "profile.yaml", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": tracking}, timeout=180)
    expect(done, 0, "run with MLFLOW_TRACKING_URI")
    assert not any((tmp_path / name).exists() for name in ("mlflow.db", "mlartifacts", "mlruns"))

    job = job_run(f"{EXPERIMENT}-env")
    assert job["status"] == "FINISHED"
    assert job["tags.mlflow.runName"] == "profile"
    assert job["tags.campaign.input_fingerprint"] == fingerprint([logs])
    (stage,) = stage_runs(job["run_id"]).values()
    assert stage["tags.campaign.stage"] == "profile-logs" and stage["status"] == "FINISHED"
    assert stage["metrics.rows"] == json.loads((logs.parent / "campaign.json").read_text())["n_log_rows"]
    assert (tmp_path / "profile.csv").is_file()


def test_failing_stage_marks_stage_and_job_runs_failed(mlflow_server, tracking, tmp_path):
    """profile-logs reads what generate writes, naming a reward column that is not there: it fails mid-job."""
    experiment = f"{EXPERIMENT}-failed"
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "seed": 1, "experiment": experiment,
        "generate": {"out": "data/campaign", "n_users": 400, "n_days": 2, "chunk_users": 200},
        "profile-logs": {"logs": "data/campaign/logs", "out": "out/profile.csv", "reward": "no_such_column"}},
        sort_keys=False))
    done = run_campaign("run", "job.yaml", "--tracking-uri", tracking, cwd=tmp_path, timeout=180)
    expect(done, 2, "a job whose profile-logs stage meets a missing column")
    message = done.stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("error: ") and "no_such_column" in message[0], done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "data" / "campaign" / "campaign.json").is_file()  # the stage before it completed
    assert not (tmp_path / "out" / "profile.csv").exists()
    assert not list(tmp_path.rglob(".*.tmp-*"))

    job = job_run(experiment)
    assert job["status"] == "FAILED"
    assert job["tags.campaign.stages"] == "generate,profile-logs"
    stages = stage_runs(job["run_id"])
    assert sorted(stages) == ["generate", "profile-logs"]
    assert stages["generate"]["status"] == "FINISHED"
    assert stages["generate"]["metrics.n_users"] == 400
    assert stages["profile-logs"]["status"] == "FAILED"
    assert stages["profile-logs"]["params.reward"] == "no_such_column"


def test_missing_input_is_rejected_before_any_run_starts(mlflow_server, tracking, tmp_path):
    """A pre-existing input that is not there: exit 2 before any stage runs, so nothing is recorded."""
    experiment = f"{EXPERIMENT}-rejected"
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "experiment": experiment, "profile-logs": {"logs": "no-such-folder/logs", "out": "profile.csv"}}))
    done = run_campaign("run", "job.yaml", "--tracking-uri", tracking, cwd=tmp_path, timeout=180)
    expect(done, 2, "a job whose input is missing")
    message = done.stderr.strip().splitlines()
    assert len(message) == 1 and "no-such-folder" in message[0], done.stderr
    assert not (tmp_path / "profile.csv").exists()
    known = mlflow.get_experiment_by_name(experiment)
    assert known is None or mlflow.search_runs(experiment_ids=[known.experiment_id]).empty


def test_compare_reads_the_server_and_saves_a_plot(tracked_job, tracking, tmp_path):
    plot = tmp_path / "compare.png"
    done = run_campaign("compare", "--experiment", EXPERIMENT, "--tracking-uri", tracking, "--plot", str(plot),
                        cwd=tmp_path, env=WIDE, timeout=120)
    expect(done, 0, "compare")
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    job = job_run(EXPERIMENT, "nightly")
    assert f"nightly {job['run_id'][:8]}" in done.stdout
    assert "profile-logs.rows" in done.stdout and "generate.n_log_rows" in done.stdout


BANDIT_JOB_YAML = bandit_job_yaml(f"{EXPERIMENT}-bandit")
SCORING_USERS = {"dataframe_split": {
    "columns": ["price_sensitivity", "channel", "is_member", "basket_value"],
    "data": [[0.2, "app", 1, 30.0], [0.9, "store", 0, None], [0.5, None, 1, 12.5]]},
    "params": {"random_state": 11}}


def test_policy_model_logged_to_the_server_loads_and_serves(mlflow_server, tracking, tmp_path):
    (tmp_path / "job.yaml").write_text(BANDIT_JOB_YAML)
    done = run_campaign("run", "job.yaml", "--tracking-uri", mlflow_server.url, cwd=tmp_path, env=WIDE, timeout=240)
    expect(done, 0, "bandit job --tracking-uri")
    job = job_run(f"{EXPERIMENT}-bandit")
    stages = stage_runs(job["run_id"])
    assert sorted(stages) == ["evaluate-policy", "fit-bandit", "generate", "select-features"]
    assert stages["evaluate-policy"]["metrics.dr.se"] > 0
    # the logged model, read back from the server in this process (the job ran in another one)
    model = mlflow.pyfunc.load_model(f"runs:/{stages['fit-bandit']['run_id']}/policy")
    users = pd.DataFrame(SCORING_USERS["dataframe_split"]["data"], columns=SCORING_USERS["dataframe_split"]["columns"])
    scored = model.predict(users, params={"random_state": 11})
    assert list(scored.columns[:2]) == ["arm", "propensity"] and len(scored) == 3
    # `mlflow models serve` on the saved folder answers /invocations with the same decisions
    port = free_port()
    env = service_env(PATH=f"{MLFLOW.parent}:{service_env().get('PATH', '')}")
    server = start([str(MLFLOW), "models", "serve", "-m", str(tmp_path / "out" / "policy"), "--env-manager", "local",
                    "--host", "127.0.0.1", "-p", str(port)], tmp_path / "serve.log", tmp_path, env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        answer = None
        while time.monotonic() < deadline and server.poll() is None and answer is None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                             data=json.dumps(SCORING_USERS).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    answer = json.loads(response.read())
            except (urllib.error.URLError, OSError):
                time.sleep(1.0)
        assert answer is not None, f"model server did not answer:\n{tail(tmp_path / 'serve.log')}"
    finally:
        stop(server)
    served = pd.DataFrame(answer["predictions"])
    assert served["arm"].tolist() == scored["arm"].tolist()
    np.testing.assert_allclose(served["propensity"], scored["propensity"])


REGISTRY_STAGES = """\
promote: {logs: data/campaign/logs, out: out/promotion.csv, model_name: offers, estimators: [ips, dr],
          incumbent: none}
decide: {users: data/campaign/users, out: out/decisions, model_name: offers}
"""


def test_champion_and_challenger_in_the_servers_model_registry(mlflow_server, tracking, tmp_path):
    """Two daily runs against the server: the first policy becomes champion; the same policy fitted again is
    registered as version 2 but stays challenger (its lower bound is below its own estimate); decide serves the
    champion each day; moving the alias back and forth is what a rollback is."""
    (tmp_path / "job.yaml").write_text(bandit_job_yaml(f"{EXPERIMENT}-registry") + REGISTRY_STAGES)
    client = MlflowClient(mlflow_server.url)
    for day, champion in (("2026-12-04", "1"), ("2026-12-05", "1")):
        job = tmp_path / f"{day}.yaml"
        job.write_text((tmp_path / "job.yaml").read_text().replace("out/", f"out/{day}/"))
        done = run_campaign("run", job.name, "--tracking-uri", mlflow_server.url, cwd=tmp_path, env=WIDE,
                            timeout=300)
        expect(done, 0, f"registry job of {day}")
        assert str(client.get_registered_model("offers").aliases["champion"]) == champion
        decisions = pd.read_parquet(tmp_path / "out" / day / "decisions")
        assert set(decisions["model_version"]) == {champion} and (decisions["propensity"] > 0).all()
    versions = {v.version: v for v in client.search_model_versions("name = 'offers'")}
    assert sorted(map(int, versions)) == [1, 2] and "ope.dr.value" in versions["2"].tags
    table = pd.read_csv(tmp_path / "out" / "2026-12-05" / "promotion.csv")
    assert list(table["policy"]) == ["challenger", "champion"] and table.loc[0, "ci_low"] < table.loc[1, "value"]
    client.set_registered_model_alias("offers", "champion", "2")  # a promotion by hand, then the rollback
    client.set_registered_model_alias("offers", "champion", "1")
    assert client.get_model_version_by_alias("offers", "champion").version in ("1", 1)
