"""Real logs: the Open Bandit Dataset check (Saito et al. 2021; ZOZO, Inc.; CC BY 4.0).

For each campaign (all, men, women), estimate the click rate of the Bernoulli Thompson sampling policy from the
uniform-random logs by IPS, SNIPS and DR, and compare with the click rate observed in the BTS logs (the on-policy
ground truth, itself an estimate from 10,000 rounds). The target probabilities are the production BTS prior's
item-by-position distribution (obp's prior_bts.yaml, 100,000 seeded Monte Carlo draws, as obp's
`compute_batch_action_dist`); the DR reward model is the cross-fitted per-arm ridge on the user-item affinities
and positions. Also reported: the gap in units of the combined standard error of estimate and truth.

    python -m benchmarks.bench_open_bandit
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bandits import evaluate, on_policy_value
from bandits.datasets import bts_position_probabilities, open_bandit_feedback, position_target_probabilities
from benchmarks._harness import command_line, save_results, table
from pipelines.open_bandit import CAMPAIGNS, read_bts_prior, read_open_bandit


def check(campaign: str, n_draws: int, seed: int) -> list[dict]:
    random_logs, items = read_open_bandit("random", campaign)
    bts_logs, _ = read_open_bandit("bts", campaign)
    truth = on_policy_value(bts_logs["click"].to_numpy()).iloc[0]
    distribution = bts_position_probabilities(*read_bts_prior(campaign), n_draws=n_draws, random_state=seed)
    feedback, positions = open_bandit_feedback(random_logs, len(items))
    estimates = evaluate(feedback, position_target_probabilities(distribution, positions),
                         estimators=("ips", "snips", "dr"), random_state=seed)
    rows = []
    for row in estimates.itertuples():
        rows.append({"campaign": campaign, "items": len(items), "estimator": row.estimator, "value": row.value,
                     "se": row.se, "ci_low": row.ci_low, "ci_high": row.ci_high, "truth": truth["value"],
                     "truth_se": truth["se"], "relative_error": row.value / truth["value"] - 1,
                     "covers": bool(row.ci_low <= truth["value"] <= row.ci_high),
                     "gap_in_combined_se": (row.value - truth["value"]) / np.hypot(row.se, truth["se"]),
                     "ess": row.effective_sample_size})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100_000, help="Monte Carlo draws of the BTS distribution")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--quick", action="store_true", help="10,000 draws")
    args = parser.parse_args(argv)
    draws = 10_000 if args.quick else args.draws
    started = time.perf_counter()
    rows = [row for campaign in CAMPAIGNS for row in check(campaign, draws, args.seed)]
    print(table(["campaign", "items", "estimator", "estimate (95% CI)", "BTS logs (truth ± se)", "relative error",
                 "CI covers truth", "gap / combined se"],
                [[r["campaign"], r["items"], r["estimator"],
                  f"{r['value']:.5f} [{r['ci_low']:.5f}, {r['ci_high']:.5f}]",
                  f"{r['truth']:.5f} ± {r['truth_se']:.5f}", f"{r['relative_error']:+.1%}",
                  "yes" if r["covers"] else "no", f"{r['gap_in_combined_se']:+.2f}"] for r in rows]))
    print(f"\n{time.perf_counter() - started:.1f} s")
    save_results("open_bandit", command_line("benchmarks.bench_open_bandit", argv), {"draws": draws, "rows": rows})


if __name__ == "__main__":
    main()
