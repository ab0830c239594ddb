"""Off-policy evaluation of 10^7 logged rows on Dask: time and peak memory of the `evaluate-policy` stage.

The logs are 10^7 rounds of a known-truth environment (`bandits.datasets.SyntheticBandit`, 10 features, 5 arms,
softmax logger), written as 20 parquet files of 500,000 rows. A LinTS policy is fitted by the `fit-bandit` stage on
the same logs (also a map-reduce over the partitions: its time is reported too), then `evaluate-policy` runs IPS,
SNIPS and DR (cross-fitted ridge reward model, 5 folds): two passes over the partitions, the first for the
per-fold ridge statistics, the second for the OPE sums. Each stage runs as a job in a fresh process on the
in-process Dask cluster (threads, so the process's peak RSS covers every worker), tracking to a throwaway MLflow
store. The true value of the policy on the logged contexts is computed from the environment and compared.

    python -m benchmarks.bench_ope_dask            # 10^7 rows (writes about 1 GB of parquet once)
    python -m benchmarks.bench_ope_dask --quick    # 10^6 rows
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bandits.datasets import SyntheticBandit
from benchmarks._harness import (
    DATA_DIR,
    add_common_arguments,
    apply_common_arguments,
    command_line,
    ensure_files,
    measure_in_subprocess,
    mib,
    save_results,
    table,
    warm_page_cache,
)

ROWS_PER_FILE = 500_000
ENVIRONMENT = {"n_features": 10, "n_arms": 5, "reward": "linear", "seed": 3}
GOAL_PEAK_BYTES = 4 * 1024**3


def write_part(index: int, path: Path) -> None:
    """One file of logged rounds; its randomness comes from its index alone."""
    feedback, _ = SyntheticBandit(**ENVIRONMENT).logged_feedback(ROWS_PER_FILE, random_state=1000 + index)
    frame = feedback.to_frame()
    frame.insert(0, "user_id", np.arange(index * ROWS_PER_FILE, (index + 1) * ROWS_PER_FILE, dtype=np.int64))
    frame.to_parquet(path, index=False, compression="zstd")


def run_stage(stage: str, section: dict, store: str) -> dict:
    """Run one stage as a job (in-process Dask cluster, MLflow to `store`); seconds of the stage itself."""
    from pipelines.job import build_job, run_job

    job = build_job({"seed": 0, "experiment": "bench-ope", stage: section}, base_dir=Path(store), source=stage)
    started = time.perf_counter()
    report = run_job(job, tracking_uri=f"sqlite:///{store}/mlflow.db")
    result = {"job_s": time.perf_counter() - started, "stage_s": report.seconds[stage]}
    if stage == "evaluate-policy":
        result["estimates"] = report.results[stage].data["estimates"].to_dict("records")
    return result


def true_value(files: Sequence[Path], policy_dir: Path) -> float:
    """The policy's true value on the logged contexts, from the environment's expected rewards."""
    from pipelines.models import load_fitted_policy

    fitted = load_fitted_policy(policy_dir)
    environment = SyntheticBandit(**ENVIRONMENT)
    total, rows = 0.0, 0
    for file in files:
        frame = pd.read_parquet(file, columns=fitted.features)
        contexts = frame.to_numpy(dtype=np.float64)
        total += float((fitted.policy.action_probabilities(contexts) * environment.expected_rewards(contexts)).sum())
        rows += len(frame)
    return total / rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="logged rows (default 10^7; 10^6 with --quick)")
    add_common_arguments(parser, repeat=1)
    args = parser.parse_args(argv)
    apply_common_arguments(args)
    n_rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    folder = DATA_DIR / "ope_logs"
    files = ensure_files(folder, n_rows, ROWS_PER_FILE, write_part, "ope logs")
    data = folder if len(files) == len(list(folder.glob("part-*.parquet"))) else None
    with tempfile.TemporaryDirectory(dir=DATA_DIR) as scratch:
        if data is None:  # use exactly the first n_rows: link the files into a folder of their own
            data = Path(scratch) / "logs"
            data.mkdir()
            for file in files:
                (data / file.name).symlink_to(file)
        features = [f"x{j}" for j in range(ENVIRONMENT["n_features"])]
        policy_dir = Path(scratch) / "policy"
        warm_page_cache(files)
        fit = measure_in_subprocess(
            "benchmarks.bench_ope_dask:run_stage", stage="fit-bandit", store=scratch,
            section={"logs": str(data), "out": str(policy_dir), "features": features, "policy": "lin-ts",
                     "params": {"alpha": 0.3}, "propensity": "propensity", "split": "all"})
        evaluation = measure_in_subprocess(
            "benchmarks.bench_ope_dask:run_stage", stage="evaluate-policy", store=scratch,
            prepare=lambda: warm_page_cache(files),
            section={"logs": str(data), "out": str(Path(scratch) / "value.csv"), "policy": str(policy_dir),
                     "estimators": ["ips", "snips", "dr"], "split": "all"})
        truth = true_value(files, policy_dir)
        shutil.rmtree(policy_dir)
    estimates = pd.DataFrame(evaluation["estimates"])
    estimates["error"] = estimates["value"] - truth
    estimates["covers"] = (estimates["ci_low"] <= truth) & (truth <= estimates["ci_high"])
    rows = [["fit-bandit (LinTS, map-reduce)", f"{fit['stage_s']:.1f}", f"{n_rows / fit['stage_s'] / 1e6:.2f}",
             mib(fit["peak_rss_bytes"])],
            ["evaluate-policy (IPS, SNIPS, DR)", f"{evaluation['stage_s']:.1f}",
             f"{n_rows / evaluation['stage_s'] / 1e6:.2f}", mib(evaluation["peak_rss_bytes"])]]
    print(f"\n{n_rows:,} logged rows in {len(files)} files; in-process Dask cluster; "
          f"other load during evaluation {evaluation['other_load_cores']:.2f} cores\n")
    print(table(["stage", "seconds", "M rows/s", "peak RSS (process)"], rows))
    print()
    print(table(["estimator", "value", "se", "CI", "true value", "error", "covers"],
                [[r.estimator, f"{r.value:.5f}", f"{r.se:.5f}", f"[{r.ci_low:.5f}, {r.ci_high:.5f}]", f"{truth:.5f}",
                  f"{r.error:+.5f}", "yes" if r.covers else "no"] for r in estimates.itertuples()]))
    met = evaluation["peak_rss_bytes"] < GOAL_PEAK_BYTES
    print(f"\ngoal peak memory < 4 GB: {'met' if met else 'MISSED'} ({mib(evaluation['peak_rss_bytes'])})")
    save_results("ope_dask", command_line("benchmarks.bench_ope_dask", argv),
                 {"rows": n_rows, "fit": fit, "evaluate": evaluation, "true_value": truth,
                  "estimates": estimates.to_dict("records")})


if __name__ == "__main__":
    main()
