"""Offline constrained RL on the synthetic campaign: the mixed policy against its baselines, and training time.

1. **Long-term value at equal realised spend** (default 10^5 users x 14 days, per world). Logs: the world's
   feature-biased logging policy (5% randomized slice, propensities recorded), log seed 7. Every method learns
   from the same logs with the same Q-function class (per-day, per-action ridge on the 33 state features,
   importance-weighted by 1 / logged propensity), at budgets b = 1, 2, 4, 8 currency units per user over the
   campaign:
   - `mixed`: column generation over FQI/FQE (`budget_rl.mixed.maximize_under_budget`);
   - `myopic`: the two-stage allocator applied day by day with b / 14 per user and day;
   - `fixed multiplier`: one greedy Q-policy for r - lambda c, lambda by bisection (20 steps) on the FQE cost;
   - `Le et al.`: exponentiated gradient on lambda in [0, 1] (learning rate 0.2), the uniform mixture of all 30
     iterates (30 stored policies).
   Each learned policy then runs in the simulator on evaluation seed 11 (common random numbers: every method
   meets the same users and the same draws); mixtures are executed by hashing user ids (one component per user).
   Because the methods realise different spends, values are compared at equal *realised* spend: each method's
   frontier is the upper concave hull of its simulated (spend, value) points plus the all-control policy at zero
   spend (every point of that hull is itself achievable, by hashing users between two of its policies); at each
   budget the ratio mixed frontier / baseline frontier is read at the smaller of the two methods' realised
   spends there. Intervals: 95% percentile bootstrap over users (400 resamples of the
   per-user totals, all methods resampled together), so they cover evaluation noise for the learned policies,
   not the noise of learning from another log.
   Worlds: `default` (habit decay 0.7, habit effect 0.5: the platform's synthetic campaign) and `strong habit`
   (decay 0.9, effect 1.0: purchases carry further into later days).
2. **Training time** of the whole loop (column generation over FQI + FQE until no policy improves) from 10^5 users
   x 14 days of logs at b = 4 (default world), on this machine's CPU: ridge Q-functions, and the torch MLP
   Q-functions (2 x 64 hidden units, 5 epochs per fit); with the mixture's planned and simulated (value, spend).

    python -m benchmarks.bench_constrained_rl                 # full sizes
    python -m benchmarks.bench_constrained_rl --quick         # 2x10^4 users, default world only
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from benchmarks._harness import (
    add_common_arguments,
    apply_common_arguments,
    command_line,
    measure_in_subprocess,
    mib,
    save_results,
    table,
)

HORIZON = 14
BUDGETS = (1.0, 2.0, 4.0, 8.0)
LOG_SEED, EVALUATION_SEED = 7, 11
LE_ITERATIONS, LE_LAMBDA_MAX, LE_LEARNING_RATE = 30, 1.0, 0.2
WORLDS = {"default": {}, "strong habit": {"habit_decay": 0.9, "habit_effect": 1.0}}
METHODS = ("mixed", "myopic", "fixed multiplier", "Le et al.")


def _environment(n_users: int, world_seed: int, overrides: dict):
    from pipelines.synthetic import CampaignConfig, CampaignWorld
    from pipelines.synthetic.episodes import CampaignEpisodes

    config = CampaignConfig(n_users=n_users, avg_degree=0, chunk_users=max(n_users, 100), **overrides)
    return CampaignEpisodes(CampaignWorld.from_config(config, random_state=world_seed), 0, n_users, HORIZON)


def _hashed(mixed, user_ids: np.ndarray, salt: str = "benchmark"):
    """Executes a mixture: one component per user for the whole campaign."""
    return lambda features, day: mixed.act(user_ids, features, day, salt=salt)


def measure_world(n_users: int, world_seed: int, overrides: dict, budgets: Sequence[float],
                  log_seed: int = LOG_SEED) -> dict:
    """Learn every method at every budget from one log, simulate each policy; per-user totals stay in memory for
    the bootstrap, which runs here too."""
    from budget_rl import baselines
    from budget_rl.mixed import maximize_under_budget
    from budget_rl.offline import RidgeQ, fqe_oracle

    env = _environment(n_users, world_seed, overrides)
    logs = env.log(random_state=log_seed).transitions
    oracle = fqe_oracle(logs, regressor=RidgeQ, importance_weighted=True)
    runs, totals = [], []

    def record(method: str, budget: float, policy, seconds: float, stored: int, calls: int, planned) -> None:
        episodes = env.run(policy, random_state=EVALUATION_SEED)
        totals.append((episodes.total_reward, episodes.total_cost))
        runs.append({"method": method, "budget": budget, "train_s": seconds, "stored_policies": stored,
                     "oracle_calls": calls, "planned": None if planned is None else [float(v) for v in planned],
                     "value": episodes.value, "spend": episodes.spend})

    record("control", 0.0, lambda features, day: np.zeros(len(features), dtype=np.int64), 0.0, 1, 0, None)
    for budget in budgets:
        started = time.perf_counter()
        mixed = maximize_under_budget(oracle, [budget])
        record("mixed", budget, _hashed(mixed, env.users.user_id), time.perf_counter() - started,
               len(mixed.components), mixed.oracle_calls, mixed.expected)
        started = time.perf_counter()
        myopic = baselines.myopic_allocator(logs, budget, importance_weighted=True)
        record("myopic", budget, myopic.act, time.perf_counter() - started, HORIZON, 0, None)
        started = time.perf_counter()
        fixed = baselines.fixed_multiplier_policy(oracle, budget, lambda_max=LE_LAMBDA_MAX, steps=20)
        record("fixed multiplier", budget, fixed.policy.act, time.perf_counter() - started, 1, fixed.oracle_calls,
               fixed.measurement)
        started = time.perf_counter()
        le = baselines.game_theoretic_mixture(oracle, budget, iterations=LE_ITERATIONS, lambda_max=LE_LAMBDA_MAX,
                                              learning_rate=LE_LEARNING_RATE)
        record("Le et al.", budget, _hashed(le, env.users.user_id), time.perf_counter() - started,
               len(le.components), le.oracle_calls, le.expected)
    return {"runs": runs, "comparison": _compare_at_equal_spend(runs, totals)}


def _upper_hull(spend: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((-value, spend))
    hull: list[int] = []
    for i in order:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (spend[b] - spend[a]) * (value[i] - value[a]) >= (value[b] - value[a]) * (spend[i] - spend[a]):
                hull.pop()
            else:
                break
        if not hull or spend[i] > spend[hull[-1]]:
            hull.append(i)
    return spend[hull], value[hull]


def _frontier_value(spend: np.ndarray, value: np.ndarray, at: float) -> float:
    """The best value a mixture of these policies reaches at spend `at` (NaN beyond the largest spend)."""
    xs, ys = _upper_hull(spend, value)
    upper = np.maximum.accumulate(ys)  # spending more than needed is never forced: the hull is non-decreasing
    return float(np.interp(at, xs, upper)) if at <= xs[-1] + 1e-12 else float("nan")


def _ratios(runs: list[dict], values: np.ndarray, spends: np.ndarray) -> list[dict]:
    """Per budget and baseline: mixed frontier / baseline frontier at s = the smaller of the two methods' realised
    spends at that budget (both frontiers are defined there)."""
    control = next(i for i, r in enumerate(runs) if r["method"] == "control")
    members = {method: [control] + [j for j, r in enumerate(runs) if r["method"] == method] for method in METHODS}
    rows = []
    for i, run in enumerate(runs):
        if run["method"] != "mixed":
            continue
        row = {"budget": run["budget"], "spend": spends[i], "value": values[i]}
        for baseline in METHODS[1:]:
            j = next(j for j in members[baseline] if runs[j]["budget"] == run["budget"])
            at = min(spends[i], spends[j])
            ours = _frontier_value(spends[members["mixed"]], values[members["mixed"]], at)
            row[baseline] = ours / _frontier_value(spends[members[baseline]], values[members[baseline]], at)
            row[f"{baseline} at spend"] = at
        rows.append(row)
    return rows


def _compare_at_equal_spend(runs: list[dict], totals: list, n_bootstrap: int = 400) -> list[dict]:
    reward = np.stack([t[0] for t in totals])  # (runs, users)
    cost = np.stack([t[1] for t in totals])
    point = _ratios(runs, reward.mean(axis=1), cost.mean(axis=1))
    rng = np.random.default_rng(0)
    replicates = []
    for _ in range(n_bootstrap):
        users = rng.integers(0, reward.shape[1], reward.shape[1])
        replicates.append(_ratios(runs, reward[:, users].mean(axis=1), cost[:, users].mean(axis=1)))
    for index, row in enumerate(point):
        for baseline in METHODS[1:]:
            draws = np.array([r[index][baseline] for r in replicates])
            draws = draws[np.isfinite(draws)]
            row[f"{baseline} interval"] = ([float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
                                           if len(draws) else [float("nan")] * 2)
    return point


def measure_training(n_users: int, world_seed: int, q_model: str, budget: float) -> dict:
    """Wall time of the whole column-generation loop from logs already in memory."""
    from budget_rl.mixed import maximize_under_budget
    from budget_rl.offline import MLPQ, RidgeQ, fqe_oracle

    env = _environment(n_users, world_seed, {})
    logs = env.log(random_state=LOG_SEED).transitions
    regressor = RidgeQ if q_model == "ridge" else (lambda: MLPQ(epochs=5))
    oracle = fqe_oracle(logs, regressor=regressor, importance_weighted=True)
    started = time.perf_counter()
    mixed = maximize_under_budget(oracle, [budget])
    seconds = time.perf_counter() - started
    realised = env.run(_hashed(mixed, env.users.user_id), random_state=EVALUATION_SEED)
    return {"seconds": seconds, "oracle_calls": mixed.oracle_calls, "stored_policies": len(mixed.components),
            "rows": int(len(logs.action)), "planned": [float(v) for v in mixed.expected],
            "realised": [realised.value, realised.spend]}


def run(n_users: int, worlds: Sequence[str], parts: Sequence[str], seed: int, log_seed: int, command: str) -> dict:
    payload: dict = {"sizes": {"users": n_users, "horizon": HORIZON, "budgets": list(BUDGETS), "log_seed": log_seed}}
    target = "benchmarks.bench_constrained_rl"
    if "compare" in parts:
        payload["compare"] = {}
        for world in worlds:
            result = measure_in_subprocess(f"{target}:measure_world", n_users=n_users, world_seed=seed,
                                           overrides=WORLDS[world], budgets=list(BUDGETS), log_seed=log_seed)
            payload["compare"][world] = result
            _print_world(f"{world} (log seed {log_seed})", result)
    if "timing" in parts:
        payload["timing"] = {}
        rows = []
        for q_model in ("ridge", "mlp"):
            result = measure_in_subprocess(f"{target}:measure_training", n_users=n_users, world_seed=seed,
                                           q_model=q_model, budget=4.0)
            payload["timing"][q_model] = result
            rows.append([q_model, f"{n_users:,} x {HORIZON}", f"{result['seconds']:.1f}", result["oracle_calls"],
                         f"{result['seconds'] / result['oracle_calls']:.2f}", result["stored_policies"],
                         mib(result["peak_rss_bytes"]), "({:.3f}, {:.3f})".format(*result["planned"]),
                         "({:.3f}, {:.3f})".format(*result["realised"])])
        print(table(["Q-functions", "users x days", "loop s", "oracle calls", "s per call", "stored", "peak RSS",
                     "planned (value, spend)", "realised (value, spend)"], rows))
    name = "_".join(["constrained_rl", *sorted(parts), *([] if log_seed == LOG_SEED else [f"log{log_seed}"])])
    path = save_results(name, command, payload)  # one file per part and log seed: later runs keep earlier ones
    print(f"saved {path}")
    return payload


def _print_world(world: str, result: dict) -> None:
    print(f"\n## {world}")
    print(table(["method", "budget", "realised value", "realised spend", "planned (value, spend)", "stored",
                 "oracle calls", "train s"],
                [[r["method"], r["budget"], f"{r['value']:.3f}", f"{r['spend']:.3f}",
                  "" if r["planned"] is None else f"({r['planned'][0]:.3f}, {r['planned'][1]:.3f})",
                  r["stored_policies"], r["oracle_calls"], f"{r['train_s']:.1f}"] for r in result["runs"]]))
    rows = []
    for row in result["comparison"]:
        cells = [row["budget"], f"{row['spend']:.3f}", f"{row['value']:.3f}"]
        for baseline in METHODS[1:]:
            low, high = row[f"{baseline} interval"]
            cells.append(f"{row[baseline]:.4f} [{low:.4f}, {high:.4f}] at {row[f'{baseline} at spend']:.2f}")
        rows.append(cells)
    print(table(["budget", "mixed spend", "mixed value", *[f"mixed / {m}" for m in METHODS[1:]]], rows))


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_constrained_rl",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=None, help="simulated users (default 10^5)")
    parser.add_argument("--worlds", nargs="+", choices=list(WORLDS), default=None)
    parser.add_argument("--parts", nargs="+", choices=["compare", "timing"], default=["compare", "timing"])
    parser.add_argument("--log-seed", type=int, default=LOG_SEED, help=f"seed of the logged campaign ({LOG_SEED})")
    add_common_arguments(parser, repeat=1)
    args = parser.parse_args(argv)
    apply_common_arguments(args)
    return run(args.users or (20_000 if args.quick else 100_000),
               args.worlds or (["default"] if args.quick else list(WORLDS)), args.parts, args.seed, args.log_seed,
               command_line("benchmarks.bench_constrained_rl", argv))


if __name__ == "__main__":
    main()
