"""Offline constrained RL on the synthetic campaign: the mixed policy against its baselines, and training time.

1. **Long-term value at equal realised spend** (default 10^5 users x 14 days, per world). Logs: the world's
   feature-biased logging policy (5% randomized slice, propensities recorded), log seed 7. Every method learns
   from the same logs with the same Q-function class (per-day, per-action ridge on the 33 state features,
   importance-weighted by 1 / logged propensity), at budgets b = 1, 2, 4, 8 currency units per user over the
   campaign:
   - `paced`: the mixed policy run as a daily job that spends its budget (`budget_rl.pacing`): best responses
     for a grid of multipliers (`budget_rl.pacing.DEFAULT_MULTIPLIERS`: 0, then 16 from 0.004 to 1, and 1000 for
     the cheapest policy), with their per-day FQE Q-functions; each day the
     multiplier pair and the hash split are re-solved so that the calibrated predicted remaining spend meets 98%
     of the budget minus the realised spend so far (safety share 2%);
   - `mixed`: column generation over FQI/FQE (`budget_rl.mixed.maximize_under_budget`), planned once;
   - `myopic`: the two-stage allocator applied day by day with b / 14 per user and day;
   - `fixed multiplier`: one greedy Q-policy for r - lambda c, lambda by bisection (20 steps) on the FQE cost;
   - `Le et al.`: exponentiated gradient on lambda in [0, 1] (learning rate 0.2), the uniform mixture of all 30
     iterates (30 stored policies).
   Each learned policy then runs in the simulator on evaluation seed 11 (common random numbers: every method
   meets the same users and the same draws); mixtures are executed by hashing user ids (one component per user).
   Because the methods realise different spends, values are compared at equal *realised* spend: each method's
   frontier is the upper concave hull of its simulated (spend, value) points plus the all-control policy at zero
   spend (every point of that hull is itself achievable, by hashing users between two of its policies); at each
   budget the ratio paced frontier / baseline frontier is read at the smaller of the two methods' realised
   spends there.
   Headroom (`budget_rl.headroom`): the full-knowledge Lagrangian policy, solved per user by backward induction on
   the simulator's hidden truth (habit on a 24-point grid; its multiplier by bisection on 1,000 users so that its
   expected spend is b), run in the same simulator; with its dual bound (no policy within b in expectation buys
   more). Share of the headroom over myopic: (paced - myopic) / (headroom - myopic), the frontiers read at the
   smaller of the paced and myopic spends. Intervals: 95% percentile bootstrap over users (400 resamples of the
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
#: The paced mixed policy, then what it is compared with at equal realised spend ("mixed": column generation alone).
METHODS = ("paced", "myopic", "fixed multiplier", "Le et al.", "mixed")
PACING_SAFETY = 0.02
HEADROOM_GRID, HEADROOM_SEARCH_USERS = 24, 1_000


def _environment(n_users: int, world_seed: int, overrides: dict):
    from pipelines.synthetic import CampaignConfig, CampaignWorld
    from pipelines.synthetic.episodes import CampaignEpisodes

    config = CampaignConfig(n_users=n_users, avg_degree=0, chunk_users=max(n_users, 100), **overrides)
    return CampaignEpisodes(CampaignWorld.from_config(config, random_state=world_seed), 0, n_users, HORIZON)


def _hashed(mixed, user_ids: np.ndarray, salt: str = "benchmark"):
    """Executes a mixture: one component per user for the whole campaign."""
    return lambda features, day: mixed.act(user_ids, features, day, salt=salt)


def _paced(paced, env, budget: float, days: list, salt: str = "benchmark"):
    """Runs the paced policy as a daily job would: each day it knows the realised spend per user so far (from
    yesterday's action and the `purchased_yesterday` feature) and the planned spend of the days run; `days`
    collects each day's `PacedDecision.summary()`."""
    bought = env.feature_names.index("purchased_yesterday")
    faces, user_ids = env.world.arm_costs, env.users.user_id
    spent, planned, yesterday = np.zeros(len(user_ids)), np.zeros(len(user_ids)), [None]

    def act(features: np.ndarray, day: int) -> np.ndarray:
        if day > 0:
            spent[:] += faces[yesterday[0]] * features[:, bought]
        decision = paced.decide(user_ids, features, day, spent, budget, salt=salt,
                                planned_so_far=planned if day > 0 else None)
        planned[:] += decision.expected_cost
        yesterday[0] = decision.action
        days.append(decision.summary())
        return decision.action

    return act


def _truth(env):
    """The simulator's hidden per-user truth as `budget_rl.headroom.TrueCampaign`."""
    from budget_rl.headroom import TrueCampaign

    world, users, n = env.world, env.users, len(env.users)
    return TrueCampaign(world.baseline_logit(users)[:, None] + world.arm_effects(users),
                        world.activity_logit(users, np.zeros(n), np.full(n, -1)), world.carryover, world.arm_costs,
                        world.config.habit_effect, world.config.habit_decay, HORIZON)


def _full_knowledge(policy, env):
    """Runs a `HeadroomPolicy`: it tracks each user's latent habit and last arm seen from its own actions and the
    `purchased_yesterday` and `active_yesterday` features."""
    bought, active = (env.feature_names.index(name) for name in ("purchased_yesterday", "active_yesterday"))
    decay, rows = env.world.config.habit_decay, np.arange(len(env.users))
    habit, seen, yesterday = np.zeros(len(rows)), np.full(len(rows), -1), [None]

    def act(features: np.ndarray, day: int) -> np.ndarray:
        if day > 0:
            habit[:] = decay * habit + features[:, bought]
            seen[:] = np.where(features[:, active] > 0, yesterday[0], seen)
        yesterday[0] = policy.act(rows, habit, seen, day)
        return yesterday[0]

    return act


def measure_world(n_users: int, world_seed: int, overrides: dict, budgets: Sequence[float],
                  log_seed: int = LOG_SEED) -> dict:
    """Learn every method at every budget from one log, simulate each policy; per-user totals stay in memory for
    the bootstrap, which runs here too."""
    from budget_rl import baselines
    from budget_rl.headroom import lagrangian_policy, multiplier_for_spend
    from budget_rl.mixed import maximize_under_budget
    from budget_rl.offline import RidgeQ, fqe_oracle
    from budget_rl.pacing import paced_policy_from_transitions

    env = _environment(n_users, world_seed, overrides)
    logs = env.log(random_state=log_seed).transitions
    oracle = fqe_oracle(logs, regressor=RidgeQ, importance_weighted=True)
    runs, totals = [], []

    def record(method: str, budget: float, policy, seconds: float, stored: int, calls: int, planned,
               **extra) -> None:
        episodes = env.run(policy, random_state=EVALUATION_SEED)
        totals.append((episodes.total_reward, episodes.total_cost))
        runs.append({"method": method, "budget": budget, "train_s": seconds, "stored_policies": stored,
                     "oracle_calls": calls, "planned": None if planned is None else [float(v) for v in planned],
                     "value": episodes.value, "spend": episodes.spend, **extra})

    record("control", 0.0, lambda features, day: np.zeros(len(features), dtype=np.int64), 0.0, 1, 0, None)
    started = time.perf_counter()
    paced = paced_policy_from_transitions(logs, importance_weighted=True, safety=PACING_SAFETY)
    pacing_s = time.perf_counter() - started
    truth = _truth(env)
    searched = truth.subset(np.arange(0, n_users, max(n_users // HEADROOM_SEARCH_USERS, 1)))
    for budget in budgets:
        days: list = []
        record("paced", budget, _paced(paced, env, budget, days), pacing_s, len(paced.components),
               len(paced.components),
               [days[0]["planned_value"] / n_users, days[0]["planned_remaining"] / n_users] if days else None,
               days=days)
        started = time.perf_counter()
        mixed = maximize_under_budget(oracle, [budget])
        record("mixed", budget, _hashed(mixed, env.users.user_id), time.perf_counter() - started,
               len(mixed.components), mixed.oracle_calls, mixed.expected)
        started = time.perf_counter()
        myopic = baselines.myopic_allocator(logs, budget, importance_weighted=True)
        record("myopic", budget, myopic.act, time.perf_counter() - started, HORIZON, 0, None)
        matched = runs[-1]["spend"] / (1 - PACING_SAFETY)  # a paced point at the myopic allocator's realised spend
        record("paced", matched, _paced(paced, env, matched, []), pacing_s, len(paced.components),
               len(paced.components), None, matched_to=budget)
        started = time.perf_counter()
        fixed = baselines.fixed_multiplier_policy(oracle, budget, lambda_max=LE_LAMBDA_MAX, steps=20)
        record("fixed multiplier", budget, fixed.policy.act, time.perf_counter() - started, 1, fixed.oracle_calls,
               fixed.measurement)
        started = time.perf_counter()
        le = baselines.game_theoretic_mixture(oracle, budget, iterations=LE_ITERATIONS, lambda_max=LE_LAMBDA_MAX,
                                              learning_rate=LE_LEARNING_RATE)
        record("Le et al.", budget, _hashed(le, env.users.user_id), time.perf_counter() - started,
               len(le.components), le.oracle_calls, le.expected)
        started = time.perf_counter()
        multiplier = multiplier_for_spend(searched, budget, grid_points=HEADROOM_GRID)
        best = lagrangian_policy(truth, multiplier, grid_points=HEADROOM_GRID)
        record("headroom", budget, _full_knowledge(best, env), time.perf_counter() - started, 1, 0,
               [best.value.mean(), best.cost.mean()], multiplier=multiplier, dual_bound=best.dual_bound(budget))
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
    """Per budget and baseline: paced frontier / baseline frontier at s = the smaller of the two methods' realised
    spends at that budget (both frontiers are defined there). The share of the headroom over myopic: (paced -
    myopic) / (headroom - myopic), the three frontiers read at the smaller of the paced and myopic spends."""
    control = next(i for i, r in enumerate(runs) if r["method"] == "control")
    members = {method: [control] + [j for j, r in enumerate(runs) if r["method"] == method]
               for method in (*METHODS, "headroom")}

    def frontier(method: str, at: float) -> float:
        return _frontier_value(spends[members[method]], values[members[method]], at)

    rows = []
    for i, run in enumerate(runs):
        if run["method"] != METHODS[0] or "matched_to" in run:
            continue
        row = {"budget": run["budget"], "spend": spends[i], "value": values[i]}
        for baseline in (*METHODS[1:], "headroom"):
            j = next(j for j in members[baseline] if runs[j]["budget"] == run["budget"])
            at = min(spends[i], spends[j])
            row[baseline] = frontier(METHODS[0], at) / frontier(baseline, at)
            row[f"{baseline} at spend"] = at
        at = row["myopic at spend"]
        row["headroom share"] = ((frontier(METHODS[0], at) - frontier("myopic", at))
                                 / (frontier("headroom", at) - frontier("myopic", at)))
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
        for key in (*METHODS[1:], "headroom", "headroom share"):
            draws = np.array([r[index][key] for r in replicates])
            draws = draws[np.isfinite(draws)]
            row[f"{key} interval"] = ([float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
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
    subset = [] if "compare" not in parts or set(worlds) == set(WORLDS) else [w.replace(" ", "_") for w in worlds]
    name = "_".join(["constrained_rl", *sorted(parts), *subset,
                     *([] if log_seed == LOG_SEED else [f"log{log_seed}"])])
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
    headroom = {r["budget"]: r for r in result["runs"] if r["method"] == "headroom"}
    rows = []
    for row in result["comparison"]:
        cells = [row["budget"], f"{row['value']:.3f} at {row['spend']:.3f}", f"{row['spend'] / row['budget']:.3f}"]
        for baseline in METHODS[1:]:
            low, high = row[f"{baseline} interval"]
            cells.append(f"{row[baseline]:.4f} [{low:.4f}, {high:.4f}] at {row[f'{baseline} at spend']:.2f}")
        reference = headroom[row["budget"]]
        cells.append(f"{reference['value']:.3f} at {reference['spend']:.3f} (bound {reference['dual_bound']:.3f})")
        low, high = row["headroom share interval"]
        cells.append(f"{row['headroom share']:.2f} [{low:.2f}, {high:.2f}]")
        rows.append(cells)
    print(table(["budget", "paced: value at spend", "spend / budget", *[f"paced / {m}" for m in METHODS[1:]],
                 "headroom: value at spend", "share of headroom over myopic"], rows))
    calibration = {r["budget"]: [day["calibration"] for day in r["days"]] for r in result["runs"]
                   if r["method"] == "paced" and "matched_to" not in r}
    print(table(["budget", "calibration kappa by day"],
                [[budget, " ".join(f"{k:.2f}" for k in values)] for budget, values in calibration.items()]))


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
