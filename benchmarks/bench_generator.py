"""Synthetic campaign generator: decision-log rows per second, peak memory and size on disk.

Writes a whole campaign (users, logs, edges, ground truth) with `pipelines.synthetic.generate_campaign`, twice:
sequentially (the synchronous Dask scheduler, no client: chunks run one after the other) and inside
`pipelines.execution.dask_client()` (the in-process LocalCluster, one worker with one thread per core). Each run
is a fresh subprocess, so its peak RSS is that of one generation alone. Throughput is decision-log rows
(`truth.n_log_rows`) per second of the `generate_campaign` call; the call writes every table, not only the log.
The two runs must write byte-identical files (the generator's contract), which is checked and reported.

    python -m benchmarks.bench_generator                    # 2,350,000 users x 7 days: about 10^7 log rows
    python -m benchmarks.bench_generator --users 50000      # a quick run
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import dask

import pipelines.synthetic.generate as generate_module
from benchmarks._harness import (
    DATA_DIR,
    add_common_arguments,
    apply_common_arguments,
    command_line,
    measure_in_subprocess,
    mib,
    save_results,
    table,
    tree_digest,
    tree_size,
)
from pipelines.execution import dask_client
from pipelines.synthetic import CampaignConfig, generate_campaign

DEFAULT_USERS = 2_350_000  # about 4.3 log rows per user at 7 days: about 10^7 rows
QUICK_USERS = 50_000
MODES = ("sequential", "dask_client")


def _time_phases() -> dict[str, float]:
    """Wrap the generator's two big phases with timers (in this benchmark process only): simulating and writing the
    user chunks (`map_tasks`), and drawing the social graph on the driver (`build_graph`, inside `_truth_tables`)."""
    phases = {"chunks_s": 0.0, "graph_s": 0.0}

    def timed(name: str, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                phases[name] += time.perf_counter() - started
        return wrapper

    generate_module.map_tasks = timed("chunks_s", generate_module.map_tasks)
    generate_module.build_graph = timed("graph_s", generate_module.build_graph)
    return phases


def measure_generate(mode: str, n_users: int, n_days: int, seed: int, out_dir: str, digest: bool) -> dict:
    """One generation in this process (the subprocess side); timing covers the generate_campaign call only."""
    phases = _time_phases()
    config = CampaignConfig(n_users=n_users, n_days=n_days)
    out = Path(out_dir)
    client_start_s = 0.0
    if mode == "sequential":
        with dask.config.set(scheduler="synchronous"):
            started, cpu_started = time.perf_counter(), time.process_time()
            truth = generate_campaign(config, out, random_state=seed)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    elif mode == "dask_client":
        started = time.perf_counter()
        with dask_client() as client:
            client_start_s = time.perf_counter() - started
            threads = sum(client.nthreads().values())
            started, cpu_started = time.perf_counter(), time.process_time()
            truth = generate_campaign(config, out, random_state=seed)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    else:
        raise ValueError(f"mode: unknown {mode!r}")
    sizes = {name: tree_size(out / name) for name in ("logs", "users", "edges", "truth")}
    result = {
        "mode": mode, "n_users": n_users, "n_days": n_days, "seed": seed, "n_log_rows": truth.n_log_rows,
        "n_edges": truth.n_edges, "n_chunks": -(-n_users // config.chunk_users), "wall_s": wall, "cpu_s": cpu,
        "client_start_s": client_start_s, "threads": threads if mode == "dask_client" else 1,
        "disk_bytes": tree_size(out), "disk_bytes_by_table": sizes,
        "phases_s": {**phases, "rest_s": wall - phases["chunks_s"] - phases["graph_s"]},
    }
    if digest:
        result["digest"] = tree_digest(out)
    return result


def _summary(all_runs: list[dict], warmup: int) -> dict:
    """Median and min wall time, max peak RSS over the measured repeats of one mode; the first run's other fields."""
    warmups, runs = all_runs[:warmup], all_runs[warmup:]
    walls = [r["wall_s"] for r in runs]
    summary = {k: v for k, v in runs[0].items() if k not in ("digest",)}
    summary |= {"repeat": len(runs), "wall_s": statistics.median(walls), "wall_min_s": min(walls), "walls_s": walls,
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
                "peak_rss_all_bytes": [r["peak_rss_bytes"] for r in runs],
                "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                "phases_s": {k: statistics.median(r["phases_s"][k] for r in runs) for k in runs[0]["phases_s"]},
                "other_load_cores": [round(r["other_load_cores"], 3) for r in runs],
                "warmup": warmup, "warmup_walls_s": [r["wall_s"] for r in warmups],
                "warmup_peak_rss_bytes": [r["peak_rss_bytes"] for r in warmups]}
    return summary


def measure_build_graph(n_users: int, seed: int) -> dict:
    """The generator's graph step alone for n users (subprocess side): build_graph as generate_campaign calls it."""
    import numpy as np

    from pipelines.synthetic.graph import build_graph

    config = CampaignConfig(n_users=max(n_users, 10))
    rng = np.random.default_rng(seed)
    engagement, similarity = rng.standard_normal(n_users), rng.standard_normal(n_users)
    started = time.perf_counter()
    graph = build_graph(seed, engagement, similarity, avg_degree=config.avg_degree,
                        community_size=config.community_size, mixing=config.mixing)
    return {"n_users": n_users, "wall_s": time.perf_counter() - started, "friend_edges": int(graph.friend_src.size),
            "candidate_interactions": int(graph.interaction_src.size)}


def run_graph_scaling(sizes: Sequence[int], seed: int = 0, command: str = "") -> dict:
    """Time and peak RSS of build_graph alone at several user counts (one fresh process each)."""
    runs = []
    for n_users in sizes:
        print(f"[generator] build_graph alone: {n_users:,} users ...", flush=True)
        runs.append(measure_in_subprocess("benchmarks.bench_generator:measure_build_graph", n_users=n_users,
                                          seed=seed))
    print(table(["users", "build_graph wall", "peak RSS", "peak RSS - RSS after imports", "per user",
                 "friend edges", "other load (cores)"],
                [[f"{r['n_users']:,}", f"{r['wall_s']:.1f} s", mib(r["peak_rss_bytes"]),
                  mib(r["peak_rss_bytes"] - r["rss_after_import_bytes"]),
                  f"{(r['peak_rss_bytes'] - r['rss_after_import_bytes']) / r['n_users']:,.0f} B",
                  f"{r['friend_edges']:,}", f"{r['other_load_cores']:.2f}"] for r in runs]))
    payload = {"graph_scaling": runs}
    path = save_results("generator-graph-scaling", command, payload)
    print(f"results: {path}")
    return payload


def run(n_users: int = DEFAULT_USERS, n_days: int = 7, seed: int = 0, modes: Sequence[str] = MODES,
        repeat: int = 3, warmup: int = 1, keep: bool = False, command: str = "") -> dict:
    """Measure every mode `warmup` + `repeat` times (interleaved), each in its own subprocess; print, save, return.

    The first `warmup` runs of each mode are reported apart: on this VM, memory that no process touched for a
    while is slow to fault in again, which makes the first GB-sized run of a series slower.
    """
    root = DATA_DIR / "generator"
    by_mode: dict[str, list[dict]] = {mode: [] for mode in modes}
    total = warmup + repeat
    for attempt in range(total):
        for mode in modes:
            out = root / f"{mode}-{n_users}u-{n_days}d"
            shutil.rmtree(out, ignore_errors=True)  # a fresh write, not a replacement, in every run
            out.parent.mkdir(parents=True, exist_ok=True)
            label = " (warm-up)" if attempt < warmup else ""
            print(f"[generator] {mode}: {n_users:,} users x {n_days} days, run {attempt + 1}/{total}{label} ...",
                  flush=True)
            by_mode[mode].append(measure_in_subprocess(
                "benchmarks.bench_generator:measure_generate", mode=mode, n_users=n_users, n_days=n_days,
                seed=seed, out_dir=str(out), digest=True))
            if not keep or attempt < total - 1:
                shutil.rmtree(out, ignore_errors=True)
    digests = {r["digest"] for runs in by_mode.values() for r in runs}
    identical = len(digests) == 1
    summaries = [_summary(runs, warmup) for runs in by_mode.values()]
    rows = []
    for r in summaries:
        rows.append([
            r["mode"] + (f" ({r['threads']} threads)" if r["mode"] == "dask_client" else ""),
            f"{r['n_users']:,}", f"{r['n_log_rows']:,}", f"{r['wall_s']:.1f} s", f"{r['wall_min_s']:.1f} s",
            " / ".join(f"{w:.1f} s" for w in r["warmup_walls_s"]) or "-",
            f"{r['n_log_rows'] / r['wall_s']:,.0f}", f"{r['cpu_s'] / r['wall_s']:.2f}",
            " / ".join(f"{r['phases_s'][k]:.1f}" for k in ("chunks_s", "graph_s", "rest_s")),
            mib(r["peak_rss_bytes"]), mib(r["rss_after_import_bytes"]),
            mib(r["disk_bytes"]), mib(r["disk_bytes_by_table"]["logs"]),
            " / ".join(f"{x:.2f}" for x in r["other_load_cores"]),
        ])
    print(table(["run", "users", "log rows", "wall (median)", "wall (min)", "wall (warm-up run)", "log rows/s (median)",
                 "cores used", "chunks / graph / rest (s)", "peak RSS", "RSS after imports", "on disk (all tables)",
                 "on disk (logs/)", "other load (cores) per run"], rows))
    print(f"byte-identical output across all {sum(len(v) for v in by_mode.values())} runs: {identical}")
    payload = {"summaries": summaries, "runs": by_mode, "identical_output": identical}
    path = save_results("generator" + ("" if n_users == DEFAULT_USERS else f"-{n_users}u"), command, payload)
    print(f"results: {path}")
    return payload


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_generator", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=None, help=f"number of users (default {DEFAULT_USERS:,})")
    parser.add_argument("--days", type=int, default=7, help="campaign days (default 7)")
    parser.add_argument("--mode", choices=MODES, action="append", help="run only this mode (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the generated campaigns under benchmarks/.data/")
    parser.add_argument("--graph-sizes", type=int, nargs="+", metavar="USERS",
                        help="instead: time build_graph alone (the serial graph step) at these user counts")
    add_common_arguments(parser, repeat=3)
    args = parser.parse_args(argv)
    warmup = apply_common_arguments(args)
    if args.graph_sizes:
        return run_graph_scaling(args.graph_sizes, args.seed, command_line("benchmarks.bench_generator", argv))
    users = args.users or (QUICK_USERS if args.quick else DEFAULT_USERS)
    return run(users, args.days, args.seed, args.mode or MODES, args.repeat, warmup, args.keep,
               command_line("benchmarks.bench_generator", argv))


if __name__ == "__main__":
    main()
