"""MLflow tracking: one run per job, a nested run per stage, FAILED when a stage raises.

Embedded default: `sqlite:///mlflow.db` in the working directory with artifacts under `./mlartifacts`.
`tracking_uri` (or $MLFLOW_TRACKING_URI) points a job at a shared server instead; nothing else changes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import subprocess
import tempfile
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from pipelines.errors import InputError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
JOB_KIND_TAG = "campaign.kind"
_MAX_PARAM_LENGTH = 6000


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI in force: the argument, else $MLFLOW_TRACKING_URI, else the embedded sqlite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat {"section.key": "value"} for MLflow params (values truncated to MLflow's limit)."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:_MAX_PARAM_LENGTH]
    return flat


def fingerprint(paths: Iterable[Path]) -> str:
    """SHA-256 over the relative names and the bytes of every file under the given paths (missing ones skipped)."""
    digest = hashlib.sha256()
    for root in sorted({Path(p).resolve() for p in paths}):
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root] if root.exists() else []
        for file in files:
            digest.update(str(file.relative_to(root.parent)).encode())
            with open(file, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def package_version() -> str:
    try:
        return importlib.metadata.version("campaign-decisions")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def git_commit() -> str:
    """The commit of the checkout the package runs from ("+dirty" when it has uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


class StageLogger:
    """What a stage records in its own (nested) MLflow run."""

    def params(self, params: Mapping[str, Any]) -> None:
        mlflow.log_params(flatten(params))

    def metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {_metric_key(k): float(v) for k, v in metrics.items() if v is not None}
        mlflow.log_metrics(clean, step=step)

    def table(self, frame: pd.DataFrame, name: str, *, index: bool = True) -> None:
        """Log a table as a CSV artifact `tables/<name>.csv`."""
        with tempfile.TemporaryDirectory() as folder:
            file = Path(folder) / f"{name}.csv"
            frame.to_csv(file, index=index)
            mlflow.log_artifact(str(file), artifact_path="tables")

    def figure(self, figure: Any, name: str) -> None:
        """Log a matplotlib figure as `figures/<name>.png` and close it."""
        import matplotlib.pyplot as plt

        mlflow.log_figure(figure, f"figures/{name}.png")
        plt.close(figure)

    def text(self, text: str, name: str) -> None:
        mlflow.log_text(text, name)

    def tags(self, tags: Mapping[str, str]) -> None:
        mlflow.set_tags(dict(tags))


def _metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and space: replace anything else."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in str(name))


class JobTracker:
    """Opens the job's MLflow run and a nested run per stage."""

    def __init__(self, experiment: str, tracking_uri: str | None = None):
        self.experiment = experiment
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    def _experiment_id(self) -> str:
        mlflow.set_tracking_uri(self.tracking_uri)
        existing = mlflow.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        artifact_location = None
        if self.tracking_uri.startswith("sqlite:"):
            artifact_location = (Path.cwd() / ARTIFACTS_DIR).as_uri()
        try:
            return mlflow.create_experiment(self.experiment, artifact_location=artifact_location)
        except mlflow.exceptions.MlflowException:  # created concurrently by another job
            return mlflow.get_experiment_by_name(self.experiment).experiment_id

    @contextlib.contextmanager
    def job(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str],
            config_text: str | None = None) -> Iterator[StageLogger]:
        """The job's run; it ends FAILED if the body raises."""
        self.experiment_id = self._experiment_id()
        base_tags = {JOB_KIND_TAG: "job", "campaign.version": package_version(), "campaign.git_commit": git_commit()}
        # nested under a run that is already active (a closed-loop simulation's parent run), else top-level
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags={**base_tags, **tags},
                              nested=mlflow.active_run() is not None) as run:
            self.run_id = run.info.run_id
            logger = StageLogger()
            logger.params(params)
            if config_text is not None:
                logger.text(config_text, "config.yaml")
            with _recording_errors():
                yield logger

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageLogger]:
        """A nested run for one stage; it ends FAILED (and so does the job) if the stage raises."""
        # The experiment must be named again: a nested run otherwise lands in the Default experiment.
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, nested=True,
                              tags={JOB_KIND_TAG: "stage", "campaign.stage": name}), _recording_errors():
            yield StageLogger()


    def dated_runs(self, job: str, date: str | None) -> list:
        """The job runs of `job` for run date `date` (None: every date) in this experiment, newest first (MLflow
        `Run`s)."""
        if "'" in job:
            raise InputError(f"run_name: a dated job's name cannot hold a quote, got {job!r}")
        mlflow.set_tracking_uri(self.tracking_uri)
        experiment = mlflow.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        query = f"tags.`{JOB_KIND_TAG}` = 'job' and tags.`{JOB_NAME_TAG}` = '{job}'"
        if date is not None:
            query += f" and tags.`{DATE_TAG}` = '{date}'"
        return mlflow.MlflowClient().search_runs([experiment.experiment_id], query,
                                                  order_by=["attributes.start_time DESC"])

    def end_abandoned(self, runs: Iterable) -> list[str]:
        """Mark KILLED each run still RUNNING among `runs` and its stage runs (a job killed mid-day leaves them
        so); returns their ids."""
        client = mlflow.MlflowClient()
        ended = []
        for run in runs:
            if run.info.status != "RUNNING":
                continue
            children = client.search_runs([run.info.experiment_id],
                                          f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
            for child in children:
                if child.info.status == "RUNNING":
                    client.set_terminated(child.info.run_id, "KILLED")
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
        return ended


@dataclass(frozen=True)
class EarlierRuns:
    """What a dated job's stage can read of the same job's earlier dates (for warm starts)."""

    tracker: JobTracker
    job: str
    date: dt.date

    def finished(self) -> list[tuple[str, Any]]:
        """(date, run) of this job's FINISHED runs of dates before `date`, the latest first (by date, then start)."""
        earlier = []
        for run in self.tracker.dated_runs(self.job, None):
            day = run.data.tags.get(DATE_TAG, "")
            if run.info.status == "FINISHED" and day < self.date.isoformat():
                earlier.append((day, run))
        return sorted(earlier, key=lambda pair: (pair[0], pair[1].info.start_time or 0), reverse=True)

    def latest_run_id(self) -> str | None:
        """The id of this job's latest FINISHED run of a date before `date` (None: there is none)."""
        earlier = self.finished()
        return earlier[0][1].info.run_id if earlier else None

    def latest_stage(self, stage: str) -> tuple[dt.date, dict[str, str]] | None:
        """(run date, logged params) of `stage` in this job's latest FINISHED run of a date before `date`; None
        when there is none."""
        client = mlflow.MlflowClient()
        for day, run in self.finished():
            stages = client.search_runs([run.info.experiment_id],
                                        f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and "
                                        f"tags.`campaign.stage` = '{stage}' and attributes.status = 'FINISHED'")
            if stages:
                return dt.date.fromisoformat(day), dict(stages[0].data.params)
        return None


#: Tags of a dated run: its run date, the job's name, and the key of its config and inputs (`pipelines.job`).
DATE_TAG, JOB_NAME_TAG, RUN_KEY_TAG = "campaign.date", "campaign.job", "campaign.run_key"
ERROR_TYPE_TAG, ERROR_MESSAGE_TAG = "campaign.error_type", "campaign.error"


@contextlib.contextmanager
def _recording_errors() -> Iterator[None]:
    """On an exception, record on the active run its type and message (tags) and the traceback (`error.txt`)."""
    try:
        yield
    except BaseException as error:
        message = str(error).splitlines()[0] if str(error) else ""
        try:
            mlflow.set_tags({ERROR_TYPE_TAG: type(error).__name__, ERROR_MESSAGE_TAG: message[:_MAX_PARAM_LENGTH]})
            mlflow.log_text("".join(traceback.format_exception(error)), "error.txt")
        except Exception:  # noqa: BLE001 - the original error matters more than a failed record of it
            pass
        raise
