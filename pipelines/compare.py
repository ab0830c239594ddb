"""Runs side by side: job runs of an experiment with their stage metrics, from `mlflow.search_runs`.

`compare_runs` gives the full table (one column per job run, newest first; one row per descriptor and metric, stage
metrics as `<stage>.<metric>`). `comparison_rows` arranges it for reading, in sections:

- `run`: status, start time, seed, stages, git commit and input fingerprint of each run;
- `headline`: what a run is for (`HEADLINE_METRICS`: policy values, spend, features selected, clusters, lift...);
- `estimate`: every estimate with a standard error, in one cell: `value ± se [ci_low, ci_high]`, its other figures
  (p-value, error against a synthetic truth...) on a second line;
- `breakdown`: metrics per arm, feature, segment or model (`<stage>.<name>.<member>`), one block per name;
- `other`: the remaining single figures;
- `timing`: stage and job wall seconds, last: they describe the machine, not the decision.

`write_comparison` writes the full table (CSV or HTML) and `comparison_figure` plots the values per run.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipelines.errors import InputError  # noqa: E402
from pipelines.io import atomic_output  # noqa: E402
from pipelines.tracking import JOB_KIND_TAG, resolve_tracking_uri  # noqa: E402

_DESCRIPTIVE_TAGS = {"tags.campaign.seed": "seed", "tags.campaign.stages": "stages",
                     "tags.campaign.git_commit": "git commit", "tags.campaign.input_fingerprint": "input fingerprint"}
#: Rows describing a run rather than measuring it.
DESCRIPTORS = ("status", "started", *_DESCRIPTIVE_TAGS.values())
#: What each stage is run for, shown first. A name without a metric of its own is an estimate (`<name>.value` or
#: `<name>.estimate` with `<name>.se`), shown as one cell.
HEADLINE_METRICS = (
    "generate.n_users", "generate.n_log_rows",
    "profile-logs.rows", "profile-logs.arms",
    "select-features.features_scored", "select-features.features_selected", "select-features.selected_modifiers",
    "fit-bandit.training_rows",
    "evaluate-policy.dr", "evaluate-policy.logging_policy_value", "evaluate-policy.true_value",
    "allocate.budget", "allocate.spend", "allocate.value", "allocate.true_value",
    "constrained-rl.value", "constrained-rl.spend", "constrained-rl.stored_policies",
    "assign.n_clusters", "assign.cut_weight_share",
    "simulate-outcomes.true_global_effect",
    "readout.cuped", "readout.difference_in_means", "readout.true_global_effect",
)
#: What `comparison_figure` plots first: the values a decision rests on.
PLOTTED_METRICS = (
    "evaluate-policy.dr", "evaluate-policy.logging_policy_value", "allocate.value", "allocate.spend",
    "constrained-rl.value", "constrained-rl.spend", "readout.cuped", "readout.difference_in_means",
    "select-features.features_selected", "assign.cut_weight_share",
)
#: Metric names (after the stage) that are wall-clock seconds.
TIMINGS = ("stage_seconds", "fit_seconds", "job_seconds")
SECTIONS = ("run", "headline", "estimate", "breakdown", "other", "timing")
_POINT, _INTERVAL = ("value", "estimate"), ("ci_low", "ci_high")


def compare_runs(experiment: str, *, tracking_uri: str | None = None, metrics: list[str] | None = None,
                 max_runs: int = 10) -> pd.DataFrame:
    """A table with one column per job run (newest first) and one row per descriptor or metric.

    Rows: the descriptors (`DESCRIPTORS`), then the metrics in stage order, `<stage>.<metric>`, each stage's sorted
    by name, and `job_seconds`. `metrics` keeps only the metric rows containing one of the given substrings.
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
    stage_order: list[str] = []
    for _, job in jobs.iterrows():
        name = f"{job.get('tags.mlflow.runName', '')} {job['run_id'][:8]}".strip()
        column: dict[str, object] = {"status": job["status"], "started": str(job["start_time"])[:19]}
        column |= {label: job.get(tag) for tag, label in _DESCRIPTIVE_TAGS.items() if tag in job}
        column |= {key.removeprefix("metrics."): job[key] for key in job.index
                   if key.startswith("metrics.") and pd.notna(job[key])}
        stage_order += [s for s in str(job.get("tags.campaign.stages") or "").split(",") if s not in stage_order]
        for _, stage in stages[parent[stages.index] == job["run_id"]].iterrows():
            prefix = stage.get("tags.campaign.stage", "stage")
            column |= {f"{prefix}.{key.removeprefix('metrics.')}": stage[key] for key in stage.index
                       if key.startswith("metrics.") and pd.notna(stage[key])}
        columns[name] = column
    table = pd.DataFrame(columns)
    table = table.loc[sorted(table.index, key=lambda row: _row_order(row, stage_order))]
    if metrics:
        keep = [row for row in table.index if row in DESCRIPTORS or any(m in row for m in metrics)]
        table = table.loc[keep]
    return table


def _row_order(row: str, stage_order: list[str]) -> tuple:
    if row in DESCRIPTORS:
        return (0, DESCRIPTORS.index(row), "")
    stage, _, metric = row.partition(".")
    if stage in stage_order:
        return (1, stage_order.index(stage), metric)
    return (2, 0, row)


# ---------------------------------------------------------------------------- arranging the table for reading
@dataclass(frozen=True)
class ComparisonRow:
    """One printed row: its section, its label and one text cell per run (`heading`: a breakdown block's name)."""

    section: str
    label: str
    cells: tuple[str, ...]
    heading: bool = False


def format_value(value: object) -> str:
    """A cell's text: whole numbers and numbers from 10,000 up with thousands separators and no decimals, other
    numbers to 4 significant digits, missing values empty."""
    if _blank(value):
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
        if abs(number) < 1e15 and (number.is_integer() or abs(number) >= 1e4):
            return f"{number:,.0f}"
        return f"{number:.4g}"
    return str(value)


def _describe(row: str, value: object) -> str:
    """A descriptor's cell: hashes cut to 12 characters (the CSV keeps them whole), stages separated by spaces."""
    if _blank(value):
        return ""
    text = str(value)
    if row == "git commit":
        commit, plus, dirty = text.partition("+")
        return commit[:12] + plus + dirty
    if row == "input fingerprint":
        return text[:12]
    return text.replace(",", ", ") if row == "stages" else text


def _group_of(row: str) -> str | None:
    """`<stage>.<name>` for a metric row named `<stage>.<name>.<member>` (a member may hold dots), else None."""
    stage, _, metric = row.partition(".")
    name, dot, member = metric.partition(".")
    return f"{stage}.{name}" if stage and dot and member and row not in DESCRIPTORS else None


def _groups(table: pd.DataFrame) -> dict[str, list[str]]:
    """`<stage>.<name>` -> its members, in row order."""
    groups: dict[str, list[str]] = {}
    for row in table.index:
        group = _group_of(row)
        if group is not None:
            groups.setdefault(group, []).append(row.removeprefix(group + "."))
    return groups


def _is_estimate(members: list[str]) -> bool:
    return "se" in members and any(point in members for point in _POINT)


def _estimate_cells(table: pd.DataFrame, group: str, members: list[str]) -> tuple[str, ...]:
    point = next(p for p in _POINT if p in members)
    extras = [m for m in members if m not in (point, "se", *_INTERVAL)]
    cells = []
    for run in table.columns:
        value = table.at[f"{group}.{point}", run]
        if _blank(value):
            cells.append("")
            continue
        text = f"{format_value(value)} ± {format_value(table.at[f'{group}.se', run])}"
        if all(f"{group}.{bound}" in table.index for bound in _INTERVAL):
            low, high = (format_value(table.at[f"{group}.{bound}", run]) for bound in _INTERVAL)
            text += f" [{low}, {high}]"
        others = [f"{m} {format_value(table.at[f'{group}.{m}', run])}" for m in extras
                  if not _blank(table.at[f"{group}.{m}", run])]
        cells.append(text + ("\n" + " · ".join(others) if others else ""))
    return tuple(cells)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _section_of(row: str, grouped: set[str]) -> str:
    if row in DESCRIPTORS:
        return "run"
    if row.partition(".")[2] in TIMINGS or row in TIMINGS:
        return "timing"
    if row in HEADLINE_METRICS:
        return "headline"
    return "breakdown" if _group_of(row) in grouped else "other"


def metric_sections(table: pd.DataFrame) -> pd.Series:
    """The section (`SECTIONS`) of every row of a comparison table; an estimate's rows are `estimate` (or
    `headline` when the estimate is a headline)."""
    groups = _groups(table)
    estimates = {group for group, members in groups.items() if _is_estimate(members)}
    sections = {}
    for row in table.index:
        group = _group_of(row)
        if group in estimates:
            sections[row] = "headline" if group in HEADLINE_METRICS else "estimate"
        else:
            sections[row] = _section_of(row, set(groups) - estimates)
    return pd.Series(sections, name="section")


def comparison_rows(table: pd.DataFrame) -> list[ComparisonRow]:
    """The rows of a comparison table as printed: by section (`SECTIONS`, in order), estimates in one cell each,
    breakdowns as blocks (a heading row, then one row per member)."""
    groups = _groups(table)
    sections = metric_sections(table)
    rows: dict[str, list[ComparisonRow]] = {section: [] for section in SECTIONS}
    done: set[str] = set()
    headline_order = {name: i for i, name in enumerate(HEADLINE_METRICS)}
    for row in table.index:
        group = _group_of(row)
        section = sections[row]
        if group is not None and _is_estimate(groups[group]):
            if group not in done:
                rows[section].append(ComparisonRow(section, group, _estimate_cells(table, group, groups[group])))
                done.add(group)
            continue
        if section == "breakdown" and group not in done:
            rows[section].append(ComparisonRow(section, str(group), ("",) * table.shape[1], heading=True))
            done.add(str(group))
        label = f"  {row.removeprefix(f'{group}.')}" if section == "breakdown" else row
        cells = (_describe(row, v) if section == "run" else format_value(v) for v in table.loc[row])
        rows[section].append(ComparisonRow(section, label, tuple(cells)))
    rows["headline"].sort(key=lambda r: headline_order.get(r.label, len(headline_order)))
    return [row for section in SECTIONS for row in rows[section]]


# ---------------------------------------------------------------------------- the full table, and its figure
def check_table_path(path: Path | str) -> str:
    """The format of a comparison table file from its name (`csv` or `html`); one-line InputError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".html", ".htm"):
        raise InputError(f"--out: expected a .csv or .html file, got {Path(path).name!r}")
    return "csv" if suffix == ".csv" else "html"


def write_comparison(table: pd.DataFrame, path: Path | str, *, title: str = "") -> Path:
    """Write the full comparison table with each row's section: `.csv` (numbers at full precision) or `.html`."""
    path = Path(path)
    kind = check_table_path(path)
    full = table.copy()
    full.insert(0, "section", metric_sections(table))
    full.index.name = "metric"
    with atomic_output(path) as temporary:
        if kind == "csv":
            full.to_csv(temporary)
        else:
            body = full.reset_index().to_html(index=False, na_rep="", border=0, escape=True)
            heading = f"<h1>{html.escape(title)}</h1>\n" if title else ""
            temporary.write_text(f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
                                 f"</title></head>\n<body>\n{heading}{body}\n</body></html>\n")
    return path


def comparison_figure(table: pd.DataFrame, max_metrics: int = 8):
    """Small multiples of the values per run (oldest to newest, left to right), one bar chart per metric, each bar
    labelled with its value: the `PLOTTED_METRICS` present, then the other headline metrics (every metric when none
    is present, e.g. after a `--metric` filter), at most `max_metrics`. An estimate's bar carries its interval (or
    +-1.96 se). Descriptors and timings are never plotted."""
    groups = _groups(table)
    sections = metric_sections(table)
    names: list[str] = []
    for row in table.index:
        group = _group_of(row)
        name = group if group is not None and _is_estimate(groups[group]) else row
        if sections[row] not in ("run", "timing") and name not in names:
            names.append(name)
    preferred = list(dict.fromkeys(name for name in (*PLOTTED_METRICS, *HEADLINE_METRICS) if name in names))
    chosen = [name for name in (preferred or names) if _numeric(table, name, groups).notna().any()][:max_metrics]
    if not chosen:
        raise InputError("compare: no numeric metrics to plot")
    runs = list(table.columns)[::-1]
    n_columns = 1 if len(chosen) < 4 else 2
    n_rows = -(-len(chosen) // n_columns)
    figure, axes = plt.subplots(n_rows, n_columns, squeeze=False,
                                figsize=(n_columns * max(4.0, 0.9 * len(runs) + 1.5), 2.3 * n_rows))
    for axis, name in zip(axes.ravel(), chosen, strict=False):
        values = _numeric(table, name, groups)[runs].to_numpy(dtype=float)
        bars = axis.bar(range(len(runs)), values, color="#4477aa",
                        yerr=_error_bars(table, name, groups, runs, values), capsize=3)
        axis.bar_label(bars, labels=[format_value(v) for v in values], fontsize=7, padding=2)
        axis.set_title(name, fontsize=9)
        axis.set_xticks(range(len(runs)), [_short_run(run) for run in runs], fontsize=7)
        axis.margins(y=0.2)
    for axis in axes.ravel()[len(chosen):]:
        axis.set_visible(False)
    figure.supxlabel("runs, oldest to newest", fontsize=8)
    figure.tight_layout()
    return figure


def _numeric(table: pd.DataFrame, name: str, groups: dict[str, list[str]]) -> pd.Series:
    if name in groups and _is_estimate(groups[name]):
        name = f"{name}.{next(p for p in _POINT if p in groups[name])}"
    return pd.to_numeric(table.loc[name], errors="coerce")


def _error_bars(table: pd.DataFrame, name: str, groups: dict[str, list[str]], runs: list[str],
                values: np.ndarray) -> np.ndarray | None:
    if name not in groups or not _is_estimate(groups[name]):
        return None
    if all(f"{name}.{bound}" in table.index for bound in _INTERVAL):
        low, high = (pd.to_numeric(table.loc[f"{name}.{bound}", runs], errors="coerce").to_numpy(dtype=float)
                     for bound in _INTERVAL)
        return np.nan_to_num(np.vstack([values - low, high - values]))
    return np.nan_to_num(1.96 * pd.to_numeric(table.loc[f"{name}.se", runs], errors="coerce").to_numpy(dtype=float))


def _short_run(run: str) -> str:
    """`<run name> <id>` as two lines, the name cut to 14 characters."""
    name, _, run_id = run.rpartition(" ")
    return f"{name[:14]}\n{run_id}" if name else run_id
