"""Budget pacing across days for the two-stage allocator, on the synthetic campaign's simulator (issue 19, part 4).

A campaign budget b per user over 14 days, spent by the two-stage allocator (`budget_rl.allocate` on per-day
one-step reward and cost models, ridge, importance-weighted, learned from the world's logs, log seed 7):

- `fixed share`: b / 14 per user every day (`budget_rl.baselines.MyopicAllocator`);
- `paced`: each day's budget re-solved from the realised spend so far and the days left, in planned units
  (`budget_rl.baselines.PacedAllocator`, `budget_rl.pacing.daily_budget`: (b n (1 - safety) - spent) / days left /
  kappa), safety share 0.5%, kappa = spent so far / planned so far (the default);
- `paced, trend`: the same with kappa from the trend of the daily ratios from the third day on
  (`budget_rl.pacing.spend_calibration`; `allocate`'s `calibration: trend`).

Each runs in the simulator on evaluation seed 11 (the same users and draws). Goal: the paced campaign ends within
1% of its budget and never over, at b = 1, 2, 4, 8 in both worlds.

    python -m benchmarks.bench_daily_pacing                  # 10^5 users, both worlds
    python -m benchmarks.bench_daily_pacing --users 30000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from benchmarks._harness import command_line, measure_in_subprocess, save_results, table
from benchmarks.bench_constrained_rl import BUDGETS, EVALUATION_SEED, HORIZON, LOG_SEED, WORLDS, _environment

SAFETY = 0.005


def _paced(allocator, env, calibration: str):
    """The paced allocator as a daily job runs it: it knows each day's realised spend (yesterday's level's face
    value on a purchase, from the `purchased_yesterday` feature) and expected cost; `calibration`: "trend"
    (`spend_calibration` of the days' figures) or "total" (spent so far over planned so far)."""
    from budget_rl.pacing import spend_calibration

    bought = env.feature_names.index("purchased_yesterday")
    faces = env.world.arm_costs
    spent: list[float] = []
    planned: list[float] = []
    yesterday = [None]

    def act(features: np.ndarray, day: int) -> np.ndarray:
        if day > 0:
            spent.append(float((faces[yesterday[0]] * features[:, bought]).sum()))
        kappa = spend_calibration(spent, planned) if calibration == "trend" else None
        level, expected = allocator.act(features, day, sum(spent), sum(planned) if day > 0 else None,
                                        calibration=kappa)
        planned.append(float(expected.sum()))
        yesterday[0] = level
        return level

    return act


def measure_world(n_users: int, world_seed: int, overrides: dict, budgets: Sequence[float]) -> dict:
    from budget_rl.baselines import MyopicAllocator, PacedAllocator
    from budget_rl.offline import one_step_models

    env = _environment(n_users, world_seed, overrides)
    logs = env.log(random_state=LOG_SEED).transitions
    rewards, costs = one_step_models(logs, importance_weighted=True)
    rows = []
    for budget in budgets:
        for name, policy in (("fixed share", MyopicAllocator(rewards, costs, budget / HORIZON).act),
                             ("paced", _paced(PacedAllocator(rewards, costs, budget, SAFETY), env, "total")),
                             ("paced, trend", _paced(PacedAllocator(rewards, costs, budget, SAFETY), env,
                                                     "trend"))):
            started = time.perf_counter()
            episodes = env.run(policy, random_state=EVALUATION_SEED)
            rows.append({"budget": budget, "method": name, "value": episodes.value, "spend": episodes.spend,
                         "share": episodes.spend / budget, "seconds": time.perf_counter() - started})
    return {"rows": rows}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    payload: dict = {"users": args.users, "worlds": {}}
    printed = []
    for world in args.worlds:
        result = measure_in_subprocess("benchmarks.bench_daily_pacing:measure_world", n_users=args.users,
                                       world_seed=args.seed, overrides=WORLDS[world], budgets=list(BUDGETS))
        payload["worlds"][world] = result
        for row in result["rows"]:
            met = "" if row["method"] != "paced" else ("met" if 0.99 <= row["share"] <= 1.0 else "NOT met")
            printed.append([world, f"{row['budget']:g}", row["method"], f"{row['value']:.4f}", f"{row['spend']:.4f}",
                            f"{row['share']:.4f}", met])
    print(table(["world", "b", "method", "value", "spend", "spend / b", "goal [0.99, 1.00]"], printed))
    print(f"saved {save_results('daily_pacing', command_line('benchmarks.bench_daily_pacing', argv), payload)}")
    return payload


if __name__ == "__main__":
    main()
