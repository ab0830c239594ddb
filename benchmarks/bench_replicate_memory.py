"""Memory of permutation and bootstrap replicates in `causal_fs.score_features`: many arms, many features.

The replicate tables are (replicates x features x bins x arms); scoring them pairwise over arms is quadratic in the
arms. Measured, each case in a fresh subprocess (`benchmarks._harness.measure_in_subprocess`; peak RSS = the whole
process, imports included), with methods ("hie", "hdd"), 200 permutations and the default bootstrap (200
replicates), default `replicate_memory_mb` (256):

1. `arms80`: 10^4 rows x 10 numeric features x 80 arms (goal: peak under 0.5 GB, under 2 s).
2. `wide_categorical`: 10^4 rows x 86 features (43 numeric, 43 categorical with 60 levels) x 80 arms, the
   "every other column" case of a real many-arm log.
3. `rows1m`: 10^6 rows x 100 numeric features x 10 arms (goal: peak under 4 GB).

Data: seeded; features standard normal (categorical: uniform levels), arms uniform, 0/1 reward with rate 0.1 (no
feature matters: the null, which is what the replicates are for).

    python -m benchmarks.bench_replicate_memory                   # all three (about 10 minutes)
    python -m benchmarks.bench_replicate_memory --cases arms80 wide_categorical

The same module copied into a checkout of an earlier commit measures that commit's code.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmarks._harness import command_line, measure_in_subprocess, mib, peak_rss, save_results, settings, table

CASES = {  # name: (rows, numeric features, categorical features, arms)
    "arms80": (10_000, 10, 0, 80),
    "wide_categorical": (10_000, 43, 43, 80),
    "rows1m": (1_000_000, 100, 0, 10),
}
GOALS = {"arms80": (0.5 * 2**30, 2.0), "rows1m": (4 * 2**30, None)}  # peak bytes, seconds
PERMUTATIONS = 200
LEVELS = 60


def make_frame(n_rows: int, numeric: int, categorical: int, arms: int, seed: int) -> pd.DataFrame:
    """The frame, built without a transient copy of its numeric block (so the peak measures the scoring)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n_rows, numeric)), columns=[f"x{i:02d}" for i in range(numeric)],
                         copy=False)
    for i in range(categorical):
        frame[f"c{i:02d}"] = rng.integers(0, LEVELS, n_rows).astype(str)
    frame["arm"] = rng.integers(0, arms, n_rows)
    frame["reward"] = (rng.random(n_rows) < 0.1).astype(np.float64)
    return frame


def measure(case: str, seed: int) -> dict:
    """One case (subprocess side): build the frame, then time one `score_features` call."""
    from causal_fs import score_features

    n_rows, numeric, categorical, arms = CASES[case]
    frame = make_frame(n_rows, numeric, categorical, arms, seed)
    features = [c for c in frame.columns if c not in ("arm", "reward")]
    before = peak_rss()
    started = time.perf_counter()
    result = score_features(frame, features, n_permutations=PERMUTATIONS, random_state=seed)
    wall = time.perf_counter() - started
    return {"case": case, "n_rows": n_rows, "n_features": len(features), "n_arms": arms, "wall_s": wall,
            "peak_before_scoring_bytes": before,
            "passes": getattr(result, "passes", 1), "frame_bytes": int(frame.memory_usage(deep=True).sum())}


def run(cases: Sequence[str], seed: int) -> dict:
    runs = {}
    for case in cases:
        print(f"[replicate_memory] {case} ...", flush=True)
        runs[case] = measure_in_subprocess("benchmarks.bench_replicate_memory:measure", case=case, seed=seed)
    rows = []
    for case, run_ in runs.items():
        goal_bytes, goal_s = GOALS.get(case, (None, None))
        verdict = "" if goal_bytes is None else ("met" if run_["peak_rss_bytes"] < goal_bytes
                                                 and (goal_s is None or run_["wall_s"] < goal_s) else "NOT met")
        rows.append([case, f"{run_['n_rows']:,} x {run_['n_features']} x {run_['n_arms']}", f"{run_['wall_s']:.2f}",
                     mib(run_["peak_rss_bytes"]), mib(run_["peak_before_scoring_bytes"]), run_["passes"], verdict])
    print(table(["case", "rows x features x arms", "seconds", "peak RSS", "peak before scoring (data built)",
                 "passes", "goal"], rows))
    return runs


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wait", type=float, default=180.0,
                        help="seconds to wait for a quiet machine before each case")
    args = parser.parse_args(argv)
    settings["max_quiet_wait_s"] = args.max_wait
    runs = run(args.cases, args.seed)
    save_results("replicate_memory", command_line("benchmarks.bench_replicate_memory", argv), {"runs": runs})
    return runs


if __name__ == "__main__":
    main()
