"""The `campaign` command: batch jobs, the demo, one command per registered stage, and run comparison.

Exit codes: 0 ok; 2 bad input or config (one line on stderr, no traceback); 1 internal error (traceback).
Set CAMPAIGN_DEBUG=1 to get tracebacks for input errors too.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
import types
import typing
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from pipelines.dates import dates_between, parse_date
from pipelines.errors import InputError
from pipelines.job import JobReport, build_job, load_job, run_job
from pipelines.serving import serve_command
from pipelines.stages.registry import DemoInputs, Stage, registered_stages
from pipelines.tracking import DEFAULT_TRACKING_URI, package_version

DEMO_USERS = 1_000_000
DEMO_EXPERIMENT = "campaign-demo"

stdout = Console()
stderr = Console(stderr=True)

_scheduler_option = click.option("--scheduler", default=None, metavar="ADDRESS",
                                 help="Dask scheduler, e.g. tcp://host:8786 (default: $DASK_SCHEDULER_ADDRESS, "
                                      "else an in-process cluster)")
_tracking_option = click.option("--tracking-uri", default=None, metavar="URI",
                                help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                     f"else {DEFAULT_TRACKING_URI})")


def print_report(report: JobReport) -> None:
    """The summary table of a job and where to look next."""
    if report.done_before:
        stdout.print(f"{report.date}: done before, nothing to recompute (same config and inputs): MLflow run "
                     f"{report.run_id} in experiment '{report.experiment}' at {report.tracking_uri}; --force runs "
                     f"it again")
        return
    title = "campaign job summary" + (f" for {report.date}" if report.date else "")
    table = Table(title=title, show_lines=False)
    for name in ("stage", "seconds", "headline", "outputs"):
        table.add_column(name, overflow="fold")
    for stage, result in report.results.items():
        headline = "; ".join(f"{k}: {_short(v)}" for k, v in result.summary.items())
        outputs = "\n".join(str(p) for p in result.outputs.values())
        table.add_row(stage, f"{report.seconds[stage]:.1f}", headline, outputs)
    stdout.print(table)
    stdout.print(f"MLflow run {report.run_id} in experiment '{report.experiment}' at {report.tracking_uri}")
    if report.tracking_uri.startswith("sqlite:"):
        stdout.print(f"Look next: mlflow ui --backend-store-uri {report.tracking_uri}")
    else:
        stdout.print(f"Look next: {report.tracking_uri}")
    stdout.print(f"Compare runs: campaign compare --experiment {report.experiment}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_version(), prog_name="campaign")
def cli() -> None:
    """Marketing decisions on your own logs, as tracked batch jobs."""


_date_option = click.option("--date", default=None, metavar="YYYY-MM-DD",
                            help="run date of a daily job: fills the job's {date} templates (default: its date:)")
_force_option = click.option("--force", is_flag=True,
                             help="run again a date that an earlier run finished with the same config and inputs")


@cli.command("run")
@click.argument("job_file", type=click.Path(path_type=Path))
@_date_option
@_force_option
@_scheduler_option
@_tracking_option
def run_command(job_file: Path, date: str | None, force: bool, scheduler: str | None,
                tracking_uri: str | None) -> None:
    """Run the stages named in a job YAML file (for one run date with --date)."""
    print_report(run_job(load_job(job_file, date=date), scheduler=scheduler, tracking_uri=tracking_uri,
                         force=force))


@cli.command("backfill")
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("--from", "first", required=True, metavar="YYYY-MM-DD", help="first run date")
@click.option("--to", "last", required=True, metavar="YYYY-MM-DD", help="last run date (included)")
@_force_option
@_scheduler_option
@_tracking_option
def backfill_command(job_file: Path, first: str, last: str, force: bool, scheduler: str | None,
                     tracking_uri: str | None) -> None:
    """Run a dated job for every date from --from to --to, in order, stopping at the first that fails (dates an
    earlier run finished are reported, not recomputed)."""
    dates = list(dates_between(parse_date(first, "--from"), parse_date(last, "--to")))
    for date in dates:
        try:
            report = run_job(load_job(job_file, date=date), scheduler=scheduler, tracking_uri=tracking_uri,
                             force=force)
        except InputError as error:
            raise InputError(f"backfill stopped at {date.isoformat()} ({len(dates) - dates.index(date) - 1} later "
                             f"date(s) not run): {error}") from error.__cause__
        print_report(report)


@cli.command("demo")
@click.option("--users", default=DEMO_USERS, show_default=True, type=click.IntRange(min=100))
@click.option("--days", default=7, show_default=True, type=click.IntRange(min=1))
@click.option("--out", default="demo-output", show_default=True, type=click.Path(path_type=Path),
              help="folder for the generated campaign and every stage's outputs")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--experiment", default=DEMO_EXPERIMENT, show_default=True)
@_scheduler_option
@_tracking_option
def demo_command(users: int, days: int, out: Path, seed: int, experiment: str, scheduler: str | None,
                 tracking_uri: str | None) -> None:
    """Generate a synthetic campaign and run every registered stage on it, tracked in MLflow."""
    out = out.resolve()
    inputs = DemoInputs(campaign_dir=out / "campaign", out_dir=out)
    sections = {stage.name: stage.demo(inputs) for stage in registered_stages() if stage.demo is not None}
    sections["generate"] |= {"n_users": users, "n_days": days}
    job = build_job({"seed": seed, "experiment": experiment, **sections}, base_dir=Path.cwd(), source="demo")
    print_report(run_job(job, scheduler=scheduler, tracking_uri=tracking_uri))


@cli.command("simulate")
@click.option("--days", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--users", default=100_000, show_default=True, type=click.IntRange(min=100))
@click.option("--out", default="simulate-output", show_default=True, type=click.Path(path_type=Path),
              help="folder for the daily logs, policies and the loop's table and figure")
@click.option("--start", default="2026-01-01", show_default=True, metavar="YYYY-MM-DD", help="the first date")
@click.option("--policy", default="lin-ts", show_default=True, help="the daily job's fit-bandit policy")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--contagion", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="interference: activity logit gained per unit share of a user's interaction partners who bought "
                   "the day before (0: none)")
@click.option("--ab-test/--no-ab-test", default=False, show_default=True,
              help="run a graph-clustered A/B test of the loop against the logging policy (assign, then readout)")
@click.option("--experiment", default="campaign-loop", show_default=True)
@_tracking_option
def simulate_command(days: int, users: int, out: Path, start: str, policy: str, seed: int, contagion: float,
                     ab_test: bool, experiment: str, tracking_uri: str | None) -> None:
    """The closed loop on the synthetic world: each day the champion decides, the world answers, and the daily job
    (fit-bandit warm-started, promote) learns from the answers; one MLflow run with a nested run per day."""
    from pipelines.synthetic import CampaignConfig, CampaignWorld
    from pipelines.synthetic.loop import closed_loop, cumulative_share, daily_job, loop_figure, loop_frame, promotions
    from pipelines.tracking import JobTracker

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_name = f"{experiment}-policy"
    world = CampaignWorld.from_config(CampaignConfig(n_users=users, n_days=days, chunk_users=users), random_state=seed)
    ab = {"experiment": experiment, "seed": seed, "method": "leiden", "max_cluster_size": 1000} if ab_test else None
    tracker = JobTracker(experiment, tracking_uri)
    with tracker.job("simulate", {"days": days, "users": users, "policy": policy, "seed": seed,
                                  "contagion": contagion, "ab_test": ab_test},
                     {"campaign.kind": "simulation"}) as log:
        run = closed_loop(world, users, days, daily_job(policy, seed, experiment, model_name), out,
                          model_name=model_name, start=parse_date(start, "--start"),
                          tracking_uri=tracker.tracking_uri, contagion=contagion, experiment=ab)
        frame = loop_frame(run.days)
        for step, row in frame.iterrows():
            log.metrics({key: float(row[key]) for key in ("served_value", "logging_value", "ceiling_value",
                                                          "oracle_value", "realised", "share_of_ceiling_gain",
                                                          "share_of_oracle_gain")}, step=int(step))
        gate = promotions(frame)
        log.table(frame, "loop", index=False)
        log.table(gate, "promotions", index=False)
        log.metrics({"promotions": float(frame["promoted"].sum()),
                     "gate_coverage": float(gate["covered"].mean()) if len(gate) else float("nan"),
                     "cumulative_share_of_ceiling_gain": cumulative_share(frame, "ceiling"),
                     "cumulative_share_of_oracle_gain": cumulative_share(frame, "oracle")})
        if run.experiment is not None:
            log.table(run.experiment, "ab_test", index=False)
            log.metrics({"ab_test.true_lift": float(run.experiment["true_lift"].iloc[0])})
            run.experiment.to_csv(out / "ab_test.csv", index=False)
        log.figure(loop_figure(frame), "loop")
    frame.to_csv(out / "loop.csv", index=False)
    gate.to_csv(out / "promotions.csv", index=False)
    stdout.print(frame.to_string(index=False))
    stdout.print(gate.to_string(index=False))
    stdout.print(f"cumulative share of the gain over logging: {cumulative_share(frame, 'ceiling'):.3f} of the feature "
                 f"ceiling's, {cumulative_share(frame, 'oracle'):.3f} of the oracle's")
    if run.experiment is not None:
        stdout.print(run.experiment.to_string(index=False))
    stdout.print(f"MLflow run {tracker.run_id} in experiment '{experiment}' at {tracker.tracking_uri}; "
                 f"{out / 'loop.csv'}")


@cli.command("import-open-bandit")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="folder for the decision log (OUT/logs) and a job that runs on it (OUT/job.yaml)")
@click.option("--policy", default="random", show_default=True, type=click.Choice(["random", "bts"]),
              help="the logging policy whose sample to import")
@click.option("--campaign", default="all", show_default=True, type=click.Choice(["all", "men", "women"]))
@click.option("--wheel", default=None, type=click.Path(path_type=Path),
              help="the obp wheel (default: $CAMPAIGN_OBP_WHEEL, else .cache/wheels/obp-*.whl)")
def import_open_bandit_command(out: Path, policy: str, campaign: str, wheel: Path | None) -> None:
    """Turn the Open Bandit Dataset sample into a decision log and a ready-to-run job (docs/your_data.md)."""
    from pipelines.open_bandit import import_open_bandit

    logs, job = import_open_bandit(out, policy, campaign, wheel)
    stdout.print(f"decision log: {logs}")
    stdout.print(f"job: {job}")
    stdout.print(f"Run it: campaign run {job}")


@cli.command("compare")
@click.option("--experiment", required=True, help="MLflow experiment name")
@click.option("--metric", "metrics", multiple=True, help="keep rows containing this text (repeatable)")
@click.option("--max-runs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="write the full table, every run and row at full precision (.csv or .html)")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help="save a figure of the headline values per run (PNG)")
@_tracking_option
def compare_command(experiment: str, metrics: tuple[str, ...], max_runs: int, out: Path | None, plot: Path | None,
                    tracking_uri: str | None) -> None:
    """Show the job runs of an experiment side by side (newest first): headline metrics, then estimates, per-arm
    and per-feature breakdowns, other metrics and timings."""
    import matplotlib.pyplot as plt
    from rich.markup import escape

    from pipelines.compare import check_table_path, compare_runs, comparison_figure, comparison_rows, write_comparison
    from pipelines.io import atomic_output, ensure_writable

    if out is not None:
        check_table_path(out)
    for target in (out, plot):
        if target is not None:
            ensure_writable(target)
    table = compare_runs(experiment, tracking_uri=tracking_uri, metrics=list(metrics), max_runs=max_runs)
    if out is not None:
        write_comparison(table, out, title=f"experiment {experiment}")
    if plot is not None:
        figure = comparison_figure(table)
        with atomic_output(plot) as temporary:
            figure.savefig(temporary, format="png", dpi=110)
        plt.close(figure)
    rows = comparison_rows(table)
    label_width = min(_LABEL_WIDTH, max(len(row.label) for row in rows))
    shown = min(table.shape[1], max(1, (stdout.width - label_width - 4) // (_RUN_WIDTH + 3)))
    run_width = min(_RUN_WIDTH_MAX, max(_RUN_WIDTH, (stdout.width - label_width - 3 * (shown + 1) - 1) // shown))
    view = Table(title=escape(f"experiment {experiment}"), title_justify="left")
    view.add_column("", overflow="fold", width=label_width)
    for run in table.columns[:shown]:
        view.add_column(escape(str(run)), overflow="fold", width=run_width)
    titles = {"run": "run", "headline": "headline", "estimate": "estimates: value ± se [interval]",
              "breakdown": "by arm, feature, segment or model", "other": "other metrics", "timing": "seconds"}
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            view.add_section()
            view.add_row(f"[bold]{escape(titles[section])}[/bold]")
        label = escape(_wrapped_label(row.label, label_width))
        label = f"[italic]{label}[/italic]" if row.heading else label
        view.add_row(label, *(escape(cell) for cell in row.cells[:shown]))
    stdout.print(view)
    if shown < table.shape[1]:
        stdout.print(f"{table.shape[1] - shown} older run(s) not shown at this width ({stdout.width} columns); "
                     "--out FILE.csv or FILE.html writes them all")
    for target, what in ((out, "table"), (plot, "plot")):
        if target is not None:
            stdout.print(f"{what} saved to {target}")


#: Widths in `campaign compare`: a run's column at least (an estimate's cell wraps) and at most (an estimate's
#: first line fits), the labels at most (longer ones wrap), so that two runs fit 80 columns.
_RUN_WIDTH, _RUN_WIDTH_MAX, _LABEL_WIDTH = 16, 40, 36


def _wrapped_label(label: str, width: int) -> str:
    """A metric name too long for its column, broken after its stage (`select-features.` / `  features_selected`)."""
    stage, dot, rest = label.partition(".")
    return f"{stage}.\n  {rest}" if len(label) > width and dot and not label.startswith(" ") else label


# ---------------------------------------------------------------------------- one command per stage
def _option_type(annotation: Any) -> tuple[Any, bool, bool, bool] | None:
    """(click type, is_multiple, is_flag, is_optional) for a config field's annotation, or None when the field is not
    on the command line. A mapping field is a YAML/JSON string (click type `dict`, parsed in the callback)."""
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    if optional:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(choice) for choice in typing.get_args(annotation)]), False, False, optional
    if annotation is dict or typing.get_origin(annotation) is dict:
        return dict, False, False, optional
    if typing.get_origin(annotation) in (list, tuple):  # read as text: "0.5,0.9" is split, then the config types it
        return str, True, False, optional
    if annotation is bool:
        return bool, False, True, optional
    if annotation in (int, float, str):
        return annotation, False, False, optional
    if annotation is Path:
        return str, False, False, optional
    return None


def _mapping_option(name: str, text: str) -> dict[str, Any]:
    """A mapping given on the command line as YAML or JSON; one-line error naming the option otherwise."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise InputError(f"--{name.replace('_', '-')}: expected a YAML mapping like '{{alpha: 0.5}}', got {text!r}")
    return value


def _stage_command(stage: Stage[Any]) -> click.Command:
    params: list[click.Parameter] = []
    fields: dict[str, tuple[bool, bool]] = {}
    for name, field in stage.config_model.model_fields.items():
        option = _option_type(field.annotation)
        if option is None:
            continue
        kind, multiple, flag, optional = option
        flag_name = stage.cli_aliases.get(name, name).replace("_", "-")
        help_text = (field.description or "") + ("" if field.is_required() else f" [default: {field.default}]")
        declaration = f"--{flag_name}/--no-{flag_name}" if flag else f"--{flag_name}"
        if kind is dict:
            kind, help_text = str, help_text + " (YAML mapping, e.g. '{alpha: 0.5}')"
        params.append(click.Option([declaration, name], type=None if flag else kind, multiple=multiple,
                                   default=None, help=help_text + (" (repeatable, or comma-separated)" if multiple
                                                                   else "")))
        fields[name] = (multiple, optional, option[0] is dict)
    params += [click.Option(["--seed"], type=click.IntRange(min=0), default=0, show_default=True),
               click.Option(["--experiment"], default="campaign", show_default=True),
               click.Option(["--scheduler"], default=None, metavar="ADDRESS", help="Dask scheduler address"),
               click.Option(["--tracking-uri"], default=None, metavar="URI", help="MLflow tracking URI")]

    def callback(seed: int, experiment: str, scheduler: str | None, tracking_uri: str | None, **values: Any) -> None:
        section: dict[str, Any] = {}
        for name, value in values.items():
            multiple, optional, mapping = fields[name]
            if value is None or (multiple and not value):
                continue
            if mapping:
                value = _mapping_option(name, value)
            elif multiple:
                value = [item for chunk in value for item in str(chunk).split(",") if item]
            elif optional and isinstance(value, str) and value.lower() in ("none", "null"):
                value = None
            section[name] = value
        job = build_job({"seed": seed, "experiment": experiment, stage.name: section}, base_dir=Path.cwd(),
                        source=stage.name)
        print_report(run_job(job, scheduler=scheduler, tracking_uri=tracking_uri))

    return click.Command(stage.name, params=params, callback=callback, help=stage.help)


for _stage in registered_stages():
    cli.add_command(_stage_command(_stage))
cli.add_command(serve_command)


# ---------------------------------------------------------------------------- entry point
class _ShuffleLifecycle(logging.Filter):
    """Drops Dask's notes that a shuffle started ("Shuffle <id> initialized by task ...") and ended ("... deactivated
    due to stimulus ..."). distributed logs them at WARNING level for every shuffle, yet they report normal work
    (select-features moves each user's rows into one partition): nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("Shuffle %s") and ("initialized by task" in message
                                                          or "deactivated due to stimulus" in message))


def _quiet_libraries() -> None:
    """Library output a user cannot act on stays out of the terminal: info-level logs of MLflow, its migrations,
    Dask and HTTP clients, MLflow's artifact progress bars, and Dask's shuffle lifecycle notes."""
    for name in ("mlflow", "alembic", "distributed", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    shuffles = logging.getLogger("distributed.shuffle._scheduler_plugin")
    if not any(isinstance(existing, _ShuffleLifecycle) for existing in shuffles.filters):
        shuffles.addFilter(_ShuffleLifecycle())
    _consume_highs_banner()


@functools.cache
def _consume_highs_banner() -> None:
    """HiGHS (the LP solver behind `allocate --method lp`) prints a banner to standard output from C++ when the
    process makes its first solver object, whatever its options; later objects print nothing. Make that first object
    here, before any work (one thread), with file descriptor 1 pointed at /dev/null."""
    try:
        import highspy
    except ImportError:  # cvxpy then solves LPs with another solver, which prints nothing
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 2 bad input or config, 1 internal error)."""
    _quiet_libraries()
    debug = os.environ.get("CAMPAIGN_DEBUG") == "1"
    try:
        result = cli.main(args=argv, prog_name="campaign", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.exceptions.Abort:
        stderr.print("aborted")
        return 130
    except click.ClickException as error:
        print(f"error: {error.format_message()}", file=sys.stderr)
        return 2
    except InputError as error:
        if debug:
            traceback.print_exc()
        message = str(error)
        print(f"error: {message.splitlines()[0] if message else type(error).__name__}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - the last line of defence: report and exit 1
        traceback.print_exc()
        print("internal error: please report it with the traceback above", file=sys.stderr)
        return 1

