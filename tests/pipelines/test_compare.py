"""`campaign compare`: headline metrics first, estimates in one cell, breakdowns grouped, timings last; the full
table as CSV or HTML; a figure of the values per run; a table that fits the terminal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from rich.console import Console

import pipelines.cli
from pipelines.cli import main
from pipelines.compare import compare_runs, comparison_figure, comparison_rows, write_comparison
from pipelines.tracking import JobTracker

EXPERIMENT = "compare-two-runs"
#: Two job runs (oldest first) of the same stages with known metrics.
RUNS = {
    "monday": {
        "profile-logs": {"rows": 1000, "arms": 2, "reward_mean.coupon": 0.25, "reward_mean.nothing": 0.125,
                         "stage_seconds": 1.5},
        "evaluate-policy": {"dr.value": 0.31, "dr.se": 0.01, "dr.ci_low": 0.29, "dr.ci_high": 0.33, "dr.error": 0.002,
                            "ips.value": 0.3, "ips.se": 0.02, "rows": 500, "stage_seconds": 2.5},
        "allocate": {"spend": 123456.7, "value": 42.5, "passes": 3, "stage_seconds": 9.0},
    },
    "tuesday": {
        "profile-logs": {"rows": 2000, "arms": 2, "reward_mean.coupon": 0.5, "reward_mean.nothing": 0.25,
                         "stage_seconds": 1.0},
        "evaluate-policy": {"dr.value": 0.41, "dr.se": 0.02, "dr.ci_low": 0.37, "dr.ci_high": 0.45, "dr.error": 0.004,
                            "ips.value": 0.4, "ips.se": 0.03, "rows": 900, "stage_seconds": 3.0},
        "allocate": {"spend": 100.0, "value": 7.25, "passes": 4, "stage_seconds": 8.0},
    },
}


@pytest.fixture
def two_runs(mlflow_uri, in_tmp) -> tuple[str, list[str]]:
    """The tracking URI and the two runs' column names, newest first."""
    names = []
    for seed, (name, stages) in enumerate(RUNS.items()):
        tracker = JobTracker(EXPERIMENT, mlflow_uri)
        tags = {"campaign.seed": str(seed), "campaign.stages": ",".join(stages),
                "campaign.input_fingerprint": f"{seed:064x}"}
        with tracker.job(name, {"seed": seed}, tags) as job:
            for stage, metrics in stages.items():
                with tracker.stage(stage) as log:
                    log.metrics(metrics)
            job.metrics({"job_seconds": sum(m["stage_seconds"] for m in stages.values())})
        names.append(f"{name} {tracker.run_id[:8]}")
    return mlflow_uri, names[::-1]


def test_the_table_has_one_column_per_run_newest_first_and_rows_in_stage_order(two_runs):
    uri, names = two_runs
    table = compare_runs(EXPERIMENT, tracking_uri=uri)
    assert list(table.columns) == names
    rows = list(table.index)
    assert rows[:6] == ["status", "started", "seed", "stages", "git commit", "input fingerprint"]
    assert rows.index("profile-logs.rows") < rows.index("evaluate-policy.dr.value") < rows.index("allocate.spend")
    assert table.at["allocate.spend", names[1]] == pytest.approx(123456.7)
    assert list(compare_runs(EXPERIMENT, tracking_uri=uri, metrics=["spend"]).index)[6:] == ["allocate.spend"]


def test_rows_read_headline_first_estimates_in_one_cell_breakdowns_grouped_timings_last(two_runs):
    uri, names = two_runs
    rows = comparison_rows(compare_runs(EXPERIMENT, tracking_uri=uri))
    sections = [row.section for row in rows]
    assert sections == sorted(sections, key=["run", "headline", "estimate", "breakdown", "other", "timing"].index)
    by_label = {row.label: row for row in rows}
    headline = [row.label for row in rows if row.section == "headline"]
    assert headline == ["profile-logs.rows", "profile-logs.arms", "evaluate-policy.dr", "allocate.spend",
                        "allocate.value"]
    assert by_label["evaluate-policy.dr"].cells == ("0.41 ± 0.02 [0.37, 0.45]\nerror 0.004",
                                                    "0.31 ± 0.01 [0.29, 0.33]\nerror 0.002")
    assert by_label["evaluate-policy.ips"].section == "estimate"
    assert by_label["evaluate-policy.ips"].cells == ("0.4 ± 0.03", "0.3 ± 0.02")
    assert by_label["allocate.spend"].cells == ("100", "123,457")
    block = [row.label for row in rows if row.section == "breakdown"]
    assert block == ["profile-logs.reward_mean", "  coupon", "  nothing"]
    assert by_label["profile-logs.reward_mean"].heading and by_label["  coupon"].cells == ("0.5", "0.25")
    assert {row.label for row in rows if row.section == "other"} == {"evaluate-policy.rows", "allocate.passes"}
    assert [row.label for row in rows if row.section == "timing"] == [
        "profile-logs.stage_seconds", "evaluate-policy.stage_seconds", "allocate.stage_seconds", "job_seconds"]
    assert by_label["job_seconds"].cells == ("12", "13")


def test_the_full_table_is_written_as_csv_and_html(two_runs, tmp_path):
    uri, names = two_runs
    table = compare_runs(EXPERIMENT, tracking_uri=uri)
    csv = pd.read_csv(write_comparison(table, tmp_path / "runs.csv"), index_col="metric")
    assert list(csv.columns) == ["section", *names]
    assert list(csv.index) == list(table.index)
    assert float(csv.at["allocate.spend", names[1]]) == 123456.7
    assert csv.at["evaluate-policy.dr.ci_low", "section"] == "headline"
    assert csv.at["profile-logs.reward_mean.coupon", "section"] == "breakdown"
    page = write_comparison(table, tmp_path / "runs.html", title="two <runs>").read_text()
    assert page.count("<tr") == len(table) + 1 and "<h1>two &lt;runs&gt;</h1>" in page
    assert "123456.7" in page and "profile-logs.reward_mean.coupon" in page


def test_the_figure_shows_the_values_per_run_not_timings(two_runs):
    uri, names = two_runs
    figure = comparison_figure(compare_runs(EXPERIMENT, tracking_uri=uri))
    panels = {axis.get_title(): axis for axis in figure.axes if axis.get_visible()}
    assert list(panels) == ["evaluate-policy.dr", "allocate.value", "allocate.spend", "profile-logs.rows",
                            "profile-logs.arms"]
    heights = {title: [bar.get_height() for bar in axis.patches] for title, axis in panels.items()}
    assert heights["evaluate-policy.dr"] == pytest.approx([0.31, 0.41])  # oldest to newest
    assert heights["allocate.spend"] == pytest.approx([123456.7, 100.0])
    assert [label.get_text() for label in panels["allocate.spend"].get_xticklabels()] == [
        name.replace(" ", "\n") for name in names[::-1]]
    errors = next(c for c in panels["evaluate-policy.dr"].containers if isinstance(c, ErrorbarContainer))
    segments = np.asarray(errors.lines[2][0].get_segments())
    assert segments[:, :, 1] == pytest.approx(np.array([[0.29, 0.33], [0.37, 0.45]]))


@pytest.mark.parametrize(("width", "shown"), [(70, 1), (100, 2)])
def test_the_command_fits_the_terminal(two_runs, width, shown, monkeypatch, capsys, tmp_path):
    uri, names = two_runs
    monkeypatch.setattr(pipelines.cli, "stdout", Console(width=width))
    code = main(["compare", "--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(tmp_path / "all.csv"),
                 "--plot", str(tmp_path / "values.png")])
    out = capsys.readouterr().out
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= width
    assert [name in out for name in names] == [True] * shown + [False] * (2 - shown)
    assert ("1 older run(s) not shown" in out) == (shown == 1)
    assert out.index("headline") < out.index("estimates") < out.index("by arm") < out.index("seconds")
    assert set(pd.read_csv(tmp_path / "all.csv").columns) == {"metric", "section", *names}
    assert (tmp_path / "values.png").read_bytes()[:4] == b"\x89PNG"


def test_a_table_file_of_another_kind_is_refused_before_any_work(two_runs, capsys, tmp_path):
    uri, _ = two_runs
    code = main(["compare", "--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(tmp_path / "t.xlsx")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: --out: expected a .csv or .html file, got 't.xlsx'"


def test_two_small_profile_runs_side_by_side(mlflow_uri, in_tmp, capsys):
    rng = np.random.default_rng(0)
    for n in (200, 300):
        logs = pd.DataFrame({"user_id": np.arange(n), "arm": rng.choice(["a", "b"], n), "reward": rng.random(n),
                             "propensity": np.full(n, 0.5), "cost": np.zeros(n)})
        logs.to_parquet(in_tmp / f"logs{n}.parquet", index=False)
        assert main(["profile-logs", "--logs", f"logs{n}.parquet", "--out", f"profile{n}.csv",
                     "--tracking-uri", mlflow_uri, "--experiment", "profiles"]) == 0
    capsys.readouterr()
    assert main(["compare", "--experiment", "profiles", "--tracking-uri", mlflow_uri, "--out", "runs.csv"]) == 0
    table = pd.read_csv(Path("runs.csv"), index_col="metric")
    assert table.loc["profile-logs.rows"].iloc[1:].astype(float).tolist() == [300.0, 200.0]
    assert table.loc["profile-logs.rows", "section"] == "headline"
    assert "profile-logs.rows" in capsys.readouterr().out
