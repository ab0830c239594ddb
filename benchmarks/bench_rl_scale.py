"""Scale of the constrained-RL path from decision logs on disk: `campaign build-transitions`, then `campaign
constrained-rl` (ridge Q-functions through Dask), at 10^6 and 10^7 users x 14 days (issue 18).

Goals (this 2-core machine): 10^7 users x 14 days (1.4 x 10^8 transitions): build-transitions under 5 minutes,
constrained-rl under 15 minutes, peak RSS under 6 GB; 10^6 users x 14 days: each stage under 2 minutes.

Each stage runs as a user runs it, through the CLI (`pipelines.cli.main`, in-process Dask cluster, MLflow tracking
to a sqlite store under the data folder), in a fresh subprocess of the harness, so its peak RSS is the whole
process's. constrained-rl: `--q-model ridge --budget-per-user 4`, default bootstrap (20), importance weighting
(the logs carry propensities). Besides the stage's wall time the subprocess wraps, without changing them, the
stage's steps with timers. constrained-rl: the checks and Gram pass (`ridge_sweeps`), each backward sweep
(`RidgeSweeps._swept`: every relabelling asked at once, T + 1 passes over the data; `evaluated` or `fit`, one
relabelling, in older code), the column generation (`maximize_under_budget_batched`, or `maximize_under_budget`
before it), the bootstrap (`RidgeSweeps.replicates`), the one-step models
(`RidgeSweeps.one_step`), the pacing grid (`paced_policy`) and the fixed-multiplier baseline where the stage has
one. build-transitions: the log check (`run_statistic`), `transition_day`, the day tables and the parquet writes.
The MLflow metrics `oracle_calls` and `oracle_rounds` are the column generation's answers and batches; "sweeps"
counts every backward sweep. Each
timed call is also appended to `progress-<stage>.jsonl` in the data folder, so a stage stopped at `--time-limit`
still reports the steps it completed and its peak RSS by then.

Data: a numpy generator with a known structure, written once per size under `benchmarks/.data/rl_scale/`, block
by block of 500,000 users (memory-flat), each block from its own seeded stream:

- users: `user_id`, `x0`..`x4` (standard normal), `region` (4 levels, uniform);
- each day each user is contacted with probability 0.8; the level is drawn by a logging policy targeted on `x0`
  and `x1` (softmax, mixed with 5% uniform), its probability logged as `propensity`;
- purchase probability: sigmoid(-1.8 + 0.4 x2 - 0.3 x3 + 0.3 [region = north] + lift(level) (1 + 0.5 tanh x1)
  + 0.5 habit), habit(t + 1) = 0.7 habit(t) + purchase(t); a user not contacted buys at the control rate and the
  purchase is not logged (it is not a decision);
- levels and face values (paid on a purchase): control 0, free_shipping 3, discount_5 5, cashback_10 10.

Logs are one parquet file per (day, block) (`logs/part-dDD-bBBBBB.parquet`): a day's decisions are in that day's
files, as a daily export writes them.

    python -m benchmarks.bench_rl_scale --users 1000000              # 10^6 x 14 (data: 6 s, 152 MiB)
    python -m benchmarks.bench_rl_scale --users 10000000             # 10^7 x 14 (data: 1 to 2 minutes, 1.5 GiB)
    python -m benchmarks.bench_rl_scale --users 10000000 --stages build-transitions
    python -m benchmarks.bench_rl_scale --users 1000000 --delete-data  # remove the size's data afterwards
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._harness import (
    DATA_DIR,
    GIB,
    command_line,
    git_state,
    measure_in_subprocess,
    mib,
    peak_rss,
    save_results,
    settings,
    table,
    tree_size,
)

DAYS = 14
BLOCK_USERS = 500_000
LEVELS = {"control": 0.0, "free_shipping": 3.0, "discount_5": 5.0, "cashback_10": 10.0}
LIFT = np.array([0.0, 0.25, 0.4, 0.6])  # logit lift of each level on a purchase
TARGETING = np.array([[0.0, 0.5, -0.3, 0.8], [0.0, -0.4, 0.6, 0.2]])  # logging scores per unit of x0, x1
REGIONS = np.array(["north", "south", "east", "west"], dtype=object)
CONTACT_RATE, EPSILON = 0.8, 0.05
BASE_LOGIT, HABIT_DECAY, HABIT_EFFECT = -1.8, 0.7, 0.5
BUDGET_PER_USER = 4.0
STAGES = ("build-transitions", "constrained-rl")
#: The method of one backward sweep (FQI + FQE of any number of relabelled rewards at once; `evaluated`, one
#: relabelling, and `fit` before it, in older code).
SWEEP = "_swept"
#: Goals per users: stage -> (seconds, peak RSS bytes or None).
GOALS = {1_000_000: {"build-transitions": (120.0, None), "constrained-rl": (120.0, None)},
         10_000_000: {"build-transitions": (300.0, 6 * GIB), "constrained-rl": (900.0, 6 * GIB)}}


def data_folder(n_users: int) -> Path:
    return DATA_DIR / "rl_scale" / f"users_{n_users}"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def write_block(folder: Path, block: int, n_users: int, seed: int) -> None:
    """Users `block * BLOCK_USERS ...` (n_users of them): their users file and their 14 daily log files, each
    written to a temporary name and renamed when complete."""
    rng = np.random.default_rng([seed, block])
    ids = block * BLOCK_USERS + np.arange(n_users, dtype=np.int64)
    x = rng.normal(size=(n_users, 5))
    region = rng.integers(0, REGIONS.size, n_users)
    users = {"user_id": ids, **{f"x{j}": x[:, j] for j in range(5)}, "region": REGIONS[region]}
    files = {folder / "users" / f"part-b{block:05d}.parquet": pa.table(users)}
    face = np.array(list(LEVELS.values()))
    names = np.array(list(LEVELS), dtype=object)
    scores = x[:, :2] @ TARGETING
    logging = np.exp(scores - scores.max(axis=1, keepdims=True))
    logging = (1 - EPSILON) * logging / logging.sum(axis=1, keepdims=True) + EPSILON / len(LEVELS)
    cumulative = np.cumsum(logging, axis=1)
    base = BASE_LOGIT + 0.4 * x[:, 2] - 0.3 * x[:, 3] + 0.3 * (region == 0)
    response = 1.0 + 0.5 * np.tanh(x[:, 1])
    habit = np.zeros(n_users)
    for day in range(DAYS):
        contacted = rng.random(n_users) < CONTACT_RATE
        level = (rng.random(n_users)[:, None] > cumulative).sum(axis=1).clip(max=len(LEVELS) - 1)
        level[~contacted] = 0
        purchased = rng.random(n_users) < _sigmoid(base + LIFT[level] * response + HABIT_EFFECT * habit)
        habit = HABIT_DECAY * habit + purchased
        rows = np.flatnonzero(contacted)
        files[folder / "logs" / f"part-d{day:02d}-b{block:05d}.parquet"] = pa.table({
            "user_id": ids[rows], "day": np.full(rows.size, day, dtype=np.int64), "arm": names[level[rows]],
            "reward": purchased[rows].astype(np.float64), "cost": face[level[rows]] * purchased[rows],
            "propensity": logging[rows, level[rows]]})
    for file, content in files.items():
        temporary = file.with_name(f".{file.name}.tmp-{os.getpid()}")
        pq.write_table(content, temporary, compression="zstd")
        os.replace(temporary, file)


def ensure_data(n_users: int, seed: int) -> Path:
    """The size's users table and logs under `data_folder(n_users)`, writing the blocks that are missing."""
    folder = data_folder(n_users)
    for name in ("users", "logs"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    blocks = -(-n_users // BLOCK_USERS)
    for block in range(blocks):
        wanted = [folder / "users" / f"part-b{block:05d}.parquet",
                  *(folder / "logs" / f"part-d{day:02d}-b{block:05d}.parquet" for day in range(DAYS))]
        if all(file.exists() for file in wanted):
            continue
        started = time.perf_counter()
        write_block(folder, block, min(BLOCK_USERS, n_users - block * BLOCK_USERS), seed)
        print(f"[rl_scale] block {block + 1}/{blocks} written ({time.perf_counter() - started:.1f} s)", flush=True)
    return folder


def _metrics(tracking_uri: str, stage: str) -> dict:
    """The metrics of the newest run of `stage` in the benchmark's experiment (names without a stage prefix)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["rl-scale"], order_by=["attribute.start_time DESC"])
    for _, run in runs.iterrows():
        found = {column.removeprefix("metrics.").removeprefix(f"{stage}."): run[column] for column in runs.columns
                 if column.startswith("metrics.") and run[column] == run[column]}
        if stage == "constrained-rl" and "oracle_calls" in found or stage == "build-transitions" and \
                "transitions" in found:
            return {key: float(value) for key, value in found.items()}
    return {}


def _timed(owner: object, name: str, record: list, progress: Path, started: float) -> None:
    """Replace `owner.name` by the same function that appends (name, seconds) to `record` per call, and a JSON line
    (name, seconds, seconds since the stage started, peak RSS so far) to `progress` (what a run stopped by its time
    limit leaves)."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        begun = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            now = time.perf_counter()
            record.append((name, now - begun))
            with open(progress, "a") as lines:
                lines.write(json.dumps({"call": name, "seconds": now - begun, "since_start": now - started,
                                        "peak_rss_bytes": peak_rss()}) + "\n")

    setattr(owner, name, timed)


def measure(stage: str, n_users: int, seed: int) -> dict:
    """One stage through the CLI (subprocess side), from the data folder; returns its wall time, breakdown and
    MLflow metrics."""
    import pyarrow.parquet

    import budget_rl.ridge_statistics
    import pipelines.stages.build_transitions
    import pipelines.stages.constrained_rl
    from pipelines.cli import main

    folder = data_folder(n_users)
    os.chdir(folder)  # MLflow artifacts land under the data folder
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    common = ["--experiment", "rl-scale", "--tracking-uri", tracking_uri, "--seed", str(seed)]
    record: list = []
    progress = progress_file(n_users, stage)
    progress.unlink(missing_ok=True)
    code_measured = git_state()  # the working tree the stage's modules are imported from
    progress.write_text(json.dumps({"code": code_measured}) + "\n")
    started = time.perf_counter()
    if stage == "build-transitions":
        for owner, name in ((pipelines.stages.build_transitions, "run_statistic"),
                            (pipelines.stages.build_transitions, "transition_day"),
                            (pipelines.stages.build_transitions, "_day_table"), (pyarrow.parquet, "write_table")):
            _timed(owner, name, record, progress, started)
        argv = ["build-transitions", "--logs", str(folder / "logs"), "--users", str(folder / "users"),
                "--out", str(folder / "transitions"), *common]
    else:
        sweeps = budget_rl.ridge_statistics.RidgeSweeps
        for owner, name in ((pipelines.stages.constrained_rl, "ridge_sweeps"),
                            (pipelines.stages.constrained_rl, "maximize_under_budget"),
                            (pipelines.stages.constrained_rl, "maximize_under_budget_batched"),
                            (pipelines.stages.constrained_rl, "fixed_multiplier_policy"),
                            (pipelines.stages.constrained_rl, "paced_policy"),
                            (sweeps, next(name for name in (SWEEP, "evaluated", "fit") if hasattr(sweeps, name))),
                            (sweeps, "replicates"), (sweeps, "one_step")):
            if hasattr(owner, name):  # the stage's steps as of the measured commit
                _timed(owner, name, record, progress, started)
        argv = ["constrained-rl", "--transitions", str(folder / "transitions"), "--out", str(folder / "policy"),
                "--q-model", "ridge", "--budget-per-user", str(BUDGET_PER_USER), *common]
    code = main(argv)
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"campaign {stage} exited with code {code}")
    return {"stage": stage, "n_users": n_users, "days": DAYS, "finished": True, "wall_s": wall, "code": code_measured,
            "metrics": _metrics(tracking_uri, stage), **_breakdown(record)}


def progress_file(n_users: int, stage: str) -> Path:
    return data_folder(n_users) / f"progress-{stage}.jsonl"


def _breakdown(record: Sequence[tuple[str, float]]) -> dict:
    """Seconds by timed call: every backward sweep apart, the rest summed by name (a sweep inside the column
    generation or the pacing grid counts in both)."""
    totals: dict = {}
    for name, seconds in record:
        totals[name] = totals.get(name, 0.0) + seconds
    sweeps = [seconds for name, seconds in record if name in (SWEEP, "evaluated", "fit")]
    return {"sweeps": len(sweeps), "sweep_s": sweeps, "seconds_by_call": totals}


def stopped(stage: str, n_users: int, limit: float) -> dict:
    """What a run stopped at its time limit leaves: the timed calls that completed, from its progress file."""
    progress = progress_file(n_users, stage)
    text = progress.read_text() if progress.exists() else json.dumps({"code": None})  # stopped before it began
    first, *lines = [json.loads(line) for line in text.splitlines()]
    return {"stage": stage, "n_users": n_users, "days": DAYS, "finished": False, "wall_s": limit, "metrics": {},
            "code": first["code"],
            "peak_rss_bytes": max((line["peak_rss_bytes"] for line in lines), default=0),
            "other_load_cores": float("nan"), "progress": lines,
            **_breakdown([(line["call"], line["seconds"]) for line in lines])}


def _row(run: dict) -> list:
    goal_s, goal_bytes = GOALS.get(run["n_users"], {}).get(run["stage"], (None, None))
    met = (run["finished"] and goal_s is not None and run["wall_s"] < goal_s
           and (goal_bytes is None or run["peak_rss_bytes"] < goal_bytes))
    by_call = run["seconds_by_call"]
    if run["stage"] == "constrained-rl":
        per_call = np.median(run["sweep_s"]) if run["sweep_s"] else float("nan")
        generation = by_call.get("maximize_under_budget", 0) + by_call.get("maximize_under_budget_batched", 0)
        detail = (f"oracle calls {int(run['metrics'].get('oracle_calls', 0))} in "
                  f"{int(run['metrics'].get('oracle_rounds', run['metrics'].get('oracle_calls', 0)))} rounds "
                  f"(sweeps in all {run['sweeps']}, median {per_call:.1f} s); checks + Gram pass "
                  f"{by_call.get('ridge_sweeps', 0):.0f} s; column generation {generation:.0f} s; bootstrap "
                  f"{by_call.get('replicates', 0):.0f} s; one-step models {by_call.get('one_step', 0):.0f} s; "
                  f"pacing grid {by_call.get('paced_policy', 0):.0f} s; fixed multiplier "
                  f"{by_call.get('fixed_multiplier_policy', 0):.0f} s")
    else:
        detail = (f"{int(run['metrics'].get('decisions', 0)):,} decisions; output {mib(run.get('output_bytes', 0))}; "
                  f"log check {by_call.get('run_statistic', 0):.0f} s, transition_day "
                  f"{by_call.get('transition_day', 0):.0f} s, day tables {by_call.get('_day_table', 0):.0f} s, "
                  f"parquet writes {by_call.get('write_table', 0):.0f} s")
    seconds = f"{run['wall_s']:.1f}" if run["finished"] else f"stopped at {run['wall_s']:.0f}"
    return [run["stage"], f"{run['n_users']:,} x {run['days']}", seconds, mib(run["peak_rss_bytes"]),
            f"{run['other_load_cores']:.2f}", detail, "" if goal_s is None else ("met" if met else "NOT met")]


def run(n_users: int, stages: Sequence[str], seed: int, limit: float | None = None) -> dict:
    started = time.perf_counter()
    folder = ensure_data(n_users, seed)
    print(f"[rl_scale] data ready ({time.perf_counter() - started:.0f} s): logs {mib(tree_size(folder / 'logs'))}, "
          f"users {mib(tree_size(folder / 'users'))}", flush=True)
    runs = {}
    for stage in stages:
        print(f"[rl_scale] {stage} at {n_users:,} users ...", flush=True)
        progress_file(n_users, stage).unlink(missing_ok=True)
        try:
            runs[stage] = measure_in_subprocess("benchmarks.bench_rl_scale:measure", timeout=limit, stage=stage,
                                                n_users=n_users, seed=seed)
        except subprocess.TimeoutExpired:
            runs[stage] = stopped(stage, n_users, limit)
        if stage == "build-transitions":
            runs[stage]["output_bytes"] = tree_size(folder / "transitions")
    print(table(["stage", "users x days", "seconds", "peak RSS", "other load (cores)", "detail", "goal"],
                [_row(r) for r in runs.values()]))
    return runs


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wait", type=float, default=180.0,
                        help="seconds to wait for a quiet machine before each stage")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds after which a stage is stopped (its completed calls are still reported)")
    parser.add_argument("--data-only", action="store_true", help="write the data and stop")
    parser.add_argument("--delete-data", action="store_true", help="remove the size's data folder afterwards")
    args = parser.parse_args(argv)
    settings["max_quiet_wait_s"] = args.max_wait
    if args.data_only:
        ensure_data(args.users, args.seed)
        return {}
    runs = run(args.users, args.stages, args.seed, args.time_limit)
    save_results(f"rl_scale_{args.users}_{'_'.join(args.stages)}", command_line("benchmarks.bench_rl_scale", argv),
                 {"runs": runs})
    if args.delete_data:
        shutil.rmtree(data_folder(args.users))
    return runs


if __name__ == "__main__":
    main()
