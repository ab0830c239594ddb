"""The platform's scaling pattern: `pipelines.execution.run_statistic` over parquet on disk, against plain pandas.

The statistic is per-group count, reward sum and reward sum of squares (then mean and variance) over a synthetic
table `group` (int32, `--groups` distinct values, default 1,000: user buckets) and `reward` (float64, log-normal),
stored as zstd parquet files of `--rows-per-file` rows (default 5,000,000) under benchmarks/.data/tree_reduce/
(written once with a fixed seed, reused afterwards; files are added when a larger size needs them).

Measured, each in a fresh subprocess (peak RSS = the whole process: the in-process Dask cluster included):

- tree_reduce at the full size (default 10^8 rows) inside `dask_client()` (in-process LocalCluster, 2 threads),
  reading the files with `dask.dataframe.read_parquet` (one partition per file), with the partial statistic
  written in pandas (`groupby().agg()`, as the domain packages do) and, for reference, with `numpy.bincount`;
- `pd.read_parquet(files)` + `groupby().agg()` in one piece, and tree_reduce on the same files, side by side at
  the comparison sizes (default 10^7, 3x10^7 and 10^8 rows), with the time and memory ratios and a check that
  the answers agree (counts exactly, sums to 1e-9 relative).

The input files are read just before each run, so every run reads them from a warm page cache.

    python -m benchmarks.bench_tree_reduce                       # full size: 10^8 rows
    python -m benchmarks.bench_tree_reduce --quick               # 10^6 rows
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import as_completed

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
from campaign_core import StatisticOf
from pipelines.execution import current_client, dask_client, run_statistic

COLUMNS = ["group", "reward"]
SUMS = ["count", "reward_sum", "reward_sq_sum"]
DEFAULT_ROWS = 100_000_000
DEFAULT_COMPARE = (10_000_000, 30_000_000, 100_000_000)
DEFAULT_ROWS_PER_FILE = 5_000_000
QUICK_ROWS, QUICK_COMPARE, QUICK_ROWS_PER_FILE = 1_000_000, (1_000_000,), 250_000
MEMORY_TARGET_BYTES = 4 * 10**9  # "under 4 GB" for the full-size tree_reduce process
RELATIVE_TOLERANCE = 1e-9


# ---------------------------------------------------------------------------------------------- data on disk
def dataset_dir(groups: int, rows_per_file: int, seed: int) -> Path:
    return DATA_DIR / "tree_reduce" / f"groups{groups}-rows{rows_per_file}-seed{seed}"


def ensure_dataset(n_rows: int, *, groups: int, rows_per_file: int, seed: int) -> list[Path]:
    """The first n_rows / rows_per_file files of the dataset, writing those that are missing (deterministically)."""

    def write(index: int, path: Path) -> None:
        rng = np.random.default_rng([seed, index])  # one stream per file: any file can be (re)written alone
        group = rng.integers(0, groups, size=rows_per_file, dtype=np.int32)
        reward = rng.lognormal(mean=1.0 + 0.5 * group / groups, sigma=1.0)
        pq.write_table(pa.table({"group": group, "reward": reward}), path, compression="zstd")

    return ensure_files(dataset_dir(groups, rows_per_file, seed), n_rows, rows_per_file, write, "tree_reduce")


# ---------------------------------------------------------------------------------------------- the statistic
def partial_pandas(chunk: pd.DataFrame) -> pd.DataFrame:
    """Per-group count, sum and sum of squares of one chunk, with pandas groupby (sorted by group)."""
    reward = chunk["reward"].to_numpy()
    frame = pd.DataFrame({"group": chunk["group"].to_numpy(), "reward": reward, "reward_sq": reward * reward})
    return frame.groupby("group", sort=True).agg(count=("reward", "size"), reward_sum=("reward", "sum"),
                                                 reward_sq_sum=("reward_sq", "sum"))


def merge_pandas(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    return left.add(right, fill_value=0).sort_index()


def make_partial_numpy(groups: int) -> Callable[[pd.DataFrame], np.ndarray]:
    """The same statistic with numpy.bincount: a (3, groups) array of count, sum and sum of squares."""
    def partial_numpy(chunk: pd.DataFrame) -> np.ndarray:
        group = chunk["group"].to_numpy()
        reward = chunk["reward"].to_numpy(dtype=np.float64)
        return np.stack([np.bincount(group, minlength=groups).astype(np.float64),
                         np.bincount(group, weights=reward, minlength=groups),
                         np.bincount(group, weights=reward * reward, minlength=groups)])
    return partial_numpy


def merge_numpy(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return left + right


def finalize(sums: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """Tidy per-group table: count, reward_sum, reward_sq_sum, reward_mean, reward_var (sample variance)."""
    if isinstance(sums, np.ndarray):
        sums = pd.DataFrame(sums.T, columns=SUMS).rename_axis("group")
        sums = sums[sums["count"] > 0]
    out = sums[SUMS].astype({"count": np.int64})
    count = out["count"].astype(np.float64)
    out["reward_mean"] = out["reward_sum"] / count
    out["reward_var"] = (out["reward_sq_sum"] - count * out["reward_mean"] ** 2) / (count - 1)
    return out


def _as_lists(result: pd.DataFrame) -> dict:
    return {"group": result.index.astype(np.int64).tolist(), **{c: result[c].tolist() for c in SUMS}}


# ---------------------------------------------------------------------------------------------- measurements
def measure_tree_reduce(files: list[str], groups: int, partial: str, split_every: int = 8) -> dict:
    """tree_reduce over the files inside dask_client() (subprocess side); timing covers read + reduce."""
    if partial == "pandas":
        functions = (partial_pandas, merge_pandas)
    elif partial == "numpy":
        functions = (make_partial_numpy(groups), merge_numpy)
    else:
        raise ValueError(f"partial: unknown {partial!r}")
    started = time.perf_counter()
    with dask_client() as client:
        client_start_s = time.perf_counter() - started
        threads = sum(client.nthreads().values())
        started, cpu_started = time.perf_counter(), time.process_time()
        data = dd.read_parquet(files)
        result = run_statistic(StatisticOf(*functions, finalize), data, columns=COLUMNS, split_every=split_every)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        partitions = data.npartitions
    return {"method": f"tree_reduce ({partial} partial)", "files": len(files), "partitions": partitions,
            "threads": threads, "split_every": split_every, "client_start_s": client_start_s, "wall_s": wall,
            "cpu_s": cpu,
            "n_rows": int(result["count"].sum()), "result": _as_lists(result)}


def measure_pandas(files: list[str]) -> dict:
    """pd.read_parquet of all files + one groupby().agg() (subprocess side); timing covers read + aggregate."""
    started, cpu_started = time.perf_counter(), time.process_time()
    frame = pd.read_parquet(files, columns=COLUMNS)
    read_s = time.perf_counter() - started
    reward = frame["reward"]
    sums = (frame.assign(reward_sq=reward * reward)
            .groupby("group", sort=True)
            .agg(count=("reward", "size"), reward_sum=("reward", "sum"), reward_sq_sum=("reward_sq", "sum")))
    result = finalize(sums)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"method": "pandas read_parquet + groupby", "files": len(files), "partitions": 1, "threads": 1,
            "read_s": read_s, "wall_s": wall, "cpu_s": cpu, "n_rows": int(result["count"].sum()),
            "result": _as_lists(result)}


def measure_large_state(partitions: int, state: int, method: str) -> dict:
    """A statistic with a large state (a float64 vector of `state` entries per partial) over many small partitions,
    reduced inside dask_client() by tree_reduce or, for reference, by the same fixed merge tree submitted as one
    Dask graph (intermediate results are released as soon as their merge has run). Subprocess side."""
    import dask

    rows_per_partition = 1000
    frame = pd.DataFrame({"group": np.arange(partitions * rows_per_partition, dtype=np.int64) % state,
                          "reward": np.ones(partitions * rows_per_partition)})
    data = dd.from_pandas(frame, npartitions=partitions, sort=False)

    def partial(chunk: pd.DataFrame) -> np.ndarray:
        out = np.full(state, 0.0)  # touched in full, so every partial really occupies state * 8 bytes
        out += np.bincount(chunk["group"].to_numpy(), weights=chunk["reward"].to_numpy(), minlength=state)
        return out

    def merge_group(*stats: np.ndarray) -> np.ndarray:
        return functools.reduce(merge_numpy, stats)

    with dask_client():
        started = time.perf_counter()
        if method == "tree_reduce":
            total = run_statistic(StatisticOf(partial, merge_numpy), data)
        elif method == "one_graph":
            level = [dask.delayed(partial)(part) for part in data.to_delayed()]
            node = dask.delayed(merge_group, pure=True)
            while len(level) > 1:
                level = [node(*level[i:i + 8]) if len(level[i:i + 8]) > 1 else level[i]
                         for i in range(0, len(level), 8)]
            (total,) = dask.compute(level[0])
        elif method == "grouped_submit":  # a candidate fix that keeps per-partition progress: see RESULTS.md
            client = current_client()
            level, watched = [], []
            for i in range(0, len(partitions_delayed := [dask.delayed(partial)(p) for p in data.to_delayed()]), 8):
                group = client.compute(partitions_delayed[i:i + 8])  # each group's merge is submitted right after
                watched += group  # its partials, so it runs (and frees them) as soon as they are done
                level.append(client.submit(merge_group, *group, pure=False) if len(group) > 1 else group[0])
            del group, partitions_delayed
            while len(level) > 1:
                level = [client.submit(merge_group, *level[i:i + 8], pure=False) if len(level[i:i + 8]) > 1
                         else level[i] for i in range(0, len(level), 8)]
            pending = as_completed(watched)
            del watched  # only as_completed refers to a partial now, until it has been counted
            for _ in pending:  # where the progress bar would advance
                pass
            total = level[0].result()
        else:
            raise ValueError(f"method: unknown {method!r}")
        wall = time.perf_counter() - started
    return {"partitions": partitions, "state_bytes": state * 8, "method": method, "wall_s": wall,
            "total": float(total.sum())}


def run_large_state(partitions: Sequence[int], state: int, command: str = "") -> dict:
    """Peak RSS of tree_reduce against one Dask graph, for a large statistic, as the number of partitions grows."""
    runs = []
    for n in partitions:
        for method in ("tree_reduce", "one_graph", "grouped_submit"):
            print(f"[tree_reduce] large state: {n} partitions x {state * 8 / 1e6:.0f} MB, {method} ...", flush=True)
            runs.append(measure_in_subprocess("benchmarks.bench_tree_reduce:measure_large_state", partitions=n,
                                              state=state, method=method))
    print(table(["partitions", "state per partial", "method", "wall", "peak RSS", "peak RSS - RSS after imports",
                 "other load (cores)"],
                [[str(r["partitions"]), f"{r['state_bytes'] / 1e6:.0f} MB", r["method"], f"{r['wall_s']:.2f} s",
                  mib(r["peak_rss_bytes"]), mib(r["peak_rss_bytes"] - r["rss_after_import_bytes"]),
                  f"{r['other_load_cores']:.2f}"] for r in runs]))
    payload = {"large_state": runs}
    path = save_results("tree_reduce-large-state", command, payload)
    print(f"results: {path}")
    return payload


def _repeat(repeat: int, target: str, warmup: int = 1, **kwargs) -> dict:
    """Run one measurement `warmup` + `repeat` times, each in a fresh process: median and min wall, max peak RSS
    over the last `repeat` runs (the warm-up runs are kept apart as `warmup_walls_s`).

    On this VM memory that no process touched for a while is slow to fault in again (several times slower on the
    first run of a series that allocates GBs), so the first run of each series is a warm-up.

    The input files are read just before each run, so every run finds them in the page cache (this machine pages
    out memory left idle for ~30 s, page cache included, which made the first run of each series read from disk).
    """
    files = [Path(f) for f in kwargs["files"]]
    runs = [measure_in_subprocess(target, prepare=lambda: warm_page_cache(files), **kwargs)
            for _ in range(warmup + repeat)]
    warmups, runs = runs[:warmup], runs[warmup:]
    summary = {k: v for k, v in runs[0].items()
               if k not in ("wall_s", "cpu_s", "peak_rss_bytes", "read_s", "client_start_s", "other_load_cores")}
    walls = [r["wall_s"] for r in runs]
    summary |= {"repeat": repeat, "wall_s": statistics.median(walls), "wall_min_s": min(walls), "walls_s": walls,
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
                "peak_rss_all_bytes": [r["peak_rss_bytes"] for r in runs],
                "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                "other_load_cores": [round(r["other_load_cores"], 3) for r in runs]}
    summary |= {"warmup": warmup, "warmup_walls_s": [r["wall_s"] for r in warmups],
                "warmup_peak_rss_bytes": [r["peak_rss_bytes"] for r in warmups],
                "minor_page_faults": statistics.median(r["minor_page_faults"] for r in runs)}
    if "read_s" in runs[0]:
        summary["read_s"] = statistics.median(r["read_s"] for r in runs)
    if "client_start_s" in runs[0]:
        summary["client_start_s"] = statistics.median(r["client_start_s"] for r in runs)
    results = [r["result"] for r in warmups + runs]
    summary["deterministic"] = all(r == results[0] for r in results)  # same bits in every repeat
    return summary


def agreement(left: dict, right: dict) -> dict:
    """Counts equal exactly and the largest relative difference of the sums (0 where both are 0)."""
    if left["group"] != right["group"]:
        return {"groups_equal": False, "counts_equal": False, "max_relative_difference": float("inf"), "agree": False}
    counts_equal = left["count"] == right["count"]
    worst = 0.0
    for column in ("reward_sum", "reward_sq_sum"):
        a, b = np.asarray(left[column]), np.asarray(right[column])
        scale = np.maximum(np.abs(a), np.abs(b))
        relative = np.abs(a - b) / np.where(scale > 0, scale, 1.0)
        worst = max(worst, float(relative.max(initial=0.0)))
    return {"groups_equal": True, "counts_equal": counts_equal, "max_relative_difference": worst,
            "agree": counts_equal and worst <= RELATIVE_TOLERANCE}


def _row(r: dict) -> list[str]:
    return [f"{r['n_rows']:,}", r["method"], str(r["partitions"]), f"{r['wall_s']:.2f} s",
            f"{r['wall_min_s']:.2f} s", " / ".join(f"{w:.2f} s" for w in r["warmup_walls_s"]) or "-",
            f"{r['n_rows'] / r['wall_s'] / 1e6:,.1f} M",
            f"{r['cpu_s'] / r['wall_s']:.2f}", mib(r["peak_rss_bytes"]), mib(r["rss_after_import_bytes"]),
            " / ".join(f"{x:.2f}" for x in r["other_load_cores"])]


HEADERS = ["rows", "method", "partitions", "wall (median)", "wall (min)", "wall (warm-up run)", "rows/s (median)",
           "cores used", "peak RSS", "RSS after imports", "other load (cores) per run"]


def run(n_rows: int = DEFAULT_ROWS, compare: Sequence[int] = DEFAULT_COMPARE, *, groups: int = 1000,
        rows_per_file: int = DEFAULT_ROWS_PER_FILE, seed: int = 0, repeat: int = 5, warmup: int = 1,
        numpy_partial: bool = True, command: str = "") -> dict:
    largest = max([n_rows, *compare])
    ensure_dataset(largest, groups=groups, rows_per_file=rows_per_file, seed=seed)

    def files_for(rows: int) -> list[str]:
        return [str(f) for f in ensure_dataset(rows, groups=groups, rows_per_file=rows_per_file, seed=seed)]

    tr = "benchmarks.bench_tree_reduce:measure_tree_reduce"
    full = {}
    print(f"[tree_reduce] full size: {n_rows:,} rows in {n_rows // rows_per_file} files, {repeat} runs each ...",
          flush=True)
    full_files = files_for(n_rows)
    full["pandas"] = _repeat(repeat, warmup=warmup, target=tr, files=full_files, groups=groups, partial="pandas")
    if numpy_partial:
        full["numpy"] = _repeat(repeat, warmup=warmup, target=tr, files=full_files, groups=groups, partial="numpy")
    print(table(HEADERS, [_row(r) for r in full.values()]))
    under = full["pandas"]["peak_rss_bytes"] < MEMORY_TARGET_BYTES
    print(f"peak RSS of the full-size tree_reduce process: {full['pandas']['peak_rss_bytes'] / 10**9:.2f} GB "
          f"({'under' if under else 'OVER'} the 4 GB target)")
    if numpy_partial:
        check = agreement(full["pandas"]["result"], full["numpy"]["result"])
        print(f"pandas-partial vs numpy-partial answers agree (1e-9 relative): {check['agree']} "
              f"(max relative difference {check['max_relative_difference']:.1e})")

    comparisons = []
    for rows in compare:
        print(f"[tree_reduce] side by side at {rows:,} rows ...", flush=True)
        files = files_for(rows)
        pandas_run = _repeat(repeat, warmup=warmup, target="benchmarks.bench_tree_reduce:measure_pandas", files=files)
        tree_run = (full["pandas"] if rows == n_rows else
                    _repeat(repeat, warmup=warmup, target=tr, files=files, groups=groups, partial="pandas"))
        check = agreement(pandas_run["result"], tree_run["result"])
        comparisons.append({"n_rows": rows, "pandas": pandas_run, "tree_reduce": tree_run, "agreement": check,
                            "time_ratio_pandas_over_tree": pandas_run["wall_s"] / tree_run["wall_s"],
                            "memory_ratio_pandas_over_tree": pandas_run["peak_rss_bytes"] / tree_run["peak_rss_bytes"]})
    print(table(HEADERS, [_row(r) for c in comparisons for r in (c["pandas"], c["tree_reduce"])]))
    print(table(["rows", "pandas / tree_reduce: time", "pandas / tree_reduce: peak RSS", "answers agree (1e-9)",
                 "max relative difference"],
                [[f"{c['n_rows']:,}", f"{c['time_ratio_pandas_over_tree']:.2f}x",
                  f"{c['memory_ratio_pandas_over_tree']:.2f}x", str(c["agreement"]["agree"]),
                  f"{c['agreement']['max_relative_difference']:.1e}"] for c in comparisons]))

    def strip(r: dict) -> dict:
        return {k: v for k, v in r.items() if k != "result"}

    payload = {
        "dataset": {"dir": str(dataset_dir(groups, rows_per_file, seed).relative_to(DATA_DIR.parent.parent)),
                    "groups": groups, "rows_per_file": rows_per_file, "seed": seed,
                    "bytes_on_disk": sum(Path(f).stat().st_size for f in files_for(largest)), "rows": largest},
        "full_size": {k: strip(v) for k, v in full.items()},
        "full_size_under_4GB": under,
        "comparisons": [{**c, "pandas": strip(c["pandas"]), "tree_reduce": strip(c["tree_reduce"])}
                        for c in comparisons],
    }
    path = save_results("tree_reduce" + ("" if n_rows == DEFAULT_ROWS else f"-{n_rows}"), command, payload)
    print(f"results: {path}")
    return payload


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_tree_reduce", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help=f"full size (default {DEFAULT_ROWS:,})")
    parser.add_argument("--compare", type=int, nargs="*", default=None,
                        help="sizes for the pandas side-by-side (default 10^7 3x10^7 10^8)")
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--rows-per-file", type=int, default=None,
                        help=f"rows per parquet file / Dask partition (default {DEFAULT_ROWS_PER_FILE:,})")
    parser.add_argument("--no-numpy", action="store_true", help="skip the numpy.bincount partial")
    parser.add_argument("--large-state", type=int, nargs="+", metavar="PARTITIONS",
                        help="instead: peak memory of a statistic with a large state (--state entries) over these "
                             "numbers of partitions, tree_reduce against one Dask graph")
    parser.add_argument("--state", type=int, default=1_000_000, help="entries (float64) of the large state")
    add_common_arguments(parser, repeat=5)
    args = parser.parse_args(argv)
    warmup = apply_common_arguments(args)
    if args.large_state:
        return run_large_state(args.large_state, args.state, command_line("benchmarks.bench_tree_reduce", argv))
    rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    compare = args.compare if args.compare is not None else (QUICK_COMPARE if args.quick else DEFAULT_COMPARE)
    rows_per_file = args.rows_per_file or (QUICK_ROWS_PER_FILE if args.quick else DEFAULT_ROWS_PER_FILE)
    return run(rows, compare, groups=args.groups, rows_per_file=rows_per_file, seed=args.seed,
               repeat=args.repeat, warmup=warmup,
               numpy_partial=not args.no_numpy,
               command=command_line("benchmarks.bench_tree_reduce", argv))


if __name__ == "__main__":
    main()
