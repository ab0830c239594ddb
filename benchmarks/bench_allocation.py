"""The two-stage budget allocator: dual vs cvxpy+HiGHS, the dual at 10^7 users through Dask, debiased vs plain.

1. **Dual vs LP** (default 10^5 users x 10 levels): `budget_rl.allocate(method="dual")` and `method="lp"`
   (cvxpy with HiGHS: the same LP, the exact reference) on the same instance, each in a fresh process (the dual
   after one warm-up call, so numba's compiled-code cache load is not counted); time ratio and relative objective
   gap. Instance: response p_ij increasing in the level (sorted uniforms in [0, 0.5)), face values 0 < f_1 < ... ,
   value = p, cost = f p (paid on redemption), budget 30% of the spend at the highest level.
2. **10^7 users x 10 levels from parquet through Dask** (`pipelines.allocation.allocate_frame` in the in-process
   LocalCluster, 2 threads): wall time and the process's peak RSS, writing the per-user allocation parquet.
   Input: 20 zstd parquet files of 500k users (user_id, value_0..9, cost_0..9 as float64) under
   benchmarks/.data/allocation/, written once with a fixed seed.
3. **Debiased vs plain response model** on synthetic campaigns with hidden targeting (the logging policy targets
   an unlogged coupon affinity that also raises coupon effects): each model allocates, and its allocation is
   scored under the simulator's true response at equal TRUE spend (10%, 20%, 30% of the spend at everyone's
   costliest level); the ratio debiased/plain of true value, per seed, plus the randomized-hold-out log-loss and
   mean absolute calibration gap per level, and the planning error of spend (predicted / true - 1).

    python -m benchmarks.bench_allocation                 # full sizes
    python -m benchmarks.bench_allocation --quick         # 2x10^4 users, 10^6 via Dask, 1 campaign seed
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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

LEVELS = 10
ROWS_PER_FILE = 500_000
DASK_TIME_GOAL_S, DASK_MEMORY_GOAL = 60.0, 4 * 10**9
SPEED_GOAL, GAP_GOAL = 50.0, 1e-6
PARTS = ("compare", "dask", "models")


def instance(n_users: int, n_levels: int, seed: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """(value, cost, budget) of the benchmark instance (module docstring)."""
    rng = np.random.default_rng([seed, offset])
    faces = np.r_[0.0, np.sort(np.random.default_rng(seed).uniform(1.0, 10.0, n_levels - 1))]
    response = np.sort(rng.uniform(0.0, 0.5, size=(n_users, n_levels)), axis=1)
    cost = faces * response
    return response, cost, 0.3 * float(cost[:, -1].sum())


def measure_in_memory(n_users: int, n_levels: int, seed: int, method: str) -> dict:
    from budget_rl import allocate

    value, cost, budget = instance(n_users, n_levels, seed)
    if method == "dual":
        allocate(value[:1000], cost[:1000], budget / 1000)  # loads the compiled passes
    started = time.perf_counter()
    allocation = allocate(value, cost, budget, method=method)
    return {"seconds": time.perf_counter() - started, "value": allocation.value, "spend": allocation.spend,
            "budget": budget, "multiplier": allocation.budget_multiplier,
            "fractional_users": len(allocation.fractional)}


def dataset(n_users: int, seed: int) -> list[Path]:
    rows_per_file = min(ROWS_PER_FILE, n_users)
    folder = DATA_DIR / "allocation" / f"levels{LEVELS}-rows{rows_per_file}-seed{seed}"

    def write(index: int, path: Path) -> None:
        value, cost, _ = instance(rows_per_file, LEVELS, seed, offset=index + 1)
        columns = {"user_id": np.arange(index * rows_per_file, (index + 1) * rows_per_file, dtype=np.int64)}
        columns |= {f"value_{j}": value[:, j] for j in range(LEVELS)}
        columns |= {f"cost_{j}": cost[:, j] for j in range(LEVELS)}
        pq.write_table(pa.table(columns), path, compression="zstd")

    return ensure_files(folder, n_users, rows_per_file, write, "allocation")


def measure_dask(files: list[str], budget_share: float, out: str) -> dict:
    import dask.dataframe as dd

    from pipelines.allocation import allocate_frame
    from pipelines.execution import dask_client

    started = time.perf_counter()
    with dask_client():
        frame = dd.read_parquet(files)
        costliest = frame[f"cost_{LEVELS - 1}"].sum().compute()
        budget = budget_share * float(costliest)
        allocation = allocate_frame(frame, [f"value_{j}" for j in range(LEVELS)],
                                    [f"cost_{j}" for j in range(LEVELS)], budget, out=Path(out))
    return {"seconds": time.perf_counter() - started, "value": allocation.value, "spend": allocation.spend,
            "budget": budget, "multiplier": allocation.budget_multiplier, "passes": allocation.diagnostics["passes"],
            "users": allocation.diagnostics["users"], "fractional_users": len(allocation.fractional)}


def measure_models(n_users: int, seed: int, hidden_targeting: float) -> dict:
    from budget_rl.evaluation import response_metrics, true_value_curve
    from budget_rl.response import DebiasedResponseModel, ResponseModel
    from pipelines.synthetic import CampaignConfig, simulate_campaign

    campaign = simulate_campaign(CampaignConfig(n_users=n_users, avg_degree=0, hidden_targeting=hidden_targeting),
                                 random_state=seed)
    logs, truth = campaign.logs, campaign.truth
    arms, faces = truth.world.arm_labels, np.asarray(truth.world.arm_costs)
    features = [spec.name for spec in truth.world.features] + ["recent_purchases"]
    level = pd.Categorical(logs["arm"], categories=arms).codes.astype(np.int64)
    reward = logs["reward"].to_numpy()
    held_out = logs["randomized"].to_numpy() & (logs["user_id"].to_numpy() % 2 == 0)
    train = ~held_out
    X = logs[features]
    models = {
        "plain": ResponseModel(random_state=seed).fit(X[train], level[train], reward[train], n_levels=len(arms)),
        "debiased": DebiasedResponseModel(random_state=seed).fit(
            X[train], level[train], reward[train], logs["randomized"].to_numpy()[train], n_levels=len(arms)),
    }
    users = campaign.users[features[:-1]].assign(recent_purchases=0)
    p0 = truth.users[[f"p0_{arm}" for arm in arms]].to_numpy()
    predictions = {name: model.predict_proba(users) for name, model in models.items()}
    predictions["feature_ceiling"] = _feature_ceiling(truth.world, n_users, hidden_targeting)
    targets = [share * float((p0 * faces).max(axis=1).sum()) for share in (0.1, 0.2, 0.3)]
    curve = true_value_curve({name: (p, p * faces) for name, p in predictions.items()} | {"oracle": (p0, p0 * faces)},
                             p0, p0 * faces, targets)
    result = {"hold_out_rows": int(held_out.sum())}
    for name, model in models.items():
        metrics = response_metrics(model.predict_at(X[held_out], level[held_out]), reward[held_out],
                                   level[held_out], len(arms))
        result[name] = {"log_loss": metrics["log_loss"], "ece": metrics["ece"],
                        "mean_abs_gap": float(np.mean([abs(metrics[f"gap_level_{j}"]) for j in range(len(arms))]))}
    result["curve"] = curve.to_dict(orient="list")
    return result


def _feature_ceiling(world, n_users: int, hidden_targeting: float) -> np.ndarray:
    """The true response averaged over the unlogged coupon affinity u ~ N(0, 1) (40-point Gauss-Hermite quadrature),
    per user and level: the best any model of the logged features could do (a bound: it also sees values the logs
    have as missing)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    weights = weights / weights.sum()
    size = world.config.chunk_users
    blocks = []
    for chunk, first in enumerate(range(0, n_users, size)):
        block = world.draw_users(chunk, first, min(size, n_users - first))
        observed = (world.baseline_logit(block)[:, None] + world.arm_base[None, :]
                    + block.modifier_signal @ world.effects.T)
        columns = [1.0 / (1.0 + np.exp(-observed[:, 0]))]
        for k in range(1, observed.shape[1]):
            logits = observed[:, [k]] + hidden_targeting * nodes[None, :]
            columns.append((1.0 / (1.0 + np.exp(-logits))) @ weights)
        blocks.append(np.column_stack(columns))
    return np.vstack(blocks)


def run(n_compare: int, n_dask: int, campaign_users: int, campaign_seeds: Sequence[int], hidden_targeting: float,
        seed: int, repeat: int, warmup: int, command: str, parts: Sequence[str] = PARTS) -> dict:
    payload: dict = {"sizes": {"compare_users": n_compare, "dask_users": n_dask, "levels": LEVELS,
                               "campaign_users": campaign_users, "campaign_seeds": list(campaign_seeds),
                               "hidden_targeting": hidden_targeting}}
    target = "benchmarks.bench_allocation"
    if "compare" in parts:
        _compare(payload, target, n_compare, seed, repeat, warmup)
    if "dask" in parts:
        _dask(payload, target, n_dask, seed, repeat, warmup)
    if "models" in parts:
        _models(payload, target, campaign_users, campaign_seeds, hidden_targeting)
    path = save_results("allocation", command, payload)
    print(f"saved {path}")
    return payload


def _compare(payload: dict, target: str, n_compare: int, seed: int, repeat: int, warmup: int) -> None:
    runs: dict[str, list[dict]] = {"dual": [], "lp": []}
    for method in ("dual", "lp"):
        for i in range(warmup + repeat):
            result = measure_in_subprocess(f"{target}:measure_in_memory", n_users=n_compare, n_levels=LEVELS,
                                           seed=seed, method=method)
            if i >= warmup:
                runs[method].append(result)
    dual_s = statistics.median(r["seconds"] for r in runs["dual"])
    lp_s = statistics.median(r["seconds"] for r in runs["lp"])
    gap = abs(runs["dual"][0]["value"] - runs["lp"][0]["value"]) / abs(runs["lp"][0]["value"])
    payload["compare"] = {"dual_s": dual_s, "lp_s": lp_s, "ratio": lp_s / dual_s, "relative_gap": gap,
                          "runs": runs}
    print(table(["users x levels", "dual s", "cvxpy+HiGHS s", "ratio", "objective gap (relative)", "goal"],
                [[f"{n_compare:,} x {LEVELS}", f"{dual_s:.3f}", f"{lp_s:.2f}", f"{lp_s / dual_s:,.0f}x", f"{gap:.1e}",
                  f">= {SPEED_GOAL:.0f}x, < {GAP_GOAL:g}: "
                  f"{'met' if lp_s / dual_s >= SPEED_GOAL and gap < GAP_GOAL else 'MISSED'}"]]))


def _dask(payload: dict, target: str, n_dask: int, seed: int, repeat: int, warmup: int) -> None:
    files = [str(f) for f in dataset(n_dask, seed)]
    out = DATA_DIR / "allocation" / "out"
    dask_runs = []
    for i in range(warmup + repeat):
        result = measure_in_subprocess(f"{target}:measure_dask", prepare=lambda: warm_page_cache(map(Path, files)),
                                       files=files, budget_share=0.3, out=str(out))
        if i >= warmup:
            dask_runs.append(result)
    median_s = statistics.median(r["seconds"] for r in dask_runs)
    peak = max(r["peak_rss_bytes"] for r in dask_runs)
    payload["dask"] = {"median_s": median_s, "peak_rss_bytes": peak, "runs": dask_runs}
    first = dask_runs[0]
    print(table(["users x levels", "median s", "peak RSS", "passes", "spend / budget", "fractional", "goal"],
                [[f"{first['users']:,} x {LEVELS}", f"{median_s:.1f}", mib(peak), first["passes"],
                  f"{first['spend'] / first['budget']:.12f}", first["fractional_users"],
                  f"< {DASK_TIME_GOAL_S:.0f} s, < 4 GB: "
                  f"{'met' if median_s < DASK_TIME_GOAL_S and peak < DASK_MEMORY_GOAL else 'MISSED'}"]]))


def _models(payload: dict, target: str, campaign_users: int, campaign_seeds: Sequence[int],
            hidden_targeting: float) -> None:
    model_runs = []
    rows = []
    for campaign_seed in campaign_seeds:
        result = measure_in_subprocess(f"{target}:measure_models", n_users=campaign_users, seed=campaign_seed,
                                       hidden_targeting=hidden_targeting)
        model_runs.append(result)
        curve = pd.DataFrame(result["curve"])
        pivot = curve.pivot(index="target_spend", columns="model", values="true_value")
        planned = curve.pivot(index="target_spend", columns="model", values="predicted_spend")
        actual = curve.pivot(index="target_spend", columns="model", values="true_spend")
        for target_spend in pivot.index:
            at = pivot.loc[target_spend]
            rows.append([campaign_seed, f"{target_spend:,.0f}", f"{at['plain']:,.1f}", f"{at['debiased']:,.1f}",
                         f"{at['feature_ceiling']:,.1f}", f"{at['oracle']:,.1f}", f"{at['debiased'] / at['plain']:.4f}",
                         f"{at['plain'] / at['feature_ceiling']:.4f}",
                         f"{planned.loc[target_spend, 'plain'] / actual.loc[target_spend, 'plain'] - 1:+.1%}",
                         f"{planned.loc[target_spend, 'debiased'] / actual.loc[target_spend, 'debiased'] - 1:+.1%}"])
    payload["models"] = model_runs
    print(table(["seed", "true spend", "plain value", "debiased value", "feature ceiling", "oracle",
                 "debiased / plain", "plain / ceiling", "plain spend error", "debiased spend error"], rows))
    print(table(["seed", "hold-out rows", "plain log-loss", "debiased log-loss", "plain mean |gap|",
                 "debiased mean |gap|"],
                [[s, r["hold_out_rows"], f"{r['plain']['log_loss']:.4f}", f"{r['debiased']['log_loss']:.4f}",
                  f"{r['plain']['mean_abs_gap']:.4f}", f"{r['debiased']['mean_abs_gap']:.4f}"]
                 for s, r in zip(campaign_seeds, model_runs, strict=True)]))


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_allocation", description=__doc__.split("\n")[0])
    parser.add_argument("--compare-users", type=int, default=None, help="users of dual vs LP (default 10^5)")
    parser.add_argument("--dask-users", type=int, default=None, help="users through Dask (default 10^7)")
    parser.add_argument("--campaign-users", type=int, default=None, help="users per synthetic campaign (40,000)")
    parser.add_argument("--campaign-seeds", type=int, nargs="+", default=None, help="campaign seeds (3 4 5 6 7)")
    parser.add_argument("--hidden-targeting", type=float, default=1.0)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which measurements to run")
    add_common_arguments(parser, repeat=3)
    args = parser.parse_args(argv)
    warmup = apply_common_arguments(args)
    quick = args.quick
    return run(args.compare_users or (20_000 if quick else 100_000), args.dask_users or (1_000_000 if quick else
                                                                                         10_000_000),
               args.campaign_users or (10_000 if quick else 40_000),
               args.campaign_seeds or ([3] if quick else [3, 4, 5, 6, 7]), args.hidden_targeting, args.seed,
               1 if quick else args.repeat, warmup, command_line("benchmarks.bench_allocation", argv), args.parts)


if __name__ == "__main__":
    main()
