"""Running a job: validated config -> Dask client -> one MLflow run with a nested run per stage -> report."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import pydantic
import yaml
from pydantic import BaseModel, Field

from pipelines.config import JobSettings, StageConfig, check_retired_keys, read_yaml, validate_section
from pipelines.dates import fill_dates, parse_date
from pipelines.errors import InputError
from pipelines.execution import dask_client
from pipelines.io import ensure_writable
from pipelines.stages.registry import Stage, StageContext, StageResult, registered_stages
from pipelines.synthetic.scoring import score_against_truth
from pipelines.tables import LOG_COLUMNS, inspect_table, scan_values
from pipelines.tracking import DATE_TAG, JOB_NAME_TAG, RUN_KEY_TAG, EarlierRuns, JobTracker, fingerprint


def job_model() -> type[BaseModel]:
    """The pydantic model of a whole job file: the top-level settings plus one optional section per stage."""
    sections: dict[str, Any] = {
        stage.field_name: (stage.config_model | None, Field(None, alias=stage.name))
        for stage in registered_stages()
    }
    return pydantic.create_model("JobConfig", __base__=JobSettings, **sections)


@dataclass(frozen=True)
class Job:
    """A validated job: settings and the stages to run, in order, with their configs."""

    settings: JobSettings
    stages: list[tuple[Stage[Any], StageConfig]]
    source: str = "job"

    def effective_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.settings.model_dump(mode="json", exclude_none=True)
        for stage, section in self.stages:
            config[stage.name] = section.model_dump(mode="json", exclude_none=True)
        return config

    def input_paths(self) -> list[Path]:
        """Files named in the config that exist before the job starts (those later stages create are outputs)."""
        paths = []
        for _, section in self.stages:
            outputs = set(section.output_paths())
            paths.extend(v for _, v in section if isinstance(v, Path) and v not in outputs and v.exists())
        return paths


def column_mapping(data: dict[str, Any]) -> dict[str, str | None]:
    """The job's `columns:` mapping (decision-log role -> column name, or None), checked: roles are the keys of
    `pipelines.tables.LOG_COLUMNS`, names are strings."""
    mapping = data.get("columns")
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise InputError(f"config: columns: expected a mapping of role -> column name, got {type(mapping).__name__}")
    for role, name in mapping.items():
        if role not in LOG_COLUMNS:
            raise InputError(f"config: columns: unknown role {role!r} (roles: {', '.join(sorted(LOG_COLUMNS))})")
        if name is not None and not isinstance(name, str):
            raise InputError(f"config: columns.{role}: expected a column name or null, got {name!r}")
    return mapping


def with_column_mapping(data: dict[str, Any]) -> dict[str, Any]:
    """The job mapping with `columns:` filled into each stage section: a section whose stage takes a role (a field
    of that name) and does not name it gets the mapped column, and a default `exclude` list (columns never taken as
    features) names the mapped columns instead of the platform's. A section's own names always win."""
    mapping = column_mapping(data)
    if not mapping:
        return data
    filled = dict(data)
    for stage in registered_stages():
        section = data.get(stage.name)
        if not isinstance(section, dict):
            continue
        fields = stage.config_model.model_fields
        section = {**{role: name for role, name in mapping.items() if role in fields}, **section}
        if "exclude" in fields and "exclude" not in section and isinstance(fields["exclude"].default, list):
            renamed = [mapping.get(column, column) for column in fields["exclude"].default]
            section["exclude"] = [column for column in renamed if column is not None]
        filled[stage.name] = section
    return filled


def build_job(data: dict[str, Any], *, base_dir: Path | None = None, source: str = "job",
              date: dt.date | str | None = None) -> Job:
    """Validate a job mapping (as read from YAML) into a `Job`; one-line `InputError` on any problem. The run date
    (`date`, else the job's `date:`) fills the `{date}` templates first (`pipelines.dates`), then the top-level
    `columns:` mapping is applied (`with_column_mapping`)."""
    if isinstance(data, dict):
        given = date if date is not None else data.get("date")
        run_date = None if given is None else parse_date(given, "--date" if date is not None else "config: date")
        data = {**fill_dates({k: v for k, v in data.items() if k != "date"}, run_date, base_dir=base_dir),
                **({"date": run_date.isoformat()} if run_date else {})}
        for stage in registered_stages():
            check_retired_keys(stage.name, stage.config_model, data.get(stage.name))
        data = with_column_mapping(data)
    validated = validate_section(job_model(), data, where="config", base_dir=base_dir)
    stages = []
    for stage in registered_stages():
        section = getattr(validated, stage.field_name)
        if section is not None:
            stages.append((stage, section))
    if not stages:
        names = ", ".join(stage.name for stage in registered_stages())
        raise InputError(f"config: no stage section; add at least one of: {names}")
    settings = JobSettings(**{name: getattr(validated, name) for name in JobSettings.model_fields})
    return Job(settings, stages, source)


def load_job(path: Path | str, *, date: dt.date | str | None = None) -> Job:
    """Read and validate a job YAML file (for run `date`, when given); relative paths in it are resolved against its
    directory."""
    path = Path(path).resolve()
    return build_job(read_yaml(path), base_dir=path.parent, source=path.stem, date=date)


@dataclass
class JobReport:
    """Where the job's records are and what each stage produced. `done_before`: a dated run that an earlier run
    had already finished with the same config and inputs (nothing was recomputed; `run_id` is that run)."""

    experiment: str
    run_id: str
    tracking_uri: str
    results: dict[str, StageResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    date: str | None = None
    done_before: bool = False


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_before_start(job: Job) -> None:
    """Every output writable, and every input table that no earlier stage writes present and well-formed: files,
    schema and every value, for all stages, before the first stage starts (a bad table for the last stage fails the
    job in seconds, with nothing written)."""
    produced: list[Path] = []
    inputs: list[tuple[Path, Any, list]] = []
    for _, section in job.stages:
        for path, schema in section.input_tables().items():
            if not any(_inside(path, output) for output in produced):
                inputs.append((path, schema, inspect_table(path, schema)))  # the metadata of all of them first
        for output in section.output_paths():
            ensure_writable(output)
        produced.extend(section.output_paths())
    for path, schema, to_scan in inputs:
        scan_values(path, schema, to_scan)
    for stage, section in job.stages:
        try:
            section.check_ready()
        except InputError as error:
            raise _in_stage(error, stage.name) from None


def _in_stage(error: InputError, stage: str) -> InputError:
    """The input error with the stage it stopped ("fit-bandit: ..."), unless its message names the stage already."""
    message = str(error)
    return error if message.startswith(stage) else InputError(f"{stage}: {message}")


def _scored(stage: str, section: StageConfig, result: StageResult, results: dict[str, StageResult],
            log: Any) -> StageResult:
    """The stage's result with its score against a synthetic campaign's truth (when its inputs were synthetic),
    logged to the stage's run."""
    score = score_against_truth(stage, section, result, results)
    if score is None:
        return result
    log.metrics(score.metrics)
    for name, table in score.tables.items():
        log.table(table, name)
    return replace(result, summary={**result.summary, **score.summary}, data={**result.data, "truth": score})


def run_job(job: Job, *, scheduler: str | None = None, tracking_uri: str | None = None,
            force: bool = False) -> JobReport:
    """Run every stage of `job` in order on the chosen Dask cluster, recording it all in MLflow.

    Outputs and input tables are checked before any work (`check_before_start`); a stage that raises marks its run
    and the job's run FAILED, with the error recorded, and the exception propagates (outputs are written atomically,
    so nothing half-written remains).

    A dated job (`date:`) is keyed by its name, date, config and input files: when a FINISHED run of the same key
    exists and its outputs are in place, nothing runs and the report names that run (`force`: run again). Runs of
    the same name and date left RUNNING (a job killed mid-day) are marked KILLED before the new run starts, so a
    date ends with one FINISHED run and one set of outputs.
    """
    effective = job.effective_config()
    tracker = JobTracker(job.settings.experiment, tracking_uri)
    report_results: dict[str, StageResult] = {}
    seconds: dict[str, float] = {}
    name = job.settings.run_name or job.source
    date = job.settings.date.isoformat() if job.settings.date else None
    with dask_client(scheduler):
        mlflow.set_tracking_uri(tracker.tracking_uri)  # what the checks of a model registry read
        check_before_start(job)
        inputs = fingerprint(job.input_paths())
        tags = {"campaign.input_fingerprint": inputs, "campaign.seed": str(job.settings.seed),
                "campaign.stages": ",".join(stage.name for stage, _ in job.stages)}
        if date is not None:
            keyed = [effective, inputs]
            if any(section.reads_earlier_runs() for _, section in job.stages):
                keyed.append(EarlierRuns(tracker, name, job.settings.date).latest_run_id())
            key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()
            earlier = tracker.dated_runs(name, date)
            done = next((run for run in earlier if run.info.status == "FINISHED"
                         and run.data.tags.get(RUN_KEY_TAG) == key), None)
            if done is not None and not force and all(path.exists() for _, section in job.stages
                                                     for path in section.output_paths()):
                return JobReport(job.settings.experiment, done.info.run_id, tracker.tracking_uri, date=date,
                                 done_before=True)
            tracker.end_abandoned(earlier)
            tags |= {DATE_TAG: date, JOB_NAME_TAG: name, RUN_KEY_TAG: key}
        with tracker.job(name, effective, tags, yaml.safe_dump(effective, sort_keys=False)) as job_log:
            earlier = EarlierRuns(tracker, name, job.settings.date) if job.settings.date else None
            _run_stages(job, tracker, report_results, seconds, earlier)
            job_log.metrics({"job_seconds": sum(seconds.values())})
    assert tracker.run_id is not None
    return JobReport(job.settings.experiment, tracker.run_id, tracker.tracking_uri, report_results, seconds, date)


def _run_stages(job: Job, tracker: JobTracker, report_results: dict[str, StageResult],
                seconds: dict[str, float], earlier: EarlierRuns | None = None) -> None:
    """Each stage in its own nested MLflow run, in order; results and wall seconds filled in as they come."""
    for stage, section in job.stages:
        with tracker.stage(stage.name) as log:
            log.params(section.model_dump(mode="json", exclude_none=True))
            context = StageContext(seed=job.settings.seed, log=log, results=report_results, date=job.settings.date,
                                   earlier=earlier)
            started = time.perf_counter()
            try:
                result = stage.run(context, section)
            except InputError as error:
                raise _in_stage(error, stage.name) from error.__cause__
            seconds[stage.name] = time.perf_counter() - started
            log.metrics({"stage_seconds": seconds[stage.name]})
            result = _scored(stage.name, section, result, report_results, log)
        report_results[stage.name] = result
