"""Causal feature selection (`causal_fs.score_features`): against CausalML and EconML, significance, out of core.

The data is synthetic with fixed seeds: `n_features` float64 features (standard normal), an arm column
`treatment_group_key` with the string labels "control", "t1", "t2" (uniform random assignment) and a 0/1 reward
`conversion` (int8) whose probability is linear in u_j = Phi(x_j) (the feature's quantile):

    P(conversion) = 0.20 + 0.10 (u_01 - 0.5)                                    every arm (x01: prognostic only)
                  + [t1] 0.02 + 0.16 (u_00 - 0.5)                               (x00 modifies t1's effect)
                  + [t2] 0.01 + 0.12 (u_02 - 0.5) + 0.08 (u_03 - 0.5)           (x02, x03 modify t2's effect)

so the true effect modifiers are x00, x02, x03 (in that order of strength), x01 moves every arm alike and every
other feature is noise. Because the probability is linear in the quantiles, the population value of every
decile-bin score is known exactly (`true_scores`): the reference for the out-of-core check.

Measured, each in a fresh subprocess (`benchmarks._harness.measure_in_subprocess`; peak RSS = the whole process):

1. CausalML 0.18 `FilterSelect().get_importance(df, features, "conversion", method="KL",
   experiment_group_column="treatment_group_key", control_group="control", n_bins=10)` against
   `score_features(df, features, arm_col="treatment_group_key", reward_col="conversion", methods=("kl",),
   compat="causalml", n_bins=10)` at 50k x 10, 1M x 10 and 1M x 100 (rows x features): time ratio and the
   largest absolute difference of the scores; also our default (non-compat) `kl` and `("hie", "hdd")` at the same sizes.
2. The paper's setting, 50k x 10 x 3 arms, `methods=("hie", "hdd")`: first call in a fresh process and the
   median of repeated calls in the same process.
3. 200 permutations at 50k x 10 (hie + hdd): without bootstrap (`n_bootstrap=0`) and with the default
   bootstrap (as many replicates as permutations: 200).
4. Out of core: 10^8 rows x 10 features as zstd parquet (20 files of 5M rows, written once under
   benchmarks/.data/feature_selection/, chunkwise, memory-flat; the arm column is a plain arrow `string`, which
   parquet stores dictionary-encoded and pandas reads as `str`),
   `score_features(Partitions(open_parquet(files)), ...)` (the platform's reader: one partition per 1M-row row
   group) with ("hie", "hdd") inside
   `pipelines.execution.dask_client()`: wall time, peak RSS, and the scores against their population values.
5. The EconML causal forest (`methods=("causal_forest",)`, 50k x 10) against hie + hdd: time ratio, Spearman
   correlation of the rankings and whether each finds the true effect modifiers first.

Every timed call is preceded, in the same process, by one untimed call on the first 1,000 rows (for the forest: the
import of EconML, which `causal_fs.forest` imports lazily), so the first timed call measures the work on the
data, not imports.

    python -m benchmarks.bench_feature_selection            # full sizes (about 11 minutes on a quiet machine; the
                                                             # first run also writes the 10^8-row dataset, 7.96 GB)
    python -m benchmarks.bench_feature_selection --quick    # small sizes (about 25 s)
    python -m benchmarks.bench_feature_selection --parts causalml paper   # some of the five measurements
    python -m benchmarks.bench_feature_selection --parts out_of_core --reader dask   # Dask's own partitions
    python -m benchmarks.bench_feature_selection --causalml-features 20   # CausalML on 20 features, extrapolated
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

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

ARM, REWARD = "treatment_group_key", "conversion"
ARMS = ("control", "t1", "t2")
N_BINS = 10
WARMUP_ROWS = 1_000
MODIFIERS = ("x00", "x02", "x03")  # the true effect modifiers, strongest first
# P(conversion) = BASE + SLOPE_PROGNOSTIC (u_01 - .5) + effect of the arm; effect = intercept + sum slope (u_j - .5)
BASE, SLOPE_PROGNOSTIC = 0.20, 0.10
EFFECTS = {1: (0.02, {0: 0.16}), 2: (0.01, {2: 0.12, 3: 0.08})}  # arm index: (intercept, {feature: slope})

PARTS = ("causalml", "paper", "permutations", "out_of_core", "forest")
DEFAULT_COMPARE = ((50_000, 10), (1_000_000, 10), (1_000_000, 100))
QUICK_COMPARE = ((20_000, 10),)
PAPER_ROWS, PAPER_FEATURES, QUICK_PAPER_ROWS = 50_000, 10, 20_000
PERMUTATIONS = 200
DEFAULT_OOC_ROWS, DEFAULT_ROWS_PER_FILE = 100_000_000, 5_000_000
QUICK_OOC_ROWS, QUICK_ROWS_PER_FILE = 1_000_000, 250_000
ROW_GROUP_ROWS = 1_000_000
QUICK_FOREST_ROWS = 2_000
# Performance goals: speed ratio vs CausalML, paper setting, permutations, out of core time and memory.
GOAL_RATIO, GOAL_PAPER_S, GOAL_PERMUTATIONS_S = 50.0, 0.05, 0.5
GOAL_OOC_S, GOAL_OOC_BYTES = 180.0, 4 * 10**9
GOAL_EQUAL = 1e-12


# ---------------------------------------------------------------------------------------------- synthetic data
def feature_names(n_features: int) -> list[str]:
    return [f"x{j:02d}" for j in range(n_features)]


def conversion_probability(u: np.ndarray, arm: np.ndarray) -> np.ndarray:
    """P(conversion) per row from the quantiles u (features x rows, at least the first 4) and the arm index."""
    probability = BASE + SLOPE_PROGNOSTIC * (u[1] - 0.5)
    for index, (intercept, slopes) in EFFECTS.items():
        effect = intercept + sum(slope * (u[j] - 0.5) for j, slope in slopes.items())
        probability = probability + np.where(arm == index, effect, 0.0)
    return probability


def make_columns(n_rows: int, n_features: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features x rows float64, arm index int8, conversion int8) drawn from `rng`."""
    from scipy.special import ndtr

    x = rng.standard_normal((n_features, n_rows))
    arm = rng.integers(0, len(ARMS), size=n_rows, dtype=np.int8)
    u = np.zeros((4, n_rows)) + 0.5
    u[:min(4, n_features)] = ndtr(x[:4])
    conversion = (rng.random(n_rows) < conversion_probability(u, arm)).astype(np.int8)
    return x, arm, conversion


def make_frame(n_rows: int, n_features: int, seed: int) -> pd.DataFrame:
    """The in-memory dataset of a given size (the same rows for the same arguments, in any process)."""
    x, arm, conversion = make_columns(n_rows, n_features, np.random.default_rng([seed, n_features, n_rows]))
    columns = {name: x[j] for j, name in enumerate(feature_names(n_features))}
    columns[ARM] = pd.Categorical.from_codes(arm, categories=list(ARMS)).astype(str)  # plain strings ("str" dtype)
    columns[REWARD] = conversion
    return pd.DataFrame(columns)


def frame_digest(frame: pd.DataFrame) -> str:
    """A short digest of a frame's values, to show that two processes scored the same rows."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def dataset_dir(n_features: int, rows_per_file: int, seed: int) -> Path:
    return DATA_DIR / "feature_selection" / f"features{n_features}-rows{rows_per_file}-seed{seed}"


def ensure_dataset(n_rows: int, *, n_features: int, rows_per_file: int, seed: int) -> list[Path]:
    """The first n_rows / rows_per_file zstd parquet files, writing the missing ones in row groups of 1M rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = feature_names(n_features)
    schema = pa.schema([*(pa.field(name, pa.float64()) for name in names), pa.field(ARM, pa.string()),
                        pa.field(REWARD, pa.int8())])
    dictionary = pa.array(ARMS, type=pa.string())

    def write(index: int, path: Path) -> None:
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for group, start in enumerate(range(0, rows_per_file, ROW_GROUP_ROWS)):
                rows = min(ROW_GROUP_ROWS, rows_per_file - start)
                # one stream per (file, row group): any file can be (re)written alone, in bounded memory
                x, arm, conversion = make_columns(rows, n_features, np.random.default_rng([seed, index, group]))
                arms = pa.DictionaryArray.from_arrays(pa.array(arm), dictionary).cast(pa.string())
                writer.write_table(pa.Table.from_arrays([*x, arms, pa.array(conversion)], schema=schema))

    return ensure_files(dataset_dir(n_features, rows_per_file, seed), n_rows, rows_per_file, write,
                        "feature_selection")


# ---------------------------------------------------------------------------------------------- ground truth
def true_cell_means(n_features: int) -> np.ndarray:
    """Population P(conversion) per (feature, decile bin, arm): exact, since it is linear in the quantiles."""
    means = np.empty((n_features, N_BINS, len(ARMS)))
    for f in range(n_features):
        for b in range(N_BINS):
            u = np.full((4, len(ARMS)), 0.5)
            if f < 4:
                u[f] = (b + 0.5) / N_BINS  # E[u | u in decile b]
            means[f, b] = conversion_probability(u, np.arange(len(ARMS)))
    return means


def _bernoulli_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def true_scores(n_features: int) -> dict[str, np.ndarray]:
    """Population HIE and HDD of every feature under decile bins and equal arm shares (independent of causal_fs).

    HIE = sum_b (1/10) (max_k p_bk - p_b,k*), k* the best arm overall; HDD = sum_b (1/10) D_b - D, with
    D = sum_{i != j} s_i s_j KL(p_i || p_j) and s = 1/3 (uniform assignment in every bin).
    """
    means = true_cell_means(n_features)
    pooled = means.mean(axis=1)  # (features, arms): equal bin shares
    best = np.argmax(pooled[0])
    hie = (means.max(axis=-1) - means[..., best]).mean(axis=-1)
    share = 1.0 / len(ARMS)

    def divergence(p: np.ndarray) -> np.ndarray:
        return share * share * _bernoulli_kl(p[..., :, None], p[..., None, :]).sum(axis=(-1, -2))

    hdd = divergence(means).mean(axis=-1) - divergence(pooled)
    return {"hie": hie, "hdd": hdd}


# ---------------------------------------------------------------------------------------------- measurements
def _columns(result: pd.DataFrame) -> dict[str, list[float]]:
    return {c: [float(v) for v in result[c]] for c in result.columns if c not in ("n_bins", "missing_share")}


def measure_score(n_rows: int, n_features: int, seed: int, methods: Sequence[str], compat: str | None = None,
                  n_permutations: int = 0, n_bootstrap: int | None = None, calls: int = 1) -> dict:
    """`score_features` on the in-memory frame, `calls` times (subprocess side); after one call on 1,000 rows."""
    from causal_fs import score_features

    frame = make_frame(n_rows, n_features, seed)
    features = feature_names(n_features)
    options = {"methods": tuple(methods), "compat": compat, "n_bins": N_BINS, "n_permutations": n_permutations,
               "random_state": seed}
    if n_bootstrap is not None:
        options["n_bootstrap"] = n_bootstrap
    started = time.perf_counter()
    if "causal_forest" in methods:  # what causal_fs.forest imports lazily (EconML: seconds); a warm-up fit of a
        import econml.dml  # noqa: F401  forest would cost as much again
        import sklearn.ensemble  # noqa: F401
    else:
        score_features(frame.head(WARMUP_ROWS), features, arm_col=ARM, reward_col=REWARD, **options)
    warmup_call_s = time.perf_counter() - started
    walls, cpus = [], []
    for _ in range(calls):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = score_features(frame, features, arm_col=ARM, reward_col=REWARD, **options).to_frame()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu_started)
    return {"tool": "causal_fs", "n_rows": n_rows, "n_features": n_features, "methods": list(methods),
            "compat": compat, "n_permutations": n_permutations, "n_bootstrap": n_bootstrap,
            "wall_s": walls[0], "cpu_s": cpus[0], "walls_s": walls, "warmup_call_s": warmup_call_s,
            "features": list(result.index), "scores": _columns(result), "data_digest": frame_digest(frame)}


def measure_causalml(n_rows: int, n_features: int, seed: int, n_measured: int | None = None, calls: int = 1
                     ) -> dict:
    """CausalML's KL filter on the in-memory frame (subprocess side); `n_measured` features (default all)."""
    import warnings

    from causalml.feature_selection.filters import FilterSelect

    warnings.filterwarnings("ignore")
    frame = make_frame(n_rows, n_features, seed)
    features = feature_names(n_features)[:n_measured]
    selector = FilterSelect()
    options = {"method": "KL", "experiment_group_column": ARM, "control_group": "control", "n_bins": N_BINS}
    started = time.perf_counter()
    selector.get_importance(frame.head(WARMUP_ROWS), features[:2], REWARD, **options)
    warmup_call_s = time.perf_counter() - started
    walls, cpus = [], []
    for _ in range(calls):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = selector.get_importance(frame, features, REWARD, **options)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu_started)
    scores = dict(zip(result["feature"], result["score"].astype(float), strict=True))
    return {"tool": "causalml", "n_rows": n_rows, "n_features": n_features, "n_measured": len(features),
            "wall_s": walls[0], "cpu_s": cpus[0], "walls_s": walls, "warmup_call_s": warmup_call_s,
            "features": features, "scores": {"kl": [scores[f] for f in features]},
            "data_digest": frame_digest(frame)}


READERS = ("platform", "dask", "dictionary-arm")


def _row_group_with_dictionary_arm(piece: tuple[str, int]) -> pd.DataFrame:
    """One row group with the arm column read as Arrow's dictionary (a pandas categorical): no strings built."""
    import pyarrow.parquet as pq

    path, row_group = piece
    return pq.ParquetFile(path, read_dictionary=[ARM]).read_row_group(row_group, use_threads=False).to_pandas()


def open_files(files: list[str], reader: str):
    """The benchmark's parquet files as a Dask DataFrame. `platform`: `pipelines.tables.open_parquet`, what every
    stage reads with (one partition per 1M-row row group here); `dask`: plain `dd.read_parquet` (here one partition
    per 5M-row file); `dictionary-arm`: one partition per row group with the arm read as a dictionary (an
    experiment for reading label columns as categoricals; not what the platform does)."""
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    from pipelines.tables import open_parquet

    if reader == "platform":
        return open_parquet(files)
    if reader == "dask":
        return dd.read_parquet(files)
    pieces = [(path, group) for path in files for group in range(pq.ParquetFile(path).metadata.num_row_groups)]
    return dd.from_map(_row_group_with_dictionary_arm, pieces, enforce_metadata=False)


def measure_out_of_core(files: list[str], n_features: int, seed: int, methods: Sequence[str],
                        reader: str = "platform") -> dict:
    """`score_features(Partitions(open_files(files, reader)), ...)` inside dask_client() (subprocess side): the read
    and both passes."""
    from causal_fs import score_features
    from pipelines.execution import Partitions, dask_client

    with dask_client() as client:
        threads = sum(client.nthreads().values())
        started, cpu_started = time.perf_counter(), time.process_time()
        data = open_files(files, reader)
        scored = score_features(Partitions(data), feature_names(n_features), arm_col=ARM, reward_col=REWARD,
                                methods=tuple(methods), n_bins=N_BINS, random_state=seed)
        result = scored.to_frame()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        partitions, arm_dtype = data.npartitions, str(data[ARM].dtype)
    return {"tool": "causal_fs (dask)", "n_rows": scored.rows, "n_features": n_features,
            "methods": list(methods), "files": len(files), "partitions": partitions, "threads": threads,
            "reader": reader, "arm_dtype": arm_dtype, "wall_s": wall, "cpu_s": cpu, "features": list(result.index),
            "scores": _columns(result), "bins": scored.bins}


# ---------------------------------------------------------------------------------------------- series
def _series(target: str, repeat: int, warmup: int, prepare=None, timeout: float | None = None, **kwargs) -> dict:
    """`warmup` + `repeat` runs of one measurement, each in a fresh process: median and minimum over the last
    `repeat` (the warm-up runs are kept apart), the largest peak RSS, the other load of every run."""
    runs = [measure_in_subprocess(target, timeout=timeout, prepare=prepare, **kwargs)
            for _ in range(warmup + repeat)]
    warmups, runs = runs[:warmup], runs[warmup:]
    walls = [r["wall_s"] for r in runs]
    summary = {k: v for k, v in runs[-1].items() if k not in ("wall_s", "cpu_s", "walls_s", "peak_rss_bytes",
                                                               "other_load_cores", "process_wall_s")}
    summary |= {"repeat": repeat, "wall_s": statistics.median(walls), "wall_min_s": min(walls), "runs_wall_s": walls,
                "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
                "other_load_cores": [round(r["other_load_cores"], 3) for r in warmups + runs],
                "warmup": warmup, "warmup_walls_s": [r["wall_s"] for r in warmups]}
    if len(runs[0].get("walls_s", [])) > 1:  # several calls per process: the later ones reuse warm memory
        later = [w for r in runs for w in r["walls_s"][1:]]
        summary |= {"calls_per_process": len(runs[0]["walls_s"]), "later_calls_median_s": statistics.median(later),
                    "later_calls_min_s": min(later), "later_calls_s": later}
    summary["scores_identical_across_runs"] = all(r["scores"] == runs[0]["scores"] for r in warmups + runs)
    return summary


def _label(run: dict) -> str:
    if run["tool"] == "causalml":
        return "CausalML `get_importance(method=\"KL\")`"
    methods = "+".join(run["methods"])
    return f"causal_fs `{methods}`" + (f", compat={run['compat']}" if run.get("compat") else "")


def _size(run: dict) -> str:
    return f"{run['n_rows']:,} x {run['n_features']}"


def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _load(run: dict) -> str:
    return " / ".join(f"{x:.2f}" for x in run["other_load_cores"])


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _top(features: Sequence[str], values: Sequence[float], k: int) -> list[str]:
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")
    return [features[i] for i in order[:k]]


def run_causalml(compare: Sequence[tuple[int, int]], *, seed: int, repeat: int, warmup: int,
                 causalml_features: int | None) -> dict:
    """Part 1: CausalML's KL filter against ours (compat and default) and hie + hdd, side by side per size."""
    rows = []
    for n_rows, n_features in compare:
        small = n_rows * n_features <= 1_000_000
        calls = 5 if small else 1  # several calls per process only where a call is short
        runs_repeat = repeat if n_rows * n_features <= 10_000_000 else 1
        runs_warmup = warmup if n_rows * n_features <= 10_000_000 else 0
        n_measured = None if causalml_features is None or causalml_features >= n_features else causalml_features
        print(f"[feature_selection] {n_rows:,} x {n_features}: CausalML KL"
              + (f" on {n_measured} of {n_features} features" if n_measured else "") + " ...", flush=True)
        theirs = _series("benchmarks.bench_feature_selection:measure_causalml", runs_repeat, runs_warmup,
                         timeout=3600, n_rows=n_rows, n_features=n_features, seed=seed, n_measured=n_measured,
                         calls=calls)
        ours = {}
        for key, methods, compat in (("compat", ("kl",), "causalml"), ("kl", ("kl",), None),
                                     ("hie_hdd", ("hie", "hdd"), None)):
            print(f"[feature_selection] {n_rows:,} x {n_features}: causal_fs {'+'.join(methods)}"
                  f"{' compat' if compat else ''} ...", flush=True)
            ours[key] = _series("benchmarks.bench_feature_selection:measure_score", repeat, warmup, timeout=3600,
                                n_rows=n_rows, n_features=n_features, seed=seed, methods=methods, compat=compat,
                                calls=calls)
        measured = theirs["n_measured"]
        theirs_full_s = theirs["wall_s"] * n_features / measured  # linear in the features (one pass per feature)
        ours_kl = dict(zip(ours["compat"]["features"], ours["compat"]["scores"]["kl"], strict=True))
        difference = max(abs(ours_kl[f] - s) for f, s in zip(theirs["features"], theirs["scores"]["kl"], strict=True))
        rows.append({"n_rows": n_rows, "n_features": n_features, "causalml": theirs, **ours,
                     "causalml_extrapolated": measured < n_features, "causalml_wall_s": theirs_full_s,
                     "same_data": theirs["data_digest"] == ours["compat"]["data_digest"],
                     "max_abs_difference": difference, "equal_scores": difference <= GOAL_EQUAL,
                     "ratio_compat": theirs_full_s / ours["compat"]["wall_s"],
                     "ratio_kl": theirs_full_s / ours["kl"]["wall_s"],
                     "ratio_hie_hdd": theirs_full_s / ours["hie_hdd"]["wall_s"]})
    return {"compare": rows}


def run_paper(n_rows: int, *, seed: int, repeat: int, warmup: int) -> dict:
    """Part 2: the paper's setting (50k x 10 x 3 arms, hie + hdd), 20 calls per process."""
    print(f"[feature_selection] paper setting: {n_rows:,} x {PAPER_FEATURES}, hie+hdd ...", flush=True)
    result = _series("benchmarks.bench_feature_selection:measure_score", repeat, warmup, n_rows=n_rows,
                     n_features=PAPER_FEATURES, seed=seed, methods=("hie", "hdd"), calls=20)
    return {"paper": result}


def run_permutations(n_rows: int, *, seed: int, repeat: int, warmup: int) -> dict:
    """Part 3: 200 permutations at n_rows x 10, without and with the default bootstrap (200 replicates)."""
    out = {}
    for key, n_bootstrap in (("no_bootstrap", 0), ("default_bootstrap", None)):
        print(f"[feature_selection] {PERMUTATIONS} permutations at {n_rows:,} x {PAPER_FEATURES}, "
              f"n_bootstrap={n_bootstrap} ...", flush=True)
        out[key] = _series("benchmarks.bench_feature_selection:measure_score", repeat, warmup, n_rows=n_rows,
                           n_features=PAPER_FEATURES, seed=seed, methods=("hie", "hdd"), n_permutations=PERMUTATIONS,
                           n_bootstrap=n_bootstrap, calls=3)
    return {"permutations": out}


def out_of_core_check(run: dict) -> dict:
    """The out-of-core scores against their population values (`true_scores`)."""
    truth = true_scores(run["n_features"])
    features = run["features"]
    # Sampling error of one cell's conversion rate (p about 0.2, n / (10 bins x 3 arms) rows per cell).
    cell_se = float(np.sqrt(0.2 * 0.8 / (run["n_rows"] / (N_BINS * len(ARMS)))))
    check = {"cell_standard_error": cell_se, "features": features}
    for method in ("hie", "hdd"):
        measured = np.asarray(run["scores"][method])
        expected = truth[method][: len(features)]
        check[method] = {"measured": measured.tolist(), "truth": expected.tolist(),
                         "max_abs_difference": float(np.abs(measured - expected).max()),
                         "top3": _top(features, measured, 3)}
    # Pass: both methods rank the three true modifiers first, in the true order, and HIE is within 3 cell
    # standard errors of its population value for every feature.
    check["hie_within_3_se"] = check["hie"]["max_abs_difference"] <= 3 * cell_se
    check["modifiers_first_in_order"] = all(check[m]["top3"] == list(MODIFIERS) for m in ("hie", "hdd"))
    check["right"] = check["hie_within_3_se"] and check["modifiers_first_in_order"]
    return check


def run_out_of_core(n_rows: int, rows_per_file: int, *, seed: int, repeat: int, warmup: int,
                    reader: str = "platform") -> dict:
    """Part 4: hie + hdd over n_rows x 10 parquet on disk through Dask."""
    files = ensure_dataset(n_rows, n_features=PAPER_FEATURES, rows_per_file=rows_per_file, seed=seed)
    on_disk = sum(f.stat().st_size for f in files)
    print(f"[feature_selection] out of core: {n_rows:,} x {PAPER_FEATURES} in {len(files)} files "
          f"({on_disk / 1e9:.2f} GB) ...", flush=True)
    result = _series("benchmarks.bench_feature_selection:measure_out_of_core", repeat, warmup, timeout=3600,
                     prepare=lambda: warm_page_cache(files), files=[str(f) for f in files],
                     n_features=PAPER_FEATURES, seed=seed, methods=("hie", "hdd"), reader=reader)
    result["bytes_on_disk"] = on_disk
    result["dataset"] = str(dataset_dir(PAPER_FEATURES, rows_per_file, seed).relative_to(DATA_DIR.parent.parent))
    result["check"] = out_of_core_check(result)
    return {"out_of_core": result}


def run_forest(n_rows: int, *, seed: int, repeat: int, paper: dict | None, compare: list | None = None) -> dict:
    """Part 5: the EconML causal forest against hie + hdd on the same rows: time ratio and rankings."""
    print(f"[feature_selection] causal forest at {n_rows:,} x {PAPER_FEATURES} ...", flush=True)
    forest = _series("benchmarks.bench_feature_selection:measure_score", repeat, 0, timeout=3600, n_rows=n_rows,
                     n_features=PAPER_FEATURES, seed=seed, methods=("causal_forest",))
    if paper is None or paper["n_rows"] != n_rows:
        paper = run_paper(n_rows, seed=seed, repeat=1, warmup=0)["paper"]
    from scipy.stats import spearmanr

    features = forest["features"]
    rankings = {"causal_forest": forest["scores"]["causal_forest"],
                **{m: paper["scores"][m] for m in ("hie", "hdd", "combined")}}
    same_size = [c for c in compare or () if (c["n_rows"], c["n_features"]) == (n_rows, PAPER_FEATURES)]
    if same_size:  # the KL filter's ranking on the same rows, from part 1
        rankings["kl (CausalML)"] = same_size[0]["causalml"]["scores"]["kl"]
        rankings["kl (ours, default bins)"] = same_size[0]["kl"]["scores"]["kl"]
    truth = true_scores(PAPER_FEATURES)
    agreement = {m: float(spearmanr(rankings["causal_forest"], rankings[m]).statistic)
                 for m in rankings if m != "causal_forest"}
    recovery = {m: {"top3": _top(features, v, 3), "modifiers_first": set(_top(features, v, 3)) == set(MODIFIERS),
                    "spearman_vs_true_hie": float(spearmanr(v, truth["hie"]).statistic)}
                for m, v in rankings.items()}
    return {"forest": {"forest": forest, "hie_hdd": paper, "time_ratio": forest["wall_s"] / paper["wall_s"],
                       "spearman_forest_vs": agreement, "recovery": recovery}}


# ---------------------------------------------------------------------------------------------- report
def report(results: dict) -> None:
    if "compare" in results:
        rows = []
        for c in results["compare"]:
            theirs = c["causalml"]
            note = (f" (extrapolated from {theirs['n_measured']} features)" if c["causalml_extrapolated"] else "")
            rows.append([_size(c), _label(theirs), _seconds(c["causalml_wall_s"]) + note,
                         _seconds(theirs["wall_min_s"]),
                         f"{theirs.get('later_calls_median_s', float('nan')):.3f} s", "1x",
                         mib(theirs["peak_rss_bytes"]), _load(theirs)])
            for key in ("compat", "kl", "hie_hdd"):
                r = c[key]
                rows.append([_size(c), _label(r), _seconds(r["wall_s"]), _seconds(r["wall_min_s"]),
                             f"{r.get('later_calls_median_s', float('nan')):.3f} s",
                             f"{c['causalml_wall_s'] / r['wall_s']:.1f}x", mib(r["peak_rss_bytes"]), _load(r)])
        print(table(["rows x features", "call", "wall (median)", "wall (min)", "later calls in process (median)",
                     "CausalML / this", "peak RSS", "other load (cores) per run"], rows))
        print(table(["rows x features", "CausalML KL / compat kl: time", "goal (>= 50x)",
                     "max |CausalML - compat| score", "equal (<= 1e-12)", "same rows (digest)"],
                    [[_size(c), f"{c['ratio_compat']:.1f}x", _verdict(c["ratio_compat"] >= GOAL_RATIO),
                      f"{c['max_abs_difference']:.1e}", str(c["equal_scores"]), str(c["same_data"])]
                     for c in results["compare"]]))
    if "paper" in results:
        p = results["paper"]
        print(table(["setting", "first call (median over processes)", "first call (min)",
                     "later calls (median)", "later calls (min)", "goal", "peak RSS", "other load (cores) per run"],
                    [[f"{_size(p)}, 3 arms, hie+hdd", _seconds(p["wall_s"]), _seconds(p["wall_min_s"]),
                      _seconds(p["later_calls_median_s"]), _seconds(p["later_calls_min_s"]),
                      f"< {GOAL_PAPER_S} s: {_verdict(p['wall_s'] < GOAL_PAPER_S)}", mib(p["peak_rss_bytes"]),
                      _load(p)]]))
    if "permutations" in results:
        print(table(["setting", "first call (median)", "first call (min)", "later calls (median)", "goal",
                     "peak RSS", "other load (cores) per run"],
                    [[f"{_size(r)}, hie+hdd, {r['n_permutations']} permutations, n_bootstrap="
                      f"{r['n_bootstrap'] if r['n_bootstrap'] is not None else 'default (200)'}",
                      _seconds(r["wall_s"]), _seconds(r["wall_min_s"]), _seconds(r["later_calls_median_s"]),
                      f"< {GOAL_PERMUTATIONS_S} s: {_verdict(r['wall_s'] < GOAL_PERMUTATIONS_S)}",
                      mib(r["peak_rss_bytes"]), _load(r)]
                     for r in results["permutations"].values()]))
    if "out_of_core" in results:
        r = results["out_of_core"]
        check = r["check"]
        print(table(["rows x features", "files (partitions)", "arm dtype", "wall (median)", "wall (min)",
                     "warm-up run", "cores used", "peak RSS", "goals", "other load (cores) per run"],
                    [[_size(r), f"{r['files']} ({r['partitions']})", r["arm_dtype"], _seconds(r["wall_s"]),
                      _seconds(r["wall_min_s"]), " / ".join(_seconds(w) for w in r["warmup_walls_s"]) or "-",
                      f"{r['cpu_s'] / r['wall_s']:.2f}", f"{mib(r['peak_rss_bytes'])} "
                      f"({r['peak_rss_bytes'] / 1e9:.2f} GB)",
                      f"< {GOAL_OOC_S:.0f} s: {_verdict(r['wall_s'] < GOAL_OOC_S)}, < {GOAL_OOC_BYTES / 1e9:.0f} GB: "
                      f"{_verdict(r['peak_rss_bytes'] < GOAL_OOC_BYTES)}", _load(r)]]))
        print(table(["feature", "hie", "true hie", "hdd", "true hdd"],
                    [[f, f"{check['hie']['measured'][i]:.5f}", f"{check['hie']['truth'][i]:.5f}",
                      f"{check['hdd']['measured'][i]:.6f}", f"{check['hdd']['truth'][i]:.6f}"]
                     for i, f in enumerate(check["features"])]))
        print(f"largest |hie - true| {check['hie']['max_abs_difference']:.1e} (3 cell standard errors: "
              f"{3 * check['cell_standard_error']:.1e}); largest |hdd - true| {check['hdd']['max_abs_difference']:.1e}"
              f"; top 3 hie {check['hie']['top3']}, hdd {check['hdd']['top3']}; right: {check['right']}")
    if "forest" in results:
        f = results["forest"]
        print(table(["method", "wall (first call)", "forest / hie+hdd", "top 3", "true modifiers first",
                     "Spearman vs forest", "Spearman vs true hie"],
                    [[m, _seconds(f["forest"]["wall_s"]) if m == "causal_forest" else
                      _seconds(f["hie_hdd"]["wall_s"]) if m in ("hie", "hdd", "combined") else "(part 1)",
                      f"{f['time_ratio']:,.0f}x" if m == "causal_forest" else "", ", ".join(v["top3"]),
                      str(v["modifiers_first"]),
                      "1" if m == "causal_forest" else f"{f['spearman_forest_vs'][m]:.2f}",
                      f"{v['spearman_vs_true_hie']:.2f}"] for m, v in f["recovery"].items()]))




def _commits(value) -> set[tuple[str, tuple[str, ...]]]:
    """Every (commit, modified files) that a run in `value` (nested results) was taken at."""
    if isinstance(value, dict):
        found = set().union(*(_commits(v) for v in value.values())) if value else set()
        if isinstance(value.get("git"), dict):
            found.add((value["git"]["commit"], tuple(value["git"]["modified"])))
        return found
    if isinstance(value, list):
        return set().union(*(_commits(v) for v in value)) if value else set()
    return set()


LIBRARY = ("causal_fs/", "pipelines/")


def _library_changed(commits: Sequence[tuple[str, tuple[str, ...]]]) -> bool:
    """Whether the runs saw library code other than their commit's, or different library code: uncommitted edits
    under causal_fs/ or pipelines/, or commits that differ there (commits that touched only benchmarks or docs do
    not count)."""
    import subprocess

    if any(name.startswith(LIBRARY) for _, modified in commits for name in modified):
        return True
    names = sorted({commit for commit, _ in commits})
    return any(subprocess.run(["git", "diff", "--quiet", names[0], other, "--", *LIBRARY],
                              cwd=DATA_DIR.parent.parent).returncode != 0 for other in names[1:])


def run(parts: Sequence[str], *, quick: bool, seed: int, repeat: int, warmup: int, compare=None,
        causalml_features: int | None = None, ooc_rows: int | None = None, rows_per_file: int | None = None,
        ooc_repeat: int | None = None, reader: str = "platform", command: str = "") -> dict:
    results: dict = {}
    paper_rows = QUICK_PAPER_ROWS if quick else PAPER_ROWS
    if "causalml" in parts:
        results |= run_causalml(compare or (QUICK_COMPARE if quick else DEFAULT_COMPARE), seed=seed, repeat=repeat,
                                warmup=warmup, causalml_features=causalml_features)
    if "paper" in parts:
        results |= run_paper(paper_rows, seed=seed, repeat=repeat, warmup=warmup)
    if "permutations" in parts:
        results |= run_permutations(paper_rows, seed=seed, repeat=repeat, warmup=warmup)
    if "out_of_core" in parts:
        results |= run_out_of_core(ooc_rows or (QUICK_OOC_ROWS if quick else DEFAULT_OOC_ROWS),
                                   rows_per_file or (QUICK_ROWS_PER_FILE if quick else DEFAULT_ROWS_PER_FILE),
                                   seed=seed, repeat=ooc_repeat or (1 if quick else 2), warmup=warmup,
                                   reader=reader)
    if "forest" in parts:
        results |= run_forest(QUICK_FOREST_ROWS if quick else PAPER_ROWS, seed=seed, repeat=1,
                              paper=results.get("paper"), compare=results.get("compare"))
    report(results)
    commits = sorted(_commits(results))
    if _library_changed(commits):
        print(f"WARNING: not one clean library version: the runs were taken at {commits} (commit, modified files)")
    name = ("feature_selection" + ("-quick" if quick else "")
            + ("" if set(parts) == set(PARTS) else "-" + "-".join(parts))
            + (f"-{reader}" if reader != "platform" and "out_of_core" in parts else ""))
    path = save_results(name, command, {"parts": list(parts), "quick": quick, "seed": seed, "run_commits": commits,
                                        **results})
    print(f"results: {path}")
    return results


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_feature_selection",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which measurements to run")
    parser.add_argument("--compare", nargs="+", metavar="ROWSxFEATURES", default=None,
                        help="sizes for the CausalML comparison (default 50000x10 1000000x10 1000000x100)")
    parser.add_argument("--causalml-features", type=int, default=None,
                        help="time CausalML on at most this many features and extrapolate linearly (default: all)")
    parser.add_argument("--ooc-rows", type=int, default=None, help=f"out-of-core rows (default {DEFAULT_OOC_ROWS:,})")
    parser.add_argument("--rows-per-file", type=int, default=None,
                        help=f"rows per parquet file (default {DEFAULT_ROWS_PER_FILE:,})")
    parser.add_argument("--ooc-repeat", type=int, default=None, help="out-of-core runs after the warm-up (default 2)")
    parser.add_argument("--reader", choices=READERS, default="platform",
                        help="out of core: how the parquet files are opened (default: the platform's open_parquet)")
    add_common_arguments(parser, repeat=3)
    args = parser.parse_args(argv)
    warmup = apply_common_arguments(args)
    compare = None
    if args.compare:
        compare = [tuple(int(v) for v in size.lower().split("x")) for size in args.compare]
    return run(args.parts, quick=args.quick, seed=args.seed, repeat=args.repeat if not args.quick else 1,
               warmup=warmup, compare=compare, causalml_features=args.causalml_features, ooc_rows=args.ooc_rows,
               rows_per_file=args.rows_per_file, ooc_repeat=args.ooc_repeat, reader=args.reader,
               command=command_line("benchmarks.bench_feature_selection", argv))


if __name__ == "__main__":
    main()
