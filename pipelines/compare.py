"""Runs side by side: job runs of an experiment with their stage metrics, from `mlflow.search_runs`."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402

from pipelines.errors import InputError  # noqa: E402
from pipelines.tracking import JOB_KIND_TAG, resolve_tracking_uri  # noqa: E402

_DESCRIPTIVE_TAGS = {"tags.campaign.seed": "seed", "tags.campaign.stages": "stages",
                     "tags.campaign.git_commit": "git commit", "tags.campaign.input_fingerprint": "input fingerprint"}


def compare_runs(experiment: str, *, tracking_uri: str | None = None, metrics: list[str] | None = None,
                 max_runs: int = 10) -> pd.DataFrame:
    """A table with one column per job run (newest first) and one row per descriptor, param or metric.

    Stage metrics appear as `<stage>.<metric>`; `metrics` keeps only rows containing one of the given substrings.
    """
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    if mlflow.get_experiment_by_name(experiment) is None:
        raise InputError(f"compare: no experiment named {experiment!r} at {resolve_tracking_uri(tracking_uri)}")
    runs = mlflow.search_runs(experiment_names=[experiment], order_by=["attributes.start_time DESC"])
    kind = runs.get(f"tags.{JOB_KIND_TAG}", pd.Series(index=runs.index, dtype=object))
    parent = runs.get("tags.mlflow.parentRunId", pd.Series(index=runs.index, dtype=object))
    jobs = runs[kind == "job"].head(max_runs)
    if jobs.empty:
        raise InputError(f"compare: no job runs in experiment {experiment!r}")
    stages = runs[(kind == "stage") & parent.isin(jobs["run_id"])]

    columns: dict[str, dict[str, object]] = {}
    for _, job in jobs.iterrows():
        name = f"{job.get('tags.mlflow.runName', '')} {job['run_id'][:8]}".strip()
        column: dict[str, object] = {"status": job["status"], "started": str(job["start_time"])[:19]}
        column |= {label: job.get(tag) for tag, label in _DESCRIPTIVE_TAGS.items() if tag in job}
        column |= {key.removeprefix("metrics."): job[key] for key in job.index
                   if key.startswith("metrics.") and pd.notna(job[key])}
        for _, stage in stages[parent[stages.index] == job["run_id"]].iterrows():
            prefix = stage.get("tags.campaign.stage", "stage")
            column |= {f"{prefix}.{key.removeprefix('metrics.')}": stage[key] for key in stage.index
                       if key.startswith("metrics.") and pd.notna(stage[key])}
        columns[name] = column
    table = pd.DataFrame(columns)
    if metrics:
        keep = [row for row in table.index if row in ("status", "started") or any(m in row for m in metrics)]
        table = table.loc[keep]
    return table


def comparison_figure(table: pd.DataFrame, max_metrics: int = 8):
    """Small multiples: one bar chart per numeric row of a comparison table, runs on the x axis."""
    numeric = table.apply(pd.to_numeric, errors="coerce").dropna(how="all")
    numeric = numeric.loc[[row for row in numeric.index if row not in ("seed",)]].head(max_metrics)
    if numeric.empty:
        raise InputError("compare: no numeric metrics to plot")
    count = len(numeric)
    figure, axes = plt.subplots(count, 1, figsize=(max(5, 1.2 * table.shape[1] + 2), 2.0 * count), squeeze=False)
    for axis, (name, row) in zip(axes[:, 0], numeric.iterrows(), strict=True):
        axis.bar(range(len(row)), row.to_numpy(dtype=float))
        axis.set_title(name, fontsize=9)
        axis.set_xticks(range(len(row)), [c[-8:] for c in row.index], fontsize=7)
    figure.tight_layout()
    return figure
